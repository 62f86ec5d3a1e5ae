//! What `etc/conda/activate.d/*.sh` scripts export, read statically so the image's config can set the same
//! variables and the environment works with no entrypoint (under a Kubernetes `command:` override too).
//!
//! Written by hand: running package scripts on the build machine would be unsafe and would see the build
//! machine's paths; rattler_shell only runs them. Only the common forms are understood
//! (`export NAME=VALUE`, `NAME=VALUE` then `export NAME`, with `$VAR`/`${VAR}` and quotes); every other
//! line that is not a comment is returned so the build can warn about it.

/// The `(name, value)` pairs a script exports, in order, and the lines it could not interpret. Values keep
/// their `$VAR` references (e.g. `${CONDA_PREFIX}/share/gdal`) for [`expand`] to fill in.
pub fn parse_exports(script: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut pending: Vec<(String, String)> = Vec::new();
    let mut skipped = Vec::new();
    for raw in script.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("export ") {
            let rest = rest.trim();
            if let Some((name, value)) = assignment(rest) {
                vars.push((name, value));
            } else if is_name(rest) {
                if let Some(i) = pending.iter().rposition(|(n, _)| n == rest) {
                    vars.push(pending.remove(i));
                }
            } else {
                skipped.push(raw.to_string());
            }
        } else if let Some((name, value)) = assignment(line) {
            pending.push((name, value));
        } else {
            skipped.push(raw.to_string());
        }
    }
    (vars, skipped)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn assignment(s: &str) -> Option<(String, String)> {
    let (name, value) = s.split_once('=')?;
    if !is_name(name) {
        return None;
    }
    let value = value.trim();
    let value = if let Some(v) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        v.to_string()
    } else if let Some(v) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        // Single quotes: no expansion. Mark `$` so `expand` leaves it.
        v.replace('$', "\u{0}")
    } else if value.contains(|c: char| c.is_whitespace() || c == ';' || c == '`' || c == '(' || c == '|' || c == '&') {
        return None;
    } else {
        value.to_string()
    };
    if value.contains('`') || value.contains("$(") {
        return None;
    }
    Some((name.to_string(), value))
}

/// Expands `$NAME` and `${NAME}` in `value` from `lookup` (unknown names become empty, as in sh).
pub fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(if c == '\u{0}' { '$' } else { c });
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphanumeric() || n == '_' {
                name.push(n);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.peek() == Some(&'}') {
            chars.next();
        }
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&lookup(&name).unwrap_or_default());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_common_forms() {
        let (v, skipped) = parse_exports(
            "#!/bin/sh\nexport TEST=teststringfromactivate\nexport PATH=\"${TEST}/bin/test:${PATH}\"\nGDAL_DATA=$CONDA_PREFIX/share/gdal\nexport GDAL_DATA\nif [ -x foo ]; then\nexport Q='$LIT'\n",
        );
        assert_eq!(v[0], ("TEST".into(), "teststringfromactivate".into()));
        assert_eq!(v[1].0, "PATH");
        assert_eq!(v[2], ("GDAL_DATA".into(), "$CONDA_PREFIX/share/gdal".into()));
        assert_eq!(expand(&v[3].1, |_| Some("x".into())), "$LIT");
        assert_eq!(skipped, vec!["if [ -x foo ]; then".to_string()]);
        let e = expand("${CONDA_PREFIX}/share:$UNSET:$", |n| (n == "CONDA_PREFIX").then(|| "/opt/e".into()));
        assert_eq!(e, "/opt/e/share::$");
    }
}
