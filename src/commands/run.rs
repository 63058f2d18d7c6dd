//! `clipada run --config station.toml`: the inspection station until its source ends or it is
//! stopped (SIGTERM, SIGINT), as two processes: this one, the supervisor, owns the verdict
//! lines; the inspection loop runs in a worker process started from the same binary
//! (`clipada run --config … --worker`), connected by a socket on the worker's standard input
//! (`station::supervisor` says why).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::station::assemble;
use crate::station::plan::StationPlan;
use crate::station::supervisor::{Ended, Supervisor, SupervisorLink};
use crate::station::watchdog::Notifier;
use crate::station::{RunSummary, Station, STOP_WITHIN};

/// How long a stopped worker gets to end by itself before it is killed: the rest of
/// [`STOP_WITHIN`] is the supervisor's own.
const WORKER_GRACE: Duration = Duration::from_millis(60);
/// How long a worker that closed its socket gets to exit before it is killed.
const WORKER_EXIT: Duration = Duration::from_secs(2);

/// The supervisor: loads and checks `config` (with `recipe` active at start, if given), locks
/// the state folder, claims the lines in the safe state, starts the worker (`clipada`, this
/// program, `run --worker`) and drives the lines for it until it ends or `stop` is set. An error when the configuration is refused, or when
/// the worker failed or died. At the end it writes to `out` the verdicts the lines showed (the
/// worker's own summary may be lost: a stopped worker that does not end in time is killed).
pub fn run(
    config: &Path,
    recipe: Option<&str>,
    clipada: &Path,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let plan = StationPlan::load_starting(config, recipe)?;
    let _state = assemble::lock_state(&plan)?;
    let lines = assemble::lines(&plan)?;
    let (ours, theirs) = UnixStream::pair().context("cannot make the worker's socket")?;
    let mut supervisor = Supervisor::new(lines, ours, plan.lines.loop_deadline)
        .with_context(|| format!("{}: `gpio`: cannot put the lines in the safe state", plan.file.display()))?;
    if let Some((gate, encoder)) = assemble::reject_gate(&plan)? {
        supervisor.reject_at(gate, encoder);
    }
    match Notifier::from_env() {
        Ok(notifier) => supervisor.supervised_by(notifier),
        Err(e) => tracing::warn!("{e}: not reporting to systemd"),
    }
    let mut worker = Command::new(clipada)
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(recipe.map(|name| ["--recipe", name]).into_iter().flatten())
        .arg("--worker")
        .args(crate::logging::flag(tracing::level_filters::LevelFilter::current()))
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .context("cannot start the worker")?;
    let ended = supervisor.run(&stop);
    let status = end_worker(&mut worker, ended)?;
    let tally = supervisor.tally();
    writeln!(
        out,
        "lines showed {} verdicts: {} pass, {} fail, {} error",
        tally.frames(),
        tally.pass,
        tally.fail,
        tally.error
    )
    .context("stdout")?;
    match (ended, status.success()) {
        (Ended::Stopped, _) | (Ended::WorkerGone, true) => Ok(()),
        (Ended::WorkerGone, false) => {
            anyhow::bail!("the inspection loop ended: {status} (the lines are in the safe state)")
        }
    }
}

/// Ends the worker: asked to stop (SIGTERM) and killed after [`WORKER_GRACE`] when the
/// supervisor was stopped; given [`WORKER_EXIT`] to exit when it closed its socket.
fn end_worker(worker: &mut Child, ended: Ended) -> anyhow::Result<ExitStatus> {
    let pid = rustix::process::Pid::from_child(worker);
    let grace = match ended {
        Ended::Stopped => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            WORKER_GRACE
        }
        Ended::WorkerGone => WORKER_EXIT,
    };
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Some(status) = worker.try_wait().context("waiting for the worker")? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = worker.kill();
    worker.wait().context("waiting for the worker")
}

/// The worker: the inspection loop, reaching the lines through the supervisor on its standard
/// input. Logs what goes wrong, and writes a summary line to `out` at the end.
pub fn worker(
    config: &Path,
    recipe: Option<&str>,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> anyhow::Result<RunSummary> {
    // Should the supervisor die, so does the worker: nothing would drive the lines.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .context("cannot follow the supervisor")?;
    let socket = std::io::stdin().as_fd().try_clone_to_owned().context("no supervisor socket on standard input")?;
    let mut link = SupervisorLink::new(UnixStream::from(socket));
    let plan = StationPlan::load_starting(config, recipe)?;
    let mut models: Vec<String> = Vec::new();
    for recipe in &plan.recipes.list {
        let name = recipe.model.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if !models.contains(&name) {
            models.push(name);
        }
    }
    let models = models.join(", ");
    link.status(&format!("starting: loading {models}, with memories (a first start may calibrate or build engines)"))?;
    let parts = assemble::parts(&plan, stop.clone())?;
    let summary = Station::new(parts, link).run(&stop)?;
    writeln!(
        out,
        "{} frames: {} pass, {} fail, {} error; {} failed parts not saved, {} log lines lost, \
         {} frames exposed before their trigger discarded, {} missed triggers, {} failed self-tests, \
         {} drift warnings, {} results dropped from the MQTT queue",
        summary.frames,
        summary.passed,
        summary.failed,
        summary.errors,
        summary.images_dropped,
        summary.log_failures,
        summary.stale_frames,
        summary.missed_triggers,
        summary.self_test_failures,
        summary.drift_warnings,
        summary.mqtt_dropped
    )
    .context("stdout")?;
    Ok(summary)
}

// The worker's grace must leave the supervisor time to notice the stop and reap it.
const _: () = assert!(WORKER_GRACE.as_millis() + 20 < STOP_WITHIN.as_millis());
