//! Plant-network and operator-interface benchmark: the trigger-to-verdict latency of the real
//! station loop (default model, the demo's memory, interval triggers, recording GPIO, result
//! log) with
//!
//! - `neither`: no plant network, no HTTP server;
//! - `broker_up`: `[mqtt]` publishing every result to a Mosquitto broker started here;
//! - `broker_down`: `[mqtt]` pointed at a port nobody listens on (every result queued);
//! - `modbus_100hz`: `[modbus]` with a client reading the whole input-register map every 10 ms;
//! - `http_no_clients`: `[http]` on (the loop draws and hands over each overlay), no client;
//! - `http_5_streams`: `[http]` with 5 clients reading the live view (MJPEG) throughout.
//!
//! The conditions take turns, `ROUNDS` rounds of `PARTS` parts each, so a noisy machine drifts
//! alike for all; each condition's p50 and p99 are over all its rounds, and its p99 is given
//! as a ratio to `neither`'s from the same run (and `http_5_streams`' to `http_no_clients`').
//!
//!     cargo bench --bench plant
//!
//! Needs the demo's memory (`cargo run --release -- demo`), Debian's `mosquitto`, and, for
//! ONNX Runtime (else tract), `ORT_DYLIB_PATH`; prints one JSON object.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use clipada::station::assemble::run_in_process;
use clipada::station::plan::StationPlan;

/// Parts per run.
const PARTS: u64 = 100;
/// Runs per condition, taking turns with the others.
const ROUNDS: usize = 3;
/// One part every this many ms: well within what either engine holds.
const INTERVAL_MS: u64 = 100;
/// The Modbus client's period (100 Hz).
const POLL: Duration = Duration::from_millis(10);

const CONDITIONS: [&str; 6] =
    ["neither", "broker_up", "broker_down", "modbus_100hz", "http_no_clients", "http_5_streams"];
/// Live-view clients of `http_5_streams`.
const VIEWERS: usize = 5;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Mosquitto broker on a free loopback port, killed when dropped.
struct Broker {
    port: u16,
    process: Child,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let port = free_port();
        let config = dir.join("mosquitto.conf");
        std::fs::write(&config, format!("listener {port} 127.0.0.1\nallow_anonymous true\n")).unwrap();
        let process = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian's `mosquitto`)");
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "the broker did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { port, process }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A connection to `port` on loopback, tried again until the station's `server` listens (a
/// minute at most, or until `stop`).
fn connect(port: u16, stop: &AtomicBool, server: &str) -> TcpStream {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => return stream,
            Err(_) if Instant::now() < until && !stop.load(Ordering::Relaxed) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("no {server}: {e}"),
        }
    }
}

/// Reads the 26 input registers every `POLL` until `stop`; how many reads were answered.
fn poll_registers(port: u16, stop: &AtomicBool, reads: &AtomicU64) {
    let mut stream = connect(port, stop, "Modbus server");
    stream.set_nodelay(true).unwrap();
    let mut response = [0u8; 9 + 52];
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        stream.write_all(&[0, 1, 0, 0, 0, 6, 1, 4, 0, 0, 0, 26]).unwrap();
        stream.read_exact(&mut response).unwrap();
        reads.fetch_add(1, Ordering::Relaxed);
        next += POLL;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// Reads the live view on `port` until `stop`, adding the frames taken to `frames`.
fn view_live(port: u16, stop: &AtomicBool, frames: &AtomicU64) {
    let mut stream = connect(port, stop, "HTTP server");
    stream.write_all(b"GET /api/v1/live.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    const MARK: &[u8] = b"X-Result: ";
    // The end of the last read, where a mark may have begun.
    let mut seen = Vec::with_capacity(1 << 16);
    let mut buffer = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        if let Ok(n) = stream.read(&mut buffer) {
            seen.extend_from_slice(&buffer[..n]);
            let marks = seen.windows(MARK.len()).filter(|w| *w == MARK).count();
            frames.fetch_add(marks as u64, Ordering::Relaxed);
            let keep = seen.len().min(MARK.len() - 1);
            seen.drain(..seen.len() - keep);
        }
    }
}

/// One run of `PARTS` parts under `condition`: the latencies of its results, in ms.
fn run(root: &Path, backend: &str, condition: &str, broker: &Broker) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let plant = match condition {
        "broker_up" => format!("[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"bench\"\n", broker.port),
        "broker_down" => format!("[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nqueue = 100000\n", free_port()),
        "modbus_100hz" => format!("[modbus]\nbind = \"127.0.0.1:{port}\"\n"),
        "http_no_clients" | "http_5_streams" => format!("[http]\nbind = \"127.0.0.1:{port}\"\n"),
        _ => String::new(),
    };
    let trigger = format!("mode = \"interval\"\ninterval_ms = {INTERVAL_MS}");
    let config_path = support::default_station(root, dir.path(), backend, &trigger, "", &plant);
    let plan = StationPlan::load(&config_path).unwrap();
    let results = dir.path().join("results.jsonl");
    let count = || std::fs::read_to_string(&results).map_or(0, |t| t.lines().count() as u64);

    let stop = Arc::new(AtomicBool::new(false));
    let polling = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let client = (condition == "modbus_100hz").then(|| {
        let (polling, reads) = (polling.clone(), reads.clone());
        std::thread::spawn(move || poll_registers(port, &polling, &reads))
    });
    let viewed = Arc::new(AtomicU64::new(0));
    let viewers: Vec<_> = (0..if condition == "http_5_streams" { VIEWERS } else { 0 })
        .map(|_| {
            let (polling, viewed) = (polling.clone(), viewed.clone());
            std::thread::spawn(move || view_live(port, &polling, &viewed))
        })
        .collect();
    let station = {
        let stop = stop.clone();
        std::thread::spawn(move || run_in_process(&plan, stop, &mut |_| {}))
    };
    let started = Instant::now();
    while count() < PARTS {
        assert!(!station.is_finished(), "the station ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    polling.store(true, Ordering::Relaxed);
    station.join().unwrap().unwrap();
    let streams = viewers.len();
    for viewer in viewers {
        viewer.join().unwrap();
    }
    if streams > 0 {
        // Each viewer got most of the parts' frames (10 a second at most, one per part here).
        let per_viewer = viewed.load(Ordering::Relaxed) / streams as u64;
        assert!(per_viewer >= PARTS * 8 / 10, "the viewers took only {per_viewer} frames each");
    }
    if let Some(client) = client {
        client.join().unwrap();
        let rate = reads.load(Ordering::Relaxed) as f64 / took.as_secs_f64();
        assert!(rate > 80.0, "the Modbus client read at only {rate:.0} Hz");
    }
    let text = std::fs::read_to_string(&results).unwrap();
    text.lines()
        .take(PARTS as usize)
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|record| {
            assert_ne!(record["verdict"], "error", "{record}");
            record["latency_ms"].as_f64().unwrap()
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let memory = root.join("target/demo/part.memory");
    assert!(memory.is_file(), "run `cargo run --release -- demo` first: it makes {}", memory.display());
    let backend = if std::env::var_os("ORT_DYLIB_PATH").is_some() { "ort" } else { "tract" };
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); CONDITIONS.len()];
    for round in 0..ROUNDS {
        for (i, condition) in CONDITIONS.iter().enumerate() {
            let run = run(root, backend, condition, &broker);
            eprintln!("round {}: {condition}: {} parts", round + 1, run.len());
            latencies[i].extend(run);
        }
    }
    let mut report = serde_json::Map::new();
    let mut neither_p99 = None;
    let mut idle_server_p99 = None;
    for (condition, mut values) in CONDITIONS.into_iter().zip(latencies) {
        values.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&values, 0.5), percentile(&values, 0.99));
        let base = *neither_p99.get_or_insert(p99);
        let mut entry = serde_json::json!({
            "latency_ms_p50": p50,
            "latency_ms_p99": p99,
            "p99_ratio_to_neither": p99 / base,
            "parts": values.len(),
        });
        match condition {
            "http_no_clients" => idle_server_p99 = Some(p99),
            "http_5_streams" => entry["p99_ratio_to_http_no_clients"] = (p99 / idle_server_p99.unwrap()).into(),
            _ => {}
        }
        report.insert(condition.into(), entry);
    }
    report.insert("backend".into(), backend.into());
    report.insert("interval_ms".into(), INTERVAL_MS.into());
    println!("{}", serde_json::Value::Object(report));
}
