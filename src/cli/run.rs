//! `cuattn run`: one kernel on tensors read from .npy files, through the safe API (which
//! validates every argument), with the results written back as float32 .npy files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use half::{bf16, f16};

use super::DeviceChoice;
use crate::attention::{attention, attention_varlen, AttentionOptions, Kernel, VarlenBatch};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::npy::{self, NpyArray};
use crate::tensor::{Element, Tensor};

#[derive(Subcommand)]
pub enum RunCommand {
    /// Exact attention forward: out = softmax(scale * q k^T, masked) v, and optionally the LSE.
    Attention(AttentionArgs),
}

/// The element type the kernel computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RunDType {
    F16,
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
    #[arg(
        long,
        help = kernel_help(),
        value_parser = parse_kernel,
        default_value = Kernel::DEFAULT.name()
    )]
    kernel: Kernel,
    /// Where the kernel runs.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Varlen batch: int32 query offsets [batch + 1] into the packed q (needs --cu-seqlens-k).
    #[arg(long, value_name = "CQ.npy", requires = "cu_seqlens_k")]
    cu_seqlens_q: Option<PathBuf>,
    /// Varlen batch: int32 key offsets [batch + 1] into the packed k and v (needs --cu-seqlens-q).
    #[arg(long, value_name = "CK.npy", requires = "cu_seqlens_q")]
    cu_seqlens_k: Option<PathBuf>,
}

fn kernel_help() -> String {
    let names: Vec<_> = Kernel::ALL.iter().map(|k| k.name()).collect();
    format!("Kernel to run: {}", names.join(", "))
}

fn parse_kernel(s: &str) -> std::result::Result<Kernel, String> {
    s.parse().map_err(|e: Error| e.to_string())
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
    }
}

/// What one attention run produced, widened to f32: out, and the LSE with its shape.
struct Outputs {
    out: Vec<f32>,
    lse: Option<(Vec<usize>, Vec<f32>)>,
}

fn run_attention(args: &AttentionArgs) -> Result<ExitCode> {
    if args.lse.as_ref() == Some(&args.out) {
        return Err(Error::invalid(
            "lse",
            "the same file as --out: give each output its own path",
        ));
    }
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
    };
    let device = args.device.open()?;
    let run = Run {
        kernel: args.kernel,
        device: &device,
        opts,
        cu_seqlens: cu_seqlens.as_ref(),
    };
    let outputs = match args.dtype {
        RunDType::F16 => run.execute::<f16>(&q, &k, &v)?,
        RunDType::Bf16 => run.execute::<bf16>(&q, &k, &v)?,
    };
    npy::write_f32(&args.out, &q.shape, &outputs.out)?;
    let mut written = args.out.display().to_string();
    if let (Some(path), Some((shape, lse))) = (&args.lse, &outputs.lse) {
        npy::write_f32(path, shape, lse)?;
        written = format!("{written}, {}", path.display());
    }
    eprintln!(
        "ran attention kernel {} on {}: {}, q {:?}, k {:?}, v {:?}{}{} -> {written}",
        args.kernel.name(),
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

/// Tags an `Error::Io` from reading the file given as `--{flag}` with that flag.
fn with_flag(flag: &str, e: Error) -> Error {
    match e {
        Error::Io { path, msg } => Error::Io {
            path,
            msg: format!("{msg} (given as --{flag})"),
        },
        other => other,
    }
}

fn read_tensor(arg: &str, path: &Path) -> Result<NpyArray> {
    npy::read_f32(path).map_err(|e| with_flag(arg, e))
}

fn read_offsets(arg: &'static str, path: &Path) -> Result<Vec<i32>> {
    let flag = arg.replace('_', "-");
    let (shape, offsets) = npy::read_i32(path).map_err(|e| with_flag(&flag, e))?;
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

/// One attention call, generic over the element type it runs in.
struct Run<'a> {
    kernel: Kernel,
    device: &'a Device,
    opts: AttentionOptions,
    cu_seqlens: Option<&'a (Vec<i32>, Vec<i32>)>,
}

impl Run<'_> {
    fn execute<T: Element>(&self, q: &NpyArray, k: &NpyArray, v: &NpyArray) -> Result<Outputs> {
        let upload = |a: &NpyArray| {
            let data: Vec<T> = a.data.iter().map(|&x| T::from_f64(f64::from(x))).collect();
            Tensor::from_host(self.device, &data, &a.shape)
        };
        let (q, k, v) = (upload(q)?, upload(k)?, upload(v)?);
        let result = match self.cu_seqlens {
            None => attention(self.kernel, &q, &k, &v, &self.opts)?,
            Some((cu_q, cu_k)) => {
                let batch = VarlenBatch::new(self.device, cu_q, cu_k)?;
                attention_varlen(self.kernel, &q, &k, &v, &batch, &self.opts)?
            }
        };
        // f16 and bf16 widen to f32 exactly.
        let out = result
            .out
            .to_host()?
            .into_iter()
            .map(|x| x.to_f64() as f32)
            .collect();
        let lse = match result.lse {
            Some(lse) => Some((lse.shape().to_vec(), lse.to_host()?)),
            None => None,
        };
        Ok(Outputs { out, lse })
    }
}
