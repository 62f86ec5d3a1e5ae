//! Registries: references, credentials, and a distribution-API client; base images read from a registry.

pub mod auth;
pub mod client;
pub mod reference;

pub use auth::{AuthSources, Credential, Secret};
pub use client::{ClientOptions, Mount, Registry, RegistryError, Stats};
pub use reference::Reference;

use crate::image::{BaseImage, Blob, RemoteBlob};
use envlayer_layers::Digest;

/// Connects to the registry of `reference` with the credential found for it in `sources`.
pub async fn connect(reference: &Reference, sources: &AuthSources, options: &ClientOptions) -> Result<Registry, RegistryError> {
    let credential = auth::lookup(&reference.registry, sources)?;
    Registry::connect(&reference.registry, credential, options.clone()).await
}

/// Reads a base image's manifest and config from a registry (never its layers: they are mounted or
/// copied when pushing, and downloaded only when a local layout is written). An index is resolved to
/// the manifest for `os`/`architecture` (of `variant` when the index has several), whose digest is checked: a base pinned by digest cannot be
/// swapped through an index entry.
pub async fn read_base(registry: &Registry, reference: &Reference, os: &str, architecture: &str, variant: Option<&str>) -> Result<BaseImage, RegistryError> {
    let json = |source| RegistryError::BadJson { registry: registry.host().to_string(), what: format!("base {reference}: manifest"), source };
    let digest_of = |part: &str| {
        let part = format!("base {reference}: {part}");
        move |source| RegistryError::BadDigest { subject: part, source }
    };
    let (mut bytes, media_type, mut digest) = registry.get_manifest(&reference.repository, &reference.target()).await?;
    let mut manifest: serde_json::Value = serde_json::from_slice(&bytes).map_err(json)?;
    if media_type.contains("index") || media_type.contains("manifest.list") || manifest["manifests"].is_array() {
        let entry = manifest["manifests"]
            .as_array()
            .and_then(|m| {
                // Of the entries for os/architecture: the one of the wanted variant, else one that names
                // none, else the first (whose variant the build then checks).
                let candidates: Vec<&serde_json::Value> = m.iter().filter(|e| e["platform"]["os"] == os && e["platform"]["architecture"] == architecture).collect();
                let v = |e: &&serde_json::Value| e["platform"]["variant"].as_str().map(String::from);
                candidates
                    .iter()
                    .find(|e| variant.is_some() && v(e).as_deref() == variant)
                    .or_else(|| candidates.iter().find(|e| v(e).is_none()))
                    .or_else(|| candidates.first())
                    .copied()
            })
            .ok_or_else(|| RegistryError::NoPlatform { reference: reference.to_string(), platform: format!("{os}/{architecture}") })?;
        let d: Digest = entry["digest"].as_str().unwrap_or_default().parse().map_err(digest_of(&format!("the index entry for {os}/{architecture}")))?;
        (bytes, _, digest) = registry.get_manifest(&reference.repository, &d.to_string()).await?;
        manifest = serde_json::from_slice(&bytes).map_err(json)?;
    }
    let origin = format!("{}/{}@{digest}", registry.host(), reference.repository);
    let config_digest: Digest = manifest["config"]["digest"].as_str().unwrap_or_default().parse().map_err(digest_of("the config"))?;
    let config_bytes = registry.get_blob_bytes(&reference.repository, &config_digest).await?;
    let config = serde_json::from_slice(&config_bytes).map_err(|source| RegistryError::BadJson {
        registry: registry.host().to_string(),
        what: format!("base {reference}: config"),
        source,
    })?;
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| RegistryError::NoLayers { image: reference.to_string() })?
        .iter()
        .map(|l| {
            let (descriptor, digest, _) = crate::image::layer_descriptor(l).map_err(|source| RegistryError::Layer { image: reference.to_string(), source })?;
            Ok(Blob {
                descriptor,
                path: std::path::PathBuf::new(),
                digest,
                remote: Some(RemoteBlob { registry: registry.host().to_string(), repository: reference.repository.clone() }),
                verified: false,
            })
        })
        .collect::<Result<_, RegistryError>>()?;
    Ok(BaseImage { config, layers, manifest_digest: digest, origin: Some(origin) })
}
