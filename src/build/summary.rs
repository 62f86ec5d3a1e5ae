//! What a build reports: its summary for people (`--json`) and tests.

use rattler_conda_types::RepoDataRecord;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The SBOM made with the image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SbomSummary {
    /// SPDX or CycloneDX.
    pub format: crate::sbom::SbomFormat,
    /// The digest of its bytes.
    pub digest: String,
    /// The file beside the layout output, if one was written.
    pub file: Option<PathBuf>,
}

/// What a build did, for people (`--json`) and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildSummary {
    /// The environment's name.
    pub name: String,
    /// Its prefix in the image.
    pub prefix: String,
    /// The platform.
    pub platform: String,
    /// The OCI layout written, if any.
    pub output: Option<PathBuf>,
    /// The image's tag in the layout.
    pub tag: String,
    /// The lock file written beside it.
    pub lock: Option<PathBuf>,
    /// Where the base came from (`registry/repo@digest`), when it came from a registry.
    pub base: Option<String>,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The config's digest.
    pub config_digest: String,
    /// The hash of the build's inputs.
    pub inputs_hash: String,
    /// Whether a solve ran (false when installing from `--lock`).
    pub solved: bool,
    /// The packages, in install order.
    pub packages: Vec<PackageSummary>,
    /// The image's layers, bottom first.
    pub layers: Vec<LayerSummary>,
    /// Groups of packages that share a layer (when `--max-layers` forced grouping).
    pub shared_layers: Vec<Vec<String>>,
    /// How much work was done rather than taken from the cache.
    pub work: Work,
    /// Milliseconds per stage.
    pub timings_ms: BTreeMap<String, u64>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// Packages installed when the container starts (link scripts and their dependents).
    pub runtime_packages: Vec<String>,
    /// Packages with link scripts, and the scripts.
    pub link_scripts: BTreeMap<String, Vec<String>>,
    /// Paths two packages install, and which one the image has.
    pub clobbers: Vec<crate::build::package_layers::Clobber>,
    /// Messages packages show when they are linked (`info/prelink_messages`).
    pub messages: Vec<String>,
    /// How many `.pyc` files were compiled into the layers, or why none were.
    pub pyc: PycSummary,
    /// The SBOM, unless `--sbom none`.
    pub sbom: Option<SbomSummary>,
    /// What the registry cache did, when one was used.
    pub registry_cache: Option<crate::regcache::CacheSummary>,
}

/// Whether `.pyc` files are in the image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PycSummary {
    /// Whether they were compiled.
    pub compiled: bool,
    /// How many (0 on a warm build: they come with cached layers).
    pub files: usize,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// One package of the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackageSummary {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Build string.
    pub build: String,
    /// Archive file name.
    pub file_name: String,
    /// The archive's sha256.
    pub sha256: Option<String>,
    /// The index of its layer in [`BuildSummary::layers`] (the first, for a package split across layers).
    pub layer: usize,
}

impl PackageSummary {
    /// The summary of `r`, in layer `layer`.
    pub fn new(r: &RepoDataRecord, layer: usize) -> Self {
        Self {
            name: r.package_record.name.as_normalized().to_string(),
            version: r.package_record.version.to_string(),
            build: r.package_record.build.to_string(),
            file_name: r.identifier.to_file_name(),
            sha256: r.package_record.sha256.map(|h| crate::fetch::hex(&h)),
            layer,
        }
    }
}

impl PackageSummary {
    /// The summary of a pip wheel (its build is `pypi`), in layer `layer`.
    pub fn wheel(w: &crate::pypi::Dist, layer: usize) -> Self {
        Self {
            name: w.name.clone(),
            version: w.version.clone(),
            build: "pypi".to_string(),
            file_name: w.file_name().unwrap_or_default(),
            sha256: Some(w.sha256.clone()),
            layer,
        }
    }
}

/// One layer of the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerSummary {
    /// Blob digest.
    pub digest: String,
    /// Uncompressed digest.
    pub diff_id: Option<String>,
    /// Compressed size.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// What it holds: `base`, `environment`, or package names.
    pub packages: Vec<String>,
    /// Whether it came from the cache.
    pub cached: bool,
    /// Whether it came from the registry cache.
    pub remote: bool,
}

/// Work counters: a warm rebuild has zeros everywhere but `cached_layers`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Work {
    /// Archives downloaded.
    pub downloaded: usize,
    /// Packages installed into a stage.
    pub installed: usize,
    /// Layers packed and compressed.
    pub compressed: usize,
    /// Layers taken from the cache.
    pub cached_layers: usize,
    /// Layers taken from the registry cache (referenced where they are, or downloaded).
    pub remote_layers: usize,
}

