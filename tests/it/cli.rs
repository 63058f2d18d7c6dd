//! The command line around the commands: version, shell completions, manual page.

use std::process::Command;

fn clipada(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_clipada")).args(args).output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn version_names_the_contract_the_features_and_the_onnx_runtime_found() {
    let (code, text) = clipada(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(text.starts_with(&format!("clipada {}", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains("model contract 1, memory format 2"), "{text}");
    assert!(text.contains("features: "), "{text}");
    assert!(text.contains("ONNX Runtime: "), "{text}");
    if cfg!(feature = "ort") && std::env::var_os("ORT_DYLIB_PATH").is_some() {
        assert!(text.contains("ONNX Runtime: 1."), "the library's version: {text}");
    }
}

#[test]
fn completions_and_the_manual_are_generated_from_the_command_line() {
    let (code, bash) = clipada(&["completions", "bash"]);
    assert_eq!(code, Some(0));
    assert!(bash.contains("_clipada") && bash.contains("calibrate") && bash.contains("--overlay-dir"), "{bash}");
    let (code, manual) = clipada(&["manual"]);
    assert_eq!(code, Some(0));
    assert!(manual.contains(".TH clipada 1") && manual.contains(".TH clipada-infer 1"), "{manual}");
    assert!(!manual.contains("worker"), "the internal flag stays out of the manual");
}
