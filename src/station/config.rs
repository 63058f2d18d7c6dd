//! The station's configuration as written: one TOML file (`clipada run --config station.toml`).
//!
//! This is the file's schema, nothing more: every section refuses unknown keys, and a key of
//! the wrong type is reported with its full path (`gpio.pulse_ms`) and the reason. Ranges and
//! rules across keys are checked once, when the file becomes a [`super::plan::StationPlan`];
//! nothing else reads these structs. Relative paths are taken relative to the folder the
//! process runs in. Each key's valid range is in its documentation and in the plan's checks.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::backend::{Backend, Provider, TensorRtOptions};
use crate::source::camera::{CameraDevice, PixelFormat};
use crate::station::lines::{OutputMode, SafeState};
use crate::station::trigger::{Edge, OnBusy};
use crate::storage::read::{read_regular, MAX_CONFIG_BYTES};

/// The whole station.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    /// The station's own folder: its lock (one station per folder) and state. Required.
    pub state_dir: PathBuf,
    /// The model and how it is run and judged.
    pub model: ModelSection,
    /// Where frames come from.
    pub source: SourceSection,
    /// When a frame is taken.
    #[serde(default)]
    pub trigger: TriggerSection,
    /// The part of the frame that is judged.
    #[serde(default)]
    pub roi: Option<RoiSection>,
    /// The attached display.
    #[serde(default)]
    pub display: DisplaySection,
    /// PASS/FAIL/READY outputs and the TRIGGER input.
    #[serde(default)]
    pub gpio: GpioSection,
    /// Result log and saved images of failed parts.
    #[serde(default)]
    pub log: LogSection,
    /// When results go on the lines: as judged, or when the part reaches the reject gate.
    #[serde(default)]
    pub reject: RejectSection,
    /// Products: each judged with its own model, memory, region, threshold and gate distance;
    /// none: one product, from `[model]`, `[roi]` and `[reject]`.
    #[serde(default)]
    pub recipe: Vec<RecipeSection>,
    /// Which recipe is active, and how it is chosen.
    #[serde(default)]
    pub recipes: RecipesSection,
    /// When the recipes' reference parts are judged.
    #[serde(default)]
    pub self_test: SelfTestSection,
    /// The watch on the scores of passing parts against the calibration's.
    #[serde(default)]
    pub drift: DriftSection,
    /// A Modbus TCP server for the PLC; absent: none.
    #[serde(default)]
    pub modbus: Option<ModbusSection>,
    /// An MQTT publisher of results, status and counters; absent: none.
    #[serde(default)]
    pub mqtt: Option<MqttSection>,
    /// The operator interface (web page, HTTP API, metrics); absent: none.
    #[serde(default)]
    pub http: Option<HttpSection>,
}

/// `[http]`: the operator interface (README, "Operator interface").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// The address and port it listens on (default `127.0.0.1:8080`; `0.0.0.0:8080` for every
    /// interface).
    #[serde(default = "default_http_bind")]
    pub bind: String,
    /// A file holding the token that changes need (its first line, at least 16 characters;
    /// owned by root or the station's user, not readable by others); absent: read-only.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Connections served at once, 1 to 64; more are answered 503.
    #[serde(default = "default_http_connections")]
    pub max_connections: usize,
    /// How long a client has for a request's head, and for its body, 100 to 60000 ms.
    #[serde(default = "default_http_timeout_ms")]
    pub request_timeout_ms: u64,
    /// The live view's most frames per second, 1 to 30.
    #[serde(default = "default_http_fps")]
    pub stream_fps: u32,
    /// Host names the station answers to besides its IP addresses and `localhost` (a request
    /// naming another host is refused: DNS rebinding).
    #[serde(default)]
    pub host_names: Vec<String>,
    /// HTTPS; absent: plain HTTP.
    #[serde(default)]
    pub tls: Option<HttpTlsSection>,
}

/// `[http.tls]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsSection {
    /// The server's certificate chain (PEM). Required.
    pub cert: PathBuf,
    /// Its private key (PEM; owned by root or the station's user, not readable by others).
    /// Required.
    pub key: PathBuf,
}

fn default_http_bind() -> String {
    "127.0.0.1:8080".into()
}
fn default_http_connections() -> usize {
    16
}
fn default_http_timeout_ms() -> u64 {
    10_000
}
fn default_http_fps() -> u32 {
    10
}

/// `[modbus]`: a Modbus TCP server (register map in the README).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSection {
    /// The address and port it listens on (default `127.0.0.1:502`; `0.0.0.0:502` for every
    /// interface).
    #[serde(default = "default_modbus_bind")]
    pub bind: String,
    /// Clients served at once, 1 to 16; more are refused.
    #[serde(default = "default_modbus_clients")]
    pub max_clients: usize,
    /// A client that sends nothing for this long is disconnected, 100 to 3600000 ms.
    #[serde(default = "default_modbus_idle_ms")]
    pub idle_timeout_ms: u64,
}

fn default_modbus_bind() -> String {
    "127.0.0.1:502".into()
}
fn default_modbus_clients() -> usize {
    4
}
fn default_modbus_idle_ms() -> u64 {
    60_000
}

/// `[mqtt]`: results, status and counters published to a broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// The broker's host name or address. Required.
    pub host: String,
    /// The broker's port (default 1883, or 8883 with `[mqtt.tls]`).
    #[serde(default)]
    pub port: Option<u16>,
    /// Prefix of the topics `<prefix>result`, `<prefix>status`, `<prefix>counters` (default
    /// `clipada/`); no wildcards (`+`, `#`).
    #[serde(default = "default_mqtt_prefix")]
    pub topic_prefix: String,
    /// The client ID (default `clipada-<host name>`), 1 to 64 characters.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name, for a broker that asks for one.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (its first line), owned by root or the station's user and
    /// not readable by others; needs `username`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Results that wait while the broker is away, 1 to 100000; beyond, the oldest is dropped
    /// (counted).
    #[serde(default = "default_mqtt_queue")]
    pub queue: usize,
    /// Counters are published every this many seconds, 1 to 86400.
    #[serde(default = "default_mqtt_counters_s")]
    pub counters_every_s: u64,
    /// MQTT keep-alive, 5 to 3600 s: a station that vanishes is declared offline (its last
    /// will) after about 1.5 times this.
    #[serde(default = "default_mqtt_keep_alive_s")]
    pub keep_alive_s: u64,
    /// TLS to the broker; absent: plain TCP.
    #[serde(default)]
    pub tls: Option<MqttTlsSection>,
}

/// `[mqtt.tls]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsSection {
    /// The certificate authority (PEM) the broker's certificate must chain to. Required.
    pub ca: PathBuf,
    /// The station's own certificate (PEM), for brokers that ask for one; needs `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The station's private key (PEM; not readable by others).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

fn default_mqtt_prefix() -> String {
    "clipada/".into()
}
fn default_mqtt_queue() -> usize {
    1000
}
fn default_mqtt_counters_s() -> u64 {
    10
}
fn default_mqtt_keep_alive_s() -> u64 {
    10
}

/// `[[recipe]]`: one product. A key left out takes the value of `[model]`, `[roi]` or
/// `[reject]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeSection {
    /// Its name: 1 to 32 letters, digits, `-`, `_` or `.`; unique.
    pub name: String,
    /// The number the `recipes.select_lines` read for it, 0 to 2^lines - 1 (needed then).
    #[serde(default)]
    pub code: Option<u32>,
    /// Its model (default `model.path`); recipes with the same model share its engine.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Its memory file (default `model.memory`).
    #[serde(default)]
    pub memory: Option<PathBuf>,
    /// Its decision threshold (default: `model.threshold` when the recipe has `[model]`'s model
    /// and memory; else its memory's calibrated one, or its model's).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Its judged rectangle and ignore mask (default `[roi]`).
    #[serde(default)]
    pub roi: Option<RoiSection>,
    /// Its gate distance in ms (`reject.timing = "delay"`; default `reject.delay_ms`).
    #[serde(default)]
    pub reject_delay_ms: Option<u64>,
    /// Its gate distance in ENCODER counts (`reject.timing = "encoder"`; default
    /// `reject.encoder_counts`).
    #[serde(default)]
    pub reject_encoder_counts: Option<u64>,
    /// Images of good parts (whole frames, as the camera sees them) that must be judged PASS.
    #[serde(default)]
    pub reference_good: Vec<PathBuf>,
    /// Images of known-defect parts that must be judged FAIL.
    #[serde(default)]
    pub reference_defect: Vec<PathBuf>,
}

/// `[recipes]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipesSection {
    /// The recipe active at start (default: the first; `clipada run --recipe` overrides it).
    #[serde(default)]
    pub start: Option<String>,
    /// Input line offsets (chardev) that give each part's recipe as a binary number, bit 0
    /// first, read at its trigger; 1 to 8 lines.
    #[serde(default)]
    pub select_lines: Option<Vec<u32>>,
    /// A file that plays the select lines' number (`<ms from start> <number>` per line)
    /// instead of a chip's lines: tests, dry runs.
    #[serde(default)]
    pub select_script: Option<PathBuf>,
}

/// `[self_test]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTestSection {
    /// Judge the reference parts again every this many minutes, 1 to 10080; none: at start and
    /// on demand only.
    #[serde(default)]
    pub every_minutes: Option<u64>,
}

/// `[drift]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSection {
    /// Passing parts whose scores are watched (the most recent), 10 to 1024.
    #[serde(default = "default_drift_window")]
    pub window: usize,
    /// The warning is raised when the median score of the watched parts has moved this
    /// fraction of the way from the calibration's median good score to the threshold (either
    /// way), 0.05 to 1.
    #[serde(default = "default_drift_bound")]
    pub bound: f32,
}

impl Default for DriftSection {
    fn default() -> Self {
        DriftSection { window: default_drift_window(), bound: default_drift_bound() }
    }
}

fn default_drift_window() -> usize {
    100
}
fn default_drift_bound() -> f32 {
    0.5
}

/// `[reject]`: when results go on the lines.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectSection {
    /// `immediate` (as soon as judged), `delay` (`delay_ms` after the trigger) or `encoder`
    /// (`encoder_counts` ENCODER counts after the trigger).
    #[serde(default)]
    pub timing: RejectTiming,
    /// The gate's distance in time from the trigger, 1 to 600000 ms (`timing = "delay"` only).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// The gate's distance in ENCODER counts from the trigger, 1 to 1000000000 (`timing =
    /// "encoder"` only).
    #[serde(default)]
    pub encoder_counts: Option<u64>,
}

/// Reject timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RejectTiming {
    /// Results go on the lines as soon as judged.
    #[default]
    Immediate,
    /// A fixed time after the trigger.
    Delay,
    /// A fixed number of ENCODER counts after the trigger.
    Encoder,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The ONNX model with clipada contract metadata (required unless every `[[recipe]]` names
    /// its own).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `auto`, `ort` or `tract`.
    #[serde(default)]
    pub backend: Backend,
    /// ONNX Runtime providers in order of preference.
    #[serde(default)]
    pub providers: Option<Vec<Provider>>,
    /// `libonnxruntime.so` (an absolute path); none: the `ORT_DYLIB_PATH` environment variable.
    #[serde(default)]
    pub ort_library: Option<PathBuf>,
    /// Load the ONNX Runtime library even when others than root could change it.
    #[serde(default)]
    pub allow_insecure_library: bool,
    /// TensorRT settings.
    #[serde(default)]
    pub tensorrt: TensorRtOptions,
    /// Memory file of good parts, made by `clipada calibrate` (the station never calibrates on
    /// its own).
    #[serde(default)]
    pub memory: Option<PathBuf>,
    /// Decision threshold, in (0, the score range] (default: the memory's, else the model's).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Apply the anomaly region refinement.
    #[serde(default = "yes")]
    pub refine: bool,
}

fn yes() -> bool {
    true
}

/// `[source]`: a camera or a folder of images.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// `directory` or `camera`.
    pub kind: SourceKind,
    /// The folder of a directory source (searched recursively, sorted).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Directory source: start again at the first image after the last.
    #[serde(default, rename = "loop")]
    pub looping: bool,
    /// Camera: a stable device path (`"/dev/v4l/by-id/usb-..."`, best: it names this very
    /// camera), an index (`0`) or a name (`"USB Camera"`).
    #[serde(default)]
    pub device: Option<CameraDevice>,
    /// Camera: requested width in pixels, 1 to 16384.
    #[serde(default = "default_width")]
    pub width: u32,
    /// Camera: requested height in pixels, 1 to 16384.
    #[serde(default = "default_height")]
    pub height: u32,
    /// Camera: requested frame rate, 1 to 1000.
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Camera: requested pixel format.
    #[serde(default)]
    pub format: PixelFormat,
    /// Camera: first wait before reopening after a failure, 1 to 60000 ms (doubles up to
    /// `reconnect_max_ms`).
    #[serde(default = "default_reconnect_ms")]
    pub reconnect_ms: u64,
    /// Camera: longest wait between reopening attempts, `reconnect_ms` to 600000 ms.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

/// Kinds of frame source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Images from a folder, for replay and tests.
    Directory,
    /// A camera through nokhwa.
    Camera,
}

fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    720
}
fn default_fps() -> u32 {
    30
}
fn default_reconnect_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    10_000
}

/// `[trigger]`: when a frame is taken; one trigger gives exactly one verdict.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSection {
    /// `free-run`, `interval`, `gpio` or `modbus`.
    #[serde(default)]
    pub mode: TriggerMode,
    /// Interval: the period, 1 to 3600000 ms.
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// GPIO: which edge of `gpio.trigger_line` triggers.
    #[serde(default)]
    pub edge: Edge,
    /// GPIO: the input must hold its new level this long to count, 0 to 1000 ms.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// Only a frame exposed this long after the trigger is judged (motion settling, a strobe),
    /// 0 to 10000 ms.
    #[serde(default)]
    pub delay_ms: u64,
    /// No frame exposed after the trigger (and its delay) within this long: ERROR, 1 to 60000 ms.
    #[serde(default = "default_frame_timeout_ms")]
    pub frame_timeout_ms: u64,
    /// GPIO: a trigger that comes while the station is busy: `error` (an ERROR verdict for that
    /// part) or `queue` (judged when free, if a frame within `frame_timeout_ms` of it is had).
    #[serde(default)]
    pub on_busy: OnBusy,
}

impl Default for TriggerSection {
    fn default() -> Self {
        TriggerSection {
            mode: TriggerMode::FreeRun,
            interval_ms: None,
            edge: Edge::Rising,
            debounce_ms: default_debounce_ms(),
            delay_ms: 0,
            frame_timeout_ms: default_frame_timeout_ms(),
            on_busy: OnBusy::Error,
        }
    }
}

fn default_frame_timeout_ms() -> u64 {
    2000
}

/// Trigger modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerMode {
    /// Judge frames as fast as they come.
    #[default]
    FreeRun,
    /// One frame every `interval_ms`.
    Interval,
    /// One frame per edge on the TRIGGER input.
    Gpio,
    /// One frame per write of the Modbus trigger coil (needs `[modbus]`).
    Modbus,
}

fn default_debounce_ms() -> u64 {
    5
}

/// `[roi]`: the rectangle of the frame that is judged, and an optional ignore mask.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoiSection {
    /// Left edge in pixels.
    pub x: u32,
    /// Top edge in pixels.
    pub y: u32,
    /// Width in pixels, 1 to the largest frame side less `x`.
    pub width: u32,
    /// Height in pixels, 1 to the largest frame side less `y`.
    pub height: u32,
    /// Grey image stretched over the rectangle: black pixels are never anomalous. It must leave
    /// at least 1 % of the rectangle inspected.
    #[serde(default)]
    pub ignore_mask: Option<PathBuf>,
}

/// `[display]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplaySection {
    /// `none` or `framebuffer`.
    #[serde(default)]
    pub kind: DisplayKind,
    /// `/dev/fb0`, or a plain file (then `width`, `height` and `bits_per_pixel` are needed).
    #[serde(default)]
    pub device: Option<PathBuf>,
    /// Width in pixels of a plain-file framebuffer, 1 to 8192.
    #[serde(default)]
    pub width: Option<u32>,
    /// Height in pixels of a plain-file framebuffer, 1 to 8192.
    #[serde(default)]
    pub height: Option<u32>,
    /// 16 (RGB565), 24 (BGR) or 32 (XRGB) for a plain-file framebuffer.
    #[serde(default)]
    pub bits_per_pixel: Option<u32>,
}

/// Kinds of display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DisplayKind {
    /// No display.
    #[default]
    None,
    /// A Linux framebuffer device, or a plain file used as framebuffer memory.
    Framebuffer,
}

/// `[gpio]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioSection {
    /// `none`, `chardev` (the Linux GPIO character device) or `recording` (transitions to a file).
    #[serde(default)]
    pub kind: GpioKind,
    /// `/dev/gpiochipN` (chardev).
    #[serde(default)]
    pub chip: Option<PathBuf>,
    /// The file transitions are appended to (recording).
    #[serde(default)]
    pub record: Option<PathBuf>,
    /// Line offset of the PASS output.
    #[serde(default)]
    pub pass_line: Option<u32>,
    /// Line offset of the FAIL output.
    #[serde(default)]
    pub fail_line: Option<u32>,
    /// Line offset of the READY output.
    #[serde(default)]
    pub ready_line: Option<u32>,
    /// Line offset of the TRIGGER input.
    #[serde(default)]
    pub trigger_line: Option<u32>,
    /// Line offset of the BUSY output (chardev; optional): asserted from a trigger until its
    /// result's handshake ends, and in the safe state.
    #[serde(default)]
    pub busy_line: Option<u32>,
    /// Line offset of the RESULT-VALID output (chardev; optional): strobed after each result.
    #[serde(default)]
    pub valid_line: Option<u32>,
    /// A file that plays the TRIGGER input (`<ms from start> <0|1>` per line) instead of a chip's
    /// line, with any `kind`: tests, benchmarks, dry runs.
    #[serde(default)]
    pub trigger_script: Option<PathBuf>,
    /// Line offset of the ENCODER input (chardev), for `reject.timing = "encoder"`.
    #[serde(default)]
    pub encoder_line: Option<u32>,
    /// A file that plays the ENCODER input, as `trigger_script` does the TRIGGER's (its clock
    /// starts with the station).
    #[serde(default)]
    pub encoder_script: Option<PathBuf>,
    /// From the verdict lines' change to RESULT-VALID rising, 0 to 1000 ms.
    #[serde(default = "default_result_settle_ms")]
    pub result_settle_ms: u64,
    /// How long RESULT-VALID is asserted, 0 (no strobe) to 5000 ms; at least two PLC scan cycles.
    #[serde(default = "default_result_valid_ms")]
    pub result_valid_ms: u64,
    /// Outputs are asserted low.
    #[serde(default)]
    pub active_low: bool,
    /// `level` (hold the last verdict) or `pulse` (assert for `pulse_ms`).
    #[serde(default)]
    pub output: OutputMode,
    /// Pulse length, 1 to 5000 ms.
    #[serde(default = "default_pulse_ms")]
    pub pulse_ms: u64,
    /// Longest the inspection loop may go unheard before a held verdict is dropped to the safe
    /// state, 100 to 60000 ms (longer than the slowest frame).
    #[serde(default = "default_loop_deadline_ms")]
    pub loop_deadline_ms: u64,
    /// The lines' state at start, on ERROR and on exit (PASS and READY may not be asserted).
    #[serde(default)]
    pub safe_state: SafeState,
}

impl Default for GpioSection {
    fn default() -> Self {
        GpioSection {
            kind: GpioKind::None,
            chip: None,
            record: None,
            pass_line: None,
            fail_line: None,
            ready_line: None,
            trigger_line: None,
            busy_line: None,
            valid_line: None,
            trigger_script: None,
            encoder_line: None,
            encoder_script: None,
            result_settle_ms: default_result_settle_ms(),
            result_valid_ms: default_result_valid_ms(),
            active_low: false,
            output: OutputMode::Level,
            pulse_ms: default_pulse_ms(),
            loop_deadline_ms: default_loop_deadline_ms(),
            safe_state: SafeState::default(),
        }
    }
}

fn default_pulse_ms() -> u64 {
    100
}
fn default_loop_deadline_ms() -> u64 {
    2000
}
fn default_result_settle_ms() -> u64 {
    2
}
fn default_result_valid_ms() -> u64 {
    20
}

/// Where GPIO lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpioKind {
    /// No lines.
    #[default]
    None,
    /// The Linux GPIO character device.
    Chardev,
    /// A file of transitions (tests, replay, dry runs).
    Recording,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// JSON-lines result log, one line per verdict.
    #[serde(default)]
    pub results: Option<PathBuf>,
    /// Folder for the images and overlays of failed parts.
    #[serde(default)]
    pub failures_dir: Option<PathBuf>,
    /// Most failed parts kept (oldest deleted first), 1 to 1000000.
    #[serde(default = "default_max_images")]
    pub max_images: usize,
    /// Most bytes kept in `failures_dir` (oldest deleted first), at least 1 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// The result log is rotated before it grows past this, 64 KiB to 1 TiB.
    #[serde(default = "default_results_max_bytes")]
    pub results_max_bytes: u64,
    /// The result log is rotated once its first line is this old, 1 to 8760 hours.
    #[serde(default = "default_results_max_age_hours")]
    pub results_max_age_hours: u64,
    /// Rotated result logs kept (`results.jsonl.1` newest), 0 to 1000: at most
    /// `results_max_bytes` × (`results_keep` + 1) bytes in all.
    #[serde(default = "default_results_keep")]
    pub results_keep: u32,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            results: None,
            failures_dir: None,
            max_images: default_max_images(),
            max_bytes: default_max_bytes(),
            results_max_bytes: default_results_max_bytes(),
            results_max_age_hours: default_results_max_age_hours(),
            results_keep: default_results_keep(),
        }
    }
}

fn default_max_images() -> usize {
    500
}
fn default_max_bytes() -> u64 {
    512 << 20
}
fn default_results_max_bytes() -> u64 {
    16 << 20
}
fn default_results_max_age_hours() -> u64 {
    24
}
fn default_results_keep() -> u32 {
    30
}

/// A config that could not be read: the file, the key path and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {reason}")]
    Unreadable {
        /// The config file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key or value is wrong.
    #[error("{path}: `{key}`: {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Full key path, e.g. `gpio.pulse_ms`; `.` for the file as a whole.
        key: String,
        /// Why.
        reason: String,
    },
}

impl StationConfig {
    /// Reads `path` (a regular file of at most 1 MiB) and parses it.
    pub fn load(path: &Path) -> Result<StationConfig, ConfigError> {
        let bytes = read_regular(path, MAX_CONFIG_BYTES, "configuration")
            .map_err(|e| ConfigError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::Unreadable { path: path.to_path_buf(), reason: "not UTF-8 text".into() })?;
        StationConfig::parse(&text, path)
    }

    /// Parses `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<StationConfig, ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid { path: path.to_path_buf(), key, reason };
        // A syntax error (a duplicate key among them) is named by its line: no key path exists yet.
        let deserializer = toml::de::Deserializer::parse(text).map_err(|e| {
            let line = e.span().map_or(0, |span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            invalid(format!("line {line}"), one_line(&e))
        })?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let reason = one_line(e.inner());
            invalid(crate::schema::field_path(e.path(), &reason), reason)
        })
    }
}

/// The first line of an error (toml's messages quote the source over several lines).
fn one_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join(" ")
}
