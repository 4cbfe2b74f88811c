//! The one place attention kernels are called across the FFI: fills the pointers into validated
//! params and picks the CUDA or emulator launcher; and flash's plan.

use crate::device::{Device, ForeignStreams};
use crate::error::{check_status, Result};
use crate::ffi;
use crate::tensor::{Element, Tensor};

use super::{Kernel, VarlenBatch};
use crate::sparse::BlockMask;

pub(crate) type Launcher = unsafe extern "C" fn(
    *const ffi::cuattn_attention_params,
    *mut std::ffi::c_void,
) -> ffi::cuattn_status;

/// The emulator's raw launcher of `kernel`.
pub(crate) fn emulator_launcher(kernel: Kernel) -> Launcher {
    match kernel {
        Kernel::Naive => ffi::cuattn_emu_raw_launch_attention_naive,
        Kernel::MmaSimple => ffi::cuattn_emu_raw_launch_attention_mma_simple,
        Kernel::Flash => ffi::cuattn_emu_raw_launch_attention_flash,
    }
}

#[cfg(cuattn_cuda)]
pub(crate) fn cuda_launcher(kernel: Kernel) -> Result<Launcher> {
    Ok(match kernel {
        Kernel::Naive => ffi::cuattn_raw_launch_attention_naive,
        Kernel::MmaSimple => ffi::cuattn_raw_launch_attention_mma_simple,
        Kernel::Flash => ffi::cuattn_raw_launch_attention_flash,
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

/// What a launch runs: a dense kernel, or the block-sparse one over a mask.
#[derive(Clone, Copy)]
pub(crate) enum Call<'a> {
    Dense(Kernel),
    BlockSparse(&'a BlockMask),
}

/// Launches `call` with `params` (validated, pointers unset) on the tensors' device.
pub(crate) fn run<T: Element>(
    call: Call<'_>,
    device: &Device,
    mut params: ffi::cuattn_attention_params,
    [q, k, v]: [&Tensor<T>; 3],
    out: &mut Tensor<T>,
    lse: Option<&mut Tensor<f32>>,
    varlen: Option<&VarlenBatch>,
) -> Result<()> {
    let mask = match call {
        Call::Dense(_) => None,
        Call::BlockSparse(mask) => Some(mask),
    };
    // The streams' join borrows the outputs' devices while they are written: handles of their
    // own.
    let out_home = out.device().clone();
    let lse_home = lse.as_deref().map(|t| t.device().clone());
    let homes = [("q", q), ("k", k), ("v", v)]
        .map(|(name, t)| (name, t.device()))
        .into_iter()
        .chain([("out", &out_home)])
        .chain(lse_home.as_ref().map(|d| ("lse", d)))
        .chain(varlen.map(|b| ("batch", b.cu_seqlens_q.device())))
        .chain(varlen.map(|b| ("batch", b.cu_seqlens_k.device())))
        .chain(
            mask.into_iter()
                .flat_map(|m| m.tensors().iter().map(|t| ("mask", t.device()))),
        );
    let capture = crate::graph::admitted_capture("q", device)?;
    let capturing = capture.is_some();
    let streams = ForeignStreams::join(device, capture, homes)?;
    // The guards keep cudarc's record of each buffer's use alive across the launch (none in a
    // graph capture: Tensor::kernel_ptr).
    let (q_ptr, _q_guard) = q.kernel_ptr(device, capturing)?;
    let (k_ptr, _k_guard) = k.kernel_ptr(device, capturing)?;
    let (v_ptr, _v_guard) = v.kernel_ptr(device, capturing)?;
    let (out_ptr, _out_guard) = out.kernel_ptr_mut("out", device, capturing)?;
    let lse_ptr = match lse {
        Some(t) => Some(t.kernel_ptr_mut("lse", device, capturing)?),
        None => None,
    };
    let cu_q = varlen
        .map(|b| b.cu_seqlens_q.kernel_ptr(device, capturing))
        .transpose()?;
    let cu_k = varlen
        .map(|b| b.cu_seqlens_k.kernel_ptr(device, capturing))
        .transpose()?;
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
    let mask_ptrs = match mask {
        Some(m) => {
            let [full_counts, full_indices, partial_counts, partial_indices] =
                m.tensors().each_ref();
            Some([
                full_counts.kernel_ptr(device, capturing)?,
                full_indices.kernel_ptr(device, capturing)?,
                partial_counts.kernel_ptr(device, capturing)?,
                partial_indices.kernel_ptr(device, capturing)?,
            ])
        }
        None => None,
    };
    let mut mask_params = mask.map(|m| m.ffi_shape());
    if let (Some(m), Some(ptrs)) = (mask_params.as_mut(), mask_ptrs.as_ref()) {
        let [full_counts, full_indices, partial_counts, partial_indices] =
            ptrs.each_ref().map(|p| p.0.cast_const().cast::<i32>());
        m.full_counts = full_counts;
        m.full_indices = full_indices;
        m.partial_counts = partial_counts;
        m.partial_indices = partial_indices;
    }

    let mask_ptr: *const ffi::cuattn_block_mask =
        mask_params.as_ref().map_or(std::ptr::null(), |m| m);

    // SAFETY (every launch below): params and the mask were validated against the tensors,
    // whose buffers (host memory for the emulator) outlive this call; on a GPU the guards above
    // order later frees after this stream's work. A block-sparse call always has its mask.
    let status = match (device, call) {
        (Device::Emulator, Call::Dense(kernel)) => unsafe {
            emulator_launcher(kernel)(&params, std::ptr::null_mut())
        },
        (Device::Emulator, Call::BlockSparse(_)) => unsafe {
            ffi::cuattn_emu_raw_launch_block_sparse_attention(
                &params,
                mask_ptr,
                std::ptr::null_mut(),
            )
        },
        // The static CUDA runtime behind the launchers uses the current context: make it
        // cudarc's, so the pointers and the stream belong to it.
        (Device::Cuda(stream), Call::Dense(kernel)) => {
            let launcher = cuda_launcher(kernel)?;
            stream.context().bind_to_thread()?;
            unsafe { launcher(&params, stream.cu_stream().cast()) }
        }
        (Device::Cuda(stream), Call::BlockSparse(_)) => {
            let launcher = cuda_block_sparse_launcher()?;
            stream.context().bind_to_thread()?;
            unsafe { launcher(&params, mask_ptr, stream.cu_stream().cast()) }
        }
    };
    check_status(status)?;
    streams.rejoin()
}

type BlockSparseLauncher = unsafe extern "C" fn(
    *const ffi::cuattn_attention_params,
    *const ffi::cuattn_block_mask,
    *mut std::ffi::c_void,
) -> ffi::cuattn_status;

#[cfg(cuattn_cuda)]
fn cuda_block_sparse_launcher() -> Result<BlockSparseLauncher> {
    Ok(ffi::cuattn_raw_launch_block_sparse_attention)
}

#[cfg(not(cuattn_cuda))]
fn cuda_block_sparse_launcher() -> Result<BlockSparseLauncher> {
    Err(no_cuda_kernels("block_sparse_attention"))
}

/// What a flash launch with `params` runs on `device` (cuattn_raw_plan_attention_flash).
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
        Device::Emulator => unsafe { ffi::cuattn_emu_raw_plan_attention_flash(params, &mut plan) },
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
    Ok(unsafe { ffi::cuattn_raw_plan_attention_flash(params, plan) })
}

#[cfg(not(cuattn_cuda))]
fn cuda_flash_plan(
    _stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    _params: &ffi::cuattn_attention_params,
    _plan: &mut ffi::cuattn_flash_plan,
) -> Result<ffi::cuattn_status> {
    Err(no_cuda_kernels("flash_plan"))
}
