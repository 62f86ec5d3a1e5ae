//! Image references: `registry.example.com[:port]/team/envs[:tag][@sha256:...]`.

use envlayer_layers::Digest;
use std::fmt;
use std::str::FromStr;

/// Docker Hub's registry host, used for references without one.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// The repository path, e.g. `team/envs`.
    pub repository: String,
    /// The tag, if given.
    pub tag: Option<String>,
    /// The digest, if given.
    pub digest: Option<Digest>,
}

/// A string that is not an image reference.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    input: String,
    reason: &'static str,
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ReferenceError { input: s.to_string(), reason };
        let s2 = s.strip_prefix("docker://").unwrap_or(s);
        let (rest, digest) = match s2.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|_| err("the digest is not sha256:<64 hex>"))?)),
            None => (s2, None),
        };
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            if !is_tag(t) {
                return Err(err("tags are up to 128 letters, digits, '_', '.', '-'"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => (first.to_string(), path.to_string()),
            _ if name.contains('/') => (DOCKER_HUB.to_string(), name.to_string()),
            _ => (DOCKER_HUB.to_string(), format!("library/{name}")),
        };
        let host_ok = !registry.is_empty()
            && registry.len() <= 255
            && registry.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            && !registry.starts_with(['.', '-', ':']);
        if !host_ok {
            return Err(err("the registry must be a host name or address, with an optional :port"));
        }
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                    && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            });
        if !repo_ok {
            return Err(err("repository names are lowercase letters, digits and separators"));
        }
        Ok(Self { registry, repository, tag, digest })
    }
}

impl Reference {
    /// What to put after `/manifests/`: the digest if known, else the tag, else `latest`.
    pub fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }
    /// `registry/repository@digest`: the form pod specs should use.
    pub fn by_digest(&self, digest: &Digest) -> String {
        format!("{}/{}@{digest}", self.registry, self.repository)
    }
}

/// Whether `t` is a valid tag: up to 128 letters, digits, `_`, `.`, `-`, not starting with `.` or `-`
/// (so a tag read from a registry can never be a path).
pub fn is_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !t.starts_with(['.', '-'])
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let r: Reference = "127.0.0.1:5000/team/envs:demo".parse().unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("127.0.0.1:5000", "team/envs", Some("demo")));
        let r: Reference = "python".parse().unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.target()), (DOCKER_HUB, "library/python", "latest".to_string()));
        let d = format!("sha256:{}", "a".repeat(64));
        let r: Reference = format!("docker://reg.io/x@{d}").parse().unwrap();
        assert_eq!(r.target(), d);
        assert_eq!(r.by_digest(&d.parse().unwrap()), format!("reg.io/x@{d}"));
        for bad in ["reg.io/UPPER", "reg.io/x:bad tag", "reg.io/x@sha256:12", "reg.io/", "reg.io/x/../y", "reg.io/x@sha512:ab", "re_g.io:5000/x"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}
