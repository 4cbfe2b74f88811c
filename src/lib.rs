//! cuattn: hand-written CUDA attention kernels, a CPU emulator that runs the same kernel source,
//! and safe Rust APIs over them. Start with [`attention()`] and [`Device`]; C and C++ engines use
//! `csrc/cuattn.h`.
//!
//! ```
//! use cuattn::{attention_naive, AttentionOptions, Device, Tensor};
//! use half::bf16;
//!
//! let device = Device::auto(); // the GPU when there is one, else the emulator
//! let (batch, seqlen, heads, kv_heads, head_dim) = (1, 17, 4, 2, 64);
//! let q = Tensor::full(&device, &[batch, seqlen, heads, head_dim], bf16::from_f32(0.5))?;
//! let kv = Tensor::full(&device, &[batch, seqlen, kv_heads, head_dim], bf16::from_f32(0.25))?;
//! let opts = AttentionOptions { causal: true, return_lse: true, ..Default::default() };
//! let result = attention_naive(&q, &kv, &kv, &opts)?;
//! assert_eq!(result.out.shape(), &[batch, seqlen, heads, head_dim]);
//! assert!(result.out.to_host()?.iter().all(|x| x.to_f32() == 0.25));
//! # Ok::<(), cuattn::Error>(())
//! ```

pub mod approx;
pub mod attention;
#[cfg(feature = "cli")]
pub mod bench;
pub mod build_info;
pub mod capi;
#[cfg(feature = "cli")]
pub mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod device;
pub mod emu;
pub mod error;
#[rustfmt::skip]
#[allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code, clippy::all)]
pub mod ffi;
#[cfg(feature = "cli")]
mod json;
pub mod kv_cache;
#[cfg(feature = "cli")]
pub mod npy;
pub mod reference;
pub mod sparse;
pub mod tensor;

pub use attention::{
    attention, attention_into, attention_naive, attention_varlen, attention_varlen_into,
    cascade_attention_into, flash_attention, flash_attention_varlen, flash_head_dim_tile,
    flash_plan, flash_tiles, flash_wide_tiles, merge_states, merge_states_in_place,
    merge_states_into, paged_attention, paged_attention_into, paged_attention_view_into,
    set_flash_tiles, AttentionOptions, AttentionOutput, AttentionParams, CascadePlan, FlashPlan,
    FlashTiles, FlashTilesScope, Kernel, PagedAttentionPlan, PagedPlanInfo, PagedQueries,
    PagedShape, SharedPrefix, SplitKv, VarlenBatch,
};
pub use device::{probe_cuda, CudaProbe, Device};
pub use error::{Error, Result};
pub use kv_cache::{
    KvCacheConfig, KvCacheStats, KvLayout, PagedKvCache, PagedKvView, SeqId, StepPlan, StepTables,
};
pub use tensor::{AttentionElement, DType, Element, Tensor};
