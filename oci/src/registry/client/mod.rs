//! A client for the OCI distribution API: auth challenges (Basic, and Bearer tokens whose scope may span
//! several repositories, for cross-repository mounts), bounded retries with backoff, streamed uploads.
//!
//! Written by hand on reqwest rather than with oci-client 0.18 because that crate treats a refused mount
//! (202) as an error, asks tokens for the target repository only (so mounts from another repository are
//! always refused under token auth), reads no docker config, and does not retry.

mod challenge;
mod download;
mod endpoints;
mod error;

pub use error::RegistryError;

use super::auth::{base64_encode, Credential};
use crate::net::{self, escape, same_origin, Progress, Timeouts};

use reqwest::{header, StatusCode};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use url::Url;

/// Media types accepted when reading manifests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host:port`) where plain HTTP is allowed (loopback always is).
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM files) trusted besides the system's.
    pub ca_certs: Vec<PathBuf>,
    /// How many times a request is tried when the network or the registry fails transiently.
    pub max_attempts: u32,
    /// The first retry's delay; each later one doubles it.
    pub backoff: Duration,
    /// Connect and idle timeouts: a request that makes no progress for that long is abandoned (and
    /// retried).
    pub timeouts: Timeouts,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self { insecure: vec![], ca_certs: vec![], max_attempts: 5, backoff: Duration::from_millis(200), timeouts: Timeouts::default() }
    }
}

/// What a client sent, for summaries and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Blobs uploaded (config included).
    pub uploaded_blobs: AtomicUsize,
    /// Bytes uploaded in blobs.
    pub uploaded_bytes: AtomicU64,
    /// Blobs mounted from another repository.
    pub mounted_blobs: AtomicUsize,
    /// Blobs the repository already had.
    pub existing_blobs: AtomicUsize,
    /// Requests retried after a transient failure.
    pub retries: AtomicUsize,
}

/// The result of asking for a cross-repository mount.
#[derive(Debug)]
pub enum Mount {
    /// The blob is now in the repository.
    Mounted,
    /// The registry refused and opened an upload session at this URL instead.
    Refused(Url),
}

/// One registry, with its credential and cached tokens. Credentials go only to the registry's own origin
/// (and, for the token exchange, to the realm it names), never over plain HTTP to a host that was not
/// allowed it (`--insecure-registry`, or loopback by address).
pub struct Registry {
    http: reqwest::Client,
    /// For uploads: no read timeout (a large upload waits long for its answer); stalls are caught by
    /// [`Progress`] instead.
    upload_http: reqwest::Client,
    host: String,
    base: Url,
    credential: Credential,
    tokens: Mutex<HashMap<String, String>>,
    basic: AtomicBool,
    /// Whether the registry has answered a request: until then a refused connection means nothing
    /// listens there (fail at once); afterwards it may be a restart (retried).
    answered: AtomicBool,
    options: ClientOptions,
    /// What was sent.
    pub stats: Stats,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

fn scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

impl Registry {
    /// Connects to `host`: HTTPS, or plain HTTP for loopback and insecure registries when HTTPS fails.
    pub async fn connect(host: &str, credential: Credential, options: ClientOptions) -> Result<Self, RegistryError> {
        let mut certs = Vec::new();
        for path in &options.ca_certs {
            let pem = std::fs::read(path).map_err(|source| RegistryError::Io { path: path.clone(), source })?;
            certs.extend(
                reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|source| RegistryError::CaFile { path: path.clone(), source })?,
            );
        }
        // Loopback is decided from the address: a literal, or a name whose every address is loopback, to
        // which the connections are then pinned (a second lookup cannot move them elsewhere).
        let name = net::host_only(host);
        let pinned = net::resolve_loopback(host, 443).await;
        let loopback = net::is_loopback_literal(name) || pinned.is_some();
        let build = |read_timeout: bool| {
            let mut b = net::client_builder(options.timeouts);
            if !read_timeout {
                b = net::client_builder(options.timeouts).read_timeout(Duration::from_secs(24 * 3600));
            }
            if !certs.is_empty() {
                b = b.tls_certs_merge(certs.clone());
            }
            if let Some(addrs) = &pinned {
                b = b.resolve_to_addrs(name, addrs);
            }
            b.build().map_err(RegistryError::Client)
        };
        let http = build(true)?;
        let upload_http = build(false)?;
        let may_http = loopback || options.insecure.iter().any(|i| i == host);
        let https = Url::parse(&format!("https://{host}/")).map_err(|source| RegistryError::Host { host: escape(host), source })?;
        let mut base = https.clone();
        if may_http {
            // Docker's rule for insecure registries: HTTPS first, plain HTTP when HTTPS cannot connect.
            // Only when the registry really answers over plain HTTP: a TLS registry whose certificate is
            // not trusted must fail with the certificate error, not be spoken to in plain text.
            // A plain-HTTP server may never answer a TLS handshake: the probe waits at most 5 s.
            let probe_timeout = options.timeouts.idle.min(Duration::from_secs(5));
            let probe = http.get(https.join("v2/").expect("static path")).timeout(probe_timeout).send().await;
            if probe.is_err() {
                let plain = Url::parse(&format!("http://{host}/")).expect("valid once https was");
                if let Ok(r) = http.get(plain.join("v2/").expect("static path")).send().await {
                    if r.status().is_success() || r.status() == StatusCode::UNAUTHORIZED {
                        base = plain;
                    }
                }
            }
        }
        Ok(Self {
            http,
            upload_http,
            host: host.to_string(),
            base,
            credential,
            tokens: Mutex::new(HashMap::new()),
            basic: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            options,
            stats: Stats::default(),
        })
    }

    /// Whether plain HTTP to `url`'s host is allowed: loopback by address, or named `--insecure-registry`.
    fn plain_http_allowed(&self, url: &Url) -> bool {
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let host_port = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        net::is_loopback_literal(host)
            || (same_origin(url, &self.base) && self.base.scheme() == "http")
            || self.options.insecure.iter().any(|i| *i == host_port || *i == host)
    }

    /// The registry's `host:port`.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("registry paths are valid URLs")
    }

    /// Adds the registry's credentials to `req`, only when it goes to the registry's own origin.
    fn authorize(&self, req: &mut reqwest::Request, scopes: &str) {
        if !same_origin(req.url(), &self.base) {
            return;
        }
        let value = if let Some(token) = self.tokens.lock().ok().and_then(|t| t.get(scopes).cloned()) {
            format!("Bearer {token}")
        } else if self.basic.load(Ordering::Relaxed) {
            match &self.credential {
                Credential::Basic { username, password } => {
                    format!("Basic {}", base64_encode(format!("{username}:{}", password.expose()).as_bytes()))
                }
                _ => return,
            }
        } else {
            return;
        };
        if let Ok(mut v) = header::HeaderValue::from_str(&value) {
            v.set_sensitive(true);
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
    }

    /// Sends a request built by `make`, answering auth challenges and retrying transient failures
    /// (connection errors, stalls, 429, 5xx) with exponential backoff, up to `max_attempts`.
    async fn send(
        &self,
        what: &str,
        scopes: &[String],
        make: impl Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder, RegistryError>,
    ) -> Result<reqwest::Response, RegistryError> {
        self.send_with(what, scopes, None, make).await
    }

    /// [`Self::send`] for an upload whose body reports to `progress`: the upload client has no read
    /// timeout, so a server that stops reading the body (or never answers) is caught by `progress`.
    async fn send_with(
        &self,
        what: &str,
        scopes: &[String],
        progress: Option<&dyn Fn() -> Progress>,
        make: impl Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder, RegistryError>,
    ) -> Result<reqwest::Response, RegistryError> {
        let key = scopes.join(" ");
        let idle = self.options.timeouts.idle;
        let client = if progress.is_some() { &self.upload_http } else { &self.http };
        let mut attempt = 0;
        let mut challenged = false;
        loop {
            attempt += 1;
            let (client, req) = make(client)?.build_split();
            let mut req = req.map_err(|source| RegistryError::Request { registry: self.host.clone(), what: what.to_string(), source })?;
            let url = req.url().clone();
            if url.scheme() == "http" && self.base.scheme() == "https" {
                return Err(RegistryError::Refused {
                    registry: self.host.clone(),
                    what: what.to_string(),
                    to: escape(url.as_str()),
                    why: "HTTPS to plain HTTP",
                });
            }
            self.authorize(&mut req, &key);
            let sent = match progress {
                Some(p) => {
                    let p = p();
                    tokio::select! {
                        r = client.execute(req) => Some(r),
                        () = p.stalled(idle) => None,
                    }
                }
                None => Some(client.execute(req).await),
            };
            let retry_after = match sent {
                None => {
                    if attempt >= self.options.max_attempts {
                        return Err(RegistryError::Stalled { registry: self.host.clone(), what: what.into(), seconds: idle.as_secs(), attempts: attempt });
                    }
                    None
                }
                Some(Err(e)) => {
                    // Nothing listens there: retrying for seconds would only delay the answer.
                    let refused = chain_has(&e, |s| s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused));
                    if refused && !self.answered.load(Ordering::Relaxed) {
                        let host = e.url().and_then(|u| u.host_str().map(|h| u.port().map_or(h.to_string(), |p| format!("{h}:{p}")))).unwrap_or_else(|| self.host.clone());
                        return Err(RegistryError::ConnectionRefused { registry: escape(&host), what: what.into(), source: e });
                    }
                    // A TLS handshake answered by something that is not TLS: a plain-HTTP registry.
                    if self.base.scheme() == "https" && chain_has(&e, |s| s.to_string().to_lowercase().contains("corrupt message")) {
                        return Err(RegistryError::NotHttps { registry: self.host.clone(), what: what.into() });
                    }
                    let retryable = (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()) && !is_certificate_error(&e) && !e.is_redirect();
                    if attempt >= self.options.max_attempts || !retryable {
                        if e.is_timeout() {
                            return Err(RegistryError::Stalled { registry: self.host.clone(), what: what.into(), seconds: idle.as_secs(), attempts: attempt });
                        }
                        return Err(RegistryError::Transport { registry: self.host.clone(), what: what.into(), attempts: attempt, source: e });
                    }
                    None
                }
                Some(Ok(resp)) => {
                    self.answered.store(true, Ordering::Relaxed);
                    let status = resp.status();
                    // Only the registry's own answers are challenges to answer: a storage host or an
                    // upload location elsewhere that asks for credentials gets none.
                    let own = same_origin(resp.url(), &self.base);
                    if status == StatusCode::UNAUTHORIZED && !challenged && own {
                        challenged = true;
                        attempt -= 1;
                        let challenge = resp
                            .headers()
                            .get(header::WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        self.answer_challenge(what, &challenge, scopes).await?;
                        continue;
                    }
                    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                        let from = if own { String::new() } else { format!(" from {}", escape(&origin(resp.url()))) };
                        let body = net::error_excerpt(resp).await;
                        return Err(RegistryError::Denied {
                            registry: self.host.clone(),
                            what: what.into(),
                            reason: format!("HTTP {}{from}{body}", status.as_u16()),
                        });
                    }
                    let transient = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if !transient || attempt >= self.options.max_attempts {
                        return Ok(resp);
                    }
                    resp.headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(30)))
                }
            };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            let delay = retry_after.unwrap_or(self.options.backoff * 2u32.saturating_pow(attempt - 1));
            tracing::debug!("{what}: retrying in {delay:?} (attempt {attempt})");
            tokio::time::sleep(delay.min(Duration::from_secs(30))).await;
        }
    }

    fn unexpected(&self, what: &str, status: StatusCode, detail: String) -> RegistryError {
        RegistryError::Status { registry: self.host.clone(), what: what.into(), status: status.as_u16(), detail }
    }

    /// An unexpected answer, with the start of its body.
    async fn unexpected_answer(&self, what: &str, resp: reqwest::Response) -> RegistryError {
        let status = resp.status();
        let detail = net::error_excerpt(resp).await;
        self.unexpected(what, status, detail)
    }

    fn read_error(&self, what: &str, e: net::ReadError) -> RegistryError {
        match e {
            net::ReadError::TooLarge { cap } => RegistryError::TooLarge { registry: self.host.clone(), what: what.into(), cap },
            net::ReadError::Transport(source) if source.is_timeout() => {
                RegistryError::Stalled { registry: self.host.clone(), what: what.into(), seconds: self.options.timeouts.idle.as_secs(), attempts: 1 }
            }
            net::ReadError::Transport(source) => RegistryError::Transport { registry: self.host.clone(), what: what.into(), attempts: 1, source },
        }
    }
}

/// `scheme://host[:port]` of a URL, for messages.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Whether any error in `e`'s chain satisfies `test`.
fn chain_has(e: &reqwest::Error, test: impl Fn(&(dyn std::error::Error + 'static)) -> bool) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if test(s) {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether a request failed on the server's certificate: retrying cannot help.
fn is_certificate_error(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if s.to_string().to_lowercase().contains("certificate") {
            return true;
        }
        source = s.source();
    }
    false
}
