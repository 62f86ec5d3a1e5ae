//! pip packages as layers: a `pip:` section and a requirements.txt environment, resolved by uv against
//! real PEP 503 indexes (pypiserver, one of them behind basic auth) serving real wheels from PyPI, run
//! under chroot, pushed incrementally, replayed from the lock, and reproducible across directories.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const PREFIX: &str = "/opt/conda/envs/pipdemo";

/// local-python's python (and conda's requests) plus a pip list: a pure wheel with a console script, a
/// cp311 manylinux one with a C extension, one with a dependency, and a requirement conda satisfies.
fn pip_env(dir: &Path, extra: &[&str]) -> PathBuf {
    let mut pip: Vec<String> = ["tabulate==0.9.0", "msgpack==1.1.0", "python-dateutil", "requests>=2"].iter().map(|s| format!("    - \"{s}\"")).collect();
    pip.extend(extra.iter().map(|s| format!("    - \"{s}\"")));
    let text = format!(
        "name: pipdemo\nchannels:\n  - {}\ndependencies:\n  - python=3.11\n  - requests\n  - pip:\n{}\n",
        channels().join("local-python").display(),
        pip.join("\n")
    );
    let path = dir.join("environment.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn layer_annotations(layout: &Path) -> Vec<String> {
    manifest(layout)["layers"].as_array().unwrap().iter().map(|l| l["annotations"]["io.envlayer.packages"].as_str().unwrap_or("").to_string()).collect()
}

fn pyc_count(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "pyc") {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn a_pip_section_becomes_one_layer_per_wheel_and_runs_under_chroot() {
    let dir = scratch("pip-section");
    let index = Service::pypi(&dir.join("index"), &wheels(&dir.join("wheels"), &["tabulate", "msgpack", "python_dateutil", "six"]), None);
    let env = pip_env(&dir, &[]);
    let base = format!("{}:base", debian_base().display());
    let uv = uv();
    let s = build_json_env(&dir, &[env.to_str().unwrap(), "--base", &base, "-o", "pip.oci", "--cache-dir", "cache", "--index-url", &index.endpoint], &[("ENVLAYER_UV", &uv)]);
    let layout = dir.join("pip.oci");

    // One layer per wheel, annotated pypi:<name>-<version>; requests came from conda, not from the index.
    let annotations = layer_annotations(&layout);
    for want in ["pypi:tabulate-0.9.0", "pypi:msgpack-1.1.0", "pypi:python-dateutil-2.9.0.post0", "pypi:six-1.16.0"] {
        assert!(annotations.iter().any(|a| a == want), "{want} has no layer of its own: {annotations:?}");
    }
    assert!(!annotations.iter().any(|a| a.starts_with("pypi:requests")), "conda's requests satisfies the pip requirement: {annotations:?}");
    let wheels_in_summary: Vec<&Value> = s["packages"].as_array().unwrap().iter().filter(|p| p["build"] == "pypi").collect();
    assert_eq!(wheels_in_summary.len(), 4, "{}", s["packages"]);

    // The SBOM lists the wheels by their package URLs, with their hashes.
    let sbom = std::fs::read_to_string(dir.join("pip.oci.spdx.json")).unwrap();
    for purl in ["pkg:pypi/tabulate@0.9.0", "pkg:pypi/msgpack@1.1.0", "pkg:pypi/python-dateutil@2.9.0.post0", "pkg:pypi/six@1.16.0"] {
        assert!(sbom.contains(&format!("\"{purl}\"")), "{purl}");
    }
    // The lock lists the wheels with their URLs and hashes.
    let lock = std::fs::read_to_string(dir.join("pip.oci.lock")).unwrap();
    assert!(lock.contains("tabulate-0.9.0-py3-none-any.whl") && lock.contains("sha256"), "{lock}");

    // skopeo copies it; umoci unpacks it; python imports every wheel (the C extension too); the console
    // script runs with the environment's python; the wheels' .pyc were compiled at build time.
    run(Command::new("skopeo").args(["copy", "-q"]).arg(format!("oci:{}:latest", layout.display())).arg(format!("oci:{}:copy", dir.join("copy.oci").display())));
    let rootfs = unpack(&layout, "latest", &dir.join("bundle"));
    let env_root = rootfs.join(PREFIX.trim_start_matches('/'));
    let pyc_before = pyc_count(&env_root);
    let sp = env_root.join("lib/python3.11/site-packages");
    assert!(sp.join("tabulate/__pycache__/__init__.cpython-311.pyc").is_file(), "wheel .pyc compiled");
    let out = run(Command::new("chroot").arg(&rootfs).arg(format!("{PREFIX}/bin/python")).args([
        "-c",
        "import tabulate, msgpack, dateutil.parser, six, requests; from msgpack import _cmsgpack; print(msgpack.unpackb(msgpack.packb([1, 'x'])), dateutil.parser.parse('2024-01-02').year)",
    ]));
    assert_eq!(out.trim(), "[1, 'x'] 2024");
    let script = std::fs::read_to_string(env_root.join("bin/tabulate")).unwrap();
    assert!(script.starts_with(&format!("#!{PREFIX}/bin/python3.11\n")), "{script}");
    let out = run(Command::new("chroot").arg(&rootfs).arg(format!("{PREFIX}/bin/tabulate")).arg("--help"));
    assert!(out.contains("Usage: tabulate"), "{out}");
    assert_eq!(pyc_count(&env_root), pyc_before, "python wrote .pyc files at run time");
    // pip itself sees what is installed, from the dist-info folders.
    let installer = std::fs::read_to_string(sp.join("tabulate-0.9.0.dist-info/INSTALLER")).unwrap();
    assert_eq!(installer, "envlayer\n");

    // A warm rebuild from the lock resolves nothing: uv cannot even be run, and every layer is cached.
    let again = build_json_env(
        &dir,
        &[env.to_str().unwrap(), "--base", &base, "-o", "again.oci", "--cache-dir", "cache", "--lock", "pip.oci.lock", "--index-url", &index.endpoint],
        &[("ENVLAYER_UV", "/nonexistent/uv")],
    );
    assert_eq!(again["solved"], false);
    let digests = |v: &Value| v["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(digests(&again), digests(&s));
    assert_eq!(again["work"]["compressed"], 0, "{}", again["work"]);

    // The lock of another pip list is refused, naming the difference: a pin it breaks, a requirement it lacks.
    let text = std::fs::read_to_string(&env).unwrap();
    for (edit, expect) in [
        (text.replace("tabulate==0.9.0", "tabulate<0.9"), "asks for pip package tabulate<0.9, the lock has tabulate 0.9.0"),
        (text.replace("    - \"requests>=2\"", "    - \"requests>=2\"\n    - \"attrs\""), "asks for pip package attrs, which the lock does not have"),
    ] {
        std::fs::write(dir.join("other.yaml"), edit).unwrap();
        let args = ["build", "other.yaml", "--base", &base, "-o", "other.oci", "--cache-dir", "cache", "--lock", "pip.oci.lock", "--index-url", &index.endpoint];
        let (ok, _, err) = envlayer_env(&dir, &args, &[("ENVLAYER_UV", "/nonexistent/uv")]);
        assert!(!ok && err.contains(expect), "{expect}: {err}");
    }
}

#[test]
fn a_requirements_txt_with_a_private_index_keeps_its_password_out_of_everything() {
    let dir = scratch("pip-private");
    let secret = "pr1vate-S3CRET";
    let public = Service::pypi(&dir.join("public"), &wheels(&dir.join("public-wheels"), &["six", "tabulate"]), None);
    let private = Service::pypi(&dir.join("private"), &wheels(&dir.join("private-wheels"), &["attrs"]), Some(("ci-bot", secret)));
    let reqs = dir.join("requirements.txt");
    std::fs::write(
        &reqs,
        format!("# the team's mirror\n--extra-index-url http://ci-bot:{secret}@{}/simple/\nattrs==24.2.0\nsix\ntabulate\n", private.addr()),
    )
    .unwrap();
    let channel = channels().join("local-python").display().to_string();
    let args = ["build", "requirements.txt", "--python", "3.11", "--channel", &channel, "--index-url", &public.endpoint];
    let uv = uv();
    let (ok, out, err) = envlayer_env(&dir, &[&args[..], &["-o", "reqs.oci", "--cache-dir", "cache", "--json"]].concat(), &[("ENVLAYER_UV", &uv)]);
    assert!(ok, "{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["name"], "requirements");
    assert!(layer_annotations(&dir.join("reqs.oci")).iter().any(|a| a == "pypi:attrs-24.2.0"), "attrs from the private index");
    // The wheel came from the private index, with the password; nothing shows or keeps the password.
    assert!(std::fs::read_to_string(private.dir.join("pypi.log")).unwrap().contains("GET /packages/attrs-24.2.0-py3-none-any.whl HTTP/1.1\" 200"));
    assert!(!out.contains(secret) && !err.contains(secret), "the password was printed");
    let mut files = vec![dir.join("reqs.oci.lock"), dir.join("reqs.oci/index.json")];
    files.extend(std::fs::read_dir(dir.join("reqs.oci/blobs/sha256")).unwrap().map(|e| e.unwrap().path()));
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{} holds the password", f.display());
    }
    // Inside the layers too (gzip hides the bytes from the scan above).
    for_each_layer_file(&dir.join("reqs.oci"), |path, data| {
        assert!(!data.windows(secret.len()).any(|w| w == secret.as_bytes()), "{path} holds the password");
    });
    let lock = std::fs::read_to_string(dir.join("reqs.oci.lock")).unwrap();
    assert!(lock.contains(&format!("http://{}/packages/attrs-24.2.0-py3-none-any.whl", private.addr())), "{lock}");

    // A wrong password: a clear error that names the index, and still no password in it.
    std::fs::write(&reqs, format!("--extra-index-url http://ci-bot:wrong-{secret}@{}/simple/\nattrs==24.2.0\n", private.addr())).unwrap();
    let (ok, out, err) = envlayer_env(&dir, &[&args[..], &["-o", "bad.oci", "--cache-dir", "cache"]].concat(), &[("ENVLAYER_UV", &uv)]);
    assert!(!ok, "{out}");
    assert!(err.contains(&format!("http://{}/simple/ refused the credentials", private.addr())), "{err}");
    assert!(!err.contains(secret), "{err}");
    assert!(!dir.join("bad.oci").exists());

    // --hash: a requirement whose wheel has another hash is refused, naming it.
    std::fs::write(&reqs, format!("six==1.16.0 --hash=sha256:{}\n", "0".repeat(64))).unwrap();
    let (ok, _, err) = envlayer_env(&dir, &[&args[..], &["-o", "hash.oci", "--cache-dir", "cache"]].concat(), &[("ENVLAYER_UV", &uv)]);
    assert!(!ok && err.contains("six 1.16.0") && err.contains("--hash"), "{err}");
}

#[test]
fn pip_layers_push_incrementally_and_do_not_depend_on_the_directory() {
    let dir = scratch("pip-push");
    let reg = Service::registry("plain", &dir.join("registry"), &[]);
    let index = Service::pypi(&dir.join("index"), &wheels(&dir.join("wheels"), &["tabulate", "msgpack", "python_dateutil", "six", "attrs"]), None);
    let uv = uv();
    let vars = [("ENVLAYER_UV", uv.as_str()), ("SOURCE_DATE_EPOCH", "1700000000")];
    let target = format!("{}/team/pip:demo", reg.addr());
    let push = |cwd: &Path, env: &Path, cache: &str| -> Value {
        // (No SBOM and no registry cache: the uploads counted are the image's own.)
        let (ok, out, err) = envlayer_env(cwd, &["build", env.to_str().unwrap(), "--push", &target, "--cache-dir", cache, "--index-url", &index.endpoint, "--json", "-q", "--sbom", "none", "--cache-repo", "none"], &vars);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let env = pip_env(&dir, &[]);
    let first = push(&dir, &env, "cache");
    let uploads = uploads_in_log(&reg.log());
    assert_eq!(uploads, first["layers"].as_array().unwrap().len() + 1);

    // Again: nothing uploaded.
    let again = push(&dir, &env, "cache");
    assert_eq!(again["push"]["uploaded"].as_array().unwrap().len(), 0);
    assert_eq!(uploads_in_log(&reg.log()), uploads);

    // One more requirement: its layer, the environment layer (its lock changed) and the config.
    let plus = dir.join("plus");
    std::fs::create_dir_all(&plus).unwrap();
    let env2 = pip_env(&plus, &["attrs==24.2.0"]);
    let second = push(&plus, &env2, "../cache");
    let before: BTreeSet<&str> = first["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    let new: Vec<&Value> = second["layers"].as_array().unwrap().iter().filter(|l| !before.contains(l["digest"].as_str().unwrap())).collect();
    let new_names: Vec<String> = new.iter().map(|l| l["packages"][0].as_str().unwrap().to_string()).collect();
    assert_eq!(new_names, ["pypi:attrs-24.2.0", "environment"], "{new_names:?}");
    assert_eq!(uploads_in_log(&reg.log()), uploads + 3);

    // The same environment from another directory, with its own cache: the same layers and manifest.
    let other = dir.join("elsewhere/deeper");
    std::fs::create_dir_all(&other).unwrap();
    let env3 = pip_env(&other, &[]);
    let (ok, out, err) = envlayer_env(&other, &["build", env3.to_str().unwrap(), "-o", "x.oci", "--cache-dir", "own-cache", "--index-url", &index.endpoint, "--json", "-q"], &vars);
    assert!(ok, "{err}");
    let third: Value = serde_json::from_str(&out).unwrap();
    let digests = |v: &Value| v["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(digests(&third), digests(&first));
    assert_eq!(third["manifest_digest"], first["manifest_digest"]);

    // Under a small --max-layers, wheels share layers like conda packages, never with them.
    let (ok, out, err) = envlayer_env(&other, &["build", env3.to_str().unwrap(), "-o", "small.oci", "--cache-dir", "own-cache", "--max-layers", "6", "--index-url", &index.endpoint, "--json", "-q"], &vars);
    assert!(ok, "{err}");
    let small: Value = serde_json::from_str(&out).unwrap();
    assert!(small["layers"].as_array().unwrap().len() <= 6, "{}", small["layers"]);
    for l in small["layers"].as_array().unwrap() {
        let names: Vec<&str> = l["packages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let pip = names.iter().filter(|n| n.starts_with("pypi:")).count();
        assert!(pip == 0 || pip == names.len(), "a layer mixes conda and pip packages: {names:?}");
    }
    let annotated: usize = layer_annotations(&other.join("small.oci")).iter().map(|a| a.split(',').filter(|p| p.starts_with("pypi:")).count()).sum();
    assert_eq!(annotated, 4, "every wheel is annotated once");

    // The TTL lifecycle: resolve builds and pushes once, then answers from the registry with no resolve.
    let repo = format!("{}/team/pipenvs", reg.addr());
    let resolve = |uv: &str| {
        let (ok, out, err) = envlayer_env(&dir, &["resolve", env.to_str().unwrap(), "--repo", &repo, "--cache-dir", "cache", "--index-url", &index.endpoint, "--format", "json", "-q"], &[("ENVLAYER_UV", uv)]);
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    assert_eq!(resolve(&uv)["hit"], false);
    let hit = resolve("/nonexistent/uv");
    assert_eq!(hit["hit"], true, "{hit}");
}

#[test]
fn an_sdist_is_built_with_the_environments_python_and_cached_by_its_hash() {
    let dir = scratch("pip-sdist");
    // An index with six only as a source distribution, and setuptools (its build backend) as a wheel.
    let sdists = dir.join("sdists");
    std::fs::create_dir_all(&sdists).unwrap();
    for e in std::fs::read_dir(pypi_tools().join("sdists")).unwrap() {
        let e = e.unwrap();
        if !e.file_name().to_string_lossy().starts_with('.') {
            std::fs::copy(e.path(), sdists.join(e.file_name())).unwrap();
        }
    }
    let index = Service::pypi(&dir.join("index"), &sdists, None);
    std::fs::write(dir.join("requirements.txt"), "six==1.16.0\n").unwrap();
    let channel = channels().join("local-python").display().to_string();
    let args = ["requirements.txt", "--python", "3.11", "--channel", &channel, "--index-url", &index.endpoint, "--cache-dir", "cache"];
    let uv = uv();
    // Not without --build-sdists: building runs the package's code on this machine.
    let (ok, _, err) = envlayer_env(&dir, &[&["build"], &args[..], &["-o", "refused.oci"]].concat(), &[("ENVLAYER_UV", &uv)]);
    assert!(!ok && err.contains("six") && err.contains("--build-sdists"), "{err}");
    assert!(!dir.join("refused.oci").exists());
    let args = [&args[..], &["--build-sdists"]].concat();
    let s = build_json_env(&dir, &[&args[..], &["-o", "sdist.oci"]].concat(), &[("ENVLAYER_UV", &uv)]);
    assert!(layer_annotations(&dir.join("sdist.oci")).iter().any(|a| a == "pypi:six-1.16.0"), "{}", s["layers"]);
    let mut files = Vec::new();
    for_each_layer_file(&dir.join("sdist.oci"), |path, _| files.push(path.to_string()));
    assert!(files.iter().any(|f| f.ends_with("site-packages/six.py")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("site-packages/six-1.16.0.dist-info/RECORD")), "{files:?}");
    // The lock names the sdist; the wheel built from it is kept under the sdist's sha256.
    let lock = std::fs::read_to_string(dir.join("sdist.oci.lock")).unwrap();
    assert!(lock.contains("/packages/six-1.16.0.tar.gz"), "{lock}");
    let built: Vec<_> = std::fs::read_dir(dir.join("cache/built")).unwrap().collect();
    assert_eq!(built.len(), 1);

    // From the lock, with the built wheel cached: no resolve and no build (no uv at all), the same layers.
    let again = build_json_env(&dir, &[&args[..], &["-o", "again.oci", "--lock", "sdist.oci.lock"]].concat(), &[("ENVLAYER_UV", "/nonexistent/uv")]);
    let digests = |v: &Value| v["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(digests(&again), digests(&s));
    // From the lock without the built wheel: built again from the sdist the lock names.
    std::fs::remove_dir_all(dir.join("cache/built")).unwrap();
    std::fs::remove_dir_all(dir.join("cache/layers")).unwrap();
    let third = build_json_env(&dir, &[&args[..], &["-o", "third.oci", "--lock", "sdist.oci.lock"]].concat(), &[("ENVLAYER_UV", &uv)]);
    assert!(layer_annotations(&dir.join("third.oci")).iter().any(|a| a == "pypi:six-1.16.0"), "{}", third["layers"]);
    assert!(dir.join("cache/built").is_dir());
}

/// A wheel made here (the one party in these tests that is not real: a wheel that overwrites a file of
/// conda's `requests`, which no real wheel does), with a correct RECORD.
fn clobbering_wheel(dir: &Path) -> PathBuf {
    use base64::Engine as _;
    use sha2::Digest as _;
    use std::io::Write as _;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("clobberer-1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    let files: [(&str, &[u8]); 4] = [
        ("requests/__init__.py", b"PATCHED_BY = 'clobberer'\n"),
        ("clobberer-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: clobberer\nVersion: 1.0\n"),
        ("clobberer-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
        ("clobberer-1.0.dist-info/top_level.txt", b"requests\n"),
    ];
    let mut record = String::new();
    for (name, data) in files {
        zip.start_file(name, opts).unwrap();
        zip.write_all(data).unwrap();
        let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(data));
        record.push_str(&format!("{name},sha256={hash},{}\n", data.len()));
    }
    record.push_str("clobberer-1.0.dist-info/RECORD,,\n");
    zip.start_file("clobberer-1.0.dist-info/RECORD", opts).unwrap();
    zip.write_all(record.as_bytes()).unwrap();
    zip.finish().unwrap();
    path
}

#[test]
fn a_wheel_that_overwrites_a_conda_file_wins_it_and_is_reported() {
    let dir = scratch("pip-clobber");
    clobbering_wheel(&dir.join("wheels"));
    let text = format!(
        "name: clobber\nchannels:\n  - {}\ndependencies:\n  - python=3.11\n  - requests\n  - pip:\n    - --find-links ./wheels\n    - clobberer==1.0\n",
        channels().join("local-python").display()
    );
    std::fs::write(dir.join("environment.yaml"), text).unwrap();
    let uv = uv();
    let s = build_json_env(&dir, &["environment.yaml", "-o", "c.oci", "--cache-dir", "cache", "--no-pyc"], &[("ENVLAYER_UV", &uv)]);
    let clobbers = s["clobbers"].as_array().unwrap();
    let hit = clobbers.iter().find(|c| c["path"] == "lib/python3.11/site-packages/requests/__init__.py").unwrap_or_else(|| panic!("{clobbers:?}"));
    assert_eq!(hit["winner"], "pypi:clobberer-1.0");
    assert!(hit["losers"][0].as_str().unwrap().starts_with("requests-"), "{hit}");
    assert!(s["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("pypi:clobberer-1.0")), "{}", s["warnings"]);
    // The image has the wheel's file, once: conda's requests layer leaves it out.
    let mut copies = Vec::new();
    for_each_layer_file(&dir.join("c.oci"), |path, data| {
        if path.ends_with("site-packages/requests/__init__.py") {
            copies.push(String::from_utf8_lossy(data).into_owned());
        }
    });
    assert_eq!(copies, ["PATCHED_BY = 'clobberer'\n"]);
    // The --find-links folder is recorded relative to the environment file.
    let lock = std::fs::read_to_string(dir.join("c.oci.lock")).unwrap();
    assert!(lock.contains("pypi: wheels/clobberer-1.0-py3-none-any.whl"), "{lock}");
    // A lock cannot make envlayer read a file elsewhere on this machine, even one with the right name.
    let elsewhere = dir.join("../pip-clobber-elsewhere");
    clobbering_wheel(&elsewhere);
    let moved = lock.replace("wheels/clobberer-1.0-py3-none-any.whl", &format!("file://{}/clobberer-1.0-py3-none-any.whl", elsewhere.canonicalize().unwrap().display()));
    std::fs::write(dir.join("moved.lock"), moved).unwrap();
    let (ok, _, err) = envlayer_env(&dir, &["build", "environment.yaml", "-o", "m.oci", "--cache-dir", "cache", "--lock", "moved.lock"], &[("ENVLAYER_UV", &uv)]);
    assert!(!ok && err.contains("moved.lock") && err.contains("neither beside the environment file nor in a --find-links folder"), "{err}");
    assert!(!dir.join("m.oci").exists());
}
