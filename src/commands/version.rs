//! `clipada --version`: the program's version, the model contract and memory format it reads,
//! the features it was built with, and the ONNX Runtime library `ORT_DYLIB_PATH` names.

use crate::memory::file::FORMAT_VERSION;
use crate::model::contract::CONTRACT_VERSION;

/// The features this build has, by Cargo feature name.
pub fn features() -> Vec<&'static str> {
    let mut features = Vec::new();
    if cfg!(feature = "ort") {
        features.push("ort");
    }
    if cfg!(feature = "camera") {
        features.push("camera");
    }
    if cfg!(feature = "gpio") {
        features.push("gpio");
    }
    features
}

/// The long version text.
pub(crate) fn describe() -> String {
    let features = features();
    format!(
        "{}\nmodel contract {CONTRACT_VERSION}, memory format {FORMAT_VERSION}\nfeatures: {}\nONNX Runtime: {}",
        env!("CARGO_PKG_VERSION"),
        if features.is_empty() { "none".to_string() } else { features.join(", ") },
        crate::model::backend::ort_version()
    )
}
