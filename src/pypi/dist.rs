//! A resolved distribution: one wheel (or an sdist built into one), as the lock records it and the
//! build installs it.

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
