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
}

/// Reads a package's link information, from `<cache>/inspect/<hash>.json` or from the package itself
/// (fetched and extracted into the store).
pub async fn inspect(store: &PackageStore, cache_dir: &std::path::Path, record: &RepoDataRecord) -> Result<LinkInfo, FetchError> {
    let hash = package_hash(record).ok_or_else(|| FetchError::NoHash(record.identifier.to_file_name()))?;
    let cached = cache_dir.join("inspect").join(format!("{hash}.json"));
    if let Some(info) = std::fs::read(&cached).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
        return Ok(info);
    }
    let fetched = store.fetch(record).await?;
    let io = |path: PathBuf| move |source| FetchError::Io { path, source };
    let paths = rattler_conda_types::package::PathsJson::from_package_directory_with_deprecated_fallback(&fetched.extracted)
        .map_err(io(fetched.extracted.clone()))?;
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
    let mut messages = Vec::new();
    let dir = fetched.extracted.join("info").join("prelink_messages");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if let Ok(text) = std::fs::read_to_string(&f) {
                messages.push(text.trim_end().to_string());
            }
        }
    }
    let info = LinkInfo { scripts, messages };
    if let Some(dir) = cached.parent() {
        let _ = std::fs::create_dir_all(dir).and_then(|()| {
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            serde_json::to_writer(&mut tmp, &info)?;
            tmp.persist(&cached).map(|_| ()).map_err(|e| e.error)
        });
    }
    Ok(info)
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
