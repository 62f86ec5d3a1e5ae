//! Step 3b, pip: the wheels of the environment's pip part, from the lock file or resolved by uv for the
//! target. Runs after the conda packages are known and inspected, because the distributions they
//! provide (their `site-packages/*.dist-info`) satisfy pip requirements for them. Distributions with only
//! a source distribution are built into wheels here, with the environment's own python, when this
//! machine can run it (as for `.pyc`), and kept in the cache under the sdist's sha256.

use super::{BuildError, BuildOptions, Inputs};
use crate::fetch::PackageStore;
use crate::link_scripts::LinkInfo;
use crate::pypi::fetch::WheelStore;
use crate::pypi::resolve::{ResolveInput, Target};
use crate::pypi::{Dist, ResolveError, Uv};
use crate::spec::InstallMode;
use rattler_conda_types::RepoDataRecord;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What the pip step needs besides the inputs.
pub struct PipContext<'a> {
    /// The conda packages (to make a build environment from, for sdists).
    pub records: &'a [RepoDataRecord],
    /// What each conda package provides.
    pub infos: &'a [LinkInfo],
    /// The environment's python.
    pub python: Option<&'a rattler::install::PythonInfo>,
    /// Conda package archives.
    pub store: &'a PackageStore,
    /// Wheels and sdists.
    pub wheels: &'a WheelStore,
}

/// The wheels to install, in name order: the lock's (a lock is the truth, as for conda packages), else
/// the pip part's resolved; empty when there are neither.
pub async fn wheels(opts: &BuildOptions, inputs: &Inputs, cx: &PipContext<'_>) -> Result<Vec<Dist>, BuildError> {
    let locked = match &opts.lock {
        Some(lock) => crate::pypi::dist::read_lock(lock, opts.platform, opts.lock_environment.as_deref(), &inputs.spec.root_dir, &inputs.pip_index.find_links)
            .map_err(|reason| crate::solve::SolveError::Lock { path: lock.clone(), reason })?,
        None => Vec::new(),
    };
    let requirements = inputs.spec.pip.as_ref().map_or(&[][..], |p| &p.requirements[..]);
    if locked.is_empty() && requirements.is_empty() {
        return Ok(Vec::new());
    }
    // A lock is the whole truth: one without pip packages is not silently completed by a resolve.
    if let (Some(lock), true, false) = (&opts.lock, locked.is_empty(), requirements.is_empty()) {
        return Err(BuildError::LockMismatch {
            lock: lock.clone(),
            env_file: inputs.spec.source.clone(),
            differences: vec![format!("{} has a pip list ({}), the lock has no pip packages", inputs.spec.source.display(), crate::net::escape(&requirements[0].text))],
        });
    }
    if inputs.install_mode == InstallMode::Runtime {
        return Err(BuildError::PipAtRuntime);
    }
    let first = locked.first().map(Dist::label).or_else(|| requirements.first().map(|r| r.text.clone())).unwrap_or_default();
    let python = cx.python.ok_or(BuildError::NoPythonForPip { package: first })?;
    let uv = Uv { program: opts.uv.clone(), cache_dir: opts.cache_dir.join("uv") };
    let credentials = crate::pypi::fetch::Credentials::new(&inputs.pip_index, opts.netrc.as_deref());
    let mut builder: Option<BuildEnv> = None;
    let dists = if !locked.is_empty() {
        locked
    } else {
        let Some(pip) = inputs.spec.pip.as_ref() else { return Ok(Vec::new()) };
        let mut provided = BTreeMap::new();
        for info in cx.infos {
            for (name, version) in &info.python_dists {
                provided.insert(name.clone(), version.clone());
            }
        }
        let glibc = inputs
            .virtual_packages
            .iter()
            .find(|v| v.name.as_normalized() == "__glibc")
            .map(|v| {
                let text = v.version.to_string();
                let mut parts = text.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
                (parts.next().unwrap_or(2), parts.next().unwrap_or(17))
            })
            .unwrap_or((2, 17));
        let target = Target { python: python.short_version, platform: opts.platform, glibc };
        let scratch = scratch(opts, "pip-")?;
        let mut input = ResolveInput {
            spec: pip,
            index: &inputs.pip_index,
            target: &target,
            provided: &provided,
            scratch: scratch.path(),
            credentials: &credentials,
            timeouts: opts.network,
            builder: None,
        };
        match crate::pypi::resolve::resolve(&uv, &input).await {
            Err(ResolveError::NeedsBuild { message }) => {
                if !opts.build_sdists {
                    return Err(ResolveError::Unsolvable {
                        python: target.python,
                        platform: target.uv_platform()?,
                        message: format!("{message}\nenvlayer builds source distributions only with --build-sdists (the build runs the package's own code on this machine, which can read what envlayer can, index credentials included); or ask the index for wheels, or install them from conda packages"),
                    }
                    .into());
                }
                if !can_run(opts) {
                    return Err(ResolveError::Unsolvable { python: target.python, platform: target.uv_platform()?, message: format!("{message}\n{}", cannot_run(opts)) }.into());
                }
                let env = BuildEnv::make(opts, cx, python).await?;
                input.builder = Some(&env.python);
                let dists = crate::pypi::resolve::resolve(&uv, &input).await?;
                builder = Some(env);
                dists
            }
            other => other?,
        }
    };
    // Sdists not built yet (in this resolve, or in the build the lock came from) are built now.
    for dist in dists.iter().filter(|d| d.sdist && cx.wheels.built(d).is_none()) {
        if !opts.build_sdists {
            return Err(BuildError::SdistNotAllowed { package: dist.label() });
        }
        if !can_run(opts) {
            return Err(ResolveError::NoWheel { name: dist.name.clone(), version: dist.version.clone(), python: python.short_version, platform: opts.platform.to_string() }.into());
        }
        if builder.is_none() {
            builder = Some(BuildEnv::make(opts, cx, python).await?);
        }
        let env = builder.as_ref().expect("made above");
        let (sdist, _) = cx.wheels.download(dist).await?;
        let out = scratch(opts, "built-")?;
        let wheel = crate::pypi::uv::build_wheel(&uv, &env.python, &sdist, out.path(), &inputs.pip_index, &credentials, opts.network).await?;
        cx.wheels.put_built(dist, &wheel)?;
    }
    Ok(dists)
}

fn can_run(opts: &BuildOptions) -> bool {
    rattler_conda_types::Subdir::current() == Some(opts.platform)
}

fn cannot_run(opts: &BuildOptions) -> String {
    format!(
        "building them needs the environment's python, and this machine cannot run it (image platform {}, build machine {}): build on a {} machine, ask the index for wheels, or install them from conda packages",
        opts.platform,
        rattler_conda_types::Subdir::current().map(|s| s.to_string()).unwrap_or_else(|| "unknown".into()),
        opts.platform
    )
}

fn scratch(opts: &BuildOptions, prefix: &str) -> Result<tempfile::TempDir, BuildError> {
    let io = |source| BuildError::Io { path: opts.cache_dir.clone(), source };
    tempfile::Builder::new().prefix(prefix).tempdir_in(crate::scratch::cache_dir(&opts.cache_dir).map_err(io)?).map_err(io)
}

/// The conda environment installed for a temporary folder of this machine (so its python, headers and
/// `sysconfig` name where they really are): what sdists are built with.
struct BuildEnv {
    _dir: tempfile::TempDir,
    python: PathBuf,
}

impl BuildEnv {
    async fn make(opts: &BuildOptions, cx: &PipContext<'_>, python: &rattler::install::PythonInfo) -> Result<Self, BuildError> {
        // A short path: binary placeholders must fit the new prefix (local packages may have short
        // ones). Removed when the build ends (or with the system's temporary files if it is killed).
        let dir = tempfile::Builder::new().prefix("envlayer-").tempdir().map_err(|source| BuildError::Io { path: std::env::temp_dir(), source })?;
        let prefix = dir.path().display().to_string();
        let target = crate::install::InstallTarget { prefix, platform: opts.platform, python: Some(python.clone()) };
        for record in cx.records {
            let fetched = cx.store.fetch(record).await?;
            crate::install::install_package(&fetched.extracted, record, &target, dir.path()).await?;
        }
        let python = dir.path().join(&python.path);
        Ok(Self { _dir: dir, python })
    }
}
