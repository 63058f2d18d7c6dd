//! The runtime against independent references: onnxruntime for the engine, the numpy
//! specification (models/reference.py) for preprocessing and scoring. Goldens: tests/data/goldens,
//! made by models/make_goldens.py.

use crate::common;

use clipada::model::tract::TractEngine;
use clipada::model::{Engine, ModelFile, RawOutputs};
use clipada::pipeline::{InspectOptions, Inspector};
use clipada::preprocess::Preprocessor;
use clipada::score::Scorer;
use clipada::source::files::read_image;
use common::*;

#[test]
fn tract_raw_outputs_match_onnxruntime_within_1e4() {
    let file = ModelFile::open(&tiny_model()).unwrap();
    let mut engine = TractEngine::load(&file).unwrap();
    let mut raw = RawOutputs::for_spec(&file.spec);
    for name in GOLDEN_SAMPLES {
        let golden = golden(name);
        engine.run(&golden.input.data, &mut raw).unwrap();
        assert_close(
            &format!("{name} patch_logits"),
            raw.patch_logits.as_ref().unwrap(),
            &golden.raw.patch_logits.data,
        );
        assert_close(
            &format!("{name} image_logits"),
            raw.image_logits.as_ref().unwrap(),
            &golden.raw.image_logits.data,
        );
        assert_close(
            &format!("{name} patch_features"),
            raw.patch_features.as_ref().unwrap(),
            &golden.raw.patch_features.data,
        );
    }
}

#[test]
fn preprocessing_matches_reference_resize_and_normalisation() {
    let spec = ModelFile::open(&tiny_model()).unwrap().spec;
    let mut preprocessor = Preprocessor::new(&spec.input);
    for name in GOLDEN_SAMPLES {
        let golden = golden(name);
        assert_eq!(golden.input.shape, spec.input_shape().to_vec());
        let frame = read_image(&root().join(&golden.image)).unwrap();
        assert_close(&format!("{name} input"), preprocessor.run(&frame).unwrap(), &golden.input.data);
    }
}

#[test]
fn scoring_of_onnxruntime_outputs_matches_reference_with_and_without_refinement() {
    let spec = ModelFile::open(&tiny_model()).unwrap().spec;
    for refine in [true, false] {
        let mut scorer = Scorer::new(&spec, refine, None).unwrap();
        for name in GOLDEN_SAMPLES {
            let golden = golden(name);
            let expected = if refine { &golden.refined } else { &golden.unrefined };
            let raw = golden.raw_outputs();
            let scored = scorer.score(&raw).unwrap();
            let (score, map) = (scored.score, scored.map);
            assert_eq!([map.height, map.width], [expected.map.shape[0], expected.map.shape[1]]);
            assert_close(&format!("{name} map (refine {refine})"), map.values, &expected.map.data);
            assert_close(&format!("{name} score (refine {refine})"), &[score], &[expected.score]);
        }
    }
}

#[test]
fn image_file_to_verdict_matches_reference_end_to_end() {
    for refine in [true, false] {
        let options = InspectOptions { no_refine: !refine, ..InspectOptions::default() };
        let mut inspector = Inspector::load(&tiny_model(), &options).unwrap();
        for name in GOLDEN_SAMPLES {
            let golden = golden(name);
            let expected = if refine { &golden.refined } else { &golden.unrefined };
            let judged = inspector.inspect(&read_image(&root().join(&golden.image)).unwrap()).unwrap();
            assert_close(&format!("{name} map (refine {refine})"), judged.map.values, &expected.map.data);
            assert_close(&format!("{name} score (refine {refine})"), &[judged.score], &[expected.score]);
            assert_eq!(judged.verdict.name(), expected.verdict, "{name}");
        }
    }
}

#[test]
fn refinement_changes_the_map_so_the_switch_is_real() {
    // Guards against a --no-refine that silently does nothing (or refinement that is a no-op).
    let golden = golden("scratch");
    let diff = max_abs_diff(&golden.refined.map.data, &golden.unrefined.map.data);
    assert!(diff > 1e-2, "reference refinement changed the map by only {diff}");
    let spec = ModelFile::open(&tiny_model()).unwrap().spec;
    let raw = golden.raw_outputs();
    let mut with = Scorer::new(&spec, true, None).unwrap();
    let mut without = Scorer::new(&spec, false, None).unwrap();
    let refined = with.score(&raw).unwrap().map.values.to_vec();
    assert!(max_abs_diff(&refined, without.score(&raw).unwrap().map.values) > 1e-2);
}

#[test]
fn default_model_features_match_onnxruntime_within_1e4() {
    #[derive(serde::Deserialize)]
    struct Subsampled {
        image: String,
        every: usize,
        input: Stored,
        patch_features: Stored,
    }
    let path = root().join("tests/data/goldens/default-efficientnet.json");
    let golden: Subsampled = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let file = ModelFile::open(&default_model()).unwrap();
    let frame = read_image(&root().join(&golden.image)).unwrap();
    let input = Preprocessor::new(&file.spec.input).run(&frame).unwrap().to_vec();
    let every = |v: &[f32]| v.iter().step_by(golden.every).copied().collect::<Vec<f32>>();
    assert_close("default model input", &every(&input), &golden.input.data);
    let mut raw = RawOutputs::for_spec(&file.spec);
    TractEngine::load(&file).unwrap().run(&input, &mut raw).unwrap();
    assert_close(
        "default model patch_features",
        &every(raw.patch_features.as_ref().unwrap()),
        &golden.patch_features.data,
    );
}

#[test]
fn memory_branch_and_ignore_mask_match_the_reference_with_and_without_leave_one_out() {
    #[derive(serde::Deserialize)]
    struct Scored {
        map: Stored,
        score: f32,
    }
    #[derive(serde::Deserialize)]
    struct MemoryGolden {
        raw: StoredRaw,
        bank: Stored,
        sources: Vec<u32>,
        inspected: Stored,
        refined: Scored,
        unrefined: Scored,
        refined_without_0: Scored,
    }
    let path = root().join("tests/data/goldens/memory-mask.json");
    let golden: MemoryGolden = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let file = ModelFile::open(&tiny_model()).unwrap();
    let spec = &file.spec;
    let bank = clipada::memory::MemoryBank {
        made_for: clipada::memory::MadeFor {
            model_sha256: file.sha256.clone(),
            model_name: spec.name.clone(),
            precision: "fp32".into(),
            refine: true,
        },
        layers: spec.layer_count(),
        dim: spec.feature_dim.unwrap(),
        grid: spec.grid,
        features: golden.bank.data.clone(),
        sources: golden.sources.clone(),
        threshold: None,
        good_images: 2,
        good_scores: Vec::new(),
    };
    let raw = RawOutputs {
        patch_logits: Some(golden.raw.patch_logits.data.clone()),
        image_logits: Some(golden.raw.image_logits.data.clone()),
        patch_features: Some(golden.raw.patch_features.data.clone()),
    };
    let inspected: Vec<bool> = golden.inspected.data.iter().map(|v| *v > 0.5).collect();
    for (name, refine, exclude, expected) in [
        ("refined", true, None, &golden.refined),
        ("unrefined", false, None, &golden.unrefined),
        ("refined without image 0", true, Some(0), &golden.refined_without_0),
    ] {
        let mut scorer = Scorer::new(spec, refine, Some(&bank)).unwrap();
        scorer.set_inspected(Some(inspected.clone()));
        let scored = scorer.score_excluding(&raw, exclude).unwrap();
        assert_close(&format!("{name} map"), scored.map.values, &expected.map.data);
        assert_close(&format!("{name} score"), &[scored.score], &[expected.score]);
    }
}
