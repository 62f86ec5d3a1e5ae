//! The environment-file parser never panics, whatever the file holds: it parses or names an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = envlayer::spec::EnvSpec::from_yaml_str(text, std::path::Path::new("environment.yaml"));
    }
});
