//! The paged KV cache: K and V of every cached token in fixed-size pages of device memory, with
//! the block manager an engine drives every step (reserve, append, fork, truncate, free), copy-on-
//! write prefix sharing and prefix caching. README.md ("The paged KV cache") shows the step loop.

mod launch;
mod manager;
mod view;

use half::{bf16, f16};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::ffi;
use crate::tensor::{AttentionElement, DType, Tensor};

pub(crate) use launch::NewRows;
use manager::{Manager, Request};
pub use view::PagedKvView;

/// The element order of a page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvLayout {
    /// `[num_pages, page_size, kv_heads, head_dim]`: a token's heads are together (FlashInfer's
    /// and vLLM's default).
    #[default]
    Nhd,
    /// `[num_pages, kv_heads, page_size, head_dim]`: a head's tokens are together.
    Hnd,
}

impl KvLayout {
    pub(crate) fn to_ffi(self) -> ffi::cuattn_kv_layout {
        match self {
            KvLayout::Nhd => ffi::cuattn_kv_layout::CUATTN_KV_LAYOUT_NHD,
            KvLayout::Hnd => ffi::cuattn_kv_layout::CUATTN_KV_LAYOUT_HND,
        }
    }

    /// Element strides (page, slot in page, head) of a page of `page_size` tokens.
    pub fn strides(self, page_size: usize, kv_heads: usize, head_dim: usize) -> [usize; 3] {
        let page = page_size * kv_heads * head_dim;
        match self {
            KvLayout::Nhd => [page, kv_heads * head_dim, head_dim],
            KvLayout::Hnd => [page, head_dim, page_size * head_dim],
        }
    }
}

/// The head dims a cache takes: multiples of 8 up to 256, as the attention kernels.
const HEAD_DIM_MULTIPLE: usize = 8;
const MAX_HEAD_DIM: usize = 256;
/// CUDA's grid.y limit: the copy kernel runs one CTA row per (layer, K or V) pool.
const MAX_POOLS: usize = 65535;

/// The shape of a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheConfig {
    /// Layers: one K pool and one V pool each.
    pub num_layers: usize,
    /// Key and value heads of each token.
    pub kv_heads: usize,
    /// A multiple of 8, at most 256.
    pub head_dim: usize,
    /// Tokens per page: any size from 1.
    pub page_size: usize,
    /// Pages in each pool; `num_pages * page_size` must fit int32 (flat slots are int32).
    pub num_pages: usize,
    /// F16 or BF16.
    pub dtype: DType,
    /// How a page's tokens and heads are laid out in the pools.
    pub layout: KvLayout,
}

impl KvCacheConfig {
    /// Bytes of K and V of one token over every layer: 2 x layers x kv_heads x head_dim x 2.
    pub fn bytes_per_token(&self) -> usize {
        2 * self.num_layers * self.kv_heads * self.head_dim * std::mem::size_of::<u16>()
    }

    /// Bytes of one page in every pool (K and V of every layer).
    pub fn bytes_per_page(&self) -> usize {
        self.bytes_per_token() * self.page_size
    }

    /// Elements of one page of one pool.
    fn page_elems(&self) -> usize {
        self.page_size * self.kv_heads * self.head_dim
    }

    /// How many pages fit in `bytes` of pool memory; an error when not even one does.
    pub fn pages_in_budget(&self, bytes: u64) -> Result<usize> {
        let per_page = self.checked_bytes_per_page()? as u64;
        let pages = bytes / per_page;
        if pages == 0 {
            return Err(Error::invalid(
                "bytes",
                format!(
                    "{bytes}: smaller than one page ({per_page} bytes: {} tokens x {} bytes a \
                     token over {} layers)",
                    self.page_size,
                    self.bytes_per_token(),
                    self.num_layers
                ),
            ));
        }
        Ok(usize::try_from(pages).unwrap_or(usize::MAX))
    }

    fn checked_bytes_per_page(&self) -> Result<usize> {
        self.validate_shape()?;
        [
            2,
            self.num_layers,
            self.kv_heads,
            self.head_dim,
            2,
            self.page_size,
        ]
        .iter()
        .try_fold(1usize, |acc, &x| acc.checked_mul(x))
        .ok_or_else(|| Error::invalid("config", format!("{self:?}: page bytes overflow")))
    }

    /// Checks everything but `num_pages`.
    fn validate_shape(&self) -> Result<()> {
        if self.num_layers == 0 || 2 * self.num_layers > MAX_POOLS {
            return Err(Error::invalid(
                "num_layers",
                format!("{}: must be in 1..={}", self.num_layers, MAX_POOLS / 2),
            ));
        }
        if self.kv_heads == 0 || self.kv_heads > i32::MAX as usize / MAX_HEAD_DIM {
            return Err(Error::invalid(
                "kv_heads",
                format!(
                    "{}: must be positive (and fit int32 with head_dim)",
                    self.kv_heads
                ),
            ));
        }
        if self.head_dim == 0
            || !self.head_dim.is_multiple_of(HEAD_DIM_MULTIPLE)
            || self.head_dim > MAX_HEAD_DIM
        {
            return Err(Error::invalid(
                "head_dim",
                format!(
                    "{}: must be a multiple of {HEAD_DIM_MULTIPLE} in \
                     {HEAD_DIM_MULTIPLE}..={MAX_HEAD_DIM}",
                    self.head_dim
                ),
            ));
        }
        if self.page_size == 0 || self.page_size > i32::MAX as usize {
            return Err(Error::invalid(
                "page_size",
                format!("{}: must be at least 1 (and fit int32)", self.page_size),
            ));
        }
        if !matches!(self.dtype, DType::F16 | DType::BF16) {
            return Err(Error::invalid(
                "dtype",
                format!("{}: a KV cache holds f16 or bf16", self.dtype),
            ));
        }
        Ok(())
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        self.validate_shape()?;
        let slots = self.num_pages.checked_mul(self.page_size);
        if self.num_pages == 0 || slots.is_none_or(|s| s > i32::MAX as usize) {
            return Err(Error::invalid(
                "num_pages",
                format!(
                    "{} pages of {} tokens: at least one page, and num_pages * page_size at most \
                     {} (flat slots are int32)",
                    self.num_pages,
                    self.page_size,
                    i32::MAX
                ),
            ));
        }
        self.checked_bytes_per_page()?
            .checked_mul(self.num_pages)
            .ok_or_else(|| Error::invalid("num_pages", "the pools' byte count overflows"))?;
        Ok(())
    }
}

/// A sequence of a cache. Ids are never reused within a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(u64);

impl SeqId {
    /// The id as a number (the C API's `uint64_t`).
    pub fn get(self) -> u64 {
        self.0
    }

    /// The sequence a number names (unknown numbers fail the calls that take them).
    pub fn from_raw(id: u64) -> SeqId {
        SeqId(id)
    }
}

impl std::fmt::Display for SeqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One step as `reserve` planned it: which sequences, how many new tokens each, and where the
/// device tables are. Appends and views take it back; only the latest reserve's plan is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepPlan {
    step: u64,
    seqs: Vec<SeqId>,
    cu_seqlens: Vec<usize>,
    seq_lens: Vec<usize>,
    max_pages_per_seq: usize,
    copied_pages: usize,
    tables_moved: bool,
}

impl StepPlan {
    /// Which reserve made this plan (1 for the first).
    pub fn step(&self) -> u64 {
        self.step
    }
    /// The step's sequences, in the order of the tables.
    pub fn seqs(&self) -> &[SeqId] {
        &self.seqs
    }
    /// Sequences in the step (the rows of the block table).
    pub fn batch(&self) -> usize {
        self.seqs.len()
    }
    /// New tokens of the step, all sequences together (the rows of `append`'s K and V).
    pub fn num_tokens(&self) -> usize {
        *self.cu_seqlens.last().unwrap_or(&0)
    }
    /// Offsets of each sequence's new tokens: `[batch + 1]`.
    pub fn cu_seqlens(&self) -> &[usize] {
        &self.cu_seqlens
    }
    /// Each sequence's length once the step's tokens are appended.
    pub fn seq_lens(&self) -> &[usize] {
        &self.seq_lens
    }
    /// The block table's row length: the most pages any sequence of the step holds.
    pub fn max_pages_per_seq(&self) -> usize {
        self.max_pages_per_seq
    }
    /// Shared pages this step copied (copy-on-write) before its appends.
    pub fn copied_pages(&self) -> usize {
        self.copied_pages
    }
    /// Whether this reserve moved the device tables to a larger buffer: CUDA graphs captured over
    /// an earlier step's tables must be captured again ([`PagedKvCache::reserve_tables`] sizes
    /// them ahead).
    pub fn tables_moved(&self) -> bool {
        self.tables_moved
    }
}

/// A step's tables on the device (host memory on the emulator), from [`PagedKvCache::tables`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepTables {
    /// int32 `[batch, max_pages_per_seq]`: each sequence's pages in order, -1 past its last.
    pub block_table: *const i32,
    /// int32 `[batch]`: each sequence's cached tokens after the step, new ones included.
    pub seq_lens: *const i32,
    /// int32 `[batch + 1]`: the offsets of each sequence's new tokens in the step's rows.
    pub cu_seqlens: *const i32,
    /// int32 `[num_tokens]`: each new token's slot, `page * page_size + offset`.
    pub slot_mapping: *const i32,
}

/// Where a step's tables lie in the cache's table buffer (element offsets).
#[derive(Clone, Copy, Debug, Default)]
struct TableOffsets {
    block_table: usize,
    seq_lens: usize,
    cu_seqlens: usize,
    slot_mapping: usize,
    copies: usize,
    /// Rows and row length of the block table.
    batch: usize,
    max_pages: usize,
}

/// A snapshot of a cache's counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCacheStats {
    /// Pages in each pool.
    pub pages_total: usize,
    /// Pages no sequence holds and the prefix cache does not keep.
    pub pages_free: usize,
    /// Pages no sequence holds that the prefix cache keeps (evicted when space is needed).
    pub pages_cached: usize,
    /// Pages held by more than one sequence.
    pub pages_shared: usize,
    /// Bytes of one page over every pool (K and V of every layer).
    pub bytes_per_page: usize,
    /// Bytes of every pool.
    pub bytes_total: usize,
    /// Every live sequence and its length, by id.
    pub sequences: Vec<(SeqId, usize)>,
}

/// The pools of every layer, in one allocation: `[num_layers, 2 (K, V), num_pages, page]`.
enum Pools {
    F16(Tensor<f16>),
    Bf16(Tensor<bf16>),
}

/// A device-resident paged KV cache. Every operation either succeeds completely or changes
/// nothing (`Error::OutOfPages` included); one cache is used from one thread at a time (`&mut
/// self`). The pools are allocated once, at creation; each step uploads its tables in one copy
/// into a buffer that grows only when a step is larger than any before.
pub struct PagedKvCache {
    config: KvCacheConfig,
    device: Device,
    pools: Pools,
    tables: Tensor<i32>,
    staging: Vec<i32>,
    offsets: TableOffsets,
    manager: Manager,
    /// The latest reserve's plan number (0: none yet).
    step: u64,
    num_tokens: usize,
    /// Whether the step's tables are on the device as planned (a failed upload leaves them not).
    step_ready: bool,
    /// The step's most new tokens and longest sequence (what sizes attention's grid).
    step_bounds: [usize; 2],
}

/// Table elements the buffer starts with.
const INITIAL_TABLE_CAPACITY: usize = 256;

impl PagedKvCache {
    /// A cache of `config.num_pages` pages a pool on `device` (zeroed).
    pub fn new(device: &Device, config: KvCacheConfig) -> Result<PagedKvCache> {
        config.validate()?;
        let pool_elems = config.num_pages * config.page_elems();
        let shape = [config.num_layers, 2, config.num_pages, config.page_elems()];
        debug_assert_eq!(
            shape.iter().product::<usize>(),
            2 * config.num_layers * pool_elems
        );
        let pools = match config.dtype {
            DType::F16 => Pools::F16(Tensor::zeros(device, &shape)?),
            DType::BF16 => Pools::Bf16(Tensor::zeros(device, &shape)?),
            DType::F32 | DType::I32 => unreachable!("validated"),
        };
        Ok(PagedKvCache {
            config,
            device: device.clone(),
            pools,
            tables: Tensor::zeros(device, &[INITIAL_TABLE_CAPACITY])?,
            staging: Vec::new(),
            offsets: TableOffsets::default(),
            manager: Manager::new(config.num_pages, config.page_size),
            step: 0,
            num_tokens: 0,
            step_ready: false,
            step_bounds: [0, 0],
        })
    }

    /// A cache with as many pages as fit in `bytes` of pool memory (`config.num_pages` is
    /// ignored).
    pub fn with_memory_budget(
        device: &Device,
        config: KvCacheConfig,
        bytes: u64,
    ) -> Result<PagedKvCache> {
        let num_pages = config.pages_in_budget(bytes)?;
        // Capped at what int32 slots can address; the budget may hold more.
        let num_pages = num_pages.min(i32::MAX as usize / config.page_size);
        PagedKvCache::new(
            device,
            KvCacheConfig {
                num_pages,
                ..config
            },
        )
    }

    /// The cache's shape, as made (with `num_pages` resolved by `with_memory_budget`).
    pub fn config(&self) -> &KvCacheConfig {
        &self.config
    }

    /// The device that holds the pools, whose stream runs the cache's work.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Reorders the free pages by a seeded shuffle, so that the pages a sequence gets next are
    /// seldom adjacent: how a long-running engine's pages end up, for tests and benchmarks of the
    /// kernels that gather pages. Changes no sequence.
    pub fn shuffle_free_pages(&mut self, seed: u64) {
        self.manager.shuffle_free(seed);
    }

    /// A new empty sequence.
    pub fn add_sequence(&mut self) -> SeqId {
        SeqId(self.manager.add_sequence())
    }

    /// A new sequence whose prompt is `token_ids`: it shares the longest run of whole pages of
    /// that prompt already in the cache (found by a chained hash of each page's tokens, and
    /// confirmed by comparing them), leaving at least one token to compute so that the engine
    /// gets the last position's logits. Returns the sequence and the tokens it starts with; the
    /// engine reserves and appends the rest with [`reserve_with_tokens`](Self::reserve_with_tokens),
    /// which puts the pages they fill into the prefix cache in turn.
    pub fn add_sequence_with_prefix(&mut self, token_ids: &[u32]) -> (SeqId, usize) {
        let (id, cached) = self.manager.add_sequence_with_prefix(token_ids);
        (SeqId(id), cached)
    }

    /// A new sequence sharing every page of `seq` (beam search, parallel sampling): nothing is
    /// copied until one of them writes into a shared, partly filled page.
    pub fn fork(&mut self, seq: SeqId) -> Result<SeqId> {
        Ok(SeqId(self.manager.fork(seq.0)?))
    }

    /// Drops the tokens of `seq` from `new_len` on (speculative decoding's rollback); pages no
    /// longer used are released.
    pub fn truncate(&mut self, seq: SeqId, new_len: usize) -> Result<()> {
        self.manager.truncate(seq.0, new_len)
    }

    /// Ends `seq`. Its full pages whose tokens are known stay in the prefix cache until their
    /// space is needed.
    pub fn free(&mut self, seq: SeqId) -> Result<()> {
        self.manager.free(seq.0)
    }

    /// The tokens `seq` holds.
    pub fn sequence_len(&self, seq: SeqId) -> Result<usize> {
        self.manager.seq_len(seq.0)
    }

    /// The pages `seq` holds, in order.
    pub fn sequence_pages(&self, seq: SeqId) -> Result<&[u32]> {
        self.manager.seq_pages(seq.0)
    }

    /// The cache's page counts, its bytes and each sequence's length, now.
    pub fn stats(&self) -> KvCacheStats {
        let counts = self.manager.counts();
        KvCacheStats {
            pages_total: self.config.num_pages,
            pages_free: counts.free,
            pages_cached: counts.cached,
            pages_shared: counts.shared,
            bytes_per_page: self.config.bytes_per_page(),
            bytes_total: self.config.bytes_per_page() * self.config.num_pages,
            sequences: self
                .manager
                .seq_lens()
                .map(|(id, len)| (SeqId(id), len))
                .collect(),
        }
    }

    /// Plans a step in which each `(seq, new_tokens)` gets that many new tokens: allocates their
    /// pages (evicting cached pages no sequence holds, least recently used first), copies a
    /// shared, partly filled last page that a sequence is about to write (queued on the device),
    /// and uploads the step's tables in one copy. `Error::OutOfPages` (nothing changed) when the
    /// step needs more pages than are free or evictable.
    pub fn reserve(&mut self, requests: &[(SeqId, usize)]) -> Result<StepPlan> {
        let requests: Vec<Request<'_>> = requests
            .iter()
            .map(|&(seq, new_tokens)| Request {
                seq: seq.0,
                new_tokens,
                token_ids: None,
            })
            .collect();
        self.reserve_requests(&requests)
    }

    /// [`reserve`](Self::reserve) with the new tokens' ids: pages they fill of sequences whose
    /// tokens are known (made by [`add_sequence_with_prefix`](Self::add_sequence_with_prefix),
    /// or forked from one) join the prefix cache.
    pub fn reserve_with_tokens(&mut self, requests: &[(SeqId, &[u32])]) -> Result<StepPlan> {
        let requests: Vec<Request<'_>> = requests
            .iter()
            .map(|&(seq, ids)| Request {
                seq: seq.0,
                new_tokens: ids.len(),
                token_ids: Some(ids),
            })
            .collect();
        self.reserve_requests(&requests)
    }

    /// Grows the device tables ahead to hold steps of up to `max_batch` sequences, `max_tokens`
    /// new tokens and `max_pages_per_seq` pages a sequence, so that no later reserve within
    /// those moves them (CUDA graphs captured over them stay valid).
    pub fn reserve_tables(
        &mut self,
        max_batch: usize,
        max_tokens: usize,
        max_pages_per_seq: usize,
    ) -> Result<()> {
        let need = table_len(max_batch, max_tokens, max_pages_per_seq)
            .ok_or_else(|| Error::invalid("max_batch", "the table size overflows"))?;
        self.grow_tables(need).map(|_| ())
    }

    /// Makes the table buffer hold `need` elements; whether it moved.
    fn grow_tables(&mut self, need: usize) -> Result<bool> {
        let capacity = self.tables.numel();
        if need <= capacity {
            return Ok(false);
        }
        let new_capacity = need.max(2 * capacity);
        self.tables = Tensor::zeros(&self.device, &[new_capacity])?;
        Ok(true)
    }

    fn reserve_requests(&mut self, requests: &[Request<'_>]) -> Result<StepPlan> {
        // Sized before anything changes, so that a failed allocation changes nothing.
        let mut max_pages = 0usize;
        let mut tokens = 0usize;
        for r in requests {
            let len = self.manager.seq_len(r.seq)?;
            let pages = len
                .saturating_add(r.new_tokens)
                .div_ceil(self.config.page_size);
            max_pages = max_pages.max(pages);
            tokens = tokens.saturating_add(r.new_tokens);
        }
        let batch = requests.len();
        if batch > i32::MAX as usize || max_pages > i32::MAX as usize {
            return Err(Error::invalid(
                "requests",
                format!("{batch} sequences of up to {max_pages} pages: the tables are int32"),
            ));
        }
        let need = table_len(batch, tokens, max_pages)
            .ok_or_else(|| Error::invalid("requests", "the step's table size overflows"))?;
        let moved = self.grow_tables(need)?;

        let reservation = self.manager.reserve(requests)?;
        // The previous plan's tables are overwritten from here on.
        self.step += 1;
        self.step_ready = false;

        let staging = &mut self.staging;
        staging.clear();
        let mut offsets = TableOffsets::default();
        for r in requests {
            let pages = self.manager.seq_pages(r.seq)?;
            staging.extend(pages.iter().map(|&p| p as i32));
            staging.extend(std::iter::repeat_n(-1, max_pages - pages.len()));
        }
        offsets.seq_lens = staging.len();
        let mut seq_lens = Vec::with_capacity(batch);
        for r in requests {
            let len = self.manager.seq_len(r.seq)?;
            seq_lens.push(len);
            staging.push(len as i32);
        }
        offsets.cu_seqlens = staging.len();
        let mut cu_seqlens = Vec::with_capacity(batch + 1);
        cu_seqlens.push(0);
        staging.push(0);
        for r in requests {
            let end = cu_seqlens.last().copied().unwrap_or(0) + r.new_tokens;
            cu_seqlens.push(end);
            staging.push(end as i32);
        }
        offsets.slot_mapping = staging.len();
        staging.extend_from_slice(&reservation.slots);
        offsets.copies = staging.len();
        offsets.batch = batch;
        offsets.max_pages = max_pages;
        for &(src, dst) in &reservation.copies {
            staging.extend([src as i32, dst as i32]);
        }
        debug_assert!(staging.len() <= need);
        self.offsets = offsets;
        self.num_tokens = tokens;

        self.tables.write_buffer_range(0, &self.staging)?;
        if !reservation.copies.is_empty() {
            self.copy_pages(reservation.copies.len())?;
        }
        self.step_ready = true;
        self.step_bounds = [
            requests.iter().map(|r| r.new_tokens).max().unwrap_or(0),
            seq_lens.iter().copied().max().unwrap_or(0),
        ];
        Ok(StepPlan {
            step: self.step,
            seqs: requests.iter().map(|r| SeqId(r.seq)).collect(),
            cu_seqlens,
            seq_lens,
            max_pages_per_seq: max_pages,
            copied_pages: reservation.copies.len(),
            tables_moved: moved,
        })
    }

    /// Checks that `plan` is the latest reserve's and `layer` exists.
    fn check_plan(&self, layer: usize, plan_step: u64) -> Result<()> {
        if plan_step != self.step || !self.step_ready {
            return Err(Error::invalid(
                "plan",
                format!(
                    "step {plan_step} is not the cache's current step ({}): appends and views \
                     take the plan of the latest successful reserve",
                    self.step
                ),
            ));
        }
        if layer >= self.config.num_layers {
            return Err(Error::invalid(
                "layer",
                format!("{layer}: the cache has {} layers", self.config.num_layers),
            ));
        }
        Ok(())
    }

    /// Writes the step's new keys and values of `layer` into their slots: `k_new` and `v_new` are
    /// `[plan.num_tokens(), kv_heads, head_dim]` of the cache's dtype, any row and head strides
    /// with contiguous columns, on the cache's device (another stream of its context is joined).
    /// Queued without synchronizing or allocating, so it can be captured in a CUDA graph.
    pub fn append<T: AttentionElement>(
        &mut self,
        layer: usize,
        plan: &StepPlan,
        k_new: &Tensor<T>,
        v_new: &Tensor<T>,
    ) -> Result<()> {
        self.check_plan(layer, plan.step)?;
        let expected = [self.num_tokens, self.config.kv_heads, self.config.head_dim];
        for (name, t) in [("k_new", k_new), ("v_new", v_new)] {
            if T::DTYPE != self.config.dtype {
                return Err(Error::invalid(
                    name,
                    format!(
                        "dtype {}, but the cache holds {}",
                        T::DTYPE,
                        self.config.dtype
                    ),
                ));
            }
            if t.shape() != expected {
                return Err(Error::invalid(
                    name,
                    format!(
                        "shape {:?}, expected [num_tokens, kv_heads, head_dim] = {expected:?} \
                         (the plan's tokens and the cache's heads)",
                        t.shape()
                    ),
                ));
            }
            if t.strides()[2] != 1 && expected[2] > 1 {
                return Err(Error::invalid(
                    name,
                    format!(
                        "strides {:?}: the last dimension must be contiguous",
                        t.strides()
                    ),
                ));
            }
            if !t.device().same_memory(&self.device) {
                return Err(Error::invalid(
                    name,
                    format!("on {:?}, but the cache is on {:?}", t.device(), self.device),
                ));
            }
        }
        launch::append(self, layer, k_new, v_new)
    }

    /// [`append`](Self::append) from raw device pointers (the C API's): `k` and `v` with
    /// positive strides that keep heads and tokens apart.
    ///
    /// # Safety
    /// `k.ptr` and `v.ptr` must address `[plan.num_tokens(), kv_heads, head_dim]` elements of the
    /// cache's dtype on its device at the given strides, alive until the launch has run.
    pub(crate) unsafe fn append_raw(
        &mut self,
        layer: usize,
        plan_step: u64,
        k: launch::NewRows,
        v: launch::NewRows,
    ) -> Result<()> {
        self.check_plan(layer, plan_step)?;
        let head_dim = self.config.head_dim as i64;
        for (name, rows) in [("k_new", k), ("v_new", v)] {
            if self.num_tokens > 0
                && (rows.ptr.is_null() || rows.head_stride < head_dim || rows.row_stride < head_dim)
            {
                return Err(Error::invalid(
                    name,
                    format!(
                        "{:?} with row stride {} and head stride {}: a pointer, and strides of \
                         at least head_dim ({head_dim}) elements",
                        rows.ptr, rows.row_stride, rows.head_stride
                    ),
                ));
            }
        }
        // SAFETY: forwarded caller contract.
        unsafe { launch::append_rows(self, layer, k, v) }
    }

    /// The current step's tables as device pointers (int32: block table `[batch,
    /// max_pages_per_seq]`, sequence lengths `[batch]`, `cu_seqlens` `[batch + 1]`, slot mapping
    /// `[num_tokens]`), for an engine's own kernels. Valid until the next reserve.
    pub fn tables(&self, plan: &StepPlan) -> Result<StepTables> {
        Ok(self.step_queries(plan.step)?.0)
    }

    /// The tables of step `step` (the latest) with its new tokens, most new tokens of a
    /// sequence and longest sequence: what attention over the step needs.
    pub(crate) fn step_queries(&self, step: u64) -> Result<(StepTables, usize, [usize; 2])> {
        self.check_plan(0, step)?;
        let base = self.tables.device_address().cast::<i32>().cast_const();
        let tables = StepTables {
            block_table: base.wrapping_add(self.offsets.block_table),
            seq_lens: base.wrapping_add(self.offsets.seq_lens),
            cu_seqlens: base.wrapping_add(self.offsets.cu_seqlens),
            slot_mapping: base.wrapping_add(self.offsets.slot_mapping),
        };
        Ok((tables, self.num_tokens, self.step_bounds))
    }

    /// `layer`'s pools and `plan`'s tables, for the kernels that read the cache. Borrows the
    /// cache, so the pools outlive it; the tables hold until the next reserve.
    pub fn view(&self, layer: usize, plan: &StepPlan) -> Result<PagedKvView<'_>> {
        self.view_of_step(layer, plan.step)
    }

    /// [`view`](Self::view) by the plan's step number (the C API's).
    pub(crate) fn view_of_step(&self, layer: usize, step: u64) -> Result<PagedKvView<'_>> {
        self.check_plan(layer, step)?;
        Ok(PagedKvView::from_parts(self.raw_view(layer), &self.device))
    }

    /// The view's struct for `layer` and the current step's tables.
    fn raw_view(&self, layer: usize) -> ffi::cuattn_paged_kv_view {
        let c = &self.config;
        let [page_stride, slot_stride, head_stride] =
            c.layout.strides(c.page_size, c.kv_heads, c.head_dim);
        let (k_pages, v_pages) = self.layer_pools(layer);
        let tables = self.tables.device_address().cast::<i32>();
        // SAFETY (of the offsets): each lies within the table buffer (reserve sized it).
        let at = |offset: usize| tables.wrapping_add(offset).cast_const();
        ffi::cuattn_paged_kv_view {
            k_pages,
            v_pages,
            k_page_stride: page_stride as i64,
            k_slot_stride: slot_stride as i64,
            k_head_stride: head_stride as i64,
            v_page_stride: page_stride as i64,
            v_slot_stride: slot_stride as i64,
            v_head_stride: head_stride as i64,
            block_table: at(self.offsets.block_table),
            block_table_stride: self.offsets.max_pages as i64,
            seq_lens: at(self.offsets.seq_lens),
            batch: self.offsets.batch as i32,
            max_pages_per_seq: self.offsets.max_pages as i32,
            num_pages: c.num_pages as i32,
            page_size: c.page_size as i32,
            kv_heads: c.kv_heads as i32,
            head_dim: c.head_dim as i32,
            layout: c.layout.to_ffi(),
            dtype: c.dtype.to_ffi().expect("validated: f16 or bf16"),
        }
    }

    /// The device addresses of `layer`'s K and V pools.
    fn layer_pools(&self, layer: usize) -> (*mut std::ffi::c_void, *mut std::ffi::c_void) {
        let pool_elems = self.config.num_pages * self.config.page_elems();
        let base = match &self.pools {
            Pools::F16(t) => t.device_address(),
            Pools::Bf16(t) => t.device_address(),
        }
        .cast::<u16>();
        let k = base.wrapping_add(2 * layer * pool_elems);
        let v = k.wrapping_add(pool_elems);
        (k.cast(), v.cast())
    }

    /// Queues the copy of the step's `count` copy-on-write pages in every pool.
    fn copy_pages(&mut self, count: usize) -> Result<()> {
        launch::copy_pages(self, count)
    }

    /// Reads the keys and values `seq` holds in `layer` back from the device pages:
    /// `[len, kv_heads, head_dim]` each, row-major (synchronizes; for tests and debugging).
    pub fn read_sequence<T: AttentionElement>(
        &self,
        layer: usize,
        seq: SeqId,
    ) -> Result<(Vec<T>, Vec<T>)> {
        if T::DTYPE != self.config.dtype {
            return Err(Error::invalid(
                "T",
                format!("{}, but the cache holds {}", T::DTYPE, self.config.dtype),
            ));
        }
        if layer >= self.config.num_layers {
            return Err(Error::invalid(
                "layer",
                format!("{layer}: the cache has {} layers", self.config.num_layers),
            ));
        }
        let c = &self.config;
        let len = self.manager.seq_len(seq.0)?;
        let pages = self.manager.seq_pages(seq.0)?;
        let [_, slot_stride, head_stride] = c.layout.strides(c.page_size, c.kv_heads, c.head_dim);
        let pool_elems = c.num_pages * c.page_elems();
        let row = c.kv_heads * c.head_dim;
        let mut out = (vec![T::default(); len * row], vec![T::default(); len * row]);
        for (i, &page) in pages.iter().enumerate() {
            let tokens = c.page_size.min(len - i * c.page_size);
            for (pool, dst) in [(0, &mut out.0), (1, &mut out.1)] {
                let start = (2 * layer + pool) * pool_elems + page as usize * c.page_elems();
                let words = self.read_pool(start, c.page_elems())?;
                for t in 0..tokens {
                    for h in 0..c.kv_heads {
                        let from = t * slot_stride + h * head_stride;
                        let to = (i * c.page_size + t) * row + h * c.head_dim;
                        for d in 0..c.head_dim {
                            dst[to + d] = T::from_f64(words[from + d]);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// `len` pool elements from `start`, widened to f64 (exact for f16 and bf16).
    fn read_pool(&self, start: usize, len: usize) -> Result<Vec<f64>> {
        Ok(match &self.pools {
            Pools::F16(t) => t
                .read_buffer_range(start, len)?
                .into_iter()
                .map(|x| x.to_f64())
                .collect(),
            Pools::Bf16(t) => t
                .read_buffer_range(start, len)?
                .into_iter()
                .map(|x| x.to_f64())
                .collect(),
        })
    }

    /// Checks the block manager's invariants (every page free, cached or held, reference counts
    /// equal to the holders, the free and LRU lists consistent): for tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        self.manager.check_invariants()
    }

    /// The host state (sequences, pages, counts, prefix cache), to compare before and after a
    /// call that must change nothing: for tests.
    #[doc(hidden)]
    pub fn host_snapshot(&self) -> HostSnapshot {
        HostSnapshot(self.manager.clone())
    }

    /// Replaces the prefix cache's page hash (from a new cache on): for tests that plant
    /// collisions.
    #[doc(hidden)]
    pub fn set_prefix_hash_for_tests(&mut self, hash: fn(Option<u64>, &[u32]) -> u64) {
        self.manager.set_hasher(hash);
    }
}

/// An opaque copy of a cache's host state, compared with `==`.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq)]
pub struct HostSnapshot(Manager);

/// Table elements of a step: block table, lengths, cu_seqlens, slots and copy pairs (at most one
/// a sequence).
fn table_len(batch: usize, tokens: usize, max_pages: usize) -> Option<usize> {
    batch
        .checked_mul(max_pages)?
        .checked_add(batch)?
        .checked_add(batch + 1)?
        .checked_add(tokens)?
        .checked_add(batch.checked_mul(2)?)
}
