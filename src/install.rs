//! Stage 4, install: one extracted package linked alone into its own staging folder, for the prefix the
//! image will have (text and binary placeholders, shebangs, `noarch: python` relocation and entry points
//! all use the target prefix), with its `conda-meta/<dist>.json` free of build-machine paths.

use rattler::install::{link_package, InstallDriver, InstallOptions, PythonInfo};
use rattler_conda_types::{prefix::Prefix, PrefixRecord, RepoDataRecord, Subdir};
use std::path::{Path, PathBuf};

/// Where and for what the packages are installed.
#[derive(Debug, Clone)]
pub struct InstallTarget {
    /// The environment's path inside the image, e.g. `/opt/conda/envs/demo`.
    pub prefix: String,
    /// The platform of the image.
    pub platform: Subdir,
    /// The environment's Python, needed for `noarch: python` packages.
    pub python: Option<PythonInfo>,
}

/// Facts learnt while installing a package that the image needs later, kept with the layer cache so a
/// warm build does not install again to learn them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PackageFacts {
    /// `conda-meta/<dist>.json`'s file name, for the summary.
    pub dist: String,
    /// How many files the package installs.
    pub files: usize,
    /// Environment variables set by its `etc/conda/activate.d/*.sh` scripts, in order.
    pub activation: Vec<(String, String)>,
    /// Activation lines that could not be understood statically (shown as warnings).
    pub activation_skipped: Vec<String>,
    /// Its pre-link, post-link and pre-unlink scripts (`bin/.NAME-post-link.sh` ...).
    pub link_scripts: Vec<String>,
    /// Every path it installs, relative to the prefix.
    pub paths: Vec<String>,
}

/// The length of the shortest prefix placeholder in the package's binary files (a prefix must fit in it).
fn binary_placeholder_len(extracted: &Path) -> Option<usize> {
    let paths = rattler_conda_types::package::PathsJson::from_package_directory_with_deprecated_fallback(extracted).ok()?;
    paths
        .paths
        .iter()
        .filter(|p| p.prefix_placeholder.as_ref().is_some_and(|pp| pp.file_mode == rattler_conda_types::package::FileMode::Binary))
        .filter_map(|p| p.prefix_placeholder.as_ref().map(|pp| pp.placeholder.len()))
        .min()
}

/// Why a package could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// rattler refused to link it (a prefix too long for a binary placeholder, an unreadable file, ...).
    #[error("cannot install {package} for prefix {prefix}")]
    Link {
        /// The package.
        package: String,
        /// The target prefix.
        prefix: String,
        /// The cause.
        #[source]
        source: rattler::install::InstallError,
    },
    /// The prefix is longer than the placeholder compiled into the package's binary files.
    #[error("{package} cannot be installed at --prefix {prefix}: the prefix is {prefix_len} bytes, and its binary files hold a {placeholder_len}-byte placeholder to rewrite. Choose a --prefix of at most {placeholder_len} bytes")]
    PrefixTooLong {
        /// The package.
        package: String,
        /// The target prefix.
        prefix: String,
        /// Its length in bytes.
        prefix_len: usize,
        /// The shortest binary placeholder of the package.
        placeholder_len: usize,
    },
    /// The package names a path that would leave its stage, or read a file outside the package.
    #[error("{package}: refusing unsafe path {path:?}: {reason}")]
    UnsafePath {
        /// The package.
        package: String,
        /// The path as the package gives it.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The package's `info/paths.json` could not be read.
    #[error("{package}: cannot read info/paths.json")]
    PathsJson {
        /// The package.
        package: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The staging folder could not be written.
    #[error("cannot write {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Installs one extracted package into `stage` (an empty folder) for `target`.
pub async fn install_package(
    extracted: &Path,
    record: &RepoDataRecord,
    target: &InstallTarget,
    stage: &Path,
) -> Result<PackageFacts, InstallError> {
    let package = record.identifier.to_file_name();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    };
    check_paths(extracted, &package)?;
    let prefix = Prefix::create(stage).map_err(io(stage))?;
    // A fresh driver per package: its clobber registry must see this package alone.
    let driver = InstallDriver::default();
    let options = InstallOptions {
        target_prefix: Some(PathBuf::from(&target.prefix)),
        platform: Some(target.platform),
        python_info: target.python.clone(),
        // Files that need no rewriting are hard-linked from the extracted package (as rattler's
        // installer does); rewritten ones are new files. Nothing writes into a stage file afterwards.
        allow_hard_links: Some(true),
        allow_ref_links: Some(false),
        allow_symbolic_links: Some(true),
        ..InstallOptions::default()
    };
    let mut paths = link_package(extracted, &prefix, &driver, options).await.map_err(|source| {
        // Only when rattler says so: any other failure keeps its own cause.
        let mut chain = String::new();
        let mut e: Option<&dyn std::error::Error> = Some(&source);
        while let Some(x) = e {
            chain.push_str(&x.to_string());
            e = x.source();
        }
        let about_placeholder = chain.contains("longer than the placeholder");
        match binary_placeholder_len(extracted).filter(|&m| m < target.prefix.len() && about_placeholder) {
            Some(placeholder_len) => InstallError::PrefixTooLong { package: package.clone(), prefix: target.prefix.clone(), prefix_len: target.prefix.len(), placeholder_len },
            None => InstallError::Link { package: package.clone(), prefix: target.prefix.clone(), source },
        }
    })?;
    // Sorted, as rattler's Installer writes them, so conda-meta matches a plain install.
    paths.sort_by(|a, b| a.relative_path.cmp(&b.relative_path));
    let rel_paths: Vec<String> = paths.iter().map(|p| p.relative_path.to_string_lossy().into_owned()).collect();
    let link_scripts = rel_paths
        .iter()
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or(p);
            (p.starts_with("bin/.") || p.starts_with("Scripts/."))
                && ["-pre-link.", "-post-link.", "-pre-unlink."].iter().any(|k| name.contains(k))
        })
        .cloned()
        .collect();
    let mut activation = Vec::new();
    let mut activation_skipped = Vec::new();
    let mut scripts: Vec<&String> =
        rel_paths.iter().filter(|p| p.starts_with("etc/conda/activate.d/") && p.ends_with(".sh")).collect();
    scripts.sort();
    for script in scripts {
        let text = std::fs::read_to_string(stage.join(script)).map_err(io(&stage.join(script)))?;
        let (vars, skipped) = crate::activation::parse_exports(&text);
        activation.extend(vars);
        activation_skipped.extend(skipped.into_iter().map(|l| format!("{script}: {l}")));
    }

    // conda-meta: the record and its files, with no path of this machine in it.
    let mut prefix_record = PrefixRecord::from_repodata_record(record.clone(), paths);
    prefix_record.package_tarball_full_path = None;
    prefix_record.extracted_package_dir = None;
    prefix_record.link = None;
    let dist = format!(
        "{}-{}-{}.json",
        record.package_record.name.as_normalized(),
        record.package_record.version,
        record.package_record.build
    );
    let meta = stage.join("conda-meta").join(&dist);
    std::fs::create_dir_all(stage.join("conda-meta")).map_err(io(stage))?;
    prefix_record.write_to_path(&meta, true).map_err(io(&meta))?;
    Ok(PackageFacts { dist, files: rel_paths.len(), activation, activation_skipped, link_scripts, paths: rel_paths })
}

/// Refuses packages whose files would land outside their stage or whose copies would read outside the
/// package: absolute paths, `..`, paths through a symlink the package itself installs, and "files" that
/// are really symlinks or special files in the extracted package (copying one would follow it). rattler
/// links whatever `info/paths.json` says, so this is checked before it runs.
pub fn check_paths(extracted: &Path, package: &str) -> Result<(), InstallError> {
    use rattler_conda_types::package::{PathType, PathsJson};
    use std::path::Component;
    let paths = PathsJson::from_package_directory_with_deprecated_fallback(extracted)
        .map_err(|source| InstallError::PathsJson { package: package.to_string(), source })?;
    let unsafe_path = |path: &Path, reason| InstallError::UnsafePath { package: package.to_string(), path: path.display().to_string(), reason };
    let symlinks: std::collections::HashSet<&Path> = paths
        .paths
        .iter()
        .filter(|e| e.path_type == PathType::SoftLink)
        .map(|e| e.relative_path.as_path())
        .collect();
    for entry in &paths.paths {
        let p = entry.relative_path.as_path();
        if p.as_os_str().is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(unsafe_path(p, "absolute, empty, or with '..'"));
        }
        if p.ancestors().skip(1).any(|a| symlinks.contains(a)) {
            return Err(unsafe_path(p, "it is written through a symlink the package installs"));
        }
        let meta = std::fs::symlink_metadata(extracted.join(p)).map_err(|_| unsafe_path(p, "it is listed but not in the package"))?;
        match entry.path_type {
            PathType::SoftLink if !meta.file_type().is_symlink() => return Err(unsafe_path(p, "listed as a symlink but it is not one")),
            PathType::HardLink if !meta.is_file() => return Err(unsafe_path(p, "listed as a file but it is a symlink, folder or device")),
            _ => {}
        }
    }
    Ok(())
}
