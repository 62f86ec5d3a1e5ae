//! The small text formats inside a wheel: member names, `RECORD` (CSV), `WHEEL` (email headers) and
//! `entry_points.txt` (INI), read as hostile data.

use std::collections::BTreeMap;

/// A checked relative path: no empty, `.` or `..` component, no absolute path, no backslash or control
/// character.
pub fn safe_relative(name: &str) -> Option<String> {
    if name.is_empty() || name.starts_with('/') || name.contains('\\') || name.chars().any(char::is_control) {
        return None;
    }
    let parts: Vec<&str> = name.trim_end_matches('/').split('/').collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return None;
    }
    Some(parts.join("/"))
}

/// `RECORD`: member → its hash as written (`sha256=...`; `None` for files listed without one, which
/// only `RECORD` itself and its signatures may be).
pub fn parse_record(text: &str) -> Result<BTreeMap<String, Option<String>>, usize> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut map = BTreeMap::new();
    for (n, row) in reader.records().enumerate() {
        let row = row.map_err(|_| n + 1)?;
        let path = row.get(0).filter(|p| !p.is_empty()).ok_or(n + 1)?;
        let hash = row.get(1).filter(|h| !h.is_empty());
        map.insert(path.to_string(), hash.map(str::to_string));
    }
    Ok(map)
}

/// A `Key: value` header of `WHEEL` (an email-header file).
pub fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(key)).map(|(_, v)| v.trim()))
}

/// `[console_scripts]` and `[gui_scripts]` of `entry_points.txt`: (script name, module, attribute path).
pub fn entry_points(text: &str) -> Result<Vec<(String, String, String)>, String> {
    let ident = |s: &str| !s.is_empty() && s.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'));
    let mut section = "";
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim();
            continue;
        }
        if section != "console_scripts" && section != "gui_scripts" {
            continue;
        }
        let (name, target) = line.split_once('=').ok_or_else(|| format!("entry_points.txt line {}: expected NAME = MODULE:ATTR", n + 1))?;
        let (name, target) = (name.trim(), target.split('[').next().unwrap_or_default().trim());
        let (module, attr) = target.split_once(':').map(|(m, a)| (m.trim(), a.trim())).unwrap_or((target, ""));
        if safe_relative(name).is_none_or(|p| p.contains('/')) || !ident(module) || (!attr.is_empty() && !ident(attr)) {
            return Err(format!("entry_points.txt line {}: refusing script {:?}", n + 1, crate::net::escape(line)));
        }
        if attr.is_empty() {
            return Err(format!("entry_points.txt line {}: script {name} names no function", n + 1));
        }
        out.push((name.to_string(), module.to_string(), attr.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_member_names_are_refused() {
        for bad in ["/etc/passwd", "../x", "a/../../x", "a\\b", "", "a//b", "./a"] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
        assert_eq!(safe_relative("pkg/mod.py").as_deref(), Some("pkg/mod.py"));
    }

    #[test]
    fn entry_points_parse_and_refuse_paths() {
        let eps = entry_points("[console_scripts]\ntabulate = tabulate:_main\nx = a.b:c.d [extra]\n[other]\ny = z:w\n").unwrap();
        assert_eq!(eps, vec![("tabulate".into(), "tabulate".into(), "_main".into()), ("x".into(), "a.b".into(), "c.d".into())]);
        assert!(entry_points("[console_scripts]\n../evil = os:system\n").is_err());
        assert!(entry_points("[console_scripts]\nx = os;rm:y\n").is_err());
    }
}
