//! What kubelet does: containerd's CRI PullImage pulls the pushed image by digest, and `ctr run` starts
//! it; with gzip and with zstd layers.


use crate::common::*;
use std::process::Command;

#[test]
fn cri_pulls_by_digest_and_the_environment_runs_gzip_and_zstd() {
    let dir = scratch("containerd");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let addr = reg.addr();
    let ctrd = Service::containerd(&dir.join("containerd"), &[&addr]);
    let socket = ctrd.endpoint.clone();
    let snapshotter = std::fs::read_to_string(ctrd.dir.join("snapshotter")).unwrap().trim().to_string();
    let base = format!("{}:base", debian_base().display());
    let env = env_file(&dir, "demo", &[&channels().join("local-python")], &["python=3.11", "flask"]);
    let cri = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("registry-test/cri_pull.py");
    for codec in ["gzip", "zstd"] {
        let (ok, out, err) = envlayer_env(
            &dir,
            &["build", env.to_str().unwrap(), "--base", &base, "--compression", codec, "--push", &format!("{addr}/team/demo:{codec}"), "--cache-dir", "cache", "-q"],
            &[],
        );
        assert!(ok, "{err}");
        let reference = out.trim().to_string();
        assert!(reference.contains("@sha256:"), "{reference}");
        let pulled = run(Command::new("python3").arg(&cri).arg(&socket).arg(&reference));
        assert!(pulled.lines().any(|l| l == reference), "CRI PullImage by digest: {pulled}");
        let out = run(Command::new("ctr")
            .args(["--address", &socket, "-n", "k8s.io", "run", "--rm", "--snapshotter", &snapshotter])
            .arg(&reference)
            .arg(format!("envlayer-{codec}"))
            .args(["python", "-c", "import flask, sys; print(sys.prefix)"]));
        assert_eq!(out.trim(), "/opt/conda/envs/demo", "{codec}");
    }
}
