//! Running the `uv` binary: its environment (indexes and credentials through variables, never the
//! command line), its messages (credentials cut), its version, `uv build` for sdists, and the
//! metadata-only wheels that stand for conda's distributions.

use super::error::{ResolveError, MIN_UV};
use super::fetch::Credentials;
use super::spec::IndexOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use url::Url;

/// How to run uv.
#[derive(Debug, Clone)]
pub struct Uv {
    /// The program (`uv` on `PATH` unless told otherwise).
    pub program: PathBuf,
    /// uv's own cache (under envlayer's).
    pub cache_dir: PathBuf,
}

/// Indexes go through the environment, not the command line, where other users could read credentials;
/// nothing else of this process's environment reaches uv but what it needs to run and trust TLS.
pub(crate) fn uv_env(cmd: &mut tokio::process::Command, index: &IndexOptions, find_links: &[String], timeouts: crate::net::Timeouts) {
    cmd.env_clear();
    for var in [
        "PATH", "HOME", "NETRC", "SSL_CERT_FILE", "SSL_CERT_DIR", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
        "http_proxy", "https_proxy", "all_proxy", "no_proxy",
    ] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    // uv's own read timeout follows envlayer's idle timeout.
    cmd.env("UV_HTTP_TIMEOUT", timeouts.idle.as_secs().max(1).to_string());
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    if let Some(u) = &index.index_url {
        cmd.env("UV_INDEX_URL", u.as_str());
    }
    if !index.extra_index_urls.is_empty() {
        cmd.env("UV_EXTRA_INDEX_URL", index.extra_index_urls.iter().map(Url::as_str).collect::<Vec<_>>().join(" "));
    }
    if !find_links.is_empty() {
        cmd.env("UV_FIND_LINKS", find_links.join(","));
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
}

pub(crate) async fn run(uv: &Uv, mut cmd: tokio::process::Command) -> Result<std::process::Output, ResolveError> {
    use tokio::io::AsyncReadExt as _;
    let shown = || uv.program.display().to_string();
    // Its own process group: on a timeout, uv and whatever it started (a build backend) are killed.
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|source| ResolveError::NoUv { uv: shown(), source })?;
    let mut stderr = child.stderr.take();
    // stderr is drained as it comes (uv never blocks on a full pipe), keeping the first 64 KiB.
    let reader = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut chunk = vec![0u8; 8192];
        while let Some(err) = stderr.as_mut() {
            match err.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => kept.extend_from_slice(&chunk[..n.min((64 << 10) - kept.len().min(64 << 10))]),
            }
        }
        kept
    });
    let pid = child.id();
    let kill_group = || {
        if let Some(pgid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    };
    let status = match tokio::time::timeout(UV_TIMEOUT, child.wait()).await {
        Ok(status) => status.map_err(|source| ResolveError::NoUv { uv: shown(), source })?,
        Err(_) => {
            kill_group();
            let _ = child.wait().await;
            return Err(ResolveError::TimedOut { seconds: UV_TIMEOUT.as_secs() });
        }
    };
    // Nothing uv started outlives it.
    kill_group();
    let stderr = reader.await.unwrap_or_default();
    Ok(std::process::Output { status, stdout: Vec::new(), stderr })
}

/// The longest a uv run (a resolve, or building one sdist) may take.
pub const UV_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// uv's error output: at most 64 KiB, without its `error: ` prefix, and with credentials cut.
pub(crate) fn uv_message(stderr: &[u8], credentials: &Credentials) -> String {
    let message = String::from_utf8_lossy(&stderr[..stderr.len().min(64 << 10)]);
    let message = message.trim().strip_prefix("error: ").unwrap_or(message.trim());
    credentials.scrub(message)
}

/// Builds the sdist at `sdist` into a wheel in `out` with `python` (the environment's own interpreter),
/// in uv's isolated build environment (build requirements come from the indexes); returns the wheel.
pub async fn build_wheel(
    uv: &Uv,
    python: &Path,
    sdist: &Path,
    out: &Path,
    index: &IndexOptions,
    credentials: &Credentials,
    timeouts: crate::net::Timeouts,
) -> Result<PathBuf, ResolveError> {
    check_version(uv).await?;
    let name = sdist.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&uv.program);
    cmd.args(["build", "--quiet", "--color", "never", "--no-config", "--wheel"])
        .arg("--python")
        .arg(python)
        .arg("--cache-dir")
        .arg(&uv.cache_dir)
        .arg("--out-dir")
        .arg(out)
        .arg(sdist);
    let find_links: Vec<String> = index.find_links.iter().map(|u| u.to_string()).collect();
    uv_env(&mut cmd, index, &find_links, timeouts);
    let output = run(uv, cmd).await?;
    if !output.status.success() {
        return Err(ResolveError::Build { sdist: name, message: uv_message(&output.stderr, credentials) });
    }
    let wheels: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|source| ResolveError::Io { path: out.to_path_buf(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).and_then(super::split_wheel_name).is_some())
        .collect();
    match wheels.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(ResolveError::Build { sdist: name, message: format!("uv left {} wheels in {}, not one", wheels.len(), out.display()) }),
    }
}

/// A wheel with only metadata, standing for a distribution a conda package installs.
pub(crate) fn write_stub_wheel(dir: &Path, name: &str, version: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let escaped = name.replace('-', "_");
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '!'));
    if !ok(&escaped) || !ok(version) {
        return Ok(()); // a name or version no wheel could carry: then it is simply not offered
    }
    let info = format!("{escaped}-{version}.dist-info");
    let files = [
        (format!("{info}/METADATA"), format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")),
        (format!("{info}/WHEEL"), "Wheel-Version: 1.0\nGenerator: envlayer\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_string()),
        (format!("{info}/RECORD"), String::new()),
    ];
    let file = std::fs::File::create(dir.join(format!("{escaped}-{version}-py3-none-any.whl")))?;
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (path, text) in files {
        zip.start_file(path, options).map_err(std::io::Error::other)?;
        zip.write_all(text.as_bytes())?;
    }
    zip.finish().map_err(std::io::Error::other)?;
    Ok(())
}

pub(crate) async fn check_version(uv: &Uv) -> Result<(), ResolveError> {
    let shown = uv.program.display().to_string();
    let version = tokio::process::Command::new(&uv.program).arg("--version").stdin(Stdio::null()).kill_on_drop(true).output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), version)
        .await
        .map_err(|_| ResolveError::NoUv { uv: shown.clone(), source: std::io::Error::new(std::io::ErrorKind::TimedOut, "uv --version did not answer in 30 s") })?
        .map_err(|source| ResolveError::NoUv { uv: shown.clone(), source })?;
    let text = String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(4096)]);
    let version = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let parts: Vec<u64> = version.split('.').take(2).filter_map(|p| p.parse().ok()).collect();
    if parts.len() < 2 || (parts[0], parts[1]) < MIN_UV {
        return Err(ResolveError::OldUv { uv: shown, version });
    }
    Ok(())
}

