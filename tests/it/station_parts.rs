//! The station's parts one by one: config errors, the verdict lines' state machine, the
//! debounced trigger, the framebuffer and the screen drawn on it, and the failed-parts folder.

use crate::common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clipada::sink::display::{StationScreen, Status};
use clipada::sink::framebuffer::{Framebuffer, Geometry};
use clipada::station::config::{ConfigError, Edge, OutputMode, SafeState, StationConfig};
use clipada::station::gpio::{GpioError, Input, Output, VerdictLines};
use clipada::station::log::FailureArchive;
use clipada::station::trigger::EdgeDetector;
use clipada::verdict::Verdict;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_hal::digital::{ErrorType, InputPin, OutputPin};
use image::RgbImage;

const MINIMAL: &str = r#"
[model]
path = "m.onnx"
[source]
kind = "directory"
path = "frames"
"#;

fn parse(text: &str) -> Result<StationConfig, ConfigError> {
    StationConfig::parse(text, Path::new("station.toml"))
}

fn invalid(text: &str) -> (String, String) {
    match parse(text) {
        Err(ConfigError::Invalid { path, key, reason }) => {
            assert_eq!(path, Path::new("station.toml"));
            (key, reason)
        }
        other => panic!("expected an invalid config, got {other:?}"),
    }
}

#[test]
fn a_minimal_config_takes_the_documented_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.gpio.safe_state, SafeState { ready: false, pass: false, fail: true });
    assert_eq!(config.gpio.output, OutputMode::Level);
    assert!(config.model.refine);
    assert_eq!(config.log.max_images, 500);
}

#[test]
fn config_errors_name_the_full_key_and_the_reason() {
    let (key, reason) = invalid(&format!("{MINIMAL}[gpio]\npulse_ms = \"long\"\n"));
    assert_eq!(key, "gpio.pulse_ms");
    assert!(reason.contains("invalid type"), "{reason}");

    let (key, reason) = invalid(&format!("{MINIMAL}[gpio]\npluse_ms = 5\n"));
    assert_eq!(key, "gpio.pluse_ms");
    assert!(reason.contains("unknown field `pluse_ms`"), "{reason}");

    let (key, reason) = invalid(&format!("{MINIMAL}[gpio.safe_state]\nreddy = true\n"));
    assert_eq!(key, "gpio.safe_state.reddy");
    assert!(reason.contains("reddy"), "{reason}");

    let (key, reason) = invalid(&format!("{MINIMAL}[trigger]\nmode = \"sometimes\"\n"));
    assert_eq!(key, "trigger.mode");
    assert!(reason.contains("sometimes"), "{reason}");

    let (key, reason) = invalid(&MINIMAL.replace("kind = \"directory\"", "kind = \"camera\"\ndevice = 0\nfps = -3"));
    assert_eq!(key, "source.fps");
    assert!(reason.contains("invalid value"), "{reason}");

    let (key, _) = invalid(&format!("{MINIMAL}[trigger]\nmode = \"interval\"\ninterval_ms = 0\n"));
    assert_eq!(key, "trigger.interval_ms");

    let (key, reason) = invalid(&format!("{MINIMAL}[trigger]\nmode = \"gpio\"\n"));
    assert_eq!(key, "gpio.trigger_line");
    assert!(reason.contains("trigger_line"), "{reason}");

    let (key, _) =
        invalid(&format!("{MINIMAL}[display]\nkind = \"framebuffer\"\ndevice = \"fb\"\nbits_per_pixel = 12\n"));
    assert_eq!(key, "display.bits_per_pixel");

    let (key, _) = invalid(&format!("{MINIMAL}[gpio]\nkind = \"chardev\"\n"));
    assert_eq!(key, "gpio.chip");

    let (key, _) = invalid(&MINIMAL.replace("[source]", "calibrate_from = \"good\"\n[source]"));
    assert_eq!(key, "model.calibrate_from");

    let (key, _) = invalid("[model]\npath = 3\n");
    assert_eq!(key, "model.path");

    let (key, reason) = invalid("[model\npath = 3\n");
    assert_eq!(key, ".");
    assert!(!reason.is_empty());
}

#[test]
fn an_unreadable_config_names_the_file() {
    let error = StationConfig::load(Path::new("/nonexistent/station.toml")).unwrap_err();
    assert!(error.to_string().starts_with("/nonexistent/station.toml: cannot read"), "{error}");
}

/// Every physical level written, as `(line, high)`.
type Levels = Arc<Mutex<Vec<(&'static str, bool)>>>;

struct TestPin {
    name: &'static str,
    levels: Levels,
    broken: bool,
}

impl ErrorType for TestPin {
    type Error = GpioError;
}

impl OutputPin for TestPin {
    fn set_low(&mut self) -> Result<(), GpioError> {
        self.write(false)
    }
    fn set_high(&mut self) -> Result<(), GpioError> {
        self.write(true)
    }
}

impl TestPin {
    fn write(&mut self, high: bool) -> Result<(), GpioError> {
        if self.broken {
            return Err(GpioError { line: self.name.into(), reason: "broken".into() });
        }
        self.levels.lock().unwrap().push((self.name, high));
        Ok(())
    }
}

fn lines(mode: OutputMode, active_low: bool, broken_pass: bool) -> (VerdictLines, Levels) {
    let levels = Levels::default();
    let pin = |name, broken| Box::new(TestPin { name, levels: levels.clone(), broken }) as Output;
    let outputs = [pin("pass", broken_pass), pin("fail", false), pin("ready", false)];
    (VerdictLines::new(outputs, active_low, mode, Duration::from_millis(30), SafeState::default()), levels)
}

/// The physical level each line had last.
fn last(levels: &Levels) -> [(&'static str, Option<bool>); 3] {
    let levels = levels.lock().unwrap();
    ["pass", "fail", "ready"].map(|name| (name, levels.iter().rev().find(|(n, _)| *n == name).map(|(_, h)| *h)))
}

#[test]
fn level_outputs_hold_the_last_verdict_and_errors_enter_the_safe_state() {
    let (mut lines, levels) = lines(OutputMode::Level, false, false);
    lines.enter_safe_state().unwrap();
    assert_eq!(last(&levels), [("pass", Some(false)), ("fail", Some(true)), ("ready", Some(false))]);
    lines.show(Verdict::Pass).unwrap();
    assert_eq!(last(&levels), [("pass", Some(true)), ("fail", Some(false)), ("ready", Some(true))]);
    lines.show(Verdict::Fail).unwrap();
    assert_eq!(last(&levels), [("pass", Some(false)), ("fail", Some(true)), ("ready", Some(true))]);
    lines.show(Verdict::Error).unwrap();
    assert_eq!(last(&levels), [("pass", Some(false)), ("fail", Some(true)), ("ready", Some(false))]);
    // Leaving the safe state for a FAIL makes a fresh FAIL edge, so the PLC sees this part.
    let before = levels.lock().unwrap().len();
    lines.show(Verdict::Fail).unwrap();
    let after: Vec<_> = levels.lock().unwrap()[before..].to_vec();
    assert_eq!(after, [("fail", false), ("ready", true), ("fail", true)]);
    drop(lines);
    assert_eq!(last(&levels), [("pass", Some(false)), ("fail", Some(true)), ("ready", Some(false))], "safe on drop");
}

#[test]
fn active_low_inverts_every_physical_level() {
    let (mut lines, levels) = lines(OutputMode::Level, true, false);
    lines.enter_safe_state().unwrap();
    assert_eq!(last(&levels), [("pass", Some(true)), ("fail", Some(false)), ("ready", Some(true))]);
    lines.show(Verdict::Pass).unwrap();
    assert_eq!(last(&levels), [("pass", Some(false)), ("fail", Some(true)), ("ready", Some(false))]);
}

#[test]
fn pulses_end_at_their_deadline() {
    let (mut lines, levels) = lines(OutputMode::Pulse, false, false);
    lines.enter_safe_state().unwrap();
    let shown = Instant::now();
    lines.show(Verdict::Pass).unwrap();
    let deadline = lines.pulse_deadline().expect("a pulse runs");
    assert!(deadline >= shown + Duration::from_millis(30));
    lines.poll(deadline - Duration::from_millis(1)).unwrap();
    assert_eq!(last(&levels)[0], ("pass", Some(true)), "not before the deadline");
    lines.poll(deadline).unwrap();
    assert_eq!(last(&levels)[0], ("pass", Some(false)));
    assert_eq!(lines.pulse_deadline(), None);
    assert_eq!(last(&levels)[2], ("ready", Some(true)), "READY stays up between pulses");
}

#[test]
fn a_failing_line_is_reported_and_the_others_still_reach_the_safe_state() {
    let (mut lines, levels) = lines(OutputMode::Level, false, true);
    let error = lines.enter_safe_state().unwrap_err();
    assert_eq!(error.line, "pass");
    assert_eq!(last(&levels)[1..], [("fail", Some(true)), ("ready", Some(false))]);
}

/// An input that plays a script of `(from, level)` steps against a shared clock.
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
fn framebuffer_pixels_are_packed_as_the_format_says() {
    let dir = tempfile::tempdir().unwrap();
    for (bits, colour, bytes) in [
        (16, Rgb888::new(0xff, 0x00, 0x00), vec![0x00, 0xf8]),
        (16, Rgb888::new(0x00, 0xff, 0x00), vec![0xe0, 0x07]),
        (24, Rgb888::new(0x12, 0x34, 0x56), vec![0x56, 0x34, 0x12]),
        (32, Rgb888::new(0x12, 0x34, 0x56), vec![0x56, 0x34, 0x12, 0x00]),
    ] {
        let path = dir.path().join(format!("fb{bits}"));
        let mut fb = Framebuffer::open(&path, Some((4, 3, bits))).unwrap();
        Pixel(Point::new(2, 1), colour).draw(&mut fb).unwrap();
        fb.flush().unwrap();
        let memory = std::fs::read(&path).unwrap();
        assert_eq!(memory.len(), 4 * 3 * bits as usize / 8);
        let at = (4 + 2) * bits as usize / 8;
        assert_eq!(memory[at..at + bytes.len()], bytes[..], "{bits} bits");
        assert!(memory[..at].iter().all(|b| *b == 0), "nothing else drawn");
    }
    let error = Framebuffer::open(&dir.path().join("plain"), None).err().unwrap();
    assert!(error.to_string().contains("width"), "{error}");
}

#[test]
fn the_station_screen_matches_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fb");
    let mut fb = Framebuffer::open(&path, Some((160, 120, 32))).unwrap();
    // A frame with a bright square, standing for the overlay of a judged part.
    let frame = RgbImage::from_fn(200, 100, |x, y| {
        if (80..120).contains(&x) && (30..70).contains(&y) {
            image::Rgb([250, 40, 40])
        } else {
            image::Rgb([30, 90, 160])
        }
    });
    let status = Status {
        verdict: Some(Verdict::Fail),
        score: Some(0.412),
        threshold: 0.25,
        latency_ms: 41.5,
        fps: 23.9,
        passed: 12,
        failed: 3,
        errors: 1,
    };
    StationScreen::default().draw(&mut fb, Some(&frame), &status).unwrap();
    fb.flush().unwrap();
    let geometry = Geometry::packed(160, 120, 32).unwrap();
    let memory = std::fs::read(&path).unwrap();
    let shown = RgbImage::from_fn(160, 120, |x, y| {
        let at = (y as usize * 160 + x as usize) * 4;
        let c = geometry.decode(u32::from_le_bytes(memory[at..at + 4].try_into().unwrap()));
        image::Rgb([c.r(), c.g(), c.b()])
    });
    // Properties that hold whatever the snapshot: the image is scaled to 160x80 and centred in
    // the 94 rows above the status bar, and the bar has the FAIL colour.
    assert_eq!(shown.get_pixel(80, 47).0, [250, 40, 40], "the square, scaled");
    assert_eq!(shown.get_pixel(5, 47).0, [30, 90, 160]);
    assert_eq!(shown.get_pixel(5, 3).0, [0, 0, 0], "letterbox");
    assert_eq!(shown.get_pixel(159, 119).0, [210, 30, 30], "status bar");
    common::assert_snapshot("station_screen.png", &shown);
}

#[test]
fn a_saved_failed_part_holds_its_frame_and_its_overlay() {
    let dir = tempfile::tempdir().unwrap();
    // Different sizes and contents, so that one file cannot pass for the other.
    let frame = RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 5, y as u8 * 7, 90]));
    let overlay = RgbImage::from_pixel(12, 9, image::Rgb([200, 10, 10]));
    FailureArchive::open(dir.path(), 10, u64::MAX)
        .unwrap()
        .save("2026-01-01T00:00:01.000Z", 7, &frame, &overlay)
        .unwrap();
    let read = |suffix: &str| {
        image::open(dir.path().join(format!("2026-01-01T000001.000Z-00000007-{suffix}.png"))).unwrap().into_rgb8()
    };
    assert_eq!(read("frame"), frame);
    assert_eq!(read("overlay"), overlay);
}

#[test]
fn the_failed_parts_folder_keeps_the_newest_within_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let frame = RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]));
    let mut archive = FailureArchive::open(dir.path(), 3, u64::MAX).unwrap();
    for id in 1..=5 {
        archive.save(&format!("2026-01-01T00:00:0{id}.000Z"), id, &frame, &frame).unwrap();
    }
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 6);
    assert!(names[0].contains("00000003-frame"), "{names:?}");
    assert!(names[5].contains("00000005-overlay"), "{names:?}");
    // A new run counts what is there; a byte budget of one part keeps only the newest.
    let one_part: u64 = names.iter().take(2).map(|n| std::fs::metadata(dir.path().join(n)).unwrap().len()).sum();
    let mut archive = FailureArchive::open(dir.path(), 10, one_part).unwrap();
    assert_eq!(archive.len(), 1);
    archive.save("2026-01-01T00:00:09.000Z", 9, &frame, &frame).unwrap();
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.iter().all(|n| n.contains("00000009")), "{names:?}");
}

#[test]
fn the_ignore_mask_silences_the_map_where_it_is_black() {
    use clipada::pipeline::{InspectOptions, Inspector};
    let frame = clipada::source::files::load_rgb(&common::sample("test/scratch/000.png")).unwrap();
    let mut inspector = Inspector::load(&common::tiny_model(), &InspectOptions::default()).unwrap();
    inspector.inspect(&frame).unwrap();
    let width = inspector.map().width;
    assert!(inspector.map().values.iter().all(|v| *v > 0.0), "the fixture's map is positive everywhere");
    // Left half black (ignored), right half white.
    let mask = image::GrayImage::from_fn(40, 10, |x, _| image::Luma([if x < 20 { 0 } else { 255 }]));
    inspector.set_ignore_mask(&mask);
    inspector.inspect(&frame).unwrap();
    let map = inspector.map();
    for row in map.values.chunks_exact(width) {
        assert!(row[..width / 2 - 1].iter().all(|v| *v == 0.0));
        assert!(row[width / 2 + 1..].iter().all(|v| *v > 0.0));
    }
}

#[test]
fn every_shipped_station_config_parses() {
    let mut checked = Vec::new();
    for dir in ["board", "board/examples"] {
        for entry in std::fs::read_dir(common::root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                StationConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
                checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        ["jetson-orin-nano.toml", "jetson-xavier-nx.toml", "raspberry-pi-5.toml", "replay.toml", "station.toml"]
    );
}

#[test]
fn the_interval_trigger_keeps_its_schedule_and_stops_on_request() {
    use clipada::station::trigger::{Fired, Trigger};
    use std::sync::atomic::{AtomicBool, Ordering};
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
