//! The station end to end, through the same code `clipada run` uses: a folder of good and
//! defective sample parts, a plain file as framebuffer, the recording GPIO, the result log and
//! the failed-parts folder; a source that fails mid-run; a full disk; SIGTERM; the binary as
//! the README runs it.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clipada::source::directory::DirectorySource;
use clipada::source::{Frame, FrameSource, SourceError, SourceErrorKind};
use clipada::station::assemble::run_in_process;
use clipada::station::plan::StationPlan;
use clipada::station::{RunSummary, StationParts};

/// The sample test parts in the order a folder source reads them, and their ground truth.
const EXPECTED: [&str; 10] = ["fail", "fail", "fail", "fail", "pass", "pass", "pass", "pass", "fail", "fail"];

/// A station config in `dir` over the sample parts; `model` is `default` (with a memory
/// calibrated from the good samples, made here once) or `tiny`.
fn config(dir: &Path, model: &str, looping: bool) -> PathBuf {
    let samples = common::sample("");
    let model_lines = match model {
        "default" => format!("path = {:?}\nmemory = {:?}\n", common::default_model(), common::default_memory()),
        _ => format!("path = {:?}\n", common::tiny_model()),
    };
    let text = format!(
        r#"
state_dir = {state:?}

[model]
backend = "tract"
{model_lines}
[source]
kind = "directory"
path = {test:?}
loop = {looping}

[display]
kind = "framebuffer"
device = {fb:?}
width = 64
height = 48
bits_per_pixel = 16

[gpio]
kind = "recording"
record = {gpio:?}
output = "pulse"
pulse_ms = 15
result_valid_ms = 10
# These tests are not about the loop's deadline (station::supervisor's tests are): under
# emulation a frame may take seconds.
loop_deadline_ms = 60000

[log]
results = {results:?}
failures_dir = {failures:?}
"#,
        state = dir.join("state"),
        test = samples.join("test"),
        fb = dir.join("fb.raw"),
        gpio = dir.join("gpio.log"),
        results = dir.join("results.jsonl"),
        failures = dir.join("failures"),
    );
    let path = dir.join("station.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One recorded GPIO write: time in ms, line, level.
#[derive(Debug, Clone, PartialEq)]
struct Level {
    ms: f64,
    line: String,
    high: bool,
}

fn recorded(dir: &Path) -> Vec<Level> {
    std::fs::read_to_string(dir.join("gpio.log"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            Level { ms: fields[0].parse().unwrap(), line: fields[1].into(), high: fields[2] == "1" }
        })
        .collect()
}

/// Rising edges of PASS and FAIL (a pulse each), in order: `(line, start ms, length ms)`; the
/// length is `None` when the line was still high at the end.
fn pulses(levels: &[Level]) -> Vec<(String, f64, Option<f64>)> {
    // A verdict pulse is raised while READY is high: the safe state drops READY first and then
    // raises FAIL, which is no part (at the end, or between parts on a slow machine such as
    // qemu).
    let mut pulses: Vec<(String, f64, Option<f64>)> = Vec::new();
    let mut state = std::collections::HashMap::new();
    let mut ready = false;
    for level in levels {
        if level.line == "ready" {
            ready = level.high;
            continue;
        }
        if level.line != "pass" && level.line != "fail" {
            continue;
        }
        let before = state.insert(level.line.clone(), level.high);
        match (before, level.high) {
            (Some(false), true) if ready => pulses.push((level.line.clone(), level.ms, None)),
            (Some(true), false) => {
                if let Some(open) = pulses.iter_mut().rev().find(|p| p.0 == level.line && p.2.is_none()) {
                    open.2 = Some(level.ms - open.1);
                }
            }
            _ => {}
        }
    }
    pulses
}

/// The last level of each line.
fn final_levels(levels: &[Level]) -> [(String, bool); 3] {
    ["pass", "fail", "ready"]
        .map(|name| (name.to_string(), levels.iter().rev().find(|l| l.line == name).map(|l| l.high).unwrap()))
}

/// The station of `config`, both ends in this process, with `edit` applied to its parts; the
/// summary and the loop's log lines.
fn run_with(config: &Path, edit: &mut dyn FnMut(&mut StationParts)) -> (RunSummary, String) {
    let plan = StationPlan::load(config).unwrap();
    let (summary, log) = clipada::logging::capture(|| run_in_process(&plan, Arc::new(AtomicBool::new(false)), edit));
    (summary.unwrap(), log)
}

fn run_quietly(config: &Path) -> RunSummary {
    run_with(config, &mut |_| {}).0
}

/// `clipada run --config` as the README runs it: the binary, supervisor and worker processes.
fn clipada_run(config: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_clipada"));
    command.args(["run", "--config"]).arg(config);
    command
}

fn results(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("results.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn replaying_good_and_defective_parts_gives_the_expected_pulses_logs_and_images() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "default", false);
    let output = clipada_run(&config).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let out = output.stdout;

    let levels = recorded(dir.path());
    // The safe state comes first, before any verdict: BUSY asserted, RESULT-VALID low, READY
    // low, PASS low, FAIL asserted.
    let start: Vec<(&str, bool)> = levels[..5].iter().map(|l| (l.line.as_str(), l.high)).collect();
    assert_eq!(start, [("busy", true), ("valid", false), ("ready", false), ("pass", false), ("fail", true)]);
    assert_eq!(check_handshake(&levels, 2.0, 10.0, false), 10, "every result strobed, the last one too");
    let pulses = pulses(&levels);
    let lines: Vec<&str> = pulses.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(lines, EXPECTED, "one pulse per part, on the line of its ground truth");
    for (line, _, length) in &pulses[..9] {
        let length = length.expect("every pulse but the last ends");
        assert!(length >= 14.5, "{line} pulse of {length} ms, configured 15");
    }
    assert_eq!(
        final_levels(&levels),
        [("pass".into(), false), ("fail".into(), true), ("ready".into(), false)],
        "the safe state at exit"
    );

    let results = results(dir.path());
    assert_eq!(results.len(), 10);
    for (i, (record, expected)) in results.iter().zip(EXPECTED).enumerate() {
        assert_eq!(record["frame"], i as u64 + 1);
        assert_eq!(record["verdict"], expected);
        assert!(record["score"].as_f64().unwrap() > 0.0);
        assert!(record["latency_ms"].as_f64().unwrap() > 0.0);
        assert!(record["error"].is_null());
        assert!(record["time"].as_str().unwrap().ends_with('Z'));
    }
    let mut saved: Vec<String> = std::fs::read_dir(dir.path().join("failures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with('.'))
        .collect();
    saved.sort();
    assert_eq!(saved.len(), 12, "frame and overlay of the 6 failed parts: {saved:?}");
    for frame in [1, 2, 3, 4, 9, 10] {
        for kind in ["frame", "overlay"] {
            let wanted = format!("-{frame:08}-{kind}.png");
            assert!(saved.iter().any(|s| s.ends_with(&wanted)), "{wanted} in {saved:?}");
        }
    }
    let screen = std::fs::read(dir.path().join("fb.raw")).unwrap();
    assert_eq!(screen.len(), 64 * 48 * 2 + 32, "the page and clipada's trailer");
    // The status bar (bottom row) shows the last verdict's colour, FAIL red, in RGB565.
    let bottom = u16::from_le_bytes([screen[47 * 128 + 2], screen[47 * 128 + 3]]);
    assert_eq!(bottom, (210 >> 3) << 11 | (30 >> 2) << 5 | (30 >> 3));
    assert!(String::from_utf8(out).unwrap().contains("10 frames: 4 pass, 6 fail, 0 error"));
}

/// A folder source that fails on the given calls, as an unplugged camera would.
struct Unplugged {
    inner: DirectorySource,
    calls: usize,
    failing: std::ops::Range<usize>,
}

impl FrameSource for Unplugged {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
        self.calls += 1;
        if self.failing.contains(&self.calls) {
            return Err(SourceError {
                kind: SourceErrorKind::Gone,
                origin: "camera 0".into(),
                reason: "unplugged".into(),
            });
        }
        self.inner.next_frame(frame)
    }
}

#[test]
fn a_source_failing_mid_run_gives_errors_and_the_safe_state_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (summary, log) = run_with(&config(dir.path(), "tiny", false), &mut |parts| {
        let inner = DirectorySource::open(&common::sample("test"), false).unwrap();
        parts.source = Box::new(Unplugged { inner, calls: 0, failing: 3..5 });
    });
    assert_eq!((summary.frames, summary.errors, summary.passed + summary.failed), (12, 2, 10));

    let results = results(dir.path());
    let verdicts: Vec<&str> = results.iter().map(|r| r["verdict"].as_str().unwrap()).collect();
    assert_eq!(&verdicts[2..4], ["error", "error"]);
    assert!(verdicts.iter().enumerate().all(|(i, v)| (*v == "error") == (i == 2 || i == 3)), "{verdicts:?}");
    assert_eq!(results[2]["error"], "camera 0: unplugged");
    assert!(results[2]["score"].is_null());

    // READY: low at start, up with the first verdict, down at the first ERROR, up again with
    // the first verdict after recovery, down at exit; FAIL asserted whenever READY goes down.
    let levels = recorded(dir.path());
    let mut ready = Vec::new();
    for (i, level) in levels.iter().enumerate().filter(|(_, l)| l.line == "ready") {
        if ready.last() != Some(&level.high) {
            ready.push(level.high);
        }
        if !level.high {
            // The safe state writes READY, then PASS, then FAIL.
            let fail = levels[i..].iter().find(|l| l.line == "fail").expect("FAIL written after READY drops");
            assert!(fail.high, "FAIL asserted with READY low at {} ms", level.ms);
        }
    }
    assert_eq!(ready, [false, true, false, true, false]);
    assert!(log.contains("frame 3: ERROR: camera 0: unplugged"), "{log}");
    assert_eq!(log.matches("ERROR: camera 0: unplugged").count(), 1, "a repeated error is logged once: {log}");
    assert!(log.contains("recovered after 2 errors in a row"), "{log}");
}

#[test]
fn under_systemd_it_reports_ready_heartbeats_and_sigterm_stops_it_in_the_safe_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "tiny", true);
    // The service manager's side of sd_notify: a datagram socket the station reports to.
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    // systemd hands the service the journal as standard error and names it in JOURNAL_STREAM.
    let journal_path = dir.path().join("journal");
    let journal = std::fs::File::create(&journal_path).unwrap();
    let stat = rustix::fs::fstat(&journal).unwrap();
    let child = clipada_run(&config)
        .arg("-v")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "100000")
        .env("JOURNAL_STREAM", format!("{}:{}", stat.st_dev, stat.st_ino))
        .stdout(std::process::Stdio::piped())
        .stderr(journal)
        .spawn()
        .unwrap();
    let mut buffer = [0u8; 256];
    let mut receive = || {
        let n = notify.recv(&mut buffer).expect("a notification");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    // Start-up: the start timeout is extended and the status says what is going on.
    let starting: Vec<String> = std::iter::from_fn(|| Some(receive())).take_while(|m| m != "READY=1").collect();
    assert!(starting.iter().any(|m| m == "EXTEND_TIMEOUT_USEC=30000000"), "{starting:?}");
    assert!(starting.iter().any(|m| m.starts_with("STATUS=starting: loading tiny-clipada.onnx")), "{starting:?}");
    assert!(starting.iter().all(|m| m.starts_with("EXTEND_TIMEOUT_USEC=") || m.starts_with("STATUS=")), "{starting:?}");
    // The folder loops, so the station never ends by itself: wait for heartbeats and verdicts,
    // which the status counts (the counters' line comes at most every second).
    let mut running = Vec::new();
    while running.iter().filter(|m| *m == "WATCHDOG=1").count() < 3
        || !running.iter().any(|m: &String| m.starts_with("STATUS=inspecting: ") && m.contains(" verdicts, "))
    {
        running.push(receive());
        assert!(running.len() < 10_000, "{running:?}");
    }
    assert!(!running.iter().any(|m| m.starts_with("EXTEND_TIMEOUT_USEC=")), "extended after READY=1: {running:?}");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(dir.path().join("results.jsonl")).map(|t| t.lines().count()).unwrap_or(0) < 3 {
        assert!(started.elapsed().as_secs() < 60, "no verdicts");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: signalling a child this test started and still owns.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("lines showed ") && stdout.contains(" verdicts: "), "{stdout}");
    let mut last = receive();
    while last == "WATCHDOG=1" || last.starts_with("STATUS=") {
        last = receive();
    }
    assert_eq!(last, "STOPPING=1");
    let levels = recorded(dir.path());
    assert_eq!(final_levels(&levels), [("pass".into(), false), ("fail".into(), true), ("ready".into(), false)]);
    // Every line carries its syslog priority; the worker logs at the level the supervisor was
    // given (-v: its per-frame debug lines) and in the journal's style.
    let journal = std::fs::read_to_string(&journal_path).unwrap();
    assert!(
        journal.lines().all(|l| l.starts_with('<') && l[1..].starts_with(|c: char| c.is_ascii_digit())),
        "{journal}"
    );
    assert!(journal.contains("<6>ready: "), "{journal}");
    assert!(journal.lines().filter(|l| l.starts_with("<7>judged frame=")).count() >= 3, "{journal}");
}

#[test]
fn a_region_of_interest_outside_the_frame_is_an_error_verdict_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "tiny", false);
    let text = std::fs::read_to_string(&path).unwrap() + "\n[roi]\nx = 10\ny = 10\nwidth = 4000\nheight = 50\n";
    std::fs::write(&path, text).unwrap();
    let summary = run_quietly(&path);
    assert_eq!((summary.frames, summary.errors), (10, 10));
    let results = results(dir.path());
    let error = results[0]["error"].as_str().unwrap();
    assert!(error.starts_with("roi: 4000x50 at (10, 10) does not fit"), "{error}");
}

#[test]
fn a_full_disk_drops_logs_and_images_and_says_so_but_inspection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "tiny", false);
    // A file-size limit stands in for a full disk: writes that would grow a file past 16 KiB
    // fail (EFBIG). The result log is already past it from "earlier runs", and every failed
    // part's images are larger (the samples are 25 KB PNGs); the GPIO record stays far below. The threshold is at the
    // bottom of the score range, so every part is a FAIL with images to save.
    let earlier = "{\"verdict\":\"pass\"}\n".repeat(20 << 10 >> 4);
    std::fs::write(dir.path().join("results.jsonl"), earlier).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("backend = \"tract\"", "backend = \"tract\"\nthreshold = 0.001");
    let text = text.replace("kind = \"framebuffer\"", "kind = \"none\"");
    std::fs::write(&path, text).unwrap();
    let mut command = clipada_run(&path);
    // SAFETY: between fork and exec only async-signal-safe calls (setrlimit, signal).
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 16 << 10, rlim_max: 16 << 10 };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let output = command.output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("10 frames: 0 pass, 10 fail, 0 error; 10 failed parts not saved, 10 log lines lost"),
        "{stdout}"
    );
    assert!(log.contains("result log:") && log.contains("cannot append"), "{log}");
    assert!(log.contains("failed part 1 not saved"), "{log}");
    // Said at the 1st, 2nd, 4th and 8th loss, not at every frame.
    assert_eq!(log.matches("not saved:").count(), 4, "{log}");
    assert_eq!(pulses(&recorded(dir.path())).len(), 10, "every part still signalled");
}

#[test]
fn the_shipped_replay_config_runs_from_the_repository_root() {
    // Tests run in the package root, as the README's command does; the config's relative
    // paths (model, samples, target/replay/...) resolve from there.
    let config = common::root().join("board/examples/replay.toml");
    assert_eq!(std::env::current_dir().unwrap(), common::root());
    // The README's first command made the memory the replay uses.
    let demo = std::process::Command::new(env!("CARGO_BIN_EXE_clipada")).arg("demo").output().unwrap();
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
    let output = clipada_run(&config).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("10 frames: 4 pass, 6 fail, 0 error"));
    let replay = common::root().join("target/replay");
    let lines = std::fs::read_to_string(replay.join("results.jsonl")).unwrap().lines().count();
    assert!(lines >= 10, "{lines} result lines");
    assert_eq!(std::fs::metadata(replay.join("framebuffer.raw")).unwrap().len(), 320 * 240 * 4 + 32);
    let gpio = std::fs::read_to_string(replay.join("gpio.log")).unwrap();
    assert!(gpio.lines().count() > 20, "{gpio}");
}

#[test]
fn the_shipped_line_config_runs_from_the_repository_root_with_every_part_answered_at_the_gate() {
    let config = common::root().join("board/examples/line.toml");
    let demo = std::process::Command::new(env!("CARGO_BIN_EXE_clipada")).arg("demo").output().unwrap();
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
    let line = common::root().join("target/line");
    let _ = std::fs::remove_file(line.join("results.jsonl"));
    let output = clipada_run(&config).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("10 frames:"), "{stdout}");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(line.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 10);
    for record in &records {
        assert!(record["part_id"].as_u64().is_some() && record["judged_by"]["model_sha256"].is_string(), "{record}");
        let error = record["error"].as_str().unwrap_or_default();
        assert!(!error.contains("self-test"), "the reference parts hold: {record}");
    }
    let recipes: Vec<&str> = records.iter().map(|r| r["recipe"].as_str().unwrap()).collect();
    assert_eq!(recipes, [["cap-a"; 5], ["cap-b"; 5]].concat(), "as the select script has it");
    // Every part got one strobe on the lines, at the gate.
    let levels = recorded(&line);
    assert_eq!(check_handshake(&levels, 2.0, 20.0, true), 10);
}

/// Two frames: a red one the region of interest fits, then a green one too small for it.
struct ShrinkingFrames {
    served: usize,
}

impl FrameSource for ShrinkingFrames {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
        self.served += 1;
        frame.image = match self.served {
            1 => image::RgbImage::from_pixel(200, 100, image::Rgb([220, 0, 0])),
            2 => image::RgbImage::from_pixel(60, 40, image::Rgb([0, 220, 0])),
            _ => return Ok(false),
        };
        frame.captured = Instant::now();
        Ok(true)
    }
}

#[test]
fn a_frame_the_region_does_not_fit_is_shown_as_it_came_not_as_the_previous_part() {
    // Regression: the screen showed the previous part's crop under the ERROR of this one.
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "tiny", false);
    let text = std::fs::read_to_string(&path).unwrap() + "\n[roi]\nx = 0\ny = 0\nwidth = 100\nheight = 50\n";
    std::fs::write(&path, text).unwrap();
    let (summary, _) = run_with(&path, &mut |parts| parts.source = Box::new(ShrinkingFrames { served: 0 }));
    assert_eq!((summary.frames, summary.errors), (2, 1));
    let screen = std::fs::read(dir.path().join("fb.raw")).unwrap();
    // RGB565 at the middle of the image area (64x48 screen: 10 rows above the status bar).
    let at = (5 * 64 + 32) * 2;
    let pixel = u16::from_le_bytes([screen[at], screen[at + 1]]);
    let (red, green) = (pixel >> 11, (pixel >> 5) & 0x3f);
    assert!(green > 40 && red < 4, "the green frame is shown, not the red crop: {pixel:#06x}");
}

/// A camera's queue as the driver fills it: the first `buffered` frames were exposed before
/// the trigger (good parts that went by earlier), then the part in front of the camera now (a
/// defective one). `None`: only buffered frames, as when the stream stalled.
struct BufferedCamera {
    good: DirectorySource,
    defective: Option<DirectorySource>,
    buffered: usize,
    calls: usize,
}

impl FrameSource for BufferedCamera {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
        self.calls += 1;
        if self.calls > 12 {
            return Ok(false);
        }
        match &mut self.defective {
            Some(defective) if self.calls > self.buffered => defective.next_frame(frame),
            _ => {
                let got = self.good.next_frame(frame)?;
                frame.captured = Instant::now() - Duration::from_secs(3);
                std::thread::sleep(Duration::from_millis(60));
                Ok(got)
            }
        }
    }
}

#[test]
fn a_frame_exposed_before_its_trigger_is_never_judged() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "default", false);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[trigger]\nframe_timeout_ms = 500\n")).unwrap();
    let good = || DirectorySource::open(&common::sample("test/good"), true).unwrap();
    // Three buffered good parts, then the defective part now in front of the camera: each
    // trigger judges a defective part, never a buffered good one.
    let (summary, _) = run_with(&config, &mut |parts| {
        let defective = DirectorySource::open(&common::sample("test/chip"), true).unwrap();
        parts.source = Box::new(BufferedCamera { good: good(), defective: Some(defective), buffered: 3, calls: 0 });
    });
    assert_eq!(summary.passed, 0, "a buffered good part was judged for a defective one: {summary:?}");
    assert_eq!((summary.stale_frames, summary.errors), (3, 0), "{summary:?}");
    assert_eq!(summary.failed, 9, "{summary:?}");
    // A stream that serves only old frames: ERROR for each trigger, naming why.
    let (summary, log) = run_with(&config, &mut |parts| {
        parts.source = Box::new(BufferedCamera { good: good(), defective: None, buffered: 0, calls: 0 });
    });
    assert_eq!((summary.passed, summary.failed), (0, 0), "{summary:?}");
    assert!(summary.errors > 0 && summary.stale_frames == 12, "{summary:?}");
    assert!(log.contains("no frame exposed after the trigger within 500 ms"), "{log}");
}

/// A camera that stalls `stall` before each frame, then serves one exposed at the end of the
/// stall (long after the trigger): the part may have left the camera's view meanwhile.
struct StallingCamera {
    frames: DirectorySource,
    stall: Duration,
    served: usize,
}

impl FrameSource for StallingCamera {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
        self.served += 1;
        if self.served > 3 {
            return Ok(false);
        }
        std::thread::sleep(self.stall);
        let got = self.frames.next_frame(frame)?;
        frame.captured = Instant::now();
        Ok(got)
    }
}

#[test]
fn a_frame_exposed_after_the_frame_timeout_is_never_judged() {
    // Regression: only frames exposed before the trigger were refused; one exposed any time
    // after it was judged (a queued trigger judged seconds late, a stalled camera), though
    // `frame_timeout_ms` promises a frame within that long of the trigger or ERROR.
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "tiny", false);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[trigger]\nframe_timeout_ms = 100\n")).unwrap();
    let (summary, log) = run_with(&config, &mut |parts| {
        let frames = DirectorySource::open(&common::sample("test/good"), true).unwrap();
        parts.source = Box::new(StallingCamera { frames, stall: Duration::from_millis(400), served: 0 });
    });
    assert_eq!((summary.passed, summary.failed, summary.errors), (0, 0, 3), "{summary:?}");
    assert!(log.contains("no frame exposed after the trigger within 100 ms"), "{log}");
}

/// Checks the PLC handshake over a GPIO record (docs/ARCHITECTURE.md, "PLC handshake"): each
/// result's verdict lines are written, then settle at least `settle_ms` before RESULT-VALID
/// rises; RESULT-VALID stays up at least `valid_ms` with no verdict line written meanwhile; BUSY
/// is up from before the verdict until RESULT-VALID has fallen (no line is asserted without it)
/// when results are shown as judged (`at_gate` false; at a reject gate BUSY is only up while a
/// part is judged). Returns the number of strobes.
fn check_handshake(levels: &[Level], settle_ms: f64, valid_ms: f64, at_gate: bool) -> usize {
    let mut busy = true;
    let mut valid_since: Option<f64> = None;
    let mut last_verdict_write: Option<f64> = None;
    let mut strobes = 0;
    for level in levels {
        match (level.line.as_str(), level.high) {
            ("busy", high) => {
                assert!(high || at_gate || valid_since.is_none(), "BUSY fell during RESULT-VALID at {} ms", level.ms);
                busy = high;
            }
            ("valid", true) => {
                assert!(busy || at_gate, "RESULT-VALID rose without BUSY at {} ms", level.ms);
                let written = last_verdict_write.expect("a result before its strobe");
                assert!(level.ms - written >= settle_ms, "settled {} ms only, at {} ms", level.ms - written, level.ms);
                valid_since = Some(level.ms);
                strobes += 1;
            }
            ("valid", false) => {
                if let Some(since) = valid_since.take() {
                    assert!(level.ms - since >= valid_ms, "RESULT-VALID held {} ms only", level.ms - since);
                }
            }
            (line, _) => {
                assert!(valid_since.is_none(), "{line} written during RESULT-VALID at {} ms", level.ms);
                // A pulse may end after its strobe, BUSY down; nothing is asserted without BUSY.
                assert!(busy || at_gate || !level.high, "{line} asserted without BUSY at {} ms", level.ms);
                last_verdict_write = Some(level.ms);
            }
        }
    }
    strobes
}

#[test]
fn triggers_while_busy_are_each_an_error_and_every_result_is_strobed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "default", false);
    // Part 1 at 500 ms with two more triggers 6 and 12 ms later, while it is judged; a 1 ms
    // glitch (shorter than the debounce); part 2 at 5000 ms (a debug build judges a part in
    // about a second) with one more 6 ms later.
    let script = dir.path().join("trigger.txt");
    std::fs::write(
        &script,
        "500 1\n504 0\n506 1\n509 0\n512 1\n515 0\n3000 1\n3001 0\n5000 1\n5004 0\n5006 1\n5009 0\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[gpio]\n",
        &format!("[trigger]\nmode = \"gpio\"\ndebounce_ms = 2\n\n[gpio]\ntrigger_script = {script:?}\n"),
    );
    std::fs::write(&config, text).unwrap();
    let summary = run_quietly(&config);
    // Every trigger has its verdict: 2 parts judged, 3 missed (ERROR); the glitch is none.
    assert_eq!((summary.frames, summary.missed_triggers, summary.errors), (5, 3, 3), "{summary:?}");
    let records = results(dir.path());
    let verdicts: Vec<&str> = records.iter().map(|r| r["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts[1..3], ["error", "error"], "{records:?}");
    assert_eq!(verdicts[4], "error", "{records:?}");
    assert!(verdicts[0] != "error" && verdicts[3] != "error", "{records:?}");
    let missed: Vec<u64> = records.iter().map(|r| r["missed_triggers"].as_u64().unwrap()).collect();
    assert_eq!(missed, [0, 1, 2, 2, 3]);
    assert!(records[1]["error"].as_str().unwrap().contains("missed trigger"), "{records:?}");
    // Each result, ERROR included, is strobed after it settled, in order.
    assert_eq!(check_handshake(&recorded(dir.path()), 2.0, 10.0, false), 5);
}

#[test]
fn a_part_triggered_after_the_source_ended_gets_an_error_record_of_its_own() {
    // Regression: a trigger taken when the source had no frame left was announced (BUSY up, a
    // part at the gate) but got no result and no record.
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "tiny", false);
    let frames = dir.path().join("two");
    std::fs::create_dir(&frames).unwrap();
    for name in ["a.png", "b.png"] {
        std::fs::copy(common::sample("test/good/000.png"), frames.join(name)).unwrap();
    }
    let script = dir.path().join("trigger.txt");
    std::fs::write(&script, "100 1\n105 0\n1500 1\n1505 0\n3000 1\n3005 0\n").unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&format!("path = {:?}", common::sample("test")), &format!("path = {frames:?}"))
        .replace(
            "[gpio]\n",
            &format!("[trigger]\nmode = \"gpio\"\ndebounce_ms = 2\n\n[gpio]\ntrigger_script = {script:?}\n"),
        );
    std::fs::write(&config, text).unwrap();
    let summary = run_quietly(&config);
    assert_eq!((summary.frames, summary.errors), (3, 1), "{summary:?}");
    let records = results(dir.path());
    assert_eq!(records.len(), 3);
    assert_eq!(records[2]["verdict"], "error");
    assert!(records[2]["error"].as_str().unwrap().contains("source ended"), "{records:?}");
}

#[test]
fn every_record_names_its_part_model_memory_and_engine_and_part_ids_go_on_across_restarts() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "default", false);
    run_quietly(&config);
    run_quietly(&config);
    let records = results(dir.path());
    assert_eq!(records.len(), 20);
    let ids: Vec<u64> = records.iter().map(|r| r["part_id"].as_u64().unwrap()).collect();
    assert_eq!(ids[..10], (1..=10).collect::<Vec<u64>>()[..], "the first run counts from 1");
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "increasing across the restart: {ids:?}");
    let prefix = |path: PathBuf| {
        let digest = Sha256::digest(std::fs::read(path).unwrap());
        digest.iter().map(|b| format!("{b:02x}")).collect::<String>()[..16].to_string()
    };
    let judged_by = &records[0]["judged_by"];
    assert_eq!(judged_by["model_sha256"], prefix(common::default_model()));
    assert_eq!(judged_by["memory_sha256"], prefix(common::default_memory()));
    assert_eq!((judged_by["engine"].as_str(), judged_by["precision"].as_str()), (Some("tract"), Some("fp32")));
    assert_eq!(judged_by["provider"], "cpu");
}

/// The sample station with a scripted trigger (`script`) and `[reject]` as given.
fn gated(dir: &Path, script: &str, reject: &str) -> PathBuf {
    let config = config(dir, "default", false);
    let trigger = dir.join("trigger.txt");
    std::fs::write(&trigger, script).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[gpio]\n",
        &format!("[reject]\n{reject}\n\n[trigger]\nmode = \"gpio\"\ndebounce_ms = 1\n\n[gpio]\ntrigger_script = {trigger:?}\n"),
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn results_go_on_the_lines_when_the_part_reaches_the_gate_and_a_part_judged_too_late_is_rejected() {
    // The gate 4 s after the trigger (a debug build judges a part in about a second).
    let script = "300 1\n304 0\n5000 1\n5004 0\n";
    let dir = tempfile::tempdir().unwrap();
    let summary = run_quietly(&gated(dir.path(), script, "timing = \"delay\"\ndelay_ms = 4000"));
    assert_eq!((summary.frames, summary.errors), (2, 0), "{summary:?} {:?}", results(dir.path()));
    // Each part's verdict is asserted 4 s after its trigger (BUSY rises when the supervisor hears
    // of it, a little after), not when it was judged (BUSY falling).
    let levels = recorded(dir.path());
    let busy: Vec<&Level> = levels.iter().filter(|l| l.line == "busy").collect();
    let taken: Vec<f64> = busy.windows(2).filter(|w| !w[0].high && w[1].high).map(|w| w[1].ms).take(2).collect();
    let shown: Vec<f64> = pulses(&levels).iter().map(|p| p.1).collect();
    assert_eq!((taken.len(), shown.len()), (2, 2), "{levels:?}");
    for (taken, shown) in taken.iter().zip(&shown) {
        assert!(shown - taken >= 3900.0 && shown - taken < 4500.0, "taken at {taken} ms, shown at {shown} ms");
    }
    assert_eq!(check_handshake(&levels, 2.0, 10.0, true), 2);

    // A gate 1 ms after the trigger: no part can be judged before it; each is rejected there.
    let dir = tempfile::tempdir().unwrap();
    let summary = run_quietly(&gated(dir.path(), script, "timing = \"delay\"\ndelay_ms = 1"));
    assert_eq!((summary.frames, summary.errors, summary.passed), (2, 2, 0), "{summary:?}");
    let records = results(dir.path());
    assert!(records.iter().all(|r| r["verdict"] == "error" && r["error"].as_str().unwrap().contains("reject gate")));
    assert!(!recorded(dir.path()).iter().any(|l| l.line == "pass" && l.high), "no PASS on the lines");
}
