//! Stage 5, layer: installed packages packed as layers, cached by a key made only of what decides their
//! bytes, so a cached layer is never rebuilt.
//!
//! Cache layout under the cache dir: `layers/<key>.json` (the layer's facts), `facts/<key>.json` (what
//! installing a package taught us), `blobs/sha256/<hex>` (the compressed layer). All written to a
//! temporary name and renamed into place.

use crate::install::{InstallTarget, PackageFacts};
use envlayer_layers::{Compression, Digest, Layer};
use rattler_conda_types::RepoDataRecord;
use std::path::{Path, PathBuf};

/// Bumped whenever envlayer changes how it lays out a package's files, so old cache entries are not used.
pub const LAYER_FORMAT: u32 = 3;

/// What decides a layer's bytes besides the package itself.
#[derive(Debug, Clone)]
pub struct LayerParams {
    /// The install target (prefix, platform, python).
    pub target: InstallTarget,
    /// The compression.
    pub compression: Compression,
    /// The mtime of every tar entry.
    pub mtime: u64,
    /// The python package whose interpreter compiles `.pyc` files into the layers, if any.
    pub pyc: Option<String>,
}

/// The cache key of one package's layer: a digest of the package's repodata record (its sha256, name,
/// version, channel and url all end up in `conda-meta`), the target prefix and platform, the Python
/// minor version for `noarch: python`, the compression and the tar settings.
pub fn package_key(record: &RepoDataRecord, params: &LayerParams) -> String {
    let python = if record.package_record.noarch.is_python() {
        params.target.python.as_ref().map(|p| format!("{}.{}", p.short_version.0, p.short_version.1))
    } else {
        None
    };
    let input = serde_json::json!({
        "format": LAYER_FORMAT,
        "record": serde_json::to_value(record).unwrap_or_default(),
        "prefix": params.target.prefix,
        "platform": params.target.platform.as_str(),
        "python": python,
        "compression": params.compression.id(),
        "mtime": params.mtime,
        "pyc": params.pyc.as_ref().map(|p| format!("{p} {}", crate::pyc::WORKER)),
    });
    Digest::of(&crate::image::canonical_json(&input)).hex()
}

/// The cache key of one wheel's layer: its sha256, the prefix, the python minor version (its scripts'
/// shebang and its site-packages), the platform, the compression, the tar settings and the `.pyc` compiler.
pub fn wheel_key(wheel: &crate::pypi::Dist, params: &LayerParams) -> String {
    let input = serde_json::json!({
        "format": LAYER_FORMAT,
        "wheel": wheel.sha256,
        "file": wheel.file_name(),
        "prefix": params.target.prefix,
        "platform": params.target.platform.as_str(),
        "python": params.target.python.as_ref().map(|p| format!("{}.{}", p.short_version.0, p.short_version.1)),
        "compression": params.compression.id(),
        "mtime": params.mtime,
        "pyc": params.pyc.as_ref().map(|p| format!("{p} {}", crate::pyc::WORKER)),
    });
    Digest::of(&crate::image::canonical_json(&input)).hex()
}

/// The cache key of a layer holding several packages (in this order).
pub fn group_key(member_keys: &[String]) -> String {
    if let [only] = member_keys {
        return only.clone();
    }
    Digest::of(format!("group:{}", member_keys.join(",")).as_bytes()).hex()
}

/// A layer in the cache: its facts and the packages in it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CachedLayer {
    /// Digests, sizes, compression.
    pub layer: Layer,
    /// The packages it holds (`name-version-build`), in install order.
    pub packages: Vec<String>,
    /// Paths that one of its packages overwrote in another (conda's clobbering), relative to `/`.
    #[serde(default)]
    pub clobbered: Vec<String>,
}

/// Why the layer cache failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing the cache failed.
    #[error("layer cache {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A layer could not be packed.
    #[error("cannot pack the layer of {packages}")]
    Pack {
        /// The packages (or `environment`) of the layer.
        packages: String,
        /// The cause.
        #[source]
        source: envlayer_layers::PackError,
    },
    /// A cached blob's content does not match its digest.
    #[error(transparent)]
    Blob(#[from] crate::files::BlobError),
}

/// The cache folder's tag (<https://bford.info/cachedir/>): backup tools skip the folder, and
/// `envlayer cache gc` works only in a folder that has it.
pub const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by envlayer.\n# For information about cache directory tags see https://bford.info/cachedir/\n";

/// Marks `root` as envlayer's cache (writes its `CACHEDIR.TAG` if missing). Best effort: a cache that
/// cannot be marked still works, only `cache gc` refuses it.
pub fn mark(root: &Path) {
    let tag = root.join("CACHEDIR.TAG");
    if std::fs::symlink_metadata(&tag).is_err() && std::fs::create_dir_all(root).is_ok() {
        let _ = std::fs::write(&tag, CACHEDIR_TAG);
    }
}

/// The on-disk layer and facts cache.
#[derive(Debug, Clone)]
pub struct LayerCache {
    root: PathBuf,
}

impl LayerCache {
    /// A cache under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// This process's folder for temporary files, on the same file system as the cache (see
    /// [`crate::scratch`]: removed at exit or on interruption, swept if the process died).
    pub fn tmp_dir(&self) -> Result<PathBuf, CacheError> {
        crate::scratch::cache_dir(&self.root).map_err(|source| CacheError::Io { path: self.root.join("tmp"), source })
    }

    /// Where the blob with this digest lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// The cached layer for `key`, if its entry is readable and its blob has the right digest. A corrupt
    /// entry (a torn write, a flipped bit) is removed and treated as missing, so it is rebuilt.
    pub fn get(&self, key: &str) -> Option<CachedLayer> {
        let entry = self.root.join("layers").join(format!("{key}.json"));
        let text = std::fs::read(&entry).ok()?;
        let Ok(cached) = serde_json::from_slice::<CachedLayer>(&text) else {
            let _ = std::fs::remove_file(&entry);
            return None;
        };
        let blob = self.blob_path(&cached.layer.digest);
        match crate::files::digest_file(&blob) {
            Ok((digest, len)) if digest == cached.layer.digest && len == cached.layer.size => {
                // The entry's last use, for `envlayer cache gc`.
                let _ = std::fs::File::options().append(true).open(&entry).and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(cached)
            }
            Ok(_) => {
                tracing::warn!("cache blob {} is corrupt; rebuilding it", blob.display());
                let _ = std::fs::remove_file(&blob);
                let _ = std::fs::remove_file(&entry);
                None
            }
            Err(_) => None,
        }
    }

    /// Stores a packed layer whose blob was written to `blob` (a temporary file in [`Self::tmp_dir`]).
    pub fn put(&self, key: &str, cached: &CachedLayer, blob: &Path) -> Result<(), CacheError> {
        let dest = self.blob_path(&cached.layer.digest);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        std::fs::create_dir_all(dest.parent().unwrap_or(&self.root)).map_err(io(&dest))?;
        std::fs::rename(blob, &dest).map_err(io(&dest))?;
        self.write_json(&self.root.join("layers").join(format!("{key}.json")), cached)
    }

    /// Whether an entry for `key` exists (not checked: [`Self::get`] checks).
    pub fn has(&self, key: &str) -> bool {
        self.root.join("layers").join(format!("{key}.json")).is_file()
    }

    /// Puts a blob that was downloaded to `blob` (a temporary file in [`Self::tmp_dir`], its digest
    /// checked) into the blob store, with no layer entry: a layer from elsewhere is never taken for one
    /// built here.
    pub fn put_blob(&self, digest: &Digest, blob: &Path) -> Result<(), CacheError> {
        let dest = self.blob_path(digest);
        let io = |source| CacheError::Io { path: dest.clone(), source };
        std::fs::create_dir_all(dest.parent().unwrap_or(&self.root)).map_err(io)?;
        std::fs::rename(blob, &dest).map_err(io)
    }

    /// What installing the package with this key taught us, if it was installed before.
    pub fn facts(&self, key: &str) -> Option<PackageFacts> {
        let text = std::fs::read(self.root.join("facts").join(format!("{key}.json"))).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Remembers a package's facts.
    pub fn put_facts(&self, key: &str, facts: &PackageFacts) -> Result<(), CacheError> {
        self.write_json(&self.root.join("facts").join(format!("{key}.json")), facts)
    }

    /// Keeps the lock of a build that wrote no layout (a push, a resolve) as `locks/<file_name>`, and
    /// returns its path.
    pub fn put_lock(&self, file_name: &str, text: &str) -> Result<PathBuf, CacheError> {
        let path = self.root.join("locks").join(file_name);
        let io = |source| CacheError::Io { path: path.clone(), source };
        std::fs::create_dir_all(path.parent().unwrap_or(&self.root)).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.tmp_dir()?).map_err(io)?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        // Absolute, to be found from anywhere.
        Ok(std::path::absolute(&path).unwrap_or(path))
    }

    fn write_json<T: serde::Serialize>(&self, path: &Path, value: &T) -> Result<(), CacheError> {
        let io = |source| CacheError::Io { path: path.to_path_buf(), source };
        std::fs::create_dir_all(path.parent().unwrap_or(&self.root)).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.tmp_dir()?).map_err(io)?;
        serde_json::to_writer(&mut tmp, value).map_err(|e| io(e.into()))?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Copies (or hard-links) a cached blob to `dest`, checking its digest first: a corrupt entry is
    /// removed and reported, never used.
    pub fn export_blob(&self, digest: &Digest, dest: &Path) -> Result<(), CacheError> {
        let src = self.blob_path(digest);
        crate::files::copy_verified(&src, digest, dest)
            .inspect_err(|e| {
                if matches!(e, crate::files::BlobError::Corrupt { .. }) {
                    let _ = std::fs::remove_file(&src);
                }
            })
            .map_err(CacheError::from)
    }
}

/// Packs `sources` into a layer (in a blocking task, so packing never holds up the async workers) and
/// stores it in `cache` under `key`: the one way every layer envlayer makes (a package's, the
/// environment's, the runtime archives') is packed and cached. `packages` names the layer's content.
pub async fn pack_into_cache(
    cache: &LayerCache,
    key: &str,
    sources: Vec<envlayer_layers::Source>,
    mtime: u64,
    compression: Compression,
    packages: Vec<String>,
) -> Result<CachedLayer, CacheError> {
    let mut parts = pack_parts_into_cache(cache, &[key.to_string()], sources, mtime, compression, packages).await?;
    Ok(parts.remove(0))
}

/// Packs `sources` into `keys.len()` layers split by path (see [`envlayer_layers::split_entries`]), each
/// stored in the cache under its key; the clobbered paths are listed with the first.
pub async fn pack_parts_into_cache(
    cache: &LayerCache,
    keys: &[String],
    sources: Vec<envlayer_layers::Source>,
    mtime: u64,
    compression: Compression,
    packages: Vec<String>,
) -> Result<Vec<CachedLayer>, CacheError> {
    let tmp_dir = cache.tmp_dir()?;
    let tmps = keys
        .iter()
        .map(|_| tempfile::NamedTempFile::new_in(&tmp_dir).map_err(|source| CacheError::Io { path: tmp_dir.clone(), source }))
        .collect::<Result<Vec<_>, _>>()?;
    let blobs: Vec<PathBuf> = tmps.iter().map(|t| t.path().to_path_buf()).collect();
    let options = envlayer_layers::PackOptions { mtime, threads: cpus() };
    let (b, what) = (blobs.clone(), packages.join(", "));
    let packed = tokio::task::spawn_blocking(move || -> Result<_, envlayer_layers::PackError> {
        let (entries, clobbered) = envlayer_layers::collect_entries(&sources)?;
        let parts = envlayer_layers::split_entries(&entries, b.len());
        let layers = parts.iter().zip(&b).map(|(part, out)| envlayer_layers::pack_entries(part, &options, compression, out)).collect::<Result<Vec<_>, _>>()?;
        Ok((layers, clobbered))
    })
    .await
    .map_err(|e| CacheError::Io { path: tmp_dir.clone(), source: std::io::Error::other(e) })?
    .map_err(|source| CacheError::Pack { packages: if what.is_empty() { "the environment".into() } else { what }, source })?;
    let (layers, clobbered) = packed;
    let mut out = Vec::new();
    for (k, ((layer, key), blob)) in layers.into_iter().zip(keys).zip(&blobs).enumerate() {
        let cached = CachedLayer { layer, packages: packages.clone(), clobbered: if k == 0 { clobbered.clone() } else { Vec::new() } };
        cache.put(key, &cached, blob)?;
        out.push(cached);
    }
    drop(tmps);
    Ok(out)
}

/// The number of CPUs to compress a layer with.
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(2)
}
