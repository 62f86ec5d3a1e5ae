//! Stage 6, image: layers and a config assembled into an OCI image (manifest + config), read from and
//! written to OCI image layout directories. JSON is canonical (sorted keys, no spaces) so digests are
//! stable.

use crate::files::{copy_verified, BlobError};
use envlayer_layers::{Digest, Layer};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Serializes `value` with object keys sorted at every level, so equal values give equal bytes whatever
/// order their maps were filled in.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect::<Map<_, _>>())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sort(value)).unwrap_or_default()
}

/// A blob of an image: its descriptor and where its bytes are.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Media type, digest, size, annotations.
    pub descriptor: Value,
    /// The bytes on disk (may not exist for a blob of a registry base that was not downloaded).
    pub path: PathBuf,
    /// Their digest.
    pub digest: Digest,
    /// Where the blob lives in a registry, for mounts and copies.
    pub remote: Option<RemoteBlob>,
    /// Its digest was computed from these bytes in this build (packed now, or checked when taken from
    /// the cache), so copying it needs no second hash.
    pub verified: bool,
}

/// A blob's home in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBlob {
    /// `host:port`.
    pub registry: String,
    /// The repository holding it.
    pub repository: String,
}

/// A base image read from an OCI layout.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Its config, kept whole.
    pub config: Value,
    /// Its layers, bottom first.
    pub layers: Vec<Blob>,
    /// Its manifest's digest.
    pub manifest_digest: Digest,
    /// `registry/repository@digest` when it came from a registry.
    pub origin: Option<String>,
}

/// Why an image could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file of the layout could not be read or written.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The layout is not a valid OCI image layout, or has no such image.
    #[error("OCI layout {path}: {reason}")]
    Layout {
        /// The layout.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A blob failed its digest check.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// Why a manifest's layer entry is refused.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The digest is malformed or not sha256.
    #[error("a layer's digest: {0}")]
    Digest(#[source] envlayer_layers::DigestParseError),
    /// No size.
    #[error("layer {digest} has no size")]
    NoSize {
        /// The layer.
        digest: Digest,
    },
    /// A media type envlayer does not push or unpack.
    #[error("layer {digest} has media type {media_type:?}, which envlayer does not accept")]
    MediaType {
        /// The layer.
        digest: Digest,
        /// The media type, escaped for printing.
        media_type: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io { path: path.to_path_buf(), source }
}

/// The layer media types envlayer accepts in a base, and the OCI name it writes for each. Anything else
/// (foreign or non-distributable layers, unknown types) is refused.
pub fn layer_media_type(media_type: &str) -> Option<&'static str> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar+gzip" | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Some("application/vnd.oci.image.layer.v1.tar+gzip")
        }
        "application/vnd.oci.image.layer.v1.tar+zstd" => Some("application/vnd.oci.image.layer.v1.tar+zstd"),
        "application/vnd.oci.image.layer.v1.tar" => Some("application/vnd.oci.image.layer.v1.tar"),
        _ => None,
    }
}

/// A base layer's descriptor as envlayer writes it: media type, digest and size only, from values it
/// parsed and checked (never copied whole: `urls` pointing elsewhere and foreign annotations are dropped).
pub fn layer_descriptor(l: &serde_json::Value) -> Result<(serde_json::Value, Digest, u64), LayerError> {
    let digest: Digest = l["digest"].as_str().unwrap_or_default().parse().map_err(LayerError::Digest)?;
    let size = l["size"].as_u64().ok_or_else(|| LayerError::NoSize { digest: digest.clone() })?;
    let given = l["mediaType"].as_str().unwrap_or_default();
    let media_type =
        layer_media_type(given).ok_or_else(|| LayerError::MediaType { digest: digest.clone(), media_type: crate::net::escape(given) })?;
    Ok((serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": size}), digest, size))
}

/// Reads a JSON file of a layout: a regular file (never through a link) of at most
/// [`crate::net::MAX_MANIFEST_BYTES`].
fn read_layout_file(dir: &Path, path: &Path) -> Result<Vec<u8>, ImageError> {
    let bad = |reason: String| ImageError::Layout { path: dir.to_path_buf(), reason };
    let file = crate::files::open_regular(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if len > crate::net::MAX_MANIFEST_BYTES {
        return Err(bad(format!("{} is {len} bytes, more than envlayer reads ({})", path.display(), crate::net::MAX_MANIFEST_BYTES)));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, crate::net::MAX_MANIFEST_BYTES), &mut bytes).map_err(io_err(path))?;
    Ok(bytes)
}

/// A layout's blob: its path and its bytes' digest, checked.
fn read_layout_blob(dir: &Path, digest: &Digest) -> Result<Vec<u8>, ImageError> {
    let bytes = read_layout_file(dir, &dir.join("blobs").join("sha256").join(digest.hex()))?;
    if &Digest::of(&bytes) != digest {
        return Err(ImageError::Layout { path: dir.to_path_buf(), reason: format!("blob {digest} does not match its digest") });
    }
    Ok(bytes)
}

/// Reads the image named `reference` (its `org.opencontainers.image.ref.name`), or the only image, from
/// the OCI layout at `dir`: its manifest and config bytes as they are (digests checked) and its layers
/// (checked when their bytes are used).
pub fn read_layout_image(dir: &Path, reference: Option<&str>) -> Result<Image, ImageError> {
    let bad = |reason: String| ImageError::Layout { path: dir.to_path_buf(), reason };
    let index: Value = serde_json::from_slice(&read_layout_file(dir, &dir.join("index.json"))?).map_err(|e| bad(format!("index.json: {e}")))?;
    let manifests = index["manifests"].as_array().ok_or_else(|| bad("index.json has no manifests".into()))?;
    let chosen = match reference {
        Some(r) => manifests
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(r))
            .ok_or_else(|| bad(format!("no image tagged {r:?}")))?,
        None if manifests.len() == 1 => &manifests[0],
        None => return Err(bad(format!("holds {} images: name one as PATH:TAG", manifests.len()))),
    };
    let media_type = chosen["mediaType"].as_str().unwrap_or_default();
    if media_type != "application/vnd.oci.image.manifest.v1+json" {
        return Err(bad(format!("the image is a {:?}, not an OCI image manifest", crate::net::escape(media_type))));
    }
    let manifest_digest: Digest = chosen["digest"].as_str().unwrap_or_default().parse().map_err(|e| bad(format!("index.json: {e}")))?;
    let manifest_bytes = read_layout_blob(dir, &manifest_digest)?;
    let manifest: Value = serde_json::from_slice(&manifest_bytes).map_err(|e| bad(format!("manifest: {e}")))?;
    let config_digest: Digest = manifest["config"]["digest"].as_str().unwrap_or_default().parse().map_err(|e| bad(format!("manifest config: {e}")))?;
    let config = read_layout_blob(dir, &config_digest)?;
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| bad("manifest has no layers".into()))?
        .iter()
        .map(|l| {
            let (descriptor, digest, _) = layer_descriptor(l).map_err(|e| bad(e.to_string()))?;
            let path = dir.join("blobs").join("sha256").join(digest.hex());
            Ok(Blob { descriptor, path, digest, remote: None, verified: false })
        })
        .collect::<Result<_, ImageError>>()?;
    Ok(Image { config, manifest: manifest_bytes, layers })
}

/// Reads the image named `reference` (or the only image) from the OCI layout at `dir`, as a base.
pub fn read_oci_layout(dir: &Path, reference: Option<&str>) -> Result<BaseImage, ImageError> {
    let image = read_layout_image(dir, reference)?;
    let config = serde_json::from_slice(&image.config)
        .map_err(|e| ImageError::Layout { path: dir.to_path_buf(), reason: format!("config: {e}") })?;
    Ok(BaseImage { config, manifest_digest: image.digest(), layers: image.layers, origin: None })
}

/// One of envlayer's own layers, ready for an image.
#[derive(Debug, Clone)]
pub struct NewLayer {
    /// Its facts.
    pub layer: Layer,
    /// Its blob on disk.
    pub path: PathBuf,
    /// Descriptor annotations (the packages it holds).
    pub annotations: BTreeMap<String, String>,
    /// The image history's `created_by` for it.
    pub created_by: String,
    /// Where it is in a registry, when it is not on disk.
    pub remote: Option<RemoteBlob>,
}

/// What the image's config and manifest say beyond its layers.
#[derive(Debug, Clone)]
pub struct ImageSettings {
    /// `os`/`architecture` (and `variant`), e.g. `("linux", "amd64", None)`.
    pub os_arch: (String, String, Option<String>),
    /// Environment variables, set over the base's (in this order).
    pub env: Vec<(String, String)>,
    /// Labels, added to the base's.
    pub labels: BTreeMap<String, String>,
    /// The config's `created` (RFC 3339).
    pub created: String,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// Replaces the base's entrypoint (runtime-install images start with envlayer's installer).
    pub entrypoint: Option<Vec<String>>,
}

/// An assembled image: its config and manifest bytes and the blobs they name.
#[derive(Debug, Clone)]
pub struct Image {
    /// The config JSON.
    pub config: Vec<u8>,
    /// The manifest JSON.
    pub manifest: Vec<u8>,
    /// Every layer blob, bottom first.
    pub layers: Vec<Blob>,
}

impl Image {
    /// The manifest's digest.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }
    /// The config's digest.
    pub fn config_digest(&self) -> Digest {
        Digest::of(&self.config)
    }
}

/// Puts `layers` over `base` (if any) with the config `settings` describe.
pub fn assemble(base: Option<&BaseImage>, layers: &[NewLayer], settings: &ImageSettings) -> Image {
    let mut config = base.map(|b| b.config.clone()).unwrap_or_else(|| json!({}));
    let (os, arch, variant) = &settings.os_arch;
    config["os"] = json!(os);
    config["architecture"] = json!(arch);
    if let Some(v) = variant {
        config["variant"] = json!(v);
    }
    config["created"] = json!(settings.created);
    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    // Env: the base's, with ours set over it (same name replaced in place, new names appended).
    let mut env: Vec<String> = config["config"]["Env"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    for (k, v) in &settings.env {
        let item = format!("{k}={v}");
        match env.iter_mut().find(|e| e.split_once('=').map(|(n, _)| n) == Some(k.as_str())) {
            Some(slot) => *slot = item,
            None => env.push(item),
        }
    }
    config["config"]["Env"] = json!(env);
    let mut labels: BTreeMap<String, String> = config["config"]["Labels"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    labels.extend(settings.labels.clone());
    config["config"]["Labels"] = json!(labels);
    if let Some(ep) = &settings.entrypoint {
        config["config"]["Entrypoint"] = json!(ep);
    }
    let mut diff_ids: Vec<Value> =
        if base.is_some() { config["rootfs"]["diff_ids"].as_array().cloned().unwrap_or_default() } else { vec![] };
    let mut history: Vec<Value> = config["history"].as_array().cloned().unwrap_or_default();
    for l in layers {
        diff_ids.push(json!(l.layer.diff_id.to_string()));
        history.push(json!({"created": settings.created, "created_by": l.created_by, "comment": "envlayer"}));
    }
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    config["history"] = json!(history);
    let config_bytes = canonical_json(&config);

    let mut blobs: Vec<Blob> = base.map(|b| b.layers.clone()).unwrap_or_default();
    for l in layers {
        let mut d = json!({
            "mediaType": l.layer.media_type(),
            "digest": l.layer.digest.to_string(),
            "size": l.layer.size,
        });
        if !l.annotations.is_empty() {
            d["annotations"] = json!(l.annotations);
        }
        blobs.push(Blob { descriptor: d, path: l.path.clone(), digest: l.layer.digest.clone(), remote: l.remote.clone(), verified: true });
    }
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(&config_bytes).to_string(),
            "size": config_bytes.len(),
        },
        "layers": blobs.iter().map(|b| b.descriptor.clone()).collect::<Vec<_>>(),
    });
    if !settings.annotations.is_empty() {
        manifest["annotations"] = json!(settings.annotations);
    }
    Image { config: config_bytes, manifest: canonical_json(&manifest), layers: blobs }
}

/// Writes `image` as a new OCI image layout at `dir` (which must not exist), tagged `tag`. Every blob's
/// digest is checked as it is copied in.
pub fn write_oci_layout(image: &Image, dir: &Path, tag: &str) -> Result<(), ImageError> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    let write = |path: PathBuf, bytes: &[u8]| std::fs::write(&path, bytes).map_err(io_err(&path));
    write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for blob in &image.layers {
        let dest = blobs.join(blob.digest.hex());
        if blob.verified {
            if std::fs::hard_link(&blob.path, &dest).is_err() {
                std::fs::copy(&blob.path, &dest).map_err(io_err(&dest))?;
            }
        } else {
            copy_verified(&blob.path, &blob.digest, &dest)?;
        }
    }
    write(blobs.join(image.config_digest().hex()), &image.config)?;
    write(blobs.join(image.digest().hex()), &image.manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.digest().to_string(),
            "size": image.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    write(dir.join("index.json"), &canonical_json(&index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"d": [ {"z": 1, "y": 2} ], "c": null}});
        assert_eq!(
            String::from_utf8(canonical_json(&a)).unwrap(),
            r#"{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}"#
        );
    }
}
