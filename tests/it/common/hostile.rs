//! Pieces for tests against hostile or broken servers: a tiny image to serve as a registry base, a
//! scriptable registry answer table, envlayer runs bounded in time with their peak memory measured.
#![allow(dead_code)]

use super::fake_http::{Reply, Request};
use envlayer::Digest;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A small image: one gzip layer holding `etc/hello`, its config and manifest.
pub struct TinyImage {
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl TinyImage {
    pub fn new() -> TinyImage {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(6);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "etc/hello", &b"hello\n"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let layer = gz.finish().unwrap();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(&tar).to_string()]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(&config).to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::of(&layer).to_string(), "size": layer.len()}],
        }))
        .unwrap();
        TinyImage { layer, config, manifest }
    }

    /// Its blobs by digest.
    pub fn blobs(&self) -> BTreeMap<String, Vec<u8>> {
        [&self.layer, &self.config].iter().map(|b| (Digest::of(b).to_string(), b.to_vec())).collect()
    }

    pub fn manifest_digest(&self) -> String {
        Digest::of(&self.manifest).to_string()
    }
}

/// A registry answer for the usual paths: manifests from `manifests` (by tag or digest), blobs from
/// `blobs`, uploads accepted, anything else 404. `None` when the path is not a registry path.
pub fn registry_reply(req: &Request, manifests: &BTreeMap<String, Vec<u8>>, blobs: &BTreeMap<String, Vec<u8>>) -> Reply {
    let path = req.path.split('?').next().unwrap_or("");
    if path == "/v2/" {
        return Reply::json(200, &json!({}));
    }
    if let Some((_, reference)) = path.split_once("/manifests/") {
        if req.method == "PUT" {
            return Reply::status(201);
        }
        return match manifests.get(reference) {
            Some(m) => Reply::bytes(200, m.clone()).with_header("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            None => Reply::status(404),
        };
    }
    if path.contains("/blobs/uploads/") {
        return match req.method.as_str() {
            "POST" => Reply::status(202).with_header("Location", &format!("{}{}", path.trim_end_matches('/'), "/session-1")),
            _ => Reply::status(201),
        };
    }
    if let Some((_, digest)) = path.split_once("/blobs/") {
        return match blobs.get(digest) {
            Some(b) if req.method == "HEAD" => Reply::status(200).with_header("Content-Length", &b.len().to_string()),
            Some(b) => Reply::bytes(200, b.clone()),
            None => Reply::status(404),
        };
    }
    Reply::status(404)
}

/// Whether the client sent basic credentials.
pub fn has_auth(req: &Request) -> bool {
    req.header("Authorization").is_some()
}

/// What a bounded envlayer run gave.
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// Peak resident memory in KiB (from GNU time).
    pub max_rss_kib: u64,
}

/// Runs envlayer `args` in `cwd` with `env`, under `/usr/bin/time` for its peak memory, killed (and the
/// test failed) if it takes longer than `limit`.
pub fn run_bounded(cwd: &Path, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Outcome {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "envlayer-max-rss-kib=%M", env!("CARGO_BIN_EXE_envlayer")]).args(args).current_dir(cwd);
    cmd.env_remove("SOURCE_DATE_EPOCH").env_remove("ENVLAYER_CACHE_DIR").env_remove("DOCKER_CONFIG").env_remove("REGISTRY_AUTH_FILE");
    cmd.env("HOME", cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t = Instant::now();
    // Its own process group, so that a timeout kills envlayer itself, not only `time` above it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run envlayer under /usr/bin/time (Debian package time)");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > limit {
            let _ = Command::new("kill").arg("-KILL").arg(format!("-{}", child.id())).status();
            let _ = child.wait();
            panic!("envlayer {args:?} ran for more than {limit:?}:\n{}", e.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = t.elapsed();
    let stdout = o.join().unwrap();
    let mut stderr = e.join().unwrap();
    let max_rss_kib = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("envlayer-max-rss-kib="))
        .next_back()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    stderr = stderr.lines().filter(|l| !l.starts_with("envlayer-max-rss-kib=") && !l.starts_with("Command exited")).collect::<Vec<_>>().join("\n");
    Outcome { code: status.code(), stdout, stderr, elapsed, max_rss_kib }
}

/// A docker config dir with basic credentials for `registry`.
pub fn creds(dir: &Path, registry: &str) -> String {
    super::docker_config(dir, registry, "alice", "s3cret-pw").display().to_string()
}

/// The example channel and an environment of its `envlayer-hello` package (no python: fast builds).
pub fn hello_env(dir: &Path) -> std::path::PathBuf {
    let chan = dir.join("hello-chan");
    if !chan.is_dir() {
        assert!(super::envlayer(dir, &["example-channel", chan.to_str().unwrap()]).status.success());
    }
    super::env_file(dir, "hello", &[&chan], &["envlayer-hello"])
}

/// Rewrites the config of the only image of `layout` with `edit`, keeping the layout consistent.
pub fn edit_config(layout: &Path, edit: impl FnOnce(&mut Value)) {
    let index_path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let mut manifest = super::blob_json(layout, index["manifests"][0]["digest"].as_str().unwrap());
    let mut config = super::blob_json(layout, manifest["config"]["digest"].as_str().unwrap());
    edit(&mut config);
    let config = serde_json::to_vec(&config).unwrap();
    let cd = Digest::of(&config);
    std::fs::write(layout.join("blobs/sha256").join(cd.hex()), &config).unwrap();
    manifest["config"]["digest"] = json!(cd.to_string());
    manifest["config"]["size"] = json!(config.len());
    rewrite_manifest(layout, &mut index, &manifest);
    std::fs::write(index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Writes `manifest` as the only image's manifest of `layout` (in `index`).
pub fn rewrite_manifest(layout: &Path, index: &mut Value, manifest: &Value) {
    let bytes = serde_json::to_vec(manifest).unwrap();
    let md = Digest::of(&bytes);
    std::fs::write(layout.join("blobs/sha256").join(md.hex()), &bytes).unwrap();
    index["manifests"][0]["digest"] = json!(md.to_string());
    index["manifests"][0]["size"] = json!(bytes.len());
}
