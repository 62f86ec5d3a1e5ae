//! Step 1, inputs: everything that decides the image, read and checked once from the options and the
//! environment file (no channel, base or registry is touched), and the identity computed from it.

use super::{BuildError, BuildOptions};
use crate::spec::{EnvSpec, InstallMode};
use envlayer_layers::Digest;
use rattler_conda_types::{Channel, GenericVirtualPackage, Subdir};
use std::collections::BTreeMap;

/// The inputs that decide the image.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The environment file, parsed.
    pub spec: EnvSpec,
    /// The environment's path in the image.
    pub prefix: String,
    /// `os`, `architecture`, `variant` of the image.
    pub os_arch: (String, String, Option<String>),
    /// The channels as URLs (not looked at: a local channel may be gone when a fresh image exists).
    pub channels: Vec<Channel>,
    /// The virtual packages of the machine the image runs on.
    pub virtual_packages: Vec<GenericVirtualPackage>,
    /// Baked, or installed when the container starts.
    pub install_mode: InstallMode,
    /// The user's labels: the environment file's, then the command line's over them.
    pub labels: BTreeMap<String, String>,
    /// The user's annotations, likewise.
    pub annotations: BTreeMap<String, String>,
    /// The pip indexes: the files', then the command line's (credentials included: never shown).
    pub pip_index: crate::pypi::IndexOptions,
}

impl Inputs {
    /// Reads the environment file and checks the options.
    pub fn read(opts: &BuildOptions) -> Result<Self, BuildError> {
        let spec = read_spec(opts)?;
        let pip_index = spec.pip.as_ref().map(|p| p.index.clone()).unwrap_or_default().merged(&opts.pip_index);
        let prefix = opts.prefix.clone().unwrap_or_else(|| format!("/opt/conda/envs/{}", spec.name));
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') || prefix.contains("/../") || prefix.contains("//") {
            return Err(BuildError::Prefix { prefix });
        }
        let os_arch = oci_platform(opts.platform)?;
        for (kind, map) in [("--label", &opts.labels), ("--annotation", &opts.annotations)] {
            for key in map.keys() {
                crate::spec::check_user_key(key).map_err(|source| BuildError::Key { flag: kind, source })?;
            }
        }
        let channels = crate::solve::channel_urls(&spec.channels, &spec.root_dir)?;
        let virtual_packages =
            crate::solve::override_virtual_packages(crate::solve::default_virtual_packages(opts.platform), &opts.virtual_packages)?;
        let mut labels = spec.envlayer.labels.clone();
        labels.extend(opts.labels.clone());
        let mut annotations = spec.envlayer.annotations.clone();
        annotations.extend(opts.annotations.clone());
        let install_mode = opts.install.unwrap_or(spec.envlayer.install);
        Ok(Self { spec, prefix, os_arch, channels, virtual_packages, install_mode, labels, annotations, pip_index })
    }
}

/// The environment file of `opts`: an environment.yaml, or with `python` set a requirements file.
pub fn read_spec(opts: &BuildOptions) -> Result<EnvSpec, crate::spec::SpecError> {
    match &opts.python {
        Some(python) => EnvSpec::from_requirements(&opts.env_file, python, &opts.channels, opts.name.as_deref()),
        None if matches!(opts.env_file.extension().and_then(|e| e.to_str()), Some("txt" | "in")) => Err(crate::spec::SpecError::Invalid {
            path: opts.env_file.clone(),
            what: "looks like a pip requirements file: give the python to install it on, e.g. --python 3.11".into(),
        }),
        None => EnvSpec::from_path(&opts.env_file),
    }
}

/// `("linux", "amd64", None)` and so on: the OCI platform of a conda subdir.
pub fn oci_platform(platform: Subdir) -> Result<(String, String, Option<String>), BuildError> {
    let (arch, variant) = match platform.as_str() {
        "linux-64" => ("amd64", None),
        "linux-aarch64" => ("arm64", Some("v8")),
        "linux-ppc64le" => ("ppc64le", None),
        "linux-s390x" => ("s390x", None),
        "linux-armv7l" => ("arm", Some("v7")),
        other => return Err(BuildError::Platform { platform: other.to_string() }),
    };
    Ok(("linux".into(), arch.into(), variant.map(String::from)))
}

/// `24h`, `90m`, `45s`: a TTL the way Quay's `quay.expires-after` label reads it.
pub fn format_ttl(ttl: std::time::Duration) -> String {
    let s = ttl.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The environment's identity: a hash of its normalized inputs (specs, channels, platform, prefix,
/// virtual packages, base image digest, and every option that changes the image's bytes). The same
/// environment always has the same identity; a changed one never shares it. It is computed without
/// touching any channel, so looking an environment up costs no solve.
pub fn identity(opts: &BuildOptions, inputs: &Inputs, base_digest: Option<&Digest>) -> Result<String, BuildError> {
    let mut specs: Vec<String> = inputs.spec.specs.iter().map(|s| s.to_string()).collect();
    specs.sort();
    let lock = match &opts.lock {
        Some(l) => Some(Digest::of(&std::fs::read(l).map_err(|source| BuildError::Io { path: l.clone(), source })?).to_string()),
        None => None,
    };
    let mut input = serde_json::json!({
        "format": crate::cache::LAYER_FORMAT,
        "name": inputs.spec.name,
        "specs": specs,
        "channels": inputs.channels.iter().map(|c| c.base_url.to_string()).collect::<Vec<_>>(),
        "platform": opts.platform.as_str(),
        "prefix": inputs.prefix,
        "virtual_packages": inputs.virtual_packages.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        "base": base_digest.map(|d| d.to_string()),
        "compression": opts.compression.id(),
        "max_layers": opts.max_layers,
        "lock": lock,
        "install": inputs.install_mode,
        "ttl": opts.ttl.map(format_ttl),
        "labels": inputs.labels,
        "annotations": inputs.annotations,
    });
    if let Some(e) = &opts.lock_environment {
        input["lock_environment"] = serde_json::json!(e);
    }
    // Only environments with a pip part have the key: a conda environment keeps the identity (and the
    // `resolve` hits) it had before pip support.
    if let Some(p) = &inputs.spec.pip {
        input["pip"] = serde_json::json!({
            "requirements": p.requirements.iter().map(|r| (&r.text, &r.hashes)).collect::<Vec<_>>(),
            "constraints": p.constraints.iter().map(|r| &r.text).collect::<Vec<_>>(),
            "indexes": inputs.pip_index.urls().map(|u| crate::pypi::redact(u).to_string()).collect::<Vec<_>>(),
        });
    }
    // Likewise for bucketed layers: images with one layer per package keep their identity.
    if let Some(b) = opts.buckets {
        input["buckets"] = serde_json::json!({ "below": b.below, "count": b.count });
    }
    if let Some(s) = opts.split_above {
        input["split_above"] = serde_json::json!(s);
    }
    Ok(Digest::of(&crate::image::canonical_json(&input)).hex())
}
