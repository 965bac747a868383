//! Deletion and insertion perturbations (SPEC §7), pure Rust.
//!
//! For one image (`uint8 [H, W, 3]`) and its heat map (`f32 [H, W]`, same size):
//! - pixels are ranked by heat, descending, ties broken by raster index (`y * W + x`), so the
//!   order is total and stable; NaN or infinite heat is an error;
//! - step `s` (0-based, `s < steps`) changes the pixels of rank `s·n .. (s+1)·n` with
//!   `n = max(1, floor(H·W / (2·steps)))` (ranks past `H·W` are dropped: tiny images run out);
//! - deletion starts from the image and gives every changed pixel three random bytes; insertion
//!   starts from zeros and copies the original pixel in;
//! - checkpoint `k` (`0 ≤ k ≤ steps / eval_every`) is the image after `k · eval_every` steps, so
//!   checkpoint 0 is the untouched start.
//!
//! # The deletion fill stream
//! Image `i` of a dataset (its `stream`) draws from `rand_pcg::Pcg64::new(seed, i)`: PCG XSL-RR
//! 128/64 with increment `2·i + 1`, state `(seed + inc)·M + inc` (mod 2¹²⁸) after construction
//! (`M` = PCG's 128-bit default multiplier); each `next_u64` steps the LCG, then outputs. This is
//! exactly numpy's `PCG64` bit generator set to that state and increment. Its outputs are cut
//! into little-endian bytes and handed out three at a time (R, G, B) to the removed pixels in
//! this order: checkpoint by checkpoint, and within the pixels that change between two
//! checkpoints, in raster order. Every byte is uniform on `0..=255`, and an image's fill does
//! not depend on how a dataset is chunked. (Within a checkpoint's pixels the order of the steps
//! does not show, so no full sort of the map is needed: see [`rank_groups`].)

use std::borrow::Cow;

use ndarray::{Array4, ArrayView2, ArrayView3};
use rand_core::Rng;
use rand_pcg::Pcg64;

use crate::clip_preprocess::{Incremental, Normalize, ResizeCrop};
use crate::error::{NativeError, NativeResult};

/// Whether pixels are removed (replaced by noise) or inserted (into a black image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Deletion,
    Insertion,
}

impl Mode {
    /// `"deletion"` or `"insertion"`; anything else is a `Value` error.
    pub fn parse(name: &str) -> NativeResult<Mode> {
        match name {
            "deletion" => Ok(Mode::Deletion),
            "insertion" => Ok(Mode::Insertion),
            other => Err(NativeError::Value(format!(
                "mode must be 'deletion' or 'insertion', got {other:?}"
            ))),
        }
    }
}

/// How many steps, and how often the image is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub steps: usize,
    pub eval_every: usize,
}

impl Schedule {
    /// A schedule of `steps ≥ 1` steps with a checkpoint every `eval_every` steps;
    /// `eval_every` must divide `steps` (so the last step is a checkpoint).
    pub fn new(steps: usize, eval_every: usize) -> NativeResult<Schedule> {
        if steps == 0 || eval_every == 0 {
            return Err(NativeError::Value(format!(
                "steps and eval_every must be positive, got steps={steps}, eval_every={eval_every}"
            )));
        }
        if !steps.is_multiple_of(eval_every) {
            return Err(NativeError::Value(format!(
                "eval_every={eval_every} must divide steps={steps}"
            )));
        }
        Ok(Schedule { steps, eval_every })
    }

    /// Number of checkpoints, the start included: `1 + steps / eval_every`.
    pub fn checkpoints(&self) -> usize {
        1 + self.steps / self.eval_every
    }

    /// Pixels changed per step for an image of `pixels` pixels: `max(1, floor(pixels / (2·steps)))`.
    pub fn pixels_per_step(&self, pixels: usize) -> usize {
        (pixels / (2 * self.steps)).max(1)
    }

    /// How many pixels (the first ranks) have changed at checkpoint `k`.
    pub fn changed_at(&self, k: usize, pixels: usize) -> usize {
        (k * self.eval_every * self.pixels_per_step(pixels)).min(pixels)
    }
}

/// Order-preserving key of a finite heat value: a smaller key means a hotter pixel.
/// `-0.0` and `0.0` get the same key (they compare equal, so the raster index decides).
#[inline]
fn descending_key(value: f32) -> u32 {
    let bits = (value + 0.0).to_bits(); // -0.0 + 0.0 == +0.0
    let ascending = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    !ascending
}

/// Pixels grouped by rank: the pixels of group `g` are those whose rank (hottest first, ties by
/// raster index) lies in `ends[g-1] .. ends[g]` (`ends[-1]` = 0), listed in raster order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankGroups {
    /// raster indices (`y * W + x`), group after group
    pub pixels: Vec<u32>,
    /// group `g` is `pixels[bounds[g] .. bounds[g + 1]]`
    pub bounds: Vec<usize>,
}

/// Split the pixels of `map` into rank groups ending at the ranks `ends` (non-decreasing; values
/// past `H·W` are clipped). Errors on a NaN or infinite value (naming its position) or a map over
/// 2³² pixels.
///
/// No full sort is needed, only a partition: ranks are compared through the 64-bit key
/// `descending_key(heat) << 32 | raster index`, whose ascending order is the ranking. A histogram
/// of the keys' top 16 bits locates each group boundary in one bucket; only the keys of those
/// buckets are sorted, to find the exact boundary key; every other bucket belongs to one group.
pub fn rank_groups(map: ArrayView2<f32>, ends: &[usize]) -> NativeResult<RankGroups> {
    let (height, width) = map.dim();
    let pixels = height * width;
    if pixels > u32::MAX as usize {
        return Err(NativeError::Value(format!(
            "heat map of {height}×{width} pixels is too large (at most 2^32 pixels)"
        )));
    }
    if ends.windows(2).any(|w| w[0] > w[1]) {
        return Err(NativeError::Value("group ends must not decrease".into()));
    }
    const BUCKETS: usize = 1 << 16;
    let values: Cow<[f32]> = match map.to_slice() {
        Some(slice) => Cow::Borrowed(slice),
        None => Cow::Owned(map.iter().copied().collect()),
    };
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(NativeError::Value(format!(
            "heat map has a non-finite value ({}) at row {}, column {}",
            values[index],
            index / width,
            index % width
        )));
    }
    let keys: Vec<u32> = values.iter().map(|&v| descending_key(v)).collect();
    let mut starts = vec![0usize; BUCKETS + 1];
    for &key in &keys {
        starts[(key >> 16) as usize + 1] += 1;
    }
    for b in 0..BUCKETS {
        starts[b + 1] += starts[b];
    }
    // The boundary of a group ending at rank `end < pixels` is the key of the pixel of rank
    // `end`: found by sorting the keys of the bucket that holds that rank.
    let ends: Vec<usize> = ends.iter().map(|&e| e.min(pixels)).collect();
    let mut boundary_buckets: Vec<usize> = ends
        .iter()
        .filter(|&&e| e < pixels)
        .map(|&e| starts.partition_point(|&s| s <= e) - 1)
        .collect();
    boundary_buckets.dedup();
    let mut slots = vec![u32::MAX; BUCKETS];
    for (slot, &bucket) in boundary_buckets.iter().enumerate() {
        slots[bucket] = slot as u32;
    }
    let mut sorted: Vec<Vec<u64>> = vec![Vec::new(); boundary_buckets.len()];
    for (index, &key) in keys.iter().enumerate() {
        let slot = slots[(key >> 16) as usize];
        if slot != u32::MAX {
            sorted[slot as usize].push(((key as u64) << 32) | index as u64);
        }
    }
    for list in &mut sorted {
        list.sort_unstable();
    }
    let thresholds: Vec<u64> = ends
        .iter()
        .map(|&e| {
            if e >= pixels {
                return u64::MAX;
            }
            let bucket = starts.partition_point(|&s| s <= e) - 1;
            sorted[slots[bucket] as usize][e - starts[bucket]]
        })
        .collect();
    // Group of a whole bucket when no boundary falls inside it: the first group whose boundary
    // bucket comes after it (`groups` = "past the last group").
    let groups = ends.len();
    let mut bucket_group = vec![0u32; BUCKETS];
    let mut g = 0;
    for (b, slot) in bucket_group.iter_mut().enumerate() {
        while g < groups && thresholds[g] != u64::MAX && ((thresholds[g] >> 48) as usize) < b {
            g += 1;
        }
        *slot = g as u32;
    }
    let mut bounds = Vec::with_capacity(groups + 1);
    bounds.push(0);
    bounds.extend(ends.iter().copied());
    let mut next = bounds.clone();
    let mut out = vec![0u32; bounds[groups]];
    for (index, &key) in keys.iter().enumerate() {
        let bucket = (key >> 16) as usize;
        let group = if slots[bucket] != u32::MAX {
            let composite = ((key as u64) << 32) | index as u64;
            thresholds.partition_point(|&t| t <= composite)
        } else {
            bucket_group[bucket] as usize
        };
        if group < groups {
            out[next[group]] = index as u32;
            next[group] += 1;
        }
    }
    Ok(RankGroups {
        pixels: out,
        bounds,
    })
}

/// The deletion fill: the little-endian bytes of successive `Pcg64::new(seed, stream)` outputs.
pub struct FillBytes {
    rng: Pcg64,
    word: u64,
    left: u32,
}

impl FillBytes {
    /// The fill stream of image `stream` under `seed` (see the module docs).
    pub fn new(seed: u64, stream: u64) -> FillBytes {
        FillBytes {
            rng: Pcg64::new(seed as u128, stream as u128),
            word: 0,
            left: 0,
        }
    }

    /// The next byte of the stream.
    #[inline]
    pub fn next_byte(&mut self) -> u8 {
        if self.left == 0 {
            self.word = self.rng.next_u64();
            self.left = 8;
        }
        let byte = self.word as u8;
        self.word >>= 8;
        self.left -= 1;
        byte
    }
}

/// One image's perturbation, ready to walk its checkpoints.
struct Walk<'a> {
    original: Cow<'a, [u8]>,
    /// group `k - 1` holds the pixels that change between checkpoints `k - 1` and `k`
    groups: RankGroups,
}

fn prepare<'a>(
    image: ArrayView3<'a, u8>,
    map: ArrayView2<f32>,
    schedule: Schedule,
) -> NativeResult<Walk<'a>> {
    let (height, width, channels) = image.dim();
    if channels != 3 {
        return Err(NativeError::Value(format!(
            "image must be [H, W, 3], got [{height}, {width}, {channels}]"
        )));
    }
    if height == 0 || width == 0 {
        return Err(NativeError::Value(format!(
            "image is empty ({height}×{width})"
        )));
    }
    if map.dim() != (height, width) {
        return Err(NativeError::Value(format!(
            "heat map is {}×{} but the image is {height}×{width}; upsample the map to the image size first",
            map.dim().0,
            map.dim().1
        )));
    }
    let pixels = height * width;
    let ends: Vec<usize> = (1..schedule.checkpoints())
        .map(|k| schedule.changed_at(k, pixels))
        .collect();
    let groups = rank_groups(map, &ends)?;
    let original = match image.to_slice() {
        Some(slice) => Cow::Borrowed(slice),
        None => Cow::Owned(image.iter().copied().collect()),
    };
    Ok(Walk { original, groups })
}

/// Walk the checkpoints of one image: `visit(k, image_k, changed)` is called for
/// `k = 0 ..= steps / eval_every` with the checkpoint image (`H·W·3` bytes, row-major RGB) and the
/// raster indices of the pixels changed since checkpoint `k − 1` (empty for `k = 0`).
pub fn walk_checkpoints(
    image: ArrayView3<u8>,
    map: ArrayView2<f32>,
    mode: Mode,
    schedule: Schedule,
    seed: u64,
    stream: u64,
    mut visit: impl FnMut(usize, &[u8], &[u32]) -> NativeResult<()>,
) -> NativeResult<()> {
    let walk = prepare(image, map, schedule)?;
    let original = walk.original.as_ref();
    let mut current = match mode {
        Mode::Deletion => original.to_vec(),
        Mode::Insertion => vec![0u8; original.len()],
    };
    let mut fill = FillBytes::new(seed, stream);
    visit(0, &current, &[])?;
    for k in 1..schedule.checkpoints() {
        let changed = &walk.groups.pixels[walk.groups.bounds[k - 1]..walk.groups.bounds[k]];
        for &pixel in changed {
            let at = pixel as usize * 3;
            match mode {
                Mode::Deletion => {
                    for value in &mut current[at..at + 3] {
                        *value = fill.next_byte();
                    }
                }
                Mode::Insertion => current[at..at + 3].copy_from_slice(&original[at..at + 3]),
            }
        }
        visit(k, &current, changed)?;
    }
    Ok(())
}

/// Every checkpoint image of one image: `uint8 [K, H, W, 3]`, the start first.
pub fn checkpoint_images(
    image: ArrayView3<u8>,
    map: ArrayView2<f32>,
    mode: Mode,
    schedule: Schedule,
    seed: u64,
    stream: u64,
) -> NativeResult<Array4<u8>> {
    let (height, width, _) = image.dim();
    let mut out = Array4::<u8>::zeros((schedule.checkpoints(), height, width, 3));
    let plane = height * width * 3;
    let flat = out.as_slice_mut().expect("a new array is contiguous");
    walk_checkpoints(image, map, mode, schedule, seed, stream, |k, current, _| {
        flat[k * plane..(k + 1) * plane].copy_from_slice(current);
        Ok(())
    })?;
    Ok(out)
}

/// Every checkpoint of one image as the model sees it: CLIP's resize + centre crop + normalise
/// (`plan`, `normalize`) written into `out`, `f32 [K, 3, S, S]` flattened. Only the outputs that a
/// step's changed pixels reach are recomputed; the result equals preprocessing each checkpoint
/// image from scratch.
#[allow(clippy::too_many_arguments)]
pub fn checkpoint_batch(
    image: ArrayView3<u8>,
    map: ArrayView2<f32>,
    mode: Mode,
    schedule: Schedule,
    seed: u64,
    stream: u64,
    plan: &ResizeCrop,
    normalize: &Normalize,
    out: &mut [f32],
) -> NativeResult<()> {
    let (height, width, _) = image.dim();
    if plan.input_size() != (height, width) {
        return Err(NativeError::Value(format!(
            "resize plan is for {:?} but the image is {height}×{width}",
            plan.input_size()
        )));
    }
    let plane = plan.output_len() * 3;
    if out.len() != schedule.checkpoints() * plane {
        return Err(NativeError::Value(format!(
            "output buffer holds {} values, {} checkpoints need {}",
            out.len(),
            schedule.checkpoints(),
            schedule.checkpoints() * plane
        )));
    }
    let mut state: Option<Incremental> = None;
    walk_checkpoints(
        image,
        map,
        mode,
        schedule,
        seed,
        stream,
        |k, current, changed| {
            match state.as_mut() {
                None => {
                    let fresh = match mode {
                        Mode::Deletion => Incremental::new(plan, current),
                        Mode::Insertion => Incremental::black(plan), // the start is all zeros
                    };
                    normalize.write_all(fresh.output(), &mut out[..plane]);
                    state = Some(fresh);
                }
                Some(inc) => {
                    inc.update(current, changed);
                    let (before, after) = out.split_at_mut(k * plane);
                    let target = &mut after[..plane];
                    target.copy_from_slice(&before[(k - 1) * plane..]);
                    normalize.write_spans(
                        inc.output(),
                        plan.output_side(),
                        inc.recomputed(),
                        target,
                    );
                }
            }
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};

    fn lcg_image(h: usize, w: usize, seed: u64) -> Array3<u8> {
        let mut s = seed;
        Array3::from_shape_fn((h, w, 3), |_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
    }

    #[test]
    fn schedule_counts_and_rejects_bad_values() {
        let s = Schedule::new(100, 10).unwrap();
        assert_eq!(s.checkpoints(), 11);
        assert_eq!(s.pixels_per_step(224 * 224), 250);
        assert_eq!(s.pixels_per_step(10), 1);
        assert_eq!(s.changed_at(10, 224 * 224), 25_000);
        assert_eq!(s.changed_at(10, 30), 30); // tiny image: ranks run out
        assert!(Schedule::new(0, 1).is_err());
        assert!(Schedule::new(10, 3).is_err());
    }

    /// The full ranking by a comparison sort: heat descending, raster index ascending.
    fn reference_ranking(map: &Array2<f32>) -> Vec<u32> {
        let flat: Vec<f32> = map.iter().copied().collect();
        let mut order: Vec<u32> = (0..flat.len() as u32).collect();
        order.sort_by(|&a, &b| {
            flat[b as usize]
                .partial_cmp(&flat[a as usize])
                .unwrap()
                .then(a.cmp(&b))
        });
        order
    }

    /// Rank groups by the reference: each group's ranks, re-sorted into raster order.
    fn reference_groups(map: &Array2<f32>, ends: &[usize]) -> Vec<Vec<u32>> {
        let order = reference_ranking(map);
        let mut start = 0;
        ends.iter()
            .map(|&e| {
                let e = e.min(order.len());
                let mut group = order[start..e].to_vec();
                group.sort_unstable();
                start = e;
                group
            })
            .collect()
    }

    fn groups_of(map: &Array2<f32>, ends: &[usize]) -> Vec<Vec<u32>> {
        let g = rank_groups(map.view(), ends).unwrap();
        (0..ends.len())
            .map(|i| g.pixels[g.bounds[i]..g.bounds[i + 1]].to_vec())
            .collect()
    }

    #[test]
    fn ranking_is_descending_with_raster_ties() {
        let map = Array2::from_shape_vec((2, 3), vec![0.5, 1.0, 0.5, -0.0, 1.0, 0.0]).unwrap();
        assert_eq!(reference_ranking(&map), vec![1, 4, 0, 2, 3, 5]);
        assert_eq!(
            groups_of(&map, &[1, 3, 4, 6]),
            vec![vec![1], vec![0, 4], vec![2], vec![3, 5]]
        );
        let neg =
            Array2::from_shape_vec((1, 4), vec![-3.0, -1.0, f32::MIN_POSITIVE, -2.0]).unwrap();
        assert_eq!(
            groups_of(&neg, &[1, 2, 3, 4]),
            vec![vec![2], vec![1], vec![3], vec![0]]
        );
    }

    #[test]
    fn rank_groups_equal_a_comparison_sort() {
        let mut s = 99u64;
        let cases: [(usize, usize, u64, f32); 7] = [
            (37, 41, 1 << 40, 1.0),
            (20, 30, 7, 1.0), // many ties
            (1, 1, 3, 1.0),
            (64, 3, 2, 1.0),
            (30, 30, 1 << 20, 1e-44),  // a range of a few subnormals
            (30, 30, 1 << 20, 3e32),   // a range near f32::MAX
            (200, 300, 1 << 30, 1e-6), // narrow range: boundaries share 16-bit buckets
        ];
        for (h, w, levels, unit) in cases {
            let map = Array2::from_shape_fn((h, w), |_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let sign = if s >> 63 == 1 { -0.37 } else { 0.61 };
                1.0 + ((s >> 20) % levels) as f32 * unit * sign
            });
            let n = h * w;
            for mut ends in [
                vec![n / 20, n / 10, n / 2],
                vec![1, 1, 2, n, n + 5],
                vec![0, n / 3, n / 3 + 1],
                (1..=10).map(|k| k * n / 20).collect(),
            ] {
                ends.sort_unstable();
                assert_eq!(
                    groups_of(&map, &ends),
                    reference_groups(&map, &ends),
                    "{h}×{w} {ends:?}"
                );
            }
        }
    }

    #[test]
    fn nan_and_infinite_heat_are_rejected() {
        let mut map = Array2::<f32>::zeros((3, 4));
        map[[2, 1]] = f32::NAN;
        let err = rank_groups(map.view(), &[5]).unwrap_err().to_string();
        assert!(err.contains("row 2, column 1"), "{err}");
        map[[2, 1]] = f32::INFINITY;
        assert!(rank_groups(map.view(), &[5]).is_err());
        assert!(rank_groups(Array2::<f32>::zeros((2, 2)).view(), &[3, 1]).is_err());
    }

    #[test]
    fn fill_stream_matches_pcg64_reference_values() {
        // Pcg64::new(0, 0): state after construction is (0 + 1)·M + 1; first output by hand.
        const M: u128 = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645;
        let mut state: u128 = 1u128.wrapping_mul(M).wrapping_add(1);
        state = state.wrapping_mul(M).wrapping_add(1);
        let rot = (state >> 122) as u32;
        let word = (((state >> 64) as u64) ^ (state as u64)).rotate_right(rot);
        let mut fill = FillBytes::new(0, 0);
        let bytes: Vec<u8> = (0..8).map(|_| fill.next_byte()).collect();
        assert_eq!(bytes, word.to_le_bytes().to_vec());
    }

    #[test]
    fn insertion_reaches_half_the_image_and_deletion_changes_the_same_pixels() {
        let (h, w) = (13, 17);
        let image = lcg_image(h, w, 3);
        let map = Array2::from_shape_fn((h, w), |(y, x)| ((y * 7 + x * 3) % 11) as f32);
        let schedule = Schedule::new(100, 10).unwrap();
        let ins =
            checkpoint_images(image.view(), map.view(), Mode::Insertion, schedule, 0, 0).unwrap();
        let del =
            checkpoint_images(image.view(), map.view(), Mode::Deletion, schedule, 5, 2).unwrap();
        assert_eq!(ins.dim(), (11, h, w, 3));
        assert!(ins.index_axis(ndarray::Axis(0), 0).iter().all(|&v| v == 0));
        assert_eq!(del.index_axis(ndarray::Axis(0), 0), image.view());
        // 221 pixels, n = 1 per step: 100 pixels changed at the end
        let order = reference_ranking(&map);
        for (rank, &p) in order.iter().take(100).enumerate() {
            let (y, x) = (p as usize / w, p as usize % w);
            let k_first = rank / 10 + 1; // the checkpoint where this pixel has first changed
            for k in 0..11 {
                let inserted = ins.slice(ndarray::s![k, y, x, ..]);
                if k >= k_first {
                    assert_eq!(inserted, image.slice(ndarray::s![y, x, ..]));
                    assert_eq!(
                        del.slice(ndarray::s![k, y, x, ..]),
                        del.slice(ndarray::s![10, y, x, ..])
                    );
                } else {
                    assert!(inserted.iter().all(|&v| v == 0));
                    assert_eq!(
                        del.slice(ndarray::s![k, y, x, ..]),
                        image.slice(ndarray::s![y, x, ..])
                    );
                }
            }
        }
    }

    #[test]
    fn non_contiguous_inputs_give_the_same_checkpoints() {
        let image = lcg_image(9, 10, 1);
        let map = Array2::from_shape_fn((10, 9), |(y, x)| (y * 9 + x) as f32 * 0.1);
        let mut image_t = Array3::<u8>::zeros((10, 9, 3).f());
        image_t.assign(&image.view().permuted_axes([1, 0, 2]));
        let contiguous = image_t.as_standard_layout().to_owned();
        let schedule = Schedule::new(20, 5).unwrap();
        let a =
            checkpoint_images(image_t.view(), map.view(), Mode::Deletion, schedule, 9, 4).unwrap();
        let b = checkpoint_images(
            contiguous.view(),
            map.view(),
            Mode::Deletion,
            schedule,
            9,
            4,
        )
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn model_ready_batch_equals_preprocessing_each_checkpoint() {
        let (h, w) = (41, 29);
        let image = lcg_image(h, w, 7);
        let map = Array2::from_shape_fn((h, w), |(y, x)| {
            ((y as f32 - 20.0).powi(2) + (x as f32 - 9.0).powi(2)).sqrt()
        });
        let schedule = Schedule::new(100, 10).unwrap();
        let plan = ResizeCrop::new(h, w, 16).unwrap();
        let norm = Normalize::new([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]).unwrap();
        for mode in [Mode::Deletion, Mode::Insertion] {
            let images = checkpoint_images(image.view(), map.view(), mode, schedule, 3, 1).unwrap();
            let mut fast = vec![0f32; 11 * 3 * 16 * 16];
            checkpoint_batch(
                image.view(),
                map.view(),
                mode,
                schedule,
                3,
                1,
                &plan,
                &norm,
                &mut fast,
            )
            .unwrap();
            for k in 0..11 {
                let frame = images.index_axis(ndarray::Axis(0), k).to_owned();
                let resized = plan.apply(frame.as_slice().unwrap());
                let mut slow = vec![0f32; 3 * 16 * 16];
                norm.write_all(&resized, &mut slow);
                assert_eq!(
                    &fast[k * 768..(k + 1) * 768],
                    &slow[..],
                    "checkpoint {k} of {mode:?}"
                );
            }
        }
    }

    #[test]
    fn mismatched_map_is_an_error() {
        let image = lcg_image(4, 5, 0);
        let map = Array2::<f32>::zeros((5, 4));
        let schedule = Schedule::new(10, 5).unwrap();
        assert!(
            checkpoint_images(image.view(), map.view(), Mode::Insertion, schedule, 0, 0).is_err()
        );
    }

    use ndarray::ShapeBuilder;
}
