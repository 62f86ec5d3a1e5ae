//! The last stage of a local build: the image written into an OCI image layout, and its lock beside it,
//! together or not at all.
//!
//! envlayer never replaces a folder. A new output is written in a scratch folder beside it and renamed
//! into place; an existing OCI layout gets the image added under its tag (any image already under that
//! tag is replaced, every other image is kept, as skopeo and umoci do). A folder that holds anything
//! but an OCI layout, the current folder or one of its parents, `/` and `$HOME` are refused.

use crate::image::{canonical_json, Image};
use crate::scratch::Scratch;
use envlayer_layers::Digest;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The largest `index.json` or manifest envlayer reads from a layout (containerd's limit for manifests).
pub const MAX_JSON_BYTES: u64 = 4 << 20;

/// Why the output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output (or its lock path) is something envlayer must not overwrite.
    #[error("refusing to write the image to {path}: {reason}")]
    Refused {
        /// The output or lock path.
        path: PathBuf,
        /// Why, and what to do instead.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A blob failed its digest check.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io { path: path.to_path_buf(), source }
}

/// What a tool owns in an output: the images it wrote carry `manifest_annotation`, and a file at the
/// lock path is its own when `is_own_lock` says so. Only what it owns is ever replaced or removed.
#[derive(Clone, Copy)]
pub struct Ownership<'a> {
    /// The manifest annotation every image the tool writes carries.
    pub manifest_annotation: &'a str,
    /// Whether the file at the lock path is one the tool wrote.
    pub is_own_lock: &'a dyn Fn(&Path) -> bool,
}

impl std::fmt::Debug for Ownership<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership").field("manifest_annotation", &self.manifest_annotation).finish_non_exhaustive()
    }
}

/// `<output>.lock`: where the lock of the image written to `output` goes.
pub fn lock_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    output.with_file_name(name)
}

/// What is at the output path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// Nothing, or an empty folder.
    Nothing,
    /// An OCI image layout (and nothing else).
    Layout,
}

/// Checks, before any work, that the image may be written to `output` and its lock to `<output>.lock`.
pub fn check(output: &Path, own: Ownership<'_>) -> Result<(), OutputError> {
    inspect(output)?;
    check_lock_path(&lock_path(output), own)
}

fn refuse(path: &Path, reason: impl Into<String>) -> OutputError {
    OutputError::Refused { path: path.to_path_buf(), reason: reason.into() }
}

fn inspect(output: &Path) -> Result<Existing, OutputError> {
    let meta = match std::fs::symlink_metadata(output) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return check_place(output).map(|()| Existing::Nothing),
        Err(e) => return Err(OutputError::Io { path: output.to_path_buf(), source: e }),
        Ok(m) => m,
    };
    if meta.file_type().is_symlink() {
        return Err(refuse(output, "it is a symbolic link; name the folder itself"));
    }
    if !meta.is_dir() {
        return Err(refuse(output, "it exists and is not a folder; choose a new path for the OCI layout"));
    }
    check_place(output)?;
    let mut unexpected = Vec::new();
    let mut entries = 0;
    for entry in std::fs::read_dir(output).map_err(io_err(output))? {
        let entry = entry.map_err(io_err(output))?;
        entries += 1;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ty = entry.file_type().map_err(io_err(output))?;
        let ok = match name.as_str() {
            "oci-layout" | "index.json" => ty.is_file(),
            "blobs" => ty.is_dir() && blobs_are_plain(&entry.path())?,
            _ => false,
        };
        if !ok {
            unexpected.push(name);
        }
    }
    if entries == 0 {
        return Ok(Existing::Nothing);
    }
    if !unexpected.is_empty() {
        unexpected.sort();
        let shown: Vec<String> = unexpected.iter().take(3).map(|n| format!("{n:?}")).collect();
        return Err(refuse(
            output,
            format!(
                "it holds {}{}, which is not part of an OCI image layout; choose a new or empty folder (envlayer only adds images to OCI layouts)",
                shown.join(", "),
                if unexpected.len() > 3 { format!(" and {} more", unexpected.len() - 3) } else { String::new() }
            ),
        ));
    }
    let layout: Value = read_json(&output.join("oci-layout")).map_err(|_| refuse(output, "its oci-layout file is not an OCI layout marker"))?;
    if layout["imageLayoutVersion"].as_str().is_none() || !output.join("index.json").is_file() {
        return Err(refuse(output, "it is not a complete OCI image layout (oci-layout and index.json)"));
    }
    Ok(Existing::Layout)
}

/// The current folder, its parents, `/` and `$HOME` are never an output, whatever they hold.
fn check_place(output: &Path) -> Result<(), OutputError> {
    let real = match output.canonicalize() {
        Ok(p) => p,
        // Not there yet: judge it by its parent (which must not be a file).
        Err(_) => match std::path::absolute(output) {
            Ok(p) => p,
            Err(e) => return Err(OutputError::Io { path: output.to_path_buf(), source: e }),
        },
    };
    if real.parent().is_none() {
        return Err(refuse(output, "it is the root folder"));
    }
    if let Ok(cwd) = std::env::current_dir().and_then(|c| c.canonicalize()) {
        if cwd.starts_with(&real) {
            return Err(refuse(output, "it is the current folder or one of its parents; name a new folder such as ./env.oci"));
        }
    }
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from).and_then(|h| h.canonicalize().ok()) {
        if home == real {
            return Err(refuse(output, "it is the home folder; name a new folder such as ~/env.oci"));
        }
    }
    Ok(())
}

/// Whether `blobs/` holds only `<algorithm>/<hex>` regular files.
fn blobs_are_plain(blobs: &Path) -> Result<bool, OutputError> {
    for algo in std::fs::read_dir(blobs).map_err(io_err(blobs))? {
        let algo = algo.map_err(io_err(blobs))?;
        if !algo.file_type().map_err(io_err(blobs))?.is_dir() {
            return Ok(false);
        }
        for blob in std::fs::read_dir(algo.path()).map_err(io_err(blobs))? {
            let blob = blob.map_err(io_err(blobs))?;
            let name = blob.file_name().to_string_lossy().into_owned();
            let hex = !name.is_empty() && name.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
            if !hex || !blob.file_type().map_err(io_err(blobs))?.is_file() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The lock path may be replaced only if it is absent or an earlier lock (`own.is_own_lock`).
fn check_lock_path(lock: &Path, own: Ownership<'_>) -> Result<(), OutputError> {
    let meta = match std::fs::symlink_metadata(lock) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(OutputError::Io { path: lock.to_path_buf(), source: e }),
        Ok(m) => m,
    };
    let why = "it exists and is not a lock file envlayer wrote; move it away or choose another -o";
    if !meta.is_file() || meta.len() > 64 << 20 {
        return Err(refuse(lock, why));
    }
    if (own.is_own_lock)(lock) {
        Ok(())
    } else {
        Err(refuse(lock, why))
    }
}

fn read_json(path: &Path) -> std::io::Result<Value> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_file() || meta.len() > MAX_JSON_BYTES {
        return Err(std::io::Error::other(format!("not a regular file of at most {MAX_JSON_BYTES} bytes")));
    }
    serde_json::from_slice(&std::fs::read(path)?).map_err(std::io::Error::other)
}

/// Writes `image` into the OCI layout at `output` under `tag`, and `lock_text` to `<output>.lock`.
/// Either both are in place afterwards, or neither changed.
pub fn write(image: &Image, output: &Path, tag: &str, lock_text: &str, own: Ownership<'_>) -> Result<(), OutputError> {
    let lock = lock_path(output);
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let scratch = Scratch::claim(parent, ".envlayer-out-").map_err(io_err(parent))?;
    let mut existing = inspect(output)?;
    // Another envlayer adding to the same layout waits here: a layout has one writer at a time.
    let _writer = match existing {
        Existing::Layout => {
            let marker = output.join("oci-layout");
            let f = File::open(&marker).map_err(io_err(&marker))?;
            f.lock().map_err(io_err(&marker))?;
            existing = inspect(output)?;
            Some(f)
        }
        Existing::Nothing => None,
    };
    check_lock_path(&lock, own)?;
    let lock_tmp = scratch.path().join("lock");
    std::fs::write(&lock_tmp, lock_text).map_err(io_err(&lock_tmp))?;
    match existing {
        Existing::Nothing => {
            let layout = scratch.path().join("layout");
            crate::image::write_oci_layout(image, &layout, tag)?;
            if output.is_dir() {
                // An empty folder: remove_dir refuses anything else, so nothing of the user's is lost.
                std::fs::remove_dir(output).map_err(io_err(output))?;
            }
            std::fs::rename(&layout, output).map_err(io_err(output))?;
            if let Err(e) = std::fs::rename(&lock_tmp, &lock) {
                let _ = std::fs::rename(output, &layout);
                return Err(OutputError::Io { path: lock, source: e });
            }
            Ok(())
        }
        Existing::Layout => add_to_layout(image, output, tag, &scratch, (&lock_tmp, &lock), own),
    }
}

fn add_to_layout(image: &Image, output: &Path, tag: &str, scratch: &Scratch, (lock_tmp, lock): (&Path, &Path), own: Ownership<'_>) -> Result<(), OutputError> {
    let index_path = output.join("index.json");
    let mut index = read_json(&index_path).map_err(|e| refuse(output, format!("its index.json cannot be read: {e}")))?;
    let Some(entries) = index["manifests"].as_array().cloned() else {
        return Err(refuse(output, "its index.json has no manifests list"));
    };
    let blobs = output.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    // Blobs first (content-addressed: adding one never changes an image), through the scratch folder.
    let staged = scratch.path().join("blob");
    let put = |digest: &Digest, source: Option<(&Path, bool)>, bytes: Option<&[u8]>| -> Result<(), OutputError> {
        let dest = blobs.join(digest.hex());
        if crate::files::digest_file(&dest).is_ok_and(|(d, _)| &d == digest) {
            return Ok(());
        }
        match (source, bytes) {
            (Some((path, true)), _) => {
                if std::fs::hard_link(path, &staged).is_err() {
                    std::fs::copy(path, &staged).map_err(io_err(&staged))?;
                }
            }
            (Some((path, false)), _) => crate::files::copy_verified(path, digest, &staged).map_err(crate::image::ImageError::from)?,
            (None, Some(b)) => std::fs::write(&staged, b).map_err(io_err(&staged))?,
            (None, None) => return Ok(()),
        }
        std::fs::rename(&staged, &dest).map_err(io_err(&dest))
    };
    for blob in &image.layers {
        put(&blob.digest, Some((&blob.path, blob.verified)), None)?;
    }
    put(&image.config_digest(), None, Some(&image.config))?;
    put(&image.digest(), None, Some(&image.manifest))?;

    let is_tag = |e: &Value| e["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag);
    let replaced: Vec<Value> = entries.iter().filter(|e| is_tag(e)).cloned().collect();
    let mut kept: Vec<Value> = entries.into_iter().filter(|e| !is_tag(e)).collect();
    kept.push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image.digest().to_string(),
        "size": image.manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    index["manifests"] = Value::Array(kept.clone());
    let new_index = scratch.path().join("index.json");
    std::fs::write(&new_index, canonical_json(&index)).map_err(io_err(&new_index))?;
    let old_index = scratch.path().join("index.old");
    std::fs::hard_link(&index_path, &old_index).map_err(io_err(&index_path))?;
    std::fs::rename(&new_index, &index_path).map_err(io_err(&index_path))?;
    if let Err(e) = std::fs::rename(lock_tmp, lock) {
        let _ = std::fs::rename(&old_index, &index_path);
        return Err(OutputError::Io { path: lock.to_path_buf(), source: e });
    }
    collect_garbage(output, &replaced, &kept, own);
    Ok(())
}

/// The blobs of the images a tag pointed to before, when envlayer wrote those images, that no image
/// left in the layout uses. Blobs of images envlayer did not write are never removed.
fn collect_garbage(output: &Path, replaced: &[Value], kept: &[Value], own: Ownership<'_>) {
    let blob = |d: &str| d.parse::<Digest>().ok().map(|d| output.join("blobs").join("sha256").join(d.hex()));
    let blobs_of = |entry: &Value| -> Option<(bool, BTreeSet<PathBuf>)> {
        if entry["mediaType"].as_str() != Some("application/vnd.oci.image.manifest.v1+json") {
            return None;
        }
        let path = blob(entry["digest"].as_str()?)?;
        let manifest = read_json(&path).ok()?;
        let ours = manifest["annotations"][own.manifest_annotation].is_string();
        let mut set = BTreeSet::from([path]);
        set.insert(blob(manifest["config"]["digest"].as_str()?)?);
        for l in manifest["layers"].as_array()? {
            set.insert(blob(l["digest"].as_str()?)?);
        }
        Some((ours, set))
    };
    let mut in_use = BTreeSet::new();
    for e in kept {
        // An entry we cannot follow (a nested index, a missing manifest): keep every blob.
        let Some((_, set)) = blobs_of(e) else { return };
        in_use.extend(set);
    }
    for e in replaced {
        if let Some((true, set)) = blobs_of(e) {
            for path in set.difference(&in_use) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
