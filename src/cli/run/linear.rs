//! `cuattn run linear`: kernel-based linear attention ([`linear_attention_into`]) on tensors read
//! from .npy files, with its feature map chosen by flag (elu1, relu, or FAVOR+ with a projection
//! read from a file or drawn from a seed), dense or varlen, the output written as float32.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use half::{bf16, f16};

use super::{read_offsets, read_tensor, upload, with_flag, RunDType};
use crate::approx::{
    linear_attention_into, linear_attention_varlen_into, FavorFeatures, Feature, LinearOptions,
    LinearWorkspace,
};
use crate::attention::VarlenBatch;
use crate::cli::DeviceChoice;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::npy::{self, NpyArray};
use crate::tensor::{AttentionElement, Tensor};

/// The feature map phi of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FeatureArg {
    /// elu(x) + 1, elementwise (head_dim features).
    Elu1,
    /// max(x, 0), elementwise (head_dim features).
    Relu,
    /// Performer's FAVOR+ positive random features (needs --projection or --features).
    Favor,
}

impl FeatureArg {
    fn name(self) -> &'static str {
        match self {
            FeatureArg::Elu1 => "elu1",
            FeatureArg::Relu => "relu",
            FeatureArg::Favor => "favor",
        }
    }
}

/// The flags of `cuattn run linear`.
#[derive(Args)]
pub struct LinearArgs {
    /// Queries, float32 or float16: [batch, seqlen_q, heads, head_dim] (varlen: [total_q, heads,
    /// head_dim]).
    #[arg(long, value_name = "Q.npy")]
    q: PathBuf,
    /// Keys: [batch, seqlen_k, kv_heads, head_dim] (varlen: [total_k, kv_heads, head_dim]).
    #[arg(long, value_name = "K.npy")]
    k: PathBuf,
    /// Values: [batch, seqlen_k, kv_heads, value_dim] (varlen: [total_k, kv_heads, value_dim]);
    /// value_dim may differ from head_dim.
    #[arg(long, value_name = "V.npy")]
    v: PathBuf,
    /// Output file: float32 [batch, seqlen_q, heads, value_dim] (varlen: [total_q, heads,
    /// value_dim]).
    #[arg(long, value_name = "O.npy")]
    out: PathBuf,
    /// The feature map: out_i = phi(q_i)^T S / (phi(q_i)^T z + 1e-6), S = sum_j phi(k_j) v_j^T,
    /// z = sum_j phi(k_j) over the keys query i sees (no score scale applies).
    #[arg(long, value_enum)]
    feature: FeatureArg,
    /// FAVOR: the projection W, float32 [m, head_dim] with m in 1..=256, rows as Performer's
    /// phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m), x' = x head_dim^(-1/4). Not with --features.
    #[arg(long, value_name = "W.npy")]
    projection: Option<PathBuf>,
    /// FAVOR: draw m (1..=256) orthogonal random features from --seed instead of reading them
    /// (FavorFeatures::orthogonal: blocks of head_dim orthogonal Gaussian rows). Not with
    /// --projection.
    #[arg(long, value_name = "M")]
    features: Option<usize>,
    /// With --features: the seed of the draw [default: 0].
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Causal: query i sees keys j <= i + seqlen_k - seqlen_q (bottom-right aligned).
    #[arg(long)]
    causal: bool,
    /// Element type the kernel runs in; inputs are rounded to it (to nearest even).
    #[arg(long, value_enum, default_value_t = RunDType::Bf16)]
    dtype: RunDType,
    /// Where the kernel runs.
    #[arg(long, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Varlen batch: int32 query offsets [batch + 1] into the packed q (needs --cu-seqlens-k).
    #[arg(long, value_name = "CQ.npy", requires = "cu_seqlens_k")]
    cu_seqlens_q: Option<PathBuf>,
    /// Varlen batch: int32 key offsets [batch + 1] into the packed k and v (needs --cu-seqlens-q).
    #[arg(long, value_name = "CK.npy", requires = "cu_seqlens_q")]
    cu_seqlens_k: Option<PathBuf>,
}

/// Where FAVOR's projection comes from.
enum Projection {
    File(PathBuf),
    Seeded { features: usize, seed: u64 },
}

impl Projection {
    fn describe(&self) -> String {
        match self {
            Projection::File(path) => format!("projection {}", path.display()),
            Projection::Seeded { features, seed } => {
                format!("{features} orthogonal features drawn with seed {seed}")
            }
        }
    }
}

/// FAVOR's projection source, or `None` for an elementwise map; refuses the FAVOR flags with
/// elu1 or relu, both sources together, none for FAVOR, and `--seed` without `--features`.
fn projection_source(args: &LinearArgs) -> Result<Option<Projection>> {
    if args.feature != FeatureArg::Favor {
        for (arg, given) in [
            ("projection", args.projection.is_some()),
            ("features", args.features.is_some()),
            ("seed", args.seed.is_some()),
        ] {
            if given {
                return Err(Error::invalid(
                    arg,
                    format!(
                        "--{arg} applies to --feature favor only: --feature {} is elementwise, \
                         with head_dim features and nothing to draw",
                        args.feature.name()
                    ),
                ));
            }
        }
        return Ok(None);
    }
    match (&args.projection, args.features) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "projection",
            "--projection and --features both give FAVOR's features: leave one out",
        )),
        (Some(_), None) if args.seed.is_some() => Err(Error::invalid(
            "seed",
            "--seed draws the features of --features M; --projection reads them from a file",
        )),
        (Some(path), None) => Ok(Some(Projection::File(path.clone()))),
        (None, Some(features)) => Ok(Some(Projection::Seeded {
            features,
            seed: args.seed.unwrap_or(0),
        })),
        (None, None) => Err(Error::invalid(
            "feature",
            "--feature favor needs its random features: --projection W.npy (float32 [m, \
             head_dim]) or --features M [--seed S]",
        )),
    }
}

/// FAVOR's features on `device` for q's `head_dim`, read or drawn.
fn favor_features(device: &Device, source: &Projection, head_dim: usize) -> Result<FavorFeatures> {
    match source {
        Projection::Seeded { features, seed } => {
            FavorFeatures::orthogonal(device, *features, head_dim, *seed)
        }
        Projection::File(path) => {
            let w = npy::read_f32(path).map_err(|e| with_flag("projection", e))?;
            if w.shape.len() != 2 || w.shape[1] != head_dim {
                return Err(Error::invalid(
                    "projection",
                    format!(
                        "{}: shape {:?}, expected [m, head_dim] with q's head_dim {head_dim}",
                        path.display(),
                        w.shape
                    ),
                ));
            }
            FavorFeatures::new(device, &w.data, w.shape[0], head_dim).map_err(|e| match e {
                Error::InvalidArgument { msg, .. } => {
                    Error::invalid("projection", format!("{}: {msg}", path.display()))
                }
                other => other,
            })
        }
    }
}

/// Runs `cuattn run linear`.
pub fn run_linear(args: &LinearArgs) -> Result<ExitCode> {
    let source = projection_source(args)?;
    if [
        Some(&args.q),
        Some(&args.k),
        Some(&args.v),
        args.projection.as_ref(),
    ]
    .contains(&Some(&args.out))
    {
        return Err(Error::invalid(
            "out",
            "the same file as an input: give the output its own path",
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
        _ => None,
    };
    let device = args.device.open()?;
    let head_dim = q.shape.last().copied().unwrap_or(0);
    let favor = match &source {
        Some(source) => Some(favor_features(&device, source, head_dim)?),
        None => None,
    };
    let feature = match (args.feature, &favor) {
        (FeatureArg::Elu1, _) => Feature::Elu1,
        (FeatureArg::Relu, _) => Feature::Relu,
        (FeatureArg::Favor, Some(f)) => Feature::Favor(f),
        (FeatureArg::Favor, None) => unreachable!("projection_source gives FAVOR its features"),
    };
    let opts = LinearOptions {
        feature,
        causal: args.causal,
        ..Default::default()
    };
    let inputs = (&q, &k, &v);
    let cu = cu_seqlens.as_ref();
    let (out_shape, out) = match args.dtype {
        RunDType::F16 => execute::<f16>(&device, &opts, inputs, cu)?,
        RunDType::Bf16 => execute::<bf16>(&device, &opts, inputs, cu)?,
    };
    npy::write_f32(&args.out, &out_shape, &out)?;
    let feature = match &source {
        Some(source) => format!("favor ({})", source.describe()),
        None => args.feature.name().to_string(),
    };
    eprintln!(
        "ran linear attention ({feature}) on {}: {}, q {:?}, k {:?}, v {:?}{}{} -> {}",
        device.name(),
        args.dtype.name(),
        q.shape,
        k.shape,
        v.shape,
        cu.map_or(String::new(), |(cq, _)| format!(
            ", varlen batch {}",
            cq.len() - 1
        )),
        if args.causal { ", causal" } else { "" },
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Uploads q, k, v rounded to `T`, runs linear attention (varlen with `cu_seqlens`), and returns
/// the output's shape and values widened to f32. The API checks every shape and names the
/// tensor at fault.
fn execute<T: AttentionElement>(
    device: &Device,
    opts: &LinearOptions<'_>,
    (q, k, v): (&NpyArray, &NpyArray, &NpyArray),
    cu_seqlens: Option<&(Vec<i32>, Vec<i32>)>,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let (qt, kt, vt) = (
        upload::<T>(device, q)?,
        upload::<T>(device, k)?,
        upload::<T>(device, v)?,
    );
    let mut out_shape = q.shape.clone();
    if let (Some(last), Some(&dv)) = (out_shape.last_mut(), v.shape.last()) {
        *last = dv;
    }
    let mut out = Tensor::<T>::zeros(device, &out_shape)?;
    let mut workspace = LinearWorkspace::new(device);
    match cu_seqlens {
        None => linear_attention_into(&qt, &kt, &vt, &mut out, opts, &mut workspace)?,
        Some((cu_q, cu_k)) => {
            let batch = VarlenBatch::new(device, cu_q, cu_k)?;
            linear_attention_varlen_into(&qt, &kt, &vt, &batch, &mut out, opts, &mut workspace)?
        }
    }
    let out = out
        .to_host()?
        .into_iter()
        .map(|x| x.to_f64() as f32)
        .collect();
    Ok((out_shape, out))
}
