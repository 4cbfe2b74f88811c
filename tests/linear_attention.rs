//! Linear attention against the f64 reference of its definition (not against softmax attention):
//! each feature map, causal and not, lengths around the 64-key chunk (C - 1, C, C + 1, 3C + 5),
//! seqlen_q != seqlen_k both ways, GQA and MQA, value dims apart from head dims, f16 and bf16,
//! FAVOR with m not a multiple of 16, varlen; decode through LinearState token by token and in
//! uneven steps equals the causal prefill; FAVOR approaches softmax attention as m grows; bad
//! inputs refused by name; the C entry points on raw pointers. Emulator, memory checks on.

mod common;

use common::{random, rounded, tolerance, MemcheckSetting};
use cuattn::approx::{
    linear_attention, linear_attention_into, linear_attention_varlen_into, FavorFeatures, Feature,
    LinearOptions, LinearState, LinearWorkspace,
};
use cuattn::reference::{self, LinearFeature};
use cuattn::{AttentionElement, Device, Tensor, VarlenBatch};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EPS: f64 = 1e-6;

#[derive(Clone, Copy, Debug)]
enum Map {
    Elu1,
    Relu,
    Favor(usize),
}

#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    seqlen_q: usize,
    seqlen_k: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    value_dim: usize,
    map: Map,
    causal: bool,
    seed: u64,
}

impl Case {
    fn new(seqlen_q: usize, seqlen_k: usize, map: Map, causal: bool) -> Case {
        Case {
            batch: 2,
            seqlen_q,
            seqlen_k,
            heads: 4,
            kv_heads: 2,
            head_dim: 32,
            value_dim: 40,
            map,
            causal,
            seed: 3,
        }
    }
}

fn upload<T: AttentionElement>(device: &Device, x: &[f64], shape: &[usize]) -> Tensor<T> {
    let data: Vec<T> = x.iter().map(|&v| T::from_f64(v)).collect();
    Tensor::from_host(device, &data, shape).unwrap()
}

fn host<T: AttentionElement>(t: &Tensor<T>) -> Vec<f64> {
    t.to_host().unwrap().iter().map(|x| x.to_f64()).collect()
}

/// The FAVOR features of a case (seeded) on the device, and the reference's copy.
fn favor(device: &Device, m: usize, head_dim: usize, seed: u64) -> (FavorFeatures, LinearFeature) {
    let f = FavorFeatures::orthogonal(device, m, head_dim, seed).unwrap();
    let reference = LinearFeature::Favor {
        projection: f.projection().iter().map(|&x| f64::from(x)).collect(),
        features: m,
    };
    (f, reference)
}

/// Runs a dense case (output poisoned first) and compares it with the reference.
fn check<T: AttentionElement>(c: &Case) {
    for device in common::devices() {
        check_on::<T>(&device, c);
    }
}

/// [`check`] on one device (the emulator with its memory checker on).
fn check_on<T: AttentionElement>(device: &Device, c: &Case) {
    let device = device.clone();
    let _memcheck = MemcheckSetting::new(true);
    let mut rng = StdRng::seed_from_u64(c.seed);
    let q_shape = [c.batch, c.seqlen_q, c.heads, c.head_dim];
    let k_shape = [c.batch, c.seqlen_k, c.kv_heads, c.head_dim];
    let v_shape = [c.batch, c.seqlen_k, c.kv_heads, c.value_dim];
    let q = rounded::<T>(&random(&mut rng, q_shape.iter().product()));
    let k = rounded::<T>(&random(&mut rng, k_shape.iter().product()));
    let v = rounded::<T>(&random(&mut rng, v_shape.iter().product()));
    let favor_features = match c.map {
        Map::Favor(m) => Some(favor(&device, m, c.head_dim, c.seed + 1)),
        _ => None,
    };
    let (feature, reference_feature) = match (&c.map, &favor_features) {
        (Map::Elu1, _) => (Feature::Elu1, LinearFeature::Elu1),
        (Map::Relu, _) => (Feature::Relu, LinearFeature::Relu),
        (Map::Favor(_), Some((f, r))) => (Feature::Favor(f), r.clone()),
        (Map::Favor(_), None) => unreachable!(),
    };
    let opts = LinearOptions {
        feature,
        causal: c.causal,
        ..Default::default()
    };
    let out_shape = [c.batch, c.seqlen_q, c.heads, c.value_dim];
    let mut out = Tensor::full(&device, &out_shape, T::from_f64(f64::NAN)).unwrap();
    let mut workspace = LinearWorkspace::new(&device);
    linear_attention_into(
        &upload::<T>(&device, &q, &q_shape),
        &upload::<T>(&device, &k, &k_shape),
        &upload::<T>(&device, &v, &v_shape),
        &mut out,
        &opts,
        &mut workspace,
    )
    .unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let seqlens = vec![(c.seqlen_q, c.seqlen_k); c.batch];
    let want = reference::linear_attention(
        &seqlens,
        c.heads,
        c.kv_heads,
        c.head_dim,
        c.value_dim,
        &reference_feature,
        c.causal,
        EPS,
        &q,
        &k,
        &v,
    );
    let tol = tolerance(T::DTYPE);
    if let Err(m) = reference::compare(&host(&out), &want, tol, tol) {
        panic!("{c:?} {:?}: {m}", T::DTYPE);
    }
}

#[test]
fn each_feature_map_matches_its_definition_around_chunk_boundaries() {
    for (n, len) in [63, 64, 65, 197].into_iter().enumerate() {
        for (map, causal) in [
            (Map::Elu1, true),
            (Map::Relu, false),
            (Map::Favor(37), true),
            (Map::Elu1, false),
        ] {
            let mut c = Case::new(len, len, map, causal);
            c.seed = n as u64 * 10 + causal as u64;
            check::<bf16>(&c);
        }
    }
}

#[test]
fn causal_with_unequal_lengths_both_ways() {
    for (sq, sk) in [(40, 130), (130, 40), (1, 65), (65, 1), (100, 100)] {
        for map in [Map::Elu1, Map::Favor(20)] {
            let c = Case::new(sq, sk, map, true);
            check::<f16>(&c);
        }
    }
    check::<bf16>(&Case::new(50, 77, Map::Relu, false));
}

#[test]
fn gqa_mqa_dims_and_dtypes() {
    let mut c = Case::new(90, 90, Map::Elu1, true);
    for (heads, kv_heads, head_dim, value_dim) in [
        (4, 4, 64, 64),
        (6, 2, 32, 96),
        (8, 1, 128, 24),
        (3, 1, 16, 8),
    ] {
        c.heads = heads;
        c.kv_heads = kv_heads;
        c.head_dim = head_dim;
        c.value_dim = value_dim;
        c.seed += 1;
        check::<bf16>(&c);
        check::<f16>(&c);
    }
    c.map = Map::Favor(256);
    c.head_dim = 64;
    check::<bf16>(&c);
}

#[test]
fn varlen_batches_match_the_definition() {
    let device = Device::emulator();
    let _memcheck = MemcheckSetting::new(true);
    let seqlens = [(30usize, 70usize), (65, 65), (1, 130)];
    let (heads, kv_heads, d, dv) = (4, 2, 32, 16);
    let cu = |f: fn(&(usize, usize)) -> usize| -> Vec<i32> {
        let mut acc = 0;
        std::iter::once(0)
            .chain(seqlens.iter().map(|s| {
                acc += f(s) as i32;
                acc
            }))
            .collect()
    };
    let batch = VarlenBatch::new(&device, &cu(|s| s.0), &cu(|s| s.1)).unwrap();
    let (tq, tk) = (batch.total_q(), batch.total_k());
    let mut rng = StdRng::seed_from_u64(9);
    let q = rounded::<bf16>(&random(&mut rng, tq * heads * d));
    let k = rounded::<bf16>(&random(&mut rng, tk * kv_heads * d));
    let v = rounded::<bf16>(&random(&mut rng, tk * kv_heads * dv));
    for causal in [true, false] {
        let opts = LinearOptions {
            feature: Feature::Elu1,
            causal,
            ..Default::default()
        };
        let mut out = Tensor::full(&device, &[tq, heads, dv], bf16::from_f32(f32::NAN)).unwrap();
        linear_attention_varlen_into(
            &upload::<bf16>(&device, &q, &[tq, heads, d]),
            &upload::<bf16>(&device, &k, &[tk, kv_heads, d]),
            &upload::<bf16>(&device, &v, &[tk, kv_heads, dv]),
            &batch,
            &mut out,
            &opts,
            &mut LinearWorkspace::new(&device),
        )
        .unwrap();
        let want = reference::linear_attention(
            &seqlens,
            heads,
            kv_heads,
            d,
            dv,
            &LinearFeature::Elu1,
            causal,
            EPS,
            &q,
            &k,
            &v,
        );
        reference::compare(&host(&out), &want, 2e-2, 2e-2).unwrap();
    }
}

/// A LinearState stepped through the tokens one at a time, and in uneven steps, gives the causal
/// prefill's output (the kernels' own, up to rounding), for the elementwise and FAVOR features.
#[test]
fn decode_through_the_state_equals_the_causal_prefill() {
    let device = Device::emulator();
    let _memcheck = MemcheckSetting::new(true);
    let (b, n, heads, kv_heads, d, dv) = (2, 70, 4, 2, 32, 24);
    let mut rng = StdRng::seed_from_u64(21);
    let q = rounded::<bf16>(&random(&mut rng, b * n * heads * d));
    let k = rounded::<bf16>(&random(&mut rng, b * n * kv_heads * d));
    let v = rounded::<bf16>(&random(&mut rng, b * n * kv_heads * dv));
    let (favor_features, _) = favor(&device, 24, d, 5);
    for feature in [Feature::Elu1, Feature::Favor(&favor_features)] {
        let opts = LinearOptions {
            feature,
            causal: true,
            ..Default::default()
        };
        let prefill = host(
            &linear_attention(
                &upload::<bf16>(&device, &q, &[b, n, heads, d]),
                &upload::<bf16>(&device, &k, &[b, n, kv_heads, d]),
                &upload::<bf16>(&device, &v, &[b, n, kv_heads, dv]),
                &opts,
            )
            .unwrap(),
        );
        for steps in [vec![1; n], vec![5, 64, 1]] {
            let m = feature.features(d);
            let mut state = LinearState::new(&device, b, kv_heads, m, dv).unwrap();
            let mut workspace = LinearWorkspace::new(&device);
            let mut got = vec![0.0; prefill.len()];
            let mut t0 = 0;
            for len in steps {
                let slice = |x: &[f64], width: usize| -> Vec<f64> {
                    (0..b)
                        .flat_map(|s| x[(s * n + t0) * width..(s * n + t0 + len) * width].to_vec())
                        .collect()
                };
                let mut out = Tensor::zeros(&device, &[b, len, heads, dv]).unwrap();
                state
                    .step(
                        &upload::<bf16>(&device, &slice(&q, heads * d), &[b, len, heads, d]),
                        &upload::<bf16>(&device, &slice(&k, kv_heads * d), &[b, len, kv_heads, d]),
                        &upload::<bf16>(
                            &device,
                            &slice(&v, kv_heads * dv),
                            &[b, len, kv_heads, dv],
                        ),
                        &mut out,
                        feature,
                        cuattn::approx::DEFAULT_EPS,
                        &mut workspace,
                    )
                    .unwrap();
                let out = host(&out);
                for s in 0..b {
                    let width = heads * dv;
                    got[(s * n + t0) * width..(s * n + t0 + len) * width]
                        .copy_from_slice(&out[s * len * width..(s + 1) * len * width]);
                }
                t0 += len;
            }
            reference::compare(&got, &prefill, 1e-2, 1e-2).unwrap();
        }
    }
}

/// FAVOR+ estimates the softmax kernel exp(q . k / sqrt(d)) without bias, its relative variance
/// per key falling as 1/m: for x' = q d^(-1/4), y' = k d^(-1/4), Var[phi(x)^T phi(y)] /
/// E[phi(x)^T phi(y)]^2 = (exp(|x' + y'|^2) - 1) / m for independent features (orthogonal ones
/// do no worse). With entries of q and k in [-0.5, 0.5] at d = 64, |x' + y'|^2 is about 1.3, so
/// the relative standard deviation of one kernel value is about sqrt(2.8 / m): 0.42 at m = 16
/// and 0.10 at m = 256; the output, a weighted mean over 256 keys, averages much of it away. On
/// fixed seeds: the output's relative error against exact softmax attention stays below 0.1 at m
/// = 256 and falls at least twofold from m = 16 (the theory says fourfold).
#[test]
fn favor_approaches_softmax_attention_as_features_grow() {
    let device = Device::emulator();
    let (n, d, dv) = (256, 64, 32);
    let mut rng = StdRng::seed_from_u64(77);
    let half = |rng: &mut StdRng, len: usize| -> Vec<f64> {
        rounded::<bf16>(
            &(0..len)
                .map(|_| rng.random_range(-0.5..0.5))
                .collect::<Vec<_>>(),
        )
    };
    let (q, k) = (half(&mut rng, n * d), half(&mut rng, n * d));
    let v = rounded::<bf16>(&random(&mut rng, n * dv));
    // Exact softmax attention at scale 1/sqrt(d), in f64.
    let mut exact = vec![0.0; n * dv];
    for i in 0..n {
        let scores: Vec<f64> = (0..n)
            .map(|j| {
                let dot: f64 = (0..d).map(|e| q[i * d + e] * k[j * d + e]).sum();
                dot / (d as f64).sqrt()
            })
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        for (j, w) in weights.iter().enumerate() {
            for e in 0..dv {
                exact[i * dv + e] += w / total * v[j * dv + e];
            }
        }
    }
    let norm = |x: &[f64]| x.iter().map(|a| a * a).sum::<f64>().sqrt();
    let mut errors = Vec::new();
    for m in [16, 256] {
        let (features, _) = favor(&device, m, d, 1234);
        let opts = LinearOptions {
            feature: Feature::Favor(&features),
            ..Default::default()
        };
        let out = host(
            &linear_attention(
                &upload::<bf16>(&device, &q, &[1, n, 1, d]),
                &upload::<bf16>(&device, &k, &[1, n, 1, d]),
                &upload::<bf16>(&device, &v, &[1, n, 1, dv]),
                &opts,
            )
            .unwrap(),
        );
        let diff: Vec<f64> = out.iter().zip(&exact).map(|(a, b)| a - b).collect();
        errors.push(norm(&diff) / norm(&exact));
    }
    assert!(errors[1] < 0.1, "m = 256: relative error {}", errors[1]);
    assert!(
        errors[0] >= 2.0 * errors[1],
        "errors at m = 16, 256: {errors:?}"
    );
}

#[test]
fn bad_inputs_are_refused_naming_them() {
    let device = Device::emulator();
    let t = |shape: &[usize]| Tensor::full(&device, shape, bf16::from_f32(0.5)).unwrap();
    let err = |r: cuattn::Result<Tensor<bf16>>| r.unwrap_err().to_string();
    let opts = LinearOptions::default();
    let (q, k, v) = (t(&[1, 10, 4, 32]), t(&[1, 12, 2, 32]), t(&[1, 12, 2, 16]));
    assert!(linear_attention(&q, &k, &v, &opts).is_ok());
    assert!(err(linear_attention(&q, &t(&[1, 12, 3, 32]), &v, &opts)).contains("k"));
    assert!(err(linear_attention(&q, &k, &t(&[1, 12, 2, 12]), &opts)).contains("value_dim"));
    assert!(err(linear_attention(&q, &k, &t(&[1, 12, 3, 16]), &opts)).contains("kv_heads"));
    assert!(err(linear_attention(
        &q,
        &t(&[2, 12, 2, 32]),
        &t(&[2, 12, 2, 16]),
        &opts
    ))
    .contains("batch"));
    let bad_eps = LinearOptions {
        eps: -1.0,
        ..Default::default()
    };
    assert!(err(linear_attention(&q, &k, &v, &bad_eps)).contains("eps"));
    assert!(FavorFeatures::orthogonal(&device, 0, 32, 1)
        .unwrap_err()
        .to_string()
        .contains("features"));
    assert!(FavorFeatures::new(&device, &[1.0; 10], 4, 32)
        .unwrap_err()
        .to_string()
        .contains("projection"));
    let features = FavorFeatures::orthogonal(&device, 8, 64, 1).unwrap();
    let favor = LinearOptions {
        feature: Feature::Favor(&features),
        ..Default::default()
    };
    assert!(err(linear_attention(&q, &k, &v, &favor)).contains("head_dim"));
    let mut state = LinearState::new(&device, 1, 2, 32, 8).unwrap();
    let mut out = t(&[1, 10, 4, 16]);
    let msg = state
        .step(
            &q,
            &k,
            &v,
            &mut out,
            Feature::Elu1,
            1e-6,
            &mut LinearWorkspace::new(&device),
        )
        .unwrap_err()
        .to_string();
    assert!(msg.contains("state"), "{msg}");
}

/// The C entry points on raw pointers: a launch of `cuattn_emu_raw_launch_linear_attention` with a
/// workspace of the planned size equals the Rust call bit for bit (FAVOR, causal, GQA, value dim
/// apart from head dim), and the planner and the launcher refuse FAVOR with no features, FAVOR
/// with a null projection, and an elementwise map whose num_features is not head_dim, naming
/// the field.
#[test]
fn c_entry_points_launch_plan_and_refuse() {
    use cuattn::ffi::{self, cuattn_status as Status};
    let device = Device::emulator();
    let (batch, sq, sk, heads, kv_heads, d, dv, m) = (2, 70, 90, 4, 2, 32, 40, 24);
    println!("C entry points: q [{batch}, {sq}, {heads}, {d}], k [{batch}, {sk}, {kv_heads}, {d}], v dim {dv}, FAVOR m {m}, causal");
    let mut rng = StdRng::seed_from_u64(51);
    let q_shape = [batch, sq, heads, d];
    let k_shape = [batch, sk, kv_heads, d];
    let v_shape = [batch, sk, kv_heads, dv];
    let q = upload::<bf16>(
        &device,
        &random(&mut rng, q_shape.iter().product()),
        &q_shape,
    );
    let k = upload::<bf16>(
        &device,
        &random(&mut rng, k_shape.iter().product()),
        &k_shape,
    );
    let v = upload::<bf16>(
        &device,
        &random(&mut rng, v_shape.iter().product()),
        &v_shape,
    );
    let (features, _) = favor(&device, m, d, 52);
    let opts = LinearOptions {
        feature: Feature::Favor(&features),
        causal: true,
        ..Default::default()
    };
    let want = linear_attention(&q, &k, &v, &opts)
        .unwrap()
        .to_host()
        .unwrap();

    // The same problem as a C caller writes it: contiguous strides, the projection uploaded.
    let out_shape = [batch, sq, heads, dv];
    let mut out = Tensor::full(&device, &out_shape, bf16::NAN).unwrap();
    let projection = Tensor::from_host(&device, features.projection(), &[m, d]).unwrap();
    let strides = |[_, s, h, x]: [usize; 4]| ((s * h * x) as i64, (h * x) as i64, x as i64);
    let (qb, qr, qh) = strides(q_shape);
    let (kb, kr, kh) = strides(k_shape);
    let (vb, vr, vh) = strides(v_shape);
    let (ob, or, oh) = strides(out_shape);
    let mut p = ffi::cuattn_linear_attention_params {
        q: q.raw_address().cast_const(),
        k: k.raw_address().cast_const(),
        v: v.raw_address().cast_const(),
        out: out.raw_address(),
        maybe_cu_seqlens_q: std::ptr::null(),
        maybe_cu_seqlens_k: std::ptr::null(),
        q_batch_stride: qb,
        q_row_stride: qr,
        q_head_stride: qh,
        k_batch_stride: kb,
        k_row_stride: kr,
        k_head_stride: kh,
        v_batch_stride: vb,
        v_row_stride: vr,
        v_head_stride: vh,
        out_batch_stride: ob,
        out_row_stride: or,
        out_head_stride: oh,
        batch: batch as i32,
        heads: heads as i32,
        kv_heads: kv_heads as i32,
        head_dim: d as i32,
        value_dim: dv as i32,
        seqlen_q: sq as i32,
        seqlen_k: sk as i32,
        feature_map: ffi::cuattn_feature_map::CUATTN_FEATURE_FAVOR,
        num_features: m as i32,
        maybe_projection: projection.raw_address().cast_const().cast(),
        causal: 1,
        eps: 1e-6,
        maybe_state: ffi::cuattn_linear_state_view {
            s: std::ptr::null_mut(),
            z: std::ptr::null_mut(),
            key_max: std::ptr::null_mut(),
        },
        workspace: std::ptr::null_mut(),
        dtype: ffi::cuattn_dtype::CUATTN_DTYPE_BF16,
    };
    let plan = |p: &ffi::cuattn_linear_attention_params| {
        let mut bytes = -1i64;
        // SAFETY: p is a live params struct; the planner reads its shape fields only.
        let status = unsafe { ffi::cuattn_emu_raw_plan_linear_attention(p, &mut bytes) };
        (status, bytes)
    };
    let (status, bytes) = plan(&p);
    assert_eq!(status, Status::CUATTN_OK, "{}", common::last_error());
    // phi(q) in bf16 over 32 padded features, 256-aligned, then the keys' FAVOR exponents in
    // float32.
    let phi_q = (batch * sq * heads * 32 * 2).div_ceil(256) * 256;
    assert_eq!(bytes as usize, phi_q + batch * sk * kv_heads * 32 * 4);
    let workspace = Tensor::<f32>::zeros(&device, &[bytes as usize / 4]).unwrap();
    p.workspace = workspace.raw_address();
    // SAFETY: every pointer is a live emulator buffer of the extents the params state.
    let launch = |p: &ffi::cuattn_linear_attention_params| unsafe {
        ffi::cuattn_emu_raw_launch_linear_attention(p, std::ptr::null_mut())
    };
    assert_eq!(launch(&p), Status::CUATTN_OK, "{}", common::last_error());
    let got = out.to_host().unwrap();
    assert!(
        got.iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "the C launch differs from the Rust call"
    );

    // Poisoned again: a refused launch must leave it so.
    out.copy_from_host(&vec![bf16::NAN; got.len()]).unwrap();
    let elu1 = ffi::cuattn_feature_map::CUATTN_FEATURE_ELU1;
    for (bad, needle, planner_too) in [
        (
            ffi::cuattn_linear_attention_params {
                num_features: 0,
                ..p
            },
            "num_features = 0: FAVOR takes 1..=256",
            true,
        ),
        (
            ffi::cuattn_linear_attention_params {
                maybe_projection: std::ptr::null(),
                ..p
            },
            "FAVOR needs maybe_projection",
            false,
        ),
        (
            ffi::cuattn_linear_attention_params {
                feature_map: elu1,
                num_features: m as i32,
                maybe_projection: std::ptr::null(),
                ..p
            },
            "num_features = 24: the elementwise feature maps have head_dim (32)",
            true,
        ),
    ] {
        assert_eq!(launch(&bad), Status::CUATTN_ERROR_INVALID_ARGUMENT);
        let message = common::last_error();
        println!("launch: {message}");
        assert!(
            message.contains("linear_attention") && message.contains(needle),
            "`{needle}` in {message}"
        );
        let (status, bytes) = plan(&bad);
        if planner_too {
            assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT);
            assert_eq!(bytes, 0, "a refused plan reports no workspace");
            let message = common::last_error();
            assert!(message.contains(needle), "plan: `{needle}` in {message}");
        } else {
            // The planner reads shapes only: a null projection is the launcher's to refuse.
            assert_eq!(status, Status::CUATTN_OK);
        }
    }
    assert!(
        out.to_host().unwrap().iter().all(|x| x.is_nan()),
        "a refused launch wrote the output"
    );
}
