//! Step 6, the environment's own layers: the environment layer (conda's `history` and the lock, and the
//! runtime installer's folder when packages install at start), and the layer of archives installed at
//! start. Both are cached by what decides their bytes.

use super::{dist_name, io_err, BuildError, BuildOptions, Inputs, Plan};
use crate::cache::{pack_into_cache, CachedLayer, LayerCache};
use crate::fetch::PackageStore;
use crate::solve::Solved;
use crate::spec::{EnvSpec, InstallMode};
use envlayer_layers::{Digest, Source};
use rattler_conda_types::RepoDataRecord;

/// The environment's layers.
#[derive(Debug)]
pub struct EnvLayers {
    /// The environment layer, and whether it came from the cache.
    pub env: (CachedLayer, bool),
    /// The archives installed at start, when some packages install there.
    pub archives: Option<(CachedLayer, bool)>,
    /// The lock of the environment (also written beside the output).
    pub lock_text: String,
    /// The packages installed at start, by name.
    pub runtime_names: Vec<String>,
    /// How many of these layers were packed (not cached).
    pub packed: usize,
}

fn lock_of(records: Vec<RepoDataRecord>, wheels: &[crate::pypi::Dist], opts: &BuildOptions, inputs: &Inputs, cache: &LayerCache) -> Result<String, BuildError> {
    let tmp = tempfile::Builder::new().prefix("lock-").tempdir_in(cache.tmp_dir()?).map_err(io_err(&opts.cache_dir))?;
    let path = tmp.path().join("lock");
    crate::lockfile::write_lock(&Solved { records }, wheels, &inputs.spec.root_dir, &inputs.channels, opts.platform, &path)?;
    std::fs::read_to_string(&path).map_err(io_err(&path))
}

/// Builds (or takes from the cache) the environment layer and the archives layer.
#[allow(clippy::too_many_arguments)]
pub async fn build(
    opts: &BuildOptions,
    inputs: &Inputs,
    records: &[RepoDataRecord],
    wheels: &[crate::pypi::Dist],
    plan: &Plan,
    store: &PackageStore,
    cache: &LayerCache,
    created: &str,
) -> Result<EnvLayers, BuildError> {
    let (prefix, install_mode, mtime) = (&inputs.prefix, inputs.install_mode, plan.params.mtime);
    // What belongs to the environment as a whole: conda's history, and the lock (so the image carries
    // exactly what it was built from: `conda-meta/envlayer.lock`).
    let history = if install_mode == InstallMode::Baked { env_history(created, &inputs.spec, records) } else { String::new() };
    let lock_text = lock_of(records.to_vec(), wheels, opts, inputs, cache)?;
    // What the runtime installer gets: the lock, with the URLs of the packages whose archives ship in the
    // image (link scripts; local channels) pointing into the archives layer; others come from their channels.
    let runtime = &plan.runtime_packages;
    let runtime_names: Vec<String> = runtime.iter().map(|&i| records[i].package_record.name.as_normalized().to_string()).collect();
    let runtime_lock_text = if !plan.shipped.is_empty() {
        let mut rt_records = records.to_vec();
        for &i in &plan.shipped {
            let file = rt_records[i].identifier.to_file_name();
            rt_records[i].url = url::Url::parse(&format!("file://{}/pkgs/{file}", crate::runtime_install::RUNTIME_DIR))
                .map_err(|source| BuildError::RuntimeUrl { package: file.clone(), source })?;
        }
        lock_of(rt_records, wheels, opts, inputs, cache)?
    } else {
        lock_text.clone()
    };
    let installer_digest = match (runtime.is_empty(), &opts.runtime_installer) {
        (false, Some(p)) => Some(crate::files::digest_file(p).map_err(io_err(p))?.0.to_string()),
        _ => None,
    };
    let env_key = Digest::of(&crate::image::canonical_json(&serde_json::json!({
        "installer": installer_digest, "runtime_lock": runtime_lock_text, "runtime": runtime_names, "history": history,
        "lock": lock_text, "prefix": prefix, "install": install_mode, "compression": opts.compression.id(), "mtime": mtime,
        "format": crate::cache::LAYER_FORMAT,
    })))
    .hex();
    let mut packed = 0;
    let env = match cache.get(&env_key) {
        Some(c) => (c, true),
        None => {
            let tmp = tempfile::Builder::new().prefix("env-").tempdir_in(cache.tmp_dir()?).map_err(io_err(&opts.cache_dir))?;
            let root = tmp.path().join("root");
            let meta = root.join("conda-meta");
            std::fs::create_dir_all(&meta).map_err(io_err(&root))?;
            if install_mode == InstallMode::Baked {
                std::fs::write(meta.join("history"), &history).map_err(io_err(&meta))?;
                std::fs::write(meta.join("envlayer.lock"), &lock_text).map_err(io_err(&meta))?;
            }
            let mut sources = vec![Source::new(root, prefix.trim_start_matches('/').to_string())];
            if !runtime.is_empty() {
                let installer = opts
                    .runtime_installer
                    .clone()
                    .ok_or(BuildError::NoInstaller)?;
                let rt = tmp.path().join("runtime");
                crate::runtime_install::write_runtime_dir(&rt, &installer, &runtime_lock_text, &inputs.spec.name, prefix, &runtime_names)
                    .map_err(io_err(&rt))?;
                sources.push(Source::new(rt, crate::runtime_install::RUNTIME_DIR.trim_start_matches('/').to_string()));
            }
            packed += 1;
            (pack_into_cache(cache, &env_key, sources, mtime, opts.compression, vec![]).await?, false)
        }
    };
    // The archives of the packages installed at runtime, in a layer of their own.
    let archives = if plan.needs_runtime_layer {
        let hashes: Vec<String> = plan.shipped.iter().filter_map(|&i| crate::fetch::package_hash(&records[i])).collect();
        let key = Digest::of(format!("archives:{}:{}:{mtime}", hashes.join(","), opts.compression.id()).as_bytes()).hex();
        Some(match cache.get(&key) {
            Some(c) => (c, true),
            None => {
                let tmp = tempfile::Builder::new().prefix("archives-").tempdir_in(cache.tmp_dir()?).map_err(io_err(&opts.cache_dir))?;
                let pkgs = tmp.path().join("root").join("pkgs");
                std::fs::create_dir_all(&pkgs).map_err(io_err(&pkgs))?;
                for &i in &plan.shipped {
                    let fetched = store.fetch(&records[i]).await?;
                    let dest = pkgs.join(records[i].identifier.to_file_name());
                    // A copy, readable by all: the cache's own file is private to this user, and the
                    // container may install as another.
                    std::fs::copy(&fetched.archive, &dest).map_err(io_err(&dest))?;
                    std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(io_err(&dest))?;
                }
                let sources = vec![Source::new(tmp.path().join("root"), crate::runtime_install::RUNTIME_DIR.trim_start_matches('/').to_string())];
                packed += 1;
                let names = plan.shipped.iter().map(|&i| records[i].package_record.name.as_normalized().to_string()).collect();
                (pack_into_cache(cache, &key, sources, mtime, opts.compression, names).await?, false)
            }
        })
    } else {
        None
    };
    Ok(EnvLayers { env, archives, lock_text, runtime_names, packed })
}

/// `conda-meta/history` in conda's format, with the build's creation time (never the wall clock).
fn env_history(created: &str, spec: &EnvSpec, records: &[RepoDataRecord]) -> String {
    let when = created.replace('T', " ").trim_end_matches('Z').to_string();
    let mut s = format!("==> {when} <==\n# cmd: envlayer build {}\n# envlayer version: {}\n", spec.name, env!("CARGO_PKG_VERSION"));
    for r in records {
        let channel = r.channel.clone().unwrap_or_default();
        s.push_str(&format!("+{channel}::{}\n", dist_name(r)));
    }
    let specs: Vec<String> = spec.specs.iter().map(|s| format!("{:?}", s.to_string())).collect();
    s.push_str(&format!("# update specs: [{}]\n", specs.join(", ")));
    s
}
