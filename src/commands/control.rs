//! `clipada control --config station.toml REQUEST`: one request to a running station through
//! its control socket (`station::control` lists them), its answer printed.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::station::control;
use crate::station::plan::StationPlan;

/// Sends `request` to the station of `config` and writes its answer to `out`; an error when the
/// station refused it or could not be reached.
pub fn control(config: &Path, request: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let plan = StationPlan::load(config)?;
    let answer = control::send(&plan.state_dir, request)?;
    writeln!(out, "{answer}").context("stdout")
}
