//! The C API implemented in Rust: validated entry points over the raw launchers, reporting
//! failures as status codes with the message in `cuattn_last_error()`. No panic crosses
//! `extern "C"`.

use std::ffi::CString;

use crate::attention::{cuda_launcher, validate_params, Kernel};
use crate::error::{check_status, Error, Result};
use crate::ffi;

/// Records `err` for `cuattn_last_error()` and returns its status code.
fn report(err: &Error) -> ffi::cuattn_status {
    let msg = CString::new(err.to_string().replace('\0', " ")).unwrap_or_default();
    // SAFETY: msg is a valid NUL-terminated string; the callee copies it.
    unsafe { ffi::cuattn_set_last_error(msg.as_ptr()) };
    err.status()
}

/// Runs `f`, turning errors and panics into status codes.
fn guarded(f: impl FnOnce() -> Result<()>) -> ffi::cuattn_status {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => ffi::cuattn_status::CUATTN_OK,
        Ok(Err(e)) => report(&e),
        Err(_) => report(&Error::Internal(
            "panic inside cuattn (please report)".into(),
        )),
    }
}

/// Validates `params` for `kernel` and launches it on `stream`.
///
/// # Safety
/// As for the exported entry points below.
unsafe fn validated_launch(
    kernel: Kernel,
    params: *const ffi::cuattn_attention_params,
    stream: *mut std::ffi::c_void,
) -> ffi::cuattn_status {
    guarded(|| {
        // SAFETY: the caller guarantees params is null or valid to read.
        let p =
            unsafe { params.as_ref() }.ok_or_else(|| Error::invalid("params", "null pointer"))?;
        validate_params(kernel, p)?;
        let launcher = cuda_launcher(kernel)?;
        // SAFETY: p was validated field by field; the pointer extents are the caller's contract.
        check_status(unsafe { launcher(p, stream) })
    })
}

/// `cuattn_attention_naive` from cuattn.h: validates `params`, then launches on `stream`.
///
/// # Safety
/// `params` must be null or point to a readable params struct whose pointers are device
/// allocations large enough for the shapes and strides it describes; `stream` must be a
/// `cudaStream_t` of the current context or null.
#[no_mangle]
pub unsafe extern "C" fn cuattn_attention_naive(
    params: *const ffi::cuattn_attention_params,
    stream: *mut std::ffi::c_void,
) -> ffi::cuattn_status {
    // SAFETY: forwarded caller contract.
    unsafe { validated_launch(Kernel::Naive, params, stream) }
}

/// `cuattn_attention_flash` from cuattn.h: validates `params` (including 16-byte aligned rows),
/// then launches the flash kernel on `stream`.
///
/// # Safety
/// As for [`cuattn_attention_naive`].
#[no_mangle]
pub unsafe extern "C" fn cuattn_attention_flash(
    params: *const ffi::cuattn_attention_params,
    stream: *mut std::ffi::c_void,
) -> ffi::cuattn_status {
    // SAFETY: forwarded caller contract.
    unsafe { validated_launch(Kernel::Flash, params, stream) }
}

/// `cuattn_has_cuda_kernels` from cuattn.h.
#[no_mangle]
pub extern "C" fn cuattn_has_cuda_kernels() -> i32 {
    i32::from(crate::build_info::HAS_CUDA_KERNELS)
}
