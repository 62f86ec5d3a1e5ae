//! Clobbers: paths installed by more than one package, and which package keeps each (the last in
//! install order, as conda does).

use crate::install::PackageFacts;
use std::collections::{BTreeMap, BTreeSet};

/// A path two packages install: the winner's file is in the image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Clobber {
    /// The path, relative to the prefix.
    pub path: String,
    /// The package whose file is in the image (the later one in dependency order).
    pub winner: String,
    /// The packages whose file was overwritten.
    pub losers: Vec<String>,
}

/// The paths each package loses (by index), and every clobbered path with its winner and losers, from
/// what each package installs; `name` names a package.
pub fn find(facts: &BTreeMap<usize, PackageFacts>, name: impl Fn(usize) -> String) -> (BTreeMap<usize, BTreeSet<String>>, Vec<Clobber>) {
    let mut owners: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (&i, f) in facts {
        for p in &f.paths {
            owners.entry(p.as_str()).or_default().push(i);
        }
    }
    let mut exclude: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut clobbers = Vec::new();
    for (path, mut who) in owners.into_iter().filter(|(_, w)| w.len() > 1) {
        who.sort();
        let winner = *who.last().expect("at least two owners");
        for &loser in &who[..who.len() - 1] {
            exclude.entry(loser).or_default().insert(path.to_string());
        }
        clobbers.push(Clobber { path: path.to_string(), winner: name(winner), losers: who[..who.len() - 1].iter().map(|&l| name(l)).collect() });
    }
    (exclude, clobbers)
}
