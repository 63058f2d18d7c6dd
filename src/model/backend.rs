//! Choosing the engine: ONNX Runtime where it can be loaded, tract otherwise.
//!
//! Owns the backend choice and the report of what ran and why the engines or providers before
//! it were skipped (the caller reports it: a provider that fails must never fail silently). `auto` tries ONNX Runtime (when built with the `ort` feature and its library
//! loads) and falls back to tract, saying so; `ort` and `tract` insist.

use std::path::PathBuf;

use super::contract::{ModelError, ModelFile};
use super::tract::TractEngine;
use super::Engine;

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// ONNX Runtime if it can be loaded, else tract.
    #[default]
    Auto,
    /// ONNX Runtime only.
    Ort,
    /// tract only.
    Tract,
}

/// An ONNX Runtime execution provider, in the order of preference given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// NVIDIA TensorRT.
    TensorRt,
    /// NVIDIA CUDA.
    Cuda,
    /// ONNX Runtime's CPU kernels.
    Cpu,
}

impl Provider {
    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Provider::TensorRt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }
}

/// TensorRT settings.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TensorRtOptions {
    /// Build FP16 engines.
    pub fp16: bool,
    /// Build INT8 engines (needs a QDQ model or a calibration table).
    pub int8: bool,
    /// Where built engines are kept across restarts (created if missing; must be writable);
    /// none: no cache, engines are built at every start (minutes).
    pub engine_cache: Option<PathBuf>,
    /// Builder workspace in bytes.
    pub workspace_bytes: usize,
    /// CUDA device.
    pub device_id: i32,
}

impl Default for TensorRtOptions {
    fn default() -> Self {
        TensorRtOptions { fp16: true, int8: false, engine_cache: None, workspace_bytes: 1 << 30, device_id: 0 }
    }
}

/// How to find and configure an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Which engine.
    pub backend: Backend,
    /// `libonnxruntime.so`; none: the `ORT_DYLIB_PATH` environment variable.
    pub ort_library: Option<PathBuf>,
    /// Load the library even when others than root could change it (or what leads to it).
    pub allow_insecure_library: bool,
    /// Providers to try, in order.
    pub providers: Vec<Provider>,
    /// TensorRT settings.
    pub tensorrt: TensorRtOptions,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            backend: Backend::Auto,
            ort_library: None,
            allow_insecure_library: false,
            providers: vec![Provider::TensorRt, Provider::Cuda, Provider::Cpu],
            tensorrt: TensorRtOptions::default(),
        }
    }
}

/// Why an engine could not be had.
#[derive(Debug, thiserror::Error)]
pub enum EngineLoadError {
    /// The engine itself is missing (library absent, incompatible, feature not built): another
    /// engine may still run the model.
    #[error("{0}")]
    Unavailable(String),
    /// The engine's configuration is wrong (e.g. an unwritable TensorRT engine cache).
    #[error("{0}")]
    Config(String),
    /// The model is wrong: no engine will help.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A loaded engine and the story of how it was chosen.
pub struct ChosenEngine {
    /// The engine (its [`Engine::info`] says which it is).
    pub engine: Box<dyn Engine>,
    /// Why each engine or provider before it was skipped.
    pub skipped: Vec<String>,
}

/// Loads the engine `config` asks for, falling back from ONNX Runtime to tract under `auto`.
pub fn load_engine(file: &ModelFile, config: &EngineConfig) -> Result<ChosenEngine, EngineLoadError> {
    let mut skipped = Vec::new();
    if config.backend != Backend::Tract {
        match load_ort(file, config) {
            Ok(mut chosen) => {
                skipped.append(&mut chosen.skipped);
                return Ok(ChosenEngine { skipped, ..chosen });
            }
            Err(EngineLoadError::Unavailable(why)) if config.backend == Backend::Auto => {
                skipped.push(format!("ort: {why}; falling back to tract"));
            }
            Err(e) => return Err(e),
        }
    }
    let engine = TractEngine::load(file)?;
    Ok(ChosenEngine { engine: Box::new(engine), skipped })
}

#[cfg(feature = "ort")]
fn load_ort(file: &ModelFile, config: &EngineConfig) -> Result<ChosenEngine, EngineLoadError> {
    let mut loaded = super::ort::OrtEngine::load(file, config)?;
    let skipped = std::mem::take(&mut loaded.skipped);
    Ok(ChosenEngine { engine: Box::new(loaded), skipped })
}

#[cfg(not(feature = "ort"))]
fn load_ort(_: &ModelFile, _: &EngineConfig) -> Result<ChosenEngine, EngineLoadError> {
    Err(EngineLoadError::Unavailable("this clipada was built without the `ort` feature".into()))
}

/// The ONNX Runtime library this process would use, for `--version`: its version and path, or
/// why there is none.
pub(crate) fn ort_version() -> String {
    #[cfg(feature = "ort")]
    return super::ort::library_version().unwrap_or_else(|e| format!("not loaded: {e}"));
    #[cfg(not(feature = "ort"))]
    return "not built in (the `ort` feature is off)".to_string();
}
