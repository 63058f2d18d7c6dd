//! Bilinear upsampling and Gaussian smoothing of maps, as `models/reference.py` defines them.

/// Bilinear taps of one axis (half-pixel centres, edges clamped): `(i0, i1, t)` per output.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct BilinearTaps(Vec<(usize, usize, f32)>);

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
    pub(crate) fn interpolate(&self, o: usize, sample: impl Fn(usize) -> f32) -> f32 {
        let (i0, i1, t) = self.0[o];
        (1.0 - t) * sample(i0) + t * sample(i1)
    }
}

/// Bilinear resampling of maps to another size (e.g. a frame's or a mask's), keeping its taps
/// and buffers while the sizes stay the same.
#[derive(Debug, Clone, Default)]
pub(crate) struct MapResampler {
    /// `[h, w, H, W]` the taps are for.
    sizes: [usize; 4],
    upsampler: Option<Upsampler>,
}

impl MapResampler {
    /// Resamples `map` to `width x height` into `out`.
    pub fn run(&mut self, map: super::AnomalyMap<'_>, width: usize, height: usize, out: &mut Vec<f32>) {
        let sizes = [map.height, map.width, height, width];
        if self.sizes != sizes || self.upsampler.is_none() {
            self.upsampler = Some(Upsampler::new([map.height, map.width], [height, width]));
            self.sizes = sizes;
        }
        out.resize(width * height, 0.0);
        if let Some(upsampler) = &mut self.upsampler {
            upsampler.run(map.values, out);
        }
    }
}

/// Upsamples `[h, w]` maps to `[H, W]`, reusing one row buffer.
#[derive(Debug, Clone)]
pub(crate) struct Upsampler {
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

/// Separable Gaussian blur with replicated edges, reusing its buffers.
#[derive(Debug, Clone)]
pub(crate) struct GaussianSmoother {
    kernel: Vec<f32>,
    height: usize,
    width: usize,
    /// The map blurred along rows.
    scratch: Vec<f32>,
    /// One row with `radius` replicated samples on each side.
    padded: Vec<f32>,
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
        let padded = vec![0.0; width + kernel.len().saturating_sub(1)];
        GaussianSmoother { kernel, height, width, scratch: vec![0.0; height * width], padded }
    }

    /// Blurs `map` in place: rows first, then columns. Each pass runs tap by tap over whole
    /// rows, so the inner loops are plain multiply-adds over contiguous memory.
    pub fn run(&mut self, map: &mut [f32]) {
        if self.kernel.is_empty() {
            return;
        }
        let (h, w) = (self.height, self.width);
        let r = self.kernel.len() / 2;
        for (line, out) in map.chunks_exact(w).zip(self.scratch.chunks_exact_mut(w)) {
            self.padded[..r].fill(line[0]);
            self.padded[r..r + w].copy_from_slice(line);
            self.padded[r + w..].fill(line[w - 1]);
            out.fill(0.0);
            for (k, c) in self.kernel.iter().enumerate() {
                out.iter_mut().zip(&self.padded[k..k + w]).for_each(|(o, v)| *o += c * v);
            }
        }
        for (y, out) in map.chunks_exact_mut(w).enumerate() {
            out.fill(0.0);
            for (k, c) in self.kernel.iter().enumerate() {
                let source = (y + k).saturating_sub(r).min(h - 1);
                out.iter_mut().zip(&self.scratch[source * w..(source + 1) * w]).for_each(|(o, v)| *o += c * v);
            }
        }
    }
}
