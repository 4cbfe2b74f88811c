//! Helpers shared by the integration tests: the devices to run on, running a group of check
//! cases with a printed row per case, and switching the emulator's memory checker.

use cuattn::check::{run_case, AttentionCase};
use cuattn::{probe_cuda, CudaProbe, Device, Kernel};

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
/// (a case this build skips, a head dim without its flash tile, is printed, not failed).
pub fn assert_cases_pass(kernel: Kernel, cases: &[AttentionCase]) {
    let mut failures = Vec::new();
    for device in devices() {
        for case in cases {
            let result = run_case(&device, kernel, case);
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
#[allow(dead_code)] // used by the emulator, memcheck and primitives tests
pub struct MemcheckSetting;

#[allow(dead_code)]
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
