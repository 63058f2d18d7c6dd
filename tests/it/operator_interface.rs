//! The operator interface over real HTTP: a station (default model, sample parts in a loop) with
//! its server on a loopback port, asked by a client on a TCP socket of the test's own (so
//! that requests no browser would send, a traversal or a stalled head, go out as written),
//! by curl for TLS, and by Debian's Chromium (headless, driven by Playwright:
//! `tests/browser.py`) for the page. A missing peer fails the test: the test command installs
//! them.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clipada::station::assemble::run_in_process;
use clipada::station::plan::StationPlan;
use clipada::station::RunSummary;
use serde_json::Value;

/// The token the test stations take.
const TOKEN: &str = "test-token-0123456789abcdef";

/// A station's config in `dir`: the default model (whose memory finds the sample defects; the
/// tiny fixture's random weights pass every part) against a copy of its memory, the sample
/// parts every 100 ms in a loop, failed parts kept, and `[http]` on a free port with `http`'s
/// keys.
fn config(dir: &Path, http: &str) -> PathBuf {
    let memory = dir.join("part.memory");
    std::fs::copy(common::default_memory(), &memory).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = format!(
        "state_dir = {state:?}\n\n[model]\nbackend = \"tract\"\npath = {model:?}\nmemory = {memory:?}\n\n\
         [source]\nkind = \"directory\"\npath = {test:?}\nloop = true\n\n[trigger]\nmode = \"interval\"\ninterval_ms = 100\n\n\
         [gpio]\nkind = \"recording\"\nrecord = {gpio:?}\n\n[log]\nresults = {results:?}\nfailures_dir = {failures:?}\n\n\
         [http]\nbind = \"127.0.0.1:0\"\n{http}\n",
        state = dir.join("state"),
        model = common::default_model(),
        test = common::sample("test"),
        gpio = dir.join("gpio.log"),
        results = dir.join("results.jsonl"),
        failures = dir.join("failures"),
        http = http.replace("TOKEN_FILE", &format!("{token:?}")),
    );
    let path = dir.join("station.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A station running in this process, and where its server listens.
struct Station {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<RunSummary>>>,
}

impl Station {
    fn start(config: &Path) -> Station {
        let plan = StationPlan::load(config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (sender, address) = mpsc::channel();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            run_in_process(&plan, stopping, &mut |parts| {
                sender.send(parts.hmi.as_ref().expect("[http] starts the server").address()).unwrap();
            })
        });
        let address = address.recv_timeout(Duration::from_secs(120)).expect("the station started");
        let station = Station { address, stop, thread: Some(thread) };
        wait_until("the first results", 60, || station.get_json("/api/v1/status")["sequence"].as_u64() >= Some(3));
        station
    }

    fn stop(mut self) -> RunSummary {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap().unwrap()
    }

    /// `raw` sent as is; the status, the head and the body of the answer.
    fn send(&self, raw: &[u8]) -> (u16, String, Vec<u8>) {
        let mut stream = TcpStream::connect(self.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.write_all(raw).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        parse(&answer)
    }

    /// `count` connections, each sending a GET of `path` and kept open unread.
    fn hold(&self, count: usize, path: &str) -> Vec<TcpStream> {
        (0..count)
            .map(|_| {
                let mut stream = TcpStream::connect(self.address).unwrap();
                stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).unwrap();
                stream
            })
            .collect()
    }

    fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
    }

    fn get_json(&self, path: &str) -> Value {
        let (status, _, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    fn post(&self, path: &str, authorization: Option<&str>, body: &str) -> (u16, Value) {
        let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, _, body) = self.send(raw.as_bytes());
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Waits for the commissioning job to end; its state.
    fn job_done(&self) -> Value {
        let mut job = Value::Null;
        wait_until("the commissioning job", 120, || {
            job = self.get_json("/api/v1/commissioning")["job"].clone();
            job["busy"] == false
        });
        job
    }
}

impl Drop for Station {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An HTTP/1.1 answer's status, head and body (de-chunked).
fn parse(answer: &[u8]) -> (u16, String, Vec<u8>) {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(answer.len());
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut body = answer.get(split + 4..).unwrap_or_default().to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut plain = Vec::new();
        let mut rest = &body[..];
        while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            plain.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 4 + size..];
        }
        body = plain;
    }
    (status, head, body)
}

fn wait_until(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn records(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("results.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn the_page_api_and_metrics_tell_what_the_result_log_says() {
    let dir = tempfile::tempdir().unwrap();
    let station = Station::start(&config(dir.path(), "token_file = TOKEN_FILE\n"));
    let (status, head, page) = station.get("/");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/html"), "{head}");
    assert!(String::from_utf8_lossy(&page).contains("/api/v1/live.mjpg"));

    let results = station.get_json("/api/v1/results?limit=100");
    let results = results.as_array().unwrap();
    assert!(results.len() >= 3);
    // Every result the API gives is the result log's record of the same frame.
    let logged = records(dir.path());
    for result in results {
        let frame = result["frame"].as_u64().unwrap();
        let record = logged.iter().find(|r| r["frame"] == frame).expect("logged");
        assert_eq!(result["verdict"], record["verdict"]);
        let (api, log) = (result["score"].as_f64().unwrap(), record["score"].as_f64().unwrap());
        assert!((api - log).abs() < 1e-6, "frame {frame}: {api} vs {log}");
        assert_eq!(result["part_id"], record["part_id"]);
    }
    // Newest first, and each has its overlay while it is kept.
    assert!(results[0]["sequence"].as_u64() > results[1]["sequence"].as_u64());
    let thumbnail = results.iter().find_map(|r| r["image"].as_str()).expect("a thumbnail");
    let (status, head, jpeg) = station.get(thumbnail);
    assert_eq!(status, 200, "{head}");
    assert!(image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).is_ok());

    let status = station.get_json("/api/v1/status");
    assert_eq!((status["ready"].as_bool(), status["recipe"].as_str()), (Some(true), Some("default")));
    let counters = &status["counters"];
    assert_eq!(
        counters["frames"].as_u64().unwrap(),
        counters["passed"].as_u64().unwrap()
            + counters["failed"].as_u64().unwrap()
            + counters["errors"].as_u64().unwrap()
    );
    let by_recipe = station.get_json("/api/v1/counters");
    assert!(by_recipe["by_recipe"][0]["failed"].as_u64().unwrap() > 0, "the samples hold defects: {by_recipe}");

    let config = station.get_json("/api/v1/config");
    assert_eq!(config["http"]["token_file"], "(redacted)");
    assert_eq!(config["model"]["backend"], "tract");

    let scores = station.get_json("/api/v1/scores");
    assert!(!scores["calibrations"][0]["good_scores"].as_array().unwrap().is_empty());
    assert!(scores["calibrations"][0]["threshold"].as_f64().unwrap() > 0.0);

    let (status, _, metrics) = station.get("/metrics");
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    let value = |line_start: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(line_start)).unwrap_or_else(|| panic!("{line_start}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let failed = value("clipada_verdicts_total{recipe=\"default\",verdict=\"fail\"}");
    assert!(failed >= 1.0);
    assert_eq!(
        value("clipada_stage_latency_ms_bucket{stage=\"inference\",le=\"+Inf\"}"),
        value("clipada_stage_latency_ms_count{stage=\"inference\"}")
    );
    assert!(value("clipada_stage_latency_ms_count{stage=\"trigger_to_verdict\"}") >= 3.0);
    assert!(metrics.contains("clipada_engine_info{recipe=\"default\",engine=\"tract\""), "{metrics}");
    assert!(metrics.contains("clipada_missed_triggers_total 0"));

    // The live view: a multipart stream whose frames follow the results.
    let mut stream = TcpStream::connect(station.address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(b"GET /api/v1/live.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    let mut buffer = vec![0u8; 1 << 16];
    let until = Instant::now() + Duration::from_secs(20);
    let mut sequences = std::collections::BTreeSet::new();
    while sequences.len() < 2 && Instant::now() < until {
        let n = stream.read(&mut buffer).unwrap();
        seen.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&seen);
        sequences = text
            .match_indices("X-Result: ")
            .map(|(i, _)| text[i + 10..].split('\r').next().unwrap().to_string())
            .collect();
    }
    assert!(String::from_utf8_lossy(&seen).contains("multipart/x-mixed-replace; boundary=clipadaframe"));
    assert!(sequences.len() >= 2, "the live view did not move: {sequences:?}");
    drop(stream);
    let summary = station.stop();
    assert!(summary.frames >= 3);
}

#[test]
fn every_change_needs_the_token_and_reads_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let station = Station::start(&config(dir.path(), "token_file = TOKEN_FILE\n"));
    let before = station.get_json("/api/v1/commissioning");
    let good = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
    for path in ["/api/v1/commissioning/capture", "/api/v1/commissioning/calibrate", "/api/v1/memory/undo"] {
        for authorization in [None, Some(wrong.as_str()), Some("Basic dGVzdA=="), Some(TOKEN)] {
            let (status, answer) = station.post(path, authorization, "{\"count\": 2}");
            assert_eq!(status, 401, "{path} {authorization:?}: {answer}");
        }
        // A read of an action's address changes nothing.
        let (status, _, _) = station.get(path);
        assert_eq!(status, 404, "{path}");
        for method in ["PUT", "DELETE", "PATCH"] {
            let raw = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: {good}\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(station.send(raw.as_bytes()).0, 405, "{method} {path}");
        }
    }
    assert_eq!(station.get_json("/api/v1/commissioning"), before, "nothing started");
    assert!(!dir.path().join("state/memory-versions").exists(), "a read made a folder");
    // A request for another host (a name made to point here: DNS rebinding) is refused.
    let (status, _, body) =
        station.send(b"GET /api/v1/status HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 421, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = station.send(b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    for raw in [
        &b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"[..],
        b"GET http://evil.example/api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ] {
        let (status, _, _) = station.send(raw);
        assert!(status == 421 || status == 400, "{status}: {}", String::from_utf8_lossy(raw));
    }
    // The scheme's name in any case (RFC 7235), the token exactly.
    let (status, answer) = station.post("/api/v1/memory/undo", Some(&format!("bearer {TOKEN}")), "");
    assert_eq!(status, 409, "authorized, and nothing to undo: {answer}");
    // With the token: bad bodies get their 4xx, naming what is wrong.
    let (status, answer) = station.post("/api/v1/commissioning/capture", Some(&good), "{\"count\": 100000}");
    assert_eq!((status, answer["error"].as_str().unwrap().contains("count")), (400, true), "{answer}");
    let (status, _) = station.post("/api/v1/commissioning/capture", Some(&good), "[1, 2]");
    assert_eq!(status, 400);
    let (status, _) = station.post("/api/v1/commissioning/capture", Some(&good), "{not json");
    assert_eq!(status, 400);
    let (status, answer) = station.post("/api/v1/commissioning/capture", Some(&good), "{\"recipe\": \"nope\"}");
    assert_eq!((status, answer["error"].as_str().unwrap().contains("nope")), (400, true));
    let (status, _) = station.post("/api/v1/commissioning/calibrate", Some(&good), "");
    assert_eq!(status, 409, "nothing captured yet");
    let (status, _) = station.post("/api/v1/memory/undo", Some(&good), "");
    assert_eq!(status, 409, "nothing to undo");
    drop(station);

    // Without a token file the interface is read-only: every change is refused.
    let dir = tempfile::tempdir().unwrap();
    let station = Station::start(&config(dir.path(), ""));
    let (status, answer) = station.post("/api/v1/commissioning/capture", Some(&good), "");
    assert_eq!((status, answer["error"].as_str().unwrap().contains("read-only")), (403, true), "{answer}");
}

#[test]
fn no_request_reaches_a_file_outside_the_stations_folders() {
    let dir = tempfile::tempdir().unwrap();
    let station = Station::start(&config(dir.path(), ""));
    wait_until("a failed part in the archive", 60, || {
        !station.get_json("/api/v1/failures")["parts"].as_array().unwrap().is_empty()
    });
    let part = station.get_json("/api/v1/failures")["parts"][0].clone();
    let (status, _, png) = station.get(part["overlay"].as_str().unwrap());
    assert_eq!(status, 200);
    assert!(image::load_from_memory_with_format(&png, image::ImageFormat::Png).is_ok());
    // A link planted in the archive under an archive name, to a file outside.
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "root:x:0:0:do not serve").unwrap();
    let planted = "2026-01-01T000000.000Z-99999999-frame.png";
    std::os::unix::fs::symlink(&secret, dir.path().join("failures").join(planted)).unwrap();
    // And a hard link, under another archive name, to a file of the same file system.
    let linked = "2026-01-01T000000.000Z-99999998-frame.png";
    std::fs::hard_link(&secret, dir.path().join("failures").join(linked)).unwrap();
    let secret_name = secret.display().to_string();
    for path in [
        format!("/api/v1/failures/{planted}"),
        format!("/api/v1/failures/{linked}"),
        "/api/v1/failures/../../../../etc/passwd".into(),
        "/api/v1/failures/..%2f..%2f..%2fetc%2fpasswd".into(),
        "/api/v1/failures/%2e%2e/%2e%2e/etc/passwd".into(),
        "/api/v1/failures/%252e%252e%252fetc%252fpasswd".into(),
        "/api/v1/failures/....//....//etc/passwd".into(),
        "/api/v1/failures/..\\..\\etc\\passwd".into(),
        format!("/api/v1/failures/{}", secret_name.trim_start_matches('/')),
        "/api/v1/failures/station.toml".into(),
        "/../station.toml".into(),
        "//etc/passwd".into(),
        "/api/v1/results/../../token".into(),
    ] {
        let (status, _, body) = station.get(&path);
        assert!((400..500).contains(&status), "{path}: {status}");
        let body = String::from_utf8_lossy(&body);
        assert!(!body.contains("root:") && !body.contains(TOKEN), "{path}: {body}");
    }
    // An absolute-form request line and a request line that is not HTTP.
    assert!((400..500).contains(
        &station.send(b"GET http://x/../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").0
    ));
    let (status, _, _) = station.send(b"GARBAGE\r\n\r\n");
    assert!(status == 0 || (400..500).contains(&status), "{status}");
    // The station judged on throughout.
    let before = station.get_json("/api/v1/status")["sequence"].as_u64().unwrap();
    wait_until("more results", 30, || station.get_json("/api/v1/status")["sequence"].as_u64().unwrap() > before);
}

#[test]
fn bad_clients_get_their_4xx_and_the_loop_judges_on() {
    let dir = tempfile::tempdir().unwrap();
    let station =
        Station::start(&config(dir.path(), "token_file = TOKEN_FILE\nmax_connections = 4\nrequest_timeout_ms = 500\n"));
    // A head over the limit.
    let big =
        format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(40_000));
    let (status, _, _) = station.send(big.as_bytes());
    assert!(status == 431 || status == 400 || status == 0, "{status}");
    // A body over the limit.
    let body = "x".repeat(20_000);
    let (status, answer) = station.post("/api/v1/commissioning/capture", Some(&format!("Bearer {TOKEN}")), &body);
    assert_eq!(status, 413, "{answer}");
    // A head that never ends is cut off at the request timeout.
    let mut slow = TcpStream::connect(station.address).unwrap();
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(5), "a stalled head held its connection {:?}", started.elapsed());
    // A body announced and never sent: 408 at the timeout.
    let mut slow = TcpStream::connect(station.address).unwrap();
    let raw = format!("POST /api/v1/commissioning/capture HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{");
    slow.write_all(raw.as_bytes()).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    assert_eq!(parse(&answer).0, 408, "{}", String::from_utf8_lossy(&answer));
    // Live views take at most half the connections: the third of 4 is refused, the page and
    // the API keep the rest.
    let viewers = station.hold(2, "/api/v1/live.mjpg");
    std::thread::sleep(Duration::from_millis(300));
    let (status, _, _) = station.get("/api/v1/live.mjpg");
    assert_eq!(status, 503, "a third live view");
    assert_eq!(station.get("/api/v1/status").0, 200);
    // Connections beyond the limit are answered 503 while the others are held open.
    let held = station.hold(2, "/api/v1/status");
    std::thread::sleep(Duration::from_millis(200));
    let (status, _, _) = station.get("/api/v1/status");
    assert_eq!(status, 503);
    drop((held, viewers));
    // Once they are gone, the station answers and has judged on throughout.
    let mut sequence = 0;
    wait_until("the server to answer again", 20, || {
        let (status, _, body) = station.get("/api/v1/status");
        if status == 200 {
            sequence = serde_json::from_slice::<Value>(&body).unwrap()["sequence"].as_u64().unwrap();
        }
        status == 200
    });
    wait_until("more results", 30, || station.get_json("/api/v1/status")["sequence"].as_u64().unwrap() > sequence);
    let summary = station.stop();
    assert_eq!(summary.errors, 0);
}

#[test]
fn tls_serves_the_interface_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let status =
            Command::new("openssl").args(args).current_dir(dir.path()).stderr(std::process::Stdio::null()).status();
        assert!(status.expect("openssl (tests/run-all.sh installs it)").success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-subj",
        "/CN=station",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    ]);
    std::fs::set_permissions(dir.path().join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    let tls =
        format!("[http.tls]\ncert = {:?}\nkey = {:?}\n", dir.path().join("server.pem"), dir.path().join("server.key"));
    let plan_file = config(dir.path(), &tls);
    let plan = StationPlan::load(&plan_file).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (sender, address) = mpsc::channel();
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || {
        run_in_process(&plan, stopping, &mut |parts| sender.send(parts.hmi.as_ref().unwrap().address()).unwrap())
    });
    let address: SocketAddr = address.recv_timeout(Duration::from_secs(120)).unwrap();
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(extra)
            .arg(format!("https://127.0.0.1:{}/api/v1/status", address.port()))
            .output()
            .expect("curl (tests/run-all.sh installs it)")
    };
    let trusted = curl(&["--cacert", dir.path().join("server.pem").to_str().unwrap()]);
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    let status: Value = serde_json::from_slice(&trusted.stdout).unwrap();
    assert!(status["counters"]["frames"].is_u64());
    // Without the certificate's authority curl refuses; plain HTTP on the port gets no answer.
    assert!(!curl(&[]).status.success());
    let mut plain = TcpStream::connect(address).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    plain.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("counters"));
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap().unwrap();
}

/// SHA-256 of a file, as hex.
fn sha256(path: &Path) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn commissioning_captures_calibrates_sets_the_threshold_marks_good_and_undoes() {
    let dir = tempfile::tempdir().unwrap();
    let station = Station::start(&config(dir.path(), "token_file = TOKEN_FILE\n"));
    let token = format!("Bearer {TOKEN}");
    let memory = dir.path().join("part.memory");
    let original = sha256(&memory);
    let threshold_of =
        |station: &Station| station.get_json("/api/v1/scores")["calibrations"][0]["threshold"].as_f64().unwrap();
    let threshold_before = threshold_of(&station);

    let (status, answer) = station.post("/api/v1/commissioning/capture", Some(&token), "{\"count\": 4}");
    assert_eq!(status, 202, "{answer}");
    let job = station.job_done();
    assert_eq!((job["step"].as_str(), job["captured"].as_u64()), (Some("captured"), Some(4)), "{job}");
    let captures: Vec<_> = std::fs::read_dir(dir.path().join("state/commissioning"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("capture-"))
        .collect();
    assert_eq!(captures.len(), 4, "{captures:?}");

    let (status, _) = station.post("/api/v1/commissioning/calibrate", Some(&token), "");
    assert_eq!(status, 202);
    let job = station.job_done();
    assert_eq!(job["step"], "calibrated", "{job}");
    let report = &job["calibration"];
    let good: Vec<f64> = report["good_scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let threshold = report["threshold"].as_f64().unwrap();
    let max_good = good.iter().copied().fold(f64::MIN, f64::max);
    assert!(!good.is_empty() && threshold >= max_good, "{report}");
    assert!((report["margin"].as_f64().unwrap() - (threshold - max_good) / threshold).abs() < 1e-5);
    assert_eq!(sha256(&memory), original, "nothing is put in place before it is applied");

    // Captured parts the memory in force judged FAIL must be confirmed as good first.
    let failed = report["failed_captures"].as_array().unwrap().len();
    let body = if failed > 0 {
        let (status, answer) = station.post("/api/v1/commissioning/apply", Some(&token), "");
        assert_eq!(status, 409, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains("accept_failed_captures"), "{answer}");
        "{\"accept_failed_captures\": true}"
    } else {
        ""
    };
    let (status, _) = station.post("/api/v1/commissioning/apply", Some(&token), body);
    assert_eq!(status, 202);
    let job = station.job_done();
    assert_eq!(job["step"], "applied", "{job}");
    let applied = sha256(&memory);
    assert_ne!(applied, original);
    assert!((threshold_of(&station) - threshold).abs() < 1e-6);
    // Parts judged after it name the new memory and are judged against its threshold.
    wait_until("a record of the new memory", 30, || {
        records(dir.path()).iter().any(|r| r["judged_by"]["memory_sha256"].as_str() == Some(&applied[..16]))
    });
    let last = records(dir.path()).into_iter().last().unwrap();
    assert!((last["threshold"].as_f64().unwrap() - threshold).abs() < 1e-6, "{last}");
    let versions = dir.path().join("state/memory-versions");
    assert_eq!(std::fs::read_dir(&versions).unwrap().count(), 2, "the marker and the replaced memory");

    // Putting a memory in place invalidates the captures (the memory in force judged them).
    let (status, _) = station.post("/api/v1/commissioning/calibrate", Some(&token), "");
    assert_eq!(status, 409, "captures judged by the replaced memory");
    // A change that cannot be written changes nothing: not the file, not the kept versions.
    let (status, _) = station.post("/api/v1/commissioning/capture", Some(&token), "{\"count\": 3}");
    assert_eq!(status, 202);
    assert_eq!(station.job_done()["step"], "captured");
    let (status, _) = station.post("/api/v1/commissioning/calibrate", Some(&token), "");
    assert_eq!(status, 202);
    assert_eq!(station.job_done()["step"], "calibrated");
    let real = dir.path().join("real.memory");
    std::fs::rename(&memory, &real).unwrap();
    std::os::unix::fs::symlink(&real, &memory).unwrap();
    let (status, _) = station.post("/api/v1/commissioning/apply", Some(&token), "{\"accept_failed_captures\": true}");
    assert_eq!(status, 202);
    let job = station.job_done();
    assert_eq!(job["step"], "failed", "{job}");
    assert!(job["message"].as_str().unwrap().contains("symlink"), "{job}");
    assert_eq!(std::fs::read_dir(&versions).unwrap().count(), 2, "no version kept for a refused change");
    std::fs::remove_file(&memory).unwrap();
    std::fs::rename(&real, &memory).unwrap();
    assert_eq!(sha256(&memory), applied);

    // Undo puts the original back, byte for byte, and the loop judges with it again.
    let (status, _) = station.post("/api/v1/memory/undo", Some(&token), "");
    assert_eq!(status, 202);
    assert_eq!(station.job_done()["step"], "undone");
    assert_eq!(sha256(&memory), original);
    assert!((threshold_of(&station) - threshold_before).abs() < 1e-6);

    // "This part is good" on a failed part: refused while it would raise the threshold a lot,
    // done when allowed; the part's score against the new memory is then below its threshold.
    wait_until("a failed part", 60, || !station.get_json("/api/v1/failures")["parts"].as_array().unwrap().is_empty());
    let part = station.get_json("/api/v1/failures")["parts"][0].clone();
    let mark = part["mark_good"].as_str().unwrap();
    let (status, _) = station.post(mark, Some(&token), "");
    assert_eq!(status, 202);
    let job = station.job_done();
    let refused = job["step"] == "failed";
    if refused {
        assert!(job["message"].as_str().unwrap().contains("allow_threshold_rise"), "{job}");
        assert_eq!(sha256(&memory), original, "a refused marking changes nothing");
        let (status, _) = station.post(mark, Some(&token), "{\"allow_threshold_rise\": true}");
        assert_eq!(status, 202);
    }
    let job = if refused { station.job_done() } else { job };
    assert_eq!(job["step"], "marked", "{job}");
    let marked = sha256(&memory);
    assert_ne!(marked, original);
    let frame = dir.path().join("part-frame.png");
    let (_, _, png) = station.get(part["frame_image"].as_str().unwrap());
    std::fs::write(&frame, png).unwrap();
    let infer = Command::new(env!("CARGO_BIN_EXE_clipada"))
        .args(["infer", "--backend", "tract", "--json", "--model"])
        .arg(common::default_model())
        .arg("--memory")
        .arg(&memory)
        .arg(&frame)
        .output()
        .unwrap();
    let judged: Value = serde_json::from_slice(infer.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(judged["verdict"], "pass", "{judged}");
    let (status, _) = station.post("/api/v1/memory/undo", Some(&token), "");
    assert_eq!(status, 202);
    assert_eq!(station.job_done()["step"], "undone");
    assert_eq!(sha256(&memory), original);
    let summary = station.stop();
    assert_eq!(summary.errors, 0);
}

#[test]
fn the_page_works_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let station = Station::start(&config(dir.path(), "token_file = TOKEN_FILE\n"));
    let screenshot = dir.path().join("page.png");
    let python = common::root().join("models/.venv/bin/python");
    let output = Command::new(&python)
        .arg(common::root().join("tests/browser.py"))
        .arg(format!("http://{}/", station.address))
        .arg(TOKEN)
        .arg(&screenshot)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (tests/run-all.sh makes the venv)", python.display()));
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value =
        serde_json::from_slice(output.stdout.split(|b| *b == b'\n').rfind(|l| !l.is_empty()).unwrap()).unwrap();
    assert!(seen["live_changed"].as_bool().unwrap(), "{seen}");
    assert!(seen["gallery_parts"].as_u64().unwrap() >= 1, "{seen}");
    assert!(seen["applied"].as_str().unwrap().starts_with("applied"), "{seen}");
    // The threshold the page applied is the one the station now judges with.
    let threshold = station.get_json("/api/v1/scores")["calibrations"][0]["threshold"].as_f64().unwrap();
    assert!((seen["calibrated_threshold"].as_f64().unwrap() - threshold).abs() < 1e-6, "{seen}");
    let image = image::open(&screenshot).unwrap();
    assert_eq!((image.width(), image.height()), (1280, 800));
}

#[test]
fn the_shipped_hmi_config_serves_the_page_and_metrics_and_stops_on_sigterm() {
    let config = common::root().join("board/examples/hmi.toml");
    // The README's first command made the memory it uses.
    let demo = Command::new(env!("CARGO_BIN_EXE_clipada")).arg("demo").output().unwrap();
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
    let mut child = Command::new(env!("CARGO_BIN_EXE_clipada"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let station = Station { address: "127.0.0.1:8080".parse().unwrap(), stop: Arc::default(), thread: None };
    let mut status = Value::Null;
    wait_until("the example's first results", 120, || {
        let answered = TcpStream::connect(station.address).is_ok() && station.get("/api/v1/status").0 == 200;
        if answered {
            status = station.get_json("/api/v1/status");
        }
        status["sequence"].as_u64() >= Some(3)
    });
    let (code, _, metrics) = station.get("/metrics");
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&metrics).contains("clipada_verdicts_total{recipe=\"default\",verdict=\"fail\"}"));
    let (code, _, page) = station.get("/");
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&page).contains("<title>clipada station</title>"));
    let signalled = Instant::now();
    // SAFETY: signalling a child this test started and still owns.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let ended = child.wait().unwrap();
    let took = signalled.elapsed();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(ended.success(), "{ended}: {log}");
    assert!(log.contains("operator interface on http://127.0.0.1:8080/"), "{log}");
    // The rule is 100 ms (measured by hand in the closing note); a loaded test machine gets slack.
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
    assert!(TcpStream::connect(station.address).is_err(), "still listening after it ended");
}
