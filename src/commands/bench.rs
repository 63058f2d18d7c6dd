//! `clipada bench`: per-stage times of the whole pipeline, after a warm-up.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use image::RgbImage;
use serde::Serialize;

use crate::pipeline::{InspectOptions, Inspector};
use crate::progress::Progress;
use crate::sink::overlay::OverlayRenderer;
use crate::source::files::{collect_images, read_image};

/// What `clipada bench` was asked to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The ONNX model.
    pub model: PathBuf,
    /// Memory, threshold, refinement.
    pub inspect: InspectOptions,
    /// Images to cycle through; none: one synthetic 640x480 frame.
    pub images: Option<PathBuf>,
    /// Untimed frames first.
    pub warmup: usize,
    /// Timed frames.
    pub iterations: usize,
}

/// Median and 99th percentile of one stage, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct StageSummary {
    /// Median.
    pub median_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
}

/// The four stages.
#[derive(Debug, Clone, Serialize)]
pub struct Stages {
    /// Resize and normalise.
    pub preprocess: StageSummary,
    /// The engine's run.
    pub inference: StageSummary,
    /// Raw outputs to map and score (memory search included).
    pub scoring: StageSummary,
    /// Overlay drawing.
    pub overlay: StageSummary,
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Per-stage times.
    pub stages: Stages,
    /// The engine that ran the model.
    pub engine: crate::model::EngineInfo,
    /// The model's contract name.
    pub model: String,
    /// Timed frames.
    pub iterations: usize,
    /// Peak resident memory of the process (VmHWM), when the OS reports it.
    pub peak_rss_mb: Option<f64>,
}

/// Most timed or warm-up frames a benchmark runs.
pub(crate) const MAX_ITERATIONS: usize = 1_000_000;
/// Most images a benchmark holds decoded.
pub(crate) const MAX_IMAGES: usize = 1000;

/// Runs the benchmark; prints a table, or one JSON object with `json`; each frame done goes to
/// `progress`.
pub fn bench(
    options: &BenchOptions,
    json: bool,
    progress: &mut dyn Progress,
    out: &mut dyn Write,
) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(
        (1..=MAX_ITERATIONS).contains(&options.iterations) && options.warmup <= MAX_ITERATIONS,
        "--iterations must be in 1..={MAX_ITERATIONS} and --warmup at most {MAX_ITERATIONS}"
    );
    let frames = match &options.images {
        Some(dir) => {
            let images = collect_images(std::slice::from_ref(dir))?;
            anyhow::ensure!(images.len() <= MAX_IMAGES, "{}: more than {MAX_IMAGES} images", dir.display());
            images.iter().map(|i| read_image(&i.path)).collect::<Result<Vec<_>, _>>()?
        }
        None => vec![synthetic_frame()],
    };
    anyhow::ensure!(!frames.is_empty(), "no images to benchmark with");
    let mut inspector = Inspector::load(&options.model, &options.inspect)?;
    let threshold = inspector.threshold().value();
    let mut renderer = OverlayRenderer::default();
    let mut times: [Vec<Duration>; 4] = Default::default();
    let total = options.warmup + options.iterations;
    for i in 0..total {
        progress.update(if i < options.warmup { "warm-up" } else { "timed" }, i + 1, total);
        let frame = &frames[i % frames.len()];
        let judged = inspector.inspect(frame).context("benchmark frame not judged")?;
        let started = Instant::now();
        renderer.render(frame, Some((judged.map, judged.score)), threshold, judged.verdict);
        let overlay = started.elapsed();
        if i >= options.warmup {
            let stages = inspector.stage_times();
            for (all, t) in times.iter_mut().zip([stages.preprocess, stages.inference, stages.scoring, overlay]) {
                all.push(t);
            }
        }
    }
    progress.finish();
    let [preprocess, inference, scoring, overlay] = times.map(|mut t| summarise(&mut t));
    let report = BenchReport {
        stages: Stages { preprocess, inference, scoring, overlay },
        engine: inspector.info(),
        model: inspector.spec().name.clone(),
        iterations: options.iterations,
        peak_rss_mb: peak_rss_mb(),
    };
    if json {
        serde_json::to_writer(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} on {}, {} frames after {} warm-up",
            report.model, report.engine.engine, report.iterations, options.warmup
        )?;
        let stages = &report.stages;
        for (name, s) in [
            ("preprocess", stages.preprocess),
            ("inference", stages.inference),
            ("scoring", stages.scoring),
            ("overlay", stages.overlay),
        ] {
            writeln!(out, "{name:<11} median {:8.3} ms   p99 {:8.3} ms", s.median_ms, s.p99_ms)?;
        }
        if let Some(mb) = report.peak_rss_mb {
            writeln!(out, "peak memory {mb:.1} MB")?;
        }
    }
    Ok(report)
}

fn summarise(times: &mut [Duration]) -> StageSummary {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = ((times.len() as f64 * 0.99).ceil() as usize).clamp(1, times.len()) - 1;
    StageSummary { median_ms: ms(times[times.len() / 2]), p99_ms: ms(times[p99]) }
}

/// A 640x480 frame with structure (gradients and a disc), for benchmarks without images.
fn synthetic_frame() -> RgbImage {
    RgbImage::from_fn(640, 480, |x, y| {
        let disc = (x as i32 - 320).pow(2) + (y as i32 - 240).pow(2) < 150 * 150;
        let v = if disc { 180 } else { 40 };
        image::Rgb([v + (x % 32) as u8, v + (y % 16) as u8, v])
    })
}

/// Peak resident set size in MB from /proc/self/status (Linux).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
