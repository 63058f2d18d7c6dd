//! The station's configuration, checked once and turned into a plan of what to build, with sum
//! types in place of the file's optional keys. Every range and every rule across keys is
//! checked here and nowhere else; errors name the file, the key and the reason.
//!
//! Rules that keep a PASS earned: the safe state may not assert PASS or READY; a model that
//! scores only against a memory needs one; every number has a bounded range; the GPIO lines
//! are distinct.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::{
    ConfigError, DisplayKind, GpioKind, GpioSection, HttpSection, ModbusSection, MqttSection, RecipeSection,
    RejectTiming, RoiSection, SourceKind, StationConfig, TriggerMode,
};
use super::lines::{Handshake, LineSettings, OutputMode};
use super::log::Rotation;
use super::reject::Slot;
use super::trigger::{Edge, OnBusy};
use super::Roi;
use crate::hmi::HttpSettings;
use crate::model::backend::{EngineConfig, Provider};
use crate::plant::{ModbusSettings, MqttSettings, PlantPlan, TlsFiles};
use crate::source::camera::CameraSettings;
use crate::source::decode::MAX_FRAME_SIDE;

/// Ranges of the configuration's numbers.
pub mod limits {
    use std::ops::RangeInclusive;
    /// `source.width`, `source.height`.
    pub(crate) const CAMERA_SIDE: RangeInclusive<u32> = 1..=16_384;
    /// `source.fps`.
    pub(crate) const FPS: RangeInclusive<u32> = 1..=1000;
    /// `source.reconnect_ms`.
    pub(crate) const RECONNECT_MS: RangeInclusive<u64> = 1..=60_000;
    /// `source.reconnect_max_ms`.
    pub(crate) const RECONNECT_MAX_MS: u64 = 600_000;
    /// `trigger.interval_ms`.
    pub(crate) const INTERVAL_MS: RangeInclusive<u64> = 1..=3_600_000;
    /// `trigger.debounce_ms`.
    pub(crate) const DEBOUNCE_MS: RangeInclusive<u64> = 0..=1000;
    /// `trigger.delay_ms`.
    pub(crate) const TRIGGER_DELAY_MS: RangeInclusive<u64> = 0..=10_000;
    /// `trigger.frame_timeout_ms`.
    pub(crate) const FRAME_TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
    /// `display.width`, `display.height`.
    pub(crate) const DISPLAY_SIDE: RangeInclusive<u32> = 1..=8192;
    /// `gpio.pulse_ms`.
    pub(crate) const PULSE_MS: RangeInclusive<u64> = 1..=5000;
    /// `gpio.result_settle_ms`.
    pub(crate) const RESULT_SETTLE_MS: RangeInclusive<u64> = 0..=1000;
    /// `gpio.result_valid_ms`.
    pub(crate) const RESULT_VALID_MS: RangeInclusive<u64> = 0..=5000;
    /// `gpio.loop_deadline_ms`.
    pub(crate) const LOOP_DEADLINE_MS: RangeInclusive<u64> = 100..=60_000;
    /// `log.max_images`.
    pub(crate) const MAX_IMAGES: RangeInclusive<usize> = 1..=1_000_000;
    /// `log.max_bytes`: at least room for one failed part.
    pub(crate) const MIN_MAX_BYTES: u64 = 1 << 20;
    /// `log.results_max_bytes`.
    pub(crate) const RESULTS_MAX_BYTES: RangeInclusive<u64> = 64 << 10..=1 << 40;
    /// `log.results_max_age_hours`.
    pub(crate) const RESULTS_MAX_AGE_HOURS: RangeInclusive<u64> = 1..=8760;
    /// `log.results_keep`.
    pub(crate) const RESULTS_KEEP: RangeInclusive<u32> = 0..=1000;
    /// `reject.delay_ms`.
    pub(crate) const REJECT_DELAY_MS: RangeInclusive<u64> = 1..=600_000;
    /// `reject.encoder_counts`.
    pub(crate) const ENCODER_COUNTS: RangeInclusive<u64> = 1..=1_000_000_000;
    /// `[[recipe]]` entries.
    pub(crate) const RECIPES: RangeInclusive<usize> = 1..=64;
    /// `recipe.name` length.
    pub(crate) const RECIPE_NAME: RangeInclusive<usize> = 1..=32;
    /// `recipes.select_lines` count.
    pub(crate) const SELECT_LINES: RangeInclusive<usize> = 1..=8;
    /// Reference parts of a recipe.
    pub(crate) const REFERENCES: RangeInclusive<usize> = 0..=16;
    /// `self_test.every_minutes`.
    pub(crate) const SELF_TEST_MINUTES: RangeInclusive<u64> = 1..=10_080;
    /// `drift.window`.
    pub(crate) const DRIFT_WINDOW: RangeInclusive<usize> = 10..=1024;
    /// `drift.bound`.
    pub(crate) const DRIFT_BOUND: RangeInclusive<f32> = 0.05..=1.0;
    /// `modbus.max_clients`.
    pub(crate) const MODBUS_CLIENTS: RangeInclusive<usize> = 1..=16;
    /// `modbus.idle_timeout_ms`.
    pub(crate) const MODBUS_IDLE_MS: RangeInclusive<u64> = 100..=3_600_000;
    /// `mqtt.queue`.
    pub(crate) const MQTT_QUEUE: RangeInclusive<usize> = 1..=100_000;
    /// `mqtt.counters_every_s`.
    pub(crate) const MQTT_COUNTERS_S: RangeInclusive<u64> = 1..=86_400;
    /// `mqtt.keep_alive_s`.
    pub(crate) const MQTT_KEEP_ALIVE_S: RangeInclusive<u64> = 5..=3600;
    /// `mqtt.topic_prefix` length.
    pub(crate) const MQTT_PREFIX: RangeInclusive<usize> = 0..=200;
    /// `mqtt.client_id` length.
    pub(crate) const MQTT_CLIENT_ID: RangeInclusive<usize> = 1..=64;
    /// `http.max_connections`.
    pub(crate) const HTTP_CONNECTIONS: RangeInclusive<usize> = 1..=64;
    /// `http.request_timeout_ms`.
    pub(crate) const HTTP_TIMEOUT_MS: RangeInclusive<u64> = 100..=60_000;
    /// `http.stream_fps`.
    pub(crate) const HTTP_FPS: RangeInclusive<u32> = 1..=30;
}

/// The station to build, every value checked.
#[derive(Debug, Clone, PartialEq)]
pub struct StationPlan {
    /// The configuration file it came from, for messages.
    pub file: PathBuf,
    /// The station's own folder.
    pub state_dir: PathBuf,
    /// The products and how the active one is chosen.
    pub recipes: RecipesPlan,
    /// Where frames come from.
    pub source: SourcePlan,
    /// When a frame is taken.
    pub trigger: TriggerPlan,
    /// Which frames count as taken after their trigger.
    pub freshness: super::Freshness,
    /// The display.
    pub display: Option<DisplayPlan>,
    /// The verdict lines.
    pub lines: LinesPlan,
    /// The result log and its rotation.
    pub results: Option<(PathBuf, Rotation)>,
    /// The failed-parts folder.
    pub failures: Option<FailuresPlan>,
    /// The reject gate; none: results go on the lines as soon as judged.
    pub reject: Option<RejectPlan>,
    /// How often the reference parts are judged again; none: at start and on demand only.
    pub self_test_every: Option<Duration>,
    /// The watch on passing parts' scores.
    pub drift: DriftPlan,
    /// The plant networks (Modbus TCP, MQTT).
    pub plant: PlantPlan,
    /// The operator interface; none: no HTTP server.
    pub http: Option<HttpSettings>,
}

/// The products and how the active one is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipesPlan {
    /// The products, at least one (`default`, from `[model]` and `[roi]`, when the file has no
    /// `[[recipe]]`).
    pub list: Vec<RecipePlan>,
    /// The index of the one active at start.
    pub start: usize,
    /// The inputs that choose each part's recipe; none: the active one judges (switched from
    /// the control socket).
    pub select: Option<InputsPlan>,
}

/// Where the recipe select inputs come from.
#[derive(Debug, Clone, PartialEq)]
pub enum InputsPlan {
    /// The chardev chip's lines of these offsets, bit 0 first.
    Lines(Vec<u32>),
    /// A script file of numbers.
    Script(PathBuf),
}

/// One product.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipePlan {
    /// Its name.
    pub name: String,
    /// The select inputs' number for it.
    pub code: Option<u32>,
    /// Its model and how it is judged.
    pub model: ModelPlan,
    /// Its judged rectangle and ignore mask.
    pub roi: Option<RoiPlan>,
    /// Its reject gate distance (the gate's kind is the station's).
    pub slot: Option<Slot>,
    /// Reference images and the verdict each must get (PASS: good, FAIL: known defect).
    pub references: Vec<(PathBuf, crate::verdict::Verdict)>,
}

/// The watch on passing parts' scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftPlan {
    /// Passing parts watched.
    pub window: usize,
    /// Fraction of the way from the calibration's median to the threshold that warns.
    pub bound: f32,
}

/// Where the reject gate is, and the ENCODER input that measures the way to it.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectPlan {
    /// Distance from the trigger.
    pub slot: Slot,
    /// The ENCODER input (encoder slots only).
    pub encoder: Option<InputPlan>,
}

/// The model and how it is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPlan {
    /// The model file.
    pub path: PathBuf,
    /// Its engine.
    pub engine: EngineConfig,
    /// The memory file.
    pub memory: Option<PathBuf>,
    /// The operator's threshold (its range depends on the model: checked at load).
    pub threshold: Option<f32>,
    /// Refinement on.
    pub refine: bool,
}

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourcePlan {
    /// A folder of images.
    Directory {
        /// The folder.
        path: PathBuf,
        /// Start again after the last image.
        looping: bool,
    },
    /// A camera.
    Camera(CameraSettings),
}

/// When a frame is taken.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerPlan {
    /// As fast as frames come.
    FreeRun,
    /// On a fixed schedule.
    Interval(Duration),
    /// On an edge of the TRIGGER input.
    Input {
        /// The input.
        input: InputPlan,
        /// Which edge.
        edge: Edge,
        /// How long a new level must hold.
        debounce: Duration,
        /// What a trigger that comes while busy gets.
        on_busy: OnBusy,
    },
}

/// Where an input (TRIGGER, ENCODER) comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum InputPlan {
    /// The chardev chip's line of this offset.
    Line(u32),
    /// A script file.
    Script(PathBuf),
    /// The Modbus trigger coil.
    Modbus,
}

/// The judged rectangle and its ignore mask.
#[derive(Debug, Clone, PartialEq)]
pub struct RoiPlan {
    /// The rectangle.
    pub rect: Roi,
    /// Black: never anomalous.
    pub ignore_mask: Option<PathBuf>,
}

/// The display.
#[derive(Debug, Clone, PartialEq)]
pub struct DisplayPlan {
    /// `/dev/fbN` or a plain file.
    pub device: PathBuf,
    /// Width, height and bits per pixel, required for a plain file.
    pub geometry: Option<(u32, u32, u32)>,
}

/// Where the verdict lines go.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputsPlan {
    /// Nowhere.
    None,
    /// Lines of a GPIO chip.
    Chardev {
        /// `/dev/gpiochipN`.
        chip: PathBuf,
        /// PASS, FAIL, READY line offsets.
        lines: [u32; 3],
        /// BUSY and RESULT-VALID line offsets, where wired.
        handshake: [Option<u32>; 2],
    },
    /// A record of transitions.
    Recording(PathBuf),
}

/// The verdict lines.
#[derive(Debug, Clone, PartialEq)]
pub struct LinesPlan {
    /// Where they go.
    pub outputs: OutputsPlan,
    /// How they behave.
    pub settings: LineSettings,
    /// Longest the loop may go unheard while a verdict is held.
    pub loop_deadline: Duration,
}

/// The failed-parts folder.
#[derive(Debug, Clone, PartialEq)]
pub struct FailuresPlan {
    /// The folder.
    pub dir: PathBuf,
    /// Most parts kept.
    pub max_images: usize,
    /// Most bytes kept.
    pub max_bytes: u64,
}

impl StationPlan {
    /// Reads, parses and checks the configuration at `path`.
    pub fn load(path: &Path) -> Result<StationPlan, ConfigError> {
        StationPlan::from_config(StationConfig::load(path)?, path)
    }

    /// As [`StationPlan::load`], with the recipe `start` (the command line's) active at start in
    /// place of the file's choice.
    pub fn load_starting(path: &Path, start: Option<&str>) -> Result<StationPlan, ConfigError> {
        let mut plan = StationPlan::load(path)?;
        if let Some(name) = start {
            plan.recipes.start = plan.recipes.list.iter().position(|r| r.name == name).ok_or_else(|| {
                let names: Vec<&str> = plan.recipes.list.iter().map(|r| r.name.as_str()).collect();
                ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: "--recipe".into(),
                    reason: format!("no recipe is named `{name}` (there are: {})", names.join(", ")),
                }
            })?;
        }
        Ok(plan)
    }

    /// Checks `config` (read from `path`) and makes the plan.
    pub fn from_config(config: StationConfig, path: &Path) -> Result<StationPlan, ConfigError> {
        fn invalid(path: &Path, (key, reason): (impl Into<String>, String)) -> ConfigError {
            ConfigError::Invalid { path: path.to_path_buf(), key: key.into(), reason }
        }
        let (mut plan, model, roi) = plan(&config, path).map_err(|e| invalid(path, e))?;
        plan.recipes = recipes(&config, &model, &roi, plan.reject.as_ref()).map_err(|e| invalid(path, e))?;
        Ok(plan)
    }
}

type Checked<T> = Result<T, (&'static str, String)>;

/// The judged rectangle of `[roi]` or a recipe's `roi` (`key`: where it is, e.g. `roi`).
fn roi_plan(key: &str, r: &RoiSection) -> Result<RoiPlan, (String, String)> {
    let named = |(k, reason): (&str, String)| (format!("{key}.{k}"), reason);
    // The region must fit some frame: its far edge within the largest frame side.
    let x = within("x", r.x, 0..=MAX_FRAME_SIDE - 1).map_err(named)?;
    let y = within("y", r.y, 0..=MAX_FRAME_SIDE - 1).map_err(named)?;
    let rect = Roi {
        x,
        y,
        width: within("width", r.width, 1..=MAX_FRAME_SIDE - x).map_err(named)?,
        height: within("height", r.height, 1..=MAX_FRAME_SIDE - y).map_err(named)?,
    };
    Ok(RoiPlan { rect, ignore_mask: r.ignore_mask.clone() })
}

/// The products: `[[recipe]]` entries over the defaults of `[model]`, `[roi]` and the gate's
/// distance, or one `default` recipe of those; and how the active one is chosen.
fn recipes(
    config: &StationConfig,
    model: &ModelPlan,
    roi: &Option<RoiPlan>,
    reject: Option<&RejectPlan>,
) -> Result<RecipesPlan, (String, String)> {
    let r = &config.recipes;
    let gate = reject.map(|g| g.slot);
    if config.recipe.is_empty() {
        if let Some((key, _)) = [
            ("recipes.start", r.start.is_some()),
            ("recipes.select_lines", r.select_lines.is_some()),
            ("recipes.select_script", r.select_script.is_some()),
        ]
        .into_iter()
        .find(|(_, set)| *set)
        {
            return Err((key.into(), "there is no `[[recipe]]` to choose from".into()));
        }
        let path = config
            .model
            .path
            .clone()
            .ok_or_else(|| ("model.path".to_string(), "missing: the model file".to_string()))?;
        let list = vec![RecipePlan {
            name: "default".into(),
            code: None,
            model: ModelPlan { path, ..model.clone() },
            roi: roi.clone(),
            slot: gate,
            references: Vec::new(),
        }];
        return Ok(RecipesPlan { list, start: 0, select: None });
    }
    within("recipe", config.recipe.len(), limits::RECIPES)
        .map_err(|(k, why)| (k.to_string(), format!("{why} entries")))?;
    let select = match (&r.select_lines, &r.select_script) {
        (Some(_), Some(_)) => {
            return Err(("recipes.select_script".into(), "give `select_lines` or `select_script`, not both".into()))
        }
        (Some(lines), None) => {
            within("recipes.select_lines", lines.len(), limits::SELECT_LINES)
                .map_err(|(k, why)| (k.to_string(), format!("{why} lines")))?;
            if config.gpio.kind != GpioKind::Chardev {
                return Err(("recipes.select_lines".into(), "select lines need `gpio.kind = \"chardev\"`".into()));
            }
            let g = &config.gpio;
            let taken: Vec<u32> =
                [g.pass_line, g.fail_line, g.ready_line, g.busy_line, g.valid_line, g.trigger_line, g.encoder_line]
                    .into_iter()
                    .flatten()
                    .collect();
            if let Some(line) = lines.iter().enumerate().find(|(i, l)| taken.contains(l) || lines[..*i].contains(l)) {
                return Err(("recipes.select_lines".into(), format!("line {}: already used by another line", line.1)));
            }
            Some(InputsPlan::Lines(lines.clone()))
        }
        (None, Some(script)) => Some(InputsPlan::Script(script.clone())),
        (None, None) => None,
    };
    if select.is_some() && config.trigger.on_busy == super::trigger::OnBusy::Queue {
        // A queued part's recipe would be read when it is taken, not at its edge: the PLC may
        // have set the next part's code by then.
        return Err((
            "trigger.on_busy".into(),
            "`queue` cannot go with recipe select inputs (a queued part would be judged with the code set after its trigger): use `error`".into(),
        ));
    }
    let bits = match &select {
        Some(InputsPlan::Lines(lines)) => lines.len() as u32,
        Some(InputsPlan::Script(_)) => limits::SELECT_LINES.end().to_owned() as u32,
        None => 0,
    };
    let mut list: Vec<RecipePlan> = Vec::with_capacity(config.recipe.len());
    for (i, recipe) in config.recipe.iter().enumerate() {
        let key = |k: &str| format!("recipe[{i}].{k}");
        let model = ModelPlan {
            path: match (&recipe.model, &config.model.path) {
                (Some(path), _) | (None, Some(path)) => path.clone(),
                (None, None) => return Err((key("model"), "missing: give the recipe's model or `model.path`".into())),
            },
            ..model.clone()
        };
        list.push(recipe_plan(recipe, &model, roi, reject, &key)?);
        let name = &recipe.name;
        if list[..i].iter().any(|r| r.name == *name) {
            return Err((key("name"), format!("`{name}` is the name of an earlier recipe")));
        }
        match (recipe.code, bits) {
            (Some(_), 0) => return Err((key("code"), "a code needs `recipes.select_lines` or `select_script`".into())),
            (None, 1..) => {
                return Err((key("code"), "the select lines choose recipes by code: give each recipe its own".into()))
            }
            (Some(code), _) if u64::from(code) >= 1u64 << bits => {
                return Err((key("code"), format!("{code} is more than {bits} select lines can give")))
            }
            (Some(code), _) if list[..i].iter().any(|r| r.code == Some(code)) => {
                return Err((key("code"), format!("{code} is the code of an earlier recipe")))
            }
            _ => {}
        }
    }
    let start = match &r.start {
        None => 0,
        Some(name) => list
            .iter()
            .position(|r| r.name == *name)
            .ok_or_else(|| ("recipes.start".to_string(), format!("no recipe is named `{name}`")))?,
    };
    Ok(RecipesPlan { list, start, select })
}

/// One `[[recipe]]` over the defaults; `key` names its keys.
fn recipe_plan(
    recipe: &RecipeSection,
    model: &ModelPlan,
    roi: &Option<RoiPlan>,
    reject: Option<&RejectPlan>,
    key: &dyn Fn(&str) -> String,
) -> Result<RecipePlan, (String, String)> {
    let name = &recipe.name;
    let valid_name = name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !limits::RECIPE_NAME.contains(&name.len()) || !valid_name {
        return Err((key("name"), format!("`{name}`: 1 to 32 letters, digits, `-`, `_` or `.`")));
    }
    if let Some(t) = recipe.threshold {
        if !(t > 0.0 && t.is_finite()) {
            return Err((key("threshold"), format!("{t}: must be a positive number")));
        }
    }
    let slot = match (reject.map(|g| g.slot), recipe.reject_delay_ms, recipe.reject_encoder_counts) {
        (_, Some(_), Some(_)) => return Err((key("reject_delay_ms"), "give a delay or counts, not both".into())),
        (Some(Slot::Delay(_)), Some(ms), None) => Some(Slot::Delay(Duration::from_millis(
            within("reject_delay_ms", ms, limits::REJECT_DELAY_MS).map_err(|(k, why)| (key(k), why))?,
        ))),
        (Some(Slot::Counts(_)), None, Some(counts)) => Some(Slot::Counts(
            within("reject_encoder_counts", counts, limits::ENCODER_COUNTS).map_err(|(k, why)| (key(k), why))?,
        )),
        (slot, None, None) => slot,
        (_, Some(_), None) => return Err((key("reject_delay_ms"), "only `reject.timing = \"delay\"` uses it".into())),
        (_, None, Some(_)) => {
            return Err((key("reject_encoder_counts"), "only `reject.timing = \"encoder\"` uses it".into()))
        }
    };
    let count = recipe.reference_good.len() + recipe.reference_defect.len();
    if !limits::REFERENCES.contains(&count) {
        return Err((key("reference_good"), format!("{count} reference parts: at most {}", limits::REFERENCES.end())));
    }
    use crate::verdict::Verdict;
    let references = recipe
        .reference_good
        .iter()
        .map(|p| (p.clone(), Verdict::Pass))
        .chain(recipe.reference_defect.iter().map(|p| (p.clone(), Verdict::Fail)))
        .collect();
    Ok(RecipePlan {
        name: name.clone(),
        code: recipe.code,
        model: ModelPlan {
            memory: recipe.memory.clone().or_else(|| model.memory.clone()),
            // `[model]`'s threshold was set for `[model]`'s model and memory: a recipe that
            // brings its own takes its own memory's calibrated threshold unless it sets one.
            threshold: match (recipe.model.is_some() || recipe.memory.is_some(), recipe.threshold) {
                (_, Some(threshold)) => Some(threshold),
                (false, None) => model.threshold,
                (true, None) => None,
            },
            ..model.clone()
        },
        roi: match &recipe.roi {
            Some(r) => Some(roi_plan(&key("roi"), r)?),
            None => roi.clone(),
        },
        slot,
        references,
    })
}

fn within<T: PartialOrd + std::fmt::Debug>(
    key: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Checked<T> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err((key, format!("{value:?} is outside {range:?}")))
    }
}

fn required<T>(key: &'static str, value: Option<T>, why: &str) -> Checked<T> {
    value.ok_or_else(|| (key, format!("missing: {why}")))
}

/// The `what` input (TRIGGER, ENCODER): its script (`keys[0]`) or its chip line (`keys[1]`).
fn input_plan(
    g: &GpioSection,
    what: &str,
    [script_key, line_key]: [&'static str; 2],
    script: &Option<PathBuf>,
    line: Option<u32>,
) -> Checked<InputPlan> {
    match (script, line) {
        (Some(script), None) => Ok(InputPlan::Script(script.clone())),
        (Some(_), Some(_)) => Err((script_key, format!("give `{line_key}` or `{script_key}`, not both"))),
        (None, _) if g.kind != GpioKind::Chardev => {
            Err(("gpio.kind", format!("the {what} input needs `chardev` lines or `{script_key}`")))
        }
        (None, line) => Ok(InputPlan::Line(required(line_key, line, &format!("the {what} input needs its line"))?)),
    }
}

/// Everything but the recipes, and the defaults they take: `[model]` and `[roi]`.
fn plan(config: &StationConfig, path: &Path) -> Checked<(StationPlan, ModelPlan, Option<RoiPlan>)> {
    let model = &config.model;
    if let Some(t) = model.threshold {
        if !(t > 0.0 && t.is_finite()) {
            return Err(("model.threshold", format!("{t}: must be a positive number")));
        }
    }
    let providers = match &model.providers {
        Some(list) if list.is_empty() => return Err(("model.providers", "give at least one provider".into())),
        Some(list) => list.clone(),
        None => vec![Provider::TensorRt, Provider::Cuda, Provider::Cpu],
    };
    if model.ort_library.as_deref().is_some_and(|p| !p.is_absolute()) {
        return Err(("model.ort_library", "must be an absolute path (it is loaded as code)".into()));
    }
    let model_plan = ModelPlan {
        path: PathBuf::new(),
        engine: EngineConfig {
            backend: model.backend,
            ort_library: model.ort_library.clone(),
            allow_insecure_library: model.allow_insecure_library,
            providers,
            tensorrt: model.tensorrt.clone(),
        },
        memory: model.memory.clone(),
        threshold: model.threshold,
        refine: model.refine,
    };

    let s = &config.source;
    let source = match s.kind {
        SourceKind::Directory => SourcePlan::Directory {
            path: required("source.path", s.path.clone(), "a directory source needs the folder")?,
            looping: s.looping,
        },
        SourceKind::Camera => {
            let reconnect_ms = within("source.reconnect_ms", s.reconnect_ms, limits::RECONNECT_MS)?;
            SourcePlan::Camera(CameraSettings {
                device: required("source.device", s.device.clone(), "a camera source needs an index or a name")?,
                width: within("source.width", s.width, limits::CAMERA_SIDE)?,
                height: within("source.height", s.height, limits::CAMERA_SIDE)?,
                fps: within("source.fps", s.fps, limits::FPS)?,
                format: s.format,
                reconnect: Duration::from_millis(reconnect_ms),
                reconnect_max: Duration::from_millis(within(
                    "source.reconnect_max_ms",
                    s.reconnect_max_ms,
                    reconnect_ms..=limits::RECONNECT_MAX_MS,
                )?),
            })
        }
    };

    let g = &config.gpio;
    // Lines that only a chip has are refused elsewhere, not ignored: the wiring would be dead.
    if g.kind != GpioKind::Chardev {
        let chip_only =
            [("gpio.busy_line", g.busy_line), ("gpio.valid_line", g.valid_line), ("gpio.encoder_line", g.encoder_line)];
        if let Some((key, _)) = chip_only.iter().find(|(_, line)| line.is_some()) {
            return Err((key, "a line offset needs `gpio.kind = \"chardev\"`".into()));
        }
    }
    if g.trigger_line.is_some() && config.trigger.mode != TriggerMode::Gpio {
        return Err(("gpio.trigger_line", "the TRIGGER line is read only with `trigger.mode = \"gpio\"`".into()));
    }
    let outputs = match g.kind {
        GpioKind::None => OutputsPlan::None,
        GpioKind::Recording => {
            if g.trigger_line.is_some() {
                return Err((
                    "gpio.trigger_line",
                    "the recording GPIO has no inputs (see `gpio.trigger_script`)".into(),
                ));
            }
            OutputsPlan::Recording(required("gpio.record", g.record.clone(), "the recording GPIO needs its file")?)
        }
        GpioKind::Chardev => {
            let chip =
                required("gpio.chip", g.chip.clone(), "the chardev GPIO needs the chip, e.g. \"/dev/gpiochip0\"")?;
            let lines = [
                required("gpio.pass_line", g.pass_line, "the chardev GPIO needs the PASS line")?,
                required("gpio.fail_line", g.fail_line, "the chardev GPIO needs the FAIL line")?,
                required("gpio.ready_line", g.ready_line, "the chardev GPIO needs the READY line")?,
            ];
            let handshake = [g.busy_line, g.valid_line];
            let all: Vec<u32> = lines
                .iter()
                .copied()
                .chain(handshake.into_iter().flatten())
                .chain(g.trigger_line)
                .chain(g.encoder_line)
                .collect();
            if (1..all.len()).any(|i| all[..i].contains(&all[i])) {
                return Err(("gpio.pass_line", format!("the lines {all:?} must be distinct")));
            }
            OutputsPlan::Chardev { chip, lines, handshake }
        }
    };
    if g.safe_state.pass || g.safe_state.ready {
        return Err((
            "gpio.safe_state",
            "PASS and READY may not be asserted in the safe state: it would read as a judged good part".into(),
        ));
    }
    let handshake = Handshake {
        settle: Duration::from_millis(within("gpio.result_settle_ms", g.result_settle_ms, limits::RESULT_SETTLE_MS)?),
        valid: Duration::from_millis(within("gpio.result_valid_ms", g.result_valid_ms, limits::RESULT_VALID_MS)?),
    };
    let pulse = Duration::from_millis(within("gpio.pulse_ms", g.pulse_ms, limits::PULSE_MS)?);
    if g.output == OutputMode::Pulse && !handshake.valid.is_zero() && pulse < handshake.settle + handshake.valid {
        return Err((
            "gpio.pulse_ms",
            "a pulse must last at least `result_settle_ms` + `result_valid_ms`: RESULT-VALID is strobed while it is asserted".into(),
        ));
    }
    let lines = LinesPlan {
        outputs,
        settings: LineSettings { active_low: g.active_low, mode: g.output, pulse, safe: g.safe_state, handshake },
        loop_deadline: Duration::from_millis(within(
            "gpio.loop_deadline_ms",
            g.loop_deadline_ms,
            limits::LOOP_DEADLINE_MS,
        )?),
    };

    let t = &config.trigger;
    if g.trigger_script.is_some() && t.mode != TriggerMode::Gpio {
        return Err((
            "gpio.trigger_script",
            "a trigger script plays the TRIGGER input: it needs `trigger.mode = \"gpio\"`".into(),
        ));
    }
    if t.mode == TriggerMode::Modbus && config.modbus.is_none() {
        return Err(("trigger.mode", "the Modbus trigger needs the Modbus server: add `[modbus]`".into()));
    }
    let trigger = match t.mode {
        TriggerMode::FreeRun => TriggerPlan::FreeRun,
        // A write of the trigger coil is a pulse that needs no debounce.
        TriggerMode::Modbus => TriggerPlan::Input {
            input: InputPlan::Modbus,
            edge: Edge::Rising,
            debounce: Duration::ZERO,
            on_busy: t.on_busy,
        },
        TriggerMode::Interval => {
            let ms = required("trigger.interval_ms", t.interval_ms, "the interval trigger needs its period")?;
            TriggerPlan::Interval(Duration::from_millis(within("trigger.interval_ms", ms, limits::INTERVAL_MS)?))
        }
        TriggerMode::Gpio => {
            let input = input_plan(
                g,
                "trigger",
                ["gpio.trigger_script", "gpio.trigger_line"],
                &g.trigger_script,
                g.trigger_line,
            )?;
            TriggerPlan::Input {
                input,
                edge: t.edge,
                debounce: Duration::from_millis(within("trigger.debounce_ms", t.debounce_ms, limits::DEBOUNCE_MS)?),
                on_busy: t.on_busy,
            }
        }
    };

    let freshness = super::Freshness {
        delay: Duration::from_millis(within("trigger.delay_ms", t.delay_ms, limits::TRIGGER_DELAY_MS)?),
        timeout: Duration::from_millis(within(
            "trigger.frame_timeout_ms",
            t.frame_timeout_ms,
            limits::FRAME_TIMEOUT_MS,
        )?),
    };

    let roi = match &config.roi {
        None => None,
        // Keys of `[roi]` are 'static: the recipe form names its own.
        Some(r) => Some(roi_plan("roi", r).map_err(|(key, why)| {
            let key = ["roi.x", "roi.y", "roi.width", "roi.height"].into_iter().find(|k| *k == key).unwrap_or("roi");
            (key, why)
        })?),
    };

    let d = &config.display;
    let display = match d.kind {
        DisplayKind::None => None,
        DisplayKind::Framebuffer => {
            let device =
                required("display.device", d.device.clone(), "the framebuffer display needs /dev/fbN or a file")?;
            let geometry = match (d.width, d.height, d.bits_per_pixel) {
                (None, None, None) => None,
                (Some(w), Some(h), Some(bits)) => {
                    if ![16, 24, 32].contains(&bits) {
                        return Err(("display.bits_per_pixel", format!("{bits}: must be 16, 24 or 32")));
                    }
                    Some((
                        within("display.width", w, limits::DISPLAY_SIDE)?,
                        within("display.height", h, limits::DISPLAY_SIDE)?,
                        bits,
                    ))
                }
                _ => {
                    return Err(("display.width", "give all of `width`, `height` and `bits_per_pixel`, or none".into()))
                }
            };
            Some(DisplayPlan { device, geometry })
        }
    };

    let l = &config.log;
    let failures = match &l.failures_dir {
        None => None,
        Some(dir) => Some(FailuresPlan {
            dir: dir.clone(),
            max_images: within("log.max_images", l.max_images, limits::MAX_IMAGES)?,
            max_bytes: within("log.max_bytes", l.max_bytes, limits::MIN_MAX_BYTES..=u64::MAX)?,
        }),
    };

    let rotation = Rotation {
        max_bytes: within("log.results_max_bytes", l.results_max_bytes, limits::RESULTS_MAX_BYTES)?,
        max_age: Duration::from_secs(
            3600 * within("log.results_max_age_hours", l.results_max_age_hours, limits::RESULTS_MAX_AGE_HOURS)?,
        ),
        keep: within("log.results_keep", l.results_keep, limits::RESULTS_KEEP)?,
    };

    let r = &config.reject;
    // A gate key without its timing would be ignored: results would go on the lines as judged,
    // or at another slot, and the gate would reject the wrong part.
    let strays = [
        ("reject.delay_ms", r.delay_ms.is_some(), RejectTiming::Delay),
        ("reject.encoder_counts", r.encoder_counts.is_some(), RejectTiming::Encoder),
        ("gpio.encoder_line", g.encoder_line.is_some(), RejectTiming::Encoder),
        ("gpio.encoder_script", g.encoder_script.is_some(), RejectTiming::Encoder),
    ];
    if let Some((key, _, timing)) = strays.into_iter().find(|(_, set, timing)| *set && r.timing != *timing) {
        let name = if timing == RejectTiming::Delay { "delay" } else { "encoder" };
        return Err((key, format!("only `reject.timing = \"{name}\"` uses it: set that timing, or remove the key")));
    }
    let reject = match r.timing {
        RejectTiming::Immediate => None,
        RejectTiming::Delay => {
            let ms = required("reject.delay_ms", r.delay_ms, "a delayed reject needs its delay")?;
            let delay = Duration::from_millis(within("reject.delay_ms", ms, limits::REJECT_DELAY_MS)?);
            Some(RejectPlan { slot: Slot::Delay(delay), encoder: None })
        }
        RejectTiming::Encoder => {
            let counts = required("reject.encoder_counts", r.encoder_counts, "an encoder reject needs its counts")?;
            let counts = within("reject.encoder_counts", counts, limits::ENCODER_COUNTS)?;
            let encoder = input_plan(
                g,
                "encoder",
                ["gpio.encoder_script", "gpio.encoder_line"],
                &g.encoder_script,
                g.encoder_line,
            )?;
            Some(RejectPlan { slot: Slot::Counts(counts), encoder: Some(encoder) })
        }
    };

    let self_test_every = config
        .self_test
        .every_minutes
        .map(|m| within("self_test.every_minutes", m, limits::SELF_TEST_MINUTES).map(|m| Duration::from_secs(60 * m)))
        .transpose()?;
    let drift = DriftPlan {
        window: within("drift.window", config.drift.window, limits::DRIFT_WINDOW)?,
        bound: within("drift.bound", config.drift.bound, limits::DRIFT_BOUND)?,
    };
    let plan = StationPlan {
        file: path.to_path_buf(),
        state_dir: config.state_dir.clone(),
        recipes: RecipesPlan { list: Vec::new(), start: 0, select: None },
        source,
        trigger,
        freshness,
        display,
        lines,
        results: config.log.results.clone().map(|path| (path, rotation)),
        failures,
        reject,
        self_test_every,
        drift,
        plant: PlantPlan {
            modbus: config.modbus.as_ref().map(modbus_plan).transpose()?,
            mqtt: config.mqtt.as_ref().map(mqtt_plan).transpose()?,
        },
        http: config.http.as_ref().map(http_plan).transpose()?,
    };
    Ok((plan, model_plan, roi))
}

/// `[modbus]`, checked.
fn modbus_plan(m: &ModbusSection) -> Checked<ModbusSettings> {
    network_feature("modbus")?;
    Ok(ModbusSettings {
        bind: socket_address("modbus.bind", &m.bind, "127.0.0.1:502")?,
        max_clients: within("modbus.max_clients", m.max_clients, limits::MODBUS_CLIENTS)?,
        idle_timeout: Duration::from_millis(within(
            "modbus.idle_timeout_ms",
            m.idle_timeout_ms,
            limits::MODBUS_IDLE_MS,
        )?),
    })
}

/// `[mqtt]`, checked.
fn mqtt_plan(m: &MqttSection) -> Checked<MqttSettings> {
    network_feature("mqtt")?;
    if m.host.is_empty() || m.host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(("mqtt.host", format!("{:?}: give the broker's host name or address", m.host)));
    }
    let prefix = &m.topic_prefix;
    // Brokers keep topics starting with `$` to themselves ($SYS): a result published there
    // would be dropped without a word.
    if !limits::MQTT_PREFIX.contains(&prefix.len())
        || prefix.starts_with('$')
        || prefix.chars().any(|c| matches!(c, '+' | '#') || c.is_control())
    {
        return Err((
            "mqtt.topic_prefix",
            format!("{prefix:?}: at most 200 bytes, not starting with `$`, no `+`, `#` or control characters"),
        ));
    }
    let client_id = match &m.client_id {
        Some(id) => id.clone(),
        None => format!("clipada-{}", host_name()),
    };
    if !limits::MQTT_CLIENT_ID.contains(&client_id.len()) || client_id.chars().any(|c| c.is_control()) {
        return Err(("mqtt.client_id", format!("{client_id:?}: 1 to 64 bytes, no control characters")));
    }
    if m.username.as_ref().is_some_and(|u| u.is_empty() || u.chars().any(|c| c.is_control())) {
        return Err(("mqtt.username", "give a user name without control characters".into()));
    }
    let credentials = match (&m.username, &m.password_file) {
        (Some(user), file) => Some((user.clone(), file.clone())),
        (None, Some(_)) => return Err(("mqtt.password_file", "a password needs `mqtt.username`".into())),
        (None, None) => None,
    };
    let tls = match &m.tls {
        None => None,
        Some(t) => Some(TlsFiles {
            ca: t.ca.clone(),
            client: match (&t.cert, &t.key) {
                (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
                (None, None) => None,
                _ => return Err(("mqtt.tls.cert", "give both `cert` and `key`, or neither".into())),
            },
        }),
    };
    Ok(MqttSettings {
        host: m.host.clone(),
        port: match m.port {
            Some(0) => return Err(("mqtt.port", "0 is no port".into())),
            Some(port) => port,
            None if tls.is_some() => 8883,
            None => 1883,
        },
        topic_prefix: prefix.clone(),
        client_id,
        credentials,
        queue: within("mqtt.queue", m.queue, limits::MQTT_QUEUE)?,
        counters_every: Duration::from_secs(within(
            "mqtt.counters_every_s",
            m.counters_every_s,
            limits::MQTT_COUNTERS_S,
        )?),
        keep_alive: Duration::from_secs(within("mqtt.keep_alive_s", m.keep_alive_s, limits::MQTT_KEEP_ALIVE_S)?),
        tls,
    })
}

/// `bind` (the value of `key`) when it is an address and port, like `example`.
fn socket_address(key: &'static str, bind: &str, example: &str) -> Checked<String> {
    match bind.parse::<std::net::SocketAddr>() {
        Ok(_) => Ok(bind.to_string()),
        Err(_) => Err((key, format!("{bind:?}: give an address and port, e.g. {example:?}"))),
    }
}

/// `[http]`, checked.
fn http_plan(h: &HttpSection) -> Checked<HttpSettings> {
    if !cfg!(feature = "hmi") {
        return Err(("http", "this clipada was built without the `hmi` feature (operator interface)".into()));
    }
    if let Some(bad) = h.host_names.iter().find(|n| {
        n.is_empty() || n.len() > 253 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
    }) {
        return Err(("http.host_names", format!("{bad:?}: a host name of letters, digits, `-` and `.`")));
    }
    Ok(HttpSettings {
        bind: socket_address("http.bind", &h.bind, "127.0.0.1:8080")?,
        token_file: h.token_file.clone(),
        max_connections: within("http.max_connections", h.max_connections, limits::HTTP_CONNECTIONS)?,
        request_timeout: Duration::from_millis(within(
            "http.request_timeout_ms",
            h.request_timeout_ms,
            limits::HTTP_TIMEOUT_MS,
        )?),
        stream_fps: within("http.stream_fps", h.stream_fps, limits::HTTP_FPS)?,
        tls: h.tls.as_ref().map(|t| (t.cert.clone(), t.key.clone())),
        host_names: h.host_names.clone(),
    })
}

/// Refuses a network section (`key`) in a build without the `plant` feature.
fn network_feature(key: &'static str) -> Checked<()> {
    if cfg!(feature = "plant") {
        Ok(())
    } else {
        Err((key, "this clipada was built without the `plant` feature (Modbus TCP, MQTT)".into()))
    }
}

/// This machine's host name (for the default MQTT client ID), `station` when it has none.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| {
            name.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                .take(48)
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "station".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::station::lines::{OutputMode, SafeState};

    const MINIMAL: &str = r#"
state_dir = "state"
[model]
path = "m.onnx"
[source]
kind = "directory"
path = "frames"
"#;

    fn parse(text: &str) -> Result<StationPlan, ConfigError> {
        let path = Path::new("station.toml");
        StationConfig::parse(text, path).and_then(|c| StationPlan::from_config(c, path))
    }

    fn invalid(text: &str) -> (String, String) {
        match parse(text) {
            Err(ConfigError::Invalid { path, key, reason }) => {
                assert_eq!(path, Path::new("station.toml"));
                (key, reason)
            }
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    /// Two recipes over MINIMAL's model; `extra` goes after them.
    fn two_recipes(extra: &str) -> String {
        format!(
            "{MINIMAL}[[recipe]]\nname = \"a\"\n{extra}[[recipe]]\nname = \"b\"\nmodel = \"other.onnx\"\nthreshold = 0.3\n[recipe.roi]\nx = 1\ny = 2\nwidth = 3\nheight = 4\n"
        )
    }

    fn text_with_own_memory() -> String {
        MINIMAL.replace("path = \"m.onnx\"", "path = \"m.onnx\"\nmemory = \"m.memory\"\nthreshold = 0.5")
            + "[[recipe]]\nname = \"a\"\n[[recipe]]\nname = \"b\"\nmemory = \"b.memory\"\n"
    }

    #[test]
    fn recipes_take_the_defaults_they_do_not_set() {
        let text =
            two_recipes("").replace("path = \"m.onnx\"", "path = \"m.onnx\"\nmemory = \"m.memory\"\nthreshold = 0.5");
        let plan = parse(&(text + "[roi]\nx = 0\ny = 0\nwidth = 8\nheight = 8\n")).unwrap();
        let [a, b] = &plan.recipes.list[..] else { panic!("two recipes: {:?}", plan.recipes.list) };
        assert_eq!((a.name.as_str(), b.name.as_str()), ("a", "b"));
        assert_eq!(a.model.path, Path::new("m.onnx"));
        assert_eq!(a.model.memory.as_deref(), Some(Path::new("m.memory")));
        assert_eq!(a.model.threshold, Some(0.5));
        assert_eq!(a.roi.as_ref().unwrap().rect, Roi { x: 0, y: 0, width: 8, height: 8 });
        assert_eq!(b.model.path, Path::new("other.onnx"));
        assert_eq!(b.model.memory.as_deref(), Some(Path::new("m.memory")), "its memory is `[model]`'s");
        assert_eq!(b.model.threshold, Some(0.3));
        // A recipe with its own memory (or model) and no threshold takes its memory's, not the
        // one `[model]` set for another memory.
        let plan = parse(&text_with_own_memory()).unwrap();
        assert_eq!(plan.recipes.list[0].model.threshold, Some(0.5));
        assert_eq!(plan.recipes.list[1].model.threshold, None);
        assert_eq!(b.roi.as_ref().unwrap().rect, Roi { x: 1, y: 2, width: 3, height: 4 });
        assert_eq!(plan.recipes.start, 0);
        assert_eq!(plan.recipes.select, None);
        // Without `[[recipe]]`: one, `default`, of `[model]` and `[roi]`.
        let plan = parse(MINIMAL).unwrap();
        assert_eq!(plan.recipes.list.len(), 1);
        assert_eq!(plan.recipes.list[0].name, "default");
        assert_eq!(plan.recipes.list[0].model.path, Path::new("m.onnx"));
    }

    #[cfg(feature = "plant")]
    #[test]
    fn plant_network_mistakes_are_refused_naming_the_key() {
        let modbus = |keys: &str| format!("{MINIMAL}[modbus]\n{keys}");
        let mqtt = |keys: &str| format!("{MINIMAL}[mqtt]\nhost = \"broker\"\n{keys}");
        let cases: Vec<(String, &str, &str)> = vec![
            (modbus("bind = \"localhost\"\n"), "modbus.bind", "address and port"),
            (modbus("max_clients = 0\n"), "modbus.max_clients", "1..=16"),
            (modbus("max_clients = 17\n"), "modbus.max_clients", "1..=16"),
            (modbus("idle_timeout_ms = 99\n"), "modbus.idle_timeout_ms", "100..="),
            (format!("{MINIMAL}[mqtt]\nhost = \"\"\n"), "mqtt.host", "host name"),
            (mqtt("topic_prefix = \"$SYS/x/\"\n"), "mqtt.topic_prefix", "`$`"),
            (mqtt("topic_prefix = \"a/#/\"\n"), "mqtt.topic_prefix", "`#`"),
            (mqtt("topic_prefix = \"a\\u0001b/\"\n"), "mqtt.topic_prefix", "control"),
            (mqtt(&format!("topic_prefix = \"{}\"\n", "t".repeat(201))), "mqtt.topic_prefix", "200 bytes"),
            (mqtt("client_id = \"\"\n"), "mqtt.client_id", "1 to 64"),
            (mqtt("password_file = \"p\"\n"), "mqtt.password_file", "username"),
            (mqtt("username = \"a\\u0007\"\n"), "mqtt.username", "control"),
            (mqtt("queue = 0\n"), "mqtt.queue", "1..=100000"),
            (mqtt("keep_alive_s = 4\n"), "mqtt.keep_alive_s", "5..=3600"),
            (mqtt("port = 0\n"), "mqtt.port", "no port"),
            (mqtt("[mqtt.tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\n"), "mqtt.tls.cert", "both"),
            (format!("{MINIMAL}[trigger]\nmode = \"modbus\"\n"), "trigger.mode", "[modbus]"),
            (format!("{MINIMAL}[http]\nbind = \"8080\"\n"), "http.bind", "address and port"),
            (format!("{MINIMAL}[http]\nmax_connections = 0\n"), "http.max_connections", "1..=64"),
            (format!("{MINIMAL}[http]\nrequest_timeout_ms = 60001\n"), "http.request_timeout_ms", "100..="),
            (format!("{MINIMAL}[http]\nstream_fps = 31\n"), "http.stream_fps", "1..=30"),
            (format!("{MINIMAL}[http]\nhost_names = [\"evil/x\"]\n"), "http.host_names", "letters"),
            (format!("{MINIMAL}[http.tls]\ncert = \"c.pem\"\n"), "http.tls.key", "missing"),
        ];
        for (text, key, reason_part) in cases {
            let (got_key, reason) = invalid(&text);
            assert_eq!(got_key, key, "{text}");
            assert!(reason.contains(reason_part), "{key}: {reason}");
        }
        let plan = parse(&mqtt("[mqtt.tls]\nca = \"ca.pem\"\n")).unwrap();
        let settings = plan.plant.mqtt.unwrap();
        assert_eq!(
            (settings.port, settings.topic_prefix.as_str()),
            (8883, "clipada/"),
            "TLS's port; the default prefix"
        );
    }

    #[test]
    fn recipe_mistakes_are_refused_naming_the_recipe_and_key() {
        let select = "[recipes]\nselect_script = \"codes.txt\"\n";
        let cases: Vec<(String, &str, &str)> = vec![
            (two_recipes("").replace("name = \"b\"", "name = \"a\""), "recipe[1].name", "earlier recipe"),
            (two_recipes("").replace("name = \"b\"", "name = \"b c\""), "recipe[1].name", "letters"),
            (
                two_recipes("").replace("name = \"b\"", &format!("name = \"{}\"", "n".repeat(33))),
                "recipe[1].name",
                "1 to 32",
            ),
            (two_recipes("code = 1\n"), "recipe[0].code", "select_lines"),
            (two_recipes("code = 1\n") + select, "recipe[1].code", "its own"),
            (two_recipes("threshold = -1\n"), "recipe[0].threshold", "positive"),
            (two_recipes("reject_delay_ms = 5\n"), "recipe[0].reject_delay_ms", "reject.timing"),
            (
                two_recipes("reference_good = [\"g.png\"]\nreference_defect = [\"d.png\"]\n")
                    .replace("[recipe.roi]\nx = 1", "[recipe.roi]\nx = 99999"),
                "recipe[1].roi.x",
                "outside",
            ),
            (two_recipes("") + "[recipes]\nstart = \"c\"\n", "recipes.start", "no recipe is named `c`"),
            (two_recipes("") + "[recipes]\nselect_lines = [5]\n", "recipes.select_lines", "chardev"),
            (format!("{MINIMAL}[recipes]\nstart = \"a\"\n"), "recipes.start", "no `[[recipe]]`"),
            (
                MINIMAL.replace("path = \"m.onnx\"\n", "backend = \"tract\"\n") + "[[recipe]]\nname = \"a\"\n",
                "recipe[0].model",
                "missing",
            ),
            (MINIMAL.replace("path = \"m.onnx\"\n", "backend = \"tract\"\n"), "model.path", "missing"),
            (format!("{MINIMAL}[self_test]\nevery_minutes = 0\n"), "self_test.every_minutes", "outside"),
            (format!("{MINIMAL}[drift]\nwindow = 5\n"), "drift.window", "outside"),
            (format!("{MINIMAL}[drift]\nbound = 2.0\n"), "drift.bound", "outside"),
            (
                two_recipes("code = 1\n").replace("name = \"b\"", "name = \"b\"\ncode = 2")
                    + select
                    + "[trigger]\nmode = \"gpio\"\non_busy = \"queue\"\n[gpio]\ntrigger_script = \"t.txt\"\n",
                "trigger.on_busy",
                "select inputs",
            ),
        ];
        for (text, key, reason) in cases {
            let (found, why) = invalid(&text);
            assert_eq!(found, key, "{why}\n{text}");
            assert!(why.contains(reason), "{key}: {why}");
        }
        // Codes: within what the lines can give, and unique.
        let chardev =
            "[gpio]\nkind = \"chardev\"\nchip = \"/dev/gpiochip0\"\npass_line = 1\nfail_line = 2\nready_line = 3\n";
        let coded = |a: u32, b: u32, lines: &str| {
            two_recipes(&format!("code = {a}\n")).replace("name = \"b\"", &format!("name = \"b\"\ncode = {b}"))
                + chardev
                + &format!("[recipes]\nselect_lines = {lines}\n")
        };
        assert!(parse(&coded(1, 2, "[5, 6]")).is_ok());
        assert_eq!(invalid(&coded(1, 4, "[5, 6]")).0, "recipe[1].code", "4 needs three lines");
        assert_eq!(invalid(&coded(2, 2, "[5, 6]")).0, "recipe[1].code", "one code each");
        let (key, why) = invalid(&coded(1, 2, "[5, 2]"));
        assert_eq!(key, "recipes.select_lines", "the FAIL output's line: {why}");
        assert_eq!(invalid(&coded(1, 2, "[5, 5]")).0, "recipes.select_lines");
        assert_eq!(invalid(&coded(1, 2, "[]")).0, "recipes.select_lines");
    }

    #[test]
    fn the_command_line_recipe_replaces_the_files_choice_and_an_unknown_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("station.toml");
        std::fs::write(&path, two_recipes("") + "[recipes]\nstart = \"b\"\n").unwrap();
        assert_eq!(StationPlan::load_starting(&path, None).unwrap().recipes.start, 1);
        assert_eq!(StationPlan::load_starting(&path, Some("a")).unwrap().recipes.start, 0);
        let error = StationPlan::load_starting(&path, Some("c")).unwrap_err().to_string();
        assert!(error.contains("`--recipe`") && error.contains("there are: a, b"), "{error}");
    }

    #[test]
    fn a_reject_gate_key_without_its_timing_is_refused() {
        // Regression: `delay_ms` without `timing = "delay"` was ignored: results went on the
        // lines as judged, not when the part reached the gate.
        let (key, reason) = invalid(&format!("{MINIMAL}[reject]\ndelay_ms = 500\n"));
        assert_eq!(key, "reject.delay_ms");
        assert!(reason.contains("timing = \"delay\""), "{reason}");
        let cases = [
            ("[reject]\ntiming = \"delay\"\ndelay_ms = 5\nencoder_counts = 50\n", "reject.encoder_counts"),
            ("[reject]\ntiming = \"encoder\"\ndelay_ms = 5\nencoder_counts = 50\n", "reject.delay_ms"),
            ("[gpio]\nencoder_script = \"e.txt\"\n", "gpio.encoder_script"),
            ("[gpio]\nkind = \"chardev\"\nchip = \"/dev/gpiochip0\"\npass_line = 1\nfail_line = 2\nready_line = 3\nencoder_line = 4\n", "gpio.encoder_line"),
        ];
        for (text, key) in cases {
            assert_eq!(invalid(&format!("{MINIMAL}{text}")).0, key, "{text}");
        }
    }

    #[test]
    fn lines_that_would_be_dead_wiring_are_refused() {
        // Regression: these were accepted and never driven or read.
        let cases = [
            ("[gpio]\nbusy_line = 4\n", "gpio.busy_line"),
            ("[gpio]\nkind = \"recording\"\nrecord = \"g.log\"\nvalid_line = 5\n", "gpio.valid_line"),
            ("[gpio]\nencoder_line = 6\n", "gpio.encoder_line"),
            ("[gpio]\nkind = \"chardev\"\nchip = \"/dev/gpiochip0\"\npass_line = 1\nfail_line = 2\nready_line = 3\ntrigger_line = 4\n", "gpio.trigger_line"),
        ];
        for (text, key) in cases {
            assert_eq!(invalid(&format!("{MINIMAL}{text}")).0, key, "{text}");
        }
    }

    #[test]
    fn a_minimal_config_takes_the_documented_defaults() {
        let plan = parse(MINIMAL).unwrap();
        assert_eq!(plan.lines.settings.safe, SafeState { ready: false, pass: false, fail: true });
        assert_eq!(plan.lines.settings.mode, OutputMode::Level);
        assert_eq!(plan.lines.loop_deadline, Duration::from_secs(2));
        assert!(plan.recipes.list[0].model.refine);
        assert_eq!(plan.trigger, TriggerPlan::FreeRun);
        assert_eq!(plan.source, SourcePlan::Directory { path: "frames".into(), looping: false });
    }

    #[test]
    fn a_relative_onnx_runtime_library_is_refused_and_insecure_ones_only_when_allowed() {
        let with_model = |extra: &str| MINIMAL.replace("path = \"m.onnx\"", &format!("path = \"m.onnx\"\n{extra}"));
        let (key, reason) = invalid(&with_model("ort_library = \"libonnxruntime.so\""));
        assert_eq!(key, "model.ort_library");
        assert!(reason.contains("absolute"), "{reason}");
        let plan = parse(&with_model("ort_library = \"/usr/lib/libonnxruntime.so\"")).unwrap();
        assert!(!plan.recipes.list[0].model.engine.allow_insecure_library, "refused unless the configuration says so");
        let plan = parse(&with_model("allow_insecure_library = true")).unwrap();
        assert!(plan.recipes.list[0].model.engine.allow_insecure_library);
    }

    #[test]
    fn config_errors_name_the_full_key_and_the_reason() {
        let (key, reason) = invalid(&format!("{MINIMAL}[gpio]\npulse_ms = \"long\"\n"));
        assert_eq!(key, "gpio.pulse_ms");
        assert!(reason.contains("invalid type"), "{reason}");

        let (key, reason) = invalid(&format!("{MINIMAL}[gpio]\npluse_ms = 5\n"));
        assert_eq!(key, "gpio.pluse_ms");
        assert!(reason.contains("unknown field `pluse_ms`"), "{reason}");

        let (key, reason) = invalid(&format!("{MINIMAL}[gpio.safe_state]\nreddy = true\n"));
        assert_eq!(key, "gpio.safe_state.reddy");
        assert!(reason.contains("reddy"), "{reason}");

        let (key, reason) = invalid(&format!("{MINIMAL}[trigger]\nmode = \"sometimes\"\n"));
        assert_eq!(key, "trigger.mode");
        assert!(reason.contains("sometimes"), "{reason}");

        let (key, reason) =
            invalid(&MINIMAL.replace("kind = \"directory\"", "kind = \"camera\"\ndevice = 0\nfps = -3"));
        assert_eq!(key, "source.fps");
        assert!(reason.contains("invalid value"), "{reason}");

        let (key, _) = invalid(&format!("{MINIMAL}[trigger]\nmode = \"interval\"\ninterval_ms = 0\n"));
        assert_eq!(key, "trigger.interval_ms");

        let (key, reason) = invalid(&format!("{MINIMAL}[trigger]\nmode = \"gpio\"\n"));
        assert_eq!(key, "gpio.kind");
        assert!(reason.contains("chardev"), "{reason}");

        let (key, _) = invalid(&format!(
            "{MINIMAL}[display]\nkind = \"framebuffer\"\ndevice = \"fb\"\nbits_per_pixel = 12\nwidth = 4\nheight = 4\n"
        ));
        assert_eq!(key, "display.bits_per_pixel");

        let (key, _) = invalid(&format!("{MINIMAL}[gpio]\nkind = \"chardev\"\n"));
        assert_eq!(key, "gpio.chip");

        let (key, _) = invalid(&MINIMAL.replace("[source]", "calibrate_from = \"good\"\n[source]"));
        assert_eq!(key, "model.calibrate_from", "the station no longer calibrates on its own");

        let (key, _) = invalid(&MINIMAL.replace("state_dir = \"state\"", ""));
        assert_eq!(key, "state_dir");

        let (key, _) = invalid("state_dir = \"s\"\n[model]\npath = 3\n");
        assert_eq!(key, "model.path");

        let (key, reason) = invalid("[model\npath = 3\n");
        assert_eq!(key, "line 1");
        assert!(!reason.is_empty());
        let (key, reason) = invalid("state_dir = \"s\"\n[model]\npath = \"m\"\npath = \"n\"\n");
        assert_eq!(key, "line 4", "a duplicate key: {reason}");
    }

    #[test]
    fn a_safe_state_that_asserts_pass_or_ready_is_refused() {
        // Regression: `ready = true, pass = true, fail = false` signalled every ERROR as PASS.
        for safe in ["pass = true", "ready = true", "ready = true\npass = true\nfail = false"] {
            let (key, reason) = invalid(&format!("{MINIMAL}[gpio.safe_state]\n{safe}\n"));
            assert_eq!(key, "gpio.safe_state");
            assert!(reason.contains("PASS and READY"), "{reason}");
        }
        assert!(parse(&format!("{MINIMAL}[gpio.safe_state]\nfail = false\n")).is_ok(), "FAIL may be left low");
    }

    #[test]
    fn every_number_is_bounded_and_the_error_names_the_key() {
        // Regression: pulse_ms = 2^63-1 blocked forever; a display width of 2^27 wrapped.
        for (section, key, value) in [
            ("gpio", "pulse_ms", "9223372036854775807"),
            ("gpio", "pulse_ms", "0"),
            ("gpio", "loop_deadline_ms", "10"),
            ("log", "max_bytes", "0"),
            ("log", "max_images", "0"),
            ("trigger", "interval_ms", "99999999999"),
            ("trigger", "delay_ms", "10001"),
            ("trigger", "frame_timeout_ms", "0"),
        ] {
            let mode = if key == "interval_ms" { "mode = \"interval\"\n" } else { "" };
            let extra = if section == "log" { "failures_dir = \"f\"\n" } else { "" };
            let (found, reason) = invalid(&format!("{MINIMAL}[{section}]\n{mode}{extra}{key} = {value}\n"));
            assert_eq!(found, format!("{section}.{key}"), "{reason}");
            assert!(reason.contains("outside"), "{reason}");
        }
        let (key, _) = invalid(&format!(
            "{MINIMAL}[display]\nkind = \"framebuffer\"\ndevice = \"fb\"\nwidth = 134217728\nheight = 2\nbits_per_pixel = 32\n"
        ));
        assert_eq!(key, "display.width");
        let (key, _) =
            invalid(&MINIMAL.replace("[model]\npath = \"m.onnx\"", "[model]\npath = \"m.onnx\"\nthreshold = -1"));
        assert_eq!(key, "model.threshold");
        let (key, _) = invalid(&format!(
            "{MINIMAL}[gpio]\nkind = \"chardev\"\nchip = \"/dev/gpiochip0\"\npass_line = 3\nfail_line = 3\nready_line = 4\n"
        ));
        assert_eq!(key, "gpio.pass_line", "two outputs on one line");
        // A region whose far edge no frame can reach.
        let (key, _) = invalid(&format!("{MINIMAL}[roi]\nx = 30000\ny = 0\nwidth = 4000\nheight = 10\n"));
        assert_eq!(key, "roi.width");
    }
}
