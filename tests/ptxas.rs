//! Every CUDA kernel compiles without register spills or a stack frame, on every architecture
//! (ptxas's report, captured by build.rs). A spill is a silent slowdown; this makes it loud.

use cuattn::build_info::{kernel_resources, CUDA_ARCHS, HAS_CUDA_KERNELS, PTXAS_REPORT};

#[test]
fn no_cuda_kernel_spills_or_uses_a_stack_frame() {
    if !HAS_CUDA_KERNELS {
        println!("skipped: this build has no CUDA kernels (nvcc not found)");
        return;
    }
    let kernels = kernel_resources(PTXAS_REPORT);
    assert!(
        !kernels.is_empty(),
        "the ptxas report lists no kernel:\n{PTXAS_REPORT}"
    );
    for arch in CUDA_ARCHS {
        assert!(
            kernels
                .iter()
                .any(|k| k.arch == *arch && k.kernel.contains("attention_naive")),
            "attention_naive missing for {arch} in the ptxas report"
        );
    }
    let bad: Vec<String> = kernels
        .iter()
        .filter(|k| k.stack_frame_bytes > 0 || k.spill_store_bytes > 0 || k.spill_load_bytes > 0)
        .map(|k| format!("{k:?}"))
        .collect();
    for k in &kernels {
        println!(
            "{:<8} {:>4} regs {:>6} smem  {}",
            k.arch, k.registers, k.shared_bytes, k.kernel
        );
    }
    assert!(
        bad.is_empty(),
        "kernels with spills or a stack frame:\n{}",
        bad.join("\n")
    );
}
