//! The verdict lines: PASS, FAIL, READY, BUSY and RESULT-VALID outputs and the TRIGGER input,
//! behind embedded-hal's `OutputPin`/`InputPin`, and the state machine that drives them (the
//! order of their edges is the timing diagram in docs/ARCHITECTURE.md, "PLC handshake").
//!
//! Implementations: the Linux GPIO character device (`chardev`, feature `gpio`), a recording
//! implementation that appends every transition to a file (tests, replay, dry runs), and no
//! line at all. Active-low is applied here, once, so every implementation sees physical levels.
//! The lines belong to the station's supervisor (`station::supervisor`), which outlives any
//! fault of the inspection loop.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorKind, ErrorType, OutputPin};

use serde::Deserialize;

use crate::storage::owned::{open_owned, FileKind, GPIO_RECORD_HEADER};
use crate::verdict::Verdict;

/// A GPIO operation failed; names the line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("GPIO {line}: {reason}")]
pub struct GpioError {
    /// The line (`"fail"`, `"/dev/gpiochip0 line 17"`).
    pub line: String,
    /// Why.
    pub reason: String,
}

impl embedded_hal::digital::Error for GpioError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// An output line as the station drives it.
pub type Output = Box<dyn OutputPin<Error = GpioError> + Send>;
/// The outputs' names, in the order [`VerdictLines::new`] takes them (and the GPIO record
/// writes them).
pub const OUTPUT_NAMES: [&str; 5] = ["pass", "fail", "ready", "busy", "valid"];

/// How verdicts are shown on the PASS and FAIL outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    /// The line of the last verdict stays asserted until the next verdict.
    #[default]
    Level,
    /// The line of each verdict is asserted for the pulse length.
    Pulse,
}

/// Output levels (asserted or not) of the safe state. PASS and READY are never asserted in it
/// (the configuration refuses it): the safe state must never read as a judged good part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafeState {
    /// READY asserted.
    pub ready: bool,
    /// PASS asserted.
    pub pass: bool,
    /// FAIL asserted.
    pub fail: bool,
}

impl Default for SafeState {
    fn default() -> Self {
        SafeState { ready: false, pass: false, fail: true }
    }
}

/// The handshake around each result: PASS/FAIL (or the safe state, for ERROR) settle for
/// `settle`, then RESULT-VALID is asserted for `valid`, then it and BUSY drop. A `valid` of zero
/// turns the strobe off (BUSY then drops as the verdict is shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// From the verdict lines' change to RESULT-VALID rising.
    pub settle: Duration,
    /// How long RESULT-VALID stays asserted.
    pub valid: Duration,
}

/// How the verdict lines behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSettings {
    /// Outputs are asserted low.
    pub active_low: bool,
    /// Level or pulse.
    pub mode: OutputMode,
    /// Pulse length.
    pub pulse: Duration,
    /// The outputs at start, on ERROR, on a missed deadline and at exit.
    pub safe: SafeState,
    /// BUSY and RESULT-VALID around each result.
    pub handshake: Handshake,
}

/// PASS, FAIL, READY, BUSY and RESULT-VALID outputs with the verdict semantics: level or pulse,
/// active-low, a safe state (by default READY low, FAIL asserted; PASS and READY are never
/// asserted in it; BUSY asserted, RESULT-VALID not) for start-up, a loop that misses its
/// deadline, and exit, and the handshake around each result (ERROR verdicts included).
///
/// A state machine with time passed in: whoever owns it (the supervisor) ends pulses and
/// handshake phases at [`VerdictLines::next_deadline`] by calling [`VerdictLines::poll`]. A
/// verdict asked for while the last result's handshake or pulse runs waits for it (every
/// strobe and pulse gets its full length) and is shown by `poll`.
pub struct VerdictLines {
    outputs: [Output; 5],
    settings: LineSettings,
    /// The asserted pulse line and when it ends.
    pulsing: Option<(Line, Instant)>,
    /// The running handshake phase.
    handshake: Option<Phase>,
    /// A verdict waiting for the running handshake or pulse to end.
    pending: Option<Verdict>,
    /// A part was triggered whose verdict has not been asked for yet (BUSY stays asserted).
    part_open: bool,
    /// The loop said it waits for a trigger, and has taken none since (BUSY may drop).
    armed: bool,
    /// Whether the lines are in the safe state (not READY).
    in_safe_state: bool,
    /// Last logical level written to each output (none: unknown), to skip repeats.
    levels: [Option<bool>; 5],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Pass,
    Fail,
    Ready,
    Busy,
    Valid,
}

/// Where a result's handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The verdict lines settle until then; RESULT-VALID rises at its end.
    Settling(Instant),
    /// RESULT-VALID is asserted until then.
    Valid(Instant),
}

impl Phase {
    fn ends(self) -> Instant {
        match self {
            Phase::Settling(at) | Phase::Valid(at) => at,
        }
    }
}

impl VerdictLines {
    /// Drives the outputs named in [`OUTPUT_NAMES`] order; call
    /// [`VerdictLines::enter_safe_state`] before anything else.
    pub fn new(outputs: [Output; 5], settings: LineSettings) -> Self {
        VerdictLines {
            outputs,
            settings,
            pulsing: None,
            handshake: None,
            pending: None,
            part_open: false,
            armed: false,
            in_safe_state: false,
            levels: [None; 5],
        }
    }

    /// Writes a logical level, unless the line already has it.
    fn set(&mut self, line: Line, asserted: bool) -> Result<(), GpioError> {
        if self.levels[line as usize] == Some(asserted) {
            return Ok(());
        }
        self.force(line, asserted)
    }

    /// Writes a logical level.
    fn force(&mut self, line: Line, asserted: bool) -> Result<(), GpioError> {
        let pin = &mut self.outputs[line as usize];
        // Unknown until the write succeeds.
        self.levels[line as usize] = None;
        if asserted != self.settings.active_low {
            pin.set_high()?;
        } else {
            pin.set_low()?;
        }
        self.levels[line as usize] = Some(asserted);
        Ok(())
    }

    /// The safe state: outputs as configured (default READY low, PASS low, FAIL asserted), BUSY
    /// asserted and RESULT-VALID not; a running pulse or handshake is cut short and a waiting
    /// verdict dropped. Every line is written (even one believed to be there already) and even
    /// when another fails; the first error is returned.
    pub fn enter_safe_state(&mut self) -> Result<(), GpioError> {
        self.pulsing = None;
        self.handshake = None;
        self.pending = None;
        self.in_safe_state = true;
        let safe = self.settings.safe;
        let results = [
            self.force(Line::Busy, true),
            self.force(Line::Valid, false),
            self.force(Line::Ready, safe.ready),
            self.force(Line::Pass, safe.pass),
            self.force(Line::Fail, safe.fail),
        ];
        results.into_iter().collect()
    }

    /// The loop waits for a trigger: BUSY drops (unless a part or a result is under way).
    pub fn trigger_ready(&mut self) -> Result<(), GpioError> {
        self.armed = true;
        self.update_busy()
    }

    /// BUSY as it should be: up unless the loop waits for a trigger and no part or result is
    /// under way (the safe state asserted it; the loop was heard from again).
    pub fn update_busy(&mut self) -> Result<(), GpioError> {
        let busy = !self.armed || self.part_open || self.handshake.is_some() || self.pending.is_some();
        self.set(Line::Busy, busy)
    }

    /// The loop is busy between parts (a self-test): BUSY goes up until it waits again.
    pub fn busy(&mut self) -> Result<(), GpioError> {
        self.armed = false;
        self.update_busy()
    }

    /// The open part was judged, its verdict kept for the reject gate: BUSY drops once the
    /// loop waits for the next trigger, unless a result is being shown.
    pub fn part_judged(&mut self) -> Result<(), GpioError> {
        self.part_open = false;
        self.update_busy()
    }

    /// Whether a PASS or FAIL asked for now would go on the lines at once (no result's strobe,
    /// pulse or waiting verdict is in the way).
    pub fn can_show_now(&self, now: Instant) -> bool {
        self.pending.is_none() && !self.must_wait(Verdict::Pass, now)
    }

    /// Whether no result is being shown: no pulse, strobe or waiting verdict (the safe state
    /// entered now would cut none short).
    pub fn is_idle(&self) -> bool {
        self.pulsing.is_none() && self.handshake.is_none() && self.pending.is_none()
    }

    /// Whether a result asked for now would not have to replace one already waiting.
    pub fn can_take(&self) -> bool {
        self.pending.is_none()
    }

    /// A part was triggered: BUSY is asserted until its result's handshake ends and the loop
    /// waits for the next trigger.
    pub fn part_started(&mut self) -> Result<(), GpioError> {
        self.part_open = true;
        self.armed = false;
        self.set(Line::Busy, true)
    }

    /// Whether the lines are in the safe state.
    pub(crate) fn is_safe(&self) -> bool {
        self.in_safe_state
    }

    /// Asks for the open part's verdict at `now`: shown now, or when the last result's
    /// handshake (and, for PASS/FAIL, its pulse) ends; ERROR is the safe state. Its handshake
    /// follows. Returns whether it is on the lines now.
    pub fn request(&mut self, verdict: Verdict, now: Instant) -> Result<bool, GpioError> {
        self.part_open = false;
        self.request_at_gate(verdict, now)
    }

    /// Asks for the verdict of a part judged earlier that has reached the reject gate
    /// (`station::reject`); BUSY stays with the part being judged now. Otherwise as
    /// [`VerdictLines::request`].
    pub fn request_at_gate(&mut self, verdict: Verdict, now: Instant) -> Result<bool, GpioError> {
        if self.must_wait(verdict, now) {
            self.pending = Some(verdict);
            return Ok(false);
        }
        self.present(verdict, now)?;
        Ok(true)
    }

    /// Whether `verdict` must wait for the last result: its handshake runs, or (PASS/FAIL only:
    /// ERROR cuts a pulse short) its pulse does.
    fn must_wait(&self, verdict: Verdict, now: Instant) -> bool {
        self.handshake.is_some() || (verdict != Verdict::Error && self.pulsing.is_some_and(|(_, ends)| now < ends))
    }

    /// Puts `verdict` on the lines and starts its handshake.
    fn present(&mut self, verdict: Verdict, now: Instant) -> Result<(), GpioError> {
        if verdict == Verdict::Error {
            self.enter_safe_state()?;
        } else {
            self.show(verdict, now)?;
        }
        let handshake = self.settings.handshake;
        if handshake.valid.is_zero() {
            return self.update_busy();
        }
        self.handshake = Some(Phase::Settling(written_by(now) + handshake.settle));
        Ok(())
    }

    /// Leaves the safe state (PASS and FAIL cleared, READY asserted) if in it, and asserts the
    /// verdict's line (level: until the next verdict; pulse: for the pulse length).
    fn show(&mut self, verdict: Verdict, now: Instant) -> Result<(), GpioError> {
        let line = if verdict == Verdict::Pass { Line::Pass } else { Line::Fail };
        self.end_pulse()?;
        let other = if line == Line::Pass { Line::Fail } else { Line::Pass };
        self.set(other, false)?;
        if self.in_safe_state {
            self.set(line, false)?;
            self.set(Line::Ready, true)?;
            self.in_safe_state = false;
        }
        self.set(line, true)?;
        if self.settings.mode == OutputMode::Pulse {
            self.pulsing = Some((line, now + self.settings.pulse));
        }
        Ok(())
    }

    /// Moves the handshake on, ends a pulse whose time is up and shows a waiting verdict;
    /// returns the verdict shown, if one was. Call it at [`VerdictLines::next_deadline`].
    pub fn poll(&mut self, now: Instant) -> Result<Option<Verdict>, GpioError> {
        match self.handshake {
            Some(Phase::Settling(at)) if now >= at => {
                self.set(Line::Valid, true)?;
                self.handshake = Some(Phase::Valid(written_by(now) + self.settings.handshake.valid));
            }
            Some(Phase::Valid(at)) if now >= at => {
                self.set(Line::Valid, false)?;
                self.handshake = None;
                self.update_busy()?;
            }
            _ => {}
        }
        // A pulse lasts until its result's strobe has ended, however late that is.
        if self.handshake.is_none() && self.pulsing.is_some_and(|(_, ends)| now >= ends) {
            self.end_pulse()?;
        }
        match self.pending {
            Some(verdict) if !self.must_wait(verdict, now) => {
                self.pending = None;
                self.present(verdict, now).map(|()| Some(verdict))
            }
            _ => Ok(None),
        }
    }

    /// Lets the last result's handshake run to its end (the worker is gone: a verdict waiting
    /// for it is dropped), so the PLC sees that result before the lines go to the safe state.
    /// Takes at most `result_settle_ms` + `result_valid_ms`.
    pub fn finish_handshake(&mut self) -> Result<(), GpioError> {
        self.pending = None;
        while let Some(phase) = self.handshake {
            std::thread::sleep(phase.ends().saturating_duration_since(Instant::now()));
            self.poll(Instant::now())?;
        }
        Ok(())
    }

    /// When the running handshake phase ends, or else the running pulse, if one is running.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.handshake.map(Phase::ends).or(self.pulsing.map(|(_, ends)| ends))
    }

    fn end_pulse(&mut self) -> Result<(), GpioError> {
        match self.pulsing.take() {
            Some((line, _)) => self.set(line, false),
            None => Ok(()),
        }
    }
}

/// When lines written at `now` are settled: `now`, or the present if the writes took longer
/// (handshake widths are counted from the end of the writes, so they are minimums).
fn written_by(now: Instant) -> Instant {
    now.max(Instant::now())
}

impl Drop for VerdictLines {
    /// The lines are left in the safe state however their owner ends (return, error, panic).
    fn drop(&mut self) {
        let _ = self.enter_safe_state();
    }
}

/// Appends `<milliseconds since start> <line> <0|1>` to a file for every level written, after
/// a header line; the lines of one station share the file. Each record is one `write` call.
pub struct Recorder {
    file: File,
    started: Instant,
}

impl Recorder {
    /// Starts the record at `path`, locked: a new file, or an earlier GPIO record (emptied and
    /// begun again); any other file there is refused, never truncated.
    pub fn create(path: &Path) -> Result<Arc<Mutex<Recorder>>, GpioError> {
        let error = |reason: String| GpioError { line: path.display().to_string(), reason };
        let mut file = open_owned(path, FileKind::GpioRecord, false).map_err(|e| error(e.to_string()))?;
        file.set_len(0)
            .and_then(|()| file.write_all(GPIO_RECORD_HEADER))
            .map_err(|e| error(format!("cannot start: {e}")))?;
        Ok(Arc::new(Mutex::new(Recorder { file, started: Instant::now() })))
    }

    fn record(&mut self, line: &'static str, high: bool) -> Result<(), GpioError> {
        use std::fmt::Write as _;
        let mut record = heapless::String::<64>::new();
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
        let _ = writeln!(record, "{ms:.3} {line} {}", u8::from(high));
        self.file
            .write_all(record.as_bytes())
            .map_err(|e| GpioError { line: line.to_string(), reason: format!("cannot record: {e}") })
    }
}

/// An output line that records its levels.
pub struct RecordingPin {
    name: &'static str,
    recorder: Arc<Mutex<Recorder>>,
}

impl RecordingPin {
    /// A line called `name` recording into `recorder`.
    pub fn new(name: &'static str, recorder: Arc<Mutex<Recorder>>) -> Self {
        RecordingPin { name, recorder }
    }

    fn record(&self, high: bool) -> Result<(), GpioError> {
        let mut recorder = self.recorder.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        recorder.record(self.name, high)
    }
}

impl ErrorType for RecordingPin {
    type Error = GpioError;
}

impl OutputPin for RecordingPin {
    fn set_low(&mut self) -> Result<(), GpioError> {
        self.record(false)
    }

    fn set_high(&mut self) -> Result<(), GpioError> {
        self.record(true)
    }
}

/// Lines of the Linux GPIO character device, through `gpiocdev`.
/// An output that goes nowhere (no GPIO configured, or a handshake line not wired).
pub struct NoLine;

impl ErrorType for NoLine {
    type Error = GpioError;
}

impl OutputPin for NoLine {
    fn set_low(&mut self) -> Result<(), GpioError> {
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), GpioError> {
        Ok(())
    }
}

/// Lines of a Linux GPIO character device (`/dev/gpiochipN`, through gpiocdev), as
/// embedded-hal pins.
#[cfg(all(feature = "gpio", target_os = "linux"))]
pub mod chardev {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use embedded_hal::digital::{ErrorType, InputPin, OutputPin};
    use gpiocdev::line::{EdgeDetection, EdgeKind, EventClock, Value};
    use gpiocdev::request::Builder;
    use gpiocdev::Request;

    use super::GpioError;
    use crate::station::trigger::{EdgeSource, InputEvent, LevelChange};

    /// One requested line of a GPIO chip.
    pub struct ChardevLine {
        request: Request,
        offset: u32,
        name: String,
    }

    impl ChardevLine {
        /// Requests `offset` on `chip` as an output at the physical level `high` from the
        /// first instant (the safe state's level: no glitch through another).
        pub fn output(chip: &Path, offset: u32, high: bool) -> Result<ChardevLine, GpioError> {
            let value = if high { Value::Active } else { Value::Inactive };
            ChardevLine::request(chip, offset, |line| line.as_output(value))
        }

        /// Requests `offset` on `chip` as an input (tests on a board read outputs back with it).
        pub fn input(chip: &Path, offset: u32) -> Result<ChardevLine, GpioError> {
            ChardevLine::request(chip, offset, Builder::as_input)
        }

        /// Requests one line for clipada, its direction set by `direction`.
        fn request(
            chip: &Path,
            offset: u32,
            direction: impl FnOnce(&mut Builder) -> &mut Builder,
        ) -> Result<ChardevLine, GpioError> {
            let name = format!("{} line {offset}", chip.display());
            let mut builder = Request::builder();
            builder.on_chip(chip).with_consumer("clipada").with_line(offset);
            let request = direction(&mut builder)
                .request()
                .map_err(|e| GpioError { line: name.clone(), reason: e.to_string() })?;
            Ok(ChardevLine { request, offset, name })
        }

        fn error(&self, e: gpiocdev::Error) -> GpioError {
            GpioError { line: self.name.clone(), reason: e.to_string() }
        }
    }

    impl ErrorType for ChardevLine {
        type Error = GpioError;
    }

    /// A GPIO chip's input line as kernel-dated edge events (`trigger::EdgeSource`), debounced
    /// by the kernel where it can (gpiolib-cdev debounces in software on chips that cannot).
    pub struct ChardevEdges {
        line: ChardevLine,
        debounced: bool,
        /// The kernel's sequence number of the last event on this line (from 1; always 0 on the
        /// v1 ABI), to count lost ones.
        last_seqno: u32,
    }

    impl ChardevEdges {
        /// Requests `offset` on `chip` as an input with edge events on both edges, debounced
        /// by `debounce` in the kernel; a kernel that refuses the debounce gets a request
        /// without it, and the listener debounces in software.
        pub fn open(chip: &Path, offset: u32, debounce: Duration) -> Result<ChardevEdges, GpioError> {
            fn edges(builder: &mut Builder) -> &mut Builder {
                builder.as_input().with_edge_detection(EdgeDetection::BothEdges).with_event_clock(EventClock::Monotonic)
            }
            if !debounce.is_zero() {
                if let Ok(line) = ChardevLine::request(chip, offset, |b| edges(b).with_debounce_period(debounce)) {
                    return Ok(ChardevEdges { line, debounced: true, last_seqno: 0 });
                }
            }
            let line = ChardevLine::request(chip, offset, edges)?;
            Ok(ChardevEdges { line, debounced: debounce.is_zero(), last_seqno: 0 })
        }
    }

    /// The `Instant` of a `CLOCK_MONOTONIC` time in nanoseconds (std's `Instant` is that clock
    /// on Linux).
    fn instant_of(monotonic_ns: u64) -> Instant {
        let now = Instant::now();
        let clock = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let now_ns = (clock.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(clock.tv_nsec as u64);
        now.checked_sub(Duration::from_nanos(now_ns.saturating_sub(monotonic_ns))).unwrap_or(now)
    }

    impl EdgeSource for ChardevEdges {
        fn level(&mut self) -> Result<bool, GpioError> {
            self.line.is_high()
        }

        fn next(&mut self, timeout: Duration) -> Result<InputEvent, GpioError> {
            let request = &self.line.request;
            if !request.wait_edge_event(timeout).map_err(|e| self.line.error(e))? {
                return Ok(InputEvent::Quiet);
            }
            let event = request.read_edge_event().map_err(|e| self.line.error(e))?;
            let lost_before = event.line_seqno.wrapping_sub(self.last_seqno).saturating_sub(1);
            self.last_seqno = event.line_seqno;
            let change = LevelChange { at: instant_of(event.timestamp_ns), high: event.kind == EdgeKind::Rising };
            Ok(InputEvent::Change { change, lost_before })
        }

        fn debounced(&self) -> bool {
            self.debounced
        }
    }

    /// The recipe select inputs: lines of a chip read as a binary number, bit 0 first (a line at
    /// its high physical level is a 1).
    pub struct ChardevSelect {
        lines: Vec<ChardevLine>,
    }

    impl ChardevSelect {
        /// Requests `offsets` on `chip` as inputs.
        pub fn open(chip: &Path, offsets: &[u32]) -> Result<ChardevSelect, GpioError> {
            let lines = offsets.iter().map(|offset| ChardevLine::input(chip, *offset)).collect::<Result<_, _>>()?;
            Ok(ChardevSelect { lines })
        }
    }

    impl crate::station::recipe::SelectInput for ChardevSelect {
        fn code(&mut self) -> Result<u32, GpioError> {
            let mut code = 0;
            for (bit, line) in self.lines.iter_mut().enumerate() {
                code |= u32::from(line.is_high()?) << bit;
            }
            Ok(code)
        }
    }

    impl OutputPin for ChardevLine {
        fn set_low(&mut self) -> Result<(), GpioError> {
            self.request.set_value(self.offset, Value::Inactive).map_err(|e| self.error(e))
        }

        fn set_high(&mut self) -> Result<(), GpioError> {
            self.request.set_value(self.offset, Value::Active).map_err(|e| self.error(e))
        }
    }

    impl InputPin for ChardevLine {
        fn is_high(&mut self) -> Result<bool, GpioError> {
            self.request.value(self.offset).map(|v| v == Value::Active).map_err(|e| self.error(e))
        }

        fn is_low(&mut self) -> Result<bool, GpioError> {
            self.is_high().map(|high| !high)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every physical level written, as `(line, high)`.
    type Levels = Arc<Mutex<Vec<(&'static str, bool)>>>;

    struct TestPin {
        name: &'static str,
        levels: Levels,
        broken: bool,
    }

    impl ErrorType for TestPin {
        type Error = GpioError;
    }

    impl OutputPin for TestPin {
        fn set_low(&mut self) -> Result<(), GpioError> {
            self.write(false)
        }
        fn set_high(&mut self) -> Result<(), GpioError> {
            self.write(true)
        }
    }

    impl TestPin {
        fn write(&mut self, high: bool) -> Result<(), GpioError> {
            if self.broken {
                return Err(GpioError { line: self.name.into(), reason: "broken".into() });
            }
            self.levels.lock().unwrap().push((self.name, high));
            Ok(())
        }
    }

    const PULSE: Duration = Duration::from_millis(30);

    fn lines(mode: OutputMode, active_low: bool, broken_pass: bool) -> (VerdictLines, Levels) {
        handshaking(mode, active_low, broken_pass, Handshake { settle: Duration::ZERO, valid: Duration::ZERO })
    }

    fn handshaking(
        mode: OutputMode,
        active_low: bool,
        broken_pass: bool,
        handshake: Handshake,
    ) -> (VerdictLines, Levels) {
        let levels = Levels::default();
        let outputs = OUTPUT_NAMES.map(|name| {
            Box::new(TestPin { name, levels: levels.clone(), broken: broken_pass && name == "pass" }) as Output
        });
        let settings = LineSettings { active_low, mode, pulse: PULSE, safe: SafeState::default(), handshake };
        (VerdictLines::new(outputs, settings), levels)
    }

    /// The physical level each line had last.
    fn last(levels: &Levels) -> [(&'static str, Option<bool>); 3] {
        let levels = levels.lock().unwrap();
        ["pass", "fail", "ready"].map(|name| (name, levels.iter().rev().find(|(n, _)| *n == name).map(|(_, h)| *h)))
    }

    const SAFE: [(&str, Option<bool>); 3] = [("pass", Some(false)), ("fail", Some(true)), ("ready", Some(false))];

    #[test]
    fn level_outputs_hold_the_last_verdict_and_errors_enter_the_safe_state() {
        let (mut lines, levels) = lines(OutputMode::Level, false, false);
        let now = Instant::now();
        lines.enter_safe_state().unwrap();
        assert_eq!(last(&levels), SAFE);
        assert!(lines.request(Verdict::Pass, now).unwrap());
        assert_eq!(last(&levels), [("pass", Some(true)), ("fail", Some(false)), ("ready", Some(true))]);
        lines.request(Verdict::Fail, now).unwrap();
        assert_eq!(last(&levels), [("pass", Some(false)), ("fail", Some(true)), ("ready", Some(true))]);
        lines.request(Verdict::Error, now).unwrap();
        assert_eq!(last(&levels), SAFE);
        // Leaving the safe state for a FAIL makes a fresh FAIL edge, so the PLC sees this part.
        let before = levels.lock().unwrap().len();
        lines.request(Verdict::Fail, now).unwrap();
        let after: Vec<_> = levels.lock().unwrap()[before..].to_vec();
        assert_eq!(after, [("fail", false), ("ready", true), ("fail", true)]);
        drop(lines);
        assert_eq!(last(&levels), SAFE, "safe on drop");
    }

    #[test]
    fn active_low_inverts_every_physical_level() {
        let (mut lines, levels) = lines(OutputMode::Level, true, false);
        lines.enter_safe_state().unwrap();
        assert_eq!(last(&levels), [("pass", Some(true)), ("fail", Some(false)), ("ready", Some(true))]);
        lines.request(Verdict::Pass, Instant::now()).unwrap();
        assert_eq!(last(&levels), [("pass", Some(false)), ("fail", Some(true)), ("ready", Some(false))]);
    }

    #[test]
    fn pulses_end_at_their_deadline_and_a_verdict_asked_meanwhile_waits_its_turn() {
        let (mut lines, levels) = lines(OutputMode::Pulse, false, false);
        lines.enter_safe_state().unwrap();
        let shown = Instant::now();
        assert!(lines.request(Verdict::Pass, shown).unwrap());
        let deadline = lines.next_deadline().expect("a pulse runs");
        assert_eq!(deadline, shown + PULSE);
        assert!(!lines.request(Verdict::Fail, shown + Duration::from_millis(1)).unwrap(), "waits for the pulse");
        assert_eq!(lines.poll(deadline - Duration::from_millis(1)).unwrap(), None);
        assert_eq!(last(&levels)[0], ("pass", Some(true)), "not before the deadline");
        assert_eq!(lines.poll(deadline).unwrap(), Some(Verdict::Fail), "the waiting verdict follows");
        assert_eq!(last(&levels)[..2], [("pass", Some(false)), ("fail", Some(true))]);
        assert_eq!(lines.next_deadline(), Some(deadline + PULSE), "with a full pulse of its own");
        assert_eq!(lines.poll(deadline + PULSE).unwrap(), None);
        assert_eq!(last(&levels), [("pass", Some(false)), ("fail", Some(false)), ("ready", Some(true))]);
    }

    #[test]
    fn an_error_cuts_a_running_pulse_and_drops_a_waiting_verdict() {
        let (mut lines, levels) = lines(OutputMode::Pulse, false, false);
        lines.enter_safe_state().unwrap();
        let now = Instant::now();
        lines.request(Verdict::Pass, now).unwrap();
        lines.request(Verdict::Pass, now).unwrap();
        lines.request(Verdict::Error, now).unwrap();
        assert_eq!(last(&levels), SAFE);
        assert_eq!(lines.poll(now + PULSE).unwrap(), None, "the waiting PASS is gone");
        assert_eq!(last(&levels), SAFE);
    }

    #[test]
    fn a_failing_line_is_reported_and_the_others_still_reach_the_safe_state() {
        let (mut lines, levels) = lines(OutputMode::Level, false, true);
        let error = lines.enter_safe_state().unwrap_err();
        assert_eq!(error.line, "pass");
        assert_eq!(last(&levels)[1..], [("fail", Some(true)), ("ready", Some(false))]);
    }

    /// Takes the levels written since the last call, as `name level` words.
    fn written(levels: &Levels) -> Vec<String> {
        levels.lock().unwrap().drain(..).map(|(name, high)| format!("{name} {}", u8::from(high))).collect()
    }

    #[test]
    fn each_result_is_strobed_after_it_settles_and_busy_spans_the_part() {
        let handshake = Handshake { settle: Duration::from_millis(2), valid: Duration::from_millis(20) };
        let (mut lines, levels) = handshaking(OutputMode::Level, false, false, handshake);
        // In the future: the clock passed in is ahead of the writes' own.
        let t0 = Instant::now() + Duration::from_secs(60);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        lines.enter_safe_state().unwrap();
        assert_eq!(written(&levels), ["busy 1", "valid 0", "ready 0", "pass 0", "fail 1"]);
        lines.trigger_ready().unwrap();
        lines.part_started().unwrap();
        assert_eq!(written(&levels), ["busy 0", "busy 1"]);
        assert!(lines.request(Verdict::Pass, ms(0)).unwrap());
        assert_eq!(written(&levels), ["fail 0", "ready 1", "pass 1"], "the verdict first");
        // The next part starts and is judged while this result is strobed: it waits.
        lines.part_started().unwrap();
        assert!(!lines.request(Verdict::Pass, ms(1)).unwrap());
        assert_eq!(lines.next_deadline(), Some(ms(2)));
        assert_eq!(lines.poll(ms(1)).unwrap(), None);
        assert_eq!(lines.poll(ms(2)).unwrap(), None);
        assert_eq!(written(&levels), ["valid 1"], "strobed once settled");
        assert_eq!(lines.poll(ms(21)).unwrap(), None);
        assert!(written(&levels).is_empty(), "held for its full width");
        assert_eq!(lines.poll(ms(22)).unwrap(), Some(Verdict::Pass), "the waiting verdict follows");
        // An equal verdict makes no edge on PASS, but a new strobe: the PLC sees every result.
        assert_eq!(written(&levels), ["valid 0"], "BUSY stays up: a part is under way");
        // Its verdict on the lines, the loop waits for the next trigger: BUSY waits for the strobe.
        lines.trigger_ready().unwrap();
        lines.poll(ms(24)).unwrap();
        lines.poll(ms(44)).unwrap();
        assert_eq!(written(&levels), ["valid 1", "valid 0", "busy 0"]);
        // An ERROR is a result too: the safe state, then its strobe, then BUSY drops.
        lines.part_started().unwrap();
        assert!(lines.request(Verdict::Error, ms(50)).unwrap());
        lines.trigger_ready().unwrap();
        lines.poll(ms(52)).unwrap();
        lines.poll(ms(72)).unwrap();
        assert_eq!(
            written(&levels),
            ["busy 1", "busy 1", "valid 0", "ready 0", "pass 0", "fail 1", "valid 1", "valid 0", "busy 0"]
        );
    }

    #[test]
    fn busy_stays_up_until_the_loop_waits_for_the_next_trigger() {
        // Regression: BUSY fell at the end of the strobe (or, at a reject gate, as soon as the
        // part was judged) while the loop was still logging, drawing and saving the part; a
        // trigger the PLC gave then, with BUSY low, came before the loop waited and was an
        // ERROR (a missed trigger).
        for valid in [Duration::ZERO, Duration::from_millis(20)] {
            let handshake = Handshake { settle: Duration::from_millis(2), valid };
            let (mut lines, levels) = handshaking(OutputMode::Level, false, false, handshake);
            let t0 = Instant::now() + Duration::from_secs(60);
            let ms = |n: u64| t0 + Duration::from_millis(n);
            lines.enter_safe_state().unwrap();
            lines.trigger_ready().unwrap();
            lines.part_started().unwrap();
            written(&levels);
            lines.request(Verdict::Pass, ms(0)).unwrap();
            lines.poll(ms(2)).unwrap();
            lines.poll(ms(22)).unwrap();
            assert!(!written(&levels).contains(&"busy 0".to_string()), "the loop is not waiting yet");
            lines.trigger_ready().unwrap();
            assert_eq!(written(&levels), ["busy 0"]);
            // At a gate: the part judged, its verdict kept for the gate; BUSY waits for the loop.
            lines.part_started().unwrap();
            lines.part_judged().unwrap();
            assert_eq!(written(&levels), ["busy 1"]);
            lines.trigger_ready().unwrap();
            assert_eq!(written(&levels), ["busy 0"]);
        }
    }

    #[test]
    fn the_gpio_record_starts_with_its_header_and_refuses_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gpio.log");
        let recorder = Recorder::create(&path).unwrap();
        RecordingPin::new("pass", recorder.clone()).set_high().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# clipada gpio record") && text.trim_end().ends_with("pass 1"), "{text}");
        drop(recorder);
        Recorder::create(&path).expect("its own record is begun again");
        // Regression: `gpio.record` naming a result log used to wipe it.
        let log = dir.path().join("results.jsonl");
        std::fs::write(&log, "{\"verdict\":\"pass\"}\n").unwrap();
        assert!(Recorder::create(&log).is_err());
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "{\"verdict\":\"pass\"}\n");
    }
}
