//! Step 3b, pip: the wheels of the environment's pip part, from the lock file or resolved by uv for the
//! target. Runs after the conda packages are known and inspected, because the distributions they
//! provide (their `site-packages/*.dist-info`) satisfy pip requirements for them.

use super::{BuildError, BuildOptions, Inputs};
use crate::link_scripts::LinkInfo;
use crate::pypi::resolve::{Dist, ResolveInput, Target, Uv};
use crate::spec::InstallMode;
use std::collections::BTreeMap;

/// The wheels to install, in name order; empty for an environment without a pip part.
pub async fn wheels(
    opts: &BuildOptions,
    inputs: &Inputs,
    infos: &[LinkInfo],
    python: Option<&rattler::install::PythonInfo>,
) -> Result<Vec<Dist>, BuildError> {
    let Some(pip) = &inputs.spec.pip else { return Ok(Vec::new()) };
    if pip.requirements.is_empty() {
        return Ok(Vec::new());
    }
    if inputs.install_mode == InstallMode::Runtime {
        return Err(BuildError::PipAtRuntime);
    }
    let python = python.ok_or_else(|| BuildError::NoPythonForPip { package: pip.requirements[0].text.clone() })?;
    if let Some(lock) = &opts.lock {
        let dists = crate::solve::read_lock_pypi(lock, opts.platform)?;
        if !dists.is_empty() {
            return Ok(dists);
        }
        // A lock without pip packages (written before the pip part was added): resolve them.
    }
    let mut provided = BTreeMap::new();
    for info in infos {
        for (name, version) in &info.python_dists {
            provided.insert(name.clone(), version.clone());
        }
    }
    let glibc = inputs
        .virtual_packages
        .iter()
        .find(|v| v.name.as_normalized() == "__glibc")
        .map(|v| {
            let text = v.version.to_string();
            let mut parts = text.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
            (parts.next().unwrap_or(2), parts.next().unwrap_or(17))
        })
        .unwrap_or((2, 17));
    let target = Target { python: python.short_version, platform: opts.platform, glibc };
    let scratch = tempfile::Builder::new()
        .prefix("pip-")
        .tempdir_in(crate::scratch::cache_dir(&opts.cache_dir).map_err(|source| BuildError::Io { path: opts.cache_dir.clone(), source })?)
        .map_err(|source| BuildError::Io { path: opts.cache_dir.clone(), source })?;
    let uv = Uv { program: opts.uv.clone(), cache_dir: opts.cache_dir.join("uv") };
    let credentials = crate::pypi::fetch::Credentials::new(&inputs.pip_index, opts.netrc.as_deref());
    let input = ResolveInput {
        spec: pip,
        index: &inputs.pip_index,
        target: &target,
        provided: &provided,
        scratch: scratch.path(),
        credentials: &credentials,
        timeouts: opts.network,
    };
    Ok(crate::pypi::resolve::resolve(&uv, &input).await?)
}
