//! Block-sparse attention against the f64 reference under the equivalent dense element mask (the
//! block matrix intersected with the causal or window rule): every pattern, random masks at
//! densities 0, 0.05, 0.3 and 1, odd lengths both ways, GQA and MQA, block sizes 16 to 128 and
//! unequal ones, full-only and partial-only lists, an empty query block, varlen; the bytes a run
//! reads against dense attention's (emulator traffic counters); bad masks refused by name.

mod common;

use common::{random, rounded, to_t, tolerance, MemcheckSetting};
use cuattn::emu::TrafficRecorder;
use cuattn::reference::{self, AttentionProblem, Varlen};
use cuattn::sparse::{
    block_sparse_attention, block_sparse_attention_into, block_sparse_attention_varlen_into,
    BlockMask, BlockMatrix, Pattern,
};
use cuattn::{
    attention_into, AttentionElement, AttentionOptions, Device, Kernel, Tensor, VarlenBatch,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// How a case's block matrix is made.
#[derive(Clone, Debug)]
enum Blocks {
    Pattern(&'static str),
    /// Each block visible with this probability (seeded).
    Random(f64),
}

#[derive(Clone, Debug)]
struct Case {
    batch: usize,
    seqlen_q: usize,
    seqlen_k: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block: (usize, usize),
    blocks: Blocks,
    /// Per-head matrices (random ones only).
    per_head: bool,
    causal: bool,
    window: Option<(i32, i32)>,
    softcap: Option<f32>,
    seed: u64,
}

impl Case {
    fn new(seqlen_q: usize, seqlen_k: usize, block: (usize, usize), blocks: Blocks) -> Case {
        Case {
            batch: 1,
            seqlen_q,
            seqlen_k,
            heads: 2,
            kv_heads: 1,
            head_dim: 64,
            block,
            blocks,
            per_head: false,
            causal: false,
            window: None,
            softcap: None,
            seed: 7,
        }
    }

    fn opts(&self) -> AttentionOptions {
        AttentionOptions {
            causal: self.causal,
            window: self.window,
            softcap: self.softcap,
            return_lse: true,
            ..Default::default()
        }
    }

    fn grid(&self) -> (usize, usize) {
        (
            self.seqlen_q.div_ceil(self.block.0),
            self.seqlen_k.div_ceil(self.block.1),
        )
    }

    fn matrix(&self) -> BlockMatrix {
        let (nq, nk) = self.grid();
        match self.blocks {
            Blocks::Pattern(text) => {
                let pattern: Pattern = text.parse().unwrap();
                pattern.blocks(self.heads, nq, nk).unwrap()
            }
            Blocks::Random(density) => {
                let heads = if self.per_head { self.heads } else { 1 };
                let mut rng = StdRng::seed_from_u64(self.seed ^ 0xb10c);
                let blocks = (0..heads * nq * nk)
                    .map(|_| rng.random_bool(density))
                    .collect();
                BlockMatrix::new([1, heads, nq, nk], blocks).unwrap()
            }
        }
    }

    fn problem(&self) -> AttentionProblem {
        let (left, right) = self.opts().effective_window();
        let mut p = AttentionProblem::new(
            self.batch,
            self.seqlen_q,
            self.seqlen_k,
            self.heads,
            self.kv_heads,
            self.head_dim,
        );
        p.window_left = left.into();
        p.window_right = right.into();
        p.softcap = self.softcap.map_or(0.0, f64::from);
        p
    }
}

/// Runs `case` on the emulator with the memory checker on, outputs poisoned, and compares out
/// and LSE with the reference under the block matrix's element mask.
fn check<T: AttentionElement>(case: &Case) {
    for device in common::devices() {
        check_on::<T>(&device, case);
    }
}

/// [`check`] on one device (the emulator with its memory checker on).
fn check_on<T: AttentionElement>(device: &Device, case: &Case) {
    let device = device.clone();
    let _memcheck = MemcheckSetting::new(true);
    let mut rng = StdRng::seed_from_u64(case.seed);
    let q_shape = [case.batch, case.seqlen_q, case.heads, case.head_dim];
    let k_shape = [case.batch, case.seqlen_k, case.kv_heads, case.head_dim];
    let q = rounded::<T>(&random(&mut rng, q_shape.iter().product()));
    let k = rounded::<T>(&random(&mut rng, k_shape.iter().product()));
    let v = rounded::<T>(&random(&mut rng, k_shape.iter().product()));
    let matrix = case.matrix();
    let opts = case.opts();
    let mask = BlockMask::new(
        &device,
        matrix.clone(),
        case.block,
        &[(case.seqlen_q, case.seqlen_k)],
        &opts,
    )
    .unwrap();
    let upload = |x: &[f64], shape: &[usize]| Tensor::from_host(&device, &to_t::<T>(x), shape);
    let (qt, kt, vt) = (
        upload(&q, &q_shape).unwrap(),
        upload(&k, &k_shape).unwrap(),
        upload(&v, &k_shape).unwrap(),
    );
    let mut out = Tensor::full(&device, &q_shape, T::from_f64(f64::NAN)).unwrap();
    let lse_shape = [case.batch, case.heads, case.seqlen_q];
    let mut lse = Tensor::full(&device, &lse_shape, f32::NAN).unwrap();
    block_sparse_attention_into(&qt, &kt, &vt, &mut out, Some(&mut lse), &mask, &opts)
        .unwrap_or_else(|e| panic!("{case:?}: {e}"));
    let (bq, bk) = case.block;
    let want = reference::attention_masked(&case.problem(), &q, &k, &v, |b, h, i, j| {
        matrix.get(b, h, i / bq, j / bk)
    });
    let got: Vec<f64> = out.to_host().unwrap().iter().map(|x| x.to_f64()).collect();
    let tol = tolerance(T::DTYPE);
    if let Err(m) = reference::compare(&got, &want.out, tol, tol) {
        panic!("{case:?} ({:?}): out: {m}", T::DTYPE);
    }
    let got_lse: Vec<f64> = lse.to_host().unwrap().iter().map(|&x| x.into()).collect();
    if let Err(m) = reference::compare(&got_lse, &want.lse, tol, tol) {
        panic!("{case:?} ({:?}): lse: {m}", T::DTYPE);
    }
}

#[test]
fn every_pattern_matches_reference() {
    for (i, text) in [
        "local:w=1",
        "strided:w=1,s=3",
        "dilated:w=2,d=2",
        "longformer:w=1,global=1",
        "bigbird:w=0,global=1,random=2,seed=5",
        "bigbird:w=1,global=0,random=1,seed=9,per_head=1",
    ]
    .into_iter()
    .enumerate()
    {
        let mut case = Case::new(203, 257, (32, 32), Blocks::Pattern(text));
        case.seed = i as u64;
        check::<bf16>(&case);
        case.causal = true;
        check::<f16>(&case);
    }
}

#[test]
fn random_masks_at_each_density_match_reference() {
    for (n, density) in [0.0, 0.05, 0.3, 1.0].into_iter().enumerate() {
        let mut case = Case::new(257, 203, (16, 32), Blocks::Random(density));
        case.seed = 100 + n as u64;
        case.per_head = n % 2 == 1;
        check::<bf16>(&case);
    }
}

#[test]
fn block_sizes_and_odd_lengths_match_reference() {
    for (n, (block, sq, sk)) in [
        ((16, 16), 97, 113),
        ((32, 64), 113, 97),
        ((64, 32), 127, 300),
        ((128, 128), 300, 257),
        ((48, 80), 203, 203),
        ((128, 16), 257, 129),
        ((16, 128), 17, 1025),
    ]
    .into_iter()
    .enumerate()
    {
        let mut case = Case::new(sq, sk, block, Blocks::Random(0.5));
        case.seed = 200 + n as u64;
        case.causal = n % 2 == 0;
        check::<bf16>(&case);
    }
}

#[test]
fn gqa_mqa_head_dims_and_masks_match_reference() {
    let mut case = Case::new(
        150,
        170,
        (32, 32),
        Blocks::Pattern("longformer:w=1,global=1"),
    );
    for (heads, kv_heads) in [(2, 2), (8, 2), (5, 1), (4, 1)] {
        case.heads = heads;
        case.kv_heads = kv_heads;
        case.seed += 1;
        check::<bf16>(&case);
    }
    case.heads = 4;
    case.kv_heads = 2;
    for head_dim in [40, 96, 128, 160, 256] {
        case.head_dim = head_dim;
        case.seed += 1;
        check::<f16>(&case);
    }
    case.head_dim = 64;
    case.window = Some((40, 10));
    check::<bf16>(&case);
    case.causal = true;
    case.window = Some((60, -1));
    case.softcap = Some(2.0);
    check::<bf16>(&case);
}

/// Dense-matrix blocks listed only as full (no mask arithmetic anywhere) or only as partial
/// (the mask on every tile) give the same result as the builder's lists.
#[test]
fn full_only_and_partial_only_lists_match_reference() {
    let device = Device::emulator();
    let _memcheck = MemcheckSetting::new(true);
    let (sq, sk, heads, d) = (128, 192, 2, 64);
    let block = (32, 64);
    let (nq, nk) = (sq / block.0, sk / block.1);
    let mut rng = StdRng::seed_from_u64(31);
    let q = rounded::<bf16>(&random(&mut rng, sq * heads * d));
    let k = rounded::<bf16>(&random(&mut rng, sk * heads * d));
    let v = rounded::<bf16>(&random(&mut rng, sk * heads * d));
    let visible: Vec<bool> = (0..nq * nk).map(|n| n % 3 != 1).collect();
    let mut counts = vec![0i32; nq];
    let mut indices = vec![0i32; nq * nk];
    for i in 0..nq {
        for j in 0..nk {
            if visible[i * nk + j] {
                indices[i * nk + counts[i] as usize] = j as i32;
                counts[i] += 1;
            }
        }
    }
    let none = (vec![0i32; nq], vec![0i32; nq * nk]);
    let opts = AttentionOptions {
        return_lse: true,
        ..Default::default()
    };
    let problem = AttentionProblem::new(1, sq, sk, heads, heads, d);
    let want = reference::attention_masked(&problem, &q, &k, &v, |_, _, i, j| {
        visible[(i / block.0) * nk + j / block.1]
    });
    let upload =
        |x: &[f64], n: usize| Tensor::from_host(&device, &to_t::<bf16>(x), &[1, n, heads, d]);
    let (qt, kt, vt) = (
        upload(&q, sq).unwrap(),
        upload(&k, sk).unwrap(),
        upload(&v, sk).unwrap(),
    );
    for full_only in [true, false] {
        let lists = (counts.as_slice(), indices.as_slice());
        let empty = (none.0.as_slice(), none.1.as_slice());
        let (full, partial) = if full_only {
            (lists, empty)
        } else {
            (empty, lists)
        };
        let mask = BlockMask::from_compressed(
            &device,
            block,
            [1, 1, nq, nk],
            full,
            partial,
            &[(sq, sk)],
            &opts,
        )
        .unwrap();
        assert_eq!(mask.full_blocks(), if full_only { 8 } else { 0 });
        let result = block_sparse_attention(&qt, &kt, &vt, &mask, &opts).unwrap();
        let got: Vec<f64> = result
            .out
            .to_host()
            .unwrap()
            .iter()
            .map(|x| x.to_f64())
            .collect();
        reference::compare(&got, &want.out, 2e-2, 2e-2).unwrap();
        let lse: Vec<f64> = result
            .lse
            .unwrap()
            .to_host()
            .unwrap()
            .iter()
            .map(|&x| x.into())
            .collect();
        reference::compare(&lse, &want.lse, 2e-2, 2e-2).unwrap();
    }
}

/// A query block that lists nothing writes zeros and LSE -inf (the reference's empty rows), and
/// a causal mask whose early query blocks see no key (seqlen_q > seqlen_k) likewise.
#[test]
fn empty_query_blocks_write_zeros_and_minus_infinity() {
    let mut case = Case::new(160, 96, (32, 32), Blocks::Random(0.6));
    case.causal = true;
    check::<bf16>(&case);
    // Row 2's blocks removed: the matrix's own empty row.
    let (nq, nk) = case.grid();
    let mut blocks = vec![true; nq * nk];
    blocks[2 * nk..3 * nk].fill(false);
    let device = Device::emulator();
    let opts = AttentionOptions {
        return_lse: true,
        ..Default::default()
    };
    let matrix = BlockMatrix::new([1, 1, nq, nk], blocks).unwrap();
    let mask = BlockMask::new(&device, matrix, (32, 32), &[(160, 96)], &opts).unwrap();
    assert_eq!(mask.compressed()[0][2], 0);
    let q = Tensor::full(&device, &[1, 160, 2, 64], bf16::from_f32(0.5)).unwrap();
    let kv = Tensor::full(&device, &[1, 96, 1, 64], bf16::from_f32(0.25)).unwrap();
    let result = block_sparse_attention(&q, &kv, &kv, &mask, &opts).unwrap();
    let out = result.out.to_host().unwrap();
    let lse = result.lse.unwrap().to_host().unwrap();
    for row in 0..160 {
        for head in 0..2 {
            let x = out[(row * 2 + head) * 64].to_f32();
            let l = lse[head * 160 + row];
            if (64..96).contains(&row) {
                assert_eq!((x, l), (0.0, f32::NEG_INFINITY), "row {row}");
            } else {
                assert_eq!(x, 0.25, "row {row}");
                assert!(l.is_finite(), "row {row}");
            }
        }
    }
}

/// A varlen batch under a causal mask, with one mask entry per sequence (its diagonal moves with
/// its lengths), and a shared mask without an element rule.
#[test]
fn varlen_batches_match_reference() {
    let device = Device::emulator();
    let _memcheck = MemcheckSetting::new(true);
    let seqlens = [(70usize, 90usize), (130, 100), (17, 200)];
    let (heads, kv_heads, d) = (4, 2, 64);
    let block = (32, 16);
    let cu = |f: fn(&(usize, usize)) -> usize| -> Vec<i32> {
        std::iter::once(0)
            .chain(seqlens.iter().scan(0, |acc, s| {
                *acc += f(s) as i32;
                Some(*acc)
            }))
            .collect()
    };
    let (cu_q, cu_k) = (cu(|s| s.0), cu(|s| s.1));
    let batch = VarlenBatch::new(&device, &cu_q, &cu_k).unwrap();
    let (total_q, total_k) = (batch.total_q(), batch.total_k());
    let mut rng = StdRng::seed_from_u64(77);
    let q = rounded::<bf16>(&random(&mut rng, total_q * heads * d));
    let k = rounded::<bf16>(&random(&mut rng, total_k * kv_heads * d));
    let v = rounded::<bf16>(&random(&mut rng, total_k * kv_heads * d));
    let (nq, nk) = (130usize.div_ceil(block.0), 200usize.div_ceil(block.1));
    let upload =
        |x: &[f64], shape: &[usize]| Tensor::from_host(&device, &to_t::<bf16>(x), shape).unwrap();
    let qt = upload(&q, &[total_q, heads, d]);
    let kt = upload(&k, &[total_k, kv_heads, d]);
    let vt = upload(&v, &[total_k, kv_heads, d]);
    for causal in [true, false] {
        let opts = AttentionOptions {
            causal,
            return_lse: true,
            ..Default::default()
        };
        let blocks: Vec<bool> = (0..3 * nq * nk).map(|_| rng.random_bool(0.5)).collect();
        let matrix = BlockMatrix::new([3, 1, nq, nk], blocks).unwrap();
        let lengths: Vec<(usize, usize)> = if causal {
            seqlens.to_vec()
        } else {
            vec![(130, 200)]
        };
        let mask = BlockMask::new(&device, matrix.clone(), block, &lengths, &opts).unwrap();
        let mut out =
            Tensor::full(&device, &[total_q, heads, d], bf16::from_f32(f32::NAN)).unwrap();
        let mut lse = Tensor::full(&device, &[heads, total_q], f32::NAN).unwrap();
        block_sparse_attention_varlen_into(
            &qt,
            &kt,
            &vt,
            &batch,
            &mut out,
            Some(&mut lse),
            &mask,
            &opts,
        )
        .unwrap();
        let mut problem = AttentionProblem::new(3, 0, 0, heads, kv_heads, d);
        problem.varlen = Some(Varlen {
            cu_seqlens_q: cu_q.clone(),
            cu_seqlens_k: cu_k.clone(),
        });
        if causal {
            problem.window_left = -1;
            problem.window_right = 0;
        }
        let want = reference::attention_masked(&problem, &q, &k, &v, |b, h, i, j| {
            matrix.get(b, h, i / block.0, j / block.1)
        });
        let got: Vec<f64> = out.to_host().unwrap().iter().map(|x| x.to_f64()).collect();
        reference::compare(&got, &want.out, 2e-2, 2e-2).unwrap();
        let got_lse: Vec<f64> = lse.to_host().unwrap().iter().map(|&x| x.into()).collect();
        reference::compare(&got_lse, &want.lse, 2e-2, 2e-2).unwrap();
    }
}

/// Composition: a pattern intersected with a random matrix equals the reference under both; the
/// union likewise; the element rule drops the blocks a causal mask hides and lists its diagonal
/// blocks as partial.
#[test]
fn union_intersection_and_causal_composition() {
    let (nq, nk) = (8, 8);
    let local = "local:w=1"
        .parse::<Pattern>()
        .unwrap()
        .blocks(1, nq, nk)
        .unwrap();
    let strided = "strided:w=0,s=4"
        .parse::<Pattern>()
        .unwrap()
        .blocks(1, nq, nk)
        .unwrap();
    let both = local.intersection(&strided).unwrap();
    let either = local.union(&strided).unwrap();
    for i in 0..nq {
        for j in 0..nk {
            let (a, b) = (local.get(0, 0, i, j), strided.get(0, 0, i, j));
            assert_eq!(both.get(0, 0, i, j), a && b);
            assert_eq!(either.get(0, 0, i, j), a || b);
            assert_eq!(a, i.abs_diff(j) <= 1);
            assert_eq!(b, i == j || (j + 1) % 4 == 0);
        }
    }
    let device = Device::emulator();
    let causal = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    let mask = BlockMask::new(
        &device,
        BlockMatrix::dense(nq, nk),
        (32, 32),
        &[(256, 256)],
        &causal,
    )
    .unwrap();
    // Below the diagonal full, on it partial, above it dropped.
    assert_eq!(mask.full_blocks(), nq * (nq - 1) / 2);
    assert_eq!(mask.partial_blocks(), nq);
    assert!((mask.density() - 36.0 / 64.0).abs() < 1e-12);
    assert_eq!(mask.device_bytes(), 4 * (2 * nq + 2 * nq * nk));
    let mut case = Case::new(256, 256, (32, 32), Blocks::Pattern("local:w=2"));
    case.causal = true;
    case.window = Some((50, 0));
    check::<bf16>(&case);
}

/// The K/V bytes a run reads fall with the density: within 10% of the density (the share of
/// blocks listed) times what the dense flash kernel reads on the same problem, at densities
/// 0.05, 0.3 and 1; the query and mask bytes are counted apart.
#[test]
fn kv_bytes_read_fall_with_density() {
    let device = Device::emulator();
    let (s, d) = (1024, 64);
    let shape = [1, s, 1, d];
    let label = |t: Tensor<bf16>, name: &str| t.with_label(name).unwrap();
    let q = label(
        Tensor::full(&device, &shape, bf16::from_f32(0.5)).unwrap(),
        "q",
    );
    let k = label(
        Tensor::full(&device, &shape, bf16::from_f32(0.25)).unwrap(),
        "k",
    );
    let v = label(
        Tensor::full(&device, &shape, bf16::from_f32(1.0)).unwrap(),
        "v",
    );
    let mut out = label(Tensor::zeros(&device, &shape).unwrap(), "out");
    let opts = AttentionOptions::default();
    let kv_read = |t: &cuattn::emu::Traffic| t.bytes_read("k") + t.bytes_read("v");

    let recorder = TrafficRecorder::start().unwrap();
    attention_into(Kernel::Flash, &q, &k, &v, &mut out, None, &opts).unwrap();
    let dense = kv_read(&recorder.finish().unwrap());
    assert_eq!(
        dense,
        (s / 128 * s * d * 2 * 2) as u64,
        "flash hd64: 128-row tiles"
    );

    let (bq, bk) = (128, 64);
    let (nq, nk) = (s / bq, s / bk);
    for (n, density) in [0.05, 0.3, 1.0].into_iter().enumerate() {
        // Exactly round(density * blocks) blocks, drawn at random.
        let mut rng = StdRng::seed_from_u64(500 + n as u64);
        let mut order: Vec<usize> = (0..nq * nk).collect();
        order.shuffle(&mut rng);
        let mut blocks = vec![false; nq * nk];
        for &b in &order[..(density * (nq * nk) as f64).round() as usize] {
            blocks[b] = true;
        }
        let matrix = BlockMatrix::new([1, 1, nq, nk], blocks).unwrap();
        let mask = BlockMask::new(&device, matrix, (bq, bk), &[(s, s)], &opts).unwrap();
        let recorder = TrafficRecorder::start().unwrap();
        block_sparse_attention_into(&q, &k, &v, &mut out, None, &mask, &opts).unwrap();
        let traffic = recorder.finish().unwrap();
        let sparse = kv_read(&traffic) as f64;
        let expected = density * dense as f64;
        assert!(
            (sparse - expected).abs() <= 0.1 * expected,
            "density {density} (listed {:.3}): read {sparse} K/V bytes, {expected} expected",
            mask.density()
        );
        // Exactly the listed blocks' rows, once each.
        let listed = (mask.full_blocks() + mask.partial_blocks()) as u64;
        assert_eq!(kv_read(&traffic), listed * (bk * d * 2 * 2) as u64);
        // q once per query block with a listed key block; the mask's tables beside.
        let busy_rows = mask.compressed()[0].iter().filter(|&&c| c > 0).count() as u64;
        assert_eq!(traffic.bytes_read("q"), busy_rows * (bq * d * 2) as u64);
        let tables: u64 = ["mask_full_counts", "mask_full_indices"]
            .iter()
            .map(|l| traffic.bytes_read(l))
            .sum();
        assert!(tables > 0 && tables <= mask.device_bytes() as u64 * 64);
    }
}

#[test]
fn bad_masks_are_refused_naming_them() {
    let device = Device::emulator();
    let opts = AttentionOptions::default();
    let err = |r: cuattn::Result<BlockMask>| r.unwrap_err().to_string();
    let dense = || BlockMatrix::dense(4, 4);
    assert!(err(BlockMask::new(
        &device,
        dense(),
        (24, 32),
        &[(64, 128)],
        &opts
    ))
    .contains("block_size"));
    assert!(err(BlockMask::new(
        &device,
        dense(),
        (0, 32),
        &[(64, 128)],
        &opts
    ))
    .contains("block_size"));
    assert!(err(BlockMask::new(
        &device,
        dense(),
        (16, 32),
        &[(64, 200)],
        &opts
    ))
    .contains("make 4 x 7"));
    assert!(BlockMatrix::new([1, 1, 2, 2], vec![true; 3])
        .unwrap_err()
        .to_string()
        .contains("block_mask"));
    assert!(BlockMatrix::dense(2, 2)
        .union(&BlockMatrix::dense(2, 3))
        .is_err());
    // Compressed rows: out of range, unsorted, repeated, in both lists, a cut full block.
    let (nq, nk) = (2usize, 4usize);
    let compressed = |full: (&[i32], &[i32]), partial: (&[i32], &[i32]), o: &AttentionOptions| {
        BlockMask::from_compressed(
            &device,
            (32, 32),
            [1, 1, nq, nk],
            full,
            partial,
            &[(64, 128)],
            o,
        )
    };
    let zeros_c = [0i32; 2];
    let zeros_i = [0i32; 8];
    let none = (&zeros_c[..], &zeros_i[..]);
    let bad = |counts: [i32; 2], indices: [i32; 8]| -> String {
        err(compressed((&counts, &indices), none, &opts))
    };
    assert!(bad([1, 0], [4, 0, 0, 0, 0, 0, 0, 0]).contains("must be in 0..4"));
    assert!(bad([2, 0], [2, 1, 0, 0, 0, 0, 0, 0]).contains("sorted"));
    assert!(bad([2, 0], [1, 1, 0, 0, 0, 0, 0, 0]).contains("repeats"));
    assert!(bad([5, 0], [0; 8]).contains("count 5"));
    let one = ([1i32, 0], [3i32, 0, 0, 0, 0, 0, 0, 0]);
    assert!(err(compressed((&one.0, &one.1), (&one.0, &one.1), &opts)).contains("both"));
    let causal = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    assert!(err(compressed((&one.0, &one.1), none, &causal)).contains("list it as partial"));
    assert!(err(compressed((&[1, 0], &[0; 7]), none, &opts)).contains("7 indices"));
    // At the call: the options the mask was not built with, another grid, other heads.
    let mask = BlockMask::new(&device, dense(), (16, 32), &[(64, 128)], &opts).unwrap();
    let t = |shape: &[usize]| Tensor::full(&device, shape, bf16::from_f32(0.5)).unwrap();
    let (q, kv) = (t(&[1, 64, 2, 64]), t(&[1, 128, 1, 64]));
    let call = |q: &Tensor<bf16>, kv: &Tensor<bf16>, o: &AttentionOptions| {
        block_sparse_attention(q, kv, kv, &mask, o)
            .unwrap_err()
            .to_string()
    };
    assert!(call(&q, &kv, &causal).contains("window"));
    assert!(call(&t(&[1, 65, 2, 64]), &kv, &opts).contains("mask"));
    let per_head = BlockMatrix::new([1, 3, 4, 4], vec![true; 48]).unwrap();
    let mask3 = BlockMask::new(&device, per_head, (16, 32), &[(64, 128)], &opts).unwrap();
    let msg = block_sparse_attention(&q, &kv, &kv, &mask3, &opts)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("3 heads"), "{msg}");
    // Patterns: unknown names, missing or unknown keys, bad values.
    for (text, needle) in [
        ("ring:w=1", "unknown pattern"),
        ("local", "w is missing"),
        ("local:w=1,s=2", "not \"s\""),
        ("strided:w=1,s=0", "s=0"),
        ("local:w=x", "not a non-negative integer"),
        (
            "bigbird:w=1,global=1,random=1,seed=1,per_head=2",
            "per_head=2",
        ),
        ("local:w=1,w=2", "twice"),
    ] {
        let msg = text.parse::<Pattern>().unwrap_err().to_string();
        assert!(
            msg.contains(needle) && msg.contains("pattern"),
            "{text}: {msg}"
        );
    }
}

/// The C entry points on raw pointers: a launch equals the Rust call on the same mask tables, the
/// planner reports the tile, and bad masks return status codes with messages naming the problem.
#[test]
fn c_entry_points_launch_plan_and_refuse() {
    use cuattn::ffi::{self, cuattn_status as Status};
    use cuattn::AttentionParams;
    let device = Device::emulator();
    let (sq, sk, heads, d) = (96, 80, 2, 64);
    let opts = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    let mut rng = StdRng::seed_from_u64(41);
    let upload = |n: usize, rng: &mut StdRng| {
        let x = to_t::<bf16>(&random(rng, n * heads * d));
        Tensor::from_host(&device, &x, &[1, n, heads, d]).unwrap()
    };
    let (q, k, v) = (
        upload(sq, &mut rng),
        upload(sk, &mut rng),
        upload(sk, &mut rng),
    );
    let pattern: Pattern = "local:w=1".parse().unwrap();
    let mask =
        BlockMask::from_pattern(&device, &pattern, heads, (32, 16), &[(sq, sk)], &opts).unwrap();
    let want = block_sparse_attention(&q, &k, &v, &mask, &opts)
        .unwrap()
        .out
        .to_host()
        .unwrap();

    // The same tables, uploaded as a C caller would, and contiguous strides.
    let [fc, fi, pc, pi] = mask
        .compressed()
        .map(|t| Tensor::from_host(&device, t, &[t.len()]).unwrap());
    let out = Tensor::full(&device, &[1, sq, heads, d], bf16::from_f32(f32::NAN)).unwrap();
    let mut p = AttentionParams::dense_shape::<bf16>(&[1, sq, heads, d], &[1, sk, heads, d], &opts)
        .unwrap();
    let (row, batch_q, batch_k) = (
        (heads * d) as i64,
        (sq * heads * d) as i64,
        (sk * heads * d) as i64,
    );
    p.q = q.raw_address();
    p.k = k.raw_address();
    p.v = v.raw_address();
    p.out = out.raw_address();
    (p.q_batch_stride, p.q_row_stride, p.q_head_stride) = (batch_q, row, d as i64);
    (p.k_batch_stride, p.k_row_stride, p.k_head_stride) = (batch_k, row, d as i64);
    (p.v_batch_stride, p.v_row_stride, p.v_head_stride) = (batch_k, row, d as i64);
    (p.out_batch_stride, p.out_row_stride, p.out_head_stride) = (batch_q, row, d as i64);
    let [_, mask_heads, nq, nk] = mask.dims();
    let m = ffi::cuattn_block_mask {
        block_q: 32,
        block_k: 16,
        num_q_blocks: nq as i32,
        num_k_blocks: nk as i32,
        batch: 1,
        heads: mask_heads as i32,
        full_counts: fc.raw_address().cast_const().cast(),
        full_indices: fi.raw_address().cast_const().cast(),
        partial_counts: pc.raw_address().cast_const().cast(),
        partial_indices: pi.raw_address().cast_const().cast(),
    };
    // SAFETY: every pointer is a live emulator buffer of the extents the params and mask state.
    let launch = |m: &ffi::cuattn_block_mask| unsafe {
        ffi::cuattn_emu_raw_launch_block_sparse_attention(&p, m, std::ptr::null_mut())
    };
    assert_eq!(launch(&m), Status::CUATTN_OK, "{}", common::last_error());
    let got = out.to_host().unwrap();
    assert!(got
        .iter()
        .zip(&want)
        .all(|(a, b)| a.to_bits() == b.to_bits()));

    let mut plan = ffi::cuattn_block_sparse_plan {
        block_rows: 0,
        block_keys: 0,
        threads: 0,
        smem_bytes: 0,
        grid_x: 0,
        grid_y: 0,
        grid_z: 0,
    };
    // SAFETY: valid pointers; the planner reads params and the mask's shape only.
    let status = unsafe { ffi::cuattn_emu_raw_plan_block_sparse_attention(&p, &m, &mut plan) };
    assert_eq!(status, Status::CUATTN_OK);
    // 32-row query blocks: CTAs of 32 rows, one a block; 64-key tiles at hd64.
    assert_eq!(
        (plan.block_rows, plan.block_keys, plan.grid_x),
        (32, 64, nq as i32)
    );
    assert_eq!(
        (plan.grid_y, plan.grid_z, plan.threads),
        (heads as i32, 1, 128)
    );

    for (bad, needle) in [
        (
            ffi::cuattn_block_mask { block_q: 24, ..m },
            "multiple of 16",
        ),
        (
            ffi::cuattn_block_mask {
                num_k_blocks: nk as i32 + 1,
                ..m
            },
            "make 3 x 5",
        ),
        (ffi::cuattn_block_mask { heads: 3, ..m }, "heads 3"),
        (
            ffi::cuattn_block_mask {
                partial_indices: std::ptr::null(),
                ..m
            },
            "must be set",
        ),
    ] {
        assert_eq!(launch(&bad), Status::CUATTN_ERROR_INVALID_ARGUMENT);
        let message = common::last_error();
        assert!(
            message.contains("block_sparse_attention") && message.contains(needle),
            "{message}"
        );
    }
    // SAFETY: a null mask is refused before any use.
    let status = unsafe {
        ffi::cuattn_emu_raw_launch_block_sparse_attention(
            &p,
            std::ptr::null(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert!(common::last_error().contains("mask is null"));
}
