//! Command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use clipada::calibration::DEFAULT_MEMORY_SIZE;
use clipada::commands::{bench, calibrate, demo, eval, infer};
use clipada::eval::EvalOptions;
use clipada::pipeline::InspectOptions;

/// Exit code when some image could not be judged (or its overlay not written).
const EXIT_INCOMPLETE: u8 = 2;

#[derive(Parser)]
#[command(name = "clipada", version, about = "CLIP-ADA anomaly detection for inspection cameras")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Judge image files: one line per image, `PATH SCORE VERDICT` (or JSON).
    Infer {
        /// The ONNX model with clipada contract metadata.
        #[arg(long)]
        model: PathBuf,
        /// Decision threshold on the image score (default: the model's).
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
        /// Write one overlay PNG per input here.
        #[arg(long)]
        overlay_dir: Option<PathBuf>,
        /// Image files or directories (searched recursively for png, jpg, jpeg, bmp).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Store a memory of good parts (patch features) and a threshold for a model.
    Calibrate {
        /// The ONNX model with clipada contract metadata.
        #[arg(long)]
        model: PathBuf,
        /// Folder of good images (searched recursively).
        #[arg(long)]
        good: PathBuf,
        /// The memory file to write.
        #[arg(long)]
        out: PathBuf,
        /// Patches kept (greedy coreset).
        #[arg(long, default_value_t = DEFAULT_MEMORY_SIZE)]
        memory_size: usize,
        /// Derive the threshold without refinement (when infer will run with --no-refine).
        #[arg(long)]
        no_refine: bool,
    },
    /// Metrics on a dataset in the MVTec AD layout (calibrating from each category's train/good).
    Eval {
        /// The ONNX model with clipada contract metadata.
        #[arg(long)]
        model: PathBuf,
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
        /// The ONNX model with clipada contract metadata.
        #[arg(long)]
        model: PathBuf,
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
    /// Calibrate the shipped model on the shipped good samples, judge the test samples, write overlays.
    Demo {
        /// Where to write the memory file and the overlays.
        #[arg(long, default_value_os_t = demo::default_output_dir())]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    let result = match cli.command {
        Command::Infer { model, threshold, no_refine, memory, json, overlay_dir, inputs } => {
            let inspect = InspectOptions { no_refine, threshold, memory };
            infer::infer(&infer::InferOptions { model, inspect, json, overlay_dir, inputs }, &mut out, &mut err)
        }
        Command::Demo { output } => demo::demo(&output, &mut out, &mut err),
        Command::Calibrate { model, good, out: file, memory_size, no_refine } => {
            let options = calibrate::CalibrateOptions { model, good, out: file, memory_size, no_refine };
            calibrate::calibrate(&options, &mut out).map(|_| Default::default())
        }
        Command::Bench { model, memory, images, no_refine, warmup, iterations, json } => {
            let inspect = InspectOptions { no_refine, threshold: None, memory };
            let options = bench::BenchOptions { model, inspect, images, warmup, iterations };
            bench::bench(&options, json, &mut out).map(|_| Default::default())
        }
        Command::Eval { model, dataset, categories, shots, no_refine, memory_size, json } => {
            let options = EvalOptions { model, dataset, categories, shots, no_refine, memory_size };
            eval::eval(&options, json, &mut out).map(|_| Default::default())
        }
    };
    match result {
        Ok(summary) if summary.complete() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_INCOMPLETE),
        Err(e) => {
            eprintln!("clipada: {e:#}");
            ExitCode::FAILURE
        }
    }
}
