//! Stage 2, solve: channels and specs in, a topologically sorted list of package records out (resolvo),
//! plus the lock file that records it and lets a later build skip the solve (written and read in
//! [`crate::lockfile`]).

use rattler_conda_types::{
    Channel, ChannelConfig, GenericVirtualPackage, MatchSpec, NamedChannelOrUrl, PackageName, ParseStrictness,
    RepoDataRecord, Subdir, Version,
};
use rattler_solve::{resolvo, SolverImpl, SolverTask};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Everything the solver needs.
#[derive(Debug, Clone)]
pub struct SolveInput {
    /// Channels in priority order.
    pub channels: Vec<Channel>,
    /// What the user asked for.
    pub specs: Vec<MatchSpec>,
    /// The platform the image runs on.
    pub platform: Subdir,
    /// The virtual packages of the machine the image runs on (not of the build machine).
    pub virtual_packages: Vec<GenericVirtualPackage>,
    /// Where repodata is cached.
    pub cache_dir: PathBuf,
    /// Connect and idle timeouts for channels.
    pub timeouts: crate::net::Timeouts,
}

/// A solved environment: records in install (topological) order.
#[derive(Debug, Clone)]
pub struct Solved {
    /// The packages, dependencies before dependents.
    pub records: Vec<RepoDataRecord>,
}

/// Why solving failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// A channel could not be understood or does not exist.
    #[error("channel {channel}: {reason}")]
    Channel {
        /// The channel as written.
        channel: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Repodata could not be fetched or read.
    #[error("cannot load repodata from {channels}")]
    Repodata {
        /// The channels queried.
        channels: String,
        /// The cause.
        #[source]
        source: rattler_repodata_gateway::GatewayError,
    },
    /// No set of packages satisfies the specs.
    #[error("the environment cannot be solved {0}")]
    Unsolvable(String),
    /// A `--virtual-package` value is malformed.
    #[error("virtual package {0:?}: expected __name=version[=build]")]
    VirtualPackage(String),
    /// A package record (from repodata or a lock file) or a spec points where it may not.
    #[error("{source_name}: {package}: {reason}")]
    Untrusted {
        /// Where the record came from (the channels, or the lock file).
        source_name: String,
        /// The package (file name or spec), escaped.
        package: String,
        /// What is wrong.
        reason: String,
    },
    /// The lock file could not be read or written, or lacks the platform.
    #[error("lock file {path}: {reason}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The channels of an environment file as URLs, without looking at them (for identities).
pub fn channel_urls(channels: &[NamedChannelOrUrl], root_dir: &Path) -> Result<Vec<Channel>, SolveError> {
    let config = ChannelConfig::default_with_root_dir(root_dir.to_path_buf());
    channels
        .iter()
        .map(|c| {
            c.clone()
                .into_channel(&config)
                .map_err(|e| SolveError::Channel { channel: c.to_string(), reason: e.to_string() })
        })
        .collect()
}

/// Resolves the channels of an environment file: paths (relative to `root_dir`), `file://` and `https://`
/// URLs, and names (`conda-forge` means `https://conda.anaconda.org/conda-forge`). Local channels must
/// exist and look like channels.
pub fn resolve_channels(channels: &[NamedChannelOrUrl], root_dir: &Path) -> Result<Vec<Channel>, SolveError> {
    let resolved = channel_urls(channels, root_dir)?;
    channels
        .iter()
        .zip(resolved)
        .map(|(c, channel)| {
            let written = c.to_string();
            if let Ok(dir) = channel.base_url.url().to_file_path() {
                if !dir.is_dir() {
                    return Err(SolveError::Channel {
                        channel: written,
                        reason: format!("{} does not exist or is not a directory", dir.display()),
                    });
                }
                let has_subdir = ["noarch", "linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64"]
                    .iter()
                    .any(|s| dir.join(s).join("repodata.json").is_file());
                if !has_subdir {
                    return Err(SolveError::Channel {
                        channel: written,
                        reason: format!("{} has no <subdir>/repodata.json: not a conda channel", dir.display()),
                    });
                }
            }
            Ok(channel)
        })
        .collect()
}

/// The virtual packages assumed for `platform` unless the user says otherwise: a current Linux with
/// glibc 2.28 (conda-forge's baseline), and the CPU family of the platform. No `__cuda` unless asked for.
pub fn default_virtual_packages(platform: Subdir) -> Vec<GenericVirtualPackage> {
    let mut out = Vec::new();
    let vp = |name: &str, version: &str, build: &str| GenericVirtualPackage {
        name: PackageName::new_unchecked(name),
        version: Version::from_str(version).expect("valid built-in version"),
        build_string: build.parse().expect("valid built-in build string"),
    };
    if platform.is_unix() {
        out.push(vp("__unix", "0", "0"));
    }
    if platform.is_linux() {
        out.push(vp("__linux", "5.10", "0"));
        out.push(vp("__glibc", "2.28", "0"));
    }
    if let Some(arch) = platform.arch() {
        out.push(vp("__archspec", "1", &arch.to_string()));
    }
    out
}

/// Parses `__name=version[=build]` and puts it in place of any default of the same name.
pub fn override_virtual_packages(
    mut defaults: Vec<GenericVirtualPackage>,
    given: &[String],
) -> Result<Vec<GenericVirtualPackage>, SolveError> {
    for text in given {
        let bad = || SolveError::VirtualPackage(text.clone());
        let mut parts = text.splitn(3, '=');
        let name = parts.next().filter(|n| n.starts_with("__")).ok_or_else(bad)?;
        let version = parts.next().ok_or_else(bad)?;
        let build = parts.next().unwrap_or("0").parse().map_err(|_| bad())?;
        let name = PackageName::from_str(name).map_err(|_| bad())?;
        let version = Version::from_str(version).map_err(|_| bad())?;
        defaults.retain(|v| v.name != name);
        defaults.push(GenericVirtualPackage { name, version, build_string: build });
    }
    defaults.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(defaults)
}

/// Fetches repodata for the specs and solves with resolvo.
pub async fn solve(input: &SolveInput) -> Result<Solved, SolveError> {
    // Every answer of a channel is cut at a size, and every read has the idle timeout.
    let client = crate::net::client_builder(input.timeouts)
        .build()
        .map_err(|e| SolveError::Channel { channel: "(all)".into(), reason: format!("HTTP client: {e}") })?;
    let client = reqwest_middleware::ClientBuilder::new(client).with(crate::net::CapBodies { cap: crate::net::MAX_REPODATA_BYTES }).build();
    let gateway = rattler_repodata_gateway::Gateway::builder()
        .with_cache_dir(input.cache_dir.join("repodata"))
        .with_client(client)
        .finish();
    let names = input.channels.iter().map(|c| channel_display(c.base_url.url())).collect::<Vec<_>>().join(", ");
    let repodata = gateway
        .query(input.channels.clone(), [input.platform, Subdir::NoArch], input.specs.clone())
        .recursive(true)
        .execute()
        .await
        .map_err(|source| SolveError::Repodata { channels: names.clone(), source })?
        .repodata;
    let task = SolverTask {
        specs: input.specs.clone(),
        virtual_packages: input.virtual_packages.clone(),
        ..SolverTask::from_iter(repodata.iter())
    };
    let solved = resolvo::Solver.solve(task);
    let solution = match solved {
        Ok(s) => s,
        Err(e) => {
            let reasons = match e {
                rattler_solve::SolveError::Unsolvable(reasons) => reasons.join("\n"),
                other => other.to_string(),
            };
            let unknown = unknown_names(input, &repodata, &gateway).await;
            return Err(SolveError::Unsolvable(format!("for {} from {names}:\n{unknown}{reasons}", input.platform)));
        }
    };
    Ok(Solved { records: install_order(solution.records) })
}

/// One line per spec whose name no channel has, with the nearest names the channels do have.
async fn unknown_names(input: &SolveInput, repodata: &[rattler_repodata_gateway::RepoData], gateway: &rattler_repodata_gateway::Gateway) -> String {
    let known: std::collections::BTreeSet<&str> = repodata.iter().flat_map(|r| r.iter().map(|rec| rec.package_record.name.as_normalized())).collect();
    // Virtual packages (`__cuda`) are never in a channel: they come from --virtual-package.
    let missing: Vec<&str> =
        input.specs.iter().filter_map(|s| s.name.as_exact().map(|n| n.as_normalized())).filter(|n| !known.contains(n) && !n.starts_with("__")).collect();
    if missing.is_empty() {
        return String::new();
    }
    let all = gateway.names(input.channels.clone(), [input.platform, Subdir::NoArch]).execute().await.map(|o| o.names).unwrap_or_default();
    let mut out = String::new();
    for name in missing {
        let mut near: Vec<(f64, &str)> = all
            .iter()
            .map(|n| (strsim::jaro_winkler(name, n.as_normalized()), n.as_normalized()))
            .filter(|(score, _)| *score >= 0.85)
            .collect();
        near.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let hint = match near.iter().take(3).map(|(_, n)| *n).collect::<Vec<_>>() {
            v if v.is_empty() => String::new(),
            v => format!(" (did you mean {}?)", v.join(", ")),
        };
        out.push_str(&format!("no package named {} in these channels{hint}\n", crate::net::escape(name)));
    }
    out
}

/// Whether `name` is a safe package archive file name: `<name>-<version>-<build>.conda` or `.tar.bz2`
/// made of letters, digits and `._+!-`, not starting with a dot: never a path.
pub fn is_archive_file_name(name: &str) -> bool {
    let stem = name.strip_suffix(".conda").or_else(|| name.strip_suffix(".tar.bz2"));
    stem.is_some_and(|stem| {
        !stem.is_empty()
            && name.len() <= 255
            && !stem.starts_with('.')
            && stem.chars().all(|c| c.is_ascii_alphanumeric() || "._+!-".contains(c))
    })
}

/// Checks specs and solved or locked records against the configured channels: a spec with a `url` must
/// name a package of a configured channel; every record's file name must be a plain archive name, and
/// its URL must be on a configured channel (the same scheme, host and port; for `file://`, a path
/// inside a configured local channel). A channel's repodata (its `base_url`) or a lock file can
/// therefore never send envlayer to another host or to a local file. `source_name` names where the
/// records came from, for errors.
pub fn check_sources(specs: &[MatchSpec], records: &[RepoDataRecord], channels: &[Channel], source_name: &str) -> Result<(), SolveError> {
    let allowed = |url: &url::Url| -> bool {
        channels.iter().any(|c| {
            let base = c.base_url.url();
            match (url.scheme(), base.scheme()) {
                ("file", "file") => match (url.to_file_path(), base.to_file_path()) {
                    (Ok(p), Ok(b)) => !p.components().any(|c| c == std::path::Component::ParentDir) && p.starts_with(b),
                    _ => false,
                },
                ("http" | "https", _) => crate::net::same_origin(url, base),
                _ => false,
            }
        })
    };
    let untrusted = |package: String, reason: String| SolveError::Untrusted {
        source_name: source_name.to_string(),
        package: crate::net::escape(&package),
        reason,
    };
    for spec in specs {
        if let Some(url) = &spec.url {
            if !allowed(url) {
                return Err(untrusted(
                    spec.to_string(),
                    format!("its URL {} is not in a listed channel; add the channel it comes from to `channels:`", crate::net::escape(url.as_str())),
                ));
            }
        }
    }
    for r in records {
        let file = r.identifier.to_file_name();
        if !is_archive_file_name(&file) {
            return Err(untrusted(file, "is not a package archive file name (a name-version-build.conda or .tar.bz2)".into()));
        }
        if !allowed(&r.url) {
            return Err(untrusted(
                file,
                format!(
                    "its URL {} is not in a listed channel ({}); envlayer downloads packages only from the channels of the environment",
                    crate::net::escape(r.url.as_str()),
                    channels.iter().map(|c| c.base_url.to_string()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Dependencies before dependents, and otherwise by name (Kahn's algorithm, ties broken by name, as
/// conda's toposort does): a canonical order, so that which of two unrelated packages installs "later"
/// (and wins a clobbered path) never depends on anything but the package set. Dependency cycles, which
/// conda allows, are broken at the alphabetically first package of the cycle.
pub fn install_order(records: Vec<RepoDataRecord>) -> Vec<RepoDataRecord> {
    use std::collections::{BTreeMap, BTreeSet};
    let names: Vec<String> = records.iter().map(|r| r.package_record.name.as_normalized().to_string()).collect();
    let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let mut deps: Vec<BTreeSet<usize>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.package_record
                .depends
                .iter()
                .filter_map(|d| index.get(d.split([' ', '=', '<', '>', '!', '~', '[']).next().unwrap_or("")).copied())
                .filter(|&d| d != i)
                .collect()
        })
        .collect();
    let mut done = vec![false; records.len()];
    let mut order = Vec::with_capacity(records.len());
    while order.len() < records.len() {
        let ready: Option<usize> = (0..records.len())
            .filter(|&i| !done[i] && deps[i].iter().all(|&d| done[d]))
            .min_by(|&a, &b| names[a].cmp(&names[b]));
        let next = ready.unwrap_or_else(|| {
            (0..records.len()).filter(|&i| !done[i]).min_by(|&a, &b| names[a].cmp(&names[b])).expect("some left")
        });
        done[next] = true;
        deps[next].clear();
        order.push(next);
    }
    let mut slots: Vec<Option<RepoDataRecord>> = records.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// A channel URL for messages and summaries: without a user or password, an anaconda.org token path
/// segment (`/t/<token>/`), a query (presigned URLs) or a fragment; escaped, without the trailing `/`.
pub fn channel_display(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    let segments: Vec<String> = u.path_segments().map(|s| s.map(String::from).collect()).unwrap_or_default();
    if let Some(i) = segments.iter().position(|s| s == "t").filter(|&i| i + 1 < segments.len()) {
        let mut kept = segments.clone();
        kept[i + 1] = "***".into();
        u.set_path(&kept.join("/"));
    }
    crate::net::escape(u.as_str().trim_end_matches('/'))
}

/// Parses a match spec the way environment files do (lenient).
pub fn parse_spec(s: &str) -> Result<MatchSpec, rattler_conda_types::ParseMatchSpecError> {
    MatchSpec::from_str(s, ParseStrictness::Lenient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_urls_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("chan/noarch")).unwrap();
        std::fs::write(dir.path().join("chan/noarch/repodata.json"), "{}").unwrap();
        let written: Vec<NamedChannelOrUrl> = ["conda-forge", "https://example.com/my/channel", "./chan"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let ch = resolve_channels(&written, dir.path()).unwrap();
        assert_eq!(ch[0].base_url.to_string(), "https://conda.anaconda.org/conda-forge/");
        assert_eq!(ch[1].base_url.to_string(), "https://example.com/my/channel/");
        assert_eq!(ch[2].base_url.url().to_file_path().unwrap(), dir.path().join("chan"));
    }

    #[test]
    fn channel_urls_are_shown_without_credentials() {
        let u = |s: &str| channel_display(&url::Url::parse(s).unwrap());
        assert_eq!(u("https://user:pw@conda.example.com/chan/"), "https://conda.example.com/chan");
        assert_eq!(u("https://conda.anaconda.org/t/tk-123-abc/private/"), "https://conda.anaconda.org/t/***/private");
        assert_eq!(u("file:///srv/chan/"), "file:///srv/chan");
    }

    #[test]
    fn virtual_package_overrides() {
        let vps = override_virtual_packages(default_virtual_packages(Subdir::Linux64), &["__glibc=2.36".into(), "__cuda=12.4".into()])
            .unwrap();
        let names: Vec<String> = vps.iter().map(|v| v.to_string()).collect();
        assert!(names.iter().any(|n| n.starts_with("__glibc=2.36")), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("__cuda=12.4")), "{names:?}");
        assert_eq!(names.iter().filter(|n| n.starts_with("__glibc")).count(), 1);
        assert!(override_virtual_packages(vec![], &["glibc=1".into()]).is_err());
    }
}
