//! Pushing to a real registry (Debian's docker-registry) in every variant users meet: plain, basic auth,
//! token auth, TLS with a private CA; checked with skopeo and the registry's own access log.


use crate::common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const DEPS: &[&str] = &["python=3.11", "flask", "requests", "rich", "pip"];

/// `build --push` without an SBOM: these tests count the image's own uploads (tests/it/sbom.rs pushes
/// SBOMs).
fn build_push(dir: &Path, env: &Path, target: &str, extra: &[&str], vars: &[(&str, &str)]) -> Value {
    // (No SBOM and no registry cache: the uploads counted are the image's own.)
    let mut args = vec!["build", env.to_str().unwrap(), "--push", target, "--cache-dir", "cache", "--json", "-q", "--sbom", "none", "--cache-repo", "none"];
    args.extend(extra);
    let (ok, out, err) = envlayer_env(dir, &args, vars);
    assert!(ok, "build --push failed:\n{err}");
    serde_json::from_str(&out).unwrap()
}

fn skopeo_inspect(reference: &str, creds: Option<&str>, extra: &[&str]) -> Value {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false"]).args(extra);
    if let Some(c) = creds {
        cmd.args(["--creds", c]);
    }
    cmd.arg(format!("docker://{reference}"));
    serde_json::from_str(&run(&mut cmd)).unwrap()
}

#[test]
fn pushes_skip_what_the_registry_has_and_a_one_package_change_uploads_one_layer() {
    let dir = scratch("registry-plain");
    let reg = Service::registry("plain", &dir.join("registry"), &[]);
    let addr = reg.addr();
    let env = env_file(&dir, "demo", &[&channels().join("local-python")], DEPS);
    let target = format!("{addr}/team/envs:demo");
    let s = build_push(&dir, &env, &target, &[], &[]);
    let push = &s["push"];
    let reference = push["reference"].as_str().unwrap();
    assert!(reference.starts_with(&format!("{addr}/team/envs@sha256:")), "{reference}");
    assert_eq!(push["digest"], s["manifest_digest"]);
    // skopeo sees every layer, by the digest we printed.
    let info = skopeo_inspect(reference, None, &[]);
    assert_eq!(info["Layers"].as_array().unwrap().len(), s["layers"].as_array().unwrap().len());
    assert_eq!(info["Digest"].as_str(), push["digest"].as_str());
    let first_uploads = uploads_in_log(&reg.log());
    assert_eq!(first_uploads, s["layers"].as_array().unwrap().len() + 1, "every layer and the config, once");

    // The same image again: nothing uploaded (our report and the registry's log agree).
    let again = build_push(&dir, &env, &target, &[], &[]);
    assert_eq!(again["push"]["uploaded"].as_array().unwrap().len(), 0);
    assert_eq!(uploads_in_log(&reg.log()), first_uploads);

    // The environment plus one package: that package's layer, the environment layer and the config.
    let plus = dir.join("plus");
    std::fs::create_dir_all(&plus).unwrap();
    let env2 = env_file(&plus, "demo", &[&channels().join("local-python")], &[DEPS, &["setuptools"]].concat());
    let s2 = build_push(&dir, &env2, &format!("{addr}/team/envs:demo-plus"), &[], &[]);
    let before: BTreeSet<&str> = s["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    let mut expected: BTreeSet<String> = s2["layers"].as_array().unwrap().iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .filter(|d| !before.contains(d.as_str()))
        .collect();
    assert_eq!(expected.len(), 2, "setuptools' layer and the environment layer are new");
    expected.insert(s2["config_digest"].as_str().unwrap().to_string());
    let uploaded: BTreeSet<String> = s2["push"]["uploaded"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    assert_eq!(uploaded, expected);
    assert_eq!(uploads_in_log(&reg.log()), first_uploads + 3);

    // Another repository of the same registry: blobs are mounted, not uploaded.
    let s3 = build_push(&dir, &env, &format!("{addr}/other/envs:demo"), &[], &[]);
    assert_eq!(s3["push"]["uploaded"].as_array().unwrap().len(), 0, "{}", s3["push"]);
    assert_eq!(s3["push"]["mounted"].as_u64().unwrap() as usize, s["layers"].as_array().unwrap().len() + 1);
    skopeo_inspect(s3["push"]["reference"].as_str().unwrap(), None, &[]);

    // envlayer push of a layout already built gives the same digest, and uploads nothing new.
    let (ok, out, err) = envlayer_env(&dir, &["build", env.to_str().unwrap(), "-o", "demo.oci", "--cache-dir", "cache", "-q"], &[]);
    assert!(ok, "{err}");
    let (ok, out2, err) = envlayer_env(&dir, &["push", "demo.oci", &format!("{addr}/third/envs:x"), "--cache-dir", "cache"], &[]);
    assert!(ok, "{err}");
    assert!(out2.trim().ends_with(out.trim()), "push prints repo@{}: {out2}", out.trim());
}

#[test]
fn basic_auth_token_auth_and_tls_with_a_private_ca() {
    let dir = scratch("registry-auth");
    let chan = dir.join("chan");
    assert!(envlayer(&dir, &["example-channel", chan.to_str().unwrap()]).status.success());
    let env = env_file(&dir, "hello", &[&chan], &["envlayer-hello"]);
    let password = "s3cret-pw";
    for mode in ["htpasswd", "token", "tls"] {
        let reg = Service::registry(mode, &dir.join(format!("reg-{mode}")), &[]);
        let addr = reg.addr();
        let cfg = if mode == "tls" { None } else { Some(docker_config(&dir.join(mode), &addr, "envlayer", password)) };
        let ca = reg.dir.join("ca.pem");
        let mut vars: Vec<(&str, &str)> = vec![];
        let cfg_s = cfg.as_ref().map(|c| c.to_str().unwrap().to_string());
        if let Some(c) = &cfg_s {
            vars.push(("DOCKER_CONFIG", c));
        }
        let extra: Vec<&str> = if mode == "tls" { vec!["--registry-ca", ca.to_str().unwrap()] } else { vec![] };
        let s = build_push(&dir, &env, &format!("{addr}/team/hello:1"), &extra, &vars);
        let reference = s["push"]["reference"].as_str().unwrap();
        let creds = format!("envlayer:{password}");
        let info = skopeo_inspect(reference, (mode != "tls").then_some(creds.as_str()), &[]);
        assert_eq!(info["Digest"].as_str(), s["push"]["digest"].as_str(), "{mode}");

        if mode != "tls" {
            // A wrong password: a clear message, a non-zero exit, and no secret anywhere in the output.
            let wrong = "Wr0ng-Passw0rd-42";
            let bad_cfg = docker_config(&dir.join(format!("{mode}-bad")), &addr, "envlayer", wrong);
            let (ok, out, err) = envlayer_env(
                &dir,
                &["build", env.to_str().unwrap(), "--push", &format!("{addr}/team/hello:2"), "--cache-dir", "cache", "-q", "--json"],
                &[("DOCKER_CONFIG", bad_cfg.to_str().unwrap())],
            );
            assert!(!ok, "{mode}: a wrong password must fail");
            assert!(err.contains("access denied") && err.contains(&addr), "{mode}: {err}");
            for secret in [wrong, password, &envlayer::registry::auth::base64_encode(format!("envlayer:{wrong}").as_bytes())] {
                assert!(!err.contains(secret) && !out.contains(secret), "{mode}: a secret was printed");
            }
            // The tag was never created.
            let tags = run(Command::new("skopeo").args(["list-tags", "--tls-verify=false", "--creds", &creds]).arg(format!("docker://{addr}/team/hello")));
            assert!(!tags.contains("\"2\""), "{tags}");
        } else {
            // Without the CA, the certificate is refused (and plain HTTP is not tried behind the user's back).
            let (ok, _, err) = envlayer_env(&dir, &["build", env.to_str().unwrap(), "--push", &format!("{addr}/team/hello:3"), "--cache-dir", "cache", "-q"], &[]);
            assert!(!ok);
            assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");
        }
    }
}

#[test]
fn credentials_from_auth_json_and_a_credential_helper() {
    let dir = scratch("registry-creds");
    let chan = dir.join("chan");
    assert!(envlayer(&dir, &["example-channel", chan.to_str().unwrap()]).status.success());
    let env = env_file(&dir, "hello", &[&chan], &["envlayer-docs"]);
    let reg = Service::registry("htpasswd", &dir.join("reg"), &[]);
    let addr = reg.addr();
    // containers' auth.json.
    let auth = envlayer::registry::auth::base64_encode(b"envlayer:s3cret-pw");
    let auth_file = dir.join("auth.json");
    std::fs::write(&auth_file, format!(r#"{{"auths":{{"{addr}":{{"auth":"{auth}"}}}}}}"#)).unwrap();
    build_push(&dir, &env, &format!("{addr}/a/hello:1"), &[], &[("REGISTRY_AUTH_FILE", auth_file.to_str().unwrap())]);
    // A docker credential helper named in credHelpers.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-envtest");
    std::fs::write(&helper, "#!/bin/sh\nread reg\necho \"{\\\"ServerURL\\\":\\\"$reg\\\",\\\"Username\\\":\\\"envlayer\\\",\\\"Secret\\\":\\\"s3cret-pw\\\"}\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.join("dcfg");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("config.json"), format!(r#"{{"credHelpers":{{"{addr}":"envtest"}}}}"#)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    build_push(&dir, &env, &format!("{addr}/b/hello:1"), &[], &[("DOCKER_CONFIG", cfg.to_str().unwrap()), ("PATH", &path)]);
    run(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--creds", "envlayer:s3cret-pw"]).arg(format!("docker://{addr}/b/hello:1")));

    // With debug logging on, a successful push with a layout written: the password and its base64 form
    // appear nowhere, not in stdout, stderr, the --json summary, or any blob of the image.
    let (ok, out, err) = envlayer_env(
        &dir,
        &["build", env.to_str().unwrap(), "--push", &format!("{addr}/c/hello:1"), "-o", "pushed.oci", "--cache-dir", "cache", "--json"],
        &[("DOCKER_CONFIG", cfg.to_str().unwrap()), ("PATH", &path), ("ENVLAYER_LOG", "debug")],
    );
    assert!(ok, "{err}");
    let b64 = envlayer::registry::auth::base64_encode(b"envlayer:s3cret-pw");
    for secret in ["s3cret-pw", b64.as_str()] {
        assert!(!out.contains(secret) && !err.contains(secret), "secret in output");
        for e in std::fs::read_dir(dir.join("pushed.oci/blobs/sha256")).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "secret in a blob");
        }
    }

    // A registry base that does not exist: a clear error, nothing pushed.
    let (ok, _, err) = envlayer_env(
        &dir,
        &["build", env.to_str().unwrap(), "--base", &format!("{addr}/no/such:1"), "--push", &format!("{addr}/d/hello:1"), "--cache-dir", "cache", "-q"],
        &[("DOCKER_CONFIG", cfg.to_str().unwrap()), ("PATH", &path)],
    );
    assert!(!ok && err.contains("no/such") && (err.contains("404") || err.contains("no such image")), "{err}");
}

#[test]
fn a_registry_that_refuses_mounts_still_gets_a_complete_image() {
    let dir = scratch("registry-no-mount");
    let chan = dir.join("chan");
    assert!(envlayer(&dir, &["example-channel", chan.to_str().unwrap()]).status.success());
    let env = env_file(&dir, "hello", &[&chan], &["envlayer-hello", "envlayer-docs"]);
    let reg = Service::registry("token", &dir.join("reg"), &[("TOKEN_DENY_CROSS_REPO", "1")]);
    let addr = reg.addr();
    let cfg = docker_config(&dir, &addr, "envlayer", "s3cret-pw");
    let vars = [("DOCKER_CONFIG", cfg.to_str().unwrap())];
    build_push(&dir, &env, &format!("{addr}/src/hello:1"), &[], &vars);
    // envlayer remembers src/hello holds the blobs and asks to mount them; the registry refuses.
    let s = build_push(&dir, &env, &format!("{addr}/dst/hello:1"), &[], &vars);
    assert_eq!(s["push"]["mounted"], 0);
    assert_eq!(s["push"]["uploaded"].as_array().unwrap().len(), s["layers"].as_array().unwrap().len() + 1);
    // The image is complete: skopeo copies every blob of it.
    run(Command::new("skopeo").args(["copy", "-q", "--src-tls-verify=false", "--src-creds", "envlayer:s3cret-pw"])
        .arg(format!("docker://{addr}/dst/hello:1")).arg(format!("oci:{}:x", dir.join("copied").display())));
}

#[test]
fn a_registry_base_ends_up_under_the_environment_without_uploading_it_again() {
    let dir = scratch("registry-base");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let addr = reg.addr();
    let base = debian_base();
    run(Command::new("skopeo").args(["copy", "-q", "--dest-tls-verify=false"]).arg(format!("oci:{}:base", base.display())).arg(format!("docker://{addr}/base/debian:12")));
    let base_layers: Vec<String> = manifest(&base)["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    let uploads_before = uploads_in_log(&reg.log());
    let chan = dir.join("chan");
    assert!(envlayer(&dir, &["example-channel", chan.to_str().unwrap()]).status.success());
    let env = env_file(&dir, "hello", &[&chan], &["envlayer-hello"]);
    // Pushed with no local layout: the base's layers are mounted, never downloaded or uploaded.
    let base_ref = format!("{addr}/base/debian:12");
    let s = build_push(&dir, &env, &format!("{addr}/team/hello:1"), &["--base", &base_ref], &[]);
    assert!(s["output"].is_null());
    assert_eq!(s["push"]["mounted"].as_u64().unwrap() as usize, base_layers.len());
    let uploaded: Vec<&str> = s["push"]["uploaded"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    for b in &base_layers {
        assert!(!uploaded.contains(&b.as_str()), "base layer {b} uploaded again");
    }
    assert_eq!(uploads_in_log(&reg.log()) - uploads_before, uploaded.len());
    let info = skopeo_inspect(s["push"]["reference"].as_str().unwrap(), None, &[]);
    let layers: Vec<&str> = info["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(&layers[..base_layers.len()], base_layers.iter().map(String::as_str).collect::<Vec<_>>().as_slice(), "base layers at the bottom");
    assert!(info["Labels"]["io.envlayer.base"].as_str().unwrap().starts_with(&format!("{addr}/base/debian@sha256:")));
    // Pushing into the base's own repository: the base's blobs are already there, and the environment's
    // are mounted from team/hello, where envlayer pushed them.
    let s2 = build_push(&dir, &env, &format!("{addr}/base/debian:with-hello"), &["--base", &base_ref], &[]);
    assert_eq!(s2["push"]["uploaded"].as_array().unwrap().len(), 0);
    assert_eq!(s2["push"]["existing"].as_u64().unwrap() as usize, base_layers.len());
    // A local layout from a registry base holds the base's blobs (skopeo can copy it).
    let (ok, _, err) = envlayer_env(&dir, &["build", env.to_str().unwrap(), "--base", &base_ref, "-o", "local.oci", "--cache-dir", "cache", "-q"], &[]);
    assert!(ok, "{err}");
    run(Command::new("skopeo").args(["copy", "-q"]).arg(format!("oci:{}:latest", dir.join("local.oci").display())).arg(format!("oci:{}:copy", dir.join("copy.oci").display())));
}
