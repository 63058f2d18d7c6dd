//! `clipada check`: which engine and provider actually run a model, and why others did not.

use std::io::Write;
use std::path::Path;

use crate::model::backend::{load_engine, EngineConfig};
use crate::model::{ModelFile, RawOutputs};

/// What ran the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// `ort` or `tract`.
    pub engine: &'static str,
    /// The provider (`cpu` for tract).
    pub provider: &'static str,
    /// Why each engine or provider before it was skipped.
    pub skipped: Vec<String>,
}

/// Loads `model`, runs one input through it and reports; fails if the model did not run.
pub fn check(model: &Path, engine: &EngineConfig, out: &mut dyn Write) -> anyhow::Result<CheckReport> {
    let file = ModelFile::open(model)?;
    let mut chosen = load_engine(&file, engine)?;
    for why in &chosen.skipped {
        writeln!(out, "skipped {why}")?;
    }
    let input = vec![0.0; file.spec.input_len()];
    let mut raw = RawOutputs::for_spec(&file.spec);
    chosen.engine.run(&input, &mut raw)?;
    let info = chosen.engine.info();
    writeln!(
        out,
        "ran {} ({}) on engine {}, provider {}, {}",
        model.display(),
        file.spec.name,
        info.engine,
        info.provider,
        info.precision.name()
    )?;
    Ok(CheckReport { engine: info.engine, provider: info.provider, skipped: chosen.skipped })
}
