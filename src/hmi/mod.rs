//! The operator interface (`[http]`, feature `hmi`): a web page served from the binary with
//! the live overlay, recent results, the failed-parts gallery, the score distribution and the
//! commissioning steps; a JSON API under `/api/v1`; Prometheus metrics at `/metrics`.
//!
//! The server runs on a thread of its own (a single-threaded tokio runtime with hyper) and
//! meets the inspection loop only at the station's [`StatusBoard`]: it reads the status,
//! statistics and the latest overlay picture the loop leaves there, and asks for a memory swap
//! through it. A JPEG encoder thread turns each new picture into the live view's frame; a
//! client that reads slowly only misses frames. Nothing a client does makes the loop wait.
//!
//! Reading needs no credential; every change (capture, calibrate, apply, "this part is good",
//! undo) needs the token of `http.token_file` (compared in constant time) and is refused when
//! none is configured. Requests reach files only in the station's own folders, by names the
//! server made, never through a link.

#[cfg(feature = "hmi")]
mod api;
#[cfg(feature = "hmi")]
mod commission;
#[cfg(feature = "hmi")]
mod live;
#[cfg(feature = "hmi")]
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::station::plan::StationPlan;
use crate::station::status::StatusBoard;

/// The HTTP server's settings (`[http]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Where it listens.
    pub bind: String,
    /// The file holding the token that changes need; none: the interface is read-only.
    pub token_file: Option<PathBuf>,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long a client has for a request's head, and for its body.
    pub request_timeout: Duration,
    /// The live view's most frames per second.
    pub stream_fps: u32,
    /// The server's certificate chain and private key (PEM); none: plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Host names it answers to besides IP addresses and `localhost`.
    pub host_names: Vec<String>,
}

/// The running operator interface; stopped when dropped (the server stops accepting and its
/// thread ends with the process).
pub struct Hmi {
    #[cfg(feature = "hmi")]
    _server: server::Server,
}

/// What the interface knows of a recipe for commissioning.
#[derive(Debug, Clone)]
pub struct RecipeSetup {
    /// Its name.
    pub name: String,
    /// Its number (1-based).
    pub number: u16,
    /// Its model file.
    pub model: PathBuf,
    /// How its engine is configured.
    pub engine: crate::model::backend::EngineConfig,
    /// Whether its scores are refined.
    pub refine: bool,
    /// Its memory file, if any (commissioning writes it).
    pub memory: Option<PathBuf>,
    /// The threshold its configuration fixes, if any.
    pub threshold: Option<f32>,
    /// `model`'s engine, for the metrics: engine, provider, precision.
    pub engine_info: [&'static str; 3],
}

/// What the interface needs of the station besides its board.
#[derive(Debug, Clone)]
pub struct StationFacts {
    /// The configuration file.
    pub config_file: PathBuf,
    /// The station's state folder.
    pub state_dir: PathBuf,
    /// The failed-parts folder, if any.
    pub failures_dir: Option<PathBuf>,
    /// The recipes, in the file's order.
    pub recipes: Vec<RecipeSetup>,
}

impl StationFacts {
    /// The facts of `plan`, whose recipes run on engines described by `engine_info` (in the
    /// plan's order).
    pub fn of(plan: &StationPlan, engine_info: impl Fn(usize) -> [&'static str; 3]) -> StationFacts {
        StationFacts {
            config_file: plan.file.clone(),
            state_dir: plan.state_dir.clone(),
            failures_dir: plan.failures.as_ref().map(|f| f.dir.clone()),
            recipes: plan
                .recipes
                .list
                .iter()
                .enumerate()
                .map(|(i, r)| RecipeSetup {
                    name: r.name.clone(),
                    number: i as u16 + 1,
                    model: r.model.path.clone(),
                    engine: r.model.engine.clone(),
                    refine: r.model.refine,
                    memory: r.model.memory.clone(),
                    threshold: r.model.threshold,
                    engine_info: engine_info(i),
                })
                .collect(),
        }
    }
}

impl Hmi {
    /// Starts the server of `settings` over `board` (made with pictures on) for the station of
    /// `facts`; an error names what could not be had (the address, the token, the certificate).
    #[cfg(feature = "hmi")]
    pub fn start(settings: &HttpSettings, board: Arc<StatusBoard>, facts: StationFacts) -> anyhow::Result<Hmi> {
        crate::plant::network_sockets()?;
        Ok(Hmi { _server: server::Server::start(settings, board, facts)? })
    }

    /// Without the feature the plan refuses `[http]`: there is nothing to start.
    #[cfg(not(feature = "hmi"))]
    pub fn start(_: &HttpSettings, _: Arc<StatusBoard>, _: StationFacts) -> anyhow::Result<Hmi> {
        anyhow::bail!("this clipada was built without the `hmi` feature")
    }

    /// The address the server listens on (the port chosen when `bind` asked for port 0).
    #[cfg(feature = "hmi")]
    pub fn address(&self) -> std::net::SocketAddr {
        self._server.address()
    }
}
