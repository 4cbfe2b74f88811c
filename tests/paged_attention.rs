//! Paged attention (decode, speculative verification, chunked prefill), split-KV, merge_states and
//! cascade attention against the f64 reference on the contiguous K/V, on every device present:
//! pages from a shuffled free list of sizes 1, 3, 16 and 64, both layouts, ragged batches, GQA
//! group sizes 1, 4, 5, 8 and MQA, masks and softcap, outputs poisoned before each run.

mod common;

use common::{random, rounded, to_t, tolerance};

use cuattn::reference::{self, AttentionProblem};
use cuattn::{
    cascade_attention_into, merge_states, merge_states_in_place, paged_attention,
    paged_attention_into, paged_attention_view_into, AttentionElement, AttentionOptions,
    CascadePlan, DType, Device, KvCacheConfig, KvLayout, PagedAttentionPlan, PagedKvCache,
    PagedKvView, PagedQueries, SharedPrefix, SplitKv, Tensor,
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

/// Device copies of a case's pools and tables, and the view over them.
struct DeviceCase<T: AttentionElement> {
    k_pool: Tensor<T>,
    v_pool: Tensor<T>,
    block_table: Tensor<i32>,
    seq_lens: Tensor<i32>,
    cu_seqlens_q: Tensor<i32>,
}

impl<T: AttentionElement> DeviceCase<T> {
    fn new(device: &Device, c: &Case, h: &Host) -> DeviceCase<T> {
        let mut cu = vec![0i32];
        for s in &c.seqs {
            cu.push(cu.last().unwrap() + s.0 as i32);
        }
        let lens: Vec<i32> = c.seqs.iter().map(|s| s.1 as i32).collect();
        // Labeled for the emulator's traffic counters (a no-op on a GPU).
        let put = |x: Tensor<T>, label| x.with_label(label).unwrap();
        let put_i32 = |x: Tensor<i32>, label| x.with_label(label).unwrap();
        DeviceCase {
            k_pool: put(
                Tensor::from_host(device, &to_t::<T>(&h.k_pool), &[h.k_pool.len()]).unwrap(),
                "k_pages",
            ),
            v_pool: put(
                Tensor::from_host(device, &to_t::<T>(&h.v_pool), &[h.v_pool.len()]).unwrap(),
                "v_pages",
            ),
            block_table: put_i32(
                Tensor::from_host(device, &h.block_table, &[h.block_table.len()]).unwrap(),
                "block_table",
            ),
            seq_lens: put_i32(
                Tensor::from_host(device, &lens, &[lens.len().max(1)]).unwrap(),
                "seq_lens",
            ),
            cu_seqlens_q: put_i32(
                Tensor::from_host(device, &cu, &[cu.len()]).unwrap(),
                "cu_seqlens_q",
            ),
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
fn run_case<T: AttentionElement>(
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
    let q = Tensor::from_host(device, &to_t::<T>(&h.q), &shape)
        .and_then(|t| t.with_label("q"))
        .unwrap();
    let mut out = Tensor::full(device, &shape, T::from_f64(f64::NAN))
        .and_then(|t| t.with_label("out"))
        .unwrap();
    let mut lse = Tensor::full(device, &[total_q, c.heads], f32::NAN)
        .and_then(|t| t.with_label("lse"))
        .unwrap();
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
fn check<T: AttentionElement>(device: &Device, c: &Case) {
    let mut plan = PagedAttentionPlan::new(device, c.split).unwrap();
    check_with::<T>(device, c, &mut plan);
}

fn check_with<T: AttentionElement>(device: &Device, c: &Case, plan: &mut PagedAttentionPlan) {
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

#[test]
fn head_dims_and_dtypes_match_reference() {
    for device in common::devices() {
        for head_dim in [40, 64, 96, 128, 192, 256] {
            for q_len in [1, 3] {
                let c = Case {
                    head_dim,
                    seed: head_dim as u64,
                    ..Case::decode(&[(q_len, 70), (q_len, 131)], 8, 2)
                };
                check::<bf16>(&device, &c);
                check::<f16>(&device, &c);
            }
        }
    }
}

#[test]
fn masks_and_softcap_match_reference() {
    let seqs = [(4, 4), (4, 77), (2, 150), (4, 300)];
    for device in common::devices() {
        for (causal, window, softcap) in [
            (false, None, None),
            (true, Some((8, 0)), None),
            (false, Some((32, 3)), None),
            (false, Some((-1, 1)), None),
            (true, None, Some(5.0)),
            (true, Some((100, 0)), Some(30.0)),
        ] {
            for split in [SplitKv::Off, SplitKv::Splits(3)] {
                let c = Case {
                    causal,
                    window,
                    softcap,
                    split,
                    page_size: 7,
                    ..Case::decode(&seqs, 8, 2)
                };
                check::<bf16>(&device, &c);
            }
        }
    }
}

#[test]
fn prefill_over_pages_matches_reference() {
    // More than 8 new tokens: several 64-row blocks, ragged, some sequences with cached tokens
    // before their new ones.
    let seqs = [(37, 100), (64, 64), (9, 300), (130, 131), (17, 17)];
    for device in common::devices() {
        for (heads, kv_heads) in [(4, 4), (8, 2), (5, 1)] {
            for causal in [true, false] {
                let c = Case {
                    causal,
                    page_size: 16,
                    ..Case::decode(&seqs, heads, kv_heads)
                };
                check::<bf16>(&device, &c);
            }
        }
        let c = Case {
            head_dim: 128,
            layout: KvLayout::Hnd,
            page_size: 5,
            ..Case::decode(&seqs, 8, 2)
        };
        check::<f16>(&device, &c);
    }
}

#[test]
fn long_sequence_split_and_unsplit_agree() {
    let seqs = [(1, 4100)];
    for device in common::devices() {
        let mut results = Vec::new();
        for split in [SplitKv::Off, SplitKv::Auto, SplitKv::Splits(5)] {
            let c = Case {
                split,
                ..Case::decode(&seqs, 8, 2)
            };
            let mut plan = PagedAttentionPlan::new(&device, split).unwrap();
            check_with::<bf16>(&device, &c, &mut plan);
            results.push(run_case::<bf16>(&device, &c, &mut plan));
        }
        // The same fp32 sums in another order, rounded once to bf16: at most one rounding step
        // (2^-8 relative) apart.
        for (out, lse) in &results[1..] {
            reference::compare(out, &results[0].0, 4e-3, 8e-3).unwrap();
            reference::compare(lse, &results[0].1, 1e-4, 1e-5).unwrap();
        }
    }
}

#[test]
fn split_planner_splits_only_an_underfilled_grid() {
    let device = Device::emulator();
    let mut plan = PagedAttentionPlan::with_sm_count(&device, SplitKv::Auto, 132);
    let shape = |batch, max_seq_len| cuattn::PagedShape {
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
        batch,
        total_q: batch,
        max_q_len: 1,
        max_seq_len,
        kv_start: 0,
        window_left: None,
    };
    // Batch 64 x 8 KV heads = 512 CTAs: no split.
    let info = plan.plan(&shape(64, 8192)).unwrap();
    assert_eq!((info.num_splits, info.workspace_bytes), (1, 0), "{info:?}");
    assert_eq!(info.grid, [1, 8, 64]);
    assert_eq!(
        info.block_rows, 16,
        "4 query heads a KV head, one token: 16 rows"
    );
    // Batch 1 at 64k: 8 CTAs would leave 124 SMs idle; 264 / 8 = 33 splits wanted, of 1986 keys
    // rounded up to whole 64-key tiles: 2048, so 32 splits.
    let info = plan.plan(&shape(1, 65536)).unwrap();
    assert_eq!((info.num_splits, info.split_tokens), (32, 2048), "{info:?}");
    assert_eq!(info.grid, [1, 8 * 32, 1]);
    assert_eq!(info.workspace_bytes, 32 * 32 * 129 * 4);
    // Short sequences do not split below 256 keys a split.
    let info = plan.plan(&shape(1, 300)).unwrap();
    assert_eq!(info.num_splits, 1, "{info:?}");
    // Forced.
    let mut forced = PagedAttentionPlan::with_sm_count(&device, SplitKv::Splits(4), 132);
    let info = forced.plan(&shape(64, 1000)).unwrap();
    assert_eq!((info.num_splits, info.split_tokens), (4, 256), "{info:?}");
    let mut off = PagedAttentionPlan::with_sm_count(&device, SplitKv::Off, 132);
    assert_eq!(off.plan(&shape(1, 65536)).unwrap().num_splits, 1);
    // A 4096-key window at 64k splits the window's keys, not the context's: 4097 keys, at least
    // 256 a split, so 16 splits of 320 (whole tiles) -> 13.
    let windowed = cuattn::PagedShape {
        window_left: Some(4096),
        ..shape(1, 65536)
    };
    let info = plan.plan(&windowed).unwrap();
    assert!(info.num_splits * info.split_tokens >= 4097, "{info:?}");
    assert!(info.split_tokens <= 448, "{info:?}");
}

/// A cache of one layer on `device` with shuffled free pages.
fn cache_on(device: &Device, page_size: usize, num_pages: usize, kv_heads: usize) -> PagedKvCache {
    let mut cache = PagedKvCache::new(
        device,
        KvCacheConfig {
            num_layers: 1,
            kv_heads,
            head_dim: 64,
            page_size,
            num_pages,
            dtype: DType::BF16,
            layout: KvLayout::Nhd,
        },
    )
    .unwrap();
    cache.shuffle_free_pages(11);
    cache
}

fn host_rows(x: &[f64], from: usize, to: usize, width: usize) -> Vec<bf16> {
    to_t::<bf16>(&x[from * width..to * width])
}

#[test]
fn chunked_prefill_equals_prefill_at_once() {
    let (heads, kv_heads, hd, len) = (8, 2, 64, 300);
    let mut rng = StdRng::seed_from_u64(5);
    let q = rounded::<bf16>(&random(&mut rng, len * heads * hd));
    let k = rounded::<bf16>(&random(&mut rng, len * kv_heads * hd));
    let v = rounded::<bf16>(&random(&mut rng, len * kv_heads * hd));
    let mut p = AttentionProblem::new(1, len, len, heads, kv_heads, hd);
    p.window_right = 0;
    let want = reference::attention(&p, &q, &k, &v);
    let opts = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    for device in common::devices() {
        let mut outputs = Vec::new();
        for chunks in [vec![len], vec![100, 7, 150, 43], vec![1, 64, 235]] {
            let mut cache = cache_on(&device, 16, 64, kv_heads);
            let seq = cache.add_sequence();
            let mut out = Vec::new();
            let mut done = 0;
            for &n in &chunks {
                let step = cache.reserve(&[(seq, n)]).unwrap();
                let k_new = Tensor::from_host(
                    &device,
                    &host_rows(&k, done, done + n, kv_heads * hd),
                    &[n, kv_heads, hd],
                )
                .unwrap();
                let v_new = Tensor::from_host(
                    &device,
                    &host_rows(&v, done, done + n, kv_heads * hd),
                    &[n, kv_heads, hd],
                )
                .unwrap();
                cache.append(0, &step, &k_new, &v_new).unwrap();
                let q_new = Tensor::from_host(
                    &device,
                    &host_rows(&q, done, done + n, heads * hd),
                    &[n, heads, hd],
                )
                .unwrap();
                let r = paged_attention(&q_new, &cache, 0, &step, &opts).unwrap();
                out.extend(r.out.to_host().unwrap().iter().map(|x| x.to_f64()));
                done += n;
            }
            println!("{} chunks {chunks:?}", device.kind());
            reference::compare(&out, &want.out, 2e-2, 2e-2)
                .unwrap_or_else(|m| panic!("chunks {chunks:?}: {m}"));
            outputs.push(out);
        }
        for out in &outputs[1..] {
            reference::compare(out, &outputs[0], 4e-3, 8e-3).unwrap();
        }
    }
}

#[test]
fn cascade_equals_plain_paged_attention() {
    let (heads, kv_heads, hd, page) = (8, 2, 64, 16);
    let prefix_len = 80; // five whole pages shared by every sequence
    let suffixes = [0, 3, 17, 40, 100];
    let mut rng = StdRng::seed_from_u64(9);
    let width = kv_heads * hd;
    for device in common::devices() {
        for q_len in [1, 2] {
            let mut cache = cache_on(&device, page, 128, kv_heads);
            let root = cache.add_sequence();
            let step = cache.reserve(&[(root, prefix_len)]).unwrap();
            let k0 = random(&mut rng, prefix_len * width);
            let v0 = random(&mut rng, prefix_len * width);
            let t = |x: &[f64], n| {
                Tensor::from_host(&device, &to_t::<bf16>(x), &[n, kv_heads, hd]).unwrap()
            };
            cache
                .append(0, &step, &t(&k0, prefix_len), &t(&v0, prefix_len))
                .unwrap();
            let seqs: Vec<_> = suffixes.iter().map(|_| cache.fork(root).unwrap()).collect();
            // Each sequence's own tokens past the prefix, then this step's q_len new ones.
            let mut requests: Vec<_> = seqs
                .iter()
                .zip(suffixes)
                .map(|(&s, n)| (s, n + q_len))
                .collect();
            requests.retain(|_| true);
            let step = cache.reserve(&requests).unwrap();
            let total: usize = requests.iter().map(|r| r.1).sum();
            let k1 = random(&mut rng, total * width);
            let v1 = random(&mut rng, total * width);
            cache
                .append(0, &step, &t(&k1, total), &t(&v1, total))
                .unwrap();
            let q = Tensor::from_host(
                &device,
                &to_t::<bf16>(&random(&mut rng, total * heads * hd)),
                &[total, heads, hd],
            )
            .unwrap();
            let opts = AttentionOptions {
                causal: true,
                return_lse: true,
                ..Default::default()
            };
            let plain = paged_attention(&q, &cache, 0, &step, &opts).unwrap();
            let prefix = SharedPrefix::of_step(&cache, &step)
                .unwrap()
                .expect("a shared prefix");
            assert_eq!(prefix.len(), prefix_len);
            let mut out = Tensor::full(&device, &[total, heads, hd], bf16::NAN).unwrap();
            let mut lse = Tensor::full(&device, &[total, heads], f32::NAN).unwrap();
            let mut plan = CascadePlan::new(&device, SplitKv::Auto).unwrap();
            cascade_attention_into(
                &q,
                &cache,
                0,
                &step,
                &prefix,
                &mut out,
                Some(&mut lse),
                &opts,
                &mut plan,
            )
            .unwrap();
            let f = |t: &Tensor<bf16>| {
                t.to_host()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_f64())
                    .collect::<Vec<_>>()
            };
            let g = |t: &Tensor<f32>| {
                t.to_host()
                    .unwrap()
                    .iter()
                    .map(|&x| x as f64)
                    .collect::<Vec<_>>()
            };
            println!(
                "{} cascade q_len {q_len}: prefix {prefix_len}, suffixes {suffixes:?}",
                device.kind()
            );
            reference::compare(&f(&out), &f(&plain.out), 8e-3, 1.6e-2).unwrap();
            reference::compare(&g(&lse), &g(plain.lse.as_ref().unwrap()), 1e-4, 1e-4).unwrap();
        }
    }
}

#[test]
fn merge_states_matches_its_definition() {
    let (tokens, heads, hd) = (37, 3, 72);
    let mut rng = StdRng::seed_from_u64(3);
    for device in common::devices() {
        let o_a = rounded::<f16>(&random(&mut rng, tokens * heads * hd));
        let o_b = rounded::<f16>(&random(&mut rng, tokens * heads * hd));
        // Some rows empty on one side, some on both.
        let lse = |rng: &mut StdRng, empty: usize| -> Vec<f32> {
            (0..tokens * heads)
                .map(|i| {
                    if i % 7 == empty {
                        f32::NEG_INFINITY
                    } else {
                        rng.random_range(-3.0..5.0)
                    }
                })
                .collect()
        };
        let (mut lse_a, lse_b) = (lse(&mut rng, 1), lse(&mut rng, 2));
        lse_a[2] = f32::NEG_INFINITY; // both empty where i % 7 == 2 and i == 2
        let shape = [tokens, heads, hd];
        let ta = Tensor::from_host(&device, &to_t::<f16>(&o_a), &shape).unwrap();
        let tb = Tensor::from_host(&device, &to_t::<f16>(&o_b), &shape).unwrap();
        let la = Tensor::from_host(&device, &lse_a, &[tokens, heads]).unwrap();
        let lb = Tensor::from_host(&device, &lse_b, &[tokens, heads]).unwrap();
        let (out, lse_out) = merge_states(&ta, &la, &tb, &lb).unwrap();
        let mut want_out = Vec::new();
        let mut want_lse = Vec::new();
        for i in 0..tokens * heads {
            let (o, l) = reference::merge_states(
                &o_a[i * hd..(i + 1) * hd],
                lse_a[i] as f64,
                &o_b[i * hd..(i + 1) * hd],
                lse_b[i] as f64,
            );
            want_out.extend(o);
            want_lse.push(l);
        }
        let got: Vec<f64> = out.to_host().unwrap().iter().map(|x| x.to_f64()).collect();
        let got_lse: Vec<f64> = lse_out
            .to_host()
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        reference::compare(&got, &want_out, 1e-2, 1e-2).unwrap();
        reference::compare(&got_lse, &want_lse, 1e-5, 1e-5).unwrap();
        // In place into copies of a.
        let mut ia = Tensor::from_host(&device, &to_t::<f16>(&o_a), &shape).unwrap();
        let mut il = Tensor::from_host(&device, &lse_a, &[tokens, heads]).unwrap();
        merge_states_in_place(&mut ia, &mut il, &tb, &lb).unwrap();
        let got: Vec<f64> = ia.to_host().unwrap().iter().map(|x| x.to_f64()).collect();
        reference::compare(&got, &want_out, 1e-2, 1e-2).unwrap();
        println!(
            "{} merge_states [{tokens}, {heads}, {hd}] with empty parts",
            device.kind()
        );
    }
}

#[test]
fn bad_arguments_are_refused_naming_them() {
    let device = Device::emulator();
    let mut cache = cache_on(&device, 16, 16, 2);
    let seq = cache.add_sequence();
    let step = cache.reserve(&[(seq, 3)]).unwrap();
    let kv = Tensor::<bf16>::zeros(&device, &[3, 2, 64]).unwrap();
    cache.append(0, &step, &kv, &kv).unwrap();
    let opts = AttentionOptions::default();
    let expect = |r: cuattn::Result<()>, arg: &str| {
        let e = r.expect_err(arg).to_string();
        assert!(e.contains(&format!("`{arg}`")), "{arg}: {e}");
        println!("refused: {e}");
    };
    let mut plan = PagedAttentionPlan::new(&device, SplitKv::Auto).unwrap();
    let q = Tensor::<bf16>::zeros(&device, &[3, 8, 64]).unwrap();
    let mut out = Tensor::<bf16>::zeros(&device, &[3, 8, 64]).unwrap();
    // Wrong rows, heads, head dim, dtype.
    let q2 = Tensor::<bf16>::zeros(&device, &[2, 8, 64]).unwrap();
    expect(
        paged_attention(&q2, &cache, 0, &step, &opts).map(|_| ()),
        "q",
    );
    let q3 = Tensor::<bf16>::zeros(&device, &[3, 7, 64]).unwrap();
    expect(
        paged_attention(&q3, &cache, 0, &step, &opts).map(|_| ()),
        "q",
    );
    let q4 = Tensor::<bf16>::zeros(&device, &[3, 8, 32]).unwrap();
    expect(
        paged_attention(&q4, &cache, 0, &step, &opts).map(|_| ()),
        "q",
    );
    let q5 = Tensor::<f16>::zeros(&device, &[3, 8, 64]).unwrap();
    expect(
        paged_attention(&q5, &cache, 0, &step, &opts).map(|_| ()),
        "q",
    );
    // Outputs.
    let mut small = Tensor::<bf16>::zeros(&device, &[3, 8, 56]).unwrap();
    expect(
        paged_attention_into(&q, &cache, 0, &step, &mut small, None, &opts, &mut plan),
        "out",
    );
    let with_lse = AttentionOptions {
        return_lse: true,
        ..opts
    };
    expect(
        paged_attention_into(&q, &cache, 0, &step, &mut out, None, &with_lse, &mut plan),
        "lse",
    );
    let mut lse = Tensor::<f32>::zeros(&device, &[8, 3]).unwrap();
    expect(
        paged_attention_into(
            &q,
            &cache,
            0,
            &step,
            &mut out,
            Some(&mut lse),
            &with_lse,
            &mut plan,
        ),
        "lse",
    );
    let bad_window = AttentionOptions {
        window: Some((-2, 0)),
        ..opts
    };
    expect(
        paged_attention_into(&q, &cache, 0, &step, &mut out, None, &bad_window, &mut plan),
        "window",
    );
    // A stale step and a missing layer.
    expect(
        paged_attention(&q, &cache, 1, &step, &opts).map(|_| ()),
        "layer",
    );
    let step2 = cache.reserve(&[(seq, 3)]).unwrap();
    expect(
        paged_attention(&q, &cache, 0, &step, &opts).map(|_| ()),
        "plan",
    );
    let _ = step2;
    // merge_states shapes.
    let o = Tensor::<bf16>::zeros(&device, &[3, 8, 64]).unwrap();
    let l = Tensor::<f32>::zeros(&device, &[3, 8]).unwrap();
    let l_bad = Tensor::<f32>::zeros(&device, &[8, 3]).unwrap();
    expect(merge_states(&o, &l_bad, &o, &l).map(|_| ()), "lse_a");
    let o_bad = Tensor::<bf16>::zeros(&device, &[3, 8, 60]).unwrap();
    expect(merge_states(&o, &l, &o_bad, &l).map(|_| ()), "o_b");
}

/// The K and V bytes a case's decode must read: each sequence's visible keys (those of its last
/// new token's window, every new token seeing at least what the first sees) once per KV head.
fn visible_kv_bytes(c: &Case) -> u64 {
    let (left, _) = c.opts().effective_window();
    let keys: usize = c
        .seqs
        .iter()
        .map(|&(q_len, len)| {
            let first_begin = if left < 0 {
                0
            } else {
                (len - q_len).saturating_sub(left as usize)
            };
            len - first_begin
        })
        .sum();
    (keys * c.kv_heads * c.head_dim * 2) as u64
}

#[test]
fn decode_reads_each_cached_kv_byte_once_per_kv_head() {
    // Emulator counters: the same code runs on a GPU, so these are the kernel's cost on one.
    let device = Device::emulator();
    let lens = [(1, 1), (1, 17), (1, 257), (1, 1025), (1, 4100)];
    for (heads, kv_heads) in [(2, 2), (8, 2), (10, 2), (16, 2), (32, 1)] {
        for split in [SplitKv::Off, SplitKv::Splits(3), SplitKv::Auto] {
            for window in [None, Some((100, 0))] {
                let c = Case {
                    split,
                    window,
                    ..Case::decode(&lens, heads, kv_heads)
                };
                let mut plan = PagedAttentionPlan::new(&device, split).unwrap();
                let recorder = cuattn::emu::TrafficRecorder::start().unwrap();
                run_case::<bf16>(&device, &c, &mut plan);
                let traffic = recorder.finish().unwrap();
                let total_q = lens.len();
                let info = plan
                    .plan(&cuattn::PagedShape {
                        heads,
                        kv_heads,
                        head_dim: c.head_dim,
                        batch: lens.len(),
                        total_q,
                        max_q_len: 1,
                        max_seq_len: 4100,
                        kv_start: 0,
                        window_left: window.map(|w| w.0 as usize),
                    })
                    .unwrap();
                let kv = visible_kv_bytes(&c);
                let q_bytes = (total_q * heads * c.head_dim * 2) as u64;
                // One page-table entry a key a KV head (int32), looked up a tile ahead.
                let table = kv / (c.head_dim as u64 * 2) * 4;
                println!(
                    "group {heads}/{kv_heads} split {split:?} ({} splits) window {window:?}: K {} V {} \
                     (visible {kv}), q {}, table {}, total read {}",
                    info.num_splits,
                    traffic.bytes_read("k_pages"),
                    traffic.bytes_read("v_pages"),
                    traffic.bytes_read("q"),
                    traffic.bytes_read("block_table"),
                    traffic.total_read()
                );
                assert_eq!(traffic.bytes_read("k_pages"), kv, "{c:?}");
                assert_eq!(traffic.bytes_read("v_pages"), kv, "{c:?}");
                assert_eq!(
                    traffic.bytes_read("q"),
                    q_bytes * info.num_splits as u64,
                    "{c:?}"
                );
                assert_eq!(traffic.bytes_read("block_table"), table, "{c:?}");
                // Split-KV's partial outputs and LSEs (fp32) are written once and read once by
                // the merge: their cost grows with the query rows, not the context.
                let partials = if info.num_splits > 1 {
                    (info.num_splits * total_q * heads * (c.head_dim + 1) * 4) as u64
                } else {
                    0
                };
                // (The merge skips the outputs of splits that saw no key.)
                assert!(traffic.bytes_read("paged_workspace") <= partials);
                assert_eq!(traffic.bytes_written("paged_workspace"), partials);
                // Everything else read (the step's lengths and offsets) is within 5% of the K/V
                // bytes.
                let rest = traffic.total_read()
                    - 2 * kv
                    - traffic.bytes_read("q")
                    - table
                    - traffic.bytes_read("paged_workspace");
                assert!(
                    rest * 20 <= 2 * kv,
                    "{rest} other bytes read against {} of K/V",
                    2 * kv
                );
                assert_eq!(traffic.bytes_written("out"), q_bytes);
            }
        }
    }
}

#[test]
fn paged_prefill_loads_only_the_key_tiles_its_rows_see() {
    // One sequence prefilled at once: 512 new tokens, one head, hd64. Each CTA takes 64 rows
    // (tokens); unmasked every CTA reads all 512 keys (8 x 512 key rows), causal CTA i reads the
    // keys [0, 64 (i + 1)): 64 x (1 + ... + 8) = 2304 rows, 9/16 of it. A window of 100 keys
    // (left 100, causal): CTA i reads [64 i - 100, 64 i + 64) clipped at 0, in whole 64-key tiles
    // from its first key: 164 keys = 3 tiles (the last one partly past its rows' keys: its
    // zero-filled rows read nothing), so 64, 128, then 164 from CTA 2 on.
    let device = Device::emulator();
    let len = 512;
    let row_bytes = 64 * 2;
    let mut bytes = Vec::new();
    for (causal, window) in [(false, None), (true, None), (true, Some((100, 0)))] {
        let c = Case {
            causal,
            window,
            ..Case::decode(&[(len, len)], 1, 1)
        };
        let mut plan = PagedAttentionPlan::new(&device, SplitKv::Off).unwrap();
        let recorder = cuattn::emu::TrafficRecorder::start().unwrap();
        run_case::<bf16>(&device, &c, &mut plan);
        let traffic = recorder.finish().unwrap();
        bytes.push(traffic.bytes_read("k_pages"));
        assert_eq!(traffic.bytes_read("k_pages"), traffic.bytes_read("v_pages"));
        println!(
            "causal {causal} window {window:?}: K bytes {}",
            bytes.last().unwrap()
        );
    }
    assert_eq!(bytes[0], 8 * 512 * row_bytes);
    assert_eq!(bytes[1], 2304 * row_bytes);
    assert_eq!(bytes[2], (64 + 128 + 6 * 164) * row_bytes);
}
