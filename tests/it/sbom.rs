//! Every image's SBOM: SPDX 2.3 (default) or CycloneDX 1.6 JSON, checked by third-party validators from
//! PyPI (spdx-tools, cyclonedx-python-lib), deterministic, written beside a layout and attached to a
//! pushed image as an OCI artifact whose subject is the image (the referrers tag schema on Debian's
//! registry, which has no referrers API), and pruned with the image.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const EPOCH: (&str, &str) = ("SOURCE_DATE_EPOCH", "1700000000");
const T0: &str = "2026-11-25T08:00:00Z";
const T0_25H: &str = "2026-11-26T09:00:00Z";

fn validators() -> std::path::PathBuf {
    pypi_tools().join("validators/bin")
}

/// Runs the validator for `format` on `file`; panics with its output when the file is not valid.
fn validate(file: &Path) {
    let name = file.to_str().unwrap();
    let out = if name.ends_with(".spdx.json") {
        Command::new(validators().join("pyspdxtools")).arg("-i").arg(file).output().unwrap()
    } else {
        let script = r#"
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
errs = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read(), all_errors=True)
for e in errs or []:
    print(list(e.data.path), e.data.message, file=sys.stderr)
sys.exit(1 if errs else 0)
"#;
        Command::new(validators().join("python")).args(["-c", script]).arg(file).output().unwrap()
    };
    assert!(out.status.success(), "{name} is not valid:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn purls(doc: &Value) -> Vec<String> {
    match doc["packages"].as_array() {
        Some(p) => p.iter().flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default()).filter_map(|r| r["referenceLocator"].as_str().map(String::from)).collect(),
        None => doc["components"].as_array().unwrap().iter().filter_map(|c| c["purl"].as_str().map(String::from)).collect(),
    }
}

#[test]
fn the_sbom_lists_every_package_validates_and_is_the_same_wherever_it_is_built() {
    let dir = scratch("sbom-files");
    let real = channels().join("real");
    let stubs = channels().join("stubs");
    // Real conda-forge and defaults metadata (licenses as packages write them), and local-python's.
    let envs = [
        env_file(&dir, "real", &[&real, &stubs], &["xtensor-io", "zlib"]),
        env_file(&dir, "py", &[&channels().join("local-python")], &["python=3.11", "flask", "requests", "rich"]),
    ];
    let base = format!("{}:base", debian_base().display());
    for env in &envs {
        let e = env.to_str().unwrap();
        let s = build_json_env(&dir, &[e, "--cache-dir", "cache", "-o", "a.oci", "--base", &base], &[EPOCH]);
        let spdx_file = dir.join("a.oci.spdx.json");
        assert_eq!(s["sbom"]["file"], "a.oci.spdx.json");
        validate(&spdx_file);
        let spdx: Value = serde_json::from_slice(&std::fs::read(&spdx_file).unwrap()).unwrap();
        // Every package, by its package URL; the image and the base by digest.
        let names: Vec<String> = purls(&spdx);
        assert_eq!(names.len(), s["packages"].as_array().unwrap().len(), "{names:?}");
        for p in s["packages"].as_array().unwrap() {
            let want = format!("pkg:conda/{}@{}?build={}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap().replace('!', "%21").replace('+', "%2B"), p["build"].as_str().unwrap());
            assert!(names.iter().any(|n| n.starts_with(&want)), "{want} in {names:?}");
        }
        let image = spdx["packages"].as_array().unwrap().iter().find(|p| p["SPDXID"] == "SPDXRef-image").unwrap();
        assert_eq!(image["versionInfo"], s["manifest_digest"]);
        assert!(spdx["packages"].as_array().unwrap().iter().any(|p| p["SPDXID"] == "SPDXRef-base"));
        let text = String::from_utf8(std::fs::read(&spdx_file).unwrap()).unwrap();
        assert!(!text.contains(dir.to_str().unwrap()) && !text.contains("/work/"), "no path of the build machine");
        // CycloneDX: the same packages.
        build_json_env(&dir, &[e, "--cache-dir", "cache", "-o", "c.oci", "--base", &base, "--sbom", "cyclonedx"], &[EPOCH]);
        validate(&dir.join("c.oci.cdx.json"));
        let cdx: Value = serde_json::from_slice(&std::fs::read(dir.join("c.oci.cdx.json")).unwrap()).unwrap();
        let mut a = purls(&cdx);
        let mut b = names.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }
    // Licenses: SPDX expressions as they are, anything else declared as extracted text.
    let spdx: Value = serde_json::from_slice(&std::fs::read(dir.join("a.oci.spdx.json")).unwrap()).unwrap();
    let declared: Vec<&str> = spdx["packages"].as_array().unwrap().iter().filter_map(|p| p["licenseDeclared"].as_str()).collect();
    assert!(declared.contains(&"BSD-3-Clause") && declared.iter().any(|d| d.starts_with("LicenseRef-conda-")), "{declared:?}");

    // The same inputs elsewhere: the same SBOM bytes.
    let other = dir.join("elsewhere/deeper");
    std::fs::create_dir_all(&other).unwrap();
    let env2 = env_file(&other, "py", &[&channels().join("local-python")], &["python=3.11", "flask", "requests", "rich"]);
    build_json_env(&other, &[env2.to_str().unwrap(), "--cache-dir", dir.join("cache").to_str().unwrap(), "-o", "a.oci", "--base", &base], &[EPOCH]);
    assert_eq!(std::fs::read(other.join("a.oci.spdx.json")).unwrap(), std::fs::read(dir.join("a.oci.spdx.json")).unwrap());

    // --sbom none: none; a file of the user's at that path is never replaced.
    let s = build_json_env(&dir, &[envs[1].to_str().unwrap(), "--cache-dir", "cache", "-o", "n.oci", "--sbom", "none", "--base", "scratch"], &[EPOCH]);
    assert!(s["sbom"].is_null() && !dir.join("n.oci.spdx.json").exists());
    std::fs::write(dir.join("u.oci.spdx.json"), "mine").unwrap();
    let s = build_json_env(&dir, &[envs[1].to_str().unwrap(), "--cache-dir", "cache", "-o", "u.oci", "--base", "scratch"], &[EPOCH]);
    assert_eq!(std::fs::read_to_string(dir.join("u.oci.spdx.json")).unwrap(), "mine");
    assert!(s["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("is not an SBOM envlayer wrote")), "{}", s["warnings"]);
}


#[test]
fn the_sbom_is_a_referrer_of_the_pushed_image_and_goes_with_it() {
    let dir = scratch("sbom-registry");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let repo = format!("{}/envs", reg.addr());
    let chan = example_channel(&dir);
    let env = env_file(&dir, "hello", &[&chan], &["envlayer-hello"]);
    let e = env.to_str().unwrap();
    // Written beside the layout and pushed, in one build.
    let s = build_json_env(&dir, &[e, "--cache-dir", "cache", "-o", "h.oci", "--base", "scratch", "--push", &format!("{repo}:h")], &[EPOCH]);
    let image = s["manifest_digest"].as_str().unwrap();
    let tag = format!("sha256-{}", image.trim_start_matches("sha256:"));
    let index = skopeo_json(&["--raw"], &format!("docker://{repo}:{tag}"));
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["artifactType"], "application/spdx+json");
    let artifact = skopeo_json(&["--raw"], &format!("docker://{repo}@{}", entries[0]["digest"].as_str().unwrap()));
    assert_eq!(artifact["subject"]["digest"], image);
    assert_eq!(artifact["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
    let local = envlayer::Digest::of(&std::fs::read(dir.join("h.oci.spdx.json")).unwrap()).to_string();
    assert_eq!(artifact["layers"][0]["digest"], local.as_str(), "the SBOM pushed is the one beside the layout");
    assert_eq!(s["sbom_artifact"]["found_through"], "tag-schema");
    // The SBOM bytes back from the registry, through skopeo, are the file's.
    run(Command::new("skopeo").args(["copy", "-q", "--src-tls-verify=false"]).arg(format!("docker://{repo}@{}", entries[0]["digest"].as_str().unwrap())).arg(format!("dir:{}", dir.join("art").display())));
    assert_eq!(envlayer::Digest::of(&std::fs::read(dir.join("art").join(local.trim_start_matches("sha256:"))).unwrap()).to_string(), local);

    // A CycloneDX SBOM of the same image joins the index; the SPDX entry stays.
    let (ok, _, err) = envlayer_env(&dir, &["build", e, "--cache-dir", "cache", "-o", "h2.oci", "--base", "scratch", "--sbom", "cyclonedx", "--push", &format!("{repo}:h"), "-q"], &[EPOCH]);
    assert!(ok, "{err}");
    let types: Vec<String> = skopeo_json(&["--raw"], &format!("docker://{repo}:{tag}"))["manifests"].as_array().unwrap().iter().map(|m| m["artifactType"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["application/spdx+json", "application/vnd.cyclonedx+json"]);

    // `push` of the layout takes the SBOM beside it along.
    let (ok, out, err) = envlayer_env(&dir, &["push", "h.oci", &format!("{}/other:h", reg.addr()), "--json"], &[]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["sbom_artifact"][0]["artifact_type"], "application/spdx+json");
    skopeo_json(&["--raw"], &format!("docker://{}/other:{tag}", reg.addr()));

    // resolve attaches one too, and prune deletes it with the image.
    let (ok, out, err) = envlayer_env(&dir, &["resolve", e, "--repo", &repo, "--now", T0, "--cache-dir", "cache", "--base", "scratch", "--json", "-q"], &[]);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let rtag = format!("sha256-{}", r["image"]["digest"].as_str().unwrap().trim_start_matches("sha256:"));
    let sbom_digest = r["sbom"]["reference"].as_str().unwrap().rsplit('@').next().unwrap().to_string();
    skopeo_json(&["--raw"], &format!("docker://{repo}:{rtag}"));
    let (ok, out, err) = envlayer_env(&dir, &["prune", "--repo", &repo, "--now", T0_25H, "--json"], &[]);
    assert!(ok, "{err}");
    let pruned: Value = serde_json::from_str(&out).unwrap();
    assert!(pruned["deleted"][0]["referrers"].as_array().unwrap().iter().any(|d| d == sbom_digest.as_str()), "{out}");
    let gone = Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{repo}:{rtag}")).output().unwrap();
    assert!(!gone.status.success(), "the referrers tag went with the image");
    // The images built with `build` (no expiry) and their SBOMs stay.
    skopeo_json(&["--raw"], &format!("docker://{repo}:{tag}"));
}
