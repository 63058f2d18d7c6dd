//! Anomaly region refinement: each region of the coarse map reshaped around its core.
//!
//! With `a_i` the coarse score of patch `i` and `M_i` the largest coarse score within `radius`
//! patches of it (both axes, clipped at the border): `r_i = a_i (a_i / M_i)^sharpness`
//! (`r_i = 0` where `M_i = 0`). docs/ARCHITECTURE.md says why; `models/reference.py::refine` is
//! the same computation.

use crate::model::contract::RefineParams;

/// Refines coarse grid maps, reusing its buffers.
#[derive(Debug, Clone)]
pub(crate) struct Refiner {
    params: RefineParams,
    grid: [usize; 2],
    /// Window maxima along rows, then the refined map.
    row_max: Vec<f32>,
    refined: Vec<f32>,
}

impl Refiner {
    /// A refiner for `[h, w]` grids.
    pub fn new(params: RefineParams, grid: [usize; 2]) -> Self {
        let n = grid[0] * grid[1];
        Refiner { params, grid, row_max: vec![0.0; n], refined: vec![0.0; n] }
    }

    /// Refines `coarse` (`h*w`); returns the refined map.
    pub fn run(&mut self, coarse: &[f32]) -> &[f32] {
        let [h, w] = self.grid;
        let r = self.params.radius;
        // The square window's maximum, separably: along rows, then along columns. A NaN
        // anywhere in a window makes its maximum NaN, and so the refined value: a fault is
        // carried to the map's check, never folded away into a plausible number.
        for y in 0..h {
            for x in 0..w {
                let row = &coarse[y * w..(y + 1) * w];
                self.row_max[y * w + x] =
                    row[x.saturating_sub(r)..(x + r + 1).min(w)].iter().copied().fold(f32::NEG_INFINITY, nan_max);
            }
        }
        for y in 0..h {
            for x in 0..w {
                let local_max = (y.saturating_sub(r)..(y + r + 1).min(h))
                    .map(|yy| self.row_max[yy * w + x])
                    .fold(f32::NEG_INFINITY, nan_max);
                let a = coarse[y * w + x];
                self.refined[y * w + x] = if local_max > 0.0 {
                    a * (a / local_max).powf(self.params.sharpness)
                } else if local_max.is_nan() {
                    f32::NAN
                } else {
                    0.0
                };
            }
        }
        &self.refined
    }
}

/// The larger of two values, NaN when either is NaN (`f32::max` would drop the NaN).
fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refine(coarse: &[f32], grid: [usize; 2], radius: usize, sharpness: f32) -> Vec<f32> {
        Refiner::new(RefineParams { radius, sharpness }, grid).run(coarse).to_vec()
    }

    #[test]
    fn peaks_stay_and_shoulders_drop_in_proportion() {
        let coarse = [0.1, 0.4, 0.8, 0.4, 0.1];
        let refined = refine(&coarse, [1, 5], 1, 1.0);
        assert_eq!(refined[2], 0.8, "a local maximum keeps its score");
        assert!((refined[1] - 0.2).abs() < 1e-6, "0.4 * 0.4 / 0.8");
        assert!((refined[0] - 0.025).abs() < 1e-6, "0.1 * 0.1 / 0.4");
    }

    #[test]
    fn a_nan_anywhere_in_a_window_reaches_the_refined_map() {
        // Regression: folding with f32::max from f32::MIN turned an all-NaN window into 0.
        let refined = refine(&[f32::NAN, f32::NAN, f32::NAN], [1, 3], 1, 1.0);
        assert!(refined.iter().all(|v| v.is_nan()), "{refined:?}");
        let refined = refine(&[0.2, f32::NAN, 0.4, 0.1], [1, 4], 0, 1.0);
        assert!(refined[1].is_nan(), "radius 0 keeps the NaN patch's NaN: {refined:?}");
    }

    #[test]
    fn flat_maps_and_zero_sharpness_are_unchanged() {
        let flat = [0.3; 6];
        assert_eq!(refine(&flat, [2, 3], 1, 1.0), flat);
        let coarse = [0.2, 0.9, 0.5, 0.0, 0.7, 0.1];
        assert_eq!(refine(&coarse, [2, 3], 1, 0.0), coarse);
    }
}
