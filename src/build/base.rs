//! Step 2, base: the image the environment goes on, from an OCI layout or a registry. For a local
//! output, a registry base's layers are downloaded into the cache (once); otherwise only its manifest
//! and config are read.

use super::{BuildError, BuildOptions};
use std::path::PathBuf;
use crate::cache::LayerCache;
use crate::image::BaseImage;

/// The image a build goes on top of.
#[derive(Debug, Clone)]
pub enum BaseRef {
    /// An OCI image layout directory, and the image's tag in it if it holds more than one.
    Layout {
        /// The directory.
        layout: PathBuf,
        /// The tag.
        tag: Option<String>,
    },
    /// An image in a registry.
    Registry(crate::registry::Reference),
    /// No base, on purpose (`--base scratch`): the image holds the environment only.
    Scratch,
}

impl std::fmt::Display for BaseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Layout { layout, tag: Some(t) } => write!(f, "{}:{t}", layout.display()),
            Self::Layout { layout, tag: None } => write!(f, "{}", layout.display()),
            Self::Registry(r) => write!(f, "{r}"),
            Self::Scratch => f.write_str("scratch"),
        }
    }
}

/// Reads the base named by the options, if any, for the platform `os_arch`.
pub async fn read(opts: &BuildOptions, os_arch: &(String, String, Option<String>)) -> Result<Option<BaseImage>, BuildError> {
    let base = read_any(opts, os_arch).await?;
    if let (Some(b), Some(named)) = (&base, &opts.base) {
        check_arch(b, named, opts, os_arch)?;
    }
    Ok(base)
}

/// A base must be for the platform's architecture: an amd64 base under `--platform linux-aarch64` would
/// give an image labelled arm64 whose base binaries cannot run there. (A base whose config names no
/// architecture is taken as it is.)
fn check_arch(base: &BaseImage, named: &BaseRef, opts: &BuildOptions, os_arch: &(String, String, Option<String>)) -> Result<(), BuildError> {
    let arch = base.config["architecture"].as_str().unwrap_or("");
    let variant = base.config["variant"].as_str();
    // A variant is compared only when both sides name one (arm64 bases often leave `v8` out).
    let variant_differs = matches!((variant, &os_arch.2), (Some(a), Some(b)) if a != b);
    if arch.is_empty() || (arch == os_arch.1 && !variant_differs) {
        return Ok(());
    }
    let with_variant = |a: &str, v: Option<&str>| v.map_or(a.to_string(), |v| format!("{a}/{v}"));
    Err(BuildError::BaseArch {
        base: crate::net::escape(&named.to_string()),
        base_arch: crate::net::escape(&with_variant(arch, variant)),
        platform: opts.platform.to_string(),
        want_arch: with_variant(&os_arch.1, os_arch.2.as_deref()),
    })
}

async fn read_any(opts: &BuildOptions, os_arch: &(String, String, Option<String>)) -> Result<Option<BaseImage>, BuildError> {
    Ok(match &opts.base {
        Some(BaseRef::Layout { layout, tag }) => Some(crate::image::read_oci_layout(layout, tag.as_deref())?),
        Some(BaseRef::Registry(reference)) => {
            let registry = crate::registry::connect(reference, &opts.registry.auth, &opts.registry.client).await?;
            let mut b = crate::registry::read_base(&registry, reference, &os_arch.0, &os_arch.1, os_arch.2.as_deref()).await?;
            if opts.output.is_some() || opts.fetch_base_layers {
                // A local layout must hold every blob: fetch the base's layers into the cache, once.
                let cache = LayerCache::new(opts.cache_dir.clone());
                for blob in &mut b.layers {
                    let path = cache.blob_path(&blob.digest);
                    if !path.is_file() {
                        let size = blob.descriptor["size"].as_u64().unwrap_or(0);
                        registry.download_blob(&reference.repository, &blob.digest, size, &path, &cache.tmp_dir()?).await?;
                    }
                    blob.path = path;
                }
            }
            Some(b)
        }
        Some(BaseRef::Scratch) | None => None,
    })
}
