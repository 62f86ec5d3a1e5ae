//! Link scripts: which packages have pre-link, post-link or pre-unlink scripts (or pre-link messages),
//! and which packages therefore cannot be baked: those and everything that depends on them.

use crate::fetch::{package_hash, FetchError, PackageStore};
use rattler_conda_types::RepoDataRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// What to do with packages that have link scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkScriptPolicy {
    /// Install them (and their dependents) when the container starts, running their scripts there.
    #[default]
    Runtime,
    /// Refuse to build, naming them.
    Fail,
    /// Bake them anyway and warn that their scripts did not run.
    Ignore,
}

/// What a package archive says about linking.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LinkInfo {
    /// `bin/.NAME-post-link.sh` and the like.
    pub scripts: Vec<String>,
    /// `info/prelink_messages/*` texts, shown when the package is linked.
    pub messages: Vec<String>,
    /// The Python distributions it installs (`site-packages/NAME-VERSION.dist-info` or `.egg-info`), as
    /// (normalized name, version): they satisfy pip requirements for those distributions.
    pub python_dists: Vec<(String, String)>,
}

/// The distributions a package's paths install: a `NAME-VERSION.dist-info` or `.egg-info` directly in
/// the environment's `site-packages` (`lib/pythonX.Y/site-packages`, or `site-packages` of a `noarch:
/// python` package), never one vendored deeper. Names and versions are data from the archive: only plain
/// ones count (they go into uv's constraints file).
pub fn python_dists<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    let mut out = BTreeSet::new();
    for p in paths {
        let parts: Vec<&str> = p.split('/').collect();
        let entry = match parts.as_slice() {
            ["site-packages", d, ..] => d,
            ["lib", py, "site-packages", d, ..] if py.starts_with("python") => d,
            _ => continue,
        };
        let stem = entry.strip_suffix(".dist-info").or_else(|| entry.strip_suffix(".egg-info"));
        if let Some((name, rest)) = stem.and_then(|s| s.split_once('-')) {
            // `.egg-info` names may end in `-py3.11`.
            let version = rest.split("-py").next().unwrap_or(rest);
            if crate::pypi::plain_name_part(name) && crate::pypi::plain_name_part(version) {
                out.insert((crate::pypi::normalize(name), version.to_string()));
            }
        }
    }
    out.into_iter().collect()
}

// `2-`: entries written before `python_dists` existed are not read (they would claim none).
fn cached_path(cache_dir: &std::path::Path, hash: &str) -> PathBuf {
    cache_dir.join("inspect").join(format!("2-{hash}.json"))
}

/// A package's link information if this machine's cache has it.
pub fn cached(cache_dir: &std::path::Path, record: &RepoDataRecord) -> Option<LinkInfo> {
    let path = cached_path(cache_dir, &package_hash(record)?);
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Reads a package's link information, from `<cache>/inspect/<hash>.json` or from the package itself
/// (fetched and extracted into the store).
pub async fn inspect(store: &PackageStore, cache_dir: &std::path::Path, record: &RepoDataRecord) -> Result<LinkInfo, FetchError> {
    let hash = package_hash(record).ok_or_else(|| FetchError::NoHash(record.identifier.to_file_name()))?;
    let cached = cached_path(cache_dir, &hash);
    if let Some(info) = std::fs::read(&cached).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
        return Ok(info);
    }
    // Only the info section is read (for .conda, a small separate part of the archive): extraction
    // happens later, overlapped with packing, and only for packages that are baked.
    let (archive, _) = store.fetch_archive(record).await?;
    let file = record.identifier.to_file_name();
    let a = archive.clone();
    let (paths_json, messages) = tokio::task::spawn_blocking(move || read_info(&a))
        .await
        .map_err(|e| FetchError::Io { path: archive.clone(), source: std::io::Error::other(e) })?
        .map_err(|source| FetchError::Io { path: archive.clone(), source })?;
    let paths = match paths_json {
        Some(text) => {
            use rattler_conda_types::package::PackageFile;
            rattler_conda_types::package::PathsJson::from_str(&text).map_err(|source| FetchError::Io { path: PathBuf::from(&file), source })?
        }
        // Very old packages have no paths.json: extract and let rattler read its fallback files.
        None => {
            let fetched = store.fetch(record).await?;
            rattler_conda_types::package::PathsJson::from_package_directory_with_deprecated_fallback(&fetched.extracted)
                .map_err(|source| FetchError::Io { path: fetched.extracted.clone(), source })?
        }
    };
    let name = record.package_record.name.as_normalized();
    let mut scripts: Vec<String> = paths
        .paths
        .iter()
        .map(|p| p.relative_path.to_string_lossy().replace('\\', "/"))
        .filter(|p| {
            ["pre-link", "post-link", "pre-unlink"].iter().any(|kind| {
                *p == format!("bin/.{name}-{kind}.sh") || *p == format!("Scripts/.{name}-{kind}.bat")
            })
        })
        .collect();
    scripts.sort();
    let python_dists = python_dists(paths.paths.iter().filter_map(|p| p.relative_path.to_str()));
    let info = LinkInfo { scripts, messages, python_dists };
    if let Some(dir) = cached.parent() {
        let _ = std::fs::create_dir_all(dir).and_then(|()| {
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            serde_json::to_writer(&mut tmp, &info)?;
            tmp.persist(&cached).map(|_| ()).map_err(|e| e.error)
        });
    }
    Ok(info)
}

/// Whether link information read from elsewhere (a registry cache) could be what the archive of the
/// package `name` says: scripts only at the places conda runs them, plain Python distribution names and
/// versions (they go into uv's constraints), messages without control characters but line breaks.
pub fn check_info(name: &str, info: &LinkInfo) -> Result<(), String> {
    let script_ok = |p: &String| {
        ["pre-link", "post-link", "pre-unlink"].iter().any(|kind| *p == format!("bin/.{name}-{kind}.sh") || *p == format!("Scripts/.{name}-{kind}.bat"))
    };
    if !info.scripts.iter().all(script_ok) {
        return Err(format!("it lists link scripts that are not {name}'s"));
    }
    // Names as `python_dists` gives them: normalized (lowercase, runs of `-_.` as one `-`).
    let normalized = |n: &str| !n.is_empty() && n.split('-').all(crate::pypi::plain_name_part) && n == crate::pypi::normalize(n);
    if !info.python_dists.iter().all(|(n, v)| normalized(n) && crate::pypi::plain_name_part(v)) {
        return Err("it names Python distributions that are not plain names and versions".into());
    }
    if info.messages.iter().any(|m| m.chars().any(|c| c.is_control() && c != '\n' && c != '\t')) {
        return Err("its messages hold control characters".into());
    }
    Ok(())
}

/// The packages that must install at runtime: those `flagged` and, transitively, every package that
/// depends on one of them.
pub fn runtime_set(records: &[RepoDataRecord], flagged: &[bool]) -> Vec<bool> {
    let index: BTreeMap<&str, usize> =
        records.iter().enumerate().map(|(i, r)| (r.package_record.name.as_normalized(), i)).collect();
    let mut dependents: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); records.len()];
    for (i, r) in records.iter().enumerate() {
        for dep in &r.package_record.depends {
            let name = dep.split([' ', '=', '<', '>', '!', '~', '[']).next().unwrap_or("");
            if let Some(&d) = index.get(name) {
                dependents[d].insert(i);
            }
        }
    }
    let mut out = flagged.to_vec();
    let mut queue: Vec<usize> = (0..records.len()).filter(|&i| flagged[i]).collect();
    while let Some(i) = queue.pop() {
        for &d in &dependents[i] {
            if !out[d] {
                out[d] = true;
                queue.push(d);
            }
        }
    }
    out
}

/// Reads `info/paths.json` and the `info/prelink_messages/*` texts straight from an archive.
fn read_info(archive: &std::path::Path) -> std::io::Result<(Option<String>, Vec<String>)> {
    use std::io::Read;
    let file = std::fs::File::open(archive)?;
    let name = archive.to_string_lossy();
    let mut paths = None;
    let mut messages: BTreeMap<String, String> = BTreeMap::new();
    let mut visit = |entries: &mut dyn Iterator<Item = std::io::Result<(String, Vec<u8>)>>| -> std::io::Result<()> {
        for e in entries {
            let (path, data) = e?;
            if path == "info/paths.json" {
                paths = Some(String::from_utf8_lossy(&data).into_owned());
            } else if let Some(m) = path.strip_prefix("info/prelink_messages/") {
                messages.insert(m.to_string(), String::from_utf8_lossy(&data).trim_end().to_string());
            }
        }
        Ok(())
    };
    let wanted = |p: &str| p == "info/paths.json" || p.starts_with("info/prelink_messages/");
    macro_rules! walk {
        ($archive:expr) => {{
            let mut archive = $archive;
            let mut items = archive.entries()?.filter_map(|e| {
                let mut e = match e {
                    Ok(e) => e,
                    Err(err) => return Some(Err(err)),
                };
                let path = e.path().ok()?.to_string_lossy().into_owned();
                if !wanted(&path) || !e.header().entry_type().is_file() {
                    return None;
                }
                let mut data = Vec::new();
                Some(e.read_to_end(&mut data).map(|_| (path, data)))
            });
            visit(&mut items)?;
        }};
    }
    if name.ends_with(".conda") {
        walk!(rattler_package_streaming::seek::stream_conda_info(file).map_err(std::io::Error::other)?);
    } else {
        walk!(rattler_package_streaming::read::stream_tar_bz2(file));
    }
    Ok((paths, messages.into_values().collect()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn python_distributions_are_read_from_site_packages_paths() {
        let paths = [
            "lib/python3.11/site-packages/requests-2.34.2.dist-info/METADATA",
            "lib/python3.11/site-packages/requests/__init__.py",
            "site-packages/Flask_Cors-4.0.1.dist-info/RECORD",
            "lib/python3.11/site-packages/six-1.16.0-py3.11.egg-info/PKG-INFO",
            "share/doc/x-1.0.dist-info/README",
            "lib/python3.11/site-packages/pip/_vendor/site-packages/vendored-1.0.dist-info/METADATA",
            "lib/python3.11/site-packages/evil-1.0\n--extra-index-url http:x.dist-info/METADATA",
        ];
        assert_eq!(
            super::python_dists(paths.into_iter()),
            vec![("flask-cors".into(), "4.0.1".into()), ("requests".into(), "2.34.2".into()), ("six".into(), "1.16.0".into())]
        );
    }
}
