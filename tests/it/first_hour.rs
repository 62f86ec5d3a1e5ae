//! A new user's first hour and a platform team's first week: warnings that reach CI logs, images that
//! say they cannot run, expiry only where asked, locks that must match, errors that name the fix, flags
//! checked early, and `ls`/`prune` output to act on. Against the real local registry where one is
//! involved.

use crate::common::hostile::run_bounded;
use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T0: &str = "2026-11-25T08:00:00Z";
const T0_25H: &str = "2026-11-26T09:00:00Z";
const LIMIT: Duration = Duration::from_secs(60);


#[test]
fn warnings_reach_stderr_without_a_terminal_and_an_image_without_a_base_says_so() {
    let dir = scratch("fh-warnings");
    let chan = example_channel(&dir);
    let env = env_file(&dir, "hello", &[&chan], &["envlayer-hello"]);
    let env = env.to_str().unwrap();
    // stderr is a pipe here, as in CI; no -q.
    let (ok, _, err) = envlayer_env(&dir, &["build", env, "--cache-dir", "cache", "-o", "a.oci"], &[]);
    assert!(ok, "{err}");
    assert!(err.contains("warning: no --base: the image holds the environment and nothing else (no libc, no shell)"), "{err}");
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let s = build_json_env(&dir, &[env, "--cache-dir", "cache", "-o", "b.oci"], &epoch);
    assert!(s["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().starts_with("no --base")), "{s}");
    // scratch on purpose: no warning, and the same image.
    let (ok, out, err) = envlayer_env(&dir, &["build", env, "--cache-dir", "cache", "-o", "c.oci", "--base", "scratch"], &epoch);
    assert!(ok && !err.contains("warning"), "{err}");
    assert_eq!(out.trim(), s["manifest_digest"].as_str().unwrap());

    // A link script baked anyway: the warning reaches stderr with and without -q.
    let recipes = channels().join("test-recipes");
    let failing = env_file(&dir, "failing", &[&recipes], &["failing_post_link"]);
    for quiet in [&[][..], &["-q"][..]] {
        let mut args = vec!["build", failing.to_str().unwrap(), "--cache-dir", "cache", "-o", "f.oci", "--base", "scratch", "--link-scripts", "ignore"];
        args.extend(quiet);
        let (ok, _, err) = envlayer_env(&dir, &args, &[]);
        assert!(ok, "{err}");
        assert!(err.lines().any(|l| l.starts_with("warning: ") && l.contains("did not run")), "{quiet:?}: {err}");
    }

    // --no-pyc asked for is not warned about.
    let py = env_file(&dir, "py", &[&channels().join("local-python")], &["python=3.11"]);
    let (ok, _, err) = envlayer_env(&dir, &["build", py.to_str().unwrap(), "--cache-dir", "cache", "-o", "p.oci", "--base", "scratch", "--no-pyc"], &[]);
    assert!(ok && !err.contains(".pyc"), "{err}");
    // ENVLAYER_LOG writes no colour codes into a pipe.
    let (ok, _, err) = envlayer_env(&dir, &["build", env, "--cache-dir", "cache2", "-o", "d.oci", "--base", "scratch"], &[("ENVLAYER_LOG", "debug")]);
    assert!(ok && err.contains("DEBUG") && !err.contains('\u{1b}'), "{}", &err[..err.len().min(2000)]);
}

#[test]
fn a_named_tag_gets_no_expiry_and_prune_never_deletes_what_a_user_tagged() {
    let dir = scratch("fh-ttl");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let repo = format!("{}/envs", reg.addr());
    let chan = example_channel(&dir);
    let hello = env_file(&dir, "hello", &[&chan], &["envlayer-hello"]);
    let base = ["--cache-dir", "cache", "--base", "scratch", "-q"];
    // build --push to a tag the user names: no expiry.
    let prod = format!("{repo}:prod");
    let (ok, _, err) = envlayer_env(&dir, &[&["build", hello.to_str().unwrap(), "--push", &prod][..], &base].concat(), &[]);
    assert!(ok, "{err}");
    assert!(skopeo_json(&[], &format!("docker://{}", prod))["Labels"].get("quay.expires-after").is_none());
    assert!(skopeo_json(&["--raw"], &format!("docker://{}", prod))["annotations"].get("io.envlayer.expires").is_none());
    // With --ttl, it has one.
    let nightly = format!("{repo}:nightly");
    let (ok, _, err) = envlayer_env(&dir, &[&["build", hello.to_str().unwrap(), "--push", &nightly, "--ttl", "2h"][..], &base].concat(), &[]);
    assert!(ok, "{err}");
    assert_eq!(skopeo_json(&[], &format!("docker://{}", nightly))["Labels"]["quay.expires-after"], "2h");
    // `push` of a layout built with a TTL to a named tag says what that means.
    let (ok, _, err) = envlayer_env(&dir, &[&["build", hello.to_str().unwrap(), "-o", "ttl.oci", "--ttl", "2h"][..], &base].concat(), &[]);
    assert!(ok, "{err}");
    let (ok, _, err) = envlayer_env(&dir, &["push", "ttl.oci", &format!("{repo}:kept"), "--cache-dir", "cache"], &[]);
    assert!(ok && err.contains("warning: this image was built with --ttl 2h: Quay will expire the tag kept"), "{err}");

    // resolve's environment tags expire in 24h; --json is --format json.
    let resolve = |env: &Path| -> Value {
        let (ok, out, err) = envlayer_env(&dir, &[&["resolve", env.to_str().unwrap(), "--repo", &repo, "--now", T0, "--json"][..], &base].concat(), &[]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let pinned_env = env_file(&dir, "pinned", &[&chan], &["envlayer-hello"]);
    let pinned = resolve(&pinned_env);
    assert_eq!(pinned["image"]["expires"], "2026-11-26T08:00:00Z");
    let tag = pinned["image"]["tag"].as_str().unwrap();
    // A user tags that image for production.
    run(Command::new("skopeo").args(["copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"]).arg(format!("docker://{repo}:{tag}")).arg(format!("docker://{repo}:stable")));
    let gone = resolve(&env_file(&dir, "gone", &[&chan], &["envlayer-docs"]));

    // ls: tag, digest, aligned columns, newest first, whole seconds.
    let (ok, table, err) = envlayer_env(&dir, &["ls", "--repo", &repo, "--now", T0_25H], &[]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TAG") && lines[0].contains("DIGEST") && lines[0].contains("OTHER TAGS"), "{table}");
    let column = |h: &str| lines[0].find(h).unwrap();
    for l in &lines[1..] {
        assert_eq!(l.find("sha256:"), Some(column("DIGEST")), "aligned: {table}");
    }
    // prod, nightly and kept were built now (no --now), after the resolves at T0: they come first.
    assert!(["nightly", "prod", "kept"].iter().any(|t| lines[1].starts_with(t)), "{table}");
    assert!(lines.last().unwrap().starts_with("gone-") || lines.last().unwrap().starts_with("stable"), "{table}");
    assert!(!table.lines().any(|l| l.split_whitespace().any(|w| w.contains('T') && w.contains('.'))), "no fractions of seconds: {table}");
    let pinned_row = lines.iter().find(|l| l.starts_with("pinned-") || l.starts_with("stable")).unwrap();
    assert!(pinned_row.contains("stable") && pinned_row.contains("expired"), "{table}");

    // prune: the expired image a user tagged stays; the other goes, with every tag it had.
    let (ok, out, err) = envlayer_env(&dir, &["prune", "--repo", &repo, "--now", T0_25H, "--dry-run"], &[]);
    assert!(ok, "{err}");
    let gone_digest = gone["image"]["digest"].as_str().unwrap();
    let would: Vec<&str> = out.lines().collect();
    assert_eq!(would.len(), 2, "the environment tag and the build tag: {out}");
    assert!(would.iter().all(|l| l.starts_with(&format!("would delete {repo}:gone-")) && l.contains(gone_digest)), "{out}");
    let (ok, out, err) = envlayer_env(&dir, &["prune", "--repo", &repo, "--now", T0_25H, "--json"], &[]);
    assert!(ok, "{err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    let deleted = done["deleted"].as_array().unwrap();
    assert_eq!(deleted.len(), 1, "{out}");
    assert_eq!(deleted[0]["name"], "gone");
    assert_eq!(deleted[0]["tags"].as_array().unwrap().len(), 2);
    skopeo_json(&[], &format!("docker://{repo}:stable"));
    skopeo_json(&[], &format!("docker://{repo}:{tag}"));
    skopeo_json(&[], &format!("docker://{}", prod));
}

#[test]
fn envlayer_lock_then_build_from_it_and_a_lock_of_another_environment_is_refused() {
    let dir = scratch("fh-lock");
    let chan = example_channel(&dir);
    let a = env_file(&dir, "env-a", &[&chan], &["envlayer-hello"]);
    let out = envlayer(&dir, &["lock", a.to_str().unwrap(), "--cache-dir", "cache", "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), dir.join("env-a.lock").to_str().unwrap(), "beside the environment file");
    let s = build_json(&dir, &[a.to_str().unwrap(), "--lock", "env-a.lock", "--cache-dir", "cache", "-o", "a.oci", "--base", "scratch"]);
    assert_eq!(s["solved"], false);

    let refused = |env: &Path, extra: &[&str], expect: &[&str]| {
        let mut args = vec!["build", env.to_str().unwrap(), "--lock", "env-a.lock", "--cache-dir", "cache", "-o", "x.oci", "--base", "scratch", "-q"];
        args.extend(extra);
        let (ok, _, err) = envlayer_env(&dir, &args, &[]);
        assert!(!ok, "{args:?} built");
        for e in expect {
            assert!(err.contains(e), "{args:?}: {e:?} not in {err}");
        }
        assert!(!dir.join("x.oci").exists(), "nothing written");
    };
    // Another environment's specs, one spec fewer, another channel, another platform.
    let b = env_file(&dir, "env-b", &[&chan], &["envlayer-docs"]);
    refused(&b, &[], &["does not match", "asks for envlayer-docs, which the lock does not have", "envlayer lock"]);
    let hello_b = env_file(&dir, "both", &[&chan], &["envlayer-hello", "envlayer-docs"]);
    let out = envlayer(&dir, &["lock", hello_b.to_str().unwrap(), "--cache-dir", "cache", "-q", "-o", "env-a.lock"]);
    assert!(out.status.success());
    refused(&a, &[], &["the lock has packages", "does not need: envlayer-docs"]);
    assert!(envlayer(&dir, &["lock", a.to_str().unwrap(), "--cache-dir", "cache", "-q"]).status.success());
    std::fs::create_dir_all(dir.join("chan2")).unwrap();
    run(Command::new("cp").arg("-r").arg(chan.join("noarch")).arg(dir.join("chan2")));
    let other = env_file(&dir, "env-a", &[&dir.join("chan2")], &["envlayer-hello"]);
    refused(&other, &[], &["channels:"]);
    let a = env_file(&dir, "env-a", &[&chan], &["envlayer-hello"]);
    refused(&a, &["--platform", "linux-aarch64"], &["no packages for linux-aarch64", "locked for linux-64", "--platform"]);

    // lock refuses to overwrite a file that is not a lock.
    std::fs::write(dir.join("notes.lock"), "mine").unwrap();
    let out = envlayer(&dir, &["lock", a.to_str().unwrap(), "--cache-dir", "cache", "-q", "-o", "notes.lock"]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(dir.join("notes.lock")).unwrap(), "mine");

    // A push without -o keeps its lock in the cache and says where; it builds again from it.
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let (ok, _, err) = envlayer_env(&dir, &["build", a.to_str().unwrap(), "--push", &format!("{}/envs:a", reg.addr()), "--cache-dir", "cache", "--base", "scratch"], &[]);
    assert!(ok, "{err}");
    let line = err.lines().find(|l| l.trim_start().starts_with("lock: ")).unwrap_or_else(|| panic!("{err}"));
    let lock = line.trim_start().trim_start_matches("lock: ").split(" (").next().unwrap();
    assert!(lock.starts_with(dir.join("cache/locks").to_str().unwrap()), "{lock}");
    build_json(&dir, &[a.to_str().unwrap(), "--lock", lock, "--cache-dir", "cache", "-o", "again.oci", "--base", "scratch"]);
}

/// An address on the loopback device that is not a loopback address: a real registry there is, to
/// envlayer, a remote one (plain HTTP needs --insecure-registry). Removed when dropped.
struct RemoteAddress(&'static str);

impl RemoteAddress {
    fn add() -> Self {
        let out = Command::new("ip").args(["addr", "add", "10.254.14.1/32", "dev", "lo"]).output().expect("ip (iproute2)");
        assert!(out.status.success() || String::from_utf8_lossy(&out.stderr).contains("exists"), "{}", String::from_utf8_lossy(&out.stderr));
        RemoteAddress("10.254.14.1")
    }
}

impl Drop for RemoteAddress {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["addr", "del", "10.254.14.1/32", "dev", "lo"]).output();
    }
}

#[test]
fn errors_name_the_cause_and_the_fix() {
    let dir = scratch("fh-errors");
    let chan = example_channel(&dir);
    let hello = env_file(&dir, "hello", &[&chan], &["envlayer-hello"]);
    build_json(&dir, &[hello.to_str().unwrap(), "--cache-dir", "cache", "-o", "hello.oci", "--base", "scratch"]);

    // A registry that speaks plain HTTP, not on loopback: the error names the flag; with it, the push works.
    let remote = RemoteAddress::add();
    let reg = Service::registry("plain", &dir.join("reg"), &[("REGISTRY_BIND", remote.0)]);
    let target = format!("{}/envs:hello", reg.addr());
    let o = run_bounded(&dir, &["push", "hello.oci", &target], &[], LIMIT);
    assert!(o.code != Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("does not speak HTTPS") && o.stderr.contains(&format!("--insecure-registry {}", reg.addr())), "{}", o.stderr);
    let o = run_bounded(&dir, &["push", "hello.oci", &target, "--insecure-registry", &reg.addr()], &[], LIMIT);
    assert!(o.code == Some(0), "{}", o.stderr);

    // Nothing listening: refused at once, naming the host (no retries).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = run_bounded(&dir, &["push", "hello.oci", &format!("127.0.0.1:{port}/envs:x")], &[], LIMIT);
    assert!(o.code != Some(0) && o.stderr.contains(&format!("127.0.0.1:{port}")) && o.stderr.contains("connection refused"), "{}", o.stderr);
    assert_eq!(o.stderr.matches("attempt").count(), 0, "{}", o.stderr);

    // push names its own argument when the layout is missing.
    let (ok, _, err) = envlayer_env(&dir, &["push", "nothere.oci", &target], &[]);
    assert!(!ok && err.contains("LAYOUT \"nothere.oci\"") && err.contains("build -o"), "{err}");

    // A prefix longer than a package's binary placeholder: both lengths, and the flag.
    let python = channels().join("local-python");
    let py = env_file(&dir, "py", &[&python], &["python=3.11"]);
    let long = format!("/opt/{}", "x".repeat(300));
    let (ok, _, err) = envlayer_env(&dir, &["build", py.to_str().unwrap(), "--cache-dir", "cache", "-o", "py.oci", "--prefix", &long, "-q"], &[]);
    assert!(!ok && err.contains("the prefix is 305 bytes") && err.contains("Choose a --prefix of at most"), "{err}");

    // An unknown package: the platform, the channels searched, and near names.
    let typo = env_file(&dir, "typo", &[&python], &["python=3.11", "flsk"]);
    let (ok, _, err) = envlayer_env(&dir, &["build", typo.to_str().unwrap(), "--cache-dir", "cache", "-o", "t.oci", "-q"], &[]);
    assert!(!ok && err.contains("for linux-64 from file://") && err.contains("no package named flsk in these channels (did you mean flask?)"), "{err}");

    // A list item indented too deep: line, column, and what to do.
    std::fs::write(dir.join("indent.yaml"), format!("name: x\nchannels:\n  - {}\ndependencies:\n  - python=3.11\n   - flask\n", python.display())).unwrap();
    let (ok, _, err) = envlayer_env(&dir, &["build", "indent.yaml", "--cache-dir", "cache", "-q"], &[]);
    assert!(!ok && err.contains("indent.yaml:6:4:") && err.contains("same column"), "{err}");
    std::fs::write(dir.join("key.yaml"), format!("name: x\nchannels:\n  - {}\ndependencies:\n  - python=3.11\n - flask\n", python.display())).unwrap();
    let (ok, _, err) = envlayer_env(&dir, &["build", "key.yaml", "--cache-dir", "cache", "-q"], &[]);
    assert!(!ok && err.contains("key.yaml:6:") && err.contains("indentation"), "{err}");

    // A base of another architecture than --platform.
    let base = format!("{}:base", debian_base().display());
    let (ok, _, err) = envlayer_env(&dir, &["build", hello.to_str().unwrap(), "--cache-dir", "cache", "-o", "arm.oci", "--platform", "linux-aarch64", "--base", &base, "-q"], &[]);
    assert!(!ok && err.contains("is amd64, but --platform linux-aarch64 builds arm64"), "{err}");
    assert!(!dir.join("arm.oci").exists());
}

#[test]
fn flags_are_checked_before_any_work() {
    let dir = scratch("fh-flags");
    let chan = example_channel(&dir);
    let hello = env_file(&dir, "hello", &[&chan], &["envlayer-hello"]);
    let h = hello.to_str().unwrap();
    for (args, expect) in [
        (vec!["build", h, "--tag", "no good"], "is not an OCI tag"),
        (vec!["build", h, "--tag", ".hidden"], "is not an OCI tag"),
        (vec!["build", h, "--ttl", "1"], "has no unit: say 1h"),
        (vec!["build", h, "--ttl", "0"], "for no expiry say --ttl never"),
        (vec!["build", h, "--ttl", "0h"], "--ttl never"),
        (vec!["build", h, "--jobs", "0"], "--jobs"),
        (vec!["build", h, "--max-layers", "1"], "--max-layers"),
        (vec!["ls", "--repo", "127.0.0.1:1/x", "--push-jobs", "2"], "unexpected argument '--push-jobs'"),
        (vec!["cache", "gc", "--older-than", "5"], "no unit"),
    ] {
        let (ok, _, err) = envlayer_env(&dir, &[&args[..], &["--cache-dir", "cache"]].concat(), &[]);
        assert!(!ok && err.contains(expect), "{args:?}: {err}");
    }
    assert!(!dir.join("hello.oci").exists() && !dir.join("cache").exists(), "nothing was done");
    for shell in ["bash", "zsh", "fish"] {
        let out = envlayer(&dir, &["completions", shell]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("envlayer") && text.contains("insecure-registry") && text.contains("older-than"), "{shell}");
    }
}
