//! Multi-platform images: one build per conda platform (each solved, fetched and installed for its
//! target: nothing of the target runs here; `.pyc` only where this machine can run the target's python),
//! joined by an OCI image index with `platform.os/architecture/variant` right for each. Layers whose
//! bytes are equal on two platforms (noarch packages without `.pyc`) are one blob.

use super::{build, oci_platform, BaseRef, BuildError, BuildOptions, BuildOutput};
use crate::image::canonical_json;
use crate::keys;
use crate::reporter::Reporter;
use envlayer_layers::Digest;
use rattler_conda_types::Subdir;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The media type of an OCI image index.
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// A multi-platform build: the index, and each platform's image.
#[derive(Debug)]
pub struct MultiOutput {
    /// The image index (canonical JSON).
    pub index: Vec<u8>,
    /// Each platform's build, in the order asked for.
    pub builds: Vec<(Subdir, BuildOutput)>,
    /// The identity of the whole (a hash of the platforms' identities).
    pub identity: String,
}

impl MultiOutput {
    /// The index's digest.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.index)
    }
}

/// The options of one platform's build: its platform, its base (`bases` over `opts.base`), no output.
pub fn platform_options(opts: &BuildOptions, platform: Subdir, bases: &BTreeMap<Subdir, BaseRef>) -> BuildOptions {
    let mut o = opts.clone();
    o.platform = platform;
    o.fetch_base_layers = opts.output.is_some();
    // The layout is written from the local cache: registry-cache hits are downloaded into it.
    if let Some(c) = o.registry_cache.as_mut() {
        c.download |= opts.output.is_some();
    }
    o.output = None;
    if let Some(b) = bases.get(&platform) {
        o.base = Some(b.clone());
    }
    o
}

/// The identity of a multi-platform environment, from its platforms' identities (computed without a
/// solve, as for one platform).
pub async fn identity(opts: &BuildOptions, platforms: &[Subdir], bases: &BTreeMap<Subdir, BaseRef>) -> Result<String, BuildError> {
    let mut parts = Vec::new();
    for &p in platforms {
        let o = platform_options(opts, p, bases);
        let prepared = super::prepare(&o).await?;
        parts.push(format!("{p}={}", prepared.identity(&o)?));
    }
    Ok(Digest::of(parts.join("\n").as_bytes()).hex())
}

/// Builds the environment for every platform in `platforms` and joins the images in an index. The
/// index carries the environment's annotations (name, identity, creation, expiry), so `resolve`, `ls`
/// and `prune` treat it as one image.
pub async fn build_multi(opts: &BuildOptions, platforms: &[Subdir], bases: &BTreeMap<Subdir, BaseRef>, reporter: &dyn Reporter) -> Result<MultiOutput, BuildError> {
    if platforms.is_empty() {
        return Err(BuildError::Platform { platform: "(none)".into() });
    }
    if let Some(out) = &opts.output {
        check_output(out)?;
    }
    let identity = identity(opts, platforms, bases).await?;
    let mut builds = Vec::new();
    let mut entries = Vec::new();
    for &p in platforms {
        let o = platform_options(opts, p, bases);
        let built = build(&o, reporter).await?;
        let (os, arch, variant) = oci_platform(p)?;
        let mut platform = json!({"os": os, "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        entries.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": built.image.digest().to_string(),
            "size": built.image.manifest.len(),
            "platform": platform,
        }));
        builds.push((p, built));
    }
    // The environment's annotations, from the first image, with the whole's identity.
    let first: Value = builds.first().and_then(|(_, b)| serde_json::from_slice(&b.image.manifest).ok()).unwrap_or_default();
    let mut annotations: BTreeMap<String, Value> = first["annotations"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
    annotations.insert(keys::ANNOTATION_INPUTS.to_string(), json!(identity));
    let count: usize = builds.iter().map(|(_, b)| b.summary.packages.len()).max().unwrap_or(0);
    annotations.insert(keys::ANNOTATION_PACKAGE_COUNT.to_string(), json!(count.to_string()));
    annotations.insert("io.envlayer.platforms".to_string(), json!(platforms.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")));
    let index = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": entries,
        "annotations": annotations,
    }));
    Ok(MultiOutput { index, builds, identity })
}

/// A multi-platform image's layout goes to a new (or empty) folder only; checked before any work.
fn check_output(output: &std::path::Path) -> Result<(), BuildError> {
    if std::fs::symlink_metadata(output).is_ok() && !(output.is_dir() && std::fs::read_dir(output).map(|mut d| d.next().is_none()).unwrap_or(false)) {
        return Err(crate::output::OutputError::Refused {
            path: output.to_path_buf(),
            reason: "a multi-platform image is written to a new (or empty) folder only".into(),
        }
        .into());
    }
    Ok(())
}

/// Writes a multi-platform image as a new OCI layout at `output` (which must not exist, or be an empty
/// folder): every image's blobs, its manifest, and the index tagged `tag`.
pub fn write_layout(multi: &MultiOutput, output: &std::path::Path, tag: &str) -> Result<(), BuildError> {
    check_output(output)?;
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let tmp = tempfile::Builder::new().prefix(".envlayer-out-").tempdir_in(parent).map_err(super::io_err(parent))?;
    let layout = tmp.path().join("layout");
    // Each image is written as a layout of its own, then their blobs merged (content-addressed: the same
    // name is the same bytes).
    for (i, (_, b)) in multi.builds.iter().enumerate() {
        let one = tmp.path().join(format!("p{i}"));
        crate::image::write_oci_layout(&b.image, &one, tag)?;
        let blobs = layout.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(super::io_err(&blobs))?;
        for e in std::fs::read_dir(one.join("blobs/sha256")).map_err(super::io_err(&one))?.flatten() {
            let dest = blobs.join(e.file_name());
            if !dest.exists() {
                std::fs::rename(e.path(), &dest).map_err(super::io_err(&dest))?;
            }
        }
    }
    let blobs = layout.join("blobs").join("sha256");
    let index_blob = blobs.join(multi.digest().hex());
    std::fs::write(&index_blob, &multi.index).map_err(super::io_err(&index_blob))?;
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(super::io_err(&layout))?;
    let top = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{"mediaType": INDEX_TYPE, "digest": multi.digest().to_string(), "size": multi.index.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }));
    std::fs::write(layout.join("index.json"), top).map_err(super::io_err(&layout))?;
    if output.is_dir() {
        std::fs::remove_dir(output).map_err(super::io_err(output))?;
    }
    std::fs::rename(&layout, output).map_err(super::io_err(output))?;
    Ok(())
}

/// Pushes every platform's image by digest, then the index under `target`'s tag (or by digest).
pub async fn push(
    registry: &crate::registry::Registry,
    target: &crate::registry::Reference,
    multi: &MultiOutput,
    jobs: usize,
    locations: &mut crate::push::BlobLocations,
) -> Result<crate::push::PushReport, crate::registry::RegistryError> {
    let by_digest = crate::registry::Reference { tag: None, digest: None, ..target.clone() };
    let mut report: Option<crate::push::PushReport> = None;
    for (_, b) in &multi.builds {
        let r = crate::push::push_image(registry, &by_digest, &b.image, jobs, locations).await?;
        match report.as_mut() {
            None => report = Some(r),
            Some(all) => {
                all.uploaded.extend(r.uploaded);
                all.uploaded_bytes += r.uploaded_bytes;
                all.mounted += r.mounted;
                all.existing += r.existing;
                all.retries += r.retries;
            }
        }
    }
    let reference = target.tag.clone().unwrap_or_else(|| multi.digest().to_string());
    registry.put_manifest(&target.repository, &reference, &multi.index, INDEX_TYPE).await?;
    let Some(mut report) = report else {
        return Err(crate::registry::RegistryError::NoLayers { image: target.to_string() });
    };
    report.digest = multi.digest().to_string();
    report.reference = target.by_digest(&multi.digest());
    report.tag = target.tag.clone();
    Ok(report)
}
