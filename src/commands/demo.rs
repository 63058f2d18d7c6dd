//! `clipada demo`: the main job on the embedded default. Calibrates the shipped default model
//! (EfficientNet-Lite0 features, models/default) from the shipped good sample parts, judges the
//! shipped test parts (some with defects), prints the verdicts and writes overlays.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::calibrate::{calibrate, CalibrateOptions};
use super::infer::{infer, InferOptions, InferSummary};
use crate::calibration::DEFAULT_MEMORY_SIZE;
use crate::model::backend::EngineConfig;
use crate::pipeline::InspectOptions;

/// The checkout the binary was built from; the demo's files live there.
const CHECKOUT: &str = env!("CARGO_MANIFEST_DIR");

/// The model the demo runs.
pub fn default_model() -> PathBuf {
    Path::new(CHECKOUT).join("models/default/efficientnet-lite0.onnx")
}

/// The sample product category (MVTec AD layout) the demo calibrates on and judges.
pub fn default_samples() -> PathBuf {
    Path::new(CHECKOUT).join("models/samples/part")
}

/// Where the demo writes its memory file and overlays unless told otherwise.
pub fn default_output_dir() -> PathBuf {
    Path::new(CHECKOUT).join("target/demo")
}

/// Calibrates from `samples/train/good`, judges `samples/test` with overlays in `output/overlays`.
pub fn demo(output: &Path, out: &mut dyn Write, diagnostics: &mut dyn Write) -> anyhow::Result<InferSummary> {
    std::fs::create_dir_all(output)?;
    let memory = output.join("part.memory");
    let calibration = CalibrateOptions {
        model: default_model(),
        good: default_samples().join("train/good"),
        out: memory.clone(),
        memory_size: DEFAULT_MEMORY_SIZE,
        no_refine: false,
        engine: EngineConfig::default(),
    };
    calibrate(&calibration, out)?;
    let overlay_dir = output.join("overlays");
    let options = InferOptions {
        model: default_model(),
        inspect: InspectOptions { memory: Some(memory), ..InspectOptions::default() },
        json: false,
        overlay_dir: Some(overlay_dir.clone()),
        maps_dir: None,
        inputs: vec![default_samples().join("test")],
    };
    let summary = infer(&options, out, diagnostics)?;
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
