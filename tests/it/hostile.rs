//! Hostile and broken packages, generated here: each is refused with an error naming the package and the
//! path, or has its dangerous bits stripped; nothing is ever written outside the stage, and no output
//! image is left.


use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes a channel holding one `.tar.bz2` package named `name`, whose archive members and
/// `info/paths.json` entries are described in Python (`tarfile` writes what well-behaved writers
/// refuse: `..`, absolute names, links out of the package, devices, setuid bits).
fn hostile_channel(dir: &Path, name: &str, members_py: &str, paths_py: &str) -> PathBuf {
    let chan = dir.join(format!("chan-{name}"));
    let script = format!(
        r#"
import hashlib, io, json, os, tarfile
chan, name = {chan:?}, {name:?}
os.makedirs(chan + "/noarch", exist_ok=True)
os.makedirs(chan + "/linux-64", exist_ok=True)
fn = name + "-1.0-0.tar.bz2"
path = chan + "/noarch/" + fn
def data(t, n, d=b"", **kw):
    i = tarfile.TarInfo(n); i.type = t; i.size = len(d) if t == tarfile.REGTYPE else 0
    for k, v in kw.items(): setattr(i, k, v)
    return i, (io.BytesIO(d) if t == tarfile.REGTYPE else None)
members = {members}
paths = {paths}
index = {{"name": name, "version": "1.0", "build": "0", "build_number": 0, "depends": [], "noarch": "generic", "subdir": "noarch", "timestamp": 1700000000000}}
with tarfile.open(path, "w:bz2") as t:
    for n, d in [("info/index.json", json.dumps(index).encode()), ("info/paths.json", json.dumps({{"paths": paths, "paths_version": 1}}).encode())]:
        i = tarfile.TarInfo(n); i.size = len(d); t.addfile(i, io.BytesIO(d))
    for i, f in members:
        t.addfile(i, f)
raw = open(path, "rb").read()
rec = dict(index); rec.update({{"sha256": hashlib.sha256(raw).hexdigest(), "md5": hashlib.md5(raw).hexdigest(), "size": len(raw)}})
json.dump({{"info": {{"subdir": "noarch"}}, "packages": {{fn: rec}}, "packages.conda": {{}}, "repodata_version": 1}}, open(chan + "/noarch/repodata.json", "w"))
json.dump({{"info": {{"subdir": "linux-64"}}, "packages": {{}}, "packages.conda": {{}}, "repodata_version": 1}}, open(chan + "/linux-64/repodata.json", "w"))
"#,
        chan = chan.to_str().unwrap(),
        members = members_py,
        paths = paths_py,
    );
    run(Command::new("python3").arg("-c").arg(script));
    chan
}

fn build_fails(dir: &Path, chan: &Path, name: &str, expect: &[&str]) {
    let env = env_file(dir, &format!("env-{}", name.replace('_', "-")), &[chan], &[name]);
    let (ok, out, err) = envlayer_env(dir, &["build", env.to_str().unwrap(), "--cache-dir", "cache", "-o", "out.oci", "-q"], &[]);
    assert!(!ok, "{name}: expected a refusal, got success: {out}");
    for e in expect {
        assert!(err.contains(e), "{name}: stderr lacks {e:?}:\n{err}");
    }
    assert!(!dir.join("out.oci").exists(), "{name}: an output image was left");
}

#[test]
fn paths_that_leave_the_stage_are_refused_and_nothing_is_written_outside() {
    let dir = scratch("hostile");
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let target = outside.to_str().unwrap();

    // paths.json names ../escape (the archive holds it too).
    let c = hostile_channel(&dir, "dotdot", r#"[data(tarfile.REGTYPE, "../escape.txt", b"pwned")]"#, r#"[{"_path": "../escape.txt", "path_type": "hardlink", "size_in_bytes": 5}]"#);
    build_fails(&dir, &c, "dotdot", &["dotdot-1.0-0", "escape.txt"]);

    // An absolute path.
    let c = hostile_channel(&dir, "absolute", r#"[data(tarfile.REGTYPE, "etc/x", b"x")]"#, &format!(r#"[{{"_path": "{target}/abs.txt", "path_type": "hardlink"}}]"#));
    build_fails(&dir, &c, "absolute", &["absolute-1.0-0", "abs.txt"]);

    // A symlink out of the package, and a file written through it.
    let c = hostile_channel(
        &dir,
        "through_link",
        &format!(r#"[data(tarfile.SYMTYPE, "lib", linkname="{target}"), data(tarfile.REGTYPE, "lib/evil.txt", b"pwned")]"#),
        r#"[{"_path": "lib", "path_type": "softlink"}, {"_path": "lib/evil.txt", "path_type": "hardlink", "size_in_bytes": 5}]"#,
    );
    build_fails(&dir, &c, "through_link", &["through_link-1.0-0"]);

    // A "file" that is a symlink to a file of the build machine: copying it would read that file.
    let secret = outside.join("host-secret");
    std::fs::write(&secret, "host secret").unwrap();
    let c = hostile_channel(
        &dir,
        "reads_host",
        &format!(r#"[data(tarfile.SYMTYPE, "share/data", linkname="{}")]"#, secret.display()),
        r#"[{"_path": "share/data", "path_type": "hardlink", "size_in_bytes": 11}]"#,
    );
    build_fails(&dir, &c, "reads_host", &["reads_host-1.0-0", "share/data"]);

    // A device node: extraction turns it into an empty regular file, so the image holds no device.
    let c = hostile_channel(&dir, "device", r#"[data(tarfile.CHRTYPE, "dev/mem2", devmajor=1, devminor=1)]"#, r#"[{"_path": "dev/mem2", "path_type": "hardlink"}]"#);
    let env = env_file(&dir, "env-device", &[&c], &["device"]);
    let (ok, _, err) = envlayer_env(&dir, &["build", env.to_str().unwrap(), "--cache-dir", "cache", "-o", "device.oci", "-q"], &[]);
    assert!(ok, "{err}");
    for l in manifest(&dir.join("device.oci"))["layers"].as_array().unwrap() {
        let file = std::fs::File::open(blob_path(&dir.join("device.oci"), l["digest"].as_str().unwrap())).unwrap();
        for e in tar::Archive::new(flate2::read::GzDecoder::new(file)).entries().unwrap() {
            let e = e.unwrap();
            let t = e.header().entry_type();
            assert!(t.is_file() || t.is_dir() || t.is_symlink(), "{:?} is a {t:?}", e.path().unwrap());
        }
    }

    // A truncated archive whose repodata matches its (truncated) bytes: extraction fails, named.
    let c = hostile_channel(&dir, "truncated", r#"[data(tarfile.REGTYPE, "share/big", bytes(range(256)) * 4000)]"#, r#"[{"_path": "share/big", "path_type": "hardlink"}]"#);
    let pkg = c.join("noarch/truncated-1.0-0.tar.bz2");
    let bytes = std::fs::read(&pkg).unwrap();
    std::fs::write(&pkg, &bytes[..bytes.len() / 2]).unwrap();
    let repodata = c.join("noarch/repodata.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&repodata).unwrap()).unwrap();
    let half = &bytes[..bytes.len() / 2];
    v["packages"]["truncated-1.0-0.tar.bz2"]["sha256"] = serde_json::json!(envlayer::Digest::of(half).hex());
    v["packages"]["truncated-1.0-0.tar.bz2"]["size"] = serde_json::json!(half.len());
    v["packages"]["truncated-1.0-0.tar.bz2"].as_object_mut().unwrap().remove("md5");
    std::fs::write(&repodata, serde_json::to_vec(&v).unwrap()).unwrap();
    build_fails(&dir, &c, "truncated", &["truncated-1.0-0"]);

    // Nothing landed outside, and the host secret is unchanged.
    let left: Vec<_> = std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("host-secret")], "files written outside the stage");
    assert!(!dir.join("escape.txt").exists() && !dir.join("cache/escape.txt").exists());
}

#[test]
fn setuid_bits_are_stripped_and_a_symlink_inside_the_package_is_kept() {
    let dir = scratch("hostile-bits");
    let c = hostile_channel(
        &dir,
        "bits",
        r##"[data(tarfile.REGTYPE, "bin/tool", b"#!/bin/sh\n", mode=0o6755), data(tarfile.SYMTYPE, "bin/alias", linkname="tool")]"##,
        r#"[{"_path": "bin/tool", "path_type": "hardlink", "size_in_bytes": 10}, {"_path": "bin/alias", "path_type": "softlink"}]"#,
    );
    let env = env_file(&dir, "bits", &[&c], &["bits"]);
    let (ok, _, err) = envlayer_env(&dir, &["build", env.to_str().unwrap(), "--cache-dir", "cache", "-o", "out.oci", "-q"], &[]);
    assert!(ok, "{err}");
    let m = manifest(&dir.join("out.oci"));
    let digest = m["layers"][0]["digest"].as_str().unwrap();
    let file = std::fs::File::open(blob_path(&dir.join("out.oci"), digest)).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut seen = 0;
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mode = e.header().mode().unwrap();
        assert_eq!(mode & 0o7000, 0, "{path} keeps setuid/setgid/sticky bits: {mode:o}");
        if path.ends_with("bin/tool") {
            assert_eq!(mode, 0o755);
            seen += 1;
        }
        if path.ends_with("bin/alias") {
            assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("tool"));
            seen += 1;
        }
    }
    assert_eq!(seen, 2);
}

#[test]
fn a_py_file_that_is_a_link_is_not_compiled_and_cannot_stall_the_build() {
    // x.py -> /dev/stdin would have the compiling python read its own requests; y.py is a plain module.
    let dir = scratch("hostile-pyc-link");
    let sp = "lib/python3.11/site-packages/pylinks";
    let c = hostile_channel(
        &dir,
        "pylinks",
        &format!(r##"[data(tarfile.SYMTYPE, "{sp}/x.py", linkname="/dev/stdin"), data(tarfile.REGTYPE, "{sp}/y.py", b"VALUE = 1\n")]"##),
        &format!(r#"[{{"_path": "{sp}/x.py", "path_type": "softlink"}}, {{"_path": "{sp}/y.py", "path_type": "hardlink", "size_in_bytes": 10}}]"#),
    );
    let env = env_file(&dir, "pylinks", &[&c, &channels().join("local-python")], &["python=3.11", "pylinks"]);
    let out = hostile::run_bounded(&dir, &["build", env.to_str().unwrap(), "--cache-dir", "cache", "-o", "out.oci", "-q", "--json"], &[], std::time::Duration::from_secs(240));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut names = Vec::new();
    for_each_layer_file(&dir.join("out.oci"), |path, _| names.push(path.to_string()));
    assert!(names.iter().any(|n| n.ends_with(&format!("{sp}/__pycache__/y.cpython-311.pyc"))), "y.py compiled");
    assert!(!names.iter().any(|n| n.contains(&format!("{sp}/__pycache__/x."))), "the link was compiled: {names:?}");
}
