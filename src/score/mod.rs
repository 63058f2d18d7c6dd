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

/// Why a frame could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The model lacks an output the scoring needs.
    #[error("the model has no `{0}` output, which scoring needs")]
    MissingOutput(&'static str),
    /// The model has no text branch and no memory was given.
    #[error("this model scores only against a memory of good parts: run `clipada calibrate` and pass --memory")]
    NeedsMemory,
    /// The map or score came out NaN or infinite.
    #[error("the model's output gave a non-finite anomaly score")]
    NotFinite,
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

/// Scores raw outputs, reusing its buffers from frame to frame.
#[derive(Debug, Clone)]
pub struct Scorer {
    layers: usize,
    patches: usize,
    top_k: f64,
    image_logits_weight: f32,
    refiner: Option<Refiner>,
    memory: Option<NearestSearch>,
    distances: Vec<f32>,
    upsampler: Upsampler,
    smoother: GaussianSmoother,
    coarse: Vec<f32>,
    map: Vec<f32>,
    size: [usize; 2],
    ranked: Vec<f32>,
    /// Per map pixel, 0 (ignored) to 1 (inspected); none: everything is inspected.
    ignore_mask: Option<Vec<f32>>,
}

impl Scorer {
    /// A scorer for `spec`; `refine` turns the anomaly region refinement on where the model has
    /// it; `memory` adds the memory branch.
    pub fn new(spec: &ModelSpec, refine: bool, memory: Option<MemoryBank>) -> Self {
        let size = spec.input.size;
        let refiner = spec.refine.filter(|_| refine).map(|params| Refiner::new(params, spec.grid));
        Scorer {
            layers: spec.layer_count(),
            patches: spec.patch_count(),
            top_k: spec.score.top_k,
            image_logits_weight: spec.score.image_logits_weight,
            refiner,
            memory: memory.map(|bank| NearestSearch::new(&bank, spec.patch_count())),
            distances: vec![0.0; spec.patch_count()],
            upsampler: Upsampler::new(spec.grid, size),
            smoother: GaussianSmoother::new(spec.score.sigma, size),
            coarse: vec![0.0; spec.patch_count()],
            map: vec![0.0; size[0] * size[1]],
            size,
            ranked: vec![0.0; size[0] * size[1]],
            ignore_mask: None,
        }
    }

    /// Weights the map by `mask` (`H*W` values in [0, 1] at the model input's resolution,
    /// 0 = never anomalous) before the image score; none: no mask.
    pub fn set_ignore_mask(&mut self, mask: Option<Vec<f32>>) {
        self.ignore_mask = mask.filter(|m| m.len() == self.map.len());
    }

    /// Scores one frame's outputs; the map is then available from [`Scorer::map`].
    pub fn score(&mut self, raw: &RawOutputs) -> Result<f32, ScoreError> {
        self.score_excluding(raw, None)
    }

    /// Like [`Scorer::score`], ignoring memory patches of good image `exclude` (leave-one-out).
    pub fn score_excluding(&mut self, raw: &RawOutputs, exclude: Option<u32>) -> Result<f32, ScoreError> {
        if let Some(search) = &mut self.memory {
            let features = raw.patch_features.as_deref().ok_or(ScoreError::MissingOutput("patch_features"))?;
            search.distances(features, exclude, &mut self.distances);
        }
        match (raw.patch_logits.as_deref(), self.memory.is_some()) {
            (Some(logits), with_memory) => {
                fuse_layer_probabilities(logits, self.layers, self.patches, &mut self.coarse);
                if with_memory {
                    // Text and memory maps fused by their mean (docs/ARCHITECTURE.md).
                    self.coarse.iter_mut().zip(&self.distances).for_each(|(c, d)| *c = 0.5 * (*c + d));
                }
            }
            (None, true) => self.coarse.copy_from_slice(&self.distances),
            (None, false) => return Err(ScoreError::NeedsMemory),
        }
        let grid: &[f32] = match &mut self.refiner {
            Some(refiner) => refiner.run(&self.coarse),
            None => &self.coarse,
        };
        self.upsampler.run(grid, &mut self.map);
        self.smoother.run(&mut self.map);
        if let Some(mask) = &self.ignore_mask {
            self.map.iter_mut().zip(mask).for_each(|(v, m)| *v *= m);
        }
        let map_score = top_k_mean(&self.map, self.top_k, &mut self.ranked);
        let score = match raw.image_logits.as_deref() {
            Some(&[normal, abnormal]) => {
                let w = self.image_logits_weight;
                (1.0 - w) * map_score + w * abnormal_probability(normal, abnormal)
            }
            _ => map_score,
        };
        if score.is_finite() {
            Ok(score)
        } else {
            Err(ScoreError::NotFinite)
        }
    }

    /// The last scored frame's anomaly map.
    pub fn map(&self) -> AnomalyMap<'_> {
        AnomalyMap { values: &self.map, height: self.size[0], width: self.size[1] }
    }
}

/// Softmax over (normal, abnormal), abnormal side: `1 / (1 + exp(normal - abnormal))`.
#[inline]
pub fn abnormal_probability(normal: f32, abnormal: f32) -> f32 {
    1.0 / (1.0 + (normal - abnormal).exp())
}

/// `[L, 2, N]` logits to the mean over layers of the abnormal probability, into `out` (`N`).
pub fn fuse_layer_probabilities(logits: &[f32], layers: usize, patches: usize, out: &mut [f32]) {
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

/// Mean of the `ceil(top_k * len)` largest values (at least one); `scratch` is reordered.
pub fn top_k_mean(values: &[f32], top_k: f64, scratch: &mut Vec<f32>) -> f32 {
    let k = ((top_k * values.len() as f64).ceil() as usize).clamp(1, values.len());
    scratch.clear();
    scratch.extend_from_slice(values);
    if scratch.iter().any(|v| !v.is_finite()) {
        return f32::NAN;
    }
    scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    scratch[..k].iter().map(|v| *v as f64).sum::<f64>() as f32 / k as f32
}
