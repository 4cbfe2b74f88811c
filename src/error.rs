//! The one error type of cuattn: every fallible call returns `Result<T, Error>`, and every
//! message names the argument, the value it had and the constraint it broke.

use cudarc::driver::{sys, DriverError};

use crate::ffi;

/// What went wrong. Validation errors are raised before anything is launched.
///
/// New variants may be added in minor releases (`#[non_exhaustive]`): match the ones you handle
/// and keep a `_` arm. The causes cuattn did not make itself stay reachable through
/// [`std::error::Error::source`]: the CUDA driver's [`DriverError`] ([`Error::Driver`], see
/// [`Error::is_out_of_memory`]) and the [`std::io::Error`] of a file operation ([`Error::Io`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument is out of range or inconsistent with another.
    #[error("invalid argument `{arg}`: {msg}")]
    InvalidArgument {
        /// The argument's name, as the API spells it (`q`, `options.window`, `cu_seqlens_k`).
        arg: &'static str,
        /// Its value and the constraint it broke.
        msg: String,
    },
    /// A valid request that this build or device cannot serve.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// No usable CUDA device: no driver library, or a driver without a device at that ordinal.
    #[error("CUDA: {0}")]
    Cuda(String),
    /// A CUDA driver call failed (allocation, copy, event, stream): the driver's own error,
    /// which [`Error::is_out_of_memory`] reads and `source()` returns.
    #[error("CUDA driver: {}", describe_driver_error(.0))]
    Driver(#[from] DriverError),
    /// A kernel launch failed (CUDA runtime error).
    #[error("launch failed: {0}")]
    LaunchFailed(String),
    /// The emulator stopped a kernel for a fault: out-of-bounds access, divergent barrier, ...
    #[error("kernel fault: {0}")]
    KernelFault(String),
    /// A paged KV cache has fewer free or evictable pages than a request needs; nothing was
    /// changed. A normal result under memory pressure: free or preempt sequences and retry.
    #[error(
        "out of KV-cache pages: the request needs {needed} page(s), {available} are free or \
         evictable; nothing was changed"
    )]
    OutOfPages {
        /// Pages the request needed.
        needed: usize,
        /// Pages free or held only by the prefix cache when it was made.
        available: usize,
    },
    /// Reading or writing a file failed, or its contents are not what was asked for (a
    /// malformed `.npy` file). The first has the [`std::io::Error`] as its `source()`, and
    /// `msg` repeats its text so the message stands alone.
    #[error("{path}: {msg}")]
    Io {
        /// The file.
        path: String,
        /// What failed, and why.
        msg: String,
        /// The operating system's error, when one was the cause.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A bug in cuattn.
    #[error("internal error: {0}")]
    Internal(String),
}

/// cuattn's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An `InvalidArgument` error for `arg`.
    pub fn invalid(arg: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            arg,
            msg: msg.into(),
        }
    }

    /// An `Io` error: `what` (`"cannot read"`) failed on `path` with `source`.
    pub fn io(path: impl std::fmt::Display, what: &str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            msg: format!("{what}: {source}"),
            source: Some(source),
        }
    }

    /// An `Io` error for a file whose contents are wrong (no operating-system error behind it).
    pub fn file(path: impl std::fmt::Display, msg: impl Into<String>) -> Self {
        Error::Io {
            path: path.to_string(),
            msg: msg.into(),
            source: None,
        }
    }

    /// Whether the CUDA driver ran out of device memory (`CUDA_ERROR_OUT_OF_MEMORY`): an
    /// engine can free memory (or preempt a request) and retry, where any other failure is not
    /// worth retrying. [`Error::OutOfPages`] is the paged KV cache's own, separate shortage.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(
            self,
            Error::Driver(DriverError(sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY))
        )
    }

    /// The C status code that reports this error across `extern "C"`.
    pub fn status(&self) -> ffi::cuattn_status {
        match self {
            Error::InvalidArgument { .. } => ffi::cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            Error::Unsupported(_) => ffi::cuattn_status::CUATTN_ERROR_UNSUPPORTED,
            Error::Cuda(_) | Error::Driver(_) | Error::LaunchFailed(_) => {
                ffi::cuattn_status::CUATTN_ERROR_LAUNCH_FAILED
            }
            Error::KernelFault(_) => ffi::cuattn_status::CUATTN_ERROR_KERNEL_FAULT,
            Error::OutOfPages { .. } => ffi::cuattn_status::CUATTN_ERROR_OUT_OF_PAGES,
            Error::Io { .. } | Error::Internal(_) => ffi::cuattn_status::CUATTN_ERROR_INTERNAL,
        }
    }
}

/// The driver error's code (`CUDA_ERROR_OUT_OF_MEMORY`) and, when the driver library is loaded,
/// its description. cudarc's own `Display` asks the driver for the description and panics when
/// there is no driver library, where an error message must never panic.
fn describe_driver_error(e: &DriverError) -> String {
    let code = format!("{:?}", e.0);
    // SAFETY: is_culib_present only tries to dlopen libcuda; it has no preconditions.
    if !unsafe { sys::is_culib_present() } {
        return code;
    }
    match e.error_string() {
        Ok(text) => format!("{code}: {}", text.to_string_lossy()),
        Err(_) => code,
    }
}

/// Turns a launcher's status into a `Result`, reading the message the C side left in
/// `cuattn_last_error()`.
pub(crate) fn check_status(status: ffi::cuattn_status) -> Result<()> {
    if status == ffi::cuattn_status::CUATTN_OK {
        return Ok(());
    }
    // SAFETY: cuattn_last_error returns a NUL-terminated thread-local string that stays valid
    // until the next cuattn call on this thread; it is copied out at once.
    let msg = unsafe { std::ffi::CStr::from_ptr(ffi::cuattn_last_error()) }
        .to_string_lossy()
        .into_owned();
    Err(match status {
        ffi::cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT => {
            Error::InvalidArgument { arg: "params", msg }
        }
        ffi::cuattn_status::CUATTN_ERROR_UNSUPPORTED => Error::Unsupported(msg),
        ffi::cuattn_status::CUATTN_ERROR_LAUNCH_FAILED => Error::LaunchFailed(msg),
        ffi::cuattn_status::CUATTN_ERROR_KERNEL_FAULT => Error::KernelFault(msg),
        _ => Error::Internal(msg),
    })
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// A driver error converts with `?` into `Error::Driver`, keeps its code (out of memory told
    /// apart from any other failure) and is the error's `source()`.
    #[test]
    fn a_driver_error_converts_and_stays_reachable() {
        fn allocate(code: sys::CUresult) -> Result<()> {
            Err(DriverError(code))?
        }
        // Formatted with Display only: DriverError's Debug asks the driver for its text, which
        // panics on a machine without the driver library.
        let oom = allocate(sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY).unwrap_err();
        println!("{oom}");
        assert!(
            oom.to_string().contains("CUDA_ERROR_OUT_OF_MEMORY"),
            "{oom}"
        );
        assert!(oom.is_out_of_memory(), "{oom}");
        assert!(matches!(oom, Error::Driver(DriverError(_))), "{oom}");
        let source = oom.source().and_then(|s| s.downcast_ref::<DriverError>());
        assert_eq!(
            source.map(|e| e.0),
            Some(sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY)
        );
        assert_eq!(oom.status(), ffi::cuattn_status::CUATTN_ERROR_LAUNCH_FAILED);

        let launch = allocate(sys::CUresult::CUDA_ERROR_LAUNCH_FAILED).unwrap_err();
        assert!(!launch.is_out_of_memory(), "{launch}");
        assert!(
            launch.to_string().contains("CUDA_ERROR_LAUNCH_FAILED"),
            "{launch}"
        );
        assert!(!Error::OutOfPages {
            needed: 2,
            available: 1
        }
        .is_out_of_memory());
    }

    /// An I/O error keeps the operating system's error as its `source()` and names the file and
    /// the cause in its message; a malformed file has no source.
    #[test]
    fn an_io_error_keeps_the_io_error_as_its_source() {
        let e = Error::io(
            "weights/q.npy",
            "cannot read",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        println!("{e}");
        let message = e.to_string();
        assert!(
            message.starts_with("weights/q.npy: cannot read: "),
            "{message}"
        );
        let source = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(source.map(|s| s.kind()), Some(std::io::ErrorKind::NotFound));

        let bad = Error::file("q.npy", "not a valid .npy file");
        assert_eq!(bad.to_string(), "q.npy: not a valid .npy file");
        assert!(bad.source().is_none());
    }
}
