//! The station: `clipada run`. Frames from a source, on a trigger, judged one by one; the
//! verdict on the GPIO lines, the overlay on the display, a line in the result log, and the
//! images of failed parts in a bounded folder.
//!
//! Two processes: the supervisor ([`supervisor`]) owns the verdict lines and puts them in the
//! safe state first thing, on every ERROR, when the inspection loop misses its deadline, and
//! however the loop ends (even a crash); the worker runs [`Station`], the inspection loop, and
//! reaches the lines only through its [`supervisor::SupervisorLink`]. `commands::run` starts
//! both; tests run both ends in one process ([`supervisor::pair`]).
//!
//! A frame that cannot be had or judged is an ERROR verdict, never a PASS ([`FrameError`] says
//! why). The same error repeating is logged once with a count and retried with a growing pause,
//! so a vanished folder or camera does not flood the log. Logs and saved images failing (full
//! disk) are reported and counted; inspection goes on.
//!
//! After warm-up the loop allocates nothing per frame for the parts this crate owns (a test
//! counts allocations): buffers are reused, fixed-capacity `heapless` state holds the recent
//! results and text. What allocates inside an engine (tract, ONNX Runtime), an image decoder
//! (folder source, MJPEG) or a PNG encoder (saving a failed part) is theirs, and so are error
//! messages.

pub mod assemble;
pub mod config;
pub mod control;
pub mod lines;
pub mod log;
pub mod monitor;
pub mod plan;
pub mod recipe;
pub mod reject;
pub mod status;
pub mod supervisor;
pub mod trigger;
pub mod watchdog;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use image::RgbImage;

use crate::pipeline::{InspectError, Judged, StageTimes};
use crate::plant::Plant;
use crate::sink::display::{Alert, StationScreen, Status};
use crate::sink::framebuffer::Framebuffer;
use crate::sink::overlay::OverlayRenderer;
use crate::source::{Frame, FrameSource, SourceError};
use crate::verdict::Verdict;
use control::{Command, ControlServer, Request};
use lines::GpioError;
use log::{rfc3339, FailureArchive, PartIds, ResultLog, ResultRecord};
use monitor::DriftChange;
use recipe::{RecipeError, RecipeTag, Recipes};
use status::{ErrorCause, LastResult, RecipeCalibration, StationStatus, StatusBoard};
use supervisor::{LinkError, SupervisorLink};
use trigger::{Fired, Missed, Trigger};

/// Recent verdicts kept for the frame rate.
const RECENT: usize = 32;
/// How long SIGTERM may take to bring the station to the safe state and end it, from any
/// point, start-up included (the supervisor enforces it).
pub const STOP_WITHIN: Duration = Duration::from_millis(100);
/// The first pause after an error from the source or trigger; it doubles with each error in a
/// row, up to [`ERROR_PAUSE_MAX`].
pub(crate) const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between attempts while errors repeat.
pub(crate) const ERROR_PAUSE_MAX: Duration = Duration::from_secs(1);
/// While the same error repeats, how often it is logged again (with its count).
pub(crate) const ERROR_REPORT_EVERY: Duration = Duration::from_secs(10);

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

/// Why a triggered frame got an ERROR verdict.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The trigger input could not be read.
    #[error("trigger: {0}")]
    Trigger(GpioError),
    /// No frame could be had.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The region of interest does not fit the frame.
    #[error("roi: {roi_width}x{roi_height} at ({x}, {y}) does not fit in the {width}x{height} frame")]
    Roi {
        /// ROI left.
        x: u32,
        /// ROI top.
        y: u32,
        /// ROI width.
        roi_width: u32,
        /// ROI height.
        roi_height: u32,
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
    },
    /// No frame exposed after the trigger came in time: the source served only older ones
    /// (buffered before the part arrived), which were discarded, or one exposed more than the
    /// timeout after the trigger (and its delay).
    #[error("no frame exposed after the trigger within {timeout_ms} ms ({discarded} older frames discarded)")]
    Stale {
        /// `trigger.frame_timeout_ms`.
        timeout_ms: u128,
        /// Frames exposed before the trigger, discarded while waiting.
        discarded: u32,
    },
    /// The trigger got no frame of its own (it came while the station was busy, or overflowed).
    #[error(transparent)]
    Missed(#[from] Missed),
    /// The part has no recipe that may judge it.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// The frame could not be judged.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// The source ended after the part's trigger, before a frame of it was taken.
    #[error("the source ended before a frame of this part was taken")]
    SourceEnded,
}

/// Which frame may be judged for a trigger: only one exposed at least `delay` after it and at
/// most `timeout` after that (else ERROR). The one rule that ties a verdict to a frame
/// of this part, not one a camera buffered before it arrived ([`Station::step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// `trigger.delay_ms`: motion settling, a strobe.
    pub delay: Duration,
    /// `trigger.frame_timeout_ms`.
    pub timeout: Duration,
}

// By hand, not `#[from]`: the message already holds the cause, which must not be printed twice.
impl From<GpioError> for FrameError {
    fn from(error: GpioError) -> FrameError {
        FrameError::Trigger(error)
    }
}

impl FrameError {
    /// Whether the next attempt should wait (the same cause is likely to repeat at once).
    fn pauses(&self) -> bool {
        matches!(
            self,
            FrameError::Trigger(_)
                | FrameError::Source(_)
                | FrameError::Stale { .. }
                | FrameError::Recipe(RecipeError::Select(_))
        )
    }
}

/// Everything a station's loop is made of; `commands::run` builds it from a plan, tests swap
/// parts. The verdict lines are not here: they belong to the supervisor.
pub struct StationParts {
    /// The products, the engines that judge them, and how each part's is chosen.
    pub recipes: Recipes,
    /// Frames in.
    pub source: Box<dyn FrameSource>,
    /// When to take a frame.
    pub trigger: Trigger,
    /// Which frames count as taken after their trigger.
    pub freshness: Freshness,
    /// The display.
    pub display: Option<Framebuffer>,
    /// JSON-lines result log.
    pub results: Option<ResultLog>,
    /// Saved failed parts.
    pub archive: Option<FailureArchive>,
    /// Part IDs that go on across restarts; none: records carry no part ID.
    pub part_ids: Option<PartIds>,
    /// The control socket; none: the station takes no requests.
    pub control: Option<ControlServer>,
    /// How often the reference parts are judged again (they are at start, and on request).
    pub self_test_every: Option<Duration>,
    /// The plant networks (Modbus TCP, MQTT); none: no plant network.
    pub plant: Option<Plant>,
    /// The operator interface (the HTTP server); none: no server.
    pub hmi: Option<crate::hmi::Hmi>,
    /// The board the plant networks and the operator interface read; none: neither runs.
    pub board: Option<Arc<StatusBoard>>,
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
    /// Verdicts the lines could not show (they went to the safe state instead).
    pub gpio_failures: u64,
    /// Display updates that failed.
    pub display_failures: u64,
    /// Frames discarded because they were exposed before their trigger.
    pub stale_frames: u64,
    /// Triggers that got an ERROR verdict without a frame: they came while the station was
    /// busy, or more came than could wait.
    pub missed_triggers: u64,
    /// Self-tests in which a reference part did not get its verdict.
    pub self_test_failures: u64,
    /// Drift warnings raised.
    pub drift_warnings: u64,
    /// Results dropped from the MQTT queue while the broker was away.
    pub mqtt_dropped: u64,
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
    recipes: Recipes,
    source: Box<dyn FrameSource>,
    trigger: Trigger,
    freshness: Freshness,
    control: Option<ControlServer>,
    self_test_every: Option<Duration>,
    /// When the reference parts are judged next (on a schedule).
    self_test_due: Option<Instant>,
    /// A self-test asked for from the control socket, run between parts.
    self_test_asked: Option<Request>,
    frame: Frame,
    crop: RgbImage,
    outlets: Outlets,
    started: bool,
    /// Errors in a row, and the pause before the next attempt.
    failing: u32,
}

/// Where a verdict goes, and the counters: apart from the inspector and frames, so that a
/// verdict can be reported while its map and image are borrowed.
struct Outlets {
    link: SupervisorLink,
    display: Option<Framebuffer>,
    results: Option<ResultLog>,
    archive: Option<FailureArchive>,
    part_ids: Option<PartIds>,
    /// Held for its Drop (it stops the networks).
    _plant: Option<Plant>,
    /// Held for its Drop (it stops the server).
    _hmi: Option<crate::hmi::Hmi>,
    board: Option<Arc<StatusBoard>>,
    /// The last result record as JSON, for the result log and the plant (reused).
    json: Vec<u8>,
    overlay: OverlayRenderer,
    screen: StationScreen,
    status: Status,
    summary: RunSummary,
    recent: heapless::HistoryBuf<Instant, RECENT>,
    repeats: RepeatedError,
    /// Whether the last verdict was an error that calls for a pause before the next attempt.
    last_pauses: bool,
}

/// The error being repeated, how often, and when it was last logged.
#[derive(Default)]
struct RepeatedError {
    text: String,
    count: u64,
    logged_at: Option<Instant>,
}

impl Station {
    /// A station over `parts`, showing its verdicts through `link`.
    pub fn new(parts: StationParts, link: SupervisorLink) -> Station {
        Station {
            recipes: parts.recipes,
            source: parts.source,
            trigger: parts.trigger,
            freshness: parts.freshness,
            control: parts.control,
            self_test_every: parts.self_test_every,
            self_test_due: None,
            self_test_asked: None,
            frame: Frame::default(),
            crop: RgbImage::new(0, 0),
            outlets: Outlets {
                link,
                display: parts.display,
                results: parts.results,
                archive: parts.archive,
                part_ids: parts.part_ids,
                _plant: parts.plant,
                _hmi: parts.hmi,
                board: parts.board,
                json: Vec::with_capacity(512),
                overlay: OverlayRenderer::default(),
                screen: StationScreen::default(),
                status: Status::default(),
                summary: RunSummary::default(),
                recent: heapless::HistoryBuf::new(),
                repeats: RepeatedError::default(),
                last_pauses: false,
            },
            started: false,
            failing: 0,
        }
    }

    /// Runs until the source is exhausted or `stop` is set. An error only when the lines can no
    /// longer be reached (the supervisor is gone) unless stop was asked for (a stopped
    /// supervisor may end first).
    pub fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<RunSummary> {
        loop {
            match self.step(stop) {
                Ok(Step::Judged(_)) => {}
                Ok(Step::Exhausted | Step::Stopped) => break,
                Err(_) if stop.load(Ordering::Relaxed) => break,
                Err(e) => return Err(e),
            }
        }
        if self.outlets.repeats.count > 1 {
            tracing::info!(
                "the last error repeated {} times: {}",
                self.outlets.repeats.count,
                self.outlets.repeats.text
            );
        }
        self.outlets.tell_plant(|s| (s.ready, s.busy) = (false, false));
        if let Some(board) = &self.outlets.board {
            self.outlets.summary.mqtt_dropped = board.status().counters.mqtt_dropped;
        }
        Ok(self.outlets.summary)
    }

    /// Waits for one trigger and judges one frame; between parts, answers control requests and
    /// runs the self-tests that are due.
    pub fn step(&mut self, stop: &AtomicBool) -> anyhow::Result<Step> {
        if !self.started {
            self.warm_up();
            self.self_test("at start", stop)?;
            self.outlets.link.ready()?;
            self.started = true;
            let next = self.recipes.next_tag().number;
            self.outlets.tell_plant(|s| (s.ready, s.recipe) = (true, next));
            if let Some(board) = &self.outlets.board {
                for index in 0..self.recipes.len() {
                    board.set_calibration(index, calibration_of(&self.recipes, index));
                }
            }
            self.self_test_due = self.self_test_every.map(|every| Instant::now() + every);
            for index in 0..self.recipes.len() {
                let tag = &self.recipes.get(index).tag;
                let info = self.recipes.engine(index).info();
                let model = &self.recipes.engine(index).spec().name;
                tracing::info!(
                    "ready: recipe {}: {model} on {} ({}, {}), threshold {}",
                    tag.name,
                    info.engine,
                    info.provider,
                    info.precision.name(),
                    tag.threshold
                );
            }
        }
        if self.failing > 0 {
            let pause = (ERROR_PAUSE * 2u32.saturating_pow(self.failing - 1)).min(ERROR_PAUSE_MAX);
            if !pause_for(pause, stop, &mut self.outlets.link)? {
                return Ok(Step::Stopped);
            }
        }
        let fired = loop {
            if self.self_test_asked.is_some() || self.self_test_due.is_some_and(|at| Instant::now() >= at) {
                let when = if self.self_test_asked.is_some() { "on request" } else { "scheduled" };
                self.self_test(when, stop)?;
                if stop.load(Ordering::Relaxed) {
                    return Ok(Step::Stopped);
                }
            }
            // BUSY drops now, not when the last part's result was shown: a trigger the PLC gives
            // while the loop still logged and saved that part would be an overrun.
            self.outlets.tell_plant(|s| s.busy = false);
            let link = &mut self.outlets.link;
            link.waiting()?;
            let mut lost: Option<LinkError> = None;
            let (control, recipes, summary) = (&self.control, &mut self.recipes, &self.outlets.summary);
            let (asked, due) = (&mut self.self_test_asked, self.self_test_due);
            let board = self.outlets.board.as_deref();
            let fired = self.trigger.wait(stop, &mut || {
                if let Err(e) = link.alive() {
                    lost = Some(e);
                }
                if let Some(board) = board {
                    take_board_requests(board, recipes);
                }
                if let Some(request) = control.as_ref().and_then(ControlServer::poll) {
                    if let Some(self_test) = answer(request, recipes, summary) {
                        match asked {
                            Some(_) => self_test.answer(Err("a self-test is already waiting to run".into())),
                            None => *asked = Some(self_test),
                        }
                    }
                }
                asked.is_none() && due.is_none_or(|at| Instant::now() < at)
            });
            if let Some(e) = lost {
                return Err(e.into());
            }
            if !matches!(fired, Ok(Fired::Interrupted)) {
                break fired;
            }
        };
        if self.outlets.status.alert == Some(Alert::SelfTest) && !self.recipes.faulted() {
            self.outlets.status.alert = None;
        }
        // Switches the plant asked for before this part's trigger apply to it (`choose`).
        if let Some(board) = &self.outlets.board {
            take_board_requests(board, &mut self.recipes);
        }
        let next = self.recipes.next_tag().number;
        self.outlets.tell_plant(|s| (s.busy, s.recipe) = (true, next));
        let sequence = self.outlets.summary.frames + 1;
        let triggered = match fired {
            Ok(Fired::At(at)) => at,
            Ok(Fired::Missed(why, at)) => {
                let at = at.unwrap_or_else(Instant::now);
                let (index, _) = self.recipes.choose(at);
                let slot = index.and_then(|i| self.recipes.get(i).slot);
                let tag = index.map_or(self.recipes.unchosen(), |i| &self.recipes.get(i).tag);
                self.outlets.link.triggered(sequence, at, slot)?;
                self.outlets.summary.missed_triggers += 1;
                let step = self.outlets.conclude(at, Err(why.into()), None, tag, StageTimes::default(), stop);
                return step.map(|v| self.after(v));
            }
            Ok(Fired::Ended) => return Ok(Step::Exhausted),
            Ok(Fired::Stop) => return Ok(Step::Stopped),
            Ok(Fired::Interrupted) => unreachable!("the wait goes on after an interruption"),
            Err(e) => {
                let tag = &self.recipes.get(self.recipes.active()).tag;
                let step = self.outlets.conclude(Instant::now(), Err(e.into()), None, tag, StageTimes::default(), stop);
                return step.map(|v| self.after(v));
            }
        };
        // The part's recipe, chosen once: everything below judges with this one. A part with
        // no recipe goes to the gate at `[reject]`'s distance.
        let (index, chosen) = self.recipes.choose(triggered);
        self.outlets.link.triggered(sequence, triggered, index.and_then(|i| self.recipes.get(i).slot))?;
        // The part's frame is taken even when no recipe may judge it: it is shown with its
        // ERROR, and the source stays with the parts.
        let got = match self.fresh_frame(triggered, stop)? {
            // A part on the input's trigger is there: it gets its result (ERROR) and record. A
            // free-run or interval "trigger" stood for no part.
            Fresh::Exhausted if matches!(self.trigger, Trigger::Input(_)) => {
                let tag = index.map_or(self.recipes.unchosen(), |i| &self.recipes.get(i).tag);
                self.outlets.conclude(
                    triggered,
                    Err(FrameError::SourceEnded),
                    None,
                    tag,
                    StageTimes::default(),
                    stop,
                )?;
                return Ok(Step::Exhausted);
            }
            Fresh::Exhausted => return Ok(Step::Exhausted),
            Fresh::Stopped => return Ok(Step::Stopped),
            Fresh::Frame(got) => got,
        };
        let roi = index.and_then(|i| self.recipes.get(i).roi);
        let mut drift = None;
        let mut stages = StageTimes::default();
        // A part is judged only with its recipe; none, or a faulted one, is its ERROR.
        let recipe = chosen.map(|()| index.expect("a chosen recipe has an index"));
        let tag = index.map_or(self.recipes.unchosen(), |i| &self.recipes.get(i).tag);
        let (judged, shown, tag): (Result<Judged<'_>, FrameError>, Option<&RgbImage>, &RecipeTag) = match (got, recipe)
        {
            (Err(e), _) => (Err(e), None, tag),
            (Ok(()), Err(e)) => (Err(e.into()), Some(&self.frame.image), tag),
            (Ok(()), Ok(index)) => match crop(roi, &self.frame.image, &mut self.crop) {
                // The frame as it came: the display never shows another frame's picture.
                Err(e) => (Err(e), Some(&self.frame.image), tag),
                Ok(cropped) => {
                    let image = if cropped { &self.crop } else { &self.frame.image };
                    let part = self.recipes.judge_part(index, image);
                    (drift, stages) = (part.drift, part.stages);
                    (part.judged.map_err(FrameError::from), Some(image), part.tag)
                }
            },
        };

        if let Some(change) = drift {
            self.outlets.note_drift(tag, change);
        }
        let verdict = self.outlets.conclude(triggered, judged, shown, tag, stages, stop)?;
        Ok(self.after(verdict))
    }

    /// Judges one blank image of each recipe's region size (or its model's input size) and
    /// forgets it: engines are slow on their first run, and the first part must not pay for it
    /// (it could make the next trigger come while the station is still busy).
    fn warm_up(&mut self) {
        for index in 0..self.recipes.len() {
            let [height, width] = self.recipes.engine(index).spec().input.size;
            let roi = self.recipes.get(index).roi;
            let (width, height) = roi.map_or((width as u32, height as u32), |r| (r.width, r.height));
            let blank = RgbImage::from_pixel(width.max(1), height.max(1), image::Rgb([128, 128, 128]));
            if let Err(e) = self.recipes.judge(index, &blank) {
                tracing::debug!("warm-up: {e}");
            }
        }
    }

    /// Judges every recipe's reference parts (`when`: at start, scheduled, on request), with
    /// BUSY up. A recipe whose reference did not get its verdict is faulted (its parts get
    /// ERROR until acknowledged) and the lines go to the safe state; a request for it is
    /// answered with what each reference got.
    fn self_test(&mut self, when: &str, stop: &AtomicBool) -> Result<(), LinkError> {
        self.self_test_due = self.self_test_every.map(|every| Instant::now() + every);
        let asked = self.self_test_asked.take();
        let mut report = Vec::new();
        let mut failed = false;
        for index in 0..self.recipes.len() {
            if self.recipes.get(index).references.is_empty() {
                continue;
            }
            if self.started {
                self.outlets.link.busy()?;
            }
            let link = &mut self.outlets.link;
            let mut go_on = || link.alive().is_ok() && !stop.load(Ordering::Relaxed);
            let Some(outcomes) = monitor::judge_references(&mut self.recipes, index, &mut self.crop, &mut go_on) else {
                if let Some(request) = asked {
                    request.answer(Err("the station stopped during the self-test".into()));
                }
                return Ok(());
            };
            let recipe = self.recipes.get_mut(index);
            let list: Vec<String> = outcomes.iter().map(ToString::to_string).collect();
            let line = format!("recipe {}: {}", recipe.tag.name, list.join("; "));
            if outcomes.iter().all(|o| o.held()) {
                tracing::info!("self-test {when}: passed: {line}");
            } else {
                failed = true;
                let why =
                    list.into_iter().zip(&outcomes).filter(|(_, o)| !o.held()).map(|(t, _)| t).collect::<Vec<_>>();
                let why = format!("{when}: {}", why.join("; "));
                tracing::error!("self-test {when}: FAILED: {line}: its parts get ERROR until an operator acknowledges");
                recipe.fault = Some(why);
                self.outlets.summary.self_test_failures += 1;
            }
            report.push(line);
        }
        if failed {
            self.outlets.status.alert = Some(Alert::SelfTest);
        }
        // The lines go safe now if the next part's recipe is faulted (after the result being
        // shown); a faulted recipe the select inputs may choose later gives its parts ERROR then.
        if self.recipes.get(self.recipes.active()).fault.is_some() {
            self.outlets.link.fault("self-test failed")?;
        }
        if let Some(request) = asked {
            let answer = match (report.is_empty(), failed) {
                (true, _) => Err("no recipe names reference parts".to_string()),
                (false, false) => Ok(format!("passed: {}", report.join(" | "))),
                (false, true) => {
                    Err(format!("FAILED (the station is in ERROR until acknowledged): {}", report.join(" | ")))
                }
            };
            request.answer(answer);
        }
        Ok(())
    }

    /// Puts into `self.frame` the first frame exposed at least `freshness.delay` after
    /// `triggered`: it waits out the delay, then discards what the source had buffered before
    /// (counted); none within `freshness.timeout` is [`FrameError::Stale`].
    fn fresh_frame(&mut self, triggered: Instant, stop: &AtomicBool) -> Result<Fresh, LinkError> {
        let link = &mut self.outlets.link;
        let not_before = triggered + self.freshness.delay;
        if !pause_for(not_before.saturating_duration_since(Instant::now()), stop, link)? {
            return Ok(Fresh::Stopped);
        }
        let mut discarded = 0u32;
        loop {
            match self.source.next_frame(&mut self.frame) {
                Ok(false) => return Ok(Fresh::Exhausted),
                Err(e) => return Ok(Fresh::Frame(Err(e.into()))),
                // Exposed too late to be this part's frame (a queued trigger judged long after
                // it came, a source that stalled): the part may have left the camera's view.
                Ok(true) if self.frame.captured.saturating_duration_since(not_before) > self.freshness.timeout => {
                    let timeout_ms = self.freshness.timeout.as_millis();
                    return Ok(Fresh::Frame(Err(FrameError::Stale { timeout_ms, discarded })));
                }
                Ok(true) if self.frame.captured >= not_before => return Ok(Fresh::Frame(Ok(()))),
                Ok(true) => {
                    discarded = discarded.saturating_add(1);
                    self.outlets.summary.stale_frames += 1;
                }
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(Fresh::Stopped);
            }
            link.alive()?;
            if not_before.elapsed() > self.freshness.timeout {
                let timeout_ms = self.freshness.timeout.as_millis();
                return Ok(Fresh::Frame(Err(FrameError::Stale { timeout_ms, discarded })));
            }
        }
    }

    /// Keeps count of errors in a row that call for a pause.
    fn after(&mut self, step: Step) -> Step {
        self.failing = if self.outlets.last_pauses { self.failing.saturating_add(1) } else { 0 };
        step
    }
}

/// Answers a control request that needs no part of the loop but the recipes and counters; a
/// self-test request is given back, to run between parts.
fn answer(request: Request, recipes: &mut Recipes, summary: &RunSummary) -> Option<Request> {
    let answer = match &request.command {
        Command::SelfTest => return Some(request),
        Command::Recipe(name) => recipes.switch_to(name).map(|()| {
            tracing::info!("control: recipe {name} from the next part");
            format!("recipe {name} from the next part")
        }),
        Command::Acknowledge => {
            let mut cleared = Vec::new();
            for index in 0..recipes.len() {
                let recipe = recipes.get_mut(index);
                if let Some(why) = recipe.fault.take() {
                    tracing::warn!(
                        "control: an operator acknowledged recipe {}'s failed self-test ({why}): it judges again",
                        recipe.tag.name
                    );
                    cleared.push(recipe.tag.name.to_string());
                }
            }
            if cleared.is_empty() {
                Err("no failed self-test to acknowledge".into())
            } else {
                Ok(format!("acknowledged: {} judge again", cleared.join(", ")))
            }
        }
        Command::Status => {
            let faults: Vec<String> = (0..recipes.len())
                .filter_map(|i| recipes.get(i).fault.as_ref().map(|why| format!("{}: {why}", recipes.get(i).tag.name)))
                .collect();
            let drift: Vec<String> = (0..recipes.len())
                .filter_map(|i| {
                    let watch = recipes.get(i).drift.as_ref()?;
                    let shift = watch.shift().map_or("not yet".to_string(), |s| format!("{:+.0} %", s * 100.0));
                    Some(format!(
                        "{} {shift}{}",
                        recipes.get(i).tag.name,
                        if watch.raised() { " (WARNING)" } else { "" }
                    ))
                })
                .collect();
            Ok(format!(
                "recipe {}; {} parts: {} pass, {} fail, {} error; {} missed triggers; self-test faults: {}; drift: {}",
                &*recipes.next_tag().name,
                summary.frames,
                summary.passed,
                summary.failed,
                summary.errors,
                summary.missed_triggers,
                if faults.is_empty() { "none".to_string() } else { faults.join("; ") },
                if drift.is_empty() { "not watched".to_string() } else { drift.join(", ") }
            ))
        }
    };
    request.answer(answer);
    None
}

/// Hands the recipe switches the plant asked for to the recipes (each applies to the parts
/// triggered after it was asked for; the board shows the next part's recipe at once), and puts
/// the memories the operator put in place to work (from the next part on).
fn take_board_requests(board: &StatusBoard, recipes: &mut Recipes) {
    let mut taken = false;
    board.take_recipe_requests(|(index, asked)| {
        tracing::info!("plant: recipe {} from the next part", recipes.get(index).tag.name);
        recipes.switch_at(index, asked);
        taken = true;
    });
    if taken {
        let next = recipes.next_tag().number;
        board.update(|s| s.recipe = next);
    }
    board.take_memory_swaps(|swap| {
        let name = recipes.get(swap.recipe).tag.name.clone();
        let outcome = recipes.replace_memory(swap.recipe, &swap.memory, swap.threshold).map(|()| {
            let threshold = recipes.get(swap.recipe).tag.threshold;
            tracing::warn!(
                "operator: recipe {name} judges against {} from the next part (threshold {threshold})",
                swap.memory.path.display()
            );
            board.set_calibration(swap.recipe, calibration_of(recipes, swap.recipe));
            format!("recipe {name}: threshold {threshold}")
        });
        let _ = swap.done.send(outcome);
    });
}

/// Recipe `index`'s calibration, for the operator's score plot.
fn calibration_of(recipes: &Recipes, index: usize) -> RecipeCalibration {
    let recipe = recipes.get(index);
    RecipeCalibration {
        name: recipe.tag.name.to_string(),
        threshold: recipe.tag.threshold,
        good_scores: recipe.good_scores.clone(),
        memory_sha256: recipe.tag.provenance.memory_sha256.clone(),
    }
}

/// What [`Station::fresh_frame`] got.
enum Fresh {
    /// A frame taken after the trigger, or why there is none.
    Frame(Result<(), FrameError>),
    /// The source has no more frames.
    Exhausted,
    /// Stop was requested.
    Stopped,
}

/// Waits `pause`, telling the supervisor the loop is alive; false when stopped meanwhile.
fn pause_for(pause: Duration, stop: &AtomicBool, link: &mut SupervisorLink) -> Result<bool, LinkError> {
    let until = Instant::now() + pause;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let now = Instant::now();
        if now >= until {
            return Ok(true);
        }
        link.alive()?;
        std::thread::sleep((until - now).min(trigger::STOP_CHECK));
    }
}

/// Copies the region of interest of `frame` into `crop`; `Ok(false)` when there is no region
/// (the whole frame is judged).
pub(crate) fn crop(roi: Option<Roi>, frame: &RgbImage, crop: &mut RgbImage) -> Result<bool, FrameError> {
    let Some(roi) = roi else { return Ok(false) };
    let (w, h) = frame.dimensions();
    if roi.x.saturating_add(roi.width) > w || roi.y.saturating_add(roi.height) > h {
        return Err(FrameError::Roi {
            x: roi.x,
            y: roi.y,
            roi_width: roi.width,
            roi_height: roi.height,
            width: w,
            height: h,
        });
    }
    if crop.dimensions() != (roi.width, roi.height) {
        *crop = RgbImage::new(roi.width, roi.height);
    }
    let row = roi.width as usize * 3;
    for y in 0..roi.height as usize {
        let from = ((roi.y as usize + y) * w as usize + roi.x as usize) * 3;
        crop.as_mut()[y * row..(y + 1) * row].copy_from_slice(&frame.as_raw()[from..from + row]);
    }
    Ok(true)
}

impl Outlets {
    /// Signals, shows and records one verdict: `judged` is the outcome, `shown` the image to
    /// display (none when no frame was had). An error only when the lines are out of reach.
    fn conclude(
        &mut self,
        triggered: Instant,
        judged: Result<Judged<'_>, FrameError>,
        shown: Option<&RgbImage>,
        recipe: &RecipeTag,
        stages: StageTimes,
        stop: &AtomicBool,
    ) -> anyhow::Result<Step> {
        let mut verdict = judged.as_ref().map_or(Verdict::Error, |j| j.verdict);
        let mut late = None;
        let score = judged.as_ref().ok().map(|j| j.score);
        self.summary.frames += 1;
        let part_id = self.part_ids.as_mut().map(|ids| {
            let (id, reserved) = ids.next_id();
            if let Err(e) = reserved {
                self.summary.log_failures += 1;
                // At the 1st, 2nd, 4th… failure: a full disk must not flood the journal.
                if ids.failures().is_power_of_two() {
                    tracing::warn!(
                        "part IDs: {e:#} (a restart may reuse IDs from here on; {} failures so far)",
                        ids.failures()
                    );
                }
            }
            id
        });
        match self.link.show(verdict, self.summary.frames, stop) {
            Ok(()) | Err(LinkError::Stopped) => {}
            Err(LinkError::Line(why)) => {
                self.summary.gpio_failures += 1;
                tracing::error!("frame {}: the lines went to the safe state: {why}", self.summary.frames);
            }
            Err(LinkError::Late) => {
                // The gate showed ERROR for it; the record says what the lines showed, and why.
                verdict = Verdict::Error;
                late = Some(LinkError::Late);
                tracing::error!("frame {}: {}", self.summary.frames, LinkError::Late);
            }
            Err(e @ LinkError::Gone(_)) => return Err(e.into()),
        }
        let latency_ms = triggered.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(frame = self.summary.frames, ?verdict, ?score, latency_ms, "judged");
        let now = rfc3339(SystemTime::now());
        match verdict {
            Verdict::Pass => self.summary.passed += 1,
            Verdict::Fail => self.summary.failed += 1,
            Verdict::Error => self.summary.errors += 1,
        }
        self.note_error(judged.as_ref().err());
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
            threshold: recipe.threshold,
            latency_ms: latency_ms as f32,
            fps,
            passed: self.summary.passed,
            failed: self.summary.failed,
            errors: self.summary.errors,
            missed: self.summary.missed_triggers,
            recipe: recipe.name.clone(),
            alert: self.status.alert,
        };
        let pictures = self.board.as_ref().is_some_and(|b| b.wants_pictures());
        let wants_overlay = self.display.is_some() || pictures || (verdict == Verdict::Fail && self.archive.is_some());
        let drawing = Instant::now();
        let overlay = shown.filter(|_| wants_overlay).map(|image| {
            let map = judged.as_ref().ok().map(|j| (j.map, j.score));
            self.overlay.render(image, map, self.status.threshold, verdict)
        });
        let overlay_ms = if overlay.is_some() { drawing.elapsed().as_secs_f32() * 1e3 } else { f32::NAN };
        if let Some(display) = &mut self.display {
            let _ = self.screen.draw(display, overlay, &self.status);
            if let Err(e) = display.flush() {
                self.summary.display_failures += 1;
                if self.summary.display_failures == 1 {
                    let path = display.path().display();
                    tracing::warn!("display {path}: {e}");
                }
            }
        }
        if self.results.is_some() || self.board.is_some() {
            let error = judged.as_ref().err().map(|e| e.to_string()).or(late.as_ref().map(|e| e.to_string()));
            let record = ResultRecord {
                time: &now,
                part_id,
                frame: self.summary.frames,
                score,
                verdict,
                latency_ms: (latency_ms * 1e3).round() as f32 / 1e3,
                missed_triggers: self.summary.missed_triggers,
                error: error.as_deref(),
                recipe: &recipe.name,
                threshold: recipe.threshold,
                judged_by: &recipe.provenance,
            };
            // Encoded once for the result log and the plant.
            let encoded = record.write_json(&mut self.json);
            if let Some(results) = &mut self.results {
                let appended = match &encoded {
                    Ok(()) => results.append(&self.json),
                    Err(e) => Err(anyhow::anyhow!("cannot encode the record: {e}")),
                };
                if let Err(e) = appended {
                    self.summary.log_failures += 1;
                    if self.summary.log_failures == 1 {
                        tracing::warn!("result log: {e:#} (inspection goes on)");
                    }
                }
            }
            if let Some(board) = &self.board {
                let json = (board.wants_results() && encoded.is_ok()).then_some(self.json.as_slice());
                let ms = |d: Duration| if judged.is_ok() { d.as_secs_f32() * 1e3 } else { f32::NAN };
                let last = LastResult {
                    verdict,
                    score,
                    threshold: recipe.threshold,
                    part_id,
                    cause: ErrorCause::of_result(judged.as_ref().err(), late.as_ref()),
                    recipe: recipe.number,
                    latency_ms: latency_ms as f32,
                    frame: self.summary.frames,
                    unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                    stages_ms: [ms(stages.preprocess), ms(stages.inference), ms(stages.scoring), overlay_ms],
                };
                let sequence = board.publish(last, self.summary, json);
                if let Some(overlay) = overlay {
                    board.show_picture(sequence, &last, overlay, shown);
                }
                let alert = self.status.alert;
                board.update(|s| {
                    s.self_test_fault = alert == Some(Alert::SelfTest);
                    s.drift_warning = matches!(alert, Some(Alert::Drift(_)));
                });
            }
        }
        if let (Verdict::Fail, Some(archive), Some(overlay), Some(image)) = (verdict, &mut self.archive, overlay, shown)
        {
            if let Err(e) = archive.save(&now, self.summary.frames, image, overlay) {
                self.summary.images_dropped += 1;
                // At the 1st, 2nd, 4th, 8th… loss: a full disk must not flood the journal.
                if self.summary.images_dropped.is_power_of_two() {
                    tracing::warn!(
                        "failed part {} not saved: {e:#} ({} not saved so far; inspection goes on)",
                        self.summary.frames,
                        self.summary.images_dropped
                    );
                }
            }
        }
        Ok(Step::Judged(verdict))
    }

    /// Changes the status the plant and the operator read (neither: nothing).
    fn tell_plant(&self, change: impl FnOnce(&mut StationStatus)) {
        if let Some(board) = &self.board {
            board.update(change);
        }
    }

    /// Logs a change of `recipe`'s drift warning, counts and shows a raised one.
    fn note_drift(&mut self, recipe: &RecipeTag, change: DriftChange) {
        match change {
            DriftChange::Raised(shift) => {
                self.summary.drift_warnings += 1;
                // A failed self-test stays on the screen until acknowledged.
                if self.status.alert != Some(Alert::SelfTest) {
                    self.status.alert = Some(Alert::Drift(shift));
                }
                tracing::warn!(
                    "recipe {}: drift: the median score of passing parts has moved {:+.0} % of the way from the calibration's to the threshold (past `drift.bound`): check the camera, light and product before parts escape",
                    recipe.name,
                    shift * 100.0
                );
            }
            DriftChange::Cleared(shift) => {
                if matches!(self.status.alert, Some(Alert::Drift(_))) {
                    self.status.alert = None;
                }
                tracing::info!("recipe {}: drift cleared ({:+.0} %)", recipe.name, shift * 100.0);
            }
        }
    }

    /// Logs an error, once per run of the same error (with its count every
    /// [`ERROR_REPORT_EVERY`]), and the recovery when a frame is judged again.
    fn note_error(&mut self, error: Option<&FrameError>) {
        let repeats = &mut self.repeats;
        let Some(error) = error else {
            if repeats.count > 1 {
                tracing::info!("recovered after {} errors in a row", repeats.count);
            }
            repeats.count = 0;
            self.last_pauses = false;
            return;
        };
        self.last_pauses = error.pauses();
        let text = error.to_string();
        let now = Instant::now();
        if repeats.count > 0 && text == repeats.text {
            repeats.count += 1;
            if repeats.logged_at.is_some_and(|at| now.duration_since(at) >= ERROR_REPORT_EVERY) {
                tracing::error!("frame {}: ERROR: {text} (repeated {} times)", self.summary.frames, repeats.count);
                repeats.logged_at = Some(now);
            }
            return;
        }
        if repeats.count > 1 {
            tracing::info!("the error before repeated {} times", repeats.count);
        }
        tracing::error!("frame {}: ERROR: {text}", self.summary.frames);
        *repeats = RepeatedError { text, count: 1, logged_at: Some(now) };
    }
}
