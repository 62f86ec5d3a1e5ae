//! The package reading path on arbitrary bytes (as a .conda or a .tar.bz2): extraction, envlayer's path
//! checks and the layer packer's directory walk never panic, and nothing appears outside the
//! extraction folder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let name = if kind % 2 == 0 { "pkg-1.0-0.conda" } else { "pkg-1.0-0.tar.bz2" };
    let archive = dir.path().join(name);
    std::fs::write(&archive, bytes).expect("write");
    let dest = dir.path().join("extracted");
    if rattler_package_streaming::fs::extract(&archive, &dest).is_ok() {
        let checked = envlayer::install::check_paths(&dest, "pkg");
        let _ = envlayer_layers::collect_entries(&[envlayer_layers::Source::new(dest.clone(), "opt/env")]);
        let _ = checked;
    }
    let mut left: Vec<_> = std::fs::read_dir(dir.path()).expect("read").map(|e| e.expect("entry").file_name()).collect();
    left.sort();
    for entry in &left {
        assert!(entry == "extracted" || entry == name, "extraction wrote outside its folder: {entry:?}");
    }
});
