//! Compiles every kernel in csrc/ twice: with nvcc for the GPU (when a CUDA toolkit is found) and
//! with the host C++ compiler for the CPU emulator (always), and records ptxas's resource report.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Kernel translation units, compiled by both builds. One file per family, and one per flash
/// instantiation, so the CUDA build parallelizes.
const KERNEL_SOURCES: &[&str] = &[
    "csrc/kernels/attention_naive.cu",
    "csrc/kernels/attention_mma_simple.cu",
    "csrc/kernels/flash_fwd.cu",
    "csrc/kernels/flash_fwd_bf16_hd64.cu",
    "csrc/kernels/flash_fwd_bf16_hd96.cu",
    "csrc/kernels/flash_fwd_bf16_hd128.cu",
    "csrc/kernels/flash_fwd_bf16_hd192.cu",
    "csrc/kernels/flash_fwd_bf16_hd256.cu",
    "csrc/kernels/flash_fwd_f16_hd64.cu",
    "csrc/kernels/flash_fwd_f16_hd96.cu",
    "csrc/kernels/flash_fwd_f16_hd128.cu",
    "csrc/kernels/flash_fwd_f16_hd192.cu",
    "csrc/kernels/flash_fwd_f16_hd256.cu",
    "csrc/kernels/kv_cache.cu",
    "csrc/kernels/paged_attention.cu",
    "csrc/kernels/paged_attention_hd64.cu",
    "csrc/kernels/paged_attention_hd96.cu",
    "csrc/kernels/paged_attention_hd128.cu",
    "csrc/kernels/paged_attention_hd192.cu",
    "csrc/kernels/paged_attention_hd256.cu",
    "csrc/kernels/block_sparse.cu",
    "csrc/kernels/block_sparse_hd64.cu",
    "csrc/kernels/block_sparse_hd96.cu",
    "csrc/kernels/block_sparse_hd128.cu",
    "csrc/kernels/block_sparse_hd192.cu",
    "csrc/kernels/block_sparse_hd256.cu",
    "csrc/kernels/linear_attention.cu",
    "csrc/kernels/lowrank_projection.cu",
    "csrc/kernels/bench_mma.cu",
    "csrc/kernels/memcheck_test.cu",
    "csrc/kernels/primitives_test.cu",
    "csrc/kernels/selftest.cu",
];

/// The flash kernels' head-dim tiles. Each is behind the cargo feature `hd<N>` (all on by
/// default): a build without it drops the tile's two translation units (bf16, f16) from both
/// builds, and head dims it would have served run in the next tile up that is built, if any.
const FLASH_HEAD_DIM_TILES: &[u32] = &[64, 96, 128, 192, 256];

/// The emulator's runtime and the host-only support code, compiled once by the host compiler.
const EMU_RUNTIME_SOURCES: &[&str] = &[
    "csrc/common/status.cpp",
    "csrc/emu/memcheck.cpp",
    "csrc/emu/runtime.cpp",
    "csrc/emu/traffic.cpp",
    "csrc/emu/fiber_x86_64.S",
];

/// The emulator build of the kernels calls the memory checker (csrc/emu/memcheck.cpp) at every
/// load, store and atomic: ThreadSanitizer's instrumentation (which tells reads from writes), the
/// checker standing in for its runtime. Function entry and exit are not reported; Clang must keep
/// a read that a write to the same place follows (a read of uninitialized memory).
const MEMCHECK_FLAGS_GCC: &[&str] = &[
    "-fsanitize=thread",
    "--param=tsan-instrument-func-entry-exit=0",
];
const MEMCHECK_FLAGS_CLANG: &[&str] = &[
    "-fsanitize=thread",
    "-mllvm",
    "-tsan-instrument-func-entry-exit=0",
    "-mllvm",
    "-tsan-instrument-read-before-write=1",
];

/// Headers every kernel may include: a change to any of them rebuilds everything.
const HEADER_DIRS: &[&str] = &["csrc/arch", "csrc/common", "csrc/emu", "csrc/kernels"];

/// GPU targets: sm_90a SASS for Hopper (and its wgmma/TMA paths to come), sm_80 SASS plus
/// compute_80 PTX for Ampere and anything newer. `-gencode`, not `-arch=sm_90a`, which would add a plain sm_90 pass.
const GENCODE: &[&str] = &[
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_80,code=[sm_80,compute_80]",
];

/// Whether the cargo feature of flash head-dim tile `tile` is on.
fn flash_tile_enabled(tile: u32) -> bool {
    env::var_os(format!("CARGO_FEATURE_HD{tile}")).is_some()
}

/// The kernel sources this build compiles: all but the flash tiles whose feature is off.
fn kernel_sources() -> Vec<&'static str> {
    KERNEL_SOURCES
        .iter()
        .copied()
        .filter(|src| {
            FLASH_HEAD_DIM_TILES
                .iter()
                .all(|&tile| flash_tile_enabled(tile) || !src.ends_with(&format!("_hd{tile}.cu")))
        })
        .collect()
}

/// -D definitions for every kernel translation unit: CUATTN_FLASH_HD<N> for each tile built, and
/// the tuning override, if any (`flash_tune_defines`).
fn kernel_defines() -> Vec<String> {
    let mut defines: Vec<String> = FLASH_HEAD_DIM_TILES
        .iter()
        .filter(|&&tile| flash_tile_enabled(tile))
        .map(|tile| format!("CUATTN_FLASH_HD{tile}"))
        .collect();
    defines.extend(flash_tune_defines());
    defines
}

/// For tuning runs only:
/// `CUATTN_FLASH_TUNE=<tile>:<m tiles>,<key tile>,<stages>[,<warps>[,<schedule>[,<fma exp2>
/// [,<paired>]]]]` (for example `128:2,64,2`; 4 warps, the plain schedule, no FMA exp2 and no
/// pairs unless given; schedule 0 is plain, 1 ping-pong (8 warps, at least 2 stages), 2 pipelined
/// (at least 3 stages); fma exp2, 0 to 4, the quarters of the scores whose exp2 runs on the FMA
/// pipe; paired 1: warps in pairs, each with half of a tile's keys and half of the head dim)
/// replaces one row of flash's traits table (csrc/kernels/flash_fwd.cuh) in this build. One macro
/// per value, since nvcc splits -D values at commas.
fn flash_tune_defines() -> Vec<String> {
    let Ok(spec) = env::var("CUATTN_FLASH_TUNE") else {
        return Vec::new();
    };
    let parsed = spec.split_once(':').and_then(|(tile, row)| {
        let tile: u32 = tile.trim().parse().ok()?;
        let row: Vec<u32> = row
            .split(',')
            .map(|v| v.trim().parse().ok())
            .collect::<Option<_>>()?;
        (FLASH_HEAD_DIM_TILES.contains(&tile)
            && (3..=7).contains(&row.len())
            && row.get(4).is_none_or(|&p| p <= 2)
            && row.get(5).is_none_or(|&q| q <= 4)
            && row.get(6).is_none_or(|&p| p <= 1))
        .then_some((tile, row))
    });
    let Some((tile, row)) = parsed else {
        panic!(
            "CUATTN_FLASH_TUNE={spec:?}: expected \
             <tile>:<m tiles>,<key tile>,<stages>[,<warps>[,<schedule>[,<fma exp2>[,<paired>]]]] \
             with a tile of {FLASH_HEAD_DIM_TILES:?}"
        );
    };
    println!(
        "cargo::warning=CUATTN_FLASH_TUNE: flash hd{tile} tuned to {row:?} (m tiles, key tile, \
         stages, warps, schedule, fma exp2, paired)"
    );
    vec![
        format!("CUATTN_FLASH_TUNE_HD={tile}"),
        format!("CUATTN_FLASH_TUNE_MTILES={}", row[0]),
        format!("CUATTN_FLASH_TUNE_BLOCKN={}", row[1]),
        format!("CUATTN_FLASH_TUNE_STAGES={}", row[2]),
        format!("CUATTN_FLASH_TUNE_WARPS={}", row.get(3).unwrap_or(&4)),
        format!("CUATTN_FLASH_TUNE_SCHEDULE={}", row.get(4).unwrap_or(&0)),
        format!("CUATTN_FLASH_TUNE_FMA_EXP2={}", row.get(5).unwrap_or(&0)),
        format!("CUATTN_FLASH_TUNE_PAIRED={}", row.get(6).unwrap_or(&0)),
    ]
}

/// What every kernel build of this run shares, worked out once: the sources and the -D
/// definitions (whose tuning override warns once).
struct Kernels {
    sources: Vec<&'static str>,
    defines: Vec<String>,
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let kernels = Kernels {
        sources: kernel_sources(),
        defines: kernel_defines(),
    };
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo::rustc-check-cfg=cfg(cuattn_cuda)");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUATTN_REQUIRE_CUDA",
        "CUATTN_FLASH_TUNE",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=csrc/cuattn.h");
    println!("cargo::rerun-if-changed=csrc/cuattn_internal.h");
    for src in KERNEL_SOURCES.iter().chain(EMU_RUNTIME_SOURCES) {
        println!("cargo::rerun-if-changed={src}");
    }
    for dir in HEADER_DIRS {
        // Cargo scans a directory for any change, so new headers count too.
        println!("cargo::rerun-if-changed={dir}");
    }

    let report = match find_nvcc(&manifest) {
        Some(nvcc) => {
            let report = build_cuda(&manifest, &nvcc, &kernels);
            println!("cargo::rustc-cfg=cuattn_cuda");
            report
        }
        None => {
            if env::var("CUATTN_REQUIRE_CUDA").is_ok_and(|v| v == "1") {
                panic!(
                    "CUATTN_REQUIRE_CUDA=1 but no nvcc was found (looked at $NVCC, \
                     $CUDA_HOME/bin, $CUDA_PATH/bin, PATH and .cuda/ from \
                     scripts/install-cuda-toolchain.sh)"
                );
            }
            println!(
                "cargo::warning=nvcc not found: building cuattn without GPU kernels (the CPU \
                 emulator is always built); scripts/install-cuda-toolchain.sh installs nvcc"
            );
            String::new()
        }
    };
    std::fs::write(out_dir.join("ptxas_report.txt"), report).unwrap();

    build_emulator(&manifest, &kernels);
}

/// The nvcc to use: `NVCC`, then `CUDA_HOME`/`CUDA_PATH`, then `PATH`, then the toolkit that
/// scripts/install-cuda-toolchain.sh puts in `.cuda/`.
fn find_nvcc(manifest: &Path) -> Option<PathBuf> {
    if let Some(nvcc) = env::var_os("NVCC") {
        return Some(PathBuf::from(nvcc));
    }
    let from_roots = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(env::var_os)
        .map(|root| PathBuf::from(root).join("bin/nvcc"));
    let from_path = env::var_os("PATH")
        .into_iter()
        .flat_map(|p| env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nvcc"));
    from_roots
        .chain(from_path)
        .chain(std::iter::once(manifest.join(".cuda/toolkit/bin/nvcc")))
        .find(|p| p.is_file())
}

/// Collects the stderr lines cc forwards from nvcc: ptxas's `-v` report among them.
#[derive(Default)]
struct StderrLines(Mutex<Vec<String>>);

impl cc::BuildMessageLogger for StderrLines {
    fn log(
        &self,
        kind: cc::BuildMessageKind,
        msg: cc::BuildMessage<'_>,
        _extra: &dyn std::any::Any,
    ) {
        if kind == cc::BuildMessageKind::StderrForwarding {
            self.0.lock().unwrap().push(msg.to_string());
        }
    }
}

/// Compiles each kernel file with nvcc into its own static library (one file per library keeps
/// nvcc out of relocatable-device-code mode) and links the static CUDA runtime. Returns the
/// ptxas report, kernel names demangled.
fn build_cuda(manifest: &Path, nvcc: &Path, kernels: &Kernels) -> String {
    // cc finds nvcc through this variable; build scripts run single-threaded here.
    env::set_var("NVCC", nvcc);
    let toolkit = nvcc
        .parent()
        .and_then(Path::parent)
        .expect("nvcc lives in <toolkit>/bin");
    let reports: Vec<String> = std::thread::scope(|scope| {
        let jobs: Vec<_> = kernels
            .sources
            .iter()
            .map(|&src| scope.spawn(move || compile_cuda_file(manifest, src, &kernels.defines)))
            .collect();
        jobs.into_iter()
            .map(|j| j.join().expect("nvcc job panicked"))
            .collect()
    });
    // Link order: the kernels, then the runtime they call.
    for src in &kernels.sources {
        println!("cargo::rustc-link-lib=static={}", cuda_lib_name(src));
    }
    let cudart_dir = ["lib", "lib64", "targets/x86_64-linux/lib"]
        .iter()
        .map(|d| toolkit.join(d))
        .find(|d| d.join("libcudart_static.a").is_file())
        .unwrap_or_else(|| panic!("libcudart_static.a not found under {}", toolkit.display()));
    println!("cargo::rustc-link-search=native={}", cudart_dir.display());
    println!("cargo::rustc-link-lib=static=cudart_static");
    for lib in ["dl", "rt", "pthread"] {
        println!("cargo::rustc-link-lib={lib}");
    }
    demangle(&reports.concat())
}

fn cuda_lib_name(src: &str) -> String {
    let stem = Path::new(src).file_stem().unwrap().to_str().unwrap();
    format!("cuattn_cuda_{stem}")
}

fn compile_cuda_file(manifest: &Path, src: &str, defines: &[String]) -> String {
    let lines = Arc::new(StderrLines::default());
    let mut build = cc::Build::new();
    build
        .cuda(true)
        .cudart("none")
        .cargo_warnings(false)
        // cc turns the profile's debug info into nvcc's -G, which disables device optimization.
        .debug(false)
        .message_logger(Some(lines.clone()))
        .include(manifest.join("csrc"))
        .file(manifest.join(src))
        .flag("-std=c++17")
        .flag("-O3")
        .flag("-Xptxas")
        .flag("-v");
    for gencode in GENCODE {
        build.flag(gencode);
    }
    for define in defines {
        build.define(define, None);
    }
    build.compile(&cuda_lib_name(src));
    let lines = lines.0.lock().unwrap();
    let mut report = String::new();
    for line in lines
        .iter()
        .filter(|l| l.contains("ptxas") || l.contains("bytes stack frame"))
    {
        writeln!(report, "{}", line.trim_end()).unwrap();
    }
    report
}

/// The same kernel sources as host C++ with -DCUATTN_EMU, plus the emulator runtime.
fn build_emulator(manifest: &Path, kernels: &Kernels) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .include(manifest.join("csrc"))
        .define("CUATTN_EMU", None)
        .flag("-std=c++17")
        .flag("-fno-strict-aliasing")
        .flag("-x")
        .flag("c++")
        // `#pragma unroll` is nvcc's; the host compiler unrolls (or not) on its own.
        .flag("-Wno-unknown-pragmas")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true);
    let memcheck_flags = if build.get_compiler().is_like_clang() {
        MEMCHECK_FLAGS_CLANG
    } else {
        MEMCHECK_FLAGS_GCC
    };
    for flag in memcheck_flags {
        build.flag(flag);
    }
    for define in &kernels.defines {
        build.define(define, None);
    }
    for src in &kernels.sources {
        build.file(manifest.join(src));
    }
    build.compile("cuattn_emu_kernels");

    let mut runtime = cc::Build::new();
    runtime
        .cpp(true)
        .include(manifest.join("csrc"))
        .define("CUATTN_EMU", None)
        .flag("-std=c++17")
        .flag("-fno-strict-aliasing")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true);
    for src in EMU_RUNTIME_SOURCES {
        runtime.file(manifest.join(src));
    }
    runtime.compile("cuattn_emu_runtime");
    println!("cargo::rustc-link-lib=pthread");
}

/// Rewrites mangled kernel names in the ptxas report with c++filt when it is installed.
fn demangle(report: &str) -> String {
    let Ok(mut child) = Command::new("c++filt")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    else {
        return report.to_string();
    };
    // The report goes in on its own thread while this one reads the output: written whole first,
    // a report larger than the pipe's buffer would block both processes on full pipes.
    let mut stdin = child.stdin.take().unwrap();
    let input = report.to_string();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(input.as_bytes())
    });
    let output = child.wait_with_output();
    let written = writer.join().map(|r| r.is_ok()).unwrap_or(false);
    match output {
        Ok(out) if out.status.success() && written => {
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
        _ => report.to_string(),
    }
}
