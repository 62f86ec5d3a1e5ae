//! envlayer turns a conda environment into an OCI image with one content-addressed layer per package.
//!
//! Data flows one way through named stages, one module each:
//! [`spec`] → [`solve`] → [`fetch`] → [`install`] → [`layer`] → [`image`] → [`push`], the first six
//! joined by [`build::build`]. [`registry`] is the distribution-API client that `push` and remote bases use.
//! Tar, compression, digests and layer planning live in the `envlayer-layers` crate.
#![deny(missing_docs)]

pub mod activation;
pub mod bake;
pub mod build;
pub mod fetch;
pub mod files;
pub mod image;
pub mod install;
pub mod layer;
pub mod lifecycle;
pub mod net;
pub mod output;
pub mod push;
pub mod pyc;
pub mod registry;
pub mod reporter;
pub mod runtime;
pub mod scratch;
pub mod scripts;
pub mod solve;
pub mod spec;
pub mod synth;

pub use build::{build, BuildError, BuildOptions, BuildOutput, BuildSummary};
pub use envlayer_layers::{Compression, Digest};
pub use reporter::{NoReporter, Reporter, Stage};
