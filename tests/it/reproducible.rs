//! Same inputs, same bytes: across working and cache directories, with a warm cache doing no work, with
//! zstd, and with a corrupted cache entry healed rather than used.

use crate::common::*;
use serde_json::Value;
use std::process::Command;

fn digests(s: &Value) -> Vec<String> {
    s["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

#[test]
fn two_builds_in_different_places_give_the_same_image_and_a_warm_build_does_nothing() {
    let a = scratch("repro-a");
    let b = scratch("repro-b/deeper/work");
    let chan = channels().join("local-python");
    let deps = ["python=3.11", "flask", "requests", "rich", "pip"];
    let ea = env_file(&a, "demo", &[&chan], &deps);
    let eb = env_file(&b, "demo", &[&chan], &deps);
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let sa = build_json_env(&a, &[ea.to_str().unwrap(), "-o", "out.oci", "--cache-dir", "c1"], &sde);
    let sb = build_json_env(&b, &[eb.to_str().unwrap(), "-o", "img", "--cache-dir", "../other-cache", "--jobs", "1"], &sde);
    assert_eq!(digests(&sa), digests(&sb));
    assert_eq!(sa["config_digest"], sb["config_digest"]);
    assert_eq!(sa["manifest_digest"], sb["manifest_digest"], "SOURCE_DATE_EPOCH set: same manifest");
    assert_eq!(sa["work"]["compressed"].as_u64().unwrap() as usize, sa["layers"].as_array().unwrap().len());

    // Without SOURCE_DATE_EPOCH the package layers are the same ones; the image's time comes from the
    // newest package, so two such builds still share layers and config; only the manifest's build-time
    // annotation differs.
    let sc = build_json(&a, &[ea.to_str().unwrap(), "-o", "out2.oci", "--cache-dir", "c1"]);
    let sd = build_json(&b, &[eb.to_str().unwrap(), "-o", "out3.oci", "--cache-dir", "c3"]);
    let n = digests(&sa).len();
    assert_eq!(digests(&sa)[..n - 1], digests(&sc)[..n - 1], "package layers do not depend on SOURCE_DATE_EPOCH");
    assert_eq!(digests(&sc), digests(&sd));
    assert_eq!(sc["config_digest"], sd["config_digest"]);
    let config = blob_json(&a.join("out2.oci"), sc["config_digest"].as_str().unwrap());
    assert!(config["created"].as_str().unwrap().starts_with("20"), "created from package timestamps");
    let (ma, mb) = (manifest(&a.join("out2.oci")), manifest(&b.join("out3.oci")));
    assert_eq!(ma["layers"], mb["layers"]);
    assert_eq!(ma["config"], mb["config"]);

    // Warm: nothing fetched, installed or compressed.
    let warm = build_json_env(&a, &[ea.to_str().unwrap(), "-o", "out.oci", "--cache-dir", "c1"], &sde);
    assert_eq!(warm["work"]["downloaded"], 0);
    assert_eq!(warm["work"]["installed"], 0);
    assert_eq!(warm["work"]["compressed"], 0);
    assert_eq!(warm["work"]["cached_layers"].as_u64().unwrap() as usize, warm["layers"].as_array().unwrap().len());
    assert_eq!(warm["manifest_digest"], sa["manifest_digest"]);

    // --lock: the lock written beside the output installs the same thing with no solve.
    let lock = a.join("out.oci.lock");
    assert!(lock.is_file());
    let locked = build_json_env(&a, &[ea.to_str().unwrap(), "-o", "locked.oci", "--cache-dir", "c1", "--lock", lock.to_str().unwrap()], &sde);
    assert_eq!(locked["solved"], false);
    assert_eq!(digests(&locked), digests(&sa));
}

#[test]
fn a_corrupt_cache_entry_is_rebuilt_not_used() {
    let dir = scratch("corrupt-cache");
    let chan = dir.join("chan");
    assert!(envlayer(&dir, &["example-channel", chan.to_str().unwrap()]).status.success());
    let env = env_file(&dir, "tiny", &[&chan], &["envlayer-docs"]);
    let first = build_json(&dir, &[env.to_str().unwrap(), "--cache-dir", "cache"]);
    let digest = first["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let blob = dir.join("cache/blobs/sha256").join(&digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let second = build_json(&dir, &[env.to_str().unwrap(), "--cache-dir", "cache", "-o", "again.oci"]);
    assert_eq!(second["layers"][0]["digest"], first["layers"][0]["digest"]);
    assert_eq!(second["layers"][0]["cached"], false, "the corrupt entry was not used");
    let out = std::fs::read(blob_path(&dir.join("again.oci"), &digest)).unwrap();
    assert_eq!(envlayer::Digest::of(&out).hex(), digest);
}

#[test]
fn zstd_layers_are_deterministic_and_accepted_by_skopeo() {
    let dir = scratch("zstd");
    let chan = channels().join("local-python");
    let env = env_file(&dir, "zs", &[&chan], &["python=3.11", "rich"]);
    let s1 = build_json(&dir, &[env.to_str().unwrap(), "--compression", "zstd", "--cache-dir", "c1", "-o", "z1.oci"]);
    let s2 = build_json(&dir, &[env.to_str().unwrap(), "--compression", "zstd", "--cache-dir", "c2", "-o", "z2.oci", "--jobs", "1"]);
    assert_eq!(digests(&s1), digests(&s2));
    let m = manifest(&dir.join("z1.oci"));
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
    }
    run(Command::new("skopeo").args(["copy", "-q"]).arg(format!("oci:{}:latest", dir.join("z1.oci").display())).arg(format!("oci:{}:copy", dir.join("copy.oci").display())));
    // The gzip build of the same environment has other digests: the compression is part of the key.
    let g = build_json(&dir, &[env.to_str().unwrap(), "--cache-dir", "c1", "-o", "g.oci"]);
    assert_ne!(digests(&g)[0], digests(&s1)[0]);
}

/// The manifest digest of the example environment, built from a lock whose URLs name no local path, with
/// SOURCE_DATE_EPOCH set. Any change to the bytes envlayer writes (tar, compression, conda-meta, config,
/// manifest, JSON) changes it: update it only for a change meant to alter images, and say so.
/// Last changed on purpose: `build` no longer gives an image a TTL unless `--ttl` is given (the config
/// lost its `quay.expires-after` label, the manifest its `io.envlayer.expires`); with `--ttl 24h` the
/// previous digest, sha256:de70450e..., is still what this build gives.
const PINNED_MANIFEST: &str = "sha256:01083bc3002644a2a9f709e19f0c628908f43b2b8a8b312618edbc1509c21f1c";

fn pinned_build(name: &str) -> String {
    let dir = scratch(name);
    let env = crate::common::hostile::hello_env(&dir);
    let cache = dir.join("cache");
    // A first build from the local channel fills the package cache, so the pinned build downloads nothing.
    build_json(&dir, &[env.to_str().unwrap(), "-o", "local.oci", "--cache-dir", cache.to_str().unwrap()]);
    let chan = dir.join("hello-chan").display().to_string();
    let url = "https://packages.example.invalid/envlayer";
    let lock = std::fs::read_to_string(dir.join("local.oci.lock")).unwrap().replace(&format!("file://{chan}"), url).replace(&chan, url);
    assert!(!lock.contains(&dir.display().to_string()), "{lock}");
    std::fs::write(dir.join("pinned.lock"), lock).unwrap();
    let pinned = dir.join("pinned.yaml");
    std::fs::write(&pinned, format!("name: hello\nchannels: [{url}]\ndependencies: [envlayer-hello]\n")).unwrap();
    let s = build_json_env(
        &dir,
        &[pinned.to_str().unwrap(), "--lock", "pinned.lock", "-o", "pinned.oci", "--cache-dir", cache.to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(s["work"]["downloaded"], 0);
    s["manifest_digest"].as_str().unwrap().to_string()
}

#[test]
fn the_example_image_has_a_pinned_manifest_digest() {
    let digest = pinned_build("repro-pinned");
    // Built elsewhere, the same: nothing of the build machine's paths is in the image.
    assert_eq!(pinned_build("repro-pinned-elsewhere/a/much/longer/path"), digest);
    assert_eq!(digest, PINNED_MANIFEST, "the image's bytes changed");
}
