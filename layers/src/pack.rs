//! A reproducible tar of directory trees, written through a compressor with both digests computed on the
//! way (the uncompressed `diff_id` and the compressed blob `digest`), so each file is read exactly once.

use crate::{Compression, Digest, HashingWriter};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// What goes into a layer: the tree under `root`, placed at `dest` inside the image (a relative path such
/// as `opt/conda/envs/demo`; its parent directories are added to the tar too).
#[derive(Debug, Clone)]
pub struct Source {
    /// A directory on disk.
    pub root: PathBuf,
    /// Where its contents go in the image, relative to `/`, with `/` separators.
    pub dest: String,
    /// Files and symlinks under `root` (relative paths) to leave out, e.g. paths another source wins.
    pub exclude: std::collections::BTreeSet<String>,
}

impl Source {
    /// The whole tree under `root`, placed at `dest`.
    pub fn new(root: impl Into<PathBuf>, dest: impl Into<String>) -> Self {
        Self { root: root.into(), dest: dest.into(), exclude: Default::default() }
    }
}

/// Settings that decide the tar bytes, beyond the files themselves.
#[derive(Debug, Clone, Copy)]
pub struct PackOptions {
    /// The mtime of every entry (seconds since the epoch).
    pub mtime: u64,
    /// Worker threads for the compressor (zstd); it does not change the output.
    pub threads: u32,
}

impl Default for PackOptions {
    fn default() -> Self {
        // 1970-01-01T00:00:01, as nix2container does: some tools treat 0 as "unset".
        Self { mtime: 1, threads: 1 }
    }
}

/// The kind of one tar entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file with its content at `src`.
    File {
        /// The file on disk to copy into the tar.
        src: PathBuf,
        /// Its size when it was listed.
        size: u64,
    },
    /// A symbolic link to `target`, kept as it is.
    Symlink {
        /// The link's target.
        target: String,
    },
}

/// One entry of the tar: its path in the image (relative, no trailing slash), kind and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The kind and content.
    pub kind: EntryKind,
    /// Permission bits (`0o755` style; setuid, setgid and sticky bits are never kept).
    pub mode: u32,
}

/// A packed, compressed layer: the facts an image needs about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layer {
    /// The digest of the compressed blob.
    pub digest: Digest,
    /// The digest of the uncompressed tar (the image config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// The size of the compressed blob in bytes.
    pub size: u64,
    /// The size of the uncompressed tar in bytes.
    pub tar_size: u64,
    /// How the tar was compressed.
    pub compression: Compression,
    /// How many entries the tar holds.
    pub entries: u64,
}

impl Layer {
    /// The OCI media type of the blob.
    pub fn media_type(&self) -> &'static str {
        self.compression.media_type()
    }
}

/// Why a layer could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// A file or directory could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path on disk.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The output could not be written.
    #[error("cannot write layer {path}")]
    Write {
        /// The output path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A path that is not UTF-8, or that has `..`, or that is absolute.
    #[error("unsupported path {0:?} (not UTF-8, absolute, or with '..')")]
    BadPath(PathBuf),
    /// Something that is neither a file, a directory nor a symlink (a device, a fifo, a socket).
    #[error("{0} is not a regular file, directory or symlink")]
    SpecialFile(PathBuf),
    /// The same path is a directory in one source and not in another.
    #[error("{path} is a directory in one source and a file or symlink in another")]
    KindConflict {
        /// The path in the image.
        path: String,
    },
    /// A file changed size while it was being packed.
    #[error("{0} changed while it was being packed")]
    Changed(PathBuf),
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> PackError + '_ {
    move |source| PackError::Read { path: path.to_path_buf(), source }
}

fn check_rel(dest: &str) -> Result<(), PackError> {
    if dest.starts_with('/') || dest.split('/').any(|c| c == ".." || c == ".") {
        return Err(PackError::BadPath(PathBuf::from(dest)));
    }
    Ok(())
}

/// Lists the entries of all `sources`, sorted by path, with every parent directory present. Where two
/// sources hold the same file path, the later source wins (conda's rule for clobbered paths, when sources
/// are given in install order); the paths that were overridden are returned too.
pub fn collect_entries(sources: &[Source]) -> Result<(BTreeMap<String, TarEntry>, Vec<String>), PackError> {
    let mut entries = BTreeMap::new();
    let mut clobbered = Vec::new();
    for source in sources {
        let dest = source.dest.trim_matches('/');
        check_rel(dest)?;
        let mut prefix = String::new();
        for comp in dest.split('/').filter(|c| !c.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            insert(&mut entries, &mut clobbered, prefix.clone(), TarEntry { kind: EntryKind::Dir, mode: 0o755 })?;
        }
        walk(&source.root, &source.root, dest, &source.exclude, &mut entries, &mut clobbered)?;
    }
    Ok((entries, clobbered))
}

fn insert(
    entries: &mut BTreeMap<String, TarEntry>,
    clobbered: &mut Vec<String>,
    path: String,
    entry: TarEntry,
) -> Result<(), PackError> {
    match entries.get(&path) {
        Some(old) if old.kind == EntryKind::Dir && entry.kind == EntryKind::Dir => Ok(()),
        Some(old) if (old.kind == EntryKind::Dir) != (entry.kind == EntryKind::Dir) => {
            Err(PackError::KindConflict { path })
        }
        Some(_) => {
            clobbered.push(path.clone());
            entries.insert(path, entry);
            Ok(())
        }
        None => {
            entries.insert(path, entry);
            Ok(())
        }
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    dest: &str,
    exclude: &std::collections::BTreeSet<String>,
    entries: &mut BTreeMap<String, TarEntry>,
    clobbered: &mut Vec<String>,
) -> Result<(), PackError> {
    use std::os::unix::fs::PermissionsExt;
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err(dir))?
        .collect::<Result<_, _>>()
        .map_err(read_err(dir))?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        let rel = path.strip_prefix(root).map_err(|_| PackError::BadPath(path.clone()))?;
        let rel = rel.to_str().ok_or_else(|| PackError::BadPath(path.clone()))?;
        let name = if dest.is_empty() { rel.to_string() } else { format!("{dest}/{rel}") };
        if exclude.contains(rel) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).map_err(read_err(&path))?;
        let ft = meta.file_type();
        // Only permission bits travel; setuid/setgid/sticky never do, and group/other write bits follow
        // the umask of the machine that installed the files, so they are dropped to keep bytes stable.
        let mode = meta.permissions().mode() & 0o755;
        if ft.is_dir() {
            insert(entries, clobbered, name, TarEntry { kind: EntryKind::Dir, mode: 0o755 })?;
            walk(root, &path, dest, exclude, entries, clobbered)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(read_err(&path))?;
            let target = target.to_str().ok_or_else(|| PackError::BadPath(target.clone()))?.to_string();
            insert(entries, clobbered, name, TarEntry { kind: EntryKind::Symlink { target }, mode: 0o777 })?;
        } else if ft.is_file() {
            let kind = EntryKind::File { src: path.clone(), size: meta.len() };
            insert(entries, clobbered, name, TarEntry { kind, mode: mode | 0o400 })?;
        } else {
            return Err(PackError::SpecialFile(path));
        }
    }
    Ok(())
}

/// Writes `entries` as a tar stream to `w`: GNU headers, root owner with no names, the given mtime.
pub fn write_tar<W: Write>(entries: &BTreeMap<String, TarEntry>, opts: &PackOptions, w: W) -> Result<W, PackError> {
    let wr = |source| PackError::Write { path: PathBuf::from("<tar stream>"), source };
    let mut builder = tar::Builder::new(w);
    for (path, entry) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(opts.mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(entry.mode);
        match &entry.kind {
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, format!("{path}/"), io::empty()).map_err(wr)?;
            }
            EntryKind::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, target).map_err(wr)?;
            }
            EntryKind::File { src, size } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(*size);
                let file = File::open(src).map_err(read_err(src))?;
                let mut reader = CountingReader { inner: file.take(*size), n: 0 };
                builder.append_data(&mut header, path, &mut reader).map_err(wr)?;
                if reader.n != *size {
                    return Err(PackError::Changed(src.clone()));
                }
            }
        }
    }
    builder.into_inner().map_err(wr)
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}
impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Packs `sources` (see [`collect_entries`]) into a compressed layer at `out`, computing both digests while
/// writing. The caller decides where `out` lives and renames it into place.
pub fn pack_to_file(
    sources: &[Source],
    opts: &PackOptions,
    compression: Compression,
    out: &Path,
) -> Result<(Layer, Vec<String>), PackError> {
    let (entries, clobbered) = collect_entries(sources)?;
    Ok((pack_entries(&entries, opts, compression, out)?, clobbered))
}

/// Packs `entries` into a compressed layer at `out`, computing both digests while writing.
pub fn pack_entries(entries: &BTreeMap<String, TarEntry>, opts: &PackOptions, compression: Compression, out: &Path) -> Result<Layer, PackError> {
    let wr = |source| PackError::Write { path: out.to_path_buf(), source };
    let file = File::create(out).map_err(wr)?;
    let blob = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let encoder = compression.encoder(blob, opts.threads).map_err(wr)?;
    let tar = HashingWriter::new(encoder);
    let tar = write_tar(entries, opts, tar).map_err(|e| match e {
        PackError::Write { source, .. } => wr(source),
        other => other,
    })?;
    let (encoder, diff_id, tar_size) = tar.finish();
    let blob = encoder.finish().map_err(wr)?;
    let (mut buf, digest, size) = blob.finish();
    buf.flush().map_err(wr)?;
    buf.into_inner().map_err(|e| wr(e.into_error()))?.sync_all().map_err(wr)?;
    Ok(Layer { digest, diff_id, size, tar_size, compression, entries: entries.len() as u64 })
}
