//! Helpers shared by the integration tests: the fixtures, the envlayer binary, real tools (skopeo, umoci,
//! chroot) and reading layers back.
#![allow(dead_code)]

pub mod fake_http;
pub mod hostile;

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// `../shared/fixtures/channels`, next to the checkout.
pub fn channels() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/channels");
    assert!(p.is_dir(), "fixtures not found at {}: the tests need ../shared beside the checkout", p.display());
    p.canonicalize().unwrap()
}

/// A scratch folder under target/, kept on failure for inspection (removed at the start of the next run).
pub fn scratch(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join("envlayer-tests").join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Runs `envlayer ARGS` in `cwd`.
pub fn envlayer(cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_envlayer"))
        .args(args)
        .current_dir(cwd)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("ENVLAYER_CACHE_DIR")
        .output()
        .expect("run envlayer");
    out
}

/// Runs `envlayer build ... --json -q` and returns the summary; panics with stderr on failure.
pub fn build_json(cwd: &Path, args: &[&str]) -> Value {
    build_json_env(cwd, args, &[])
}

/// Like [`build_json`] with extra environment variables.
pub fn build_json_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_envlayer"));
    cmd.arg("build").args(args).args(["--json", "-q"]).current_dir(cwd);
    cmd.env_remove("SOURCE_DATE_EPOCH").env_remove("ENVLAYER_CACHE_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run envlayer");
    assert!(out.status.success(), "envlayer build {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (did .ci/run install it?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Debian base layout (libc6 and the libraries local-python's CPython needs), made once per test run
/// by registry-test/make-debian-base.sh with .deb files cached under target/.
pub fn debian_base() -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    BASE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-base");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("registry-test/make-debian-base.sh");
        // Made again whenever the script changes.
        let version = envlayer::Digest::of(&std::fs::read(&script).unwrap()).hex();
        let layout = root.join(&version[..16]).join("layout");
        if !layout.join("index.json").is_file() {
            run(Command::new("bash").arg(&script).arg(&layout).arg(root.join("debs")));
        }
        layout
    })
    .clone()
}

/// `umoci unpack` of `layout:tag` into `bundle`; returns the rootfs.
pub fn unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(bundle);
    run(Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:{tag}", layout.display())).arg(bundle));
    bundle.join("rootfs")
}

/// The manifest of the only image in an OCI layout.
pub fn manifest(layout: &Path) -> Value {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    blob_json(layout, index["manifests"][0]["digest"].as_str().unwrap())
}

/// A JSON blob of a layout.
pub fn blob_json(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&std::fs::read(blob_path(layout, digest)).unwrap()).unwrap()
}

/// Where a blob lives in a layout.
pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// Calls `f(path, entry bytes)` for every regular file in every layer of the image.
pub fn for_each_layer_file(layout: &Path, mut f: impl FnMut(&str, &[u8])) {
    let m = manifest(layout);
    for l in m["layers"].as_array().unwrap() {
        let file = std::fs::File::open(blob_path(layout, l["digest"].as_str().unwrap())).unwrap();
        let reader: Box<dyn Read> = match l["mediaType"].as_str().unwrap() {
            t if t.ends_with("+zstd") => Box::new(zstd::Decoder::new(file).unwrap()),
            _ => Box::new(flate2::read::GzDecoder::new(file)),
        };
        let mut archive = tar::Archive::new(reader);
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            if e.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            f(&path, &data);
        }
    }
}

/// Starts the image the way a container runtime would: its entrypoint and `cmd`, with its config's
/// environment, in a chroot of the unpacked rootfs, as `user` (`uid:gid`) when given.
pub fn start_container(layout: &Path, rootfs: &Path, user: Option<&str>, cmd: &[&str]) -> Output {
    // What every container runtime provides: /dev/null.
    if !rootfs.join("dev/null").exists() {
        std::fs::create_dir_all(rootfs.join("dev")).unwrap();
        run(Command::new("mknod").args(["-m", "666"]).arg(rootfs.join("dev/null")).args(["c", "1", "3"]));
    }
    let m = manifest(layout);
    let config = blob_json(layout, m["config"]["digest"].as_str().unwrap());
    let mut c = Command::new("chroot");
    if let Some(u) = user {
        c.arg(format!("--userspec={u}"));
    }
    c.arg(rootfs).env_clear();
    for e in config["config"]["Env"].as_array().unwrap() {
        let (k, v) = e.as_str().unwrap().split_once('=').unwrap();
        c.env(k, v);
    }
    for part in config["config"]["Entrypoint"].as_array().into_iter().flatten() {
        c.arg(part.as_str().unwrap());
    }
    c.args(cmd).output().unwrap()
}

/// `skopeo inspect --tls-verify=false ARGS IMAGE` (IMAGE with its transport: `docker://...`, `oci:...`)
/// as JSON.
pub fn skopeo_json(args: &[&str], image: &str) -> Value {
    serde_json::from_str(&run(Command::new("skopeo").args(["inspect", "--tls-verify=false"]).args(args).arg(image))).unwrap()
}

/// The small example channel (`envlayer example-channel`) in `dir/chan`, written once.
pub fn example_channel(dir: &Path) -> PathBuf {
    if !dir.join("chan").is_dir() {
        assert!(envlayer(dir, &["example-channel", "chan"]).status.success());
    }
    dir.join("chan")
}

/// Writes an environment file.
pub fn env_file(dir: &Path, name: &str, channels: &[&Path], deps: &[&str]) -> PathBuf {
    let mut s = format!("name: {name}\nchannels:\n");
    for c in channels {
        s.push_str(&format!("  - {}\n", c.display()));
    }
    s.push_str("dependencies:\n");
    for d in deps {
        s.push_str(&format!("  - {d}\n"));
    }
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, s).unwrap();
    p
}

/// A service started by a registry-test script (registry, token server, containerd); everything it
/// started is killed when this is dropped, so no test leaves a process running.
pub struct Service {
    /// Its work folder.
    pub dir: PathBuf,
    /// What the script printed (a URL or a socket path).
    pub endpoint: String,
}

impl Service {
    /// Runs `registry-test/SCRIPT ARGS` with `env`; `dir` is the work folder the script writes `pids` to.
    pub fn start(script: &str, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Service {
        let mut cmd = Command::new("bash");
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("registry-test").join(script)).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let endpoint = run(&mut cmd).trim().to_string();
        Service { dir: dir.to_path_buf(), endpoint }
    }

    /// A registry in `mode` (plain, htpasswd, token, tls).
    pub fn registry(mode: &str, dir: &Path, env: &[(&str, &str)]) -> Service {
        Service::start("start-registry.sh", &[mode, dir.to_str().unwrap()], dir, env)
    }

    /// containerd allowed to pull over plain HTTP from `registries`.
    pub fn containerd(dir: &Path, registries: &[&str]) -> Service {
        let mut args = vec![dir.to_str().unwrap()];
        args.extend(registries);
        Service::start("start-containerd.sh", &args, dir, &[])
    }

    /// `host:port` of a registry.
    pub fn addr(&self) -> String {
        std::fs::read_to_string(self.dir.join("addr")).unwrap().trim().to_string()
    }

    /// The registry's log (its access log counts requests).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.dir.join("pids")) {
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
    }
}

/// Counts completed blob uploads (`PUT .../blobs/uploads/...` answered 201) in a registry's access log.
pub fn uploads_in_log(log: &str) -> usize {
    log.lines().filter(|l| l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/") && l.contains("\" 201 ")).count()
}

/// A docker config directory with `auths` for `registry`.
pub fn docker_config(dir: &Path, registry: &str, user: &str, password: &str) -> PathBuf {
    let d = dir.join("docker-config");
    std::fs::create_dir_all(&d).unwrap();
    let auth = envlayer::registry::auth::base64_encode(format!("{user}:{password}").as_bytes());
    std::fs::write(d.join("config.json"), format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#)).unwrap();
    d
}

/// Runs envlayer with extra environment variables; returns (success, stdout, stderr).
pub fn envlayer_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_envlayer"));
    cmd.args(args).current_dir(cwd).env_remove("SOURCE_DATE_EPOCH").env_remove("ENVLAYER_CACHE_DIR");
    cmd.env_remove("DOCKER_CONFIG").env_remove("REGISTRY_AUTH_FILE").env("HOME", cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run envlayer");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The pip test tools (uv, pypiserver) and the wheelhouse of real wheels from PyPI, made once per
/// checkout by registry-test/setup-pypi.sh under target/pypi-tools.
pub fn pypi_tools() -> PathBuf {
    static TOOLS: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    TOOLS
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("registry-test/setup-pypi.sh");
            PathBuf::from(run(Command::new("bash").arg(script)).trim())
        })
        .clone()
}

/// The uv that envlayer resolves pip requirements with in tests.
pub fn uv() -> String {
    pypi_tools().join("venv/bin/uv").display().to_string()
}

impl Service {
    /// pypiserver serving `wheels`; with `auth` (user, password) it asks for basic auth.
    pub fn pypi(dir: &Path, wheels: &Path, auth: Option<(&str, &str)>) -> Service {
        let tools = pypi_tools();
        let mut args = vec![tools.to_str().unwrap().to_string(), dir.to_str().unwrap().to_string(), wheels.to_str().unwrap().to_string()];
        if let Some((u, p)) = auth {
            args.push(u.to_string());
            args.push(p.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Service::start("start-pypi.sh", &args, dir, &[])
    }
}

/// A folder holding the named wheels of the wheelhouse (by file-name prefix).
pub fn wheels(dir: &Path, prefixes: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(pypi_tools().join("wheelhouse")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if prefixes.iter().any(|p| name.starts_with(p)) {
            std::fs::copy(e.path(), dir.join(&name)).unwrap();
        }
    }
    dir.to_path_buf()
}
