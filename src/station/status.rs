//! What a running station tells the plant: the last result, the counters and the state of the
//! loop, written in one place by the loop ([`StatusBoard::publish`], from the same values as
//! the result record) and read by the plant networks (Modbus registers, MQTT counters and
//! result messages). The board never makes the loop wait on a reader: readers copy the status
//! out under a lock that no one holds across I/O, and results wait for the MQTT publisher in a
//! bounded queue that drops its oldest entry when full (counted), never blocking.
//!
//! Requests from the plant (a recipe switch) go the other way, through the board's request
//! queue, and are taken by the loop between parts ([`StatusBoard::take_recipe_requests`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{FrameError, RunSummary};
use crate::station::recipe::RecipeError;
use crate::station::supervisor::LinkError;
use crate::station::trigger::Missed;
use crate::verdict::Verdict;

/// Recipe requests that can wait for the loop; an older one is dropped for a newer.
pub const RECIPE_REQUESTS: usize = 8;

/// Why a result is ERROR, as a number for a PLC (Modbus input register, README's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u16)]
pub enum ErrorCause {
    /// Not an ERROR.
    #[default]
    None = 0,
    /// The trigger input could not be read.
    Trigger = 1,
    /// No frame could be had from the source.
    Source = 2,
    /// The region of interest does not fit the frame.
    Roi = 3,
    /// No frame exposed after the trigger came in time.
    Stale = 4,
    /// The trigger came while the station was busy.
    MissedBusy = 5,
    /// More triggers came than could wait.
    MissedOverflow = 6,
    /// The recipe select inputs could not be read.
    RecipeSelect = 7,
    /// The select inputs gave a number no recipe has.
    RecipeUnknown = 8,
    /// The recipe's self-test failed and was not acknowledged.
    SelfTestFault = 9,
    /// The frame could not be judged (model, outputs, scores).
    Inspect = 10,
    /// The source ended before a frame of the part was taken.
    SourceEnded = 11,
    /// The part reached the reject gate before its result could be shown.
    LateAtGate = 12,
}

impl ErrorCause {
    /// The cause of `error`.
    pub fn of(error: &FrameError) -> ErrorCause {
        match error {
            FrameError::Trigger(_) => ErrorCause::Trigger,
            FrameError::Source(_) => ErrorCause::Source,
            FrameError::Roi { .. } => ErrorCause::Roi,
            FrameError::Stale { .. } => ErrorCause::Stale,
            FrameError::Missed(Missed::Busy) => ErrorCause::MissedBusy,
            FrameError::Missed(Missed::Overflow) => ErrorCause::MissedOverflow,
            FrameError::Recipe(RecipeError::Select(_)) => ErrorCause::RecipeSelect,
            FrameError::Recipe(RecipeError::Unknown(_)) => ErrorCause::RecipeUnknown,
            FrameError::Recipe(RecipeError::Fault { .. }) => ErrorCause::SelfTestFault,
            FrameError::Inspect(_) => ErrorCause::Inspect,
            FrameError::SourceEnded => ErrorCause::SourceEnded,
        }
    }

    /// The cause of a result: its frame's error, else the gate's (`late`), else none.
    pub fn of_result(error: Option<&FrameError>, late: Option<&LinkError>) -> ErrorCause {
        match (error, late) {
            (Some(error), _) => ErrorCause::of(error),
            (None, Some(_)) => ErrorCause::LateAtGate,
            (None, None) => ErrorCause::None,
        }
    }
}

/// The last result, as the plant sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastResult {
    /// Its verdict.
    pub verdict: Verdict,
    /// Its image score; none for ERROR.
    pub score: Option<f32>,
    /// The threshold it was judged against (NaN when it had no recipe).
    pub threshold: f32,
    /// Its part ID, when the station keeps them.
    pub part_id: Option<u64>,
    /// Why it is ERROR.
    pub cause: ErrorCause,
    /// Its recipe's number (1-based place in the file; 0: none).
    pub recipe: u16,
    /// Trigger to verdict, milliseconds.
    pub latency_ms: f32,
}

/// The station as the plant sees it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StationStatus {
    /// Results since start: it grows by one with every result, so a reader sees each new one
    /// even when it equals the last.
    pub sequence: u64,
    /// The last result.
    pub last: Option<LastResult>,
    /// Counters since start.
    pub counters: RunSummary,
    /// The loop is running (it judged its warm-up and self-test and waits for parts).
    pub ready: bool,
    /// A part is being judged (BUSY).
    pub busy: bool,
    /// The recipe the next part gets (1-based).
    pub recipe: u16,
    /// A recipe's self-test failed and waits for an operator.
    pub self_test_fault: bool,
    /// A drift warning is raised.
    pub drift_warning: bool,
}

/// A result line waiting for the MQTT publisher, numbered in the order results came.
#[derive(Debug, Clone)]
pub struct QueuedResult {
    /// Its number (from 1, no gaps).
    pub number: u64,
    /// The result record as JSON (the result log's line).
    pub json: Arc<[u8]>,
}

/// Results waiting to be delivered: bounded, the oldest dropped when full.
struct ResultQueue {
    lines: Mutex<VecDeque<QueuedResult>>,
    arrived: Condvar,
    capacity: usize,
    next: AtomicU64,
    dropped: AtomicU64,
}

/// A recipe switch asked for by the plant: the recipe's index, and when.
pub type RecipeRequest = (usize, Instant);

/// The station's status and the results waiting for the plant, shared between the loop (the
/// only writer) and the plant networks.
pub struct StatusBoard {
    status: Mutex<StationStatus>,
    results: Option<ResultQueue>,
    requests: Mutex<heapless::Deque<RecipeRequest, RECIPE_REQUESTS>>,
}

/// Puts `request` at the back of `queue`, dropping the oldest when it is full (a later recipe
/// request overrides an earlier one).
pub fn push_dropping_oldest<T, const N: usize>(queue: &mut heapless::Deque<T, N>, request: T) {
    if queue.is_full() {
        queue.pop_front();
    }
    let _ = queue.push_back(request);
}

/// Locks `mutex`, taking its value as it is when a holder panicked (every holder here leaves
/// it consistent at each step).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StatusBoard {
    /// A board; `queue`: how many results may wait for a publisher (none: results are not
    /// queued, only the status is kept).
    pub fn new(queue: Option<usize>) -> StatusBoard {
        StatusBoard {
            status: Mutex::new(StationStatus::default()),
            results: queue.map(|capacity| ResultQueue {
                lines: Mutex::new(VecDeque::with_capacity(capacity)),
                arrived: Condvar::new(),
                capacity: capacity.max(1),
                next: AtomicU64::new(1),
                dropped: AtomicU64::new(0),
            }),
            requests: Mutex::new(heapless::Deque::new()),
        }
    }

    /// The status now (a copy), its counters with the results dropped from the queue.
    pub fn status(&self) -> StationStatus {
        let mut status = *lock(&self.status);
        status.counters.mqtt_dropped = self.results.as_ref().map_or(0, |q| q.dropped.load(Ordering::Relaxed));
        status
    }

    /// Changes the status (the loop: state changes between results).
    pub fn update(&self, change: impl FnOnce(&mut StationStatus)) {
        change(&mut lock(&self.status));
    }

    /// Whether results are queued for a publisher (then [`StatusBoard::publish`] wants the
    /// result's JSON).
    pub fn wants_results(&self) -> bool {
        self.results.is_some()
    }

    /// One result: the status gets it and its counters, and its JSON line (when results are
    /// queued) waits for the publisher; when the queue is full, the oldest waiting result is
    /// dropped and counted (the first, second, fourth… drop is logged).
    pub fn publish(&self, last: LastResult, counters: RunSummary, json: Option<&[u8]>) {
        self.update(|status| {
            status.sequence += 1;
            status.last = Some(last);
            status.counters = counters;
        });
        let (Some(queue), Some(json)) = (&self.results, json) else { return };
        let number = queue.next.fetch_add(1, Ordering::Relaxed);
        let mut lines = lock(&queue.lines);
        if lines.len() >= queue.capacity {
            lines.pop_front();
            let dropped = queue.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    "mqtt: {dropped} results dropped so far: the broker has been away for more than {} results (`mqtt.queue`)",
                    queue.capacity
                );
            }
        }
        lines.push_back(QueuedResult { number, json: json.into() });
        drop(lines);
        queue.arrived.notify_all();
    }

    /// The first waiting result numbered `after + 1` or later, waiting at most `timeout` for
    /// one to come.
    pub fn next_result(&self, after: u64, timeout: Duration) -> Option<QueuedResult> {
        let queue = self.results.as_ref()?;
        let mut lines = lock(&queue.lines);
        let find = |lines: &VecDeque<QueuedResult>| lines.iter().find(|r| r.number > after).cloned();
        if let Some(found) = find(&lines) {
            return Some(found);
        }
        lines = queue.arrived.wait_timeout(lines, timeout).unwrap_or_else(|p| p.into_inner()).0;
        find(&lines)
    }

    /// Removes result `number` (delivered) and any older still waiting; their delivery is
    /// confirmed in order.
    pub fn delivered(&self, number: u64) {
        if let Some(queue) = &self.results {
            lock(&queue.lines).retain(|r| r.number > number);
        }
    }

    /// The number of the oldest waiting result, if any.
    pub fn oldest_waiting(&self) -> Option<u64> {
        self.results.as_ref().and_then(|q| lock(&q.lines).front().map(|r| r.number))
    }

    /// How many results wait.
    pub fn waiting(&self) -> usize {
        self.results.as_ref().map_or(0, |q| lock(&q.lines).len())
    }

    /// Asks for recipe `index` for the parts triggered after `asked`; a full queue drops its
    /// oldest request. The status shows it as the next part's recipe at once.
    pub fn request_recipe(&self, index: usize, asked: Instant) {
        push_dropping_oldest(&mut lock(&self.requests), (index, asked));
        let number = u16::try_from(index + 1).unwrap_or(u16::MAX);
        self.update(|status| status.recipe = number);
    }

    /// The recipe requests waiting, oldest first, each given to `take`.
    pub fn take_recipe_requests(&self, mut take: impl FnMut(RecipeRequest)) {
        let mut requests = lock(&self.requests);
        while let Some(request) = requests.pop_front() {
            take(request);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(verdict: Verdict) -> LastResult {
        let (score, threshold, part_id, latency_ms) = (Some(0.1), 0.5, None, 1.0);
        LastResult { verdict, score, threshold, part_id, cause: ErrorCause::None, recipe: 1, latency_ms }
    }

    #[test]
    fn every_result_moves_the_sequence_and_the_queue_drops_its_oldest() {
        let board = StatusBoard::new(Some(3));
        for i in 0..5u8 {
            board.publish(result(Verdict::Pass), RunSummary::default(), Some(&[b'0' + i]));
        }
        let status = board.status();
        assert_eq!((status.sequence, status.counters.mqtt_dropped), (5, 2));
        // Results 1 and 2 were dropped; 3, 4 and 5 wait, in order.
        let first = board.next_result(0, Duration::ZERO).unwrap();
        assert_eq!((first.number, &*first.json), (3, &b"2"[..]));
        assert_eq!(board.next_result(3, Duration::ZERO).unwrap().number, 4);
        board.delivered(4);
        assert_eq!(board.oldest_waiting(), Some(5));
        assert_eq!(board.waiting(), 1);
        assert!(board.next_result(5, Duration::from_millis(1)).is_none());
    }

    #[test]
    fn a_board_without_a_queue_keeps_only_the_status() {
        let board = StatusBoard::new(None);
        board.publish(result(Verdict::Fail), RunSummary::default(), Some(b"x"));
        assert!(!board.wants_results());
        assert_eq!(board.status().last.map(|l| l.verdict), Some(Verdict::Fail));
        assert!(board.next_result(0, Duration::ZERO).is_none());
    }

    #[test]
    fn recipe_requests_are_taken_in_order_and_a_full_queue_drops_the_oldest() {
        let board = StatusBoard::new(None);
        let now = Instant::now();
        for index in 0..RECIPE_REQUESTS + 2 {
            board.request_recipe(index, now);
        }
        let mut taken = Vec::new();
        board.take_recipe_requests(|(index, _)| taken.push(index));
        assert_eq!(taken, (2..RECIPE_REQUESTS + 2).collect::<Vec<_>>());
    }
}
