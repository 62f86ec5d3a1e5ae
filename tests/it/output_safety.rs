//! Nothing lost: `-o` only ever adds to an OCI layout or creates a new folder; the current folder, its
//! parents, `$HOME` and folders with other content are refused untouched; the lock is replaced together
//! with the image; an interrupted build leaves no scratch folder, and a dead build's are swept.


use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn small_env(dir: &Path, name: &str, deps: &[&str]) -> std::path::PathBuf {
    if deps == ["zlib"] {
        return env_file(dir, name, &[&channels().join("real"), &channels().join("stubs")], deps);
    }
    env_file(dir, name, &[&channels().join("local-python")], deps)
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn current_folder_parents_home_and_foreign_folders_are_refused_untouched() {
    let dir = scratch("out-refused");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let env = small_env(&work, "demo", &["zlib"]);
    std::fs::write(work.join("notes.txt"), "mine").unwrap();
    // A folder that merely contains a file named oci-layout, beside the user's own files.
    let foreign = work.join("looks-like");
    std::fs::create_dir_all(foreign.join("blobs/sha256")).unwrap();
    std::fs::write(foreign.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(foreign.join("index.json"), r#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
    std::fs::write(foreign.join("thesis.tex"), "years of work").unwrap();
    let before = tree(&dir);
    let cache = dir.join("cache");
    let cache = cache.to_str().unwrap();
    for (out, why) in [
        (".", "current folder"),
        ("..", "current folder"),
        ("/", "root folder"),
        (work.to_str().unwrap(), "current folder"),
        ("looks-like", "thesis.tex"),
        ("notes.txt", "not a folder"),
    ] {
        let (ok, _, err) = envlayer_env(&work, &["build", env.to_str().unwrap(), "-o", out, "--cache-dir", cache, "-q"], &[]);
        assert!(!ok, "-o {out} was accepted");
        assert!(err.contains("refusing to write the image") && err.contains(why), "-o {out}: {err}");
    }
    // $HOME (envlayer_env sets HOME to the working folder's parent here).
    let (ok, _, err) = envlayer_env(&work, &["build", env.to_str().unwrap(), "-o", dir.to_str().unwrap(), "--cache-dir", cache, "-q"], &[("HOME", dir.to_str().unwrap())]);
    assert!(!ok && err.contains("refusing"), "{err}");
    let after: Vec<String> = tree(&dir).into_iter().filter(|p| !p.starts_with("cache")).collect();
    let before: Vec<String> = before.into_iter().filter(|p| !p.starts_with("cache")).collect();
    assert_eq!(before, after, "a refused build changed files");
    assert_eq!(std::fs::read_to_string(foreign.join("thesis.tex")).unwrap(), "years of work");
}

#[test]
fn a_second_tag_is_added_to_a_layout_and_every_other_image_kept() {
    let dir = scratch("out-add");
    let cache = dir.join("cache");
    let layout = dir.join("envs.oci");
    let a = small_env(&dir, "first", &["zlib"]);
    let b = small_env(&dir, "second", &["python=3.11"]);
    // A layout that already holds an image envlayer did not write, copied in by skopeo.
    let base = debian_base();
    run(Command::new("skopeo").args(["copy", "-q"]).arg(format!("oci:{}", base.display())).arg(format!("oci:{}:base", layout.display())));
    let build = |env: &Path, tag: &str| {
        build_json(&dir, &[env.to_str().unwrap(), "-o", layout.to_str().unwrap(), "--tag", tag, "--cache-dir", cache.to_str().unwrap(), "--no-pyc"])
    };
    let v1 = build(&a, "v1");
    let v2 = build(&b, "v2");
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let tags: Vec<&str> = index["manifests"].as_array().unwrap().iter().map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap()).collect();
    assert_eq!(tags, ["base", "v1", "v2"]);
    for (tag, digest) in [("v1", &v1["manifest_digest"]), ("v2", &v2["manifest_digest"])] {
        let out = run(Command::new("skopeo").args(["inspect", "--raw"]).arg(format!("oci:{}:{tag}", layout.display())));
        assert_eq!(envlayer::Digest::of(out.as_bytes()).to_string(), digest.as_str().unwrap(), "{tag}");
    }
    run(Command::new("skopeo").args(["inspect"]).arg(format!("oci:{}:base", layout.display())));
    // The lock beside the layout is the last build's.
    assert!(std::fs::read_to_string(dir.join("envs.oci.lock")).unwrap().contains("python"));
    // Replacing v1 with another environment keeps base and v2 and drops v1's own blobs.
    build(&b, "v1");
    let zlib_layer = v1["layers"].as_array().unwrap().iter().find(|l| l["packages"][0].as_str().unwrap_or("").starts_with("zlib")).unwrap();
    assert!(!blob_path(&layout, zlib_layer["digest"].as_str().unwrap()).exists(), "the replaced image's own layer is left behind");
    for tag in ["base", "v1", "v2"] {
        run(Command::new("skopeo").args(["copy", "-q"]).arg(format!("oci:{}:{tag}", layout.display())).arg(format!("oci:{}:{tag}", dir.join("copy").display())));
    }
    let blobs = std::fs::read_dir(layout.join("blobs/sha256")).unwrap().count();
    let copied = std::fs::read_dir(dir.join("copy/blobs/sha256")).unwrap().count();
    assert_eq!(blobs, copied, "the layout holds exactly the blobs its images use");
}

#[test]
fn an_unrelated_file_at_the_lock_path_is_not_overwritten() {
    let dir = scratch("out-lock");
    let env = small_env(&dir, "demo", &["zlib"]);
    std::fs::write(dir.join("demo.oci.lock"), "my own notes").unwrap();
    let out = envlayer(&dir, &["build", env.to_str().unwrap(), "-o", "demo.oci", "--cache-dir", "cache", "-q"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("demo.oci.lock") && err.contains("not a lock file"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("demo.oci.lock")).unwrap(), "my own notes");
    assert!(!dir.join("demo.oci").exists(), "the image was written without its lock");
    // An earlier lock is replaced together with the image.
    std::fs::remove_file(dir.join("demo.oci.lock")).unwrap();
    let first = build_json(&dir, &[env.to_str().unwrap(), "-o", "demo.oci", "--cache-dir", "cache"]);
    let env2 = small_env(&dir, "demo", &["python=3.11"]);
    let second = build_json(&dir, &[env2.to_str().unwrap(), "-o", "demo.oci", "--cache-dir", "cache", "--no-pyc"]);
    assert_ne!(first["manifest_digest"], second["manifest_digest"]);
    assert!(std::fs::read_to_string(dir.join("demo.oci.lock")).unwrap().contains("python"));
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".envlayer")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn scratch_folders(cache: &Path, out_parent: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for d in [cache.join("tmp"), out_parent.to_path_buf()] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("run-") || n.starts_with(".envlayer-out-") {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

#[test]
fn sigint_and_sigterm_leave_no_scratch_folder_and_dead_builds_are_swept() {
    let dir = scratch("out-signals");
    let env = small_env(&dir, "demo", &["python=3.11", "flask", "rich"]);
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let cache = dir.join(format!("cache-{signal}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_envlayer"))
            .args(["build", env.to_str().unwrap(), "-o", "out.oci", "--cache-dir"])
            .arg(&cache)
            .arg("-q")
            .current_dir(&dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the build has work in flight (its scratch folder holds something), then interrupt.
        let t = Instant::now();
        loop {
            let busy = std::fs::read_dir(cache.join("tmp")).into_iter().flatten().flatten().any(|e| std::fs::read_dir(e.path()).map(|d| d.count() > 1).unwrap_or(false));
            if busy || t.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        run(Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()));
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(code), "SIG{signal}: {err}");
        assert!(err.contains("interrupted"), "{err}");
        assert_eq!(scratch_folders(&cache, &dir), Vec::<String>::new(), "SIG{signal} left scratch folders");
        assert!(!dir.join("out.oci").exists());
    }
    // A build killed with -9 leaves its scratch folder; the next build sweeps it, but never a live one.
    let cache = dir.join("cache-kill");
    let mut child = Command::new(env!("CARGO_BIN_EXE_envlayer"))
        .args(["build", env.to_str().unwrap(), "-o", "out.oci", "--cache-dir"])
        .arg(&cache)
        .arg("-q")
        .current_dir(&dir)
        .spawn()
        .unwrap();
    let t = Instant::now();
    while scratch_folders(&cache, &dir).is_empty() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let dead = scratch_folders(&cache, &dir);
    assert!(!dead.is_empty(), "kill -9 should leave the scratch folder for the next build to sweep");
    // A concurrent build's folder: its owner lock is held (here by this test).
    let live = cache.join("tmp/run-concurrent");
    std::fs::create_dir_all(&live).unwrap();
    let owner = std::fs::File::create(live.join(".owner")).unwrap();
    owner.lock().unwrap();
    let small = small_env(&dir, "small", &["zlib"]);
    build_json(&dir, &[small.to_str().unwrap(), "-o", "small.oci", "--cache-dir", cache.to_str().unwrap()]);
    let left = scratch_folders(&cache, &dir);
    assert_eq!(left, vec![live.display().to_string()], "the dead build's folders are swept, the live one kept");
    drop(owner);
}
