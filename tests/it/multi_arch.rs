//! Multi-platform images without emulation: one build per conda platform joined by an OCI image index
//! with the right `platform` for each, noarch layers shared as one blob, a base per platform, and
//! `resolve`, `ls` and `prune` treating the index as one image.

use crate::common::*;
use serde_json::Value;
use std::process::Command;

const T0: &str = "2026-11-25T08:00:00Z";
const T0_25H: &str = "2026-11-26T09:00:00Z";


#[test]
fn an_index_per_environment_with_each_platforms_image() {
    let dir = scratch("multi-arch");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let repo = format!("{}/envs", reg.addr());
    let chan = example_channel(&dir);
    let env = env_file(&dir, "hello", &[&chan], &["envlayer-hello"]);
    let e = env.to_str().unwrap();
    let base = format!("{}:base", debian_base().display());
    // amd64 on the Debian base, arm64 on none (the base is amd64 only).
    let args = ["build", e, "--platform", "linux-64,linux-aarch64", "--base", &base, "--base", "linux-aarch64=scratch", "--cache-dir", "cache", "-o", "m.oci", "--json", "-q"];
    let (ok, out, err) = envlayer_env(&dir, &[&args[..], &["--push", &format!("{repo}:multi")]].concat(), &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert!(ok, "{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    for image in [format!("oci:{}:latest", dir.join("m.oci").display()), format!("docker://{repo}:multi")] {
        let index = skopeo_json(&["--raw"], &image);
        assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{image}");
        assert_eq!(index["annotations"]["io.envlayer.env.name"], "hello");
        let platforms: Vec<String> = index["manifests"].as_array().unwrap().iter().map(|m| format!("{}/{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap(), m["platform"]["variant"].as_str().unwrap_or(""))).collect();
        assert_eq!(platforms, ["linux/amd64/", "linux/arm64/v8"]);
        // skopeo picks each platform's image; the arm64 one has no Debian layers.
        let amd = skopeo_json(&["--override-arch", "amd64"], &image);
        let arm = skopeo_json(&["--override-arch", "arm64"], &image);
        assert_eq!((amd["Architecture"].as_str(), arm["Architecture"].as_str()), (Some("amd64"), Some("arm64")));
        let (amd_layers, arm_layers) = (amd["Layers"].as_array().unwrap(), arm["Layers"].as_array().unwrap());
        assert!(amd_layers.len() > arm_layers.len());
        // The noarch package's layer is one blob, shared.
        let pkg = &s["platforms"][1]["build"]["layers"].as_array().unwrap().iter().find(|l| !l["packages"].as_array().unwrap().is_empty()).unwrap()["digest"];
        assert!(amd_layers.contains(pkg) && arm_layers.contains(pkg), "{pkg}");
    }
    // Each platform's image has its SBOM.
    for p in s["platforms"].as_array().unwrap() {
        let tag = format!("sha256-{}", p["build"]["manifest_digest"].as_str().unwrap().trim_start_matches("sha256:"));
        skopeo_json(&["--raw"], &format!("docker://{repo}:{tag}"));
    }
    // A base for a platform that is another architecture is refused.
    let (ok, _, err) = envlayer_env(&dir, &["build", e, "--platform", "linux-64,linux-aarch64", "--base", &format!("linux-aarch64={base}"), "--cache-dir", "cache", "-o", "bad.oci", "-q"], &[]);
    assert!(!ok && err.contains("but --platform linux-aarch64 builds arm64"), "{err}");

    // resolve: built once for both platforms, then a hit; ls shows one row; prune takes the platforms too.
    let resolve = || -> Value {
        let (ok, out, err) = envlayer_env(&dir, &["resolve", e, "--platform", "linux-64,linux-aarch64", "--base", "scratch", "--repo", &repo, "--now", T0, "--cache-dir", "cache", "--json", "-q"], &[]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let first = resolve();
    assert_eq!(first["hit"], false);
    assert_eq!(first["builds"].as_array().unwrap().len(), 2);
    let second = resolve();
    assert_eq!(second["hit"], true);
    assert_eq!(second["reference"], first["reference"]);
    let (ok, table, _) = envlayer_env(&dir, &["ls", "--repo", &repo, "--now", T0_25H], &[]);
    assert!(ok && table.contains("is an index for: linux-64, linux-aarch64"), "{table}");
    let children: Vec<String> = first["builds"].as_array().unwrap().iter().map(|b| b["manifest_digest"].as_str().unwrap().to_string()).collect();
    // A user pins the arm64 image by a tag of their own: prune keeps it, and deletes the rest.
    run(Command::new("skopeo").args(["copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"]).arg(format!("docker://{repo}@{}", children[1])).arg(format!("docker://{repo}:arm-pinned")));
    let (ok, out, err) = envlayer_env(&dir, &["prune", "--repo", &repo, "--now", T0_25H, "--json"], &[]);
    assert!(ok, "{err}");
    let pruned: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pruned["deleted"].as_array().unwrap().len(), 1, "{out}");
    let exists = |c: &str| Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{repo}@{c}")).output().unwrap().status.success();
    assert!(!exists(&children[0]), "the amd64 image went with its index");
    assert!(exists(&children[1]), "the pinned arm64 image stays");

    // A registry base: each platform's layers come from it, into a layout too.
    run(Command::new("skopeo").args(["copy", "-q", "--dest-tls-verify=false"]).arg(format!("oci:{base}")).arg(format!("docker://{}/base/debian:12", reg.addr())));
    let args = ["build", e, "--platform", "linux-64,linux-aarch64", "--base", &format!("{}/base/debian:12", reg.addr()), "--base", "linux-aarch64=scratch", "--cache-dir", "cache", "-o", "r.oci", "-q"];
    let (ok, _, err) = envlayer_env(&dir, &args, &[]);
    assert!(ok, "{err}");
    run(Command::new("skopeo").args(["copy", "-q", "--all"]).arg(format!("oci:{}:latest", dir.join("r.oci").display())).arg(format!("oci:{}:all", dir.join("r-copy").display())));
}
