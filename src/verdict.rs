//! The verdict on one frame, from its image score and a decision threshold that a PASS may
//! rest on.
//!
//! [`Verdict::judge`] is the only place a PASS is decided. It takes a [`Threshold`], which can
//! only be made inside its valid range (`(0, score range]` of the scorer in use) and knows where
//! it came from (calibration, the operator, the model's contract); a score that is not finite
//! is ERROR.

use serde::Serialize;

/// PASS, FAIL, or ERROR when the frame could not be judged (never a silent PASS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Score below the threshold.
    Pass,
    /// Score at or above the threshold.
    Fail,
    /// The frame could not be judged.
    Error,
}

/// Where a decision threshold came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdSource {
    /// Set by the operator (`--threshold`, `model.threshold`).
    Operator,
    /// Derived at calibration from good parts, for this model and scoring mode (the memory file).
    Calibrated,
    /// The model's contract (`score.threshold`), for its text branch without a memory.
    Model,
}

/// A decision threshold, inside the range of the scores it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Threshold {
    value: f32,
    source: ThresholdSource,
}

/// A threshold outside the range of the scores.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("threshold {value} is outside (0, {range}], the range of this model's scores in this mode")]
pub struct ThresholdRangeError {
    /// The value given.
    pub value: f32,
    /// The largest score the scorer can give.
    pub range: f32,
}

impl Threshold {
    /// `value` from `source`, for scores in `[0, range]`: it must lie in `(0, range]`.
    pub fn new(value: f32, source: ThresholdSource, range: f32) -> Result<Threshold, ThresholdRangeError> {
        if value > 0.0 && value <= range {
            Ok(Threshold { value, source })
        } else {
            Err(ThresholdRangeError { value, range })
        }
    }

    /// The value.
    pub fn value(&self) -> f32 {
        self.value
    }

    /// Where it came from.
    pub fn source(&self) -> ThresholdSource {
        self.source
    }
}

impl Verdict {
    /// `Fail` when `score >= threshold`, `Pass` below, `Error` when the score is not finite.
    pub fn judge(score: f32, threshold: &Threshold) -> Verdict {
        if !score.is_finite() {
            Verdict::Error
        } else if score >= threshold.value {
            Verdict::Fail
        } else {
            Verdict::Pass
        }
    }

    /// Upper-case label for displays and banners.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Error => "ERROR",
        }
    }

    /// Lower-case name, as in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_outside_the_score_range_cannot_be_made() {
        for bad in [0.0, -0.1, 1.0001, f32::NAN, f32::INFINITY, 1e38] {
            assert!(Threshold::new(bad, ThresholdSource::Operator, 1.0).is_err(), "{bad} accepted");
        }
        assert!(Threshold::new(1.0, ThresholdSource::Operator, 1.0).is_ok());
        assert!(Threshold::new(1.9, ThresholdSource::Calibrated, 2.0).is_ok());
    }

    #[test]
    fn only_a_finite_score_below_the_threshold_passes() {
        let t = Threshold::new(0.5, ThresholdSource::Model, 1.0).unwrap();
        assert_eq!(Verdict::judge(0.49, &t), Verdict::Pass);
        assert_eq!(Verdict::judge(0.5, &t), Verdict::Fail);
        for bad in [f32::NAN, f32::NEG_INFINITY, f32::INFINITY] {
            assert_eq!(Verdict::judge(bad, &t), Verdict::Error);
        }
    }
}
