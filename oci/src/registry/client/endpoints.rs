//! The distribution API's endpoints (blobs, uploads, manifests, tags), on top of the transport in the
//! parent module: every request goes through `send`, which holds the auth, retry and timeout policy.

use super::{origin, scope, Mount, Registry, RegistryError, MANIFEST_ACCEPT};
use crate::net::{self, escape, same_origin, Progress};
use envlayer_layers::Digest;
use reqwest::{header, Method, StatusCode};
use std::path::Path;
use std::sync::atomic::Ordering;
use url::Url;

impl Registry {
    /// A HEAD of a blob of `repository` with `access` (`pull` or `pull,push`): what it was, and the answer.
    async fn head_blob(&self, repository: &str, digest: &Digest, access: &str) -> Result<(String, reqwest::Response), RegistryError> {
        let what = format!("HEAD blob {digest} in {repository}");
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"));
        let resp = self.send(&what, &[scope(repository, access)], |c| Ok(c.head(url.clone()))).await?;
        Ok((what, resp))
    }

    /// Whether `repository` has the blob.
    pub async fn blob_exists(&self, repository: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let (what, resp) = self.head_blob(repository, digest, "pull,push").await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.unexpected_answer(&what, resp).await),
        }
    }

    /// Whether `repository` can be read with pull access only (used for HEADs of a base).
    pub async fn blob_exists_readonly(&self, repository: &str, digest: &Digest) -> Result<bool, RegistryError> {
        Ok(self.head_blob(repository, digest, "pull").await?.1.status().is_success())
    }

    /// The size the registry gives for a blob of `repository` (HEAD, pull access), or none when it has no
    /// such blob.
    pub async fn blob_size(&self, repository: &str, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        let (what, resp) = self.head_blob(repository, digest, "pull").await?;
        match resp.status() {
            s if s.is_success() => match resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()) {
                Some(n) => Ok(Some(n)),
                None => Err(self.unexpected(&what, s, " (no Content-Length)".into())),
            },
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.unexpected_answer(&what, resp).await),
        }
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
            .ok_or_else(|| RegistryError::NoLocation { registry: self.host.clone(), what: what.to_string() })?;
        let url = resp
            .url()
            .join(loc)
            .map_err(|source| RegistryError::BadUrlHeader {
                registry: self.host.clone(),
                what: what.to_string(),
                header: "Location",
                value: escape(loc),
                source,
            })?;
        match url.scheme() {
            "https" => Ok(url),
            "http" if self.base.scheme() == "http" => Ok(url),
            _ => Err(RegistryError::Refused {
                registry: self.host.clone(),
                what: what.to_string(),
                to: escape(loc),
                why: "an HTTPS registry may not send uploads to another scheme",
            }),
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
    pub(super) async fn get_blob(&self, repository: &str, digest: &Digest) -> Result<(String, reqwest::Response), RegistryError> {
        let what = format!("GET blob {digest} from {repository}");
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"));
        let scopes = [scope(repository, "pull")];
        let resp = self.send(&what, &scopes, |c| Ok(c.get(url.clone()))).await?;
        if !resp.status().is_success() {
            return Err(self.unexpected_answer(&what, resp).await);
        }
        Ok((what, resp))
    }

    /// Reads a manifest (or index) and returns its bytes, media type and digest. Answers over
    /// [`net::MAX_MANIFEST_BYTES`] are refused; a manifest asked for by digest must have that digest.
    pub async fn get_manifest(&self, repository: &str, reference: &str) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let what = format!("GET manifest {repository}:{reference}");
        // A reference is a tag or a digest, never a path: both grammars leave no '/' or '..'.
        let expected = if reference.contains(':') {
            Some(reference.parse::<Digest>().map_err(|source| RegistryError::BadDigest { subject: format!("{}: {what}", self.host), source })?)
        } else {
            if !crate::registry::reference::is_tag(reference) {
                return Err(RegistryError::BadReference { registry: self.host.clone(), what, reference: escape(reference) });
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
                return Err(RegistryError::DigestMismatch {
                    subject: format!("{}: manifest {repository}@{expected}", self.host),
                    expected,
                    actual: digest,
                });
            }
        }
        Ok((bytes, media_type, digest))
    }

    /// Reads a small blob (a config, at most [`net::MAX_MANIFEST_BYTES`]) into memory, checking its digest.
    pub async fn get_blob_bytes(&self, repository: &str, digest: &Digest) -> Result<Vec<u8>, RegistryError> {
        let (what, resp) = self.get_blob(repository, digest).await?;
        let bytes = net::read_capped(resp, net::MAX_MANIFEST_BYTES).await.map_err(|e| self.read_error(&what, e))?;
        if &Digest::of(&bytes) != digest {
            return Err(RegistryError::DigestMismatch {
                subject: format!("{}: blob {repository}@{digest}", self.host),
                expected: digest.clone(),
                actual: Digest::of(&bytes),
            });
        }
        Ok(bytes)
    }

    /// Uploads a manifest under `reference` (a tag or its digest) and returns its digest.
    pub async fn put_manifest(&self, repository: &str, reference: &str, bytes: &[u8], media_type: &str) -> Result<Digest, RegistryError> {
        let what = format!("PUT manifest {repository}:{reference}");
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let scopes = [scope(repository, "pull,push")];
        let data = bytes.to_vec();
        // A registry may not see a blob committed a moment ago: distribution 2.x rewrites a repository's
        // blob link in place when two clients push the same blob at once, and storage behind it may be
        // eventually consistent. A manifest refused for an unknown blob is sent again, a few times.
        let mut attempt = 0;
        loop {
            let resp = self
                .send(&what, &scopes, |c| Ok(c.request(Method::PUT, url.clone()).header(header::CONTENT_TYPE, media_type).body(data.clone())))
                .await?;
            if resp.status().is_success() {
                return Ok(Digest::of(bytes));
            }
            let err = self.unexpected_answer(&what, resp).await;
            let blob_unknown = matches!(&err, RegistryError::Status { status: 400, detail, .. } if detail.contains("BLOB_UNKNOWN"));
            if !blob_unknown || attempt == 3 {
                return Err(err);
            }
            tracing::debug!("{}: {what}: a blob is not visible yet; sending the manifest again", self.host);
            tokio::time::sleep(std::time::Duration::from_millis(250 << attempt)).await;
            attempt += 1;
        }
    }
}

impl Registry {
    /// Whether the registry serves the referrers API for `repository` (`GET /v2/<name>/referrers/<digest>`
    /// answers 200 with an image index). A registry without it answers 404.
    pub async fn has_referrers_api(&self, repository: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let what = format!("GET referrers of {repository}@{digest}");
        let url = self.url(&format!("v2/{repository}/referrers/{digest}"));
        let scopes = [scope(repository, "pull")];
        let resp = self.send(&what, &scopes, |c| Ok(c.get(url.clone()).header(header::ACCEPT, "application/vnd.oci.image.index.v1+json"))).await?;
        let index = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("application/vnd.oci.image.index.v1+json"));
        Ok(resp.status() == StatusCode::OK && index)
    }
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
            let body: serde_json::Value = serde_json::from_slice(&body).map_err(|source| RegistryError::BadJson { registry: self.host.clone(), what: what.clone(), source })?;
            for t in body["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()) {
                if crate::registry::reference::is_tag(t) {
                    tags.push(t.to_string());
                } else {
                    tracing::warn!("{}: {what}: skipping invalid tag {:?}", self.host, escape(t));
                }
            }
            match next {
                Some(n) => {
                    let next = self.base.join(&n).map_err(|source| RegistryError::BadUrlHeader {
                        registry: self.host.clone(),
                        what: what.clone(),
                        header: "Link",
                        value: escape(&n),
                        source,
                    })?;
                    if !same_origin(&next, &self.base) {
                        return Err(RegistryError::Refused {
                            registry: self.host.clone(),
                            what,
                            to: escape(&origin(&next)),
                            why: "the next page of tags is on another host",
                        });
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
