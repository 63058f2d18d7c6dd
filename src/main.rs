//! Command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use clipada::commands::{demo, infer};
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
    /// Run the shipped model on the shipped sample images and write overlays.
    Demo {
        /// Where to write the overlays.
        #[arg(long, default_value_os_t = demo::default_overlay_dir())]
        overlay_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    let result = match cli.command {
        Command::Infer { model, threshold, no_refine, json, overlay_dir, inputs } => {
            let inspect = InspectOptions { refine: !no_refine, threshold };
            infer::infer(&infer::InferOptions { model, inspect, json, overlay_dir, inputs }, &mut out, &mut err)
        }
        Command::Demo { overlay_dir } => demo::demo(&overlay_dir, &mut out, &mut err),
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
