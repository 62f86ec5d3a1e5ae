//! Registry credentials, found where users already keep them: docker's `config.json` (`$DOCKER_CONFIG` or
//! `~/.docker`) with `auths`, identity tokens, `credsStore` and `credHelpers`, and the containers
//! `auth.json` (`$REGISTRY_AUTH_FILE`). Secrets never appear in `Debug` output or errors.
//!
//! Written by hand: oci-client and docker_credential crates in our tree do not read these files.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret string: shown as `***` by `Debug`, and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);
impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for an Authorization header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What to authenticate with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Credential {
    /// No credentials.
    #[default]
    Anonymous,
    /// A user name and password (or personal access token).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// An identity (refresh) token, traded for access tokens with OAuth2.
    IdentityToken(Secret),
}

/// Where credentials are looked for. The CLI fills it from the environment.
#[derive(Debug, Clone, Default)]
pub struct AuthSources {
    /// docker's config directory (holding config.json).
    pub docker_config_dir: Option<PathBuf>,
    /// A containers auth.json.
    pub auth_file: Option<PathBuf>,
}

impl AuthSources {
    /// The usual places: `$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG` or `~/.docker`.
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self {
            docker_config_dir: std::env::var_os("DOCKER_CONFIG").map(PathBuf::from).or_else(|| home.map(|h| h.join(".docker"))),
            auth_file: std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from).or_else(|| {
                std::env::var_os("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("containers/auth.json"))
            }),
        }
    }
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A config file is not valid JSON or has a malformed entry.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the secret).
        reason: String,
    },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper} failed for {registry}: {reason}")]
    Helper {
        /// The helper's name.
        helper: String,
        /// The registry asked for.
        registry: String,
        /// What went wrong (its stderr, which helpers keep free of secrets).
        reason: String,
    },
}

/// The keys a registry may be filed under in `auths`.
fn keys_for(registry: &str) -> Vec<String> {
    let mut keys = vec![registry.to_string(), format!("https://{registry}"), format!("http://{registry}"), format!("https://{registry}/v1/"), format!("https://{registry}/v2/")];
    if registry == super::reference::DOCKER_HUB || registry == "docker.io" || registry == "index.docker.io" {
        keys.extend(["https://index.docker.io/v1/".to_string(), "docker.io".to_string(), "index.docker.io".to_string()]);
    }
    keys
}

/// Finds the credential for `registry`: auth.json first (as podman and skopeo do), then docker's config.
pub fn lookup(registry: &str, sources: &AuthSources) -> Result<Credential, AuthError> {
    if let Some(file) = &sources.auth_file {
        if let Some(c) = from_file(file, registry)? {
            return Ok(c);
        }
    }
    if let Some(dir) = &sources.docker_config_dir {
        if let Some(c) = from_file(&dir.join("config.json"), registry)? {
            return Ok(c);
        }
    }
    Ok(Credential::Anonymous)
}

fn from_file(path: &Path, registry: &str) -> Result<Option<Credential>, AuthError> {
    let Ok(text) = std::fs::read(path) else { return Ok(None) };
    let bad = |reason: String| AuthError::Config { path: path.to_path_buf(), reason };
    let config: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let keys = keys_for(registry);
    if let Some(helpers) = config["credHelpers"].as_object() {
        if let Some(helper) = keys.iter().find_map(|k| helpers.get(k)).and_then(|h| h.as_str()) {
            return run_helper(helper, registry).map(Some);
        }
    }
    if let Some(auths) = config["auths"].as_object() {
        if let Some(entry) = keys.iter().find_map(|k| auths.get(k)) {
            if let Some(token) = entry["identitytoken"].as_str().filter(|t| !t.is_empty()) {
                return Ok(Some(Credential::IdentityToken(Secret::new(token))));
            }
            if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
                let decoded = base64_decode(auth).ok_or_else(|| bad(format!("auths.{registry}.auth is not base64")))?;
                let (user, pass) = decoded
                    .split_once(':')
                    .ok_or_else(|| bad(format!("auths.{registry}.auth is not user:password")))?;
                return Ok(Some(Credential::Basic { username: user.to_string(), password: Secret::new(pass) }));
            }
            if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
                return Ok(Some(Credential::Basic { username: u.to_string(), password: Secret::new(p) }));
            }
        }
    }
    if let Some(store) = config["credsStore"].as_str().filter(|s| !s.is_empty()) {
        return run_helper(store, registry).map(Some);
    }
    Ok(None)
}

fn run_helper(helper: &str, registry: &str) -> Result<Credential, AuthError> {
    use std::io::Write;
    let fail = |reason: String| AuthError::Helper { helper: helper.to_string(), registry: registry.to_string(), reason };
    let mut child = std::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(registry.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let msg = if msg.is_empty() { String::from_utf8_lossy(&out.stdout).trim().to_string() } else { msg };
        // "credentials not found" means: anonymous.
        if msg.to_lowercase().contains("not found") {
            return Ok(Credential::Anonymous);
        }
        return Err(fail(msg));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|_| fail("its output is not JSON".into()))?;
    let user = v["Username"].as_str().unwrap_or_default();
    let secret = v["Secret"].as_str().unwrap_or_default();
    Ok(if user == "<token>" {
        Credential::IdentityToken(Secret::new(secret))
    } else {
        Credential::Basic { username: user.to_string(), password: Secret::new(secret) }
    })
}

/// Standard base64, as docker writes `auth` (hand-written: ten lines do not justify a dependency).
pub fn base64_decode(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.trim().bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for s in ["", "a", "ab", "abc", "user:p@ss:word"] {
            assert_eq!(base64_decode(&base64_encode(s.as_bytes())).unwrap(), s);
        }
    }

    #[test]
    fn reads_docker_and_containers_files() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker");
        std::fs::create_dir_all(&docker).unwrap();
        std::fs::write(
            docker.join("config.json"),
            format!(r#"{{"auths":{{"reg.io":{{"auth":"{}"}},"tok.io":{{"identitytoken":"abc"}}}}}}"#, base64_encode(b"u:p")),
        )
        .unwrap();
        let auth = dir.path().join("auth.json");
        std::fs::write(&auth, format!(r#"{{"auths":{{"reg.io":{{"auth":"{}"}}}}}}"#, base64_encode(b"podman:pw"))).unwrap();
        let both = AuthSources { docker_config_dir: Some(docker.clone()), auth_file: Some(auth) };
        let docker_only = AuthSources { docker_config_dir: Some(docker), auth_file: None };
        assert_eq!(lookup("reg.io", &both).unwrap(), Credential::Basic { username: "podman".into(), password: Secret::new("pw") });
        assert_eq!(lookup("reg.io", &docker_only).unwrap(), Credential::Basic { username: "u".into(), password: Secret::new("p") });
        assert_eq!(lookup("tok.io", &docker_only).unwrap(), Credential::IdentityToken(Secret::new("abc")));
        assert_eq!(lookup("other.io", &docker_only).unwrap(), Credential::Anonymous);
        assert!(format!("{:?}", lookup("reg.io", &docker_only).unwrap()).contains('p'));
        assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
    }
}
