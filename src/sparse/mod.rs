//! Block-sparse attention: exact attention over the (query block, key block) pairs a block mask
//! lists, every other block of scores neither read nor computed, so the cost falls with the
//! density.
//!
//! A [`BlockMatrix`] says which blocks are visible (built from a dense boolean matrix, from a
//! [`Pattern`], or as the union or intersection of others); a [`BlockMask`] is that matrix
//! composed with the call's element rule (causal or sliding window, and the sequences' ends) and
//! stored on the device in compressed rows, as FlexAttention's BlockMask is: per query block the
//! count and the sorted indices of its **full** key blocks (every element visible: the kernel
//! runs no mask arithmetic there) and of its **partial** ones (the element rule cuts them: the
//! kernel masks each score). Blocks the element rule hides entirely are dropped.
//!
//! ```
//! use cuattn::sparse::{block_sparse_attention, BlockMask, Pattern};
//! use cuattn::{AttentionOptions, Device, Tensor};
//! use half::bf16;
//!
//! let device = Device::emulator();
//! let (seqlen, heads, head_dim) = (200, 2, 64);
//! let q = Tensor::full(&device, &[1, seqlen, heads, head_dim], bf16::from_f32(0.5))?;
//! let kv = Tensor::full(&device, &[1, seqlen, heads, head_dim], bf16::from_f32(0.25))?;
//! let opts = AttentionOptions { causal: true, ..Default::default() };
//! let pattern: Pattern = "longformer:w=1,global=1".parse()?;
//! let mask = BlockMask::from_pattern(&device, &pattern, heads, (64, 64), &[(seqlen, seqlen)], &opts)?;
//! let out = block_sparse_attention(&q, &kv, &kv, &mask, &opts)?;
//! assert!(out.out.to_host()?.iter().all(|x| x.to_f32() == 0.25));
//! # Ok::<(), cuattn::Error>(())
//! ```

mod pattern;

pub use pattern::Pattern;

use crate::attention::{self, AttentionOptions, AttentionOutput, VarlenBatch};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ffi;
use crate::tensor::{AttentionElement, Tensor};

/// Block sizes are multiples of this (whole m16 tiles of query rows, k16 blocks of keys).
pub const BLOCK_MULTIPLE: usize = 16;

/// A dense boolean block matrix `[batch or 1, heads or 1, nq, nk]` on the host: entry `(b, h, i,
/// j)` says whether query block `i` of sequence `b`, head `h`, sees key block `j`. A dim of 1 is
/// shared by every sequence or head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMatrix {
    dims: [usize; 4],
    blocks: Vec<bool>,
}

impl BlockMatrix {
    /// `blocks` row-major over `dims = [batch or 1, heads or 1, nq, nk]`.
    pub fn new(dims: [usize; 4], blocks: Vec<bool>) -> Result<BlockMatrix> {
        let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if dims[0] == 0 || dims[1] == 0 || count != Some(blocks.len()) {
            return Err(Error::invalid(
                "block_mask",
                format!(
                    "{} entries for dims {dims:?} [batch or 1, heads or 1, nq, nk]: batch and \
                     heads at least 1, and one entry per block",
                    blocks.len()
                ),
            ));
        }
        Ok(BlockMatrix { dims, blocks })
    }

    /// Every block of an `nq` x `nk` grid visible: dense attention in blocks.
    pub fn dense(nq: usize, nk: usize) -> BlockMatrix {
        BlockMatrix {
            dims: [1, 1, nq, nk],
            blocks: vec![true; nq * nk],
        }
    }

    /// `[batch or 1, heads or 1, nq, nk]`.
    pub fn dims(&self) -> [usize; 4] {
        self.dims
    }

    /// The entries, row-major over [`dims`](Self::dims).
    pub fn blocks(&self) -> &[bool] {
        &self.blocks
    }

    /// Entry `(b, h, i, j)`, a dim of 1 serving every index.
    pub fn get(&self, b: usize, h: usize, i: usize, j: usize) -> bool {
        let [batch, heads, nq, nk] = self.dims;
        let b = if batch == 1 { 0 } else { b };
        let h = if heads == 1 { 0 } else { h };
        self.blocks[((b * heads + h) * nq + i) * nk + j]
    }

    /// The share of visible blocks.
    pub fn density(&self) -> f64 {
        let visible = self.blocks.iter().filter(|&&b| b).count();
        visible as f64 / self.blocks.len().max(1) as f64
    }

    /// The union (`|`) of two matrices of the same grid; a dim of 1 broadcasts against the
    /// other's.
    pub fn union(&self, other: &BlockMatrix) -> Result<BlockMatrix> {
        self.combine(other, |a, b| a || b)
    }

    /// The intersection (`&`) of two matrices of the same grid; a dim of 1 broadcasts.
    pub fn intersection(&self, other: &BlockMatrix) -> Result<BlockMatrix> {
        self.combine(other, |a, b| a && b)
    }

    fn combine(&self, other: &BlockMatrix, op: impl Fn(bool, bool) -> bool) -> Result<BlockMatrix> {
        let [ab, ah, nq, nk] = self.dims;
        let [bb, bh, oq, ok] = other.dims;
        let broadcast = |x: usize, y: usize| (x == y || x == 1 || y == 1).then_some(x.max(y));
        let (Some(batch), Some(heads), true) =
            (broadcast(ab, bb), broadcast(ah, bh), (nq, nk) == (oq, ok))
        else {
            return Err(Error::invalid(
                "block_mask",
                format!(
                    "dims {:?} and {:?}: the grids (nq, nk) must match, batch and heads match or \
                     be 1",
                    self.dims, other.dims
                ),
            ));
        };
        let mut blocks = Vec::with_capacity(batch * heads * nq * nk);
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..nq {
                    for j in 0..nk {
                        blocks.push(op(self.get(b, h, i, j), other.get(b, h, i, j)));
                    }
                }
            }
        }
        BlockMatrix::new([batch, heads, nq, nk], blocks)
    }
}

/// How the element rule cuts block `(i, j)`: hides it whole, leaves it whole, or cuts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    Hidden,
    Full,
    Partial,
}

/// The element rule of one sequence: its lengths and the window (left, right), -1 unbounded.
#[derive(Clone, Copy, Debug)]
struct Rule {
    len_q: usize,
    len_k: usize,
    window: (i32, i32),
}

impl Rule {
    /// Keys `[begin, end)` query row `row` sees (the kernels' `visible_keys`).
    fn keys(&self, row: usize) -> (i64, i64) {
        let (len_q, len_k) = (self.len_q as i64, self.len_k as i64);
        let diag = row as i64 + len_k - len_q;
        let (left, right) = self.window;
        let begin = if left < 0 {
            0
        } else {
            (diag - i64::from(left)).max(0)
        };
        let end = if right < 0 {
            len_k
        } else {
            (diag + i64::from(right) + 1).min(len_k)
        };
        (begin, end.max(begin))
    }

    /// Block `(i, j)` of sizes `(bq, bk)`. Both ends of a row's keys grow with the row (and a
    /// row that sees nothing has end 0), so: some row sees a key of the block iff the first row
    /// whose keys end past the block's first key begins before its end; every row sees every key
    /// iff the last row begins by the block's first key and the first row ends past its last one
    /// (which the sequence must hold).
    fn cut(&self, i: usize, j: usize, (bq, bk): (usize, usize)) -> Cut {
        let first_row = i * bq;
        if first_row >= self.len_q || j * bk >= self.len_k {
            return Cut::Hidden;
        }
        let last_row = ((i + 1) * bq).min(self.len_q) - 1;
        let (key0, key1) = ((j * bk) as i64, ((j + 1) * bk) as i64);
        // Binary search for the first row whose keys end past key0.
        let (mut lo, mut hi) = (first_row, last_row + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.keys(mid).1 <= key0 {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo > last_row || self.keys(lo).0 >= key1 {
            return Cut::Hidden;
        }
        let whole = key1 <= self.len_k as i64
            && self.keys(last_row).0 <= key0
            && self.keys(first_row).1 >= key1;
        if whole {
            Cut::Full
        } else {
            Cut::Partial
        }
    }
}

/// A block mask on the device: a [`BlockMatrix`] composed with an element rule (the call's
/// causal or window mask, the sequences' lengths) into compressed rows of full and partial key
/// blocks per query block (see the module docs and `cuattn_block_mask` in `cuattn.h`).
pub struct BlockMask {
    block_size: (usize, usize),
    matrix: BlockMatrix,
    lengths: Vec<(usize, usize)>,
    window: (i32, i32),
    full_counts: Vec<i32>,
    full_indices: Vec<i32>,
    partial_counts: Vec<i32>,
    partial_indices: Vec<i32>,
    tensors: [Tensor<i32>; 4],
}

impl BlockMask {
    /// Composes `matrix` with the element rule of `opts` (its causal flag and window) over
    /// sequences of `lengths` (seqlen_q, seqlen_k): one entry for a mask that every sequence of a
    /// dense batch shares, or one per sequence, as many as the matrix's batch dim, for a
    /// variable-length batch under a causal or window mask (whose diagonal moves with each
    /// sequence's lengths). The grid must be `nq = ceil(max seqlen_q / block_q)` by `nk =
    /// ceil(max seqlen_k / block_k)`. Block sizes are multiples of [`BLOCK_MULTIPLE`].
    pub fn new(
        device: &Device,
        matrix: BlockMatrix,
        block_size: (usize, usize),
        lengths: &[(usize, usize)],
        opts: &AttentionOptions,
    ) -> Result<BlockMask> {
        check_block_size(block_size)?;
        let [batch, heads, nq, nk] = matrix.dims();
        check_grid(block_size, lengths, nq, nk)?;
        if lengths.len() != 1 && batch != 1 && lengths.len() != batch {
            return Err(Error::invalid(
                "lengths",
                format!(
                    "{} entries for a mask of batch {batch}: one shared entry, or one per \
                     sequence (a matrix of batch 1 then serves each)",
                    lengths.len()
                ),
            ));
        }
        let window = opts.effective_window();
        let mut lists = Lists::new(batch.max(lengths.len()) * heads * nq, nk);
        for b in 0..batch.max(lengths.len()) {
            let (len_q, len_k) = lengths[if lengths.len() == 1 { 0 } else { b }];
            let rule = Rule {
                len_q,
                len_k,
                window,
            };
            for h in 0..heads {
                for i in 0..nq {
                    let row = (b * heads + h) * nq + i;
                    for j in 0..nk {
                        if matrix.get(b, h, i, j) {
                            match rule.cut(i, j, block_size) {
                                Cut::Hidden => {}
                                Cut::Full => lists.push_full(row, j),
                                Cut::Partial => lists.push_partial(row, j),
                            }
                        }
                    }
                }
            }
        }
        let mask_batch = batch.max(lengths.len());
        let matrix = if mask_batch == batch {
            matrix
        } else {
            matrix.union(&BlockMatrix::new(
                [mask_batch, 1, nq, nk],
                vec![false; mask_batch * nq * nk],
            )?)?
        };
        BlockMask::upload(device, block_size, matrix, lengths, window, lists)
    }

    /// `pattern` over sequences of `lengths` (see [`new`](Self::new)), for `heads` query heads:
    /// each sequence's pattern on its own grid (bottom-right aligned to its own lengths,
    /// [`Pattern::blocks_for`]).
    pub fn from_pattern(
        device: &Device,
        pattern: &Pattern,
        heads: usize,
        block_size: (usize, usize),
        lengths: &[(usize, usize)],
        opts: &AttentionOptions,
    ) -> Result<BlockMask> {
        check_block_size(block_size)?;
        let matrix = pattern.blocks_for(heads, block_size, lengths)?;
        BlockMask::new(device, matrix, block_size, lengths, opts)
    }

    /// A mask given in compressed rows (the layout of `cuattn_block_mask`): counts `[batch,
    /// heads, nq]` and indices `[batch, heads, nq, nk]` (each row its count's indices first, the
    /// rest ignored) for the full and the partial blocks, checked: counts in `0..=nk`, indices in
    /// `0..nk`, each list sorted and without repeats, no block in both lists, and every full
    /// block whole under the element rule of `opts` over `lengths` (else it must be partial).
    #[allow(clippy::too_many_arguments)]
    pub fn from_compressed(
        device: &Device,
        block_size: (usize, usize),
        dims: [usize; 4],
        full: (&[i32], &[i32]),
        partial: (&[i32], &[i32]),
        lengths: &[(usize, usize)],
        opts: &AttentionOptions,
    ) -> Result<BlockMask> {
        check_block_size(block_size)?;
        let [batch, heads, nq, nk] = dims;
        BlockMatrix::new(dims, vec![false; dims.iter().product()])?;
        check_grid(block_size, lengths, nq, nk)?;
        if lengths.len() != 1 && lengths.len() != batch {
            return Err(Error::invalid(
                "lengths",
                format!("{} entries for a mask of batch {batch}", lengths.len()),
            ));
        }
        let rows = batch * heads * nq;
        let window = opts.effective_window();
        let mut lists = Lists::new(rows, nk);
        let mut matrix = vec![false; rows * nk];
        for (kind, (counts, indices)) in [("full", full), ("partial", partial)] {
            if counts.len() != rows || indices.len() != rows * nk {
                return Err(Error::invalid(
                    kind,
                    format!(
                        "{} counts and {} indices: a mask of dims {dims:?} has {rows} and {}",
                        counts.len(),
                        indices.len(),
                        rows * nk
                    ),
                ));
            }
            for row in 0..rows {
                let count = counts[row];
                if count < 0 || count as usize > nk {
                    return Err(Error::invalid(
                        kind,
                        format!("count {count} of query-block row {row}: must be in 0..={nk}"),
                    ));
                }
                let listed = &indices[row * nk..row * nk + count as usize];
                for (n, &j) in listed.iter().enumerate() {
                    if j < 0 || j as usize >= nk {
                        return Err(Error::invalid(
                            kind,
                            format!("index {j} in query-block row {row}: must be in 0..{nk}"),
                        ));
                    }
                    if n > 0 && listed[n - 1] >= j {
                        return Err(Error::invalid(
                            kind,
                            format!(
                                "indices {:?} of query-block row {row}: must be sorted, without \
                                 repeats",
                                listed
                            ),
                        ));
                    }
                    let j = j as usize;
                    if matrix[row * nk + j] {
                        return Err(Error::invalid(
                            "partial",
                            format!(
                                "key block {j} of query-block row {row} is both full and partial"
                            ),
                        ));
                    }
                    matrix[row * nk + j] = true;
                    if kind == "full" {
                        let b = row / (heads * nq);
                        let i = row % nq;
                        let (len_q, len_k) = lengths[if lengths.len() == 1 { 0 } else { b }];
                        let rule = Rule {
                            len_q,
                            len_k,
                            window,
                        };
                        if rule.cut(i, j, block_size) != Cut::Full {
                            return Err(Error::invalid(
                                "full",
                                format!(
                                    "key block {j} of query block {i} (row {row}) is not whole \
                                     under the mask (window {window:?}, lengths ({len_q}, \
                                     {len_k})): list it as partial"
                                ),
                            ));
                        }
                        lists.push_full(row, j);
                    } else {
                        lists.push_partial(row, j);
                    }
                }
            }
        }
        let matrix = BlockMatrix::new(dims, matrix)?;
        BlockMask::upload(device, block_size, matrix, lengths, window, lists)
    }

    fn upload(
        device: &Device,
        block_size: (usize, usize),
        matrix: BlockMatrix,
        lengths: &[(usize, usize)],
        window: (i32, i32),
        lists: Lists,
    ) -> Result<BlockMask> {
        let [batch, heads, nq, nk] = matrix.dims();
        let batch = batch.max(lengths.len());
        let counts_shape = [batch, heads, nq];
        let indices_shape = [batch, heads, nq, nk];
        let upload = |data: &[i32], shape: &[usize], label: &str| -> Result<Tensor<i32>> {
            // A zero-sized grid still gets one element, so that every table has an address.
            if data.is_empty() {
                return Tensor::zeros(device, &[1])?.with_label(label);
            }
            Tensor::from_host(device, data, shape)?.with_label(label)
        };
        let tensors = [
            upload(&lists.full_counts, &counts_shape, "mask_full_counts")?,
            upload(&lists.full_indices, &indices_shape, "mask_full_indices")?,
            upload(&lists.partial_counts, &counts_shape, "mask_partial_counts")?,
            upload(
                &lists.partial_indices,
                &indices_shape,
                "mask_partial_indices",
            )?,
        ];
        Ok(BlockMask {
            block_size,
            matrix,
            lengths: lengths.to_vec(),
            window,
            full_counts: lists.full_counts,
            full_indices: lists.full_indices,
            partial_counts: lists.partial_counts,
            partial_indices: lists.partial_indices,
            tensors,
        })
    }

    /// `(block_q, block_k)`.
    pub fn block_size(&self) -> (usize, usize) {
        self.block_size
    }

    /// The block matrix the mask was built from, before the element rule: what `cuattn run
    /// --save-block-mask` writes.
    pub fn matrix(&self) -> &BlockMatrix {
        &self.matrix
    }

    /// `[batch or 1, heads or 1, nq, nk]` of the device tables.
    pub fn dims(&self) -> [usize; 4] {
        let [_, heads, nq, nk] = self.matrix.dims();
        [self.matrix.dims()[0].max(self.lengths.len()), heads, nq, nk]
    }

    /// The (seqlen_q, seqlen_k) the mask was built for: one shared entry or one per sequence.
    pub fn lengths(&self) -> &[(usize, usize)] {
        &self.lengths
    }

    /// The element rule's window (left, right) the mask was built for, -1 unbounded.
    pub fn window(&self) -> (i32, i32) {
        self.window
    }

    /// Full blocks listed, over every (batch, head) of the tables.
    pub fn full_blocks(&self) -> usize {
        self.full_counts.iter().map(|&c| c as usize).sum()
    }

    /// Partial blocks listed.
    pub fn partial_blocks(&self) -> usize {
        self.partial_counts.iter().map(|&c| c as usize).sum()
    }

    /// The share of the grid's blocks the kernel visits (full and partial), after the element
    /// rule: the share of K/V bytes a run reads against dense attention's.
    pub fn density(&self) -> f64 {
        let [batch, heads, nq, nk] = self.dims();
        let total = batch * heads * nq * nk;
        (self.full_blocks() + self.partial_blocks()) as f64 / total.max(1) as f64
    }

    /// The (query, key) pairs the kernel computes, summed over the tables of
    /// [`dims`](Self::dims): every element of each full block (its rows clipped at the sequence's
    /// end) and, in each partial block, the elements the element rule leaves visible. A table
    /// shared by every head or sequence counts once. Exact: one key range per row of a partial
    /// block.
    pub fn visible_pairs(&self) -> u64 {
        let [batch, heads, nq, _] = self.dims();
        let (bq, bk) = self.block_size;
        let mut pairs = 0u64;
        for b in 0..batch {
            let (len_q, len_k) = self.lengths[if self.lengths.len() == 1 { 0 } else { b }];
            let rule = Rule {
                len_q,
                len_k,
                window: self.window,
            };
            for h in 0..heads {
                for i in 0..nq {
                    let table_row = (b * heads + h) * nq + i;
                    let rows = i * bq..((i + 1) * bq).min(len_q);
                    let full = self.listed(&self.full_counts, &self.full_indices, table_row);
                    pairs += (rows.len() * bk * full.len()) as u64;
                    let partial =
                        self.listed(&self.partial_counts, &self.partial_indices, table_row);
                    for &j in partial {
                        let j = j as usize;
                        let (key0, key1) = ((j * bk) as i64, ((j + 1) * bk).min(len_k) as i64);
                        for row in rows.clone() {
                            let (begin, end) = rule.keys(row);
                            pairs += (end.min(key1) - begin.max(key0)).max(0) as u64;
                        }
                    }
                }
            }
        }
        pairs
    }

    /// The key blocks one compressed list holds for table row `row` (its count's indices).
    fn listed<'a>(&self, counts: &[i32], indices: &'a [i32], row: usize) -> &'a [i32] {
        let nk = self.dims()[3];
        &indices[row * nk..row * nk + counts[row] as usize]
    }

    /// Bytes of the device tables.
    pub fn device_bytes(&self) -> usize {
        self.tensors.iter().map(|t| t.numel() * 4).sum()
    }

    /// The compressed rows on the host: (full counts, full indices, partial counts, partial
    /// indices), laid out as on the device.
    pub fn compressed(&self) -> [&[i32]; 4] {
        [
            &self.full_counts,
            &self.full_indices,
            &self.partial_counts,
            &self.partial_indices,
        ]
    }

    /// The device that holds the mask's tables.
    pub fn device(&self) -> &Device {
        self.tensors[0].device()
    }

    pub(crate) fn tensors(&self) -> &[Tensor<i32>; 4] {
        &self.tensors
    }

    /// The C view, pointers unset.
    pub(crate) fn ffi_shape(&self) -> ffi::cuattn_block_mask {
        let [batch, heads, nq, nk] = self.dims();
        ffi::cuattn_block_mask {
            block_q: self.block_size.0 as i32,
            block_k: self.block_size.1 as i32,
            num_q_blocks: nq as i32,
            num_k_blocks: nk as i32,
            batch: batch as i32,
            heads: heads as i32,
            full_counts: std::ptr::null(),
            full_indices: std::ptr::null(),
            partial_counts: std::ptr::null(),
            partial_indices: std::ptr::null(),
        }
    }

    /// Checks that the mask serves a call of `heads` query heads over sequences of `seqlens`
    /// (one entry per sequence) with `opts` (`varlen`: a packed batch).
    fn check_call(
        &self,
        device: &Device,
        heads: usize,
        seqlens: &[(usize, usize)],
        varlen: bool,
        opts: &AttentionOptions,
    ) -> Result<()> {
        if !self.device().same_memory(device) {
            return Err(Error::invalid("mask", "made for another device than q"));
        }
        if opts.effective_window() != self.window {
            return Err(Error::invalid(
                "mask",
                format!(
                    "built for the window {:?} (left, right; causal is (-1, 0)), but the call's \
                     options give {:?}: build the mask with the call's options",
                    self.window,
                    opts.effective_window()
                ),
            ));
        }
        let [batch, mask_heads, _, _] = self.dims();
        if mask_heads != 1 && mask_heads != heads {
            return Err(Error::invalid(
                "mask",
                format!("{mask_heads} heads: 1 (shared) or q's {heads}"),
            ));
        }
        if batch != 1 && batch != seqlens.len() {
            return Err(Error::invalid(
                "mask",
                format!("batch {batch}: 1 (shared) or the call's {}", seqlens.len()),
            ));
        }
        let masked = self.window != (-1, -1);
        if self.lengths.len() == 1 {
            let max_q = seqlens.iter().map(|s| s.0).max().unwrap_or(0);
            let max_k = seqlens.iter().map(|s| s.1).max().unwrap_or(0);
            let uneven = seqlens.iter().any(|&s| s != self.lengths[0]);
            if self.lengths[0] != (max_q, max_k) || (varlen && masked && uneven) {
                return Err(Error::invalid(
                    "mask",
                    format!(
                        "built for sequences of lengths {:?}, but the call's are {:?}{}",
                        self.lengths[0],
                        seqlens,
                        if masked {
                            "; under a causal or window mask a varlen batch needs one entry per \
                             sequence (BlockMask::new's lengths)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        } else if self.lengths != seqlens {
            return Err(Error::invalid(
                "mask",
                format!(
                    "built for sequences of lengths {:?}, but the call's are {seqlens:?}",
                    self.lengths
                ),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for BlockMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockMask")
            .field("block_size", &self.block_size)
            .field("dims", &self.dims())
            .field("window", &self.window)
            .field("full_blocks", &self.full_blocks())
            .field("partial_blocks", &self.partial_blocks())
            .finish()
    }
}

/// Compressed rows being built: `[rows]` counts and `[rows, nk]` indices, pushed in ascending
/// key-block order per row.
struct Lists {
    nk: usize,
    full_counts: Vec<i32>,
    full_indices: Vec<i32>,
    partial_counts: Vec<i32>,
    partial_indices: Vec<i32>,
}

impl Lists {
    fn new(rows: usize, nk: usize) -> Lists {
        Lists {
            nk,
            full_counts: vec![0; rows],
            full_indices: vec![0; rows * nk],
            partial_counts: vec![0; rows],
            partial_indices: vec![0; rows * nk],
        }
    }

    fn push_full(&mut self, row: usize, j: usize) {
        let n = self.full_counts[row] as usize;
        self.full_indices[row * self.nk + n] = j as i32;
        self.full_counts[row] += 1;
    }

    fn push_partial(&mut self, row: usize, j: usize) {
        let n = self.partial_counts[row] as usize;
        self.partial_indices[row * self.nk + n] = j as i32;
        self.partial_counts[row] += 1;
    }
}

/// Checks `(block_q, block_k)`: positive multiples of [`BLOCK_MULTIPLE`], at most 2^20.
pub(crate) fn check_block_size((bq, bk): (usize, usize)) -> Result<()> {
    let ok = |b: usize| b >= BLOCK_MULTIPLE && b.is_multiple_of(BLOCK_MULTIPLE) && b <= 1 << 20;
    if !ok(bq) || !ok(bk) {
        return Err(Error::invalid(
            "block_size",
            format!(
                "({bq}, {bk}): block_q and block_k must be positive multiples of \
                 {BLOCK_MULTIPLE} (at most 2^20)"
            ),
        ));
    }
    Ok(())
}

/// The block grid (nq, nk) of the longest lengths.
fn grid_of((bq, bk): (usize, usize), lengths: &[(usize, usize)]) -> (usize, usize) {
    let max_q = lengths.iter().map(|s| s.0).max().unwrap_or(0);
    let max_k = lengths.iter().map(|s| s.1).max().unwrap_or(0);
    (max_q.div_ceil(bq), max_k.div_ceil(bk))
}

fn check_grid(
    block_size: (usize, usize),
    lengths: &[(usize, usize)],
    nq: usize,
    nk: usize,
) -> Result<()> {
    if lengths.is_empty() {
        return Err(Error::invalid(
            "lengths",
            "empty: give (seqlen_q, seqlen_k)",
        ));
    }
    let (want_q, want_k) = grid_of(block_size, lengths);
    if (nq, nk) != (want_q, want_k) {
        return Err(Error::invalid(
            "block_mask",
            format!(
                "a grid of {nq} x {nk} blocks, but lengths {lengths:?} in blocks of {block_size:?} \
                 make {want_q} x {want_k}"
            ),
        ));
    }
    Ok(())
}

/// Block-sparse attention on dense q `[batch, seqlen_q, heads, head_dim]`, k and v `[batch,
/// seqlen_k, kv_heads, head_dim]` (GQA and MQA as for [`attention::attention`]), allocating the
/// outputs. `opts` must be the options the mask was built with (its element rule); scale,
/// softcap and LSE as for dense attention.
pub fn block_sparse_attention<T: AttentionElement>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    mask: &BlockMask,
    opts: &AttentionOptions,
) -> Result<AttentionOutput<T>> {
    let (mut out, mut lse) = attention::alloc_outputs(q, None, opts)?;
    block_sparse_attention_into(q, k, v, &mut out, lse.as_mut(), mask, opts)?;
    Ok(AttentionOutput { out, lse })
}

/// [`block_sparse_attention`] into caller-provided outputs (as [`attention::attention_into`]):
/// allocates nothing, never synchronizes.
pub fn block_sparse_attention_into<T: AttentionElement>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &mut Tensor<T>,
    lse: Option<&mut Tensor<f32>>,
    mask: &BlockMask,
    opts: &AttentionOptions,
) -> Result<()> {
    let params = attention::validate_dense(q, k, v, out, lse.as_deref(), opts)?;
    let seqlens = vec![(params.seqlen_q as usize, params.seqlen_k as usize); params.batch as usize];
    mask.check_call(q.device(), params.heads as usize, &seqlens, false, opts)?;
    attention::validate_alignment(attention::Kernel::Flash, [q, k, v, out])?;
    attention::run_call(
        attention::Call::BlockSparse(mask),
        q.device(),
        params,
        [q, k, v],
        out,
        lse,
        None,
    )
}

/// Block-sparse attention over a packed variable-length batch (q `[total_q, heads, head_dim]`,
/// k and v `[total_k, kv_heads, head_dim]`), into caller-provided outputs.
#[allow(clippy::too_many_arguments)]
pub fn block_sparse_attention_varlen_into<T: AttentionElement>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    batch: &VarlenBatch,
    out: &mut Tensor<T>,
    lse: Option<&mut Tensor<f32>>,
    mask: &BlockMask,
    opts: &AttentionOptions,
) -> Result<()> {
    let params = attention::validate_varlen(q, k, v, batch, out, lse.as_deref(), opts)?;
    let seqlens = batch.seqlens().ok_or_else(|| {
        Error::invalid(
            "batch",
            "made from device offsets (VarlenBatch::from_device): the block mask is checked \
             against each sequence's lengths on the host, so give the batch host offsets",
        )
    })?;
    mask.check_call(q.device(), params.heads as usize, seqlens, true, opts)?;
    attention::validate_alignment(attention::Kernel::Flash, [q, k, v, out])?;
    attention::run_call(
        attention::Call::BlockSparse(mask),
        q.device(),
        params,
        [q, k, v],
        out,
        lse,
        Some(batch),
    )
}
