//! envlayer turns a conda environment into an OCI image whose layers are content-addressed by the packages
//! in them (large packages split across layers, small ones sharing hash buckets).
//!
//! Data flows one way through named stages, one module each: [`spec`] → [`solve`] → [`fetch`] →
//! [`install`] → [`build::package_layers`] (kept in the [`cache`]) → [`image`] → [`output`] or [`push`], joined
//! by [`build::build`]. [`registry`] is the distribution-API client that `push` and remote bases use;
//! [`lifecycle`] is `resolve`/`ls`/`prune`; [`link_scripts`] and [`runtime_install`] handle packages that
//! install when the container starts; [`keys`] lists every label and annotation envlayer writes.
//! Tar, compression, digests and layer planning live in the `envlayer-layers` crate.
#![deny(missing_docs)]

pub mod activation;
pub mod build;
pub mod cache;
pub mod cache_gc;
pub mod fetch;
pub mod install;
pub mod keys;
pub mod link_scripts;
pub mod lifecycle;
pub mod lockfile;
pub mod pyc;
pub mod prepull;
pub mod pypi;
pub mod regcache;
pub mod runtime_install;
pub mod sbom;
pub mod reporter;
pub mod solve;
pub mod spec;
pub mod testkit;
mod yaml_checks;

pub use envlayer_oci::{archive, files, image, net, output, push, referrers, registry, scratch};
pub use build::{build, BuildError, BuildOptions, BuildOutput, BuildSummary};
pub use envlayer_layers::{Compression, Digest};
pub use reporter::{NoReporter, Reporter, Stage};
