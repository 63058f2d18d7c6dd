//! `clipada capture --config station.toml --count N --out DIR`: good images for calibration
//! from the station's own source (its camera), cropped to the recipe's region of interest as
//! the station judges them, while the station is not running (it holds the camera; a running
//! station captures from its operator interface instead).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use image::RgbImage;

use crate::sink::png::png_bytes;
use crate::source::Frame;
use crate::station::assemble;
use crate::station::plan::StationPlan;
use crate::storage::owned::{FolderKind, OwnedDir};

/// Most images one capture takes.
pub const MAX_COUNT: usize = 1000;
/// Frames in a row that may fail before a capture gives up.
const FAILURES_IN_A_ROW: u32 = 20;

/// What `clipada capture` was asked to do.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// The station's configuration.
    pub config: PathBuf,
    /// The recipe whose region is cropped (default: the one active at start).
    pub recipe: Option<String>,
    /// Images to take.
    pub count: usize,
    /// The folder they go to (new, empty, or one clipada made for captures).
    pub out: PathBuf,
}

/// Takes `options.count` frames from the station's source, each cropped to the recipe's region,
/// into `options.out` as `capture-0001.png`…; reports to `out`. `stop` ends it early (what was
/// taken stays). Refused while the station runs (its state folder is locked).
pub fn capture(options: &CaptureOptions, stop: Arc<AtomicBool>, out: &mut dyn Write) -> anyhow::Result<usize> {
    anyhow::ensure!((1..=MAX_COUNT).contains(&options.count), "--count: 1 to {MAX_COUNT} images");
    let plan = StationPlan::load_starting(&options.config, options.recipe.as_deref())?;
    let _state = assemble::lock_state(&plan).context(
        "the station may be running: it holds the camera; capture from its operator interface ([http]) instead",
    )?;
    let roi = plan.recipes.list[plan.recipes.start].roi.as_ref().map(|r| r.rect);
    let folder = OwnedDir::claim(&options.out, FolderKind::Commissioning).context("--out")?;
    let mut source = assemble::source(&plan, stop.clone())?;
    let (mut frame, mut cropped) = (Frame::default(), RgbImage::new(0, 0));
    let (mut taken, mut failing) = (0, 0);
    while taken < options.count && !stop.load(Ordering::Relaxed) {
        match source.next_frame(&mut frame) {
            Ok(false) => anyhow::bail!("the source ended after {taken} of {} images", options.count),
            Err(e) => {
                failing += 1;
                anyhow::ensure!(failing < FAILURES_IN_A_ROW, "{failing} frames in a row could not be had: {e}");
                continue;
            }
            Ok(true) => failing = 0,
        }
        let image = match crate::station::crop(roi, &frame.image, &mut cropped)? {
            true => &cropped,
            false => &frame.image,
        };
        taken += 1;
        save_capture(&folder, taken, image)?;
    }
    writeln!(out, "captured {taken} images into {}", options.out.display())?;
    writeln!(
        out,
        "calibrate from them: clipada calibrate --model MODEL --good {} --out MEMORY",
        options.out.display()
    )?;
    Ok(taken)
}

/// Saves capture number `number` (from 1) as `capture-NNNN.png` in `folder`.
pub(crate) fn save_capture(folder: &OwnedDir, number: usize, image: &RgbImage) -> anyhow::Result<PathBuf> {
    let name = format!("capture-{number:04}.png");
    Ok(folder.write_atomic(Path::new(&name), &png_bytes(image)?)?)
}
