//! Synthetic conda packages and channels, written with rattler's package writers: the example channel
//! the README builds from (conda-forge is not needed for a first try), test fixtures, and benchmarks.

use rattler_conda_types::compression_level::CompressionLevel;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One file of a synthetic package.
#[derive(Debug, Clone)]
pub struct SynthFile {
    /// Its path in the environment, e.g. `bin/hello`.
    pub path: String,
    /// Its content (ignored for symlinks).
    pub content: Vec<u8>,
    /// Whether it is executable.
    pub executable: bool,
    /// A text prefix placeholder in its content, rewritten to the install prefix.
    pub placeholder: Option<String>,
    /// Makes it a symlink to this target.
    pub symlink: Option<String>,
}

impl SynthFile {
    /// A plain data file.
    pub fn data(path: &str, content: impl Into<Vec<u8>>) -> Self {
        Self { path: path.into(), content: content.into(), executable: false, placeholder: None, symlink: None }
    }
    /// An executable script whose text contains `placeholder` wherever the prefix goes.
    pub fn script(path: &str, content: &str, placeholder: &str) -> Self {
        Self {
            path: path.into(),
            content: content.as_bytes().to_vec(),
            executable: true,
            placeholder: Some(placeholder.into()),
            symlink: None,
        }
    }
    /// A symlink.
    pub fn symlink(path: &str, target: &str) -> Self {
        Self { path: path.into(), content: vec![], executable: false, placeholder: None, symlink: Some(target.into()) }
    }
}

/// A synthetic package.
#[derive(Debug, Clone)]
pub struct SynthPackage {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Build string.
    pub build: String,
    /// `noarch` (generic) when true, else `linux-64`.
    pub noarch: bool,
    /// Run dependencies (match specs).
    pub depends: Vec<String>,
    /// Files.
    pub files: Vec<SynthFile>,
}

impl SynthPackage {
    /// A `noarch: generic` package with no dependencies and no files.
    pub fn new(name: &str, version: &str) -> Self {
        Self { name: name.into(), version: version.into(), build: "0".into(), noarch: true, depends: vec![], files: vec![] }
    }
    /// Adds a dependency.
    pub fn depends(mut self, spec: &str) -> Self {
        self.depends.push(spec.into());
        self
    }
    /// Adds a file.
    pub fn file(mut self, f: SynthFile) -> Self {
        self.files.push(f);
        self
    }
    fn subdir(&self) -> &'static str {
        if self.noarch { "noarch" } else { "linux-64" }
    }
    /// `name-version-build.conda`.
    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.conda", self.name, self.version, self.build)
    }
}

/// Writes `pkg` as a `.conda` archive into `dir` and returns its path. Archives are reproducible (fixed
/// timestamp, sorted entries).
pub fn write_package(pkg: &SynthPackage, dir: &Path) -> std::io::Result<PathBuf> {
    use sha2::Digest as _;
    let work = tempfile::tempdir()?;
    let base = work.path();
    let mut paths = Vec::new();
    let mut entries = Vec::new();
    for f in &pkg.files {
        let p = base.join(&f.path);
        std::fs::create_dir_all(p.parent().unwrap_or(base))?;
        if let Some(target) = &f.symlink {
            std::os::unix::fs::symlink(target, &p)?;
            entries.push(json!({"_path": f.path, "path_type": "softlink", "size_in_bytes": 0,
                "sha256": crate::fetch::hex(&sha2::Sha256::digest(target.as_bytes()))}));
        } else {
            std::fs::write(&p, &f.content)?;
            if f.executable {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
            }
            let mut e = json!({"_path": f.path, "path_type": "hardlink", "size_in_bytes": f.content.len(),
                "sha256": crate::fetch::hex(&sha2::Sha256::digest(&f.content))});
            if let Some(ph) = &f.placeholder {
                e["prefix_placeholder"] = json!(ph);
                e["file_mode"] = json!("text");
            }
            entries.push(e);
        }
        paths.push(p);
    }
    let timestamp_ms: i64 = 1_700_000_000_000;
    let mut index = json!({
        "name": pkg.name, "version": pkg.version, "build": pkg.build, "build_number": 0,
        "depends": pkg.depends, "license": "BSD-3-Clause", "subdir": pkg.subdir(), "timestamp": timestamp_ms,
    });
    if pkg.noarch {
        index["noarch"] = json!("generic");
    } else {
        index["arch"] = json!("x86_64");
        index["platform"] = json!("linux");
    }
    let info = base.join("info");
    std::fs::create_dir_all(&info)?;
    let meta = [
        ("index.json", index),
        ("paths.json", json!({"paths": entries, "paths_version": 1})),
        ("about.json", json!({"summary": format!("synthetic package {}", pkg.name), "license": "BSD-3-Clause"})),
    ];
    for (name, value) in meta {
        std::fs::write(info.join(name), serde_json::to_vec_pretty(&value).map_err(std::io::Error::other)?)?;
        paths.push(info.join(name));
    }
    paths.sort();
    let out_dir = dir.join(pkg.subdir());
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join(pkg.file_name());
    let ts = jiff::Timestamp::from_millisecond(timestamp_ms).map_err(std::io::Error::other)?;
    let file = std::fs::File::create(&out)?;
    let stem = out.file_name().and_then(|n| n.to_str()).unwrap_or("pkg").trim_end_matches(".conda").to_string();
    rattler_package_streaming::write::write_conda_package(
        file,
        base,
        &paths,
        CompressionLevel::Default,
        Some(1),
        &stem,
        Some(&ts),
        None,
    )?;
    Ok(out)
}

/// Writes a channel at `dir`: every package, and `repodata.json` for `noarch` and `linux-64`. Packages
/// are written one at a time, so a large channel never has to be in memory at once.
pub async fn write_channel(dir: &Path, pkgs: impl IntoIterator<Item = SynthPackage>) -> std::io::Result<()> {
    let mut by_subdir: BTreeMap<&str, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    by_subdir.insert("noarch", Default::default());
    by_subdir.insert("linux-64", Default::default());
    for pkg in pkgs {
        let pkg = &pkg;
        let path = write_package(pkg, dir)?;
        let record = rattler_package_streaming::fs::repodata_record_from_package_archive(&path)
            .await
            .map_err(std::io::Error::other)?;
        let value = serde_json::to_value(&record.package_record).map_err(std::io::Error::other)?;
        by_subdir.entry(pkg.subdir()).or_default().insert(pkg.file_name(), value);
    }
    for (subdir, packages) in by_subdir {
        let repodata = json!({"info": {"subdir": subdir}, "packages": {}, "packages.conda": packages, "repodata_version": 1});
        std::fs::create_dir_all(dir.join(subdir))?;
        std::fs::write(
            dir.join(subdir).join("repodata.json"),
            crate::image::canonical_json(&repodata),
        )?;
    }
    Ok(())
}

/// The example channel of the README: a tiny environment with a prefix-rewritten script, a data
/// package it reads, an activation script, and a symlink.
pub fn example_packages() -> Vec<SynthPackage> {
    const PH: &str = "/opt/anaconda1anaconda2anaconda3";
    vec![
        SynthPackage::new("envlayer-greeting", "1.0")
            .file(SynthFile::data("share/envlayer-greeting/greeting.txt", "Hello from an envlayer image!\n"))
            .file(SynthFile::data(
                "etc/conda/activate.d/envlayer-greeting.sh",
                "export ENVLAYER_GREETING_DIR=\"${CONDA_PREFIX}/share/envlayer-greeting\"\n",
            )),
        SynthPackage::new("envlayer-hello", "1.2")
            .depends("envlayer-greeting >=1.0")
            .file(SynthFile::script(
                "bin/envlayer-hello",
                &format!("#!/bin/sh\n# installed at {PH}\ncat \"{PH}/share/envlayer-greeting/greeting.txt\"\n"),
                PH,
            ))
            .file(SynthFile::symlink("bin/hello", "envlayer-hello")),
        SynthPackage::new("envlayer-docs", "0.3").file(SynthFile::data(
            "share/doc/envlayer-docs/README",
            "Each conda package of this environment is one layer of the image.\n",
        )),
    ]
}

/// A deterministic generator (xorshift), so the same seed always gives the same packages.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Content that compresses about as well as real package files (roughly 3:1 with gzip -6): text-like
/// runs of words mixed with runs of random bytes.
fn content(rng: &mut Rng, size: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "import ", "def ", "return ", "self", "(", "):\n    ", "numpy", "array", " = ", "0x7f", "lib", ".so",
        "conda", "\n", "for i in range", "    ",
    ];
    let mut v = Vec::with_capacity(size);
    while v.len() < size {
        if rng.below(4) == 0 {
            let n = 64 + rng.below(512) as usize;
            for _ in 0..n {
                v.push(rng.next() as u8);
            }
        } else {
            let n = 32 + rng.below(256);
            for _ in 0..n {
                v.extend_from_slice(WORDS[rng.below(16) as usize].as_bytes());
            }
        }
    }
    v.truncate(size);
    v
}

/// A large synthetic environment for benchmarks: `count` `linux-64` packages named `synth-NNN` adding up
/// to about `total_bytes`, with a heavy-tailed size mix (a few big libraries, many small packages), 1 to
/// a few hundred files each, and each package depending on up to three earlier ones.
pub fn large_packages(count: usize, total_bytes: u64, seed: u64) -> impl Iterator<Item = SynthPackage> {
    let mut rng = Rng(seed | 1);
    // Heavy tail: weight ~ 1/rank, shuffled.
    let weights: Vec<f64> = (0..count).map(|i| 1.0 / (1.0 + (i as f64))).collect();
    let sum: f64 = weights.iter().sum();
    let mut order: Vec<usize> = (0..count).collect();
    for i in (1..count).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let sizes: Vec<u64> = order.iter().map(|&r| ((weights[r] / sum) * total_bytes as f64) as u64 + 2048).collect();
    (0..count).map(move |i| {
        let mut rng = Rng((seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
        let size = sizes[i];
        let files = (1 + rng.below(1 + (size / 20_000).min(300))) as usize;
        let mut pkg = SynthPackage::new(&format!("synth-{i:03}"), "1.0");
        pkg.noarch = false;
        for d in 0..rng.below(4).min(i as u64) {
            let dep = (rng.below(i as u64) + d) as usize % i.max(1);
            let spec = format!("synth-{dep:03}");
            if !pkg.depends.contains(&spec) {
                pkg.depends.push(spec);
            }
        }
        let mut left = size as usize;
        for f in 0..files {
            let part = if f + 1 == files { left } else { (left / (files - f)).max(1) * (1 + rng.below(2) as usize) / 2 + 1 };
            let part = part.min(left);
            left -= part;
            let dir = ["lib", "share/data", "include", "bin", "lib/python3.11/site-packages/pkg"][rng.below(5) as usize];
            pkg.files.push(SynthFile::data(&format!("{dir}/synth-{i:03}/file-{f:04}.dat"), content(&mut rng, part)));
        }
        pkg
    })
}
