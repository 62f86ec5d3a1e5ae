//! Progress reporting: one small trait the library calls; the CLI draws it with indicatif.

/// A stage of the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Loading repodata and solving.
    Solve,
    /// Downloading and verifying archives.
    Fetch,
    /// Installing packages into their stages.
    Install,
    /// Packing and compressing layers.
    Pack,
    /// Writing the image.
    Write,
}

/// Receives progress from a build. All methods have empty defaults.
pub trait Reporter: Send + Sync {
    /// A stage starts with `total` units of work (0 when unknown).
    fn start(&self, _stage: Stage, _total: u64) {}
    /// One unit of `stage` is done; `what` names it (a package, a layer).
    fn advance(&self, _stage: Stage, _what: &str) {}
    /// A stage is finished.
    fn finish(&self, _stage: Stage) {}
    /// Something the user should know that does not stop the build.
    fn warn(&self, _message: &str) {}
    /// A step worth a line of its own even without a terminal (the in-container installer's progress, a
    /// package's message).
    fn info(&self, _message: &str) {}
}

/// A reporter that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReporter;
impl Reporter for NoReporter {}
