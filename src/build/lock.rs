//! Locks: `envlayer lock` (solve only, write the lock), and the check that a lock given to a build
//! (`--lock`) was made from this environment file (its specs, channels and platform), so a lock from
//! another environment never builds the wrong packages under this environment's name.

use super::{dist_name, packages, pip, plan, BuildError, BuildOptions, Inputs};
use crate::fetch::PackageStore;
use crate::link_scripts::LinkInfo;
use crate::reporter::{Reporter, Stage};
use crate::solve::{self, Solved};
use rattler_conda_types::{Matches, RepoDataRecord};
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// What `envlayer lock` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LockSummary {
    /// The environment's name.
    pub name: String,
    /// The lock file written.
    pub lock: PathBuf,
    /// The platform locked for.
    pub platform: String,
    /// The channels searched, as URLs (without credentials).
    pub channels: Vec<String>,
    /// The conda packages, `name-version-build`, in install order.
    pub packages: Vec<String>,
    /// The pip packages, `name==version`.
    pub pip_packages: Vec<String>,
}

/// The default lock path of an environment file: `<stem>.lock` beside it.
pub fn default_path(env_file: &Path) -> PathBuf {
    let stem = env_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "environment".into());
    env_file.with_file_name(format!("{stem}.lock"))
}

/// Solves the environment of `opts` (conda, then its pip part) and writes the lock to `path`, which must
/// not be a file envlayer did not write (an existing rattler lock is replaced).
pub async fn lock(opts: &BuildOptions, path: &Path, reporter: &dyn Reporter) -> Result<LockSummary, BuildError> {
    let mut opts = opts.clone();
    opts.lock = None;
    if path.exists() && !(path.is_file() && rattler_lock::LockFile::from_path(path).is_ok()) {
        return Err(BuildError::LockPath { path: path.to_path_buf() });
    }
    let inputs = Inputs::read(&opts)?;
    crate::cache::mark(&opts.cache_dir);
    reporter.start(Stage::Solve, 0);
    let records = packages::resolve(&opts, &inputs).await?;
    let python = packages::python(&records, opts.platform)?;
    let wheels = if inputs.spec.pip.as_ref().is_some_and(|p| !p.requirements.is_empty()) {
        // The pip part is resolved against what the conda packages provide, so they are inspected.
        let store = PackageStore::new(opts.cache_dir.clone()).with_timeouts(opts.network);
        let infos = plan::inspect(&opts, &records, &store, None).await?;
        let wheel_store = crate::pypi::fetch::WheelStore::new(&opts.cache_dir, opts.network, crate::pypi::fetch::Credentials::new(&inputs.pip_index, opts.netrc.as_deref()));
        let cx = pip::PipContext { records: &records, infos: &infos, python: python.as_ref(), store: &store, wheels: &wheel_store };
        pip::wheels(&opts, &inputs, &cx).await?
    } else {
        Vec::new()
    };
    reporter.finish(Stage::Solve);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(super::io_err(dir))?;
    }
    crate::lockfile::write_lock(&Solved { records: records.clone() }, &wheels, &inputs.spec.root_dir, &inputs.channels, opts.platform, path)?;
    Ok(LockSummary {
        name: inputs.spec.name.clone(),
        lock: path.to_path_buf(),
        platform: opts.platform.to_string(),
        channels: inputs.channels.iter().map(|c| channel_url(c.base_url.url().as_str())).collect(),
        packages: records.iter().map(dist_name).collect(),
        pip_packages: wheels.iter().map(|w| format!("{}=={}", w.name, w.version)).collect(),
    })
}

/// A channel URL to compare and show (see [`solve::channel_display`]).
fn channel_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(url) => solve::channel_display(&url),
        Err(_) => crate::net::escape(u.trim_end_matches('/')),
    }
}

/// The name a `depends` entry is about (`python >=3.11,<3.12.0a0`, `conda-forge::numpy` → `python`,
/// `numpy`), as rattler parses it.
fn dep_name(dep: &str) -> Option<String> {
    solve::parse_spec(dep).ok().and_then(|m| m.name.as_exact().map(|n| n.as_normalized().to_string()))
}

/// Checks the conda part of a lock given with `--lock` against the environment file: the same channels,
/// every spec matched by a locked package, and no locked package that nothing asks for. (The platform is
/// checked when the lock is read; the pip part by [`check_pip`].)
pub fn check_conda(lock: &Path, environment: Option<&str>, inputs: &Inputs, records: &[RepoDataRecord]) -> Result<(), BuildError> {
    let env = inputs.spec.source.display().to_string();
    let mut differences = Vec::new();

    // (An explicit file lists no channels: its URLs are checked against the environment's channels.)
    if let Some(theirs) = crate::lockfile::lock_channels(lock, environment) {
        let ours: Vec<String> = inputs.channels.iter().map(|c| channel_url(c.base_url.url().as_str())).collect();
        let theirs: Vec<String> = theirs.iter().map(|c| channel_url(c)).collect();
        if ours != theirs {
            differences.push(format!("channels: {env} has [{}], the lock [{}]", ours.join(", "), theirs.join(", ")));
        }
    }

    for spec in &inputs.spec.specs {
        let Some(name) = spec.name.as_exact() else { continue };
        match records.iter().find(|r| &r.package_record.name == name) {
            None => differences.push(format!("{env} asks for {spec}, which the lock does not have")),
            Some(r) if !spec.matches(r) => differences.push(format!("{env} asks for {spec}, the lock has {}", dist_name(r))),
            Some(_) => {}
        }
    }

    // Every locked package must be needed: reachable from the specs through `depends`.
    let mut needed: BTreeSet<String> = inputs.spec.specs.iter().filter_map(|s| s.name.as_exact().map(|n| n.as_normalized().to_string())).collect();
    let mut queue: VecDeque<String> = needed.iter().cloned().collect();
    while let Some(name) = queue.pop_front() {
        for r in records.iter().filter(|r| r.package_record.name.as_normalized() == name) {
            for d in r.package_record.depends.iter().filter_map(|d| dep_name(d)) {
                if needed.insert(d.clone()) {
                    queue.push_back(d);
                }
            }
        }
    }
    // (A spec without an exact name, a glob, leaves nothing to follow from: then this is not checked.)
    let exact = inputs.spec.specs.iter().all(|s| s.name.as_exact().is_some());
    let extra: Vec<String> = records.iter().filter(|r| exact && !needed.contains(r.package_record.name.as_normalized())).map(dist_name).collect();
    if !extra.is_empty() {
        differences.push(format!("the lock has packages {env} does not need: {}", extra.join(", ")));
    }
    mismatch(lock, inputs, differences)
}

fn mismatch(lock: &Path, inputs: &Inputs, differences: Vec<String>) -> Result<(), BuildError> {
    if differences.is_empty() {
        return Ok(());
    }
    Err(BuildError::LockMismatch { lock: lock.to_path_buf(), env_file: inputs.spec.source.clone(), differences })
}

/// Checks the pip part of a lock: every pip requirement locked (or provided by a conda package), and no
/// locked wheel when the environment has no pip list.
pub fn check_pip(lock: &Path, inputs: &Inputs, wheels: &[crate::pypi::Dist], infos: &[LinkInfo]) -> Result<(), BuildError> {
    let env = inputs.spec.source.display().to_string();
    let mut differences = Vec::new();

    let requirements = inputs.spec.pip.as_ref().map_or(&[][..], |p| &p.requirements[..]);
    let provided: BTreeSet<&str> = infos.iter().flat_map(|i| i.python_dists.iter().map(|(n, _)| n.as_str())).collect();
    for req in requirements {
        let (origin, text) = (crate::net::escape(&req.origin), crate::net::escape(&req.text));
        match wheels.iter().find(|w| w.name == req.name) {
            Some(w) => {
                if crate::pypi::spec::allows(&req.text, &w.version) == Some(false) {
                    differences.push(format!("{origin} asks for pip package {text}, the lock has {} {}", w.name, crate::net::escape(&w.version)));
                }
            }
            // A requirement with a marker may not apply to the target; one a conda package provides is
            // not locked as a wheel.
            None if provided.contains(req.name.as_str()) || crate::pypi::spec::allows(&req.text, "0").is_none() => {}
            None => differences.push(format!("{origin} asks for pip package {text}, which the lock does not have")),
        }
    }
    // --hash pins hold for locked wheels as for resolved ones.
    if let Some(spec) = inputs.spec.pip.as_ref() {
        if let Err(e) = crate::pypi::resolve::check_hashes(spec, wheels) {
            differences.push(e.to_string());
        }
    }
    if requirements.is_empty() && !wheels.is_empty() {
        let names: Vec<String> = wheels.iter().map(|w| format!("{}=={}", w.name, w.version)).collect();
        differences.push(format!("the lock has pip packages but {env} has no pip list: {}", names.join(", ")));
    }

    mismatch(lock, inputs, differences)
}
