//! The lock file: rattler_lock's format, one environment (`default`) and one platform, with the conda
//! records and the pip wheels of a build, so a later build can skip the solve.

use crate::solve::{install_order, SolveError, Solved};
use rattler_conda_types::{Channel, Subdir};
use rattler_lock::{LockFile, DEFAULT_ENVIRONMENT_NAME};
use std::path::Path;
use std::str::FromStr;

/// Writes `solved` (and the pip wheels `pypi`) as a rattler lock file for `platform`.
/// Local pip files under `root` (the environment file's folder) are recorded relative to it.
pub fn write_lock(solved: &Solved, pypi: &[crate::pypi::Dist], root: &Path, channels: &[Channel], platform: Subdir, path: &Path) -> Result<(), SolveError> {
    let err = |reason: String| SolveError::Lock { path: path.to_path_buf(), reason };
    let lock_platform = rattler_lock::PlatformData {
        name: rattler_lock::PlatformName::from_str(platform.as_str()).map_err(|e| err(e.to_string()))?,
        subdir: platform,
        virtual_packages: Vec::new(),
    };
    let mut builder = LockFile::builder()
        .with_platforms(vec![lock_platform])
        .map_err(|e| err(e.to_string()))?;
    builder.set_channels(
        DEFAULT_ENVIRONMENT_NAME,
        channels.iter().map(|c| rattler_lock::Channel::from(c.base_url.to_string())),
    );
    for record in &solved.records {
        builder
            .add_conda_package(DEFAULT_ENVIRONMENT_NAME, platform.as_str(), record.clone().into())
            .map_err(|e| err(e.to_string()))?;
    }
    for dist in pypi {
        builder
            .add_pypi_package(DEFAULT_ENVIRONMENT_NAME, platform.as_str(), dist.to_lock(root).map_err(err)?)
            .map_err(|e| err(e.to_string()))?;
    }
    // Written beside the target under a fresh name, then renamed over it: no fixed temporary name that
    // could be someone's file.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new().prefix(".envlayer-lock-").tempfile_in(dir).map_err(|e| err(e.to_string()))?;
    builder.finish().to_path(tmp.path()).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(|e| err(e.to_string()))?;
    tmp.persist(path).map_err(|e| err(e.error.to_string()))?;
    Ok(())
}

/// Reads the records for `platform` back from a lock file, in install order.
pub fn read_lock(path: &Path, platform: Subdir) -> Result<Solved, SolveError> {
    let err = |reason: String| SolveError::Lock { path: path.to_path_buf(), reason };
    let lock = LockFile::from_path(path).map_err(|e| err(e.to_string()))?;
    let env = lock
        .default_environment()
        .ok_or_else(|| err("has no default environment".into()))?;
    let lock_platform = lock.platform(platform.as_str()).ok_or_else(|| {
        let has: Vec<String> = lock.platforms().map(|p| p.subdir().to_string()).collect();
        err(format!("has no packages for {platform} (it was locked for {}): pass --platform to match, or lock for {platform}", has.join(", ")))
    })?;
    let records = env
        .conda_repodata_records(lock_platform)
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err(format!("has no packages for {platform}")))?;
    Ok(Solved { records: install_order(records) })
}
