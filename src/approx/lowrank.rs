//! Low-rank (Linformer) attention: the projections E and F on the device ([`Projection`]), the
//! projection kernel's call (`cuattn_raw_launch_lowrank_projection`), and attention over the projected
//! keys and values by the flash kernel.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::attention::{
    alloc_outputs, attention_into, flash_head_dim_tile, validate_dense, AttentionOptions,
    AttentionOutput, Kernel,
};
use crate::device::{Device, ForeignStreams};
use crate::error::{Error, Result};
use crate::ffi;
use crate::tensor::{AttentionElement, Element, Tensor};

/// Elements in 16 bytes: the projection kernel copies rows of k, v and its output in 16-byte
/// chunks, so their offsets and strides are multiples of this.
const ALIGN_ELEMS: usize = 8;

/// A Linformer projection, E or F, in float32 on the device: `[k_proj, seqlen_k]`, shared by every
/// KV head, or `[kv_heads, k_proj, seqlen_k]`, one per KV head. Row p of KV head h's matrix
/// weighs the keys (or values) of a sequence into its projected row p.
pub struct Projection {
    values: Tensor<f32>,
    host: Vec<f32>,
    shape: Vec<usize>,
}

impl Projection {
    /// The caller's projection, row-major, of `shape` `[k_proj, seqlen_k]` or `[kv_heads, k_proj,
    /// seqlen_k]` (every dim at least 1), its values finite.
    pub fn new(device: &Device, values: &[f32], shape: &[usize]) -> Result<Projection> {
        Projection::named("projection", device, values, shape)
    }

    /// [`Projection::new`] with errors naming `arg` (the CLI's `e` and `f`).
    pub(crate) fn named(
        arg: &'static str,
        device: &Device,
        values: &[f32],
        shape: &[usize],
    ) -> Result<Projection> {
        let dims_ok = matches!(shape.len(), 2 | 3)
            && shape.iter().all(|&d| d >= 1)
            && shape[shape.len() - 2..]
                .iter()
                .all(|&d| i32::try_from(d).is_ok());
        if !dims_ok {
            return Err(Error::invalid(
                arg,
                format!(
                    "shape {shape:?}: expected [k_proj, seqlen_k] (shared by every KV head) or \
                     [kv_heads, k_proj, seqlen_k] (one per KV head), every dim in 1..={}",
                    i32::MAX
                ),
            ));
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| Error::invalid(arg, format!("shape {shape:?}: too many elements")))?;
        if values.len() != numel {
            return Err(Error::invalid(
                arg,
                format!("{} values, but shape {shape:?} holds {numel}", values.len()),
            ));
        }
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(
                arg,
                format!("element {i} is {}: every value must be finite", values[i]),
            ));
        }
        Ok(Projection {
            values: Tensor::from_host(device, values, shape)?.with_label(arg)?,
            host: values.to_vec(),
            shape: shape.to_vec(),
        })
    }

    /// A random projection of `shape` (as [`Projection::new`]) from `seed`, entries i.i.d. N(0,
    /// 1/k_proj) (Box-Muller from a `StdRng`): the Johnson-Lindenstrauss projection of
    /// Linformer's analysis (Wang et al. 2020), under which `(E x) . (E y)` equals `x . y` in
    /// expectation for any two vectors over the sequence. The entries of `E k` are then about
    /// `sqrt(seqlen_k / k_proj)` times those of k. A model's trained E and F go through
    /// [`Projection::new`].
    pub fn random(device: &Device, shape: &[usize], seed: u64) -> Result<Projection> {
        let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let (Some(numel), Some(&k_proj)) = (numel, shape.iter().rev().nth(1)) else {
            return Projection::new(device, &[], shape);
        };
        let std = 1.0 / (k_proj.max(1) as f64).sqrt();
        let mut rng = StdRng::seed_from_u64(seed);
        let values: Vec<f32> = (0..numel)
            .map(|_| {
                // N(0, 1) by Box-Muller from two uniforms in (0, 1].
                let u1 = 1.0 - rng.random::<f64>();
                let u2 = rng.random::<f64>();
                let gaussian = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (gaussian * std) as f32
            })
            .collect();
        Projection::new(device, &values, shape)
    }

    /// Projected rows.
    pub fn k_proj(&self) -> usize {
        self.shape[self.shape.len() - 2]
    }

    /// The keys a sequence must have.
    pub fn seqlen_k(&self) -> usize {
        self.shape[self.shape.len() - 1]
    }

    /// `Some(kv_heads)` for one matrix per KV head, `None` for one shared by all.
    pub fn kv_heads(&self) -> Option<usize> {
        (self.shape.len() == 3).then(|| self.shape[0])
    }

    /// `[k_proj, seqlen_k]` or `[kv_heads, k_proj, seqlen_k]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values, row-major.
    pub fn values(&self) -> &[f32] {
        &self.host
    }

    /// The device that holds the projection.
    pub fn device(&self) -> &Device {
        self.values.device()
    }

    /// Checks that this projection, given as `arg`, fits keys (or values) `x` `[batch, seqlen_k,
    /// kv_heads, head_dim]` on `device`.
    fn check_fits<T: Element>(
        &self,
        arg: &'static str,
        x: &Tensor<T>,
        device: &Device,
    ) -> Result<()> {
        let (seqlen_k, kv_heads) = (x.shape()[1], x.shape()[2]);
        if self.seqlen_k() != seqlen_k || self.kv_heads().is_some_and(|h| h != kv_heads) {
            return Err(Error::invalid(
                arg,
                format!(
                    "shape {:?}, but k has {seqlen_k} keys and {kv_heads} KV heads: expected \
                     [k_proj, {seqlen_k}] or [{kv_heads}, k_proj, {seqlen_k}]",
                    self.shape
                ),
            ));
        }
        if !self.device().same_memory(device) {
            return Err(Error::invalid(
                arg,
                format!("on {:?}, but the call runs on {device:?}", self.device()),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("shape", &self.shape)
            .finish()
    }
}

/// Device scratch for the projected keys and values (`[batch, k_proj, kv_heads, head_dim]` each),
/// grown when a call needs more; a call then allocates nothing.
pub struct LowrankWorkspace<T: Element> {
    device: Device,
    /// K' and V', each its own buffer (the projections write them, so each is its buffer's only
    /// handle), flat at their capacity between calls.
    buffers: Option<(Tensor<T>, Tensor<T>)>,
}

impl<T: Element> LowrankWorkspace<T> {
    /// An empty workspace for calls on `device`; the first call sizes it.
    pub fn new(device: &Device) -> LowrankWorkspace<T> {
        LowrankWorkspace {
            device: device.clone(),
            buffers: None,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.buffers.as_ref().map_or(0, |(k, v)| {
            (k.numel() + v.numel()) * std::mem::size_of::<T>()
        })
    }

    /// K' and V' viewed as `shape`, taken out of the workspace (grown first if they are too
    /// small) until [`put_back`](Self::put_back).
    fn take(&mut self, shape: [usize; 4]) -> Result<(Tensor<T>, Tensor<T>)> {
        let numel: usize = shape.iter().product();
        let buffers = match self.buffers.take() {
            Some((k, v)) if k.numel() >= numel => (k, v),
            _ => {
                let buffer = |label: &str| -> Result<Tensor<T>> {
                    Tensor::zeros(&self.device, &[numel])?.with_label(label)
                };
                (
                    buffer("lowrank_k_projected")?,
                    buffer("lowrank_v_projected")?,
                )
            }
        };
        let strides = crate::tensor::contiguous_strides(&shape);
        Ok((
            buffers.0.into_view(0, &shape, &strides)?,
            buffers.1.into_view(0, &shape, &strides)?,
        ))
    }

    /// Returns K' and V' from [`take`](Self::take), flat at their whole capacity again.
    fn put_back(&mut self, k: Tensor<T>, v: Tensor<T>) -> Result<()> {
        let capacity = k.storage_len();
        self.buffers = Some((
            k.into_view(0, &[capacity], &[1])?,
            v.into_view(0, &[capacity], &[1])?,
        ));
        Ok(())
    }
}

/// Linformer attention on dense q `[batch, seqlen_q, heads, head_dim]`, k and v `[batch, seqlen_k,
/// kv_heads, head_dim]`: K' = E k and V' = F v per sequence and KV head ([`lowrank_project_into`]),
/// then `softmax(scale * q K'^T) V'` by the flash kernel over the k_proj projected keys, with
/// `opts`' scale (1/sqrt(head_dim) by default), softcap and LSE (`[batch, heads, seqlen_q]`).
/// Allocates the outputs and the workspace.
///
/// Non-causal only: `opts.causal` or a window is refused (each projected key mixes every key of
/// the sequence, future ones included, into what every query row sees). E and F have the same
/// k_proj, as in Linformer (the attention needs as many values as keys). The projections round E
/// and F to the element type (bf16 or f16 operands, float32 accumulation, as attention's own
/// products) and K' and V' to it.
pub fn lowrank_attention<T: AttentionElement>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    e: &Projection,
    f: &Projection,
    opts: &AttentionOptions,
) -> Result<AttentionOutput<T>> {
    check_mask(opts)?;
    let (mut out, mut lse) = alloc_outputs(q, None, opts)?;
    let mut workspace = LowrankWorkspace::new(q.device());
    lowrank_attention_into(q, k, v, e, f, &mut out, lse.as_mut(), opts, &mut workspace)?;
    Ok(AttentionOutput { out, lse })
}

/// [`lowrank_attention`] into caller-provided `out` (shaped like q) and `lse` (float32 `[batch,
/// heads, seqlen_q]`, required iff `opts.return_lse`), with a workspace kept across calls
/// (allocating only when it must grow); never synchronizes. Every argument is checked before
/// anything is launched.
#[allow(clippy::too_many_arguments)]
pub fn lowrank_attention_into<T: AttentionElement>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    e: &Projection,
    f: &Projection,
    out: &mut Tensor<T>,
    lse: Option<&mut Tensor<f32>>,
    opts: &AttentionOptions,
    workspace: &mut LowrankWorkspace<T>,
) -> Result<()> {
    check_mask(opts)?;
    let &[batch, _, kv_heads, head_dim] = k.shape() else {
        return Err(Error::invalid(
            "k",
            format!(
                "shape {:?}: expected rank 4 [batch, seqlen_k, kv_heads, head_dim]",
                k.shape()
            ),
        ));
    };
    if q.shape().len() != 4 || q.shape()[0] != batch || q.shape()[3] != head_dim {
        return Err(Error::invalid(
            "k",
            format!(
                "shape {:?}: batch and head_dim must match q's {:?} (q [batch, seqlen_q, heads, \
                 head_dim])",
                k.shape(),
                q.shape()
            ),
        ));
    }
    if v.shape() != k.shape() {
        return Err(Error::invalid(
            "v",
            format!("shape {:?}: must equal k's {:?}", v.shape(), k.shape()),
        ));
    }
    e.check_fits("e", k, q.device())?;
    f.check_fits("f", k, q.device())?;
    if f.k_proj() != e.k_proj() {
        return Err(Error::invalid(
            "f",
            format!(
                "k_proj {}, but e's is {}: Linformer projects keys and values to the same k \
                 (the attention needs a value for each projected key)",
                f.k_proj(),
                e.k_proj()
            ),
        ));
    }
    let k_proj = e.k_proj();
    let projected_shape = [batch, k_proj, kv_heads, head_dim];
    // The attention over the projected keys, checked on shapes before the workspace grows.
    crate::attention::AttentionParams::dense_shape::<T>(q.shape(), &projected_shape, opts)?;
    if flash_head_dim_tile(head_dim).is_none() {
        return Err(Error::Unsupported(format!(
            "head_dim {head_dim}: this build has no flash tile that holds it (cargo features \
             hd64 ... hd256)"
        )));
    }
    for (name, x) in [("k", k), ("v", v)] {
        check_rows(name, x, q.device())?;
    }
    if !workspace.device.same_memory(q.device()) {
        return Err(Error::invalid(
            "workspace",
            "made for another device than q's",
        ));
    }
    let (mut k_projected, mut v_projected) = workspace.take(projected_shape)?;
    // Everything the flash call checks (out, lse, strides, alignment), before any launch.
    let checked = validate_dense(q, &k_projected, &v_projected, out, lse.as_deref(), opts)
        .and_then(|_| {
            crate::attention::validate_alignment(
                Kernel::Flash,
                [q, &k_projected, &v_projected, out],
            )
        });
    let result = checked
        .and_then(|_| project(q.device(), k, e, &mut k_projected))
        .and_then(|_| project(q.device(), v, f, &mut v_projected))
        .and_then(|_| attention_into(Kernel::Flash, q, &k_projected, &v_projected, out, lse, opts));
    workspace.put_back(k_projected, v_projected)?;
    result
}

/// One projection: `out[b, p, h, :] = sum_j P_h[p, j] x[b, j, h, :]` for x `[batch, seqlen_k,
/// kv_heads, head_dim]` (k or v) and out `[batch, k_proj, kv_heads, head_dim]`, on the projection
/// kernel (P rounded to the element type, float32 accumulation, out rounded to the element
/// type). Rows 16-byte aligned (offsets and strides multiples of 8 elements); never
/// synchronizes.
pub fn lowrank_project_into<T: AttentionElement>(
    x: &Tensor<T>,
    projection: &Projection,
    out: &mut Tensor<T>,
) -> Result<()> {
    let &[batch, _, kv_heads, head_dim] = x.shape() else {
        return Err(Error::invalid(
            "x",
            format!(
                "shape {:?}: expected rank 4 [batch, seqlen_k, kv_heads, head_dim]",
                x.shape()
            ),
        ));
    };
    projection.check_fits("projection", x, x.device())?;
    let want = [batch, projection.k_proj(), kv_heads, head_dim];
    if out.shape() != want {
        return Err(Error::invalid(
            "out",
            format!("shape {:?}, expected {want:?}", out.shape()),
        ));
    }
    check_rows("x", x, x.device())?;
    check_rows("out", out, x.device())?;
    out.check_writable("out")?;
    project(x.device(), x, projection, out)
}

/// Refuses a causal mask or a window: Linformer's projection has no row-wise mask.
fn check_mask(opts: &AttentionOptions) -> Result<()> {
    const WHY: &str = "low-rank (Linformer) attention is non-causal only: the projection mixes \
                       future keys into every row (each projected key combines all keys of the \
                       sequence), so no row can be kept from seeing them";
    if opts.causal {
        return Err(Error::invalid("causal", WHY));
    }
    if let Some(window) = opts.window.filter(|&w| w != (-1, -1)) {
        return Err(Error::invalid("window", format!("{window:?}: {WHY}")));
    }
    Ok(())
}

/// The layout the projection kernel reads or writes: on `device`, rank 4, the last dim
/// contiguous, 16-byte aligned rows, strides representable as int64.
fn check_rows<T: Element>(name: &'static str, t: &Tensor<T>, device: &Device) -> Result<()> {
    if !t.device().same_memory(device) {
        return Err(Error::invalid(
            name,
            format!("on {:?}, but the call runs on {device:?}", t.device()),
        ));
    }
    let strides = t.strides();
    let laid_out = t.shape().len() == 4
        && strides[3] == 1
        && t.offset().is_multiple_of(ALIGN_ELEMS)
        && strides[..3]
            .iter()
            .all(|s| s.is_multiple_of(ALIGN_ELEMS) && *s <= i64::MAX as usize);
    if !laid_out {
        return Err(Error::invalid(
            name,
            format!(
                "shape {:?}, offset {}, strides {strides:?}: the projection kernel needs rank 4, \
                 the last dim contiguous and 16-byte aligned rows (offset and strides multiples \
                 of {ALIGN_ELEMS} elements)",
                t.shape(),
                t.offset(),
            ),
        ));
    }
    Ok(())
}

/// Launches the projection kernel on `device`'s stream on checked arguments: x `[batch, seqlen_k,
/// kv_heads, head_dim]` and out `[batch, k_proj, kv_heads, head_dim]` with aligned rows, they and
/// the projection in `device`'s memory.
fn project<T: Element>(
    device: &Device,
    x: &Tensor<T>,
    projection: &Projection,
    out: &mut Tensor<T>,
) -> Result<()> {
    let &[batch, seqlen_k, kv_heads, head_dim] = x.shape() else {
        unreachable!("rank checked by the callers")
    };
    let k_proj = projection.k_proj();
    let stride = |t: &Tensor<T>, i: usize| t.strides()[i] as i64;
    let dtype = T::DTYPE.to_ffi().ok_or_else(|| {
        Error::invalid(
            "x",
            format!("{:?}: low-rank attention runs in f16 or bf16", T::DTYPE),
        )
    })?;
    let mut params = ffi::cuattn_lowrank_projection_params {
        x: std::ptr::null(),
        projection: std::ptr::null(),
        out: std::ptr::null_mut(),
        x_batch_stride: stride(x, 0),
        x_row_stride: stride(x, 1),
        x_head_stride: stride(x, 2),
        out_batch_stride: stride(out, 0),
        out_row_stride: stride(out, 1),
        out_head_stride: stride(out, 2),
        projection_head_stride: match projection.kv_heads() {
            Some(_) => (k_proj * seqlen_k) as i64,
            None => 0,
        },
        projection_row_stride: seqlen_k as i64,
        batch: i32::try_from(batch).map_err(|_| Error::invalid("batch", "too many sequences"))?,
        // Both fit: the projection's dims were checked to, and it matches x.
        seqlen_k: seqlen_k as i32,
        kv_heads: i32::try_from(kv_heads).map_err(|_| Error::invalid("kv_heads", "too many"))?,
        head_dim: i32::try_from(head_dim).map_err(|_| Error::invalid("head_dim", "too large"))?,
        k_proj: k_proj as i32,
        dtype,
    };
    // The streams' join borrows out's device while out is written: a handle of its own.
    let out_home = out.device().clone();
    let capture = crate::graph::admitted_capture("x", device)?;
    let capturing = capture.is_some();
    let streams = ForeignStreams::join(
        device,
        capture,
        [
            ("x", x.device()),
            ("projection", projection.device()),
            ("out", &out_home),
        ],
    )?;
    let (x_ptr, _x) = x.kernel_ptr(device, capturing)?;
    let (p_ptr, _p) = projection.values.kernel_ptr(device, capturing)?;
    let (out_ptr, _o) = out.kernel_ptr_mut("out", device, capturing)?;
    params.x = x_ptr.cast_const();
    params.projection = p_ptr.cast_const().cast();
    params.out = out_ptr;
    crate::device::launch_on(
        device,
        ffi::cuattn_emu_raw_launch_lowrank_projection as Launcher,
        cuda_launcher,
        // SAFETY: params was checked against the tensors (shapes, strides, alignment, devices)
        // and the projection's shape; the buffers outlive the launch (guards above).
        |launch, stream| unsafe { launch(&params, stream) },
    )?;
    streams.rejoin()
}

type Launcher = unsafe extern "C" fn(
    *const ffi::cuattn_lowrank_projection_params,
    *mut std::ffi::c_void,
) -> ffi::cuattn_status;

#[cfg(cuattn_cuda)]
fn cuda_launcher() -> Result<Launcher> {
    Ok(ffi::cuattn_raw_launch_lowrank_projection)
}

#[cfg(not(cuattn_cuda))]
fn cuda_launcher() -> Result<Launcher> {
    Err(crate::attention::no_cuda_kernels("lowrank_projection"))
}
