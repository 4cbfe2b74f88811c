//! Attention over the paged KV cache: decode (a KV head's query-head group packed into one tile),
//! speculative verification and chunked prefill in one kernel, split-KV with its planner,
//! `merge_states`, and cascade attention for prefixes that many sequences share.

use std::marker::PhantomData;

use crate::device::{Device, ForeignStreams};
use crate::error::{check_status, Error, Result};
use crate::ffi;
use crate::kv_cache::{PagedKvCache, PagedKvView, StepPlan};
use crate::tensor::{AttentionElement, Element, Tensor};

use super::{validate, AttentionOptions, AttentionOutput};

/// How a paged attention call splits each sequence's keys among CTAs (flash-decoding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SplitKv {
    /// Split only when the unsplit grid would leave SMs idle: about two CTAs an SM, at least
    /// 256 keys a split.
    #[default]
    Auto,
    /// Never split.
    Off,
    /// This many splits (fewer when a sequence's keys run out; 0 and 1 mean no split).
    Splits(usize),
}

impl SplitKv {
    fn code(self) -> i32 {
        match self {
            SplitKv::Auto => -1,
            SplitKv::Off => 0,
            SplitKv::Splits(s) => s.min(i32::MAX as usize) as i32,
        }
    }
}

impl std::str::FromStr for SplitKv {
    type Err = Error;
    fn from_str(s: &str) -> Result<SplitKv> {
        match s {
            "auto" => Ok(SplitKv::Auto),
            "off" => Ok(SplitKv::Off),
            n => n.parse().map(SplitKv::Splits).map_err(|_| {
                Error::invalid(
                    "split_kv",
                    format!("`{s}`: expected auto, off or a number of splits"),
                )
            }),
        }
    }
}

/// The new tokens of a step as the paged kernels take them: each sequence's rows of q
/// (`cu_seqlens_q`, int32 `[batch + 1]` on the device) and the host's bounds, which size the grid
/// (a CUDA graph captured with bounds replays for any step within them).
#[derive(Clone, Copy, Debug)]
pub struct PagedQueries<'a> {
    cu_seqlens_q: *const i32,
    entries: usize,
    device_is_cuda: bool,
    /// Rows of q.
    pub total_q: usize,
    /// At least every sequence's new tokens.
    pub max_q_len: usize,
    /// At least every sequence's cached tokens (new ones included).
    pub max_seq_len: usize,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> PagedQueries<'a> {
    /// Over an engine's own `cu_seqlens_q` tensor (nondecreasing offsets from 0 to `total_q`).
    /// Offsets outside `[0, total_q]` cannot make a kernel reach past q or out (it clips them),
    /// but they give meaningless rows.
    pub fn new(
        cu_seqlens_q: &'a Tensor<i32>,
        total_q: usize,
        max_q_len: usize,
        max_seq_len: usize,
    ) -> Result<PagedQueries<'a>> {
        if cu_seqlens_q.shape().len() != 1 || cu_seqlens_q.shape()[0] == 0 {
            return Err(Error::invalid(
                "cu_seqlens_q",
                format!("shape {:?}: expected [batch + 1]", cu_seqlens_q.shape()),
            ));
        }
        if cu_seqlens_q.strides()[0] != 1 {
            return Err(Error::invalid("cu_seqlens_q", "must be contiguous"));
        }
        PagedQueries::checked(
            cu_seqlens_q.device_address().cast_const().cast(),
            cu_seqlens_q.shape()[0],
            cu_seqlens_q.device().is_cuda(),
            [total_q, max_q_len, max_seq_len],
        )
    }

    /// The queries of `step` in `cache`: its `cu_seqlens` table and its lengths.
    pub fn of_step(cache: &'a PagedKvCache, step: &StepPlan) -> Result<PagedQueries<'a>> {
        PagedQueries::of_step_number(cache, step.step())
    }

    /// [`of_step`](Self::of_step) by the step's number (the C API's).
    pub(crate) fn of_step_number(cache: &'a PagedKvCache, step: u64) -> Result<PagedQueries<'a>> {
        let (tables, total_q, [max_q_len, max_seq_len]) = cache.step_queries(step)?;
        PagedQueries::checked(
            tables.cu_seqlens,
            cache.view_of_step(0, step)?.raw().batch as usize + 1,
            cache.device().is_cuda(),
            [total_q, max_q_len, max_seq_len],
        )
    }

    /// The queries from their parts, the bounds checked to fit int32.
    fn checked(
        cu_seqlens_q: *const i32,
        entries: usize,
        device_is_cuda: bool,
        [total_q, max_q_len, max_seq_len]: [usize; 3],
    ) -> Result<PagedQueries<'a>> {
        let queries = PagedQueries {
            cu_seqlens_q,
            entries,
            device_is_cuda,
            total_q,
            max_q_len,
            max_seq_len,
            _borrow: PhantomData,
        };
        queries.check_bounds()?;
        Ok(queries)
    }

    fn check_bounds(&self) -> Result<()> {
        for (name, value) in [
            ("total_q", self.total_q),
            ("max_q_len", self.max_q_len),
            ("max_seq_len", self.max_seq_len),
        ] {
            if value > i32::MAX as usize {
                return Err(Error::invalid(
                    name,
                    format!("{value}: must fit int32 ({})", i32::MAX),
                ));
            }
        }
        Ok(())
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.entries - 1
    }
}

/// The shape a paged attention call is planned for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagedShape {
    /// Query heads.
    pub heads: usize,
    /// Key and value heads of the cache (a divisor of `heads`).
    pub kv_heads: usize,
    /// Elements of each head's row.
    pub head_dim: usize,
    /// Sequences in the step.
    pub batch: usize,
    /// New tokens of the whole step (the packed query rows).
    pub total_q: usize,
    /// New tokens of the longest sequence.
    pub max_q_len: usize,
    /// Cached tokens (new ones included) of the longest sequence.
    pub max_seq_len: usize,
    /// Keys before this are left out (cascade attention's suffix pass).
    pub kv_start: usize,
    /// The sliding window's left side, `None` unbounded: a token sees at most this many keys
    /// before itself, so fewer keys to split.
    pub window_left: Option<usize>,
}

/// What a paged attention launch runs: tiles, grid and split ([`PagedAttentionPlan::plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagedPlanInfo {
    /// Packed query rows (new tokens x group heads) per CTA: 16, 32 or 64.
    pub block_rows: usize,
    /// Keys per K/V tile.
    pub block_keys: usize,
    /// Threads per CTA.
    pub threads: usize,
    /// Dynamic shared memory per CTA, in bytes.
    pub smem_bytes: usize,
    /// CTAs: (row blocks, kv_heads * num_splits, batch).
    pub grid: [usize; 3],
    /// Parts each sequence's keys are split into (1: unsplit, no merge pass).
    pub num_splits: usize,
    /// Keys per split (0 unsplit).
    pub split_tokens: usize,
    /// Bytes of float32 partial outputs and LSEs the split writes before its merge.
    pub workspace_bytes: usize,
}

/// The plan and workspace of paged attention calls, made outside the hot loop (FlashInfer's
/// plan/run split): [`plan`](Self::plan) picks the split for a shape and the device's SM count
/// and grows the workspace when the split needs more than it has; the calls that take the plan
/// then allocate nothing and never synchronize, so a decode step can be captured into a CUDA
/// graph (plan first, outside the capture).
pub struct PagedAttentionPlan {
    device: Device,
    split: SplitKv,
    num_sms: usize,
    workspace: Option<Tensor<f32>>,
    planned: Option<(PagedShape, ffi::cuattn_paged_plan)>,
}

/// SMs the emulator plans for: an H200's, so that emulator runs split as a GPU would.
const EMULATOR_SMS: usize = 132;

impl PagedAttentionPlan {
    /// A plan for calls on `device` with this split policy; it learns the device's SM count
    /// (the emulator plans as an H200) and allocates nothing until a shape needs a workspace.
    pub fn new(device: &Device, split: SplitKv) -> Result<PagedAttentionPlan> {
        Ok(PagedAttentionPlan {
            device: device.clone(),
            split,
            num_sms: sm_count(device)?,
            workspace: None,
            planned: None,
        })
    }

    /// The same, planning for `num_sms` SMs rather than the device's (for tests and tuning).
    pub fn with_sm_count(device: &Device, split: SplitKv, num_sms: usize) -> PagedAttentionPlan {
        PagedAttentionPlan {
            device: device.clone(),
            split,
            num_sms: num_sms.max(1),
            workspace: None,
            planned: None,
        }
    }

    /// Plans calls of `shape`: the split, and a workspace large enough (allocated only when it
    /// must grow). Calls of another shape plan again themselves, allocating if they must.
    pub fn plan(&mut self, shape: &PagedShape) -> Result<PagedPlanInfo> {
        let raw = match &self.planned {
            Some((planned, raw)) if planned == shape => *raw,
            _ => {
                let raw = plan_raw(&self.device, shape, self.num_sms, self.split)?;
                let needed = raw.workspace_bytes as usize / std::mem::size_of::<f32>();
                let have = self.workspace.as_ref().map_or(0, |w| w.numel());
                if needed > have {
                    // Dropped first: the old workspace's memory may serve the new one.
                    self.workspace = None;
                    let workspace = Tensor::zeros(&self.device, &[needed])?;
                    self.workspace = Some(workspace.with_label("paged_workspace")?);
                }
                self.planned = Some((*shape, raw));
                raw
            }
        };
        Ok(info_of(&raw))
    }

    /// The device the plan was made for.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The split policy the plan applies.
    pub fn split(&self) -> SplitKv {
        self.split
    }

    /// The shape and plan of the latest call planned, by [`plan`](Self::plan) or by a call that
    /// took this plan (what that call ran); `None` before any.
    pub fn last_planned(&self) -> Option<(PagedShape, PagedPlanInfo)> {
        self.planned
            .as_ref()
            .map(|(shape, raw)| (*shape, info_of(raw)))
    }
}

fn info_of(raw: &ffi::cuattn_paged_plan) -> PagedPlanInfo {
    let n = |v: i32| usize::try_from(v).unwrap_or(0);
    PagedPlanInfo {
        block_rows: n(raw.block_rows),
        block_keys: n(raw.block_keys),
        threads: n(raw.threads),
        smem_bytes: n(raw.smem_bytes),
        grid: [n(raw.grid_x), n(raw.grid_y), n(raw.grid_z)],
        num_splits: n(raw.num_splits),
        split_tokens: n(raw.split_tokens),
        workspace_bytes: usize::try_from(raw.workspace_bytes).unwrap_or(0),
    }
}

/// The device's SM count (the emulator plans as an H200).
fn sm_count(device: &Device) -> Result<usize> {
    match device {
        Device::Emulator => Ok(EMULATOR_SMS),
        Device::Cuda(stream) => {
            use cudarc::driver::sys::CUdevice_attribute;
            let sms = stream
                .context()
                .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
            Ok(usize::try_from(sms).unwrap_or(1).max(1))
        }
    }
}

fn shape_params(shape: &PagedShape) -> Result<ffi::cuattn_paged_attention_params> {
    let int = |name: &'static str, v: usize| {
        i32::try_from(v).map_err(|_| Error::invalid(name, format!("{v}: must fit int32")))
    };
    // SAFETY: the params struct is plain data (pointers, integers, floats, C enums whose zero is
    // a valid value); all-zero is a valid value of it.
    let mut p: ffi::cuattn_paged_attention_params = unsafe { std::mem::zeroed() };
    p.heads = int("heads", shape.heads)?;
    p.kv.kv_heads = int("kv_heads", shape.kv_heads)?;
    p.kv.head_dim = int("head_dim", shape.head_dim)?;
    p.kv.batch = int("batch", shape.batch)?;
    p.total_q = int("total_q", shape.total_q)?;
    p.max_q_len = int("max_q_len", shape.max_q_len)?;
    p.max_seq_len = int("max_seq_len", shape.max_seq_len)?;
    p.kv_start = int("kv_start", shape.kv_start)?;
    p.window_left = match shape.window_left {
        Some(left) => int("window_left", left)?,
        None => -1,
    };
    p.num_splits = 1;
    Ok(p)
}

fn plan_raw(
    device: &Device,
    shape: &PagedShape,
    num_sms: usize,
    split: SplitKv,
) -> Result<ffi::cuattn_paged_plan> {
    let params = shape_params(shape)?;
    // SAFETY: all-zero is a valid value of the plain-data plan struct.
    let mut plan: ffi::cuattn_paged_plan = unsafe { std::mem::zeroed() };
    let sms = num_sms.min(i32::MAX as usize) as i32;
    let status = match device {
        // SAFETY: both pointers are valid for the call; the planner only reads params' shape.
        Device::Emulator => unsafe {
            ffi::cuattn_emu_raw_plan_paged_attention(&params, sms, split.code(), &mut plan)
        },
        Device::Cuda(_) => cuda_plan(&params, sms, split.code(), &mut plan)?,
    };
    check_status(status)?;
    Ok(plan)
}

#[cfg(cuattn_cuda)]
fn cuda_plan(
    params: &ffi::cuattn_paged_attention_params,
    sms: i32,
    split: i32,
    plan: &mut ffi::cuattn_paged_plan,
) -> Result<ffi::cuattn_status> {
    // SAFETY: both pointers are valid for the call; the planner only reads params' shape.
    Ok(unsafe { ffi::cuattn_raw_plan_paged_attention(params, sms, split, plan) })
}

#[cfg(not(cuattn_cuda))]
fn cuda_plan(
    _params: &ffi::cuattn_paged_attention_params,
    _sms: i32,
    _split: i32,
    _plan: &mut ffi::cuattn_paged_plan,
) -> Result<ffi::cuattn_status> {
    Err(super::no_cuda_kernels("paged attention"))
}

type PagedLauncher = unsafe extern "C" fn(
    *const ffi::cuattn_paged_attention_params,
    *mut std::ffi::c_void,
) -> ffi::cuattn_status;
type MergeLauncher = unsafe extern "C" fn(
    *const ffi::cuattn_merge_states_params,
    *mut std::ffi::c_void,
) -> ffi::cuattn_status;

#[cfg(cuattn_cuda)]
fn cuda_launchers() -> Result<(PagedLauncher, MergeLauncher)> {
    Ok((
        ffi::cuattn_raw_launch_paged_attention,
        ffi::cuattn_raw_launch_merge_states,
    ))
}

#[cfg(not(cuattn_cuda))]
fn cuda_launchers() -> Result<(PagedLauncher, MergeLauncher)> {
    Err(super::no_cuda_kernels("paged attention"))
}

/// Runs `launch` with the launchers and stream of `device`.
fn on_device(
    device: &Device,
    launch: impl FnOnce((PagedLauncher, MergeLauncher), *mut std::ffi::c_void) -> ffi::cuattn_status,
) -> Result<()> {
    let emulator: (PagedLauncher, MergeLauncher) = (
        ffi::cuattn_emu_raw_launch_paged_attention,
        ffi::cuattn_emu_raw_launch_merge_states,
    );
    crate::device::launch_on(device, emulator, cuda_launchers, launch)
}

/// Paged attention over `cache`'s `layer` for `step`'s new tokens, allocating the outputs and a
/// plan (split chosen for the device): q packed `[step.num_tokens(), heads, head_dim]` in the
/// step's order, the new tokens already appended. Output like q; LSE `[num_tokens, heads]`.
pub fn paged_attention<T: AttentionElement>(
    q: &Tensor<T>,
    cache: &PagedKvCache,
    layer: usize,
    step: &StepPlan,
    opts: &AttentionOptions,
) -> Result<AttentionOutput<T>> {
    let mut plan = PagedAttentionPlan::new(q.device(), SplitKv::Auto)?;
    let mut out = Tensor::for_overwrite(q.device(), q.shape())?;
    let mut lse = if opts.return_lse {
        Some(Tensor::for_overwrite(q.device(), &q.shape()[..2])?)
    } else {
        None
    };
    paged_attention_into(
        q,
        cache,
        layer,
        step,
        &mut out,
        lse.as_mut(),
        opts,
        &mut plan,
    )?;
    Ok(AttentionOutput { out, lse })
}

/// [`paged_attention`] into given outputs with a plan made outside the hot loop: allocates
/// nothing once the plan's workspace is large enough (see [`PagedAttentionPlan`]).
#[allow(clippy::too_many_arguments)]
pub fn paged_attention_into<T: AttentionElement>(
    q: &Tensor<T>,
    cache: &PagedKvCache,
    layer: usize,
    step: &StepPlan,
    out: &mut Tensor<T>,
    lse: Option<&mut Tensor<f32>>,
    opts: &AttentionOptions,
    plan: &mut PagedAttentionPlan,
) -> Result<()> {
    let view = cache.view(layer, step)?;
    let queries = PagedQueries::of_step(cache, step)?;
    paged_attention_view_into(q, &view, &queries, out, lse, opts, plan)
}

/// Paged attention over any view (an engine's own pools and tables, or the cache's).
pub fn paged_attention_view_into<T: AttentionElement>(
    q: &Tensor<T>,
    kv: &PagedKvView<'_>,
    queries: &PagedQueries<'_>,
    out: &mut Tensor<T>,
    lse: Option<&mut Tensor<f32>>,
    opts: &AttentionOptions,
    plan: &mut PagedAttentionPlan,
) -> Result<()> {
    run(q, kv, queries, 0, out, lse, opts, plan)
}

/// The params of a call from the view, the queries and the options, after checking the query
/// shape (`heads`, `head_dim`) against the view and the options; the q/out/LSE pointers and
/// strides left unset.
fn base_params(
    kv: &PagedKvView<'_>,
    queries: &PagedQueries<'_>,
    kv_start: usize,
    heads: usize,
    head_dim: usize,
    opts: &AttentionOptions,
) -> Result<ffi::cuattn_paged_attention_params> {
    let raw = kv.raw();
    if head_dim != raw.head_dim as usize {
        return Err(Error::invalid(
            "q",
            format!("head_dim {head_dim}, but the cache's is {}", raw.head_dim),
        ));
    }
    let kv_heads = raw.kv_heads as usize;
    if heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(Error::invalid(
            "q",
            format!(
                "{heads} heads: must be a positive multiple of the cache's kv_heads {kv_heads}"
            ),
        ));
    }
    if queries.batch() != raw.batch as usize {
        return Err(Error::invalid(
            "cu_seqlens_q",
            format!(
                "{} sequences, but the view's tables have {}",
                queries.batch(),
                raw.batch
            ),
        ));
    }
    if queries.device_is_cuda != kv.device().is_cuda() {
        return Err(Error::invalid("cu_seqlens_q", "not on the cache's device"));
    }
    let (window_left, window_right) = opts.effective_window();
    let (scale, softcap) = validate::check_options(opts, head_dim)?;
    let mut p = shape_params(&PagedShape {
        heads,
        kv_heads,
        head_dim,
        batch: queries.batch(),
        total_q: queries.total_q,
        max_q_len: queries.max_q_len,
        max_seq_len: queries.max_seq_len,
        kv_start,
        window_left: None,
    })?;
    p.kv = *raw;
    p.cu_seqlens_q = queries.cu_seqlens_q;
    p.scale = scale;
    p.softcap = softcap;
    p.window_left = window_left;
    p.window_right = window_right;
    Ok(p)
}

/// Checks a call on tensors and fills its params, pointers left unset.
fn checked_params<T: Element>(
    q: &Tensor<T>,
    kv: &PagedKvView<'_>,
    queries: &PagedQueries<'_>,
    kv_start: usize,
    out: &Tensor<T>,
    lse: Option<&Tensor<f32>>,
    opts: &AttentionOptions,
) -> Result<ffi::cuattn_paged_attention_params> {
    let &[total_q, heads, head_dim] = q.shape() else {
        return Err(Error::invalid(
            "q",
            format!(
                "shape {:?}: expected [total_q, heads, head_dim] (new tokens packed)",
                q.shape()
            ),
        ));
    };
    if T::DTYPE.to_ffi() != Some(kv.raw().dtype) {
        return Err(Error::invalid(
            "q",
            format!(
                "dtype {}, but the cache holds dtype {}",
                T::DTYPE,
                kv.raw().dtype.0
            ),
        ));
    }
    if total_q != queries.total_q {
        return Err(Error::invalid(
            "q",
            format!(
                "{total_q} rows, but the step has {} new tokens",
                queries.total_q
            ),
        ));
    }
    if out.shape() != q.shape() {
        return Err(Error::invalid(
            "out",
            format!("shape {:?}, expected q's {:?}", out.shape(), q.shape()),
        ));
    }
    validate::check_no_overlap("out", out, "q", q)?;
    match (opts.return_lse, lse) {
        (true, Some(l)) => {
            if l.shape() != [total_q, heads] || l.strides() != [heads, 1] {
                return Err(Error::invalid(
                    "lse",
                    format!(
                        "shape {:?} strides {:?}: expected contiguous [total_q, heads] = \
                         [{total_q}, {heads}]",
                        l.shape(),
                        l.strides()
                    ),
                ));
            }
            if !l.device().same_memory(kv.device()) {
                return Err(Error::invalid("lse", "not on the cache's device"));
            }
        }
        (true, None) => {
            return Err(Error::invalid(
                "lse",
                "opts.return_lse is set, but no lse tensor was given",
            ))
        }
        (false, Some(_)) => {
            return Err(Error::invalid(
                "lse",
                "given, but opts.return_lse is not set",
            ))
        }
        (false, None) => {}
    }
    for (name, t) in [("q", q), ("out", out)] {
        if t.strides()[2] != 1 && head_dim > 1 {
            return Err(Error::invalid(
                name,
                "the last dimension must be contiguous",
            ));
        }
        check_rows(name, t.device_address(), t.strides()[0], t.strides()[1])?;
        if !t.device().same_memory(kv.device()) {
            return Err(Error::invalid(
                name,
                format!("on {:?}, but the cache is on {:?}", t.device(), kv.device()),
            ));
        }
    }
    let mut p = base_params(kv, queries, kv_start, heads, head_dim, opts)?;
    p.q_row_stride = q.strides()[0] as i64;
    p.q_head_stride = q.strides()[1] as i64;
    p.out_row_stride = out.strides()[0] as i64;
    p.out_head_stride = out.strides()[1] as i64;
    Ok(p)
}

/// Rows the kernels move in 16-byte vectors: an aligned start and strides of whole vectors.
fn check_rows(
    name: &'static str,
    ptr: *const std::ffi::c_void,
    row_stride: usize,
    head_stride: usize,
) -> Result<()> {
    if !row_stride.is_multiple_of(8)
        || !head_stride.is_multiple_of(8)
        || !(ptr as usize).is_multiple_of(16)
    {
        return Err(Error::invalid(
            name,
            format!(
                "{ptr:?} with row stride {row_stride} and head stride {head_stride}: rows must \
                 start on 16-byte boundaries (strides multiples of 8 elements)"
            ),
        ));
    }
    Ok(())
}

/// Plans `params` (split and workspace) and launches it on the view's device.
fn launch_planned(
    device: &Device,
    mut params: ffi::cuattn_paged_attention_params,
    plan: &mut PagedAttentionPlan,
    kv_start: usize,
    capturing: bool,
) -> Result<()> {
    if !plan.device.same_memory(device) {
        return Err(Error::invalid(
            "plan",
            "made for another device than the cache's",
        ));
    }
    let shape = PagedShape {
        heads: params.heads as usize,
        kv_heads: params.kv.kv_heads as usize,
        head_dim: params.kv.head_dim as usize,
        batch: params.kv.batch as usize,
        total_q: params.total_q as usize,
        max_q_len: params.max_q_len as usize,
        max_seq_len: params.max_seq_len as usize,
        kv_start,
        window_left: usize::try_from(params.window_left).ok(),
    };
    let info = plan.plan(&shape)?;
    params.num_splits = info.num_splits as i32;
    params.split_tokens = info.split_tokens as i32;
    let (ws_ptr, _ws_guard) = match (&mut plan.workspace, info.num_splits > 1) {
        (Some(ws), true) => {
            let (ptr, guard) = ws.kernel_ptr_mut("plan", device, capturing)?;
            (ptr, Some(guard))
        }
        _ => (std::ptr::null_mut(), None),
    };
    params.maybe_workspace = ws_ptr;
    on_device(device, |(launch, _), stream| {
        // SAFETY: params was checked against q, out and the LSE (shapes, strides, dtype, device)
        // and the view (validated when made, its buffers borrowed for its lifetime); the
        // workspace holds the plan's bytes for this shape; the kernel clips rows to total_q and
        // pages to the pools.
        unsafe { launch(&params, stream) }
    })
}

/// Checks and launches one paged attention call (with its split's merge).
#[allow(clippy::too_many_arguments)]
fn run<T: Element>(
    q: &Tensor<T>,
    kv: &PagedKvView<'_>,
    queries: &PagedQueries<'_>,
    kv_start: usize,
    out: &mut Tensor<T>,
    lse: Option<&mut Tensor<f32>>,
    opts: &AttentionOptions,
    plan: &mut PagedAttentionPlan,
) -> Result<()> {
    let mut params = checked_params(q, kv, queries, kv_start, out, lse.as_deref(), opts)?;
    let device = kv.device();
    let capture = crate::graph::admitted_capture("q", device)?;
    let capturing = capture.is_some();
    // The streams' join borrows the outputs' devices while they are written: handles of their
    // own.
    let out_home = out.device().clone();
    let lse_home = lse.as_deref().map(|l| l.device().clone());
    let streams = ForeignStreams::join(
        device,
        capture,
        [("q", q.device()), ("out", &out_home)]
            .into_iter()
            .chain(lse_home.as_ref().map(|d| ("lse", d))),
    )?;
    // The guards keep cudarc's record of each buffer's use alive across the launch.
    let (q_ptr, _q_guard) = q.kernel_ptr(device, capturing)?;
    let (out_ptr, _out_guard) = out.kernel_ptr_mut("out", device, capturing)?;
    let lse_ptr = match lse {
        Some(t) => Some(t.kernel_ptr_mut("lse", device, capturing)?),
        None => None,
    };
    params.q = q_ptr.cast_const();
    params.out = out_ptr;
    params.maybe_lse = lse_ptr
        .as_ref()
        .map_or(std::ptr::null_mut(), |p| p.0.cast());
    launch_planned(device, params, plan, kv_start, capturing)?;
    streams.rejoin()
}

/// Rows of q or out given by raw device pointers (the C API's): `[total_q, heads, head_dim]` at
/// these element strides, columns contiguous.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawRows {
    pub ptr: *mut std::ffi::c_void,
    pub row_stride: i64,
    pub head_stride: i64,
}

/// Paged attention on raw pointers, queued on the view's stream (the C API's).
///
/// # Safety
/// `q` and `out` must address `[queries.total_q, heads, head_dim]` elements of the view's dtype
/// on its device at their strides, `lse` null or `[total_q, heads]` floats, all alive until the
/// launch has run, out not overlapping q.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn run_raw(
    kv: &PagedKvView<'_>,
    queries: &PagedQueries<'_>,
    q: RawRows,
    out: RawRows,
    lse: *mut f32,
    heads: usize,
    opts: &AttentionOptions,
    plan: &mut PagedAttentionPlan,
) -> Result<()> {
    let head_dim = kv.raw().head_dim as usize;
    for (name, rows) in [("q", q), ("out", out)] {
        let stride = |s: i64| usize::try_from(s).unwrap_or(1);
        if rows.ptr.is_null() || rows.row_stride < 0 || rows.head_stride < 0 {
            return Err(Error::invalid(
                name,
                format!(
                    "{:?} with strides {} and {}: a pointer, strides not negative",
                    rows.ptr, rows.row_stride, rows.head_stride
                ),
            ));
        }
        check_rows(
            name,
            rows.ptr,
            stride(rows.row_stride),
            stride(rows.head_stride),
        )?;
    }
    let mut params = base_params(kv, queries, 0, heads, head_dim, opts)?;
    params.q = q.ptr.cast_const();
    params.out = out.ptr;
    params.maybe_lse = lse;
    params.q_row_stride = q.row_stride;
    params.q_head_stride = q.head_stride;
    params.out_row_stride = out.row_stride;
    params.out_head_stride = out.head_stride;
    let capturing = kv.device().capturing()?;
    launch_planned(kv.device(), params, plan, 0, capturing)
}

/// `(o_a, lse_a) + (o_b, lse_b)`: two attention results of the same queries over disjoint keys
/// (each normalized over its own keys, LSE natural-log) into the result over both, allocating
/// it. o: `[tokens, heads, head_dim]` (head dim a multiple of 8, rows 16-byte aligned); LSE
/// float32 `[tokens, heads]`. A part with LSE -inf (no keys) contributes nothing.
pub fn merge_states<T: AttentionElement>(
    o_a: &Tensor<T>,
    lse_a: &Tensor<f32>,
    o_b: &Tensor<T>,
    lse_b: &Tensor<f32>,
) -> Result<(Tensor<T>, Tensor<f32>)> {
    let mut out = Tensor::for_overwrite(o_a.device(), o_a.shape())?;
    let mut lse = Tensor::for_overwrite(lse_a.device(), lse_a.shape())?;
    merge(Some((o_a, lse_a)), o_b, lse_b, &mut out, Some(&mut lse))?;
    Ok((out, lse))
}

/// [`merge_states`] into given outputs (the LSE optional); allocates nothing.
pub fn merge_states_into<T: AttentionElement>(
    o_a: &Tensor<T>,
    lse_a: &Tensor<f32>,
    o_b: &Tensor<T>,
    lse_b: &Tensor<f32>,
    out: &mut Tensor<T>,
    lse_out: Option<&mut Tensor<f32>>,
) -> Result<()> {
    merge(Some((o_a, lse_a)), o_b, lse_b, out, lse_out)
}

/// [`merge_states`] in place: `(o, lse)` becomes the merge of itself with `(o_b, lse_b)`.
pub fn merge_states_in_place<T: AttentionElement>(
    o: &mut Tensor<T>,
    lse: &mut Tensor<f32>,
    o_b: &Tensor<T>,
    lse_b: &Tensor<f32>,
) -> Result<()> {
    merge(None, o_b, lse_b, o, Some(lse))
}

/// The merge of `(o_a, lse_a)` (`None`: in place, the first part is `out` and `lse_out`, each
/// element read before the same thread writes it) with `(o_b, lse_b)` into `out` and `lse_out`.
fn merge<T: Element>(
    part_a: Option<(&Tensor<T>, &Tensor<f32>)>,
    o_b: &Tensor<T>,
    lse_b: &Tensor<f32>,
    out: &mut Tensor<T>,
    lse_out: Option<&mut Tensor<f32>>,
) -> Result<()> {
    let (o_a, lse_a) = match (part_a, lse_out.as_deref()) {
        (Some(a), _) => a,
        (None, Some(lse)) => (&*out, lse),
        (None, None) => return Err(Error::Internal("an in-place merge without its LSE".into())),
    };
    let &[tokens, heads, head_dim] = o_a.shape() else {
        return Err(Error::invalid(
            "o_a",
            format!(
                "shape {:?}: expected [tokens, heads, head_dim]",
                o_a.shape()
            ),
        ));
    };
    if head_dim == 0 || head_dim % 8 != 0 || head_dim > super::MAX_HEAD_DIM {
        return Err(Error::invalid(
            "o_a",
            format!(
                "head_dim {head_dim}: must be a multiple of 8 in 8..={}",
                super::MAX_HEAD_DIM
            ),
        ));
    }
    for (name, t) in [("o_b", o_b), ("out", &*out)] {
        if t.shape() != o_a.shape() {
            return Err(Error::invalid(
                name,
                format!("shape {:?}, expected o_a's {:?}", t.shape(), o_a.shape()),
            ));
        }
    }
    for (name, t) in [("lse_a", lse_a), ("lse_b", lse_b)]
        .into_iter()
        .chain(lse_out.as_deref().map(|l| ("lse_out", l)))
    {
        if t.shape() != [tokens, heads] || t.strides() != [heads, 1] {
            return Err(Error::invalid(
                name,
                format!(
                    "shape {:?} strides {:?}: expected contiguous [tokens, heads] = [{tokens}, \
                     {heads}]",
                    t.shape(),
                    t.strides()
                ),
            ));
        }
    }
    for (name, t) in [("o_a", o_a), ("o_b", o_b), ("out", &*out)] {
        if t.strides()[2] != 1 {
            return Err(Error::invalid(
                name,
                "the last dimension must be contiguous",
            ));
        }
        check_rows(name, t.device_address(), t.strides()[0], t.strides()[1])?;
    }
    // The written tensors are their buffers' only handles, so they overlap no input (in place,
    // out is o_a itself).
    out.check_writable("out")?;
    if let Some(l) = lse_out.as_deref() {
        l.check_writable("lse_out")?;
    }
    let device = o_a.device().clone();
    for (name, d) in [
        ("lse_a", lse_a.device()),
        ("o_b", o_b.device()),
        ("lse_b", lse_b.device()),
        ("out", out.device()),
    ] {
        if !d.same_memory(&device) {
            return Err(Error::invalid(name, "not on o_a's device"));
        }
    }
    let int = |name: &'static str, v: usize| {
        i32::try_from(v).map_err(|_| Error::invalid(name, format!("{v}: must fit int32")))
    };
    let dims = (int("o_a", tokens)?, int("o_a", heads)?);
    let a_strides = (o_a.strides()[0] as i64, o_a.strides()[1] as i64);
    let capture = crate::graph::admitted_capture("o_a", &device)?;
    let capturing = capture.is_some();
    // The streams' join borrows the devices while the outputs are written: handles of their own.
    let homes: Vec<(&'static str, Device)> = [
        ("lse_a", lse_a.device()),
        ("o_b", o_b.device()),
        ("lse_b", lse_b.device()),
        ("out", out.device()),
    ]
    .into_iter()
    .chain(lse_out.as_deref().map(|l| ("lse_out", l.device())))
    .map(|(name, d)| (name, d.clone()))
    .collect();
    let streams = ForeignStreams::join(&device, capture, homes.iter().map(|(n, d)| (*n, d)))?;
    let inputs_a = match part_a {
        Some((o_a, lse_a)) => Some((
            o_a.kernel_ptr(&device, capturing)?,
            lse_a.kernel_ptr(&device, capturing)?,
        )),
        None => None,
    };
    let (b_ptr, _b) = o_b.kernel_ptr(&device, capturing)?;
    let (lb_ptr, _lb) = lse_b.kernel_ptr(&device, capturing)?;
    let out_strides = (out.strides()[0] as i64, out.strides()[1] as i64);
    let (out_ptr, _o) = out.kernel_ptr_mut("out", &device, capturing)?;
    let lo = match lse_out {
        Some(l) => Some(l.kernel_ptr_mut("lse_out", &device, capturing)?),
        None => None,
    };
    let lse_out_ptr: *mut f32 = lo.as_ref().map_or(std::ptr::null_mut(), |p| p.0.cast());
    let (a_ptr, la_ptr) = match &inputs_a {
        Some(((a, _), (la, _))) => (a.cast_const(), la.cast_const().cast::<f32>()),
        None => (out_ptr.cast_const(), lse_out_ptr.cast_const()),
    };
    let params = ffi::cuattn_merge_states_params {
        o_a: a_ptr,
        lse_a: la_ptr,
        o_b: b_ptr.cast_const(),
        lse_b: lb_ptr.cast_const().cast(),
        out: out_ptr,
        maybe_lse_out: lse_out_ptr,
        o_a_row_stride: a_strides.0,
        o_a_head_stride: a_strides.1,
        o_b_row_stride: o_b.strides()[0] as i64,
        o_b_head_stride: o_b.strides()[1] as i64,
        out_row_stride: out_strides.0,
        out_head_stride: out_strides.1,
        tokens: dims.0,
        heads: dims.1,
        head_dim: head_dim as i32,
        dtype: T::DTYPE
            .to_ffi()
            .ok_or_else(|| Error::invalid("T", format!("{}: not f16 or bf16", T::DTYPE)))?,
    };
    on_device(&device, |(_, merge), stream| {
        // SAFETY: every tensor was checked for shape, strides, alignment and device; out is o_a
        // only in place, where each element is read before it is written by the same thread.
        unsafe { merge(&params, stream) }
    })?;
    streams.rejoin()
}

/// A prefix of whole pages that every sequence of a step shares (a system prompt, pages that
/// `fork` or prefix caching share), as cascade attention reads it: once for all the step's
/// queries. Made outside the hot loop, with its small tables on the device.
pub struct SharedPrefix {
    len: usize,
    pages: Tensor<i32>,
    seq_len: Tensor<i32>,
    cu_seqlens_q: Tensor<i32>,
    total_q: usize,
    page_size: usize,
}

impl SharedPrefix {
    /// The longest run of whole pages at the start of every sequence of `step` that all of them
    /// hold (the same page ids), ending before any sequence's new tokens; `None` when there is
    /// none (cascade attention then gains nothing).
    pub fn of_step(cache: &PagedKvCache, step: &StepPlan) -> Result<Option<SharedPrefix>> {
        let page_size = cache.config().page_size;
        let mut shared: Option<Vec<u32>> = None;
        let mut limit = usize::MAX;
        for (b, &seq) in step.seqs().iter().enumerate() {
            let pages = cache.sequence_pages(seq)?;
            let new_tokens = step.cu_seqlens()[b + 1] - step.cu_seqlens()[b];
            let before_new = step.seq_lens()[b] - new_tokens;
            limit = limit.min(before_new / page_size);
            shared = Some(match shared {
                None => pages.to_vec(),
                Some(prefix) => prefix
                    .iter()
                    .zip(pages)
                    .take_while(|(a, b)| a == b)
                    .map(|(a, _)| *a)
                    .collect(),
            });
        }
        let mut pages = shared.unwrap_or_default();
        pages.truncate(limit.min(pages.len()));
        if pages.is_empty() {
            return Ok(None);
        }
        SharedPrefix::new(cache.device(), &pages, page_size, step.num_tokens()).map(Some)
    }

    /// A prefix of `pages.len()` whole pages of `page_size` tokens, for `total_q` queries.
    pub fn new(
        device: &Device,
        pages: &[u32],
        page_size: usize,
        total_q: usize,
    ) -> Result<SharedPrefix> {
        let len = pages.len() * page_size;
        let as_i32 = |name: &'static str, v: usize| {
            i32::try_from(v).map_err(|_| Error::invalid(name, format!("{v}: must fit int32")))
        };
        let page_ids: Vec<i32> = pages
            .iter()
            .map(|&p| as_i32("pages", p as usize))
            .collect::<Result<_>>()?;
        Ok(SharedPrefix {
            len,
            pages: Tensor::from_host(device, &page_ids, &[page_ids.len().max(1)])
                .or_else(|_| Tensor::from_host(device, &[0], &[1]))?,
            seq_len: Tensor::from_host(device, &[as_i32("pages", len)?], &[1])?,
            cu_seqlens_q: Tensor::from_host(device, &[0, as_i32("total_q", total_q)?], &[2])?,
            total_q,
            page_size,
        })
    }

    /// Tokens in the prefix.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the prefix holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The buffers of cascade attention: a plan for each pass, and the prefix pass's output and LSE
/// (plus the suffix pass's LSE when the caller asks for none). Made once; they grow when a call
/// needs more.
pub struct CascadePlan<T: Element> {
    prefix: PagedAttentionPlan,
    suffix: PagedAttentionPlan,
    buffers: Option<CascadeBuffers<T>>,
}

struct CascadeBuffers<T: Element> {
    prefix_out: Tensor<T>,
    prefix_lse: Tensor<f32>,
    suffix_lse: Tensor<f32>,
}

impl<T: Element> CascadePlan<T> {
    /// `split` applies to the suffix pass; the prefix pass has rows enough not to split.
    pub fn new(device: &Device, split: SplitKv) -> Result<CascadePlan<T>> {
        Ok(CascadePlan {
            prefix: PagedAttentionPlan::new(device, SplitKv::Off)?,
            suffix: PagedAttentionPlan::new(device, split)?,
            buffers: None,
        })
    }

    fn buffers(&mut self, shape: &[usize]) -> Result<&mut CascadeBuffers<T>> {
        let fits = self
            .buffers
            .as_ref()
            .is_some_and(|b| b.prefix_out.shape() == shape);
        if !fits {
            let device = self.prefix.device().clone();
            self.buffers = None;
            self.buffers = Some(CascadeBuffers {
                prefix_out: Tensor::zeros(&device, shape)?,
                prefix_lse: Tensor::zeros(&device, &shape[..2])?,
                suffix_lse: Tensor::zeros(&device, &shape[..2])?,
            });
        }
        Ok(self.buffers.as_mut().expect("just made"))
    }
}

/// Cascade attention (FlashInfer's) for a step whose sequences share `prefix`: all the step's
/// queries attend to the prefix's pages together, in one pass that reads them once per block of
/// 64 packed query rows rather than once per sequence; each sequence attends to its own keys
/// past the prefix; the two merge by LSE ([`merge_states`]). Equals [`paged_attention`] on the
/// same data. The prefix must end before every sequence's new tokens ([`SharedPrefix::of_step`]
/// makes one that does), so that causal masks leave it whole; a sliding window is refused (the
/// prefix pass sees the whole prefix). Allocates only when the plan's buffers must grow.
#[allow(clippy::too_many_arguments)]
pub fn cascade_attention_into<T: AttentionElement>(
    q: &Tensor<T>,
    cache: &PagedKvCache,
    layer: usize,
    step: &StepPlan,
    prefix: &SharedPrefix,
    out: &mut Tensor<T>,
    lse: Option<&mut Tensor<f32>>,
    opts: &AttentionOptions,
    plan: &mut CascadePlan<T>,
) -> Result<()> {
    if opts.window.is_some() {
        return Err(Error::invalid(
            "opts.window",
            "cascade attention takes no sliding window: the prefix pass attends to the whole \
             prefix",
        ));
    }
    if prefix.page_size != cache.config().page_size || prefix.total_q != step.num_tokens() {
        return Err(Error::invalid(
            "prefix",
            format!(
                "made for {} queries in pages of {} tokens, but the step has {} new tokens and \
                 the cache pages of {}",
                prefix.total_q,
                prefix.page_size,
                step.num_tokens(),
                cache.config().page_size
            ),
        ));
    }
    for (b, &seq_len) in step.seq_lens().iter().enumerate() {
        let new_tokens = step.cu_seqlens()[b + 1] - step.cu_seqlens()[b];
        if seq_len - new_tokens < prefix.len {
            return Err(Error::invalid(
                "prefix",
                format!(
                    "{} tokens, but sequence {b} has only {} cached before its new tokens: the \
                     prefix must end before every sequence's new tokens",
                    prefix.len,
                    seq_len - new_tokens
                ),
            ));
        }
    }
    if opts.return_lse != lse.is_some() {
        return Err(Error::invalid(
            "lse",
            "given exactly when opts.return_lse is set",
        ));
    }
    let view = cache.view(layer, step)?;
    let queries = PagedQueries::of_step(cache, step)?;
    // The prefix pass: one sequence (the prefix's pages) and every query of the step as its new
    // tokens, no mask (every query comes after the prefix).
    let mut prefix_raw = *view.raw();
    let pages = prefix.pages.shape()[0];
    prefix_raw.block_table = prefix.pages.device_address().cast_const().cast();
    prefix_raw.block_table_stride = pages as i64;
    prefix_raw.max_pages_per_seq = pages as i32;
    prefix_raw.seq_lens = prefix.seq_len.device_address().cast_const().cast();
    prefix_raw.batch = 1;
    let prefix_view = PagedKvView::from_parts(prefix_raw, view.device());
    let prefix_queries = PagedQueries {
        cu_seqlens_q: prefix.cu_seqlens_q.device_address().cast_const().cast(),
        entries: 2,
        device_is_cuda: view.device().is_cuda(),
        total_q: queries.total_q,
        max_q_len: queries.total_q,
        max_seq_len: prefix.len,
        _borrow: PhantomData,
    };
    let prefix_opts = AttentionOptions {
        causal: false,
        window: None,
        return_lse: true,
        ..*opts
    };
    let suffix_opts = AttentionOptions {
        return_lse: true,
        ..*opts
    };
    plan.buffers(q.shape())?;
    let CascadePlan {
        prefix: prefix_plan,
        suffix: suffix_plan,
        buffers,
    } = plan;
    let buffers = buffers.as_mut().expect("made above");
    run(
        q,
        &prefix_view,
        &prefix_queries,
        0,
        &mut buffers.prefix_out,
        Some(&mut buffers.prefix_lse),
        &prefix_opts,
        prefix_plan,
    )?;
    let lse = match lse {
        Some(l) => l,
        None => &mut buffers.suffix_lse,
    };
    run(
        q,
        &view,
        &queries,
        prefix.len,
        out,
        Some(&mut *lse),
        &suffix_opts,
        suffix_plan,
    )?;
    merge_states_in_place(out, lse, &buffers.prefix_out, &buffers.prefix_lse)
}
