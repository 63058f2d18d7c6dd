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
//! 3. Because the threshold admits the worst good image, one defective part in the good folder
//!    would blind the station to its defect. With [`MIN_IMAGES_FOR_OUTLIERS`] images or more,
//!    a good image scoring more than [`OUTLIER_SIGMAS`] robust standard deviations above the
//!    median (`1.4826 * MAD`, at least [`OUTLIER_MIN_SPREAD`] of the median) is an outlier:
//!    its patches leave the memory and its score the threshold, and the report names it (the
//!    other images' scores were taken with its patches present, so they are if anything lower:
//!    a stricter threshold). More than [`MAX_OUTLIER_FRACTION`] of the images as outliers is no
//!    longer a stray part but a mixed set (two product variants, a changed light): calibration
//!    refuses. `keep_outliers` keeps every image as given.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::memory::coreset::greedy_coreset;
use crate::memory::file::limits as memory_limits;
use crate::memory::{threshold_from_good_scores, MemoryBank};
use crate::pipeline::{Extractor, InspectError};
use crate::score::Scorer;
use crate::source::files::{read_image, ImageError};

/// Patches kept in memory unless told otherwise (the speed/quality trade-off is measured in
/// the closing note of the real-detection issue: `clipada bench`, `clipada eval`).
pub(crate) const DEFAULT_MEMORY_SIZE: usize = 4096;
/// Fewest patches a memory may keep: fewer would leave leave-one-out scoring without
/// neighbours and the memory blind to most of a part.
pub(crate) const MIN_MEMORY_SIZE: usize = 64;
/// Candidates kept in the pool, as a multiple of the memory size (pass 1).
pub(crate) const POOL_FACTOR: usize = 8;

/// Fewest good images with which outliers are looked for (a median and MAD need several).
pub const MIN_IMAGES_FOR_OUTLIERS: usize = 8;
/// Robust standard deviations above the median beyond which a good image is an outlier.
pub const OUTLIER_SIGMAS: f32 = 6.0;
/// Smallest robust spread, as a fraction of the median score (identical good scores have none).
pub const OUTLIER_MIN_SPREAD: f32 = 0.05;
/// Largest fraction of the good images that may be left out as outliers.
pub const MAX_OUTLIER_FRACTION: f32 = 0.05;

/// Why calibration failed; each names the image or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// No images, or a setting out of range.
    #[error("{0}")]
    Setting(String),
    /// A good image could not be read: calibration needs every one (a good set with holes is
    /// not the set the operator chose).
    #[error("calibration needs every good image readable: {0}")]
    Image(ImageError),
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
    /// Too many good images score far above the others: the set is mixed.
    #[error(
        "{} of {images} good images score far above the others (median {median:.6}, outlier above {limit:.6}): \
         more than {:.0} % is a mixed set (product variants? a changed light?), not stray parts: {}; \
         calibrate each kind of part on its own, or keep them all on purpose (--keep-outliers)",
        .outliers.len(),
        MAX_OUTLIER_FRACTION * 100.0,
        .outliers.iter().map(|(path, score)| format!("{} ({score:.6})", path.display())).collect::<Vec<_>>().join(", ")
    )]
    Outliers {
        /// Each outlier and its leave-one-out score, worst first.
        outliers: Vec<(PathBuf, f32)>,
        /// How many good images there were.
        images: usize,
        /// The median good score.
        median: f32,
        /// The score above which an image is an outlier.
        limit: f32,
    },
}

// By hand, not `#[from]`: the message already holds the cause, which must not be printed twice.
impl From<ImageError> for CalibrationError {
    fn from(error: ImageError) -> CalibrationError {
        CalibrationError::Image(error)
    }
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
    /// Good images left out as outliers, with their leave-one-out scores, worst first.
    pub outliers: Vec<(PathBuf, f32)>,
}

/// How to calibrate.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Patches the memory keeps.
    pub memory_size: usize,
    /// Whether the scores (and so the threshold) are taken with anomaly region refinement.
    pub refine: bool,
    /// Keep good images that are outliers (module documentation, step 3) instead of leaving
    /// them out.
    pub keep_outliers: bool,
}

/// Calibrates `extractor`'s model from `good` images as `settings` say. `progress` is told
/// each image done; `stop` ends it early.
pub fn calibrate(
    extractor: &mut Extractor,
    good: &[PathBuf],
    settings: Settings,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Pass, usize, usize),
) -> Result<Calibration, CalibrationError> {
    let Settings { memory_size, refine, keep_outliers } = settings;
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
        for chosen in greedy_coreset(&rows, width, per_image, stop).ok_or(CalibrationError::Stopped)? {
            pool.extend_from_slice(&rows[chosen * width..][..width]);
            pool_sources.push(index as u32);
        }
        progress(Pass::Features, index + 1, good.len());
    }
    let chosen = greedy_coreset(&pool, width, memory_size, stop).ok_or(CalibrationError::Stopped)?;
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

    // Pass 2: leave-one-out scores, outliers and the threshold.
    let mut left_out = Vec::new();
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
        if !keep_outliers {
            let found = outliers(&bank.good_scores);
            if found.len() as f32 > MAX_OUTLIER_FRACTION * good.len() as f32 {
                let (limit, median) = outlier_limit(&bank.good_scores).expect("outliers were found");
                let mut outliers: Vec<_> = found.iter().map(|&i| (good[i].clone(), bank.good_scores[i])).collect();
                outliers.sort_by(|a, b| b.1.total_cmp(&a.1));
                return Err(CalibrationError::Outliers { outliers, images: good.len(), median, limit });
            }
            left_out = found.iter().map(|&i| (good[i].clone(), bank.good_scores[i])).collect();
            left_out.sort_by(|a, b| b.1.total_cmp(&a.1));
            leave_out(&mut bank, &found);
        }
        bank.threshold = Some(threshold_from_good_scores(&bank.good_scores));
    }
    Ok(Calibration { bank, candidates: good.len() * patches, outliers: left_out })
}

/// What adding a wrongly rejected part to a memory did ([`add_good_part`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GoodPartAdded {
    /// The part's score against the memory before.
    pub score_before: f32,
    /// Its leave-one-out score (against the other good parts), now among the good scores.
    pub leave_one_out: f32,
    /// The threshold before.
    pub threshold_before: f32,
    /// The threshold the good scores now give.
    pub threshold_after: f32,
    /// Patches added.
    pub patches_added: usize,
}

/// Adds `image`, a part an operator says is good (`name` for messages), to `bank` as one more
/// good image: as many of its patches as the bank holds per good image (its own greedy
/// coreset), its leave-one-out score among the good scores, and the threshold those give
/// (calibration's rule, so the memory file stays consistent). The bank must have a threshold
/// (two or more good images) and room for the patches.
pub fn add_good_part(
    extractor: &mut Extractor,
    bank: &mut MemoryBank,
    image: &image::RgbImage,
    name: &Path,
    stop: &AtomicBool,
) -> Result<GoodPartAdded, CalibrationError> {
    let setting = |reason: String| Err(CalibrationError::Setting(reason));
    let Some(threshold_before) = bank.threshold else {
        return setting("the memory has no threshold (fewer than 2 good images): calibrate it first".into());
    };
    if bank.good_images >= memory_limits::GOOD_IMAGES {
        return setting(format!("the memory holds {} good images already", bank.good_images));
    }
    let spec = extractor.spec().clone();
    let model_error = |error: InspectError| CalibrationError::Model { path: name.to_path_buf(), error };
    let (layers, patches, dim) = (bank.layers, spec.patch_count(), bank.dim);
    let width = bank.width();
    let per_image = (bank.len() / bank.good_images.max(1)).clamp(1, patches);
    if bank.len() + per_image > memory_limits::PATCHES {
        return setting(format!("the memory is full ({} patches)", bank.len()));
    }
    let refine = bank.made_for.refine;
    let raw = extractor.extract(image).map_err(model_error)?;
    let score_before = Scorer::new(&spec, refine, Some(bank))
        .and_then(|mut scorer| scorer.score(raw).map(|s| s.score))
        .map_err(|e| model_error(e.into()))?;
    let features = raw
        .patch_features
        .as_deref()
        .ok_or_else(|| CalibrationError::Setting("the model has no patch features".into()))?;
    if features.len() != layers * patches * dim {
        return setting("the model's features do not fit the memory".into());
    }
    let mut rows = vec![0.0f32; patches * width];
    for i in 0..patches {
        for layer in 0..layers {
            rows[i * width + layer * dim..][..dim].copy_from_slice(&features[(layer * patches + i) * dim..][..dim]);
        }
    }
    let chosen = greedy_coreset(&rows, width, per_image, stop).ok_or(CalibrationError::Stopped)?;
    let source = bank.good_images as u32;
    for &c in &chosen {
        bank.features.extend_from_slice(&rows[c * width..][..width]);
        bank.sources.push(source);
    }
    bank.good_images += 1;
    let raw = extractor.extract(image).map_err(model_error)?;
    let leave_one_out = Scorer::new(&spec, refine, Some(bank))
        .and_then(|mut scorer| scorer.score_excluding(raw, Some(source)).map(|s| s.score))
        .map_err(|e| model_error(e.into()))?;
    bank.good_scores.push(leave_one_out);
    let threshold_after = threshold_from_good_scores(&bank.good_scores);
    bank.threshold = Some(threshold_after);
    Ok(GoodPartAdded { score_before, leave_one_out, threshold_before, threshold_after, patches_added: chosen.len() })
}

/// Reads one good image and runs the model on it.
fn run<'a>(extractor: &'a mut Extractor, path: &Path) -> Result<&'a crate::model::RawOutputs, CalibrationError> {
    let frame = read_image(path)?;
    extractor.extract(&frame).map_err(|error| CalibrationError::Model { path: path.to_path_buf(), error })
}

/// The score above which a good image is an outlier, and the median; `None` with too few scores.
pub(crate) fn outlier_limit(scores: &[f32]) -> Option<(f32, f32)> {
    if scores.len() < MIN_IMAGES_FOR_OUTLIERS {
        return None;
    }
    let median_of = |values: &mut Vec<f32>| {
        values.sort_by(f32::total_cmp);
        let n = values.len();
        (values[(n - 1) / 2] + values[n / 2]) / 2.0
    };
    let median = median_of(&mut scores.to_vec());
    let mad = median_of(&mut scores.iter().map(|s| (s - median).abs()).collect());
    let spread = (1.4826 * mad).max(OUTLIER_MIN_SPREAD * median.abs());
    Some((median + OUTLIER_SIGMAS * spread, median))
}

/// The indices of the outliers among `scores`, in index order.
fn outliers(scores: &[f32]) -> Vec<usize> {
    let Some((limit, _)) = outlier_limit(scores) else { return Vec::new() };
    (0..scores.len()).filter(|&i| scores[i] > limit).collect()
}

/// Removes the good images at `images` (sorted) from `bank`: their patches and their scores;
/// the remaining images are numbered again in order.
fn leave_out(bank: &mut MemoryBank, images: &[usize]) {
    if images.is_empty() {
        return;
    }
    let width = bank.width();
    let renumbered: Vec<Option<u32>> = {
        let mut next = 0;
        (0..bank.good_images)
            .map(|i| {
                (images.binary_search(&i).is_err()).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect()
    };
    let mut features = Vec::with_capacity(bank.features.len());
    let mut sources = Vec::with_capacity(bank.sources.len());
    for (patch, &source) in bank.sources.iter().enumerate() {
        if let Some(new) = renumbered[source as usize] {
            features.extend_from_slice(&bank.features[patch * width..][..width]);
            sources.push(new);
        }
    }
    bank.features = features;
    bank.sources = sources;
    bank.good_scores =
        (0..bank.good_images).filter(|i| renumbered[*i].is_some()).map(|i| bank.good_scores[i]).collect();
    bank.good_images -= images.len();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_image_far_above_the_others_is_an_outlier() {
        let mut scores = vec![1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.02, 0.98, 1.01, 0.99];
        assert!(outliers(&scores).is_empty());
        // Spread: MAD 0.02 -> 0.0297, floored at 5 % of the median (0.05); limit 1.3.
        let (limit, median) = outlier_limit(&scores).unwrap();
        assert!((median - 1.0).abs() < 1e-6 && (limit - 1.3).abs() < 1e-5, "{limit} {median}");
        scores[7] = 1.4;
        scores[3] = 2.5;
        assert_eq!(outliers(&scores), vec![3, 7]);
        // Too few images to tell.
        assert!(outliers(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0]).is_empty());
    }

    #[test]
    fn leaving_out_images_removes_their_patches_and_scores_and_renumbers_the_rest() {
        let mut bank = crate::memory::file::tests::bank();
        bank.features = (0..5).flat_map(|i| [i as f32; 6]).collect();
        bank.sources = vec![0, 3, 7, 3, 5];
        bank.good_scores = (0..8).map(|i| i as f32 / 10.0).collect();
        leave_out(&mut bank, &[3, 6]);
        assert_eq!(bank.sources, vec![0, 5, 4]);
        assert_eq!(bank.features, [0.0; 6].iter().chain(&[2.0; 6]).chain(&[4.0; 6]).copied().collect::<Vec<_>>());
        assert_eq!(bank.good_scores, vec![0.0, 0.1, 0.2, 0.4, 0.5, 0.7]);
        assert_eq!(bank.good_images, 6);
    }
}
