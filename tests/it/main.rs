//! envlayer's integration tests, as one test binary (one link, one process pool): one module per
//! topic, with the shared helpers in `common` (fixtures, the envlayer binary, real tools, and small
//! scripted servers that play hostile parties).

mod common;

mod archives;
mod containerd;
mod errors;
mod example;
mod fake_http_selftest;
mod fault_proxy;
mod faults;
mod first_hour;
mod first_week;
mod foreign_locks;
mod hostile;
mod hostile_channel;
mod hostile_registry;
mod image_runs;
mod lifecycle;
mod multi_arch;
mod link_scripts;
mod output_safety;
mod pip;
mod prepull;
mod real_packages;
mod registry;
mod registry_cache;
mod reproducible;
mod sbom;
mod untrusted_data;
