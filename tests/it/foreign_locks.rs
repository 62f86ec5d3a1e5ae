//! The lock files users already have: a conda explicit file (`@EXPLICIT`, `URL#sha256`), a
//! conda-lock.yml (v1), and a pixi.lock with several environments (`--environment`), each building
//! without a solve the same packages as envlayer's own lock; the lock's platform drives `--platform`.

use crate::common::*;
use rattler_conda_types::Subdir;
use serde_json::Value;
use std::path::Path;

fn packages(s: &Value) -> Vec<String> {
    let mut v: Vec<String> = s["packages"].as_array().unwrap().iter().map(|p| format!("{}-{}-{}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap(), p["build"].as_str().unwrap())).collect();
    v.sort();
    v
}

fn layer_digests(s: &Value) -> Vec<String> {
    s["layers"].as_array().unwrap().iter().filter(|l| !l["packages"].as_array().unwrap().is_empty()).map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

#[test]
fn explicit_files_conda_lock_and_pixi_locks_build_what_they_list() {
    let dir = scratch("foreign-locks");
    let real = channels().join("real");
    let stubs = channels().join("stubs");
    let env = env_file(&dir, "real", &[&real, &stubs], &["xtensor-io", "zlib"]);
    let e = env.to_str().unwrap();
    let solved = build_json(&dir, &[e, "--cache-dir", "cache", "-o", "solved.oci", "--base", "scratch"]);
    let records = envlayer::lockfile::read_lock(&dir.join("solved.oci.lock"), Subdir::Linux64).unwrap().records;
    let from = |lock: &str, extra: &[&str]| -> Value {
        let mut args = vec![e, "--cache-dir", "cache", "-o", "x.oci", "--base", "scratch", "--lock", lock];
        args.extend(extra);
        let s = build_json(&dir, &args);
        assert_eq!(s["solved"], false);
        s
    };

    // A conda explicit file, as `conda list --explicit --sha256` writes it (with a blank line).
    let mut explicit = String::from("# This file may be used to create an environment using:\n# platform: linux-64\n@EXPLICIT\n\n");
    for r in &records {
        explicit.push_str(&format!("{}#{}\n", r.url, envlayer::fetch::hex(&r.package_record.sha256.unwrap())));
    }
    std::fs::write(dir.join("explicit.txt"), &explicit).unwrap();
    let s = from("explicit.txt", &[]);
    assert_eq!(packages(&s), packages(&solved));
    // (The layers differ from the solved build's: a record made from the archive's index.json carries
    // the hash the file names, not repodata's md5 and sha256 both.)
    assert_eq!(layer_digests(&s).len(), layer_digests(&solved).len());
    // A line without its hash is refused, naming it.
    std::fs::write(dir.join("nohash.txt"), explicit.lines().map(|l| if l.contains("zlib") { l.split('#').next().unwrap().to_string() } else { l.to_string() }).collect::<Vec<_>>().join("\n")).unwrap();
    let (ok, _, err) = envlayer_env(&dir, &["build", e, "--cache-dir", "cache", "-o", "y.oci", "--lock", "nohash.txt", "-q"], &[]);
    assert!(!ok && err.contains("zlib") && err.contains("has no #sha256 or #md5"), "{err}");

    // Lines that point off the environment's channels, or carry credentials, are refused before any fetch.
    for (line, expect) in [
        ("file:///etc/passwd-1.0-0.conda#".to_string() + &"a".repeat(64), "lock file"),
        ("http://169.254.169.254/latest/x-1.0-0.conda#".to_string() + &"a".repeat(64), "lock file"),
        ("https://ci:s3cret@conda.example.com/chan/linux-64/x-1.0-0.conda#".to_string() + &"a".repeat(64), "credentials"),
    ] {
        std::fs::write(dir.join("hostile.txt"), format!("@EXPLICIT\n{line}\n")).unwrap();
        let (ok, _, err) = envlayer_env(&dir, &["build", e, "--cache-dir", "cache-h", "-o", "h.oci", "--lock", "hostile.txt", "-q"], &[]);
        assert!(!ok && err.contains(expect) && !err.contains("s3cret"), "{line}: {err}");
        assert!(!dir.join("cache-h/pkgs").exists(), "{line}: nothing fetched");
    }

    // conda-lock.yml (version 1), as conda-lock writes it.
    let channel_urls: Vec<String> = [&real, &stubs].iter().map(|c| format!("file://{}/", c.display())).collect();
    let mut yaml = format!(
        "version: 1\nmetadata:\n  content_hash:\n    linux-64: 0000\n  channels:\n{}  platforms:\n  - linux-64\n  sources:\n  - real.yaml\npackage:\n",
        channel_urls.iter().map(|u| format!("  - url: {u}\n    used_env_vars: []\n")).collect::<String>()
    );
    for r in &records {
        let p = &r.package_record;
        let deps: String = p
            .depends
            .iter()
            .map(|d| {
                let (name, spec) = d.split_once(' ').unwrap_or((d, ""));
                format!("    {name}: '{spec}'\n")
            })
            .collect();
        yaml.push_str(&format!(
            "- name: {}\n  version: {}\n  manager: conda\n  platform: linux-64\n  dependencies:{}\n  url: {}\n  hash:\n    md5: {}\n    sha256: {}\n  category: main\n  optional: false\n",
            p.name.as_normalized(),
            p.version,
            if deps.is_empty() { " {}".to_string() } else { format!("\n{}", deps.trim_end()) },
            r.url,
            envlayer::fetch::hex(&p.md5.unwrap()),
            envlayer::fetch::hex(&p.sha256.unwrap())
        ));
    }
    std::fs::write(dir.join("conda-lock.yml"), yaml).unwrap();
    let s = from("conda-lock.yml", &[]);
    assert_eq!(packages(&s), packages(&solved));

    // A pixi.lock with two environments: --environment picks one; the other does not match this file.
    let write_pixi = |path: &Path, envs: &[(&str, Subdir, &[rattler_conda_types::RepoDataRecord])]| {
        let mut platforms: Vec<Subdir> = envs.iter().map(|e| e.1).collect();
        platforms.sort_by_key(|p| p.as_str());
        platforms.dedup();
        let data = platforms.iter().map(|p| rattler_lock::PlatformData { name: rattler_lock::PlatformName::try_from(p.as_str()).unwrap(), subdir: *p, virtual_packages: vec![] }).collect();
        let mut b = rattler_lock::LockFile::builder().with_platforms(data).unwrap();
        for (name, platform, recs) in envs {
            b.set_channels(*name, channel_urls.iter().map(|u| rattler_lock::Channel::from(u.clone())));
            for r in recs.iter() {
                b.add_conda_package(*name, platform.as_str(), r.clone().into()).unwrap();
            }
        }
        b.finish().to_path(path).unwrap();
    };
    let zlib_only: Vec<_> = records.iter().filter(|r| r.package_record.name.as_normalized() == "zlib" || r.package_record.name.as_normalized().starts_with("libgcc")).cloned().collect();
    write_pixi(&dir.join("pixi.lock"), &[("default", Subdir::Linux64, &zlib_only), ("full", Subdir::Linux64, &records)]);
    let s = from("pixi.lock", &["--environment", "full"]);
    assert_eq!(packages(&s), packages(&solved));
    let (ok, _, err) = envlayer_env(&dir, &["build", e, "--cache-dir", "cache", "-o", "y.oci", "--lock", "pixi.lock", "-q"], &[]);
    assert!(!ok && err.contains("asks for xtensor-io, which the lock does not have"), "{err}");
    let (ok, _, err) = envlayer_env(&dir, &["build", e, "--cache-dir", "cache", "-o", "y.oci", "--lock", "pixi.lock", "--environment", "gpu", "-q"], &[]);
    assert!(!ok && err.contains("has no environment \"gpu\"") && err.contains("default, full"), "{err}");

    // The lock's platform drives --platform: a lock for linux-aarch64 (noarch packages) builds an arm64 image.
    let chan = example_channel(&dir);
    let hello = env_file(&dir, "hello", &[&chan], &["envlayer-hello"]);
    build_json(&dir, &[hello.to_str().unwrap(), "--cache-dir", "cache", "-o", "h.oci", "--base", "scratch"]);
    let noarch = envlayer::lockfile::read_lock(&dir.join("h.oci.lock"), Subdir::Linux64).unwrap().records;
    let hello_urls = [format!("file://{}/", chan.canonicalize().unwrap().display())];
    let mut b = rattler_lock::LockFile::builder()
        .with_platforms(vec![rattler_lock::PlatformData { name: rattler_lock::PlatformName::try_from("linux-aarch64").unwrap(), subdir: Subdir::LinuxAarch64, virtual_packages: vec![] }])
        .unwrap();
    b.set_channels("default", hello_urls.iter().map(|u| rattler_lock::Channel::from(u.clone())));
    for r in &noarch {
        b.add_conda_package("default", "linux-aarch64", r.clone().into()).unwrap();
    }
    b.finish().to_path(&dir.join("arm.lock")).unwrap();
    let s = build_json(&dir, &[hello.to_str().unwrap(), "--cache-dir", "cache", "-o", "arm.oci", "--base", "scratch", "--lock", "arm.lock"]);
    assert_eq!(s["platform"], "linux-aarch64");
    let m = manifest(&dir.join("arm.oci"));
    assert_eq!(blob_json(&dir.join("arm.oci"), m["config"]["digest"].as_str().unwrap())["architecture"], "arm64");

    // A lock of two platforms builds both, as one multi-platform image.
    let both: Vec<rattler_lock::PlatformData> = ["linux-64", "linux-aarch64"]
        .iter()
        .map(|p| rattler_lock::PlatformData { name: rattler_lock::PlatformName::try_from(*p).unwrap(), subdir: p.parse().unwrap(), virtual_packages: vec![] })
        .collect();
    let mut b = rattler_lock::LockFile::builder().with_platforms(both).unwrap();
    b.set_channels("default", hello_urls.iter().map(|u| rattler_lock::Channel::from(u.clone())));
    for p in ["linux-64", "linux-aarch64"] {
        for r in &noarch {
            b.add_conda_package("default", p, r.clone().into()).unwrap();
        }
    }
    b.finish().to_path(&dir.join("both.lock")).unwrap();
    let s = build_json(&dir, &[hello.to_str().unwrap(), "--cache-dir", "cache", "-o", "both.oci", "--base", "scratch", "--lock", "both.lock"]);
    let mut platforms: Vec<&str> = s["platforms"].as_array().unwrap().iter().map(|p| p["platform"].as_str().unwrap()).collect();
    platforms.sort();
    assert_eq!(platforms, ["linux-64", "linux-aarch64"]);
    assert!(s["index_digest"].as_str().unwrap().starts_with("sha256:"));
}
