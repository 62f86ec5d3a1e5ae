//! `prune`: deleting expired environment images, with what belongs to them (an index's platform
//! images, their SBOMs and referrers tags), never one a user's tag names.

use super::{is_env_tag, multi, scan, EnvImage, Status};
use crate::registry::{Reference, Registry, RegistryError};
use envlayer_layers::Digest;
use std::collections::BTreeSet;

/// Deletes the expired envlayer images of `repo` (manifest DELETE by digest), unless `dry_run`; returns
/// them, each with every tag the delete removes. Kept: images that are not envlayer's or not expired,
/// and any manifest that a tag a user named (not `<name>-<hash>[-<time>]`) points at, expired or not.
pub async fn prune(registry: &Registry, repo: &Reference, now: jiff::Timestamp, dry_run: bool) -> Result<Vec<EnvImage>, RegistryError> {
    let (images, foreign, seen) = scan(registry, repo, now).await?;
    let (mut expired, kept): (Vec<EnvImage>, Vec<EnvImage>) =
        images.into_iter().partition(|img| img.status == Status::Expired && !foreign.contains(&img.digest) && img.tags.iter().all(|t| is_env_tag(t, img)));
    expired.sort_by(|a, b| a.tag.cmp(&b.tag));
    // A dry run decides the same way (what a real run would keep), and deletes nothing.
    if !expired.is_empty() {
        // What must stay: manifests other tags name (a user's, a live image's), a tag added since the scan
        // (a user pinning an image right now), and the platform images of every index that stays.
        let mut protected: BTreeSet<String> = foreign.clone();
        protected.extend(kept.iter().map(|i| i.digest.clone()));
        for tag in registry.list_tags(&repo.repository).await?.into_iter().filter(|t| !seen.contains(t) && !crate::regcache::is_cache_tag(t)) {
            if let Ok((_, _, d)) = registry.get_manifest(&repo.repository, &tag).await {
                protected.insert(d.to_string());
            }
        }
        for digest in protected.clone() {
            if let Ok((bytes, _, _)) = registry.get_manifest(&repo.repository, &digest).await {
                let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                protected.extend(multi::children(&m).iter().map(|d| d.to_string()));
            }
        }
        expired.retain(|img| !protected.contains(&img.digest));
        for img in expired.iter_mut().filter(|_| !dry_run) {
            let digest: Digest = img
                .digest
                .parse()
                .map_err(|source| RegistryError::BadDigest { subject: format!("{}: {}:{}", registry.host(), repo.repository, img.tag), source })?;
            // An index's platform images go with it, each with its SBOMs: those that nothing kept names
            // and that are this environment's own images.
            let children = match registry.get_manifest(&repo.repository, &img.digest).await {
                Ok((bytes, _, _)) => serde_json::from_slice::<serde_json::Value>(&bytes).map(|m| multi::children(&m)).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            registry.delete_manifest(&repo.repository, &digest).await?;
            img.referrers = delete_referrers(registry, repo, &digest).await;
            for child in children.into_iter().filter(|c| !protected.contains(&c.to_string())) {
                let ours = match registry.get_manifest(&repo.repository, &child.to_string()).await {
                    Ok((bytes, _, _)) => serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|m| m["annotations"][crate::keys::ANNOTATION_ENV_NAME] == img.name.as_str()),
                    Err(_) => false,
                };
                if ours && registry.delete_manifest(&repo.repository, &child).await.is_ok() {
                    img.referrers.push(child.to_string());
                    img.referrers.extend(delete_referrers(registry, repo, &child).await);
                }
            }
        }
    }
    Ok(expired)
}

/// Deletes envlayer's artifacts (its SBOMs) about `subject` listed under the subject's referrers tag;
/// the tag's index goes when nothing else is left in it, else it is written back with the rest (another
/// tool's signatures, attestations). Returns the digests deleted. Best effort: the image is gone already.
async fn delete_referrers(registry: &Registry, repo: &Reference, subject: &Digest) -> Vec<String> {
    let tag = crate::referrers::referrers_tag(subject);
    let Ok((bytes, _, index_digest)) = registry.get_manifest(&repo.repository, &tag).await else { return Vec::new() };
    let mut index: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let Some(entries) = index["manifests"].as_array().cloned() else { return Vec::new() };
    let mut deleted = Vec::new();
    let mut rest = Vec::new();
    for entry in entries {
        let ours = match entry["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()) {
            Some(d) => match registry.get_manifest(&repo.repository, &d.to_string()).await {
                Ok((m, _, _)) => serde_json::from_slice::<serde_json::Value>(&m).ok().is_some_and(|m| crate::referrers::is_envlayer_artifact(&m, subject)).then_some(d),
                Err(_) => None,
            },
            None => None,
        };
        match ours {
            Some(d) if registry.delete_manifest(&repo.repository, &d).await.is_ok() => deleted.push(d.to_string()),
            _ => rest.push(entry),
        }
    }
    if rest.is_empty() {
        if registry.delete_manifest(&repo.repository, &index_digest).await.is_ok() {
            deleted.push(index_digest.to_string());
        }
    } else if !deleted.is_empty() {
        index["manifests"] = serde_json::Value::Array(rest);
        let _ = registry.put_manifest(&repo.repository, &tag, &crate::image::canonical_json(&index), "application/vnd.oci.image.index.v1+json").await;
    }
    deleted
}
