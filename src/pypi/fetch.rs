//! Wheels downloaded (or copied from a `--find-links` folder) into the store, checked against the sha256
//! the resolution gave, and filed under it: `<cache>/wheels/<sha256>/<file name>`. Credentials go only
//! to the origin (scheme, host and port) of the index URL or `~/.netrc` entry they were given for.

use super::dist::Dist;
use super::spec::IndexOptions;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use url::Url;

/// The largest wheel downloaded.
pub const MAX_WHEEL_BYTES: u64 = 8 << 30;

/// Why a wheel could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum WheelFetchError {
    /// The download failed.
    #[error("cannot download {url}")]
    Http {
        /// The URL, without credentials.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The index answered with an error status.
    #[error("cannot download {url}: HTTP {status}{hint}")]
    Status {
        /// The URL, without credentials.
        url: String,
        /// The status.
        status: u16,
        /// What to check.
        hint: &'static str,
    },
    /// The bytes are not the ones the resolution (or the lock) names.
    #[error("{url}: the wheel has sha256 {actual}, not {expected} as resolved; refusing it")]
    Hash {
        /// The URL, without credentials.
        url: String,
        /// The sha256 from the resolution or the lock.
        expected: String,
        /// The sha256 of the bytes.
        actual: String,
    },
    /// Larger than allowed.
    #[error("{url}: larger than {cap} bytes; refusing it")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap.
        cap: u64,
    },
    /// An sdist that has not been built into a wheel.
    #[error("{package}: a source distribution that was not built into a wheel")]
    NotBuilt {
        /// The distribution.
        package: String,
    },
    /// A name that is not a wheel file name, or a scheme envlayer does not fetch.
    #[error("{url}: not a wheel envlayer can fetch (http(s) or file URL of a .whl)")]
    Unsupported {
        /// The URL.
        url: String,
    },
    /// A file of the store.
    #[error("cannot write or read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// User name and password per origin.
#[derive(Clone, Default)]
pub struct Credentials {
    entries: Vec<(Url, String, String)>,
    /// Every secret in the forms it may be shown in (decoded, and as written in a URL).
    secrets: Vec<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets: only which origins have some.
        f.debug_list().entries(self.entries.iter().map(|(u, _, _)| u.origin().ascii_serialization())).finish()
    }
}

impl Credentials {
    /// The credentials in the index URLs, then those of `netrc` (the `NETRC` file or `~/.netrc`) for
    /// their hosts.
    pub fn new(index: &IndexOptions, netrc: Option<&Path>) -> Self {
        let mut entries = Vec::new();
        let mut secrets = Vec::new();
        for u in index.urls() {
            if !u.username().is_empty() {
                let user = percent_decode(u.username());
                let pass = percent_decode(u.password().unwrap_or(""));
                // A user name alone is a token (`https://TOKEN@host/`).
                match u.password() {
                    Some(raw) => secrets.extend([raw.to_string(), pass.clone()]),
                    None => secrets.extend([u.username().to_string(), user.clone()]),
                }
                entries.push((super::redact(u), user, pass));
            }
        }
        if let Some(text) = netrc.and_then(|p| std::fs::read_to_string(p).ok()) {
            let machines = parse_netrc(&text);
            for u in index.urls() {
                if let Some((_, login, password)) = machines.iter().find(|(m, _, _)| Some(m.as_str()) == u.host_str()) {
                    secrets.push(password.clone());
                    entries.push((super::redact(u), login.clone(), password.clone()));
                }
            }
        }
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { entries, secrets }
    }

    /// The credentials for `url`'s origin, if any were given for it.
    pub fn for_url(&self, url: &Url) -> Option<(&str, &str)> {
        self.entries.iter().find(|(u, _, _)| crate::net::same_origin(u, url)).map(|(_, user, pass)| (user.as_str(), pass.as_str()))
    }

    /// Every password and token, longest first, to cut from messages.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// `text` with every URL's `user:password@` and every secret replaced by `****`. Secrets shorter
    /// than 3 characters are cut only inside URLs (cutting them everywhere would garble the text).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find("://") {
            out.push_str(&rest[..i + 3]);
            rest = &rest[i + 3..];
            let end = rest.find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'' || c == '>').unwrap_or(rest.len());
            if let Some(at) = rest[..end].rfind('@') {
                out.push_str("****@");
                rest = &rest[at + 1..];
            }
        }
        out.push_str(rest);
        for s in self.secrets.iter().filter(|s| s.len() >= 3) {
            out = out.replace(s.as_str(), "****");
        }
        out
    }
}

/// The first index with credentials that refuses them (401 or 403 to a GET of its URL), redacted.
pub async fn refused_index(index: &IndexOptions, credentials: &Credentials, timeouts: crate::net::Timeouts) -> Option<(String, u16)> {
    let client = crate::net::client_builder(timeouts).build().ok()?;
    for url in index.index_url.iter().chain(&index.extra_index_urls) {
        let Some((user, pass)) = credentials.for_url(url) else { continue };
        let plain = super::redact(url);
        let resp = client.get(plain.clone()).basic_auth(user, Some(pass)).send().await;
        if let Ok(resp) = resp {
            if matches!(resp.status().as_u16(), 401 | 403) {
                return Some((plain.to_string(), resp.status().as_u16()));
            }
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `machine HOST login USER password PASS` entries of a `.netrc` (written by hand: the format is a few
/// tokens, and the crates for it are not among envlayer's dependencies).
fn parse_netrc(text: &str) -> Vec<(String, String, String)> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "machine" && i + 1 < tokens.len() {
            let host = tokens[i + 1].to_string();
            let (mut login, mut password) = (String::new(), String::new());
            i += 2;
            while i + 1 < tokens.len() && !matches!(tokens[i], "machine" | "default") {
                match tokens[i] {
                    "login" => login = tokens[i + 1].to_string(),
                    "password" => password = tokens[i + 1].to_string(),
                    _ => {}
                }
                i += 2;
            }
            out.push((host, login, password));
        } else {
            i += 1;
        }
    }
    out
}

/// The wheel store.
#[derive(Clone)]
pub struct WheelStore {
    root: PathBuf,
    client: reqwest::Client,
    credentials: Credentials,
}

impl WheelStore {
    /// A store under `<cache>/wheels`.
    pub fn new(cache: &Path, timeouts: crate::net::Timeouts, credentials: Credentials) -> Self {
        let client = crate::net::client_builder(timeouts).build().unwrap_or_default();
        Self { root: cache.join("wheels"), client, credentials }
    }

    /// The wheel of `dist` in the store, fetched and checked if it is not there yet (for an sdist: the
    /// wheel built from it, see [`Self::put_built`]); and whether it was downloaded now.
    pub async fn fetch(&self, dist: &Dist) -> Result<(PathBuf, bool), WheelFetchError> {
        if dist.sdist {
            return self.built(dist).map(|w| (w, false)).ok_or_else(|| WheelFetchError::NotBuilt { package: dist.label() });
        }
        self.download(dist).await
    }

    /// The wheel built from `dist`'s sdist, if there is one: `<cache>/built/<sdist sha256>/<wheel>`.
    pub fn built(&self, dist: &Dist) -> Option<PathBuf> {
        let dir = self.root.with_file_name("built").join(&dist.sha256);
        std::fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(super::split_wheel_name)
                    .is_some_and(|(n, v)| super::normalize(n) == dist.name && super::dist::same_version(v, &dist.version))
            })
    }

    /// Files `wheel`, built from `dist`'s sdist, in the store; returns where it is.
    pub fn put_built(&self, dist: &Dist, wheel: &Path) -> Result<PathBuf, WheelFetchError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WheelFetchError::Io { path, source }
        };
        let name = wheel.file_name().ok_or_else(|| WheelFetchError::Unsupported { url: wheel.display().to_string() })?;
        let dir = self.root.with_file_name("built").join(&dist.sha256);
        let scratch = crate::scratch::cache_dir(&self.root).map_err(io(&self.root))?;
        let tmp = tempfile::tempdir_in(&scratch).map_err(io(&scratch))?;
        std::fs::copy(wheel, tmp.path().join(name)).map_err(io(wheel))?;
        std::fs::create_dir_all(dir.parent().unwrap_or(&dir)).map_err(io(&dir))?;
        let staged = tmp.keep();
        if std::fs::rename(&staged, &dir).is_err() {
            // Another build filed one first: theirs is as good.
            let _ = std::fs::remove_dir_all(&staged);
        }
        self.built(dist).ok_or_else(|| WheelFetchError::NotBuilt { package: dist.label() })
    }

    /// The file `dist` names (a wheel or an sdist), downloaded and checked if it is not in the store yet;
    /// and whether it was downloaded now.
    pub async fn download(&self, dist: &Dist) -> Result<(PathBuf, bool), WheelFetchError> {
        let unsupported = || WheelFetchError::Unsupported { url: dist.url.to_string() };
        let file = dist.file_name().ok_or_else(unsupported)?;
        let dir = self.root.join(&dist.sha256);
        let dest = dir.join(&file);
        if dest.is_file() {
            let (d, expected) = (dest.clone(), dist.sha256.clone());
            let ok = tokio::task::spawn_blocking(move || sha256_file(&d).is_ok_and(|h| h == expected)).await.unwrap_or(false);
            if ok {
                return Ok((dest, false));
            }
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WheelFetchError::Io { path, source }
        };
        let scratch = crate::scratch::cache_dir(&self.root).map_err(io(&self.root))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&scratch).map_err(io(&scratch))?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        match dist.url.scheme() {
            "file" => {
                let src = dist.url.to_file_path().map_err(|_| unsupported())?;
                let mut f = crate::files::open_regular(&src).map_err(io(&src))?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = std::io::Read::read(&mut f, &mut buf).map_err(io(&src))?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                    if total > MAX_WHEEL_BYTES {
                        return Err(WheelFetchError::TooLarge { url: dist.url.to_string(), cap: MAX_WHEEL_BYTES });
                    }
                    hasher.update(&buf[..n]);
                    tmp.write_all(&buf[..n]).map_err(io(tmp.path()))?;
                }
            }
            "http" | "https" => {
                let mut req = self.client.get(dist.url.clone());
                if let Some((user, pass)) = self.credentials.for_url(&dist.url) {
                    req = req.basic_auth(user, Some(pass));
                }
                let http = |source| WheelFetchError::Http { url: dist.url.to_string(), source };
                let resp = req.send().await.map_err(http)?;
                let status = resp.status();
                if !status.is_success() {
                    let hint = if matches!(status.as_u16(), 401 | 403) {
                        "; check the index's credentials (in its URL, ~/.netrc, or PIP_INDEX_URL / PIP_EXTRA_INDEX_URL)"
                    } else {
                        ""
                    };
                    return Err(WheelFetchError::Status { url: dist.url.to_string(), status: status.as_u16(), hint });
                }
                if resp.content_length().is_some_and(|n| n > MAX_WHEEL_BYTES) {
                    return Err(WheelFetchError::TooLarge { url: dist.url.to_string(), cap: MAX_WHEEL_BYTES });
                }
                let mut body = resp.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(http)?;
                    total += chunk.len() as u64;
                    if total > MAX_WHEEL_BYTES {
                        return Err(WheelFetchError::TooLarge { url: dist.url.to_string(), cap: MAX_WHEEL_BYTES });
                    }
                    hasher.update(&chunk);
                    tmp.write_all(&chunk).map_err(io(tmp.path()))?;
                }
            }
            _ => return Err(unsupported()),
        }
        let actual = crate::fetch::hex(&hasher.finalize());
        if actual != dist.sha256 {
            return Err(WheelFetchError::Hash { url: dist.url.to_string(), expected: dist.sha256.clone(), actual });
        }
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        tmp.persist(&dest).map_err(|e| WheelFetchError::Io { path: dest.clone(), source: e.error })?;
        Ok((dest, true))
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = crate::files::open_regular(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            return Ok(crate::fetch::hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_to_their_origin_only() {
        let index = IndexOptions {
            index_url: Some(Url::parse("http://127.0.0.1:8080/simple/").unwrap()),
            extra_index_urls: vec![Url::parse("http://al%40ice:p%3Ass@127.0.0.1:9090/simple/").unwrap()],
            find_links: vec![],
        };
        let c = Credentials::new(&index, None);
        assert_eq!(c.for_url(&Url::parse("http://127.0.0.1:9090/packages/x.whl").unwrap()), Some(("al@ice", "p:ss")));
        assert_eq!(c.for_url(&Url::parse("http://127.0.0.1:8080/packages/x.whl").unwrap()), None);
        assert_eq!(c.for_url(&Url::parse("https://127.0.0.1:9090/x.whl").unwrap()), None);
        assert_eq!(c.for_url(&Url::parse("http://127.0.0.2:9090/x.whl").unwrap()), None);
        assert!(!format!("{c:?}").contains("p:ss"));
        let token = IndexOptions { index_url: Some(Url::parse("https://gh%2Btok3n@h/simple/").unwrap()), ..Default::default() };
        let t = Credentials::new(&token, None);
        assert_eq!(t.for_url(&Url::parse("https://h/x.whl").unwrap()), Some(("gh+tok3n", "")));
        let m = t.scrub("GET https://gh%2Btok3n@h/simple/ failed; token gh+tok3n refused");
        assert!(!m.contains("tok3n"), "{m}");
        assert!(c.scrub("http://al%40ice:p%3Ass@127.0.0.1:9090/simple/ said p:ss").matches("****").count() == 2, "{}", c.scrub("http://al%40ice:p%3Ass@127.0.0.1:9090/simple/ said p:ss"));
    }

    #[test]
    fn netrc_entries_are_read_for_index_hosts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("netrc");
        std::fs::write(&p, "machine other login a password b\nmachine mirror.example\n  login bob\n  password hunter2\ndefault login x password y\n").unwrap();
        let index = IndexOptions { index_url: Some(Url::parse("https://mirror.example/simple/").unwrap()), ..Default::default() };
        let c = Credentials::new(&index, Some(&p));
        assert_eq!(c.for_url(&Url::parse("https://mirror.example/files/x.whl").unwrap()), Some(("bob", "hunter2")));
    }
}
