//! One package across several layers: a large package (a Python interpreter with its standard library,
//! a CUDA runtime) in one layer is one long download that must finish before a pull can unpack any of
//! it. In parts, its downloads run in parallel and its first part unpacks while the others download.
//! Written by hand: it is a partition of our own entry list.

use crate::pack::{EntryKind, TarEntry};
use std::collections::BTreeMap;

/// Splits `entries` (sorted by path with every parent directory present, as
/// [`collect_entries`](crate::collect_entries) lists them) into exactly `parts` sets that together hold
/// every entry: files and links in path order, cut into runs of about equal size (bytes plus a tar
/// header each), each with the directories above its entries; directories with nothing in them go with
/// the first. A part is empty only when there are fewer files and links than parts. The same entries
/// always give the same parts.
pub fn split_entries(entries: &BTreeMap<String, TarEntry>, parts: usize) -> Vec<BTreeMap<String, TarEntry>> {
    let parts = parts.max(1);
    let weight = |e: &TarEntry| match &e.kind {
        EntryKind::File { size, .. } => size + 512,
        _ => 512,
    };
    let total: u64 = entries.values().filter(|e| e.kind != EntryKind::Dir).map(weight).sum();
    let mut out = vec![BTreeMap::new(); parts];
    let mut placed = 0u64;
    let mut k = 0;
    for (path, entry) in entries.iter().filter(|(_, e)| e.kind != EntryKind::Dir) {
        // An entry goes to the part its middle falls in (never an earlier one), so a large entry does not
        // leave the parts around it empty.
        let w = weight(entry);
        let middle = (u128::from(placed) + u128::from(w / 2)) * parts as u128 / u128::from(total.max(1));
        k = k.max((middle as usize).min(parts - 1));
        placed += w;
        with_parents(entries, &mut out[k], path);
        out[k].insert(path.clone(), entry.clone());
    }
    for (path, entry) in entries.iter().filter(|(_, e)| e.kind == EntryKind::Dir) {
        if !out.iter().any(|o| o.contains_key(path)) {
            with_parents(entries, &mut out[0], path);
            out[0].insert(path.clone(), entry.clone());
        }
    }
    out
}

/// Adds the directories above `path` to `part`.
fn with_parents(entries: &BTreeMap<String, TarEntry>, part: &mut BTreeMap<String, TarEntry>, path: &str) {
    let mut p = path;
    while let Some(i) = p.rfind('/') {
        p = &p[..i];
        if part.contains_key(p) {
            break;
        }
        if let Some(d) = entries.get(p) {
            part.insert(p.to_string(), d.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn file(size: u64) -> TarEntry {
        TarEntry { kind: EntryKind::File { src: PathBuf::from("/dev/null"), size }, mode: 0o644 }
    }
    fn dir() -> TarEntry {
        TarEntry { kind: EntryKind::Dir, mode: 0o755 }
    }

    #[test]
    fn parts_cover_everything_in_path_order_with_their_directories() {
        let mut e = BTreeMap::new();
        e.insert("opt".to_string(), dir());
        e.insert("opt/env".to_string(), dir());
        e.insert("opt/env/empty".to_string(), dir());
        e.insert("opt/env/lib".to_string(), dir());
        for i in 0..40 {
            e.insert(format!("opt/env/lib/f{i:02}"), file(1000 * (i % 7 + 1)));
        }
        let parts = split_entries(&e, 3);
        assert_eq!(parts.len(), 3);
        // Every entry is in some part; files in exactly one, in path order across parts.
        for (p, entry) in &e {
            let n = parts.iter().filter(|x| x.contains_key(p)).count();
            if entry.kind == EntryKind::Dir { assert!(n >= 1, "{p}") } else { assert_eq!(n, 1, "{p}") }
        }
        let files = |x: &BTreeMap<String, TarEntry>| x.iter().filter(|(_, e)| e.kind != EntryKind::Dir).map(|(p, _)| p.clone()).collect::<Vec<_>>();
        let joined: Vec<String> = parts.iter().flat_map(files).collect();
        assert!(joined.windows(2).all(|w| w[0] < w[1]));
        // Each part holds the directories above its files, and sizes are close to a third each.
        for x in &parts {
            assert!(x.contains_key("opt") && x.contains_key("opt/env") && x.contains_key("opt/env/lib"));
            let size: u64 = x.values().map(|e| match e.kind { EntryKind::File { size, .. } => size, _ => 0 }).sum();
            assert!((40_000..=70_000).contains(&size), "{size}");
        }
        assert!(parts[0].contains_key("opt/env/empty"));
        // Uneven sizes leave no part empty: 10/80/10 and 40/20/40 give one file to each part.
        for sizes in [[10u64, 80, 10], [40, 20, 40]] {
            let e: BTreeMap<String, TarEntry> = sizes.iter().enumerate().map(|(i, s)| (format!("f{i}"), file(s * 1000))).collect();
            let parts = split_entries(&e, 3);
            assert!(parts.iter().all(|p| p.len() == 1), "{sizes:?}: {parts:?}");
        }
        assert_eq!(split_entries(&e, 3), parts, "deterministic");
        assert_eq!(split_entries(&e, 1), vec![e.clone()]);
    }
}
