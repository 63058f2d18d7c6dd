//! The verdict lines: PASS, FAIL and READY outputs and the TRIGGER input, behind
//! embedded-hal's `OutputPin`/`InputPin`, and the state machine that drives them.
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

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};

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
/// An input line as the station reads it.
pub(crate) type Input = Box<dyn InputPin<Error = GpioError> + Send>;

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
}

/// PASS, FAIL and READY outputs with the verdict semantics: level or pulse, active-low, and a
/// safe state (by default READY low, FAIL asserted; PASS and READY are never asserted in it)
/// for start-up, ERROR verdicts, a loop that misses its deadline, and exit.
///
/// A state machine with time passed in: whoever owns it (the supervisor) ends pulses at
/// [`VerdictLines::next_deadline`] by calling [`VerdictLines::poll`]. A verdict asked for while
/// a pulse runs waits for it (every pulse gets its full length) and is shown by `poll`.
pub struct VerdictLines {
    pass: Output,
    fail: Output,
    ready: Output,
    settings: LineSettings,
    /// The asserted pulse line and when it ends.
    pulsing: Option<(Line, Instant)>,
    /// A verdict waiting for the running pulse to end.
    pending: Option<Verdict>,
    /// Whether the lines are in the safe state (not READY).
    in_safe_state: bool,
    /// Last logical level written to PASS, FAIL, READY (none: unknown), to skip repeats.
    levels: [Option<bool>; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Pass,
    Fail,
    Ready,
}

impl VerdictLines {
    /// Drives `pass`, `fail` and `ready`; call [`VerdictLines::enter_safe_state`] before anything else.
    pub fn new([pass, fail, ready]: [Output; 3], settings: LineSettings) -> Self {
        VerdictLines {
            pass,
            fail,
            ready,
            settings,
            pulsing: None,
            pending: None,
            in_safe_state: false,
            levels: [None; 3],
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
        let pin = match line {
            Line::Pass => &mut self.pass,
            Line::Fail => &mut self.fail,
            Line::Ready => &mut self.ready,
        };
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

    /// The safe state: outputs as configured (default READY low, PASS low, FAIL asserted); a
    /// running pulse is cut short and a waiting verdict dropped. Every line is written (even
    /// one believed to be there already) and even when another fails; the first error is
    /// returned.
    pub fn enter_safe_state(&mut self) -> Result<(), GpioError> {
        self.pulsing = None;
        self.pending = None;
        self.in_safe_state = true;
        let safe = self.settings.safe;
        let results =
            [self.force(Line::Ready, safe.ready), self.force(Line::Pass, safe.pass), self.force(Line::Fail, safe.fail)];
        results.into_iter().collect()
    }

    /// Whether the lines are in the safe state.
    pub(crate) fn is_safe(&self) -> bool {
        self.in_safe_state
    }

    /// Asks for one verdict at `now`: ERROR enters the safe state at once; PASS/FAIL are shown
    /// now, or when the running pulse ends. Returns whether it is on the lines now.
    pub fn request(&mut self, verdict: Verdict, now: Instant) -> Result<bool, GpioError> {
        if verdict == Verdict::Error {
            self.enter_safe_state()?;
            return Ok(true);
        }
        if self.pulsing.is_some_and(|(_, ends)| now < ends) {
            self.pending = Some(verdict);
            return Ok(false);
        }
        self.show(verdict, now)?;
        Ok(true)
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

    /// Ends a pulse whose time is up and shows a waiting verdict; returns the verdict shown, if
    /// one was. Call it at [`VerdictLines::next_deadline`].
    pub fn poll(&mut self, now: Instant) -> Result<Option<Verdict>, GpioError> {
        match self.pulsing {
            Some((_, ends)) if now >= ends => {
                self.end_pulse()?;
                match self.pending.take() {
                    Some(verdict) => self.show(verdict, now).map(|()| Some(verdict)),
                    None => Ok(None),
                }
            }
            _ => Ok(None),
        }
    }

    /// When the running pulse ends, if one is running.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pulsing.map(|(_, ends)| ends)
    }

    fn end_pulse(&mut self) -> Result<(), GpioError> {
        match self.pulsing.take() {
            Some((line, _)) => self.set(line, false),
            None => Ok(()),
        }
    }
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
/// An output that goes nowhere (no GPIO configured).
pub(crate) struct NoLine;

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

    use embedded_hal::digital::{ErrorType, InputPin, OutputPin};
    use gpiocdev::line::Value;
    use gpiocdev::request::Builder;
    use gpiocdev::Request;

    use super::GpioError;

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

        /// Requests `offset` on `chip` as an input.
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
        let levels = Levels::default();
        let pin = |name, broken| Box::new(TestPin { name, levels: levels.clone(), broken }) as Output;
        let outputs = [pin("pass", broken_pass), pin("fail", false), pin("ready", false)];
        let settings = LineSettings { active_low, mode, pulse: PULSE, safe: SafeState::default() };
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
