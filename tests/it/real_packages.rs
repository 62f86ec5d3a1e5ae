//! Real conda-forge and defaults packages: placeholders rewritten to the target prefix in `.conda` and
//! `.tar.bz2` archives alike, and no placeholder left anywhere in the image.


use crate::common::*;
use std::path::Path;

const PREFIX: &str = "/opt/conda/envs/real";
const PLACEHOLDERS: &[&str] = &["_h_env_placehold_placehold", "/opt/anaconda1anaconda2anaconda3", "/home/conda/feedstock_root"];

fn check_no_placeholders(layout: &Path) -> usize {
    let mut files = 0;
    for_each_layer_file(layout, |path, data| {
        files += 1;
        if path.contains("/conda-meta/") {
            return; // records the placeholder a file had, as conda does
        }
        for p in PLACEHOLDERS {
            assert!(!data.windows(p.len()).any(|w| w == p.as_bytes()), "{path} still contains {p}");
        }
    });
    files
}

fn file_in_image(layout: &Path, wanted: &str) -> Vec<u8> {
    let mut found = None;
    for_each_layer_file(layout, |path, data| {
        if path == wanted {
            found = Some(data.to_vec());
        }
    });
    found.unwrap_or_else(|| panic!("{wanted} not in the image"))
}

#[test]
fn xtensor_io_and_zlib_conda_and_tar_bz2_get_the_target_prefix() {
    let dir = scratch("real");
    let real = channels().join("real");
    let stubs = channels().join("stubs");
    let env = env_file(&dir, "real", &[&real, &stubs], &["xtensor-io", "zlib"]);
    let s = build_json(&dir, &[env.to_str().unwrap(), "--cache-dir", "cache", "-o", "real.oci"]);
    let zlib = s["packages"].as_array().unwrap().iter().find(|p| p["name"] == "zlib").unwrap();
    assert!(zlib["file_name"].as_str().unwrap().ends_with(".conda"), "{zlib}");
    assert!(check_no_placeholders(&dir.join("real.oci")) > 10);
    let cfg = String::from_utf8(file_in_image(&dir.join("real.oci"), "opt/conda/envs/real/include/xtensor-io/xtensor_io_config.hpp")).unwrap();
    let pc = String::from_utf8(file_in_image(&dir.join("real.oci"), "opt/conda/envs/real/lib/pkgconfig/xtensor-io.pc")).unwrap();
    assert!(pc.contains(&format!("prefix={PREFIX}")), "{pc}");
    let _ = cfg;

    // The same environment with zlib from its .tar.bz2: a lock naming that archive.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tarbz2 = real.join("linux-64/zlib-1.2.11-h7b6447c_3.tar.bz2");
    let record = rt.block_on(rattler_package_streaming::fs::repodata_record_from_package_archive(&tarbz2)).unwrap();
    let mut solved = envlayer::lockfile::read_lock(&dir.join("real.oci.lock"), rattler_conda_types::Subdir::Linux64).unwrap();
    for r in solved.records.iter_mut() {
        if r.package_record.name.as_normalized() == "zlib" {
            *r = record.clone();
        }
    }
    let lock = dir.join("tarbz2.lock");
    // The environment's channels, as a lock of it has them.
    let chans = [&real, &stubs].map(|c| rattler_conda_types::Channel::try_from_directory(c).unwrap());
    envlayer::lockfile::write_lock(&solved, &[], std::path::Path::new("/"), &chans, rattler_conda_types::Subdir::Linux64, &lock).unwrap();
    let s2 = build_json(&dir, &[env.to_str().unwrap(), "--cache-dir", "cache", "-o", "tarbz2.oci", "--lock", lock.to_str().unwrap()]);
    let zlib2 = s2["packages"].as_array().unwrap().iter().find(|p| p["name"] == "zlib").unwrap();
    assert!(zlib2["file_name"].as_str().unwrap().ends_with(".tar.bz2"), "{zlib2}");
    check_no_placeholders(&dir.join("tarbz2.oci"));
    for layout in ["real.oci", "tarbz2.oci"] {
        let zpc = String::from_utf8(file_in_image(&dir.join(layout), "opt/conda/envs/real/lib/pkgconfig/zlib.pc")).unwrap();
        assert!(zpc.contains(&format!("prefix={PREFIX}")), "{layout}: {zpc}");
    }
}
