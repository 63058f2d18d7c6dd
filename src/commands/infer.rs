//! `clipada infer`: judge image files, print one result per image, optionally write overlays
//! and anomaly maps.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::pipeline::{InspectOptions, Inspector};
use crate::sink::npy::write_npy_atomic;
use crate::sink::overlay::{write_png_atomic, OverlayRenderer};
use crate::source::files::{collect_images, load_rgb, ImageInput};
use crate::verdict::Verdict;

/// What `clipada infer` was asked to do.
#[derive(Debug, Clone)]
pub struct InferOptions {
    /// The ONNX model.
    pub model: PathBuf,
    /// How frames are judged (refinement, threshold).
    pub inspect: InspectOptions,
    /// One JSON object per line instead of `PATH SCORE VERDICT`.
    pub json: bool,
    /// Where to write one overlay PNG per input, if anywhere.
    pub overlay_dir: Option<PathBuf>,
    /// Where to write each judged input's anomaly map (model input resolution) as `.npy`.
    pub maps_dir: Option<PathBuf>,
    /// Image files and directories.
    pub inputs: Vec<PathBuf>,
}

/// How a run went; the process exit code follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InferSummary {
    /// Images judged PASS.
    pub passed: usize,
    /// Images judged FAIL.
    pub failed: usize,
    /// Images that could not be judged (verdict error).
    pub errors: usize,
    /// Judged images whose overlay or map could not be written.
    pub overlay_failures: usize,
}

impl InferSummary {
    /// True when every image was judged and every requested overlay written.
    pub fn complete(&self) -> bool {
        self.errors == 0 && self.overlay_failures == 0
    }
}

/// One line of output.
#[derive(Debug, Serialize)]
struct ResultLine<'a> {
    path: &'a Path,
    score: Option<f32>,
    verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    elapsed_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    overlay: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    map: Option<PathBuf>,
}

/// Judges every image under `options.inputs`, writing result lines to `out` and problems to
/// `diagnostics`. Fails only when the model cannot be loaded or the output cannot be written.
pub fn infer(options: &InferOptions, out: &mut dyn Write, diagnostics: &mut dyn Write) -> anyhow::Result<InferSummary> {
    if let Some(t) = options.inspect.threshold {
        anyhow::ensure!(t.is_finite(), "--threshold must be a finite number, not {t}");
    }
    let mut inspector = Inspector::load(&options.model, &options.inspect)?;
    let mut renderer = OverlayRenderer::default();
    let mut summary = InferSummary::default();
    for input in collect_images(&options.inputs) {
        let line = judge_one(&mut inspector, &mut renderer, &input, options, diagnostics);
        match line.verdict {
            Verdict::Pass => summary.passed += 1,
            Verdict::Fail => summary.failed += 1,
            Verdict::Error => summary.errors += 1,
        }
        let overlay_missing = options.overlay_dir.is_some() && line.overlay.is_none();
        let map_missing = options.maps_dir.is_some() && line.map.is_none();
        if (overlay_missing || map_missing) && line.error.is_none() {
            summary.overlay_failures += 1;
        }
        if options.json {
            serde_json::to_writer(&mut *out, &line).context("writing results")?;
            writeln!(out).context("writing results")?;
        } else {
            let score = line.score.map_or_else(|| "-".to_string(), |s| format!("{s:.6}"));
            writeln!(out, "{} {score} {}", line.path.display(), line.verdict.name()).context("writing results")?;
        }
        if let Some(error) = &line.error {
            writeln!(diagnostics, "clipada: {}: {error}", line.path.display()).context("writing diagnostics")?;
        }
    }
    Ok(summary)
}

fn judge_one<'a>(
    inspector: &mut Inspector,
    renderer: &mut OverlayRenderer,
    input: &'a ImageInput,
    options: &InferOptions,
    diagnostics: &mut dyn Write,
) -> ResultLine<'a> {
    let started = Instant::now();
    let frame = match load_rgb(&input.path) {
        Ok(frame) => frame,
        Err(e) => {
            return ResultLine {
                path: &input.path,
                score: None,
                verdict: Verdict::Error,
                error: Some(format!("{e:#}")),
                elapsed_ms: elapsed_ms(started),
                overlay: None,
                map: None,
            }
        }
    };
    let judged = inspector.inspect(&frame);
    let elapsed = elapsed_ms(started);
    let (score, verdict, error) = match &judged {
        Ok(j) => (Some(j.score), j.verdict, None),
        Err(e) => (None, Verdict::Error, Some(e.to_string())),
    };
    let overlay = options.overlay_dir.as_deref().and_then(|dir| {
        let path = dir.join(&input.relative).with_extension("png");
        let drawn = renderer.render(&frame, score.map(|s| (inspector.map(), s)), inspector.threshold(), verdict);
        match write_png_atomic(&path, drawn) {
            Ok(()) => Some(path),
            Err(e) => {
                let _ = writeln!(diagnostics, "clipada: overlay not written: {e:#}");
                None
            }
        }
    });
    let map = options.maps_dir.as_deref().filter(|_| score.is_some()).and_then(|dir| {
        let path = dir.join(&input.relative).with_extension("npy");
        match write_npy_atomic(&path, inspector.map()) {
            Ok(()) => Some(path),
            Err(e) => {
                let _ = writeln!(diagnostics, "clipada: map not written: {e:#}");
                None
            }
        }
    });
    ResultLine { path: &input.path, score, verdict, error, elapsed_ms: elapsed, overlay, map }
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}
