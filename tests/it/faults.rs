//! Concurrency and crashes: eight builds at once sharing one cache and one registry; `kill -9` at several
//! points of a build, then the same build again. The cache must stay consistent and never serve a corrupt
//! entry (each layer is checked against its digest when read).


use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every cache entry is readable and its blob has the digest the entry claims.
fn check_cache(cache: &Path) -> usize {
    let mut n = 0;
    let Ok(entries) = std::fs::read_dir(cache.join("layers")) else { return 0 };
    for e in entries {
        let p = e.unwrap().path();
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let digest = v["layer"]["digest"].as_str().unwrap();
        let blob = cache.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        let bytes = std::fs::read(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
        assert_eq!(envlayer::Digest::of(&bytes).to_string(), digest, "{}", p.display());
        n += 1;
    }
    n
}

#[test]
fn eight_builds_at_once_share_one_cache_and_one_registry() {
    let dir = scratch("faults-concurrent");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let addr = reg.addr();
    let chan = channels().join("local-python");
    let extras = [["flask"], ["requests"], ["rich"], ["pip"], ["click"], ["jinja2"], ["idna"], ["urllib3"]];
    let mut children = Vec::new();
    for (i, extra) in extras.iter().enumerate() {
        let sub = dir.join(format!("env{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let env = env_file(&sub, "shared", &[&chan], &[&["python=3.11"][..], &extra[..]].concat());
        let child = Command::new(env!("CARGO_BIN_EXE_envlayer"))
            .args(["build", env.to_str().unwrap(), "--cache-dir"])
            .arg(dir.join("cache"))
            .args(["--push", &format!("{addr}/envs/shared:{i}"), "--json", "-q", "--no-pyc"])
            .env_remove("DOCKER_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    let mut python_layers = std::collections::BTreeSet::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "build {i} ({:?}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        let py = s["packages"].as_array().unwrap().iter().find(|p| p["name"] == "python").unwrap()["layer"].as_u64().unwrap();
        python_layers.insert(s["layers"][py as usize]["digest"].as_str().unwrap().to_string());
        let reference = s["push"]["reference"].as_str().unwrap();
        // Every pushed image is complete: skopeo copies all its blobs.
        run(Command::new("skopeo").args(["copy", "-q", "--src-tls-verify=false"]).arg(format!("docker://{reference}")).arg(format!("oci:{}:x", dir.join(format!("copy{i}")).display())));
    }
    assert_eq!(python_layers.len(), 1, "one python layer for all eight: {python_layers:?}");
    assert!(check_cache(&dir.join("cache")) >= 9);
    // Nothing half-written is left in the cache's scratch space.
    let tmp: Vec<_> = std::fs::read_dir(dir.join("cache/tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "left in cache/tmp: {tmp:?}");
}

#[test]
fn kill_9_at_any_point_then_the_same_build_completes_with_the_same_bytes() {
    let dir = scratch("faults-kill");
    let env = env_file(&dir, "demo", &[&channels().join("local-python")], &["python=3.11", "flask", "rich"]);
    let build = |cache: &str, out: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_envlayer"))
            .args(["build", env.to_str().unwrap(), "--cache-dir", cache, "-o", out, "--json", "-q"])
            .current_dir(&dir)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let clean = build("clean-cache", "clean.oci");
    // Kill a cold build at several moments (solve, fetch, install, pack, write), each time on top of
    // whatever the previous killed build left.
    for ms in [30u64, 120, 300, 600, 1000, 1500, 2500] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_envlayer"))
            .args(["build", env.to_str().unwrap(), "--cache-dir", "cache", "-o", "killed.oci", "-q"])
            .current_dir(&dir)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        check_cache(&dir.join("cache"));
        // A killed build leaves no output behind (only a completed one moves its layout into place).
        if !dir.join("killed.oci/index.json").exists() {
            assert!(!dir.join("killed.oci").exists(), "a partial output after kill at {ms} ms");
        }
    }
    let after = build("cache", "after.oci");
    assert_eq!(after["manifest_digest"], clean["manifest_digest"]);
    assert_eq!(after["config_digest"], clean["config_digest"]);
    check_cache(&dir.join("cache"));
}
