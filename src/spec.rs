//! Stage 1, spec: an `environment.yaml` (conda's format) read into a typed [`EnvSpec`], with errors that
//! name the file, line and column.

use rattler_conda_types::{MatchSpec, NamedChannelOrUrl};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

/// How an environment reaches the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallMode {
    /// Every package baked into layers (the default).
    #[default]
    Baked,
    /// No package layers: the image installs the environment when the container starts (the
    /// per-environment opt-out, for packages that break when baked).
    Runtime,
}

/// The `envlayer:` section of an environment file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvlayerSection {
    /// `install: runtime` opts this environment out of baked layers.
    #[serde(default)]
    pub install: InstallMode,
    /// Labels for the image config.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Annotations for the image manifest.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// A conda environment as the user wrote it.
#[derive(Debug, Clone)]
pub struct EnvSpec {
    /// The environment's name (`name:`).
    pub name: String,
    /// Channels, in priority order, as written.
    pub channels: Vec<NamedChannelOrUrl>,
    /// The conda package specs.
    pub specs: Vec<MatchSpec>,
    /// The folder that relative channel paths are resolved against (the file's folder).
    pub root_dir: PathBuf,
    /// The file it came from.
    pub source: PathBuf,
    /// The `envlayer:` section.
    pub envlayer: EnvlayerSection,
    /// The pip part: a `pip:` list under `dependencies:`, or the requirements file of a PIP environment.
    pub pip: Option<crate::pypi::PipSpec>,
}

/// The largest environment file envlayer reads.
pub const MAX_ENV_FILE_BYTES: u64 = 1 << 20;

/// Label and annotation keys that only envlayer sets: its own (`io.envlayer.*`) and the TTL label Quay
/// honours. A user (or an environment file) that set them could make an image look like another
/// environment's, or expire someone else's tag.
pub fn check_user_key(key: &str) -> Result<(), KeyError> {
    if crate::keys::is_reserved(key) {
        return Err(KeyError::Reserved { key: key.to_string() });
    }
    if key.is_empty() || key.len() > 256 || key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(KeyError::Malformed { key: crate::net::escape(key) });
    }
    Ok(())
}

/// Why a label or annotation key from the user is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is one envlayer sets itself.
    #[error("{key:?} is reserved for envlayer (io.envlayer.* and quay.expires-after are set by envlayer itself; use --ttl for expiry)")]
    Reserved {
        /// The key.
        key: String,
    },
    /// The key is empty, too long, or has whitespace or control characters.
    #[error("{key:?} is not a valid label or annotation key")]
    Malformed {
        /// The key, escaped for printing.
        key: String,
    },
}

/// Checks the platform's rule for environment names: 2-63 characters of lowercase letters, digits and
/// '-', starting and ending with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (2..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "environment name {name:?} is invalid: use 2-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

/// Why an environment file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read environment file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or a value in it is invalid (a bad match spec, say).
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 where unknown.
        line: usize,
        /// 1-based column, 0 where unknown.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A required field is missing or empty.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

impl EnvSpec {
    /// Reads and checks an environment file.
    pub fn from_path(path: &Path) -> Result<Self, SpecError> {
        let read = |source| SpecError::Read { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(read)?;
        let len = file.metadata().map_err(read)?.len();
        if len > MAX_ENV_FILE_BYTES {
            return Err(SpecError::Invalid {
                path: path.to_path_buf(),
                what: format!("the file is {len} bytes; environment files are at most {MAX_ENV_FILE_BYTES} bytes"),
            });
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_ENV_FILE_BYTES), &mut text).map_err(read)?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses an environment file's text; `path` is used in errors and to resolve relative channel paths.
    pub fn from_yaml_str(text: &str, path: &Path) -> Result<Self, SpecError> {
        let invalid = |what: String| SpecError::Invalid { path: path.to_path_buf(), what };
        if text.len() as u64 > MAX_ENV_FILE_BYTES {
            return Err(invalid(format!("the text is {} bytes; environment files are at most {MAX_ENV_FILE_BYTES} bytes", text.len())));
        }
        crate::yaml_checks::check_flow_nesting(text).map_err(|(line, what)| SpecError::Syntax { path: path.to_path_buf(), line, column: 0, message: what })?;
        crate::yaml_checks::check_list_indentation(text).map_err(|(line, column, message)| SpecError::Syntax { path: path.to_path_buf(), line, column, message })?;
        // Parse as plain YAML first so syntax errors carry a location even when the document is not a map.
        let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| syntax(path, &e))?;
        if !doc.is_mapping() {
            return Err(invalid("expected a mapping with name, channels and dependencies".into()));
        }
        let env = rattler_conda_types::EnvironmentYaml::from_yaml_str(text).map_err(|e| syntax(path, &e))?;
        let name = env.name.clone().filter(|n| !n.trim().is_empty()).ok_or_else(|| invalid("no `name:`".into()))?;
        check_name(&name).map_err(invalid)?;
        let envlayer: EnvlayerSection = match doc.get("envlayer") {
            Some(v) => serde_yaml::from_value(v.clone()).map_err(|e| invalid(format!("envlayer section: {e}")))?,
            None => EnvlayerSection::default(),
        };
        for (kind, map) in [("label", &envlayer.labels), ("annotation", &envlayer.annotations)] {
            for key in map.keys() {
                check_user_key(key).map_err(|e| invalid(format!("envlayer section: {kind} {e}")))?;
            }
        }
        let root_dir = path
            .parent()
            .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let root_dir = std::path::absolute(&root_dir).unwrap_or(root_dir);
        let pip = match env.pip_specs() {
            Some(entries) if !entries.is_empty() => Some(crate::pypi::spec::from_entries(entries, path, &root_dir).map_err(|e| invalid(e.to_string()))?),
            _ => None,
        };
        let specs: Vec<MatchSpec> = env.match_specs().cloned().collect();
        if specs.is_empty() {
            return Err(invalid("no conda packages under `dependencies:`".into()));
        }
        if env.channels.is_empty() {
            return Err(invalid("no `channels:`".into()));
        }
        Ok(Self { name, channels: env.channels, specs, root_dir, source: path.to_path_buf(), envlayer, pip })
    }

    /// A PIP environment: `requirements` (a requirements.txt) on a conda `python` of version `python`
    /// (`3.11`) from `channels` (conda-forge when none), named `name` (default: the file's stem).
    pub fn from_requirements(requirements: &Path, python: &str, channels: &[String], name: Option<&str>) -> Result<Self, SpecError> {
        let invalid = |what: String| SpecError::Invalid { path: requirements.to_path_buf(), what };
        let pip = crate::pypi::spec::from_file(requirements).map_err(|e| match e {
            crate::pypi::spec::PipSpecError::Read { path, source } => SpecError::Read { path, source },
            other => invalid(other.to_string()),
        })?;
        let stem = requirements.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_ascii_lowercase().replace(['_', '.'], "-");
        let name = name.map(str::to_string).unwrap_or(stem);
        check_name(&name).map_err(|e| invalid(format!("{e}; name the environment with --name")))?;
        let ok = python.split('.').count() == 2 && python.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            return Err(invalid(format!("--python {python:?}: expected MAJOR.MINOR, like 3.11")));
        }
        let spec = MatchSpec::from_str(&format!("python {python}.*"), rattler_conda_types::ParseStrictness::Strict)
            .map_err(|e| invalid(format!("--python {python}: {e}")))?;
        let channels: Vec<NamedChannelOrUrl> = if channels.is_empty() {
            vec![NamedChannelOrUrl::Name("conda-forge".into())]
        } else {
            channels.iter().map(|c| NamedChannelOrUrl::from_str(c).map_err(|e| invalid(format!("--channel {c}: {e}")))).collect::<Result<_, _>>()?
        };
        let root_dir = std::env::current_dir().map_err(|source| SpecError::Read { path: ".".into(), source })?;
        Ok(Self { name, channels, specs: vec![spec], root_dir, source: requirements.to_path_buf(), envlayer: EnvlayerSection::default(), pip: Some(pip) })
    }
}

fn syntax(path: &Path, e: &serde_yaml::Error) -> SpecError {
    let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
    // serde_yaml appends " at line L column C" to its message; the location is already in front.
    let mut message = e.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    if message.contains("did not find expected") || message.contains("mapping values are not allowed") {
        message.push_str(" (check this line's indentation against the lines above: YAML nests by indentation, and a list's `-` all start in one column)");
    }
    SpecError::Syntax { path: path.to_path_buf(), line, column, message }
}

#[cfg(test)]
mod tests {
    use super::*;


    #[test]
    fn parses_a_plain_file() {
        let s = EnvSpec::from_yaml_str(
            "name: demo\nchannels:\n  - ./chan\n  - conda-forge\ndependencies:\n  - python=3.11\n  - flask\n",
            Path::new("/x/env.yaml"),
        )
        .unwrap();
        assert_eq!(s.name, "demo");
        assert_eq!(s.specs.len(), 2);
        assert_eq!(s.channels.len(), 2);
        assert_eq!(s.root_dir, Path::new("/x"));
    }

    #[test]
    fn names_follow_the_platform_rule_and_the_envlayer_section_is_read() {
        for bad in ["a", "-ab", "ab-", "Ab", "a_b", &"a".repeat(64)] {
            let e = EnvSpec::from_yaml_str(&format!("name: '{bad}'\nchannels: [c]\ndependencies: [x]\n"), Path::new("e.yaml"));
            assert!(e.unwrap_err().to_string().contains("2-63"), "{bad}");
        }
        for good in ["ab", "a-1", &"a".repeat(63)] {
            EnvSpec::from_yaml_str(&format!("name: '{good}'\nchannels: [c]\ndependencies: [x]\n"), Path::new("e.yaml")).unwrap();
        }
        let s = EnvSpec::from_yaml_str(
            "name: ab\nchannels: [c]\ndependencies: [x]\nenvlayer:\n  install: runtime\n  labels: {team: ml}\n  annotations: {owner: me}\n",
            Path::new("e.yaml"),
        )
        .unwrap();
        assert_eq!(s.envlayer.install, InstallMode::Runtime);
        assert_eq!(s.envlayer.labels["team"], "ml");
        assert_eq!(s.envlayer.annotations["owner"], "me");
        let e = EnvSpec::from_yaml_str("name: ab\nchannels: [c]\ndependencies: [x]\nenvlayer:\n  instal: runtime\n", Path::new("e.yaml"));
        assert!(e.unwrap_err().to_string().contains("instal"));
        for key in ["io.envlayer.env.inputs", "quay.expires-after", "io.envlayer.base"] {
            for kind in ["labels", "annotations"] {
                let e = EnvSpec::from_yaml_str(&format!("name: ab\nchannels: [c]\ndependencies: [x]\nenvlayer:\n  {kind}: {{{key}: x}}\n"), Path::new("e.yaml"));
                assert!(e.unwrap_err().to_string().contains("reserved"), "{kind} {key}");
            }
        }
    }

    #[test]
    fn huge_and_deeply_nested_files_are_refused_without_a_panic() {
        let big = format!("name: ab\nchannels: [c]\ndependencies: [x]\n#{}\n", "x".repeat(MAX_ENV_FILE_BYTES as usize));
        assert!(EnvSpec::from_yaml_str(&big, Path::new("e.yaml")).unwrap_err().to_string().contains("at most"));
        let deep = format!("name: ab\nchannels: [c]\ndependencies: {}x{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert!(EnvSpec::from_yaml_str(&deep, Path::new("e.yaml")).is_err());
        let aliases = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nname: ab\nchannels: [c]\ndependencies: [*g]\n";
        assert!(EnvSpec::from_yaml_str(aliases, Path::new("e.yaml")).is_err());
    }

    #[test]
    fn malformed_yaml_names_line_and_column() {
        let e = EnvSpec::from_yaml_str("name: demo\nchannels: [a\ndependencies:\n  - x\n", Path::new("e.yaml"))
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, SpecError::Syntax { line, .. } if line >= 2), "{msg}");
        assert!(msg.starts_with("e.yaml:"), "{msg}");
    }

    #[test]
    fn bad_match_spec_and_missing_fields_are_errors() {
        let e = EnvSpec::from_yaml_str("name: dd\nchannels: [c]\ndependencies:\n  - 'python >>= 3'\n", Path::new("e.yaml"));
        assert!(e.is_err());
        let e = EnvSpec::from_yaml_str("channels: [c]\ndependencies: [x]\n", Path::new("e.yaml")).unwrap_err();
        assert!(e.to_string().contains("name"), "{e}");
        let s = EnvSpec::from_yaml_str(
            "name: dd\nchannels: [c]\ndependencies: [x, {pip: [--extra-index-url http://u:p@127.0.0.1:1/simple, 'requests[socks]>=2; python_version>\"3\"']}]\n",
            Path::new("e.yaml"),
        )
        .unwrap();
        let pip = s.pip.unwrap();
        assert_eq!(pip.requirements[0].name, "requests");
        assert_eq!(pip.index.extra_index_urls.len(), 1);
        let e = EnvSpec::from_yaml_str("name: dd\nchannels: [c]\ndependencies: [x, {pip: [--no-deps]}]\n", Path::new("e.yaml")).unwrap_err();
        assert!(e.to_string().contains("e.yaml: pip entry 1") && e.to_string().contains("--no-deps"), "{e}");
    }
}
