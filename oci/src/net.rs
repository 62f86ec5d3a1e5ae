//! What every network read of envlayer shares: timeouts (connect, and idle: no byte for that long), size
//! caps on what is read into memory or onto disk, redirects that never downgrade HTTPS, loopback decided
//! from addresses, and server strings made safe to print.

use futures::StreamExt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// The largest manifest, index or image config envlayer reads (containerd's limit is 4 MiB too).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest token-server answer.
pub const MAX_TOKEN_BYTES: u64 = 1 << 20;
/// How much of an error answer is read (the rest is dropped).
pub const MAX_ERROR_BYTES: u64 = 64 << 10;
/// The largest page of a tag list.
pub const MAX_TAG_PAGE_BYTES: u64 = 4 << 20;
/// The largest repodata file (transferred bytes) read from a channel: conda-forge's biggest
/// `repodata.json` is ~300 MB, its `.zst` ~40 MB.
pub const MAX_REPODATA_BYTES: u64 = 1 << 30;

/// Network timeouts. The idle timeout bounds a stall anywhere: waiting for an answer, reading a body,
/// or a server that stops reading an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a connection may take.
    pub connect: Duration,
    /// How long a transfer may go without progress.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(15), idle: Duration::from_secs(60) }
    }
}

impl Timeouts {
    /// Both timeouts set to `secs` seconds (the connect timeout capped at 15 s).
    pub fn from_secs(secs: u64) -> Self {
        let idle = Duration::from_secs(secs.max(1));
        Self { connect: idle.min(Duration::from_secs(15)), idle }
    }
}

/// Redirects: at most 5, never from `https` to `http`. (reqwest already drops `Authorization` on a
/// redirect to another host, port or scheme.)
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() != "https" && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            let to = attempt.url().to_string();
            attempt.error(format!("refused a redirect from https to {}", escape(&to)))
        } else if attempt.previous().len() > 5 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// A reqwest client with envlayer's timeouts and redirect policy (`idle` applies to every read).
pub fn client_builder(timeouts: Timeouts) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("envlayer/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.idle)
        .redirect(redirect_policy())
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It is larger than allowed.
    #[error("the answer is larger than {cap} bytes")]
    TooLarge {
        /// The cap.
        cap: u64,
    },
    /// The transfer failed or stalled.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

/// Reads a whole body into memory, refusing it as soon as it passes `cap` bytes.
pub async fn read_capped(resp: reqwest::Response, cap: u64) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(ReadError::TooLarge { cap });
    }
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if out.len() as u64 + chunk.len() as u64 > cap {
            return Err(ReadError::TooLarge { cap });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The start of an error answer, for messages: at most [`MAX_ERROR_BYTES`] read, 300 characters shown,
/// control characters escaped.
pub async fn error_excerpt(resp: reqwest::Response) -> String {
    let bytes = match read_capped(resp, MAX_ERROR_BYTES).await {
        Ok(b) => b,
        Err(_) => return String::new(),
    };
    let text = String::from_utf8_lossy(&bytes);
    let b = text.trim();
    if b.is_empty() {
        String::new()
    } else {
        format!(": {}", escape(&b.chars().take(300).collect::<String>()))
    }
}

/// `s` with control characters (terminal escapes, newlines, NULs) escaped, for showing strings that
/// came from a server or a file someone else wrote.
pub fn escape(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

/// The host part of `host[:port]` (brackets of an IPv6 literal removed).
pub fn host_only(host_port: &str) -> &str {
    if let Some(rest) = host_port.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
}

/// Whether `host` (no port) is loopback by itself: an address in 127.0.0.0/8 or ::1, or `localhost`.
/// A name that merely starts with `127.` is not.
pub fn is_loopback_literal(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The addresses `host_port` resolves to, when every one is loopback (so plain HTTP stays on this
/// machine); `None` otherwise. The caller pins its connections to these addresses, so the decision
/// cannot be changed by a second lookup.
pub async fn resolve_loopback(host_port: &str, default_port: u16) -> Option<Vec<SocketAddr>> {
    let host = host_only(host_port);
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let port = host_port.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(default_port);
    let addrs: Vec<SocketAddr> = tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host((host, port)))
        .await
        .ok()?
        .ok()?
        .collect();
    (!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())).then_some(addrs)
}

/// Whether two URLs have the same scheme, host and port.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// Progress of an upload, for spotting a server that stopped reading it: the body stream marks every
/// chunk it hands over, and [`Progress::stalled`] resolves when none was taken for `idle`.
#[derive(Debug, Clone)]
pub struct Progress {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self { start: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }
}

impl Progress {
    /// Records progress now.
    pub fn mark(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Wraps a body stream so each chunk taken counts as progress.
    pub fn watch<S, T, E>(&self, stream: S) -> impl futures::Stream<Item = Result<T, E>> + Send + 'static
    where
        S: futures::Stream<Item = Result<T, E>> + Send + 'static,
    {
        let p = self.clone();
        p.mark();
        stream.inspect(move |_| p.mark())
    }

    /// Resolves once nothing happened for `idle`.
    pub async fn stalled(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = self.start.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep((idle - quiet).max(Duration::from_millis(50))).await;
        }
    }
}

/// Middleware for the repodata gateway's client: cuts every answer at `cap` bytes, so a channel that
/// sends without end fails instead of filling the disk.
#[derive(Debug, Clone, Copy)]
pub struct CapBodies {
    /// The cap.
    pub cap: u64,
}

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for CapBodies {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        use reqwest::ResponseBuilderExt;
        let resp = next.run(req, extensions).await?;
        let url = resp.url().clone();
        if resp.content_length().is_some_and(|n| n > self.cap) {
            return Err(reqwest_middleware::Error::middleware(ReadError::TooLarge { cap: self.cap }));
        }
        let status = resp.status();
        let version = resp.version();
        let headers = resp.headers().clone();
        let cap = self.cap;
        let mut seen = 0u64;
        let body = resp.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            seen += chunk.len() as u64;
            if seen > cap {
                return Err(std::io::Error::other(format!("the answer is larger than {cap} bytes (envlayer's limit); refusing it")));
            }
            Ok(chunk)
        });
        let limited = reqwest::Body::wrap_stream(body);
        let mut builder = http::Response::builder().status(status).version(version).url(url);
        if let Some(h) = builder.headers_mut() {
            *h = headers;
        }
        let rebuilt = builder.body(limited).map_err(reqwest_middleware::Error::middleware)?;
        Ok(reqwest::Response::from(rebuilt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_an_address_not_a_prefix() {
        for yes in ["127.0.0.1", "127.3.4.5", "::1", "localhost"] {
            assert!(is_loopback_literal(yes), "{yes}");
        }
        for no in ["127.evil.example", "127.0.0.1.nip.io", "10.0.0.1", "example.com", "::2"] {
            assert!(!is_loopback_literal(no), "{no}");
        }
        assert_eq!(host_only("[::1]:5000"), "::1");
        assert_eq!(host_only("reg.io:5000"), "reg.io");
    }

    #[test]
    fn escape_neutralizes_terminal_control() {
        assert_eq!(escape("ok\u{1b}[31mred\nx"), "ok\\u{1b}[31mred\\nx");
    }
}
