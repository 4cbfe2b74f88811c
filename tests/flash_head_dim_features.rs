//! The cargo features hd64 ... hd256, which choose the flash kernel's head-dim tiles: a head dim
//! runs in the smallest tile the build has that holds it, and one that no built tile holds is an
//! `Unsupported` error naming the head dim and the features, before anything is launched on it.
//! CI runs this file a second time in a build with only `hd128`, where both outcomes occur.

mod common;

use common::{devices, shape_params};
use cuattn::check::{run_case, run_outputs, AttentionCase};
use cuattn::{DType, Kernel};

/// Each head-dim tile and whether this build has it.
const TILES: [(usize, bool); 5] = [
    (64, cfg!(feature = "hd64")),
    (96, cfg!(feature = "hd96")),
    (128, cfg!(feature = "hd128")),
    (192, cfg!(feature = "hd192")),
    (256, cfg!(feature = "hd256")),
];

#[test]
fn each_head_dim_runs_in_the_smallest_built_tile_or_is_unsupported() {
    let built: Vec<usize> = TILES.iter().filter(|t| t.1).map(|t| t.0).collect();
    println!("head-dim tiles in this build: {built:?}");
    for device in devices() {
        for head_dim in [8, 40, 64, 72, 96, 104, 128, 136, 192, 200, 256] {
            let case = AttentionCase::dense(1, 37, 45, 2, 1, head_dim, DType::BF16).causal();
            let result = run_case(&device, Kernel::Flash, &case);
            println!("{result}");
            let tile = built.iter().find(|&&tile| tile >= head_dim);
            assert_eq!(
                cuattn::flash_head_dim_tile(head_dim),
                tile.copied(),
                "the library's tile for head_dim {head_dim}"
            );
            let plan = cuattn::flash_plan(&device, &shape_params(37, head_dim, (-1, 0)));
            match (tile, &plan) {
                (Some(&tile), Ok(plan)) => assert_eq!(plan.head_dim_tile, tile, "{plan:?}"),
                (None, Err(e)) => assert!(e.to_string().starts_with("unsupported: "), "{e}"),
                _ => panic!("head_dim {head_dim}: tile {tile:?}, but flash_plan gave {plan:?}"),
            }
            match tile {
                Some(tile) => assert!(
                    result.passed(),
                    "head_dim {head_dim} should run in tile {tile}: {result}"
                ),
                None => {
                    // `check` skips the case; launched anyway, flash says why it cannot run.
                    assert!(result.skipped.is_some() && !result.failed(), "{result}");
                    let launched = run_outputs(&device, Kernel::Flash, &case);
                    let why = launched
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or("it ran".into());
                    assert!(
                        why.starts_with("unsupported: ")
                            && why.contains(&format!("head_dim {head_dim}:"))
                            && why.contains("cargo features hd64"),
                        "head_dim {head_dim} has no tile in this build, yet: {why}"
                    );
                }
            }
        }
    }
}
