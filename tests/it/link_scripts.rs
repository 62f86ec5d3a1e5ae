//! Packages with link scripts install when the container starts (with their dependents), their scripts
//! run there; failures are clear; clobbers get conda's result. Uses conda's own test packages.


use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn recipes() -> PathBuf {
    channels().join("test-recipes")
}

fn start(layout: &Path, rootfs: &Path, cmd: &[&str]) -> Output {
    start_container(layout, rootfs, None, cmd)
}

fn build(dir: &Path, name: &str, deps: &[&str], extra: &[&str]) -> (bool, Value, String) {
    let env = env_file(dir, name, &[&recipes()], deps);
    let base = format!("{}:base", debian_base().display());
    let mut args = vec!["build", env.to_str().unwrap(), "--base", &base, "--cache-dir", "cache", "-o", "img.oci", "--json", "-q"];
    args.extend(extra);
    let (ok, out, err) = envlayer_env(dir, &args, &[]);
    (ok, serde_json::from_str(&out).unwrap_or(Value::Null), err)
}

#[test]
fn post_link_packages_and_their_dependents_install_at_start_and_run_their_scripts() {
    let dir = scratch("link-post");
    let (ok, s, err) = build(&dir, "post", &["post_link-c", "post_link-d", "post_link_run_in_env_package", "small-executable"], &[]);
    assert!(ok, "{err}");
    let runtime: Vec<&str> = s["runtime_packages"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    // c, d and e have post-link scripts (d also depends on e); b (c's dependency) and small-executable do not.
    // In install order: e before d, which depends on it.
    assert_eq!(
        runtime,
        ["post_link-c-1.0-0", "post_link-e-1.0-0", "post_link-d-1.0-0", "post_link_run_in_env_package-1.0-0"],
        "{}",
        s["runtime_packages"]
    );
    assert!(s["link_scripts"]["post_link-e-1.0-0"][0].as_str().unwrap().ends_with(".post_link-e-post-link.sh"));
    let layout = dir.join("img.oci");
    let m = manifest(&layout);
    assert_eq!(m["annotations"]["io.envlayer.runtime-packages"], "post_link-c,post_link-e,post_link-d,post_link_run_in_env_package");
    let rootfs = unpack(&layout, "latest", &dir.join("bundle"));
    let prefix = rootfs.join("opt/conda/envs/post");
    assert!(!prefix.join("conda-meta/post_link-e-1.0-0.json").exists(), "runtime packages are not in the layers");
    let baked_meta = prefix.join("conda-meta/post_link-b-1.0-0.json");
    let before = std::fs::metadata(&baked_meta).unwrap().modified().unwrap();

    let out = start(&layout, &rootfs, &["/bin/sh", "-c", "cat $CONDA_PREFIX/bin/file"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    // e's script writes bin/file, and c's and d's fail without it; the command ran after them all.
    assert_eq!(stdout.trim(), "test");
    for p in ["post_link-c", "post_link-e", "post_link-d", "post_link_run_in_env_package"] {
        assert!(stderr.contains(&format!("running the post-link script of {p}\n")), "{p}: {stderr}");
        assert!(prefix.join(format!("conda-meta/{p}-1.0-0.json")).is_file(), "{p} installed");
        assert!(prefix.join(format!("conda-meta/.envlayer-linked-{p}")).is_file(), "{p} marked");
    }
    // That script passes only in the activated environment (its activate.d sets TEST_VAR=1), and it
    // reports through .messages.txt, which is shown.
    assert!(stderr.contains("message from post_link_run_in_env_package: Success: TEST_VAR is set correctly"), "{stderr}");
    assert_eq!(std::fs::metadata(&baked_meta).unwrap().modified().unwrap(), before, "baked packages are not reinstalled");
    // A second start does nothing again.
    let again = start(&layout, &rootfs, &["/bin/true"]);
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stderr).contains("installing"), "{}", String::from_utf8_lossy(&again.stderr));
}

#[test]
fn a_failing_post_link_stops_the_start_and_fail_refuses_the_build() {
    let dir = scratch("link-fail");
    let (ok, s, err) = build(&dir, "failing", &["failing_post_link", "small-executable"], &[]);
    assert!(ok, "{err}");
    assert_eq!(s["runtime_packages"][0], "failing_post_link-1.0-0");
    let layout = dir.join("img.oci");
    let rootfs = unpack(&layout, "latest", &dir.join("bundle"));
    let out = start(&layout, &rootfs, &["/bin/echo", "should not run"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    assert!(!stdout.contains("should not run"));
    assert!(stderr.contains("post-link script of failing_post_link failed (exit status: 1)"), "{stderr}");
    assert!(!rootfs.join("opt/conda/envs/failing/conda-meta/.envlayer-installed").exists(), "not marked as done");

    let (ok, _, err) = build(&dir, "failing", &["failing_post_link"], &["--link-scripts", "fail"]);
    assert!(!ok);
    assert!(err.contains("failing_post_link-1.0-0") && err.contains("post-link"), "{err}");
    // ignore: baked, with a warning.
    let (ok, s, err) = build(&dir, "failing", &["failing_post_link"], &["--link-scripts", "ignore"]);
    assert!(ok, "{err}");
    assert!(s["runtime_packages"].as_array().unwrap().is_empty());
    assert!(s["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("did not run")));
}

#[test]
fn pre_link_messages_are_shown_and_clobbers_get_condas_result() {
    let dir = scratch("link-messages");
    let (ok, s, err) = build(&dir, "msgs", &["pre_link_messages_package"], &[]);
    assert!(ok, "{err}");
    let messages: Vec<&str> = s["messages"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages.iter().all(|m| m.starts_with("pre_link_messages_package-1.0-0: ")));
    let (ok, _, stderr) = envlayer_env(&dir, &["build", dir.join("msgs.yaml").to_str().unwrap(), "--cache-dir", "cache", "-o", "m2.oci", "-q"], &[]);
    assert!(ok && stderr.contains("message from pre_link_messages_package"), "{stderr}");

    // clobber-a and clobber-b install the same file; conda's result is the later one's (b).
    for max_layers in ["100", "3"] {
        let (ok, s, err) = build(&dir, "clobber", &["clobber-a", "clobber-b"], &["--max-layers", max_layers]);
        assert!(ok, "{err}");
        let clobbers = s["clobbers"].as_array().unwrap();
        assert_eq!(clobbers.len(), 1, "{clobbers:?}");
        assert_eq!(clobbers[0]["path"], "bin/clobber-test-file");
        assert_eq!(clobbers[0]["winner"], "clobber-b-1.0-0");
        assert!(s["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().starts_with("clobber: bin/clobber-test-file")));
        let rootfs = unpack(&dir.join("img.oci"), "latest", &dir.join("bundle"));
        let image_file = std::fs::read(rootfs.join("opt/conda/envs/clobber/bin/clobber-test-file")).unwrap();
        // What a plain conda-style install of the two, in the same order, leaves there.
        let from_b = extracted_file(&dir, "clobber-b-1.0-0", "bin/clobber-test-file");
        assert_eq!(image_file, from_b, "--max-layers {max_layers}");
        assert_ne!(image_file, extracted_file(&dir, "clobber-a-1.0-0", "bin/clobber-test-file"));
    }
}

/// A file of a package as extracted in the build's cache.
fn extracted_file(dir: &Path, dist: &str, path: &str) -> Vec<u8> {
    for e in std::fs::read_dir(dir.join("cache/extracted")).unwrap() {
        let p = e.unwrap().path();
        let index: Value = serde_json::from_slice(&std::fs::read(p.join("info/index.json")).unwrap()).unwrap();
        if format!("{}-{}-{}", index["name"].as_str().unwrap(), index["version"].as_str().unwrap(), index["build"].as_str().unwrap()) == dist {
            return std::fs::read(p.join(path)).unwrap();
        }
    }
    panic!("{dist} not in the cache")
}
