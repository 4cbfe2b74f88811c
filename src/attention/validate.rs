//! Checks every argument of an attention call before anything is launched, and builds the
//! kernel's flat params from the tensors. Each error names the argument, value and constraint.

use crate::error::{Error, Result};
use crate::ffi;
use crate::tensor::{Element, Tensor};

use super::{AttentionOptions, FlashTiles, Kernel, VarlenBatch};

/// Largest head dim any attention kernel accepts; head dims are multiples of 8.
pub const MAX_HEAD_DIM: usize = 256;
/// Head dims are multiples of this (16-byte rows of 16-bit elements).
const HEAD_DIM_MULTIPLE: usize = 8;
/// CUDA's grid limit in y and z, where kernels put heads and batch.
const MAX_GRID_YZ: usize = 65535;

pub(crate) fn rank_error(arg: &'static str, shape: &[usize], varlen: bool) -> Error {
    let want = if varlen {
        "rank 3 [total_tokens, heads, head_dim] for a varlen batch"
    } else {
        "rank 4 [batch, seqlen, heads, head_dim]"
    };
    Error::invalid(arg, format!("shape {shape:?}: expected {want}"))
}

pub(crate) fn cu_seqlens(arg: &'static str, cu: &[i32]) -> Result<()> {
    if cu.len() < 2 {
        return Err(Error::invalid(
            arg,
            format!("{} entries: needs batch + 1 >= 2 offsets", cu.len()),
        ));
    }
    if cu.len() - 1 > MAX_GRID_YZ {
        return Err(Error::invalid(
            arg,
            format!("batch {} exceeds the maximum {MAX_GRID_YZ}", cu.len() - 1),
        ));
    }
    if cu[0] != 0 {
        return Err(Error::invalid(
            arg,
            format!("{arg}[0] = {}: must be 0", cu[0]),
        ));
    }
    if let Some(i) = cu.windows(2).position(|w| w[1] < w[0]) {
        return Err(Error::invalid(
            arg,
            format!(
                "{arg}[{}] = {} < {arg}[{i}] = {}: offsets must be nondecreasing",
                i + 1,
                cu[i + 1],
                cu[i]
            ),
        ));
    }
    Ok(())
}

fn check_head_dim(d: usize) -> Result<()> {
    if d == 0 || !d.is_multiple_of(HEAD_DIM_MULTIPLE) || d > MAX_HEAD_DIM {
        return Err(Error::invalid(
            "head_dim",
            format!("{d}: must be a multiple of {HEAD_DIM_MULTIPLE} in {HEAD_DIM_MULTIPLE}..={MAX_HEAD_DIM}"),
        ));
    }
    Ok(())
}

fn check_heads(heads: usize, kv_heads: usize) -> Result<()> {
    if heads == 0 || heads > MAX_GRID_YZ {
        return Err(Error::invalid(
            "heads",
            format!("{heads}: must be in 1..={MAX_GRID_YZ}"),
        ));
    }
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(Error::invalid(
            "kv_heads",
            format!("{kv_heads}: must be >= 1 and divide heads = {heads} (GQA groups)"),
        ));
    }
    Ok(())
}

fn check_seqlen(arg: &'static str, n: usize, min: usize) -> Result<()> {
    if n < min || n > i32::MAX as usize {
        return Err(Error::invalid(
            arg,
            format!("{n}: must be in {min}..={}", i32::MAX),
        ));
    }
    Ok(())
}

/// The window, scale and softcap rules, one place for the options and the raw params.
fn check_masking_and_scores((left, right): (i32, i32), scale: f32, softcap: f32) -> Result<()> {
    if left < -1 || right < -1 {
        return Err(Error::invalid(
            "window",
            format!("({left}, {right}): each side must be >= 0, or -1 for unbounded"),
        ));
    }
    if !scale.is_finite() {
        return Err(Error::invalid("scale", format!("{scale}: must be finite")));
    }
    if !softcap.is_finite() || softcap < 0.0 {
        return Err(Error::invalid(
            "softcap",
            format!("{softcap}: must be finite and >= 0"),
        ));
    }
    Ok(())
}

pub(crate) fn check_options(opts: &AttentionOptions, head_dim: usize) -> Result<(f32, f32)> {
    let scale = opts.scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
    let softcap = opts.softcap.unwrap_or(0.0);
    check_masking_and_scores(opts.window.unwrap_or((-1, -1)), scale, softcap)?;
    Ok((scale, softcap))
}

/// Same device, last dim contiguous, strides representable as int64.
fn check_layout<T: Element>(arg: &'static str, t: &Tensor<T>, q: &Tensor<T>) -> Result<()> {
    if !t.device().same_memory(q.device()) {
        return Err(Error::invalid(
            arg,
            format!("on {:?}, but q is on {:?}", t.device(), q.device()),
        ));
    }
    if t.strides().last() != Some(&1) {
        return Err(Error::invalid(
            arg,
            format!(
                "strides {:?}: the last (head_dim) dimension must be contiguous",
                t.strides()
            ),
        ));
    }
    if t.strides().iter().any(|&s| s > i64::MAX as usize) {
        return Err(Error::invalid(
            arg,
            format!("strides {:?} overflow int64", t.strides()),
        ));
    }
    Ok(())
}

/// The element range [first, last] a view touches in its buffer.
fn extent<T: Element>(t: &Tensor<T>) -> (usize, usize) {
    let span: usize = t
        .shape()
        .iter()
        .zip(t.strides())
        .map(|(&d, &s)| d.saturating_sub(1) * s)
        .sum();
    (t.offset(), t.offset() + span)
}

/// Outputs must not overlap inputs: the kernels read q/k/v while other blocks write out.
pub(crate) fn check_no_overlap<T: Element, U: Element>(
    arg: &'static str,
    out: &Tensor<U>,
    input_name: &str,
    input: &Tensor<T>,
) -> Result<()> {
    if !out.shares_memory_with(input) {
        return Ok(());
    }
    let bytes = |t: (usize, usize), size: usize| (t.0 * size, (t.1 + 1) * size);
    let (a0, a1) = bytes(extent(out), std::mem::size_of::<U>());
    let (b0, b1) = bytes(extent(input), std::mem::size_of::<T>());
    if a0 < b1 && b0 < a1 {
        return Err(Error::invalid(
            arg,
            format!("overlaps {input_name} in the same buffer: outputs must not alias inputs"),
        ));
    }
    Ok(())
}

fn check_lse(lse: &Tensor<f32>, want: &[usize], q: &Tensor<impl Element>) -> Result<()> {
    if lse.shape() != want {
        return Err(Error::invalid(
            "lse",
            format!("shape {:?}: expected {want:?}", lse.shape()),
        ));
    }
    if !lse.device().same_memory(q.device()) {
        return Err(Error::invalid(
            "lse",
            format!("on {:?}, but q is on {:?}", lse.device(), q.device()),
        ));
    }
    if lse.strides().last() != Some(&1) {
        return Err(Error::invalid(
            "lse",
            format!(
                "strides {:?}: the last (seqlen_q) dimension must be contiguous",
                lse.strides()
            ),
        ));
    }
    Ok(())
}

fn base_params<T: Element>(
    opts: &AttentionOptions,
    head_dim: usize,
) -> Result<ffi::cuattn_attention_params> {
    let dtype = T::DTYPE.to_ffi().ok_or_else(|| {
        Error::invalid(
            "q",
            format!("dtype {}: attention takes f16 or bf16", T::DTYPE),
        )
    })?;
    let (scale, softcap) = check_options(opts, head_dim)?;
    let (window_left, window_right) = opts.effective_window();
    Ok(ffi::cuattn_attention_params {
        q: std::ptr::null(),
        k: std::ptr::null(),
        v: std::ptr::null(),
        out: std::ptr::null_mut(),
        maybe_lse: std::ptr::null_mut(),
        maybe_cu_seqlens_q: std::ptr::null(),
        maybe_cu_seqlens_k: std::ptr::null(),
        q_batch_stride: 0,
        q_row_stride: 0,
        q_head_stride: 0,
        k_batch_stride: 0,
        k_row_stride: 0,
        k_head_stride: 0,
        v_batch_stride: 0,
        v_row_stride: 0,
        v_head_stride: 0,
        out_batch_stride: 0,
        out_row_stride: 0,
        out_head_stride: 0,
        lse_batch_stride: 0,
        lse_head_stride: 0,
        batch: 0,
        heads: 0,
        kv_heads: 0,
        head_dim: head_dim as i32,
        seqlen_q: 0,
        seqlen_k: 0,
        scale,
        softcap,
        window_left,
        window_right,
        flash_tiles: opts.flash_tiles.code().0 as i32,
        dtype,
    })
}

/// Strides of a [batch, seqlen, heads, head_dim] (or varlen [total, heads, head_dim]) tensor as
/// (batch, row, head), in elements.
fn bsh_strides<T: Element>(t: &Tensor<T>) -> (i64, i64, i64) {
    let s = t.strides();
    match s.len() {
        4 => (s[0] as i64, s[1] as i64, s[2] as i64),
        _ => (0, s[0] as i64, s[1] as i64),
    }
}

fn fill_strides<T: Element>(
    p: &mut ffi::cuattn_attention_params,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
) {
    (p.q_batch_stride, p.q_row_stride, p.q_head_stride) = bsh_strides(q);
    (p.k_batch_stride, p.k_row_stride, p.k_head_stride) = bsh_strides(k);
    (p.v_batch_stride, p.v_row_stride, p.v_head_stride) = bsh_strides(v);
    (p.out_batch_stride, p.out_row_stride, p.out_head_stride) = bsh_strides(out);
}

fn check_common<T: Element>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    lse: Option<&Tensor<f32>>,
) -> Result<()> {
    for (name, t) in [("q", q), ("k", k), ("v", v), ("out", out)] {
        check_layout(name, t, q)?;
    }
    if out.shape() != q.shape() {
        return Err(Error::invalid(
            "out",
            format!("shape {:?}: must equal q's {:?}", out.shape(), q.shape()),
        ));
    }
    if v.shape() != k.shape() {
        return Err(Error::invalid(
            "v",
            format!("shape {:?}: must equal k's {:?}", v.shape(), k.shape()),
        ));
    }
    // Written tensors are their buffers' only handles, so they cannot overlap the inputs.
    out.check_writable("out")?;
    if let Some(lse) = lse {
        lse.check_writable("lse")?;
    }
    Ok(())
}

/// Validates the shapes and options of a dense call (q `[batch, seqlen_q, heads, head_dim]`, k and
/// v `[batch, seqlen_k, kv_heads, head_dim]`) and returns its params: pointers null, strides 0.
pub(crate) fn dense_shape<T: Element>(
    q_shape: &[usize],
    k_shape: &[usize],
    opts: &AttentionOptions,
) -> Result<ffi::cuattn_attention_params> {
    let &[batch, seqlen_q, heads, head_dim] = q_shape else {
        return Err(rank_error("q", q_shape, false));
    };
    let &[kb, seqlen_k, kv_heads, kd] = k_shape else {
        return Err(rank_error("k", k_shape, false));
    };
    check_head_dim(head_dim)?;
    if kb != batch || kd != head_dim {
        return Err(Error::invalid(
            "k",
            format!("shape {k_shape:?}: batch and head_dim must match q's {q_shape:?}"),
        ));
    }
    if batch == 0 || batch > MAX_GRID_YZ {
        return Err(Error::invalid(
            "batch",
            format!("{batch}: must be in 1..={MAX_GRID_YZ}"),
        ));
    }
    check_heads(heads, kv_heads)?;
    check_seqlen("seqlen_q", seqlen_q, 1)?;
    check_seqlen("seqlen_k", seqlen_k, 1)?;
    let mut p = base_params::<T>(opts, head_dim)?;
    p.batch = batch as i32;
    p.heads = heads as i32;
    p.kv_heads = kv_heads as i32;
    p.seqlen_q = seqlen_q as i32;
    p.seqlen_k = seqlen_k as i32;
    Ok(p)
}

/// Validates a dense call and returns its params (pointers still null).
pub(crate) fn dense<T: Element>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    lse: Option<&Tensor<f32>>,
    opts: &AttentionOptions,
) -> Result<ffi::cuattn_attention_params> {
    let mut p = dense_shape::<T>(q.shape(), k.shape(), opts)?;
    check_common(q, k, v, out, lse)?;
    if let Some(lse) = lse {
        let [batch, heads, seqlen_q] = [p.batch, p.heads, p.seqlen_q].map(|n| n as usize);
        check_lse(lse, &[batch, heads, seqlen_q], q)?;
        p.lse_batch_stride = lse.strides()[0] as i64;
        p.lse_head_stride = lse.strides()[1] as i64;
    }
    fill_strides(&mut p, q, k, v, out);
    Ok(p)
}

/// Validates a varlen call and returns its params (pointers still null).
pub(crate) fn varlen<T: Element>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    batch: &VarlenBatch,
    out: &Tensor<T>,
    lse: Option<&Tensor<f32>>,
    opts: &AttentionOptions,
) -> Result<ffi::cuattn_attention_params> {
    let &[total_q, heads, head_dim] = q.shape() else {
        return Err(rank_error("q", q.shape(), true));
    };
    let &[total_k, kv_heads, kd] = k.shape() else {
        return Err(rank_error("k", k.shape(), true));
    };
    check_head_dim(head_dim)?;
    if kd != head_dim {
        return Err(Error::invalid(
            "k",
            format!(
                "shape {:?}: head_dim must match q's {:?}",
                k.shape(),
                q.shape()
            ),
        ));
    }
    check_varlen_rows(batch, total_q, total_k)?;
    if !batch.cu_seqlens_q.device().same_memory(q.device()) {
        return Err(Error::invalid(
            "batch",
            "VarlenBatch was made for another device than q",
        ));
    }
    check_heads(heads, kv_heads)?;
    check_common(q, k, v, out, lse)?;
    let mut p = base_params::<T>(opts, head_dim)?;
    if let Some(lse) = lse {
        check_lse(lse, &[heads, total_q], q)?;
        p.lse_head_stride = lse.strides()[0] as i64;
    }
    fill_strides(&mut p, q, k, v, out);
    p.batch = batch.batch() as i32;
    p.heads = heads as i32;
    p.kv_heads = kv_heads as i32;
    p.seqlen_q = batch.max_seqlen_q() as i32;
    p.seqlen_k = batch.max_seqlen_k() as i32;
    Ok(p)
}

/// Elements in 16 bytes, the row alignment of kernels that copy rows with 16-byte vectors.
const ALIGN_ELEMS: usize = 8;

/// Tensor-core kernels copy rows in 16-byte chunks: every view must start on a 16-byte
/// boundary (emulated and cudaMalloc'd buffers are 256-byte aligned, so the element offset
/// decides) and its strides must keep every row there.
pub(crate) fn alignment<T: Element>(kernel: Kernel, tensors: [&Tensor<T>; 4]) -> Result<()> {
    if !kernel.needs_aligned_rows() {
        return Ok(());
    }
    for (name, t) in ["q", "k", "v", "out"].into_iter().zip(tensors) {
        let misaligned = !t.offset().is_multiple_of(ALIGN_ELEMS)
            || t.strides()
                .iter()
                .rev()
                .skip(1)
                .any(|s| !s.is_multiple_of(ALIGN_ELEMS));
        if misaligned {
            return Err(Error::invalid(
                name,
                format!(
                    "offset {} and strides {:?}: kernel {} needs 16-byte aligned rows (offset \
                     and strides multiples of {ALIGN_ELEMS} elements)",
                    t.offset(),
                    t.strides(),
                    kernel.name()
                ),
            ));
        }
    }
    Ok(())
}

/// How many of `named_strides` belong to q, k, v and out (the rest are the LSE's).
const TENSOR_STRIDES: usize = 12;

/// Every stride of a params struct with its field name, q/k/v/out first.
fn named_strides(p: &ffi::cuattn_attention_params) -> [(&'static str, i64); 14] {
    [
        ("q_batch_stride", p.q_batch_stride),
        ("q_row_stride", p.q_row_stride),
        ("q_head_stride", p.q_head_stride),
        ("k_batch_stride", p.k_batch_stride),
        ("k_row_stride", p.k_row_stride),
        ("k_head_stride", p.k_head_stride),
        ("v_batch_stride", p.v_batch_stride),
        ("v_row_stride", p.v_row_stride),
        ("v_head_stride", p.v_head_stride),
        ("out_batch_stride", p.out_batch_stride),
        ("out_row_stride", p.out_row_stride),
        ("out_head_stride", p.out_head_stride),
        ("lse_batch_stride", p.lse_batch_stride),
        ("lse_head_stride", p.lse_head_stride),
    ]
}

/// Checks a params struct built by a C caller for `kernel`, field by field (it carries no
/// extents, so pointer ranges are the caller's duty). Used by the C entry points.
pub fn validate_params(kernel: Kernel, p: &ffi::cuattn_attention_params) -> Result<()> {
    check_fields(p)?;
    if kernel.needs_aligned_rows() {
        let pointers = [
            ("q", p.q),
            ("k", p.k),
            ("v", p.v),
            ("out", p.out.cast_const()),
        ];
        if let Some((name, ptr)) = pointers
            .iter()
            .find(|(_, ptr)| !(*ptr as usize).is_multiple_of(16))
        {
            return Err(Error::invalid(
                name,
                format!(
                    "{ptr:?}: kernel {} needs 16-byte aligned rows",
                    kernel.name()
                ),
            ));
        }
        // The LSE is written one float at a time: only the 16-bit tensors' strides matter.
        let strides = &named_strides(p)[..TENSOR_STRIDES];
        if let Some((name, s)) = strides.iter().find(|(_, s)| s % ALIGN_ELEMS as i64 != 0) {
            return Err(Error::invalid(
                name,
                format!(
                    "{s}: kernel {} needs strides that are multiples of {ALIGN_ELEMS} elements",
                    kernel.name()
                ),
            ));
        }
    }
    Ok(())
}

fn check_fields(p: &ffi::cuattn_attention_params) -> Result<()> {
    for (name, ptr) in [
        ("q", p.q),
        ("k", p.k),
        ("v", p.v),
        ("out", p.out.cast_const()),
    ] {
        if ptr.is_null() {
            return Err(Error::invalid(name, "null pointer"));
        }
    }
    if p.maybe_cu_seqlens_q.is_null() != p.maybe_cu_seqlens_k.is_null() {
        return Err(Error::invalid(
            "maybe_cu_seqlens_k",
            "cu_seqlens_q and cu_seqlens_k must be both set (varlen) or both null",
        ));
    }
    let varlen = !p.maybe_cu_seqlens_q.is_null();
    if p.batch < 1 || p.batch as usize > MAX_GRID_YZ {
        return Err(Error::invalid(
            "batch",
            format!("{}: must be in 1..={MAX_GRID_YZ}", p.batch),
        ));
    }
    if p.heads < 0 || p.kv_heads < 0 {
        return Err(Error::invalid(
            "heads",
            format!("{}/{}: negative", p.heads, p.kv_heads),
        ));
    }
    check_heads(p.heads as usize, p.kv_heads as usize)?;
    if p.head_dim < 0 {
        return Err(Error::invalid(
            "head_dim",
            format!("{}: negative", p.head_dim),
        ));
    }
    check_head_dim(p.head_dim as usize)?;
    let min_len = if varlen { 0 } else { 1 };
    for (name, n) in [("seqlen_q", p.seqlen_q), ("seqlen_k", p.seqlen_k)] {
        if n < min_len {
            return Err(Error::invalid(name, format!("{n}: must be >= {min_len}")));
        }
    }
    let strides = named_strides(p);
    if let Some((name, s)) = strides.iter().find(|(_, s)| *s < 0) {
        return Err(Error::invalid(name, format!("{s}: strides must be >= 0")));
    }
    check_masking_and_scores((p.window_left, p.window_right), p.scale, p.softcap)?;
    FlashTiles::from_code(p.flash_tiles).ok_or_else(|| {
        Error::invalid(
            "flash_tiles",
            format!(
                "{}: must be CUATTN_FLASH_TILES_AUTO (0), _COMPACT (1) or _WIDE (2)",
                p.flash_tiles
            ),
        )
    })?;
    if p.dtype != ffi::cuattn_dtype::CUATTN_DTYPE_F16
        && p.dtype != ffi::cuattn_dtype::CUATTN_DTYPE_BF16
    {
        return Err(Error::invalid(
            "dtype",
            format!(
                "{}: must be CUATTN_DTYPE_F16 (0) or CUATTN_DTYPE_BF16 (1)",
                p.dtype.0
            ),
        ));
    }
    Ok(())
}

/// Packed q and k hold the rows a variable-length batch's offsets end at.
pub(crate) fn check_varlen_rows(batch: &VarlenBatch, total_q: usize, total_k: usize) -> Result<()> {
    if total_q != batch.total_q() {
        return Err(Error::invalid(
            "q",
            format!(
                "{total_q} rows, but cu_seqlens_q ends at {}",
                batch.total_q()
            ),
        ));
    }
    if total_k != batch.total_k() {
        return Err(Error::invalid(
            "k",
            format!(
                "{total_k} rows, but cu_seqlens_k ends at {}",
                batch.total_k()
            ),
        ));
    }
    Ok(())
}
