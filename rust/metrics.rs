//! Curve and localisation metrics (SPEC §7, §8), pure Rust.
//!
//! Localisation metrics compare a heat map (`f32 [H, W]`, raw) with a binary mask (`u8 [H, W]`,
//! non-zero = object) of the same size. The map is first min-max normalised to [0, 1] in f64
//! (a constant map becomes all zeros, SPEC §5); every metric reads that normalised map `h`.

use ndarray::{ArrayView1, ArrayView2};

use crate::error::{NativeError, NativeResult};

/// Area under a curve sampled at `K ≥ 2` points spaced uniformly on x ∈ [0, 1] (trapezoid rule).
pub fn auc(curve: ArrayView1<f64>) -> NativeResult<f64> {
    let k = curve.len();
    if k < 2 {
        return Err(NativeError::Value(format!(
            "a curve needs at least 2 points for an area, got {k}"
        )));
    }
    if let Some(bad) = curve.iter().find(|v| !v.is_finite()) {
        return Err(NativeError::Value(format!(
            "curve has a non-finite value ({bad})"
        )));
    }
    let inner: f64 = curve.iter().skip(1).take(k - 2).sum();
    Ok((0.5 * (curve[0] + curve[k - 1]) + inner) / (k - 1) as f64)
}

/// The five SPEC §8 metrics of one heat map against one mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Localization {
    /// 1 when the hottest pixel (first in raster order on ties) is in the mask, else 0
    pub point_game: f64,
    /// Σ_mask h / Σ h (0 when Σ h = 0)
    pub energy_pg: f64,
    /// (TP + TN) / pixels with foreground `h > mean(h)`
    pub pixel_accuracy: f64,
    /// |foreground ∩ mask| / |foreground ∪ mask|
    pub mask_iou: f64,
    /// average precision of the pixel scores `h` against the mask
    pub average_precision: f64,
}

impl Localization {
    /// The metrics in a fixed order: point game, energy-PG, pixel accuracy, mask IoU, AP.
    pub fn to_array(self) -> [f64; 5] {
        [
            self.point_game,
            self.energy_pg,
            self.pixel_accuracy,
            self.mask_iou,
            self.average_precision,
        ]
    }
}

/// Min-max normalisation to [0, 1] in f64, raster order (a constant map gives zeros). Errors on a
/// NaN or infinite value.
pub fn normalized(map: ArrayView2<f32>) -> NativeResult<Vec<f64>> {
    let width = map.ncols().max(1);
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for (index, &v) in map.iter().enumerate() {
        if !v.is_finite() {
            return Err(NativeError::Value(format!(
                "heat map has a non-finite value ({v}) at row {}, column {}",
                index / width,
                index % width
            )));
        }
        lo = lo.min(v as f64);
        hi = hi.max(v as f64);
    }
    let range = hi - lo;
    Ok(map
        .iter()
        .map(|&v| {
            if range > 0.0 {
                (v as f64 - lo) / range
            } else {
                0.0
            }
        })
        .collect())
}

/// Average precision of `scores` ranking `labels` (true = positive), as
/// `sklearn.metrics.average_precision_score` defines it: Σ over distinct score thresholds, highest
/// first, of (recall gain) × (precision at that threshold). Needs at least one positive.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return f64::NAN;
    }
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
    let (mut tp, mut seen, mut ap) = (0usize, 0usize, 0.0f64);
    let mut i = 0;
    while i < order.len() {
        let threshold = scores[order[i] as usize];
        let mut gained = 0;
        while i < order.len() && scores[order[i] as usize] == threshold {
            gained += labels[order[i] as usize] as usize;
            seen += 1;
            i += 1;
        }
        if gained > 0 {
            tp += gained;
            ap += (gained as f64 / positives as f64) * (tp as f64 / seen as f64);
        }
    }
    ap
}

/// All SPEC §8 metrics of `map` against `mask`. Errors when the sizes differ, the map is not
/// finite, or the mask has no object pixel (every metric would be undefined or trivially 0).
pub fn localization(map: ArrayView2<f32>, mask: ArrayView2<u8>) -> NativeResult<Localization> {
    if map.dim() != mask.dim() {
        return Err(NativeError::Value(format!(
            "heat map is {:?} but the mask is {:?}; bring the map to the mask's size first",
            map.dim(),
            mask.dim()
        )));
    }
    if map.is_empty() {
        return Err(NativeError::Value("heat map and mask are empty".into()));
    }
    let h = normalized(map)?;
    let labels: Vec<bool> = mask.iter().map(|&m| m != 0).collect();
    let in_mask = labels.iter().filter(|&&l| l).count();
    if in_mask == 0 {
        return Err(NativeError::Value("mask has no object pixel".into()));
    }
    let n = h.len();
    let mut best = 0;
    for (i, &v) in h.iter().enumerate() {
        if v > h[best] {
            best = i;
        }
    }
    let total: f64 = h.iter().sum();
    let inside: f64 = h
        .iter()
        .zip(&labels)
        .filter(|(_, &l)| l)
        .map(|(v, _)| v)
        .sum();
    let mean = total / n as f64;
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (&v, &l) in h.iter().zip(&labels) {
        match (v > mean, l) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let tn = n - tp - fp - fn_;
    Ok(Localization {
        point_game: if labels[best] { 1.0 } else { 0.0 },
        energy_pg: if total > 0.0 { inside / total } else { 0.0 },
        pixel_accuracy: (tp + tn) as f64 / n as f64,
        mask_iou: tp as f64 / (tp + fp + fn_) as f64,
        average_precision: average_precision(&h, &labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, Array2};

    #[test]
    fn auc_of_simple_curves() {
        assert_eq!(auc(arr1(&[1.0, 1.0, 1.0]).view()).unwrap(), 1.0);
        assert_eq!(auc(arr1(&[0.0, 1.0]).view()).unwrap(), 0.5);
        assert!((auc(arr1(&[0.0, 0.5, 1.0, 0.5, 0.0]).view()).unwrap() - 0.5).abs() < 1e-15);
        assert!(auc(arr1(&[0.3]).view()).is_err());
        assert!(auc(arr1(&[0.3, f64::NAN]).view()).is_err());
    }

    #[test]
    fn average_precision_by_hand() {
        // ranking: 0.9 (+), 0.8 (−), 0.7 (+): AP = ½·1 + ½·⅔
        let ap = average_precision(&[0.7, 0.9, 0.8], &[true, true, false]);
        assert!((ap - (0.5 + 1.0 / 3.0)).abs() < 1e-15);
        // a tie between a positive and a negative counts as one threshold
        let tied = average_precision(&[0.5, 0.5, 0.1], &[true, false, true]);
        assert!((tied - (0.5 * 0.5 + 0.5 * (2.0 / 3.0))).abs() < 1e-15);
        assert!(average_precision(&[0.1], &[false]).is_nan());
    }

    #[test]
    fn localization_of_a_perfect_and_a_constant_map() {
        let mask = Array2::from_shape_fn((4, 5), |(y, x)| ((1..3).contains(&y) && x >= 2) as u8);
        let perfect = mask.mapv(|m| m as f32 * 3.0 - 1.0);
        let m = localization(perfect.view(), mask.view()).unwrap();
        assert_eq!(m.to_array(), [1.0, 1.0, 1.0, 1.0, 1.0]);
        let constant = Array2::<f32>::from_elem((4, 5), 2.5);
        let c = localization(constant.view(), mask.view()).unwrap();
        assert_eq!(c.point_game, 0.0); // raster-first pixel (0, 0) is outside the mask
        assert_eq!(c.energy_pg, 0.0);
        assert_eq!(c.pixel_accuracy, 14.0 / 20.0);
        assert_eq!(c.mask_iou, 0.0);
        assert!((c.average_precision - 6.0 / 20.0).abs() < 1e-15);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mask = Array2::<u8>::zeros((3, 3));
        let map = Array2::<f32>::zeros((3, 3));
        assert!(localization(map.view(), mask.view()).is_err());
        assert!(localization(
            Array2::<f32>::zeros((3, 4)).view(),
            Array2::<u8>::ones((3, 3)).view()
        )
        .is_err());
        let mut nan = Array2::<f32>::zeros((3, 3));
        nan[[1, 1]] = f32::NAN;
        assert!(localization(nan.view(), Array2::<u8>::ones((3, 3)).view()).is_err());
    }
}
