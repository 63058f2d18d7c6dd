//! Plant networks: a Modbus TCP server for the PLC (`plant::modbus`) and an MQTT publisher for the
//! plant's broker (`plant::mqtt`), both off unless configured (`[modbus]`, `[mqtt]`; feature
//! `plant`).
//!
//! Both run on threads of their own in the worker and meet the inspection loop only at its
//! [`StatusBoard`]: the loop publishes each result and its state there, in one place, and
//! takes the plant's requests (a recipe switch) from it between parts; a trigger from the PLC
//! goes through the station's trigger listener like an edge on the TRIGGER input. Nothing a
//! client or broker does can make the loop wait: a slow reader, a dead broker or a flood of
//! frames costs the network threads, never a part.

#[cfg(feature = "plant")]
pub mod modbus;
#[cfg(feature = "plant")]
pub mod mqtt;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::station::status::StatusBoard;
use crate::station::trigger::RemoteTrigger;

/// The Modbus TCP server's settings (`[modbus]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModbusSettings {
    /// Where it listens.
    pub bind: String,
    /// Clients served at once; more are refused.
    pub max_clients: usize,
    /// A client silent this long is disconnected.
    pub idle_timeout: Duration,
}

/// TLS to the broker (`[mqtt.tls]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate authority the broker's certificate must chain to.
    pub ca: PathBuf,
    /// The station's own certificate and private key, for brokers that ask for one.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The MQTT publisher's settings (`[mqtt]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// The broker's host.
    pub host: String,
    /// The broker's port.
    pub port: u16,
    /// Prefix of the topics `result`, `status` and `counters`.
    pub topic_prefix: String,
    /// The client ID.
    pub client_id: String,
    /// User name and the file of the password, if the broker asks.
    pub credentials: Option<(String, Option<PathBuf>)>,
    /// Results that wait while the broker is away.
    pub queue: usize,
    /// How often the counters are published.
    pub counters_every: Duration,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// TLS; none: plain TCP.
    pub tls: Option<TlsFiles>,
}

/// The plant networks a station runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlantPlan {
    /// The Modbus TCP server, if any.
    pub modbus: Option<ModbusSettings>,
    /// The MQTT publisher, if any.
    pub mqtt: Option<MqttSettings>,
}

impl PlantPlan {
    /// Whether any network feature is on.
    pub fn any(&self) -> bool {
        self.modbus.is_some() || self.mqtt.is_some()
    }

    /// How many results the status board keeps for the MQTT publisher (none without MQTT).
    pub fn queue(&self) -> Option<usize> {
        self.mqtt.as_ref().map(|m| m.queue)
    }
}

/// Where the service's drop-in that opens its sandbox to the network is installed from.
pub const NETWORK_DROP_IN: &str = "/usr/share/clipada/network.conf";

/// Whether this process may open network sockets: the service's sandbox forbids them unless
/// its network drop-in is installed, and then the station is refused at start, not left to
/// run with a PLC and a broker it can never reach.
#[cfg(any(feature = "plant", feature = "hmi"))]
pub(crate) fn network_sockets() -> anyhow::Result<()> {
    match std::net::UdpSocket::bind(("127.0.0.1", 0)) {
        Ok(_) => Ok(()),
        Err(e) => anyhow::bail!(
            "[modbus], [mqtt] and [http] need network sockets, and this process may not open one ({e}): \
             under the clipada service, install its network drop-in (sudo install -D -m 0644 \
             {NETWORK_DROP_IN} /etc/systemd/system/clipada.service.d/network.conf; then \
             systemctl daemon-reload and restart clipada)"
        ),
    }
}

/// What the plant may ask of the recipes: how many there are to choose from by number (none
/// when the select inputs choose each part's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipeChoices(pub Option<usize>);

/// The running plant networks; stopped when dropped (the MQTT publisher says `offline` and
/// disconnects; results not yet delivered are logged).
pub struct Plant {
    #[cfg(feature = "plant")]
    /// Held for its Drop: it stops listening and disconnects every client.
    _modbus: Option<modbus::ModbusServer>,
    #[cfg(feature = "plant")]
    /// Held for its Drop: it says `offline` and disconnects.
    _mqtt: Option<mqtt::MqttPublisher>,
}

impl Plant {
    /// Starts what `plan` asks for, reading `board` (made with the MQTT queue, [`PlantPlan::queue`]):
    /// `trigger` takes the PLC's triggers (with `trigger.mode = "modbus"`), `choices` says which
    /// recipes the PLC may select.
    #[cfg(feature = "plant")]
    pub fn start(
        plan: &PlantPlan,
        board: Arc<StatusBoard>,
        trigger: Option<RemoteTrigger>,
        choices: RecipeChoices,
    ) -> anyhow::Result<Plant> {
        if plan.any() {
            network_sockets()?;
        }
        // MQTT first: its secrets are read (and refused) before any port opens.
        let mqtt = match &plan.mqtt {
            Some(settings) => Some(mqtt::MqttPublisher::start(settings, board.clone())?),
            None => None,
        };
        let modbus = match &plan.modbus {
            Some(settings) => Some(modbus::ModbusServer::start(settings, board.clone(), trigger, choices)?),
            None => None,
        };
        Ok(Plant { _modbus: modbus, _mqtt: mqtt })
    }

    /// Without the feature the plan refuses `[modbus]` and `[mqtt]`: there is nothing to start.
    #[cfg(not(feature = "plant"))]
    pub fn start(
        _: &PlantPlan,
        _: Arc<StatusBoard>,
        _: Option<RemoteTrigger>,
        _: RecipeChoices,
    ) -> anyhow::Result<Plant> {
        Ok(Plant {})
    }
}
