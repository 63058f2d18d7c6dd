//! The station's configuration: one TOML file (`clipada run --config station.toml`).
//!
//! Every section refuses unknown keys; a bad key or value is reported with its full path
//! (`gpio.pulse_ms`) and the reason. Relative paths in the file are taken relative to the
//! folder the process runs in, so a config in `board/examples/` names files from the
//! repository root.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::backend::{Backend, EngineConfig, Provider, TensorRtOptions};

/// The whole station.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
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
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The ONNX model with clipada contract metadata.
    pub path: PathBuf,
    /// `auto`, `ort` or `tract`.
    #[serde(default)]
    pub backend: Backend,
    /// ONNX Runtime providers in order of preference.
    #[serde(default = "default_providers")]
    pub providers: Vec<Provider>,
    /// `libonnxruntime.so`; none: the `ORT_DYLIB_PATH` environment variable.
    #[serde(default)]
    pub ort_library: Option<PathBuf>,
    /// TensorRT settings.
    #[serde(default)]
    pub tensorrt: TensorRtOptions,
    /// Memory file of good parts (`clipada calibrate`).
    #[serde(default)]
    pub memory: Option<PathBuf>,
    /// Folder of good images: when `memory` names a file that does not exist yet, the station
    /// calibrates from these at start and writes it.
    #[serde(default)]
    pub calibrate_from: Option<PathBuf>,
    /// Decision threshold (default: the memory's, else the model's).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Apply the anomaly region refinement.
    #[serde(default = "yes")]
    pub refine: bool,
}

impl ModelSection {
    /// The engine settings of this section.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            backend: self.backend,
            ort_library: self.ort_library.clone(),
            providers: self.providers.clone(),
            tensorrt: self.tensorrt.clone(),
        }
    }
}

fn default_providers() -> Vec<Provider> {
    EngineConfig::default().providers
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
    /// Camera: index (`0`) or name (`"USB Camera"`).
    #[serde(default)]
    pub device: Option<CameraDevice>,
    /// Camera: requested width in pixels.
    #[serde(default = "default_width")]
    pub width: u32,
    /// Camera: requested height in pixels.
    #[serde(default = "default_height")]
    pub height: u32,
    /// Camera: requested frame rate.
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Camera: requested pixel format.
    #[serde(default)]
    pub format: PixelFormat,
    /// Camera: first wait before reopening after a failure, in milliseconds (doubles up to
    /// `reconnect_max_ms`).
    #[serde(default = "default_reconnect_ms")]
    pub reconnect_ms: u64,
    /// Camera: longest wait between reopening attempts, in milliseconds.
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

/// A camera by index or by name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum CameraDevice {
    /// `/dev/videoN` on Linux.
    Index(u32),
    /// The camera's human-readable name as the system reports it.
    Name(String),
}

/// Camera pixel formats; all are decoded to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Motion JPEG.
    #[default]
    Mjpeg,
    /// YUV 4:2:2.
    Yuyv,
    /// YUV 4:2:0, semi-planar.
    Nv12,
    /// 8-bit grey.
    Gray,
    /// Packed RGB.
    Rgb,
}

/// `[trigger]`: when a frame is taken; one trigger gives exactly one verdict.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSection {
    /// `free-run`, `interval` or `gpio`.
    #[serde(default)]
    pub mode: TriggerMode,
    /// Interval: the period in milliseconds.
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// GPIO: which edge of `gpio.trigger_line` triggers.
    #[serde(default)]
    pub edge: Edge,
    /// GPIO: the input must hold its new level this long to count, in milliseconds.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
}

impl Default for TriggerSection {
    fn default() -> Self {
        TriggerSection {
            mode: TriggerMode::FreeRun,
            interval_ms: None,
            edge: Edge::Rising,
            debounce_ms: default_debounce_ms(),
        }
    }
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
}

fn default_debounce_ms() -> u64 {
    5
}

/// A trigger edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edge {
    /// Low to high.
    #[default]
    Rising,
    /// High to low.
    Falling,
}

/// `[roi]`: the rectangle of the frame that is judged, and an optional ignore mask.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoiSection {
    /// Left edge in pixels.
    pub x: u32,
    /// Top edge in pixels.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Grey image stretched over the rectangle: black pixels are never anomalous.
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
    /// Width in pixels of a plain-file framebuffer.
    #[serde(default)]
    pub width: Option<u32>,
    /// Height in pixels of a plain-file framebuffer.
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
    /// Outputs are asserted low.
    #[serde(default)]
    pub active_low: bool,
    /// `level` (hold the last verdict) or `pulse` (assert for `pulse_ms`).
    #[serde(default)]
    pub output: OutputMode,
    /// Pulse length in milliseconds.
    #[serde(default = "default_pulse_ms")]
    pub pulse_ms: u64,
    /// The lines' state at start, on ERROR and on exit.
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
            active_low: false,
            output: OutputMode::Level,
            pulse_ms: default_pulse_ms(),
            safe_state: SafeState::default(),
        }
    }
}

fn default_pulse_ms() -> u64 {
    100
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

/// How verdicts are shown on the PASS and FAIL outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    /// The line of the last verdict stays asserted until the next verdict.
    #[default]
    Level,
    /// The line of each verdict is asserted for `pulse_ms`.
    Pulse,
}

/// Output levels (asserted or not) of the safe state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafeState {
    /// READY asserted.
    pub ready: bool,
    /// PASS asserted.
    pub pass: bool,
    /// FAIL asserted.
    pub fail: bool,
}

impl Default for SafeState {
    fn default() -> Self {
        SafeState { ready: false, pass: false, fail: true }
    }
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
    /// Most failed parts kept (oldest deleted first).
    #[serde(default = "default_max_images")]
    pub max_images: usize,
    /// Most bytes kept in `failures_dir` (oldest deleted first).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            results: None,
            failures_dir: None,
            max_images: default_max_images(),
            max_bytes: default_max_bytes(),
        }
    }
}

fn default_max_images() -> usize {
    500
}
fn default_max_bytes() -> u64 {
    512 << 20
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
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<StationConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })?;
        StationConfig::parse(&text, path)
    }

    /// Parses and checks `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<StationConfig, ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid { path: path.to_path_buf(), key, reason };
        let deserializer = toml::de::Deserializer::parse(text).map_err(|e| invalid(".".into(), one_line(&e)))?;
        let config: StationConfig = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| invalid(e.path().to_string(), one_line(e.inner())))?;
        config.check().map_err(|(key, reason)| invalid(key.into(), reason))?;
        Ok(config)
    }

    /// Rules that span keys or bound values.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(t) = self.model.threshold {
            if !t.is_finite() {
                return Err(("model.threshold", "must be a finite number".into()));
            }
        }
        if self.model.calibrate_from.is_some() && self.model.memory.is_none() {
            return Err(("model.calibrate_from", "needs `model.memory`: the file the calibration writes".into()));
        }
        let source = &self.source;
        match source.kind {
            SourceKind::Directory if source.path.is_none() => {
                return Err(("source.path", "a directory source needs the folder".into()));
            }
            SourceKind::Camera if source.device.is_none() => {
                return Err(("source.device", "a camera source needs the device: an index or a name".into()));
            }
            _ => {}
        }
        if source.width == 0 || source.height == 0 {
            return Err(("source.width", "width and height must be positive".into()));
        }
        if source.fps == 0 {
            return Err(("source.fps", "must be positive".into()));
        }
        if source.reconnect_ms == 0 || source.reconnect_max_ms < source.reconnect_ms {
            return Err(("source.reconnect_ms", "must be positive and at most `reconnect_max_ms`".into()));
        }
        match self.trigger.mode {
            TriggerMode::Interval if self.trigger.interval_ms.unwrap_or(0) == 0 => {
                return Err(("trigger.interval_ms", "the interval trigger needs a positive period".into()));
            }
            TriggerMode::Gpio if self.gpio.kind == GpioKind::None || self.gpio.trigger_line.is_none() => {
                return Err(("gpio.trigger_line", "the gpio trigger needs `gpio.kind` and `gpio.trigger_line`".into()));
            }
            _ => {}
        }
        if let Some(roi) = &self.roi {
            if roi.width == 0 || roi.height == 0 {
                return Err(("roi.width", "width and height must be positive".into()));
            }
        }
        let display = &self.display;
        if let Some(bits) = display.bits_per_pixel.filter(|b| ![16, 24, 32].contains(b)) {
            return Err(("display.bits_per_pixel", format!("{bits}: must be 16, 24 or 32")));
        }
        if display.kind == DisplayKind::Framebuffer && display.device.is_none() {
            return Err(("display.device", "the framebuffer display needs `/dev/fbN` or a file".into()));
        }
        let geometry = [display.width, display.height, display.bits_per_pixel];
        if geometry.iter().any(Option::is_some) && !geometry.iter().all(Option::is_some) {
            return Err(("display.width", "give all of `width`, `height` and `bits_per_pixel`, or none".into()));
        }
        match self.gpio.kind {
            GpioKind::Chardev if self.gpio.chip.is_none() => {
                return Err(("gpio.chip", "the chardev GPIO needs the chip, e.g. \"/dev/gpiochip0\"".into()))
            }
            GpioKind::Recording if self.gpio.record.is_none() => {
                return Err(("gpio.record", "the recording GPIO needs the file it writes".into()))
            }
            _ => {}
        }
        if self.gpio.output == OutputMode::Pulse && self.gpio.pulse_ms == 0 {
            return Err(("gpio.pulse_ms", "must be positive in pulse mode".into()));
        }
        if self.log.max_images == 0 {
            return Err(("log.max_images", "must be positive (leave out `failures_dir` to save no images)".into()));
        }
        Ok(())
    }
}

/// The first line of an error (toml's messages quote the source over several lines).
fn one_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join(" ")
}
