//! Tests of [`super`]: `src/pypi/wheel.rs`.
use super::*;

/// A wheel with `files` (name, bytes); RECORD lists each with its hash unless `record` is given.
fn wheel(dir: &Path, name: &str, files: &[(&str, &[u8])], record: Option<&str>) -> PathBuf {
    let path = dir.join(name);
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    let mut rec = String::new();
    for (n, data) in files {
        zip.start_file(*n, opts).unwrap();
        zip.write_all(data).unwrap();
        rec.push_str(&format!("{n},{},{}\n", record_hash(data), data.len()));
    }
    let info = name.split('-').take(2).collect::<Vec<_>>().join("-");
    zip.start_file(format!("{info}.dist-info/WHEEL"), opts).unwrap();
    zip.write_all(b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n").unwrap();
    rec.push_str(&format!("{info}.dist-info/WHEEL,{},{}\n", record_hash(b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"), 41));
    zip.start_file(format!("{info}.dist-info/RECORD"), opts).unwrap();
    zip.write_all(record.unwrap_or(&rec).as_bytes()).unwrap();
    zip.finish().unwrap();
    path
}

fn no_pyc(_: &Path, _: &[String]) -> Result<Vec<String>, crate::install::InstallError> {
    Ok(Vec::new())
}

#[test]
fn a_wheel_installs_into_the_schemes_and_hostile_ones_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let scheme = Scheme::for_python("/opt/env", 3, 11);
    let ok = wheel(
        d.path(),
        "demo-1.0-py3-none-any.whl",
        &[
            ("demo/__init__.py", b"x = 1\n"),
            ("demo-1.0.data/scripts/run", b"#!python\nprint(1)\n"),
            ("demo-1.0.data/headers/demo.h", b"int x;\n"),
            ("demo-1.0.data/data/share/demo.txt", b"hi\n"),
            ("demo-1.0.dist-info/entry_points.txt", b"[console_scripts]\ndemo = demo:main\n"),
        ],
        None,
    );
    let stage = d.path().join("stage");
    let got = install(&ok, "demo-1.0-py3-none-any.whl", &stage, &scheme, &no_pyc).unwrap();
    for p in ["lib/python3.11/site-packages/demo/__init__.py", "bin/run", "include/python3.11/demo/demo.h", "share/demo.txt", "bin/demo"] {
        assert!(got.paths.iter().any(|x| x == p), "{p} not in {:?}", got.paths);
    }
    assert_eq!(std::fs::read_to_string(stage.join("bin/run")).unwrap(), "#!/opt/env/bin/python3.11\nprint(1)\n");
    let record = std::fs::read_to_string(stage.join("lib/python3.11/site-packages/demo-1.0.dist-info/RECORD")).unwrap();
    assert!(record.contains("../../../bin/demo,sha256=") && record.contains("demo-1.0.dist-info/RECORD,,"), "{record}");

    type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, Option<&'a str>, &'a str);
    let cases: [Case; 4] = [
        ("evil-1.0-py3-none-any.whl", vec![("../../etc/passwd", b"x")], None, "unsafe path"),
        ("evil-1.0-py3-none-any.whl", vec![("/etc/passwd", b"x")], None, "unsafe path"),
        ("evil-1.0-py3-none-any.whl", vec![("evil-1.0.data/weird/x", b"x")], None, "unknown scheme"),
        ("evil-1.0-py3-none-any.whl", vec![("evil/x.py", b"x")], Some("evil/x.py,sha256=AAAA,1\n"), "does not match the hash"),
    ];
    for (i, (name, files, record, want)) in cases.iter().enumerate() {
        let sub = d.path().join(format!("case{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let w = wheel(&sub, name, files, *record);
        let e = install(&w, name, &sub.join("stage"), &scheme, &no_pyc).unwrap_err().to_string();
        assert!(e.contains(want), "case {i}: {e}");
        assert!(!d.path().join("etc").exists());
    }
}

#[test]
fn record_paths_are_relative_to_site_packages() {
    assert_eq!(relative_to("lib/python3.11/site-packages/a/b.py", "lib/python3.11/site-packages"), "a/b.py");
    assert_eq!(relative_to("bin/x", "lib/python3.11/site-packages"), "../../../bin/x");
}

#[test]
fn long_prefixes_get_a_trampoline() {
    let short = Scheme::for_python("/opt/conda/envs/x", 3, 11);
    assert_eq!(shebang(&short), "#!/opt/conda/envs/x/bin/python3.11");
    let long = Scheme::for_python(&format!("/{}", "p".repeat(130)), 3, 11);
    assert!(shebang(&long).starts_with("#!/bin/sh\n'''exec'"));
}
