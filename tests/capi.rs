//! The C entry points: validation errors come back as status codes with a message in
//! cuattn_last_error(), never as a panic or a launch.

use cuattn::ffi::{self, cuattn_attention_params, cuattn_status};

mod common;

use common::last_error;

/// A well-formed params struct over (dangling but non-null) pointers: validation only.
fn params() -> cuattn_attention_params {
    let dangling = std::ptr::NonNull::<u8>::dangling().as_ptr().cast();
    cuattn_attention_params {
        q: dangling,
        k: dangling,
        v: dangling,
        out: dangling,
        maybe_lse: std::ptr::null_mut(),
        maybe_cu_seqlens_q: std::ptr::null(),
        maybe_cu_seqlens_k: std::ptr::null(),
        q_batch_stride: 4 * 8 * 64,
        q_row_stride: 8 * 64,
        q_head_stride: 64,
        k_batch_stride: 4 * 2 * 64,
        k_row_stride: 2 * 64,
        k_head_stride: 64,
        v_batch_stride: 4 * 2 * 64,
        v_row_stride: 2 * 64,
        v_head_stride: 64,
        out_batch_stride: 4 * 8 * 64,
        out_row_stride: 8 * 64,
        out_head_stride: 64,
        lse_batch_stride: 0,
        lse_head_stride: 0,
        batch: 1,
        heads: 8,
        kv_heads: 2,
        head_dim: 64,
        seqlen_q: 4,
        seqlen_k: 4,
        scale: 0.125,
        softcap: 0.0,
        window_left: -1,
        window_right: -1,
        flash_tiles: 0,
        dtype: ffi::cuattn_dtype::CUATTN_DTYPE_BF16,
    }
}

fn call(p: Option<&cuattn_attention_params>) -> cuattn_status {
    let ptr = p.map_or(std::ptr::null(), |p| p as *const _);
    // SAFETY: ptr is null or points to a live params struct; invalid params never launch.
    unsafe { cuattn::capi::cuattn_attention_naive(ptr, std::ptr::null_mut()) }
}

#[test]
fn invalid_params_return_status_and_message_naming_the_field() {
    assert_eq!(call(None), cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert!(last_error().contains("params"), "{}", last_error());

    type Breaks = Box<dyn Fn(&mut cuattn_attention_params)>;
    let cases: Vec<(Breaks, &str)> = vec![
        (Box::new(|p| p.q = std::ptr::null()), "`q`: null pointer"),
        (Box::new(|p| p.kv_heads = 3), "divide heads = 8"),
        (Box::new(|p| p.head_dim = 60), "multiple of 8"),
        (Box::new(|p| p.batch = 0), "`batch`"),
        (Box::new(|p| p.seqlen_k = 0), "`seqlen_k`"),
        (Box::new(|p| p.window_left = -7), "`window`"),
        (Box::new(|p| p.k_row_stride = -1), "`k_row_stride`"),
        (Box::new(|p| p.flash_tiles = 7), "`flash_tiles`"),
        (Box::new(|p| p.softcap = -2.0), "`softcap`"),
        (Box::new(|p| p.dtype = ffi::cuattn_dtype(9)), "`dtype`"),
        (
            Box::new(|p| p.maybe_cu_seqlens_q = std::ptr::NonNull::dangling().as_ptr()),
            "both set",
        ),
    ];
    for (breaks, needle) in cases {
        let mut p = params();
        breaks(&mut p);
        assert_eq!(call(Some(&p)), cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT);
        let msg = last_error();
        println!("{msg}");
        assert!(msg.contains(needle), "`{needle}` missing from: {msg}");
    }
}

#[test]
fn has_cuda_kernels_reports_the_build() {
    // The other witness of a CUDA build: ptxas's report on the flash kernels, embedded at build
    // time (empty without nvcc).
    let compiled = cuattn::build_info::kernel_resources(cuattn::build_info::PTXAS_REPORT)
        .iter()
        .any(|k| k.kernel.contains("flash_fwd_kernel"));
    assert_eq!(cuattn::capi::cuattn_has_cuda_kernels(), i32::from(compiled));
}

#[test]
fn valid_params_without_a_gpu_fail_cleanly() {
    if cuattn::probe_cuda().is_available() {
        println!("skipped: a CUDA device is present (the dangling pointers must not launch)");
        return;
    }
    let status = call(Some(&params()));
    let msg = last_error();
    println!("{status:?}: {msg}");
    assert!(
        status == cuattn_status::CUATTN_ERROR_UNSUPPORTED
            || status == cuattn_status::CUATTN_ERROR_LAUNCH_FAILED,
        "{status:?}: {msg}"
    );
    assert!(!msg.is_empty());
}

#[test]
fn flash_entry_point_rejects_misaligned_rows() {
    let mut p = params(); // dangling pointers at address 1: not 16-byte aligned
                          // SAFETY: p is a live params struct; invalid params never launch.
    let status = unsafe { cuattn::capi::cuattn_attention_flash(&p, std::ptr::null_mut()) };
    assert_eq!(status, cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert!(last_error().contains("16-byte aligned"), "{}", last_error());

    let aligned = std::ptr::without_provenance::<std::ffi::c_void>(256);
    (p.q, p.k, p.v, p.out) = (aligned, aligned, aligned, aligned.cast_mut());
    p.k_row_stride = 2 * 64 + 4;
    // SAFETY: as above.
    let status = unsafe { cuattn::capi::cuattn_attention_flash(&p, std::ptr::null_mut()) };
    assert_eq!(status, cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert!(last_error().contains("`k_row_stride`"), "{}", last_error());
}

#[test]
fn version_and_abi_version_are_the_crate_and_the_header() {
    // SAFETY: a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(cuattn::capi::cuattn_version()) };
    assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        cuattn::capi::cuattn_abi_version(),
        ffi::CUATTN_ABI_VERSION as i32
    );
    let header =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/csrc/cuattn.h")).unwrap();
    assert!(
        header.contains(&format!(
            "#define CUATTN_ABI_VERSION {}",
            ffi::CUATTN_ABI_VERSION
        )),
        "the bindings carry the header's ABI version"
    );
}

/// The validated entry points on `CUATTN_STREAM_EMULATOR` run the same kernels as the Rust API:
/// flash and naive through the C ABI equal `cuattn::attention` on the same tensors, bit for bit,
/// and the C planner agrees with `flash_plan`.
#[test]
fn emulator_stream_runs_the_validated_attention_entry_points() {
    use cuattn::{AttentionOptions, AttentionParams, Device, FlashTiles, Kernel, Tensor};
    use half::bf16;
    use rand::{Rng, SeedableRng};

    let device = Device::emulator();
    let (b, sq, sk, h, hk, d) = (2, 17, 29, 4, 2, 64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut random = |n: usize| -> Vec<bf16> {
        (0..n)
            .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)))
            .collect()
    };
    let q = Tensor::from_host(&device, &random(b * sq * h * d), &[b, sq, h, d]).unwrap();
    let k = Tensor::from_host(&device, &random(b * sk * hk * d), &[b, sk, hk, d]).unwrap();
    let v = Tensor::from_host(&device, &random(b * sk * hk * d), &[b, sk, hk, d]).unwrap();
    let opts = AttentionOptions {
        causal: true,
        softcap: Some(20.0),
        flash_tiles: FlashTiles::Compact,
        ..Default::default()
    };
    for kernel in [Kernel::Naive, Kernel::Flash] {
        let want = cuattn::attention(kernel, &q, &k, &v, &opts).unwrap().out;
        let out = Tensor::full(&device, &[b, sq, h, d], bf16::NAN).unwrap();
        let mut p = AttentionParams::dense_shape::<bf16>(q.shape(), k.shape(), &opts).unwrap();
        (p.q, p.k, p.v, p.out) = (
            q.raw_address().cast_const(),
            k.raw_address().cast_const(),
            v.raw_address().cast_const(),
            out.raw_address(),
        );
        let stride = |t: &Tensor<bf16>| {
            (
                t.strides()[0] as i64,
                t.strides()[1] as i64,
                t.strides()[2] as i64,
            )
        };
        (p.q_batch_stride, p.q_row_stride, p.q_head_stride) = stride(&q);
        (p.k_batch_stride, p.k_row_stride, p.k_head_stride) = stride(&k);
        (p.v_batch_stride, p.v_row_stride, p.v_head_stride) = stride(&v);
        (p.out_batch_stride, p.out_row_stride, p.out_head_stride) = stride(&out);
        let emu = cuattn::capi::STREAM_EMULATOR;
        // SAFETY: p points at live emulator tensors of the shapes it describes.
        let status = unsafe {
            match kernel {
                Kernel::Naive => cuattn::capi::cuattn_attention_naive(&p, emu),
                _ => cuattn::capi::cuattn_attention_flash(&p, emu),
            }
        };
        assert_eq!(
            status,
            cuattn_status::CUATTN_OK,
            "{kernel:?}: {}",
            last_error()
        );
        let (got, want) = (out.to_host().unwrap(), want.to_host().unwrap());
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{kernel:?}: the C entry point and the Rust API differ"
        );
        println!("{kernel:?}: b {b} sq {sq} sk {sk} h {h}/{hk} d {d}: equal");
    }

    let p = AttentionParams::dense_shape::<bf16>(q.shape(), k.shape(), &opts).unwrap();
    let mut plan: ffi::cuattn_flash_plan = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are live; the planner reads the shape fields.
    let status = unsafe {
        cuattn::capi::cuattn_plan_attention_flash(&p, cuattn::capi::STREAM_EMULATOR, &mut plan)
    };
    assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
    let rust = cuattn::flash_plan(&device, &p).unwrap();
    assert_eq!(
        (
            plan.head_dim_tile as usize,
            plan.block_rows as usize,
            plan.grid_x as usize
        ),
        (rust.head_dim_tile, rust.block_rows, rust.grid_x)
    );
    assert_eq!(rust.tiles, FlashTiles::Compact, "the params' table");
}

/// Every family entry point refuses null params (or a null out pointer) with
/// CUATTN_ERROR_INVALID_ARGUMENT and a message, on the emulator stream and on a GPU stream alike
/// (a build without CUDA kernels says so instead for the latter).
#[test]
fn family_entry_points_refuse_null_arguments_with_a_message() {
    use cuattn::capi;
    let emu = capi::STREAM_EMULATOR;

    // SAFETY (every call): null pointers, which each entry point refuses before reading.
    type Call = Box<dyn Fn(*mut std::ffi::c_void) -> cuattn_status>;
    let calls: Vec<(&str, Call)> = vec![
        (
            "kv_append",
            Box::new(|s| unsafe { capi::cuattn_kv_append(std::ptr::null(), s) }),
        ),
        (
            "kv_copy_pages",
            Box::new(|s| unsafe { capi::cuattn_kv_copy_pages(std::ptr::null(), s) }),
        ),
        (
            "paged_attention",
            Box::new(|s| unsafe { capi::cuattn_paged_attention(std::ptr::null(), s) }),
        ),
        (
            "merge_states",
            Box::new(|s| unsafe { capi::cuattn_merge_states(std::ptr::null(), s) }),
        ),
        (
            "block_sparse_attention",
            Box::new(|s| unsafe {
                capi::cuattn_block_sparse_attention(std::ptr::null(), std::ptr::null(), s)
            }),
        ),
        (
            "linear_attention",
            Box::new(|s| unsafe { capi::cuattn_linear_attention(std::ptr::null(), s) }),
        ),
        (
            "lowrank_projection",
            Box::new(|s| unsafe { capi::cuattn_lowrank_projection(std::ptr::null(), s) }),
        ),
    ];
    for (name, call) in &calls {
        assert_eq!(
            call(emu),
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "{name}"
        );
        let msg = last_error();
        println!("{name}: {msg}");
        assert!(msg.contains("null"), "{name}: {msg}");
        let on_gpu = call(std::ptr::null_mut());
        if cuattn::capi::cuattn_has_cuda_kernels() == 0 {
            assert_eq!(on_gpu, cuattn_status::CUATTN_ERROR_UNSUPPORTED, "{name}");
            assert!(
                last_error().contains("no CUDA kernels"),
                "{name}: {}",
                last_error()
            );
        } else {
            assert_eq!(
                on_gpu,
                cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
                "{name}"
            );
        }
    }
    // The planners.
    // SAFETY: null pointers, refused before any read.
    let statuses = unsafe {
        [
            capi::cuattn_plan_paged_attention(std::ptr::null(), 132, -1, std::ptr::null_mut()),
            capi::cuattn_plan_block_sparse_attention(
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null_mut(),
            ),
            capi::cuattn_plan_linear_attention(std::ptr::null(), std::ptr::null_mut()),
            capi::cuattn_plan_attention_flash(&params(), emu, std::ptr::null_mut()),
        ]
    };
    for status in statuses {
        assert_eq!(status, cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT);
    }
    assert!(last_error().contains("plan is null"), "{}", last_error());
}
