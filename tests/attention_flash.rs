//! attention_flash (the pipelined prefill kernel) against the f64 reference over the odd-shape
//! grid plus tile-edge lengths, on the emulator (bounds and race checks on) and on the GPU when
//! present; and against attention_naive on the same inputs.

mod common;

use common::{assert_cases_pass, assert_cases_pass_on, devices, FlashTilesSetting};
use cuattn::check::{self, run_outputs, AttentionCase, Layout};
use cuattn::reference::compare;
use cuattn::{DType, Device, FlashTiles, Kernel};

#[test]
fn flash_matches_reference_on_odd_lengths_both_ways_causal_and_not() {
    assert_cases_pass(Kernel::Flash, &check::length_cases());
}

#[test]
fn flash_matches_reference_for_gqa_groups_1_2_4_5_8_and_mqa() {
    assert_cases_pass(Kernel::Flash, &check::group_cases());
}

#[test]
fn flash_matches_reference_for_every_head_dim_tile_and_the_dims_between() {
    assert_cases_pass(Kernel::Flash, &check::head_dim_cases());
}

#[test]
fn flash_matches_reference_for_windows_causal_windows_and_softcap() {
    assert_cases_pass(Kernel::Flash, &check::mask_cases());
}

#[test]
fn flash_matches_reference_for_packed_qkv_and_varlen_batches() {
    assert_cases_pass(Kernel::Flash, &check::layout_cases());
}

#[test]
fn flash_matches_reference_at_tile_edges_and_on_interior_tiles() {
    assert_cases_pass(Kernel::Flash, &check::tile_edge_cases());
}

/// Every shape group at once, for the runs that force one tile table.
fn every_case_group() -> Vec<AttentionCase> {
    [
        check::length_cases(),
        check::group_cases(),
        check::head_dim_cases(),
        check::mask_cases(),
        check::layout_cases(),
        check::tile_edge_cases(),
        check::table_cases(),
    ]
    .concat()
}

#[test]
fn flash_matches_reference_where_the_two_tile_tables_differ() {
    assert_cases_pass(Kernel::Flash, &check::table_cases());
}

/// The tables `Auto` does not pick for the small shapes above: compact tiles at hd192-256, and
/// wide ones at hd96-128 (which need 1024 queries, 8192 under a mask, to be picked).
#[test]
fn flash_compact_tiles_match_reference_on_every_shape_group() {
    let _tiles = FlashTilesSetting::new(FlashTiles::Compact);
    assert_cases_pass(Kernel::Flash, &every_case_group());
}

#[test]
fn flash_wide_tiles_match_reference_on_every_shape_group() {
    let _tiles = FlashTilesSetting::new(FlashTiles::Wide);
    // Wide tiles are built for sm_90 only; the emulator stands in for it.
    let devices: Vec<Device> = devices()
        .into_iter()
        .filter(|d| d.compute_capability().is_none_or(|cc| cc == (9, 0)))
        .collect();
    assert_cases_pass_on(&devices, Kernel::Flash, &every_case_group());
}

#[test]
fn flash_tiles_setting_is_per_thread_and_rejects_unknown_values() {
    assert_eq!(cuattn::flash_tiles(), FlashTiles::Auto);
    cuattn::set_flash_tiles(FlashTiles::Wide);
    assert_eq!(cuattn::flash_tiles(), FlashTiles::Wide);
    let other_thread = std::thread::spawn(cuattn::flash_tiles).join().unwrap();
    assert_eq!(
        other_thread,
        FlashTiles::Auto,
        "another thread keeps its own setting"
    );
    cuattn::set_flash_tiles(FlashTiles::Auto);

    // SAFETY: a per-thread setting; no preconditions.
    let status = unsafe { cuattn::ffi::cuattn_set_flash_tiles(7) };
    assert_eq!(
        status,
        cuattn::ffi::cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT
    );
    let message = common::last_error();
    assert!(message.contains("tiles = 7"), "{message}");
    assert_eq!(
        cuattn::flash_tiles(),
        FlashTiles::Auto,
        "a refused value changes nothing"
    );

    let err = "big".parse::<FlashTiles>().unwrap_err().to_string();
    assert!(err.contains("`big`") && err.contains("compact"), "{err}");
    for tiles in FlashTiles::ALL {
        assert_eq!(tiles.name().parse::<FlashTiles>().unwrap(), tiles);
    }
}

#[test]
fn flash_agrees_with_naive_on_the_same_inputs() {
    let cases = [
        AttentionCase::dense(2, 203, 127, 8, 2, 128, DType::BF16).causal(),
        AttentionCase::dense(1, 97, 257, 5, 1, 80, DType::F16).window(17, 3),
        AttentionCase::dense(3, 0, 0, 4, 4, 64, DType::BF16)
            .layout(Layout::Varlen(vec![(1, 1), (65, 130), (129, 64)]))
            .causal(),
    ];
    for device in devices() {
        for case in &cases {
            let (naive_out, naive_lse) = run_outputs(&device, Kernel::Naive, case).unwrap();
            let (flash_out, flash_lse) = run_outputs(&device, Kernel::Flash, case).unwrap();
            let tol = case.tolerance();
            println!("{} {case}: flash vs naive", device.kind());
            compare(&flash_out, &naive_out, tol, tol).unwrap_or_else(|m| panic!("out: {m}"));
            compare(
                &flash_lse,
                &naive_lse,
                check::LSE_TOLERANCE,
                check::LSE_TOLERANCE,
            )
            .unwrap_or_else(|m| panic!("lse: {m}"));
        }
    }
}
