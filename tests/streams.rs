//! Tensors of one CUDA context may live on different streams (`Device::from_stream`). A launch
//! must come after the work already queued on its tensors' streams, and the work queued there
//! later must come after the launch. And a call can be captured into a CUDA graph. GPU only: the
//! emulator has no streams (its launches run to the end before they return).

mod common;

use std::sync::{Arc, Mutex, MutexGuard};

use half::bf16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};

use cuattn::{
    attention_into, flash_attention, paged_attention_into, AttentionOptions, DType, Device, Error,
    GraphCapture, Kernel, KvCacheConfig, KvLayout, PagedAttentionPlan, PagedKvCache, SplitKv,
    Tensor,
};

/// Long enough (about 2 TFLOP) that a launch still runs when the next call on another stream is
/// queued behind it.
const BIG: [usize; 4] = [1, 16384, 16, 128];

fn random(device: &Device, shape: &[usize], seed: u64) -> Tensor<bf16> {
    let mut rng = StdRng::seed_from_u64(seed);
    let data: Vec<bf16> = (0..shape.iter().product())
        .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)))
        .collect();
    Tensor::from_host(device, &data, shape).unwrap()
}

fn bits(values: &[bf16]) -> Vec<u16> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// One test of this file at a time: a graph capture must not see another test's context-wide
/// calls (a first stream's context synchronization, say) land inside it.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Two streams of the first GPU's context, or None (and a note) without a GPU.
fn two_streams() -> Option<(Device, Device)> {
    let gpu = common::devices().into_iter().find(Device::is_cuda)?;
    let ctx = Arc::clone(gpu.stream()?.context());
    Some((
        Device::from_stream(ctx.new_stream().unwrap()),
        Device::from_stream(ctx.new_stream().unwrap()),
    ))
}

#[test]
fn a_launch_waits_for_an_input_still_being_written_on_another_stream() {
    let _one = one_at_a_time();
    let Some((a, b)) = two_streams() else {
        println!("skipped: streams are a GPU matter");
        return;
    };
    let opts = AttentionOptions::default();
    // k2 comes out of a long launch on b; the launch on a (q's stream) reads it as K and V.
    let (qb, kb, vb) = (
        random(&b, &BIG, 1),
        random(&b, &BIG, 2),
        random(&b, &BIG, 3),
    );
    let k2 = flash_attention(&qb, &kb, &vb, &opts).unwrap().out;
    let qa = random(&a, &[1, 256, 16, 128], 4);
    let got = flash_attention(&qa, &k2, &k2, &opts).unwrap().out;
    let got = got.to_host().unwrap();
    b.synchronize().unwrap();
    let want = flash_attention(&qa, &k2, &k2, &opts).unwrap().out;
    assert_eq!(bits(&got), bits(&want.to_host().unwrap()));
}

#[test]
fn work_queued_on_an_outputs_stream_waits_for_the_launch_that_writes_it() {
    let _one = one_at_a_time();
    let Some((a, b)) = two_streams() else {
        println!("skipped: streams are a GPU matter");
        return;
    };
    let opts = AttentionOptions::default();
    // The launch runs on a (q's stream) into an output that lives on b; b's copy to the host,
    // queued right after, must see what the launch wrote, not the NaNs it replaced.
    let (q, k, v) = (
        random(&a, &BIG, 5),
        random(&a, &BIG, 6),
        random(&a, &BIG, 7),
    );
    let mut out = Tensor::full(&b, &BIG, bf16::NAN).unwrap();
    b.synchronize().unwrap();
    attention_into(Kernel::Flash, &q, &k, &v, &mut out, None, &opts).unwrap();
    let got = out.to_host().unwrap();
    let want = flash_attention(&q, &k, &v, &opts).unwrap().out;
    assert_eq!(bits(&got), bits(&want.to_host().unwrap()));
}

/// `attention_into` on a stream being captured into a CUDA graph (global mode, as PyTorch and
/// engines capture): nothing runs until the graph is launched, each launch reads the buffers as
/// they are then, the capture is not invalidated by cudarc's per-buffer events, and what cannot
/// be captured (a tensor on a stream outside the capture, a launch outside it on a tensor inside
/// it, a new tensor) is refused without spoiling the capture. A capture cuattn did not begin
/// (`GraphCapture::begin` holds the contract on the buffers' lifetime) is refused.
#[test]
fn attention_into_is_captured_into_a_cuda_graph_and_replays_on_current_inputs() {
    let _one = one_at_a_time();
    let Some(gpu) = common::devices().into_iter().find(Device::is_cuda) else {
        println!("skipped: graphs are a GPU matter");
        return;
    };
    let stream = Arc::clone(gpu.stream().unwrap());
    let (q_shape, kv_shape) = ([2, 300, 8, 128], [2, 300, 2, 128]);
    let opts = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    let (mut q, k, v) = (
        random(&gpu, &q_shape, 11),
        random(&gpu, &kv_shape, 12),
        random(&gpu, &kv_shape, 13),
    );
    // Before the capture: the reference output (which also loads the kernel), the poisoned
    // output, and tensors on another stream for the refused calls.
    let want = flash_attention(&q, &k, &v, &opts)
        .unwrap()
        .out
        .to_host()
        .unwrap();
    let mut out = Tensor::full(&gpu, &q_shape, bf16::NAN).unwrap();
    let elsewhere = Device::from_stream(stream.context().new_stream().unwrap());
    let k_elsewhere = random(&elsewhere, &kv_shape, 12);
    let q_elsewhere = random(&elsewhere, &q_shape, 11);
    let mut out_elsewhere = Tensor::full(&elsewhere, &q_shape, bf16::NAN).unwrap();
    elsewhere.synchronize().unwrap();
    gpu.synchronize().unwrap();

    // A capture begun behind cuattn's back: refused before anything is queued.
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL)
        .unwrap();
    let foreign = attention_into(Kernel::Flash, &q, &k, &v, &mut out, None, &opts);
    drop(stream.end_capture(CUgraphInstantiate_flags(0)).unwrap());
    match foreign {
        Err(Error::InvalidArgument { arg: "q", msg }) => {
            assert!(msg.contains("GraphCapture::begin"), "{msg}")
        }
        other => panic!("a capture cuattn did not begin: {other:?}"),
    }

    // SAFETY: q, k, v and out outlive every launch of the graph (the end of this test), which
    // runs on the capturing stream, ordered with the other work on them by that stream.
    let capture =
        unsafe { GraphCapture::begin(&gpu, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL) }
            .unwrap();
    let captured = attention_into(Kernel::Flash, &q, &k, &v, &mut out, None, &opts);
    // Refused, each before it queues anything, so the capture stays valid: a K outside the
    // capture; a launch on a stream outside it (q's) reading a K inside it; and new tensors
    // (cudarc's per-buffer events cannot be used inside a capture), the allocating call too.
    let k_outside = attention_into(Kernel::Flash, &q, &k_elsewhere, &v, &mut out, None, &opts);
    let launch_outside = attention_into(
        Kernel::Flash,
        &q_elsewhere,
        &k,
        &v,
        &mut out_elsewhere,
        None,
        &opts,
    );
    let new_tensor = Tensor::<bf16>::zeros(&gpu, &q_shape).map(|_| ());
    let allocating = flash_attention(&q, &k, &v, &opts).map(|_| ());
    let graph = capture.end(CUgraphInstantiate_flags(0));
    captured.unwrap();
    let refusal = |result: cuattn::Result<()>, want_arg: &str, want_msg: &str| match result {
        Err(Error::InvalidArgument { arg, msg }) if arg == want_arg => {
            assert!(msg.contains(want_msg), "{msg}")
        }
        other => panic!("{want_arg}: {other:?}"),
    };
    refusal(k_outside, "k", "outside the CUDA graph capture");
    refusal(launch_outside, "k", "the launch stream (q's) is not");
    refusal(new_tensor, "device", "make tensors before the capture");
    refusal(allocating, "device", "make tensors before the capture");
    let graph = graph.unwrap().expect("the capture holds the launch");
    stream.context().check_err().unwrap();
    assert!(
        out.to_host().unwrap().iter().all(|x| x.is_nan()),
        "a captured call must not run before the graph does"
    );

    graph.launch().unwrap();
    assert_eq!(bits(&out.to_host().unwrap()), bits(&want));

    // New values in q's buffer (written there by another call), then a replay: the graph reads
    // them.
    let (a, b) = (random(&gpu, &q_shape, 21), random(&gpu, &kv_shape, 22));
    attention_into(
        Kernel::Flash,
        &a,
        &b,
        &b,
        &mut q,
        None,
        &AttentionOptions::default(),
    )
    .unwrap();
    let want = flash_attention(&q, &k, &v, &opts)
        .unwrap()
        .out
        .to_host()
        .unwrap();
    graph.launch().unwrap();
    assert_eq!(bits(&out.to_host().unwrap()), bits(&want));
    stream.context().check_err().unwrap();
}

/// A decode step over the paged cache captured into a CUDA graph: planned outside the capture
/// (the split's workspace sized then), the captured call allocates nothing and never
/// synchronizes, and the graph's replay (split attention and its merge) gives the uncaptured
/// run's bits.
#[test]
fn a_paged_decode_step_is_captured_into_a_cuda_graph() {
    let _one = one_at_a_time();
    let Some(gpu) = common::devices().into_iter().find(Device::is_cuda) else {
        println!("skipped: graphs are a GPU matter");
        return;
    };
    let stream = Arc::clone(gpu.stream().unwrap());
    let (heads, kv_heads, head_dim, context) = (32, 8, 128, 3000);
    let mut cache = PagedKvCache::new(
        &gpu,
        KvCacheConfig {
            num_layers: 1,
            kv_heads,
            head_dim,
            page_size: 16,
            num_pages: 256,
            dtype: DType::BF16,
            layout: KvLayout::Nhd,
        },
    )
    .unwrap();
    cache.shuffle_free_pages(3);
    let seq = cache.add_sequence();
    let prompt = cache.reserve(&[(seq, context - 1)]).unwrap();
    let rows = [context - 1, kv_heads, head_dim];
    cache
        .append(0, &prompt, &random(&gpu, &rows, 1), &random(&gpu, &rows, 2))
        .unwrap();
    let step = cache.reserve(&[(seq, 1)]).unwrap();
    let one = [1, kv_heads, head_dim];
    cache
        .append(0, &step, &random(&gpu, &one, 3), &random(&gpu, &one, 4))
        .unwrap();
    let q = random(&gpu, &[1, heads, head_dim], 5);
    let opts = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    let mut plan = PagedAttentionPlan::new(&gpu, SplitKv::Auto).unwrap();
    let mut want = Tensor::full(&gpu, &[1, heads, head_dim], bf16::NAN).unwrap();
    paged_attention_into(&q, &cache, 0, &step, &mut want, None, &opts, &mut plan).unwrap();
    let mut out = Tensor::full(&gpu, &[1, heads, head_dim], bf16::NAN).unwrap();
    gpu.synchronize().unwrap();

    // SAFETY: q, the cache, the plan and out outlive every launch of the graph (the end of this
    // test); the cache's tables do not move (no reserve) and the plan's workspace does not grow.
    let capture =
        unsafe { GraphCapture::begin(&gpu, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL) }
            .unwrap();
    let captured = paged_attention_into(&q, &cache, 0, &step, &mut out, None, &opts, &mut plan);
    let graph = capture.end(CUgraphInstantiate_flags(0));
    captured.unwrap();
    let graph = graph.unwrap().expect("the capture holds the launches");
    assert!(
        out.to_host().unwrap().iter().all(|x| x.is_nan()),
        "a captured call must not run before the graph does"
    );
    graph.launch().unwrap();
    assert_eq!(
        bits(&out.to_host().unwrap()),
        bits(&want.to_host().unwrap())
    );
    stream.context().check_err().unwrap();
}
