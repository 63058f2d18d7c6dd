//! The station: `clipada run`. Frames from a source, on a trigger, judged one by one; the
//! verdict on the GPIO lines, the overlay on the display, a line in the result log, and the
//! images of failed parts in a bounded folder.
//!
//! Fail-safe by construction: the lines are put in the safe state (default READY low, FAIL
//! asserted) before the first frame, on every ERROR verdict, and however the loop ends
//! (return, error, panic: [`gpio::VerdictLines`] does it on drop; SIGTERM/SIGINT: the stop
//! flag).
//! A frame that cannot be had or judged is an ERROR verdict, never a PASS. Logs and saved
//! images failing (full disk) are reported and counted; inspection goes on.
//!
//! Under systemd the loop reports readiness after the safe state is set and sends watchdog
//! heartbeats while it runs ([`watchdog`]), so a hung loop is restarted.
//!
//! After warm-up the loop allocates nothing per frame for the parts this crate owns (a test
//! counts allocations): buffers are reused, fixed-capacity `heapless` state holds the recent
//! results and text. What allocates inside an engine (tract, ONNX Runtime), an image decoder
//! (folder source, MJPEG) or a PNG encoder (saving a failed part) is theirs.

pub mod config;
pub mod gpio;
pub mod log;
pub mod trigger;
pub mod watchdog;

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use image::RgbImage;

use crate::calibration::DEFAULT_MEMORY_SIZE;
use crate::commands::calibrate::{calibrate, CalibrateOptions};
use crate::pipeline::{InspectOptions, Inspector};
use crate::sink::display::{StationScreen, Status};
use crate::sink::framebuffer::Framebuffer;
use crate::sink::overlay::OverlayRenderer;
use crate::source::directory::DirectorySource;
use crate::source::FrameSource;
use crate::verdict::Verdict;
use config::{DisplayKind, GpioKind, SourceKind, SourceSection, StationConfig, TriggerMode};
use gpio::{Output, Recorder, RecordingPin, SignalLines, VerdictLines};
use log::{rfc3339, FailureArchive, ResultLog, ResultRecord};
use trigger::{EdgeDetector, Fired, Trigger};
use watchdog::Notifier;

/// Recent verdicts kept for the frame rate.
const RECENT: usize = 32;

/// A rectangle of the frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roi {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Everything a station is made of; [`StationParts::from_config`] builds it, tests swap parts.
pub struct StationParts {
    /// Judges frames.
    pub inspector: Inspector,
    /// Frames in.
    pub source: Box<dyn FrameSource>,
    /// When to take a frame.
    pub trigger: Trigger,
    /// The judged part of the frame; none: all of it.
    pub roi: Option<Roi>,
    /// The display.
    pub display: Option<Framebuffer>,
    /// PASS, FAIL, READY.
    pub lines: SignalLines,
    /// JSON-lines result log.
    pub results: Option<ResultLog>,
    /// Saved failed parts.
    pub archive: Option<FailureArchive>,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Frames triggered (each got exactly one verdict).
    pub frames: u64,
    /// PASS verdicts.
    pub passed: u64,
    /// FAIL verdicts.
    pub failed: u64,
    /// ERROR verdicts.
    pub errors: u64,
    /// Failed parts whose images could not be saved.
    pub images_dropped: u64,
    /// Result lines that could not be written.
    pub log_failures: u64,
    /// GPIO writes that failed.
    pub gpio_failures: u64,
    /// Display updates that failed.
    pub display_failures: u64,
}

/// What one step of the loop did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// A frame was triggered and got this verdict.
    Judged(Verdict),
    /// The source has no more frames.
    Exhausted,
    /// Stop was requested.
    Stopped,
}

/// The inspection loop and its reused state.
pub struct Station {
    parts: StationParts,
    frame: RgbImage,
    crop: RgbImage,
    overlay: OverlayRenderer,
    screen: StationScreen,
    status: Status,
    summary: RunSummary,
    recent: heapless::HistoryBuf<Instant, RECENT>,
    /// ERROR verdicts in a row from the source, to report its recovery.
    source_errors_in_row: u64,
    started: bool,
    /// systemd notifications (readiness, watchdog heartbeats), when supervised.
    notifier: Option<Notifier>,
}

impl Station {
    /// A station over `parts`.
    pub fn new(parts: StationParts) -> Station {
        let threshold = parts.inspector.threshold();
        Station {
            parts,
            frame: RgbImage::new(0, 0),
            crop: RgbImage::new(0, 0),
            overlay: OverlayRenderer::default(),
            screen: StationScreen::default(),
            status: Status { threshold, ..Status::default() },
            summary: RunSummary::default(),
            recent: heapless::HistoryBuf::new(),
            source_errors_in_row: 0,
            started: false,
            notifier: None,
        }
    }

    /// Reports readiness, heartbeats from the loop and stopping to the service manager.
    pub fn supervised_by(&mut self, notifier: Notifier) {
        self.notifier = Some(notifier);
    }

    /// Runs until the source is exhausted or `stop` is set; the lines end in the safe state.
    pub fn run(&mut self, stop: &AtomicBool, diagnostics: &mut dyn Write) -> anyhow::Result<RunSummary> {
        while let Step::Judged(_) = self.step(stop, diagnostics)? {}
        if let Some(notifier) = &mut self.notifier {
            notifier.stopping();
        }
        self.parts.lines.enter_safe_state().context("cannot leave the GPIO lines in the safe state")?;
        Ok(self.summary)
    }

    /// Counters so far.
    pub fn summary(&self) -> RunSummary {
        self.summary
    }

    /// Waits for one trigger and judges one frame. The first call puts the lines in the
    /// safe state (an error if that fails: a station that cannot signal must not start).
    pub fn step(&mut self, stop: &AtomicBool, diagnostics: &mut dyn Write) -> anyhow::Result<Step> {
        if !self.started {
            self.parts.lines.enter_safe_state().context("cannot put the GPIO lines in the safe state")?;
            self.started = true;
            if let Some(notifier) = &mut self.notifier {
                notifier.ready();
            }
        }
        let notifier = &mut self.notifier;
        let fired = self.parts.trigger.wait(stop, &mut || {
            if let Some(notifier) = notifier.as_mut() {
                notifier.heartbeat();
            }
        });
        let triggered = match fired {
            Ok(Fired::At(at)) => at,
            Ok(Fired::Stop) => return Ok(Step::Stopped),
            Err(e) => {
                // The trigger input failed: one ERROR verdict, then keep trying.
                let _ = writeln!(diagnostics, "clipada: trigger: {e}");
                std::thread::sleep(Duration::from_millis(100));
                return Ok(self.conclude(Instant::now(), Err(e.to_string()), false, diagnostics));
            }
        };
        let (judged, has_frame) = match self.parts.source.next_frame(&mut self.frame) {
            Ok(false) => return Ok(Step::Exhausted),
            Ok(true) => {
                if self.source_errors_in_row > 0 {
                    let _ =
                        writeln!(diagnostics, "clipada: source recovered after {} errors", self.source_errors_in_row);
                    self.source_errors_in_row = 0;
                }
                (self.judge_frame(), true)
            }
            Err(e) => {
                self.source_errors_in_row += 1;
                (Err(e.to_string()), false)
            }
        };
        Ok(self.conclude(triggered, judged, has_frame, diagnostics))
    }

    /// Crops the region of interest and judges it.
    fn judge_frame(&mut self) -> Result<(f32, Verdict), String> {
        if let Some(roi) = self.parts.roi {
            let (w, h) = self.frame.dimensions();
            if roi.x.saturating_add(roi.width) > w || roi.y.saturating_add(roi.height) > h {
                return Err(format!(
                    "roi: {}x{} at ({}, {}) does not fit in the {w}x{h} frame",
                    roi.width, roi.height, roi.x, roi.y
                ));
            }
            if self.crop.dimensions() != (roi.width, roi.height) {
                self.crop = RgbImage::new(roi.width, roi.height);
            }
            let row = roi.width as usize * 3;
            for y in 0..roi.height as usize {
                let from = ((roi.y as usize + y) * w as usize + roi.x as usize) * 3;
                self.crop.as_mut()[y * row..(y + 1) * row].copy_from_slice(&self.frame.as_raw()[from..from + row]);
            }
        }
        let image = judged_image(self.parts.roi, &self.crop, &self.frame);
        self.parts.inspector.inspect(image).map(|j| (j.score, j.verdict)).map_err(|e| e.to_string())
    }

    /// Signals, shows and records one verdict.
    fn conclude(
        &mut self,
        triggered: Instant,
        judged: Result<(f32, Verdict), String>,
        has_frame: bool,
        diagnostics: &mut dyn Write,
    ) -> Step {
        let (score, verdict) = match &judged {
            Ok((score, verdict)) => (Some(*score), *verdict),
            Err(_) => (None, Verdict::Error),
        };
        if let Err(e) = self.parts.lines.show(verdict) {
            self.summary.gpio_failures += 1;
            let _ = writeln!(diagnostics, "clipada: {e}");
        }
        let latency_ms = triggered.elapsed().as_secs_f64() * 1e3;
        let now = rfc3339(SystemTime::now());
        self.summary.frames += 1;
        match verdict {
            Verdict::Pass => self.summary.passed += 1,
            Verdict::Fail => self.summary.failed += 1,
            Verdict::Error => self.summary.errors += 1,
        }
        if let Err(reason) = &judged {
            let _ = writeln!(diagnostics, "clipada: frame {}: ERROR: {reason}", self.summary.frames);
        }
        self.recent.write(Instant::now());
        let fps = match (self.recent.oldest(), self.recent.recent()) {
            (Some(first), Some(last)) if self.recent.len() > 1 && last > first => {
                (self.recent.len() - 1) as f32 / (*last - *first).as_secs_f32()
            }
            _ => 0.0,
        };
        self.status = Status {
            verdict: Some(verdict),
            score,
            latency_ms: latency_ms as f32,
            fps,
            passed: self.summary.passed,
            failed: self.summary.failed,
            errors: self.summary.errors,
            ..self.status
        };
        let wants_overlay = self.parts.display.is_some() || (verdict == Verdict::Fail && self.parts.archive.is_some());
        let judged_image = judged_image(self.parts.roi, &self.crop, &self.frame);
        let overlay = (wants_overlay && has_frame && judged_image.width() > 0).then(|| {
            let map = score.map(|s| (self.parts.inspector.map(), s));
            self.overlay.render(judged_image, map, self.parts.inspector.threshold(), verdict)
        });
        if let Some(display) = &mut self.parts.display {
            let _ = self.screen.draw(display, overlay, &self.status);
            if let Err(e) = display.flush() {
                self.summary.display_failures += 1;
                if self.summary.display_failures == 1 {
                    let _ = writeln!(diagnostics, "clipada: display {}: {e}", display.path().display());
                }
            }
        }
        if let Some(results) = &mut self.parts.results {
            let record = ResultRecord {
                time: &now,
                frame: self.summary.frames,
                score,
                verdict,
                latency_ms: (latency_ms * 1e3).round() as f32 / 1e3,
                error: judged.as_ref().err().map(String::as_str),
            };
            if let Err(e) = results.append(&record) {
                self.summary.log_failures += 1;
                if self.summary.log_failures == 1 {
                    let _ = writeln!(diagnostics, "clipada: result log: {e:#} (inspection goes on)");
                }
            }
        }
        if let (Verdict::Fail, Some(archive), Some(overlay)) = (verdict, &mut self.parts.archive, overlay) {
            if let Err(e) = archive.save(&now, self.summary.frames, judged_image, overlay) {
                self.summary.images_dropped += 1;
                let _ = writeln!(
                    diagnostics,
                    "clipada: failed part {} not saved: {e:#} (inspection goes on)",
                    self.summary.frames
                );
            }
        }
        Step::Judged(verdict)
    }
}

/// The image a frame is judged on: its region of interest when there is one.
fn judged_image<'a>(roi: Option<Roi>, crop: &'a RgbImage, frame: &'a RgbImage) -> &'a RgbImage {
    if roi.is_some() {
        crop
    } else {
        frame
    }
}

impl StationParts {
    /// Builds every part from `config`; `stop` also cuts short a camera's reconnect waits.
    /// Reports what it does (calibration, engine choice) to `diagnostics`.
    pub fn from_config(
        config: &StationConfig,
        stop: Arc<AtomicBool>,
        diagnostics: &mut dyn Write,
    ) -> anyhow::Result<StationParts> {
        let model = &config.model;
        if let (Some(memory), Some(good)) = (&model.memory, &model.calibrate_from) {
            if !memory.exists() {
                let _ =
                    writeln!(diagnostics, "clipada: {} missing: calibrating from {}", memory.display(), good.display());
                if let Some(dir) = memory.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| format!("model.memory: {}", dir.display()))?;
                }
                let options = CalibrateOptions {
                    model: model.path.clone(),
                    good: good.clone(),
                    out: memory.clone(),
                    memory_size: DEFAULT_MEMORY_SIZE,
                    no_refine: !model.refine,
                    engine: model.engine(),
                };
                calibrate(&options, diagnostics).context("model.calibrate_from")?;
            }
        }
        let options = InspectOptions {
            no_refine: !model.refine,
            threshold: model.threshold,
            memory: model.memory.clone(),
            engine: model.engine(),
        };
        let mut inspector = Inspector::load(&model.path, &options)?;
        let roi = config.roi.as_ref().map(|r| Roi { x: r.x, y: r.y, width: r.width, height: r.height });
        if let Some(mask) = config.roi.as_ref().and_then(|r| r.ignore_mask.as_ref()) {
            let image =
                image::open(mask).with_context(|| format!("roi.ignore_mask: {}: cannot read", mask.display()))?;
            inspector.set_ignore_mask(&image.into_luma8());
        }
        let source: Box<dyn FrameSource> = match (config.source.kind, &config.source.path) {
            (SourceKind::Directory, Some(path)) => {
                Box::new(DirectorySource::open(path, config.source.looping).context("source.path")?)
            }
            (SourceKind::Directory, None) => anyhow::bail!("source.path: missing"),
            (SourceKind::Camera, _) => camera_source(&config.source, stop)?,
        };
        let gpio = &config.gpio;
        let (outputs, trigger_input) = gpio_lines(config)?;
        let lines = SignalLines::new(VerdictLines::new(
            outputs,
            gpio.active_low,
            gpio.output,
            Duration::from_millis(gpio.pulse_ms),
            gpio.safe_state,
        ));
        let trigger = match (config.trigger.mode, trigger_input) {
            (TriggerMode::FreeRun, _) => Trigger::FreeRun,
            (TriggerMode::Interval, _) => {
                let period = Duration::from_millis(config.trigger.interval_ms.unwrap_or(1000));
                Trigger::Interval { period, next: None }
            }
            (TriggerMode::Gpio, Some(input)) => Trigger::Input(EdgeDetector::new(
                input,
                config.trigger.edge,
                Duration::from_millis(config.trigger.debounce_ms),
            )),
            (TriggerMode::Gpio, None) => anyhow::bail!("gpio.trigger_line: the gpio trigger needs it"),
        };
        let display = match (config.display.kind, &config.display.device) {
            (DisplayKind::None, _) => None,
            (DisplayKind::Framebuffer, None) => anyhow::bail!("display.device: missing"),
            (DisplayKind::Framebuffer, Some(device)) => {
                let d = &config.display;
                let configured = d.width.zip(d.height).zip(d.bits_per_pixel).map(|((w, h), b)| (w, h, b));
                Some(Framebuffer::open(device, configured).context("display.device")?)
            }
        };
        let results = config.log.results.as_deref().map(ResultLog::open).transpose().context("log.results")?;
        let archive = (config.log.failures_dir.as_deref())
            .map(|dir| FailureArchive::open(dir, config.log.max_images, config.log.max_bytes))
            .transpose()
            .context("log.failures_dir")?;
        Ok(StationParts { inspector, source, trigger, roi, display, lines, results, archive })
    }
}

#[cfg(feature = "camera")]
fn camera_source(section: &SourceSection, stop: Arc<AtomicBool>) -> anyhow::Result<Box<dyn FrameSource>> {
    use crate::source::camera::{CameraSettings, CameraSource};
    let device = section.device.clone().context("source.device: missing")?;
    let settings = CameraSettings {
        device,
        width: section.width,
        height: section.height,
        fps: section.fps,
        format: section.format,
        reconnect: Duration::from_millis(section.reconnect_ms),
        reconnect_max: Duration::from_millis(section.reconnect_max_ms),
    };
    Ok(Box::new(CameraSource::open(settings, stop).context("source")?))
}

#[cfg(not(feature = "camera"))]
fn camera_source(_: &SourceSection, _: Arc<AtomicBool>) -> anyhow::Result<Box<dyn FrameSource>> {
    anyhow::bail!("source: this clipada was built without the `camera` feature")
}

/// The PASS, FAIL, READY outputs and the TRIGGER input the config asks for.
fn gpio_lines(config: &StationConfig) -> anyhow::Result<([Output; 3], Option<gpio::Input>)> {
    let gpio = &config.gpio;
    match gpio.kind {
        GpioKind::None => Ok((std::array::from_fn(|_| Box::new(NoLine) as Output), None)),
        GpioKind::Recording => {
            let path = gpio.record.as_deref().context("gpio.record: missing")?;
            let recorder = Recorder::create(path).context("gpio.record")?;
            let pin = |name| Box::new(RecordingPin::new(name, recorder.clone())) as Output;
            anyhow::ensure!(gpio.trigger_line.is_none(), "gpio.trigger_line: the recording GPIO has no inputs");
            Ok(([pin("pass"), pin("fail"), pin("ready")], None))
        }
        GpioKind::Chardev => chardev_lines(config),
    }
}

#[cfg(all(feature = "gpio", target_os = "linux"))]
fn chardev_lines(config: &StationConfig) -> anyhow::Result<([Output; 3], Option<gpio::Input>)> {
    use gpio::chardev::ChardevLine;
    let gpio = &config.gpio;
    let chip: &std::path::Path = gpio.chip.as_deref().context("gpio.chip: missing")?;
    let output = |key: &str, line: Option<u32>| -> anyhow::Result<Output> {
        let offset = line.with_context(|| format!("gpio.{key}: missing"))?;
        Ok(Box::new(ChardevLine::output(chip, offset).with_context(|| format!("gpio.{key}"))?))
    };
    let outputs = [
        output("pass_line", gpio.pass_line)?,
        output("fail_line", gpio.fail_line)?,
        output("ready_line", gpio.ready_line)?,
    ];
    let input = match gpio.trigger_line {
        Some(offset) => Some(Box::new(ChardevLine::input(chip, offset).context("gpio.trigger_line")?) as gpio::Input),
        None => None,
    };
    Ok((outputs, input))
}

#[cfg(not(all(feature = "gpio", target_os = "linux")))]
fn chardev_lines(_: &StationConfig) -> anyhow::Result<([Output; 3], Option<gpio::Input>)> {
    anyhow::bail!("gpio.kind: this clipada was built without the `gpio` feature (Linux only)")
}

/// An output that goes nowhere (no GPIO configured).
struct NoLine;

impl embedded_hal::digital::ErrorType for NoLine {
    type Error = gpio::GpioError;
}

impl embedded_hal::digital::OutputPin for NoLine {
    fn set_low(&mut self) -> Result<(), gpio::GpioError> {
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), gpio::GpioError> {
        Ok(())
    }
}
