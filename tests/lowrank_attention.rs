//! Low-rank (Linformer) attention against the f64 reference of its definition: the projection
//! kernel alone (odd seqlen_k and k_proj, head dims over several column blocks, shared and
//! per-KV-head projections, strided k) at the rounding it documents, and the whole call (GQA
//! groups 1, 2, 4, 5, 8 and MQA, f16 and bf16, seqlen_q != seqlen_k both ways, scale, softcap and
//! LSE) at the usual tolerances, with k and v scaled so that the projected keys and values have
//! the usual magnitude; unscaled long sequences by FlashAttention's rule against the naive
//! computation in bf16 and f16; identity projections give exact attention bit for bit; the
//! random projections' distribution; the C entry point on raw pointers; bad inputs (a causal
//! mask, a window, E or F of the wrong shape) refused by name before anything runs. Dense batches
//! only: the API has no varlen form. On the emulator with memory checks on, and on the GPU when
//! one is there.

mod common;

use common::MemcheckSetting;
use cuattn::approx::{
    lowrank_attention, lowrank_attention_into, lowrank_project_into, LowrankWorkspace, Projection,
};
use cuattn::reference::{self, AttentionProblem, LowrankProjection};
use cuattn::{flash_attention, AttentionElement, AttentionOptions, DType, Device, Tensor};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// `x` as the kernels see it: rounded to T (nearest even), widened exactly.
fn rounded<T: AttentionElement>(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| T::from_f64(v).to_f64()).collect()
}

/// float32 values rounded to T (nearest even) as the kernels round them, widened exactly. Not
/// through `T::from_f64`: half's `bf16::from_f64` (2.7) misrounds values just past a tie.
fn rounded_from_f32<T: AttentionElement>(x: &[f32]) -> Vec<f64> {
    x.iter()
        .map(|&v| match T::DTYPE {
            DType::BF16 => bf16::from_f32(v).to_f64(),
            _ => f16::from_f32(v).to_f64(),
        })
        .collect()
}

fn upload<T: AttentionElement>(device: &Device, x: &[f64], shape: &[usize]) -> Tensor<T> {
    let data: Vec<T> = x.iter().map(|&v| T::from_f64(v)).collect();
    Tensor::from_host(device, &data, shape).unwrap()
}

fn host<T: AttentionElement>(t: &Tensor<T>) -> Vec<f64> {
    t.to_host().unwrap().iter().map(|x| x.to_f64()).collect()
}

fn poisoned<T: AttentionElement>(device: &Device, shape: &[usize]) -> Tensor<T> {
    Tensor::full(device, shape, T::from_f64(f64::NAN)).unwrap()
}

/// The f64 values of a projection, and the reference's view of them.
fn widened(p: &Projection) -> Vec<f64> {
    p.values().iter().map(|&x| f64::from(x)).collect()
}

fn reference_view<'a>(p: &Projection, values: &'a [f64]) -> LowrankProjection<'a> {
    LowrankProjection {
        values,
        k_proj: p.k_proj(),
        per_kv_head: p.kv_heads().is_some(),
    }
}

/// Unit roundoff of T: half an ulp of 1 (bf16 keeps 8 significant bits, f16 11).
fn unit_roundoff(dtype: DType) -> f64 {
    if dtype == DType::BF16 {
        2f64.powi(-8)
    } else {
        2f64.powi(-11)
    }
}

#[derive(Clone, Copy, Debug)]
struct ProjectionCase {
    batch: usize,
    seqlen_k: usize,
    kv_heads: usize,
    head_dim: usize,
    k_proj: usize,
    per_kv_head: bool,
}

/// The projection kernel against the f64 projection by E rounded to T (the rounding the kernel
/// documents): what is left is float32 accumulation and the rounding of the result to T, so
/// |got - want| <= u |want| + atol, with u T's unit roundoff and atol = 2^-16 S_max for S_max the
/// largest sum of |products| of an element: each mma sums within 2^-19 of its sum of |products|
/// (arch/mma.cuh, emulator and tensor cores), and the float32 additions of at most 17 of them
/// add under 2^-19 S more. An element taken from the wrong place or a tile edge handled wrong
/// misses by O(|products|), as does a P element rounded otherwise than to nearest even.
fn check_projection<T: AttentionElement>(device: &Device, c: &ProjectionCase, seed: u64) {
    let _memcheck = MemcheckSetting::new(true);
    let mut rng = StdRng::seed_from_u64(seed);
    let x_shape = [c.batch, c.seqlen_k, c.kv_heads, c.head_dim];
    // x is a strided view: the first half of each row of a [.., 2 * kv_heads, head_dim] buffer
    // (k of a packed KV tensor).
    let wide = rounded::<T>(&random(
        &mut rng,
        c.batch * c.seqlen_k * 2 * c.kv_heads * c.head_dim,
    ));
    let buffer = upload::<T>(
        device,
        &wide,
        &[c.batch, c.seqlen_k, 2 * c.kv_heads, c.head_dim],
    );
    let row = 2 * c.kv_heads * c.head_dim;
    let x = buffer
        .view(0, &x_shape, &[c.seqlen_k * row, row, c.head_dim, 1])
        .unwrap();
    let x_host = host(&x);
    let shape = match c.per_kv_head {
        true => vec![c.kv_heads, c.k_proj, c.seqlen_k],
        false => vec![c.k_proj, c.seqlen_k],
    };
    let p = Projection::random(device, &shape, seed + 1).unwrap();
    let out_shape = [c.batch, c.k_proj, c.kv_heads, c.head_dim];
    let mut out = poisoned::<T>(device, &out_shape);
    lowrank_project_into(&x, &p, &mut out).unwrap_or_else(|e| panic!("{c:?}: {e}"));

    let p_rounded = rounded_from_f32::<T>(p.values());
    let dims = (c.batch, c.seqlen_k, c.kv_heads, c.head_dim);
    let want = reference::lowrank_project(&x_host, dims, &reference_view(&p, &p_rounded));
    let abs_p: Vec<f64> = p_rounded.iter().map(|a| a.abs()).collect();
    let abs_x: Vec<f64> = x_host.iter().map(|a| a.abs()).collect();
    let sums = reference::lowrank_project(&abs_x, dims, &reference_view(&p, &abs_p));
    let s_max = sums.iter().copied().fold(0.0, f64::max);
    let atol = 2f64.powi(-16) * s_max;
    let got = host(&out);
    if let Err(m) = reference::compare(&got, &want, atol, unit_roundoff(T::DTYPE)) {
        panic!("{c:?} {:?} on {}: {m}", T::DTYPE, device.name());
    }
    println!(
        "projection {c:?} {:?} on {}: ok (atol {atol:.2e})",
        T::DTYPE,
        device.name()
    );
}

#[test]
fn projection_kernel_matches_its_definition_at_odd_sizes() {
    for device in common::devices() {
        for (n, (seqlen_k, k_proj, head_dim)) in [
            (1, 1, 8),
            (17, 37, 40),
            (97, 64, 64),
            (203, 65, 136),
            (257, 130, 256),
            (64, 16, 72),
        ]
        .into_iter()
        .enumerate()
        {
            for (kv_heads, per_kv_head) in [(1, false), (3, true), (2, false)] {
                let c = ProjectionCase {
                    batch: 2,
                    seqlen_k,
                    kv_heads,
                    head_dim,
                    k_proj,
                    per_kv_head,
                };
                let seed = 100 + n as u64 * 10 + kv_heads as u64;
                check_projection::<bf16>(&device, &c, seed);
                check_projection::<f16>(&device, &c, seed);
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    seqlen_q: usize,
    seqlen_k: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    k_proj: usize,
    per_kv_head: bool,
    scale: Option<f32>,
    softcap: Option<f32>,
}

impl Case {
    fn new(seqlen_q: usize, seqlen_k: usize, heads: usize, kv_heads: usize) -> Case {
        Case {
            batch: 2,
            seqlen_q,
            seqlen_k,
            heads,
            kv_heads,
            head_dim: 64,
            k_proj: 37,
            per_kv_head: false,
            scale: None,
            softcap: None,
        }
    }

    /// How much larger the entries of K' = E k are than those of k (and V' than v) for E with
    /// i.i.d. N(0, 1/k_proj) entries: K'[p, d] sums seqlen_k terms of variance var(k) / k_proj.
    fn gain(&self) -> f64 {
        (self.seqlen_k as f64 / self.k_proj as f64).sqrt()
    }

    /// The reference problem over the original keys.
    fn problem(&self) -> AttentionProblem {
        let mut p = AttentionProblem::new(
            self.batch,
            self.seqlen_q,
            self.seqlen_k,
            self.heads,
            self.kv_heads,
            self.head_dim,
        );
        if let Some(scale) = self.scale {
            p.scale = f64::from(scale);
        }
        p.softcap = f64::from(self.softcap.unwrap_or(0.0));
        p
    }

    fn projection_shape(&self) -> Vec<usize> {
        match self.per_kv_head {
            true => vec![self.kv_heads, self.k_proj, self.seqlen_k],
            false => vec![self.k_proj, self.seqlen_k],
        }
    }
}

fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::BF16 {
        2e-2
    } else {
        1e-2
    }
}

/// LSE tolerance (atol = rtol), as the flash tests use.
const LSE_TOL: f64 = 1e-2;

/// One run of a case and its f64 reference.
struct Outcome {
    /// The inputs as the kernels saw them (rounded to T), widened.
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    e: Projection,
    f: Projection,
    out: Vec<f64>,
    lse: Vec<f64>,
    want: reference::AttentionReference,
}

/// Runs a case, outputs poisoned first, on q uniform in [-1, 1) and k and v uniform in
/// [-kv_range, kv_range), with random E and F, and computes the f64 definition on the inputs
/// rounded to T and on E and F as given (float32, not rounded).
fn run<T: AttentionElement>(device: &Device, c: &Case, seed: u64, kv_range: f64) -> Outcome {
    let _memcheck = MemcheckSetting::new(true);
    let mut rng = StdRng::seed_from_u64(seed);
    let q_shape = [c.batch, c.seqlen_q, c.heads, c.head_dim];
    let k_shape = [c.batch, c.seqlen_k, c.kv_heads, c.head_dim];
    let mut scaled = |n: usize| -> Vec<f64> {
        let x: Vec<f64> = random(&mut rng, n).iter().map(|a| a * kv_range).collect();
        rounded::<T>(&x)
    };
    let q = rounded::<T>(&random(
        &mut StdRng::seed_from_u64(seed + 3),
        q_shape.iter().product(),
    ));
    let k = scaled(k_shape.iter().product());
    let v = scaled(k_shape.iter().product());
    let e = Projection::random(device, &c.projection_shape(), seed + 1).unwrap();
    let f = Projection::random(device, &c.projection_shape(), seed + 2).unwrap();
    let opts = AttentionOptions {
        scale: c.scale,
        softcap: c.softcap,
        return_lse: true,
        ..Default::default()
    };
    let mut out = poisoned::<T>(device, &q_shape);
    let mut lse = Tensor::full(device, &[c.batch, c.heads, c.seqlen_q], f32::NAN).unwrap();
    let mut workspace = LowrankWorkspace::new(device);
    lowrank_attention_into(
        &upload::<T>(device, &q, &q_shape),
        &upload::<T>(device, &k, &k_shape),
        &upload::<T>(device, &v, &k_shape),
        &e,
        &f,
        &mut out,
        Some(&mut lse),
        &opts,
        &mut workspace,
    )
    .unwrap_or_else(|err| panic!("{c:?}: {err}"));
    let want = reference::lowrank_attention(
        &c.problem(),
        &reference_view(&e, &widened(&e)),
        &reference_view(&f, &widened(&f)),
        &q,
        &k,
        &v,
    );
    let lse = lse.to_host().unwrap().iter().map(|&x| x.into()).collect();
    Outcome {
        q,
        k,
        v,
        e,
        f,
        out: host(&out),
        lse,
        want,
    }
}

/// A case against the f64 definition at the usual tolerances (bf16 2e-2, f16 1e-2; LSE 1e-2).
/// Those are calibrated for attention inputs of magnitude about 1; here the attention's inputs
/// are K' and V', whose entries are sqrt(seqlen_k / k_proj) times those of k and v under N(0,
/// 1/k_proj) projections (`Case::gain`). So k and v are drawn that much smaller (never larger):
/// K' and V' then have the usual magnitude, and since rounding errors are relative, the check is
/// as tight as the flash kernel's own. `long_sequences_match_bf16_arithmetic` checks unscaled
/// inputs by FlashAttention's rule instead.
fn check<T: AttentionElement>(device: &Device, c: &Case, seed: u64) {
    let run = run::<T>(device, c, seed, 1.0 / c.gain().max(1.0));
    let tol = tolerance(T::DTYPE);
    if let Err(m) = reference::compare(&run.out, &run.want.out, tol, tol) {
        panic!("{c:?} {:?} on {}: out: {m}", T::DTYPE, device.name());
    }
    if let Err(m) = reference::compare(&run.lse, &run.want.lse, LSE_TOL, LSE_TOL) {
        panic!("{c:?} {:?} on {}: lse: {m}", T::DTYPE, device.name());
    }
    println!("{c:?} {:?} on {}: ok", T::DTYPE, device.name());
}

#[test]
fn linformer_matches_its_definition_across_groups_and_lengths() {
    for device in common::devices() {
        for (n, (seqlen_q, seqlen_k, heads, kv_heads)) in [
            (17, 97, 4, 4),
            (113, 33, 4, 2),
            (1, 127, 8, 2),
            (97, 203, 5, 1),
            (64, 17, 8, 1),
            (33, 65, 16, 2),
        ]
        .into_iter()
        .enumerate()
        {
            let mut c = Case::new(seqlen_q, seqlen_k, heads, kv_heads);
            c.per_kv_head = n % 2 == 1;
            check::<bf16>(&device, &c, 10 + n as u64);
            check::<f16>(&device, &c, 20 + n as u64);
        }
    }
}

#[test]
fn head_dims_k_proj_scale_and_softcap() {
    for device in common::devices() {
        for (n, (head_dim, k_proj, scale, softcap)) in [
            (96, 1, None, None),
            (128, 64, Some(0.05), None),
            (40, 130, None, Some(5.0)),
            (256, 16, Some(0.1), Some(30.0)),
        ]
        .into_iter()
        .enumerate()
        {
            let mut c = Case::new(29, 77, 4, 2);
            (c.head_dim, c.k_proj, c.scale, c.softcap) = (head_dim, k_proj, scale, softcap);
            c.per_kv_head = n % 2 == 0;
            check::<bf16>(&device, &c, 40 + n as u64);
        }
    }
}

/// Linformer as a framework computes it in T, the naive same-precision baseline of
/// FlashAttention's rule: E and F rounded to T, each product's result (K', V', the scores, the
/// output) rounded to T from an exact sum, the softmax of the rounded scores rounded to T, and the
/// LSE of the rounded scores rounded to T. No softcap.
fn naive_same_precision<T: AttentionElement>(c: &Case, run: &Outcome) -> (Vec<f64>, Vec<f64>) {
    let dims = (c.batch, c.seqlen_k, c.kv_heads, c.head_dim);
    let project = |x: &[f64], p: &Projection| {
        let values = rounded_from_f32::<T>(p.values());
        rounded::<T>(&reference::lowrank_project(
            x,
            dims,
            &reference_view(p, &values),
        ))
    };
    let (kp, vp) = (project(&run.k, &run.e), project(&run.v, &run.f));
    let (d, m, group) = (c.head_dim, c.k_proj, c.heads / c.kv_heads);
    let scale = c.problem().scale;
    let round = |x: f64| T::from_f64(x).to_f64();
    let mut out = vec![0.0; run.q.len()];
    let mut lse = vec![0.0; c.batch * c.heads * c.seqlen_q];
    for b in 0..c.batch {
        for h in 0..c.heads {
            let kvh = h / group;
            let key = |x: &[f64], j: usize| -> Vec<f64> {
                x[((b * m + j) * c.kv_heads + kvh) * d..][..d].to_vec()
            };
            for i in 0..c.seqlen_q {
                let at = ((b * c.seqlen_q + i) * c.heads + h) * d;
                let qi = &run.q[at..at + d];
                let scores: Vec<f64> = (0..m)
                    .map(|j| {
                        let dot: f64 = qi.iter().zip(key(&kp, j)).map(|(a, b)| a * b).sum();
                        round(round(dot) * scale)
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                lse[(b * c.heads + h) * c.seqlen_q + i] = round(max + sum.ln());
                let probs: Vec<f64> = scores
                    .iter()
                    .map(|s| round((s - max).exp() / sum))
                    .collect();
                for (e, o) in out[at..at + d].iter_mut().enumerate() {
                    let acc: f64 = (0..m).map(|j| probs[j] * key(&vp, j)[e]).sum();
                    *o = round(acc);
                }
            }
        }
    }
    (out, lse)
}

/// The largest |got - want|.
fn max_error(got: &[f64], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// Long sequences projected to few rows on k and v of the usual magnitude: K' and V' are about
/// sqrt(1025 / 37) = 5.3 times larger than k and v, the scores as much, so the usual absolute
/// tolerances no longer apply (the output and LSE errors of T's own rounding grow with them).
/// FlashAttention's rule does: the error against the f64 definition is at most twice that of
/// the naive computation in T, for out and LSE alike. The same case on scaled inputs meets the
/// usual tolerances (`check`).
#[test]
fn long_sequences_match_bf16_arithmetic() {
    for device in common::devices() {
        let mut c = Case::new(65, 1025, 4, 2);
        c.per_kv_head = true;
        for (seed, bf) in [(60, true), (61, false)] {
            let (dtype, run, naive) = if bf {
                let run = run::<bf16>(&device, &c, seed, 1.0);
                let naive = naive_same_precision::<bf16>(&c, &run);
                (DType::BF16, run, naive)
            } else {
                let run = run::<f16>(&device, &c, seed, 1.0);
                let naive = naive_same_precision::<f16>(&c, &run);
                (DType::F16, run, naive)
            };
            let errors = [
                (
                    max_error(&run.out, &run.want.out),
                    max_error(&naive.0, &run.want.out),
                ),
                (
                    max_error(&run.lse, &run.want.lse),
                    max_error(&naive.1, &run.want.lse),
                ),
            ];
            println!(
                "{c:?} {dtype:?} on {}: max error (kernel, naive {dtype:?}): out {:?}, lse {:?}",
                device.name(),
                errors[0],
                errors[1]
            );
            for (what, (kernel, naive)) in ["out", "lse"].iter().zip(errors) {
                assert!(kernel <= 2.0 * naive, "{what}: {kernel} > 2 * {naive}");
            }
        }
        check::<bf16>(&device, &c, 62);
        check::<f16>(&device, &c, 63);
    }
}

/// E = F = I (k_proj = seqlen_k) leaves the keys and values as they are (each projected element
/// is one exact product, rounding nothing), so Linformer attention is exact attention: the flash
/// kernel's own result, bit for bit.
#[test]
fn identity_projections_give_exact_attention_bit_for_bit() {
    for device in common::devices() {
        let _memcheck = MemcheckSetting::new(true);
        let (b, sq, sk, heads, kv_heads, d) = (2, 45, 70, 6, 2, 64);
        let mut rng = StdRng::seed_from_u64(7);
        let q = upload::<bf16>(
            &device,
            &random(&mut rng, b * sq * heads * d),
            &[b, sq, heads, d],
        );
        let k = upload::<bf16>(
            &device,
            &random(&mut rng, b * sk * kv_heads * d),
            &[b, sk, kv_heads, d],
        );
        let v = upload::<bf16>(
            &device,
            &random(&mut rng, b * sk * kv_heads * d),
            &[b, sk, kv_heads, d],
        );
        let identity: Vec<f32> = (0..sk * sk)
            .map(|i| if i / sk == i % sk { 1.0 } else { 0.0 })
            .collect();
        let e = Projection::new(&device, &identity, &[sk, sk]).unwrap();
        let opts = AttentionOptions {
            return_lse: true,
            softcap: Some(20.0),
            ..Default::default()
        };
        let got = lowrank_attention(&q, &k, &v, &e, &e, &opts).unwrap();
        let want = flash_attention(&q, &k, &v, &opts).unwrap();
        let bits = |t: &Tensor<bf16>| -> Vec<u16> {
            t.to_host().unwrap().iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(bits(&got.out), bits(&want.out), "out on {}", device.name());
        assert_eq!(
            got.lse.unwrap().to_host().unwrap(),
            want.lse.unwrap().to_host().unwrap(),
            "lse on {}",
            device.name()
        );
    }
}

/// Projection::random draws N(0, 1/k_proj) entries: over 64 x 1000 entries the sample mean is
/// within 4 standard errors of 0 and the variance within 5% of 1/k_proj; the same seed draws the
/// same values, another seed others.
#[test]
fn random_projections_are_seeded_gaussians_of_variance_one_over_k_proj() {
    let device = Device::emulator();
    let (k_proj, seqlen_k) = (64, 1000);
    let p = Projection::random(&device, &[k_proj, seqlen_k], 5).unwrap();
    let x = widened(&p);
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let variance = x.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let want = 1.0 / k_proj as f64;
    assert!(
        mean.abs() < 4.0 * (want / n).sqrt(),
        "mean {mean}, variance {variance}"
    );
    assert!(
        (variance / want - 1.0).abs() < 0.05,
        "variance {variance}, want {want}"
    );
    assert_eq!(
        p.values(),
        Projection::random(&device, &[k_proj, seqlen_k], 5)
            .unwrap()
            .values()
    );
    assert_ne!(
        p.values(),
        Projection::random(&device, &[k_proj, seqlen_k], 6)
            .unwrap()
            .values()
    );
    let per_head = Projection::random(&device, &[3, 8, 20], 1).unwrap();
    assert_eq!(
        (per_head.kv_heads(), per_head.k_proj(), per_head.seqlen_k()),
        (Some(3), 8, 20)
    );
}

#[test]
fn bad_inputs_are_refused_naming_them_before_anything_runs() {
    let device = Device::emulator();
    let t = |shape: &[usize]| Tensor::full(&device, shape, bf16::from_f32(0.5)).unwrap();
    let (q, k, v) = (t(&[1, 10, 4, 32]), t(&[1, 12, 2, 32]), t(&[1, 12, 2, 32]));
    let e = Projection::random(&device, &[8, 12], 1).unwrap();
    let opts = AttentionOptions::default();
    let err = |e: &Projection, f: &Projection, k: &Tensor<bf16>, v: &Tensor<bf16>, opts: &_| {
        let mut out = poisoned::<bf16>(&device, &[1, 10, 4, 32]);
        let mut ws = LowrankWorkspace::new(&device);
        let msg = lowrank_attention_into(&q, k, v, e, f, &mut out, None, opts, &mut ws)
            .unwrap_err()
            .to_string();
        // Refused before any launch: out still holds its poison.
        assert!(host(&out).iter().all(|x| x.is_nan()), "{msg}");
        msg
    };
    assert!(lowrank_attention(&q, &k, &v, &e, &e, &opts).is_ok());

    let causal = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    let msg = err(&e, &e, &k, &v, &causal);
    assert!(
        msg.contains("`causal`") && msg.contains("mixes future keys into every row"),
        "{msg}"
    );
    let window = AttentionOptions {
        window: Some((4, 0)),
        ..Default::default()
    };
    let msg = err(&e, &e, &k, &v, &window);
    assert!(
        msg.contains("`window`") && msg.contains("mixes future keys"),
        "{msg}"
    );
    // An unbounded window is no mask.
    let unbounded = AttentionOptions {
        window: Some((-1, -1)),
        ..Default::default()
    };
    assert!(lowrank_attention(&q, &k, &v, &e, &e, &unbounded).is_ok());

    let short = Projection::random(&device, &[8, 11], 1).unwrap();
    let msg = err(&short, &e, &k, &v, &opts);
    assert!(msg.contains("`e`") && msg.contains("12 keys"), "{msg}");
    let msg = err(&e, &short, &k, &v, &opts);
    assert!(msg.contains("`f`"), "{msg}");
    let three_heads = Projection::random(&device, &[3, 8, 12], 1).unwrap();
    let msg = err(&three_heads, &e, &k, &v, &opts);
    assert!(msg.contains("`e`") && msg.contains("2 KV heads"), "{msg}");
    let other_k = Projection::random(&device, &[2, 9, 12], 1).unwrap();
    let msg = err(&e, &other_k, &k, &v, &opts);
    assert!(msg.contains("`f`") && msg.contains("same k"), "{msg}");
    let msg = err(&e, &e, &k, &t(&[1, 12, 1, 32]), &opts);
    assert!(msg.contains("`v`"), "{msg}");
    let wide = t(&[1, 12, 2, 40]);
    let misaligned = wide.view(4, &[1, 12, 2, 32], &[960, 80, 40, 1]).unwrap();
    let msg = err(&e, &e, &misaligned, &v, &opts);
    assert!(
        msg.contains("`k`") && msg.contains("16-byte aligned"),
        "{msg}"
    );

    for (shape, values, needle) in [
        (vec![0, 12], vec![], "shape [0, 12]"),
        (vec![12], vec![0.0; 12], "shape [12]"),
        (vec![2, 3], vec![0.0; 5], "5 values"),
        (vec![1, 2], vec![0.0, f32::INFINITY], "element 1 is inf"),
    ] {
        let msg = Projection::new(&device, &values, &shape)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`projection`") && msg.contains(needle),
            "{msg}"
        );
    }
}

/// The C entry point on raw pointers: a launch equals the Rust call bit for bit, and bad params
/// are refused naming the field.
#[test]
fn c_entry_point_projects_and_refuses() {
    use cuattn::ffi::{self, cuattn_status as Status};
    let device = Device::emulator();
    let (b, sk, kv_heads, d, k_proj) = (2, 50, 2, 48, 20);
    let mut rng = StdRng::seed_from_u64(3);
    let x = upload::<f16>(
        &device,
        &random(&mut rng, b * sk * kv_heads * d),
        &[b, sk, kv_heads, d],
    );
    let p = Projection::random(&device, &[kv_heads, k_proj, sk], 4).unwrap();
    let mut want = poisoned::<f16>(&device, &[b, k_proj, kv_heads, d]);
    lowrank_project_into(&x, &p, &mut want).unwrap();
    let projection = Tensor::from_host(&device, p.values(), p.shape()).unwrap();
    let out = poisoned::<f16>(&device, &[b, k_proj, kv_heads, d]);
    let params = ffi::cuattn_lowrank_projection_params {
        x: x.raw_address().cast_const(),
        projection: projection.raw_address().cast_const().cast(),
        out: out.raw_address(),
        x_batch_stride: (sk * kv_heads * d) as i64,
        x_row_stride: (kv_heads * d) as i64,
        x_head_stride: d as i64,
        out_batch_stride: (k_proj * kv_heads * d) as i64,
        out_row_stride: (kv_heads * d) as i64,
        out_head_stride: d as i64,
        projection_head_stride: (k_proj * sk) as i64,
        projection_row_stride: sk as i64,
        batch: b as i32,
        seqlen_k: sk as i32,
        kv_heads: kv_heads as i32,
        head_dim: d as i32,
        k_proj: k_proj as i32,
        dtype: ffi::cuattn_dtype::CUATTN_DTYPE_F16,
    };
    // SAFETY: every pointer is a live emulator buffer of the extents params states.
    let launch = |p: &ffi::cuattn_lowrank_projection_params| unsafe {
        ffi::cuattn_emu_raw_launch_lowrank_projection(p, std::ptr::null_mut())
    };
    assert_eq!(
        launch(&params),
        Status::CUATTN_OK,
        "{}",
        common::last_error()
    );
    let bits = |t: &Tensor<f16>| -> Vec<u16> {
        t.to_host().unwrap().iter().map(|x| x.to_bits()).collect()
    };
    assert_eq!(bits(&out), bits(&want));
    // An empty batch launches nothing and succeeds.
    assert_eq!(
        launch(&ffi::cuattn_lowrank_projection_params { batch: 0, ..params }),
        Status::CUATTN_OK
    );

    let misaligned = x
        .raw_address()
        .cast::<u8>()
        .wrapping_add(2)
        .cast_const()
        .cast();
    for (bad, needle) in [
        (
            ffi::cuattn_lowrank_projection_params {
                head_dim: 12,
                ..params
            },
            "head_dim = 12",
        ),
        (
            ffi::cuattn_lowrank_projection_params {
                k_proj: 0,
                ..params
            },
            "k_proj = 0",
        ),
        (
            ffi::cuattn_lowrank_projection_params {
                projection_row_stride: sk as i64 - 1,
                ..params
            },
            "projection_row_stride = 49",
        ),
        (
            ffi::cuattn_lowrank_projection_params {
                projection: std::ptr::null(),
                ..params
            },
            "must be set",
        ),
        (
            ffi::cuattn_lowrank_projection_params {
                x: misaligned,
                ..params
            },
            "16-byte aligned",
        ),
        (
            ffi::cuattn_lowrank_projection_params {
                x_row_stride: 100,
                ..params
            },
            "multiple of 8",
        ),
        (
            ffi::cuattn_lowrank_projection_params {
                kv_heads: 70000,
                ..params
            },
            "kv_heads = 70000",
        ),
    ] {
        assert_eq!(launch(&bad), Status::CUATTN_ERROR_INVALID_ARGUMENT);
        let message = common::last_error();
        assert!(
            message.contains("lowrank_projection") && message.contains(needle),
            "{message}"
        );
    }
    // SAFETY: a null params pointer is refused, not read.
    let status = unsafe {
        ffi::cuattn_emu_raw_launch_lowrank_projection(std::ptr::null(), std::ptr::null_mut())
    };
    assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert!(bits(&out) == bits(&want), "refused launches wrote nothing");
}
