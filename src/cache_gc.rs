//! `envlayer cache info` and `envlayer cache gc`: what the cache holds, and removing what is unused.
//!
//! The cache is made of independent entries, each rebuilt when missing: package archives (`pkgs/<sha256>`)
//! and their extracted trees (`extracted/<sha256>`), wheels, repodata, per-package facts and inspections,
//! layer entries (`layers/<key>.json`) with their blobs (`blobs/sha256/<hex>`), and the locks of builds
//! that wrote no layout. An entry's last use is the newest of its modification and access times (a cache
//! hit on a layer entry touches it; reads update access times on file systems mounted with `relatime`).
//! gc removes only entries in those folders, never follows a link, and never touches `uv/` (uv's own
//! cache: `uv cache prune`) or a live process's scratch folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The folders of the cache, what each holds, and whether gc may remove its entries.
const KINDS: &[(&str, &str, bool)] = &[
    ("pkgs", "package archives, verified", true),
    ("extracted", "extracted packages", true),
    ("layers", "layer entries (cache key -> blob)", true),
    ("blobs", "compressed layers, and base image layers", true),
    ("facts", "what installing each package left", true),
    ("inspect", "link scripts and python distributions of each package", true),
    ("wheels", "pip wheels, verified", true),
    ("repodata", "channel repodata (rattler's cache)", true),
    ("locks", "locks of builds without a layout (kept: remove them yourself)", false),
    ("uv", "uv's cache (prune it with `uv cache prune`)", false),
    ("registries", "which repositories hold which blobs", false),
    ("tmp", "scratch folders of running (or interrupted) builds", false),
];

/// One folder of the cache.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KindInfo {
    /// The folder's name.
    pub kind: String,
    /// What it holds.
    pub holds: String,
    /// How many entries.
    pub entries: usize,
    /// Their bytes on disk (hard links counted once).
    pub bytes: u64,
}

/// What the cache holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheInfo {
    /// The cache folder.
    pub root: PathBuf,
    /// Per folder.
    pub kinds: Vec<KindInfo>,
    /// All of it.
    pub bytes: u64,
}

/// What to remove.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Entries not used for this long.
    pub older_than: Option<Duration>,
    /// Then the least recently used entries, until the cache is at most this size.
    pub max_size: Option<u64>,
    /// Only report.
    pub dry_run: bool,
    /// The clock.
    pub now: SystemTime,
}

/// One removed entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Removed {
    /// Its path under the cache.
    pub path: PathBuf,
    /// Why: `unused`, `size`, `orphan` (a blob no entry refers to), `broken` (an entry whose blob is
    /// gone), `interrupted` (an interrupted build's leftovers).
    pub reason: &'static str,
    /// Its bytes.
    pub bytes: u64,
}

/// What gc did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GcReport {
    /// The cache folder.
    pub root: PathBuf,
    /// Whether anything was removed, or only listed.
    pub dry_run: bool,
    /// What was (or would be) removed.
    pub removed: Vec<Removed>,
    /// Bytes before.
    pub bytes_before: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
}

struct Entry {
    path: PathBuf,
    bytes: u64,
    used: SystemTime,
}

/// A file's last use: the newer of its modification and access times. A folder's access time is left
/// out: listing it (as `cache info` and gc do) would count as a use.
fn last_used(meta: &std::fs::Metadata) -> SystemTime {
    let m = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if meta.is_dir() {
        return m;
    }
    let a = meta.accessed().unwrap_or(SystemTime::UNIX_EPOCH);
    m.max(a)
}

/// The size and last use of a file or tree, without following links; `seen` counts hard links once.
fn measure(path: &Path, seen: &mut BTreeSet<(u64, u64)>) -> (u64, SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return (0, SystemTime::UNIX_EPOCH) };
    let mut used = last_used(&meta);
    let mut bytes = if seen.insert((meta.dev(), meta.ino())) && !meta.is_dir() { meta.blocks() * 512 } else { 0 };
    if meta.is_dir() {
        for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
            let (b, u) = measure(&e.path(), seen);
            bytes += b;
            used = used.max(u);
        }
    }
    (bytes, used)
}

/// Whether `path` is a real folder (not a link to one).
fn real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// The entries of one folder (for `blobs`, of `blobs/sha256`); none when the folder (or `blobs`) is a
/// link: gc never works through one.
fn entries(root: &Path, kind: &str, seen: &mut BTreeSet<(u64, u64)>) -> Vec<Entry> {
    let dir = if kind == "blobs" { root.join("blobs").join("sha256") } else { root.join(kind) };
    if !real_dir(&root.join(kind)) || !real_dir(&dir) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = e.path();
        let (bytes, used) = measure(&path, seen);
        out.push(Entry { path, bytes, used });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Why `root` is not an envlayer cache, if it is not: gc removes nothing anywhere else. A cache has the
/// `CACHEDIR.TAG` every build writes; an OCI layout never passes (it has `blobs/` too).
fn not_a_cache(root: &Path) -> Option<String> {
    let tag = std::fs::read_to_string(root.join("CACHEDIR.TAG")).unwrap_or_default();
    if root.join("oci-layout").exists() || root.join("index.json").exists() {
        return Some("it is an OCI image layout".into());
    }
    if !(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55") && tag.contains("created by envlayer")) {
        return Some("it has no CACHEDIR.TAG written by envlayer (any build with this --cache-dir writes one)".into());
    }
    None
}

/// What the cache at `root` holds.
pub fn info(root: &Path) -> CacheInfo {
    let mut seen = BTreeSet::new();
    let kinds: Vec<KindInfo> = KINDS
        .iter()
        .map(|&(kind, holds, _)| {
            let e = entries(root, kind, &mut seen);
            KindInfo { kind: kind.into(), holds: holds.into(), entries: e.len(), bytes: e.iter().map(|e| e.bytes).sum() }
        })
        .collect();
    let bytes = kinds.iter().map(|k| k.bytes).sum();
    CacheInfo { root: root.to_path_buf(), kinds, bytes }
}

/// The blob a layer entry refers to, if its entry can be read.
fn blob_of(entry: &Path) -> Option<String> {
    let text = std::fs::read(entry).ok().filter(|t| t.len() < (1 << 20))?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let d = v["layer"]["digest"].as_str()?;
    d.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).map(String::from)
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes from the cache at `root`: interrupted builds' leftovers, layer entries whose blob is gone and
/// blobs no entry refers to (unused for a day, or for `older_than`), then entries unused for `older_than`,
/// then the least recently used until the cache fits `max_size`.
pub fn gc(root: &Path, opts: &GcOptions) -> Result<GcReport, String> {
    if let Some(why) = not_a_cache(root) {
        return Err(format!("{} is not an envlayer cache: {why}; nothing removed", root.display()));
    }
    if !opts.dry_run {
        // Entries a running build uses could go: gc waits for a quiet cache.
        let busy = crate::scratch::in_use(&root.join("tmp"), "run-");
        if !busy.is_empty() {
            return Err(format!(
                "{} is in use by {} running envlayer process(es) ({}): run gc when no build uses the cache (--dry-run only lists)",
                root.display(),
                busy.len(),
                busy.iter().map(|b| b.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
        // Scratch folders whose process is gone (their lock is free); live ones are never touched.
        if real_dir(&root.join("tmp")) {
            crate::scratch::sweep(&root.join("tmp"), "run-");
        }
    }
    let before = info(root).bytes;
    let age = |e: &Entry| opts.now.duration_since(e.used).unwrap_or_default();
    let mut removed: Vec<Removed> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut all: Vec<(&'static str, Entry)> = Vec::new();
    for &(kind, _, _) in KINDS.iter().filter(|k| k.2) {
        for e in entries(root, kind, &mut seen) {
            all.push((kind, e));
        }
    }
    let mut gone = vec![false; all.len()];
    let mark = |i: usize, reason: &'static str, all: &[(&'static str, Entry)], removed: &mut Vec<Removed>, gone: &mut Vec<bool>| {
        if !gone[i] {
            gone[i] = true;
            let rel = all[i].1.path.strip_prefix(root).unwrap_or(&all[i].1.path).to_path_buf();
            removed.push(Removed { path: rel, reason, bytes: all[i].1.bytes });
        }
    };
    // Entries unused for --older-than.
    if let Some(limit) = opts.older_than {
        for i in 0..all.len() {
            if age(&all[i].1) > limit {
                mark(i, "unused", &all, &mut removed, &mut gone);
            }
        }
    }
    // Then the least recently used, until the rest fits --max-size.
    if let Some(max) = opts.max_size {
        let mut order: Vec<usize> = (0..all.len()).filter(|&i| !gone[i]).collect();
        order.sort_by_key(|&i| all[i].1.used);
        let mut total: u64 = (0..all.len()).filter(|&i| !gone[i]).map(|i| all[i].1.bytes).sum();
        for i in order {
            if total <= max {
                break;
            }
            total -= all[i].1.bytes;
            mark(i, "size", &all, &mut removed, &mut gone);
        }
    }
    // Consistency: a layer entry needs its blob; a blob nobody refers to is an orphan (a base layer is
    // one too, so only those unused for a day, or for --older-than, go).
    let blob_hex = |i: usize| all[i].1.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let present: BTreeSet<String> = (0..all.len()).filter(|&i| all[i].0 == "blobs" && !gone[i]).map(blob_hex).collect();
    let mut referenced = BTreeSet::new();
    for i in 0..all.len() {
        if all[i].0 == "layers" && !gone[i] {
            match blob_of(&all[i].1.path) {
                Some(h) if present.contains(&h) => {
                    referenced.insert(h);
                }
                _ if all[i].1.path.extension().is_some_and(|x| x == "json") => mark(i, "broken", &all, &mut removed, &mut gone),
                // Not an entry (a torn temporary file): an interrupted build's leftover.
                _ => mark(i, "interrupted", &all, &mut removed, &mut gone),
            }
        }
    }
    let orphan_age = opts.older_than.unwrap_or(Duration::from_secs(86400));
    for i in 0..all.len() {
        if all[i].0 == "blobs" && !gone[i] && !referenced.contains(&blob_hex(i)) && age(&all[i].1) > orphan_age {
            mark(i, "orphan", &all, &mut removed, &mut gone);
        }
    }
    if !opts.dry_run {
        for r in &removed {
            remove(&root.join(&r.path)).map_err(|e| format!("{}: {e}", root.join(&r.path).display()))?;
        }
    }
    removed.sort_by(|a, b| a.path.cmp(&b.path));
    let freed = removed.iter().map(|r| r.bytes).sum();
    Ok(GcReport { root: root.to_path_buf(), dry_run: opts.dry_run, removed, bytes_before: before, bytes_freed: freed })
}
