//! Anomaly-detection metrics, computed exactly (every distinct score is a threshold; tied
//! scores move together), as scikit-learn defines ROC AUC, average precision and the
//! precision-recall curve, and as MVTec AD defines AUPRO. `None` where a metric is undefined
//! (no positives, or no negatives for ROC).

/// Counts at each distinct threshold, highest first: (true positives, false positives) of
/// everything scored at or above it.
fn operating_points(scores: &[f32], labels: &[bool]) -> Vec<(u64, u64)> {
    let mut order: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let mut points = Vec::new();
    let (mut tp, mut fp) = (0u64, 0u64);
    for (i, &(score, positive)) in order.iter().enumerate() {
        if positive {
            tp += 1;
        } else {
            fp += 1;
        }
        if order.get(i + 1).is_none_or(|next| next.0 != score) {
            points.push((tp, fp));
        }
    }
    points
}

/// Area under the ROC curve (trapezoidal, ties as one step).
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let points = operating_points(scores, labels);
    let &(p, n) = points.last()?;
    if p == 0 || n == 0 {
        return None;
    }
    let (mut area, mut previous) = (0.0, (0u64, 0u64));
    for &(tp, fp) in &points {
        area += (fp - previous.1) as f64 * (tp + previous.0) as f64 / 2.0;
        previous = (tp, fp);
    }
    Some(area / (p as f64 * n as f64))
}

/// Average precision: `sum_k (R_k - R_{k-1}) P_k` over the thresholds.
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let points = operating_points(scores, labels);
    let &(p, _) = points.last()?;
    if p == 0 {
        return None;
    }
    let (mut ap, mut previous_tp) = (0.0, 0u64);
    for &(tp, fp) in &points {
        ap += (tp - previous_tp) as f64 / p as f64 * tp as f64 / (tp + fp) as f64;
        previous_tp = tp;
    }
    Some(ap)
}

/// The best F1 score over the thresholds.
pub fn f1_max(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let points = operating_points(scores, labels);
    let &(p, _) = points.last()?;
    if p == 0 {
        return None;
    }
    let best = points
        .iter()
        .filter(|(tp, _)| *tp > 0)
        .map(|&(tp, fp)| {
            let (precision, recall) = (tp as f64 / (tp + fp) as f64, tp as f64 / p as f64);
            2.0 * precision * recall / (precision + recall)
        })
        .fold(0.0, f64::max);
    Some(best)
}

/// False-positive-rate limit of AUPRO, as MVTec AD reports it.
pub(crate) const AUPRO_FPR_LIMIT: f64 = 0.3;

/// Labels the 8-connected regions of `mask` (`width` columns): 0 outside, 1.. inside.
/// Returns the labels and the number of regions.
pub(crate) fn label_regions(mask: &[bool], width: usize) -> (Vec<u32>, u32) {
    let height = mask.len() / width;
    let mut labels = vec![0u32; mask.len()];
    let mut regions = 0;
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        regions += 1;
        labels[start] = regions;
        stack.push(start);
        while let Some(at) = stack.pop() {
            let (y, x) = ((at / width) as isize, (at % width) as isize);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (ny, nx) = (y + dy, x + dx);
                    if ny < 0 || nx < 0 || ny >= height as isize || nx >= width as isize {
                        continue;
                    }
                    let next = ny as usize * width + nx as usize;
                    if mask[next] && labels[next] == 0 {
                        labels[next] = regions;
                        stack.push(next);
                    }
                }
            }
        }
    }
    (labels, regions)
}

/// Per-region overlap, gathered image by image, for [`ProAccumulator::aupro`].
#[derive(Debug, Default, Clone)]
pub struct ProAccumulator {
    /// Every pixel's score.
    scores: Vec<f32>,
    /// Every pixel's region (0: normal), numbered across all images.
    regions: Vec<u32>,
    /// Pixel count of each region (index 0 unused).
    sizes: Vec<u64>,
}

impl ProAccumulator {
    /// Adds one image's scores and ground-truth mask (`width` columns).
    pub fn add(&mut self, scores: &[f32], mask: &[bool], width: usize) {
        if self.sizes.is_empty() {
            self.sizes.push(0);
        }
        let (labels, count) = label_regions(mask, width);
        let offset = self.sizes.len() as u32 - 1;
        self.sizes.extend(std::iter::repeat_n(0, count as usize));
        for (&label, &score) in labels.iter().zip(scores) {
            let region = if label == 0 { 0 } else { label + offset };
            self.sizes[region as usize] += 1;
            self.regions.push(region);
            self.scores.push(score);
        }
    }

    /// Area under the per-region-overlap curve up to FPR 0.3, divided by 0.3.
    pub fn aupro(&self) -> Option<f64> {
        let region_count = self.sizes.len().saturating_sub(1);
        let normal = *self.sizes.first()?;
        if region_count == 0 || normal == 0 {
            return None;
        }
        let mut order: Vec<(f32, u32)> = self.scores.iter().copied().zip(self.regions.iter().copied()).collect();
        order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let (mut fp, mut overlap_sum) = (0u64, 0.0f64);
        let (mut area, mut previous) = (0.0, (0.0f64, 0.0f64));
        for (i, &(score, region)) in order.iter().enumerate() {
            if region == 0 {
                fp += 1;
            } else {
                overlap_sum += 1.0 / self.sizes[region as usize] as f64;
            }
            if order.get(i + 1).is_some_and(|next| next.0 == score) {
                continue;
            }
            let point = (fp as f64 / normal as f64, overlap_sum / region_count as f64);
            if point.0 >= AUPRO_FPR_LIMIT {
                let t = (AUPRO_FPR_LIMIT - previous.0) / (point.0 - previous.0);
                let pro_at_limit = previous.1 + t * (point.1 - previous.1);
                area += (AUPRO_FPR_LIMIT - previous.0) * (previous.1 + pro_at_limit) / 2.0;
                return Some(area / AUPRO_FPR_LIMIT);
            }
            area += (point.0 - previous.0) * (previous.1 + point.1) / 2.0;
            previous = point;
        }
        Some(area / AUPRO_FPR_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_inverted_rankings() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(average_precision(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
    }

    #[test]
    fn all_tied_scores_give_chance_auc() {
        assert_eq!(roc_auc(&[0.5; 4], &[false, true, false, true]), Some(0.5));
    }

    #[test]
    fn undefined_without_positives() {
        assert_eq!(roc_auc(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(average_precision(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(ProAccumulator::default().aupro(), None);
    }

    #[test]
    fn regions_are_8_connected() {
        #[rustfmt::skip]
        let mask = [
            true, false, false,
            false, true, false,
            false, false, false,
        ];
        assert_eq!(label_regions(&mask, 3).1, 1);
        let apart = [true, false, true];
        assert_eq!(label_regions(&apart, 3).1, 2);
    }
}
