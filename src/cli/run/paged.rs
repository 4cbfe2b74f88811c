//! `cuattn run attention --paged P`: the same problem as the dense run, computed the way an
//! engine computes it over its paged KV cache. Each sequence's keys and values go into a
//! [`PagedKvCache`] through the append kernel in uneven steps (a free list shuffled with a fixed
//! seed, so a sequence's consecutive pages are seldom adjacent), the last step appending the
//! query tokens' own keys; then the paged attention kernel runs for those queries, which attend
//! bottom-right aligned as in the dense run. The outputs are written in the dense run's layouts,
//! so the two runs on the same files give the same numbers up to rounding.

use std::fmt::Write as _;

use clap::ValueEnum;

use super::Outputs;
use crate::attention::{
    paged_attention_into, AttentionOptions, AttentionParams, PagedAttentionPlan, SplitKv,
};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::kv_cache::{KvCacheConfig, KvLayout, PagedKvCache, SeqId, StepPlan};
use crate::npy::NpyArray;
use crate::tensor::{AttentionElement, Tensor};

/// The page layout of the cache `--paged` fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PageLayout {
    /// [pages, P, kv_heads, head_dim]: a token's heads together (FlashInfer's and vLLM's)
    Nhd,
    /// [pages, kv_heads, P, head_dim]: a head's tokens together
    Hnd,
}

impl PageLayout {
    fn kv_layout(self) -> KvLayout {
        match self {
            PageLayout::Nhd => KvLayout::Nhd,
            PageLayout::Hnd => KvLayout::Hnd,
        }
    }

    fn name(self) -> &'static str {
        match self {
            PageLayout::Nhd => "nhd",
            PageLayout::Hnd => "hnd",
        }
    }
}

/// The largest `--paged` page size: far above the pages engines use (tens to hundreds of
/// tokens), and small enough that a pool of mostly empty pages stays small.
pub const MAX_PAGE_SIZE: usize = 4096;

/// The seed of the cache's free-list shuffle: fixed, so that runs repeat exactly.
const PAGE_SHUFFLE_SEED: u64 = 0x5eed;

/// The `--paged` settings of a run, checked.
pub struct PagedSettings {
    /// `--paged P`: tokens a page.
    pub page_size: usize,
    /// `--page-layout`.
    pub layout: PageLayout,
    /// `--chunks`, when given (dense input only).
    pub chunks: Option<Vec<usize>>,
    /// `--split-kv`.
    pub split: SplitKv,
}

impl PagedSettings {
    /// Checks `--paged P` and the flags that go with it.
    pub fn new(
        page_size: usize,
        layout: Option<PageLayout>,
        chunks: Option<Vec<usize>>,
        split: Option<SplitKv>,
    ) -> Result<PagedSettings> {
        if page_size == 0 || page_size > MAX_PAGE_SIZE {
            return Err(Error::invalid(
                "paged",
                format!("--paged {page_size}: the page size must be in 1..={MAX_PAGE_SIZE} tokens"),
            ));
        }
        if let Some(chunks) = &chunks {
            if chunks.is_empty() {
                return Err(Error::invalid(
                    "chunks",
                    "--chunks without sizes: expected N1,N2,... summing to seqlen_k",
                ));
            }
            if let Some(i) = chunks.iter().position(|&n| n == 0) {
                return Err(Error::invalid(
                    "chunks",
                    format!(
                        "--chunks {}: chunk {} is 0 tokens; every chunk must be at least 1",
                        join(chunks),
                        i + 1
                    ),
                ));
            }
        }
        Ok(PagedSettings {
            page_size,
            layout: layout.unwrap_or(PageLayout::Nhd),
            chunks,
            split: split.unwrap_or_default(),
        })
    }
}

/// `1,2,3`: sizes as `--chunks` takes them.
fn join(sizes: &[usize]) -> String {
    let parts: Vec<String> = sizes.iter().map(|n| n.to_string()).collect();
    parts.join(",")
}

/// Where one sequence's rows lie in the packed q and k, and how its keys before the queries are
/// appended.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sequence {
    q_start: usize,
    q_len: usize,
    k_start: usize,
    k_len: usize,
    /// The append steps of the keys before the last `q_len` (each at least 1 token); the
    /// query step, which appends the last `q_len` keys, follows them.
    context_steps: Vec<usize>,
}

/// The append steps of a sequence's `seqlen_k - seqlen_q` keys before its queries.
///
/// With `--chunks N1,...,Nm` (summing to seqlen_k, Nm >= seqlen_q): N1 ... N(m-1), then
/// Nm - seqlen_q when that is not 0; the query step appends the last seqlen_q. Without: c =
/// seqlen_k - seqlen_q keys in ceil(c/2), ceil(c/3) and the rest, steps of 0 left out.
fn context_steps(chunks: Option<&[usize]>, seqlen_q: usize, seqlen_k: usize) -> Result<Vec<usize>> {
    let Some(chunks) = chunks else {
        let c = seqlen_k - seqlen_q;
        let first = c.div_ceil(2);
        let second = c.div_ceil(3).min(c - first);
        let steps = [first, second, c - first - second];
        return Ok(steps.into_iter().filter(|&n| n > 0).collect());
    };
    let sum: usize = chunks.iter().sum();
    if sum != seqlen_k {
        return Err(Error::invalid(
            "chunks",
            format!(
                "--chunks {} sums to {sum}, but seqlen_k is {seqlen_k}: the chunks are the \
                 append steps of every key",
                join(chunks)
            ),
        ));
    }
    let (&last, before) = chunks.split_last().expect("checked non-empty");
    if last < seqlen_q {
        return Err(Error::invalid(
            "chunks",
            format!(
                "--chunks {}: the last chunk, {last}, is smaller than seqlen_q {seqlen_q}: the \
                 queries are the last seqlen_q tokens of the last chunk",
                join(chunks)
            ),
        ));
    }
    let mut steps = before.to_vec();
    if last > seqlen_q {
        steps.push(last - seqlen_q);
    }
    Ok(steps)
}

/// The sequences of a dense batch (q `[batch, seqlen_q, heads, head_dim]`, k and v `[batch,
/// seqlen_k, kv_heads, head_dim]`), checked as the dense run checks them plus `--paged`'s rules.
fn dense_sequences<T: AttentionElement>(
    q: &NpyArray,
    k: &NpyArray,
    opts: &AttentionOptions,
    chunks: Option<&[usize]>,
) -> Result<Vec<Sequence>> {
    // The dense run's checks: ranks, head dims, batch, heads and kv_heads, lengths, options.
    AttentionParams::dense_shape::<T>(&q.shape, &k.shape, opts)?;
    let (batch, seqlen_q, seqlen_k) = (q.shape[0], q.shape[1], k.shape[1]);
    if seqlen_q > seqlen_k {
        return Err(Error::invalid(
            "q",
            format!(
                "seqlen_q {seqlen_q} > seqlen_k {seqlen_k}: with --paged the queries are a \
                 sequence's last seqlen_q cached tokens, so seqlen_q must be at most seqlen_k"
            ),
        ));
    }
    let steps = context_steps(chunks, seqlen_q, seqlen_k)?;
    Ok((0..batch)
        .map(|b| Sequence {
            q_start: b * seqlen_q,
            q_len: seqlen_q,
            k_start: b * seqlen_k,
            k_len: seqlen_k,
            context_steps: steps.clone(),
        })
        .collect())
}

/// The sequences of a varlen batch (q `[total_q, heads, head_dim]`, k and v `[total_k, kv_heads,
/// head_dim]`, offsets `cu_seqlens_q`/`cu_seqlens_k`), each split by the default rule.
fn varlen_sequences<T: AttentionElement>(
    device: &Device,
    q: &NpyArray,
    k: &NpyArray,
    opts: &AttentionOptions,
    (cu_q, cu_k): &(Vec<i32>, Vec<i32>),
    chunks: Option<&[usize]>,
) -> Result<Vec<Sequence>> {
    if chunks.is_some() {
        return Err(Error::invalid(
            "chunks",
            "--chunks sets the steps of a dense batch, whose sequences share one seqlen_k; with \
             --cu-seqlens-q/--cu-seqlens-k each sequence is split by the default rule (leave \
             --chunks out)",
        ));
    }
    let batch = super::varlen_batch::<T>(device, q, k, opts, cu_q, cu_k)?;
    let mut sequences = Vec::with_capacity(batch.batch());
    let (mut q_start, mut k_start) = (0, 0);
    for (b, &(q_len, k_len)) in batch.seqlens().unwrap_or_default().iter().enumerate() {
        if q_len > k_len {
            return Err(Error::invalid(
                "cu_seqlens_q",
                format!(
                    "sequence {b} has {q_len} queries and {k_len} keys: with --paged the \
                     queries are a sequence's last cached tokens, so each sequence needs at \
                     least as many keys as queries"
                ),
            ));
        }
        sequences.push(Sequence {
            q_start,
            q_len,
            k_start,
            k_len,
            context_steps: context_steps(None, q_len, k_len)?,
        });
        q_start += q_len;
        k_start += k_len;
    }
    Ok(sequences)
}

/// Runs `--paged`: fills a cache with k and v step by step, runs paged attention for q, and
/// returns the outputs in the dense run's layouts and a description of what ran.
pub fn execute<T: AttentionElement>(
    device: &Device,
    settings: &PagedSettings,
    opts: &AttentionOptions,
    (q, k, v): (&NpyArray, &NpyArray, &NpyArray),
    cu_seqlens: Option<&(Vec<i32>, Vec<i32>)>,
) -> Result<(Outputs, String)> {
    let chunks = settings.chunks.as_deref();
    let sequences = match cu_seqlens {
        None => dense_sequences::<T>(q, k, opts, chunks)?,
        Some(cu) => varlen_sequences::<T>(device, q, k, opts, cu, chunks)?,
    };
    if v.shape != k.shape {
        return Err(Error::invalid(
            "v",
            format!("shape {:?}: must equal k's {:?}", v.shape, k.shape),
        ));
    }
    let rank = q.shape.len();
    let (heads, head_dim) = (q.shape[rank - 2], q.shape[rank - 1]);
    let kv_heads = k.shape[k.shape.len() - 2];
    let total_q: usize = sequences.iter().map(|s| s.q_len).sum();

    let FilledCache {
        cache,
        num_pages,
        query_step: step,
    } = fill_cache::<T>(device, settings, &sequences, kv_heads, head_dim, k, v)?;
    let mut description = describe(settings, &sequences, num_pages);
    if total_q == 0 {
        // Nothing to attend: the outputs are empty, as the dense run's are.
        let lse = opts
            .return_lse
            .then(|| (lse_shape(q, cu_seqlens), Vec::new()));
        return Ok((
            Outputs {
                out: Vec::new(),
                lse,
                block_matrix: None,
            },
            description,
        ));
    }

    let q_data: Vec<T> = q.data.iter().map(|&x| T::from_f64(f64::from(x))).collect();
    let q_tensor = Tensor::from_host(device, &q_data, &[total_q, heads, head_dim])?;
    let mut out = Tensor::<T>::zeros(device, &[total_q, heads, head_dim])?;
    let mut lse = match opts.return_lse {
        true => Some(Tensor::<f32>::zeros(device, &[total_q, heads])?),
        false => None,
    };
    let mut plan = PagedAttentionPlan::new(device, settings.split)?;
    paged_attention_into(
        &q_tensor,
        &cache,
        0,
        &step,
        &mut out,
        lse.as_mut(),
        opts,
        &mut plan,
    )?;
    let (_, info) = plan
        .last_planned()
        .ok_or_else(|| Error::Internal("paged attention ran without a plan".to_string()))?;
    let _ = write!(
        description,
        ", split-KV {}: {}",
        split_name(settings.split),
        match info.num_splits {
            0 | 1 => "unsplit".to_string(),
            n => format!("{n} splits of {} keys", info.split_tokens),
        }
    );

    // f16 and bf16 widen to f32 exactly.
    let out = out
        .to_host()?
        .into_iter()
        .map(|x| x.to_f64() as f32)
        .collect();
    let lse = match lse {
        Some(lse) => {
            let rows = lse.to_host()?;
            Some((
                lse_shape(q, cu_seqlens),
                lse_to_file_layout(&rows, &sequences, heads, cu_seqlens.is_some()),
            ))
        }
        None => None,
    };
    Ok((
        Outputs {
            out,
            lse,
            block_matrix: None,
        },
        description,
    ))
}

/// A cache filled with every key but the queries' in its context steps, and the query step
/// (reserved and appended, not yet attended).
struct FilledCache {
    cache: PagedKvCache,
    num_pages: usize,
    query_step: StepPlan,
}

/// Makes the cache (one layer, twice the pages the sequences need, free list shuffled) and
/// appends each sequence's keys and values: step j appends the j-th context step of every
/// sequence that has one, packed in sequence order; the last step appends every sequence's
/// last q_len keys, the query tokens'.
fn fill_cache<T: AttentionElement>(
    device: &Device,
    settings: &PagedSettings,
    sequences: &[Sequence],
    kv_heads: usize,
    head_dim: usize,
    k: &NpyArray,
    v: &NpyArray,
) -> Result<FilledCache> {
    let page_size = settings.page_size;
    let needed: usize = sequences.iter().map(|s| s.k_len.div_ceil(page_size)).sum();
    let num_pages = 2 * needed.max(1);
    if num_pages
        .checked_mul(page_size)
        .is_none_or(|slots| slots > i32::MAX as usize)
    {
        return Err(Error::invalid(
            "paged",
            format!(
                "--paged {page_size}: a pool of {num_pages} pages (twice the {needed} the \
                 sequences fill) of {page_size} tokens exceeds the int32 slot range"
            ),
        ));
    }
    let config = KvCacheConfig {
        num_layers: 1,
        kv_heads,
        head_dim,
        page_size,
        num_pages,
        dtype: T::DTYPE,
        layout: settings.layout.kv_layout(),
    };
    let mut cache = PagedKvCache::new(device, config)?;
    cache.shuffle_free_pages(PAGE_SHUFFLE_SEED);
    let ids: Vec<SeqId> = sequences.iter().map(|_| cache.add_sequence()).collect();

    let row = kv_heads * head_dim;
    let round =
        |a: &NpyArray| -> Vec<T> { a.data.iter().map(|&x| T::from_f64(f64::from(x))).collect() };
    let (k_all, v_all) = (round(k), round(v));
    let mut appended = vec![0usize; sequences.len()];
    // Appends `tokens(b)` more keys of each sequence b (those with a count) as one step.
    let mut step = |cache: &mut PagedKvCache, tokens: &dyn Fn(usize) -> Option<usize>| {
        let mut requests = Vec::new();
        let (mut k_new, mut v_new) = (Vec::new(), Vec::new());
        for (b, s) in sequences.iter().enumerate() {
            let Some(n) = tokens(b) else { continue };
            let from = (s.k_start + appended[b]) * row;
            let to = from + n * row;
            k_new.extend_from_slice(&k_all[from..to]);
            v_new.extend_from_slice(&v_all[from..to]);
            appended[b] += n;
            requests.push((ids[b], n));
        }
        let plan = cache.reserve(&requests)?;
        let n = plan.num_tokens();
        if n > 0 {
            let k_new = Tensor::from_host(device, &k_new, &[n, kv_heads, head_dim])?;
            let v_new = Tensor::from_host(device, &v_new, &[n, kv_heads, head_dim])?;
            cache.append(0, &plan, &k_new, &v_new)?;
        }
        Ok::<StepPlan, Error>(plan)
    };
    let context_steps = sequences
        .iter()
        .map(|s| s.context_steps.len())
        .max()
        .unwrap_or(0);
    for j in 0..context_steps {
        step(&mut cache, &|b| sequences[b].context_steps.get(j).copied())?;
    }
    let query_step = step(&mut cache, &|b| Some(sequences[b].q_len))?;
    debug_assert!(sequences
        .iter()
        .zip(query_step.seq_lens())
        .all(|(s, &len)| len == s.k_len));
    Ok(FilledCache {
        cache,
        num_pages,
        query_step,
    })
}

fn split_name(split: SplitKv) -> String {
    match split {
        SplitKv::Auto => "auto".to_string(),
        SplitKv::Off => "off".to_string(),
        SplitKv::Splits(n) => n.to_string(),
    }
}

/// `, pages of 16 tokens (nhd, 14 in the pool, shuffled), steps 23+15+7 then 5 queries`.
fn describe(settings: &PagedSettings, sequences: &[Sequence], num_pages: usize) -> String {
    let steps = |s: &Sequence| {
        let mut parts: Vec<String> = s.context_steps.iter().map(|n| n.to_string()).collect();
        if parts.is_empty() {
            parts.push("none".to_string());
        }
        let noun = if s.q_len == 1 { "query" } else { "queries" };
        format!("{} then {} {noun}", parts.join("+"), s.q_len)
    };
    let mut s = format!(
        ", {}-token pages ({}, {num_pages} in the pool, shuffled)",
        settings.page_size,
        settings.layout.name()
    );
    let first = sequences.first().map(steps).unwrap_or_default();
    if sequences.iter().all(|seq| steps(seq) == first) {
        let _ = write!(s, ", steps {first}");
    } else {
        let all: Vec<String> = sequences.iter().map(steps).collect();
        let _ = write!(s, ", steps per sequence [{}]", all.join("; "));
    }
    s
}

/// The LSE file's shape, the dense run's: `[batch, heads, seqlen_q]`, varlen `[heads, total_q]`.
fn lse_shape(q: &NpyArray, cu_seqlens: Option<&(Vec<i32>, Vec<i32>)>) -> Vec<usize> {
    match cu_seqlens {
        None => vec![q.shape[0], q.shape[2], q.shape[1]],
        Some(_) => vec![q.shape[1], q.shape[0]],
    }
}

/// The paged kernel's LSE, `[total_q, heads]`, in the dense run's layout: `[batch, heads,
/// seqlen_q]` (each sequence's block transposed), or `[heads, total_q]` for a varlen batch.
fn lse_to_file_layout(
    rows: &[f32],
    sequences: &[Sequence],
    heads: usize,
    varlen: bool,
) -> Vec<f32> {
    let total_q: usize = sequences.iter().map(|s| s.q_len).sum();
    let mut file = Vec::with_capacity(rows.len());
    if varlen {
        for h in 0..heads {
            file.extend((0..total_q).map(|t| rows[t * heads + h]));
        }
    } else {
        for s in sequences {
            for h in 0..heads {
                file.extend((0..s.q_len).map(|i| rows[(s.q_start + i) * heads + h]));
            }
        }
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_steps_are_uneven_and_cover_the_context() {
        assert_eq!(context_steps(None, 5, 50).unwrap(), [23, 15, 7]);
        assert_eq!(context_steps(None, 1, 50).unwrap(), [25, 17, 7]);
        assert_eq!(context_steps(None, 20, 50).unwrap(), [15, 10, 5]);
        for (q, k) in [(1, 1), (1, 2), (1, 3), (2, 7), (3, 4), (0, 0), (0, 1)] {
            let steps = context_steps(None, q, k).unwrap();
            assert_eq!(steps.iter().sum::<usize>(), k - q, "{q} {k}");
            assert!(steps.iter().all(|&n| n > 0), "{q} {k}: {steps:?}");
        }
        assert_eq!(context_steps(None, 1, 2).unwrap(), [1]);
        assert!(context_steps(None, 4, 4).unwrap().is_empty());
    }

    #[test]
    fn chunks_end_with_the_query_step() {
        assert_eq!(
            context_steps(Some(&[10, 20, 20]), 5, 50).unwrap(),
            [10, 20, 15]
        );
        assert_eq!(context_steps(Some(&[45, 5]), 5, 50).unwrap(), [45]);
        assert!(context_steps(Some(&[50]), 50, 50).unwrap().is_empty());
        let e = context_steps(Some(&[10, 20]), 5, 50)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`chunks`") && e.contains("30") && e.contains("50"),
            "{e}"
        );
        let e = context_steps(Some(&[46, 4]), 5, 50)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`chunks`") && e.contains("smaller"), "{e}");
    }

    #[test]
    fn lse_is_transposed_per_sequence() {
        let seq = |q_start, q_len| Sequence {
            q_start,
            q_len,
            k_start: 0,
            k_len: q_len,
            context_steps: Vec::new(),
        };
        // Rows [t, h] = 10 t + h, two heads.
        let rows: Vec<f32> = (0..3)
            .flat_map(|t| [10.0 * t as f32, 10.0 * t as f32 + 1.0])
            .collect();
        let dense = lse_to_file_layout(&rows, &[seq(0, 1), seq(1, 2)], 2, false);
        assert_eq!(dense, [0.0, 1.0, 10.0, 20.0, 11.0, 21.0]);
        let varlen = lse_to_file_layout(&rows, &[seq(0, 1), seq(1, 2)], 2, true);
        assert_eq!(varlen, [0.0, 10.0, 20.0, 1.0, 11.0, 21.0]);
    }
}
