//! Exact attention forward: options, argument validation, and the kernels of the ladder
//! (`Kernel::Naive` today), over dense or variable-length batches.

mod launch;
mod paged;
mod validate;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::ffi;
use crate::tensor::{AttentionElement, Element, Tensor};

#[cfg(not(cuattn_cuda))]
pub(crate) use launch::no_cuda_kernels;
pub(crate) use launch::{cuda_launcher, emulator_launcher};
pub(crate) use launch::{run as run_call, Call};
pub use paged::{
    cascade_attention_into, merge_states, merge_states_in_place, merge_states_into,
    paged_attention, paged_attention_into, paged_attention_view_into, CascadePlan,
    PagedAttentionPlan, PagedPlanInfo, PagedQueries, PagedShape, SharedPrefix, SplitKv,
};
pub(crate) use paged::{run_raw, RawRows};
pub(crate) use validate::{
    alignment as validate_alignment, check_no_overlap, check_varlen_rows, dense as validate_dense,
    varlen as validate_varlen,
};
pub use validate::{validate_params, MAX_HEAD_DIM};

/// The attention kernels, from the baseline up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// One warp per (query row, head), fp32 CUDA cores: the correctness baseline.
    Naive,
    /// One warp per 16 query rows on mma.sync tensor cores, no pipelining: the tensor-core
    /// baseline.
    MmaSimple,
    /// FlashAttention-2-style prefill: pipelined cp.async K/V tiles, mma.sync, skipped masked
    /// tiles. The default.
    Flash,
}

impl Kernel {
    /// Every kernel, from the baseline up.
    pub const ALL: &'static [Kernel] = &[Kernel::Naive, Kernel::MmaSimple, Kernel::Flash];

    /// The kernel callers get when they do not choose: the fastest.
    pub const DEFAULT: Kernel = Kernel::Flash;

    /// The kernel's name in tables, JSON and the CLI's `--kernel`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Naive => "naive",
            Kernel::MmaSimple => "mma_simple",
            Kernel::Flash => "flash",
        }
    }

    /// Whether the kernel loads rows with 16-byte vector copies, so q/k/v/out must start on a
    /// 16-byte boundary and their strides be multiples of 8 elements.
    pub fn needs_aligned_rows(self) -> bool {
        match self {
            Kernel::Naive => false,
            Kernel::MmaSimple | Kernel::Flash => true,
        }
    }
}

/// The flash kernel's head-dim tiles and whether this build has each (the cargo features `hd64`
/// ... `hd256`, which build.rs turns into the translation units it compiles).
const FLASH_TILES: [(usize, bool); 5] = [
    (64, cfg!(feature = "hd64")),
    (96, cfg!(feature = "hd96")),
    (128, cfg!(feature = "hd128")),
    (192, cfg!(feature = "hd192")),
    (256, cfg!(feature = "hd256")),
];

/// The head-dim tile the flash kernel runs `head_dim` in: the smallest this build has that holds
/// it; `None` when there is none (flash then returns `Error::Unsupported`).
pub fn flash_head_dim_tile(head_dim: usize) -> Option<usize> {
    FLASH_TILES
        .iter()
        .find(|&&(tile, built)| built && tile >= head_dim)
        .map(|&(tile, _)| tile)
}

/// The flash kernel's tile tables. On sm_90 (H100, H200) it has two: compact (four-warp CTAs in
/// at most 96 KiB of shared memory, the only one elsewhere) and wide (eight-warp CTAs, 64-key
/// tiles, up to 192 KiB), and by default each launch picks the one that was faster for its shape
/// on an H200 (the rule is in csrc/cuattn.h). Benchmarks and tests force one through
/// [`AttentionOptions::flash_tiles`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlashTiles {
    /// Per launch: where the GPU runs the sm_90a code, wide for head-dim tiles 192 and 256, and
    /// for tiles 96 and 128 from 1024 queries (8192 under a mask or window); compact otherwise.
    #[default]
    Auto,
    /// Four-warp CTAs on every GPU.
    Compact,
    /// Eight-warp CTAs: sm_90 only, where the GPU runs cuattn's sm_90a code (elsewhere, and
    /// under `CUDA_FORCE_PTX_JIT=1`, flash returns `Error::Unsupported` for head-dim tiles over
    /// 64, and `Auto` picks compact); tile 64 has no wide row and runs its one table.
    Wide,
}

impl FlashTiles {
    /// Every setting, `Auto` first.
    pub const ALL: [FlashTiles; 3] = [FlashTiles::Auto, FlashTiles::Compact, FlashTiles::Wide];

    /// The setting's name as the CLI spells it: `auto`, `compact` or `wide`.
    pub fn name(self) -> &'static str {
        match self {
            FlashTiles::Auto => "auto",
            FlashTiles::Compact => "compact",
            FlashTiles::Wide => "wide",
        }
    }

    /// The setting a C code stands for (CUATTN_FLASH_TILES_*), if any.
    pub(crate) fn from_code(code: i32) -> Option<FlashTiles> {
        FlashTiles::ALL
            .into_iter()
            .find(|t| t.code().0 as i32 == code)
    }

    pub(crate) fn code(self) -> ffi::cuattn_flash_tiles {
        match self {
            FlashTiles::Auto => ffi::cuattn_flash_tiles::CUATTN_FLASH_TILES_AUTO,
            FlashTiles::Compact => ffi::cuattn_flash_tiles::CUATTN_FLASH_TILES_COMPACT,
            FlashTiles::Wide => ffi::cuattn_flash_tiles::CUATTN_FLASH_TILES_WIDE,
        }
    }
}

impl std::str::FromStr for FlashTiles {
    type Err = Error;
    fn from_str(s: &str) -> Result<FlashTiles> {
        FlashTiles::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "flash_tiles",
                    format!("`{s}`: expected auto, compact or wide"),
                )
            })
    }
}

impl std::str::FromStr for Kernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Kernel> {
        Kernel::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Kernel::ALL.iter().map(|k| k.name()).collect();
                Error::invalid(
                    "kernel",
                    format!("`{s}`: expected one of {}", names.join(", ")),
                )
            })
    }
}

/// Masking, scaling and outputs of one attention call. `Default` is plain softmax attention
/// with scale 1/sqrt(head_dim) and no LSE.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionOptions {
    /// Bottom-right aligned causal mask: query i sees key j iff j <= i + seqlen_k - seqlen_q.
    pub causal: bool,
    /// Sliding window (left, right), -1 for unbounded; combined with `causal`, right is 0.
    pub window: Option<(i32, i32)>,
    /// Score scale; `None` is 1/sqrt(head_dim).
    pub scale: Option<f32>,
    /// Soft cap: s = softcap * tanh(s / softcap); `None` (or 0) disables it.
    pub softcap: Option<f32>,
    /// Also return the natural-log LSE, float32 [batch, heads, seqlen_q].
    pub return_lse: bool,
    /// The flash kernel's tile table ([`Kernel::Flash`] alone reads it; [`flash_plan`] tells
    /// what it picks). `Auto`, the default, picks per launch; benchmarks and tests force one.
    pub flash_tiles: FlashTiles,
}

impl AttentionOptions {
    /// The effective window (left, right) the kernels apply, -1 for unbounded.
    pub fn effective_window(&self) -> (i32, i32) {
        let (left, right) = self.window.unwrap_or((-1, -1));
        if self.causal {
            (left, 0)
        } else {
            (left, right)
        }
    }
}

/// The results of a call that allocates its outputs.
#[derive(Debug)]
pub struct AttentionOutput<T: Element> {
    /// Shaped like q.
    pub out: Tensor<T>,
    /// float32 [batch, heads, seqlen_q] (varlen: [heads, total_q]) when requested.
    pub lse: Option<Tensor<f32>>,
}

/// Offsets of a variable-length batch, validated and uploaded once (a plan object), so the
/// launches that use it allocate nothing. [`update`](VarlenBatch::update) rewrites the offsets
/// in place (same batch size, lengths within the batch's bounds), so a CUDA graph captured over a
/// call on this batch replays on the new lengths; engines that keep the offsets on the device
/// already wrap them with [`from_device`](VarlenBatch::from_device).
pub struct VarlenBatch {
    cu_seqlens_q: Tensor<i32>,
    cu_seqlens_k: Tensor<i32>,
    /// Each sequence's (seqlen_q, seqlen_k); `None` for offsets only the device holds.
    seqlens: Option<Vec<(usize, usize)>>,
    total_q: usize,
    total_k: usize,
    /// The bounds launches are sized by (grids), at least every sequence's length.
    max_seqlen_q: usize,
    max_seqlen_k: usize,
}

/// Checks a pair of host offset arrays; returns each sequence's (seqlen_q, seqlen_k).
fn host_seqlens(cu_seqlens_q: &[i32], cu_seqlens_k: &[i32]) -> Result<Vec<(usize, usize)>> {
    validate::cu_seqlens("cu_seqlens_q", cu_seqlens_q)?;
    validate::cu_seqlens("cu_seqlens_k", cu_seqlens_k)?;
    if cu_seqlens_q.len() != cu_seqlens_k.len() {
        return Err(Error::invalid(
            "cu_seqlens_k",
            format!(
                "{} entries, but cu_seqlens_q has {}: both are batch + 1 long",
                cu_seqlens_k.len(),
                cu_seqlens_q.len()
            ),
        ));
    }
    Ok(cu_seqlens_q
        .windows(2)
        .zip(cu_seqlens_k.windows(2))
        .map(|(q, k)| ((q[1] - q[0]) as usize, (k[1] - k[0]) as usize))
        .collect())
}

/// The longest query and key lengths of a batch.
fn longest(seqlens: &[(usize, usize)]) -> (usize, usize) {
    (
        seqlens.iter().map(|s| s.0).max().unwrap_or(0),
        seqlens.iter().map(|s| s.1).max().unwrap_or(0),
    )
}

impl VarlenBatch {
    /// `cu_seqlens_q`/`cu_seqlens_k`: batch + 1 nondecreasing int32 offsets starting at 0; the
    /// last entries are the packed row counts (total_q, total_k). Launches are sized by the
    /// longest sequences.
    pub fn new(device: &Device, cu_seqlens_q: &[i32], cu_seqlens_k: &[i32]) -> Result<Self> {
        let (max_q, max_k) = longest(&host_seqlens(cu_seqlens_q, cu_seqlens_k)?);
        VarlenBatch::with_bounds(device, cu_seqlens_q, cu_seqlens_k, max_q, max_k)
    }

    /// [`new`](VarlenBatch::new) with launches sized for sequences of up to `max_seqlen_q`
    /// queries and `max_seqlen_k` keys (at least the longest given), so that
    /// [`update`](VarlenBatch::update) may lengthen sequences up to them: the bounds of a batch
    /// a CUDA graph replays on.
    pub fn with_bounds(
        device: &Device,
        cu_seqlens_q: &[i32],
        cu_seqlens_k: &[i32],
        max_seqlen_q: usize,
        max_seqlen_k: usize,
    ) -> Result<Self> {
        let seqlens = host_seqlens(cu_seqlens_q, cu_seqlens_k)?;
        let mut batch = VarlenBatch {
            cu_seqlens_q: Tensor::from_host(device, cu_seqlens_q, &[cu_seqlens_q.len()])?
                .with_label("cu_seqlens_q")?,
            cu_seqlens_k: Tensor::from_host(device, cu_seqlens_k, &[cu_seqlens_k.len()])?
                .with_label("cu_seqlens_k")?,
            seqlens: None,
            total_q: 0,
            total_k: 0,
            max_seqlen_q,
            max_seqlen_k,
        };
        batch.set_seqlens(seqlens)?;
        Ok(batch)
    }

    /// Offsets the device already holds (`[batch + 1]` int32 each, an engine's own buffers: see
    /// [`Tensor::from_cuda_slice`]), with the host-side facts launches are sized and checked by:
    /// the packed row counts and bounds on every sequence's lengths. Nothing is copied or read
    /// back. Block-sparse attention, which needs each sequence's lengths on the host, refuses
    /// such a batch.
    ///
    /// # Safety
    ///
    /// The kernels index q, k, v and out by these offsets without checking them, so until every
    /// launch that uses the batch has run: `cu_seqlens_q` and `cu_seqlens_k` must start at 0, be
    /// nondecreasing, end at `total_q` and `total_k`, and no sequence may have more than
    /// `max_seqlen_q` queries or `max_seqlen_k` keys.
    pub unsafe fn from_device(
        cu_seqlens_q: Tensor<i32>,
        cu_seqlens_k: Tensor<i32>,
        (total_q, total_k): (usize, usize),
        (max_seqlen_q, max_seqlen_k): (usize, usize),
    ) -> Result<Self> {
        let entries = cu_seqlens_q.numel();
        for (arg, t) in [
            ("cu_seqlens_q", &cu_seqlens_q),
            ("cu_seqlens_k", &cu_seqlens_k),
        ] {
            if t.shape().len() != 1 || t.numel() < 2 || t.numel() != entries {
                return Err(Error::invalid(
                    arg,
                    format!(
                        "shape {:?}: both offsets are [batch + 1] with batch >= 1 (cu_seqlens_q \
                         has {entries} entries)",
                        t.shape()
                    ),
                ));
            }
            if t.strides() != [1] {
                return Err(Error::invalid(arg, "the offsets must be contiguous"));
            }
        }
        if !cu_seqlens_k.device().same_memory(cu_seqlens_q.device()) {
            return Err(Error::invalid(
                "cu_seqlens_k",
                "on another device than cu_seqlens_q",
            ));
        }
        if entries - 1 > 65535 {
            return Err(Error::invalid(
                "cu_seqlens_q",
                format!("batch {} exceeds the maximum 65535", entries - 1),
            ));
        }
        let fits = |v: usize| i32::try_from(v).is_ok();
        for (arg, v) in [
            ("total_q", total_q),
            ("total_k", total_k),
            ("max_seqlen_q", max_seqlen_q),
            ("max_seqlen_k", max_seqlen_k),
        ] {
            if !fits(v) {
                return Err(Error::invalid(arg, format!("{v}: must fit int32")));
            }
        }
        Ok(VarlenBatch {
            cu_seqlens_q,
            cu_seqlens_k,
            seqlens: None,
            total_q,
            total_k,
            max_seqlen_q,
            max_seqlen_k,
        })
    }

    /// Rewrites the offsets in place (queued on the batch's stream; nothing allocated): the same
    /// batch size, every sequence within the batch's bounds ([`max_seqlen_q`](Self::max_seqlen_q)
    /// and [`max_seqlen_k`](Self::max_seqlen_k)). Launches captured in a CUDA graph over this
    /// batch read the new offsets when the graph is replayed; the packed row counts may change,
    /// and the tensors a replay runs on must then hold them (a replay checks nothing). On a
    /// refusal nothing changes.
    pub fn update(&mut self, cu_seqlens_q: &[i32], cu_seqlens_k: &[i32]) -> Result<()> {
        let seqlens = host_seqlens(cu_seqlens_q, cu_seqlens_k)?;
        if seqlens.len() != self.batch() {
            return Err(Error::invalid(
                "cu_seqlens_q",
                format!(
                    "{} entries, but the batch holds {} sequences (batch + 1 offsets)",
                    cu_seqlens_q.len(),
                    self.batch()
                ),
            ));
        }
        let (max_q, max_k) = longest(&seqlens);
        for (arg, longest, bound, bound_name) in [
            ("cu_seqlens_q", max_q, self.max_seqlen_q, "max_seqlen_q"),
            ("cu_seqlens_k", max_k, self.max_seqlen_k, "max_seqlen_k"),
        ] {
            if longest > bound {
                return Err(Error::invalid(
                    arg,
                    format!(
                        "a sequence of {longest}, past the batch's {bound_name} = {bound} that \
                         launches are sized by (VarlenBatch::with_bounds sets it)"
                    ),
                ));
            }
        }
        self.cu_seqlens_q.write_buffer_range(0, cu_seqlens_q)?;
        self.cu_seqlens_k.write_buffer_range(0, cu_seqlens_k)?;
        self.seqlens = Some(seqlens);
        self.total_q = *cu_seqlens_q.last().expect("checked: at least 2 entries") as usize;
        self.total_k = *cu_seqlens_k.last().expect("checked: at least 2 entries") as usize;
        Ok(())
    }

    /// Records host lengths made by `host_seqlens`, within the bounds.
    fn set_seqlens(&mut self, seqlens: Vec<(usize, usize)>) -> Result<()> {
        let (max_q, max_k) = longest(&seqlens);
        if max_q > self.max_seqlen_q || max_k > self.max_seqlen_k {
            return Err(Error::invalid(
                "max_seqlen_q",
                format!(
                    "bounds ({}, {}) below the longest sequence's ({max_q}, {max_k}) queries \
                     and keys",
                    self.max_seqlen_q, self.max_seqlen_k
                ),
            ));
        }
        for (arg, v) in [
            ("max_seqlen_q", self.max_seqlen_q),
            ("max_seqlen_k", self.max_seqlen_k),
        ] {
            if i32::try_from(v).is_err() {
                return Err(Error::invalid(arg, format!("{v}: must fit int32")));
            }
        }
        self.total_q = seqlens.iter().map(|s| s.0).sum();
        self.total_k = seqlens.iter().map(|s| s.1).sum();
        self.seqlens = Some(seqlens);
        Ok(())
    }

    /// The number of sequences.
    pub fn batch(&self) -> usize {
        self.cu_seqlens_q.numel() - 1
    }

    /// (seqlen_q, seqlen_k) of each sequence; `None` for a batch
    /// [`from_device`](VarlenBatch::from_device), whose lengths only the device holds.
    pub fn seqlens(&self) -> Option<&[(usize, usize)]> {
        self.seqlens.as_deref()
    }

    /// The packed query rows (the last query offset).
    pub fn total_q(&self) -> usize {
        self.total_q
    }

    /// The packed key rows (the last key offset).
    pub fn total_k(&self) -> usize {
        self.total_k
    }

    /// The bound on every sequence's query count that launches are sized by.
    pub fn max_seqlen_q(&self) -> usize {
        self.max_seqlen_q
    }

    /// The bound on every sequence's key count that launches are sized by.
    pub fn max_seqlen_k(&self) -> usize {
        self.max_seqlen_k
    }

    /// The device offsets of the queries, `[batch + 1]`.
    pub(crate) fn cu_seqlens_q_tensor(&self) -> &Tensor<i32> {
        &self.cu_seqlens_q
    }

    /// The device offsets of the keys, `[batch + 1]`.
    pub(crate) fn cu_seqlens_k_tensor(&self) -> &Tensor<i32> {
        &self.cu_seqlens_k
    }
}

/// Runs `kernel` on dense q [batch, seqlen_q, heads, head_dim], k/v [batch, seqlen_k, kv_heads,
/// head_dim], allocating the outputs.
pub fn attention<T: AttentionElement>(
    kernel: Kernel,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    opts: &AttentionOptions,
) -> Result<AttentionOutput<T>> {
    let (mut out, mut lse) = alloc_outputs(q, None, opts)?;
    attention_into(kernel, q, k, v, &mut out, lse.as_mut(), opts)?;
    Ok(AttentionOutput { out, lse })
}

/// Runs `kernel` writing into caller-provided `out` (shaped like q) and `lse` (float32
/// [batch, heads, seqlen_q], required iff `opts.return_lse`). Both are written through `&mut` and
/// must be their buffers' only handles (see [`Tensor`] on sharing); they are recorded to cudarc as
/// written. Allocates nothing and does not synchronize, so it can be captured in a CUDA graph
/// begun by [`GraphCapture::begin`](crate::GraphCapture::begin) (whose contract keeps the
/// buffers alive; any other capture of the stream is refused): in the capture the call leaves
/// cudarc's per-buffer events alone (a capture may not wait for an event recorded outside it), so
/// ordering the graph's launches with other work on its buffers is the caller's; a tensor on
/// another stream must be in the same capture, or the call fails naming it. Tensors are made
/// before the capture (`Tensor` constructors refuse a capturing stream), and one call of the kind
/// is best made before it too, so that the kernel loads outside the capture.
///
/// An output given as a shared reference does not compile:
///
/// ```compile_fail,E0308
/// use cuattn::{attention_into, AttentionOptions, Device, Kernel, Tensor};
/// use half::f16;
///
/// let device = Device::emulator();
/// let q = Tensor::<f16>::zeros(&device, &[1, 8, 1, 64]).unwrap();
/// let out = Tensor::<f16>::zeros(&device, &[1, 8, 1, 64]).unwrap();
/// let _ = attention_into(Kernel::Naive, &q, &q, &q, &out, None, &AttentionOptions::default());
/// ```
pub fn attention_into<T: AttentionElement>(
    kernel: Kernel,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &mut Tensor<T>,
    lse: Option<&mut Tensor<f32>>,
    opts: &AttentionOptions,
) -> Result<()> {
    let params = validate::dense(q, k, v, out, lse.as_deref(), opts)?;
    validate::alignment(kernel, [q, k, v, out])?;
    launch::run(
        launch::Call::Dense(kernel),
        q.device(),
        params,
        [q, k, v],
        out,
        lse,
        None,
    )
}

/// Variable-length attention: q/out packed [total_q, heads, head_dim], k/v [total_k, kv_heads,
/// head_dim], sequences delimited by `batch`. LSE is [heads, total_q].
pub fn attention_varlen<T: AttentionElement>(
    kernel: Kernel,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    batch: &VarlenBatch,
    opts: &AttentionOptions,
) -> Result<AttentionOutput<T>> {
    let (mut out, mut lse) = alloc_outputs(q, Some(batch), opts)?;
    attention_varlen_into(kernel, q, k, v, batch, &mut out, lse.as_mut(), opts)?;
    Ok(AttentionOutput { out, lse })
}

/// `attention_varlen` into caller-provided outputs; allocates nothing.
#[allow(clippy::too_many_arguments)]
pub fn attention_varlen_into<T: AttentionElement>(
    kernel: Kernel,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    batch: &VarlenBatch,
    out: &mut Tensor<T>,
    lse: Option<&mut Tensor<f32>>,
    opts: &AttentionOptions,
) -> Result<()> {
    let params = validate::varlen(q, k, v, batch, out, lse.as_deref(), opts)?;
    validate::alignment(kernel, [q, k, v, out])?;
    launch::run(
        launch::Call::Dense(kernel),
        q.device(),
        params,
        [q, k, v],
        out,
        lse,
        Some(batch),
    )
}

/// `attention(Kernel::Flash, ...)`: the prefill kernel, for dense q [batch, seqlen_q, heads,
/// head_dim] and k/v [batch, seqlen_k, kv_heads, head_dim]; rows must be 16-byte aligned.
pub fn flash_attention<T: AttentionElement>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    opts: &AttentionOptions,
) -> Result<AttentionOutput<T>> {
    attention(Kernel::Flash, q, k, v, opts)
}

/// `attention_varlen(Kernel::Flash, ...)`: packed variable-length sequences.
pub fn flash_attention_varlen<T: AttentionElement>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    batch: &VarlenBatch,
    opts: &AttentionOptions,
) -> Result<AttentionOutput<T>> {
    attention_varlen(Kernel::Flash, q, k, v, batch, opts)
}

/// `attention(Kernel::Naive, ...)`: the baseline kernel.
pub fn attention_naive<T: AttentionElement>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    opts: &AttentionOptions,
) -> Result<AttentionOutput<T>> {
    attention(Kernel::Naive, q, k, v, opts)
}

pub(crate) fn alloc_outputs<T: Element>(
    q: &Tensor<T>,
    varlen: Option<&VarlenBatch>,
    opts: &AttentionOptions,
) -> Result<(Tensor<T>, Option<Tensor<f32>>)> {
    let out = Tensor::for_overwrite(q.device(), q.shape())?;
    if !opts.return_lse {
        return Ok((out, None));
    }
    let shape = match (varlen, q.shape()) {
        (None, &[b, s, h, _]) => vec![b, h, s],
        (Some(_), &[total, h, _]) => vec![h, total],
        _ => return Err(validate::rank_error("q", q.shape(), varlen.is_some())),
    };
    Ok((out, Some(Tensor::for_overwrite(q.device(), &shape)?)))
}

/// The C-ABI view of the problem, for callers that build params themselves.
pub type AttentionParams = ffi::cuattn_attention_params;

impl AttentionParams {
    /// The params of a dense problem of element type `T` with these shapes (q `[batch, seqlen_q,
    /// heads, head_dim]`, k and v `[batch, seqlen_k, kv_heads, head_dim]`) and options, checked as
    /// [`attention`] checks them; the pointers are null and the strides 0. Enough for
    /// [`flash_plan`]; a caller that launches through the C API fills in the rest.
    pub fn dense_shape<T: AttentionElement>(
        q_shape: &[usize],
        k_shape: &[usize],
        opts: &AttentionOptions,
    ) -> Result<Self> {
        validate::dense_shape::<T>(q_shape, k_shape, opts)
    }
}

/// What a flash launch runs: the tile table and its row ([`flash_plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashPlan {
    /// `Compact` or `Wide`.
    pub tiles: FlashTiles,
    /// The head-dim tile that runs the problem's head dim (64, 96, 128, 192 or 256).
    pub head_dim_tile: usize,
    /// Query rows per CTA.
    pub block_rows: usize,
    /// Keys per K/V tile.
    pub block_keys: usize,
    /// K/V tiles in shared memory at once; 1: one K and one V tile, each loading while the
    /// other is in use (FlashAttention-2's pipeline).
    pub stages: usize,
    /// Threads per CTA.
    pub threads: usize,
    /// Dynamic shared memory per CTA.
    pub smem_bytes: usize,
    /// CTAs along the queries; the grid is (grid_x, heads, batch).
    pub grid_x: usize,
}

/// What a flash launch with `params` runs on `device`, its tile table following
/// `params.flash_tiles` (from [`AttentionOptions::flash_tiles`]): for engines that size or log
/// their launches. Only the shape fields of `params` are read (head_dim, heads, kv_heads, dtype,
/// seqlen_q, the window, flash_tiles); the pointers may be null, as from
/// [`AttentionParams::dense_shape`]. The emulator plans as an sm_90 GPU, which it
/// stands in for.
pub fn flash_plan(device: &Device, params: &AttentionParams) -> Result<FlashPlan> {
    let plan = launch::flash_plan(device, params)?;
    let count = |v: i32| usize::try_from(v).unwrap_or(0);
    Ok(FlashPlan {
        tiles: FlashTiles::from_code(plan.tiles).unwrap_or(FlashTiles::Compact),
        head_dim_tile: count(plan.head_dim_tile),
        block_rows: count(plan.block_rows),
        block_keys: count(plan.block_keys),
        stages: count(plan.stages),
        threads: count(plan.threads),
        smem_bytes: count(plan.smem_bytes),
        grid_x: count(plan.grid_x),
    })
}

/// Whether flash launches on `device` can run the wide tile table (`FlashTiles::Wide`): `Ok` where
/// the build has a head-dim tile over 64 and the device runs cuattn's sm_90a code (an sm_90 GPU
/// not held to the compute_80 PTX by `CUDA_FORCE_PTX_JIT`, or the emulator, which stands in for
/// one); otherwise `Error::Unsupported` saying why.
pub fn flash_wide_tiles(device: &Device) -> Result<()> {
    let Some(tile) = [128, 96, 192, 256]
        .into_iter()
        .find_map(flash_head_dim_tile)
        .filter(|&tile| tile > 64)
    else {
        return Err(Error::Unsupported(
            "this build has no head-dim tile over 64, the tiles with a wide table".into(),
        ));
    };
    let shape = [1, 1, 1, tile];
    let wide = AttentionOptions {
        flash_tiles: FlashTiles::Wide,
        ..Default::default()
    };
    let params = AttentionParams::dense_shape::<half::bf16>(&shape, &shape, &wide)?;
    flash_plan(device, &params).map(|_| ())
}
