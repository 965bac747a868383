//! CLIP's evaluation preprocessing of a uint8 RGB image, pure Rust:
//! resize the shorter side to `S` (bicubic, antialiased), centre-crop `S × S`, scale to [0, 1],
//! normalise per channel — what open_clip's `image_transform(S, is_train=False)` does with
//! torchvision on a PIL image.
//!
//! The resize reproduces Pillow's convolution resampler (`ImagingResample`, 8-bit path) exactly:
//! the same filter support (`2 · max(1, in/out)` for bicubic with a = −0.5), the same per-output
//! tap bounds and normalised weights, converted to 22-bit fixed point, a horizontal pass rounded
//! and clipped to uint8, then a vertical pass over it. Sizes follow torchvision: the longer side
//! becomes `int(S · long / short)`, the crop offset is `round((size − S) / 2)` (half to even), and
//! an axis whose size does not change is not resampled. Normalisation is
//! `(v / 255 − mean) / std` in float32, as `ToTensor` + `Normalize` compute it.
//!
//! Only the `S × S` outputs that survive the crop are computed. [`Incremental`] keeps both passes
//! of one image and, after some pixels change, recomputes only the outputs those pixels reach.

use crate::error::{NativeError, NativeResult};

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel (a = −0.5), with its exact operation order.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point taps of one resampling axis, for a run of consecutive outputs.
#[derive(Clone, Debug)]
struct Taps {
    /// first input index read by each output
    start: Vec<usize>,
    /// number of inputs read by each output
    len: Vec<usize>,
    /// `ksize` weights per output (22-bit fixed point), the first `len` used
    weights: Vec<i32>,
    ksize: usize,
}

impl Taps {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a bicubic resize of an axis of
    /// `in_size` samples to `out_size`, keeping the outputs `first .. first + count`.
    fn pillow(in_size: usize, out_size: usize, first: usize, count: usize) -> Taps {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut taps = Taps {
            start: Vec::with_capacity(count),
            len: Vec::with_capacity(count),
            weights: vec![0; count * ksize],
            ksize,
        };
        let mut k = vec![0f64; ksize];
        for (o, xx) in (first..first + count).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax - xmin;
            let mut ww = 0.0;
            for (x, slot) in k.iter_mut().enumerate().take(n) {
                let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
                *slot = w;
                ww += w;
            }
            for (x, &w) in k.iter().enumerate().take(n) {
                let w = if ww != 0.0 { w / ww } else { w };
                let fixed = w * (1u32 << PRECISION_BITS) as f64;
                taps.weights[o * ksize + x] = if w < 0.0 {
                    (-0.5 + fixed) as i32
                } else {
                    (0.5 + fixed) as i32
                };
            }
            taps.start.push(xmin);
            taps.len.push(n);
        }
        taps
    }

    /// An axis that is not resampled: output `o` reads input `first + o` with weight one.
    fn identity(first: usize, count: usize) -> Taps {
        Taps {
            start: (first..first + count).collect(),
            len: vec![1; count],
            weights: vec![1 << PRECISION_BITS; count],
            ksize: 1,
        }
    }

    /// For each input index `0..in_size`: the outputs `(lo, hi)` whose taps read it (`lo == hi`: none).
    fn readers(&self, in_size: usize) -> Vec<(u32, u32)> {
        let mut readers = vec![(u32::MAX, 0u32); in_size];
        for o in 0..self.start.len() {
            for r in readers.iter_mut().skip(self.start[o]).take(self.len[o]) {
                r.0 = r.0.min(o as u32);
                r.1 = r.1.max(o as u32 + 1);
            }
        }
        for r in &mut readers {
            if r.0 == u32::MAX {
                *r = (0, 0);
            }
        }
        readers
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// torchvision's `Resize(S)` output size `(height, width)`: the shorter side becomes `S`, the
/// longer `int(S · long / short)`.
pub fn resized_size(height: usize, width: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if width <= height {
        (new_long, size)
    } else {
        (size, new_long)
    }
}

/// torchvision's `CenterCrop` offset: `int(round((full − size) / 2))`, Python's half-to-even round.
pub fn crop_offset(full: usize, size: usize) -> usize {
    let twice = full - size;
    let half = twice / 2;
    if twice % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Output columns (and intermediate rows) per tile of the incremental update.
const TILE: usize = 8;
/// i32 accumulators for one row of a tile: `TILE` pixels × 3 channels.
const LANES: usize = TILE * 3;

/// The set bits of `words`, as runs `(first, end)` of consecutive bit indices.
fn runs(words: &[u64]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let total = words.len() * 64;
    let bit = move |i: usize| words[i / 64] >> (i % 64) & 1 == 1;
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < total && !bit(i) {
            i += 1;
        }
        if i >= total {
            return None;
        }
        let first = i;
        while i < total && bit(i) {
            i += 1;
        }
        Some((first, i))
    })
}

/// Set bits `lo..hi` of `words`.
fn set_bits(words: &mut [u64], lo: usize, hi: usize) {
    for i in lo..hi {
        words[i / 64] |= 1 << (i % 64);
    }
}

/// The resize + centre crop of one input size to `S × S`, with what the incremental update needs.
#[derive(Clone, Debug)]
pub struct ResizeCrop {
    height: usize,
    width: usize,
    size: usize,
    cols: Taps,
    rows: Taps,
    /// input rows `row_lo .. row_hi` are read by the vertical pass
    row_lo: usize,
    row_hi: usize,
    /// per input column: the output tile columns `lo..hi` whose taps read it
    col_tiles: Vec<(u32, u32)>,
    /// per block of `TILE` intermediate rows: the output tile rows `lo..hi` that read it
    row_tiles: Vec<(u32, u32)>,
    /// tile columns of the output (`ceil(S / TILE)`), and 64-bit words per tile-column bitset
    tile_cols: usize,
    words: usize,
    avx2: bool,
}

impl ResizeCrop {
    /// The plan for `height × width` inputs and output size `size`; errors on empty sizes.
    pub fn new(height: usize, width: usize, size: usize) -> NativeResult<ResizeCrop> {
        if height == 0 || width == 0 || size == 0 {
            return Err(NativeError::Value(format!(
                "cannot resize a {height}×{width} image to {size}×{size}"
            )));
        }
        let (new_h, new_w) = resized_size(height, width, size);
        let (top, left) = (crop_offset(new_h, size), crop_offset(new_w, size));
        let axis = |input: usize, resized: usize, offset: usize| {
            if input == resized {
                Taps::identity(offset, size)
            } else {
                Taps::pillow(input, resized, offset, size)
            }
        };
        let cols = axis(width, new_w, left);
        let rows = axis(height, new_h, top);
        let row_lo = rows.start.iter().copied().min().unwrap_or(0);
        let row_hi = (0..size)
            .map(|i| rows.start[i] + rows.len[i])
            .max()
            .unwrap_or(0);
        let to_tiles = |(lo, hi): (u32, u32)| {
            if lo == hi {
                (0, 0)
            } else {
                (lo / TILE as u32, (hi - 1) / TILE as u32 + 1)
            }
        };
        let col_tiles = cols.readers(width).into_iter().map(to_tiles).collect();
        let row_readers = rows.readers(height);
        let row_tiles = (row_lo..row_hi)
            .step_by(TILE)
            .map(|y0| {
                let block = &row_readers[y0..(y0 + TILE).min(row_hi)];
                let lo = block
                    .iter()
                    .filter(|r| r.0 < r.1)
                    .map(|r| r.0)
                    .min()
                    .unwrap_or(0);
                let hi = block.iter().map(|r| r.1).max().unwrap_or(0);
                to_tiles((lo, hi.max(lo)))
            })
            .collect();
        let tile_cols = size.div_ceil(TILE);
        Ok(ResizeCrop {
            height,
            width,
            size,
            cols,
            rows,
            row_lo,
            row_hi,
            col_tiles,
            row_tiles,
            tile_cols,
            words: tile_cols.div_ceil(64),
            avx2: has_avx2(),
        })
    }

    /// `(height, width)` of the inputs this plan is for.
    pub fn input_size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// Pixels of one output image: `S · S`.
    pub fn output_len(&self) -> usize {
        self.size * self.size
    }

    /// Side `S` of the square output.
    pub fn output_side(&self) -> usize {
        self.size
    }

    /// Horizontal pass for the intermediate rows of block `block` (`TILE` rows from
    /// `row_lo + TILE·block`) and output columns `lo..hi`, written into `tmp`. `scratch` holds the
    /// input columns the outputs read, transposed so each column's `TILE` rows × 3 channels are
    /// contiguous, and every output accumulates `LANES` lanes at once.
    fn horizontal_block(
        &self,
        image: &[u8],
        block: usize,
        lo: usize,
        hi: usize,
        tmp: &mut [u8],
        scratch: &mut Vec<u8>,
    ) {
        let y0 = self.row_lo + block * TILE;
        let nrows = TILE.min(self.row_hi - y0);
        let x_lo = (lo..hi).map(|j| self.cols.start[j]).min().unwrap_or(0);
        let x_hi = (lo..hi)
            .map(|j| self.cols.start[j] + self.cols.len[j])
            .max()
            .unwrap_or(0);
        // Lanes of rows past `nrows` (the last block) hold stale bytes; their sums are never read.
        if scratch.len() < (x_hi - x_lo) * LANES {
            scratch.resize((x_hi - x_lo) * LANES, 0);
        }
        let rows: Vec<&[u8]> = (0..nrows)
            .map(|r| &image[((y0 + r) * self.width + x_lo) * 3..((y0 + r) * self.width + x_hi) * 3])
            .collect();
        transpose_pixels(&rows, &mut scratch[..(x_hi - x_lo) * LANES]);
        let ksize = self.cols.ksize;
        let stride = self.size * 3;
        for j in lo..hi {
            let first = self.cols.start[j] - x_lo;
            let weights = &self.cols.weights[j * ksize..j * ksize + self.cols.len[j]];
            let columns = &scratch[first * LANES..(first + weights.len()) * LANES];
            let bytes = mac_columns(self.avx2, columns, weights);
            for r in 0..nrows {
                let at = (y0 + r - self.row_lo) * stride + j * 3;
                tmp[at..at + 3].copy_from_slice(&bytes[r * 3..r * 3 + 3]);
            }
        }
    }

    /// Vertical pass over the intermediate image `tmp` for output row `i`, columns `lo..hi`,
    /// written into `out` (the whole output image). `acc` is scratch.
    #[inline(always)]
    fn vertical_span_body(
        &self,
        tmp: &[u8],
        i: usize,
        lo: usize,
        hi: usize,
        out: &mut [u8],
        acc: &mut Vec<i32>,
    ) {
        let stride = self.size * 3;
        let first = self.rows.start[i] - self.row_lo;
        let ksize = self.rows.ksize;
        let weights = &self.rows.weights[i * ksize..i * ksize + self.rows.len[i]];
        acc.clear();
        acc.resize((hi - lo) * 3, 1i32 << (PRECISION_BITS - 1));
        for (t, &w) in weights.iter().enumerate() {
            let row = &tmp[(first + t) * stride + lo * 3..(first + t) * stride + hi * 3];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v as i32 * w;
            }
        }
        for (o, &a) in out[i * stride + lo * 3..i * stride + hi * 3]
            .iter_mut()
            .zip(acc.iter())
        {
            *o = clip8(a);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn vertical_span_avx2(
        &self,
        tmp: &[u8],
        i: usize,
        lo: usize,
        hi: usize,
        out: &mut [u8],
        acc: &mut Vec<i32>,
    ) {
        self.vertical_span_body(tmp, i, lo, hi, out, acc)
    }

    fn vertical_span(
        &self,
        tmp: &[u8],
        i: usize,
        lo: usize,
        hi: usize,
        out: &mut [u8],
        acc: &mut Vec<i32>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is only true when the CPU reports AVX2 (`has_avx2`).
            return unsafe { self.vertical_span_avx2(tmp, i, lo, hi, out, acc) };
        }
        self.vertical_span_body(tmp, i, lo, hi, out, acc)
    }

    /// Resize + centre crop of `image` (`H·W·3` bytes, row-major RGB): `S·S·3` bytes.
    pub fn apply(&self, image: &[u8]) -> Vec<u8> {
        Incremental::new(self, image).out
    }
}

/// Interleave up to `TILE` rows of RGB pixels column by column: column `x` of `out` holds pixel
/// `x` of row 0, then of row 1, … (`LANES` bytes per column; lanes of missing rows are zero).
/// Pixels move as 4-byte words whose spare byte the next pixel overwrites, so only the last
/// column needs 3-byte copies.
fn transpose_pixels(rows: &[&[u8]], out: &mut [u8]) {
    let count = out.len() / LANES;
    if count == 0 {
        return;
    }
    let mut full = [&[][..]; TILE];
    full[..rows.len()].copy_from_slice(rows);
    if rows.len() == TILE {
        assert!(full.iter().all(|row| row.len() == count * 3));
        let base = out.as_mut_ptr();
        for x in 0..count - 1 {
            for (r, row) in full.iter().enumerate() {
                // SAFETY: x ≤ count − 2, so the 4-byte read ends at 3x + 4 ≤ 3·count − 2 ≤
                // row.len(), and the write ends at LANES·x + 3r + 4 ≤ LANES·(x + 1) + 1, inside
                // `out` (column x + 1 exists); its spare byte is overwritten later (by row r + 1
                // of this column, or by row 0 of the next one).
                unsafe {
                    let word = std::ptr::read_unaligned(row.as_ptr().add(x * 3) as *const u32);
                    std::ptr::write_unaligned(base.add(x * LANES + r * 3) as *mut u32, word);
                }
            }
        }
    } else {
        for (x, column) in out.chunks_exact_mut(LANES).enumerate().take(count - 1) {
            column.fill(0);
            for (r, row) in rows.iter().enumerate() {
                column[r * 3..r * 3 + 3].copy_from_slice(&row[x * 3..x * 3 + 3]);
            }
        }
    }
    let last = &mut out[(count - 1) * LANES..count * LANES];
    last.fill(0);
    for (r, row) in rows.iter().enumerate() {
        last[r * 3..r * 3 + 3].copy_from_slice(&row[(count - 1) * 3..count * 3]);
    }
}

/// One tile row of the horizontal pass: lane `k` of the result is
/// `clip8(½ + Σ_t columns[t·LANES + k] · weights[t])` in 22-bit fixed point.
#[inline]
fn mac_columns(avx2: bool, columns: &[u8], weights: &[i32]) -> [u8; LANES] {
    let columns = &columns[..weights.len() * LANES];
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is only true when the CPU reports AVX2 (`has_avx2`).
        return unsafe { mac_columns_avx2(columns, weights) };
    }
    let _ = avx2;
    let mut acc = [1i32 << (PRECISION_BITS - 1); LANES];
    for (column, &w) in columns.chunks_exact(LANES).zip(weights) {
        for (a, &v) in acc.iter_mut().zip(column) {
            *a += v as i32 * w;
        }
    }
    acc.map(clip8)
}

/// [`mac_columns`] with 256-bit lanes: each column's 24 bytes widen to three vectors of 8 i32;
/// the sums are shifted and packed with unsigned saturation, which is `clip8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn mac_columns_avx2(columns: &[u8], weights: &[i32]) -> [u8; LANES] {
    use std::arch::x86_64::*;
    debug_assert_eq!(columns.len(), weights.len() * LANES);
    let mut bytes = [0u8; LANES];
    // SAFETY: `columns` holds `LANES` bytes per weight, read 8 bytes at a time; `bytes` takes
    // one 16-byte and one 8-byte store.
    unsafe {
        let half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
        let (mut a0, mut a1, mut a2) = (half, half, half);
        for (t, &w) in weights.iter().enumerate() {
            let p = columns.as_ptr().add(t * LANES);
            let w = _mm256_set1_epi32(w);
            let c0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i));
            let c1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(8) as *const __m128i));
            let c2 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(16) as *const __m128i));
            a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(c0, w));
            a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(c1, w));
            a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(c2, w));
        }
        // Pillow's sums stay within ±640·2²² (its clip table's range), so the i16 pack is exact
        // and the u8 pack clamps to 0..=255 like `clip8`.
        let shift = |a: __m256i| _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(a);
        let pack = |a: __m256i| {
            _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a))
        };
        let (s0, s1, s2) = (pack(shift(a0)), pack(shift(a1)), pack(shift(a2)));
        _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, _mm_packus_epi16(s0, s1));
        _mm_storel_epi64(
            bytes.as_mut_ptr().add(16) as *mut __m128i,
            _mm_packus_epi16(s2, s2),
        );
    }
    bytes
}

/// Whether the CPU running this has AVX2 (the passes then use 256-bit integer lanes).
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Both passes of one image, updated in place as pixels change.
///
/// Work is tracked in tiles of `TILE` columns: a bitset of dirty tile columns per block of
/// `TILE` intermediate rows and per block of `TILE` output rows. A changed pixel dirties the
/// intermediate tiles whose taps read it; a dirty intermediate tile dirties the output tiles of the
/// same column whose taps read its rows. Scattered changes cost a full recompute at worst;
/// clustered ones (the hot region of a heat map) only the tiles they reach.
pub struct Incremental<'p> {
    plan: &'p ResizeCrop,
    tmp: Vec<u8>,
    out: Vec<u8>,
    scratch: Vec<u8>,
    acc: Vec<i32>,
    tmp_dirty: Vec<u64>,
    out_dirty: Vec<u64>,
    spans: Vec<(u32, u32, u32)>,
}

impl<'p> Incremental<'p> {
    /// Both passes of `image` computed in full.
    pub fn new(plan: &'p ResizeCrop, image: &[u8]) -> Incremental<'p> {
        let mut inc = Incremental::black(plan);
        for block in 0..plan.row_tiles.len() {
            set_bits(
                &mut inc.tmp_dirty[block * plan.words..(block + 1) * plan.words],
                0,
                plan.tile_cols,
            );
        }
        inc.recompute(image);
        inc
    }

    /// The state of an all-black (zero) image, with nothing computed: every tap sum of zeros
    /// rounds to zero, so both passes are zero.
    pub fn black(plan: &'p ResizeCrop) -> Incremental<'p> {
        let blocks = plan.row_tiles.len();
        Incremental {
            plan,
            tmp: vec![0u8; (plan.row_hi - plan.row_lo) * plan.size * 3],
            out: vec![0u8; plan.size * plan.size * 3],
            scratch: Vec::new(),
            acc: Vec::new(),
            tmp_dirty: vec![0; blocks * plan.words],
            out_dirty: vec![0; plan.size.div_ceil(TILE) * plan.words],
            spans: Vec::new(),
        }
    }

    /// The current output, `S·S·3` bytes (row-major RGB).
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Bring the outputs up to date with `image`, which differs from the previous one at most at
    /// the raster indices `changed`; [`Incremental::recomputed`] then lists what it touched.
    pub fn update(&mut self, image: &[u8], changed: &[u32]) {
        let plan = self.plan;
        for &pixel in changed {
            let (y, x) = (pixel as usize / plan.width, pixel as usize % plan.width);
            let (lo, hi) = plan.col_tiles[x];
            if y < plan.row_lo || y >= plan.row_hi || lo == hi {
                continue;
            }
            let block = (y - plan.row_lo) / TILE;
            set_bits(
                &mut self.tmp_dirty[block * plan.words..(block + 1) * plan.words],
                lo as usize,
                hi as usize,
            );
        }
        self.recompute(image);
    }

    /// Recompute the dirty intermediate tiles, then the output tiles they reach; clear the bits.
    fn recompute(&mut self, image: &[u8]) {
        let plan = self.plan;
        let words = plan.words;
        self.spans.clear();
        for block in 0..plan.row_tiles.len() {
            let dirty = &self.tmp_dirty[block * words..(block + 1) * words];
            if dirty.iter().all(|&w| w == 0) {
                continue;
            }
            for (first, end) in runs(dirty) {
                let (lo, hi) = (first * TILE, (end * TILE).min(plan.size));
                plan.horizontal_block(image, block, lo, hi, &mut self.tmp, &mut self.scratch);
            }
            let (out_lo, out_hi) = plan.row_tiles[block];
            for out_block in out_lo as usize..out_hi as usize {
                for w in 0..words {
                    self.out_dirty[out_block * words + w] |= self.tmp_dirty[block * words + w];
                }
            }
            self.tmp_dirty[block * words..(block + 1) * words].fill(0);
        }
        for out_block in 0..plan.size.div_ceil(TILE) {
            let dirty = &self.out_dirty[out_block * words..(out_block + 1) * words];
            if dirty.iter().all(|&w| w == 0) {
                continue;
            }
            for (first, end) in runs(dirty) {
                let (lo, hi) = (first * TILE, (end * TILE).min(plan.size));
                for i in out_block * TILE..((out_block + 1) * TILE).min(plan.size) {
                    plan.vertical_span(&self.tmp, i, lo, hi, &mut self.out, &mut self.acc);
                    self.spans.push((i as u32, lo as u32, hi as u32));
                }
            }
            self.out_dirty[out_block * words..(out_block + 1) * words].fill(0);
        }
    }

    /// The output spans `(row, lo, hi)` (columns `lo..hi` of output row `row`) that the last
    /// [`Incremental::update`] recomputed.
    pub fn recomputed(&self) -> &[(u32, u32, u32)] {
        &self.spans
    }
}

/// `ToTensor` + `Normalize`: byte `v` of channel `c` becomes `(v / 255 − mean[c]) / std[c]` (f32).
pub struct Normalize {
    lut: [[f32; 256]; 3],
}

impl Normalize {
    /// Errors unless every mean is finite and every std finite and positive.
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> NativeResult<Normalize> {
        if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(NativeError::Value(format!(
                "mean must be finite and std finite and positive, got mean={mean:?}, std={std:?}"
            )));
        }
        let mut lut = [[0f32; 256]; 3];
        for c in 0..3 {
            for (v, slot) in lut[c].iter_mut().enumerate() {
                *slot = (v as f32 / 255.0 - mean[c]) / std[c];
            }
        }
        Ok(Normalize { lut })
    }

    /// `hwc` (`P·3` bytes, RGB per pixel) → `chw` (`3·P` floats, one plane per channel).
    pub fn write_all(&self, hwc: &[u8], chw: &mut [f32]) {
        let plane = hwc.len() / 3;
        let (r, rest) = chw.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (p, px) in hwc.chunks_exact(3).enumerate() {
            r[p] = self.lut[0][px[0] as usize];
            g[p] = self.lut[1][px[1] as usize];
            b[p] = self.lut[2][px[2] as usize];
        }
    }

    /// Like [`Normalize::write_all`] for the output spans `(row, lo, hi)` of an image `width`
    /// pixels wide only.
    pub fn write_spans(
        &self,
        hwc: &[u8],
        width: usize,
        spans: &[(u32, u32, u32)],
        chw: &mut [f32],
    ) {
        let plane = hwc.len() / 3;
        for &(row, lo, hi) in spans {
            let (lo, hi) = (
                row as usize * width + lo as usize,
                row as usize * width + hi as usize,
            );
            for (c, lut) in self.lut.iter().enumerate() {
                let dst = &mut chw[c * plane + lo..c * plane + hi];
                for (d, px) in dst.iter_mut().zip(hwc[lo * 3..hi * 3].chunks_exact(3)) {
                    *d = lut[px[c] as usize];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(h: usize, w: usize, seed: u32) -> Vec<u8> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..h * w * 3)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn sizes_and_offsets_follow_torchvision() {
        assert_eq!(resized_size(512, 512, 224), (224, 224));
        assert_eq!(resized_size(300, 451, 224), (224, 336)); // int(224·451/300) = int(336.74)
        assert_eq!(resized_size(451, 300, 224), (336, 224));
        assert_eq!(crop_offset(299, 224), 38); // round(37.5) = 38 (even)
        assert_eq!(crop_offset(297, 224), 36); // round(36.5) = 36 (even)
        assert_eq!(crop_offset(224, 224), 0);
        assert_eq!(crop_offset(226, 224), 1);
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (input, output) in [(512, 224), (100, 224), (225, 224), (7, 3)] {
            let taps = Taps::pillow(input, output, 0, output);
            for o in 0..output {
                let sum: i32 = taps.weights[o * taps.ksize..o * taps.ksize + taps.len[o]]
                    .iter()
                    .sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= taps.len[o] as i32,
                    "{input}->{output} output {o}: {sum}"
                );
            }
        }
    }

    #[test]
    fn same_size_is_identity_and_constant_stays_constant() {
        let img = image(16, 16, 3);
        assert_eq!(ResizeCrop::new(16, 16, 16).unwrap().apply(&img), img);
        let flat = vec![77u8; 40 * 23 * 3];
        assert!(ResizeCrop::new(40, 23, 11)
            .unwrap()
            .apply(&flat)
            .iter()
            .all(|&v| v == 77));
    }

    #[test]
    fn incremental_update_equals_recomputing() {
        for (h, w, s) in [(37, 53, 16), (64, 20, 24), (10, 10, 10), (9, 31, 12)] {
            let plan = ResizeCrop::new(h, w, s).unwrap();
            let mut img = image(h, w, 1);
            let mut inc = Incremental::new(&plan, &img);
            let replacement = image(h, w, 2);
            for round in 0..5 {
                let changed: Vec<u32> = (0..(h * w) as u32)
                    .filter(|p| (p * 7 + round) % 11 == 0)
                    .collect();
                for &p in &changed {
                    let p = p as usize * 3;
                    img[p..p + 3].copy_from_slice(&replacement[p..p + 3]);
                }
                inc.update(&img, &changed);
                assert_eq!(
                    inc.output(),
                    &plan.apply(&img)[..],
                    "{h}×{w}→{s} round {round}"
                );
            }
        }
    }

    #[test]
    fn portable_and_avx2_passes_agree() {
        for (h, w, s) in [(512, 384, 224), (37, 53, 16), (9, 31, 12)] {
            let img = image(h, w, 5);
            let mut plan = ResizeCrop::new(h, w, s).unwrap();
            let fast = plan.apply(&img);
            plan.avx2 = false;
            assert_eq!(plan.apply(&img), fast, "{h}×{w}→{s}");
        }
    }

    #[test]
    fn normalize_matches_the_formula_and_rejects_bad_std() {
        let norm = Normalize::new([0.5, 0.25, 0.0], [0.5, 0.25, 1.0]).unwrap();
        let mut out = [0f32; 6];
        norm.write_all(&[255, 0, 51, 0, 255, 102], &mut out);
        assert_eq!(out, [1.0, -1.0, -1.0, 3.0, 0.2, 0.4]);
        assert!(Normalize::new([0.0; 3], [1.0, 0.0, 1.0]).is_err());
    }
}
