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
    /// Nothing listens at the registry's address.
    #[error("{registry}: {what}: connection refused: is a registry running at {registry} (host and port right)? Nothing answered, so this was not retried")]
    ConnectionRefused {
        /// The host refused.
        registry: String,
        /// The operation.
        what: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered HTTPS with something else (plain HTTP).
    #[error("{registry}: {what}: the registry does not speak HTTPS (\"received corrupt message\"): if it serves plain HTTP on purpose, pass --insecure-registry {registry}")]
    NotHttps {
        /// The registry.
        registry: String,
        /// The operation.
        what: String,
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
    /// A CA file has no usable certificate.
    #[error("cannot read the CA certificates in {path}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    /// A registry host that cannot be part of a URL.
    #[error("{host:?} is not a registry host")]
    Host {
        /// The host, escaped for printing.
        host: String,
        /// The cause.
        #[source]
        source: url::ParseError,
    },
    /// A request could not be formed.
    #[error("{registry}: {what}: cannot form the request")]
    Request {
        /// The registry.
        registry: String,
        /// The operation.
        what: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A reference or tag that is not valid (from the caller or from an answer).
    #[error("{registry}: {what}: {reference:?} is not a valid tag or digest")]
    BadReference {
        /// The registry.
        registry: String,
        /// The operation.
        what: String,
        /// The reference, escaped for printing.
        reference: String,
    },
    /// A digest in an answer or a reference is malformed or not sha256.
    #[error("{subject}: bad digest")]
    BadDigest {
        /// Whose digest (the registry and the object).
        subject: String,
        /// The cause.
        #[source]
        source: envlayer_layers::DigestParseError,
    },
    /// Bytes did not have the digest they were asked for by, or sent under.
    #[error("{subject} has digest {actual}, not {expected}; refusing it")]
    DigestMismatch {
        /// The object: `registry: blob sha256:...`, or a file.
        subject: String,
        /// The digest asked for.
        expected: envlayer_layers::Digest,
        /// The digest of the bytes.
        actual: envlayer_layers::Digest,
    },
    /// An answer's body is not the JSON it should be.
    #[error("{registry}: {what}: the answer is not valid JSON of its kind")]
    BadJson {
        /// The registry.
        registry: String,
        /// The operation.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An upload session was opened without a `Location` to send to.
    #[error("{registry}: {what}: the registry answered 202 without a Location")]
    NoLocation {
        /// The registry.
        registry: String,
        /// The operation.
        what: String,
    },
    /// A `Location` or `Link` that is not a URL.
    #[error("{registry}: {what}: {header} {value:?} is not a URL")]
    BadUrlHeader {
        /// The registry.
        registry: String,
        /// The operation.
        what: String,
        /// `Location` or `Link`.
        header: &'static str,
        /// The header's value, escaped for printing.
        value: String,
        /// The cause.
        #[source]
        source: url::ParseError,
    },
    /// A redirect, upload location or next page that would leave the registry's scheme or origin.
    #[error("{registry}: {what}: refusing to follow the registry to {to} ({why})")]
    Refused {
        /// The registry.
        registry: String,
        /// The operation.
        what: String,
        /// Where the answer pointed, escaped.
        to: String,
        /// Why: `HTTPS to plain HTTP`, `another host`.
        why: &'static str,
    },
    /// An image index without an image for the platform.
    #[error("{reference}: the index has no {platform} image")]
    NoPlatform {
        /// The image.
        reference: String,
        /// `os/architecture`.
        platform: String,
    },
    /// A manifest without a `layers` list.
    #[error("{image}: the manifest has no layers")]
    NoLayers {
        /// The image.
        image: String,
    },
    /// A manifest's layer entry is refused.
    #[error("{image}")]
    Layer {
        /// The image.
        image: String,
        /// What is wrong with the entry.
        #[source]
        source: crate::image::LayerError,
    },
    /// A blob to push is neither on disk nor in a repository it can be copied from.
    #[error("blob {digest} is neither on disk nor in a known repository")]
    BlobNowhere {
        /// The blob.
        digest: envlayer_layers::Digest,
    },
    /// A manifest just pushed cannot be read back.
    #[error("{registry}: {reference} is missing right after the push")]
    Vanished {
        /// The registry.
        registry: String,
        /// `repository:tag`.
        reference: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("{what}: the worker task failed")]
    Task {
        /// What the task did.
        what: String,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Reading credentials failed.
    #[error(transparent)]
    Auth(#[from] crate::registry::auth::AuthError),
}

