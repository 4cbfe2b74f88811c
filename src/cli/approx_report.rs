//! `cuattn approx-report`: exact attention and each approximation on the same inputs (seeded
//! synthetic ones, or q, k, v from .npy files), a table of their errors against exact attention
//! and their costs, optionally as JSON and as a plot of error against FLOPs.

use std::path::PathBuf;
use std::process::ExitCode;

use super::DeviceChoice;
use crate::approx::report::{
    approx_report, table_header, HostInputs, Method, ReportEvent, ReportInputs, SyntheticInputs,
    EMULATOR_SEQLENS, EXACT_SAMPLE_ROWS, GPU_SEQLENS,
};
use crate::error::{Error, Result};
use crate::npy;

/// The flags of `cuattn approx-report`.
#[derive(clap::Args)]
pub struct ApproxReportArgs {
    /// Queries, float32 or float16 [batch, seqlen_q, heads, head_dim], e.g. saved from a model
    /// with numpy; with --k and --v, the report runs on them instead of synthetic inputs.
    #[arg(long, value_name = "Q.npy", requires_all = ["k", "v"])]
    q: Option<PathBuf>,
    /// Keys [batch, seqlen_k, kv_heads, head_dim] (with --q and --v).
    #[arg(long, value_name = "K.npy", requires_all = ["q", "v"])]
    k: Option<PathBuf>,
    /// Values, shaped like the keys (with --q and --k).
    #[arg(long, value_name = "V.npy", requires_all = ["q", "k"])]
    v: Option<PathBuf>,
    /// Synthetic inputs' lengths, comma-separated [default: 1024,4096,16384 on a GPU, 256,512
    /// on the emulator].
    #[arg(long, value_name = "N1,N2,...", value_delimiter = ',')]
    seq: Vec<usize>,
    /// The seed of the synthetic inputs, of BigBird's random blocks, of FAVOR's features and of
    /// Linformer's projections.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Also write the rows as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also draw error against FLOPs (log scale) as a PNG, one series a method, each point
    /// labelled with its length.
    #[arg(long, value_name = "FILE.png")]
    plot: Option<PathBuf>,
    /// Where the kernels run; times are taken on a GPU only.
    #[arg(long, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

/// The help's account of the report, its methods and its synthetic inputs.
pub const LONG_ABOUT: &str = "\
Exact attention and each approximation on the same inputs: for each, the relative error of its \
output against exact attention's, ||o - o_exact|| / ||o_exact|| over the whole output and over \
its worst row (one query of one head), the FLOPs and the bytes of global memory it needs \
(counted analytically), and on a GPU its median time.

Every method runs non-causal attention (the form all of them have: Linformer-style low-rank \
attention is non-causal only) at scale 1/sqrt(head_dim), in bf16. The exact output is the flash \
kernel's; the errors are computed in f64 on the host. The exact row's own error is the flash \
kernel against an f64 softmax on 64 query rows of each sequence and head: the floor of bf16 \
rounding.

Methods: exact (flash); sliding window w=256 and w=1024 (each query sees w/2 keys either side); \
BigBird block-sparse in 64x64 blocks, its parameters (band w, one global block, random blocks) \
chosen per length for about 15% of the block grid (the density is in the row: a 1k grid of 16 \
blocks holds no pattern below 35%); linear attention with elu(x)+1 features; FAVOR+ with 64 and \
256 orthogonal random features; Linformer with k_proj 64 and 256, its projections E and F drawn \
i.i.d. N(0, 1/k_proj).

Without --q/--k/--v the inputs are synthetic and seeded (batch 1, 8 heads, head dim 64), with \
local structure plus a few global tokens, so that the report means something out of the box: \
per head a smooth random walk over the positions (correlation falling by e every 16 tokens) \
makes nearby queries and keys alike (a query scores the key at its own position about 4, far \
ones about 0); 4 global tokens (position 0, an attention sink, and 3 at seeded positions) have \
keys that every query scores about 5, so they draw a large share of the attention; values are \
another smooth walk. On the emulator, which is slow, the default lengths are 256 and 512.";

/// Runs `cuattn approx-report`.
pub fn approx_report_command(args: &ApproxReportArgs) -> Result<ExitCode> {
    if let (Some(json), Some(plot)) = (&args.json, &args.plot) {
        if json == plot {
            return Err(Error::invalid(
                "plot",
                "the same file as --json: give each output its own path",
            ));
        }
    }
    let device = args.device.open()?;
    let inputs = match (&args.q, &args.k, &args.v) {
        (Some(q), Some(k), Some(v)) => {
            if !args.seq.is_empty() {
                return Err(Error::invalid(
                    "seq",
                    "--seq sets the lengths of the synthetic inputs; --q, --k and --v bring \
                     their own",
                ));
            }
            // A file's error names the flag that gave it.
            let read = |flag: &'static str, path: &PathBuf| {
                npy::read_f32(path).map_err(|e| super::run::with_flag(flag, e))
            };
            let (q_arr, k_arr, v_arr) = (read("q", q)?, read("k", k)?, read("v", v)?);
            let source = format!(
                "files: q {}, k {}, v {}",
                q.display(),
                k.display(),
                v.display()
            );
            ReportInputs::Given(HostInputs::new(
                (&q_arr.shape, q_arr.data),
                (&k_arr.shape, k_arr.data),
                (&v_arr.shape, v_arr.data),
                source,
            )?)
        }
        _ => {
            let seqlens = if !args.seq.is_empty() {
                if let Some(bad) = args.seq.iter().find(|&&n| n == 0) {
                    return Err(Error::invalid(
                        "seq",
                        format!("{bad}: lengths must be positive"),
                    ));
                }
                args.seq.clone()
            } else if device.is_cuda() {
                GPU_SEQLENS.to_vec()
            } else {
                eprintln!(
                    "the emulator is slow: synthetic lengths {EMULATOR_SEQLENS:?} (--seq for \
                     others; the GPU default is {GPU_SEQLENS:?})"
                );
                EMULATOR_SEQLENS.to_vec()
            };
            ReportInputs::Synthetic(SyntheticInputs::new(seqlens, args.seed))
        }
    };
    let methods = Method::defaults(args.seed);
    let (batch, heads, kv_heads, head_dim) = inputs.dims();
    println!(
        "approx-report on {}, inputs {}: batch {batch}, heads {heads}/{kv_heads}, head dim \
         {head_dim}; non-causal, bf16; exact: the flash kernel, its own error against f64 on \
         {EXACT_SAMPLE_ROWS} rows a head; {}",
        device.name(),
        inputs.source(),
        if device.is_cuda() {
            "ms: median of CUDA-event times after an L2 flush"
        } else {
            "no times on the emulator (they are no performance numbers)"
        }
    );
    println!("{}", table_header());
    let report = approx_report(&device, &inputs, &methods, |event| match event {
        ReportEvent::Running {
            seqlen,
            method,
            index,
            total,
        } => eprintln!("[{index}/{total}] {seqlen} tokens: {method:?}"),
        ReportEvent::Row(row) => println!("{row}"),
    })?;
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json())
            .map_err(|e| Error::io(path.display(), "cannot write the report", e))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        crate::approx::plot::plot(&report, path)?;
        println!("wrote {}", path.display());
    }
    let failed = report.rows.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        eprintln!("{failed} method(s) failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
