//! Flags shared by commands, and how they become library options.

use clap::{Args, ValueEnum};
use envlayer::build::{BuildOptions, RegistrySettings, DEFAULT_MAX_LAYERS};
use envlayer::registry::{AuthSources, ClientOptions};
use envlayer::spec::InstallMode;
use envlayer::Compression;
use rattler_conda_types::Subdir;
use std::path::PathBuf;
use std::str::FromStr;

use super::Result;
pub use super::values::{check_tag, key_values, parse_base, parse_size, parse_ttl};

#[derive(Clone, Copy, ValueEnum)]
pub enum Codec {
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Sbom {
    Spdx,
    Cyclonedx,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LinkScripts {
    Runtime,
    Fail,
    Ignore,
}

#[derive(Args, Clone)]
pub struct RegistryArgs {
    /// A registry (host:port) where plain HTTP is allowed when HTTPS fails; loopback always is. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure: Vec<String>,
    /// A PEM file of CA certificates to trust for registries, besides the system's. Repeatable.
    #[arg(long = "registry-ca", value_name = "FILE", env = "ENVLAYER_REGISTRY_CA")]
    pub ca: Vec<PathBuf>,
    #[command(flatten)]
    pub net: NetworkArgs,
}

#[derive(Args, Clone)]
pub struct NetworkArgs {
    /// Give up on a registry, channel or package server that sends (or takes) nothing for this many
    /// seconds (each request is retried a few times before the command fails).
    #[arg(long = "network-timeout", value_name = "SECONDS", env = "ENVLAYER_NETWORK_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub network_timeout: u64,
}

/// For the commands that upload.
#[derive(Args, Clone)]
pub struct PushJobs {
    /// Parallel blob uploads.
    #[arg(long = "push-jobs", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub push_jobs: u16,
}

impl RegistryArgs {
    pub fn settings(&self) -> RegistrySettings {
        RegistrySettings {
            auth: AuthSources::from_env(),
            client: ClientOptions {
                insecure: self.insecure.clone(),
                ca_certs: self.ca.clone(),
                timeouts: self.timeouts(),
                ..ClientOptions::default()
            },
        }
    }

    pub fn timeouts(&self) -> envlayer::net::Timeouts {
        self.net.timeouts()
    }
}

impl NetworkArgs {
    pub fn timeouts(&self) -> envlayer::net::Timeouts {
        envlayer::net::Timeouts::from_secs(self.network_timeout)
    }
}

/// The clock: `--now` for tests, else the system's.
#[derive(Args, Clone)]
pub struct ClockArgs {
    /// Pretend it is this time (RFC 3339), e.g. to see what expires tomorrow; tests use it.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
}

impl ClockArgs {
    pub fn now(&self) -> Result<jiff::Timestamp> {
        match &self.now {
            Some(t) => Ok(t.parse().map_err(|e| format!("--now {t:?}: {e}"))?),
            None => Ok(jiff::Timestamp::now()),
        }
    }
}

#[derive(Args)]
pub struct SolveFlags {
    /// The environment file: conda's environment.yaml (which may end in a `pip:` list), or with --python
    /// a pip requirements.txt.
    pub env_file: PathBuf,
    /// ENV_FILE is a requirements.txt: install it on a conda python of this version (e.g. 3.11).
    #[arg(long, value_name = "MAJOR.MINOR")]
    pub python: Option<String>,
    /// With --python: a conda channel for python (repeatable) [default: conda-forge].
    #[arg(long = "channel", value_name = "CHANNEL", requires = "python")]
    pub channels: Vec<String>,
    /// With --python: the environment's name [default: the requirements file's stem].
    #[arg(long, requires = "python")]
    pub name: Option<String>,
    /// The pip index, replacing PyPI and any in the files [env: PIP_INDEX_URL, UV_INDEX_URL].
    #[arg(long, value_name = "URL")]
    pub index_url: Option<String>,
    /// A further pip index; repeatable [env: PIP_EXTRA_INDEX_URL, UV_EXTRA_INDEX_URL, space-separated].
    #[arg(long, value_name = "URL")]
    pub extra_index_url: Vec<String>,
    /// A folder or page of wheels for pip packages; repeatable [env: PIP_FIND_LINKS].
    #[arg(long, value_name = "PATH_OR_URL")]
    pub find_links: Vec<String>,
    /// Build pip source distributions into wheels with the environment's python (runs their build code
    /// on this machine: only for packages you trust).
    #[arg(long)]
    pub build_sdists: bool,
    /// The uv program that resolves pip requirements.
    #[arg(long, env = "ENVLAYER_UV", default_value = "uv")]
    pub uv: PathBuf,
    /// The conda platform of the image; several, comma-separated (linux-64,linux-aarch64), make a
    /// multi-platform image index [default: the --lock's platform, else linux-64].
    #[arg(long)]
    pub platform: Option<String>,
    /// A virtual package of the machine the image runs on, as __name=version[=build]; repeatable.
    /// Defaults: __unix, __linux=5.10, __glibc=2.28, __archspec=1=<arch>. E.g. --virtual-package __cuda=12.4
    #[arg(long = "virtual-package", value_name = "SPEC")]
    pub virtual_packages: Vec<String>,
    /// Cache of packages, layers and repodata [default: $XDG_CACHE_HOME/envlayer or ~/.cache/envlayer].
    #[arg(long, env = "ENVLAYER_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct BuildFlags {
    #[command(flatten)]
    pub solve: SolveFlags,
    /// The environment's path in the image [default: /opt/conda/envs/<name>].
    #[arg(long)]
    pub prefix: Option<String>,
    /// The base image: an OCI layout (DIR, DIR:TAG or oci:DIR[:TAG]), a registry image
    /// (registry.example.com/repo:tag or docker://...), or `scratch` for none (the image then has no libc
    /// and no shell, only the environment: without --base the build warns). A multi-arch base gives each
    /// platform its image; PLATFORM=IMAGE sets one platform's base (repeatable).
    #[arg(long, value_name = "IMAGE")]
    pub base: Vec<String>,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: Codec,
    /// Compression level [default: 6 for gzip, 3 for zstd].
    #[arg(long)]
    pub compression_level: Option<i32>,
    /// The most layers the image may have, base layers included; packages share layers beyond it.
    #[arg(long, default_value_t = DEFAULT_MAX_LAYERS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=1000))]
    pub max_layers: usize,
    /// Conda packages whose archive is smaller than SIZE (`512K`, `1M`) share hash-bucketed layers
    /// (see --buckets) instead of one layer each: fewer layers for a pull to apply. 0: one layer each.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "1M")]
    pub bucket_below: u64,
    /// A conda package whose archive is larger than SIZE (`8M`) spans several layers, one per SIZE of
    /// archive, split by path: its parts download in parallel and the first unpacks while the rest
    /// download. 0: every package in one layer.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "8M")]
    pub split_above: u64,
    /// How many shared layers small packages go into, with --bucket-below.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub buckets: u16,
    /// Install exactly what this lock file lists, with no solve: envlayer's, a pixi.lock, a
    /// conda-lock.yml, or a conda explicit file (@EXPLICIT, URL#hash lines).
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// With --lock: the lock's environment (a pixi.lock has several) [default: default].
    #[arg(long, value_name = "NAME", requires = "lock")]
    pub environment: Option<String>,
    /// How long the image is fresh (the `quay.expires-after` label, and what `prune` deletes): 24h, 90m,
    /// 7d, or `never`. [default: never for build; 24h for resolve's `<name>-<hash>` tags]
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// A label for the image config (KEY=VALUE); repeatable; over the environment file's.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// An annotation for the image manifest (KEY=VALUE); repeatable; over the environment file's.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Opt this environment out of baked layers: the image installs it when the container starts.
    #[arg(long)]
    pub runtime_install: bool,
    /// Packages with pre/post-link scripts: install them (and what depends on them) when the container
    /// starts, refuse to build, or bake them anyway with a warning.
    #[arg(long, value_enum, default_value = "runtime")]
    pub link_scripts: LinkScripts,
    /// The image's SBOM: SPDX 2.3 or CycloneDX 1.6 JSON, written beside a layout output (DIR.spdx.json,
    /// DIR.cdx.json) and attached to a pushed image as an OCI artifact whose subject is the image.
    #[arg(long, value_enum, default_value = "spdx")]
    pub sbom: Sbom,
    /// Do not compile .pyc files into the layers.
    #[arg(long)]
    pub no_pyc: bool,
    /// How many layers to build, and interpreters to compile `.pyc` files, at once [default: number of CPUs].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: Option<u16>,
    /// The registry cache: the repository (registry/repo) where layers built by any runner are recorded
    /// and looked up, or `none`. [default: the push repository (build --push, resolve --repo); none for a
    /// build to a layout only]
    #[arg(long, value_name = "REPO")]
    pub cache_repo: Option<String>,
    /// Build registry-cache hits here too and compare digests: all of them (`--verify-cache`), or a random
    /// sample of N (`--verify-cache=N`). An entry that disagrees is reported, never used, and rewritten.
    #[arg(long, value_name = "N", num_args = 0..=1, require_equals = true, default_missing_value = "all", value_parser = super::values::parse_verify)]
    pub verify_cache: Option<envlayer::regcache::Verify>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub clock: ClockArgs,
}

pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("envlayer")
}

impl SolveFlags {
    /// Index options from the environment (PIP_*, then UV_*), then the command line over them, as
    /// requirement lines are read (so errors and `${VAR}` expansion are the same).
    fn pip_index(&self) -> Result<envlayer::pypi::IndexOptions> {
        let mut lines = Vec::new();
        for var in ["PIP_INDEX_URL", "UV_INDEX_URL"] {
            if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
                lines.push(format!("--index-url {v}"));
            }
        }
        for var in ["PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL"] {
            for v in std::env::var(var).unwrap_or_default().split_whitespace() {
                lines.push(format!("--extra-index-url {v}"));
            }
        }
        for v in std::env::var("PIP_FIND_LINKS").unwrap_or_default().split_whitespace() {
            lines.push(format!("--find-links {v}"));
        }
        lines.extend(self.index_url.iter().map(|u| format!("--index-url {u}")));
        lines.extend(self.extra_index_url.iter().map(|u| format!("--extra-index-url {u}")));
        lines.extend(self.find_links.iter().map(|u| format!("--find-links {u}")));
        let cwd = std::env::current_dir()?;
        let spec = envlayer::pypi::spec::from_entries(&lines, std::path::Path::new("the command line and PIP_*/UV_* variables"), &cwd)?;
        Ok(spec.index)
    }

    /// The library's options for what decides the packages: no output, no image settings.
    pub fn options(&self, net: &NetworkArgs) -> Result<BuildOptions> {
        let text = self.platform.as_deref().unwrap_or("linux-64");
        let platforms = text
            .split(',')
            .map(|p| Subdir::from_str(p.trim()).map_err(|e| format!("--platform {p}: {e}")))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut platforms = platforms;
        let mut seen = std::collections::BTreeSet::new();
        platforms.retain(|p| seen.insert(*p));
        let platform = platforms[0];
        let mut opts = BuildOptions::new(&self.env_file, PathBuf::new(), self.cache_dir.clone().unwrap_or_else(default_cache_dir));
        opts.output = None;
        opts.platform = platform;
        if platforms.len() > 1 {
            opts.platforms = platforms;
        }
        opts.virtual_packages = self.virtual_packages.clone();
        opts.network = net.timeouts();
        opts.python = self.python.clone();
        opts.channels = self.channels.clone();
        opts.name = self.name.clone();
        opts.pip_index = self.pip_index()?;
        opts.uv = self.uv.clone();
        opts.build_sdists = self.build_sdists;
        opts.netrc = std::env::var_os("NETRC")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".netrc")))
            .filter(|p| p.is_file());
        Ok(opts)
    }
}

impl BuildFlags {
    /// The library's options; `output` is decided by the command, and so is the TTL when `--ttl` is not
    /// given (`resolve`'s environment tags expire, a build's tag does not).
    pub fn options(&self, output: Option<PathBuf>, default_ttl: Option<std::time::Duration>) -> Result<BuildOptions> {
        let mut opts = self.solve.options(&self.registry.net)?;
        opts.output = output;
        opts.prefix = self.prefix.clone();
        opts.registry = self.registry.settings();
        opts.compression = match (self.compression, self.compression_level) {
            (Codec::Gzip, None) => Compression::GZIP_DEFAULT,
            (Codec::Gzip, Some(l)) if (0..=9).contains(&l) => Compression::Gzip(l as u32),
            (Codec::Zstd, None) => Compression::ZSTD_DEFAULT,
            (Codec::Zstd, Some(l)) if (1..=22).contains(&l) => Compression::Zstd(l),
            (_, Some(l)) => return Err(format!("--compression-level {l} is out of range (gzip 0-9, zstd 1-22)").into()),
        };
        opts.max_layers = self.max_layers;
        opts.split_above = (self.split_above > 0).then_some(self.split_above);
        opts.buckets = (self.bucket_below > 0).then_some(envlayer::build::Buckets { below: self.bucket_below, count: usize::from(self.buckets) });
        opts.lock = self.lock.clone();
        opts.lock_environment = self.environment.clone();
        // The lock's platforms, when --platform is not given: a lock made for linux-aarch64 builds that.
        if let (None, Some(lock)) = (&self.solve.platform, &self.lock) {
            let linux: Vec<Subdir> = envlayer::lockfile::lock_platforms(lock, self.environment.as_deref())?
                .into_iter()
                .filter(|p| p.as_str().starts_with("linux-"))
                .collect();
            match linux.as_slice() {
                [] => {}
                [one] => opts.platform = *one,
                // A lock of several platforms builds them all, as one multi-platform image.
                many => {
                    opts.platform = many[0];
                    opts.platforms = many.to_vec();
                }
            }
        }
        for b in &self.base {
            let per_platform = b.split_once('=').and_then(|(p, r)| Subdir::from_str(p).ok().filter(|_| p.starts_with("linux-")).map(|p| (p, r)));
            match per_platform {
                Some((p, r)) => {
                    opts.bases.insert(p, parse_base(r)?);
                }
                None if opts.base.is_none() => opts.base = Some(parse_base(b)?),
                None => return Err(format!("--base {b}: a second base for all platforms; give one per platform as PLATFORM=IMAGE").into()),
            }
        }
        // (The platforms are settled by now: --platform, else the lock's.)
        let making: Vec<Subdir> = if opts.platforms.is_empty() { vec![opts.platform] } else { opts.platforms.clone() };
        if let Some(p) = opts.bases.keys().find(|p| !making.contains(p)) {
            return Err(format!("--base {p}=...: this build does not make {p} (see --platform)").into());
        }
        if opts.platforms.is_empty() {
            if let Some(b) = opts.bases.remove(&opts.platform) {
                opts.base = Some(b);
            }
        }
        if let Some(jobs) = self.jobs {
            opts.jobs = usize::from(jobs);
        }
        opts.ttl = match &self.ttl {
            Some(t) => parse_ttl(t)?,
            None => default_ttl,
        };
        opts.labels = key_values(&self.labels, "label")?;
        opts.annotations = key_values(&self.annotations, "annotation")?;
        opts.install = self.runtime_install.then_some(InstallMode::Runtime);
        opts.runtime_installer = std::env::current_exe().ok();
        opts.link_scripts = match self.link_scripts {
            LinkScripts::Runtime => envlayer::link_scripts::LinkScriptPolicy::Runtime,
            LinkScripts::Fail => envlayer::link_scripts::LinkScriptPolicy::Fail,
            LinkScripts::Ignore => envlayer::link_scripts::LinkScriptPolicy::Ignore,
        };
        opts.pyc = !self.no_pyc;
        opts.sbom = match self.sbom {
            Sbom::Spdx => Some(envlayer::sbom::SbomFormat::Spdx),
            Sbom::Cyclonedx => Some(envlayer::sbom::SbomFormat::Cyclonedx),
            Sbom::None => None,
        };
        opts.now = self.clock.now()?;
        opts.source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(s) if !s.is_empty() => Some(s.parse().map_err(|_| format!("SOURCE_DATE_EPOCH={s:?} is not a number"))?),
            _ => None,
        };
        Ok(opts)
    }
}
