//! The one place where the crate's errors become Python exceptions.

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::PyErr;

/// Every failure the native core can report. Pure-Rust modules return these; the Python
/// wrappers in `lib.rs` convert them with `?` so no panic or raw error crosses into Python.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// An argument has the wrong value, shape or contents (maps to `ValueError`).
    #[error("{0}")]
    Value(String),
    /// An argument has the wrong type or dtype (maps to `TypeError`).
    #[error("{0}")]
    Type(String),
    /// Reading or writing a file failed (maps to `OSError`).
    #[error("{0}")]
    Io(String),
}

impl From<NativeError> for PyErr {
    fn from(err: NativeError) -> PyErr {
        match err {
            NativeError::Value(msg) => PyValueError::new_err(msg),
            NativeError::Type(msg) => PyTypeError::new_err(msg),
            NativeError::Io(msg) => PyOSError::new_err(msg),
        }
    }
}

pub type NativeResult<T> = Result<T, NativeError>;
