//! Byte-compiling an installed package's Python files into its own stage, with the environment's own
//! interpreter, as conda does for `noarch: python` packages. The `.pyc` files are hash-based
//! (`checked-hash`: no mtime in them, and Python never rewrites them while the source matches), name the
//! target prefix as their source path, and are compiled with `PYTHONHASHSEED=0`, so the same package
//! always gives the same bytes. They are listed in the package's `conda-meta` record as `pyc_file`.

use crate::install::InstallError;
use rattler_conda_types::prefix_record::{PathType, PathsEntry};
use rattler_conda_types::PrefixRecord;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An interpreter that can compile for the environment.
#[derive(Debug, Clone)]
pub struct Compiler {
    /// The interpreter, inside the staged python package.
    pub python: PathBuf,
    /// The environment's prefix in the image.
    pub target_prefix: String,
    /// `lib/python3.11`: the files under it get compiled.
    pub lib_dir: String,
    /// `cpython-311`: the cache tag in `.pyc` names.
    pub cache_tag: String,
}

impl Compiler {
    /// A compiler using the python staged at `python_stage`, described by `info`.
    pub fn new(python_stage: &Path, info: &rattler::install::PythonInfo, target_prefix: &str) -> Self {
        let (major, minor) = info.short_version;
        Self {
            python: python_stage.join(&info.path),
            target_prefix: target_prefix.to_string(),
            lib_dir: format!("lib/python{major}.{minor}"),
            cache_tag: format!("cpython-{major}{minor}"),
        }
    }

    /// Compiles the package staged at `stage` whose files are `paths` and whose record is
    /// `conda-meta/<dist>`; returns the `.pyc` paths added (relative to the prefix).
    pub fn compile(&self, stage: &Path, paths: &[String], dist: &str) -> Result<Vec<String>, InstallError> {
        let added = self.compile_files(stage, paths)?;
        if added.is_empty() {
            return Ok(added);
        }
        let io = |path: &Path, e: std::io::Error| InstallError::Io { path: path.to_path_buf(), source: e };
        let meta = stage.join("conda-meta").join(dist);
        let mut record = PrefixRecord::from_path(&meta).map_err(|e| io(&meta, e))?;
        for pyc in &added {
            let data = std::fs::read(stage.join(pyc)).map_err(|e| io(&stage.join(pyc), e))?;
            let sha = rattler_digest::compute_bytes_digest::<rattler_digest::Sha256>(&data);
            record.files.push(PathBuf::from(pyc));
            record.paths_data.paths.push(PathsEntry {
                relative_path: PathBuf::from(pyc),
                original_path: None,
                path_type: PathType::PycFile,
                no_link: false,
                sha256: Some(sha),
                sha256_in_prefix: None,
                size_in_bytes: Some(data.len() as u64),
                file_mode: None,
                prefix_placeholder: None,
            });
        }
        record.write_to_path(&meta, true).map_err(|e| io(&meta, e))?;
        Ok(added)
    }

    /// Compiles the `.py` files among `paths` (relative to the prefix) under `lib/pythonX.Y` of the
    /// stage; returns the `.pyc` paths added, sorted.
    pub fn compile_files(&self, stage: &Path, paths: &[String]) -> Result<Vec<String>, InstallError> {
        let prefix = format!("{}/", self.lib_dir);
        let sources: Vec<&String> = paths.iter().filter(|p| p.starts_with(&prefix) && p.ends_with(".py")).collect();
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let io = |path: &Path, e: std::io::Error| InstallError::Io { path: path.to_path_buf(), source: e };
        let mut child = Command::new(&self.python)
            // -B: the modules compileall itself imports must not get timestamp .pyc written first; -f: compile all.
            .args(["-B", "-s", "-m", "compileall", "-f", "-q", "-j", "0", "--invalidation-mode", "checked-hash", "-s"])
            .arg(stage)
            .arg("-p")
            .arg(&self.target_prefix)
            .args(["-i", "-"])
            .env_clear()
            .env("PYTHONHASHSEED", "0")
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io(&self.python, e))?;
        if let Some(mut stdin) = child.stdin.take() {
            let list: String = sources.iter().map(|p| format!("{}\n", stage.join(p).display())).collect();
            stdin.write_all(list.as_bytes()).map_err(|e| io(&self.python, e))?;
        }
        // compileall exits 1 when some file does not compile (test data with deliberate syntax errors,
        // Python 2 leftovers): those are skipped, as conda skips them.
        let _ = child.wait_with_output().map_err(|e| io(&self.python, e))?;
        let mut added = Vec::new();
        for src in sources {
            let p = Path::new(src.as_str());
            let (Some(dir), Some(stem)) = (p.parent(), p.file_stem()) else { continue };
            let pyc = dir.join("__pycache__").join(format!("{}.{}.pyc", stem.to_string_lossy(), self.cache_tag));
            if stage.join(&pyc).is_file() {
                added.push(pyc.to_string_lossy().into_owned());
            }
        }
        added.sort();
        Ok(added)
    }
}
