//! `envlayer prepull`: a DaemonSet that pre-pulls exactly the fresh environment images of a repository,
//! by digest, checked against Kubernetes' own JSON schemas (kubernetes-validate, strict, offline).

use crate::common::*;
use serde_json::Value;
use std::process::Command;

const T0: &str = "2026-11-25T08:00:00Z";
const T0_20H: &str = "2026-11-26T04:00:00Z";
const T0_25H: &str = "2026-11-26T09:00:00Z";

#[test]
fn the_daemonset_pulls_exactly_the_fresh_images_and_is_valid_kubernetes() {
    let dir = scratch("prepull");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let repo = format!("{}/envs", reg.addr());
    let chan = example_channel(&dir);
    let mut refs = std::collections::BTreeMap::new();
    for (name, deps, now, platform) in [
        ("old-env", &["envlayer-docs"][..], T0, "linux-64"),
        ("fresh-a", &["envlayer-hello"][..], T0_20H, "linux-64"),
        ("fresh-b", &["envlayer-docs", "envlayer-hello"][..], T0_20H, "linux-64"),
        ("fresh-arm", &["envlayer-hello"][..], T0_20H, "linux-aarch64"),
    ] {
        let env = env_file(&dir, name, &[&chan], deps);
        let (ok, out, err) = envlayer_env(&dir, &["resolve", env.to_str().unwrap(), "--repo", &repo, "--now", now, "--cache-dir", "cache", "--base", "scratch", "--platform", platform, "-q"], &[]);
        assert!(ok, "{err}");
        refs.insert(name, out.trim().to_string());
    }
    let (ok, out, err) = envlayer_env(&dir, &["prepull", "--repo", &repo, "--now", T0_25H, "--json"], &[]);
    assert!(ok, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mut got: Vec<&str> = listed.iter().map(|i| i["reference"].as_str().unwrap()).collect();
    got.sort();
    let mut want = vec![refs["fresh-a"].as_str(), refs["fresh-b"].as_str(), refs["fresh-arm"].as_str()];
    want.sort();
    assert_eq!(got, want, "exactly the fresh images, by digest");

    let (ok, yaml, err) = envlayer_env(&dir, &["prepull", "--repo", &repo, "--now", T0_25H, "--namespace", "ml-envs", "--selector", "pool=gpu", "--selector", "zone=a"], &[]);
    assert!(ok, "{err}");
    std::fs::write(dir.join("ds.yaml"), &yaml).unwrap();
    // Kubernetes' schemas, strict (unknown keys fail), offline; an unknown kind would fail too.
    let check = r#"
import sys, yaml, kubernetes_validate as kv
for doc in yaml.safe_load_all(open(sys.argv[1])):
    kv.validate(doc, "1.30", strict=True)
print("valid")
"#;
    let out = Command::new(pypi_tools().join("validators/bin/python")).args(["-c", check]).arg(dir.join("ds.yaml")).output().unwrap();
    assert!(out.status.success(), "{yaml}\n{}", String::from_utf8_lossy(&out.stderr));
    // One DaemonSet per architecture, on that architecture's nodes, pulling the images that run there.
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    assert_eq!(docs.len(), 2, "{yaml}");
    for (ds, arch, images) in [(&docs[0], "amd64", vec![refs["fresh-a"].as_str(), refs["fresh-b"].as_str()]), (&docs[1], "arm64", vec![refs["fresh-arm"].as_str()])] {
        assert_eq!(ds["kind"], "DaemonSet");
        assert_eq!(ds["metadata"]["namespace"], "ml-envs");
        assert_eq!(ds["metadata"]["name"], format!("envlayer-prepull-{arch}").as_str());
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(spec["nodeSelector"]["pool"], "gpu");
        assert_eq!(spec["nodeSelector"]["zone"], "a");
        assert_eq!(spec["nodeSelector"]["kubernetes.io/arch"], arch);
        // The selector picks the template's pods.
        for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&ds["spec"]["template"]["metadata"]["labels"][k], v);
        }
        let mut pulled: Vec<&str> = spec["initContainers"].as_array().unwrap().iter().skip(1).map(|c| c["image"].as_str().unwrap()).collect();
        pulled.sort();
        let mut images = images;
        images.sort();
        assert_eq!(pulled, images, "{arch}");
        for c in spec["initContainers"].as_array().unwrap().iter().skip(1) {
            assert_eq!(c["command"][0], "/envlayer-noop/busybox", "a no-op that needs nothing from the image");
            assert!(c["resources"]["requests"]["cpu"].is_string());
        }
    }

    // Labels that are not labels are refused.
    let (ok, _, err) = envlayer_env(&dir, &["prepull", "--repo", &repo, "--selector", "pool=gpu nodes"], &[]);
    assert!(!ok && err.contains("not a Kubernetes label"), "{err}");
}
