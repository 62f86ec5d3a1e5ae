//! A wheel installed alone into its own stage, for the prefix the image will have: the binary
//! distribution format (PEP 427 and its successors on packaging.python.org) applied to one `.whl`.
//!
//! Written here rather than taken from uv: `uv-install-wheel` asks for a whole interpreter layout and
//! pulls most of uv's crates with it; what envlayer needs is the format itself, for a target python that
//! need not run on this machine. Every name in the archive is data: each one is checked before it becomes
//! a path, links are refused, and the bytes of each file are checked against the wheel's `RECORD`.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use super::wheel_meta::{entry_points, header, parse_record, safe_relative};

/// The largest wheel, unpacked, envlayer installs (a CUDA wheel is a few GiB).
pub const MAX_UNPACKED_BYTES: u64 = 16 << 30;
/// The most files a wheel may hold.
pub const MAX_FILES: usize = 200_000;
/// The longest shebang the Linux kernel reads; longer ones (and ones with spaces) get a `/bin/sh` trampoline.
const MAX_SHEBANG: usize = 127;

/// Where a wheel's schemes go, relative to the environment's prefix (a conda-style prefix install).
#[derive(Debug, Clone)]
pub struct Scheme {
    /// The prefix in the image, e.g. `/opt/conda/envs/demo`.
    pub prefix: String,
    /// `lib/python3.11/site-packages`: purelib and platlib.
    pub site_packages: String,
    /// `bin/python3.11`: the interpreter scripts run with.
    pub python: String,
    /// `include/python3.11`: headers go in `<include>/<distribution>`.
    pub include: String,
}

impl Scheme {
    /// The scheme of a CPython `major.minor` installed at `prefix`.
    pub fn for_python(prefix: &str, major: u64, minor: u64) -> Self {
        Self {
            prefix: prefix.to_string(),
            site_packages: format!("lib/python{major}.{minor}/site-packages"),
            python: format!("bin/python{major}.{minor}"),
            include: format!("include/python{major}.{minor}"),
        }
    }
}

/// What installing a wheel produced.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InstalledWheel {
    /// Every path it installs, relative to the prefix, sorted.
    pub paths: Vec<String>,
    /// Its console and GUI scripts (`bin/NAME`).
    pub scripts: Vec<String>,
}

/// Why a wheel could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum WheelError {
    /// The file is not a readable zip archive.
    #[error("{wheel}: not a readable wheel (zip) archive")]
    Zip {
        /// The wheel's file name.
        wheel: String,
        /// The cause.
        #[source]
        source: zip::result::ZipError,
    },
    /// The archive breaks the wheel format or envlayer's limits.
    #[error("{wheel}: {reason}")]
    Format {
        /// The wheel's file name.
        wheel: String,
        /// What is wrong.
        reason: String,
    },
    /// A member's bytes do not have the hash its `RECORD` gives.
    #[error("{wheel}: {path} does not match the hash in RECORD; the wheel is corrupt or was altered")]
    Record {
        /// The wheel's file name.
        wheel: String,
        /// The member.
        path: String,
    },
    /// A file of the stage could not be written.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// `urlsafe-base64-nopad(sha256)`, as `RECORD` writes hashes.
fn record_hash(data: &[u8]) -> String {
    format!("sha256={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(data)))
}

/// Compiles `.pyc` files for the stage and installed paths given, returning the ones it added.
pub type Compile<'a> = dyn Fn(&Path, &[String]) -> Result<Vec<String>, crate::install::InstallError> + 'a;

/// Installs `wheel` (`file_name` as the index named it) into `stage`, laid out relative to the prefix.
/// `compile` is given the stage and the installed paths and returns the `.pyc` files it added, which go
/// in `RECORD` like pip's.
pub fn install(
    wheel: &Path,
    file_name: &str,
    stage: &Path,
    scheme: &Scheme,
    compile: &Compile<'_>,
) -> Result<InstalledWheel, WheelError> {
    let format = |reason: String| WheelError::Format { wheel: file_name.to_string(), reason };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WheelError::Io { path, source }
    };
    let zip_err = |source| WheelError::Zip { wheel: file_name.to_string(), source };
    let (name, version) = super::split_wheel_name(file_name).ok_or_else(|| format("not a wheel file name".into()))?;
    let file = std::fs::File::open(wheel).map_err(io(wheel))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(zip_err)?;
    if archive.len() > MAX_FILES {
        return Err(format(format!("holds {} files; envlayer installs wheels of at most {MAX_FILES}", archive.len())));
    }
    // The .dist-info and .data folders: the top-level ones named for the wheel's distribution and version
    // (however the archive spells them), else the names the file name gives.
    let members: Vec<String> = archive.file_names().map(|n| n.map(|n| n.into_owned())).collect::<Result<_, _>>().map_err(zip_err)?;
    let stem = super::normalize(&format!("{name}-{version}"));
    let top_dir = |suffix: &str| {
        members
            .iter()
            .filter_map(|m| m.split('/').next())
            .find(|top| top.strip_suffix(suffix).is_some_and(|t| super::normalize(t) == stem))
            .map(str::to_string)
            .unwrap_or_else(|| format!("{name}-{version}{suffix}"))
    };
    let dist_info = top_dir(".dist-info");
    let data_dir = top_dir(".data");

    let record_text = read_member(&mut archive, &format!("{dist_info}/RECORD"), 16 << 20).map_err(zip_err)?
        .ok_or_else(|| format(format!("has no {dist_info}/RECORD")))?;
    let record = parse_record(&record_text).map_err(|line| format(format!("{dist_info}/RECORD line {line} is malformed")))?;
    let wheel_meta = read_member(&mut archive, &format!("{dist_info}/WHEEL"), 1 << 20).map_err(zip_err)?
        .ok_or_else(|| format(format!("has no {dist_info}/WHEEL")))?;
    let wheel_version = header(&wheel_meta, "Wheel-Version").unwrap_or_default();
    if !wheel_version.starts_with("1.") {
        return Err(format(format!("Wheel-Version {wheel_version:?}: envlayer installs wheels of format 1.x")));
    }

    let sp = scheme.site_packages.as_str();
    let mut written: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut total = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_err)?;
        let raw = entry.name().map_err(zip_err)?.into_owned();
        if entry.is_dir() {
            continue;
        }
        let member = safe_relative(&raw).ok_or_else(|| format(format!("refusing unsafe path {:?}", crate::net::escape(&raw))))?;
        if entry.is_symlink() {
            return Err(format(format!("{member} is a symbolic link; wheels hold regular files only")));
        }
        if member == format!("{dist_info}/RECORD") || member.starts_with(&format!("{dist_info}/RECORD.")) {
            continue;
        }
        let dest = match member.strip_prefix(&format!("{data_dir}/")) {
            Some(rest) => {
                let (scheme_name, rest) = rest.split_once('/').ok_or_else(|| format(format!("{member}: a file directly under {data_dir}")))?;
                match scheme_name {
                    "purelib" | "platlib" => format!("{sp}/{rest}"),
                    "scripts" => format!("bin/{rest}"),
                    "headers" => format!("{}/{name}/{rest}", scheme.include),
                    "data" => rest.to_string(),
                    other => return Err(format(format!("{member}: unknown scheme {:?}", crate::net::escape(other)))),
                }
            }
            None => format!("{sp}/{member}"),
        };
        let expected = match record.get(&member) {
            Some(Some(h)) => h.clone(),
            Some(None) => return Err(format(format!("{member} is listed in RECORD without a hash"))),
            None => return Err(format(format!("{member} is not listed in RECORD"))),
        };
        let executable = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        let is_script = dest.starts_with("bin/") && member.starts_with(&format!("{data_dir}/"));
        let twice = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format(format!("{member}: {dest} is installed twice (a repeated member, or a script of the same name)")),
            _ => WheelError::Io { path: stage.join(&dest), source: e },
        };
        let mut check = RecordCheck::new(&expected).ok_or_else(|| format(format!("{member}: RECORD hash {expected:?} is not sha256, sha384 or sha512")))?;
        let budget = MAX_UNPACKED_BYTES - total;
        let (size, installed) = if is_script {
            // Scripts are read whole (at most 16 MiB) to rewrite a `#!python` first line.
            let mut data = Vec::new();
            (&mut entry).take((16 << 20) + 1).read_to_end(&mut data).map_err(io(wheel))?;
            if data.len() > 16 << 20 {
                return Err(format(format!("{member}: a script larger than 16 MiB")));
            }
            check.update(&data);
            let size = data.len() as u64;
            if data.starts_with(b"#!python") || data.starts_with(b"#!pythonw") {
                let body = data.splitn(2, |b| *b == b'\n').nth(1).unwrap_or_default().to_vec();
                data = [shebang(scheme).into_bytes(), b"\n".to_vec(), body].concat();
            }
            let mut f = create_file(stage, &dest).map_err(twice)?;
            f.write_all(&data).map_err(io(&stage.join(&dest)))?;
            (size, (record_hash(&data), data.len() as u64))
        } else {
            // Streamed: a member is never held in memory whole, and the total is bounded.
            let mut f = create_file(stage, &dest).map_err(twice)?;
            let mut sha = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut size = 0u64;
            loop {
                let n = entry.read(&mut buf).map_err(io(wheel))?;
                if n == 0 {
                    break;
                }
                size += n as u64;
                if size > budget {
                    return Err(format(format!("unpacks to more than {MAX_UNPACKED_BYTES} bytes")));
                }
                check.update(&buf[..n]);
                sha.update(&buf[..n]);
                f.write_all(&buf[..n]).map_err(io(&stage.join(&dest)))?;
            }
            let hash = format!("sha256={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha.finalize()));
            (size, (hash, size))
        };
        total += size;
        if !check.matches() {
            return Err(WheelError::Record { wheel: file_name.into(), path: member });
        }
        set_mode(&stage.join(&dest), executable || is_script).map_err(io(&stage.join(&dest)))?;
        written.insert(dest, installed);
    }

    let mut scripts = Vec::new();
    if let Some(text) = read_member(&mut archive, &format!("{dist_info}/entry_points.txt"), 1 << 20).map_err(zip_err)? {
        for (script, module, attr) in entry_points(&text).map_err(format)? {
            let body = format!(
                "{}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom {module} import {top}\nif __name__ == \"__main__\":\n    sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n    sys.exit({attr}())\n",
                shebang(scheme),
                top = attr.split('.').next().unwrap_or(&attr),
            );
            let dest = format!("bin/{script}");
            write_file(stage, &dest, body.as_bytes(), true).map_err(io(&stage.join(&dest)))?;
            written.insert(dest.clone(), (record_hash(body.as_bytes()), body.len() as u64));
            scripts.push(dest);
        }
    }
    let installer = format!("{sp}/{dist_info}/INSTALLER");
    write_file(stage, &installer, b"envlayer\n", false).map_err(io(&stage.join(&installer)))?;
    written.insert(installer, (record_hash(b"envlayer\n"), 9));

    let paths: Vec<String> = written.keys().cloned().collect();
    let pyc = compile(stage, &paths).map_err(|e| format(format!("compiling .pyc: {e}")))?;
    for p in pyc {
        let data = std::fs::read(stage.join(&p)).map_err(io(&stage.join(&p)))?;
        written.insert(p, (record_hash(&data), data.len() as u64));
    }
    // RECORD as pip writes it for the installed files: paths relative to site-packages, then RECORD itself.
    let record_path = format!("{sp}/{dist_info}/RECORD");
    let mut out = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    for (path, (hash, size)) in &written {
        out.write_record([relative_to(path, sp).as_str(), hash, &size.to_string()]).map_err(|e| format(e.to_string()))?;
    }
    out.write_record([relative_to(&record_path, sp).as_str(), "", ""]).map_err(|e| format(e.to_string()))?;
    let out = out.into_inner().map_err(|e| format(e.to_string()))?;
    write_file(stage, &record_path, &out, false).map_err(io(&stage.join(&record_path)))?;
    let mut paths: Vec<String> = written.into_keys().collect();
    paths.push(record_path);
    paths.sort();
    scripts.sort();
    Ok(InstalledWheel { paths, scripts })
}

/// `#!<prefix>/bin/python3.11`, or pip's `/bin/sh` trampoline when that is too long or has a space.
fn shebang(scheme: &Scheme) -> String {
    let python = format!("{}/{}", scheme.prefix, scheme.python);
    if python.len() + 2 <= MAX_SHEBANG && !python.contains(' ') {
        format!("#!{python}")
    } else {
        format!("#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''")
    }
}

/// `path` (relative to the prefix) as seen from `dir` (relative to the prefix too): `../../../bin/x`.
fn relative_to(path: &str, dir: &str) -> String {
    match path.strip_prefix(&format!("{dir}/")) {
        Some(rest) => rest.to_string(),
        None => format!("{}{path}", "../".repeat(dir.split('/').count())),
    }
}

/// A new file at `rel` under the stage (its folders made); `create_new`: a wheel naming one path twice is
/// refused rather than silently overwritten.
fn create_file(stage: &Path, rel: &str) -> std::io::Result<std::fs::File> {
    let path = stage.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new().write(true).create_new(true).open(&path)
}

/// 0755 or 0644 whatever the umask, so layers are the same on every machine.
fn set_mode(path: &Path, executable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(if executable { 0o755 } else { 0o644 }))
}

fn write_file(stage: &Path, rel: &str, data: &[u8], executable: bool) -> std::io::Result<()> {
    create_file(stage, rel)?.write_all(data)?;
    set_mode(&stage.join(rel), executable)
}

/// A text member, at most `cap` bytes (`Ok(None)` if absent; larger is an error, not a truncation).
fn read_member<R: Read + std::io::Seek>(archive: &mut zip::ZipArchive<R>, name: &str, cap: u64) -> zip::result::ZipResult<Option<String>> {
    let mut entry = match archive.by_name(name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    (&mut entry).take(cap + 1).read_to_string(&mut text)?;
    if text.len() as u64 > cap {
        return Err(std::io::Error::other(format!("{name} is larger than {cap} bytes")).into());
    }
    Ok(Some(text))
}

/// A member's bytes hashed with the algorithm its `RECORD` line names, compared at the end.
enum RecordCheck {
    Sha256(Sha256, String),
    Sha384(sha2::Sha384, String),
    Sha512(sha2::Sha512, String),
}

impl RecordCheck {
    fn new(expected: &str) -> Option<Self> {
        let (algo, value) = expected.split_once('=')?;
        Some(match algo {
            "sha256" => Self::Sha256(Sha256::new(), value.to_string()),
            "sha384" => Self::Sha384(sha2::Sha384::new(), value.to_string()),
            "sha512" => Self::Sha512(sha2::Sha512::new(), value.to_string()),
            _ => return None,
        })
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h, _) => h.update(data),
            Self::Sha384(h, _) => h.update(data),
            Self::Sha512(h, _) => h.update(data),
        }
    }

    fn matches(self) -> bool {
        let enc = |d: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d);
        match self {
            Self::Sha256(h, v) => enc(&h.finalize()) == v.trim_end_matches('='),
            Self::Sha384(h, v) => enc(&h.finalize()) == v.trim_end_matches('='),
            Self::Sha512(h, v) => enc(&h.finalize()) == v.trim_end_matches('='),
        }
    }
}

#[cfg(test)]
#[path = "wheel_tests.rs"]
mod tests;
