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
    /// Warnings so far.
    pub warnings: Vec<String>,
}

/// Plans the build of `records` on a base of `base_layers` layers.
pub async fn plan(
    opts: &BuildOptions,
    inputs: &Inputs,
    records: &[RepoDataRecord],
    python: Option<rattler::install::PythonInfo>,
    base_layers: usize,
    store: &PackageStore,
) -> Result<Plan, BuildError> {
    let mut warnings = Vec::new();
    // Link scripts: which packages cannot be baked (those with scripts, and what depends on them).
    let infos: Vec<LinkInfo> = futures::stream::iter(records.iter().map(|r| crate::link_scripts::inspect(store, &opts.cache_dir, r)))
        .buffered(opts.jobs.max(1) * 2)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let link_scripts: BTreeMap<String, Vec<String>> =
        records.iter().zip(&infos).filter(|(_, i)| !i.scripts.is_empty()).map(|(r, i)| (dist_name(r), i.scripts.clone())).collect();
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
        records.iter().zip(&infos).flat_map(|(r, i)| i.messages.iter().map(move |m| format!("{}: {m}", dist_name(r)))).collect();
    let baked: Vec<usize> = (0..records.len()).filter(|&i| !runtime[i]).collect();
    let runtime_packages: Vec<usize> = (0..records.len()).filter(|&i| runtime[i]).collect();

    // .pyc: compiled with the environment's own python, when this machine can run it.
    let python_idx = records.iter().position(|r| r.package_record.name.as_normalized() == "python");
    let pyc_python = match (opts.pyc, python_idx, &python) {
        (true, Some(p), Some(_)) if !runtime[p] && Subdir::current() == Some(opts.platform) => Some(p),
        _ => None,
    };
    let pyc_reason = match (opts.pyc, python_idx) {
        (false, _) => Some("--no-pyc".to_string()),
        (true, None) => Some("the environment has no python".to_string()),
        (true, Some(p)) if runtime[p] => Some("python installs at runtime".to_string()),
        (true, Some(_)) if pyc_python.is_none() => Some(format!(
            "this machine cannot run the environment's python (image platform {}, build machine {})",
            opts.platform,
            Subdir::current().map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())
        )),
        _ => None,
    };
    if let (Some(r), Some(_)) = (&pyc_reason, python_idx) {
        warnings.push(format!("no .pyc files compiled: {r}"));
    }

    let params = LayerParams {
        target: InstallTarget { prefix: inputs.prefix.clone(), platform: opts.platform, python },
        compression: opts.compression,
        mtime: PackOptions::default().mtime,
        pyc: pyc_python.map(|p| dist_name(&records[p])),
    };
    let keys: Vec<String> = records.iter().map(|r| package_key(r, &params)).collect();

    // One layer per baked package unless the budget forces sharing; a runtime layer if needed.
    let needs_runtime_layer = !runtime_packages.is_empty() && inputs.install_mode == InstallMode::Baked;
    let budget = opts.max_layers - base_layers - 1 - usize::from(needs_runtime_layer);
    let items: Vec<PlanItem> = baked
        .iter()
        .map(|&i| PlanItem { key: records[i].package_record.name.as_normalized().to_string(), size: records[i].package_record.size.unwrap_or(0) })
        .collect();
    let groups = plan_layers(&items, budget).into_iter().map(|g| g.into_iter().map(|j| baked[j]).collect()).collect();
    Ok(Plan { baked, runtime_packages, link_scripts, messages, pyc_python, pyc_reason, params, keys, groups, needs_runtime_layer, warnings })
}
