//! The entries' contents and manifests, and the checks an entry read from a registry must pass.

use super::{ARTIFACT_TYPE, INFO_TAG, LAYER_TAG};
use crate::cache::CachedLayer;
use crate::image::canonical_json;
use crate::install::PackageFacts;
use crate::link_scripts::LinkInfo;
use crate::Digest;
use serde_json::json;

/// Bumped when an entry's meaning changes; entries of another format are not read.
pub const FORMAT: u32 = 1;

/// Entries up to this size ride inside their manifest (the config descriptor's `data`).
const INLINE_MAX: usize = 16 << 10;

/// A layer entry: the layer (or the parts of a package split across layers) a key produced.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerEntry {
    /// [`FORMAT`].
    pub format: u32,
    /// The entry's key (see [`entry_key`]).
    pub key: String,
    /// The parts, in order: digest, diff_id, sizes, compression, entries.
    pub layers: Vec<CachedLayer>,
    /// The packages in the layer, in install order.
    pub members: Vec<Member>,
}

/// A package in a layer entry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Its layer-cache key (with the clobbered paths it lost, when it lost some).
    pub key: String,
    /// The hash of its conda archive (none for a wheel): which package-info entries stay while this one does.
    pub archive: Option<String>,
    /// What installing it taught (its paths, activation), so a hit needs no install.
    pub facts: PackageFacts,
}

/// A package-info entry: what a conda archive says about linking.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InfoEntry {
    /// [`FORMAT`].
    pub format: u32,
    /// The archive's hash (`package_hash`).
    pub key: String,
    /// Its link scripts, messages and Python distributions.
    pub info: LinkInfo,
}

/// What a lookup expects of a layer entry.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// The entry key.
    pub key: String,
    /// The member keys, in order.
    pub members: &'a [String],
    /// How many parts.
    pub parts: usize,
    /// The compression of every part.
    pub compression: envlayer_layers::Compression,
}

/// The key of the entry for a layer whose parts have these keys: the key itself for one part.
pub fn entry_key(part_keys: &[String]) -> String {
    match part_keys {
        [one] => one.clone(),
        _ => Digest::of(format!("parts:{}", part_keys.join(",")).as_bytes()).hex(),
    }
}

/// Checks an entry read from the registry against what was asked for, and against its own manifest.
pub fn check_layer(manifest: &serde_json::Value, config: &[u8], expect: &Expect<'_>) -> Result<LayerEntry, String> {
    let e: LayerEntry = serde_json::from_slice(config).map_err(|e| format!("unreadable entry: {e}"))?;
    if e.format != FORMAT {
        return Err(format!("entry format {} (this envlayer reads {FORMAT})", e.format));
    }
    if e.key != expect.key {
        return Err("the entry names another key".into());
    }
    if e.layers.len() != expect.parts {
        return Err(format!("{} parts, {} expected", e.layers.len(), expect.parts));
    }
    if e.members.len() != expect.members.len() || e.members.iter().zip(expect.members).any(|(m, k)| &m.key != k) {
        return Err("its members are not this layer's packages".into());
    }
    for m in &e.members {
        check_facts(&m.facts)?;
    }
    let listed = manifest["layers"].as_array().cloned().unwrap_or_default();
    if listed.len() != e.layers.len() {
        return Err("its manifest lists other blobs than the entry".into());
    }
    for (part, d) in e.layers.iter().zip(&listed) {
        let l = &part.layer;
        if l.compression != expect.compression {
            return Err(format!("blob {} is {}, this build uses {}", l.digest, l.compression.id(), expect.compression.id()));
        }
        if d["digest"] != l.digest.to_string() || d["size"] != l.size || d["mediaType"] != l.media_type() {
            return Err("its manifest lists other blobs than the entry".into());
        }
    }
    Ok(e)
}

/// What an entry's facts may say: activation variables with plain names that are not the dynamic
/// loader's, values and paths without control characters (they reach the image config and the output).
fn check_facts(f: &PackageFacts) -> Result<(), String> {
    let plain = |n: &str| n.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_') && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    for (name, value) in &f.activation {
        if !plain(name) || name.starts_with("LD_") || value.chars().any(char::is_control) {
            return Err(format!("its facts set the variable {} (not a plain name, a loader variable, or a control character)", crate::net::escape(name)));
        }
    }
    let texts = f.paths.iter().chain(&f.activation_skipped).chain(&f.link_scripts).chain(std::iter::once(&f.dist));
    if texts.into_iter().any(|t| t.chars().any(char::is_control)) {
        return Err("its facts hold a control character".into());
    }
    Ok(())
}

/// The manifest of an entry whose bytes are `config` and whose blobs are `layers` (descriptors), with
/// the entry inline when small.
fn manifest(config: &[u8], layers: Vec<serde_json::Value>, kind: &str) -> Vec<u8> {
    let mut c = json!({"mediaType": ARTIFACT_TYPE, "digest": Digest::of(config).to_string(), "size": config.len()});
    if config.len() <= INLINE_MAX {
        c["data"] = json!(crate::registry::auth::base64_encode(config));
    }
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": c,
        "layers": layers,
        "annotations": {"io.envlayer.cache.kind": kind},
    }))
}

/// The empty blob `{}`, the one blob of an info entry (an artifact has at least one).
pub const EMPTY: &[u8] = b"{}";

impl LayerEntry {
    /// Its tag, config bytes and manifest bytes.
    pub fn encode(&self) -> (String, Vec<u8>, Vec<u8>) {
        let config = canonical_json(&serde_json::to_value(self).unwrap_or_default());
        let layers = self.layers.iter().map(|p| json!({"mediaType": p.layer.media_type(), "digest": p.layer.digest.to_string(), "size": p.layer.size})).collect();
        let m = manifest(&config, layers, "layer");
        (format!("{LAYER_TAG}{}", self.key), config, m)
    }
}

impl InfoEntry {
    /// Its tag, config bytes and manifest bytes.
    pub fn encode(&self) -> (String, Vec<u8>, Vec<u8>) {
        let config = canonical_json(&serde_json::to_value(self).unwrap_or_default());
        let empty = json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": Digest::of(EMPTY).to_string(), "size": EMPTY.len()});
        let m = manifest(&config, vec![empty], "info");
        (format!("{INFO_TAG}{}", self.key), config, m)
    }
}
