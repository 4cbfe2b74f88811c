//! Paged attention (decode, speculative verification, chunked prefill), split-KV, merge_states and
//! cascade attention against the f64 reference on the contiguous K/V, on every device present:
//! pages from a shuffled free list of sizes 1, 3, 16 and 64, both layouts, ragged batches, GQA
//! group sizes 1, 4, 5, 8 and MQA, masks and softcap, outputs poisoned before each run.

mod common;

use cuattn::reference::{self, AttentionProblem};
use cuattn::{
    cascade_attention_into, merge_states, merge_states_in_place, paged_attention,
    paged_attention_into, paged_attention_view_into, AttentionOptions, CascadePlan, DType, Device,
    Element, KvCacheConfig, KvLayout, PagedAttentionPlan, PagedKvCache, PagedKvView, PagedQueries,
    SharedPrefix, SplitKv, Tensor,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// One problem: sequences of (new tokens, cached tokens including them) over pages of a size.
#[derive(Clone, Debug)]
struct Case {
    seqs: Vec<(usize, usize)>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    page_size: usize,
    layout: KvLayout,
    causal: bool,
    window: Option<(i32, i32)>,
    softcap: Option<f32>,
    split: SplitKv,
    seed: u64,
}

impl Case {
    fn decode(seqs: &[(usize, usize)], heads: usize, kv_heads: usize) -> Case {
        Case {
            seqs: seqs.to_vec(),
            heads,
            kv_heads,
            head_dim: 64,
            page_size: 16,
            layout: KvLayout::Nhd,
            causal: true,
            window: None,
            softcap: None,
            split: SplitKv::Auto,
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
}

fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::BF16 {
        2e-2
    } else {
        1e-2
    }
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// The host side of a case: contiguous q, k and v per sequence, and the pools and tables that
/// scatter k and v over shuffled pages (unused page slots hold NaN, so reading one shows).
struct Host {
    q: Vec<f64>,      // [total_q, heads, head_dim]
    k: Vec<Vec<f64>>, // per sequence [seq_len, kv_heads, head_dim]
    v: Vec<Vec<f64>>,
    k_pool: Vec<f64>, // the layout's [num_pages, ...]
    v_pool: Vec<f64>,
    block_table: Vec<i32>, // [batch, max_pages]
    max_pages: usize,
    num_pages: usize,
}

fn build_host(c: &Case) -> Host {
    let mut rng = StdRng::seed_from_u64(c.seed);
    let total_q: usize = c.seqs.iter().map(|s| s.0).sum();
    let q = random(&mut rng, total_q * c.heads * c.head_dim);
    let row = c.kv_heads * c.head_dim;
    let k: Vec<Vec<f64>> = c.seqs.iter().map(|s| random(&mut rng, s.1 * row)).collect();
    let v: Vec<Vec<f64>> = c.seqs.iter().map(|s| random(&mut rng, s.1 * row)).collect();
    let pages_of: Vec<usize> = c.seqs.iter().map(|s| s.1.div_ceil(c.page_size)).collect();
    let max_pages = pages_of.iter().copied().max().unwrap_or(0).max(1);
    // A few pages no sequence uses, and every page id shuffled.
    let num_pages = pages_of.iter().sum::<usize>() + 3;
    let mut ids: Vec<usize> = (0..num_pages).collect();
    ids.shuffle(&mut rng);
    let page_elems = c.page_size * row;
    let mut k_pool = vec![f64::NAN; num_pages * page_elems];
    let mut v_pool = vec![f64::NAN; num_pages * page_elems];
    let [page_stride, slot_stride, head_stride] =
        c.layout.strides(c.page_size, c.kv_heads, c.head_dim);
    let mut block_table = vec![-1; c.seqs.len() * max_pages];
    let mut next = 0;
    for (b, &(_, seq_len)) in c.seqs.iter().enumerate() {
        for i in 0..pages_of[b] {
            block_table[b * max_pages + i] = ids[next] as i32;
            next += 1;
        }
        for t in 0..seq_len {
            let page = block_table[b * max_pages + t / c.page_size] as usize;
            for h in 0..c.kv_heads {
                for d in 0..c.head_dim {
                    let at =
                        page * page_stride + (t % c.page_size) * slot_stride + h * head_stride + d;
                    k_pool[at] = k[b][(t * c.kv_heads + h) * c.head_dim + d];
                    v_pool[at] = v[b][(t * c.kv_heads + h) * c.head_dim + d];
                }
            }
        }
    }
    Host {
        q,
        k,
        v,
        k_pool,
        v_pool,
        block_table,
        max_pages,
        num_pages,
    }
}

/// The reference of every sequence, packed like the kernel's output: out [total_q, heads,
/// head_dim] and LSE [total_q, heads].
fn reference_of(c: &Case, h: &Host, q: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let opts = c.opts();
    let (left, right) = opts.effective_window();
    let mut out = Vec::new();
    let mut lse = Vec::new();
    let mut q0 = 0;
    for (b, &(q_len, seq_len)) in c.seqs.iter().enumerate() {
        let mut p = AttentionProblem::new(1, q_len, seq_len, c.heads, c.kv_heads, c.head_dim);
        p.softcap = c.softcap.unwrap_or(0.0) as f64;
        p.window_left = left as i64;
        p.window_right = right as i64;
        let rows = &q[q0 * c.heads * c.head_dim..(q0 + q_len) * c.heads * c.head_dim];
        let r = reference::attention(&p, rows, &h.k[b], &h.v[b]);
        out.extend_from_slice(&r.out);
        // [1, heads, q_len] -> [q_len, heads]
        for t in 0..q_len {
            for head in 0..c.heads {
                lse.push(r.lse[head * q_len + t]);
            }
        }
        q0 += q_len;
    }
    (out, lse)
}

fn to_t<T: Element>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::from_f64(v)).collect()
}

fn rounded<T: Element>(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| T::from_f64(v).to_f64()).collect()
}

/// Device copies of a case's pools and tables, and the view over them.
struct DeviceCase<T: Element> {
    k_pool: Tensor<T>,
    v_pool: Tensor<T>,
    block_table: Tensor<i32>,
    seq_lens: Tensor<i32>,
    cu_seqlens_q: Tensor<i32>,
}

impl<T: Element> DeviceCase<T> {
    fn new(device: &Device, c: &Case, h: &Host) -> DeviceCase<T> {
        let mut cu = vec![0i32];
        for s in &c.seqs {
            cu.push(cu.last().unwrap() + s.0 as i32);
        }
        let lens: Vec<i32> = c.seqs.iter().map(|s| s.1 as i32).collect();
        DeviceCase {
            k_pool: Tensor::from_host(device, &to_t::<T>(&h.k_pool), &[h.k_pool.len()]).unwrap(),
            v_pool: Tensor::from_host(device, &to_t::<T>(&h.v_pool), &[h.v_pool.len()]).unwrap(),
            block_table: Tensor::from_host(device, &h.block_table, &[h.block_table.len()]).unwrap(),
            seq_lens: Tensor::from_host(device, &lens, &[lens.len().max(1)]).unwrap(),
            cu_seqlens_q: Tensor::from_host(device, &cu, &[cu.len()]).unwrap(),
        }
    }

    fn view(&self, c: &Case, h: &Host) -> PagedKvView<'static> {
        let [page_stride, slot_stride, head_stride] =
            c.layout.strides(c.page_size, c.kv_heads, c.head_dim);
        let raw = cuattn::ffi::cuattn_paged_kv_view {
            k_pages: self.k_pool.raw_address(),
            v_pages: self.v_pool.raw_address(),
            k_page_stride: page_stride as i64,
            k_slot_stride: slot_stride as i64,
            k_head_stride: head_stride as i64,
            v_page_stride: page_stride as i64,
            v_slot_stride: slot_stride as i64,
            v_head_stride: head_stride as i64,
            block_table: self.block_table.raw_address().cast_const().cast(),
            block_table_stride: h.max_pages as i64,
            seq_lens: self.seq_lens.raw_address().cast_const().cast(),
            batch: c.seqs.len() as i32,
            max_pages_per_seq: h.max_pages as i32,
            num_pages: h.num_pages as i32,
            page_size: c.page_size as i32,
            kv_heads: c.kv_heads as i32,
            head_dim: c.head_dim as i32,
            layout: match c.layout {
                KvLayout::Nhd => cuattn::ffi::cuattn_kv_layout::CUATTN_KV_LAYOUT_NHD,
                KvLayout::Hnd => cuattn::ffi::cuattn_kv_layout::CUATTN_KV_LAYOUT_HND,
            },
            dtype: T::DTYPE.to_ffi().unwrap(),
        };
        // SAFETY: the pools and tables above are live for the test and hold what the view says.
        unsafe { PagedKvView::from_raw(self.k_pool.device(), raw) }.unwrap()
    }
}

/// Runs a case on `device` with `plan`, returning (out, lse) as f64.
fn run_case<T: Element>(
    device: &Device,
    c: &Case,
    plan: &mut PagedAttentionPlan,
) -> (Vec<f64>, Vec<f64>) {
    let h = build_host(c);
    let d = DeviceCase::<T>::new(device, c, &h);
    let view = d.view(c, &h);
    let total_q: usize = c.seqs.iter().map(|s| s.0).sum();
    let max_q = c.seqs.iter().map(|s| s.0).max().unwrap_or(0);
    let max_len = c.seqs.iter().map(|s| s.1).max().unwrap_or(0);
    let queries = PagedQueries::new(&d.cu_seqlens_q, total_q, max_q, max_len).unwrap();
    let shape = [total_q, c.heads, c.head_dim];
    let q = Tensor::from_host(device, &to_t::<T>(&h.q), &shape).unwrap();
    let mut out = Tensor::full(device, &shape, T::from_f64(f64::NAN)).unwrap();
    let mut lse = Tensor::full(device, &[total_q, c.heads], f32::NAN).unwrap();
    paged_attention_view_into(
        &q,
        &view,
        &queries,
        &mut out,
        Some(&mut lse),
        &c.opts(),
        plan,
    )
    .unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let out: Vec<f64> = out.to_host().unwrap().iter().map(|x| x.to_f64()).collect();
    let lse: Vec<f64> = lse.to_host().unwrap().iter().map(|&x| x as f64).collect();
    (out, lse)
}

/// Runs a case and checks it against the reference (q rounded to T first).
fn check<T: Element>(device: &Device, c: &Case) {
    let mut plan = PagedAttentionPlan::new(device, c.split).unwrap();
    check_with::<T>(device, c, &mut plan);
}

fn check_with<T: Element>(device: &Device, c: &Case, plan: &mut PagedAttentionPlan) {
    let h = build_host(c);
    let (out, lse) = run_case::<T>(device, c, plan);
    let mut hr = h;
    hr.k = hr.k.iter().map(|k| rounded::<T>(k)).collect();
    hr.v = hr.v.iter().map(|v| rounded::<T>(v)).collect();
    let q = rounded::<T>(&hr.q);
    let (want_out, want_lse) = reference_of(c, &hr, &q);
    let tol = tolerance(T::DTYPE);
    let shape = format!(
        "{} {}: seqs {:?} heads {}/{} hd {} page {} {:?} causal {} window {:?} softcap {:?} split {:?}",
        device.kind(),
        T::DTYPE,
        c.seqs,
        c.heads,
        c.kv_heads,
        c.head_dim,
        c.page_size,
        c.layout,
        c.causal,
        c.window,
        c.softcap,
        c.split
    );
    println!("{shape}");
    if let Err(m) = reference::compare(&out, &want_out, tol, tol) {
        panic!("{shape}: out: {m}");
    }
    if let Err(m) = reference::compare(&lse, &want_lse, 1e-3, 1e-3) {
        panic!("{shape}: lse: {m}");
    }
}

#[test]
fn decode_smoke_matches_reference() {
    for device in common::devices() {
        check::<bf16>(&device, &Case::decode(&[(1, 17)], 4, 2));
    }
}

#[test]
fn decode_gqa_groups_and_mqa_match_reference() {
    let lens = [(1, 1), (1, 17), (1, 257), (1, 1025)];
    for device in common::devices() {
        for (heads, kv_heads) in [(2, 2), (8, 2), (10, 2), (16, 2), (32, 1)] {
            check::<bf16>(&device, &Case::decode(&lens, heads, kv_heads));
        }
    }
}

#[test]
fn page_sizes_and_layouts_match_reference() {
    for device in common::devices() {
        for page_size in [1, 3, 16, 64] {
            for layout in [KvLayout::Nhd, KvLayout::Hnd] {
                for q_len in [1, 4] {
                    let c = Case {
                        page_size,
                        layout,
                        seed: page_size as u64,
                        ..Case::decode(&[(q_len, 97), (q_len, 203), (q_len, q_len)], 8, 2)
                    };
                    check::<f16>(&device, &c);
                }
            }
        }
    }
}
