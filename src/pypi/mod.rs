//! The PyPI half: distributions from Python package indexes, installed beside the conda packages, one
//! layer each. [`spec`] reads the `pip:` section or a requirements file; [`resolve`] asks uv for the
//! distributions of the target (never the build machine); [`fetch`] downloads and checks each wheel,
//! sending credentials only to the host they were given for; [`wheel`] installs one wheel into its own
//! stage. The build steps that use them are [`crate::build::pip`] and [`crate::build::package_layers`].

pub mod dist;
pub mod error;
pub mod fetch;
pub mod resolve;
pub mod spec;
pub mod uv;
pub mod wheel;
pub mod wheel_meta;

pub use dist::Dist;
pub use error::ResolveError;
pub use spec::{IndexOptions, PipSpec};
pub use uv::Uv;

/// PEP 503 normalization: lowercase, runs of `-`, `_` and `.` become one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// `(distribution, version)` of a wheel file name `{dist}-{version}(-{build})?-{py}-{abi}-{plat}.whl`,
/// both as written; `None` if it is not one.
pub fn split_wheel_name(file_name: &str) -> Option<(&str, &str)> {
    let stem = file_name.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    if !(parts.len() == 5 || parts.len() == 6) || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    if !parts.iter().all(|p| plain_name_part(p)) {
        return None;
    }
    Some((parts[0], parts[1]))
}

/// A part of a distribution file name: starts with a letter or digit, then letters, digits, `_`, `.`,
/// `+` and `!` (so never `.`, `..`, a separator or a control character).
pub fn plain_name_part(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '!'))
}

/// A URL with its user name and password removed, for anything that is shown or recorded.
pub fn redact(url: &url::Url) -> url::Url {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_as_pep_503_says() {
        assert_eq!(normalize("Friendly-Bard"), "friendly-bard");
        assert_eq!(normalize("FRIENDLY__bard"), "friendly-bard");
        assert_eq!(normalize("friendly.-_bard"), "friendly-bard");
    }

    #[test]
    fn wheel_names_split_and_refuse_paths() {
        assert_eq!(split_wheel_name("six-1.16.0-py2.py3-none-any.whl"), Some(("six", "1.16.0")));
        assert_eq!(split_wheel_name("MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"), Some(("MarkupSafe", "2.1.5")));
        assert_eq!(split_wheel_name("a-1-1b-py3-none-any.whl"), Some(("a", "1")));
        assert_eq!(split_wheel_name("../x-1-py3-none-any.whl"), None);
        assert_eq!(split_wheel_name("x-1.tar.gz"), None);
    }

    #[test]
    fn redacted_urls_carry_no_credentials() {
        let u = url::Url::parse("https://user:secret@mirror.example/simple/").unwrap();
        assert_eq!(redact(&u).as_str(), "https://mirror.example/simple/");
    }
}
