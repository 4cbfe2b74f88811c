//! The classic sparse-attention patterns as block matrices: local, strided (Sparse Transformer),
//! dilated, Longformer and BigBird, in block coordinates and bottom-right aligned as the causal
//! mask is.

use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::BlockMatrix;
use crate::error::{Error, Result};

/// A block pattern. Query block `i`'s diagonal key block is `D(i) = i + nk - nq` (bottom-right
/// aligned, as the causal mask is), and key block `j` is visible to query block `i` when:
///
/// - `local:w=W`: `|j - D(i)| <= W`;
/// - `strided:w=W,s=S` (Sparse Transformer): local `W`, or `(j + 1) % S == 0` (every `S`-th
///   block a summary column that all query blocks see);
/// - `dilated:w=W,d=D`: `|j - D(i)| <= W * D` and `(j - D(i)) % D == 0`;
/// - `longformer:w=W,global=G`: local `W`, or `j < G` (global key blocks, seen by all), or `i <
///   G` (global query blocks, which see everything);
/// - `bigbird:w=W,global=G,random=R,seed=X`: Longformer's, plus `R` distinct key blocks per
///   query block drawn (seeded) among those not yet visible, fewer when fewer remain; the same
///   for every head unless `per_head` (`--per-head-random`), where head `h` draws from its own
///   generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// `local:w=W`: the key blocks within `W` of the diagonal.
    Local {
        /// Key blocks each side of the diagonal.
        w: usize,
    },
    /// `strided:w=W,s=S`: local, plus every `S`-th key block.
    Strided {
        /// Key blocks each side of the diagonal.
        w: usize,
        /// The stride of the summary columns, at least 1.
        s: usize,
    },
    /// `dilated:w=W,d=D`: every `D`-th key block within `W * D` of the diagonal.
    Dilated {
        /// Visible key blocks each side of the diagonal.
        w: usize,
        /// The dilation, at least 1.
        d: usize,
    },
    /// `longformer:w=W,global=G`: local, plus global key and query blocks.
    Longformer {
        /// Key blocks each side of the diagonal.
        w: usize,
        /// The first `G` key blocks are seen by all, the first `G` query blocks see all.
        global: usize,
    },
    /// `bigbird:w=W,global=G,random=R,seed=X`: Longformer's, plus random key blocks.
    BigBird {
        /// Key blocks each side of the diagonal.
        w: usize,
        /// Global key and query blocks, as Longformer's.
        global: usize,
        /// Random key blocks each query block draws among those not yet visible.
        random: usize,
        /// Seeds the draws.
        seed: u64,
        /// Whether each head draws its own random blocks.
        per_head: bool,
    },
}

impl Pattern {
    /// The pattern's name, as written before the colon.
    pub fn name(&self) -> &'static str {
        match self {
            Pattern::Local { .. } => "local",
            Pattern::Strided { .. } => "strided",
            Pattern::Dilated { .. } => "dilated",
            Pattern::Longformer { .. } => "longformer",
            Pattern::BigBird { .. } => "bigbird",
        }
    }

    /// Whether heads get different blocks (BigBird with `per_head`).
    pub fn per_head(&self) -> bool {
        matches!(self, Pattern::BigBird { per_head: true, .. })
    }

    /// Whether key block `j` is visible to query block `i` on an `nq` x `nk` grid, before
    /// BigBird's random blocks.
    fn sees(&self, i: usize, j: usize, nq: usize, nk: usize) -> bool {
        let offset = j as i64 - (i as i64 + nk as i64 - nq as i64); // j - D(i)
        let local = |w: usize| offset.unsigned_abs() <= w as u64;
        match *self {
            Pattern::Local { w } => local(w),
            Pattern::Strided { w, s } => local(w) || (j + 1).is_multiple_of(s),
            Pattern::Dilated { w, d } => {
                offset.unsigned_abs() <= (w * d) as u64 && offset.rem_euclid(d as i64) == 0
            }
            Pattern::Longformer { w, global } | Pattern::BigBird { w, global, .. } => {
                local(w) || j < global || i < global
            }
        }
    }

    /// The pattern's block matrix `[1, heads or 1, nq, nk]`: one head unless the pattern differs
    /// per head.
    pub fn blocks(&self, heads: usize, nq: usize, nk: usize) -> Result<BlockMatrix> {
        let mask_heads = if self.per_head() { heads } else { 1 };
        let mut blocks = vec![false; mask_heads * nq * nk];
        for (h, head_blocks) in blocks.chunks_mut((nq * nk).max(1)).enumerate() {
            for i in 0..nq {
                let row = &mut head_blocks[i * nk..(i + 1) * nk];
                for (j, seen) in row.iter_mut().enumerate() {
                    *seen = self.sees(i, j, nq, nk);
                }
            }
            if let Pattern::BigBird {
                random,
                seed,
                per_head,
                ..
            } = *self
            {
                // One generator per head (per_head) or one for the shared head; rows draw in
                // order, each among its blocks not yet visible.
                let stream = if per_head { h as u64 } else { 0 };
                let mut rng =
                    StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                for i in 0..nq {
                    let row = &mut head_blocks[i * nk..(i + 1) * nk];
                    let mut unseen: Vec<usize> = (0..nk).filter(|&j| !row[j]).collect();
                    unseen.shuffle(&mut rng);
                    for &j in unseen.iter().take(random) {
                        row[j] = true;
                    }
                }
            }
        }
        BlockMatrix::new([1, mask_heads, nq, nk], blocks)
    }
}

impl Pattern {
    /// The pattern over sequences of `lengths` (seqlen_q, seqlen_k) in blocks of `block_size`:
    /// each sequence's own grid `(ceil(seqlen_q / block_q), ceil(seqlen_k / block_k))`, so that
    /// its diagonal is its own (bottom-right aligned), placed in the top-left corner of the
    /// longest lengths' grid. `[sequences, heads or 1, nq, nk]`; one sequence gives batch 1.
    pub fn blocks_for(
        &self,
        heads: usize,
        (block_q, block_k): (usize, usize),
        lengths: &[(usize, usize)],
    ) -> Result<BlockMatrix> {
        if block_q == 0 || block_k == 0 || lengths.is_empty() {
            return Err(Error::invalid(
                "lengths",
                format!("{lengths:?} in blocks of ({block_q}, {block_k}): blocks positive, lengths given"),
            ));
        }
        let grid = |&(sq, sk): &(usize, usize)| (sq.div_ceil(block_q), sk.div_ceil(block_k));
        let nq = lengths.iter().map(|l| grid(l).0).max().unwrap_or(0);
        let nk = lengths.iter().map(|l| grid(l).1).max().unwrap_or(0);
        let mask_heads = if self.per_head() { heads } else { 1 };
        let mut blocks = vec![false; lengths.len() * mask_heads * nq * nk];
        for (b, length) in lengths.iter().enumerate() {
            let (own_q, own_k) = grid(length);
            let own = self.blocks(heads, own_q, own_k)?;
            for h in 0..mask_heads {
                for i in 0..own_q {
                    for j in 0..own_k {
                        blocks[((b * mask_heads + h) * nq + i) * nk + j] = own.get(0, h, i, j);
                    }
                }
            }
        }
        BlockMatrix::new([lengths.len(), mask_heads, nq, nk], blocks)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Pattern::Local { w } => write!(f, "local:w={w}"),
            Pattern::Strided { w, s } => write!(f, "strided:w={w},s={s}"),
            Pattern::Dilated { w, d } => write!(f, "dilated:w={w},d={d}"),
            Pattern::Longformer { w, global } => write!(f, "longformer:w={w},global={global}"),
            Pattern::BigBird {
                w,
                global,
                random,
                seed,
                per_head,
            } => {
                write!(
                    f,
                    "bigbird:w={w},global={global},random={random},seed={seed}"
                )?;
                if per_head {
                    write!(f, ",per_head=1")?;
                }
                Ok(())
            }
        }
    }
}

/// The keys each pattern takes, required ones first (`per_head` is BigBird's optional flag).
fn keys_of(name: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match name {
        "local" => (&["w"], &[]),
        "strided" => (&["w", "s"], &[]),
        "dilated" => (&["w", "d"], &[]),
        "longformer" => (&["w", "global"], &[]),
        "bigbird" => (&["w", "global", "random", "seed"], &["per_head"]),
        _ => return None,
    })
}

impl FromStr for Pattern {
    type Err = Error;

    /// `name:key=value,...`, e.g. `local:w=2` or `bigbird:w=1,global=1,random=2,seed=7`.
    fn from_str(text: &str) -> Result<Pattern> {
        let invalid = |why: String| Error::invalid("pattern", format!("{text:?}: {why}"));
        let (name, args) = text.split_once(':').unwrap_or((text, ""));
        let (required, optional) = keys_of(name).ok_or_else(|| {
            invalid("unknown pattern: local, strided, dilated, longformer or bigbird".into())
        })?;
        let mut values: Vec<(&str, u64)> = Vec::new();
        for part in args.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| invalid(format!("{part:?} is not key=value")))?;
            if !required.contains(&key) && !optional.contains(&key) {
                return Err(invalid(format!(
                    "{name} takes {}, not {key:?}",
                    required
                        .iter()
                        .chain(optional)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if values.iter().any(|(k, _)| *k == key) {
                return Err(invalid(format!("{key} given twice")));
            }
            let value: u64 = value
                .parse()
                .map_err(|_| invalid(format!("{key}={value:?} is not a non-negative integer")))?;
            values.push((key, value));
        }
        let get = |key: &str| values.iter().find(|(k, _)| *k == key).map(|&(_, v)| v);
        if let Some(missing) = required.iter().find(|k| get(k).is_none()) {
            return Err(invalid(format!(
                "{name} needs {}; {missing} is missing",
                required.join(", ")
            )));
        }
        let size = |key: &str, min: u64| -> Result<usize> {
            let value = get(key).unwrap_or(0);
            if value < min || value > u32::MAX as u64 {
                return Err(invalid(format!(
                    "{key}={value}: must be in {min}..={}",
                    u32::MAX
                )));
            }
            Ok(value as usize)
        };
        Ok(match name {
            "local" => Pattern::Local { w: size("w", 0)? },
            "strided" => Pattern::Strided {
                w: size("w", 0)?,
                s: size("s", 1)?,
            },
            "dilated" => Pattern::Dilated {
                w: size("w", 0)?,
                d: size("d", 1)?,
            },
            "longformer" => Pattern::Longformer {
                w: size("w", 0)?,
                global: size("global", 0)?,
            },
            _ => Pattern::BigBird {
                w: size("w", 0)?,
                global: size("global", 0)?,
                random: size("random", 0)?,
                seed: get("seed").unwrap_or(0),
                per_head: match get("per_head") {
                    None | Some(0) => false,
                    Some(1) => true,
                    Some(v) => return Err(invalid(format!("per_head={v}: must be 0 or 1"))),
                },
            },
        })
    }
}
