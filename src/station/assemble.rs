//! Building a station from its plan: the supervisor's lines, the worker's parts, and both ends
//! run in one process (`run_in_process`, for tests and embeddings).
//!
//! Every start-up refusal names the configuration file and key at fault.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::control::ControlServer;
use super::lines::{NoLine, Output, Recorder, RecordingPin, VerdictLines, OUTPUT_NAMES};
use super::log::{FailureArchive, PartIds, Provenance, ResultLog};
use super::monitor::DriftWatch;
use super::plan::{InputPlan, InputsPlan, OutputsPlan, SourcePlan, StationPlan, TriggerPlan};
use super::recipe::{Recipe, RecipeName, RecipeTag, Recipes, Reference, ScriptedSelect, SelectInput};
use super::reject::{EncoderCounter, Gate};
use super::status::StatusBoard;
use super::supervisor;
use super::trigger::{EdgeSource, RemoteInput, ScriptedInput, Trigger, TriggerListener};
use super::{RunSummary, Station, StationParts};
use crate::hmi::{Hmi, StationFacts};
use crate::model::ModelFile;
use crate::pipeline::{Extractor, Judge, Memory};
use crate::plant::{Plant, RecipeChoices};
use crate::sink::framebuffer::Framebuffer;
use crate::source::directory::DirectorySource;
use crate::source::files::{read_gray, read_image};
use crate::source::FrameSource;
use crate::storage::owned::{FolderKind, OwnedDir};
use crate::verdict::Verdict;

/// Claims the station's state folder and holds its lock: one station per folder.
pub(crate) fn lock_state(plan: &StationPlan) -> anyhow::Result<OwnedDir> {
    let key = |k: &str| format!("{}: `{k}`", plan.file.display());
    let state = OwnedDir::claim(&plan.state_dir, FolderKind::State).with_context(|| key("state_dir"))?;
    state.lock().with_context(|| key("state_dir"))?;
    Ok(state)
}

/// The outputs the plan asks for (PASS, FAIL, READY, BUSY, RESULT-VALID), requested at the
/// safe state's levels.
pub fn lines(plan: &StationPlan) -> anyhow::Result<VerdictLines> {
    let settings = plan.lines.settings;
    let key = |k: &str| format!("{}: `gpio.{k}`", plan.file.display());
    let outputs: [Output; 5] = match &plan.lines.outputs {
        OutputsPlan::None => std::array::from_fn(|_| Box::new(NoLine) as Output),
        OutputsPlan::Recording(path) => {
            let recorder = Recorder::create(path).with_context(|| key("record"))?;
            OUTPUT_NAMES.map(|name| Box::new(RecordingPin::new(name, recorder.clone())) as Output)
        }
        OutputsPlan::Chardev { chip, lines, handshake } => {
            chardev_outputs(chip, *lines, *handshake, settings).with_context(|| key("chip"))?
        }
    };
    Ok(VerdictLines::new(outputs, settings))
}

#[cfg(all(feature = "gpio", target_os = "linux"))]
fn chardev_outputs(
    chip: &std::path::Path,
    [pass, fail, ready]: [u32; 3],
    [busy, valid]: [Option<u32>; 2],
    settings: super::lines::LineSettings,
) -> anyhow::Result<[Output; 5]> {
    use super::lines::chardev::ChardevLine;
    let safe = settings.safe;
    // The physical level of each line in the safe state, from the first instant (BUSY
    // asserted, RESULT-VALID not).
    let level = |asserted: bool| asserted != settings.active_low;
    let optional = |line: Option<u32>, asserted: bool| -> anyhow::Result<Output> {
        Ok(match line {
            Some(offset) => Box::new(ChardevLine::output(chip, offset, level(asserted))?),
            None => Box::new(NoLine),
        })
    };
    Ok([
        Box::new(ChardevLine::output(chip, pass, level(safe.pass))?),
        Box::new(ChardevLine::output(chip, fail, level(safe.fail))?),
        Box::new(ChardevLine::output(chip, ready, level(safe.ready))?),
        optional(busy, true)?,
        optional(valid, false)?,
    ])
}

#[cfg(not(all(feature = "gpio", target_os = "linux")))]
fn chardev_outputs(
    _: &std::path::Path,
    _: [u32; 3],
    _: [Option<u32>; 2],
    _: super::lines::LineSettings,
) -> anyhow::Result<[Output; 5]> {
    anyhow::bail!("this clipada was built without the `gpio` feature (Linux only)")
}

/// The reject gate the plan asks for, with its ENCODER counter (started now), if any.
pub fn reject_gate(plan: &StationPlan) -> anyhow::Result<Option<(Gate, Option<EncoderCounter>)>> {
    let Some(reject) = &plan.reject else { return Ok(None) };
    let file = plan.file.display();
    let encoder = match &reject.encoder {
        None => None,
        Some(input) => {
            let source = input_source(plan, input, Duration::ZERO, "encoder")?;
            Some(EncoderCounter::start(source).with_context(|| format!("{file}: `gpio.encoder_line`"))?)
        }
    };
    Ok(Some((Gate::new(reject.slot), encoder)))
}

/// The edge source of an input (`what`: `trigger` or `encoder`), debounced by the kernel by
/// `debounce` where it is a chip's line.
fn input_source(
    plan: &StationPlan,
    input: &InputPlan,
    debounce: Duration,
    what: &str,
) -> anyhow::Result<Box<dyn EdgeSource>> {
    let file = plan.file.display();
    Ok(match input {
        InputPlan::Script(path) => {
            Box::new(ScriptedInput::read(path).with_context(|| format!("{file}: `gpio.{what}_script`"))?)
        }
        InputPlan::Line(line) => {
            let OutputsPlan::Chardev { chip, .. } = &plan.lines.outputs else {
                anyhow::bail!("{file}: `gpio.kind`: the {what} input needs chardev lines");
            };
            input_edges(chip, *line, debounce).with_context(|| format!("{file}: `gpio.{what}_line`"))?
        }
        InputPlan::Modbus => anyhow::bail!("{file}: the {what} input cannot be a Modbus coil"),
    })
}

/// The recipes of `plan`: every recipe's model loaded once (recipes with the same model file
/// share its engine), memory, threshold, region, ignore mask and reference parts; the select
/// inputs, if any. Each refusal names the file and the recipe's key.
pub fn recipes(plan: &StationPlan) -> anyhow::Result<Recipes> {
    let file = plan.file.display();
    let single = plan.recipes.list.len() == 1 && plan.recipes.list[0].name == "default";
    // The key of a recipe's setting: `model.memory` for the one from `[model]`, else
    // `recipe[i].memory` (a recipe that takes `[model]`'s still names its own entry).
    let key = |i: usize, section: &str, name: &str| {
        if single {
            format!("{file}: `{section}.{name}`")
        } else {
            format!("{file}: `recipe[{i}].{name}`")
        }
    };
    let mut engines: Vec<(std::path::PathBuf, Extractor)> = Vec::new();
    let mut list = Vec::with_capacity(plan.recipes.list.len());
    for (i, recipe) in plan.recipes.list.iter().enumerate() {
        let model = &recipe.model;
        let engine = match engines.iter().position(|(path, _)| *path == model.path) {
            Some(engine) => engine,
            None => {
                let model_file = ModelFile::open(&model.path).with_context(|| key(i, "model", "path"))?;
                let extractor = Extractor::load(&model_file, &model.engine).with_context(|| key(i, "model", "path"))?;
                engines.push((model.path.clone(), extractor));
                engines.len() - 1
            }
        };
        let extractor = &engines[engine].1;
        let memory =
            model.memory.as_deref().map(Memory::read).transpose().with_context(|| key(i, "model", "memory"))?;
        let mut judge = Judge::new(extractor, model.refine, memory.as_ref(), model.threshold)
            .with_context(|| key(i, "model", "threshold"))?;
        if let Some(mask) = recipe.roi.as_ref().and_then(|r| r.ignore_mask.as_ref()) {
            let image = read_gray(mask).with_context(|| key(i, "roi", "ignore_mask"))?;
            judge
                .set_ignore_mask(extractor.spec().input.size, &image)
                .map_err(|e| anyhow::anyhow!("{}: {}: {e}", key(i, "roi", "ignore_mask"), mask.display()))?;
        }
        let references = recipe
            .references
            .iter()
            .map(|(path, expected)| {
                let which = if *expected == Verdict::Pass { "reference_good" } else { "reference_defect" };
                let image = read_image(path).with_context(|| key(i, "recipe", which))?;
                Ok(Reference { path: path.clone(), image, expected: *expected })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let threshold = judge.threshold().value();
        let drift = memory
            .as_ref()
            .and_then(|m| DriftWatch::new(&m.bank.good_scores, threshold, plan.drift.window, plan.drift.bound));
        if drift.is_none() {
            tracing::info!(
                "recipe {}: no calibration scores below its threshold: its drift is not watched",
                recipe.name
            );
        }
        let tag = RecipeTag {
            name: RecipeName::try_from(recipe.name.as_str())
                .map_err(|_| anyhow::anyhow!("{}: too long", key(i, "recipe", "name")))?,
            // At most 64 recipes (the plan's limit).
            number: i as u16 + 1,
            provenance: Provenance::of(extractor, memory.as_ref().and_then(|m| m.sha256.as_deref())),
            threshold,
        };
        list.push(Recipe {
            tag,
            code: recipe.code,
            engine,
            judge,
            roi: recipe.roi.as_ref().map(|r| r.rect),
            slot: recipe.slot,
            references,
            drift,
            fault: None,
            good_scores: memory.as_ref().map_or_else(Vec::new, |m| m.bank.good_scores.clone()),
        });
    }
    let select: Option<Box<dyn SelectInput>> = match &plan.recipes.select {
        None => None,
        Some(InputsPlan::Script(path)) => {
            Some(Box::new(ScriptedSelect::read(path).with_context(|| format!("{file}: `recipes.select_script`"))?))
        }
        Some(InputsPlan::Lines(lines)) => {
            let OutputsPlan::Chardev { chip, .. } = &plan.lines.outputs else {
                anyhow::bail!("{file}: `recipes.select_lines`: the select lines need chardev lines");
            };
            Some(select_lines(chip, lines).with_context(|| format!("{file}: `recipes.select_lines`"))?)
        }
    };
    let engines = engines.into_iter().map(|(_, extractor)| extractor).collect();
    Ok(Recipes::new(engines, list, plan.recipes.start, select))
}

/// The worker's parts: the recipes (models, memories, thresholds), source, trigger, display,
/// logs and the control socket. `stop` also cuts short a camera's reconnect waits.
pub fn parts(plan: &StationPlan, stop: Arc<AtomicBool>) -> anyhow::Result<StationParts> {
    let file = plan.file.display();
    let recipes = recipes(plan)?;
    let source = source(plan, stop)?;
    // The PLC's trigger coil sends to the listener through `remote`.
    let mut remote = None;
    let trigger = match &plan.trigger {
        TriggerPlan::FreeRun => Trigger::FreeRun,
        TriggerPlan::Interval(period) => Trigger::Interval { period: *period, next: None },
        TriggerPlan::Input { input, edge, debounce, on_busy } => {
            let (source, key): (Box<dyn EdgeSource>, _) = match input {
                InputPlan::Modbus => {
                    let (sender, input) = RemoteInput::new();
                    remote = Some(sender);
                    (Box::new(input), "trigger.mode")
                }
                input => (input_source(plan, input, *debounce, "trigger")?, "gpio.trigger_line"),
            };
            let listener = TriggerListener::start(source, *edge, *debounce, *on_busy)
                .with_context(|| format!("{file}: `{key}`"))?;
            Trigger::Input(listener)
        }
    };
    let display = plan
        .display
        .as_ref()
        .map(|d| Framebuffer::open(&d.device, d.geometry))
        .transpose()
        .with_context(|| format!("{file}: `display.device`"))?;
    let results = plan
        .results
        .as_ref()
        .map(|(path, rotation)| ResultLog::open(path, *rotation))
        .transpose()
        .with_context(|| format!("{file}: `log.results`"))?;
    let part_ids = PartIds::open(&plan.state_dir).with_context(|| format!("{file}: `state_dir`"))?;
    let control = ControlServer::bind(&plan.state_dir).with_context(|| format!("{file}: `state_dir`"))?;
    let archive = plan
        .failures
        .as_ref()
        .map(|f| FailureArchive::open(&f.dir, f.max_images, f.max_bytes))
        .transpose()
        .with_context(|| format!("{file}: `log.failures_dir`"))?;
    let board = (plan.plant.any() || plan.http.is_some())
        .then(|| Arc::new(StatusBoard::new(plan.plant.queue(), plan.http.is_some())));
    let plant = match (&board, plan.plant.any()) {
        (Some(board), true) => Some(
            Plant::start(&plan.plant, board.clone(), remote, RecipeChoices(recipes.plant_choices()))
                .with_context(|| format!("{file}: `[modbus]`, `[mqtt]`"))?,
        ),
        _ => None,
    };
    let hmi = match (&board, &plan.http) {
        (Some(board), Some(settings)) => {
            let facts = StationFacts::of(plan, |i| {
                let info = recipes.engine(i).info();
                [info.engine, info.provider, info.precision.name()]
            });
            Some(Hmi::start(settings, board.clone(), facts).with_context(|| format!("{file}: `[http]`"))?)
        }
        _ => None,
    };
    Ok(StationParts {
        recipes,
        plant,
        hmi,
        board,
        source,
        trigger,
        freshness: plan.freshness,
        display,
        results,
        archive,
        part_ids: Some(part_ids),
        control: Some(control),
        self_test_every: plan.self_test_every,
    })
}

/// The frame source of `plan`; `stop` cuts short a camera's reconnect waits.
pub fn source(plan: &StationPlan, stop: Arc<AtomicBool>) -> anyhow::Result<Box<dyn FrameSource>> {
    let file = plan.file.display();
    Ok(match &plan.source {
        SourcePlan::Directory { path, looping } => {
            Box::new(DirectorySource::open(path, *looping).with_context(|| format!("{file}: `source.path`"))?)
        }
        SourcePlan::Camera(settings) => camera(settings.clone(), stop).with_context(|| format!("{file}: `source`"))?,
    })
}

#[cfg(feature = "camera")]
fn camera(
    settings: crate::source::camera::CameraSettings,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Box<dyn FrameSource>> {
    Ok(Box::new(crate::source::camera::CameraSource::open(settings, stop)?))
}

#[cfg(not(feature = "camera"))]
fn camera(_: crate::source::camera::CameraSettings, _: Arc<AtomicBool>) -> anyhow::Result<Box<dyn FrameSource>> {
    anyhow::bail!("this clipada was built without the `camera` feature")
}

#[cfg(all(feature = "gpio", target_os = "linux"))]
fn select_lines(chip: &std::path::Path, lines: &[u32]) -> anyhow::Result<Box<dyn SelectInput>> {
    Ok(Box::new(super::lines::chardev::ChardevSelect::open(chip, lines)?))
}

#[cfg(not(all(feature = "gpio", target_os = "linux")))]
fn select_lines(_: &std::path::Path, _: &[u32]) -> anyhow::Result<Box<dyn SelectInput>> {
    anyhow::bail!("this clipada was built without the `gpio` feature (Linux only)")
}

#[cfg(all(feature = "gpio", target_os = "linux"))]
fn input_edges(chip: &std::path::Path, line: u32, debounce: Duration) -> anyhow::Result<Box<dyn EdgeSource>> {
    Ok(Box::new(super::lines::chardev::ChardevEdges::open(chip, line, debounce)?))
}

#[cfg(not(all(feature = "gpio", target_os = "linux")))]
fn input_edges(_: &std::path::Path, _: u32, _: Duration) -> anyhow::Result<Box<dyn EdgeSource>> {
    anyhow::bail!("this clipada was built without the `gpio` feature (Linux only)")
}

/// Runs the station of `plan` with both ends in this process: the supervisor on a thread of
/// its own (its problems to stderr), the loop on this one, until the source ends or `stop` is
/// set; `edit` may swap parts once they are built (tests put in failing sources). The lines end
/// in the safe state.
pub fn run_in_process(
    plan: &StationPlan,
    stop: Arc<AtomicBool>,
    edit: &mut dyn FnMut(&mut StationParts),
) -> anyhow::Result<RunSummary> {
    let _state = lock_state(plan)?;
    let (mut supervisor, link) = supervisor::pair(lines(plan)?, plan.lines.loop_deadline)?;
    if let Some((gate, encoder)) = reject_gate(plan)? {
        supervisor.reject_at(gate, encoder);
    }
    let stop_supervisor = stop.clone();
    let thread = std::thread::spawn(move || supervisor.run(&stop_supervisor));
    let result = parts(plan, stop.clone()).and_then(|mut parts| {
        edit(&mut parts);
        Station::new(parts, link).run(&stop)
    });
    // The loop's end closed its link: the supervisor ends on that (after the last result's
    // handshake), or at once on the stop flag.
    let _ = thread.join();
    result
}
