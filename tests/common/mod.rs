//! Helpers shared by the integration tests: the devices to run on, running a group of check
//! cases with a printed row per case, and switching the emulator's memory checker.

// Each test binary uses its own part of these.
#![allow(dead_code)]

#[cfg(feature = "cli")]
use cuattn::check::{run_case_with, AttentionCase, CheckOptions};
#[cfg(feature = "cli")]
use cuattn::Kernel;
use cuattn::{probe_cuda, CudaProbe, Device};

/// The emulator always, plus the first GPU when one answers (otherwise says it is skipped).
pub fn devices() -> Vec<Device> {
    let mut devices = vec![Device::emulator()];
    match probe_cuda() {
        CudaProbe::Available(_) if cuattn::build_info::HAS_CUDA_KERNELS => {
            devices.push(Device::cuda(0).expect("a CUDA device answered the probe"))
        }
        CudaProbe::Available(_) => println!("skipped on GPU: this build has no CUDA kernels"),
        CudaProbe::Unavailable(why) => println!("skipped: no CUDA device ({why})"),
    }
    devices
}

/// Runs `cases` with `kernel` on every device, printing each row; fails listing every failure
/// (a case this build skips, a head dim without its flash tile, is printed, not failed). The
/// cases are the `cli` feature's check module's.
#[cfg(feature = "cli")]
pub fn assert_cases_pass(kernel: Kernel, cases: &[AttentionCase]) {
    assert_cases_pass_on(&devices(), kernel, cases);
}

/// `assert_cases_pass` on the given devices only.
#[cfg(feature = "cli")]
pub fn assert_cases_pass_on(devices: &[Device], kernel: Kernel, cases: &[AttentionCase]) {
    assert_cases_pass_with(devices, kernel, cases, &CheckOptions::default());
}

/// `assert_cases_pass_on` with check options (a forced flash tile table).
#[cfg(feature = "cli")]
pub fn assert_cases_pass_with(
    devices: &[Device],
    kernel: Kernel,
    cases: &[AttentionCase],
    options: &CheckOptions,
) {
    let mut failures = Vec::new();
    for device in devices {
        for case in cases {
            let result = run_case_with(device, kernel, case, options);
            println!("{result}");
            if result.failed() {
                failures.push(result.to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Turns the emulator's memory checker on or off for launches from this thread while it lives.
pub struct MemcheckSetting;

impl MemcheckSetting {
    pub fn new(enabled: bool) -> MemcheckSetting {
        // SAFETY: a per-thread setting; no preconditions.
        unsafe { cuattn::ffi::cuattn_emu_set_memcheck(i32::from(enabled)) };
        MemcheckSetting
    }
}

impl Drop for MemcheckSetting {
    fn drop(&mut self) {
        // SAFETY: as in `new`; -1 restores the default.
        unsafe { cuattn::ffi::cuattn_emu_set_memcheck(-1) };
    }
}

/// The message the last failing cuattn call on this thread left in `cuattn_last_error()`.
pub fn last_error() -> String {
    // SAFETY: cuattn_last_error returns a valid NUL-terminated thread-local string.
    unsafe { std::ffi::CStr::from_ptr(cuattn::ffi::cuattn_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Flash params of a problem's shape (batch 2, four query heads on two KV heads, as many keys as
/// queries), with null pointers: enough for `flash_plan`.
pub fn shape_params(
    seqlen_q: usize,
    head_dim: usize,
    window: (i32, i32),
) -> cuattn::AttentionParams {
    shape_params_tiled(seqlen_q, head_dim, window, cuattn::FlashTiles::Auto)
}

/// `shape_params` with flash's tile table forced to `tiles`.
pub fn shape_params_tiled(
    seqlen_q: usize,
    head_dim: usize,
    window: (i32, i32),
    tiles: cuattn::FlashTiles,
) -> cuattn::AttentionParams {
    let opts = cuattn::AttentionOptions {
        window: Some(window),
        flash_tiles: tiles,
        ..Default::default()
    };
    let (q, k) = ([2, seqlen_q, 4, head_dim], [2, seqlen_q, 2, head_dim]);
    cuattn::AttentionParams::dense_shape::<half::bf16>(&q, &k, &opts)
        .unwrap_or_else(|e| panic!("shape q {q:?}, k {k:?}: {e}"))
}

/// The mixed tolerance (atol = rtol) of outputs in `dtype` against the f64 reference: bf16 2e-2,
/// f16 1e-2.
pub fn tolerance(dtype: cuattn::DType) -> f64 {
    if dtype == cuattn::DType::BF16 {
        2e-2
    } else {
        1e-2
    }
}

/// `n` values uniform in [-1, 1).
pub fn random(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f64> {
    use rand::Rng;
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// `x` in element type T.
pub fn to_t<T: cuattn::Element>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::from_f64(v)).collect()
}

/// `x` rounded to element type T and back: the values a kernel in T sees.
pub fn rounded<T: cuattn::Element>(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| T::from_f64(v).to_f64()).collect()
}
