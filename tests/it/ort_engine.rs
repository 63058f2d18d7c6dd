//! The ONNX Runtime engine: parity with tract, provider fallback, and what happens when ONNX
//! Runtime cannot be loaded. Needs the library from the pinned onnxruntime wheel: ORT_DYLIB_PATH,
//! or the one tests/run-all.sh installs in models/.venv.
#![cfg(feature = "ort")]

use crate::common;

use std::os::unix::fs::PermissionsExt;

use clipada::model::backend::load_engine;
use clipada::model::tract::TractEngine;
use clipada::model::{Engine, ModelFile, RawOutputs};

use common::ort_config;

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
fn a_library_others_could_change_is_loaded_only_when_allowed_and_never_by_a_relative_path() {
    // A copy of the real library in a folder anyone may write (a planted one would be there).
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let planted = shared.join("libonnxruntime.so");
    std::fs::copy(common::ort_library(), &planted).unwrap();
    let check = |library: &std::path::Path, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_clipada"))
            .args(["check", "--backend", "ort", "--model"])
            .arg(common::tiny_model())
            .args(extra)
            .env("ORT_DYLIB_PATH", library)
            .current_dir(&shared)
            .output()
            .unwrap()
    };
    let refused = check(&planted, &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("loaded only when root alone") && stderr.contains("--allow-insecure-library"), "{stderr}");
    assert!(stderr.contains(&format!("{}: owner uid", shared.display())), "names the folder at fault: {stderr}");
    let relative = check(std::path::Path::new("libonnxruntime.so"), &[]);
    assert_eq!(relative.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&relative.stderr).contains("not an absolute path"));
    // Not even when allowed: the file checked would not be the file loaded (dlopen searches).
    let relative = check(std::path::Path::new("libonnxruntime.so"), &["--allow-insecure-library"]);
    assert_eq!(relative.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&relative.stderr).contains("not an absolute path"));
    let allowed = check(&planted, &["--allow-insecure-library"]);
    assert_eq!(allowed.status.code(), Some(0), "{}", String::from_utf8_lossy(&allowed.stderr));
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("on engine ort"));
}

#[test]
fn check_command_names_engine_and_provider() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_clipada"))
        .args(["check", "--backend", "ort", "--allow-insecure-library", "--model"])
        .arg(common::tiny_model())
        .env("ORT_DYLIB_PATH", common::ort_library())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("skipped tensorrt: "), "{stdout}");
    assert!(stdout.contains("on engine ort, provider cpu"), "{stdout}");
}
