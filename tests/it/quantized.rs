//! Quantized models (models/quantize.py) through the same contract: tract runs the forms it
//! computes correctly and refuses the one it would compute wrongly.

use crate::common;

use clipada::model::tract::TractEngine;
use clipada::model::{Engine, ModelError, ModelFile, RawOutputs};
use clipada::score::Scorer;

fn fixture(name: &str) -> std::path::PathBuf {
    common::root().join("models/fixtures").join(name)
}

fn run_tract(model: &str, input: &[f32]) -> RawOutputs {
    let file = ModelFile::open(&fixture(model)).unwrap();
    let mut raw = RawOutputs::for_spec(&file.spec);
    TractEngine::load(&file).unwrap().run(input, &mut raw).unwrap();
    raw
}

#[test]
fn tract_refuses_a_qdq_model_whose_softmax_is_requantized() {
    let path = fixture("tiny-clipada-qdq-int8-softmax.onnx");
    let file = ModelFile::open(&path).unwrap();
    let error = match TractEngine::load(&file) {
        Ok(_) => panic!("tract accepted a model it computes wrongly"),
        Err(e) => e,
    };
    assert!(matches!(error, ModelError::Unsupported { engine: "tract", .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("tiny-clipada-qdq-int8-softmax.onnx") && message.contains("--keep-float"), "{message}");
}

#[test]
fn tract_runs_qdq_with_float_softmax_and_dynamic_int8_close_to_fp32() {
    // Quantization error, not engine error: a bound on the image score (a probability) that
    // still catches garbage output.
    const SCORE_TOLERANCE: f32 = 0.05;
    let golden = common::golden("scratch");
    let spec = ModelFile::open(&common::tiny_model()).unwrap().spec;
    let score = |raw: &RawOutputs| Scorer::new(&spec, true, None).unwrap().score(raw).unwrap().score;
    let fp32 = run_tract("tiny-clipada.onnx", &golden.input.data);
    for model in ["tiny-clipada-qdq.onnx", "tiny-clipada-dynamic.onnx"] {
        let quantized = run_tract(model, &golden.input.data);
        let diff = (score(&quantized) - score(&fp32)).abs();
        assert!(diff < SCORE_TOLERANCE, "{model}: image score differs from fp32 by {diff}");
        let logits = |raw: &RawOutputs| raw.patch_logits.clone().unwrap();
        assert!(common::max_abs_diff(&logits(&quantized), &logits(&fp32)) > 0.0, "{model}: not quantized at all");
    }
}
