//! The pure-Rust CPU engine, on tract. Always built: it is the fallback of every other engine.

use tract_onnx::prelude::*;

use super::contract::{ModelError, ModelFile, OutputRole};
use super::{Engine, EngineError, EngineInfo, Precision, RawOutputs};

type Plan = TypedSimplePlan;

/// A model optimised by tract, with its run state kept between frames.
pub struct TractEngine {
    state: TypedSimpleState,
    input_shape: [usize; 4],
    /// For each graph output index, the role it fills (`None`: not used by the runtime).
    roles: Vec<Option<OutputRole>>,
}

impl TractEngine {
    /// Builds the engine for `file`, checking the graph's input and outputs against the contract.
    pub fn load(file: &ModelFile) -> Result<TractEngine, ModelError> {
        let spec = &file.spec;
        let unreadable = |e: TractError| ModelError::Unreadable { path: file.path.clone(), reason: format!("{e:#}") };
        let contract = |field: String, reason: String| ModelError::Contract { path: file.path.clone(), field, reason };

        refuse_known_defects(file)?;
        let graph_outputs = file.graph_outputs();
        let expected = spec.expected_outputs();
        let mut roles = vec![None; graph_outputs.len()];
        for (role, name, _) in &expected {
            let index = graph_outputs.iter().position(|o| o == name).ok_or_else(|| {
                contract(format!("outputs.{}", role.key()), format!("the graph has no output named {name:?}"))
            })?;
            roles[index] = Some(*role);
        }

        let input_fact = f32::fact(spec.input_shape()).into();
        let model = tract_onnx::onnx()
            .model_for_proto_model(&file.proto)
            .and_then(|m| m.with_input_fact(0, input_fact))
            .and_then(|m| m.into_typed())
            .map_err(unreadable)?;
        for (index, role) in roles.iter().enumerate() {
            let Some(role) = role else { continue };
            let (_, _, shape) = expected.iter().find(|(r, _, _)| r == role).expect("role comes from expected");
            let fact = model.output_fact(index).map_err(unreadable)?;
            let actual: Option<Vec<usize>> = fact.shape.as_concrete().map(|s| s.to_vec());
            if actual.as_ref() != Some(shape) {
                return Err(contract(
                    format!("outputs.{}", role.key()),
                    format!("the graph gives shape {:?}, the contract implies {shape:?}", fact.shape),
                ));
            }
        }
        let plan: Arc<Plan> = model.into_optimized().and_then(|m| m.into_runnable()).map_err(unreadable)?;
        let state = TypedSimpleState::new(&plan).map_err(unreadable)?;
        Ok(TractEngine { state, input_shape: spec.input_shape(), roles })
    }
}

/// Fused attention operators: this build's tract reads none of them (tract-onnx without its
/// `transformers` feature), and would take a com.microsoft node for opset 23's.
const FUSED_ATTENTION: [&str; 3] = ["Attention", "MultiHeadAttention", "GroupQueryAttention"];

/// Refuses graphs that tract would load but compute wrongly or not at all: QOperator
/// quantization (`QLinear*` operators), fused attention, and QDQ graphs whose Softmax output is
/// re-quantized (tract's result is wrong there; `models/quantize.py --keep-float` avoids it).
fn refuse_known_defects(file: &ModelFile) -> Result<(), ModelError> {
    let refuse = |reason: String| ModelError::Unsupported { path: file.path.clone(), engine: "tract", reason };
    let nodes = file.proto.graph.as_ref().map(|g| g.node.as_slice()).unwrap_or_default();
    if let Some(node) = nodes.iter().find(|n| FUSED_ATTENTION.contains(&n.op_type.as_str())) {
        return Err(refuse(format!(
            "node {:?} is a fused {} operator; use --backend ort, or export attention as plain operators \
             (models/export.py)",
            node.name, node.op_type
        )));
    }
    if let Some(node) = nodes.iter().find(|n| n.op_type.starts_with("QLinear")) {
        return Err(refuse(format!(
            "{} is QOperator quantization; use --backend ort, or a QDQ or dynamic model",
            node.op_type
        )));
    }
    let softmax_outputs: Vec<&String> =
        nodes.iter().filter(|n| n.op_type == "Softmax").flat_map(|n| &n.output).collect();
    let requantized =
        nodes.iter().any(|n| n.op_type == "QuantizeLinear" && n.input.iter().any(|i| softmax_outputs.contains(&i)));
    if requantized {
        return Err(refuse(
            "its Softmax output is re-quantized (QDQ); use --backend ort, or quantize with `models/quantize.py --keep-float yes`"
                .into(),
        ));
    }
    Ok(())
}

impl Engine for TractEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo { engine: "tract", provider: "cpu", precision: Precision::Fp32 }
    }

    fn run(&mut self, input: &[f32], out: &mut RawOutputs) -> Result<(), EngineError> {
        let failed = |e: TractError| EngineError(format!("{e:#}"));
        let tensor = Tensor::from_shape(&self.input_shape, input).map_err(failed)?;
        let outputs = self.state.run(tvec!(tensor.into())).map_err(failed)?;
        for (value, role) in outputs.iter().zip(&self.roles) {
            let Some(role) = role else { continue };
            let plain = value.try_as_plain_ram().map_err(failed)?;
            let data = plain.as_slice::<f32>().map_err(failed)?;
            let slot = (out.slot(*role).as_mut())
                .ok_or_else(|| EngineError(format!("no buffer for output {}", role.key())))?;
            if slot.len() != data.len() {
                return Err(EngineError(format!(
                    "output {} has {} values, expected {}",
                    role.key(),
                    data.len(),
                    slot.len()
                )));
            }
            slot.copy_from_slice(data);
        }
        Ok(())
    }
}
