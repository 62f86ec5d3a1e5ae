//! Data from channels, lock files, layouts and envlayer's own cache is checked, never trusted: names and
//! digests are never paths, packages come only from the listed channels, base descriptors are rebuilt
//! from checked values, layout blobs that are links are never pushed, and cache entries are verified
//! before use and never writable by others.


use crate::common::fake_http::{FakeServer, Reply, Request};
use crate::common::hostile::*;
use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(110);

/// A lock of the hello environment, built once.
fn hello_lock(dir: &Path) -> (std::path::PathBuf, String) {
    let env = hello_env(dir);
    build_json(dir, &[env.to_str().unwrap(), "-o", dir.join("first.oci").to_str().unwrap(), "--cache-dir", dir.join("cache").to_str().unwrap()]);
    (env, std::fs::read_to_string(dir.join("first.oci.lock")).unwrap())
}

#[test]
fn a_lock_entry_is_never_a_path_nor_a_download_from_elsewhere() {
    let dir = scratch("untrusted-lock");
    let (env, lock) = hello_lock(&dir);
    let elsewhere = FakeServer::start("127.0.0.2", |_req: &Request| Reply::status(404));
    let escape = dir.join("escaped");
    let greeting = dir.join("hello-chan/noarch/envlayer-greeting-1.0-0.conda").display().to_string();
    let cases = [
        // A file name that climbs out of the package cache.
        lock.replacen("  subdir: noarch\n", &format!("  subdir: noarch\n  file_name: ../../../../../../../../..{}/x-1.0-0.conda\n", escape.display()), 1),
        // A package from a host the environment does not list.
        lock.replace(&greeting, &format!("{}/stolen/noarch/envlayer-greeting-1.0-0.conda", elsewhere.url())),
        // A local file outside every listed channel.
        lock.replace(&greeting, "/etc/envlayer-greeting-1.0-0.conda"),
    ];
    for (i, text) in cases.iter().enumerate() {
        assert_ne!(text, &lock, "case {i} did not change the lock");
        let path = dir.join(format!("bad{i}.lock"));
        std::fs::write(&path, text).unwrap();
        let o = run_bounded(&dir, &["build", env.to_str().unwrap(), "--lock", path.to_str().unwrap(), "-o", "out.oci", "--cache-dir", "cache2", "-q"], &[], LIMIT);
        assert_ne!(o.code, Some(0), "case {i}");
        assert!(o.stderr.contains(&format!("bad{i}.lock")), "case {i}: the error names the lock: {}", o.stderr);
        assert!(o.stderr.contains("not a package archive file name") || o.stderr.contains("not in a listed channel"), "case {i}: {}", o.stderr);
        assert!(!dir.join("out.oci").exists());
    }
    assert!(!escape.exists(), "a lock entry wrote outside the cache");
    assert!(elsewhere.requests().is_empty(), "a package was fetched from an unlisted host");
}

#[test]
fn repodata_and_specs_cannot_point_packages_elsewhere() {
    let dir = scratch("untrusted-repodata");
    let elsewhere = FakeServer::start("127.0.0.2", |_req: &Request| Reply::status(404));
    let env = hello_env(&dir);
    let repodata = dir.join("hello-chan/noarch/repodata.json");
    let original: Value = serde_json::from_slice(&std::fs::read(&repodata).unwrap()).unwrap();
    for base_url in [format!("{}/mirror/noarch/", elsewhere.url()), "file:///etc/".to_string()] {
        let mut r = original.clone();
        r["info"]["base_url"] = json!(base_url);
        r["repodata_version"] = json!(2);
        std::fs::write(&repodata, serde_json::to_vec(&r).unwrap()).unwrap();
        let o = run_bounded(&dir, &["build", env.to_str().unwrap(), "-o", "out.oci", "--cache-dir", "cache-rd", "-q"], &[], LIMIT);
        assert_ne!(o.code, Some(0), "base_url {base_url}");
        assert!(o.stderr.contains("not in a listed channel"), "{base_url}: {}", o.stderr);
        let _ = std::fs::remove_dir_all(dir.join("cache-rd"));
    }
    std::fs::write(&repodata, serde_json::to_vec(&original).unwrap()).unwrap();
    // A URL spec from a channel the environment does not list.
    let text = std::fs::read_to_string(&env).unwrap() + &format!("  - {}/other/noarch/envlayer-docs-0.3-0.conda\n", elsewhere.url());
    let url_env = dir.join("url-spec.yaml");
    std::fs::write(&url_env, text).unwrap();
    let o = run_bounded(&dir, &["build", url_env.to_str().unwrap(), "-o", "out.oci", "--cache-dir", "cache-rd", "-q"], &[], LIMIT);
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains("not in a listed channel") && o.stderr.contains("channels:"), "{}", o.stderr);
    assert!(elsewhere.requests().is_empty(), "an unlisted host was contacted: {:?}", elsewhere.requests());
}

/// A copy of the tiny image as an OCI layout, with its manifest changed by `edit`.
fn base_layout(dir: &Path, edit: impl FnOnce(&mut Value)) -> std::path::PathBuf {
    let img = TinyImage::new();
    let layout = dir.join("base.oci");
    let _ = std::fs::remove_dir_all(&layout);
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    for (d, b) in img.blobs() {
        std::fs::write(blob_path(&layout, &d), b).unwrap();
    }
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "", "size": 0}]});
    let mut manifest: Value = serde_json::from_slice(&img.manifest).unwrap();
    edit(&mut manifest);
    rewrite_manifest(&layout, &mut index, &manifest);
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    layout
}

#[test]
fn base_descriptors_are_rebuilt_from_checked_values_and_unverifiable_digests_refused() {
    let dir = scratch("untrusted-base");
    let env = hello_env(&dir);
    let layout = base_layout(&dir, |m| {
        m["layers"][0]["urls"] = json!(["http://evil.example/layer"]);
        m["layers"][0]["annotations"] = json!({"io.envlayer.packages": "fake"});
    });
    let s = build_json(&dir, &[env.to_str().unwrap(), "--base", layout.to_str().unwrap(), "-o", "out.oci", "--cache-dir", "cache"]);
    let manifest = blob_json(&dir.join("out.oci"), s["manifest_digest"].as_str().unwrap());
    let base_layer = &manifest["layers"][0];
    let keys: Vec<&String> = base_layer.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["digest", "mediaType", "size"], "{base_layer}");
    // Digests of an algorithm envlayer cannot verify, or malformed ones, are refused.
    for (what, digest) in [("sha512", format!("sha512:{}", "ab".repeat(64))), ("bare hex", "ab".repeat(32)), ("path", "sha256:../../../etc/passwd".to_string())] {
        let layout = base_layout(&dir, |m| m["layers"][0]["digest"] = json!(digest));
        let o = run_bounded(&dir, &["build", env.to_str().unwrap(), "--base", layout.to_str().unwrap(), "-o", "bad.oci", "--cache-dir", "cache", "-q"], &[], LIMIT);
        assert_ne!(o.code, Some(0), "{what}");
        assert!(o.stderr.contains("not supported") || o.stderr.contains("not a digest"), "{what}: {}", o.stderr);
    }
    // A layer type envlayer does not know (here a non-distributable one) is refused, naming it.
    let layout = base_layout(&dir, |m| m["layers"][0]["mediaType"] = json!("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"));
    let o = run_bounded(&dir, &["build", env.to_str().unwrap(), "--base", layout.to_str().unwrap(), "-o", "bad.oci", "--cache-dir", "cache", "-q"], &[], LIMIT);
    assert!(o.code != Some(0) && o.stderr.contains("nondistributable"), "{}", o.stderr);
}

#[test]
fn push_refuses_layout_blobs_that_are_links_or_do_not_match() {
    let dir = scratch("untrusted-push");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let env = hello_env(&dir);
    let s = build_json(&dir, &[env.to_str().unwrap(), "-o", "img.oci", "--cache-dir", "cache"]);
    let layer = s["layers"][0]["digest"].as_str().unwrap().to_string();
    let blob = blob_path(&dir.join("img.oci"), &layer);
    // A link to a file with the very same bytes: its digest matches, but a link can point anywhere.
    let elsewhere = dir.join("secret-elsewhere");
    std::fs::rename(&blob, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &blob).unwrap();
    let o = run_bounded(&dir, &["push", "img.oci", &format!("{}/team/hello:v1", reg.addr())], &[], LIMIT);
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains(&format!("blobs/sha256/{}", &layer[7..])) && o.stderr.contains("symbolic link"), "{}", o.stderr);
    // Bytes that do not match the digest.
    std::fs::remove_file(&blob).unwrap();
    let mut bytes = std::fs::read(&elsewhere).unwrap();
    bytes.push(0);
    std::fs::write(&blob, bytes).unwrap();
    let o = run_bounded(&dir, &["push", "img.oci", &format!("{}/team/hello:v1", reg.addr())], &[], LIMIT);
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains("has digest") && o.stderr.contains("refusing it"), "{}", o.stderr);
    assert!(reg.log().contains("digest=sha256%3A"), "the registry log names uploaded digests");
    let bad_puts = reg.log().lines().filter(|l| l.contains("\"PUT /v2/") && l.contains(&layer[7..])).count();
    assert_eq!(bad_puts, 0, "the bad blob was uploaded");
}

#[test]
fn cache_entries_are_verified_before_use_and_never_writable_by_others() {
    let dir = scratch("untrusted-cache");
    let env = hello_env(&dir);
    let cache = dir.join("cache");
    // umask 000: nothing envlayer writes in the cache may be group- or world-writable anyway.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000; exec {} build {} -o a.oci --cache-dir {} -q --json", env!("CARGO_BIN_EXE_envlayer"), env.display(), cache.display()))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut checked = 0;
    let mut stack = vec![cache.clone()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o022, 0, "{} is writable by group or others", p.display());
        checked += 1;
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(checked > 20, "{checked}");
    // Tamper with an extracted package, then force its layer to be rebuilt: the tampered file is not used.
    let script = std::fs::read_dir(cache.join("extracted"))
        .unwrap()
        .map(|e| e.unwrap().path().join("etc/conda/activate.d/envlayer-greeting.sh"))
        .find(|p| p.is_file())
        .expect("the greeting package's activation script");
    let original = std::fs::read(&script).unwrap();
    std::fs::write(&script, b"echo tampered\n").unwrap();
    std::fs::remove_dir_all(cache.join("layers")).unwrap();
    std::fs::remove_dir_all(cache.join("facts")).unwrap();
    build_json(&dir, &[env.to_str().unwrap(), "-o", "b.oci", "--cache-dir", cache.to_str().unwrap()]);
    let mut found = None;
    for_each_layer_file(&dir.join("b.oci"), |path, data| {
        if path.ends_with("activate.d/envlayer-greeting.sh") {
            found = Some(data.to_vec());
        }
    });
    assert_eq!(found.as_deref(), Some(&original[..]), "the layer was built from a tampered cache entry");
}
