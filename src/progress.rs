//! How far a long command is (calibrate, eval, bench), told to whoever watches.
//!
//! The commands report through this narrow trait and never draw anything themselves: the
//! command line shows a progress bar on a terminal (`cli`), tests and `--json` runs see
//! nothing.

/// Receives progress reports.
pub trait Progress {
    /// `done` of `total` steps of the stage `stage` (a new stage name starts a new bar).
    fn update(&mut self, stage: &str, done: usize, total: usize);
    /// The command is done with progress reports (a bar in flight is cleared).
    fn finish(&mut self) {}
}

/// Reports to nobody.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Silent;

impl Progress for Silent {
    fn update(&mut self, _stage: &str, _done: usize, _total: usize) {}
}
