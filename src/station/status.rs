//! What a running station tells the plant: the last result, the counters and the state of the
//! loop, written in one place by the loop ([`StatusBoard::publish`], from the same values as
//! the result record) and read by the plant networks (Modbus registers, MQTT counters and
//! result messages). The board never makes the loop wait on a reader: readers copy the status
//! out under a lock that no one holds across I/O, and results wait for the MQTT publisher in a
//! bounded queue that drops its oldest entry when full (counted), never blocking.
//!
//! Requests from the plant (a recipe switch) go the other way, through the board's request
//! queue, and are taken by the loop between parts ([`StatusBoard::take_recipe_requests`]).
//!
//! The operator interface (`hmi`) reads the same board: the statistics of recent results
//! ([`Statistics`], copied out under a lock held for the copy), the latest overlay picture
//! ([`StatusBoard::show_picture`]: the loop copies into a buffer that a reader swaps out, never
//! encoding or waiting), each recipe's calibration, and it asks for a memory swap through
//! [`StatusBoard::request_memory`], which the loop takes between parts too.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use image::RgbImage;

use super::{FrameError, RunSummary};
use crate::pipeline::Memory;
use crate::station::recipe::RecipeError;
use crate::station::supervisor::LinkError;
use crate::station::trigger::Missed;
use crate::verdict::Verdict;

/// Recipe requests that can wait for the loop; an older one is dropped for a newer.
pub const RECIPE_REQUESTS: usize = 8;
/// Results the operator interface keeps (its recent results and score plot).
pub const RECENT_RESULTS: usize = 100;
/// Recipes whose verdicts are counted apart (the plan's limit).
pub const COUNTED_RECIPES: usize = 64;
/// The timed stages of a part, as named in the metrics.
pub const STAGES: [&str; 5] = ["preprocess", "inference", "scoring", "overlay", "trigger_to_verdict"];
/// Upper bounds (milliseconds) of the latency histograms' buckets; a last one holds the rest.
pub const LATENCY_BUCKETS_MS: [f64; 12] =
    [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];
/// How many kinds of [`ErrorCause`] there are (`None` included).
pub const ERROR_CAUSES: usize = 13;

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
    /// The frame's number since start.
    pub frame: u64,
    /// When it was judged, milliseconds since 1970 (UTC).
    pub unix_ms: u64,
    /// Milliseconds in each of the first four [`STAGES`] (NaN: the stage did not run).
    pub stages_ms: [f32; 4],
}

/// A latency histogram: counts per bucket of [`LATENCY_BUCKETS_MS`] (the last: above them all)
/// and the sum.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Histogram {
    /// Observations per bucket, not cumulative.
    pub counts: [u64; LATENCY_BUCKETS_MS.len() + 1],
    /// Sum of the observations, milliseconds.
    pub sum_ms: f64,
}

impl Histogram {
    /// Counts `ms` (NaN: nothing).
    pub fn observe(&mut self, ms: f32) {
        if ms.is_nan() {
            return;
        }
        let bucket =
            LATENCY_BUCKETS_MS.iter().position(|&bound| f64::from(ms) <= bound).unwrap_or(LATENCY_BUCKETS_MS.len());
        self.counts[bucket] += 1;
        self.sum_ms += f64::from(ms);
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What the operator interface shows of the results since start.
#[derive(Debug, Clone)]
pub struct Statistics {
    /// The latest results, numbered by their sequence.
    pub recent: heapless::HistoryBuf<(u64, LastResult), RECENT_RESULTS>,
    /// PASS, FAIL and ERROR per recipe (index: recipe number - 1; results without a recipe are
    /// not counted here).
    pub by_recipe: [[u64; 3]; COUNTED_RECIPES],
    /// ERROR results per [`ErrorCause`] (index: its number).
    pub errors_by_cause: [u64; ERROR_CAUSES],
    /// Latency per stage of [`STAGES`].
    pub stages: [Histogram; STAGES.len()],
}

impl Default for Statistics {
    fn default() -> Statistics {
        Statistics {
            recent: heapless::HistoryBuf::new(),
            by_recipe: [[0; 3]; COUNTED_RECIPES],
            errors_by_cause: [0; ERROR_CAUSES],
            stages: [Histogram::default(); STAGES.len()],
        }
    }
}

impl Statistics {
    fn count(&mut self, sequence: u64, last: &LastResult) {
        self.recent.write((sequence, *last));
        let column = match last.verdict {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Error => 2,
        };
        if let Some(counts) = (last.recipe as usize).checked_sub(1).and_then(|i| self.by_recipe.get_mut(i)) {
            counts[column] += 1;
        }
        if last.verdict == Verdict::Error {
            self.errors_by_cause[last.cause as usize] += 1;
        }
        for (histogram, ms) in self.stages.iter_mut().zip(last.stages_ms.iter().chain([&last.latency_ms])) {
            histogram.observe(*ms);
        }
    }
}

/// The latest overlay picture: what the station's screen shows of a part.
#[derive(Debug, Clone, Default)]
pub struct Picture {
    /// The result it belongs to (0: none yet).
    pub sequence: u64,
    /// Its verdict.
    pub verdict: Option<Verdict>,
    /// Its recipe's number (0: none).
    pub recipe: u16,
    /// The overlay (the judged image with its anomaly map, verdict and score).
    pub overlay: RgbImage,
    /// The image as judged (the region of interest), kept only while
    /// [`StatusBoard::want_judged_images`] is on (commissioning captures); else empty.
    pub judged: RgbImage,
}

/// Pictures for the operator interface: the loop writes into the slot, readers swap it out.
struct PictureSlot {
    slot: Mutex<Picture>,
    shown: Condvar,
    judged_wanted: AtomicBool,
}

/// What a recipe was calibrated with, for the score plot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecipeCalibration {
    /// The recipe's name.
    pub name: String,
    /// Its threshold in force.
    pub threshold: f32,
    /// The leave-one-out scores of its memory's good images (empty without a memory).
    pub good_scores: Vec<f32>,
    /// Its memory file's SHA-256 prefix, if any.
    pub memory_sha256: Option<String>,
}

/// A memory the operator put in place for a recipe (commissioning), waiting for the loop.
pub struct MemorySwap {
    /// The recipe's index.
    pub recipe: usize,
    /// The memory, read back from its file.
    pub memory: Memory,
    /// The threshold the station's configuration fixes for the recipe, if any (else the
    /// memory's calibrated one).
    pub threshold: Option<f32>,
    /// Told what the loop made of it.
    pub done: std::sync::mpsc::SyncSender<Result<String, String>>,
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
    statistics: Mutex<Statistics>,
    pictures: Option<PictureSlot>,
    calibrations: Mutex<Vec<RecipeCalibration>>,
    memory_swaps: Mutex<Vec<MemorySwap>>,
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
    /// queued, only the status is kept); `pictures`: whether the loop shows its overlays here.
    pub fn new(queue: Option<usize>, pictures: bool) -> StatusBoard {
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
            statistics: Mutex::new(Statistics::default()),
            pictures: pictures.then(|| PictureSlot {
                slot: Mutex::new(Picture::default()),
                shown: Condvar::new(),
                judged_wanted: AtomicBool::new(false),
            }),
            calibrations: Mutex::new(Vec::new()),
            memory_swaps: Mutex::new(Vec::new()),
        }
    }

    /// The statistics now (a copy).
    pub fn statistics(&self) -> Statistics {
        lock(&self.statistics).clone()
    }

    /// Whether the loop should show its overlays here ([`StatusBoard::show_picture`]).
    pub fn wants_pictures(&self) -> bool {
        self.pictures.is_some()
    }

    /// Whether the loop should also keep the judged image with each picture.
    pub fn wants_judged_images(&self) -> bool {
        self.pictures.as_ref().is_some_and(|p| p.judged_wanted.load(Ordering::Relaxed))
    }

    /// Asks the loop to keep (or stop keeping) the judged image with each picture.
    pub fn want_judged_images(&self, wanted: bool) {
        if let Some(pictures) = &self.pictures {
            pictures.judged_wanted.store(wanted, Ordering::Relaxed);
        }
    }

    /// The loop: result `sequence`'s overlay (and the judged image, when wanted) copied into
    /// the slot, reusing its buffers.
    pub fn show_picture(&self, sequence: u64, last: &LastResult, overlay: &RgbImage, judged: Option<&RgbImage>) {
        let Some(pictures) = &self.pictures else { return };
        let mut slot = lock(&pictures.slot);
        slot.sequence = sequence;
        slot.verdict = Some(last.verdict);
        slot.recipe = last.recipe;
        copy_image(overlay, &mut slot.overlay);
        match judged.filter(|_| pictures.judged_wanted.load(Ordering::Relaxed)) {
            Some(judged) => copy_image(judged, &mut slot.judged),
            None => slot.judged = RgbImage::new(0, 0),
        }
        drop(slot);
        pictures.shown.notify_all();
    }

    /// The first picture after result `after`, swapped into `into` (whose old buffers the
    /// loop reuses), waiting at most `timeout`; false when none came.
    pub fn take_picture(&self, after: u64, timeout: Duration, into: &mut Picture) -> bool {
        let Some(pictures) = &self.pictures else { return false };
        let mut slot = lock(&pictures.slot);
        if slot.sequence <= after {
            slot = pictures
                .shown
                .wait_timeout_while(slot, timeout, |s| s.sequence <= after)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if slot.sequence <= after {
            return false;
        }
        std::mem::swap(&mut *slot, into);
        // The slot keeps its sequence: a reader never takes the same picture twice.
        slot.sequence = into.sequence;
        true
    }

    /// The recipes' calibrations (the loop sets them at start and after a memory swap).
    pub fn calibrations(&self) -> Vec<RecipeCalibration> {
        lock(&self.calibrations).clone()
    }

    /// Sets recipe `index`'s calibration.
    pub fn set_calibration(&self, index: usize, calibration: RecipeCalibration) {
        let mut all = lock(&self.calibrations);
        if all.len() <= index {
            all.resize(index + 1, RecipeCalibration::default());
        }
        all[index] = calibration;
    }

    /// Asks the loop to judge recipe `swap.recipe`'s parts against a new memory from the next
    /// part on; `swap.done` is told the outcome.
    pub fn request_memory(&self, swap: MemorySwap) {
        lock(&self.memory_swaps).push(swap);
    }

    /// The memory swaps waiting, oldest first, each given to `take`.
    pub fn take_memory_swaps(&self, mut take: impl FnMut(MemorySwap)) {
        let mut swaps = lock(&self.memory_swaps);
        if swaps.is_empty() {
            return;
        }
        for swap in std::mem::take(&mut *swaps) {
            take(swap);
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
    /// dropped and counted (the first, second, fourth… drop is logged). Returns the result's
    /// sequence number.
    pub fn publish(&self, last: LastResult, counters: RunSummary, json: Option<&[u8]>) -> u64 {
        let mut sequence = 0;
        self.update(|status| {
            status.sequence += 1;
            sequence = status.sequence;
            status.last = Some(last);
            status.counters = counters;
        });
        lock(&self.statistics).count(sequence, &last);
        let (Some(queue), Some(json)) = (&self.results, json) else { return sequence };
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
        sequence
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

/// Copies `from` into `to`, reusing `to`'s buffer when the size is the same.
fn copy_image(from: &RgbImage, to: &mut RgbImage) {
    if to.dimensions() == from.dimensions() {
        to.copy_from_slice(from.as_raw());
    } else {
        *to = from.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(verdict: Verdict) -> LastResult {
        let (score, threshold, part_id, latency_ms) = (Some(0.1), 0.5, None, 1.0);
        let (frame, unix_ms, stages_ms) = (1, 0, [1.0, 2.0, f32::NAN, 0.5]);
        LastResult {
            verdict,
            score,
            threshold,
            part_id,
            cause: ErrorCause::None,
            recipe: 1,
            latency_ms,
            frame,
            unix_ms,
            stages_ms,
        }
    }

    #[test]
    fn statistics_count_verdicts_by_recipe_errors_by_cause_and_stage_latencies() {
        let board = StatusBoard::new(None, false);
        board.publish(result(Verdict::Pass), RunSummary::default(), None);
        let mut error = result(Verdict::Error);
        (error.cause, error.recipe, error.latency_ms) = (ErrorCause::Stale, 2, 7000.0);
        board.publish(error, RunSummary::default(), None);
        let stats = board.statistics();
        assert_eq!(
            stats.recent.oldest_ordered().map(|(s, r)| (*s, r.verdict)).collect::<Vec<_>>(),
            [(1, Verdict::Pass), (2, Verdict::Error)]
        );
        assert_eq!((stats.by_recipe[0], stats.by_recipe[1]), ([1, 0, 0], [0, 0, 1]));
        assert_eq!(stats.errors_by_cause[ErrorCause::Stale as usize], 1);
        // preprocess 1 ms (bucket <= 1) twice; scoring NaN never; trigger-to-verdict 1 ms and
        // 7000 ms (above every bound).
        assert_eq!((stats.stages[0].counts[0], stats.stages[0].count()), (2, 2));
        assert_eq!(stats.stages[2].count(), 0);
        assert_eq!(stats.stages[4].counts[LATENCY_BUCKETS_MS.len()], 1);
        assert_eq!(stats.stages[4].sum_ms, 7001.0);
    }

    #[test]
    fn a_picture_is_taken_once_and_the_judged_image_only_while_wanted() {
        let board = StatusBoard::new(None, true);
        let (overlay, judged) = (RgbImage::new(4, 2), RgbImage::new(3, 3));
        let mut taken = Picture::default();
        assert!(!board.take_picture(0, Duration::from_millis(1), &mut taken));
        board.show_picture(1, &result(Verdict::Fail), &overlay, Some(&judged));
        assert!(board.take_picture(0, Duration::ZERO, &mut taken));
        assert_eq!((taken.sequence, taken.overlay.dimensions(), taken.judged.dimensions()), (1, (4, 2), (0, 0)));
        assert!(!board.take_picture(1, Duration::from_millis(1), &mut taken), "the same picture twice");
        board.want_judged_images(true);
        board.show_picture(2, &result(Verdict::Pass), &overlay, Some(&judged));
        assert!(board.take_picture(1, Duration::ZERO, &mut taken));
        assert_eq!((taken.sequence, taken.verdict, taken.judged.dimensions()), (2, Some(Verdict::Pass), (3, 3)));
    }

    #[test]
    fn every_result_moves_the_sequence_and_the_queue_drops_its_oldest() {
        let board = StatusBoard::new(Some(3), false);
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
        let board = StatusBoard::new(None, false);
        board.publish(result(Verdict::Fail), RunSummary::default(), Some(b"x"));
        assert!(!board.wants_results());
        assert_eq!(board.status().last.map(|l| l.verdict), Some(Verdict::Fail));
        assert!(board.next_result(0, Duration::ZERO).is_none());
    }

    #[test]
    fn recipe_requests_are_taken_in_order_and_a_full_queue_drops_the_oldest() {
        let board = StatusBoard::new(None, false);
        let now = Instant::now();
        for index in 0..RECIPE_REQUESTS + 2 {
            board.request_recipe(index, now);
        }
        let mut taken = Vec::new();
        board.take_recipe_requests(|(index, _)| taken.push(index));
        assert_eq!(taken, (2..RECIPE_REQUESTS + 2).collect::<Vec<_>>());
    }
}
