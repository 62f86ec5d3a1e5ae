//! The registry as a shared layer cache: which layer each layer-cache key produced, recorded in a
//! repository, so a runner with an empty cache references layers another runner built instead of
//! fetching, installing and compressing them again.
//!
//! **One small artifact per key**, tagged by the key, rather than one map artifact per repository: a
//! runner only ever writes its own tags, so concurrent writers need no read-merge-write and cannot drop
//! each other's entries; two runners writing the same key write the same facts (the key is made of what
//! decides the bytes). A lookup is one manifest GET per key (the entry rides in the manifest as the
//! config descriptor's `data` when small), run many at a time.
//!
//! - `envlayer-cache-<key>`: a layer entry. Its config is a [`LayerEntry`] (the parts' descriptors and
//!   diff_ids, and each member package's facts); its `layers` are the layer blobs themselves, so the
//!   registry keeps them while the entry lives and a push to the repository can mount them.
//! - `envlayer-info-<package hash>`: what a package archive says about linking ([`LinkInfo`]), needed
//!   before any layer key is known.
//!
//! **Trust**: an entry is a hint. It must name the key, parts and members asked for; every layer blob it
//! names must be in the repository with the size it says (HEAD) before anything references it; with
//! `--verify-cache` the layers are built here too and compared, and an entry that disagrees is reported,
//! never used, and written again with what was built.

mod entry;
mod publish;
pub mod prune;

pub use entry::{InfoEntry, LayerEntry, Member, FORMAT};
pub use publish::{publish, publish_build, Published};

use crate::link_scripts::LinkInfo;
use crate::registry::{Reference, Registry, RegistryError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Tag prefix of layer entries.
pub const LAYER_TAG: &str = "envlayer-cache-";
/// Tag prefix of package-info entries.
pub const INFO_TAG: &str = "envlayer-info-";
/// The artifact type (and config media type) of every entry.
pub const ARTIFACT_TYPE: &str = "application/vnd.envlayer.cache.v1+json";

/// Whether `tag` is one of the cache's: `envlayer-cache-` and 64 hex digits, or `envlayer-info-` and a
/// package hash (64 hex digits, or `md5-` and 32). An environment's tags (`<name>-<24 hex>`) never are.
pub fn is_cache_tag(tag: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match (tag.strip_prefix(LAYER_TAG), tag.strip_prefix(INFO_TAG)) {
        (Some(key), _) => hex(key, 64),
        (_, Some(hash)) => hex(hash, 64) || hash.strip_prefix("md5-").is_some_and(|h| hex(h, 32)),
        _ => false,
    }
}

/// Whether manifest bytes are a registry-cache entry (by its artifact and config types): the only
/// manifests the cache ever deletes.
pub fn is_entry(manifest: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(manifest).is_ok_and(|m| m["artifactType"] == ARTIFACT_TYPE && m["config"]["mediaType"] == ARTIFACT_TYPE)
}

/// How many cache hits are re-derived here and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// None: a hit that passes the registry checks is used.
    #[default]
    None,
    /// Every hit.
    All,
    /// This many hits, chosen at random (so a poisoned entry cannot count on being skipped).
    Sample(usize),
}

/// Where the cache is and how it is used.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// The repository holding the entries.
    pub repo: Reference,
    /// Which hits are verified.
    pub verify: Verify,
    /// Download hit layers into the local cache (for a layout or an archive output, or a push to another
    /// registry), instead of referencing them where they are.
    pub download: bool,
}

/// What the registry cache did in a build.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CacheSummary {
    /// `registry/repository` of the cache.
    pub repo: String,
    /// Layer entries found and used.
    pub layer_hits: usize,
    /// Layer keys with no entry.
    pub layer_misses: usize,
    /// Package-info entries found and used.
    pub info_hits: usize,
    /// Hits built here and found equal.
    pub verified: usize,
    /// Entries not used, each with why (unreadable, a blob missing, a digest that verification refuted).
    pub rejected: Vec<String>,
    /// Entries this build will write after its push.
    pub pending: usize,
}

/// A lookup's answer.
#[derive(Debug, Clone)]
pub enum Found<T> {
    /// An entry that passed every check.
    Hit(T),
    /// No entry.
    Miss,
    /// An entry that failed a check (why).
    Rejected(String),
}

/// A build's connection to the registry cache: lookups, and the entries to write after the push.
#[derive(Debug)]
pub struct Session {
    registry: Registry,
    repo: Reference,
    /// The options it was opened with.
    pub options: CacheOptions,
    /// A transport failure turns lookups off for the rest of the build (one warning, not one per key).
    broken: AtomicBool,
    summary: Mutex<CacheSummary>,
    pending_layers: Mutex<BTreeMap<String, LayerEntry>>,
    pending_infos: Mutex<BTreeMap<String, InfoEntry>>,
    warnings: Mutex<Vec<String>>,
}

impl Session {
    /// Connects to the cache's registry; an unreachable cache is a warning (the build goes on without it).
    pub async fn open(options: &CacheOptions, auth: &crate::registry::AuthSources, client: &crate::registry::ClientOptions) -> Result<Session, String> {
        let registry = crate::registry::connect(&options.repo, auth, client)
            .await
            .map_err(|e| format!("registry cache {}: {}; building without it", options.repo, chain(&e)))?;
        let summary = CacheSummary { repo: options.repo.to_string(), ..Default::default() };
        Ok(Session {
            registry,
            repo: options.repo.clone(),
            options: options.clone(),
            broken: AtomicBool::new(false),
            summary: Mutex::new(summary),
            pending_layers: Mutex::default(),
            pending_infos: Mutex::default(),
            warnings: Mutex::default(),
        })
    }

    /// The registry client.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The cache's repository.
    pub fn repo(&self) -> &Reference {
        &self.repo
    }

    /// What the cache did so far.
    pub fn summary(&self) -> CacheSummary {
        let mut s = self.summary.lock().map(|s| s.clone()).unwrap_or_default();
        s.pending = self.pending_layers.lock().map(|p| p.len()).unwrap_or(0) + self.pending_infos.lock().map(|p| p.len()).unwrap_or(0);
        s
    }

    /// Warnings so far (an unreachable cache, rejected entries).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    fn note(&self, f: impl FnOnce(&mut CacheSummary)) {
        if let Ok(mut s) = self.summary.lock() {
            f(&mut s);
        }
    }

    /// Records an entry that could not be used, with a warning naming it and why.
    pub fn reject(&self, tag: &str, why: &str) {
        let line = format!("registry cache {}:{tag}: {why}", self.repo);
        self.note(|s| s.rejected.push(line.clone()));
        if let Ok(mut w) = self.warnings.lock() {
            w.push(line);
        }
    }

    /// Counts a hit that was built here and found equal.
    pub fn verified(&self, parts: usize) {
        self.note(|s| s.verified += parts);
    }

    /// Queues a layer entry to write after the push.
    pub fn add_layer(&self, entry: LayerEntry) {
        if let Ok(mut p) = self.pending_layers.lock() {
            p.insert(entry.key.clone(), entry);
        }
    }

    /// Queues a package-info entry to write after the push.
    pub fn add_info(&self, entry: InfoEntry) {
        if let Ok(mut p) = self.pending_infos.lock() {
            p.insert(entry.key.clone(), entry);
        }
    }

    /// The entries queued, taken (a second publish writes nothing).
    pub fn take_pending(&self) -> (Vec<LayerEntry>, Vec<InfoEntry>) {
        let layers = self.pending_layers.lock().map(|mut p| std::mem::take(&mut *p).into_values().collect()).unwrap_or_default();
        let infos = self.pending_infos.lock().map(|mut p| std::mem::take(&mut *p).into_values().collect()).unwrap_or_default();
        (layers, infos)
    }

    /// Reads the manifest tagged `tag` and its entry bytes; `Ok(None)` when there is none.
    async fn read(&self, tag: &str) -> Result<Option<(serde_json::Value, Vec<u8>)>, String> {
        if self.broken.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let (bytes, _, _) = match self.registry.get_manifest(&self.repo.repository, tag).await {
            Ok(m) => m,
            Err(RegistryError::Status { status: 404, .. }) => return Ok(None),
            Err(e @ (RegistryError::Status { status: 400..=428 | 430..=499, .. } | RegistryError::DigestMismatch { .. } | RegistryError::TooLarge { .. })) => {
                return Err(chain(&e));
            }
            Err(e) => {
                if !self.broken.swap(true, Ordering::Relaxed) {
                    if let Ok(mut w) = self.warnings.lock() {
                        w.push(format!("registry cache {}: {}; no more lookups in this build", self.repo, chain(&e)));
                    }
                }
                return Ok(None);
            }
        };
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
        if manifest["artifactType"] != ARTIFACT_TYPE || manifest["config"]["mediaType"] != ARTIFACT_TYPE {
            return Err("not an envlayer cache entry (its artifact type)".into());
        }
        let digest: crate::Digest = manifest["config"]["digest"].as_str().unwrap_or_default().parse().map_err(|_| "its config digest is not sha256:<64 hex>".to_string())?;
        // The entry inline when small (checked against its digest like any blob), else read as a blob.
        let inline = manifest["config"]["data"].as_str().and_then(crate::registry::auth::base64_decode).map(String::into_bytes);
        let config = match inline.filter(|b| crate::Digest::of(b) == digest) {
            Some(b) => b,
            None => self.registry.get_blob_bytes(&self.repo.repository, &digest).await.map_err(|e| chain(&e))?,
        };
        Ok(Some((manifest, config)))
    }

    /// What the archive with this hash says about linking, if an entry has it. Under `--verify-cache`
    /// (all), nothing: every package's archive is read here.
    pub async fn info(&self, hash: &str) -> Found<LinkInfo> {
        let tag = format!("{INFO_TAG}{hash}");
        if self.options.verify == Verify::All {
            return Found::Miss;
        }
        let found = match self.read(&tag).await {
            Ok(Some((_, config))) => match serde_json::from_slice::<InfoEntry>(&config) {
                Ok(e) if e.format == entry::FORMAT && e.key == hash => Found::Hit(e.info),
                Ok(_) => Found::Rejected("it names another package or format".into()),
                Err(e) => Found::Rejected(format!("unreadable entry: {e}")),
            },
            Ok(None) => Found::Miss,
            Err(why) => Found::Rejected(why),
        };
        match &found {
            Found::Hit(_) => self.note(|s| s.info_hits += 1),
            Found::Rejected(why) => self.reject(&tag, why),
            Found::Miss => {}
        }
        found
    }

    /// The layer entry for `expect`, if one passes every check: it names this key, these members and
    /// this many parts in this compression, and the repository has each blob with the size it says.
    pub async fn layer(&self, expect: &entry::Expect<'_>) -> Found<LayerEntry> {
        let tag = format!("{LAYER_TAG}{}", expect.key);
        let found = match self.read(&tag).await {
            Ok(Some((manifest, config))) => match entry::check_layer(&manifest, &config, expect) {
                Ok(e) => match self.check_blobs(&e).await {
                    Ok(()) => Found::Hit(e),
                    Err(why) => Found::Rejected(why),
                },
                Err(why) => Found::Rejected(why),
            },
            Ok(None) => Found::Miss,
            Err(why) => Found::Rejected(why),
        };
        match &found {
            Found::Hit(_) => self.note(|s| s.layer_hits += 1),
            Found::Miss => self.note(|s| s.layer_misses += 1),
            Found::Rejected(why) => self.reject(&tag, why),
        }
        found
    }

    /// Every blob the entry names is in the repository with its size.
    async fn check_blobs(&self, e: &LayerEntry) -> Result<(), String> {
        for part in &e.layers {
            let l = &part.layer;
            match self.registry.blob_size(&self.repo.repository, &l.digest).await {
                Ok(Some(size)) if size == l.size => {}
                Ok(Some(size)) => return Err(format!("blob {} is {size} bytes in the registry, the entry says {}", l.digest, l.size)),
                Ok(None) => return Err(format!("blob {} is not in the repository", l.digest)),
                Err(err) => return Err(format!("HEAD {}: {}", l.digest, chain(&err))),
            }
        }
        Ok(())
    }
}

pub use entry::{entry_key, Expect};

/// An error and its causes, on one line.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_cache_tags_are_the_caches() {
        let hex64 = "0123456789abcdef".repeat(4);
        assert!(is_cache_tag(&format!("envlayer-cache-{hex64}")));
        assert!(is_cache_tag(&format!("envlayer-info-{hex64}")));
        assert!(is_cache_tag(&format!("envlayer-info-md5-{}", &hex64[..32])));
        // An environment named envlayer-cache gets `<name>-<24 hex>` tags: images, not entries.
        assert!(!is_cache_tag(&format!("envlayer-cache-{}", &hex64[..24])));
        assert!(!is_cache_tag("envlayer-cache-keep"));
        assert!(!is_cache_tag(&format!("envlayer-cache-{}", hex64.to_uppercase())));
        assert!(!is_cache_tag(&format!("envlayer-info-md5-{hex64}")));
    }
}
