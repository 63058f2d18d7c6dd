//! Trigger benchmark: scripted TRIGGER edges (`gpio.trigger_script`) through the real station
//! loop (listener thread, debounce, fresh-frame rule, the default model with the demo's memory,
//! supervisor, recording GPIO with the BUSY/RESULT-VALID handshake, result log), on each engine:
//!
//! - trigger-to-output latency (`latency_ms` of the result log: from the trigger's edge to the
//!   verdict on the lines) p50 and p99, at a trigger rate the station holds;
//! - the highest trigger rate held without a missed trigger, of the rates tried (each a run of
//!   `TRIGGERS` triggers).
//!
//!     cargo bench --bench trigger
//!
//! Needs the demo's memory (`cargo run --release -- demo`) and, for ONNX Runtime,
//! `ORT_DYLIB_PATH`; prints one JSON object.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[path = "support/mod.rs"]
mod support;

use clipada::station::assemble::run_in_process;
use clipada::station::plan::StationPlan;

/// Triggers per run.
const TRIGGERS: u64 = 60;
/// Rates tried, triggers per second, in increasing order.
const RATES: [u64; 9] = [5, 10, 15, 20, 30, 40, 50, 70, 100];
/// The rate at which latency is reported.
const LATENCY_RATE: u64 = 5;

/// What one run gave.
struct Run {
    missed: u64,
    latencies_ms: Vec<f64>,
}

/// `TRIGGERS` triggers at `rate` per second on `backend`, from 300 ms after start.
fn run(root: &Path, backend: &str, rate: u64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let period_ms = 1000 / rate;
    let script: String =
        (0..TRIGGERS).map(|i| 300 + i * period_ms).map(|at| format!("{at} 1\n{} 0\n", at + 2)).collect();
    let script_path = dir.path().join("trigger.txt");
    std::fs::write(&script_path, script).unwrap();
    let gpio = format!("trigger_script = {script_path:?}");
    let config_path =
        support::default_station(root, dir.path(), backend, "mode = \"gpio\"\ndebounce_ms = 1", &gpio, "");
    let plan = StationPlan::load(&config_path).unwrap();
    let summary = run_in_process(&plan, Arc::new(AtomicBool::new(false)), &mut |_| {}).unwrap();
    assert_eq!(summary.frames, TRIGGERS, "every trigger has its result");
    let text = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap();
    let mut latencies_ms: Vec<f64> = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|record| record["verdict"] != "error")
        .map(|record| record["latency_ms"].as_f64().unwrap())
        .collect();
    latencies_ms.sort_by(f64::total_cmp);
    Run { missed: summary.missed_triggers, latencies_ms }
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((last as f64) * p).round() as usize])
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let memory = root.join("target/demo/part.memory");
    assert!(memory.is_file(), "run `cargo run --release -- demo` first: it makes {}", memory.display());
    let mut backends = vec!["tract"];
    if std::env::var_os("ORT_DYLIB_PATH").is_some() {
        backends.insert(0, "ort");
    }
    let mut report = serde_json::Map::new();
    for backend in backends {
        let at_rate = run(root, backend, LATENCY_RATE);
        let mut held = None;
        for rate in RATES {
            let missed = run(root, backend, rate).missed;
            eprintln!("{backend}: {rate} triggers/s, {missed} missed of {TRIGGERS}");
            if missed > 0 {
                break;
            }
            held = Some(rate);
        }
        report.insert(
            backend.into(),
            serde_json::json!({
                "latency_at_rate_per_s": LATENCY_RATE,
                "latency_ms_p50": percentile(&at_rate.latencies_ms, 0.5),
                "latency_ms_p99": percentile(&at_rate.latencies_ms, 0.99),
                "missed_at_latency_rate": at_rate.missed,
                "highest_rate_without_missed_trigger_per_s": held,
                "rates_tried_per_s": RATES,
                "triggers_per_run": TRIGGERS,
            }),
        );
    }
    println!("{}", serde_json::Value::Object(report));
}
