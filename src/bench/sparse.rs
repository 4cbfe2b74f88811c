//! The block-sparse benchmark (`cuattn bench --family sparse`): block-sparse attention
//! ([`block_sparse_attention_into`]) against the density of its mask, next to the dense flash
//! kernel on the same shape timed in the same run (the base of every ratio). The block matrices
//! can be written out (`--mask-dir`) so that `scripts/bench_anchors.py --family sparse` times
//! FlexAttention with the same block mask.
//!
//! Shapes: one sequence of 16384 tokens ([`SEQLEN`]), 16 query heads over 16 KV heads, and 32
//! over 8 (GQA), head dim 128, bf16; blocks of 128 x 128 ([`BLOCK`], FlexAttention's default
//! block size, so that its BlockMask has the very same blocks), and one row of 64 x 64.
//!
//! Masks, each shared by every head (a block matrix `[1, 1, nq, nk]`):
//!
//! - random: exactly `round(density * nq * nk)` blocks, drawn without replacement with a seed
//!   of their own, at the densities of [`DENSITIES`];
//! - each pattern of [`Pattern`] at parameters that keep about a tenth of the 128 x 128 grid
//!   ([`PATTERNS`]: local 9.9%, strided 9.9%, dilated 9.6%, Longformer 9.9%, BigBird about
//!   10%), next to the random mask of 0.1.
//!
//! All of them unmasked, and under the causal mask: the dense kernel, a random mask of 0.2
//! (about 0.1 of the grid after the causal rule) and the local pattern. The causal rule hides the
//! blocks above the diagonal and cuts the diagonal ones, so a row's `density` is its mask's after
//! the rule ([`BlockMask::density`]: the share of the grid's blocks the kernel visits, hence of
//! the K/V bytes it reads against dense attention), and its `matrix_density` the one drawn.
//!
//! Throughput: effective TFLOP/s = 4 * visible pairs * head_dim / time, the visible (query, key)
//! pairs counted exactly from the mask and the element rule ([`BlockMask::visible_pairs`]: every
//! element of a full block, the visible ones of a partial block); the dense rows count the pairs
//! their mask leaves, as the prefill family does. A row's ratio to dense is its median time over
//! the dense kernel's median on the same shape and mask rule (causal or not).
//!
//! Timing as the prefill family's: the mask is built and uploaded before the timed runs, which
//! time the call alone, each after an L2 flush (CUDA events, the median of about 150 ms of runs).
//! Each row's output is poisoned with NaN first and checked finite after the runs (a query block
//! that sees no key writes zeros).
//!
//! The target ([`TARGET`], set for an H200): at density 0.1 (the random mask, 128 x 128 blocks,
//! 16/16 heads, unmasked) at most 0.15 of the dense kernel's time, and at least 1.3x
//! FlexAttention with the same block mask in the same run (which the anchors' table checks).

use std::fmt;
use std::path::{Path, PathBuf};

use half::bf16;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use super::{
    spread_cell, PrefillInputs, PrefillShape, PrefillShapeJson, ReportHeadJson, RunBudget, Spread,
    Timer,
};
use crate::attention::{attention_into, Kernel};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::sparse::{block_sparse_attention_into, BlockMask, BlockMatrix, Pattern};
use crate::tensor::Tensor;

/// Tokens of the one sequence of the GPU shapes.
pub const SEQLEN: usize = 16 * 1024;
/// Head dim of the GPU shapes.
pub const HEAD_DIM: usize = 128;
/// (query heads, KV heads) of the MHA shapes.
pub const MHA_HEADS: (usize, usize) = (16, 16);
/// (query heads, KV heads) of the GQA shapes.
pub const GQA_HEADS: (usize, usize) = (32, 8);
/// (block_q, block_k) of every GPU row but one: FlexAttention's default block size.
pub const BLOCK: (usize, usize) = (128, 128);
/// The block size of the one row of smaller blocks.
pub const SMALL_BLOCK: (usize, usize) = (64, 64);
/// Densities of the random masks (the share of the grid's blocks drawn).
pub const DENSITIES: [f64; 6] = [0.05, 0.1, 0.2, 0.3, 0.5, 1.0];
/// The patterns, at about 10% of a 128 x 128 grid each (see the module docs).
pub const PATTERNS: [&str; 5] = [
    "local:w=6",
    "strided:w=2,s=16",
    "dilated:w=6,d=2",
    "longformer:w=4,global=2",
    "bigbird:w=2,global=2,random=4,seed=7",
];
/// The first random mask's seed; each random mask of the grid takes the next one.
pub const RANDOM_SEED: u64 = 100;
/// The file in `--mask-dir` that lists every row and its mask file.
pub const MANIFEST: &str = "masks.json";

/// A block mask of a benchmark row, before the element rule.
#[derive(Clone, Debug, PartialEq)]
pub enum MaskSpec {
    /// Exactly `round(density * nq * nk)` blocks drawn without replacement (`StdRng` seeded with
    /// `seed`), shared by every head.
    Random {
        /// The share of the block grid visible, in [0, 1].
        density: f64,
        /// Seeds the draw.
        seed: u64,
    },
    /// A pattern (shared by every head unless BigBird's `per_head`).
    Pattern(Pattern),
}

impl MaskSpec {
    fn pattern(text: &str) -> MaskSpec {
        MaskSpec::Pattern(text.parse().expect("the grid's patterns parse"))
    }

    /// `random:density=0.1,seed=101`, or the pattern as written (`local:w=6`).
    pub fn label(&self) -> String {
        match self {
            MaskSpec::Random { density, seed } => format!("random:density={density},seed={seed}"),
            MaskSpec::Pattern(p) => p.to_string(),
        }
    }

    /// `random` or `pattern`.
    pub fn kind(&self) -> &'static str {
        match self {
            MaskSpec::Random { .. } => "random",
            MaskSpec::Pattern(_) => "pattern",
        }
    }

    /// The block matrix on an `nq` x `nk` grid for `heads` query heads.
    pub fn matrix(&self, heads: usize, nq: usize, nk: usize) -> Result<BlockMatrix> {
        match *self {
            MaskSpec::Random { density, seed } => random_blocks(density, seed, nq, nk),
            MaskSpec::Pattern(ref p) => p.blocks(heads, nq, nk),
        }
    }
}

/// Exactly `round(density * nq * nk)` of an `nq` x `nk` grid's blocks, drawn without
/// replacement: the grid's block indices shuffled by `StdRng::seed_from_u64(seed)`, the first
/// ones taken.
pub fn random_blocks(density: f64, seed: u64, nq: usize, nk: usize) -> Result<BlockMatrix> {
    if !(0.0..=1.0).contains(&density) {
        return Err(Error::invalid(
            "density",
            format!("{density}: must be in [0, 1]"),
        ));
    }
    let total = nq * nk;
    let mut order: Vec<usize> = (0..total).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut blocks = vec![false; total];
    for &b in &order[..(density * total as f64).round() as usize] {
        blocks[b] = true;
    }
    BlockMatrix::new([1, 1, nq, nk], blocks)
}

/// One row of the benchmark: a shape (its causal flag the mask's element rule) and either the
/// dense flash kernel or block-sparse attention with a mask.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseCase {
    /// The problem; its causal flag is the mask's element rule.
    pub shape: PrefillShape,
    /// The mask and its block size (block_q, block_k); `None`: the dense flash kernel, the base of
    /// the ratios of every row of this shape.
    pub mask: Option<(MaskSpec, (usize, usize))>,
}

impl SparseCase {
    /// The dense flash kernel on `shape`.
    pub fn dense(shape: PrefillShape) -> SparseCase {
        SparseCase { shape, mask: None }
    }

    /// Block-sparse attention on `shape` with `spec` in blocks of `block`.
    pub fn sparse(shape: PrefillShape, spec: MaskSpec, block: (usize, usize)) -> SparseCase {
        SparseCase {
            shape,
            mask: Some((spec, block)),
        }
    }

    /// `flash` or `block_sparse`.
    pub fn kernel(&self) -> &'static str {
        match self.mask {
            None => Kernel::Flash.name(),
            Some(_) => "block_sparse",
        }
    }

    /// `dense`, or the mask's label.
    pub fn mask_label(&self) -> String {
        self.mask
            .as_ref()
            .map_or("dense".into(), |(spec, _)| spec.label())
    }

    /// `128x128`, or `-` for the dense kernel.
    pub fn block_label(&self) -> String {
        self.mask
            .as_ref()
            .map_or("-".into(), |(_, (bq, bk))| format!("{bq}x{bk}"))
    }

    /// The row's name, unique in a run, which the anchors' rows repeat:
    /// `b1 s16384 h16/16 d128 causal random:density=0.2,seed=107 128x128`.
    pub fn id(&self) -> String {
        let rule = if self.shape.causal {
            "causal"
        } else {
            "noncausal"
        };
        match &self.mask {
            None => format!("{} {rule} dense", self.shape.label()),
            Some(_) => format!(
                "{} {rule} {} {}",
                self.shape.label(),
                self.mask_label(),
                self.block_label()
            ),
        }
    }

    /// The block grid (nq, nk) of the mask.
    fn grid(&self, (bq, bk): (usize, usize)) -> (usize, usize) {
        (
            self.shape.seqlen.div_ceil(bq),
            self.shape.seqlen.div_ceil(bk),
        )
    }

    /// The block mask on `device`, composed with the shape's causal flag.
    pub fn block_mask(&self, device: &Device) -> Result<Option<BlockMask>> {
        let Some((spec, block)) = &self.mask else {
            return Ok(None);
        };
        let (nq, nk) = self.grid(*block);
        let matrix = spec.matrix(self.shape.heads, nq, nk)?;
        let s = self.shape.seqlen;
        BlockMask::new(device, matrix, *block, &[(s, s)], &self.shape.options()).map(Some)
    }
}

/// The shape of the GPU rows: one sequence of [`SEQLEN`] tokens, hd128.
pub fn gpu_shape((heads, kv_heads): (usize, usize), causal: bool) -> PrefillShape {
    PrefillShape {
        batch: 1,
        seqlen: SEQLEN,
        seqlen_k: SEQLEN,
        heads,
        kv_heads,
        head_dim: HEAD_DIM,
        causal,
    }
}

/// Every row of a full run, each shape's dense row first: MHA unmasked (random masks at each
/// density, then the patterns, in 128 x 128 blocks; a random 0.1 in 64 x 64 blocks), MHA causal
/// (a random 0.2 and the local pattern), GQA unmasked (a random 0.1). Random masks take seeds
/// [`RANDOM_SEED`], [`RANDOM_SEED`] + 1, ... in this order.
pub fn sparse_cases() -> Vec<SparseCase> {
    let mut seeds = RANDOM_SEED..;
    let mut random = |density| MaskSpec::Random {
        density,
        seed: seeds.next().expect("seeds never run out"),
    };
    let mha = gpu_shape(MHA_HEADS, false);
    let mut cases = vec![SparseCase::dense(mha)];
    for density in DENSITIES {
        cases.push(SparseCase::sparse(mha, random(density), BLOCK));
    }
    for pattern in PATTERNS {
        cases.push(SparseCase::sparse(mha, MaskSpec::pattern(pattern), BLOCK));
    }
    cases.push(SparseCase::sparse(mha, random(0.1), SMALL_BLOCK));
    let causal = gpu_shape(MHA_HEADS, true);
    cases.push(SparseCase::dense(causal));
    cases.push(SparseCase::sparse(causal, random(0.2), BLOCK));
    cases.push(SparseCase::sparse(
        causal,
        MaskSpec::pattern(PATTERNS[0]),
        BLOCK,
    ));
    let gqa = gpu_shape(GQA_HEADS, false);
    cases.push(SparseCase::dense(gqa));
    cases.push(SparseCase::sparse(gqa, random(0.1), BLOCK));
    cases
}

/// A GPU smoke run (`--quick`): the full grid's first rows of MHA unmasked: dense, the target's
/// random 0.1, a random 0.5 and the local pattern.
pub fn quick_gpu_cases() -> Vec<SparseCase> {
    let all = sparse_cases();
    let pick = |label: &str| {
        all.iter()
            .find(|c| {
                matches!(&c.mask, Some((spec, BLOCK)) if spec.label().starts_with(label))
                    && !c.shape.causal
            })
            .cloned()
            .expect("the full grid has the quick rows")
    };
    vec![
        all[0].clone(),
        pick("random:density=0.1,"),
        pick("random:density=0.5,"),
        pick("local:"),
    ]
}

/// The tiny shape the emulator runs: 241 tokens (the last query and key blocks of 32 hold 17),
/// 2 query heads over 1 KV head, hd64.
pub fn emulator_shape(causal: bool) -> PrefillShape {
    PrefillShape {
        batch: 1,
        seqlen: 241,
        seqlen_k: 241,
        heads: 2,
        kv_heads: 1,
        head_dim: 64,
        causal,
    }
}

/// The emulator's rows, in 32 x 32 blocks: unmasked, the dense kernel, a random 0.3 and a BigBird
/// pattern drawn per head; causal, the dense kernel and the local pattern (partial diagonal
/// blocks).
pub fn emulator_cases() -> Vec<SparseCase> {
    let block = (32, 32);
    let (full, causal) = (emulator_shape(false), emulator_shape(true));
    vec![
        SparseCase::dense(full),
        SparseCase::sparse(
            full,
            MaskSpec::Random {
                density: 0.3,
                seed: RANDOM_SEED,
            },
            block,
        ),
        SparseCase::sparse(
            full,
            MaskSpec::pattern("bigbird:w=1,global=1,random=1,seed=3,per_head=1"),
            block,
        ),
        SparseCase::dense(causal),
        SparseCase::sparse(causal, MaskSpec::pattern("local:w=1"), block),
    ]
}

/// The rows [`run_sparse`] times on `device` with or without `quick`.
pub fn cases_for(device: &Device, quick: bool) -> Vec<SparseCase> {
    match (device.is_cuda(), quick) {
        (false, _) => emulator_cases(),
        (true, true) => quick_gpu_cases(),
        (true, false) => sparse_cases(),
    }
}

/// The performance target of the block-sparse kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseTarget {
    /// The row it applies to (a random mask).
    pub shape: PrefillShape,
    /// Its block size (block_q, block_k).
    pub block: (usize, usize),
    /// The random mask's density.
    pub density: f64,
    /// The most time, as a share of the dense kernel's, that meets it.
    pub max_ratio_to_dense: f64,
    /// The least speedup over FlexAttention with the same block mask in the same run (checked by
    /// the anchors' table, which has both).
    pub min_speedup_over_flex: f64,
}

/// The target (set for an H200): at 16k tokens, hd128, 16/16 heads, unmasked, the random mask
/// of density 0.1 in 128 x 128 blocks runs in at most 0.15 of the dense kernel's time and at
/// least 1.3x as fast as FlexAttention.
pub const TARGET: SparseTarget = SparseTarget {
    shape: PrefillShape {
        batch: 1,
        seqlen: SEQLEN,
        seqlen_k: SEQLEN,
        heads: MHA_HEADS.0,
        kv_heads: MHA_HEADS.1,
        head_dim: HEAD_DIM,
        causal: false,
    },
    block: BLOCK,
    density: 0.1,
    max_ratio_to_dense: 0.15,
    min_speedup_over_flex: 1.3,
};

impl SparseTarget {
    /// Whether `case` is the target's row.
    pub fn applies_to(&self, case: &SparseCase) -> bool {
        matches!(
            &case.mask,
            Some((MaskSpec::Random { density, .. }, block))
                if *density == self.density && *block == self.block
        ) && case.shape == self.shape
    }
}

// ---------------------------------------------------------------------------------------------
// The report.
// ---------------------------------------------------------------------------------------------

/// What a row's block mask holds.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskFacts {
    /// `[batch or 1, heads or 1, nq, nk]` of the block matrix.
    pub dims: [usize; 4],
    /// The share of the matrix's blocks that are visible, before the element rule.
    pub matrix_density: f64,
    /// The share of the grid's blocks the kernel visits, after the element rule
    /// ([`BlockMask::density`]).
    pub density: f64,
    /// Visible blocks with no element mask inside (the kernel runs no mask arithmetic there).
    pub full_blocks: usize,
    /// Visible blocks that the causal or window rule cuts (masked element by element).
    pub partial_blocks: usize,
}

impl MaskFacts {
    fn of(mask: &BlockMask) -> MaskFacts {
        MaskFacts {
            dims: mask.matrix().dims(),
            matrix_density: mask.matrix().density(),
            density: mask.density(),
            full_blocks: mask.full_blocks(),
            partial_blocks: mask.partial_blocks(),
        }
    }
}

/// One row's results.
#[derive(Clone, Debug)]
pub struct SparseRow {
    /// The row's shape and mask.
    pub case: SparseCase,
    /// The mask's facts (`None` for the dense kernel, or when the mask could not be built).
    pub mask: Option<MaskFacts>,
    /// The mask's file name in the `--mask-dir` folder, when one was asked for.
    pub mask_file: Option<String>,
    /// (query, key) pairs computed, over every sequence and head.
    pub visible_pairs: u64,
    /// Median milliseconds of the timed runs (NaN when the row did not run).
    pub ms: f64,
    /// The fastest timed run, in milliseconds (NaN when the row did not run).
    pub min_ms: f64,
    /// The slowest timed run, in milliseconds (NaN when the row did not run).
    pub max_ms: f64,
    /// Timed runs.
    pub runs: usize,
    /// 4 * visible pairs * head_dim per second of the median run, in TFLOP/s.
    pub tflops: f64,
    /// `ms` over the dense kernel's median on the same shape and rule (NaN without one).
    pub ratio_to_dense: f64,
    /// Why the row failed.
    pub error: Option<String>,
}

impl SparseRow {
    /// Flops counted for throughput: 4 * visible pairs * head_dim.
    pub fn flops(&self) -> f64 {
        4.0 * self.visible_pairs as f64 * self.case.shape.head_dim as f64
    }

    /// The row's case and mask in JSON: what the report's rows and the `--mask-dir` manifest
    /// both hold.
    fn case_json(&self) -> SparseCaseJson<'_> {
        let s = &self.case.shape;
        let (spec, block) = match &self.case.mask {
            Some((spec, block)) => (Some(spec), Some(*block)),
            None => (None, None),
        };
        let (density_asked, seed, pattern) = match spec {
            Some(MaskSpec::Random { density, seed }) => (Some(*density), Some(*seed), None),
            Some(MaskSpec::Pattern(p)) => {
                let seed = match p {
                    Pattern::BigBird { seed, .. } => Some(*seed),
                    _ => None,
                };
                (None, seed, Some(p.to_string()))
            }
            None => (None, None, None),
        };
        let facts = self.mask.as_ref();
        SparseCaseJson {
            id: self.case.id(),
            kernel: self.case.kernel(),
            shape: PrefillShapeJson::of(s),
            block_q: block.map(|b| b.0),
            block_k: block.map(|b| b.1),
            mask: self.case.mask_label(),
            mask_kind: spec.map_or("dense", MaskSpec::kind),
            density_asked,
            seed,
            pattern,
            mask_file: self.mask_file.as_deref(),
            mask_dims: facts.map(|f| f.dims),
            matrix_density: facts.map(|f| f.matrix_density),
            density: facts.map(|f| f.density),
            full_blocks: facts.map(|f| f.full_blocks),
            partial_blocks: facts.map(|f| f.partial_blocks),
            visible_pairs: self.visible_pairs,
            flops: self.flops(),
        }
    }

    fn json(&self) -> SparseRowJson<'_> {
        SparseRowJson {
            case: self.case_json(),
            ms: self.ms,
            min_ms: self.min_ms,
            max_ms: self.max_ms,
            runs: self.runs,
            tflops: self.tflops,
            ratio_to_dense: self.ratio_to_dense,
            error: self.error.as_deref(),
        }
    }
}

/// A [`SparseRow`]'s case and mask in JSON.
#[derive(Serialize)]
struct SparseCaseJson<'a> {
    id: String,
    kernel: &'static str,
    #[serde(flatten)]
    shape: PrefillShapeJson,
    block_q: Option<usize>,
    block_k: Option<usize>,
    mask: String,
    mask_kind: &'static str,
    density_asked: Option<f64>,
    seed: Option<u64>,
    pattern: Option<String>,
    mask_file: Option<&'a str>,
    mask_dims: Option<[usize; 4]>,
    matrix_density: Option<f64>,
    density: Option<f64>,
    full_blocks: Option<usize>,
    partial_blocks: Option<usize>,
    visible_pairs: u64,
    flops: f64,
}

/// A [`SparseRow`] in the report's JSON: its case, then its times.
#[derive(Serialize)]
struct SparseRowJson<'a> {
    #[serde(flatten)]
    case: SparseCaseJson<'a>,
    ms: f64,
    min_ms: f64,
    max_ms: f64,
    runs: usize,
    tflops: f64,
    ratio_to_dense: f64,
    error: Option<&'a str>,
}

/// The table's column titles, aligned with [`SparseRow`]'s `Display`.
pub fn table_header() -> String {
    format!(
        "{:<24} {:<6} {:<38} {:>7} {:>7} {:>26} {:>9} {:>7}",
        "shape", "causal", "mask", "block", "density", "ms [min, max]", "TFLOP/s", "/dense"
    )
}

impl fmt::Display for SparseRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let causal = if self.case.shape.causal { "yes" } else { "no" };
        let density = self
            .mask
            .as_ref()
            .map_or("-".into(), |m| format!("{:.3}", m.density));
        write!(
            f,
            "{:<24} {:<6} {:<38} {:>7} {:>7} ",
            self.case.shape.label(),
            causal,
            self.case.mask_label(),
            self.case.block_label(),
            density
        )?;
        match &self.error {
            Some(e) => write!(f, "error: {e}"),
            None => write!(
                f,
                "{:>26} {:>9.1} {:>7.3}",
                spread_cell(self.ms, self.min_ms, self.max_ms, 3),
                self.tflops,
                self.ratio_to_dense
            ),
        }
    }
}

/// Where a run stands against [`TARGET`]'s ratio to dense.
#[derive(Clone, Debug)]
pub struct SparseVerdict {
    /// The target row's [`SparseCase::id`].
    pub id: String,
    /// The row's ratio to dense (`None` when it or its dense row did not run).
    pub ratio_to_dense: Option<f64>,
    /// Whether the ratio is met (`None` when it could not be measured).
    pub met: Option<bool>,
    /// `b1 s16384 h16/16 d128 random:density=0.1,seed=101 128x128 (density 0.100): 0.123 of
    /// dense (target at most 0.15): met; ...`.
    pub text: String,
}

/// What to benchmark.
#[derive(Clone, Debug, Default)]
pub struct SparseConfig {
    /// GPU: four rows, fewer runs. Emulator: required; the tiny rows of [`emulator_cases`].
    pub quick: bool,
    /// The commit benchmarked, recorded in the report (the CLI takes it from `CUATTN_COMMIT`).
    pub commit: Option<String>,
    /// Where to write each row's block matrix (uint8 `.npy`, `[batch or 1, heads or 1, nq, nk]`)
    /// and the manifest [`MANIFEST`] that lists every row; created if missing.
    pub mask_dir: Option<PathBuf>,
}

/// A whole block-sparse run.
#[derive(Clone, Debug)]
pub struct SparseReport {
    /// The device's name.
    pub device: String,
    /// Whether it ran on the emulator (no performance numbers).
    pub emulator: bool,
    /// Whether it was a quick run (fewer rows and runs).
    pub quick: bool,
    /// The commit benchmarked, when given.
    pub commit: Option<String>,
    /// Bytes of the buffer cleared before each timed run to flush the L2 (0 on the emulator).
    pub l2_flush_bytes: usize,
    /// The `--mask-dir` folder the masks were written to.
    pub mask_dir: Option<String>,
    /// One row per case, in the order run (each shape's dense row before its masks).
    pub rows: Vec<SparseRow>,
}

impl SparseReport {
    /// The family's name in reports.
    pub const FAMILY: &'static str = "sparse";

    /// The run against [`TARGET`], when it has the target's row.
    pub fn verdict(&self) -> Option<SparseVerdict> {
        let row = self.rows.iter().find(|r| TARGET.applies_to(&r.case))?;
        let what = format!("{} {}", row.case.shape.label(), row.case.mask_label());
        let goal = format!(
            "target at most {} of dense; at least {}x FlexAttention with the same mask, which \
             the anchors' table checks",
            TARGET.max_ratio_to_dense, TARGET.min_speedup_over_flex
        );
        let (ratio, met, text) = match &row.error {
            Some(e) => (None, None, format!("{what}: failed ({e}), {goal}")),
            None if row.ratio_to_dense.is_nan() => (
                None,
                None,
                format!("{what}: no dense row to compare with, {goal}"),
            ),
            None => {
                let ratio = row.ratio_to_dense;
                let met = ratio <= TARGET.max_ratio_to_dense;
                let density = row.mask.as_ref().map_or(f64::NAN, |m| m.density);
                let text = format!(
                    "{what} {} (density {density:.3}): {ratio:.3} of dense ({goal}): {}",
                    row.case.block_label(),
                    if met { "met" } else { "not met" }
                );
                (Some(ratio), Some(met), text)
            }
        };
        Some(SparseVerdict {
            id: row.case.id(),
            ratio_to_dense: ratio,
            met,
            text,
        })
    }

    /// One JSON object: device, commit, one object per row, the verdict.
    pub fn to_json(&self) -> String {
        let verdict = self.verdict();
        crate::json::to_pretty(&SparseReportJson {
            head: ReportHeadJson::new(
                Self::FAMILY,
                &self.device,
                self.emulator,
                self.quick,
                self.commit.as_deref(),
            ),
            dtype: "bf16",
            l2_flush_bytes: self.l2_flush_bytes,
            mask_dir: self.mask_dir.as_deref(),
            rows: self.rows.iter().map(SparseRow::json).collect(),
            verdict: verdict.as_ref().map(|v| SparseVerdictJson {
                target: TargetJson::of(&v.id),
                ratio_to_dense: v.ratio_to_dense,
                met: v.met,
                text: &v.text,
            }),
        })
    }
}

/// A [`SparseReport`] in JSON.
#[derive(Serialize)]
struct SparseReportJson<'a> {
    #[serde(flatten)]
    head: ReportHeadJson<'a>,
    dtype: &'static str,
    l2_flush_bytes: usize,
    mask_dir: Option<&'a str>,
    rows: Vec<SparseRowJson<'a>>,
    verdict: Option<SparseVerdictJson<'a>>,
}

/// What the report's verdict and the `--mask-dir` manifest say of the target, for the anchors'
/// table: its row's id and [`TARGET`]'s thresholds.
#[derive(Serialize)]
struct TargetJson<'a> {
    id: &'a str,
    max_ratio_to_dense: f64,
    min_speedup_over_flex: f64,
}

impl TargetJson<'_> {
    fn of(id: &str) -> TargetJson<'_> {
        TargetJson {
            id,
            max_ratio_to_dense: TARGET.max_ratio_to_dense,
            min_speedup_over_flex: TARGET.min_speedup_over_flex,
        }
    }
}

/// A [`SparseVerdict`] in JSON.
#[derive(Serialize)]
struct SparseVerdictJson<'a> {
    #[serde(flatten)]
    target: TargetJson<'a>,
    ratio_to_dense: Option<f64>,
    met: Option<bool>,
    text: &'a str,
}

/// The `--mask-dir` manifest ([`MANIFEST`]) in JSON.
#[derive(Serialize)]
struct ManifestJson<'a> {
    family: &'static str,
    device: &'a str,
    commit: Option<&'a str>,
    note: &'static str,
    target: Option<TargetJson<'a>>,
    rows: Vec<SparseCaseJson<'a>>,
}

// ---------------------------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------------------------

/// A row made ready before any timing: its mask built and uploaded, its pairs counted, its row
/// started.
struct Prepared {
    mask: Option<BlockMask>,
    row: SparseRow,
}

impl Prepared {
    fn new(device: &Device, case: &SparseCase) -> Prepared {
        let mut row = SparseRow {
            case: case.clone(),
            mask: None,
            mask_file: None,
            visible_pairs: 0,
            ms: f64::NAN,
            min_ms: f64::NAN,
            max_ms: f64::NAN,
            runs: 0,
            tflops: f64::NAN,
            ratio_to_dense: f64::NAN,
            error: None,
        };
        let s = &case.shape;
        let mask = match case.block_mask(device) {
            Ok(mask) => mask,
            Err(e) => {
                row.error = Some(format!("building the mask: {e}"));
                return Prepared { mask: None, row };
            }
        };
        row.visible_pairs = match &mask {
            None => s.visible_pairs(),
            Some(mask) => {
                // A table shared by every head (or sequence) counts once per head (sequence).
                let [batch, heads, _, _] = mask.dims();
                mask.visible_pairs() * ((s.batch / batch) * (s.heads / heads)) as u64
            }
        };
        row.mask = mask.as_ref().map(MaskFacts::of);
        Prepared { mask, row }
    }

    /// Writes the mask's matrix as `dir/<nn>-<mask label>.npy` (uint8 0 or 1) and records the
    /// file name in the row.
    fn write_mask(&mut self, dir: &Path, n: usize) -> Result<()> {
        let Some(mask) = &self.mask else {
            return Ok(());
        };
        let slug: String = self
            .row
            .case
            .mask_label()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let name = format!("{n:02}-{slug}.npy");
        let matrix = mask.matrix();
        crate::npy::write_mask(&dir.join(&name), &matrix.dims(), matrix.blocks())?;
        self.row.mask_file = Some(name);
        Ok(())
    }
}

/// Writes every prepared row's mask under `dir` (created if missing), then the manifest.
fn write_masks(dir: &Path, prepared: &mut [Prepared], report: &SparseReport) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(dir.display(), "cannot create the mask folder", e))?;
    for (n, p) in prepared.iter_mut().enumerate() {
        p.write_mask(dir, n)?;
    }
    let target_id = prepared
        .iter()
        .find(|p| TARGET.applies_to(&p.row.case))
        .map(|p| p.row.case.id());
    let manifest = crate::json::to_pretty(&ManifestJson {
        family: SparseReport::FAMILY,
        device: &report.device,
        commit: report.commit.as_deref(),
        note: "each mask_file: the row's block matrix before the element rule, uint8 [batch or \
               1, heads or 1, nq, nk], 1 where query block i sees key block j; the causal rule \
               (bottom-right aligned) applies on top",
        target: target_id.as_deref().map(TargetJson::of),
        rows: prepared.iter().map(|p| p.row.case_json()).collect(),
    });
    let path = dir.join(MANIFEST);
    std::fs::write(&path, manifest).map_err(|e| Error::io(path.display(), "cannot write", e))
}

/// The block-sparse benchmark on `device`: every row of [`cases_for`], its mask built first (and
/// written with the manifest under `config.mask_dir`, before anything is timed), then timed.
/// Calls `progress` with the report so far before the first row and after each one (for tables
/// printed as they go and files that survive a timeout). A row whose mask cannot be built or
/// whose run fails carries its error; the run goes on. On the emulator it refuses to run unless
/// `config.quick`.
pub fn run_sparse(
    device: &Device,
    config: &SparseConfig,
    mut progress: impl FnMut(&SparseReport),
) -> Result<SparseReport> {
    if !device.is_cuda() && !config.quick {
        return Err(Error::invalid(
            "device",
            "the emulator: its times are no performance numbers, so the sparse benchmark needs \
             a GPU (--device gpu); with --quick it runs tiny rows on the emulator, only to \
             exercise the code",
        ));
    }
    let cases = cases_for(device, config.quick);
    let mut prepared: Vec<Prepared> = cases.iter().map(|c| Prepared::new(device, c)).collect();
    let mut timer = Timer::new(device)?;
    let mut report = SparseReport {
        device: device.name(),
        emulator: !device.is_cuda(),
        quick: config.quick,
        commit: config.commit.clone(),
        l2_flush_bytes: timer.flush_bytes(),
        mask_dir: config.mask_dir.as_ref().map(|d| d.display().to_string()),
        rows: Vec::new(),
    };
    if let Some(dir) = &config.mask_dir {
        write_masks(dir, &mut prepared, &report)?;
    }
    progress(&report);
    let shapes: Vec<PrefillShape> = cases.iter().map(|c| c.shape).collect();
    let inputs = PrefillInputs::new(device, &shapes)?;
    let budget = RunBudget::new(config.quick);
    for Prepared { mask, mut row } in prepared {
        if row.error.is_none() {
            match time_case(
                &mut timer,
                &inputs,
                &row.case,
                mask.as_ref(),
                device,
                budget,
            ) {
                Ok(times) => {
                    let spread = Spread::of(&times);
                    row.ms = spread.median;
                    row.min_ms = spread.min;
                    row.max_ms = spread.max;
                    row.runs = times.len();
                    row.tflops = row.flops() / (row.ms * 1e-3) / 1e12;
                    let dense = report.rows.iter().find(|r| {
                        r.case.mask.is_none() && r.case.shape == row.case.shape && r.error.is_none()
                    });
                    row.ratio_to_dense = match (&row.case.mask, dense) {
                        (None, _) => 1.0,
                        (Some(_), Some(dense)) => row.ms / dense.ms,
                        (Some(_), None) => f64::NAN,
                    };
                }
                Err(e) => row.error = Some(e.to_string()),
            }
        }
        report.rows.push(row);
        progress(&report);
    }
    Ok(report)
}

/// Milliseconds of each timed run of `case` (the dense flash kernel, or block-sparse attention
/// with `mask`). On a GPU an untimed first run and a timed second one set the warm-up and run
/// counts; on the emulator one run. The output is poisoned with NaN first and must be finite
/// everywhere after the runs.
fn time_case(
    timer: &mut Timer,
    inputs: &PrefillInputs,
    case: &SparseCase,
    mask: Option<&BlockMask>,
    device: &Device,
    budget: RunBudget,
) -> Result<Vec<f64>> {
    let shape = &case.shape;
    let [q, k, v, _] = inputs.views(shape)?;
    let mut out = Tensor::full(device, &shape.q_shape(), bf16::NAN)?;
    let opts = shape.options();
    let mut run = || match mask {
        None => attention_into(Kernel::Flash, &q, &k, &v, &mut out, None, &opts),
        Some(mask) => block_sparse_attention_into(&q, &k, &v, &mut out, None, mask, &opts),
    };
    let times = if device.is_cuda() {
        let estimate = timer.time(1, 1, &mut run)?[0];
        let (warmup, runs) = budget.plan(estimate);
        timer.time(warmup, runs, &mut run)?
    } else {
        timer.time(0, 1, &mut run)?
    };
    let written = out.to_host()?;
    if let Some(at) = written.iter().position(|x| !x.is_finite()) {
        return Err(Error::Internal(format!(
            "{}: output element {at} is {} after the runs: the kernel did not write every row",
            case.id(),
            written[at]
        )));
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns keep about a tenth of the 128 x 128 grid, as the module docs say.
    #[test]
    fn the_patterns_keep_about_a_tenth_of_the_grid() {
        for text in PATTERNS {
            let pattern: Pattern = text.parse().unwrap();
            let density = pattern.blocks(16, 128, 128).unwrap().density();
            println!("{text}: density {density:.4}");
            assert!((0.09..=0.105).contains(&density), "{text}: {density}");
        }
    }

    #[test]
    fn random_masks_hold_exactly_the_rounded_count_and_repeat_with_their_seed() {
        for (density, want) in [
            (0.05, 819),
            (0.1, 1638),
            (0.3, 4915),
            (1.0, 16384),
            (0.0, 0),
        ] {
            let m = random_blocks(density, 7, 128, 128).unwrap();
            let got = m.blocks().iter().filter(|&&b| b).count();
            assert_eq!(got, want, "density {density}");
            assert_eq!(m, random_blocks(density, 7, 128, 128).unwrap());
        }
        assert_ne!(
            random_blocks(0.1, 7, 128, 128).unwrap(),
            random_blocks(0.1, 8, 128, 128).unwrap()
        );
        let e = random_blocks(1.5, 7, 4, 4).unwrap_err().to_string();
        assert!(e.contains("density") && e.contains("[0, 1]"), "{e}");
    }

    #[test]
    fn the_grid_holds_the_target_once_with_unique_ids_and_a_dense_row_before_each_shape() {
        let cases = sparse_cases();
        assert_eq!(cases.len(), 1 + 6 + 5 + 1 + 3 + 2);
        let targets: Vec<&SparseCase> = cases.iter().filter(|c| TARGET.applies_to(c)).collect();
        assert_eq!(targets.len(), 1);
        assert_eq!(
            targets[0].id(),
            "b1 s16384 h16/16 d128 noncausal random:density=0.1,seed=101 128x128"
        );
        let ids: std::collections::BTreeSet<String> = cases.iter().map(|c| c.id()).collect();
        assert_eq!(ids.len(), cases.len(), "ids are unique");
        for (n, case) in cases.iter().enumerate() {
            let dense_before = cases[..n]
                .iter()
                .any(|c| c.mask.is_none() && c.shape == case.shape);
            assert!(case.mask.is_none() || dense_before, "{}", case.id());
        }
        for case in quick_gpu_cases() {
            assert!(cases.contains(&case), "{}", case.id());
        }
        assert!(quick_gpu_cases().iter().any(|c| TARGET.applies_to(c)));
    }

    /// The full grid's masks, built (on the emulator: only the tables) and written as a GPU run
    /// writes them: the manifest names the target row, every sparse row has its file, and the
    /// target's mask is exactly 1638 of 16384 whole blocks, 128 x 128 pairs each on 16 heads.
    #[test]
    fn the_full_grid_writes_every_mask_and_a_manifest_naming_the_target() {
        let device = Device::emulator();
        let dir = std::env::temp_dir().join(format!("cuattn-sparse-grid-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut prepared: Vec<Prepared> = sparse_cases()
            .iter()
            .map(|c| Prepared::new(&device, c))
            .collect();
        let report = SparseReport {
            device: device.name(),
            emulator: true,
            quick: false,
            commit: None,
            l2_flush_bytes: 0,
            mask_dir: None,
            rows: Vec::new(),
        };
        write_masks(&dir, &mut prepared, &report).unwrap();
        let manifest = std::fs::read_to_string(dir.join(MANIFEST)).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        let target = prepared
            .iter()
            .find(|p| TARGET.applies_to(&p.row.case))
            .unwrap();
        let id = target.row.case.id();
        assert_eq!(parsed["target"]["id"], id.as_str(), "{manifest}");
        assert_eq!(
            parsed["rows"].as_array().map(Vec::len),
            Some(prepared.len()),
            "{manifest}"
        );
        let facts = target.row.mask.as_ref().unwrap();
        assert_eq!((facts.full_blocks, facts.partial_blocks), (1638, 0));
        assert_eq!(target.row.visible_pairs, 1638 * 128 * 128 * 16);
        for p in &prepared {
            assert!(p.row.error.is_none(), "{:?}", p.row.error);
            println!(
                "{}: density {:?}, {} pairs, {:?}",
                p.row.case.id(),
                p.row.mask.as_ref().map(|m| m.density),
                p.row.visible_pairs,
                p.row.mask_file
            );
            match &p.row.mask_file {
                Some(file) => assert!(dir.join(file).exists() && manifest.contains(file)),
                None => assert!(p.row.case.mask.is_none()),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
