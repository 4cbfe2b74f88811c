//! The float64 reference ("oracle") for cuattn's attention kernels, in the conventions of
//! csrc/cuattn.h: dense attention with masks, softcap, GQA/MQA, varlen and LSE; LSE merging; and
//! the mixed-tolerance comparison every test uses.

use std::fmt;
use std::ops::Range;

/// One attention problem in the conventions of csrc/cuattn.h, on dense f64 data.
///
/// Tensors are contiguous: q `[batch, seqlen_q, heads, head_dim]`, k and v `[batch, seqlen_k,
/// kv_heads, head_dim]`; with `varlen`, q is packed `[total_q, heads, head_dim]` and k, v
/// `[total_k, kv_heads, head_dim]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionProblem {
    /// Number of sequences.
    pub batch: usize,
    /// Query rows per sequence; ignored when `varlen` is set.
    pub seqlen_q: usize,
    /// Key rows per sequence; ignored when `varlen` is set.
    pub seqlen_k: usize,
    /// Query heads, a multiple of `kv_heads`.
    pub heads: usize,
    /// Key/value heads: query head `h` reads KV head `h / (heads / kv_heads)`.
    pub kv_heads: usize,
    /// Elements per head. The reference takes any value >= 1; the kernels need a multiple of 8.
    pub head_dim: usize,
    /// Multiplies `q . k`; conventionally `1 / sqrt(head_dim)`.
    pub scale: f64,
    /// 0 for none; otherwise the scaled score becomes `softcap * tanh(s / softcap)`.
    pub softcap: f64,
    /// How far left of the diagonal keys are visible; -1 for unbounded.
    pub window_left: i64,
    /// How far right of the diagonal keys are visible; -1 for unbounded. Causal is `(-1, 0)`.
    pub window_right: i64,
    /// A packed variable-length batch, or `None` for equal-length sequences.
    pub varlen: Option<Varlen>,
}

impl AttentionProblem {
    /// Full (unmasked) attention with the default scale `1 / sqrt(head_dim)` and no softcap.
    pub fn new(
        batch: usize,
        seqlen_q: usize,
        seqlen_k: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        Self {
            batch,
            seqlen_q,
            seqlen_k,
            heads,
            kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f64).sqrt(),
            softcap: 0.0,
            window_left: -1,
            window_right: -1,
            varlen: None,
        }
    }
}

/// Offsets of a packed variable-length batch: sequence `b` owns query rows
/// `cu_seqlens_q[b] .. cu_seqlens_q[b + 1]` and key rows `cu_seqlens_k[b] .. cu_seqlens_k[b + 1]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Varlen {
    /// `batch + 1` nondecreasing offsets starting at 0.
    pub cu_seqlens_q: Vec<i32>,
    /// `batch + 1` nondecreasing offsets starting at 0.
    pub cu_seqlens_k: Vec<i32>,
}

/// The result of [`attention`].
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionReference {
    /// Shaped like q.
    pub out: Vec<f64>,
    /// Natural-log log-sum-exp of each row's visible scores: `[batch, heads, seqlen_q]`
    /// (varlen: `[heads, total_q]`); `-inf` for a row with no visible key.
    pub lse: Vec<f64>,
}

/// Checks that `p` is well formed and that q, k and v hold `q_len`, `k_len` and `v_len` elements,
/// so that [`attention`] will not panic. The message names the argument, its value and the
/// constraint it breaks.
pub fn check_problem(
    p: &AttentionProblem,
    q_len: usize,
    k_len: usize,
    v_len: usize,
) -> Result<(), String> {
    if p.heads == 0 || p.kv_heads == 0 || p.head_dim == 0 {
        return Err(format!(
            "heads ({}), kv_heads ({}) and head_dim ({}) must all be at least 1",
            p.heads, p.kv_heads, p.head_dim
        ));
    }
    if !p.heads.is_multiple_of(p.kv_heads) {
        return Err(format!(
            "heads ({}) must be a multiple of kv_heads ({})",
            p.heads, p.kv_heads
        ));
    }
    if !p.scale.is_finite() {
        return Err(format!("scale ({}) must be finite", p.scale));
    }
    if !(p.softcap.is_finite() && p.softcap >= 0.0) {
        return Err(format!(
            "softcap ({}) must be 0 (none) or a finite positive number",
            p.softcap
        ));
    }
    for (name, w) in [
        ("window_left", p.window_left),
        ("window_right", p.window_right),
    ] {
        if w < -1 {
            return Err(format!("{name} ({w}) must be -1 (unbounded) or at least 0"));
        }
    }
    let (total_q, total_k) = match &p.varlen {
        None => (
            checked_product(&[p.batch, p.seqlen_q], "batch * seqlen_q")?,
            checked_product(&[p.batch, p.seqlen_k], "batch * seqlen_k")?,
        ),
        Some(varlen) => (
            check_offsets(&varlen.cu_seqlens_q, "varlen.cu_seqlens_q", p.batch)?,
            check_offsets(&varlen.cu_seqlens_k, "varlen.cu_seqlens_k", p.batch)?,
        ),
    };
    for (name, len, rows, heads) in [
        ("q", q_len, total_q, p.heads),
        ("k", k_len, total_k, p.kv_heads),
        ("v", v_len, total_k, p.kv_heads),
    ] {
        let want = checked_product(&[rows, heads, p.head_dim], name)?;
        if len != want {
            return Err(format!(
                "{name} has {len} elements; {rows} rows x {heads} heads x head_dim {} = {want} \
                 expected",
                p.head_dim
            ));
        }
    }
    Ok(())
}

/// Whether key `j` is visible to query `i` in a sequence of lengths `(seqlen_q, seqlen_k)` under
/// the window `(window_left, window_right)`, -1 (any negative) meaning unbounded on that side:
/// `i + seqlen_k - seqlen_q - window_left <= j <= i + seqlen_k - seqlen_q + window_right`.
/// The diagonal is aligned to the bottom-right corner; `i` and `j` are not range-checked.
pub fn key_visible(
    i: usize,
    j: usize,
    seqlen_q: usize,
    seqlen_k: usize,
    window_left: i64,
    window_right: i64,
) -> bool {
    // i128 holds every usize difference and window offset exactly.
    let diagonal = i as i128 + seqlen_k as i128 - seqlen_q as i128;
    let j = j as i128;
    (window_left < 0 || j >= diagonal - window_left as i128)
        && (window_right < 0 || j <= diagonal + window_right as i128)
}

/// Attention in f64 with a max-subtracted softmax per row.
///
/// q is `[batch, seqlen_q, heads, head_dim]` (varlen: `[total_q, heads, head_dim]`), k and v are
/// `[batch, seqlen_k, kv_heads, head_dim]` (varlen: `[total_k, kv_heads, head_dim]`), contiguous.
/// Returns out shaped like q and lse `[batch, heads, seqlen_q]` (varlen: `[heads, total_q]`); a
/// row with no visible key has out 0 and lse `-inf`.
///
/// # Panics
///
/// When [`check_problem`] rejects the problem (with its message); call it first on untrusted
/// input.
pub fn attention(p: &AttentionProblem, q: &[f64], k: &[f64], v: &[f64]) -> AttentionReference {
    attention_masked(p, q, k, v, |_, _, _, _| true)
}

/// [`attention`] under a further element mask: key `j` is visible to query `i` of sequence `b`,
/// head `h`, iff the window allows it and `also_visible(b, h, i, j)` (block-sparse attention's
/// block mask, for one).
///
/// # Panics
///
/// As [`attention`].
pub fn attention_masked(
    p: &AttentionProblem,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    also_visible: impl Fn(usize, usize, usize, usize) -> bool,
) -> AttentionReference {
    if let Err(message) = check_problem(p, q.len(), k.len(), v.len()) {
        panic!("reference::attention: {message}");
    }
    let d = p.head_dim;
    let group = p.heads / p.kv_heads;
    let total_q = q.len() / (p.heads * d);
    let mut out = vec![0.0; q.len()];
    let mut lse = vec![f64::NEG_INFINITY; total_q * p.heads];
    // (key index, score) of the current row's visible keys.
    let mut scores: Vec<(usize, f64)> = Vec::new();
    for (b, seq) in sequences(p).into_iter().enumerate() {
        for h in 0..p.heads {
            let kv_head = h / group;
            for i in 0..seq.seqlen_q {
                let q_row = &q[head_row(seq.q_start + i, h, p.heads, d)];
                // s_j = scale * (q_i . k_j), capped, over the visible keys.
                scores.clear();
                for j in 0..seq.seqlen_k {
                    if key_visible(
                        i,
                        j,
                        seq.seqlen_q,
                        seq.seqlen_k,
                        p.window_left,
                        p.window_right,
                    ) && also_visible(b, h, i, j)
                    {
                        let k_row = &k[head_row(seq.k_start + j, kv_head, p.kv_heads, d)];
                        scores.push((j, score(p, q_row, k_row)));
                    }
                }
                if scores.is_empty() {
                    continue; // out stays 0, lse -inf
                }
                let max = scores.iter().fold(f64::NEG_INFINITY, |m, &(_, s)| m.max(s));
                // o = sum_j e^(s_j - max) v_j / sum_j e^(s_j - max)
                let o = &mut out[head_row(seq.q_start + i, h, p.heads, d)];
                let mut sum = 0.0;
                for &(j, s) in &scores {
                    let weight = (s - max).exp();
                    sum += weight;
                    let v_row = &v[head_row(seq.k_start + j, kv_head, p.kv_heads, d)];
                    for (o, &x) in o.iter_mut().zip(v_row) {
                        *o += weight * x;
                    }
                }
                for o in o.iter_mut() {
                    *o /= sum;
                }
                let lse_index = match p.varlen {
                    Some(_) => h * total_q + seq.q_start + i,
                    None => (b * p.heads + h) * p.seqlen_q + i,
                };
                lse[lse_index] = max + sum.ln();
            }
        }
    }
    AttentionReference { out, lse }
}

/// Merges two partial attention results over disjoint key sets by their LSE, as split-KV decode
/// does: `out = (e^lse_a out_a + e^lse_b out_b) / (e^lse_a + e^lse_b)`, `lse = log(e^lse_a +
/// e^lse_b)`, computed stably. A side with lse `-inf` (no keys) contributes nothing; both `-inf`
/// give zeros and `-inf`. NaN propagates.
///
/// # Panics
///
/// When `out_a` and `out_b` differ in length.
pub fn merge_states(out_a: &[f64], lse_a: f64, out_b: &[f64], lse_b: f64) -> (Vec<f64>, f64) {
    assert_eq!(
        out_a.len(),
        out_b.len(),
        "merge_states: out_a and out_b must have the same length"
    );
    match (lse_a == f64::NEG_INFINITY, lse_b == f64::NEG_INFINITY) {
        (true, true) => return (vec![0.0; out_a.len()], f64::NEG_INFINITY),
        (true, false) => return (out_b.to_vec(), lse_b),
        (false, true) => return (out_a.to_vec(), lse_a),
        (false, false) => {}
    }
    let max = lse_a.max(lse_b);
    let (weight_a, weight_b) = ((lse_a - max).exp(), (lse_b - max).exp());
    let sum = weight_a + weight_b;
    let out = out_a
        .iter()
        .zip(out_b)
        .map(|(&a, &b)| (weight_a * a + weight_b * b) / sum)
        .collect();
    (out, max + sum.ln())
}

/// The elements of `got` that miss `want` under [`compare`]: the worst one, how many, and the
/// largest absolute error.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// Index of the worst element: the one exceeding its tolerance the most (NaN and infinite
    /// mismatches count as infinitely far; ties go to the first).
    pub index: usize,
    /// `got[index]`.
    pub got: f64,
    /// `want[index]`.
    pub want: f64,
    /// How far the worst element exceeds `atol + rtol * |want|` (`inf` for NaN or infinities).
    pub excess: f64,
    /// Largest `|got - want|` over all elements, NaN pairs excepted (they count as failures).
    pub max_abs_err: f64,
    /// How many elements fail.
    pub failures: usize,
    /// How many elements were compared.
    pub len: usize,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} elements out of tolerance; worst at index {}: got {}, want {} (over \
             atol + rtol * |want| by {:e}); max abs err {:e}",
            self.failures, self.len, self.index, self.got, self.want, self.excess, self.max_abs_err
        )
    }
}

impl std::error::Error for Mismatch {}

/// Mixed absolute/relative comparison used by every test: element `x` passes against `r` iff
/// `|x - r| <= atol + rtol * |r|`. NaN (on either side) always fails; an infinity passes only
/// against the same infinity (so `-inf` matches `-inf`, an empty row's LSE).
///
/// # Panics
///
/// When `got` and `want` differ in length.
pub fn compare(got: &[f64], want: &[f64], atol: f64, rtol: f64) -> Result<(), Mismatch> {
    assert_eq!(
        got.len(),
        want.len(),
        "compare: got and want must have the same length"
    );
    let mut worst: Option<(usize, f64)> = None;
    let mut failures = 0;
    let mut max_abs_err: f64 = 0.0;
    for (index, (&x, &r)) in got.iter().zip(want).enumerate() {
        let err = (x - r).abs();
        let excess = if x.is_nan() || r.is_nan() {
            f64::INFINITY
        } else if x.is_infinite() || r.is_infinite() {
            if x == r {
                continue;
            }
            max_abs_err = f64::INFINITY;
            f64::INFINITY
        } else {
            max_abs_err = max_abs_err.max(err);
            err - (atol + rtol * r.abs())
        };
        if excess > 0.0 {
            failures += 1;
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((index, excess));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((index, excess)) => Err(Mismatch {
            index,
            got: got[index],
            want: want[index],
            excess,
            max_abs_err,
            failures,
            len: got.len(),
        }),
    }
}

/// Where one sequence's rows start in the (padded or packed) q and k/v, and its lengths.
struct Sequence {
    q_start: usize,
    k_start: usize,
    seqlen_q: usize,
    seqlen_k: usize,
}

/// The sequences of a problem that passed [`check_problem`].
fn sequences(p: &AttentionProblem) -> Vec<Sequence> {
    match &p.varlen {
        None => (0..p.batch)
            .map(|b| Sequence {
                q_start: b * p.seqlen_q,
                k_start: b * p.seqlen_k,
                seqlen_q: p.seqlen_q,
                seqlen_k: p.seqlen_k,
            })
            .collect(),
        Some(varlen) => (0..p.batch)
            .map(|b| {
                let (q0, q1) = (varlen.cu_seqlens_q[b], varlen.cu_seqlens_q[b + 1]);
                let (k0, k1) = (varlen.cu_seqlens_k[b], varlen.cu_seqlens_k[b + 1]);
                Sequence {
                    q_start: q0 as usize,
                    k_start: k0 as usize,
                    seqlen_q: (q1 - q0) as usize,
                    seqlen_k: (k1 - k0) as usize,
                }
            })
            .collect(),
    }
}

/// The elements of head `head` in token row `row` of a contiguous `[rows, heads, head_dim]` tensor.
fn head_row(row: usize, head: usize, heads: usize, head_dim: usize) -> Range<usize> {
    let start = (row * heads + head) * head_dim;
    start..start + head_dim
}

/// The scaled, optionally capped score of one query row against one key row.
fn score(p: &AttentionProblem, q_row: &[f64], k_row: &[f64]) -> f64 {
    let dot: f64 = q_row.iter().zip(k_row).map(|(&a, &b)| a * b).sum();
    let s = p.scale * dot;
    if p.softcap > 0.0 {
        p.softcap * (s / p.softcap).tanh()
    } else {
        s
    }
}

/// Checks `batch + 1` varlen offsets (start 0, nondecreasing) and returns the total row count.
fn check_offsets(offsets: &[i32], name: &str, batch: usize) -> Result<usize, String> {
    if offsets.len() != batch.saturating_add(1) {
        return Err(format!(
            "{name} has {} entries; batch + 1 = {} expected",
            offsets.len(),
            batch.saturating_add(1)
        ));
    }
    if offsets[0] != 0 {
        return Err(format!("{name}[0] is {}; it must be 0", offsets[0]));
    }
    for (b, pair) in offsets.windows(2).enumerate() {
        if pair[1] < pair[0] {
            return Err(format!(
                "{name}[{}] = {} is less than {name}[{b}] = {}; offsets must be nondecreasing",
                b + 1,
                pair[1],
                pair[0]
            ));
        }
    }
    Ok(offsets[batch] as usize)
}

/// The product of `factors`, or an error naming `what` if it overflows usize.
fn checked_product(factors: &[usize], what: &str) -> Result<usize, String> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| format!("{what} ({factors:?}) overflows usize"))
}

/// A feature map of linear attention, in f64 (the kernels' definitions, csrc/cuattn.h).
#[derive(Clone, Debug)]
pub enum LinearFeature {
    /// `elu(x) + 1`.
    Elu1,
    /// `max(x, 0)`.
    Relu,
    /// FAVOR+: `exp(W x' - |x'|^2 / 2) / sqrt(m)`, `x' = x d^(-1/4)`, W `[m, d]` row-major.
    Favor {
        /// W, row-major `[features, head_dim]`.
        projection: Vec<f64>,
        /// The number of random features `m`.
        features: usize,
    },
}

impl LinearFeature {
    /// phi(x) of one row.
    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        match self {
            LinearFeature::Elu1 => x
                .iter()
                .map(|&e| if e > 0.0 { e + 1.0 } else { e.exp() })
                .collect(),
            LinearFeature::Relu => x.iter().map(|&e| e.max(0.0)).collect(),
            LinearFeature::Favor {
                projection,
                features,
            } => {
                let d = x.len();
                let scale = (d as f64).powf(-0.25);
                let xs: Vec<f64> = x.iter().map(|&e| e * scale).collect();
                let half_norm = xs.iter().map(|e| e * e).sum::<f64>() / 2.0;
                (0..*features)
                    .map(|f| {
                        let w = &projection[f * d..(f + 1) * d];
                        let dot: f64 = w.iter().zip(&xs).map(|(a, b)| a * b).sum();
                        (dot - half_norm).exp() / (*features as f64).sqrt()
                    })
                    .collect()
            }
        }
    }
}

/// Linear attention in f64 by its definition: `out_i = sum_j (phi(q_i) . phi(k_j)) v_j /
/// (sum_j phi(q_i) . phi(k_j) + eps)` over the keys query i sees (all, or causal: `j <= i +
/// seqlen_k - seqlen_q`), zeros where the sum is 0. q `[total_q, heads, d]` and k `[total_k,
/// kv_heads, d]`, v `[total_k, kv_heads, dv]` packed per sequence by `seqlens` ((seqlen_q,
/// seqlen_k) each); out `[total_q, heads, dv]`.
#[allow(clippy::too_many_arguments)]
pub fn linear_attention(
    seqlens: &[(usize, usize)],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    value_dim: usize,
    feature: &LinearFeature,
    causal: bool,
    eps: f64,
    q: &[f64],
    k: &[f64],
    v: &[f64],
) -> Vec<f64> {
    let group = heads / kv_heads;
    let total_q: usize = seqlens.iter().map(|s| s.0).sum();
    let mut out = vec![0.0; total_q * heads * value_dim];
    let (mut q0, mut k0) = (0, 0);
    for &(sq, sk) in seqlens {
        for h in 0..heads {
            let kvh = h / group;
            let phi_k: Vec<Vec<f64>> = (0..sk)
                .map(|j| {
                    let at = ((k0 + j) * kv_heads + kvh) * head_dim;
                    feature.apply(&k[at..at + head_dim])
                })
                .collect();
            for i in 0..sq {
                let at = ((q0 + i) * heads + h) * head_dim;
                let phi_q = feature.apply(&q[at..at + head_dim]);
                let last = if causal {
                    (i + sk) as i64 - sq as i64
                } else {
                    sk as i64 - 1
                };
                let mut num = vec![0.0; value_dim];
                let mut den = 0.0;
                for (j, pk) in phi_k.iter().enumerate().take((last + 1).max(0) as usize) {
                    let w: f64 = phi_q.iter().zip(pk).map(|(a, b)| a * b).sum();
                    den += w;
                    let vat = ((k0 + j) * kv_heads + kvh) * value_dim;
                    for (n, &x) in num.iter_mut().zip(&v[vat..vat + value_dim]) {
                        *n += w * x;
                    }
                }
                let o = &mut out[((q0 + i) * heads + h) * value_dim..][..value_dim];
                if den != 0.0 {
                    for (o, n) in o.iter_mut().zip(&num) {
                        *o = n / (den + eps);
                    }
                }
            }
        }
        q0 += sq;
        k0 += sk;
    }
    out
}

/// A Linformer projection (E or F) in f64: `[k_proj, seqlen_k]` shared by every KV head, or
/// `[kv_heads, k_proj, seqlen_k]` (`per_kv_head`), row-major.
#[derive(Clone, Copy, Debug)]
pub struct LowrankProjection<'a> {
    /// The projection's entries, row-major.
    pub values: &'a [f64],
    /// Rows of the projection: the projected sequence length.
    pub k_proj: usize,
    /// Whether each KV head has its own projection (`[kv_heads, k_proj, seqlen_k]`).
    pub per_kv_head: bool,
}

/// The projection of keys or values `x` `[batch, seqlen_k, kv_heads, head_dim]` along the
/// sequence: `out[b, p, h, :] = sum_j P_h[p, j] x[b, j, h, :]`, out `[batch, k_proj, kv_heads,
/// head_dim]`.
///
/// # Panics
///
/// When `x` or the projection do not hold the elements their shapes say.
pub fn lowrank_project(
    x: &[f64],
    (batch, seqlen_k, kv_heads, head_dim): (usize, usize, usize, usize),
    p: &LowrankProjection<'_>,
) -> Vec<f64> {
    let matrices = if p.per_kv_head { kv_heads } else { 1 };
    assert_eq!(x.len(), batch * seqlen_k * kv_heads * head_dim, "x");
    assert_eq!(p.values.len(), matrices * p.k_proj * seqlen_k, "projection");
    let mut out = vec![0.0; batch * p.k_proj * kv_heads * head_dim];
    for b in 0..batch {
        for h in 0..kv_heads {
            let matrix = &p.values[if p.per_kv_head { h } else { 0 } * p.k_proj * seqlen_k..];
            for row in 0..p.k_proj {
                let o = &mut out[((b * p.k_proj + row) * kv_heads + h) * head_dim..][..head_dim];
                for j in 0..seqlen_k {
                    let w = matrix[row * seqlen_k + j];
                    let xs = &x[((b * seqlen_k + j) * kv_heads + h) * head_dim..][..head_dim];
                    for (o, &x) in o.iter_mut().zip(xs) {
                        *o += w * x;
                    }
                }
            }
        }
    }
    out
}

/// Low-rank (Linformer) attention by its definition: K' = E k and V' = F v per sequence and KV
/// head ([`lowrank_project`]), then [`attention`] of q over the k_proj projected keys with `p`'s
/// scale and softcap. `p` describes q, k and v (dense, `p.seqlen_k` keys); out is shaped like q
/// and lse `[batch, heads, seqlen_q]`.
///
/// # Panics
///
/// When `p` has a mask (causal or a window: Linformer has none) or a varlen batch, or when E and
/// F differ in k_proj, and as [`attention`] and [`lowrank_project`].
pub fn lowrank_attention(
    p: &AttentionProblem,
    e: &LowrankProjection<'_>,
    f: &LowrankProjection<'_>,
    q: &[f64],
    k: &[f64],
    v: &[f64],
) -> AttentionReference {
    assert!(
        p.window_left == -1 && p.window_right == -1 && p.varlen.is_none(),
        "reference::lowrank_attention: dense and unmasked only"
    );
    assert_eq!(
        e.k_proj, f.k_proj,
        "reference::lowrank_attention: e and f k_proj"
    );
    let shape = (p.batch, p.seqlen_k, p.kv_heads, p.head_dim);
    let projected = AttentionProblem {
        seqlen_k: e.k_proj,
        ..p.clone()
    };
    attention(
        &projected,
        q,
        &lowrank_project(k, shape, e),
        &lowrank_project(v, shape, f),
    )
}
