//! Reading a layer blob back: what its uncompressed tar is (digest, size, entries), to check a layer
//! that came from elsewhere against what it claims before it is trusted.

use crate::{Compression, Digest, HashingWriter};
use std::io::Read;
use std::path::Path;

/// What a layer blob's tar is: its digest (the diff_id), its size and how many entries it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarFacts {
    /// The digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Its size in bytes.
    pub tar_size: u64,
    /// How many entries it holds.
    pub entries: u64,
}

/// Decompresses the blob at `path` (`compression`: gzip of one or more members, or zstd of one or more
/// frames) and reads its tar headers. Nothing is written; memory stays bounded by the tar reader's buffer.
/// At most `limit` + 1 bytes are decompressed (the size the tar is expected to have): a blob that
/// inflates further is cut there, and its facts then differ from any expected ones.
pub fn tar_facts(path: &Path, compression: Compression, limit: u64) -> std::io::Result<TarFacts> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let raw: Box<dyn Read> = match compression {
        Compression::Gzip(_) => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd(_) => Box::new(zstd::stream::read::Decoder::new(file)?),
    };
    // Everything the tar reader consumes goes through the hash, then the rest (the end-of-archive
    // padding it does not read) is drained into it.
    let mut hashing = HashingReader { inner: raw.take(limit.saturating_add(1)), hash: HashingWriter::new(std::io::sink()) };
    let mut entries = 0u64;
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries()? {
            entry?;
            entries += 1;
        }
    }
    std::io::copy(&mut hashing.inner, &mut hashing.hash)?;
    let (_, diff_id, tar_size) = hashing.hash.finish();
    Ok(TarFacts { diff_id, tar_size, entries })
}

struct HashingReader<R> {
    inner: R,
    hash: HashingWriter<std::io::Sink>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(&mut self.hash, &buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pack_to_file, PackOptions, Source};

    #[test]
    fn tar_facts_agree_with_what_packing_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("lib/a/very-long-directory-name-to-need-a-long-name-header-in-the-tar-format/and-deeper")).unwrap();
        std::fs::write(root.join("lib/a/very-long-directory-name-to-need-a-long-name-header-in-the-tar-format/and-deeper/file-with-a-long-name.txt"), b"x").unwrap();
        std::fs::write(root.join("big"), vec![7u8; 3 << 20]).unwrap();
        std::os::unix::fs::symlink("big", root.join("link")).unwrap();
        for compression in [Compression::GZIP_DEFAULT, Compression::Zstd(3)] {
            let out = dir.path().join(format!("layer-{}", compression.id()));
            let opts = PackOptions { threads: 2, ..Default::default() };
            let (layer, _) = pack_to_file(&[Source::new(root.clone(), "opt/env")], &opts, compression, &out).unwrap();
            let facts = tar_facts(&out, compression, layer.tar_size).unwrap();
            assert_eq!(facts, TarFacts { diff_id: layer.diff_id.clone(), tar_size: layer.tar_size, entries: layer.entries });
            // Read with a smaller limit, the blob is cut: its facts are not the layer's.
            let cut = tar_facts(&out, compression, layer.tar_size / 2);
            assert!(cut.map_or(true, |f| f.diff_id != layer.diff_id && f.tar_size <= layer.tar_size / 2 + 1));
        }
    }
}
