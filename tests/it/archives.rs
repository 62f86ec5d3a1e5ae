//! `-o oci-archive:FILE` and `-o docker-archive:FILE[:NAME:TAG]`: one tar each, read by skopeo (which
//! checks every blob's digest on copy) and loaded by podman (which checks every layer against the
//! config's diff_ids), the image running from it; deterministic; zstd refused for docker archives.

use crate::common::*;
use std::path::Path;
use std::process::Command;

const EPOCH: (&str, &str) = ("SOURCE_DATE_EPOCH", "1700000000");

/// podman with its own storage in `root` (vfs: no overlay mounts needed), so tests share nothing.
/// (Its run folder must have a short path: under /tmp.)
fn podman(root: &Path, args: &[&str]) -> String {
    run(Command::new("podman")
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
        .args(args))
}

#[test]
fn archives_are_read_by_skopeo_loaded_by_podman_and_run() {
    let dir = scratch("archives");
    let env = env_file(&dir, "demo", &[&channels().join("local-python")], &["python=3.11", "rich"]);
    let e = env.to_str().unwrap();
    let base = format!("{}:base", debian_base().display());
    let a = build_json_env(&dir, &[e, "--base", &base, "--cache-dir", "cache", "-o", "oci-archive:demo.tar"], &[EPOCH]);
    let d = build_json_env(&dir, &[e, "--base", &base, "--cache-dir", "cache", "-o", "docker-archive:demo-docker.tar:team/demo:1.0"], &[EPOCH]);
    assert_eq!(a["manifest_digest"], d["manifest_digest"], "the same image in both");
    assert!(dir.join("demo.tar.lock").is_file() && dir.join("demo.tar.spdx.json").is_file());

    // skopeo copies every blob out, checking digests; the copy unpacks and runs.
    for (src, name) in [("oci-archive:demo.tar", "a"), ("docker-archive:demo-docker.tar", "b")] {
        run(Command::new("skopeo").args(["copy", "-q", src]).arg(format!("oci:{}:x", dir.join(name).display())).current_dir(&dir));
        let rootfs = unpack(&dir.join(name), "x", &dir.join(format!("{name}-bundle")));
        let out = run(Command::new("chroot").arg(&rootfs).args(["/opt/conda/envs/demo/bin/python", "-c", "import rich; print('ok')"]));
        assert_eq!(out.trim(), "ok");
    }
    // The docker archive is also an OCI archive (as Docker 25 writes them), and names its image.
    run(Command::new("skopeo").args(["inspect", "oci-archive:demo-docker.tar"]).current_dir(&dir));
    let manifest: serde_json::Value = serde_json::from_str(&run(Command::new("tar").args(["xOf", "demo-docker.tar", "manifest.json"]).current_dir(&dir))).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], "team/demo:1.0");

    // podman loads both (checking each layer against the config's diff_ids), under their names.
    let storage = tempfile::Builder::new().prefix("envlayer-pm").tempdir_in("/tmp").unwrap();
    let loaded = podman(storage.path(), &["load", "-i", dir.join("demo-docker.tar").to_str().unwrap()]);
    assert!(loaded.contains("team/demo:1.0"), "{loaded}");
    let loaded = podman(storage.path(), &["load", "-i", dir.join("demo.tar").to_str().unwrap()]);
    assert!(loaded.contains("demo:latest"), "{loaded}");

    // The same inputs: the same archive, byte for byte.
    build_json_env(&dir, &[e, "--base", &base, "--cache-dir", "cache", "-o", "oci-archive:again.tar"], &[EPOCH]);
    assert_eq!(std::fs::read(dir.join("again.tar")).unwrap(), std::fs::read(dir.join("demo.tar")).unwrap());

    // zstd layers in a docker archive: refused before any work; a file of the user's is never replaced.
    let (ok, _, err) = envlayer_env(&dir, &["build", e, "--cache-dir", "cache2", "-o", "docker-archive:z.tar", "--compression", "zstd", "--base", "scratch", "-q"], &[]);
    assert!(!ok && err.contains("a docker archive needs gzip layers") && err.contains("oci-archive:FILE"), "{err}");
    assert!(!dir.join("z.tar").exists() && !dir.join("cache2/layers").exists(), "refused before any work");
    for bad in ["docker-archive:b.tar:a//b:1", "docker-archive:b.tar:-x:1", "docker-archive:b.tar:Up:1", "docker-archive:b.tar:ok:.bad"] {
        let (ok, _, err) = envlayer_env(&dir, &["build", e, "--cache-dir", "cache2", "-o", bad, "-q"], &[]);
        assert!(!ok && err.contains("must be NAME:TAG"), "{bad}: {err}");
    }
    std::fs::write(dir.join("mine.tar"), "not an archive").unwrap();
    let (ok, _, err) = envlayer_env(&dir, &["build", e, "--cache-dir", "cache", "-o", "oci-archive:mine.tar", "--base", "scratch", "-q"], &[]);
    assert!(!ok && err.contains("is not an image archive"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("mine.tar")).unwrap(), "not an archive");
}
