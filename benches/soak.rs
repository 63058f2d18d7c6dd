//! Soak benchmark of the fail-safe rules: 10 000 frames through the replay station (the shipped
//! default model and sample parts, looping, recording GPIO, result log, failed-parts folder)
//! with a fault every ~100 frames, in turn:
//!
//! - a corrupt image (a JPEG cut short, through the real decoder),
//! - non-finite engine output (the real engine's outputs times NaN, through a stand-in wrapper),
//! - the source gone for three frames and back,
//! - a full disk for ten frames (the result log's file-size limit lowered: writes fail).
//!
//! It reports resident memory after warm-up and at the end (flat within 5 % is the target),
//! the verdict of every faulted frame (each must be ERROR, with the lines in the safe state,
//! and none PASS), and the time from SIGTERM to the binary's exit at random points, start-up
//! included (the target is 100 ms).
//!
//!     cargo bench --bench soak [-- FRAMES]
//!
//! Needs the demo's memory (`cargo run --release -- demo`) and, for ONNX Runtime,
//! `ORT_DYLIB_PATH`; prints one JSON object.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clipada::model::{load_engine, Engine, EngineConfig, EngineError, EngineInfo, ModelFile, RawOutputs};
use clipada::pipeline::{Extractor, Inspector, Memory};
use clipada::source::decode::decode_rgb;
use clipada::source::directory::DirectorySource;
use clipada::source::{Frame, FrameSource, SourceError, SourceErrorKind};
use clipada::station::assemble::run_in_process;
use clipada::station::plan::StationPlan;
use clipada::station::recipe::Recipes;

/// Frames between faults.
const FAULT_EVERY: u64 = 100;
/// Frames before resident memory is first read.
const WARM_UP: u64 = 500;

/// The fault planned for a frame, by its number (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    CorruptImage,
    NonFinite,
    SourceGone,
    DiskFull,
}

fn fault_of(frame: u64) -> Option<Fault> {
    let slot = frame % FAULT_EVERY;
    let round = frame / FAULT_EVERY;
    let kind = [Fault::CorruptImage, Fault::NonFinite, Fault::SourceGone, Fault::DiskFull][(round % 4) as usize];
    let length = match kind {
        Fault::SourceGone => 3,
        Fault::DiskFull => 10,
        _ => 1,
    };
    (frame > FAULT_EVERY && slot >= 50 && slot < 50 + length).then_some(kind)
}

/// The frame being judged, shared by the wrappers.
#[derive(Default)]
struct Clock {
    frame: AtomicU64,
}

struct FaultySource {
    inner: DirectorySource,
    clock: Arc<Clock>,
    corrupt: Vec<u8>,
    log: PathBuf,
    frames: u64,
}

impl FrameSource for FaultySource {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
        let n = self.clock.frame.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.frames {
            return Ok(false);
        }
        set_file_size_limit(if fault_of(n) == Some(Fault::DiskFull) { file_size(&self.log) } else { u64::MAX });
        match fault_of(n) {
            Some(Fault::CorruptImage) => {
                let error = decode_rgb(&self.corrupt).expect_err("the cut JPEG is refused");
                Err(SourceError { kind: SourceErrorKind::BadFrame, origin: "soak".into(), reason: error.to_string() })
            }
            Some(Fault::SourceGone) => {
                Err(SourceError { kind: SourceErrorKind::Gone, origin: "soak".into(), reason: "gone".into() })
            }
            _ => self.inner.next_frame(frame),
        }
    }
}

struct FaultyEngine {
    inner: Box<dyn Engine>,
    clock: Arc<Clock>,
}

impl Engine for FaultyEngine {
    fn run(&mut self, input: &[f32], out: &mut RawOutputs) -> Result<(), EngineError> {
        self.inner.run(input, out)?;
        if fault_of(self.clock.frame.load(Ordering::Relaxed)) == Some(Fault::NonFinite) {
            for buffer in [&mut out.patch_logits, &mut out.image_logits, &mut out.patch_features].into_iter().flatten()
            {
                buffer.iter_mut().step_by(97).for_each(|v| *v *= f32::NAN);
            }
        }
        Ok(())
    }

    fn info(&self) -> EngineInfo {
        self.inner.info()
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn set_file_size_limit(bytes: u64) {
    let limit = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid struct; the hard limit stays unlimited so it can be raised again.
    unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) };
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    kb.unwrap_or(0.0) / 1024.0
}

fn main() {
    clipada::process::set_up();
    let frames: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(&root).unwrap();
    // SAFETY: ignoring SIGXFSZ, so that writes past the file-size limit fail with EFBIG.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let memory_path = root.join("target/demo/part.memory");
    assert!(memory_path.is_file(), "run `cargo run --release -- demo` first: it makes {}", memory_path.display());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("soak.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n[model]\npath = \"models/default/efficientnet-lite0.onnx\"\nmemory = {memory:?}\n\
             [source]\nkind = \"directory\"\npath = \"models/samples/part/test\"\nloop = true\n\
             [gpio]\nkind = \"recording\"\nrecord = {gpio:?}\noutput = \"level\"\n\
             [log]\nresults = {results:?}\nfailures_dir = {failures:?}\nmax_images = 50\n",
            state = dir.path().join("state"),
            memory = memory_path,
            gpio = dir.path().join("gpio.log"),
            results = dir.path().join("results.jsonl"),
            failures = dir.path().join("failures"),
        ),
    )
    .unwrap();
    let plan = StationPlan::load(&config).unwrap();
    let clock = Arc::new(Clock::default());
    let frame = clipada::source::files::read_image(&root.join("models/samples/part/test/chip/000.png")).unwrap();
    let mut jpeg = std::io::Cursor::new(Vec::new());
    frame.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let mut corrupt = jpeg.into_inner();
    corrupt.truncate(corrupt.len() * 9 / 10);

    let file = ModelFile::open(&plan.recipes.list[0].model.path).unwrap();
    let engine = load_engine(&file, &EngineConfig::default()).unwrap().engine;
    let engine_name = engine.info().engine;
    let extractor = Extractor::new(
        file.spec.clone(),
        file.sha256.clone(),
        Box::new(FaultyEngine { inner: engine, clock: clock.clone() }),
    );
    let memory = Memory::read(&memory_path).unwrap();
    let inspector = Mutex::new(Some(Inspector::new(extractor, true, Some(&memory), None).unwrap()));

    let rss = Arc::new(Mutex::new(Vec::new()));
    let sampler_rss = rss.clone();
    let sampler_clock = clock.clone();
    let done = Arc::new(AtomicBool::new(false));
    let sampler_done = done.clone();
    let sampler = std::thread::spawn(move || {
        while !sampler_done.load(Ordering::Relaxed) {
            let n = sampler_clock.frame.load(Ordering::Relaxed);
            if n >= WARM_UP {
                sampler_rss.lock().unwrap().push((n, rss_mb()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let started = Instant::now();
    let log = dir.path().join("results.jsonl");
    let summary = run_in_process(&plan, Arc::new(AtomicBool::new(false)), &mut |parts| {
        parts.recipes = Recipes::single(inspector.lock().unwrap().take().unwrap(), None, memory.sha256.as_deref());
        let inner = DirectorySource::open(Path::new("models/samples/part/test"), true).unwrap();
        parts.source =
            Box::new(FaultySource { inner, clock: clock.clone(), corrupt: corrupt.clone(), log: log.clone(), frames });
    })
    .unwrap();
    set_file_size_limit(u64::MAX);
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    // Every faulted frame's verdict, from the result log (disk-full frames have no line).
    let mut verdicts = BTreeMap::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        verdicts.insert(record["frame"].as_u64().unwrap(), record["verdict"].as_str().unwrap().to_string());
    }
    let mut faulted: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for n in 1..=frames {
        let Some(fault) = fault_of(n) else { continue };
        let entry = faulted.entry(format!("{fault:?}")).or_default();
        entry.0 += 1;
        match verdicts.get(&n).map(String::as_str) {
            Some("error") => entry.1 += 1,
            Some("pass") => entry.2 += 1,
            _ => {}
        }
    }
    let samples = rss.lock().unwrap().clone();
    let first = samples.first().map_or(0.0, |s| s.1);
    let last = samples.last().map_or(0.0, |s| s.1);
    let peak = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let record = std::fs::read_to_string(dir.path().join("gpio.log")).unwrap();
    let final_safe = ["pass 0", "fail 1", "ready 0"]
        .iter()
        .all(|want| record.lines().rev().find(|l| l.contains(&want[..4])).is_some_and(|l| l.ends_with(want)));

    let stops = stop_latencies(&root, &config);
    let report = serde_json::json!({
        "engine": engine_name,
        "frames": summary.frames,
        "seconds": seconds,
        "verdicts": {"pass": summary.passed, "fail": summary.failed, "error": summary.errors},
        "log_lines_lost": summary.log_failures,
        "faulted_frames": faulted.iter().map(|(k, (n, e, p))| (k.clone(), serde_json::json!({"frames": n, "error": e, "pass": p}))).collect::<serde_json::Map<_, _>>(),
        "rss_mb": {
            "after_warm_up": first,
            "end": last,
            "peak": peak,
            "end_over_warm_up": last / first,
            "by_frame": samples.iter().step_by((samples.len() / 10).max(1)).map(|(n, mb)| serde_json::json!([n, mb])).collect::<Vec<_>>(),
        },
        "lines_safe_at_exit": final_safe,
        "sigterm_to_exit_ms": stops,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// SIGTERM sent to `clipada run` (the release binary) at points from 5 ms to 1.5 s after it
/// starts: milliseconds until it exited, each.
fn stop_latencies(root: &Path, config: &Path) -> Vec<f64> {
    let binary = root.join("target/release/clipada");
    if !binary.is_file() {
        return Vec::new();
    }
    [5, 50, 150, 300, 600, 1000, 1500]
        .iter()
        .map(|delay| {
            let mut child = std::process::Command::new(&binary)
                .args(["run", "--config"])
                .arg(config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(*delay));
            let signalled = Instant::now();
            // SAFETY: signalling a child this benchmark started and still owns.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().unwrap();
            (signalled.elapsed().as_secs_f64() * 1e4).round() / 10.0
        })
        .collect()
}
