//! The image's SBOM: every conda package and pip distribution in it (name, version, build, channel
//! without credentials, sha256, license, package URL) and the base image by digest, as SPDX 2.3 JSON or
//! CycloneDX 1.6 JSON. Deterministic: made only of the image's inputs and digest, sorted, canonical JSON,
//! the image's own creation time, identifiers derived by hashing. Written by hand: the SPDX and
//! CycloneDX crates are either serialisers of the whole spec (more than is needed, and not byte-stable)
//! or unmaintained; the `spdx` crate checks license expressions.

use crate::pypi::Dist;
use envlayer_layers::Digest;
use rattler_conda_types::RepoDataRecord;
use serde_json::{json, Value};

/// Which SBOM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SbomFormat {
    /// SPDX 2.3 JSON.
    Spdx,
    /// CycloneDX 1.6 JSON.
    Cyclonedx,
}

impl SbomFormat {
    /// The media type of the document (the artifact type of its OCI artifact).
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Spdx => "application/spdx+json",
            Self::Cyclonedx => "application/vnd.cyclonedx+json",
        }
    }
    /// The file name suffix beside a layout output.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Spdx => ".spdx.json",
            Self::Cyclonedx => ".cdx.json",
        }
    }
}

/// What an SBOM describes.
pub struct SbomInput<'a> {
    /// The environment's name.
    pub name: &'a str,
    /// The image's manifest digest.
    pub image: &'a Digest,
    /// The image's creation time (RFC 3339).
    pub created: &'a str,
    /// The conda packages.
    pub records: &'a [RepoDataRecord],
    /// The pip distributions.
    pub wheels: &'a [Dist],
    /// The base image: where it came from (a registry reference, if any) and its manifest digest.
    pub base: Option<(Option<&'a str>, &'a Digest)>,
}

/// One package, as both formats need it.
struct Item {
    id: String,
    name: String,
    version: String,
    purl: String,
    sha256: Option<String>,
    license: Option<String>,
    download: Option<String>,
}

/// Percent-encodes a package-URL qualifier value (all but `A-Za-z0-9.-_~:`).
fn purl_value(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b".-_~:".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A channel as a package URL names it: its name for anaconda.org and local folders (never a path of the
/// build machine), else its URL without credentials.
fn channel_name(r: &RepoDataRecord) -> String {
    let Some(raw) = r.channel.as_deref() else { return String::new() };
    match url::Url::parse(raw) {
        Ok(u) if u.scheme() == "file" || u.host_str().is_some_and(|h| h.ends_with("anaconda.org")) => {
            u.path_segments().and_then(|mut s| s.rfind(|p| !p.is_empty()).map(String::from)).unwrap_or_default()
        }
        Ok(u) => crate::solve::channel_display(&u),
        Err(_) => raw.to_string(),
    }
}

/// A URL a reader can fetch: http(s) on a named host, without credentials; else none.
fn public_url(u: &url::Url) -> Option<String> {
    let host = u.host_str()?;
    let named = host.contains('.') && host.rsplit('.').next().is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    (matches!(u.scheme(), "http" | "https") && named && !host.ends_with(".invalid")).then(|| crate::solve::channel_display(u))
}

/// A license string that is an SPDX expression (as SPDX's own list knows it), else none.
fn spdx_expression(license: &str) -> Option<String> {
    let l = license.trim();
    (!l.is_empty() && !l.contains("LicenseRef-") && !l.contains("DocumentRef-") && spdx::Expression::parse(l).is_ok()).then(|| l.to_string())
}

fn items(input: &SbomInput<'_>) -> Vec<Item> {
    let mut out: Vec<Item> = input
        .records
        .iter()
        .map(|r| {
            let p = &r.package_record;
            let file = r.identifier.to_file_name();
            let kind = if file.ends_with(".tar.bz2") { "tar.bz2" } else { "conda" };
            let mut q = vec![("build", p.build.to_string()), ("channel", channel_name(r)), ("subdir", p.subdir.to_string()), ("type", kind.to_string())];
            q.retain(|(_, v)| !v.is_empty());
            let qualifiers: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", purl_value(v))).collect();
            Item {
                id: format!("conda-{}-{}-{}", p.name.as_normalized(), p.version, p.build),
                name: p.name.as_normalized().to_string(),
                version: p.version.to_string(),
                purl: format!("pkg:conda/{}@{}?{}", p.name.as_normalized(), purl_value(&p.version.to_string()), qualifiers.join("&")),
                sha256: p.sha256.map(|h| crate::fetch::hex(&h)),
                license: p.license.clone().filter(|l| !l.trim().is_empty()),
                download: public_url(&r.url),
            }
        })
        .collect();
    out.extend(input.wheels.iter().map(|w| {
        let name = w.name.to_ascii_lowercase().replace('_', "-");
        Item {
            id: format!("pypi-{name}-{}", w.version),
            purl: format!("pkg:pypi/{name}@{}", purl_value(&w.version)),
            name,
            version: w.version.clone(),
            sha256: Some(w.sha256.clone()),
            license: None,
            download: public_url(&w.url),
        }
    }));
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// An SPDX identifier from free text: `[A-Za-z0-9.-]` only, with a hash of the text against collisions.
fn spdx_id(prefix: &str, text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    format!("{prefix}-{clean}-{}", &Digest::of(text.as_bytes()).hex()[..8])
}

/// The creation time to the second, `YYYY-MM-DDTHH:MM:SSZ` (the form SPDX requires).
fn timestamp(created: &str) -> String {
    created
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// The SBOM of an image, in `format`, as canonical JSON bytes.
pub fn render(format: SbomFormat, input: &SbomInput<'_>) -> Vec<u8> {
    let doc = match format {
        SbomFormat::Spdx => spdx_doc(input),
        SbomFormat::Cyclonedx => cyclonedx_doc(input),
    };
    crate::image::canonical_json(&doc)
}

fn tool() -> String {
    format!("envlayer-{}", env!("CARGO_PKG_VERSION"))
}

fn spdx_doc(input: &SbomInput<'_>) -> Value {
    let image = input.image.to_string();
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-image", "name": input.name, "versionInfo": image, "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false, "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": input.image.hex()}],
    })];
    let mut relationships = vec![json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-image"})];
    let mut extracted = Vec::new();
    if let Some((origin, digest)) = input.base {
        packages.push(json!({
            "SPDXID": "SPDXRef-base", "name": origin.map(|o| o.split('@').next().unwrap_or(o)).unwrap_or("base"), "versionInfo": digest.to_string(),
            "downloadLocation": "NOASSERTION", "filesAnalyzed": false, "primaryPackagePurpose": "CONTAINER",
            "checksums": [{"algorithm": "SHA256", "checksumValue": digest.hex()}],
        }));
        relationships.push(json!({"spdxElementId": "SPDXRef-image", "relationshipType": "DESCENDANT_OF", "relatedSpdxElement": "SPDXRef-base"}));
    }
    for it in items(input) {
        let id = spdx_id("SPDXRef", &it.id);
        let declared = match it.license.as_deref() {
            None => "NOASSERTION".to_string(),
            Some(l) => spdx_expression(l).unwrap_or_else(|| {
                let r = format!("LicenseRef-conda-{}", &Digest::of(l.as_bytes()).hex()[..12]);
                extracted.push(json!({"licenseId": r, "name": l, "extractedText": l}));
                r
            }),
        };
        let mut p = json!({
            "SPDXID": id, "name": it.name, "versionInfo": it.version, "downloadLocation": it.download.as_deref().unwrap_or("NOASSERTION"),
            "filesAnalyzed": false, "licenseConcluded": "NOASSERTION", "licenseDeclared": declared, "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": it.purl}],
        });
        if let Some(h) = &it.sha256 {
            p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": h}]);
        }
        packages.push(p);
        relationships.push(json!({"spdxElementId": "SPDXRef-image", "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
    }
    extracted.sort_by(|a, b| a["licenseId"].as_str().cmp(&b["licenseId"].as_str()));
    extracted.dedup();
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{image}", input.name),
        "documentNamespace": format!("https://envlayer.invalid/spdx/{}/{}", input.name, image.replace(':', "-")),
        "creationInfo": {"created": timestamp(input.created), "creators": [format!("Tool: {}", tool())]},
        "packages": packages, "relationships": relationships,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = json!(extracted);
    }
    doc
}

/// A UUID (version 5 layout) from a hash of `text`: stable for the same image.
fn uuid_of(text: &str) -> String {
    let h = Digest::of(text.as_bytes()).hex();
    let mut b: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap_or(0)).collect();
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}

fn cyclonedx_doc(input: &SbomInput<'_>) -> Value {
    let image = input.image.to_string();
    let mut components = Vec::new();
    let mut refs = Vec::new();
    if let Some((origin, digest)) = input.base {
        components.push(json!({
            "type": "container", "bom-ref": "base", "name": origin.map(|o| o.split('@').next().unwrap_or(o)).unwrap_or("base"),
            "version": digest.to_string(), "hashes": [{"alg": "SHA-256", "content": digest.hex()}],
        }));
        refs.push("base".to_string());
    }
    for it in items(input) {
        let mut c = json!({"type": "library", "bom-ref": it.purl, "name": it.name, "version": it.version, "purl": it.purl});
        if let Some(h) = &it.sha256 {
            c["hashes"] = json!([{"alg": "SHA-256", "content": h}]);
        }
        if let Some(l) = it.license.as_deref() {
            c["licenses"] = match spdx_expression(l) {
                Some(e) => json!([{"expression": e}]),
                None => json!([{"license": {"name": l}}]),
            };
        }
        if let Some(d) = &it.download {
            c["externalReferences"] = json!([{"type": "distribution", "url": d}]);
        }
        refs.push(it.purl.clone());
        components.push(c);
    }
    json!({
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "serialNumber": format!("urn:uuid:{}", uuid_of(&format!("envlayer-cyclonedx:{image}"))),
        "metadata": {
            "timestamp": timestamp(input.created),
            "tools": {"components": [{"type": "application", "name": "envlayer", "version": env!("CARGO_PKG_VERSION")}]},
            "component": {"type": "container", "bom-ref": "image", "name": input.name, "version": image,
                "hashes": [{"alg": "SHA-256", "content": input.image.hex()}]},
        },
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": refs}],
    })
}

/// Attaches the SBOM `bytes` (in `format`) to `image`, pushed to `repository` of `registry`, as an OCI
/// artifact whose subject is the image (see [`crate::referrers::attach`]).
pub async fn attach(
    registry: &crate::registry::Registry,
    repository: &str,
    image: &crate::image::Image,
    format: SbomFormat,
    bytes: &[u8],
) -> Result<crate::referrers::Attached, crate::registry::RegistryError> {
    let manifest: Value = serde_json::from_slice(&image.manifest).unwrap_or_default();
    let created = manifest["annotations"]["org.opencontainers.image.created"].as_str().map(timestamp).unwrap_or_else(|| timestamp(""));
    let title = format!("sbom{}", format.suffix());
    crate::referrers::attach(registry, repository, (&image.digest(), image.manifest.len()), format.media_type(), bytes, &title, &created).await
}

/// [`attach`], where a failure is a warning, not an error: the image is pushed already, and a registry
/// that refuses artifacts (or a referrers tag that is not an index) should not fail the push.
pub async fn attach_or_warn(
    registry: &crate::registry::Registry,
    repository: &str,
    image: &crate::image::Image,
    format: SbomFormat,
    bytes: &[u8],
) -> Option<crate::referrers::Attached> {
    match attach(registry, repository, image, format, bytes).await {
        Ok(a) => Some(a),
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            tracing::warn!("the SBOM of {repository}@{} was not attached: {msg} (the image is pushed; --sbom none skips the SBOM)", image.digest());
            None
        }
    }
}

/// The SBOM file beside a layout output: `<output><suffix>`.
pub fn beside(output: &std::path::Path, format: SbomFormat) -> std::path::PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(format.suffix());
    std::path::PathBuf::from(name)
}

/// Writes the SBOM beside a layout output (atomically). A file there that is not an SBOM envlayer
/// wrote is left as it is: the SBOM is then not written, and the reason returned.
pub fn write_beside(output: &std::path::Path, format: SbomFormat, bytes: &[u8]) -> Result<std::path::PathBuf, String> {
    let path = beside(output, format);
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        let ours = meta.is_file() && meta.len() < (64 << 20) && std::fs::read(&path).ok().and_then(|b| described_image(&b)).is_some();
        if !ours {
            return Err(format!("{} exists and is not an SBOM envlayer wrote: the SBOM was not written", path.display()));
        }
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new().prefix(".envlayer-sbom-").tempfile_in(dir)?;
        std::io::Write::write_all(&mut tmp, bytes)?;
        std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The image digest an SBOM made by [`render`] describes, if `bytes` is one.
pub fn described_image(bytes: &[u8]) -> Option<(SbomFormat, String)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    if v["spdxVersion"].is_string() {
        let ours = v["creationInfo"]["creators"].as_array()?.iter().any(|c| c.as_str().is_some_and(|c| c.starts_with("Tool: envlayer-")));
        if !ours {
            return None;
        }
        let img = v["packages"].as_array()?.iter().find(|p| p["SPDXID"] == "SPDXRef-image")?;
        return Some((SbomFormat::Spdx, img["versionInfo"].as_str()?.to_string()));
    }
    if v["bomFormat"] == "CycloneDX" {
        let ours = v["metadata"]["tools"]["components"].as_array()?.iter().any(|c| c["name"] == "envlayer");
        if !ours {
            return None;
        }
        return Some((SbomFormat::Cyclonedx, v["metadata"]["component"]["version"].as_str()?.to_string()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licenses_ids_and_uuids() {
        assert_eq!(spdx_expression("BSD-3-Clause").as_deref(), Some("BSD-3-Clause"));
        assert_eq!(spdx_expression("MIT AND Apache-2.0").as_deref(), Some("MIT AND Apache-2.0"));
        assert!(spdx_expression("Python Software Foundation License").is_none());
        assert!(spdx_expression("LicenseRef-x").is_none());
        assert!(spdx_expression("").is_none());
        let id = spdx_id("SPDXRef", "conda-_libgcc_mutex-0.1-main");
        assert!(id.starts_with("SPDXRef-conda--libgcc-mutex-0.1-main-") && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'), "{id}");
        let u = uuid_of("x");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "5");
        assert!("89ab".contains(&u[19..20]));
        assert_eq!(timestamp("2023-11-14T22:13:20.123456Z"), "2023-11-14T22:13:20Z");
        assert_eq!(purl_value("1!2.0+cpu"), "1%212.0%2Bcpu");
    }
}
