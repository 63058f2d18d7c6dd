//! Greedy coreset (k-centre) subsampling of patch features, as PatchCore does it: repeatedly
//! keep the candidate farthest from everything kept so far, so the kept patches cover all good
//! appearance, rare details included. Distances are measured on a fixed random projection to
//! at most [`PROJECTION_DIM`] dimensions, which preserves them closely and makes it cheaper.

use std::sync::atomic::{AtomicBool, Ordering};

/// Dimensions of the random projection used for the distances.
pub const PROJECTION_DIM: usize = 128;

/// Deterministic pseudo-random numbers (SplitMix64), so calibration is reproducible; the
/// benchmarks draw their reproducible variants from it too.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Indices of `size` rows of `features` (`[count, width]`) chosen by greedy k-centre, in the
/// order chosen; all rows when `size >= count`; `None` when `stop` was set (it is looked at
/// before each choice: a large pool takes seconds).
pub(crate) fn greedy_coreset(features: &[f32], width: usize, size: usize, stop: &AtomicBool) -> Option<Vec<usize>> {
    let count = features.len() / width;
    if size >= count {
        return Some((0..count).collect());
    }
    let projected = project(features, width, count);
    let p = projected.len() / count;
    let mut nearest = vec![f32::INFINITY; count];
    let mut chosen = Vec::with_capacity(size);
    let mut next = 0;
    for _ in 0..size {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        chosen.push(next);
        let centre = projected[next * p..(next + 1) * p].to_vec();
        let mut farthest = (0, f32::NEG_INFINITY);
        for (i, (row, near)) in projected.chunks_exact(p).zip(nearest.iter_mut()).enumerate() {
            let d: f32 = row.iter().zip(&centre).map(|(a, b)| (a - b) * (a - b)).sum();
            if d < *near {
                *near = d;
            }
            if *near > farthest.1 {
                farthest = (i, *near);
            }
        }
        next = farthest.0;
    }
    Some(chosen)
}

/// `features` times a seeded Rademacher matrix scaled by `1/sqrt(P)`; unchanged when narrow.
fn project(features: &[f32], width: usize, count: usize) -> Vec<f32> {
    if width <= PROJECTION_DIM {
        return features.to_vec();
    }
    let p = PROJECTION_DIM;
    let mut rng = SplitMix64(0x0063_6c69_7061_6461);
    let scale = 1.0 / (p as f32).sqrt();
    let matrix: Vec<f32> = (0..width * p).map(|_| if rng.next_u64() & 1 == 0 { scale } else { -scale }).collect();
    let mut out = vec![0.0; count * p];
    // SAFETY: `features` is [count x width], `matrix` [width x p], `out` [count x p], row-major.
    unsafe {
        matrixmultiply::sgemm(
            count,
            width,
            p,
            1.0,
            features.as_ptr(),
            width as isize,
            1,
            matrix.as_ptr(),
            p as isize,
            1,
            0.0,
            out.as_mut_ptr(),
            p as isize,
            1,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coreset_picks_one_point_per_cluster_before_any_second() {
        // Three tight clusters of 10 points in 2-D: the first three picks cover all three.
        let centres = [(0.0f32, 0.0f32), (10.0, 0.0), (0.0, 10.0)];
        let mut features = Vec::new();
        for (cx, cy) in centres {
            for k in 0..10 {
                features.extend([cx + 0.01 * k as f32, cy - 0.01 * k as f32]);
            }
        }
        let chosen = greedy_coreset(&features, 2, 3, &AtomicBool::new(false)).unwrap();
        let mut clusters: Vec<usize> = chosen.iter().map(|i| i / 10).collect();
        clusters.sort();
        assert_eq!(clusters, [0, 1, 2]);
    }

    #[test]
    fn asking_for_more_than_there_is_keeps_everything() {
        let never = AtomicBool::new(false);
        assert_eq!(greedy_coreset(&[1.0, 2.0, 3.0], 1, 5, &never).unwrap(), [0, 1, 2]);
        assert_eq!(greedy_coreset(&[1.0, 2.0, 3.0], 1, 2, &AtomicBool::new(true)), None, "stopped");
    }

    #[test]
    fn projection_roughly_preserves_distances() {
        let width = 512;
        let mut rng = SplitMix64(3);
        let features: Vec<f32> = (0..2 * width).map(|_| (rng.next_u64() % 1000) as f32 / 1000.0).collect();
        let projected = project(&features, width, 2);
        let dist = |v: &[f32], w: usize| v[..w].iter().zip(&v[w..]).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
        let ratio = dist(&projected, PROJECTION_DIM) / dist(&features, width);
        assert!((0.6..1.4).contains(&ratio), "distance ratio {ratio}");
    }
}
