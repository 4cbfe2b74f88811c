//! `cuattn kv-plan`: the size of a paged KV cache for a model's attention shape (bytes per token,
//! pages per sequence, sequences that fit in memory), next to its MHA and MQA counterparts.

use std::fmt;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::attention::MAX_HEAD_DIM;
use crate::error::{Error, Result};

/// Each token stores two vectors per layer and KV head: its key and its value.
const KV_TENSORS: u64 = 2;
/// Head dims are multiples of this, as the kernels take them (16-byte rows of 16-bit elements).
const HEAD_DIM_MULTIPLE: u64 = 8;
/// Bytes in the GiB of `--memory-gib`.
const GIB: f64 = (1u64 << 30) as f64;
/// 2^64 (exact in an f64): the memory budget in bytes must stay below it to fit a u64.
const MEMORY_BYTES_LIMIT: f64 = 18_446_744_073_709_551_616.0;
/// Tokens per page by default: vLLM's default block size.
const DEFAULT_PAGE_SIZE: u64 = 16;
/// Tokens per sequence by default.
const DEFAULT_CONTEXT: u64 = 4096;
/// GiB for the KV cache by default: an 80 GiB card (A100/H100) with nothing else on it.
const DEFAULT_MEMORY_GIB: f64 = 80.0;

/// A model's published attention shape (from its config.json: num_hidden_layers,
/// num_attention_heads, num_key_value_heads, head_dim).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ModelPreset {
    name: &'static str,
    layers: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
}

/// The shapes `--model` knows, by lower-case name.
const MODELS: &[ModelPreset] = &[
    ModelPreset {
        name: "llama-3-8b",
        layers: 32,
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
    },
    ModelPreset {
        name: "llama-3-70b",
        layers: 80,
        heads: 64,
        kv_heads: 8,
        head_dim: 128,
    },
    ModelPreset {
        name: "mistral-7b",
        layers: 32,
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
    },
    ModelPreset {
        name: "qwen2-72b",
        layers: 80,
        heads: 64,
        kv_heads: 8,
        head_dim: 128,
    },
    ModelPreset {
        name: "gemma-2-9b",
        layers: 42,
        heads: 16,
        kv_heads: 8,
        head_dim: 256,
    },
];

fn model_names() -> String {
    let names: Vec<_> = MODELS.iter().map(|m| m.name).collect();
    names.join(", ")
}

/// The preset named `name`, in any case.
fn find_model(name: &str) -> Result<&'static ModelPreset> {
    MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            Error::invalid(
                "model",
                format!("`{name}` is not a known model; known: {}", model_names()),
            )
        })
}

fn model_help() -> String {
    format!(
        "A model's published shape (layers, heads, KV heads, head dim), case-insensitive: {}. \
         --layers, --heads, --kv-heads and --head-dim given with it override its values",
        model_names()
    )
}

/// The element type the cache stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KvDtype {
    Bf16,
    F16,
}

impl KvDtype {
    fn name(self) -> &'static str {
        match self {
            KvDtype::Bf16 => "bf16",
            KvDtype::F16 => "f16",
        }
    }

    fn bytes(self) -> u64 {
        let size = match self {
            KvDtype::Bf16 => std::mem::size_of::<half::bf16>(),
            KvDtype::F16 => std::mem::size_of::<half::f16>(),
        };
        size as u64
    }
}

/// The flags of `cuattn kv-plan`.
#[derive(Args)]
pub struct KvPlanArgs {
    #[arg(long, value_name = "NAME", help = model_help())]
    model: Option<String>,
    /// Transformer layers (each keeps its own K and V); required without --model.
    #[arg(long, value_name = "L", required_unless_present = "model")]
    layers: Option<u64>,
    /// Query heads; when known (here or from --model), the MHA (KV heads = heads) and MQA (one KV
    /// head) counterparts are planned too.
    #[arg(long, value_name = "H")]
    heads: Option<u64>,
    /// KV heads (a divisor of --heads); required without --model.
    #[arg(long, value_name = "G", required_unless_present = "model")]
    kv_heads: Option<u64>,
    /// Elements per head, a multiple of 8 in 8..=256; required without --model.
    #[arg(long, value_name = "D", required_unless_present = "model")]
    head_dim: Option<u64>,
    /// Element type of the cached K and V.
    #[arg(long, value_enum, default_value_t = KvDtype::Bf16)]
    dtype: KvDtype,
    /// Tokens per page; a sequence occupies whole pages.
    #[arg(long, value_name = "P", default_value_t = DEFAULT_PAGE_SIZE)]
    page_size: u64,
    /// Tokens per sequence.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONTEXT)]
    context: u64,
    /// Memory for the KV cache in GiB (2^30 bytes): what the card has left after weights and
    /// activations.
    #[arg(long, value_name = "M", default_value_t = DEFAULT_MEMORY_GIB, allow_hyphen_values = true)]
    memory_gib: f64,
    /// Print one JSON object instead of a table (model, heads, mha and mqa are null when not
    /// known).
    #[arg(long)]
    json: bool,
}

/// The inputs of a plan: a preset's values overridden by the flags given.
#[derive(Clone, Debug, PartialEq)]
struct KvConfig {
    model: Option<&'static str>,
    layers: u64,
    heads: Option<u64>,
    kv_heads: u64,
    head_dim: u64,
    dtype: KvDtype,
    page_size: u64,
    context: u64,
    memory_gib: f64,
}

impl KvConfig {
    fn from_args(args: &KvPlanArgs) -> Result<KvConfig> {
        let preset = args.model.as_deref().map(find_model).transpose()?;
        // A flag wins over the preset; clap requires the flag when there is no preset.
        let pick = |flag: Option<u64>, from_preset: fn(&ModelPreset) -> u64, arg| {
            flag.or(preset.map(from_preset))
                .ok_or_else(|| Error::invalid(arg, "required without --model"))
        };
        Ok(KvConfig {
            model: preset.map(|p| p.name),
            layers: pick(args.layers, |p| p.layers, "layers")?,
            heads: args.heads.or(preset.map(|p| p.heads)),
            kv_heads: pick(args.kv_heads, |p| p.kv_heads, "kv_heads")?,
            head_dim: pick(args.head_dim, |p| p.head_dim, "head_dim")?,
            dtype: args.dtype,
            page_size: args.page_size,
            context: args.context,
            memory_gib: args.memory_gib,
        })
    }

    /// Checks every value; returns the memory budget in whole bytes.
    fn validate(&self) -> Result<u64> {
        for (arg, value) in [
            ("layers", self.layers),
            ("kv_heads", self.kv_heads),
            ("page_size", self.page_size),
            ("context", self.context),
        ] {
            if value == 0 {
                return Err(Error::invalid(arg, "0: must be >= 1"));
            }
        }
        let d = self.head_dim;
        if d == 0 || !d.is_multiple_of(HEAD_DIM_MULTIPLE) || d > MAX_HEAD_DIM as u64 {
            return Err(Error::invalid(
                "head_dim",
                format!(
                    "{d}: must be a multiple of {HEAD_DIM_MULTIPLE} in \
                     {HEAD_DIM_MULTIPLE}..={MAX_HEAD_DIM}"
                ),
            ));
        }
        if let Some(heads) = self.heads {
            if heads == 0 {
                return Err(Error::invalid("heads", "0: must be >= 1"));
            }
            if !heads.is_multiple_of(self.kv_heads) {
                return Err(Error::invalid(
                    "kv_heads",
                    format!(
                        "{}: must divide heads = {heads} (each KV head serves a whole group of \
                         query heads)",
                        self.kv_heads
                    ),
                ));
            }
        }
        let m = self.memory_gib;
        if !(m.is_finite() && m > 0.0) {
            return Err(Error::invalid(
                "memory_gib",
                format!("{m}: must be a finite number > 0"),
            ));
        }
        // Scaling by a power of two is exact, so the cast's truncation is the floor of M * 2^30.
        let bytes = m * GIB;
        if bytes >= MEMORY_BYTES_LIMIT {
            return Err(Error::invalid(
                "memory_gib",
                format!("{m}: {bytes} bytes must be below 2^64"),
            ));
        }
        Ok(bytes as u64)
    }

    /// The same model with `kv_heads` KV heads.
    fn with_kv_heads(&self, kv_heads: u64) -> KvConfig {
        KvConfig {
            kv_heads,
            ..self.clone()
        }
    }
}

/// The KV-cache footprint of one configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
struct KvPlan {
    kv_heads: u64,
    /// K and V of one token over every layer and KV head.
    bytes_per_token: u64,
    bytes_per_page: u64,
    /// ceil(context / page_size): a sequence occupies whole pages.
    pages_per_sequence: u64,
    /// floor(memory bytes / (pages_per_sequence * bytes_per_page)).
    max_sequences: u64,
}

impl KvPlan {
    /// Validates `config` and sizes its cache; an overflow of 64-bit byte counts is an invalid
    /// argument, not a wrapped number.
    fn new(config: &KvConfig) -> Result<KvPlan> {
        let memory_bytes = config.validate()?;
        let element_bytes = config.dtype.bytes();
        // bytes_per_token = 2 (K and V) x layers x kv_heads x head_dim x element bytes
        let bytes_per_token = [
            config.layers,
            config.kv_heads,
            config.head_dim,
            element_bytes,
        ]
        .into_iter()
        .try_fold(KV_TENSORS, u64::checked_mul)
        .ok_or_else(|| {
            Error::invalid(
                "layers",
                format!(
                    "{KV_TENSORS} (K and V) x {} layers x {} KV heads x head dim {} x {} \
                         bytes a token overflows 64 bits",
                    config.layers, config.kv_heads, config.head_dim, element_bytes
                ),
            )
        })?;
        let bytes_per_page = bytes_per_token
            .checked_mul(config.page_size)
            .ok_or_else(|| {
                Error::invalid(
                    "page_size",
                    format!(
                        "{} tokens x {bytes_per_token} bytes a token overflows 64 bits",
                        config.page_size
                    ),
                )
            })?;
        let pages_per_sequence = config.context.div_ceil(config.page_size);
        // Two u64 factors: the product fits a u128, and is >= 1 after validation.
        let sequence_bytes = u128::from(pages_per_sequence) * u128::from(bytes_per_page);
        let max_sequences = match u64::try_from(sequence_bytes) {
            Ok(s) => memory_bytes / s,
            // A sequence of 2^64 bytes or more exceeds any budget, which is below 2^64 bytes.
            Err(_) => 0,
        };
        Ok(KvPlan {
            kv_heads: config.kv_heads,
            bytes_per_token,
            bytes_per_page,
            pages_per_sequence,
            max_sequences,
        })
    }
}

/// A configuration's plan and, when its query heads are known, those of its MHA and MQA
/// counterparts.
#[derive(Clone, Debug, PartialEq)]
struct KvReport {
    config: KvConfig,
    plan: KvPlan,
    mha: Option<KvPlan>,
    mqa: Option<KvPlan>,
}

impl KvReport {
    fn new(config: KvConfig) -> Result<KvReport> {
        let plan = KvPlan::new(&config)?;
        let counterpart = |kv_heads| KvPlan::new(&config.with_kv_heads(kv_heads));
        let mha = config.heads.map(counterpart).transpose()?;
        let mqa = config.heads.map(|_| counterpart(1)).transpose()?;
        Ok(KvReport {
            config,
            plan,
            mha,
            mqa,
        })
    }

    /// One JSON object: the inputs, the plan's numbers at the top level, and `mha`/`mqa`.
    fn to_json(&self) -> String {
        let c = &self.config;
        crate::json::to_line(&KvReportJson {
            model: c.model,
            layers: c.layers,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            dtype: c.dtype.name(),
            bytes_per_element: c.dtype.bytes(),
            page_size: c.page_size,
            context: c.context,
            memory_gib: c.memory_gib,
            bytes_per_token: self.plan.bytes_per_token,
            bytes_per_page: self.plan.bytes_per_page,
            pages_per_sequence: self.plan.pages_per_sequence,
            max_sequences: self.plan.max_sequences,
            mha: self.mha,
            mqa: self.mqa,
        })
    }

    /// The given configuration's kind: MHA, GQA or MQA, when its query heads are known.
    fn kind(&self) -> Option<&'static str> {
        let heads = self.config.heads?;
        Some(match self.config.kv_heads {
            g if g == heads => "MHA",
            1 => "MQA",
            _ => "GQA",
        })
    }
}

/// A [`KvReport`] in JSON: the inputs, the plan's numbers, the counterparts' plans.
#[derive(Serialize)]
struct KvReportJson {
    model: Option<&'static str>,
    layers: u64,
    heads: Option<u64>,
    kv_heads: u64,
    head_dim: u64,
    dtype: &'static str,
    bytes_per_element: u64,
    page_size: u64,
    context: u64,
    memory_gib: f64,
    bytes_per_token: u64,
    bytes_per_page: u64,
    pages_per_sequence: u64,
    max_sequences: u64,
    mha: Option<KvPlan>,
    mqa: Option<KvPlan>,
}

impl fmt::Display for KvReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        if let Some(model) = c.model {
            write!(f, "{model}: ")?;
        }
        write!(f, "{} layers, ", c.layers)?;
        if let Some(heads) = c.heads {
            write!(f, "{heads} heads, ")?;
        }
        writeln!(
            f,
            "{} KV heads, head dim {}, {} ({} bytes an element)",
            c.kv_heads,
            c.head_dim,
            c.dtype.name(),
            c.dtype.bytes()
        )?;
        writeln!(
            f,
            "pages of {} tokens, sequences of {} tokens, {} GiB for the KV cache",
            c.page_size, c.context, c.memory_gib
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<12} {:>8} {:>12} {:>12} {:>10} {:>14}",
            "layout", "kv heads", "bytes/token", "bytes/page", "pages/seq", "max sequences"
        )?;
        let given = self
            .kind()
            .map_or("given".to_string(), |k| format!("given ({k})"));
        let mut rows = vec![(given.as_str(), self.plan)];
        rows.extend(self.mha.map(|p| ("MHA", p)));
        rows.extend(self.mqa.map(|p| ("MQA", p)));
        for (label, p) in rows {
            writeln!(
                f,
                "{label:<12} {:>8} {:>12} {:>12} {:>10} {:>14}",
                p.kv_heads,
                p.bytes_per_token,
                p.bytes_per_page,
                p.pages_per_sequence,
                p.max_sequences
            )?;
        }
        if c.heads.is_none() {
            writeln!(f, "(give --heads for the MHA and MQA counterparts)")?;
        }
        Ok(())
    }
}

/// Runs `cuattn kv-plan`.
pub(super) fn kv_plan(args: &KvPlanArgs) -> Result<ExitCode> {
    let report = KvReport::new(KvConfig::from_args(args)?)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes in one GiB, as an integer.
    const GIB_BYTES: u64 = 1 << 30;

    fn llama_3_8b() -> KvConfig {
        let m = find_model("llama-3-8b").unwrap();
        KvConfig {
            model: Some(m.name),
            layers: m.layers,
            heads: Some(m.heads),
            kv_heads: m.kv_heads,
            head_dim: m.head_dim,
            dtype: KvDtype::Bf16,
            page_size: DEFAULT_PAGE_SIZE,
            context: DEFAULT_CONTEXT,
            memory_gib: DEFAULT_MEMORY_GIB,
        }
    }

    fn invalid_arg(config: &KvConfig) -> &'static str {
        match KvPlan::new(config) {
            Err(Error::InvalidArgument { arg, msg }) => {
                println!("{config:?} -> `{arg}`: {msg}");
                arg
            }
            other => panic!("{config:?}: expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn llama_3_8b_bf16_keeps_128_kib_a_token_and_160_sequences_in_80_gib() {
        let plan = KvPlan::new(&llama_3_8b()).unwrap();
        // 2 (K and V) x 32 layers x 8 KV heads x 128 x 2 bytes
        assert_eq!(plan.bytes_per_token, 2 * 32 * 8 * 128 * 2);
        assert_eq!(plan.bytes_per_page, plan.bytes_per_token * 16);
        assert_eq!(plan.pages_per_sequence, 4096 / 16);
        // A sequence is 4096 x 128 KiB = 512 MiB: two to the GiB.
        assert_eq!(plan.max_sequences, 80 * 2);
    }

    #[test]
    fn f16_takes_as_many_bytes_as_bf16() {
        let bf16 = KvPlan::new(&llama_3_8b()).unwrap();
        let f16 = KvPlan::new(&KvConfig {
            dtype: KvDtype::F16,
            ..llama_3_8b()
        })
        .unwrap();
        assert_eq!(bf16, f16);
    }

    #[test]
    fn a_partial_page_counts_as_a_whole_page() {
        for (context, pages) in [(1, 1), (16, 1), (17, 2), (4096, 256), (4097, 257)] {
            let plan = KvPlan::new(&KvConfig {
                context,
                ..llama_3_8b()
            })
            .unwrap();
            println!("context {context}: {} pages", plan.pages_per_sequence);
            assert_eq!(plan.pages_per_sequence, pages);
        }
    }

    #[test]
    fn max_sequences_counts_whole_sequences_of_whole_pages() {
        // 257 pages of 2 MiB: 514 MiB a sequence.
        let config = KvConfig {
            context: 4097,
            memory_gib: 1.5,
            ..llama_3_8b()
        };
        let plan = KvPlan::new(&config).unwrap();
        let sequence_bytes = 257 * 16 * 131_072;
        assert_eq!(plan.max_sequences, (3 * GIB_BYTES / 2) / sequence_bytes);
        assert_eq!(plan.max_sequences, 2);
        // Exactly three sequences fit; one byte less fits two.
        let exact = (3 * sequence_bytes) as f64 / GIB;
        let fits = |memory_gib| {
            KvPlan::new(&KvConfig {
                memory_gib,
                ..config.clone()
            })
            .unwrap()
            .max_sequences
        };
        assert_eq!(fits(exact), 3);
        assert_eq!(fits((3 * sequence_bytes - 1) as f64 / GIB), 2);
    }

    #[test]
    fn a_sequence_larger_than_the_memory_fits_zero_times() {
        let plan = KvPlan::new(&KvConfig {
            memory_gib: 0.25,
            ..llama_3_8b()
        })
        .unwrap();
        assert_eq!(plan.max_sequences, 0);
    }

    #[test]
    fn a_sequence_beyond_2_pow_64_bytes_fits_zero_times_without_overflow() {
        // 2^40 bytes a page x 2^40 pages = 2^80 bytes.
        let plan = KvPlan::new(&KvConfig {
            layers: 1 << 23,
            kv_heads: 1,
            page_size: 1 << 8,
            context: 1 << 48,
            ..llama_3_8b()
        })
        .unwrap();
        assert_eq!(plan.bytes_per_page, 1 << 40);
        assert_eq!(plan.pages_per_sequence, 1 << 40);
        assert_eq!(plan.max_sequences, 0);
    }

    #[test]
    fn gqa_report_has_mha_at_4x_and_mqa_at_an_eighth() {
        let report = KvReport::new(llama_3_8b()).unwrap();
        let (mha, mqa) = (report.mha.unwrap(), report.mqa.unwrap());
        assert_eq!(report.kind(), Some("GQA"));
        assert_eq!(mha.kv_heads, 32);
        assert_eq!(mha.bytes_per_token, 4 * report.plan.bytes_per_token);
        assert_eq!(mha.max_sequences, report.plan.max_sequences / 4);
        assert_eq!(mqa.kv_heads, 1);
        assert_eq!(8 * mqa.bytes_per_token, report.plan.bytes_per_token);
        assert_eq!(mqa.max_sequences, report.plan.max_sequences * 8);
    }

    #[test]
    fn without_heads_there_are_no_counterparts() {
        let report = KvReport::new(KvConfig {
            heads: None,
            ..llama_3_8b()
        })
        .unwrap();
        assert_eq!(report.kind(), None);
        assert_eq!((report.mha, report.mqa), (None, None));
        let text = report.to_string();
        print!("{text}");
        assert!(text.contains("--heads"), "{text}");
    }

    #[test]
    fn every_preset_is_a_valid_gqa_shape() {
        for m in MODELS {
            let config = KvConfig {
                model: Some(m.name),
                layers: m.layers,
                heads: Some(m.heads),
                kv_heads: m.kv_heads,
                head_dim: m.head_dim,
                ..llama_3_8b()
            };
            let report = KvReport::new(config).unwrap();
            println!("{}: {:?}", m.name, report.plan);
            assert_eq!(report.kind(), Some("GQA"), "{}", m.name);
            assert_eq!(m.name, m.name.to_lowercase(), "names are stored lower-case");
        }
    }

    #[test]
    fn model_names_match_in_any_case_and_unknown_ones_list_the_known() {
        assert_eq!(find_model("Llama-3-70B").unwrap().name, "llama-3-70b");
        assert_eq!(find_model("GEMMA-2-9B").unwrap().head_dim, 256);
        let err = find_model("llama-4").unwrap_err().to_string();
        println!("{err}");
        assert!(err.contains("`model`") && err.contains("llama-4"), "{err}");
        for m in MODELS {
            assert!(err.contains(m.name), "{err}");
        }
    }

    #[test]
    fn head_dims_outside_multiples_of_8_up_to_256_are_invalid() {
        for head_dim in [0, 4, 100, 257, 264] {
            let arg = invalid_arg(&KvConfig {
                head_dim,
                ..llama_3_8b()
            });
            assert_eq!(arg, "head_dim");
        }
        for head_dim in [8, 96, 256] {
            KvPlan::new(&KvConfig {
                head_dim,
                ..llama_3_8b()
            })
            .unwrap();
        }
    }

    #[test]
    fn zero_counts_are_invalid_and_named() {
        let base = llama_3_8b();
        let cases = [
            (
                KvConfig {
                    layers: 0,
                    ..base.clone()
                },
                "layers",
            ),
            (
                KvConfig {
                    kv_heads: 0,
                    ..base.clone()
                },
                "kv_heads",
            ),
            (
                KvConfig {
                    heads: Some(0),
                    ..base.clone()
                },
                "heads",
            ),
            (
                KvConfig {
                    page_size: 0,
                    ..base.clone()
                },
                "page_size",
            ),
            (
                KvConfig {
                    context: 0,
                    ..base.clone()
                },
                "context",
            ),
        ];
        for (config, want) in cases {
            assert_eq!(invalid_arg(&config), want);
        }
    }

    #[test]
    fn kv_heads_not_dividing_heads_is_invalid() {
        let arg = invalid_arg(&KvConfig {
            heads: Some(32),
            kv_heads: 6,
            ..llama_3_8b()
        });
        assert_eq!(arg, "kv_heads");
    }

    #[test]
    fn memory_that_is_not_a_finite_positive_number_below_2_pow_64_bytes_is_invalid() {
        // 2^34 GiB = 2^64 bytes.
        let too_much = (1u64 << 34) as f64;
        for memory_gib in [0.0, -1.0, f64::NAN, f64::INFINITY, too_much] {
            let arg = invalid_arg(&KvConfig {
                memory_gib,
                ..llama_3_8b()
            });
            assert_eq!(arg, "memory_gib");
        }
        // Just below: 2^64 - 2^30 bytes.
        KvPlan::new(&KvConfig {
            memory_gib: too_much - 1.0,
            ..llama_3_8b()
        })
        .unwrap();
    }

    #[test]
    fn byte_counts_beyond_64_bits_are_invalid_not_wrapped() {
        // 2 x 2^60 layers x 8 x 128 x 2 bytes = 2^72.
        let arg = invalid_arg(&KvConfig {
            layers: 1 << 60,
            ..llama_3_8b()
        });
        assert_eq!(arg, "layers");
        // 2^17 bytes a token x 2^50 tokens a page = 2^67.
        let arg = invalid_arg(&KvConfig {
            page_size: 1 << 50,
            ..llama_3_8b()
        });
        assert_eq!(arg, "page_size");
        // The MHA counterpart overflows where the GQA configuration does not: 2^62 bytes x 4.
        let err = KvReport::new(KvConfig {
            layers: 1 << 50,
            page_size: 1,
            ..llama_3_8b()
        })
        .unwrap_err();
        println!("{err}");
        assert!(err.to_string().contains("overflows"), "{err}");
    }

    #[test]
    fn json_has_inputs_plan_and_counterparts() {
        let json = KvReport::new(llama_3_8b()).unwrap().to_json();
        println!("{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["model"], "llama-3-8b");
        assert_eq!(v["dtype"], "bf16");
        assert_eq!(v["memory_gib"], 80.0);
        assert_eq!(v["bytes_per_token"], 131_072);
        assert_eq!(v["mha"]["bytes_per_token"], 4 * 131_072);
        assert_eq!(v["mqa"]["kv_heads"], 1);
        let no_heads = KvReport::new(KvConfig {
            model: None,
            heads: None,
            ..llama_3_8b()
        })
        .unwrap()
        .to_json();
        let v: serde_json::Value = serde_json::from_str(&no_heads).unwrap();
        assert!(v["model"].is_null() && v["heads"].is_null(), "{no_heads}");
        assert!(v["mha"].is_null() && v["mqa"].is_null(), "{no_heads}");
    }
}
