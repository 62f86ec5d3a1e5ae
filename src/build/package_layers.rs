//! Stages 4 and 5 joined for the packages that are baked into layers: each package is installed into its
//! own stage (unless the cache already knows it), clobbered paths are resolved the way conda resolves
//! them (the package later in dependency order wins, whatever the layer grouping), then the planned
//! layers are packed, or taken from the layer cache.
//!
//! Packages are of two kinds, numbered in one sequence: the conda records first (`0..records.len()`),
//! then the pip wheels. Wheels come last in install order, so a wheel that overwrites a conda package's
//! file wins it, as `pip install` on top of a conda environment does.

use crate::build::BuildError;
use crate::fetch::PackageStore;
use crate::install::{install_package, PackageFacts};
use crate::cache::{group_key, CachedLayer, LayerCache, LayerParams};
use crate::reporter::{Reporter, Stage};
use envlayer_layers::{Digest, Source};
use futures::StreamExt;
use rattler_conda_types::RepoDataRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::OnceCell;

/// How a package's files are cut into parts, in the parts' cache keys: a change to
/// [`envlayer_layers::split_entries`] that moves files between parts changes it.
const SPLIT: &str = "split/1";

mod clobbers;
mod remote;

pub use clobbers::Clobber;

/// One packed (or cached) layer and the packages in it.
#[derive(Debug, Clone)]
pub struct BakedLayer {
    /// The layer.
    pub cached: CachedLayer,
    /// Whether it came from the local cache.
    pub from_cache: bool,
    /// Whether it came from the registry cache (referenced there, or downloaded from there).
    pub remote: bool,
    /// The key of its registry-cache entry (shared by the parts of a split package).
    pub entry_key: String,
    /// Its members' keys (with the paths they lose to clobbers).
    pub member_keys: Vec<String>,
    /// Indices of its packages.
    pub members: Vec<usize>,
    /// Which part of its package (from 0) and of how many, when the package spans several layers.
    pub part: Option<(usize, usize)>,
}

/// What baking produced.
#[derive(Debug)]
pub struct Baked {
    /// The layers, in plan order.
    pub layers: Vec<BakedLayer>,
    /// Facts of every baked package, by index.
    pub facts: BTreeMap<usize, PackageFacts>,
    /// Paths installed by more than one package.
    pub clobbers: Vec<Clobber>,
    /// Milliseconds spent installing (`install`) and packing (`pack`).
    pub timings_ms: BTreeMap<String, u64>,
    /// The work done: downloads, installs, layers packed and taken from the cache.
    pub work: crate::build::Work,
}

/// The packages to bake and everything needed to do it.
pub struct Baker<'a> {
    /// All records, in install order.
    pub records: &'a [RepoDataRecord],
    /// Each record's layer cache key.
    pub keys: &'a [String],
    /// Package archives.
    pub store: PackageStore,
    /// Layers and facts.
    pub cache: LayerCache,
    /// Prefix, platform, compression.
    pub params: LayerParams,
    /// Progress.
    pub reporter: &'a dyn Reporter,
    /// Index of the python record, when `.pyc` files are compiled.
    pub pyc_python: Option<usize>,
    /// The pip wheels, numbered after the records.
    pub wheels: &'a [crate::pypi::Dist],
    /// Where wheels are downloaded to.
    pub wheel_store: Option<crate::pypi::fetch::WheelStore>,
    /// How many layers a package alone in its layer spans, when more than one (see [`super::plan::split_plan`]).
    pub split: BTreeMap<usize, usize>,
    downloaded: AtomicUsize,
    installed: AtomicUsize,
    compressed: AtomicUsize,
    cached: AtomicUsize,
    /// Each package as installed, before its `.pyc` files.
    installs: Vec<OnceCell<(PathBuf, PackageFacts)>>,
    /// Each package ready to pack: installed and compiled.
    stages: Vec<OnceCell<(PathBuf, PackageFacts)>>,
    /// The compiling interpreters, once python is installed, when `.pyc` files are compiled.
    pool: OnceCell<Option<std::sync::Arc<crate::pyc::Pool>>>,
    /// How many interpreters compile at once: the build's `jobs`.
    pool_size: AtomicUsize,
    tmp: tempfile::TempDir,
    /// The registry cache, if used, and what it answered.
    remote: remote::Remote,
}

fn dist(r: &RepoDataRecord) -> String {
    format!("{}-{}-{}", r.package_record.name.as_normalized(), r.package_record.version, r.package_record.build)
}

impl<'a> Baker<'a> {
    /// A baker with an empty staging area in the cache's temporary folder.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        records: &'a [RepoDataRecord],
        keys: &'a [String],
        store: PackageStore,
        cache: LayerCache,
        params: LayerParams,
        reporter: &'a dyn Reporter,
        pyc_python: Option<usize>,
        wheels: &'a [crate::pypi::Dist],
        wheel_store: Option<crate::pypi::fetch::WheelStore>,
    ) -> Result<Self, BuildError> {
        let tmp = tempfile::Builder::new()
            .prefix("stages-")
            .tempdir_in(cache.tmp_dir()?)
            .map_err(|source| BuildError::Io { path: PathBuf::from("stages"), source })?;
        Ok(Self {
            records,
            keys,
            store,
            cache,
            params,
            reporter,
            pyc_python,
            wheels,
            wheel_store,
            split: BTreeMap::new(),
            downloaded: AtomicUsize::new(0),
            installed: AtomicUsize::new(0),
            compressed: AtomicUsize::new(0),
            cached: AtomicUsize::new(0),
            installs: (0..records.len() + wheels.len()).map(|_| OnceCell::new()).collect(),
            stages: (0..records.len() + wheels.len()).map(|_| OnceCell::new()).collect(),
            pool: OnceCell::new(),
            pool_size: AtomicUsize::new(crate::build::cpus() as usize),
            tmp,
            remote: remote::Remote::default(),
        })
    }

    /// `name-version-build` of a conda package, `pypi:name-version` of a wheel.
    fn name(&self, i: usize) -> String {
        match self.records.get(i) {
            Some(r) => dist(r),
            None => self.wheels[i - self.records.len()].label(),
        }
    }

    /// The interpreters compiling `.pyc` files, if they are compiled: python's own stage, as soon as it
    /// is installed (compiling python's standard library runs beside the other packages' compiles).
    async fn pool(&self) -> Result<Option<std::sync::Arc<crate::pyc::Pool>>, BuildError> {
        let pool = self
            .pool
            .get_or_try_init(|| async {
                match (self.pyc_python, self.params.target.python.as_ref()) {
                    (Some(py), Some(info)) => {
                        let stage = &Box::pin(self.install(py)).await?.0;
                        let compiler = crate::pyc::Compiler::new(stage, info, &self.params.target.prefix);
                        Ok::<_, BuildError>(Some(std::sync::Arc::new(crate::pyc::Pool::new(compiler, self.pool_size.load(Ordering::Relaxed))?)))
                    }
                    _ => Ok(None),
                }
            })
            .await?;
        Ok(pool.clone())
    }

    /// Installs wheel `w` into the stage of package `i`.
    async fn stage_wheel(&self, i: usize, w: usize) -> Result<(PathBuf, PackageFacts), BuildError> {
        let dist = &self.wheels[w];
        let store = self.wheel_store.as_ref().ok_or(BuildError::NoWheelStore)?;
        let (wheel, downloaded) = store.fetch(dist).await?;
        if downloaded {
            self.downloaded.fetch_add(1, Ordering::Relaxed);
        }
        self.reporter.advance(Stage::Fetch, &dist.label());
        let python = self.params.target.python.as_ref().ok_or_else(|| BuildError::NoPythonForPip { package: dist.label() })?;
        let (major, minor) = python.short_version;
        let scheme = crate::pypi::wheel::Scheme::for_python(&self.params.target.prefix, major, minor);
        let compiler = self.pool().await?;
        let stage = self.tmp.path().join(i.to_string());
        // An sdist's layer installs the wheel built from it.
        let file = wheel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let label = dist.label();
        let st = stage.clone();
        let installed = tokio::task::spawn_blocking(move || {
            let compile = |stage: &std::path::Path, paths: &[String]| match &compiler {
                Some(c) => c.compile_files(stage, paths),
                None => Ok(Vec::new()),
            };
            crate::pypi::wheel::install(&wheel, &file, &st, &scheme, &compile)
        })
        .await
        .map_err(|source| BuildError::Task { what: format!("installing {label}"), source })??;
        let facts = PackageFacts { dist: label, files: installed.paths.len(), paths: installed.paths, ..Default::default() };
        Ok((stage, facts))
    }

    /// Installs package `i` into its stage (once), compiling its `.pyc` files when asked to.
    async fn stage(&self, i: usize) -> Result<&(PathBuf, PackageFacts), BuildError> {
        if let Some(w) = i.checked_sub(self.records.len()) {
            return self.stages[i]
                .get_or_try_init(|| async move {
                    let (stage, facts) = self.stage_wheel(i, w).await?;
                    self.installed.fetch_add(1, Ordering::Relaxed);
                    self.reporter.advance(Stage::Install, &facts.dist);
                    self.cache.put_facts(&self.keys[i], &facts)?;
                    Ok::<_, BuildError>((stage, facts))
                })
                .await;
        }
        self.stages[i]
            .get_or_try_init(|| async move {
                let record = &self.records[i];
                let (stage, mut facts) = self.install(i).await?.clone();
                if let Some(pool) = self.pool().await? {
                    let (st, paths, d) = (stage.clone(), facts.paths.clone(), facts.dist.clone());
                    let added = tokio::task::spawn_blocking(move || pool.compile(&st, &paths, &d))
                        .await
                        .map_err(|source| BuildError::Task { what: format!("compiling the .pyc files of {}", dist(record)), source })??;
                    facts.files += added.len();
                    facts.paths.extend(added);
                }
                self.installed.fetch_add(1, Ordering::Relaxed);
                self.reporter.advance(Stage::Install, &dist(record));
                self.cache.put_facts(&self.keys[i], &facts)?;
                Ok::<_, BuildError>((stage, facts))
            })
            .await
    }

    /// Fetches conda package `i` and installs it into its stage (once), without `.pyc` files.
    async fn install(&self, i: usize) -> Result<&(PathBuf, PackageFacts), BuildError> {
        self.installs[i]
            .get_or_try_init(|| async move {
                let record = &self.records[i];
                let fetched = self.store.fetch(record).await?;
                if fetched.downloaded {
                    self.downloaded.fetch_add(1, Ordering::Relaxed);
                }
                self.reporter.advance(Stage::Fetch, &dist(record));
                let stage = self.tmp.path().join(i.to_string());
                let facts = install_package(&fetched.extracted, record, &self.params.target, &stage).await?;
                Ok::<_, BuildError>((stage, facts))
            })
            .await
    }

    async fn facts(&self, i: usize) -> Result<PackageFacts, BuildError> {
        match self.cache.facts(&self.keys[i]).or_else(|| self.remote.facts(&self.keys[i])) {
            Some(f) => {
                self.reporter.advance(Stage::Fetch, &self.name(i));
                self.reporter.advance(Stage::Install, &self.name(i));
                Ok(f)
            }
            None => Ok(self.stage(i).await?.1.clone()),
        }
    }

    /// Bakes the packages `baked` (indices, install order) into the layers of `plan`.
    ///
    /// Installing and packing overlap: each layer is packed as soon as its own packages are installed,
    /// assuming no clobbers. Once every package's paths are known, only the (rare) layers with a package
    /// that loses a clobbered path are packed again without those paths.
    pub async fn bake(&self, baked: &[usize], plan: &[Vec<usize>], jobs: usize) -> Result<Baked, BuildError> {
        let t0 = std::time::Instant::now();
        self.pool_size.store(jobs.max(1), Ordering::Relaxed);
        let none = BTreeMap::new();
        let mut layers: Vec<Vec<BakedLayer>> = futures::stream::iter(plan.iter().map(|members| {
            let none = &none;
            async move { self.layer(members, none).await }
        }))
        .buffered(jobs.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        let t1 = std::time::Instant::now();

        // What every package installs: known now (from installing it, or from the cache).
        let facts: BTreeMap<usize, PackageFacts> = futures::stream::iter(baked.iter().map(|&i| async move {
            Ok::<_, BuildError>((i, self.facts(i).await?))
        }))
        .buffer_unordered(jobs.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;

        let (exclude, clobbers) = clobbers::find(&facts, |i| self.name(i));
        for (group, members) in layers.iter_mut().zip(plan) {
            if members.iter().any(|i| exclude.contains_key(i)) {
                *group = self.layer(members, &exclude).await?;
            }
        }
        let layers: Vec<BakedLayer> = layers.into_iter().flatten().collect();
        let timings_ms = BTreeMap::from([
            ("install+pack".to_string(), (t1 - t0).as_millis() as u64),
            ("clobbers".to_string(), t1.elapsed().as_millis() as u64),
        ]);
        self.queue_entries(&layers, &facts);
        let work = crate::build::Work {
            downloaded: self.downloaded.load(Ordering::Relaxed),
            installed: self.installed.load(Ordering::Relaxed),
            compressed: self.compressed.load(Ordering::Relaxed),
            cached_layers: self.cached.load(Ordering::Relaxed),
            remote_layers: self.remote.used(),
        };
        Ok(Baked { layers, facts, clobbers, timings_ms, work })
    }

    /// How many layers the group `members` spans.
    fn parts(&self, members: &[usize]) -> usize {
        match members {
            [i] => self.split.get(i).copied().unwrap_or(1),
            _ => 1,
        }
    }

    /// The keys of the group `members`: each member's (with the paths it loses in `exclude`), and each
    /// part's (one, or one per part of a split package).
    fn group_keys(&self, members: &[usize], exclude: &BTreeMap<usize, BTreeSet<String>>) -> (Vec<String>, Vec<String>) {
        let member_keys: Vec<String> = members
            .iter()
            .map(|&i| match exclude.get(&i) {
                Some(ex) => Digest::of(format!("{}:exclude:{}", self.keys[i], ex.iter().cloned().collect::<Vec<_>>().join("\n")).as_bytes()).hex(),
                None => self.keys[i].clone(),
            })
            .collect();
        let key = group_key(&member_keys);
        let n = self.parts(members);
        // Each part is keyed by the package's key, its number and how many there are.
        let keys: Vec<String> = if n == 1 { vec![key] } else { (0..n).map(|k| Digest::of(format!("{key}:{SPLIT}:part:{k}/{n}").as_bytes()).hex()).collect() };
        (member_keys, keys)
    }

    /// The layers of the group `members` (one, or one per part of a split package): from the local cache,
    /// the registry cache, or packed.
    async fn layer(&self, members: &[usize], exclude: &BTreeMap<usize, BTreeSet<String>>) -> Result<Vec<BakedLayer>, BuildError> {
        let (member_keys, keys) = self.group_keys(members, exclude);
        let n = keys.len();
        let entry_key = crate::regcache::entry_key(&keys);
        let names: Vec<String> = members.iter().map(|&i| self.name(i)).collect();
        let baked = |layers: Vec<CachedLayer>, from_cache: bool, remote: bool| -> Vec<BakedLayer> {
            layers
                .into_iter()
                .enumerate()
                .map(|(k, cached)| BakedLayer {
                    cached,
                    from_cache,
                    remote,
                    entry_key: entry_key.clone(),
                    member_keys: member_keys.clone(),
                    members: members.to_vec(),
                    part: (n > 1).then_some((k, n)),
                })
                .collect()
        };
        if let Some(cached) = keys.iter().map(|k| self.cache.get(k)).collect::<Option<Vec<_>>>() {
            self.cached.fetch_add(n, Ordering::Relaxed);
            self.reporter.advance(Stage::Pack, &names.join(", "));
            self.remote_check_local(&entry_key, &cached, &names.join(", "));
            return Ok(baked(cached, true, false));
        }
        let hit = self.remote_lookup(&entry_key, &member_keys, n).await;
        if let Some(layers) = self.remote_use(hit.as_ref(), members, &names).await? {
            self.reporter.advance(Stage::Pack, &names.join(", "));
            return Ok(baked(layers, false, true));
        }
        let dest = self.params.target.prefix.trim_start_matches('/').to_string();
        let mut sources = Vec::new();
        for &i in members {
            let (stage, _) = self.stage(i).await?;
            let mut s = Source::new(stage.clone(), dest.clone());
            s.exclude = exclude.get(&i).cloned().unwrap_or_default();
            sources.push(s);
        }
        let shown = names.join(", ");
        let packed = crate::cache::pack_parts_into_cache(&self.cache, &keys, sources, self.params.mtime, self.params.compression, names).await?;
        self.compressed.fetch_add(n, Ordering::Relaxed);
        self.reporter.advance(Stage::Pack, &shown);
        if let Some(hit) = hit.as_ref().filter(|h| self.must_verify(&h.key)) {
            self.remote_compare(hit, members, &packed, &shown).await?;
        }
        Ok(baked(packed, false, false))
    }
}
