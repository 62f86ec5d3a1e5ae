//! Packing is deterministic, complete and faithful: tested by reading the layers back with the tar and
//! flate2/zstd decoders.

use envlayer_layers::{pack_to_file, Compression, Digest, PackOptions, Source};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("lib/python3.11/site-packages/pkg")).unwrap();
    std::fs::write(root.join("bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("bin/tool"), std::fs::Permissions::from_mode(0o4775)).unwrap();
    std::fs::write(root.join("lib/python3.11/site-packages/pkg/__init__.py"), "x = 1\n").unwrap();
    std::fs::write(root.join("lib/a-b"), vec![7u8; 300_000]).unwrap();
    std::os::unix::fs::symlink("tool", root.join("bin/alias")).unwrap();
    let long = "d".repeat(120);
    std::fs::create_dir_all(root.join(&long)).unwrap();
    std::fs::write(root.join(&long).join("f".repeat(120)), "long").unwrap();
}

/// One tar entry: path, type, mode, uid, gid, mtime, data.
type Entry = (String, tar::EntryType, u32, u64, u64, u64, Vec<u8>);

fn read_tar(path: &Path, compression: Compression) -> Vec<Entry> {
    let file = std::fs::File::open(path).unwrap();
    let reader: Box<dyn Read> = match compression {
        Compression::Gzip(_) => Box::new(flate2::read::GzDecoder::new(file)),
        Compression::Zstd(_) => Box::new(zstd::Decoder::new(file).unwrap()),
    };
    let mut archive = tar::Archive::new(reader);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            if h.entry_type() == tar::EntryType::Symlink {
                data = e.link_name().unwrap().unwrap().to_string_lossy().as_bytes().to_vec();
            }
            (path, h.entry_type(), h.mode().unwrap(), h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap(), data)
        })
        .collect()
}

#[test]
fn same_tree_same_bytes_from_different_places() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    tree(&a.path().join("stage"));
    tree(&b.path().join("other-name"));
    for compression in [Compression::GZIP_DEFAULT, Compression::ZSTD_DEFAULT] {
        let opts = PackOptions::default();
        let src_a = [Source::new(a.path().join("stage"), "opt/conda/envs/x")];
        let src_b = [Source::new(b.path().join("other-name"), "/opt/conda/envs/x/")];
        let (la, _) = pack_to_file(&src_a, &opts, compression, &a.path().join("l")).unwrap();
        let (lb, _) = pack_to_file(&src_b, &PackOptions { threads: 2, ..opts }, compression, &b.path().join("l")).unwrap();
        assert_eq!(la, lb, "{compression:?}");
        let bytes = std::fs::read(a.path().join("l")).unwrap();
        assert_eq!(Digest::of(&bytes), la.digest);
        assert_eq!(bytes.len() as u64, la.size);
    }
}

#[test]
fn entries_are_sorted_rooted_and_faithful() {
    let dir = tempfile::tempdir().unwrap();
    tree(&dir.path().join("s"));
    let out = dir.path().join("layer");
    let src = [Source::new(dir.path().join("s"), "opt/env")];
    let (layer, _) = pack_to_file(&src, &PackOptions { mtime: 42, threads: 1 }, Compression::GZIP_DEFAULT, &out).unwrap();
    let entries = read_tar(&out, Compression::GZIP_DEFAULT);
    assert_eq!(layer.entries as usize, entries.len());
    let names: Vec<&str> = entries.iter().map(|e| e.0.trim_end_matches('/')).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(&names[..2], &["opt", "opt/env"]);
    for (path, kind, mode, mtime, uid, gid, data) in &entries {
        assert_eq!((*mtime, *uid, *gid), (42, 0, 0), "{path}");
        let trimmed = path.trim_end_matches('/');
        if let Some(parent) = Path::new(trimmed).parent().filter(|p| !p.as_os_str().is_empty()) {
            assert!(names.contains(&parent.to_str().unwrap()), "parent of {path} missing");
        }
        match path.as_str() {
            "opt/env/bin/tool" => {
                assert_eq!(*mode, 0o755, "setuid and group write dropped, exec kept");
                assert_eq!(data, b"#!/bin/sh\necho hi\n");
            }
            "opt/env/bin/alias" => {
                assert_eq!(*kind, tar::EntryType::Symlink);
                assert_eq!(data, b"tool");
            }
            "opt/env/lib/a-b" => assert_eq!(data.len(), 300_000),
            p if p.ends_with(&"f".repeat(120)) => assert_eq!(data, b"long"),
            _ => {}
        }
    }
    assert!(names.iter().any(|n| n.ends_with(&"f".repeat(120))), "long path kept");
}

#[test]
fn later_sources_win_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("a", "first"), ("b", "second")] {
        std::fs::create_dir_all(dir.path().join(name).join("share")).unwrap();
        std::fs::write(dir.path().join(name).join("share/same.txt"), text).unwrap();
    }
    let src = [
        Source::new(dir.path().join("a"), "env"),
        Source::new(dir.path().join("b"), "env"),
    ];
    let out = dir.path().join("l");
    let (_, clobbered) = pack_to_file(&src, &PackOptions::default(), Compression::ZSTD_DEFAULT, &out).unwrap();
    assert_eq!(clobbered, vec!["env/share/same.txt".to_string()]);
    let entries = read_tar(&out, Compression::ZSTD_DEFAULT);
    let file = entries.iter().find(|e| e.0 == "env/share/same.txt").unwrap();
    assert_eq!(file.6, b"second");
    assert_eq!(entries.iter().filter(|e| e.0 == "env/share/same.txt").count(), 1);
}

#[test]
fn pinned_bytes() {
    // Any change to the tar or gzip format shows here: a layer's digest must only change on purpose.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s/bin")).unwrap();
    std::fs::write(dir.path().join("s/bin/x"), "x\n").unwrap();
    std::fs::set_permissions(dir.path().join("s/bin/x"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = [Source::new(dir.path().join("s"), "e")];
    let (layer, _) = pack_to_file(&src, &PackOptions::default(), Compression::GZIP_DEFAULT, &dir.path().join("l")).unwrap();
    assert_eq!(layer.diff_id.to_string(), PINNED_DIFF_ID);
}

// The uncompressed tar is pinned; the gzip bytes depend on the codec version in Cargo.lock.
const PINNED_DIFF_ID: &str = "sha256:27f7ca7448c00b037d80f3144b6d89f12e50199ea447884aa7cab71b275f8057";

#[test]
fn special_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s")).unwrap();
    let fifo = dir.path().join("s/fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let src = [Source::new(dir.path().join("s"), "e")];
    let err = pack_to_file(&src, &PackOptions::default(), Compression::GZIP_DEFAULT, &dir.path().join("l")).unwrap_err();
    assert!(err.to_string().contains("fifo"), "{err}");
    let bad = [Source::new(dir.path().join("s"), "../e")];
    assert!(pack_to_file(&bad, &PackOptions::default(), Compression::GZIP_DEFAULT, &dir.path().join("l")).is_err());
}

#[test]
fn excluded_paths_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s/bin")).unwrap();
    std::fs::write(dir.path().join("s/bin/keep"), "k").unwrap();
    std::fs::write(dir.path().join("s/bin/lose"), "l").unwrap();
    let mut src = Source::new(dir.path().join("s"), "env");
    src.exclude.insert("bin/lose".into());
    let out = dir.path().join("l");
    pack_to_file(&[src], &PackOptions::default(), Compression::GZIP_DEFAULT, &out).unwrap();
    let names: Vec<String> = read_tar(&out, Compression::GZIP_DEFAULT).into_iter().map(|e| e.0).collect();
    assert!(names.contains(&"env/bin/keep".to_string()));
    assert!(!names.iter().any(|n| n.contains("lose")), "{names:?}");
}
