//! The pipeline: one step per stage, each in its own module with a typed input and output, joined in
//! [`build`]: [`inputs`] (options and environment file, read once) → [`base`] → [`packages`] (lock or
//! solve) → [`plan`] (link scripts, `.pyc`, layer groups) → [`package_layers`] → [`env_layer`] →
//! [`config`] → [`assemble`] → [`crate::image::assemble`] → [`crate::output`] (or a push by the caller).
//! [`prepare`] runs the first two steps alone, so `resolve` can look an environment up by its identity
//! and then build from the same inputs without reading anything twice.

pub mod assemble;
pub mod base;
pub mod config;
pub mod env_layer;
pub mod error;
pub mod inputs;
pub mod lock;
pub mod multi;
pub mod options;
pub mod package_layers;
pub mod packages;
pub mod pip;
pub mod plan;
pub mod summary;

pub use base::BaseRef;
pub use options::BuildOptions;
pub use env_layer::EnvLayers;
pub use error::BuildError;
use error::io_err;
pub use inputs::{format_ttl, identity, oci_platform, Inputs};
pub use plan::Plan;
pub use summary::{BuildSummary, LayerSummary, PackageSummary, PycSummary, Work};

use crate::cache::LayerCache;
use crate::fetch::PackageStore;
use crate::image::{self, BaseImage};
use crate::reporter::{Reporter, Stage};
use envlayer_layers::Compression;
use rattler_conda_types::RepoDataRecord;
use std::collections::BTreeMap;
use std::time::Instant;

/// How registries are reached, for registry bases (and pushes by the caller).
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Where credentials are read from.
    pub auth: crate::registry::AuthSources,
    /// TLS, insecure registries, retries.
    pub client: crate::registry::ClientOptions,
}

/// A finished build: its summary, and the image (for a push).
#[derive(Debug)]
pub struct BuildOutput {
    /// What was built.
    pub summary: BuildSummary,
    /// The image: config, manifest, and where each blob is.
    pub image: image::Image,
    /// Its SBOM, unless turned off.
    pub sbom: Option<(crate::sbom::SbomFormat, Vec<u8>)>,
    /// The registry cache it used, holding the entries to write after the push
    /// ([`crate::regcache::publish`]).
    pub registry_cache: Option<std::sync::Arc<crate::regcache::Session>>,
}

/// The default `--max-layers`: well under Docker's 125 and containers-storage's 128, leaving room for
/// images built on top.
pub const DEFAULT_MAX_LAYERS: usize = 100;


/// `name-version-build` of a record.
pub fn dist_name(r: &RepoDataRecord) -> String {
    format!("{}-{}-{}", r.package_record.name.as_normalized(), r.package_record.version, r.package_record.build)
}

/// The number of CPUs to compress a layer with.
pub fn cpus() -> u32 {
    crate::cache::cpus()
}

/// The default layer plan for pulls: conda packages under 1 MiB of archive share 4 hash-bucketed layers
/// (containerd applies layers one at a time, ~50 ms each).
pub const DEFAULT_BUCKETS: Buckets = Buckets { below: 1 << 20, count: 4 };

/// The default split: a package over 8 MiB of archive spans one layer per 8 MiB (CPython: 3), so its
/// parts download in parallel and the first unpacks while the others download.
pub const DEFAULT_SPLIT_ABOVE: u64 = 8 << 20;

/// Small packages sharing layers: those whose archive is under `below` bytes go, by a hash of their
/// name, into one of `count` layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    /// The archive size under which a package shares a layer.
    pub below: u64,
    /// How many shared layers.
    pub count: usize,
}

/// What envlayer owns in an output: images annotated with an environment name, and rattler lock files.
const OWNERSHIP: crate::output::Ownership<'static> =
    crate::output::Ownership { manifest_annotation: crate::keys::ANNOTATION_ENV_NAME, is_own_lock: &|p| rattler_lock::LockFile::from_path(p).is_ok() };

/// The lock beside an archive output: nothing there, or a lock file (which is replaced).
fn check_archive_lock(output: &std::path::Path) -> Result<(), BuildError> {
    let lock = crate::output::lock_path(output);
    match std::fs::symlink_metadata(&lock) {
        Err(_) => Ok(()),
        Ok(m) if m.is_file() && (OWNERSHIP.is_own_lock)(&lock) => Ok(()),
        Ok(_) => Err(BuildError::LockPath { path: lock }),
    }
}

/// Writes the lock beside an archive output, atomically.
fn write_archive_lock(output: &std::path::Path, text: &str) -> Result<(), BuildError> {
    let lock = crate::output::lock_path(output);
    check_archive_lock(output)?;
    let dir = lock.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".envlayer-lock-").tempfile_in(dir).map_err(io_err(dir))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io_err(&lock))?;
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(io_err(&lock))?;
    tmp.persist(&lock).map_err(|e| BuildError::Io { path: lock.clone(), source: e.error })?;
    Ok(())
}

/// What decides an image and is read before any package is: the inputs and the base.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The options and the environment file, checked.
    pub inputs: Inputs,
    /// The base image, if any.
    pub base: Option<BaseImage>,
}

impl Prepared {
    /// The environment's identity (for `<name>-<hash>` tags and lookups).
    pub fn identity(&self, opts: &BuildOptions) -> Result<String, BuildError> {
        identity(opts, &self.inputs, self.base.as_ref().map(|b| &b.manifest_digest))
    }
}

/// Reads and checks the inputs and the base: everything a lookup needs, and no package.
pub async fn prepare(opts: &BuildOptions) -> Result<Prepared, BuildError> {
    let inputs = Inputs::read(opts)?;
    if let Some(output) = &opts.output {
        match &opts.archive {
            None => crate::output::check(output, OWNERSHIP)?,
            Some(kind) => {
                crate::archive::check(output)?;
                check_archive_lock(output)?;
                if matches!(kind, crate::archive::ArchiveKind::Docker { .. }) && matches!(opts.compression, Compression::Zstd(_)) {
                    return Err(crate::archive::ArchiveError::Refused {
                        path: output.clone(),
                        reason: "a docker archive needs gzip layers (docker load and containerd's importer take any compressed layer there for gzip): drop --compression zstd, or write -o oci-archive:FILE".into(),
                    }
                    .into());
                }
            }
        }
    }
    let base = base::read(opts, &inputs.os_arch).await?;
    let base_layers = base.as_ref().map_or(0, |b| b.layers.len());
    if opts.max_layers < base_layers + 2 {
        return Err(BuildError::MaxLayers { max_layers: opts.max_layers, base_layers });
    }
    Ok(Prepared { inputs, base })
}

/// Builds the environment described by `opts` into an OCI image (written to the output, if any). On any
/// error nothing is left at the output path (an earlier image there stays as it was).
pub async fn build(opts: &BuildOptions, reporter: &dyn Reporter) -> Result<BuildOutput, BuildError> {
    let prepared = prepare(opts).await?;
    build_prepared(opts, prepared, reporter).await
}

/// [`build`] from inputs and a base already read (by [`prepare`]).
pub async fn build_prepared(opts: &BuildOptions, prepared: Prepared, reporter: &dyn Reporter) -> Result<BuildOutput, BuildError> {
    let t0 = Instant::now();
    let mut timings = BTreeMap::new();
    let identity = prepared.identity(opts)?;
    let Prepared { inputs, base } = prepared;
    crate::cache::mark(&opts.cache_dir);

    reporter.start(Stage::Solve, 0);
    let records = packages::resolve(opts, &inputs).await?;
    let python = packages::python(&records, opts.platform)?;
    reporter.finish(Stage::Solve);
    timings.insert("solve".to_string(), t0.elapsed().as_millis() as u64);

    let t1 = Instant::now();
    let store = PackageStore::new(opts.cache_dir.clone()).with_timeouts(opts.network);
    let cache = LayerCache::new(opts.cache_dir.clone());
    let base_layers = base.as_ref().map_or(0, |b| b.layers.len());
    let mut cache_warnings = Vec::new();
    let remote = match &opts.registry_cache {
        Some(o) => match crate::regcache::Session::open(o, &opts.registry.auth, &opts.registry.client).await {
            Ok(s) => Some(std::sync::Arc::new(s)),
            Err(w) => {
                cache_warnings.push(w);
                None
            }
        },
        None => None,
    };
    let infos = plan::inspect(opts, &records, &store, remote.as_deref()).await?;
    let wheel_store = crate::pypi::fetch::WheelStore::new(&opts.cache_dir, opts.network, crate::pypi::fetch::Credentials::new(&inputs.pip_index, opts.netrc.as_deref()));
    let pip_cx = pip::PipContext { records: &records, infos: &infos, python: python.as_ref(), store: &store, wheels: &wheel_store };
    let wheels = pip::wheels(opts, &inputs, &pip_cx).await?;
    if let Some(lock) = &opts.lock {
        lock::check_pip(lock, &inputs, &wheels, &infos)?;
    }
    let plan = plan::plan(opts, &inputs, &records, &infos, &wheels, python, base_layers)?;
    timings.insert("inspect".to_string(), t1.elapsed().as_millis() as u64);

    reporter.start(Stage::Fetch, plan.baked.len() as u64);
    reporter.start(Stage::Install, plan.baked.len() as u64);
    reporter.start(Stage::Pack, plan.groups.len() as u64 + 1);
    let mut baker = package_layers::Baker::new(&records, &plan.keys, store.clone(), cache.clone(), plan.params.clone(), reporter, plan.pyc_python, &wheels, Some(wheel_store))?;
    let mut split_warnings = Vec::new();
    if let Some(above) = opts.split_above {
        let layers = base_layers + 1 + usize::from(plan.needs_runtime_layer) + plan.groups.len();
        let (split, whole) = plan::split_plan(&records, &plan.groups, above, opts.max_layers.saturating_sub(layers));
        baker.split = split;
        split_warnings.extend(whole.iter().map(|&i| {
            let r = &records[i].package_record;
            format!("{}-{}-{}: kept in one layer: splitting it (--split-above) would exceed --max-layers {}", r.name.as_normalized(), r.version, r.build, opts.max_layers)
        }));
    }
    if let Some(session) = &remote {
        // A layout or an archive needs every blob on disk.
        baker.use_registry_cache(session.clone(), session.options.download || opts.output.is_some());
        baker.prefetch(&plan.groups, opts.jobs).await;
    }
    let baked = baker.bake(&plan.baked, &plan.groups, opts.jobs).await?;
    // The compiling interpreters and the stages are not needed past this point.
    drop(baker);
    reporter.finish(Stage::Fetch);
    reporter.finish(Stage::Install);
    timings.insert("layers".to_string(), t1.elapsed().as_millis() as u64);
    timings.extend(baked.timings_ms.iter().map(|(k, v)| (format!("layers.{k}"), *v)));

    let times = config::times(opts, &records);
    let manifest_created = times.1.clone();
    let env = env_layer::build(opts, &inputs, &records, &wheels, &plan, &store, &cache, &times.0).await?;
    reporter.advance(Stage::Pack, "environment");
    reporter.finish(Stage::Pack);

    let config = config::Config { opts, inputs: &inputs, base: base.as_ref(), records: &records, facts: &baked.facts, runtime_names: &env.runtime_names, identity: &identity, times };
    let (settings, config_warnings) = config.settings()?;
    let remote_blob = remote.as_ref().map(|s| crate::image::RemoteBlob { registry: s.repo().registry.clone(), repository: s.repo().repository.clone() });
    let layers = assemble::layers(base.as_ref(), &baked, &env, &records, &wheels, &plan.runtime_packages, &inputs, &cache, remote_blob.as_ref());
    let img = image::assemble(base.as_ref(), &layers.new, &settings);

    let sbom = opts.sbom.map(|format| {
        let input = crate::sbom::SbomInput {
            name: &inputs.spec.name,
            image: &img.digest(),
            created: &manifest_created,
            records: &records,
            wheels: &wheels,
            base: base.as_ref().map(|b| (b.origin.as_deref(), &b.manifest_digest)),
        };
        (format, crate::sbom::render(format, &input))
    });

    let t2 = Instant::now();
    reporter.start(Stage::Write, 1);
    let mut sbom_file = None;
    let mut sbom_warning = None;
    if let Some(output) = &opts.output {
        match &opts.archive {
            None => crate::output::write(&img, output, &opts.tag, &env.lock_text, OWNERSHIP)?,
            Some(kind) => {
                crate::archive::write(&img, output, &opts.tag, &format!("{}:{}", inputs.spec.name, opts.tag), kind)?;
                write_archive_lock(output, &env.lock_text)?;
            }
        }
        if let Some((format, bytes)) = &sbom {
            match crate::sbom::write_beside(output, *format, bytes) {
                Ok(p) => sbom_file = Some(p),
                Err(w) => sbom_warning = Some(w),
            }
        }
    }
    // Without a layout, the lock is kept in the cache, named by the environment and the image's digest
    // (one lock per image: a later build of the environment does not replace it), so it can be found,
    // and given to `--lock`, after a push.
    let lock_file = match opts.lock_output() {
        Some(p) => p,
        None => cache.put_lock(&format!("{}-{}.lock", inputs.spec.name, &img.digest().hex()[..24]), &env.lock_text)?,
    };
    reporter.finish(Stage::Write);
    timings.insert("write".to_string(), t2.elapsed().as_millis() as u64);
    timings.insert("total".to_string(), t0.elapsed().as_millis() as u64);

    let mut warnings = plan.warnings.clone();
    warnings.extend(split_warnings);
    warnings.extend(baked.clobbers.iter().map(|c| {
        format!(
            "clobber: {} is installed by {} and {}; the image has {}'s (the later in install order: dependency order as conda does, pip packages after conda's as `pip install` does)",
            c.path,
            c.losers.join(", "),
            c.winner,
            c.winner
        )
    }));
    warnings.extend(plan.messages.iter().map(|m| format!("message from {m}")));
    warnings.extend(config_warnings);
    warnings.extend(sbom_warning);
    warnings.extend(cache_warnings);
    warnings.extend(remote.iter().flat_map(|s| s.warnings()));
    if opts.base.is_none() {
        warnings.push(
            "no --base: the image holds the environment and nothing else (no libc, no shell): it cannot run a command by itself. \
             Pass --base IMAGE (a registry image or an OCI layout with a Linux userland), or --base scratch when that is what you want"
                .to_string(),
        );
    }
    for w in &warnings {
        reporter.warn(w);
    }
    let pyc_files = baked.facts.values().map(|f| f.paths.iter().filter(|p| p.ends_with(".pyc")).count()).sum();
    let summary = BuildSummary {
        name: inputs.spec.name.clone(),
        prefix: inputs.prefix.clone(),
        platform: opts.platform.to_string(),
        output: opts.output.clone(),
        tag: opts.tag.clone(),
        lock: Some(lock_file),
        base: base.as_ref().and_then(|b| b.origin.clone()),
        manifest_digest: img.digest().to_string(),
        config_digest: img.config_digest().to_string(),
        inputs_hash: identity,
        solved: opts.lock.is_none(),
        packages: layers.packages,
        layers: layers.summaries,
        shared_layers: layers.shared,
        work: Work {
            compressed: baked.work.compressed + env.packed,
            cached_layers: baked.work.cached_layers + usize::from(env.env.1),
            ..baked.work.clone()
        },
        timings_ms: timings,
        warnings,
        runtime_packages: plan.runtime_packages.iter().map(|&i| dist_name(&records[i])).collect(),
        link_scripts: plan.link_scripts.clone(),
        clobbers: baked.clobbers.clone(),
        messages: plan.messages.clone(),
        pyc: PycSummary { compiled: plan.pyc_python.is_some(), files: pyc_files, reason: plan.pyc_reason.clone() },
        sbom: sbom.as_ref().map(|(format, bytes)| summary::SbomSummary { format: *format, digest: envlayer_layers::Digest::of(bytes).to_string(), file: sbom_file }),
        registry_cache: remote.as_ref().map(|s| s.summary()),
    };
    Ok(BuildOutput { summary, image: img, sbom, registry_cache: remote })
}
