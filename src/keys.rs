//! Every label and annotation key envlayer writes and reads: envlayer's own (`io.envlayer.*`) and the TTL
//! label Quay honours. Users may not set these (see [`is_reserved`]).

/// Annotation on each layer naming the packages it holds.
pub const ANNOTATION_PACKAGES: &str = "io.envlayer.packages";
/// Layer annotation on a package that spans several layers: which part this is, `2/3`.
pub const ANNOTATION_PART: &str = "io.envlayer.part";
/// Manifest annotation and config label with the environment's name.
pub const ANNOTATION_ENV_NAME: &str = "io.envlayer.env.name";
/// Manifest annotation and config label with the hash of the build's inputs (the identity).
pub const ANNOTATION_INPUTS: &str = "io.envlayer.env.inputs";
/// Config label naming the base image (`registry/repo@digest`) when it came from a registry.
pub const LABEL_BASE: &str = "io.envlayer.base";
/// Config label with the environment's prefix.
pub const LABEL_PREFIX: &str = "io.envlayer.env.prefix";
/// Manifest annotation: when the image stops being fresh (RFC 3339).
pub const ANNOTATION_EXPIRES: &str = "io.envlayer.expires";
/// Manifest annotation and config label: `baked` or `runtime`.
pub const ANNOTATION_INSTALL: &str = "io.envlayer.install";
/// Manifest annotation, config label and archives-layer annotation: the packages installed at runtime.
pub const ANNOTATION_RUNTIME: &str = "io.envlayer.runtime-packages";
/// Manifest annotation: how many packages the environment has.
pub const ANNOTATION_PACKAGE_COUNT: &str = "io.envlayer.packages.count";
/// The config label Quay reads an image's expiry from (`24h`).
pub const LABEL_QUAY_EXPIRES: &str = "quay.expires-after";

/// Whether `key` is envlayer's own: `io.envlayer.*` or the TTL label.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with("io.envlayer.") || key == LABEL_QUAY_EXPIRES
}
