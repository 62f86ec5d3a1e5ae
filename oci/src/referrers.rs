//! Attaching an artifact (an SBOM) to an image in a registry: an OCI image manifest whose `subject` is
//! the image, found through the referrers API where the registry has one, else through the referrers
//! tag schema (`sha256-<hex>`: an image index the client keeps), as the distribution spec 1.1 says.

use crate::image::canonical_json;
use crate::registry::{Registry, RegistryError};
use envlayer_layers::Digest;
use serde_json::{json, Value};

/// The empty JSON blob `{}`: the config of an artifact manifest.
const EMPTY: &[u8] = b"{}";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Where an artifact went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attached {
    /// `registry/repository@sha256:...` of the artifact manifest.
    pub reference: String,
    /// Its artifact type.
    pub artifact_type: String,
    /// How clients find it: `referrers-api`, or `tag-schema` (the tag `sha256-<hex>` of the subject).
    pub found_through: &'static str,
    /// The referrers tag, with the tag schema.
    pub tag: Option<String>,
}

/// The annotation title envlayer gives its artifacts' blob (`sbom.spdx.json`, `sbom.cdx.json`).
const TITLE: &str = "org.opencontainers.image.title";

/// Whether `manifest` is an artifact envlayer attached to `subject` (an SBOM: its type and its blob's
/// title), as opposed to another tool's (a signature, an attestation).
pub fn is_envlayer_artifact(manifest: &Value, subject: &Digest) -> bool {
    let types = ["application/spdx+json", "application/vnd.cyclonedx+json"];
    manifest["subject"]["digest"] == subject.to_string()
        && manifest["artifactType"].as_str().is_some_and(|t| types.contains(&t))
        && manifest["layers"][0]["annotations"][TITLE].as_str().is_some_and(|t| t.starts_with("sbom."))
}

/// The referrers tag of a subject: `sha256-<hex>`.
pub fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// The artifact manifest for `blob` (of `artifact_type`) about `subject` (a manifest of `subject_size`
/// bytes), as canonical JSON.
pub fn artifact_manifest(subject: &Digest, subject_size: usize, artifact_type: &str, blob: &[u8], title: &str, created: &str) -> Vec<u8> {
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_TYPE, "digest": Digest::of(EMPTY).to_string(), "size": EMPTY.len(), "data": "e30="},
        "layers": [{"mediaType": artifact_type, "digest": Digest::of(blob).to_string(), "size": blob.len(),
            "annotations": {"org.opencontainers.image.title": title}}],
        "subject": {"mediaType": MANIFEST_TYPE, "digest": subject.to_string(), "size": subject_size},
        "annotations": {"org.opencontainers.image.created": created},
    }))
}

/// Pushes `blob` as an artifact about the manifest `subject` in `repository`, and makes it findable:
/// through the referrers API when the registry has one, else by adding it to the subject's referrers
/// tag (read, add if missing, write back: the tag's other referrers are kept).
pub async fn attach(
    registry: &Registry,
    repository: &str,
    subject: (&Digest, usize),
    artifact_type: &str,
    blob: &[u8],
    title: &str,
    created: &str,
) -> Result<Attached, RegistryError> {
    for bytes in [EMPTY, blob] {
        let d = Digest::of(bytes);
        if !registry.blob_exists(repository, &d).await? {
            registry.upload_blob_bytes(repository, &d, bytes).await?;
        }
    }
    let manifest = artifact_manifest(subject.0, subject.1, artifact_type, blob, title, created);
    let digest = Digest::of(&manifest);
    registry.put_manifest(repository, &digest.to_string(), &manifest, MANIFEST_TYPE).await?;
    let reference = format!("{}/{repository}@{digest}", registry.host());
    if registry.has_referrers_api(repository, subject.0).await? {
        return Ok(Attached { reference, artifact_type: artifact_type.into(), found_through: "referrers-api", tag: None });
    }
    let tag = referrers_tag(subject.0);
    // Read, add, write back; then read again: another client writing the tag at the same moment may have
    // replaced our write (the registry has no conditional PUT), so a missing entry is added again.
    for attempt in 0..4u32 {
        let mut index = match registry.get_manifest(repository, &tag).await {
            Ok((bytes, _, _)) => serde_json::from_slice::<Value>(&bytes).ok().filter(|v| v["manifests"].is_array()).ok_or_else(|| RegistryError::Status {
                registry: registry.host().to_string(),
                what: format!("referrers tag {repository}:{tag}"),
                status: 200,
                detail: ": it is not an image index; not changed".into(),
            })?,
            Err(RegistryError::Status { status: 404, .. }) => json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": []}),
            Err(e) => return Err(e),
        };
        let listed = index["manifests"].as_array().is_some_and(|m| m.iter().any(|e| e["digest"] == digest.to_string()));
        if listed {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
        }
        if let Some(m) = index["manifests"].as_array_mut() {
            m.push(json!({
                "mediaType": MANIFEST_TYPE, "digest": digest.to_string(), "size": manifest.len(), "artifactType": artifact_type,
                "annotations": {"org.opencontainers.image.created": created},
            }));
        }
        registry.put_manifest(repository, &tag, &canonical_json(&index), INDEX_TYPE).await?;
    }
    Ok(Attached { reference, artifact_type: artifact_type.into(), found_through: "tag-schema", tag: Some(tag) })
}
