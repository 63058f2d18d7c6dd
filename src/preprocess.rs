//! Preprocessing: a decoded RGB frame to the model's NCHW float input.
//!
//! Owns the resize filter and the normalisation, defined exactly as `models/reference.py`
//! (`resize_taps`, `preprocess`). Buffers live as long as the preprocessor; filter taps are
//! recomputed only when the frame size changes.

use image::RgbImage;

use crate::model::contract::InputSpec;
use crate::source::decode::{check_dimensions, DecodeError};

/// Largest intermediate buffer of the resize (the frame resized along rows: its height times
/// the model's width, 3 floats a pixel): frames that would need more are refused, not
/// allocated.
pub(crate) const MAX_RESIZE_BUFFER_BYTES: usize = 512 << 20;

/// A frame that cannot be made into the model's input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreprocessError {
    /// Empty, or larger than a frame may be.
    #[error(transparent)]
    Size(#[from] DecodeError),
    /// Resizing it would need more memory than allowed, or than there is.
    #[error("resizing a {width}x{height} frame needs {bytes} bytes of buffer, more than there is or than {MAX_RESIZE_BUFFER_BYTES} allowed")]
    TooLarge {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Bytes the buffer would take.
        bytes: usize,
    },
}

/// Resampling taps of one axis: for each output sample, the first input index and weights.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ResizeTaps {
    starts: Vec<usize>,
    /// Offsets into `weights` of each output sample's taps; one more entry than outputs.
    offsets: Vec<usize>,
    weights: Vec<f32>,
    n_in: usize,
}

impl ResizeTaps {
    /// Fills the tent-filter taps from `n_in` to `n_out` samples (half-pixel centres; the tent
    /// is widened to the reduction factor when reducing, so it anti-aliases), each output's
    /// weights summing to 1.
    fn fill(&mut self, n_in: usize, n_out: usize) {
        self.starts.clear();
        self.offsets.clear();
        self.weights.clear();
        self.n_in = n_in;
        let scale = n_in as f64 / n_out as f64;
        let support = scale.max(1.0);
        self.offsets.push(0);
        for o in 0..n_out {
            let centre = (o as f64 + 0.5) * scale;
            let lo = (centre - support).floor().max(0.0) as usize;
            let hi = ((centre + support).ceil() as usize).min(n_in);
            let first = self.weights.len();
            let mut total = 0.0;
            for j in lo..hi {
                let w = (1.0 - ((j as f64 + 0.5 - centre) / support).abs()).max(0.0);
                total += w;
                self.weights.push(w as f32);
            }
            for w in &mut self.weights[first..] {
                *w = (*w as f64 / total) as f32;
            }
            self.starts.push(lo);
            self.offsets.push(self.weights.len());
        }
    }

    /// Output sample `o`'s first input index and weights.
    fn taps(&self, o: usize) -> (usize, &[f32]) {
        (self.starts[o], &self.weights[self.offsets[o]..self.offsets[o + 1]])
    }

    /// Number of output samples.
    fn len(&self) -> usize {
        self.starts.len()
    }
}

/// Turns frames into model input, reusing its buffers from frame to frame.
pub struct Preprocessor {
    out_h: usize,
    out_w: usize,
    /// `scale[c]`, `offset[c]`: value = raw * scale + offset (normalisation folded in).
    scale: [f32; 3],
    offset: [f32; 3],
    rows: ResizeTaps,
    cols: ResizeTaps,
    /// Horizontally resized frame, `[in_h, out_w, 3]`.
    between: Vec<f32>,
    /// The model input, `[3, out_h, out_w]`.
    input: Vec<f32>,
}

impl Preprocessor {
    /// A preprocessor for the model input `spec`.
    pub fn new(spec: &InputSpec) -> Self {
        let [out_h, out_w] = spec.size;
        let (mut scale, mut offset) = ([1.0f32; 3], [0.0f32; 3]);
        if !spec.normalized_in_graph {
            for c in 0..3 {
                scale[c] = 1.0 / (255.0 * spec.std[c]);
                offset[c] = -spec.mean[c] / spec.std[c];
            }
        }
        Preprocessor {
            out_h,
            out_w,
            scale,
            offset,
            rows: ResizeTaps::default(),
            cols: ResizeTaps::default(),
            between: Vec::new(),
            input: vec![0.0; 3 * out_h * out_w],
        }
    }

    /// Resizes and normalises `frame`; returns the NCHW input. A frame outside the limits, or
    /// whose resize buffer cannot be had, is an error.
    pub fn run(&mut self, frame: &RgbImage) -> Result<&[f32], PreprocessError> {
        check_dimensions(frame.width().into(), frame.height().into())?;
        let (in_w, in_h) = (frame.width() as usize, frame.height() as usize);
        let between = in_h * self.out_w * 3;
        let too_large =
            || PreprocessError::TooLarge { width: frame.width(), height: frame.height(), bytes: between * 4 };
        if between * 4 > MAX_RESIZE_BUFFER_BYTES {
            return Err(too_large());
        }
        if between > self.between.len() {
            self.between.try_reserve_exact(between - self.between.len()).map_err(|_| too_large())?;
        }
        if self.cols.n_in != in_w || self.cols.len() != self.out_w {
            self.cols.fill(in_w, self.out_w);
        }
        if self.rows.n_in != in_h || self.rows.len() != self.out_h {
            self.rows.fill(in_h, self.out_h);
        }
        self.between.resize(in_h * self.out_w * 3, 0.0);
        let pixels = frame.as_raw();
        for y in 0..in_h {
            let row = &pixels[y * in_w * 3..(y + 1) * in_w * 3];
            let out_row = &mut self.between[y * self.out_w * 3..(y + 1) * self.out_w * 3];
            for (o, out) in out_row.chunks_exact_mut(3).enumerate() {
                let (start, weights) = self.cols.taps(o);
                let mut acc = [0.0f32; 3];
                for (k, w) in weights.iter().enumerate() {
                    let p = &row[(start + k) * 3..(start + k) * 3 + 3];
                    for c in 0..3 {
                        acc[c] += w * p[c] as f32;
                    }
                }
                out.copy_from_slice(&acc);
            }
        }
        let plane = self.out_h * self.out_w;
        for o in 0..self.out_h {
            let (start, weights) = self.rows.taps(o);
            for x in 0..self.out_w {
                let mut acc = [0.0f32; 3];
                for (k, w) in weights.iter().enumerate() {
                    let p = &self.between[((start + k) * self.out_w + x) * 3..][..3];
                    for c in 0..3 {
                        acc[c] += w * p[c];
                    }
                }
                for (c, value) in acc.iter().enumerate() {
                    self.input[c * plane + o * self.out_w + x] = value * self.scale[c] + self.offset[c];
                }
            }
        }
        Ok(&self.input)
    }
}
