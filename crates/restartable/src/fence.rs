//! Cross-CPU fences: `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)` restarts every
//! critical section of this process in flight on the target CPUs. After a fence
//! returns, no sequence that started before it can still commit: a thread that then
//! changes what those sequences would read (a shared pointer, another CPU's slot
//! reached through a new indirection) cannot race them.

use core::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::abi;
use crate::sys;

const UNKNOWN: u8 = 0;
const REGISTERED: u8 = 1;
const UNSUPPORTED: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Why a fence could not be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceError {
    errno: i32,
}

impl FenceError {
    /// The errno from `membarrier` (`ENOSYS`/`EINVAL` where expedited rseq fences are
    /// not supported).
    pub fn errno(&self) -> i32 {
        self.errno
    }
}

impl fmt::Display for FenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "membarrier expedited rseq fence unavailable (errno {})",
            self.errno
        )
    }
}

impl std::error::Error for FenceError {}

/// Whether this kernel supports rseq fences (a query; registers nothing).
pub fn fences_supported() -> bool {
    match sys::membarrier(abi::MEMBARRIER_CMD_QUERY, 0, 0) {
        Ok(mask) => {
            mask & abi::MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ != 0
                && mask & abi::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ != 0
        }
        Err(_) => false,
    }
}

/// Registers the process for rseq fences, once.
fn ensure_registered() -> Result<(), FenceError> {
    match STATE.load(Ordering::Acquire) {
        REGISTERED => return Ok(()),
        UNSUPPORTED => {
            return Err(FenceError {
                errno: libc::ENOSYS,
            })
        }
        _ => {}
    }
    match sys::membarrier(abi::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) {
        Ok(_) => {
            STATE.store(REGISTERED, Ordering::Release);
            Ok(())
        }
        Err(errno) => {
            if errno == libc::ENOSYS || errno == libc::EINVAL {
                STATE.store(UNSUPPORTED, Ordering::Release);
            }
            Err(FenceError { errno })
        }
    }
}

/// Restarts every critical section of this process in flight on `cpu`.
///
/// When it returns, any sequence that was running on `cpu` has been aborted (or had
/// already committed); sequences that start afterwards see every store made before the
/// call.
///
/// # Examples
/// ```
/// // Fences need kernel support; where they are missing the call says so.
/// match restartable::fence_cpu(0) {
///     Ok(()) => {}
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
#[doc(alias = "membarrier")]
pub fn fence_cpu(cpu: u32) -> Result<(), FenceError> {
    #[cfg(test)]
    injected::failure()?;
    ensure_registered()?;
    let cpu = i32::try_from(cpu).map_err(|_| FenceError {
        errno: libc::EINVAL,
    })?;
    sys::membarrier(
        abi::MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
        abi::MEMBARRIER_CMD_FLAG_CPU,
        cpu,
    )
    .map(|_| ())
    .map_err(|errno| FenceError { errno })
}

/// Restarts every critical section of this process in flight on any CPU.
///
/// # Examples
/// ```
/// let _ = restartable::fence_all();
/// ```
#[doc(alias = "membarrier")]
pub fn fence_all() -> Result<(), FenceError> {
    #[cfg(test)]
    injected::failure()?;
    ensure_registered()?;
    sys::membarrier(abi::MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0, 0)
        .map(|_| ())
        .map_err(|errno| FenceError { errno })
}

/// Fence failures on demand, for the unit tests of the code that must survive them
/// (a thief whose fence fails loses nothing). Per thread, so that tests running in
/// parallel do not see each other's failures; compiled into test builds only.
#[cfg(test)]
pub(crate) mod injected {
    use super::FenceError;
    use std::cell::Cell;

    /// The errno of an injected failure.
    pub(crate) const ERRNO: i32 = libc::ENOMEM;

    thread_local! {
        /// Fences until the one that fails (1: the next one); 0: none fails.
        static COUNTDOWN: Cell<u32> = const { Cell::new(0) };
    }

    /// Makes the `k`-th fence from now (1: the next one) on this thread fail with
    /// [`ERRNO`], and only that one; `k = 0` disarms.
    pub(crate) fn fail_nth(k: u32) {
        COUNTDOWN.with(|c| c.set(k));
    }

    /// Counts one fence; fails if it is the one armed.
    pub(super) fn failure() -> Result<(), FenceError> {
        COUNTDOWN.with(|c| match c.get() {
            0 => Ok(()),
            1 => {
                c.set(0);
                Err(FenceError { errno: ERRNO })
            }
            n => {
                c.set(n - 1);
                Ok(())
            }
        })
    }
}
