//! `clipada demo`: the main job on the embedded default. Calibrates the shipped default model
//! (EfficientNet-Lite0 features, models/default) from the shipped good sample parts, judges the
//! shipped test parts (some with defects), prints the verdicts and writes overlays.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use crate::progress::Silent;

use super::calibrate::{calibrate, CalibrateOptions};
use super::infer::{infer, InferOptions, InferSummary};
use crate::calibration::DEFAULT_MEMORY_SIZE;
use crate::model::backend::EngineConfig;
use crate::pipeline::InspectOptions;
use crate::storage::owned::{FolderKind, OwnedDir};

/// The checkout the demo's files live in: `CARGO_MANIFEST_DIR` when run by `cargo run`, else
/// the current folder (no path of the build machine is compiled in).
pub(crate) fn checkout() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

/// The model the demo runs.
pub fn default_model() -> PathBuf {
    checkout().join("models/default/efficientnet-lite0.onnx")
}

/// The sample product category (MVTec AD layout) the demo calibrates on and judges.
pub(crate) fn default_samples() -> PathBuf {
    checkout().join("models/samples/part")
}

/// Where the demo writes its memory file and overlays unless told otherwise.
pub(crate) fn default_output_dir() -> PathBuf {
    checkout().join("target/demo")
}

/// Calibrates from `samples/train/good`, judges `samples/test` with overlays in `output/overlays`.
pub fn demo(output: &Path, out: &mut dyn Write) -> anyhow::Result<InferSummary> {
    anyhow::ensure!(
        default_model().is_file(),
        "{}: not found: run the demo from the clipada checkout (cargo run --release -- demo)",
        default_model().display()
    );
    let folder = OwnedDir::claim(output, FolderKind::Demo).context("--output")?;
    let memory = folder.path().join("part.memory");
    let calibration = CalibrateOptions {
        model: default_model(),
        good: default_samples().join("train/good"),
        out: memory.clone(),
        memory_size: DEFAULT_MEMORY_SIZE,
        no_refine: false,
        keep_outliers: false,
        engine: EngineConfig::default(),
    };
    calibrate(&calibration, &AtomicBool::new(false), &mut Silent, out)?;
    let overlay_dir = folder.path().join("overlays");
    let options = InferOptions {
        model: default_model(),
        inspect: InspectOptions { memory: Some(memory), ..InspectOptions::default() },
        json: false,
        overlay_dir: Some(overlay_dir.clone()),
        maps_dir: None,
        inputs: vec![default_samples().join("test")],
    };
    let summary = infer(&options, out)?;
    writeln!(
        out,
        "{} pass, {} fail, {} error; overlays in {}",
        summary.passed,
        summary.failed,
        summary.errors,
        overlay_dir.display()
    )?;
    Ok(summary)
}
