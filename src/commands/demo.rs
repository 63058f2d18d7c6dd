//! `clipada demo`: the main job on the embedded default, a model and sample images that the
//! project ships (models/fixtures, models/samples), with overlays written beside the build.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::infer::{infer, InferOptions, InferSummary};
use crate::pipeline::InspectOptions;

/// The checkout the binary was built from; the demo's files live there.
const CHECKOUT: &str = env!("CARGO_MANIFEST_DIR");

/// The model the demo runs.
pub fn default_model() -> PathBuf {
    Path::new(CHECKOUT).join("models/fixtures/tiny-clipada.onnx")
}

/// The sample images the demo judges.
pub fn default_samples() -> PathBuf {
    Path::new(CHECKOUT).join("models/samples")
}

/// Where the demo writes its overlays unless told otherwise.
pub fn default_overlay_dir() -> PathBuf {
    Path::new(CHECKOUT).join("target/demo-overlays")
}

/// Runs `infer` on the shipped model and samples, writing overlays to `overlay_dir`.
pub fn demo(overlay_dir: &Path, out: &mut dyn Write, diagnostics: &mut dyn Write) -> anyhow::Result<InferSummary> {
    let options = InferOptions {
        model: default_model(),
        inspect: InspectOptions::default(),
        json: false,
        overlay_dir: Some(overlay_dir.to_path_buf()),
        inputs: vec![default_samples()],
    };
    writeln!(out, "model {} on {}", options.model.display(), options.inputs[0].display())?;
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
