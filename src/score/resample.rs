//! Bilinear upsampling and Gaussian smoothing of maps, as `models/reference.py` defines them.

/// Bilinear taps of one axis (half-pixel centres, edges clamped): `(i0, i1, t)` per output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BilinearTaps(Vec<(usize, usize, f32)>);

impl BilinearTaps {
    /// Taps from `n_in` to `n_out` samples.
    pub fn new(n_in: usize, n_out: usize) -> Self {
        let scale = n_in as f64 / n_out as f64;
        let last = (n_in - 1) as f64;
        BilinearTaps(
            (0..n_out)
                .map(|o| {
                    let src = ((o as f64 + 0.5) * scale - 0.5).clamp(0.0, last);
                    let i0 = src.floor() as usize;
                    (i0, (i0 + 1).min(n_in - 1), (src - i0 as f64) as f32)
                })
                .collect(),
        )
    }

    /// The value at output `o` of a line whose samples `sample(i)` gives.
    #[inline]
    pub fn interpolate(&self, o: usize, sample: impl Fn(usize) -> f32) -> f32 {
        let (i0, i1, t) = self.0[o];
        (1.0 - t) * sample(i0) + t * sample(i1)
    }
}

/// Bilinear resampling of `map` to `width x height` into `out` (e.g. to a frame or mask size).
pub fn resample_map(map: super::AnomalyMap<'_>, width: usize, height: usize, out: &mut Vec<f32>) {
    let rows = BilinearTaps::new(map.height, height);
    let cols = BilinearTaps::new(map.width, width);
    out.clear();
    for y in 0..height {
        out.extend((0..width).map(|x| rows.interpolate(y, |r| cols.interpolate(x, |c| map.values[r * map.width + c]))));
    }
}

/// Upsamples `[h, w]` maps to `[H, W]`, reusing one row buffer.
#[derive(Debug, Clone)]
pub struct Upsampler {
    rows: BilinearTaps,
    cols: BilinearTaps,
    grid_w: usize,
    /// The grid interpolated along rows: `[H, w]`.
    between: Vec<f32>,
}

impl Upsampler {
    /// From a `[h, w]` grid to `[H, W]`.
    pub fn new([h, w]: [usize; 2], [out_h, out_w]: [usize; 2]) -> Self {
        Upsampler {
            rows: BilinearTaps::new(h, out_h),
            cols: BilinearTaps::new(w, out_w),
            grid_w: w,
            between: vec![0.0; out_h * w],
        }
    }

    /// Writes the upsampled `grid` into `out` (`H*W` values).
    pub fn run(&mut self, grid: &[f32], out: &mut [f32]) {
        let w = self.grid_w;
        let out_w = self.cols.0.len();
        for (o, line) in self.between.chunks_exact_mut(w).enumerate() {
            for (x, v) in line.iter_mut().enumerate() {
                *v = self.rows.interpolate(o, |i| grid[i * w + x]);
            }
        }
        for (line, out_line) in self.between.chunks_exact(w).zip(out.chunks_exact_mut(out_w)) {
            for (x, v) in out_line.iter_mut().enumerate() {
                *v = self.cols.interpolate(x, |i| line[i]);
            }
        }
    }
}

/// Separable Gaussian blur with replicated edges, reusing one buffer.
#[derive(Debug, Clone)]
pub struct GaussianSmoother {
    kernel: Vec<f32>,
    height: usize,
    width: usize,
    scratch: Vec<f32>,
}

impl GaussianSmoother {
    /// A blur of `sigma` pixels (radius `ceil(3 sigma)`) for `[height, width]` maps; sigma 0: none.
    pub fn new(sigma: f32, [height, width]: [usize; 2]) -> Self {
        let kernel = if sigma > 0.0 {
            let sigma = sigma as f64;
            let radius = (3.0 * sigma).ceil() as i64;
            let raw: Vec<f64> = (-radius..=radius).map(|t| (-((t * t) as f64) / (2.0 * sigma * sigma)).exp()).collect();
            let total: f64 = raw.iter().sum();
            raw.iter().map(|k| (k / total) as f32).collect()
        } else {
            Vec::new()
        };
        GaussianSmoother { kernel, height, width, scratch: vec![0.0; height * width] }
    }

    /// Blurs `map` in place: rows first, then columns.
    pub fn run(&mut self, map: &mut [f32]) {
        if self.kernel.is_empty() {
            return;
        }
        let (h, w) = (self.height, self.width);
        let r = (self.kernel.len() / 2) as isize;
        let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
        for y in 0..h {
            let line = &map[y * w..(y + 1) * w];
            for x in 0..w {
                self.scratch[y * w + x] =
                    self.kernel.iter().enumerate().map(|(k, c)| c * line[clamp(x as isize + k as isize - r, w)]).sum();
            }
        }
        for y in 0..h {
            for x in 0..w {
                map[y * w + x] = (self.kernel.iter().enumerate())
                    .map(|(k, c)| c * self.scratch[clamp(y as isize + k as isize - r, h) * w + x])
                    .sum();
            }
        }
    }
}
