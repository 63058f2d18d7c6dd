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
