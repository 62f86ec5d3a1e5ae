//! Runtime-install images: the per-environment opt-out from baked layers. The image carries the base,
//! envlayer's own binary as the installer, and the environment's lock; `envlayer runtime -- CMD` (the
//! image's entrypoint) installs the locked packages from their channels at the first start, marks the
//! environment done, then runs CMD. Later starts find the mark and run CMD at once.

use std::path::{Path, PathBuf};

/// Where the installer, lock and settings live in the image.
pub const RUNTIME_DIR: &str = "/opt/envlayer";
/// The file that marks an environment as fully installed (written last).
pub const DONE_MARK: &str = "conda-meta/.envlayer-installed";

/// The entrypoint of runtime-install images.
pub fn entrypoint() -> Vec<String> {
    vec![format!("{RUNTIME_DIR}/bin/envlayer"), "runtime".into(), "--".into()]
}

/// Writes the runtime folder: `bin/envlayer`, `env.lock`, `env.json`.
pub fn write_runtime_dir(dir: &Path, installer: &Path, lock: &str, name: &str, prefix: &str, packages: &[String]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::copy(installer, dir.join("bin/envlayer"))?;
    std::fs::set_permissions(dir.join("bin/envlayer"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(dir.join("env.lock"), lock)?;
    let settings = serde_json::json!({"name": name, "prefix": prefix, "runtime_packages": packages});
    std::fs::write(dir.join("env.json"), crate::image::canonical_json(&settings))
}

/// Why a runtime install failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image's runtime folder is missing or unreadable.
    #[error("{path}: {reason}")]
    Setup {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A package's link script failed; it is not marked as done, so the next start tries again.
    #[error("the {kind} script of {package} failed ({status}); the environment is not marked as installed\n--- output of {script} ---\n{output}")]
    Script {
        /// The package.
        package: String,
        /// pre-link or post-link.
        kind: String,
        /// The script's path in the prefix.
        script: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The prefix cannot be written by this user (or the file system is read-only).
    #[error("cannot install environment {name} at the container's start: {prefix} is not writable here ({why}). Run the container as a user who can write {prefix} (or as root), or mount a writable volume at {prefix} and fill it with `envlayer runtime --install-only` in an init container; or build the image with the packages baked in (an opt-out image: without --runtime-install / `install: runtime`; packages with link scripts: --link-scripts ignore)")]
    NotWritable {
        /// The environment.
        name: String,
        /// Its prefix.
        prefix: String,
        /// The uid, or that the file system is read-only.
        why: String,
    },
    /// A link script needs bash and the image has none.
    #[error("the {kind} script of {package} needs bash, and this image has none on PATH: build on a base image with bash, or build with --link-scripts ignore to bake {package} without running it")]
    NoBash {
        /// The package.
        package: String,
        /// pre-link or post-link.
        kind: String,
    },
    /// Installing the packages failed; nothing was marked as done.
    #[error("installing environment {name} into {prefix} failed")]
    Install {
        /// The environment.
        name: String,
        /// Its prefix.
        prefix: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Installs the environment described in `runtime_dir` unless it is marked done. Returns whether it
/// installed anything.
pub async fn ensure_installed(runtime_dir: &Path, reporter: &dyn crate::Reporter) -> Result<bool, RuntimeError> {
    let setup = |path: &Path, reason: String| RuntimeError::Setup { path: path.to_path_buf(), reason };
    let json_path = runtime_dir.join("env.json");
    let settings: serde_json::Value = std::fs::read(&json_path)
        .map_err(|e| setup(&json_path, e.to_string()))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| setup(&json_path, e.to_string())))?;
    let name = settings["name"].as_str().unwrap_or_default().to_string();
    let prefix = PathBuf::from(settings["prefix"].as_str().unwrap_or_default());
    if prefix.join(DONE_MARK).is_file() {
        return Ok(false);
    }
    let lock = runtime_dir.join("env.lock");
    let platform = rattler_conda_types::Subdir::current().unwrap_or(rattler_conda_types::Subdir::Linux64);
    let all_records = crate::lockfile::read_lock(&lock, platform).map_err(|e| setup(&lock, e.to_string()))?.records;
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| RuntimeError::Install {
        name: name.clone(),
        prefix: prefix.display().to_string(),
        source,
    };
    check_writable(&prefix).map_err(|why| RuntimeError::NotWritable { name: name.clone(), prefix: prefix.display().to_string(), why })?;
    reporter.info(&format!("installing {name} into {} ...", prefix.display()));
    // The image may have no CA certificates (a slim base): then only http channels can work, so say so
    // (when something is to be downloaded over https) instead of failing on the first request.
    let downloads = all_records.iter().any(|r| r.url.scheme() == "https");
    let client = match crate::net::client_builder(crate::net::Timeouts::default()).build() {
        Ok(c) => c,
        Err(_) => {
            if downloads {
                reporter.warn("no CA certificates in this image; https channels will fail (install ca-certificates in the base)");
            }
            crate::net::client_builder(crate::net::Timeouts::default())
                .tls_certs_only(Vec::new())
                .build()
                .map_err(|e| fail(Box::new(e)))?
        }
    };
    // The packages' cache: a fresh folder (random name, this user's alone) inside the prefix, which is
    // writable (checked above) even on a read-only root with a volume at the prefix; removed afterwards,
    // whatever happens.
    std::fs::create_dir_all(&prefix).map_err(|e| fail(Box::new(e)))?;
    let cache = tempfile::Builder::new().prefix(".envlayer-pkgs-").tempdir_in(&prefix).map_err(|e| fail(Box::new(e)))?;
    let cache_dir = cache.path().to_path_buf();
    rattler::install::Installer::new()
        .with_download_client(client)
        .with_target_platform(platform)
        .with_execute_link_scripts(false)
        .with_package_cache(rattler::package_cache::PackageCache::new(&cache_dir))
        .install(&prefix, all_records)
        .await
        .map_err(|e| fail(Box::new(e)))?;
    // Link scripts of the packages installed now, in dependency order, each marked when it succeeded.
    let runtime_names: Vec<String> =
        settings["runtime_packages"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    let records = crate::lockfile::read_lock(&lock, platform).map_err(|e| setup(&lock, e.to_string()))?.records;
    for record in records.iter().filter(|r| runtime_names.iter().any(|n| n == r.package_record.name.as_normalized())) {
        run_link_scripts(&prefix, record, reporter)?;
    }
    // The mark goes last: an interrupted install is redone at the next start.
    let mark = prefix.join(DONE_MARK);
    std::fs::write(&mark, b"").map_err(|e| fail(Box::new(e)))?;
    drop(cache);
    reporter.info(&format!("environment {name} ready"));
    Ok(true)
}

/// Whether this process can create files in `dir` (or, when it does not exist yet, in its nearest
/// existing parent); the reason when not.
fn check_writable(dir: &Path) -> Result<(), String> {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    match rustix::fs::access(at, rustix::fs::Access::WRITE_OK) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::ROFS) => Err(format!("the file system holding {} is read-only", at.display())),
        Err(e) => Err(format!("uid {} cannot write {}: {e}", rustix::process::getuid().as_raw(), at.display())),
    }
}

/// bash on PATH (link scripts are bash scripts, and they are started through PATH).
fn find_bash() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("bash")).find(|p| p.is_file())
}

/// Runs a package's pre-link and post-link scripts in the environment (activated, as conda runs them),
/// with `PREFIX`, `PKG_NAME`, `PKG_VERSION` and `PKG_BUILDNUM`; shows what they leave in
/// `$PREFIX/.messages.txt`; marks the package done so a later start does not run them again.
/// (Pre-link scripts run after the files are in place: rattler links packages without them.)
fn run_link_scripts(prefix: &Path, record: &rattler_conda_types::RepoDataRecord, reporter: &dyn crate::Reporter) -> Result<(), RuntimeError> {
    let r = &record.package_record;
    let name = r.name.as_normalized().to_string();
    let mark = prefix.join("conda-meta").join(format!(".envlayer-linked-{name}"));
    if mark.is_file() {
        return Ok(());
    }
    let env: std::collections::HashMap<String, String> = [
        ("PREFIX".to_string(), prefix.display().to_string()),
        ("PKG_NAME".to_string(), name.clone()),
        ("PKG_VERSION".to_string(), r.version.to_string()),
        ("PKG_BUILDNUM".to_string(), r.build_number.to_string()),
    ]
    .into_iter()
    .collect();
    for kind in ["pre-link", "post-link"] {
        let script = prefix.join("bin").join(format!(".{name}-{kind}.sh"));
        if !script.is_file() {
            continue;
        }
        if find_bash().is_none() {
            return Err(RuntimeError::NoBash { package: name.clone(), kind: kind.into() });
        }
        reporter.info(&format!("running the {kind} script of {name}"));
        let shell = rattler_shell::shell::ShellEnum::Bash(rattler_shell::shell::Bash::default());
        let out = rattler_shell::run_in_environment(prefix, &script, shell, &env).map_err(|e| RuntimeError::Script {
            package: name.clone(),
            kind: kind.into(),
            script: script.display().to_string(),
            status: "could not start".into(),
            output: e.to_string(),
        })?;
        show_messages(prefix, &name, reporter);
        if !out.status.success() {
            return Err(RuntimeError::Script {
                package: name.clone(),
                kind: kind.into(),
                script: script.display().to_string(),
                status: out.status.to_string(),
                output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            });
        }
    }
    std::fs::write(&mark, b"").map_err(|e| RuntimeError::Setup { path: mark.clone(), reason: e.to_string() })
}

fn show_messages(prefix: &Path, package: &str, reporter: &dyn crate::Reporter) {
    let file = prefix.join(".messages.txt");
    if let Ok(text) = std::fs::read_to_string(&file) {
        for line in text.lines() {
            reporter.info(&format!("message from {package}: {line}"));
        }
        let _ = std::fs::remove_file(&file);
    }
}
