//! Pushes through a fault-injecting proxy (loopback only, bounded in time) in front of the real
//! registry: connection drops, 503 and 429 answers, stalls and truncated responses on a fraction of
//! requests. Every push completes or fails with a clear error, and no tag ever names a manifest whose
//! blobs are missing.


use crate::common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the proxy did.
#[derive(Default)]
struct Counts {
    requests: AtomicUsize,
    faults: AtomicUsize,
}

struct FaultProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    Some(head)
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// Replaces any Connection header with `Connection: close`: one request per connection.
fn close_connection(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out: Vec<String> = text
        .trim_end_matches("\r\n\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(String::from)
        .collect();
    out.push("Connection: close".into());
    format!("{}\r\n\r\n", out.join("\r\n")).into_bytes()
}

fn handle(mut client: TcpStream, upstream: u16, roll: u64, counts: &Counts) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(head) = read_head(&mut client) else { return };
    let mut body = vec![0u8; content_length(&head)];
    if client.read_exact(&mut body).is_err() {
        return;
    }
    counts.requests.fetch_add(1, Ordering::Relaxed);
    let fault = roll % 100;
    let reply = |c: &mut TcpStream, status: &str, extra: &str| {
        let _ = c.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n").as_bytes());
    };
    match fault {
        0..=7 => {
            counts.faults.fetch_add(1, Ordering::Relaxed);
            return reply(&mut client, "503 Service Unavailable", "");
        }
        8..=11 => {
            counts.faults.fetch_add(1, Ordering::Relaxed);
            return reply(&mut client, "429 Too Many Requests", "Retry-After: 0\r\n");
        }
        12..=15 => {
            counts.faults.fetch_add(1, Ordering::Relaxed);
            return; // the connection drops with no answer
        }
        16..=18 => {
            counts.faults.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(500)); // a stall, then the real answer
        }
        _ => {}
    }
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
    if up.write_all(&close_connection(&head)).is_err() || up.write_all(&body).is_err() {
        return;
    }
    let mut response = Vec::new();
    let _ = up.read_to_end(&mut response);
    if (19..=21).contains(&fault) && response.len() > 40 {
        counts.faults.fetch_add(1, Ordering::Relaxed);
        let _ = client.write_all(&response[..response.len() / 2]); // truncated
        return;
    }
    let _ = client.write_all(&response);
}

/// A proxy on 127.0.0.1 to `upstream`, faulting about 22% of requests, chosen by a seeded generator.
fn fault_proxy(upstream: u16, seed: u64) -> FaultProxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let (s, c) = (stop.clone(), counts.clone());
    std::thread::spawn(move || {
        let mut x = seed | 1;
        let deadline = std::time::Instant::now() + Duration::from_secs(600);
        for conn in listener.incoming() {
            if s.load(Ordering::Relaxed) || std::time::Instant::now() > deadline {
                return;
            }
            let Ok(conn) = conn else { continue };
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (roll, c) = (x, c.clone());
            std::thread::spawn(move || handle(conn, upstream, roll, &c));
        }
    });
    FaultProxy { port, stop, counts }
}

#[test]
fn pushes_through_a_faulty_network_complete_or_fail_clearly_and_never_leave_a_broken_tag() {
    let dir = scratch("fault-proxy");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let addr = reg.addr();
    let upstream: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = fault_proxy(upstream, 0x5eed);
    let via = format!("127.0.0.1:{}", proxy.port);
    let chan = dir.join("chan");
    assert!(envlayer(&dir, &["example-channel", chan.to_str().unwrap()]).status.success());
    let env = env_file(&dir, "hello", &[&chan], &["envlayer-hello", "envlayer-docs"]);
    let local_dir = dir.join("local");
    std::fs::create_dir_all(&local_dir).unwrap();
    let local = env_file(&local_dir, "py", &[&channels().join("local-python")], &["python=3.11", "rich"]);
    let mut ok_count = 0;
    let mut retries = 0;
    for (i, e) in [&env, &local, &env, &env].iter().enumerate() {
        let (ok, out, err) = envlayer_env(&dir, &["build", e.to_str().unwrap(), "--push", &format!("{via}/faulty/img:{i}"), "--cache-dir", "cache", "--json", "-q", "--no-pyc", "--network-timeout", "10"], &[]);
        if ok {
            ok_count += 1;
            let s: serde_json::Value = serde_json::from_str(&out).unwrap();
            retries += s["push"]["retries"].as_u64().unwrap();
        } else {
            // A clear error: it names the registry and what failed.
            assert!(err.lines().any(|l| l.starts_with("error: ") && l.contains(&via)), "unclear error: {err}");
        }
    }
    assert!(proxy.counts.faults.load(Ordering::Relaxed) > 0, "the proxy injected no fault");
    assert!(ok_count >= 2, "retries should carry most pushes through: {ok_count}/4");
    assert!(retries > 0, "no retry was needed: the test would not show the retry path");
    // Every tag in the repository names a complete image: skopeo copies all its blobs, straight from the
    // registry (not through the proxy).
    let tags: serde_json::Value = serde_json::from_str(&run(std::process::Command::new("skopeo").args(["list-tags", "--tls-verify=false"]).arg(format!("docker://{addr}/faulty/img")))).unwrap();
    for tag in tags["Tags"].as_array().unwrap() {
        let tag = tag.as_str().unwrap();
        run(std::process::Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{addr}/faulty/img:{tag}"))
            .arg(format!("oci:{}:{tag}", dir.join("check").display())));
    }
}

