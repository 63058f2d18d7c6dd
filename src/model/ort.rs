//! The ONNX Runtime engine (feature `ort`): TensorRT ▸ CUDA ▸ CPU, as configured.
//!
//! ONNX Runtime is loaded at run time (`load-dynamic`) from the configured library or
//! `ORT_DYLIB_PATH`. The file is checked before `ort` sees it, so a missing library is an
//! [`EngineLoadError::Unavailable`], never `ort`'s panic. Each provider that cannot be registered
//! is reported with ONNX Runtime's reason and the next one is tried; the CPU provider is always
//! there underneath.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::{builder::SessionBuilder, Session};
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::backend::{EngineConfig, EngineLoadError, Provider, TensorRtOptions};
use super::contract::{ModelError, ModelFile, OutputRole};
use super::engine_cache::{CacheKey, EngineCache};
use super::{Engine, EngineError, EngineInfo, Precision, RawOutputs};
use crate::storage::trust::root_only;

/// A model in an ONNX Runtime session.
pub(crate) struct OrtEngine {
    session: Session,
    input_shape: [usize; 4],
    /// (role, output name) of each output the runtime uses.
    outputs: Vec<(OutputRole, String)>,
    /// The first provider that registered.
    pub provider: Provider,
    /// The precision it computes in.
    pub precision: Precision,
    /// Why providers before it were skipped.
    pub skipped: Vec<String>,
}

/// The ONNX Runtime library to load: `configured`, else `ORT_DYLIB_PATH`, as an absolute path
/// to a regular file, resolved (the path checked is the path loaded: nothing is searched for).
/// Only a file root alone can change is taken ([`root_only`]) unless `allow_insecure` says so.
pub(crate) fn library_path(configured: Option<&Path>, allow_insecure: bool) -> Result<PathBuf, EngineLoadError> {
    let path = configured.map(Path::to_path_buf).or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from));
    let path = path.ok_or_else(|| {
        EngineLoadError::Unavailable("no ONNX Runtime library configured (ort_library or ORT_DYLIB_PATH)".into())
    })?;
    let refused = |why: String| EngineLoadError::Unavailable(format!("{}: {why}", path.display()));
    if !path.is_absolute() {
        return Err(refused("not an absolute path (a relative one is looked up where the process runs)".into()));
    }
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refused("no such ONNX Runtime library".into()))
        }
        Err(e) => return Err(refused(e.to_string())),
        Ok(metadata) if !metadata.is_file() => return Err(refused("not a regular file".into())),
        Ok(_) => {}
    }
    if allow_insecure {
        return path.canonicalize().map_err(|e| refused(e.to_string()));
    }
    root_only(&path).map_err(|why| {
        refused(format!(
            "{why}; a library is loaded only when root alone can change it and every folder above it: \
             install it system-wide, or allow it with --allow-insecure-library \
             (model.allow_insecure_library on a station)"
        ))
    })
}

/// ONNX Runtime allows one environment per process: the first successful load makes it, with
/// the library found then; later loads share it. With it: the library's version string.
fn environment(config: &EngineConfig) -> Result<(&'static Environment, &'static str), EngineLoadError> {
    static ENVIRONMENT: OnceLock<(Environment, String)> = OnceLock::new();
    if let Some((environment, version)) = ENVIRONMENT.get() {
        return Ok((environment, version));
    }
    let library = library_path(config.ort_library.as_deref(), config.allow_insecure_library)?;
    let environment = ort::init_from(&library)
        .map_err(|e| unavailable(format!("{}: {e}", library.display())))?
        .with_name("clipada")
        .build()
        .map_err(unavailable)?;
    let version = loaded_version_string(&library).unwrap_or_else(|| "unknown".to_string());
    let (environment, version) = ENVIRONMENT.get_or_init(|| (environment, version));
    Ok((environment, version))
}

/// The ONNX Runtime library `ORT_DYLIB_PATH` names, loaded (when root alone can change it), and
/// its build: `1.32.0 (PATH)`.
pub(crate) fn library_version() -> Result<String, EngineLoadError> {
    let library = library_path(None, false)?;
    ort::init_from(&library).map_err(|e| unavailable(format!("{}: {e}", library.display())))?;
    let version = loaded_version_string(&library).unwrap_or_else(|| "unknown version".to_string());
    Ok(format!("{version} ({})", library.display()))
}

/// `OrtGetApiBase()->GetVersionString()` of the library at `path`, which must already be loaded
/// (it is looked up with `RTLD_NOLOAD`, never loaded here).
fn loaded_version_string(path: &std::path::Path) -> Option<String> {
    use std::ffi::{CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: RTLD_NOLOAD only returns a handle to a library this process already loaded (ort
    // loaded it from this path); the symbol is ONNX Runtime's C entry point with the signature
    // ort-sys declares, and the version string it returns is static and NUL-terminated.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return None;
        }
        let symbol = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        let version = if symbol.is_null() {
            None
        } else {
            let get_api_base: unsafe extern "C" fn() -> *const ort::sys::OrtApiBase = std::mem::transmute(symbol);
            let base = get_api_base();
            (!base.is_null()).then(|| CStr::from_ptr(((*base).GetVersionString)()).to_string_lossy().into_owned())
        };
        libc::dlclose(handle);
        version
    }
}

fn unavailable(e: impl std::fmt::Display) -> EngineLoadError {
    EngineLoadError::Unavailable(e.to_string())
}

impl OrtEngine {
    /// Loads ONNX Runtime (once per process) and builds a session for `file`.
    pub fn load(file: &ModelFile, config: &EngineConfig) -> Result<OrtEngine, EngineLoadError> {
        let (environment, version) = environment(config)?;
        let mut builder = Session::builder(environment).map_err(unavailable)?;
        // The cache is opened (made, checked) only where TensorRT could use it.
        let tensorrt_usable =
            config.providers.contains(&Provider::TensorRt) && matches!(ep::TensorRT::is_available(), Ok(true));
        let cache = match &config.tensorrt.engine_cache {
            Some(root) if tensorrt_usable => {
                let key = CacheKey {
                    model_sha256: file.sha256.clone(),
                    precision: tensorrt_precision(&config.tensorrt).name(),
                    onnx_runtime: version.to_string(),
                    tensorrt: tensorrt_version(),
                    gpu: gpu_name(),
                };
                let (cache, removed) = EngineCache::open(root, key).map_err(EngineLoadError::Config)?;
                if let Some(why) = removed {
                    tracing::warn!("{why}");
                }
                Some(cache)
            }
            _ => None,
        };
        let mut skipped = Vec::new();
        let mut chosen = None;
        for &provider in &config.providers {
            match register(&mut builder, provider, &config.tensorrt, cache.as_ref())? {
                Ok(()) => {
                    chosen = Some(provider);
                    break;
                }
                Err(why) => skipped.push(format!("{}: {why}", provider.name())),
            }
        }
        let provider = chosen.unwrap_or(Provider::Cpu);
        let session = builder.commit_from_memory(&file.bytes).map_err(|e| {
            EngineLoadError::Model(ModelError::Unreadable { path: file.path.clone(), reason: e.to_string() })
        })?;
        let contract = |field: String, reason: String| {
            EngineLoadError::Model(ModelError::Contract { path: file.path.clone(), field, reason })
        };
        let input = &session.inputs()[0];
        check_tensor(input.dtype(), &file.spec.input_shape())
            .map_err(|reason| contract("input.size".into(), reason))?;
        let mut outputs = Vec::new();
        for (role, name, shape) in file.spec.expected_outputs() {
            let field = format!("outputs.{}", role.key());
            let output = session.outputs().iter().find(|o| o.name() == name);
            let output =
                output.ok_or_else(|| contract(field.clone(), format!("the graph has no output named {name:?}")))?;
            check_tensor(output.dtype(), &shape).map_err(|reason| contract(field, reason))?;
            outputs.push((role, name.to_string()));
        }
        let precision = match provider {
            Provider::TensorRt => tensorrt_precision(&config.tensorrt),
            _ => Precision::Fp32,
        };
        if let (Provider::TensorRt, Some(cache)) = (provider, &cache) {
            // The engines were built (or loaded) with the session: vouch for what is there now.
            if let Err(why) = cache.record() {
                tracing::warn!("{why}: the engines will be rebuilt at the next start");
            }
        }
        Ok(OrtEngine { session, input_shape: file.spec.input_shape(), outputs, provider, precision, skipped })
    }
}

/// Checks a graph input's or output's declared type against the contract: a float tensor whose
/// known dimensions are those expected (ONNX Runtime reports unknown ones as -1; the data's
/// length is checked again at every run).
fn check_tensor(declared: &ValueType, expected: &[usize]) -> Result<(), String> {
    let ValueType::Tensor { ty, shape, .. } = declared else {
        return Err(format!("the graph declares {declared}, not a float tensor"));
    };
    if *ty != TensorElementType::Float32 {
        return Err(format!("the graph declares {ty} elements, not float32"));
    }
    let fits = shape.len() == expected.len()
        && shape.iter().zip(expected).all(|(&declared, &expected)| declared < 0 || declared as usize == expected);
    if !fits {
        return Err(format!("the graph gives shape {:?}, the contract implies {expected:?}", &shape[..]));
    }
    Ok(())
}

/// Registers one provider on `builder`: `Ok(Err(why))` when it cannot be (try the next one),
/// `Err` when its configuration is wrong (an unusable TensorRT engine cache stops the start,
/// rather than rebuilding engines for minutes at every boot).
fn register(
    builder: &mut SessionBuilder,
    provider: Provider,
    trt: &TensorRtOptions,
    cache: Option<&EngineCache>,
) -> Result<Result<(), String>, EngineLoadError> {
    let available = match provider {
        Provider::TensorRt => ep::TensorRT::is_available(),
        Provider::Cuda => ep::CUDA::is_available(),
        Provider::Cpu => ep::CPU::is_available(),
    };
    match available {
        Ok(true) => {}
        Ok(false) => return Ok(Err("not built into this ONNX Runtime library".into())),
        Err(e) => return Ok(Err(e.to_string())),
    }
    let dispatch = match provider {
        Provider::TensorRt => {
            let tensorrt = ep::TensorRT::default()
                .with_device_id(trt.device_id)
                .with_fp16(trt.fp16)
                .with_int8(trt.int8)
                .with_max_workspace_size(trt.workspace_bytes);
            match cache {
                Some(cache) => tensorrt
                    .with_engine_cache(true)
                    .with_engine_cache_path(cache.path().display())
                    .with_timing_cache(true)
                    .with_timing_cache_path(cache.path().display())
                    .build(),
                None => tensorrt.build(),
            }
        }
        Provider::Cuda => ep::CUDA::default().with_device_id(trt.device_id).build(),
        Provider::Cpu => ep::CPU::default().build(),
    };
    Ok(dispatch.error_on_failure().register(builder).map_err(|e| e.to_string()))
}

/// The precision TensorRT computes in with these settings.
fn tensorrt_precision(trt: &TensorRtOptions) -> Precision {
    match (trt.int8, trt.fp16) {
        (true, _) => Precision::Int8,
        (false, true) => Precision::Fp16,
        (false, false) => Precision::Fp32,
    }
}

/// TensorRT's version (`getInferLibVersion` of the library ONNX Runtime's TensorRT provider
/// loads: major·10000 + minor·100 + patch), or `unknown` when it is not there.
fn tensorrt_version() -> String {
    // SAFETY: dlopen of the system's TensorRT library (which the TensorRT provider loads
    // anyway); the symbol is TensorRT's documented C entry point `int32_t getInferLibVersion()`.
    unsafe {
        let handle = libc::dlopen(c"libnvinfer.so.10".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            return "unknown".into();
        }
        let symbol = libc::dlsym(handle, c"getInferLibVersion".as_ptr());
        let version = if symbol.is_null() {
            "unknown".into()
        } else {
            let get_version: unsafe extern "C" fn() -> i32 = std::mem::transmute(symbol);
            let v = get_version();
            format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
        };
        libc::dlclose(handle);
        version
    }
}

/// The GPU, as the NVIDIA driver (`Model:` of each GPU) or a Jetson's device tree names it;
/// `unknown` when neither says.
fn gpu_name() -> String {
    let read = |path: &Path| {
        let mut text = String::new();
        std::fs::File::open(path).and_then(|f| f.take(4096).read_to_string(&mut text)).ok()?;
        Some(text)
    };
    let mut models: Vec<String> = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .into_iter()
        .flatten()
        .filter_map(|entry| read(&entry.ok()?.path().join("information")))
        .filter_map(|text| text.lines().find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string())))
        .collect();
    models.sort();
    if !models.is_empty() {
        return models.join(", ");
    }
    read(Path::new("/proc/device-tree/model"))
        .map(|m| m.trim_end_matches('\0').trim().to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

impl Engine for OrtEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo { engine: "ort", provider: self.provider.name(), precision: self.precision }
    }

    fn run(&mut self, input: &[f32], out: &mut RawOutputs) -> Result<(), EngineError> {
        let failed = |e: ort::Error| EngineError(e.to_string());
        let tensor = TensorRef::from_array_view((self.input_shape, input)).map_err(failed)?;
        let results = self.session.run(ort::inputs![tensor]).map_err(failed)?;
        for (role, name) in &self.outputs {
            let (_, data) = results[name.as_str()].try_extract_tensor::<f32>().map_err(failed)?;
            let slot = (out.slot(*role).as_mut()).ok_or_else(|| EngineError(format!("no buffer for {name}")))?;
            if slot.len() != data.len() {
                return Err(EngineError(format!("output {name} has {} values, expected {}", data.len(), slot.len())));
            }
            slot.copy_from_slice(data);
        }
        Ok(())
    }
}
