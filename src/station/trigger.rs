//! When to take a frame: free-run, a fixed interval, or a debounced edge of the TRIGGER input.
//!
//! The TRIGGER input is read as dated level changes ([`EdgeSource`]: the kernel's edge events
//! on a GPIO chip, or a script) by a listener thread of its own that never stops listening,
//! whatever the loop is doing. Debounced triggers wait in a bounded queue. A trigger whose edge
//! came while the station was busy with the previous part (or before it was ready) is an
//! *overrun*: by default it gets an ERROR verdict of its own ([`OnBusy::Error`]); with
//! [`OnBusy::Queue`] it is judged late, from a frame that must still pass the freshness rule.
//! Triggers the queue or the kernel could not hold are never silent either: each is a missed
//! trigger with an ERROR verdict.
//!
//! Waiting is done in slices of at most [`STOP_CHECK`], so a stop request (SIGTERM) is seen
//! promptly.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::lines::GpioError;

/// Longest wait between checks of the stop flag.
pub const STOP_CHECK: Duration = Duration::from_millis(20);
/// Triggers that can wait for the loop; more are missed (an ERROR verdict each).
pub const TRIGGER_QUEUE: usize = 16;
/// The listener's pause after the input failed, before it reads again.
const INPUT_RETRY: Duration = Duration::from_millis(100);

/// A trigger edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edge {
    /// Low to high.
    #[default]
    Rising,
    /// High to low.
    Falling,
}

/// What happens to a trigger that came while the station was busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBusy {
    /// An ERROR verdict for that part (the PLC rejects it): its frame would be taken late.
    #[default]
    Error,
    /// Judged when the station is free, from a frame exposed within `frame_timeout_ms` of the
    /// trigger (and its delay), else ERROR: for parts that stay in view until judged.
    Queue,
}

/// Why a trigger got no frame of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Missed {
    /// It came while the station was busy (or not yet ready).
    #[error("missed trigger: it came while the station was busy with the previous part")]
    Busy,
    /// More triggers came than the queue holds, or the kernel's event buffer overflowed.
    #[error("missed trigger: more came while the station was busy than it can hold")]
    Overflow,
}

/// What a wait ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// Take a frame; the instant the trigger happened (latency is measured from it).
    At(Instant),
    /// A trigger that gets an ERROR verdict without a frame; when it happened, if known.
    Missed(Missed, Option<Instant>),
    /// The trigger input has ended (a script played to its end) and every trigger was handled.
    Ended,
    /// Stop was requested.
    Stop,
    /// The station has work between parts (a control request, a self-test that is due): a
    /// trigger from now on is an overrun until it waits again.
    Interrupted,
}

/// One level change of the TRIGGER input, dated when it happened (by the kernel on a chip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelChange {
    /// When.
    pub at: Instant,
    /// The new level.
    pub high: bool,
}

/// What one wait on an [`EdgeSource`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEvent {
    /// A level change; `lost_before` changes were dropped just before it (the kernel's buffer
    /// overflowed).
    Change {
        /// The change.
        change: LevelChange,
        /// Changes lost before it.
        lost_before: u32,
    },
    /// Nothing happened within the timeout.
    Quiet,
    /// No change will ever come again (a script played to its end).
    Ended,
}

/// The TRIGGER input as a stream of dated level changes.
pub trait EdgeSource: Send {
    /// The level now, before the first change is read.
    fn level(&mut self) -> Result<bool, GpioError>;
    /// Waits at most `timeout` for the next change.
    fn next(&mut self, timeout: Duration) -> Result<InputEvent, GpioError>;
    /// Whether the source debounces itself (the kernel's debounce): then every change counts.
    fn debounced(&self) -> bool;
}

/// Debounce over dated level changes: a new level counts once it has held for the debounce
/// time; the trigger's instant is when the change was first seen. Time is passed in.
#[derive(Debug, Clone)]
pub struct Debouncer {
    edge: Edge,
    debounce: Duration,
    /// The accepted level.
    stable: bool,
    /// A level change being debounced, and when it was first seen.
    changing: Option<(bool, Instant)>,
}

impl Debouncer {
    /// Debounces `edge` by `debounce`, starting at `level`.
    pub fn new(edge: Edge, debounce: Duration, level: bool) -> Self {
        Debouncer { edge, debounce, stable: level, changing: None }
    }

    /// Takes a change; returns a trigger completed before it (the level before held long enough).
    pub fn change(&mut self, change: LevelChange) -> Option<Instant> {
        let completed = self.settle(change.at);
        self.changing = match self.changing {
            _ if change.high == self.stable => None,
            Some((pending, since)) if pending == change.high => Some((pending, since)),
            _ => Some((change.high, change.at)),
        };
        completed.or_else(|| self.settle(change.at))
    }

    /// Returns the trigger completed by `now`, if the level being debounced has held long enough.
    pub fn settle(&mut self, now: Instant) -> Option<Instant> {
        let (level, since) = self.changing?;
        if now.saturating_duration_since(since) < self.debounce {
            return None;
        }
        self.stable = level;
        self.changing = None;
        let wanted = match self.edge {
            Edge::Rising => level,
            Edge::Falling => !level,
        };
        wanted.then_some(since)
    }

    /// When the change being debounced completes, if one is.
    pub fn deadline(&self) -> Option<Instant> {
        self.changing.map(|(_, since)| since + self.debounce)
    }
}

/// A debounced trigger waiting for the loop, after the missed ones that came before it.
#[derive(Debug, Clone, Copy)]
struct Queued {
    at: Instant,
    missed_before: u64,
}

/// What the listener hands the loop, in the order things happened.
#[derive(Default)]
struct Pending {
    triggers: heapless::Deque<Queued, TRIGGER_QUEUE>,
    /// Triggers lost (full queue, the kernel's full buffer) after the last queued one.
    missed_after: u64,
    /// The input failed; reported as one ERROR verdict.
    error: Option<GpioError>,
    /// The input ended; nothing more will come.
    ended: bool,
}

impl Pending {
    fn push(&mut self, at: Instant) {
        let queued = Queued { at, missed_before: self.missed_after };
        match self.triggers.push_back(queued) {
            Ok(()) => self.missed_after = 0,
            Err(_) => self.missed_after += 1,
        }
    }

    /// The oldest trigger: its instant, or none for a missed one.
    fn pop(&mut self) -> Option<Option<Instant>> {
        match self.triggers.front_mut() {
            Some(front) if front.missed_before > 0 => {
                front.missed_before -= 1;
                Some(None)
            }
            Some(_) => self.triggers.pop_front().map(|q| Some(q.at)),
            None if self.missed_after > 0 => {
                self.missed_after -= 1;
                Some(None)
            }
            None => None,
        }
    }

    fn is_idle(&self) -> bool {
        self.triggers.is_empty() && self.missed_after == 0 && self.error.is_none() && !self.ended
    }
}

/// The listener's state, shared with the loop.
#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    arrived: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut Pending)) {
        change(&mut self.lock());
        self.arrived.notify_all();
    }
}

/// Input changes a kernel reported lost, as the input events (triggers, encoder counts) they
/// may have held: two changes an event, rounded up (a lost pair may have been one).
pub(crate) fn events_lost(changes: u32) -> u64 {
    u64::from(changes.div_ceil(2))
}

/// A named thread that runs until told to stop (the flag it is given), stopped and joined when
/// dropped: the input threads of a station (TRIGGER listener, ENCODER counter).
pub(crate) struct InputThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl InputThread {
    /// Starts `run` on a thread called `name` (the input it reads, for messages).
    pub(crate) fn spawn(name: &str, run: impl FnOnce(&AtomicBool) + Send + 'static) -> Result<Self, GpioError> {
        let stop = Arc::new(AtomicBool::new(false));
        let theirs = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&theirs))
            .map_err(|e| GpioError { line: name.into(), reason: format!("cannot start its thread: {e}") })?;
        Ok(InputThread { stop, thread: Some(thread) })
    }
}

impl Drop for InputThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The TRIGGER input's listener thread and its queue of debounced triggers. The thread starts
/// when the station first waits for a trigger (a chip's kernel holds the edges that come before
/// it, which are then overruns; a script's clock starts then).
pub struct TriggerListener {
    shared: Arc<Shared>,
    /// The input and its debouncer, until the thread takes them.
    unstarted: Option<(Box<dyn EdgeSource>, Debouncer)>,
    thread: Option<InputThread>,
    on_busy: OnBusy,
}

impl TriggerListener {
    /// Starts listening to `source` for `edge`, debounced by `debounce` unless the source
    /// debounces itself.
    pub fn start(
        mut source: Box<dyn EdgeSource>,
        edge: Edge,
        debounce: Duration,
        on_busy: OnBusy,
    ) -> Result<TriggerListener, GpioError> {
        let debounce = if source.debounced() { Duration::ZERO } else { debounce };
        let debouncer = Debouncer::new(edge, debounce, source.level()?);
        Ok(TriggerListener {
            shared: Arc::new(Shared::default()),
            unstarted: Some((source, debouncer)),
            thread: None,
            on_busy,
        })
    }

    /// Starts the listener thread, if not yet started.
    fn listen(&mut self) -> Result<(), GpioError> {
        let Some((mut source, debouncer)) = self.unstarted.take() else { return Ok(()) };
        let shared = self.shared.clone();
        self.thread =
            Some(InputThread::spawn("trigger", move |stop| listen(source.as_mut(), debouncer, &shared, stop))?);
        Ok(())
    }

    /// The next trigger: `waiting_since` is when the station became free for it, so a trigger
    /// that came before is an overrun. Waits in slices of [`STOP_CHECK`], calling `idle`.
    fn wait(
        &mut self,
        waiting_since: Instant,
        stop: &AtomicBool,
        idle: &mut dyn FnMut() -> bool,
    ) -> Result<Fired, GpioError> {
        self.listen()?;
        let mut pending = self.shared.lock();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(Fired::Stop);
            }
            if let Some(error) = pending.error.take() {
                return Err(error);
            }
            match pending.pop() {
                Some(None) => return Ok(Fired::Missed(Missed::Overflow, None)),
                Some(Some(at)) if self.on_busy == OnBusy::Error && at < waiting_since => {
                    return Ok(Fired::Missed(Missed::Busy, Some(at)))
                }
                Some(Some(at)) => return Ok(Fired::At(at)),
                None => {}
            }
            if pending.ended {
                return Ok(Fired::Ended);
            }
            drop(pending);
            if !idle() {
                return Ok(Fired::Interrupted);
            }
            pending = self.shared.lock();
            if pending.is_idle() {
                pending = self
                    .shared
                    .arrived
                    .wait_timeout(pending, STOP_CHECK)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
        }
    }
}

/// The listener thread: reads changes, debounces them and queues the triggers until stopped.
fn listen(source: &mut dyn EdgeSource, mut debouncer: Debouncer, shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let timeout = debouncer.deadline().map_or(STOP_CHECK, |at| at.saturating_duration_since(now).min(STOP_CHECK));
        match source.next(timeout) {
            Ok(InputEvent::Change { change, lost_before }) => {
                if lost_before > 0 {
                    shared.update(|p| p.missed_after += events_lost(lost_before));
                }
                if let Some(at) = debouncer.change(change) {
                    shared.update(|p| p.push(at));
                }
            }
            // Nothing changed until now (events queued behind a late listener are read first:
            // settling on the clock alone would take a level the next event undoes).
            Ok(InputEvent::Quiet) => {
                if let Some(at) = debouncer.settle(Instant::now()) {
                    shared.update(|p| p.push(at));
                }
            }
            Ok(InputEvent::Ended) => {
                // The last level holds for ever: it completes its debounce.
                if let Some(at) = debouncer.deadline().and_then(|deadline| debouncer.settle(deadline)) {
                    shared.update(|p| p.push(at));
                }
                shared.update(|p| p.ended = true);
                return;
            }
            Err(e) => {
                shared.update(|p| p.error = Some(e));
                std::thread::sleep(INPUT_RETRY);
            }
        }
    }
}

/// A TRIGGER input played from a script (tests, benchmarks, replays with no hardware): lines of
/// `<milliseconds from start> <0|1>`, in order; `#` starts a comment. The level is low before
/// the first line; the clock starts when the station first waits for a trigger.
pub struct ScriptedInput {
    changes: std::vec::IntoIter<(Duration, bool)>,
    started: Option<Instant>,
}

impl ScriptedInput {
    /// Level changes at the given offsets from the first wait.
    pub fn new(changes: Vec<(Duration, bool)>) -> Self {
        ScriptedInput { changes: changes.into_iter(), started: None }
    }

    /// Reads a script file: at most 1 MiB, times in order, levels 0 or 1.
    pub fn read(path: &Path) -> Result<ScriptedInput, GpioError> {
        let level = |field: &str| match field {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        Ok(ScriptedInput::new(read_script(path, "<0|1>", level)?))
    }
}

/// Reads a script of inputs (`<milliseconds from start> <value>` per line, times in order, `#`
/// starts a comment; at most 1 MiB): each value as `value` parses it (`form` says what it
/// should be, for the message).
pub(crate) fn read_script<T>(
    path: &Path,
    form: &str,
    value: impl Fn(&str) -> Option<T>,
) -> Result<Vec<(Duration, T)>, GpioError> {
    let error = |reason: String| GpioError { line: path.display().to_string(), reason };
    let bytes = crate::storage::read::read_regular(path, 1 << 20, "input script").map_err(|e| error(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| error("not UTF-8 text".into()))?;
    let mut changes: Vec<(Duration, T)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let bad = || error(format!("line {}: expected `<milliseconds> {form}`, got `{line}`", number + 1));
        let mut fields = line.split_whitespace();
        let (Some(ms), Some(field), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad());
        };
        let ms: u64 = ms.parse().map_err(|_| bad())?;
        let parsed = value(field).ok_or_else(bad)?;
        let at = Duration::from_millis(ms);
        if changes.last().is_some_and(|(last, _)| *last > at) {
            return Err(error(format!("line {}: times must not go back", number + 1)));
        }
        changes.push((at, parsed));
    }
    Ok(changes)
}

impl EdgeSource for ScriptedInput {
    fn level(&mut self) -> Result<bool, GpioError> {
        Ok(false)
    }

    fn next(&mut self, timeout: Duration) -> Result<InputEvent, GpioError> {
        let Some(&(offset, high)) = self.changes.as_slice().first() else { return Ok(InputEvent::Ended) };
        let at = *self.started.get_or_insert_with(Instant::now) + offset;
        let now = Instant::now();
        if at > now + timeout {
            std::thread::sleep(timeout);
            return Ok(InputEvent::Quiet);
        }
        std::thread::sleep(at.saturating_duration_since(now));
        self.changes.next();
        Ok(InputEvent::Change { change: LevelChange { at, high }, lost_before: 0 })
    }

    fn debounced(&self) -> bool {
        false
    }
}

/// Triggers sent from a plant network (a Modbus coil): each is a pulse on an input that
/// needs no debounce, dated when it was received.
pub struct RemoteInput {
    triggers: std::sync::mpsc::Receiver<Instant>,
    /// The falling half of the last trigger's pulse, still to be read.
    falling: Option<Instant>,
}

/// Sends triggers to a [`RemoteInput`]; cloned for each client.
pub type RemoteTrigger = std::sync::mpsc::SyncSender<Instant>;

/// Triggers that can wait for the listener thread (it reads them at once).
const REMOTE_TRIGGERS: usize = 64;

impl RemoteInput {
    /// An input and the sender of its triggers.
    pub fn new() -> (RemoteTrigger, RemoteInput) {
        let (sender, triggers) = std::sync::mpsc::sync_channel(REMOTE_TRIGGERS);
        (sender, RemoteInput { triggers, falling: None })
    }
}

impl EdgeSource for RemoteInput {
    fn level(&mut self) -> Result<bool, GpioError> {
        Ok(false)
    }

    fn next(&mut self, timeout: Duration) -> Result<InputEvent, GpioError> {
        if let Some(at) = self.falling.take() {
            return Ok(InputEvent::Change { change: LevelChange { at, high: false }, lost_before: 0 });
        }
        match self.triggers.recv_timeout(timeout) {
            Ok(at) => {
                self.falling = Some(at);
                Ok(InputEvent::Change { change: LevelChange { at, high: true }, lost_before: 0 })
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(InputEvent::Quiet),
            // The network server has stopped (the station is stopping): no trigger comes now.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                Ok(InputEvent::Quiet)
            }
        }
    }

    fn debounced(&self) -> bool {
        true
    }
}

/// The trigger of a station.
pub enum Trigger {
    /// Every frame.
    FreeRun,
    /// One frame per period, on a fixed schedule.
    Interval {
        /// Period.
        period: Duration,
        /// When the next frame is due.
        next: Option<Instant>,
    },
    /// One frame per debounced edge of the TRIGGER input.
    Input(TriggerListener),
}

impl Trigger {
    /// Waits for the next trigger, or a stop request; `idle` is called at least every
    /// [`STOP_CHECK`] while waiting (the station sends its watchdog heartbeat there), and ends
    /// the wait ([`Fired::Interrupted`]) by returning false. The station is taken to be free for
    /// a new part from the moment this is called.
    pub fn wait(&mut self, stop: &AtomicBool, idle: &mut dyn FnMut() -> bool) -> Result<Fired, GpioError> {
        let waiting_since = Instant::now();
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) {
                return Ok(Fired::Stop);
            }
            if !idle() {
                return Ok(Fired::Interrupted);
            }
            match self {
                Trigger::FreeRun => return Ok(Fired::At(now)),
                Trigger::Interval { period, next } => {
                    let due = *next.get_or_insert(now);
                    if now >= due {
                        // Keep to the schedule; after a long stall, start a new one from now.
                        let following = due + *period;
                        *next = Some(if following > now { following } else { now + *period });
                        return Ok(Fired::At(due));
                    }
                    std::thread::sleep((due - now).min(STOP_CHECK));
                }
                Trigger::Input(listener) => return listener.wait(waiting_since, stop, idle),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Debounces `(ms, level)` changes, settling every millisecond up to `ms`; the trigger
    /// instants, in ms from start.
    fn triggers(script: &[(u64, bool)], edge: Edge, ms: u64) -> Vec<u64> {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut debouncer = Debouncer::new(edge, Duration::from_millis(5), false);
        let mut fired = Vec::new();
        let mut changes = script.iter().peekable();
        for t in 0..ms {
            while let Some((_, high)) = changes.next_if(|(from, _)| *from == t) {
                fired.extend(debouncer.change(LevelChange { at: at(t), high: *high }));
            }
            fired.extend(debouncer.settle(at(t)));
        }
        fired.into_iter().map(|i| (i - start).as_millis() as u64).collect()
    }

    #[test]
    fn edges_are_debounced_and_dated_when_first_seen() {
        // A 2 ms glitch at 10, a real press at 30 with bounces, released at 60.
        let script = [(10, true), (12, false), (30, true), (31, false), (32, true), (60, false)];
        assert_eq!(triggers(&script, Edge::Rising, 100), [32]);
        assert_eq!(triggers(&script, Edge::Falling, 100), [60]);
        // Glitches shorter than the debounce, however many, are no trigger.
        let glitches: Vec<(u64, bool)> = (0..20).flat_map(|i| [(10 + 4 * i, true), (12 + 4 * i, false)]).collect();
        assert_eq!(triggers(&glitches, Edge::Rising, 200), Vec::<u64>::new());
    }

    /// A listener over a script of `(ms, level)` changes.
    fn listener(script: &[(u64, bool)], on_busy: OnBusy) -> TriggerListener {
        let changes = script.iter().map(|&(ms, high)| (Duration::from_millis(ms), high)).collect();
        TriggerListener::start(Box::new(ScriptedInput::new(changes)), Edge::Rising, Duration::from_millis(2), on_busy)
            .unwrap()
    }

    /// Pulses of `width` ms every `period` ms from `from`, `count` of them.
    fn pulses(from: u64, period: u64, width: u64, count: u64) -> Vec<(u64, bool)> {
        (0..count).flat_map(|i| [(from + i * period, true), (from + i * period + width, false)]).collect()
    }

    /// Runs a station stand-in that is busy for `busy` with its first part; every wait's
    /// outcome, by kind.
    fn outcomes(trigger: &mut Trigger, busy: Duration) -> Vec<&'static str> {
        let stop = AtomicBool::new(false);
        let mut seen = Vec::new();
        loop {
            let fired = trigger.wait(&stop, &mut || true).unwrap();
            seen.push(match fired {
                Fired::At(_) => "judged",
                Fired::Missed(Missed::Busy, Some(_)) => "busy",
                Fired::Missed(Missed::Overflow, None) => "overflow",
                Fired::Missed(..) => "other miss",
                Fired::Ended => return seen,
                Fired::Stop => "stop",
                Fired::Interrupted => "interrupted",
            });
            if seen == ["judged"] {
                std::thread::sleep(busy);
            }
        }
    }

    #[test]
    fn triggers_during_a_busy_part_each_get_an_error_and_none_is_lost() {
        // 3 triggers 10 ms apart while the first part takes 150 ms: the first is judged, the
        // two that came during it are missed; after a quiet gap, one more is judged.
        let mut script = pulses(100, 10, 4, 3);
        script.extend(pulses(500, 10, 4, 1));
        let mut trigger = Trigger::Input(listener(&script, OnBusy::Error));
        assert_eq!(outcomes(&mut trigger, Duration::from_millis(150)), ["judged", "busy", "busy", "judged"]);
    }

    #[test]
    fn queued_triggers_keep_their_order_and_a_full_queue_overflows_into_errors() {
        // 21 triggers during the first part; 16 wait, 4 overflow; then 2 more after it.
        let mut script = pulses(10, 6, 3, TRIGGER_QUEUE as u64 + 5);
        script.extend(pulses(400, 10, 4, 2));
        let mut trigger = Trigger::Input(listener(&script, OnBusy::Queue));
        let seen = outcomes(&mut trigger, Duration::from_millis(300));
        let mut expected = vec!["judged"; TRIGGER_QUEUE + 1];
        expected.extend(["overflow"; 4]);
        expected.extend(["judged"; 2]);
        assert_eq!(seen, expected, "every trigger accounted for, in the order they came");
    }

    #[test]
    fn the_interval_trigger_keeps_its_schedule_and_stops_on_request() {
        let mut trigger = Trigger::Interval { period: Duration::from_millis(30), next: None };
        let stop = AtomicBool::new(false);
        let mut fired = Vec::new();
        for _ in 0..4 {
            match trigger.wait(&stop, &mut || true).unwrap() {
                Fired::At(at) => fired.push(at),
                other => panic!("{other:?}"),
            }
        }
        // Dated on the schedule: exactly one period apart, whatever the waits' jitter.
        for pair in fired.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(30));
        }
        stop.store(true, Ordering::Relaxed);
        assert_eq!(trigger.wait(&stop, &mut || true).unwrap(), Fired::Stop);
    }

    #[test]
    fn a_script_is_refused_naming_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trigger.txt");
        std::fs::write(&path, "# ms level\n10 1\n20 0\n15 1\n").unwrap();
        let error = ScriptedInput::read(&path).err().unwrap();
        assert!(error.reason.contains("line 4"), "{error}");
        std::fs::write(&path, "10 high\n").unwrap();
        assert!(ScriptedInput::read(&path).err().unwrap().reason.contains("line 1"));
        std::fs::write(&path, "10 1 # pressed\n20 0\n").unwrap();
        assert!(ScriptedInput::read(&path).is_ok());
    }
}
