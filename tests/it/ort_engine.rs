//! The ONNX Runtime engine: parity with tract, provider fallback, and what happens when ONNX
//! Runtime cannot be loaded. Needs the library from the pinned onnxruntime wheel: ORT_DYLIB_PATH,
//! or the one tests/run-all.sh installs in models/.venv.
#![cfg(feature = "ort")]

use crate::common;

use clipada::model::backend::{load_engine, Backend, EngineConfig};
use clipada::model::ort::prepare_engine_cache;
use clipada::model::tract::TractEngine;
use clipada::model::{Engine, ModelFile, RawOutputs};

fn ort_config() -> EngineConfig {
    EngineConfig { backend: Backend::Ort, ort_library: Some(common::ort_library()), ..EngineConfig::default() }
}

fn raw_of(engine: &mut dyn Engine, file: &ModelFile, input: &[f32]) -> RawOutputs {
    let mut raw = RawOutputs::for_spec(&file.spec);
    engine.run(input, &mut raw).unwrap();
    raw
}

#[test]
fn ort_cpu_matches_tract_within_1e4_on_both_fixtures() {
    for model in [common::tiny_model(), common::default_model()] {
        let file = ModelFile::open(&model).unwrap();
        let mut ort = load_engine(&file, &ort_config()).unwrap();
        assert_eq!((ort.engine.info().engine, ort.engine.info().provider), ("ort", "cpu"));
        let mut tract = TractEngine::load(&file).unwrap();
        // A structured input (a ramp per channel), not zeros, so every output is exercised.
        let n = file.spec.input_len();
        let input: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let (a, b) = (raw_of(ort.engine.as_mut(), &file, &input), raw_of(&mut tract, &file, &input));
        for (name, x, y) in [
            ("patch_logits", &a.patch_logits, &b.patch_logits),
            ("image_logits", &a.image_logits, &b.image_logits),
            ("patch_features", &a.patch_features, &b.patch_features),
        ] {
            assert_eq!(x.is_some(), y.is_some(), "{name}");
            if let (Some(x), Some(y)) = (x, y) {
                common::assert_close(&format!("{} {name}", file.spec.name), x, y);
            }
        }
    }
}

#[test]
fn missing_gpu_providers_are_skipped_with_their_reasons_and_cpu_runs() {
    let file = ModelFile::open(&common::tiny_model()).unwrap();
    let chosen = load_engine(&file, &ort_config()).unwrap();
    assert_eq!(chosen.engine.info().provider, "cpu");
    assert_eq!(chosen.skipped.len(), 2, "{:?}", chosen.skipped);
    assert!(chosen.skipped[0].starts_with("tensorrt: "), "{:?}", chosen.skipped);
    assert!(chosen.skipped[1].starts_with("cuda: "), "{:?}", chosen.skipped);
}

#[test]
fn missing_library_falls_back_to_tract_under_auto_and_is_refused_under_ort() {
    // In a fresh process: ONNX Runtime, once loaded, stays loaded for the process.
    let check = |backend: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_clipada"))
            .args(["check", "--backend", backend, "--model"])
            .arg(common::tiny_model())
            .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
            .output()
            .unwrap()
    };
    let auto = check("auto");
    assert_eq!(auto.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&auto.stdout);
    assert!(stdout.contains("skipped ort: /nonexistent/libonnxruntime.so: no such ONNX Runtime library"), "{stdout}");
    assert!(stdout.contains("on engine tract, provider cpu"), "{stdout}");
    let insist = check("ort");
    assert_eq!(insist.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&insist.stderr).contains("/nonexistent/libonnxruntime.so"));
}

#[test]
fn unwritable_tensorrt_engine_cache_is_an_error_not_a_silent_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"").unwrap();
    let error = prepare_engine_cache(&file.join("engines")).unwrap_err();
    assert!(error.contains("not-a-folder"), "{error}");
    let fresh = dir.path().join("cache/tensorrt");
    prepare_engine_cache(&fresh).unwrap();
    assert!(fresh.is_dir(), "a missing cache folder is created");
}

#[test]
fn check_command_names_engine_and_provider() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_clipada"))
        .args(["check", "--backend", "ort", "--model"])
        .arg(common::tiny_model())
        .env("ORT_DYLIB_PATH", common::ort_library())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("skipped tensorrt: "), "{stdout}");
    assert!(stdout.contains("on engine ort, provider cpu"), "{stdout}");
}
