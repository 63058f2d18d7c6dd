//! Reject timing: a part's result goes on the lines when the part reaches the reject gate, not
//! when it is judged. The gate is a fixed time after the trigger (`reject.delay_ms`) or a fixed
//! number of ENCODER counts after it (`reject.encoder_counts`, the conveyor's travel). Parts
//! between camera and gate wait in a bounded queue ([`IN_FLIGHT`], `heapless`); a part that
//! reaches the gate before it was judged gets ERROR there (the safe state: rejected), and its
//! verdict, when it comes, is refused as late. The supervisor owns the [`Gate`]: time and counts
//! are passed in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lines::GpioError;
use super::trigger::{events_lost, EdgeSource, InputEvent, InputThread, STOP_CHECK};
use crate::verdict::Verdict;

/// Parts that can be between the camera and the gate at once.
pub const IN_FLIGHT: usize = 32;

/// Where the gate is, from the trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// This long after the trigger.
    Delay(Duration),
    /// This many ENCODER counts after the trigger.
    Counts(u64),
}

/// When a part reaches the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    At(Instant),
    Count(u64),
}

#[derive(Debug, Clone, Copy)]
struct Part {
    sequence: u64,
    slot: Slot,
    due: Due,
    verdict: Option<Verdict>,
}

/// What became of a verdict handed to the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// It waits for its part to reach the gate.
    Scheduled,
    /// Its part has passed the gate already (it got ERROR there), or was never triggered.
    Late,
}

/// A part the gate cannot track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Untracked {
    /// More parts between camera and gate than [`IN_FLIGHT`].
    #[error("more than {IN_FLIGHT} parts between the camera and the reject gate")]
    Full,
    /// A distance in time for a gate counted in ENCODER counts, or the other way round.
    #[error("a gate distance of another kind than the gate's")]
    OtherKind,
}

/// The parts between the camera and the gate, in trigger order. Parts of different recipes
/// may have different distances: each is shown when it reaches the gate, whatever its place.
#[derive(Debug)]
pub struct Gate {
    slot: Slot,
    longest_delay: Duration,
    parts: heapless::Vec<Part, IN_FLIGHT>,
}

impl Gate {
    /// A gate at `slot` from the trigger.
    pub fn new(slot: Slot) -> Self {
        let longest_delay = if let Slot::Delay(delay) = slot { delay } else { Duration::ZERO };
        Gate { slot, longest_delay, parts: heapless::Vec::new() }
    }

    /// Part `sequence` was triggered at `at`, with the ENCODER at `count`; `slot` is its own
    /// distance (its recipe's), none: the gate's.
    pub fn triggered(&mut self, sequence: u64, at: Instant, count: u64, slot: Option<Slot>) -> Result<(), Untracked> {
        let slot = slot.unwrap_or(self.slot);
        let mut due = match (self.slot, slot) {
            (Slot::Delay(_), Slot::Delay(delay)) => {
                self.longest_delay = self.longest_delay.max(delay);
                Due::At(at + delay)
            }
            (Slot::Counts(_), Slot::Counts(counts)) => Due::Count(count.saturating_add(counts)),
            _ => return Err(Untracked::OtherKind),
        };
        // A part never overtakes an earlier one at the same distance (trigger times read a few
        // microseconds apart could say otherwise).
        for earlier in self.parts.iter().filter(|p| p.slot == slot) {
            due = match (due, earlier.due) {
                (Due::At(at), Due::At(before)) => Due::At(at.max(before)),
                (Due::Count(count), Due::Count(before)) => Due::Count(count.max(before)),
                (due, _) => due,
            };
        }
        self.parts.push(Part { sequence, slot, due, verdict: None }).map_err(|_| Untracked::Full)
    }

    /// Part `sequence` was judged `verdict`.
    pub fn judged(&mut self, sequence: u64, verdict: Verdict) -> Judged {
        match self.parts.iter_mut().find(|p| p.sequence == sequence) {
            Some(part) => {
                part.verdict = Some(verdict);
                Judged::Scheduled
            }
            None => Judged::Late,
        }
    }

    /// The part that reached the gate first, if one has at `now` with the ENCODER at `count`
    /// (the earliest due; the oldest of equals): its sequence and what the lines show for it
    /// (ERROR when it was not judged in time).
    pub fn due(&mut self, now: Instant, count: u64) -> Option<(u64, Verdict)> {
        let reached = |due: &Due| match *due {
            Due::At(at) => now >= at,
            Due::Count(due) => count >= due,
        };
        let first = (0..self.parts.len()).filter(|i| reached(&self.parts[*i].due)).min_by_key(|i| {
            match self.parts[*i].due {
                Due::At(at) => (Some(at), 0),
                Due::Count(due) => (None, due),
            }
        })?;
        let part = self.parts.remove(first);
        Some((part.sequence, part.verdict.unwrap_or(Verdict::Error)))
    }

    /// When the next part reaches the gate, on a time slot.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.parts
            .iter()
            .filter_map(|p| match p.due {
                Due::At(at) => Some(at),
                Due::Count(_) => None,
            })
            .min()
    }

    /// The longest delay from trigger to gate of any part so far (zero on an encoder slot).
    pub fn delay(&self) -> Duration {
        self.longest_delay
    }

    /// Whether a part is between camera and gate.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Forgets every part (the lines went to the safe state: each is rejected there).
    pub fn clear(&mut self) {
        self.parts.clear();
    }
}

/// Counts rising edges of the ENCODER input on a thread of its own (kernel events lost to a
/// full buffer count too, two changes a count, rounded up: the gate comes early, never late).
pub struct EncoderCounter {
    count: Arc<AtomicU64>,
    _thread: InputThread,
}

impl EncoderCounter {
    /// Starts counting `source`.
    pub fn start(mut source: Box<dyn EdgeSource>) -> Result<EncoderCounter, GpioError> {
        let count = Arc::new(AtomicU64::new(0));
        let theirs = count.clone();
        let thread = InputThread::spawn("encoder", move |stop| {
            let mut failures = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match source.next(STOP_CHECK) {
                    Ok(InputEvent::Change { change, lost_before }) => {
                        let counts = events_lost(lost_before) + u64::from(change.high);
                        theirs.fetch_add(counts, Ordering::Relaxed);
                    }
                    Ok(InputEvent::Quiet) => {}
                    Ok(InputEvent::Ended) => return,
                    Err(e) => {
                        // At the 1st, 2nd, 4th, 8th… failure: a dead input must not flood the log.
                        failures += 1;
                        if failures.is_power_of_two() {
                            tracing::error!("encoder: {e} ({failures} failed reads so far)");
                        }
                        std::thread::sleep(STOP_CHECK);
                    }
                }
            }
        })?;
        Ok(EncoderCounter { count, _thread: thread })
    }

    /// Counts so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_waits_for_its_part_to_reach_the_gate_and_a_late_one_is_rejected_there() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut gate = Gate::new(Slot::Delay(Duration::from_millis(100)));
        gate.triggered(1, ms(0), 0, None).unwrap();
        gate.triggered(2, ms(30), 0, None).unwrap();
        assert_eq!(gate.judged(1, Verdict::Pass), Judged::Scheduled);
        assert_eq!(gate.due(ms(99), 0), None, "not before the gate");
        assert_eq!(gate.next_deadline(), Some(ms(100)));
        assert_eq!(gate.due(ms(100), 0), Some((1, Verdict::Pass)));
        // Part 2 is not judged when it reaches the gate: ERROR there, and its verdict is late.
        assert_eq!(gate.due(ms(130), 0), Some((2, Verdict::Error)));
        assert_eq!(gate.judged(2, Verdict::Pass), Judged::Late);
        assert!(gate.is_empty());
    }

    #[test]
    fn encoder_slots_count_from_the_trigger_and_the_queue_is_bounded() {
        let now = Instant::now();
        let mut gate = Gate::new(Slot::Counts(500));
        gate.triggered(1, now, 1000, None).unwrap();
        gate.triggered(2, now, 1200, None).unwrap();
        gate.judged(2, Verdict::Fail);
        gate.judged(1, Verdict::Pass);
        assert_eq!(gate.due(now, 1499), None);
        assert_eq!(gate.due(now, 1500), Some((1, Verdict::Pass)));
        assert_eq!(gate.due(now, 1600), None, "the conveyor has not moved part 2 far enough");
        assert_eq!(gate.due(now, 1700), Some((2, Verdict::Fail)));
        for sequence in 0..IN_FLIGHT as u64 {
            gate.triggered(sequence, now, 0, None).unwrap();
        }
        assert_eq!(gate.triggered(99, now, 0, None), Err(Untracked::Full));
    }

    #[test]
    fn parts_of_recipes_with_their_own_distances_reach_the_gate_in_their_own_time() {
        // After a recipe switch the gate is nearer: part 2 reaches it before part 1.
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut gate = Gate::new(Slot::Delay(Duration::from_millis(100)));
        gate.triggered(1, ms(0), 0, Some(Slot::Delay(Duration::from_millis(300)))).unwrap();
        gate.triggered(2, ms(20), 0, None).unwrap();
        gate.judged(1, Verdict::Fail);
        gate.judged(2, Verdict::Pass);
        assert_eq!(gate.next_deadline(), Some(ms(120)));
        assert_eq!(gate.due(ms(120), 0), Some((2, Verdict::Pass)), "part 2 does not wait behind part 1");
        assert_eq!(gate.due(ms(299), 0), None);
        assert_eq!(gate.due(ms(300), 0), Some((1, Verdict::Fail)));
        assert_eq!(gate.delay(), Duration::from_millis(300), "the longest distance bounds the drain");
        assert_eq!(gate.triggered(3, ms(0), 0, Some(Slot::Counts(5))), Err(Untracked::OtherKind));
    }

    #[test]
    fn the_encoder_counts_rising_edges() {
        let changes = (0..5u64).flat_map(|i| [(i * 4, true), (i * 4 + 2, false)]);
        let script = super::super::trigger::ScriptedInput::new(
            changes.map(|(ms, high)| (Duration::from_millis(ms), high)).collect(),
        );
        let counter = EncoderCounter::start(Box::new(script)).unwrap();
        let started = Instant::now();
        while counter.count() < 5 && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(counter.count(), 5);
    }
}
