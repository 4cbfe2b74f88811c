//! Tensors of one CUDA context may live on different streams (`Device::from_stream`). A launch
//! must come after the work already queued on its tensors' streams, and the work queued there
//! later must come after the launch. GPU only: the emulator has no streams (its launches run to
//! the end before they return).

mod common;

use std::sync::Arc;

use half::bf16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use cuattn::{attention_into, flash_attention, AttentionOptions, Device, Kernel, Tensor};

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
    let out = Tensor::full(&b, &BIG, bf16::NAN).unwrap();
    b.synchronize().unwrap();
    attention_into(Kernel::Flash, &q, &k, &v, &out, None, &opts).unwrap();
    let got = out.to_host().unwrap();
    let want = flash_attention(&q, &k, &v, &opts).unwrap().out;
    assert_eq!(bits(&got), bits(&want.to_host().unwrap()));
}
