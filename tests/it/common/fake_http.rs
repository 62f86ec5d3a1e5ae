//! A small scriptable HTTP/1.1 server for integration tests that play a hostile or broken party: a
//! registry, a conda channel, a token server, a storage host. A handler maps each parsed [`Request`] to a
//! [`Reply`]: a normal answer, or misbehaviour (an endless body, stalled headers or body, a dropped
//! connection).
//!
//! Loopback only (bind to any 127/8 address, e.g. `127.0.0.2` to play a second host), std only, and
//! bounded in time: sockets have read timeouts of a few seconds, endless and stalling replies end when the
//! client disconnects, when the server is dropped, or after [`MAX_HOLD`]; dropping the server stops the
//! accept loop. Request bodies are counted in full but only their first [`BODY_PREFIX`] bytes are kept.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest any reply (endless, stalled, or slow to drain) keeps a connection.
pub const MAX_HOLD: Duration = Duration::from_secs(120);
/// How much of each request body is kept in [`Request::body_prefix`]; the rest is counted and discarded.
pub const BODY_PREFIX: usize = 64 * 1024;
/// How long a connection may sit idle (or mid-request) before the server closes it.
const IDLE: Duration = Duration::from_secs(5);
/// How often endless/stalling loops look at the stop flag and the deadline.
const TICK: Duration = Duration::from_millis(200);
const MAX_HEAD: u64 = 64 * 1024;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target, query included.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The full body length (after de-chunking).
    pub body_len: u64,
    /// The first [`BODY_PREFIX`] bytes of the body.
    pub body_prefix: Vec<u8>,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A normal answer; Content-Length is added unless `headers` already set Content-Length or
    /// Transfer-Encoding (then the connection is closed after the reply, as the framing may be a lie).
    Full { status: u16, headers: Vec<(String, String)>, body: Vec<u8> },
    /// Headers (with `Content-Length: n` if given, else none and `Connection: close`), then `filler`
    /// repeated forever, until the client disconnects, the server is dropped, or [`MAX_HOLD`].
    Endless { status: u16, headers: Vec<(String, String)>, content_length: Option<u64>, filler: Vec<u8> },
    /// Reads the request, sends nothing, holds the connection until the client leaves or [`MAX_HOLD`].
    StallHeaders,
    /// Sends headers with `Content-Length: content_length` and `prefix`, then holds like `StallHeaders`.
    StallBody { status: u16, headers: Vec<(String, String)>, prefix: Vec<u8>, content_length: u64 },
    /// Closes the connection without answering.
    Close,
}

impl Reply {
    pub fn bytes(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply::Full { status, headers: Vec::new(), body: body.into() }
    }
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::bytes(status, value.to_string()).with_header("Content-Type", "application/json")
    }
    /// An empty body with this status.
    pub fn status(code: u16) -> Reply {
        Reply::bytes(code, Vec::new())
    }
    pub fn redirect(code: u16, location: &str) -> Reply {
        Reply::status(code).with_header("Location", location)
    }
    /// An endless body of `filler` (e.g. `b"{\"a\":"` or `b" "`) with no Content-Length.
    pub fn endless(status: u16, filler: &[u8]) -> Reply {
        Reply::Endless { status, headers: Vec::new(), content_length: None, filler: filler.to_vec() }
    }
    /// Adds a header (no effect on `StallHeaders` and `Close`).
    pub fn with_header(mut self, k: &str, v: &str) -> Reply {
        if let Reply::Full { headers, .. } | Reply::Endless { headers, .. } | Reply::StallBody { headers, .. } =
            &mut self
        {
            headers.push((k.to_string(), v.to_string()));
        }
        self
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

struct Shared {
    handler: Box<Handler>,
    log: Mutex<Vec<Request>>,
    stop: AtomicBool,
    active: AtomicUsize,
}

/// Counts a connection as active until dropped (also when the thread is not spawned or a handler panics).
struct Active(Arc<Shared>);

impl Active {
    fn new(s: Arc<Shared>) -> Active {
        s.active.fetch_add(1, Ordering::SeqCst);
        Active(s)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The server; dropping it stops accepting and ends endless/stalled replies within [`TICK`].
pub struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Binds `bind_ip:0` (a loopback address) and serves each connection on its own thread.
    pub fn start(bind_ip: &str, handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind((bind_ip, 0)).unwrap_or_else(|e| panic!("bind {bind_ip}:0: {e}"));
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let active = Active::new(s.clone());
                let _ = std::thread::Builder::new().spawn(move || {
                    serve(&conn, &active.0);
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        FakeServer { addr, shared, accept: Some(accept) }
    }

    /// `IP:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many connections are being served right now.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Unblock accept(); join only if that worked, so a failure here cannot hang the test.
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
            if let Some(t) = self.accept.take() {
                let _ = t.join();
            }
        }
    }
}

/// Serves requests on one connection until it closes, goes idle, or a reply ends it.
fn serve(conn: &TcpStream, s: &Shared) {
    let _ = conn.set_read_timeout(Some(IDLE));
    let _ = conn.set_write_timeout(Some(TICK));
    let mut rd = BufReader::new(conn);
    while !s.stop.load(Ordering::SeqCst) {
        let Some((req, mut keep_alive)) = read_request(&mut rd, conn) else { return };
        s.log.lock().unwrap_or_else(|e| e.into_inner()).push(req.clone());
        let deadline = Instant::now() + MAX_HOLD;
        match (s.handler)(&req) {
            Reply::Full { status, mut headers, body } => {
                let framed = headers.iter().any(|(k, _)| {
                    k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
                });
                if framed {
                    keep_alive = false;
                } else {
                    headers.push(("Content-Length".into(), body.len().to_string()));
                }
                let mut out = head(status, &headers, keep_alive);
                if req.method != "HEAD" {
                    out.extend_from_slice(&body);
                }
                if !send(conn, &out, deadline, s) || !keep_alive {
                    return;
                }
            }
            Reply::Endless { status, mut headers, content_length, filler } => {
                headers.extend(content_length.map(|n| ("Content-Length".to_string(), n.to_string())));
                if !send(conn, &head(status, &headers, false), deadline, s) {
                    return;
                }
                let filler = if filler.is_empty() { b" ".to_vec() } else { filler };
                let chunk = filler.repeat((16 * 1024 / filler.len()).max(1));
                while send(conn, &chunk, deadline, s) {}
                return;
            }
            Reply::StallHeaders => return hold(conn, deadline, s),
            Reply::StallBody { status, mut headers, prefix, content_length } => {
                headers.push(("Content-Length".into(), content_length.to_string()));
                let mut out = head(status, &headers, false);
                out.extend_from_slice(&prefix);
                if send(conn, &out, deadline, s) {
                    hold(conn, deadline, s);
                }
                return;
            }
            Reply::Close => return,
        }
    }
}

/// Reads one request (head and body); `None` on EOF, timeout or garbage. Also says whether to keep alive.
fn read_request(rd: &mut BufReader<&TcpStream>, mut conn: &TcpStream) -> Option<(Request, bool)> {
    let mut lines = Vec::new();
    let mut budget = MAX_HEAD;
    loop {
        let mut line = Vec::new();
        let n = rd.by_ref().take(budget).read_until(b'\n', &mut line).ok()?;
        budget = budget.checked_sub(n as u64).filter(|_| n > 0 && line.ends_with(b"\n"))?;
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate stray CRLF between requests
            }
            break;
        }
        lines.push(line);
    }
    let mut parts = lines[0].split_whitespace();
    let (method, path, version) = (parts.next()?.to_string(), parts.next()?.to_string(), parts.next().unwrap_or(""));
    let headers: Vec<(String, String)> = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let mut req = Request { method, path, headers, body_len: 0, body_prefix: Vec::new() };
    let has = |name: &str, word: &str| req.header(name).is_some_and(|v| v.to_ascii_lowercase().contains(word));
    let keep_alive = !has("connection", "close") && (version != "HTTP/1.0" || has("connection", "keep-alive"));
    let chunked = has("transfer-encoding", "chunked");
    if has("expect", "100-continue") {
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    if chunked {
        loop {
            let mut size = String::new();
            rd.by_ref().take(4096).read_line(&mut size).ok().filter(|&n| n > 0)?;
            let size = u64::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            read_body(rd, size, &mut req)?;
            let mut crlf = [0u8; 2];
            rd.read_exact(&mut crlf).ok()?;
        }
        loop {
            let mut trailer = String::new();
            rd.by_ref().take(MAX_HEAD).read_line(&mut trailer).ok().filter(|&n| n > 0)?;
            if trailer.trim_end().is_empty() {
                break;
            }
        }
    } else if let Some(len) = req.header("content-length") {
        let len = len.parse().ok()?;
        read_body(rd, len, &mut req)?;
    }
    Some((req, keep_alive))
}

/// Reads exactly `n` body bytes, keeping the first [`BODY_PREFIX`] of the whole body.
fn read_body(rd: &mut impl Read, mut n: u64, req: &mut Request) -> Option<()> {
    let mut buf = [0u8; 16 * 1024];
    while n > 0 {
        let want = n.min(buf.len() as u64) as usize;
        let got = rd.read(&mut buf[..want]).ok().filter(|&g| g > 0)?;
        let keep = got.min(BODY_PREFIX - req.body_prefix.len());
        req.body_prefix.extend_from_slice(&buf[..keep]);
        req.body_len += got as u64;
        n -= got as u64;
    }
    Some(())
}

#[rustfmt::skip]
const REASONS: &[(u16, &str)] = &[
    (200, "OK"), (201, "Created"), (202, "Accepted"), (204, "No Content"), (206, "Partial Content"),
    (301, "Moved Permanently"), (302, "Found"), (307, "Temporary Redirect"), (308, "Permanent Redirect"),
    (400, "Bad Request"), (401, "Unauthorized"), (403, "Forbidden"), (404, "Not Found"), (429, "Too Many Requests"),
    (500, "Internal Server Error"), (502, "Bad Gateway"), (503, "Service Unavailable"),
];

fn head(status: u16, headers: &[(String, String)], keep_alive: bool) -> Vec<u8> {
    let reason = REASONS.iter().find(|(c, _)| *c == status).map_or("Status", |(_, r)| *r);
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !keep_alive && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("connection")) {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Writes all of `buf`, riding out a slow reader; false once the client is gone, the server stops, or the
/// deadline passes.
fn send(mut conn: &TcpStream, buf: &[u8], deadline: Instant, s: &Shared) -> bool {
    let mut off = 0;
    while off < buf.len() {
        if s.stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            return false;
        }
        match conn.write(&buf[off..]) {
            Ok(0) => return false,
            Ok(n) => off += n,
            Err(e) if retry(&e) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Holds the connection, discarding input, until the client closes it, the server stops, or the deadline.
fn hold(mut conn: &TcpStream, deadline: Instant, s: &Shared) {
    let _ = conn.set_read_timeout(Some(TICK));
    let mut buf = [0u8; 4096];
    while !s.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if retry(&e) => {}
            Err(_) => return,
        }
    }
}

/// A timeout or interruption, as opposed to the client being gone.
fn retry(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted)
}
