//! The verdict lines: PASS, FAIL and READY outputs and the TRIGGER input, behind
//! embedded-hal's `OutputPin`/`InputPin`, and the state machine that drives them.
//!
//! Implementations: the Linux GPIO character device (`chardev`, feature `gpio`), and a
//! recording implementation that appends every transition to a file (tests, replay, dry runs).
//! Active-low is applied here, once, so every implementation sees physical levels.
//! [`SignalLines`] owns the lines and a timer thread that ends pulses on time, however long
//! the frame being judged takes.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};

use super::config::{OutputMode, SafeState};
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
pub type Input = Box<dyn InputPin<Error = GpioError> + Send>;

/// PASS, FAIL and READY outputs with the verdict semantics: level or pulse, active-low, and a
/// safe state (by default READY low, FAIL asserted) for start-up, ERROR verdicts and exit.
pub struct VerdictLines {
    pass: Output,
    fail: Output,
    ready: Output,
    active_low: bool,
    mode: OutputMode,
    pulse: Duration,
    safe: SafeState,
    /// The asserted pulse line and when it ends.
    pulsing: Option<(Line, Instant)>,
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
    pub fn new(
        [pass, fail, ready]: [Output; 3],
        active_low: bool,
        mode: OutputMode,
        pulse: Duration,
        safe: SafeState,
    ) -> Self {
        VerdictLines {
            pass,
            fail,
            ready,
            active_low,
            mode,
            pulse,
            safe,
            pulsing: None,
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
        if asserted != self.active_low {
            pin.set_high()?;
        } else {
            pin.set_low()?;
        }
        self.levels[line as usize] = Some(asserted);
        Ok(())
    }

    /// The safe state: outputs as configured (default READY low, PASS low, FAIL asserted); a
    /// running pulse is cut short. Every line is written (even one believed to be there
    /// already) and even when another fails; the first error is returned.
    pub fn enter_safe_state(&mut self) -> Result<(), GpioError> {
        self.pulsing = None;
        self.in_safe_state = true;
        let results = [
            self.force(Line::Ready, self.safe.ready),
            self.force(Line::Pass, self.safe.pass),
            self.force(Line::Fail, self.safe.fail),
        ];
        results.into_iter().collect()
    }

    /// Shows one verdict. PASS/FAIL leave the safe state (PASS and FAIL cleared, READY
    /// asserted) and assert their line (level: until the next verdict; pulse: for the pulse
    /// length; a running pulse is ended first); ERROR enters the safe state.
    pub fn show(&mut self, verdict: Verdict) -> Result<(), GpioError> {
        let line = match verdict {
            Verdict::Pass => Line::Pass,
            Verdict::Fail => Line::Fail,
            Verdict::Error => return self.enter_safe_state(),
        };
        self.end_pulse()?;
        let other = if line == Line::Pass { Line::Fail } else { Line::Pass };
        self.set(other, false)?;
        if self.in_safe_state {
            self.set(line, false)?;
            self.set(Line::Ready, true)?;
            self.in_safe_state = false;
        }
        self.set(line, true)?;
        if self.mode == OutputMode::Pulse {
            self.pulsing = Some((line, Instant::now() + self.pulse));
        }
        Ok(())
    }

    /// Ends a pulse whose time is up; call it whenever the station is waiting.
    pub fn poll(&mut self, now: Instant) -> Result<(), GpioError> {
        match self.pulsing {
            Some((_, ends)) if now >= ends => self.end_pulse(),
            _ => Ok(()),
        }
    }

    /// When the running pulse ends, if one is running.
    pub fn pulse_deadline(&self) -> Option<Instant> {
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
    /// The lines are left in the safe state however the station ends (return, error, panic).
    fn drop(&mut self) {
        let _ = self.enter_safe_state();
    }
}

/// [`VerdictLines`] shared with a timer thread that ends each pulse when its time is up.
pub struct SignalLines {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    timer: Option<JoinHandle<()>>,
}

struct Shared {
    lines: VerdictLines,
    closing: bool,
}

impl SignalLines {
    /// Takes over `lines` and starts the pulse timer.
    pub fn new(lines: VerdictLines) -> SignalLines {
        let shared = Arc::new((Mutex::new(Shared { lines, closing: false }), Condvar::new()));
        let for_timer = shared.clone();
        let timer = std::thread::Builder::new()
            .name("clipada-pulses".into())
            .spawn(move || end_pulses(&for_timer))
            .expect("cannot start the GPIO pulse timer thread");
        SignalLines { shared, timer: Some(timer) }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// See [`VerdictLines::enter_safe_state`].
    pub fn enter_safe_state(&self) -> Result<(), GpioError> {
        self.lock().lines.enter_safe_state()
    }

    /// See [`VerdictLines::show`]; a running pulse is first allowed its full length.
    pub fn show(&self, verdict: Verdict) -> Result<(), GpioError> {
        let mut shared = self.lock();
        if verdict != Verdict::Error {
            while let Some(ends) = shared.lines.pulse_deadline() {
                let now = Instant::now();
                if now >= ends {
                    break;
                }
                shared =
                    self.shared.1.wait_timeout(shared, ends - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
            }
        }
        let shown = shared.lines.show(verdict);
        self.shared.1.notify_all();
        shown
    }
}

/// The timer thread: ends each pulse at its deadline.
fn end_pulses(shared: &(Mutex<Shared>, Condvar)) {
    let (mutex, condvar) = shared;
    let mut guard = mutex.lock().unwrap_or_else(|p| p.into_inner());
    while !guard.closing {
        guard = match guard.lines.pulse_deadline() {
            None => condvar.wait(guard).unwrap_or_else(|p| p.into_inner()),
            Some(ends) => {
                let now = Instant::now();
                if now >= ends {
                    let _ = guard.lines.poll(now);
                    condvar.notify_all();
                    guard
                } else {
                    condvar.wait_timeout(guard, ends - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0)
                }
            }
        };
    }
}

impl Drop for SignalLines {
    /// Stops the timer; the lines then enter the safe state as they are dropped.
    fn drop(&mut self) {
        self.lock().closing = true;
        self.shared.1.notify_all();
        if let Some(timer) = self.timer.take() {
            let _ = timer.join();
        }
    }
}

/// Appends `<milliseconds since start> <line> <0|1>` to a file for every level written; the
/// lines of one station share the file. Each record is one `write` call.
pub struct Recorder {
    file: File,
    started: Instant,
}

impl Recorder {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<Arc<Mutex<Recorder>>, GpioError> {
        let file = File::create(path)
            .map_err(|e| GpioError { line: path.display().to_string(), reason: format!("cannot create: {e}") })?;
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
        /// Requests `offset` on `chip` as an output, initially low.
        pub fn output(chip: &Path, offset: u32) -> Result<ChardevLine, GpioError> {
            ChardevLine::request(chip, offset, |line| line.as_output(Value::Inactive))
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
