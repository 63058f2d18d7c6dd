//! Metrics against scikit-learn (ROC AUC, average precision, F1-max from the PR curve) and an
//! independent brute-force numpy AUPRO, on committed synthetic cases with ties, an all-normal
//! set and one-pixel regions (tests/data/metrics/cases.json, models/make_metric_goldens.py).

use clipada::eval::metrics::{average_precision, f1_max, roc_auc, ProAccumulator};
use serde::Deserialize;

/// Agreement required: both sides compute exactly, in double precision.
const TOLERANCE: f64 = 1e-6;

#[derive(Deserialize)]
struct Expected {
    auroc: Option<f64>,
    ap: Option<f64>,
    f1_max: Option<f64>,
    aupro: Option<f64>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    #[serde(default)]
    labels: Vec<bool>,
    #[serde(default)]
    scores: Vec<f32>,
    width: Option<usize>,
    #[serde(default)]
    maps: Vec<Vec<f32>>,
    #[serde(default)]
    masks: Vec<Vec<bool>>,
    expected: Expected,
}

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/metrics/cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_agrees(case: &str, metric: &str, actual: Option<f64>, expected: Option<f64>) {
    match (actual, expected) {
        (None, None) => {}
        (Some(a), Some(e)) => assert!((a - e).abs() <= TOLERANCE, "{case} {metric}: {a} vs reference {e}"),
        _ => panic!("{case} {metric}: {actual:?} vs reference {expected:?}"),
    }
}

#[test]
fn image_level_metrics_agree_with_scikit_learn() {
    let cases = cases();
    let image_cases: Vec<&Case> = cases.iter().filter(|c| c.width.is_none()).collect();
    assert_eq!(image_cases.len(), 3);
    for case in image_cases {
        assert_agrees(&case.name, "auroc", roc_auc(&case.scores, &case.labels), case.expected.auroc);
        assert_agrees(&case.name, "ap", average_precision(&case.scores, &case.labels), case.expected.ap);
        assert_agrees(&case.name, "f1_max", f1_max(&case.scores, &case.labels), case.expected.f1_max);
    }
}

#[test]
fn pixel_level_metrics_and_aupro_agree_with_references() {
    let cases = cases();
    let case = cases.iter().find(|c| c.name == "pixels").unwrap();
    let width = case.width.unwrap();
    let scores: Vec<f32> = case.maps.concat();
    let labels: Vec<bool> = case.masks.concat();
    assert_agrees("pixels", "auroc", roc_auc(&scores, &labels), case.expected.auroc);
    assert_agrees("pixels", "ap", average_precision(&scores, &labels), case.expected.ap);
    assert_agrees("pixels", "f1_max", f1_max(&scores, &labels), case.expected.f1_max);
    let mut pro = ProAccumulator::default();
    for (map, mask) in case.maps.iter().zip(&case.masks) {
        pro.add(map, mask, width);
    }
    assert_agrees("pixels", "aupro", pro.aupro(), case.expected.aupro);
}
