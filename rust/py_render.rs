//! Python wrappers for `render.rs`: convert lists of numpy arrays to borrowed buffers, release
//! the GIL, run in the crate's thread pool, and hand back flat numpy arrays or bytes.
//! `gradeclip.render` (Python) checks dtypes and shapes first and reshapes the flat results.

use std::path::PathBuf;

use numpy::{PyArray1, PyReadonlyArray2, PyReadonlyArray3, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::colormap::Colormap;
use crate::error::NativeError;
use crate::png::Compression;
use crate::render::{self, ImageRef, MapRef};
use crate::resample::Mode;
use crate::threads;

fn map_refs<'a>(arrays: &'a [PyReadonlyArray2<'_, f32>]) -> PyResult<Vec<MapRef<'a>>> {
    arrays
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let data = a
                .as_slice()
                .map_err(|_| NativeError::Value(format!("maps[{i}] must be C-contiguous")))?;
            Ok(MapRef {
                data,
                shape: (a.shape()[0], a.shape()[1]),
            })
        })
        .collect()
}

fn image_refs<'a>(arrays: &'a [PyReadonlyArray3<'_, u8>]) -> PyResult<Vec<ImageRef<'a>>> {
    arrays
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let shape = a.shape();
            if shape[2] != 3 {
                return Err(NativeError::Value(format!(
                    "images[{i}] must have shape (H, W, 3), got {shape:?}"
                ))
                .into());
            }
            let data = a
                .as_slice()
                .map_err(|_| NativeError::Value(format!("images[{i}] must be C-contiguous")))?;
            Ok(ImageRef {
                data,
                shape: (shape[0], shape[1]),
            })
        })
        .collect()
}

/// `upsample(maps, sizes, mode) -> float32[sum(H*W)]`: every map resized to its size.
#[pyfunction(name = "upsample")]
fn upsample_py<'py>(
    py: Python<'py>,
    maps: Vec<PyReadonlyArray2<'py, f32>>,
    sizes: Vec<(usize, usize)>,
    mode: &str,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let mode = Mode::parse(mode)?;
    let maps = map_refs(&maps)?;
    let out = py.detach(|| threads::install(|| render::upsample(&maps, &sizes, mode)))??;
    Ok(PyArray1::from_vec(py, out))
}

/// `normalize(maps) -> float32[sum(h*w)]`: every map min-max normalised.
#[pyfunction(name = "normalize")]
fn normalize_py<'py>(
    py: Python<'py>,
    maps: Vec<PyReadonlyArray2<'py, f32>>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let maps = map_refs(&maps)?;
    let out = py.detach(|| threads::install(|| render::normalize(&maps)))??;
    Ok(PyArray1::from_vec(py, out))
}

/// `colorize(maps, colormap) -> uint8[sum(h*w*3)]`: every map as RGB.
#[pyfunction(name = "colorize")]
fn colorize_py<'py>(
    py: Python<'py>,
    maps: Vec<PyReadonlyArray2<'py, f32>>,
    colormap: &str,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let cmap = Colormap::parse(colormap)?;
    let maps = map_refs(&maps)?;
    let out = py.detach(|| threads::install(|| render::colorize(&maps, cmap)))??;
    Ok(PyArray1::from_vec(py, out))
}

/// `overlay(images, maps, alpha, colormap) -> uint8[sum(H*W*3)]`: every map blended on its image.
#[pyfunction(name = "overlay")]
fn overlay_py<'py>(
    py: Python<'py>,
    images: Vec<PyReadonlyArray3<'py, u8>>,
    maps: Vec<PyReadonlyArray2<'py, f32>>,
    alpha: f32,
    colormap: &str,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let cmap = Colormap::parse(colormap)?;
    let images = image_refs(&images)?;
    let maps = map_refs(&maps)?;
    let out = py.detach(|| threads::install(|| render::overlay(&images, &maps, alpha, cmap)))??;
    Ok(PyArray1::from_vec(py, out))
}

/// `encode_png(images, compression) -> list[bytes]`: every RGB image as a PNG file's bytes.
#[pyfunction(name = "encode_png")]
fn encode_png_py<'py>(
    py: Python<'py>,
    images: Vec<PyReadonlyArray3<'py, u8>>,
    compression: &str,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let compression = Compression::parse(compression)?;
    let images = image_refs(&images)?;
    let encoded = py.detach(|| threads::install(|| render::encode_png(&images, compression)))??;
    Ok(encoded
        .iter()
        .map(|bytes| PyBytes::new(py, bytes))
        .collect())
}

/// `save_overlays(paths, images, maps, alpha, colormap, compression) -> None`: overlay, encode and
/// write each item atomically.
#[pyfunction(name = "save_overlays")]
fn save_overlays_py<'py>(
    py: Python<'py>,
    paths: Vec<PathBuf>,
    images: Vec<PyReadonlyArray3<'py, u8>>,
    maps: Vec<PyReadonlyArray2<'py, f32>>,
    alpha: f32,
    colormap: &str,
    compression: &str,
) -> PyResult<()> {
    let cmap = Colormap::parse(colormap)?;
    let compression = Compression::parse(compression)?;
    let images = image_refs(&images)?;
    let maps = map_refs(&maps)?;
    py.detach(|| {
        threads::install(|| render::save_overlays(&paths, &images, &maps, alpha, cmap, compression))
    })??;
    Ok(())
}

/// Add the rendering functions to the `_native` module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(upsample_py, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_py, m)?)?;
    m.add_function(wrap_pyfunction!(colorize_py, m)?)?;
    m.add_function(wrap_pyfunction!(overlay_py, m)?)?;
    m.add_function(wrap_pyfunction!(encode_png_py, m)?)?;
    m.add_function(wrap_pyfunction!(save_overlays_py, m)?)?;
    Ok(())
}
