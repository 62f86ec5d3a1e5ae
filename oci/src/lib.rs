//! The OCI half of envlayer, with no knowledge of conda (the compiler keeps it so: this crate does not
//! depend on rattler): images assembled from layers and a config ([`image`]), written into OCI layouts
//! ([`output`]) or pushed ([`push`]) through a distribution-API client ([`registry`]) whose every read is
//! capped and timed and whose credentials go only to their own host ([`net`]); files others wrote are
//! read as regular files only ([`files`]); each process works in scratch folders of its own
//! ([`scratch`]).
#![deny(missing_docs)]

pub mod archive;
pub mod files;
pub mod image;
pub mod net;
pub mod output;
pub mod push;
pub mod referrers;
pub mod registry;
pub mod scratch;
