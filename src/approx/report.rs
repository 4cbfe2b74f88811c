//! The approximation report (`cuattn approx-report`): exact attention and each approximation on
//! the same inputs, with the relative error of each output against exact attention's, the FLOPs
//! and bytes each method needs (counted analytically, see [`Method`]), and on a GPU its time.
//!
//! Every method runs **non-causal** attention, the one form all of them have (Linformer-style
//! low-rank attention projects the keys along the sequence and is non-causal only), at the
//! default score scale `1/sqrt(head_dim)`, in bf16. The exact output is the flash kernel's on the
//! same inputs; an approximation's error is `||o - o_exact|| / ||o_exact||` over the whole output
//! and the same for its worst row (one query of one head), both computed in f64 on the host. The
//! exact row's own error is the flash kernel against an f64 softmax on
//! [`EXACT_SAMPLE_ROWS`] query rows of each sequence and head (evenly spaced, first and last
//! among them): the floor of bf16 rounding, below which no approximation's error means anything.
//!
//! Inputs: q, k, v given by the caller ([`HostInputs`], e.g. saved from a real model), or
//! seeded synthetic ones ([`SyntheticInputs`]) with local structure and a few global tokens, so
//! that a report means something out of the box.

use std::borrow::Cow;
use std::fmt;

use half::bf16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{
    linear_attention_into, lowrank_attention_into, FavorFeatures, Feature, LinearOptions,
    LinearWorkspace, LowrankWorkspace, Projection,
};
use crate::attention::{attention_into, AttentionOptions, Kernel};
use crate::bench::{spread_cell, visible_pairs, RunBudget, Spread, Timer};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::sparse::{block_sparse_attention_into, BlockMask, Pattern};
use crate::tensor::Tensor;

/// The lengths of a synthetic report on a GPU when none are given.
pub const GPU_SEQLENS: [usize; 3] = [1024, 4096, 16384];
/// The lengths of a synthetic report on the emulator when none are given (it is slow).
pub const EMULATOR_SEQLENS: [usize; 2] = [256, 512];
/// Query rows of each sequence and head on which the exact row is checked against f64.
pub const EXACT_SAMPLE_ROWS: usize = 64;
/// The density BigBird's parameters aim at ([`bigbird_pattern`]).
pub const BIGBIRD_DENSITY: f64 = 0.15;
/// BigBird's block size in the default methods.
pub const BIGBIRD_BLOCK: usize = 64;
/// Bytes of a bf16 element.
const BF16_BYTES: f64 = 2.0;
/// Columns of the value dim one CTA of the linear state walker serves (linear_attention.cu's
/// `kValueBlock`): each such CTA reads every feature row of its KV head.
const LINEAR_VALUE_BLOCK: usize = 32;
/// FAVOR's and the elementwise maps' feature rows are padded to a multiple of this in the
/// workspace (linear_attention.cu's `padded_features`).
const FEATURE_PAD: usize = 16;

// ---------------------------------------------------------------------------------------------
// Inputs.
// ---------------------------------------------------------------------------------------------

/// The shape of one report problem: q `[batch, seqlen_q, heads, head_dim]`, k and v `[batch,
/// seqlen_k, kv_heads, head_dim]` (the value dim is the head dim, as the flash kernel needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProblemShape {
    /// Sequences of the batch.
    pub batch: usize,
    /// Query tokens of each sequence.
    pub seqlen_q: usize,
    /// Key and value tokens of each sequence.
    pub seqlen_k: usize,
    /// Query heads.
    pub heads: usize,
    /// Key and value heads: a divisor of `heads`.
    pub kv_heads: usize,
    /// Elements of each head's vector (q, k and v alike).
    pub head_dim: usize,
}

impl ProblemShape {
    fn q_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_q, self.heads, self.head_dim]
    }

    fn kv_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_k, self.kv_heads, self.head_dim]
    }

    /// Elements of q (and of the output).
    fn q_elems(&self) -> f64 {
        (self.batch * self.seqlen_q * self.heads * self.head_dim) as f64
    }

    /// Elements of k (and of v).
    fn kv_elems(&self) -> f64 {
        (self.batch * self.seqlen_k * self.kv_heads * self.head_dim) as f64
    }

    /// Bytes every method reads of q, k and v and writes of the output, once each (bf16).
    fn io_bytes(&self) -> f64 {
        BF16_BYTES * (2.0 * self.q_elems() + 2.0 * self.kv_elems())
    }
}

/// q, k and v on the host, row-major, as float32: the caller's (say, saved from a model) or
/// synthetic.
#[derive(Clone, Debug)]
pub struct HostInputs {
    /// The shape `q`, `k` and `v` hold.
    pub shape: ProblemShape,
    /// q `[batch, seqlen_q, heads, head_dim]`.
    pub q: Vec<f32>,
    /// k `[batch, seqlen_k, kv_heads, head_dim]`.
    pub k: Vec<f32>,
    /// v `[batch, seqlen_k, kv_heads, head_dim]`.
    pub v: Vec<f32>,
    /// Where they come from, for the report: file names, or the synthetic recipe.
    pub source: String,
}

impl HostInputs {
    /// Checks q `[batch, seqlen_q, heads, head_dim]`, k `[batch, seqlen_k, kv_heads, head_dim]`
    /// and v shaped like k (the flash kernel that gives the exact output needs value dim = head
    /// dim), naming the tensor at fault.
    pub fn new(
        (q_shape, q): (&[usize], Vec<f32>),
        (k_shape, k): (&[usize], Vec<f32>),
        (v_shape, v): (&[usize], Vec<f32>),
        source: String,
    ) -> Result<HostInputs> {
        let &[batch, seqlen_q, heads, head_dim] = q_shape else {
            return Err(Error::invalid(
                "q",
                format!("shape {q_shape:?}: expected [batch, seqlen_q, heads, head_dim]"),
            ));
        };
        let &[k_batch, seqlen_k, kv_heads, k_dim] = k_shape else {
            return Err(Error::invalid(
                "k",
                format!("shape {k_shape:?}: expected [batch, seqlen_k, kv_heads, head_dim]"),
            ));
        };
        if k_batch != batch || k_dim != head_dim {
            return Err(Error::invalid(
                "k",
                format!(
                    "shape {k_shape:?}: its batch and head_dim must be q's ({batch}, {head_dim})"
                ),
            ));
        }
        if v_shape != k_shape {
            return Err(Error::invalid(
                "v",
                format!(
                    "shape {v_shape:?}, expected k's {k_shape:?}: the exact flash kernel needs \
                     value_dim = head_dim"
                ),
            ));
        }
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(Error::invalid(
                "k",
                format!("kv_heads {kv_heads}: must divide q's heads ({heads})"),
            ));
        }
        if batch * seqlen_q * seqlen_k == 0 {
            return Err(Error::invalid(
                "q",
                format!("shape {q_shape:?} with k {k_shape:?}: nothing to attend"),
            ));
        }
        let shape = ProblemShape {
            batch,
            seqlen_q,
            seqlen_k,
            heads,
            kv_heads,
            head_dim,
        };
        for (name, data, want) in [
            ("q", &q, shape.q_elems()),
            ("k", &k, shape.kv_elems()),
            ("v", &v, shape.kv_elems()),
        ] {
            if data.len() as f64 != want {
                return Err(Error::invalid(
                    name,
                    format!("{} values for {want} elements", data.len()),
                ));
            }
        }
        Ok(HostInputs {
            shape,
            q,
            k,
            v,
            source,
        })
    }
}

/// Seeded synthetic inputs with local structure and a few global tokens, one problem per length.
///
/// Per sequence and KV head, a latent smooth random walk `x` over the positions (a stationary
/// AR(1) process of unit variance per dim whose correlation falls by a factor e every
/// [`SyntheticInputs::CORRELATION_TOKENS`] tokens) gives keys `k_j = a (x_j + n_j) / sqrt(2)`
/// and queries `q_i = a (x_i / sqrt(2) + n'_i / 2 + g / 2)` (`n`, `n'` fresh unit noise, `g` a
/// direction of the KV head with components +-1 that every query carries), the amplitude `a`
/// set so that a query scores its own position [`SyntheticInputs::LOCAL_SCORE`] on average
/// (`q . k / sqrt(head_dim)`), nearby keys a little less and far ones about 0, at any head dim.
/// The keys of [`SyntheticInputs::GLOBAL_TOKENS`] global tokens (position 0, an attention sink,
/// and the others at seeded positions) are a multiple of `g` plus a little noise, which every
/// query scores about [`SyntheticInputs::GLOBAL_SCORE`], above its neighbours: they draw a large
/// share of the attention, which a sliding window misses. Values are another smooth walk (unit variance), so that outputs are smooth
/// averages rather than noise. The query heads of a KV head's group share its walk and `g`.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticInputs {
    /// The lengths to report on, one problem each (seqlen_q = seqlen_k).
    pub seqlens: Vec<usize>,
    /// Sequences of each problem.
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// Key and value heads: a divisor of `heads`.
    pub kv_heads: usize,
    /// Elements of each head's vector.
    pub head_dim: usize,
    /// Seeds the walks, the global tokens' positions and the noise.
    pub seed: u64,
}

impl SyntheticInputs {
    /// Tokens over which the latent walk's correlation falls by a factor e.
    pub const CORRELATION_TOKENS: f64 = 16.0;
    /// Global tokens of each sequence and KV head (position 0 among them).
    pub const GLOBAL_TOKENS: usize = 4;
    /// The mean score `q_i . k_i / sqrt(head_dim)` of a query and the key at its position.
    pub const LOCAL_SCORE: f64 = 4.0;
    /// The mean score of a query and a global key.
    pub const GLOBAL_SCORE: f64 = 5.0;
    /// batch 1, 8 heads over 8, head dim 64.
    pub const DEFAULT_SHAPE: (usize, usize, usize, usize) = (1, 8, 8, 64);

    /// The default shape at `seqlens` with `seed`.
    pub fn new(seqlens: Vec<usize>, seed: u64) -> SyntheticInputs {
        let (batch, heads, kv_heads, head_dim) = Self::DEFAULT_SHAPE;
        SyntheticInputs {
            seqlens,
            batch,
            heads,
            kv_heads,
            head_dim,
            seed,
        }
    }

    /// The inputs of length `seqlen` (queries and keys alike), drawn from the seed and the length.
    pub fn inputs(&self, seqlen: usize) -> Result<HostInputs> {
        let (b, n, h, hkv, d) = (self.batch, seqlen, self.heads, self.kv_heads, self.head_dim);
        if b == 0 || n == 0 || d == 0 || hkv == 0 || h % hkv != 0 {
            return Err(Error::invalid(
                "synthetic",
                format!(
                    "batch {b}, seqlen {n}, heads {h} over {hkv}, head_dim {d}: all positive, \
                     kv_heads dividing heads"
                ),
            ));
        }
        let mut rng = StdRng::seed_from_u64(self.seed ^ (n as u64).wrapping_mul(0x9e37_79b9));
        let rho = (-1.0 / Self::CORRELATION_TOKENS).exp() as f32;
        let step = (1.0 - rho * rho).sqrt();
        // E[q_i . k_i] = a^2 d / 2 and E[q . k_global] = a c d / 2 for k_global = c g.
        let root_d = (d as f64).sqrt();
        let a = (2.0 * Self::LOCAL_SCORE / root_d).sqrt();
        let c = (2.0 * Self::GLOBAL_SCORE / (a * root_d)) as f32;
        let (a, half) = (a as f32, 0.5f32.sqrt());
        let group = h / hkv;
        let (mut q, mut k, mut v) = (
            vec![0f32; b * n * h * d],
            vec![0f32; b * n * hkv * d],
            vec![0f32; b * n * hkv * d],
        );
        for bi in 0..b {
            for kvh in 0..hkv {
                let g: Vec<f32> = (0..d)
                    .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                    .collect();
                let mut globals = vec![0usize];
                while globals.len() < Self::GLOBAL_TOKENS.min(n) {
                    let at = rng.random_range(1..n);
                    if !globals.contains(&at) {
                        globals.push(at);
                    }
                }
                let mut gaussian = || gaussian(&mut rng);
                let mut x: Vec<f32> = (0..d).map(|_| gaussian()).collect();
                let mut y: Vec<f32> = (0..d).map(|_| gaussian()).collect();
                for i in 0..n {
                    if i > 0 {
                        for e in 0..d {
                            x[e] = rho * x[e] + step * gaussian();
                            y[e] = rho * y[e] + step * gaussian();
                        }
                    }
                    let kv_at = ((bi * n + i) * hkv + kvh) * d;
                    let global = globals.contains(&i);
                    for e in 0..d {
                        k[kv_at + e] = if global {
                            c * g[e] + 0.1 * gaussian()
                        } else {
                            a * half * (x[e] + gaussian())
                        };
                        v[kv_at + e] = y[e];
                    }
                    for hg in 0..group {
                        let q_at = ((bi * n + i) * h + kvh * group + hg) * d;
                        for e in 0..d {
                            q[q_at + e] = a * (half * x[e] + 0.5 * gaussian() + 0.5 * g[e]);
                        }
                    }
                }
            }
        }
        let shape = [b, n, h, d];
        let kv_shape = [b, n, hkv, d];
        HostInputs::new((&shape, q), (&kv_shape, k), (&kv_shape, v), self.source())
    }

    /// The recipe, for the report.
    pub fn source(&self) -> String {
        format!(
            "synthetic (seed {}): smooth random walks (correlation {} tokens, score {} at distance \
             0) and {} global tokens (score {})",
            self.seed,
            Self::CORRELATION_TOKENS,
            Self::LOCAL_SCORE,
            Self::GLOBAL_TOKENS,
            Self::GLOBAL_SCORE
        )
    }
}

/// A standard normal draw (Box-Muller).
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// What a report runs on.
#[derive(Clone, Debug)]
pub enum ReportInputs {
    /// One problem per length, drawn.
    Synthetic(SyntheticInputs),
    /// One problem, the caller's.
    Given(HostInputs),
}

impl ReportInputs {
    /// Where the inputs come from: file names, or the synthetic recipe.
    pub fn source(&self) -> String {
        match self {
            ReportInputs::Synthetic(s) => s.source(),
            ReportInputs::Given(given) => given.source.clone(),
        }
    }

    /// (batch, heads, kv_heads, head_dim) of every problem.
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        match self {
            ReportInputs::Synthetic(s) => (s.batch, s.heads, s.kv_heads, s.head_dim),
            ReportInputs::Given(given) => {
                let g = given.shape;
                (g.batch, g.heads, g.kv_heads, g.head_dim)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Methods.
// ---------------------------------------------------------------------------------------------

/// A method of the report. Adding one is a variant here and its arm in `Method::plan`, which
/// builds its run and counts its cost.
///
/// FLOPs, summed over every sequence and head (2 a multiply-add; `P` the (query, key) pairs a
/// masked method computes, `m` the features of a linear method, `nq = batch * seqlen_q * heads`
/// and `nk = batch * seqlen_k * kv_heads` the query and key rows):
///
/// - exact: `4 * P * head_dim` with every pair, `P = batch * heads * seqlen_q * seqlen_k` (2
///   for S = Q K^T, 2 for O = P V; the softmax's exponentials not counted);
/// - window `w`: the same over the pairs within `w / 2` keys of the diagonal on either side,
///   counted exactly (about `4 * seqlen * (w + 1) * head_dim` a head);
/// - BigBird: the same over the pairs the block mask leaves ([`BlockMask::visible_pairs`]);
/// - linear elu1 (`m = head_dim`): the features, one op an element, `(nq + nk) * head_dim`; the
///   state `S += phi(k) v^T, z += phi(k)`, `2 * nk * m * (head_dim + 1)`; the output
///   `phi(q)^T S / phi(q)^T z`, `2 * nq * m * (head_dim + 1)`: about `4 * n * m * head_dim` a
///   head;
/// - FAVOR+ `m`: linear's with `m` features, the features being the projection `W x`, `2 * m *
///   head_dim` a row, and `m` exponentials: `(nq + nk) * m * (2 * head_dim + 1)`;
/// - Linformer `k_proj`: the projections `K' = E K`, `V' = F V`, `2 * k_proj * seqlen_k *
///   head_dim` each per sequence and KV head, then exact attention over `k_proj` keys.
///
/// Bytes, what the kernels read and write of global memory: every method reads q, k, v and
/// writes the output once each (bf16; the flash kernels' re-reads of K/V tiles by later query
/// tiles, mostly from L2, are not counted, so exact, window and BigBird differ in FLOPs, not
/// here); BigBird adds its mask tables; linear methods add the workspace, the features of q
/// (bf16) and k (bf16, FAVOR's exponents float32) over `m` padded to 16, written once and read
/// by each of the `ceil(head_dim / 32)` CTAs of the state walker per KV head, and FAVOR its
/// projection (float32 `[m, head_dim]`); Linformer reads E and F (float32) and writes and reads
/// K' and V' (bf16).
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// Exact attention: the flash kernel. Always the first row of each length, the reference.
    Exact,
    /// Sliding window: the flash kernel, each query seeing the `w / 2` keys on either side of
    /// its diagonal (`w + 1` keys for an even `w`).
    Window {
        /// Keys in the window besides the diagonal, split between the two sides.
        w: usize,
    },
    /// BigBird block-sparse attention in `block` x `block` blocks, its pattern's parameters
    /// chosen per length for about `density` of the block grid ([`bigbird_pattern`]), its
    /// random blocks drawn from `seed`.
    BigBird {
        /// Block size, queries and keys alike: a multiple of 16.
        block: usize,
        /// The share of the block grid the pattern aims at, in (0, 1].
        density: f64,
        /// Seeds the random blocks.
        seed: u64,
    },
    /// Linear attention with elu(x) + 1 features.
    LinearElu1,
    /// Linear attention with `features` FAVOR+ orthogonal random features drawn from `seed`.
    Favor {
        /// Random features `m`, at most [`MAX_FEATURES`](super::MAX_FEATURES).
        features: usize,
        /// Seeds the projection.
        seed: u64,
    },
    /// Linformer with projections E and F `[k_proj, seqlen_k]` shared by the KV heads, drawn
    /// i.i.d. N(0, 1/k_proj) from `seed` and `seed + 1` ([`Projection::random`]).
    Linformer {
        /// Rows the keys and values are projected to.
        k_proj: usize,
        /// Seeds E; F is drawn from `seed + 1`.
        seed: u64,
    },
}

impl Method {
    /// The report's approximations, after the exact row: windows of 256 and 1024 keys, BigBird
    /// in 64 x 64 blocks at about 15%, linear elu1, FAVOR+ with 64 and 256 features, Linformer
    /// with k_proj 64 and 256; BigBird's, FAVOR's and Linformer's random draws from `seed`.
    pub fn defaults(seed: u64) -> Vec<Method> {
        vec![
            Method::Window { w: 256 },
            Method::Window { w: 1024 },
            Method::BigBird {
                block: BIGBIRD_BLOCK,
                density: BIGBIRD_DENSITY,
                seed,
            },
            Method::LinearElu1,
            Method::Favor { features: 64, seed },
            Method::Favor {
                features: 256,
                seed,
            },
            Method::Linformer { k_proj: 64, seed },
            Method::Linformer { k_proj: 256, seed },
        ]
    }

    /// The method's run on `p`, its output tensor, and its cost.
    fn plan(&self, p: &Problem) -> Result<Planned> {
        let s = p.shape;
        let d = s.head_dim as f64;
        let heads = (s.batch * s.heads) as f64;
        let softmax_opts = AttentionOptions::default();
        let out = Tensor::<bf16>::full(&p.device, &s.q_shape(), bf16::NAN)?;
        let (q, k, v) = (p.q.clone(), p.k.clone(), p.v.clone());
        let planned = match *self {
            Method::Exact => Planned {
                method: "exact",
                series: "exact (flash)".into(),
                params: "flash".into(),
                flops: 4.0 * visible_pairs(s.seqlen_q, s.seqlen_k, (-1, -1)) as f64 * heads * d,
                bytes: s.io_bytes(),
                out,
                run: Box::new(move |o: &mut Tensor<bf16>| {
                    attention_into(Kernel::Flash, &q, &k, &v, o, None, &softmax_opts)
                }),
            },
            Method::Window { w } => {
                let side = i32::try_from(w / 2)
                    .map_err(|_| Error::invalid("window", format!("{w}: too wide")))?;
                let opts = AttentionOptions {
                    window: Some((side, side)),
                    ..Default::default()
                };
                let pairs = visible_pairs(s.seqlen_q, s.seqlen_k, (side, side)) as f64 * heads;
                Planned {
                    method: "window",
                    series: format!("window w={w}"),
                    params: format!("w={w} ({side} keys each side)"),
                    flops: 4.0 * pairs * d,
                    bytes: s.io_bytes(),
                    out,
                    run: Box::new(move |o: &mut Tensor<bf16>| {
                        attention_into(Kernel::Flash, &q, &k, &v, o, None, &opts)
                    }),
                }
            }
            Method::BigBird {
                block,
                density,
                seed,
            } => {
                let pattern = bigbird_pattern(s.seqlen_k.div_ceil(block), density, seed);
                let Pattern::BigBird {
                    w, global, random, ..
                } = pattern
                else {
                    unreachable!("bigbird_pattern gives a BigBird pattern")
                };
                let mask = BlockMask::from_pattern(
                    &p.device,
                    &pattern,
                    s.heads,
                    (block, block),
                    &[(s.seqlen_q, s.seqlen_k)],
                    &softmax_opts,
                )?;
                let [mask_batch, mask_heads, _, _] = mask.dims();
                let pairs = mask.visible_pairs() as f64
                    * ((s.batch / mask_batch) * (s.heads / mask_heads)) as f64;
                let params = format!(
                    "block {block}, w={w} global={global} random={random}, density {:.2}",
                    mask.density()
                );
                Planned {
                    method: "bigbird",
                    series: format!("BigBird (block {block})"),
                    params,
                    flops: 4.0 * pairs * d,
                    bytes: s.io_bytes() + mask.device_bytes() as f64,
                    out,
                    run: Box::new(move |o: &mut Tensor<bf16>| {
                        block_sparse_attention_into(&q, &k, &v, o, None, &mask, &softmax_opts)
                    }),
                }
            }
            Method::LinearElu1 => {
                let mut workspace = LinearWorkspace::new(&p.device);
                let opts = LinearOptions {
                    feature: Feature::Elu1,
                    ..Default::default()
                };
                Planned {
                    method: "linear",
                    series: "linear elu1".into(),
                    params: "elu1".into(),
                    flops: linear_flops(&s, s.head_dim, 1.0),
                    bytes: linear_bytes(&s, s.head_dim, BF16_BYTES),
                    out,
                    run: Box::new(move |o: &mut Tensor<bf16>| {
                        linear_attention_into(&q, &k, &v, o, &opts, &mut workspace)
                    }),
                }
            }
            Method::Favor { features, seed } => {
                let favor = FavorFeatures::orthogonal(&p.device, features, s.head_dim, seed)?;
                let mut workspace = LinearWorkspace::new(&p.device);
                let m = features as f64;
                Planned {
                    method: "favor",
                    series: format!("FAVOR+ m={features}"),
                    params: format!("m={features}, seed {seed}"),
                    flops: linear_flops(&s, features, 2.0 * d + 1.0),
                    bytes: linear_bytes(&s, features, 4.0) + 4.0 * m * d,
                    out,
                    run: Box::new(move |o: &mut Tensor<bf16>| {
                        let opts = LinearOptions {
                            feature: Feature::Favor(&favor),
                            ..Default::default()
                        };
                        linear_attention_into(&q, &k, &v, o, &opts, &mut workspace)
                    }),
                }
            }
            Method::Linformer { k_proj, seed } => {
                let e = Projection::random(&p.device, &[k_proj, s.seqlen_k], seed)?;
                let f = Projection::random(&p.device, &[k_proj, s.seqlen_k], seed + 1)?;
                let mut workspace = LowrankWorkspace::new(&p.device);
                let (nk, kp) = ((s.batch * s.kv_heads) as f64, k_proj as f64);
                // Projecting K and V (2 * k_proj * seqlen_k * head_dim each per KV head), then
                // exact attention over k_proj keys.
                let projection_flops = 2.0 * 2.0 * nk * kp * s.seqlen_k as f64 * d;
                let projected_bytes = 2.0 * nk * kp * d * BF16_BYTES;
                Planned {
                    method: "linformer",
                    series: format!("Linformer k={k_proj}"),
                    params: format!("k_proj={k_proj}, seed {seed}"),
                    flops: projection_flops
                        + 4.0 * visible_pairs(s.seqlen_q, k_proj, (-1, -1)) as f64 * heads * d,
                    bytes: s.io_bytes()
                        + 2.0 * 4.0 * kp * s.seqlen_k as f64
                        + 2.0 * projected_bytes,
                    out,
                    run: Box::new(move |o: &mut Tensor<bf16>| {
                        lowrank_attention_into(
                            &q,
                            &k,
                            &v,
                            &e,
                            &f,
                            o,
                            None,
                            &softmax_opts,
                            &mut workspace,
                        )
                    }),
                }
            }
        };
        Ok(planned)
    }
}

/// FLOPs of non-causal linear attention with `m` features, each feature of a q or k row costing
/// `per_feature` ops (1 for the elementwise maps, FAVOR's `2 head_dim + 1`; see [`Method`]).
fn linear_flops(s: &ProblemShape, m: usize, per_feature: f64) -> f64 {
    let (nq, nk) = (
        (s.batch * s.seqlen_q * s.heads) as f64,
        (s.batch * s.seqlen_k * s.kv_heads) as f64,
    );
    let (m, dv) = (m as f64, s.head_dim as f64);
    (nq + nk) * m * per_feature + 2.0 * (nq + nk) * m * (dv + 1.0)
}

/// Bytes of non-causal linear attention with `m` features whose key features take
/// `key_feature_bytes` each (see [`Method`]).
fn linear_bytes(s: &ProblemShape, m: usize, key_feature_bytes: f64) -> f64 {
    let m_pad = m.div_ceil(FEATURE_PAD) * FEATURE_PAD;
    let phi_q = (s.batch * s.seqlen_q * s.heads * m_pad) as f64 * BF16_BYTES;
    let phi_k = (s.batch * s.seqlen_k * s.kv_heads * m_pad) as f64 * key_feature_bytes;
    let walkers = s.head_dim.div_ceil(LINEAR_VALUE_BLOCK) as f64;
    s.io_bytes() + (1.0 + walkers) * (phi_q + phi_k)
}

/// BigBird's pattern on a grid of `nk` key blocks for about `density` of it: one global block
/// (key column and query row), a band of `w` blocks either side with `w = max(1, floor((r - 1) /
/// 4))` and `random = max(1, round(r - 2 - 2 w))` random blocks a row, `r = density * nk` the
/// blocks a row may hold: the band takes about half of what the global column leaves, the random
/// blocks the rest. At 64-token blocks and density 0.15 that is w=2, random=4 at 4k tokens (64
/// blocks; 17% of the grid with the global row) and w=9, random=18 at 16k (15%); a grid of 16
/// blocks or fewer (1k tokens) cannot go below BigBird's smallest pattern, a 3-block band, a
/// global block and a random one (35% at 16 blocks).
pub fn bigbird_pattern(nk: usize, density: f64, seed: u64) -> Pattern {
    let row = density * nk as f64;
    let w = (((row - 1.0) / 4.0).floor() as usize).max(1);
    let random = ((row - 2.0 - 2.0 * w as f64).round().max(1.0)) as usize;
    Pattern::BigBird {
        w,
        global: 1,
        random,
        seed,
        per_head: false,
    }
}

/// One problem on the device: q, k, v in bf16.
struct Problem {
    device: Device,
    shape: ProblemShape,
    q: Tensor<bf16>,
    k: Tensor<bf16>,
    v: Tensor<bf16>,
}

/// A method made ready for one problem.
/// Enqueues one run of a method into the output it is given.
type RunInto = dyn FnMut(&mut Tensor<bf16>) -> Result<()>;

struct Planned {
    method: &'static str,
    /// The legend's name: the method and the parameters that do not change with the length.
    series: String,
    /// Its parameters at this length.
    params: String,
    flops: f64,
    bytes: f64,
    /// Where `run` writes (poisoned with NaN first).
    out: Tensor<bf16>,
    /// Enqueues one run into the output it is given (`out`); allocates nothing after its first.
    run: Box<RunInto>,
}

// ---------------------------------------------------------------------------------------------
// The report.
// ---------------------------------------------------------------------------------------------

/// One method at one length.
#[derive(Clone, Debug, PartialEq)]
pub struct ApproxRow {
    /// `exact`, `window`, `bigbird`, `linear`, `favor`.
    pub method: String,
    /// The method and its parameters that hold at every length (the plot's legend).
    pub series: String,
    /// Its parameters at this length.
    pub params: String,
    /// Query tokens of the row's problem.
    pub seqlen_q: usize,
    /// Key tokens of the row's problem (the row's length).
    pub seqlen_k: usize,
    /// `||o - o_exact|| / ||o_exact||` over the output (the exact row: over its sampled rows,
    /// against f64).
    pub rel_error: f64,
    /// The largest of the same over one row (one query of one head).
    pub worst_row_rel_error: f64,
    /// Floating-point operations of the method at this length (its model in [`Method`]).
    pub flops: f64,
    /// Global-memory bytes the method reads and writes at this length (its model in [`Method`]).
    pub bytes: f64,
    /// Median milliseconds on a GPU; `None` on the emulator, whose times are no performance
    /// numbers.
    pub ms: Option<f64>,
    /// The fastest timed run on a GPU, in milliseconds; `None` on the emulator.
    pub min_ms: Option<f64>,
    /// The slowest timed run on a GPU, in milliseconds; `None` on the emulator.
    pub max_ms: Option<f64>,
    /// Why the method could not run (the others go on).
    pub error: Option<String>,
}

impl ApproxRow {
    fn json(&self) -> ApproxRowJson<'_> {
        ApproxRowJson {
            method: &self.method,
            series: &self.series,
            params: &self.params,
            seqlen: self.seqlen_k,
            seqlen_q: self.seqlen_q,
            seqlen_k: self.seqlen_k,
            rel_error: self.rel_error,
            worst_row_rel_error: self.worst_row_rel_error,
            flops: self.flops,
            bytes: self.bytes,
            ms: self.ms,
            min_ms: self.min_ms,
            max_ms: self.max_ms,
            error: self.error.as_deref(),
        }
    }
}

/// An [`ApproxRow`] in the report's JSON.
#[derive(Serialize)]
struct ApproxRowJson<'a> {
    method: &'a str,
    series: &'a str,
    params: &'a str,
    seqlen: usize,
    seqlen_q: usize,
    seqlen_k: usize,
    rel_error: f64,
    worst_row_rel_error: f64,
    flops: f64,
    bytes: f64,
    ms: Option<f64>,
    min_ms: Option<f64>,
    max_ms: Option<f64>,
    error: Option<&'a str>,
}

/// The table's column titles, aligned with [`ApproxRow`]'s `Display`.
pub fn table_header() -> String {
    format!(
        "{:<8} {:<48} {:>7} {:>10} {:>10} {:>10} {:>10} {:>26}",
        "method", "params", "seqlen", "rel err", "worst row", "GFLOP", "MB", "ms [min, max]"
    )
}

impl fmt::Display for ApproxRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<8} {:<48} {:>7} ",
            self.method, self.params, self.seqlen_k
        )?;
        match &self.error {
            Some(e) => write!(f, "error: {e}"),
            None => write!(
                f,
                "{:>10.5} {:>10.5} {:>10.3} {:>10.2} {:>26}",
                self.rel_error,
                self.worst_row_rel_error,
                self.flops / 1e9,
                self.bytes / 1e6,
                match (self.ms, self.min_ms, self.max_ms) {
                    (Some(ms), Some(min), Some(max)) => spread_cell(ms, min, max, 3),
                    _ => "-".into(),
                }
            ),
        }
    }
}

/// A whole report.
#[derive(Clone, Debug)]
pub struct ApproxReport {
    /// The device's name.
    pub device: String,
    /// Whether it ran on the emulator (no times).
    pub emulator: bool,
    /// Where the inputs come from.
    pub source: String,
    /// batch, heads, kv_heads, head_dim (the lengths are the rows').
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// Key and value heads.
    pub kv_heads: usize,
    /// Elements of each head's vector.
    pub head_dim: usize,
    /// One row per method and length, the exact row first at each length.
    pub rows: Vec<ApproxRow>,
}

impl ApproxReport {
    /// One JSON object: device, inputs, one object per row.
    pub fn to_json(&self) -> String {
        crate::json::to_pretty(&ApproxReportJson {
            report: "approx",
            device: &self.device,
            emulator: self.emulator,
            inputs: &self.source,
            batch: self.batch,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            causal: false,
            dtype: "bf16",
            exact_sample_rows: EXACT_SAMPLE_ROWS,
            rows: self.rows.iter().map(ApproxRow::json).collect(),
        })
    }
}

/// An [`ApproxReport`] in JSON.
#[derive(Serialize)]
struct ApproxReportJson<'a> {
    report: &'static str,
    device: &'a str,
    emulator: bool,
    inputs: &'a str,
    batch: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal: bool,
    dtype: &'static str,
    exact_sample_rows: usize,
    rows: Vec<ApproxRowJson<'a>>,
}

/// What the report is doing, for a caller that shows progress.
pub enum ReportEvent<'a> {
    /// A method starts at a length: the `index`-th of `total` runs (1-based).
    Running {
        /// The length it runs at.
        seqlen: usize,
        /// The method.
        method: &'a Method,
        /// Its place among the report's runs, from 1.
        index: usize,
        /// The report's runs: methods times lengths.
        total: usize,
    },
    /// A row is done.
    Row(&'a ApproxRow),
}

/// The report on `device`: for each problem of `inputs` (each synthetic length, or the given
/// inputs), the exact row then each of `methods`. A method that fails gives a row with its error
/// and the report goes on; the exact row failing ends it (there is nothing to compare with). On
/// a GPU each method is timed ([`Timer`], after an L2 flush, the median of about 30 ms of runs);
/// on the emulator nothing is.
pub fn approx_report(
    device: &Device,
    inputs: &ReportInputs,
    methods: &[Method],
    mut progress: impl FnMut(ReportEvent<'_>),
) -> Result<ApproxReport> {
    if let Some(at) = methods.iter().position(|m| *m == Method::Exact) {
        return Err(Error::invalid(
            "methods",
            format!("entry {at} is exact, which is always each length's first row already"),
        ));
    }
    let lengths = match inputs {
        ReportInputs::Synthetic(s) if s.seqlens.is_empty() => {
            return Err(Error::invalid("seqlens", "empty: give at least one length"))
        }
        ReportInputs::Synthetic(s) => s.seqlens.len(),
        ReportInputs::Given(_) => 1,
    };
    let (batch, heads, kv_heads, head_dim) = inputs.dims();
    let mut report = ApproxReport {
        device: device.name(),
        emulator: !device.is_cuda(),
        source: inputs.source(),
        batch,
        heads,
        kv_heads,
        head_dim,
        rows: Vec::new(),
    };
    let mut timer = if device.is_cuda() {
        Some(Timer::new(device)?)
    } else {
        None
    };
    let total = lengths * (methods.len() + 1);
    let mut index = 0;
    for n in 0..lengths {
        let inputs = match inputs {
            ReportInputs::Synthetic(s) => Cow::Owned(s.inputs(s.seqlens[n])?),
            ReportInputs::Given(given) => Cow::Borrowed(given),
        };
        let problem = upload(device, &inputs)?;
        let mut exact: Option<Vec<f64>> = None;
        for method in std::iter::once(&Method::Exact).chain(methods) {
            index += 1;
            progress(ReportEvent::Running {
                seqlen: inputs.shape.seqlen_k,
                method,
                index,
                total,
            });
            let result = run_method(method, &problem, timer.as_mut());
            let row = match (result, &exact) {
                (Ok((planned, out, ms)), None) => {
                    let errors = sampled_exact_error(&inputs, &out);
                    let row = row_of(&planned, &inputs.shape, errors, ms);
                    exact = Some(out);
                    row
                }
                (Ok((planned, out, ms)), Some(want)) => {
                    let errors = relative_errors(&out, want, inputs.shape.head_dim);
                    row_of(&planned, &inputs.shape, errors, ms)
                }
                (Err(e), None) => return Err(e),
                (Err(e), Some(_)) => failed_row(method, &inputs.shape, e),
            };
            report.rows.push(row);
            progress(ReportEvent::Row(report.rows.last().expect("just pushed")));
        }
    }
    Ok(report)
}

/// q, k, v rounded to bf16 on `device`.
fn upload(device: &Device, inputs: &HostInputs) -> Result<Problem> {
    let s = inputs.shape;
    let put = |x: &[f32], shape: [usize; 4]| {
        let data: Vec<bf16> = x.iter().map(|&e| bf16::from_f32(e)).collect();
        Tensor::from_host(device, &data, &shape)
    };
    Ok(Problem {
        device: device.clone(),
        shape: s,
        q: put(&inputs.q, s.q_shape())?,
        k: put(&inputs.k, s.kv_shape())?,
        v: put(&inputs.v, s.kv_shape())?,
    })
}

/// Plans and runs `method` once (untimed: it also makes its workspaces), then times it when a
/// timer is given; returns the plan, the output widened to f64 (checked finite) and the spread
/// of the timed runs.
fn run_method(
    method: &Method,
    problem: &Problem,
    timer: Option<&mut Timer>,
) -> Result<(Planned, Vec<f64>, Option<Spread>)> {
    let mut planned = method.plan(problem)?;
    (planned.run)(&mut planned.out)?;
    let ms = match timer {
        None => None,
        Some(timer) => {
            let Planned { run, out, .. } = &mut planned;
            let estimate = timer.time(0, 1, || run(out))?[0];
            let (warmup, runs) = RunBudget::new(true).plan(estimate);
            Some(Spread::of(&timer.time(warmup, runs, || run(out))?))
        }
    };
    let out: Vec<f64> = planned
        .out
        .to_host()?
        .iter()
        .map(|x| f64::from(x.to_f32()))
        .collect();
    if let Some(at) = out.iter().position(|x| !x.is_finite()) {
        return Err(Error::Internal(format!(
            "{}: output element {at} is {}: the kernel did not write every row",
            planned.method, out[at]
        )));
    }
    Ok((planned, out, ms))
}

fn row_of(
    planned: &Planned,
    shape: &ProblemShape,
    (rel_error, worst_row_rel_error): (f64, f64),
    times: Option<Spread>,
) -> ApproxRow {
    ApproxRow {
        method: planned.method.into(),
        series: planned.series.clone(),
        params: planned.params.clone(),
        seqlen_q: shape.seqlen_q,
        seqlen_k: shape.seqlen_k,
        rel_error,
        worst_row_rel_error,
        flops: planned.flops,
        bytes: planned.bytes,
        ms: times.map(|t| t.median),
        min_ms: times.map(|t| t.min),
        max_ms: times.map(|t| t.max),
        error: None,
    }
}

fn failed_row(method: &Method, shape: &ProblemShape, e: Error) -> ApproxRow {
    ApproxRow {
        method: format!("{method:?}")
            .split([' ', '{'])
            .next()
            .unwrap_or("?")
            .to_lowercase(),
        series: format!("{method:?}"),
        params: format!("{method:?}"),
        seqlen_q: shape.seqlen_q,
        seqlen_k: shape.seqlen_k,
        rel_error: f64::NAN,
        worst_row_rel_error: f64::NAN,
        flops: f64::NAN,
        bytes: f64::NAN,
        ms: None,
        min_ms: None,
        max_ms: None,
        error: Some(e.to_string()),
    }
}

/// `||got - want|| / ||want||` over all of them, and the largest over one row of `row_len`
/// (a row whose `want` is zero counts 0 when `got` is too, infinity otherwise).
pub fn relative_errors(got: &[f64], want: &[f64], row_len: usize) -> (f64, f64) {
    let (mut diff_total, mut want_total, mut worst) = (0.0, 0.0, 0.0f64);
    for (g, w) in got.chunks(row_len).zip(want.chunks(row_len)) {
        let diff: f64 = g.iter().zip(w).map(|(a, b)| (a - b) * (a - b)).sum();
        let norm: f64 = w.iter().map(|b| b * b).sum();
        diff_total += diff;
        want_total += norm;
        let row = if norm > 0.0 {
            (diff / norm).sqrt()
        } else if diff > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        worst = worst.max(row);
    }
    let total = if want_total > 0.0 {
        (diff_total / want_total).sqrt()
    } else {
        0.0
    };
    (total, worst)
}

/// The exact output `out` against an f64 softmax on [`EXACT_SAMPLE_ROWS`] query rows of each
/// sequence and head (evenly spaced over the queries, the first and the last among them) of the
/// inputs rounded to bf16 as the kernels see them, at scale `1/sqrt(head_dim)`, non-causal;
/// [`relative_errors`] over those rows.
fn sampled_exact_error(inputs: &HostInputs, out: &[f64]) -> (f64, f64) {
    let s = inputs.shape;
    let d = s.head_dim;
    let scale = 1.0 / (d as f64).sqrt();
    let group = s.heads / s.kv_heads;
    let samples = EXACT_SAMPLE_ROWS.min(s.seqlen_q);
    let seen = |x: f32| f64::from(bf16::from_f32(x).to_f32());
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for b in 0..s.batch {
        for h in 0..s.heads {
            let kvh = h / group;
            for j in 0..samples {
                let i = if samples == 1 {
                    0
                } else {
                    j * (s.seqlen_q - 1) / (samples - 1)
                };
                let q_at = ((b * s.seqlen_q + i) * s.heads + h) * d;
                let qi: Vec<f64> = inputs.q[q_at..q_at + d].iter().map(|&x| seen(x)).collect();
                let kv_at = |key: usize| ((b * s.seqlen_k + key) * s.kv_heads + kvh) * d;
                let scores: Vec<f64> = (0..s.seqlen_k)
                    .map(|key| {
                        let kj = &inputs.k[kv_at(key)..kv_at(key) + d];
                        scale * qi.iter().zip(kj).map(|(a, &c)| a * seen(c)).sum::<f64>()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                let mut row = vec![0.0; d];
                for (key, w) in weights.iter().enumerate() {
                    for (r, &x) in row.iter_mut().zip(&inputs.v[kv_at(key)..kv_at(key) + d]) {
                        *r += w / total * seen(x);
                    }
                }
                want.extend(row);
                got.extend_from_slice(&out[q_at..q_at + d]);
            }
        }
    }
    relative_errors(&got, &want, d)
}
