//! attention_naive against the f64 reference over the odd-shape grid (outputs poisoned with NaN
//! before every launch, LSE checked), on the emulator and on the GPU when present; and every
//! argument validation, which must fail before anything is launched.

mod common;

use common::assert_cases_pass;
use cuattn::check;
use cuattn::{
    attention_into, attention_varlen, AttentionOptions, Device, Error, Kernel, Tensor, VarlenBatch,
};
use half::{bf16, f16};

#[test]
fn naive_matches_reference_on_odd_lengths_both_ways_causal_and_not() {
    assert_cases_pass(Kernel::Naive, &check::length_cases());
}

#[test]
fn naive_matches_reference_for_gqa_groups_1_2_4_5_8_and_mqa() {
    assert_cases_pass(Kernel::Naive, &check::group_cases());
}

#[test]
fn naive_matches_reference_for_head_dims_8_to_256() {
    assert_cases_pass(Kernel::Naive, &check::head_dim_cases());
}

#[test]
fn naive_matches_reference_for_windows_causal_windows_and_softcap() {
    assert_cases_pass(Kernel::Naive, &check::mask_cases());
}

#[test]
fn naive_matches_reference_for_packed_qkv_and_varlen_batches() {
    assert_cases_pass(Kernel::Naive, &check::layout_cases());
}

// ---------------------------------------------------------------------------------------------
// Validation: every bad argument is an InvalidArgument naming it, and nothing is launched (the
// poisoned output stays poisoned).

fn emu() -> Device {
    Device::emulator()
}

fn tensor<T: cuattn::Element>(shape: &[usize]) -> Tensor<T> {
    let n: usize = shape.iter().product();
    let data: Vec<T> = (0..n)
        .map(|i| T::from_f64(((i % 7) as f64 - 3.0) / 4.0))
        .collect();
    Tensor::from_host(&emu(), &data, shape).unwrap()
}

/// One dense call's arguments; tests break one of them at a time.
#[derive(Clone)]
struct Call {
    q: Tensor<bf16>,
    k: Tensor<bf16>,
    v: Tensor<bf16>,
    out: Tensor<bf16>,
    lse: Option<Tensor<f32>>,
    opts: AttentionOptions,
}

fn call(q: &[usize], kv: &[usize]) -> Call {
    Call {
        q: tensor(q),
        k: tensor(kv),
        v: tensor(kv),
        out: Tensor::full(&emu(), q, bf16::NAN).unwrap(),
        lse: None,
        opts: AttentionOptions::default(),
    }
}

/// The call must fail with InvalidArgument on `arg`, mentioning `needle`, and leave `out`
/// untouched (nothing launched).
fn expect_invalid(mut c: Call, arg: &str, needle: &str) {
    let before = c.out.to_host().unwrap();
    let err = attention_into(
        Kernel::Naive,
        &c.q,
        &c.k,
        &c.v,
        &mut c.out,
        c.lse.as_mut(),
        &c.opts,
    )
    .unwrap_err();
    println!("{err}");
    match &err {
        Error::InvalidArgument { arg: a, msg } => {
            assert_eq!(*a, arg, "wrong argument named in: {err}");
            assert!(msg.contains(needle), "`{needle}` missing from: {err}");
        }
        other => panic!("expected InvalidArgument on {arg}, got {other:?}"),
    }
    let after = c.out.to_host().unwrap();
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "out changed although the call was rejected"
    );
}

#[test]
fn rejects_bad_shapes_naming_the_argument() {
    let c = call(&[1, 5, 4, 64], &[1, 7, 2, 64]);
    expect_invalid(
        Call {
            q: tensor(&[5, 4, 64]),
            ..c.clone()
        },
        "q",
        "rank 4",
    );
    expect_invalid(
        Call {
            k: tensor(&[7, 2, 64]),
            ..c.clone()
        },
        "k",
        "rank 4",
    );
    expect_invalid(
        Call {
            k: tensor(&[2, 7, 2, 64]),
            ..c.clone()
        },
        "k",
        "batch",
    );
    expect_invalid(
        Call {
            v: tensor(&[1, 8, 2, 64]),
            ..c.clone()
        },
        "v",
        "k's",
    );
    let out = Tensor::full(&emu(), &[1, 5, 4, 32], bf16::NAN).unwrap();
    expect_invalid(Call { out, ..c }, "out", "must equal q's");

    expect_invalid(
        call(&[1, 5, 3, 64], &[1, 7, 2, 64]),
        "kv_heads",
        "divide heads = 3",
    );
    expect_invalid(call(&[1, 0, 2, 64], &[1, 7, 2, 64]), "seqlen_q", "0");
    expect_invalid(call(&[1, 5, 2, 64], &[1, 0, 2, 64]), "seqlen_k", "0");
}

#[test]
fn rejects_head_dims_that_are_not_multiples_of_8_up_to_256() {
    for d in [4, 12, 100, 264] {
        expect_invalid(
            call(&[1, 3, 2, d], &[1, 3, 2, d]),
            "head_dim",
            "multiple of 8",
        );
    }
}

#[test]
fn rejects_bad_windows_scales_and_softcaps() {
    let c = call(&[1, 5, 2, 64], &[1, 7, 2, 64]);
    let with = |opts: AttentionOptions| Call { opts, ..c.clone() };
    for window in [(-2, 0), (3, -5)] {
        let opts = AttentionOptions {
            window: Some(window),
            ..Default::default()
        };
        expect_invalid(with(opts), "window", ">= 0, or -1");
    }
    for scale in [f32::NAN, f32::INFINITY] {
        let opts = AttentionOptions {
            scale: Some(scale),
            ..Default::default()
        };
        expect_invalid(with(opts), "scale", "finite");
    }
    for cap in [-1.0, f32::NAN] {
        let opts = AttentionOptions {
            softcap: Some(cap),
            ..Default::default()
        };
        expect_invalid(with(opts), "softcap", ">= 0");
    }
}

#[test]
fn rejects_strided_head_dim_aliased_outputs_and_bad_lse() {
    let c = call(&[1, 5, 2, 64], &[1, 7, 2, 64]);
    // Every other element of a wider buffer: the head_dim axis is not contiguous.
    let wide = tensor::<bf16>(&[1, 5, 2, 128]);
    let strided = wide.view(0, &[1, 5, 2, 64], &[1280, 256, 128, 2]).unwrap();
    expect_invalid(
        Call {
            q: strided,
            ..c.clone()
        },
        "q",
        "contiguous",
    );
    // out is q itself: a second handle on q's buffer, which a written tensor must not share.
    expect_invalid(
        Call {
            out: c.q.clone(),
            ..c.clone()
        },
        "out",
        "only handle",
    );
    let lse = Tensor::full(&emu(), &[1, 5, 2], f32::NAN).unwrap();
    expect_invalid(
        Call {
            lse: Some(lse),
            ..c
        },
        "lse",
        "[1, 2, 5]",
    );
}

// f32 inputs are a compile error (AttentionElement: f16 and bf16; the compile_fail example in
// its docs), no longer a run-time refusal.

#[test]
fn rejects_bad_cu_seqlens_and_row_counts() {
    let bad: [(&[i32], &[i32], &str, &str); 4] = [
        (&[1, 3], &[0, 3], "cu_seqlens_q", "must be 0"),
        (&[0, 5, 3], &[0, 3, 4], "cu_seqlens_q", "nondecreasing"),
        (&[0, 3], &[0, 3, 6], "cu_seqlens_k", "batch + 1"),
        (&[0], &[0], "cu_seqlens_q", "batch + 1 >= 2"),
    ];
    for (cu_q, cu_k, arg, needle) in bad {
        let err = VarlenBatch::new(&emu(), cu_q, cu_k)
            .err()
            .expect("must be rejected");
        println!("{err}");
        assert!(
            matches!(&err, Error::InvalidArgument { arg: a, msg } if *a == arg && msg.contains(needle)),
            "{err}"
        );
    }
    let batch = VarlenBatch::new(&emu(), &[0, 3, 5], &[0, 4, 9]).unwrap();
    let q = tensor::<f16>(&[6, 2, 64]);
    let kv = tensor::<f16>(&[9, 1, 64]);
    let err =
        attention_varlen(Kernel::Naive, &q, &kv, &kv, &batch, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("cu_seqlens_q ends at 5"), "{err}");
}

#[test]
fn kernel_names_parse_and_unknown_names_are_rejected() {
    assert_eq!("naive".parse::<Kernel>().unwrap(), Kernel::Naive);
    let err = "fast".parse::<Kernel>().unwrap_err();
    assert!(err.to_string().contains("expected one of naive"), "{err}");
}

#[test]
fn gpu_requests_fail_cleanly_without_a_gpu() {
    if cuattn::probe_cuda().is_available() {
        println!("skipped: a CUDA device is present");
        return;
    }
    let err = Device::cuda(0).unwrap_err();
    assert!(matches!(err, Error::Cuda(_)), "{err}");
    assert!(!Device::auto().is_cuda());
}

#[test]
fn naive_matches_reference_at_tile_edge_lengths() {
    assert_cases_pass(Kernel::Naive, &check::tile_edge_cases());
}
