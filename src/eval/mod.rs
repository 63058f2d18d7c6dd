//! Evaluation on datasets in the MVTec AD layout: calibrate from `train/good`, score every
//! test image, and report image- and pixel-level metrics per category.
//!
//! Layout: `ROOT/CATEGORY/train/good/*.png`, `ROOT/CATEGORY/test/<kind>/*.png` (`good` is the
//! defect-free kind), `ROOT/CATEGORY/ground_truth/<kind>/<stem>_mask.png` for every other kind.

pub mod metrics;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::calibration::{calibrate, Settings};
use crate::model::backend::EngineConfig;
use crate::model::ModelFile;
use crate::pipeline::{Extractor, Inspector, Memory};
use crate::progress::Progress;
use crate::score::resample::MapResampler;
use crate::source::files::{collect_images, read_gray, read_image};
use metrics::{average_precision, f1_max, roc_auc, ProAccumulator};

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The ONNX model.
    pub model: PathBuf,
    /// Dataset root (MVTec AD layout).
    pub dataset: PathBuf,
    /// Categories to evaluate; empty: every folder under the root.
    pub categories: Vec<String>,
    /// Calibrate from this many `train/good` images (spread evenly), or all of them.
    pub shots: Option<usize>,
    /// Skip the anomaly region refinement.
    pub no_refine: bool,
    /// Patches kept in memory.
    pub memory_size: usize,
    /// Which engine runs the model.
    pub engine: EngineConfig,
}

/// The metrics of one category (or their mean); `None` where undefined.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Metrics {
    /// Image-level ROC AUC.
    pub image_auroc: Option<f64>,
    /// Image-level average precision.
    pub image_ap: Option<f64>,
    /// Image-level best F1.
    pub image_f1_max: Option<f64>,
    /// Pixel-level ROC AUC.
    pub pixel_auroc: Option<f64>,
    /// Pixel-level average precision.
    pub pixel_ap: Option<f64>,
    /// Area under the per-region-overlap curve to FPR 0.3, normalised.
    pub aupro: Option<f64>,
    /// Mean time to judge one image (preprocess, model, scoring), decoding excluded.
    pub ms_per_image: Option<f64>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Per category.
    pub categories: BTreeMap<String, Metrics>,
    /// Mean over categories of each metric (over those where it is defined).
    pub mean: Metrics,
}

/// One test image and its mask (`None`: a good image, all normal).
struct TestImage {
    image: PathBuf,
    mask: Option<PathBuf>,
}

/// Evaluates every requested category, loading the model and its engine once; each test image
/// done goes to `progress`.
pub(crate) fn evaluate(options: &EvalOptions, progress: &mut dyn Progress) -> anyhow::Result<EvalReport> {
    let model = ModelFile::open(&options.model)?;
    let categories =
        if options.categories.is_empty() { list_categories(&options.dataset)? } else { options.categories.clone() };
    let mut extractor = Extractor::load(&model, &options.engine)?;
    let mut report = BTreeMap::new();
    for category in &categories {
        let (metrics, returned) =
            evaluate_category(extractor, &options.dataset.join(category), options, category, progress)?;
        extractor = returned;
        report.insert(category.clone(), metrics);
    }
    progress.finish();
    let mean = mean_of(report.values());
    Ok(EvalReport { categories: report, mean })
}

fn list_categories(root: &Path) -> anyhow::Result<Vec<String>> {
    let entries = std::fs::read_dir(root).with_context(|| format!("{}: cannot read dataset root", root.display()))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("test").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    anyhow::ensure!(!names.is_empty(), "{}: no category folders (CATEGORY/test) found", root.display());
    Ok(names)
}

/// `k` of `n` indices spread evenly: `floor(i * n / k)`.
pub(crate) fn spread_indices(n: usize, k: usize) -> Vec<usize> {
    (0..k.min(n)).map(|i| i * n / k.min(n)).collect()
}

fn test_images(category: &Path) -> anyhow::Result<Vec<TestImage>> {
    let test = category.join("test");
    let kinds = std::fs::read_dir(&test).with_context(|| format!("{}: cannot read", test.display()))?;
    let mut kinds: Vec<PathBuf> = kinds.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    kinds.sort();
    let mut images = Vec::new();
    for kind in kinds {
        let kind_name = kind.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for input in collect_images(std::slice::from_ref(&kind))? {
            let mask = (kind_name != "good").then(|| {
                let stem = input.path.file_stem().unwrap_or_default().to_string_lossy();
                category.join("ground_truth").join(&kind_name).join(format!("{stem}_mask.png"))
            });
            if let Some(mask) = &mask {
                if !mask.is_file() {
                    bail!("{}: missing ground-truth mask for {}", mask.display(), input.path.display());
                }
            }
            images.push(TestImage { image: input.path, mask });
        }
    }
    anyhow::ensure!(!images.is_empty(), "{}: no test images", test.display());
    Ok(images)
}

/// One category's metrics; gives the extractor back for the next.
fn evaluate_category(
    mut extractor: Extractor,
    dir: &Path,
    options: &EvalOptions,
    name: &str,
    progress: &mut dyn Progress,
) -> anyhow::Result<(Metrics, Extractor)> {
    let train = dir.join("train/good");
    let mut good: Vec<PathBuf> = collect_images(std::slice::from_ref(&train))?.into_iter().map(|i| i.path).collect();
    anyhow::ensure!(!good.is_empty(), "{}: no training images", train.display());
    if let Some(k) = options.shots {
        good = spread_indices(good.len(), k).into_iter().map(|i| good[i].clone()).collect();
    }
    let tests = test_images(dir)?;
    let refine = !options.no_refine;
    let never = std::sync::atomic::AtomicBool::new(false);
    // The dataset labels train/good as good: every one of them is kept.
    let settings = Settings { memory_size: options.memory_size, refine, keep_outliers: true };
    let calibration = calibrate(&mut extractor, &good, settings, &never, &mut |_, _, _| {})?;
    let memory = Memory { bank: calibration.bank, path: train, sha256: None };
    let mut inspector = Inspector::new(extractor, refine, Some(&memory), None)?;

    let (mut image_scores, mut image_labels) = (Vec::new(), Vec::new());
    let (mut pixel_scores, mut pixel_labels) = (Vec::new(), Vec::new());
    let mut pro = ProAccumulator::default();
    let mut full_map = Vec::new();
    let mut resampler = MapResampler::default();
    let mut elapsed = 0.0;
    for (done, test) in tests.iter().enumerate() {
        progress.update(name, done, tests.len());
        let frame = read_image(&test.image)?;
        let started = Instant::now();
        let judged = inspector.inspect(&frame).with_context(|| format!("{}: not judged", test.image.display()))?;
        elapsed += started.elapsed().as_secs_f64();
        let score = judged.score;
        let mask = match &test.mask {
            Some(path) => {
                let mask = read_gray(path).context("ground-truth mask")?;
                if mask.dimensions() != frame.dimensions() {
                    bail!(
                        "{}: mask is {}x{}, its image {} is {}x{}",
                        path.display(),
                        mask.width(),
                        mask.height(),
                        test.image.display(),
                        frame.width(),
                        frame.height()
                    );
                }
                mask.as_raw().iter().map(|&v| v > 127).collect()
            }
            None => vec![false; (frame.width() * frame.height()) as usize],
        };
        resampler.run(judged.map, frame.width() as usize, frame.height() as usize, &mut full_map);
        image_scores.push(score);
        image_labels.push(test.mask.is_some());
        pixel_scores.extend_from_slice(&full_map);
        pixel_labels.extend_from_slice(&mask);
        pro.add(&full_map, &mask, frame.width() as usize);
    }
    progress.update(name, tests.len(), tests.len());
    let metrics = Metrics {
        image_auroc: roc_auc(&image_scores, &image_labels),
        image_ap: average_precision(&image_scores, &image_labels),
        image_f1_max: f1_max(&image_scores, &image_labels),
        pixel_auroc: roc_auc(&pixel_scores, &pixel_labels),
        pixel_ap: average_precision(&pixel_scores, &pixel_labels),
        aupro: pro.aupro(),
        ms_per_image: Some(elapsed * 1e3 / tests.len() as f64),
    };
    Ok((metrics, inspector.into_extractor()))
}

fn mean_of<'a>(all: impl Iterator<Item = &'a Metrics> + Clone) -> Metrics {
    let mean = |get: fn(&Metrics) -> Option<f64>| {
        let values: Vec<f64> = all.clone().filter_map(get).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    Metrics {
        image_auroc: mean(|m| m.image_auroc),
        image_ap: mean(|m| m.image_ap),
        image_f1_max: mean(|m| m.image_f1_max),
        pixel_auroc: mean(|m| m.pixel_auroc),
        pixel_ap: mean(|m| m.pixel_ap),
        aupro: mean(|m| m.aupro),
        ms_per_image: mean(|m| m.ms_per_image),
    }
}
