//! Attention approximations that cut the O(n^2) cost of exact attention: kernel-based linear
//! attention ([`linear_attention`]: a feature map phi replaces softmax, so attention becomes
//! `phi(Q) (phi(K)^T V)`, linear in the sequence length) with its recurrent state for decode
//! ([`LinearState`]), and low-rank (Linformer) attention ([`lowrank_attention`]: the keys and
//! values projected along the sequence to k_proj rows by E and F ([`Projection`]), then exact
//! attention over those, O(n k_proj); non-causal only). With the `cli` feature, `report` runs
//! exact attention and each approximation on the same inputs for their errors and costs
//! (`cuattn approx-report`) and `plot` draws that report.
//!
//! ```
//! use cuattn::approx::{linear_attention, Feature, LinearOptions};
//! use cuattn::{Device, Tensor};
//! use half::bf16;
//!
//! let device = Device::emulator();
//! let q = Tensor::full(&device, &[1, 100, 4, 64], bf16::from_f32(0.5))?;
//! let k = Tensor::full(&device, &[1, 100, 2, 64], bf16::from_f32(0.25))?;
//! let v = Tensor::full(&device, &[1, 100, 2, 32], bf16::from_f32(1.0))?;
//! let opts = LinearOptions { feature: Feature::Elu1, causal: true, ..Default::default() };
//! let out = linear_attention(&q, &k, &v, &opts)?;
//! assert_eq!(out.shape(), &[1, 100, 4, 32]);
//! assert!(out.to_host()?.iter().all(|x| (x.to_f32() - 1.0).abs() < 1e-2));
//! # Ok::<(), cuattn::Error>(())
//! ```

mod linear;
mod lowrank;
#[cfg(feature = "cli")]
pub mod plot;
#[cfg(feature = "cli")]
pub mod report;

pub use linear::{
    linear_attention, linear_attention_into, linear_attention_varlen_into, orthogonal_gaussian,
    FavorFeatures, Feature, LinearOptions, LinearState, LinearWorkspace, DEFAULT_EPS, MAX_FEATURES,
};
pub use lowrank::{
    lowrank_attention, lowrank_attention_into, lowrank_project_into, LowrankWorkspace, Projection,
};
