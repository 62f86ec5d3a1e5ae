//! Answering a registry's 401: Basic (remembered for later requests), or a Bearer token fetched from the
//! realm the registry names, for the scopes of the request. Only the registry's own answers get here.

use super::{Registry, RegistryError};
use crate::net::{self, escape};
use crate::registry::auth::Credential;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use url::Url;

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
    /// Answers a 401 challenge: remembers Basic, or fetches a Bearer token for `scopes`.
    pub(super) async fn answer_challenge(&self, what: &str, challenge: &str, scopes: &[String]) -> Result<(), RegistryError> {
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
