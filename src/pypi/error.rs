//! Why the pip part could not be resolved or built.

use std::path::PathBuf;

/// The oldest uv whose `pip compile` writes pylock.toml with every option used here.
pub const MIN_UV: (u64, u64) = (0, 9);

/// Why the pip part could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No uv to run.
    #[error("the environment has pip requirements, which envlayer resolves with uv, and {uv} cannot be run; install uv (pip install uv, or see https://docs.astral.sh/uv/) or point ENVLAYER_UV at it")]
    NoUv {
        /// The program tried.
        uv: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// uv ran longer than [`crate::pypi::uv::UV_TIMEOUT`]; it and what it started were killed.
    #[error("uv ran for more than {seconds} s (a hanging index or build); it was stopped")]
    TimedOut {
        /// The limit.
        seconds: u64,
    },
    /// uv is older than envlayer needs.
    #[error("{uv} is uv {version}; envlayer needs uv {}.{} or newer", MIN_UV.0, MIN_UV.1)]
    OldUv {
        /// The program.
        uv: String,
        /// What it said its version is.
        version: String,
    },
    /// uv could not resolve the requirements; its message says why.
    #[error("cannot resolve the pip requirements for python {}.{} on {platform}:\n{message}", .python.0, .python.1)]
    Unsolvable {
        /// The target python.
        python: (u64, u64),
        /// uv's `--python-platform`.
        platform: String,
        /// uv's message, with credentials cut.
        message: String,
    },
    /// An index refused its credentials (found when uv could not resolve, by asking each index with
    /// credentials once).
    #[error("{index} refused the credentials given for it (HTTP {status}); check the user and password in its URL, ~/.netrc or PIP_INDEX_URL / PIP_EXTRA_INDEX_URL")]
    Denied {
        /// The index, without credentials.
        index: String,
        /// 401 or 403.
        status: u16,
    },
    /// A target envlayer cannot resolve pip packages for.
    #[error("platform {platform}: envlayer installs pip packages for linux-64 and linux-aarch64 only")]
    Platform {
        /// The conda platform.
        platform: String,
    },
    /// A glibc older than any manylinux tag.
    #[error("__glibc {}.{} is older than manylinux_2_17, the oldest platform tag envlayer resolves for", .glibc.0, .glibc.1)]
    Glibc {
        /// The glibc.
        glibc: (u64, u64),
    },
    /// A distribution with no wheel for the target.
    #[error("{name} {version} has no wheel for python {}.{} on {platform}, only a source distribution, and this machine cannot run the environment's python to build it (build on a {platform} machine, ask the index for a wheel, or install it from a conda package)", .python.0, .python.1)]
    NoWheel {
        /// The distribution.
        name: String,
        /// Its version.
        version: String,
        /// The target python.
        python: (u64, u64),
        /// uv's `--python-platform`.
        platform: String,
    },
    /// Some distributions have only sdists, which need an interpreter to build (see
    /// [`crate::pypi::resolve::ResolveInput`]`::builder`); uv's message names them.
    #[error("cannot resolve the pip requirements without building source distributions:\n{message}")]
    NeedsBuild {
        /// uv's message, with credentials cut.
        message: String,
    },
    /// Building a source distribution failed.
    #[error("cannot build a wheel from {sdist}:\n{message}")]
    Build {
        /// The sdist's file name.
        sdist: String,
        /// uv's output, with credentials cut.
        message: String,
    },
    /// uv's output was not the pylock.toml envlayer reads.
    #[error("uv wrote a pylock.toml envlayer cannot read: {reason}")]
    Output {
        /// What is wrong.
        reason: String,
    },
    /// A hashed requirement resolved to a wheel with another hash, or a distribution has no hash given.
    #[error("{what}")]
    Hash {
        /// Which distribution and what is wrong.
        what: String,
    },
    /// A scratch file could not be written or read.
    #[error("cannot write or read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
