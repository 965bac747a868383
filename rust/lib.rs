//! `gradeclip._native`: the CPU core of gradeclip.
//!
//! Pure-Rust modules know nothing of Python and return `Result`; the `#[pyfunction]` wrappers
//! here convert inputs, release the GIL for the heavy work and map errors (see `error.rs`).

pub mod clip_preprocess;
pub mod colormap;
pub mod error;
pub mod metrics;
pub mod perturb;
pub mod png;
mod py_eval;
mod py_render;
pub mod render;
pub mod resample;
pub mod threads;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Facts about this build, for bug reports and for `gradeclip.build_info()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: &'static str,
    pub abi3: bool,
    pub debug_assertions: bool,
    pub threads: usize,
}

/// Describe this build: crate version, whether it is the abi3 build, whether debug assertions
/// are on, and how many worker threads parallel functions will use.
pub fn build_info() -> error::NativeResult<BuildInfo> {
    Ok(BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        abi3: cfg!(feature = "abi3"),
        debug_assertions: cfg!(debug_assertions),
        threads: threads::requested_threads()?,
    })
}

/// `build_info() -> dict` with keys `version`, `abi3`, `debug_assertions`, `threads`.
#[pyfunction(name = "build_info")]
fn build_info_py(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = build_info()?;
    let out = PyDict::new(py);
    out.set_item("version", info.version)?;
    out.set_item("abi3", info.abi3)?;
    out.set_item("debug_assertions", info.debug_assertions)?;
    out.set_item("threads", info.threads)?;
    Ok(out)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(build_info_py, m)?)?;
    py_eval::register(m)?;
    py_render::register(m)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_reports_this_crate() {
        let info = build_info().unwrap();
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(info.threads >= 1);
        assert_eq!(info.abi3, cfg!(feature = "abi3"));
    }
}
