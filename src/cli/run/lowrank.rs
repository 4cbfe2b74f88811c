//! `cuattn run lowrank`: low-rank (Linformer) attention on .npy files. q, k and v as the dense
//! attention run reads them; E and F float32 `[k_proj, seqlen_k]` (shared by every KV head) or
//! `[kv_heads, k_proj, seqlen_k]`; out (and the LSE) written as float32 in the attention run's
//! layouts. Dense batches only; `--causal` and `--window` are refused by the library, which says
//! why.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use half::{bf16, f16};

use super::{describe_options, parse_window, read_tensor, upload, Outputs, RunDType};
use crate::approx::{lowrank_attention, Projection};
use crate::attention::AttentionOptions;
use crate::cli::DeviceChoice;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::npy::{self, NpyArray};
use crate::tensor::AttentionElement;

/// The flags of `cuattn run lowrank`.
#[derive(Args)]
pub struct LowrankArgs {
    /// Queries, float32 or float16: [batch, seqlen_q, heads, head_dim].
    #[arg(long, value_name = "Q.npy")]
    q: PathBuf,
    /// Keys: [batch, seqlen_k, kv_heads, head_dim].
    #[arg(long, value_name = "K.npy")]
    k: PathBuf,
    /// Values, shaped like the keys.
    #[arg(long, value_name = "V.npy")]
    v: PathBuf,
    /// The keys' projection E, float32: [k_proj, seqlen_k] shared by every KV head, or
    /// [kv_heads, k_proj, seqlen_k]; rounded to --dtype by the projection kernel.
    #[arg(long, value_name = "E.npy")]
    e: PathBuf,
    /// The values' projection F, float32, shared or per KV head as E may be, with E's k_proj.
    #[arg(long, value_name = "F.npy")]
    f: PathBuf,
    /// Output file: float32, shaped like q.
    #[arg(long, value_name = "O.npy")]
    out: PathBuf,
    /// Also write the natural-log LSE over the projected keys: float32 [batch, heads, seqlen_q].
    #[arg(long, value_name = "L.npy")]
    lse: Option<PathBuf>,
    /// Element type the kernels run in; q, k and v are rounded to it (to nearest even).
    #[arg(long, value_enum, default_value_t = RunDType::Bf16)]
    dtype: RunDType,
    /// Score scale [default: 1/sqrt(head_dim)].
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    scale: Option<f32>,
    /// Soft cap: each scaled score s becomes C * tanh(s / C).
    #[arg(long, value_name = "C", allow_hyphen_values = true)]
    softcap: Option<f32>,
    /// Refused: the projection mixes future keys into every row, so Linformer is non-causal.
    #[arg(long)]
    causal: bool,
    /// Refused unless -1,-1, for the same reason as --causal.
    #[arg(long, value_name = "LEFT,RIGHT", value_parser = parse_window, allow_hyphen_values = true)]
    window: Option<(i32, i32)>,
    /// Where the kernels run.
    #[arg(long, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

/// Runs `cuattn run lowrank`.
pub fn run(args: &LowrankArgs) -> Result<ExitCode> {
    if args.lse.as_ref() == Some(&args.out) {
        return Err(Error::invalid(
            "lse",
            "the same file as --out: give each output its own path",
        ));
    }
    let opts = AttentionOptions {
        causal: args.causal,
        window: args.window,
        scale: args.scale,
        softcap: args.softcap,
        return_lse: args.lse.is_some(),
        ..Default::default()
    };
    let q = read_tensor("q", &args.q)?;
    let k = read_tensor("k", &args.k)?;
    let v = read_tensor("v", &args.v)?;
    let e = read_tensor("e", &args.e)?;
    let f = read_tensor("f", &args.f)?;
    let device = args.device.open()?;
    let inputs = Inputs {
        q: &q,
        k: &k,
        v: &v,
        e: &e,
        f: &f,
    };
    let outputs = match args.dtype {
        RunDType::F16 => inputs.execute::<f16>(&device, &opts)?,
        RunDType::Bf16 => inputs.execute::<bf16>(&device, &opts)?,
    };
    npy::write_f32(&args.out, &q.shape, &outputs.out)?;
    let mut written = args.out.display().to_string();
    if let (Some(path), Some((shape, lse))) = (&args.lse, &outputs.lse) {
        npy::write_f32(path, shape, lse)?;
        written = format!("{written}, {}", path.display());
    }
    eprintln!(
        "ran low-rank attention (lowrank_projection, then flash over k_proj {} keys) on {}: {}, q \
         {:?}, k {:?}, v {:?}, e {:?}, f {:?}{} -> {written}",
        e.shape.iter().rev().nth(1).copied().unwrap_or(0),
        device.name(),
        args.dtype.name(),
        q.shape,
        k.shape,
        v.shape,
        e.shape,
        f.shape,
        describe_options(&opts),
    );
    Ok(ExitCode::SUCCESS)
}

/// The files of one run.
struct Inputs<'a> {
    q: &'a NpyArray,
    k: &'a NpyArray,
    v: &'a NpyArray,
    e: &'a NpyArray,
    f: &'a NpyArray,
}

impl Inputs<'_> {
    fn execute<T: AttentionElement>(
        &self,
        device: &Device,
        opts: &AttentionOptions,
    ) -> Result<Outputs> {
        let projection =
            |arg: &'static str, a: &NpyArray| Projection::named(arg, device, &a.data, &a.shape);
        let (e, f) = (projection("e", self.e)?, projection("f", self.f)?);
        let (q, k, v) = (
            upload::<T>(device, self.q)?,
            upload::<T>(device, self.k)?,
            upload::<T>(device, self.v)?,
        );
        let result = lowrank_attention(&q, &k, &v, &e, &f, opts)?;
        Outputs::from_tensors(&result.out, result.lse.as_ref())
    }
}
