//! The one error type of cuattn: every fallible call returns `Result<T, Error>`, and every
//! message names the argument, the value it had and the constraint it broke.

use crate::ffi;

/// What went wrong. Validation errors are raised before anything is launched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is out of range or inconsistent with another.
    #[error("invalid argument `{arg}`: {msg}")]
    InvalidArgument { arg: &'static str, msg: String },
    /// A valid request that this build or device cannot serve.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// No usable CUDA device, or a CUDA driver call failed.
    #[error("CUDA: {0}")]
    Cuda(String),
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
    /// Reading or writing a file (the CLI's .npy tensors).
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
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

    /// The C status code that reports this error across `extern "C"`.
    pub fn status(&self) -> ffi::cuattn_status {
        match self {
            Error::InvalidArgument { .. } => ffi::cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            Error::Unsupported(_) => ffi::cuattn_status::CUATTN_ERROR_UNSUPPORTED,
            Error::Cuda(_) | Error::LaunchFailed(_) => {
                ffi::cuattn_status::CUATTN_ERROR_LAUNCH_FAILED
            }
            Error::KernelFault(_) => ffi::cuattn_status::CUATTN_ERROR_KERNEL_FAULT,
            Error::OutOfPages { .. } => ffi::cuattn_status::CUATTN_ERROR_OUT_OF_PAGES,
            Error::Io { .. } | Error::Internal(_) => ffi::cuattn_status::CUATTN_ERROR_INTERNAL,
        }
    }
}

impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Error::Cuda(e.to_string())
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
