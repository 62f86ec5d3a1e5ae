//! Byte-compiling an installed package's Python files into its own stage, with the environment's own
//! interpreter, as conda does for `noarch: python` packages. The `.pyc` files are hash-based
//! (`checked-hash`: no mtime in them, and Python never rewrites them while the source matches), name the
//! target prefix as their source path, and are compiled with `PYTHONHASHSEED=0`, so the same package
//! always gives the same bytes. They are listed in the package's `conda-meta` record as `pyc_file`.
//!
//! A build compiles through one [`Pool`] of long-lived interpreters (as many as `--jobs`) fed chunks of files
//! from every package at once: starting an interpreter (and `compileall`'s process pool) per package
//! cost more than compiling the small packages, and the large ones (the standard library) are split
//! across every worker. Written by hand: no crate compiles Python; each worker runs `py_compile`, which
//! is what `compileall` runs per file.
//!
//! A worker's output does not depend on what it compiled before: marshal marks an object as shared when
//! its reference count is above one, so a worker imports everything it will ever use (the `SCRIPT` below)
//! before its first file, from source, and keeps nothing from one file to the next.

use crate::install::InstallError;
use rattler_conda_types::prefix_record::{PathType, PathsEntry};
use rattler_conda_types::PrefixRecord;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Condvar, Mutex};

/// How `.pyc` files are made, in the layer cache keys: a change that can change their bytes changes it.
pub const WORKER: &str = "py_compile-pool/2";

/// Files sent to a worker at a time: small enough that the standard library spreads over every worker,
/// large enough that a request costs little next to compiling.
const CHUNK: usize = 40;

/// The worker: one JSON request per line (`stage`, `prefix`, `files` relative to both), one `ok` line
/// back when every file was compiled or skipped. A file that does not compile is skipped.
///
/// The worker imports its modules from source, never from `.pyc` (its `PYTHONPYCACHEPREFIX` is an empty
/// folder and `-B` keeps it so): the stage's standard library gets `.pyc` while the pool runs, and a
/// worker started later must not load its modules any other way than the first did.
const SCRIPT: &str = r#"
import sys, os, json, py_compile, traceback, linecache, tokenize
mode = py_compile.PycInvalidationMode.CHECKED_HASH
tag = sys.implementation.cache_tag
for line in sys.stdin:
    req = json.loads(line)
    for rel in req["files"]:
        src = os.path.join(req["stage"], rel)
        head, name = os.path.split(src)
        cfile = os.path.join(head, "__pycache__", name[:-3] + "." + tag + ".pyc")
        try:
            py_compile.compile(src, cfile=cfile, dfile=os.path.join(req["prefix"], rel), doraise=True, invalidation_mode=mode)
        except Exception:
            pass
    sys.stdout.write("ok\n")
    sys.stdout.flush()
"#;

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

    /// The `.py` files among `paths` that get compiled: regular files only. A link is not followed: a
    /// package's `x.py -> /dev/stdin` would have the worker read its own requests, and one to a file of
    /// the build machine would compile that file into the image.
    fn sources<'p>(&self, stage: &Path, paths: &'p [String]) -> Vec<&'p String> {
        let prefix = format!("{}/", self.lib_dir);
        paths
            .iter()
            .filter(|p| p.starts_with(&prefix) && p.ends_with(".py"))
            .filter(|p| std::fs::symlink_metadata(stage.join(p)).is_ok_and(|m| m.is_file()))
            .collect()
    }

    /// The `.pyc` files of `sources` that exist in the stage and are not among the package's own `paths`,
    /// sorted: a file that does not compile (test data with deliberate syntax errors, Python 2
    /// leftovers) is skipped, as conda skips it.
    fn compiled(&self, stage: &Path, sources: &[&String], paths: &[String]) -> Vec<String> {
        let shipped: std::collections::HashSet<&str> = paths.iter().filter(|p| p.ends_with(".pyc")).map(String::as_str).collect();
        let mut added = Vec::new();
        for src in sources {
            let p = Path::new(src.as_str());
            let (Some(dir), Some(stem)) = (p.parent(), p.file_stem()) else { continue };
            let pyc = dir.join("__pycache__").join(format!("{}.{}.pyc", stem.to_string_lossy(), self.cache_tag));
            let pyc = pyc.to_string_lossy().into_owned();
            if !shipped.contains(pyc.as_str()) && stage.join(&pyc).is_file() {
                added.push(pyc);
            }
        }
        added.sort();
        added
    }

    fn spawn(&self, no_pyc: &Path) -> Result<Worker, InstallError> {
        let mut child = Command::new(&self.python)
            // -B: no .pyc written for the worker's own imports; -I: nothing from the environment or the
            // working folder on sys.path.
            .args(["-B", "-I", "-c", SCRIPT])
            .env_clear()
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONPYCACHEPREFIX", no_pyc)
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| self.io(e))?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        match (stdin, stdout) {
            (Some(stdin), Some(stdout)) => Ok(Worker { child, stdin, stdout: BufReader::new(stdout) }),
            _ => Err(self.io(std::io::Error::other("no pipe to the worker"))),
        }
    }

    fn io(&self, e: std::io::Error) -> InstallError {
        InstallError::Io { path: self.python.clone(), source: e }
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn run(&mut self, stage: &Path, prefix: &str, files: &[&String]) -> std::io::Result<()> {
        let stage = stage.to_str().ok_or_else(|| std::io::Error::other("a stage path that is not UTF-8"))?;
        let mut line = serde_json::to_string(&serde_json::json!({ "stage": stage, "prefix": prefix, "files": files }))?;
        line.push('\n');
        self.stdin.write_all(line.as_bytes())?;
        self.stdin.flush()?;
        let mut reply = String::new();
        self.stdout.read_line(&mut reply)?;
        if reply.trim_end() != "ok" {
            return Err(std::io::Error::other(format!("the compiling python exited ({})", self.child.try_wait().ok().flatten().map(|s| s.to_string()).unwrap_or_default())));
        }
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Long-lived compiling interpreters shared by every package of a build.
pub struct Pool {
    compiler: Compiler,
    size: usize,
    /// An empty folder: the workers' `PYTHONPYCACHEPREFIX`.
    no_pyc: tempfile::TempDir,
    /// Idle workers, and how many exist.
    state: Mutex<(Vec<Worker>, usize)>,
    freed: Condvar,
}

impl Pool {
    /// A pool of at most `size` workers, started when first needed.
    pub fn new(compiler: Compiler, size: usize) -> Result<Self, InstallError> {
        let no_pyc = tempfile::tempdir().map_err(|e| compiler.io(e))?;
        Ok(Self { compiler, size: size.max(1), no_pyc, state: Mutex::new((Vec::new(), 0)), freed: Condvar::new() })
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
    /// stage, in chunks spread over the workers; returns the `.pyc` paths added, sorted. Blocks.
    pub fn compile_files(&self, stage: &Path, paths: &[String]) -> Result<Vec<String>, InstallError> {
        let sources = self.compiler.sources(stage, paths);
        let chunks: Vec<&[&String]> = sources.chunks(CHUNK).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let threads = chunks.len().min(self.size);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| -> Result<(), InstallError> {
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(chunk) = chunks.get(k) else { return Ok(()) };
                            let mut worker = self.take()?;
                            // A worker that dies on a chunk (a source that crashes the compiler, a
                            // python too old for the script) compiled what it could: the files without
                            // .pyc are skipped, as files that do not compile are, and a new worker takes
                            // the next chunk. Only a python that cannot start at all fails the build.
                            match worker.run(stage, &self.compiler.target_prefix, chunk) {
                                Ok(()) => self.give(worker),
                                Err(e) => {
                                    tracing::warn!("the python compiling .pyc files stopped on a chunk of {} files: {e}", chunk.len());
                                    drop(worker);
                                    self.lost();
                                }
                            }
                        }
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err(self.compiler.io(std::io::Error::other("a compile thread panicked")))))
        })?;
        Ok(self.compiler.compiled(stage, &sources, paths))
    }

    /// An idle worker, a new one while there are fewer than `size`, or the next one freed.
    fn take(&self) -> Result<Worker, InstallError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(w) = state.0.pop() {
                return Ok(w);
            }
            if state.1 < self.size {
                state.1 += 1;
                drop(state);
                return self.compiler.spawn(self.no_pyc.path()).inspect_err(|_| self.lost());
            }
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn give(&self, w: Worker) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0.push(w);
        self.freed.notify_one();
    }

    /// A worker died or never started: another may take its place.
    fn lost(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 -= 1;
        self.freed.notify_one();
    }
}
