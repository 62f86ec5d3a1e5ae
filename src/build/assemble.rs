//! Step 8, layers in order: the base's, then the packages', the runtime archives' and the environment's,
//! each with its descriptor annotations and its line in the summary.

use super::{EnvLayers, LayerSummary, PackageSummary};
use crate::cache::{CachedLayer, LayerCache};
use crate::image::{BaseImage, NewLayer};
use crate::keys;
use crate::build::package_layers::Baked;
use rattler_conda_types::RepoDataRecord;
use std::collections::BTreeMap;

/// envlayer's layers for the image, and what the summary says of every layer and package.
pub struct Layers {
    /// The new layers, bottom first.
    pub new: Vec<NewLayer>,
    /// Every layer of the image, the base's included.
    pub summaries: Vec<LayerSummary>,
    /// Every package, with its layer.
    pub packages: Vec<PackageSummary>,
    /// Groups of packages that share a layer.
    pub shared: Vec<Vec<String>>,
}

fn summary(c: &CachedLayer, packages: Vec<String>, cached: bool, remote: bool) -> LayerSummary {
    LayerSummary {
        digest: c.layer.digest.to_string(),
        diff_id: Some(c.layer.diff_id.to_string()),
        size: c.layer.size,
        media_type: c.layer.media_type().to_string(),
        packages,
        cached,
        remote,
    }
}

/// Orders the layers and describes them.
#[allow(clippy::too_many_arguments)]
pub fn layers(
    base: Option<&BaseImage>,
    baked: &Baked,
    env: &EnvLayers,
    records: &[RepoDataRecord],
    wheels: &[crate::pypi::Dist],
    runtime: &[usize],
    inputs: &super::Inputs,
    cache: &LayerCache,
    remote: Option<&crate::image::RemoteBlob>,
) -> Layers {
    let mut new = Vec::new();
    let mut summaries: Vec<LayerSummary> = base
        .map(|b| {
            b.layers
                .iter()
                .map(|l| LayerSummary {
                    digest: l.digest.to_string(),
                    diff_id: None,
                    size: l.descriptor["size"].as_u64().unwrap_or(0),
                    media_type: l.descriptor["mediaType"].as_str().unwrap_or_default().to_string(),
                    packages: vec!["base".into()],
                    cached: true,
                    remote: false,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut packages = vec![None; records.len() + wheels.len()];
    let mut shared = Vec::new();
    // A registry-cache hit not downloaded is referenced where it is (the push mounts it or finds it there).
    let mut push = |c: &CachedLayer, annotations: BTreeMap<String, String>, created_by: String, names: Vec<String>, cached: bool, from_registry: bool| {
        let path = cache.blob_path(&c.layer.digest);
        let remote = remote.filter(|_| from_registry && std::fs::symlink_metadata(&path).is_err()).cloned();
        new.push(NewLayer { layer: c.layer.clone(), path, annotations, created_by, remote });
        summaries.push(summary(c, names, cached, from_registry));
        summaries.len() - 1
    };
    // A part of a split package with no files (a package with fewer files than parts) is left out.
    for b in baked.layers.iter().filter(|b| b.part.is_none() || b.cached.layer.entries > 0) {
        let c = &b.cached;
        let mut annotations = BTreeMap::from([(keys::ANNOTATION_PACKAGES.to_string(), c.packages.join(","))]);
        let mut created_by = format!("envlayer: {}", c.packages.join(" "));
        if let Some((k, n)) = b.part {
            annotations.insert(keys::ANNOTATION_PART.to_string(), format!("{}/{n}", k + 1));
            created_by.push_str(&format!(" (part {} of {n})", k + 1));
        }
        let idx = push(c, annotations, created_by, c.packages.clone(), b.from_cache, b.remote);
        // A package split across layers is listed with its first.
        for &i in &b.members {
            if packages[i].is_some() {
                continue;
            }
            packages[i] = Some(match records.get(i) {
                Some(r) => PackageSummary::new(r, idx),
                None => PackageSummary::wheel(&wheels[i - records.len()], idx),
            });
        }
        if b.members.len() > 1 {
            shared.push(c.packages.clone());
        }
    }
    if let Some((c, from_cache)) = &env.archives {
        let names = env.runtime_names.join(",");
        let idx = push(
            c,
            BTreeMap::from([(keys::ANNOTATION_RUNTIME.to_string(), names)]),
            format!("envlayer: archives installed at runtime: {}", env.runtime_names.join(" ")),
            vec!["runtime-archives".into()],
            *from_cache,
            false,
        );
        for &i in runtime {
            packages[i] = Some(PackageSummary::new(&records[i], idx));
        }
    }
    let (c, from_cache) = &env.env;
    push(
        c,
        BTreeMap::from([(keys::ANNOTATION_PACKAGES.to_string(), String::new())]),
        format!("envlayer: environment {} ({:?})", inputs.spec.name, inputs.install_mode),
        vec!["environment".into()],
        *from_cache,
        false,
    );
    Layers { new, summaries, packages: packages.into_iter().flatten().collect(), shared }
}
