//! Progress bars on stderr (indicatif), one per stage.

use envlayer::{Reporter, Stage};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Mutex;

/// Plain lines on stderr, for the in-container installer (no terminal, no bars).
pub struct Lines;

impl Reporter for Lines {
    fn warn(&self, message: &str) {
        eprintln!("envlayer: warning: {message}");
    }
    fn info(&self, message: &str) {
        eprintln!("envlayer: {message}");
    }
}

pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<Vec<(Stage, ProgressBar)>>,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        let target = if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        Self { multi: MultiProgress::with_draw_target(target), bars: Mutex::new(Vec::new()) }
    }

    fn bar(&self, stage: Stage) -> Option<ProgressBar> {
        self.bars.lock().ok()?.iter().find(|(s, _)| *s == stage).map(|(_, b)| b.clone())
    }

    pub fn clear(&self) {
        let _ = self.multi.clear();
    }
}

fn label(stage: Stage) -> &'static str {
    match stage {
        Stage::Solve => "solve",
        Stage::Fetch => "fetch",
        Stage::Install => "install",
        Stage::Pack => "pack",
        Stage::Write => "write",
    }
}

impl Reporter for Bars {
    fn start(&self, stage: Stage, total: u64) {
        let bar = if total == 0 {
            let b = ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        } else {
            ProgressBar::new(total)
        };
        let style = ProgressStyle::with_template("{prefix:>8} {bar:30} {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = self.multi.add(bar.with_style(style).with_prefix(label(stage)));
        if let Ok(mut bars) = self.bars.lock() {
            bars.push((stage, bar));
        }
    }
    fn advance(&self, stage: Stage, what: &str) {
        if let Some(b) = self.bar(stage) {
            b.inc(1);
            b.set_message(what.to_string());
        }
    }
    fn finish(&self, stage: Stage) {
        if let Some(b) = self.bar(stage) {
            b.finish_with_message("done");
        }
    }
    // Warnings and messages always reach stderr, terminal or not, `-q` or not: only the bars depend on
    // a terminal (indicatif hides them without one, and `multi.println` would then drop the line).
    fn warn(&self, message: &str) {
        self.multi.suspend(|| eprintln!("warning: {message}"));
    }
    fn info(&self, message: &str) {
        self.multi.suspend(|| eprintln!("{message}"));
    }
}
