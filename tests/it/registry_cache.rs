//! The registry as a shared layer cache, against the real local registry: a fresh runner rebuilds
//! nothing another runner built, a +1 environment builds one package layer, eight concurrent runners lose
//! no entry, a poisoned entry is caught and never pushed, and prune drops entries with the images.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const SDE: [(&str, &str); 1] = [("SOURCE_DATE_EPOCH", "1700000000")];

fn env_with(dir: &Path, name: &str, deps: &[&str]) -> PathBuf {
    env_file(dir, name, &[&channels().join("local-python")], deps)
}

/// `envlayer build ENV ARGS --json -q` with SOURCE_DATE_EPOCH, in `dir`.
fn build(dir: &Path, env: &Path, args: &[&str]) -> Value {
    let mut all = vec![env.to_str().unwrap(), "--base", "scratch"];
    all.extend(args);
    build_json_env(dir, &all, &SDE)
}

/// The package layers (not the environment's) of a summary that were built here: neither from the local
/// cache nor from the registry cache.
fn built_here(s: &Value) -> Vec<Value> {
    s["layers"].as_array().unwrap().iter().filter(|l| l["packages"][0] != "environment" && l["cached"] == false && l["remote"] == false).cloned().collect()
}

fn tags(repo: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&run(Command::new("skopeo").args(["list-tags", "--tls-verify=false"]).arg(format!("docker://{repo}")))).unwrap();
    v["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

fn raw(image: &str) -> Value {
    serde_json::from_str(&run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{image}")))).unwrap()
}

fn layer_digests(s: &Value) -> Vec<String> {
    s["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_fresh_runner_builds_nothing_another_runner_built() {
    let dir = scratch("regcache-fresh");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let repo = format!("{}/envs", reg.addr());
    let env = env_with(&dir, "demo", &["python=3.11", "flask", "requests", "rich"]);

    // Runner A: a cold build, pushed; its entries are written after the push.
    let a = build(&dir, &env, &["--push", &format!("{repo}:a"), "--cache-dir", "ca"]);
    assert!(a["work"]["installed"].as_u64().unwrap() > 10);
    let written = &a["registry_cache_written"];
    assert!(written["failed"].as_array().unwrap().is_empty(), "{written}");
    let entries: Vec<&str> = written["written"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(entries.iter().any(|t| t.starts_with("envlayer-cache-")) && entries.iter().any(|t| t.starts_with("envlayer-info-")), "{entries:?}");
    let listed = tags(&repo);
    assert!(entries.iter().all(|t| listed.iter().any(|l| l == t)), "every entry is a tag of the repository");
    // An entry is an OCI artifact naming its layer blobs.
    let entry = raw(&format!("{repo}:{}", entries.iter().find(|t| t.starts_with("envlayer-cache-")).unwrap()));
    assert_eq!(entry["artifactType"], envlayer::regcache::ARTIFACT_TYPE);
    assert!(layer_digests(&a).contains(&entry["layers"][0]["digest"].as_str().unwrap().to_string()));

    // Runner B, empty cache: nothing fetched, installed or compressed but the environment layer; the
    // same manifest; every package layer referenced from the registry, nothing uploaded.
    let b = build(&dir, &env, &["--push", &format!("{repo}:b"), "--cache-dir", "cb"]);
    let w = &b["work"];
    assert_eq!((w["downloaded"].as_u64(), w["installed"].as_u64(), w["compressed"].as_u64()), (Some(0), Some(0), Some(1)), "{w}");
    assert!(built_here(&b).is_empty(), "{}", b["layers"]);
    assert_eq!(w["remote_layers"].as_u64().unwrap() as usize, b["layers"].as_array().unwrap().len() - 1);
    assert_eq!(b["manifest_digest"], a["manifest_digest"]);
    assert!(b["push"]["uploaded"].as_array().unwrap().is_empty(), "{}", b["push"]);
    assert!(b["registry_cache_written"]["written"].as_array().unwrap().is_empty(), "nothing new to record");
    assert!(!dir.join("cb/pkgs").exists() || std::fs::read_dir(dir.join("cb/pkgs")).unwrap().next().is_none(), "no package fetched");

    // A layout output downloads the hit layers (verified) instead of building them; real clients read it.
    let c = build(&dir, &env, &["-o", "c.oci", "--cache-repo", &repo, "--cache-dir", "cc"]);
    assert_eq!(c["work"]["installed"], 0);
    assert_eq!(c["manifest_digest"], a["manifest_digest"]);
    run(Command::new("skopeo").args(["copy", "oci:c.oci:latest", "oci:copy.oci:latest"]).current_dir(&dir));
    let rootfs = unpack(&dir.join("c.oci"), "latest", &dir.join("bundle"));
    assert!(rootfs.join("opt/conda/envs/demo/lib/python3.11/site-packages/flask/__init__.py").is_file());
    // A second build from that cache looks the keys up again: a layer from the registry is never taken
    // for one this machine built (which a later check would trust over the registry's entry).
    let c2 = build(&dir, &env, &["-o", "c2.oci", "--cache-repo", &repo, "--cache-dir", "cc"]);
    assert_eq!(c2["work"]["remote_layers"], c["work"]["remote_layers"]);
    assert_eq!(c2["work"]["installed"], 0);
    assert_eq!(c2["manifest_digest"], a["manifest_digest"]);

    // A push to another repository of the registry, with the cache in the first: the hit layers are
    // mounted across repositories, not uploaded.
    let other = format!("{}/team/other", reg.addr());
    let m = build(&dir, &env, &["--push", &format!("{other}:m"), "--cache-repo", &repo, "--cache-dir", "cm"]);
    assert_eq!(m["work"]["installed"], 0);
    assert_eq!(m["manifest_digest"], a["manifest_digest"]);
    let mounted = m["push"]["mounted"].as_u64().unwrap() as usize;
    assert_eq!(mounted, m["layers"].as_array().unwrap().len() - 1, "every package layer mounted: {}", m["push"]);
    run(Command::new("skopeo").args(["copy", "-q", "--src-tls-verify=false"]).arg(format!("docker://{other}:m")).arg(format!("oci:{}:m", dir.join("m.oci").display())));

    // A push to another registry: the hit layers are downloaded (and read back), then uploaded there.
    let reg2 = Service::registry("plain", &dir.join("reg2"), &[]);
    let far = format!("{}/far/env", reg2.addr());
    let f = build(&dir, &env, &["--push", &format!("{far}:f"), "--cache-repo", &repo, "--cache-dir", "cf"]);
    assert_eq!(f["work"]["installed"], 0);
    assert_eq!(f["manifest_digest"], a["manifest_digest"]);
    assert_eq!(f["push"]["uploaded"].as_array().unwrap().len(), f["layers"].as_array().unwrap().len() + 1, "every layer and the config: {}", f["push"]);
    assert!(f["registry_cache_written"].is_null() || f["registry_cache_written"]["written"].as_array().unwrap().is_empty());

    // The cache turned off: a cold build.
    let d = build(&dir, &env, &["--push", &format!("{repo}:d"), "--cache-dir", "cd", "--cache-repo", "none"]);
    assert!(d["registry_cache"].is_null());
    assert!(d["work"]["installed"].as_u64().unwrap() > 10);

    // ls shows images only, never the entries.
    let out = envlayer(&dir, &["ls", "--repo", &repo, "--json"]);
    let ls: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(ls.as_array().unwrap().iter().all(|i| !i["tag"].as_str().unwrap().starts_with("envlayer-")), "{ls}");
}

#[test]
fn the_environment_plus_one_package_builds_one_package_layer() {
    let dir = scratch("regcache-plus-one");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let repo = format!("{}/envs", reg.addr());
    let deps = ["python=3.11", "flask", "requests"];
    let env = env_with(&dir, "demo", &deps);
    build(&dir, &env, &["--push", &format!("{repo}:a"), "--cache-dir", "ca", "--no-pyc", "--bucket-below", "0"]);
    // The same environment name (so the same prefix), with one more package, in another folder.
    std::fs::create_dir_all(dir.join("plus")).unwrap();
    let plus = env_with(&dir.join("plus"), "demo", &[&deps[..], &["packaging"]].concat());
    let b = build(&dir, &plus, &["--push", &format!("{repo}:b"), "--cache-dir", "cb", "--no-pyc", "--bucket-below", "0"]);
    let here = built_here(&b);
    assert_eq!(here.len(), 1, "{here:?}");
    assert!(here[0]["packages"][0].as_str().unwrap().starts_with("packaging-"), "{here:?}");
    assert_eq!(b["work"]["installed"], 1);
    assert_eq!(b["work"]["compressed"], 2, "the package's layer and the environment's");

    // With the default layer plan, small packages share buckets: still one package layer built.
    build(&dir, &env, &["--push", &format!("{repo}:c"), "--cache-dir", "cc"]);
    let d = build(&dir, &plus, &["--push", &format!("{repo}:d"), "--cache-dir", "cd"]);
    assert_eq!(built_here(&d).len(), 1, "{}", d["layers"]);
}

#[test]
fn eight_concurrent_runners_lose_no_entry() {
    let dir = scratch("regcache-eight");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let repo = format!("{}/envs", reg.addr());
    // Eight environments sharing python and more, each with its own packages: the runners write the same
    // keys and different keys at once.
    let extras = ["flask", "requests", "rich", "pip", "click", "jinja2", "packaging", "idna"];
    let envs: Vec<PathBuf> = extras.iter().enumerate().map(|(i, x)| env_with(&dir, &format!("e{i}"), &["python=3.11", x])).collect();
    let flags = ["--no-pyc", "--bucket-below", "0"];
    let summaries: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = envs
            .iter()
            .enumerate()
            .map(|(i, env)| {
                let (dir, repo) = (&dir, &repo);
                s.spawn(move || {
                    let mut args = vec!["--push".to_string(), format!("{repo}:r{i}"), "--cache-dir".into(), format!("c{i}")];
                    args.extend(flags.iter().map(|f| f.to_string()));
                    build(dir, env, &args.iter().map(String::as_str).collect::<Vec<_>>())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut written = std::collections::BTreeSet::new();
    for s in &summaries {
        assert!(s["registry_cache_written"]["failed"].as_array().unwrap().is_empty(), "{}", s["registry_cache_written"]);
        written.extend(s["registry_cache_written"]["written"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()));
    }
    let listed: std::collections::BTreeSet<String> = tags(&repo).into_iter().collect();
    let lost: Vec<&String> = written.iter().filter(|t| !listed.contains(*t)).collect();
    assert!(lost.is_empty(), "entries lost: {lost:?}");
    // Every environment again, each on an empty cache: every package layer is a hit.
    for (i, env) in envs.iter().enumerate() {
        let again = build(&dir, env, &[&["--push", &format!("{repo}:again{i}"), "--cache-dir", &format!("again{i}")][..], &flags[..]].concat());
        assert!(built_here(&again).is_empty(), "{}: {}", env.display(), again["layers"]);
        assert_eq!(again["work"]["installed"], 0);
        assert_eq!(again["manifest_digest"], summaries[i]["manifest_digest"]);
    }
}

/// Rewrites the entry tagged `tag` in `repo` so it names `layer` (another package's real blob, with its
/// real size) as its first part: what an attacker with push access, or a broken builder, would leave.
fn poison(repo: &str, tag: &str, layer: &Value) {
    rewrite_entry(repo, tag, |entry| {
        entry["layers"][0]["layer"]["digest"] = layer["digest"].clone();
        entry["layers"][0]["layer"]["diff_id"] = layer["diff_id"].clone();
        entry["layers"][0]["layer"]["size"] = layer["size"].clone();
    });
}

/// Rewrites the entry tagged `tag` in `repo` with `edit`, its manifest listing the entry's blobs.
fn rewrite_entry(repo: &str, tag: &str, edit: impl FnOnce(&mut Value)) {
    let reference: envlayer::registry::Reference = format!("{repo}:{tag}").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let registry = envlayer::registry::connect(&reference, &Default::default(), &Default::default()).await.unwrap();
        let (bytes, _, _) = registry.get_manifest(&reference.repository, tag).await.unwrap();
        let mut m: Value = serde_json::from_slice(&bytes).unwrap();
        let config_digest: envlayer::Digest = m["config"]["digest"].as_str().unwrap().parse().unwrap();
        let mut entry: Value = serde_json::from_slice(&registry.get_blob_bytes(&reference.repository, &config_digest).await.unwrap()).unwrap();
        edit(&mut entry);
        let config = serde_json::to_vec(&entry).unwrap();
        let d = envlayer::Digest::of(&config);
        registry.upload_blob_bytes(&reference.repository, &d, &config).await.unwrap();
        m["config"] = serde_json::json!({"mediaType": envlayer::regcache::ARTIFACT_TYPE, "digest": d.to_string(), "size": config.len()});
        if entry["layers"].is_array() {
            m["layers"][0]["digest"] = entry["layers"][0]["layer"]["digest"].clone();
            m["layers"][0]["size"] = entry["layers"][0]["layer"]["size"].clone();
        }
        registry.put_manifest(&reference.repository, tag, &serde_json::to_vec(&m).unwrap(), "application/vnd.oci.image.manifest.v1+json").await.unwrap();
    });
}

/// A build of the poisoning test's environment (one layer per package, no `.pyc`): its stdout and stderr.
fn poisoned_build(dir: &Path, env: &Path, args: &[&str]) -> (String, String) {
    let mut all = vec!["build", env.to_str().unwrap(), "--base", "scratch", "--json", "-q", "--no-pyc", "--bucket-below", "0"];
    all.extend(args);
    let (ok, out, err) = envlayer_env(dir, &all, &SDE);
    assert!(ok, "{err}");
    (out, err)
}

#[test]
fn a_poisoned_entry_is_caught_by_verification_and_never_pushed() {
    let dir = scratch("regcache-poison");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let repo = format!("{}/envs", reg.addr());
    let env = env_with(&dir, "demo", &["python=3.11", "flask", "rich"]);
    let flags = ["--no-pyc", "--bucket-below", "0"];
    let a = build(&dir, &env, &[&["--push", &format!("{repo}:a"), "--cache-dir", "ca"][..], &flags[..]].concat());
    let layers = a["layers"].as_array().unwrap();
    let flask = layers.iter().find(|l| l["packages"][0].as_str().unwrap().starts_with("flask-")).unwrap();
    let rich = layers.iter().find(|l| l["packages"][0].as_str().unwrap().starts_with("rich-")).unwrap();
    // Flask's entry: the one whose manifest names flask's blob.
    let flask_tag = tags(&repo)
        .into_iter()
        .filter(|t| t.starts_with("envlayer-cache-"))
        .find(|t| raw(&format!("{repo}:{t}"))["layers"][0]["digest"] == flask["digest"])
        .unwrap();
    // The entry now says flask's layer is rich's: a blob that exists, with its real size, so the HEAD
    // check passes and only re-deriving the layer can tell.
    poison(&repo, &flask_tag, rich);
    let raw_bytes = Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{repo}:{flask_tag}")).output().unwrap().stdout;
    let poisoned = envlayer::Digest::of(&raw_bytes).to_string();
    raw(&format!("{repo}@{poisoned}"));

    let (out, err) = poisoned_build(&dir, &env, &["--push", &format!("{repo}:b"), "--cache-dir", "cb", "--verify-cache"]);
    let b: Value = serde_json::from_str(&out).unwrap();
    assert!(err.contains(&flask_tag) && err.contains("verification failed"), "the poisoned entry is reported: {err}");
    let rejected = b["registry_cache"]["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(b["registry_cache"]["verified"].as_u64().unwrap() >= 2, "the other hits were verified");
    // The pushed image is the right one: flask's real layer, and rich's blob only once.
    assert_eq!(b["manifest_digest"], a["manifest_digest"]);
    let pushed = raw(&format!("{repo}:b"));
    let digests: Vec<&str> = pushed["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    assert!(digests.contains(&flask["digest"].as_str().unwrap()));
    assert_eq!(digests.iter().filter(|d| **d == rich["digest"].as_str().unwrap()).count(), 1);
    // And the entry was written again with what was built; the poisoned manifest is gone, not left untagged.
    assert_eq!(raw(&format!("{repo}:{flask_tag}"))["layers"][0]["digest"], flask["digest"]);
    let gone = Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{repo}@{poisoned}")).output().unwrap();
    assert!(!gone.status.success(), "the rewritten entry's old manifest was deleted: {}", String::from_utf8_lossy(&gone.stdout));

    // A runner whose own cache has the layer notices an entry that disagrees with it, for free.
    poison(&repo, &flask_tag, rich);
    let (_, err) = poisoned_build(&dir, &env, &["--push", &format!("{repo}:a2"), "--cache-dir", "ca"]);
    assert!(err.contains(&flask_tag) && err.contains("this machine built"), "{err}");
    assert_eq!(raw(&format!("{repo}:{flask_tag}"))["layers"][0]["digest"], flask["digest"]);

    // An entry whose blob left the repository (deleted, garbage-collected) is refused by the HEAD check.
    let url = format!("http://{}/v2/envs/blobs/{}", reg.addr(), flask["digest"].as_str().unwrap());
    run(Command::new("python3").args(["-c", "import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], method='DELETE'))", &url]));
    let (out, err) = poisoned_build(&dir, &env, &["--push", &format!("{repo}:c"), "--cache-dir", "cc"]);
    let c: Value = serde_json::from_str(&out).unwrap();
    assert!(err.contains("is not in the repository"), "{err}");
    assert_eq!(c["manifest_digest"], a["manifest_digest"]);
    assert_eq!(built_here(&c).len(), 1, "flask's layer rebuilt, the rest hits: {}", c["layers"]);

    // Facts are checked too: an entry whose package "activates" a loader variable is refused on sight...
    let rich_tag = tags(&repo)
        .into_iter()
        .filter(|t| t.starts_with("envlayer-cache-"))
        .find(|t| raw(&format!("{repo}:{t}"))["layers"][0]["digest"] == rich["digest"])
        .unwrap();
    rewrite_entry(&repo, &rich_tag, |e| e["members"][0]["facts"]["activation"] = serde_json::json!([["LD_PRELOAD", "/tmp/evil.so"]]));
    let (out, err) = poisoned_build(&dir, &env, &["--push", &format!("{repo}:d"), "--cache-dir", "cd"]);
    assert!(err.contains(&rich_tag) && err.contains("LD_PRELOAD"), "{err}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["manifest_digest"], a["manifest_digest"], "no LD_PRELOAD in the config");
    // ...and facts that lie about the paths (the layer right, so only re-deriving can tell) fail verification.
    rewrite_entry(&repo, &rich_tag, |e| {
        e["members"][0]["facts"]["paths"].as_array_mut().unwrap().push(serde_json::json!("bin/python3.11"));
    });
    let (_, err) = poisoned_build(&dir, &env, &["--push", &format!("{repo}:e"), "--cache-dir", "ce", "--verify-cache"]);
    assert!(err.contains(&rich_tag) && err.contains("facts"), "{err}");

    // A layer downloaded for a layout is read back: a diff_id that is not its tar's is refused.
    rewrite_entry(&repo, &flask_tag, |e| e["layers"][0]["layer"]["diff_id"] = serde_json::json!(format!("sha256:{}", "2".repeat(64))));
    let (out, err) = poisoned_build(&dir, &env, &["-o", "f.oci", "--cache-repo", &repo, "--cache-dir", "cf"]);
    assert!(err.contains(&flask_tag) && err.contains("the entry says diff_id sha256:2222"), "{err}");
    let f: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(f["manifest_digest"], a["manifest_digest"]);

    // A cache tag pointed at an image (anyone's) is refused, and writing the entry again never deletes
    // that image.
    run(Command::new("skopeo").args(["copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"]).arg(format!("docker://{repo}:a2")).arg(format!("docker://{repo}:{flask_tag}")));
    let (out, err) = poisoned_build(&dir, &env, &["--push", &format!("{repo}:g"), "--cache-dir", "cg"]);
    assert!(err.contains(&flask_tag) && err.contains("not an envlayer cache entry"), "{err}");
    let g: Value = serde_json::from_str(&out).unwrap();
    let failed = g["registry_cache_written"]["failed"].as_array().unwrap();
    assert!(failed.iter().any(|f| f.as_str().unwrap().starts_with(&flask_tag) && f.as_str().unwrap().contains("left alone")), "{failed:?}");
    assert_eq!(raw(&format!("{repo}:{flask_tag}"))["config"]["digest"], raw(&format!("{repo}:a2"))["config"]["digest"], "the tag still names the image");
    raw(&format!("{repo}@{}", a["manifest_digest"].as_str().unwrap()));
    assert_eq!(raw(&format!("{repo}:a2"))["layers"], raw(&format!("{repo}@{}", a["manifest_digest"].as_str().unwrap()))["layers"]);

    // Package-info entries are checked against the package: one claiming a Python distribution with a
    // line break in its name (a line for uv's constraints) is refused, and the archive read here.
    let info_tag = tags(&repo).into_iter().find(|t| t.starts_with("envlayer-info-")).unwrap();
    rewrite_entry(&repo, &info_tag, |e| e["info"]["python_dists"] = serde_json::json!([["evil-1.0\n--extra-index-url http://x", "1"]]));
    let (_, err) = poisoned_build(&dir, &env, &["--push", &format!("{repo}:h"), "--cache-dir", "ch"]);
    assert!(err.contains(&info_tag) && err.contains("not plain names"), "{err}");
}

/// `envlayer resolve ENV --repo REPO --now NOW --json` (no `.pyc`), each run with its own empty cache.
fn resolve_at(dir: &Path, env: &Path, repo: &str, now: &str) -> Value {
    let cache = format!("c-{}", now.replace(':', ""));
    let (ok, out, err) = envlayer_env(dir, &["resolve", env.to_str().unwrap(), "--repo", repo, "--now", now, "--cache-dir", &cache, "--json", "-q", "--no-pyc"], &[]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn prune_drops_the_entries_of_the_images_it_deletes() {
    let dir = scratch("regcache-prune");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let repo = format!("{}/envs", reg.addr());
    let env = env_with(&dir, "demo", &["python=3.11", "idna"]);
    let (ok, out, err) = envlayer_env(&dir, &["resolve", env.to_str().unwrap(), "--repo", &repo, "--now", "2026-11-25T08:00:00Z", "--cache-dir", "c", "--json", "-q", "--no-pyc"], &[]);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let written = r["registry_cache_written"][0]["written"].as_array().unwrap().len();
    assert!(written >= 3, "{r}");
    let entries = |repo: &str| tags(repo).into_iter().filter(|t| envlayer::regcache::is_cache_tag(t)).count();
    assert_eq!(entries(&repo), written);

    // While the image lives, its entries stay.
    let (ok, out, _) = envlayer_env(&dir, &["prune", "--repo", &repo, "--now", "2026-11-25T09:00:00Z", "--json"], &[]);
    assert!(ok);
    let p: Value = serde_json::from_str(&out).unwrap();
    assert!(p["cache_entries_deleted"].as_array().unwrap().is_empty(), "{p}");
    // A dry run after the TTL lists them; the real prune deletes them with the image.
    let (ok, out, _) = envlayer_env(&dir, &["prune", "--repo", &repo, "--now", "2026-11-26T09:00:00Z", "--json", "--dry-run"], &[]);
    assert!(ok);
    let dry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["cache_entries_deleted"].as_array().unwrap().len(), written, "{dry}");
    assert_eq!(entries(&repo), written);
    let (ok, out, err) = envlayer_env(&dir, &["prune", "--repo", &repo, "--now", "2026-11-26T09:00:00Z", "--json"], &[]);
    assert!(ok, "{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["deleted"].as_array().unwrap().len(), 1);
    assert_eq!(p["cache_entries_deleted"].as_array().unwrap().len(), written);
    assert_eq!(entries(&repo), 0);
    // Two images sharing python: pruning the expired one keeps the entries the other still uses.
    // (The same name, so the same prefix and python's same layers; other packages, so another identity.)
    std::fs::create_dir_all(dir.join("other")).unwrap();
    let env2 = env_with(&dir.join("other"), "demo", &["python=3.11", "idna", "certifi"]);
    let r1 = resolve_at(&dir, &env, &repo, "2026-11-27T08:00:00Z");
    let r2 = resolve_at(&dir, &env2, &repo, "2026-11-28T06:00:00Z");
    let kept: Vec<String> = r2["build"]["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    let only_first: Vec<String> = r1["build"]["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).filter(|d| !kept.contains(d)).collect();
    let (ok, out, err) = envlayer_env(&dir, &["prune", "--repo", &repo, "--now", "2026-11-28T09:00:00Z", "--json"], &[]);
    assert!(ok, "{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["deleted"].as_array().unwrap().len(), 1, "{p}");
    assert!(!p["cache_entries_deleted"].as_array().unwrap().is_empty(), "the first image's own entries go");
    for t in tags(&repo).into_iter().filter(|t| t.starts_with("envlayer-cache-")) {
        let d = raw(&format!("{repo}:{t}"))["layers"][0]["digest"].as_str().unwrap().to_string();
        assert!(kept.contains(&d) && !only_first.contains(&d), "{t} names {d}, which no image left uses");
    }
    let python = kept.iter().filter(|d| r1["build"]["layers"].as_array().unwrap().iter().any(|l| l["digest"] == d.as_str())).count();
    assert!(python >= 1, "the two images share python's layers");
    assert!(entries(&repo) >= python);

    // A cache kept in a repository of its own may serve other repositories' images: not pruned from one.
    let out = envlayer(&dir, &["prune", "--repo", &repo, "--cache-repo", &format!("{}/shared-cache", reg.addr())]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("may serve images this prune does not see"));
}

#[test]
fn the_ci_example_runs_against_a_local_registry() {
    let dir = scratch("regcache-ci-example");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    env_with(&dir, "demo", &["python=3.11", "rich"]);
    std::fs::rename(dir.join("demo.yaml"), dir.join("environment.yaml")).unwrap();
    let ci: Value = serde_yaml::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci/gitlab-ci.yml")).unwrap()).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_envlayer")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let base = format!("oci:{}:base", debian_base().display());
    // Each job as a runner would run it: its own empty cache, the pipeline's variables, a shell.
    let job = |name: &str, cache: &str, extra: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut outs = Vec::new();
        for line in ci[name]["script"].as_array().unwrap() {
            // The one thing a test cannot reach: Docker Hub's base, replaced by the same Debian as a layout.
            let line = line.as_str().unwrap().replace("debian:bookworm-slim", &base);
            let mut cmd = Command::new("bash");
            cmd.args(["-euc", &line]).current_dir(&dir).env("PATH", &path).env("ENVLAYER_CACHE_DIR", dir.join(cache));
            cmd.env("CI_REGISTRY_IMAGE", format!("{}/group/project", reg.addr()));
            for (k, v) in ci["variables"].as_object().unwrap() {
                cmd.env(k, v.as_str().unwrap());
            }
            for (k, v) in extra {
                cmd.env(k, v);
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{name}: {line}: {}", String::from_utf8_lossy(&out.stderr));
            outs.push((String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        outs
    };
    job("resolve-env", "runner-1", &[]);
    let k8s = std::fs::read_to_string(dir.join("container.yaml")).unwrap();
    assert!(k8s.contains(&format!("{}/group/project/envs@sha256:", reg.addr())), "{k8s}");
    // Another runner, empty cache, builds the tag's image: every package layer is in the registry; the
    // example verifies them all (--verify-cache), and every one agrees.
    let outs = job("build-env", "runner-2", &[("CI_COMMIT_TAG", "v1")]);
    let err = &outs[0].1;
    assert!(err.contains("registry cache") && err.contains("verified by building them here") && !err.contains("refused"), "{err}");
    job("prune-envs", "runner-3", &[]);
}
