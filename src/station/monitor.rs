//! Watching the station's own judgement: the self-test with reference parts, and the drift of
//! passing parts' scores away from the calibration's.
//!
//! **Self-test.** A recipe may name reference images: good parts that must be judged PASS and
//! known-defect parts that must be judged FAIL, as whole frames (its region is cut from them as
//! from a camera frame). They are judged at start, every `self_test.every_minutes` and on
//! demand (`clipada control … self-test`). A reference judged otherwise (ERROR included) faults
//! the recipe: the lines go to the safe state and every part of that recipe gets ERROR until an
//! operator acknowledges (`clipada control … acknowledge`); both are logged.
//!
//! **Drift.** The median score of a recipe's last `drift.window` passing parts is compared with
//! the median of its calibration's good-part scores (the memory file's leave-one-out scores):
//! `shift = (median now - calibration median) / (threshold - calibration median)`, 0 where
//! the calibration was, 1 at the threshold, negative when scores fall (a camera gone out of
//! focus can make defects score lower too). When `|shift|` reaches `drift.bound` (0.5 unless
//! configured: passing parts have come half the way to the threshold) a warning goes to the
//! log, the display and the exit summary, while parts still pass: before drift becomes
//! escapes. It clears below 80 % of the bound. A recipe without calibration scores (no memory)
//! is not watched.

use image::RgbImage;

use crate::verdict::Verdict;

/// The largest `drift.window`.
pub const MAX_WINDOW: usize = 1024;
/// The fraction of the bound under which a raised warning clears.
const CLEAR_AT: f32 = 0.8;

/// A change of a drift warning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DriftChange {
    /// The shift reached the bound.
    Raised(f32),
    /// It came back under 80 % of the bound.
    Cleared(f32),
}

/// The watch on one recipe's passing scores. Fixed capacity: nothing is allocated per part.
pub struct DriftWatch {
    recent: heapless::Deque<f32, MAX_WINDOW>,
    sorted: Box<[f32; MAX_WINDOW]>,
    window: usize,
    calibration_median: f32,
    threshold: f32,
    bound: f32,
    shift: Option<f32>,
    raised: bool,
}

/// The median of `values` (reordered), none when empty.
fn median(values: &mut [f32]) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    let (middle, odd) = (values.len() / 2, values.len() % 2 == 1);
    let (below, at, _) = values.select_nth_unstable_by(middle, f32::total_cmp);
    let upper = *at;
    if odd {
        return Some(upper);
    }
    let lower = below.iter().copied().max_by(f32::total_cmp).unwrap_or(upper);
    Some((lower + upper) / 2.0)
}

impl DriftWatch {
    /// The same watch (window, bound) over a new calibration's scores and threshold.
    pub fn recalibrated(&self, good_scores: &[f32], threshold: f32) -> Option<DriftWatch> {
        DriftWatch::new(good_scores, threshold, self.window, self.bound)
    }

    /// A watch against the calibration's `good_scores` and `threshold`, over the last `window`
    /// (at most [`MAX_WINDOW`]) passing parts; none when there are no scores to compare with
    /// or they are not below the threshold.
    pub fn new(good_scores: &[f32], threshold: f32, window: usize, bound: f32) -> Option<DriftWatch> {
        let mut scores: Vec<f32> = good_scores.iter().copied().filter(|s| s.is_finite()).collect();
        let calibration_median = median(&mut scores)?;
        (calibration_median < threshold).then(|| DriftWatch {
            recent: heapless::Deque::new(),
            sorted: Box::new([0.0; MAX_WINDOW]),
            window: window.clamp(1, MAX_WINDOW),
            calibration_median,
            threshold,
            bound,
            shift: None,
            raised: false,
        })
    }

    /// Takes the score of a passing part; a change of the warning, if any.
    pub fn observe(&mut self, score: f32) -> Option<DriftChange> {
        if !score.is_finite() {
            return None;
        }
        if self.recent.len() == self.window {
            self.recent.pop_front();
        }
        let _ = self.recent.push_back(score);
        if self.recent.len() < self.window {
            return None;
        }
        let n = self.recent.len();
        for (slot, value) in self.sorted.iter_mut().zip(self.recent.iter()) {
            *slot = *value;
        }
        let now = median(&mut self.sorted[..n])?;
        let shift = (now - self.calibration_median) / (self.threshold - self.calibration_median);
        self.shift = Some(shift);
        if !self.raised && shift.abs() >= self.bound {
            self.raised = true;
            return Some(DriftChange::Raised(shift));
        }
        if self.raised && shift.abs() < self.bound * CLEAR_AT {
            self.raised = false;
            return Some(DriftChange::Cleared(shift));
        }
        None
    }

    /// The last shift, once the window was full.
    pub fn shift(&self) -> Option<f32> {
        self.shift
    }

    /// Whether the warning is raised.
    pub fn raised(&self) -> bool {
        self.raised
    }

    /// The calibration's median good score.
    pub fn calibration_median(&self) -> f32 {
        self.calibration_median
    }
}

/// What one reference part got.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceOutcome {
    /// Its file name.
    pub name: String,
    /// What it must get.
    pub expected: Verdict,
    /// What it got.
    pub verdict: Verdict,
    /// Its score (none for ERROR).
    pub score: Option<f32>,
    /// Why it got ERROR.
    pub error: Option<String>,
}

impl ReferenceOutcome {
    /// Whether it got the verdict it must.
    pub fn held(&self) -> bool {
        self.verdict == self.expected
    }
}

impl std::fmt::Display for ReferenceOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} judged {}", self.name, self.verdict.label())?;
        if let Some(score) = self.score {
            write!(f, " ({score:.4})")?;
        }
        if let Some(error) = &self.error {
            write!(f, " ({error})")?;
        }
        if !self.held() {
            write!(f, ", must be {}", self.expected.label())?;
        }
        Ok(())
    }
}

/// Judges every reference of recipe `index` as a frame of it; what each got. `go_on` is asked
/// before each (it keeps the loop heard from); none when it said stop.
pub(crate) fn judge_references(
    recipes: &mut super::recipe::Recipes,
    index: usize,
    crop: &mut RgbImage,
    go_on: &mut dyn FnMut() -> bool,
) -> Option<Vec<ReferenceOutcome>> {
    let mut outcomes = Vec::new();
    for r in 0..recipes.get(index).references.len() {
        if !go_on() {
            return None;
        }
        let recipe = recipes.get(index);
        let reference = &recipe.references[r];
        let name = reference.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let expected = reference.expected;
        let image = reference.image.clone();
        let judged = match super::crop(recipe.roi, &image, crop) {
            Err(e) => Err(e.to_string()),
            Ok(cropped) => recipes
                .judge(index, if cropped { crop } else { &image })
                .map(|j| (j.verdict, j.score))
                .map_err(|e| e.to_string()),
        };
        outcomes.push(match judged {
            Ok((verdict, score)) => ReferenceOutcome { name, expected, verdict, score: Some(score), error: None },
            Err(error) => ReferenceOutcome { name, expected, verdict: Verdict::Error, score: None, error: Some(error) },
        });
    }
    Some(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn drift_is_raised_at_the_bound_either_way_and_cleared_below_it() {
        // Calibration median 0.2, threshold 0.6: the bound 0.5 is a median of 0.4 (or 0.0).
        let good = [0.1, 0.2, 0.3];
        let mut watch = DriftWatch::new(&good, 0.6, 10, 0.5).unwrap();
        for _ in 0..9 {
            assert_eq!(watch.observe(0.39), None, "the window is not full yet");
        }
        assert_eq!(watch.observe(0.39), None);
        assert!((watch.shift().unwrap() - 0.475).abs() < 1e-5);
        let changes: Vec<_> = (0..10).filter_map(|_| watch.observe(0.41)).collect();
        assert!(matches!(changes[..], [DriftChange::Raised(s)] if s >= 0.5), "{changes:?}");
        assert!(watch.raised());
        // Back to a shift of 0.45: not cleared (above 0.8 × 0.5); at 0.25 it is.
        let changes: Vec<_> = (0..10).filter_map(|_| watch.observe(0.38)).collect();
        assert!(changes.is_empty(), "{changes:?}");
        let changes: Vec<_> = (0..10).filter_map(|_| watch.observe(0.3)).collect();
        assert!(matches!(changes[..], [DriftChange::Cleared(_)]), "{changes:?}");
        // Scores falling (a blurred camera) warn too.
        let changes: Vec<_> = (0..10).filter_map(|_| watch.observe(-0.05)).collect();
        assert!(matches!(changes[..], [DriftChange::Raised(s)] if s < -0.5), "{changes:?}");
    }

    #[test]
    fn no_watch_without_calibration_scores_below_the_threshold() {
        assert!(DriftWatch::new(&[], 0.5, 10, 0.5).is_none());
        assert!(DriftWatch::new(&[f32::NAN], 0.5, 10, 0.5).is_none());
        assert!(DriftWatch::new(&[0.7, 0.8], 0.5, 10, 0.5).is_none());
    }
}
