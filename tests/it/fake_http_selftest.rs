//! Quick checks of the scriptable fake HTTP server in tests/common/fake_http.rs, with a plain TcpStream
//! client: replies and request recording, endless and stalled replies, a second loopback host.

use crate::common::fake_http;

use fake_http::{FakeServer, Reply};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn connect(server: &FakeServer) -> TcpStream {
    let s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads a status line and headers.
fn read_head(rd: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    rd.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).expect("status line").parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        rd.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            return (status, headers);
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
}

/// Reads a whole Content-Length framed response.
fn read_response(rd: &mut impl BufRead) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let (status, headers) = read_head(rd);
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").unwrap().1.parse().unwrap();
    let mut body = vec![0; len];
    rd.read_exact(&mut body).unwrap();
    (status, headers, body)
}

fn wait_idle(server: &FakeServer, within: Duration) {
    let t = Instant::now();
    while server.active() > 0 {
        assert!(t.elapsed() < within, "a connection thread is still running after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn json_reply_keep_alive_and_recording_with_a_chunked_body() {
    let server = FakeServer::start("127.0.0.1", |req| match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v2/") => Reply::json(200, &serde_json::json!({"ok": true})),
        ("POST", _) => Reply::status(202).with_header("Location", "/blobs/uploads/1"),
        _ => Reply::status(404),
    });
    assert!(server.addr().starts_with("127.0.0.1:") && server.url() == format!("http://{}", server.addr()));
    let s = connect(&server);
    let mut rd = BufReader::new(&s);
    (&s).write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Token: abc\r\n\r\n").unwrap();
    let (status, headers, body) = read_response(&mut rd);
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-type".into(), "application/json".into())));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap(), serde_json::json!({"ok": true}));

    // Same connection: a chunked upload of 100,000 bytes in uneven chunks.
    (&s).write_all(b"POST /up?digest=sha256:1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let mut sent = 0usize;
    for size in [1usize, 4095, 30000, 65904] {
        (&s).write_all(format!("{size:x}\r\n").as_bytes()).unwrap();
        (&s).write_all(&vec![b'z'; size]).unwrap();
        (&s).write_all(b"\r\n").unwrap();
        sent += size;
    }
    (&s).write_all(b"0\r\n\r\n").unwrap();
    let (status, headers, body) = read_response(&mut rd);
    assert_eq!((status, body.len()), (202, 0));
    assert!(headers.contains(&("location".into(), "/blobs/uploads/1".into())));

    // And a Content-Length body after it.
    (&s).write_all(b"PUT /other HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").unwrap();
    assert_eq!(read_response(&mut rd).0, 404);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!((reqs[0].method.as_str(), reqs[0].path.as_str()), ("GET", "/v2/"));
    assert_eq!(reqs[0].header("x-TOKEN"), Some("abc"));
    assert_eq!(reqs[0].body_len, 0);
    assert_eq!(reqs[1].path, "/up?digest=sha256:1");
    assert_eq!(reqs[1].body_len, sent as u64);
    assert_eq!(reqs[1].body_prefix, vec![b'z'; 64 * 1024]);
    assert_eq!((reqs[2].body_len, reqs[2].body_prefix.as_slice()), (5, &b"hello"[..]));
    wait_idle(&server, Duration::from_secs(2));
}

#[test]
fn endless_reply_stops_when_the_client_drops() {
    let server = FakeServer::start("127.0.0.1", |_| Reply::endless(200, b"{\"a\":"));
    let s = connect(&server);
    let mut rd = BufReader::new(&s);
    (&s).write_all(b"GET /repodata.json HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (status, headers) = read_head(&mut rd);
    assert_eq!(status, 200);
    assert!(!headers.iter().any(|(k, _)| k == "content-length"));
    let mut body = vec![0; 1 << 20];
    rd.read_exact(&mut body).unwrap();
    assert!(body.starts_with(b"{\"a\":{\"a\":{\"a\":"));
    assert_eq!(server.active(), 1);
    drop(rd);
    drop(s);
    wait_idle(&server, Duration::from_secs(3));
}

#[test]
fn stalls_hold_until_the_client_gives_up_and_close_answers_nothing() {
    let server = FakeServer::start("127.0.0.1", |req| match req.path.as_str() {
        "/headers" => Reply::StallHeaders,
        "/body" => Reply::StallBody { status: 200, headers: vec![], prefix: b"abc".to_vec(), content_length: 1000 },
        _ => Reply::Close,
    });
    let tick = Duration::from_millis(800);

    let s = connect(&server);
    s.set_read_timeout(Some(tick)).unwrap();
    (&s).write_all(b"GET /headers HTTP/1.1\r\n\r\n").unwrap();
    let t = Instant::now();
    let err = (&s).read(&mut [0; 16]).expect_err("no answer expected");
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");
    assert!(t.elapsed() >= tick - Duration::from_millis(50));
    assert_eq!(server.active(), 1, "the server still holds the connection");
    drop(s);
    wait_idle(&server, Duration::from_secs(2));

    let s = connect(&server);
    let mut rd = BufReader::new(&s);
    (&s).write_all(b"GET /body HTTP/1.1\r\n\r\n").unwrap();
    let (status, headers) = read_head(&mut rd);
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-length".into(), "1000".into())));
    let mut prefix = [0; 3];
    rd.read_exact(&mut prefix).unwrap();
    assert_eq!(&prefix, b"abc");
    s.set_read_timeout(Some(tick)).unwrap();
    let err = rd.read(&mut [0; 16]).expect_err("the body stalls");
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");
    drop(rd);
    drop(s);
    wait_idle(&server, Duration::from_secs(2));

    let s = connect(&server);
    (&s).write_all(b"GET /close HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let n = (&s).read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "Close sends nothing");
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn a_second_host_on_127_0_0_2_and_drop_stops_listening() {
    let a = FakeServer::start("127.0.0.1", |_| Reply::redirect(307, "http://127.0.0.2/elsewhere"));
    let b = FakeServer::start("127.0.0.2", |_| Reply::bytes(200, "from b"));
    assert!(b.addr().starts_with("127.0.0.2:"), "{}", b.addr());

    let s = connect(&a);
    (&s).write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    let (status, headers, _) = read_response(&mut BufReader::new(&s));
    assert_eq!(status, 307);
    assert!(headers.contains(&("location".into(), "http://127.0.0.2/elsewhere".into())));

    let s = connect(&b);
    (&s).write_all(b"GET /elsewhere HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut BufReader::new(&s)).2, b"from b");
    assert_eq!(b.requests()[0].path, "/elsewhere");
    assert!(a.requests().iter().all(|r| r.path == "/"));

    let addr = b.addr();
    drop(b);
    assert!(TcpStream::connect(&addr).is_err(), "the listener is closed after drop");
}
