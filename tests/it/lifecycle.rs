//! The environment lifecycle against a real registry: identity tags, TTL, resolve with no solve on a hit,
//! rebuild after the TTL, ls, prune, and the runtime-install opt-out started in containerd.


use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const T0: &str = "2026-11-25T08:00:00Z";
const T0_1H: &str = "2026-11-25T09:00:00Z";
const T0_20H: &str = "2026-11-26T04:00:00Z";
const T0_25H: &str = "2026-11-26T09:00:00Z";

fn resolve(dir: &Path, env: &Path, repo: &str, now: &str, extra: &[&str]) -> (bool, Value, String) {
    let mut args = vec!["resolve", env.to_str().unwrap(), "--repo", repo, "--now", now, "--cache-dir", "cache", "--format", "json", "-q"];
    args.extend(extra);
    let (ok, out, err) = envlayer_env(dir, &args, &[]);
    (ok, serde_json::from_str(&out).unwrap_or(Value::Null), err)
}

fn example_env(dir: &Path, name: &str, deps: &[&str], extra_yaml: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    let deps: String = deps.iter().map(|d| format!("  - {d}\n")).collect();
    std::fs::write(&p, format!("name: {name}\nchannels:\n  - ./chan\ndependencies:\n{deps}{extra_yaml}")).unwrap();
    p
}

#[test]
fn resolve_answers_from_the_registry_within_the_ttl_and_rebuilds_after_it() {
    let dir = scratch("lifecycle-resolve");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let repo = format!("{}/envs", reg.addr());
    assert!(envlayer(&dir, &["example-channel", "chan"]).status.success());
    let env = example_env(&dir, "hello", &["envlayer-hello"], "envlayer:\n  labels: {team: ml}\n  annotations: {owner: data-platform}\n");

    let (ok, first, err) = resolve(&dir, &env, &repo, T0, &["--label", "cost-center=42"]);
    assert!(ok, "{err}");
    assert_eq!(first["hit"], false);
    let tag = first["image"]["tag"].as_str().unwrap().to_string();
    assert!(tag.starts_with("hello-") && tag.len() == "hello-".len() + 24, "{tag}");
    assert_eq!(first["image"]["status"], "ready");
    assert_eq!(first["image"]["expires"], "2026-11-26T08:00:00Z", "24h TTL by default");
    // TTL the way registries understand it, labels and annotations from the file and the command line.
    let info: Value = serde_json::from_str(&run(Command::new("skopeo").args(["inspect", "--tls-verify=false"]).arg(format!("docker://{repo}:{tag}")))).unwrap();
    assert_eq!(info["Labels"]["quay.expires-after"], "24h");
    assert_eq!(info["Labels"]["team"], "ml");
    assert_eq!(info["Labels"]["cost-center"], "42");
    let raw: Value = serde_json::from_str(&run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{repo}:{tag}")))).unwrap();
    assert_eq!(raw["annotations"]["owner"], "data-platform");
    assert_eq!(raw["annotations"]["io.envlayer.expires"], "2026-11-26T08:00:00Z");
    assert_eq!(raw["annotations"]["org.opencontainers.image.created"], T0);

    // Within the TTL: the same reference at once, with no solve and no build. The channel is gone, so
    // any solve or fetch would fail.
    std::fs::rename(dir.join("chan"), dir.join("chan.away")).unwrap();
    let (ok, second, err) = resolve(&dir, &env, &repo, T0_1H, &["--label", "cost-center=42"]);
    assert!(ok, "{err}");
    assert_eq!(second["hit"], true);
    assert!(second["build"].is_null() && second["push"].is_null());
    assert_eq!(second["reference"], first["reference"]);
    assert!(second["timings_ms"].get("build").is_none());
    let (ok, out, _) = envlayer_env(&dir, &["resolve", env.to_str().unwrap(), "--repo", &repo, "--now", T0_1H, "--cache-dir", "cache", "--no-build", "--label", "cost-center=42", "--format", "k8s"], &[]);
    assert!(ok);
    assert_eq!(out, format!("- name: hello\n  image: {}\n", first["reference"].as_str().unwrap()));
    // A changed environment (another label) is another identity: a miss.
    let miss = Command::new(env!("CARGO_BIN_EXE_envlayer"))
        .args(["resolve", env.to_str().unwrap(), "--repo", &repo, "--now", T0_1H, "--cache-dir", "cache", "--no-build", "-q"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(miss.status.code(), Some(3), "{}", String::from_utf8_lossy(&miss.stderr));

    // After the TTL: built (and solved) again; the tag moves to the new image.
    std::fs::rename(dir.join("chan.away"), dir.join("chan")).unwrap();
    let (ok, third, err) = resolve(&dir, &env, &repo, T0_25H, &["--label", "cost-center=42"]);
    assert!(ok, "{err}");
    assert_eq!(third["hit"], false);
    assert_eq!(third["build"]["solved"], true);
    assert_ne!(third["reference"], first["reference"]);
    assert_eq!(third["image"]["tag"].as_str().unwrap(), tag);
    // --refresh forces a build even when fresh.
    let (ok, fourth, _) = resolve(&dir, &env, &repo, T0_25H, &["--label", "cost-center=42", "--refresh"]);
    assert!(ok);
    assert_eq!(fourth["hit"], false);
}

#[test]
fn ls_and_prune_know_ready_expired_and_runtime_install_images() {
    let dir = scratch("lifecycle-prune");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let repo = format!("{}/envs", reg.addr());
    assert!(envlayer(&dir, &["example-channel", "chan"]).status.success());
    let old = example_env(&dir, "old-env", &["envlayer-docs"], "");
    let fresh = example_env(&dir, "fresh-env", &["envlayer-hello"], "");
    let rt = example_env(&dir, "rt-env", &["envlayer-hello"], "envlayer:\n  install: runtime\n");
    assert!(resolve(&dir, &old, &repo, T0, &[]).0);
    assert!(resolve(&dir, &fresh, &repo, T0_20H, &[]).0);
    let (ok, r, err) = resolve(&dir, &rt, &repo, T0_20H, &[]);
    assert!(ok, "{err}");
    assert_eq!(r["image"]["status"], "runtime-install");
    // Something that is not envlayer's, in the same repository.
    run(Command::new("skopeo").args(["copy", "-q", "--dest-tls-verify=false"]).arg(format!("oci:{}:base", debian_base().display())).arg(format!("docker://{repo}:not-ours")));

    let (ok, out, err) = envlayer_env(&dir, &["ls", "--repo", &repo, "--now", T0_25H, "--json"], &[]);
    assert!(ok, "{err}");
    let images: Vec<Value> = serde_json::from_str(&out).unwrap();
    let status = |name: &str| images.iter().find(|i| i["name"] == name).map(|i| i["status"].as_str().unwrap().to_string());
    assert_eq!(images.len(), 3, "{out}");
    assert_eq!(status("old-env").as_deref(), Some("expired"));
    assert_eq!(status("fresh-env").as_deref(), Some("ready"));
    assert_eq!(status("rt-env").as_deref(), Some("runtime-install"));
    let fresh_img = images.iter().find(|i| i["name"] == "fresh-env").unwrap();
    assert_eq!(fresh_img["packages"], 2);
    assert!(fresh_img["size"].as_u64().unwrap() > 0);
    assert_eq!(fresh_img["expires_in_seconds"], 19 * 3600);
    assert!(fresh_img["runtime_packages"].as_array().unwrap().is_empty());
    let rt_img = images.iter().find(|i| i["name"] == "rt-env").unwrap();
    assert_eq!(rt_img["runtime_packages"].as_array().unwrap().len(), 2, "ls says what installs at runtime");
    let (ok, table, _) = envlayer_env(&dir, &["ls", "--repo", &repo, "--now", T0_25H], &[]);
    assert!(ok && table.contains("runtime-install") && table.contains("expired") && table.contains("19h00m"), "{table}");

    // Dry run deletes nothing; prune deletes the expired image only.
    let (ok, out, _) = envlayer_env(&dir, &["prune", "--repo", &repo, "--now", T0_25H, "--dry-run", "--json"], &[]);
    assert!(ok);
    let dry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["deleted"].as_array().unwrap().len(), 1);
    let (ok, out, err) = envlayer_env(&dir, &["prune", "--repo", &repo, "--now", T0_25H, "--json"], &[]);
    assert!(ok, "{err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done["deleted"][0]["name"], "old-env");
    let (_, out, _) = envlayer_env(&dir, &["ls", "--repo", &repo, "--now", T0_25H, "--json"], &[]);
    let left: Vec<Value> = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = left.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fresh-env", "rt-env"]);
    run(Command::new("skopeo").args(["inspect", "--tls-verify=false"]).arg(format!("docker://{repo}:not-ours")));
}

#[test]
fn bad_environment_names_are_refused() {
    let dir = scratch("lifecycle-names");
    assert!(envlayer(&dir, &["example-channel", "chan"]).status.success());
    for bad in ["Hello", "-x", "x", "has_underscore"] {
        let env = example_env(&dir, "placeholder", &["envlayer-docs"], "");
        std::fs::write(&env, std::fs::read_to_string(&env).unwrap().replace("name: placeholder", &format!("name: '{bad}'"))).unwrap();
        let (ok, _, err) = envlayer_env(&dir, &["build", env.to_str().unwrap(), "--cache-dir", "cache", "-q", "-o", "x.oci"], &[]);
        assert!(!ok && err.contains("2-63 lowercase"), "{bad}: {err}");
    }
}

/// The config of an image in a registry, read with skopeo.
fn blob_json_from_registry(_addr: &str, reference: &str) -> Value {
    serde_json::from_str(&run(Command::new("skopeo").args(["inspect", "--config", "--tls-verify=false"]).arg(format!("docker://{reference}")))).unwrap()
}

/// A folder served over HTTP on 127.0.0.1 (python's http.server), stopped when dropped.
struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl HttpServer {
    fn serve(dir: &Path) -> HttpServer {
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.split(" port ").nth(1).and_then(|p| p.split_whitespace().next()).and_then(|p| p.parse().ok()).expect(&line);
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_runtime_install_opt_out_installs_at_start_and_runs() {
    let dir = scratch("lifecycle-runtime");
    let reg = Service::registry("plain", &dir.join("reg"), &[]);
    let addr = reg.addr();
    let ctrd = Service::containerd(&dir.join("containerd"), &[&addr]);
    let channel = HttpServer::serve(&channels().join("local-python"));
    let env = dir.join("web.yaml");
    std::fs::write(
        &env,
        format!("name: web\nchannels:\n  - http://127.0.0.1:{}/\ndependencies:\n  - python=3.11\n  - flask\nenvlayer:\n  install: runtime\n", channel.port),
    )
    .unwrap();
    let base = format!("{}:base", debian_base().display());
    let (ok, out, err) = envlayer_env(&dir, &["resolve", env.to_str().unwrap(), "--repo", &format!("{addr}/envs"), "--base", &base, "--cache-dir", "cache", "--format", "json", "-q"], &[]);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["image"]["status"], "runtime-install");
    // No package layers: base + the runtime layer.
    let layers = r["build"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), manifest(&debian_base())["layers"].as_array().unwrap().len() + 1);
    let reference = r["reference"].as_str().unwrap();
    let cri = Path::new(env!("CARGO_MANIFEST_DIR")).join("registry-test/cri_pull.py");
    run(Command::new("python3").arg(&cri).arg(&ctrd.endpoint).arg(reference));
    let snapshotter = std::fs::read_to_string(ctrd.dir.join("snapshotter")).unwrap().trim().to_string();
    // The image's entrypoint is envlayer's installer. `ctr run IMAGE ID ARGS` replaces the entrypoint as
    // well as the command (unlike a pod's `args:`), so the test names it, as a `command:` override must.
    let config = blob_json_from_registry(&addr, reference);
    let entrypoint: Vec<String> = config["config"]["Entrypoint"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(entrypoint, ["/opt/envlayer/bin/envlayer", "runtime", "--"]);
    let out = Command::new("ctr")
        .args(["--address", &ctrd.endpoint, "-n", "k8s.io", "run", "--rm", "--net-host", "--snapshotter", &snapshotter])
        .arg(reference)
        .arg("rt-1")
        .args(&entrypoint)
        .args(["python", "-c", "import flask, sys; print('ok', sys.prefix)"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("installing") && stderr.contains("environment web ready"), "{stderr}");
    assert!(stdout.lines().any(|l| l == "ok /opt/conda/envs/web"), "stdout: {stdout}\nstderr: {stderr}");
}
