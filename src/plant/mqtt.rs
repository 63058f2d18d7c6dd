//! The MQTT publisher (`[mqtt]`, on `rumqttc`): every result as JSON (the result log's line)
//! on `<prefix>result` with QoS 1, `online` retained on `<prefix>status` (the last will says
//! `offline`, retained, when the station vanishes), the counters on `<prefix>counters` every
//! `counters_every_s`.
//!
//! Results wait on the station's [`StatusBoard`] (bounded, the oldest dropped and counted)
//! until the broker acknowledges them: a result leaves the queue only at its own PUBACK, matched
//! by packet ID (publishes left over from a break are fenced off, see `drive`). After a broken
//! connection every unacknowledged result is published again from the oldest, so none is lost
//! within the queue bound; a result the broker got just before the break may arrive twice (QoS
//! 1 is "at least once": a consumer tells them apart by `part_id` or `frame`).
//!
//! Two threads: the connection's (it runs rumqttc's event loop, reconnecting after a pause
//! that grows from 200 ms to 2 s) and the publisher's (it hands results to the client while
//! the broker is there). Neither is ever waited on by the inspection loop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{Client, Connection, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};

use super::{MqttSettings, TlsFiles};
use crate::station::status::{lock, StatusBoard};
use crate::storage::secret::{pem_certificates, pem_private_key, secret_text};

/// Results handed to the client and not yet acknowledged, at most.
const IN_FLIGHT: usize = 32;
/// The first pause before reconnecting; it doubles up to [`RECONNECT_MAX`].
const RECONNECT: Duration = Duration::from_millis(200);
/// The longest pause before reconnecting.
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// How long the publisher waits for a new result before it looks at its connection again.
const POLL: Duration = Duration::from_millis(20);
/// How long stopping waits for `offline` and the disconnect to be sent.
const STOP_WAIT: Duration = Duration::from_millis(300);

/// What the publisher and the connection thread share: whether results may be handed to the
/// client, and the results in flight.
#[derive(Default)]
struct Flight {
    /// Results may be handed to the client: the broker is connected and every publish left
    /// over from before the last break has been written.
    open: bool,
    /// How many times the link has opened: at each opening the publisher starts again from
    /// the oldest waiting result.
    openings: u64,
    /// Results handed to the client and not yet written, oldest first.
    handed: VecDeque<u64>,
    /// Results written and waiting for their PUBACK: packet ID and result number, oldest first.
    written: VecDeque<(u16, u64)>,
}

impl Flight {
    /// Results handed to the client and not yet acknowledged.
    fn in_flight(&self) -> usize {
        self.handed.len() + self.written.len()
    }

    /// The link is up: results may be handed again, from the oldest waiting.
    fn open(&mut self) {
        self.open = true;
        self.openings += 1;
    }

    /// The link broke: nothing in flight will be acknowledged.
    fn close(&mut self) {
        self.open = false;
        self.handed.clear();
        self.written.clear();
    }
}

/// The running publisher; dropped, it says `offline` and disconnects (within about 300 ms,
/// whatever the broker does).
pub struct MqttPublisher {
    stop: Arc<AtomicBool>,
    publisher: Option<JoinHandle<()>>,
}

/// The topics of a station.
struct Topics {
    result: String,
    status: String,
    counters: String,
}

impl MqttPublisher {
    /// Connects to the broker of `settings` (in the background: a broker that is away is
    /// retried, never waited for) and publishes what the loop puts on `board`.
    pub fn start(settings: &MqttSettings, board: Arc<StatusBoard>) -> anyhow::Result<MqttPublisher> {
        let prefix = &settings.topic_prefix;
        let topics = Topics {
            result: format!("{prefix}result"),
            status: format!("{prefix}status"),
            counters: format!("{prefix}counters"),
        };
        let options = options(settings, &topics.status)?;
        let (client, connection) = Client::new(options, 2 * IN_FLIGHT);
        let flight = Arc::new(Mutex::new(Flight::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let broker = format!("{}:{}", settings.host, settings.port);
        let driver = {
            let (client, flight, board, stop, broker) =
                (client.clone(), flight.clone(), board.clone(), stop.clone(), broker.clone());
            let fence = format!("{prefix}fence");
            std::thread::Builder::new()
                .name("mqtt-connection".into())
                .spawn(move || drive(connection, &client, &flight, &board, &fence, &broker, &stop))
                .context("mqtt: cannot start its thread")?
        };
        let every = settings.counters_every;
        let theirs = stop.clone();
        let publisher = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || {
                publish(&client, &flight, &board, &topics, every, &broker, &theirs);
                // Give `offline` and the disconnect a moment to be written.
                let until = Instant::now() + STOP_WAIT;
                while !driver.is_finished() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if driver.is_finished() {
                    let _ = driver.join();
                }
            })
            .context("mqtt: cannot start its thread")?;
        Ok(MqttPublisher { stop, publisher: Some(publisher) })
    }
}

impl Drop for MqttPublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(publisher) = self.publisher.take() {
            let _ = publisher.join();
        }
    }
}

/// The client's options: ID, keep-alive, last will, credentials, TLS.
fn options(settings: &MqttSettings, status_topic: &str) -> anyhow::Result<MqttOptions> {
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    options.set_keep_alive(settings.keep_alive);
    options.set_clean_session(true);
    options.set_last_will(LastWill::new(status_topic, "offline", QoS::AtLeastOnce, true));
    if let Some((user, password_file)) = &settings.credentials {
        let password = match password_file {
            Some(path) => secret_text(path).context("mqtt.password_file")?,
            None => String::new(),
        };
        options.set_credentials(user, password);
    }
    if let Some(tls) = &settings.tls {
        let config = tls_config(tls)?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config))));
    }
    Ok(options)
}

/// A rustls client configuration (ring's cryptography) trusting `tls.ca`, with the station's
/// own certificate when given.
fn tls_config(tls: &TlsFiles) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certificates(&tls.ca).context("mqtt.tls.ca")? {
        roots.add(cert).with_context(|| format!("mqtt.tls.ca: {}", tls.ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("mqtt.tls: protocol versions")?
        .with_root_certificates(roots);
    Ok(match &tls.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = pem_certificates(cert).context("mqtt.tls.cert")?;
            let key = pem_private_key(key).context("mqtt.tls.key")?;
            builder.with_client_auth_cert(certs, key).context("mqtt.tls: the certificate and key")?
        }
    })
}

/// The connection thread: runs the client's event loop, matches each PUBACK to its result by
/// packet ID (the result then leaves the board), and pauses before each reconnect; ends when
/// stopped or when the client is gone.
///
/// A break makes the event loop drop the requests it holds, but a publish handed to the client
/// just before the publisher learns of the break stays queued and is written after the
/// reconnect, ahead of the publisher's own republication. So that such a stale publish's
/// PUBACK is not taken for a fresh one's, a fence (an UNSUBSCRIBE from `fence_topic`) is queued
/// behind it, and the link opens only once the fence has been written.
fn drive(
    mut connection: Connection,
    client: &Client,
    flight: &Mutex<Flight>,
    board: &StatusBoard,
    fence_topic: &str,
    broker: &str,
    stop: &AtomicBool,
) {
    let mut pause = RECONNECT;
    // Connected since the last error (so the next error empties the event loop's queue).
    let mut connected = false;
    // A fence is queued and the link opens when it is written.
    let mut fencing = false;
    let mut losses = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match connection.recv() {
            Err(_) => return, // every client is gone
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                pause = RECONNECT;
                connected = true;
                tracing::info!("mqtt: connected to {broker}");
                if !fencing {
                    lock(flight).open();
                }
            }
            Ok(Ok(Event::Outgoing(Outgoing::Unsubscribe(_)))) if fencing => {
                fencing = false;
                lock(flight).open();
            }
            Ok(Ok(Event::Outgoing(Outgoing::Publish(packet)))) if packet != 0 => {
                let mut flight = lock(flight);
                if flight.open {
                    if let Some(number) = flight.handed.pop_front() {
                        flight.written.push_back((packet, number));
                    }
                }
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                let mut flight = lock(flight);
                let Some(at) = flight.written.iter().position(|&(packet, _)| packet == ack.pkid) else { continue };
                let number = flight.written[at].1;
                flight.written.drain(..=at);
                drop(flight);
                board.delivered(number);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                lock(flight).close();
                losses += 1;
                if connected || losses.is_power_of_two() {
                    tracing::warn!("mqtt: {broker}: {e} ({} results wait; reconnecting)", board.waiting());
                }
                if connected {
                    fencing = client.try_unsubscribe(fence_topic).is_ok();
                    if !fencing {
                        tracing::warn!(
                            "mqtt: no room to queue the reconnect fence: a result may be counted delivered early"
                        );
                    }
                }
                connected = false;
                let until = Instant::now() + pause;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(POLL);
                }
                pause = (pause * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// The publisher thread: hands waiting results to the client while the link is open (at
/// most [`IN_FLIGHT`] unacknowledged), publishes the counters every `every`; at stop,
/// `offline` and a disconnect.
fn publish(
    client: &Client,
    flight: &Mutex<Flight>,
    board: &StatusBoard,
    topics: &Topics,
    every: Duration,
    broker: &str,
    stop: &AtomicBool,
) {
    let mut opening = 0u64;
    let mut last_sent = 0u64;
    let mut counters_due = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let (open, openings, room) = {
            let flight = lock(flight);
            (flight.open, flight.openings, flight.in_flight() < IN_FLIGHT)
        };
        if !open {
            std::thread::sleep(POLL);
            continue;
        }
        if openings != opening {
            opening = openings;
            let _ = client.try_publish(&topics.status, QoS::AtMostOnce, true, "online");
            // Everything still waiting again, from the oldest.
            last_sent = board.oldest_waiting().map_or(last_sent, |n| n - 1);
            counters_due = Instant::now();
        }
        if Instant::now() >= counters_due {
            counters_due = Instant::now() + every;
            let _ = client.try_publish(&topics.counters, QoS::AtMostOnce, true, counters_json(board));
        }
        if !room {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let Some(result) = board.next_result(last_sent, POLL) else { continue };
        // Handed under the lock, so a break cannot come between the check and the handing.
        let mut flight = lock(flight);
        if flight.open
            && flight.openings == opening
            && client.try_publish(&topics.result, QoS::AtLeastOnce, false, result.json.to_vec()).is_ok()
        {
            flight.handed.push_back(result.number);
            last_sent = result.number;
        }
    }
    let _ = client.try_publish(&topics.status, QoS::AtMostOnce, true, "offline");
    let _ = client.try_disconnect();
    let waiting = board.waiting();
    if waiting > 0 {
        tracing::warn!("mqtt: {waiting} results not delivered to {broker} at stop");
    }
}

/// The counters as JSON, from the board's status.
fn counters_json(board: &StatusBoard) -> Vec<u8> {
    let status = board.status();
    let c = &status.counters;
    let json = serde_json::json!({
        "time": crate::station::log::rfc3339(std::time::SystemTime::now()).as_str(),
        "results": status.sequence,
        "parts": c.frames,
        "passed": c.passed,
        "failed": c.failed,
        "errors": c.errors,
        "missed_triggers": c.missed_triggers,
        "stale_frames": c.stale_frames,
        "self_test_failures": c.self_test_failures,
        "drift_warnings": c.drift_warnings,
        "results_waiting": board.waiting(),
        "results_dropped": c.mqtt_dropped,
        "ready": status.ready,
        "busy": status.busy,
    });
    json.to_string().into_bytes()
}
