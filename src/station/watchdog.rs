//! systemd's service notification protocol (`sd_notify`), without libsystemd: `READY=1` when
//! the station is about to take its first frame, `EXTEND_TIMEOUT_USEC=` while it starts (a
//! first TensorRT engine build takes minutes), `WATCHDOG=1` heartbeats while the inspection
//! loop is heard from (so a hung loop is restarted by `WatchdogSec=`), `STATUS=` lines (what it
//! is doing; the verdict counters), `STOPPING=1` on the way out. The supervisor sends them (it
//! is the service's main process).
//! Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// A connection to the service manager's notification socket.
pub(crate) struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// Least time between heartbeats: a quarter of `WATCHDOG_USEC` (a second without it).
    interval: Duration,
    last_beat: Option<Instant>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` and `WATCHDOG_USEC`, as systemd sets them; an unusable socket
    /// address is reported and ignored (the station runs, unsupervised).
    pub(crate) fn from_env() -> Result<Notifier, String> {
        let interval = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|usec| Duration::from_micros(usec / 4))
            .unwrap_or(Duration::from_secs(1));
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(Notifier { socket: None, interval, last_beat: None });
        };
        let path = path.to_string_lossy().into_owned();
        let address = match path.strip_prefix('@') {
            Some(name) => abstract_address(name.as_bytes()),
            None => SocketAddr::from_pathname(&path).map_err(|e| e.to_string()),
        }
        .map_err(|e| format!("NOTIFY_SOCKET {path}: {e}"))?;
        let socket = UnixDatagram::unbound().map_err(|e| format!("NOTIFY_SOCKET {path}: {e}"))?;
        Ok(Notifier { socket: Some((socket, address)), interval, last_beat: None })
    }

    fn send(&self, message: &str) {
        if let Some((socket, address)) = &self.socket {
            // A lost notification is not worth stopping the inspection for.
            let _ = socket.send_to_addr(message.as_bytes(), address);
        }
    }

    /// The station is running.
    pub fn ready(&mut self) {
        self.send("READY=1");
        self.last_beat = Some(Instant::now());
    }

    /// The loop is alive; sent at most every quarter of the watchdog period.
    pub(crate) fn heartbeat(&mut self) {
        let now = Instant::now();
        if self.last_beat.is_none_or(|last| now.duration_since(last) >= self.interval) {
            self.send("WATCHDOG=1");
            self.last_beat = Some(now);
        }
    }

    /// A status line (`STATUS=`): what the station is doing, its counters.
    pub fn status(&mut self, text: &str) {
        let mut message = heapless::String::<160>::new();
        let _ = message.push_str("STATUS=");
        for c in text.chars().filter(|c| !c.is_control()) {
            if message.push(c).is_err() {
                break;
            }
        }
        self.send(&message);
    }

    /// Start-up goes on: systemd's start timeout is pushed to `by` from now.
    pub(crate) fn extend_start(&mut self, by: Duration) {
        let mut message = heapless::String::<48>::new();
        let _ = std::fmt::Write::write_fmt(&mut message, format_args!("EXTEND_TIMEOUT_USEC={}", by.as_micros()));
        self.send(&message);
    }

    /// The station is shutting down.
    pub(crate) fn stopping(&mut self) {
        self.send("STOPPING=1");
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> Result<SocketAddr, String> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name).map_err(|e| e.to_string())
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_: &[u8]) -> Result<SocketAddr, String> {
    Err("abstract socket addresses exist on Linux only".into())
}
