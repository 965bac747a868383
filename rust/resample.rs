//! Resizing one float map: bilinear and bicubic with half-pixel centres.
//!
//! Both follow PyTorch's `F.interpolate(..., align_corners=False)` on the CPU (SPEC §5): the
//! output pixel `d` samples the input at `s = (in / out) · (d + 0.5) − 0.5`, computed in `f32`
//! like PyTorch does. Bilinear clamps `s` at 0 and reads two neighbours (the last one repeated at
//! the far edge); bicubic uses Keys' kernel with `a = −0.75` over four neighbours whose indices are
//! clamped into the input (the edge pixel is repeated). Downsampling is plain resampling without
//! antialiasing, as `F.interpolate(antialias=False)`.
//!
//! The work is separable: a horizontal pass turns the `h × w` map into `h × W`, a vertical pass
//! turns that into `H × W`, which is the order PyTorch's kernel nests its sums in. Each pass writes
//! its weighted sum in "difference form", `v₁ + Σₖ wₖ·(vₖ − v₁)` (bilinear: `v₀ + λ·(v₁ − v₀)`),
//! which equals PyTorch's `Σₖ wₖ·vₖ` up to rounding but maps a constant input to exactly the same
//! constant. That matters here: maps are min-max normalised after upsampling, and a constant
//! map carrying one-ulp noise would be stretched into a random pattern instead of all zeros.

use crate::error::{NativeError, NativeResult};

/// The interpolation kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Two taps per axis, linear weights (PyTorch `mode="bilinear"`).
    Bilinear,
    /// Four taps per axis, Keys cubic convolution with `a = −0.75` (PyTorch `mode="bicubic"`).
    Bicubic,
}

/// PyTorch's cubic convolution constant.
const CUBIC_A: f32 = -0.75;

impl Mode {
    /// Parse `"bilinear"` or `"bicubic"`; anything else is a `ValueError` listing the choices.
    pub fn parse(name: &str) -> NativeResult<Mode> {
        match name {
            "bilinear" => Ok(Mode::Bilinear),
            "bicubic" => Ok(Mode::Bicubic),
            other => Err(NativeError::Value(format!(
                "mode must be \"bilinear\" or \"bicubic\", got {other:?}"
            ))),
        }
    }

    /// Taps per axis.
    fn taps(self) -> usize {
        match self {
            Mode::Bilinear => 2,
            Mode::Bicubic => 4,
        }
    }
}

/// For every output position along one axis: the input indices it reads and their weights,
/// `taps` of each, stored output-major. The first tap is the reference of the difference form
/// (bicubic: PyTorch's tap 1 is moved first); its own weight is stored alongside but
/// never read, since the difference form takes it as one minus the others.
struct AxisTaps {
    taps: usize,
    index: Vec<usize>,
    weight: Vec<f32>,
}

impl AxisTaps {
    fn new(in_size: usize, out_size: usize, mode: Mode) -> AxisTaps {
        let taps = mode.taps();
        let mut index = Vec::with_capacity(out_size * taps);
        let mut weight = Vec::with_capacity(out_size * taps);
        // PyTorch: static_cast<float>(input_size) / output_size, all later arithmetic in float.
        let scale = in_size as f32 / out_size as f32;
        let last = in_size as i64 - 1;
        for d in 0..out_size {
            let src = scale * (d as f32 + 0.5) - 0.5;
            match mode {
                Mode::Bilinear => {
                    let src = src.max(0.0);
                    let i0 = (src.floor() as i64).min(last);
                    let lambda = (src - i0 as f32).clamp(0.0, 1.0);
                    let i1 = (i0 + 1).min(last);
                    index.extend([i0 as usize, i1 as usize]);
                    weight.extend([1.0 - lambda, lambda]);
                }
                Mode::Bicubic => {
                    let i = (src.floor() as i64).min(last);
                    let t = (src - i as f32).clamp(0.0, 1.0);
                    let w = cubic_weights(t);
                    let at = |k: i64| (i - 1 + k).clamp(0, last) as usize;
                    // Reference tap (k = 1) first, then k = 0, 2, 3.
                    index.extend([at(1), at(0), at(2), at(3)]);
                    weight.extend([w[1], w[0], w[2], w[3]]);
                }
            }
        }
        AxisTaps {
            taps,
            index,
            weight,
        }
    }

    fn at(&self, d: usize) -> (&[usize], &[f32]) {
        let range = d * self.taps..(d + 1) * self.taps;
        (&self.index[range.clone()], &self.weight[range])
    }
}

/// Keys' cubic convolution weights for the four taps around fractional offset `t` in [0, 1],
/// written as PyTorch's `get_cubic_upsample_coefficients`.
fn cubic_weights(t: f32) -> [f32; 4] {
    let a = CUBIC_A;
    // |x| <= 1
    let near = |x: f32| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    // 1 < |x| < 2
    let far = |x: f32| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    let u = 1.0 - t;
    [far(t + 1.0), near(t), near(u), far(u + 1.0)]
}

/// Weighted sum of the taps in difference form: `v[0] + Σ_{k≥1} w[k]·(v[k] − v[0])`, where
/// `v[0]` is the reference tap. Written so a constant input comes back exactly.
#[inline]
fn combine(values: &[f32], weights: &[f32]) -> f32 {
    let base = values[0];
    let mut acc = base;
    for k in 1..values.len() {
        acc += weights[k] * (values[k] - base);
    }
    acc
}

/// Resize one row-major `h × w` map to `out_h × out_w` into `dst` (length `out_h · out_w`).
///
/// Returns a `ValueError` when a size is zero or a buffer length does not match its shape.
/// Values are not checked for NaN/inf here; callers reject those first.
pub fn resize(
    src: &[f32],
    (h, w): (usize, usize),
    dst: &mut [f32],
    (out_h, out_w): (usize, usize),
    mode: Mode,
) -> NativeResult<()> {
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(NativeError::Value(format!(
            "cannot resize {h}x{w} to {out_h}x{out_w}: sizes must be positive"
        )));
    }
    if src.len() != h * w || dst.len() != out_h * out_w {
        return Err(NativeError::Value(format!(
            "buffer lengths {} and {} do not match {h}x{w} -> {out_h}x{out_w}",
            src.len(),
            dst.len()
        )));
    }
    let xs = AxisTaps::new(w, out_w, mode);
    let ys = AxisTaps::new(h, out_h, mode);

    // Horizontal pass: h rows of out_w (small: the input grid is small).
    let mut rows = vec![0.0f32; h * out_w];
    let mut gathered = [0.0f32; 4];
    for (src_row, tmp_row) in src.chunks_exact(w).zip(rows.chunks_exact_mut(out_w)) {
        for (x, out) in tmp_row.iter_mut().enumerate() {
            let (idx, wts) = xs.at(x);
            for (g, &i) in gathered.iter_mut().zip(idx) {
                *g = src_row[i];
            }
            *out = combine(&gathered[..idx.len()], wts);
        }
    }

    // Vertical pass: each output row blends whole tmp rows (contiguous, vectorises).
    for (y, out_row) in dst.chunks_exact_mut(out_w).enumerate() {
        let (idx, wts) = ys.at(y);
        let row = |k: usize| &rows[idx[k] * out_w..(idx[k] + 1) * out_w];
        match mode {
            Mode::Bilinear => {
                let (r0, r1, w1) = (row(0), row(1), wts[1]);
                for ((o, &a), &b) in out_row.iter_mut().zip(r0).zip(r1) {
                    *o = a + w1 * (b - a);
                }
            }
            Mode::Bicubic => {
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let (w1, w2, w3) = (wts[1], wts[2], wts[3]);
                for ((((o, &a), &b), &c), &d) in out_row.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3)
                {
                    *o = a + w1 * (b - a) + w2 * (c - a) + w3 * (d - a);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight from the definition, in f64, one output pixel at a time (no separable passes).
    fn reference(
        src: &[f32],
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        mode: Mode,
    ) -> Vec<f32> {
        let axis = |n: usize, o: usize, d: usize| -> Vec<(usize, f64)> {
            let s = n as f64 / o as f64 * (d as f64 + 0.5) - 0.5;
            let last = n as i64 - 1;
            match mode {
                Mode::Bilinear => {
                    let s = s.max(0.0);
                    let i0 = (s.floor() as i64).min(last);
                    let l = (s - i0 as f64).clamp(0.0, 1.0);
                    vec![(i0 as usize, 1.0 - l), ((i0 + 1).min(last) as usize, l)]
                }
                Mode::Bicubic => {
                    let i = (s.floor() as i64).min(last);
                    let t = s - i as f64;
                    let a = -0.75f64;
                    let k = |x: f64| {
                        let x = x.abs();
                        if x <= 1.0 {
                            (a + 2.0) * x.powi(3) - (a + 3.0) * x * x + 1.0
                        } else if x < 2.0 {
                            a * x.powi(3) - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a
                        } else {
                            0.0
                        }
                    };
                    (0..4)
                        .map(|j| ((i - 1 + j).clamp(0, last) as usize, k(t - (j as f64 - 1.0))))
                        .collect()
                }
            }
        };
        let mut out = vec![0.0f32; oh * ow];
        for y in 0..oh {
            for x in 0..ow {
                let mut acc = 0.0f64;
                for &(iy, wy) in &axis(h, oh, y) {
                    for &(ix, wx) in &axis(w, ow, x) {
                        acc += wy * wx * src[iy * w + ix] as f64;
                    }
                }
                out[y * ow + x] = acc as f32;
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn run(src: &[f32], from: (usize, usize), to: (usize, usize), mode: Mode) -> Vec<f32> {
        let mut dst = vec![0.0; to.0 * to.1];
        resize(src, from, &mut dst, to, mode).unwrap();
        dst
    }

    #[test]
    fn matches_direct_definition_on_odd_shapes() {
        let cases = [
            ((7, 7), (225, 301)),
            ((14, 14), (224, 224)),
            ((1, 1), (5, 3)),
            ((3, 5), (17, 4)),
            ((9, 4), (4, 9)),
        ];
        for (seed, &(from, to)) in cases.iter().enumerate() {
            let src = pseudo_random(from.0 * from.1, seed as u64);
            for mode in [Mode::Bilinear, Mode::Bicubic] {
                let got = run(&src, from, to, mode);
                let want = reference(&src, from, to, mode);
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(err < 1e-5, "{mode:?} {from:?}->{to:?}: max error {err}");
            }
        }
    }

    #[test]
    fn constant_map_stays_exactly_constant() {
        for mode in [Mode::Bilinear, Mode::Bicubic] {
            let src = vec![0.3f32; 5 * 6];
            assert!(run(&src, (5, 6), (37, 41), mode).iter().all(|&v| v == 0.3));
        }
    }

    #[test]
    fn same_size_is_identity() {
        let src = pseudo_random(6 * 9, 7);
        for mode in [Mode::Bilinear, Mode::Bicubic] {
            assert_eq!(run(&src, (6, 9), (6, 9), mode), src);
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        let mut dst = vec![0.0; 4];
        assert!(resize(&[1.0; 4], (2, 2), &mut dst, (0, 4), Mode::Bilinear).is_err());
        assert!(resize(&[1.0; 3], (2, 2), &mut dst, (2, 2), Mode::Bilinear).is_err());
        assert!(Mode::parse("nearest").is_err());
    }
}
