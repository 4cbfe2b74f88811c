//! Tests of the f64 reference itself: hand-computed cases, masks against the bottom-right rule,
//! properties on random data (fixed seeds), LSE merging, and `compare` semantics.

use cuattn::reference::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Tolerance for results the reference computes in different orders: f64 round-off only.
const TIGHT: f64 = 1e-12;
const LN2: f64 = std::f64::consts::LN_2;

fn random(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Random q, k, v for `p` (padded or packed).
fn random_qkv(p: &AttentionProblem, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (total_q, total_k) = match &p.varlen {
        Some(v) => (
            *v.cu_seqlens_q.last().unwrap() as usize,
            *v.cu_seqlens_k.last().unwrap() as usize,
        ),
        None => (p.batch * p.seqlen_q, p.batch * p.seqlen_k),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let q = random(&mut rng, total_q * p.heads * p.head_dim);
    let k = random(&mut rng, total_k * p.kv_heads * p.head_dim);
    let v = random(&mut rng, total_k * p.kv_heads * p.head_dim);
    (q, k, v)
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    if let Err(m) = compare(got, want, tol, tol) {
        panic!("{what}: {m}");
    }
}

/// `[rows, kv_heads, d]` -> `[rows, kv_heads * group, d]` with each KV head repeated `group`
/// times in a row, so MHA head `h` holds the original KV head `h / group`.
fn repeat_kv(x: &[f64], kv_heads: usize, group: usize, d: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len() * group);
    for row in x.chunks(kv_heads * d) {
        for head in row.chunks(d) {
            for _ in 0..group {
                out.extend_from_slice(head);
            }
        }
    }
    out
}

/// Rows `start..end` of every sequence of a padded `[batch, seqlen, width]` tensor.
fn slice_rows(x: &[f64], seqlen: usize, width: usize, start: usize, end: usize) -> Vec<f64> {
    x.chunks(seqlen * width)
        .flat_map(|seq| &seq[start * width..end * width])
        .copied()
        .collect()
}

fn causal(mut p: AttentionProblem) -> AttentionProblem {
    p.window_left = -1;
    p.window_right = 0;
    p
}

fn with_window(mut p: AttentionProblem, left: i64, right: i64) -> AttentionProblem {
    p.window_left = left;
    p.window_right = right;
    p
}

/// The visibility matrix `[seqlen_q][seqlen_k]` as 0/1 rows.
fn visibility(sq: usize, sk: usize, left: i64, right: i64) -> Vec<Vec<u8>> {
    (0..sq)
        .map(|i| {
            (0..sk)
                .map(|j| key_visible(i, j, sq, sk, left, right) as u8)
                .collect()
        })
        .collect()
}

// ----------------------------------------------------------------------------------------------
// Hand-computed cases.
// ----------------------------------------------------------------------------------------------

#[test]
fn one_query_two_keys_matches_hand_computation() {
    // head_dim 2, scale 1. q = [ln3, ln3]; k0 = [1, 0], k1 = [0, -1]
    //   s0 = ln3, s1 = -ln3; e^s = [3, 1/3]; sum = 10/3
    //   p = [9/10, 1/10]; lse = ln(10/3) = 1.2039728043259361
    // v0 = [1, 2], v1 = [11, -8]: out = 0.9 [1, 2] + 0.1 [11, -8] = [2, 1]
    let ln3 = 3f64.ln();
    let mut p = AttentionProblem::new(1, 1, 2, 1, 1, 2);
    p.scale = 1.0;
    let r = attention(
        &p,
        &[ln3, ln3],
        &[1.0, 0.0, 0.0, -1.0],
        &[1.0, 2.0, 11.0, -8.0],
    );
    assert_close("out", &r.out, &[2.0, 1.0], 1e-14);
    assert_close("lse", &r.lse, &[1.2039728043259361], 1e-14);
}

#[test]
fn default_scale_is_inverse_sqrt_head_dim_and_multiplies_scores() {
    // head_dim 2: scale = 1/sqrt(2). q = [1, 1]; k0 = [1, 1], k1 = [0, 0]
    //   s0 = 2/sqrt(2) = sqrt(2), s1 = 0
    //   lse = ln(e^sqrt2 + 1) = 1.6318352839548387
    //   p0 = sigmoid(sqrt2) = 0.8044296825069569, p1 = 0.1955703174930431
    // v0 = [1, 0], v1 = [0, 1]: out = [p0, p1]
    let p = AttentionProblem::new(1, 1, 2, 1, 1, 2);
    assert_eq!(p.scale, 1.0 / 2f64.sqrt());
    let r = attention(
        &p,
        &[1.0, 1.0],
        &[1.0, 1.0, 0.0, 0.0],
        &[1.0, 0.0, 0.0, 1.0],
    );
    assert_close(
        "out",
        &r.out,
        &[0.8044296825069569, 0.1955703174930431],
        1e-14,
    );
    assert_close("lse", &r.lse, &[1.6318352839548387], 1e-14);
}

#[test]
fn softcap_tanh_caps_scores_by_hand() {
    // head_dim 1, scale 1, softcap 2. q = [1]; k = [4], [0]
    //   s0 = 2 tanh(4 / 2) = 1.9280551601516338, s1 = 0
    //   lse = ln(1 + e^s0) = 2.063835938780122
    // v = [1], [0]: out = sigmoid(s0) = 0.8730339992227998 (uncapped it would be
    // sigmoid(4) = 0.982)
    let mut p = AttentionProblem::new(1, 1, 2, 1, 1, 1);
    p.scale = 1.0;
    p.softcap = 2.0;
    let r = attention(&p, &[1.0], &[4.0, 0.0], &[1.0, 0.0]);
    assert_close("out", &r.out, &[0.8730339992227998], 1e-14);
    assert_close("lse", &r.lse, &[2.063835938780122], 1e-14);
}

#[test]
fn large_scores_are_stable_by_hand() {
    // head_dim 1, scale 1. q = [1]; k = [1000], [1000 - ln3]: e^1000 overflows f64, so only a
    // max-subtracted softmax gets p = [3/4, 1/4] and lse = 1000 + ln(1 + 1/3).
    // v = [1], [5]: out = 3/4 + 5/4 = 2.
    let mut p = AttentionProblem::new(1, 1, 2, 1, 1, 1);
    p.scale = 1.0;
    let r = attention(&p, &[1.0], &[1000.0, 1000.0 - 3f64.ln()], &[1.0, 5.0]);
    assert_close("out", &r.out, &[2.0], 1e-12);
    assert_close("lse", &r.lse, &[1000.0 + (4.0f64 / 3.0).ln()], 1e-12);
}

#[test]
fn out_layout_is_batch_seqlen_heads_dim_and_heads_share_kv() {
    // batch 2, seqlen_q 1, seqlen_k 2, heads 2, kv_heads 1, head_dim 1, scale 1.
    // k = [0], [1] in both sequences. Head 0 has q = 0 (p = [1/2, 1/2]); head 1 has q = ln3
    // (scores [0, ln3], p = [1/4, 3/4]).
    // Sequence 0: v = [0], [4] -> head 0: 2, head 1: 3.
    // Sequence 1: v = [8], [0] -> head 0: 4, head 1: 2.
    // lse: head 0 ln2, head 1 ln(1 + 3) = ln4, per sequence.
    let ln3 = 3f64.ln();
    let mut p = AttentionProblem::new(2, 1, 2, 2, 1, 1);
    p.scale = 1.0;
    let q = [0.0, ln3, 0.0, ln3];
    let k = [0.0, 1.0, 0.0, 1.0];
    let v = [0.0, 4.0, 8.0, 0.0];
    let r = attention(&p, &q, &k, &v);
    assert_close("out", &r.out, &[2.0, 3.0, 4.0, 2.0], 1e-14);
    assert_close("lse", &r.lse, &[LN2, 2.0 * LN2, LN2, 2.0 * LN2], 1e-14);
}

#[test]
fn lse_layout_is_batch_heads_seqlen() {
    // batch 1, seqlen 2, heads 2, causal, q = 0: row 0 sees 1 key (lse 0), row 1 sees 2 (ln2),
    // in both heads. [batch, heads, seqlen] gives [0, ln2, 0, ln2]; [batch, seqlen, heads]
    // would give [0, 0, ln2, ln2].
    let p = causal(AttentionProblem::new(1, 2, 2, 2, 2, 1));
    let r = attention(&p, &[0.0; 4], &[1.0, -1.0, 0.5, 2.0], &[1.0, 2.0, 3.0, 4.0]);
    assert_close("lse", &r.lse, &[0.0, LN2, 0.0, LN2], 1e-14);
}

#[test]
fn causal_visibility_is_bottom_right_aligned_both_ways() {
    // seqlen_q 2 < seqlen_k 4: query i sees j <= i + 2.
    assert_eq!(
        visibility(2, 4, -1, 0),
        [vec![1, 1, 1, 0], vec![1, 1, 1, 1]]
    );
    // seqlen_q 4 > seqlen_k 2: query i sees j <= i - 2; rows 0 and 1 see nothing.
    assert_eq!(
        visibility(4, 2, -1, 0),
        [vec![0, 0], vec![0, 0], vec![1, 0], vec![1, 1]]
    );
    // Equal lengths: the usual lower triangle.
    assert_eq!(
        visibility(3, 3, -1, 0),
        [vec![1, 0, 0], vec![1, 1, 0], vec![1, 1, 1]]
    );
}

#[test]
fn causal_attention_short_queries_average_bottom_right_keys() {
    // seqlen_q 2, seqlen_k 4, causal, head_dim 1, q = 0 (uniform scores), v = 1, 2, 4, 8.
    // Row 0 sees keys 0..=2: out 7/3, lse ln3. Row 1 sees all four: out 15/4, lse ln4.
    let p = causal(AttentionProblem::new(1, 2, 4, 1, 1, 1));
    let r = attention(
        &p,
        &[0.0, 0.0],
        &[0.3, -0.2, 0.9, 0.1],
        &[1.0, 2.0, 4.0, 8.0],
    );
    assert_close("out", &r.out, &[7.0 / 3.0, 15.0 / 4.0], 1e-14);
    assert_close("lse", &r.lse, &[3f64.ln(), 2.0 * LN2], 1e-14);
}

#[test]
fn causal_attention_long_queries_leave_leading_rows_empty() {
    // seqlen_q 4, seqlen_k 2, causal, head_dim 1, q = 0, v = 1, 2.
    // Rows 0, 1 see nothing (out 0, lse -inf); row 2 sees key 0 (out 1, lse 0); row 3 sees both
    // (out 3/2, lse ln2).
    let p = causal(AttentionProblem::new(1, 4, 2, 1, 1, 1));
    let r = attention(&p, &[0.0; 4], &[0.7, -0.4], &[1.0, 2.0]);
    assert_eq!(r.out, [0.0, 0.0, 1.0, 1.5]);
    assert_close(
        "lse",
        &r.lse,
        &[f64::NEG_INFINITY, f64::NEG_INFINITY, 0.0, LN2],
        1e-14,
    );
}

#[test]
fn sliding_window_visibility_matches_hand_tables() {
    // (1, 1), seqlen_q 3, seqlen_k 6: diagonal i + 3, keys i + 2 ..= i + 4 (clipped at 5).
    assert_eq!(
        visibility(3, 6, 1, 1),
        [
            vec![0, 0, 1, 1, 1, 0],
            vec![0, 0, 0, 1, 1, 1],
            vec![0, 0, 0, 0, 1, 1]
        ]
    );
    // (2, 0), square: the causal band of width 3.
    assert_eq!(
        visibility(4, 4, 2, 0),
        [
            vec![1, 0, 0, 0],
            vec![1, 1, 0, 0],
            vec![1, 1, 1, 0],
            vec![0, 1, 1, 1]
        ]
    );
    // (0, -1), seqlen_q 2, seqlen_k 3: diagonal i + 1 and everything to its right.
    assert_eq!(visibility(2, 3, 0, -1), [vec![0, 1, 1], vec![0, 0, 1]]);
    // (-1, -1): everything.
    assert_eq!(visibility(2, 3, -1, -1), [vec![1, 1, 1], vec![1, 1, 1]]);
}

#[test]
fn sliding_window_attention_averages_the_band() {
    // seqlen 5, window (1, 1), head_dim 1, q = 0, v = 1, 2, 4, 8, 16.
    // Row i averages keys i-1 ..= i+1: [3/2, 7/3, 14/3, 28/3, 12]; lse ln2, ln3, ln3, ln3, ln2.
    let p = with_window(AttentionProblem::new(1, 5, 5, 1, 1, 1), 1, 1);
    let k = [0.5, -0.5, 0.25, 0.9, -0.1];
    let r = attention(&p, &[0.0; 5], &k, &[1.0, 2.0, 4.0, 8.0, 16.0]);
    let want = [1.5, 7.0 / 3.0, 14.0 / 3.0, 28.0 / 3.0, 12.0];
    assert_close("out", &r.out, &want, 1e-14);
    let ln3 = 3f64.ln();
    assert_close("lse", &r.lse, &[LN2, ln3, ln3, ln3, LN2], 1e-14);
}

#[test]
fn row_with_no_visible_key_outputs_zero_and_neg_inf_lse() {
    // Window (0, 0) with seqlen_q 3, seqlen_k 2: query i sees only key i - 1, so row 0 sees
    // nothing, and rows 1, 2 see one key each: out is that V row, lse its score.
    let p = with_window(AttentionProblem::new(1, 3, 2, 2, 1, 8), 0, 0);
    let (q, k, v) = random_qkv(&p, 11);
    let r = attention(&p, &q, &k, &v);
    let d = p.head_dim;
    for h in 0..p.heads {
        let row = |i: usize| (i * p.heads + h) * d..(i * p.heads + h + 1) * d;
        assert_eq!(r.out[row(0)], [0.0; 8], "head {h} row 0 out");
        assert_eq!(r.lse[h * 3], f64::NEG_INFINITY, "head {h} row 0 lse");
        for i in 1..3 {
            let key = &k[(i - 1) * d..i * d];
            let s: f64 = q[row(i)].iter().zip(key).map(|(a, b)| a * b).sum();
            assert_close(
                "single-key out",
                &r.out[row(i)],
                &v[(i - 1) * d..i * d],
                1e-14,
            );
            assert_close("single-key lse", &[r.lse[h * 3 + i]], &[p.scale * s], 1e-14);
        }
    }
}

#[test]
fn zero_length_keys_give_empty_rows() {
    let p = AttentionProblem::new(2, 3, 0, 2, 2, 8);
    let (q, k, v) = random_qkv(&p, 12);
    let r = attention(&p, &q, &k, &v);
    assert!(r.out.iter().all(|&x| x == 0.0));
    assert_eq!(r.lse, vec![f64::NEG_INFINITY; 2 * 2 * 3]);
}

// ----------------------------------------------------------------------------------------------
// Properties on random data.
// ----------------------------------------------------------------------------------------------

/// Shapes with odd lengths, seqlen_q != seqlen_k both ways, GQA/MQA and several masks.
fn property_shapes() -> Vec<AttentionProblem> {
    vec![
        AttentionProblem::new(2, 5, 9, 4, 2, 8),
        causal(AttentionProblem::new(2, 5, 9, 4, 2, 8)),
        causal(AttentionProblem::new(1, 9, 5, 3, 1, 16)),
        with_window(AttentionProblem::new(2, 17, 13, 5, 5, 8), 3, 2),
        with_window(AttentionProblem::new(1, 7, 11, 4, 4, 8), 0, 0),
        with_window(AttentionProblem::new(1, 6, 6, 2, 1, 8), -1, 1),
    ]
}

#[test]
fn uniform_scores_give_mean_of_visible_values() {
    for (n, mut p) in property_shapes().into_iter().enumerate() {
        p.softcap = if n % 2 == 0 { 0.0 } else { 5.0 }; // softcap(0) = 0: still uniform
        println!("{p:?}");
        let (mut q, k, v) = random_qkv(&p, 100 + n as u64);
        q.iter_mut().for_each(|x| *x = 0.0);
        let r = attention(&p, &q, &k, &v);
        let (d, group) = (p.head_dim, p.heads / p.kv_heads);
        let (mut want_out, mut want_lse) = (vec![0.0; q.len()], vec![0.0; r.lse.len()]);
        for b in 0..p.batch {
            for h in 0..p.heads {
                for i in 0..p.seqlen_q {
                    let visible: Vec<usize> = (0..p.seqlen_k)
                        .filter(|&j| {
                            key_visible(i, j, p.seqlen_q, p.seqlen_k, p.window_left, p.window_right)
                        })
                        .collect();
                    let o = ((b * p.seqlen_q + i) * p.heads + h) * d;
                    for &j in &visible {
                        let kv = ((b * p.seqlen_k + j) * p.kv_heads + h / group) * d;
                        for e in 0..d {
                            want_out[o + e] += v[kv + e] / visible.len() as f64;
                        }
                    }
                    want_lse[(b * p.heads + h) * p.seqlen_q + i] = (visible.len() as f64).ln();
                }
            }
        }
        assert_close("out", &r.out, &want_out, TIGHT);
        assert_close("lse", &r.lse, &want_lse, TIGHT);
    }
}

#[test]
fn adding_a_constant_to_a_rows_scores_changes_out_and_shifts_lse() {
    // Append one dimension: q' = [q, c / scale], k' = [k, 1], so s'_ij = s_ij + c_i for every
    // key of row i (c_i differs per row and head). Softmax is shift-invariant: out' = out, and
    // lse' = lse + c_i. |c_i| up to 800 also overflows e^s unless the softmax subtracts the max.
    for (n, p) in property_shapes().into_iter().enumerate() {
        println!("{p:?}");
        let (q, k, v) = random_qkv(&p, 200 + n as u64);
        let mut rng = StdRng::seed_from_u64(300 + n as u64);
        let d = p.head_dim;
        let shifts: Vec<f64> = (0..q.len() / d)
            .map(|_| rng.random_range(-800.0..800.0))
            .collect();
        let q_shifted: Vec<f64> = q
            .chunks(d)
            .zip(&shifts)
            .flat_map(|(row, &c)| row.iter().copied().chain([c / p.scale]))
            .collect();
        let k_shifted: Vec<f64> = k
            .chunks(d)
            .flat_map(|row| row.iter().copied().chain([1.0]))
            .collect();
        let v_padded: Vec<f64> = v
            .chunks(d)
            .flat_map(|row| row.iter().copied().chain([0.0]))
            .collect();
        let shifted = AttentionProblem {
            head_dim: d + 1,
            ..p.clone()
        };
        let base = attention(&p, &q, &k, &v);
        let r = attention(&shifted, &q_shifted, &k_shifted, &v_padded);
        let out: Vec<f64> = r
            .out
            .chunks(d + 1)
            .flat_map(|row| &row[..d])
            .copied()
            .collect();
        assert_close("out", &out, &base.out, TIGHT);
        // shifts are indexed [b, i, h]; lse is [b, h, i].
        let mut want_lse = base.lse.clone();
        for b in 0..p.batch {
            for h in 0..p.heads {
                for i in 0..p.seqlen_q {
                    want_lse[(b * p.heads + h) * p.seqlen_q + i] +=
                        shifts[(b * p.seqlen_q + i) * p.heads + h];
                }
            }
        }
        assert_close("lse", &r.lse, &want_lse, TIGHT);
        // The shift is real: the lse moved.
        assert!(compare(&r.lse, &base.lse, TIGHT, TIGHT).is_err());
    }
}

/// Checks that GQA with `kv_heads` equals MHA with each KV head repeated `heads / kv_heads` times.
fn assert_grouped_matches_repeated(p: &AttentionProblem, seed: u64) {
    println!("{p:?}");
    let (q, k, v) = random_qkv(p, seed);
    let group = p.heads / p.kv_heads;
    let mha = AttentionProblem {
        kv_heads: p.heads,
        ..p.clone()
    };
    let grouped = attention(p, &q, &k, &v);
    let repeated = attention(
        &mha,
        &q,
        &repeat_kv(&k, p.kv_heads, group, p.head_dim),
        &repeat_kv(&v, p.kv_heads, group, p.head_dim),
    );
    // Same arithmetic in the same order: bit-identical.
    assert_eq!(grouped, repeated);
    // And the groups really differ from each other (the test could fail).
    if p.kv_heads > 1 {
        assert_ne!(
            grouped.out[..p.head_dim],
            grouped.out[(p.heads - 1) * p.head_dim..][..p.head_dim]
        );
    }
}

#[test]
fn mqa_equals_mha_with_kv_repeated_per_head() {
    assert_grouped_matches_repeated(&causal(AttentionProblem::new(2, 7, 13, 6, 1, 16)), 400);
    let mut p = AttentionProblem::new(1, 13, 7, 8, 1, 8);
    p.softcap = 3.0;
    assert_grouped_matches_repeated(&p, 401);
}

#[test]
fn gqa_group_sizes_2_4_5_8_equal_mha_with_kv_repeated() {
    for (n, (heads, kv_heads)) in [(8, 4), (8, 2), (10, 2), (16, 2), (5, 5)]
        .into_iter()
        .enumerate()
    {
        let mut p = with_window(AttentionProblem::new(2, 9, 17, heads, kv_heads, 8), 5, 1);
        p.softcap = 4.0;
        assert_grouped_matches_repeated(&p, 500 + n as u64);
    }
}

#[test]
fn varlen_equals_each_sequence_run_separately() {
    // Query lengths 5, 1, 7, 0, 3 and key lengths 3, 9, 7, 4, 0: seqlen_q > seqlen_k, <, ==, an
    // empty query sequence and an empty key sequence.
    let lens_q = [5, 1, 7, 0, 3];
    let lens_k = [3, 9, 7, 4, 0];
    let offsets = |lens: &[i32]| -> Vec<i32> {
        std::iter::once(0)
            .chain(lens.iter().scan(0, |acc, &l| {
                *acc += l;
                Some(*acc)
            }))
            .collect()
    };
    for (n, window) in [(-1, 0), (2, 1), (-1, -1)].into_iter().enumerate() {
        let mut p = with_window(
            AttentionProblem::new(lens_q.len(), 0, 0, 6, 2, 8),
            window.0,
            window.1,
        );
        p.softcap = 2.5;
        p.varlen = Some(Varlen {
            cu_seqlens_q: offsets(&lens_q),
            cu_seqlens_k: offsets(&lens_k),
        });
        println!("{p:?}");
        let (q, k, v) = random_qkv(&p, 600 + n as u64);
        let packed = attention(&p, &q, &k, &v);
        let total_q: usize = lens_q.iter().sum::<i32>() as usize;
        let (qw, kw) = (p.heads * p.head_dim, p.kv_heads * p.head_dim);
        let (mut q0, mut k0) = (0, 0);
        for (&sq, &sk) in lens_q.iter().zip(&lens_k) {
            let (sq, sk) = (sq as usize, sk as usize);
            let single = AttentionProblem {
                batch: 1,
                seqlen_q: sq,
                seqlen_k: sk,
                varlen: None,
                ..p.clone()
            };
            let r = attention(
                &single,
                &q[q0 * qw..(q0 + sq) * qw],
                &k[k0 * kw..(k0 + sk) * kw],
                &v[k0 * kw..(k0 + sk) * kw],
            );
            assert_eq!(r.out, packed.out[q0 * qw..(q0 + sq) * qw]);
            for h in 0..p.heads {
                // single lse [1, heads, sq]; packed lse [heads, total_q].
                assert_eq!(
                    r.lse[h * sq..(h + 1) * sq],
                    packed.lse[h * total_q + q0..][..sq]
                );
            }
            q0 += sq;
            k0 += sk;
        }
    }
}

#[test]
fn merging_two_key_halves_by_lse_equals_the_whole() {
    // Unmasked (a split changes seqlen_k, which moves a bottom-right mask), with GQA and softcap.
    for (n, split) in [1, 6, 12].into_iter().enumerate() {
        let mut p = AttentionProblem::new(2, 5, 13, 4, 2, 8);
        p.softcap = 3.0;
        println!("{p:?} split at key {split}");
        let (q, k, v) = random_qkv(&p, 700 + n as u64);
        let whole = attention(&p, &q, &k, &v);
        let kw = p.kv_heads * p.head_dim;
        let half = |start: usize, end: usize| {
            let hp = AttentionProblem {
                seqlen_k: end - start,
                ..p.clone()
            };
            attention(
                &hp,
                &q,
                &slice_rows(&k, p.seqlen_k, kw, start, end),
                &slice_rows(&v, p.seqlen_k, kw, start, end),
            )
        };
        let (a, b) = (half(0, split), half(split, p.seqlen_k));
        let d = p.head_dim;
        let mut out = vec![0.0; whole.out.len()];
        let mut lse = vec![0.0; whole.lse.len()];
        for bi in 0..p.batch {
            for i in 0..p.seqlen_q {
                for h in 0..p.heads {
                    let o = ((bi * p.seqlen_q + i) * p.heads + h) * d;
                    let l = (bi * p.heads + h) * p.seqlen_q + i;
                    let (mo, ml) =
                        merge_states(&a.out[o..o + d], a.lse[l], &b.out[o..o + d], b.lse[l]);
                    out[o..o + d].copy_from_slice(&mo);
                    lse[l] = ml;
                }
            }
        }
        assert_close("out", &out, &whole.out, TIGHT);
        assert_close("lse", &lse, &whole.lse, TIGHT);
        // Each half alone is not the whole.
        assert!(compare(&a.out, &whole.out, 1e-6, 1e-6).is_err());
    }
}

#[test]
fn merge_states_with_an_empty_side_returns_the_other() {
    // A side with lse -inf contributes nothing, whatever its out holds (even NaN, which a
    // 0 * out weighting would spread).
    let a = [1.0, -2.0, 3.0];
    let garbage = [f64::NAN; 3];
    let ninf = f64::NEG_INFINITY;
    assert_eq!(merge_states(&a, 0.7, &garbage, ninf), (a.to_vec(), 0.7));
    assert_eq!(merge_states(&garbage, ninf, &a, 0.7), (a.to_vec(), 0.7));
    assert_eq!(
        merge_states(&garbage, ninf, &garbage, ninf),
        (vec![0.0; 3], ninf)
    );
}

#[test]
fn merge_states_weights_by_exp_lse_by_hand() {
    // lse_a = ln3, lse_b = ln1 = 0: weights 3/4, 1/4; lse = ln4. Shifting both lse by 800 (where
    // e^lse overflows) changes only the lse.
    let (a, b) = ([4.0, 0.0], [0.0, 8.0]);
    let ln3 = 3f64.ln();
    let (out, lse) = merge_states(&a, ln3, &b, 0.0);
    assert_close("out", &out, &[3.0, 2.0], 1e-15);
    assert_close("lse", &[lse], &[2.0 * LN2], 1e-15);
    let (out, lse) = merge_states(&a, ln3 + 800.0, &b, 800.0);
    assert_close("shifted out", &out, &[3.0, 2.0], 1e-12);
    assert_close("shifted lse", &[lse], &[800.0 + 2.0 * LN2], 1e-15);
}

#[test]
fn lse_and_out_equal_direct_sums_of_exp_scores() {
    // An independent, unstabilized computation: lse = ln(sum_j e^{s_j}), out = sum_j e^{s_j} v_j
    // / sum_j e^{s_j}, with s_j = softcap * tanh(scale * q.k / softcap), over visible keys.
    for (n, mut p) in property_shapes().into_iter().enumerate() {
        p.softcap = if n % 2 == 0 { 0.0 } else { 3.0 };
        println!("{p:?}");
        let (q, k, v) = random_qkv(&p, 800 + n as u64);
        let r = attention(&p, &q, &k, &v);
        let (d, group) = (p.head_dim, p.heads / p.kv_heads);
        let (mut want_out, mut want_lse) = (vec![0.0; q.len()], vec![0.0; r.lse.len()]);
        for b in 0..p.batch {
            for h in 0..p.heads {
                for i in 0..p.seqlen_q {
                    let o = ((b * p.seqlen_q + i) * p.heads + h) * d;
                    let mut sum = 0.0;
                    for j in 0..p.seqlen_k {
                        if !key_visible(i, j, p.seqlen_q, p.seqlen_k, p.window_left, p.window_right)
                        {
                            continue;
                        }
                        let kv = ((b * p.seqlen_k + j) * p.kv_heads + h / group) * d;
                        let dot: f64 = (0..d).map(|e| q[o + e] * k[kv + e]).sum();
                        let mut s = p.scale * dot;
                        if p.softcap > 0.0 {
                            s = p.softcap * (s / p.softcap).tanh();
                        }
                        sum += s.exp();
                        for e in 0..d {
                            want_out[o + e] += s.exp() * v[kv + e];
                        }
                    }
                    if sum > 0.0 {
                        want_out[o..o + d].iter_mut().for_each(|x| *x /= sum);
                    }
                    want_lse[(b * p.heads + h) * p.seqlen_q + i] = sum.ln(); // ln 0 = -inf
                }
            }
        }
        assert_close("out", &r.out, &want_out, TIGHT);
        assert_close("lse", &r.lse, &want_lse, TIGHT);
    }
}

#[test]
fn every_output_element_is_finite_and_lse_neg_inf_only_on_empty_rows() {
    for (n, p) in property_shapes().into_iter().enumerate() {
        let (q, k, v) = random_qkv(&p, 900 + n as u64);
        let r = attention(&p, &q, &k, &v);
        assert!(r.out.iter().all(|x| x.is_finite()), "{p:?}");
        for b in 0..p.batch {
            for h in 0..p.heads {
                for i in 0..p.seqlen_q {
                    let any = (0..p.seqlen_k).any(|j| {
                        key_visible(i, j, p.seqlen_q, p.seqlen_k, p.window_left, p.window_right)
                    });
                    let l = r.lse[(b * p.heads + h) * p.seqlen_q + i];
                    assert_eq!(l.is_finite(), any, "{p:?} b {b} h {h} i {i}: lse {l}");
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Validation.
// ----------------------------------------------------------------------------------------------

#[test]
fn check_problem_accepts_valid_problems() {
    for p in property_shapes() {
        let (q, k, v) = random_qkv(&p, 1);
        assert_eq!(check_problem(&p, q.len(), k.len(), v.len()), Ok(()));
    }
}

#[test]
fn check_problem_rejects_bad_shapes_offsets_and_fields_naming_them() {
    let base = AttentionProblem::new(2, 3, 4, 4, 2, 8);
    let (q_len, kv_len) = (2 * 3 * 4 * 8, 2 * 4 * 2 * 8);
    let varlen = |q: Vec<i32>, k: Vec<i32>| AttentionProblem {
        varlen: Some(Varlen {
            cu_seqlens_q: q,
            cu_seqlens_k: k,
        }),
        ..base.clone()
    };
    let cases: Vec<(AttentionProblem, usize, usize, usize, &str)> = vec![
        (
            AttentionProblem {
                kv_heads: 3,
                ..base.clone()
            },
            q_len,
            kv_len,
            kv_len,
            "kv_heads (3)",
        ),
        (
            AttentionProblem {
                kv_heads: 0,
                ..base.clone()
            },
            q_len,
            0,
            0,
            "kv_heads (0)",
        ),
        (
            AttentionProblem {
                head_dim: 0,
                ..base.clone()
            },
            0,
            0,
            0,
            "head_dim (0)",
        ),
        (
            base.clone(),
            q_len - 1,
            kv_len,
            kv_len,
            "q has 191 elements",
        ),
        (
            base.clone(),
            q_len,
            kv_len + 8,
            kv_len,
            "k has 136 elements",
        ),
        (base.clone(), q_len, kv_len, 0, "v has 0 elements"),
        (
            AttentionProblem {
                softcap: -1.0,
                ..base.clone()
            },
            q_len,
            kv_len,
            kv_len,
            "softcap (-1)",
        ),
        (
            AttentionProblem {
                scale: f64::NAN,
                ..base.clone()
            },
            q_len,
            kv_len,
            kv_len,
            "scale (NaN)",
        ),
        (
            with_window(base.clone(), -2, 0),
            q_len,
            kv_len,
            kv_len,
            "window_left (-2)",
        ),
        (
            with_window(base.clone(), 0, -5),
            q_len,
            kv_len,
            kv_len,
            "window_right (-5)",
        ),
        (
            varlen(vec![0, 3], vec![0, 4, 8]),
            3 * 32,
            8 * 16,
            8 * 16,
            "cu_seqlens_q has 2 entries",
        ),
        (
            varlen(vec![1, 3, 6], vec![0, 4, 8]),
            5 * 32,
            8 * 16,
            8 * 16,
            "cu_seqlens_q[0] is 1",
        ),
        (
            varlen(vec![0, 3, 6], vec![0, 5, 4]),
            6 * 32,
            4 * 16,
            4 * 16,
            "cu_seqlens_k[2] = 4 is less",
        ),
        (
            varlen(vec![0, 3, 6], vec![0, 4, 8]),
            7 * 32,
            8 * 16,
            8 * 16,
            "q has 224 elements",
        ),
        (
            AttentionProblem::new(usize::MAX, 2, 2, 1, 1, 8),
            0,
            0,
            0,
            "overflows",
        ),
    ];
    for (p, q, k, v, needle) in cases {
        let err = check_problem(&p, q, k, v).expect_err(needle);
        assert!(err.contains(needle), "{err:?} should contain {needle:?}");
    }
    // Varlen ignores seqlen_q/seqlen_k and the batch layout: this one is valid.
    assert_eq!(
        check_problem(
            &varlen(vec![0, 3, 6], vec![0, 0, 8]),
            6 * 32,
            8 * 16,
            8 * 16
        ),
        Ok(())
    );
}

#[test]
#[should_panic(expected = "heads (4) must be a multiple of kv_heads (3)")]
fn attention_panics_with_check_problem_message_on_bad_input() {
    let p = AttentionProblem::new(1, 1, 1, 4, 3, 8);
    attention(&p, &[0.0; 32], &[0.0; 24], &[0.0; 24]);
}

// ----------------------------------------------------------------------------------------------
// compare.
// ----------------------------------------------------------------------------------------------

#[test]
fn compare_tolerance_is_inclusive_at_atol_plus_rtol_times_want() {
    // want 4, atol 1/4, rtol 1/16: tolerance 1/4 + 4/16 = 1/2 exactly (all dyadic).
    assert_eq!(compare(&[4.5], &[4.0], 0.25, 0.0625), Ok(()));
    assert_eq!(compare(&[3.5], &[4.0], 0.25, 0.0625), Ok(()));
    assert!(compare(&[4.5 + 1e-12], &[4.0], 0.25, 0.0625).is_err());
    assert!(compare(&[3.5 - 1e-12], &[4.0], 0.25, 0.0625).is_err());
    // The relative part scales with |want|, not |got|: got 0, want -4 needs atol + 4 rtol >= 4.
    assert_eq!(compare(&[0.0], &[-4.0], 0.0, 1.0), Ok(()));
    assert!(compare(&[-4.0], &[0.0], 0.0, 1.0).is_err());
    assert_eq!(compare(&[], &[], 0.0, 0.0), Ok(()));
}

#[test]
fn compare_nan_always_fails() {
    for (got, want) in [(f64::NAN, 1.0), (1.0, f64::NAN), (f64::NAN, f64::NAN)] {
        let m = compare(&[0.0, got], &[0.0, want], f64::INFINITY, f64::INFINITY).unwrap_err();
        assert_eq!((m.index, m.failures, m.excess), (1, 1, f64::INFINITY));
    }
}

#[test]
fn compare_infinities_match_only_the_same_infinity() {
    let ninf = f64::NEG_INFINITY;
    assert_eq!(compare(&[ninf, 1.0], &[ninf, 1.0], 0.0, 0.0), Ok(()));
    assert_eq!(
        compare(&[f64::INFINITY], &[f64::INFINITY], 0.0, 0.0),
        Ok(())
    );
    // A finite value against -inf would pass the formula with rtol > 0 (inf <= inf): it must not.
    for (got, want) in [
        (ninf, 0.0),
        (0.0, ninf),
        (f64::INFINITY, ninf),
        (-1e300, ninf),
    ] {
        let m = compare(&[got], &[want], 1.0, 1.0).unwrap_err();
        assert_eq!(
            (m.failures, m.max_abs_err),
            (1, f64::INFINITY),
            "{got} vs {want}"
        );
    }
}

#[test]
fn compare_reports_worst_element_count_and_max_abs_err() {
    // Tolerance 0.05 + 0.1 |want|. Index 0: error 0.01 <= 0.05 passes; index 1: 0.125 <= 0.15
    // passes; index 2: 0.5 vs 0.25 (excess 0.25); index 3: 0.5 vs 0.35 (excess 0.15); index 4:
    // 3 vs 0.05 (excess 2.95, the worst and the max abs err).
    let want = [0.0, 1.0, 2.0, 3.0, 0.0];
    let got = [0.01, 1.125, 2.5, 3.5, 3.0];
    let m = compare(&got, &want, 0.05, 0.1).unwrap_err();
    assert_eq!(
        (m.index, m.got, m.want, m.failures, m.len),
        (4, 3.0, 0.0, 3, 5)
    );
    assert_eq!(m.max_abs_err, 3.0);
    assert!((m.excess - 2.95).abs() < 1e-12, "excess {}", m.excess);
    let text = m.to_string();
    assert!(
        text.contains("3 of 5 elements") && text.contains("index 4"),
        "{text}"
    );
}
