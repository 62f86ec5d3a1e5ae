//! The pipeline: spec → solve → fetch → install → layer → image, joined in one function, [`build`].

use crate::fetch::PackageStore;
use crate::image::{self, BaseImage, ImageSettings, NewLayer};
use crate::install::InstallTarget;
use crate::cache::{package_key, CachedLayer, LayerCache, LayerParams};
use crate::keys::{ANNOTATION_EXPIRES, ANNOTATION_INSTALL, ANNOTATION_PACKAGE_COUNT, ANNOTATION_RUNTIME};
use crate::reporter::{Reporter, Stage};
use crate::solve::{self, SolveInput, Solved};
use crate::spec::{EnvSpec, InstallMode};
use envlayer_layers::{pack_to_file, plan_layers, Compression, Digest, PackOptions, PlanItem, Source};
use futures::StreamExt;
use rattler_conda_types::{RepoDataRecord, Subdir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The image a build goes on top of.
#[derive(Debug, Clone)]
pub enum BaseRef {
    /// An OCI image layout directory, and the image's tag in it if it holds more than one.
    Layout {
        /// The directory.
        layout: PathBuf,
        /// The tag.
        tag: Option<String>,
    },
    /// An image in a registry.
    Registry(crate::registry::Reference),
}

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
}

/// Everything a build needs to know. The CLI fills it in; the library reads no environment variable and
/// no clock of its own.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The `environment.yaml`.
    pub env_file: PathBuf,
    /// The environment's path in the image (default `/opt/conda/envs/<name>`).
    pub prefix: Option<String>,
    /// The image's platform.
    pub platform: Subdir,
    /// Virtual packages given by the user (`__glibc=2.36`), over the defaults.
    pub virtual_packages: Vec<String>,
    /// The base image.
    pub base: Option<BaseRef>,
    /// The OCI layout directory to write; none when only pushing.
    pub output: Option<PathBuf>,
    /// Registry access for a registry base.
    pub registry: RegistrySettings,
    /// The tag of the image in the layout.
    pub tag: String,
    /// The package, layer and repodata cache.
    pub cache_dir: PathBuf,
    /// Layer compression.
    pub compression: Compression,
    /// The most layers the image may have, base included.
    pub max_layers: usize,
    /// A lock file to install from instead of solving.
    pub lock: Option<PathBuf>,
    /// SOURCE_DATE_EPOCH: the image's creation time, when reproducible manifests are wanted.
    pub source_date_epoch: Option<i64>,
    /// The time of the build (goes in the manifest's annotations when no SOURCE_DATE_EPOCH is given).
    pub now: jiff::Timestamp,
    /// How many layers are built at once.
    pub jobs: usize,
    /// How long the image is fresh (the `quay.expires-after` label and the `io.envlayer.expires`
    /// annotation); none for images that do not expire.
    pub ttl: Option<std::time::Duration>,
    /// Labels for the config, over the environment file's.
    pub labels: BTreeMap<String, String>,
    /// Annotations for the manifest, over the environment file's.
    pub annotations: BTreeMap<String, String>,
    /// Overrides the environment file's `envlayer: install:`.
    pub install: Option<InstallMode>,
    /// envlayer's own binary, put in runtime-install images as their installer.
    pub runtime_installer: Option<PathBuf>,
    /// What to do with packages that have link scripts.
    pub link_scripts: crate::link_scripts::LinkScriptPolicy,
    /// Compile `.pyc` files into the layers when this machine can run the environment's python.
    pub pyc: bool,
    /// Connect and idle timeouts for channels and package downloads.
    pub network: crate::net::Timeouts,
}

impl BuildOptions {
    /// Options with the documented defaults for `env_file`.
    pub fn new(env_file: impl Into<PathBuf>, output: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            env_file: env_file.into(),
            prefix: None,
            platform: Subdir::Linux64,
            virtual_packages: Vec::new(),
            base: None,
            output: Some(output.into()),
            registry: RegistrySettings::default(),
            tag: "latest".into(),
            cache_dir: cache_dir.into(),
            compression: Compression::GZIP_DEFAULT,
            max_layers: DEFAULT_MAX_LAYERS,
            lock: None,
            source_date_epoch: None,
            now: jiff::Timestamp::now(),
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            ttl: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            install: None,
            runtime_installer: None,
            link_scripts: crate::link_scripts::LinkScriptPolicy::Runtime,
            pyc: true,
            network: crate::net::Timeouts::default(),
        }
    }

    /// The lock file written beside the output: `<output>.lock`.
    pub fn lock_output(&self) -> Option<PathBuf> {
        self.output.as_deref().map(crate::output::lock_path)
    }
}

/// The default `--max-layers`: well under Docker's 125 and containers-storage's 128, leaving room for
/// images built on top.
pub const DEFAULT_MAX_LAYERS: usize = 100;

/// What a build did, for people (`--json`) and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildSummary {
    /// The environment's name.
    pub name: String,
    /// Its prefix in the image.
    pub prefix: String,
    /// The platform.
    pub platform: String,
    /// The OCI layout written, if any.
    pub output: Option<PathBuf>,
    /// The image's tag in the layout.
    pub tag: String,
    /// The lock file written beside it.
    pub lock: Option<PathBuf>,
    /// Where the base came from (`registry/repo@digest`), when it came from a registry.
    pub base: Option<String>,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The config's digest.
    pub config_digest: String,
    /// The hash of the build's inputs.
    pub inputs_hash: String,
    /// Whether a solve ran (false when installing from `--lock`).
    pub solved: bool,
    /// The packages, in install order.
    pub packages: Vec<PackageSummary>,
    /// The image's layers, bottom first.
    pub layers: Vec<LayerSummary>,
    /// Groups of packages that share a layer (when `--max-layers` forced grouping).
    pub shared_layers: Vec<Vec<String>>,
    /// How much work was done rather than taken from the cache.
    pub work: Work,
    /// Milliseconds per stage.
    pub timings_ms: BTreeMap<String, u64>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// Packages installed when the container starts (link scripts and their dependents).
    pub runtime_packages: Vec<String>,
    /// Packages with link scripts, and the scripts.
    pub link_scripts: BTreeMap<String, Vec<String>>,
    /// Paths two packages install, and which one the image has.
    pub clobbers: Vec<crate::package_layers::Clobber>,
    /// Messages packages show when they are linked (`info/prelink_messages`).
    pub messages: Vec<String>,
    /// How many `.pyc` files were compiled into the layers, or why none were.
    pub pyc: PycSummary,
}

/// Whether `.pyc` files are in the image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PycSummary {
    /// Whether they were compiled.
    pub compiled: bool,
    /// How many (0 on a warm build: they come with cached layers).
    pub files: usize,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// One package of the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackageSummary {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Build string.
    pub build: String,
    /// Archive file name.
    pub file_name: String,
    /// The archive's sha256.
    pub sha256: Option<String>,
    /// The index of its layer in [`BuildSummary::layers`].
    pub layer: usize,
}

impl PackageSummary {
    fn new(r: &RepoDataRecord, layer: usize) -> Self {
        Self {
            name: r.package_record.name.as_normalized().to_string(),
            version: r.package_record.version.to_string(),
            build: r.package_record.build.to_string(),
            file_name: r.identifier.to_file_name(),
            sha256: r.package_record.sha256.map(|h| crate::fetch::hex(&h)),
            layer,
        }
    }
}

/// One layer of the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerSummary {
    /// Blob digest.
    pub digest: String,
    /// Uncompressed digest.
    pub diff_id: Option<String>,
    /// Compressed size.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// What it holds: `base`, `environment`, or package names.
    pub packages: Vec<String>,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// Work counters: a warm rebuild has zeros everywhere but `cached_layers`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Work {
    /// Archives downloaded.
    pub downloaded: usize,
    /// Packages installed into a stage.
    pub installed: usize,
    /// Layers packed and compressed.
    pub compressed: usize,
    /// Layers taken from the cache.
    pub cached_layers: usize,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The environment file.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// Channels, solving, the lock file.
    #[error(transparent)]
    Solve(#[from] crate::solve::SolveError),
    /// Fetching a package.
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    /// Installing a package.
    #[error(transparent)]
    Install(#[from] crate::install::InstallError),
    /// Packing a layer.
    #[error("cannot pack the layer of {packages}")]
    Pack {
        /// The packages of the layer.
        packages: String,
        /// The cause.
        #[source]
        source: envlayer_layers::PackError,
    },
    /// The layer cache.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// Reading the base or writing the image.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// The output folder or its lock.
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// Reading a base image from a registry.
    #[error("base image")]
    Registry(#[from] crate::registry::RegistryError),
    /// The options do not make sense together.
    #[error("{0}")]
    Options(String),
    /// An I/O error on the output.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io { path: path.to_path_buf(), source }
}

/// `("linux", "amd64", None)` and so on: the OCI platform of a conda subdir.
pub fn oci_platform(platform: Subdir) -> Result<(String, String, Option<String>), BuildError> {
    let (arch, variant) = match platform.as_str() {
        "linux-64" => ("amd64", None),
        "linux-aarch64" => ("arm64", Some("v8")),
        "linux-ppc64le" => ("ppc64le", None),
        "linux-s390x" => ("s390x", None),
        "linux-armv7l" => ("arm", Some("v7")),
        other => return Err(BuildError::Options(format!("platform {other}: envlayer builds Linux images only"))),
    };
    Ok(("linux".into(), arch.into(), variant.map(String::from)))
}

fn dist_name(r: &RepoDataRecord) -> String {
    format!("{}-{}-{}", r.package_record.name.as_normalized(), r.package_record.version, r.package_record.build)
}

fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds).map(|t| t.to_string()).unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// `24h`, `90m`, `45s`: a TTL the way Quay's `quay.expires-after` label reads it.
pub fn format_ttl(ttl: std::time::Duration) -> String {
    let s = ttl.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The environment's identity: a hash of its normalized inputs (specs, channels, platform, prefix,
/// virtual packages, base image digest, and every option that changes the image's bytes). The same
/// environment always has the same identity; a changed one never shares it. It is computed without
/// touching any channel, so looking an environment up costs no solve.
pub fn identity(opts: &BuildOptions, spec: &EnvSpec, base_digest: Option<&Digest>) -> Result<String, BuildError> {
    let channels = solve::channel_urls(&spec.channels, &spec.root_dir)?;
    let virtual_packages =
        solve::override_virtual_packages(solve::default_virtual_packages(opts.platform), &opts.virtual_packages)?;
    let mut specs: Vec<String> = spec.specs.iter().map(|s| s.to_string()).collect();
    specs.sort();
    let prefix = opts.prefix.clone().unwrap_or_else(|| format!("/opt/conda/envs/{}", spec.name));
    let mut labels = spec.envlayer.labels.clone();
    labels.extend(opts.labels.clone());
    let mut annotations = spec.envlayer.annotations.clone();
    annotations.extend(opts.annotations.clone());
    let lock = match &opts.lock {
        Some(l) => Some(Digest::of(&std::fs::read(l).map_err(io_err(l))?).to_string()),
        None => None,
    };
    Ok(Digest::of(&image::canonical_json(&serde_json::json!({
        "format": crate::cache::LAYER_FORMAT,
        "name": spec.name,
        "specs": specs,
        "channels": channels.iter().map(|c| c.base_url.to_string()).collect::<Vec<_>>(),
        "platform": opts.platform.as_str(),
        "prefix": prefix,
        "virtual_packages": virtual_packages.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        "base": base_digest.map(|d| d.to_string()),
        "compression": opts.compression.id(),
        "max_layers": opts.max_layers,
        "lock": lock,
        "install": opts.install.unwrap_or(spec.envlayer.install),
        "ttl": opts.ttl.map(format_ttl),
        "labels": labels,
        "annotations": annotations,
    })))
    .hex())
}

/// Builds the environment described by `opts` into an OCI image layout. On any error nothing is left at
/// the output path (an earlier image there stays as it was).
pub async fn build(opts: &BuildOptions, reporter: &dyn Reporter) -> Result<BuildOutput, BuildError> {
    let mut timings = BTreeMap::new();
    let t0 = Instant::now();
    let spec = EnvSpec::from_path(&opts.env_file)?;
    let prefix = opts.prefix.clone().unwrap_or_else(|| format!("/opt/conda/envs/{}", spec.name));
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') || prefix.contains("/../") || prefix.contains("//") {
        return Err(BuildError::Options(format!("--prefix {prefix:?} must be an absolute path like /opt/conda/envs/NAME")));
    }
    let os_arch = oci_platform(opts.platform)?;
    for (kind, map) in [("--label", &opts.labels), ("--annotation", &opts.annotations)] {
        for key in map.keys() {
            crate::spec::check_user_key(key).map_err(|e| BuildError::Options(format!("{kind} {e}")))?;
        }
    }
    if let Some(output) = &opts.output {
        crate::output::check(output)?;
    }
    let channels = solve::resolve_channels(&spec.channels, &spec.root_dir)?;
    let virtual_packages =
        solve::override_virtual_packages(solve::default_virtual_packages(opts.platform), &opts.virtual_packages)?;
    let mut base = match &opts.base {
        Some(BaseRef::Layout { layout, tag }) => Some(image::read_oci_layout(layout, tag.as_deref())?),
        Some(BaseRef::Registry(reference)) => {
            let registry = crate::registry::connect(reference, &opts.registry.auth, &opts.registry.client).await?;
            let mut b = crate::registry::read_base(&registry, reference, &os_arch.0, &os_arch.1).await?;
            if opts.output.is_some() {
                // A local layout must hold every blob: fetch the base's layers into the cache, once.
                let cache = LayerCache::new(opts.cache_dir.clone());
                for blob in &mut b.layers {
                    let path = cache.blob_path(&blob.digest);
                    if !path.is_file() {
                        let size = blob.descriptor["size"].as_u64().unwrap_or(0);
                        registry.download_blob(&reference.repository, &blob.digest, size, &path, &cache.tmp_dir()?).await?;
                    }
                    blob.path = path;
                }
            }
            Some(b)
        }
        None => None,
    };
    let base_origin = base.as_mut().and_then(|b| b.origin.clone());
    let base_layers = base.as_ref().map_or(0, |b: &BaseImage| b.layers.len());
    if opts.max_layers < base_layers + 2 {
        return Err(BuildError::Options(format!(
            "--max-layers {} leaves no room: the base has {base_layers} layers, and the environment needs at least 2",
            opts.max_layers
        )));
    }

    reporter.start(Stage::Solve, 0);
    let env_name = spec.source.display().to_string();
    solve::check_sources(&spec.specs, &[], &channels, &env_name)?;
    let solved: Solved = match &opts.lock {
        Some(lock) => {
            let solved = solve::read_lock(lock, opts.platform)?;
            solve::check_sources(&[], &solved.records, &channels, &format!("lock file {}", lock.display()))?;
            solved
        }
        None => {
            let solved = solve::solve(&SolveInput {
                channels: channels.clone(),
                specs: spec.specs.clone(),
                platform: opts.platform,
                virtual_packages: virtual_packages.clone(),
                cache_dir: opts.cache_dir.clone(),
                timeouts: opts.network,
            })
            .await?;
            solve::check_sources(&[], &solved.records, &channels, &format!("the repodata of {env_name}'s channels"))?;
            solved
        }
    };
    reporter.finish(Stage::Solve);
    timings.insert("solve".to_string(), t0.elapsed().as_millis() as u64);
    let records = solved.records;

    let python = records
        .iter()
        .find(|r| r.package_record.name.as_normalized() == "python")
        .map(|r| rattler::install::PythonInfo::from_python_record(&r.package_record, opts.platform))
        .transpose()
        .map_err(|e| BuildError::Options(format!("the environment's python: {e}")))?;
    if python.is_none() {
        if let Some(r) = records.iter().find(|r| r.package_record.noarch.is_python()) {
            return Err(BuildError::Options(format!(
                "{} is a noarch: python package but the environment has no python",
                dist_name(r)
            )));
        }
    }
    let install_mode = opts.install.unwrap_or(spec.envlayer.install);
    let store = PackageStore::new(opts.cache_dir.clone()).with_timeouts(opts.network);
    let cache = LayerCache::new(opts.cache_dir.clone());
    let mut warnings = Vec::new();

    // Link scripts: which packages cannot be baked (those with scripts, and what depends on them).
    let t1 = Instant::now();
    let infos: Vec<crate::link_scripts::LinkInfo> = futures::stream::iter(records.iter().map(|r| crate::link_scripts::inspect(&store, &opts.cache_dir, r)))
        .buffered(opts.jobs.max(1) * 2)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    timings.insert("inspect".to_string(), t1.elapsed().as_millis() as u64);
    let link_scripts: BTreeMap<String, Vec<String>> = records
        .iter()
        .zip(&infos)
        .filter(|(_, i)| !i.scripts.is_empty())
        .map(|(r, i)| (dist_name(r), i.scripts.clone()))
        .collect();
    let flagged: Vec<bool> = infos.iter().map(|i| !i.scripts.is_empty()).collect();
    let runtime: Vec<bool> = match (install_mode, opts.link_scripts) {
        (InstallMode::Runtime, _) => vec![true; records.len()],
        (_, crate::link_scripts::LinkScriptPolicy::Fail) if !link_scripts.is_empty() => {
            let list: Vec<String> = link_scripts.iter().map(|(p, s)| format!("{p} ({})", s.join(", "))).collect();
            return Err(BuildError::Options(format!(
                "--link-scripts fail: these packages have link scripts that cannot run in an image build: {}",
                list.join("; ")
            )));
        }
        (_, crate::link_scripts::LinkScriptPolicy::Ignore) => {
            for (p, s) in &link_scripts {
                warnings.push(format!("{p}: baked with --link-scripts ignore; its scripts ({}) did not run", s.join(", ")));
            }
            vec![false; records.len()]
        }
        _ => crate::link_scripts::runtime_set(&records, &flagged),
    };
    let messages: Vec<String> = records
        .iter()
        .zip(&infos)
        .flat_map(|(r, i)| i.messages.iter().map(move |m| format!("{}: {m}", dist_name(r))))
        .collect();
    let baked: Vec<usize> = (0..records.len()).filter(|&i| !runtime[i]).collect();
    let runtime_packages: Vec<usize> = (0..records.len()).filter(|&i| runtime[i]).collect();

    // .pyc: compiled with the environment's own python, when this machine can run it.
    let python_idx = records.iter().position(|r| r.package_record.name.as_normalized() == "python");
    let pyc_python = match (opts.pyc, python_idx, &python) {
        (false, _, _) => None,
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
    if let Some(r) = &pyc_reason {
        if python_idx.is_some() {
            warnings.push(format!("no .pyc files compiled: {r}"));
        }
    }

    let params = LayerParams {
        target: InstallTarget { prefix: prefix.clone(), platform: opts.platform, python },
        compression: opts.compression,
        mtime: PackOptions::default().mtime,
        pyc: pyc_python.map(|p| dist_name(&records[p])),
    };
    let keys: Vec<String> = records.iter().map(|r| package_key(r, &params)).collect();

    // Plan: one layer per baked package unless the budget forces sharing; a runtime layer if needed.
    let needs_runtime_layer = !runtime_packages.is_empty() && install_mode == InstallMode::Baked;
    let budget = opts.max_layers - base_layers - 1 - usize::from(needs_runtime_layer);
    let items: Vec<PlanItem> = baked
        .iter()
        .map(|&i| PlanItem { key: records[i].package_record.name.as_normalized().to_string(), size: records[i].package_record.size.unwrap_or(0) })
        .collect();
    let plan: Vec<Vec<usize>> = plan_layers(&items, budget).into_iter().map(|g| g.into_iter().map(|j| baked[j]).collect()).collect();

    reporter.start(Stage::Fetch, baked.len() as u64);
    reporter.start(Stage::Install, baked.len() as u64);
    reporter.start(Stage::Pack, plan.len() as u64 + 1);
    let baker = crate::package_layers::Baker::new(&records, &keys, store.clone(), cache.clone(), params.clone(), reporter, pyc_python)?;
    let baked_out = baker.bake(&baked, &plan, opts.jobs).await?;
    reporter.finish(Stage::Fetch);
    reporter.finish(Stage::Install);
    timings.insert("layers".to_string(), t1.elapsed().as_millis() as u64);
    timings.extend(baked_out.timings_ms.iter().map(|(k, v)| (format!("layers.{k}"), *v)));
    for c in &baked_out.clobbers {
        warnings.push(format!(
            "clobber: {} is installed by {} and {}; the image has {}'s (the later in dependency order, as conda does)",
            c.path,
            c.losers.join(", "),
            c.winner,
            c.winner
        ));
    }
    for m in &messages {
        warnings.push(format!("message from {m}"));
    }

    // Activation: the variables the baked packages' activate.d scripts set, in install order.
    let base_path = base
        .as_ref()
        .and_then(|b| b.config["config"]["Env"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str()?.strip_prefix("PATH=").map(String::from))
        .next()
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), format!("{prefix}/bin:{base_path}")),
        ("CONDA_PREFIX".into(), prefix.clone()),
        ("CONDA_DEFAULT_ENV".into(), spec.name.clone()),
    ];
    for (i, facts) in &baked_out.facts {
        for (k, v) in &facts.activation {
            let value = crate::activation::expand(v, |name| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()));
            match env.iter_mut().find(|(n, _)| n == k) {
                Some(slot) => slot.1 = value,
                None => env.push((k.clone(), value)),
            }
        }
        for line in &facts.activation_skipped {
            warnings.push(format!("{}: activation line not applied to the image config: {line}", dist_name(&records[*i])));
        }
    }
    let pyc_files: usize = baked_out.facts.values().map(|f| f.paths.iter().filter(|p| p.ends_with(".pyc")).count()).sum();

    // Times: the config's `created` is SOURCE_DATE_EPOCH or the newest package's build time, so the config
    // depends only on the inputs; the build time goes in the manifest only when no SOURCE_DATE_EPOCH is set.
    let created_secs = opts.source_date_epoch.unwrap_or_else(|| {
        records.iter().filter_map(|r| r.package_record.timestamp.as_ref().map(|t| t.timestamp_millis())).max().unwrap_or(0) / 1000
    });
    let created = rfc3339(created_secs);
    let manifest_created = match opts.source_date_epoch {
        Some(s) => rfc3339(s),
        None => opts.now.to_string(),
    };

    // The environment layer: what belongs to the environment as a whole: conda's history, and the lock
    // (so the image carries exactly what it was built from: `conda-meta/envlayer.lock`).
    let history = if install_mode == InstallMode::Baked { env_history(&created, &spec, &records) } else { String::new() };
    let lock_text = {
        let tmp = tempfile::Builder::new().prefix("lock-").tempdir_in(cache.tmp_dir()?).map_err(io_err(&opts.cache_dir))?;
        let path = tmp.path().join("lock");
        solve::write_lock(&Solved { records: records.clone() }, &channels, opts.platform, &path)?;
        std::fs::read_to_string(&path).map_err(io_err(&path))?
    };
    // What the runtime installer gets: for the whole-environment opt-out, the lock as it is (packages come
    // from their channels); for packages with link scripts, their URLs point into the archives layer.
    let runtime_names: Vec<String> = runtime_packages.iter().map(|&i| records[i].package_record.name.as_normalized().to_string()).collect();
    let runtime_lock_text = if install_mode == InstallMode::Baked && !runtime_packages.is_empty() {
        let mut rt_records = records.clone();
        for &i in &runtime_packages {
            let file = rt_records[i].identifier.to_file_name();
            rt_records[i].url = url::Url::parse(&format!("file://{}/pkgs/{file}", crate::runtime_install::RUNTIME_DIR))
                .map_err(|e| BuildError::Options(format!("runtime package URL: {e}")))?;
        }
        let tmp = tempfile::Builder::new().prefix("lock-").tempdir_in(cache.tmp_dir()?).map_err(io_err(&opts.cache_dir))?;
        let path = tmp.path().join("lock");
        solve::write_lock(&Solved { records: rt_records }, &channels, opts.platform, &path)?;
        std::fs::read_to_string(&path).map_err(io_err(&path))?
    } else {
        lock_text.clone()
    };
    let installer_digest = match (runtime_packages.is_empty(), &opts.runtime_installer) {
        (false, Some(p)) => Some(crate::cache::digest_file(p).map_err(io_err(p))?.0.to_string()),
        _ => None,
    };
    let env_key = Digest::of(
        &image::canonical_json(&serde_json::json!({"installer": installer_digest, "runtime_lock": runtime_lock_text, "runtime": runtime_names, "history": history, "lock": lock_text, "prefix": prefix, "install": install_mode, "compression": opts.compression.id(), "mtime": params.mtime, "format": crate::cache::LAYER_FORMAT})),
    )
    .hex();
    let env_layer = match cache.get(&env_key) {
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
            if !runtime_packages.is_empty() {
                let installer = opts.runtime_installer.clone().ok_or_else(|| {
                    BuildError::Options("runtime install needs envlayer's own binary as the installer".into())
                })?;
                let rt = tmp.path().join("runtime");
                crate::runtime_install::write_runtime_dir(&rt, &installer, &runtime_lock_text, &spec.name, &prefix, &runtime_names)
                    .map_err(io_err(&rt))?;
                sources.push(Source::new(rt, crate::runtime_install::RUNTIME_DIR.trim_start_matches('/').to_string()));
            }
            let blob = tmp.path().join("layer.blob");
            let opts_pack = PackOptions { mtime: params.mtime, threads: cpus() };
            let (layer, _) = pack_to_file(&sources, &opts_pack, opts.compression, &blob)
                .map_err(|source| BuildError::Pack { packages: "environment".into(), source })?;
            let c = CachedLayer { layer, packages: vec![], clobbered: vec![] };
            cache.put(&env_key, &c, &blob)?;
            baker.compressed.fetch_add(1, Ordering::Relaxed);
            (c, false)
        }
    };
    reporter.advance(Stage::Pack, "environment");
    reporter.finish(Stage::Pack);

    // The archives of the packages installed at runtime, in a layer of their own.
    let archives_layer = if needs_runtime_layer {
        let hashes: Vec<String> = runtime_packages.iter().filter_map(|&i| crate::fetch::package_hash(&records[i])).collect();
        let key = Digest::of(format!("archives:{}:{}:{}", hashes.join(","), opts.compression.id(), params.mtime).as_bytes()).hex();
        Some(match cache.get(&key) {
            Some(c) => (c, true),
            None => {
                let tmp = tempfile::Builder::new().prefix("archives-").tempdir_in(cache.tmp_dir()?).map_err(io_err(&opts.cache_dir))?;
                let pkgs = tmp.path().join("root").join("pkgs");
                std::fs::create_dir_all(&pkgs).map_err(io_err(&pkgs))?;
                for &i in &runtime_packages {
                    let fetched = store.fetch(&records[i]).await?;
                    let dest = pkgs.join(records[i].identifier.to_file_name());
                    if std::fs::hard_link(&fetched.archive, &dest).is_err() {
                        std::fs::copy(&fetched.archive, &dest).map_err(io_err(&dest))?;
                    }
                }
                let blob = tmp.path().join("layer.blob");
                let sources = [Source::new(tmp.path().join("root"), crate::runtime_install::RUNTIME_DIR.trim_start_matches('/').to_string())];
                let (layer, _) = pack_to_file(&sources, &PackOptions { mtime: params.mtime, threads: cpus() }, opts.compression, &blob)
                    .map_err(|source| BuildError::Pack { packages: "runtime archives".into(), source })?;
                let c = CachedLayer { layer, packages: runtime_names.clone(), clobbered: vec![] };
                cache.put(&key, &c, &blob)?;
                baker.compressed.fetch_add(1, Ordering::Relaxed);
                (c, false)
            }
        })
    } else {
        None
    };

    // The identity: what decides the image, for naming and lookups.
    let inputs_hash = identity(opts, &spec, base.as_ref().map(|b| &b.manifest_digest))?;

    // Assemble.
    let mut new_layers = Vec::new();
    let mut layer_summaries: Vec<LayerSummary> = base
        .as_ref()
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
                })
                .collect()
        })
        .unwrap_or_default();
    let mut packages = vec![None; records.len()];
    let mut shared = Vec::new();
    for b in &baked_out.layers {
        let members = &b.members;
        let idx = layer_summaries.len();
        for &i in members {
            let r = &records[i];
            packages[i] = Some(PackageSummary::new(r, idx));
        }
        if members.len() > 1 {
            shared.push(b.cached.packages.clone());
        }
        new_layers.push(NewLayer {
            layer: b.cached.layer.clone(),
            path: cache.blob_path(&b.cached.layer.digest),
            annotations: BTreeMap::from([(crate::keys::ANNOTATION_PACKAGES.to_string(), b.cached.packages.join(","))]),
            created_by: format!("envlayer: {}", b.cached.packages.join(" ")),
        });
        layer_summaries.push(LayerSummary {
            digest: b.cached.layer.digest.to_string(),
            diff_id: Some(b.cached.layer.diff_id.to_string()),
            size: b.cached.layer.size,
            media_type: b.cached.layer.media_type().to_string(),
            packages: b.cached.packages.clone(),
            cached: b.from_cache,
        });
    }
    if let Some((c, from_cache)) = &archives_layer {
        for &i in &runtime_packages {
            let r = &records[i];
            packages[i] = Some(PackageSummary::new(r, layer_summaries.len()));
        }
        new_layers.push(NewLayer {
            layer: c.layer.clone(),
            path: cache.blob_path(&c.layer.digest),
            annotations: BTreeMap::from([(ANNOTATION_RUNTIME.to_string(), runtime_names.join(","))]),
            created_by: format!("envlayer: archives installed at runtime: {}", runtime_names.join(" ")),
        });
        layer_summaries.push(LayerSummary {
            digest: c.layer.digest.to_string(),
            diff_id: Some(c.layer.diff_id.to_string()),
            size: c.layer.size,
            media_type: c.layer.media_type().to_string(),
            packages: vec!["runtime-archives".into()],
            cached: *from_cache,
        });
    }
    new_layers.push(NewLayer {
        layer: env_layer.0.layer.clone(),
        path: cache.blob_path(&env_layer.0.layer.digest),
        annotations: BTreeMap::from([(crate::keys::ANNOTATION_PACKAGES.to_string(), String::new())]),
        created_by: format!("envlayer: environment {} ({install_mode:?})", spec.name),
    });
    layer_summaries.push(LayerSummary {
        digest: env_layer.0.layer.digest.to_string(),
        diff_id: Some(env_layer.0.layer.diff_id.to_string()),
        size: env_layer.0.layer.size,
        media_type: env_layer.0.layer.media_type().to_string(),
        packages: vec!["environment".into()],
        cached: env_layer.1,
    });
    let labels = BTreeMap::from([
        (crate::keys::ANNOTATION_ENV_NAME.to_string(), spec.name.clone()),
        (crate::keys::ANNOTATION_INPUTS.to_string(), inputs_hash.clone()),
        (crate::keys::LABEL_PREFIX.to_string(), prefix.clone()),
    ]);
    let mut labels = labels;
    if let Some(origin) = &base_origin {
        labels.insert(crate::keys::LABEL_BASE.to_string(), origin.clone());
    }
    let install_name = match install_mode {
        InstallMode::Baked => "baked",
        InstallMode::Runtime => "runtime",
    };
    labels.insert(ANNOTATION_INSTALL.to_string(), install_name.to_string());
    if !runtime_packages.is_empty() {
        labels.insert(ANNOTATION_RUNTIME.to_string(), runtime_names.join(","));
    }
    if let Some(ttl) = opts.ttl {
        labels.insert(crate::keys::LABEL_QUAY_EXPIRES.to_string(), format_ttl(ttl));
    }
    labels.extend(spec.envlayer.labels.clone());
    labels.extend(opts.labels.clone());
    let mut annotations = spec.envlayer.annotations.clone();
    annotations.extend(opts.annotations.clone());
    annotations.extend([
        (crate::keys::ANNOTATION_ENV_NAME.to_string(), spec.name.clone()),
        (crate::keys::ANNOTATION_INPUTS.to_string(), inputs_hash.clone()),
        (ANNOTATION_INSTALL.to_string(), install_name.to_string()),
        (ANNOTATION_PACKAGE_COUNT.to_string(), records.len().to_string()),
        ("org.opencontainers.image.created".to_string(), manifest_created.clone()),
    ]);
    if !runtime_packages.is_empty() {
        annotations.insert(ANNOTATION_RUNTIME.to_string(), runtime_names.join(","));
    }
    if let Some(ttl) = opts.ttl {
        let start: jiff::Timestamp = manifest_created.parse().unwrap_or(opts.now);
        let expires = start
            .checked_add(jiff::SignedDuration::from_secs(ttl.as_secs() as i64))
            .map_err(|e| BuildError::Options(format!("--ttl: {e}")))?;
        annotations.insert(ANNOTATION_EXPIRES.to_string(), expires.to_string());
    }
    let entrypoint = (!runtime_packages.is_empty()).then(crate::runtime_install::entrypoint);
    let settings = ImageSettings { os_arch, env, labels, created, annotations, entrypoint };
    let img = image::assemble(base.as_ref(), &new_layers, &settings);

    // Write: into a temporary folder beside the output, then renamed into place.
    let t2 = Instant::now();
    reporter.start(Stage::Write, 1);
    if let Some(output) = &opts.output {
        crate::output::write(&img, output, &opts.tag, &lock_text)?;
    }
    reporter.finish(Stage::Write);
    timings.insert("write".to_string(), t2.elapsed().as_millis() as u64);
    timings.insert("total".to_string(), t0.elapsed().as_millis() as u64);
    for w in &warnings {
        reporter.warn(w);
    }

    let summary = BuildSummary {
        name: spec.name,
        prefix,
        platform: opts.platform.to_string(),
        output: opts.output.clone(),
        tag: opts.tag.clone(),
        lock: opts.lock_output(),
        base: base_origin,
        manifest_digest: img.digest().to_string(),
        config_digest: img.config_digest().to_string(),
        inputs_hash,
        solved: opts.lock.is_none(),
        packages: packages.into_iter().flatten().collect(),
        layers: layer_summaries,
        shared_layers: shared,
        work: Work {
            downloaded: baker.downloaded.load(Ordering::Relaxed),
            installed: baker.installed.load(Ordering::Relaxed),
            compressed: baker.compressed.load(Ordering::Relaxed),
            cached_layers: baker.cached.load(Ordering::Relaxed) + usize::from(env_layer.1),
        },
        timings_ms: timings,
        warnings,
        runtime_packages: runtime_packages.iter().map(|&i| dist_name(&records[i])).collect(),
        link_scripts,
        clobbers: baked_out.clobbers.clone(),
        messages,
        pyc: PycSummary { compiled: pyc_python.is_some(), files: pyc_files, reason: pyc_reason },
    };
    Ok(BuildOutput { summary, image: img })
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

/// The number of CPUs to compress a layer with.
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(2)
}
