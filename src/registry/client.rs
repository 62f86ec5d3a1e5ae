//! A client for the OCI distribution API: auth challenges (Basic, and Bearer tokens whose scope may span
//! several repositories, for cross-repository mounts), bounded retries with backoff, streamed uploads.
//!
//! Written by hand on reqwest rather than with oci-client 0.18 because that crate treats a refused mount
//! (202) as an error, asks tokens for the target repository only (so mounts from another repository are
//! always refused under token auth), reads no docker config, and does not retry.

use super::auth::{base64_encode, Credential};
use crate::net::{self, escape, same_origin, Progress, Timeouts};
use envlayer_layers::Digest;
use reqwest::{header, Method, StatusCode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
    Auth(#[from] super::auth::AuthError),
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

/// Parses `Bearer realm="...",service="...",scope="..."` into its scheme and parameters.
fn parse_challenge(value: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, value.to_string());
        rest = next.trim_start_matches(',').trim();
    }
    (scheme.to_ascii_lowercase(), params)
}

impl Registry {
    /// Connects to `host`: HTTPS, or plain HTTP for loopback and insecure registries when HTTPS fails.
    pub async fn connect(host: &str, credential: Credential, options: ClientOptions) -> Result<Self, RegistryError> {
        let mut certs = Vec::new();
        for path in &options.ca_certs {
            let pem = std::fs::read(path).map_err(|source| RegistryError::Io { path: path.clone(), source })?;
            certs.extend(
                reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| RegistryError::Invalid(format!("CA file {}: {e}", path.display())))?,
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
            b.build().map_err(|e| RegistryError::Invalid(format!("HTTP client: {e}")))
        };
        let http = build(true)?;
        let upload_http = build(false)?;
        let may_http = loopback || options.insecure.iter().any(|i| i == host);
        let https = Url::parse(&format!("https://{host}/")).map_err(|e| RegistryError::Invalid(format!("registry {}: {e}", escape(host))))?;
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

    /// Answers a 401 challenge: remembers Basic, or fetches a Bearer token for `scopes`.
    async fn answer_challenge(&self, what: &str, challenge: &str, scopes: &[String]) -> Result<(), RegistryError> {
        let denied = |reason: String| RegistryError::Denied { registry: self.host.clone(), what: what.to_string(), reason };
        let (scheme, params) = parse_challenge(challenge);
        match scheme.as_str() {
            "basic" => {
                if matches!(self.credential, Credential::Anonymous) {
                    return Err(denied("the registry asks for a user name and password, and none is configured".into()));
                }
                self.basic.store(true, Ordering::Relaxed);
                Ok(())
            }
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| denied("token challenge without realm".into()))?;
                let mut url = Url::parse(realm).map_err(|e| denied(format!("token realm {:?}: {e}", escape(realm))))?;
                match url.scheme() {
                    "https" => {}
                    "http" if self.base.scheme() == "https" => {
                        return Err(denied(format!("the registry names a plain-HTTP token realm ({}); refusing to downgrade from HTTPS", escape(realm))))
                    }
                    "http" if !matches!(self.credential, Credential::Anonymous) && !self.plain_http_allowed(&url) => {
                        return Err(denied(format!(
                            "the token realm {} is plain HTTP on another host; credentials are sent over plain HTTP only to loopback or --insecure-registry hosts",
                            escape(realm)
                        )))
                    }
                    "http" => {}
                    _ => return Err(denied(format!("token realm {:?} is not an http(s) URL", escape(realm)))),
                }
                let service = params.get("service").cloned().unwrap_or_default();
                let req = match &self.credential {
                    Credential::IdentityToken(token) => {
                        let mut form: Vec<(&str, String)> = vec![
                            ("grant_type", "refresh_token".into()),
                            ("refresh_token", token.expose().to_string()),
                            ("service", service.clone()),
                            ("client_id", "envlayer".into()),
                        ];
                        form.extend(scopes.iter().map(|s| ("scope", s.clone())));
                        self.http.post(url).form(&form)
                    }
                    cred => {
                        {
                            let mut q = url.query_pairs_mut();
                            if !service.is_empty() {
                                q.append_pair("service", &service);
                            }
                            for s in scopes {
                                q.append_pair("scope", s);
                            }
                        }
                        let req = self.http.get(url);
                        match cred {
                            Credential::Basic { username, password } => req.basic_auth(username, Some(password.expose())),
                            _ => req,
                        }
                    }
                };
                let resp = req.send().await.map_err(|e| RegistryError::Transport {
                    registry: self.host.clone(),
                    what: format!("{what} (token request)"),
                    attempts: 1,
                    source: e,
                })?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(denied(format!("the token server answered HTTP {}", status.as_u16())));
                }
                let body = net::read_capped(resp, net::MAX_TOKEN_BYTES)
                    .await
                    .map_err(|e| denied(format!("the token server's answer: {e}")))?;
                let body: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|_| denied("the token server's answer is not JSON".into()))?;
                let token = body["token"]
                    .as_str()
                    .or_else(|| body["access_token"].as_str())
                    .ok_or_else(|| denied("the token server's answer has no token".into()))?;
                if let Ok(mut tokens) = self.tokens.lock() {
                    tokens.insert(scopes.join(" "), token.to_string());
                }
                Ok(())
            }
            other => Err(denied(format!("unsupported auth scheme {:?}", escape(other)))),
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
            let mut req = req.map_err(|e| RegistryError::Invalid(format!("{}: {what}: {e}", self.host)))?;
            let url = req.url().clone();
            if url.scheme() == "http" && self.base.scheme() == "https" {
                return Err(RegistryError::Invalid(format!("{}: {what}: refusing to follow the registry from HTTPS to {}", self.host, escape(url.as_str()))));
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

    /// Whether `repository` has the blob.
    pub async fn blob_exists(&self, repository: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let what = format!("HEAD blob {digest} in {repository}");
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"));
        let scopes = [scope(repository, "pull,push")];
        let resp = self.send(&what, &scopes, |c| Ok(c.head(url.clone()))).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.unexpected_answer(&what, resp).await),
        }
    }

    /// Whether `repository` can be read with pull access only (used for HEADs of a base).
    pub async fn blob_exists_readonly(&self, repository: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let what = format!("HEAD blob {digest} in {repository}");
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"));
        let scopes = [scope(repository, "pull")];
        let resp = self.send(&what, &scopes, |c| Ok(c.head(url.clone()))).await?;
        Ok(resp.status().is_success())
    }

    /// Asks the registry to mount `digest` from `from` into `repository`.
    pub async fn mount_blob(&self, repository: &str, digest: &Digest, from: &str) -> Result<Mount, RegistryError> {
        let what = format!("mount {digest} from {from} into {repository}");
        let mut url = self.url(&format!("v2/{repository}/blobs/uploads/"));
        url.query_pairs_mut().append_pair("mount", &digest.to_string()).append_pair("from", from);
        let scopes = [scope(repository, "pull,push"), scope(from, "pull")];
        let resp = self.send(&what, &scopes, |c| Ok(c.post(url.clone()).header(header::CONTENT_LENGTH, 0))).await?;
        match resp.status() {
            StatusCode::CREATED => {
                self.stats.mounted_blobs.fetch_add(1, Ordering::Relaxed);
                Ok(Mount::Mounted)
            }
            StatusCode::ACCEPTED => Ok(Mount::Refused(self.location(&resp, &what)?)),
            _ => Err(self.unexpected_answer(&what, resp).await),
        }
    }

    /// An upload session's `Location`: relative to the registry, or an absolute http(s) URL. One on
    /// another host is used without the registry's credentials (see [`Self::authorize`]); one that would
    /// downgrade an HTTPS registry to plain HTTP is refused.
    fn location(&self, resp: &reqwest::Response, what: &str) -> Result<Url, RegistryError> {
        let loc = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Invalid(format!("{}: {what}: 202 without a Location", self.host)))?;
        let url = resp
            .url()
            .join(loc)
            .map_err(|e| RegistryError::Invalid(format!("{}: {what}: bad Location {:?}: {e}", self.host, escape(loc))))?;
        match url.scheme() {
            "https" => Ok(url),
            "http" if self.base.scheme() == "http" => Ok(url),
            _ => Err(RegistryError::Invalid(format!(
                "{}: {what}: refusing the upload Location {:?} (an HTTPS registry may not send uploads to another scheme)",
                self.host,
                escape(loc)
            ))),
        }
    }

    /// Uploads a blob from a file, streamed (never whole in memory), in an existing upload `session`
    /// or a new one. The whole upload is retried from a new session if it fails transiently. The file is
    /// opened without following links and must be a regular file of `size` bytes; the registry checks the
    /// digest of what it receives.
    pub async fn upload_blob_file(&self, repository: &str, digest: &Digest, path: &Path, session: Option<Url>) -> Result<(), RegistryError> {
        let size = std::fs::symlink_metadata(path).map_err(|source| RegistryError::Io { path: path.to_path_buf(), source })?.len();
        let p = path.to_path_buf();
        self.upload(repository, digest, size, session, move |progress: &Progress| {
            let file = crate::files::open_regular(&p).map_err(|source| RegistryError::Io { path: p.clone(), source })?;
            let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 1 << 20);
            Ok(reqwest::Body::wrap_stream(progress.watch(stream)))
        })
        .await
    }

    /// Uploads a small blob held in memory (a config).
    pub async fn upload_blob_bytes(&self, repository: &str, digest: &Digest, bytes: &[u8]) -> Result<(), RegistryError> {
        let data = bytes.to_vec();
        self.upload(repository, digest, bytes.len() as u64, None, move |progress: &Progress| {
            let chunk = data.clone();
            let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(chunk) });
            Ok(reqwest::Body::wrap_stream(progress.watch(stream)))
        })
        .await
    }

    async fn upload(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        session: Option<Url>,
        body: impl Fn(&Progress) -> Result<reqwest::Body, RegistryError>,
    ) -> Result<(), RegistryError> {
        let what = format!("upload {digest} to {repository}");
        let scopes = [scope(repository, "pull,push")];
        let mut session = session;
        let mut tries = 0;
        loop {
            tries += 1;
            let location = match session.take() {
                Some(url) => url,
                None => {
                    let url = self.url(&format!("v2/{repository}/blobs/uploads/"));
                    let resp = self.send(&what, &scopes, |c| Ok(c.post(url.clone()).header(header::CONTENT_LENGTH, 0))).await?;
                    if resp.status() != StatusCode::ACCEPTED {
                        return Err(self.unexpected_answer(&what, resp).await);
                    }
                    self.location(&resp, &what)?
                }
            };
            let mut put = location.clone();
            put.query_pairs_mut().append_pair("digest", &digest.to_string());
            let progress = std::sync::Mutex::new(Progress::default());
            let current = || progress.lock().map(|p| p.clone()).unwrap_or_default();
            let resp = self
                .send_with(&what, &scopes, Some(&current), |c| {
                    let p = Progress::default();
                    if let Ok(mut slot) = progress.lock() {
                        *slot = p.clone();
                    }
                    Ok(c.put(put.clone())
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(header::CONTENT_LENGTH, size)
                        .body(body(&p)?))
                })
                .await;
            match resp {
                Ok(r) if r.status() == StatusCode::CREATED || r.status().is_success() => {
                    self.stats.uploaded_blobs.fetch_add(1, Ordering::Relaxed);
                    self.stats.uploaded_bytes.fetch_add(size, Ordering::Relaxed);
                    return Ok(());
                }
                // The session may be gone (404) or the upload cut short: start over with a new session.
                Ok(r) if tries < self.options.max_attempts && (r.status() == StatusCode::NOT_FOUND || r.status().is_server_error() || r.status() == StatusCode::BAD_REQUEST) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(self.options.backoff * 2u32.saturating_pow(tries - 1)).await;
                }
                Ok(r) => return Err(self.unexpected_answer(&what, r).await),
                // `send_with` has already tried `max_attempts` times: one budget per upload, not nested.
                Err(e) => return Err(e),
            }
        }
    }

    /// GETs a blob; an answer other than success is an error.
    async fn get_blob(&self, repository: &str, digest: &Digest) -> Result<(String, reqwest::Response), RegistryError> {
        let what = format!("GET blob {digest} from {repository}");
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"));
        let scopes = [scope(repository, "pull")];
        let resp = self.send(&what, &scopes, |c| Ok(c.get(url.clone()))).await?;
        if !resp.status().is_success() {
            return Err(self.unexpected_answer(&what, resp).await);
        }
        Ok((what, resp))
    }

    /// Downloads a blob of `size` bytes to `dest` through a temporary file in `tmp_dir` (on the same file
    /// system), checking its digest; stops as soon as the registry sends more than `size` bytes, and never
    /// leaves a partial file at `dest`.
    pub async fn download_blob(&self, repository: &str, digest: &Digest, size: u64, dest: &Path, tmp_dir: &Path) -> Result<(), RegistryError> {
        use futures::StreamExt;
        use std::io::Write;
        let (what, resp) = self.get_blob(repository, digest).await?;
        if resp.content_length().is_some_and(|n| n > size) {
            return Err(RegistryError::TooLarge { registry: self.host.clone(), what, cap: size });
        }
        let io = |source| RegistryError::Io { path: dest.to_path_buf(), source };
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = tempfile::NamedTempFile::new_in(tmp_dir).map_err(io)?;
        let mut w = envlayer_layers::HashingWriter::new(std::io::BufWriter::new(tmp));
        let mut body = resp.bytes_stream();
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.read_error(&what, net::ReadError::Transport(e)))?;
            received += chunk.len() as u64;
            if received > size {
                return Err(RegistryError::TooLarge { registry: self.host.clone(), what, cap: size });
            }
            w.write_all(&chunk).map_err(io)?;
        }
        let (buf, actual, _) = w.finish();
        let tmp = buf.into_inner().map_err(|e| io(e.into_error()))?;
        if &actual != digest {
            return Err(RegistryError::Invalid(format!("{}: blob {digest} from {repository} has digest {actual}", self.host)));
        }
        tmp.persist(dest).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Reads a manifest (or index) and returns its bytes, media type and digest. Answers over
    /// [`net::MAX_MANIFEST_BYTES`] are refused; a manifest asked for by digest must have that digest.
    pub async fn get_manifest(&self, repository: &str, reference: &str) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let what = format!("GET manifest {repository}:{reference}");
        // A reference is a tag or a digest, never a path: both grammars leave no '/' or '..'.
        let expected = if reference.contains(':') {
            Some(reference.parse::<Digest>().map_err(|e| RegistryError::Invalid(format!("{}: {what}: {e}", self.host)))?)
        } else {
            if !super::reference::is_tag(reference) {
                return Err(RegistryError::Invalid(format!("{}: {what}: not a valid tag", self.host)));
            }
            None
        };
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let scopes = [scope(repository, "pull")];
        let resp = self.send(&what, &scopes, |c| Ok(c.get(url.clone()).header(header::ACCEPT, MANIFEST_ACCEPT))).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(self.unexpected(&what, status, " (no such image)".into()));
        }
        if !status.is_success() {
            return Err(self.unexpected_answer(&what, resp).await);
        }
        let media_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let bytes = net::read_capped(resp, net::MAX_MANIFEST_BYTES).await.map_err(|e| self.read_error(&what, e))?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = expected {
            if expected != digest {
                return Err(RegistryError::Invalid(format!("{}: manifest {reference} has digest {digest}", self.host)));
            }
        }
        Ok((bytes, media_type, digest))
    }

    /// Reads a small blob (a config, at most [`net::MAX_MANIFEST_BYTES`]) into memory, checking its digest.
    pub async fn get_blob_bytes(&self, repository: &str, digest: &Digest) -> Result<Vec<u8>, RegistryError> {
        let (what, resp) = self.get_blob(repository, digest).await?;
        let bytes = net::read_capped(resp, net::MAX_MANIFEST_BYTES).await.map_err(|e| self.read_error(&what, e))?;
        if &Digest::of(&bytes) != digest {
            return Err(RegistryError::Invalid(format!("{}: blob {digest} does not match its digest", self.host)));
        }
        Ok(bytes)
    }

    /// Uploads a manifest under `reference` (a tag or its digest) and returns its digest.
    pub async fn put_manifest(&self, repository: &str, reference: &str, bytes: &[u8], media_type: &str) -> Result<Digest, RegistryError> {
        let what = format!("PUT manifest {repository}:{reference}");
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let scopes = [scope(repository, "pull,push")];
        let data = bytes.to_vec();
        let resp = self
            .send(&what, &scopes, |c| Ok(c.request(Method::PUT, url.clone()).header(header::CONTENT_TYPE, media_type).body(data.clone())))
            .await?;
        if !resp.status().is_success() {
            return Err(self.unexpected_answer(&what, resp).await);
        }
        Ok(Digest::of(bytes))
    }
}

/// `scheme://host[:port]` of a URL, for messages.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
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

/// How many pages of a tag list are read at most.
const MAX_TAG_PAGES: usize = 1000;

impl Registry {
    /// Every tag of `repository` (following `Link` pagination on this registry only, stopping at a page
    /// seen before); none when the repository does not exist. Tags that are not valid tag names are
    /// left out (they would otherwise end up in URL paths).
    pub async fn list_tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        let what = format!("list tags of {repository}");
        let scopes = [scope(repository, "pull")];
        let mut url = self.url(&format!("v2/{repository}/tags/list"));
        let mut seen = std::collections::BTreeSet::new();
        let mut tags = Vec::new();
        loop {
            if !seen.insert(url.to_string()) || seen.len() > MAX_TAG_PAGES {
                return Ok(tags);
            }
            let u = url.clone();
            let resp = self.send(&what, &scopes, |c| Ok(c.get(u.clone()))).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(tags);
            }
            if !resp.status().is_success() {
                return Err(self.unexpected_answer(&what, resp).await);
            }
            let next = resp
                .headers()
                .get(header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split(';').next())
                .map(|l| l.trim().trim_start_matches('<').trim_end_matches('>').to_string());
            let body = net::read_capped(resp, net::MAX_TAG_PAGE_BYTES).await.map_err(|e| self.read_error(&what, e))?;
            let body: serde_json::Value = serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid(format!("{}: {what}: {e}", self.host)))?;
            for t in body["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()) {
                if super::reference::is_tag(t) {
                    tags.push(t.to_string());
                } else {
                    tracing::warn!("{}: {what}: skipping invalid tag {:?}", self.host, escape(t));
                }
            }
            match next {
                Some(n) => {
                    let next = self.base.join(&n).map_err(|e| RegistryError::Invalid(format!("{}: bad Link {:?}: {e}", self.host, escape(&n))))?;
                    if !same_origin(&next, &self.base) {
                        return Err(RegistryError::Invalid(format!(
                            "{}: {what}: the next page is on another host ({}); refusing to follow it",
                            self.host,
                            escape(&origin(&next))
                        )));
                    }
                    url = next;
                }
                None => return Ok(tags),
            }
        }
    }

    /// Deletes a manifest by digest (which removes every tag on it).
    pub async fn delete_manifest(&self, repository: &str, digest: &Digest) -> Result<(), RegistryError> {
        let what = format!("DELETE manifest {digest} in {repository}");
        let url = self.url(&format!("v2/{repository}/manifests/{digest}"));
        let scopes = [scope(repository, "pull,push,delete")];
        let resp = self.send(&what, &scopes, |c| Ok(c.delete(url.clone()))).await?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(self.unexpected_answer(&what, resp).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(r#"Bearer realm="https://auth.io/token",service="registry.io",scope="repository:a/b:pull,push""#);
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.io/token");
        assert_eq!(p["service"], "registry.io");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!((s.as_str(), p["realm"].as_str()), ("basic", "Registry Realm"));
    }
}
