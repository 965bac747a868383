//! The thread pool every parallel function runs in.
//!
//! Its size comes from `GRADECLIP_NUM_THREADS` (default: the number of logical CPUs). The pool
//! is created lazily on first use *in the current process*: after a `fork` (DataLoader workers
//! fork) the child sees a different process id and builds its own pool instead of touching the
//! parent's threads, which do not exist in the child.

use std::sync::Mutex;

use rayon::ThreadPool;

use crate::error::{NativeError, NativeResult};

struct OwnedPool {
    pid: u32,
    pool: std::sync::Arc<ThreadPool>,
}

static POOL: Mutex<Option<OwnedPool>> = Mutex::new(None);

/// Number of worker threads requested by the environment (`GRADECLIP_NUM_THREADS`), or the
/// number of logical CPUs when unset. Returns an error for a value that is not a positive integer.
pub fn requested_threads() -> NativeResult<usize> {
    match std::env::var("GRADECLIP_NUM_THREADS") {
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(NativeError::Value(format!(
                "GRADECLIP_NUM_THREADS must be a positive integer, got {text:?}"
            ))),
        },
        Err(_) => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// The process's thread pool, built on first use in this process (see the module docs).
pub fn pool() -> NativeResult<std::sync::Arc<ThreadPool>> {
    let pid = std::process::id();
    let mut guard = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(owned) = guard.as_ref() {
        if owned.pid == pid {
            return Ok(owned.pool.clone());
        }
    }
    let threads = requested_threads()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("gradeclip-{i}"))
        .build()
        .map_err(|e| NativeError::Value(format!("could not start {threads} worker threads: {e}")))?;
    let pool = std::sync::Arc::new(pool);
    // A pool inherited through fork is leaked on purpose: its threads are gone in this process,
    // so dropping it would wait for threads that will never answer.
    if let Some(stale) = guard.take() {
        std::mem::forget(stale);
    }
    *guard = Some(OwnedPool { pid, pool: pool.clone() });
    Ok(pool)
}

/// Run `f` inside the process's pool.
pub fn install<T: Send>(f: impl FnOnce() -> T + Send) -> NativeResult<T> {
    Ok(pool()?.install(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_runs_work_and_is_reused() {
        let a = pool().unwrap();
        let b = pool().unwrap();
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        let total: u64 = install(|| {
            use rayon::prelude::*;
            (1..=100u64).into_par_iter().sum()
        })
        .unwrap();
        assert_eq!(total, 5050);
    }
}
