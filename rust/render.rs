//! Batched rendering: upsample, normalise, colour, blend, encode and save many maps and images,
//! one item per rayon task (callers run these inside `threads::install`).
//!
//! Inputs are borrowed row-major buffers with their shapes; outputs of the array-returning
//! functions are one flat buffer holding every item's result back to back, in input order (the
//! Python layer reshapes or splits it without copying). Every input is validated before any work
//! starts, and every error names the offending item as `maps[i]`, `images[i]`, `sizes[i]` or
//! `paths[i]`.

use std::path::PathBuf;

use rayon::prelude::*;

use crate::colormap::{self, Colormap};
use crate::error::{NativeError, NativeResult};
use crate::png::{self, Compression};
use crate::resample::{self, Mode};

/// A borrowed `h × w` float map.
#[derive(Debug, Clone, Copy)]
pub struct MapRef<'a> {
    pub data: &'a [f32],
    pub shape: (usize, usize),
}

/// A borrowed `h × w` RGB image, 3 bytes per pixel.
#[derive(Debug, Clone, Copy)]
pub struct ImageRef<'a> {
    pub data: &'a [u8],
    pub shape: (usize, usize),
}

fn value_error(msg: String) -> NativeError {
    NativeError::Value(msg)
}

/// `h · w · channels`, or a `ValueError` naming `what` when it overflows.
fn area(what: &str, (h, w): (usize, usize), channels: usize) -> NativeResult<usize> {
    h.checked_mul(w)
        .and_then(|n| n.checked_mul(channels))
        .ok_or_else(|| value_error(format!("{what}: size {h}x{w} is too large")))
}

fn check_shape(i: usize, map: &MapRef) -> NativeResult<()> {
    let (h, w) = map.shape;
    if h == 0 || w == 0 {
        return Err(value_error(format!("maps[{i}] is empty ({h}x{w})")));
    }
    if map.data.len() != area(&format!("maps[{i}]"), map.shape, 1)? {
        return Err(value_error(format!(
            "maps[{i}] has {} values, not {h}x{w}",
            map.data.len()
        )));
    }
    Ok(())
}

fn not_finite(i: usize) -> NativeError {
    value_error(format!("maps[{i}] contains NaN or infinity"))
}

/// Whether no value is NaN or infinite. Scans in blocks without early exit inside a block,
/// which lets the compiler vectorise it.
fn all_finite(values: &[f32]) -> bool {
    values
        .chunks(1024)
        .all(|block| block.iter().fold(true, |ok, v| ok & v.is_finite()))
}

/// Check every map's shape and that it holds only finite values.
fn check_maps(maps: &[MapRef]) -> NativeResult<()> {
    for (i, map) in maps.iter().enumerate() {
        check_shape(i, map)?;
        if !all_finite(map.data) {
            return Err(not_finite(i));
        }
    }
    Ok(())
}

fn check_images(images: &[ImageRef]) -> NativeResult<()> {
    for (i, image) in images.iter().enumerate() {
        let (h, w) = image.shape;
        if h == 0 || w == 0 {
            return Err(value_error(format!("images[{i}] is empty ({h}x{w})")));
        }
        if image.data.len() != area(&format!("images[{i}]"), image.shape, 3)? {
            return Err(value_error(format!(
                "images[{i}] has {} bytes, not {h}x{w}x3",
                image.data.len()
            )));
        }
    }
    Ok(())
}

fn check_count(what: &str, got: usize, want: usize) -> NativeResult<()> {
    if got != want {
        return Err(value_error(format!(
            "got {got} {what} for {want} maps; pass one per map"
        )));
    }
    Ok(())
}

fn check_alpha(alpha: f32) -> NativeResult<()> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(value_error(format!("alpha must be in [0, 1], got {alpha}")));
    }
    Ok(())
}

/// A zero-filled buffer of `len` items, or a `ValueError` when it cannot be allocated.
///
/// `vec![0; len]` gets its memory already zeroed from the allocator (no fill pass, pages are
/// touched only when written), but aborts the process when the allocation fails; so the size is
/// first tried with a fallible reservation that is released at once.
fn zeros<T: Clone + Default>(len: usize) -> NativeResult<Vec<T>> {
    Vec::<T>::new().try_reserve_exact(len).map_err(|_| {
        value_error(format!(
            "cannot allocate {len} output values ({} bytes)",
            len.saturating_mul(std::mem::size_of::<T>())
        ))
    })?;
    Ok(vec![T::default(); len])
}

/// Split `buf` into consecutive pieces of the given lengths (which must sum to its length).
fn split_mut<'a, T>(mut buf: &'a mut [T], lens: &[usize]) -> Vec<&'a mut [T]> {
    let mut pieces = Vec::with_capacity(lens.len());
    for &len in lens {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(len);
        pieces.push(head);
        buf = tail;
    }
    pieces
}

/// One zero-filled output buffer long enough for items of the given lengths back to back.
fn flat_output<T: Clone + Default>(lens: &[usize]) -> NativeResult<Vec<T>> {
    let total = lens
        .iter()
        .try_fold(0usize, |acc, &n| acc.checked_add(n))
        .ok_or_else(|| value_error("total output size overflows".to_string()))?;
    zeros(total)
}

/// Resize each map to its size in `sizes` (one per map). Returns the resized maps back to back.
pub fn upsample(maps: &[MapRef], sizes: &[(usize, usize)], mode: Mode) -> NativeResult<Vec<f32>> {
    check_count("sizes", sizes.len(), maps.len())?;
    check_maps(maps)?;
    let mut lens = Vec::with_capacity(sizes.len());
    for (i, &(h, w)) in sizes.iter().enumerate() {
        if h == 0 || w == 0 {
            return Err(value_error(format!(
                "sizes[{i}] is ({h}, {w}); sizes must be positive"
            )));
        }
        lens.push(area(&format!("sizes[{i}]"), (h, w), 1)?);
    }
    let mut out = flat_output(&lens)?;
    split_mut(&mut out, &lens)
        .into_par_iter()
        .zip(maps.par_iter().zip(sizes.par_iter()))
        .enumerate()
        .try_for_each(|(i, (dst, (map, &size)))| {
            resample::resize(map.data, map.shape, dst, size, mode)
                .map_err(|e| value_error(format!("maps[{i}]: {e}")))
        })?;
    Ok(out)
}

/// Lanes of the min/max scan: independent accumulators the compiler keeps in SIMD registers.
const LANES: usize = 16;

/// `(min, max)` of `values`, or None when one is NaN or infinite (or there are none).
fn min_max(values: &[f32]) -> Option<(f32, f32)> {
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for k in 0..LANES {
            lo[k] = lo[k].min(chunk[k]);
            hi[k] = hi[k].max(chunk[k]);
            nan[k] |= chunk[k].is_nan();
        }
    }
    // f32::min/max skip NaN, so NaN is tracked on the side; infinities show up in lo/hi.
    let rest = chunks.remainder();
    let lo = rest.iter().chain(&lo).fold(f32::INFINITY, |a, &b| a.min(b));
    let hi = rest
        .iter()
        .chain(&hi)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let nan = nan.contains(&true) || rest.iter().any(|v| v.is_nan());
    (!nan && lo.is_finite() && hi.is_finite()).then_some((lo, hi))
}

/// The min-max rescaling of one map: `v ↦ (v − min) / (max − min)`, computed in `f32` (so exactly
/// 0 at the minimum, 1 at the maximum, never outside [0, 1]); in `f64` when `max − min`
/// overflows `f32`; all zeros for a constant map.
#[derive(Debug, Clone, Copy)]
pub enum Rescale {
    Zero,
    Single { lo: f32, range: f32 },
    Double { lo: f64, range: f64 },
}

impl Rescale {
    /// The rescaling that maps `values` onto [0, 1]; None when one is NaN or infinite.
    pub fn of(values: &[f32]) -> Option<Rescale> {
        let (lo, hi) = min_max(values)?;
        let range = hi - lo;
        Some(if range == 0.0 {
            Rescale::Zero
        } else if range.is_finite() {
            Rescale::Single { lo, range }
        } else {
            Rescale::Double {
                lo: lo as f64,
                range: hi as f64 - lo as f64,
            }
        })
    }

    /// The rescaled value of `v`.
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Rescale::Zero => 0.0,
            Rescale::Single { lo, range } => (v - lo) / range,
            Rescale::Double { lo, range } => ((v as f64 - lo) / range) as f32,
        }
    }
}

/// Min-max normalise `src` into `dst` (same length); see `Rescale`. Returns false, leaving
/// `dst` untouched, when `src` holds NaN or infinity.
pub fn normalize_into(src: &[f32], dst: &mut [f32]) -> bool {
    let Some(rescale) = Rescale::of(src) else {
        return false;
    };
    // One loop per case (the same arithmetic as `Rescale::apply`), so the common one vectorises.
    match rescale {
        Rescale::Zero => dst.fill(0.0),
        Rescale::Single { lo, range } => dst
            .iter_mut()
            .zip(src)
            .for_each(|(d, &v)| *d = (v - lo) / range),
        Rescale::Double { lo, range } => dst
            .iter_mut()
            .zip(src)
            .for_each(|(d, &v)| *d = ((v as f64 - lo) / range) as f32),
    }
    true
}

/// Min-max normalise each map (see `Rescale`). Returns the maps back to back.
pub fn normalize(maps: &[MapRef]) -> NativeResult<Vec<f32>> {
    // Shapes first; finiteness comes out of the min/max scan, saving a pass over large maps.
    for (i, map) in maps.iter().enumerate() {
        check_shape(i, map)?;
    }
    let lens: Vec<usize> = maps.iter().map(|m| m.data.len()).collect();
    let mut out = flat_output(&lens)?;
    split_mut(&mut out, &lens)
        .into_par_iter()
        .zip(maps.par_iter())
        .enumerate()
        .try_for_each(|(i, (dst, map))| {
            normalize_into(map.data, dst)
                .then_some(())
                .ok_or_else(|| not_finite(i))
        })?;
    Ok(out)
}

/// Colour each map with `cmap` (values clamped to [0, 1]). Returns RGB bytes back to back.
pub fn colorize(maps: &[MapRef], cmap: Colormap) -> NativeResult<Vec<u8>> {
    check_maps(maps)?;
    let lens: Vec<usize> = maps.iter().map(|m| 3 * m.data.len()).collect();
    let mut out = flat_output(&lens)?;
    split_mut(&mut out, &lens)
        .into_par_iter()
        .zip(maps.par_iter())
        .try_for_each(|(dst, map)| colormap::colorize(map.data, cmap, dst))?;
    Ok(out)
}

/// Blend one image with one map into `out` (same size as the image): the map is upsampled
/// bilinearly to the image size, min-max normalised, coloured with `cmap`, and each channel
/// becomes `⌊(1 − α)·image + α·colour + 0.5⌋`, computed in `f32`.
fn overlay_one(
    image: &ImageRef,
    map: &MapRef,
    alpha: f32,
    cmap: Colormap,
    out: &mut [u8],
) -> NativeResult<()> {
    let mut heat = zeros::<f32>(image.data.len() / 3)?;
    resample::resize(map.data, map.shape, &mut heat, image.shape, Mode::Bilinear)?;
    // Finite maps upsample to finite values, barring overflow near f32::MAX.
    let rescale = Rescale::of(&heat)
        .ok_or_else(|| value_error("the upsampled map overflows float32".to_string()))?;
    let table = cmap.table();
    let keep = 1.0 - alpha;
    for ((&v, src), dst) in heat
        .iter()
        .zip(image.data.chunks_exact(3))
        .zip(out.chunks_exact_mut(3))
    {
        let colour = &table[colormap::index(rescale.apply(v))];
        for c in 0..3 {
            // Non-negative and at most 255.5 + rounding, so `as u8` (saturating) is a floor.
            dst[c] = (keep * src[c] as f32 + alpha * colour[c] as f32 + 0.5) as u8;
        }
    }
    Ok(())
}

/// Overlay each map on its image (see `overlay_one`). Returns RGB bytes back to back, each image
/// keeping its size.
pub fn overlay(
    images: &[ImageRef],
    maps: &[MapRef],
    alpha: f32,
    cmap: Colormap,
) -> NativeResult<Vec<u8>> {
    check_count("images", images.len(), maps.len())?;
    check_alpha(alpha)?;
    check_images(images)?;
    check_maps(maps)?;
    let lens: Vec<usize> = images.iter().map(|im| im.data.len()).collect();
    let mut out = flat_output(&lens)?;
    split_mut(&mut out, &lens)
        .into_par_iter()
        .zip(images.par_iter().zip(maps.par_iter()))
        .enumerate()
        .try_for_each(|(i, (dst, (image, map)))| {
            overlay_one(image, map, alpha, cmap, dst)
                .map_err(|e| value_error(format!("images[{i}]: {e}")))
        })?;
    Ok(out)
}

/// Encode each RGB image as PNG. Returns one byte vector per image.
pub fn encode_png(images: &[ImageRef], compression: Compression) -> NativeResult<Vec<Vec<u8>>> {
    check_images(images)?;
    images
        .par_iter()
        .enumerate()
        .map(|(i, im)| {
            png::encode_rgb(im.data, im.shape, compression)
                .map_err(|e| value_error(format!("images[{i}]: {e}")))
        })
        .collect()
}

/// Overlay each map on its image (as `overlay`), encode it as PNG and write it to its path
/// atomically (see `png::write_atomic`), all items in parallel. An `OSError` names `paths[i]`.
/// Items other than a failing one may still have been written.
pub fn save_overlays(
    paths: &[PathBuf],
    images: &[ImageRef],
    maps: &[MapRef],
    alpha: f32,
    cmap: Colormap,
    compression: Compression,
) -> NativeResult<()> {
    check_count("images", images.len(), maps.len())?;
    check_count("paths", paths.len(), maps.len())?;
    check_alpha(alpha)?;
    check_images(images)?;
    check_maps(maps)?;
    paths
        .par_iter()
        .zip(images.par_iter().zip(maps.par_iter()))
        .enumerate()
        .try_for_each(|(i, (path, (image, map)))| {
            let mut pixels = zeros::<u8>(image.data.len())?;
            overlay_one(image, map, alpha, cmap, &mut pixels)
                .map_err(|e| value_error(format!("images[{i}]: {e}")))?;
            let bytes = png::encode_rgb(&pixels, image.shape, compression)
                .map_err(|e| value_error(format!("images[{i}]: {e}")))?;
            png::write_atomic(path, &bytes).map_err(|e| match e {
                NativeError::Io(msg) => NativeError::Io(format!("paths[{i}]: {msg}")),
                other => other,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(data: &[f32], shape: (usize, usize)) -> MapRef<'_> {
        MapRef { data, shape }
    }

    #[test]
    fn upsample_writes_each_map_at_its_size() {
        let a = [1.0f32; 4];
        let b = [0.0f32, 1.0];
        let out = upsample(
            &[map(&a, (2, 2)), map(&b, (1, 2))],
            &[(3, 5), (2, 4)],
            Mode::Bilinear,
        )
        .unwrap();
        assert_eq!(out.len(), 15 + 8);
        assert!(out[..15].iter().all(|&v| v == 1.0));
        assert_eq!(&out[15..19], &[0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn errors_name_the_offending_item() {
        let good = [0.0f32; 4];
        let bad = [0.0f32, f32::NAN, 0.0, 0.0];
        let err = upsample(
            &[map(&good, (2, 2)), map(&bad, (2, 2))],
            &[(4, 4), (4, 4)],
            Mode::Bilinear,
        )
        .unwrap_err();
        assert!(err.to_string().contains("maps[1]"), "{err}");
        let err = upsample(&[map(&good, (2, 2))], &[(0, 4)], Mode::Bilinear).unwrap_err();
        assert!(err.to_string().contains("sizes[0]"), "{err}");
        let err = upsample(&[map(&good, (2, 2))], &[], Mode::Bilinear).unwrap_err();
        assert!(err.to_string().contains("sizes"), "{err}");
        let image = ImageRef {
            data: &[0u8; 11],
            shape: (2, 2),
        };
        let err = overlay(&[image], &[map(&good, (2, 2))], 0.5, Colormap::Jet).unwrap_err();
        assert!(err.to_string().contains("images[0]"), "{err}");
    }

    #[test]
    fn normalize_spans_zero_to_one_and_zeroes_constants() {
        let norm = |src: &[f32]| {
            let mut dst = vec![f32::NAN; src.len()];
            assert!(normalize_into(src, &mut dst));
            dst
        };
        assert_eq!(norm(&[2.0, 4.0, 3.0]), [0.0, 1.0, 0.5]);
        assert!(norm(&[7.0; 5]).iter().all(|&x| x == 0.0));
        assert_eq!(norm(&[-f32::MAX, 0.0, f32::MAX]), [0.0, 0.5, 1.0]);
        // Longer than the scan's lanes, extremes in the remainder and in the lanes.
        let long: Vec<f32> = (0..21).map(|i| ((i * 7) % 21) as f32).collect();
        let out = norm(&long);
        assert_eq!(out.iter().cloned().fold(f32::INFINITY, f32::min), 0.0);
        assert_eq!(out.iter().cloned().fold(f32::NEG_INFINITY, f32::max), 1.0);
        assert_eq!(
            norm(&[5.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0])[1],
            0.0
        );
    }

    #[test]
    fn overlay_alpha_extremes_give_image_or_colour() {
        let pixels: Vec<u8> = (0..2 * 3 * 3).map(|i| (i * 29 % 256) as u8).collect();
        let image = ImageRef {
            data: &pixels,
            shape: (2, 3),
        };
        let grid = [0.0f32, 1.0, 0.5, 0.25];
        let m = map(&grid, (2, 2));
        assert_eq!(overlay(&[image], &[m], 0.0, Colormap::Jet).unwrap(), pixels);
        let full = overlay(&[image], &[m], 1.0, Colormap::Turbo).unwrap();
        let mut heat = vec![0.0f32; 6];
        resample::resize(&grid, (2, 2), &mut heat, (2, 3), Mode::Bilinear).unwrap();
        let mut normalized = vec![0.0f32; 6];
        assert!(normalize_into(&heat, &mut normalized));
        let mut colours = vec![0u8; 18];
        colormap::colorize(&normalized, Colormap::Turbo, &mut colours).unwrap();
        assert_eq!(full, colours);
        assert!(overlay(&[image], &[m], 1.5, Colormap::Jet).is_err());
    }
}
