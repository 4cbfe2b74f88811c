//! Benchmarks of the attention kernels (`cuattn bench`, `cargo bench`), timed with CUDA events
//! after an L2 flush ([`Timer`]). Four families:
//!
//! - prefill (this module): FlashAttention's benchmark shapes, reported in TFLOP/s of unmasked
//!   score pairs and as a share of the card's mma.sync ceiling, measured in the same run by
//!   `csrc/kernels/bench_mma.cu`;
//! - decode ([`decode`]): paged attention over the paged KV cache, one new token a sequence,
//!   reported in GB/s of KV read and as a share of a device-to-device copy measured in the same
//!   run;
//! - sparse ([`sparse`]): block-sparse attention at 16k tokens against the density of its mask,
//!   in effective TFLOP/s of the pairs the mask leaves and as a share of the dense flash kernel's
//!   time measured in the same run;
//! - linear ([`linear`]): causal linear attention from 1k to 64k tokens against the exact flash
//!   kernel measured in the same run, with fits of its time against the length.
//!
//! On the emulator nothing is a performance number: only a quick run goes there (one tiny shape),
//! to exercise the code paths.

pub mod decode;
pub mod linear;
pub mod sparse;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{sys, CudaSlice, CudaStream};
use half::bf16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::attention::{attention_into, AttentionOptions, FlashTiles, Kernel};
use crate::device::Device;
use crate::error::{check_status, Error, Result};
use crate::ffi;
use crate::tensor::{contiguous_strides, Tensor};

/// Tokens per benchmark batch: batch * seqlen (FlashAttention's benchmark convention).
pub const TOKENS: usize = 16 * 1024;
/// heads * head_dim of the MHA shapes (FlashAttention's convention).
pub const MODEL_DIM: usize = 2048;
/// Sequence lengths of the prefill shapes (seqlen_q == seqlen_k).
pub const SEQLENS: [usize; 6] = [512, 1024, 2048, 4096, 8192, 16384];
/// Head dims of the MHA shapes.
pub const HEAD_DIMS: [usize; 3] = [64, 128, 256];
/// The GQA shapes: (heads, kv_heads, head_dim), Llama-style 32 query heads over 8 KV heads.
pub const GQA: (usize, usize, usize) = (32, 8, 128);
/// Flops of one mma.sync m16n8k16: 2 * M * N * K.
pub const MMA_FLOPS: u64 = 2 * 16 * 8 * 16;
/// What every emulator time is labelled with.
pub const EMULATOR_NOTE: &str = "emulator, not a performance number";
/// The smallest L2 flush, in bytes; larger when twice the card's L2 is larger.
pub const MIN_FLUSH_BYTES: usize = 256 << 20;

/// bench_mma's iterations per warp on a GPU: a power of two, so the accumulators it writes are
/// exact; 9e12 flops per launch on 132 SMs, long enough that launch overhead does not count.
const MMA_GPU_ITERATIONS: i32 = 1 << 16;
/// Timed runs of bench_mma, after two warm-up runs.
const MMA_RUNS: usize = 10;
const MMA_WARMUP: usize = 2;
/// bench_mma on the emulator (to exercise it): one block, two iterations.
const MMA_EMU_BLOCKS: i32 = 1;
const MMA_EMU_ITERATIONS: i32 = 2;
/// What each mma adds to each accumulator in bench_mma (16 products of 1.5 * 2), so that each
/// thread writes 4 accumulators * chains * this * iterations (cuattn.h, "Benchmarks").
const MMA_ADD_PER_MMA: f64 = 48.0;
/// Seed of the random inputs.
const INPUT_SEED: u64 = 0x5eed_be4c;

/// One prefill problem: q of `seqlen` tokens, k and v of `seqlen_k` (the same in the built-in
/// shapes), bf16, no window beyond the causal mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefillShape {
    /// Sequences.
    pub batch: usize,
    /// Query tokens of each sequence (seqlen_q).
    pub seqlen: usize,
    /// Key and value tokens of each sequence.
    pub seqlen_k: usize,
    /// Query heads.
    pub heads: usize,
    /// Key and value heads (a divisor of `heads`).
    pub kv_heads: usize,
    /// Elements of each head's row.
    pub head_dim: usize,
    /// Causal mask, bottom-right aligned when the lengths differ.
    pub causal: bool,
}

impl PrefillShape {
    /// FlashAttention's benchmark shape: batch * seqlen = [`TOKENS`], heads * head_dim =
    /// [`MODEL_DIM`], MHA.
    pub fn mha(seqlen: usize, head_dim: usize, causal: bool) -> PrefillShape {
        PrefillShape {
            batch: (TOKENS / seqlen).max(1),
            seqlen,
            seqlen_k: seqlen,
            heads: MODEL_DIM / head_dim,
            kv_heads: MODEL_DIM / head_dim,
            head_dim,
            causal,
        }
    }

    /// The GQA shape ([`GQA`]) with batch * seqlen = [`TOKENS`].
    pub fn gqa(seqlen: usize, causal: bool) -> PrefillShape {
        let (heads, kv_heads, head_dim) = GQA;
        PrefillShape {
            batch: (TOKENS / seqlen).max(1),
            seqlen,
            seqlen_k: seqlen,
            heads,
            kv_heads,
            head_dim,
            causal,
        }
    }

    /// `b8 s2048 h16/16 d128`: batch, sequence length, heads / KV heads, head dim; `b1 sq100
    /// sk300 h32/8 d128` when the query and key lengths differ.
    pub fn label(&self) -> String {
        let lengths = if self.seqlen == self.seqlen_k {
            format!("s{}", self.seqlen)
        } else {
            format!("sq{} sk{}", self.seqlen, self.seqlen_k)
        };
        format!(
            "b{} {lengths} h{}/{} d{}",
            self.batch, self.heads, self.kv_heads, self.head_dim
        )
    }

    /// The attention options of the shape: its causal mask, nothing else.
    pub fn options(&self) -> AttentionOptions {
        AttentionOptions {
            causal: self.causal,
            ..Default::default()
        }
    }

    /// q and out: [batch, seqlen, heads, head_dim].
    pub fn q_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen, self.heads, self.head_dim]
    }

    /// k and v: [batch, seqlen_k, kv_heads, head_dim].
    pub fn kv_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_k, self.kv_heads, self.head_dim]
    }

    /// (query, key) pairs the mask leaves visible, over every sequence and head.
    pub fn visible_pairs(&self) -> u64 {
        let per_head = visible_pairs(
            self.seqlen,
            self.seqlen_k,
            self.options().effective_window(),
        );
        per_head * (self.batch * self.heads) as u64
    }

    /// Flops counted for throughput: 4 * visible pairs * head_dim (2 for S = Q K^T, 2 for
    /// O = P V); masked pairs count for nothing, so causal is about half of full.
    pub fn flops(&self) -> f64 {
        4.0 * self.visible_pairs() as f64 * self.head_dim as f64
    }
}

impl std::str::FromStr for PrefillShape {
    type Err = Error;

    /// `b,sq,sk,h,hkv,d` (`cuattn bench --shape`), non-causal: six positive integers, `hkv`
    /// dividing `h`, `d` a multiple of 8 up to 256, q and k/v of at most 2^31 elements each.
    /// `Error::InvalidArgument` naming `shape` and the field it refuses.
    fn from_str(s: &str) -> Result<PrefillShape> {
        const FIELDS: [&str; 6] = [
            "batch", "seqlen_q", "seqlen_k", "heads", "kv_heads", "head_dim",
        ];
        let refuse = |why: String| {
            Error::invalid(
                "shape",
                format!("`{s}`: {why} (expected b,sq,sk,h,hkv,d, e.g. 1,4096,4096,32,8,128)"),
            )
        };
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.len() != FIELDS.len() {
            return Err(refuse(format!("{} fields, not 6", parts.len())));
        }
        let mut v = [0usize; 6];
        for ((value, part), field) in v.iter_mut().zip(&parts).zip(FIELDS) {
            *value = match part.parse::<usize>() {
                Ok(n) if n > 0 => n,
                Ok(_) => return Err(refuse(format!("{field} 0: must be at least 1"))),
                Err(_) => return Err(refuse(format!("{field} `{part}` is not a whole number"))),
            };
        }
        let [batch, seqlen, seqlen_k, heads, kv_heads, head_dim] = v;
        if !heads.is_multiple_of(kv_heads) {
            return Err(refuse(format!(
                "kv_heads {kv_heads} does not divide heads {heads} (GQA groups are whole)"
            )));
        }
        if !head_dim.is_multiple_of(8) || head_dim > 256 {
            return Err(refuse(format!(
                "head_dim {head_dim}: must be a multiple of 8 up to 256"
            )));
        }
        // The kernels index with 32-bit element offsets within a tensor.
        let limit = 1usize << 31;
        for (name, dims) in [
            ("q", [batch, seqlen, heads]),
            ("k and v", [batch, seqlen_k, kv_heads]),
        ] {
            let elements = dims
                .iter()
                .try_fold(head_dim, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= limit);
            if elements.is_none() {
                return Err(refuse(format!("{name} would hold more than 2^31 elements")));
            }
        }
        Ok(PrefillShape {
            batch,
            seqlen,
            seqlen_k,
            heads,
            kv_heads,
            head_dim,
            causal: false,
        })
    }
}

/// (query, key) pairs of one sequence and head that the mask leaves visible, with the kernels'
/// rule (bottom-right aligned): query i sees key j iff i + seqlen_k - seqlen_q - left <= j <= i +
/// seqlen_k - seqlen_q + right, a negative bound being unbounded. Exact, one closed-form range
/// per query row.
pub fn visible_pairs(seqlen_q: usize, seqlen_k: usize, (left, right): (i32, i32)) -> u64 {
    let (sq, sk) = (seqlen_q as i64, seqlen_k as i64);
    (0..sq)
        .map(|i| {
            let diagonal = i + sk - sq;
            let first = if left < 0 {
                0
            } else {
                (diagonal - i64::from(left)).max(0)
            };
            let last = if right < 0 {
                sk - 1
            } else {
                (diagonal + i64::from(right)).min(sk - 1)
            };
            (last - first + 1).max(0) as u64
        })
        .sum()
}

/// Every prefill shape of a full run: MHA at each head dim, causal and not, each sequence
/// length; then GQA at each sequence length, causal and not.
pub fn prefill_shapes() -> Vec<PrefillShape> {
    let mut shapes = Vec::new();
    for head_dim in HEAD_DIMS {
        for causal in [false, true] {
            for seqlen in SEQLENS {
                shapes.push(PrefillShape::mha(seqlen, head_dim, causal));
            }
        }
    }
    for causal in [false, true] {
        for seqlen in SEQLENS {
            shapes.push(PrefillShape::gqa(seqlen, causal));
        }
    }
    shapes
}

/// A GPU smoke run (`--quick`): seqlen 2k at head dims 64, 128 and 256 and GQA, causal and not.
pub fn quick_gpu_shapes() -> Vec<PrefillShape> {
    let mut shapes = Vec::new();
    for causal in [false, true] {
        shapes.push(PrefillShape::mha(2048, 64, causal));
        shapes.push(PrefillShape::mha(2048, 128, causal));
        shapes.push(PrefillShape::mha(2048, 256, causal));
        shapes.push(PrefillShape::gqa(2048, causal));
    }
    shapes
}

/// The one tiny shape the emulator runs: two sequences, GQA group 2, causal.
pub fn emulator_shape() -> PrefillShape {
    PrefillShape {
        batch: 2,
        seqlen: 128,
        seqlen_k: 128,
        heads: 2,
        kv_heads: 1,
        head_dim: 64,
        causal: true,
    }
}

/// The shapes `run_prefill` times on `device` with or without `quick`.
pub fn shapes_for(device: &Device, quick: bool) -> Vec<PrefillShape> {
    match (device.is_cuda(), quick) {
        (false, _) => vec![emulator_shape()],
        (true, true) => quick_gpu_shapes(),
        (true, false) => prefill_shapes(),
    }
}

// ---------------------------------------------------------------------------------------------
// Timing.
// ---------------------------------------------------------------------------------------------

/// Times runs on one device: on a GPU each run sits between two CUDA events and follows a flush
/// of the L2 cache (a memset of a buffer at least twice its size, outside the events), so every
/// run starts cold, as a layer's attention does in a model; on the emulator, the wall clock.
pub struct Timer {
    inner: TimerKind,
}

enum TimerKind {
    Cuda {
        stream: Arc<CudaStream>,
        flush: CudaSlice<u8>,
    },
    Emulator,
}

impl Timer {
    /// A timer on `device`; on a GPU it allocates the L2 flush buffer (at least [`MIN_FLUSH_BYTES`], twice the L2 if that is more).
    pub fn new(device: &Device) -> Result<Timer> {
        let inner = match device {
            Device::Cuda(stream) => {
                let l2 = stream
                    .context()
                    .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?;
                let bytes = (2 * l2.max(0) as usize).max(MIN_FLUSH_BYTES);
                TimerKind::Cuda {
                    flush: stream.alloc_zeros::<u8>(bytes)?,
                    stream: stream.clone(),
                }
            }
            Device::Emulator => TimerKind::Emulator,
        };
        Ok(Timer { inner })
    }

    /// Bytes written between runs to flush the L2 (0 on the emulator).
    pub fn flush_bytes(&self) -> usize {
        match &self.inner {
            TimerKind::Cuda { flush, .. } => flush.len(),
            TimerKind::Emulator => 0,
        }
    }

    /// Runs `run` `warmup` times untimed, then `runs` times timed; returns each timed run's
    /// milliseconds. `run` must only enqueue work on the device's stream.
    pub fn time(
        &mut self,
        warmup: usize,
        runs: usize,
        mut run: impl FnMut() -> Result<()>,
    ) -> Result<Vec<f64>> {
        match &mut self.inner {
            TimerKind::Cuda { stream, flush } => {
                let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
                for _ in 0..warmup {
                    stream.memset_zeros(flush)?;
                    run()?;
                }
                let mut events = Vec::with_capacity(runs);
                for _ in 0..runs {
                    stream.memset_zeros(flush)?;
                    let start = stream.record_event(timing)?;
                    run()?;
                    let end = stream.record_event(timing)?;
                    events.push((start, end));
                }
                events
                    .iter()
                    .map(|(start, end)| Ok(f64::from(start.elapsed_ms(end)?)))
                    .collect()
            }
            TimerKind::Emulator => {
                for _ in 0..warmup {
                    run()?;
                }
                (0..runs)
                    .map(|_| {
                        let start = Instant::now();
                        run()?;
                        Ok(start.elapsed().as_secs_f64() * 1e3)
                    })
                    .collect()
            }
        }
    }
}

/// How many runs to time: enough for about `target_ms` of timed work, within [min, max].
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunBudget {
    target_ms: f64,
    min_runs: usize,
    max_runs: usize,
}

impl RunBudget {
    pub(crate) fn new(quick: bool) -> RunBudget {
        if quick {
            RunBudget {
                target_ms: 30.0,
                min_runs: 3,
                max_runs: 10,
            }
        } else {
            RunBudget {
                target_ms: 150.0,
                min_runs: 5,
                max_runs: 100,
            }
        }
    }

    /// (warm-up runs, timed runs) for a run estimated at `estimate_ms`. Short runs warm up
    /// longer (clocks, caches of the launch path); long runs are timed fewer times.
    pub(crate) fn plan(&self, estimate_ms: f64) -> (usize, usize) {
        let warmup = if estimate_ms < 1.0 { 3 } else { 1 };
        let wanted = (self.target_ms / estimate_ms.max(1e-3)).ceil() as usize;
        (warmup, wanted.clamp(self.min_runs, self.max_runs))
    }
}

/// The median of `times` (the mean of the two middle ones for an even count).
pub fn median(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The spread of a set of timed runs, in milliseconds: the fastest, the median and the slowest,
/// which every report gives so that a noisy row shows as one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The fastest run.
    pub min: f64,
    /// The median run ([`median`]).
    pub median: f64,
    /// The slowest run.
    pub max: f64,
}

impl Spread {
    /// The spread of `times` (milliseconds); NaN throughout when there are none.
    pub fn of(times: &[f64]) -> Spread {
        if times.is_empty() {
            return Spread {
                min: f64::NAN,
                median: f64::NAN,
                max: f64::NAN,
            };
        }
        Spread {
            min: times.iter().copied().fold(f64::INFINITY, f64::min),
            median: median(times),
            max: times.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// A table cell of timed runs: the median, then the fastest and slowest runs in brackets
/// (`1.234 [1.201, 1.310]`), each to `decimals` places.
pub fn spread_cell(median: f64, min: f64, max: f64, decimals: usize) -> String {
    format!("{median:.decimals$} [{min:.decimals$}, {max:.decimals$}]")
}

// ---------------------------------------------------------------------------------------------
// The mma.sync ceiling.
// ---------------------------------------------------------------------------------------------

/// What bench_mma measured: the bf16 mma.sync throughput no kernel built on mma.sync can pass.
#[derive(Clone, Copy, Debug)]
pub struct MmaCeiling {
    /// bf16 mma.sync throughput of the median launch, in TFLOP/s (1e12 flops per second).
    pub tflops: f64,
    /// Median milliseconds of one launch.
    pub ms: f64,
    /// The fastest launch, in milliseconds.
    pub min_ms: f64,
    /// The slowest launch, in milliseconds.
    pub max_ms: f64,
    /// Thread blocks of each launch (one full wave on the card).
    pub blocks: i32,
    /// mma.sync iterations of each warp.
    pub iterations: i32,
    /// Flops of one launch ([`bench_mma_flops`]).
    pub flops: f64,
}

/// Threads per block of bench_mma.
const MMA_BLOCK_THREADS: usize = ffi::CUATTN_BENCH_MMA_BLOCK_THREADS as usize;

/// Flops of one bench_mma launch of `blocks` blocks and `iterations` iterations.
pub fn bench_mma_flops(blocks: i32, iterations: i32) -> f64 {
    let warps = blocks as f64 * (MMA_BLOCK_THREADS / 32) as f64;
    let mmas = warps * iterations as f64 * f64::from(ffi::CUATTN_BENCH_MMA_CHAINS);
    mmas * MMA_FLOPS as f64
}

/// What every thread of bench_mma writes after `iterations` iterations (cuattn.h).
pub fn bench_mma_expected(iterations: i32) -> f64 {
    let accumulators = 4.0 * f64::from(ffi::CUATTN_BENCH_MMA_CHAINS);
    accumulators * MMA_ADD_PER_MMA * f64::from(iterations)
}

/// Launches bench_mma on `out`'s device (float [blocks * threads per block]); does not wait.
pub fn launch_bench_mma(out: &mut Tensor<f32>, blocks: i32, iterations: i32) -> Result<()> {
    let needed = blocks.max(0) as usize * MMA_BLOCK_THREADS;
    // The kernel writes `needed` consecutive floats from the view's start: the view must be
    // contiguous (a stride-0 or gapped view's numel says nothing of the memory behind it).
    if out.numel() < needed || out.strides() != contiguous_strides(out.shape()).as_slice() {
        return Err(Error::invalid(
            "out",
            format!(
                "shape {:?}, strides {:?}: bench_mma with {blocks} blocks needs {needed} \
                 contiguous floats",
                out.shape(),
                out.strides()
            ),
        ));
    }
    let device = out.device().clone();
    let (ptr, _guard) = out.kernel_ptr_mut(
        "out",
        &device,
        crate::graph::admitted_capture("out", &device)?.is_some(),
    )?;
    let status = match &device {
        // SAFETY: out is a registered host buffer of at least `needed` floats (checked above),
        // alive for this synchronous call.
        Device::Emulator => unsafe {
            ffi::cuattn_emu_raw_launch_bench_mma(
                ptr.cast(),
                blocks,
                iterations,
                std::ptr::null_mut(),
            )
        },
        Device::Cuda(stream) => cuda_launch_bench_mma(stream, ptr.cast(), blocks, iterations)?,
    };
    check_status(status)
}

#[cfg(cuattn_cuda)]
fn cuda_launch_bench_mma(
    stream: &Arc<CudaStream>,
    out: *mut f32,
    blocks: i32,
    iterations: i32,
) -> Result<ffi::cuattn_status> {
    // The static CUDA runtime behind the launcher uses the current context: make it cudarc's.
    stream.context().bind_to_thread()?;
    // SAFETY: out points to a device buffer of at least blocks * threads floats in this context
    // (checked by the caller), kept alive by the caller's guard until the stream is done with it.
    Ok(unsafe {
        ffi::cuattn_raw_launch_bench_mma(out, blocks, iterations, stream.cu_stream().cast())
    })
}

#[cfg(not(cuattn_cuda))]
fn cuda_launch_bench_mma(
    _stream: &Arc<CudaStream>,
    _out: *mut f32,
    _blocks: i32,
    _iterations: i32,
) -> Result<ffi::cuattn_status> {
    Err(Error::Unsupported(
        "bench_mma on a GPU: this build of cuattn has no CUDA kernels (nvcc was not found when \
         it was built; see scripts/install-cuda-toolchain.sh)"
            .into(),
    ))
}

/// Measures the mma.sync ceiling: bench_mma over `blocks per SM` * SMs blocks (one full wave),
/// median of several launches; then checks every thread wrote the value that proves all its
/// mmas ran. On the emulator one tiny launch, once.
pub fn measure_mma_ceiling(device: &Device, timer: &mut Timer) -> Result<MmaCeiling> {
    let (blocks, iterations, warmup, runs) = match device {
        Device::Cuda(stream) => {
            let sms = stream
                .context()
                .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
            let blocks = sms * ffi::CUATTN_BENCH_MMA_BLOCKS_PER_SM as i32;
            (blocks, MMA_GPU_ITERATIONS, MMA_WARMUP, MMA_RUNS)
        }
        Device::Emulator => (MMA_EMU_BLOCKS, MMA_EMU_ITERATIONS, 0, 1),
    };
    let mut out = Tensor::<f32>::full(device, &[blocks as usize * MMA_BLOCK_THREADS], f32::NAN)?;
    let times = timer.time(warmup, runs, || {
        launch_bench_mma(&mut out, blocks, iterations)
    })?;
    let expected = bench_mma_expected(iterations);
    let written = out.to_host()?;
    if let Some((thread, value)) = written
        .iter()
        .enumerate()
        .find(|(_, &v)| v.is_nan() || (f64::from(v) - expected).abs() > 1e-6 * expected)
    {
        return Err(Error::Internal(format!(
            "bench_mma: thread {thread} wrote {value}, expected {expected}: not every mma ran, \
             so the ceiling would be wrong"
        )));
    }
    let spread = Spread::of(&times);
    let flops = bench_mma_flops(blocks, iterations);
    Ok(MmaCeiling {
        tflops: flops / (spread.median * 1e-3) / 1e12,
        ms: spread.median,
        min_ms: spread.min,
        max_ms: spread.max,
        blocks,
        iterations,
        flops,
    })
}

// ---------------------------------------------------------------------------------------------
// Prefill.
// ---------------------------------------------------------------------------------------------

/// Random bf16 q, k and v, sized for the largest of a set of shapes; each shape runs on
/// contiguous views of their beginnings, so one upload serves every shape.
pub struct PrefillInputs {
    q: Tensor<bf16>,
    k: Tensor<bf16>,
    v: Tensor<bf16>,
}

impl PrefillInputs {
    /// Random q, k, v (seeded, uniform in [-1, 1)) and a zeroed output on `device`, long enough for the largest of `shapes`.
    pub fn new(device: &Device, shapes: &[PrefillShape]) -> Result<PrefillInputs> {
        let q_len = shapes.iter().map(|s| s.q_shape().iter().product()).max();
        let kv_len = shapes.iter().map(|s| s.kv_shape().iter().product()).max();
        let (q_len, kv_len): (usize, usize) = (q_len.unwrap_or(0), kv_len.unwrap_or(0));
        let mut rng = StdRng::seed_from_u64(INPUT_SEED);
        let mut random = |len: usize| -> Result<Tensor<bf16>> {
            let data: Vec<bf16> = (0..len)
                .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)))
                .collect();
            Tensor::from_host(device, &data, &[len])
        };
        Ok(PrefillInputs {
            q: random(q_len)?,
            k: random(kv_len)?,
            v: random(kv_len)?,
        })
    }

    /// q, k, v viewed as `shape`, and an output of its own for them (a tensor a call writes is
    /// its buffer's only handle).
    pub fn views(&self, shape: &PrefillShape) -> Result<[Tensor<bf16>; 4]> {
        let view =
            |t: &Tensor<bf16>, dims: [usize; 4]| t.view(0, &dims, &contiguous_strides(&dims));
        Ok([
            view(&self.q, shape.q_shape())?,
            view(&self.k, shape.kv_shape())?,
            view(&self.v, shape.kv_shape())?,
            Tensor::zeros(self.q.device(), &shape.q_shape())?,
        ])
    }
}

/// Launches `kernel` once on views made by [`PrefillInputs::views`] (flash in the tile table
/// `flash_tiles`); does not wait.
pub fn launch_prefill(
    kernel: Kernel,
    [q, k, v, out]: &mut [Tensor<bf16>; 4],
    shape: &PrefillShape,
    softcap: Option<f32>,
    flash_tiles: FlashTiles,
) -> Result<()> {
    let options = AttentionOptions {
        softcap,
        flash_tiles,
        ..shape.options()
    };
    attention_into(kernel, q, k, v, out, None, &options)
}

/// One kernel on one shape.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// The kernel's name.
    pub kernel: &'static str,
    /// The problem.
    pub shape: PrefillShape,
    /// Median milliseconds of the timed runs (NaN after an error).
    pub ms: f64,
    /// The fastest timed run, in milliseconds (NaN after an error).
    pub min_ms: f64,
    /// The slowest timed run, in milliseconds (NaN after an error).
    pub max_ms: f64,
    /// Timed runs.
    pub runs: usize,
    /// TFLOP/s of the median run, counting 4 * head_dim flops per visible (query, key) pair.
    pub tflops: f64,
    /// `tflops` as a percentage of the mma.sync ceiling.
    pub pct_of_ceiling: f64,
    /// Why the kernel could not run this shape.
    pub error: Option<String>,
}

/// What to benchmark.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Kernels to time, each on every shape.
    pub kernels: Vec<Kernel>,
    /// GPU: a few shapes, fewer runs. Emulator: required; one tiny shape once per kernel.
    pub quick: bool,
    /// The commit benchmarked, recorded in the report (the CLI takes it from `CUATTN_COMMIT`).
    pub commit: Option<String>,
    /// Only the shapes of these head dims; empty: every shape.
    pub head_dims: Vec<usize>,
    /// The flash kernel's tile table for the run (set on the calling thread, restored after).
    pub flash_tiles: FlashTiles,
    /// A soft cap on every shape's scores (Gemma 2 caps at 50); `None`: none, the benchmark's
    /// convention.
    pub softcap: Option<f32>,
    /// The shapes to time (a model's own), in place of [`shapes_for`]'s; empty: those.
    pub shapes: Vec<PrefillShape>,
    /// Only the causal shapes.
    pub causal_only: bool,
}

/// A whole benchmark run.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// The benchmark family: `prefill`.
    pub family: &'static str,
    /// The device's name.
    pub device: String,
    /// Whether it ran on the emulator (no performance numbers).
    pub emulator: bool,
    /// Whether it was a quick run (fewer shapes and runs).
    pub quick: bool,
    /// The commit benchmarked, when given.
    pub commit: Option<String>,
    /// The flash tile table the run forced, or `auto`.
    pub flash_tiles: FlashTiles,
    /// The soft cap on every shape's scores, when one was set.
    pub softcap: Option<f32>,
    /// The mma.sync ceiling measured first.
    pub ceiling: MmaCeiling,
    /// Bytes of the buffer cleared before each timed run to flush the L2 (0 on the emulator).
    pub l2_flush_bytes: usize,
    /// One row per kernel and shape, in the order run.
    pub rows: Vec<BenchRow>,
}

/// The prefill benchmark on `device`: the mma ceiling first, then every kernel on every shape of
/// [`shapes_for`]. Calls `progress` with the report so far after the ceiling and after each row
/// (for tables printed as they go and files that survive a timeout). A kernel that cannot run a
/// shape gives a row with its error; the run goes on. On the emulator it refuses to run unless
/// `config.quick`.
pub fn run_prefill(
    device: &Device,
    config: &BenchConfig,
    mut progress: impl FnMut(&BenchReport),
) -> Result<BenchReport> {
    if !device.is_cuda() && !config.quick {
        return Err(Error::invalid(
            "device",
            "the emulator: its times are no performance numbers, so the prefill benchmark needs \
             a GPU (--device gpu); with --quick it runs one tiny shape once per kernel on the \
             emulator, only to exercise the code",
        ));
    }
    if config.kernels.is_empty() {
        return Err(Error::invalid("kernels", "empty: name at least one kernel"));
    }
    if let Some(cap) = config.softcap {
        if !(cap.is_finite() && cap > 0.0) {
            return Err(Error::invalid(
                "softcap",
                format!("{cap}: must be finite and > 0 (leave it out for no cap)"),
            ));
        }
    }
    let shapes = select_shapes(device, config)?;
    let mut timer = Timer::new(device)?;
    let ceiling = measure_mma_ceiling(device, &mut timer)?;
    let mut report = BenchReport {
        family: "prefill",
        device: device.name(),
        emulator: !device.is_cuda(),
        quick: config.quick,
        commit: config.commit.clone(),
        flash_tiles: config.flash_tiles,
        softcap: config.softcap,
        ceiling,
        l2_flush_bytes: timer.flush_bytes(),
        rows: Vec::new(),
    };
    progress(&report);
    let inputs = PrefillInputs::new(device, &shapes)?;
    let budget = RunBudget::new(config.quick);
    for &kernel in &config.kernels {
        for shape in &shapes {
            let row = match time_prefill(&mut timer, &inputs, kernel, shape, config, device, budget)
            {
                Ok(times) => BenchRow::new(kernel, *shape, &times, &ceiling),
                Err(e) => BenchRow::failed(kernel, *shape, e),
            };
            report.rows.push(row);
            progress(&report);
        }
    }
    Ok(report)
}

/// The shapes [`run_prefill`] times on `device`: `config.shapes` when given, else those of
/// [`shapes_for`]; then those of `config.head_dims` (when given) and the causal ones (with
/// `config.causal_only`). `Error::InvalidArgument` naming the setting that leaves none.
pub fn select_shapes(device: &Device, config: &BenchConfig) -> Result<Vec<PrefillShape>> {
    let mut shapes = if config.shapes.is_empty() {
        shapes_for(device, config.quick)
    } else {
        config.shapes.clone()
    };
    if !config.head_dims.is_empty() {
        let run_dims: std::collections::BTreeSet<usize> =
            shapes.iter().map(|shape| shape.head_dim).collect();
        shapes.retain(|shape| config.head_dims.contains(&shape.head_dim));
        if shapes.is_empty() {
            return Err(Error::invalid(
                "head_dims",
                format!(
                    "{:?} selects none of this run's shapes (head dims {run_dims:?})",
                    config.head_dims
                ),
            ));
        }
    }
    if config.causal_only {
        shapes.retain(|shape| shape.causal);
        if shapes.is_empty() {
            return Err(Error::invalid(
                "causal_only",
                "none of this run's shapes is causal",
            ));
        }
    }
    Ok(shapes)
}

/// Milliseconds of each timed run of `kernel` on `shape`. On a GPU an untimed first run (module
/// loading, shared-memory attributes) and a timed second one, which sets the warm-up and run
/// counts; on the emulator one run.
fn time_prefill(
    timer: &mut Timer,
    inputs: &PrefillInputs,
    kernel: Kernel,
    shape: &PrefillShape,
    config: &BenchConfig,
    device: &Device,
    budget: RunBudget,
) -> Result<Vec<f64>> {
    let mut views = inputs.views(shape)?;
    let mut run = || {
        launch_prefill(
            kernel,
            &mut views,
            shape,
            config.softcap,
            config.flash_tiles,
        )
    };
    if !device.is_cuda() {
        return timer.time(0, 1, run);
    }
    let estimate = timer.time(1, 1, &mut run)?[0];
    let (warmup, runs) = budget.plan(estimate);
    timer.time(warmup, runs, run)
}

impl BenchRow {
    fn new(kernel: Kernel, shape: PrefillShape, times: &[f64], ceiling: &MmaCeiling) -> BenchRow {
        let spread = Spread::of(times);
        let tflops = shape.flops() / (spread.median * 1e-3) / 1e12;
        BenchRow {
            kernel: kernel.name(),
            shape,
            ms: spread.median,
            min_ms: spread.min,
            max_ms: spread.max,
            runs: times.len(),
            tflops,
            pct_of_ceiling: 100.0 * tflops / ceiling.tflops,
            error: None,
        }
    }

    fn failed(kernel: Kernel, shape: PrefillShape, error: Error) -> BenchRow {
        BenchRow {
            kernel: kernel.name(),
            shape,
            ms: f64::NAN,
            min_ms: f64::NAN,
            max_ms: f64::NAN,
            runs: 0,
            tflops: f64::NAN,
            pct_of_ceiling: f64::NAN,
            error: Some(error.to_string()),
        }
    }

    fn json(&self) -> BenchRowJson<'_> {
        let s = &self.shape;
        BenchRowJson {
            kernel: self.kernel,
            shape: PrefillShapeJson::of(s),
            visible_pairs: s.visible_pairs(),
            flops: s.flops(),
            ms: self.ms,
            min_ms: self.min_ms,
            max_ms: self.max_ms,
            runs: self.runs,
            tflops: self.tflops,
            pct_of_mma_ceiling: self.pct_of_ceiling,
            error: self.error.as_deref(),
        }
    }
}

/// A [`PrefillShape`] in a row's JSON, flattened into it: its label, its dimensions (bf16).
#[derive(Serialize)]
pub(crate) struct PrefillShapeJson {
    shape: String,
    batch: usize,
    seqlen_q: usize,
    seqlen_k: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal: bool,
    dtype: &'static str,
}

impl PrefillShapeJson {
    pub(crate) fn of(s: &PrefillShape) -> PrefillShapeJson {
        PrefillShapeJson {
            shape: s.label(),
            batch: s.batch,
            seqlen_q: s.seqlen,
            seqlen_k: s.seqlen_k,
            heads: s.heads,
            kv_heads: s.kv_heads,
            head_dim: s.head_dim,
            causal: s.causal,
            dtype: "bf16",
        }
    }
}

/// The fields every benchmark report's JSON starts with: the family, the device, whether it is the
/// emulator (and the note saying its times are no performance numbers), `--quick`, the commit.
#[derive(Serialize)]
pub(crate) struct ReportHeadJson<'a> {
    family: &'a str,
    device: &'a str,
    emulator: bool,
    note: Option<&'static str>,
    quick: bool,
    commit: Option<&'a str>,
}

impl<'a> ReportHeadJson<'a> {
    pub(crate) fn new(
        family: &'a str,
        device: &'a str,
        emulator: bool,
        quick: bool,
        commit: Option<&'a str>,
    ) -> ReportHeadJson<'a> {
        ReportHeadJson {
            family,
            device,
            emulator,
            note: emulator.then_some(EMULATOR_NOTE),
            quick,
            commit,
        }
    }
}

/// A [`BenchRow`] in the report's JSON.
#[derive(Serialize)]
struct BenchRowJson<'a> {
    kernel: &'a str,
    #[serde(flatten)]
    shape: PrefillShapeJson,
    visible_pairs: u64,
    flops: f64,
    ms: f64,
    min_ms: f64,
    max_ms: f64,
    runs: usize,
    tflops: f64,
    pct_of_mma_ceiling: f64,
    error: Option<&'a str>,
}

/// The table's column titles, aligned with [`BenchRow`]'s `Display`.
pub fn table_header() -> String {
    format!(
        "{:<12} {:<24} {:<6} {:>26} {:>9} {:>7}",
        "kernel", "shape", "causal", "ms [min, max]", "TFLOP/s", "% mma"
    )
}

impl fmt::Display for BenchRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let causal = if self.shape.causal { "yes" } else { "no" };
        write!(
            f,
            "{:<12} {:<24} {:<6} ",
            self.kernel,
            self.shape.label(),
            causal
        )?;
        match &self.error {
            Some(e) => write!(f, "error: {e}"),
            None => write!(
                f,
                "{:>26} {:>9.1} {:>6.1}%",
                spread_cell(self.ms, self.min_ms, self.max_ms, 3),
                self.tflops,
                self.pct_of_ceiling
            ),
        }
    }
}

impl fmt::Display for MmaCeiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mma.sync bf16 ceiling: {:.1} TFLOP/s ({} blocks x {} threads, {} iterations of {} \
             chains, {} ms)",
            self.tflops,
            self.blocks,
            MMA_BLOCK_THREADS,
            self.iterations,
            ffi::CUATTN_BENCH_MMA_CHAINS,
            spread_cell(self.ms, self.min_ms, self.max_ms, 3)
        )
    }
}

impl BenchReport {
    /// One JSON object: device, commit, the ceiling, and one object per row.
    pub fn to_json(&self) -> String {
        let c = &self.ceiling;
        crate::json::to_pretty(&BenchReportJson {
            head: ReportHeadJson::new(
                self.family,
                &self.device,
                self.emulator,
                self.quick,
                self.commit.as_deref(),
            ),
            flash_tiles: self.flash_tiles.name(),
            softcap: self.softcap,
            dtype: "bf16",
            l2_flush_bytes: self.l2_flush_bytes,
            mma_ceiling: MmaCeilingJson {
                tflops: c.tflops,
                ms: c.ms,
                min_ms: c.min_ms,
                max_ms: c.max_ms,
                blocks: c.blocks,
                threads_per_block: MMA_BLOCK_THREADS,
                iterations: c.iterations,
                chains: ffi::CUATTN_BENCH_MMA_CHAINS,
                flops: c.flops,
            },
            rows: self.rows.iter().map(BenchRow::json).collect(),
        })
    }
}

/// A [`BenchReport`] in JSON.
#[derive(Serialize)]
struct BenchReportJson<'a> {
    #[serde(flatten)]
    head: ReportHeadJson<'a>,
    flash_tiles: &'static str,
    softcap: Option<f32>,
    dtype: &'static str,
    l2_flush_bytes: usize,
    mma_ceiling: MmaCeilingJson,
    rows: Vec<BenchRowJson<'a>>,
}

/// An [`MmaCeiling`] in JSON.
#[derive(Serialize)]
struct MmaCeilingJson {
    tflops: f64,
    ms: f64,
    min_ms: f64,
    max_ms: f64,
    blocks: i32,
    threads_per_block: usize,
    iterations: i32,
    chains: u32,
    flops: f64,
}
