//! Stage 3, fetch: each package archive downloaded once into a package cache, verified against the sha256
//! (or md5, for old channels without sha256) and size from the repodata, then extracted once.
//!
//! Written here rather than with `rattler_cache::PackageCache` because that cache keeps only extracted
//! folders and does not check sizes, while envlayer keeps the archives too (runtime installs ship them)
//! and wants every cache entry verified when it is used, not only when it was written.

use futures::StreamExt;
use rattler_conda_types::RepoDataRecord;
use rattler_digest::{Md5, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A package cache on disk: `pkgs/<sha256>/<file>` archives and `extracted/<sha256>/` folders. Every entry
/// is written to a temporary name and renamed into place, so a crash never leaves a half entry.
#[derive(Debug, Clone)]
pub struct PackageStore {
    root: PathBuf,
    client: reqwest::Client,
    /// Archives verified by this process: each is hashed once per build, not once per use.
    verified: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>,
}

/// A package present in the store.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The verified archive.
    pub archive: PathBuf,
    /// Its extracted contents.
    pub extracted: PathBuf,
    /// Whether it was downloaded (false: it was in the cache).
    pub downloaded: bool,
}

/// Why a package could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The download or copy failed.
    #[error("cannot fetch {package} from {url}")]
    Download {
        /// The package file name.
        package: String,
        /// Where it was fetched from.
        url: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The archive's hash or size does not match the repodata.
    #[error("{package} from {url}: {what} mismatch (repodata says {expected}, the archive has {actual})")]
    Mismatch {
        /// The package file name.
        package: String,
        /// Where it came from.
        url: String,
        /// sha256, md5 or size.
        what: &'static str,
        /// The repodata's value.
        expected: String,
        /// The archive's value.
        actual: String,
    },
    /// The server sent more than the repodata says the package has.
    #[error("{package} from {url}: the download passed its size of {size} bytes; stopped")]
    TooLarge {
        /// The package file name.
        package: String,
        /// Where it came from.
        url: String,
        /// The size it should have.
        size: u64,
    },
    /// The repodata has no hash to verify the package with.
    #[error("{0}: the repodata gives no sha256 or md5, so the package cannot be verified")]
    NoHash(String),
    /// The archive could not be extracted.
    #[error("cannot extract {package}")]
    Extract {
        /// The package file name.
        package: String,
        /// The cause.
        #[source]
        source: Box<rattler_package_streaming::ExtractError>,
    },
    /// The cache could not be written.
    #[error("package cache {path}")]
    Io {
        /// The path in the cache.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io { path: path.to_path_buf(), source }
}

/// The hex form of the hash envlayer files a package under (sha256, else md5).
pub fn package_hash(record: &RepoDataRecord) -> Option<String> {
    let r = &record.package_record;
    r.sha256.map(|h| hex(&h)).or_else(|| r.md5.map(|h| format!("md5-{}", hex(&h))))
}

/// Lowercase hex of `bytes` (rattler_digest's hash arrays no longer implement `LowerHex`).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl PackageStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_client(root.into(), crate::net::Timeouts::default())
    }

    fn with_client(root: PathBuf, timeouts: crate::net::Timeouts) -> Self {
        let client = crate::net::client_builder(timeouts).build().unwrap_or_default();
        Self { root, client, verified: Default::default() }
    }

    /// The same store with these connect and idle timeouts for downloads.
    pub fn with_timeouts(self, timeouts: crate::net::Timeouts) -> Self {
        Self { verified: self.verified, ..Self::with_client(self.root, timeouts) }
    }

    fn tmp_dir(&self) -> Result<PathBuf, FetchError> {
        crate::scratch::cache_dir(&self.root).map_err(io_err(&self.root))
    }

    /// Makes sure the package's archive is in the store and verified (not extracted); downloads it if
    /// needed. Each archive is hashed once per process.
    pub async fn fetch_archive(&self, record: &RepoDataRecord) -> Result<(PathBuf, bool), FetchError> {
        let (archive, _, downloaded) = self.archive(record).await?;
        Ok((archive, downloaded))
    }

    async fn archive(&self, record: &RepoDataRecord) -> Result<(PathBuf, String, bool), FetchError> {
        let file_name = record.identifier.to_file_name();
        let hash = package_hash(record).ok_or_else(|| FetchError::NoHash(file_name.clone()))?;
        let dir = self.root.join("pkgs").join(&hash);
        let archive = dir.join(&file_name);
        let mut downloaded = false;
        let known = self.verified.lock().map(|v| v.contains(&archive)).unwrap_or(false);
        let verified = known || if archive.is_file() {
            let a = archive.clone();
            let r = record.clone();
            let check = tokio::task::spawn_blocking(move || verify_file(&a, &r)).await;
            matches!(check, Ok(Ok(())))
        } else {
            false
        };
        if !verified {
            let tmp = tempfile::NamedTempFile::new_in(self.tmp_dir()?).map_err(io_err(&self.root))?;
            self.download(record, tmp.path()).await?;
            let (t, r) = (tmp.path().to_path_buf(), record.clone());
            tokio::task::spawn_blocking(move || verify_file(&t, &r))
                .await
                .map_err(|e| FetchError::Io { path: archive.clone(), source: std::io::Error::other(e) })??;
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            tmp.persist(&archive).map_err(|e| FetchError::Io { path: archive.clone(), source: e.error })?;
            downloaded = true;
            // Whatever was extracted from an earlier, unverified archive is no longer trusted.
            let _ = std::fs::remove_dir_all(self.root.join("extracted").join(&hash));
        }
        if let Ok(mut v) = self.verified.lock() {
            v.insert(archive.clone());
        }
        Ok((archive, hash, downloaded))
    }

    /// Makes sure the package is in the store, verified and extracted; downloads it if needed.
    pub async fn fetch(&self, record: &RepoDataRecord) -> Result<Fetched, FetchError> {
        let file_name = record.identifier.to_file_name();
        let (archive, hash, downloaded) = self.archive(record).await?;
        let extracted = self.root.join("extracted").join(&hash);
        // An extraction from an earlier build is used only if every file still matches the package's
        // paths.json (hashes included): the cache is checked, not trusted.
        if extracted.exists() {
            let dir = extracted.clone();
            let valid = tokio::task::spawn_blocking(move || {
                rattler_cache::validation::validate_package_directory(&dir, rattler_cache::validation::ValidationMode::Full).is_ok()
            })
            .await
            .unwrap_or(false);
            if !valid {
                tracing::warn!("{} does not match its package; extracting it again", extracted.display());
                let _ = std::fs::remove_dir_all(&extracted);
            }
        }
        if !extracted.join("info").join("index.json").is_file() {
            let stage = tempfile::Builder::new().prefix("extract-").tempdir_in(self.tmp_dir()?).map_err(io_err(&self.root))?;
            let (a, s) = (archive.clone(), stage.path().to_path_buf());
            tokio::task::spawn_blocking(move || {
                rattler_package_streaming::fs::extract(&a, &s)?;
                // Archives carry their own modes (tar applies them whatever the umask): nothing in the
                // cache may be writable by group or others.
                strip_group_other_write(&s).map_err(rattler_package_streaming::ExtractError::IoError)
            })
                .await
                .map_err(|e| FetchError::Io { path: archive.clone(), source: std::io::Error::other(e) })?
                .map_err(|source| FetchError::Extract { package: file_name.clone(), source: Box::new(source) })?;
            std::fs::create_dir_all(extracted.parent().unwrap_or(&self.root)).map_err(io_err(&extracted))?;
            let staged = stage.keep();
            if let Err(e) = std::fs::rename(&staged, &extracted) {
                let _ = std::fs::remove_dir_all(&staged);
                // Another build extracted the same package at the same time: theirs is as good as ours.
                if !extracted.join("info").join("index.json").is_file() {
                    return Err(FetchError::Io { path: extracted, source: e });
                }
            }
        }
        Ok(Fetched { archive, extracted, downloaded })
    }

    /// Downloads (or copies, for a local channel) the archive to `dest`, stopping as soon as more than
    /// the record's size arrives (or [`MAX_PACKAGE_BYTES`] when the record gives none); a stall longer
    /// than the idle timeout fails naming the URL.
    async fn download(&self, record: &RepoDataRecord, dest: &Path) -> Result<(), FetchError> {
        let url = record.url.clone();
        let package = record.identifier.to_file_name();
        let cap = record.package_record.size.unwrap_or(MAX_PACKAGE_BYTES);
        let too_large = || FetchError::TooLarge { package: package.clone(), url: url.to_string(), size: cap };
        let dl = |source: Box<dyn std::error::Error + Send + Sync>| FetchError::Download {
            package: package.clone(),
            url: url.to_string(),
            source,
        };
        if url.scheme() == "file" {
            // Only reached for files inside a configured local channel (see `solve::check_sources`).
            let src = url.to_file_path().map_err(|_| dl("not a local path".into()))?;
            let file = crate::files::open_regular(&src).map_err(|e| dl(Box::new(e)))?;
            if file.metadata().map_err(|e| dl(Box::new(e)))?.len() > cap {
                return Err(too_large());
            }
            let mut out = std::fs::File::create(dest).map_err(io_err(dest))?;
            std::io::copy(&mut std::io::Read::take(file, cap), &mut out).map_err(io_err(dest))?;
            return Ok(());
        }
        let response = self
            .client
            .get(url.clone())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| dl(Box::new(e)))?;
        if response.content_length().is_some_and(|n| n > cap) {
            return Err(too_large());
        }
        let mut file = std::fs::File::create(dest).map_err(io_err(dest))?;
        let mut body = response.bytes_stream();
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| dl(Box::new(e)))?;
            received += chunk.len() as u64;
            if received > cap {
                return Err(too_large());
            }
            file.write_all(&chunk).map_err(io_err(dest))?;
        }
        file.sync_all().map_err(io_err(dest))
    }
}

/// The largest package archive downloaded when the repodata gives no size.
pub const MAX_PACKAGE_BYTES: u64 = 16 << 30;

/// Removes group and other write permission from everything under `dir` (links are left alone).
fn strip_group_other_write(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o022))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            strip_group_other_write(&entry?.path())?;
        }
    }
    Ok(())
}

/// Checks an archive on disk against its record's size and sha256 (or md5).
pub fn verify_file(path: &Path, record: &RepoDataRecord) -> Result<(), FetchError> {
    let r = &record.package_record;
    let mismatch = |what, expected: String, actual: String| FetchError::Mismatch {
        package: record.identifier.to_file_name(),
        url: record.url.to_string(),
        what,
        expected,
        actual,
    };
    let len = std::fs::metadata(path).map_err(io_err(path))?.len();
    if let Some(size) = r.size {
        if size != len {
            return Err(mismatch("size", size.to_string(), len.to_string()));
        }
    }
    if let Some(expected) = r.sha256 {
        let actual = rattler_digest::compute_file_digest::<Sha256>(path).map_err(io_err(path))?;
        if actual != expected {
            return Err(mismatch("sha256", hex(&expected), hex(&actual)));
        }
    } else if let Some(expected) = r.md5 {
        let actual = rattler_digest::compute_file_digest::<Md5>(path).map_err(io_err(path))?;
        if actual != expected {
            return Err(mismatch("md5", hex(&expected), hex(&actual)));
        }
    } else {
        return Err(FetchError::NoHash(record.identifier.to_file_name()));
    }
    Ok(())
}
