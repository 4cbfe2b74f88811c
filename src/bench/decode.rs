//! The decode benchmark (`cuattn bench --family decode`): paged attention over the paged KV cache,
//! one new token a sequence, as an engine's decode step runs it, reported in GB/s of KV read and
//! as a share of a device-to-device copy timed in the same run.
//!
//! Shapes: batch 1, 8, 64, 256 x context 1k, 8k, 64k x 32 query heads over 32, 8, 4 and 1 KV
//! heads (group sizes 1, 4, 8 and MQA), head dim 128, bf16, pages of 16 tokens in the `Nhd`
//! layout, each shape with split-KV chosen by the planner ([`SplitKv::Auto`]) and with none
//! ([`SplitKv::Off`]). Shapes whose KV exceeds the run's budget (at most [`KV_BUDGET_BYTES`]) get a
//! row that says they were skipped and why.
//!
//! Each shape gets its own one-layer cache whose free list is shuffled first, so that a
//! sequence's pages are scattered over the pool as in a long-running engine. Its `context - 1`
//! prompt tokens go in through the append kernel in steps of a few million elements (random
//! data, one upload reused for every step), then one decode step reserves and appends the new
//! token of every sequence; that step is the one timed. The plan (split, workspace) is made
//! before the timed runs, which time [`paged_attention_into`] alone, each after an L2 flush.
//!
//! Bytes: a row's KV bytes are what the step must read, every visible token's K and V of every KV
//! head: `batch * context * kv_heads * head_dim * 2 (K and V) * 2 (bytes of bf16)`. Left out: the
//! query and the output (3% of the KV for MQA at 1k tokens, far less elsewhere), the page tables,
//! and split-KV's partial results.
//!
//! The ceiling: a device-to-device copy (`cuMemcpyDtoDAsync`) of [`COPY_BYTES`] (at least four
//! times the L2) of random bytes, timed with the same [`Timer`]. A copy of N bytes reads N bytes
//! and writes N; the report gives both its rate of bytes read and its rate of bytes read plus
//! written, and a row's "% of copy" is its KV GB/s over the copy's bytes read plus written.
//! Decode's memory traffic is nearly all reads, so what the memory system delivered to the copy,
//! reads and writes together, is what it can deliver to decode; measured against the copy's bytes
//! read alone, every percentage would double, and a kernel reading at half the card's bandwidth
//! would show 100%.

use std::fmt;

use half::bf16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{spread_cell, ReportHeadJson, RunBudget, Spread, Timer, INPUT_SEED};
use crate::attention::{
    paged_attention_into, AttentionOptions, PagedAttentionPlan, PagedPlanInfo, PagedShape, SplitKv,
};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::kv_cache::{KvCacheConfig, KvLayout, PagedKvCache, SeqId, StepPlan};
use crate::tensor::{contiguous_strides, DType, Tensor};

/// Sequences per step of the full grid.
pub const BATCHES: [usize; 4] = [1, 8, 64, 256];
/// Tokens in each sequence's cache (the new one included) of the full grid.
pub const CONTEXTS: [usize; 3] = [1024, 8192, 64 * 1024];
/// (query heads, KV heads) of the full grid: group sizes 1, 4, 8 and MQA.
pub const HEAD_GROUPS: [(usize, usize); 4] = [(32, 32), (32, 8), (32, 4), (32, 1)];
/// Head dim of the GPU shapes.
pub const HEAD_DIM: usize = 128;
/// Tokens per page of every shape.
pub const PAGE_SIZE: usize = 16;
/// Each shape runs with these splits.
pub const SPLITS: [SplitKv; 2] = [SplitKv::Auto, SplitKv::Off];
/// The most KV bytes a shape may have: 40 GiB, which leaves an 80 GiB card room for the rest of
/// the run. Beyond it the full grid skips b256 at 64k with group 1 and 4, and b64 at 64k with
/// group 1; a card with less free memory skips more (see [`DecodeReport::kv_budget_bytes`]).
pub const KV_BUDGET_BYTES: u64 = 40 << 30;
/// Share of the device memory free when the grid starts that a shape's KV may take (percent).
const FREE_MEMORY_PCT: u64 = 85;
/// Bytes the GPU copy ceiling copies (more when four times the L2 is more).
pub const COPY_BYTES: usize = 2 << 30;
/// Bytes of the random block the GPU copy's source is filled from, and of its check.
const COPY_BLOCK_BYTES: usize = 16 << 20;
/// Bytes the emulator's copy moves (a host memcpy; no performance number).
const EMULATOR_COPY_BYTES: usize = 1 << 20;
/// Timed runs of the copy, after warm-up runs.
const COPY_RUNS: usize = 10;
const COPY_WARMUP: usize = 2;
/// Elements of each of the random K and V blocks the prompt is appended from, a step at a time.
const FILL_CHUNK_ELEMS: usize = 16 << 20;
/// Seed of the free-list shuffle.
const PAGE_SHUFFLE_SEED: u64 = 0x9a6e5;

/// One decode problem: `batch` sequences of `context` cached tokens each (the new one included),
/// one new token a sequence, over a paged cache of `page_size`-token pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecodeShape {
    /// Sequences of the step.
    pub batch: usize,
    /// Cached tokens of each sequence, the new one included.
    pub context: usize,
    /// Query heads.
    pub heads: usize,
    /// Key and value heads: a divisor of `heads`.
    pub kv_heads: usize,
    /// Elements of each head's vector.
    pub head_dim: usize,
    /// Tokens of each page of the cache.
    pub page_size: usize,
}

impl DecodeShape {
    /// A GPU grid shape: head dim [`HEAD_DIM`], pages of [`PAGE_SIZE`].
    pub fn new(batch: usize, context: usize, (heads, kv_heads): (usize, usize)) -> DecodeShape {
        DecodeShape {
            batch,
            context,
            heads,
            kv_heads,
            head_dim: HEAD_DIM,
            page_size: PAGE_SIZE,
        }
    }

    /// `b64 ctx8k h32/8 d128`: batch, context (k = 1024 tokens), heads / KV heads, head dim.
    pub fn label(&self) -> String {
        format!(
            "b{} ctx{} h{}/{} d{}",
            self.batch,
            context_label(self.context),
            self.heads,
            self.kv_heads,
            self.head_dim
        )
    }

    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// The KV bytes the step reads: every cached token's K and V of every KV head, bf16.
    pub fn kv_bytes(&self) -> u64 {
        let elems =
            self.batch as u64 * self.context as u64 * (self.kv_heads * self.head_dim) as u64;
        elems * 2 * std::mem::size_of::<bf16>() as u64
    }

    /// Elements of one token's K (or V): kv_heads * head_dim.
    fn row(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Pages each sequence holds.
    pub fn pages_per_seq(&self) -> usize {
        self.context.div_ceil(self.page_size)
    }

    /// The shape [`PagedAttentionPlan::plan`] sees for the step.
    pub fn paged_shape(&self) -> PagedShape {
        PagedShape {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            batch: self.batch,
            total_q: self.batch,
            max_q_len: 1,
            max_seq_len: self.context,
            kv_start: 0,
            window_left: None,
        }
    }
}

/// `8k` for 8192 tokens, the number itself when it is no multiple of 1024.
fn context_label(context: usize) -> String {
    if context >= 1024 && context.is_multiple_of(1024) {
        format!("{}k", context / 1024)
    } else {
        context.to_string()
    }
}

/// `auto`, `off` or the number of splits asked.
pub fn split_name(split: SplitKv) -> String {
    match split {
        SplitKv::Auto => "auto".into(),
        SplitKv::Off => "off".into(),
        SplitKv::Splits(n) => n.to_string(),
    }
}

/// Every shape of a full run: for each batch, each context, each head group.
pub fn decode_shapes() -> Vec<DecodeShape> {
    let mut shapes = Vec::new();
    for batch in BATCHES {
        for context in CONTEXTS {
            for group in HEAD_GROUPS {
                shapes.push(DecodeShape::new(batch, context, group));
            }
        }
    }
    shapes
}

/// A GPU smoke run (`--quick`): the two targets' shapes ([`TARGETS`]), batch 8 at 8k, and MQA at
/// batch 64 and 8k.
pub fn quick_gpu_shapes() -> Vec<DecodeShape> {
    vec![
        DecodeShape::new(1, 64 * 1024, (32, 8)),
        DecodeShape::new(8, 8192, (32, 8)),
        DecodeShape::new(64, 8192, (32, 8)),
        DecodeShape::new(64, 8192, (32, 1)),
    ]
}

/// The one tiny shape the emulator runs: two sequences of 520 tokens (the last page part full),
/// group 2, head dim 64. 520 keys are enough for the planner to split them in two (at least 256
/// keys a split), so that both the split path and the unsplit one run.
pub fn emulator_shape() -> DecodeShape {
    DecodeShape {
        batch: 2,
        context: 520,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
        page_size: PAGE_SIZE,
    }
}

/// The shapes [`run_decode`] times on `device` with or without `quick`.
pub fn shapes_for(device: &Device, quick: bool) -> Vec<DecodeShape> {
    match (device.is_cuda(), quick) {
        (false, _) => vec![emulator_shape()],
        (true, true) => quick_gpu_shapes(),
        (true, false) => decode_shapes(),
    }
}

/// A performance target of the decode kernel: a row's share of the copy ceiling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeTarget {
    /// The shape it is judged on.
    pub shape: DecodeShape,
    /// The split-KV setting it is judged with.
    pub split: SplitKv,
    /// The least "% of copy" that meets it.
    pub min_pct_of_copy: f64,
}

/// The targets (set for an H200): 90% of the copy at batch 64, 8k, 32/8 (no split needed: the
/// grid fills the card), and 85% at batch 1, 64k, 32/8, which needs split-KV to use the card.
pub const TARGETS: [DecodeTarget; 2] = [
    DecodeTarget {
        shape: DecodeShape {
            batch: 64,
            context: 8192,
            heads: 32,
            kv_heads: 8,
            head_dim: HEAD_DIM,
            page_size: PAGE_SIZE,
        },
        split: SplitKv::Auto,
        min_pct_of_copy: 90.0,
    },
    DecodeTarget {
        shape: DecodeShape {
            batch: 1,
            context: 64 * 1024,
            heads: 32,
            kv_heads: 8,
            head_dim: HEAD_DIM,
            page_size: PAGE_SIZE,
        },
        split: SplitKv::Auto,
        min_pct_of_copy: 85.0,
    },
];

// ---------------------------------------------------------------------------------------------
// The copy ceiling.
// ---------------------------------------------------------------------------------------------

/// What the device-to-device copy measured.
#[derive(Clone, Copy, Debug)]
pub struct CopyCeiling {
    /// Bytes copied by one run (each read once and written once).
    pub bytes: usize,
    /// Median milliseconds of one copy.
    pub ms: f64,
    /// The fastest copy, in milliseconds.
    pub min_ms: f64,
    /// The slowest copy, in milliseconds.
    pub max_ms: f64,
    /// Timed copies.
    pub runs: usize,
    /// `bytes / ms`: the rate of bytes read.
    pub read_gbps: f64,
    /// `2 * bytes / ms`: bytes read plus written, what a row's "% of copy" divides by.
    pub read_written_gbps: f64,
}

impl CopyCeiling {
    fn new(bytes: usize, times: &[f64]) -> CopyCeiling {
        let spread = Spread::of(times);
        let read_gbps = bytes as f64 / (spread.median * 1e-3) / 1e9;
        CopyCeiling {
            bytes,
            ms: spread.median,
            min_ms: spread.min,
            max_ms: spread.max,
            runs: times.len(),
            read_gbps,
            read_written_gbps: 2.0 * read_gbps,
        }
    }
}

/// Times the copy ceiling: on a GPU, `cuMemcpyDtoDAsync` of [`COPY_BYTES`] (or four times the L2,
/// whichever is more) of random bytes between two buffers, the median of several runs, each
/// after the timer's L2 flush; then checks the copy's first block arrived. On the emulator, one
/// host memcpy of a megabyte (no performance number). The buffers are freed on return.
pub fn measure_copy_ceiling(device: &Device, timer: &mut Timer) -> Result<CopyCeiling> {
    let mut rng = StdRng::seed_from_u64(INPUT_SEED);
    match device {
        Device::Cuda(stream) => {
            use cudarc::driver::sys::CUdevice_attribute;
            let l2 = stream
                .context()
                .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?;
            let wanted = COPY_BYTES.max(4 * l2.max(0) as usize);
            let bytes = wanted.div_ceil(COPY_BLOCK_BYTES) * COPY_BLOCK_BYTES;
            let block: Vec<u8> = (0..COPY_BLOCK_BYTES).map(|_| rng.random()).collect();
            let block_dev = stream.clone_htod(&block)?;
            let mut src = stream.alloc_zeros::<u8>(bytes)?;
            for start in (0..bytes).step_by(COPY_BLOCK_BYTES) {
                stream.memcpy_dtod(
                    &block_dev,
                    &mut src.slice_mut(start..start + COPY_BLOCK_BYTES),
                )?;
            }
            let mut dst = stream.alloc_zeros::<u8>(bytes)?;
            let times = timer.time(COPY_WARMUP, COPY_RUNS, || {
                stream.memcpy_dtod(&src, &mut dst)?;
                Ok(())
            })?;
            let arrived = stream.clone_dtoh(&dst.slice(0..COPY_BLOCK_BYTES))?;
            if arrived != block {
                return Err(Error::Internal(
                    "the copy ceiling's destination does not hold its source: the copy did not \
                     run, so its rate would be wrong"
                        .into(),
                ));
            }
            Ok(CopyCeiling::new(bytes, &times))
        }
        Device::Emulator => {
            let src: Vec<u8> = (0..EMULATOR_COPY_BYTES).map(|_| rng.random()).collect();
            let mut dst = vec![0u8; EMULATOR_COPY_BYTES];
            let times = timer.time(0, 1, || {
                dst.copy_from_slice(&src);
                Ok(())
            })?;
            if dst != src {
                return Err(Error::Internal(
                    "the emulator's copy ceiling: the destination does not hold the source".into(),
                ));
            }
            Ok(CopyCeiling::new(EMULATOR_COPY_BYTES, &times))
        }
    }
}

/// The most KV bytes a shape may have on `device`: [`KV_BUDGET_BYTES`], or on a GPU
/// [`FREE_MEMORY_PCT`]% of the memory free now if less.
fn kv_budget(device: &Device) -> Result<u64> {
    match device {
        Device::Emulator => Ok(KV_BUDGET_BYTES),
        Device::Cuda(stream) => {
            stream.synchronize()?;
            let (free, _total) = stream.context().mem_get_info()?;
            Ok(KV_BUDGET_BYTES.min(free as u64 / 100 * FREE_MEMORY_PCT))
        }
    }
}

/// `40.0 GiB`, or `1.0 MiB` under a GiB.
pub fn bytes_label(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

// ---------------------------------------------------------------------------------------------
// The problems.
// ---------------------------------------------------------------------------------------------

/// Random bf16 blocks uploaded once: K and V rows the prompts are appended from a step at a
/// time, and the queries of every shape (views of their beginnings).
struct DecodeInputs {
    k: Tensor<bf16>,
    v: Tensor<bf16>,
    q: Tensor<bf16>,
}

impl DecodeInputs {
    /// Blocks of [`FILL_CHUNK_ELEMS`] (less when no shape needs as many; more when a decode step
    /// of one token a sequence needs more), and queries for the largest shape.
    fn new(device: &Device, shapes: &[DecodeShape]) -> Result<DecodeInputs> {
        DecodeInputs::with_chunk(device, shapes, FILL_CHUNK_ELEMS)
    }

    /// [`new`](Self::new) with blocks of at most `chunk_elems` elements (tests fill in many
    /// steps this way).
    fn with_chunk(
        device: &Device,
        shapes: &[DecodeShape],
        chunk_elems: usize,
    ) -> Result<DecodeInputs> {
        let chunk = shapes
            .iter()
            .map(|s| {
                let prompt = s.batch * s.context * s.row();
                prompt.min(chunk_elems).max(s.batch * s.row())
            })
            .max()
            .unwrap_or(0);
        let q_len = shapes
            .iter()
            .map(|s| s.batch * s.heads * s.head_dim)
            .max()
            .unwrap_or(0);
        let mut rng = StdRng::seed_from_u64(INPUT_SEED);
        let mut random = |len: usize| -> Result<Tensor<bf16>> {
            let data: Vec<bf16> = (0..len)
                .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)))
                .collect();
            Tensor::from_host(device, &data, &[len])
        };
        Ok(DecodeInputs {
            k: random(chunk)?,
            v: random(chunk)?,
            q: random(q_len)?,
        })
    }

    /// Tokens one append step may take for `shape`: whole rows of the K and V blocks.
    fn step_tokens(&self, shape: &DecodeShape) -> usize {
        self.k.numel() / shape.row()
    }
}

/// A shape's cache, filled, with its decode step reserved and appended, and the step's queries
/// and output (poisoned with NaN before each row).
struct DecodeProblem {
    cache: PagedKvCache,
    step: StepPlan,
    q: Tensor<bf16>,
    out: Tensor<bf16>,
}

impl DecodeProblem {
    fn new(device: &Device, shape: &DecodeShape, inputs: &DecodeInputs) -> Result<DecodeProblem> {
        let step_tokens = inputs.step_tokens(shape);
        if step_tokens < shape.batch.max(1) {
            return Err(Error::Internal(format!(
                "{}: the random K/V blocks hold {step_tokens} tokens, fewer than one a sequence",
                shape.label()
            )));
        }
        let config = KvCacheConfig {
            num_layers: 1,
            kv_heads: shape.kv_heads,
            head_dim: shape.head_dim,
            page_size: shape.page_size,
            num_pages: shape.batch * shape.pages_per_seq(),
            dtype: DType::BF16,
            layout: KvLayout::Nhd,
        };
        let mut cache = PagedKvCache::new(device, config)?;
        cache.shuffle_free_pages(PAGE_SHUFFLE_SEED);
        let seqs: Vec<SeqId> = (0..shape.batch).map(|_| cache.add_sequence()).collect();

        // The prompts: context - 1 tokens a sequence, sequence after sequence, steps of at most
        // step_tokens tokens (a sequence's tokens may span steps; no step names one twice).
        let mut requests = Vec::new();
        let mut in_step = 0;
        for &seq in &seqs {
            let mut left = shape.context.saturating_sub(1);
            while left > 0 {
                let n = left.min(step_tokens - in_step);
                requests.push((seq, n));
                in_step += n;
                left -= n;
                if in_step == step_tokens {
                    append_step(&mut cache, &requests, shape, inputs)?;
                    requests.clear();
                    in_step = 0;
                }
            }
        }
        if !requests.is_empty() {
            append_step(&mut cache, &requests, shape, inputs)?;
        }
        // The decode step: one new token a sequence.
        let decode: Vec<(SeqId, usize)> = seqs.iter().map(|&seq| (seq, 1)).collect();
        let step = append_step(&mut cache, &decode, shape, inputs)?;
        if step.seq_lens().iter().any(|&len| len != shape.context) {
            return Err(Error::Internal(format!(
                "{}: the decode step's sequences hold {:?} tokens, expected {} each",
                shape.label(),
                step.seq_lens(),
                shape.context
            )));
        }
        let q_shape = [shape.batch, shape.heads, shape.head_dim];
        let q = inputs.q.view(0, &q_shape, &contiguous_strides(&q_shape))?;
        let out = Tensor::zeros(device, &q_shape)?;
        Ok(DecodeProblem {
            cache,
            step,
            q,
            out,
        })
    }
}

/// Reserves a step of `requests` and appends its new tokens' K and V from the random blocks.
fn append_step(
    cache: &mut PagedKvCache,
    requests: &[(SeqId, usize)],
    shape: &DecodeShape,
    inputs: &DecodeInputs,
) -> Result<StepPlan> {
    let step = cache.reserve(requests)?;
    let dims = [step.num_tokens(), shape.kv_heads, shape.head_dim];
    let strides = contiguous_strides(&dims);
    let k = inputs.k.view(0, &dims, &strides)?;
    let v = inputs.v.view(0, &dims, &strides)?;
    cache.append(0, &step, &k, &v)?;
    Ok(step)
}

/// Decode's options: causal (one new token sees every cached one), no LSE.
fn decode_options() -> AttentionOptions {
    AttentionOptions {
        causal: true,
        ..Default::default()
    }
}

/// Milliseconds of each timed run of the decode step with `split`, and the plan they ran. The
/// plan is made first, outside the timed runs; on a GPU an untimed first run and a timed second
/// one set the warm-up and run counts; on the emulator one run. Afterwards, checks that no run
/// planned again and that every output element was written.
fn time_decode(
    timer: &mut Timer,
    problem: &mut DecodeProblem,
    shape: &DecodeShape,
    split: SplitKv,
    device: &Device,
    budget: RunBudget,
) -> Result<(Vec<f64>, PagedPlanInfo)> {
    let mut plan = PagedAttentionPlan::new(device, split)?;
    let planned = shape.paged_shape();
    let info = plan.plan(&planned)?;
    let poison = vec![bf16::NAN; problem.out.numel()];
    problem.out.copy_from_host(&poison)?;
    let opts = decode_options();
    let DecodeProblem {
        cache,
        step,
        q,
        out,
    } = problem;
    let mut run = || paged_attention_into(q, cache, 0, step, out, None, &opts, &mut plan);
    let times = if device.is_cuda() {
        let estimate = timer.time(1, 1, &mut run)?[0];
        let (warmup, runs) = budget.plan(estimate);
        timer.time(warmup, runs, &mut run)?
    } else {
        timer.time(0, 1, &mut run)?
    };
    if plan.last_planned() != Some((planned, info)) {
        return Err(Error::Internal(format!(
            "{}: the runs planned {:?}, not the plan made before them ({planned:?}, {info:?}): \
             the timed runs planned again",
            shape.label(),
            plan.last_planned()
        )));
    }
    let written = out.to_host()?;
    if let Some(at) = written.iter().position(|x| !x.is_finite()) {
        return Err(Error::Internal(format!(
            "{}: output element {at} is {} after the runs: the kernel did not write every row",
            shape.label(),
            written[at]
        )));
    }
    Ok((times, info))
}

// ---------------------------------------------------------------------------------------------
// The report.
// ---------------------------------------------------------------------------------------------

/// One shape with one split.
#[derive(Clone, Debug)]
pub struct DecodeRow {
    /// The decode problem.
    pub shape: DecodeShape,
    /// The split asked.
    pub split: SplitKv,
    /// The splits the planner chose (`None` when the row did not run).
    pub num_splits: Option<usize>,
    /// KV bytes the step reads ([`DecodeShape::kv_bytes`]).
    pub kv_bytes: u64,
    /// Median milliseconds of the timed runs (NaN when the row did not run).
    pub ms: f64,
    /// The fastest timed run, in milliseconds (NaN when the row did not run).
    pub min_ms: f64,
    /// The slowest timed run, in milliseconds (NaN when the row did not run).
    pub max_ms: f64,
    /// Timed runs.
    pub runs: usize,
    /// KV bytes per second of the median run, in GB/s (1e9 bytes).
    pub gbps: f64,
    /// `gbps` as a percentage of the copy's bytes read plus written per second.
    pub pct_of_copy: f64,
    /// Why the shape was not run (over the memory budget).
    pub skipped: Option<String>,
    /// Why the row failed.
    pub error: Option<String>,
}

impl DecodeRow {
    /// A timed row.
    pub fn new(
        shape: DecodeShape,
        split: SplitKv,
        num_splits: usize,
        times: &[f64],
        copy: &CopyCeiling,
    ) -> DecodeRow {
        let spread = Spread::of(times);
        let kv_bytes = shape.kv_bytes();
        let gbps = kv_bytes as f64 / (spread.median * 1e-3) / 1e9;
        DecodeRow {
            shape,
            split,
            num_splits: Some(num_splits),
            kv_bytes,
            ms: spread.median,
            min_ms: spread.min,
            max_ms: spread.max,
            runs: times.len(),
            gbps,
            pct_of_copy: 100.0 * gbps / copy.read_written_gbps,
            skipped: None,
            error: None,
        }
    }

    fn not_run(shape: DecodeShape, split: SplitKv) -> DecodeRow {
        DecodeRow {
            shape,
            split,
            num_splits: None,
            kv_bytes: shape.kv_bytes(),
            ms: f64::NAN,
            min_ms: f64::NAN,
            max_ms: f64::NAN,
            runs: 0,
            gbps: f64::NAN,
            pct_of_copy: f64::NAN,
            skipped: None,
            error: None,
        }
    }

    /// A row skipped for `why`.
    pub fn skipped(shape: DecodeShape, split: SplitKv, why: String) -> DecodeRow {
        DecodeRow {
            skipped: Some(why),
            ..DecodeRow::not_run(shape, split)
        }
    }

    /// A row that failed with `error`.
    pub fn failed(shape: DecodeShape, split: SplitKv, error: String) -> DecodeRow {
        DecodeRow {
            error: Some(error),
            ..DecodeRow::not_run(shape, split)
        }
    }

    fn json(&self) -> DecodeRowJson<'_> {
        let s = &self.shape;
        DecodeRowJson {
            kernel: "paged",
            shape: s.label(),
            batch: s.batch,
            context: s.context,
            q_len: 1,
            heads: s.heads,
            kv_heads: s.kv_heads,
            group: s.group(),
            head_dim: s.head_dim,
            page_size: s.page_size,
            layout: "nhd",
            dtype: "bf16",
            split: split_name(self.split),
            num_splits: self.num_splits,
            kv_bytes: self.kv_bytes,
            ms: self.ms,
            min_ms: self.min_ms,
            max_ms: self.max_ms,
            runs: self.runs,
            gbps: self.gbps,
            pct_of_copy: self.pct_of_copy,
            skipped: self.skipped.as_deref(),
            error: self.error.as_deref(),
        }
    }
}

/// A [`DecodeRow`] in the report's JSON.
#[derive(Serialize)]
struct DecodeRowJson<'a> {
    kernel: &'static str,
    shape: String,
    batch: usize,
    context: usize,
    q_len: usize,
    heads: usize,
    kv_heads: usize,
    group: usize,
    head_dim: usize,
    page_size: usize,
    layout: &'static str,
    dtype: &'static str,
    split: String,
    num_splits: Option<usize>,
    kv_bytes: u64,
    ms: f64,
    min_ms: f64,
    max_ms: f64,
    runs: usize,
    gbps: f64,
    pct_of_copy: f64,
    skipped: Option<&'a str>,
    error: Option<&'a str>,
}

/// The table's column titles, aligned with [`DecodeRow`]'s `Display`.
pub fn table_header() -> String {
    format!(
        "{:<24} {:<5} {:>6} {:>29} {:>10} {:>8} {:>7}",
        "shape", "split", "splits", "ms [min, max]", "KV MiB", "GB/s", "% copy"
    )
}

impl fmt::Display for DecodeRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<24} {:<5} {:>6} ",
            self.shape.label(),
            split_name(self.split),
            self.num_splits.map_or("-".into(), |n| n.to_string())
        )?;
        match (&self.skipped, &self.error) {
            (Some(why), _) => write!(f, "skipped: {why}"),
            (None, Some(e)) => write!(f, "error: {e}"),
            (None, None) => write!(
                f,
                "{:>29} {:>10.1} {:>8.1} {:>6.1}%",
                spread_cell(self.ms, self.min_ms, self.max_ms, 4),
                self.kv_bytes as f64 / f64::from(1u32 << 20),
                self.gbps,
                self.pct_of_copy
            ),
        }
    }
}

impl fmt::Display for CopyCeiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "device-to-device copy of {}: {:.1} GB/s read, {:.1} GB/s read + written ({} \
             ms, median [min, max] of {}); \"% copy\" is KV GB/s over read + written",
            bytes_label(self.bytes as u64),
            self.read_gbps,
            self.read_written_gbps,
            spread_cell(self.ms, self.min_ms, self.max_ms, 3),
            self.runs
        )
    }
}

/// Where a run stands against a [`DecodeTarget`].
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The target judged.
    pub target: DecodeTarget,
    /// The row's "% of copy" (`None` when it did not run).
    pub pct_of_copy: Option<f64>,
    /// Whether the target was met (`None` when the row did not run).
    pub met: Option<bool>,
    /// `b64 ctx8k h32/8 d128 split auto (1 split): 91.2% of copy (target 90%): met`.
    pub text: String,
}

/// What to benchmark.
#[derive(Clone, Debug, Default)]
pub struct DecodeConfig {
    /// GPU: the targets' shapes and two more, fewer runs. Emulator: required; one tiny shape.
    pub quick: bool,
    /// The commit benchmarked, recorded in the report (the CLI takes it from `CUATTN_COMMIT`).
    pub commit: Option<String>,
}

/// A whole decode run.
#[derive(Clone, Debug)]
pub struct DecodeReport {
    /// The device's name.
    pub device: String,
    /// Whether it ran on the emulator (no performance numbers).
    pub emulator: bool,
    /// Whether it was a quick run (fewer shapes and runs).
    pub quick: bool,
    /// The commit benchmarked, when given.
    pub commit: Option<String>,
    /// The copy ceiling measured first.
    pub copy: CopyCeiling,
    /// Bytes of the buffer cleared before each timed run to flush the L2 (0 on the emulator).
    pub l2_flush_bytes: usize,
    /// The most KV bytes a shape could have in this run: [`KV_BUDGET_BYTES`], or 85% of the
    /// device memory free when the grid started if less.
    pub kv_budget_bytes: u64,
    /// One row per shape and split, in the order run.
    pub rows: Vec<DecodeRow>,
}

impl DecodeReport {
    /// The family's name in reports.
    pub const FAMILY: &'static str = "decode";

    /// The run against each target whose shape and split it has a row of.
    pub fn verdicts(&self) -> Vec<Verdict> {
        TARGETS
            .iter()
            .filter_map(|target| {
                let row = self
                    .rows
                    .iter()
                    .find(|r| r.shape == target.shape && r.split == target.split)?;
                let what = format!(
                    "{} split {}",
                    target.shape.label(),
                    split_name(target.split)
                );
                let goal = format!("target {}%", target.min_pct_of_copy);
                let (pct, met, text) = match (&row.skipped, &row.error) {
                    (Some(why), _) => (None, None, format!("{what}: skipped ({why}), {goal}")),
                    (None, Some(e)) => (None, None, format!("{what}: failed ({e}), {goal}")),
                    (None, None) => {
                        let met = row.pct_of_copy >= target.min_pct_of_copy;
                        let splits = row.num_splits.unwrap_or(1);
                        let plural = if splits == 1 { "" } else { "s" };
                        let text = format!(
                            "{what} ({splits} split{plural}): {:.1}% of copy ({goal}): {}",
                            row.pct_of_copy,
                            if met { "met" } else { "not met" }
                        );
                        (Some(row.pct_of_copy), Some(met), text)
                    }
                };
                Some(Verdict {
                    target: *target,
                    pct_of_copy: pct,
                    met,
                    text,
                })
            })
            .collect()
    }

    /// One JSON object: device, commit, the copy ceiling, one object per row, the verdicts.
    pub fn to_json(&self) -> String {
        let c = &self.copy;
        let verdicts = self.verdicts();
        crate::json::to_pretty(&DecodeReportJson {
            head: ReportHeadJson::new(
                Self::FAMILY,
                &self.device,
                self.emulator,
                self.quick,
                self.commit.as_deref(),
            ),
            dtype: "bf16",
            l2_flush_bytes: self.l2_flush_bytes,
            kv_budget_bytes: self.kv_budget_bytes,
            copy_ceiling: CopyCeilingJson {
                bytes: c.bytes,
                ms: c.ms,
                min_ms: c.min_ms,
                max_ms: c.max_ms,
                runs: c.runs,
                read_gbps: c.read_gbps,
                read_written_gbps: c.read_written_gbps,
                pct_of_copy_divides_by: "read_written_gbps",
            },
            rows: self.rows.iter().map(DecodeRow::json).collect(),
            verdicts: verdicts
                .iter()
                .map(|v| VerdictJson {
                    shape: v.target.shape.label(),
                    split: split_name(v.target.split),
                    target_pct_of_copy: v.target.min_pct_of_copy,
                    pct_of_copy: v.pct_of_copy,
                    met: v.met,
                    text: &v.text,
                })
                .collect(),
        })
    }
}

/// A [`DecodeReport`] in JSON.
#[derive(Serialize)]
struct DecodeReportJson<'a> {
    #[serde(flatten)]
    head: ReportHeadJson<'a>,
    dtype: &'static str,
    l2_flush_bytes: usize,
    kv_budget_bytes: u64,
    copy_ceiling: CopyCeilingJson,
    rows: Vec<DecodeRowJson<'a>>,
    verdicts: Vec<VerdictJson<'a>>,
}

/// A [`CopyCeiling`] in JSON.
#[derive(Serialize)]
struct CopyCeilingJson {
    bytes: usize,
    ms: f64,
    min_ms: f64,
    max_ms: f64,
    runs: usize,
    read_gbps: f64,
    read_written_gbps: f64,
    pct_of_copy_divides_by: &'static str,
}

/// A [`Verdict`] in JSON.
#[derive(Serialize)]
struct VerdictJson<'a> {
    shape: String,
    split: String,
    target_pct_of_copy: f64,
    pct_of_copy: Option<f64>,
    met: Option<bool>,
    text: &'a str,
}

/// Why `shape` is skipped under `budget` bytes of KV, if it is.
fn over_budget(shape: &DecodeShape, budget: u64) -> Option<String> {
    let bytes = shape.kv_bytes();
    (bytes > budget).then(|| {
        format!(
            "KV {} over this run's budget of {} (at most {}, and {FREE_MEMORY_PCT}% of the \
             free device memory)",
            bytes_label(bytes),
            bytes_label(budget),
            bytes_label(KV_BUDGET_BYTES)
        )
    })
}

/// The decode benchmark on `device`: the copy ceiling first, then every shape of [`shapes_for`]
/// with each split of [`SPLITS`]. Calls `progress` with the report so far after the ceiling and
/// after each row (for tables printed as they go and files that survive a timeout). A shape over
/// the KV budget gives rows that say so; a shape whose cache cannot be set up, or a split that
/// fails, gives rows with the error; the run goes on. On the emulator it refuses to run unless
/// `config.quick`.
pub fn run_decode(
    device: &Device,
    config: &DecodeConfig,
    mut progress: impl FnMut(&DecodeReport),
) -> Result<DecodeReport> {
    if !device.is_cuda() && !config.quick {
        return Err(Error::invalid(
            "device",
            "the emulator: its times are no performance numbers, so the decode benchmark needs \
             a GPU (--device gpu); with --quick it runs one tiny shape on the emulator, only to \
             exercise the code",
        ));
    }
    let shapes = shapes_for(device, config.quick);
    let mut timer = Timer::new(device)?;
    let copy = measure_copy_ceiling(device, &mut timer)?;
    let kv_budget_bytes = kv_budget(device)?;
    let mut report = DecodeReport {
        device: device.name(),
        emulator: !device.is_cuda(),
        quick: config.quick,
        commit: config.commit.clone(),
        copy,
        l2_flush_bytes: timer.flush_bytes(),
        kv_budget_bytes,
        rows: Vec::new(),
    };
    progress(&report);
    let inputs = DecodeInputs::new(device, &shapes)?;
    let budget = RunBudget::new(config.quick);
    for shape in &shapes {
        if let Some(why) = over_budget(shape, kv_budget_bytes) {
            for split in SPLITS {
                report
                    .rows
                    .push(DecodeRow::skipped(*shape, split, why.clone()));
            }
            progress(&report);
            continue;
        }
        let mut problem = match DecodeProblem::new(device, shape, &inputs) {
            Ok(problem) => problem,
            Err(e) => {
                for split in SPLITS {
                    let error = format!("setting up the cache: {e}");
                    report.rows.push(DecodeRow::failed(*shape, split, error));
                }
                progress(&report);
                continue;
            }
        };
        for split in SPLITS {
            let row = match time_decode(&mut timer, &mut problem, shape, split, device, budget) {
                Ok((times, info)) => DecodeRow::new(*shape, split, info.num_splits, &times, &copy),
                Err(e) => DecodeRow::failed(*shape, split, e.to_string()),
            };
            report.rows.push(row);
            progress(&report);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shapes_over_the_budget_are_skipped_and_the_row_says_why() {
        let shape = DecodeShape::new(256, 64 * 1024, (32, 8));
        let why = over_budget(&shape, KV_BUDGET_BYTES).expect("64 GiB is over 40");
        println!("{}: {why}", shape.label());
        assert!(
            why.contains("KV 64.0 GiB") && why.contains("budget of 40.0 GiB"),
            "{why}"
        );
        let fits = DecodeShape::new(256, 64 * 1024, (32, 4));
        assert_eq!(fits.kv_bytes(), KV_BUDGET_BYTES * 4 / 5);
        assert_eq!(over_budget(&fits, KV_BUDGET_BYTES), None);
        assert!(over_budget(&fits, fits.kv_bytes() - 1).is_some());
    }

    /// Fills caches in steps of 100 tokens, so that sequences span steps and steps hold parts of
    /// two sequences, and reads every token back: token t of sequence s holds row g of the
    /// random blocks, g = (s * (context - 1) + t) % 100 for the prompt (the prompts go in one
    /// after the other), and row s for the decode step's token.
    #[test]
    fn prompts_appended_in_steps_put_every_token_where_it_belongs() {
        let device = Device::emulator();
        let shape = DecodeShape {
            batch: 3,
            context: 250,
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
            page_size: PAGE_SIZE,
        };
        let step_tokens = 100;
        let inputs =
            DecodeInputs::with_chunk(&device, &[shape], step_tokens * shape.row()).expect("inputs");
        assert_eq!(inputs.step_tokens(&shape), step_tokens);
        let problem = DecodeProblem::new(&device, &shape, &inputs).expect("problem");
        assert_eq!(problem.step.seq_lens(), [250, 250, 250]);
        assert_eq!(problem.step.num_tokens(), 3);
        let (k_rows, v_rows) = (inputs.k.to_host().unwrap(), inputs.v.to_host().unwrap());
        let row = shape.row();
        let mut adjacent = 0;
        for (s, &seq) in problem.step.seqs().iter().enumerate() {
            let (k, v) = problem.cache.read_sequence::<bf16>(0, seq).unwrap();
            assert_eq!(k.len(), shape.context * row);
            for t in 0..shape.context {
                let g = if t + 1 == shape.context {
                    s
                } else {
                    (s * (shape.context - 1) + t) % step_tokens
                };
                let at = t * row..(t + 1) * row;
                let from = g * row..(g + 1) * row;
                assert_eq!(k[at.clone()], k_rows[from.clone()], "seq {s} token {t} K");
                assert_eq!(v[at], v_rows[from], "seq {s} token {t} V");
            }
            let pages = problem.cache.sequence_pages(seq).unwrap();
            adjacent += pages.windows(2).filter(|p| p[1] == p[0] + 1).count();
        }
        println!("{}: {adjacent} adjacent page pairs of 45", shape.label());
        assert!(adjacent < 10, "the free list was shuffled");
    }
}
