//! Commissioning from the operator interface, one job at a time on a thread of its own:
//! capture good images from the station's own camera (the judged images of the next parts),
//! calibrate a memory from them (the leave-one-out scores and the margin shown before anything
//! changes), put it in place, add a wrongly rejected part to the memory ("this part is good"),
//! and undo.
//!
//! A memory is put in place by writing the recipe's memory file atomically after keeping the
//! file it replaces in `<state_dir>/memory-versions` (the newest [`KEPT_VERSIONS`] per recipe),
//! then handing it to the loop through the board, which judges with it from the next part;
//! should the loop refuse it, the previous file is written back. Undo puts the newest kept
//! version back the same way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

use super::live::Live;
use super::server::Shared;
use super::RecipeSetup;
use crate::calibration::{self, Pass};
use crate::commands::capture::save_capture;
use crate::memory::file as memory_file;
use crate::model::ModelFile;
use crate::pipeline::{Extractor, Memory};
use crate::station::status::{lock, MemorySwap, StatusBoard};
use crate::storage::owned::{replace_file, replaceable, FileKind, FolderKind, OwnedDir};
use crate::storage::read::read_regular;
use crate::verdict::Verdict;

/// Most images one capture takes.
pub(crate) const MAX_CAPTURE: usize = 1000;
/// Images a capture takes unless asked for another number.
const DEFAULT_CAPTURE: usize = 20;
/// A capture with no part judged for this long gives up.
const CAPTURE_IDLE: Duration = Duration::from_secs(300);
/// Memory versions kept per recipe for undo.
pub(crate) const KEPT_VERSIONS: usize = 10;
/// How long a change waits for the loop to take a new memory.
const SWAP_WAIT: Duration = Duration::from_secs(15);
/// Largest memory file read back for versions and undo.
const MAX_MEMORY_BYTES: u64 = 1 << 31;
/// How far "this part is good" may raise a recipe's threshold without being told it may (a
/// factor): a real defect marked good by mistake would let its kind pass from then on.
pub(crate) const MAX_THRESHOLD_RISE: f32 = 1.5;
/// The folder of kept memories, in the state folder.
const VERSIONS: &str = "memory-versions";
/// The calibrated memory waiting to be put in place, in the commissioning folder.
const CANDIDATE: &str = "candidate.memory";

/// Why an action is refused: the status and the reason.
pub(crate) type Refusal = (StatusCode, String);

/// What the commissioning job is doing or did, as `/api/v1/commissioning` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Job {
    /// A job runs now.
    pub busy: bool,
    /// `idle`, `capturing`, `captured`, `calibrating`, `calibrated`, `applying`, `applied`,
    /// `marking`, `marked`, `undoing`, `undone` or `failed`.
    pub step: &'static str,
    /// The recipe it is for.
    pub recipe: Option<String>,
    /// Progress: done of total.
    pub done: usize,
    /// See `done`.
    pub total: usize,
    /// What happened, in words.
    pub message: String,
    /// Images captured and waiting for calibration.
    pub captured: usize,
    /// Those of them the memory in force judged FAIL (a capture takes the parts as they come:
    /// were they good after all?).
    pub captured_failed: Vec<String>,
    /// The calibration waiting to be put in place.
    pub calibration: Option<CalibrationReport>,
}

/// A calibration's outcome, shown before it is put in place.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CalibrationReport {
    /// Its recipe's index.
    #[serde(skip)]
    pub recipe: usize,
    /// The threshold it derived.
    pub threshold: f32,
    /// The recipe's threshold in force now, to compare.
    pub threshold_now: f32,
    /// The good images' leave-one-out scores, in capture order (outliers left out).
    pub good_scores: Vec<f32>,
    /// The highest of them.
    pub max_good: f32,
    /// How far the threshold lies above the worst good image, as a fraction of the threshold.
    pub margin: f32,
    /// Images left out as outliers, with their scores.
    pub outliers: Vec<(String, f32)>,
    /// Captured images the memory in force judged FAIL: putting the calibration in place needs
    /// the operator to say they are good (`accept_failed_captures`).
    pub failed_captures: Vec<String>,
    /// Patches kept.
    pub patches: usize,
}

/// The commissioning actions and their job.
pub(crate) struct Commissioning {
    board: Arc<StatusBoard>,
    live: Arc<Live>,
    recipes: Vec<RecipeSetup>,
    state_dir: PathBuf,
    job: Arc<Mutex<Job>>,
    stop: Arc<AtomicBool>,
}

impl Commissioning {
    /// Commissioning for the station of `facts`; its jobs end early once `stop` is set.
    pub(crate) fn new(
        board: Arc<StatusBoard>,
        live: Arc<Live>,
        facts: &super::StationFacts,
        stop: Arc<AtomicBool>,
    ) -> Commissioning {
        Commissioning {
            board,
            live,
            recipes: facts.recipes.clone(),
            state_dir: facts.state_dir.clone(),
            job: Arc::new(Mutex::new(Job { step: "idle", ..Job::default() })),
            stop,
        }
    }

    /// The job's state, with the undo versions kept per recipe.
    pub(crate) fn state(&self) -> Value {
        let job = lock(&self.job).clone();
        let versions: Vec<Value> = self
            .recipes
            .iter()
            .map(|r| json!({ "recipe": r.name, "undo_versions": self.versions(r).map_or(0, |v| v.len()), "memory": r.memory }))
            .collect();
        json!({ "job": job, "recipes": versions })
    }

    /// Starts the action named by `path` (under `/api/v1/`) with `body`.
    pub(crate) fn act(&self, shared: &Shared, path: &[&str], body: &Value) -> Result<Value, Refusal> {
        let recipe = self.recipe_of(body)?;
        match path {
            ["commissioning", "capture"] => {
                let count = match body.get("count") {
                    None => DEFAULT_CAPTURE,
                    Some(n) => n
                        .as_u64()
                        .map(|n| n as usize)
                        .filter(|n| (2..=MAX_CAPTURE).contains(n))
                        .ok_or_else(|| bad(format!("count: a whole number of images from 2 to {MAX_CAPTURE}")))?,
                };
                self.start("capturing", recipe, count, move |this, job| this.capture(recipe, count, job))
            }
            ["commissioning", "calibrate"] => {
                let captured = lock(&self.job).captured;
                if captured < 2 {
                    return Err(conflict("capture at least 2 good images first"));
                }
                self.start("calibrating", recipe, captured, move |this, job| this.calibrate(recipe, job))
            }
            ["commissioning", "apply"] => {
                let (waiting, failed) = {
                    let job = lock(&self.job);
                    let calibration = job.calibration.as_ref();
                    (calibration.map(|c| c.recipe), calibration.map_or(0, |c| c.failed_captures.len()))
                };
                if waiting != Some(recipe) {
                    return Err(conflict("no calibration of this recipe waits to be put in place: calibrate first"));
                }
                let accepted = match body.get("accept_failed_captures") {
                    None => false,
                    Some(Value::Bool(accepted)) => *accepted,
                    Some(_) => return Err(bad("accept_failed_captures: true or false")),
                };
                if failed > 0 && !accepted {
                    return Err(conflict(format!(
                        "{failed} of the captured images were judged FAIL by the memory in force: look at them \
                         (state_dir/commissioning); if they are good parts, apply with accept_failed_captures: true"
                    )));
                }
                self.needs_memory_file(recipe)?;
                self.start("applying", recipe, 1, move |this, _| this.apply(recipe))
            }
            ["memory", "undo"] => {
                self.needs_memory_file(recipe)?;
                if self.versions(&self.recipes[recipe]).is_none_or(|v| v.is_empty()) {
                    return Err(conflict("no earlier memory of this recipe is kept"));
                }
                self.start("undoing", recipe, 1, move |this, _| this.undo(recipe))
            }
            ["failures", stem, "good"] if super::api::archive_stem(stem) => {
                self.needs_memory_file(recipe)?;
                let Some(dir) = &shared.failures else {
                    return Err((StatusCode::NOT_FOUND, "this station keeps no failed parts".into()));
                };
                let name = format!("{stem}-frame.png");
                let bytes = dir
                    .read(&name, 64 << 20)
                    .map_err(|_| (StatusCode::NOT_FOUND, format!("no failed part {stem} in the archive")))?;
                let stem = stem.to_string();
                let allow_rise = match body.get("allow_threshold_rise") {
                    None => false,
                    Some(Value::Bool(allowed)) => *allowed,
                    Some(_) => return Err(bad("allow_threshold_rise: true or false")),
                };
                self.start("marking", recipe, 1, move |this, _| this.mark_good(recipe, &stem, &bytes, allow_rise))
            }
            _ => Err((StatusCode::NOT_FOUND, "no such action".into())),
        }
    }

    /// The recipe a request names (`"recipe"`), else the only one, else the next part's.
    fn recipe_of(&self, body: &Value) -> Result<usize, Refusal> {
        match body.get("recipe") {
            Some(Value::String(name)) => self
                .recipes
                .iter()
                .position(|r| r.name == *name)
                .ok_or_else(|| bad(format!("recipe: no recipe is named {name:?}"))),
            Some(_) => Err(bad("recipe: a recipe's name")),
            None if self.recipes.len() == 1 => Ok(0),
            None => Ok((self.board.status().recipe as usize).saturating_sub(1).min(self.recipes.len() - 1)),
        }
    }

    fn needs_memory_file(&self, recipe: usize) -> Result<(), Refusal> {
        match self.recipes[recipe].memory {
            Some(_) => Ok(()),
            None => Err(conflict(format!(
                "recipe {} has no memory file in the configuration (`model.memory`): commissioning writes that file",
                self.recipes[recipe].name
            ))),
        }
    }

    /// Runs `work` on a thread as the job `step` for `recipe`, unless a job runs.
    fn start(
        &self,
        step: &'static str,
        recipe: usize,
        total: usize,
        work: impl FnOnce(&Commissioning, &Mutex<Job>) -> Result<String, String> + Send + 'static,
    ) -> Result<Value, Refusal> {
        {
            let mut job = lock(&self.job);
            if job.busy {
                return Err(conflict(format!("a job is running ({}): wait for it", job.step)));
            }
            job.busy = true;
            job.step = step;
            job.recipe = Some(self.recipes[recipe].name.clone());
            (job.done, job.total) = (0, total);
            job.message.clear();
        }
        let this = Commissioning {
            board: self.board.clone(),
            live: self.live.clone(),
            recipes: self.recipes.clone(),
            state_dir: self.state_dir.clone(),
            job: self.job.clone(),
            stop: self.stop.clone(),
        };
        let spawned = std::thread::Builder::new().name("clipada-commission".into()).spawn(move || {
            // The loop comes first: this thread, and the engine threads it starts, at the lowest
            // priority (a thread's own on Linux; the engine's threads inherit it).
            // SAFETY: setpriority on this thread's own ID, no pointers.
            unsafe {
                let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, thread, 19);
            }
            let outcome = work(&this, &this.job);
            let mut job = lock(&this.job);
            job.busy = false;
            match outcome {
                Ok(message) => {
                    job.step = finished(job.step);
                    job.message = message;
                }
                Err(why) => {
                    tracing::warn!("operator interface: {} failed: {why}", job.step);
                    job.step = "failed";
                    job.message = why;
                }
            }
        });
        if let Err(e) = spawned {
            lock(&self.job).busy = false;
            return Err((StatusCode::SERVICE_UNAVAILABLE, format!("cannot start the job: {e}")));
        }
        Ok(json!({ "started": step, "state": "/api/v1/commissioning" }))
    }

    /// The commissioning folder (captures and the candidate memory).
    fn folder(&self) -> Result<OwnedDir, String> {
        OwnedDir::claim(&self.state_dir.join("commissioning"), FolderKind::Commissioning).map_err(|e| e.to_string())
    }

    /// Captures `count` judged images of `recipe`'s parts as `capture-NNNN.png`.
    fn capture(&self, recipe: usize, count: usize, job: &Mutex<Job>) -> Result<String, String> {
        let folder = self.folder()?;
        folder.clear().map_err(|e| e.to_string())?;
        {
            let mut job = lock(job);
            job.captured = 0;
            job.captured_failed.clear();
            job.calibration = None;
        }
        let (sink, images) = std::sync::mpsc::sync_channel(4);
        self.live.capture_to(Some(sink));
        self.board.want_judged_images(true);
        let number = self.recipes[recipe].number;
        let mut taken = 0;
        let mut last = Instant::now();
        let outcome = loop {
            if taken == count {
                break Ok(format!("{taken} images captured"));
            }
            if self.stop.load(Ordering::Relaxed) {
                break Err("the station stopped".to_string());
            }
            if last.elapsed() > CAPTURE_IDLE {
                break Err(format!("no part of this recipe was judged for {} s", CAPTURE_IDLE.as_secs()));
            }
            let Ok((of, verdict, image)) = images.recv_timeout(Duration::from_millis(100)) else { continue };
            if of != number {
                continue;
            }
            last = Instant::now();
            if let Err(e) = save_capture(&folder, taken + 1, &image) {
                break Err(format!("{e:#}"));
            }
            taken += 1;
            let mut job = lock(job);
            (job.done, job.captured) = (taken, taken);
            if verdict == Verdict::Fail {
                job.captured_failed.push(format!("capture-{taken:04}.png"));
            }
        };
        self.board.want_judged_images(false);
        self.live.capture_to(None);
        outcome
    }

    /// Calibrates a memory for `recipe` from the captured images into the candidate file.
    fn calibrate(&self, recipe: usize, job: &Mutex<Job>) -> Result<String, String> {
        let setup = &self.recipes[recipe];
        let folder = self.folder()?;
        let good: Vec<PathBuf> = folder
            .files()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|(name, _)| name.starts_with("capture-") && name.ends_with(".png"))
            .map(|(name, _)| folder.path().join(name))
            .collect();
        let model = ModelFile::open(&setup.model).map_err(|e| format!("{e:#}"))?;
        let mut extractor = Extractor::load(&model, &setup.engine).map_err(|e| format!("{e:#}"))?;
        // As large as the memory it replaces: the loop's time per part stays what it was.
        let memory_size = match &setup.memory {
            Some(path) => Memory::read(path).map_or(calibration::DEFAULT_MEMORY_SIZE, |m| m.bank.len()),
            None => calibration::DEFAULT_MEMORY_SIZE,
        };
        let settings = calibration::Settings {
            memory_size: memory_size.max(calibration::MIN_MEMORY_SIZE),
            refine: setup.refine,
            keep_outliers: false,
        };
        let total = good.len();
        let mut progress = |pass: Pass, done: usize, _: usize| {
            let mut job = lock(job);
            (job.done, job.total) = (if pass == Pass::Features { done } else { total + done }, 2 * total);
        };
        let result = calibration::calibrate(&mut extractor, &good, settings, &self.stop, &mut progress)
            .map_err(|e| e.to_string())?;
        let bank = &result.bank;
        let threshold = bank.threshold.ok_or("no threshold: capture at least 2 good images")?;
        let max_good = bank.good_scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        folder.write_atomic(Path::new(CANDIDATE), &memory_file::to_bytes(bank)).map_err(|e| e.to_string())?;
        let threshold_now = self.board.calibrations().get(recipe).map_or(f32::NAN, |c| c.threshold);
        let failed_captures = lock(job).captured_failed.clone();
        let report = CalibrationReport {
            recipe,
            threshold,
            threshold_now,
            good_scores: bank.good_scores.clone(),
            max_good,
            margin: (threshold - max_good) / threshold,
            outliers: result
                .outliers
                .iter()
                .map(|(p, s)| (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), *s))
                .collect(),
            patches: bank.len(),
            failed_captures,
        };
        let message = format!(
            "calibrated from {} images: threshold {threshold:.6} (now {threshold_now:.6}), worst good part {max_good:.6} ({:.1} % below it){}",
            bank.good_images,
            report.margin * 100.0,
            if report.outliers.is_empty() {
                String::new()
            } else {
                format!("; {} left out as outliers", report.outliers.len())
            }
        );
        let message = match report.failed_captures.len() {
            0 => message,
            n => format!(
                "{message}; WARNING: the memory in force judged {n} of the captured parts FAIL: if any is a defect, \
                 this memory would pass it (apply needs accept_failed_captures)"
            ),
        };
        lock(job).calibration = Some(report);
        Ok(message)
    }

    /// Puts the candidate memory in place for `recipe`.
    fn apply(&self, recipe: usize) -> Result<String, String> {
        let folder = self.folder()?;
        let bytes = folder.read(CANDIDATE, MAX_MEMORY_BYTES as usize).map_err(|e| e.to_string())?;
        memory_file::from_bytes(&folder.path().join(CANDIDATE), &bytes).map_err(|e| e.to_string())?;
        let outcome = self.put_in_place(recipe, &bytes, true)?;
        lock(&self.job).calibration = None;
        Ok(outcome)
    }

    /// Adds the failed part `stem` (its frame's PNG `bytes`) to `recipe`'s memory as good;
    /// refused, changing nothing, when that would raise the threshold more than
    /// [`MAX_THRESHOLD_RISE`] times unless `allow_rise`.
    fn mark_good(&self, recipe: usize, stem: &str, bytes: &[u8], allow_rise: bool) -> Result<String, String> {
        let setup = &self.recipes[recipe];
        let path = setup.memory.as_ref().ok_or("no memory file")?;
        let image = crate::source::decode::decode_rgb(bytes).map_err(|e| format!("{stem}: {e}"))?;
        let mut bank = Memory::read(path).map_err(|e| e.to_string())?.bank;
        let model = ModelFile::open(&setup.model).map_err(|e| format!("{e:#}"))?;
        let mut extractor = Extractor::load(&model, &setup.engine).map_err(|e| format!("{e:#}"))?;
        let added = calibration::add_good_part(&mut extractor, &mut bank, &image, Path::new(stem), &self.stop)
            .map_err(|e| e.to_string())?;
        if added.threshold_after > MAX_THRESHOLD_RISE * added.threshold_before && !allow_rise {
            return Err(format!(
                "nothing changed: part {stem} scores {:.6}, far above the good parts; as good it would raise the threshold from {:.6} to {:.6} (more than {MAX_THRESHOLD_RISE} times), and parts like it would pass from then on. Look at it again; if it is truly good, mark it again allowing the rise (allow_threshold_rise)",
                added.score_before, added.threshold_before, added.threshold_after
            ));
        }
        let outcome = self.put_in_place(recipe, &memory_file::to_bytes(&bank), true)?;
        Ok(format!(
            "part {stem} added as good ({} patches; it scored {:.6}, {:.6} against the other good parts): threshold {:.6} → {:.6}; {outcome}",
            added.patches_added, added.score_before, added.leave_one_out, added.threshold_before, added.threshold_after
        ))
    }

    /// Puts the newest kept memory of `recipe` that reads back in place; kept files that do
    /// not read are named and left alone.
    fn undo(&self, recipe: usize) -> Result<String, String> {
        let versions = self.versions(&self.recipes[recipe]).ok_or("no versions folder")?;
        let folder = self.versions_folder()?;
        let mut unreadable = Vec::new();
        for (_, name) in versions.iter().rev() {
            let path = folder.path().join(name);
            let bytes = match folder.read(name, MAX_MEMORY_BYTES as usize) {
                Ok(bytes) => bytes,
                Err(e) => {
                    unreadable.push(e.to_string());
                    continue;
                }
            };
            if let Err(e) = memory_file::from_bytes(&path, &bytes) {
                unreadable.push(e.to_string());
                continue;
            }
            let outcome = self.put_in_place(recipe, &bytes, false)?;
            folder.remove(name).map_err(|e| e.to_string())?;
            let skipped =
                if unreadable.is_empty() { String::new() } else { format!(" (skipped: {})", unreadable.join("; ")) };
            return Ok(format!("{name} put back: {outcome}{skipped}"));
        }
        Err(format!("no kept memory reads back: {}", unreadable.join("; ")))
    }

    fn versions_folder(&self) -> Result<OwnedDir, String> {
        OwnedDir::claim(&self.state_dir.join(VERSIONS), FolderKind::MemoryVersions).map_err(|e| e.to_string())
    }

    /// The kept versions of `recipe`'s memory with their numbers, oldest first (none kept
    /// before the folder is made); none when the folder cannot be had.
    fn versions(&self, recipe: &RecipeSetup) -> Option<Vec<(u64, String)>> {
        let prefix = format!("recipe-{}-", recipe.number);
        if std::fs::symlink_metadata(self.state_dir.join(VERSIONS)).is_err() {
            return Some(Vec::new());
        }
        let files = self.versions_folder().ok()?.files().ok()?;
        let mut versions: Vec<(u64, String)> = files
            .into_iter()
            .filter_map(|(name, _)| {
                let number = name.strip_prefix(&prefix)?.strip_suffix(".memory")?.parse().ok()?;
                Some((number, name))
            })
            .collect();
        versions.sort();
        Some(versions)
    }

    /// Writes `bytes` (a memory file) as `recipe`'s memory file, keeping the file it replaces
    /// (when `keep`), and has the loop judge with it; on a refusal the old file is put back. A
    /// change that fails leaves the memory file and the kept versions as they were.
    fn put_in_place(&self, recipe: usize, bytes: &[u8], keep: bool) -> Result<String, String> {
        let setup = &self.recipes[recipe];
        let path = setup.memory.as_ref().ok_or("no memory file")?;
        // Checked before anything is written: a file that does not read is never put in place.
        memory_file::from_bytes(path, bytes).map_err(|e| e.to_string())?;
        // Refused now (a link, not a memory file), before a version is kept for it.
        replaceable(path, FileKind::Memory).map_err(|e| e.to_string())?;
        let previous = read_regular(path, MAX_MEMORY_BYTES, "memory file").ok();
        let mut kept = None;
        if let (true, Some(previous)) = (keep, &previous) {
            let folder = self.versions_folder()?;
            // Numbered in the order kept, not by the clock (which may step back).
            let next = self.versions(setup).unwrap_or_default().last().map_or(1, |(number, _)| number + 1);
            let name = format!("recipe-{}-{next:010}.memory", setup.number);
            folder.write_atomic(Path::new(&name), previous).map_err(|e| e.to_string())?;
            kept = Some((folder, name));
        }
        if let Err(e) = replace_file(path, FileKind::Memory, bytes) {
            if let Some((folder, name)) = &kept {
                let _ = folder.remove(name);
            }
            return Err(e.to_string());
        }
        // The captures' verdicts came from the memory just replaced: they must be taken again.
        {
            let mut job = lock(&self.job);
            job.captured = 0;
            job.captured_failed.clear();
            job.calibration = None;
        }
        if let Some((folder, _)) = &kept {
            let versions = self.versions(setup).unwrap_or_default();
            for (_, old) in versions.iter().take(versions.len().saturating_sub(KEPT_VERSIONS)) {
                folder.remove(old).map_err(|e| e.to_string())?;
            }
        }
        match self.swap(recipe, path) {
            Ok(outcome) => Ok(outcome),
            // The request waits on the board: the loop takes it at its next part.
            Err(Swap::Unanswered) => Ok(format!(
                "{} written; the station judges with it from its next part (it did not answer within {} s)",
                path.display(),
                SWAP_WAIT.as_secs()
            )),
            Err(Swap::Refused(why)) => {
                if let Some((folder, name)) = &kept {
                    let _ = folder.remove(name);
                }
                match previous.map(|previous| replace_file(path, FileKind::Memory, &previous)) {
                    Some(Ok(())) => Err(format!("{why}; the previous memory file was put back")),
                    Some(Err(e)) => Err(format!("{why}; the previous memory file could not be put back: {e}")),
                    None => Err(why),
                }
            }
        }
    }

    /// Hands the memory file at `path` to the loop for `recipe` and waits for its answer.
    fn swap(&self, recipe: usize, path: &Path) -> Result<String, Swap> {
        let memory = Memory::read(path).map_err(|e| Swap::Refused(e.to_string()))?;
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        self.board.request_memory(MemorySwap { recipe, memory, threshold: self.recipes[recipe].threshold, done });
        match answer.recv_timeout(SWAP_WAIT) {
            Ok(outcome) => outcome.map_err(Swap::Refused),
            Err(_) => Err(Swap::Unanswered),
        }
    }
}

/// Why a memory swap did not happen (yet).
enum Swap {
    /// The loop (or reading the file back) refused it.
    Refused(String),
    /// The loop did not answer in time; the request waits for it.
    Unanswered,
}

/// The step a finished job's `step` becomes.
fn finished(step: &'static str) -> &'static str {
    match step {
        "capturing" => "captured",
        "calibrating" => "calibrated",
        "applying" => "applied",
        "marking" => "marked",
        "undoing" => "undone",
        other => other,
    }
}

fn bad(why: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, why.into())
}

fn conflict(why: impl Into<String>) -> Refusal {
    (StatusCode::CONFLICT, why.into())
}
