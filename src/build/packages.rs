//! Step 3, packages: the records to install, from the lock file or a solve, checked against the
//! environment's channels (see [`crate::solve::check_sources`]), in install order.

use super::{dist_name, BuildError, BuildOptions, Inputs};
use crate::solve::{self, SolveInput};
use rattler_conda_types::RepoDataRecord;

/// The packages of the environment, and whether a solve ran.
pub async fn resolve(opts: &BuildOptions, inputs: &Inputs) -> Result<Vec<RepoDataRecord>, BuildError> {
    let spec = &inputs.spec;
    // Local channels must exist now (the identity did not need them).
    let channels = solve::resolve_channels(&spec.channels, &spec.root_dir)?;
    let env_name = spec.source.display().to_string();
    solve::check_sources(&spec.specs, &[], &channels, &env_name)?;
    let records = match &opts.lock {
        Some(lock) => {
            let solved = if crate::lockfile::is_explicit(lock) {
                let store = crate::fetch::PackageStore::new(opts.cache_dir.clone()).with_timeouts(opts.network);
                crate::lockfile::read_explicit(lock, opts.platform, &store, &channels).await?
            } else {
                crate::lockfile::read_lock_env(lock, opts.platform, opts.lock_environment.as_deref())?
            };
            // A lock made from another environment is refused before anything of it is used.
            super::lock::check_conda(lock, opts.lock_environment.as_deref(), inputs, &solved.records)?;
            solve::check_sources(&[], &solved.records, &channels, &format!("lock file {}", lock.display()))?;
            solved.records
        }
        None => {
            let solved = solve::solve(&SolveInput {
                channels,
                specs: spec.specs.clone(),
                platform: opts.platform,
                virtual_packages: inputs.virtual_packages.clone(),
                cache_dir: opts.cache_dir.clone(),
                timeouts: opts.network,
            })
            .await?;
            solve::check_sources(&[], &solved.records, &inputs.channels, &format!("the repodata of {env_name}'s channels"))?;
            solved.records
        }
    };
    Ok(records)
}

/// The environment's python, for `noarch: python` packages; an error if such a package has none.
pub fn python(records: &[RepoDataRecord], platform: rattler_conda_types::Subdir) -> Result<Option<rattler::install::PythonInfo>, BuildError> {
    let python = records
        .iter()
        .find(|r| r.package_record.name.as_normalized() == "python")
        .map(|r| {
            rattler::install::PythonInfo::from_python_record(&r.package_record, platform)
                .map_err(|e| BuildError::PythonVersion { package: dist_name(r), reason: e.to_string() })
        })
        .transpose()?;
    if python.is_none() {
        if let Some(r) = records.iter().find(|r| r.package_record.noarch.is_python()) {
            return Err(BuildError::NoPython { package: dist_name(r) });
        }
    }
    Ok(python)
}
