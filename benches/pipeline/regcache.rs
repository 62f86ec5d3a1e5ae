//! Scenario 6: the registry as a shared layer cache. Runner A pushes a cold build (fetch, install,
//! `.pyc`, compress, push, then its cache entries); runner B, with an empty cache directory, builds and
//! pushes the same environment, finding every package layer in the registry. Both are the release binary
//! as CI runs it, against the real local registry; best of three, each round in a fresh repository.

use super::{root, row, secs, sh, work, Row, Service};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn runner(env: &Path, cache: &Path, target: &str) -> (Duration, serde_json::Value) {
    let t = Instant::now();
    let out = Command::new(root().join("target/release/envlayer"))
        .args(["build", env.to_str().unwrap(), "--base", "scratch", "--push", target, "--json", "-q", "--cache-dir"])
        .arg(cache)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    let elapsed = t.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (elapsed, serde_json::from_slice(&out.stdout).unwrap())
}

pub fn registry_cache_scenario(rows: &mut Vec<Row>, label: &str, env: &Path) {
    let w = work().join(format!("regcache-{label}"));
    let _ = std::fs::remove_dir_all(&w);
    std::fs::create_dir_all(&w).unwrap();
    let reg = Service { dir: w.join("reg") };
    let url = sh(Command::new("bash").arg(root().join("registry-test/start-registry.sh")).arg("plain").arg(&reg.dir));
    let addr = url.trim().trim_start_matches("http://").to_string();
    let (mut best_a, mut best_b) = (Duration::MAX, Duration::MAX);
    let mut last = None;
    for round in 0..3 {
        let repo = format!("{addr}/bench/cache{round}");
        let (ta, a) = runner(env, &w.join(format!("a{round}")), &format!("{repo}:a"));
        let (tb, b) = runner(env, &w.join(format!("b{round}")), &format!("{repo}:b"));
        assert_eq!(a["manifest_digest"], b["manifest_digest"], "runner B pushes runner A's image");
        assert_eq!(b["work"]["installed"], 0);
        best_a = best_a.min(ta);
        best_b = best_b.min(tb);
        last = Some(b);
    }
    let b = last.unwrap();
    row(rows, &format!("6 registry cache, {label}"), "fresh runner B / cold runner A (build + push)", secs(best_b) / secs(best_a), 0.10, true,
        format!("A {:.2}s (cold, pushes, records entries); B {:.3}s with an empty cache: {} layers from the registry, {} fetched, {} installed, {} compressed (the environment layer)",
            secs(best_a), secs(best_b), b["work"]["remote_layers"], b["work"]["downloaded"], b["work"]["installed"], b["work"]["compressed"]));
}
