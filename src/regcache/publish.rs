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
    let results: Vec<(String, Result<(), RegistryError>)> = futures::stream::iter(work.into_iter().map(|(tag, config, manifest, blobs)| {
        let from = from.clone();
        let repo = repo.clone();
        let denied = &denied;
        async move {
            if denied.load(std::sync::atomic::Ordering::Relaxed) {
                return (tag, Err(RegistryError::Denied { registry: registry.host().to_string(), what: "writing registry-cache entries".into(), reason: "an earlier write was refused".into() }));
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
                    _ => None,
                };
                let new = registry.put_manifest(&repo, &tag, &manifest, "application/vnd.oci.image.manifest.v1+json").await?;
                if let Some(old) = old.filter(|o| o != &new) {
                    let _ = registry.delete_manifest(&repo, &old).await;
                }
                Ok(())
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
    for (tag, r) in results {
        match r {
            Ok(()) => out.written.push(tag),
            Err(e) => out.failed.push(format!("{tag}: {}", chain(&e))),
        }
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
