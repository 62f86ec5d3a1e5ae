//! A platform team's first week: the install at container start as a non-root user, on a read-only root
//! and without bash; the cache's size and its cleaning; and the README's option tables against `--help`.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Unmounts its folder when dropped, also when the test fails first.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn sh(cmd: &str) {
    run(Command::new("sh").args(["-c", cmd]));
}

#[test]
fn the_install_at_start_runs_as_the_prefix_owner_and_says_what_to_do_otherwise() {
    let dir = scratch("fw-runtime");
    let chan = example_channel(&dir);
    std::fs::write(dir.join("rt.yaml"), format!("name: rt\nchannels:\n  - {}\ndependencies:\n  - envlayer-hello\nenvlayer:\n  install: runtime\n", chan.display())).unwrap();
    let base = format!("{}:base", debian_base().display());
    let (ok, _, err) = envlayer_env(&dir, &["build", "rt.yaml", "--base", &base, "--cache-dir", "cache", "-o", "rt.oci"], &[]);
    assert!(ok, "{err}");
    // The build says what happens at the start, and that the local channel's archives ship.
    assert!(err.contains("installs at container start: envlayer-") && err.contains("entrypoint is envlayer's installer"), "{err}");
    assert!(err.contains("come from a local channel, which the container cannot reach: their archives ship in the image"), "{err}");
    let layout = dir.join("rt.oci");

    // As uid 1000, with the prefix root's: a clear refusal naming the ways out; nothing marked done.
    let rootfs = unpack(&layout, "latest", &dir.join("bundle"));
    let out = start_container(&layout, &rootfs, Some("1000:1000"), &["/bin/true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/opt/conda/envs/rt is not writable here (uid 1000 cannot write") && stderr.contains("--install-only"), "{stderr}");
    // The prefix owned by that user: the install runs as them (package cache in /tmp), then the command.
    sh(&format!("chown -R 1000:1000 {}", rootfs.join("opt/conda/envs/rt").display()));
    let out = start_container(&layout, &rootfs, Some("1000:1000"), &["/bin/sh", "-c", "id -u; test -x $CONDA_PREFIX/bin/hello && echo installed"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["1000", "installed"], "{stderr}");
    assert!(rootfs.join("opt/conda/envs/rt/conda-meta/.envlayer-installed").is_file());

    // A read-only root file system: said so.
    let fresh = unpack(&layout, "latest", &dir.join("bundle-ro"));
    std::fs::create_dir_all(fresh.join("dev")).unwrap();
    run(Command::new("mknod").args(["-m", "666"]).arg(fresh.join("dev/null")).args(["c", "1", "3"]));
    let ro = dir.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    sh(&format!("mount --bind {} {} && mount -o remount,bind,ro {}", fresh.display(), ro.display(), ro.display()));
    let mounted = Unmount(ro.clone());
    let out = start_container(&layout, &ro, None, &["/bin/true"]);
    drop(mounted);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("the file system holding /opt/conda/envs/rt is read-only"), "{stderr}");
}

#[test]
fn a_link_script_in_an_image_without_bash_is_named_and_k8s_output_warns_about_command() {
    let dir = scratch("fw-nobash");
    let recipes = channels().join("test-recipes");
    let env = env_file(&dir, "post", &[&recipes], &["post_link-e"]);
    let base = format!("{}:base", debian_base().display());
    let (ok, _, err) = envlayer_env(&dir, &["build", env.to_str().unwrap(), "--base", &base, "--cache-dir", "cache", "-o", "p.oci", "-q"], &[]);
    assert!(ok, "{err}");
    let layout = dir.join("p.oci");
    let rootfs = unpack(&layout, "latest", &dir.join("bundle"));
    for b in ["usr/bin/bash", "bin/bash"] {
        let p = rootfs.join(b);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let out = start_container(&layout, &rootfs, None, &["/bin/true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("the post-link script of post_link-e needs bash, and this image has none on PATH"), "{stderr}");

    // resolve --format k8s of such an image says how `command:` skips the install.
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let (ok, out, err) = envlayer_env(&dir, &["resolve", env.to_str().unwrap(), "--repo", &format!("{}/envs", reg.addr()), "--base", &base, "--cache-dir", "cache", "--format", "k8s", "-q"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("image: ") && err.contains("a `command:` in the pod replaces the entrypoint and skips that install"), "{err}");
}

fn cache_info(dir: &Path) -> Value {
    let out = envlayer(dir, &["cache", "info", "--cache-dir", "cache", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kind(info: &Value, k: &str) -> (u64, u64) {
    let e = info["kinds"].as_array().unwrap().iter().find(|e| e["kind"] == k).unwrap();
    (e["entries"].as_u64().unwrap(), e["bytes"].as_u64().unwrap())
}

fn gc(dir: &Path, extra: &[&str]) -> Value {
    let out = envlayer(dir, &[&["cache", "gc", "--cache-dir", "cache", "--json"][..], extra].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn cache_info_shows_what_is_held_and_gc_removes_only_what_is_unused() {
    let dir = scratch("fw-cache");
    let chan = example_channel(&dir);
    let env = env_file(&dir, "hello", &[&chan], &["envlayer-hello", "envlayer-docs"]);
    let args = [env.to_str().unwrap(), "--cache-dir", "cache", "-o", "h.oci", "--base", "scratch"];
    let first = build_json_env(&dir, &args, &[("SOURCE_DATE_EPOCH", "1700000000")]);
    let info = cache_info(&dir);
    let layers = kind(&info, "layers");
    assert!(layers.0 >= 2 && kind(&info, "blobs").1 > 0 && kind(&info, "pkgs").0 >= 2 && info["bytes"].as_u64().unwrap() > 0, "{info}");
    let out = envlayer(&dir, &["cache", "info", "--cache-dir", "cache"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("layers") && text.contains("extracted packages"), "{text}");

    // Leftovers: an interrupted build's scratch folder (its owner gone), an entry whose blob is gone, a
    // blob nobody refers to (two days old), a torn temporary entry.
    std::fs::create_dir_all(dir.join("cache/tmp/run-dead")).unwrap();
    std::fs::write(dir.join("cache/tmp/run-dead/.owner"), "").unwrap();
    std::fs::write(dir.join("cache/layers/broken.json"), format!(r#"{{"layer":{{"digest":"sha256:{}"}}}}"#, "0".repeat(64))).unwrap();
    let orphan = dir.join("cache/blobs/sha256").join("ab".repeat(32));
    std::fs::write(&orphan, "old").unwrap();
    sh(&format!("touch -d '2 days ago' {}", orphan.display()));
    std::fs::write(dir.join("cache/layers/.tmpXYZ"), "torn").unwrap();

    let dry = gc(&dir, &["--dry-run"]);
    let reasons: Vec<(String, String)> = dry["removed"].as_array().unwrap().iter().map(|r| (r["path"].as_str().unwrap().to_string(), r["reason"].as_str().unwrap().to_string())).collect();
    assert_eq!(
        reasons,
        [
            (format!("blobs/sha256/{}", "ab".repeat(32)), "orphan".to_string()),
            ("layers/.tmpXYZ".into(), "interrupted".into()),
            ("layers/broken.json".into(), "broken".into())
        ],
        "{dry}"
    );
    assert!(orphan.exists(), "a dry run removes nothing");
    let done = gc(&dir, &[]);
    assert_eq!(done["removed"].as_array().unwrap().len(), 3);
    assert!(!orphan.exists() && !dir.join("cache/layers/broken.json").exists() && !dir.join("cache/tmp/run-dead").exists());
    // What is in use stays: the rebuild packs nothing.
    let again = build_json_env(&dir, &args, &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert_eq!(again["work"]["compressed"], 0, "{}", again["work"]);
    assert_eq!(again["manifest_digest"], first["manifest_digest"]);

    // Unused for ten days: everything goes with --older-than 7d; the build then does the work again.
    sh(&format!("find {} -exec touch -h -d '10 days ago' {{}} +", dir.join("cache").display()));
    let old = gc(&dir, &["--older-than", "7d"]);
    assert!(old["removed"].as_array().unwrap().iter().all(|r| r["reason"] == "unused"), "{old}");
    let info = cache_info(&dir);
    assert_eq!((kind(&info, "layers").0, kind(&info, "pkgs").0, kind(&info, "extracted").0), (0, 0, 0), "{info}");
    let rebuilt = build_json_env(&dir, &args, &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert!(rebuilt["work"]["compressed"].as_u64().unwrap() >= 2);
    // --max-size: the least recently used go until the rest fits.
    let before = cache_info(&dir)["bytes"].as_u64().unwrap();
    let sized = gc(&dir, &["--max-size", &format!("{}", before / 2)]);
    assert!(sized["removed"].as_array().unwrap().iter().all(|r| r["reason"] == "size" || r["reason"] == "orphan"));
    assert!(cache_info(&dir)["bytes"].as_u64().unwrap() <= before / 2 + 4096 * 8, "{sized}");

    // Folders that are not envlayer's cache are refused, untouched: one of the user's, an OCI layout
    // (it has blobs/ too), a conda installation's package cache.
    std::fs::create_dir_all(dir.join("mine/pkgs/numpy-1.0-0")).unwrap();
    std::fs::write(dir.join("mine/notes.txt"), "keep").unwrap();
    for folder in ["mine", "h.oci"] {
        let before = run(Command::new("find").arg(dir.join(folder)));
        let out = envlayer(&dir, &["cache", "gc", "--cache-dir", folder, "--max-size", "0"]);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not an envlayer cache"), "{folder}");
        assert_eq!(run(Command::new("find").arg(dir.join(folder))), before, "{folder} untouched");
    }

    // A folder of the cache that is a link is not followed: what it points to stays.
    let outside = dir.join("outside-pkgs");
    std::fs::create_dir_all(outside.join("precious")).unwrap();
    std::fs::remove_dir_all(dir.join("cache/pkgs")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("cache/pkgs")).unwrap();
    sh(&format!("touch -d '10 days ago' {}", outside.join("precious").display()));
    gc(&dir, &["--older-than", "1d", "--max-size", "0"]);
    assert!(outside.join("precious").is_dir());

    // A cache a running build uses is not cleaned (the dry run still lists).
    std::fs::create_dir_all(dir.join("cache/tmp/run-live")).unwrap();
    let mut holder = Command::new("flock").arg(dir.join("cache/tmp/run-live/.owner")).args(["sleep", "30"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = envlayer(&dir, &["cache", "gc", "--cache-dir", "cache", "--max-size", "0"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("in use by 1 running envlayer process"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The rows of the tables in the README section whose heading starts with `heading`, as cells (`\|`
/// inside a cell kept).
fn readme_rows(readme: &str, heading: &str) -> Vec<Vec<String>> {
    let start = readme.lines().position(|l| l.starts_with('#') && l.contains(heading)).unwrap_or_else(|| panic!("no README heading {heading}"));
    readme
        .lines()
        .skip(start + 1)
        .take_while(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with("| ") && !l.starts_with("| option") && !l.starts_with("| pip option"))
        .map(|l| l.replace("\\|", "\u{0}").split('|').map(|c| c.trim().replace('\u{0}', "|")).collect::<Vec<_>>())
        .map(|cells| cells[1..cells.len() - 1].to_vec())
        .collect()
}

/// The long flags named in a table cell.
fn flags_in(cell: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = cell;
    while let Some(i) = rest.find("--") {
        let name: String = rest[i + 2..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        if !name.is_empty() {
            out.push(name.clone());
        }
        rest = &rest[i + 2 + name.len()..];
    }
    out
}

/// The flags of `envlayer ARGS --help`, each with its default when clap shows a one-word one.
fn help_flags(args: &[&str]) -> std::collections::BTreeMap<String, Option<String>> {
    let out = envlayer(Path::new("."), &[args, &["--help"]].concat());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut flags = std::collections::BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let t = if t.len() > 4 && t.starts_with('-') && &t[2..4] == ", " { &t[4..] } else { t };
        let Some(flag) = t.strip_prefix("--") else { continue };
        let name: String = flag.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        if name == "help" || name == "version" {
            continue;
        }
        // The help text is on this line or the next.
        let next = lines.get(i + 1).filter(|n| !n.trim_start().starts_with('-')).unwrap_or(&"");
        let body = format!("{line} {next}");
        let default = body.split("[default: ").nth(1).and_then(|d| d.split(']').next()).filter(|d| !d.contains(' ')).map(String::from);
        flags.insert(name, default);
    }
    flags
}

#[test]
fn the_readme_option_tables_match_help() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let build_rows = readme_rows(&readme, "`envlayer build");
    // (command, README heading, flags of that section that belong to a sibling command only, extra rows)
    let only_prune = ["dry-run", "cache-repo"];
    let only_gc = ["older-than", "max-size", "dry-run"];
    let not_resolve = ["output", "push", "tag"];
    let cases: Vec<(&[&str], &str, &[&str])> = vec![
        (&["build"], "`envlayer build", &[]),
        (&["lock"], "`envlayer lock", &[]),
        (&["push"], "`envlayer push", &[]),
        (&["resolve"], "`envlayer resolve", &[]),
        (&["ls"], "`envlayer ls", &only_prune),
        (&["prune"], "`envlayer ls", &[]),
        (&["prepull"], "`envlayer prepull", &[]),
        (&["cache", "info"], "`envlayer cache info", &only_gc),
        (&["cache", "gc"], "`envlayer cache info", &[]),
        (&["runtime"], "`envlayer runtime", &[]),
        (&["completions", "bash"], "`envlayer completions", &[]),
        (&["example-channel"], "`envlayer completions", &[]),
    ];
    for (args, heading, left_out) in cases {
        let mut rows = readme_rows(&readme, heading);
        if args == ["resolve"] {
            // "every build option but -o, --push and --tag"
            rows.extend(build_rows.iter().filter(|r| !flags_in(&r[0]).iter().any(|f| not_resolve.contains(&f.as_str()))).cloned());
        }
        let readme_flags: std::collections::BTreeSet<String> =
            rows.iter().flat_map(|r| flags_in(&r[0])).filter(|f| !left_out.contains(&f.as_str())).collect();
        let help = help_flags(args);
        let help_names: std::collections::BTreeSet<String> = help.keys().cloned().collect();
        assert_eq!(readme_flags, help_names, "envlayer {args:?}: README table (left) vs --help (right)");
        for (flag, default) in help.iter().filter_map(|(f, d)| d.as_ref().map(|d| (f, d))) {
            let row = |rows: &[Vec<String>]| rows.iter().find(|r| flags_in(&r[0]).contains(flag)).cloned();
            let mut r = row(&rows).unwrap();
            if r[1].contains("as for") {
                r = row(&build_rows).unwrap_or(r);
            }
            assert!(r[1].contains(default.as_str()), "envlayer {args:?} --{flag}: README default {:?}, --help {default:?}", r[1]);
        }
    }
}
