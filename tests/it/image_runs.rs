//! The local-python environment built on a Debian base: accepted by skopeo, unpacked by umoci, run with
//! chroot, and the same file for file as a plain rattler install.


use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const PREFIX: &str = "/opt/conda/envs/demo";
const DEPS: &[&str] = &["python=3.11", "flask", "requests", "rich", "pip"];

fn demo_env(dir: &Path) -> std::path::PathBuf {
    env_file(dir, "demo", &[&channels().join("local-python")], DEPS)
}

#[test]
fn local_python_image_runs_and_matches_a_rattler_install() {
    let dir = scratch("local-python");
    let base = debian_base();
    let env = demo_env(&dir);
    let base_arg = format!("{}:base", base.display());
    let s = build_json(&dir, &[env.to_str().unwrap(), "--base", &base_arg, "-o", "demo.oci", "--cache-dir", "cache"]);
    let layout = dir.join("demo.oci");

    // The default plan over the base's layers: CPython (17.5 MB archive) in 3 parts, pip (1.2 MB) alone,
    // the 16 packages under 1 MiB in 4 shared layers, then the environment layer; each names its packages.
    let m = manifest(&layout);
    let base_layers = manifest(&base)["layers"].as_array().unwrap().len();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), base_layers + 3 + 1 + 4 + 1, "{layers:?}");
    let names: Vec<String> = s["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    for want in ["python", "flask", "requests", "rich", "pip", "werkzeug", "jinja2", "markupsafe"] {
        assert!(names.iter().any(|n| n == want), "{want} not installed: {names:?}");
    }
    for (i, p) in s["packages"].as_array().unwrap().iter().enumerate() {
        let layer = &layers[p["layer"].as_u64().unwrap() as usize];
        let annotated = layer["annotations"]["io.envlayer.packages"].as_str().unwrap();
        let dist = format!("{}-{}-{}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap(), p["build"].as_str().unwrap());
        assert!(annotated.split(',').any(|a| a == dist), "package {i}: {dist} not in {annotated}");
        if p["name"] == "python" {
            assert_eq!(layer["annotations"]["io.envlayer.part"], "1/3", "a package in parts is listed with its first");
        }
    }
    assert_eq!(m["annotations"]["io.envlayer.env.name"], "demo");
    assert!(m["annotations"]["io.envlayer.env.inputs"].as_str().unwrap().len() == 64);

    // The config: the env's bin first on PATH, CONDA_PREFIX, CONDA_DEFAULT_ENV.
    let config = blob_json(&layout, m["config"]["digest"].as_str().unwrap());
    let env_vars: Vec<&str> = config["config"]["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(env_vars.iter().any(|e| e.starts_with(&format!("PATH={PREFIX}/bin:"))), "{env_vars:?}");
    assert!(env_vars.contains(&format!("CONDA_PREFIX={PREFIX}").as_str()));
    assert!(env_vars.contains(&"CONDA_DEFAULT_ENV=demo"));
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), layers.len());

    // skopeo accepts it.
    run(Command::new("skopeo").args(["copy", "-q"]).arg(format!("oci:{}:latest", layout.display())).arg(format!("oci:{}:copy", dir.join("copy.oci").display())));

    // umoci unpacks it, and Python runs in it with no activation.
    let rootfs = unpack(&layout, "latest", &dir.join("bundle"));
    let pyc_before = pyc_files(&rootfs.join("opt/conda/envs/demo"));
    assert!(pyc_before.len() > 700, "the stdlib and the packages come compiled: {}", pyc_before.len());
    assert_eq!(s["pyc"]["compiled"], true);
    let out = run(Command::new("chroot").arg(&rootfs).arg(format!("{PREFIX}/bin/python")).args(["-c", "import flask, requests, rich, sys; print(sys.prefix)"]));
    assert_eq!(out.trim(), PREFIX);
    let out = run(Command::new("chroot").arg(&rootfs).arg(format!("{PREFIX}/bin/flask")).arg("--version"));
    assert!(out.contains("Flask 3.1.3"), "{out}");
    // Importing flask wrote no new .pyc: the hash-based ones in the layers are valid as they are.
    assert_eq!(pyc_files(&rootfs.join("opt/conda/envs/demo")), pyc_before, "python wrote .pyc files at run time");
    // An entry point's shebang names the target prefix, not a build-machine path.
    let flask = std::fs::read_to_string(rootfs.join("opt/conda/envs/demo/bin/flask")).unwrap();
    assert!(flask.starts_with(&format!("#!{PREFIX}/bin/python")), "{flask}");

    // A plain rattler install of the same packages at the same prefix.
    let plain = dir.join("plain");
    let records = envlayer::lockfile::read_lock(Path::new(s["lock"].as_str().map(|l| dir.join(l)).unwrap().as_path()), rattler_conda_types::Subdir::Linux64).unwrap().records;
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        rattler::install::Installer::new()
            .with_target_platform(rattler_conda_types::Subdir::Linux64)
            .with_alternative_target_prefix(PREFIX)
            .with_package_cache(rattler::package_cache::PackageCache::new(dir.join("rattler-cache")))
            .install(&plain, records)
            .await
            .unwrap();
    });
    let ours = tree(&rootfs.join("opt/conda/envs/demo"));
    let theirs = tree(&plain);
    let mut differences = Vec::new();
    for (path, kind) in &theirs {
        match ours.get(path) {
            None => differences.push(format!("missing from the image: {path}")),
            // rattler writes an empty conda-meta/history; envlayer's environment layer writes conda's
            // record of what was installed (checked below).
            Some(_) if path == "conda-meta/history" => {}
            Some(k) if k != kind => {
                // conda-meta records differ only in build-machine fields, which envlayer leaves out.
                if path.starts_with("conda-meta/") && path.ends_with(".json") {
                    let strip = |p: &Path| {
                        let mut v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                        for key in ["package_tarball_full_path", "extracted_package_dir", "link", "requested_spec", "requested_specs"] {
                            v.as_object_mut().unwrap().remove(key);
                        }
                        // envlayer compiles .pyc files and records them as conda does (pyc_file);
                        // rattler compiles none.
                        if let Some(paths) = v["paths_data"]["paths"].as_array_mut() {
                            paths.retain(|p| p["path_type"] != "pyc_file");
                        }
                        if let Some(files) = v["files"].as_array_mut() {
                            files.retain(|f| !f.as_str().unwrap_or("").ends_with(".pyc"));
                        }
                        v
                    };
                    assert_eq!(strip(&rootfs.join("opt/conda/envs/demo").join(path)), strip(&plain.join(path)), "{path}");
                } else {
                    differences.push(format!("differs: {path}: image {k:?} vs rattler {kind:?}"));
                }
            }
            Some(_) => {}
        }
    }
    for path in ours.keys() {
        // conda-meta/envlayer.lock is the lock the image was built from, carried in the environment layer.
        // .pyc files (and their __pycache__ folders) are envlayer's compiled bytecode.
        let compiled = path.ends_with(".pyc") || path.ends_with("__pycache__");
        if !theirs.contains_key(path) && path != "conda-meta/envlayer.lock" && !compiled {
            differences.push(format!("only in the image: {path}"));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    let history = std::fs::read_to_string(rootfs.join("opt/conda/envs/demo/conda-meta/history")).unwrap();
    assert!(history.contains("::flask-3.1.3-py_0\n") && history.contains("# update specs:"), "{history}");
    let lock = std::fs::read_to_string(rootfs.join("opt/conda/envs/demo/conda-meta/envlayer.lock")).unwrap();
    assert_eq!(lock, std::fs::read_to_string(dir.join("demo.oci.lock")).unwrap(), "the image carries the lock written beside it");
    // And our conda-meta has no build-machine path in it.
    for (path, _) in ours.iter().filter(|(p, _)| p.starts_with("conda-meta/")) {
        let text = std::fs::read_to_string(rootfs.join("opt/conda/envs/demo").join(path)).unwrap();
        for bad in [dir.to_str().unwrap(), "extracted_package_dir", "package_tarball_full_path"] {
            assert!(!text.contains(bad), "{path} mentions {bad}");
        }
    }
}

/// Every .pyc file under `root`, with its size.
fn pyc_files(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "pyc") {
                out.insert(p.display().to_string(), meta.len());
            }
        }
    }
    out
}

/// Every path under `root` with what it is: a file's sha256 and exec bit, or a symlink's target.
fn tree(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_symlink() {
                out.insert(rel, format!("-> {}", std::fs::read_link(&p).unwrap().display()));
            } else if meta.is_dir() {
                out.insert(rel, "dir".into());
                stack.push(p);
            } else {
                let exec = meta.permissions().mode() & 0o111 != 0;
                out.insert(rel, format!("{} exec={exec}", envlayer::Digest::of(&std::fs::read(&p).unwrap())));
            }
        }
    }
    out
}

#[test]
fn max_layers_groups_packages_and_the_image_still_runs() {
    let dir = scratch("max-layers");
    let base = debian_base();
    let env = demo_env(&dir);
    let base_arg = format!("{}:base", base.display());
    let s = build_json(&dir, &[env.to_str().unwrap(), "--base", &base_arg, "-o", "small.oci", "--cache-dir", "cache", "--max-layers", "8"]);
    let layout = dir.join("small.oci");
    let layers = manifest(&layout)["layers"].as_array().unwrap().clone();
    assert!(layers.len() <= 8, "{} layers", layers.len());
    let shared = s["shared_layers"].as_array().unwrap();
    assert!(!shared.is_empty(), "the summary says which packages share a layer");
    // Every package is in exactly one layer's annotation.
    let mut annotated: Vec<String> = layers
        .iter()
        .filter_map(|l| l["annotations"]["io.envlayer.packages"].as_str())
        .flat_map(|a| a.split(',').filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>())
        .collect();
    annotated.sort();
    let mut all: Vec<String> = s["packages"].as_array().unwrap().iter()
        .map(|p| format!("{}-{}-{}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap(), p["build"].as_str().unwrap()))
        .collect();
    all.sort();
    assert_eq!(annotated, all);
    let rootfs = unpack(&layout, "latest", &dir.join("bundle"));
    let out = run(Command::new("chroot").arg(&rootfs).arg(format!("{PREFIX}/bin/python")).args(["-c", "import flask, requests, rich; print('ok')"]));
    assert_eq!(out.trim(), "ok");
}

#[test]
fn small_packages_share_bucketed_layers_and_one_more_package_changes_one_layer() {
    let dir = scratch("buckets");
    let env = demo_env(&dir);
    let cache = dir.join("cache");
    let base = format!("{}:base", debian_base().display());
    let build = |cwd: &Path, env: &Path, out: &str| {
        let (env, cache) = (env.to_str().unwrap(), cache.to_str().unwrap());
        build_json(cwd, &[env, "-o", out, "--base", &base, "--cache-dir", cache, "--no-pyc", "--bucket-below", "1M", "--buckets", "4", "--split-above", "0"])
    };
    let s = build(&dir, &env, "one.oci");
    let layers = s["layers"].as_array().unwrap();
    // python and pip (archives over 1 MiB) alone, the 16 others in at most 4 layers, the base's layer
    // and the env layer.
    let sizes: Vec<(String, u64)> = s["packages"].as_array().unwrap().iter().map(|p| (p["name"].as_str().unwrap().to_string(), p["layer"].as_u64().unwrap())).collect();
    let layer_of = |name: &str| sizes.iter().find(|(n, _)| n == name).unwrap().1;
    for big in ["python", "pip"] {
        assert_eq!(sizes.iter().filter(|(_, l)| *l == layer_of(big)).count(), 1, "{big} has a layer of its own");
    }
    assert!(layers.len() <= 1 + 2 + 4 + 1, "{} layers", layers.len());
    assert!(!s["shared_layers"].as_array().unwrap().is_empty());
    let rootfs = unpack(&dir.join("one.oci"), "latest", &dir.join("bundle"));
    let out = run(Command::new("chroot").arg(&rootfs).arg(format!("{PREFIX}/bin/python")).args(["-c", "import flask, requests, rich; print('ok')"]));
    assert_eq!(out.trim(), "ok");

    // One more small package: one bucket changes, every other package layer keeps its bytes.
    let dir2 = dir.join("two");
    std::fs::create_dir_all(&dir2).unwrap();
    let env2 = env_file(&dir2, "demo", &[&channels().join("local-python")], &[DEPS, &["setuptools"]].concat());
    let s2 = build(&dir2, &env2, "two.oci");
    // The package layers: all but the base's first and the environment's own last.
    let digests = |s: &Value| -> Vec<String> {
        let l = s["layers"].as_array().unwrap();
        l[1..l.len() - 1].iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
    };
    let (before, after) = (digests(&s), digests(&s2));
    let new: Vec<&String> = after.iter().filter(|d| !before.contains(d)).collect();
    assert_eq!(new.len(), 1, "one package layer changed: before {before:?} after {after:?}");
    assert_eq!(s2["work"]["compressed"], 2, "that layer and the env layer were packed");
}

#[test]
fn a_large_package_spans_several_layers_that_unpack_to_the_same_tree() {
    let dir = scratch("split");
    let env = demo_env(&dir);
    let base = format!("{}:base", debian_base().display());
    let build = |out: &str, extra: &[&str]| build_json(&dir, &[&[env.to_str().unwrap(), "-o", out, "--base", &base, "--cache-dir", "cache", "--no-pyc"], extra].concat());
    let whole = build("whole.oci", &["--split-above", "0"]);
    // python's archive (17.5 MB) over 8 MiB: three layers, annotated 1/3, 2/3, 3/3, in a row.
    let split = build("split.oci", &["--split-above", "8M"]);
    let layers = manifest(&dir.join("split.oci"))["layers"].as_array().unwrap().clone();
    let parts: Vec<(usize, &str)> = layers.iter().enumerate().filter_map(|(i, l)| l["annotations"]["io.envlayer.part"].as_str().map(|p| (i, p))).collect();
    assert_eq!(parts.iter().map(|p| p.1).collect::<Vec<_>>(), ["1/3", "2/3", "3/3"], "{layers:?}");
    assert!(parts.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    for (i, _) in &parts {
        assert!(layers[*i]["annotations"]["io.envlayer.packages"].as_str().unwrap().starts_with("python-3.11"));
    }
    assert_eq!(split["layers"].as_array().unwrap().len(), whole["layers"].as_array().unwrap().len() + 2);
    // The same files, with the same bytes and modes, as the image with python in one layer; and it runs.
    let tree = |layout: &str| -> BTreeMap<String, String> {
        let rootfs = unpack(&dir.join(layout), "latest", &dir.join(format!("{layout}-bundle")));
        let out = run(Command::new("bash").arg("-c").arg("cd \"$0\" && find . -printf '%p %y %m %s %l\\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum").arg(&rootfs));
        out.lines().map(|l| (l.to_string(), String::new())).collect()
    };
    assert_eq!(tree("split.oci"), tree("whole.oci"));
    let rootfs = dir.join("split.oci-bundle/rootfs");
    let out = run(Command::new("chroot").arg(&rootfs).arg(format!("{PREFIX}/bin/python")).args(["-c", "import flask, requests, rich; print('ok')"]));
    assert_eq!(out.trim(), "ok");
    // Warm: every part from the cache.
    let warm = build("split2.oci", &["--split-above", "8M"]);
    assert_eq!(warm["work"]["compressed"], 0, "nothing packed");
    let digests = |s: &Value| -> Vec<Value> { s["layers"].as_array().unwrap().iter().map(|l| l["digest"].clone()).collect() };
    assert_eq!(digests(&warm), digests(&split));
    // With too small a --max-layers the package stays whole, and the build says so.
    let tight = build("tight.oci", &["--split-above", "8M", "--max-layers", "8"]);
    assert!(tight["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("kept in one layer: splitting it (--split-above) would exceed --max-layers 8")), "{:?}", tight["warnings"]);
}
