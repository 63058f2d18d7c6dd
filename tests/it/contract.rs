//! Bad model files are refused at load, with an error that names the file and the field.

use crate::common;

use std::path::{Path, PathBuf};

use clipada::model::tract::TractEngine;
use clipada::model::{ModelError, ModelFile};
use prost::Message;
use serde_json::{json, Value};
use tract_onnx::pb::ModelProto;

/// The tiny fixture's proto and contract document.
fn fixture() -> (ModelProto, Value) {
    let proto = ModelFile::open(&common::tiny_model()).unwrap().proto;
    let doc = proto.metadata_props.iter().find(|p| p.key == "clipada").unwrap().value.clone();
    (proto, serde_json::from_str(&doc).unwrap())
}

/// Writes the fixture with its contract document replaced by `edit(document)`.
fn model_with_contract(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let (mut proto, mut doc) = fixture();
    edit(&mut doc);
    proto.metadata_props.iter_mut().find(|p| p.key == "clipada").unwrap().value = doc.to_string();
    let path = dir.join("edited.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    path
}

/// Loads `path` as the runtime does and returns the refusal.
fn refusal(path: &Path) -> ModelError {
    refusals(path).remove(0)
}

/// The refusal of each engine (tract, and ONNX Runtime when built in); one when the file
/// itself is refused before any engine sees it.
fn refusals(path: &Path) -> Vec<ModelError> {
    let file = match ModelFile::open(path) {
        Ok(file) => file,
        Err(e) => return vec![e],
    };
    let tract = TractEngine::load(&file).err().unwrap_or_else(|| panic!("tract accepted {}", path.display()));
    [Some(tract), ort_refusal(&file)].into_iter().flatten().collect()
}

/// ONNX Runtime's refusal of `file`.
#[cfg(feature = "ort")]
fn ort_refusal(file: &ModelFile) -> Option<ModelError> {
    use clipada::model::backend::{load_engine, EngineLoadError};
    match load_engine(file, &common::ort_config()) {
        Err(EngineLoadError::Model(e)) => Some(e),
        Err(other) => panic!("ONNX Runtime failed otherwise on {}: {other}", file.path.display()),
        Ok(_) => panic!("ONNX Runtime accepted {}", file.path.display()),
    }
}

/// Without ONNX Runtime built in, only tract judges.
#[cfg(not(feature = "ort"))]
fn ort_refusal(_: &ModelFile) -> Option<ModelError> {
    None
}

/// Asserts every engine's refusal is a contract error on `field` whose message names the file.
fn assert_refused_on(edit: impl FnOnce(&mut Value), field: &str, reason_part: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = model_with_contract(dir.path(), edit);
    for error in refusals(&path) {
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "file not named: {message}");
        assert!(message.contains(reason_part), "reason not given: {message}");
        match error {
            ModelError::Contract { field: actual, .. } => assert_eq!(actual, field, "{message}"),
            other => panic!("not a contract error: {other}"),
        }
    }
}

#[test]
fn the_unmodified_fixture_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_with_contract(dir.path(), |_| {});
    TractEngine::load(&ModelFile::open(&path).unwrap()).unwrap();
}

#[test]
fn unknown_contract_version_is_refused_by_name() {
    assert_refused_on(|d| d["contract"] = json!(2), "contract", "unsupported contract version 2");
}

#[test]
fn missing_contract_version_is_refused() {
    assert_refused_on(|d| drop(d.as_object_mut().unwrap().remove("contract")), "contract", "missing");
}

#[test]
fn missing_field_is_refused_with_its_name() {
    assert_refused_on(|d| drop(d.as_object_mut().unwrap().remove("grid")), "grid", "missing field `grid`");
}

#[test]
fn missing_nested_field_is_refused_with_its_path() {
    assert_refused_on(|d| drop(d["score"].as_object_mut().unwrap().remove("sigma")), "score.sigma", "missing");
}

#[test]
fn ill_typed_nested_field_is_refused_with_its_path() {
    assert_refused_on(|d| d["input"]["size"] = json!("64x64"), "input.size", "invalid type");
}

#[test]
fn negative_standard_deviation_is_refused() {
    assert_refused_on(|d| d["input"]["std"][1] = json!(-0.2), "input.std", "must be in");
}

#[test]
fn grid_that_disagrees_with_the_graph_is_refused() {
    assert_refused_on(|d| d["grid"] = json!([4, 4]), "outputs.patch_logits", "the graph gives shape");
}

#[test]
fn layer_count_that_disagrees_with_the_graph_is_refused() {
    assert_refused_on(|d| d["layers"] = json!([1, 2, 3]), "outputs.patch_logits", "the graph gives shape");
}

#[test]
fn feature_size_that_disagrees_with_the_graph_is_refused() {
    assert_refused_on(|d| d["feature_dim"] = json!(16), "outputs.patch_features", "the graph gives shape");
}

#[test]
fn output_name_absent_from_the_graph_is_refused() {
    assert_refused_on(|d| d["outputs"]["image_logits"] = json!("cls_logits"), "outputs.image_logits", "no output");
}

#[test]
fn input_name_absent_from_the_graph_is_refused() {
    assert_refused_on(|d| d["input"]["name"] = json!("pixels"), "input.name", "exactly one");
}

#[test]
fn negative_refinement_sharpness_is_refused() {
    assert_refused_on(|d| d["refine"]["sharpness"] = json!(-1.0), "refine.sharpness", "must be in");
}

#[test]
fn unknown_key_is_refused_so_typos_do_not_fall_back_silently() {
    assert_refused_on(|d| d["score"]["treshold"] = json!(0.3), "score.treshold", "unknown field `treshold`");
}

#[test]
fn model_without_contract_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut proto, _) = fixture();
    proto.metadata_props.clear();
    let path = dir.path().join("plain.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    let message = refusal(&path).to_string();
    assert!(message.contains("plain.onnx") && message.contains("`clipada`"), "{message}");
}

#[test]
fn file_that_is_not_onnx_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.onnx");
    std::fs::write(&path, b"this is not a protobuf \xff\xff\xff").unwrap();
    let error = refusal(&path);
    assert!(matches!(error, ModelError::Unreadable { .. }), "{error}");
    assert!(error.to_string().contains("notes.onnx"));
}

#[test]
fn cli_exits_1_naming_file_and_field_for_a_bad_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_with_contract(dir.path(), |d| d["contract"] = json!(99));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_clipada"))
        .args(["infer", "--model"])
        .arg(&path)
        .arg(common::sample("test/good/000.png"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("edited.onnx") && stderr.contains("`contract`"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing judged, nothing printed");
}

#[test]
fn every_number_of_the_contract_is_bounded() {
    // Regressions: std = 1e38 gave every image the same score (PASS); sigma = 1e9 asked for
    // 48 GB at load; a radius of 2^64-1 overflowed; threshold 50 passed everything.
    assert_refused_on(|d| d["input"]["std"][0] = json!(1e38), "input.std", "must be in");
    assert_refused_on(|d| d["input"]["mean"][2] = json!(1e30), "input.mean", "must be in");
    assert_refused_on(|d| d["score"]["sigma"] = json!(1e9), "score.sigma", "must be in");
    assert_refused_on(|d| d["refine"]["radius"] = json!(18446744073709551615u64), "refine.radius", "at most");
    assert_refused_on(|d| d["score"]["threshold"] = json!(50), "score.threshold", "must be in");
    assert_refused_on(|d| d["score"]["threshold"] = json!(0), "score.threshold", "must be in");
    assert_refused_on(|d| d["input"]["size"] = json!([64, 100000]), "input.size", "must be in");
    assert_refused_on(|d| d["feature_dim"] = json!(1 << 20), "feature_dim", "must be in");
    assert_refused_on(|d| d["layers"] = json!(vec![0; 100]), "layers", "between");
}

#[test]
fn a_duplicated_key_or_a_second_contract_is_refused_never_resolved_silently() {
    let dir = tempfile::tempdir().unwrap();
    let (mut proto, doc) = fixture();
    let text = doc.to_string().replacen("\"threshold\":0.5", "\"threshold\":0.5,\"threshold\":0.001", 1);
    assert!(text.contains("0.001"), "the edit took");
    proto.metadata_props.iter_mut().find(|p| p.key == "clipada").unwrap().value = text;
    let path = dir.path().join("duplicate-key.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    let message = refusal(&path).to_string();
    assert!(message.contains("duplicate field `threshold`"), "{message}");

    let (mut proto, _) = fixture();
    let second = proto.metadata_props.iter().find(|p| p.key == "clipada").unwrap().clone();
    proto.metadata_props.push(second);
    let path = dir.path().join("two-contracts.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    let message = refusal(&path).to_string();
    assert!(message.contains("more than one"), "{message}");
}

#[test]
fn a_model_whose_weights_live_in_another_file_is_refused() {
    // Its hash would not cover them, and they could be read from anywhere in its folder.
    let dir = tempfile::tempdir().unwrap();
    let (mut proto, _) = fixture();
    let tensor = &mut proto.graph.as_mut().unwrap().initializer[0];
    tensor.data_location = Some(1);
    tensor
        .external_data
        .push(tract_onnx::pb::StringStringEntryProto { key: "location".into(), value: "weights.bin".into() });
    let path = dir.path().join("external.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    let message = refusal(&path).to_string();
    assert!(message.contains("external data"), "{message}");
}

#[test]
fn a_fifo_or_device_given_as_the_model_is_refused_at_once() {
    // Regression: a FIFO as --model blocked forever.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.onnx");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let message = refusal(&fifo).to_string();
    assert!(message.contains("not a regular file but a FIFO"), "{message}");
    let message = refusal(Path::new("/dev/urandom")).to_string();
    assert!(message.contains("character device"), "{message}");
}

#[test]
fn operators_tract_cannot_run_right_are_refused_on_tract_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    for op in ["Attention", "MultiHeadAttention", "GroupQueryAttention", "QLinearMatMul"] {
        let (mut proto, _) = fixture();
        let graph = proto.graph.as_mut().unwrap();
        graph.node.iter_mut().find(|n| n.op_type == "MatMul").unwrap().op_type = op.into();
        let path = dir.path().join(format!("{op}.onnx"));
        std::fs::write(&path, proto.encode_to_vec()).unwrap();
        let error = TractEngine::load(&ModelFile::open(&path).unwrap()).err().expect("tract refuses it");
        let text = error.to_string();
        assert!(matches!(error, ModelError::Unsupported { .. }), "{text}");
        assert!(text.starts_with(&path.display().to_string()) && text.contains(op), "{text}");
        assert!(text.contains("--backend ort"), "{text}");
    }
}
