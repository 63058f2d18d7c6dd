//! The plant networks against real peers started here: a Mosquitto broker (Debian's
//! `mosquitto`) with `mosquitto_sub` as the plant's subscriber, and a Modbus client (`pymodbus`
//! in the project's venv: `tests/modbus_client.py`). A missing peer fails the test: the test
//! command installs them.

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clipada::station::assemble::run_in_process;
use clipada::station::plan::StationPlan;
use clipada::station::RunSummary;

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `done`, at most `seconds`.
fn wait_until(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Mosquitto broker on a loopback port for the station and (plain brokers) a second one for
/// the test's own clients, its sessions and queued messages saved in its folder every second
/// and when stopped (so a subscriber misses nothing across a restart).
struct Broker {
    port: u16,
    config: PathBuf,
    /// The same broker with only the test clients' port open.
    watchers_only: PathBuf,
    process: Option<Child>,
    /// How Mosquitto's clients reach it (`mosquitto_sub`'s options).
    access: Vec<String>,
}

/// `mosquitto_sub`'s options for a plain broker on a loopback port.
fn plain(port: u16) -> Vec<String> {
    ["-h", "127.0.0.1", "-p", &port.to_string()].map(String::from).to_vec()
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        Broker::start_on(dir, free_port())
    }

    fn start_on(dir: &Path, port: u16) -> Broker {
        let watchers = free_port();
        Broker::start_with(dir, port, watchers, "allow_anonymous true\n", plain(watchers))
    }

    /// A broker that takes only TLS (a certificate of a CA made here) and a user name and
    /// password; the station may log in as `station` with `station-password`.
    fn start_secured(dir: &Path) -> Broker {
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl").args(args).current_dir(dir).stderr(Stdio::null()).status();
            assert!(status.expect("openssl (tests/run-all.sh installs it)").success(), "openssl {args:?}");
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=plant test CA"],
            ]
            .concat(),
        );
        openssl(&[&["req"][..], &ec, &["-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=broker"]].concat());
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "broker.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "broker.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        let passwords = dir.join("passwords");
        for (user, password) in [("station", "station-password"), ("watcher", "watcher-password")] {
            let mut add = Command::new("mosquitto_passwd");
            if !passwords.exists() {
                add.arg("-c");
            }
            assert!(add.arg("-b").arg(&passwords).args([user, password]).status().unwrap().success());
        }
        let port = free_port();
        let settings = format!(
            "allow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n",
            passwords.display(),
            dir.join("ca.pem").display(),
            dir.join("broker.pem").display(),
            dir.join("broker.key").display()
        );
        let mut access = plain(port);
        access.extend(
            ["--cafile", dir.join("ca.pem").to_str().unwrap(), "-u", "watcher", "-P", "watcher-password"]
                .map(String::from),
        );
        // (TLS settings belong to one listener: the test's clients share the station's.)
        Broker::start_with(dir, port, port, &settings, access)
    }

    /// `settings` go with the station's listener on `port`; the test's clients use `watchers`.
    fn start_with(dir: &Path, port: u16, watchers: u16, settings: &str, access: Vec<String>) -> Broker {
        let store = dir.join("broker");
        std::fs::create_dir_all(&store).unwrap();
        let common =
            format!("persistence true\npersistence_location {}/\nautosave_interval 1\nuser root\n", store.display());
        let watchers_listener = if watchers == port {
            String::new()
        } else {
            format!("listener {watchers} 127.0.0.1\nallow_anonymous true\n")
        };
        let config = dir.join("mosquitto.conf");
        std::fs::write(&config, format!("{common}listener {port} 127.0.0.1\n{settings}{watchers_listener}")).unwrap();
        let watchers_only = dir.join("mosquitto-watchers.conf");
        std::fs::write(&watchers_only, format!("{common}{watchers_listener}")).unwrap();
        let mut broker = Broker { port, config, watchers_only, process: None, access };
        broker.run();
        broker
    }

    /// Starts (again) and waits until it accepts connections.
    fn run(&mut self) {
        self.run_with(&self.config.clone(), self.port);
    }

    /// Starts again with only the test clients' port open: the station cannot reach it.
    fn run_for_watchers_only(&mut self, watchers: &Subscriber) {
        let port = watchers.port;
        self.run_with(&self.watchers_only.clone(), port);
    }

    fn run_with(&mut self, config: &Path, port: u16) {
        let process = Command::new("mosquitto")
            .arg("-c")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian's `mosquitto`; tests/run-all.sh installs it)");
        self.process = Some(process);
        wait_until("the broker", 10, || TcpStream::connect(("127.0.0.1", port)).is_ok());
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is read or acknowledged.
    fn freeze(&self) {
        signal(self.process.as_ref().unwrap(), "STOP");
    }

    /// Ends it with `signal` (TERM: it saves its sessions; KILL: as at a power cut, whatever it
    /// had not acknowledged is gone).
    fn end(&mut self, name: &str) {
        if let Some(mut process) = self.process.take() {
            signal(&process, name);
            process.wait().unwrap();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

fn signal(process: &Child, name: &str) {
    let sent = Command::new("kill").arg(format!("-{name}")).arg(process.id().to_string()).status().unwrap();
    assert!(sent.success());
}

/// One message as `mosquitto_sub` printed it.
#[derive(Debug, Clone)]
struct Message {
    topic: String,
    qos: u8,
    retained: bool,
    payload: String,
}

/// `mosquitto_sub` on every topic under `prefix`, QoS 1, with a session the broker keeps
/// across reconnects and restarts; what it receives, in order.
struct Subscriber {
    process: Child,
    messages: Arc<Mutex<Vec<Message>>>,
    /// How it reaches the broker, the port among them.
    access: Vec<String>,
    port: u16,
    probe: String,
}

impl Subscriber {
    fn start(broker: &Broker, prefix: &str) -> Subscriber {
        Subscriber::start_with(&broker.access, prefix)
    }

    fn start_with(access: &[String], prefix: &str) -> Subscriber {
        let id = format!("plant-test-{}", std::process::id());
        let mut process = Command::new("mosquitto_sub")
            .args(access)
            .args(["-q", "1", "-c", "-i", &id])
            .args(["-t", &format!("{prefix}#"), "-F", "%t %q %r %p"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (Debian's `mosquitto-clients`; tests/run-all.sh installs it)");
        let stdout = process.stdout.take().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let theirs = messages.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut fields = line.splitn(4, ' ');
                let (Some(topic), Some(qos), Some(retained), payload) =
                    (fields.next(), fields.next(), fields.next(), fields.next().unwrap_or_default())
                else {
                    continue;
                };
                let message = Message {
                    topic: topic.to_string(),
                    qos: qos.parse().unwrap_or(9),
                    retained: retained == "1",
                    payload: payload.to_string(),
                };
                theirs.lock().unwrap().push(message);
            }
        });
        let at = access.iter().position(|a| a == "-p").unwrap();
        let port = access[at + 1].parse().unwrap();
        let (access, probe) = (access.to_vec(), format!("{prefix}probe"));
        let subscriber = Subscriber { process, messages, access, port, probe };
        subscriber.wait_subscribed();
        subscriber
    }

    /// Waits until a message of our own comes back: it is (again) connected and subscribed.
    fn wait_subscribed(&self) {
        let before = self.on(&self.probe).count();
        wait_until("the subscription", 10, || {
            let _ = Command::new("mosquitto_pub")
                .args(&self.access)
                .args(["-q", "1", "-t", &self.probe, "-m", "x"])
                .status();
            self.on(&self.probe).count() > before
        });
    }

    /// The messages received on `topic` so far.
    fn on(&self, topic: &str) -> std::vec::IntoIter<Message> {
        let messages = self.messages.lock().unwrap();
        messages.iter().filter(|m| m.topic == topic).cloned().collect::<Vec<_>>().into_iter()
    }
}

/// The message the broker retains on `topic` (what a new subscriber gets first), if any.
fn retained(access: &[String], topic: &str) -> Option<String> {
    let output = Command::new("mosquitto_sub")
        .args(access)
        .args(["-t", topic, "-C", "1", "-W", "3", "-F", "%r %p"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&output.stdout).trim_end().to_string();
    line.strip_prefix("1 ").map(str::to_string)
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A station over the sample test parts in a loop on the tiny model, triggered as `trigger`
/// says, with `extra` appended.
fn config(dir: &Path, trigger: &str, extra: &str) -> PathBuf {
    common::tiny_station(dir, true, "", &format!("\n[trigger]\n{trigger}\n\n{extra}"))
}

fn records(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("results.jsonl")).unwrap_or_default().lines().map(str::to_string).collect()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A station running in this process until [`Running::stop`].
struct Running {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<RunSummary>>,
}

impl Running {
    fn start(config: &Path) -> Running {
        let plan = StationPlan::load(config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let theirs = stop.clone();
        let thread = std::thread::spawn(move || run_in_process(&plan, theirs, &mut |_| {}));
        Running { stop, thread }
    }

    fn stop(self) -> RunSummary {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap().unwrap()
    }
}

const INTERVAL: &str = "mode = \"interval\"\ninterval_ms = 20";

fn mqtt(broker: &Broker, prefix: &str, extra: &str) -> String {
    format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {}\ntopic_prefix = {prefix:?}\nclient_id = \"station\"\ncounters_every_s = 1\n{extra}\n",
        broker.port
    )
}

/// Runs a station publishing to a broker that `outage` takes down (it returns stopped), waits
/// while results pile up, starts the broker again, and checks that every result the station
/// recorded up to well after the restart arrived, in order, with QoS 1.
fn every_result_arrives_in_order_across(
    prefix: &str,
    outage: impl FnOnce(&mut Broker, &Subscriber, &dyn Fn() -> usize),
) {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let subscriber = Subscriber::start(&broker, prefix);
    let result_topic = format!("{prefix}result");
    let config = config(dir.path(), INTERVAL, &mqtt(&broker, prefix, "queue = 2000"));
    let station = Running::start(&config);
    let count = || records(dir.path()).len();
    wait_until("20 results delivered", 120, || subscriber.on(&result_topic).count() >= 20);
    // (The broker saves the subscriber's session within a second.)
    std::thread::sleep(Duration::from_millis(1200));
    outage(&mut broker, &subscriber, &count);
    let at_down = count();
    // Results while the broker is away wait in the station.
    wait_until("20 results while the broker is down", 120, || count() >= at_down + 20);
    broker.run();
    let at_restart = count();
    let frame = |m: &Message| json(&m.payload)["frame"].as_u64().unwrap();
    wait_until("the results of the outage delivered", 120, || {
        let frames: std::collections::BTreeSet<u64> = subscriber.on(&result_topic).map(|m| frame(&m)).collect();
        frames.len() >= at_restart + 20
    });
    let summary = station.stop();

    let records = records(dir.path());
    let received: Vec<Message> = subscriber.on(&result_topic).collect();
    assert!(received.iter().all(|m| m.qos == 1 && !m.retained), "results are QoS 1, not retained");
    // QoS 1 may repeat a result around the break; the first arrival of each is in order and
    // is the station's record, byte for byte.
    let mut seen = std::collections::BTreeSet::new();
    let firsts: Vec<&Message> = received.iter().filter(|m| seen.insert(frame(m))).collect();
    assert!(firsts.len() >= at_restart + 20, "{} of {} records arrived", firsts.len(), records.len());
    for (i, message) in firsts.iter().enumerate() {
        assert_eq!(
            message.payload,
            records[i],
            "result {} (in arrival order) is the station's record {}",
            i + 1,
            i + 1
        );
    }
    assert_eq!(summary.mqtt_dropped, 0);
    // The counters, retained, say so too.
    let counters = retained(&broker.access, &format!("{prefix}counters")).expect("no counters retained");
    assert_eq!(json(&counters)["results_dropped"], 0, "{counters}");
    assert!(json(&counters)["parts"].as_u64().unwrap() > 0, "{counters}");
    assert_eq!(retained(&broker.access, &result_topic), None, "results are not retained");
}

#[test]
fn every_result_reaches_the_broker_in_order_across_a_broker_restart() {
    // Stopped as a service manager stops it.
    every_result_arrives_in_order_across("line1/", |broker, _, _| broker.end("TERM"));
}

#[test]
fn results_in_flight_when_the_broker_hangs_and_dies_are_published_again() {
    every_result_arrives_in_order_across("line2/", |broker, subscriber, count| {
        // It hangs with results in flight, then dies: none of those was acknowledged.
        broker.freeze();
        let at_freeze = count();
        wait_until("20 results while the broker hangs", 120, || count() >= at_freeze + 20);
        broker.end("KILL");
        // The power cut may have cost the subscriber's session (saved once a second): it
        // subscribes again while the station's port stays closed, and an orderly stop saves
        // it, so what the station sends after the restart has somewhere to go.
        broker.run_for_watchers_only(subscriber);
        subscriber.wait_subscribed();
        broker.end("TERM");
    });
}

#[test]
fn the_station_says_online_and_its_last_will_says_offline_when_it_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let subscriber = Subscriber::start(&broker, "cell/");
    // The station as its own process, killed without a chance to say goodbye.
    let config = config(dir.path(), INTERVAL, &mqtt(&broker, "cell/", "keep_alive_s = 5"));
    let mut station = StationProcess::start(&config);
    wait_until("online and a result", 120, || {
        subscriber.on("cell/status").any(|m| m.payload == "online") && subscriber.on("cell/result").next().is_some()
    });
    assert_eq!(retained(&broker.access, "cell/status").as_deref(), Some("online"));
    station.end("KILL");
    let killed = Instant::now();
    wait_until("the last will", 15, || subscriber.on("cell/status").last().is_some_and(|m| m.payload == "offline"));
    assert!(killed.elapsed() < Duration::from_secs(10));
    assert_eq!(retained(&broker.access, "cell/status").as_deref(), Some("offline"), "the will is retained");
}

#[test]
fn with_the_broker_away_the_oldest_results_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens on this port: every result waits, 5 at most.
    let extra = format!("[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nqueue = 5\n", free_port());
    let config = config(dir.path(), INTERVAL, &extra);
    let station = Running::start(&config);
    wait_until("12 results", 120, || records(dir.path()).len() >= 12);
    let summary = station.stop();
    // Every result recorded was published to the queue; all but the last 5 were dropped.
    let results = records(dir.path()).len() as u64;
    assert!(results >= 12);
    assert_eq!(summary.mqtt_dropped, results - 5, "{summary:?}");
}

#[test]
fn a_plc_reads_the_register_map_triggers_parts_and_switches_recipes_through_modbus() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // `lo` fails every part, `hi` passes every part: a result's verdict says whose it is.
    let extra = format!(
        "[modbus]\nbind = \"127.0.0.1:{port}\"\n\n[[recipe]]\nname = \"lo\"\nthreshold = 0.000001\n\n[[recipe]]\nname = \"hi\"\nthreshold = 1.0\n"
    );
    let config = config(dir.path(), "mode = \"modbus\"", &extra);
    let station = Running::start(&config);
    let python = common::root().join("models/.venv/bin/python");
    let output = Command::new(&python)
        .arg(common::root().join("tests/modbus_client.py"))
        .arg(port.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (tests/run-all.sh makes the venv)", python.display()));
    let summary = station.stop();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let report = json(&stdout);

    // Two parts, each triggered by the coil: PASS/FAIL by the recipe the register selected.
    assert_eq!(summary.frames, 2, "{summary:?}");
    let records: Vec<serde_json::Value> = records(dir.path()).iter().map(|r| json(r)).collect();
    assert_eq!(records.len(), 2);
    assert_eq!((&records[0]["recipe"], &records[0]["verdict"]), (&"lo".into(), &"fail".into()));
    assert_eq!((&records[1]["recipe"], &records[1]["verdict"]), (&"hi".into(), &"pass".into()));
    assert_eq!(report["recipe_register"], 2);
    // The refusals are Modbus exceptions: address 02, value 03.
    let refusals = &report["refusals"];
    assert_eq!(refusals["input register 26"], 2, "{refusals}");
    assert_eq!(refusals["recipe 3 of 2"], 3, "{refusals}");
    assert_eq!(refusals["holding register 7"], 2, "{refusals}");
    assert_eq!(refusals["coil 1"], 2, "{refusals}");

    // What the PLC read after each result is that result, as the README's map says.
    let snapshots: Vec<Vec<u32>> = serde_json::from_value(report["snapshots"].clone()).unwrap();
    let pair = |words: &[u32], at: usize| words[at] << 16 | words[at + 1];
    for (number, record) in records.iter().enumerate() {
        let number = number as u32 + 1;
        let words = snapshots
            .iter()
            .find(|w| pair(w, 0) == number && w[12] & 2 == 0)
            .unwrap_or_else(|| panic!("no read of result {number}: {snapshots:?}"));
        let verdict = match record["verdict"].as_str().unwrap() {
            "pass" => 1,
            "fail" => 2,
            _ => 3,
        };
        let scaled = |v: &serde_json::Value| (v.as_f64().unwrap() * 1000.0).round() as i32;
        assert_eq!(words[2], verdict, "verdict of {record}");
        assert_eq!(words[3], 0, "no error cause");
        assert_eq!(u64::from(pair(words, 4)), record["part_id"].as_u64().unwrap_or(0), "part ID");
        assert_eq!(pair(words, 6) as i32, scaled(&record["score"]), "score × 1000");
        assert_eq!(pair(words, 8) as i32, scaled(&record["threshold"]), "threshold × 1000");
        assert_eq!(words[10], number, "the result's recipe: lo is 1, hi is 2");
        assert_eq!(words[12] & 1, 1, "ready");
        assert_eq!(pair(words, 14), number, "parts");
        assert_eq!(pair(words, 16) + pair(words, 18) + pair(words, 20), number, "verdict counters");
    }
    // Before any part: no verdict, no score.
    let first = &snapshots[0];
    assert_eq!((pair(first, 0), first[2], pair(first, 6)), (0, 0, 0x8000_0000));
}

/// `clipada run --config …` as a process of its own, its log on a pipe; killed if a failing
/// test drops it still running.
struct StationProcess(Child);

impl StationProcess {
    fn start(config: &Path) -> StationProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clipada"));
        command.args(["run", "--config"]).arg(config).stdout(Stdio::null()).stderr(Stdio::piped());
        StationProcess(command.spawn().unwrap())
    }

    /// Sends it `signal` and waits: how it ended, its log, and how long it took.
    fn end(&mut self, name: &str) -> (std::process::ExitStatus, String, Duration) {
        signal(&self.0, name);
        let asked = Instant::now();
        let status = self.0.wait().unwrap();
        let took = asked.elapsed();
        let mut log = String::new();
        std::io::Read::read_to_string(&mut self.0.stderr.take().unwrap(), &mut log).unwrap();
        (status, log, took)
    }
}

impl Drop for StationProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the 26 input registers over a plain socket: the MBAP request of a PLC.
fn read_input_registers(port: u16) -> Vec<u16> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(&[0, 7, 0, 0, 0, 6, 1, 4, 0, 0, 0, 26]).unwrap();
    let mut response = [0u8; 9 + 52];
    stream.read_exact(&mut response).unwrap();
    assert_eq!(response[..9], [0, 7, 0, 0, 0, 55, 1, 4, 52]);
    response[9..].chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]])).collect()
}

#[test]
fn the_shipped_plant_config_serves_modbus_publishes_to_mqtt_and_stops_on_sigterm() {
    let config = common::root().join("board/examples/plant.toml");
    // The README's first command made the memory it uses.
    let demo = Command::new(env!("CARGO_BIN_EXE_clipada")).arg("demo").output().unwrap();
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
    // A real Mosquitto on 1883: this machine's own if it runs one, else one started here.
    let dir = tempfile::tempdir().unwrap();
    let _broker = TcpStream::connect(("127.0.0.1", 1883)).is_err().then(|| Broker::start_on(dir.path(), 1883));
    let subscriber = Subscriber::start_with(&plain(1883), "clipada/");
    let mut station = StationProcess::start(&config);
    wait_until("3 results on clipada/result", 120, || subscriber.on("clipada/result").count() >= 3);
    assert_eq!(retained(&plain(1883), "clipada/status").as_deref(), Some("online"));
    let words = read_input_registers(5020);
    let sequence = u32::from(words[0]) << 16 | u32::from(words[1]);
    assert!(sequence >= 3 && (1..=3).contains(&words[2]), "{words:?}");

    let (status, log, took) = station.end("TERM");
    assert!(status.success(), "{status}: {log}");
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?} to stop it");
    // Said offline (retained), and nothing listens on 5020 any more.
    assert_eq!(retained(&plain(1883), "clipada/status").as_deref(), Some("offline"));
    assert!(TcpStream::connect(("127.0.0.1", 5020)).is_err());
}

#[test]
fn results_reach_a_broker_that_takes_only_tls_and_a_password_and_a_wrong_password_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_secured(dir.path());
    let subscriber = Subscriber::start(&broker, "secure/");
    let password = dir.path().join("mqtt-password");
    std::fs::write(&password, "station-password\n").unwrap();
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let tls = |password_file: &Path| {
        format!(
            "username = \"station\"\npassword_file = {password_file:?}\n[mqtt.tls]\nca = {:?}\n",
            dir.path().join("ca.pem")
        )
    };
    let station_dir = dir.path().join("station");
    std::fs::create_dir(&station_dir).unwrap();
    let secure = config(&station_dir, INTERVAL, &mqtt(&broker, "secure/", &tls(&password)));
    let station = Running::start(&secure);
    wait_until("5 results over TLS", 120, || subscriber.on("secure/result").count() >= 5);
    station.stop();
    assert_eq!(retained(&broker.access, "secure/status").as_deref(), Some("offline"));

    // The wrong password: the broker refuses the station, which says so and keeps judging.
    std::fs::write(&password, "not-the-password\n").unwrap();
    let wrong_dir = dir.path().join("wrong");
    std::fs::create_dir(&wrong_dir).unwrap();
    let wrong = config(&wrong_dir, INTERVAL, &mqtt(&broker, "wrong/", &tls(&password)));
    // (As its own process: the MQTT threads log to the process's log, not to a test's capture.)
    let mut station = StationProcess::start(&wrong);
    wait_until("20 results with the broker refusing", 120, || records(&wrong_dir).len() >= 20);
    let (status, log, _) = station.end("TERM");
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("mqtt: 127.0.0.1:") && log.contains("refused"), "{log}");
    assert_eq!(retained(&broker.access, "wrong/status"), None, "never connected, never online");
}
