//! The one place the paged cache's kernels are called across the FFI: kv_append and
//! kv_copy_pages, on the emulator or the GPU.

use crate::device::{Device, ForeignStreams};
use crate::error::Result;
use crate::ffi;
use crate::tensor::{Element, Tensor};

use super::{PagedKvCache, Pools};

type AppendLauncher = unsafe extern "C" fn(
    *const ffi::cuattn_kv_append_params,
    *mut std::ffi::c_void,
) -> ffi::cuattn_status;
type CopyLauncher = unsafe extern "C" fn(
    *const ffi::cuattn_kv_copy_pages_params,
    *mut std::ffi::c_void,
) -> ffi::cuattn_status;

#[cfg(cuattn_cuda)]
fn cuda_launchers() -> Result<(AppendLauncher, CopyLauncher)> {
    Ok((
        ffi::cuattn_raw_launch_kv_append,
        ffi::cuattn_raw_launch_kv_copy_pages,
    ))
}

#[cfg(not(cuattn_cuda))]
fn cuda_launchers() -> Result<(AppendLauncher, CopyLauncher)> {
    Err(crate::attention::no_cuda_kernels("the paged KV cache"))
}

/// Runs `launch` with the launcher pair and stream of `device`.
fn on_device(
    device: &Device,
    launch: impl FnOnce((AppendLauncher, CopyLauncher), *mut std::ffi::c_void) -> ffi::cuattn_status,
) -> Result<()> {
    let emulator: (AppendLauncher, CopyLauncher) = (
        ffi::cuattn_emu_raw_launch_kv_append,
        ffi::cuattn_emu_raw_launch_kv_copy_pages,
    );
    crate::device::launch_on(device, emulator, cuda_launchers, launch)
}

/// Rows of new keys or values as the kernel reads them: the first element, and the element
/// strides between tokens and between heads (columns contiguous).
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewRows {
    pub ptr: *const std::ffi::c_void,
    pub row_stride: i64,
    pub head_stride: i64,
}

/// Launches kv_append of the current step into `layer` from tensors (checked by the caller),
/// ordering their streams with the cache's.
pub(super) fn append<T: Element>(
    cache: &PagedKvCache,
    layer: usize,
    k_new: &Tensor<T>,
    v_new: &Tensor<T>,
) -> Result<()> {
    if cache.num_tokens == 0 {
        return Ok(());
    }
    let device = &cache.device;
    let capture = crate::graph::admitted_capture("cache", device)?;
    let capturing = capture.is_some();
    let streams = ForeignStreams::join(
        device,
        capture,
        [("k_new", k_new.device()), ("v_new", v_new.device())],
    )?;
    // The guards keep cudarc's record of the inputs' use alive across the launch. The pools and
    // tables are the cache's own, used on its stream only.
    let (k_ptr, _k_guard) = k_new.kernel_ptr(device, capturing)?;
    let (v_ptr, _v_guard) = v_new.kernel_ptr(device, capturing)?;
    let rows = |ptr: *mut std::ffi::c_void, t: &Tensor<T>| NewRows {
        ptr: ptr.cast_const(),
        row_stride: t.strides()[0] as i64,
        head_stride: t.strides()[1] as i64,
    };
    // SAFETY: k_new and v_new are [num_tokens, kv_heads, head_dim] views (checked shapes) of
    // live buffers of the cache's device.
    unsafe { append_rows(cache, layer, rows(k_ptr, k_new), rows(v_ptr, v_new))? };
    streams.rejoin()
}

/// Launches kv_append of the current step into `layer` (checked by the caller) on the cache's
/// stream.
///
/// # Safety
/// `k` and `v` must address `[num_tokens, kv_heads, head_dim]` elements of the cache's dtype on
/// its device at their strides, alive until the launch has run.
pub(super) unsafe fn append_rows(
    cache: &PagedKvCache,
    layer: usize,
    k: NewRows,
    v: NewRows,
) -> Result<()> {
    if cache.num_tokens == 0 {
        return Ok(());
    }
    let tables = cache.tables.device_address().cast::<i32>();
    let params = ffi::cuattn_kv_append_params {
        cache: cache.raw_view(layer),
        k_new: k.ptr,
        v_new: v.ptr,
        k_new_row_stride: k.row_stride,
        k_new_head_stride: k.head_stride,
        v_new_row_stride: v.row_stride,
        v_new_head_stride: v.head_stride,
        slot_mapping: tables.wrapping_add(cache.offsets.slot_mapping).cast_const(),
        num_tokens: cache.num_tokens as i32,
    };
    on_device(&cache.device, |(append, _), stream| {
        // SAFETY: the cache's pools and tables hold the layer and the step (validated plan and
        // layer); the rows are the caller's contract; slots outside the pools are skipped by
        // the kernel.
        unsafe { append(&params, stream) }
    })
}

/// Launches kv_copy_pages for the current step's `count` copy pairs.
pub(super) fn copy_pages(cache: &PagedKvCache, count: usize) -> Result<()> {
    let c = &cache.config;
    let page_bytes = c.page_elems() * std::mem::size_of::<u16>();
    let pools = match &cache.pools {
        Pools::F16(t) => t.device_address(),
        Pools::Bf16(t) => t.device_address(),
    };
    let tables = cache.tables.device_address().cast::<i32>();
    let params = ffi::cuattn_kv_copy_pages_params {
        pools,
        pool_stride: (c.num_pages * page_bytes) as i64,
        page_bytes: page_bytes as i64,
        pairs: tables.wrapping_add(cache.offsets.copies).cast_const(),
        num_pairs: count as i32,
        num_pools: (2 * c.num_layers) as i32,
        num_pages: c.num_pages as i32,
    };
    on_device(&cache.device, |(_, copy), stream| {
        // SAFETY: the pools hold 2 * num_layers pools of num_pages pages; the pairs were just
        // uploaded after the step's other tables and name pages below num_pages.
        unsafe { copy(&params, stream) }
    })
}
