//! Stage 7, push: an image sent to a registry. Each blob is first looked for (HEAD) and skipped when the
//! repository has it, else mounted from a repository known to hold it, else uploaded (streamed from disk,
//! or copied from its source registry when it is not on disk). The config goes after the layers and the
//! manifest last, so a tag never names an incomplete image.

use crate::image::Image;
use crate::net::escape;
use crate::registry::{Mount, Reference, Registry, RegistryError};
use envlayer_layers::Digest;
use futures::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// What a push did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushReport {
    /// `registry/repository@sha256:...`, the reference pod specs should use.
    pub reference: String,
    /// The tag pushed, if any.
    pub tag: Option<String>,
    /// The manifest digest.
    pub digest: String,
    /// Blobs uploaded (their digests), config included.
    pub uploaded: Vec<String>,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Blobs the repository already had.
    pub existing: usize,
    /// Requests retried after transient failures.
    pub retries: usize,
}

/// Where envlayer has seen each blob on each registry (`<cache>/registries/<host>.json`: digest →
/// repository), so a push to another repository of the same registry can mount instead of upload.
#[derive(Debug, Clone)]
pub struct BlobLocations {
    file: Option<std::path::PathBuf>,
    cache_dir: Option<std::path::PathBuf>,
    known: std::collections::BTreeMap<String, String>,
}

impl BlobLocations {
    /// No memory of earlier pushes.
    pub fn none() -> Self {
        Self { file: None, cache_dir: None, known: Default::default() }
    }
    /// The memory kept in `cache_dir` for `registry`. Entries are checked before use: a digest and a
    /// repository name that are not valid are dropped (they would end up in URLs).
    pub fn load(cache_dir: &std::path::Path, registry: &str) -> Self {
        let file = cache_dir.join("registries").join(format!("{}.json", registry.replace([':', '/', '[', ']'], "_")));
        let raw: std::collections::BTreeMap<String, String> = std::fs::File::open(&file)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file() && m.len() <= 64 << 20))
            .and_then(|f| serde_json::from_reader(std::io::BufReader::new(f)).ok())
            .unwrap_or_default();
        let known = raw
            .into_iter()
            .filter(|(digest, repo)| {
                digest.parse::<Digest>().is_ok() && format!("{registry}/{repo}").parse::<Reference>().is_ok_and(|r| &r.repository == repo)
            })
            .collect();
        Self { file: Some(file), cache_dir: Some(cache_dir.to_path_buf()), known }
    }
    fn save(&self) {
        let (Some(file), Some(cache_dir)) = (&self.file, &self.cache_dir) else { return };
        let dir = file.parent().unwrap_or(std::path::Path::new("."));
        // Best effort: losing this memory only costs an upload later.
        let _ = std::fs::create_dir_all(dir).and_then(|()| {
            let mut tmp = tempfile::NamedTempFile::new_in(crate::scratch::cache_dir(cache_dir)?)?;
            serde_json::to_writer(&mut tmp, &self.known)?;
            tmp.persist(file).map(|_| ()).map_err(|e| e.error)
        });
    }
}

/// Pushes `image` to `target` (tagged with its tag, or by digest alone), at most `jobs` blobs at a time.
/// Blobs that `locations` places in another repository of the registry are mounted from there.
pub async fn push_image(
    registry: &Registry,
    target: &Reference,
    image: &Image,
    jobs: usize,
    locations: &mut BlobLocations,
) -> Result<PushReport, RegistryError> {
    let repo = target.repository.as_str();
    let uploaded = Mutex::new(Vec::new());
    let existing = std::sync::atomic::AtomicUsize::new(0);
    let mounted_before = registry.stats.mounted_blobs.load(Ordering::Relaxed);
    let bytes_before = registry.stats.uploaded_bytes.load(Ordering::Relaxed);
    let retries_before = registry.stats.retries.load(Ordering::Relaxed);
    // The same blob may appear twice in an image: push each digest once.
    let mut seen = std::collections::BTreeSet::new();
    let blobs: Vec<_> = image.layers.iter().filter(|b| seen.insert(b.digest.clone())).collect();
    let known = &locations.known;
    let locations_cache = &locations.cache_dir;
    let results: Vec<Result<(), RegistryError>> = futures::stream::iter(blobs.into_iter().map(|blob| {
        let (uploaded, existing) = (&uploaded, &existing);
        async move {
            if registry.blob_exists(repo, &blob.digest).await? {
                existing.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let mut session = None;
            let from = blob
                .remote
                .as_ref()
                .filter(|r| r.registry == registry.host())
                .map(|r| r.repository.clone())
                .or_else(|| known.get(&blob.digest.to_string()).cloned())
                .filter(|r| r != repo);
            if let Some(from) = from {
                match registry.mount_blob(repo, &blob.digest, &from).await {
                    Ok(Mount::Mounted) => return Ok(()),
                    Ok(Mount::Refused(url)) => session = Some(url),
                    // No pull access to the source, or the registry does not mount: upload instead.
                    Err(RegistryError::Denied { .. }) | Err(RegistryError::Status { .. }) => {
                        tracing::info!("mount of {} from {from} refused; uploading", blob.digest)
                    }
                    Err(e) => return Err(e),
                }
            }
            if !blob.path.as_os_str().is_empty() && std::fs::symlink_metadata(&blob.path).is_ok() {
                if !blob.verified {
                    // A blob of a layout on disk: never a link, and its bytes must have its digest.
                    let (path, digest) = (blob.path.clone(), blob.digest.clone());
                    tokio::task::spawn_blocking(move || verify_blob_file(&path, &digest))
                        .await
                        .map_err(|source| RegistryError::Task { what: format!("checking blob {}", blob.digest), source })??;
                }
                registry.upload_blob_file(repo, &blob.digest, &blob.path, session).await?;
            } else if let Some(remote) = &blob.remote {
                // Not on disk: copy it from where it lives, through a temporary file.
                let scratch = match &locations_cache {
                    Some(c) => crate::scratch::cache_dir(c),
                    None => Ok(std::env::temp_dir()),
                }
                .map_err(|source| RegistryError::Io { path: std::env::temp_dir(), source })?;
                let tmp = tempfile::tempdir_in(&scratch).map_err(|source| RegistryError::Io { path: scratch.clone(), source })?;
                let file = tmp.path().join("blob");
                let size = blob.descriptor["size"].as_u64().unwrap_or(0);
                let source_registry;
                let from: &Registry = if remote.registry == registry.host() {
                    registry
                } else {
                    let text = format!("{}/{}", remote.registry, remote.repository);
                    let r: Reference = text.parse().map_err(|_| RegistryError::BadReference {
                        registry: remote.registry.clone(),
                        what: format!("copying blob {}", blob.digest),
                        reference: escape(&text),
                    })?;
                    source_registry = crate::registry::connect(&r, &crate::registry::AuthSources::from_env(), &Default::default()).await?;
                    &source_registry
                };
                from.download_blob(&remote.repository, &blob.digest, size, &file, tmp.path()).await?;
                registry.upload_blob_file(repo, &blob.digest, &file, session).await?;
            } else {
                return Err(RegistryError::BlobNowhere { digest: blob.digest.clone() });
            }
            if let Ok(mut u) = uploaded.lock() {
                u.push(blob.digest.to_string());
            }
            Ok(())
        }
    }))
    .buffer_unordered(jobs.max(1))
    .collect()
    .await;
    for r in results {
        r?;
    }
    let config_digest = image.config_digest();
    let config_from = locations.known.get(&config_digest.to_string()).filter(|r| r.as_str() != repo).cloned();
    if registry.blob_exists(repo, &config_digest).await? {
        existing.fetch_add(1, Ordering::Relaxed);
    } else if let Some(Ok(Mount::Mounted)) = match &config_from {
        Some(from) => Some(registry.mount_blob(repo, &config_digest, from).await),
        None => None,
    } {
    } else {
        registry.upload_blob_bytes(repo, &config_digest, &image.config).await?;
        if let Ok(mut u) = uploaded.lock() {
            u.push(config_digest.to_string());
        }
    }
    let digest: Digest = image.digest();
    let target_ref = target.tag.clone().unwrap_or_else(|| digest.to_string());
    registry.put_manifest(repo, &target_ref, &image.manifest, "application/vnd.oci.image.manifest.v1+json").await?;
    let mut uploaded = uploaded.into_inner().unwrap_or_default();
    uploaded.sort();
    for blob in &image.layers {
        locations.known.insert(blob.digest.to_string(), repo.to_string());
    }
    locations.known.insert(config_digest.to_string(), repo.to_string());
    locations.save();
    Ok(PushReport {
        reference: target.by_digest(&digest),
        tag: target.tag.clone(),
        digest: digest.to_string(),
        uploaded,
        uploaded_bytes: registry.stats.uploaded_bytes.load(Ordering::Relaxed) - bytes_before,
        mounted: registry.stats.mounted_blobs.load(Ordering::Relaxed) - mounted_before,
        existing: existing.into_inner(),
        retries: registry.stats.retries.load(Ordering::Relaxed) - retries_before,
    })
}

/// Checks that a blob file is a regular file (not a link) whose bytes have `digest`.
fn verify_blob_file(path: &std::path::Path, digest: &Digest) -> Result<(), RegistryError> {
    let io = |source| RegistryError::Io { path: path.to_path_buf(), source };
    let mut file = crate::files::open_regular(path).map_err(io)?;
    let mut w = envlayer_layers::HashingWriter::new(std::io::sink());
    std::io::copy(&mut file, &mut w).map_err(io)?;
    let (_, actual, _) = w.finish();
    if &actual != digest {
        return Err(RegistryError::DigestMismatch { subject: format!("blob file {}", path.display()), expected: digest.clone(), actual });
    }
    Ok(())
}
