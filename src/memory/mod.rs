//! The memory branch: patch features of good parts, and nearest-neighbour distances to them.
//!
//! Owns the memory bank, its file format and the nearest-neighbour search. A patch's memory
//! distance is `1 - max_j (1/L) sum_l <f^l, m_j^l>`: one minus the layer-averaged cosine
//! similarity to the closest stored patch (features are unit length per layer).

pub mod coreset;
pub mod file;

/// Patch features of good parts, subsampled.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBank {
    /// SHA-256 (hex) of the model file the features came from.
    pub model_sha256: String,
    /// The model's contract name, for messages.
    pub model_name: String,
    /// Layers `L` per patch.
    pub layers: usize,
    /// Feature size `D` per layer.
    pub dim: usize,
    /// `[count, L*D]`: each stored patch's features, layer after layer.
    pub features: Vec<f32>,
    /// For each stored patch, the index of the good image it came from (for leave-one-out).
    pub sources: Vec<u32>,
    /// Decision threshold derived from the good images, when there were enough of them.
    pub threshold: Option<f32>,
    /// How many good images were used.
    pub good_images: usize,
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

/// Memory columns compared per matrix product: bounds the similarity tile to `N x TILE`.
const TILE: usize = 512;

/// Nearest-neighbour search against a memory bank, reusing its buffers.
#[derive(Debug, Clone, Default)]
pub struct NearestSearch {
    /// Query patches, `[N, L*D]`.
    query: Vec<f32>,
    /// Similarities of the queries to one tile of memory, `[N, TILE]`.
    tile: Vec<f32>,
    best: Vec<f32>,
}

impl NearestSearch {
    /// Writes into `out` (`N`) each patch's memory distance. `features` is the model's
    /// `[L, N, D]` output; memory patches from good image `exclude` are skipped (leave-one-out).
    pub fn distances(&mut self, bank: &MemoryBank, features: &[f32], exclude: Option<u32>, out: &mut [f32]) {
        let (l, d, width) = (bank.layers, bank.dim, bank.width());
        let n = features.len() / width;
        self.query.resize(n * width, 0.0);
        for layer in 0..l {
            for i in 0..n {
                let from = &features[(layer * n + i) * d..(layer * n + i + 1) * d];
                self.query[i * width + layer * d..i * width + (layer + 1) * d].copy_from_slice(from);
            }
        }
        self.best.clear();
        self.best.resize(n, f32::NEG_INFINITY);
        self.tile.resize(n * TILE, 0.0);
        for start in (0..bank.len()).step_by(TILE) {
            let cols = TILE.min(bank.len() - start);
            let memory = &bank.features[start * width..(start + cols) * width];
            // SAFETY: the strides describe `query` [n x width], `memory` [cols x width] read
            // transposed, and `tile` [n x cols] with row stride TILE, all within their lengths.
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    width,
                    cols,
                    1.0,
                    self.query.as_ptr(),
                    width as isize,
                    1,
                    memory.as_ptr(),
                    1,
                    width as isize,
                    0.0,
                    self.tile.as_mut_ptr(),
                    TILE as isize,
                    1,
                );
            }
            let sources = &bank.sources[start..start + cols];
            for (best, row) in self.best.iter_mut().zip(self.tile.chunks_exact(TILE)) {
                for (similarity, source) in row[..cols].iter().zip(sources) {
                    if *similarity > *best && Some(*source) != exclude {
                        *best = *similarity;
                    }
                }
            }
        }
        let inv_layers = 1.0 / l as f32;
        for (o, best) in out.iter_mut().zip(&self.best) {
            *o = 1.0 - best * inv_layers;
        }
    }
}
