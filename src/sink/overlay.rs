//! Overlay images: the frame with the anomaly heat map blended over it, the outline of the
//! regions at or above the threshold, and a verdict banner with the score, drawn with
//! embedded-graphics so that the station's display shares the drawing code.

use std::fmt::Write as _;

use embedded_graphics::mono_font::{ascii::FONT_6X10, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use image::RgbImage;

use crate::score::resample::MapResampler;
use crate::score::AnomalyMap;
use crate::verdict::Verdict;

/// Height of the verdict banner in pixels (one line of the 6x10 font plus a margin).
pub const BANNER_HEIGHT: u32 = 12;
/// Heat-map opacity at the bottom of the colour scale; it grows linearly to
/// `HEAT_ALPHA_MIN + HEAT_ALPHA_SPAN` at the top, so anomalous areas stand out while normal
/// areas stay visible. The scale spans map values 0 to twice the threshold, which puts the
/// threshold mid-scale whatever the map's units (probabilities or memory distances).
pub(crate) const HEAT_ALPHA_MIN: f32 = 0.2;
/// See [`HEAT_ALPHA_MIN`].
pub(crate) const HEAT_ALPHA_SPAN: f32 = 0.5;
/// Colour of region outlines.
pub const OUTLINE_COLOUR: Rgb888 = Rgb888::WHITE;

/// Banner colour of a verdict.
pub fn banner_colour(verdict: Verdict) -> Rgb888 {
    match verdict {
        Verdict::Pass => Rgb888::new(0, 150, 60),
        Verdict::Fail => Rgb888::new(210, 30, 30),
        Verdict::Error => Rgb888::new(110, 110, 110),
    }
}

/// A "jet"-like colour scale: blue at 0, through cyan, yellow, to red at 1.
pub(crate) fn heat_colour(value: f32) -> [f32; 3] {
    let t = value.clamp(0.0, 1.0) * 4.0;
    let ramp = |centre: f32| (1.5 - (t - centre).abs()).clamp(0.0, 1.0) * 255.0;
    [ramp(3.0), ramp(2.0), ramp(1.0)]
}

/// An RGB image as an embedded-graphics draw target.
pub(crate) struct ImageCanvas<'a>(pub &'a mut RgbImage);

impl OriginDimensions for ImageCanvas<'_> {
    fn size(&self) -> Size {
        Size::new(self.0.width(), self.0.height())
    }
}

impl DrawTarget for ImageCanvas<'_> {
    type Color = Rgb888;
    type Error = std::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(&mut self, pixels: I) -> Result<(), Self::Error> {
        let (w, h) = self.0.dimensions();
        for Pixel(point, colour) in pixels {
            if let (Ok(x), Ok(y)) = (u32::try_from(point.x), u32::try_from(point.y)) {
                if x < w && y < h {
                    self.0.put_pixel(x, y, image::Rgb([colour.r(), colour.g(), colour.b()]));
                }
            }
        }
        Ok(())
    }
}

/// Draws overlays, reusing its canvas and map buffers while the frame size stays the same.
#[derive(Default)]
pub struct OverlayRenderer {
    canvas: RgbImage,
    /// The anomaly map resampled to the frame, row-major.
    frame_map: Vec<f32>,
    resampler: MapResampler,
}

impl OverlayRenderer {
    /// Draws the overlay of `frame`; `judged` is the map and score when the frame was scored.
    pub fn render(
        &mut self,
        frame: &RgbImage,
        judged: Option<(AnomalyMap<'_>, f32)>,
        threshold: f32,
        verdict: Verdict,
    ) -> &RgbImage {
        let (w, h) = frame.dimensions();
        if self.canvas.dimensions() == (w, h) {
            self.canvas.copy_from_slice(frame);
        } else {
            self.canvas = frame.clone();
        }
        let mut canvas = ImageCanvas(&mut self.canvas);
        let mut banner_text = heapless::String::<32>::new();
        let _ = banner_text.push_str(verdict.label());
        if let Some((map, score)) = judged {
            self.resampler.run(map, w as usize, h as usize, &mut self.frame_map);
            let scale = if threshold > 0.0 { 0.5 / threshold } else { 1.0 };
            let heat = frame.pixels().zip(&self.frame_map).map(|(p, &m)| {
                let t = (m * scale).clamp(0.0, 1.0);
                let colour = heat_colour(t);
                let alpha = HEAT_ALPHA_MIN + HEAT_ALPHA_SPAN * t;
                let mix = |c: usize| ((1.0 - alpha) * p.0[c] as f32 + alpha * colour[c]).round() as u8;
                Rgb888::new(mix(0), mix(1), mix(2))
            });
            let _ = canvas.fill_contiguous(&Rectangle::new(Point::zero(), Size::new(w, h)), heat);
            let _ = canvas.draw_iter(outline(&self.frame_map, w as usize, h as usize, threshold));
            let _ = write!(banner_text, " {score:.3}");
        }
        let banner = Rectangle::new(Point::zero(), Size::new(w, BANNER_HEIGHT.min(h)));
        let _ = banner.into_styled(PrimitiveStyle::with_fill(banner_colour(verdict))).draw(&mut canvas);
        let style = MonoTextStyle::new(&FONT_6X10, Rgb888::WHITE);
        let _ = Text::with_baseline(&banner_text, Point::new(2, 1), style, Baseline::Top).draw(&mut canvas);
        &self.canvas
    }
}

/// The pixels at or above `threshold` with a 4-neighbour below it.
fn outline(map: &[f32], width: usize, height: usize, threshold: f32) -> impl Iterator<Item = Pixel<Rgb888>> + '_ {
    let above = move |x: usize, y: usize| map[y * width + x] >= threshold;
    (0..height).flat_map(move |y| (0..width).map(move |x| (x, y))).filter_map(move |(x, y)| {
        let edge = above(x, y)
            && ((x > 0 && !above(x - 1, y))
                || (x + 1 < width && !above(x + 1, y))
                || (y > 0 && !above(x, y - 1))
                || (y + 1 < height && !above(x, y + 1)));
        edge.then(|| Pixel(Point::new(x as i32, y as i32), OUTLINE_COLOUR))
    })
}
