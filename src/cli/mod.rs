//! The `cuattn` command line: `info` (build and devices), `check` (every kernel against the f64
//! reference over a grid of shapes), `run` (one kernel on .npy tensors).

mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::device::{probe_cuda, CudaProbe, Device};
use crate::error::Result;

#[derive(Parser)]
#[command(
    name = "cuattn",
    version,
    about = "CUDA attention kernels, checked and benchmarked"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Version, devices found, GPU kernels built and their ptxas resources.
    Info,
    /// Runs every kernel family over a grid of shapes against the f64 reference.
    Check(CheckArgs),
    /// Runs one kernel on tensors from .npy files.
    #[command(subcommand)]
    Run(run::RunCommand),
}

/// Which device(s) to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// The GPU when one answers, otherwise the emulator.
    Auto,
    /// The CPU emulator.
    Emu,
    /// The first GPU (an error when there is none).
    Gpu,
}

impl DeviceChoice {
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Auto => Ok(Device::auto()),
            DeviceChoice::Emu => Ok(Device::emulator()),
            DeviceChoice::Gpu => Device::cuda(0),
        }
    }
}

#[derive(clap::Args)]
struct CheckArgs {
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Print one JSON object per case instead of a table.
    #[arg(long)]
    json: bool,
}

/// Entry point of the `cuattn` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::Check(args) => check(&args),
        Command::Run(cmd) => run::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn info() -> Result<ExitCode> {
    println!("cuattn {}", env!("CARGO_PKG_VERSION"));
    match probe_cuda() {
        CudaProbe::Available(n) => {
            for ordinal in 0..n {
                match Device::cuda(ordinal) {
                    Ok(d) => println!("device: {}", d.name()),
                    Err(e) => println!("device: gpu{ordinal} unusable: {e}"),
                }
            }
        }
        CudaProbe::Unavailable(why) => {
            println!("device: no GPU ({why}); the emulator runs kernels")
        }
    }
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
        for r in crate::build_info::kernel_resources(crate::build_info::PTXAS_REPORT) {
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
    let device = args.device.open()?;
    let report = crate::check::run_all(&device, |case| {
        if args.json {
            println!("{}", case.to_json());
        } else {
            println!("{case}");
        }
    })?;
    if !args.json {
        println!("{}", report.summary_line());
    }
    if report.failed > 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
