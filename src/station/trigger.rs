//! When to take a frame: free-run, a fixed interval, or an edge on the TRIGGER input.
//!
//! Waiting is done in slices of at most [`STOP_CHECK`], so a stop request (SIGTERM) is seen
//! promptly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::config::Edge;
use super::gpio::{GpioError, Input};

/// Longest wait between checks of the stop flag.
pub const STOP_CHECK: Duration = Duration::from_millis(20);
/// How often the TRIGGER input is sampled.
pub const INPUT_POLL: Duration = Duration::from_millis(1);

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
