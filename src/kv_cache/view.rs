//! `PagedKvView`: one layer's page pools and a step's tables as the kernels that read a paged
//! cache take them, from cuattn's cache or built by an engine over its own buffers.

use std::marker::PhantomData;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::ffi;

/// One layer's K and V pages with a step's block table and sequence lengths (the C struct
/// `cuattn_paged_kv_view`). From [`PagedKvCache::view`](super::PagedKvCache::view), borrowing the
/// cache, or from [`PagedKvView::from_raw`] over an engine's own pools and tables.
#[derive(Clone, Debug)]
pub struct PagedKvView<'a> {
    raw: ffi::cuattn_paged_kv_view,
    device: Device,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> PagedKvView<'a> {
    pub(crate) fn from_parts(raw: ffi::cuattn_paged_kv_view, device: &Device) -> PagedKvView<'a> {
        PagedKvView {
            raw,
            device: device.clone(),
            _borrow: PhantomData,
        }
    }

    /// The C struct, for kernels and for engines that pass it on.
    pub fn raw(&self) -> &ffi::cuattn_paged_kv_view {
        &self.raw
    }

    /// Where the pools and tables live.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl PagedKvView<'static> {
    /// A view over an engine's own pools and tables (a vLLM-style engine with its own block
    /// manager), after checking every field but the pointers' extents.
    ///
    /// # Safety
    /// The pointers must be allocations of `device` that stay alive and unchanged in shape while
    /// the view is used: the pools `num_pages` pages at the given strides, the block table
    /// `[batch, block_table_stride]` int32 holding page indices below `num_pages`, the lengths
    /// `[batch]` int32 with `ceil(seq_lens[b] / page_size) <= max_pages_per_seq`.
    pub unsafe fn from_raw(device: &Device, raw: ffi::cuattn_paged_kv_view) -> Result<Self> {
        validate_view(&raw)?;
        Ok(PagedKvView::from_parts(raw, device))
    }
}

fn positive_i32(name: &'static str, value: i32) -> Result<()> {
    if value <= 0 {
        return Err(Error::invalid(name, format!("{value}: must be positive")));
    }
    Ok(())
}

/// Checks a view's dimensions, strides and tables (not the pointers' extents).
pub(crate) fn validate_view(v: &ffi::cuattn_paged_kv_view) -> Result<()> {
    positive_i32("kv_heads", v.kv_heads)?;
    positive_i32("page_size", v.page_size)?;
    if v.head_dim <= 0 || v.head_dim % 8 != 0 || v.head_dim > 256 {
        return Err(Error::invalid(
            "head_dim",
            format!("{}: must be a multiple of 8 in 8..=256", v.head_dim),
        ));
    }
    if v.num_pages < 0 || i64::from(v.num_pages) * i64::from(v.page_size) > i64::from(i32::MAX) {
        return Err(Error::invalid(
            "num_pages",
            format!(
                "{} pages of {} tokens: not negative, and num_pages * page_size at most {}",
                v.num_pages,
                v.page_size,
                i32::MAX
            ),
        ));
    }
    if v.batch < 0
        || v.max_pages_per_seq < 0
        || v.block_table_stride < i64::from(v.max_pages_per_seq)
    {
        return Err(Error::invalid(
            "block_table_stride",
            format!(
                "{} with batch {} and max_pages_per_seq {}: counts not negative, and each row \
                 holds max_pages_per_seq pages",
                v.block_table_stride, v.batch, v.max_pages_per_seq
            ),
        ));
    }
    if v.dtype != ffi::cuattn_dtype::CUATTN_DTYPE_F16
        && v.dtype != ffi::cuattn_dtype::CUATTN_DTYPE_BF16
    {
        return Err(Error::invalid(
            "dtype",
            format!("{}: not f16 or bf16", v.dtype.0),
        ));
    }
    let (page_size, kv_heads, head_dim) = (
        i64::from(v.page_size),
        i64::from(v.kv_heads),
        i64::from(v.head_dim),
    );
    for (pool, [page, slot, head]) in [
        ("k", [v.k_page_stride, v.k_slot_stride, v.k_head_stride]),
        ("v", [v.v_page_stride, v.v_slot_stride, v.v_head_stride]),
    ] {
        // The layout's inner dimensions must not overlap: each stride spans what it strides over.
        let fits = match v.layout {
            ffi::cuattn_kv_layout::CUATTN_KV_LAYOUT_NHD => {
                head >= head_dim && slot >= kv_heads * head && page >= page_size * slot
            }
            ffi::cuattn_kv_layout::CUATTN_KV_LAYOUT_HND => {
                slot >= head_dim && head >= page_size * slot && page >= kv_heads * head
            }
            other => {
                return Err(Error::invalid(
                    "layout",
                    format!("{}: not NHD (0) or HND (1)", other.0),
                ))
            }
        };
        if !fits {
            return Err(Error::invalid(
                if pool == "k" {
                    "k_strides"
                } else {
                    "v_strides"
                },
                format!(
                    "page {page}, slot {slot}, head {head} overlap for the layout {:?} with \
                     page_size {page_size}, kv_heads {kv_heads}, head_dim {head_dim}",
                    v.layout.0
                ),
            ));
        }
    }
    let needs_tables = v.batch > 0;
    let needs_pools = v.num_pages > 0;
    if (needs_tables && (v.block_table.is_null() || v.seq_lens.is_null()))
        || (needs_pools && (v.k_pages.is_null() || v.v_pages.is_null()))
    {
        return Err(Error::invalid(
            "view",
            "k_pages, v_pages, block_table and seq_lens must be set (tables when batch > 0)",
        ));
    }
    Ok(())
}
