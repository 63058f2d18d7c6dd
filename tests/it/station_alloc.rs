//! After warm-up, the station loop allocates nothing per frame: every allocation of the
//! loop's thread is counted while the loop judges many frames, with a stand-in engine (tract and
//! ONNX Runtime allocate inside their own runs, which is theirs), a synthetic source (image
//! decoders allocate), a region of interest, the memory branch, a file framebuffer, the
//! recording GPIO and the result log. (Saving a failed part encodes PNGs, which allocates:
//! that happens per failure, not per frame, and is left out here.)

use crate::common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clipada::memory::MemoryBank;
use clipada::model::{Engine, EngineError, EngineInfo, ModelFile, Precision, RawOutputs};
use clipada::pipeline::{Extractor, Inspector, Memory};
use clipada::sink::framebuffer::Framebuffer;
use clipada::source::{Frame, FrameSource, SourceError};
use clipada::station::control::ControlServer;
use clipada::station::lines::{
    Handshake, LineSettings, Output, OutputMode, Recorder, RecordingPin, SafeState, VerdictLines, OUTPUT_NAMES,
};
use clipada::station::log::{PartIds, ResultLog, Rotation};
use clipada::station::monitor::DriftWatch;
use clipada::station::recipe::Recipes;
use clipada::station::supervisor;
use clipada::station::trigger::Trigger;
use clipada::station::{Roi, Station, StationParts, Step};
use clipada::verdict::Verdict;
use image::RgbImage;

/// Counts the allocations of each thread, so that tests running beside this one in the same
/// binary do not disturb its count.
struct CountingAllocator;

thread_local! {
    /// Allocations made by this thread (const-initialised: reading it never allocates).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // During thread teardown the slot may be gone: those allocations are not the loop's.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

fn allocations_so_far() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static COUNTING: CountingAllocator = CountingAllocator;

/// Outputs that change from frame to frame, so scores (and verdicts) vary.
struct StandInEngine {
    calls: u32,
}

impl Engine for StandInEngine {
    fn run(&mut self, input: &[f32], out: &mut RawOutputs) -> Result<(), EngineError> {
        self.calls += 1;
        let phase = self.calls as f32 * 0.7 + input[0];
        for buffer in [&mut out.patch_logits, &mut out.image_logits, &mut out.patch_features].into_iter().flatten() {
            for (i, v) in buffer.iter_mut().enumerate() {
                *v = (i as f32 * 0.37 + phase).sin();
            }
        }
        // Features are unit length per layer, as the contract says.
        if let Some(features) = &mut out.patch_features {
            for vector in features.chunks_exact_mut(FEATURE_DIM) {
                let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
                vector.iter_mut().for_each(|v| *v /= norm);
            }
        }
        Ok(())
    }

    fn info(&self) -> EngineInfo {
        EngineInfo { engine: "stand-in", provider: "cpu", precision: Precision::Fp32 }
    }
}

/// The tiny fixture's feature size.
const FEATURE_DIM: usize = 32;

/// A moving pattern, drawn into the frame buffer in place.
struct PatternSource {
    frame: u32,
}

impl FrameSource for PatternSource {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
        frame.captured = std::time::Instant::now();
        let frame = &mut frame.image;
        if frame.dimensions() != (320, 240) {
            *frame = RgbImage::new(320, 240);
        }
        self.frame += 1;
        for (x, y, p) in frame.enumerate_pixels_mut() {
            let v = ((x + y + self.frame * 7) % 256) as u8;
            *p = image::Rgb([v, v / 2, 255 - v]);
        }
        Ok(true)
    }
}

#[test]
fn the_station_loop_allocates_nothing_per_frame_after_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = ModelFile::open(&common::tiny_model()).unwrap();
    let spec = file.spec.clone();
    let (layers, dim) = (spec.layer_count(), spec.feature_dim.unwrap());
    assert_eq!(dim, FEATURE_DIM);
    let extractor = Extractor::new(spec.clone(), file.sha256.clone(), Box::new(StandInEngine { calls: 0 }));
    let mut features: Vec<f32> = (0..300 * layers * dim).map(|i| (i as f32 * 0.11).cos()).collect();
    for vector in features.chunks_exact_mut(dim) {
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        vector.iter_mut().for_each(|v| *v /= norm);
    }
    let bank = MemoryBank {
        made_for: extractor.made_for(false),
        layers,
        dim,
        grid: spec.grid,
        features,
        sources: (0..300).map(|i| i / 30).collect(),
        threshold: None,
        good_images: 10,
        good_scores: Vec::new(),
    };
    let memory = Memory { bank, path: dir.path().join("stand-in.memory"), sha256: None };
    // The stand-in's scores swing between about 0.55 and 0.65: both verdicts occur.
    let inspector = Inspector::new(extractor, false, Some(&memory), Some(0.6)).unwrap();
    let recorder = Recorder::create(&dir.path().join("gpio.log")).unwrap();
    let pin = |name| Box::new(RecordingPin::new(name, recorder.clone())) as Output;
    let settings = LineSettings {
        active_low: false,
        mode: OutputMode::Level,
        pulse: Duration::from_millis(10),
        safe: SafeState::default(),
        handshake: Handshake { settle: Duration::from_millis(1), valid: Duration::from_millis(2) },
    };
    let lines = VerdictLines::new(OUTPUT_NAMES.map(pin), settings);
    let (mut supervisor, link) = supervisor::pair(lines, Duration::from_secs(2)).unwrap();
    let supervisor_stop = std::sync::Arc::new(AtomicBool::new(false));
    let stop_supervisor = supervisor_stop.clone();
    let supervising = std::thread::spawn(move || supervisor.run(&stop_supervisor));
    // A drift watch on the recipe: its median is taken over the full window at every PASS.
    let roi = Some(Roi { x: 10, y: 20, width: 200, height: 180 });
    let mut recipes = Recipes::single(inspector, roi, Some(&"ab".repeat(32)));
    recipes.get_mut(0).drift = DriftWatch::new(&[0.5, 0.55, 0.58], 0.6, 100, 0.5);
    let parts = StationParts {
        recipes,
        source: Box::new(PatternSource { frame: 0 }),
        trigger: Trigger::FreeRun,
        freshness: clipada::station::Freshness { delay: Duration::ZERO, timeout: Duration::from_secs(2) },
        display: Some(Framebuffer::open(&dir.path().join("fb"), Some((160, 120, 32))).unwrap()),
        results: Some(ResultLog::open(&dir.path().join("results.jsonl"), Rotation::NEVER).unwrap()),
        archive: None,
        part_ids: Some(PartIds::open(&dir.path().join("state")).unwrap()),
        control: Some(ControlServer::bind(&dir.path().join("state")).unwrap()),
        self_test_every: None,
        plant: None,
        hmi: None,
        board: None,
    };
    let mut station = Station::new(parts, link);
    let stop = AtomicBool::new(false);
    for _ in 0..10 {
        station.step(&stop).unwrap();
    }
    let before = allocations_so_far();
    let mut verdicts = [0usize; 3];
    for _ in 0..200 {
        match station.step(&stop).unwrap() {
            Step::Judged(Verdict::Pass) => verdicts[0] += 1,
            Step::Judged(Verdict::Fail) => verdicts[1] += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let allocations = allocations_so_far() - before;
    assert_eq!(allocations, 0, "allocations in 200 frames (verdicts pass/fail: {verdicts:?})");
    // Both verdicts happened, so both paths through the loop were measured.
    assert!(verdicts[0] > 0 && verdicts[1] > 0, "{verdicts:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap().lines().count(), 210);
    supervisor_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    supervising.join().unwrap();
}
