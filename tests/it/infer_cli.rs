//! `clipada infer` as a user runs it: the binary, its output lines and its exit codes.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn clipada(args: &[&str], inputs: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipada")).args(args).args(inputs).output().unwrap()
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn corrupt_image_gets_error_verdict_and_the_others_are_judged() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_into(&common::sample("test/good/000.png"), dir.path(), "a_good.png");
    let truncated = &std::fs::read(common::sample("test/scratch/000.png")).unwrap()[..300];
    std::fs::write(dir.path().join("b_corrupt.png"), truncated).unwrap();
    common::copy_into(&common::sample("test/scratch/000.png"), dir.path(), "c_scratch.png");
    let model = common::tiny_model();
    let output = clipada(&["infer", "--json", "--model", model.to_str().unwrap()], &[dir.path()]);

    assert_eq!(output.status.code(), Some(3), "exit 3 when an image was not judged");
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 3, "one line per image: {lines:?}");
    let names: Vec<&str> = lines.iter().map(|l| l["path"].as_str().unwrap().rsplit('/').next().unwrap()).collect();
    assert_eq!(names, ["a_good.png", "b_corrupt.png", "c_scratch.png"]);
    for judged in [&lines[0], &lines[2]] {
        assert!(judged["score"].as_f64().unwrap().is_finite());
        assert!(matches!(judged["verdict"].as_str(), Some("pass" | "fail")));
        assert!(judged.get("error").is_none());
        assert!(judged["elapsed_ms"].as_f64().unwrap() > 0.0);
    }
    let corrupt = &lines[1];
    assert_eq!(corrupt["verdict"], "error");
    assert!(corrupt["score"].is_null());
    assert!(corrupt["error"].as_str().unwrap().contains("b_corrupt.png"), "{corrupt}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("b_corrupt.png"));
}

#[test]
fn missing_file_gets_error_verdict_naming_it() {
    let model = common::tiny_model();
    let output = clipada(&["infer", "--model", model.to_str().unwrap()], &[Path::new("/nonexistent/part.png")]);
    assert_eq!(output.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.trim(), "/nonexistent/part.png - error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/part.png"));
}

#[test]
fn plain_output_is_path_score_verdict_and_threshold_decides() {
    let model = common::tiny_model();
    let good = common::sample("test/good/000.png");
    let golden_score = common::golden("good").refined.score as f64;
    for (threshold, verdict) in [(golden_score - 1e-3, "fail"), (golden_score + 1e-3, "pass")] {
        let t = threshold.to_string();
        let output = clipada(&["infer", "--threshold", &t, "--model", model.to_str().unwrap()], &[&good]);
        assert_eq!(output.status.code(), Some(0));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<&str> = stdout.split_whitespace().collect();
        assert_eq!(fields.len(), 3, "{stdout}");
        assert_eq!(fields[0], good.to_str().unwrap());
        assert!((fields[1].parse::<f64>().unwrap() - golden_score).abs() < 1e-4);
        assert_eq!(fields[2], verdict, "threshold {threshold}");
    }
}

#[test]
fn no_refine_flag_gives_the_unrefined_reference_score() {
    let model = common::tiny_model();
    let output = clipada(
        &["infer", "--json", "--no-refine", "--model", model.to_str().unwrap()],
        &[&common::sample("test/scratch/000.png")],
    );
    let expected = common::golden("scratch").unrefined.score as f64;
    let score = json_lines(&output)[0]["score"].as_f64().unwrap();
    assert!((score - expected).abs() < 1e-4, "{score} vs {expected}");
}

#[test]
fn directories_are_searched_recursively_and_overlays_written_per_input() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("line2/cam1");
    std::fs::create_dir_all(&nested).unwrap();
    common::copy_into(&common::sample("test/good/001.png"), dir.path(), "top.PNG");
    common::copy_into(&common::sample("test/chip/000.png"), &nested, "part.png");
    std::fs::write(nested.join("notes.txt"), "not an image").unwrap();
    let overlays = tempfile::tempdir().unwrap();
    let model = common::tiny_model();
    let args = ["infer", "--overlay-dir", overlays.path().to_str().unwrap(), "--model", model.to_str().unwrap()];
    let output = clipada(&args, &[dir.path()]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 2, "notes.txt is not an image");
    for written in [overlays.path().join("top.png"), overlays.path().join("line2/cam1/part.png")] {
        let overlay = image::open(&written).unwrap_or_else(|e| panic!("{}: {e}", written.display()));
        assert_eq!(overlay.width(), 160, "overlay keeps the frame size");
    }
}

#[test]
fn maps_written_as_npy_match_the_reference_map() {
    let dir = tempfile::tempdir().unwrap();
    let golden = common::golden("scratch");
    let image = common::root().join(&golden.image);
    let model = common::tiny_model();
    let maps = dir.path().join("maps");
    let output = clipada(
        &["infer", "--json", "--model", model.to_str().unwrap(), "--maps-dir", maps.to_str().unwrap()],
        &[&image],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let line = &json_lines(&output)[0];
    let path = line["map"].as_str().unwrap();
    let bytes = std::fs::read(path).unwrap();
    // NumPy format 1.0: magic, version, header length, a Python dict literal, then the data.
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0, "data aligned to 64 bytes");
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    let shape = &golden.refined.map.shape;
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"), "{header}");
    assert!(header.contains(&format!("'shape': ({}, {})", shape[0], shape[1])), "{header}");
    let values: Vec<f32> =
        bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    common::assert_close("map from --maps-dir", &values, &golden.refined.map.data);
}
