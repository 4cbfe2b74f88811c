//! The `cuattn` command line: `info` (build and devices), `check` (every kernel against the f64
//! reference over a grid of shapes), `run` (one kernel on .npy tensors, dense, with `--paged`
//! over a paged KV cache, or block-sparse with `--pattern` or `--block-mask`), `bench` (prefill
//! against the mma.sync ceiling, decode over the paged KV cache against a device-to-device copy,
//! block-sparse and linear attention against the dense kernel), `kv-plan` (the size of a paged KV
//! cache for a model), `approx-report` (the approximations' errors against exact attention and
//! their costs).

mod approx_report;
mod args;
mod info;
mod kv_plan;
mod progress;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::attention::{FlashTiles, Kernel};
use crate::bench::decode::{DecodeConfig, DecodeReport};
use crate::bench::linear::{LinearBenchConfig, LinearBenchKernel, LinearReport};
use crate::bench::sparse::{SparseConfig, SparseReport};
use crate::bench::{table_header, BenchConfig, BenchReport, PrefillShape, EMULATOR_NOTE};
use crate::error::{Error, Result};
pub use args::{
    kernel_parser, BenchKernelArg, DeviceChoice, DeviceChoiceParser, DeviceTarget, KernelArg,
};
use progress::Progress;

/// Exit status of a command that ran to its end and found nothing wrong.
pub const EXIT_SUCCESS: u8 = 0;
/// Exit status of a command that ran to its end and found a failure: a `check` case that did
/// not match the reference, a `bench` row (or `approx-report` method) that could not run.
pub const EXIT_FAILED: u8 = 1;
/// Exit status of a refused command line: clap's own errors (an unknown flag, a value of the
/// wrong form) and the values cuattn refuses before or while it uses them (a shape, a filter
/// matching nothing, an input file that cannot be read or does not fit).
pub const EXIT_USAGE: u8 = 2;
/// Exit status of a command that could not run to its end: no such GPU, a build without the
/// kernels the device needs, a failed launch, an output file that cannot be written.
pub const EXIT_RUNTIME: u8 = 3;

/// The exit statuses, as `cuattn --help` lists them.
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success
  1  a check failed (check), or a row or method could not run (bench, approx-report); a
     benchmark's missed target is printed, not failed
  2  usage error: the command line was refused (an unknown flag or value, a bad shape, a
     --filter matching nothing, an input file that cannot be read or does not fit)
  3  runtime error: no such device, a build without CUDA kernels on a GPU, a failed launch,
     an output file that cannot be written";

#[derive(Parser)]
#[command(
    name = "cuattn",
    version,
    about = "CUDA attention kernels, checked and benchmarked",
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Version, devices found, GPU kernels built and their ptxas resources.
    Info(info::InfoArgs),
    /// Runs every kernel family over a grid of shapes against the f64 reference.
    Check(CheckArgs),
    /// Runs one kernel on tensors from .npy files (dense, with --paged over a paged KV cache, or
    /// block-sparse with --pattern or --block-mask).
    #[command(subcommand)]
    Run(run::RunCommand),
    /// Times kernels on benchmark shapes: prefill against the card's mma.sync ceiling, decode
    /// over the paged KV cache against a device-to-device copy, block-sparse and causal linear
    /// attention against the dense flash kernel.
    Bench(BenchArgs),
    /// Sizes a paged KV cache: bytes per token, pages per sequence and sequences that fit in
    /// memory, for a model's shape and its MHA and MQA counterparts.
    KvPlan(kv_plan::KvPlanArgs),
    /// Exact attention and each approximation (windows, BigBird, linear elu1, FAVOR+) on the
    /// same inputs: their errors against exact attention, FLOPs, bytes and (on a GPU) times.
    #[command(long_about = approx_report::LONG_ABOUT)]
    ApproxReport(approx_report::ApproxReportArgs),
}

/// The exit status a failed command ends with: [`EXIT_USAGE`] for an argument refused
/// (`Error::InvalidArgument`: every such error the CLI meets names a flag or an input file's
/// contents), [`EXIT_RUNTIME`] for anything else.
pub fn exit_status(error: &Error) -> u8 {
    match error {
        Error::InvalidArgument { .. } => EXIT_USAGE,
        _ => EXIT_RUNTIME,
    }
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Where the kernels run.
    #[arg(long, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Print one JSON object per case instead of a table.
    #[arg(long)]
    json: bool,
    /// Check only the cases whose name (the kernel, then the case, as the table lists them:
    /// `flash bf16 b1 sq97 sk113 h2/1 d64 causal`) contains this text; matching none is an error.
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
    /// Added to each case's own fixed input seed: 0 (the default) draws the inputs every run has
    /// checked, another value new ones.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// The flash kernel's tile table: auto (per shape), compact, or wide (sm_90 running the sm_90a
    /// code, and the emulator); forcing one checks it on every shape.
    #[arg(long, value_name = "TILES", default_value = "auto")]
    flash_tiles: FlashTiles,
    /// With --json, add each case's global-memory traffic on the emulator: per kernel launch, the
    /// bytes read and written of q, k, v, out, lse (emulator only; the launches run checked).
    #[arg(long, requires = "json")]
    traffic: bool,
}

/// Entry point of the `cuattn` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::info(&args),
        Command::Check(args) => check(&args),
        Command::Run(cmd) => run::run(cmd),
        Command::Bench(args) => bench(&args),
        Command::KvPlan(args) => kv_plan::kv_plan(&args),
        Command::ApproxReport(args) => approx_report::approx_report_command(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_status(&e))
        }
    }
}

fn check(args: &CheckArgs) -> Result<ExitCode> {
    let selection = crate::check::CaseSelection {
        filter: args.filter.clone(),
        seed: args.seed,
    };
    // The selection is refused (a filter matching nothing) before a device is opened.
    let plan = crate::check::CheckPlan::new(&selection)?;
    let device = args.device.open()?;
    let options = crate::check::CheckOptions {
        traffic: args.traffic,
        flash_tiles: args.flash_tiles,
    };
    let progress = Progress::new(Some(plan.len()), "cases");
    let report = crate::check::run_plan(&device, &options, &plan, |case| {
        progress.println(|| {
            if args.json {
                println!("{}", case.to_json());
            } else {
                println!("{case}");
            }
        });
        progress.inc(case.failed());
    })?;
    progress.finish();
    if !args.json {
        println!("{}", report.summary_line());
    }
    Ok(ExitCode::from(failures_status(report.failed)))
}

/// The exit status of a run that ended with `failed` failures: [`EXIT_FAILED`] when there were
/// any, else [`EXIT_SUCCESS`] (skipped cases and rows are no failures).
fn failures_status(failed: usize) -> u8 {
    if failed > 0 {
        EXIT_FAILED
    } else {
        EXIT_SUCCESS
    }
}

/// Benchmark families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BenchFamily {
    /// Exact attention forward on FlashAttention's benchmark shapes (16k tokens, heads *
    /// head_dim = 2048; seqlen 512..16k; head dims 64, 128, 256; causal and not; GQA 32/8), bf16.
    Prefill,
    /// Paged attention's decode step over the paged KV cache (batch 1..256, context 1k..64k, 32
    /// query heads over 32, 8, 4 and 1 KV heads, hd128, pages of 16, split-KV auto and off),
    /// bf16, in GB/s of KV read against a device-to-device copy timed in the same run.
    Decode,
    /// Block-sparse attention at 16k tokens, hd128, bf16 (16/16 and 32/8 heads), random masks at
    /// densities 0.05 to 1 and each pattern, 128x128 blocks (one row of 64x64), unmasked and
    /// causal, in effective TFLOP/s and as a share of the dense flash kernel's time in the same
    /// run.
    Sparse,
    /// Causal linear attention (elu1 features) at 1k to 64k tokens, 16/16 heads, hd128, bf16,
    /// against the exact flash kernel in the same run, with fits of its time against the length
    /// (a line and a log-log power law).
    Linear,
}

impl BenchFamily {
    fn name(self) -> &'static str {
        match self {
            BenchFamily::Prefill => "prefill",
            BenchFamily::Decode => "decode",
            BenchFamily::Sparse => "sparse",
            BenchFamily::Linear => "linear",
        }
    }

    /// What the family times, for the refusal of an option that does not apply to it.
    fn times(self) -> &'static str {
        match self {
            BenchFamily::Prefill => "the attention kernels on FlashAttention's shapes",
            BenchFamily::Decode => {
                "the paged attention kernel on its own grid (hd128, or hd64 on the emulator)"
            }
            BenchFamily::Sparse => {
                "the block-sparse and dense flash kernels on its own grid (16k tokens, hd128, or \
                 hd64 on the emulator)"
            }
            BenchFamily::Linear => {
                "linear attention and the flash kernel on their own grid (1k to 64k tokens, hd128, \
                 or hd64 on the emulator)"
            }
        }
    }
}

#[derive(clap::Args)]
struct BenchArgs {
    #[arg(long, value_enum)]
    family: BenchFamily,
    /// Prefill: kernels to time, comma-separated or repeated, or `all`; default: the default
    /// kernel (the fastest, flash).
    #[arg(long, value_name = "K", value_enum, value_delimiter = ',')]
    kernel: Vec<BenchKernelArg>,
    /// Where the kernels run.
    #[arg(long, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Prefill: time this shape instead of the built-in ones: batch, seqlen_q, seqlen_k, heads,
    /// kv_heads, head_dim (bf16, q [b, sq, h, d], k and v [b, sk, hkv, d]); repeat it for more
    /// shapes. Non-causal unless --causal. On the emulator (with --quick) each runs once.
    #[arg(long, value_name = "B,SQ,SK,H,HKV,D", value_parser = parse_shape)]
    shape: Vec<PrefillShape>,
    /// Prefill: causal attention (bottom-right aligned when seqlen_q != seqlen_k): each --shape
    /// runs causal, or, without --shape, only the built-in shapes that are causal.
    #[arg(long)]
    causal: bool,
    /// Also write the results as JSON (rewritten after every row, so a cut-off run leaves what
    /// it measured). Records `CUATTN_COMMIT` from the environment.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// GPU: a few shapes, fewer runs. Emulator (where it is required): one tiny shape (once per
    /// kernel), to exercise the code; its times are no performance numbers.
    #[arg(long)]
    quick: bool,
    /// Prefill: only the shapes of these head dims, comma-separated (default: every shape).
    #[arg(long, value_name = "D", value_delimiter = ',')]
    head_dim: Vec<usize>,
    /// Prefill: the flash kernel's tile table: auto (per shape, the default), compact, or wide
    /// (sm_90 running the sm_90a code only).
    #[arg(long, value_name = "TILES")]
    flash_tiles: Option<FlashTiles>,
    /// Prefill: a soft cap on the scores of every shape (cap * tanh(s / cap)), as Gemma 2 runs
    /// with 50; default: none.
    #[arg(long, value_name = "CAP")]
    softcap: Option<f32>,
    /// Sparse: write each row's block matrix (uint8 .npy [batch or 1, heads or 1, nq, nk]) and a
    /// manifest of the rows (masks.json) into DIR before timing, for `bench_anchors.py --family
    /// sparse --mask-dir DIR` to time FlexAttention with the same block masks.
    #[arg(long, value_name = "DIR")]
    mask_dir: Option<std::path::PathBuf>,
}

/// `--shape`'s parser: [`PrefillShape`]'s `FromStr`, which names the field it refuses.
fn parse_shape(s: &str) -> std::result::Result<PrefillShape, String> {
    s.parse().map_err(|e: Error| match e {
        Error::InvalidArgument { msg, .. } => msg,
        other => other.to_string(),
    })
}

/// The kernels `--kernel` names, in [`Kernel::ALL`]'s order, each once; none: the default.
fn bench_kernels(args: &[BenchKernelArg]) -> Vec<Kernel> {
    if args.is_empty() {
        return vec![Kernel::DEFAULT];
    }
    Kernel::ALL
        .iter()
        .copied()
        .filter(|&k| {
            args.iter()
                .any(|&a| a == BenchKernelArg::All || a == BenchKernelArg::One(k))
        })
        .collect()
}

fn bench(args: &BenchArgs) -> Result<ExitCode> {
    let commit = std::env::var("CUATTN_COMMIT")
        .ok()
        .filter(|c| !c.is_empty());
    refuse_options_of_other_families(args)?;
    match args.family {
        BenchFamily::Prefill => bench_prefill(args, commit),
        BenchFamily::Decode => bench_decode(args, commit),
        BenchFamily::Sparse => bench_sparse(args, commit),
        BenchFamily::Linear => bench_linear(args, commit),
    }
}

/// The options of `cuattn bench` that some families take and others do not: (argument, flag,
/// the families that take it, whether it was given).
fn family_options(
    args: &BenchArgs,
) -> [(&'static str, &'static str, &'static [BenchFamily], bool); 7] {
    const PREFILL: &[BenchFamily] = &[BenchFamily::Prefill];
    const SPARSE: &[BenchFamily] = &[BenchFamily::Sparse];
    [
        ("kernel", "--kernel", PREFILL, !args.kernel.is_empty()),
        ("shape", "--shape", PREFILL, !args.shape.is_empty()),
        ("causal", "--causal", PREFILL, args.causal),
        ("head_dim", "--head-dim", PREFILL, !args.head_dim.is_empty()),
        (
            "flash_tiles",
            "--flash-tiles",
            PREFILL,
            args.flash_tiles.is_some(),
        ),
        ("softcap", "--softcap", PREFILL, args.softcap.is_some()),
        ("mask_dir", "--mask-dir", SPARSE, args.mask_dir.is_some()),
    ]
}

/// Refuses, before anything runs, an option given that `args.family` does not take, and
/// `--head-dim` with `--shape` (which gives the shapes outright).
fn refuse_options_of_other_families(args: &BenchArgs) -> Result<()> {
    if !args.shape.is_empty() && !args.head_dim.is_empty() {
        return Err(Error::invalid(
            "head_dim",
            "--head-dim selects among the built-in shapes, and --shape replaces them: leave one \
             out",
        ));
    }
    let family = args.family;
    for (arg, flag, families, given) in family_options(args) {
        if given && !families.contains(&family) {
            let takers: Vec<String> = families
                .iter()
                .map(|f| format!("--family {}", f.name()))
                .collect();
            return Err(Error::invalid(
                arg,
                format!(
                    "{flag} applies to {} only: --family {} times {}",
                    takers.join(" and "),
                    family.name(),
                    family.times()
                ),
            ));
        }
    }
    Ok(())
}

/// The report file of `--json`, rewritten with each report so far; the first write error is kept
/// for the end of the run (a benchmark goes on measuring when its file cannot be written).
struct JsonFile<'a> {
    path: Option<&'a std::path::Path>,
    error: Option<Error>,
}

impl<'a> JsonFile<'a> {
    fn new(path: Option<&'a std::path::Path>) -> JsonFile<'a> {
        JsonFile { path, error: None }
    }

    fn write(&mut self, text: &str) {
        if let Some(path) = self.path {
            if let Err(e) = std::fs::write(path, text) {
                self.error
                    .get_or_insert(Error::io(path.display(), "cannot write", e));
            }
        }
    }

    fn finish(self) -> Result<()> {
        self.error.map_or(Ok(()), Err)
    }
}

/// `, commit abc1234` or nothing.
fn commit_note(commit: Option<&str>) -> String {
    commit.map_or(String::new(), |c| format!(", commit {c}"))
}

/// Exit status of a finished benchmark: [`EXIT_FAILED`] when a row failed (skipped rows are
/// not).
fn bench_status(failed: usize) -> ExitCode {
    if failed > 0 {
        eprintln!("{failed} row(s) failed");
    }
    ExitCode::from(failures_status(failed))
}

/// What the command prints of a benchmark family's report while it grows: a heading once, before
/// the first row, then each row as it comes (the JSON file rewritten after each).
trait FamilyReport {
    /// The lines printed once, before the first row.
    fn heading(&self) -> Vec<String>;
    /// The table's rows, printed as they come.
    type Row: std::fmt::Display;
    /// The rows so far.
    fn rows(&self) -> &[Self::Row];
    /// Whether a row failed (a skipped one did not).
    fn row_failed(row: &Self::Row) -> bool;
    /// Whether the rows were timed on the emulator.
    fn emulator(&self) -> bool;
    /// The report's JSON file as it stands.
    fn json(&self) -> String;
}

/// The heading's first lines: the family, device and commit (`extra` after them), and the
/// emulator's note.
fn family_heading(
    family: &str,
    device: &str,
    commit: Option<&str>,
    extra: &str,
    emulator: bool,
) -> Vec<String> {
    let mut lines = vec![format!(
        "bench {family} on {device}{}{extra}",
        commit_note(commit)
    )];
    if emulator {
        lines.push(format!(
            "{EMULATOR_NOTE}: every time below is the emulator's"
        ));
    }
    lines
}

/// Runs one benchmark family: `run` gets the progress callback that prints the report as it grows
/// (over the progress bar: `rows` expected, when known) and writes `--json`; `after` prints what
/// follows the table (fits, verdicts). The exit status counts the failed rows.
fn run_family<R: FamilyReport>(
    args: &BenchArgs,
    rows: Option<usize>,
    run: impl FnOnce(&mut dyn FnMut(&R)) -> Result<R>,
    after: impl FnOnce(&R),
) -> Result<ExitCode> {
    let bar = Progress::new(rows, "rows");
    let mut printed: Option<usize> = None;
    let mut json = JsonFile::new(args.json.as_deref());
    let mut progress = |report: &R| {
        let rows = report.rows();
        bar.println(|| {
            let from = *printed.get_or_insert_with(|| {
                for line in report.heading() {
                    println!("{line}");
                }
                0
            });
            for row in &rows[from..] {
                if report.emulator() {
                    println!("{row}  ({EMULATOR_NOTE})");
                } else {
                    println!("{row}");
                }
            }
            printed = Some(rows.len());
            json.write(&report.json());
        });
        bar.set_done(rows.len());
    };
    let report = run(&mut progress)?;
    bar.finish();
    after(&report);
    json.finish()?;
    let failed = report
        .rows()
        .iter()
        .filter(|&row| R::row_failed(row))
        .count();
    Ok(bench_status(failed))
}

impl FamilyReport for BenchReport {
    type Row = crate::bench::BenchRow;
    fn heading(&self) -> Vec<String> {
        let softcap = self
            .softcap
            .map_or(String::new(), |c| format!(", softcap {c}"));
        let extra = format!(", flash tiles {}{softcap}", self.flash_tiles.name());
        let mut lines = family_heading(
            self.family,
            &self.device,
            self.commit.as_deref(),
            &extra,
            self.emulator,
        );
        lines.push(self.ceiling.to_string());
        lines.push(table_header());
        lines
    }
    fn rows(&self) -> &[Self::Row] {
        &self.rows
    }
    fn emulator(&self) -> bool {
        self.emulator
    }
    fn json(&self) -> String {
        self.to_json()
    }
    fn row_failed(row: &Self::Row) -> bool {
        row.error.is_some()
    }
}

impl FamilyReport for DecodeReport {
    type Row = crate::bench::decode::DecodeRow;
    fn heading(&self) -> Vec<String> {
        let mut lines = family_heading(
            DecodeReport::FAMILY,
            &self.device,
            self.commit.as_deref(),
            "",
            self.emulator,
        );
        lines.push(self.copy.to_string());
        lines.push(format!(
            "KV budget {} a shape: larger shapes are skipped",
            crate::bench::decode::bytes_label(self.kv_budget_bytes)
        ));
        lines.push(crate::bench::decode::table_header());
        lines
    }
    fn rows(&self) -> &[Self::Row] {
        &self.rows
    }
    fn emulator(&self) -> bool {
        self.emulator
    }
    fn json(&self) -> String {
        self.to_json()
    }
    fn row_failed(row: &Self::Row) -> bool {
        row.error.is_some()
    }
}

impl FamilyReport for SparseReport {
    type Row = crate::bench::sparse::SparseRow;
    fn heading(&self) -> Vec<String> {
        let mut lines = family_heading(
            SparseReport::FAMILY,
            &self.device,
            self.commit.as_deref(),
            "",
            self.emulator,
        );
        if let Some(dir) = &self.mask_dir {
            lines.push(format!("block masks written to {dir}"));
        }
        lines.push(
            "TFLOP/s: 4 x visible pairs x head_dim / time; density: the share of the grid's \
             blocks visited (after the causal rule); /dense: time over the dense flash kernel's \
             on the same shape"
                .into(),
        );
        lines.push(crate::bench::sparse::table_header());
        lines
    }
    fn rows(&self) -> &[Self::Row] {
        &self.rows
    }
    fn emulator(&self) -> bool {
        self.emulator
    }
    fn json(&self) -> String {
        self.to_json()
    }
    fn row_failed(row: &Self::Row) -> bool {
        row.error.is_some()
    }
}

impl FamilyReport for LinearReport {
    type Row = crate::bench::linear::LinearRow;
    fn heading(&self) -> Vec<String> {
        let mut lines = family_heading(
            LinearReport::FAMILY,
            &self.device,
            self.commit.as_deref(),
            "",
            self.emulator,
        );
        lines.push(
            "causal, bf16, elu1 features; /flash: a linear row's time over the flash row's of the \
             same length"
                .into(),
        );
        lines.push(crate::bench::linear::table_header());
        lines
    }
    fn rows(&self) -> &[Self::Row] {
        &self.rows
    }
    fn emulator(&self) -> bool {
        self.emulator
    }
    fn json(&self) -> String {
        self.to_json()
    }
    fn row_failed(row: &Self::Row) -> bool {
        row.error.is_some()
    }
}

fn bench_prefill(args: &BenchArgs, commit: Option<String>) -> Result<ExitCode> {
    let config = BenchConfig {
        kernels: bench_kernels(&args.kernel),
        quick: args.quick,
        commit,
        head_dims: args.head_dim.clone(),
        flash_tiles: args.flash_tiles.unwrap_or(FlashTiles::Auto),
        softcap: args.softcap,
        shapes: args
            .shape
            .iter()
            .map(|&shape| PrefillShape {
                causal: args.causal,
                ..shape
            })
            .collect(),
        causal_only: args.causal,
    };
    let device = args.device.open()?;
    let rows = config.kernels.len() * crate::bench::select_shapes(&device, &config)?.len();
    run_family(
        args,
        Some(rows),
        |progress| crate::bench::run_prefill(&device, &config, progress),
        |_| {},
    )
}

fn bench_decode(args: &BenchArgs, commit: Option<String>) -> Result<ExitCode> {
    let config = DecodeConfig {
        quick: args.quick,
        commit,
    };
    let device = args.device.open()?;
    run_family(
        args,
        None,
        |progress| crate::bench::decode::run_decode(&device, &config, progress),
        |report: &DecodeReport| {
            for verdict in report.verdicts() {
                println!("target: {}", verdict.text);
            }
        },
    )
}

fn bench_sparse(args: &BenchArgs, commit: Option<String>) -> Result<ExitCode> {
    let config = SparseConfig {
        quick: args.quick,
        commit,
        mask_dir: args.mask_dir.clone(),
    };
    let device = args.device.open()?;
    run_family(
        args,
        None,
        |progress| crate::bench::sparse::run_sparse(&device, &config, progress),
        |report: &SparseReport| {
            if let Some(verdict) = report.verdict() {
                println!("target: {}", verdict.text);
            }
        },
    )
}

fn bench_linear(args: &BenchArgs, commit: Option<String>) -> Result<ExitCode> {
    let config = LinearBenchConfig {
        quick: args.quick,
        commit,
    };
    let device = args.device.open()?;
    run_family(
        args,
        None,
        |progress| crate::bench::linear::run_linear(&device, &config, progress),
        |report: &LinearReport| {
            for kernel in [LinearBenchKernel::Linear, LinearBenchKernel::Flash] {
                if let Some(fit) = report.fit(kernel) {
                    println!("fit: {}: {fit}", kernel.name());
                }
            }
            for verdict in report.verdicts() {
                println!("target: {}", verdict.text);
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_follow_the_table() {
        assert_eq!(failures_status(0), 0);
        assert_eq!(failures_status(1), 1);
        assert_eq!(failures_status(7), EXIT_FAILED);
        assert_eq!(exit_status(&Error::invalid("shape", "bad")), 2);
        for runtime in [
            Error::Cuda("no device".into()),
            Error::Unsupported("no CUDA kernels".into()),
            Error::LaunchFailed("launch".into()),
            Error::KernelFault("fault".into()),
            Error::Internal("bug".into()),
        ] {
            assert_eq!(exit_status(&runtime), EXIT_RUNTIME, "{runtime}");
        }
        for code in [
            "0  success",
            "1  a check failed",
            "2  usage error",
            "3  runtime error",
        ] {
            assert!(EXIT_STATUS_HELP.contains(code), "{code}");
        }
    }

    #[test]
    fn bench_kernels_come_in_their_order_once_each() {
        use BenchKernelArg::{All, One};
        assert_eq!(bench_kernels(&[]), [Kernel::DEFAULT]);
        assert_eq!(bench_kernels(&[All]), Kernel::ALL);
        assert_eq!(
            bench_kernels(&[One(Kernel::Flash), One(Kernel::Naive), One(Kernel::Flash)]),
            [Kernel::Naive, Kernel::Flash]
        );
        assert_eq!(bench_kernels(&[One(Kernel::Flash), All]), Kernel::ALL);
    }
}
