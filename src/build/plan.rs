//! Step 4, plan: which packages are baked and which install when the container starts (link scripts),
//! whether `.pyc` files are compiled, each package's layer cache key, and how baked packages share
//! layers under the budget.

use super::{dist_name, BuildError, BuildOptions, Inputs};
use crate::cache::{package_key, LayerParams};
use crate::fetch::PackageStore;
use crate::install::InstallTarget;
use crate::link_scripts::{LinkInfo, LinkScriptPolicy};
use crate::spec::InstallMode;
use envlayer_layers::{plan_layers, PackOptions, PlanItem};
use futures::StreamExt;
use rattler_conda_types::{RepoDataRecord, Subdir};
use std::collections::BTreeMap;

/// The plan of a build.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Indices of the baked packages.
    pub baked: Vec<usize>,
    /// Indices of the packages installed when the container starts.
    pub runtime_packages: Vec<usize>,
    /// Packages with link scripts (`name-version-build`), and their scripts.
    pub link_scripts: BTreeMap<String, Vec<String>>,
    /// Pre-link messages, as `package: message`.
    pub messages: Vec<String>,
    /// The python record compiling `.pyc` files, if any.
    pub pyc_python: Option<usize>,
    /// Why no `.pyc` files are compiled, when they are not.
    pub pyc_reason: Option<String>,
    /// What decides the layers' bytes besides the packages.
    pub params: LayerParams,
    /// Each record's layer cache key.
    pub keys: Vec<String>,
    /// The baked packages, grouped into layers.
    pub groups: Vec<Vec<usize>>,
    /// Whether the archives of runtime packages get a layer of their own.
    pub needs_runtime_layer: bool,
    /// The runtime packages whose archives ship in the image (see [`plan`]).
    pub shipped: Vec<usize>,
    /// Warnings so far.
    pub warnings: Vec<String>,
}

/// What each record's archive says: link scripts, messages, the Python distributions it provides. With a
/// registry cache, what is known here is preferred, then the cache's entry, then the archive itself
/// (whose answer the cache lacks, and is queued for it).
pub async fn inspect(opts: &BuildOptions, records: &[RepoDataRecord], store: &PackageStore, remote: Option<&crate::regcache::Session>) -> Result<Vec<LinkInfo>, BuildError> {
    use crate::regcache::Found;
    Ok(futures::stream::iter(records.iter().map(|r| async move {
        let (Some(session), Some(hash)) = (remote, crate::fetch::package_hash(r)) else {
            return crate::link_scripts::inspect(store, &opts.cache_dir, r).await;
        };
        let found = session.info(&hash).await;
        if let Found::Hit(info) = found {
            match crate::link_scripts::check_info(r.package_record.name.as_normalized(), &info) {
                Ok(()) => return Ok(crate::link_scripts::cached(&opts.cache_dir, r).unwrap_or(info)),
                Err(why) => session.reject(&format!("{}{hash}", crate::regcache::INFO_TAG), &why),
            }
        }
        let info = crate::link_scripts::inspect(store, &opts.cache_dir, r).await?;
        session.add_info(crate::regcache::InfoEntry { format: crate::regcache::FORMAT, key: hash, info: info.clone() });
        Ok(info)
    }))
        .buffered(opts.jobs.max(1) * 4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?)
}

/// Plans the build of `records` (inspected: `infos`) and the pip `wheels` (numbered after the records)
/// on a base of `base_layers` layers.
pub fn plan(
    opts: &BuildOptions,
    inputs: &Inputs,
    records: &[RepoDataRecord],
    infos: &[LinkInfo],
    wheels: &[crate::pypi::Dist],
    python: Option<rattler::install::PythonInfo>,
    base_layers: usize,
) -> Result<Plan, BuildError> {
    let mut warnings = Vec::new();
    // Link scripts: which packages cannot be baked (those with scripts, and what depends on them).
    let link_scripts: BTreeMap<String, Vec<String>> =
        records.iter().zip(infos).filter(|(_, i)| !i.scripts.is_empty()).map(|(r, i)| (dist_name(r), i.scripts.clone())).collect();
    let flagged: Vec<bool> = infos.iter().map(|i| !i.scripts.is_empty()).collect();
    let runtime: Vec<bool> = match (inputs.install_mode, opts.link_scripts) {
        (InstallMode::Runtime, _) => vec![true; records.len()],
        (_, LinkScriptPolicy::Fail) if !link_scripts.is_empty() => {
            let packages = link_scripts.iter().map(|(p, s)| format!("{p} ({})", s.join(", "))).collect();
            return Err(BuildError::LinkScripts { packages });
        }
        (_, LinkScriptPolicy::Ignore) => {
            for (p, s) in &link_scripts {
                warnings.push(format!("{p}: baked with --link-scripts ignore; its scripts ({}) did not run", s.join(", ")));
            }
            vec![false; records.len()]
        }
        _ => crate::link_scripts::runtime_set(records, &flagged),
    };
    let messages: Vec<String> =
        records.iter().zip(infos).flat_map(|(r, i)| i.messages.iter().map(move |m| format!("{}: {m}", dist_name(r)))).collect();
    let mut baked: Vec<usize> = (0..records.len()).filter(|&i| !runtime[i]).collect();
    let runtime_packages: Vec<usize> = (0..records.len()).filter(|&i| runtime[i]).collect();

    // .pyc: compiled with the environment's own python, when this machine can run it.
    let python_idx = records.iter().position(|r| r.package_record.name.as_normalized() == "python");
    // The compiling workers need Python 3.7 or newer (hash-based .pyc).
    let old_python = python.as_ref().is_some_and(|p| p.short_version < (3, 7));
    let pyc_python = match (opts.pyc, python_idx, &python) {
        (true, Some(p), Some(_)) if !runtime[p] && !old_python && Subdir::current() == Some(opts.platform) => Some(p),
        _ => None,
    };
    let pyc_reason = match (opts.pyc, python_idx) {
        (false, _) => Some("--no-pyc".to_string()),
        (true, None) => Some("the environment has no python".to_string()),
        (true, Some(p)) if runtime[p] => Some("python installs at runtime".to_string()),
        (true, Some(_)) if old_python => Some("python older than 3.7 has no hash-based .pyc".to_string()),
        (true, Some(_)) if pyc_python.is_none() => Some(format!(
            "this machine cannot run the environment's python (image platform {}, build machine {})",
            opts.platform,
            Subdir::current().map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())
        )),
        _ => None,
    };
    // Asked for with --no-pyc: not worth a warning (the summary still gives the reason).
    if let (Some(r), Some(_), true) = (&pyc_reason, python_idx, opts.pyc) {
        warnings.push(format!("no .pyc files compiled: {r}"));
    }

    let params = LayerParams {
        target: InstallTarget { prefix: inputs.prefix.clone(), platform: opts.platform, python },
        compression: opts.compression,
        mtime: PackOptions::default().mtime,
        pyc: pyc_python.map(|p| dist_name(&records[p])),
    };
    let mut keys: Vec<String> = records.iter().map(|r| package_key(r, &params)).collect();
    keys.extend(wheels.iter().map(|w| crate::cache::wheel_key(w, &params)));
    let conda_baked = baked.len();
    baked.extend(records.len()..records.len() + wheels.len());

    // One layer per baked package unless the budget forces sharing; a runtime layer if needed.
    // Runtime packages whose archives ship in the image: all of them for link scripts; under the
    // whole-environment opt-out, those from a local channel (a path on this machine the container cannot
    // reach), whose URLs the image's lock then points at the shipped archives.
    let shipped: Vec<usize> = runtime_packages
        .iter()
        .copied()
        .filter(|&i| inputs.install_mode == InstallMode::Baked || records[i].url.scheme() == "file")
        .collect();
    if inputs.install_mode == InstallMode::Runtime && !shipped.is_empty() {
        warnings.push(format!(
            "{} of the packages installed at the container's start come from a local channel, which the container cannot reach: their archives ship in the image",
            shipped.len()
        ));
    }
    let needs_runtime_layer = !shipped.is_empty();
    // Conda packages and wheels never share a layer; the budget is split between them by their numbers.
    let (conda, pip) = baked.split_at(conda_baked);
    let kinds = usize::from(!conda.is_empty()) + usize::from(!pip.is_empty());
    let needed = 1 + usize::from(needs_runtime_layer) + kinds;
    if opts.max_layers < base_layers + needed {
        return Err(BuildError::LayerBudget { max_layers: opts.max_layers, base_layers, needed });
    }
    // The layers for packages: at least one per kind present.
    let budget = opts.max_layers - base_layers - 1 - usize::from(needs_runtime_layer);
    let pip_budget = match (conda.len(), pip.len()) {
        (_, 0) => 0,
        (0, _) => budget,
        (c, p) => (budget * p / (c + p)).clamp(1, budget - 1),
    };
    let conda_items: Vec<PlanItem> = conda
        .iter()
        .map(|&i| PlanItem { key: records[i].package_record.name.as_normalized().to_string(), size: records[i].package_record.size.unwrap_or(0) })
        .collect();
    let pip_items: Vec<PlanItem> = pip
        .iter()
        .map(|&i| {
            let w = &wheels[i - records.len()];
            // No size: a lock does not record it, and a replay must group layers as the first build did.
            PlanItem { key: format!("pypi:{}", w.name), size: 0 }
        })
        .collect();
    let conda_budget = budget - pip_budget;
    // A package of unknown size (a lock or channel without it) is not assumed small.
    let bucket_items: Vec<PlanItem> = conda
        .iter()
        .zip(&conda_items)
        .map(|(&i, item)| PlanItem { key: item.key.clone(), size: records[i].package_record.size.unwrap_or(u64::MAX) })
        .collect();
    let conda_plan = opts.buckets.and_then(|b| envlayer_layers::plan_buckets(&bucket_items, b.below, b.count, conda_budget)).unwrap_or_else(|| plan_layers(&conda_items, conda_budget));
    let mut groups: Vec<Vec<usize>> = conda_plan.into_iter().map(|g| g.into_iter().map(|j| conda[j]).collect()).collect();
    groups.extend(plan_layers(&pip_items, pip_budget).into_iter().map(|g| g.into_iter().map(|j| pip[j]).collect::<Vec<_>>()));
    Ok(Plan { baked, runtime_packages, shipped, link_scripts, messages, pyc_python, pyc_reason, params, keys, groups, needs_runtime_layer, warnings })
}

/// Which packages span several layers, and how many: a conda package alone in its layer whose archive is
/// over `above` spans one layer per `above` bytes (rounded up, at most 16), largest packages first while
/// the image stays within `spare` more layers. Returns the split and the packages kept whole for the
/// budget.
pub fn split_plan(records: &[RepoDataRecord], groups: &[Vec<usize>], above: u64, mut spare: usize) -> (BTreeMap<usize, usize>, Vec<usize>) {
    let mut candidates: Vec<(u64, usize)> = groups
        .iter()
        .filter_map(|g| match g.as_slice() {
            [i] => records.get(*i).and_then(|r| r.package_record.size).filter(|&s| s > above).map(|s| (s, *i)),
            _ => None,
        })
        .collect();
    candidates.sort_by(|a, b| b.cmp(a));
    let (mut split, mut whole) = (BTreeMap::new(), Vec::new());
    for (size, i) in candidates {
        let n = size.div_ceil(above.max(1)).clamp(1, 16) as usize;
        if n > 1 && n - 1 <= spare {
            spare -= n - 1;
            split.insert(i, n);
        } else if n > 1 {
            whole.push(i);
        }
    }
    (split, whole)
}
