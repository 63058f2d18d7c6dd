//! The station's screen: the last judged frame with its overlay (heat map, outline of
//! anomalous regions, PASS/FAIL banner and score), scaled to fit, above a status bar with the
//! score, latency, frame rate, counters, the recipe and a warning (failed self-test, drift). Draws on any embedded-graphics target; the
//! station uses a [`Framebuffer`](super::framebuffer::Framebuffer).

use std::fmt::Write as _;

use embedded_graphics::mono_font::{ascii::FONT_6X10, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use image::RgbImage;

use super::overlay::banner_colour;
use crate::verdict::Verdict;

/// Height of the status bar: three lines of the 6x10 font with margins.
pub(crate) const STATUS_HEIGHT: u32 = 38;

/// A warning the status bar shows until it clears.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Alert {
    /// A reference part did not get its verdict: the station is in ERROR until acknowledged.
    SelfTest,
    /// Passing parts' scores have drifted this fraction of the way to the threshold.
    Drift(f32),
}

/// What the status bar shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    /// The last verdict, if any.
    pub verdict: Option<Verdict>,
    /// Its score (none for ERROR).
    pub score: Option<f32>,
    /// Decision threshold.
    pub threshold: f32,
    /// Trigger to GPIO of the last frame, milliseconds.
    pub latency_ms: f32,
    /// Verdicts per second over the recent frames.
    pub fps: f32,
    /// PASS verdicts so far.
    pub passed: u64,
    /// FAIL verdicts so far.
    pub failed: u64,
    /// ERROR verdicts so far.
    pub errors: u64,
    /// Missed triggers so far.
    pub missed: u64,
    /// The recipe of the last part.
    pub recipe: crate::station::recipe::RecipeName,
    /// A warning, if any.
    pub alert: Option<Alert>,
}

/// Draws the station screen, reusing its scaling tables while the sizes stay the same.
#[derive(Debug, Default)]
pub struct StationScreen {
    /// `(frame size, screen size)` the tables are for.
    sizes: ((u32, u32), (u32, u32)),
    /// Source column of each screen column in the image area, and likewise rows.
    columns: Vec<u32>,
    rows: Vec<u32>,
    /// Top-left of the scaled image on the screen.
    origin: Point,
}

impl StationScreen {
    /// Draws `overlay` (the frame as judged, with its overlay) and `status` on `target`.
    pub fn draw<D: DrawTarget<Color = Rgb888>>(
        &mut self,
        target: &mut D,
        overlay: Option<&RgbImage>,
        status: &Status,
    ) -> Result<(), D::Error> {
        let screen = target.bounding_box().size;
        let area = Size::new(screen.width, screen.height.saturating_sub(STATUS_HEIGHT));
        target.clear(Rgb888::BLACK)?;
        if let Some(image) = overlay.filter(|i| i.width() > 0 && i.height() > 0 && area.height > 0) {
            self.fit(image.dimensions(), (area.width, area.height));
            let (w, h) = (self.columns.len() as u32, self.rows.len() as u32);
            let pixels = self.rows.iter().flat_map(|&sy| {
                self.columns.iter().map(move |&sx| {
                    let p = image.get_pixel(sx, sy).0;
                    Rgb888::new(p[0], p[1], p[2])
                })
            });
            target.fill_contiguous(&Rectangle::new(self.origin, Size::new(w, h)), pixels)?;
        }
        let bar = Rectangle::new(Point::new(0, area.height as i32), Size::new(screen.width, STATUS_HEIGHT));
        let colour = status.verdict.map(banner_colour).unwrap_or(Rgb888::new(40, 40, 40));
        bar.into_styled(PrimitiveStyle::with_fill(colour)).draw(target)?;
        let style = MonoTextStyle::new(&FONT_6X10, Rgb888::WHITE);
        let mut line = heapless::String::<128>::new();
        let _ = write!(line, "{}", status.verdict.map(Verdict::label).unwrap_or("WAITING"));
        if let Some(score) = status.score {
            let _ = write!(line, "  score {score:.3} / {:.3}", status.threshold);
        }
        let _ = write!(line, "  {:.1} ms  {:.1} fps", status.latency_ms, status.fps);
        let top = area.height as i32 + 2;
        Text::with_baseline(&line, Point::new(4, top), style, Baseline::Top).draw(target)?;
        line.clear();
        let _ = write!(line, "pass {}  fail {}  error {}", status.passed, status.failed, status.errors);
        if status.missed > 0 {
            let _ = write!(line, "  missed triggers {}", status.missed);
        }
        Text::with_baseline(&line, Point::new(4, top + 12), style, Baseline::Top).draw(target)?;
        line.clear();
        let _ = write!(line, "recipe {}", status.recipe);
        match status.alert {
            None => {}
            Some(Alert::SelfTest) => {
                let _ = write!(line, "  SELF-TEST FAILED");
            }
            Some(Alert::Drift(shift)) => {
                let _ = write!(line, "  DRIFT {:+.0}%", shift * 100.0);
            }
        }
        Text::with_baseline(&line, Point::new(4, top + 24), style, Baseline::Top).draw(target)?;
        Ok(())
    }

    /// Nearest-neighbour tables that fit `frame` into `area`, keeping its aspect, centred.
    fn fit(&mut self, frame: (u32, u32), area: (u32, u32)) {
        if self.sizes == (frame, area) && !self.columns.is_empty() {
            return;
        }
        let scale = (area.0 as f64 / frame.0 as f64).min(area.1 as f64 / frame.1 as f64);
        let w = ((frame.0 as f64 * scale).round() as u32).clamp(1, area.0);
        let h = ((frame.1 as f64 * scale).round() as u32).clamp(1, area.1);
        let map = |n_out: u32, n_in: u32| -> Vec<u32> {
            (0..n_out).map(|o| (((o as f64 + 0.5) * n_in as f64 / n_out as f64) as u32).min(n_in - 1)).collect()
        };
        self.columns = map(w, frame.0);
        self.rows = map(h, frame.1);
        self.origin = Point::new(((area.0 - w) / 2) as i32, ((area.1 - h) / 2) as i32);
        self.sizes = (frame, area);
    }
}
