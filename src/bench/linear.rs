//! The linear attention benchmark (`cuattn bench --family linear`): causal linear attention
//! ([`linear_attention_into`], elu1 features) against cuattn's own exact flash kernel on the same
//! shape, timed in the same run, from 1k to 64k tokens; and a fit of the time against the length.
//!
//! Shapes: one sequence of [`LENGTHS`] tokens (1k, 2k, ... 64k), 16 query heads over 16 KV heads,
//! head dim (and value dim) 128, bf16, causal; elu1 features (m = head_dim = 128), so the state
//! of each KV head is 128 x 128 in float32. Each length has a flash row (the causal mask, the
//! prefill family's kernel) and a linear row.
//!
//! Timing as the other families': the linear call's workspace is made by an untimed first run,
//! then each timed run (CUDA events after an L2 flush, the median of about 150 ms of runs) times
//! the call alone, the feature kernel and the state walker together. Each row's output is poisoned
//! with NaN first and checked finite after the runs.
//!
//! The report: each row's median time and, for a linear row, its ratio to the flash row of the
//! same length; per kernel two fits of time against length over every length measured
//! ([`Fit`]): a least-squares line `ms = slope * tokens + intercept` with its R^2, and a power
//! law `ms = c * tokens^exponent` fitted on the logs (linear time has exponent 1, causal exact
//! attention tends to 2 as the length grows).
//!
//! Targets ([`FASTER_FROM`], [`EXPONENT_RANGE`], set for an H200): linear attention faster than
//! the flash kernel at every length from 4k tokens on, and its time growing linearly with the
//! length: the exponent of its power-law fit over 1k..64k within 0.9..1.15.

use std::fmt;

use half::bf16;
use serde::Serialize;

use super::{spread_cell, PrefillInputs, PrefillShape, ReportHeadJson, RunBudget, Spread, Timer};
use crate::approx::{linear_attention_into, Feature, LinearOptions, LinearWorkspace};
use crate::attention::{attention_into, Kernel};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Tokens of the one sequence of each GPU length.
pub const LENGTHS: [usize; 7] = [1024, 2048, 4096, 8192, 16384, 32768, 65536];
/// The lengths of a GPU smoke run (`--quick`).
pub const QUICK_LENGTHS: [usize; 3] = [1024, 4096, 16384];
/// The emulator's lengths (with the tiny shape of [`emulator_shape`]).
pub const EMULATOR_LENGTHS: [usize; 3] = [64, 150, 256];
/// (query heads, KV heads) of the GPU shapes.
pub const HEADS: (usize, usize) = (16, 16);
/// Head dim (and value dim) of the GPU shapes.
pub const HEAD_DIM: usize = 128;
/// The target: linear attention faster than flash at every length from this one on.
pub const FASTER_FROM: usize = 4096;
/// The target: the exponent of linear attention's power-law fit within this range.
pub const EXPONENT_RANGE: (f64, f64) = (0.9, 1.15);

/// Which kernel a row times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearBenchKernel {
    /// The exact flash kernel, causal.
    Flash,
    /// Causal linear attention, elu1 features.
    Linear,
}

impl LinearBenchKernel {
    /// The kernel's name in the tables and the JSON (`flash`, `linear_elu1`).
    pub fn name(self) -> &'static str {
        match self {
            LinearBenchKernel::Flash => Kernel::Flash.name(),
            LinearBenchKernel::Linear => "linear_elu1",
        }
    }
}

/// The GPU shape of `seqlen` tokens: batch 1, [`HEADS`], [`HEAD_DIM`], causal.
pub fn gpu_shape(seqlen: usize) -> PrefillShape {
    PrefillShape {
        batch: 1,
        seqlen,
        seqlen_k: seqlen,
        heads: HEADS.0,
        kv_heads: HEADS.1,
        head_dim: HEAD_DIM,
        causal: true,
    }
}

/// The emulator's shape of `seqlen` tokens: 2 query heads over 1 KV head, hd64, causal.
pub fn emulator_shape(seqlen: usize) -> PrefillShape {
    PrefillShape {
        batch: 1,
        seqlen,
        seqlen_k: seqlen,
        heads: 2,
        kv_heads: 1,
        head_dim: 64,
        causal: true,
    }
}

/// The shapes [`run_linear`] times on `device` with or without `quick`, shortest first.
pub fn shapes_for(device: &Device, quick: bool) -> Vec<PrefillShape> {
    match (device.is_cuda(), quick) {
        (false, _) => EMULATOR_LENGTHS.map(emulator_shape).to_vec(),
        (true, true) => QUICK_LENGTHS.map(gpu_shape).to_vec(),
        (true, false) => LENGTHS.map(gpu_shape).to_vec(),
    }
}

/// One kernel on one shape.
#[derive(Clone, Debug)]
pub struct LinearRow {
    /// The kernel timed.
    pub kernel: LinearBenchKernel,
    /// The problem (hd128, 16/16 heads on a GPU).
    pub shape: PrefillShape,
    /// Median milliseconds of the timed runs (NaN when the row did not run).
    pub ms: f64,
    /// The fastest timed run, in milliseconds (NaN when the row did not run).
    pub min_ms: f64,
    /// The slowest timed run, in milliseconds (NaN when the row did not run).
    pub max_ms: f64,
    /// Timed runs.
    pub runs: usize,
    /// A linear row's median over the flash row's of the same length (NaN without one; 1 for a
    /// flash row).
    pub ratio_to_flash: f64,
    /// Why the row failed.
    pub error: Option<String>,
}

impl LinearRow {
    fn json(&self) -> LinearRowJson<'_> {
        let s = &self.shape;
        LinearRowJson {
            kernel: self.kernel.name(),
            shape: s.label(),
            batch: s.batch,
            seqlen: s.seqlen,
            heads: s.heads,
            kv_heads: s.kv_heads,
            head_dim: s.head_dim,
            value_dim: s.head_dim,
            causal: s.causal,
            dtype: "bf16",
            feature: match self.kernel {
                LinearBenchKernel::Linear => Some("elu1"),
                LinearBenchKernel::Flash => None,
            },
            ms: self.ms,
            min_ms: self.min_ms,
            max_ms: self.max_ms,
            runs: self.runs,
            ratio_to_flash: self.ratio_to_flash,
            error: self.error.as_deref(),
        }
    }
}

/// A [`LinearRow`] in the report's JSON.
#[derive(Serialize)]
struct LinearRowJson<'a> {
    kernel: &'static str,
    shape: String,
    batch: usize,
    seqlen: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    value_dim: usize,
    causal: bool,
    dtype: &'static str,
    feature: Option<&'static str>,
    ms: f64,
    min_ms: f64,
    max_ms: f64,
    runs: usize,
    ratio_to_flash: f64,
    error: Option<&'a str>,
}

/// The table's column titles, aligned with [`LinearRow`]'s `Display`.
pub fn table_header() -> String {
    format!(
        "{:<12} {:<24} {:>29} {:>8}",
        "kernel", "shape", "ms [min, max]", "/flash"
    )
}

impl fmt::Display for LinearRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<12} {:<24} ", self.kernel.name(), self.shape.label())?;
        match &self.error {
            Some(e) => write!(f, "error: {e}"),
            None => write!(
                f,
                "{:>29} {:>8.3}",
                spread_cell(self.ms, self.min_ms, self.max_ms, 4),
                self.ratio_to_flash
            ),
        }
    }
}

/// Fits of one kernel's time against the length, over the lengths it ran.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Fit {
    /// Lengths fitted.
    pub points: usize,
    /// Least squares `ms = slope * tokens + intercept`: milliseconds per token.
    pub slope_ms_per_token: f64,
    /// Least squares' intercept, in milliseconds.
    pub intercept_ms: f64,
    /// The line's coefficient of determination, 1 - SS_res / SS_tot.
    pub r2: f64,
    /// Least squares on the logs, `ln ms = exponent * ln tokens + ln c`.
    pub exponent: f64,
}

impl Fit {
    /// Both fits over `(tokens, ms)` points; `None` with fewer than two distinct lengths or a
    /// time that is not positive and finite.
    pub fn of(points: &[(f64, f64)]) -> Option<Fit> {
        if points
            .iter()
            .any(|&(x, y)| !(x > 0.0 && y > 0.0 && y.is_finite()))
        {
            return None;
        }
        let (slope, intercept, r2) = least_squares(points)?;
        let logs: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x.ln(), y.ln())).collect();
        let (exponent, _, _) = least_squares(&logs)?;
        Some(Fit {
            points: points.len(),
            slope_ms_per_token: slope,
            intercept_ms: intercept,
            r2,
            exponent,
        })
    }
}

impl fmt::Display for Fit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ms = {:.4} x (tokens / 1024) {} {:.4} (R^2 {:.4}); ms ~ tokens^{:.3} (log-log, {} \
             lengths)",
            self.slope_ms_per_token * 1024.0,
            if self.intercept_ms < 0.0 { "-" } else { "+" },
            self.intercept_ms.abs(),
            self.r2,
            self.exponent,
            self.points
        )
    }
}

/// (slope, intercept, R^2) of the least-squares line through `points`; `None` with fewer than
/// two distinct x. R^2 is 1 when every y is equal (the line explains all there is).
fn least_squares(points: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    if points.len() < 2 || sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = mean_y - slope * mean_x;
    let ss_tot: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    let ss_res: f64 = points
        .iter()
        .map(|p| (p.1 - slope * p.0 - intercept).powi(2))
        .sum();
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        1.0
    };
    Some((slope, intercept, r2))
}

/// Where a run stands against one target.
#[derive(Clone, Debug, Serialize)]
pub struct LinearVerdict {
    /// `faster_than_flash` or `linear_growth`.
    pub target: &'static str,
    /// Whether it was met (`None` when the run has nothing to judge it by).
    pub met: Option<bool>,
    /// What the run shows against the target, in words (the report's verdict line).
    pub text: String,
}

/// What to benchmark.
#[derive(Clone, Debug, Default)]
pub struct LinearBenchConfig {
    /// GPU: three lengths (1k, 4k, 16k), fewer runs. Emulator: required; tiny shapes.
    pub quick: bool,
    /// The commit benchmarked, recorded in the report (the CLI takes it from `CUATTN_COMMIT`).
    pub commit: Option<String>,
}

/// A whole linear attention run.
#[derive(Clone, Debug)]
pub struct LinearReport {
    /// The device's name.
    pub device: String,
    /// Whether it ran on the emulator (no performance numbers).
    pub emulator: bool,
    /// Whether it was a quick run (fewer lengths and runs).
    pub quick: bool,
    /// The commit benchmarked, when given.
    pub commit: Option<String>,
    /// Bytes of the buffer cleared before each timed run to flush the L2 (0 on the emulator).
    pub l2_flush_bytes: usize,
    /// At each length the flash row, then the linear row.
    pub rows: Vec<LinearRow>,
}

impl LinearReport {
    /// The family's name in reports.
    pub const FAMILY: &'static str = "linear";

    /// The fits of `kernel`'s rows that ran.
    pub fn fit(&self, kernel: LinearBenchKernel) -> Option<Fit> {
        let points: Vec<(f64, f64)> = self
            .rows
            .iter()
            .filter(|r| r.kernel == kernel && r.error.is_none())
            .map(|r| (r.shape.seqlen as f64, r.ms))
            .collect();
        Fit::of(&points)
    }

    /// The run against both targets, judged on the rows of the target's shapes ([`gpu_shape`]:
    /// hd128, 16/16 heads) only; a run without them (the emulator's) has no verdict to give.
    pub fn verdicts(&self) -> Vec<LinearVerdict> {
        let target_rows: Vec<&LinearRow> = self
            .rows
            .iter()
            .filter(|r| r.shape == gpu_shape(r.shape.seqlen) && r.error.is_none())
            .collect();
        let judged: Vec<&LinearRow> = target_rows
            .iter()
            .copied()
            .filter(|r| {
                r.kernel == LinearBenchKernel::Linear
                    && r.shape.seqlen >= FASTER_FROM
                    && r.ratio_to_flash.is_finite()
            })
            .collect();
        let goal = format!("target faster than flash at every length from {FASTER_FROM} tokens");
        let faster = if judged.is_empty() {
            LinearVerdict {
                target: "faster_than_flash",
                met: None,
                text: format!(
                    "no length from {FASTER_FROM} tokens of the target's shape ran with both \
                     kernels ({goal})"
                ),
            }
        } else {
            let met = judged.iter().all(|r| r.ratio_to_flash < 1.0);
            let ratios: Vec<String> = judged
                .iter()
                .map(|r| format!("{}: {:.3}", r.shape.seqlen, r.ratio_to_flash))
                .collect();
            LinearVerdict {
                target: "faster_than_flash",
                met: Some(met),
                text: format!(
                    "linear / flash time (tokens: ratio) {} ({goal}): {}",
                    ratios.join(", "),
                    if met { "met" } else { "not met" }
                ),
            }
        };
        let (low, high) = EXPONENT_RANGE;
        let goal = format!("target exponent in {low}..{high}");
        let points: Vec<(f64, f64)> = target_rows
            .iter()
            .filter(|r| r.kernel == LinearBenchKernel::Linear)
            .map(|r| (r.shape.seqlen as f64, r.ms))
            .collect();
        let growth = match Fit::of(&points) {
            None => LinearVerdict {
                target: "linear_growth",
                met: None,
                text: format!(
                    "fewer than two lengths of the target's shape ran linear attention ({goal})"
                ),
            },
            Some(fit) => {
                let met = (low..=high).contains(&fit.exponent);
                LinearVerdict {
                    target: "linear_growth",
                    met: Some(met),
                    text: format!(
                        "linear attention's time ~ tokens^{:.3} over {} lengths ({goal}): {}",
                        fit.exponent,
                        fit.points,
                        if met { "met" } else { "not met" }
                    ),
                }
            }
        };
        vec![faster, growth]
    }

    /// One JSON object: device, commit, one object per row, the fits, the verdicts.
    pub fn to_json(&self) -> String {
        crate::json::to_pretty(&LinearReportJson {
            head: ReportHeadJson::new(
                Self::FAMILY,
                &self.device,
                self.emulator,
                self.quick,
                self.commit.as_deref(),
            ),
            dtype: "bf16",
            feature: "elu1",
            l2_flush_bytes: self.l2_flush_bytes,
            faster_from: FASTER_FROM,
            exponent_range: [EXPONENT_RANGE.0, EXPONENT_RANGE.1],
            rows: self.rows.iter().map(LinearRow::json).collect(),
            fits: FitsJson {
                linear: self.fit(LinearBenchKernel::Linear),
                flash: self.fit(LinearBenchKernel::Flash),
            },
            verdicts: self.verdicts(),
        })
    }
}

/// A [`LinearReport`] in JSON.
#[derive(Serialize)]
struct LinearReportJson<'a> {
    #[serde(flatten)]
    head: ReportHeadJson<'a>,
    dtype: &'static str,
    feature: &'static str,
    l2_flush_bytes: usize,
    faster_from: usize,
    exponent_range: [f64; 2],
    rows: Vec<LinearRowJson<'a>>,
    fits: FitsJson,
    verdicts: Vec<LinearVerdict>,
}

/// Each kernel's [`Fit`] in JSON (`null` for one with fewer than two lengths).
#[derive(Serialize)]
struct FitsJson {
    linear: Option<Fit>,
    flash: Option<Fit>,
}

/// The linear attention benchmark on `device`: at each length of [`shapes_for`], the flash row
/// then the linear row. Calls `progress` with the report so far before the first row and after
/// each one (for tables printed as they go and files that survive a timeout). A row that fails
/// carries its error; the run goes on. On the emulator it refuses to run unless `config.quick`.
pub fn run_linear(
    device: &Device,
    config: &LinearBenchConfig,
    mut progress: impl FnMut(&LinearReport),
) -> Result<LinearReport> {
    if !device.is_cuda() && !config.quick {
        return Err(Error::invalid(
            "device",
            "the emulator: its times are no performance numbers, so the linear benchmark needs \
             a GPU (--device gpu); with --quick it runs tiny shapes on the emulator, only to \
             exercise the code",
        ));
    }
    let shapes = shapes_for(device, config.quick);
    let mut timer = Timer::new(device)?;
    let mut report = LinearReport {
        device: device.name(),
        emulator: !device.is_cuda(),
        quick: config.quick,
        commit: config.commit.clone(),
        l2_flush_bytes: timer.flush_bytes(),
        rows: Vec::new(),
    };
    progress(&report);
    let inputs = PrefillInputs::new(device, &shapes)?;
    let budget = RunBudget::new(config.quick);
    let mut workspace = LinearWorkspace::new(device);
    for shape in &shapes {
        let mut flash_ms = f64::NAN;
        for kernel in [LinearBenchKernel::Flash, LinearBenchKernel::Linear] {
            let mut row = LinearRow {
                kernel,
                shape: *shape,
                ms: f64::NAN,
                min_ms: f64::NAN,
                max_ms: f64::NAN,
                runs: 0,
                ratio_to_flash: f64::NAN,
                error: None,
            };
            match time_row(
                &mut timer,
                &inputs,
                &mut workspace,
                kernel,
                shape,
                device,
                budget,
            ) {
                Ok(times) => {
                    let spread = Spread::of(&times);
                    row.ms = spread.median;
                    row.min_ms = spread.min;
                    row.max_ms = spread.max;
                    row.runs = times.len();
                    row.ratio_to_flash = match kernel {
                        LinearBenchKernel::Flash => {
                            flash_ms = row.ms;
                            1.0
                        }
                        LinearBenchKernel::Linear => row.ms / flash_ms,
                    };
                }
                Err(e) => row.error = Some(e.to_string()),
            }
            report.rows.push(row);
            progress(&report);
        }
    }
    Ok(report)
}

/// Milliseconds of each timed run of `kernel` on `shape`. On a GPU an untimed first run (which
/// also grows the linear workspace) and a timed second one set the warm-up and run counts; on
/// the emulator one untimed run, then one timed. The output is poisoned with NaN first and must
/// be finite everywhere after the runs.
fn time_row(
    timer: &mut Timer,
    inputs: &PrefillInputs,
    workspace: &mut LinearWorkspace,
    kernel: LinearBenchKernel,
    shape: &PrefillShape,
    device: &Device,
    budget: RunBudget,
) -> Result<Vec<f64>> {
    let [q, k, v, _] = inputs.views(shape)?;
    let mut out = Tensor::full(device, &shape.q_shape(), bf16::NAN)?;
    let attention_opts = shape.options();
    let linear_opts = LinearOptions {
        feature: Feature::Elu1,
        causal: shape.causal,
        ..Default::default()
    };
    let mut run = || match kernel {
        LinearBenchKernel::Flash => {
            attention_into(Kernel::Flash, &q, &k, &v, &mut out, None, &attention_opts)
        }
        LinearBenchKernel::Linear => {
            linear_attention_into(&q, &k, &v, &mut out, &linear_opts, workspace)
        }
    };
    let times = if device.is_cuda() {
        let estimate = timer.time(1, 1, &mut run)?[0];
        let (warmup, runs) = budget.plan(estimate);
        timer.time(warmup, runs, &mut run)?
    } else {
        timer.time(1, 1, &mut run)?
    };
    let written = out.to_host()?;
    if let Some(at) = written.iter().position(|x| !x.is_finite()) {
        return Err(Error::Internal(format!(
            "{} {}: output element {at} is {} after the runs: the kernel did not write every row",
            kernel.name(),
            shape.label(),
            written[at]
        )));
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_recover_a_line_and_a_power_law() {
        let line: Vec<(f64, f64)> = LENGTHS
            .iter()
            .map(|&n| (n as f64, 0.002 * n as f64 + 0.5))
            .collect();
        let fit = Fit::of(&line).unwrap();
        assert!((fit.slope_ms_per_token - 0.002).abs() < 1e-12, "{fit:?}");
        assert!((fit.intercept_ms - 0.5).abs() < 1e-9, "{fit:?}");
        assert!((fit.r2 - 1.0).abs() < 1e-12, "{fit:?}");
        // A line with an intercept is a power law with an exponent a little under 1.
        assert!(fit.exponent > 0.9 && fit.exponent < 1.0, "{fit:?}");
        let quadratic: Vec<(f64, f64)> = LENGTHS
            .iter()
            .map(|&n| (n as f64, 3e-7 * (n as f64).powi(2)))
            .collect();
        let fit = Fit::of(&quadratic).unwrap();
        assert!((fit.exponent - 2.0).abs() < 1e-9, "{fit:?}");
        assert!(fit.r2 < 1.0, "a line does not explain a parabola: {fit:?}");
        assert_eq!(Fit::of(&[(1024.0, 1.0)]), None);
        assert_eq!(Fit::of(&[(1024.0, 1.0), (1024.0, 2.0)]), None);
        assert_eq!(Fit::of(&[(1024.0, 1.0), (2048.0, f64::NAN)]), None);
    }
}
