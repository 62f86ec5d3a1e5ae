//! Pruning the cache with the images: a layer entry goes when no image left in the image repository
//! names any of its blobs; a package-info entry goes when no layer entry left has its package.

use super::{is_cache_tag, LayerEntry, INFO_TAG, LAYER_TAG};
use crate::registry::{Registry, RegistryError};
use crate::Digest;
use std::collections::BTreeSet;

/// Every layer digest named by the images of `repository` (image indexes followed to their images),
/// leaving out the manifests in `skip` (those a dry run would delete).
pub async fn referenced_layers(registry: &Registry, repository: &str, skip: &BTreeSet<String>) -> Result<BTreeSet<String>, RegistryError> {
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = registry.list_tags(repository).await?.into_iter().filter(|t| !is_cache_tag(t)).collect();
    while let Some(reference) = todo.pop() {
        // A manifest that cannot be read is an error, never "references nothing": its entries would go.
        let (bytes, _, digest) = match registry.get_manifest(repository, &reference).await {
            Ok(m) => m,
            // Deleted since the tags were listed.
            Err(RegistryError::Status { status: 404, .. }) => continue,
            Err(e) => return Err(e),
        };
        if skip.contains(&digest.to_string()) || !seen.insert(digest.to_string()) {
            continue;
        }
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        out.extend(m["layers"].as_array().into_iter().flatten().filter_map(|l| l["digest"].as_str().map(String::from)));
        todo.extend(crate::lifecycle::children(&m).iter().map(|d| d.to_string()).filter(|d| !skip.contains(d)));
    }
    Ok(out)
}

/// Deletes (unless `dry_run`) the entries of `repository` that `referenced` (layer digests of the images
/// that stay) no longer needs; returns their tags.
pub async fn prune_entries(registry: &Registry, repository: &str, referenced: &BTreeSet<String>, dry_run: bool) -> Result<Vec<String>, RegistryError> {
    let tags = registry.list_tags(repository).await?;
    let mut doomed: Vec<(String, Digest)> = Vec::new();
    let mut archives = BTreeSet::new();
    // When a kept entry cannot be read, which package-info entries it needs is unknown: none is deleted.
    let mut unread = false;
    for tag in tags.iter().filter(|t| t.starts_with(LAYER_TAG) && is_cache_tag(t)) {
        let (bytes, digest) = match registry.get_manifest(repository, tag).await {
            Ok((bytes, _, digest)) => (bytes, digest),
            Err(RegistryError::Status { status: 404, .. }) => continue,
            // Which package-info entries it keeps is unknown: none is deleted.
            Err(_) => {
                unread = true;
                continue;
            }
        };
        // A tag of the cache's name on anything else (a user's image) is not the cache's to delete.
        if !super::is_entry(&bytes) {
            continue;
        }
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let blobs: Vec<&str> = m["layers"].as_array().into_iter().flatten().filter_map(|l| l["digest"].as_str()).collect();
        if blobs.iter().any(|b| referenced.contains(*b)) {
            // It stays, and so do the package-info entries of its members.
            match read_entry(registry, repository, &m).await {
                Some(entry) => archives.extend(entry.members.into_iter().filter_map(|m| m.archive)),
                None => unread = true,
            }
        } else {
            doomed.push((tag.clone(), digest));
        }
    }
    for tag in tags.iter().filter(|t| t.starts_with(INFO_TAG) && is_cache_tag(t) && !unread) {
        if !archives.contains(&tag[INFO_TAG.len()..]) {
            if let Ok((bytes, _, digest)) = registry.get_manifest(repository, tag).await {
                if super::is_entry(&bytes) {
                    doomed.push((tag.clone(), digest));
                }
            }
        }
    }
    let mut deleted = Vec::new();
    for (tag, digest) in doomed {
        if dry_run || registry.delete_manifest(repository, &digest).await.is_ok() {
            deleted.push(tag);
        }
    }
    deleted.sort();
    Ok(deleted)
}

async fn read_entry(registry: &Registry, repository: &str, manifest: &serde_json::Value) -> Option<LayerEntry> {
    let digest: Digest = manifest["config"]["digest"].as_str()?.parse().ok()?;
    let inline = manifest["config"]["data"].as_str().and_then(crate::registry::auth::base64_decode).map(String::into_bytes).filter(|b| Digest::of(b) == digest);
    let bytes = match inline {
        Some(b) => b,
        None => registry.get_blob_bytes(repository, &digest).await.ok()?,
    };
    serde_json::from_slice(&bytes).ok()
}
