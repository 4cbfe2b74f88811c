//! `cuattn check`: runs every attention kernel over a grid of shapes, masks, dtypes and layouts
//! against the f64 reference, with outputs poisoned before each launch. The test suite runs the
//! same cases, so what `check` reports is what the tests prove.

use std::fmt;

use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::attention::{
    attention_into, attention_varlen_into, AttentionOptions, FlashTiles, Kernel, VarlenBatch,
};
use crate::device::Device;
use crate::emu::{Traffic, TrafficRecorder};
use crate::error::{Error, Result};
use crate::reference::{self, AttentionProblem, Varlen};
use crate::tensor::{AttentionElement, DType, Element, Tensor};

/// How q, k and v are laid out in memory.
#[derive(Clone, Debug, PartialEq)]
pub enum Layout {
    /// Separate contiguous [batch, seqlen, heads, head_dim] tensors.
    Dense,
    /// One [batch, seqlen, heads + 2 * kv_heads, head_dim] buffer with q, k and v as strided
    /// views (needs seqlen_q == seqlen_k).
    PackedQkv,
    /// Packed variable-length sequences with these (seqlen_q, seqlen_k) each.
    Varlen(Vec<(usize, usize)>),
    /// q, k, v and out as [batch, seqlen, heads, head_dim] views of [batch, heads, seqlen,
    /// head_dim + ROW_PAD] buffers (PyTorch's SDPA layout, rows padded), the LSE as a [batch,
    /// heads, seqlen] view of a [batch, heads, seqlen + LSE_PAD] one. The padding holds NaN: a
    /// kernel reading past head_dim spoils its output, and one writing there is caught.
    HeadsFirst,
}

/// Elements after each head_dim row in `Layout::HeadsFirst` buffers (16 bytes: rows stay aligned).
const ROW_PAD: usize = 8;
/// Floats after each head's LSE row in `Layout::HeadsFirst`.
const LSE_PAD: usize = 5;

/// One attention problem to check.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionCase {
    /// Sequences (ignored by `Layout::Varlen`, whose lengths give the batch).
    pub batch: usize,
    /// Query tokens of each sequence.
    pub seqlen_q: usize,
    /// Key and value tokens of each sequence.
    pub seqlen_k: usize,
    /// Query heads.
    pub heads: usize,
    /// Key and value heads, a divisor of `heads`.
    pub kv_heads: usize,
    /// Elements of each head's row.
    pub head_dim: usize,
    /// The element type of q, k, v and out.
    pub dtype: DType,
    /// Causal mask, bottom-right aligned.
    pub causal: bool,
    /// Sliding window (left, right), -1 unbounded; `None` for none.
    pub window: Option<(i32, i32)>,
    /// Soft cap on the scores; `None` for none.
    pub softcap: Option<f32>,
    /// Softmax scale; `None` for 1/sqrt(head_dim).
    pub scale: Option<f32>,
    /// How q, k, v and out lie in memory.
    pub layout: Layout,
    /// Seed of the case's random inputs.
    pub seed: u64,
}

impl AttentionCase {
    /// A dense case with no mask.
    pub fn dense(
        batch: usize,
        seqlen_q: usize,
        seqlen_k: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
    ) -> Self {
        AttentionCase {
            batch,
            seqlen_q,
            seqlen_k,
            heads,
            kv_heads,
            head_dim,
            dtype,
            causal: false,
            window: None,
            softcap: None,
            scale: None,
            layout: Layout::Dense,
            seed: 0,
        }
    }

    /// The case with the causal mask.
    pub fn causal(mut self) -> Self {
        self.causal = true;
        self
    }

    /// The case with a sliding window of `left` keys before the diagonal and `right` after.
    pub fn window(mut self, left: i32, right: i32) -> Self {
        self.window = Some((left, right));
        self
    }

    /// The case with scores soft-capped at `cap`.
    pub fn softcap(mut self, cap: f32) -> Self {
        self.softcap = Some(cap);
        self
    }

    /// The case with this softmax scale.
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// The case in this memory layout.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// The attention options the case runs with (the LSE always returned).
    pub fn options(&self) -> AttentionOptions {
        AttentionOptions {
            causal: self.causal,
            window: self.window,
            scale: self.scale,
            softcap: self.softcap,
            return_lse: true,
            ..Default::default()
        }
    }

    /// Output tolerance (atol = rtol) for the dtype: bf16 2e-2, f16 1e-2, the project's rule.
    pub fn tolerance(&self) -> f64 {
        match self.dtype {
            DType::F16 => 1e-2,
            _ => 2e-2,
        }
    }
}

impl fmt::Display for AttentionCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} b{} sq{} sk{} h{}/{} d{}",
            self.dtype,
            self.batch,
            self.seqlen_q,
            self.seqlen_k,
            self.heads,
            self.kv_heads,
            self.head_dim
        )?;
        if self.causal {
            write!(f, " causal")?;
        }
        if let Some((l, r)) = self.window {
            write!(f, " win({l},{r})")?;
        }
        if let Some(c) = self.softcap {
            write!(f, " cap{c}")?;
        }
        if let Some(scale) = self.scale {
            write!(f, " scale{scale}")?;
        }
        match &self.layout {
            Layout::Dense => Ok(()),
            Layout::PackedQkv => write!(f, " packed-qkv"),
            Layout::HeadsFirst => write!(f, " heads-first"),
            Layout::Varlen(lens) => {
                let lens: Vec<String> = lens.iter().map(|(q, k)| format!("{q}/{k}")).collect();
                write!(f, " varlen[{}]", lens.join(","))
            }
        }
    }
}

/// LSE tolerance (atol = rtol): the LSE is computed in fp32 from the dtype-rounded inputs.
pub const LSE_TOLERANCE: f64 = 1e-3;

/// How cases run, beyond the kernel and the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Record the emulator's global-memory traffic of each case's kernel launch
    /// ([`CaseResult::traffic`]); emulator only. The launch then runs with the memory checker on
    /// (it is on by default anyway).
    pub traffic: bool,
    /// The flash kernel's tile table for every case (`Auto` by default).
    pub flash_tiles: FlashTiles,
}

/// What one case measured.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The kernel's name ([`Kernel::name`]).
    pub kernel: &'static str,
    /// The device's kind: `emu` or `gpu`.
    pub device: &'static str,
    /// The case.
    pub case: AttentionCase,
    /// Largest |out - reference| (NaN when the case did not run).
    pub max_abs_err: f64,
    /// Largest |lse - reference| (NaN when the case did not run).
    pub lse_max_abs_err: f64,
    /// The output tolerance (atol = rtol) the case was held to.
    pub tolerance: f64,
    /// Why the case failed; `None` when it passed.
    pub failure: Option<String>,
    /// Why the case did not run (a head dim this build has no tile for); it neither passed nor
    /// failed.
    pub skipped: Option<&'static str>,
    /// With [`CheckOptions::traffic`] on the emulator, the kernel launch's global traffic per
    /// allocation, labeled "q", "k", "v" ("qkv" for packed QKV), "out", "lse", and
    /// "cu_seqlens_q"/"cu_seqlens_k" for varlen batches (padded buffers count whole). `None`
    /// otherwise, and when the case failed to run.
    pub traffic: Option<Traffic>,
}

impl CaseResult {
    /// Ran and matched the reference.
    pub fn passed(&self) -> bool {
        self.failure.is_none() && self.skipped.is_none()
    }

    /// Ran (or tried to) and did not match.
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// One JSON object (NaN errors of a case that did not run become null). With traffic
    /// recorded, a "traffic" key holds one object per kernel launch: `{"kernel": name,
    /// "allocations": [{"label", "bytes", "bytes_read", "bytes_written"}, ...]}`.
    pub fn to_json(&self) -> String {
        crate::json::to_line(&CaseJson {
            kernel: self.kernel,
            device: self.device,
            case: self.case.to_string(),
            max_abs_err: self.max_abs_err,
            lse_max_abs_err: self.lse_max_abs_err,
            tolerance: self.tolerance,
            pass: self.passed(),
            failure: self.failure.as_deref(),
            skipped: self.skipped,
            traffic: self.traffic.as_ref().map(|t| {
                t.launches
                    .iter()
                    .map(|launch| LaunchJson {
                        kernel: &launch.kernel,
                        allocations: launch
                            .allocations
                            .iter()
                            .map(|a| AllocationJson {
                                label: &a.label,
                                bytes: a.allocation_bytes,
                                bytes_read: a.bytes_read,
                                bytes_written: a.bytes_written,
                            })
                            .collect(),
                    })
                    .collect()
            }),
        })
    }
}

/// A [`CaseResult`] in JSON.
#[derive(Serialize)]
struct CaseJson<'a> {
    kernel: &'static str,
    device: &'static str,
    case: String,
    max_abs_err: f64,
    lse_max_abs_err: f64,
    tolerance: f64,
    pass: bool,
    failure: Option<&'a str>,
    skipped: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traffic: Option<Vec<LaunchJson<'a>>>,
}

/// One kernel launch's recorded traffic in JSON.
#[derive(Serialize)]
struct LaunchJson<'a> {
    kernel: &'a str,
    allocations: Vec<AllocationJson<'a>>,
}

/// One allocation's traffic in a launch, in JSON.
#[derive(Serialize)]
struct AllocationJson<'a> {
    label: &'a str,
    bytes: u64,
    bytes_read: u64,
    bytes_written: u64,
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<10} {:<4} {:<56} err {:>9.2e} lse {:>9.2e} tol {:>7.1e}  {}",
            self.kernel,
            self.device,
            self.case.to_string(),
            self.max_abs_err,
            self.lse_max_abs_err,
            self.tolerance,
            match (&self.failure, self.skipped) {
                (Some(why), _) => format!("FAIL: {why}"),
                (None, Some(why)) => format!("SKIP: {why}"),
                (None, None) => "PASS".to_string(),
            }
        )
    }
}

/// Pass/fail counts of a whole run.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Cases that ran and matched the reference.
    pub passed: usize,
    /// Cases that did not match, or could not run.
    pub failed: usize,
    /// Flash cases whose head dim no head-dim tile of this build holds (cargo features).
    pub skipped: usize,
}

impl CheckReport {
    /// The closing line, in the "N passed, N failed" form test runners print.
    pub fn summary_line(&self) -> String {
        let mut line = format!("check: {} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            line += &format!(
                ", {} skipped (flash head dims without a tile in this build's cargo features)",
                self.skipped
            );
        }
        line
    }
}

/// Odd lengths (1, 17, 97, 113, 127, 203, 257, 1025), seqlen_q != seqlen_k both ways, causal and not.
pub fn length_cases() -> Vec<AttentionCase> {
    let lengths = [
        (1, 1),
        (1, 257),
        (257, 1),
        (17, 17),
        (97, 113),
        (113, 97),
        (127, 203),
        (203, 127),
        (257, 257),
        (33, 1025),
        (1025, 33),
    ];
    let mut cases = Vec::new();
    for &(sq, sk) in &lengths {
        for dtype in [DType::BF16, DType::F16] {
            cases.push(AttentionCase::dense(1, sq, sk, 2, 1, 64, dtype));
            cases.push(AttentionCase::dense(1, sq, sk, 2, 1, 64, dtype).causal());
        }
    }
    seeded(cases, 0x1000)
}

/// GQA group sizes 1, 2, 4, 5, 8 and MQA, batch 2.
pub fn group_cases() -> Vec<AttentionCase> {
    let heads = [(3, 3), (4, 2), (8, 2), (10, 2), (8, 1), (16, 2), (3, 1)];
    let mut cases = Vec::new();
    for (i, &(h, hk)) in heads.iter().enumerate() {
        cases.push(AttentionCase::dense(2, 37, 61, h, hk, 32, alternate(i)).causal());
        cases.push(AttentionCase::dense(2, 61, 37, h, hk, 64, alternate(i + 1)).window(9, 4));
    }
    seeded(cases, 0x2000)
}

/// Head dims: the compiled tiles (64, 96, 128, 192, 256) and others (8, 40, 80, 160).
pub fn head_dim_cases() -> Vec<AttentionCase> {
    let dims = [8, 40, 64, 80, 96, 128, 160, 192, 256];
    let mut cases = Vec::new();
    for &d in &dims {
        for dtype in [DType::BF16, DType::F16] {
            cases.push(AttentionCase::dense(1, 19, 45, 2, 1, d, dtype));
            cases.push(AttentionCase::dense(2, 45, 19, 4, 2, d, dtype).causal());
        }
    }
    seeded(cases, 0x3000)
}

/// Sliding windows (0,0), (17,-1), (-1,3), (64,64), causal with a window, softcap; with
/// seqlen_q < seqlen_k and seqlen_q > seqlen_k. Then scores spread wide (a large scale): a row's
/// running max then jumps mid-row by more than the lag the tiled kernels allow it, so O is
/// rescaled after it holds values (with 1/sqrt(d) on these inputs it never is). Last, a negative
/// and a zero scale.
pub fn mask_cases() -> Vec<AttentionCase> {
    let mut cases = Vec::new();
    for (sq, sk) in [(47, 130), (130, 47), (97, 97)] {
        for &(l, r) in &[(0, 0), (17, -1), (-1, 3), (64, 64)] {
            for dtype in [DType::BF16, DType::F16] {
                cases.push(AttentionCase::dense(1, sq, sk, 4, 2, 64, dtype).window(l, r));
            }
        }
        cases.push(
            AttentionCase::dense(1, sq, sk, 4, 2, 64, DType::BF16)
                .causal()
                .window(17, -1),
        );
        cases.push(
            AttentionCase::dense(1, sq, sk, 4, 2, 64, DType::F16)
                .softcap(5.0)
                .causal(),
        );
    }
    cases.push(AttentionCase::dense(1, 300, 700, 2, 1, 64, DType::BF16).scale(4.0));
    cases.push(
        AttentionCase::dense(1, 200, 900, 2, 2, 128, DType::F16)
            .scale(3.0)
            .causal(),
    );
    cases.push(
        AttentionCase::dense(1, 150, 400, 2, 1, 256, DType::BF16)
            .scale(3.0)
            .softcap(20.0),
    );
    // A negative and a zero scale: the max of the raw scores is not the max of the scaled ones.
    cases.push(
        AttentionCase::dense(1, 90, 170, 2, 1, 64, DType::F16)
            .scale(-0.4)
            .causal(),
    );
    cases.push(AttentionCase::dense(1, 70, 100, 2, 2, 128, DType::BF16).scale(0.0));
    seeded(cases, 0x4000)
}

/// Packed QKV (strided views of one buffer), varlen batches with a length-1 sequence and a
/// sequence with no keys, and heads-first padded views (head stride above the row stride, rows
/// longer than head_dim, at head dims in and at the end of their tiles).
pub fn layout_cases() -> Vec<AttentionCase> {
    let cases = vec![
        AttentionCase::dense(2, 33, 33, 4, 2, 64, DType::BF16)
            .layout(Layout::PackedQkv)
            .causal(),
        AttentionCase::dense(1, 65, 65, 5, 1, 96, DType::F16).layout(Layout::PackedQkv),
        AttentionCase::dense(4, 0, 0, 4, 2, 64, DType::BF16)
            .layout(Layout::Varlen(vec![(1, 1), (17, 40), (64, 33), (5, 0)]))
            .causal(),
        AttentionCase::dense(3, 0, 0, 6, 3, 40, DType::F16)
            .layout(Layout::Varlen(vec![(97, 113), (1, 7), (30, 30)]))
            .window(8, 2),
        AttentionCase::dense(2, 97, 113, 4, 2, 40, DType::BF16)
            .layout(Layout::HeadsFirst)
            .causal(),
        AttentionCase::dense(1, 65, 33, 8, 1, 136, DType::F16).layout(Layout::HeadsFirst),
        AttentionCase::dense(1, 130, 257, 2, 2, 256, DType::BF16)
            .layout(Layout::HeadsFirst)
            .window(20, 3),
    ];
    seeded(cases, 0x5000)
}

/// Lengths one below, at and one above the tiled kernels' tile sizes (32, 64, 128), and long
/// windows whose tiles are partly interior (no element mask) and partly on the boundary.
pub fn tile_edge_cases() -> Vec<AttentionCase> {
    let mut cases = Vec::new();
    let lengths = [
        (63, 65),
        (64, 64),
        (65, 63),
        (127, 129),
        (128, 128),
        (129, 127),
        (31, 33),
    ];
    for (i, &(sq, sk)) in lengths.iter().enumerate() {
        cases.push(AttentionCase::dense(1, sq, sk, 2, 1, 128, alternate(i)).causal());
        cases.push(AttentionCase::dense(1, sq, sk, 2, 2, 64, alternate(i + 1)));
    }
    cases.push(AttentionCase::dense(1, 300, 700, 2, 1, 64, DType::BF16).window(150, 20));
    cases.push(AttentionCase::dense(1, 513, 513, 2, 1, 96, DType::F16).causal());
    cases.push(
        AttentionCase::dense(1, 200, 520, 2, 1, 256, DType::BF16)
            .causal()
            .window(130, -1),
    );
    seeded(cases, 0x6000)
}

/// The head-dim tiles that have two flash tile tables (96-256), on shapes that span several of
/// the wide table's 256-row CTAs and 64-key tiles: causal with rows that see no key, windows
/// bounded on either side or both, and varlen batches with length-1 and key-less sequences.
pub fn table_cases() -> Vec<AttentionCase> {
    let mut cases = Vec::new();
    for (i, head_dim) in [96, 128, 192, 256].into_iter().enumerate() {
        cases.push(AttentionCase::dense(1, 700, 300, 2, 1, head_dim, alternate(i)).causal());
    }
    for (i, (left, right)) in [(0, 0), (5, 7), (40, 90), (70, -1)].into_iter().enumerate() {
        let head_dim = if i % 2 == 0 { 128 } else { 256 };
        cases.push(
            AttentionCase::dense(1, 300, 333, 2, 1, head_dim, alternate(i)).window(left, right),
        );
    }
    cases.push(
        AttentionCase::dense(4, 0, 0, 4, 2, 128, DType::BF16)
            .layout(Layout::Varlen(vec![
                (1, 1),
                (300, 260),
                (17, 0),
                (260, 300),
            ]))
            .causal(),
    );
    cases.push(
        AttentionCase::dense(3, 0, 0, 2, 1, 256, DType::F16)
            .layout(Layout::Varlen(vec![(1, 5), (280, 280), (40, 0)]))
            .causal(),
    );
    cases.push(
        AttentionCase::dense(2, 0, 0, 3, 1, 192, DType::BF16)
            .layout(Layout::Varlen(vec![(270, 300), (9, 1)]))
            .window(30, 10),
    );
    seeded(cases, 0x7000)
}

/// The whole grid `cuattn check` runs; the tests run the same groups.
pub fn attention_cases() -> Vec<AttentionCase> {
    [
        length_cases(),
        group_cases(),
        head_dim_cases(),
        mask_cases(),
        layout_cases(),
        tile_edge_cases(),
        table_cases(),
    ]
    .concat()
}

/// bf16 for even `i`, f16 for odd: both dtypes across every axis without doubling the grid.
fn alternate(i: usize) -> DType {
    if i.is_multiple_of(2) {
        DType::BF16
    } else {
        DType::F16
    }
}

/// Gives each case its own fixed seed.
fn seeded(mut cases: Vec<AttentionCase>, base: u64) -> Vec<AttentionCase> {
    for (i, case) in cases.iter_mut().enumerate() {
        case.seed = base + i as u64;
    }
    cases
}

/// Which of the grid's (kernel, case) pairs a run checks, and the seed of their inputs
/// (`cuattn check --filter`, `--seed`). The default selects every pair with the fixed seeds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaseSelection {
    /// Only the pairs whose [`case_name`] contains this string; `None`: every pair.
    pub filter: Option<String>,
    /// Added (wrapping) to each case's own fixed seed. 0, the default, keeps the inputs of every
    /// earlier run; any other value draws new inputs, still one seed per case.
    pub seed: u64,
}

/// The name a (kernel, case) pair is listed and filtered by: the kernel, then the case (`flash
/// bf16 b1 sq97 sk113 h2/1 d64 causal`), as a check's table shows them.
pub fn case_name(kernel: Kernel, case: &AttentionCase) -> String {
    format!("{} {case}", kernel.name())
}

/// The (kernel, case) pairs a run checks, kernel by kernel in the grid's order.
#[derive(Clone, Debug)]
pub struct CheckPlan {
    /// The cases at least one selected kernel runs, their seeds shifted by the selection's.
    cases: Vec<AttentionCase>,
    /// (kernel, index into `cases`), in run order.
    runs: Vec<(Kernel, usize)>,
}

impl CheckPlan {
    /// The pairs of [`attention_cases`] x [`Kernel::ALL`] that `selection` keeps.
    /// `Error::InvalidArgument` naming `filter` when it matches none: a run that checks nothing
    /// is no pass.
    pub fn new(selection: &CaseSelection) -> Result<CheckPlan> {
        let all: Vec<AttentionCase> = attention_cases()
            .into_iter()
            .map(|mut case| {
                case.seed = case.seed.wrapping_add(selection.seed);
                case
            })
            .collect();
        let keep = |kernel: Kernel, case: &AttentionCase| {
            selection
                .filter
                .as_deref()
                .is_none_or(|f| case_name(kernel, case).contains(f))
        };
        let mut plan = CheckPlan {
            cases: Vec::new(),
            runs: Vec::new(),
        };
        // Index in `plan.cases` of each case of `all`, once a kernel keeps it.
        let mut index: Vec<Option<usize>> = vec![None; all.len()];
        for &kernel in Kernel::ALL {
            for (i, case) in all.iter().enumerate() {
                if keep(kernel, case) {
                    let at = *index[i].get_or_insert_with(|| {
                        plan.cases.push(case.clone());
                        plan.cases.len() - 1
                    });
                    plan.runs.push((kernel, at));
                }
            }
        }
        if plan.runs.is_empty() {
            let filter = selection.filter.as_deref().unwrap_or_default();
            return Err(Error::invalid(
                "filter",
                format!(
                    "`{filter}` is in no case's name, so nothing would be checked; names read \
                     like `{}` (kernel, dtype, batch, seqlen_q, seqlen_k, heads/kv_heads, head \
                     dim, then mask, softcap, scale and layout): `cuattn check` lists them all",
                    case_name(Kernel::DEFAULT, &all[0])
                ),
            ));
        }
        Ok(plan)
    }

    /// How many (kernel, case) pairs the plan runs.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether the plan runs nothing (never true of a plan [`CheckPlan::new`] made).
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The (kernel, case) pairs in run order.
    pub fn pairs(&self) -> impl Iterator<Item = (Kernel, &AttentionCase)> {
        self.runs
            .iter()
            .map(|&(kernel, i)| (kernel, &self.cases[i]))
    }
}

/// Runs every kernel on every case on `device`, reporting each result to `on_case`. Each case's
/// inputs and f64 reference are made once, for all the kernels.
pub fn run_all(device: &Device, on_case: impl FnMut(&CaseResult)) -> Result<CheckReport> {
    run_all_with(device, &CheckOptions::default(), on_case)
}

/// [`run_all`] with options. `Error::InvalidArgument` for traffic on a GPU.
pub fn run_all_with(
    device: &Device,
    options: &CheckOptions,
    on_case: impl FnMut(&CaseResult),
) -> Result<CheckReport> {
    run_plan(
        device,
        options,
        &CheckPlan::new(&CaseSelection::default())?,
        on_case,
    )
}

/// Runs the pairs of `plan` on `device` in order, reporting each result to `on_case`. Each case's
/// inputs and f64 reference are made once, when its first kernel runs it.
/// `Error::InvalidArgument` for traffic on a GPU.
pub fn run_plan(
    device: &Device,
    options: &CheckOptions,
    plan: &CheckPlan,
    mut on_case: impl FnMut(&CaseResult),
) -> Result<CheckReport> {
    check_options(device, options)?;
    let mut report = CheckReport::default();
    let mut prepared: Vec<Option<Prepared>> = plan.cases.iter().map(|_| None).collect();
    for &(kernel, i) in &plan.runs {
        let case = &plan.cases[i];
        let inputs = prepared[i].get_or_insert_with(|| Prepared::new(case));
        let result = run_prepared(device, kernel, case, inputs, options);
        if result.failed() {
            report.failed += 1;
        } else if result.passed() {
            report.passed += 1;
        } else {
            report.skipped += 1;
        }
        on_case(&result);
    }
    Ok(report)
}

/// Runs one case and returns (out, lse) as f64, in the layouts of the reference.
pub fn run_outputs(
    device: &Device,
    kernel: Kernel,
    case: &AttentionCase,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let options = CheckOptions::default();
    let measured = measure(device, kernel, case, &Prepared::new(case), &options)?;
    Ok((measured.out, measured.lse))
}

/// Refuses options the device cannot serve: traffic is counted by the emulator only.
fn check_options(device: &Device, options: &CheckOptions) -> Result<()> {
    if options.traffic && !matches!(device, Device::Emulator) {
        return Err(Error::invalid(
            "traffic",
            format!(
                "traffic is counted on the emulator only, and the device is {}",
                device.kind()
            ),
        ));
    }
    Ok(())
}

/// What one run of a case gave: out and LSE as f64 in the reference's layouts, and the traffic
/// when it was recorded.
struct Measured {
    out: Vec<f64>,
    lse: Vec<f64>,
    traffic: Option<Traffic>,
}

fn measure(
    device: &Device,
    kernel: Kernel,
    case: &AttentionCase,
    prepared: &Prepared,
    options: &CheckOptions,
) -> Result<Measured> {
    match case.dtype {
        DType::F16 => run_typed::<f16>(device, kernel, case, prepared, options),
        _ => run_typed::<bf16>(device, kernel, case, prepared, options),
    }
}

/// Runs one case and compares output and LSE with the f64 reference. A flash case whose head
/// dim has no tile in this build (cargo features) is skipped, not failed.
pub fn run_case(device: &Device, kernel: Kernel, case: &AttentionCase) -> CaseResult {
    run_case_with(device, kernel, case, &CheckOptions::default())
}

/// [`run_case`] with options; options the device cannot serve (traffic on a GPU) fail the case.
pub fn run_case_with(
    device: &Device,
    kernel: Kernel,
    case: &AttentionCase,
    options: &CheckOptions,
) -> CaseResult {
    let mut result = CaseResult::unmeasured(device, kernel, case);
    if result.skipped.is_some() {
        return result; // no inputs or reference made for a case that does not run
    }
    if let Err(e) = check_options(device, options) {
        result.failure = Some(e.to_string());
        return result;
    }
    run_prepared(device, kernel, case, &Prepared::new(case), options)
}

impl CaseResult {
    /// The result before the run: errors unknown, and skipped if this build cannot run it.
    fn unmeasured(device: &Device, kernel: Kernel, case: &AttentionCase) -> CaseResult {
        let no_tile =
            kernel == Kernel::Flash && crate::flash_head_dim_tile(case.head_dim).is_none();
        CaseResult {
            kernel: kernel.name(),
            device: device.kind(),
            case: case.clone(),
            max_abs_err: f64::NAN,
            lse_max_abs_err: f64::NAN,
            tolerance: case.tolerance(),
            failure: None,
            skipped: no_tile.then_some("no flash head-dim tile in this build's cargo features"),
            traffic: None,
        }
    }
}

fn run_prepared(
    device: &Device,
    kernel: Kernel,
    case: &AttentionCase,
    prepared: &Prepared,
    options: &CheckOptions,
) -> CaseResult {
    let mut result = CaseResult::unmeasured(device, kernel, case);
    if result.skipped.is_some() {
        return result;
    }
    let want = &prepared.want;
    match measure(device, kernel, case, prepared, options) {
        Err(e) => result.failure = Some(e.to_string()),
        Ok(Measured { out, lse, traffic }) => {
            result.traffic = traffic;
            result.max_abs_err = max_abs_diff(&out, &want.out);
            result.lse_max_abs_err = max_abs_diff(&lse, &want.lse);
            let tol = case.tolerance();
            if let Err(mismatch) = reference::compare(&out, &want.out, tol, tol) {
                result.failure = Some(format!("out: {mismatch}"));
            } else if let Err(mismatch) =
                reference::compare(&lse, &want.lse, LSE_TOLERANCE, LSE_TOLERANCE)
            {
                result.failure = Some(format!("lse: {mismatch}"));
            }
        }
    }
    result
}

/// Largest |a - b| over finite pairs; infinite pairs that agree count 0, NaN counts infinite.
fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x == y {
                0.0
            } else if x.is_nan() || y.is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f64::max)
}

/// A case's inputs (random, rounded to the case's dtype and widened back: exactly what the
/// kernels get) and the f64 reference on them.
struct Prepared {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    rows_q: usize,
    rows_k: usize,
    varlen: Option<Varlen>,
    want: reference::AttentionReference,
}

impl Prepared {
    fn new(case: &AttentionCase) -> Prepared {
        match case.dtype {
            DType::F16 => Prepared::typed::<f16>(case),
            _ => Prepared::typed::<bf16>(case),
        }
    }

    fn typed<T: Element>(case: &AttentionCase) -> Prepared {
        let mut rng = StdRng::seed_from_u64(case.seed);
        let (h, hk, d) = (case.heads, case.kv_heads, case.head_dim);
        let (rows_q, rows_k, varlen) = match &case.layout {
            Layout::Varlen(lens) => {
                let mut cu_q = vec![0i32];
                let mut cu_k = vec![0i32];
                for &(lq, lk) in lens {
                    cu_q.push(cu_q.last().unwrap() + lq as i32);
                    cu_k.push(cu_k.last().unwrap() + lk as i32);
                }
                let total_q = *cu_q.last().unwrap() as usize;
                let total_k = *cu_k.last().unwrap() as usize;
                (
                    total_q,
                    total_k,
                    Some(Varlen {
                        cu_seqlens_q: cu_q,
                        cu_seqlens_k: cu_k,
                    }),
                )
            }
            _ => (case.batch * case.seqlen_q, case.batch * case.seqlen_k, None),
        };
        let q = random_rounded::<T>(&mut rng, rows_q * h * d);
        let k = random_rounded::<T>(&mut rng, rows_k * hk * d);
        let v = random_rounded::<T>(&mut rng, rows_k * hk * d);
        let (window_left, window_right) = case.options().effective_window();
        let problem = AttentionProblem {
            softcap: f64::from(case.softcap.unwrap_or(0.0)),
            scale: case.scale.map_or(1.0 / (d as f64).sqrt(), f64::from),
            window_left: i64::from(window_left),
            window_right: i64::from(window_right),
            varlen: varlen.clone(),
            ..AttentionProblem::new(case.batch, case.seqlen_q, case.seqlen_k, h, hk, d)
        };
        let want = reference::attention(&problem, &q, &k, &v);
        Prepared {
            q,
            k,
            v,
            rows_q,
            rows_k,
            varlen,
            want,
        }
    }
}

/// `n` values uniform in [-1, 1), rounded to `T` and widened back: the exact kernel inputs.
fn random_rounded<T: Element>(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| T::from_f64(rng.random_range(-1.0..1.0)).to_f64())
        .collect()
}

fn to_elements<T: Element>(xs: &[f64]) -> Vec<T> {
    xs.iter().map(|&x| T::from_f64(x)).collect()
}

/// `x` ([batch, rows, heads, head_dim] row-major) in a [batch, heads, rows, head_dim + ROW_PAD]
/// buffer whose padding is NaN: the buffer and its [batch, rows, heads, head_dim] view.
fn heads_first<T: Element>(
    device: &Device,
    x: &[f64],
    shape: [usize; 4],
) -> Result<(Tensor<T>, Tensor<T>)> {
    let [b, rows, heads, d] = shape;
    let pitch = d + ROW_PAD;
    let mut buf = vec![T::from_f64(f64::NAN); b * heads * rows * pitch];
    for bi in 0..b {
        for r in 0..rows {
            for hh in 0..heads {
                let src = ((bi * rows + r) * heads + hh) * d;
                let dst = ((bi * heads + hh) * rows + r) * pitch;
                for (to, &from) in buf[dst..dst + d].iter_mut().zip(&x[src..src + d]) {
                    *to = T::from_f64(from);
                }
            }
        }
    }
    let whole = Tensor::from_host(device, &buf, &[b, heads, rows, pitch])?;
    let view = whole.view(0, &shape, &[heads * rows * pitch, pitch, rows * pitch, 1])?;
    Ok((whole, view))
}

/// Fails unless the last `pad` elements of every row of `whole` (a contiguous buffer whose rows
/// a view covers all but those of) still hold the NaN they were made with.
fn check_padding_untouched<T: Element>(name: &str, whole: &Tensor<T>, pad: usize) -> Result<()> {
    let pitch = whole.shape().last().copied().unwrap_or(0);
    let written = whole
        .to_host()?
        .chunks(pitch.max(1))
        .flat_map(|row| &row[pitch - pad..])
        .filter(|x| !x.to_f64().is_nan())
        .count();
    if written > 0 {
        return Err(crate::error::Error::Internal(format!(
            "{name}: {written} padding elements past the view's rows were written"
        )));
    }
    Ok(())
}

/// A tensor of `x` rounded to `T`, labeled for traffic records and fault messages.
fn labeled<T: Element>(
    device: &Device,
    x: &[f64],
    shape: &[usize],
    label: &str,
) -> Result<Tensor<T>> {
    Tensor::from_host(device, &to_elements::<T>(x), shape)?.with_label(label)
}

/// Runs `launch` (one attention call), recording its traffic when `traffic` is set.
fn recorded(traffic: bool, launch: impl FnOnce() -> Result<()>) -> Result<Option<Traffic>> {
    let recorder = traffic.then(TrafficRecorder::start).transpose()?;
    launch()?;
    recorder.map(TrafficRecorder::finish).transpose()
}

/// Runs `kernel` on the prepared inputs in the case's layout (outputs NaN-poisoned first);
/// returns out and LSE as f64 in the reference's layouts, and the launch's traffic when
/// `options.traffic` is set (flash runs `options.flash_tiles`). Buffers are labeled "q", "k",
/// "v" (or "qkv"), "out" and "lse".
fn run_typed<T: AttentionElement>(
    device: &Device,
    kernel: Kernel,
    case: &AttentionCase,
    prepared: &Prepared,
    options: &CheckOptions,
) -> Result<Measured> {
    let traffic = options.traffic;
    let (h, hk, d) = (case.heads, case.kv_heads, case.head_dim);
    let Prepared {
        q,
        k,
        v,
        rows_q,
        rows_k,
        varlen,
        ..
    } = prepared;
    let (rows_q, rows_k) = (*rows_q, *rows_k);
    let opts = AttentionOptions {
        flash_tiles: options.flash_tiles,
        ..case.options()
    };
    let poison = T::from_f64(f64::NAN);
    let (out, lse, traffic) = match (&case.layout, &varlen) {
        (Layout::Varlen(_), Some(vl)) => {
            let batch = VarlenBatch::new(device, &vl.cu_seqlens_q, &vl.cu_seqlens_k)?;
            let qt = labeled::<T>(device, q, &[rows_q, h, d], "q")?;
            let kt = labeled::<T>(device, k, &[rows_k, hk, d], "k")?;
            let vt = labeled::<T>(device, v, &[rows_k, hk, d], "v")?;
            let mut out = Tensor::full(device, &[rows_q, h, d], poison)?.with_label("out")?;
            let mut lse = Tensor::full(device, &[h, rows_q], f32::NAN)?.with_label("lse")?;
            let traffic = recorded(traffic, || {
                let lse = Some(&mut lse);
                attention_varlen_into(kernel, &qt, &kt, &vt, &batch, &mut out, lse, &opts)
            })?;
            (out, lse, traffic)
        }
        (Layout::PackedQkv, _) => {
            let (b, s) = (case.batch, case.seqlen_q);
            let width = h + 2 * hk;
            let mut packed = vec![T::default(); b * s * width * d];
            for row in 0..b * s {
                let dst = &mut packed[row * width * d..(row + 1) * width * d];
                dst[..h * d].copy_from_slice(&to_elements::<T>(&q[row * h * d..(row + 1) * h * d]));
                dst[h * d..(h + hk) * d]
                    .copy_from_slice(&to_elements::<T>(&k[row * hk * d..(row + 1) * hk * d]));
                dst[(h + hk) * d..]
                    .copy_from_slice(&to_elements::<T>(&v[row * hk * d..(row + 1) * hk * d]));
            }
            let qkv = Tensor::from_host(device, &packed, &[b, s, width, d])?.with_label("qkv")?;
            let strides = [s * width * d, width * d, d, 1];
            let qt = qkv.view(0, &[b, s, h, d], &strides)?;
            let kt = qkv.view(h * d, &[b, s, hk, d], &strides)?;
            let vt = qkv.view((h + hk) * d, &[b, s, hk, d], &strides)?;
            let mut out = Tensor::full(device, &[b, s, h, d], poison)?.with_label("out")?;
            let mut lse = Tensor::full(device, &[b, h, s], f32::NAN)?.with_label("lse")?;
            let traffic = recorded(traffic, || {
                attention_into(kernel, &qt, &kt, &vt, &mut out, Some(&mut lse), &opts)
            })?;
            (out, lse, traffic)
        }
        (Layout::HeadsFirst, _) => {
            let (b, sq, sk) = (case.batch, case.seqlen_q, case.seqlen_k);
            let (_, qt) = heads_first::<T>(device, q, [b, sq, h, d])?;
            let (_, kt) = heads_first::<T>(device, k, [b, sk, hk, d])?;
            let (_, vt) = heads_first::<T>(device, v, [b, sk, hk, d])?;
            let (out_buffer, out) =
                heads_first::<T>(device, &vec![f64::NAN; b * sq * h * d], [b, sq, h, d])?;
            let (out_shape, out_strides) = (out.shape().to_vec(), out.strides().to_vec());
            drop(out);
            let pitch = sq + LSE_PAD;
            let lse_buffer = Tensor::full(device, &[b, h, pitch], f32::NAN)?.with_label("lse")?;
            let lse_strides = [h * pitch, pitch, 1];
            // The outputs are re-viewed whole handles: a tensor a call writes is its buffer's
            // only handle.
            let (out_whole_shape, lse_whole_shape) = (out_buffer.shape().to_vec(), [b, h, pitch]);
            let mut out = out_buffer
                .into_view(0, &out_shape, &out_strides)?
                .with_label("out")?;
            let mut lse = lse_buffer.into_view(0, &[b, h, sq], &lse_strides)?;
            // The views share their buffers, and with them the labels.
            let qt = qt.with_label("q")?;
            let kt = kt.with_label("k")?;
            let vt = vt.with_label("v")?;
            let traffic = recorded(traffic, || {
                attention_into(kernel, &qt, &kt, &vt, &mut out, Some(&mut lse), &opts)
            })?;
            let contiguous = crate::tensor::contiguous_strides;
            let out_buffer = out.into_view(0, &out_whole_shape, &contiguous(&out_whole_shape))?;
            let lse_buffer = lse.into_view(0, &lse_whole_shape, &contiguous(&lse_whole_shape))?;
            check_padding_untouched("out", &out_buffer, ROW_PAD)?;
            check_padding_untouched("lse", &lse_buffer, LSE_PAD)?;
            (
                out_buffer.view(0, &out_shape, &out_strides)?,
                lse_buffer.view(0, &[b, h, sq], &lse_strides)?,
                traffic,
            )
        }
        _ => {
            let (b, sq, sk) = (case.batch, case.seqlen_q, case.seqlen_k);
            let qt = labeled::<T>(device, q, &[b, sq, h, d], "q")?;
            let kt = labeled::<T>(device, k, &[b, sk, hk, d], "k")?;
            let vt = labeled::<T>(device, v, &[b, sk, hk, d], "v")?;
            let mut out = Tensor::full(device, &[b, sq, h, d], poison)?.with_label("out")?;
            let mut lse = Tensor::full(device, &[b, h, sq], f32::NAN)?.with_label("lse")?;
            let traffic = recorded(traffic, || {
                attention_into(kernel, &qt, &kt, &vt, &mut out, Some(&mut lse), &opts)
            })?;
            (out, lse, traffic)
        }
    };
    Ok(Measured {
        out: out.to_host()?.into_iter().map(Element::to_f64).collect(),
        lse: lse.to_host()?.into_iter().map(Element::to_f64).collect(),
        traffic,
    })
}
