//! The verdict on one frame, from its image score and the decision threshold.

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

impl Verdict {
    /// `Fail` when `score >= threshold`, `Pass` below, `Error` when the score is not finite.
    pub fn judge(score: f32, threshold: f32) -> Verdict {
        if !score.is_finite() {
            Verdict::Error
        } else if score >= threshold {
            Verdict::Fail
        } else {
            Verdict::Pass
        }
    }

    /// Upper-case label for displays and banners.
    pub fn label(self) -> &'static str {
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
