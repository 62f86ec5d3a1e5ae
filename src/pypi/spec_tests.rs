//! Tests of [`super`]: `src/pypi/spec.rs`.
use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn requirement_files_with_includes_options_and_hashes() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "c.txt", "six<2\n");
    write(d.path(), "more.txt", "tabulate==0.9.0 \\\n    --hash=sha256:0095b12bf5966de529c0feb1fa08671671b3368eec77d7ef7ab114be2c068b3c\n");
    let main = write(
        d.path(),
        "requirements.txt",
        "# comment\n--index-url https://u:p@mirror.example/simple\n--extra-index-url=http://127.0.0.1:1/simple/\n-f wheels\n-c c.txt\n-r more.txt\nsix==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254  # pinned\n",
    );
    let s = from_file(&main).unwrap();
    assert_eq!(s.requirements.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["tabulate", "six"]);
    assert_eq!(s.constraints[0].text, "six<2");
    assert_eq!(s.index.index_url.as_ref().unwrap().host_str(), Some("mirror.example"));
    assert_eq!(s.index.extra_index_urls.len(), 1);
    assert!(s.index.find_links[0].as_str().ends_with("/wheels/"));
    assert!(s.require_hashes());
    assert!(s.requirements[0].origin.ends_with("more.txt:1"), "{}", s.requirements[0].origin);
}

#[test]
fn errors_name_the_line_and_hide_credentials() {
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "r.txt", "six\n--trusted-host x\n");
    let e = from_file(&f).unwrap_err().to_string();
    assert!(e.contains("r.txt:2") && e.contains("--trusted-host"), "{e}");
    let f = write(d.path(), "r2.txt", "six==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\ntabulate\n");
    let e = from_file(&f).unwrap_err().to_string();
    assert!(e.contains("r2.txt:2") && e.contains("--hash"), "{e}");
    let f = write(d.path(), "r3.txt", "--index-url ftp://u:secret@h/simple\n");
    let e = from_file(&f).unwrap_err().to_string();
    assert!(!e.contains("secret"), "{e}");
    let f = write(d.path(), "r4.txt", "-r r4.txt\n");
    assert!(from_file(&f).unwrap_err().to_string().contains("nested"));
    let f = write(d.path(), "r5.txt", "six @ https://x.example/six.whl\n");
    assert!(from_file(&f).unwrap_err().to_string().contains("direct URL"));
    let f = write(d.path(), "r6.txt", "six\n--no-deps\n");
    let e = from_file(&f).unwrap_err().to_string();
    assert!(e.contains("r6.txt:2") && e.contains("--no-deps is not supported"), "{e}");
    let hash = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254";
    let f = write(d.path(), "r7.txt", &format!("six>=1; python_version==\"3.11\" --hash=sha256:{hash}\n"));
    assert!(from_file(&f).unwrap_err().to_string().contains("pinned with =="));
    let f = write(d.path(), "r8.txt", "--extra-index-url https://${ENVLAYER_TEST_SURELY_UNSET}@h/simple\n");
    assert!(from_file(&f).unwrap_err().to_string().contains("ENVLAYER_TEST_SURELY_UNSET} is not set"));
    let f = write(d.path(), "r9.txt", "six\ntabulate \\");
    assert_eq!(from_file(&f).unwrap().requirements.len(), 2, "a backslash on the last line keeps the requirement");
}
