//! Reading files that someone else may have written (layouts, channels, caches): regular files only,
//! never through a symbolic link; content-addressed blobs checked against their digest.

use envlayer_layers::Digest;
use std::path::{Path, PathBuf};

/// A blob file that could not be read or copied, or whose content does not have its digest.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Reading or writing failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The content does not match the digest.
    #[error("blob {path} is corrupt: expected {expected}, found {actual}")]
    Corrupt {
        /// The blob.
        path: PathBuf,
        /// Its name.
        expected: Digest,
        /// Its content's digest.
        actual: Digest,
    },
}

/// Opens a file for reading without following a symbolic link, and only if it is a regular file.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32).open(path).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            std::io::Error::other("it is a symbolic link; envlayer reads blobs and packages only from regular files")
        } else {
            e
        }
    })?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// The sha256 and length of a file.
pub fn digest_file(path: &Path) -> std::io::Result<(Digest, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut w = envlayer_layers::HashingWriter::new(std::io::sink());
    std::io::copy(&mut file, &mut w)?;
    let (_, digest, len) = w.finish();
    Ok((digest, len))
}

/// Copies `src` to `dest` (hard link when possible) after checking that its content has `digest`.
pub fn copy_verified(src: &Path, digest: &Digest, dest: &Path) -> Result<(), BlobError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BlobError::Io { path, source }
    };
    let (actual, _) = digest_file(src).map_err(io(src))?;
    if &actual != digest {
        return Err(BlobError::Corrupt { path: src.to_path_buf(), expected: digest.clone(), actual });
    }
    if dest.exists() {
        return Ok(());
    }
    if std::fs::hard_link(src, dest).is_err() {
        std::fs::copy(src, dest).map_err(io(dest))?;
    }
    Ok(())
}
