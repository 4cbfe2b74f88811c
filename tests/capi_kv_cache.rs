//! The paged KV cache through its C entry points, on the emulator: a step loop (create, add,
//! reserve, append from raw pointers, view, fork, truncate, free, stats, destroy), prefix hits,
//! and bad calls returning status codes with messages naming the argument.

mod common;

use common::last_error;
use cuattn::ffi::{self, cuattn_status};

const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 8;
const ROW: usize = KV_HEADS * HEAD_DIM;

fn config(page_size: i32, num_pages: i64) -> ffi::cuattn_kv_cache_config {
    ffi::cuattn_kv_cache_config {
        num_layers: 2,
        kv_heads: KV_HEADS as i32,
        head_dim: HEAD_DIM as i32,
        page_size,
        num_pages,
        dtype: ffi::cuattn_dtype::CUATTN_DTYPE_F16,
        layout: ffi::cuattn_kv_layout::CUATTN_KV_LAYOUT_HND,
    }
}

/// Host memory registered with the emulator's checker, as a C caller on the emulator provides.
struct Registered(Vec<u16>);

impl Registered {
    fn new(data: Vec<u16>) -> Registered {
        // SAFETY: the vector's memory stays put until drop unregisters it.
        let status = unsafe {
            ffi::cuattn_emu_register_allocation(
                data.as_ptr().cast(),
                (data.len() * 2) as u64,
                c"rows".as_ptr(),
            )
        };
        assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
        Registered(data)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // SAFETY: registered in new.
        unsafe { ffi::cuattn_emu_unregister_allocation(self.0.as_ptr().cast()) };
    }
}

fn create(cfg: &ffi::cuattn_kv_cache_config) -> *mut ffi::cuattn_kv_cache {
    let mut cache = std::ptr::null_mut();
    // SAFETY: valid config and output pointers.
    let status = unsafe {
        ffi_kv::cuattn_kv_cache_create(
            cfg,
            ffi::CUATTN_DEVICE_EMULATOR,
            std::ptr::null_mut(),
            &mut cache,
        )
    };
    assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
    cache
}

use cuattn::capi as ffi_kv;

/// A call refused with `code`, its message naming `needle`.
fn refused(status: cuattn_status, code: cuattn_status, needle: &str) {
    assert_eq!(status, code, "{}", last_error());
    assert!(
        last_error().contains(needle),
        "expected {needle:?} in: {}",
        last_error()
    );
}

#[test]
fn a_step_loop_through_the_c_api_writes_and_reads_back() {
    let cache = create(&config(3, 16));
    let mut a = 0u64;
    // SAFETY (this block's calls): a live handle and valid pointers throughout.
    unsafe {
        assert_eq!(
            ffi_kv::cuattn_kv_cache_add_sequence(cache, &mut a),
            cuattn_status::CUATTN_OK
        );
        let mut step: ffi::cuattn_kv_step = std::mem::zeroed();
        let seqs = [a];
        let counts = [5i32];
        let status = ffi_kv::cuattn_kv_cache_reserve(
            cache,
            seqs.as_ptr(),
            counts.as_ptr(),
            std::ptr::null(),
            1,
            &mut step,
        );
        assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
        assert_eq!(
            (step.batch, step.num_tokens, step.max_pages_per_seq),
            (1, 5, 2)
        );
        // The tables are host memory on the emulator: cu_seqlens and the slots as planned.
        assert_eq!(std::slice::from_raw_parts(step.cu_seqlens, 2), &[0, 5]);
        assert_eq!(
            std::slice::from_raw_parts(step.slot_mapping, 5),
            &[0, 1, 2, 3, 4]
        );
        // Rows with a padded row stride of ROW + 8.
        let stride = ROW + 8;
        let k = Registered::new((0..5 * stride).map(|i| 0x3c00 + i as u16).collect());
        let v = Registered::new((0..5 * stride).map(|i| 0x4000 + i as u16).collect());
        for layer in 0..2 {
            let status = ffi_kv::cuattn_kv_cache_append(
                cache,
                layer,
                &step,
                k.0.as_ptr().cast(),
                stride as i64,
                HEAD_DIM as i64,
                v.0.as_ptr().cast(),
                stride as i64,
                HEAD_DIM as i64,
            );
            assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
        }
        let mut view: ffi::cuattn_paged_kv_view = std::mem::zeroed();
        assert_eq!(
            ffi_kv::cuattn_kv_cache_view(cache, 1, &step, &mut view),
            cuattn_status::CUATTN_OK
        );
        assert_eq!(
            (view.k_slot_stride, view.k_head_stride),
            (HEAD_DIM as i64, 3 * HEAD_DIM as i64)
        );
        // Token 4 is slot 1 of page 1; HND puts head h at h * page_size * head_dim.
        for h in 0..KV_HEADS {
            for d in 0..HEAD_DIM {
                let at = view.k_page_stride as usize + HEAD_DIM + h * 3 * HEAD_DIM + d;
                let got = *view.v_pages.cast::<u16>().add(at);
                assert_eq!(got, 0x4000 + (4 * stride + h * HEAD_DIM + d) as u16);
            }
        }

        // A fork writing into the shared partly filled page copies it.
        let mut b = 0u64;
        assert_eq!(
            ffi_kv::cuattn_kv_cache_fork(cache, a, &mut b),
            cuattn_status::CUATTN_OK
        );
        let status = ffi_kv::cuattn_kv_cache_reserve(
            cache,
            [b].as_ptr(),
            [1].as_ptr(),
            std::ptr::null(),
            1,
            &mut step,
        );
        assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
        assert_eq!(step.num_copied_pages, 1);

        let mut stats: ffi::cuattn_kv_cache_stats = std::mem::zeroed();
        assert_eq!(
            ffi_kv::cuattn_kv_cache_get_stats(cache, &mut stats),
            cuattn_status::CUATTN_OK
        );
        assert_eq!(
            (stats.pages_total, stats.pages_free, stats.pages_shared),
            (16, 13, 1)
        );
        assert_eq!((stats.sequences, stats.tokens), (2, 11));
        assert_eq!(stats.bytes_per_page, (2 * 2 * ROW * 3 * 2) as i64);

        assert_eq!(
            ffi_kv::cuattn_kv_cache_truncate(cache, b, 2),
            cuattn_status::CUATTN_OK
        );
        let mut len = 0i64;
        assert_eq!(
            ffi_kv::cuattn_kv_cache_sequence_length(cache, b, &mut len),
            cuattn_status::CUATTN_OK
        );
        assert_eq!(len, 2);
        assert_eq!(
            ffi_kv::cuattn_kv_cache_free(cache, b),
            cuattn_status::CUATTN_OK
        );
        assert_eq!(
            ffi_kv::cuattn_kv_cache_free(cache, a),
            cuattn_status::CUATTN_OK
        );
        ffi_kv::cuattn_kv_cache_destroy(cache);
        ffi_kv::cuattn_kv_cache_destroy(std::ptr::null_mut());
    }
}

#[test]
fn prefix_hits_and_token_ids_through_the_c_api() {
    let cache = create(&config(4, 16));
    let prompt: Vec<i32> = (0..10).collect();
    // SAFETY: a live handle and valid pointers throughout.
    unsafe {
        let (mut a, mut cached) = (0u64, -1i64);
        let status = ffi_kv::cuattn_kv_cache_add_sequence_with_prefix(
            cache,
            prompt.as_ptr(),
            10,
            &mut a,
            &mut cached,
        );
        assert_eq!((status, cached), (cuattn_status::CUATTN_OK, 0));
        let mut step: ffi::cuattn_kv_step = std::mem::zeroed();
        let status = ffi_kv::cuattn_kv_cache_reserve(
            cache,
            [a].as_ptr(),
            [10].as_ptr(),
            prompt.as_ptr(),
            1,
            &mut step,
        );
        assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
        let mut b = 0u64;
        let status = ffi_kv::cuattn_kv_cache_add_sequence_with_prefix(
            cache,
            prompt.as_ptr(),
            9,
            &mut b,
            &mut cached,
        );
        assert_eq!(
            (status, cached),
            (cuattn_status::CUATTN_OK, 8),
            "two whole pages shared"
        );
        let bad = [-3i32, 1, 2];
        let status = ffi_kv::cuattn_kv_cache_add_sequence_with_prefix(
            cache,
            bad.as_ptr(),
            3,
            &mut b,
            &mut cached,
        );
        refused(
            status,
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "token_ids",
        );
        ffi_kv::cuattn_kv_cache_destroy(cache);
    }
}

#[test]
fn bad_calls_return_status_codes_naming_the_argument() {
    let mut cache = std::ptr::null_mut();
    // SAFETY: valid or null pointers, as each case says.
    unsafe {
        let status = ffi_kv::cuattn_kv_cache_create(
            &config(0, 8),
            ffi::CUATTN_DEVICE_EMULATOR,
            std::ptr::null_mut(),
            &mut cache,
        );
        refused(
            status,
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "page_size",
        );
        assert!(cache.is_null());
        let status =
            ffi_kv::cuattn_kv_cache_create(&config(4, 8), -7, std::ptr::null_mut(), &mut cache);
        refused(
            status,
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "device",
        );
        let status =
            ffi_kv::cuattn_kv_cache_create(std::ptr::null(), -1, std::ptr::null_mut(), &mut cache);
        refused(
            status,
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "config",
        );
        let status = ffi_kv::cuattn_kv_cache_create_with_budget(
            &config(4, 0),
            10,
            -1,
            std::ptr::null_mut(),
            &mut cache,
        );
        refused(
            status,
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "smaller than one page",
        );

        let cache = create(&config(4, 2));
        let mut a = 0u64;
        ffi_kv::cuattn_kv_cache_add_sequence(cache, &mut a);
        let mut step: ffi::cuattn_kv_step = std::mem::zeroed();
        let status = ffi_kv::cuattn_kv_cache_reserve(
            cache,
            [a].as_ptr(),
            [9].as_ptr(),
            std::ptr::null(),
            1,
            &mut step,
        );
        refused(
            status,
            cuattn_status::CUATTN_ERROR_OUT_OF_PAGES,
            "needs 3 page(s), 2 are free",
        );
        let status = ffi_kv::cuattn_kv_cache_reserve(
            cache,
            [a + 5].as_ptr(),
            [1].as_ptr(),
            std::ptr::null(),
            1,
            &mut step,
        );
        refused(
            status,
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "not in the cache",
        );
        let status = ffi_kv::cuattn_kv_cache_reserve(
            cache,
            [a].as_ptr(),
            [-1].as_ptr(),
            std::ptr::null(),
            1,
            &mut step,
        );
        refused(
            status,
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "new_tokens",
        );
        let status = ffi_kv::cuattn_kv_cache_reserve(
            cache,
            [a].as_ptr(),
            [2].as_ptr(),
            std::ptr::null(),
            1,
            &mut step,
        );
        assert_eq!(status, cuattn_status::CUATTN_OK);
        // A step number that is not the latest, and null rows.
        let stale = ffi::cuattn_kv_step {
            step: step.step + 1,
            ..step
        };
        let status = ffi_kv::cuattn_kv_cache_append(
            cache,
            0,
            &stale,
            std::ptr::null(),
            16,
            8,
            std::ptr::null(),
            16,
            8,
        );
        refused(status, cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT, "plan");
        let status = ffi_kv::cuattn_kv_cache_append(
            cache,
            0,
            &step,
            std::ptr::null(),
            16,
            8,
            std::ptr::null(),
            16,
            8,
        );
        refused(
            status,
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "k_new",
        );
        let status = ffi_kv::cuattn_kv_cache_append(
            cache,
            2,
            &step,
            std::ptr::null(),
            16,
            8,
            std::ptr::null(),
            16,
            8,
        );
        refused(
            status,
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "layer",
        );
        refused(
            ffi_kv::cuattn_kv_cache_truncate(cache, a, 3),
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "new_len",
        );
        refused(
            ffi_kv::cuattn_kv_cache_add_sequence(std::ptr::null_mut(), &mut a),
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "cache",
        );
        ffi_kv::cuattn_kv_cache_destroy(cache);
    }
}

/// Attention over a step of the cache through the C API: cuattn_kv_cache_attention, and the raw
/// path an engine with its own tables takes (view, plan, workspace, launch), both against the
/// f64 reference, plus refused calls.
#[test]
fn paged_attention_through_the_c_api_matches_the_reference() {
    use cuattn::reference::{self, AttentionProblem};
    use cuattn::{Device, Tensor};
    use half::f16;

    const HEADS: usize = 4;
    let device = Device::emulator();
    let cache = create(&config(3, 16));
    let lens = [5usize, 3];
    let value = |i: usize, salt: usize| ((i * 37 + salt * 11) % 17) as f64 / 8.0 - 1.0;
    // SAFETY (this block's calls): a live handle and valid pointers throughout; q, out and the
    // LSE are emulator tensors (registered, 16-byte aligned) alive across the calls.
    unsafe {
        let mut seqs = [0u64; 2];
        for s in &mut seqs {
            assert_eq!(
                ffi_kv::cuattn_kv_cache_add_sequence(cache, s),
                cuattn_status::CUATTN_OK
            );
        }
        let counts = lens.map(|n| n as i32);
        let mut step: ffi::cuattn_kv_step = std::mem::zeroed();
        let status = ffi_kv::cuattn_kv_cache_reserve(
            cache,
            seqs.as_ptr(),
            counts.as_ptr(),
            std::ptr::null(),
            2,
            &mut step,
        );
        assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
        let tokens = lens.iter().sum::<usize>();
        let k: Vec<f64> = (0..tokens * ROW).map(|i| value(i, 1)).collect();
        let v: Vec<f64> = (0..tokens * ROW).map(|i| value(i, 2)).collect();
        let q: Vec<f64> = (0..tokens * HEADS * HEAD_DIM)
            .map(|i| value(i, 3))
            .collect();
        let half = |x: &[f64]| x.iter().map(|&x| f16::from_f64(x)).collect::<Vec<_>>();
        let kt = Tensor::from_host(&device, &half(&k), &[tokens, KV_HEADS, HEAD_DIM]).unwrap();
        let vt = Tensor::from_host(&device, &half(&v), &[tokens, KV_HEADS, HEAD_DIM]).unwrap();
        let qt = Tensor::from_host(&device, &half(&q), &[tokens, HEADS, HEAD_DIM]).unwrap();
        let out = Tensor::full(&device, &[tokens, HEADS, HEAD_DIM], f16::NAN).unwrap();
        let lse = Tensor::full(&device, &[tokens, HEADS], f32::NAN).unwrap();
        let status = ffi_kv::cuattn_kv_cache_append(
            cache,
            0,
            &step,
            kt.raw_address(),
            ROW as i64,
            HEAD_DIM as i64,
            vt.raw_address(),
            ROW as i64,
            HEAD_DIM as i64,
        );
        assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
        let options = ffi::cuattn_paged_options {
            heads: HEADS as i32,
            scale: 0.0,
            softcap: 0.0,
            window_left: -1,
            window_right: 0,
            split_kv: -1,
        };
        let row = (HEADS * HEAD_DIM) as i64;
        let attend = |options: &ffi::cuattn_paged_options, q_ptr: *const std::ffi::c_void| {
            ffi_kv::cuattn_kv_cache_attention(
                cache,
                0,
                &step,
                q_ptr,
                row,
                HEAD_DIM as i64,
                out.raw_address(),
                row,
                HEAD_DIM as i64,
                lse.raw_address().cast(),
                options,
            )
        };
        let status = attend(&options, qt.raw_address());
        assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
        // The reference, sequence by sequence (every token is new: causal over the sequence).
        let (mut want_out, mut want_lse) = (Vec::new(), Vec::new());
        let mut first = 0;
        for &n in &lens {
            let mut p = AttentionProblem::new(1, n, n, HEADS, KV_HEADS, HEAD_DIM);
            p.window_right = 0;
            let rounded = |x: &[f64], width| {
                x[first * width..(first + n) * width]
                    .iter()
                    .map(|&x| f16::from_f64(x).to_f64())
                    .collect::<Vec<_>>()
            };
            let r = reference::attention(
                &p,
                &rounded(&q, HEADS * HEAD_DIM),
                &rounded(&k, ROW),
                &rounded(&v, ROW),
            );
            want_out.extend(r.out);
            for t in 0..n {
                want_lse.extend((0..HEADS).map(|h| r.lse[h * n + t]));
            }
            first += n;
        }
        let got = |t: &Tensor<f16>| {
            t.to_host()
                .unwrap()
                .iter()
                .map(|x| x.to_f64())
                .collect::<Vec<_>>()
        };
        let got_lse = |t: &Tensor<f32>| {
            t.to_host()
                .unwrap()
                .iter()
                .map(|&x| x as f64)
                .collect::<Vec<_>>()
        };
        reference::compare(&got(&out), &want_out, 1e-2, 1e-2).unwrap();
        reference::compare(&got_lse(&lse), &want_lse, 1e-3, 1e-3).unwrap();

        // The lower-level entry points: the view, a plan forcing two splits, a workspace, the
        // launch on the emulator stream.
        let mut view: ffi::cuattn_paged_kv_view = std::mem::zeroed();
        let status = ffi_kv::cuattn_kv_cache_view(cache, 0, &step, &mut view);
        assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
        let out2 = Tensor::full(&device, &[tokens, HEADS, HEAD_DIM], f16::NAN).unwrap();
        let mut params: ffi::cuattn_paged_attention_params = std::mem::zeroed();
        params.kv = view;
        params.q = qt.raw_address();
        params.out = out2.raw_address();
        params.cu_seqlens_q = step.cu_seqlens;
        params.q_row_stride = row;
        params.q_head_stride = HEAD_DIM as i64;
        params.out_row_stride = row;
        params.out_head_stride = HEAD_DIM as i64;
        params.heads = HEADS as i32;
        params.total_q = tokens as i32;
        params.max_q_len = 5;
        params.max_seq_len = 5;
        params.scale = 1.0 / (HEAD_DIM as f32).sqrt();
        params.window_left = -1;
        params.window_right = 0;
        let mut plan: ffi::cuattn_paged_plan = std::mem::zeroed();
        let status = cuattn::capi::cuattn_plan_paged_attention(&params, 132, 2, &mut plan);
        assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
        assert_eq!(
            (plan.num_splits, plan.split_tokens),
            (1, 0),
            "5 keys: one split of 64"
        );
        params.num_splits = 1;
        let status = cuattn::capi::cuattn_paged_attention(&params, cuattn::capi::STREAM_EMULATOR);
        assert_eq!(status, cuattn_status::CUATTN_OK, "{}", last_error());
        reference::compare(&got(&out2), &want_out, 1e-2, 1e-2).unwrap();

        // Refused, each naming what is wrong.
        refused(
            ffi_kv::cuattn_kv_cache_attention(
                cache,
                0,
                &step,
                qt.raw_address(),
                row,
                HEAD_DIM as i64,
                out.raw_address(),
                row,
                HEAD_DIM as i64,
                std::ptr::null_mut(),
                std::ptr::null(),
            ),
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "options",
        );
        let three_heads = ffi::cuattn_paged_options {
            heads: 3,
            ..options
        };
        refused(
            attend(&three_heads, qt.raw_address()),
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "kv_heads",
        );
        let misaligned = qt.raw_address().cast::<u8>().add(2).cast();
        refused(
            attend(&options, misaligned),
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "16-byte",
        );
        params.num_splits = 2;
        params.split_tokens = 64;
        refused(
            cuattn::capi::cuattn_paged_attention(&params, cuattn::capi::STREAM_EMULATOR),
            cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT,
            "workspace",
        );
        ffi_kv::cuattn_kv_cache_destroy(cache);
    }
}
