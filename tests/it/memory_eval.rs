//! The memory branch from the user's side: calibrate, infer with the memory, eval, and the
//! refusals (a memory made for another model, a damaged memory file).

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn clipada(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipada")).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn calibrate(model: &Path, memory: &Path) -> Output {
    let good = common::sample("train/good");
    clipada(&[
        "calibrate",
        "--model",
        model.to_str().unwrap(),
        "--good",
        good.to_str().unwrap(),
        "--out",
        memory.to_str().unwrap(),
    ])
}

/// `clipada infer` of one good sample with the default model and `memory`.
fn infer_good_part_with(memory: &Path) -> Output {
    let model = common::default_model();
    let image = common::sample("test/good/000.png");
    clipada(&[
        "infer",
        "--model",
        model.to_str().unwrap(),
        "--memory",
        memory.to_str().unwrap(),
        image.to_str().unwrap(),
    ])
}

#[test]
fn calibrated_default_model_passes_good_samples_and_fails_defective_ones() {
    let dir = tempfile::tempdir().unwrap();
    let memory = dir.path().join("part.memory");
    let calibrated = calibrate(&common::default_model(), &memory);
    assert!(calibrated.status.success(), "{}", text(&calibrated.stderr));
    assert!(text(&calibrated.stdout).contains("from 10 good images"), "{}", text(&calibrated.stdout));

    let test = common::sample("test");
    let model = common::default_model();
    let output = clipada(&[
        "infer",
        "--json",
        "--model",
        model.to_str().unwrap(),
        "--memory",
        memory.to_str().unwrap(),
        test.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lines: Vec<Value> = text(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 10);
    for line in &lines {
        let path = line["path"].as_str().unwrap();
        let expected = if path.contains("/test/good/") { "pass" } else { "fail" };
        assert_eq!(line["verdict"], expected, "{line}");
    }
}

#[test]
fn memory_made_for_another_model_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let memory = dir.path().join("tiny.memory");
    assert!(calibrate(&common::tiny_model(), &memory).status.success());
    let output = infer_good_part_with(&memory);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("tiny.memory") && stderr.contains("made for model tiny-clipada"), "{stderr}");
}

#[test]
fn damaged_memory_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let memory = dir.path().join("part.memory");
    assert!(calibrate(&common::default_model(), &memory).status.success());
    let mut bytes = std::fs::read(&memory).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&memory, bytes).unwrap();
    let output = infer_good_part_with(&memory);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("part.memory") && stderr.contains("checksum"), "{stderr}");
}

#[test]
fn feature_only_model_without_memory_is_refused_at_start_saying_what_is_missing() {
    // Regression: it used to start and judge every image ERROR; nothing can be judged without
    // the memory, so it is refused before any image.
    let model = common::default_model();
    let image = common::sample("test/good/000.png");
    let output = clipada(&["infer", "--json", "--model", model.to_str().unwrap(), image.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "no verdicts: {}", text(&output.stdout));
    assert!(text(&output.stderr).contains("clipada calibrate"), "{}", text(&output.stderr));
}

#[test]
fn eval_on_the_sample_dataset_reports_every_metric_as_json() {
    let model = common::default_model();
    let root = common::samples_root();
    let output = clipada(&["eval", "--json", "--model", model.to_str().unwrap(), "--dataset", root.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: Value = serde_json::from_str(text(&output.stdout).trim()).unwrap();
    let keys = ["image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "aupro", "ms_per_image"];
    for scope in [&report["categories"]["part"], &report["mean"]] {
        for key in keys {
            assert!(scope[key].as_f64().is_some(), "{key} missing in {scope}");
        }
    }
    let part = &report["categories"]["part"];
    // The synthetic defects are plain to an ImageNet backbone: anything less is a regression.
    assert_eq!(part["image_auroc"].as_f64(), Some(1.0), "{part}");
    assert!(part["pixel_auroc"].as_f64().unwrap() > 0.95, "{part}");
}

#[test]
fn eval_reports_a_missing_mask_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let category = dir.path().join("widget");
    for sub in ["train/good", "test/good", "test/dent", "ground_truth/dent"] {
        std::fs::create_dir_all(category.join(sub)).unwrap();
    }
    common::copy_into(&common::sample("train/good/000.png"), &category.join("train/good"), "000.png");
    common::copy_into(&common::sample("test/good/000.png"), &category.join("test/good"), "000.png");
    common::copy_into(&common::sample("test/chip/000.png"), &category.join("test/dent"), "000.png");
    let model = common::default_model();
    let output = clipada(&["eval", "--model", model.to_str().unwrap(), "--dataset", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("ground_truth/dent/000_mask.png"), "{stderr}");
}

#[test]
fn text_and_memory_maps_are_fused_by_their_mean() {
    use clipada::calibration::{calibrate, Settings};
    use clipada::model::tract::TractEngine;
    use clipada::model::{ModelFile, RawOutputs};
    use clipada::pipeline::Extractor;
    use clipada::score::Scorer;

    // The tiny CLIP-ADA fixture has both branches. Without refinement every later step
    // (upsampling, smoothing) is linear, so the fused map must be the mean of the text-only
    // map and the memory-only map.
    let file = ModelFile::open(&common::tiny_model()).unwrap();
    let good: Vec<_> = (0..4).map(|i| common::sample(&format!("train/good/{i:03}.png"))).collect();
    let engine = Box::new(TractEngine::load(&file).unwrap());
    let mut extractor = Extractor::new(file.spec.clone(), file.sha256.clone(), engine);
    let never = std::sync::atomic::AtomicBool::new(false);
    let settings = Settings { memory_size: 256, refine: true, keep_outliers: false };
    let bank = calibrate(&mut extractor, &good, settings, &never, &mut |_, _, _| {}).unwrap().bank;
    let golden = common::golden("scratch");
    let raw: RawOutputs = golden.raw_outputs();
    let mut memory_only_spec = file.spec.clone();
    memory_only_spec.outputs.patch_logits = None;
    let map = |spec, memory| {
        let mut scorer = Scorer::new(spec, false, memory).unwrap();
        let mut raw = raw.clone();
        if spec.outputs.patch_logits.is_none() {
            raw.patch_logits = None;
        }
        scorer.score(&raw).unwrap().map.values.to_vec()
    };
    let fused = map(&file.spec, Some(&bank));
    let text = map(&file.spec, None);
    let memory = map(&memory_only_spec, Some(&bank));
    let mean: Vec<f32> = text.iter().zip(&memory).map(|(t, m)| 0.5 * (t + m)).collect();
    common::assert_close("fused map", &fused, &mean);
    assert!(common::max_abs_diff(&text, &memory) > 1e-2, "the two branches differ, so the test can tell");
}

#[test]
fn calibrate_reports_each_image_of_each_pass_to_its_progress() {
    use clipada::commands::calibrate::{calibrate, CalibrateOptions};
    use clipada::progress::Progress;

    #[derive(Default)]
    struct Recorded(Vec<(String, usize, usize)>, usize);
    impl Progress for Recorded {
        fn update(&mut self, stage: &str, done: usize, total: usize) {
            self.0.push((stage.to_string(), done, total));
        }
        fn finish(&mut self) {
            self.1 += 1;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let options = CalibrateOptions {
        model: common::tiny_model(),
        good: common::sample("train/good"),
        out: dir.path().join("part.memory"),
        memory_size: 64,
        no_refine: false,
        keep_outliers: false,
        engine: clipada::model::backend::EngineConfig {
            backend: clipada::model::backend::Backend::Tract,
            ..Default::default()
        },
    };
    let mut recorded = Recorded::default();
    let never = std::sync::atomic::AtomicBool::new(false);
    calibrate(&options, &never, &mut recorded, &mut Vec::new()).unwrap();
    let images = std::fs::read_dir(common::sample("train/good")).unwrap().count();
    let stages: Vec<&str> = recorded.0.iter().map(|(stage, _, _)| stage.as_str()).collect();
    assert_eq!(recorded.0.len(), 2 * images, "{:?}", recorded.0);
    assert!(stages[..images].iter().all(|s| *s == "good parts' features"), "{stages:?}");
    assert!(stages[images..].iter().all(|s| *s == "good parts' scores"), "{stages:?}");
    assert_eq!(recorded.0.last().unwrap(), &("good parts' scores".to_string(), images, images));
    assert_eq!(recorded.1, 1, "finished once");
}
