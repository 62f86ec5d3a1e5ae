//! The README's example environment, and activation variables reaching the image config.


use crate::common::*;
use std::path::Path;
use std::process::Command;

fn config_env(layout: &Path) -> Vec<String> {
    let m = manifest(layout);
    let config = blob_json(layout, m["config"]["digest"].as_str().unwrap());
    config["config"]["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

#[test]
fn the_readme_example_builds_and_runs_on_a_debian_base() {
    let dir = scratch("example");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("examples/environment.yaml"), dir.join("environment.yaml")).unwrap();
    assert!(envlayer(&dir, &["example-channel", "channel"]).status.success());
    let base = format!("{}:base", debian_base().display());
    let s = build_json(&dir, &["environment.yaml", "--base", &base, "--cache-dir", "cache"]);
    assert_eq!(s["output"], "hello.oci", "default output is <name>.oci");
    let layout = dir.join("hello.oci");
    let env = config_env(&layout);
    assert!(env.contains(&"ENVLAYER_GREETING_DIR=/opt/conda/envs/hello/share/envlayer-greeting".to_string()), "{env:?}");
    let rootfs = unpack(&layout, "latest", &dir.join("bundle"));
    // `hello` is a symlink to a script whose text placeholder was rewritten to the prefix.
    let out = run(Command::new("chroot").arg(&rootfs).args(["/opt/conda/envs/hello/bin/hello"]));
    assert_eq!(out, "Hello from an envlayer image!\n");
    let script = std::fs::read_to_string(rootfs.join("opt/conda/envs/hello/bin/envlayer-hello")).unwrap();
    assert!(script.contains("# installed at /opt/conda/envs/hello\n"), "{script}");
}

#[test]
fn activate_d_variables_are_in_the_image_config() {
    let dir = scratch("activation");
    // A file:// URL channel this time.
    let url = std::path::PathBuf::from(format!("file://{}", channels().join("test-recipes").display()));
    let env = env_file(&dir, "act", &[&url], &["activate_deactivate_package"]);
    build_json(&dir, &[env.to_str().unwrap(), "--cache-dir", "cache", "--prefix", "/env"]);
    let vars = config_env(&dir.join("act.oci"));
    assert!(vars.contains(&"TEST=teststringfromactivate".to_string()), "{vars:?}");
    let path = vars.iter().find(|v| v.starts_with("PATH=")).unwrap();
    assert!(path.starts_with("PATH=teststringfromactivate/bin/test:/env/bin:"), "{path}");
    assert!(vars.contains(&"CONDA_PREFIX=/env".to_string()));
}

#[test]
fn virtual_packages_describe_the_target_not_the_build_machine() {
    let dir = scratch("virtual");
    let env = env_file(&dir, "vp", &[&channels().join("local-python")], &["python=3.11", "charset-normalizer"]);
    // charset-normalizer needs __glibc >=2.17: an old glibc target cannot have it.
    let out = envlayer(&dir, &["build", env.to_str().unwrap(), "--cache-dir", "cache", "-q", "--virtual-package", "__glibc=2.12"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("__glibc"), "{}", String::from_utf8_lossy(&out.stderr));
    let s = build_json(&dir, &[env.to_str().unwrap(), "--cache-dir", "cache", "--virtual-package", "__glibc=2.36", "--virtual-package", "__cuda=12.4"]);
    assert!(s["packages"].as_array().unwrap().iter().any(|p| p["name"] == "charset-normalizer"));
    let bad = envlayer(&dir, &["build", env.to_str().unwrap(), "--cache-dir", "cache", "-q", "--virtual-package", "glibc"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected __name=version"));
}
