//! Building a station from its plan: the supervisor's lines, the worker's parts, and both ends
//! run in one process (`run_in_process`, for tests and embeddings).
//!
//! Every start-up refusal names the configuration file and key at fault.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::lines::{NoLine, Output, Recorder, RecordingPin, VerdictLines, OUTPUT_NAMES};
use super::log::{FailureArchive, PartIds, ResultLog};
use super::plan::{InputPlan, OutputsPlan, SourcePlan, StationPlan, TriggerPlan};
use super::reject::{EncoderCounter, Gate};
use super::supervisor;
use super::trigger::{EdgeSource, ScriptedInput, Trigger, TriggerListener};
use super::{RunSummary, Station, StationParts};
use crate::model::ModelFile;
use crate::pipeline::{Extractor, Inspector, Memory};
use crate::sink::framebuffer::Framebuffer;
use crate::source::directory::DirectorySource;
use crate::source::files::read_gray;
use crate::source::FrameSource;
use crate::storage::owned::{FolderKind, OwnedDir};

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
    })
}

/// The worker's parts: the model (with its memory and threshold), source, trigger, display and
/// logs. `stop` also cuts short a camera's reconnect waits.
pub fn parts(plan: &StationPlan, stop: Arc<AtomicBool>) -> anyhow::Result<StationParts> {
    let file = plan.file.display();
    let model = &plan.model;
    let model_file = ModelFile::open(&model.path).with_context(|| format!("{file}: `model.path`"))?;
    let memory =
        model.memory.as_deref().map(Memory::read).transpose().with_context(|| format!("{file}: `model.memory`"))?;
    let extractor = Extractor::load(&model_file, &model.engine).with_context(|| format!("{file}: `model`"))?;
    let mut inspector = Inspector::new(extractor, model.refine, memory.as_ref(), model.threshold)
        .with_context(|| format!("{file}: `model.memory` or `model.threshold`"))?;
    let roi = plan.roi.as_ref().map(|r| r.rect);
    if let Some(mask) = plan.roi.as_ref().and_then(|r| r.ignore_mask.as_ref()) {
        let image = read_gray(mask).with_context(|| format!("{file}: `roi.ignore_mask`"))?;
        inspector
            .set_ignore_mask(&image)
            .map_err(|e| anyhow::anyhow!("{file}: `roi.ignore_mask`: {}: {e}", mask.display()))?;
    }
    let source: Box<dyn FrameSource> = match &plan.source {
        SourcePlan::Directory { path, looping } => {
            Box::new(DirectorySource::open(path, *looping).with_context(|| format!("{file}: `source.path`"))?)
        }
        SourcePlan::Camera(settings) => camera(settings.clone(), stop).with_context(|| format!("{file}: `source`"))?,
    };
    let trigger = match &plan.trigger {
        TriggerPlan::FreeRun => Trigger::FreeRun,
        TriggerPlan::Interval(period) => Trigger::Interval { period: *period, next: None },
        TriggerPlan::Input { input, edge, debounce, on_busy } => {
            let source = input_source(plan, input, *debounce, "trigger")?;
            let listener = TriggerListener::start(source, *edge, *debounce, *on_busy)
                .with_context(|| format!("{file}: `gpio.trigger_line`"))?;
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
    let memory_sha256 = memory.as_ref().and_then(|m| m.sha256.clone());
    let archive = plan
        .failures
        .as_ref()
        .map(|f| FailureArchive::open(&f.dir, f.max_images, f.max_bytes))
        .transpose()
        .with_context(|| format!("{file}: `log.failures_dir`"))?;
    Ok(StationParts {
        inspector,
        source,
        trigger,
        freshness: plan.freshness,
        roi,
        display,
        results,
        archive,
        part_ids: Some(part_ids),
        memory_sha256,
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
