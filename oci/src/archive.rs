//! Image archives: one tar file holding an OCI image layout (`oci-archive:`, as skopeo and podman read
//! it), and for `docker-archive:` also the `manifest.json` that `docker load` reads, pointing at the
//! same blobs (the layout Docker 25 itself saves). Deterministic: entries in a fixed order, mode 0644
//! (folders 0755), uid/gid 0, mtime 0. Written beside the target and renamed over it.

use crate::image::{canonical_json, ImageError, Image};
use envlayer_layers::Digest;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Which archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveKind {
    /// An OCI layout in a tar.
    Oci,
    /// The same, plus Docker's `manifest.json`, with `RepoTags` naming `reference` (default: the
    /// image's name).
    Docker {
        /// `name:tag` for `docker load` to tag the image with.
        reference: Option<String>,
    },
}

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive's path holds something that is not an image archive.
    #[error("refusing to write the archive to {path}: {reason}")]
    Refused {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A blob or the tar could not be read or written.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Writing failed.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { path: path.to_path_buf(), source }
}

/// Whether `path` may be written: nothing there, or a regular file that is a tar whose first entry is
/// `oci-layout` (an image archive, which is replaced, as `docker save -o` does).
pub fn check(path: &Path) -> Result<(), ArchiveError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    let refuse = |reason: &str| Err(ArchiveError::Refused { path: path.to_path_buf(), reason: reason.into() });
    if !meta.is_file() {
        return refuse("it exists and is not a regular file");
    }
    let first = std::fs::File::open(path).ok().and_then(|f| {
        let mut a = tar::Archive::new(f);
        let mut entries = a.entries().ok()?;
        let e = entries.next()?.ok()?;
        let name = e.path().ok()?.to_string_lossy().into_owned();
        Some(name)
    });
    if first.as_deref() == Some("oci-layout") {
        Ok(())
    } else {
        refuse("it exists and is not an image archive (a tar starting with oci-layout); choose another path")
    }
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(kind);
    h
}

/// Writes `image` as an archive of `kind` at `path`, tagged `tag` in its index and named `name`
/// (`env:tag`, what podman and docker load it as, unless the docker archive names another). Every blob
/// not written by this build is checked against its digest first. zstd layers are refused in a docker
/// archive.
pub fn write(image: &Image, path: &Path, tag: &str, name: &str, kind: &ArchiveKind) -> Result<(), ArchiveError> {
    check(path)?;
    if matches!(kind, ArchiveKind::Docker { .. }) {
        if let Some(z) = image.layers.iter().find(|l| l.descriptor["mediaType"].as_str().is_some_and(|t| t.ends_with("+zstd"))) {
            return Err(ArchiveError::Refused {
                path: path.to_path_buf(),
                reason: format!("layer {} is zstd-compressed, which docker load and containerd's importer do not read from a docker archive: build with --compression gzip, or write -o oci-archive:FILE", z.digest),
            });
        }
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = tempfile::Builder::new().prefix(".envlayer-archive-").tempfile_in(dir).map_err(io_err(dir))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp.as_file()));
    let mut add = |name: &str, data: &[u8]| tar.append_data(&mut header(data.len() as u64, 0o644, tar::EntryType::Regular), name, data);
    let full = match kind {
        ArchiveKind::Docker { reference: Some(r) } => r.as_str(),
        _ => name,
    };
    let annotations = json!({"org.opencontainers.image.ref.name": tag, "io.containerd.image.name": full});
    let index = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.digest().to_string(), "size": image.manifest.len(), "annotations": annotations}],
    }));
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    (|| -> std::io::Result<()> {
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add("index.json", &index)?;
        if let ArchiveKind::Docker { .. } = kind {
            let manifest = canonical_json(&json!([{
                "Config": blob(&image.config_digest()),
                "RepoTags": [full],
                "Layers": image.layers.iter().map(|l| blob(&l.digest)).collect::<Vec<_>>(),
            }]));
            add("manifest.json", &manifest)?;
        }
        Ok(())
    })()
    .map_err(io_err(path))?;
    for folder in ["blobs/", "blobs/sha256/"] {
        tar.append_data(&mut header(0, 0o755, tar::EntryType::Directory), folder, std::io::empty()).map_err(io_err(path))?;
    }
    // Blobs in digest order, each once: the config and manifest from memory, layers from their files.
    enum Source<'a> {
        Bytes(&'a [u8]),
        Layer(&'a crate::image::Blob),
    }
    let mut blobs: std::collections::BTreeMap<String, Source<'_>> = std::collections::BTreeMap::new();
    for l in &image.layers {
        blobs.entry(l.digest.hex()).or_insert(Source::Layer(l));
    }
    blobs.insert(image.config_digest().hex(), Source::Bytes(&image.config));
    blobs.insert(image.digest().hex(), Source::Bytes(&image.manifest));
    for (hex, source) in blobs {
        let name = format!("blobs/sha256/{hex}");
        match source {
            Source::Bytes(b) => tar.append_data(&mut header(b.len() as u64, 0o644, tar::EntryType::Regular), &name, b).map_err(io_err(path))?,
            Source::Layer(l) => {
                let (digest, len) = crate::files::digest_file(&l.path).map_err(io_err(&l.path))?;
                if digest != l.digest {
                    return Err(ImageError::from(crate::files::BlobError::Corrupt { path: l.path.clone(), expected: l.digest.clone(), actual: digest }).into());
                }
                let f = std::fs::File::open(&l.path).map_err(io_err(&l.path))?;
                tar.append_data(&mut header(len, 0o644, tar::EntryType::Regular), &name, f).map_err(io_err(path))?;
            }
        }
    }
    tar.into_inner().and_then(|w| w.into_inner().map_err(|e| e.into_error())).map_err(io_err(path))?;
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| ArchiveError::Io { path: path.to_path_buf(), source: e.error })?;
    Ok(())
}
