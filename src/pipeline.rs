//! One frame, end to end: preprocess, run the engine, score, judge.
//!
//! [`Extractor`] runs a model on frames (preprocess, engine, output checks): calibration uses it
//! alone. A [`Judge`] is the scorer and the decision threshold of one product; an [`Inspector`]
//! is an extractor with its judge, built from the extractor, so a station or an evaluation that
//! calibrates first loads the model and builds its engine once (a station's recipes share one
//! extractor per model among their judges). All own their per-frame buffers, allocated once. None
//! knows where frames come from or where results go.
//!
//! The threshold a verdict rests on is chosen here, in [`Judge::new`], and nowhere else: the
//! operator's (within the scorer's range), else the memory's (calibrated for this model file,
//! engine precision and scoring mode; a memory without one is refused), else the model's
//! contract (for its text branch, without a memory).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::memory::file::{self as memory_file, MemoryFileError};
use crate::memory::{MadeFor, MemoryBank};
use crate::model::backend::{load_engine, EngineConfig, EngineLoadError};
use crate::model::{Engine, EngineError, EngineInfo, ModelError, ModelFile, ModelSpec, RawOutputs};
use crate::preprocess::{PreprocessError, Preprocessor};
use crate::score::{validate_outputs, AnomalyMap, ScoreError, Scorer};
use crate::verdict::{Threshold, ThresholdSource, Verdict};

/// Least fraction of the judged image an ignore mask must leave inspected: a mask that hides
/// (nearly) everything would let every part pass unjudged.
pub const MIN_INSPECTED_FRACTION: f64 = 0.01;

/// How frames are judged.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InspectOptions {
    /// Skip the anomaly region refinement.
    pub no_refine: bool,
    /// The operator's decision threshold; `None` takes the memory's, else the model's.
    pub threshold: Option<f32>,
    /// Memory file of good parts (`clipada calibrate`), for the memory branch.
    pub memory: Option<PathBuf>,
    /// Which engine runs the model.
    pub engine: EngineConfig,
}

/// Why an inspector could not be built; each names the file (and field) at fault.
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
    /// No threshold a verdict could rest on.
    #[error("{0}")]
    Threshold(String),
}

impl From<EngineLoadError> for LoadError {
    fn from(e: EngineLoadError) -> Self {
        match e {
            EngineLoadError::Model(e) => LoadError::Model(e),
            EngineLoadError::Unavailable(why) | EngineLoadError::Config(why) => LoadError::Engine(why),
        }
    }
}

/// Why a frame could not be judged (its verdict is ERROR).
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The frame could not be made into the model's input.
    #[error(transparent)]
    Frame(#[from] PreprocessError),
    /// The engine failed on this frame.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The outputs could not be scored, or broke the contract.
    #[error(transparent)]
    Score(#[from] ScoreError),
    /// A judge was handed another model's (or precision's) extractor than its own.
    #[error("the judge was made for another model or precision than the engine's")]
    Extractor,
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

/// Runs a model on frames: preprocessing, the engine, and the check of its outputs.
pub struct Extractor {
    spec: ModelSpec,
    model_sha256: String,
    engine: Box<dyn Engine>,
    preprocessor: Preprocessor,
    raw: RawOutputs,
    times: StageTimes,
}

impl Extractor {
    /// Runs the model `spec` (whose file has SHA-256 `model_sha256`) on `engine`.
    pub fn new(spec: ModelSpec, model_sha256: String, engine: Box<dyn Engine>) -> Self {
        Extractor {
            preprocessor: Preprocessor::new(&spec.input),
            raw: RawOutputs::for_spec(&spec),
            times: StageTimes::default(),
            spec,
            model_sha256,
            engine,
        }
    }

    /// Loads `file` on the engine `config` asks for; logs (warn) why engines or providers
    /// before the chosen one were skipped.
    pub fn load(file: &ModelFile, config: &EngineConfig) -> Result<Self, LoadError> {
        let chosen = load_engine(file, config)?;
        for why in &chosen.skipped {
            tracing::warn!("{why}");
        }
        let info = chosen.engine.info();
        let path = file.path.display();
        tracing::debug!(
            engine = info.engine,
            provider = info.provider,
            precision = info.precision.name(),
            "{path}: loaded"
        );
        Ok(Extractor::new(file.spec.clone(), file.sha256.clone(), chosen.engine))
    }

    /// Runs the model on one frame; returns its raw outputs, checked (finite, unit-length
    /// features: [`validate_outputs`]).
    pub(crate) fn extract(&mut self, frame: &RgbImage) -> Result<&RawOutputs, InspectError> {
        let started = Instant::now();
        let input = self.preprocessor.run(frame)?;
        let preprocessed = Instant::now();
        let run = self.engine.run(input, &mut self.raw);
        self.times.preprocess = preprocessed - started;
        self.times.inference = preprocessed.elapsed();
        run?;
        validate_outputs(&self.raw, self.spec.feature_dim)?;
        Ok(&self.raw)
    }

    /// The model's contract.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The engine running the model.
    pub fn info(&self) -> EngineInfo {
        self.engine.info()
    }

    /// The SHA-256 (hex) of the model file.
    pub fn model_sha256(&self) -> &str {
        &self.model_sha256
    }

    /// What a memory made (or used) with this extractor, scoring with or without `refine`,
    /// is for.
    pub fn made_for(&self, refine: bool) -> MadeFor {
        MadeFor {
            model_sha256: self.model_sha256.clone(),
            model_name: self.spec.name.clone(),
            precision: self.engine.info().precision.name().to_string(),
            refine,
        }
    }

    /// Stage durations of the last frame.
    pub(crate) fn stage_times(&self) -> StageTimes {
        self.times
    }
}

/// A memory of good parts and where it came from (a file, or a calibration just run), for messages.
#[derive(Debug, Clone)]
pub struct Memory {
    /// The bank.
    pub bank: MemoryBank,
    /// Its file.
    pub path: PathBuf,
    /// The SHA-256 (hex) of the file read; none for a calibration just run.
    pub sha256: Option<String>,
}

impl Memory {
    /// Reads the memory file at `path`.
    pub fn read(path: &Path) -> Result<Memory, MemoryFileError> {
        let (bank, sha256) = memory_file::read_hashed(path)?;
        Ok(Memory { bank, path: path.to_path_buf(), sha256: Some(sha256) })
    }
}

/// One judged frame: its score, verdict, and the anomaly map (model input resolution).
#[derive(Debug, Clone, Copy)]
pub struct Judged<'a> {
    /// Image anomaly score.
    pub score: f32,
    /// PASS or FAIL against the threshold.
    pub verdict: Verdict,
    /// The anomaly map.
    pub map: AnomalyMap<'a>,
}

/// Judges frames with one model; reuses all its buffers.
pub struct Inspector {
    extractor: Extractor,
    judge: Judge,
}

/// How one product is judged with some extractor's model: the scorer (against its memory, with
/// its ignore mask) and the decision threshold. Several judges can share one extractor (a
/// station's recipes that use the same model load its engine once).
pub struct Judge {
    scorer: Scorer,
    threshold: Threshold,
    made_for: MadeFor,
}

impl Judge {
    /// Judges with `extractor`'s model: refined or not, against `memory` (made for this model
    /// file, engine precision and scoring mode), and the threshold chosen as the module says.
    pub fn new(
        extractor: &Extractor,
        refine: bool,
        memory: Option<&Memory>,
        threshold: Option<f32>,
    ) -> Result<Judge, LoadError> {
        let spec = &extractor.spec;
        let made_for = extractor.made_for(refine);
        if let Some(memory) = memory {
            memory_file::check_against(&memory.path, &memory.bank, spec, &made_for)?;
        }
        let scorer =
            Scorer::new(spec, refine, memory.map(|m| &m.bank)).map_err(|e| LoadError::Threshold(e.to_string()))?;
        let range = scorer.score_range();
        let threshold = match (threshold, memory) {
            (Some(value), _) => Threshold::new(value, ThresholdSource::Operator, range)
                .map_err(|e| LoadError::Threshold(format!("the operator's {e}")))?,
            (None, Some(memory)) => {
                let value = memory.bank.threshold.ok_or_else(|| {
                    LoadError::Threshold(format!(
                        "{}: field `threshold`: none, it was calibrated from {} good image(s): calibrate from 2 or more, or give a threshold",
                        memory.path.display(),
                        memory.bank.good_images
                    ))
                })?;
                Threshold::new(value, ThresholdSource::Calibrated, range)
                    .map_err(|e| LoadError::Threshold(format!("{}: field `threshold`: {e}", memory.path.display())))?
            }
            (None, None) => Threshold::new(spec.score.threshold, ThresholdSource::Model, range)
                .map_err(|e| LoadError::Threshold(format!("the model's `score.threshold`: {e}")))?,
        };
        Ok(Judge { scorer, threshold, made_for })
    }

    /// Judges against `memory` from now on (with `threshold`, or the memory's calibrated one),
    /// keeping the scoring mode and the ignore mask; unchanged when refused.
    pub fn replace_memory(
        &mut self,
        extractor: &Extractor,
        memory: &Memory,
        threshold: Option<f32>,
    ) -> Result<(), LoadError> {
        let mut judge = Judge::new(extractor, self.made_for.refine, Some(memory), threshold)?;
        judge.scorer.set_inspected(self.scorer.inspected().map(<[bool]>::to_vec));
        *self = judge;
        Ok(())
    }

    /// Judges one frame on `extractor`, which must be the one this judge was made with (its
    /// model file and precision: checked, an [`InspectError::Extractor`] otherwise).
    pub fn inspect(&mut self, extractor: &mut Extractor, frame: &RgbImage) -> Result<Judged<'_>, InspectError> {
        if extractor.model_sha256 != self.made_for.model_sha256
            || extractor.engine.info().precision.name() != self.made_for.precision
        {
            return Err(InspectError::Extractor);
        }
        let raw = extractor.extract(frame)?;
        let started = Instant::now();
        let scored = self.scorer.score(raw);
        extractor.times.scoring = started.elapsed();
        let scored = scored?;
        Ok(Judged { score: scored.score, verdict: Verdict::judge(scored.score, &self.threshold), map: scored.map })
    }

    /// Never reports anomalies where `mask` is black: the mask (any size, stretched over the
    /// model's `input_size`, `[height, width]`) selects the pixels whose scores make the image
    /// score (grey 128 and above: inspected). A mask that leaves less than
    /// [`MIN_INSPECTED_FRACTION`] inspected is refused.
    pub fn set_ignore_mask(&mut self, input_size: [usize; 2], mask: &image::GrayImage) -> Result<(), String> {
        let [h, w] = input_size;
        let resized = image::imageops::resize(mask, w as u32, h as u32, image::imageops::FilterType::Triangle);
        let inspected: Vec<bool> = resized.pixels().map(|p| p.0[0] >= 128).collect();
        let fraction = inspected.iter().filter(|i| **i).count() as f64 / inspected.len() as f64;
        if fraction < MIN_INSPECTED_FRACTION {
            return Err(format!(
                "it leaves {:.2} % of the image inspected, less than the {} % a judgement needs (black is ignored, white inspected)",
                fraction * 100.0,
                MIN_INSPECTED_FRACTION * 100.0
            ));
        }
        self.scorer.set_inspected(Some(inspected));
        Ok(())
    }

    /// The decision threshold in force.
    pub fn threshold(&self) -> &Threshold {
        &self.threshold
    }
}

impl Inspector {
    /// Judges with `extractor`'s model (see [`Judge::new`]).
    pub fn new(
        extractor: Extractor,
        refine: bool,
        memory: Option<&Memory>,
        threshold: Option<f32>,
    ) -> Result<Inspector, LoadError> {
        let judge = Judge::new(&extractor, refine, memory, threshold)?;
        Ok(Inspector { extractor, judge })
    }

    /// Loads the model at `path` on the configured engine and the memory file if one is given.
    pub fn load(path: &Path, options: &InspectOptions) -> Result<Self, LoadError> {
        let file = ModelFile::open(path)?;
        let memory = options.memory.as_deref().map(Memory::read).transpose()?;
        let extractor = Extractor::load(&file, &options.engine)?;
        Inspector::new(extractor, !options.no_refine, memory.as_ref(), options.threshold)
    }

    /// Judges one frame.
    pub fn inspect(&mut self, frame: &RgbImage) -> Result<Judged<'_>, InspectError> {
        self.judge.inspect(&mut self.extractor, frame)
    }

    /// Never reports anomalies where `mask` is black (see [`Judge::set_ignore_mask`]).
    pub fn set_ignore_mask(&mut self, mask: &image::GrayImage) -> Result<(), String> {
        self.judge.set_ignore_mask(self.extractor.spec.input.size, mask)
    }

    /// Stage durations of the last frame.
    pub(crate) fn stage_times(&self) -> StageTimes {
        self.extractor.stage_times()
    }

    /// The decision threshold in force.
    pub fn threshold(&self) -> &Threshold {
        self.judge.threshold()
    }

    /// The engine running the model.
    pub fn info(&self) -> EngineInfo {
        self.extractor.info()
    }

    /// The SHA-256 (hex) of the model file.
    pub fn model_sha256(&self) -> &str {
        self.extractor.model_sha256()
    }

    /// The model's contract.
    pub fn spec(&self) -> &ModelSpec {
        &self.extractor.spec
    }

    /// Its extractor and judge, apart (a station's recipes share extractors).
    pub(crate) fn into_parts(self) -> (Extractor, Judge) {
        (self.extractor, self.judge)
    }

    /// Gives the extractor back (to calibrate again with the same engine).
    pub(crate) fn into_extractor(self) -> Extractor {
        self.extractor
    }
}
