//! Recipes, the self-test and the drift watch through the station `clipada run` builds: a
//! recipe switched from the control socket between parts, recipes chosen by the select inputs,
//! a failed self-test that holds the station in ERROR until acknowledged, and a drift warning
//! checked against the records and the memory file.
//!
//! Recipes `lo` and `hi` share the tiny model: `lo`'s threshold is so low that every part
//! FAILs, `hi`'s the top of the score range, so every part PASSes: a record's verdict tells
//! which recipe's judge made it.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clipada::station::assemble::run_in_process;
use clipada::station::control;
use clipada::station::plan::StationPlan;
use clipada::station::RunSummary;

/// A station over the sample test parts (looping or not) with recipes `lo` and `hi`; `extra`
/// is appended (recipe keys go in `lo_keys`/`hi_keys`).
fn config(dir: &Path, looping: bool, lo_keys: &str, hi_keys: &str, extra: &str) -> PathBuf {
    let recipes = format!(
        "\n[[recipe]]\nname = \"lo\"\nthreshold = 0.000001\n{lo_keys}\n\
         [[recipe]]\nname = \"hi\"\nthreshold = 1.0\n{hi_keys}\n{extra}"
    );
    common::tiny_station(dir, looping, "loop_deadline_ms = 60000\n", &recipes)
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A station running on a thread of its own until [`Running::stop`].
struct Running {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(anyhow::Result<RunSummary>, String)>,
    dir: PathBuf,
}

impl Running {
    fn start(config: &Path, dir: &Path) -> Running {
        let plan = StationPlan::load(config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let theirs = stop.clone();
        let thread =
            std::thread::spawn(move || clipada::logging::capture(|| run_in_process(&plan, theirs, &mut |_| {})));
        Running { stop, thread, dir: dir.to_path_buf() }
    }

    /// Waits (up to 5 minutes: emulation is slow) until `done` holds for the records.
    fn wait_for(&self, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) {
        let until = Instant::now() + Duration::from_secs(300);
        while !done(&records(&self.dir)) {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            assert!(!self.thread.is_finished(), "the station ended while waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A control request's answer.
    fn ask(&self, request: &str) -> anyhow::Result<String> {
        control::send(&self.dir.join("state"), request)
    }

    fn stop(self) -> (RunSummary, String) {
        self.stop.store(true, Ordering::Relaxed);
        let (summary, log) = self.thread.join().unwrap();
        (summary.unwrap(), log)
    }
}

fn field<'a>(record: &'a serde_json::Value, key: &str) -> &'a str {
    record[key].as_str().unwrap_or_else(|| panic!("no `{key}` in {record}"))
}

#[test]
fn the_control_socket_switches_recipes_between_parts_never_within_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), true, "", "", "");
    let station = Running::start(&path, dir.path());
    station.wait_for("5 parts of lo", |r| r.len() >= 5);
    let error = station.ask("recipe nope").unwrap_err().to_string();
    assert!(error.contains("no recipe is named `nope`") && error.contains("lo, hi"), "{error}");
    assert_eq!(station.ask("recipe hi").unwrap(), "recipe hi from the next part");
    let switched_at = records(dir.path()).len();
    station.wait_for("5 parts of hi", |r| r.iter().filter(|r| r["recipe"] == "hi").count() >= 5);
    let status = station.ask("status").unwrap();
    assert!(status.starts_with("recipe hi;"), "{status}");
    let (summary, _) = station.stop();

    let records = records(dir.path());
    // (The part under way when stopped may have no record: the supervisor stopped first.)
    assert!(records.len() as u64 + 1 >= summary.frames, "{} records, {} frames", records.len(), summary.frames);
    let names: Vec<&str> = records.iter().map(|r| field(r, "recipe")).collect();
    let first_hi = names.iter().position(|n| *n == "hi").unwrap();
    assert!(names[..first_hi].iter().all(|n| *n == "lo"), "lo until the switch: {names:?}");
    assert!(names[first_hi..].iter().all(|n| *n == "hi"), "hi after it, never back: {names:?}");
    // The switch came between parts: at most the part under way when it was asked for was
    // still lo's.
    assert!(first_hi <= switched_at + 1, "switched at {first_hi}, asked after {switched_at} parts");
    for record in &records {
        // Each part judged by one recipe whole: its threshold and its verdict.
        let (threshold, verdict) = match field(record, "recipe") {
            "lo" => (0.000001, "fail"),
            _ => (1.0, "pass"),
        };
        assert_eq!(record["threshold"].as_f64().unwrap() as f32, threshold, "{record}");
        assert_eq!(field(record, "verdict"), verdict, "{record}");
    }
    // One model, one engine: both recipes are judged by the same model file.
    let models: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r["judged_by"]["model_sha256"].as_str().unwrap()).collect();
    assert_eq!(models.len(), 1, "{models:?}");
    assert!(!dir.path().join("state").join(control::SOCKET).exists(), "the socket goes with the station");
}

#[test]
fn the_select_inputs_choose_each_parts_recipe_and_an_unknown_code_is_error() {
    for (codes, expected) in [("0 2\n", "pass"), ("0 1\n", "fail"), ("0 3\n", "error")] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("codes.txt"), codes).unwrap();
        let select = format!("[recipes]\nselect_script = {:?}\n", dir.path().join("codes.txt"));
        let path = config(dir.path(), false, "code = 1\n", "code = 2\n", &select);
        let plan = StationPlan::load(&path).unwrap();
        let summary = run_in_process(&plan, Arc::new(AtomicBool::new(false)), &mut |_| {}).unwrap();
        let records = records(dir.path());
        assert_eq!((summary.frames, records.len()), (10, 10), "{codes}");
        for record in &records {
            assert_eq!(field(record, "verdict"), expected, "code {codes}: {record}");
            if expected == "error" {
                assert!(field(record, "error").contains("no recipe has code 3"), "{record}");
            }
        }
    }
}

#[test]
fn a_failed_self_test_holds_the_station_in_error_until_an_operator_acknowledges() {
    let dir = tempfile::tempdir().unwrap();
    // `hi` passes every part: its known defect is judged PASS, and the self-test fails.
    let defect = common::sample("test/scratch/000.png");
    let good = common::sample("test/good/000.png");
    let hi = format!("reference_good = [{good:?}]\nreference_defect = [{defect:?}]\n");
    // `lo` fails every part: its known defect is judged FAIL, as it must.
    let lo = format!("reference_defect = [{defect:?}]\n");
    let path = config(dir.path(), true, &lo, &hi, "[recipes]\nstart = \"hi\"\n");
    let station = Running::start(&path, dir.path());
    station.wait_for("3 parts", |r| r.len() >= 3);
    let status = station.ask("status").unwrap();
    assert!(status.contains("self-test faults: hi: at start: 000.png judged PASS"), "{status}");
    for record in records(dir.path()) {
        assert_eq!(field(&record, "verdict"), "error", "{record}");
        assert!(field(&record, "error").contains("self-test failed"), "{record}");
    }
    // No PASS was shown while the fault stood.
    let levels = std::fs::read_to_string(dir.path().join("gpio.log")).unwrap();
    assert!(!levels.lines().any(|l| l.ends_with("pass 1")), "{levels}");

    assert_eq!(station.ask("acknowledge").unwrap(), "acknowledged: hi judge again");
    assert!(station.ask("acknowledge").unwrap_err().to_string().contains("no failed self-test"));
    station.wait_for("a PASS after the acknowledgement", |r| r.iter().any(|r| r["verdict"] == "pass"));
    // On request: still wrong, so ERROR again; the answer says what each reference got.
    let error = station.ask("self-test").unwrap_err().to_string();
    assert!(error.contains("FAILED") && error.contains("000.png judged PASS"), "{error}");
    assert!(error.contains("recipe lo: 000.png judged FAIL"), "lo's reference holds: {error}");
    let count = records(dir.path()).len();
    station.wait_for("ERROR again", |r| r.len() > count + 1 && r.last().unwrap()["verdict"] == "error");
    let (summary, log) = station.stop();
    assert_eq!(summary.self_test_failures, 2);
    assert!(log.contains("an operator acknowledged recipe hi's failed self-test"), "{log}");
    assert!(log.contains("self-test at start: passed: recipe lo"), "{log}");
}

/// Runs the 10 test parts once with recipe `hi` at `threshold` against the tiny memory, its
/// drift watch over 10 parts with a bound of 0.05; the summary, log and scores.
fn drift_run(threshold: f64) -> (RunSummary, String, Vec<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("memory = {:?}\n", common::tiny_memory());
    let extra = "[recipes]\nstart = \"hi\"\n[drift]\nwindow = 10\nbound = 0.05\n";
    let path = config(dir.path(), false, &keys, &keys, extra);
    let text = std::fs::read_to_string(&path).unwrap().replace("threshold = 1.0", &format!("threshold = {threshold}"));
    std::fs::write(&path, text).unwrap();
    let plan = StationPlan::load(&path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (summary, log) = clipada::logging::capture(|| run_in_process(&plan, stop, &mut |_| {}));
    let records = records(dir.path());
    assert!(records.iter().all(|r| r["verdict"] == "pass"), "every part passes: {records:?}");
    (summary.unwrap(), log, records.iter().map(|r| r["score"].as_f64().unwrap()).collect())
}

#[test]
fn a_drift_of_passing_scores_is_warned_as_the_records_and_the_calibration_say() {
    // The shift, from the records and the memory file, by this test's own arithmetic.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let bank = clipada::memory::file::read(&common::tiny_memory()).unwrap();
    let calibration = median(bank.good_scores.iter().map(|s| f64::from(*s)).collect());
    let shift = |scores: Vec<f64>, threshold: f64| (median(scores) - calibration) / (threshold - calibration);

    // At the top of the range the parts are far from the threshold: little shift.
    let (summary, log, scores) = drift_run(1.5);
    assert_eq!(scores.len(), 10);
    let far = shift(scores.clone(), 1.5);
    assert_eq!(summary.drift_warnings, u64::from(far.abs() >= 0.05), "shift {far}: {log}");
    // Just above the highest score the same parts have come most of the way to it.
    let near = scores.iter().copied().fold(0.0, f64::max) * 1.001;
    let (summary, log, scores) = drift_run(near);
    let shift = shift(scores, near);
    assert!(shift.abs() >= 0.05, "the fixture must drift past the bound for this test: {shift}");
    assert_eq!(summary.drift_warnings, 1, "shift {shift}: {log}");
    assert!(log.contains("recipe hi: drift"), "{log}");
    assert!(log.contains(&format!("{:+.0} %", shift * 100.0)), "shift {shift}: {log}");
}

#[test]
fn control_from_the_command_line_answers_and_refuses_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), true, "", "", "");
    let control = |request: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_clipada"))
            .args(["control", "--config"])
            .arg(&path)
            .args(request)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = control(&["status"]);
    assert_eq!(code, Some(1), "no station runs yet: {stderr}");
    assert!(stderr.contains("no station listens there"), "{stderr}");
    let station = Running::start(&path, dir.path());
    station.wait_for("a part", |r| !r.is_empty());
    let (code, stdout, stderr) = control(&["recipe", "hi"]);
    assert_eq!((code, stdout.trim()), (Some(0), "recipe hi from the next part"), "{stderr}");
    let (code, _, stderr) = control(&["acknowledge"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no failed self-test to acknowledge"), "{stderr}");
    station.stop();
}
