//! Kernel-based linear attention (`cuattn_raw_launch_linear_attention`): feature maps, options, the
//! workspace, the recurrent state for decode, and the calls.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::device::{Device, ForeignStreams};
use crate::error::{Error, Result};
use crate::ffi;
use crate::tensor::{AttentionElement, Element, Tensor};

/// Added to every denominator: `out = phi(q)^T S / (phi(q)^T z + eps)`.
pub const DEFAULT_EPS: f32 = 1e-6;
/// The most FAVOR features a run takes.
pub const MAX_FEATURES: usize = 256;
/// Head and value dims: multiples of this, at most [`MAX_DIM`].
pub const DIM_MULTIPLE: usize = 8;
pub const MAX_DIM: usize = 256;

/// Performer's FAVOR+ random features: a projection `W` `[m, head_dim]` on the device (and its
/// host copy), `phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m)` with `x' = x head_dim^(-1/4)`.
pub struct FavorFeatures {
    projection: Tensor<f32>,
    host: Vec<f32>,
    features: usize,
    head_dim: usize,
}

impl FavorFeatures {
    /// The caller's projection, row-major `[features, head_dim]`.
    pub fn new(
        device: &Device,
        projection: &[f32],
        features: usize,
        head_dim: usize,
    ) -> Result<FavorFeatures> {
        if features == 0 || features > MAX_FEATURES {
            return Err(Error::invalid(
                "features",
                format!("{features}: FAVOR takes 1..={MAX_FEATURES} features"),
            ));
        }
        check_dim("head_dim", head_dim)?;
        if projection.len() != features * head_dim || projection.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid(
                "projection",
                format!(
                    "{} values: [features, head_dim] = [{features}, {head_dim}] holds {}, all \
                     finite",
                    projection.len(),
                    features * head_dim
                ),
            ));
        }
        Ok(FavorFeatures {
            projection: Tensor::from_host(device, projection, &[features, head_dim])?
                .with_label("favor_projection")?,
            host: projection.to_vec(),
            features,
            head_dim,
        })
    }

    /// Performer's construction from `seed`: blocks of `head_dim` orthogonal Gaussian rows (the
    /// Gram-Schmidt orthonormalization of i.i.d. N(0, 1) rows, f64), each row then scaled to the
    /// norm of an independent `head_dim`-dimensional Gaussian vector (chi-distributed), so that
    /// each row is marginally N(0, I) while the rows of a block are exactly orthogonal; the last
    /// block keeps its first `features mod head_dim` rows.
    pub fn orthogonal(
        device: &Device,
        features: usize,
        head_dim: usize,
        seed: u64,
    ) -> Result<FavorFeatures> {
        check_dim("head_dim", head_dim)?;
        let projection = orthogonal_gaussian(features, head_dim, seed);
        FavorFeatures::new(device, &projection, features, head_dim)
    }

    /// The number of random features `m` (the projection's rows).
    pub fn features(&self) -> usize {
        self.features
    }

    /// The head dim the projection takes (its columns): q's and k's last dimension.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The projection, row-major `[features, head_dim]`.
    pub fn projection(&self) -> &[f32] {
        &self.host
    }
}

/// Rows of orthogonal Gaussian blocks (see [`FavorFeatures::orthogonal`]).
pub fn orthogonal_gaussian(features: usize, head_dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    // N(0, 1) by Box-Muller from two uniforms in (0, 1].
    let mut gaussian = || -> f64 {
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    };
    let mut rows: Vec<f32> = Vec::with_capacity(features * head_dim);
    while rows.len() < features * head_dim {
        let mut block: Vec<Vec<f64>> = Vec::with_capacity(head_dim);
        while block.len() < head_dim {
            let mut v: Vec<f64> = (0..head_dim).map(|_| gaussian()).collect();
            for u in &block {
                let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm > 1e-6 {
                v.iter_mut().for_each(|a| *a /= norm);
                block.push(v);
            }
        }
        for u in block {
            let chi = (0..head_dim)
                .map(|_| gaussian().powi(2))
                .sum::<f64>()
                .sqrt();
            rows.extend(u.iter().map(|&a| (a * chi) as f32));
        }
    }
    rows.truncate(features * head_dim);
    rows
}

/// The feature map phi of a linear attention call.
#[derive(Clone, Copy)]
pub enum Feature<'a> {
    /// `elu(x) + 1`, elementwise (Katharopoulos et al.).
    Elu1,
    /// `max(x, 0)`, elementwise.
    Relu,
    /// FAVOR+ random features.
    Favor(&'a FavorFeatures),
}

impl Feature<'_> {
    fn code(&self) -> ffi::cuattn_feature_map {
        match self {
            Feature::Elu1 => ffi::cuattn_feature_map::CUATTN_FEATURE_ELU1,
            Feature::Relu => ffi::cuattn_feature_map::CUATTN_FEATURE_RELU,
            Feature::Favor(_) => ffi::cuattn_feature_map::CUATTN_FEATURE_FAVOR,
        }
    }

    /// Features of a row of `head_dim`: head_dim, or FAVOR's m.
    pub fn features(&self, head_dim: usize) -> usize {
        match self {
            Feature::Favor(f) => f.features,
            _ => head_dim,
        }
    }
}

/// Options of a linear attention call.
#[derive(Clone, Copy)]
pub struct LinearOptions<'a> {
    /// The feature map phi applied to q and k.
    pub feature: Feature<'a>,
    /// Query i sees keys j <= i + seqlen_k - seqlen_q (and, with a state, every earlier key).
    pub causal: bool,
    /// Added to each denominator; [`DEFAULT_EPS`] by default.
    pub eps: f32,
}

impl Default for LinearOptions<'_> {
    fn default() -> Self {
        LinearOptions {
            feature: Feature::Elu1,
            causal: false,
            eps: DEFAULT_EPS,
        }
    }
}

/// Device scratch for the features of q and k, grown when a call needs more; a call then
/// allocates nothing.
pub struct LinearWorkspace {
    device: Device,
    buffer: Option<Tensor<f32>>,
}

impl LinearWorkspace {
    /// An empty workspace on `device`; the first call that needs one allocates it.
    pub fn new(device: &Device) -> LinearWorkspace {
        LinearWorkspace {
            device: device.clone(),
            buffer: None,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.buffer.as_ref().map_or(0, |b| b.numel() * 4)
    }

    fn reserve(&mut self, bytes: usize) -> Result<&mut Tensor<f32>> {
        if self.bytes() < bytes {
            self.buffer = Some(
                Tensor::zeros(&self.device, &[bytes.div_ceil(4).max(1)])?
                    .with_label("linear_workspace")?,
            );
        }
        Ok(self.buffer.as_mut().expect("reserved above"))
    }
}

impl std::fmt::Debug for FavorFeatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FavorFeatures")
            .field("features", &self.features)
            .field("head_dim", &self.head_dim)
            .finish()
    }
}

/// The recurrent state of linear attention for decode: per sequence and KV head, S `[m,
/// value_dim]`, z `[m]` and FAVOR's running key max, in float32 on the device. A causal call
/// with a state ([`LinearState::step`]) attends to every key the state has absorbed and then to
/// its own, and leaves them all in the state: decoding token by token equals the causal prefill.
pub struct LinearState {
    s: Tensor<f32>,
    z: Tensor<f32>,
    key_max: Tensor<f32>,
    dims: [usize; 4],
}

impl LinearState {
    /// An empty state for `batch` sequences, `kv_heads`, `features` (the feature map's m) and
    /// `value_dim`.
    pub fn new(
        device: &Device,
        batch: usize,
        kv_heads: usize,
        features: usize,
        value_dim: usize,
    ) -> Result<LinearState> {
        if batch == 0 || kv_heads == 0 || features == 0 || features > MAX_FEATURES.max(MAX_DIM) {
            return Err(Error::invalid(
                "state",
                format!(
                    "batch {batch}, kv_heads {kv_heads}, features {features}: all positive, \
                     features at most {MAX_FEATURES}"
                ),
            ));
        }
        check_dim("value_dim", value_dim)?;
        let mut state = LinearState {
            s: Tensor::zeros(device, &[batch, kv_heads, features, value_dim])?
                .with_label("linear_state_s")?,
            z: Tensor::zeros(device, &[batch, kv_heads, features])?.with_label("linear_state_z")?,
            key_max: Tensor::zeros(device, &[batch, kv_heads])?
                .with_label("linear_state_key_max")?,
            dims: [batch, kv_heads, features, value_dim],
        };
        state.reset()?;
        Ok(state)
    }

    /// Empties the state (S and z zero, no key seen).
    pub fn reset(&mut self) -> Result<()> {
        let device = self.s.device().clone();
        let [batch, kv_heads, features, value_dim] = self.dims;
        self.s = Tensor::zeros(&device, &[batch, kv_heads, features, value_dim])?
            .with_label("linear_state_s")?;
        self.z =
            Tensor::zeros(&device, &[batch, kv_heads, features])?.with_label("linear_state_z")?;
        self.key_max = Tensor::full(&device, &[batch, kv_heads], f32::NEG_INFINITY)?
            .with_label("linear_state_key_max")?;
        Ok(())
    }

    /// `[batch, kv_heads, features, value_dim]`.
    pub fn dims(&self) -> [usize; 4] {
        self.dims
    }

    /// S `[batch, kv_heads, features, value_dim]` on the host.
    pub fn s(&self) -> Result<Vec<f32>> {
        self.s.to_host()
    }

    /// z `[batch, kv_heads, features]` on the host.
    pub fn z(&self) -> Result<Vec<f32>> {
        self.z.to_host()
    }

    /// One causal step: the new tokens of each sequence (q `[batch, n, heads, head_dim]`, k and v
    /// `[batch, n, kv_heads, head_dim or value_dim]`) attend to the keys before (the state) and
    /// to their own, causally; out `[batch, n, heads, value_dim]`. The new keys then join the
    /// state.
    #[allow(clippy::too_many_arguments)]
    pub fn step<T: AttentionElement>(
        &mut self,
        q: &Tensor<T>,
        k: &Tensor<T>,
        v: &Tensor<T>,
        out: &mut Tensor<T>,
        feature: Feature<'_>,
        eps: f32,
        workspace: &mut LinearWorkspace,
    ) -> Result<()> {
        let opts = LinearOptions {
            feature,
            causal: true,
            eps,
        };
        run(q, k, v, None, out, &opts, workspace, Some(self))
    }
}

/// Linear attention on dense q `[batch, seqlen_q, heads, head_dim]`, k `[batch, seqlen_k,
/// kv_heads, head_dim]`, v `[batch, seqlen_k, kv_heads, value_dim]`, allocating the output
/// `[batch, seqlen_q, heads, value_dim]` and the workspace.
pub fn linear_attention<T: AttentionElement>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    opts: &LinearOptions<'_>,
) -> Result<Tensor<T>> {
    let mut shape = q.shape().to_vec();
    if let (Some(last), Some(&dv)) = (shape.last_mut(), v.shape().last()) {
        *last = dv;
    }
    let mut out = Tensor::for_overwrite(q.device(), &shape)?;
    let mut workspace = LinearWorkspace::new(q.device());
    linear_attention_into(q, k, v, &mut out, opts, &mut workspace)?;
    Ok(out)
}

/// [`linear_attention`] into `out`, with a workspace kept across calls (allocating only when it
/// must grow); never synchronizes.
pub fn linear_attention_into<T: AttentionElement>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &mut Tensor<T>,
    opts: &LinearOptions<'_>,
    workspace: &mut LinearWorkspace,
) -> Result<()> {
    run(q, k, v, None, out, opts, workspace, None)
}

/// Linear attention over a packed variable-length batch: q `[total_q, heads, head_dim]`, k
/// `[total_k, kv_heads, head_dim]`, v `[total_k, kv_heads, value_dim]`, out `[total_q, heads,
/// value_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn linear_attention_varlen_into<T: AttentionElement>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    batch: &crate::attention::VarlenBatch,
    out: &mut Tensor<T>,
    opts: &LinearOptions<'_>,
    workspace: &mut LinearWorkspace,
) -> Result<()> {
    run(q, k, v, Some(batch), out, opts, workspace, None)
}

fn check_dim(name: &'static str, d: usize) -> Result<()> {
    if d == 0 || !d.is_multiple_of(DIM_MULTIPLE) || d > MAX_DIM {
        return Err(Error::invalid(
            name,
            format!("{d}: must be a multiple of {DIM_MULTIPLE} in {DIM_MULTIPLE}..={MAX_DIM}"),
        ));
    }
    Ok(())
}

/// Checks the shapes of one call and launches it.
#[allow(clippy::too_many_arguments)]
fn run<T: Element>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    varlen: Option<&crate::attention::VarlenBatch>,
    out: &mut Tensor<T>,
    opts: &LinearOptions<'_>,
    workspace: &mut LinearWorkspace,
    state: Option<&mut LinearState>,
) -> Result<()> {
    let rank = if varlen.is_some() { 3 } else { 4 };
    for (name, t) in [("q", q), ("k", k), ("v", v), ("out", &*out)] {
        if t.shape().len() != rank || t.strides().last() != Some(&1) {
            return Err(Error::invalid(
                name,
                format!(
                    "shape {:?} strides {:?}: expected rank {rank} ({}), the last dim contiguous",
                    t.shape(),
                    t.strides(),
                    if rank == 4 {
                        "[batch, seqlen, heads, dim]"
                    } else {
                        "[total, heads, dim]"
                    }
                ),
            ));
        }
        if !t.device().same_memory(q.device()) {
            return Err(Error::invalid(name, "not on q's device"));
        }
    }
    let lead = rank - 3; // index of the sequence dim
    let (heads, head_dim) = (q.shape()[lead + 1], q.shape()[lead + 2]);
    let (kv_heads, value_dim) = (v.shape()[lead + 1], v.shape()[lead + 2]);
    check_dim("head_dim", head_dim)?;
    check_dim("value_dim", value_dim)?;
    if kv_heads == 0 || heads % kv_heads != 0 || heads > 65535 {
        return Err(Error::invalid(
            "kv_heads",
            format!("{kv_heads}: must divide heads ({heads}, at most 65535)"),
        ));
    }
    let batch_of = |t: &Tensor<T>| if rank == 4 { t.shape()[0] } else { 0 };
    let k_want = [&k.shape()[..lead + 1], &[kv_heads, head_dim]].concat();
    let v_want = [&k.shape()[..lead + 1], &[kv_heads, value_dim]].concat();
    let out_want = [&q.shape()[..lead + 1], &[heads, value_dim]].concat();
    for (name, t, want) in [
        ("k", k, &k_want),
        ("v", v, &v_want),
        ("out", &*out, &out_want),
    ] {
        if t.shape() != want.as_slice() {
            return Err(Error::invalid(
                name,
                format!("shape {:?}, expected {want:?}", t.shape()),
            ));
        }
    }
    if rank == 4 && batch_of(k) != batch_of(q) {
        return Err(Error::invalid(
            "k",
            format!("batch {} but q's is {}", batch_of(k), batch_of(q)),
        ));
    }
    let (batch, seqlen_q, seqlen_k) = match varlen {
        Some(b) => {
            crate::attention::check_varlen_rows(b, q.shape()[0], k.shape()[0])?;
            (b.batch(), b.max_seqlen_q(), b.max_seqlen_k())
        }
        None => (q.shape()[0], q.shape()[1], k.shape()[1]),
    };
    let features = opts.feature.features(head_dim);
    if let Feature::Favor(f) = opts.feature {
        if f.head_dim != head_dim || !f.projection.device().same_memory(q.device()) {
            return Err(Error::invalid(
                "feature",
                format!(
                    "FAVOR features for head_dim {} on {:?}, but q has head_dim {head_dim} on \
                     {:?}",
                    f.head_dim,
                    f.projection.device(),
                    q.device()
                ),
            ));
        }
    }
    if !(opts.eps >= 0.0 && opts.eps <= 1.0) {
        return Err(Error::invalid(
            "eps",
            format!("{}: must be in [0, 1]", opts.eps),
        ));
    }
    if let Some(st) = &state {
        if st.dims != [batch, kv_heads, features, value_dim] || varlen.is_some() {
            return Err(Error::invalid(
                "state",
                format!(
                    "dims {:?}, but the call needs [batch, kv_heads, features, value_dim] = \
                     {:?} (dense calls only)",
                    st.dims,
                    [batch, kv_heads, features, value_dim]
                ),
            ));
        }
        if !st.s.device().same_memory(q.device()) {
            return Err(Error::invalid("state", "not on q's device"));
        }
    }
    crate::attention::check_no_overlap("out", &*out, "q", q)?;
    crate::attention::check_no_overlap("out", &*out, "k", k)?;
    crate::attention::check_no_overlap("out", &*out, "v", v)?;

    let stride = |t: &Tensor<T>, i: usize| t.strides()[i] as i64;
    let strides = |t: &Tensor<T>| -> [i64; 3] {
        if rank == 4 {
            [stride(t, 0), stride(t, 1), stride(t, 2)]
        } else {
            [0, stride(t, 0), stride(t, 1)]
        }
    };
    let [qb, qr, qh] = strides(q);
    let [kb, kr, kh] = strides(k);
    let [vb, vr, vh] = strides(v);
    let [ob, or, oh] = strides(out);
    let mut params = ffi::cuattn_linear_attention_params {
        q: std::ptr::null(),
        k: std::ptr::null(),
        v: std::ptr::null(),
        out: std::ptr::null_mut(),
        maybe_cu_seqlens_q: std::ptr::null(),
        maybe_cu_seqlens_k: std::ptr::null(),
        q_batch_stride: qb,
        q_row_stride: qr,
        q_head_stride: qh,
        k_batch_stride: kb,
        k_row_stride: kr,
        k_head_stride: kh,
        v_batch_stride: vb,
        v_row_stride: vr,
        v_head_stride: vh,
        out_batch_stride: ob,
        out_row_stride: or,
        out_head_stride: oh,
        batch: batch as i32,
        heads: heads as i32,
        kv_heads: kv_heads as i32,
        head_dim: head_dim as i32,
        value_dim: value_dim as i32,
        seqlen_q: i32::try_from(seqlen_q).map_err(|_| Error::invalid("q", "too many rows"))?,
        seqlen_k: i32::try_from(seqlen_k).map_err(|_| Error::invalid("k", "too many rows"))?,
        feature_map: opts.feature.code(),
        num_features: features as i32,
        maybe_projection: std::ptr::null(),
        causal: i32::from(opts.causal),
        eps: opts.eps,
        maybe_state: ffi::cuattn_linear_state_view {
            s: std::ptr::null_mut(),
            z: std::ptr::null_mut(),
            key_max: std::ptr::null_mut(),
        },
        workspace: std::ptr::null_mut(),
        dtype: T::DTYPE.to_ffi().ok_or_else(|| {
            Error::invalid(
                "q",
                format!("{:?}: linear attention runs in f16 or bf16", T::DTYPE),
            )
        })?,
    };
    let mut bytes = 0i64;
    let status = match q.device() {
        // SAFETY: the planner reads the shape fields of params only.
        Device::Emulator => unsafe {
            ffi::cuattn_emu_raw_plan_linear_attention(&params, &mut bytes)
        },
        Device::Cuda(_) => cuda_plan(&params, &mut bytes)?,
    };
    crate::error::check_status(status)?;
    let ws = workspace.reserve(bytes as usize)?;
    if !ws.device().same_memory(q.device()) {
        return Err(Error::invalid(
            "workspace",
            "made for another device than q's",
        ));
    }

    let device = q.device();
    // The streams' join borrows out's device while out is written: a handle of its own.
    let out_home = out.device().clone();
    let capture = crate::graph::admitted_capture("q", device)?;
    let capturing = capture.is_some();
    let streams = ForeignStreams::join(
        device,
        capture,
        [("k", k.device()), ("v", v.device()), ("out", &out_home)],
    )?;
    let (q_ptr, _q) = q.kernel_ptr(device, capturing)?;
    let (k_ptr, _k) = k.kernel_ptr(device, capturing)?;
    let (v_ptr, _v) = v.kernel_ptr(device, capturing)?;
    let (out_ptr, _o) = out.kernel_ptr_mut("out", device, capturing)?;
    let (ws_ptr, _w) = ws.kernel_ptr_mut("workspace", device, capturing)?;
    let cu = match varlen {
        Some(b) => Some((
            b.cu_seqlens_q_tensor().kernel_ptr(device, capturing)?,
            b.cu_seqlens_k_tensor().kernel_ptr(device, capturing)?,
        )),
        None => None,
    };
    let favor = match opts.feature {
        Feature::Favor(f) => Some(f.projection.kernel_ptr(device, capturing)?),
        _ => None,
    };
    let state_ptrs = match state {
        Some(st) => Some((
            st.s.kernel_ptr_mut("state", device, capturing)?,
            st.z.kernel_ptr_mut("state", device, capturing)?,
            st.key_max.kernel_ptr_mut("state", device, capturing)?,
        )),
        None => None,
    };
    params.q = q_ptr.cast_const();
    params.k = k_ptr.cast_const();
    params.v = v_ptr.cast_const();
    params.out = out_ptr;
    params.workspace = ws_ptr;
    if let Some(((cq, _), (ck, _))) = &cu {
        params.maybe_cu_seqlens_q = cq.cast_const().cast();
        params.maybe_cu_seqlens_k = ck.cast_const().cast();
    }
    if let Some((w, _)) = &favor {
        params.maybe_projection = w.cast_const().cast();
    }
    if let Some(((s, _), (z, _), (m, _))) = &state_ptrs {
        params.maybe_state = ffi::cuattn_linear_state_view {
            s: s.cast(),
            z: z.cast(),
            key_max: m.cast(),
        };
    }
    crate::device::launch_on(
        device,
        ffi::cuattn_emu_raw_launch_linear_attention as Launcher,
        cuda_launcher,
        // SAFETY: params was checked against every tensor (shapes, strides, devices); the
        // workspace holds the planned bytes; the buffers outlive the launch (guards above).
        |launch, stream| unsafe { launch(&params, stream) },
    )?;
    streams.rejoin()
}

type Launcher = unsafe extern "C" fn(
    *const ffi::cuattn_linear_attention_params,
    *mut std::ffi::c_void,
) -> ffi::cuattn_status;

#[cfg(cuattn_cuda)]
fn cuda_launcher() -> Result<Launcher> {
    Ok(ffi::cuattn_raw_launch_linear_attention)
}

#[cfg(not(cuattn_cuda))]
fn cuda_launcher() -> Result<Launcher> {
    Err(crate::attention::no_cuda_kernels("linear_attention"))
}

#[cfg(cuattn_cuda)]
fn cuda_plan(
    params: &ffi::cuattn_linear_attention_params,
    bytes: &mut i64,
) -> Result<ffi::cuattn_status> {
    // SAFETY: the planner reads the shape fields of params only.
    Ok(unsafe { ffi::cuattn_raw_plan_linear_attention(params, bytes) })
}

#[cfg(not(cuattn_cuda))]
fn cuda_plan(
    _params: &ffi::cuattn_linear_attention_params,
    _bytes: &mut i64,
) -> Result<ffi::cuattn_status> {
    Err(crate::attention::no_cuda_kernels("linear_attention plan"))
}
