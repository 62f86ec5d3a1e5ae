//! Downloading a layer blob to disk: streamed, capped at its size, checked against its digest.

use super::{Registry, RegistryError};
use crate::net;
use envlayer_layers::Digest;
use std::path::Path;

impl Registry {
    /// Downloads a blob of `size` bytes to `dest` through a temporary file in `tmp_dir` (on the same file
    /// system), checking its digest; stops as soon as the registry sends more than `size` bytes, and never
    /// leaves a partial file at `dest`.
    pub async fn download_blob(&self, repository: &str, digest: &Digest, size: u64, dest: &Path, tmp_dir: &Path) -> Result<(), RegistryError> {
        use futures::StreamExt;
        use std::io::Write;
        let (what, resp) = self.get_blob(repository, digest).await?;
        if resp.content_length().is_some_and(|n| n > size) {
            return Err(RegistryError::TooLarge { registry: self.host.clone(), what, cap: size });
        }
        let io = |source| RegistryError::Io { path: dest.to_path_buf(), source };
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = tempfile::NamedTempFile::new_in(tmp_dir).map_err(io)?;
        let mut w = envlayer_layers::HashingWriter::new(std::io::BufWriter::new(tmp));
        let mut body = resp.bytes_stream();
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.read_error(&what, net::ReadError::Transport(e)))?;
            received += chunk.len() as u64;
            if received > size {
                return Err(RegistryError::TooLarge { registry: self.host.clone(), what, cap: size });
            }
            w.write_all(&chunk).map_err(io)?;
        }
        let (buf, actual, _) = w.finish();
        let tmp = buf.into_inner().map_err(|e| io(e.into_error()))?;
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                subject: format!("{}: blob {digest} from {repository}", self.host),
                expected: digest.clone(),
                actual,
            });
        }
        tmp.persist(dest).map_err(|e| io(e.error))?;
        Ok(())
    }
}
