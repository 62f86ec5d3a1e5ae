//! The registry cache in baking: every layer's entry looked up at once before baking, hits used (or
//! rebuilt and compared, when verified), and the entries the registry lacks queued for after the push.

use super::{BakedLayer, Baker};
use crate::build::BuildError;
use crate::cache::CachedLayer;
use crate::install::PackageFacts;
use crate::regcache::{Expect, Found, LayerEntry, Member, Session, Verify, LAYER_TAG};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The registry cache as the baker sees it.
#[derive(Debug, Default)]
pub(super) struct Remote {
    session: Option<Arc<Session>>,
    /// Download hit layers into the local cache rather than reference them in the registry.
    download: bool,
    /// Each entry key looked up: the entry when it passed the checks, none otherwise.
    found: Mutex<BTreeMap<String, Option<LayerEntry>>>,
    /// Entry keys whose hits are built here and compared.
    verify: BTreeSet<String>,
    /// The facts of the packages in used hits, by package key.
    facts: Mutex<BTreeMap<String, PackageFacts>>,
    /// Layers used from the registry cache.
    used: AtomicUsize,
}

impl Remote {
    /// The facts a used hit gave for the package with this key.
    pub(super) fn facts(&self, key: &str) -> Option<PackageFacts> {
        self.facts.lock().ok()?.get(key).cloned()
    }

    /// How many layers came from the registry cache.
    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn found(&self, key: &str) -> Option<Option<LayerEntry>> {
        self.found.lock().ok()?.get(key).cloned()
    }

    fn set(&self, key: &str, entry: Option<LayerEntry>) {
        if let Ok(mut f) = self.found.lock() {
            f.insert(key.to_string(), entry);
        }
    }
}

impl Baker<'_> {
    /// Uses the registry cache `session`; `download` copies hit layers into the local cache.
    pub fn use_registry_cache(&mut self, session: Arc<Session>, download: bool) {
        self.remote.session = Some(session);
        self.remote.download = download;
    }

    /// Looks every group of `plan` up in the registry cache, `jobs` at a time, and picks the hits to verify.
    pub async fn prefetch(&mut self, plan: &[Vec<usize>], jobs: usize) {
        let Some(session) = self.remote.session.clone() else { return };
        let none = BTreeMap::new();
        let groups: Vec<(String, Vec<String>, usize)> = plan
            .iter()
            .map(|members| {
                let (member_keys, keys) = self.group_keys(members, &none);
                (crate::regcache::entry_key(&keys), member_keys, keys.len())
            })
            .collect();
        // Groups this machine's cache has are served from it: never in the verification sample.
        let local: BTreeSet<String> = plan
            .iter()
            .filter_map(|members| {
                let (_, keys) = self.group_keys(members, &none);
                keys.iter().all(|k| self.cache.has(k)).then(|| crate::regcache::entry_key(&keys))
            })
            .collect();
        let compression = self.params.compression;
        let found: Vec<(String, Option<LayerEntry>)> = futures::stream::iter(groups.iter().map(|(key, members, parts)| {
            let session = &session;
            async move {
                let expect = Expect { key: key.clone(), members, parts: *parts, compression };
                let hit = match session.layer(&expect).await {
                    Found::Hit(e) => Some(e),
                    _ => None,
                };
                (key.clone(), hit)
            }
        }))
        .buffer_unordered(jobs.clamp(1, 16) * 2)
        .collect()
        .await;
        let mut hits: Vec<&String> = found.iter().filter(|(k, e)| e.is_some() && !local.contains(k)).map(|(k, _)| k).collect();
        self.remote.verify = match session.options.verify {
            Verify::None => BTreeSet::new(),
            Verify::All => hits.into_iter().cloned().collect(),
            Verify::Sample(n) => {
                // A random order, unknown to whoever wrote the entries.
                let state = std::collections::hash_map::RandomState::new();
                hits.sort_by_key(|k| state.hash_one(k));
                hits.into_iter().take(n).cloned().collect()
            }
        };
        for (k, e) in found {
            self.remote.set(&k, e);
        }
    }

    /// The registry cache's entry for a group, looked up now if the prefetch did not.
    pub(super) async fn remote_lookup(&self, entry_key: &str, member_keys: &[String], parts: usize) -> Option<LayerEntry> {
        let session = self.remote.session.as_ref()?;
        if let Some(found) = self.remote.found(entry_key) {
            return found;
        }
        let expect = Expect { key: entry_key.to_string(), members: member_keys, parts, compression: self.params.compression };
        let hit = match session.layer(&expect).await {
            Found::Hit(e) => Some(e),
            _ => None,
        };
        self.remote.set(entry_key, hit.clone());
        hit
    }

    pub(super) fn must_verify(&self, key: &str) -> bool {
        self.remote.verify.contains(key) || self.remote.session.as_ref().is_some_and(|s| s.options.verify == Verify::All)
    }

    /// The layers of a hit that is used as it is (not verified), named by our own package names (the
    /// entry's are not shown or annotated); downloaded into the local cache when asked to. `None` when the
    /// group is built here.
    pub(super) async fn remote_use(&self, hit: Option<&LayerEntry>, members: &[usize], names: &[String]) -> Result<Option<Vec<CachedLayer>>, BuildError> {
        let (Some(hit), Some(session)) = (hit, self.remote.session.as_ref()) else { return Ok(None) };
        if self.must_verify(&hit.key) {
            return Ok(None);
        }
        let mut layers: Vec<CachedLayer> = hit.layers.iter().map(|l| CachedLayer { packages: names.to_vec(), ..l.clone() }).collect();
        if self.remote.download {
            let tmp_dir = self.cache.tmp_dir()?;
            for layer in layers.iter_mut() {
                let tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(|source| BuildError::Io { path: tmp_dir.clone(), source })?;
                let l = &layer.layer;
                if let Err(e) = session.registry().download_blob(&session.repo().repository, &l.digest, l.size, tmp.path(), &tmp_dir).await {
                    session.reject(&format!("{LAYER_TAG}{}", hit.key), &format!("downloading {}: {}", l.digest, crate::regcache::chain(&e)));
                    self.remote.set(&hit.key, None);
                    return Ok(None);
                }
                // The blob has its digest; its tar must be what the entry says (diff_id, size, entries),
                // or the image's config would name another layer.
                let (path, compression, limit) = (tmp.path().to_path_buf(), l.compression, l.tar_size);
                let facts = tokio::task::spawn_blocking(move || envlayer_layers::tar_facts(&path, compression, limit))
                    .await
                    .map_err(|source| BuildError::Task { what: format!("reading layer {}", l.digest), source })?;
                let expected = envlayer_layers::TarFacts { diff_id: l.diff_id.clone(), tar_size: l.tar_size, entries: l.entries };
                if facts.as_ref().ok() != Some(&expected) {
                    let got = match facts {
                        Ok(f) => format!("diff_id {}, {} bytes, {} entries", f.diff_id, f.tar_size, f.entries),
                        Err(e) => format!("an unreadable tar ({e})"),
                    };
                    session.reject(
                        &format!("{LAYER_TAG}{}", hit.key),
                        &format!("blob {} holds {got}; the entry says diff_id {}, {} bytes, {} entries", l.digest, l.diff_id, l.tar_size, l.entries),
                    );
                    self.remote.set(&hit.key, None);
                    return Ok(None);
                }
                // The blob only, never a layer entry: a later build looks the key up again (and can
                // verify it), and never takes the registry's word for this machine's own.
                self.cache.put_blob(&l.digest, tmp.path())?;
            }
        }
        if let Ok(mut f) = self.remote.facts.lock() {
            for (&i, m) in members.iter().zip(&hit.members) {
                f.insert(self.keys[i].clone(), m.facts.clone());
            }
        }
        self.remote.used.fetch_add(layers.len(), Ordering::Relaxed);
        Ok(Some(layers))
    }

    /// Compares a verified hit with the layers built here, and its members' facts with what installing
    /// them here taught: equal, it counts as verified; else the entry is reported, and will be written
    /// again with what was built.
    pub(super) async fn remote_compare(&self, hit: &LayerEntry, members: &[usize], packed: &[CachedLayer], shown: &str) -> Result<(), BuildError> {
        let Some(session) = &self.remote.session else { return Ok(()) };
        let theirs: Vec<String> = hit.layers.iter().map(|l| l.layer.digest.to_string()).collect();
        let ours: Vec<String> = packed.iter().map(|l| l.layer.digest.to_string()).collect();
        let mut facts_differ = Vec::new();
        for (&i, m) in members.iter().zip(&hit.members) {
            // Paths compared as sets: `.pyc` files are listed in the order the compilers finished.
            let sorted = |f: &PackageFacts| {
                let mut f = f.clone();
                f.paths.sort();
                f
            };
            if sorted(&self.stage(i).await?.1) != sorted(&m.facts) {
                facts_differ.push(self.name(i));
            }
        }
        if theirs == ours && hit.layers.iter().zip(packed).all(|(a, b)| a.layer.diff_id == b.layer.diff_id) && facts_differ.is_empty() {
            session.verified(packed.len());
        } else {
            let why = if theirs != ours {
                format!("the entry says {} for {shown}, building it here gave {}", theirs.join(", "), ours.join(", "))
            } else {
                format!("the entry's facts (paths, activation) for {} differ from installing them here", facts_differ.join(", "))
            };
            session.reject(&format!("{LAYER_TAG}{}", hit.key), &format!("verification failed: {why}; the entry is not used, and is written again with what was built"));
            self.remote.set(&hit.key, None);
        }
        Ok(())
    }

    /// A layer this machine's cache had: when the registry's entry for it names other blobs, the entry is
    /// reported (a free check: what was built here is trusted over the entry) and written again.
    pub(super) fn remote_check_local(&self, entry_key: &str, local: &[CachedLayer], shown: &str) {
        let (Some(session), Some(Some(hit))) = (&self.remote.session, self.remote.found(entry_key)) else { return };
        let theirs: Vec<String> = hit.layers.iter().map(|l| l.layer.digest.to_string()).collect();
        let ours: Vec<String> = local.iter().map(|l| l.layer.digest.to_string()).collect();
        if theirs != ours {
            session.reject(
                &format!("{LAYER_TAG}{entry_key}"),
                &format!("the entry says {} for {shown}, this machine built {}; the entry is written again with what was built here", theirs.join(", "), ours.join(", ")),
            );
            self.remote.set(entry_key, None);
        }
    }

    /// Queues an entry for every layer the registry cache has no good entry for.
    pub(super) fn queue_entries(&self, layers: &[BakedLayer], facts: &BTreeMap<usize, PackageFacts>) {
        let Some(session) = &self.remote.session else { return };
        let mut entries: BTreeMap<String, LayerEntry> = BTreeMap::new();
        // Wheels built here from a source distribution are not reproducible across machines: not shared.
        let from_sdist = |b: &BakedLayer| b.members.iter().any(|&i| i.checked_sub(self.records.len()).is_some_and(|w| self.wheels[w].sdist));
        for b in layers.iter().filter(|b| !b.remote && !from_sdist(b) && !matches!(self.remote.found(&b.entry_key), Some(Some(_)))) {
            let Some(members) = b.members.iter().zip(&b.member_keys).map(|(&i, key)| {
                let archive = self.records.get(i).and_then(crate::fetch::package_hash);
                // Sorted: `.pyc` paths come in the order the compilers finished, and two runners writing
                // one key must write the same bytes.
                let mut facts = facts.get(&i)?.clone();
                facts.paths.sort();
                Some(Member { key: key.clone(), archive, facts })
            }).collect::<Option<Vec<_>>>() else { continue };
            let e = entries.entry(b.entry_key.clone()).or_insert_with(|| LayerEntry { format: crate::regcache::FORMAT, key: b.entry_key.clone(), layers: Vec::new(), members });
            e.layers.push(b.cached.clone());
        }
        for e in entries.into_values() {
            session.add_layer(e);
        }
    }
}
