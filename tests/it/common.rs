//! Helpers shared by the integration tests: repository paths and the committed goldens.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Agreement required between the runtime and the references (onnxruntime, numpy):
/// float32 engines differ in summation order, never by more than this on these models.
pub const TOLERANCE: f32 = 1e-4;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed tiny CLIP-ADA fixture.
pub fn tiny_model() -> PathBuf {
    root().join("models/fixtures/tiny-clipada.onnx")
}

/// The shipped default model (EfficientNet-Lite0 features).
pub fn default_model() -> PathBuf {
    root().join("models/default/efficientnet-lite0.onnx")
}

/// The sample dataset's root (MVTec AD layout, one category `part`).
pub fn samples_root() -> PathBuf {
    root().join("models/samples")
}

/// A sample image, by its path under models/samples/part.
pub fn sample(relative: &str) -> PathBuf {
    samples_root().join("part").join(relative)
}

/// Writes `dir/station.toml`: a station over the sample test parts (in a loop or once) on the
/// tiny model (tract), its state, recorded lines (`gpio.log`, with `gpio_keys`) and result log
/// (`results.jsonl`) in `dir`, then `extra`; its path.
pub fn tiny_station(dir: &Path, looping: bool, gpio_keys: &str, extra: &str) -> PathBuf {
    let text = format!(
        "state_dir = {state:?}\n\n[model]\nbackend = \"tract\"\npath = {model:?}\n\n\
         [source]\nkind = \"directory\"\npath = {test:?}\nloop = {looping}\n\n\
         [gpio]\nkind = \"recording\"\nrecord = {gpio:?}\n{gpio_keys}\n[log]\nresults = {results:?}\n{extra}",
        state = dir.join("state"),
        model = tiny_model(),
        test = sample("test"),
        gpio = dir.join("gpio.log"),
        results = dir.join("results.jsonl"),
    );
    let path = dir.join("station.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The tiny-model goldens (models/make_goldens.py, TINY_GOLDENS).
pub const GOLDEN_SAMPLES: [&str; 4] = ["good", "scratch", "contamination", "small_scratch"];

/// A tensor as stored in a golden file.
#[derive(Debug, Deserialize)]
pub struct Stored {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Raw outputs from onnxruntime.
#[derive(Debug, Deserialize)]
pub struct StoredRaw {
    pub patch_logits: Stored,
    pub image_logits: Stored,
    pub patch_features: Stored,
}

/// The reference scoring of one sample.
#[derive(Debug, Deserialize)]
pub struct StoredScore {
    pub map: Stored,
    pub score: f32,
    pub verdict: String,
}

/// One golden file.
#[derive(Debug, Deserialize)]
pub struct Golden {
    pub image: String,
    pub input: Stored,
    pub raw: StoredRaw,
    pub refined: StoredScore,
    pub unrefined: StoredScore,
}

impl Golden {
    /// The stored onnxruntime outputs as the runtime's raw outputs.
    pub fn raw_outputs(&self) -> clipada::model::RawOutputs {
        clipada::model::RawOutputs {
            patch_logits: Some(self.raw.patch_logits.data.clone()),
            image_logits: Some(self.raw.image_logits.data.clone()),
            patch_features: Some(self.raw.patch_features.data.clone()),
        }
    }
}

/// Reads tests/data/goldens/NAME.json.
pub fn golden(name: &str) -> Golden {
    let path = root().join("tests/data/goldens").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Largest absolute difference; panics on a length mismatch (that is a failure too).
pub fn max_abs_diff(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    actual.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// Asserts `actual` is within [`TOLERANCE`] of `expected`, naming `what`.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32]) {
    let diff = max_abs_diff(actual, expected);
    assert!(diff <= TOLERANCE, "{what}: max abs diff {diff:e} > {TOLERANCE:e}");
}

/// Copies a file into `dir` under `name`.
pub fn copy_into(from: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(from, &to).unwrap();
    to
}

/// Channel difference tolerated against a snapshot: `exp` differs in the last bits between
/// platforms' maths libraries, which can move a blended channel by one level.
const SNAPSHOT_CHANNEL_TOLERANCE: u8 = 2;

/// Compares `image` with tests/data/snapshots/`name`, which was inspected by eye when it was
/// made (regenerate with UPDATE_SNAPSHOTS=1, then look at it): at most 1 pixel in 500 may
/// differ by more than the channel tolerance.
pub fn assert_snapshot(name: &str, image: &image::RgbImage) {
    let path = root().join("tests/data/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        image.save(&path).unwrap();
    }
    let snapshot = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_rgb8();
    assert_eq!(snapshot.dimensions(), image.dimensions());
    let differing = snapshot
        .pixels()
        .zip(image.pixels())
        .filter(|(a, b)| a.0.iter().zip(b.0).any(|(x, y)| x.abs_diff(y) > SNAPSHOT_CHANNEL_TOLERANCE))
        .count();
    assert!(differing * 500 <= snapshot.len() / 3, "{differing} pixels differ from {}", path.display());
}

/// A memory of the default model calibrated (on tract) from the sample good parts, made once
/// per test run in a folder of its own.
pub fn default_memory() -> PathBuf {
    static MEMORY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MEMORY.get_or_init(|| calibrated(&default_model())).clone()
}

/// A memory of the tiny fixture, made like [`default_memory`] (in seconds, also under emulation).
pub fn tiny_memory() -> PathBuf {
    static MEMORY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MEMORY.get_or_init(|| calibrated(&tiny_model())).clone()
}

/// `clipada calibrate` of `model` on the sample good parts, into a new folder.
fn calibrated(model: &Path) -> PathBuf {
    let dir = tempfile::Builder::new().prefix("clipada-it-").tempdir().unwrap().keep();
    let memory = dir.join("part.memory");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_clipada"))
        .args(["calibrate", "--backend", "tract", "--model"])
        .arg(model)
        .arg("--good")
        .arg(sample("train/good"))
        .arg("--out")
        .arg(&memory)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    memory
}

/// The tiny fixture with its graph output `output` multiplied by `factor` (NaN, infinity, a
/// huge or a small number): a model whose outputs go wrong the way a broken export, an FP16
/// overflow or a bad quantisation would. Written into `dir`.
pub fn tiny_model_with_output_times(dir: &Path, output: &str, factor: f32) -> PathBuf {
    use prost::Message;
    use tract_onnx::pb::{NodeProto, TensorProto};
    let mut proto = clipada::model::ModelFile::open(&tiny_model()).unwrap().proto;
    let graph = proto.graph.as_mut().unwrap();
    let raw = format!("{output}_before_fault");
    for node in &mut graph.node {
        for name in &mut node.output {
            if name == output {
                *name = raw.clone();
            }
        }
    }
    let factor_name = format!("{output}_fault");
    graph.initializer.push(TensorProto {
        name: factor_name.clone(),
        data_type: 1,
        float_data: vec![factor],
        ..TensorProto::default()
    });
    graph.node.push(NodeProto {
        name: format!("{output}_fault_mul"),
        op_type: "Mul".into(),
        input: vec![raw, factor_name],
        output: vec![output.into()],
        ..NodeProto::default()
    });
    let path = dir.join(format!("tiny-{output}-times-{factor}.onnx"));
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    path
}

/// The ONNX Runtime library; a missing one fails the test (it is never skipped).
#[cfg(feature = "ort")]
pub fn ort_library() -> PathBuf {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(path);
    }
    let capi = root().join("models/.venv/lib");
    let found = std::fs::read_dir(&capi).ok().and_then(|pythons| {
        pythons.flatten().find_map(|python| {
            let dir = python.path().join("site-packages/onnxruntime/capi");
            std::fs::read_dir(dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so.")))
        })
    });
    found.expect("no ONNX Runtime library: set ORT_DYLIB_PATH or run tests/run-all.sh, which installs it")
}

/// Settings that insist on ONNX Runtime with [`ort_library`], which the tests load from their
/// own virtual environment: root need not own it (a station's would be refused).
#[cfg(feature = "ort")]
pub fn ort_config() -> clipada::model::EngineConfig {
    clipada::model::EngineConfig {
        backend: clipada::model::Backend::Ort,
        ort_library: Some(ort_library()),
        allow_insecure_library: true,
        ..clipada::model::EngineConfig::default()
    }
}
