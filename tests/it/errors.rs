//! Bad input gets a clear error, a non-zero exit, and leaves no output behind.


use crate::common::*;
use std::path::Path;

/// Runs a build expected to fail; checks that stderr says `expect` and that nothing was written.
fn fails(dir: &Path, env: &Path, expect: &[&str]) -> String {
    let out = envlayer(dir, &["build", env.to_str().unwrap(), "-o", "out.oci", "--cache-dir", "cache", "-q"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected failure, got success; stderr: {stderr}");
    for e in expect {
        assert!(stderr.contains(e), "stderr lacks {e:?}:\n{stderr}");
    }
    assert!(!dir.join("out.oci").exists(), "an output image was left");
    assert!(!dir.join("out.oci.lock").exists(), "a lock was left");
    let leftovers: Vec<_> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(".envlayer-out")).collect();
    assert!(leftovers.is_empty(), "temporary output left: {leftovers:?}");
    stderr
}

#[test]
fn unsolvable_spec_names_the_conflict() {
    let dir = scratch("err-unsolvable");
    let env = env_file(&dir, "unsat", &[&channels().join("test-recipes")], &["unsatisfiable"]);
    fails(&dir, &env, &["cannot be solved", "unsatisfiable", "versioned"]);
}

#[test]
fn malformed_yaml_names_line_and_column() {
    let dir = scratch("err-yaml");
    let env = dir.join("bad.yaml");
    std::fs::write(&env, "name: bad\nchannels:\n  - ./c\ndependencies:\n  - python\n  - [flask\n").unwrap();
    let stderr = fails(&dir, &env, &["bad.yaml:"]);
    let loc = stderr.split("bad.yaml:").nth(1).unwrap();
    let line: usize = loc.split(':').next().unwrap().parse().expect("a line number");
    assert!(line >= 6, "{stderr}");
}

#[test]
fn unknown_channel_is_named() {
    let dir = scratch("err-channel");
    let env = env_file(&dir, "chan-test", &[Path::new("/nonexistent/channel")], &["python"]);
    fails(&dir, &env, &["/nonexistent/channel", "does not exist"]);
    let env = env_file(&dir, "chan-test", &[&dir], &["python"]);
    fails(&dir, &env, &["not a conda channel"]);
}

#[test]
fn sha256_mismatch_is_refused_and_an_earlier_image_survives() {
    let dir = scratch("err-sha");
    let chan = dir.join("chan");
    let out = envlayer(&dir, &["example-channel", chan.to_str().unwrap()]);
    assert!(out.status.success());
    let env = env_file(&dir, "hello", &[&chan], &["envlayer-hello"]);
    // Tamper with the repodata's sha256 of one package.
    let repodata = chan.join("noarch/repodata.json");
    let text = std::fs::read_to_string(&repodata).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rec = &mut v["packages.conda"]["envlayer-greeting-1.0-0.conda"];
    rec["sha256"] = serde_json::json!("0".repeat(64));
    std::fs::write(&repodata, serde_json::to_vec(&v).unwrap()).unwrap();
    fails(&dir, &env, &["envlayer-greeting-1.0-0.conda", "sha256 mismatch"]);

    // With an image already at the output, a failed build leaves it as it was.
    std::fs::write(&repodata, text).unwrap();
    let ok = envlayer(&dir, &["build", env.to_str().unwrap(), "-o", "keep.oci", "--cache-dir", "cache2", "-q"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let index = std::fs::read(dir.join("keep.oci/index.json")).unwrap();
    let bad = env_file(&dir, "hello", &[&chan], &["envlayer-hello", "no-such-package"]);
    let out = envlayer(&dir, &["build", bad.to_str().unwrap(), "-o", "keep.oci", "--cache-dir", "cache2", "-q"]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(dir.join("keep.oci/index.json")).unwrap(), index);
}

#[test]
fn refuses_to_replace_a_folder_that_is_not_an_image() {
    let dir = scratch("err-output");
    std::fs::create_dir_all(dir.join("precious")).unwrap();
    std::fs::write(dir.join("precious/file"), "keep me").unwrap();
    let chan = dir.join("chan");
    assert!(envlayer(&dir, &["example-channel", chan.to_str().unwrap()]).status.success());
    let env = env_file(&dir, "hello", &[&chan], &["envlayer-hello"]);
    let out = envlayer(&dir, &["build", env.to_str().unwrap(), "-o", "precious", "--cache-dir", "cache", "-q"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not part of an OCI image layout"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("precious/file")).unwrap(), "keep me");
}

#[test]
fn malformed_repodata_and_bad_references_are_clear_errors() {
    let dir = scratch("err-repodata");
    let chan = dir.join("broken-chan");
    std::fs::create_dir_all(chan.join("noarch")).unwrap();
    std::fs::write(chan.join("noarch/repodata.json"), "{\"packages\": {\"x-1-0.tar.bz2\": {\"name\": 12}}").unwrap();
    let env = env_file(&dir, "broken", &[&chan], &["x"]);
    let stderr = fails(&dir, &env, &["broken-chan"]);
    assert!(stderr.contains("repodata"), "{stderr}");

    let chan = dir.join("chan");
    assert!(envlayer(&dir, &["example-channel", chan.to_str().unwrap()]).status.success());
    let env = env_file(&dir, "hello", &[&chan], &["envlayer-docs"]);
    for (bad, expect) in [("registry.example.com/UPPER/case", "invalid image reference"), ("registry.example.com/x:bad tag", "invalid image reference")] {
        let out = envlayer(&dir, &["build", env.to_str().unwrap(), "--push", bad, "--cache-dir", "cache", "-q"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(expect), "{bad}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = envlayer(&dir, &["build", env.to_str().unwrap(), "--base", "not-a-layout-or-ref", "--cache-dir", "cache", "-q"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither an OCI layout"), "{}", String::from_utf8_lossy(&out.stderr));
}
