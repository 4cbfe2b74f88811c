//! The paged KV cache against a plain host model of every sequence's keys and values: random
//! operations from fixed seeds (add, add with a prefix, reserve and append, fork, truncate, free,
//! bad requests) with every live sequence read back from the device pages after each one, the
//! block manager's invariants checked, and OutOfPages leaving the state as it was. Then copy-on-
//! write, prefix caching with a planted hash collision, and bad arguments.

mod common;

use std::collections::BTreeMap;

use cuattn::{
    AttentionElement, DType, Device, Error, KvCacheConfig, KvLayout, PagedKvCache, SeqId, Tensor,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LAYERS: usize = 2;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 16;
const ROW: usize = KV_HEADS * HEAD_DIM;

fn config(page_size: usize, num_pages: usize, layout: KvLayout, dtype: DType) -> KvCacheConfig {
    KvCacheConfig {
        num_layers: LAYERS,
        kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        page_size,
        num_pages,
        dtype,
        layout,
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The K (kv = 0) or V (kv = 1) row of `layer` of a token whose prefix (itself included) hashes
/// to `prefix`: a deterministic function of the prefix, as a model's keys and values are, so
/// that a page found in the prefix cache holds exactly what the sequence would have computed.
fn row_of_prefix(prefix: u64, layer: usize, kv: usize) -> Vec<f64> {
    (0..ROW)
        .map(|i| {
            let h = splitmix(prefix ^ splitmix((layer * 2 + kv) as u64 * 1_000_003 + i as u64));
            // Multiples of 1/16 in [-4, 4): exact in f16 and bf16, never all zero.
            ((h % 128) as f64 - 64.0) / 16.0
        })
        .collect()
}

fn prefix_hash(previous: u64, token: u32) -> u64 {
    splitmix(previous ^ (u64::from(token) << 1 | 1))
}

/// A sequence as the model sees it: its rows per layer, and its token ids while they are known.
#[derive(Clone)]
struct ModelSeq {
    k: Vec<Vec<Vec<f64>>>, // [layer][token][ROW]
    v: Vec<Vec<Vec<f64>>>,
    tokens: Option<Vec<u32>>,
    prefix: Vec<u64>, // prefix hash after each token, while tokens are known
}

impl ModelSeq {
    fn len(&self) -> usize {
        self.k[0].len()
    }
    fn truncate(&mut self, n: usize) {
        for l in 0..LAYERS {
            self.k[l].truncate(n);
            self.v[l].truncate(n);
        }
        if let Some(t) = &mut self.tokens {
            t.truncate(n);
            self.prefix.truncate(n);
        }
    }
}

struct Harness<T: AttentionElement> {
    device: Device,
    cache: PagedKvCache,
    model: BTreeMap<SeqId, ModelSeq>,
    rng: StdRng,
    /// Prompts that sequences made with a prefix start from, so that prefixes repeat.
    prompts: Vec<Vec<u32>>,
    counts: BTreeMap<&'static str, usize>,
    _t: std::marker::PhantomData<T>,
}

impl<T: AttentionElement> Harness<T> {
    fn new(device: &Device, config: KvCacheConfig, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let prompts = (0..4)
            .map(|_| {
                (0..3 * config.page_size + 5)
                    .map(|_| rng.random_range(0..50))
                    .collect()
            })
            .collect();
        Harness {
            device: device.clone(),
            cache: PagedKvCache::new(device, config).unwrap(),
            model: BTreeMap::new(),
            rng,
            prompts,
            counts: BTreeMap::new(),
            _t: std::marker::PhantomData,
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn random_seq(&mut self) -> Option<SeqId> {
        let n = self.model.len();
        (n > 0).then(|| *self.model.keys().nth(self.rng.random_range(0..n)).unwrap())
    }

    /// Uploads `rows` ([tokens][ROW]) as a [tokens, kv_heads, head_dim] tensor, sometimes as a
    /// view with padded rows (aligned or not, so both kernel paths run).
    fn upload(&mut self, rows: &[Vec<f64>]) -> Tensor<T> {
        let tokens = rows.len();
        let pad = [0usize, 8, 3][self.rng.random_range(0..3)];
        let stride = ROW + pad;
        let mut data = vec![T::from_f64(f64::NAN); tokens.max(1) * stride];
        for (t, row) in rows.iter().enumerate() {
            for (i, &x) in row.iter().enumerate() {
                data[t * stride + i] = T::from_f64(x);
            }
        }
        let base = Tensor::from_host(&self.device, &data, &[data.len()]).unwrap();
        base.view(0, &[tokens, KV_HEADS, HEAD_DIM], &[stride, HEAD_DIM, 1])
            .unwrap()
    }

    fn add(&mut self) {
        let id = self.cache.add_sequence();
        let empty = vec![Vec::new(); LAYERS];
        self.model.insert(
            id,
            ModelSeq {
                k: empty.clone(),
                v: empty,
                tokens: None,
                prefix: Vec::new(),
            },
        );
        self.count("add");
    }

    fn add_with_prefix(&mut self) {
        let base = &self.prompts[self.rng.random_range(0..self.prompts.len())];
        let keep = self.rng.random_range(1..=base.len());
        let mut prompt = base[..keep].to_vec();
        for _ in 0..self.rng.random_range(0..6) {
            prompt.push(self.rng.random_range(0..50));
        }
        let (id, cached) = self.cache.add_sequence_with_prefix(&prompt);
        let p = self.cache.config().page_size;
        assert!(
            cached % p == 0 && cached < prompt.len(),
            "cached {cached} of {}",
            prompt.len()
        );
        let mut seq = ModelSeq {
            k: vec![Vec::new(); LAYERS],
            v: vec![Vec::new(); LAYERS],
            tokens: Some(Vec::new()),
            prefix: Vec::new(),
        };
        for &token in &prompt[..cached] {
            push_known_token(&mut seq, token);
        }
        self.model.insert(id, seq);
        if cached > 0 {
            self.count("prefix hit");
        }
        self.count("add with prefix");
        // The rest of the prompt, as the engine's prefill would append it.
        let rest = prompt[cached..].to_vec();
        self.step(vec![(id, rest.len(), Some(rest))]);
    }

    /// Reserve and append one step; `OutOfPages` must leave everything unchanged.
    fn step(&mut self, requests: Vec<(SeqId, usize, Option<Vec<u32>>)>) {
        let before = self.cache.host_snapshot();
        let with_ids = requests.iter().all(|r| r.2.is_some());
        let plan = if with_ids {
            let pairs: Vec<(SeqId, &[u32])> = requests
                .iter()
                .map(|r| (r.0, r.2.as_deref().unwrap()))
                .collect();
            self.cache.reserve_with_tokens(&pairs)
        } else {
            let pairs: Vec<(SeqId, usize)> = requests.iter().map(|r| (r.0, r.1)).collect();
            self.cache.reserve(&pairs)
        };
        let plan = match plan {
            Ok(plan) => plan,
            Err(Error::OutOfPages { needed, available }) => {
                assert!(needed > available);
                assert!(
                    self.cache.host_snapshot() == before,
                    "OutOfPages changed the cache"
                );
                self.count("out of pages");
                return;
            }
            Err(e) => panic!("reserve: {e}"),
        };
        if plan.copied_pages() > 0 {
            self.count("copy-on-write");
        }
        // The model's new rows, layer by layer.
        let mut k_rows = vec![Vec::new(); LAYERS];
        let mut v_rows = vec![Vec::new(); LAYERS];
        for (seq, n, ids) in &requests {
            let m = self.model.get_mut(seq).unwrap();
            match (ids.as_ref().filter(|_| with_ids), m.tokens.is_some()) {
                (Some(ids), true) => {
                    for &token in ids {
                        push_known_token(m, token);
                    }
                    for l in 0..LAYERS {
                        k_rows[l].extend_from_slice(&m.k[l][m.len() - n..]);
                        v_rows[l].extend_from_slice(&m.v[l][m.len() - n..]);
                    }
                }
                _ => {
                    m.tokens = None;
                    m.prefix.clear();
                    for l in 0..LAYERS {
                        for _ in 0..*n {
                            let k: Vec<f64> = (0..ROW)
                                .map(|_| f64::from(self.rng.random_range(-64i32..64)) / 16.0)
                                .collect();
                            let v: Vec<f64> = (0..ROW)
                                .map(|_| f64::from(self.rng.random_range(-64i32..64)) / 16.0)
                                .collect();
                            m.k[l].push(k.clone());
                            m.v[l].push(v.clone());
                            k_rows[l].push(k);
                            v_rows[l].push(v);
                        }
                    }
                }
            }
        }
        for l in 0..LAYERS {
            let k = self.upload(&k_rows[l]);
            let v = self.upload(&v_rows[l]);
            self.cache.append(l, &plan, &k, &v).unwrap();
        }
        self.count("step");
    }

    fn random_step(&mut self) {
        let live: Vec<SeqId> = self.model.keys().copied().collect();
        let mut requests = Vec::new();
        let all_known = self.rng.random_bool(0.7);
        for seq in live {
            if !self.rng.random_bool(0.5) {
                continue;
            }
            let n = if self.rng.random_bool(0.8) {
                self.rng.random_range(0..=2)
            } else {
                self.rng.random_range(0..=20)
            };
            let ids: Vec<u32> = (0..n).map(|_| self.rng.random_range(0..50)).collect();
            let known = self.model[&seq].tokens.is_some() && all_known;
            requests.push((seq, n, known.then_some(ids)));
        }
        self.step(requests);
    }

    fn fork(&mut self) {
        if let Some(seq) = self.random_seq() {
            let child = self.cache.fork(seq).unwrap();
            let m = self.model[&seq].clone();
            self.model.insert(child, m);
            self.count("fork");
        }
    }

    fn truncate(&mut self) {
        if let Some(seq) = self.random_seq() {
            let len = self.model[&seq].len();
            let n = self.rng.random_range(0..=len);
            self.cache.truncate(seq, n).unwrap();
            self.model.get_mut(&seq).unwrap().truncate(n);
            self.count("truncate");
        }
    }

    fn free(&mut self) {
        if let Some(seq) = self.random_seq() {
            self.cache.free(seq).unwrap();
            self.model.remove(&seq);
            self.count("free");
        }
    }

    /// Requests that must fail naming their argument and change nothing.
    fn bad_request(&mut self) {
        let before = self.cache.host_snapshot();
        let missing = SeqId::from_raw(u64::MAX);
        let err = match self.rng.random_range(0..4) {
            0 => self.cache.reserve(&[(missing, 1)]).unwrap_err(),
            1 => match self.random_seq() {
                Some(seq) => self.cache.reserve(&[(seq, 1), (seq, 2)]).unwrap_err(),
                None => self.cache.fork(missing).unwrap_err(),
            },
            2 => match self.random_seq() {
                Some(seq) => {
                    let len = self.model[&seq].len();
                    self.cache.truncate(seq, len + 1).unwrap_err()
                }
                None => self.cache.free(missing).unwrap_err(),
            },
            _ => self.cache.truncate(missing, 0).unwrap_err(),
        };
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(
            self.cache.host_snapshot() == before,
            "a refused call changed the cache: {err}"
        );
        self.count("refused");
    }

    /// Every live sequence read back from the device equals the model.
    fn check(&self) {
        self.cache.check_invariants().unwrap();
        for (&seq, m) in &self.model {
            assert_eq!(
                self.cache.sequence_len(seq).unwrap(),
                m.len(),
                "sequence {seq}"
            );
            for l in 0..LAYERS {
                let (k, v) = self.cache.read_sequence::<T>(l, seq).unwrap();
                for (name, got, want) in [("K", &k, &m.k[l]), ("V", &v, &m.v[l])] {
                    for (t, row) in want.iter().enumerate() {
                        for (i, &x) in row.iter().enumerate() {
                            let g = got[t * ROW + i].to_f64();
                            assert!(
                                g == x,
                                "sequence {seq}, layer {l}, {name} token {t} element {i}: {g} in \
                                 the cache, {x} in the model"
                            );
                        }
                    }
                }
            }
        }
    }

    fn run(&mut self, ops: usize) {
        for _ in 0..ops {
            match self.rng.random_range(0..100) {
                0..8 => self.add(),
                8..16 => self.add_with_prefix(),
                16..60 => self.random_step(),
                60..70 => self.fork(),
                70..80 => self.truncate(),
                80..94 => self.free(),
                _ => self.bad_request(),
            }
            // Keep the population bounded, as an engine's batch is.
            while self.model.len() > 12 {
                self.free();
            }
            self.check();
        }
    }
}

fn push_known_token(m: &mut ModelSeq, token: u32) {
    let previous = m.prefix.last().copied().unwrap_or(0);
    let h = prefix_hash(previous, token);
    m.tokens.as_mut().unwrap().push(token);
    m.prefix.push(h);
    for l in 0..LAYERS {
        m.k[l].push(row_of_prefix(h, l, 0));
        m.v[l].push(row_of_prefix(h, l, 1));
    }
}

/// 10^5 operations in all, over page sizes 1, 3, 16 and 64 and both layouts, each on a pool small
/// enough that eviction and OutOfPages are frequent.
#[test]
fn random_operations_match_a_host_model() {
    let _memcheck = common::MemcheckSetting::new(true);
    let total: usize = std::env::var("CUATTN_KV_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let configs = [
        (1, KvLayout::Nhd, DType::BF16, 160),
        (1, KvLayout::Hnd, DType::F16, 160),
        (3, KvLayout::Nhd, DType::F16, 60),
        (3, KvLayout::Hnd, DType::BF16, 60),
        (16, KvLayout::Nhd, DType::BF16, 14),
        (16, KvLayout::Hnd, DType::F16, 14),
        (64, KvLayout::Nhd, DType::F16, 5),
        (64, KvLayout::Hnd, DType::BF16, 5),
    ];
    for device in common::devices() {
        for (i, &(page_size, layout, dtype, pages)) in configs.iter().enumerate() {
            let cfg = config(page_size, pages, layout, dtype);
            // A GPU reads every sequence back page by page after each operation: a tenth of the
            // operations there, as the emulator already ran them all on the same code.
            let ops = total / configs.len() / if device.is_cuda() { 10 } else { 1 };
            let counts = match dtype {
                DType::F16 => {
                    let mut h = Harness::<f16>::new(&device, cfg, 100 + i as u64);
                    h.run(ops);
                    h.counts
                }
                _ => {
                    let mut h = Harness::<bf16>::new(&device, cfg, 100 + i as u64);
                    h.run(ops);
                    h.counts
                }
            };
            println!(
            "{}: page size {page_size}, {layout:?}, {dtype}, {pages} pages, {ops} ops: {counts:?}",
            device.name()
        );
            // Pages of one token are never partly filled: nothing to copy on write.
            let copies = (page_size > 1).then_some("copy-on-write");
            for what in ["out of pages", "prefix hit", "step", "refused"]
                .into_iter()
                .chain(copies)
            {
                assert!(
                    counts.get(what).copied().unwrap_or(0) > 0,
                    "no `{what}` in {counts:?}"
                );
            }
        }
    }
}

/// The bit pattern that labels element `i` of token `t`'s K (kv = 0) or V (kv = 1) row: distinct,
/// and below bf16's NaN patterns for the tokens these tests write.
fn label(t: usize, i: usize, kv: usize) -> u16 {
    (kv * 0x4000 + t * ROW + i) as u16
}

/// bf16 rows [tokens, kv_heads, head_dim] whose every element names its token, head and column.
fn labelled_rows(first: usize, tokens: usize, kv: usize) -> Vec<bf16> {
    let mut data = Vec::with_capacity(tokens * ROW);
    for t in first..first + tokens {
        for i in 0..ROW {
            data.push(bf16::from_bits(label(t, i, kv)));
        }
    }
    data
}

fn append_labelled(cache: &mut PagedKvCache, plan: &cuattn::StepPlan, first: usize) {
    let device = cache.device().clone();
    let n = plan.num_tokens();
    for l in 0..LAYERS {
        let k = Tensor::from_host(
            &device,
            &labelled_rows(first, n, 0),
            &[n, KV_HEADS, HEAD_DIM],
        );
        let v = Tensor::from_host(
            &device,
            &labelled_rows(first, n, 1),
            &[n, KV_HEADS, HEAD_DIM],
        );
        cache.append(l, plan, &k.unwrap(), &v.unwrap()).unwrap();
    }
}

/// The pools hold element (page, slot, head, column) where the header's formula says, for both
/// layouts: checked by reading the emulator's pool memory through the view's own pointers.
#[test]
fn layouts_place_elements_where_the_header_says() {
    for layout in [KvLayout::Nhd, KvLayout::Hnd] {
        let mut cache =
            PagedKvCache::new(&Device::emulator(), config(3, 8, layout, DType::BF16)).unwrap();
        let seq = cache.add_sequence();
        let plan = cache.reserve(&[(seq, 7)]).unwrap();
        append_labelled(&mut cache, &plan, 0);
        let view = cache.view(1, &plan).unwrap();
        let raw = *view.raw();
        let expected_strides = match layout {
            KvLayout::Nhd => (3 * ROW, ROW, HEAD_DIM),
            KvLayout::Hnd => (3 * ROW, HEAD_DIM, 3 * HEAD_DIM),
        };
        assert_eq!(
            (raw.k_page_stride, raw.k_slot_stride, raw.k_head_stride),
            (
                expected_strides.0 as i64,
                expected_strides.1 as i64,
                expected_strides.2 as i64
            )
        );
        let pages = cache.sequence_pages(seq).unwrap().to_vec();
        for t in 0..7 {
            let (page, slot) = (pages[t / 3] as usize, t % 3);
            for h in 0..KV_HEADS {
                for d in 0..HEAD_DIM {
                    let at = page * expected_strides.0
                        + slot * expected_strides.1
                        + h * expected_strides.2
                        + d;
                    // SAFETY: emulator pools are host memory of num_pages pages, and `at` lies
                    // in page `page` < 8.
                    let (k, v) = unsafe {
                        (
                            *raw.k_pages.cast::<bf16>().add(at),
                            *raw.v_pages.cast::<bf16>().add(at),
                        )
                    };
                    let i = h * HEAD_DIM + d;
                    assert_eq!(
                        k.to_bits(),
                        label(t, i, 0),
                        "{layout:?} K t {t} h {h} d {d}"
                    );
                    assert_eq!(
                        v.to_bits(),
                        label(t, i, 1),
                        "{layout:?} V t {t} h {h} d {d}"
                    );
                }
            }
        }
    }
}

/// A forked sequence's writes never show in its parent's pages, nor the parent's in the fork's;
/// the shared partly filled page is copied exactly once, by the first writer.
#[test]
fn fork_copies_on_write_and_keeps_sequences_apart() {
    for device in common::devices() {
        let mut cache =
            PagedKvCache::new(&device, config(4, 16, KvLayout::Nhd, DType::BF16)).unwrap();
        let parent = cache.add_sequence();
        let plan = cache.reserve(&[(parent, 6)]).unwrap();
        append_labelled(&mut cache, &plan, 0);
        let child = cache.fork(parent).unwrap();
        assert_eq!(cache.stats().pages_shared, 2);
        // Both write token 6 in the same step, with different values.
        let plan = cache.reserve(&[(child, 1), (parent, 1)]).unwrap();
        assert_eq!(plan.copied_pages(), 1, "only the first writer copies");
        let k = Tensor::from_host(&device, &labelled_rows(100, 2, 0), &[2, KV_HEADS, HEAD_DIM])
            .unwrap();
        let v = Tensor::from_host(&device, &labelled_rows(100, 2, 1), &[2, KV_HEADS, HEAD_DIM])
            .unwrap();
        for l in 0..LAYERS {
            cache.append(l, &plan, &k, &v).unwrap();
        }
        for l in 0..LAYERS {
            let (pk, _) = cache.read_sequence::<bf16>(l, parent).unwrap();
            let (ck, cv) = cache.read_sequence::<bf16>(l, child).unwrap();
            let rows = labelled_rows(0, 6, 0);
            assert_eq!(
                &pk[..6 * ROW],
                &rows[..],
                "layer {l}: the parent's first tokens"
            );
            assert_eq!(
                &ck[..6 * ROW],
                &rows[..],
                "layer {l}: the child's first tokens"
            );
            // Token 6: the child's row is the step's first (100), the parent's the second (101).
            assert_eq!(
                &ck[6 * ROW..],
                &labelled_rows(100, 1, 0)[..],
                "layer {l}: child token 6"
            );
            assert_eq!(
                &pk[6 * ROW..],
                &labelled_rows(101, 1, 0)[..],
                "layer {l}: parent token 6"
            );
            assert_eq!(
                &cv[6 * ROW..],
                &labelled_rows(100, 1, 1)[..],
                "layer {l}: child V"
            );
        }
        assert_eq!(
            cache.sequence_pages(parent).unwrap()[0],
            cache.sequence_pages(child).unwrap()[0]
        );
        assert_ne!(
            cache.sequence_pages(parent).unwrap()[1],
            cache.sequence_pages(child).unwrap()[1]
        );
        cache.check_invariants().unwrap();
    }
}

/// Two prompts with a common prefix of 3.5 pages share exactly the 3 full pages; a hash that
/// makes every page collide is caught by the token comparison.
#[test]
fn prefix_caching_shares_whole_pages_and_survives_collisions() {
    for (device, colliding) in common::devices()
        .into_iter()
        .flat_map(|d| [(d.clone(), false), (d, true)])
    {
        let mut cache =
            PagedKvCache::new(&device, config(4, 32, KvLayout::Nhd, DType::BF16)).unwrap();
        if colliding {
            cache.set_prefix_hash_for_tests(|_, _| 42);
        }
        let common: Vec<u32> = (0..14).collect(); // 3.5 pages of 4
        let mut a_prompt = common.clone();
        a_prompt.extend([100, 101, 102, 103, 104]);
        let (a, cached) = cache.add_sequence_with_prefix(&a_prompt);
        assert_eq!(cached, 0, "an empty cache has nothing to share");
        let plan = cache.reserve_with_tokens(&[(a, &a_prompt[..])]).unwrap();
        append_labelled(&mut cache, &plan, 0);

        let mut b_prompt = common.clone();
        b_prompt.extend([200, 201, 202]);
        let (b, cached) = cache.add_sequence_with_prefix(&b_prompt);
        assert_eq!(cached, 12, "colliding {colliding}: three whole pages");
        assert_eq!(
            cache.sequence_pages(b).unwrap(),
            &cache.sequence_pages(a).unwrap()[..3]
        );
        assert_eq!(cache.stats().pages_shared, 3);
        let (bk, _) = cache.read_sequence::<bf16>(0, b).unwrap();
        assert_eq!(
            bk,
            labelled_rows(0, 12, 0),
            "the shared pages hold a's first 12 tokens"
        );

        // Same tokens in another order: under the colliding hash every page is a candidate,
        // and none may match.
        let shuffled: Vec<u32> = (0..14).rev().collect();
        let (c, cached) = cache.add_sequence_with_prefix(&shuffled);
        assert_eq!(
            cached, 0,
            "colliding {colliding}: no page of a reversed prompt matches"
        );
        // a's fourth page (tokens 12..16) follows its own first three: a prompt with the same
        // tokens 12..16 after other tokens must not reach it.
        let mut other = vec![7u32; 12];
        other.extend(&a_prompt[12..17]);
        let (d, cached) = cache.add_sequence_with_prefix(&other);
        assert_eq!(
            cached, 0,
            "colliding {colliding}: a page is found only after its parent"
        );

        // Freed, a's pages stay cached; a new request with a's prompt finds all four full ones.
        for s in [a, b, c, d] {
            cache.free(s).unwrap();
        }
        assert!(cache.stats().pages_cached >= 4);
        let (e, cached) = cache.add_sequence_with_prefix(&a_prompt);
        assert_eq!(
            cached, 16,
            "colliding {colliding}: four whole pages after a's free"
        );
        let (ek, _) = cache.read_sequence::<bf16>(1, e).unwrap();
        assert_eq!(ek, labelled_rows(0, 16, 0));
        cache.check_invariants().unwrap();
    }
}

/// A prompt that is all cached still leaves its last token to compute.
#[test]
fn prefix_hit_leaves_the_last_token_to_compute() {
    let mut cache = PagedKvCache::new(
        &Device::emulator(),
        config(4, 8, KvLayout::Nhd, DType::BF16),
    )
    .unwrap();
    let prompt: Vec<u32> = (0..8).collect();
    let (a, _) = cache.add_sequence_with_prefix(&prompt);
    cache.reserve_with_tokens(&[(a, &prompt[..])]).unwrap();
    let (_, cached) = cache.add_sequence_with_prefix(&prompt);
    assert_eq!(
        cached, 4,
        "two full pages cached, but the second holds the last token"
    );
}

/// Bad arguments name the argument and change nothing.
#[test]
fn bad_arguments_are_refused_and_change_nothing() {
    let device = Device::emulator();
    for (cfg, arg) in [
        (config(0, 8, KvLayout::Nhd, DType::BF16), "page_size"),
        (config(4, 0, KvLayout::Nhd, DType::BF16), "num_pages"),
        (config(4, 8, KvLayout::Nhd, DType::F32), "dtype"),
        (
            KvCacheConfig {
                head_dim: 20,
                ..config(4, 8, KvLayout::Nhd, DType::BF16)
            },
            "head_dim",
        ),
        (
            KvCacheConfig {
                head_dim: 264,
                ..config(4, 8, KvLayout::Nhd, DType::BF16)
            },
            "head_dim",
        ),
        (
            KvCacheConfig {
                num_layers: 0,
                ..config(4, 8, KvLayout::Nhd, DType::BF16)
            },
            "num_layers",
        ),
        (
            config(1 << 16, 1 << 15, KvLayout::Nhd, DType::BF16),
            "num_pages",
        ),
    ] {
        let err = PagedKvCache::new(&device, cfg).err().expect("refused");
        assert!(
            matches!(&err, Error::InvalidArgument { arg: a, .. } if *a == arg),
            "{cfg:?}: {err}"
        );
    }
    let cfg = config(4, 8, KvLayout::Nhd, DType::BF16);
    let err = PagedKvCache::with_memory_budget(&device, cfg, 100)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("smaller than one page"), "{err}");
    let budget = PagedKvCache::with_memory_budget(&device, cfg, 10 * 1024 + 5).unwrap();
    assert_eq!(budget.config().num_pages, 10 * 1024 / cfg.bytes_per_page());

    let mut cache = PagedKvCache::new(&device, cfg).unwrap();
    let seq = cache.add_sequence();
    let plan = cache.reserve(&[(seq, 3)]).unwrap();
    let before = cache.host_snapshot();
    let good = Tensor::<bf16>::full(&device, &[3, KV_HEADS, HEAD_DIM], bf16::ONE).unwrap();
    let cases: Vec<(&str, Result<(), Error>)> = vec![
        ("layer", cache.append(LAYERS, &plan, &good, &good)),
        ("k_new", {
            let short = Tensor::<bf16>::full(&device, &[2, KV_HEADS, HEAD_DIM], bf16::ONE).unwrap();
            cache.append(0, &plan, &short, &good)
        }),
        ("v_new", {
            let heads = Tensor::<bf16>::full(&device, &[3, 1, HEAD_DIM], bf16::ONE).unwrap();
            cache.append(0, &plan, &good, &heads)
        }),
        ("k_new", {
            let f = Tensor::<f16>::full(&device, &[3, KV_HEADS, HEAD_DIM], f16::ONE).unwrap();
            cache.append(0, &plan, &f, &f)
        }),
        ("new_len", cache.truncate(seq, 4)),
        ("seq", cache.free(SeqId::from_raw(99))),
        ("requests", cache.reserve(&[(seq, 1), (seq, 1)]).map(|_| ())),
        (
            "token_ids",
            cache
                .reserve_with_tokens(&[(SeqId::from_raw(99), &[1][..])])
                .map(|_| ()),
        ),
    ];
    for (arg, result) in cases {
        let err = result.expect_err(arg);
        assert!(
            matches!(&err, Error::InvalidArgument { arg: a, .. } if *a == arg || arg == "token_ids"),
            "{arg}: {err}"
        );
    }
    assert!(cache.host_snapshot() == before);
    // Nothing was written: the reserved tokens read back as the pool's zeros.
    let (k, _) = cache.read_sequence::<bf16>(0, seq).unwrap();
    assert!(k.iter().all(|x| x.to_f64() == 0.0));
    // A plan from before the latest reserve is refused.
    let stale = plan.clone();
    cache.reserve(&[(seq, 1)]).unwrap();
    let err = cache.append(0, &stale, &good, &good).unwrap_err();
    assert!(
        err.to_string().contains("not the cache's current step"),
        "{err}"
    );
    // Out of pages: 8 pages of 4 tokens hold 32; 4 are held already.
    let other = cache.add_sequence();
    let before = cache.host_snapshot();
    let err = cache.reserve(&[(other, 29)]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfPages {
                needed: 8,
                available: 7
            }
        ),
        "{err}"
    );
    assert!(cache.host_snapshot() == before);
}
