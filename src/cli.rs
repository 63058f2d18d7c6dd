//! The command line: its arguments (clap), and running the command they name. `main.rs` parses
//! and calls [`main`]; everything else lives in the library's modules. The application edge:
//! errors become messages and exit codes here.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::calibration::DEFAULT_MEMORY_SIZE;
use crate::commands::{bench, calibrate, capture, check, control, demo, eval, infer, run};
use crate::eval::EvalOptions;
use crate::model::backend::{Backend, EngineConfig};
use crate::pipeline::InspectOptions;
use crate::progress::Progress;

/// Exit code when the command ran but some image was not judged (or its overlay not written).
/// (1: it could not run, naming the file and field; 2: the command line was wrong.)
const EXIT_INCOMPLETE: u8 = 3;

/// clipada's command line.
#[derive(Parser)]
#[command(name = "clipada", version, about = "CLIP-ADA anomaly detection for inspection cameras")]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More detail in the log (debug; twice: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Less in the log (warnings and errors; twice: errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    quiet: u8,
}

/// Which engine runs the model.
#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// ONNX Runtime if its library loads (ORT_DYLIB_PATH), else tract.
    Auto,
    /// ONNX Runtime only.
    Ort,
    /// tract only.
    Tract,
}

/// The model and the engine that runs it.
#[derive(Args)]
struct ModelArgs {
    /// The ONNX model with clipada contract metadata.
    #[arg(long)]
    model: PathBuf,
    /// Engine: ONNX Runtime if it loads (library from ORT_DYLIB_PATH), else tract; or insist on one.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Load the ONNX Runtime library even when others than root could change it (or a folder
    /// above it): for a library in your own virtual environment, never on a station.
    #[arg(long)]
    allow_insecure_library: bool,
}

impl ModelArgs {
    /// The engine settings of a command-line run: TensorRT engines are cached in the user's
    /// own cache folder, never the service's.
    fn engine(&self) -> EngineConfig {
        let backend = match self.backend {
            BackendArg::Auto => Backend::Auto,
            BackendArg::Ort => Backend::Ort,
            BackendArg::Tract => Backend::Tract,
        };
        let mut config =
            EngineConfig { backend, allow_insecure_library: self.allow_insecure_library, ..EngineConfig::default() };
        config.tensorrt.engine_cache = user_engine_cache(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"));
        config
    }
}

/// The user's own TensorRT engine cache, `clipada/tensorrt` under `$XDG_CACHE_HOME`, else under
/// `$HOME/.cache`: only when the folder it starts from belongs to the running user and none of
/// the folders below it that exist is a link or another's. Root running with another user's
/// `HOME` would otherwise follow that user's links, or make folders the user cannot change.
fn user_engine_cache(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |v: OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let (base, below): (PathBuf, &[&str]) = match (xdg_cache_home.and_then(absolute), home.and_then(absolute)) {
        (Some(cache), _) => (cache, &["clipada", "tensorrt"]),
        (None, Some(home)) => (home, &[".cache", "clipada", "tensorrt"]),
        (None, None) => return None,
    };
    let user = rustix::process::geteuid().as_raw();
    let own = |m: &std::fs::Metadata| m.is_dir() && crate::storage::trust::only_changed_by(user, m.uid(), m.mode());
    let not_own = |path: &std::path::Path| {
        tracing::debug!("no TensorRT engine cache: {} is not this user's own folder", path.display());
        None
    };
    if !std::fs::metadata(&base).is_ok_and(|m| own(&m)) {
        return not_own(&base);
    }
    let mut path = base;
    let mut exists = true;
    for part in below {
        path.push(part);
        if exists {
            match std::fs::symlink_metadata(&path) {
                Ok(m) if own(&m) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => exists = false,
                _ => return not_own(&path),
            }
        }
    }
    Some(path)
}

#[derive(Subcommand)]
enum Command {
    /// Judge image files: one line per image, `PATH SCORE VERDICT` (or JSON).
    Infer {
        #[command(flatten)]
        model: ModelArgs,
        /// Decision threshold on the image score, in (0, the score range] (default: the memory's,
        /// else the model's).
        #[arg(long)]
        threshold: Option<f32>,
        /// Skip the anomaly region refinement.
        #[arg(long)]
        no_refine: bool,
        /// Memory of good parts made by `clipada calibrate` (needed by feature-only models).
        #[arg(long)]
        memory: Option<PathBuf>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Write one overlay PNG per input here (a new, empty or clipada overlay folder).
        #[arg(long)]
        overlay_dir: Option<PathBuf>,
        /// Write each judged input's anomaly map (model input resolution, float32) here as .npy.
        #[arg(long)]
        maps_dir: Option<PathBuf>,
        /// Image files or directories (searched recursively for png, jpg, jpeg, bmp).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Store a memory of good parts (patch features) and a threshold for a model.
    Calibrate {
        #[command(flatten)]
        model: ModelArgs,
        /// Folder of good images (searched recursively).
        #[arg(long)]
        good: PathBuf,
        /// The memory file to write (an existing file there must be a memory file).
        #[arg(long)]
        out: PathBuf,
        /// Patches kept (greedy coreset).
        #[arg(long, default_value_t = DEFAULT_MEMORY_SIZE)]
        memory_size: usize,
        /// Derive the threshold without refinement (when infer will run with --no-refine).
        #[arg(long)]
        no_refine: bool,
        /// Keep good images that score far above the others (by default calibration refuses
        /// them: one defective part among the good ones would let its defect pass).
        #[arg(long)]
        keep_outliers: bool,
    },
    /// Metrics on a dataset in the MVTec AD layout (calibrating from each category's train/good).
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        /// Dataset root: ROOT/CATEGORY/{train/good, test/*, ground_truth/*}.
        #[arg(long)]
        dataset: PathBuf,
        /// Category to evaluate (repeatable; default: all).
        #[arg(long = "category")]
        categories: Vec<String>,
        /// Calibrate from K train/good images spread evenly (default: all).
        #[arg(long)]
        shots: Option<usize>,
        /// Skip the anomaly region refinement.
        #[arg(long)]
        no_refine: bool,
        /// Patches kept in memory (greedy coreset).
        #[arg(long, default_value_t = DEFAULT_MEMORY_SIZE)]
        memory_size: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Per-stage times (preprocess, inference, scoring, overlay): median and p99 after a warm-up.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Memory of good parts made by `clipada calibrate`.
        #[arg(long)]
        memory: Option<PathBuf>,
        /// Folder of images to cycle through (default: one synthetic 640x480 frame).
        #[arg(long)]
        images: Option<PathBuf>,
        /// Skip the anomaly region refinement.
        #[arg(long)]
        no_refine: bool,
        /// Untimed frames first.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// Timed frames.
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Load a model, run one input, and say which engine and provider ran it (exit 0 only if it ran).
    Check {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Calibrate the shipped model on the shipped good samples, judge the test samples, write overlays.
    Demo {
        /// Where to write the memory file and the overlays.
        #[arg(long, default_value_os_t = demo::default_output_dir())]
        output: PathBuf,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of clipada and its subcommands.
    Manual,
    /// Run the inspection station: camera or folder in, display, GPIO and logs out, until the
    /// source ends or SIGTERM/SIGINT.
    Run {
        /// The station's TOML configuration (see board/examples).
        #[arg(long)]
        config: PathBuf,
        /// The recipe active at start (default: `recipes.start`, else the first).
        #[arg(long)]
        recipe: Option<String>,
        /// Internal: run as the inspection loop of a supervising `clipada run`.
        #[arg(long, hide = true)]
        worker: bool,
    },
    /// Take good images for calibration from a station's own source (its camera), cropped to
    /// the recipe's region as the station judges them, while the station is not running.
    Capture {
        /// The station's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// The recipe whose region is cropped (default: the one active at start).
        #[arg(long)]
        recipe: Option<String>,
        /// Images to take (1 to 1000).
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// The folder they go to (new, empty, or an earlier capture's).
        #[arg(long)]
        out: PathBuf,
    },
    /// Send a request to a running station (its control socket, in its state folder): `recipe
    /// NAME` (from the next part), `self-test`, `acknowledge` (a failed self-test) or `status`.
    Control {
        /// The running station's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// The request and its argument.
        #[arg(required = true, num_args = 1..=2)]
        request: Vec<String>,
    },
}

/// The manual page of clipada followed by one per subcommand, in roff.
fn manual(out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let command = Cli::command().long_version(crate::commands::version::describe());
    clap_mangen::Man::new(command.clone()).render(out).context("stdout")?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("clipada-{}", sub.get_name());
        clap_mangen::Man::new(sub.clone().name(name)).render(out).context("stdout")?;
    }
    Ok(())
}

/// Signals that keep their own meaning: those the kernel sends for a fault in this process
/// (returning from a handler would repeat the fault) or that cannot be caught, those ignored
/// by default, SIGPIPE (ignored, as Rust sets it: a closed pipe is an error on that write) and
/// SIGXFSZ (ignored here: a file past its size limit is an error on that write).
const OWN_MEANING: [i32; 12] = {
    use libc::*;
    [SIGKILL, SIGSTOP, SIGILL, SIGFPE, SIGSEGV, SIGBUS, SIGPIPE, SIGXFSZ, SIGCHLD, SIGCONT, SIGURG, SIGWINCH]
};

/// Every other signal, real-time ones included: by default each would end or suspend the
/// process without putting the lines in their safe state (SIGPWR from a UPS, SIGXCPU from a
/// limit, SIGTSTP from a terminal…); here each sets the stop flag, so the program stops the way
/// SIGTERM stops it.
fn stop_signals() -> impl Iterator<Item = i32> {
    // 32 up to SIGRTMIN are the C library's own (threads, timers).
    let reserved = 32..libc::SIGRTMIN();
    (1..=libc::SIGRTMAX()).filter(move |signal| !OWN_MEANING.contains(signal) && !reserved.contains(signal))
}

/// A stop flag set by any of [`stop_signals`]; SIGXFSZ ignored.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in stop_signals() {
        signal_hook::flag::register(signal, stop.clone()).with_context(|| format!("cannot handle signal {signal}"))?;
    }
    // SAFETY: setting a signal's disposition to "ignore" runs no code in the handler context.
    if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
        anyhow::bail!("cannot ignore SIGXFSZ");
    }
    Ok(stop)
}

/// A progress bar on standard error (indicatif), one per stage; nothing when standard error
/// is not a terminal or the results are JSON.
struct TerminalProgress {
    bar: Option<(String, indicatif::ProgressBar)>,
    shown: bool,
}

impl TerminalProgress {
    fn new(json: bool) -> TerminalProgress {
        TerminalProgress { bar: None, shown: !json && std::io::stderr().is_terminal() }
    }
}

impl Progress for TerminalProgress {
    fn update(&mut self, stage: &str, done: usize, total: usize) {
        if !self.shown {
            return;
        }
        if self.bar.as_ref().is_none_or(|(current, _)| current != stage) {
            self.finish();
            let bar = indicatif::ProgressBar::new(total as u64);
            let style = indicatif::ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {eta}")
                .expect("a fixed, valid template")
                .progress_chars("#>-");
            bar.set_style(style);
            bar.set_message(stage.to_string());
            self.bar = Some((stage.to_string(), bar));
        }
        if let Some((_, bar)) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    }

    fn finish(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Refuses to print results to a standard output that was closed when the program started:
/// the Rust runtime then puts `/dev/null`, opened read-write, in its place, and the results
/// would be lost without a word. (A shell's `> /dev/null` opens it write-only: that choice is
/// the user's.)
fn require_stdout() -> anyhow::Result<()> {
    use rustix::fs::{fstat, stat, FileType, OFlags};
    let closed = || anyhow::anyhow!("standard output is closed: results would be lost");
    let out = std::io::stdout();
    let flags = rustix::fs::fcntl_getfl(&out).map_err(|_| closed())?;
    let (Ok(ours), Ok(null)) = (fstat(&out), stat("/dev/null")) else { return Ok(()) };
    let is_null = FileType::from_raw_mode(ours.st_mode) == FileType::CharacterDevice && ours.st_rdev == null.st_rdev;
    if is_null && flags & OFlags::RWMODE == OFlags::RDWR {
        return Err(closed());
    }
    Ok(())
}

/// Runs the command; `Ok(false)` when it completed but some input was not judged.
fn dispatch(command: Command) -> anyhow::Result<bool> {
    if !matches!(command, Command::Run { .. }) {
        require_stdout()?;
    }
    let mut out = std::io::stdout().lock();
    match command {
        Command::Infer { model, threshold, no_refine, memory, json, overlay_dir, maps_dir, inputs } => {
            let inspect = InspectOptions { no_refine, threshold, memory, engine: model.engine() };
            let options = infer::InferOptions { model: model.model, inspect, json, overlay_dir, maps_dir, inputs };
            Ok(infer::infer(&options, &mut out)?.complete())
        }
        Command::Calibrate { model, good, out: file, memory_size, no_refine, keep_outliers } => {
            let engine = model.engine();
            let options = calibrate::CalibrateOptions {
                model: model.model,
                good,
                out: file,
                memory_size,
                no_refine,
                keep_outliers,
                engine,
            };
            let stop = stop_on_signals()?;
            calibrate::calibrate(&options, &stop, &mut TerminalProgress::new(false), &mut out).map(|_| true)
        }
        Command::Eval { model, dataset, categories, shots, no_refine, memory_size, json } => {
            let engine = model.engine();
            let options =
                EvalOptions { model: model.model, dataset, categories, shots, no_refine, memory_size, engine };
            eval::eval(&options, json, &mut TerminalProgress::new(json), &mut out).map(|_| true)
        }
        Command::Bench { model, memory, images, no_refine, warmup, iterations, json } => {
            let inspect = InspectOptions { no_refine, threshold: None, memory, engine: model.engine() };
            let options = bench::BenchOptions { model: model.model, inspect, images, warmup, iterations };
            bench::bench(&options, json, &mut TerminalProgress::new(json), &mut out).map(|_| true)
        }
        Command::Check { model } => check::check(&model.model, &model.engine(), &mut out).map(|_| true),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "clipada", &mut out);
            Ok(true)
        }
        Command::Manual => manual(&mut out).map(|()| true),
        Command::Demo { output } => Ok(demo::demo(&output, &mut out)?.complete()),
        Command::Run { config, recipe, worker: false } => {
            // First thing: from here on SIGTERM means the safe state, not death (before this,
            // nothing is claimed, and death leaves the lines as the kernel had them).
            let stop = stop_on_signals()?;
            let clipada = std::env::current_exe().context("cannot find this program to start the worker")?;
            run::run(&config, recipe.as_deref(), &clipada, stop, &mut out).map(|()| true)
        }
        Command::Run { config, recipe, worker: true } => {
            run::worker(&config, recipe.as_deref(), stop_on_signals()?, &mut out).map(|_| true)
        }
        Command::Capture { config, recipe, count, out: folder } => {
            let options = capture::CaptureOptions { config, recipe, count, out: folder };
            capture::capture(&options, stop_on_signals()?, &mut out).map(|_| true)
        }
        Command::Control { config, request } => control::control(&config, &request.join(" "), &mut out).map(|()| true),
    }
}

/// Parses the command line and runs the command: exit 0 done, 1 could not run (the message
/// names the file and field), 2 the command line is wrong (clap), 3 some input not judged.
pub fn main() -> ExitCode {
    crate::process::set_up();
    // Describing the version loads ONNX Runtime: only when it is asked for, never for a run.
    let asks_version = std::env::args_os().skip(1).any(|a| a == "--version" || a == "-V");
    let cli =
        if asks_version { Cli::command().long_version(crate::commands::version::describe()) } else { Cli::command() };
    let cli = match cli.try_get_matches().and_then(|matches| Cli::from_arg_matches(&matches)) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = crate::logging::init(crate::logging::level(cli.verbose, cli.quiet)) {
        let _ = writeln!(std::io::stderr(), "clipada: {e}");
        return ExitCode::FAILURE;
    }
    match dispatch(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_INCOMPLETE),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_cache_is_used_only_in_the_users_own_folders_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let cache = |xdg: Option<&std::path::Path>, home: &std::path::Path| {
            user_engine_cache(xdg.map(|p| p.as_os_str().to_owned()), Some(home.as_os_str().to_owned()))
        };
        assert_eq!(cache(None, &home), Some(home.join(".cache/clipada/tensorrt")));
        assert_eq!(cache(Some(&dir.path().join("xdg")), &home), None, "a missing XDG_CACHE_HOME is no one's");
        assert_eq!(cache(Some(&home), &home), Some(home.join("clipada/tensorrt")));
        assert_eq!(user_engine_cache(Some("relative".into()), Some("also".into())), None);
        // A link planted where the cache would be: never followed.
        std::fs::create_dir(home.join(".cache")).unwrap();
        std::os::unix::fs::symlink(dir.path(), home.join(".cache/clipada")).unwrap();
        assert_eq!(cache(None, &home), None);
        // A home others may write (or another user's: the same test as for its owner).
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        assert_eq!(cache(None, &shared), None);
    }
}
