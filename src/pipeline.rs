//! One frame, end to end: preprocess, run the engine, score, judge.
//!
//! Owns the per-frame buffers (input tensor, raw outputs, maps), allocated once when the
//! inspector is built. Knows nothing of where frames come from or where results go.

use std::path::Path;

use image::RgbImage;

use crate::model::tract::TractEngine;
use crate::model::{Engine, EngineError, ModelError, ModelFile, ModelSpec, RawOutputs};
use crate::preprocess::Preprocessor;
use crate::score::{AnomalyMap, ScoreError, Scorer};
use crate::verdict::Verdict;

/// How frames are judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InspectOptions {
    /// Apply the anomaly region refinement (where the model has it).
    pub refine: bool,
    /// Decision threshold; `None` takes the model's default.
    pub threshold: Option<f32>,
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions { refine: true, threshold: None }
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

/// Judges frames with one model; reuses all its buffers.
pub struct Inspector {
    spec: ModelSpec,
    engine: Box<dyn Engine>,
    preprocessor: Preprocessor,
    raw: RawOutputs,
    scorer: Scorer,
    threshold: f32,
}

impl Inspector {
    /// An inspector running `spec`'s model on `engine`.
    pub fn new(spec: ModelSpec, engine: Box<dyn Engine>, options: InspectOptions) -> Self {
        Inspector {
            preprocessor: Preprocessor::new(&spec.input),
            raw: RawOutputs::for_spec(&spec),
            scorer: Scorer::new(&spec, options.refine),
            threshold: options.threshold.unwrap_or(spec.score.threshold),
            engine,
            spec,
        }
    }

    /// Loads the model at `path` on the tract engine.
    pub fn load(path: &Path, options: InspectOptions) -> Result<Self, ModelError> {
        let file = ModelFile::open(path)?;
        let engine = TractEngine::load(&file)?;
        Ok(Inspector::new(file.spec, Box::new(engine), options))
    }

    /// Judges one frame; on success the anomaly map is available from [`Inspector::map`].
    pub fn inspect(&mut self, frame: &RgbImage) -> Result<Judgement, InspectError> {
        let input = self.preprocessor.run(frame);
        self.engine.run(input, &mut self.raw)?;
        let score = self.scorer.score(&self.raw)?;
        Ok(Judgement { score, verdict: Verdict::judge(score, self.threshold) })
    }

    /// The last judged frame's anomaly map (model input resolution).
    pub fn map(&self) -> AnomalyMap<'_> {
        self.scorer.map()
    }

    /// The last frame's raw model outputs.
    pub fn raw_outputs(&self) -> &RawOutputs {
        &self.raw
    }

    /// The decision threshold in force.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The model's contract.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }
}
