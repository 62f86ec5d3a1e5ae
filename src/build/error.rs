//! Why a build failed: one variant per subject (a flag, a package, a file, a stage's own error type).

use std::path::{Path, PathBuf};

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
    /// The layer cache.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// Reading the base or writing the image.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// The output folder or its lock.
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// An archive output.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// Reading a base image from a registry.
    #[error("base image")]
    Registry(#[from] crate::registry::RegistryError),
    /// `--prefix` is not a normal absolute path.
    #[error("--prefix {prefix:?} must be an absolute path like /opt/conda/envs/NAME")]
    Prefix {
        /// The prefix given.
        prefix: String,
    },
    /// A `--label` or `--annotation` key is reserved or malformed.
    #[error("{flag}")]
    Key {
        /// `--label` or `--annotation`.
        flag: &'static str,
        /// What is wrong with the key.
        #[source]
        source: crate::spec::KeyError,
    },
    /// The target platform is not one envlayer builds.
    #[error("platform {platform}: envlayer builds Linux images only")]
    Platform {
        /// The conda subdir asked for.
        platform: String,
    },
    /// `--lock` names a lock made from another environment (or an older version of this one).
    #[error("lock file {lock} does not match {env_file}:\n  - {}\nLock this environment with `envlayer lock {env_file}` and build with that lock, or build without --lock to solve", differences.join("\n  - "))]
    LockMismatch {
        /// The lock file.
        lock: PathBuf,
        /// The environment file.
        env_file: PathBuf,
        /// What differs, one line each.
        differences: Vec<String>,
    },
    /// The lock path holds something envlayer did not write.
    #[error("refusing to write the lock to {path}: it is not a lock file envlayer wrote (choose another path with -o)")]
    LockPath {
        /// The path.
        path: PathBuf,
    },
    /// The base image is for another architecture than `--platform`.
    #[error("base image {base} is {base_arch}, but --platform {platform} builds {want_arch}: pass a base for {want_arch} (or --platform for {base_arch})")]
    BaseArch {
        /// The base, as named.
        base: String,
        /// Its config's `architecture` (and variant).
        base_arch: String,
        /// The platform asked for.
        platform: String,
        /// The architecture that platform means.
        want_arch: String,
    },
    /// `--max-layers` leaves no room for the environment on top of the base.
    #[error("--max-layers {max_layers} leaves no room: the base has {base_layers} layers, and the environment needs at least 2")]
    MaxLayers {
        /// The option's value.
        max_layers: usize,
        /// The base image's layers.
        base_layers: usize,
    },
    /// `--max-layers` cannot hold the base, the environment layer and one layer per kind of package.
    #[error("--max-layers {max_layers} leaves no room: the base has {base_layers} layers, and the environment needs at least {needed} (its own layer, and one for conda packages, pip packages and runtime archives where there are some)")]
    LayerBudget {
        /// The option's value.
        max_layers: usize,
        /// The base image's layers.
        base_layers: usize,
        /// The fewest layers the environment needs.
        needed: usize,
    },
    /// `--link-scripts fail`, and packages have link scripts.
    #[error("--link-scripts fail: these packages have link scripts that cannot run in an image build: {}", .packages.join("; "))]
    LinkScripts {
        /// `name-version-build (script, ...)` per package.
        packages: Vec<String>,
    },
    /// `--ttl` puts the expiry beyond the calendar.
    #[error("--ttl {seconds}s: the expiry time is out of range")]
    Ttl {
        /// The TTL.
        seconds: u64,
        /// The cause.
        #[source]
        source: jiff::Error,
    },
    /// The python package's version says nothing envlayer can use.
    #[error("cannot tell the python version and site-packages of {package}: {reason}")]
    PythonVersion {
        /// `name-version-build` of the python package.
        package: String,
        /// What rattler said (its error type is not public).
        reason: String,
    },
    /// A `noarch: python` package in an environment without python.
    #[error("{package} is a noarch: python package but the environment has no python")]
    NoPython {
        /// `name-version-build` of the package.
        package: String,
    },
    /// A package's URL inside the runtime folder could not be formed.
    #[error("cannot form the runtime URL of {package}")]
    RuntimeUrl {
        /// The package's file name.
        package: String,
        /// The cause.
        #[source]
        source: url::ParseError,
    },
    /// Packages must install at container start, but no installer binary was given.
    #[error("packages that install at container start need envlayer's own binary as the installer, and none was given (BuildOptions::runtime_installer)")]
    NoInstaller,
    /// Resolving the pip part.
    #[error(transparent)]
    PipResolve(Box<crate::pypi::ResolveError>),
    /// Downloading a wheel.
    #[error(transparent)]
    WheelFetch(Box<crate::pypi::fetch::WheelFetchError>),
    /// Installing a wheel.
    #[error(transparent)]
    Wheel(Box<crate::pypi::wheel::WheelError>),
    /// pip packages in an environment that installs at container start.
    #[error("pip packages cannot be installed at container start yet: remove `install: runtime` (or --install runtime), or move them to conda packages")]
    PipAtRuntime,
    /// pip packages without a python to install them for.
    #[error("{package}: pip packages need a python in the environment; add `python` to the conda dependencies (or use --python)")]
    NoPythonForPip {
        /// The first pip requirement or wheel.
        package: String,
    },
    /// A lock names an sdist that is not built yet, and building is not allowed.
    #[error("{package}: the lock names a source distribution that is not built in this cache; pass --build-sdists to build it with the environment's python (it runs the package's own code on this machine)")]
    SdistNotAllowed {
        /// The distribution.
        package: String,
    },
    /// Wheels to install, and no store to fetch them with (a programming error in the caller).
    #[error("wheels to install but no wheel store")]
    NoWheelStore,
    /// A blocking task panicked or was cancelled.
    #[error("{what}: the worker task failed")]
    Task {
        /// What the task did.
        what: String,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
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

// The pip errors are boxed: they name URLs and files, and would make every `Result` carrying a
// `BuildError` larger.
impl From<crate::pypi::ResolveError> for BuildError {
    fn from(e: crate::pypi::ResolveError) -> Self {
        Self::PipResolve(Box::new(e))
    }
}

impl From<crate::pypi::fetch::WheelFetchError> for BuildError {
    fn from(e: crate::pypi::fetch::WheelFetchError) -> Self {
        Self::WheelFetch(Box::new(e))
    }
}

impl From<crate::pypi::wheel::WheelError> for BuildError {
    fn from(e: crate::pypi::wheel::WheelError) -> Self {
        Self::Wheel(Box::new(e))
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io { path: path.to_path_buf(), source }
}
