//! Python wrappers of the evaluation core (`perturb.rs`, `clip_preprocess.rs`, `metrics.rs`).
//!
//! Each wrapper converts its inputs to array views, releases the GIL and runs over the images in
//! parallel inside the crate's thread pool. Errors name the image they come from.

use ndarray::{Array1, Array2, Array4, Array5, ArrayView2, ArrayView3};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArray4, PyArray5, PyReadonlyArray2, PyReadonlyArray3,
};
use pyo3::prelude::*;
use rayon::prelude::*;

use crate::clip_preprocess::{Normalize, ResizeCrop};
use crate::error::{NativeError, NativeResult};
use crate::metrics;
use crate::perturb::{self, Mode, Schedule};
use crate::threads;

/// Prefix an error with the index of the image it concerns.
fn for_image(index: usize, err: NativeError) -> NativeError {
    match err {
        NativeError::Value(msg) => NativeError::Value(format!("image {index}: {msg}")),
        NativeError::Type(msg) => NativeError::Type(format!("image {index}: {msg}")),
        NativeError::Io(msg) => NativeError::Io(format!("image {index}: {msg}")),
    }
}

fn check_pairs(what: &str, images: usize, maps: usize) -> NativeResult<()> {
    if images != maps {
        return Err(NativeError::Value(format!(
            "got {images} images but {maps} {what}"
        )));
    }
    Ok(())
}

fn image_views<'a>(images: &'a [PyReadonlyArray3<'_, u8>]) -> Vec<ArrayView3<'a, u8>> {
    images.iter().map(|a| a.as_array()).collect()
}

fn map_views<'a, T: numpy::Element>(maps: &'a [PyReadonlyArray2<'_, T>]) -> Vec<ArrayView2<'a, T>> {
    maps.iter().map(|a| a.as_array()).collect()
}

/// `perturbation_checkpoints(images, maps, mode, steps, eval_every, seed, streams)`:
/// list of uint8 `[K, H, W, 3]`, one per image (SPEC §7); image `i` uses fill stream `streams[i]`.
#[pyfunction(name = "perturbation_checkpoints")]
#[allow(clippy::too_many_arguments)]
fn perturbation_checkpoints_py<'py>(
    py: Python<'py>,
    images: Vec<PyReadonlyArray3<'py, u8>>,
    maps: Vec<PyReadonlyArray2<'py, f32>>,
    mode: &str,
    steps: usize,
    eval_every: usize,
    seed: u64,
    streams: Vec<u64>,
) -> PyResult<Vec<Bound<'py, PyArray4<u8>>>> {
    check_pairs("heat maps", images.len(), maps.len())?;
    check_pairs("fill streams", images.len(), streams.len())?;
    let mode = Mode::parse(mode)?;
    let schedule = Schedule::new(steps, eval_every)?;
    let (image_views, map_views) = (image_views(&images), map_views(&maps));
    let outs: Vec<Array4<u8>> = py.detach(|| {
        threads::install(|| {
            image_views
                .par_iter()
                .zip(map_views.par_iter())
                .enumerate()
                .map(|(i, (image, map))| {
                    perturb::checkpoint_images(
                        image.view(),
                        map.view(),
                        mode,
                        schedule,
                        seed,
                        streams[i],
                    )
                    .map_err(|e| for_image(i, e))
                })
                .collect::<NativeResult<Vec<_>>>()
        })?
    })?;
    Ok(outs.into_iter().map(|a| a.into_pyarray(py)).collect())
}

fn plans_for(images: &[ArrayView3<u8>], size: usize) -> NativeResult<Vec<ResizeCrop>> {
    images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            let (h, w, c) = image.dim();
            if c != 3 {
                return Err(NativeError::Value(format!(
                    "image {i}: must be [H, W, 3], got [{h}, {w}, {c}]"
                )));
            }
            ResizeCrop::new(h, w, size).map_err(|e| for_image(i, e))
        })
        .collect()
}

/// `perturbation_batch(images, maps, mode, steps, eval_every, seed, streams, size, mean, std)`:
/// float32 `[B, K, 3, S, S]`, every checkpoint through CLIP's preprocessing.
#[pyfunction(name = "perturbation_batch")]
#[allow(clippy::too_many_arguments)]
fn perturbation_batch_py<'py>(
    py: Python<'py>,
    images: Vec<PyReadonlyArray3<'py, u8>>,
    maps: Vec<PyReadonlyArray2<'py, f32>>,
    mode: &str,
    steps: usize,
    eval_every: usize,
    seed: u64,
    streams: Vec<u64>,
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> PyResult<Bound<'py, PyArray5<f32>>> {
    check_pairs("heat maps", images.len(), maps.len())?;
    check_pairs("fill streams", images.len(), streams.len())?;
    let mode = Mode::parse(mode)?;
    let schedule = Schedule::new(steps, eval_every)?;
    let normalize = Normalize::new(mean, std)?;
    let (image_views, map_views) = (image_views(&images), map_views(&maps));
    let k = schedule.checkpoints();
    let out: Array5<f32> = py.detach(|| -> NativeResult<Array5<f32>> {
        let plans = plans_for(&image_views, size)?;
        let per_image = k * 3 * size * size;
        let mut flat = vec![0f32; image_views.len() * per_image];
        threads::install(|| {
            flat.par_chunks_mut(per_image.max(1))
                .zip(
                    image_views
                        .par_iter()
                        .zip(map_views.par_iter())
                        .zip(plans.par_iter()),
                )
                .enumerate()
                .try_for_each(|(i, (out, ((image, map), plan)))| {
                    perturb::checkpoint_batch(
                        image.view(),
                        map.view(),
                        mode,
                        schedule,
                        seed,
                        streams[i],
                        plan,
                        &normalize,
                        out,
                    )
                    .map_err(|e| for_image(i, e))
                })
        })??;
        Array5::from_shape_vec((image_views.len(), k, 3, size, size), flat)
            .map_err(|e| NativeError::Value(format!("internal shape error: {e}")))
    })?;
    Ok(out.into_pyarray(py))
}

/// `resize_center_crop(images, size)`: uint8 `[B, S, S, 3]`, Pillow-exact bicubic resize of the
/// shorter side to `S` + centre crop.
#[pyfunction(name = "resize_center_crop")]
fn resize_center_crop_py<'py>(
    py: Python<'py>,
    images: Vec<PyReadonlyArray3<'py, u8>>,
    size: usize,
) -> PyResult<Bound<'py, PyArray4<u8>>> {
    let views = image_views(&images);
    let out: Array4<u8> = py.detach(|| -> NativeResult<Array4<u8>> {
        let plans = plans_for(&views, size)?;
        let per_image = size * size * 3;
        let mut flat = vec![0u8; views.len() * per_image];
        threads::install(|| {
            flat.par_chunks_mut(per_image.max(1))
                .zip(views.par_iter().zip(plans.par_iter()))
                .for_each(|(out, (image, plan))| {
                    let contiguous = image.as_standard_layout();
                    out.copy_from_slice(
                        &plan.apply(contiguous.as_slice().expect("standard layout")),
                    );
                })
        })?;
        Array4::from_shape_vec((views.len(), size, size, 3), flat)
            .map_err(|e| NativeError::Value(format!("internal shape error: {e}")))
    })?;
    Ok(out.into_pyarray(py))
}

/// `model_ready(images, size, mean, std)`: float32 `[B, 3, S, S]`, CLIP's full preprocessing.
#[pyfunction(name = "model_ready")]
fn model_ready_py<'py>(
    py: Python<'py>,
    images: Vec<PyReadonlyArray3<'py, u8>>,
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    let normalize = Normalize::new(mean, std)?;
    let views = image_views(&images);
    let out: Array4<f32> = py.detach(|| -> NativeResult<Array4<f32>> {
        let plans = plans_for(&views, size)?;
        let per_image = 3 * size * size;
        let mut flat = vec![0f32; views.len() * per_image];
        threads::install(|| {
            flat.par_chunks_mut(per_image.max(1))
                .zip(views.par_iter().zip(plans.par_iter()))
                .for_each(|(out, (image, plan))| {
                    let contiguous = image.as_standard_layout();
                    normalize.write_all(
                        &plan.apply(contiguous.as_slice().expect("standard layout")),
                        out,
                    );
                })
        })?;
        Array4::from_shape_vec((views.len(), 3, size, size), flat)
            .map_err(|e| NativeError::Value(format!("internal shape error: {e}")))
    })?;
    Ok(out.into_pyarray(py))
}

/// `curve_auc(curves)`: float64 `[B]`, the trapezoid area of each row of `[B, K]` over x ∈ [0, 1].
#[pyfunction(name = "curve_auc")]
fn curve_auc_py<'py>(
    py: Python<'py>,
    curves: PyReadonlyArray2<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let view = curves.as_array();
    let areas = view
        .outer_iter()
        .enumerate()
        .map(|(i, row)| {
            metrics::auc(row).map_err(|e| NativeError::Value(format!("curve {i}: {e}")))
        })
        .collect::<NativeResult<Vec<f64>>>()?;
    Ok(Array1::from(areas).into_pyarray(py))
}

/// `localization_metrics(maps, masks)`: float64 `[B, 5]` — point game, energy-PG, pixel
/// accuracy, mask IoU, average precision — of each map against its mask (SPEC §8).
#[pyfunction(name = "localization_metrics")]
fn localization_metrics_py<'py>(
    py: Python<'py>,
    maps: Vec<PyReadonlyArray2<'py, f32>>,
    masks: Vec<PyReadonlyArray2<'py, u8>>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    check_pairs("masks", maps.len(), masks.len())?;
    let (map_views, mask_views) = (map_views(&maps), map_views(&masks));
    let rows: Vec<[f64; 5]> = py.detach(|| {
        threads::install(|| {
            map_views
                .par_iter()
                .zip(mask_views.par_iter())
                .enumerate()
                .map(|(i, (map, mask))| {
                    metrics::localization(map.view(), mask.view())
                        .map(|m| m.to_array())
                        .map_err(|e| for_image(i, e))
                })
                .collect::<NativeResult<Vec<_>>>()
        })?
    })?;
    let mut out = Array2::<f64>::zeros((rows.len(), 5));
    for (i, row) in rows.iter().enumerate() {
        out.row_mut(i).assign(&ndarray::ArrayView1::from(row));
    }
    Ok(out.into_pyarray(py))
}

/// Add this file's functions to `gradeclip._native`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(perturbation_checkpoints_py, m)?)?;
    m.add_function(wrap_pyfunction!(perturbation_batch_py, m)?)?;
    m.add_function(wrap_pyfunction!(resize_center_crop_py, m)?)?;
    m.add_function(wrap_pyfunction!(model_ready_py, m)?)?;
    m.add_function(wrap_pyfunction!(curve_auc_py, m)?)?;
    m.add_function(wrap_pyfunction!(localization_metrics_py, m)?)?;
    Ok(())
}
