//! The benchmarks' arithmetic and code paths, without timing anything. Prefill: visible pairs are
//! counted exactly (against a brute-force count over the reference's mask rule), bench_mma writes
//! the closed-form value that proves every mma ran. Decode: the grid holds the targets' shapes and
//! skips only shapes over the KV budget, rows count the KV bytes the step reads, verdicts compare
//! the targets' rows with their thresholds. Sparse: every row's visible pairs match a brute-force
//! count over the elements of the block matrix it wrote to `--mask-dir`, the files hold the
//! matrices the rows name, the verdict compares the target's row with its threshold. Linear: the
//! verdicts judge the target's shapes by their ratios to flash and the exponent of the time's
//! fit. `cuattn bench` runs every family's quick emulator path end to end (table and JSON),
//! refuses a full run on the emulator, and refuses options of the other families.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use cuattn::bench::decode::{
    self, CopyCeiling, DecodeConfig, DecodeReport, DecodeRow, DecodeShape, KV_BUDGET_BYTES, TARGETS,
};
use cuattn::bench::linear::{
    self, LinearBenchConfig, LinearBenchKernel, LinearReport, LinearRow, EXPONENT_RANGE,
    FASTER_FROM,
};
use cuattn::bench::sparse::{
    self, MaskFacts, MaskSpec, SparseCase, SparseConfig, SparseReport, SparseRow, TARGET,
};
use cuattn::bench::{
    self, bench_mma_expected, bench_mma_flops, launch_bench_mma, median, prefill_shapes,
    spread_cell, visible_pairs, BenchConfig, PrefillShape, Spread, EMULATOR_NOTE, MODEL_DIM,
    TOKENS,
};
use cuattn::reference::key_visible;
use cuattn::sparse::{BlockMask, BlockMatrix};
use cuattn::{AttentionOptions, Device, FlashTiles, Kernel, SplitKv, Tensor};

/// (seqlen_q, seqlen_k) pairs: the project's odd test lengths, unequal both ways.
const LENGTHS: [(usize, usize); 10] = [
    (1, 1),
    (1, 257),
    (257, 1),
    (17, 17),
    (97, 113),
    (113, 97),
    (127, 203),
    (203, 127),
    (257, 1025),
    (1025, 257),
];

/// Windows (left, right), -1 unbounded: none, causal, causal with a left window, two-sided,
/// the diagonal only, right-only, left-only, and windows wider than every sequence.
const WINDOWS: [(i32, i32); 8] = [
    (-1, -1),
    (-1, 0),
    (5, 0),
    (3, 7),
    (0, 0),
    (-1, 3),
    (10, -1),
    (2000, 2000),
];

fn brute_force_pairs(seqlen_q: usize, seqlen_k: usize, (left, right): (i32, i32)) -> u64 {
    let mut n = 0;
    for i in 0..seqlen_q {
        for j in 0..seqlen_k {
            if key_visible(i, j, seqlen_q, seqlen_k, left.into(), right.into()) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn visible_pairs_match_a_brute_force_count_over_key_visible() {
    for (seqlen_q, seqlen_k) in LENGTHS {
        for window in WINDOWS {
            let want = brute_force_pairs(seqlen_q, seqlen_k, window);
            let got = visible_pairs(seqlen_q, seqlen_k, window);
            println!("seqlen {seqlen_q}/{seqlen_k} window {window:?}: {got} pairs");
            assert_eq!(
                got, want,
                "seqlen_q {seqlen_q}, seqlen_k {seqlen_k}, window {window:?}"
            );
        }
    }
}

#[test]
fn causal_options_count_the_same_pairs_as_the_causal_window() {
    // The benchmark takes its window from AttentionOptions, as the kernels do.
    let causal = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    for (seqlen_q, seqlen_k) in LENGTHS {
        let want = brute_force_pairs(seqlen_q, seqlen_k, (-1, 0));
        assert_eq!(
            visible_pairs(seqlen_q, seqlen_k, causal.effective_window()),
            want
        );
    }
}

#[test]
fn prefill_shapes_follow_flash_attention_convention_and_count_flops_exactly() {
    let shapes = prefill_shapes();
    assert_eq!(shapes.len(), 3 * 6 * 2 + 6 * 2, "MHA grid plus GQA rows");
    for s in &shapes {
        assert_eq!(s.batch * s.seqlen, TOKENS, "{}", s.label());
        let full = (s.batch * s.heads * s.seqlen * s.seqlen) as u64;
        let causal = (s.batch * s.heads * s.seqlen * (s.seqlen + 1) / 2) as u64;
        assert_eq!(
            s.visible_pairs(),
            if s.causal { causal } else { full },
            "{}",
            s.label()
        );
        assert_eq!(
            s.flops(),
            4.0 * s.visible_pairs() as f64 * s.head_dim as f64
        );
        if s.heads == s.kv_heads {
            assert_eq!(s.heads * s.head_dim, MODEL_DIM, "{}", s.label());
        } else {
            assert_eq!((s.heads, s.kv_heads, s.head_dim), bench::GQA);
        }
    }
    // Non-causal MHA at 2k: 4 * tokens * seqlen * model_dim flops.
    let s = PrefillShape::mha(2048, 128, false);
    assert_eq!(s.flops(), 4.0 * (TOKENS * 2048 * MODEL_DIM) as f64);
    assert_eq!(s.label(), "b8 s2048 h16/16 d128");
}

#[test]
fn median_takes_the_middle_or_the_mean_of_the_two_middles() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    assert!(median(&[]).is_nan());
}

#[test]
fn spread_gives_the_fastest_median_and_slowest_run_and_its_cell_shows_all_three() {
    let spread = Spread::of(&[1.25, 0.5, 3.0, 2.0]);
    assert_eq!(
        spread,
        Spread {
            min: 0.5,
            median: 1.625,
            max: 3.0
        }
    );
    let none = Spread::of(&[]);
    assert!(none.min.is_nan() && none.median.is_nan() && none.max.is_nan());
    let cell = spread_cell(spread.median, spread.min, spread.max, 3);
    assert_eq!(cell, "1.625 [0.500, 3.000]");
}

#[test]
fn bench_mma_writes_the_closed_form_value_from_every_thread() {
    let threads = cuattn::ffi::CUATTN_BENCH_MMA_BLOCK_THREADS as usize;
    for device in common::devices() {
        for (blocks, iterations) in [(1, 0), (1, 1), (2, 3)] {
            let mut out =
                Tensor::<f32>::full(&device, &[blocks as usize * threads], f32::NAN).unwrap();
            launch_bench_mma(&mut out, blocks, iterations).unwrap();
            let want = bench_mma_expected(iterations) as f32;
            let got = out.to_host().unwrap();
            println!(
                "{device:?}: bench_mma {blocks} block(s), {iterations} iteration(s): every thread \
                 should write {want}"
            );
            for (t, &v) in got.iter().enumerate() {
                assert_eq!(v, want, "thread {t} of {blocks} x {threads}");
            }
        }
    }
    let chains = f64::from(cuattn::ffi::CUATTN_BENCH_MMA_CHAINS);
    assert_eq!(bench_mma_expected(1), 4.0 * chains * 48.0);
    assert_eq!(
        bench_mma_flops(2, 3),
        2.0 * (threads / 32) as f64 * 3.0 * chains * 4096.0
    );
}

#[test]
fn bench_mma_rejects_a_short_output_and_bad_counts() {
    let device = Device::emulator();
    let threads = cuattn::ffi::CUATTN_BENCH_MMA_BLOCK_THREADS as usize;
    let mut out = Tensor::<f32>::zeros(&device, &[threads]).unwrap();
    let short = launch_bench_mma(&mut out, 2, 1).unwrap_err().to_string();
    assert!(
        short.contains("out") && short.contains("2 blocks"),
        "{short}"
    );
    // A stride-0 view over one float has the numel of two blocks' threads but one float behind
    // it; a strided view skips memory between its rows.
    let one = Tensor::<f32>::zeros(&device, &[1]).unwrap();
    let mut broadcast = one.into_view(0, &[2 * threads], &[0]).unwrap();
    let msg = launch_bench_mma(&mut broadcast, 2, 1)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("contiguous"), "{msg}");
    let wide = Tensor::<f32>::zeros(&device, &[4 * threads]).unwrap();
    let mut gapped = wide.into_view(0, &[2, threads], &[2 * threads, 1]).unwrap();
    let msg = launch_bench_mma(&mut gapped, 2, 1).unwrap_err().to_string();
    assert!(msg.contains("contiguous"), "{msg}");
    let zero = launch_bench_mma(&mut out, 0, 1).unwrap_err().to_string();
    assert!(zero.contains("blocks = 0"), "{zero}");
    let negative = launch_bench_mma(&mut out, 1, -1).unwrap_err().to_string();
    assert!(negative.contains("iterations = -1"), "{negative}");
}

#[test]
fn run_prefill_refuses_the_emulator_without_quick() {
    let config = BenchConfig {
        kernels: vec![Kernel::DEFAULT],
        quick: false,
        commit: None,
        head_dims: Vec::new(),
        flash_tiles: FlashTiles::Auto,
        softcap: None,
        shapes: Vec::new(),
        causal_only: false,
    };
    let err = bench::run_prefill(&Device::emulator(), &config, |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("emulator") && msg.contains("--quick"), "{msg}");
}

#[test]
fn run_prefill_keeps_only_the_shapes_of_the_head_dims_asked_for() {
    let device = Device::emulator();
    let only = |head_dims: Vec<usize>| BenchConfig {
        kernels: vec![Kernel::DEFAULT],
        quick: true,
        commit: None,
        head_dims,
        flash_tiles: FlashTiles::Auto,
        softcap: None,
        shapes: Vec::new(),
        causal_only: false,
    };
    let shape_dim = bench::emulator_shape().head_dim;
    let report = bench::run_prefill(&device, &only(vec![shape_dim, 256]), |_| {}).unwrap();
    assert_eq!(report.rows.len(), 1);
    assert_eq!(report.rows[0].shape.head_dim, shape_dim);

    let other = shape_dim + 8;
    let mut progressed = false;
    let err = bench::run_prefill(&device, &only(vec![other]), |_| progressed = true).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("head_dims") && msg.contains(&format!("[{other}]")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{{{shape_dim}}}")),
        "names the run's head dims: {msg}"
    );
    assert!(!progressed, "refused before measuring anything");
}

// ---------------------------------------------------------------------------------------------
// The CLI.
// ---------------------------------------------------------------------------------------------

fn cuattn(args: &[&str], commit: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cuattn"));
    cmd.args(args);
    match commit {
        Some(c) => cmd.env("CUATTN_COMMIT", c),
        None => cmd.env_remove("CUATTN_COMMIT"),
    };
    cmd.output().expect("the cuattn binary runs")
}

fn temp_json(test: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("cuattn-bench-{}-{test}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// `cuattn bench --family prefill --device emu --quick <extra> --json <file>` with `commit` as
/// CUATTN_COMMIT, which must succeed: its stdout and its JSON report.
fn quick_bench(test: &str, extra: &[&str], commit: Option<&str>) -> (String, serde_json::Value) {
    quick_bench_family("prefill", test, extra, commit)
}

/// [`quick_bench`] of `family`.
fn quick_bench_family(
    family: &str,
    test: &str,
    extra: &[&str],
    commit: Option<&str>,
) -> (String, serde_json::Value) {
    let json = temp_json(test);
    let mut args = vec!["bench", "--family", family, "--device", "emu", "--quick"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--json", json.to_str().unwrap()]);
    let out = cuattn(&args, commit);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}")),
    )
}

#[test]
fn bench_quick_on_the_emulator_prints_the_table_and_writes_json() {
    let (stdout, v) = quick_bench("quick", &["--kernel", "all"], Some("abc1234"));
    println!("{stdout}");
    assert!(stdout.contains("mma.sync bf16 ceiling"), "{stdout}");
    assert!(
        stdout.contains("TFLOP/s") && stdout.contains("% mma"),
        "{stdout}"
    );
    let shape = bench::emulator_shape();
    for kernel in Kernel::ALL {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{} ", kernel.name())))
            .unwrap_or_else(|| panic!("no row for {}:\n{stdout}", kernel.name()));
        assert!(row.contains(&shape.label()), "{row}");
        assert!(row.contains(EMULATOR_NOTE), "{row}");
    }

    assert_eq!(v["family"], "prefill");
    assert_eq!(v["device"], "emulator");
    assert_eq!(v["emulator"], true);
    assert_eq!(v["note"], EMULATOR_NOTE);
    assert_eq!(v["commit"], "abc1234");
    assert!(v["mma_ceiling"]["tflops"].as_f64().unwrap() > 0.0);
    assert_eq!(
        v["mma_ceiling"]["flops"].as_f64().unwrap(),
        bench_mma_flops(
            v["mma_ceiling"]["blocks"].as_i64().unwrap() as i32,
            v["mma_ceiling"]["iterations"].as_i64().unwrap() as i32
        )
    );
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), Kernel::ALL.len(), "one tiny shape per kernel");
    for (row, kernel) in rows.iter().zip(Kernel::ALL) {
        assert_eq!(row["kernel"], kernel.name());
        assert_eq!(row["shape"], shape.label());
        assert_eq!(row["causal"], shape.causal);
        assert_eq!(row["runs"], 1, "the emulator runs each kernel once");
        assert_eq!(
            row["visible_pairs"].as_u64().unwrap(),
            shape.visible_pairs()
        );
        assert!(row["error"].is_null(), "{row}");
        assert_spread(row);
        let (ms, tflops) = (row["ms"].as_f64().unwrap(), row["tflops"].as_f64().unwrap());
        assert!(ms > 0.0);
        let want = shape.flops() / (ms * 1e-3) / 1e12;
        assert!((tflops - want).abs() <= 1e-9 * want, "{tflops} vs {want}");
    }
}

#[test]
fn bench_defaults_to_the_default_kernel() {
    let (_, v) = quick_bench("default", &[], None);
    let rows = v["rows"].as_array().unwrap();
    println!("default kernel: {}", rows[0]["kernel"]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["kernel"], Kernel::DEFAULT.name());
    assert!(v["commit"].is_null());
}

#[test]
fn bench_records_the_flash_tiles_it_ran_and_refuses_unknown_ones() {
    let (stdout, v) = quick_bench("tiles", &["--flash-tiles", "wide"], None);
    assert!(stdout.contains("flash tiles wide"), "{stdout}");
    assert_eq!(v["flash_tiles"], "wide");
    assert!(v["rows"][0]["error"].is_null(), "{}", v["rows"][0]);

    let out = cuattn(
        &[
            "bench",
            "--family",
            "prefill",
            "--device",
            "emu",
            "--quick",
            "--flash-tiles",
            "big",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`big`") && stderr.contains("compact"),
        "{stderr}"
    );
}

#[test]
fn bench_records_its_softcap_and_refuses_a_bad_one() {
    let (stdout, v) = quick_bench("softcap", &["--softcap", "50"], None);
    assert!(stdout.contains("softcap 50"), "{stdout}");
    assert_eq!(v["softcap"], 50.0);
    assert!(v["rows"][0]["error"].is_null(), "{}", v["rows"][0]);

    for bad in ["-1", "0", "nan"] {
        let arg = format!("--softcap={bad}");
        let out = cuattn(
            &[
                "bench", "--family", "prefill", "--device", "emu", "--quick", &arg,
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--softcap {bad}: {stderr}");
        assert!(stderr.contains("softcap"), "--softcap {bad}: {stderr}");
    }
}

#[test]
fn bench_on_the_emulator_without_quick_exits_2_and_says_why() {
    let json = temp_json("refused");
    let out = cuattn(
        &[
            "bench",
            "--family",
            "prefill",
            "--device",
            "emu",
            "--json",
            json.to_str().unwrap(),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("emulator") && stderr.contains("--quick") && stderr.contains("GPU"),
        "{stderr}"
    );
    assert!(!json.exists(), "nothing measured, nothing written");
}

#[test]
fn bench_rejects_an_unknown_kernel_naming_the_choices() {
    let out = cuattn(
        &[
            "bench", "--family", "prefill", "--device", "emu", "--quick", "--kernel", "nope",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'nope'"), "{stderr}");
    for kernel in Kernel::ALL {
        assert!(stderr.contains(kernel.name()), "{stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// Decode.
// ---------------------------------------------------------------------------------------------

/// KV bytes of a decode step, counted here from first principles: each of `batch` sequences
/// reads `context` tokens, each token a key and a value row of `kv_heads * head_dim` bf16
/// elements of 2 bytes.
fn expected_kv_bytes(batch: u64, context: u64, kv_heads: u64, head_dim: u64) -> u64 {
    let per_token = 2 * kv_heads * head_dim * 2;
    (0..batch).map(|_| context * per_token).sum()
}

#[test]
fn decode_grid_holds_the_targets_and_skips_only_shapes_over_the_kv_budget() {
    let shapes = decode::decode_shapes();
    assert_eq!(shapes.len(), 4 * 3 * 4, "batches x contexts x head groups");
    let mut over = Vec::new();
    for batch in [1, 8, 64, 256] {
        for context in [1024, 8192, 65536] {
            for (heads, kv_heads) in [(32, 32), (32, 8), (32, 4), (32, 1)] {
                let found: Vec<&DecodeShape> = shapes
                    .iter()
                    .filter(|s| {
                        (s.batch, s.context, s.heads, s.kv_heads)
                            == (batch, context, heads, kv_heads)
                    })
                    .collect();
                assert_eq!(found.len(), 1, "b{batch} ctx{context} h{heads}/{kv_heads}");
                let s = found[0];
                assert_eq!((s.head_dim, s.page_size), (128, 16), "{}", s.label());
                let want = expected_kv_bytes(batch as u64, context as u64, kv_heads as u64, 128);
                assert_eq!(s.kv_bytes(), want, "{}", s.label());
                if want > 40 << 30 {
                    over.push(s.label());
                }
            }
        }
    }
    println!("over the 40 GiB budget: {over:?}");
    assert_eq!(KV_BUDGET_BYTES, 40 << 30);
    assert_eq!(
        over,
        [
            "b64 ctx64k h32/32 d128",
            "b256 ctx64k h32/32 d128",
            "b256 ctx64k h32/8 d128"
        ]
    );
    let quick = decode::quick_gpu_shapes();
    for target in TARGETS {
        println!(
            "target {} split {:?}: {}%",
            target.shape.label(),
            target.split,
            target.min_pct_of_copy
        );
        assert!(shapes.contains(&target.shape), "{}", target.shape.label());
        assert!(quick.contains(&target.shape), "{}", target.shape.label());
        assert!(target.shape.kv_bytes() <= KV_BUDGET_BYTES);
    }
    assert_eq!(TARGETS[0].shape.label(), "b64 ctx8k h32/8 d128");
    assert_eq!(TARGETS[1].shape.label(), "b1 ctx64k h32/8 d128");
    assert_eq!(
        (TARGETS[0].min_pct_of_copy, TARGETS[1].min_pct_of_copy),
        (90.0, 85.0)
    );
}

#[test]
fn run_decode_refuses_the_emulator_without_quick() {
    let mut progressed = false;
    let err = decode::run_decode(&Device::emulator(), &DecodeConfig::default(), |_| {
        progressed = true
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`device`") && msg.contains("emulator") && msg.contains("--quick"),
        "{msg}"
    );
    assert!(!progressed, "refused before measuring anything");
}

#[test]
fn decode_quick_on_the_emulator_counts_the_kv_bytes_its_step_reads() {
    let config = DecodeConfig {
        quick: true,
        commit: Some("abc1234".into()),
    };
    let mut progress_rows = Vec::new();
    let report = decode::run_decode(&Device::emulator(), &config, |r| {
        progress_rows.push(r.rows.len())
    })
    .unwrap();
    assert_eq!(
        progress_rows,
        [0, 1, 2],
        "after the copy, then after each row"
    );
    let shape = decode::emulator_shape();
    println!("{}: {} rows", shape.label(), report.rows.len());
    assert_eq!(
        (
            shape.batch,
            shape.context,
            shape.heads,
            shape.kv_heads,
            shape.head_dim
        ),
        (2, 520, 4, 2, 64)
    );
    // 2 sequences x 520 tokens x (K and V) x 2 KV heads x 64 x 2 bytes.
    assert_eq!(expected_kv_bytes(2, 520, 2, 64), 532_480);
    let c = &report.copy;
    assert!(c.ms > 0.0 && c.bytes > 0, "{c:?}");
    assert!((c.read_written_gbps - 2.0 * c.read_gbps).abs() <= 1e-9 * c.read_gbps);
    assert!((c.read_gbps - c.bytes as f64 / (c.ms * 1e-3) / 1e9).abs() <= 1e-9 * c.read_gbps);
    assert_eq!(report.rows.len(), 2);
    for (row, split) in report.rows.iter().zip([SplitKv::Auto, SplitKv::Off]) {
        println!("{row}");
        assert_eq!(row.shape, shape);
        assert_eq!(row.split, split);
        assert!(row.error.is_none() && row.skipped.is_none(), "{row}");
        assert_eq!(row.kv_bytes, 532_480);
        assert_eq!(row.runs, 1, "the emulator runs each split once");
        assert!(row.ms > 0.0);
        let gbps = 532_480.0 / (row.ms * 1e-3) / 1e9;
        assert!(
            (row.gbps - gbps).abs() <= 1e-9 * gbps,
            "{} vs {gbps}",
            row.gbps
        );
        let pct = 100.0 * gbps / c.read_written_gbps;
        assert!((row.pct_of_copy - pct).abs() <= 1e-9 * pct);
    }
    // 520 keys over 4 CTAs on the 132 SMs the emulator plans for: auto splits them in two
    // (at least 256 keys a split); off never splits.
    assert_eq!(report.rows[0].num_splits, Some(2));
    assert_eq!(report.rows[1].num_splits, Some(1));
    assert!(
        report.verdicts().is_empty(),
        "no target shape on the emulator"
    );
}

/// A report of `rows` over a copy of 1000 GB/s read plus written.
fn report_with(rows: Vec<DecodeRow>) -> DecodeReport {
    DecodeReport {
        device: "test".into(),
        emulator: false,
        quick: false,
        commit: None,
        copy: CopyCeiling {
            bytes: 1 << 30,
            ms: 2.147483648,
            min_ms: 2.1,
            max_ms: 2.2,
            runs: 10,
            read_gbps: 500.0,
            read_written_gbps: 1000.0,
        },
        l2_flush_bytes: 0,
        kv_budget_bytes: KV_BUDGET_BYTES,
        rows,
    }
}

#[test]
fn decode_verdicts_compare_each_target_row_with_its_threshold() {
    let copy = report_with(Vec::new()).copy;
    // A median run at the given % of the 1000 GB/s copy.
    let at_pct = |shape: DecodeShape, split, splits, pct: f64| {
        let ms = shape.kv_bytes() as f64 / (pct * 10.0 * 1e9) * 1e3;
        DecodeRow::new(shape, split, splits, &[ms], &copy)
    };
    let [b64, b1] = TARGETS.map(|t| t.shape);
    let report = report_with(vec![
        at_pct(b64, SplitKv::Auto, 1, 91.0),
        at_pct(b64, SplitKv::Off, 1, 95.0),
        at_pct(b1, SplitKv::Auto, 33, 80.0),
    ]);
    let verdicts = report.verdicts();
    for v in &verdicts {
        println!("{}", v.text);
    }
    assert_eq!(verdicts.len(), 2);
    assert_eq!(verdicts[0].met, Some(true));
    assert!((verdicts[0].pct_of_copy.unwrap() - 91.0).abs() < 1e-9);
    assert_eq!(
        verdicts[0].text,
        "b64 ctx8k h32/8 d128 split auto (1 split): 91.0% of copy (target 90%): met"
    );
    assert_eq!(
        verdicts[1].met,
        Some(false),
        "the split-off row is no target"
    );
    assert_eq!(
        verdicts[1].text,
        "b1 ctx64k h32/8 d128 split auto (33 splits): 80.0% of copy (target 85%): not met"
    );

    let skipped = report_with(vec![DecodeRow::skipped(
        b1,
        SplitKv::Auto,
        "over the budget".into(),
    )]);
    let verdicts = skipped.verdicts();
    assert_eq!(verdicts.len(), 1, "only targets with a row");
    assert_eq!(verdicts[0].met, None);
    assert!(verdicts[0].text.contains("skipped (over the budget)"));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["verdicts"][0]["met"], true);
    assert_eq!(json["verdicts"][1]["target_pct_of_copy"], 85.0);
}

#[test]
fn bench_decode_quick_on_the_emulator_prints_the_table_and_writes_json() {
    let (stdout, v) = quick_bench_family("decode", "decode-quick", &[], Some("abc1234"));
    println!("{stdout}");
    assert!(
        stdout.contains("bench decode on emulator, commit abc1234"),
        "{stdout}"
    );
    assert!(stdout.contains("device-to-device copy"), "{stdout}");
    assert!(
        stdout.contains("GB/s") && stdout.contains("% copy"),
        "{stdout}"
    );
    let shape = decode::emulator_shape();
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(&shape.label()))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows.iter().all(|r| r.contains(EMULATOR_NOTE)), "{stdout}");

    assert_eq!(v["family"], "decode");
    assert_eq!(v["device"], "emulator");
    assert_eq!(v["emulator"], true);
    assert_eq!(v["note"], EMULATOR_NOTE);
    assert_eq!(v["quick"], true);
    assert_eq!(v["commit"], "abc1234");
    assert_eq!(v["dtype"], "bf16");
    let copy = &v["copy_ceiling"];
    let (read, both) = (
        copy["read_gbps"].as_f64().unwrap(),
        copy["read_written_gbps"].as_f64().unwrap(),
    );
    assert!(
        read > 0.0 && (both - 2.0 * read).abs() <= 1e-9 * both,
        "{copy}"
    );
    assert_eq!(copy["pct_of_copy_divides_by"], "read_written_gbps");
    assert_eq!(v["kv_budget_bytes"].as_u64(), Some(KV_BUDGET_BYTES));
    let json_rows = v["rows"].as_array().unwrap();
    assert_eq!(json_rows.len(), 2);
    for (row, split) in json_rows.iter().zip(["auto", "off"]) {
        assert_eq!(row["kernel"], "paged");
        assert_eq!(row["shape"], shape.label());
        assert_eq!(row["split"], split);
        assert_eq!(
            (
                row["batch"].as_u64(),
                row["context"].as_u64(),
                row["q_len"].as_u64()
            ),
            (Some(2), Some(520), Some(1))
        );
        assert_eq!(
            (
                row["heads"].as_u64(),
                row["kv_heads"].as_u64(),
                row["group"].as_u64()
            ),
            (Some(4), Some(2), Some(2))
        );
        assert_eq!(
            (row["head_dim"].as_u64(), row["page_size"].as_u64()),
            (Some(64), Some(16))
        );
        assert_eq!(
            row["kv_bytes"].as_u64(),
            Some(expected_kv_bytes(2, 520, 2, 64))
        );
        assert!(row["num_splits"].as_u64().unwrap() >= 1, "{row}");
        assert_eq!(row["runs"], 1);
        assert!(row["error"].is_null() && row["skipped"].is_null(), "{row}");
        assert_spread(row);
        let (ms, gbps) = (row["ms"].as_f64().unwrap(), row["gbps"].as_f64().unwrap());
        let want = 532_480.0 / (ms * 1e-3) / 1e9;
        assert!((gbps - want).abs() <= 1e-9 * want, "{gbps} vs {want}");
        let pct = row["pct_of_copy"].as_f64().unwrap();
        assert!((pct - 100.0 * gbps / both).abs() <= 1e-9 * pct, "{row}");
    }
    assert_eq!(v["verdicts"], serde_json::json!([]));
}

#[test]
fn bench_decode_on_the_emulator_without_quick_exits_2_and_says_why() {
    let json = temp_json("decode-refused");
    let out = cuattn(
        &[
            "bench",
            "--family",
            "decode",
            "--device",
            "emu",
            "--json",
            json.to_str().unwrap(),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("decode benchmark") && stderr.contains("--quick") && stderr.contains("GPU"),
        "{stderr}"
    );
    assert!(!json.exists(), "nothing measured, nothing written");
}

#[test]
fn bench_decode_refuses_the_prefill_options_naming_them() {
    for (option, value, arg) in [
        ("--kernel", "flash", "`kernel`"),
        ("--head-dim", "128", "`head_dim`"),
        ("--flash-tiles", "auto", "`flash_tiles`"),
        ("--softcap", "50", "`softcap`"),
    ] {
        let out = cuattn(
            &[
                "bench", "--family", "decode", "--device", "emu", "--quick", option, value,
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{option} {value}: {stderr}");
        assert_eq!(out.status.code(), Some(2), "{option}: {stderr}");
        assert!(
            stderr.contains(arg) && stderr.contains(option) && stderr.contains("--family prefill"),
            "{option}: {stderr}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("bench decode"));
    }
}

// ---------------------------------------------------------------------------------------------
// Sparse.
// ---------------------------------------------------------------------------------------------

/// A fresh folder under the system temp dir for one test's mask files.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cuattn-bench-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A block matrix as written by `--mask-dir` (uint8 0 or 1): its shape and entries.
fn read_mask(path: &std::path::Path) -> (Vec<usize>, Vec<bool>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        String::from_utf8_lossy(&bytes[..64]).contains("'descr': '|u1'"),
        "{}: uint8, as np.load reads it",
        path.display()
    );
    cuattn::npy::read_mask(path).unwrap()
}

/// (query, key) pairs of `case` counted element by element: query i of head h sees key j when
/// the block matrix `[1, heads or 1, nq, nk]` holds (i / block_q, j / block_k) and `key_visible`
/// (the reference's element rule) lets it; `blocks` is None for the dense kernel.
fn brute_force_sparse_pairs(case: &SparseCase, blocks: Option<(&[usize], &[bool])>) -> u64 {
    let s = &case.shape;
    let (left, right) = s.options().effective_window();
    let block = case.mask.as_ref().map(|(_, block)| *block);
    let mut n = 0;
    for h in 0..s.heads {
        for i in 0..s.seqlen {
            for j in 0..s.seqlen {
                let listed = match (blocks, block) {
                    (Some((dims, blocks)), Some((bq, bk))) => {
                        let mask_head = if dims[1] == 1 { 0 } else { h };
                        blocks[(mask_head * dims[2] + i / bq) * dims[3] + j / bk]
                    }
                    _ => true,
                };
                if listed && key_visible(i, j, s.seqlen, s.seqlen, left.into(), right.into()) {
                    n += 1;
                }
            }
        }
    }
    n * s.batch as u64
}

#[test]
fn block_mask_visible_pairs_match_a_brute_force_count_under_every_window_and_length() {
    let device = Device::emulator();
    let (heads, block) = (2, (16, 32));
    for (n, (seqlen_q, seqlen_k)) in LENGTHS.into_iter().enumerate() {
        let (nq, nk) = (seqlen_q.div_ceil(block.0), seqlen_k.div_ceil(block.1));
        // A random matrix per head, about half the blocks.
        let mut rng = StdRng::seed_from_u64(900 + n as u64);
        let blocks: Vec<bool> = (0..heads * nq * nk).map(|_| rng.random_bool(0.5)).collect();
        let matrix = BlockMatrix::new([1, heads, nq, nk], blocks).unwrap();
        for window in WINDOWS {
            let opts = AttentionOptions {
                window: Some(window),
                ..Default::default()
            };
            let mask = BlockMask::new(
                &device,
                matrix.clone(),
                block,
                &[(seqlen_q, seqlen_k)],
                &opts,
            )
            .unwrap();
            let mut want = 0u64;
            for h in 0..heads {
                for i in 0..seqlen_q {
                    for j in 0..seqlen_k {
                        let (l, r) = (window.0.into(), window.1.into());
                        if matrix.get(0, h, i / block.0, j / block.1)
                            && key_visible(i, j, seqlen_q, seqlen_k, l, r)
                        {
                            want += 1;
                        }
                    }
                }
            }
            println!(
                "seqlen {seqlen_q}/{seqlen_k} window {window:?}: {want} pairs, {} full and {} \
                 partial blocks",
                mask.full_blocks(),
                mask.partial_blocks()
            );
            assert_eq!(
                mask.visible_pairs(),
                want,
                "seqlen {seqlen_q}/{seqlen_k} window {window:?}"
            );
        }
    }
}

#[test]
fn run_sparse_refuses_the_emulator_without_quick() {
    let mut progressed = false;
    let err = sparse::run_sparse(&Device::emulator(), &SparseConfig::default(), |_| {
        progressed = true
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`device`") && msg.contains("emulator") && msg.contains("--quick"),
        "{msg}"
    );
    assert!(!progressed, "refused before measuring anything");
}

#[test]
fn sparse_quick_on_the_emulator_counts_visible_pairs_exactly_from_the_masks_it_wrote() {
    let dir = temp_dir("sparse-masks");
    let config = SparseConfig {
        quick: true,
        commit: Some("abc1234".into()),
        mask_dir: Some(dir.clone()),
    };
    let mut progress_rows = Vec::new();
    let report = sparse::run_sparse(&Device::emulator(), &config, |r| {
        progress_rows.push(r.rows.len());
        // The masks and their manifest are there before the first row is timed.
        assert!(dir.join(sparse::MANIFEST).exists());
    })
    .unwrap();
    let cases = sparse::emulator_cases();
    assert_eq!(progress_rows, (0..=cases.len()).collect::<Vec<_>>());
    assert_eq!(report.rows.len(), cases.len());
    let mut kinds = Vec::new();
    for (row, case) in report.rows.iter().zip(&cases) {
        println!("{row}");
        assert_eq!(&row.case, case);
        assert!(row.error.is_none(), "{row}");
        assert_eq!(row.runs, 1, "the emulator runs each row once");
        let s = &case.shape;
        let counted = match &case.mask {
            None => {
                assert!(row.mask.is_none() && row.mask_file.is_none());
                assert_eq!(row.ratio_to_dense, 1.0);
                brute_force_sparse_pairs(case, None)
            }
            Some((spec, (bq, bk))) => {
                let file = row
                    .mask_file
                    .as_deref()
                    .expect("a mask file per sparse row");
                let (dims, blocks) = read_mask(&dir.join(file));
                let (nq, nk) = (s.seqlen.div_ceil(*bq), s.seqlen.div_ceil(*bk));
                // The file holds the very matrix the row names (its seed or pattern).
                let matrix = spec.matrix(s.heads, nq, nk).unwrap();
                assert_eq!(dims, matrix.dims(), "{file}");
                assert_eq!(blocks, matrix.blocks(), "{file}");
                let facts = row.mask.as_ref().unwrap();
                assert_eq!(facts.dims, matrix.dims());
                assert_eq!(facts.matrix_density, matrix.density());
                kinds.push((spec.kind(), dims[1], facts.partial_blocks > 0));
                let dense = &report.rows[report
                    .rows
                    .iter()
                    .position(|r| r.case.mask.is_none() && r.case.shape == *s)
                    .unwrap()];
                assert_eq!(row.ratio_to_dense, row.ms / dense.ms);
                brute_force_sparse_pairs(case, Some((&dims, &blocks)))
            }
        };
        println!("  {}: {} visible pairs", case.id(), counted);
        assert_eq!(row.visible_pairs, counted, "{}", case.id());
        assert_eq!(row.flops(), 4.0 * counted as f64 * s.head_dim as f64);
        let want = row.flops() / (row.ms * 1e-3) / 1e12;
        assert!((row.tflops - want).abs() <= 1e-9 * want, "{row}");
    }
    // A shared random mask, a per-head pattern, and partial blocks (the sequence's end, the
    // causal diagonal) among them.
    assert!(kinds.contains(&("random", 1, true)), "{kinds:?}");
    assert!(kinds.contains(&("pattern", 2, true)), "{kinds:?}");
    assert!(report.verdict().is_none(), "no target row on the emulator");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(sparse::MANIFEST)).unwrap())
            .unwrap();
    assert_eq!(manifest["family"], "sparse");
    assert!(
        manifest["target"].is_null(),
        "no target row on the emulator"
    );
    let listed = manifest["rows"].as_array().unwrap();
    assert_eq!(listed.len(), cases.len());
    for (entry, row) in listed.iter().zip(&report.rows) {
        assert_eq!(entry["id"], row.case.id());
        assert_eq!(entry["visible_pairs"].as_u64(), Some(row.visible_pairs));
        assert_eq!(entry["mask_file"].as_str(), row.mask_file.as_deref());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A report with the target's row at `ratio` of a 10 ms dense row (or failed).
fn sparse_report_with(target_ms: Option<f64>) -> SparseReport {
    let case = sparse::sparse_cases()
        .into_iter()
        .find(|c| TARGET.applies_to(c))
        .unwrap();
    let row = |case: SparseCase, ms: f64, error: Option<String>| SparseRow {
        mask: case.mask.as_ref().map(|_| MaskFacts {
            dims: [1, 1, 128, 128],
            matrix_density: 0.1,
            density: 0.1,
            full_blocks: 1638,
            partial_blocks: 0,
        }),
        case,
        mask_file: None,
        visible_pairs: 1,
        ms,
        min_ms: ms,
        max_ms: ms,
        runs: 5,
        tflops: 1.0,
        ratio_to_dense: ms / 10.0,
        error,
    };
    let dense = SparseCase::dense(TARGET.shape);
    let target = match target_ms {
        Some(ms) => row(case, ms, None),
        None => row(case, f64::NAN, Some("out of memory".into())),
    };
    SparseReport {
        device: "test".into(),
        emulator: false,
        quick: false,
        commit: None,
        l2_flush_bytes: 0,
        mask_dir: None,
        rows: vec![row(dense, 10.0, None), target],
    }
}

#[test]
fn sparse_verdict_compares_the_target_row_with_its_ratio_to_dense() {
    assert_eq!(
        (
            TARGET.density,
            TARGET.max_ratio_to_dense,
            TARGET.min_speedup_over_flex
        ),
        (0.1, 0.15, 1.3)
    );
    assert_eq!(TARGET.shape.label(), "b1 s16384 h16/16 d128");
    assert_eq!(TARGET.block, (128, 128));

    let met = sparse_report_with(Some(1.2)).verdict().unwrap();
    println!("{}", met.text);
    assert_eq!(met.met, Some(true));
    assert!((met.ratio_to_dense.unwrap() - 0.12).abs() < 1e-12);
    assert!(
        met.text.starts_with(
            "b1 s16384 h16/16 d128 random:density=0.1,seed=101 128x128 (density 0.100): 0.120 \
             of dense (target at most 0.15"
        ),
        "{}",
        met.text
    );
    assert!(met.text.ends_with(": met"), "{}", met.text);

    let slow = sparse_report_with(Some(1.6)).verdict().unwrap();
    assert_eq!(slow.met, Some(false));
    assert!(slow.text.ends_with(": not met"), "{}", slow.text);

    let failed = sparse_report_with(None).verdict().unwrap();
    assert_eq!((failed.met, failed.ratio_to_dense), (None, None));
    assert!(
        failed.text.contains("failed (out of memory)"),
        "{}",
        failed.text
    );

    let json: serde_json::Value =
        serde_json::from_str(&sparse_report_with(Some(1.2)).to_json()).unwrap();
    assert_eq!(json["verdict"]["met"], true);
    assert_eq!(json["verdict"]["max_ratio_to_dense"], 0.15);
    assert_eq!(json["verdict"]["min_speedup_over_flex"], 1.3);
    assert_eq!(
        json["verdict"]["id"],
        "b1 s16384 h16/16 d128 noncausal random:density=0.1,seed=101 128x128"
    );
    assert_eq!(json["rows"][1]["ratio_to_dense"], 0.12);
}

#[test]
fn bench_sparse_quick_on_the_emulator_prints_the_table_and_writes_json_and_masks() {
    let dir = temp_dir("sparse-cli");
    let (stdout, v) = quick_bench_family(
        "sparse",
        "sparse-quick",
        &["--mask-dir", dir.to_str().unwrap()],
        Some("abc1234"),
    );
    println!("{stdout}");
    assert!(
        stdout.contains("bench sparse on emulator, commit abc1234"),
        "{stdout}"
    );
    assert!(
        stdout.contains("TFLOP/s") && stdout.contains("/dense") && stdout.contains("density"),
        "{stdout}"
    );
    let cases = sparse::emulator_cases();
    let table: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(&cases[0].shape.label()))
        .collect();
    assert_eq!(table.len(), cases.len(), "{stdout}");
    assert!(table.iter().all(|r| r.contains(EMULATOR_NOTE)), "{stdout}");

    assert_eq!(v["family"], "sparse");
    assert_eq!(v["device"], "emulator");
    assert_eq!(v["emulator"], true);
    assert_eq!(v["note"], EMULATOR_NOTE);
    assert_eq!(v["quick"], true);
    assert_eq!(v["commit"], "abc1234");
    assert_eq!(v["dtype"], "bf16");
    assert_eq!(v["mask_dir"], dir.to_str().unwrap());
    assert!(v["verdict"].is_null());
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), cases.len());
    for (row, case) in rows.iter().zip(&cases) {
        assert_eq!(row["id"], case.id());
        assert_eq!(row["kernel"], case.kernel());
        assert_eq!(row["shape"], case.shape.label());
        assert_eq!(row["causal"], case.shape.causal);
        assert_eq!(
            (
                row["seqlen_q"].as_u64(),
                row["seqlen_k"].as_u64(),
                row["heads"].as_u64(),
                row["kv_heads"].as_u64(),
                row["head_dim"].as_u64()
            ),
            (Some(241), Some(241), Some(2), Some(1), Some(64))
        );
        assert_eq!(row["runs"], 1);
        assert!(row["error"].is_null(), "{row}");
        assert_spread(row);
        for field in ["ms", "min_ms", "tflops", "ratio_to_dense", "flops"] {
            assert!(
                row[field].as_f64().is_some_and(|x| x > 0.0),
                "{field}: {row}"
            );
        }
        assert!(row["visible_pairs"].as_u64().unwrap() > 0, "{row}");
        match &case.mask {
            None => {
                assert_eq!(row["mask"], "dense");
                assert_eq!(row["mask_kind"], "dense");
                for field in ["block_q", "mask_file", "mask_dims", "density", "seed"] {
                    assert!(row[field].is_null(), "{field}: {row}");
                }
                assert_eq!(row["ratio_to_dense"], 1.0);
            }
            Some((spec, (bq, bk))) => {
                assert_eq!(row["mask"], spec.label());
                assert_eq!(row["mask_kind"], spec.kind());
                assert_eq!(
                    (row["block_q"].as_u64(), row["block_k"].as_u64()),
                    (Some(*bq as u64), Some(*bk as u64))
                );
                let file = row["mask_file"].as_str().unwrap();
                let (dims, blocks) = read_mask(&dir.join(file));
                assert_eq!(row["mask_dims"], serde_json::json!(dims));
                assert_eq!(
                    row["visible_pairs"].as_u64(),
                    Some(brute_force_sparse_pairs(case, Some((&dims, &blocks))))
                );
                let density = row["density"].as_f64().unwrap();
                assert!(density > 0.0 && density <= row["matrix_density"].as_f64().unwrap());
                assert!(
                    row["full_blocks"].as_u64().is_some()
                        && row["partial_blocks"].as_u64().is_some()
                );
                match spec {
                    MaskSpec::Random { density, seed } => {
                        assert_eq!(row["density_asked"], *density);
                        assert_eq!(row["seed"], *seed);
                        assert!(row["pattern"].is_null());
                    }
                    MaskSpec::Pattern(p) => {
                        assert_eq!(row["pattern"], p.to_string());
                        assert!(row["density_asked"].is_null());
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_sparse_on_the_emulator_without_quick_exits_2_and_says_why() {
    let json = temp_json("sparse-refused");
    let dir = temp_dir("sparse-refused");
    let out = cuattn(
        &[
            "bench",
            "--family",
            "sparse",
            "--device",
            "emu",
            "--mask-dir",
            dir.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sparse benchmark") && stderr.contains("--quick") && stderr.contains("GPU"),
        "{stderr}"
    );
    assert!(!json.exists(), "nothing measured, nothing written");
    assert!(!dir.exists(), "no masks written");
}

#[test]
fn bench_sparse_refuses_the_prefill_options_and_the_others_refuse_mask_dir() {
    for (option, value, arg) in [
        ("--kernel", "flash", "`kernel`"),
        ("--head-dim", "128", "`head_dim`"),
        ("--flash-tiles", "auto", "`flash_tiles`"),
        ("--softcap", "50", "`softcap`"),
    ] {
        let out = cuattn(
            &[
                "bench", "--family", "sparse", "--device", "emu", "--quick", option, value,
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{option} {value}: {stderr}");
        assert_eq!(out.status.code(), Some(2), "{option}: {stderr}");
        assert!(
            stderr.contains(arg)
                && stderr.contains(option)
                && stderr.contains("--family prefill only")
                && stderr.contains("--family sparse times the block-sparse"),
            "{option}: {stderr}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("bench sparse"));
    }
    let dir = temp_dir("mask-dir-refused");
    for family in ["prefill", "decode"] {
        let out = cuattn(
            &[
                "bench",
                "--family",
                family,
                "--device",
                "emu",
                "--quick",
                "--mask-dir",
                dir.to_str().unwrap(),
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("--family {family} --mask-dir: {stderr}");
        assert_eq!(out.status.code(), Some(2), "{family}: {stderr}");
        assert!(
            stderr.contains("`mask_dir`")
                && stderr.contains("--mask-dir applies to --family sparse only")
                && stderr.contains(&format!("--family {family} times")),
            "{family}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{family}: refused before running");
        assert!(!dir.exists());
    }
}

// ---------------------------------------------------------------------------------------------
// Linear attention.
// ---------------------------------------------------------------------------------------------

/// A linear report of the GPU shapes at `lengths`: flash at `flash_ms(n)`, linear at
/// `linear_ms(n)`, ratios as the run computes them.
fn linear_report_with(
    lengths: &[usize],
    flash_ms: impl Fn(f64) -> f64,
    linear_ms: impl Fn(f64) -> f64,
) -> LinearReport {
    let mut rows = Vec::new();
    for &n in lengths {
        let (flash, lin) = (flash_ms(n as f64), linear_ms(n as f64));
        for (kernel, ms, ratio) in [
            (LinearBenchKernel::Flash, flash, 1.0),
            (LinearBenchKernel::Linear, lin, lin / flash),
        ] {
            rows.push(LinearRow {
                kernel,
                shape: linear::gpu_shape(n),
                ms,
                min_ms: ms,
                max_ms: ms,
                runs: 5,
                ratio_to_flash: ratio,
                error: None,
            });
        }
    }
    LinearReport {
        device: "test".into(),
        emulator: false,
        quick: false,
        commit: None,
        l2_flush_bytes: 0,
        rows,
    }
}

#[test]
fn linear_verdicts_judge_the_ratios_from_4k_and_the_exponent_of_the_fit() {
    let lengths = linear::LENGTHS;
    assert_eq!(lengths.first(), Some(&1024));
    assert_eq!(lengths.last(), Some(&65536));
    assert!(lengths.contains(&FASTER_FROM));
    // Flash quadratic, linear a line through 0.02 ms: slower than flash at 1k and 2k only.
    let flash = |n: f64| 5e-8 * n * n;
    let report = linear_report_with(&lengths, flash, |n| 1.5e-4 * n + 0.02);
    for r in &report.rows {
        println!("{r}");
    }
    let [faster, growth] = <[_; 2]>::try_from(report.verdicts()).unwrap();
    println!("{}\n{}", faster.text, growth.text);
    assert_eq!(faster.target, "faster_than_flash");
    assert_eq!(faster.met, Some(true), "{}", faster.text);
    assert!(faster.text.contains("4096: ") && !faster.text.contains("2048: "));
    let fit = report.fit(LinearBenchKernel::Linear).unwrap();
    assert_eq!(fit.points, 7);
    assert!((fit.slope_ms_per_token - 1.5e-4).abs() < 1e-12, "{fit:?}");
    assert!(fit.r2 > 0.999_999, "{fit:?}");
    assert!(
        (EXPONENT_RANGE.0..=EXPONENT_RANGE.1).contains(&fit.exponent),
        "{fit:?}"
    );
    assert_eq!(growth.met, Some(true), "{}", growth.text);
    let flash_fit = report.fit(LinearBenchKernel::Flash).unwrap();
    assert!((flash_fit.exponent - 2.0).abs() < 1e-9, "{flash_fit:?}");

    // Slower than flash at 8k: not met. Growing as n^1.3: not linear.
    let report = linear_report_with(&lengths, flash, |n| {
        if n == 8192.0 {
            flash(n) * 1.01
        } else {
            1e-5 * n.powf(1.3)
        }
    });
    let verdicts = report.verdicts();
    assert_eq!(verdicts[0].met, Some(false), "{}", verdicts[0].text);
    assert!(
        verdicts[0].text.contains("8192: 1.010"),
        "{}",
        verdicts[0].text
    );
    assert_eq!(verdicts[1].met, Some(false), "{}", verdicts[1].text);

    // A run of other shapes (the emulator's) has nothing to judge.
    let mut other = linear_report_with(&[64, 150], flash, |n| n);
    for r in &mut other.rows {
        r.shape = linear::emulator_shape(r.shape.seqlen);
    }
    assert!(other.verdicts().iter().all(|v| v.met.is_none()));
    // A failed linear row at 16k leaves the others to judge.
    let mut failed = linear_report_with(&lengths, flash, |n| 1.5e-4 * n);
    failed.rows[9].error = Some("launch failed".into());
    assert_eq!(failed.rows[9].shape.seqlen, 16384);
    assert_eq!(failed.rows[9].kernel, LinearBenchKernel::Linear);
    let verdicts = failed.verdicts();
    assert!(!verdicts[0].text.contains("16384"), "{}", verdicts[0].text);
    assert!(
        verdicts[1].text.contains("over 6 lengths"),
        "{}",
        verdicts[1].text
    );
}

#[test]
fn run_linear_refuses_the_emulator_without_quick() {
    let mut progressed = false;
    let e = linear::run_linear(&Device::emulator(), &LinearBenchConfig::default(), |_| {
        progressed = true
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("--quick") && e.contains("GPU"), "{e}");
    assert!(!progressed);
}

#[test]
fn bench_linear_quick_on_the_emulator_prints_the_table_fits_and_json() {
    let (stdout, v) = quick_bench_family("linear", "linear-quick", &[], Some("abc1234"));
    println!("{stdout}");
    let shapes = linear::shapes_for(&Device::emulator(), true);
    assert_eq!(shapes.len(), linear::EMULATOR_LENGTHS.len());
    for shape in &shapes {
        for kernel in ["flash", "linear_elu1"] {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&format!("{kernel} ")) && l.contains(&shape.label()))
                .unwrap_or_else(|| panic!("no {kernel} row of {}:\n{stdout}", shape.label()));
            assert!(row.contains(EMULATOR_NOTE), "{row}");
        }
    }
    assert!(stdout.contains("fit: linear_elu1: ms = "), "{stdout}");
    assert!(stdout.contains("fit: flash: ms = "), "{stdout}");
    assert_eq!(
        stdout.matches("target: ").count(),
        2,
        "two verdicts: {stdout}"
    );
    assert_eq!(v["family"], "linear");
    assert_eq!(v["emulator"], true);
    assert_eq!(v["commit"], "abc1234");
    assert_eq!(v["feature"], "elu1");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * shapes.len());
    for (pair, shape) in rows.chunks(2).zip(&shapes) {
        assert_eq!(pair[0]["kernel"], "flash");
        assert_eq!(pair[1]["kernel"], "linear_elu1");
        for row in pair {
            assert_eq!(row["seqlen"], shape.seqlen);
            assert_eq!(row["causal"], true);
            assert!(row["error"].is_null(), "{row}");
            assert!(row["ms"].as_f64().unwrap() > 0.0, "{row}");
            assert_spread(row);
        }
        let ratio = pair[1]["ratio_to_flash"].as_f64().unwrap();
        let want = pair[1]["ms"].as_f64().unwrap() / pair[0]["ms"].as_f64().unwrap();
        assert!((ratio - want).abs() <= 1e-12 * want, "{ratio} vs {want}");
    }
    for kernel in ["linear", "flash"] {
        let fit = &v["fits"][kernel];
        assert_eq!(fit["points"], shapes.len(), "{fit}");
        assert!(fit["exponent"].as_f64().is_some(), "{fit}");
    }
    let verdicts = v["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 2);
    assert!(
        verdicts.iter().all(|v| v["met"].is_null()),
        "the emulator's shapes are not the target's: {verdicts:?}"
    );
}

#[test]
fn bench_linear_refuses_a_full_emulator_run_and_the_other_families_options() {
    let out = cuattn(&["bench", "--family", "linear", "--device", "emu"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("linear benchmark") && stderr.contains("--quick"),
        "{stderr}"
    );
    for (option, value, arg, takers) in [
        ("--kernel", "flash", "`kernel`", "--family prefill only"),
        ("--softcap", "50", "`softcap`", "--family prefill only"),
        ("--mask-dir", "/tmp", "`mask_dir`", "--family sparse only"),
    ] {
        let out = cuattn(
            &[
                "bench", "--family", "linear", "--device", "emu", "--quick", option, value,
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{option} {value}: {stderr}");
        assert_eq!(out.status.code(), Some(2), "{option}: {stderr}");
        assert!(
            stderr.contains(arg)
                && stderr.contains(takers)
                && stderr.contains("--family linear times linear attention"),
            "{option}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{option}: refused before running");
    }
}

/// A report row's times: the median within the fastest and slowest runs, all positive (with
/// one run, the three equal).
fn assert_spread(row: &serde_json::Value) {
    let [min, ms, max] = ["min_ms", "ms", "max_ms"].map(|f| row[f].as_f64().unwrap_or(f64::NAN));
    assert!(0.0 < min && min <= ms && ms <= max, "{row}");
    if row["runs"] == 1 {
        assert!(min == ms && ms == max, "{row}");
    }
}
