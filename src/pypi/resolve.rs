//! Resolving the pip part for the image's target (python version, platform tags, glibc), never the build
//! machine's, with uv: envlayer runs the `uv` binary (`uv pip compile --format pylock.toml`) rather than
//! linking uv's resolver crates, which uv does not publish as a stable library and which would pin their
//! own copies of reqwest and tokio against rattler's. Conda packages that provide a distribution
//! satisfy requirements for it (as pixi does): they are pinned as constraints and not emitted.

use super::dist::Dist;
use super::error::ResolveError;
use super::spec::{IndexOptions, PipSpec};
use super::uv::{check_version, run, uv_env, uv_message, write_stub_wheel, Uv};
use std::collections::BTreeMap;
use std::path::Path;
use url::Url;

/// The target the distributions are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The environment's python, `(3, 11)`.
    pub python: (u64, u64),
    /// The conda platform.
    pub platform: rattler_conda_types::Subdir,
    /// The glibc the image promises (`__glibc`), `(2, 28)`.
    pub glibc: (u64, u64),
}

impl Target {
    /// uv's `--python-platform`: the newest manylinux tag uv knows that the target's glibc covers.
    pub fn uv_platform(&self) -> Result<String, ResolveError> {
        let arch = match self.platform.as_str() {
            "linux-64" => "x86_64",
            "linux-aarch64" => "aarch64",
            other => return Err(ResolveError::Platform { platform: other.to_string() }),
        };
        let known = [17u64, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40];
        let minor = known.iter().rev().find(|&&m| self.glibc.0 > 2 || m <= self.glibc.1).ok_or(ResolveError::Glibc { glibc: self.glibc })?;
        Ok(format!("{arch}-manylinux_2_{minor}"))
    }
}

/// What to resolve.
pub struct ResolveInput<'a> {
    /// The requirements.
    pub spec: &'a PipSpec,
    /// The indexes (the spec's, the environment's and the command line's, merged), credentials included.
    pub index: &'a IndexOptions,
    /// The target.
    pub target: &'a Target,
    /// Distributions the conda packages provide: normalized name → version.
    pub provided: &'a BTreeMap<String, String>,
    /// A folder for the input and output files.
    pub scratch: &'a Path,
    /// The indexes' credentials (from their URLs and `.netrc`).
    pub credentials: &'a super::fetch::Credentials,
    /// Timeouts for asking an index directly.
    pub timeouts: crate::net::Timeouts,
    /// The environment's python, runnable here, to build sdists with; without it sdists are refused.
    pub builder: Option<&'a Path>,
}

/// Resolves the requirements to one wheel per distribution, in name order; the conda-provided ones are
/// left out.
pub async fn resolve(uv: &Uv, input: &ResolveInput<'_>) -> Result<Vec<Dist>, ResolveError> {
    check_version(uv).await?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ResolveError::Io { path, source }
    };
    let platform = input.target.uv_platform()?;
    let reqs = input.scratch.join("requirements.in");
    let text: String = input.spec.requirements.iter().map(|r| format!("{}\n", r.text)).collect();
    std::fs::write(&reqs, text).map_err(io(&reqs))?;
    let constraints = input.scratch.join("constraints.txt");
    let mut ctext: String = input.spec.constraints.iter().map(|r| format!("{}\n", r.text)).collect();
    for (name, version) in input.provided {
        ctext.push_str(&format!("{name}=={version}\n"));
    }
    std::fs::write(&constraints, ctext).map_err(io(&constraints))?;
    // Conda's distributions may be versions no index has: uv sees them as metadata-only wheels in a
    // folder of their own, pinned by the constraints and never emitted.
    let provided_dir = input.scratch.join("provided");
    std::fs::create_dir_all(&provided_dir).map_err(io(&provided_dir))?;
    for (name, version) in input.provided {
        write_stub_wheel(&provided_dir, name, version).map_err(io(&provided_dir))?;
    }
    let out = input.scratch.join("pylock.toml");
    let (py_major, py_minor) = input.target.python;
    let mut cmd = tokio::process::Command::new(&uv.program);
    cmd.args(["pip", "compile", "--quiet", "--color", "never", "--no-config", "--no-header", "--no-annotate"])
        .args(["--format", "pylock.toml", "--python-platform", &platform])
        .arg("--python-version")
        .arg(format!("{py_major}.{py_minor}"))
        .arg("--cache-dir")
        .arg(&uv.cache_dir)
        .arg("-c")
        .arg(&constraints)
        .arg("-o")
        .arg(&out)
        .arg(&reqs);
    for name in input.provided.keys() {
        cmd.arg("--no-emit-package").arg(name);
    }
    // Without an interpreter of the target that runs here, uv may not build anything (it would build
    // with whatever python it finds on this machine).
    match input.builder {
        Some(python) => cmd.arg("--python").arg(python),
        None => cmd.arg("--no-build"),
    };
    let mut find_links: Vec<String> = input.index.find_links.iter().map(|u| u.to_string()).collect();
    if !input.provided.is_empty() {
        find_links.push(provided_dir.display().to_string());
    }
    uv_env(&mut cmd, input.index, &find_links, input.timeouts);
    let output = run(uv, cmd).await?;
    if !output.status.success() {
        let message = uv_message(&output.stderr, input.credentials);
        if message.contains("building from source is disabled") {
            return Err(ResolveError::NeedsBuild { message });
        }
        // uv may report an index that refuses its credentials as a package that is not there: ask the
        // indexes with credentials directly, to say which one it is.
        if let Some((index, status)) = super::fetch::refused_index(input.index, input.credentials, input.timeouts).await {
            return Err(ResolveError::Denied { index, status });
        }
        return Err(ResolveError::Unsolvable { python: input.target.python, platform, message });
    }
    let text = std::fs::read_to_string(&out).map_err(io(&out))?;
    let dists: Vec<Dist> = read_pylock(&text, input.scratch, input.target, &platform, input.builder.is_some())?.into_iter().filter(|d| !input.provided.contains_key(&d.name)).collect();
    check_hashes(input.spec, &dists)?;
    Ok(dists)
}

/// The best wheel of each `[[packages]]` entry of uv's pylock.toml for the target.
fn read_pylock(text: &str, base: &Path, target: &Target, platform: &str, allow_sdist: bool) -> Result<Vec<Dist>, ResolveError> {
    let bad = |reason: String| ResolveError::Output { reason };
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| bad(e.to_string()))?;
    let packages = match doc.get("packages") {
        Some(p) => p.as_array_of_tables().ok_or_else(|| bad("packages is not an array of tables".into()))?.iter().collect::<Vec<_>>(),
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for p in packages {
        let name = p.get("name").and_then(|v| v.as_str()).ok_or_else(|| bad("a package without a name".into()))?;
        let version = p.get("version").and_then(|v| v.as_str()).ok_or_else(|| bad(format!("{name} has no version")))?;
        let mut best: Option<((u32, u32, u64), Dist)> = None;
        for w in p.get("wheels").and_then(|w| w.as_array()).into_iter().flatten() {
            let Some(w) = w.as_inline_table() else { continue };
            // `url` for index files; `path` (relative to the lock's folder) for --find-links folders.
            let url = match (w.get("url").and_then(|u| u.as_str()), w.get("path").and_then(|u| u.as_str())) {
                (Some(u), _) => Url::parse(u).ok(),
                (None, Some(p)) => Url::from_file_path(std::path::absolute(base.join(p)).unwrap_or_default()).ok(),
                _ => None,
            };
            let Some(url) = url else { continue };
            let Some(sha256) = w.get("hashes").and_then(|h| h.as_inline_table()).and_then(|h| h.get("sha256")).and_then(|s| s.as_str()) else {
                continue;
            };
            if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(format!("{name}: a wheel's sha256 {:?} is not a sha256", crate::net::escape(sha256))));
            }
            let size = w.get("size").and_then(|s| s.as_integer()).and_then(|s| u64::try_from(s).ok());
            let dist = Dist { name: super::normalize(name), version: version.to_string(), url: super::redact(&url), sha256: sha256.to_ascii_lowercase(), size, sdist: false };
            let Some(file) = dist.file_name() else { continue };
            let Some(rank) = rank(&file, target) else { continue };
            if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                best = Some((rank, dist));
            }
        }
        let sdist = || {
            let t = p.get("sdist")?.as_inline_table()?;
            let url = Url::parse(t.get("url")?.as_str()?).ok()?;
            let sha256 = t.get("hashes")?.as_inline_table()?.get("sha256")?.as_str()?;
            let ok = sha256.len() == 64 && sha256.chars().all(|c| c.is_ascii_hexdigit());
            let size = t.get("size").and_then(|s| s.as_integer()).and_then(|s| u64::try_from(s).ok());
            let d = Dist { name: super::normalize(name), version: version.to_string(), url: super::redact(&url), sha256: sha256.to_ascii_lowercase(), size, sdist: true };
            (ok && d.file_name().is_some()).then_some(d)
        };
        match best {
            Some((_, d)) => out.push(d),
            None => match sdist().filter(|_| allow_sdist) {
                Some(d) => out.push(d),
                None => return Err(ResolveError::NoWheel { name: name.to_string(), version: version.to_string(), python: target.python, platform: platform.to_string() }),
            },
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// How good a wheel is for the target (higher is better); `None` if it cannot run there. uv lists the
/// wheels it found compatible, but older uv versions listed every platform's, so envlayer checks each
/// one itself: the python tag (`py3`, `py3X`, `cp3X`; a `cp3Y-abi3` only for Y up to the target's minor),
/// the ABI (`cp3X`, `abi3`, `none`) and the platform (`any`, or `manylinux` of the target's architecture
/// no newer than its glibc; never `linux_*`, `musllinux` or another OS). Among those that fit, the
/// interpreter-specific build wins over the stable ABI, which wins over pure python; then the
/// platform-specific over `any`, then the newest manylinux.
fn rank(file: &str, target: &Target) -> Option<(u32, u32, u64)> {
    let stem = file.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    let (plats, abis, pys) = (parts.first()?, parts.get(1)?, parts.get(2)?);
    let (major, minor) = target.python;
    let cp = format!("cp{major}{minor}");
    let py_for = |t: &str| -> Option<u64> {
        // The python minor a tag needs: `py3` any, `py311`/`cp311` exactly 11; `cp37` (with abi3) 7+.
        let digits = t.strip_prefix("py").or_else(|| t.strip_prefix("cp"))?;
        match digits.strip_prefix(&major.to_string())? {
            "" => Some(0),
            m => m.parse().ok(),
        }
    };
    let mut abi_rank = 0;
    for py in pys.split('.') {
        let Some(needs) = py_for(py) else { continue };
        for abi in abis.split('.') {
            let r = match abi {
                a if a == cp && py == cp => 3,
                "abi3" if py.starts_with("cp") && needs <= minor => 2,
                "none" if needs == 0 || needs == minor => 1,
                _ => 0,
            };
            abi_rank = abi_rank.max(r);
        }
    }
    if abi_rank == 0 {
        return None;
    }
    let arch = match target.platform.as_str() {
        "linux-64" => "x86_64",
        "linux-aarch64" => "aarch64",
        _ => return None,
    };
    let glibc = |plat: &str| -> Option<u64> {
        let rest = plat.strip_suffix(&format!("_{arch}"))?;
        let (maj, min) = match rest {
            "manylinux1" => (2, 5),
            "manylinux2010" => (2, 12),
            "manylinux2014" => (2, 17),
            r => {
                let v = r.strip_prefix("manylinux_")?;
                let (a, b) = v.split_once('_')?;
                (a.parse().ok()?, b.parse().ok()?)
            }
        };
        (maj < target.glibc.0 || (maj == target.glibc.0 && min <= target.glibc.1)).then_some(maj * 1000 + min)
    };
    let mut plat_rank = None;
    for plat in plats.split('.') {
        let r = if plat == "any" { Some((0, 0)) } else { glibc(plat).map(|g| (1, g)) };
        if r > plat_rank {
            plat_rank = r;
        }
    }
    let (specific, newest) = plat_rank?;
    Some((abi_rank, specific, newest))
}

/// In hash-checking mode every distribution must be one of the hashed requirements, resolved to a wheel
/// with one of its hashes (as `pip install --require-hashes` checks).
pub(crate) fn check_hashes(spec: &PipSpec, dists: &[Dist]) -> Result<(), ResolveError> {
    if !spec.require_hashes() {
        return Ok(());
    }
    let hashes = spec.hashes();
    for d in dists {
        match hashes.get(&d.name) {
            None => {
                return Err(ResolveError::Hash {
                    what: format!("{} {} is needed (a dependency) but has no requirement with --hash; with hashes, every distribution must be listed and hashed", d.name, d.version),
                })
            }
            Some(allowed) if !allowed.contains(&d.sha256) => {
                return Err(ResolveError::Hash { what: format!("{} {}: the wheel's sha256 {} is not among the --hash values given", d.name, d.version, d.sha256) })
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheels_rank_specific_over_abi3_over_pure_and_other_platforms_never_fit() {
        let t = Target { python: (3, 11), platform: rattler_conda_types::Subdir::Linux64, glibc: (2, 28) };
        let a = rank("x-1-cp311-cp311-manylinux_2_17_x86_64.whl", &t).unwrap();
        let b = rank("x-1-cp37-abi3-manylinux_2_17_x86_64.whl", &t).unwrap();
        let c = rank("x-1-py3-none-any.whl", &t).unwrap();
        assert!(a > b && b > c);
        assert!(rank("x-1-cp311-cp311-manylinux_2_28_x86_64.whl", &t).unwrap() > a, "the newest manylinux that fits");
        for wrong in [
            "x-1-cp312-cp312-manylinux_2_17_x86_64.whl",
            "x-1-cp312-abi3-manylinux_2_17_x86_64.whl",
            "x-1-cp311-cp311-manylinux_2_31_x86_64.whl",
            "x-1-cp311-cp311-manylinux_2_17_aarch64.whl",
            "x-1-cp311-cp311-musllinux_1_2_x86_64.whl",
            "x-1-cp311-cp311-linux_x86_64.whl",
            "x-1-cp311-cp311-macosx_11_0_arm64.whl",
            "x-1-cp311-cp311-win_amd64.whl",
            "x-1-py2-none-any.whl",
        ] {
            assert_eq!(rank(wrong, &t), None, "{wrong}");
        }
        assert!(rank("x-1-cp311-cp311-manylinux1_x86_64.manylinux_2_5_x86_64.whl", &t).is_some());
    }

    #[test]
    fn platform_tags_follow_glibc() {
        let t = |glibc| Target { python: (3, 11), platform: rattler_conda_types::Subdir::Linux64, glibc };
        assert_eq!(t((2, 17)).uv_platform().unwrap(), "x86_64-manylinux_2_17");
        assert_eq!(t((2, 30)).uv_platform().unwrap(), "x86_64-manylinux_2_28");
        assert_eq!(t((2, 39)).uv_platform().unwrap(), "x86_64-manylinux_2_39");
        assert!(t((2, 12)).uv_platform().is_err());
    }

    #[test]
    fn pylock_gives_one_wheel_each_without_credentials() {
        let text = r#"
lock-version = "1.0"
[[packages]]
name = "Charset_Normalizer"
version = "3.5.3"
wheels = [
  { url = "https://u:p@h/c-3.5.3-py3-none-any.whl", size = 1, hashes = { sha256 = "96e268b0cbda016ac519513294fcd17032264085b600abaac58b93049477e132" } },
  { url = "https://h/charset_normalizer-3.5.3-cp311-cp311-manylinux_2_28_x86_64.whl", hashes = { sha256 = "2A6F937E0B70133D1F826D0A253331B6FE1A4C874808CC12E16F2FB8177042F4" } },
]
[[packages]]
name = "only-sdist"
version = "1"
sdist = { url = "https://h/only-sdist-1.tar.gz", hashes = { sha256 = "00" } }
"#;
        let t = Target { python: (3, 11), platform: rattler_conda_types::Subdir::Linux64, glibc: (2, 28) };
        let e = read_pylock(text, Path::new("/"), &t, "x86_64-manylinux_2_28", false).unwrap_err().to_string();
        assert!(e.contains("only-sdist") && e.contains("source distribution"), "{e}");
        let first = text.split("[[packages]]\nname = \"only-sdist\"").next().unwrap();
        let d = read_pylock(first, Path::new("/"), &t, "p", false).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].name, "charset-normalizer");
        assert!(d[0].url.as_str().ends_with("manylinux_2_28_x86_64.whl"));
        assert_eq!(d[0].sha256, "2a6f937e0b70133d1f826d0a253331b6fe1a4c874808cc12e16f2fb8177042f4");
    }
}
