//! Resolving the pip part for the image's target (python version, platform tags, glibc), never the build
//! machine's, with uv: envlayer runs the `uv` binary (`uv pip compile --format pylock.toml`) rather than
//! linking uv's resolver crates, which uv does not publish as a stable library and which would pin their
//! own copies of reqwest and tokio against rattler's. Conda packages that provide a distribution
//! satisfy requirements for it (as pixi does): they are pinned as constraints and not emitted.

use super::spec::{IndexOptions, PipSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use url::Url;

/// The oldest uv whose `pip compile` writes pylock.toml with every option used here.
pub const MIN_UV: (u64, u64) = (0, 9);

/// A resolved wheel: what the lock records and the build installs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dist {
    /// The normalized name.
    pub name: String,
    /// The version.
    pub version: String,
    /// The wheel's URL, without credentials.
    pub url: Url,
    /// Its sha256 (lowercase hex).
    pub sha256: String,
    /// Its size, when the index gave it.
    pub size: Option<u64>,
    /// The URL and sha256 are a source distribution's, which envlayer builds into a wheel (kept in the
    /// cache under the sdist's sha256).
    #[serde(default)]
    pub sdist: bool,
}

impl Dist {
    /// The wheel's (or sdist's) file name: the URL's last segment, checked.
    pub fn file_name(&self) -> Option<&str> {
        let name = self.url.path_segments()?.next_back()?;
        if self.sdist {
            let ok = (name.ends_with(".tar.gz") || name.ends_with(".zip"))
                && !name.starts_with('.')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+' | '!'));
            return ok.then_some(name);
        }
        super::split_wheel_name(name).map(|_| name)
    }

    /// The lock entry: name, version, URL (without credentials) and sha256.
    pub fn to_lock(&self) -> Result<rattler_lock::PypiPackageData, String> {
        use std::str::FromStr as _;
        let name = pep508_rs::PackageName::from_str(&self.name).map_err(|e| format!("pip package {}: {e}", self.name))?;
        let version = pep440_rs::Version::from_str(&self.version).map_err(|e| format!("pip package {} version {}: {e}", self.name, self.version))?;
        let sha = rattler_digest::parse_digest_from_hex::<rattler_digest::Sha256>(&self.sha256).ok_or_else(|| format!("pip package {}: bad sha256", self.name))?;
        Ok(rattler_lock::PypiPackageData::Distribution(Box::new(rattler_lock::PypiDistributionData {
            name,
            version,
            location: rattler_lock::Verbatim::new(rattler_lock::UrlOrPath::Url(super::redact(&self.url))),
            index_url: None,
            hash: Some(rattler_lock::PackageHashes::Sha256(sha)),
            requires_dist: Vec::new(),
            requires_python: None,
        })))
    }

    /// A wheel from a lock entry; the entry must name a `.whl` URL and its sha256.
    pub fn from_lock(p: &rattler_lock::PypiPackageData) -> Result<Self, String> {
        let rattler_lock::PypiPackageData::Distribution(d) = p else {
            return Err(format!("pip package {}: a source tree; envlayer installs wheels", p.name()));
        };
        let url = d.location.inner().as_url().cloned().ok_or_else(|| format!("pip package {}: not a URL", d.name))?;
        let sha256 = d.hash.as_ref().and_then(|h| h.sha256()).map(|h| crate::fetch::hex(h)).ok_or_else(|| format!("pip package {}: no sha256", d.name))?;
        let sdist = url.path().ends_with(".tar.gz") || url.path().ends_with(".zip");
        let dist = Self { name: super::normalize(d.name.as_ref()), version: d.version.to_string(), url: super::redact(&url), sha256, size: None, sdist };
        dist.file_name().ok_or_else(|| format!("pip package {}: {} is not a wheel file name", d.name, crate::net::escape(url.path())))?;
        Ok(dist)
    }

    /// `pypi:<name>-<version>`, as layers are annotated.
    pub fn label(&self) -> String {
        format!("pypi:{}-{}", self.name, self.version)
    }
}

/// The target the distributions are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The environment's python, `(3, 11)`.
    pub python: (u64, u64),
    /// The conda platform.
    pub platform: rattler_conda_types::Subdir,
    /// The glibc the image promises (`__glibc`), `(2, 28)`.
    pub glibc: (u64, u64),
}

impl Target {
    /// uv's `--python-platform`: the newest manylinux tag uv knows that the target's glibc covers.
    pub fn uv_platform(&self) -> Result<String, ResolveError> {
        let arch = match self.platform.as_str() {
            "linux-64" => "x86_64",
            "linux-aarch64" => "aarch64",
            other => return Err(ResolveError::Platform { platform: other.to_string() }),
        };
        let known = [17u64, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40];
        let minor = known.iter().rev().find(|&&m| self.glibc.0 > 2 || m <= self.glibc.1).ok_or(ResolveError::Glibc { glibc: self.glibc })?;
        Ok(format!("{arch}-manylinux_2_{minor}"))
    }
}

/// Why the pip part could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No uv to run.
    #[error("the environment has pip requirements, which envlayer resolves with uv, and {uv} cannot be run; install uv (pip install uv, or see https://docs.astral.sh/uv/) or point ENVLAYER_UV at it")]
    NoUv {
        /// The program tried.
        uv: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// uv is older than envlayer needs.
    #[error("{uv} is uv {version}; envlayer needs uv {}.{} or newer", MIN_UV.0, MIN_UV.1)]
    OldUv {
        /// The program.
        uv: String,
        /// What it said its version is.
        version: String,
    },
    /// uv could not resolve the requirements; its message says why.
    #[error("cannot resolve the pip requirements for python {}.{} on {platform}:\n{message}", .python.0, .python.1)]
    Unsolvable {
        /// The target python.
        python: (u64, u64),
        /// uv's `--python-platform`.
        platform: String,
        /// uv's message, with credentials cut.
        message: String,
    },
    /// An index refused its credentials (found when uv could not resolve, by asking each index with
    /// credentials once).
    #[error("{index} refused the credentials given for it (HTTP {status}); check the user and password in its URL, ~/.netrc or PIP_INDEX_URL / PIP_EXTRA_INDEX_URL")]
    Denied {
        /// The index, without credentials.
        index: String,
        /// 401 or 403.
        status: u16,
    },
    /// A target envlayer cannot resolve pip packages for.
    #[error("platform {platform}: envlayer installs pip packages for linux-64 and linux-aarch64 only")]
    Platform {
        /// The conda platform.
        platform: String,
    },
    /// A glibc older than any manylinux tag.
    #[error("__glibc {}.{} is older than manylinux_2_17, the oldest platform tag envlayer resolves for", .glibc.0, .glibc.1)]
    Glibc {
        /// The glibc.
        glibc: (u64, u64),
    },
    /// A distribution with no wheel for the target.
    #[error("{name} {version} has no wheel for python {}.{} on {platform}, only a source distribution, and this machine cannot run the environment's python to build it (build on a {platform} machine, ask the index for a wheel, or install it from a conda package)", .python.0, .python.1)]
    NoWheel {
        /// The distribution.
        name: String,
        /// Its version.
        version: String,
        /// The target python.
        python: (u64, u64),
        /// uv's `--python-platform`.
        platform: String,
    },
    /// Some distributions have only sdists, which need an interpreter to build (see
    /// [`ResolveInput::builder`]); uv's message names them.
    #[error("cannot resolve the pip requirements without building source distributions:\n{message}")]
    NeedsBuild {
        /// uv's message, with credentials cut.
        message: String,
    },
    /// Building a source distribution failed.
    #[error("cannot build a wheel from {sdist}:\n{message}")]
    Build {
        /// The sdist's file name.
        sdist: String,
        /// uv's output, with credentials cut.
        message: String,
    },
    /// uv's output was not the pylock.toml envlayer reads.
    #[error("uv wrote a pylock.toml envlayer cannot read: {reason}")]
    Output {
        /// What is wrong.
        reason: String,
    },
    /// A hashed requirement resolved to a wheel with another hash, or a distribution has no hash given.
    #[error("{what}")]
    Hash {
        /// Which distribution and what is wrong.
        what: String,
    },
    /// A scratch file could not be written or read.
    #[error("cannot write or read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How to run uv.
#[derive(Debug, Clone)]
pub struct Uv {
    /// The program (`uv` on `PATH` unless told otherwise).
    pub program: PathBuf,
    /// uv's own cache (under envlayer's).
    pub cache_dir: PathBuf,
}

/// What to resolve.
pub struct ResolveInput<'a> {
    /// The requirements.
    pub spec: &'a PipSpec,
    /// The indexes (the spec's, the environment's and the command line's, merged), credentials included.
    pub index: &'a IndexOptions,
    /// The target.
    pub target: &'a Target,
    /// Distributions the conda packages provide: normalized name → version.
    pub provided: &'a BTreeMap<String, String>,
    /// A folder for the input and output files.
    pub scratch: &'a Path,
    /// The indexes' credentials (from their URLs and `.netrc`).
    pub credentials: &'a super::fetch::Credentials,
    /// Timeouts for asking an index directly.
    pub timeouts: crate::net::Timeouts,
    /// The environment's python, runnable here, to build sdists with; without it sdists are refused.
    pub builder: Option<&'a Path>,
}

/// Resolves the requirements to one wheel per distribution, in name order; the conda-provided ones are
/// left out.
pub async fn resolve(uv: &Uv, input: &ResolveInput<'_>) -> Result<Vec<Dist>, ResolveError> {
    check_version(uv).await?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ResolveError::Io { path, source }
    };
    let platform = input.target.uv_platform()?;
    let reqs = input.scratch.join("requirements.in");
    let text: String = input.spec.requirements.iter().map(|r| format!("{}\n", r.text)).collect();
    std::fs::write(&reqs, text).map_err(io(&reqs))?;
    let constraints = input.scratch.join("constraints.txt");
    let mut ctext: String = input.spec.constraints.iter().map(|r| format!("{}\n", r.text)).collect();
    for (name, version) in input.provided {
        ctext.push_str(&format!("{name}=={version}\n"));
    }
    std::fs::write(&constraints, ctext).map_err(io(&constraints))?;
    // Conda's distributions may be versions no index has: uv sees them as metadata-only wheels in a
    // folder of their own, pinned by the constraints and never emitted.
    let provided_dir = input.scratch.join("provided");
    std::fs::create_dir_all(&provided_dir).map_err(io(&provided_dir))?;
    for (name, version) in input.provided {
        write_stub_wheel(&provided_dir, name, version).map_err(io(&provided_dir))?;
    }
    let out = input.scratch.join("pylock.toml");
    let (py_major, py_minor) = input.target.python;
    let mut cmd = tokio::process::Command::new(&uv.program);
    cmd.args(["pip", "compile", "--quiet", "--color", "never", "--no-config", "--no-header", "--no-annotate"])
        .args(["--format", "pylock.toml", "--python-platform", &platform])
        .arg("--python-version")
        .arg(format!("{py_major}.{py_minor}"))
        .arg("--cache-dir")
        .arg(&uv.cache_dir)
        .arg("-c")
        .arg(&constraints)
        .arg("-o")
        .arg(&out)
        .arg(&reqs);
    for name in input.provided.keys() {
        cmd.arg("--no-emit-package").arg(name);
    }
    // Without an interpreter of the target that runs here, uv may not build anything (it would build
    // with whatever python it finds on this machine).
    match input.builder {
        Some(python) => cmd.arg("--python").arg(python),
        None => cmd.arg("--no-build"),
    };
    let mut find_links: Vec<String> = input.index.find_links.iter().map(|u| u.to_string()).collect();
    if !input.provided.is_empty() {
        find_links.push(provided_dir.display().to_string());
    }
    uv_env(&mut cmd, input.index, &find_links, input.timeouts);
    let output = run(uv, cmd).await?;
    if !output.status.success() {
        let message = uv_message(&output.stderr, input.index);
        if message.contains("building from source is disabled") {
            return Err(ResolveError::NeedsBuild { message });
        }
        // uv may report an index that refuses its credentials as a package that is not there: ask the
        // indexes with credentials directly, to say which one it is.
        if let Some((index, status)) = super::fetch::refused_index(input.index, input.credentials, input.timeouts).await {
            return Err(ResolveError::Denied { index, status });
        }
        return Err(ResolveError::Unsolvable { python: input.target.python, platform, message });
    }
    let text = std::fs::read_to_string(&out).map_err(io(&out))?;
    let dists: Vec<Dist> = read_pylock(&text, input.scratch, input.target, &platform, input.builder.is_some())?.into_iter().filter(|d| !input.provided.contains_key(&d.name)).collect();
    check_hashes(input.spec, &dists)?;
    Ok(dists)
}

/// Indexes go through the environment, not the command line, where other users could read credentials;
/// nothing else of this process's environment reaches uv but what it needs to run and trust TLS.
fn uv_env(cmd: &mut tokio::process::Command, index: &IndexOptions, find_links: &[String], timeouts: crate::net::Timeouts) {
    cmd.env_clear();
    for var in ["PATH", "HOME", "NETRC", "SSL_CERT_FILE", "SSL_CERT_DIR", "TMPDIR"] {
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

async fn run(uv: &Uv, mut cmd: tokio::process::Command) -> Result<std::process::Output, ResolveError> {
    let shown = || uv.program.display().to_string();
    let child = cmd.spawn().map_err(|source| ResolveError::NoUv { uv: shown(), source })?;
    child.wait_with_output().await.map_err(|source| ResolveError::NoUv { uv: shown(), source })
}

/// uv's error output: at most 64 KiB, without its `error: ` prefix, and with credentials cut.
fn uv_message(stderr: &[u8], index: &IndexOptions) -> String {
    let message = String::from_utf8_lossy(&stderr[..stderr.len().min(64 << 10)]);
    let message = message.trim().strip_prefix("error: ").unwrap_or(message.trim()).to_string();
    cut_credentials(&message, index)
}

/// Builds the sdist at `sdist` into a wheel in `out` with `python` (the environment's own interpreter),
/// in uv's isolated build environment (build requirements come from the indexes); returns the wheel.
pub async fn build_wheel(uv: &Uv, python: &Path, sdist: &Path, out: &Path, index: &IndexOptions, timeouts: crate::net::Timeouts) -> Result<PathBuf, ResolveError> {
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
        return Err(ResolveError::Build { sdist: name, message: uv_message(&output.stderr, index) });
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
fn write_stub_wheel(dir: &Path, name: &str, version: &str) -> std::io::Result<()> {
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

async fn check_version(uv: &Uv) -> Result<(), ResolveError> {
    let shown = uv.program.display().to_string();
    let out = tokio::process::Command::new(&uv.program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| ResolveError::NoUv { uv: shown.clone(), source })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let parts: Vec<u64> = version.split('.').take(2).filter_map(|p| p.parse().ok()).collect();
    if parts.len() < 2 || (parts[0], parts[1]) < MIN_UV {
        return Err(ResolveError::OldUv { uv: shown, version });
    }
    Ok(())
}

/// uv's message with every index's `user:password@` removed (uv redacts most, but its message is shown
/// as it is, so envlayer does not rely on that).
fn cut_credentials(message: &str, index: &IndexOptions) -> String {
    let mut m = message.to_string();
    for u in index.urls() {
        if let Some(p) = u.password() {
            m = m.replace(p, "****");
        }
    }
    m
}

/// The best wheel of each `[[packages]]` entry of uv's pylock.toml for the target.
fn read_pylock(text: &str, base: &Path, target: &Target, platform: &str, allow_sdist: bool) -> Result<Vec<Dist>, ResolveError> {
    let bad = |reason: String| ResolveError::Output { reason };
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| bad(e.to_string()))?;
    let packages = match doc.get("packages") {
        Some(p) => p.as_array_of_tables().ok_or_else(|| bad("packages is not an array of tables".into()))?.iter().collect::<Vec<_>>(),
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for p in packages {
        let name = p.get("name").and_then(|v| v.as_str()).ok_or_else(|| bad("a package without a name".into()))?;
        let version = p.get("version").and_then(|v| v.as_str()).ok_or_else(|| bad(format!("{name} has no version")))?;
        let mut best: Option<((u32, u32), Dist)> = None;
        for w in p.get("wheels").and_then(|w| w.as_array()).into_iter().flatten() {
            let Some(w) = w.as_inline_table() else { continue };
            // `url` for index files; `path` (relative to the lock's folder) for --find-links folders.
            let url = match (w.get("url").and_then(|u| u.as_str()), w.get("path").and_then(|u| u.as_str())) {
                (Some(u), _) => Url::parse(u).ok(),
                (None, Some(p)) => Url::from_file_path(std::path::absolute(base.join(p)).unwrap_or_default()).ok(),
                _ => None,
            };
            let Some(url) = url else { continue };
            let Some(sha256) = w.get("hashes").and_then(|h| h.as_inline_table()).and_then(|h| h.get("sha256")).and_then(|s| s.as_str()) else {
                continue;
            };
            if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(format!("{name}: a wheel's sha256 {:?} is not a sha256", crate::net::escape(sha256))));
            }
            let size = w.get("size").and_then(|s| s.as_integer()).and_then(|s| u64::try_from(s).ok());
            let dist = Dist { name: super::normalize(name), version: version.to_string(), url: super::redact(&url), sha256: sha256.to_ascii_lowercase(), size, sdist: false };
            let Some(file) = dist.file_name() else { continue };
            let Some(rank) = rank(file, target.python) else { continue };
            if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                best = Some((rank, dist));
            }
        }
        let sdist = || {
            let t = p.get("sdist")?.as_inline_table()?;
            let url = Url::parse(t.get("url")?.as_str()?).ok()?;
            let sha256 = t.get("hashes")?.as_inline_table()?.get("sha256")?.as_str()?;
            let ok = sha256.len() == 64 && sha256.chars().all(|c| c.is_ascii_hexdigit());
            let size = t.get("size").and_then(|s| s.as_integer()).and_then(|s| u64::try_from(s).ok());
            let d = Dist { name: super::normalize(name), version: version.to_string(), url: super::redact(&url), sha256: sha256.to_ascii_lowercase(), size, sdist: true };
            (ok && d.file_name().is_some()).then_some(d)
        };
        match best {
            Some((_, d)) => out.push(d),
            None => match sdist().filter(|_| allow_sdist) {
                Some(d) => out.push(d),
                None => return Err(ResolveError::NoWheel { name: name.to_string(), version: version.to_string(), python: target.python, platform: platform.to_string() }),
            },
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// How good a wheel is for CPython `python` (higher is better); `None` if it is not for it at all. uv
/// listed only wheels it found compatible; among them, the interpreter-specific build wins over the
/// stable ABI, which wins over pure python; then the platform-specific over `any`.
fn rank(file: &str, python: (u64, u64)) -> Option<(u32, u32)> {
    let stem = file.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    let (plat, abi, py) = (parts.first()?, parts.get(1)?, parts.get(2)?);
    let cp = format!("cp{}{}", python.0, python.1);
    let abi_rank = abi
        .split('.')
        .map(|a| if a == cp { 3 } else if a == "abi3" { 2 } else if a == "none" { 1 } else { 0 })
        .max()?;
    let py_ok = py.split('.').any(|t| t == cp || t == "py3" || t == format!("py{}{}", python.0, python.1) || (t.starts_with("cp3") && *abi == "abi3"));
    if abi_rank == 0 || !py_ok {
        return None;
    }
    let plat_rank = if plat.split('.').all(|p| p == "any") { 0 } else { 1 };
    Some((abi_rank, plat_rank))
}

/// In hash-checking mode every distribution must be one of the hashed requirements, resolved to a wheel
/// with one of its hashes (as `pip install --require-hashes` checks).
fn check_hashes(spec: &PipSpec, dists: &[Dist]) -> Result<(), ResolveError> {
    if !spec.require_hashes() {
        return Ok(());
    }
    let hashes = spec.hashes();
    for d in dists {
        match hashes.get(&d.name) {
            None => {
                return Err(ResolveError::Hash {
                    what: format!("{} {} is needed (a dependency) but has no requirement with --hash; with hashes, every distribution must be listed and hashed", d.name, d.version),
                })
            }
            Some(allowed) if !allowed.contains(&d.sha256) => {
                return Err(ResolveError::Hash { what: format!("{} {}: the wheel's sha256 {} is not among the --hash values given", d.name, d.version, d.sha256) })
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheels_rank_specific_over_abi3_over_pure() {
        let py = (3, 11);
        let a = rank("x-1-cp311-cp311-manylinux_2_17_x86_64.whl", py).unwrap();
        let b = rank("x-1-cp37-abi3-manylinux_2_17_x86_64.whl", py).unwrap();
        let c = rank("x-1-py3-none-any.whl", py).unwrap();
        assert!(a > b && b > c);
        assert_eq!(rank("x-1-cp312-cp312-manylinux_2_17_x86_64.whl", py), None);
    }

    #[test]
    fn platform_tags_follow_glibc() {
        let t = |glibc| Target { python: (3, 11), platform: rattler_conda_types::Subdir::Linux64, glibc };
        assert_eq!(t((2, 17)).uv_platform().unwrap(), "x86_64-manylinux_2_17");
        assert_eq!(t((2, 30)).uv_platform().unwrap(), "x86_64-manylinux_2_28");
        assert_eq!(t((2, 39)).uv_platform().unwrap(), "x86_64-manylinux_2_39");
        assert!(t((2, 12)).uv_platform().is_err());
    }

    #[test]
    fn pylock_gives_one_wheel_each_without_credentials() {
        let text = r#"
lock-version = "1.0"
[[packages]]
name = "Charset_Normalizer"
version = "3.5.3"
wheels = [
  { url = "https://u:p@h/c-3.5.3-py3-none-any.whl", size = 1, hashes = { sha256 = "96e268b0cbda016ac519513294fcd17032264085b600abaac58b93049477e132" } },
  { url = "https://h/charset_normalizer-3.5.3-cp311-cp311-manylinux_2_28_x86_64.whl", hashes = { sha256 = "2A6F937E0B70133D1F826D0A253331B6FE1A4C874808CC12E16F2FB8177042F4" } },
]
[[packages]]
name = "only-sdist"
version = "1"
sdist = { url = "https://h/only-sdist-1.tar.gz", hashes = { sha256 = "00" } }
"#;
        let t = Target { python: (3, 11), platform: rattler_conda_types::Subdir::Linux64, glibc: (2, 28) };
        let e = read_pylock(text, Path::new("/"), &t, "x86_64-manylinux_2_28", false).unwrap_err().to_string();
        assert!(e.contains("only-sdist") && e.contains("source distribution"), "{e}");
        let first = text.split("[[packages]]\nname = \"only-sdist\"").next().unwrap();
        let d = read_pylock(first, Path::new("/"), &t, "p", false).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].name, "charset-normalizer");
        assert!(d[0].url.as_str().ends_with("manylinux_2_28_x86_64.whl"));
        assert_eq!(d[0].sha256, "2a6f937e0b70133d1f826d0a253331b6fe1a4c874808cc12e16f2fb8177042f4");
    }
}
