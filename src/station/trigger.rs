//! When to take a frame: free-run, a fixed interval, or an edge on the TRIGGER input.
//!
//! Waiting is done in slices of at most [`STOP_CHECK`], so a stop request (SIGTERM) is seen
//! promptly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::lines::{GpioError, Input};

/// Longest wait between checks of the stop flag.
pub const STOP_CHECK: Duration = Duration::from_millis(20);
/// How often the TRIGGER input is sampled.
pub(crate) const INPUT_POLL: Duration = Duration::from_millis(1);

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

/// What a wait ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// Take a frame; the instant the trigger happened (latency is measured from it).
    At(Instant),
    /// Stop was requested.
    Stop,
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
    /// One frame per debounced edge of an input.
    Input(EdgeDetector),
}

/// Debounced edge detection on a sampled input: a new level counts once it has held for the
/// debounce time; the edge's instant is when the change was first seen.
pub struct EdgeDetector {
    input: Input,
    edge: Edge,
    debounce: Duration,
    /// The accepted level; `None` until the first sample.
    stable: Option<bool>,
    /// A level change being debounced, and when it was first seen.
    changing: Option<(bool, Instant)>,
}

impl EdgeDetector {
    /// Detects `edge` on `input`, debounced by `debounce`.
    pub fn new(input: Input, edge: Edge, debounce: Duration) -> Self {
        EdgeDetector { input, edge, debounce, stable: None, changing: None }
    }

    /// Takes one sample at `now`; returns the instant of a completed, debounced trigger edge.
    pub fn sample(&mut self, now: Instant) -> Result<Option<Instant>, GpioError> {
        let level = self.input.is_high()?;
        let Some(stable) = self.stable else {
            self.stable = Some(level);
            return Ok(None);
        };
        if level == stable {
            self.changing = None;
            return Ok(None);
        }
        let since = match self.changing {
            Some((pending, since)) if pending == level => since,
            _ => {
                self.changing = Some((level, now));
                now
            }
        };
        if now.duration_since(since) < self.debounce {
            return Ok(None);
        }
        self.stable = Some(level);
        self.changing = None;
        let wanted = match self.edge {
            Edge::Rising => level,
            Edge::Falling => !level,
        };
        Ok(wanted.then_some(since))
    }
}

impl Trigger {
    /// Waits for the next trigger, or a stop request; `idle` is called at least every
    /// [`STOP_CHECK`] while waiting (the station sends its watchdog heartbeat there).
    pub fn wait(&mut self, stop: &AtomicBool, idle: &mut dyn FnMut()) -> Result<Fired, GpioError> {
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) {
                return Ok(Fired::Stop);
            }
            idle();
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
                Trigger::Input(detector) => {
                    if let Some(at) = detector.sample(now)? {
                        return Ok(Fired::At(at));
                    }
                    std::thread::sleep(INPUT_POLL);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::digital::{ErrorType, InputPin};
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};

    /// An input that plays a script of `(from ms, level)` steps against a shared clock.
    struct ScriptedInput {
        start: Instant,
        now: Arc<Mutex<Instant>>,
        script: Vec<(u64, bool)>,
    }

    impl ErrorType for ScriptedInput {
        type Error = GpioError;
    }

    impl InputPin for ScriptedInput {
        fn is_high(&mut self) -> Result<bool, GpioError> {
            let elapsed = (*self.now.lock().unwrap() - self.start).as_millis() as u64;
            Ok(self.script.iter().rev().find(|(from, _)| *from <= elapsed).map(|(_, level)| *level).unwrap_or(false))
        }
        fn is_low(&mut self) -> Result<bool, GpioError> {
            self.is_high().map(|h| !h)
        }
    }

    /// Samples the script every millisecond for `ms`; the trigger instants, in ms from start.
    fn triggers(script: &[(u64, bool)], edge: Edge, ms: u64) -> Vec<u64> {
        let start = Instant::now();
        let now = Arc::new(Mutex::new(start));
        let input = ScriptedInput { start, now: now.clone(), script: script.to_vec() };
        let mut detector = EdgeDetector::new(Box::new(input) as Input, edge, Duration::from_millis(5));
        let mut fired = Vec::new();
        for t in 0..ms {
            let at = start + Duration::from_millis(t);
            *now.lock().unwrap() = at;
            if let Some(edge_at) = detector.sample(at).unwrap() {
                fired.push((edge_at - start).as_millis() as u64);
            }
        }
        fired
    }

    #[test]
    fn edges_are_debounced_and_dated_when_first_seen() {
        // A 2 ms glitch at 10, a real press at 30 with bounces, released at 60.
        let script = [(0, false), (10, true), (12, false), (30, true), (31, false), (32, true), (60, false)];
        assert_eq!(triggers(&script, Edge::Rising, 100), [32]);
        assert_eq!(triggers(&script, Edge::Falling, 100), [60]);
        // A level already high at start is not an edge.
        assert_eq!(triggers(&[(0, true)], Edge::Rising, 50), Vec::<u64>::new());
    }

    #[test]
    fn the_interval_trigger_keeps_its_schedule_and_stops_on_request() {
        let mut trigger = Trigger::Interval { period: Duration::from_millis(30), next: None };
        let stop = AtomicBool::new(false);
        let mut fired = Vec::new();
        for _ in 0..4 {
            match trigger.wait(&stop, &mut || {}).unwrap() {
                Fired::At(at) => fired.push(at),
                Fired::Stop => panic!("not asked to stop"),
            }
        }
        // Dated on the schedule: exactly one period apart, whatever the waits' jitter.
        for pair in fired.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(30));
        }
        stop.store(true, Ordering::Relaxed);
        assert_eq!(trigger.wait(&stop, &mut || {}).unwrap(), Fired::Stop);
    }
}
