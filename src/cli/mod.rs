//! The `cuattn` command line: `info` (build and devices), `check` (every kernel against the f64
//! reference over a grid of shapes), `run` (one kernel on .npy tensors, dense, with `--paged`
//! over a paged KV cache, or block-sparse with `--pattern` or `--block-mask`), `bench` (prefill
//! against the mma.sync ceiling, decode over the paged KV cache against a device-to-device copy,
//! block-sparse and linear attention against the dense kernel), `kv-plan` (the size of a paged KV
//! cache for a model), `approx-report` (the approximations' errors against exact attention and
//! their costs).

mod approx_report;
mod kv_plan;
mod run;

mod progress;

use std::process::ExitCode;

use clap::builder::{PossibleValue, TypedValueParser, ValueParserFactory};
use clap::{Parser, Subcommand, ValueEnum};

use crate::attention::{FlashTiles, Kernel};
use crate::bench::decode::{DecodeConfig, DecodeReport};
use crate::bench::linear::{LinearBenchConfig, LinearBenchKernel, LinearReport};
use crate::bench::sparse::{SparseConfig, SparseReport};
use crate::bench::{table_header, BenchConfig, BenchReport, PrefillShape, EMULATOR_NOTE};
use crate::device::{probe_cuda, CudaProbe, Device};
use crate::error::{Error, Result};
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
    Info(InfoArgs),
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

/// Where a command runs: `--device auto|emu|gpu|gpu:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first GPU when one answers, otherwise the emulator.
    Auto,
    /// The CPU emulator.
    Emu,
    /// The GPU of this ordinal (`gpu` is `gpu:0`); an error when there is none.
    Gpu(usize),
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Emu => write!(f, "emu"),
            DeviceChoice::Gpu(ordinal) => write!(f, "gpu:{ordinal}"),
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<DeviceChoice, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "emu" => Ok(DeviceChoice::Emu),
            "gpu" => Ok(DeviceChoice::Gpu(0)),
            _ => match s.strip_prefix("gpu:") {
                Some(n) => n.parse().map(DeviceChoice::Gpu).map_err(|_| {
                    format!("`{n}` after gpu: is no GPU ordinal (0, 1, ...): expected gpu:N")
                }),
                None => Err(format!("expected auto, emu, gpu or gpu:N, not `{s}`")),
            },
        }
    }
}

/// clap's parser of `--device`: [`DeviceChoice`]'s `FromStr`, with its forms listed in `--help`.
#[derive(Clone, Copy, Debug)]
pub struct DeviceChoiceParser;

impl TypedValueParser for DeviceChoiceParser {
    type Value = DeviceChoice;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<DeviceChoice, clap::Error> {
        let text = clap::builder::StringValueParser::new().parse_ref(cmd, arg, value)?;
        text.parse().map_err(|why: String| {
            let arg = arg.map_or("--device".to_string(), |a| a.to_string());
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value '{text}' for '{arg}': {why}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            [
                PossibleValue::new("auto")
                    .help("The first GPU when one answers, else the emulator"),
                PossibleValue::new("emu").help("The CPU emulator"),
                PossibleValue::new("gpu").help("The first GPU (gpu:0)"),
                PossibleValue::new("gpu:N").help("The GPU of ordinal N"),
            ]
            .into_iter(),
        ))
    }
}

impl ValueParserFactory for DeviceChoice {
    type Parser = DeviceChoiceParser;

    fn value_parser() -> DeviceChoiceParser {
        DeviceChoiceParser
    }
}

/// What a [`DeviceChoice`] comes to on this machine with this build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceTarget {
    /// The CPU emulator.
    Emulator,
    /// The GPU of this ordinal.
    Gpu(usize),
}

impl DeviceChoice {
    /// Where the command runs, from the choice, what the driver reports (`probe`) and whether
    /// this build has CUDA kernels: the emulator for `emu`, and for `auto` without a GPU; a GPU
    /// for `gpu:N` and for `auto` with one. `Error::Cuda` for a GPU ordinal the driver does not
    /// report, naming it; `Error::Unsupported` for a GPU with a build that has no CUDA kernels
    /// (said once here, rather than by every launch).
    pub fn resolve(self, probe: &CudaProbe, cuda_kernels: bool) -> Result<DeviceTarget> {
        let ordinal = match (self, probe) {
            (DeviceChoice::Emu, _) | (DeviceChoice::Auto, CudaProbe::Unavailable(_)) => {
                return Ok(DeviceTarget::Emulator)
            }
            (DeviceChoice::Auto, CudaProbe::Available(_)) => 0,
            (DeviceChoice::Gpu(n), CudaProbe::Unavailable(why)) => {
                return Err(Error::Cuda(format!("--device gpu:{n}: no GPU ({why})")))
            }
            (DeviceChoice::Gpu(n), &CudaProbe::Available(count)) if n >= count => {
                return Err(Error::Cuda(format!(
                    "--device gpu:{n}: no GPU of ordinal {n}: the driver reports {count} \
                     (gpu:0{})",
                    if count > 1 {
                        format!(" to gpu:{}", count - 1)
                    } else {
                        String::new()
                    }
                )))
            }
            (DeviceChoice::Gpu(n), CudaProbe::Available(_)) => n,
        };
        if !cuda_kernels {
            return Err(Error::Unsupported(format!(
                "{} is a GPU, but this build of cuattn has no CUDA kernels (nvcc was not found \
                 when it was built), so no kernel can run on it: rebuild with a CUDA toolkit \
                 (scripts/install-cuda-toolchain.sh), or run on the emulator with --device emu",
                if self == DeviceChoice::Auto {
                    "--device auto found gpu:0, which".to_string()
                } else {
                    format!("--device gpu:{ordinal}")
                }
            )));
        }
        Ok(DeviceTarget::Gpu(ordinal))
    }

    /// Opens the device [`DeviceChoice::resolve`] picks on this machine with this build.
    pub fn open(self) -> Result<Device> {
        match self.resolve(&probe_cuda(), crate::build_info::HAS_CUDA_KERNELS)? {
            DeviceTarget::Emulator => Ok(Device::emulator()),
            // As before: a GPU that the driver lists but that cannot be opened leaves `auto` on
            // the emulator.
            DeviceTarget::Gpu(_) if self == DeviceChoice::Auto => Ok(Device::auto()),
            DeviceTarget::Gpu(ordinal) => Device::cuda(ordinal),
        }
    }
}

/// A dense attention kernel named on the command line (`--kernel`), by [`Kernel::name`]:
/// `naive`, `mma_simple` or `flash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelArg(pub Kernel);

impl ValueEnum for KernelArg {
    fn value_variants<'a>() -> &'a [KernelArg] {
        &[
            KernelArg(Kernel::Naive),
            KernelArg(Kernel::MmaSimple),
            KernelArg(Kernel::Flash),
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.name()))
    }
}

/// clap's parser of a `--kernel` that gives one [`Kernel`].
pub fn kernel_parser() -> impl TypedValueParser<Value = Kernel> {
    clap::builder::EnumValueParser::<KernelArg>::new().map(|k| k.0)
}

/// A value of `cuattn bench --kernel`: one kernel, or `all` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchKernelArg {
    /// Every kernel, in [`Kernel::ALL`]'s order.
    All,
    /// This kernel.
    One(Kernel),
}

impl ValueEnum for BenchKernelArg {
    fn value_variants<'a>() -> &'a [BenchKernelArg] {
        &[
            BenchKernelArg::All,
            BenchKernelArg::One(Kernel::Naive),
            BenchKernelArg::One(Kernel::MmaSimple),
            BenchKernelArg::One(Kernel::Flash),
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            BenchKernelArg::All => PossibleValue::new("all"),
            BenchKernelArg::One(kernel) => PossibleValue::new(kernel.name()),
        })
    }
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
        Command::Info(args) => info(&args),
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

#[derive(clap::Args)]
struct InfoArgs {
    /// Print one JSON object instead of text: version, devices, the build's kernels and tiles,
    /// and the GPU kernels' ptxas resources.
    #[arg(long)]
    json: bool,
}

/// What `cuattn info` reports.
struct Info {
    /// Each GPU the driver lists.
    gpus: Vec<GpuInfo>,
    /// Why there is no GPU; `None` when the driver lists one.
    no_gpu: Option<String>,
    /// The flash kernel's head-dim tiles in this build (cargo features).
    flash_head_dim_tiles: Vec<usize>,
    /// The GPU kernels' ptxas resources (empty without CUDA kernels).
    resources: Vec<crate::build_info::KernelResources>,
}

/// One GPU of `cuattn info`.
struct GpuInfo {
    ordinal: usize,
    /// The device's name, or why it could not be opened.
    name: std::result::Result<String, String>,
    /// `Ok` when flash's wide tile table runs on it, else why not.
    wide_tiles: std::result::Result<(), String>,
}

impl Info {
    fn gather() -> Info {
        let (gpus, no_gpu) = match probe_cuda() {
            CudaProbe::Available(n) => {
                let gpus = (0..n)
                    .map(|ordinal| match Device::cuda(ordinal) {
                        Ok(d) => GpuInfo {
                            ordinal,
                            name: Ok(d.name()),
                            wide_tiles: crate::attention::flash_wide_tiles(&d)
                                .map_err(|why| why.to_string()),
                        },
                        Err(e) => GpuInfo {
                            ordinal,
                            name: Err(e.to_string()),
                            wide_tiles: Err("the device could not be opened".into()),
                        },
                    })
                    .collect();
                (gpus, None)
            }
            CudaProbe::Unavailable(why) => (Vec::new(), Some(why)),
        };
        let flash_head_dim_tiles = [64, 96, 128, 192, 256]
            .into_iter()
            .filter(|&d| crate::attention::flash_head_dim_tile(d) == Some(d))
            .collect();
        Info {
            gpus,
            no_gpu,
            flash_head_dim_tiles,
            resources: crate::build_info::kernel_resources(crate::build_info::PTXAS_REPORT),
        }
    }
}

/// `cuattn info --json`: one JSON object (version, gpus, no_gpu, gpu_kernels_built, cuda_archs,
/// flash_head_dim_tiles, kernels, kernel_resources).
fn info_json(info: &Info) -> String {
    use crate::json::json_string;
    let strings = |items: &mut dyn Iterator<Item = &str>| {
        let items: Vec<String> = items.map(json_string).collect();
        format!("[{}]", items.join(","))
    };
    let opt = |s: Option<&str>| s.map_or("null".to_string(), json_string);
    let gpus: Vec<String> = info
        .gpus
        .iter()
        .map(|g| {
            format!(
                "{{\"ordinal\":{},\"name\":{},\"error\":{},\"flash_wide_tiles\":{},\
                 \"flash_wide_tiles_why_not\":{}}}",
                g.ordinal,
                opt(g.name.as_deref().ok()),
                opt(g.name.as_ref().err().map(String::as_str)),
                g.wide_tiles.is_ok(),
                opt(g.wide_tiles.as_ref().err().map(String::as_str)),
            )
        })
        .collect();
    let resources: Vec<String> = info
        .resources
        .iter()
        .map(|r| {
            format!(
                "{{\"kernel\":{},\"arch\":{},\"registers\":{},\"shared_bytes\":{},\
                 \"stack_frame_bytes\":{},\"spill_store_bytes\":{},\"spill_load_bytes\":{}}}",
                json_string(r.short_name()),
                json_string(&r.arch),
                r.registers,
                r.shared_bytes,
                r.stack_frame_bytes,
                r.spill_store_bytes,
                r.spill_load_bytes
            )
        })
        .collect();
    let tiles: Vec<String> = info
        .flash_head_dim_tiles
        .iter()
        .map(usize::to_string)
        .collect();
    format!(
        "{{\"version\":{},\"gpus\":[{}],\"no_gpu\":{},\"gpu_kernels_built\":{},\
         \"cuda_archs\":{},\"flash_head_dim_tiles\":[{}],\"kernels\":{},\
         \"kernel_resources\":[{}]}}",
        json_string(env!("CARGO_PKG_VERSION")),
        gpus.join(","),
        opt(info.no_gpu.as_deref()),
        crate::build_info::HAS_CUDA_KERNELS,
        strings(&mut crate::build_info::CUDA_ARCHS.iter().copied()),
        tiles.join(","),
        strings(&mut Kernel::ALL.iter().map(|k| k.name())),
        resources.join(",")
    )
}

fn info(args: &InfoArgs) -> Result<ExitCode> {
    let info = Info::gather();
    if args.json {
        println!("{}", info_json(&info));
        return Ok(ExitCode::SUCCESS);
    }
    println!("cuattn {}", env!("CARGO_PKG_VERSION"));
    for gpu in &info.gpus {
        match &gpu.name {
            Ok(name) => {
                println!("device: {name}");
                match &gpu.wide_tiles {
                    Ok(()) => println!(
                        "  flash tile tables: compact and wide (the GPU runs the sm_90a code)"
                    ),
                    Err(why) => println!("  flash tile tables: compact ({why})"),
                }
            }
            Err(e) => println!("device: gpu{} unusable: {e}", gpu.ordinal),
        }
    }
    if let Some(why) = &info.no_gpu {
        println!("device: no GPU ({why}); the emulator runs kernels");
    }
    let tiles: Vec<String> = info
        .flash_head_dim_tiles
        .iter()
        .map(usize::to_string)
        .collect();
    println!("flash head-dim tiles: {}", tiles.join(", "));
    if crate::build_info::HAS_CUDA_KERNELS {
        println!(
            "GPU kernels: built for {}",
            crate::build_info::CUDA_ARCHS.join(", ")
        );
        println!();
        println!(
            "{:<48} {:>7} {:>5} {:>7} {:>6} {:>7}",
            "kernel", "arch", "regs", "smem", "stack", "spills"
        );
        for r in &info.resources {
            println!(
                "{:<48} {:>7} {:>5} {:>7} {:>6} {:>7}",
                r.short_name(),
                r.arch,
                r.registers,
                r.shared_bytes,
                r.stack_frame_bytes,
                r.spill_store_bytes + r.spill_load_bytes
            );
        }
    } else {
        println!("GPU kernels: not built (nvcc was not found when cuattn was built)");
    }
    Ok(ExitCode::SUCCESS)
}

fn check(args: &CheckArgs) -> Result<ExitCode> {
    let selection = crate::check::CaseSelection {
        filter: args.filter.clone(),
        seed: args.seed,
    };
    // The selection is refused (a filter matching nothing) before a device is opened.
    let plan = crate::check::CheckPlan::new(&selection)?;
    let device = args.device.open()?;
    // The cases run on this thread, which is what the setting applies to.
    crate::attention::set_flash_tiles(args.flash_tiles);
    let options = crate::check::CheckOptions {
        traffic: args.traffic,
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
                self.error.get_or_insert(Error::Io {
                    path: path.display().to_string(),
                    msg: e.to_string(),
                });
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
    let bar = Progress::new(Some(rows), "rows");
    // Prints the heading once the ceiling is known, then each row as it comes, and rewrites the
    // JSON file each time.
    let mut printed: Option<usize> = None;
    let mut json = JsonFile::new(args.json.as_deref());
    let progress = |report: &BenchReport| {
        bar.println(|| {
            let from = *printed.get_or_insert_with(|| {
                let softcap = report
                    .softcap
                    .map_or(String::new(), |c| format!(", softcap {c}"));
                println!(
                    "bench {} on {}{}, flash tiles {}{softcap}",
                    report.family,
                    report.device,
                    commit_note(report.commit.as_deref()),
                    report.flash_tiles.name()
                );
                if report.emulator {
                    println!("{EMULATOR_NOTE}: every time below is the emulator's");
                }
                println!("{}", report.ceiling);
                println!("{}", table_header());
                0
            });
            for row in &report.rows[from..] {
                if report.emulator {
                    println!("{row}  ({EMULATOR_NOTE})");
                } else {
                    println!("{row}");
                }
            }
            printed = Some(report.rows.len());
            json.write(&report.to_json());
        });
        bar.set_done(report.rows.len());
    };
    let report = crate::bench::run_prefill(&device, &config, progress)?;
    bar.finish();
    json.finish()?;
    Ok(bench_status(
        report.rows.iter().filter(|r| r.error.is_some()).count(),
    ))
}

fn bench_decode(args: &BenchArgs, commit: Option<String>) -> Result<ExitCode> {
    let config = DecodeConfig {
        quick: args.quick,
        commit,
    };
    let device = args.device.open()?;
    let bar = Progress::new(None, "rows");
    let mut printed: Option<usize> = None;
    let mut json = JsonFile::new(args.json.as_deref());
    let progress = |report: &DecodeReport| {
        bar.println(|| {
            let from = *printed.get_or_insert_with(|| {
                println!(
                    "bench {} on {}{}",
                    DecodeReport::FAMILY,
                    report.device,
                    commit_note(report.commit.as_deref())
                );
                if report.emulator {
                    println!("{EMULATOR_NOTE}: every time below is the emulator's");
                }
                println!("{}", report.copy);
                println!(
                    "KV budget {} a shape: larger shapes are skipped",
                    crate::bench::decode::bytes_label(report.kv_budget_bytes)
                );
                println!("{}", crate::bench::decode::table_header());
                0
            });
            for row in &report.rows[from..] {
                if report.emulator {
                    println!("{row}  ({EMULATOR_NOTE})");
                } else {
                    println!("{row}");
                }
            }
            printed = Some(report.rows.len());
            json.write(&report.to_json());
        });
        bar.set_done(report.rows.len());
    };
    let report = crate::bench::decode::run_decode(&device, &config, progress)?;
    bar.finish();
    for verdict in report.verdicts() {
        println!("target: {}", verdict.text);
    }
    json.finish()?;
    Ok(bench_status(
        report.rows.iter().filter(|r| r.error.is_some()).count(),
    ))
}

fn bench_sparse(args: &BenchArgs, commit: Option<String>) -> Result<ExitCode> {
    let config = SparseConfig {
        quick: args.quick,
        commit,
        mask_dir: args.mask_dir.clone(),
    };
    let device = args.device.open()?;
    let bar = Progress::new(None, "rows");
    let mut printed: Option<usize> = None;
    let mut json = JsonFile::new(args.json.as_deref());
    let progress = |report: &SparseReport| {
        bar.println(|| {
            let from = *printed.get_or_insert_with(|| {
                println!(
                    "bench {} on {}{}",
                    SparseReport::FAMILY,
                    report.device,
                    commit_note(report.commit.as_deref())
                );
                if report.emulator {
                    println!("{EMULATOR_NOTE}: every time below is the emulator's");
                }
                if let Some(dir) = &report.mask_dir {
                    println!("block masks written to {dir}");
                }
                println!(
                    "TFLOP/s: 4 x visible pairs x head_dim / time; density: the share of the grid's \
                     blocks visited (after the causal rule); /dense: time over the dense flash \
                     kernel's on the same shape"
                );
                println!("{}", crate::bench::sparse::table_header());
                0
            });
            for row in &report.rows[from..] {
                if report.emulator {
                    println!("{row}  ({EMULATOR_NOTE})");
                } else {
                    println!("{row}");
                }
            }
            printed = Some(report.rows.len());
            json.write(&report.to_json());
        });
        bar.set_done(report.rows.len());
    };
    let report = crate::bench::sparse::run_sparse(&device, &config, progress)?;
    bar.finish();
    if let Some(verdict) = report.verdict() {
        println!("target: {}", verdict.text);
    }
    json.finish()?;
    Ok(bench_status(
        report.rows.iter().filter(|r| r.error.is_some()).count(),
    ))
}

fn bench_linear(args: &BenchArgs, commit: Option<String>) -> Result<ExitCode> {
    let config = LinearBenchConfig {
        quick: args.quick,
        commit,
    };
    let device = args.device.open()?;
    let bar = Progress::new(None, "rows");
    let mut printed: Option<usize> = None;
    let mut json = JsonFile::new(args.json.as_deref());
    let progress = |report: &LinearReport| {
        bar.println(|| {
            let from = *printed.get_or_insert_with(|| {
                println!(
                    "bench {} on {}{}",
                    LinearReport::FAMILY,
                    report.device,
                    commit_note(report.commit.as_deref())
                );
                if report.emulator {
                    println!("{EMULATOR_NOTE}: every time below is the emulator's");
                }
                println!(
                    "causal, bf16, elu1 features; /flash: a linear row's time over the flash row's of \
                     the same length"
                );
                println!("{}", crate::bench::linear::table_header());
                0
            });
            for row in &report.rows[from..] {
                if report.emulator {
                    println!("{row}  ({EMULATOR_NOTE})");
                } else {
                    println!("{row}");
                }
            }
            printed = Some(report.rows.len());
            json.write(&report.to_json());
        });
        bar.set_done(report.rows.len());
    };
    let report = crate::bench::linear::run_linear(&device, &config, progress)?;
    bar.finish();
    for kernel in [LinearBenchKernel::Linear, LinearBenchKernel::Flash] {
        if let Some(fit) = report.fit(kernel) {
            println!("fit: {}: {fit}", kernel.name());
        }
    }
    for verdict in report.verdicts() {
        println!("target: {}", verdict.text);
    }
    json.finish()?;
    Ok(bench_status(
        report.rows.iter().filter(|r| r.error.is_some()).count(),
    ))
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
    fn device_choices_parse_and_print_back() {
        for (text, choice) in [
            ("auto", DeviceChoice::Auto),
            ("emu", DeviceChoice::Emu),
            ("gpu", DeviceChoice::Gpu(0)),
            ("gpu:0", DeviceChoice::Gpu(0)),
            ("gpu:3", DeviceChoice::Gpu(3)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>(), Ok(choice), "{text}");
            assert_eq!(choice.to_string().parse::<DeviceChoice>(), Ok(choice));
        }
        for bad in [
            "", "cpu", "gpu:", "gpu:-1", "gpu:x", "gpu1", "GPU", "gpu:1:2",
        ] {
            let err = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(
                err.contains("gpu:N") || err.contains("ordinal"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn device_resolution_decides_emulator_gpu_or_a_runtime_error() {
        let none = CudaProbe::Unavailable("libcuda not found".into());
        let two = CudaProbe::Available(2);
        use DeviceChoice::{Auto, Emu, Gpu};
        use DeviceTarget::{Emulator, Gpu as OnGpu};
        // (choice, probe, build has CUDA kernels) -> target.
        for (choice, probe, kernels, want) in [
            (Emu, &none, false, Emulator),
            (Emu, &two, false, Emulator),
            (Emu, &two, true, Emulator),
            (Auto, &none, false, Emulator),
            (Auto, &none, true, Emulator),
            (Auto, &two, true, OnGpu(0)),
            (Gpu(0), &two, true, OnGpu(0)),
            (Gpu(1), &two, true, OnGpu(1)),
        ] {
            assert_eq!(choice.resolve(probe, kernels).unwrap(), want, "{choice}");
        }
        // A GPU with a build that has no CUDA kernels: one clear refusal, a runtime error.
        for choice in [Auto, Gpu(0), Gpu(1)] {
            let err = choice.resolve(&two, false).unwrap_err();
            let msg = err.to_string();
            assert_eq!(exit_status(&err), EXIT_RUNTIME, "{msg}");
            assert!(
                msg.contains("no CUDA kernels") && msg.contains("--device emu"),
                "{msg}"
            );
        }
        // An ordinal the driver does not report, and a GPU asked for where there is none.
        let err = Gpu(2).resolve(&two, true).unwrap_err();
        let msg = err.to_string();
        assert_eq!(exit_status(&err), EXIT_RUNTIME);
        assert!(
            msg.contains("gpu:2") && msg.contains("reports 2") && msg.contains("gpu:1"),
            "{msg}"
        );
        let err = Gpu(0).resolve(&none, true).unwrap_err();
        assert_eq!(exit_status(&err), EXIT_RUNTIME);
        assert!(err.to_string().contains("libcuda not found"), "{err}");
    }

    #[test]
    fn kernel_values_are_the_kernels_names() {
        let names = |values: Vec<Option<PossibleValue>>| -> Vec<String> {
            values
                .into_iter()
                .map(|v| v.unwrap().get_name().to_string())
                .collect()
        };
        let kernels: Vec<String> = Kernel::ALL.iter().map(|k| k.name().to_string()).collect();
        assert_eq!(kernels, ["naive", "mma_simple", "flash"]);
        let run = KernelArg::value_variants()
            .iter()
            .map(ValueEnum::to_possible_value)
            .collect();
        assert_eq!(names(run), kernels);
        let bench = BenchKernelArg::value_variants()
            .iter()
            .map(ValueEnum::to_possible_value)
            .collect();
        assert_eq!(
            names(bench),
            [&["all".to_string()], kernels.as_slice()].concat()
        );
        for (i, &kernel) in Kernel::ALL.iter().enumerate() {
            assert_eq!(KernelArg::value_variants()[i], KernelArg(kernel));
            assert_eq!(
                KernelArg::from_str(kernel.name(), false),
                Ok(KernelArg(kernel))
            );
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

    #[test]
    fn info_json_is_one_object_with_every_field() {
        let info = Info {
            gpus: vec![
                GpuInfo {
                    ordinal: 0,
                    name: Ok("gpu0 (NVIDIA \"H200\", sm_90)".into()),
                    wide_tiles: Ok(()),
                },
                GpuInfo {
                    ordinal: 1,
                    name: Err("out of memory".into()),
                    wide_tiles: Err("the device could not be opened".into()),
                },
            ],
            no_gpu: None,
            flash_head_dim_tiles: vec![64, 128],
            resources: Vec::new(),
        };
        let v: serde_json::Value = serde_json::from_str(&info_json(&info)).unwrap();
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["gpus"][0]["name"], "gpu0 (NVIDIA \"H200\", sm_90)");
        assert_eq!(v["gpus"][0]["flash_wide_tiles"], true);
        assert_eq!(v["gpus"][1]["name"], serde_json::Value::Null);
        assert_eq!(v["gpus"][1]["error"], "out of memory");
        assert_eq!(v["gpus"][1]["flash_wide_tiles"], false);
        assert_eq!(v["no_gpu"], serde_json::Value::Null);
        assert_eq!(v["flash_head_dim_tiles"], serde_json::json!([64, 128]));
        assert_eq!(
            v["kernels"],
            serde_json::json!(["naive", "mma_simple", "flash"])
        );
        assert_eq!(v["gpu_kernels_built"], crate::build_info::HAS_CUDA_KERNELS);
        assert!(v["cuda_archs"].is_array() && v["kernel_resources"].is_array());
    }

    #[test]
    fn info_plans_a_wide_launch_that_the_planner_accepts() {
        // The emulator runs as an sm_90 GPU running the sm_90a code: the wide table is there
        // whenever the build has a tile over 64, so a refusal here is a malformed problem.
        let built = [96, 128, 192, 256]
            .into_iter()
            .any(|d| crate::attention::flash_head_dim_tile(d).is_some_and(|t| t > 64));
        let wide = crate::attention::flash_wide_tiles(&Device::emulator());
        if built {
            assert!(wide.is_ok(), "{wide:?}");
        } else {
            assert!(wide
                .unwrap_err()
                .to_string()
                .contains("no head-dim tile over 64"));
        }
    }
}
