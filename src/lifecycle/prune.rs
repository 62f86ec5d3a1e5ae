//! `prune`: deleting expired environment images, with what belongs to them (an index's platform
//! images, their SBOMs and referrers tags), never one a user's tag names.

use super::{is_env_tag, multi, scan, EnvImage, Status};
use crate::registry::{Reference, Registry, RegistryError};
use envlayer_layers::Digest;

/// Deletes the expired envlayer images of `repo` (manifest DELETE by digest), unless `dry_run`; returns
/// them, each with every tag the delete removes. Kept: images that are not envlayer's or not expired,
/// and any manifest that a tag a user named (not `<name>-<hash>[-<time>]`) points at, expired or not.
pub async fn prune(registry: &Registry, repo: &Reference, now: jiff::Timestamp, dry_run: bool) -> Result<Vec<EnvImage>, RegistryError> {
    let (images, foreign, seen) = scan(registry, repo, now).await?;
    let mut expired: Vec<EnvImage> = images
        .into_iter()
        .filter(|img| img.status == Status::Expired && !foreign.contains(&img.digest) && img.tags.iter().all(|t| is_env_tag(t, img)))
        .collect();
    expired.sort_by(|a, b| a.tag.cmp(&b.tag));
    if !dry_run && !expired.is_empty() {
        // A tag added since the scan (a user pinning an image right now) keeps its manifest.
        for tag in registry.list_tags(&repo.repository).await?.into_iter().filter(|t| !seen.contains(t)) {
            if let Ok((_, _, d)) = registry.get_manifest(&repo.repository, &tag).await {
                expired.retain(|img| img.digest != d.to_string());
            }
        }
        for img in expired.iter_mut() {
            let digest: Digest = img
                .digest
                .parse()
                .map_err(|source| RegistryError::BadDigest { subject: format!("{}: {}:{}", registry.host(), repo.repository, img.tag), source })?;
            // An index's platform images go with it (nothing else names them), each with its SBOMs.
            let children = match registry.get_manifest(&repo.repository, &img.digest).await {
                Ok((bytes, _, _)) => serde_json::from_slice::<serde_json::Value>(&bytes).map(|m| multi::children(&m)).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            registry.delete_manifest(&repo.repository, &digest).await?;
            img.referrers = delete_referrers(registry, repo, &digest).await;
            for child in children {
                if registry.delete_manifest(&repo.repository, &child).await.is_ok() {
                    img.referrers.push(child.to_string());
                    img.referrers.extend(delete_referrers(registry, repo, &child).await);
                }
            }
        }
    }
    Ok(expired)
}

/// Deletes the artifacts listed under the referrers tag of `subject` (its SBOMs) whose subject it is,
/// then the tag's index; returns the digests deleted. Best effort: the image itself is already gone.
async fn delete_referrers(registry: &Registry, repo: &Reference, subject: &Digest) -> Vec<String> {
    let tag = crate::referrers::referrers_tag(subject);
    let Ok((bytes, _, index_digest)) = registry.get_manifest(&repo.repository, &tag).await else { return Vec::new() };
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let mut deleted = Vec::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let Some(d) = entry["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()) else { continue };
        let Ok((m, _, _)) = registry.get_manifest(&repo.repository, &d.to_string()).await else { continue };
        let about_subject = serde_json::from_slice::<serde_json::Value>(&m).ok().is_some_and(|m| m["subject"]["digest"] == subject.to_string());
        if about_subject && registry.delete_manifest(&repo.repository, &d).await.is_ok() {
            deleted.push(d.to_string());
        }
    }
    if registry.delete_manifest(&repo.repository, &index_digest).await.is_ok() {
        deleted.push(index_digest.to_string());
    }
    deleted
}
