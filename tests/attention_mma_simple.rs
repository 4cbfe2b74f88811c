//! attention_mma_simple (tensor cores, cp.async, ldmatrix) against the f64 reference over the
//! same odd-shape grid as the baseline, on the emulator (bounds and race checks on) and on the GPU
//! when present; and its extra constraint, 16-byte aligned rows.

mod common;

use common::assert_cases_pass;
use cuattn::check;
use cuattn::{attention_into, AttentionOptions, Device, Error, Kernel, Tensor};
use half::bf16;

#[test]
fn mma_simple_matches_reference_on_odd_lengths_both_ways_causal_and_not() {
    assert_cases_pass(Kernel::MmaSimple, &check::length_cases());
}

#[test]
fn mma_simple_matches_reference_for_gqa_groups_1_2_4_5_8_and_mqa() {
    assert_cases_pass(Kernel::MmaSimple, &check::group_cases());
}

#[test]
fn mma_simple_matches_reference_for_every_head_dim_tile_and_the_dims_between() {
    assert_cases_pass(Kernel::MmaSimple, &check::head_dim_cases());
}

#[test]
fn mma_simple_matches_reference_for_windows_causal_windows_and_softcap() {
    assert_cases_pass(Kernel::MmaSimple, &check::mask_cases());
}

#[test]
fn mma_simple_matches_reference_for_packed_qkv_and_varlen_batches() {
    assert_cases_pass(Kernel::MmaSimple, &check::layout_cases());
}

#[test]
fn mma_simple_matches_reference_at_tile_edge_lengths() {
    assert_cases_pass(Kernel::MmaSimple, &check::tile_edge_cases());
}

#[test]
fn mma_simple_rejects_rows_that_are_not_16_byte_aligned() {
    let device = Device::emulator();
    let shape = [1, 9, 2, 64];
    let data = vec![bf16::from_f32(0.5); 2 * 9 * 2 * 64];
    let buffer = Tensor::from_host(&device, &data, &[2 * 9 * 2 * 64]).unwrap();
    // Starts 4 elements (8 bytes) into the buffer: fine for naive, not for 16-byte copies.
    let q = buffer
        .view(4, &shape, &[9 * 2 * 64, 2 * 64, 64, 1])
        .unwrap();
    let kv = Tensor::full(&device, &shape, bf16::from_f32(0.25)).unwrap();
    let mut out = Tensor::full(&device, &shape, bf16::NAN).unwrap();
    let opts = AttentionOptions::default();
    let err = attention_into(Kernel::MmaSimple, &q, &kv, &kv, &mut out, None, &opts).unwrap_err();
    println!("{err}");
    assert!(
        matches!(&err, Error::InvalidArgument { arg: "q", msg } if msg.contains("16-byte aligned")),
        "{err}"
    );
    attention_into(Kernel::Naive, &q, &kv, &kv, &mut out, None, &opts).unwrap();
    assert!(out.to_host().unwrap().iter().all(|x| x.to_f32() == 0.25));
}
