//! Scoring: raw model outputs to an anomaly map and an image score.
//!
//! Owns every step after the engine, each defined by `models/reference.py`: per-layer softmax,
//! layer fusion, memory distances and their fusion with the text map, anomaly region
//! refinement, bilinear upsampling to the model input size, Gaussian smoothing, image score.
//! Takes plain slices; knows nothing of ONNX or engines.

pub mod refine;
pub mod resample;

use crate::memory::{MemoryBank, NearestSearch};
use crate::model::{ModelSpec, RawOutputs};
use refine::Refiner;
use resample::{GaussianSmoother, Upsampler};

/// Largest difference from 1 of the length of a patch feature vector (per layer) that still
/// counts as L2-normalised, as the contract says `patch_features` are. Float32 and FP16 engines
/// stay far inside it; features at other scales would move memory distances, and so scores,
/// by a factor no threshold was calibrated for.
pub const FEATURE_NORM_TOLERANCE: f32 = 0.05;
/// Rounding slack on the documented range of map values.
const MAP_RANGE_SLACK: f32 = 1e-3;

/// Why a frame could not be scored. Every variant is an ERROR verdict, never a PASS.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    /// The model lacks an output the scoring needs.
    #[error("the model has no `{0}` output, which scoring needs")]
    MissingOutput(&'static str),
    /// The model has no text branch and no memory was given.
    #[error("this model scores only against a memory of good parts: run `clipada calibrate` and pass --memory")]
    NeedsMemory,
    /// A model output, a memory distance, the map or the score came out NaN or infinite.
    #[error("non-finite {0} (NaN or infinity): the frame cannot be judged")]
    NotFinite(&'static str),
    /// A model output breaks the contract (features not unit length, map out of its range).
    #[error("{what} out of contract: {reason}")]
    OutOfContract {
        /// The output or stage.
        what: &'static str,
        /// How.
        reason: String,
    },
    /// Leave-one-out found no remembered patch from another image.
    #[error(
        "every remembered patch comes from the image left out: calibrate from more good images or keep more patches"
    )]
    NoNeighbour,
    /// The memory's layers or feature size are not the model's.
    #[error("the memory holds {memory} values per patch, the model gives {model}")]
    MemoryMismatch {
        /// `L*D` of the memory.
        memory: usize,
        /// `L*D` of the model.
        model: usize,
    },
}

/// Checks a frame's raw outputs before they are used: every value finite, and each patch
/// feature vector (one per layer and patch) of unit length within [`FEATURE_NORM_TOLERANCE`].
/// The one check of engine outputs: the scorer and calibration both call it.
pub fn validate_outputs(raw: &RawOutputs, feature_dim: Option<usize>) -> Result<(), ScoreError> {
    let outputs = [
        ("patch_logits", raw.patch_logits.as_deref()),
        ("image_logits", raw.image_logits.as_deref()),
        ("patch_features", raw.patch_features.as_deref()),
    ];
    for (role, values) in outputs {
        if values.is_some_and(|v| v.iter().any(|x| !x.is_finite())) {
            return Err(ScoreError::NotFinite(role));
        }
    }
    if let (Some(features), Some(dim)) = (raw.patch_features.as_deref(), feature_dim) {
        for vector in features.chunks_exact(dim) {
            let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
            if !((1.0 - FEATURE_NORM_TOLERANCE)..=(1.0 + FEATURE_NORM_TOLERANCE)).contains(&norm) {
                return Err(ScoreError::OutOfContract {
                    what: "patch_features",
                    reason: format!("a feature vector has length {norm}, not 1 (the contract says L2-normalised)"),
                });
            }
        }
    }
    Ok(())
}

/// An anomaly map at the model input's resolution, row-major, values in [0, 1].
#[derive(Debug, Clone, Copy)]
pub struct AnomalyMap<'a> {
    /// `height * width` values.
    pub values: &'a [f32],
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// A scored frame: its image score and the map it came from.
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    /// The image score, finite and within [`Scorer::score_range`].
    pub score: f32,
    /// The anomaly map (zero where the ignore mask excludes pixels).
    pub map: AnomalyMap<'a>,
}

/// Scores raw outputs, reusing its buffers from frame to frame.
#[derive(Debug, Clone)]
pub struct Scorer {
    layers: usize,
    patches: usize,
    feature_dim: Option<usize>,
    top_k: f64,
    image_logits_weight: f32,
    text: bool,
    refiner: Option<Refiner>,
    memory: Option<NearestSearch>,
    distances: Vec<f32>,
    upsampler: Upsampler,
    smoother: GaussianSmoother,
    coarse: Vec<f32>,
    map: Vec<f32>,
    size: [usize; 2],
    ranked: Vec<f32>,
    /// Per map pixel, whether it is inspected; none: all are.
    inspected: Option<Vec<bool>>,
}

impl Scorer {
    /// A scorer for `spec`; `refine` turns the anomaly region refinement on where the model has
    /// it; `memory` adds the memory branch (it must hold the model's `L*D` values per patch).
    pub fn new(spec: &ModelSpec, refine: bool, memory: Option<&MemoryBank>) -> Result<Self, ScoreError> {
        let size = spec.input.size;
        let text = spec.outputs.patch_logits.is_some();
        if let Some(bank) = memory {
            let model = spec.layer_count() * spec.feature_dim.unwrap_or(0);
            if bank.width() != model || bank.is_empty() || spec.outputs.patch_features.is_none() {
                return Err(ScoreError::MemoryMismatch { memory: bank.width(), model });
            }
        } else if !text {
            return Err(ScoreError::NeedsMemory);
        }
        let refiner = spec.refine.filter(|_| refine).map(|params| Refiner::new(params, spec.grid));
        Ok(Scorer {
            layers: spec.layer_count(),
            patches: spec.patch_count(),
            feature_dim: spec.feature_dim,
            top_k: spec.score.top_k,
            image_logits_weight: spec.score.image_logits_weight,
            text,
            refiner,
            memory: memory.map(|bank| NearestSearch::new(bank, spec.patch_count())),
            distances: vec![0.0; spec.patch_count()],
            upsampler: Upsampler::new(spec.grid, size),
            smoother: GaussianSmoother::new(spec.score.sigma, size),
            coarse: vec![0.0; spec.patch_count()],
            map: vec![0.0; size[0] * size[1]],
            size,
            ranked: Vec::with_capacity(size[0] * size[1]),
            inspected: None,
        })
    }

    /// The largest score this scorer can give, by the branches it fuses: text probabilities lie
    /// in [0, 1], cosine distances to the memory in [0, 2], their mean in [0, 1.5]. A threshold
    /// must lie in (0, this].
    pub fn score_range(&self) -> f32 {
        match (self.text, self.memory.is_some()) {
            (true, false) => 1.0,
            (false, _) => 2.0,
            (true, true) => 1.5,
        }
    }

    /// Scores only the pixels where `inspected` (`H*W` at the model input's resolution) is
    /// true; none: every pixel. Masked pixels read 0 in the map.
    pub fn set_inspected(&mut self, inspected: Option<Vec<bool>>) {
        self.inspected = inspected.filter(|m| m.len() == self.map.len());
    }

    /// The inspected pixels, when a mask is set.
    pub fn inspected(&self) -> Option<&[bool]> {
        self.inspected.as_deref()
    }

    /// Scores one frame's outputs.
    pub fn score(&mut self, raw: &RawOutputs) -> Result<Scored<'_>, ScoreError> {
        self.score_excluding(raw, None)
    }

    /// Like [`Scorer::score`], ignoring memory patches of good image `exclude` (leave-one-out).
    /// Every fact the score rests on is checked here: the outputs ([`validate_outputs`]), the
    /// memory distances, the map's range and the score are finite and in range, or the frame
    /// is not scored.
    pub fn score_excluding(&mut self, raw: &RawOutputs, exclude: Option<u32>) -> Result<Scored<'_>, ScoreError> {
        validate_outputs(raw, self.feature_dim)?;
        if let Some(search) = &mut self.memory {
            let features = raw.patch_features.as_deref().ok_or(ScoreError::MissingOutput("patch_features"))?;
            search.distances(features, exclude, &mut self.distances);
            if self.distances.contains(&f32::INFINITY) {
                return Err(ScoreError::NoNeighbour);
            }
            if self.distances.iter().any(|d| !d.is_finite()) {
                return Err(ScoreError::NotFinite("memory distance"));
            }
        }
        if self.text {
            let logits = raw.patch_logits.as_deref().ok_or(ScoreError::MissingOutput("patch_logits"))?;
            fuse_layer_probabilities(logits, self.layers, self.patches, &mut self.coarse);
            if self.memory.is_some() {
                // Text and memory maps fused by their mean (docs/ARCHITECTURE.md).
                self.coarse.iter_mut().zip(&self.distances).for_each(|(c, d)| *c = 0.5 * (*c + d));
            }
        } else {
            self.coarse.copy_from_slice(&self.distances);
        }
        let grid: &[f32] = match &mut self.refiner {
            Some(refiner) => refiner.run(&self.coarse),
            None => &self.coarse,
        };
        self.upsampler.run(grid, &mut self.map);
        self.smoother.run(&mut self.map);
        let range = -MAP_RANGE_SLACK..=self.score_range() + MAP_RANGE_SLACK;
        if let Some(bad) = self.map.iter().find(|v| !range.contains(*v)) {
            return Err(if bad.is_finite() {
                ScoreError::OutOfContract { what: "anomaly map", reason: format!("value {bad} outside {range:?}") }
            } else {
                ScoreError::NotFinite("anomaly map")
            });
        }
        self.ranked.clear();
        match &self.inspected {
            Some(mask) => {
                self.ranked.extend(self.map.iter().zip(mask).filter(|(_, m)| **m).map(|(v, _)| *v));
                self.map.iter_mut().zip(mask).filter(|(_, m)| !**m).for_each(|(v, _)| *v = 0.0);
            }
            None => self.ranked.extend_from_slice(&self.map),
        }
        let map_score = top_k_mean(&mut self.ranked, self.top_k);
        let score = match raw.image_logits.as_deref() {
            Some(&[normal, abnormal]) => {
                let w = self.image_logits_weight;
                (1.0 - w) * map_score + w * abnormal_probability(normal, abnormal)
            }
            _ => map_score,
        };
        if !score.is_finite() {
            return Err(ScoreError::NotFinite("image score"));
        }
        Ok(Scored { score, map: AnomalyMap { values: &self.map, height: self.size[0], width: self.size[1] } })
    }
}

/// Softmax over (normal, abnormal), abnormal side: `1 / (1 + exp(normal - abnormal))`.
#[inline]
pub(crate) fn abnormal_probability(normal: f32, abnormal: f32) -> f32 {
    1.0 / (1.0 + (normal - abnormal).exp())
}

/// `[L, 2, N]` logits to the mean over layers of the abnormal probability, into `out` (`N`).
pub(crate) fn fuse_layer_probabilities(logits: &[f32], layers: usize, patches: usize, out: &mut [f32]) {
    out.fill(0.0);
    for layer in logits.chunks_exact(2 * patches).take(layers) {
        let (normal, abnormal) = layer.split_at(patches);
        for ((o, n), a) in out.iter_mut().zip(normal).zip(abnormal) {
            *o += abnormal_probability(*n, *a);
        }
    }
    let inv = 1.0 / layers as f32;
    out.iter_mut().for_each(|o| *o *= inv);
}

/// Mean of the `ceil(top_k * len)` largest of `values` (at least one; NaN when empty or when
/// a value is not finite); `values` is reordered.
pub(crate) fn top_k_mean(values: &mut [f32], top_k: f64) -> f32 {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return f32::NAN;
    }
    let k = ((top_k * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    values[..k].iter().map(|v| *v as f64).sum::<f64>() as f32 / k as f32
}
