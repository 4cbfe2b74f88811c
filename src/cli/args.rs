//! The argument types the commands share: `--device` ([`DeviceChoice`], and where it resolves to
//! on this machine with this build) and `--kernel` ([`KernelArg`], [`BenchKernelArg`]).

use clap::builder::{PossibleValue, TypedValueParser, ValueParserFactory};
use clap::ValueEnum;

use crate::attention::Kernel;
use crate::device::{probe_cuda, CudaProbe, Device};
use crate::error::{Error, Result};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{exit_status, EXIT_RUNTIME};

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
}
