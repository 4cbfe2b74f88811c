//! Facts fixed when cuattn was built: whether the CUDA kernels are in, for which GPU
//! architectures, and ptxas's per-kernel resource report (registers, shared memory, spills).

/// True when nvcc compiled the GPU kernels into this build.
pub const HAS_CUDA_KERNELS: bool = cfg!(cuattn_cuda);

/// The GPU architectures the CUDA kernels were compiled for (SASS, plus compute_80 PTX).
pub const CUDA_ARCHS: &[&str] = if HAS_CUDA_KERNELS {
    &["sm_90a", "sm_80"]
} else {
    &[]
};

/// ptxas's `-v` output for every kernel, names demangled; empty without CUDA kernels.
pub const PTXAS_REPORT: &str = include_str!(concat!(env!("OUT_DIR"), "/ptxas_report.txt"));

/// The resources one compiled kernel uses on one architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelResources {
    /// The kernel's name, demangled.
    pub kernel: String,
    /// The architecture it was compiled for (`sm_80`, `sm_90a`).
    pub arch: String,
    /// Registers per thread.
    pub registers: u32,
    /// Static shared memory per block, in bytes.
    pub shared_bytes: u32,
    /// Stack frame per thread, in bytes.
    pub stack_frame_bytes: u32,
    /// Bytes spilled to local memory by stores, per thread.
    pub spill_store_bytes: u32,
    /// Bytes read back from spills, per thread.
    pub spill_load_bytes: u32,
}

impl KernelResources {
    /// The kernel's name without return type, anonymous namespace and parameter list.
    pub fn short_name(&self) -> &str {
        let name = self.kernel.strip_prefix("void ").unwrap_or(&self.kernel);
        let name = name.strip_prefix("(anonymous namespace)::").unwrap_or(name);
        // The parameter list starts at the first '(' after the template arguments.
        let mut depth = 0usize;
        for (i, c) in name.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => depth = depth.saturating_sub(1),
                '(' if depth == 0 => return &name[..i],
                _ => {}
            }
        }
        name
    }
}

/// Parses ptxas's report: "Compiling entry function 'K' for 'sm_XX'", then "N bytes stack
/// frame, N bytes spill stores, N bytes spill loads" and "Used N registers, ... N bytes smem".
pub fn kernel_resources(report: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    // Whether the last "Function properties for" named the current entry function (ptxas also
    // reports non-inlined device functions, whose stack lines must not be charged to it).
    let mut in_entry_properties = false;
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let (kernel, tail) = rest.split_once('\'').unwrap_or((rest, ""));
            let arch = tail.split('\'').nth(1).unwrap_or("?");
            out.push(KernelResources {
                kernel: kernel.to_string(),
                arch: arch.to_string(),
                registers: 0,
                shared_bytes: 0,
                stack_frame_bytes: 0,
                spill_store_bytes: 0,
                spill_load_bytes: 0,
            });
            in_entry_properties = false;
            continue;
        }
        let Some(entry) = out.last_mut() else {
            continue;
        };
        if let Some(name) = line.split("Function properties for ").nth(1) {
            in_entry_properties = name.trim() == entry.kernel;
        } else if line.contains("bytes stack frame") && in_entry_properties {
            entry.stack_frame_bytes = number_before(line, "bytes stack frame");
            entry.spill_store_bytes = number_before(line, "bytes spill stores");
            entry.spill_load_bytes = number_before(line, "bytes spill loads");
        } else if line.contains("Used") && line.contains("registers") {
            entry.registers = number_before(line, "registers");
            entry.shared_bytes = number_before(line, "bytes smem");
        }
    }
    out
}

/// The integer just before `label` in `line`, or 0.
fn number_before(line: &str, label: &str) -> u32 {
    line.split(label)
        .next()
        .filter(|head| head.len() < line.len())
        .and_then(|head| head.split([' ', ',']).rfind(|w| !w.is_empty()))
        .and_then(|w| w.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_ptxas_report() {
        let report = "\
ptxas info    : Compiling entry function 'k1' for 'sm_80'
ptxas info    : Function properties for k1
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 512 bytes smem, 400 bytes cmem[0]
ptxas info    : Function properties for helper
    16 bytes stack frame, 12 bytes spill stores, 12 bytes spill loads
ptxas info    : Compiling entry function 'k2' for 'sm_90a'
ptxas info    : Function properties for k2
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 128 registers, used 0 barriers, 400 bytes cmem[0]
";
        let got = kernel_resources(report);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            KernelResources {
                kernel: "k1".into(),
                arch: "sm_80".into(),
                registers: 40,
                shared_bytes: 512,
                stack_frame_bytes: 8,
                spill_store_bytes: 4,
                spill_load_bytes: 4,
            }
        );
        assert_eq!(
            (got[1].arch.as_str(), got[1].registers, got[1].shared_bytes),
            ("sm_90a", 128, 0)
        );
        assert_eq!(
            got[1].stack_frame_bytes, 0,
            "the helper's stack frame is not k2's"
        );
    }

    #[test]
    fn short_names_drop_return_type_namespace_and_parameters() {
        let k = KernelResources {
            kernel: "void (anonymous namespace)::attention_naive_kernel<__half>(cuattn_attention_params)".into(),
            arch: "sm_80".into(),
            registers: 0,
            shared_bytes: 0,
            stack_frame_bytes: 0,
            spill_store_bytes: 0,
            spill_load_bytes: 0,
        };
        assert_eq!(k.short_name(), "attention_naive_kernel<__half>");
    }
}
