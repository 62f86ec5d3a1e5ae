//! Layer compression: gzip (flate2 with the zlib-rs backend) or zstd.

use std::io::{self, Write};

/// How a layer's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "codec", content = "level")]
pub enum Compression {
    /// gzip at the given level (0-9).
    Gzip(u32),
    /// zstd at the given level (1-22).
    Zstd(i32),
}

impl Compression {
    /// gzip at level 6, the usual default of `gzip` and Docker.
    pub const GZIP_DEFAULT: Compression = Compression::Gzip(6);
    /// zstd at level 3, zstd's own default.
    pub const ZSTD_DEFAULT: Compression = Compression::Zstd(3);

    /// The OCI media type of a layer compressed this way.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::Gzip(_) => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd(_) => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// A short stable name such as `gzip-6`, used in cache keys.
    pub fn id(&self) -> String {
        match self {
            Compression::Gzip(l) => format!("gzip-{l}"),
            Compression::Zstd(l) => format!("zstd-{l}"),
        }
    }

    /// Wraps `w` in an encoder. Both codecs use `threads` threads, and neither's output depends on how
    /// many: gzip is compressed in fixed blocks (see `pgzip`), and zstd's multithreaded encoder gives
    /// the same bytes for any number of workers. So the bytes are the same on every machine.
    pub(crate) fn encoder<'a, W: Write + 'a>(&self, w: W, threads: u32) -> io::Result<Encoder<'a, W>> {
        Ok(match *self {
            Compression::Gzip(level) => Encoder::Gzip(crate::pgzip::ParallelGz::new(w, level, threads as usize)?),
            Compression::Zstd(level) => {
                let mut e = zstd::stream::write::Encoder::new(w, level)?;
                e.multithread(threads.max(1))?;
                e.include_checksum(false)?;
                Encoder::Zstd(e)
            }
        })
    }
}

/// A running compressor; call [`Encoder::finish`] to flush it and get the inner writer back.
pub(crate) enum Encoder<'a, W: Write> {
    Gzip(crate::pgzip::ParallelGz<W>),
    Zstd(zstd::stream::write::Encoder<'a, W>),
}

impl<W: Write> Encoder<'_, W> {
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => Write::flush(e),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}
