//! Helpers shared by the integration tests: the devices to run on, and running a group of
//! check cases with a printed row per case.

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

/// Runs `cases` with `kernel` on every device, printing each row; fails listing every failure.
pub fn assert_cases_pass(kernel: Kernel, cases: &[AttentionCase]) {
    let mut failures = Vec::new();
    for device in devices() {
        for case in cases {
            let result = run_case(&device, kernel, case);
            println!("{result}");
            if !result.passed() {
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
