//! Random problems for the flash kernel against the f64 reference, on the emulator (bounds and
//! race checks on) and on the GPU when present: shapes, GQA groups, head dims, masks, softcap,
//! scale sign, layouts (dense, packed QKV, varlen, heads-first padded) and the three tile
//! settings, drawn from a seeded generator. The suite runs 100 of them; a longer run sets the
//! count and the seed:
//!
//! ```text
//! CUATTN_FUZZ_CASES=3000 CUATTN_FUZZ_SEED=7 cargo test --release --test flash_fuzz
//! ```
//!
//! A failing case prints whole, with its seed, so that it can join the fixed grid.

mod common;

use cuattn::check::{run_case_with, AttentionCase, CheckOptions, Layout};
use cuattn::{DType, Device, FlashTiles, Kernel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// A length in 1..=max, short ones (and tile edges) as likely as long ones.
fn length(rng: &mut StdRng, max: usize) -> usize {
    match rng.random_range(0..4) {
        0 => rng.random_range(1..=16),
        1 => [31, 32, 33, 63, 64, 65, 127, 128, 129][rng.random_range(0..9)].min(max),
        _ => rng.random_range(1..=max),
    }
}

/// A varlen sequence's length: as `length`, or now and then 0.
fn varlen_length(rng: &mut StdRng, max: usize) -> usize {
    if rng.random_bool(0.1) {
        0
    } else {
        length(rng, max)
    }
}

/// A window side: unbounded, zero, or up to 80 keys.
fn window_side(rng: &mut StdRng) -> i32 {
    match rng.random_range(0..3) {
        0 => -1,
        1 => 0,
        _ => rng.random_range(1..=80),
    }
}

fn random_case(rng: &mut StdRng, seed: u64) -> (AttentionCase, FlashTiles) {
    let dtype = if rng.random_bool(0.5) {
        DType::F16
    } else {
        DType::BF16
    };
    let kv_heads = rng.random_range(1..=2);
    let group = [1, 2, 3, 4, 5, 8][rng.random_range(0..6)];
    let head_dim = 8 * rng.random_range(1..=32);
    // Longer sequences at small head dims keep each case about as costly.
    let max_len = if head_dim <= 128 { 300 } else { 160 };
    let layout = match rng.random_range(0..6) {
        0 => Layout::PackedQkv,
        // A varlen sequence may be empty on either side (no queries, or queries that see no key).
        1 => Layout::Varlen(
            (0..rng.random_range(1..=3))
                .map(|_| (varlen_length(rng, max_len), varlen_length(rng, max_len)))
                .collect(),
        ),
        2 => Layout::HeadsFirst,
        _ => Layout::Dense,
    };
    let (seqlen_q, seqlen_k) = match &layout {
        Layout::PackedQkv => {
            let n = length(rng, max_len);
            (n, n)
        }
        _ => (length(rng, max_len), length(rng, max_len)),
    };
    let batch = match layout {
        Layout::Varlen(ref lens) => lens.len(),
        _ => rng.random_range(1..=2),
    };
    let mut case = AttentionCase::dense(
        batch,
        seqlen_q,
        seqlen_k,
        kv_heads * group,
        kv_heads,
        head_dim,
        dtype,
    )
    .layout(layout);
    match rng.random_range(0..4) {
        0 => {}
        1 => case = case.causal(),
        2 => case = case.window(window_side(rng), window_side(rng)),
        _ => case = case.causal().window(window_side(rng), 0),
    }
    if rng.random_bool(0.2) {
        case = case.softcap(rng.random_range(5.0..50.0));
    }
    if rng.random_bool(0.2) {
        // Either sign: a negative scale takes the kernel's other softmax path.
        let magnitude = rng.random_range(0.02..0.3);
        case = case.scale(if rng.random_bool(0.5) {
            magnitude
        } else {
            -magnitude
        });
    }
    case.seed = seed;
    let tiles = FlashTiles::ALL[rng.random_range(0..FlashTiles::ALL.len())];
    (case, tiles)
}

#[test]
fn flash_matches_reference_on_random_problems() {
    let cases = env_or("CUATTN_FUZZ_CASES", 100);
    let seed = env_or("CUATTN_FUZZ_SEED", 1);
    let mut rng = StdRng::seed_from_u64(seed);
    let devices: Vec<(Device, bool)> = common::devices()
        .into_iter()
        .map(|d| {
            let wide = cuattn::flash_wide_tiles(&d).is_ok();
            (d, wide)
        })
        .collect();
    let mut failures = Vec::new();
    for i in 0..cases {
        let (case, tiles) = random_case(&mut rng, seed.wrapping_mul(1_000_003).wrapping_add(i));
        for (device, runs_wide) in &devices {
            if tiles == FlashTiles::Wide && !runs_wide {
                println!("{i:4} {device:?}: no wide tiles here; {case}");
                continue;
            }
            let options = CheckOptions {
                flash_tiles: tiles,
                ..Default::default()
            };
            let result = run_case_with(device, Kernel::Flash, &case, &options);
            println!("{i:4} tiles {tiles:?}: {result}");
            if result.failed() {
                failures.push(format!("{case:?} tiles {tiles:?}: {result}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} random problems failed (seed {seed}, {cases} cases):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
