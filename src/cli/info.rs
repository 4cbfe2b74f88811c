//! `cuattn info`: the version, the GPUs found (and whether flash's wide tile table runs on
//! each), the flash head-dim tiles built, and the GPU kernels' ptxas resources; as text or, with
//! `--json`, one JSON object.

use std::process::ExitCode;

use crate::attention::Kernel;
use crate::device::{probe_cuda, CudaProbe, Device};
use crate::error::Result;

/// The flags of `cuattn info`.
#[derive(clap::Args)]
pub(super) struct InfoArgs {
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
    #[derive(serde::Serialize)]
    struct Gpu<'a> {
        ordinal: usize,
        name: Option<&'a str>,
        error: Option<&'a str>,
        flash_wide_tiles: bool,
        flash_wide_tiles_why_not: Option<&'a str>,
    }
    #[derive(serde::Serialize)]
    struct Resource<'a> {
        kernel: &'a str,
        arch: &'a str,
        registers: u32,
        shared_bytes: u32,
        stack_frame_bytes: u32,
        spill_store_bytes: u32,
        spill_load_bytes: u32,
    }
    #[derive(serde::Serialize)]
    struct InfoJson<'a> {
        version: &'a str,
        gpus: Vec<Gpu<'a>>,
        no_gpu: Option<&'a str>,
        gpu_kernels_built: bool,
        cuda_archs: &'a [&'a str],
        flash_head_dim_tiles: &'a [usize],
        kernels: Vec<&'a str>,
        kernel_resources: Vec<Resource<'a>>,
    }
    crate::json::to_line(&InfoJson {
        version: env!("CARGO_PKG_VERSION"),
        gpus: info
            .gpus
            .iter()
            .map(|g| Gpu {
                ordinal: g.ordinal,
                name: g.name.as_deref().ok(),
                error: g.name.as_ref().err().map(String::as_str),
                flash_wide_tiles: g.wide_tiles.is_ok(),
                flash_wide_tiles_why_not: g.wide_tiles.as_ref().err().map(String::as_str),
            })
            .collect(),
        no_gpu: info.no_gpu.as_deref(),
        gpu_kernels_built: crate::build_info::HAS_CUDA_KERNELS,
        cuda_archs: crate::build_info::CUDA_ARCHS,
        flash_head_dim_tiles: &info.flash_head_dim_tiles,
        kernels: Kernel::ALL.iter().map(|k| k.name()).collect(),
        kernel_resources: info
            .resources
            .iter()
            .map(|r| Resource {
                kernel: r.short_name(),
                arch: &r.arch,
                registers: r.registers,
                shared_bytes: r.shared_bytes,
                stack_frame_bytes: r.stack_frame_bytes,
                spill_store_bytes: r.spill_store_bytes,
                spill_load_bytes: r.spill_load_bytes,
            })
            .collect(),
    })
}

/// Runs `cuattn info`.
pub(super) fn info(args: &InfoArgs) -> Result<ExitCode> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
