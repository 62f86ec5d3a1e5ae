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

/// Whether `path` is a conda explicit file (`@EXPLICIT` then one URL per line) rather than a
/// rattler_lock file (envlayer's, pixi.lock, conda-lock.yml).
pub fn is_explicit(path: &Path) -> bool {
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_LOCK_BYTES), &mut text));
    read.is_ok() && text.lines().any(|l| l.trim() == "@EXPLICIT")
}

/// The most bytes of a lock file read.
const MAX_LOCK_BYTES: u64 = 64 << 20;

/// The platforms of the environment `environment` (default: `default`) of a rattler_lock file, or of
/// an explicit file (its `# platform:` line).
pub fn lock_platforms(path: &Path, environment: Option<&str>) -> Result<Vec<Subdir>, SolveError> {
    let err = |reason: String| SolveError::Lock { path: path.to_path_buf(), reason };
    if is_explicit(path) {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_LOCK_BYTES), &mut text))
            .map_err(|e| err(e.to_string()))?;
        return Ok(text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("# platform:").and_then(|p| Subdir::from_str(p.trim()).ok()))
            .collect());
    }
    let lock = LockFile::from_path(path).map_err(|e| err(e.to_string()))?;
    let env = select(&lock, environment).map_err(err)?;
    Ok(env.platforms().map(|p| p.subdir()).collect())
}

fn select<'l>(lock: &'l LockFile, environment: Option<&str>) -> Result<rattler_lock::Environment<'l>, String> {
    let name = environment.unwrap_or(DEFAULT_ENVIRONMENT_NAME);
    lock.environment(name).ok_or_else(|| {
        let mut names: Vec<&str> = lock.environments().map(|(n, _)| n).collect();
        names.sort();
        format!("has no environment {name:?} (it has: {}); choose one with --environment", names.join(", "))
    })
}

/// The channel URLs of the lock's environment (none for an explicit file).
pub fn lock_channels(path: &Path, environment: Option<&str>) -> Option<Vec<String>> {
    if is_explicit(path) {
        return None;
    }
    let lock = LockFile::from_path(path).ok()?;
    let env = select(&lock, environment).ok()?;
    Some(env.channels().iter().map(|c| c.url.clone()).collect())
}

/// Reads the records for `platform` of the lock's environment `environment`, in install order.
pub fn read_lock_env(path: &Path, platform: Subdir, environment: Option<&str>) -> Result<Solved, SolveError> {
    let err = |reason: String| SolveError::Lock { path: path.to_path_buf(), reason };
    let lock = LockFile::from_path(path).map_err(|e| err(e.to_string()))?;
    let env = select(&lock, environment).map_err(err)?;
    let Some(lock_platform) = env.platforms().find(|p| p.subdir() == platform) else {
        let has: Vec<String> = env.platforms().map(|p| p.subdir().to_string()).collect();
        return Err(err(format!("has no packages for {platform} (it was locked for {}): pass --platform to match, or lock for {platform}", has.join(", "))));
    };
    let records = env.conda_repodata_records(lock_platform).map_err(|e| err(e.to_string()))?.unwrap_or_default();
    Ok(Solved { records: install_order(records) })
}

/// Reads a conda explicit file for `platform`. Every line is checked before anything is fetched: it
/// must carry a hash (`#sha256` or `#md5`: an explicit file is a lock, and a lock names exact bytes),
/// carry no credentials (they would end up in the image's lock), and point into one of `channels` (a
/// lock line never makes envlayer read another file or host). Then each archive is fetched into `store`
/// (its hash checked) and its record made from its own `info/index.json`, which must agree with the file
/// name and be for `platform` (or noarch).
pub async fn read_explicit(path: &Path, platform: Subdir, store: &crate::fetch::PackageStore, channels: &[Channel]) -> Result<Solved, SolveError> {
    use rattler_conda_types::{ExplicitEnvironmentSpec, PackageRecord, RepoDataRecord};
    let err = |reason: String| SolveError::Lock { path: path.to_path_buf(), reason };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_LOCK_BYTES), &mut text))
        .map_err(|e| err(e.to_string()))?;
    // rattler's parser refuses blank lines, which conda's own reader (and the draft CEP) ignore.
    let text: String = text.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("{l}\n")).collect();
    let spec = ExplicitEnvironmentSpec::from_str(&text).map_err(|e| err(e.to_string()))?;
    if let Some(p) = spec.platform.filter(|p| *p != platform) {
        return Err(err(format!("is for {p}, and --platform is {platform}: pass --platform {p}")));
    }
    let mut provisional = Vec::new();
    for entry in &spec.packages {
        let url = entry.url.clone();
        let shown = crate::solve::channel_display(&url);
        if !url.username().is_empty() || url.password().is_some() || url.path_segments().is_some_and(|mut s| s.any(|x| x == "t")) {
            return Err(err(format!("{shown}: credentials in a URL would be written into the image's lock; serve the channel without them in the URL")));
        }
        let hash = entry.package_archive_hash().map_err(|e| err(format!("{shown}: {e}")))?.ok_or_else(|| err(format!("{shown} has no #sha256 or #md5: every line of an explicit lock must name its archive's hash")))?;
        let (sha256, md5) = match hash {
            rattler_conda_types::PackageArchiveHash::Sha256(h) => (Some(h), None),
            rattler_conda_types::PackageArchiveHash::Md5(h) => (None, Some(h)),
        };
        let mut clean = url.clone();
        clean.set_fragment(None);
        clean.set_query(None);
        let identifier = rattler_conda_types::package::DistArchiveIdentifier::try_from_url(&clean).ok_or_else(|| err(format!("{shown}: not a conda package archive name")))?;
        let id = &identifier.identifier;
        let mut record = PackageRecord::new(
            rattler_conda_types::PackageName::from_str(&id.name).map_err(|e| err(format!("{shown}: {e}")))?,
            rattler_conda_types::VersionWithSource::from_str(&id.version).map_err(|e| err(format!("{shown}: {e}")))?,
            rattler_conda_types::package::BuildString::from_str(&id.build_string).map_err(|e| err(format!("{shown}: {e}")))?,
        );
        record.sha256 = sha256;
        record.md5 = md5;
        // The channel: the URL up to the subdir folder.
        let channel = clean.as_str().rsplitn(3, '/').nth(2).map(|c| format!("{c}/"));
        provisional.push(RepoDataRecord { package_record: record, identifier, url: clean, channel });
    }
    // Before any fetch: names are plain archive names, URLs are on the environment's channels.
    crate::solve::check_sources(&[], &provisional, channels, &format!("lock file {}", path.display()))?;
    let mut records = Vec::new();
    for p in provisional {
        let shown = crate::solve::channel_display(&p.url);
        let (archive, _) = store.fetch_archive(&p).await.map_err(|e| err(format!("{shown}: {e}")))?;
        let index: rattler_conda_types::package::IndexJson =
            rattler_package_streaming::seek::read_package_file(&archive).map_err(|e| err(format!("{shown}: info/index.json: {e}")))?;
        let size = std::fs::metadata(&archive).ok().map(|m| m.len());
        let (sha256, md5) = (p.package_record.sha256, p.package_record.md5);
        let package_record = PackageRecord::from_index_json(index, size, sha256, md5).map_err(|e| err(format!("{shown}: {e}")))?;
        let (want, got) = (&p.package_record, &package_record);
        if got.name != want.name || got.version.to_string() != want.version.to_string() || got.build.as_str() != want.build.as_str() {
            return Err(err(format!("{shown}: the archive is {}-{}-{}, not what its file name says", got.name.as_normalized(), got.version, got.build)));
        }
        if got.subdir != platform.as_str() && got.subdir != "noarch" {
            return Err(err(format!("{shown}: the package is for {}, and the image for {platform}", got.subdir)));
        }
        records.push(RepoDataRecord { package_record, ..p });
    }
    Ok(Solved { records: install_order(records) })
}
