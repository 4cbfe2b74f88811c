//! `cuattn run`: one kernel on tensors read from .npy files, through the safe API (which
//! validates every argument), with the results written back as float32 .npy files. With
//! `--paged P` the same problem goes through the paged KV cache and the paged attention kernel
//! instead of a dense kernel (`paged`); with `--pattern` or `--block-mask` through block-sparse
//! attention (`sparse`); the outputs in the same layouts.

mod linear;
mod lowrank;
mod paged;
mod sparse;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use half::{bf16, f16};

use super::DeviceChoice;
use crate::attention::{
    attention, attention_varlen, AttentionOptions, AttentionParams, Kernel, SplitKv, VarlenBatch,
};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::npy::{self, NpyArray};
use crate::sparse::{BlockMatrix, Pattern};
use crate::tensor::{AttentionElement, Element, Tensor};

/// The kernel families `cuattn run` runs.
#[derive(Subcommand)]
pub enum RunCommand {
    /// Exact attention forward: out = softmax(scale * q k^T, masked) v, and optionally the LSE.
    // Boxed: its many flags would make every `cuattn` command as large.
    Attention(Box<AttentionArgs>),
    /// Low-rank (Linformer) attention: k and v projected along the sequence by E and F, then
    /// softmax(scale * q (E k)^T) (F v); non-causal.
    Lowrank(Box<lowrank::LowrankArgs>),
    /// Linear (kernel-based) attention: a feature map phi replaces softmax (elu1, relu, or
    /// FAVOR+ random features), out_i = phi(q_i)^T S / (phi(q_i)^T z + eps).
    Linear(Box<linear::LinearArgs>),
}

/// The element type the kernel computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RunDType {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl RunDType {
    fn name(self) -> &'static str {
        match self {
            RunDType::F16 => "f16",
            RunDType::Bf16 => "bf16",
        }
    }
}

/// The flags of `cuattn run attention`.
#[derive(Args)]
pub struct AttentionArgs {
    /// Queries, float32 or float16: [batch, seqlen_q, heads, head_dim] (varlen: [total_q, heads,
    /// head_dim]).
    #[arg(long, value_name = "Q.npy")]
    q: PathBuf,
    /// Keys: [batch, seqlen_k, kv_heads, head_dim] (varlen: [total_k, kv_heads, head_dim]).
    #[arg(long, value_name = "K.npy")]
    k: PathBuf,
    /// Values, shaped like the keys.
    #[arg(long, value_name = "V.npy")]
    v: PathBuf,
    /// Output file: float32, shaped like q.
    #[arg(long, value_name = "O.npy")]
    out: PathBuf,
    /// Also write the natural-log LSE: float32 [batch, heads, seqlen_q] (varlen: [heads, total_q]).
    #[arg(long, value_name = "L.npy")]
    lse: Option<PathBuf>,
    /// Element type the kernel runs in; inputs are rounded to it (to nearest even).
    #[arg(long, value_enum, default_value_t = RunDType::Bf16)]
    dtype: RunDType,
    /// Causal mask, aligned to the bottom-right corner when seqlen_q != seqlen_k.
    #[arg(long)]
    causal: bool,
    /// Sliding window: keys up to LEFT before and RIGHT after the diagonal are visible; -1 is
    /// unbounded.
    #[arg(long, value_name = "LEFT,RIGHT", value_parser = parse_window, allow_hyphen_values = true)]
    window: Option<(i32, i32)>,
    /// Score scale [default: 1/sqrt(head_dim)].
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    scale: Option<f32>,
    /// Soft cap: each scaled score s becomes C * tanh(s / C).
    #[arg(long, value_name = "C", allow_hyphen_values = true)]
    softcap: Option<f32>,
    #[arg(long, help = kernel_help(), value_parser = super::kernel_parser())]
    kernel: Option<Kernel>,
    /// Where the kernel runs.
    #[arg(long, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Varlen batch: int32 query offsets [batch + 1] into the packed q (needs --cu-seqlens-k).
    #[arg(long, value_name = "CQ.npy", requires = "cu_seqlens_k")]
    cu_seqlens_q: Option<PathBuf>,
    /// Varlen batch: int32 key offsets [batch + 1] into the packed k and v (needs --cu-seqlens-q).
    #[arg(long, value_name = "CK.npy", requires = "cu_seqlens_q")]
    cu_seqlens_k: Option<PathBuf>,
    /// Run the paged attention kernel over a paged KV cache of pages of P tokens (1..=4096)
    /// instead of a dense kernel; out and lse as without it.
    ///
    /// Each batch entry (or varlen sequence) is a sequence of a one-layer cache (the files'
    /// kv_heads and head_dim, --dtype, --page-layout) holding twice the pages the sequences
    /// need, its free list shuffled with a fixed seed so that a sequence's consecutive pages are
    /// seldom adjacent. The keys and values are appended by the append kernel in steps (see
    /// --chunks), all sequences together in each step; the last step appends each sequence's
    /// last seqlen_q keys, those of the query tokens, which then attend over the cache as an
    /// engine's new tokens do: bottom-right aligned, so seqlen_q must be at most seqlen_k. Takes
    /// --causal, --window, --softcap, --scale and --lse as the dense run; not --kernel.
    #[arg(long, value_name = "P")]
    paged: Option<usize>,
    /// With --paged: the order of a page's elements [default: nhd].
    #[arg(long, value_enum, value_name = "LAYOUT")]
    page_layout: Option<paged::PageLayout>,
    /// With --paged, dense input: the append steps, token counts summing to seqlen_k, the last
    /// at least seqlen_q.
    ///
    /// Steps N1 ... N(m-1), then Nm - seqlen_q (unless 0), then the seqlen_q query tokens.
    /// Default (and for each varlen sequence, which takes no --chunks): the c = seqlen_k -
    /// seqlen_q keys before the queries in steps of ceil(c/2), ceil(c/3) and the rest (empty
    /// ones left out), then the query tokens: for seqlen_k 50 and seqlen_q 5, steps 23, 15, 7
    /// and 5, as --chunks 23,15,12 gives.
    #[arg(long, value_name = "N1,N2,...", value_delimiter = ',')]
    chunks: Option<Vec<usize>>,
    /// With --paged: how the paged kernel splits each sequence's keys among CTAs: auto (when
    /// the unsplit grid would leave SMs idle; the emulator plans as an H200), off, or S splits
    /// [default: auto].
    #[arg(long, value_name = "auto|off|S", value_parser = parse_split_kv)]
    split_kv: Option<SplitKv>,
    /// Block-sparse run: the block matrix from a bool or uint8 file of 0 and 1, [batch or 1,
    /// heads or 1, nq, nk] (a dim of 1 shared); needs --block-size.
    ///
    /// Entry (b, h, i, j) says whether query block i of sequence b, head h sees key block j;
    /// nq and nk are the longest sequence's lengths in blocks (ceil(seqlen_q / BQ),
    /// ceil(seqlen_k / BK)), blocks aligned at each sequence's start. --causal and --window apply
    /// element by element inside the visible blocks. Not with --pattern, --kernel or --paged.
    #[arg(long, value_name = "M.npy")]
    block_mask: Option<PathBuf>,
    /// Block-sparse run: the block matrix of a pattern over q's heads; needs --block-size.
    ///
    /// local:w=W, strided:w=W,s=S, dilated:w=W,d=D, longformer:w=W,global=G or
    /// bigbird:w=W,global=G,random=R,seed=X[,per_head=1], in blocks, bottom-right aligned as the
    /// causal mask is, each sequence of a varlen batch on its own grid (its own diagonal).
    /// --causal and --window apply element by element inside the visible blocks, each sequence
    /// by its own lengths. Not with --block-mask, --kernel or --paged.
    #[arg(long, value_name = "PATTERN", value_parser = parse_pattern)]
    pattern: Option<Pattern>,
    /// With --block-mask or --pattern: the query and key block sizes, multiples of 16.
    #[arg(long, value_name = "BQ,BK", value_parser = parse_block_size)]
    block_size: Option<(usize, usize)>,
    /// With a bigbird --pattern: each head draws its own random blocks (per_head=1).
    #[arg(long)]
    per_head_random: bool,
    /// With --block-mask or --pattern: write the block matrix the run used, before --causal and
    /// --window cut it, as a uint8 file that --block-mask reads back.
    #[arg(long, value_name = "M.npy")]
    save_block_mask: Option<PathBuf>,
}

fn kernel_help() -> String {
    format!(
        "Dense kernel to run [default: {}]; not with --paged, --pattern or --block-mask, which \
         run the paged and the block-sparse kernel",
        Kernel::DEFAULT.name()
    )
}

fn parse_split_kv(s: &str) -> std::result::Result<SplitKv, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

fn parse_pattern(s: &str) -> std::result::Result<Pattern, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

/// `BQ,BK` as two sizes; their range is BlockMask's to check.
fn parse_block_size(s: &str) -> std::result::Result<(usize, usize), String> {
    let parse = |side: &str, x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|e| format!("{side} `{}`: {e} (expected BQ,BK)", x.trim()))
    };
    let (bq, bk) = s
        .split_once(',')
        .ok_or_else(|| "expected BQ,BK, e.g. 64,64".to_string())?;
    Ok((parse("BQ", bq)?, parse("BK", bk)?))
}

/// The block-sparse settings, or `None` for another run; refuses the block-sparse flags without
/// `--block-mask` or `--pattern`, both of those together, and `--kernel` or `--paged` with them.
fn sparse_settings(args: &AttentionArgs) -> Result<Option<sparse::SparseSettings>> {
    let source = match (&args.block_mask, &args.pattern) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "pattern",
                "--block-mask and --pattern both give the block matrix: leave one out",
            ))
        }
        (Some(path), None) => sparse::MaskSource::File(path.clone()),
        (None, Some(pattern)) => sparse::MaskSource::Pattern(pattern.clone()),
        (None, None) => {
            for (arg, given) in [
                ("block_size", args.block_size.is_some()),
                ("per_head_random", args.per_head_random),
                ("save_block_mask", args.save_block_mask.is_some()),
            ] {
                if given {
                    return Err(Error::invalid(
                        arg,
                        format!(
                            "--{} applies to the block-sparse run only: add --block-mask M.npy \
                             or --pattern P",
                            arg.replace('_', "-")
                        ),
                    ));
                }
            }
            return Ok(None);
        }
    };
    let flag = source.flag();
    if let Some(kernel) = args.kernel {
        return Err(Error::invalid(
            "kernel",
            format!(
                "--kernel {} picks a dense kernel, but {flag} runs the block-sparse kernel: leave \
                 one out",
                kernel.name()
            ),
        ));
    }
    if let Some(page_size) = args.paged {
        return Err(Error::invalid(
            "paged",
            format!(
                "--paged {page_size} runs the paged kernel over a paged KV cache, but {flag} runs \
                 the block-sparse kernel over dense K and V: leave one out"
            ),
        ));
    }
    let Some(block_size) = args.block_size else {
        return Err(Error::invalid(
            "block_size",
            format!("{flag} needs --block-size BQ,BK: the query and key block sizes of its grid"),
        ));
    };
    if args.save_block_mask.is_some()
        && [Some(&args.out), args.lse.as_ref()].contains(&args.save_block_mask.as_ref())
    {
        return Err(Error::invalid(
            "save_block_mask",
            "the same file as --out or --lse: give each output its own path",
        ));
    }
    let source = match source {
        sparse::MaskSource::Pattern(pattern) if args.per_head_random => match pattern {
            Pattern::BigBird {
                w,
                global,
                random,
                seed,
                ..
            } => sparse::MaskSource::Pattern(Pattern::BigBird {
                w,
                global,
                random,
                seed,
                per_head: true,
            }),
            other => {
                return Err(Error::invalid(
                    "per_head_random",
                    format!(
                        "--per-head-random draws BigBird's random blocks per head, but --pattern \
                         {other} is a {} pattern, which has none: use a bigbird pattern",
                        other.name()
                    ),
                ))
            }
        },
        sparse::MaskSource::File(_) if args.per_head_random => {
            return Err(Error::invalid(
                "per_head_random",
                "--per-head-random applies to a bigbird --pattern; a --block-mask file gives \
                 each head's blocks itself (its heads dim)",
            ))
        }
        source => source,
    };
    Ok(Some(sparse::SparseSettings { source, block_size }))
}

/// The `--paged` settings, or `None` for a dense run; refuses the paged flags without `--paged`
/// and `--kernel` with it.
fn paged_settings(args: &AttentionArgs) -> Result<Option<paged::PagedSettings>> {
    let Some(page_size) = args.paged else {
        for (arg, given) in [
            ("page_layout", args.page_layout.is_some()),
            ("chunks", args.chunks.is_some()),
            ("split_kv", args.split_kv.is_some()),
        ] {
            if given {
                return Err(Error::invalid(
                    arg,
                    format!(
                        "--{} applies to the paged run only: add --paged P",
                        arg.replace('_', "-")
                    ),
                ));
            }
        }
        return Ok(None);
    };
    if let Some(kernel) = args.kernel {
        return Err(Error::invalid(
            "kernel",
            format!(
                "--kernel {} picks a dense kernel, but --paged {page_size} runs the paged \
                 attention kernel: leave one out",
                kernel.name()
            ),
        ));
    }
    paged::PagedSettings::new(
        page_size,
        args.page_layout,
        args.chunks.clone(),
        args.split_kv,
    )
    .map(Some)
}

/// `LEFT,RIGHT` as two integers; their range is the attention API's to check.
fn parse_window(s: &str) -> std::result::Result<(i32, i32), String> {
    let parse = |side: &str, x: &str| {
        x.trim()
            .parse::<i32>()
            .map_err(|e| format!("{side} `{}`: {e} (expected LEFT,RIGHT)", x.trim()))
    };
    let (left, right) = s
        .split_once(',')
        .ok_or_else(|| "expected LEFT,RIGHT, e.g. 128,0".to_string())?;
    Ok((parse("LEFT", left)?, parse("RIGHT", right)?))
}

/// Runs one `cuattn run` subcommand.
pub fn run(cmd: RunCommand) -> Result<ExitCode> {
    match cmd {
        RunCommand::Attention(args) => run_attention(&args),
        RunCommand::Lowrank(args) => lowrank::run(&args),
        RunCommand::Linear(args) => linear::run_linear(&args),
    }
}

/// What one attention run produced, widened to f32: out, and the LSE with its shape; for a
/// block-sparse run, the block matrix it used (what `--save-block-mask` writes).
struct Outputs {
    out: Vec<f32>,
    lse: Option<(Vec<usize>, Vec<f32>)>,
    block_matrix: Option<BlockMatrix>,
}

impl Outputs {
    /// The outputs of a call, copied to the host and widened (f16 and bf16 widen to f32
    /// exactly).
    fn from_tensors<T: Element>(out: &Tensor<T>, lse: Option<&Tensor<f32>>) -> Result<Outputs> {
        let out = out
            .to_host()?
            .into_iter()
            .map(|x| x.to_f64() as f32)
            .collect();
        let lse = match lse {
            Some(lse) => Some((lse.shape().to_vec(), lse.to_host()?)),
            None => None,
        };
        Ok(Outputs {
            out,
            lse,
            block_matrix: None,
        })
    }
}

fn run_attention(args: &AttentionArgs) -> Result<ExitCode> {
    if args.lse.as_ref() == Some(&args.out) {
        return Err(Error::invalid(
            "lse",
            "the same file as --out: give each output its own path",
        ));
    }
    let sparse = sparse_settings(args)?;
    let paged = paged_settings(args)?;
    let q = read_tensor("q", &args.q)?;
    let k = read_tensor("k", &args.k)?;
    let v = read_tensor("v", &args.v)?;
    let cu_seqlens = match (&args.cu_seqlens_q, &args.cu_seqlens_k) {
        (Some(cq), Some(ck)) => Some((
            read_offsets("cu_seqlens_q", cq)?,
            read_offsets("cu_seqlens_k", ck)?,
        )),
        (None, None) => None,
        _ => {
            return Err(Error::invalid(
                "cu_seqlens_k",
                "--cu-seqlens-q and --cu-seqlens-k go together (varlen) or not at all",
            ))
        }
    };
    let opts = AttentionOptions {
        causal: args.causal,
        window: args.window,
        scale: args.scale,
        softcap: args.softcap,
        return_lse: args.lse.is_some(),
        ..Default::default()
    };
    let device = args.device.open()?;
    let (what, outputs, note) = match (&paged, &sparse) {
        (None, None) => {
            let kernel = args.kernel.unwrap_or(Kernel::DEFAULT);
            let run = Run {
                kernel,
                device: &device,
                opts,
                cu_seqlens: cu_seqlens.as_ref(),
            };
            let outputs = match args.dtype {
                RunDType::F16 => run.execute::<f16>(&q, &k, &v)?,
                RunDType::Bf16 => run.execute::<bf16>(&q, &k, &v)?,
            };
            (
                format!("attention kernel {}", kernel.name()),
                outputs,
                String::new(),
            )
        }
        (Some(settings), _) => {
            let inputs = (&q, &k, &v);
            let cu = cu_seqlens.as_ref();
            let (outputs, note) = match args.dtype {
                RunDType::F16 => paged::execute::<f16>(&device, settings, &opts, inputs, cu)?,
                RunDType::Bf16 => paged::execute::<bf16>(&device, settings, &opts, inputs, cu)?,
            };
            ("paged attention".to_string(), outputs, note)
        }
        (None, Some(settings)) => {
            let inputs = (&q, &k, &v);
            let cu = cu_seqlens.as_ref();
            let (outputs, note) = match args.dtype {
                RunDType::F16 => sparse::execute::<f16>(&device, settings, &opts, inputs, cu)?,
                RunDType::Bf16 => sparse::execute::<bf16>(&device, settings, &opts, inputs, cu)?,
            };
            ("block-sparse attention".to_string(), outputs, note)
        }
    };
    npy::write_f32(&args.out, &q.shape, &outputs.out)?;
    let mut written = args.out.display().to_string();
    if let (Some(path), Some((shape, lse))) = (&args.lse, &outputs.lse) {
        npy::write_f32(path, shape, lse)?;
        written = format!("{written}, {}", path.display());
    }
    if let (Some(path), Some(matrix)) = (&args.save_block_mask, &outputs.block_matrix) {
        npy::write_mask(path, &matrix.dims(), matrix.blocks())?;
        written = format!("{written}, {}", path.display());
    }
    eprintln!(
        "ran {what} on {}: {}, q {:?}, k {:?}, v {:?}{}{}{note} -> {written}",
        device.name(),
        args.dtype.name(),
        q.shape,
        k.shape,
        v.shape,
        cu_seqlens.as_ref().map_or(String::new(), |(cq, _)| format!(
            ", varlen batch {}",
            cq.len() - 1
        )),
        describe_options(&opts),
    );
    Ok(ExitCode::SUCCESS)
}

/// `, causal, window (5, 3), scale 0.5, softcap 30`: the options that differ from the default.
fn describe_options(opts: &AttentionOptions) -> String {
    let mut s = String::new();
    if opts.causal {
        s += ", causal";
    }
    if let Some((left, right)) = opts.window {
        s += &format!(", window ({left}, {right})");
    }
    if let Some(scale) = opts.scale {
        s += &format!(", scale {scale}");
    }
    if let Some(softcap) = opts.softcap {
        s += &format!(", softcap {softcap}");
    }
    s
}

/// An input file given as `--{arg}` (underscores as dashes) that cannot be read, or does not
/// hold what the flag needs, is that argument's refusal (a usage error, exit 2), naming the flag.
pub(crate) fn with_flag(arg: &'static str, e: Error) -> Error {
    match e {
        Error::Io { .. } => {
            Error::invalid(arg, format!("{e} (given as --{})", arg.replace('_', "-")))
        }
        other => other,
    }
}

fn read_tensor(arg: &'static str, path: &Path) -> Result<NpyArray> {
    npy::read_f32(path).map_err(|e| with_flag(arg, e))
}

fn read_offsets(arg: &'static str, path: &Path) -> Result<Vec<i32>> {
    let (shape, offsets) = npy::read_i32(path).map_err(|e| with_flag(arg, e))?;
    if shape.len() != 1 {
        return Err(Error::invalid(
            arg,
            format!(
                "{}: shape {shape:?}, expected rank 1 [batch + 1]",
                path.display()
            ),
        ));
    }
    Ok(offsets)
}

/// The varlen batch of `cu_q`/`cu_k` over packed q `[total_q, heads, head_dim]` and k
/// `[total_k, kv_heads, head_dim]`, checked before a run builds anything from its lengths:
/// ranks, head dims, heads and kv_heads and the options as the dense run checks them, and the
/// offsets against the packed rows.
fn varlen_batch<T: AttentionElement>(
    device: &Device,
    q: &NpyArray,
    k: &NpyArray,
    opts: &AttentionOptions,
    cu_q: &[i32],
    cu_k: &[i32],
) -> Result<VarlenBatch> {
    for (name, a) in [("q", q), ("k", k)] {
        if a.shape.len() != 3 {
            return Err(Error::invalid(
                name,
                format!(
                    "shape {:?}: expected rank 3 [total_tokens, heads, head_dim] for a varlen \
                     batch",
                    a.shape
                ),
            ));
        }
    }
    let &[total_q, heads, head_dim] = q.shape.as_slice() else {
        unreachable!("rank checked")
    };
    let &[total_k, kv_heads, k_head_dim] = k.shape.as_slice() else {
        unreachable!("rank checked")
    };
    if k_head_dim != head_dim {
        return Err(Error::invalid(
            "k",
            format!("shape {:?}: head_dim must match q's {:?}", k.shape, q.shape),
        ));
    }
    // Head dim, heads and kv_heads, and the options, as the dense run checks them.
    AttentionParams::dense_shape::<T>(
        &[1, total_q.max(1), heads, head_dim],
        &[1, total_k.max(1), kv_heads, head_dim],
        opts,
    )?;
    let batch = VarlenBatch::new(device, cu_q, cu_k)?;
    crate::attention::check_varlen_rows(&batch, total_q, total_k)?;
    Ok(batch)
}

/// One attention call, generic over the element type it runs in.
struct Run<'a> {
    kernel: Kernel,
    device: &'a Device,
    opts: AttentionOptions,
    cu_seqlens: Option<&'a (Vec<i32>, Vec<i32>)>,
}

/// An input rounded to `T` (to nearest even) on the device.
fn upload<T: Element>(device: &Device, a: &NpyArray) -> Result<Tensor<T>> {
    let data: Vec<T> = a.data.iter().map(|&x| T::from_f64(f64::from(x))).collect();
    Tensor::from_host(device, &data, &a.shape)
}

impl Run<'_> {
    fn execute<T: AttentionElement>(
        &self,
        q: &NpyArray,
        k: &NpyArray,
        v: &NpyArray,
    ) -> Result<Outputs> {
        let upload = |a: &NpyArray| upload::<T>(self.device, a);
        let (q, k, v) = (upload(q)?, upload(k)?, upload(v)?);
        let result = match self.cu_seqlens {
            None => attention(self.kernel, &q, &k, &v, &self.opts)?,
            Some((cu_q, cu_k)) => {
                let batch = VarlenBatch::new(self.device, cu_q, cu_k)?;
                attention_varlen(self.kernel, &q, &k, &v, &batch, &self.opts)?
            }
        };
        Outputs::from_tensors(&result.out, result.lse.as_ref())
    }
}
