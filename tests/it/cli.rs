//! The command line around the commands: version, shell completions, manual page, log levels.

use std::os::unix::fs::MetadataExt;
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
    if let (true, Some(library)) = (cfg!(feature = "ort"), std::env::var_os("ORT_DYLIB_PATH")) {
        // Loaded only when root alone can change the file and the folders above it.
        let root_only = |p: &std::path::Path| {
            p.ancestors().all(|p| std::fs::metadata(p).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0))
        };
        let library = std::path::PathBuf::from(library);
        if root_only(&library) && root_only(&library.canonicalize().unwrap()) {
            assert!(text.contains("ONNX Runtime: 1."), "the library's version: {text}");
        } else {
            assert!(text.contains("not loaded") && text.contains("--allow-insecure-library"), "{text}");
        }
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

/// `clipada ARGS` with standard error into a file (named in `JOURNAL_STREAM` when `journal`):
/// the exit code and what it logged.
fn logged(args: &[&str], journal: bool) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stderr");
    let file = std::fs::File::create(&path).unwrap();
    let stat = rustix::fs::fstat(&file).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_clipada"));
    command.args(args).stdout(std::process::Stdio::null()).stderr(file);
    if journal {
        command.env("JOURNAL_STREAM", format!("{}:{}", stat.st_dev, stat.st_ino));
    } else {
        command.env_remove("JOURNAL_STREAM");
    }
    let code = command.status().unwrap().code();
    (code, std::fs::read_to_string(&path).unwrap())
}

#[test]
fn log_lines_name_their_level_and_the_flags_choose_how_much_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    std::fs::create_dir(&good).unwrap();
    for name in ["000.png", "001.png", "002.png"] {
        crate::common::copy_into(&crate::common::sample(&format!("train/good/{name}")), &good, name);
    }
    let memory = dir.path().join("three.memory");
    let model = crate::common::tiny_model();
    let calibrate = |level: &[&str]| {
        let mut args = vec!["calibrate", "--backend", "tract", "--model", model.to_str().unwrap()];
        args.extend(["--good", good.to_str().unwrap(), "--out", memory.to_str().unwrap()]);
        args.extend(level);
        logged(&args, false)
    };
    let few = "clipada: warning: with fewer than 8 good images";
    let (code, log) = calibrate(&[]);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains(few), "{log}");
    assert!(!log.contains("debug:"), "no debug lines by default: {log}");
    let (_, log) = calibrate(&["-q"]);
    assert!(log.contains(few), "-q keeps warnings: {log}");
    let (_, log) = calibrate(&["-qq"]);
    assert!(!log.contains(few), "-qq shows errors only: {log}");
    let (_, log) = calibrate(&["-v"]);
    assert!(log.contains("clipada: debug: ") && log.contains("loaded engine=\"tract\""), "{log}");

    // An input that cannot be judged is an error: shown even with -qq, and under systemd
    // (standard error is the journal stream) led by its syslog priority.
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"not an image").unwrap();
    let infer = ["infer", "--backend", "tract", "--model", model.to_str().unwrap(), broken.to_str().unwrap(), "-qq"];
    let (code, log) = logged(&infer, false);
    assert_eq!(code, Some(3), "{log}");
    assert!(log.starts_with("clipada: error: ") && log.contains("broken.png"), "{log}");
    let (_, log) = logged(&infer, true);
    assert!(log.starts_with("<3>") && log.contains("broken.png") && !log.contains("clipada: error"), "{log}");
}

#[test]
fn control_characters_in_file_names_cannot_forge_a_result_line() {
    let dir = tempfile::tempdir().unwrap();
    let forged = "part\ngood.png 0.000001 pass\n.png";
    let image = crate::common::copy_into(&crate::common::sample("test/chip/000.png"), dir.path(), forged);
    let missing = dir.path().join("gone\ngood.png 0.000001 pass\n.png");
    let model = crate::common::tiny_model();
    let output = Command::new(env!("CARGO_BIN_EXE_clipada"))
        .args(["infer", "--backend", "tract", "--model"])
        .args([&model, &image, &missing])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "one line per image given: {stdout}");
    let judged = lines[0].rsplitn(3, ' ').collect::<Vec<_>>();
    assert!(judged[2].ends_with("part\\u{a}good.png 0.000001 pass\\u{a}.png"), "{stdout}");
    assert!(judged[1].parse::<f32>().is_ok() && ["pass", "fail"].contains(&judged[0]), "{stdout}");
    assert!(lines[1].ends_with("gone\\u{a}good.png 0.000001 pass\\u{a}.png - error"), "{stdout}");
    assert_eq!(stderr.lines().filter(|l| l.contains("gone")).count(), 1, "{stderr}");
    assert!(stderr.contains("gone\\u{a}good.png"), "{stderr}");
}

#[test]
fn a_closed_standard_error_loses_log_lines_not_results() {
    // A pipe whose reading end is closed: every write to standard error fails (EPIPE).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let model = crate::common::tiny_model();
    let (good, missing) =
        (crate::common::sample("test/good/000.png"), std::path::PathBuf::from("/nonexistent/part.png"));
    let output = Command::new(env!("CARGO_BIN_EXE_clipada"))
        .args(["-v", "infer", "--backend", "tract", "--model"])
        .args([&model, &good, &missing])
        .stderr(writer)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "an image not judged, no crash: {stdout}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.lines().last().unwrap().ends_with("part.png - error"), "{stdout}");
}
