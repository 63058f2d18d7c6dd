//! `clipada run --config station.toml`: the inspection station until its source ends or it is
//! stopped (SIGTERM, SIGINT).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;

use crate::station::config::StationConfig;
use crate::station::watchdog::Notifier;
use crate::station::{RunSummary, Station, StationParts};

/// Loads `config`, builds the station and runs it until the source is exhausted or `stop` is
/// set; reports to `diagnostics`, and a summary line to `out` at the end.
pub fn run(
    config: &Path,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
    diagnostics: &mut dyn Write,
) -> anyhow::Result<RunSummary> {
    let config = StationConfig::load(config)?;
    let parts = StationParts::from_config(&config, stop.clone(), diagnostics)?;
    let mut station = Station::new(parts);
    match Notifier::from_env() {
        Ok(notifier) => station.supervised_by(notifier),
        Err(e) => writeln!(diagnostics, "clipada: {e}: not reporting to systemd").context("stderr")?,
    }
    let summary = station.run(&stop, diagnostics)?;
    writeln!(
        out,
        "{} frames: {} pass, {} fail, {} error; {} failed parts not saved, {} log lines lost",
        summary.frames, summary.passed, summary.failed, summary.errors, summary.images_dropped, summary.log_failures
    )
    .context("stdout")?;
    Ok(summary)
}
