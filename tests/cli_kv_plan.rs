//! `cuattn kv-plan` end to end: the Llama-3-8B preset's bytes per token, pages and sequences
//! against hand-computed values, its MHA and MQA counterparts, flags overriding a preset, the text
//! table, and bad inputs exiting with code 2 and a message naming the argument.

use std::process::{Command, Output};

/// Llama-3-8B's attention shape, as published.
const LLAMA_3_8B_LAYERS: u64 = 32;
const LLAMA_3_8B_HEADS: u64 = 32;
const LLAMA_3_8B_KV_HEADS: u64 = 8;
const LLAMA_3_8B_HEAD_DIM: u64 = 128;
/// K and V.
const KV_TENSORS: u64 = 2;
/// bf16 and f16.
const ELEMENT_BYTES: u64 = 2;
const GIB: u64 = 1 << 30;

/// 2 x 32 x 8 x 128 x 2 = 131072.
const LLAMA_3_8B_BYTES_PER_TOKEN: u64 =
    KV_TENSORS * LLAMA_3_8B_LAYERS * LLAMA_3_8B_KV_HEADS * LLAMA_3_8B_HEAD_DIM * ELEMENT_BYTES;

fn cuattn(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_cuattn"))
        .arg("kv-plan")
        .args(args)
        .output()
        .expect("the cuattn binary runs");
    println!(
        "cuattn kv-plan {} -> {:?}\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs with `--json` and parses the one object it prints.
fn plan_json(args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    let output = cuattn(&args);
    assert!(output.status.success(), "{:?}", output.status);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    serde_json::from_str(&stdout).expect("valid JSON")
}

/// Runs expecting a usage error: returns stderr after checking the exit code is 2.
fn plan_error(args: &[&str]) -> String {
    let output = cuattn(args);
    assert_eq!(output.status.code(), Some(2), "{:?}", output.status);
    assert!(output.stdout.is_empty(), "nothing on stdout on error");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn llama_3_8b_bf16_keeps_131072_bytes_a_token() {
    let v = plan_json(&["--model", "llama-3-8b", "--dtype", "bf16"]);
    assert_eq!(LLAMA_3_8B_BYTES_PER_TOKEN, 131_072);
    assert_eq!(v["bytes_per_token"], LLAMA_3_8B_BYTES_PER_TOKEN);
    assert_eq!(v["model"], "llama-3-8b");
    assert_eq!(v["layers"], LLAMA_3_8B_LAYERS);
    assert_eq!(v["heads"], LLAMA_3_8B_HEADS);
    assert_eq!(v["kv_heads"], LLAMA_3_8B_KV_HEADS);
    assert_eq!(v["head_dim"], LLAMA_3_8B_HEAD_DIM);
    assert_eq!(v["dtype"], "bf16");
    // The defaults.
    assert_eq!(v["page_size"], 16);
    assert_eq!(v["context"], 4096);
    assert_eq!(v["memory_gib"], 80.0);
    assert_eq!(v["bytes_per_page"], 16 * LLAMA_3_8B_BYTES_PER_TOKEN);
}

#[test]
fn context_4097_in_pages_of_16_takes_257_pages() {
    let v = plan_json(&[
        "--model",
        "llama-3-8b",
        "--context",
        "4097",
        "--page-size",
        "16",
    ]);
    assert_eq!(v["pages_per_sequence"], 257);
}

#[test]
fn max_sequences_is_whole_sequences_of_whole_pages_in_the_memory() {
    // 4097 tokens in 257 pages of 16 tokens x 131072 bytes: 538968064 bytes a sequence; 20.25 GiB
    // is 21743271936 bytes, which holds 40 of them (40.34...).
    let v = plan_json(&[
        "--model",
        "llama-3-8b",
        "--context",
        "4097",
        "--memory-gib",
        "20.25",
    ]);
    let sequence_bytes = 257 * 16 * LLAMA_3_8B_BYTES_PER_TOKEN;
    let memory_bytes = 20 * GIB + GIB / 4;
    assert_eq!(sequence_bytes, 538_968_064);
    assert_eq!(memory_bytes / sequence_bytes, 40);
    assert_eq!(v["max_sequences"], 40);
    assert_eq!(v["memory_gib"], 20.25);
}

#[test]
fn llama_3_8b_mha_takes_4x_and_mqa_an_eighth_of_its_gqa_bytes() {
    let v = plan_json(&["--model", "llama-3-8b"]);
    let (mha, mqa) = (&v["mha"], &v["mqa"]);
    assert_eq!(mha["kv_heads"], LLAMA_3_8B_HEADS);
    assert_eq!(mha["bytes_per_token"], 4 * LLAMA_3_8B_BYTES_PER_TOKEN);
    assert_eq!(mqa["kv_heads"], 1);
    assert_eq!(mqa["bytes_per_token"], LLAMA_3_8B_BYTES_PER_TOKEN / 8);
    // 4096 tokens: 256 pages; GQA 512 MiB a sequence, MHA 2 GiB, MQA 64 MiB, in 80 GiB.
    for plan in [&v, mha, mqa] {
        assert_eq!(plan["pages_per_sequence"], 256);
    }
    assert_eq!(v["max_sequences"], 160);
    assert_eq!(mha["max_sequences"], 40);
    assert_eq!(mqa["max_sequences"], 1280);
}

#[test]
fn explicit_flags_override_the_preset() {
    let v = plan_json(&[
        "--model",
        "Llama-3-8B",
        "--layers",
        "16",
        "--kv-heads",
        "4",
        "--dtype",
        "f16",
    ]);
    assert_eq!(v["model"], "llama-3-8b");
    assert_eq!(v["layers"], 16);
    assert_eq!(v["kv_heads"], 4);
    assert_eq!(v["heads"], LLAMA_3_8B_HEADS);
    assert_eq!(v["head_dim"], LLAMA_3_8B_HEAD_DIM);
    assert_eq!(v["dtype"], "f16");
    assert_eq!(
        v["bytes_per_token"],
        KV_TENSORS * 16 * 4 * LLAMA_3_8B_HEAD_DIM * ELEMENT_BYTES
    );
    assert_eq!(
        v["mha"]["bytes_per_token"],
        KV_TENSORS * 16 * LLAMA_3_8B_HEADS * LLAMA_3_8B_HEAD_DIM * ELEMENT_BYTES
    );
}

#[test]
fn flags_alone_plan_without_counterparts_unless_heads_are_given() {
    let shape = ["--layers", "32", "--kv-heads", "8", "--head-dim", "128"];
    let v = plan_json(&shape);
    assert_eq!(v["bytes_per_token"], LLAMA_3_8B_BYTES_PER_TOKEN);
    assert!(v["model"].is_null() && v["heads"].is_null(), "{v}");
    assert!(v["mha"].is_null() && v["mqa"].is_null(), "{v}");
    let v = plan_json(&[&shape[..], &["--heads", "32"]].concat());
    assert_eq!(v["mha"]["bytes_per_token"], 4 * LLAMA_3_8B_BYTES_PER_TOKEN);
}

#[test]
fn gemma_2_9b_preset_has_head_dim_256() {
    let v = plan_json(&["--model", "gemma-2-9b"]);
    // 2 x 42 layers x 8 KV heads x 256 x 2 bytes.
    assert_eq!(
        v["bytes_per_token"],
        KV_TENSORS * 42 * 8 * 256 * ELEMENT_BYTES
    );
    assert_eq!(v["heads"], 16);
}

#[test]
fn text_output_lists_the_numbers_of_each_layout() {
    let output = cuattn(&["--model", "llama-3-8b", "--context", "4097"]);
    assert!(output.status.success(), "{:?}", output.status);
    let text = String::from_utf8(output.stdout).unwrap();
    let row = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} row in:\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // label words, kv heads, bytes/token, bytes/page, pages/seq, max sequences
    let given = row("given (GQA)");
    assert_eq!(
        given[2..],
        ["8", "131072", "2097152", "257", "159"].map(String::from)
    );
    let mha = row("MHA");
    assert_eq!(
        mha[1..],
        ["32", "524288", "8388608", "257", "39"].map(String::from)
    );
    let mqa = row("MQA");
    assert_eq!(
        mqa[1..],
        ["1", "16384", "262144", "257", "1275"].map(String::from)
    );
    assert!(text.contains("llama-3-8b"), "{text}");
}

#[test]
fn head_dim_100_exits_2_naming_head_dim() {
    let stderr = plan_error(&["--model", "llama-3-8b", "--head-dim", "100"]);
    assert!(
        stderr.contains("invalid argument `head_dim`") && stderr.contains("100"),
        "{stderr}"
    );
}

#[test]
fn heads_not_divisible_by_kv_heads_exits_2_naming_kv_heads() {
    let stderr = plan_error(&[
        "--layers",
        "32",
        "--heads",
        "32",
        "--kv-heads",
        "6",
        "--head-dim",
        "128",
    ]);
    assert!(
        stderr.contains("invalid argument `kv_heads`") && stderr.contains("32"),
        "{stderr}"
    );
}

#[test]
fn unknown_model_exits_2_listing_the_known_models() {
    let stderr = plan_error(&["--model", "llama-9-1t"]);
    assert!(stderr.contains("invalid argument `model`"), "{stderr}");
    for name in [
        "llama-3-8b",
        "llama-3-70b",
        "mistral-7b",
        "qwen2-72b",
        "gemma-2-9b",
    ] {
        assert!(stderr.contains(name), "{stderr}");
    }
}

#[test]
fn missing_shape_flags_without_model_exit_2_naming_them() {
    let stderr = plan_error(&["--layers", "32"]);
    assert!(
        stderr.contains("--kv-heads") && stderr.contains("--head-dim"),
        "{stderr}"
    );
}

#[test]
fn nonpositive_memory_and_zero_page_size_exit_2_naming_them() {
    let stderr = plan_error(&["--model", "mistral-7b", "--memory-gib", "-1"]);
    assert!(stderr.contains("invalid argument `memory_gib`"), "{stderr}");
    let stderr = plan_error(&["--model", "mistral-7b", "--page-size", "0"]);
    assert!(stderr.contains("invalid argument `page_size`"), "{stderr}");
}
