//! The model contract: the `clipada` JSON document in an ONNX file's `metadata_props`.
//!
//! Owns reading the ONNX protobuf far enough to find that document, and turning it into a
//! validated [`ModelSpec`]. Knows nothing of how a model is run or how its outputs are scored.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tract_onnx::pb::{GraphProto, ModelProto, TensorProto};
use tract_onnx::prelude::Framework;

use crate::storage::read::{read_regular, ReadError};

/// The contract version this runtime understands.
pub(crate) const CONTRACT_VERSION: u64 = 1;
/// The `metadata_props` key that holds the contract document.
pub(crate) const METADATA_KEY: &str = "clipada";

/// A model file that could not be used, with the file and, where there is one, the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file is missing, unreadable or not an ONNX protobuf.
    #[error("{path}: cannot read the ONNX model: {reason}")]
    Unreadable {
        /// The model file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The engine cannot run this graph correctly (it would load, but compute wrong values).
    #[error("{path}: {engine} cannot run this model correctly: {reason}")]
    Unsupported {
        /// The model file.
        path: PathBuf,
        /// The engine that refuses it.
        engine: &'static str,
        /// What in the graph it cannot run, and what to do instead.
        reason: String,
    },
    /// The contract metadata is absent, of an unknown version, or a field is missing or wrong.
    #[error("{path}: contract field `{field}`: {reason}")]
    Contract {
        /// The model file.
        path: PathBuf,
        /// Dotted path of the field inside the `clipada` document (or the graph part at fault).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ModelError {
    fn contract(path: &Path, field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::Contract { path: path.to_path_buf(), field: field.into(), reason: reason.into() }
    }
}

/// Everything the runtime knows about a model, read from its contract and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Human-readable model name.
    pub name: String,
    /// What the model takes.
    pub input: InputSpec,
    /// Patch grid `[h, w]`.
    pub grid: [usize; 2],
    /// Encoder layers that feed the maps (informative; their count `L` sizes the outputs).
    pub layers: Vec<u32>,
    /// Size `D` of one patch feature, present when the model has `patch_features`.
    pub feature_dim: Option<usize>,
    /// Graph output names for each role the model provides.
    pub outputs: OutputNames,
    /// Anomaly region refinement parameters; none: the model has no refinement.
    pub refine: Option<RefineParams>,
    /// Map smoothing and image-score parameters.
    pub score: ScoreParams,
}

/// The model input: one RGB image, NCHW float32.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Graph input name.
    pub name: String,
    /// Tensor layout; only `NCHW` exists in contract version 1.
    pub layout: String,
    /// Input size `[H, W]`.
    pub size: [usize; 2],
    /// Element type; only `f32` exists in contract version 1.
    pub dtype: String,
    /// Per-channel mean on the 0..1 scale.
    pub mean: [f32; 3],
    /// Per-channel standard deviation on the 0..1 scale.
    pub std: [f32; 3],
    /// When true the graph normalises itself and receives raw 0..255 values.
    pub normalized_in_graph: bool,
}

/// Graph output names, by role. At least one of the two map sources is present.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputNames {
    /// `[L, 2, h, w]` normal/abnormal logits of the adapted patch tokens.
    pub patch_logits: Option<String>,
    /// `[1, 2]` normal/abnormal logits of the class token.
    pub image_logits: Option<String>,
    /// `[L, h*w, D]` L2-normalised patch features.
    pub patch_features: Option<String>,
}

/// Parameters of the anomaly region refinement (docs/ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefineParams {
    /// Half-width, in patches, of the square window whose maximum is a region's core.
    pub radius: usize,
    /// Exponent of the reshaping: 0 leaves the map as it is, larger sharpens more.
    pub sharpness: f32,
}

/// Map smoothing, image score and default threshold.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreParams {
    /// Gaussian sigma in model-input pixels; 0 disables smoothing.
    pub sigma: f32,
    /// Fraction of the map's pixels whose mean is the map score (at least one pixel).
    pub top_k: f64,
    /// Weight of the class-token probability in the image score, in [0, 1].
    pub image_logits_weight: f32,
    /// Default decision threshold on the image score.
    pub threshold: f32,
}

/// The document as written in the file, before cross-field checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(rename = "contract")]
    _version: u64, // checked before deserialising, so its error can name the version
    name: String,
    input: InputSpec,
    grid: [usize; 2],
    layers: Vec<u32>,
    feature_dim: Option<usize>,
    outputs: OutputNames,
    refine: Option<RefineParams>,
    score: ScoreParams,
}

/// Largest model file read (ViT-L/14 at 518 px in float32 is about 1.2 GB).
pub const MAX_MODEL_BYTES: u64 = 4 << 30;

/// Valid ranges of the contract's numbers; a value outside is refused naming its field.
pub mod limits {
    /// `input.size`: each side, in pixels.
    pub(crate) const INPUT_SIDE: std::ops::RangeInclusive<usize> = 8..=4096;
    /// `input.mean`: each channel, on the 0..1 scale.
    pub(crate) const MEAN: std::ops::RangeInclusive<f32> = 0.0..=1.0;
    /// `input.std`: each channel, on the 0..1 scale.
    pub(crate) const STD: std::ops::RangeInclusive<f32> = 0.01..=10.0;
    /// `grid`: each side, in patches (and at most the input's side).
    pub(crate) const GRID_SIDE: std::ops::RangeInclusive<usize> = 1..=1024;
    /// `layers`: how many.
    pub(crate) const LAYERS: std::ops::RangeInclusive<usize> = 1..=64;
    /// `feature_dim`.
    pub const FEATURE_DIM: std::ops::RangeInclusive<usize> = 1..=65_536;
    /// Values in all of the model's outputs together (`L*h*w*D` and `L*2*h*w`): 256 M floats.
    pub(crate) const OUTPUT_VALUES: usize = 1 << 28;
    /// `refine.sharpness`.
    pub(crate) const SHARPNESS: std::ops::RangeInclusive<f32> = 0.0..=16.0;
    /// `score.sigma`, in input pixels.
    pub(crate) const SIGMA: std::ops::RangeInclusive<f32> = 0.0..=64.0;
    /// `score.threshold`: the text branch's scores are probabilities.
    pub(crate) const THRESHOLD: std::ops::RangeInclusive<f32> = 0.001..=1.0;
    /// `name` and output names, in bytes.
    pub(crate) const NAME_BYTES: usize = 256;
}

/// An ONNX model file, read once, with its validated contract.
pub struct ModelFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The file's bytes: what was hashed is what the engines load.
    pub bytes: Vec<u8>,
    /// The parsed protobuf, for the engines.
    pub proto: ModelProto,
    /// The validated contract.
    pub spec: ModelSpec,
    /// SHA-256 of the file's bytes (hex): the model's identity, e.g. for memory files.
    pub sha256: String,
}

impl ModelFile {
    /// Reads `path` (a regular file of at most [`MAX_MODEL_BYTES`]) and validates its contract;
    /// graph shapes are checked by the engine at load. A model whose weights live in other
    /// files (ONNX external data) is refused: the hash would not cover them.
    pub fn open(path: &Path) -> Result<ModelFile, ModelError> {
        let unreadable = |reason: String| ModelError::Unreadable { path: path.to_path_buf(), reason };
        let bytes = read_regular(path, MAX_MODEL_BYTES, "model").map_err(|e| unreadable(strip_path(&e, path)))?;
        let sha256 = sha256_hex(&bytes);
        let proto =
            tract_onnx::onnx().proto_model_for_read(&mut bytes.as_slice()).map_err(|e| unreadable(format!("{e:#}")))?;
        if let Some(tensor) = proto.graph.as_ref().and_then(external_tensor) {
            return Err(ModelError::contract(
                path,
                "graph",
                format!(
                    "tensor {tensor:?} keeps its data in another file (ONNX external data): save the model as one file"
                ),
            ));
        }
        let mut entries = proto.metadata_props.iter().filter(|p| p.key == METADATA_KEY);
        let json = entries.next().map(|p| p.value.as_str()).ok_or_else(|| {
            ModelError::contract(path, METADATA_KEY, "no such metadata_props entry: not a clipada model")
        })?;
        if entries.next().is_some() {
            return Err(ModelError::contract(path, METADATA_KEY, "more than one metadata_props entry of this name"));
        }
        let spec = parse_contract(path, json)?;
        let graph = proto.graph.as_ref();
        let initializers: Vec<&str> =
            graph.map(|g| g.initializer.iter().map(|t| t.name.as_str()).collect()).unwrap_or_default();
        let inputs: Vec<&str> = graph
            .map(|g| g.input.iter().map(|i| i.name.as_str()).filter(|name| !initializers.contains(name)).collect())
            .unwrap_or_default();
        if inputs != [spec.input.name.as_str()] {
            return Err(ModelError::contract(
                path,
                "input.name",
                format!("the graph's inputs are {inputs:?}: it must have exactly one, {:?}", spec.input.name),
            ));
        }
        Ok(ModelFile { path: path.to_path_buf(), bytes, proto, spec, sha256 })
    }

    /// The graph's output names, in the order engines return them.
    pub(crate) fn graph_outputs(&self) -> Vec<String> {
        self.proto.graph.as_ref().map(|g| g.output.iter().map(|o| o.name.clone()).collect()).unwrap_or_default()
    }
}

/// A read error's reason without the path it starts with (the model error names it again).
fn strip_path(error: &ReadError, path: &Path) -> String {
    let text = error.to_string();
    text.strip_prefix(&format!("{}: ", path.display())).map(str::to_string).unwrap_or(text)
}

/// The name of a tensor in `graph` (or its sub-graphs) whose data is in an external file.
fn external_tensor(graph: &GraphProto) -> Option<String> {
    let external = |t: &TensorProto| t.data_location == Some(1) || !t.external_data.is_empty();
    let in_tensors = |tensors: &[TensorProto]| tensors.iter().find(|t| external(t)).map(|t| t.name.clone());
    in_tensors(&graph.initializer).or_else(|| {
        graph.node.iter().flat_map(|n| &n.attribute).find_map(|a| {
            a.t.iter()
                .chain(&a.tensors)
                .find(|t| external(t))
                .map(|t| t.name.clone())
                .or_else(|| a.g.iter().chain(&a.graphs).find_map(external_tensor))
        })
    })
}

/// Lower-case hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Just the version, read before the rest so that its error can name it.
#[derive(Deserialize)]
struct Version {
    contract: Option<serde_json::Value>,
}

/// Parses and validates a contract document; errors name `path` and the field. Duplicate keys
/// are refused (a second value must not silently win).
pub fn parse_contract(path: &Path, json: &str) -> Result<ModelSpec, ModelError> {
    let field_error = |e: serde_path_to_error::Error<serde_json::Error>| {
        let reason = e.inner().to_string();
        ModelError::contract(path, crate::schema::field_path(e.path(), &reason), reason)
    };
    let version: Version =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(json)).map_err(|e| {
            if e.inner().is_syntax() || e.inner().is_eof() {
                ModelError::contract(path, METADATA_KEY, format!("not JSON: {}", e.inner()))
            } else {
                field_error(e)
            }
        })?;
    match version.contract {
        None => return Err(ModelError::contract(path, "contract", "missing (the contract version number)")),
        Some(v) if v.as_u64() != Some(CONTRACT_VERSION) => {
            return Err(ModelError::contract(
                path,
                "contract",
                format!("unsupported contract version {v}; this runtime knows version {CONTRACT_VERSION}"),
            ))
        }
        Some(_) => {}
    }
    let doc: Document =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(json)).map_err(field_error)?;
    validate(path, doc)
}

fn validate(path: &Path, doc: Document) -> Result<ModelSpec, ModelError> {
    let fail = |field: &str, reason: String| Err(ModelError::contract(path, field, reason));
    let input = &doc.input;
    let name_ok =
        |name: &str| !name.is_empty() && name.len() <= limits::NAME_BYTES && !name.chars().any(char::is_control);
    if !name_ok(&doc.name) {
        return fail("name", format!("must be 1 to {} bytes without control characters", limits::NAME_BYTES));
    }
    if !name_ok(&input.name) {
        return fail("input.name", format!("must be 1 to {} bytes without control characters", limits::NAME_BYTES));
    }
    if input.layout != "NCHW" {
        return fail("input.layout", "only \"NCHW\" is supported".into());
    }
    if input.dtype != "f32" {
        return fail("input.dtype", "only \"f32\" is supported".into());
    }
    if !input.size.iter().all(|s| limits::INPUT_SIDE.contains(s)) {
        return fail("input.size", format!("each side must be in {:?} pixels", limits::INPUT_SIDE));
    }
    if !input.std.iter().all(|s| limits::STD.contains(s)) {
        return fail("input.std", format!("each value must be in {:?}", limits::STD));
    }
    if !input.mean.iter().all(|m| limits::MEAN.contains(m)) {
        return fail("input.mean", format!("each value must be in {:?}", limits::MEAN));
    }
    if !doc.grid.iter().all(|g| limits::GRID_SIDE.contains(g)) {
        return fail("grid", format!("each side must be in {:?} patches", limits::GRID_SIDE));
    }
    if doc.grid[0] > input.size[0] || doc.grid[1] > input.size[1] {
        return fail("grid", "the patch grid cannot be finer than the input".into());
    }
    if !limits::LAYERS.contains(&doc.layers.len()) {
        return fail("layers", format!("between {} and {} layers", limits::LAYERS.start(), limits::LAYERS.end()));
    }
    let outputs = &doc.outputs;
    if outputs.patch_logits.is_none() && outputs.patch_features.is_none() {
        return fail("outputs", "needs `patch_logits` or `patch_features` to make an anomaly map".into());
    }
    for (role, name) in [
        ("patch_logits", &outputs.patch_logits),
        ("image_logits", &outputs.image_logits),
        ("patch_features", &outputs.patch_features),
    ] {
        if name.as_deref().is_some_and(|n| !name_ok(n)) {
            return fail(&format!("outputs.{role}"), format!("must be 1 to {} bytes", limits::NAME_BYTES));
        }
    }
    match (&outputs.patch_features, doc.feature_dim) {
        (Some(_), None) => return fail("feature_dim", "required when `outputs.patch_features` is present".into()),
        (_, Some(d)) if !limits::FEATURE_DIM.contains(&d) => {
            return fail("feature_dim", format!("must be in {:?}", limits::FEATURE_DIM))
        }
        _ => {}
    }
    let patches = doc.grid[0] * doc.grid[1];
    let values = doc.layers.len() * patches * (2 + doc.feature_dim.unwrap_or(0));
    if values > limits::OUTPUT_VALUES {
        return fail(
            "feature_dim",
            format!("the outputs would hold {values} values, more than {}", limits::OUTPUT_VALUES),
        );
    }
    if let Some(refine) = doc.refine {
        if refine.radius > doc.grid[0].max(doc.grid[1]) {
            return fail("refine.radius", "must be at most the grid's longer side".into());
        }
        if !limits::SHARPNESS.contains(&refine.sharpness) {
            return fail("refine.sharpness", format!("must be in {:?}", limits::SHARPNESS));
        }
    }
    let score = doc.score;
    if !limits::SIGMA.contains(&score.sigma) {
        return fail("score.sigma", format!("must be in {:?} pixels", limits::SIGMA));
    }
    if !(score.top_k > 0.0 && score.top_k <= 1.0) {
        return fail("score.top_k", "must be in (0, 1]".into());
    }
    if !(0.0..=1.0).contains(&score.image_logits_weight) {
        return fail("score.image_logits_weight", "must be in [0, 1]".into());
    }
    if !limits::THRESHOLD.contains(&score.threshold) {
        return fail("score.threshold", format!("must be in {:?}", limits::THRESHOLD));
    }
    Ok(ModelSpec {
        name: doc.name,
        input: doc.input,
        grid: doc.grid,
        layers: doc.layers,
        feature_dim: doc.feature_dim,
        outputs: doc.outputs,
        refine: doc.refine,
        score,
    })
}

impl ModelSpec {
    /// Number of tapped layers `L`.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Number of patches `h*w`.
    pub(crate) fn patch_count(&self) -> usize {
        self.grid[0] * self.grid[1]
    }

    /// Number of elements of the NCHW input tensor.
    pub fn input_len(&self) -> usize {
        3 * self.input.size[0] * self.input.size[1]
    }

    /// The input tensor's shape, `[1, 3, H, W]`.
    pub fn input_shape(&self) -> [usize; 4] {
        [1, 3, self.input.size[0], self.input.size[1]]
    }

    /// Each present output as (role, graph name, expected shape).
    pub(crate) fn expected_outputs(&self) -> Vec<(OutputRole, &str, Vec<usize>)> {
        let [h, w] = self.grid;
        let l = self.layer_count();
        let mut expected = Vec::new();
        if let Some(name) = &self.outputs.patch_logits {
            expected.push((OutputRole::PatchLogits, name.as_str(), vec![l, 2, h, w]));
        }
        if let Some(name) = &self.outputs.image_logits {
            expected.push((OutputRole::ImageLogits, name.as_str(), vec![1, 2]));
        }
        if let (Some(name), Some(d)) = (&self.outputs.patch_features, self.feature_dim) {
            expected.push((OutputRole::PatchFeatures, name.as_str(), vec![l, h * w, d]));
        }
        expected
    }
}

/// What an output is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputRole {
    /// `patch_logits`.
    PatchLogits,
    /// `image_logits`.
    ImageLogits,
    /// `patch_features`.
    PatchFeatures,
}

impl OutputRole {
    /// The contract's name of the role (`outputs.<name>`).
    pub fn key(self) -> &'static str {
        match self {
            OutputRole::PatchLogits => "patch_logits",
            OutputRole::ImageLogits => "image_logits",
            OutputRole::PatchFeatures => "patch_features",
        }
    }
}
