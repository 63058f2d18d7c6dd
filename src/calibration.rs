//! Calibration from good parts: the memory bank and the decision threshold.
//!
//! Takes a built [`Extractor`], so whoever calibrates (the `calibrate` command, an evaluation,
//! later the operator page) loads the model and its engine once.
//!
//! Two passes over the good images, with peak memory bounded by the memory size, not by the
//! number of images:
//! 1. Each image's patch features are reduced to its own greedy coreset of
//!    `ceil(POOL_FACTOR * memory_size / images)` patches (all of them when the images are few),
//!    so the pool of candidates never exceeds `POOL_FACTOR * memory_size` patches (plus one
//!    image's); the memory is the greedy coreset of that pool. With few enough images (every
//!    patch fits in the pool) this is exactly the greedy coreset of all patches.
//! 2. Each image is run again and scored against the memory without its own patches, as an
//!    unseen good part would be (leave-one-out). With `n >= 2` images and scores `s_i`, the
//!    threshold is `max(max_i s_i, mean(s) + 3 sd(s))`: no good image of the calibration set
//!    would fail, and a margin grows with the spread of good scores. With one image there is no
//!    leave-one-out score and no threshold.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::memory::coreset::greedy_coreset;
use crate::memory::file::limits as memory_limits;
use crate::memory::MemoryBank;
use crate::pipeline::{Extractor, InspectError};
use crate::score::Scorer;
use crate::source::files::{read_image, ImageError};

/// Patches kept in memory unless told otherwise (the speed/quality trade-off is measured in
/// the closing note of the real-detection issue: `clipada bench`, `clipada eval`).
pub const DEFAULT_MEMORY_SIZE: usize = 4096;
/// Fewest patches a memory may keep: fewer would leave leave-one-out scoring without
/// neighbours and the memory blind to most of a part.
pub const MIN_MEMORY_SIZE: usize = 64;
/// Candidates kept in the pool, as a multiple of the memory size (pass 1).
pub const POOL_FACTOR: usize = 8;
/// Standard deviations of the good scores added above their mean for the threshold.
pub const THRESHOLD_SIGMAS: f32 = 3.0;

/// Why calibration failed; each names the image or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// No images, or a setting out of range.
    #[error("{0}")]
    Setting(String),
    /// A good image could not be read: calibration needs every one (a good set with holes is
    /// not the set the operator chose).
    #[error("calibration needs every good image readable: {0}")]
    Image(#[from] ImageError),
    /// The model could not judge a good image.
    #[error("{path}: {error}")]
    Model {
        /// The image.
        path: PathBuf,
        /// Why.
        error: InspectError,
    },
    /// Stopped on request (SIGTERM).
    #[error("calibration stopped on request")]
    Stopped,
}

/// Which pass calibration is in, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Gathering patch features.
    Features,
    /// Leave-one-out scores of the good images.
    Scores,
}

/// What calibration produced.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The memory bank, threshold and good scores included.
    pub bank: MemoryBank,
    /// Patches seen before subsampling.
    pub candidates: usize,
}

/// Calibrates `extractor`'s model from `good` images, keeping `memory_size` patches, for
/// scoring with or without `refine`. `progress` is told each image done; `stop` ends it early.
pub fn calibrate(
    extractor: &mut Extractor,
    good: &[PathBuf],
    memory_size: usize,
    refine: bool,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Pass, usize, usize),
) -> Result<Calibration, CalibrationError> {
    let setting = |reason: String| Err(CalibrationError::Setting(reason));
    if good.is_empty() {
        return setting("no good images to calibrate from".into());
    }
    if good.len() > memory_limits::GOOD_IMAGES {
        return setting(format!("{} good images: at most {} are used", good.len(), memory_limits::GOOD_IMAGES));
    }
    if !(MIN_MEMORY_SIZE..=memory_limits::PATCHES).contains(&memory_size) {
        return setting(format!(
            "memory size {memory_size}: must be in {MIN_MEMORY_SIZE}..={}",
            memory_limits::PATCHES
        ));
    }
    let spec = extractor.spec().clone();
    let Some(dim) = spec.feature_dim.filter(|_| spec.outputs.patch_features.is_some()) else {
        return setting(format!("the model {} has no `patch_features` output, so it cannot be calibrated", spec.name));
    };
    let (layers, patches) = (spec.layer_count(), spec.patch_count());
    let width = layers * dim;
    let per_image = (POOL_FACTOR * memory_size).div_ceil(good.len()).clamp(1, patches);

    // Pass 1: each image's own coreset into the pool.
    let mut pool = Vec::new();
    let mut pool_sources = Vec::new();
    let mut rows = vec![0.0f32; patches * width];
    for (index, path) in good.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            return Err(CalibrationError::Stopped);
        }
        let raw = run(extractor, path)?;
        let features = raw.patch_features.as_deref().expect("validated: the spec has patch_features");
        for i in 0..patches {
            for layer in 0..layers {
                rows[i * width + layer * dim..][..dim].copy_from_slice(&features[(layer * patches + i) * dim..][..dim]);
            }
        }
        for chosen in greedy_coreset(&rows, width, per_image) {
            pool.extend_from_slice(&rows[chosen * width..][..width]);
            pool_sources.push(index as u32);
        }
        progress(Pass::Features, index + 1, good.len());
    }
    let chosen = greedy_coreset(&pool, width, memory_size);
    let mut bank = MemoryBank {
        made_for: extractor.made_for(refine),
        layers,
        dim,
        grid: spec.grid,
        features: chosen.iter().flat_map(|&c| pool[c * width..][..width].iter().copied()).collect(),
        sources: chosen.iter().map(|&c| pool_sources[c]).collect(),
        threshold: None,
        good_images: good.len(),
        good_scores: Vec::new(),
    };
    drop(pool);

    // Pass 2: leave-one-out scores and the threshold.
    if good.len() >= 2 {
        let mut scorer = Scorer::new(&spec, refine, Some(&bank))
            .map_err(|error| CalibrationError::Model { path: good[0].clone(), error: error.into() })?;
        for (index, path) in good.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return Err(CalibrationError::Stopped);
            }
            let raw = run(extractor, path)?;
            let scored = scorer
                .score_excluding(raw, Some(index as u32))
                .map_err(|error| CalibrationError::Model { path: path.clone(), error: error.into() })?;
            bank.good_scores.push(scored.score);
            progress(Pass::Scores, index + 1, good.len());
        }
        bank.threshold = Some(threshold_from_good_scores(&bank.good_scores));
    }
    Ok(Calibration { bank, candidates: good.len() * patches })
}

/// Reads one good image and runs the model on it.
fn run<'a>(extractor: &'a mut Extractor, path: &Path) -> Result<&'a crate::model::RawOutputs, CalibrationError> {
    let frame = read_image(path)?;
    extractor.extract(&frame).map_err(|error| CalibrationError::Model { path: path.to_path_buf(), error })
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
