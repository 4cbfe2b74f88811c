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
        scale_log2: 0.125 * std::f32::consts::LOG2_E,
        softcap: 0.0,
        window_left: -1,
        window_right: -1,
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
        (Box::new(|p| p.scale_log2 = 1.0), "scale * log2(e)"),
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
