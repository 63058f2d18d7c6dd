//! Anomaly region refinement: the coarse patch map, pooled over each patch's feature region.
//!
//! With `a_i` the coarse score of patch `i` and `f_i^l` its unit feature at layer `l`:
//! `c_ij = mean_l <f_i^l, f_j^l>`, `k_ij = exp((c_ij - 1) / T)` for `j` within `radius` patches
//! of `i` (both axes), and `r_i = sum_j k_ij a_j / sum_j k_ij`. docs/ARCHITECTURE.md says why;
//! `models/reference.py::refine` is the same computation.

use crate::model::contract::RefineParams;

/// Refines coarse grid maps, reusing its output buffer.
#[derive(Debug, Clone)]
pub struct Refiner {
    params: RefineParams,
    grid: [usize; 2],
    layers: usize,
    dim: usize,
    refined: Vec<f32>,
}

impl Refiner {
    /// A refiner for `[h, w]` grids of `layers` x `dim` features.
    pub fn new(params: RefineParams, grid: [usize; 2], layers: usize, dim: usize) -> Self {
        Refiner { params, grid, layers, dim, refined: vec![0.0; grid[0] * grid[1]] }
    }

    /// Refines `coarse` (`h*w`) using `features` (`[L, h*w, D]`); returns the refined map.
    pub fn run(&mut self, coarse: &[f32], features: &[f32]) -> &[f32] {
        let [h, w] = self.grid;
        let (n, d, r) = (h * w, self.dim, self.params.radius);
        let inv_layers = 1.0 / self.layers as f32;
        let inv_t = 1.0 / self.params.temperature;
        let feature = |l: usize, i: usize| &features[(l * n + i) * d..(l * n + i + 1) * d];
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let (mut weighted, mut total) = (0.0f32, 0.0f32);
                for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                    for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                        let j = yy * w + xx;
                        let affinity: f32 = (0..self.layers)
                            .map(|l| feature(l, i).iter().zip(feature(l, j)).map(|(a, b)| a * b).sum::<f32>())
                            .sum::<f32>()
                            * inv_layers;
                        let k = ((affinity - 1.0) * inv_t).exp();
                        weighted += k * coarse[j];
                        total += k;
                    }
                }
                self.refined[i] = weighted / total;
            }
        }
        &self.refined
    }
}
