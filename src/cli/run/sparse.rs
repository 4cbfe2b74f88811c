//! `cuattn run attention --pattern P | --block-mask M.npy` with `--block-size BQ,BK`: the dense
//! run's problem through block-sparse attention. The block matrix comes from a pattern (over q's
//! heads, each sequence on its own grid) or a bool/uint8 file (on the longest sequence's grid);
//! `--causal` and `--window`
//! compose with it as the element rule (BlockMask drops the blocks they hide and masks the ones
//! they cut). The outputs are written in the dense run's layouts, so a run equals the dense
//! reference under the block matrix's element mask.

use std::path::{Path, PathBuf};

use super::{upload, varlen_batch, with_flag, Outputs};
use crate::attention::{AttentionOptions, AttentionParams};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::npy::{self, NpyArray};
use crate::sparse::{
    block_sparse_attention, block_sparse_attention_varlen_into, check_block_size, BlockMask,
    BlockMatrix, Pattern,
};
use crate::tensor::{AttentionElement, Tensor};

/// Where a block-sparse run's block matrix comes from.
pub enum MaskSource {
    /// `--pattern`, with `--per-head-random` applied.
    Pattern(Pattern),
    /// `--block-mask`: a bool or uint8 `.npy` file `[batch or 1, heads or 1, nq, nk]`.
    File(PathBuf),
}

impl MaskSource {
    /// The flag that gave the matrix, for messages.
    pub fn flag(&self) -> &'static str {
        match self {
            MaskSource::Pattern(_) => "--pattern",
            MaskSource::File(_) => "--block-mask",
        }
    }
}

/// The block-sparse settings of a run: the matrix's source and the block size (checked by
/// [`BlockMask`] when the run builds the mask).
pub struct SparseSettings {
    /// Where the block matrix comes from.
    pub source: MaskSource,
    /// `--block-size BQ,BK`: the query and key block sizes.
    pub block_size: (usize, usize),
}

/// Runs the block-sparse kernel on q, k, v (dense or, with `cu_seqlens`, a varlen batch) and
/// returns the outputs in the dense run's layouts, with the block matrix it used (before the
/// element rule, as `--save-block-mask` writes it), and a description of what ran.
pub fn execute<T: AttentionElement>(
    device: &Device,
    settings: &SparseSettings,
    opts: &AttentionOptions,
    (q, k, v): (&NpyArray, &NpyArray, &NpyArray),
    cu_seqlens: Option<&(Vec<i32>, Vec<i32>)>,
) -> Result<(Outputs, String)> {
    // The grid divides by the block size: check it first.
    check_block_size(settings.block_size)?;
    let (batch, heads, seqlens) = match cu_seqlens {
        None => {
            // Ranks, heads and kv_heads, head dim and options, as the dense run checks them.
            AttentionParams::dense_shape::<T>(&q.shape, &k.shape, opts)?;
            let seqlens = vec![(q.shape[1], k.shape[1]); q.shape[0]];
            (None, q.shape[2], seqlens)
        }
        Some((cu_q, cu_k)) => {
            let batch = varlen_batch::<T>(device, q, k, opts, cu_q, cu_k)?;
            let seqlens = batch.seqlens().unwrap_or_default().to_vec();
            (Some(batch), q.shape[1], seqlens)
        }
    };
    let longest = (
        seqlens.iter().map(|s| s.0).max().unwrap_or(0),
        seqlens.iter().map(|s| s.1).max().unwrap_or(0),
    );
    // A causal or window rule's diagonal moves with each sequence's lengths, so a varlen batch
    // under one gives the mask one entry per sequence; otherwise every sequence shares the
    // longest lengths' grid.
    let masked = opts.effective_window() != (-1, -1);
    let lengths = if batch.is_some() && masked {
        seqlens.clone()
    } else {
        vec![longest]
    };
    let (bq, bk) = settings.block_size;
    let grid = (longest.0.div_ceil(bq), longest.1.div_ceil(bk));
    let (matrix, source) = match &settings.source {
        // A varlen batch's sequences each get the pattern on their own grid.
        MaskSource::Pattern(pattern) => (
            match batch {
                Some(_) => pattern.blocks_for(heads, settings.block_size, &seqlens)?,
                None => pattern.blocks(heads, grid.0, grid.1)?,
            },
            format!("pattern {pattern}"),
        ),
        MaskSource::File(path) => {
            let shape = MaskShape {
                sequences: seqlens.len(),
                heads,
                grid,
                longest,
                block_size: settings.block_size,
            };
            let matrix = shape.read(path)?;
            (matrix, format!("block mask {}", path.display()))
        }
    };
    let mask = BlockMask::new(
        device,
        per_sequence(&matrix, lengths.len())?,
        settings.block_size,
        &lengths,
        opts,
    )?;

    let (qt, kt, vt) = (
        upload::<T>(device, q)?,
        upload::<T>(device, k)?,
        upload::<T>(device, v)?,
    );
    let mut outputs = match &batch {
        None => {
            let result = block_sparse_attention(&qt, &kt, &vt, &mask, opts)?;
            Outputs::from_tensors(&result.out, result.lse.as_ref())?
        }
        Some(batch) => {
            let mut out = Tensor::<T>::zeros(device, qt.shape())?;
            let mut lse = match opts.return_lse {
                true => Some(Tensor::<f32>::zeros(device, &[heads, batch.total_q()])?),
                false => None,
            };
            block_sparse_attention_varlen_into(
                &qt,
                &kt,
                &vt,
                batch,
                &mut out,
                lse.as_mut(),
                &mask,
                opts,
            )?;
            Outputs::from_tensors(&out, lse.as_ref())?
        }
    };
    let description = format!(
        ", blocks {bq}x{bk}, {source} {:?}, density {:.3}: {} full and {} partial blocks, {} \
         device bytes",
        matrix.dims(),
        mask.density(),
        mask.full_blocks(),
        mask.partial_blocks(),
        mask.device_bytes()
    );
    outputs.block_matrix = Some(matrix);
    Ok((outputs, description))
}

/// `matrix` with one batch entry per sequence when the mask takes `entries` lengths (one per
/// sequence) and the matrix is shared: BlockMask pairs each lengths entry with a batch entry.
fn per_sequence(matrix: &BlockMatrix, entries: usize) -> Result<BlockMatrix> {
    let [batch, _, nq, nk] = matrix.dims();
    if entries <= 1 || batch != 1 {
        return Ok(matrix.clone());
    }
    // The union with an empty matrix of `entries` batch entries broadcasts the shared one.
    let empty = BlockMatrix::new([entries, 1, nq, nk], vec![false; entries * nq * nk])?;
    matrix.union(&empty)
}

/// The shape a `--block-mask` file must have for the run's problem.
struct MaskShape {
    sequences: usize,
    heads: usize,
    /// (nq, nk): the longest lengths in blocks.
    grid: (usize, usize),
    /// (max seqlen_q, max seqlen_k).
    longest: (usize, usize),
    block_size: (usize, usize),
}

impl MaskShape {
    /// Reads the file as a block matrix of this shape, a batch or heads dim of 1 shared.
    fn read(&self, path: &Path) -> Result<BlockMatrix> {
        let (shape, blocks) = npy::read_mask(path).map_err(|e| with_flag("block_mask", e))?;
        let (nq, nk) = self.grid;
        let fits = |d: usize, n: usize| d == 1 || d == n;
        let &[batch, heads, rows, cols] = shape.as_slice() else {
            return Err(self.error(path, &shape));
        };
        if !fits(batch, self.sequences) || !fits(heads, self.heads) || (rows, cols) != (nq, nk) {
            return Err(self.error(path, &shape));
        }
        BlockMatrix::new([batch, heads, rows, cols], blocks)
    }

    fn error(&self, path: &Path, shape: &[usize]) -> Error {
        let one_or = |n: usize| {
            if n == 1 {
                "1".to_string()
            } else {
                format!("1 or {n}")
            }
        };
        let (nq, nk) = self.grid;
        let ((max_q, max_k), (bq, bk)) = (self.longest, self.block_size);
        Error::invalid(
            "block_mask",
            format!(
                "{}: shape {shape:?}, expected [{}, {}, {nq}, {nk}]: [batch or 1, heads or 1, nq, \
                 nk] with the run's {} sequence(s) and {} heads, nq = ceil({max_q} / {bq}) query \
                 blocks and nk = ceil({max_k} / {bk}) key blocks (the longest sequence's)",
                path.display(),
                one_or(self.sequences),
                one_or(self.heads),
                self.sequences,
                self.heads,
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_matrix_is_repeated_per_sequence() {
        let shared = BlockMatrix::new([1, 2, 1, 2], vec![true, false, false, true]).unwrap();
        assert_eq!(per_sequence(&shared, 1).unwrap(), shared);
        let repeated = per_sequence(&shared, 3).unwrap();
        assert_eq!(repeated.dims(), [3, 2, 1, 2]);
        assert_eq!(repeated.blocks(), [true, false, false, true].repeat(3));
        let own = BlockMatrix::new([3, 1, 1, 1], vec![true, false, true]).unwrap();
        assert_eq!(per_sequence(&own, 3).unwrap(), own);
    }
}
