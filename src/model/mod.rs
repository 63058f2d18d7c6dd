//! The model contract and the engines that run a model.
//!
//! Owns everything between a preprocessed input tensor and the model's raw outputs. Never
//! scores: `score` takes the raw outputs as plain slices.

pub mod backend;
pub mod contract;
#[cfg(feature = "ort")]
mod engine_cache;
#[cfg(feature = "ort")]
pub mod ort;
pub mod tract;

pub use backend::{load_engine, Backend, ChosenEngine, EngineConfig, EngineLoadError};
pub use contract::{ModelError, ModelFile, ModelSpec, OutputRole};

/// One run of the engine failed: the frame is judged an error and the next one is tried.
#[derive(Debug, thiserror::Error)]
#[error("engine run failed: {0}")]
pub struct EngineError(pub String);

/// The numeric precision an engine computes in; features, and so scores, move with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float (tract, ONNX Runtime's CPU and CUDA providers).
    Fp32,
    /// 16-bit float (TensorRT with FP16 engines).
    Fp16,
    /// 8-bit integer (TensorRT with INT8 engines).
    Int8,
}

impl Precision {
    /// `fp32`, `fp16` or `int8`, as memory files record it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }
}

/// Which engine runs a model, on which provider, at what precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EngineInfo {
    /// `tract`, `ort`, or a stand-in's name.
    pub engine: &'static str,
    /// The provider (`tensorrt`, `cuda`, `cpu`).
    pub provider: &'static str,
    /// The precision it computes in.
    pub precision: Precision,
}

/// Runs one preprocessed input through a model.
pub trait Engine {
    /// Fills `out` with the model's raw outputs for `input` (NCHW float32, `spec.input_len()`).
    fn run(&mut self, input: &[f32], out: &mut RawOutputs) -> Result<(), EngineError>;

    /// What this engine is.
    fn info(&self) -> EngineInfo;
}

/// The model's raw outputs, one buffer per role the model has, allocated once for a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct RawOutputs {
    /// `[L, 2, h, w]` when the model has patch logits.
    pub patch_logits: Option<Vec<f32>>,
    /// `[1, 2]` when the model has image logits.
    pub image_logits: Option<Vec<f32>>,
    /// `[L, h*w, D]` when the model has patch features.
    pub patch_features: Option<Vec<f32>>,
}

impl RawOutputs {
    /// Zeroed buffers of the sizes `spec` promises.
    pub fn for_spec(spec: &ModelSpec) -> Self {
        let mut raw = RawOutputs { patch_logits: None, image_logits: None, patch_features: None };
        for (role, _, shape) in spec.expected_outputs() {
            *raw.slot(role) = Some(vec![0.0; shape.iter().product()]);
        }
        raw
    }

    /// The buffer for `role`.
    pub fn slot(&mut self, role: OutputRole) -> &mut Option<Vec<f32>> {
        match role {
            OutputRole::PatchLogits => &mut self.patch_logits,
            OutputRole::ImageLogits => &mut self.image_logits,
            OutputRole::PatchFeatures => &mut self.patch_features,
        }
    }
}
