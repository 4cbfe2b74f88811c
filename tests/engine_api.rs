//! What an engine's hot loop relies on, on the emulator: written tensors are their buffers' only
//! handles (so no clone reads them while a kernel writes), outputs written into part of a larger
//! buffer through `into_view`, fixed buffers refilled in place (`copy_from_host`, `copy_from`),
//! a variable-length batch updated in place or wrapped from device offsets, and the refusals
//! that name the argument. The GPU-only halves (graph capture, cudarc's write events) are in
//! tests/streams.rs.

mod common;

use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;

use cuattn::sparse::{block_sparse_attention_varlen_into, BlockMask, BlockMatrix};
use cuattn::{
    attention_into, attention_varlen, attention_varlen_into, AttentionOptions, Device, Error,
    GraphCapture, Kernel, Tensor, VarlenBatch,
};

fn emu() -> Device {
    Device::emulator()
}

fn random<T: cuattn::Element>(shape: &[usize], seed: u64) -> Tensor<T> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::from_host(
        &emu(),
        &common::to_t::<T>(&common::random(&mut rng, n)),
        shape,
    )
    .unwrap()
}

fn bits(t: &Tensor<bf16>) -> Vec<u16> {
    t.to_host().unwrap().iter().map(|x| x.to_bits()).collect()
}

fn invalid(err: Error, want_arg: &str, needle: &str) {
    match &err {
        Error::InvalidArgument { arg, msg } => {
            assert_eq!(*arg, want_arg, "{err}");
            assert!(msg.contains(needle), "`{needle}` missing from: {err}");
        }
        other => panic!("expected InvalidArgument on {want_arg}, got {other:?}"),
    }
}

#[test]
fn a_written_tensor_with_another_handle_is_refused_and_left_alone() {
    let (q, k) = (
        random::<bf16>(&[1, 9, 2, 64], 1),
        random::<bf16>(&[1, 11, 1, 64], 2),
    );
    let opts = AttentionOptions {
        return_lse: true,
        ..Default::default()
    };
    let mut out = Tensor::full(&emu(), &[1, 9, 2, 64], bf16::NAN).unwrap();
    let mut lse = Tensor::full(&emu(), &[1, 2, 9], f32::NAN).unwrap();
    // A clone of the output (a reader elsewhere): refused, nothing written.
    let reader = out.clone();
    let err = attention_into(Kernel::Flash, &q, &k, &k, &mut out, Some(&mut lse), &opts);
    invalid(err.unwrap_err(), "out", "only handle");
    assert!(reader.to_host().unwrap().iter().all(|x| x.is_nan()));
    drop(reader);
    // A view of the LSE kept elsewhere: refused naming the LSE.
    let lse_view = lse.view(0, &[1, 2, 9], &[18, 9, 1]).unwrap();
    let err = attention_into(Kernel::Flash, &q, &k, &k, &mut out, Some(&mut lse), &opts);
    invalid(err.unwrap_err(), "lse", "only handle");
    drop(lse_view);
    attention_into(Kernel::Flash, &q, &k, &k, &mut out, Some(&mut lse), &opts).unwrap();
    assert!(out.to_host().unwrap().iter().all(|x| x.is_finite()));
    assert!(lse.to_host().unwrap().iter().all(|x| x.is_finite()));
}

#[test]
fn an_output_written_into_part_of_a_larger_buffer_through_into_view() {
    let (q, k, v) = (
        random::<bf16>(&[1, 7, 2, 64], 3),
        random::<bf16>(&[1, 13, 2, 64], 4),
        random::<bf16>(&[1, 13, 2, 64], 5),
    );
    let opts = AttentionOptions::default();
    let want = cuattn::flash_attention(&q, &k, &v, &opts).unwrap().out;
    // Rows of 2 heads x 64 in a buffer of 3 heads' pitch: every third head slot stays NaN.
    let pitch = 3 * 64;
    let whole = Tensor::full(&emu(), &[7 * pitch], bf16::NAN).unwrap();
    let mut out = whole
        .into_view(0, &[1, 7, 2, 64], &[7 * pitch, pitch, 64, 1])
        .unwrap();
    attention_into(Kernel::Flash, &q, &k, &v, &mut out, None, &opts).unwrap();
    assert_eq!(bits(&out), bits(&want));
    let whole = out.into_view(0, &[7, 3, 64], &[pitch, 64, 1]).unwrap();
    let host = whole.to_host().unwrap();
    for row in host.chunks(pitch) {
        assert!(row[..128].iter().all(|x| x.is_finite()));
        assert!(row[128..].iter().all(|x| x.is_nan()), "the gap was written");
    }
}

#[test]
fn fixed_buffers_are_refilled_in_place_from_the_host_and_from_another_tensor() {
    let a = random::<f16>(&[4, 8], 6);
    let mut dst = Tensor::<f16>::full(&emu(), &[4, 8], f16::NAN).unwrap();
    dst.copy_from(&a).unwrap();
    assert_eq!(dst.to_host().unwrap(), a.to_host().unwrap());
    // From a view into the middle of another buffer (its offset honoured).
    let wide = random::<f16>(&[64], 7);
    let middle = wide.view(16, &[4, 8], &[8, 1]).unwrap();
    dst.copy_from(&middle).unwrap();
    assert_eq!(dst.to_host().unwrap(), wide.to_host().unwrap()[16..48]);
    let host: Vec<f16> = (0..32).map(|i| f16::from_f32(i as f32)).collect();
    dst.copy_from_host(&host).unwrap();
    assert_eq!(dst.to_host().unwrap(), host);

    invalid(
        dst.copy_from(&random::<f16>(&[8, 4], 8)).unwrap_err(),
        "src",
        "shape [8, 4]",
    );
    let gapped = wide.view(0, &[4, 8], &[16, 1]).unwrap();
    invalid(dst.copy_from(&gapped).unwrap_err(), "src", "contiguous");
    let reader = dst.clone();
    invalid(dst.copy_from(&a).unwrap_err(), "self", "only handle");
    invalid(dst.copy_from_host(&host).unwrap_err(), "self", "shared");
    assert_eq!(reader.to_host().unwrap(), host, "refusals change nothing");
}

#[test]
fn a_varlen_batch_updated_in_place_equals_a_new_one() {
    let (heads, kv_heads, d) = (4, 2, 64);
    let (q, k, v) = (
        random::<bf16>(&[20, heads, d], 9),
        random::<bf16>(&[30, kv_heads, d], 10),
        random::<bf16>(&[30, kv_heads, d], 11),
    );
    let opts = AttentionOptions {
        causal: true,
        return_lse: true,
        ..Default::default()
    };
    // Bounds wide enough for both steps: launches sized once, as a CUDA graph's are.
    let mut batch = VarlenBatch::with_bounds(&emu(), &[0, 5, 20], &[0, 9, 30], 16, 24).unwrap();
    let first = attention_varlen(Kernel::Flash, &q, &k, &v, &batch, &opts).unwrap();
    let fresh = VarlenBatch::new(&emu(), &[0, 5, 20], &[0, 9, 30]).unwrap();
    let want = attention_varlen(Kernel::Flash, &q, &k, &v, &fresh, &opts).unwrap();
    assert_eq!(bits(&first.out), bits(&want.out));

    batch.update(&[0, 12, 20], &[0, 20, 30]).unwrap();
    assert_eq!(batch.seqlens(), Some(&[(12, 20), (8, 10)][..]));
    assert_eq!((batch.max_seqlen_q(), batch.max_seqlen_k()), (16, 24));
    let mut out = Tensor::full(&emu(), &[20, heads, d], bf16::NAN).unwrap();
    let mut lse = Tensor::full(&emu(), &[heads, 20], f32::NAN).unwrap();
    attention_varlen_into(
        Kernel::Flash,
        &q,
        &k,
        &v,
        &batch,
        &mut out,
        Some(&mut lse),
        &opts,
    )
    .unwrap();
    let fresh = VarlenBatch::new(&emu(), &[0, 12, 20], &[0, 20, 30]).unwrap();
    let want = attention_varlen(Kernel::Flash, &q, &k, &v, &fresh, &opts).unwrap();
    assert_eq!(bits(&out), bits(&want.out));
    assert_eq!(lse.to_host().unwrap(), want.lse.unwrap().to_host().unwrap());

    // Refused, naming the offsets, and the batch is unchanged.
    invalid(
        batch.update(&[0, 20], &[0, 30]).unwrap_err(),
        "cu_seqlens_q",
        "2 sequences",
    );
    invalid(
        batch.update(&[0, 3, 20], &[0, 10, 30]).unwrap_err(),
        "cu_seqlens_q",
        "max_seqlen_q = 16",
    );
    invalid(
        batch.update(&[0, 10, 20], &[0, 3, 30]).unwrap_err(),
        "cu_seqlens_k",
        "max_seqlen_k = 24",
    );
    invalid(
        batch.update(&[0, 10, 9], &[0, 10, 30]).unwrap_err(),
        "cu_seqlens_q",
        "nondecreasing",
    );
    assert_eq!(batch.seqlens(), Some(&[(12, 20), (8, 10)][..]));
    invalid(
        VarlenBatch::with_bounds(&emu(), &[0, 5, 20], &[0, 9, 30], 14, 24)
            .err()
            .unwrap(),
        "max_seqlen_q",
        "below the longest",
    );
}

#[test]
fn a_varlen_batch_over_device_offsets_runs_like_host_ones() {
    let (q, k, v) = (
        random::<bf16>(&[11, 2, 64], 12),
        random::<bf16>(&[17, 1, 64], 13),
        random::<bf16>(&[17, 1, 64], 14),
    );
    let opts = AttentionOptions::default();
    let (cu_q, cu_k) = ([0, 4, 4, 11], [0, 6, 9, 17]);
    let host = VarlenBatch::new(&emu(), &cu_q, &cu_k).unwrap();
    let want = attention_varlen(Kernel::Flash, &q, &k, &v, &host, &opts).unwrap();
    let on_device = |cu: &[i32]| Tensor::from_host(&emu(), cu, &[cu.len()]).unwrap();
    // SAFETY: the offsets start at 0, are nondecreasing, end at the totals, and no sequence
    // passes the bounds.
    let batch =
        unsafe { VarlenBatch::from_device(on_device(&cu_q), on_device(&cu_k), (11, 17), (7, 8)) }
            .unwrap();
    assert_eq!(batch.seqlens(), None);
    assert_eq!(
        (batch.batch(), batch.total_q(), batch.total_k()),
        (3, 11, 17)
    );
    let got = attention_varlen(Kernel::Flash, &q, &k, &v, &batch, &opts).unwrap();
    assert_eq!(bits(&got.out), bits(&want.out));

    // Rows the host totals do not match, and a block mask (checked on host lengths): refused.
    let short = random::<bf16>(&[10, 2, 64], 15);
    let err = attention_varlen(Kernel::Flash, &short, &k, &v, &batch, &opts).unwrap_err();
    invalid(err, "q", "cu_seqlens_q ends at 11");
    let mask = BlockMask::new(
        &emu(),
        BlockMatrix::dense(1, 1),
        (16, 16),
        &[(4, 6), (0, 3), (7, 8)],
        &opts,
    )
    .unwrap();
    let mut out = Tensor::zeros(&emu(), &[11, 2, 64]).unwrap();
    let err = block_sparse_attention_varlen_into(&q, &k, &v, &batch, &mut out, None, &mask, &opts);
    invalid(err.unwrap_err(), "batch", "from_device");
    // The same mask and call on the host batch runs.
    block_sparse_attention_varlen_into(&q, &k, &v, &host, &mut out, None, &mask, &opts).unwrap();
    // SAFETY: refused before anything could read them.
    let bad = unsafe {
        VarlenBatch::from_device(on_device(&cu_q), on_device(&[0, 17]), (11, 17), (7, 8))
    };
    invalid(bad.err().unwrap(), "cu_seqlens_k", "batch + 1");
}

#[test]
fn devices_of_one_memory_compare_equal_and_graphs_need_a_gpu() {
    assert!(emu().same_memory(&Device::emulator()));
    // SAFETY: refused on the emulator before anything is captured.
    let capture = unsafe {
        GraphCapture::begin(
            &emu(),
            cuattn::cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL,
        )
    };
    assert!(matches!(capture, Err(Error::Unsupported(_))));
    if let Some(gpu) = common::devices().into_iter().find(Device::is_cuda) {
        // Two handles on GPU 0 (each with a stream and a CudaContext value of its own) reach one
        // memory: the device's primary context.
        let other = Device::cuda(0).unwrap();
        assert!(gpu.same_memory(&other) && !gpu.same_stream(&other));
        let slice = other.stream().unwrap().alloc_zeros::<f32>(4).unwrap();
        Tensor::from_cuda_slice(&gpu, slice, &[4]).unwrap();

        // An engine's cudarc buffers, lent for one call each: k read through a CudaView, out
        // written through a CudaViewMut, no copies; the result is the flash kernel's.
        let stream = gpu.stream().unwrap();
        let shape = [1, 40, 2, 64];
        let q = Tensor::from_host(&gpu, &random::<bf16>(&shape, 19).to_host().unwrap(), &shape)
            .unwrap();
        let k_host = random::<bf16>(&shape, 20).to_host().unwrap();
        let k_engine = stream.clone_htod(&k_host).unwrap();
        let mut out_engine = stream.alloc_zeros::<bf16>(40 * 128 + 64).unwrap();
        let opts = AttentionOptions::default();
        let want = {
            let k = Tensor::from_host(&gpu, &k_host, &shape).unwrap();
            cuattn::flash_attention(&q, &k, &k, &opts).unwrap().out
        };
        let mut out_view = out_engine.slice_mut(64..);
        Tensor::scoped_cuda_view(&gpu, &k_engine.as_view(), &shape, |k| {
            Tensor::scoped_cuda_view_mut(&gpu, &mut out_view, &shape, |out| {
                attention_into(Kernel::Flash, &q, k, k, out, None, &opts)
            })
        })
        .unwrap();
        let got = stream.clone_dtoh(&out_engine).unwrap();
        assert!(
            got[..64].iter().all(|x| x.to_f32() == 0.0),
            "written before the view"
        );
        let got: Vec<u16> = got[64..].iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, bits(&want));
    }
}

#[test]
fn tensors_over_an_engines_own_memory_read_and_write_it_in_place() {
    let (q, k, v) = (
        random::<bf16>(&[1, 6, 2, 64], 16),
        random::<bf16>(&[1, 10, 2, 64], 17),
        random::<bf16>(&[1, 10, 2, 64], 18),
    );
    let opts = AttentionOptions::default();
    let want = cuattn::flash_attention(&q, &k, &v, &opts).unwrap().out;
    // The engine's pool: one allocation (here an emulator buffer) holding k, then room for out.
    let mut pool = Tensor::<bf16>::full(&emu(), &[10 * 128 + 6 * 128 + 8], bf16::NAN).unwrap();
    let mut staged = k.to_host().unwrap();
    staged.extend(vec![bf16::NAN; 6 * 128 + 8]);
    pool.copy_from_host(&staged).unwrap();
    let base = pool.raw_address() as u64;
    // SAFETY: both ranges lie in `pool`, which outlives the tensors; they do not overlap, and
    // nothing else touches the pool meanwhile.
    let (k_lent, mut out_lent) = unsafe {
        (
            Tensor::<bf16>::from_raw_parts(&emu(), base, 10 * 128, &[1, 10, 2, 64]).unwrap(),
            Tensor::<bf16>::from_raw_parts(&emu(), base + 10 * 128 * 2, 6 * 128, &[1, 6, 2, 64])
                .unwrap(),
        )
    };
    assert!(k_lent.cuda_slice().is_none());
    attention_into(Kernel::Flash, &q, &k_lent, &v, &mut out_lent, None, &opts).unwrap();
    assert_eq!(bits(&out_lent), bits(&want));
    drop((k_lent, out_lent));
    // Written where the engine put it, and nowhere past it.
    let host = pool.to_host().unwrap();
    let written: Vec<u16> = host[10 * 128..16 * 128]
        .iter()
        .map(|x| x.to_bits())
        .collect();
    assert_eq!(written, bits(&want));
    assert!(host[16 * 128..].iter().all(|x| x.is_nan()));
    // A shape the lent memory does not hold is refused.
    // SAFETY: refused before anything reads the address.
    let err = unsafe { Tensor::<bf16>::from_raw_parts(&emu(), base, 100, &[1, 10, 2, 64]) };
    invalid(err.unwrap_err(), "shape", "holds 1280 elements");
}
