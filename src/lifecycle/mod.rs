//! The environment lifecycle on a registry: images tagged by the environment's identity, fresh for a
//! TTL; `resolve` (use a fresh image, else build and push one), `ls` and `prune`. Time is always passed in
//! (`now`), never read here, so tests can move the clock.

use crate::build::{self, BuildOptions, BuildSummary};
use crate::keys::{ANNOTATION_ENV_NAME, ANNOTATION_EXPIRES, ANNOTATION_INPUTS, ANNOTATION_INSTALL, ANNOTATION_PACKAGE_COUNT};
use crate::registry::{self, Reference, Registry, RegistryError};
use crate::reporter::Reporter;
use std::collections::BTreeSet;
use std::time::Instant;

mod multi;
mod prune;

pub use multi::children;
pub use prune::prune;

/// The tag of an environment's image: `<name>-<first 24 hex digits of its identity>`.
pub fn tag_for(name: &str, identity: &str) -> String {
    format!("{name}-{}", &identity[..24.min(identity.len())])
}

/// Where an environment image stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Fresh, with the environment baked in.
    Ready,
    /// Past its TTL.
    Expired,
    /// Fresh, installing the environment when the container starts.
    RuntimeInstall,
}

/// One environment image in a repository.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EnvImage {
    /// Its tag (the shortest of its tags).
    pub tag: String,
    /// Every tag of the repository that points at this manifest, shortest first.
    pub tags: Vec<String>,
    /// `registry/repo@digest`.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
    /// The environment's name.
    pub name: String,
    /// The environment's identity.
    pub hash: String,
    /// Ready, expired or runtime-install.
    pub status: Status,
    /// When it was built (RFC 3339).
    pub created: Option<String>,
    /// When it expires (RFC 3339); none for images without a TTL.
    pub expires: Option<String>,
    /// Seconds until it expires (negative: expired that long ago).
    pub expires_in_seconds: Option<i64>,
    /// How many packages.
    pub packages: usize,
    /// Bytes of config and layers.
    pub size: u64,
    /// Packages installed when the container starts (link scripts, or the whole environment).
    pub runtime_packages: Vec<String>,
    /// The OCI architectures it runs on (`amd64`, `arm64`): several for an index.
    pub architectures: Vec<String>,
    /// The platforms of a multi-platform image (an index); empty for one platform.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// `prune`: the artifacts about this image (its SBOMs) deleted with it, by digest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<String>,
}

/// Why a lifecycle command failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Building.
    #[error(transparent)]
    Build(#[from] build::BuildError),
    /// A resolved environment's name breaks the platform's naming rule.
    #[error("environment name {name:?}: {reason}")]
    Name {
        /// The name, escaped for printing.
        name: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A resolved reference that is not `registry/repository@sha256:...`.
    #[error("{reference:?} is not a reference by digest")]
    NotPinned {
        /// The reference, escaped for printing.
        reference: String,
    },
    /// The Kubernetes YAML could not be written.
    #[error("cannot write the container entry as YAML")]
    Yaml(#[source] serde_yaml::Error),
    /// `--no-build` and no fresh image.
    #[error("no fresh image of environment {name} in {repo} (tag {tag}) and --no-build was given")]
    Miss {
        /// The environment.
        name: String,
        /// The repository.
        repo: String,
        /// The tag looked for.
        tag: String,
    },
}

impl LifecycleError {
    /// The exit code the command line gives for this error: 3 for a miss under `--no-build` (an
    /// answer scripts test for), 1 for failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Miss { .. } => 3,
            _ => 1,
        }
    }
}

/// Reads the image at `tag`; `None` when it does not exist or is not envlayer's.
pub async fn inspect(registry: &Registry, repo: &Reference, tag: &str, now: jiff::Timestamp) -> Result<Option<EnvImage>, RegistryError> {
    let (bytes, _, digest) = match registry.get_manifest(&repo.repository, tag).await {
        Ok(m) => m,
        Err(RegistryError::Status { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return Ok(None) };
    let a = &manifest["annotations"];
    let (Some(name), Some(hash)) = (a[ANNOTATION_ENV_NAME].as_str(), a[ANNOTATION_INPUTS].as_str()) else {
        return Ok(None);
    };
    // Annotations are the registry's data: an image whose name or identity does not have envlayer's
    // form is not treated as envlayer's.
    if crate::spec::check_name(name).is_err() || hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let expires: Option<jiff::Timestamp> = a[ANNOTATION_EXPIRES].as_str().and_then(|e| e.parse().ok());
    let expired = expires.is_some_and(|e| e <= now);
    let status = match (expired, a[ANNOTATION_INSTALL].as_str()) {
        (true, _) => Status::Expired,
        (false, Some("runtime")) => Status::RuntimeInstall,
        (false, _) => Status::Ready,
    };
    let sizes = |m: &serde_json::Value| m["config"]["size"].as_u64().unwrap_or(0) + m["layers"].as_array().map_or(0, |l| l.iter().filter_map(|d| d["size"].as_u64()).sum::<u64>());
    let mut size = sizes(&manifest);
    // An index: the bytes of its platforms' images.
    for child in multi::children(&manifest) {
        if let Ok((bytes, _, _)) = registry.get_manifest(&repo.repository, &child.to_string()).await {
            size += serde_json::from_slice::<serde_json::Value>(&bytes).map(|m| sizes(&m)).unwrap_or(0);
        }
    }
    // The architectures it runs on: an index's entries, else its config's (registry data: kept only when
    // it is a plain word).
    let word = |a: &str| !a.is_empty() && a.len() <= 32 && a.bytes().all(|b| b.is_ascii_alphanumeric());
    let mut architectures: Vec<String> = manifest["manifests"].as_array().into_iter().flatten().filter_map(|m| m["platform"]["architecture"].as_str()).filter(|a| word(a)).map(String::from).collect();
    if architectures.is_empty() {
        if let Some(d) = manifest["config"]["digest"].as_str().and_then(|d| d.parse::<envlayer_layers::Digest>().ok()) {
            if let Ok(config) = registry.get_blob_bytes(&repo.repository, &d).await {
                let c: serde_json::Value = serde_json::from_slice(&config).unwrap_or_default();
                architectures.extend(c["architecture"].as_str().filter(|a| word(a)).map(String::from));
            }
        }
    }
    architectures.sort();
    architectures.dedup();
    Ok(Some(EnvImage {
        tag: tag.to_string(),
        tags: vec![tag.to_string()],
        reference: repo.by_digest(&digest),
        digest: digest.to_string(),
        name: name.to_string(),
        hash: hash.to_string(),
        status,
        created: a["org.opencontainers.image.created"].as_str().map(String::from),
        expires: expires.map(|e| e.to_string()),
        expires_in_seconds: expires.map(|e| e.as_second() - now.as_second()),
        packages: a[ANNOTATION_PACKAGE_COUNT].as_str().and_then(|n| n.parse().ok()).unwrap_or(0),
        size,
        runtime_packages: a[crate::keys::ANNOTATION_RUNTIME]
            .as_str()
            .map(|s| s.split(',').filter(|p| !p.is_empty()).map(String::from).collect())
            .unwrap_or_default(),
        referrers: Vec::new(),
        architectures,
        platforms: a["io.envlayer.platforms"].as_str().map(|p| p.split(',').filter(|s| !s.is_empty()).map(String::from).collect()).unwrap_or_default(),
    }))
}

/// Whether `tag` is one envlayer gives `img`: its environment tag `<name>-<hash>` or a build tag
/// `<name>-<hash>-<YYYYMMDDhhmmss>`. Any other tag was named by a user.
pub fn is_env_tag(tag: &str, img: &EnvImage) -> bool {
    let env_tag = tag_for(&img.name, &img.hash);
    tag == env_tag || tag.strip_prefix(&env_tag).and_then(|t| t.strip_prefix('-')).is_some_and(|t| t.len() == 14 && t.bytes().all(|b| b.is_ascii_digit()))
}

/// Every envlayer environment image in `repo`, one per manifest with all its tags (named by the
/// shortest), newest first.
pub async fn list(registry: &Registry, repo: &Reference, now: jiff::Timestamp) -> Result<Vec<EnvImage>, RegistryError> {
    let (images, _, _) = scan(registry, repo, now).await?;
    Ok(images)
}

/// The envlayer images of `repo` (one per manifest, newest first), the digests of manifests that are
/// not envlayer's, and every tag seen.
async fn scan(registry: &Registry, repo: &Reference, now: jiff::Timestamp) -> Result<(Vec<EnvImage>, BTreeSet<String>, BTreeSet<String>), RegistryError> {
    // Registry-cache entries are never images (and may be thousands): not read.
    let mut tags: Vec<String> = registry.list_tags(&repo.repository).await?.into_iter().filter(|t| !crate::regcache::is_cache_tag(t)).collect();
    let seen: BTreeSet<String> = tags.iter().cloned().collect();
    tags.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
    let mut out: Vec<EnvImage> = Vec::new();
    let mut foreign = BTreeSet::new();
    for tag in tags {
        match inspect(registry, repo, &tag, now).await? {
            Some(img) => match out.iter_mut().find(|o| o.digest == img.digest) {
                Some(o) => o.tags.push(tag),
                None => out.push(img),
            },
            None => {
                if let Ok((_, _, d)) = registry.get_manifest(&repo.repository, &tag).await {
                    foreign.insert(d.to_string());
                }
            }
        }
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.tag.cmp(&b.tag)));
    Ok((out, foreign, seen))
}

/// The immutable tag of one build: `<tag>-<build time as YYYYMMDDhhmmss>`, so an image stays listed
/// (and prunable) after its environment's tag has moved to a newer build.
pub fn build_tag(tag: &str, created: &str) -> String {
    let stamp: String = created.chars().filter(|c| c.is_ascii_digit()).take(14).collect();
    format!("{tag}-{stamp}")
}

/// What `resolve` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Resolved {
    /// The environment's name (from the environment file, checked against the name rule).
    pub name: String,
    /// `registry/repo@sha256:...`.
    pub reference: String,
    /// Whether a fresh image was found (no solve, no build).
    pub hit: bool,
    /// The image.
    pub image: EnvImage,
    /// The build, on a miss.
    pub build: Option<BuildSummary>,
    /// A multi-platform build, on a miss: each platform's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<BuildSummary>,
    /// The push, on a miss.
    pub push: Option<crate::push::PushReport>,
    /// The SBOM attached to the image, on a miss.
    pub sbom: Option<crate::referrers::Attached>,
    /// The registry-cache entries written after the push, on a miss (one per platform).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registry_cache_written: Vec<crate::regcache::Published>,
    /// Milliseconds per stage (`lookup`, and on a miss `build` and `push`).
    pub timings_ms: std::collections::BTreeMap<String, u64>,
}

impl Resolved {
    /// A fresh image found: no build, no push.
    fn found(name: String, image: EnvImage, timings_ms: std::collections::BTreeMap<String, u64>) -> Self {
        let reference = image.reference.clone();
        Resolved { name, reference, hit: true, image, build: None, builds: Vec::new(), push: None, sbom: None, registry_cache_written: Vec::new(), timings_ms }
    }
}

/// Finds a fresh image of the environment in `repo`, or builds and pushes one; `refresh` forces a
/// build (and a new solve). `opts.now` is the clock; `opts.output` is normally `None`.
pub async fn resolve(
    opts: &BuildOptions,
    repo: &Reference,
    refresh: bool,
    no_build: bool,
    push_jobs: usize,
    reporter: &dyn Reporter,
) -> Result<Resolved, LifecycleError> {
    if !opts.platforms.is_empty() {
        return multi::resolve(opts, repo, refresh, no_build, push_jobs, reporter).await;
    }
    let mut timings = std::collections::BTreeMap::new();
    let t0 = Instant::now();
    // The inputs and the base are read once: for the identity, and for the build on a miss.
    let prepared = build::prepare(opts).await?;
    let identity = prepared.identity(opts)?;
    let spec = prepared.inputs.spec.clone();
    let tag = tag_for(&spec.name, &identity);
    let registry = registry::connect(repo, &opts.registry.auth, &opts.registry.client).await?;
    let found = inspect(&registry, repo, &tag, opts.now).await?;
    timings.insert("lookup".to_string(), t0.elapsed().as_millis() as u64);
    // A hit must be this environment: the image's recorded identity must equal ours (a tag is only a
    // name, and anyone with push access can put any image under it).
    let found = found.filter(|i| {
        let ours = i.hash == identity && i.name == spec.name;
        if !ours {
            tracing::warn!("{repo}:{tag} records another environment ({}); building", crate::net::escape(&i.hash));
        }
        ours
    });
    if let Some(img) = found.filter(|i| i.status != Status::Expired && !refresh) {
        return Ok(Resolved::found(spec.name, img, timings));
    }
    if no_build {
        return Err(LifecycleError::Miss { name: spec.name, repo: repo.to_string(), tag });
    }
    let t1 = Instant::now();
    let built = build::build_prepared(opts, prepared, reporter).await?;
    timings.insert("build".to_string(), t1.elapsed().as_millis() as u64);
    let t2 = Instant::now();
    let target = Reference { tag: Some(tag.clone()), digest: None, ..repo.clone() };
    let mut locations = crate::push::BlobLocations::load(&opts.cache_dir, &repo.registry);
    let push = crate::push::push_image(&registry, &target, &built.image, push_jobs, &mut locations).await?;
    let created = serde_json::from_slice::<serde_json::Value>(&built.image.manifest).ok().and_then(|m| {
        m["annotations"]["org.opencontainers.image.created"].as_str().map(String::from)
    });
    if let Some(created) = created {
        registry
            .put_manifest(&repo.repository, &build_tag(&tag, &created), &built.image.manifest, "application/vnd.oci.image.manifest.v1+json")
            .await?;
    }
    let sbom = match &built.sbom {
        Some((format, bytes)) => crate::sbom::attach_or_warn(&registry, &repo.repository, &built.image, *format, bytes).await,
        None => None,
    };
    let written = crate::regcache::publish_build(built.registry_cache.as_ref(), &opts.cache_dir, &target, push_jobs).await;
    timings.insert("push".to_string(), t2.elapsed().as_millis() as u64);
    let img = inspect(&registry, repo, &tag, opts.now)
        .await?
        .ok_or_else(|| RegistryError::Vanished { registry: registry.host().to_string(), reference: format!("{}:{tag}", repo.repository) })?;
    Ok(Resolved {
        name: spec.name,
        reference: push.reference.clone(),
        hit: false,
        image: img,
        build: Some(built.summary),
        builds: Vec::new(),
        push: Some(push),
        sbom,
        registry_cache_written: written.into_iter().collect(),
        timings_ms: timings,
    })
}

/// A Kubernetes container entry for the resolved image (a YAML list of one), written by a serializer:
/// `name` is the environment's checked name, `image` a parsed `registry/repo@sha256:...` reference.
pub fn k8s_container(resolved: &Resolved) -> Result<String, LifecycleError> {
    let not_pinned = || LifecycleError::NotPinned { reference: crate::net::escape(&resolved.reference) };
    crate::spec::check_name(&resolved.name).map_err(|reason| LifecycleError::Name { name: crate::net::escape(&resolved.name), reason })?;
    let reference: Reference = resolved.reference.parse().map_err(|_| not_pinned())?;
    if reference.digest.is_none() || reference.tag.is_some() {
        return Err(not_pinned());
    }
    #[derive(serde::Serialize)]
    struct Container<'a> {
        name: &'a str,
        image: String,
    }
    serde_yaml::to_string(&[Container { name: &resolved.name, image: reference.to_string() }])
        .map_err(LifecycleError::Yaml)
}

/// `envlayer push`: pushes the image `tag` (or the only image) of the OCI layout `dir` to `target`. A
/// base named by the image's `io.envlayer.base` label is mounted from its repository, but only when it is
/// on the registry pushed to and named by digest: a label is data, and no other registry is contacted.
pub async fn push_layout(
    dir: &std::path::Path,
    tag: Option<&str>,
    target: &Reference,
    settings: &build::RegistrySettings,
    cache_dir: &std::path::Path,
    jobs: usize,
) -> Result<crate::push::PushReport, LifecycleError> {
    let mut image = crate::image::read_layout_image(dir, tag).map_err(build::BuildError::from)?;
    let registry = registry::connect(target, &settings.auth, &settings.client).await?;
    let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap_or_default();
    let base_label = config["config"]["Labels"][crate::keys::LABEL_BASE].as_str().and_then(|b| b.parse::<Reference>().ok());
    if let Some(r) = base_label.filter(|r| r.registry == target.registry && r.digest.is_some()) {
        let arch = config["architecture"].as_str().unwrap_or("amd64");
        if let Ok(b) = registry::read_base(&registry, &r, "linux", arch, config["variant"].as_str()).await {
            for blob in image.layers.iter_mut() {
                if let Some(remote) = b.layers.iter().find(|l| l.digest == blob.digest).and_then(|l| l.remote.clone()) {
                    blob.remote = Some(remote);
                }
            }
        }
    }
    let mut locations = crate::push::BlobLocations::load(cache_dir, &target.registry);
    Ok(crate::push::push_image(&registry, target, &image, jobs, &mut locations).await?)
}
