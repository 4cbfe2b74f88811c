//! The prefill benchmark's arithmetic and code paths, without timing anything: visible pairs are
//! counted exactly (against a brute-force count over the reference's mask rule), bench_mma writes
//! the closed-form value that proves every mma ran, and `cuattn bench` runs its quick emulator
//! path end to end (table and JSON) and refuses a full run on the emulator.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use cuattn::bench::{
    self, bench_mma_expected, bench_mma_flops, launch_bench_mma, median, prefill_shapes,
    visible_pairs, BenchConfig, PrefillShape, EMULATOR_NOTE, MODEL_DIM, TOKENS,
};
use cuattn::reference::key_visible;
use cuattn::{AttentionOptions, Device, FlashTiles, Kernel, Tensor};

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
fn bench_mma_writes_the_closed_form_value_from_every_thread() {
    let threads = cuattn::ffi::CUATTN_BENCH_MMA_BLOCK_THREADS as usize;
    for device in common::devices() {
        for (blocks, iterations) in [(1, 0), (1, 1), (2, 3)] {
            let out = Tensor::<f32>::full(&device, &[blocks as usize * threads], f32::NAN).unwrap();
            launch_bench_mma(&out, blocks, iterations).unwrap();
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
    let out = Tensor::<f32>::zeros(&device, &[threads]).unwrap();
    let short = launch_bench_mma(&out, 2, 1).unwrap_err().to_string();
    assert!(
        short.contains("out") && short.contains("2 blocks"),
        "{short}"
    );
    let zero = launch_bench_mma(&out, 0, 1).unwrap_err().to_string();
    assert!(zero.contains("blocks = 0"), "{zero}");
    let negative = launch_bench_mma(&out, 1, -1).unwrap_err().to_string();
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
    };
    let shape_dim = bench::emulator_shape().head_dim;
    cuattn::set_flash_tiles(FlashTiles::Compact);
    let report = bench::run_prefill(&device, &only(vec![shape_dim, 256]), |_| {}).unwrap();
    assert_eq!(
        cuattn::flash_tiles(),
        FlashTiles::Compact,
        "the run puts the setting back"
    );
    cuattn::set_flash_tiles(FlashTiles::Auto);
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
    let json = temp_json(test);
    let mut args = vec!["bench", "--family", "prefill", "--device", "emu", "--quick"];
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
    assert!(stderr.contains("`nope`"), "{stderr}");
    for kernel in Kernel::ALL {
        assert!(stderr.contains(kernel.name()), "{stderr}");
    }
}
