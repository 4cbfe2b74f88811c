//! The one place attention kernels are called across the FFI: fills the pointers into validated
//! params and picks the CUDA or emulator launcher; and flash's tile setting and plan.

use crate::device::{Device, ForeignStreams};
use crate::error::{check_status, Result};
use crate::ffi;
use crate::tensor::{Element, Tensor};

use super::{Kernel, VarlenBatch};

pub(crate) type Launcher = unsafe extern "C" fn(
    *const ffi::cuattn_attention_params,
    *mut std::ffi::c_void,
) -> ffi::cuattn_status;

fn emulator_launcher(kernel: Kernel) -> Launcher {
    match kernel {
        Kernel::Naive => ffi::cuattn_emu_launch_attention_naive,
        Kernel::MmaSimple => ffi::cuattn_emu_launch_attention_mma_simple,
        Kernel::Flash => ffi::cuattn_emu_launch_attention_flash,
    }
}

#[cfg(cuattn_cuda)]
pub(crate) fn cuda_launcher(kernel: Kernel) -> Result<Launcher> {
    Ok(match kernel {
        Kernel::Naive => ffi::cuattn_launch_attention_naive,
        Kernel::MmaSimple => ffi::cuattn_launch_attention_mma_simple,
        Kernel::Flash => ffi::cuattn_launch_attention_flash,
    })
}

#[cfg(not(cuattn_cuda))]
pub(crate) fn cuda_launcher(kernel: Kernel) -> Result<Launcher> {
    Err(no_cuda_kernels(&format!("attention {}", kernel.name())))
}

/// `what` on a GPU, in a build without CUDA kernels.
#[cfg(not(cuattn_cuda))]
pub(crate) fn no_cuda_kernels(what: &str) -> crate::error::Error {
    crate::error::Error::Unsupported(format!(
        "{what} on a GPU: this build of cuattn has no CUDA kernels (nvcc was not found when it \
         was built; see scripts/install-cuda-toolchain.sh)"
    ))
}

/// Launches `kernel` with `params` (validated, pointers unset) on the tensors' device.
pub(super) fn run<T: Element>(
    kernel: Kernel,
    device: &Device,
    mut params: ffi::cuattn_attention_params,
    [q, k, v, out]: [&Tensor<T>; 4],
    lse: Option<&Tensor<f32>>,
    varlen: Option<&VarlenBatch>,
) -> Result<()> {
    let homes = [("q", q), ("k", k), ("v", v), ("out", out)]
        .map(|(name, t)| (name, t.device()))
        .into_iter()
        .chain(lse.map(|t| ("lse", t.device())))
        .chain(varlen.map(|b| ("batch", b.cu_seqlens_q.device())))
        .chain(varlen.map(|b| ("batch", b.cu_seqlens_k.device())));
    let capture = device.capture_id()?;
    let capturing = capture.is_some();
    let streams = ForeignStreams::join(device, capture, homes)?;
    // The guards keep cudarc's record of each buffer's use alive across the launch (none in a
    // graph capture: Tensor::kernel_ptr).
    let (q_ptr, _q_guard) = q.kernel_ptr(device, capturing);
    let (k_ptr, _k_guard) = k.kernel_ptr(device, capturing);
    let (v_ptr, _v_guard) = v.kernel_ptr(device, capturing);
    let (out_ptr, _out_guard) = out.kernel_ptr(device, capturing);
    let lse_ptr = lse.map(|t| t.kernel_ptr(device, capturing));
    let cu_q = varlen.map(|b| b.cu_seqlens_q.kernel_ptr(device, capturing));
    let cu_k = varlen.map(|b| b.cu_seqlens_k.kernel_ptr(device, capturing));
    params.q = q_ptr;
    params.k = k_ptr;
    params.v = v_ptr;
    params.out = out_ptr;
    params.maybe_lse = lse_ptr
        .as_ref()
        .map_or(std::ptr::null_mut(), |p| p.0.cast());
    params.maybe_cu_seqlens_q = cu_q
        .as_ref()
        .map_or(std::ptr::null(), |p| p.0.cast_const().cast());
    params.maybe_cu_seqlens_k = cu_k
        .as_ref()
        .map_or(std::ptr::null(), |p| p.0.cast_const().cast());

    let status = match device {
        Device::Emulator => {
            // SAFETY: params was validated against the tensors, whose buffers (host memory for
            // the emulator) outlive this synchronous call.
            unsafe { emulator_launcher(kernel)(&params, std::ptr::null_mut()) }
        }
        Device::Cuda(stream) => {
            let launcher = cuda_launcher(kernel)?;
            // The static CUDA runtime behind the launcher uses the current context: make it
            // cudarc's, so the pointers and the stream belong to it.
            stream.context().bind_to_thread()?;
            // SAFETY: params was validated against the tensors; their device buffers outlive
            // the guards above, which order later frees after this stream's work.
            unsafe { launcher(&params, stream.cu_stream().cast()) }
        }
    };
    check_status(status)?;
    streams.rejoin()
}

/// Sets the calling thread's flash tile setting (cuattn_set_flash_tiles).
pub(super) fn set_flash_tiles_code(code: ffi::cuattn_flash_tiles) {
    // SAFETY: a per-thread setting; `code` is one of the header's constants, which it accepts.
    let status = unsafe { ffi::cuattn_set_flash_tiles(code.0 as i32) };
    debug_assert_eq!(status, ffi::cuattn_status::CUATTN_OK);
}

/// The calling thread's flash tile setting (cuattn_get_flash_tiles).
pub(super) fn flash_tiles_code() -> i32 {
    // SAFETY: reads a per-thread setting; no preconditions.
    unsafe { ffi::cuattn_get_flash_tiles() }
}

/// What a flash launch with `params` runs on `device` (cuattn_plan_attention_flash).
pub(super) fn flash_plan(
    device: &Device,
    params: &ffi::cuattn_attention_params,
) -> Result<ffi::cuattn_flash_plan> {
    let mut plan = ffi::cuattn_flash_plan {
        tiles: 0,
        head_dim_tile: 0,
        block_rows: 0,
        block_keys: 0,
        stages: 0,
        threads: 0,
        smem_bytes: 0,
        grid_x: 0,
    };
    let status = match device {
        // SAFETY: both pointers are valid for the call; the planner only reads params.
        Device::Emulator => unsafe { ffi::cuattn_emu_plan_attention_flash(params, &mut plan) },
        Device::Cuda(stream) => cuda_flash_plan(stream, params, &mut plan)?,
    };
    check_status(status)?;
    Ok(plan)
}

#[cfg(cuattn_cuda)]
fn cuda_flash_plan(
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    params: &ffi::cuattn_attention_params,
    plan: &mut ffi::cuattn_flash_plan,
) -> Result<ffi::cuattn_status> {
    // The planner asks the runtime's current device: make it the stream's.
    stream.context().bind_to_thread()?;
    // SAFETY: both pointers are valid for the call; the planner only reads params.
    Ok(unsafe { ffi::cuattn_plan_attention_flash(params, plan) })
}

#[cfg(not(cuattn_cuda))]
fn cuda_flash_plan(
    _stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    _params: &ffi::cuattn_attention_params,
    _plan: &mut ffi::cuattn_flash_plan,
) -> Result<ffi::cuattn_status> {
    Err(no_cuda_kernels("flash_plan"))
}
