//! `clipada infer`: judge image files, print one result per image, optionally write overlays
//! and anomaly maps.
//!
//! Overlays and maps go into folders clipada owns (`storage::owned`): a new or empty folder,
//! or one it wrote before; never a folder of other files such as the inputs'. Each input gets
//! its own output name (a second `part.png`, from another folder or as `part.jpg`, becomes
//! `part~2.png`), and no output is written over an input.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::pipeline::{InspectOptions, Inspector, Judged};
use crate::sink::npy::npy_bytes;
use crate::sink::overlay::OverlayRenderer;
use crate::sink::png::png_bytes;
use crate::source::files::{collect_images, read_image, ImageInput};
use crate::storage::owned::{FolderKind, OwnedDir};
use crate::storage::read::identity;
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
    pub(crate) fn complete(&self) -> bool {
        self.errors == 0 && self.overlay_failures == 0
    }
}

/// One line of output.
#[derive(Debug, Serialize)]
struct ResultLine<'a> {
    #[serde(serialize_with = "lossy_path")]
    path: &'a Path,
    score: Option<f32>,
    verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    elapsed_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "lossy_optional_path")]
    overlay: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "lossy_optional_path")]
    map: Option<PathBuf>,
}

/// A path as JSON text, as [`path_text`] writes it (JSON holds only Unicode, and a file name
/// must not stop the run).
fn lossy_path<S: serde::Serializer>(path: &&Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path_text(path))
}

/// A path as text that tells any two paths apart: bytes that are not UTF-8 are written `\xNN`
/// (U+FFFD for all of them would print two different files alike).
pub(crate) fn path_text(path: &Path) -> String {
    let mut text = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

fn lossy_optional_path<S: serde::Serializer>(path: &Option<PathBuf>, serializer: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => lossy_path(&path.as_path(), serializer),
        None => serializer.serialize_none(),
    }
}

/// The output folders of a run and the names given out so far.
struct Outputs {
    overlays: Option<OwnedDir>,
    maps: Option<OwnedDir>,
    /// Relative output name (without extension) of each input, unique within the run.
    names: HashMap<PathBuf, PathBuf>,
    taken: HashSet<PathBuf>,
    /// Identities of the inputs: never written over.
    inputs: HashSet<(u64, u64)>,
}

impl Outputs {
    /// `input`'s output name without extension: its relative path without extension, with
    /// `~2`, `~3`… added when another input already has it.
    fn name_for(&mut self, input: &ImageInput) -> PathBuf {
        if let Some(name) = self.names.get(&input.path) {
            return name.clone();
        }
        let base = input.relative.with_extension("");
        let mut name = base.clone();
        let mut n = 1;
        while !self.taken.insert(name.clone()) {
            n += 1;
            let mut numbered = base.clone().into_os_string();
            numbered.push(format!("~{n}"));
            name = PathBuf::from(numbered);
        }
        self.names.insert(input.path.clone(), name.clone());
        name
    }

    /// Writes `bytes` as `name.extension` in `dir`, unless that would replace an input. The
    /// extension is appended (`part.good` becomes `part.good.png`, never `part.png`).
    fn write(&self, dir: &OwnedDir, name: &Path, extension: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let mut relative = name.as_os_str().to_os_string();
        relative.push(".");
        relative.push(extension);
        let relative = PathBuf::from(relative);
        let destination = dir.path().join(&relative);
        if std::fs::metadata(&destination).is_ok_and(|m| self.inputs.contains(&identity(&m))) {
            anyhow::bail!("{}: is one of the inputs: not overwritten", destination.display());
        }
        dir.write_atomic(&relative, bytes).map_err(Into::into)
    }
}

/// Judges every image under `options.inputs`, writing result lines to `out` and logging
/// (error) why an image was not judged. Fails when the model, the inputs or the output folders cannot be used, or
/// when no image was found; an image that cannot be judged is an ERROR line.
pub fn infer(options: &InferOptions, out: &mut dyn Write) -> anyhow::Result<InferSummary> {
    let images = collect_images(&options.inputs)?;
    if images.is_empty() {
        let given: Vec<String> = options.inputs.iter().map(|p| p.display().to_string()).collect();
        anyhow::bail!("no png, jpg, jpeg or bmp images in {}", given.join(", "));
    }
    let claim = |dir: &Option<PathBuf>, kind| dir.as_deref().map(|d| OwnedDir::claim(d, kind)).transpose();
    let mut outputs = Outputs {
        overlays: claim(&options.overlay_dir, FolderKind::Overlays).context("--overlay-dir")?,
        maps: claim(&options.maps_dir, FolderKind::Maps).context("--maps-dir")?,
        names: HashMap::new(),
        taken: HashSet::new(),
        inputs: images.iter().filter_map(|i| std::fs::metadata(&i.path).ok()).map(|m| identity(&m)).collect(),
    };
    let mut inspector = Inspector::load(&options.model, &options.inspect)?;
    let mut renderer = OverlayRenderer::default();
    let mut summary = InferSummary::default();
    for input in &images {
        let line = judge_one(&mut inspector, &mut renderer, input, &mut outputs);
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
            writeln!(out, "{} {score} {}", escaped(line.path), line.verdict.name()).context("writing results")?;
        }
        if let Some(error) = &line.error {
            tracing::error!("{}: {error}", path_text(line.path));
        }
    }
    out.flush().context("writing results")?;
    Ok(summary)
}

fn judge_one<'a>(
    inspector: &mut Inspector,
    renderer: &mut OverlayRenderer,
    input: &'a ImageInput,
    outputs: &mut Outputs,
) -> ResultLine<'a> {
    let started = Instant::now();
    let mut line = ResultLine {
        path: &input.path,
        score: None,
        verdict: Verdict::Error,
        error: None,
        elapsed_ms: 0.0,
        overlay: None,
        map: None,
    };
    let frame = match read_image(&input.path) {
        Ok(frame) => frame,
        Err(e) => {
            line.error = Some(e.to_string());
            line.elapsed_ms = elapsed_ms(started);
            return line;
        }
    };
    let threshold = inspector.threshold().value();
    let judged = inspector.inspect(&frame);
    line.elapsed_ms = elapsed_ms(started);
    let (judged, verdict): (Option<Judged<'_>>, Verdict) = match judged {
        Ok(j) => (Some(j), j.verdict),
        Err(e) => {
            line.error = Some(e.to_string());
            (None, Verdict::Error)
        }
    };
    line.verdict = verdict;
    line.score = judged.map(|j| j.score);
    let name = outputs.name_for(input);
    let report = |what: &str, result: anyhow::Result<PathBuf>| match result {
        Ok(path) => Some(path),
        Err(e) => {
            tracing::warn!("{what} not written: {e:#}");
            None
        }
    };
    if let Some(dir) = &outputs.overlays {
        let drawn = renderer.render(&frame, judged.map(|j| (j.map, j.score)), threshold, verdict);
        let written = png_bytes(drawn).and_then(|bytes| outputs.write(dir, &name, "png", &bytes));
        line.overlay = report("overlay", written);
    }
    if let (Some(dir), Some(judged)) = (&outputs.maps, judged) {
        line.map = report("map", outputs.write(dir, &name, "npy", &npy_bytes(judged.map)));
    }
    line
}

/// `path` for a line of plain output, escaped as log lines are ([`crate::logging::escape_controls`]).
fn escaped(path: &Path) -> String {
    crate::logging::escape_controls(&path_text(path))
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}
