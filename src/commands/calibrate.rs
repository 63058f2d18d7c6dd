//! `clipada calibrate`: a memory of good parts and a threshold, from a folder of good images.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use crate::calibration::{self, Calibration};
use crate::memory::file as memory_file;
use crate::model::backend::EngineConfig;
use crate::model::ModelFile;
use crate::pipeline::Extractor;
use crate::progress::Progress;
use crate::source::files::collect_images;
use crate::storage::owned::{replaceable, FileKind};

/// What `clipada calibrate` was asked to do.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// The ONNX model.
    pub model: PathBuf,
    /// Folder of good images (searched recursively).
    pub good: PathBuf,
    /// The memory file to write (an existing file there must be a memory file).
    pub out: PathBuf,
    /// Patches to keep.
    pub memory_size: usize,
    /// Score the good images without refinement (match how `infer` will be run).
    pub no_refine: bool,
    /// Keep good images that score far above the others (by default calibration refuses them).
    pub keep_outliers: bool,
    /// Which engine runs the model.
    pub engine: EngineConfig,
}

/// Calibrates and writes the memory file atomically; reports to `out`, each image done to
/// `progress`. `stop` ends it early.
pub fn calibrate(
    options: &CalibrateOptions,
    stop: &AtomicBool,
    progress: &mut dyn Progress,
    out: &mut dyn Write,
) -> anyhow::Result<Calibration> {
    replaceable(&options.out, FileKind::Memory).context("--out")?;
    let model = ModelFile::open(&options.model)?;
    let good: Vec<PathBuf> = collect_images(std::slice::from_ref(&options.good))?.into_iter().map(|i| i.path).collect();
    anyhow::ensure!(!good.is_empty(), "{}: no png, jpg, jpeg or bmp images found", options.good.display());
    let mut extractor = Extractor::load(&model, &options.engine)?;
    let settings = calibration::Settings {
        memory_size: options.memory_size,
        refine: !options.no_refine,
        keep_outliers: options.keep_outliers,
    };
    let mut each_image = |pass, done, total| {
        let stage = match pass {
            calibration::Pass::Features => "good parts' features",
            calibration::Pass::Scores => "good parts' scores",
        };
        progress.update(stage, done, total);
    };
    let result = calibration::calibrate(&mut extractor, &good, settings, stop, &mut each_image);
    progress.finish();
    let result = result?;
    memory_file::write(&options.out, &result.bank).context("--out")?;
    report(&result, &model.spec.name, out)?;
    writeln!(out, "wrote {}", options.out.display())?;
    Ok(result)
}

/// Tells what a calibration kept and the threshold it derived.
pub fn report(result: &Calibration, model: &str, out: &mut dyn Write) -> std::io::Result<()> {
    let bank = &result.bank;
    writeln!(
        out,
        "calibrated {model} from {} good images: kept {} of {} patches",
        bank.good_images,
        bank.len(),
        result.candidates
    )?;
    match bank.threshold {
        Some(t) => {
            let mut sorted = bank.good_scores.clone();
            sorted.sort_by(f32::total_cmp);
            writeln!(
                out,
                "threshold {t:.6} (leave-one-out good scores: min {:.6}, median {:.6}, max {:.6})",
                sorted[0],
                sorted[sorted.len() / 2],
                sorted[sorted.len() - 1]
            )
        }
        None => writeln!(out, "no threshold: it needs at least 2 good images; pass --threshold to infer"),
    }?;
    if (2..calibration::MIN_IMAGES_FOR_OUTLIERS).contains(&result.bank.good_images) {
        tracing::warn!(
            "with fewer than {} good images an outlier cannot be told; every one must be a good part",
            calibration::MIN_IMAGES_FOR_OUTLIERS
        );
    }
    for (path, score) in &result.outliers {
        writeln!(
            out,
            "left out {} (score {score:.6}): far above the other good parts; look at it (--keep-outliers keeps it)",
            path.display()
        )?;
    }
    Ok(())
}
