//! The lifecycle of multi-platform images: `resolve` of an image index (looked up by the identity of
//! all its platforms, built and pushed as one), and the index's children for `ls` and `prune`.

use super::{build_tag, inspect, tag_for, LifecycleError, Resolved, Status};
use crate::build::{self, BuildOptions};
use crate::registry::{self, Reference, RegistryError};
use crate::reporter::Reporter;
use envlayer_layers::Digest;
use std::time::Instant;

/// The digests of an index's platform manifests (none for an image manifest).
pub fn children(manifest: &serde_json::Value) -> Vec<Digest> {
    manifest["manifests"].as_array().into_iter().flatten().filter_map(|m| m["digest"].as_str().and_then(|d| d.parse().ok())).collect()
}

/// [`super::resolve`] for `opts.platforms`: a fresh index of the environment, or a new one built and
/// pushed (each platform's image by digest, its SBOM attached, then the index under the tag).
pub async fn resolve(opts: &BuildOptions, repo: &Reference, refresh: bool, no_build: bool, push_jobs: usize, reporter: &dyn Reporter) -> Result<Resolved, LifecycleError> {
    let mut timings = std::collections::BTreeMap::new();
    let t0 = Instant::now();
    let name = build::inputs::read_spec(opts).map_err(build::BuildError::from)?.name;
    let identity = build::multi::identity(opts, &opts.platforms, &opts.bases).await?;
    let tag = tag_for(&name, &identity);
    let registry = registry::connect(repo, &opts.registry.auth, &opts.registry.client).await?;
    let found = inspect(&registry, repo, &tag, opts.now).await?.filter(|i| i.hash == identity && i.name == name);
    timings.insert("lookup".to_string(), t0.elapsed().as_millis() as u64);
    if let Some(img) = found.filter(|i| i.status != Status::Expired && !refresh) {
        return Ok(Resolved::found(name, img, timings));
    }
    if no_build {
        return Err(LifecycleError::Miss { name, repo: repo.to_string(), tag });
    }
    let t1 = Instant::now();
    let built = build::multi::build_multi(opts, &opts.platforms, &opts.bases, reporter).await?;
    timings.insert("build".to_string(), t1.elapsed().as_millis() as u64);
    let t2 = Instant::now();
    let target = Reference { tag: Some(tag.clone()), digest: None, ..repo.clone() };
    let mut locations = crate::push::BlobLocations::load(&opts.cache_dir, &repo.registry);
    let push = build::multi::push(&registry, &target, &built, push_jobs, &mut locations).await?;
    let index: serde_json::Value = serde_json::from_slice(&built.index).unwrap_or_default();
    if let Some(created) = index["annotations"]["org.opencontainers.image.created"].as_str() {
        registry.put_manifest(&repo.repository, &build_tag(&tag, created), &built.index, build::multi::INDEX_TYPE).await?;
    }
    let mut sbom = None;
    let mut written = Vec::new();
    for (_, b) in &built.builds {
        written.extend(crate::regcache::publish_build(b.registry_cache.as_ref(), &opts.cache_dir, &target, push_jobs).await);
        if let Some((format, bytes)) = &b.sbom {
            if let Some(a) = crate::sbom::attach_or_warn(&registry, &repo.repository, &b.image, *format, bytes).await {
                sbom.get_or_insert(a);
            }
        }
    }
    timings.insert("push".to_string(), t2.elapsed().as_millis() as u64);
    let img = inspect(&registry, repo, &tag, opts.now)
        .await?
        .ok_or_else(|| RegistryError::Vanished { registry: registry.host().to_string(), reference: format!("{}:{tag}", repo.repository) })?;
    let builds = built.builds.into_iter().map(|(_, b)| b.summary).collect();
    Ok(Resolved {
        name,
        reference: push.reference.clone(),
        hit: false,
        image: img,
        build: None,
        builds,
        push: Some(push),
        sbom,
        registry_cache_written: written,
        timings_ms: timings,
    })
}
