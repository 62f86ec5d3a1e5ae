//! A resolved distribution: one wheel (or an sdist built into one), as the lock records it and the
//! build installs it. Its file name is data from an index or a lock file: it is checked against the
//! entry's own name and version before it names anything.

use std::path::Path;
use std::str::FromStr as _;
use url::Url;

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
    /// Its size, when the index gave it (not used to plan layers: a lock does not record it).
    pub size: Option<u64>,
    /// The URL and sha256 are a source distribution's, which envlayer builds into a wheel (kept in the
    /// cache under the sdist's sha256).
    #[serde(default)]
    pub sdist: bool,
}

/// Whether two version strings are the same PEP 440 version (`1.0` and `1.0.0` are).
pub fn same_version(a: &str, b: &str) -> bool {
    match (pep440_rs::Version::from_str(a), pep440_rs::Version::from_str(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

impl Dist {
    /// The wheel's (or sdist's) file name: the URL's last segment, percent-decoded (`torch-2.5.1%2Bcpu-...`),
    /// checked as a file name, and naming this distribution and version.
    pub fn file_name(&self) -> Option<String> {
        let raw = self.url.path_segments()?.next_back()?;
        let name = percent_encoding::percent_decode_str(raw).decode_utf8().ok()?.into_owned();
        if name.contains('/') || name.contains('\\') {
            return None;
        }
        let (dist, version) = if self.sdist {
            let stem = name.strip_suffix(".tar.gz").or_else(|| name.strip_suffix(".zip"))?;
            let (dist, version) = stem.rsplit_once('-')?;
            if !dist.split('-').all(super::plain_name_part) || !super::plain_name_part(version) {
                return None;
            }
            (dist.to_string(), version.to_string())
        } else {
            let (dist, version) = super::split_wheel_name(&name)?;
            (dist.to_string(), version.to_string())
        };
        (super::normalize(&dist) == self.name && same_version(&version, &self.version)).then_some(name)
    }

    /// The lock entry: name, version, location (without credentials) and sha256. A file under `root`
    /// (the environment file's folder: a `--find-links` folder there) is recorded relative to it, so the
    /// lock and the image do not depend on where the checkout is.
    pub fn to_lock(&self, root: &Path) -> Result<rattler_lock::PypiPackageData, String> {
        let name = pep508_rs::PackageName::from_str(&self.name).map_err(|e| format!("pip package {}: {e}", self.name))?;
        let version = pep440_rs::Version::from_str(&self.version).map_err(|e| format!("pip package {} version {}: {e}", self.name, self.version))?;
        let sha = rattler_digest::parse_digest_from_hex::<rattler_digest::Sha256>(&self.sha256).ok_or_else(|| format!("pip package {}: bad sha256", self.name))?;
        let location = match self.url.to_file_path().ok().and_then(|p| p.strip_prefix(root).ok().map(Path::to_path_buf)) {
            Some(rel) if self.url.scheme() == "file" => {
                let rel = rel.to_str().ok_or_else(|| format!("pip package {}: a path that is not UTF-8", self.name))?.to_string();
                rattler_lock::UrlOrPath::Path(rel.into())
            }
            _ => rattler_lock::UrlOrPath::Url(super::redact(&self.url)),
        };
        Ok(rattler_lock::PypiPackageData::Distribution(Box::new(rattler_lock::PypiDistributionData {
            name,
            version,
            location: rattler_lock::Verbatim::new(location),
            index_url: None,
            hash: Some(rattler_lock::PackageHashes::Sha256(sha)),
            requires_dist: Vec::new(),
            requires_python: None,
        })))
    }

    /// A distribution from a lock entry, which must name a wheel or sdist of itself (URL, or a path
    /// relative to `root`) and its sha256.
    pub fn from_lock(p: &rattler_lock::PypiPackageData, root: &Path) -> Result<Self, String> {
        let rattler_lock::PypiPackageData::Distribution(d) = p else {
            return Err(format!("pip package {}: a source tree; envlayer installs wheels", p.name()));
        };
        let url = match d.location.inner() {
            rattler_lock::UrlOrPath::Url(u) => u.clone(),
            rattler_lock::UrlOrPath::Path(rel) => {
                // Relative to the environment file, or absolute (a --find-links folder elsewhere, checked
                // by `read_lock`); never with `..`.
                let rel = Path::new(rel.as_str());
                if rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                    return Err(format!("pip package {}: path {:?} has a `..`", d.name, crate::net::escape(rel.to_string_lossy().as_ref())));
                }
                Url::from_file_path(root.join(rel)).map_err(|_| format!("pip package {}: bad path", d.name))?
            }
        };
        let sha256 = d.hash.as_ref().and_then(|h| h.sha256()).map(|h| crate::fetch::hex(h)).ok_or_else(|| format!("pip package {}: no sha256", d.name))?;
        let sdist = url.path().ends_with(".tar.gz") || url.path().ends_with(".zip");
        let dist = Self { name: super::normalize(d.name.as_ref()), version: d.version.to_string(), url: super::redact(&url), sha256, size: None, sdist };
        dist.file_name()
            .ok_or_else(|| format!("pip package {} {}: {} is not a wheel or sdist file of it", d.name, d.version, crate::net::escape(url.path())))?;
        Ok(dist)
    }

    /// `pypi:<name>-<version>`, as layers are annotated.
    pub fn label(&self) -> String {
        format!("pypi:{}-{}", self.name, self.version)
    }
}

/// The pip wheels for `platform` in a lock file, checked, in name order. Relative paths are taken from
/// `root` (the environment file's folder); a local file elsewhere must be in one of `find_links` (a lock
/// cannot make envlayer read an arbitrary file of this machine).
pub fn read_lock(path: &Path, platform: rattler_conda_types::Subdir, environment: Option<&str>, root: &Path, find_links: &[Url]) -> Result<Vec<Dist>, String> {
    if crate::lockfile::is_explicit(path) {
        return Ok(Vec::new());
    }
    let lock = rattler_lock::LockFile::from_path(path).map_err(|e| e.to_string())?;
    let name = environment.unwrap_or(rattler_lock::DEFAULT_ENVIRONMENT_NAME);
    let env = lock.environment(name).ok_or_else(|| format!("has no environment {name:?}"))?;
    let Some(lock_platform) = env.platforms().find(|p| p.subdir() == platform) else { return Ok(Vec::new()) };
    let folders: Vec<std::path::PathBuf> = std::iter::once(root.to_path_buf()).chain(find_links.iter().filter_map(|u| u.to_file_path().ok())).collect();
    let mut out = Vec::new();
    for p in env.pypi_packages(lock_platform).into_iter().flatten() {
        let dist = Dist::from_lock(p, root)?;
        if let Ok(file) = dist.url.to_file_path() {
            if !folders.iter().any(|f| file.starts_with(f)) {
                return Err(format!("pip package {}: {} is neither beside the environment file nor in a --find-links folder", dist.name, crate::net::escape(&file.display().to_string())));
            }
        }
        out.push(dist);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(url: &str, name: &str, version: &str) -> Dist {
        Dist { name: name.into(), version: version.into(), url: Url::parse(url).unwrap(), sha256: "0".repeat(64), size: None, sdist: url.ends_with(".tar.gz") }
    }

    #[test]
    fn file_names_must_be_the_entrys_own() {
        assert_eq!(dist("https://h/p/torch-2.5.1%2Bcpu-cp311-cp311-linux_x86_64.whl", "torch", "2.5.1+cpu").file_name().as_deref(), Some("torch-2.5.1+cpu-cp311-cp311-linux_x86_64.whl"));
        assert_eq!(dist("https://h/p/evil-6.6-py3-none-any.whl", "requests", "6.6").file_name(), None);
        assert_eq!(dist("https://h/p/requests-6.6-py3-none-any.whl", "requests", "2.0").file_name(), None);
        assert_eq!(dist("https://h/p/a%2F..%2Fb-1-py3-none-any.whl", "a", "1").file_name(), None);
        assert_eq!(dist("https://h/p/Six-1.16.0.tar.gz", "six", "1.16.0").file_name().as_deref(), Some("Six-1.16.0.tar.gz"));
        assert_eq!(dist("https://h/p/six-1.16.tar.gz", "six", "1.16.0").file_name().as_deref(), Some("six-1.16.tar.gz"));
    }

    #[test]
    fn local_files_are_recorded_relative_to_the_environment() {
        let root = Path::new("/work/env");
        let d = dist("file:///work/env/wheels/six-1.16.0-py2.py3-none-any.whl", "six", "1.16.0");
        let entry = d.to_lock(root).unwrap();
        assert!(matches!(entry.location().inner(), rattler_lock::UrlOrPath::Path(p) if p.as_str() == "wheels/six-1.16.0-py2.py3-none-any.whl"));
        let back = Dist::from_lock(&entry, Path::new("/elsewhere")).unwrap();
        assert_eq!(back.url.as_str(), "file:///elsewhere/wheels/six-1.16.0-py2.py3-none-any.whl");
    }
}
