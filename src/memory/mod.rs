//! The memory branch: patch features of good parts, and nearest-neighbour distances to them.
//!
//! Owns the memory bank, its file format and the nearest-neighbour search. A patch's memory
//! distance is `1 - max_j (1/L) sum_l <f^l, m_j^l>`: one minus the layer-averaged cosine
//! similarity to the closest stored patch (features are unit length per layer).

pub mod coreset;
pub mod file;
pub mod search;

use serde::{Deserialize, Serialize};

pub use search::NearestSearch;

/// What a memory was made for: the model file, how it was run and how it was scored. A memory
/// is used only with the same; its threshold means nothing otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadeFor {
    /// SHA-256 (hex) of the model file.
    pub model_sha256: String,
    /// The model's contract name, for messages.
    pub model_name: String,
    /// The engine's numeric precision (`fp32`, `fp16`, `int8`): features, and so scores, move
    /// with it.
    pub precision: String,
    /// Whether the anomaly region refinement was on when the threshold was derived.
    pub refine: bool,
}

/// Patch features of good parts, subsampled, and the threshold derived from them.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBank {
    /// The model, engine precision and scoring mode it was made for.
    pub made_for: MadeFor,
    /// Layers `L` per patch.
    pub layers: usize,
    /// Feature size `D` per layer.
    pub dim: usize,
    /// The model's patch grid `[h, w]`.
    pub grid: [usize; 2],
    /// `[count, L*D]`: each stored patch's features, layer after layer.
    pub features: Vec<f32>,
    /// For each stored patch, the index of the good image it came from (for leave-one-out).
    pub sources: Vec<u32>,
    /// Decision threshold derived from the good images, when there were enough of them.
    pub threshold: Option<f32>,
    /// How many good images were used.
    pub good_images: usize,
    /// Each good image's leave-one-out score (empty with fewer than two images).
    pub good_scores: Vec<f32>,
}

/// Standard deviations of the good scores added above their mean for the threshold.
pub(crate) const THRESHOLD_SIGMAS: f32 = 3.0;

/// `max(max s, mean s + THRESHOLD_SIGMAS * sd s)` (population standard deviation).
pub(crate) fn threshold_from_good_scores(scores: &[f32]) -> f32 {
    let n = scores.len() as f64;
    let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / n;
    let sd = (scores.iter().map(|&s| (s as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max.max((mean + THRESHOLD_SIGMAS as f64 * sd) as f32)
}

impl MemoryBank {
    /// Number of stored patches.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// True when no patch is stored.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Length of one stored patch's feature vector, `L*D`.
    pub fn width(&self) -> usize {
        self.layers * self.dim
    }
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
