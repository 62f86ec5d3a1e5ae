//! envlayer against conda channels over HTTP that stall or send without end: a fake channel on loopback
//! serving the example packages, misbehaving on one path at a time. Every failure must come within a
//! bounded time, name what failed, leave no output, and keep memory bounded.
#![allow(clippy::print_stdout, clippy::print_stderr)]


use crate::common::fake_http::{FakeServer, Reply, Request};
use crate::common::hostile::*;
use crate::common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(110);
const FAST: (&str, &str) = ("ENVLAYER_NETWORK_TIMEOUT", "2");

/// What the channel does instead of answering normally, when it does.
type Special = Arc<dyn Fn(&Request) -> Option<Reply> + Send + Sync>;

/// The example channel on disk, served over HTTP with `special` answering first.
fn channel(dir: &Path, special: impl Fn(&Request) -> Option<Reply> + Send + Sync + 'static) -> (FakeServer, PathBuf) {
    let chan = dir.join("hello-chan");
    if !chan.is_dir() {
        assert!(envlayer(dir, &["example-channel", chan.to_str().unwrap()]).status.success());
    }
    let root = chan.clone();
    let server = FakeServer::start("127.0.0.1", move |req: &Request| {
        if let Some(r) = special(req) {
            return r;
        }
        let rel = req.path.trim_start_matches("/chan/");
        if rel.contains("..") || !req.path.starts_with("/chan/") {
            return Reply::status(404);
        }
        match std::fs::read(root.join(rel)) {
            Ok(b) if req.method == "HEAD" => Reply::status(200).with_header("Content-Length", &b.len().to_string()),
            Ok(b) => Reply::bytes(200, b),
            Err(_) => Reply::status(404),
        }
    });
    let env = dir.join("remote.yaml");
    std::fs::write(&env, format!("name: remote\nchannels:\n  - {}/chan\ndependencies:\n  - envlayer-hello\n", server.url())).unwrap();
    (server, env)
}

fn build(dir: &Path, env: &Path, cache: &str) -> Outcome {
    run_bounded(dir, &["build", env.to_str().unwrap(), "-o", "out.oci", "--cache-dir", cache, "-q"], &[FAST], LIMIT)
}

#[test]
fn the_fake_channel_works_when_it_behaves() {
    let dir = scratch("channel-ok");
    let (_server, env) = channel(&dir, |_| None);
    let o = build(&dir, &env, "cache");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}

#[test]
fn a_package_longer_than_its_repodata_size_is_cut() {
    let dir = scratch("channel-endless-package");
    let (_server, env) = channel(&dir, |r: &Request| r.path.ends_with("envlayer-hello-1.2-0.conda").then(|| Reply::endless(200, b"PK\x03\x04 ")));
    let o = build(&dir, &env, "cache");
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains("envlayer-hello-1.2-0.conda") && o.stderr.contains("passed its size"), "{}", o.stderr);
    assert!(o.max_rss_kib < 512 * 1024, "peak RSS {} KiB", o.max_rss_kib);
    assert!(!dir.join("out.oci").exists());
}

#[test]
fn stalled_packages_and_repodata_fail_in_bounded_time() {
    let dir = scratch("channel-stall");
    let cases: Vec<(&str, Special, &str)> = vec![
        ("package headers", Arc::new(|r: &Request| r.path.ends_with(".conda").then_some(Reply::StallHeaders)), "envlayer-"),
        (
            "package body",
            Arc::new(|r: &Request| {
                r.path.ends_with(".conda").then(|| Reply::StallBody { status: 200, headers: vec![], prefix: b"PK".to_vec(), content_length: 1000 })
            }),
            "envlayer-",
        ),
        ("repodata", Arc::new(|r: &Request| r.path.contains("repodata").then_some(Reply::StallHeaders)), "/chan"),
    ];
    for (i, (what, special, names)) in cases.into_iter().enumerate() {
        let (server, env) = channel(&dir, move |r| special(r));
        let o = build(&dir, &env, &format!("cache{i}"));
        assert_ne!(o.code, Some(0), "{what}");
        assert!(o.stderr.contains(&server.addr()) && o.stderr.contains(names), "{what}: {}", o.stderr);
        assert!(o.elapsed < Duration::from_secs(100), "{what}: {:?}", o.elapsed);
        assert!(!dir.join("out.oci").exists());
    }
}

#[test]
fn endless_repodata_is_cut_in_bounded_memory() {
    let dir = scratch("channel-endless-repodata");
    let (server, env) = channel(&dir, |r: &Request| {
        (r.path.ends_with("noarch/repodata.json") && r.method == "GET").then(|| Reply::endless(200, b"{\"packages\":{\"a-1-0.tar.bz2\":{},"))
    });
    let o = build(&dir, &env, "cache");
    eprintln!("endless repodata: {:?}, peak {} KiB: {}", o.elapsed, o.max_rss_kib, o.stderr);
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains(&server.addr()) && o.stderr.contains("larger than"), "{}", o.stderr);
    assert!(o.max_rss_kib > 0 && o.max_rss_kib < 512 * 1024, "peak RSS {} KiB", o.max_rss_kib);
}
