//! The public C ABI of `csrc/cuattn.h`, implemented in Rust: the validated entry points over the
//! raw launchers of `csrc/cuattn_internal.h`, reporting failures as status codes with the message
//! in `cuattn_last_error()`, the paged KV cache object, and the version. No panic crosses
//! `extern "C"`. The functions are exported under their C names (`#[no_mangle]`); C and C++
//! engines link them from the `cuattn-capi` package's static or shared library (README, "Use
//! from C/C++"), and Rust code has the safe API instead.

use std::ffi::{c_char, c_void, CStr, CString};

use crate::attention::{
    cuda_launcher, emulator_launcher, validate_params, AttentionOptions, Kernel,
    PagedAttentionPlan, PagedQueries, RawRows, SplitKv,
};
use crate::device::Device;
use crate::error::{check_status, Error, Result};
use crate::ffi;
use crate::kv_cache::{KvCacheConfig, KvLayout, NewRows, PagedKvCache, SeqId};
use crate::tensor::DType;

/// `CUATTN_STREAM_EMULATOR` of cuattn.h, `((void*)(intptr_t)-1)`: the stream that runs an entry
/// point on the CPU emulator.
pub const STREAM_EMULATOR: *mut c_void = std::ptr::without_provenance_mut(usize::MAX);

/// The crate's version as a C string, for `cuattn_version()`.
const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(version) => version,
        Err(_) => panic!("the crate version holds a NUL"),
    };

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

/// `cuattn_last_error` from cuattn.h: the message of the last failed call on this thread (`""`
/// if none), valid until the thread's next call into cuattn.
#[no_mangle]
pub extern "C" fn cuattn_last_error() -> *const c_char {
    // SAFETY: no preconditions; returns the thread's message, a NUL-terminated string.
    unsafe { ffi::cuattn_internal_last_error() }
}

/// `cuattn_abi_version` from cuattn.h: the `CUATTN_ABI_VERSION` this library was built with.
#[no_mangle]
pub extern "C" fn cuattn_abi_version() -> i32 {
    ffi::CUATTN_ABI_VERSION as i32
}

/// `cuattn_version` from cuattn.h: the crate version this library was built from,
/// `"MAJOR.MINOR.PATCH"`, a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn cuattn_version() -> *const c_char {
    VERSION.as_ptr()
}

/// `cuattn_has_cuda_kernels` from cuattn.h: 1 when the CUDA kernels were compiled in, else 0.
#[no_mangle]
pub extern "C" fn cuattn_has_cuda_kernels() -> i32 {
    i32::from(crate::build_info::HAS_CUDA_KERNELS)
}

/// The CUDA raw launcher `$f` of cuattn_internal.h, or (a build without CUDA kernels) a return of
/// `Error::Unsupported` naming `$what` from the enclosing closure.
#[cfg(cuattn_cuda)]
macro_rules! cuda_raw {
    ($f:ident, $what:expr) => {
        ffi::$f
    };
}
#[cfg(not(cuattn_cuda))]
macro_rules! cuda_raw {
    ($f:ident, $what:expr) => {
        return Err(crate::attention::no_cuda_kernels($what))
    };
}

/// Validates `params` for `kernel` and launches it on `stream` (or the emulator).
///
/// # Safety
/// As for the exported entry points below.
unsafe fn validated_launch(
    kernel: Kernel,
    params: *const ffi::cuattn_attention_params,
    stream: *mut c_void,
) -> ffi::cuattn_status {
    guarded(|| {
        // SAFETY: the caller guarantees params is null or valid to read.
        let p =
            unsafe { params.as_ref() }.ok_or_else(|| Error::invalid("params", "null pointer"))?;
        validate_params(kernel, p)?;
        let launcher = if stream == STREAM_EMULATOR {
            emulator_launcher(kernel)
        } else {
            cuda_launcher(kernel)?
        };
        // SAFETY: p was validated field by field; the pointer extents are the caller's contract.
        check_status(unsafe { launcher(p, stream) })
    })
}

/// `cuattn_attention_naive` from cuattn.h: validates `params`, then launches the naive kernel on
/// `stream`.
///
/// # Safety
/// `params` must be null or point to a readable params struct whose pointers are allocations
/// (device memory, or host memory for `CUATTN_STREAM_EMULATOR`) large enough for the shapes and
/// strides it describes; `stream` must be a `cudaStream_t` of the current device, null, or
/// `CUATTN_STREAM_EMULATOR`.
#[no_mangle]
pub unsafe extern "C" fn cuattn_attention_naive(
    params: *const ffi::cuattn_attention_params,
    stream: *mut c_void,
) -> ffi::cuattn_status {
    // SAFETY: forwarded caller contract.
    unsafe { validated_launch(Kernel::Naive, params, stream) }
}

/// `cuattn_attention_flash` from cuattn.h: validates `params` (including 16-byte aligned rows and
/// `flash_tiles`), then launches the flash kernel on `stream`.
///
/// # Safety
/// As for [`cuattn_attention_naive`].
#[no_mangle]
pub unsafe extern "C" fn cuattn_attention_flash(
    params: *const ffi::cuattn_attention_params,
    stream: *mut c_void,
) -> ffi::cuattn_status {
    // SAFETY: forwarded caller contract.
    unsafe { validated_launch(Kernel::Flash, params, stream) }
}

/// `cuattn_plan_attention_flash` from cuattn.h: what `cuattn_attention_flash(params, stream)`
/// would run, on the current device or the emulator.
///
/// # Safety
/// `params` null or readable; `plan` null or writable; `stream` as for
/// [`cuattn_attention_naive`].
#[no_mangle]
pub unsafe extern "C" fn cuattn_plan_attention_flash(
    params: *const ffi::cuattn_attention_params,
    stream: *mut c_void,
    plan: *mut ffi::cuattn_flash_plan,
) -> ffi::cuattn_status {
    guarded(|| {
        let planner = if stream == STREAM_EMULATOR {
            ffi::cuattn_emu_raw_plan_attention_flash
        } else {
            cuda_raw!(
                cuattn_raw_plan_attention_flash,
                "cuattn_plan_attention_flash"
            )
        };
        // SAFETY: the raw planner checks both pointers for null and reads only params' shape
        // fields (caller contract: readable), writing *plan (caller contract: writable).
        check_status(unsafe { planner(params, plan) })
    })
}

/// Defines an entry point of cuattn.h over a family's raw launchers (cuattn_internal.h), which
/// check the fields their kernels rely on: the emulator's on `CUATTN_STREAM_EMULATOR`, the CUDA
/// one on any other stream (`CUATTN_ERROR_UNSUPPORTED` in a build without CUDA kernels).
macro_rules! launch_entry_point {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) => $cuda:ident, $emu:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// Each pointer null or valid as cuattn.h describes: structs readable, buffers
        /// allocations (device memory, or host memory for `CUATTN_STREAM_EMULATOR`) large enough
        /// for the shapes and strides given; `stream` a `cudaStream_t` of the current device,
        /// null, or `CUATTN_STREAM_EMULATOR`.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty,)* stream: *mut c_void) -> ffi::cuattn_status {
            guarded(|| {
                let launcher = if stream == STREAM_EMULATOR {
                    ffi::$emu
                } else {
                    cuda_raw!($cuda, stringify!($name))
                };
                // SAFETY: the raw launcher checks what its kernel's indexing relies on (null
                // pointers included); the extents are the caller's contract.
                check_status(unsafe { launcher($($arg,)* stream) })
            })
        }
    };
}

launch_entry_point! {
    /// `cuattn_kv_append` from cuattn.h: writes a step's new keys and values into their slots.
    fn cuattn_kv_append(params: *const ffi::cuattn_kv_append_params)
        => cuattn_raw_launch_kv_append, cuattn_emu_raw_launch_kv_append
}

launch_entry_point! {
    /// `cuattn_kv_copy_pages` from cuattn.h: copies whole pages across every pool of a cache.
    fn cuattn_kv_copy_pages(params: *const ffi::cuattn_kv_copy_pages_params)
        => cuattn_raw_launch_kv_copy_pages, cuattn_emu_raw_launch_kv_copy_pages
}

launch_entry_point! {
    /// `cuattn_paged_attention` from cuattn.h: attention of new tokens over a paged KV cache.
    fn cuattn_paged_attention(params: *const ffi::cuattn_paged_attention_params)
        => cuattn_raw_launch_paged_attention, cuattn_emu_raw_launch_paged_attention
}

launch_entry_point! {
    /// `cuattn_merge_states` from cuattn.h: merges two partial attention results by their LSEs.
    fn cuattn_merge_states(params: *const ffi::cuattn_merge_states_params)
        => cuattn_raw_launch_merge_states, cuattn_emu_raw_launch_merge_states
}

launch_entry_point! {
    /// `cuattn_block_sparse_attention` from cuattn.h: attention over the blocks a mask lists.
    fn cuattn_block_sparse_attention(
        params: *const ffi::cuattn_attention_params,
        mask: *const ffi::cuattn_block_mask
    ) => cuattn_raw_launch_block_sparse_attention, cuattn_emu_raw_launch_block_sparse_attention
}

launch_entry_point! {
    /// `cuattn_linear_attention` from cuattn.h: kernel-based linear attention.
    fn cuattn_linear_attention(params: *const ffi::cuattn_linear_attention_params)
        => cuattn_raw_launch_linear_attention, cuattn_emu_raw_launch_linear_attention
}

launch_entry_point! {
    /// `cuattn_lowrank_projection` from cuattn.h: Linformer's projection of keys or values.
    fn cuattn_lowrank_projection(params: *const ffi::cuattn_lowrank_projection_params)
        => cuattn_raw_launch_lowrank_projection, cuattn_emu_raw_launch_lowrank_projection
}

/// `cuattn_plan_paged_attention` from cuattn.h: the split and workspace of a paged launch on a
/// GPU of `num_sms` SMs. The plan depends on the shape and `num_sms` alone, so both builds' raw
/// planners give the same; the emulator's, in every build, answers.
///
/// # Safety
/// `params` null or readable; `plan` null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuattn_plan_paged_attention(
    params: *const ffi::cuattn_paged_attention_params,
    num_sms: i32,
    split_kv: i32,
    plan: *mut ffi::cuattn_paged_plan,
) -> ffi::cuattn_status {
    // SAFETY: the raw planner checks both pointers for null and reads params' shape fields.
    guarded(|| {
        check_status(unsafe {
            ffi::cuattn_emu_raw_plan_paged_attention(params, num_sms, split_kv, plan)
        })
    })
}

/// `cuattn_plan_block_sparse_attention` from cuattn.h: what a block-sparse launch runs (tiles
/// and grid, the same in both builds: the emulator's planner answers).
///
/// # Safety
/// `params` and `mask` null or readable; `plan` null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuattn_plan_block_sparse_attention(
    params: *const ffi::cuattn_attention_params,
    mask: *const ffi::cuattn_block_mask,
    plan: *mut ffi::cuattn_block_sparse_plan,
) -> ffi::cuattn_status {
    // SAFETY: the raw planner checks the pointers for null and reads the shape fields.
    guarded(|| {
        check_status(unsafe { ffi::cuattn_emu_raw_plan_block_sparse_attention(params, mask, plan) })
    })
}

/// `cuattn_plan_linear_attention` from cuattn.h: the workspace bytes a linear attention launch
/// needs (a function of the shape alone: the emulator's planner answers).
///
/// # Safety
/// `params` null or readable; `workspace_bytes` null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuattn_plan_linear_attention(
    params: *const ffi::cuattn_linear_attention_params,
    workspace_bytes: *mut i64,
) -> ffi::cuattn_status {
    // SAFETY: the raw planner checks both pointers for null and reads the shape fields.
    guarded(|| {
        check_status(unsafe { ffi::cuattn_emu_raw_plan_linear_attention(params, workspace_bytes) })
    })
}

// ---------------------------------------------------------------------------------------------
// The paged KV cache (cuattn_kv_cache_*): an opaque handle over a boxed `PagedKvCache`.
// ---------------------------------------------------------------------------------------------

/// What a `cuattn_kv_cache*` points to: the cache, and the plan (split-KV's workspace) of its
/// attention calls, made at the first.
struct CacheHandle {
    cache: PagedKvCache,
    plan: Option<PagedAttentionPlan>,
}

/// The handle behind a `cuattn_kv_cache*`.
fn handle_mut<'a>(cache: *mut ffi::cuattn_kv_cache) -> Result<&'a mut CacheHandle> {
    // SAFETY: the caller passes null or a handle from cuattn_kv_cache_create, not yet destroyed
    // and not used by another thread meanwhile (the header's contract), so the reference is
    // unique.
    unsafe { cache.cast::<CacheHandle>().as_mut() }
        .ok_or_else(|| Error::invalid("cache", "null pointer"))
}

/// The cache behind a `cuattn_kv_cache*`.
fn cache_ref<'a>(cache: *const ffi::cuattn_kv_cache) -> Result<&'a PagedKvCache> {
    // SAFETY: as in handle_mut.
    unsafe { cache.cast::<CacheHandle>().as_ref() }
        .map(|h| &h.cache)
        .ok_or_else(|| Error::invalid("cache", "null pointer"))
}

fn cache_mut<'a>(cache: *mut ffi::cuattn_kv_cache) -> Result<&'a mut PagedKvCache> {
    handle_mut(cache).map(|h| &mut h.cache)
}

/// Writes `value` through an output pointer, refusing null.
fn put<T>(out: *mut T, name: &'static str, value: T) -> Result<()> {
    if out.is_null() {
        return Err(Error::invalid(name, "null pointer"));
    }
    // SAFETY: non-null; the caller passes a pointer valid to write a T.
    unsafe { out.write(value) };
    Ok(())
}

fn non_negative(name: &'static str, value: i64) -> Result<usize> {
    usize::try_from(value)
        .map_err(|_| Error::invalid(name, format!("{value}: must not be negative")))
}

fn config_from_ffi(c: &ffi::cuattn_kv_cache_config) -> Result<KvCacheConfig> {
    let dtype = match c.dtype {
        ffi::cuattn_dtype::CUATTN_DTYPE_F16 => DType::F16,
        ffi::cuattn_dtype::CUATTN_DTYPE_BF16 => DType::BF16,
        other => {
            return Err(Error::invalid(
                "dtype",
                format!("{}: not f16 (0) or bf16 (1)", other.0),
            ))
        }
    };
    let layout = match c.layout {
        ffi::cuattn_kv_layout::CUATTN_KV_LAYOUT_NHD => KvLayout::Nhd,
        ffi::cuattn_kv_layout::CUATTN_KV_LAYOUT_HND => KvLayout::Hnd,
        other => {
            return Err(Error::invalid(
                "layout",
                format!("{}: not NHD (0) or HND (1)", other.0),
            ))
        }
    };
    Ok(KvCacheConfig {
        num_layers: non_negative("num_layers", c.num_layers.into())?,
        kv_heads: non_negative("kv_heads", c.kv_heads.into())?,
        head_dim: non_negative("head_dim", c.head_dim.into())?,
        page_size: non_negative("page_size", c.page_size.into())?,
        num_pages: non_negative("num_pages", c.num_pages)?,
        dtype,
        layout,
    })
}

/// The device a C caller names: the emulator, or CUDA ordinal `device` on `stream` (borrowed).
fn device_from_ffi(device: i32, stream: *mut c_void) -> Result<Device> {
    if device == ffi::CUATTN_DEVICE_EMULATOR {
        return Ok(Device::emulator());
    }
    let ordinal = usize::try_from(device).map_err(|_| {
        Error::invalid(
            "device",
            format!("{device}: a CUDA ordinal, or CUATTN_DEVICE_EMULATOR (-1)"),
        )
    })?;
    match crate::device::probe_cuda() {
        crate::device::CudaProbe::Available(n) if ordinal < n => {}
        crate::device::CudaProbe::Available(n) => {
            return Err(Error::invalid(
                "device",
                format!("{ordinal}: the driver reports {n} device(s)"),
            ))
        }
        crate::device::CudaProbe::Unavailable(why) => return Err(Error::Cuda(why)),
    }
    let ctx = cudarc::driver::CudaContext::new(ordinal)?;
    let stream = if stream.is_null() {
        ctx.default_stream()
    } else {
        // SAFETY: the header requires a stream of the device's primary context (the one
        // CudaContext::new retains) that outlives the cache; the cache orders its own work on it.
        unsafe { ctx.wrap_borrowed_stream(stream.cast()) }
    };
    Ok(Device::from_stream(stream))
}

/// Boxes `cache` into `*out`.
fn hand_out(cache: PagedKvCache, out: *mut *mut ffi::cuattn_kv_cache) -> Result<()> {
    if out.is_null() {
        return Err(Error::invalid("out", "null pointer"));
    }
    let handle = CacheHandle { cache, plan: None };
    put(out, "out", Box::into_raw(Box::new(handle)).cast())
}

/// Makes a cache from C arguments: `config`'s pages, or as many as fit in `budget` bytes.
fn create_cache(
    config: *const ffi::cuattn_kv_cache_config,
    budget: Option<u64>,
    device: i32,
    stream: *mut c_void,
    out: *mut *mut ffi::cuattn_kv_cache,
) -> Result<()> {
    // SAFETY: null or valid to read (caller contract).
    let c = unsafe { config.as_ref() }.ok_or_else(|| Error::invalid("config", "null pointer"))?;
    // With a budget, num_pages is the budget's to say: any positive count passes the checks.
    let num_pages = if budget.is_some() { 1 } else { c.num_pages };
    let config = config_from_ffi(&ffi::cuattn_kv_cache_config { num_pages, ..*c })?;
    if out.is_null() {
        return Err(Error::invalid("out", "null pointer"));
    }
    let device = device_from_ffi(device, stream)?;
    let cache = match budget {
        Some(bytes) => PagedKvCache::with_memory_budget(&device, config, bytes)?,
        None => PagedKvCache::new(&device, config)?,
    };
    hand_out(cache, out)
}

/// `cuattn_kv_cache_create` from cuattn.h.
///
/// # Safety
/// `config` and `out` must be null or valid; `stream` as the header says.
#[no_mangle]
pub unsafe extern "C" fn cuattn_kv_cache_create(
    config: *const ffi::cuattn_kv_cache_config,
    device: i32,
    stream: *mut c_void,
    out: *mut *mut ffi::cuattn_kv_cache,
) -> ffi::cuattn_status {
    guarded(|| create_cache(config, None, device, stream, out))
}

/// `cuattn_kv_cache_create_with_budget` from cuattn.h.
///
/// # Safety
/// As for [`cuattn_kv_cache_create`].
#[no_mangle]
pub unsafe extern "C" fn cuattn_kv_cache_create_with_budget(
    config: *const ffi::cuattn_kv_cache_config,
    bytes: u64,
    device: i32,
    stream: *mut c_void,
    out: *mut *mut ffi::cuattn_kv_cache,
) -> ffi::cuattn_status {
    guarded(|| create_cache(config, Some(bytes), device, stream, out))
}

/// `cuattn_kv_cache_destroy` from cuattn.h.
///
/// # Safety
/// `cache` must be null or a handle from cuattn_kv_cache_create not yet destroyed.
#[no_mangle]
pub unsafe extern "C" fn cuattn_kv_cache_destroy(cache: *mut ffi::cuattn_kv_cache) {
    if cache.is_null() {
        return;
    }
    // A panic in a drop is caught here too: nothing unwinds across extern "C".
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: made by Box::into_raw in hand_out, destroyed once (caller contract).
        drop(unsafe { Box::from_raw(cache.cast::<CacheHandle>()) });
    }));
}

/// `cuattn_kv_cache_add_sequence` from cuattn.h.
///
/// # Safety
/// `cache` a live handle or null; `seq` null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuattn_kv_cache_add_sequence(
    cache: *mut ffi::cuattn_kv_cache,
    seq: *mut u64,
) -> ffi::cuattn_status {
    guarded(|| {
        let cache = cache_mut(cache)?;
        if seq.is_null() {
            return Err(Error::invalid("seq", "null pointer"));
        }
        put(seq, "seq", cache.add_sequence().get())
    })
}

/// `cuattn_kv_cache_add_sequence_with_prefix` from cuattn.h.
///
/// # Safety
/// `cache` a live handle or null; `token_ids` readable for `num_tokens` ids; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn cuattn_kv_cache_add_sequence_with_prefix(
    cache: *mut ffi::cuattn_kv_cache,
    token_ids: *const i32,
    num_tokens: i64,
    seq: *mut u64,
    cached_tokens: *mut i64,
) -> ffi::cuattn_status {
    guarded(|| {
        let cache = cache_mut(cache)?;
        let n = non_negative("num_tokens", num_tokens)?;
        let ids = token_slice(token_ids, n, "token_ids")?;
        if seq.is_null() || cached_tokens.is_null() {
            return Err(Error::invalid("seq", "seq and cached_tokens must be set"));
        }
        let (id, cached) = cache.add_sequence_with_prefix(&ids);
        put(seq, "seq", id.get())?;
        put(cached_tokens, "cached_tokens", cached as i64)
    })
}

/// `n` int32 token ids from C as u32 (ids are never negative).
fn token_slice(ids: *const i32, n: usize, name: &'static str) -> Result<Vec<u32>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if ids.is_null() {
        return Err(Error::invalid(name, "null pointer"));
    }
    // SAFETY: non-null and readable for n ids (caller contract).
    let ids = unsafe { std::slice::from_raw_parts(ids, n) };
    ids.iter()
        .map(|&id| {
            u32::try_from(id)
                .map_err(|_| Error::invalid(name, format!("{id}: a negative token id")))
        })
        .collect()
}

/// `cuattn_kv_cache_fork` from cuattn.h.
///
/// # Safety
/// `cache` a live handle or null; `child` null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuattn_kv_cache_fork(
    cache: *mut ffi::cuattn_kv_cache,
    seq: u64,
    child: *mut u64,
) -> ffi::cuattn_status {
    guarded(|| {
        let cache = cache_mut(cache)?;
        if child.is_null() {
            return Err(Error::invalid("child", "null pointer"));
        }
        put(child, "child", cache.fork(SeqId::from_raw(seq))?.get())
    })
}

/// `cuattn_kv_cache_truncate` from cuattn.h.
///
/// # Safety
/// `cache` a live handle or null.
#[no_mangle]
pub unsafe extern "C" fn cuattn_kv_cache_truncate(
    cache: *mut ffi::cuattn_kv_cache,
    seq: u64,
    new_length: i64,
) -> ffi::cuattn_status {
    guarded(|| {
        let new_len = non_negative("new_len", new_length)?;
        cache_mut(cache)?.truncate(SeqId::from_raw(seq), new_len)
    })
}

/// `cuattn_kv_cache_free` from cuattn.h.
///
/// # Safety
/// `cache` a live handle or null.
#[no_mangle]
pub unsafe extern "C" fn cuattn_kv_cache_free(
    cache: *mut ffi::cuattn_kv_cache,
    seq: u64,
) -> ffi::cuattn_status {
    guarded(|| cache_mut(cache)?.free(SeqId::from_raw(seq)))
}

/// `cuattn_kv_cache_sequence_length` from cuattn.h.
///
/// # Safety
/// `cache` a live handle or null; `length` null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuattn_kv_cache_sequence_length(
    cache: *const ffi::cuattn_kv_cache,
    seq: u64,
    length: *mut i64,
) -> ffi::cuattn_status {
    guarded(|| {
        let len = cache_ref(cache)?.sequence_len(SeqId::from_raw(seq))?;
        put(length, "length", len as i64)
    })
}

/// `cuattn_kv_cache_reserve` from cuattn.h.
///
/// # Safety
/// `cache` a live handle or null; `seqs` and `new_tokens` readable for `batch` entries,
/// `maybe_token_ids` null or readable for their sum; `step` null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuattn_kv_cache_reserve(
    cache: *mut ffi::cuattn_kv_cache,
    seqs: *const u64,
    new_tokens: *const i32,
    maybe_token_ids: *const i32,
    batch: i32,
    step: *mut ffi::cuattn_kv_step,
) -> ffi::cuattn_status {
    guarded(|| {
        let cache = cache_mut(cache)?;
        let batch = non_negative("batch", batch.into())?;
        if step.is_null() {
            return Err(Error::invalid("step", "null pointer"));
        }
        if batch > 0 && (seqs.is_null() || new_tokens.is_null()) {
            return Err(Error::invalid(
                "seqs",
                "seqs and new_tokens must be set when batch > 0",
            ));
        }
        let (seqs, counts) = if batch == 0 {
            (&[][..], &[][..])
        } else {
            // SAFETY: non-null and readable for batch entries (caller contract).
            unsafe {
                (
                    std::slice::from_raw_parts(seqs, batch),
                    std::slice::from_raw_parts(new_tokens, batch),
                )
            }
        };
        let mut requests = Vec::with_capacity(batch);
        for (&seq, &n) in seqs.iter().zip(counts) {
            requests.push((SeqId::from_raw(seq), non_negative("new_tokens", n.into())?));
        }
        let plan = if maybe_token_ids.is_null() {
            cache.reserve(&requests)?
        } else {
            let total = requests.iter().map(|r| r.1).sum();
            let ids = token_slice(maybe_token_ids, total, "maybe_token_ids")?;
            let mut at = 0;
            let with_ids: Vec<(SeqId, &[u32])> = requests
                .iter()
                .map(|&(seq, n)| {
                    at += n;
                    (seq, &ids[at - n..at])
                })
                .collect();
            cache.reserve_with_tokens(&with_ids)?
        };
        let tables = cache.tables(&plan)?;
        put(
            step,
            "step",
            ffi::cuattn_kv_step {
                step: plan.step(),
                batch: plan.batch() as i32,
                num_tokens: plan.num_tokens() as i32,
                max_pages_per_seq: plan.max_pages_per_seq() as i32,
                num_copied_pages: plan.copied_pages() as i32,
                block_table: tables.block_table,
                seq_lens: tables.seq_lens,
                cu_seqlens: tables.cu_seqlens,
                slot_mapping: tables.slot_mapping,
            },
        )
    })
}

fn step_of(step: *const ffi::cuattn_kv_step) -> Result<u64> {
    // SAFETY: null or valid to read (caller contract).
    Ok(unsafe { step.as_ref() }
        .ok_or_else(|| Error::invalid("step", "null pointer"))?
        .step)
}

fn layer_index(layer: i32) -> Result<usize> {
    non_negative("layer", layer.into())
}

/// `cuattn_kv_cache_append` from cuattn.h.
///
/// # Safety
/// `cache` a live handle or null; `step` null or readable; `k_new` and `v_new` device pointers
/// as the header describes.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // the C signature
pub unsafe extern "C" fn cuattn_kv_cache_append(
    cache: *mut ffi::cuattn_kv_cache,
    layer: i32,
    step: *const ffi::cuattn_kv_step,
    k_new: *const c_void,
    k_row_stride: i64,
    k_head_stride: i64,
    v_new: *const c_void,
    v_row_stride: i64,
    v_head_stride: i64,
) -> ffi::cuattn_status {
    guarded(|| {
        let cache = cache_mut(cache)?;
        let step = step_of(step)?;
        let k = NewRows {
            ptr: k_new,
            row_stride: k_row_stride,
            head_stride: k_head_stride,
        };
        let v = NewRows {
            ptr: v_new,
            row_stride: v_row_stride,
            head_stride: v_head_stride,
        };
        // SAFETY: the rows' extents are the caller's contract (the header's).
        unsafe { cache.append_raw(layer_index(layer)?, step, k, v) }
    })
}

/// `cuattn_kv_cache_view` from cuattn.h.
///
/// # Safety
/// `cache` a live handle or null; `step` null or readable; `view` null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuattn_kv_cache_view(
    cache: *const ffi::cuattn_kv_cache,
    layer: i32,
    step: *const ffi::cuattn_kv_step,
    view: *mut ffi::cuattn_paged_kv_view,
) -> ffi::cuattn_status {
    guarded(|| {
        let cache = cache_ref(cache)?;
        let raw = *cache
            .view_of_step(layer_index(layer)?, step_of(step)?)?
            .raw();
        put(view, "view", raw)
    })
}

/// `cuattn_kv_cache_get_stats` from cuattn.h.
///
/// # Safety
/// `cache` a live handle or null; `stats` null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuattn_kv_cache_get_stats(
    cache: *const ffi::cuattn_kv_cache,
    stats: *mut ffi::cuattn_kv_cache_stats,
) -> ffi::cuattn_status {
    guarded(|| {
        let s = cache_ref(cache)?.stats();
        put(
            stats,
            "stats",
            ffi::cuattn_kv_cache_stats {
                pages_total: s.pages_total as i64,
                pages_free: s.pages_free as i64,
                pages_cached: s.pages_cached as i64,
                pages_shared: s.pages_shared as i64,
                sequences: s.sequences.len() as i64,
                tokens: s.sequences.iter().map(|&(_, len)| len as i64).sum(),
                bytes_per_page: s.bytes_per_page as i64,
                bytes_total: s.bytes_total as i64,
            },
        )
    })
}

/// `cuattn_kv_cache_attention` from cuattn.h.
///
/// # Safety
/// `cache` a live handle or null; `step` and `options` null or readable; `q`, `out` and
/// `maybe_lse` device pointers as the header says, alive until the launch has run.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuattn_kv_cache_attention(
    cache: *mut ffi::cuattn_kv_cache,
    layer: i32,
    step: *const ffi::cuattn_kv_step,
    q: *const c_void,
    q_row_stride: i64,
    q_head_stride: i64,
    out: *mut c_void,
    out_row_stride: i64,
    out_head_stride: i64,
    maybe_lse: *mut f32,
    options: *const ffi::cuattn_paged_options,
) -> ffi::cuattn_status {
    guarded(|| {
        let handle = handle_mut(cache)?;
        // SAFETY: null or readable (caller contract).
        let o =
            unsafe { options.as_ref() }.ok_or_else(|| Error::invalid("options", "null pointer"))?;
        let step = step_of(step)?;
        let split = match o.split_kv {
            s if s < 0 => SplitKv::Auto,
            0 | 1 => SplitKv::Off,
            s => SplitKv::Splits(s as usize),
        };
        let heads = usize::try_from(o.heads)
            .map_err(|_| Error::invalid("heads", format!("{}: must be positive", o.heads)))?;
        let opts = AttentionOptions {
            causal: false,
            window: Some((o.window_left, o.window_right)),
            scale: (o.scale != 0.0).then_some(o.scale),
            softcap: (o.softcap != 0.0).then_some(o.softcap),
            return_lse: !maybe_lse.is_null(),
            ..Default::default()
        };
        let CacheHandle { cache, plan } = handle;
        if plan.as_ref().is_none_or(|p| p.split() != split) {
            *plan = Some(PagedAttentionPlan::new(cache.device(), split)?);
        }
        let plan = plan.as_mut().expect("made above");
        let view = cache.view_of_step(layer_index(layer)?, step)?;
        let queries = PagedQueries::of_step_number(cache, step)?;
        let rows = |ptr: *mut c_void, row_stride, head_stride| RawRows {
            ptr,
            row_stride,
            head_stride,
        };
        // SAFETY: the pointers are the caller's contract (the header's); the view borrows the
        // cache.
        unsafe {
            crate::attention::run_raw(
                &view,
                &queries,
                rows(q.cast_mut(), q_row_stride, q_head_stride),
                rows(out, out_row_stride, out_head_stride),
                maybe_lse,
                heads,
                &opts,
                plan,
            )
        }
    })
}
