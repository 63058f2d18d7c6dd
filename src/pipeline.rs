//! One frame, end to end: preprocess, run the engine, score, judge.
//!
//! Owns the per-frame buffers (input tensor, raw outputs, maps), allocated once when the
//! inspector is built. Knows nothing of where frames come from or where results go.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::memory::file::{self as memory_file, MemoryFileError};
use crate::memory::MemoryBank;
use crate::model::backend::{load_engine_logged, EngineConfig, EngineLoadError};
use crate::model::{Engine, EngineError, ModelError, ModelFile, ModelSpec, RawOutputs};
use crate::preprocess::Preprocessor;
use crate::score::{AnomalyMap, ScoreError, Scorer};
use crate::verdict::Verdict;

/// How frames are judged.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InspectOptions {
    /// Skip the anomaly region refinement.
    pub no_refine: bool,
    /// Decision threshold; `None` takes the memory's, else the model's.
    pub threshold: Option<f32>,
    /// Memory file of good parts (`clipada calibrate`), for the memory branch.
    pub memory: Option<PathBuf>,
    /// Which engine runs the model.
    pub engine: EngineConfig,
}

/// Why an inspector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The model file.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The memory file.
    #[error(transparent)]
    Memory(#[from] MemoryFileError),
    /// No engine could run the model.
    #[error("no engine: {0}")]
    Engine(String),
}

impl From<EngineLoadError> for LoadError {
    fn from(e: EngineLoadError) -> Self {
        match e {
            EngineLoadError::Model(e) => LoadError::Model(e),
            EngineLoadError::Unavailable(why) | EngineLoadError::Config(why) => LoadError::Engine(why),
        }
    }
}

/// Why a frame could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The engine failed on this frame.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The outputs could not be scored.
    #[error(transparent)]
    Score(#[from] ScoreError),
}

/// The outcome for one judged frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// Image anomaly score.
    pub score: f32,
    /// PASS or FAIL against the threshold.
    pub verdict: Verdict,
}

/// How long each stage of the last frame took.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StageTimes {
    /// Resize and normalise.
    pub preprocess: Duration,
    /// The engine's run.
    pub inference: Duration,
    /// Raw outputs to map and score.
    pub scoring: Duration,
}

/// Judges frames with one model; reuses all its buffers.
pub struct Inspector {
    times: StageTimes,
    engine_name: &'static str,
    spec: ModelSpec,
    engine: Box<dyn Engine>,
    preprocessor: Preprocessor,
    raw: RawOutputs,
    scorer: Scorer,
    threshold: f32,
}

impl Inspector {
    /// An inspector running `spec`'s model on `engine`, with an optional memory bank. The
    /// threshold is `threshold`, else the memory's, else the model's default.
    pub fn new(
        spec: ModelSpec,
        engine: Box<dyn Engine>,
        no_refine: bool,
        threshold: Option<f32>,
        memory: Option<MemoryBank>,
    ) -> Self {
        let threshold = threshold.or(memory.as_ref().and_then(|m| m.threshold)).unwrap_or(spec.score.threshold);
        Inspector {
            times: StageTimes::default(),
            engine_name: "custom",
            preprocessor: Preprocessor::new(&spec.input),
            raw: RawOutputs::for_spec(&spec),
            scorer: Scorer::new(&spec, !no_refine, memory),
            threshold,
            engine,
            spec,
        }
    }

    /// Loads the model at `path` on the configured engine, and the memory file if one is given.
    pub fn load(path: &Path, options: &InspectOptions) -> Result<Self, LoadError> {
        let file = ModelFile::open(path)?;
        let memory = match &options.memory {
            Some(memory_path) => {
                let bank = memory_file::read(memory_path)?;
                memory_file::check_model(memory_path, &bank, &file.spec.name, &file.sha256)?;
                Some(bank)
            }
            None => None,
        };
        let chosen = load_engine_logged(&file, &options.engine)?;
        let engine_name = chosen.name;
        let mut inspector = Inspector::new(file.spec, chosen.engine, options.no_refine, options.threshold, memory);
        inspector.engine_name = engine_name;
        Ok(inspector)
    }

    /// Runs the model on one frame without scoring; returns its raw outputs.
    pub fn extract(&mut self, frame: &RgbImage) -> Result<&RawOutputs, EngineError> {
        let started = Instant::now();
        let input = self.preprocessor.run(frame);
        let preprocessed = Instant::now();
        let run = self.engine.run(input, &mut self.raw);
        self.times.preprocess = preprocessed - started;
        self.times.inference = preprocessed.elapsed();
        run?;
        Ok(&self.raw)
    }

    /// Judges one frame; on success the anomaly map is available from [`Inspector::map`].
    pub fn inspect(&mut self, frame: &RgbImage) -> Result<Judgement, InspectError> {
        self.extract(frame)?;
        let started = Instant::now();
        let score = self.scorer.score(&self.raw);
        self.times.scoring = started.elapsed();
        let score = score?;
        Ok(Judgement { score, verdict: Verdict::judge(score, self.threshold) })
    }

    /// Never reports anomalies where `mask` is black: the mask (any size, stretched over the
    /// frame as judged) weights the anomaly map before the image score.
    pub fn set_ignore_mask(&mut self, mask: &image::GrayImage) {
        let [h, w] = self.spec.input.size;
        let resized = image::imageops::resize(mask, w as u32, h as u32, image::imageops::FilterType::Triangle);
        self.scorer.set_ignore_mask(Some(resized.pixels().map(|p| p.0[0] as f32 / 255.0).collect()));
    }

    /// Stage durations of the last frame.
    pub fn stage_times(&self) -> StageTimes {
        self.times
    }

    /// The last judged frame's anomaly map (model input resolution).
    pub fn map(&self) -> AnomalyMap<'_> {
        self.scorer.map()
    }

    /// The decision threshold in force.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The engine running the model (`tract`, `ort`).
    pub fn engine_name(&self) -> &'static str {
        self.engine_name
    }

    /// The model's contract.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }
}
