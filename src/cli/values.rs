//! Flag values envlayer reads itself: sizes (`1M`), durations (`24h`), OCI tags.

use super::Result;
use envlayer::build::BaseRef;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A size in bytes: a number with an optional `K`, `M` or `G` (powers of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("{s:?}: a size is a number with an optional K, M or G (1M, 512K)")),
    };
    num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)).ok_or_else(|| format!("{s:?}: a size is a number with an optional K, M or G (1M, 512K)"))
}

/// `24h`, `90m`, `30s`, `7d`, `2w`, or `never`: a unit is required (`1` could mean hours or seconds),
/// and zero is refused (`never` is how to say no expiry).
pub fn parse_ttl(s: &str) -> Result<Option<std::time::Duration>> {
    if s == "never" {
        return Ok(None);
    }
    let expected = || format!("--ttl {s:?}: expected a number and a unit (30m, 24h, 7d: s, m, h, d, w), or never");
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| expected())?;
    let per: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        "" if n == 0 => return Err(format!("--ttl {s:?}: for no expiry say --ttl never").into()),
        "" => return Err(format!("--ttl {s:?} has no unit: say {s}h, {s}d or {s}m").into()),
        _ => return Err(expected().into()),
    };
    if n == 0 {
        return Err(format!("--ttl {s:?} would expire the image as it is built: use --ttl never for no expiry").into());
    }
    let secs = n.checked_mul(per).filter(|&x| x <= 100 * 365 * 86400).ok_or_else(|| format!("--ttl {s:?} is over 100 years: use --ttl never"))?;
    Ok(Some(std::time::Duration::from_secs(secs)))
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` (the distribution spec's rule).
pub fn check_tag(flag: &str, tag: &str) -> Result<()> {
    let ok = tag.len() <= 128
        && tag.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{flag} {:?} is not an OCI tag: 1-128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`", envlayer::net::escape(tag)).into())
    }
}

pub fn key_values(items: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("--{flag} {kv:?}: expected KEY=VALUE"))?;
            envlayer::spec::check_user_key(k).map_err(|e| format!("--{flag} {e}"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `DIR`, `DIR:TAG`, `oci:DIR[:TAG]` are layouts; `docker://REF` and anything else that parses as a
/// reference with a registry host is a registry image.
pub fn parse_base(s: &str) -> Result<BaseRef> {
    let layout = |p: &str| -> BaseRef {
        let as_dir = PathBuf::from(p);
        match p.rsplit_once(':') {
            Some((dir, tag)) if !as_dir.exists() && !tag.contains('/') => BaseRef::Layout { layout: dir.into(), tag: Some(tag.into()) },
            _ => BaseRef::Layout { layout: as_dir, tag: None },
        }
    };
    if s == "scratch" {
        if PathBuf::from("scratch").join("index.json").is_file() {
            return Err("--base scratch means no base, but ./scratch is an OCI layout here: say ./scratch or oci:scratch for the layout".into());
        }
        return Ok(BaseRef::Scratch);
    }
    if let Some(p) = s.strip_prefix("oci:") {
        return Ok(layout(p));
    }
    if s.starts_with("docker://") {
        return Ok(BaseRef::Registry(s.parse()?));
    }
    let dir_part = s.rsplit_once(':').map_or(s, |(d, _)| d);
    if PathBuf::from(s).exists() || PathBuf::from(dir_part).join("index.json").is_file() {
        return Ok(layout(s));
    }
    let first = s.split('/').next().unwrap_or("");
    if s.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        return Ok(BaseRef::Registry(s.parse()?));
    }
    Err(format!("--base {s:?} is neither an OCI layout on disk nor a registry image (registry.example.com/repo:tag)").into())
}

pub fn parse_verify(s: &str) -> std::result::Result<envlayer::regcache::Verify, String> {
    match s {
        "all" => Ok(envlayer::regcache::Verify::All),
        n => match n.parse::<usize>() {
            Ok(0) => Ok(envlayer::regcache::Verify::None),
            Ok(n) => Ok(envlayer::regcache::Verify::Sample(n)),
            Err(_) => Err(format!("{n}: give `all` (--verify-cache) or a number of hits to verify (--verify-cache=5)")),
        },
    }
}

/// The registry cache for a build that pushes to `push` (a repository), if any, from `--cache-repo`
/// (`cache_repo`) and `--verify-cache` (`verify`): `--cache-repo`, else the push repository;
/// `--cache-repo none` turns it off. Hits are downloaded when the image goes to a layout or an archive
/// (`output`), or to another registry than the cache's.
pub fn registry_cache(
    cache_repo: Option<&str>,
    verify: Option<envlayer::regcache::Verify>,
    push: Option<&envlayer::registry::Reference>,
    output: bool,
) -> Result<Option<envlayer::regcache::CacheOptions>> {
    let repo = match cache_repo {
        Some("none") => return Ok(None),
        Some(r) => {
            let repo: envlayer::registry::Reference = r.parse()?;
            if repo.tag.is_some() || repo.digest.is_some() {
                return Err(format!("--cache-repo {r}: name a repository, without a tag (entries are tagged by their keys)").into());
            }
            repo
        }
        None => match push {
            Some(p) => envlayer::registry::Reference { tag: None, digest: None, ..p.clone() },
            None => return Ok(None),
        },
    };
    let download = output || push.is_none_or(|p| p.registry != repo.registry);
    Ok(Some(envlayer::regcache::CacheOptions { repo, verify: verify.unwrap_or_default(), download }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_take_binary_units_and_refuse_the_rest() {
        assert_eq!(super::parse_size("1M"), Ok(1 << 20));
        assert_eq!(super::parse_size("512K"), Ok(512 << 10));
        assert_eq!(super::parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(super::parse_size("700"), Ok(700));
        assert!(super::parse_size("1X").unwrap_err().contains("K, M or G"));
        assert!(super::parse_size("M").is_err());
        assert!(super::parse_size("1IB").is_err() && super::parse_size("1MBB").is_err());
        assert!(super::parse_size("99999999999999G").is_err());
    }

    #[test]
    fn ttls_need_a_unit_and_tags_follow_the_oci_rule() {
        assert_eq!(super::parse_ttl("24h").unwrap(), Some(std::time::Duration::from_secs(86400)));
        assert_eq!(super::parse_ttl("90m").unwrap(), Some(std::time::Duration::from_secs(5400)));
        assert_eq!(super::parse_ttl("never").unwrap(), None);
        assert!(super::parse_ttl("1").unwrap_err().to_string().contains("no unit"));
        assert!(super::parse_ttl("0").unwrap_err().to_string().contains("--ttl never"));
        assert!(super::parse_ttl("0h").unwrap_err().to_string().contains("never"));
        assert!(super::parse_ttl("5y").is_err() && super::parse_ttl("h").is_err() && super::parse_ttl("").is_err());
        assert!(super::parse_ttl("99999999999w").is_err());
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d"] {
            assert!(super::check_tag("--tag", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a b", &"x".repeat(129)] {
            assert!(super::check_tag("--tag", bad).is_err(), "{bad}");
        }
    }
}
