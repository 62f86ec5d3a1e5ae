//! Scratch space. Each envlayer process works in folders of its own (`<cache>/tmp/run-*` for the cache,
//! `.envlayer-out-*` beside an output), each holding a `.owner` file that the process keeps locked
//! (`flock`) while it lives. They are removed when the process is done or interrupted
//! ([`release_all`], called by the CLI on SIGINT and SIGTERM), and when a process died without cleaning
//! up (`kill -9`, a power cut), the next process that claims a folder in the same place removes the
//! dead one's: its lock is free. A live process's folders are never touched: their lock is held.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const OWNER: &str = ".owner";

/// Leftovers without an owner file (from an envlayer before 0.2, or a crash between creating the folder
/// and locking it) are removed once they are this old.
const ORPHAN_AGE: Duration = Duration::from_secs(6 * 3600);

/// A folder this process owns; removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    _owner: File,
}

impl Scratch {
    /// Creates `parent/<prefix><random>` (and `parent`), locks it, and first removes the folders with the
    /// same prefix that dead processes left in `parent`.
    pub fn claim(parent: &Path, prefix: &str) -> io::Result<Self> {
        std::fs::create_dir_all(parent)?;
        sweep(parent, prefix);
        // Made under another name, locked, then renamed: a sweeper never sees this folder with its lock free.
        let unborn = tempfile::Builder::new().prefix(".claiming-").tempdir_in(parent)?.keep();
        let claimed = File::create(unborn.join(OWNER)).and_then(|f| f.try_lock().map(|()| f).map_err(io::Error::other)).and_then(|f| {
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
            let mut n = 0u32;
            loop {
                let dir = parent.join(format!("{prefix}{}-{stamp}-{n}", std::process::id()));
                // Fails if the name is taken by a folder with anything in it (every claimed one has .owner).
                match std::fs::rename(&unborn, &dir) {
                    Ok(()) => return Ok((dir, f)),
                    Err(_) if n < 100 => n += 1,
                    Err(e) => return Err(e),
                }
            }
        });
        let (dir, owner) = match claimed {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&unborn);
                return Err(e);
            }
        };
        live().lock().unwrap_or_else(|e| e.into_inner()).insert(dir.clone(), ());
        Ok(Self { dir, _owner: owner })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        live().lock().unwrap_or_else(|e| e.into_inner()).remove(&self.dir);
    }
}

/// Every scratch folder of this process, for [`release_all`].
fn live() -> &'static Mutex<BTreeMap<PathBuf, ()>> {
    static LIVE: Mutex<BTreeMap<PathBuf, ()>> = Mutex::new(BTreeMap::new());
    &LIVE
}

/// The cache scratch folders of this process, one per cache root, kept until [`release_all`].
fn cache_claims() -> &'static Mutex<BTreeMap<PathBuf, Arc<Scratch>>> {
    static CLAIMS: Mutex<BTreeMap<PathBuf, Arc<Scratch>>> = Mutex::new(BTreeMap::new());
    &CLAIMS
}

/// This process's scratch folder in the cache at `root` (`<root>/tmp/run-*`), on the cache's file system
/// so that finished entries are renamed into place. Claimed on first use.
pub fn cache_dir(root: &Path) -> io::Result<PathBuf> {
    let mut claims = cache_claims().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = claims.get(root) {
        // The cache may have been removed since (a library caller clearing it between builds): then a
        // new folder is claimed rather than handing out a path that no longer exists.
        if s.path().join(OWNER).is_file() {
            return Ok(s.path().to_path_buf());
        }
        claims.remove(root);
    }
    let s = Scratch::claim(&root.join("tmp"), "run-")?;
    let path = s.path().to_path_buf();
    claims.insert(root.to_path_buf(), Arc::new(s));
    Ok(path)
}

/// Removes every scratch folder of this process (at exit, or on SIGINT/SIGTERM before exiting). Work
/// still running in other threads then fails; the process is expected to exit.
pub fn release_all() {
    cache_claims().lock().unwrap_or_else(|e| e.into_inner()).clear();
    let dirs: Vec<PathBuf> = live().lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
    for d in dirs {
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// The folders named `<prefix>*` in `parent` whose owner is alive (another process holds their lock).
pub fn in_use(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with(prefix) || !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        // This process's own folders are in use too (their lock is held through another descriptor).
        if let Ok(owner) = File::open(path.join(OWNER)) {
            if owner.try_lock().is_err() {
                out.push(path);
            }
        }
    }
    out
}

/// Removes the folders named `<prefix>*` in `parent` whose owner is gone.
pub fn sweep(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        // Never follow a link: only real folders are ours.
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if !meta.is_dir() {
            continue;
        }
        match File::open(path.join(OWNER)) {
            Ok(owner) => {
                // Free lock: the owner is dead. Remove while holding it, so no one else claims it meanwhile.
                if owner.try_lock().is_ok() {
                    tracing::debug!("removing {} left by an interrupted envlayer", path.display());
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
            Err(_) => {
                let old = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age > ORPHAN_AGE);
                if old {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_claim_is_kept_and_a_dead_one_swept() {
        let parent = tempfile::tempdir().unwrap();
        let live = Scratch::claim(parent.path(), "x-").unwrap();
        // A dead process's folder: an owner file nobody holds a lock on.
        let dead = parent.path().join("x-dead");
        std::fs::create_dir_all(&dead).unwrap();
        File::create(dead.join(OWNER)).unwrap();
        std::fs::write(dead.join("half-written"), b"..").unwrap();
        let other = parent.path().join("not-ours");
        std::fs::create_dir_all(&other).unwrap();
        let second = Scratch::claim(parent.path(), "x-").unwrap();
        assert!(!dead.exists(), "the dead folder is swept");
        assert!(live.path().is_dir(), "a live claim is never swept");
        assert!(other.is_dir(), "other names are left alone");
        let (a, b) = (live.path().to_path_buf(), second.path().to_path_buf());
        drop(live);
        drop(second);
        assert!(!a.exists() && !b.exists());
    }

    #[test]
    fn a_cache_removed_under_a_running_process_gets_a_new_scratch_folder() {
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("cache");
        let first = cache_dir(&cache).unwrap();
        assert_eq!(cache_dir(&cache).unwrap(), first, "one folder per cache and process");
        std::fs::remove_dir_all(&cache).unwrap();
        let second = cache_dir(&cache).unwrap();
        assert!(second.is_dir(), "{}", second.display());
    }
}
