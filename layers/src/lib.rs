//! Deterministic OCI layers: a reproducible tar of one or more directory trees, compressed with gzip or
//! zstd, with its digests computed while it is written; and a planner that groups many small items into a
//! bounded number of layers.
//!
//! This crate knows nothing of conda or registries. The same inputs always give the same bytes: entries
//! are sorted, mtimes are fixed by the caller, owners are root with no user names, and modes and symlinks
//! are kept.
#![deny(missing_docs)]

mod compress;
mod digest;
mod pack;
pub mod pgzip;
mod split;
mod plan;
mod unpack;

pub use compress::Compression;
pub use digest::{Digest, DigestParseError, HashingWriter};
pub use split::split_entries;
pub use pack::{pack_entries, pack_to_file, EntryKind, Layer, PackError, PackOptions, Source, TarEntry, collect_entries, write_tar};
pub use plan::{plan_buckets, plan_layers, PlanItem};
pub use unpack::{tar_facts, TarFacts};
