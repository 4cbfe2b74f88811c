//! The smallest end-to-end use: GQA causal attention on the GPU when present (else the CPU
//! emulator), compared with the f64 reference. `cargo run --release --example 01_attention`

use cuattn::reference::{self, AttentionProblem};
use cuattn::{attention_naive, AttentionOptions, Device, Tensor};
use half::bf16;

fn main() -> cuattn::Result<()> {
    let device = Device::auto();
    let (batch, seqlen_q, seqlen_k, heads, kv_heads, head_dim) = (2, 37, 53, 8, 2, 64);
    // Deterministic inputs, rounded to bf16 so the reference sees exactly what the kernel sees.
    let data = |n: usize, phase: f64| -> Vec<f64> {
        (0..n)
            .map(|i| bf16::from_f64(((i as f64) * 0.37 + phase).sin()).to_f64())
            .collect()
    };
    let q = data(batch * seqlen_q * heads * head_dim, 0.0);
    let k = data(batch * seqlen_k * kv_heads * head_dim, 1.0);
    let v = data(batch * seqlen_k * kv_heads * head_dim, 2.0);
    let upload = |x: &[f64], shape: &[usize]| {
        let x: Vec<bf16> = x.iter().map(|&x| bf16::from_f64(x)).collect();
        Tensor::from_host(&device, &x, shape)
    };
    let qt = upload(&q, &[batch, seqlen_q, heads, head_dim])?;
    let kt = upload(&k, &[batch, seqlen_k, kv_heads, head_dim])?;
    let vt = upload(&v, &[batch, seqlen_k, kv_heads, head_dim])?;

    let opts = AttentionOptions {
        causal: true,
        return_lse: true,
        ..Default::default()
    };
    let result = attention_naive(&qt, &kt, &vt, &opts)?;
    let out: Vec<f64> = result.out.to_host()?.iter().map(|x| x.to_f64()).collect();

    let problem = AttentionProblem {
        window_right: 0, // causal
        ..AttentionProblem::new(batch, seqlen_q, seqlen_k, heads, kv_heads, head_dim)
    };
    let want = reference::attention(&problem, &q, &k, &v);
    let max_err = out
        .iter()
        .zip(&want.out)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!(
        "attention_naive on {}: max |out - ref| = {max_err:.2e}",
        device.name()
    );
    Ok(())
}
