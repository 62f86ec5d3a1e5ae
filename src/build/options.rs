//! What a build is told: [`BuildOptions`], filled in by the CLI (or a library caller), with the
//! documented defaults.

use super::{BaseRef, Buckets, RegistrySettings, DEFAULT_BUCKETS, DEFAULT_MAX_LAYERS, DEFAULT_SPLIT_ABOVE};
use crate::spec::InstallMode;
use envlayer_layers::Compression;
use rattler_conda_types::Subdir;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// Download a registry base's layers into the cache even without an output (a multi-platform build
    /// writing a layout builds each platform without one).
    pub fetch_base_layers: bool,
    /// A multi-platform build's platforms (two or more; `platform` is the first), see [`multi`].
    pub platforms: Vec<Subdir>,
    /// A multi-platform build's bases per platform, over `base`.
    pub bases: BTreeMap<Subdir, BaseRef>,
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
    /// Conda packages whose archive is smaller than this share hash-bucketed layers; none for one layer
    /// per package.
    pub buckets: Option<Buckets>,
    /// A conda package alone in its layer whose archive is larger than this spans several layers, one per
    /// this many bytes of archive; none to keep every package in one layer.
    pub split_above: Option<u64>,
    /// A lock file to install from instead of solving: envlayer's, a pixi.lock, a conda-lock.yml, or a
    /// conda explicit file.
    pub lock: Option<PathBuf>,
    /// The lock's environment (pixi.lock has several) [default: `default`].
    pub lock_environment: Option<String>,
    /// SOURCE_DATE_EPOCH: the image's creation time, when reproducible manifests are wanted.
    pub source_date_epoch: Option<i64>,
    /// The time of the build (goes in the manifest's annotations when no SOURCE_DATE_EPOCH is given).
    pub now: jiff::Timestamp,
    /// How many layers are built, and interpreters compile `.pyc` files, at once.
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
    /// A PIP environment: `env_file` is a requirements file, installed on a conda python of this
    /// version (`3.11`).
    pub python: Option<String>,
    /// A PIP environment's conda channels (conda-forge when none).
    pub channels: Vec<String>,
    /// A PIP environment's name (default: the file's stem).
    pub name: Option<String>,
    /// Index options from the command line and the environment, over the files'.
    pub pip_index: crate::pypi::IndexOptions,
    /// The uv program that resolves pip requirements.
    pub uv: PathBuf,
    /// The `.netrc` with index credentials, if any.
    pub netrc: Option<PathBuf>,
    /// Write the output as an image archive (a tar) instead of a layout folder.
    pub archive: Option<crate::archive::ArchiveKind>,
    /// The SBOM made with the image (written beside a layout, attached to a pushed image); none to skip.
    pub sbom: Option<crate::sbom::SbomFormat>,
    /// Build source distributions into wheels (with the environment's python). Off by default: a build
    /// runs the package's own code on this machine, where it can read what envlayer can, index
    /// credentials included.
    pub build_sdists: bool,
    /// The registry cache: where layers other runners built are looked up, and this build's are recorded
    /// (after a push, by the caller: [`crate::regcache::publish`]); none to build without one.
    pub registry_cache: Option<crate::regcache::CacheOptions>,
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
            fetch_base_layers: false,
            platforms: Vec::new(),
            bases: BTreeMap::new(),
            output: Some(output.into()),
            registry: RegistrySettings::default(),
            tag: "latest".into(),
            cache_dir: cache_dir.into(),
            compression: Compression::GZIP_DEFAULT,
            max_layers: DEFAULT_MAX_LAYERS,
            buckets: Some(DEFAULT_BUCKETS),
            split_above: Some(DEFAULT_SPLIT_ABOVE),
            lock: None,
            lock_environment: None,
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
            python: None,
            channels: Vec::new(),
            name: None,
            pip_index: Default::default(),
            uv: PathBuf::from("uv"),
            netrc: None,
            build_sdists: false,
            sbom: Some(crate::sbom::SbomFormat::Spdx),
            archive: None,
            registry_cache: None,
        }
    }

    /// The lock file written beside the output: `<output>.lock`.
    pub fn lock_output(&self) -> Option<PathBuf> {
        self.output.as_deref().map(crate::output::lock_path)
    }
}
