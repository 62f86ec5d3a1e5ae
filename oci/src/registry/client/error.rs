//! Why a registry operation failed.

use std::path::PathBuf;

/// Why a registry operation failed. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with an unexpected status.
    #[error("{registry}: {what} failed: HTTP {status}{detail}")]
    Status {
        /// The registry.
        registry: String,
        /// The operation.
        what: String,
        /// The status code.
        status: u16,
        /// The start of the answer's body.
        detail: String,
    },
    /// The registry refused the credentials, or gave no access.
    #[error("{registry}: {what}: access denied ({reason}); check the credentials for {registry} in docker's config.json or REGISTRY_AUTH_FILE")]
    Denied {
        /// The registry.
        registry: String,
        /// The operation.
        what: String,
        /// What the registry or token server said.
        reason: String,
    },
    /// The network failed, after every retry.
    #[error("{registry}: {what}: {attempts} attempts failed")]
    Transport {
        /// The registry.
        registry: String,
        /// The operation.
        what: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last cause.
        #[source]
        source: reqwest::Error,
    },
    /// The registry stopped sending or receiving for longer than the idle timeout, on every attempt.
    #[error("{registry}: {what}: no progress for {seconds} s ({attempts} attempts)")]
    Stalled {
        /// The registry.
        registry: String,
        /// The operation.
        what: String,
        /// The idle timeout.
        seconds: u64,
        /// How many attempts were made.
        attempts: u32,
    },
    /// An answer was larger than envlayer reads for its kind.
    #[error("{registry}: {what}: the answer is larger than {cap} bytes; refusing it")]
    TooLarge {
        /// The registry.
        registry: String,
        /// The operation.
        what: String,
        /// The cap.
        cap: u64,
    },
    /// A local file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The client could not be set up (a bad CA file, say) or an answer made no sense.
    #[error("{0}")]
    Invalid(String),
    /// Reading credentials failed.
    #[error(transparent)]
    Auth(#[from] crate::registry::auth::AuthError),
}

