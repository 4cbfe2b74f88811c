//! Where kernels run: a CUDA device (through cudarc, libcuda loaded at run time) or the CPU
//! emulator that runs the same kernel source as fibers. Probing never panics without libcuda.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use crate::error::{Error, Result};

/// The streams, other than a launch's own, that the tensors of the launch live on. Tensors of one
/// CUDA context may live on different streams (`Device::from_stream`): a launch must come after
/// the work already queued on those streams (one may still be writing an input, or reading the
/// output buffer), and the work queued on them later must come after the launch (a read of its
/// output, a write or free of its inputs). cudarc's per-buffer events cover only part of this, and
/// only while its event tracking is on; these joins cover it whatever the setting. Nothing to do
/// when every tensor lives on the launch stream, and on the emulator, which runs launches to the
/// end. In a CUDA graph capture the joins become edges of the graph, so every such stream must be
/// in the capture too (CUDA forbids a capturing stream to wait for work outside it).
pub(crate) struct ForeignStreams<'a> {
    launch: &'a Device,
    others: Vec<&'a Device>, // empty (no allocation) in the usual one-stream call
}

impl<'a> ForeignStreams<'a> {
    /// Makes the stream of `launch` wait for the work queued so far on each of `homes` (each
    /// tensor's name and device) that is another stream. `capture`: the graph capture the launch
    /// stream is in ([`Device::capture_id`]); a tensor whose stream is not in that same capture
    /// (or is in one while the launch stream is not) fails the call before anything is queued.
    pub(crate) fn join(
        launch: &'a Device,
        capture: Option<u64>,
        homes: impl IntoIterator<Item = (&'static str, &'a Device)>,
    ) -> Result<ForeignStreams<'a>> {
        let mut others: Vec<&'a Device> = Vec::new();
        for (name, home) in homes {
            let both_streams = launch.is_cuda() && home.is_cuda();
            if !both_streams
                || home.same_stream(launch)
                || others.iter().any(|o| o.same_stream(home))
            {
                continue;
            }
            let home_capture = home.capture_id()?;
            if home_capture != capture {
                let why = match (capture, home_capture) {
                    (Some(_), None) => {
                        "on a stream outside the CUDA graph capture of the launch \
                                        stream (q's): bring that stream into the capture (it \
                                        waits for an event recorded on the capturing stream) or \
                                        keep the call's tensors on the capturing stream"
                    }
                    (None, _) => {
                        "on a stream being captured into a CUDA graph, but the launch \
                                  stream (q's) is not: launch on the capturing stream"
                    }
                    (Some(_), Some(_)) => {
                        "on a stream in another CUDA graph capture than the \
                                           launch stream (q's)"
                    }
                };
                return Err(Error::invalid(name, why));
            }
            others.push(home);
        }
        // Checked first, then joined: a refused call queues nothing (in a capture, a join
        // already made would stay in the graph).
        for home in &others {
            if let (Device::Cuda(stream), Device::Cuda(other)) = (launch, home) {
                stream.join(other)?;
            }
        }
        Ok(ForeignStreams { launch, others })
    }

    /// Makes each of those streams wait for the work queued so far on the launch stream: call it
    /// once the launch is queued.
    pub(crate) fn rejoin(self) -> Result<()> {
        for other in &self.others {
            if let (Device::Cuda(stream), Device::Cuda(launch)) = (other, self.launch) {
                stream.join(launch)?;
            }
        }
        Ok(())
    }
}

/// Whether two cudarc contexts are the same CUDA context (by the driver's handle).
pub(crate) fn same_context(a: &CudaContext, b: &CudaContext) -> bool {
    std::ptr::eq(a, b) || a.cu_ctx() == b.cu_ctx()
}

/// The id of the CUDA graph capture `stream` is in, or `None` when it is not being captured.
pub(crate) fn stream_capture_id(stream: &CudaStream) -> Result<Option<u64>> {
    use cudarc::driver::sys;
    stream.context().bind_to_thread()?;
    let mut status = sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
    let mut id: sys::cuuint64_t = 0;
    // SAFETY: a live stream of the context bound above; the two outputs are valid locals, and the
    // optional ones (graph, dependencies, edge data, their count) are null.
    unsafe {
        sys::cuStreamGetCaptureInfo_v3(
            stream.cu_stream(),
            &mut status,
            &mut id,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
    .result()?;
    Ok((status != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE).then_some(id))
}

/// A place to run kernels. Cheap to clone; clones share the CUDA stream.
#[derive(Clone)]
pub enum Device {
    /// A CUDA GPU and the stream cuattn launches on.
    Cuda(Arc<CudaStream>),
    /// The CPU emulator: "device" memory is host memory, launches run to completion.
    Emulator,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cuda(stream) => write!(f, "Cuda({})", stream.context().ordinal()),
            Device::Emulator => write!(f, "Emulator"),
        }
    }
}

/// What `Device::auto` found when it looked for a GPU.
#[derive(Clone, Debug)]
pub enum CudaProbe {
    /// Number of CUDA devices the driver reports (at least one).
    Available(usize),
    /// Why there is no usable GPU.
    Unavailable(String),
}

impl CudaProbe {
    /// Whether at least one device answered.
    pub fn is_available(&self) -> bool {
        matches!(self, CudaProbe::Available(_))
    }
}

/// Looks for a CUDA driver and devices without panicking when libcuda is absent.
pub fn probe_cuda() -> CudaProbe {
    // SAFETY: is_culib_present only tries to dlopen libcuda; it has no preconditions.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return CudaProbe::Unavailable("libcuda not found (no NVIDIA driver)".into());
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => CudaProbe::Available(n as usize),
        Ok(_) => CudaProbe::Unavailable("the CUDA driver reports no device".into()),
        Err(e) => CudaProbe::Unavailable(format!("the CUDA driver failed: {e}")),
    }
}

impl Device {
    /// The first GPU when a driver and a device answer, otherwise the emulator.
    pub fn auto() -> Device {
        match probe_cuda() {
            CudaProbe::Available(_) => Device::cuda(0).unwrap_or(Device::Emulator),
            CudaProbe::Unavailable(_) => Device::Emulator,
        }
    }

    /// The GPU `ordinal`, with a new stream of its own.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        match probe_cuda() {
            CudaProbe::Available(n) if ordinal < n => {
                let ctx = CudaContext::new(ordinal)?;
                Ok(Device::Cuda(ctx.new_stream()?))
            }
            CudaProbe::Available(n) => Err(Error::invalid(
                "ordinal",
                format!("{ordinal}: the driver reports {n} device(s)"),
            )),
            CudaProbe::Unavailable(why) => Err(Error::Cuda(why)),
        }
    }

    /// Launch on a caller's own stream (for engines that already manage CUDA with cudarc).
    /// Tensors on other streams of the same context may be mixed in one call: it runs on its
    /// first tensor's stream (q), after the work already queued on the others, and the work
    /// queued on them afterwards runs after it (an event each way, only for streams that differ).
    /// In a CUDA graph capture those events are edges of the graph, so every such stream must be
    /// in the capture already (the call fails naming the tensor otherwise), and must be joined
    /// back into the capturing stream before the capture ends.
    pub fn from_stream(stream: Arc<CudaStream>) -> Device {
        Device::Cuda(stream)
    }

    /// The CPU emulator.
    pub fn emulator() -> Device {
        Device::Emulator
    }

    /// True for a GPU.
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// The stream of a GPU device.
    pub fn stream(&self) -> Option<&Arc<CudaStream>> {
        match self {
            Device::Cuda(stream) => Some(stream),
            Device::Emulator => None,
        }
    }

    /// A short name: `emulator` or `gpu0 (NVIDIA H200, sm_90)`.
    pub fn name(&self) -> String {
        match self {
            Device::Emulator => "emulator".into(),
            Device::Cuda(stream) => {
                let ctx = stream.context();
                let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
                match self.compute_capability() {
                    Some((major, minor)) => {
                        format!("gpu{} ({name}, sm_{major}{minor})", ctx.ordinal())
                    }
                    None => format!("gpu{} ({name})", ctx.ordinal()),
                }
            }
        }
    }

    /// The GPU's compute capability (major, minor); `None` on the emulator, which stands in for
    /// sm_90 where a kernel asks.
    pub fn compute_capability(&self) -> Option<(i32, i32)> {
        match self {
            Device::Emulator => None,
            Device::Cuda(stream) => stream.context().compute_capability().ok(),
        }
    }

    /// `emu` or `gpu`, for tables.
    pub fn kind(&self) -> &'static str {
        match self {
            Device::Emulator => "emu",
            Device::Cuda(_) => "gpu",
        }
    }

    /// Whether two handles reach the same memory (same emulator, or the same CUDA context). CUDA
    /// contexts compare by their driver handle, not by the `CudaContext` value: two
    /// `Device::cuda(0)`, or cuattn's device and an engine's own cudarc context on the same GPU,
    /// share the device's primary context and so its memory.
    pub fn same_memory(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Emulator, Device::Emulator) => true,
            (Device::Cuda(a), Device::Cuda(b)) => same_context(a.context(), b.context()),
            _ => false,
        }
    }

    /// Whether both are the same CUDA stream, or both the emulator.
    pub fn same_stream(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Emulator, Device::Emulator) => true,
            (Device::Cuda(a), Device::Cuda(b)) => {
                Arc::ptr_eq(a, b) || a.cu_stream() == b.cu_stream()
            }
            _ => false,
        }
    }

    /// Whether this device's stream is being captured into a CUDA graph (one whose capture was
    /// invalidated counts: its launches fail). False on the emulator.
    pub fn capturing(&self) -> Result<bool> {
        Ok(self.capture_id()?.is_some())
    }

    /// The id of the CUDA graph capture this device's stream is in (unique in the process), or
    /// `None` when it is not being captured (and on the emulator).
    pub fn capture_id(&self) -> Result<Option<u64>> {
        match self {
            Device::Cuda(stream) => stream_capture_id(stream),
            Device::Emulator => Ok(None),
        }
    }

    /// Waits for everything launched on this device's stream (no-op on the emulator).
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cuda(stream) => Ok(stream.synchronize()?),
            Device::Emulator => Ok(()),
        }
    }
}

/// Runs `launch` with the launchers of `device` (the emulator's, or the CUDA build's from `cuda`,
/// which fails in a build without CUDA kernels) and its stream (null on the emulator), with
/// cudarc's context current for the static CUDA runtime behind the launchers; its status becomes
/// the `Result`.
pub(crate) fn launch_on<L>(
    device: &Device,
    emulator: L,
    cuda: impl FnOnce() -> Result<L>,
    launch: impl FnOnce(L, *mut std::ffi::c_void) -> crate::ffi::cuattn_status,
) -> Result<()> {
    let status = match device {
        Device::Emulator => launch(emulator, std::ptr::null_mut()),
        Device::Cuda(stream) => {
            let launchers = cuda()?;
            stream.context().bind_to_thread()?;
            launch(launchers, stream.cu_stream().cast())
        }
    };
    crate::error::check_status(status)
}
