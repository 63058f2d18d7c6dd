//! Calibration from good parts: the memory bank and the decision threshold.
//!
//! Runs the model on each good image, keeps a greedy coreset of all their patch features, and
//! derives the threshold from leave-one-out scores: each good image scored against the memory
//! without its own patches, as an unseen good part would be. With `n >= 2` images and
//! leave-one-out scores `s_i`, the threshold is `max(max_i s_i, mean(s) + 3 sd(s))`: no good
//! image of the calibration set would fail, and a margin grows with the spread of good scores.
//! With one image there is no leave-one-out score and no threshold.

use std::path::PathBuf;

use anyhow::Context;

use crate::memory::coreset::greedy_coreset;
use crate::memory::MemoryBank;
use crate::model::backend::{load_engine_logged, EngineConfig};
use crate::model::{ModelFile, RawOutputs};
use crate::pipeline::Inspector;
use crate::score::Scorer;
use crate::source::files::load_rgb;

/// Patches kept in memory unless told otherwise (the speed/quality trade-off is measured in
/// the closing note of the real-detection issue: `clipada bench`, `clipada eval`).
pub const DEFAULT_MEMORY_SIZE: usize = 4096;
/// Standard deviations of the good scores added above their mean for the threshold.
pub const THRESHOLD_SIGMAS: f32 = 3.0;

/// What calibration produced.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The memory bank, threshold included.
    pub bank: MemoryBank,
    /// Leave-one-out score of each good image (empty with fewer than two images).
    pub good_scores: Vec<f32>,
    /// Patches seen before subsampling.
    pub candidates: usize,
}

/// Calibrates `model` from `good` images on `engine`, keeping at most `memory_size` patches.
pub fn calibrate(
    model: &ModelFile,
    good: &[PathBuf],
    memory_size: usize,
    no_refine: bool,
    engine: &EngineConfig,
) -> anyhow::Result<Calibration> {
    let spec = &model.spec;
    anyhow::ensure!(!good.is_empty(), "no good images to calibrate from");
    anyhow::ensure!(memory_size > 0, "--memory-size must be at least 1");
    let dim = spec.feature_dim.filter(|_| spec.outputs.patch_features.is_some()).with_context(|| {
        format!("{}: the model has no `patch_features` output, so it cannot be calibrated", model.path.display())
    })?;
    let (layers, patches) = (spec.layer_count(), spec.patch_count());
    let width = layers * dim;
    let engine = load_engine_logged(model, engine)?.engine;
    let mut extractor = Inspector::new(spec.clone(), engine, no_refine, None, None);
    let mut outputs: Vec<RawOutputs> = Vec::with_capacity(good.len());
    let mut candidates = Vec::with_capacity(good.len() * patches * width);
    for path in good {
        let frame = load_rgb(path).context("calibration needs every good image readable")?;
        let raw = extractor.extract(&frame).with_context(|| format!("{}: model run failed", path.display()))?;
        let features = raw.patch_features.as_deref().expect("spec promises patch_features");
        for i in 0..patches {
            for layer in 0..layers {
                candidates.extend_from_slice(&features[(layer * patches + i) * dim..(layer * patches + i + 1) * dim]);
            }
        }
        outputs.push(raw.clone());
    }
    let chosen = greedy_coreset(&candidates, width, memory_size);
    let mut bank = MemoryBank {
        model_sha256: model.sha256.clone(),
        model_name: spec.name.clone(),
        layers,
        dim,
        features: chosen.iter().flat_map(|&c| candidates[c * width..(c + 1) * width].iter().copied()).collect(),
        sources: chosen.iter().map(|&c| (c / patches) as u32).collect(),
        threshold: None,
        good_images: good.len(),
    };
    let mut good_scores = Vec::new();
    if good.len() >= 2 {
        let mut scorer = Scorer::new(spec, !no_refine, Some(bank.clone()));
        for (index, (raw, path)) in outputs.iter().zip(good).enumerate() {
            let score = scorer
                .score_excluding(raw, Some(index as u32))
                .with_context(|| format!("{}: leave-one-out scoring failed", path.display()))?;
            good_scores.push(score);
        }
        bank.threshold = Some(threshold_from_good_scores(&good_scores));
    }
    Ok(Calibration { bank, good_scores, candidates: candidates.len() / width })
}

/// `max(max s, mean s + THRESHOLD_SIGMAS * sd s)` (population standard deviation).
pub fn threshold_from_good_scores(scores: &[f32]) -> f32 {
    let n = scores.len() as f64;
    let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / n;
    let sd = (scores.iter().map(|&s| (s as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max.max((mean + THRESHOLD_SIGMAS as f64 * sd) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_mean_plus_three_sd_or_the_worst_good_score() {
        // mean 0.2, sd 0.1 (population) -> 0.5, above the max 0.3.
        assert!((threshold_from_good_scores(&[0.1, 0.3, 0.1, 0.3]) - 0.5).abs() < 1e-6);
        // Identical scores: sd 0, the max wins.
        assert_eq!(threshold_from_good_scores(&[0.25, 0.25]), 0.25);
    }
}
