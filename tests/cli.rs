//! `cuattn run attention` end to end on the emulator: .npy files in, out and LSE files checked
//! against the f64 reference (dense GQA/MQA with masks and softcap, varlen), and bad inputs
//! exiting with code 2 and a message naming the argument. Then the command line's conventions:
//! exit statuses (2 usage, 3 runtime), `--device gpu:N`, `--kernel` values, `check --filter` and
//! `--seed`, `bench --shape` and `--causal`, `info --json`, and the progress bar (a terminal's
//! only).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cuattn::npy;
use cuattn::reference::{self, AttentionProblem, Varlen};
use cuattn::sparse::{BlockMatrix, Pattern};
use half::{bf16, f16};
use npyz::WriterBuilder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("cuattn-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cuattn(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cuattn"))
        .args(args)
        .output()
        .expect("the cuattn binary runs")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn path_arg(flag: &str, path: &Path) -> [String; 2] {
    [flag.to_string(), path.display().to_string()]
}

/// Uniform values in [-range, range) from a fixed seed.
fn random(rng: &mut StdRng, n: usize, range: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-range..range)).collect()
}

fn write_f16(path: &Path, shape: &[usize], data: &[f32]) {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = npyz::WriteOptions::<f16>::new()
        .default_dtype()
        .shape(&shape)
        .writer(file)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().map(|&x| f16::from_f32(x))).unwrap();
    w.finish().unwrap();
}

fn write_ints<T: npyz::AutoSerialize + Copy>(path: &Path, data: &[T]) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(&[data.len() as u64])
        .writer(file)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

#[derive(Clone, Copy, PartialEq)]
enum Dtype {
    Bf16,
    F16,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }

    /// What the kernel sees of `x`: rounded to the dtype (nearest even), widened exactly.
    fn round(self, x: f32) -> f64 {
        match self {
            Dtype::Bf16 => bf16::from_f32(x).to_f64(),
            Dtype::F16 => f16::from_f32(x).to_f64(),
        }
    }

    /// Output tolerance (atol = rtol) against the f64 reference.
    fn out_tol(self) -> f64 {
        match self {
            Dtype::Bf16 => 2e-2,
            Dtype::F16 => 1e-2,
        }
    }
}

/// LSE tolerance (atol = rtol): the LSE is accumulated in f32 from the rounded inputs.
const LSE_TOL: f64 = 1e-2;

/// One dense attention problem for the CLI.
struct Case {
    batch: usize,
    seqlen_q: usize,
    seqlen_k: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal: bool,
    window: Option<(i32, i32)>,
    scale: Option<f32>,
    softcap: Option<f32>,
}

impl Case {
    /// The reference problem; `causal` is the window's right side clamped to 0, as the API does.
    fn problem(&self) -> AttentionProblem {
        let mut p = AttentionProblem::new(
            self.batch,
            self.seqlen_q,
            self.seqlen_k,
            self.heads,
            self.kv_heads,
            self.head_dim,
        );
        let (left, right) = self.window.unwrap_or((-1, -1));
        p.window_left = i64::from(left);
        p.window_right = if self.causal { 0 } else { i64::from(right) };
        if let Some(scale) = self.scale {
            p.scale = f64::from(scale);
        }
        p.softcap = f64::from(self.softcap.unwrap_or(0.0));
        p
    }

    fn option_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.causal {
            args.push("--causal".to_string());
        }
        if let Some((left, right)) = self.window {
            args.extend(["--window".to_string(), format!("{left},{right}")]);
        }
        if let Some(scale) = self.scale {
            args.extend(["--scale".to_string(), scale.to_string()]);
        }
        if let Some(softcap) = self.softcap {
            args.extend(["--softcap".to_string(), softcap.to_string()]);
        }
        args
    }
}

/// Random q, k, v for `case` written into `dir` as q.npy, k.npy, v.npy (q as float16 when
/// running f16, to cover that input type); returns them as f32.
fn write_case_inputs(
    dir: &TempDir,
    case: &Case,
    dtype: Dtype,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let q_shape = [case.batch, case.seqlen_q, case.heads, case.head_dim];
    let kv_shape = [case.batch, case.seqlen_k, case.kv_heads, case.head_dim];
    let q = random(&mut rng, q_shape.iter().product(), 1.5);
    let k = random(&mut rng, kv_shape.iter().product(), 1.5);
    let v = random(&mut rng, kv_shape.iter().product(), 1.0);
    let qp = dir.path("q.npy");
    match dtype {
        Dtype::F16 => write_f16(&qp, &q_shape, &q),
        Dtype::Bf16 => npy::write_f32(&qp, &q_shape, &q).unwrap(),
    }
    npy::write_f32(&dir.path("k.npy"), &kv_shape, &k).unwrap();
    npy::write_f32(&dir.path("v.npy"), &kv_shape, &v).unwrap();
    (q, k, v)
}

/// What one successful CLI run on a case's files wrote, widened to f64, and its stderr.
struct RunResult {
    out: Vec<f64>,
    lse: Vec<f64>,
    stderr: String,
}

/// Runs `cuattn run attention` on the emulator over the q, k, v files in `dir` with the case's
/// options plus `extra`, writing `{name}-out.npy` and `{name}-lse.npy`; checks that it succeeds
/// and the outputs' shapes.
fn run_case_files(
    test: &str,
    dir: &TempDir,
    case: &Case,
    dtype: Dtype,
    name: &str,
    extra: &[&str],
) -> RunResult {
    let (op, lp) = (
        dir.path(&format!("{name}-out.npy")),
        dir.path(&format!("{name}-lse.npy")),
    );
    let mut args = strings(&[
        "run",
        "attention",
        "--device",
        "emu",
        "--dtype",
        dtype.name(),
    ]);
    for (flag, path) in [
        ("--q", &dir.path("q.npy")),
        ("--k", &dir.path("k.npy")),
        ("--v", &dir.path("v.npy")),
        ("--out", &op),
        ("--lse", &lp),
    ] {
        args.extend(path_arg(flag, path));
    }
    args.extend(case.option_args());
    args.extend(strings(extra));
    println!("{test}: cuattn {}", args.join(" "));
    let output = cuattn(&args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{test}: {:?}\n{stderr}",
        output.status
    );
    print!("{stderr}");
    let out = npy::read_f32(&op).unwrap();
    let lse = npy::read_f32(&lp).unwrap();
    assert_eq!(
        out.shape,
        [case.batch, case.seqlen_q, case.heads, case.head_dim],
        "{test}: out shape"
    );
    assert_eq!(
        lse.shape,
        [case.batch, case.heads, case.seqlen_q],
        "{test}: lse shape"
    );
    assert!(
        out.data.iter().all(|x| x.is_finite()),
        "{test}: out has non-finite values"
    );
    let widen = |x: &[f32]| x.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    RunResult {
        out: widen(&out.data),
        lse: widen(&lse.data),
        stderr,
    }
}

/// The f64 reference of `case` on the inputs as the kernels see them (rounded to `dtype`).
fn case_reference(
    case: &Case,
    dtype: Dtype,
    (q, k, v): (&[f32], &[f32], &[f32]),
) -> reference::AttentionReference {
    let round = |x: &[f32]| x.iter().map(|&x| dtype.round(x)).collect::<Vec<f64>>();
    reference::attention(&case.problem(), &round(q), &round(k), &round(v))
}

/// Checks a run's out and LSE against the reference at the dtype's tolerances.
fn check_against_reference(
    test: &str,
    got: &RunResult,
    want: &reference::AttentionReference,
    dtype: Dtype,
) {
    let tol = dtype.out_tol();
    if let Err(m) = reference::compare(&got.out, &want.out, tol, tol) {
        panic!("{test}: out: {m}");
    }
    if let Err(m) = reference::compare(&got.lse, &want.lse, LSE_TOL, LSE_TOL) {
        panic!("{test}: lse: {m}");
    }
}

/// Writes random q, k, v for `case`, runs the CLI on the emulator, and checks out and LSE
/// against the f64 reference (returned).
fn run_case_against_reference(
    test: &str,
    case: &Case,
    dtype: Dtype,
    seed: u64,
) -> reference::AttentionReference {
    let dir = TempDir::new(test);
    let (q, k, v) = write_case_inputs(&dir, case, dtype, seed);
    let got = run_case_files(test, &dir, case, dtype, "dense", &[]);
    assert!(
        got.stderr.contains(cuattn::Kernel::DEFAULT.name())
            && got.stderr.contains("emulator")
            && got.stderr.contains(dtype.name()),
        "{test}: the run line should name kernel, device and dtype: {}",
        got.stderr
    );
    let want = case_reference(case, dtype, (&q, &k, &v));
    check_against_reference(test, &got, &want, dtype);
    want
}

/// How many rows of a reference result see no key (LSE -inf).
fn empty_rows(want: &reference::AttentionReference) -> usize {
    want.lse.iter().filter(|&&x| x == f64::NEG_INFINITY).count()
}

/// GQA group 2, causal with seqlen_q < seqlen_k (the diagonal starts 16 keys in).
fn gqa2_causal() -> Case {
    Case {
        batch: 2,
        seqlen_q: 17,
        seqlen_k: 33,
        heads: 4,
        kv_heads: 2,
        head_dim: 40,
        causal: true,
        window: None,
        scale: None,
        softcap: None,
    }
}

/// MQA, window (5, 3), an explicit scale large enough for the softcap to bend scores.
fn mqa_window_softcap() -> Case {
    Case {
        batch: 2,
        seqlen_q: 17,
        seqlen_k: 33,
        heads: 5,
        kv_heads: 1,
        head_dim: 40,
        causal: false,
        window: Some((5, 3)),
        scale: Some(0.5),
        softcap: Some(3.0),
    }
}

/// GQA group 5, causal plus window (5, 3) (right side becomes 0) with seqlen_q > seqlen_k, so the
/// first 16 query rows see no key: zeros and LSE -inf.
fn group5_causal_window_more_queries() -> Case {
    Case {
        batch: 1,
        seqlen_q: 33,
        seqlen_k: 17,
        heads: 10,
        kv_heads: 2,
        head_dim: 40,
        causal: true,
        window: Some((5, 3)),
        scale: None,
        softcap: Some(3.0),
    }
}

#[test]
fn bf16_gqa2_causal_matches_reference() {
    run_case_against_reference("bf16-gqa2-causal", &gqa2_causal(), Dtype::Bf16, 1);
}

#[test]
fn f16_gqa2_causal_from_f16_file_matches_reference() {
    run_case_against_reference("f16-gqa2-causal", &gqa2_causal(), Dtype::F16, 2);
}

#[test]
fn bf16_mqa_window_5_3_softcap_matches_reference() {
    run_case_against_reference("bf16-mqa-window", &mqa_window_softcap(), Dtype::Bf16, 3);
}

#[test]
fn f16_mqa_window_5_3_softcap_matches_reference() {
    run_case_against_reference("f16-mqa-window", &mqa_window_softcap(), Dtype::F16, 4);
}

#[test]
fn bf16_group5_causal_window_with_empty_rows_matches_reference() {
    let case = group5_causal_window_more_queries();
    let want = run_case_against_reference("bf16-group5", &case, Dtype::Bf16, 5);
    assert_eq!(empty_rows(&want), 16 * 10, "16 empty rows per head");
}

#[test]
fn f16_group5_causal_window_with_empty_rows_matches_reference() {
    let case = group5_causal_window_more_queries();
    let want = run_case_against_reference("f16-group5", &case, Dtype::F16, 6);
    assert_eq!(empty_rows(&want), 16 * 10, "16 empty rows per head");
}

#[test]
fn varlen_with_length_1_sequences_matches_reference() {
    let dir = TempDir::new("varlen");
    let (heads, kv_heads, head_dim) = (4, 2, 64);
    // (seqlen_q, seqlen_k): a 1x1 sequence, a decode-like 1x33, and 17 queries over 12 keys
    // (causal leaves its first 5 rows empty).
    let cu_q = [0i32, 1, 2, 19];
    let cu_k = [0i64, 1, 34, 46];
    let (total_q, total_k) = (19, 46);
    let mut rng = StdRng::seed_from_u64(7);
    let q = random(&mut rng, total_q * heads * head_dim, 1.5);
    let k = random(&mut rng, total_k * kv_heads * head_dim, 1.5);
    let v = random(&mut rng, total_k * kv_heads * head_dim, 1.0);
    let (qp, kp, vp) = (dir.path("q.npy"), dir.path("k.npy"), dir.path("v.npy"));
    let (op, lp) = (dir.path("out.npy"), dir.path("lse.npy"));
    let (cqp, ckp) = (dir.path("cu_q.npy"), dir.path("cu_k.npy"));
    npy::write_f32(&qp, &[total_q, heads, head_dim], &q).unwrap();
    npy::write_f32(&kp, &[total_k, kv_heads, head_dim], &k).unwrap();
    npy::write_f32(&vp, &[total_k, kv_heads, head_dim], &v).unwrap();
    // int32 query offsets, int64 key offsets: both are accepted.
    write_ints(&cqp, &cu_q);
    write_ints(&ckp, &cu_k);

    let mut args = strings(&["run", "attention", "--device", "emu", "--causal"]);
    for (flag, path) in [
        ("--q", &qp),
        ("--k", &kp),
        ("--v", &vp),
        ("--out", &op),
        ("--lse", &lp),
        ("--cu-seqlens-q", &cqp),
        ("--cu-seqlens-k", &ckp),
    ] {
        args.extend(path_arg(flag, path));
    }
    println!("varlen: cuattn {}", args.join(" "));
    let output = cuattn(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}\n{stderr}", output.status);
    print!("{stderr}");
    assert!(stderr.contains("varlen batch 3"), "{stderr}");

    let mut p = AttentionProblem::new(3, 0, 0, heads, kv_heads, head_dim);
    p.window_right = 0;
    p.varlen = Some(Varlen {
        cu_seqlens_q: cu_q.to_vec(),
        cu_seqlens_k: cu_k.iter().map(|&x| x as i32).collect(),
    });
    let round = |x: &[f32]| {
        x.iter()
            .map(|&x| Dtype::Bf16.round(x))
            .collect::<Vec<f64>>()
    };
    let want = reference::attention(&p, &round(&q), &round(&k), &round(&v));
    let out = npy::read_f32(&op).unwrap();
    let lse = npy::read_f32(&lp).unwrap();
    assert_eq!(out.shape, [total_q, heads, head_dim]);
    assert_eq!(lse.shape, [heads, total_q]);
    let widen = |x: &[f32]| x.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let tol = Dtype::Bf16.out_tol();
    if let Err(m) = reference::compare(&widen(&out.data), &want.out, tol, tol) {
        panic!("varlen out: {m}");
    }
    if let Err(m) = reference::compare(&widen(&lse.data), &want.lse, LSE_TOL, LSE_TOL) {
        panic!("varlen lse: {m}");
    }
    assert_eq!(
        empty_rows(&want),
        5 * heads,
        "the 17x12 sequence has 5 empty rows per head"
    );
    // The 1x1 sequence's output is its single value row (bf16-rounded), exactly.
    for h in 0..heads {
        let kv_h = h / (heads / kv_heads);
        let got = &out.data[h * head_dim..(h + 1) * head_dim];
        let v_row = &v[kv_h * head_dim..(kv_h + 1) * head_dim];
        for (g, x) in got.iter().zip(v_row) {
            assert_eq!(
                f64::from(*g),
                Dtype::Bf16.round(*x),
                "1x1 sequence, head {h}"
            );
        }
    }
}

/// Valid dense inputs (batch 1, seqlen 9, heads 4, kv_heads 2, head_dim 16) for the error tests,
/// and the output path, which must not exist after a failed run.
struct BadInputSetup {
    dir: TempDir,
}

impl BadInputSetup {
    fn new(test: &str) -> BadInputSetup {
        let dir = TempDir::new(test);
        let mut rng = StdRng::seed_from_u64(11);
        npy::write_f32(
            &dir.path("q.npy"),
            &[1, 9, 4, 16],
            &random(&mut rng, 576, 1.0),
        )
        .unwrap();
        for name in ["k.npy", "v.npy"] {
            npy::write_f32(&dir.path(name), &[1, 9, 2, 16], &random(&mut rng, 288, 1.0)).unwrap();
        }
        BadInputSetup { dir }
    }

    /// Runs with `--q/--k/--v` from the setup unless `overrides` replaces them, plus `extra`.
    fn run(&self, overrides: &[(&str, PathBuf)], extra: &[&str]) -> (i32, String) {
        let mut args = strings(&["run", "attention", "--device", "emu"]);
        for flag in ["--q", "--k", "--v"] {
            let default = self.dir.path(&format!("{}.npy", &flag[2..]));
            let path = overrides
                .iter()
                .find(|(f, _)| *f == flag)
                .map_or(default, |(_, p)| p.clone());
            args.extend(path_arg(flag, &path));
        }
        args.extend(path_arg("--out", &self.dir.path("out.npy")));
        args.extend(strings(extra));
        let output = cuattn(&args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        println!("cuattn {} -> {:?}: {stderr}", args.join(" "), output.status);
        assert!(
            !self.dir.path("out.npy").exists(),
            "a failed run wrote --out: {stderr}"
        );
        (output.status.code().expect("exited, not killed"), stderr)
    }
}

#[test]
fn setup_for_bad_input_tests_succeeds() {
    let setup = BadInputSetup::new("bad-baseline");
    let output = cuattn(&{
        let mut args = strings(&["run", "attention", "--device", "emu"]);
        for name in ["q", "k", "v", "out"] {
            args.extend(path_arg(
                &format!("--{name}"),
                &setup.dir.path(&format!("{name}.npy")),
            ));
        }
        args
    });
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn missing_q_file_exits_2_naming_q_and_the_path() {
    let setup = BadInputSetup::new("bad-missing");
    let missing = setup.dir.path("nowhere.npy");
    let (code, stderr) = setup.run(&[("--q", missing)], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--q") && stderr.contains("nowhere.npy"),
        "{stderr}"
    );
}

#[test]
fn rank3_q_without_cu_seqlens_exits_2_naming_q() {
    let setup = BadInputSetup::new("bad-rank");
    let q3 = setup.dir.path("q3.npy");
    npy::write_f32(&q3, &[9, 4, 16], &[0.5; 576]).unwrap();
    let (code, stderr) = setup.run(&[("--q", q3)], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`q`") && stderr.contains("rank 4"),
        "{stderr}"
    );
}

#[test]
fn kv_heads_not_dividing_heads_exits_2_naming_kv_heads() {
    let setup = BadInputSetup::new("bad-groups");
    let (k3, v3) = (setup.dir.path("k3.npy"), setup.dir.path("v3.npy"));
    npy::write_f32(&k3, &[1, 9, 3, 16], &[0.5; 432]).unwrap();
    npy::write_f32(&v3, &[1, 9, 3, 16], &[0.5; 432]).unwrap();
    let (code, stderr) = setup.run(&[("--k", k3), ("--v", v3)], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`kv_heads`") && stderr.contains('3'),
        "{stderr}"
    );
}

#[test]
fn window_of_minus_2_exits_2_naming_window() {
    let setup = BadInputSetup::new("bad-window");
    let (code, stderr) = setup.run(&[], &["--window", "-2,3"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`window`") && stderr.contains("-2"),
        "{stderr}"
    );
}

#[test]
fn int32_v_file_exits_2_naming_v_and_the_dtype() {
    let setup = BadInputSetup::new("bad-dtype");
    let ints = setup.dir.path("ints.npy");
    write_ints(&ints, &[1i32; 288]);
    let (code, stderr) = setup.run(&[("--v", ints)], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--v") && stderr.contains("int32"),
        "{stderr}"
    );
}

#[test]
fn cu_seqlens_q_without_cu_seqlens_k_exits_2_naming_it() {
    let setup = BadInputSetup::new("bad-cu-pair");
    let cu = setup.dir.path("cu.npy");
    write_ints(&cu, &[0i32, 9]);
    let (code, stderr) = setup.run(&[], &["--cu-seqlens-q", cu.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--cu-seqlens-k"), "{stderr}");
}

#[test]
fn unknown_kernel_exits_2_listing_the_kernels() {
    let setup = BadInputSetup::new("bad-kernel");
    let (code, stderr) = setup.run(&[], &["--kernel", "warp9"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("kernel") && stderr.contains("naive"),
        "{stderr}"
    );
}

/// A reader that stops early (`cuattn check | head -1`) ends the command quietly: no panic from
/// a print to the closed pipe.
#[test]
#[cfg(unix)]
fn a_closed_stdout_ends_the_command_without_a_panic() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_cuattn"))
        .args(["check", "--device", "emu"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("PASS"), "{first}");
    // The read end is closed here; the command's next prints hit the closed pipe.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("status {:?}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
}

// ---- `--paged`: the same problem through the paged KV cache and the paged kernel ----

/// Paged tolerance against the dense run on the same files (atol = rtol): the same math summed
/// in another order (other key tiles, split-KV partials merged), each rounded to the dtype.
fn paged_vs_dense_tol(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::Bf16 => 1e-2,
        Dtype::F16 => 5e-3,
    }
}

/// Runs `case` densely and then once per `(flags, note)` with `--paged` flags on the same
/// files, checking each paged run's out and LSE against the dense run's and the reference's,
/// and its run line for `note` (e.g. the split it ran).
fn paged_runs_match_dense(test: &str, case: &Case, dtype: Dtype, seed: u64, runs: &[(&str, &str)]) {
    let dir = TempDir::new(test);
    let inputs = write_case_inputs(&dir, case, dtype, seed);
    let want = case_reference(case, dtype, (&inputs.0, &inputs.1, &inputs.2));
    let dense = run_case_files(test, &dir, case, dtype, "dense", &[]);
    check_against_reference(test, &dense, &want, dtype);
    let tol = paged_vs_dense_tol(dtype);
    for (i, &(flags, note)) in runs.iter().enumerate() {
        let what = format!("{test} [{flags}]");
        let flags: Vec<&str> = flags.split_whitespace().collect();
        let paged = run_case_files(&what, &dir, case, dtype, &format!("paged{i}"), &flags);
        assert!(
            paged.stderr.contains("ran paged attention on emulator")
                && paged.stderr.contains(dtype.name())
                && paged.stderr.contains(note),
            "{what}: the run line should say paged attention, the dtype and `{note}`: {}",
            paged.stderr
        );
        if let Err(m) = reference::compare(&paged.out, &dense.out, tol, tol) {
            panic!("{what}: out against the dense run: {m}");
        }
        if let Err(m) = reference::compare(&paged.lse, &dense.lse, tol, tol) {
            panic!("{what}: lse against the dense run: {m}");
        }
        check_against_reference(&what, &paged, &want, dtype);
    }
}

/// Decode: one query per sequence over 150 keys (three 64-key splits when asked for 3), a batch
/// of 2, GQA 4/2, causal.
fn paged_decode() -> Case {
    Case {
        batch: 2,
        seqlen_q: 1,
        seqlen_k: 150,
        heads: 4,
        kv_heads: 2,
        head_dim: 40,
        causal: true,
        window: None,
        scale: None,
        softcap: None,
    }
}

#[test]
fn paged_decode_matches_dense_bf16() {
    paged_runs_match_dense(
        "paged-decode-bf16",
        &paged_decode(),
        Dtype::Bf16,
        21,
        &[
            // Default steps 75+50+24, then the query: pages of 1, 16 and 16 in hnd.
            ("--paged 1", "steps 75+50+24 then 1 query"),
            (
                "--paged 16 --page-layout hnd",
                "(hnd, 40 in the pool, shuffled)",
            ),
            ("--paged 16 --split-kv 3", "3 splits of 64 keys"),
            (
                "--paged 1 --page-layout hnd --split-kv 3",
                "3 splits of 64 keys",
            ),
            (
                "--paged 16 --split-kv off --chunks 100,49,1",
                "steps 100+49 then 1 query, split-KV off: unsplit",
            ),
        ],
    );
}

#[test]
fn paged_decode_matches_dense_f16() {
    paged_runs_match_dense(
        "paged-decode-f16",
        &paged_decode(),
        Dtype::F16,
        22,
        &[
            ("--paged 16 --page-layout hnd --split-kv 3", "3 splits"),
            ("--paged 1", "nhd"),
        ],
    );
}

/// Speculative verification: 5 queries per sequence over 150 keys, a window (7, 2) with no
/// causal mask (each query sees 2 keys past its own), softcap and scale. Splits start at the
/// first key the first query sees, so the window's 12 keys fit one split: 3 asked run unsplit.
#[test]
fn paged_verify_with_window_and_softcap_matches_dense() {
    let case = Case {
        seqlen_q: 5,
        causal: false,
        window: Some((7, 2)),
        scale: Some(0.5),
        softcap: Some(3.0),
        ..paged_decode()
    };
    paged_runs_match_dense(
        "paged-verify-window",
        &case,
        Dtype::Bf16,
        23,
        &[
            (
                "--paged 1 --page-layout hnd",
                "steps 73+49+23 then 5 queries",
            ),
            (
                "--paged 16 --chunks 10,20,120",
                "steps 10+20+115 then 5 queries",
            ),
            (
                "--paged 16 --page-layout hnd --split-kv 3",
                "split-KV 3: unsplit",
            ),
            (
                "--paged 16 --chunks 145,5 --split-kv off",
                "steps 145 then 5 queries",
            ),
        ],
    );
}

/// Chunked prefill: 20 queries over 50 keys, causal, and causal with a window (12, 0).
#[test]
fn paged_prefill_matches_dense() {
    let causal = Case {
        seqlen_q: 20,
        seqlen_k: 50,
        ..paged_decode()
    };
    let runs = [
        ("--paged 16", "steps 15+10+5 then 20 queries"),
        ("--paged 1 --page-layout hnd --split-kv 3", "unsplit"),
        (
            "--paged 16 --page-layout hnd --chunks 7,13,30",
            "steps 7+13+10 then 20 queries",
        ),
        (
            "--paged 3 --chunks 50 --split-kv off",
            "steps 30 then 20 queries",
        ),
    ];
    paged_runs_match_dense("paged-prefill-causal", &causal, Dtype::Bf16, 24, &runs);
    let windowed = Case {
        window: Some((12, 0)),
        ..causal
    };
    paged_runs_match_dense(
        "paged-prefill-window",
        &windowed,
        Dtype::Bf16,
        25,
        &runs[..2],
    );
}

/// A varlen batch through `--paged`: each sequence split by the default rule (the run line
/// lists each one's steps), a sequence without queries among them; equal to the dense varlen
/// run and the reference.
#[test]
fn paged_varlen_matches_dense_varlen() {
    let dir = TempDir::new("paged-varlen");
    let (heads, kv_heads, head_dim) = (4, 2, 64);
    // (seqlen_q, seqlen_k): decode over 33, 5 over 12, prefill 20 over 150 (three 64-key splits
    // when asked for 3), none over 7, 1 over 1.
    let cu_q = [0i32, 1, 6, 26, 26, 27];
    let cu_k = [0i32, 33, 45, 195, 202, 203];
    let (total_q, total_k) = (27, 203);
    let mut rng = StdRng::seed_from_u64(26);
    let q = random(&mut rng, total_q * heads * head_dim, 1.5);
    let k = random(&mut rng, total_k * kv_heads * head_dim, 1.5);
    let v = random(&mut rng, total_k * kv_heads * head_dim, 1.0);
    let (qp, kp, vp) = (dir.path("q.npy"), dir.path("k.npy"), dir.path("v.npy"));
    let (cqp, ckp) = (dir.path("cu_q.npy"), dir.path("cu_k.npy"));
    npy::write_f32(&qp, &[total_q, heads, head_dim], &q).unwrap();
    npy::write_f32(&kp, &[total_k, kv_heads, head_dim], &k).unwrap();
    npy::write_f32(&vp, &[total_k, kv_heads, head_dim], &v).unwrap();
    write_ints(&cqp, &cu_q);
    write_ints(&ckp, &cu_k);
    let run = |name: &str, extra: &[&str]| {
        let (op, lp) = (
            dir.path(&format!("{name}-out.npy")),
            dir.path(&format!("{name}-lse.npy")),
        );
        let mut args = strings(&["run", "attention", "--device", "emu", "--causal"]);
        for (flag, path) in [
            ("--q", &qp),
            ("--k", &kp),
            ("--v", &vp),
            ("--out", &op),
            ("--lse", &lp),
            ("--cu-seqlens-q", &cqp),
            ("--cu-seqlens-k", &ckp),
        ] {
            args.extend(path_arg(flag, path));
        }
        args.extend(strings(extra));
        println!("paged varlen: cuattn {}", args.join(" "));
        let output = cuattn(&args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{:?}\n{stderr}", output.status);
        print!("{stderr}");
        let out = npy::read_f32(&op).unwrap();
        let lse = npy::read_f32(&lp).unwrap();
        assert_eq!(out.shape, [total_q, heads, head_dim]);
        assert_eq!(lse.shape, [heads, total_q]);
        let widen = |x: &[f32]| x.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        (widen(&out.data), widen(&lse.data), stderr)
    };
    let dense = run("dense", &[]);
    let mut p = AttentionProblem::new(5, 0, 0, heads, kv_heads, head_dim);
    p.window_right = 0;
    p.varlen = Some(Varlen {
        cu_seqlens_q: cu_q.to_vec(),
        cu_seqlens_k: cu_k.to_vec(),
    });
    let round = |x: &[f32]| {
        x.iter()
            .map(|&x| Dtype::Bf16.round(x))
            .collect::<Vec<f64>>()
    };
    let want = reference::attention(&p, &round(&q), &round(&k), &round(&v));
    let tol = Dtype::Bf16.out_tol();
    for (flags, note) in [
        (
            "--paged 16",
            "steps per sequence [16+11+5 then 1 query; 4+3 then 5 queries; 65+44+21 then 20 \
             queries; 4+3 then 0 queries; none then 1 query]",
        ),
        (
            "--paged 1 --page-layout hnd --split-kv 3",
            "3 splits of 64 keys",
        ),
    ] {
        let flags: Vec<&str> = flags.split_whitespace().collect();
        let paged = run("paged", &flags);
        assert!(paged.2.contains(note), "`{note}` in {}", paged.2);
        let ptol = paged_vs_dense_tol(Dtype::Bf16);
        reference::compare(&paged.0, &dense.0, ptol, ptol)
            .unwrap_or_else(|m| panic!("{flags:?}: out against dense: {m}"));
        reference::compare(&paged.1, &dense.1, ptol, ptol)
            .unwrap_or_else(|m| panic!("{flags:?}: lse against dense: {m}"));
        reference::compare(&paged.0, &want.out, tol, tol)
            .unwrap_or_else(|m| panic!("{flags:?}: out: {m}"));
        reference::compare(&paged.1, &want.lse, LSE_TOL, LSE_TOL)
            .unwrap_or_else(|m| panic!("{flags:?}: lse: {m}"));
    }
}

#[test]
fn paged_with_as_many_queries_as_keys_appends_only_the_query_step() {
    let setup = BadInputSetup::new("paged-square");
    let mut args = strings(&["run", "attention", "--device", "emu", "--paged", "4"]);
    for name in ["q", "k", "v", "out"] {
        args.extend(path_arg(
            &format!("--{name}"),
            &setup.dir.path(&format!("{name}.npy")),
        ));
    }
    let output = cuattn(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("steps none then 9 queries"), "{stderr}");
}

#[test]
fn paged_flags_without_paged_exit_2_naming_the_flag() {
    let setup = BadInputSetup::new("bad-paged-flags");
    for (extra, arg) in [
        (&["--chunks", "4,5"][..], "`chunks`"),
        (&["--page-layout", "hnd"][..], "`page_layout`"),
        (&["--split-kv", "3"][..], "`split_kv`"),
    ] {
        let (code, stderr) = setup.run(&[], extra);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(arg) && stderr.contains("--paged"),
            "{extra:?}: {stderr}"
        );
    }
}

#[test]
fn bad_paged_arguments_exit_2_naming_the_flag() {
    let setup = BadInputSetup::new("bad-paged");
    // The setup's q and k have 9 rows each: seqlen_q = seqlen_k = 9.
    let cases: [(&[&str], &[&str]); 6] = [
        (&["--paged", "0"], &["`paged`", "1..=4096"]),
        (&["--paged", "4097"], &["`paged`", "4097"]),
        (
            &["--paged", "4", "--chunks", "3,3"],
            &["`chunks`", "sums to 6", "seqlen_k is 9"],
        ),
        (
            &["--paged", "4", "--chunks", "5,4"],
            &["`chunks`", "4", "smaller than seqlen_q 9"],
        ),
        (
            &["--paged", "4", "--chunks", "9,0"],
            &["`chunks`", "0 tokens"],
        ),
        (
            &["--paged", "4", "--kernel", "flash"],
            &["`kernel`", "--paged"],
        ),
    ];
    for (extra, wants) in cases {
        let (code, stderr) = setup.run(&[], extra);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        for want in wants {
            assert!(stderr.contains(want), "{extra:?}: `{want}` in {stderr}");
        }
    }
    let (code, stderr) = setup.run(&[], &["--paged", "4", "--split-kv", "many"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--split-kv") && stderr.contains("auto, off or a number"),
        "{stderr}"
    );
}

#[test]
fn paged_with_more_queries_than_keys_exits_2_naming_q() {
    let setup = BadInputSetup::new("bad-paged-long-q");
    let q12 = setup.dir.path("q12.npy");
    npy::write_f32(&q12, &[1, 12, 4, 16], &[0.5; 768]).unwrap();
    let (code, stderr) = setup.run(&[("--q", q12)], &["--paged", "4"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`q`") && stderr.contains("seqlen_q 12 > seqlen_k 9"),
        "{stderr}"
    );
}

#[test]
fn paged_varlen_with_chunks_or_more_queries_than_keys_exits_2() {
    let setup = BadInputSetup::new("bad-paged-varlen");
    let (q3, k3, v3) = (
        setup.dir.path("q3.npy"),
        setup.dir.path("k3.npy"),
        setup.dir.path("v3.npy"),
    );
    npy::write_f32(&q3, &[9, 4, 16], &[0.5; 576]).unwrap();
    npy::write_f32(&k3, &[9, 2, 16], &[0.5; 288]).unwrap();
    npy::write_f32(&v3, &[9, 2, 16], &[0.5; 288]).unwrap();
    let (cq, ck) = (setup.dir.path("cq.npy"), setup.dir.path("ck.npy"));
    // Sequence 1 has 5 queries over 3 keys.
    write_ints(&cq, &[0i32, 4, 9]);
    write_ints(&ck, &[0i32, 6, 9]);
    let files = [("--q", q3), ("--k", k3), ("--v", v3)];
    let varlen = [
        "--cu-seqlens-q",
        cq.to_str().unwrap(),
        "--cu-seqlens-k",
        ck.to_str().unwrap(),
        "--paged",
        "4",
    ];
    let (code, stderr) = setup.run(&files, &varlen);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`cu_seqlens_q`") && stderr.contains("sequence 1 has 5 queries and 3 keys"),
        "{stderr}"
    );
    let with_chunks: Vec<&str> = varlen.iter().copied().chain(["--chunks", "9"]).collect();
    let (code, stderr) = setup.run(&files, &with_chunks);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`chunks`") && stderr.contains("default rule"),
        "{stderr}"
    );
}

#[test]
fn run_attention_help_documents_paged() {
    let output = cuattn(&strings(&["run", "attention", "--help"]));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    for want in [
        "--paged <P>",
        "--page-layout",
        "--chunks",
        "ceil(c/2)",
        "--split-kv",
    ] {
        assert!(help.contains(want), "`{want}` in {help}");
    }
}

// ---- `--pattern` / `--block-mask`: the same problem through block-sparse attention ----

/// Writes `data` (row-major over `shape`) as a `.npy` file of `T` (bool or uint8 masks).
fn write_array<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(&shape)
        .writer(file)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

/// The f64 reference of `p` on the inputs as bf16 sees them, under `matrix` in blocks of
/// `(bq, bk)` (block indices within each sequence, as the kernel's).
fn block_reference(
    p: &AttentionProblem,
    (q, k, v): (&[f32], &[f32], &[f32]),
    matrix: &BlockMatrix,
    (bq, bk): (usize, usize),
) -> reference::AttentionReference {
    let round = |x: &[f32]| {
        x.iter()
            .map(|&x| Dtype::Bf16.round(x))
            .collect::<Vec<f64>>()
    };
    reference::attention_masked(p, &round(q), &round(k), &round(v), |b, h, i, j| {
        matrix.get(b, h, i / bq, j / bk)
    })
}

fn pattern_matrix(text: &str, heads: usize, (nq, nk): (usize, usize)) -> BlockMatrix {
    text.parse::<Pattern>()
        .unwrap()
        .blocks(heads, nq, nk)
        .unwrap()
}

/// GQA 4/2, a batch of 2, 100 queries over 130 keys: blocks of 32x16 make a 4 x 9 grid whose
/// last key block holds 2 keys (partial even without a causal mask).
fn sparse_case() -> Case {
    Case {
        batch: 2,
        seqlen_q: 100,
        seqlen_k: 130,
        heads: 4,
        kv_heads: 2,
        head_dim: 40,
        causal: false,
        window: None,
        scale: None,
        softcap: None,
    }
}

const SPARSE_BLOCK: (usize, usize) = (32, 16);
const SPARSE_GRID: (usize, usize) = (4, 9);

/// Runs `case` with block-sparse `flags` on files already in `dir` and checks out and LSE
/// against the reference under `matrix`, and that the run line says what ran.
fn check_sparse_run(
    test: &str,
    dir: &TempDir,
    case: &Case,
    (name, flags): (&str, &str),
    inputs: (&[f32], &[f32], &[f32]),
    matrix: &BlockMatrix,
) -> RunResult {
    let what = format!("{test} [{flags}]");
    let flags: Vec<&str> = flags.split_whitespace().collect();
    let got = run_case_files(&what, dir, case, Dtype::Bf16, name, &flags);
    for want in [
        "ran block-sparse attention on emulator",
        "blocks 32x16",
        "density",
        "full and",
        "partial blocks",
        "device bytes",
    ] {
        assert!(
            got.stderr.contains(want),
            "{what}: `{want}` in {}",
            got.stderr
        );
    }
    let want = block_reference(&case.problem(), inputs, matrix, SPARSE_BLOCK);
    check_against_reference(&what, &got, &want, Dtype::Bf16);
    got
}

/// Patterns (shared over heads, and BigBird per head) alone and composed with --causal and a
/// window, each equal to the reference under the pattern's blocks; the run line of the unmasked
/// Longformer run gives its exact block counts.
#[test]
fn pattern_runs_match_the_block_masked_reference() {
    let test = "sparse-pattern";
    let dir = TempDir::new(test);
    let case = sparse_case();
    let (q, k, v) = write_case_inputs(&dir, &case, Dtype::Bf16, 31);
    let inputs = (&q[..], &k[..], &v[..]);

    let longformer = pattern_matrix("longformer:w=1,global=1", 1, SPARSE_GRID);
    let got = check_sparse_run(
        test,
        &dir,
        &case,
        (
            "longformer",
            "--pattern longformer:w=1,global=1 --block-size 32,16",
        ),
        inputs,
        &longformer,
    );
    // Without an element rule every visible block is full but those of the 2-key last column.
    let (nq, nk) = SPARSE_GRID;
    let visible = |j: usize| (0..nq).filter(|&i| longformer.get(0, 0, i, j)).count();
    let partial = visible(nk - 1);
    let full: usize = (0..nk - 1).map(visible).sum();
    let line = format!(
        "blocks 32x16, pattern longformer:w=1,global=1 [1, 1, 4, 9], density {:.3}: {full} full \
         and {partial} partial blocks, {} device bytes",
        (full + partial) as f64 / 36.0,
        4 * (2 * nq + 2 * nq * nk)
    );
    assert!(got.stderr.contains(&line), "`{line}` in {}", got.stderr);

    let causal = Case {
        causal: true,
        ..sparse_case()
    };
    let bigbird = "bigbird:w=1,global=1,random=2,seed=3";
    let per_head = pattern_matrix(&format!("{bigbird},per_head=1"), 4, SPARSE_GRID);
    assert!(
        (0..nq).any(|i| (0..nk).any(|j| per_head.get(0, 0, i, j) != per_head.get(0, 1, i, j))),
        "heads 0 and 1 draw different random blocks"
    );
    let got = check_sparse_run(
        test,
        &dir,
        &causal,
        (
            "bigbird",
            &format!("--pattern {bigbird} --per-head-random --block-size 32,16"),
        ),
        inputs,
        &per_head,
    );
    assert!(
        got.stderr
            .contains(&format!("pattern {bigbird},per_head=1 [1, 4, 4, 9]")),
        "{}",
        got.stderr
    );
    let windowed = Case {
        window: Some((40, 0)),
        ..causal
    };
    check_sparse_run(
        test,
        &dir,
        &windowed,
        ("dilated", "--pattern dilated:w=2,d=2 --block-size 32,16"),
        inputs,
        &pattern_matrix("dilated:w=2,d=2", 1, SPARSE_GRID),
    );
}

/// `--block-mask` files: uint8 with one matrix per sequence under --causal, and bool with one
/// per head under a window, each equal to the reference under the file's blocks;
/// `--save-block-mask` writes the file's matrix back.
#[test]
fn block_mask_files_match_the_block_masked_reference() {
    let test = "sparse-file";
    let dir = TempDir::new(test);
    let (q, k, v) = write_case_inputs(&dir, &sparse_case(), Dtype::Bf16, 32);
    let inputs = (&q[..], &k[..], &v[..]);
    let (nq, nk) = SPARSE_GRID;
    let mut rng = StdRng::seed_from_u64(33);

    let per_sequence: Vec<bool> = (0..2 * nq * nk).map(|_| rng.random_bool(0.4)).collect();
    let bytes: Vec<u8> = per_sequence.iter().map(|&b| u8::from(b)).collect();
    let (uint8, saved) = (dir.path("per-sequence.npy"), dir.path("saved.npy"));
    write_array(&uint8, &[2, 1, nq, nk], &bytes);
    let causal = Case {
        causal: true,
        ..sparse_case()
    };
    let got = check_sparse_run(
        test,
        &dir,
        &causal,
        (
            "uint8",
            &format!(
                "--block-mask {} --block-size 32,16 --save-block-mask {}",
                uint8.display(),
                saved.display()
            ),
        ),
        inputs,
        &BlockMatrix::new([2, 1, nq, nk], per_sequence.clone()).unwrap(),
    );
    assert!(
        got.stderr
            .contains(&format!("block mask {} [2, 1, 4, 9]", uint8.display())),
        "{}",
        got.stderr
    );
    assert_eq!(
        npy::read_mask(&saved).unwrap(),
        (vec![2, 1, nq, nk], per_sequence)
    );

    let per_head: Vec<bool> = (0..4 * nq * nk).map(|_| rng.random_bool(0.5)).collect();
    let bools = dir.path("per-head.npy");
    write_array(&bools, &[1, 4, nq, nk], &per_head);
    let windowed = Case {
        window: Some((20, 5)),
        ..sparse_case()
    };
    check_sparse_run(
        test,
        &dir,
        &windowed,
        (
            "bool",
            &format!("--block-mask {} --block-size 32,16", bools.display()),
        ),
        inputs,
        &BlockMatrix::new([1, 4, nq, nk], per_head).unwrap(),
    );
}

/// `--save-block-mask` writes the pattern's matrix as the pattern made it (before the causal
/// rule cuts it); fed back through `--block-mask` it gives the same output bit for bit.
#[test]
fn saved_block_mask_reads_back_and_reruns_identically() {
    let test = "sparse-save";
    let dir = TempDir::new(test);
    let case = Case {
        causal: true,
        ..sparse_case()
    };
    let (q, k, v) = write_case_inputs(&dir, &case, Dtype::Bf16, 34);
    let inputs = (&q[..], &k[..], &v[..]);
    let matrix = pattern_matrix("strided:w=1,s=3", 4, SPARSE_GRID);
    let saved = dir.path("strided.npy");
    let first = check_sparse_run(
        test,
        &dir,
        &case,
        (
            "pattern",
            &format!(
                "--pattern strided:w=1,s=3 --block-size 32,16 --save-block-mask {}",
                saved.display()
            ),
        ),
        inputs,
        &matrix,
    );
    assert!(first.stderr.contains(&saved.display().to_string()));
    let (nq, nk) = SPARSE_GRID;
    assert_eq!(
        npy::read_mask(&saved).unwrap(),
        (vec![1, 1, nq, nk], matrix.blocks().to_vec())
    );
    let again = check_sparse_run(
        test,
        &dir,
        &case,
        (
            "file",
            &format!("--block-mask {} --block-size 32,16", saved.display()),
        ),
        inputs,
        &matrix,
    );
    assert_eq!(again.out, first.out, "out from the saved mask");
    assert_eq!(again.lse, first.lse, "lse from the saved mask");
}

/// A varlen batch: a pattern under --causal (each sequence's diagonal its own, the matrix over
/// the longest sequence's grid), the saved matrix fed back as a shared file (repeated per
/// sequence), and a file with a matrix per sequence and head without an element rule.
#[test]
fn varlen_patterns_and_mask_files_match_the_reference() {
    let dir = TempDir::new("sparse-varlen");
    let (heads, kv_heads, head_dim) = (4, 2, 40);
    // (seqlen_q, seqlen_k): 70 over 90, 100 over 64 (the causal rule hides its first 36 rows),
    // 17 over 130; the longest make the 4 x 9 grid of 32x16 blocks.
    let cu_q = [0i32, 70, 170, 187];
    let cu_k = [0i32, 90, 154, 284];
    let (total_q, total_k) = (187, 284);
    let mut rng = StdRng::seed_from_u64(35);
    let q = random(&mut rng, total_q * heads * head_dim, 1.5);
    let k = random(&mut rng, total_k * kv_heads * head_dim, 1.5);
    let v = random(&mut rng, total_k * kv_heads * head_dim, 1.0);
    let (qp, kp, vp) = (dir.path("q.npy"), dir.path("k.npy"), dir.path("v.npy"));
    let (cqp, ckp) = (dir.path("cu_q.npy"), dir.path("cu_k.npy"));
    npy::write_f32(&qp, &[total_q, heads, head_dim], &q).unwrap();
    npy::write_f32(&kp, &[total_k, kv_heads, head_dim], &k).unwrap();
    npy::write_f32(&vp, &[total_k, kv_heads, head_dim], &v).unwrap();
    write_ints(&cqp, &cu_q);
    write_ints(&ckp, &cu_k);
    let run = |name: &str, extra: &str| {
        let (op, lp) = (
            dir.path(&format!("{name}-out.npy")),
            dir.path(&format!("{name}-lse.npy")),
        );
        let mut args = strings(&["run", "attention", "--device", "emu"]);
        for (flag, path) in [
            ("--q", &qp),
            ("--k", &kp),
            ("--v", &vp),
            ("--out", &op),
            ("--lse", &lp),
            ("--cu-seqlens-q", &cqp),
            ("--cu-seqlens-k", &ckp),
        ] {
            args.extend(path_arg(flag, path));
        }
        args.extend(extra.split_whitespace().map(String::from));
        println!("sparse varlen: cuattn {}", args.join(" "));
        let output = cuattn(&args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{:?}\n{stderr}", output.status);
        print!("{stderr}");
        assert!(
            stderr.contains("ran block-sparse attention") && stderr.contains("varlen batch 3"),
            "{stderr}"
        );
        let out = npy::read_f32(&op).unwrap();
        let lse = npy::read_f32(&lp).unwrap();
        assert_eq!(out.shape, [total_q, heads, head_dim]);
        assert_eq!(lse.shape, [heads, total_q]);
        let widen = |x: &[f32]| x.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        (widen(&out.data), widen(&lse.data))
    };
    let problem = |causal: bool| {
        let mut p = AttentionProblem::new(3, 0, 0, heads, kv_heads, head_dim);
        if causal {
            p.window_right = 0;
        }
        p.varlen = Some(Varlen {
            cu_seqlens_q: cu_q.to_vec(),
            cu_seqlens_k: cu_k.to_vec(),
        });
        p
    };
    let check = |what: &str, got: &(Vec<f64>, Vec<f64>), want: &reference::AttentionReference| {
        let tol = Dtype::Bf16.out_tol();
        reference::compare(&got.0, &want.out, tol, tol)
            .unwrap_or_else(|m| panic!("{what}: out: {m}"));
        reference::compare(&got.1, &want.lse, LSE_TOL, LSE_TOL)
            .unwrap_or_else(|m| panic!("{what}: lse: {m}"));
    };
    let inputs = (&q[..], &k[..], &v[..]);
    let (nq, nk) = SPARSE_GRID;

    let saved = dir.path("local.npy");
    // Each sequence gets the pattern on its own grid, bottom-right aligned to its own lengths.
    let local = "local:w=2"
        .parse::<Pattern>()
        .unwrap()
        .blocks_for(heads, SPARSE_BLOCK, &[(70, 90), (100, 64), (17, 130)])
        .unwrap();
    assert_eq!(local.dims(), [3, 1, nq, nk]);
    assert!(!local.get(2, 0, 0, 0) && local.get(2, 0, 0, 8) && local.get(0, 0, 0, 3));
    let from_pattern = run(
        "pattern",
        &format!(
            "--causal --pattern local:w=2 --block-size 32,16 --save-block-mask {}",
            saved.display()
        ),
    );
    let want = block_reference(&problem(true), inputs, &local, SPARSE_BLOCK);
    check("pattern", &from_pattern, &want);
    assert_eq!(
        npy::read_mask(&saved).unwrap(),
        (vec![3, 1, nq, nk], local.blocks().to_vec())
    );
    let from_file = run(
        "shared-file",
        &format!(
            "--causal --block-mask {} --block-size 32,16",
            saved.display()
        ),
    );
    assert_eq!(from_file, from_pattern, "the saved matrix fed back");

    let blocks: Vec<bool> = (0..3 * heads * nq * nk)
        .map(|_| rng.random_bool(0.4))
        .collect();
    let per_sequence = dir.path("per-sequence.npy");
    write_array(&per_sequence, &[3, heads, nq, nk], &blocks);
    let got = run(
        "per-sequence",
        &format!("--block-mask {} --block-size 32,16", per_sequence.display()),
    );
    let matrix = BlockMatrix::new([3, heads, nq, nk], blocks).unwrap();
    check(
        "per-sequence file",
        &got,
        &block_reference(&problem(false), inputs, &matrix, SPARSE_BLOCK),
    );
}

#[test]
fn bad_block_sparse_arguments_exit_2_naming_the_flag() {
    let setup = BadInputSetup::new("bad-sparse");
    // The setup's q and k have 9 rows and 4 and 2 heads: blocks of 16 make a 1 x 1 grid.
    let dir = &setup.dir;
    let (wrong_grid, two, ints, good) = (
        dir.path("grid.npy"),
        dir.path("two.npy"),
        dir.path("ints.npy"),
        dir.path("good.npy"),
    );
    write_array(&wrong_grid, &[1, 1, 2, 1], &[1u8, 1]);
    write_array(&two, &[1, 4, 1, 1], &[1u8, 0, 2, 1]);
    write_array(&ints, &[1, 1, 1, 1], &[1i32]);
    write_array(&good, &[1, 1, 1, 1], &[true]);
    let (wrong_grid, two, ints, good) = (
        wrong_grid.display().to_string(),
        two.display().to_string(),
        ints.display().to_string(),
        good.display().to_string(),
    );
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--pattern", "local:w=1"],
            vec!["`block_size`", "--pattern needs --block-size BQ,BK"],
        ),
        (
            vec!["--block-mask", &good],
            vec!["`block_size`", "--block-mask needs --block-size"],
        ),
        (
            vec![
                "--block-mask",
                &good,
                "--pattern",
                "local:w=1",
                "--block-size",
                "16,16",
            ],
            vec!["`pattern`", "--block-mask and --pattern", "leave one out"],
        ),
        (
            vec!["--pattern", "ring:w=1", "--block-size", "16,16"],
            vec!["--pattern", "ring:w=1", "unknown pattern"],
        ),
        (
            vec!["--pattern", "local:w=1,s=2", "--block-size", "16,16"],
            vec!["--pattern", "local takes w, not \"s\""],
        ),
        (
            vec!["--block-mask", &wrong_grid, "--block-size", "16,16"],
            vec![
                "`block_mask`",
                "grid.npy",
                "shape [1, 1, 2, 1], expected [1, 1 or 4, 1, 1]",
            ],
        ),
        (
            vec!["--block-mask", &two, "--block-size", "16,16"],
            vec!["two.npy", "element 2 = 2", "0 and 1", "--block-mask"],
        ),
        (
            vec!["--block-mask", &ints, "--block-size", "16,16"],
            vec![
                "ints.npy",
                "int32",
                "expected bool or uint8",
                "--block-mask",
            ],
        ),
        (
            vec![
                "--pattern",
                "local:w=1",
                "--block-size",
                "16,16",
                "--per-head-random",
            ],
            vec!["`per_head_random`", "local", "bigbird"],
        ),
        (
            vec![
                "--block-mask",
                &good,
                "--block-size",
                "16,16",
                "--per-head-random",
            ],
            vec!["`per_head_random`", "--block-mask"],
        ),
        (
            vec!["--block-size", "16,16"],
            vec!["`block_size`", "add --block-mask M.npy or --pattern P"],
        ),
        (
            vec!["--save-block-mask", &good],
            vec!["`save_block_mask`", "block-sparse run only"],
        ),
        (
            vec!["--per-head-random"],
            vec!["`per_head_random`", "block-sparse run only"],
        ),
        (
            vec![
                "--pattern",
                "local:w=1",
                "--block-size",
                "16,16",
                "--kernel",
                "flash",
            ],
            vec!["`kernel`", "--pattern runs the block-sparse kernel"],
        ),
        (
            vec![
                "--block-mask",
                &good,
                "--block-size",
                "16,16",
                "--paged",
                "4",
            ],
            vec!["`paged`", "--block-mask runs the block-sparse kernel"],
        ),
        (
            vec!["--pattern", "local:w=1", "--block-size", "24,16"],
            vec!["`block_size`", "multiples of 16"],
        ),
        (
            vec!["--pattern", "local:w=1", "--block-size", "16"],
            vec!["--block-size", "expected BQ,BK"],
        ),
    ];
    for (extra, wants) in &cases {
        let (code, stderr) = setup.run(&[], extra);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        for want in wants {
            assert!(stderr.contains(want), "{extra:?}: `{want}` in {stderr}");
        }
    }
    // The baseline: the good mask runs on the same files.
    let mut args = strings(&["run", "attention", "--device", "emu"]);
    for name in ["q", "k", "v"] {
        args.extend(path_arg(
            &format!("--{name}"),
            &dir.path(&format!("{name}.npy")),
        ));
    }
    args.extend(path_arg("--out", &dir.path("ok.npy")));
    args.extend(strings(&["--block-mask", &good, "--block-size", "16,16"]));
    let output = cuattn(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("density 1.000: 0 full and 1 partial blocks"),
        "{stderr}"
    );
}

#[test]
fn run_attention_help_documents_block_sparse() {
    let output = cuattn(&strings(&["run", "attention", "--help"]));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    for want in [
        "--block-mask <M.npy>",
        "--pattern <PATTERN>",
        "bigbird:w=W,global=G,random=R,seed=X",
        "--block-size <BQ,BK>",
        "--per-head-random",
        "--save-block-mask <M.npy>",
    ] {
        assert!(help.contains(want), "`{want}` in {help}");
    }
}

/// A Linformer problem's files: q, k, v (k and v drawn within 1/g, g = sqrt(seqlen_k / k_proj),
/// so that the projected keys and values have the magnitude the usual tolerances assume), E
/// shared by the KV heads and F one per KV head, both seeded N(0, 1/k_proj) draws.
struct LowrankFiles {
    dir: TempDir,
    shape: (usize, usize, usize, usize, usize, usize),
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    e: Vec<f32>,
    f: Vec<f32>,
}

/// batch 2, seqlen_q 17, seqlen_k 45, heads 4, kv_heads 2, head_dim 64; k_proj 13.
const LOWRANK_SHAPE: (usize, usize, usize, usize, usize, usize) = (2, 17, 45, 4, 2, 64);
const LOWRANK_K_PROJ: usize = 13;

impl LowrankFiles {
    fn new(test: &str) -> LowrankFiles {
        let dir = TempDir::new(test);
        let (b, sq, sk, heads, kv_heads, d) = LOWRANK_SHAPE;
        let mut rng = StdRng::seed_from_u64(31);
        let kv_range = (LOWRANK_K_PROJ as f32 / sk as f32).sqrt();
        let q = random(&mut rng, b * sq * heads * d, 1.0);
        let k = random(&mut rng, b * sk * kv_heads * d, kv_range);
        let v = random(&mut rng, b * sk * kv_heads * d, kv_range);
        let emu = cuattn::Device::emulator();
        let draw = |shape: &[usize], seed| {
            cuattn::approx::Projection::random(&emu, shape, seed)
                .unwrap()
                .values()
                .to_vec()
        };
        let e = draw(&[LOWRANK_K_PROJ, sk], 1);
        let f = draw(&[kv_heads, LOWRANK_K_PROJ, sk], 2);
        npy::write_f32(&dir.path("q.npy"), &[b, sq, heads, d], &q).unwrap();
        npy::write_f32(&dir.path("k.npy"), &[b, sk, kv_heads, d], &k).unwrap();
        npy::write_f32(&dir.path("v.npy"), &[b, sk, kv_heads, d], &v).unwrap();
        npy::write_f32(&dir.path("e.npy"), &[LOWRANK_K_PROJ, sk], &e).unwrap();
        npy::write_f32(&dir.path("f.npy"), &[kv_heads, LOWRANK_K_PROJ, sk], &f).unwrap();
        LowrankFiles {
            dir,
            shape: LOWRANK_SHAPE,
            q,
            k,
            v,
            e,
            f,
        }
    }

    /// `cuattn run lowrank` on the emulator with the files (E replaced by `e`, if given) plus
    /// `extra`: exit code and stderr.
    fn run(&self, e: Option<&Path>, extra: &[&str]) -> (i32, String) {
        let mut args = strings(&["run", "lowrank", "--device", "emu"]);
        for name in ["q", "k", "v", "e", "f", "out"] {
            let path = match (name, e) {
                ("e", Some(e)) => e.to_path_buf(),
                _ => self.dir.path(&format!("{name}.npy")),
            };
            args.extend(path_arg(&format!("--{name}"), &path));
        }
        args.extend(strings(extra));
        let output = cuattn(&args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        println!("cuattn {} -> {:?}: {stderr}", args.join(" "), output.status);
        (output.status.code().expect("exited, not killed"), stderr)
    }
}

#[test]
fn run_lowrank_matches_the_reference() {
    let files = LowrankFiles::new("lowrank-run");
    let (b, sq, sk, heads, kv_heads, d) = files.shape;
    let lse_path = files.dir.path("lse.npy").display().to_string();
    for (dtype, extra) in [
        (Dtype::Bf16, vec!["--lse", &lse_path]),
        (Dtype::F16, vec!["--lse", &lse_path, "--scale", "0.2"]),
    ] {
        let mut args = vec!["--dtype", dtype.name()];
        args.extend(&extra);
        let (code, stderr) = files.run(None, &args);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stderr.contains("low-rank attention") && stderr.contains(dtype.name()),
            "the run line names the run and dtype: {stderr}"
        );
        let out = npy::read_f32(&files.dir.path("out.npy")).unwrap();
        let lse = npy::read_f32(&files.dir.path("lse.npy")).unwrap();
        assert_eq!(out.shape, [b, sq, heads, d]);
        assert_eq!(lse.shape, [b, heads, sq]);

        let round = |x: &[f32]| x.iter().map(|&x| dtype.round(x)).collect::<Vec<f64>>();
        let widen = |x: &[f32]| x.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        let mut problem = AttentionProblem::new(b, sq, sk, heads, kv_heads, d);
        if dtype == Dtype::F16 {
            problem.scale = 0.2f32.into();
        }
        let (e, f) = (widen(&files.e), widen(&files.f));
        let projection = |values, per_kv_head| reference::LowrankProjection {
            values,
            k_proj: LOWRANK_K_PROJ,
            per_kv_head,
        };
        let want = reference::lowrank_attention(
            &problem,
            &projection(&e, false),
            &projection(&f, true),
            &round(&files.q),
            &round(&files.k),
            &round(&files.v),
        );
        let tol = dtype.out_tol();
        if let Err(m) = reference::compare(&widen(&out.data), &want.out, tol, tol) {
            panic!("lowrank {}: out: {m}", dtype.name());
        }
        if let Err(m) = reference::compare(&widen(&lse.data), &want.lse, LSE_TOL, LSE_TOL) {
            panic!("lowrank {}: lse: {m}", dtype.name());
        }
    }
}

#[test]
fn run_lowrank_refuses_causal_and_projections_of_the_wrong_shape() {
    let files = LowrankFiles::new("lowrank-bad");
    let (_, _, sk, _, _, _) = files.shape;
    let (code, stderr) = files.run(None, &["--causal"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`causal`") && stderr.contains("mixes future keys into every row"),
        "{stderr}"
    );
    let (code, stderr) = files.run(None, &["--window", "8,0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`window`"), "{stderr}");

    let short = files.dir.path("short.npy");
    npy::write_f32(
        &short,
        &[LOWRANK_K_PROJ, sk - 1],
        &files.e[..LOWRANK_K_PROJ * (sk - 1)],
    )
    .unwrap();
    let (code, stderr) = files.run(Some(&short), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`e`") && stderr.contains(&format!("{sk} keys")),
        "{stderr}"
    );
    let flat = files.dir.path("flat.npy");
    npy::write_f32(&flat, &[LOWRANK_K_PROJ * sk], &files.e).unwrap();
    let (code, stderr) = files.run(Some(&flat), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`e`") && stderr.contains("[k_proj, seqlen_k]"),
        "{stderr}"
    );
    let other_k = files.dir.path("other_k.npy");
    npy::write_f32(
        &other_k,
        &[LOWRANK_K_PROJ - 1, sk],
        &files.e[..(LOWRANK_K_PROJ - 1) * sk],
    )
    .unwrap();
    let (code, stderr) = files.run(Some(&other_k), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`f`") && stderr.contains("same k"),
        "{stderr}"
    );
    assert!(
        !files.dir.path("out.npy").exists(),
        "a refused run wrote --out"
    );
}

// ---------------------------------------------------------------------------------------------
// `cuattn run linear`.
// ---------------------------------------------------------------------------------------------

/// A linear attention problem: dense [batch, seqlen, heads, dim], value dim apart from head dim.
struct LinearCase {
    batch: usize,
    seqlen_q: usize,
    seqlen_k: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    value_dim: usize,
}

/// GQA group 2, 23 queries over 41 keys (the causal diagonal starts 18 keys in), head dim 32 and
/// value dim 24: lengths apart from the kernel's 64-key chunks.
const LINEAR_CASE: LinearCase = LinearCase {
    batch: 2,
    seqlen_q: 23,
    seqlen_k: 41,
    heads: 4,
    kv_heads: 2,
    head_dim: 32,
    value_dim: 24,
};

/// Writes random q, k, v of `case` into `dir` (q.npy, k.npy, v.npy) and returns them.
fn write_linear_inputs(dir: &TempDir, case: &LinearCase, seed: u64) -> [Vec<f32>; 3] {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = case;
    let q_shape = [c.batch, c.seqlen_q, c.heads, c.head_dim];
    let k_shape = [c.batch, c.seqlen_k, c.kv_heads, c.head_dim];
    let v_shape = [c.batch, c.seqlen_k, c.kv_heads, c.value_dim];
    let mut arrays = Vec::new();
    for (name, shape) in [("q", q_shape), ("k", k_shape), ("v", v_shape)] {
        let data = random(&mut rng, shape.iter().product(), 1.0);
        npy::write_f32(&dir.path(&format!("{name}.npy")), &shape, &data).unwrap();
        arrays.push(data);
    }
    arrays.try_into().unwrap()
}

/// `cuattn run linear --device emu` on `dir`'s q, k, v with `extra`, writing `out_name`: the
/// exit code, stderr, and the output (when it succeeded).
fn run_linear(
    dir: &TempDir,
    out_name: &str,
    extra: &[&str],
) -> (i32, String, Option<npy::NpyArray>) {
    let mut args = strings(&["run", "linear", "--device", "emu"]);
    for name in ["q", "k", "v"] {
        args.extend(path_arg(
            &format!("--{name}"),
            &dir.path(&format!("{name}.npy")),
        ));
    }
    let out = dir.path(out_name);
    args.extend(path_arg("--out", &out));
    args.extend(strings(extra));
    let output = cuattn(&args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("cuattn {} -> {:?}: {stderr}", args.join(" "), output.status);
    let code = output.status.code().expect("exited, not killed");
    let written = out.exists().then(|| npy::read_f32(&out).unwrap());
    if code != 0 {
        assert!(written.is_none(), "a failed run wrote --out: {stderr}");
    }
    (code, stderr, written)
}

/// The f64 definition of `case` on the bf16-rounded inputs.
fn linear_reference(
    case: &LinearCase,
    feature: &reference::LinearFeature,
    causal: bool,
    [q, k, v]: &[Vec<f32>; 3],
) -> Vec<f64> {
    let round = |x: &[f32]| {
        x.iter()
            .map(|&x| Dtype::Bf16.round(x))
            .collect::<Vec<f64>>()
    };
    let c = case;
    reference::linear_attention(
        &vec![(c.seqlen_q, c.seqlen_k); c.batch],
        c.heads,
        c.kv_heads,
        c.head_dim,
        c.value_dim,
        feature,
        causal,
        1e-6,
        &round(q),
        &round(k),
        &round(v),
    )
}

fn check_linear_output(test: &str, case: &LinearCase, got: &npy::NpyArray, want: &[f64]) {
    let c = case;
    assert_eq!(
        got.shape,
        [c.batch, c.seqlen_q, c.heads, c.value_dim],
        "{test}: out shape"
    );
    let got: Vec<f64> = got.data.iter().map(|&x| f64::from(x)).collect();
    let tol = Dtype::Bf16.out_tol();
    if let Err(m) = reference::compare(&got, want, tol, tol) {
        panic!("{test}: {m}");
    }
}

#[test]
fn run_linear_elu1_causal_matches_the_reference() {
    let dir = TempDir::new("linear-elu1");
    let inputs = write_linear_inputs(&dir, &LINEAR_CASE, 21);
    let (code, stderr, out) = run_linear(&dir, "out.npy", &["--feature", "elu1", "--causal"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("ran linear attention (elu1) on emulator")
            && stderr.contains("bf16")
            && stderr.contains("causal"),
        "{stderr}"
    );
    let want = linear_reference(&LINEAR_CASE, &reference::LinearFeature::Elu1, true, &inputs);
    check_linear_output("elu1 causal", &LINEAR_CASE, &out.unwrap(), &want);
}

/// FAVOR+ from a projection saved as .npy equals the definition with that projection; drawing the
/// same features with `--features M --seed S` (the library's orthogonal draw) gives the very same
/// output.
#[test]
fn run_linear_favor_with_a_saved_projection_matches_the_reference() {
    let dir = TempDir::new("linear-favor");
    let c = &LINEAR_CASE;
    let inputs = write_linear_inputs(&dir, c, 22);
    let (m, seed) = (24, 5);
    let projection = cuattn::approx::orthogonal_gaussian(m, c.head_dim, seed);
    let wp = dir.path("w.npy");
    npy::write_f32(&wp, &[m, c.head_dim], &projection).unwrap();
    let w = wp.display().to_string();
    let (code, stderr, from_file) = run_linear(
        &dir,
        "file.npy",
        &["--feature", "favor", "--projection", &w],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("favor (projection"), "{stderr}");
    let feature = reference::LinearFeature::Favor {
        projection: projection.iter().map(|&x| f64::from(x)).collect(),
        features: m,
    };
    let want = linear_reference(c, &feature, false, &inputs);
    let from_file = from_file.unwrap();
    check_linear_output("favor from file", c, &from_file, &want);

    let (code, stderr, drawn) = run_linear(
        &dir,
        "drawn.npy",
        &["--feature", "favor", "--features", "24", "--seed", "5"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("24 orthogonal features drawn with seed 5"),
        "{stderr}"
    );
    assert_eq!(
        drawn.unwrap(),
        from_file,
        "the seeded draw is the saved projection"
    );
}

/// A varlen batch (a 1 x 1 sequence, 30 queries over 70 keys) matches the definition sequence
/// by sequence.
#[test]
fn run_linear_varlen_relu_matches_the_reference() {
    let dir = TempDir::new("linear-varlen");
    let (heads, kv_heads, d, dv) = (2, 1, 16, 8);
    let seqlens = [(1usize, 1usize), (30, 70)];
    let (total_q, total_k) = (31, 71);
    let mut rng = StdRng::seed_from_u64(23);
    let q = random(&mut rng, total_q * heads * d, 1.0);
    let k = random(&mut rng, total_k * kv_heads * d, 1.0);
    let v = random(&mut rng, total_k * kv_heads * dv, 1.0);
    npy::write_f32(&dir.path("q.npy"), &[total_q, heads, d], &q).unwrap();
    npy::write_f32(&dir.path("k.npy"), &[total_k, kv_heads, d], &k).unwrap();
    npy::write_f32(&dir.path("v.npy"), &[total_k, kv_heads, dv], &v).unwrap();
    write_ints(&dir.path("cq.npy"), &[0i32, 1, 31]);
    write_ints(&dir.path("ck.npy"), &[0i32, 1, 71]);
    let (cq, ck) = (
        dir.path("cq.npy").display().to_string(),
        dir.path("ck.npy").display().to_string(),
    );
    let (code, stderr, out) = run_linear(
        &dir,
        "out.npy",
        &[
            "--feature",
            "relu",
            "--cu-seqlens-q",
            &cq,
            "--cu-seqlens-k",
            &ck,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("varlen batch 2"), "{stderr}");
    let out = out.unwrap();
    assert_eq!(out.shape, [total_q, heads, dv]);
    let round = |x: &[f32]| {
        x.iter()
            .map(|&x| Dtype::Bf16.round(x))
            .collect::<Vec<f64>>()
    };
    let want = reference::linear_attention(
        &seqlens,
        heads,
        kv_heads,
        d,
        dv,
        &reference::LinearFeature::Relu,
        false,
        1e-6,
        &round(&q),
        &round(&k),
        &round(&v),
    );
    let got: Vec<f64> = out.data.iter().map(|&x| f64::from(x)).collect();
    let tol = Dtype::Bf16.out_tol();
    if let Err(m) = reference::compare(&got, &want, tol, tol) {
        panic!("varlen relu: {m}");
    }
}

#[test]
fn bad_run_linear_arguments_exit_2_naming_the_flag() {
    let dir = TempDir::new("linear-bad");
    let c = &LINEAR_CASE;
    write_linear_inputs(&dir, c, 24);
    let w = dir.path("w.npy");
    npy::write_f32(&w, &[8, c.head_dim], &vec![0.5; 8 * c.head_dim]).unwrap();
    let wrong_dim = dir.path("w16.npy");
    npy::write_f32(&wrong_dim, &[8, 16], &[0.5; 128]).unwrap();
    let too_many = dir.path("w300.npy");
    npy::write_f32(&too_many, &[300, c.head_dim], &vec![0.5; 300 * c.head_dim]).unwrap();
    let k_bad_heads = dir.path("k3.npy");
    npy::write_f32(&k_bad_heads, &[2, 41, 3, 32], &vec![0.5; 2 * 41 * 3 * 32]).unwrap();
    let v_short = dir.path("v_short.npy");
    npy::write_f32(&v_short, &[2, 40, 2, 24], &vec![0.5; 2 * 40 * 2 * 24]).unwrap();
    let q_rank3 = dir.path("q3.npy");
    npy::write_f32(&q_rank3, &[46, 4, 32], &vec![0.5; 46 * 4 * 32]).unwrap();
    let [w, wrong_dim, too_many] = [&w, &wrong_dim, &too_many].map(|p| p.display().to_string());
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            strings(&["--feature", "favor"]),
            vec!["`feature`", "--projection W.npy", "--features M"],
        ),
        (
            strings(&["--feature", "elu1", "--projection", &w]),
            vec!["`projection`", "--feature favor only", "elu1"],
        ),
        (
            strings(&["--feature", "relu", "--features", "16"]),
            vec!["`features`", "--feature favor only", "relu"],
        ),
        (
            strings(&["--feature", "elu1", "--seed", "3"]),
            vec!["`seed`", "--feature favor only"],
        ),
        (
            strings(&["--feature", "favor", "--projection", &w, "--features", "8"]),
            vec!["`projection`", "leave one out"],
        ),
        (
            strings(&["--feature", "favor", "--projection", &w, "--seed", "3"]),
            vec!["`seed`", "--features M"],
        ),
        (
            strings(&["--feature", "favor", "--projection", &wrong_dim]),
            vec!["`projection`", "w16.npy", "[8, 16]", "head_dim 32"],
        ),
        (
            strings(&["--feature", "favor", "--projection", &too_many]),
            vec!["`projection`", "w300.npy", "1..=256"],
        ),
        (
            strings(&["--feature", "favor", "--features", "0"]),
            vec!["`features`", "1..=256"],
        ),
        (
            strings(&["--feature", "swish"]),
            vec!["--feature", "swish", "elu1"],
        ),
    ];
    for (extra, wants) in &cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (code, stderr, _) = run_linear(&dir, "out.npy", &extra);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        for want in wants {
            assert!(stderr.contains(want), "{extra:?}: `{want}` in {stderr}");
        }
    }
    // Bad shapes, each file in turn in place of a good one.
    for (flag, file, wants) in [
        ("--k", &k_bad_heads, vec!["`k`", "[2, 41, 3, 32]"]),
        (
            "--v",
            &v_short,
            vec!["`v`", "[2, 40, 2, 24]", "expected [2, 41, 2, 24]"],
        ),
        ("--q", &q_rank3, vec!["`q`", "rank 4"]),
    ] {
        let mut args = strings(&["run", "linear", "--device", "emu", "--feature", "elu1"]);
        for name in ["q", "k", "v"] {
            let flag_name = format!("--{name}");
            let path = if flag_name == flag {
                file.clone()
            } else {
                dir.path(&format!("{name}.npy"))
            };
            args.extend(path_arg(&flag_name, &path));
        }
        args.extend(path_arg("--out", &dir.path("out.npy")));
        let output = cuattn(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        println!("{flag}: {stderr}");
        assert_eq!(output.status.code(), Some(2), "{flag}: {stderr}");
        for want in wants {
            assert!(stderr.contains(want), "{flag}: `{want}` in {stderr}");
        }
        assert!(!dir.path("out.npy").exists());
    }
    // The baseline: the good projection runs on the same files.
    let (code, stderr, _) = run_linear(&dir, "ok.npy", &["--feature", "favor", "--projection", &w]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn run_linear_help_documents_the_feature_maps() {
    let output = cuattn(&strings(&["run", "linear", "--help"]));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    for want in [
        "--feature <FEATURE>",
        "elu1",
        "relu",
        "favor",
        "--projection <W.npy>",
        "--features <M>",
        "--seed <S>",
        "--causal",
        "--cu-seqlens-q <CQ.npy>",
    ] {
        assert!(help.contains(want), "`{want}` in {help}");
    }
}

// ---- The command line as users of command-line tools expect it: exit statuses, --device,
// ---- --kernel, check --filter/--seed, bench --shape/--causal, info --json, progress ----

/// `cuattn` with `args`: exit code, stdout, stderr.
fn cuattn_str(args: &[&str]) -> (i32, String, String) {
    let output = cuattn(&strings(args));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("cuattn {} -> {:?}: {stderr}", args.join(" "), output.status);
    (
        output.status.code().expect("exited, not killed"),
        stdout,
        stderr,
    )
}

/// Check cases small enough for the emulator in a blink: the 17 x 17 ones at head dim 64 (each
/// kernel, both dtypes, causal and not).
const SMALL_CASES: &str = "sq17 sk17 h2/1 d64";

#[test]
fn help_lists_the_exit_statuses() {
    let (code, help, _) = cuattn_str(&["--help"]);
    assert_eq!(code, 0);
    for line in [
        "Exit status:",
        "0  success",
        "1  a check failed",
        "2  usage error",
        "3  runtime error",
    ] {
        assert!(help.contains(line), "`{line}` in {help}");
    }
    // clap's own refusals are usage errors.
    let (code, _, stderr) = cuattn_str(&["check", "--no-such-flag"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = cuattn_str(&["frobnicate"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn check_filter_runs_only_the_cases_whose_name_contains_it() {
    use cuattn::check::{case_name, CaseSelection, CheckPlan};
    let all = CheckPlan::new(&CaseSelection::default()).unwrap();
    let selection = CaseSelection {
        filter: Some(SMALL_CASES.into()),
        seed: 0,
    };
    let plan = CheckPlan::new(&selection).unwrap();
    let want: Vec<String> = plan.pairs().map(|(k, c)| case_name(k, c)).collect();
    let expected = all
        .pairs()
        .filter(|&(k, c)| case_name(k, c).contains(SMALL_CASES))
        .count();
    println!("{} of {} cases: {want:?}", plan.len(), all.len());
    assert_eq!(plan.len(), expected);
    assert_eq!(plan.len(), 12, "3 kernels x 2 dtypes x causal and not");

    let (code, stdout, stderr) = cuattn_str(&["check", "--device", "emu", "--filter", SMALL_CASES]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), want.len() + 1, "{stdout}");
    for (line, name) in lines.iter().zip(&want) {
        let (kernel, case) = name.split_once(' ').unwrap();
        assert!(
            line.starts_with(kernel) && line.contains(case) && line.ends_with("PASS"),
            "`{name}` in `{line}`"
        );
    }
    assert_eq!(
        lines.last().unwrap(),
        &format!("check: {} passed, 0 failed", want.len())
    );
    // The kernel is part of the name.
    let (code, stdout, _) = cuattn_str(&[
        "check",
        "--device",
        "emu",
        "--filter",
        &format!("mma_simple f16 b1 {SMALL_CASES}"),
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.lines().count(),
        3,
        "causal and not, then the summary: {stdout}"
    );
}

#[test]
fn check_filter_matching_nothing_exits_2_naming_filter() {
    let (code, stdout, stderr) = cuattn_str(&["check", "--device", "emu", "--filter", "d1000"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "nothing ran: {stdout}");
    assert!(
        stderr.contains("`filter`") && stderr.contains("d1000") && stderr.contains("flash bf16"),
        "names the argument, the value and what names look like: {stderr}"
    );
}

#[test]
fn check_seed_0_is_the_default_and_another_seed_draws_other_inputs() {
    let filter = format!("naive bf16 b1 {SMALL_CASES}");
    let run = |seed: Option<&str>| {
        let mut args = vec!["check", "--device", "emu", "--json", "--filter", &filter];
        if let Some(seed) = seed {
            args.extend(["--seed", seed]);
        }
        let (code, stdout, stderr) = cuattn_str(&args);
        assert_eq!(code, 0, "{stderr}");
        let rows: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2, "{stdout}");
        assert!(rows.iter().all(|r| r["pass"] == true), "{stdout}");
        rows
    };
    let default = run(None);
    assert_eq!(default, run(Some("0")), "--seed 0 is the default");
    for seed in ["1", "18446744073709551615"] {
        let other = run(Some(seed));
        for (a, b) in default.iter().zip(&other) {
            assert_eq!(a["case"], b["case"]);
            assert_ne!(
                a["max_abs_err"], b["max_abs_err"],
                "--seed {seed}: other inputs, other errors"
            );
        }
    }
    let (code, _, stderr) = cuattn_str(&["check", "--seed", "-1"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn device_takes_auto_emu_gpu_and_gpu_n() {
    let (code, help, _) = cuattn_str(&["check", "--help"]);
    assert_eq!(code, 0);
    for value in ["auto", "emu", "gpu", "gpu:N"] {
        assert!(help.contains(value), "`{value}` in {help}");
    }
    for bad in ["cpu", "gpu:", "gpu:x", "gpu:-1", "gpu0"] {
        let (code, stdout, stderr) = cuattn_str(&["check", "--device", bad, "--filter", "x"]);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(stdout.is_empty());
        assert!(
            stderr.contains("--device") && stderr.contains("gpu:N"),
            "{stderr}"
        );
    }
    // No machine has GPU 999: a runtime error naming it, before any case runs (with or without
    // a GPU, a driver, or CUDA kernels in the build).
    let (code, stdout, stderr) =
        cuattn_str(&["check", "--device", "gpu:999", "--filter", SMALL_CASES]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("gpu:999"), "{stderr}");
    let (code, _, stderr) = cuattn_str(&[
        "run",
        "attention",
        "--q",
        "q.npy",
        "--k",
        "k.npy",
        "--v",
        "v.npy",
        "--out",
        "o.npy",
        "--device",
        "gpu:x",
    ]);
    assert_eq!(code, 2, "{stderr}");
}

/// `check` where it cannot run on the GPU it is asked for (no GPU here, or, on a GPU machine, a
/// build without CUDA kernels): one error, exit 3, no case run. On a GPU machine whose build
/// has the kernels there is nothing to refuse.
#[test]
fn check_on_a_gpu_it_cannot_use_says_so_once_and_exits_3() {
    let gpu = cuattn::probe_cuda().is_available();
    if gpu && cuattn::build_info::HAS_CUDA_KERNELS {
        println!("skipped: this build runs its kernels on this machine's GPU");
        return;
    }
    let (code, stdout, stderr) = cuattn_str(&["check", "--device", "gpu", "--filter", SMALL_CASES]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.is_empty(), "no case ran: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "said once: {stderr}");
    if gpu {
        // The GPU machine with an emulator-only build: `auto` refuses the same way.
        assert!(stderr.contains("no CUDA kernels"), "{stderr}");
        let (code, stdout, stderr) = cuattn_str(&["check", "--filter", SMALL_CASES]);
        assert_eq!(code, 3, "{stderr}");
        assert!(
            stdout.is_empty() && stderr.contains("--device emu"),
            "{stderr}"
        );
    } else {
        assert!(stderr.contains("no GPU"), "{stderr}");
    }
}

#[test]
fn kernel_flags_take_the_kernels_names() {
    let (code, help, _) = cuattn_str(&["run", "attention", "--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains("[possible values: naive, mma_simple, flash]"),
        "{help}"
    );
    let (code, help, _) = cuattn_str(&["bench", "--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains("[possible values: all, naive, mma_simple, flash]"),
        "{help}"
    );
    for bad in ["mma-simple", "Flash", "flash,warp9"] {
        let (code, _, stderr) = cuattn_str(&[
            "bench", "--family", "prefill", "--device", "emu", "--quick", "--kernel", bad,
        ]);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(stderr.contains("mma_simple"), "lists the kernels: {stderr}");
    }
}

/// (query, key) pairs a bottom-right causal mask leaves, counted pair by pair.
fn causal_pairs(sq: usize, sk: usize) -> u64 {
    let mut n = 0;
    for i in 0..sq as i64 {
        for j in 0..sk as i64 {
            if j <= i + sk as i64 - sq as i64 {
                n += 1;
            }
        }
    }
    n
}

/// `cuattn bench --family prefill --device emu --quick` with `extra` and `--json`: exit code,
/// stdout, stderr and the report (when written).
fn bench_prefill(
    dir: &TempDir,
    extra: &[&str],
) -> (i32, String, String, Option<serde_json::Value>) {
    let json = dir.path("bench.json");
    let _ = std::fs::remove_file(&json);
    let mut args = vec!["bench", "--family", "prefill", "--device", "emu", "--quick"];
    args.extend_from_slice(extra);
    let json_arg = json.display().to_string();
    args.extend(["--json", &json_arg]);
    let (code, stdout, stderr) = cuattn_str(&args);
    let report = std::fs::read_to_string(&json)
        .ok()
        .map(|text| serde_json::from_str(&text).unwrap());
    (code, stdout, stderr, report)
}

#[test]
fn bench_times_the_shapes_given_causal_or_not() {
    let dir = TempDir::new("bench-shapes");
    // (b, sq, sk, h, hkv, d): fewer queries than keys (a cached prefix), more, and equal.
    let shapes = [
        (1, 33, 70, 4, 2, 64),
        (1, 40, 17, 2, 1, 32),
        (2, 16, 16, 2, 2, 64),
    ];
    let args: Vec<String> = shapes
        .iter()
        .map(|(b, sq, sk, h, hkv, d)| format!("{b},{sq},{sk},{h},{hkv},{d}"))
        .collect();
    for causal in [false, true] {
        let mut extra = vec!["--kernel", "naive,flash"];
        for a in &args {
            extra.extend(["--shape", a.as_str()]);
        }
        if causal {
            extra.push("--causal");
        }
        let (code, stdout, stderr, report) = bench_prefill(&dir, &extra);
        assert_eq!(code, 0, "{stderr}");
        let report = report.expect("the JSON report");
        let rows = report["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2 * shapes.len(), "{stdout}");
        for (row, (kernel, &(b, sq, sk, h, hkv, d))) in rows.iter().zip(
            ["naive", "flash"]
                .into_iter()
                .flat_map(|k| shapes.iter().map(move |s| (k, s))),
        ) {
            assert_eq!(row["kernel"], kernel);
            for (key, want) in [
                ("batch", b),
                ("seqlen_q", sq),
                ("seqlen_k", sk),
                ("heads", h),
                ("kv_heads", hkv),
                ("head_dim", d),
            ] {
                assert_eq!(row[key], want, "{key} of {row}");
            }
            assert_eq!(row["causal"], causal);
            let per_head = if causal {
                causal_pairs(sq, sk)
            } else {
                (sq * sk) as u64
            };
            assert_eq!(row["visible_pairs"], per_head * (b * h) as u64, "{row}");
            assert!(row["error"].is_null(), "{row}");
            assert!(row["ms"].as_f64().unwrap() > 0.0, "{row}");
        }
        assert!(stdout.contains("b1 sq33 sk70 h4/2 d64"), "{stdout}");
        assert!(stdout.contains("b2 s16 h2/2 d64"), "{stdout}");
    }
}

#[test]
fn bench_refuses_bad_shapes_naming_the_field_before_anything_runs() {
    let dir = TempDir::new("bench-bad-shapes");
    for (shape, wants) in [
        ("1,16,16,2,2", vec!["5 fields"]),
        ("1,16,16,2,2,64,1", vec!["7 fields"]),
        ("0,16,16,2,2,64", vec!["batch 0"]),
        ("1,0,16,2,2,64", vec!["seqlen_q 0"]),
        ("1,16,0,2,2,64", vec!["seqlen_k 0"]),
        ("1,16,16,x,2,64", vec!["heads `x`"]),
        ("1,16,16,4,3,64", vec!["kv_heads 3", "heads 4"]),
        ("1,16,16,2,2,100", vec!["head_dim 100", "multiple of 8"]),
        ("1,16,16,2,2,264", vec!["head_dim 264"]),
        ("65536,65536,16,64,1,128", vec!["q", "2^31"]),
    ] {
        // A good shape first: the bad one is refused all the same, before anything is timed.
        let (code, stdout, stderr, report) =
            bench_prefill(&dir, &["--shape", "1,16,16,2,2,64", "--shape", shape]);
        assert_eq!(code, 2, "{shape}: {stderr}");
        assert!(
            stdout.is_empty() && report.is_none(),
            "{shape}: nothing ran"
        );
        assert!(
            stderr.contains("--shape") && stderr.contains(shape),
            "{stderr}"
        );
        for want in wants {
            assert!(stderr.contains(want), "{shape}: `{want}` in {stderr}");
        }
    }
    // --head-dim picks among the built-in shapes, which --shape replaces.
    let (code, _, stderr, report) =
        bench_prefill(&dir, &["--shape", "1,16,16,2,2,64", "--head-dim", "64"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        report.is_none() && stderr.contains("`head_dim`"),
        "{stderr}"
    );
}

#[test]
fn bench_shape_and_causal_are_refused_by_the_other_families() {
    for family in ["decode", "sparse", "linear"] {
        for extra in [vec!["--shape", "1,16,16,2,2,64"], vec!["--causal"]] {
            let mut args = vec!["bench", "--family", family, "--device", "emu", "--quick"];
            args.extend(&extra);
            let (code, stdout, stderr) = cuattn_str(&args);
            assert_eq!(code, 2, "{family} {extra:?}: {stderr}");
            assert!(stdout.is_empty());
            assert!(
                stderr.contains(extra[0]) && stderr.contains("--family prefill only"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn causal_only_keeps_the_causal_shapes_and_refuses_a_run_without_any() {
    use cuattn::bench::{select_shapes, BenchConfig, PrefillShape};
    let shape = |s: &str, causal: bool| PrefillShape {
        causal,
        ..s.parse::<PrefillShape>().unwrap()
    };
    let given = vec![
        shape("1,16,16,2,2,64", false),
        shape("1,32,64,4,1,128", true),
        shape("2,8,8,2,1,64", true),
    ];
    let config =
        |shapes: Vec<PrefillShape>, causal_only: bool, head_dims: Vec<usize>| BenchConfig {
            kernels: vec![cuattn::Kernel::DEFAULT],
            quick: true,
            commit: None,
            head_dims,
            flash_tiles: cuattn::FlashTiles::Auto,
            softcap: None,
            shapes,
            causal_only,
        };
    let device = cuattn::Device::emulator();
    let all = select_shapes(&device, &config(given.clone(), false, vec![])).unwrap();
    assert_eq!(all, given);
    let causal = select_shapes(&device, &config(given.clone(), true, vec![])).unwrap();
    assert_eq!(causal, given[1..]);
    let d64 = select_shapes(&device, &config(given.clone(), true, vec![64])).unwrap();
    assert_eq!(d64, given[2..]);
    let err = select_shapes(&device, &config(given[..1].to_vec(), true, vec![])).unwrap_err();
    assert!(err.to_string().contains("causal_only"), "{err}");
    // Without shapes given, the built-in ones (the emulator's one causal shape).
    let builtin = select_shapes(&device, &config(vec![], true, vec![])).unwrap();
    assert_eq!(builtin, [cuattn::bench::emulator_shape()]);
    assert_eq!(given[1].label(), "b1 sq32 sk64 h4/1 d128");
    assert_eq!(given[0].label(), "b1 s16 h2/2 d64");
}

#[test]
fn info_json_is_one_object_that_agrees_with_the_text() {
    let (code, stdout, stderr) = cuattn_str(&["info", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v.is_object());
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["gpu_kernels_built"], cuattn::build_info::HAS_CUDA_KERNELS);
    assert_eq!(
        v["kernels"],
        serde_json::json!(["naive", "mma_simple", "flash"])
    );
    let (_, text, _) = cuattn_str(&["info"]);
    let gpus = v["gpus"].as_array().unwrap();
    match v["no_gpu"].as_str() {
        Some(why) => {
            assert!(gpus.is_empty());
            assert!(text.contains(&format!("device: no GPU ({why})")), "{text}");
        }
        None => assert_eq!(gpus.len(), text.matches("device: ").count(), "{text}"),
    }
    let tiles: Vec<String> = v["flash_head_dim_tiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert!(
        text.contains(&format!("flash head-dim tiles: {}", tiles.join(", "))),
        "{text}"
    );
}

#[test]
fn an_output_that_cannot_be_written_is_a_runtime_error_and_a_missing_input_a_usage_error() {
    let setup = BadInputSetup::new("exit-3-out");
    let mut args = strings(&["run", "attention", "--device", "emu"]);
    for name in ["q", "k", "v"] {
        args.extend(path_arg(
            &format!("--{name}"),
            &setup.dir.path(&format!("{name}.npy")),
        ));
    }
    let mut unwritable = args.clone();
    unwritable.extend(path_arg("--out", &setup.dir.path("no-such-dir/out.npy")));
    let output = cuattn(&unwritable);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("no-such-dir"), "{stderr}");
    let (code, stderr) = setup.run(&[("--k", setup.dir.path("missing.npy"))], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`k`") && stderr.contains("missing.npy"),
        "{stderr}"
    );
}

/// The progress bar: drawn on stderr when it is a terminal (a pseudo-terminal from util-linux's
/// `script`), absent when stderr is a pipe, as under this test runner.
#[test]
fn progress_is_drawn_on_a_terminal_and_absent_from_pipes() {
    let (code, _, stderr) = cuattn_str(&["check", "--device", "emu", "--filter", SMALL_CASES]);
    assert_eq!(code, 0);
    assert!(stderr.is_empty(), "nothing on a piped stderr: {stderr:?}");
    let dir = TempDir::new("bench-progress");
    let (code, _, stderr, _) = bench_prefill(&dir, &["--shape", "1,16,16,2,2,64"]);
    assert_eq!(code, 0);
    assert!(stderr.is_empty(), "{stderr:?}");

    let script = Command::new("script").arg("--version").output();
    if !script.is_ok_and(|o| o.status.success()) {
        println!("skipped the terminal half: no `script` (util-linux) on this machine");
        return;
    }
    let command = format!(
        "'{}' check --device emu --filter '{SMALL_CASES}' > /dev/null",
        env!("CARGO_BIN_EXE_cuattn")
    );
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let terminal = String::from_utf8_lossy(&output.stdout);
    println!("{terminal:?}");
    assert!(output.status.success(), "{terminal}");
    assert!(terminal.contains("/12 cases"), "the bar: {terminal:?}");
    assert!(!terminal.contains("PASS"), "the table went to /dev/null");
}
