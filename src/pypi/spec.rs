//! The pip half of an environment as the user wrote it: `environment.yaml`'s `pip:` entries, or a
//! `requirements.txt` with its `-r`, `-c`, `--hash` and index option lines, plus the command line's index
//! options. Read here, line by line, so that errors name the file and line, the credentials of every
//! index are known to [`super::fetch`], and `--hash` is enforced the way pip enforces it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use url::Url;

/// Where distributions come from. Its `Debug` shows the URLs without credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IndexOptions {
    /// `--index-url`: replaces PyPI.
    pub index_url: Option<Url>,
    /// `--extra-index-url`: searched as well.
    pub extra_index_urls: Vec<Url>,
    /// `--find-links`: a folder of distributions, or a page of links.
    pub find_links: Vec<Url>,
}

impl std::fmt::Debug for IndexOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |u: &Url| super::redact(u).to_string();
        f.debug_struct("IndexOptions")
            .field("index_url", &self.index_url.as_ref().map(shown))
            .field("extra_index_urls", &self.extra_index_urls.iter().map(shown).collect::<Vec<_>>())
            .field("find_links", &self.find_links.iter().map(shown).collect::<Vec<_>>())
            .finish()
    }
}

impl IndexOptions {
    /// These options, then `other`'s over them (a later `--index-url` wins; lists add up, without repeats).
    pub fn merged(&self, other: &IndexOptions) -> IndexOptions {
        let mut out = self.clone();
        if other.index_url.is_some() {
            out.index_url = other.index_url.clone();
        }
        for u in &other.extra_index_urls {
            if !out.extra_index_urls.contains(u) {
                out.extra_index_urls.push(u.clone());
            }
        }
        for u in &other.find_links {
            if !out.find_links.contains(u) {
                out.find_links.push(u.clone());
            }
        }
        out
    }

    /// Every URL, the index first.
    pub fn urls(&self) -> impl Iterator<Item = &Url> {
        self.index_url.iter().chain(&self.extra_index_urls).chain(&self.find_links)
    }
}

/// One requirement line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The PEP 508 requirement, without options.
    pub text: String,
    /// Its normalized name.
    pub name: String,
    /// `--hash=sha256:...` values (lowercase hex), if any.
    pub hashes: Vec<String>,
    /// `file:line`, for errors.
    pub origin: String,
}

/// The pip part of an environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipSpec {
    /// The requirements, in the order written.
    pub requirements: Vec<Requirement>,
    /// `-c` constraints.
    pub constraints: Vec<Requirement>,
    /// Index options from the files (the command line's are merged in by the build).
    pub index: IndexOptions,
}

impl PipSpec {
    /// Whether any requirement is hashed: then every one must be, and pinned with `==`, as pip's
    /// hash-checking mode requires.
    pub fn require_hashes(&self) -> bool {
        self.requirements.iter().any(|r| !r.hashes.is_empty())
    }

    /// The allowed sha256 values per normalized name (hash-checking mode).
    pub fn hashes(&self) -> BTreeMap<String, Vec<String>> {
        self.requirements.iter().filter(|r| !r.hashes.is_empty()).map(|r| (r.name.clone(), r.hashes.clone())).collect()
    }
}

/// Why the pip part cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PipSpecError {
    /// A requirements file could not be read.
    #[error("cannot read requirements file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line envlayer does not understand or refuses.
    #[error("{origin}: {what}")]
    Line {
        /// `file:line` (or `file: pip entry N`).
        origin: String,
        /// What is wrong, and the fix where there is one.
        what: String,
    },
}

/// The largest requirements file read, and the deepest `-r` nesting.
const MAX_FILE_BYTES: u64 = 1 << 20;
const MAX_DEPTH: usize = 16;

/// Reads the `pip:` entries of an environment file (`file`, for errors); relative `--find-links` paths
/// and `-r` files are taken from `root` (the environment file's folder), as conda's pip call does.
pub fn from_entries(entries: &[String], file: &Path, root: &Path) -> Result<PipSpec, PipSpecError> {
    let mut spec = PipSpec::default();
    for (n, entry) in entries.iter().enumerate() {
        let origin = format!("{}: pip entry {}", file.display(), n + 1);
        parse_line(entry, &origin, root, &mut spec, 0)?;
    }
    check(&spec)?;
    Ok(spec)
}

/// Reads a requirements file and the files it includes.
pub fn from_file(path: &Path) -> Result<PipSpec, PipSpecError> {
    let mut spec = PipSpec::default();
    read_file(path, &mut spec, 0, false)?;
    check(&spec)?;
    Ok(spec)
}

fn read_file(path: &Path, spec: &mut PipSpec, depth: usize, constraints: bool) -> Result<(), PipSpecError> {
    let read = |source| PipSpecError::Read { path: path.to_path_buf(), source };
    let file = crate::files::open_regular(path).map_err(read)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_FILE_BYTES + 1), &mut text).map_err(read)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(PipSpecError::Line { origin: path.display().to_string(), what: format!("larger than {MAX_FILE_BYTES} bytes") });
    }
    let root = path.parent().unwrap_or(Path::new("."));
    // Continuation lines (a trailing backslash) join the next one, as pip reads them; a backslash on the
    // last line joins nothing.
    let mut pending = String::new();
    let mut start = 0;
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if pending.is_empty() {
            start = n + 1;
        }
        if let Some(head) = line.strip_suffix('\\').filter(|_| n + 1 < lines.len()) {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line.strip_suffix('\\').unwrap_or(line));
        let origin = format!("{}:{start}", path.display());
        let full = std::mem::take(&mut pending);
        if constraints {
            if full.contains("--hash") {
                return Err(PipSpecError::Line { origin, what: "--hash in a constraints file is not supported; put hashes on the requirements".into() });
            }
            let mut sub = PipSpec::default();
            parse_line(&full, &origin, root, &mut sub, depth)?;
            spec.constraints.extend(sub.requirements);
            spec.constraints.extend(sub.constraints);
            spec.index = spec.index.merged(&sub.index);
        } else {
            parse_line(&full, &origin, root, spec, depth)?;
        }
    }
    Ok(())
}

fn parse_line(line: &str, origin: &str, root: &Path, spec: &mut PipSpec, depth: usize) -> Result<(), PipSpecError> {
    let bad = |what: String| PipSpecError::Line { origin: origin.to_string(), what };
    // A comment starts at a '#' at the line's start or after whitespace.
    let line = match line.find(" #").or_else(|| line.find("\t#")) {
        Some(i) => &line[..i],
        None if line.trim_start().starts_with('#') => "",
        None => line,
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(first) = words.first() else { return Ok(()) };
    if first.starts_with('-') {
        let (flag, value) = match first.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (*first, words.get(1).map(|s| s.to_string())),
        };
        const KNOWN: [&str; 10] = ["-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-r", "--requirement", "-c", "--constraint", "--hash"];
        if !KNOWN.contains(&flag) {
            return Err(bad(format!(
                "{flag} is not supported; envlayer reads requirements, -r, -c, --hash, --index-url, --extra-index-url and --find-links"
            )));
        }
        let value = value.ok_or_else(|| bad(format!("{flag} needs a value")))?;
        match flag {
            "-i" | "--index-url" => spec.index.index_url = Some(index_url(&value, origin)?),
            "--extra-index-url" => {
                let u = index_url(&value, origin)?;
                if !spec.index.extra_index_urls.contains(&u) {
                    spec.index.extra_index_urls.push(u);
                }
            }
            "-f" | "--find-links" => spec.index.find_links.push(find_links(&value, root, origin)?),
            "-r" | "--requirement" | "-c" | "--constraint" => {
                if depth >= MAX_DEPTH {
                    return Err(bad(format!("-r/-c nested more than {MAX_DEPTH} deep")));
                }
                let path = root.join(&value);
                read_file(&path, spec, depth + 1, matches!(flag, "-c" | "--constraint"))?;
            }
            _ => {
                return Err(bad(format!(
                    "{flag} is not supported; envlayer reads requirements, -r, -c, --hash, --index-url, --extra-index-url and --find-links"
                )))
            }
        }
        return Ok(());
    }
    // A requirement, maybe followed by --hash options.
    let mut text = Vec::new();
    let mut hashes = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if let Some(h) = w.strip_prefix("--hash=").or_else(|| (w == "--hash").then(|| words.get(i + 1).copied()).flatten()) {
            if w == "--hash" {
                i += 1;
            }
            let hex = h.strip_prefix("sha256:").ok_or_else(|| bad(format!("--hash {h}: envlayer checks sha256 hashes only")))?;
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(format!("--hash {h}: not a sha256 hash")));
            }
            hashes.push(hex.to_ascii_lowercase());
        } else if w.starts_with("--") {
            return Err(bad(format!("{w}: only --hash may follow a requirement")));
        } else {
            text.push(w);
        }
        i += 1;
    }
    let text = text.join(" ");
    let req = pep508_rs::Requirement::<pep508_rs::VerbatimUrl>::from_str(&text).map_err(|e| bad(format!("{text:?} is not a valid requirement: {}", e.message)))?;
    if req.version_or_url.as_ref().is_some_and(|v| matches!(v, pep508_rs::VersionOrUrl::Url(_))) {
        return Err(bad(format!("{text:?}: direct URL requirements are not supported; put the distribution on an index or use --find-links")));
    }
    let name = super::normalize(req.name.as_ref());
    // A distribution listed twice (in two -r files, say) is one requirement whose hashes add up.
    if let Some(same) = spec.requirements.iter_mut().find(|r| r.name == name && r.text == text) {
        same.hashes.extend(hashes);
        same.hashes.sort();
        same.hashes.dedup();
        return Ok(());
    }
    spec.requirements.push(Requirement { name, text, hashes, origin: origin.to_string() });
    Ok(())
}

use std::str::FromStr as _;

fn index_url(value: &str, origin: &str) -> Result<Url, PipSpecError> {
    let value = expand_env(value).map_err(|what| PipSpecError::Line { origin: origin.into(), what })?;
    let url = Url::parse(&value).map_err(|_| PipSpecError::Line { origin: origin.into(), what: format!("{:?} is not an index URL", shown(&value)) })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(PipSpecError::Line { origin: origin.into(), what: format!("{}: indexes are http(s) URLs", super::redact(&url)) });
    }
    Ok(url)
}

fn find_links(value: &str, root: &Path, origin: &str) -> Result<Url, PipSpecError> {
    let value = expand_env(value).map_err(|what| PipSpecError::Line { origin: origin.into(), what })?;
    if let Ok(url) = Url::parse(&value) {
        if matches!(url.scheme(), "http" | "https" | "file") {
            return Ok(url);
        }
    }
    let path = root.join(&value);
    let path = std::path::absolute(&path).unwrap_or(path);
    Url::from_directory_path(&path).map_err(|_| PipSpecError::Line { origin: origin.into(), what: format!("--find-links {:?}: not a URL or folder", shown(&value)) })
}

/// `${VAR}` in option lines, as pip expands them (for credentials kept out of the file).
fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        match rest[i + 2..].find('}') {
            Some(j) => {
                let var = &rest[i + 2..i + 2 + j];
                if !var.is_empty() && var.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
                    out.push_str(&std::env::var(var).map_err(|_| format!("${{{var}}} is not set"))?);
                } else {
                    out.push_str(&rest[i..i + 3 + j]);
                }
                rest = &rest[i + 3 + j..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A value for an error message: escaped, and with any `user:password@` cut.
fn shown(value: &str) -> String {
    let v = match (value.find("://"), value.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://***@{}", &value[..s], &value[a + 1..]),
        _ => value.to_string(),
    };
    crate::net::escape(&v)
}

/// What a requirement line says of a locked `version`: `Some(true)` when its specifiers allow it,
/// `Some(false)` when they do not, `None` when the line has a marker (whether it applies depends on the
/// target, which the lock already decided) or cannot be read.
pub fn allows(text: &str, version: &str) -> Option<bool> {
    let req = pep508_rs::Requirement::<pep508_rs::VerbatimUrl>::from_str(text).ok()?;
    if !req.marker.is_true() {
        return None;
    }
    match req.version_or_url {
        Some(pep508_rs::VersionOrUrl::VersionSpecifier(specs)) => Some(specs.contains(&pep440_rs::Version::from_str(version).ok()?)),
        _ => Some(true),
    }
}

/// `name==version` (with extras or markers allowed), not `==1.*` or a marker's `==`.
fn is_pinned(text: &str) -> bool {
    match pep508_rs::Requirement::<pep508_rs::VerbatimUrl>::from_str(text).ok().and_then(|r| r.version_or_url) {
        Some(pep508_rs::VersionOrUrl::VersionSpecifier(specs)) => {
            specs.len() == 1 && specs.iter().all(|s| *s.operator() == pep440_rs::Operator::Equal || *s.operator() == pep440_rs::Operator::ExactEqual)
        }
        _ => false,
    }
}

fn check(spec: &PipSpec) -> Result<(), PipSpecError> {
    if spec.require_hashes() {
        for r in &spec.requirements {
            if r.hashes.is_empty() {
                return Err(PipSpecError::Line {
                    origin: r.origin.clone(),
                    what: format!("{} has no --hash, but other requirements do: with hashes, every requirement must have one (as pip's hash-checking mode requires)", r.text),
                });
            }
            if !is_pinned(&r.text) {
                return Err(PipSpecError::Line { origin: r.origin.clone(), what: format!("{}: a hashed requirement must be pinned with ==", r.text) });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
