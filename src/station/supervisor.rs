//! The supervisor: the part of the station that owns the verdict lines, apart from the
//! inspection loop, so that no fault of the loop can leave PASS asserted.
//!
//! `clipada run` starts as the supervisor: it claims the lines and puts them in the safe state
//! first thing, then starts the inspection loop as a worker process (the same binary) connected
//! by a Unix socket, and drives the lines only as the worker asks. The lines go to the safe
//! state when the worker
//! - reports ERROR, or stops or dies in any way (exit, panic, abort, SIGKILL, out of memory:
//!   the socket reaches end of file),
//! - misses its deadline: in level mode a PASS or FAIL is held only while the worker shows
//!   signs of life (a message at least every `loop_deadline`), so a hung loop drops it long
//!   before the service watchdog fires,
//!
//! and on SIGTERM/SIGINT at once, whatever the worker is doing (loading a model, building
//! TensorRT engines): the supervisor then stops the worker and exits within
//! [`super::STOP_WITHIN`]. The supervisor itself does little (no images, no model), so its own
//! failure is unlikely; if it is killed anyway, the worker follows it (parent-death signal) and
//! the lines keep their last level (docs/ARCHITECTURE.md, "Fail-safe rules").
//!
//! Both ends run in one process in tests (`pair`): the loop's own code talks to the same
//! supervisor over the same socket.
//!
//! Messages are fixed frames of [`FRAME`] bytes: kind, verdict, text length, a `u64` sequence
//! number, and up to [`TEXT`] bytes of text.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::lines::{GpioError, VerdictLines};
use super::reject::{EncoderCounter, Gate, Judged, Slot};
use super::watchdog::Notifier;
use crate::verdict::Verdict;

/// Bytes in a message.
pub const FRAME: usize = 128;
/// Most bytes of text in a message.
pub const TEXT: usize = FRAME - 11;
/// Longest the supervisor waits before it looks at the stop flag, pulses and deadlines again.
pub(crate) const TICK: Duration = Duration::from_millis(10);
/// How much longer each start-up extension gives systemd's start timeout (`EXTEND_TIMEOUT_USEC`).
const START_EXTENSION: Duration = Duration::from_secs(30);
/// How often the extension is renewed while the worker starts.
const EXTEND_EVERY: Duration = Duration::from_secs(10);
/// The longest start the supervisor vouches for: a first TensorRT engine build on a small board
/// takes minutes; a worker still starting after this is left to systemd's start timeout.
const START_LIMIT: Duration = Duration::from_secs(30 * 60);
/// Least time between two status lines with the verdict counters.
const COUNTERS_EVERY: Duration = Duration::from_secs(1);
/// Least time between the worker's signs of life.
pub(crate) const ALIVE_EVERY: Duration = Duration::from_millis(50);

/// What a message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Worker: the loop is about to take its first frame.
    Ready = 1,
    /// Worker: show this verdict (sequence: the frame).
    Show = 2,
    /// Worker: alive.
    Alive = 3,
    /// Worker: a status line for the service manager.
    Status = 4,
    /// Worker: a trigger was taken (sequence: its part; text: how long ago, in microseconds);
    /// a verdict for it follows (BUSY is asserted until then).
    Triggered = 5,
    /// Worker: the loop waits for the next trigger (BUSY may drop: a trigger now is taken).
    Waiting = 6,
    /// Worker: the loop is busy between parts (a self-test): BUSY goes up.
    Busy = 7,
    /// Worker: no part may be judged good now (a failed self-test; text: why): the safe state.
    Fault = 8,
    /// Supervisor: the verdict of this frame is on the lines.
    Shown = 10,
    /// Supervisor: writing the lines failed (text: why); they were put in the safe state.
    LineFailed = 11,
    /// Supervisor: the part had reached the reject gate before its verdict came: it got ERROR.
    Late = 12,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        [
            Kind::Ready,
            Kind::Show,
            Kind::Alive,
            Kind::Status,
            Kind::Triggered,
            Kind::Waiting,
            Kind::Busy,
            Kind::Fault,
            Kind::Shown,
            Kind::LineFailed,
            Kind::Late,
        ]
        .into_iter()
        .find(|k| *k as u8 == byte)
    }
}

fn verdict_byte(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Pass => 0,
        Verdict::Fail => 1,
        Verdict::Error => 2,
    }
}

/// One decoded message.
struct Message {
    kind: Kind,
    /// ERROR for any unknown value: an unreadable verdict is never shown as PASS.
    verdict: Verdict,
    sequence: u64,
    text: heapless::String<TEXT>,
}

fn encode(kind: Kind, verdict: Verdict, sequence: u64, text: &str, frame: &mut [u8; FRAME]) {
    let mut end = text.len().min(TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    frame.fill(0);
    frame[0] = kind as u8;
    frame[1] = verdict_byte(verdict);
    frame[2] = end as u8;
    frame[3..11].copy_from_slice(&sequence.to_le_bytes());
    frame[11..11 + end].copy_from_slice(&text.as_bytes()[..end]);
}

fn decode(frame: &[u8; FRAME]) -> Option<Message> {
    let kind = Kind::from_byte(frame[0])?;
    let verdict = match frame[1] {
        0 => Verdict::Pass,
        1 => Verdict::Fail,
        _ => Verdict::Error,
    };
    let len = usize::from(frame[2]).min(TEXT);
    let mut text = heapless::String::new();
    let _ = text.push_str(std::str::from_utf8(&frame[11..11 + len]).unwrap_or("?"));
    Some(Message { kind, verdict, sequence: u64::from_le_bytes(frame[3..11].try_into().expect("8 bytes")), text })
}

/// A Triggered message's text: the trigger's age, and the part's gate distance if it has its
/// own (`None` inside: the gate's; an error for a text that is neither).
fn parse_triggered(text: &str) -> (Duration, Result<Option<Slot>, String>) {
    let mut words = text.split(' ');
    let age = Duration::from_micros(words.next().and_then(|w| w.parse().ok()).unwrap_or(0));
    let slot = match (words.next(), words.next().map(str::parse::<u64>), words.next()) {
        (None, _, _) => Ok(None),
        (Some("delay"), Some(Ok(us)), None) => Ok(Some(Slot::Delay(Duration::from_micros(us)))),
        (Some("counts"), Some(Ok(counts)), None) => Ok(Some(Slot::Counts(counts))),
        _ => Err(format!("an unreadable gate distance `{text}`")),
    };
    (age, slot)
}

/// Reads whole frames from a socket with a read timeout, keeping partial ones.
struct FrameReader {
    buffer: [u8; FRAME],
    filled: usize,
}

/// What one read gave.
enum Received {
    Frame,
    Nothing,
    Closed,
}

impl FrameReader {
    fn new() -> Self {
        FrameReader { buffer: [0; FRAME], filled: 0 }
    }

    /// Reads until a frame is complete, the timeout passes (`Nothing`) or the peer is gone. The
    /// wait is a `poll` with a high-resolution timeout: a socket's own read timeout is counted
    /// in kernel ticks (up to 10 ms late), too coarse for the handshake's widths.
    fn read(&mut self, stream: &mut UnixStream, timeout: Duration) -> Received {
        let _ = stream.set_read_timeout(Some(TICK.max(timeout)));
        let timeout = rustix::event::Timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [rustix::event::PollFd::new(&*stream, rustix::event::PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Received::Nothing,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Received::Nothing,
            Err(_) => return Received::Closed,
        }
        loop {
            match stream.read(&mut self.buffer[self.filled..]) {
                Ok(0) => return Received::Closed,
                Ok(n) => {
                    self.filled += n;
                    if self.filled == FRAME {
                        self.filled = 0;
                        return Received::Frame;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Received::Nothing,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Received::Closed,
            }
        }
    }
}

/// How the supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The worker closed its end (it exited, or died).
    WorkerGone,
    /// Stop was requested.
    Stopped,
}

/// The verdicts the worker asked the lines to show, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// PASS verdicts.
    pub pass: u64,
    /// FAIL verdicts.
    pub fail: u64,
    /// ERROR verdicts.
    pub error: u64,
}

impl Tally {
    /// All verdicts.
    pub fn frames(&self) -> u64 {
        self.pass + self.fail + self.error
    }
}

/// Owns the verdict lines and drives them as the worker asks; see the module documentation.
pub struct Supervisor {
    tally: Tally,
    lines: VerdictLines,
    stream: UnixStream,
    loop_deadline: Duration,
    notifier: Option<Notifier>,
    reader: FrameReader,
    /// The frame whose verdict waits for a running pulse to end.
    awaiting: Option<u64>,
    ready: bool,
    last_heard: Instant,
    /// Whether the last missed deadline was reported (once per miss).
    deadline_reported: bool,
    /// The worker asked for the safe state (a failed self-test): entered as soon as no result's
    /// pulse or strobe is under way, never cutting one short.
    fault_waiting: bool,
    /// When the supervisor started, and when the start timeout is next extended.
    started: Instant,
    next_extension: Instant,
    /// When the counters last went to the service manager.
    counters_sent: Option<Instant>,
    /// Parts between camera and reject gate, and the encoder that moves them (none: results
    /// are shown as soon as judged).
    gate: Option<(Gate, Option<EncoderCounter>)>,
}

impl Supervisor {
    /// Takes over `lines`, putting them in the safe state at once (an error if that fails: a
    /// station that cannot signal must not start), and talks to the worker over `stream`. In
    /// level mode a verdict is held while the worker is heard from at least every `loop_deadline`.
    pub fn new(mut lines: VerdictLines, stream: UnixStream, loop_deadline: Duration) -> Result<Supervisor, GpioError> {
        lines.enter_safe_state()?;
        Ok(Supervisor {
            tally: Tally::default(),
            lines,
            stream,
            loop_deadline,
            notifier: None,
            reader: FrameReader::new(),
            awaiting: None,
            ready: false,
            last_heard: Instant::now(),
            deadline_reported: false,
            fault_waiting: false,
            started: Instant::now(),
            next_extension: Instant::now(),
            counters_sent: None,
            gate: None,
        })
    }

    /// Shows each result when its part reaches `gate` (moved by `encoder`, on an encoder slot)
    /// instead of when it is judged.
    pub fn reject_at(&mut self, gate: Gate, encoder: Option<EncoderCounter>) {
        self.gate = Some((gate, encoder));
    }

    /// The verdicts shown so far.
    pub(crate) fn tally(&self) -> Tally {
        self.tally
    }

    /// Reports readiness, heartbeats (while the worker is alive), status and stopping to the
    /// service manager.
    pub(crate) fn supervised_by(&mut self, notifier: Notifier) {
        self.notifier = Some(notifier);
    }

    /// Drives the lines until the worker is gone or `stop` is set; the lines end in the safe
    /// state either way. Problems are logged.
    pub fn run(&mut self, stop: &AtomicBool) -> Ended {
        let ended = loop {
            if stop.load(Ordering::Relaxed) {
                break Ended::Stopped;
            }
            let now = Instant::now();
            match self.lines.poll(now) {
                Ok(Some(_)) => self.acknowledge(Kind::Shown, ""),
                Ok(None) => {}
                Err(e) => self.line_failed(&e),
            }
            self.check_deadline(now);
            self.extend_start(now);
            self.serve_gate(now);
            if self.fault_waiting && self.lines.is_idle() {
                self.fault_waiting = false;
                if let Err(e) = self.lines.enter_safe_state() {
                    self.line_failed(&e);
                }
            }
            let wait = self.next_wait(now);
            match self.reader.read(&mut self.stream, wait) {
                Received::Closed => {
                    self.drain_gate(stop);
                    if let Err(e) = self.lines.finish_handshake() {
                        tracing::error!("{e}");
                    }
                    break Ended::WorkerGone;
                }
                Received::Nothing => {}
                Received::Frame => {
                    if let Some(message) = decode(&self.reader.buffer) {
                        self.handle(message);
                    }
                }
            }
        };
        if let Err(e) = self.lines.enter_safe_state() {
            tracing::error!("cannot leave the lines in the safe state: {e}");
        }
        if let Some(notifier) = &mut self.notifier {
            notifier.stopping();
        }
        ended
    }

    fn handle(&mut self, message: Message) {
        self.last_heard = Instant::now();
        if std::mem::take(&mut self.deadline_reported) {
            // Heard from again: triggers may come, if the loop waits for one.
            if let Err(e) = self.lines.update_busy() {
                self.line_failed(&e);
            }
        }
        if let (true, Some(notifier)) = (self.ready, &mut self.notifier) {
            notifier.heartbeat();
        }
        match message.kind {
            Kind::Ready => {
                self.ready = true;
                if let Err(e) = self.lines.trigger_ready() {
                    self.line_failed(&e);
                }
                if let Some(notifier) = &mut self.notifier {
                    notifier.ready();
                }
            }
            Kind::Waiting => {
                if let Err(e) = self.lines.trigger_ready() {
                    self.line_failed(&e);
                }
            }
            Kind::Busy => {
                if let Err(e) = self.lines.busy() {
                    self.line_failed(&e);
                }
            }
            Kind::Fault => {
                tracing::error!("{}: the lines go to the safe state (after the result being shown)", message.text);
                self.fault_waiting = true;
            }
            Kind::Triggered => {
                if let Err(e) = self.lines.part_started() {
                    self.line_failed(&e);
                }
                if let Some((gate, encoder)) = &mut self.gate {
                    let (age, slot) = parse_triggered(&message.text);
                    let now = Instant::now();
                    let count = encoder.as_ref().map_or(0, EncoderCounter::count);
                    let at = now.checked_sub(age).unwrap_or(now);
                    if let Err(e) = slot
                        .and_then(|slot| gate.triggered(message.sequence, at, count, slot).map_err(|e| e.to_string()))
                    {
                        // Parts the gate cannot track cannot be shown at it: all are rejected.
                        tracing::error!("{e}: the lines go to the safe state");
                        gate.clear();
                        let _ = self.lines.enter_safe_state();
                    }
                }
            }
            Kind::Show if self.gate.is_some() => {
                let Some((gate, _)) = &mut self.gate else { return };
                let reply = match gate.judged(message.sequence, message.verdict) {
                    Judged::Scheduled => Kind::Shown,
                    // An ERROR of no part in flight (the trigger input failed): the safe state now.
                    Judged::Late if message.verdict == Verdict::Error => {
                        let now = Instant::now();
                        self.count(Verdict::Error, now);
                        if let Err(e) = self.lines.request_at_gate(Verdict::Error, now) {
                            self.line_failed(&e);
                        }
                        Kind::Shown
                    }
                    Judged::Late => Kind::Late,
                };
                if let Err(e) = self.lines.part_judged() {
                    self.line_failed(&e);
                }
                self.send(reply, message.sequence, "");
            }
            Kind::Show => match self.show(message.verdict) {
                Ok(true) => self.send(Kind::Shown, message.sequence, ""),
                Ok(false) => self.awaiting = Some(message.sequence),
                Err(e) => {
                    self.awaiting = Some(message.sequence);
                    self.line_failed(&e);
                }
            },
            Kind::Status => {
                if let Some(notifier) = &mut self.notifier {
                    notifier.status(&message.text);
                }
            }
            Kind::Alive | Kind::Shown | Kind::LineFailed | Kind::Late => {}
        }
    }

    /// Counts `verdict` and asks the lines to show it (see [`VerdictLines::request`]).
    fn show(&mut self, verdict: Verdict) -> Result<bool, GpioError> {
        let now = Instant::now();
        self.count(verdict, now);
        self.lines.request(verdict, now)
    }

    fn count(&mut self, verdict: Verdict, now: Instant) {
        match verdict {
            Verdict::Pass => self.tally.pass += 1,
            Verdict::Fail => self.tally.fail += 1,
            Verdict::Error => self.tally.error += 1,
        }
        self.report_counters(now);
    }

    /// Shows the results of the parts that have reached the reject gate, one at a time as the
    /// lines can take them (ERROR for a part not judged in time).
    fn serve_gate(&mut self, now: Instant) {
        while self.lines.can_take() {
            let Some((gate, encoder)) = &mut self.gate else { return };
            let count = encoder.as_ref().map_or(0, EncoderCounter::count);
            let Some((sequence, judged)) = gate.due(now, count) else { return };
            // A result the lines cannot show at its part's slot (the last result's strobe or
            // pulse still runs) would go on them while a later part is at the gate: it is ERROR
            // instead (the safe state rejects), never a PASS shown late.
            let verdict = if judged == Verdict::Error || self.lines.can_show_now(now) {
                judged
            } else {
                tracing::error!(
                    "part {sequence} reached the gate while the last result was still shown: ERROR instead of its {}",
                    judged.label()
                );
                Verdict::Error
            };
            if verdict == Verdict::Error {
                tracing::debug!("part {sequence} reached the gate: ERROR");
            }
            self.count(verdict, now);
            if let Err(e) = self.lines.request_at_gate(verdict, now) {
                self.line_failed(&e);
            }
        }
    }

    /// The worker is gone: the parts it judged still get their results at the gate (ERROR for
    /// those it did not judge), each with its handshake, as long as they keep moving: until
    /// none is left and no result waits for the lines, stop is
    /// requested, or nothing moved for the loop deadline (or the gate's delay, if longer).
    fn drain_gate(&mut self, stop: &AtomicBool) {
        let Some((gate, _)) = &self.gate else { return };
        let idle_limit = self.loop_deadline.max(gate.delay());
        let mut moved = (Instant::now(), u64::MAX);
        while !stop.load(Ordering::Relaxed) {
            let Some((gate, encoder)) = &self.gate else { return };
            // A part's result may still wait for the last one's strobe: it is not done yet.
            let waiting = !self.lines.can_take();
            if gate.is_empty() && !waiting {
                return;
            }
            let now = Instant::now();
            let count = encoder.as_ref().map_or(0, EncoderCounter::count);
            if count != moved.1 {
                moved = (now, count);
            }
            if !waiting && now.duration_since(moved.0) > idle_limit {
                tracing::error!("the parts left before the reject gate stopped moving: the lines go to the safe state");
                return;
            }
            match self.lines.poll(now) {
                Ok(Some(_)) => moved.0 = now,
                Ok(None) => {}
                Err(e) => self.line_failed(&e),
            }
            let before = self.tally.frames();
            self.serve_gate(now);
            if self.tally.frames() != before {
                moved.0 = now;
            }
            std::thread::sleep(self.next_wait(now));
        }
    }

    /// How long the next read may wait: until the lines' or the gate's next deadline, at most
    /// a tick (a millisecond while parts ride an encoder to the gate).
    fn next_wait(&self, now: Instant) -> Duration {
        let encoder_parts = matches!(&self.gate, Some((gate, Some(_))) if !gate.is_empty());
        let tick = if encoder_parts { Duration::from_millis(1) } else { TICK };
        let gate = self.gate.as_ref().and_then(|(gate, _)| gate.next_deadline());
        self.lines
            .next_deadline()
            .into_iter()
            .chain(gate)
            .fold(tick, |wait, at| wait.min(at.saturating_duration_since(now)))
    }

    /// While the worker starts (loading the model, calibrating, building TensorRT engines),
    /// pushes systemd's start timeout forward every [`EXTEND_EVERY`], for at most
    /// [`START_LIMIT`]: a long first start is not killed, a hung one still is.
    fn extend_start(&mut self, now: Instant) {
        let Some(notifier) = &mut self.notifier else { return };
        if self.ready || now < self.next_extension || now.duration_since(self.started) > START_LIMIT {
            return;
        }
        notifier.extend_start(START_EXTENSION);
        self.next_extension = now + EXTEND_EVERY;
    }

    /// The verdict counters as the service's status (`systemctl status`), at most every
    /// [`COUNTERS_EVERY`].
    fn report_counters(&mut self, now: Instant) {
        let Some(notifier) = &mut self.notifier else { return };
        if self.counters_sent.is_some_and(|sent| now.duration_since(sent) < COUNTERS_EVERY) {
            return;
        }
        self.counters_sent = Some(now);
        let mut text = heapless::String::<TEXT>::new();
        let Tally { pass, fail, error } = self.tally;
        let _ = std::fmt::Write::write_fmt(
            &mut text,
            format_args!("inspecting: {} verdicts, {pass} pass, {fail} fail, {error} error", self.tally.frames()),
        );
        notifier.status(&text);
    }

    /// A line write failed: the lines go to the safe state (as far as they can), and the
    /// worker hears of it for the frame it waits on.
    fn line_failed(&mut self, error: &GpioError) {
        let _ = self.lines.enter_safe_state();
        let mut text = heapless::String::<TEXT>::new();
        let _ = std::fmt::Write::write_fmt(&mut text, format_args!("{error}"));
        if self.awaiting.is_some() {
            self.acknowledge(Kind::LineFailed, &text);
        } else {
            tracing::error!("{error}; the lines are in the safe state");
        }
    }

    /// Drops a held verdict when the worker has not been heard from within its deadline.
    fn check_deadline(&mut self, now: Instant) {
        let late = now.saturating_duration_since(self.last_heard) > self.loop_deadline;
        if !self.ready || !late || self.awaiting.is_some() || self.deadline_reported {
            return;
        }
        self.deadline_reported = true;
        if !self.lines.is_safe() {
            tracing::error!(
                "the inspection loop was not heard from for {:?}: the lines go to the safe state",
                self.loop_deadline
            );
            if let Err(e) = self.lines.enter_safe_state() {
                tracing::error!("{e}");
            }
        }
    }

    fn acknowledge(&mut self, kind: Kind, text: &str) {
        if let Some(sequence) = self.awaiting.take() {
            self.send(kind, sequence, text);
        }
    }

    fn send(&mut self, kind: Kind, sequence: u64, text: &str) {
        let mut frame = [0u8; FRAME];
        encode(kind, Verdict::Error, sequence, text, &mut frame);
        // A worker that went away is noticed by the next read.
        let _ = self.stream.write_all(&frame);
    }
}

/// Why the worker could not have its verdict shown.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    /// The supervisor is gone: nothing drives the lines, the loop must end.
    #[error("the supervisor is gone ({0}): nothing drives the verdict lines")]
    Gone(String),
    /// Writing the lines failed; they were put in the safe state.
    #[error("{0}")]
    Line(String),
    /// Stop was requested while waiting.
    #[error("stopped while waiting for the lines")]
    Stopped,
    /// The part reached the reject gate before it was judged: it got ERROR there.
    #[error("judged after the part reached the reject gate: it was rejected there (ERROR)")]
    Late,
}

/// The worker's end of the socket: the inspection loop's only way to the lines.
pub struct SupervisorLink {
    stream: UnixStream,
    reader: FrameReader,
    frame: [u8; FRAME],
    last_alive: Option<Instant>,
}

impl SupervisorLink {
    /// The worker's end of `stream`.
    pub fn new(stream: UnixStream) -> SupervisorLink {
        SupervisorLink { stream, reader: FrameReader::new(), frame: [0; FRAME], last_alive: None }
    }

    fn send(&mut self, kind: Kind, verdict: Verdict, sequence: u64, text: &str) -> Result<(), LinkError> {
        encode(kind, verdict, sequence, text, &mut self.frame);
        self.stream.write_all(&self.frame).map_err(|e| LinkError::Gone(e.to_string()))
    }

    /// The loop is about to take its first frame.
    pub fn ready(&mut self) -> Result<(), LinkError> {
        self.send(Kind::Ready, Verdict::Error, 0, "")
    }

    /// A sign of life, sent at most every [`ALIVE_EVERY`].
    pub(crate) fn alive(&mut self) -> Result<(), LinkError> {
        let now = Instant::now();
        if self.last_alive.is_some_and(|last| now.duration_since(last) < ALIVE_EVERY) {
            return Ok(());
        }
        self.last_alive = Some(now);
        self.send(Kind::Alive, Verdict::Error, 0, "")
    }

    /// The loop waits for the next trigger: BUSY may drop (the loop has done with the last
    /// part: a trigger from now on is taken, not an overrun).
    pub(crate) fn waiting(&mut self) -> Result<(), LinkError> {
        self.send(Kind::Waiting, Verdict::Error, 0, "")
    }

    /// Part `sequence`'s trigger, at `at`, was taken: BUSY goes up until it is judged. `slot`:
    /// its recipe's gate distance, if not the gate's own.
    pub(crate) fn triggered(&mut self, sequence: u64, at: Instant, slot: Option<Slot>) -> Result<(), LinkError> {
        use std::fmt::Write as _;
        let mut text = heapless::String::<48>::new();
        let _ = write!(text, "{}", at.elapsed().as_micros());
        let _ = match slot {
            None => Ok(()),
            Some(Slot::Delay(delay)) => write!(text, " delay {}", delay.as_micros()),
            Some(Slot::Counts(counts)) => write!(text, " counts {counts}"),
        };
        self.send(Kind::Triggered, Verdict::Error, sequence, &text)
    }

    /// The loop is busy between parts: BUSY goes up until it waits again.
    pub(crate) fn busy(&mut self) -> Result<(), LinkError> {
        self.send(Kind::Busy, Verdict::Error, 0, "")
    }

    /// No part may be judged good now (`why`): the lines go to the safe state at once.
    pub(crate) fn fault(&mut self, why: &str) -> Result<(), LinkError> {
        self.send(Kind::Fault, Verdict::Error, 0, why)
    }

    /// A status line for the service manager (`STATUS=`), cut to [`TEXT`] bytes.
    pub fn status(&mut self, text: &str) -> Result<(), LinkError> {
        self.send(Kind::Status, Verdict::Error, 0, text)
    }

    /// Shows frame `sequence`'s verdict and waits until it is on the lines (after a running
    /// pulse has had its full length); `stop` ends the wait.
    pub(crate) fn show(&mut self, verdict: Verdict, sequence: u64, stop: &AtomicBool) -> Result<(), LinkError> {
        self.send(Kind::Show, verdict, sequence, "")?;
        self.last_alive = Some(Instant::now());
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(LinkError::Stopped);
            }
            match self.reader.read(&mut self.stream, TICK) {
                Received::Closed => return Err(LinkError::Gone("its socket closed".into())),
                Received::Nothing => self.alive()?,
                Received::Frame => match decode(&self.reader.buffer) {
                    Some(m) if m.kind == Kind::Shown && m.sequence == sequence => return Ok(()),
                    Some(m) if m.kind == Kind::LineFailed && m.sequence == sequence => {
                        return Err(LinkError::Line(m.text.as_str().to_string()))
                    }
                    Some(m) if m.kind == Kind::Late && m.sequence == sequence => return Err(LinkError::Late),
                    _ => {}
                },
            }
        }
    }
}

/// A supervisor and the worker's link to it, connected in this process (tests, and any
/// embedding that runs both ends itself). The lines are put in the safe state now.
pub fn pair(lines: VerdictLines, loop_deadline: Duration) -> Result<(Supervisor, SupervisorLink), GpioError> {
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| GpioError { line: "supervisor".into(), reason: e.to_string() })?;
    Ok((Supervisor::new(lines, ours, loop_deadline)?, SupervisorLink::new(theirs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::station::lines::{Handshake, LineSettings, NoLine, Output, OutputMode, SafeState};
    use embedded_hal::digital::{ErrorType, OutputPin};
    use std::sync::{Arc, Mutex};

    /// The last physical level of PASS, FAIL, READY.
    type Levels = Arc<Mutex<[Option<bool>; 3]>>;

    struct Probe(usize, Levels);

    impl ErrorType for Probe {
        type Error = GpioError;
    }

    impl OutputPin for Probe {
        fn set_low(&mut self) -> Result<(), GpioError> {
            self.1.lock().unwrap()[self.0] = Some(false);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), GpioError> {
            self.1.lock().unwrap()[self.0] = Some(true);
            Ok(())
        }
    }

    const SAFE: [Option<bool>; 3] = [Some(false), Some(true), Some(false)];

    /// A supervisor on its own thread over probe lines (level mode), and the worker's link.
    fn supervised(deadline: Duration) -> (Levels, SupervisorLink, Arc<AtomicBool>, std::thread::JoinHandle<Ended>) {
        let levels = Levels::default();
        // PASS, FAIL, READY probed; BUSY and RESULT-VALID (no strobe here) go nowhere.
        let outputs: [Output; 5] = std::array::from_fn(|i| match i {
            0..3 => Box::new(Probe(i, levels.clone())) as Output,
            _ => Box::new(NoLine) as Output,
        });
        let settings = LineSettings {
            active_low: false,
            mode: OutputMode::Level,
            pulse: Duration::from_millis(10),
            safe: SafeState::default(),
            handshake: Handshake { settle: Duration::ZERO, valid: Duration::ZERO },
        };
        let (mut supervisor, link) = pair(VerdictLines::new(outputs, settings), deadline).unwrap();
        assert_eq!(*levels.lock().unwrap(), SAFE, "safe before the worker says anything");
        let stop = Arc::new(AtomicBool::new(false));
        let stop_supervisor = stop.clone();
        let thread = std::thread::spawn(move || supervisor.run(&stop_supervisor));
        (levels, link, stop, thread)
    }

    #[test]
    fn a_loop_that_misses_its_deadline_loses_its_held_verdict() {
        let (levels, mut link, stop, thread) = supervised(Duration::from_millis(100));
        link.ready().unwrap();
        link.show(Verdict::Pass, 1, &AtomicBool::new(false)).unwrap();
        assert_eq!(*levels.lock().unwrap(), [Some(true), Some(false), Some(true)], "PASS held");
        // Signs of life keep it; silence beyond the deadline drops it.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(60));
            link.last_alive = None;
            link.alive().unwrap();
        }
        assert_eq!(levels.lock().unwrap()[0], Some(true), "still held while alive");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(*levels.lock().unwrap(), SAFE, "dropped to the safe state");
        stop.store(true, Ordering::Relaxed);
        assert_eq!(thread.join().unwrap(), Ended::Stopped);
    }

    #[test]
    fn a_worker_that_dies_leaves_the_lines_safe_and_the_supervisor_ends() {
        let (levels, mut link, _stop, thread) = supervised(Duration::from_secs(60));
        link.ready().unwrap();
        link.show(Verdict::Pass, 1, &AtomicBool::new(false)).unwrap();
        drop(link);
        assert_eq!(thread.join().unwrap(), Ended::WorkerGone);
        assert_eq!(*levels.lock().unwrap(), SAFE);
    }

    #[test]
    fn stop_reaches_the_safe_state_even_while_a_verdict_is_held() {
        let (levels, mut link, stop, thread) = supervised(Duration::from_secs(60));
        link.ready().unwrap();
        link.show(Verdict::Pass, 1, &AtomicBool::new(false)).unwrap();
        let asked = Instant::now();
        stop.store(true, Ordering::Relaxed);
        assert_eq!(thread.join().unwrap(), Ended::Stopped);
        assert!(asked.elapsed() < Duration::from_millis(100), "{:?}", asked.elapsed());
        assert_eq!(*levels.lock().unwrap(), SAFE);
        assert!(matches!(link.show(Verdict::Pass, 2, &AtomicBool::new(false)), Err(LinkError::Gone(_))));
    }

    #[test]
    fn a_line_that_fails_is_reported_to_the_loop_for_that_frame() {
        struct Broken;
        impl ErrorType for Broken {
            type Error = GpioError;
        }
        impl OutputPin for Broken {
            fn set_low(&mut self) -> Result<(), GpioError> {
                Ok(())
            }
            fn set_high(&mut self) -> Result<(), GpioError> {
                Err(GpioError { line: "pass".into(), reason: "short circuit".into() })
            }
        }
        let outputs: [Output; 5] =
            [Box::new(Broken), Box::new(NoLine), Box::new(NoLine), Box::new(NoLine), Box::new(NoLine)];
        let settings = LineSettings {
            active_low: false,
            mode: OutputMode::Level,
            pulse: Duration::from_millis(10),
            safe: SafeState::default(),
            handshake: Handshake { settle: Duration::ZERO, valid: Duration::ZERO },
        };
        let (mut supervisor, mut link) = pair(VerdictLines::new(outputs, settings), Duration::from_secs(9)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_supervisor = stop.clone();
        let thread = std::thread::spawn(move || supervisor.run(&stop_supervisor));
        link.ready().unwrap();
        let error = link.show(Verdict::Pass, 7, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(&error, LinkError::Line(why) if why.contains("short circuit")), "{error}");
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
    }

    /// Every physical level written to a line, as `(line, high)`.
    type Written = Arc<Mutex<Vec<(usize, bool)>>>;

    struct Recording(usize, Written);

    impl ErrorType for Recording {
        type Error = GpioError;
    }

    impl OutputPin for Recording {
        fn set_low(&mut self) -> Result<(), GpioError> {
            self.1.lock().unwrap().push((self.0, false));
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), GpioError> {
            self.1.lock().unwrap().push((self.0, true));
            Ok(())
        }
    }

    /// A supervisor on its own thread with a reject gate `delay` after the trigger, recording
    /// every write (level mode, a 2 ms settle and 30 ms strobe), and the worker's link, ready.
    fn gated(delay: Duration) -> (Written, SupervisorLink, Arc<AtomicBool>, std::thread::JoinHandle<Ended>) {
        let written = Written::default();
        let outputs: [Output; 5] = std::array::from_fn(|i| Box::new(Recording(i, written.clone())) as Output);
        let settings = LineSettings {
            active_low: false,
            mode: OutputMode::Level,
            pulse: Duration::from_millis(10),
            safe: SafeState::default(),
            handshake: Handshake { settle: Duration::from_millis(2), valid: Duration::from_millis(30) },
        };
        let (mut supervisor, mut link) = pair(VerdictLines::new(outputs, settings), Duration::from_secs(9)).unwrap();
        supervisor.reject_at(Gate::new(super::super::reject::Slot::Delay(delay)), None);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_supervisor = stop.clone();
        let thread = std::thread::spawn(move || supervisor.run(&stop_supervisor));
        link.ready().unwrap();
        (written, link, stop, thread)
    }

    #[test]
    fn a_fault_waits_for_the_result_being_strobed_then_enters_the_safe_state() {
        // Regression: a failed self-test's safe state cut the last result's RESULT-VALID
        // strobe short (or before it rose): a PLC counting strobes lost a result.
        let (written, mut link, stop, thread) = gated(Duration::from_millis(5));
        link.triggered(1, Instant::now(), None).unwrap();
        link.show(Verdict::Pass, 1, &AtomicBool::new(false)).unwrap();
        // PASS goes on the lines at the gate (5 ms); the fault comes while it is strobed.
        std::thread::sleep(Duration::from_millis(12));
        link.fault("self-test failed").unwrap();
        std::thread::sleep(Duration::from_millis(80));
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        let written = written.lock().unwrap();
        let pass_at = written.iter().position(|&w| w == (0, true)).expect("PASS shown");
        let valid_up = pass_at + written[pass_at..].iter().position(|&w| w == (4, true)).expect("strobed");
        let safe = valid_up + written[valid_up..].iter().position(|&w| w == (2, false)).expect("READY dropped");
        // The strobe ended by itself (RESULT-VALID low), and then the safe state wrote every
        // line (RESULT-VALID low again): two writes, not one that cut it short.
        let valid_lows = written[valid_up..safe].iter().filter(|&&w| w == (4, false)).count();
        assert_eq!(valid_lows, 2, "the safe state only after the strobe ended: {written:?}");
        assert!(written[safe..].contains(&(1, true)), "FAIL asserted in the safe state: {written:?}");
    }

    #[test]
    fn parts_at_the_gate_when_the_worker_ends_each_get_their_own_strobe() {
        // Regression: two parts reach the gate together just after the worker ended; the
        // second's verdict waited for the first's strobe and was dropped with the worker, so
        // the PLC saw one result for two parts.
        let (written, mut link, _stop, thread) = gated(Duration::from_millis(50));
        let now = Instant::now();
        link.triggered(1, now, None).unwrap();
        link.triggered(2, now, None).unwrap();
        link.show(Verdict::Pass, 1, &AtomicBool::new(false)).unwrap();
        link.show(Verdict::Fail, 2, &AtomicBool::new(false)).unwrap();
        drop(link);
        assert_eq!(thread.join().unwrap(), Ended::WorkerGone);
        let written = written.lock().unwrap();
        let strobes = written.iter().filter(|&&(line, high)| line == 4 && high).count();
        assert_eq!(strobes, 2, "one strobe per part: {written:?}");
        let pass_at = written.iter().position(|&w| w == (0, true)).expect("part 1's PASS shown");
        let fail_at = pass_at + written[pass_at..].iter().position(|&w| w == (1, true)).unwrap();
        assert!(written[pass_at..fail_at].contains(&(4, true)), "PASS strobed before FAIL: {written:?}");
        assert!(written[fail_at..].contains(&(4, true)), "part 2's FAIL strobed: {written:?}");
    }

    #[test]
    fn a_part_that_reaches_the_gate_while_the_last_result_is_shown_is_rejected_not_passed_late() {
        let (written, mut link, stop, thread) = gated(Duration::from_millis(100));
        // A bad part, then a good one 5 ms behind it: the second reaches the gate while the
        // first's strobe runs.
        let now = Instant::now();
        link.triggered(1, now, None).unwrap();
        link.show(Verdict::Fail, 1, &AtomicBool::new(false)).unwrap();
        link.triggered(2, now + Duration::from_millis(5), None).unwrap();
        link.show(Verdict::Pass, 2, &AtomicBool::new(false)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        let written = written.lock().unwrap();
        assert!(!written.contains(&(0, true)), "no PASS shown late: {written:?}");
        assert_eq!(written.iter().filter(|&&w| w == (4, true)).count(), 2, "a strobe each: {written:?}");
    }

    #[test]
    fn messages_survive_the_wire_and_unknown_verdicts_read_as_error() {
        let mut frame = [0u8; FRAME];
        encode(Kind::Show, Verdict::Pass, 42, "héllo", &mut frame);
        let message = decode(&frame).unwrap();
        assert_eq!((message.kind, message.verdict, message.sequence), (Kind::Show, Verdict::Pass, 42));
        assert_eq!(message.text.as_str(), "héllo");
        frame[1] = 7;
        assert_eq!(decode(&frame).unwrap().verdict, Verdict::Error);
        frame[0] = 99;
        assert!(decode(&frame).is_none());
        let long = "é".repeat(100);
        encode(Kind::Status, Verdict::Error, 0, &long, &mut frame);
        assert!(decode(&frame).unwrap().text.len() <= TEXT);
    }
}
