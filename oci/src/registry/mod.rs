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
/// the manifest for `os`/`architecture`, whose digest is checked: a base pinned by digest cannot be
/// swapped through an index entry.
pub async fn read_base(registry: &Registry, reference: &Reference, os: &str, architecture: &str) -> Result<BaseImage, RegistryError> {
    let bad = |what: String| RegistryError::Invalid(format!("base {reference}: {what}"));
    let (mut bytes, media_type, mut digest) = registry.get_manifest(&reference.repository, &reference.target()).await?;
    let mut manifest: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("manifest is not JSON: {e}")))?;
    if media_type.contains("index") || media_type.contains("manifest.list") || manifest["manifests"].is_array() {
        let entry = manifest["manifests"]
            .as_array()
            .and_then(|m| {
                m.iter().find(|e| e["platform"]["os"] == os && e["platform"]["architecture"] == architecture)
            })
            .ok_or_else(|| bad(format!("the index has no {os}/{architecture} image")))?;
        let d: Digest = entry["digest"].as_str().unwrap_or_default().parse().map_err(|e| bad(format!("the index entry for {os}/{architecture}: {e}")))?;
        (bytes, _, digest) = registry.get_manifest(&reference.repository, &d.to_string()).await?;
        manifest = serde_json::from_slice(&bytes).map_err(|e| bad(format!("manifest is not JSON: {e}")))?;
    }
    let origin = format!("{}/{}@{digest}", registry.host(), reference.repository);
    let config_digest: Digest = manifest["config"]["digest"].as_str().unwrap_or_default().parse().map_err(|e| bad(format!("the config: {e}")))?;
    let config_bytes = registry.get_blob_bytes(&reference.repository, &config_digest).await?;
    let config = serde_json::from_slice(&config_bytes).map_err(|e| bad(format!("config is not JSON: {e}")))?;
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| bad("manifest has no layers".into()))?
        .iter()
        .map(|l| {
            let (descriptor, digest, _) = crate::image::layer_descriptor(l).map_err(bad)?;
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
