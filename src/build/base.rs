//! Step 2, base: the image the environment goes on, from an OCI layout or a registry. For a local
//! output, a registry base's layers are downloaded into the cache (once); otherwise only its manifest
//! and config are read.

use super::{BaseRef, BuildError, BuildOptions};
use crate::cache::LayerCache;
use crate::image::BaseImage;

/// Reads the base named by the options, if any, for the platform `os_arch`.
pub async fn read(opts: &BuildOptions, os_arch: &(String, String, Option<String>)) -> Result<Option<BaseImage>, BuildError> {
    Ok(match &opts.base {
        Some(BaseRef::Layout { layout, tag }) => Some(crate::image::read_oci_layout(layout, tag.as_deref())?),
        Some(BaseRef::Registry(reference)) => {
            let registry = crate::registry::connect(reference, &opts.registry.auth, &opts.registry.client).await?;
            let mut b = crate::registry::read_base(&registry, reference, &os_arch.0, &os_arch.1).await?;
            if opts.output.is_some() {
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
        None => None,
    })
}
