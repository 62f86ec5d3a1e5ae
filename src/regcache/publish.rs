//! Writing a build's new entries after its push: each entry's blobs are made present in the cache
//! repository (already there, mounted from the pushed repository, or uploaded from the local cache), then
//! its config, then its manifest under its tag, so a tag never names an entry whose blobs are missing.

use super::{chain, Session};
use crate::cache::LayerCache;
use crate::registry::{Mount, Reference, RegistryError};
use crate::Digest;
use futures::StreamExt;

/// What writing the entries did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Published {
    /// `registry/repository` of the cache.
    pub repo: String,
    /// Entries written (their tags).
    pub written: Vec<String>,
    /// Entries not written, each with why.
    pub failed: Vec<String>,
}

/// Why an entry was not tried.
const DENIED_BEFORE: &str = "the registry refused an earlier write (read-only credentials?)";

/// An entry to write: tag, config, manifest, and the layer blobs it names.
type Encoded = (String, Vec<u8>, Vec<u8>, Vec<Digest>);

/// Writes the entries `session` queued, at most `jobs` at a time. `pushed` is where the image went (its
/// blobs are mounted from there when the cache is another repository of the same registry). Failures
/// are reported, not raised: the image is already pushed, and a missing entry only costs a rebuild.
pub async fn publish(session: &Session, cache: &LayerCache, pushed: Option<&Reference>, jobs: usize) -> Published {
    let (layers, infos) = session.take_pending();
    let repo = session.repo().repository.clone();
    let registry = session.registry();
    let from = pushed.filter(|p| p.registry == session.repo().registry && p.repository != repo).map(|p| p.repository.clone());
    let mut out = Published { repo: session.repo().to_string(), ..Default::default() };
    let mut infos = infos;
    if !infos.is_empty() {
        // Only the package-info entries need the empty blob.
        if let Err(e) = ensure_bytes(session, super::entry::EMPTY).await {
            out.failed.push(format!("the empty blob (package-info entries not written): {}", chain(&e)));
            infos.clear();
            if matches!(e, RegistryError::Denied { .. }) {
                // Read-only: nothing else would be written either.
                out.failed.push(format!("{} layer entries not tried: {DENIED_BEFORE}", layers.len()));
                return out;
            }
        }
    }
    let mut work: Vec<Encoded> = Vec::new();
    for e in &layers {
        let (tag, config, manifest) = e.encode();
        work.push((tag, config, manifest, e.layers.iter().map(|p| p.layer.digest.clone()).collect()));
    }
    for e in &infos {
        let (tag, config, manifest) = e.encode();
        work.push((tag, config, manifest, Vec::new()));
    }
    // A cache that refuses writes (read-only credentials) refuses them all: the first refusal stops the rest.
    let denied = std::sync::atomic::AtomicBool::new(false);
    // Each entry: written (`Ok(None)`), left alone (`Ok(Some(why))`), or failed.
    let results: Vec<(String, Result<Option<String>, RegistryError>)> = futures::stream::iter(work.into_iter().map(|(tag, config, manifest, blobs)| {
        let from = from.clone();
        let repo = repo.clone();
        let denied = &denied;
        async move {
            if denied.load(std::sync::atomic::Ordering::Relaxed) {
                return (tag, Ok(Some(DENIED_BEFORE.to_string())));
            }
            let r = async {
                for digest in &blobs {
                    if registry.blob_exists(&repo, digest).await? {
                        continue;
                    }
                    if let Some(from) = &from {
                        if let Ok(Mount::Mounted) = registry.mount_blob(&repo, digest, from).await {
                            continue;
                        }
                    }
                    let path = cache.blob_path(digest);
                    if std::fs::symlink_metadata(&path).is_err() {
                        return Err(RegistryError::BlobNowhere { digest: digest.clone() });
                    }
                    registry.upload_blob_file(&repo, digest, &path, None).await?;
                }
                ensure_bytes(session, &config).await?;
                // An entry rewritten (it failed a check) leaves no untagged manifest behind: the old one,
                // read before the new goes in, is deleted once the tag names the new one.
                // Only a manifest that is an entry: a tag of the cache's name may have been pointed at
                // anything (an image), which is never deleted.
                let old = match registry.get_manifest(&repo, &tag).await {
                    Ok((bytes, _, d)) if super::is_entry(&bytes) => Some(d),
                    // Not an entry: the tag is left where it is (it may be all that names an image).
                    Ok(_) => return Ok(Some("the tag names something that is not a registry-cache entry: left alone".to_string())),
                    Err(_) => None,
                };
                let new = registry.put_manifest(&repo, &tag, &manifest, "application/vnd.oci.image.manifest.v1+json").await?;
                if let Some(old) = old.filter(|o| o != &new) {
                    let _ = registry.delete_manifest(&repo, &old).await;
                }
                Ok(None)
            }
            .await;
            if matches!(r, Err(RegistryError::Denied { .. })) {
                denied.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            (tag, r)
        }
    }))
    .buffer_unordered(jobs.max(1))
    .collect()
    .await;
    let mut skipped = 0;
    for (tag, r) in results {
        match r {
            Ok(None) => out.written.push(tag),
            Ok(Some(why)) if why == DENIED_BEFORE => skipped += 1,
            Ok(Some(why)) => out.failed.push(format!("{tag}: {why}")),
            Err(e) => out.failed.push(format!("{tag}: {}", chain(&e))),
        }
    }
    if skipped > 0 {
        out.failed.push(format!("{skipped} more entries not tried: {DENIED_BEFORE}"));
    }
    out.written.sort();
    out.failed.sort();
    out
}

/// Uploads a small blob unless the cache repository has it.
async fn ensure_bytes(session: &Session, bytes: &[u8]) -> Result<(), RegistryError> {
    let (registry, repo) = (session.registry(), &session.repo().repository);
    let d = Digest::of(bytes);
    if !registry.blob_exists(repo, &d).await? {
        registry.upload_blob_bytes(repo, &d, bytes).await?;
    }
    Ok(())
}

/// Writes the entries a build queued in `session` (its `registry_cache`), after its image went to
/// `pushed`; none when it used no cache.
pub async fn publish_build(session: Option<&std::sync::Arc<Session>>, cache_dir: &std::path::Path, pushed: &Reference, jobs: usize) -> Option<Published> {
    let session = session?;
    let published = publish(session, &LayerCache::new(cache_dir), Some(pushed), jobs).await;
    for f in &published.failed {
        tracing::warn!("registry cache {}: not written: {f}", published.repo);
    }
    Some(published)
}
