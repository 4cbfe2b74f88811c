//! CUDA graph capture of cuattn calls. A captured graph reads and writes its buffers by address
//! every time it is launched, long after the calls that recorded it returned, so it can outlive
//! the tensors it was captured over; nothing in a tensor's type can stop that. Capturing is
//! therefore `unsafe` to begin ([`GraphCapture::begin`]), with its contract written there, and
//! cuattn's safe calls refuse a stream that is being captured any other way (for example through
//! cudarc's `CudaStream::begin_capture` directly).

use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaStream};

use crate::device::{stream_capture_id, Device};
use crate::error::{Error, Result};

/// The ids of the captures begun through [`GraphCapture::begin`] and not yet ended: the only
/// captures cuattn's safe calls join. Process-wide, keyed by the driver's capture id (unique in
/// the process), not a per-thread setting.
static ADMITTED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn admitted() -> std::sync::MutexGuard<'static, Vec<u64>> {
    // The list stays consistent whatever panicked while holding it (pushes and removals only).
    ADMITTED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A CUDA graph capture on a device's stream that cuattn's calls may join, begun by the `unsafe`
/// [`GraphCapture::begin`] and turned into a replayable graph by [`GraphCapture::end`]. Dropped
/// without `end`, it ends the capture and discards the graph.
///
/// Inside a capture, calls that write into given outputs (`attention_into`, `paged_attention_into`,
/// ...) queue their kernels into the graph without running them; calls that allocate (tensor
/// constructors, `attention`) are refused, so make every buffer first. Tensors on other streams
/// of the context must be in the same capture (the call fails naming the tensor otherwise).
///
/// Beginning one is `unsafe`; safe code cannot:
///
/// ```compile_fail,E0133
/// use cuattn::cudarc::driver::sys::CUstreamCaptureMode;
///
/// let device = cuattn::Device::auto();
/// let _ = cuattn::GraphCapture::begin(&device, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL);
/// ```
#[must_use = "a capture is ended with `end`, which returns the graph"]
pub struct GraphCapture {
    stream: Arc<CudaStream>,
    id: u64,
    ended: bool,
}

impl GraphCapture {
    /// Begins capturing `device`'s stream into a CUDA graph (`mode`: CUDA's capture mode;
    /// `CU_STREAM_CAPTURE_MODE_GLOBAL` is what PyTorch and most engines use). On the emulator,
    /// which has no graphs, `Error::Unsupported`.
    ///
    /// # Safety
    ///
    /// The graph [`end`](GraphCapture::end) returns reads and writes, by address and every time
    /// it is launched, the buffers of the cuattn calls made on the stream while it is captured
    /// (inputs, outputs, LSEs, plans' workspaces, a paged cache's pools and tables). The caller
    /// must keep each of them alive and in place (not dropped, not regrown: a cache's tables that
    /// `reserve` moves, a workspace that a larger call grows) for as long as the graph may be
    /// launched or a launch of it may still be running, and must order those launches with the
    /// other work on the same buffers: nothing written by a launch may be read while the launch
    /// runs, and a launch must not run while another handle reads what it writes.
    pub unsafe fn begin(device: &Device, mode: CUstreamCaptureMode) -> Result<GraphCapture> {
        let Device::Cuda(stream) = device else {
            return Err(Error::Unsupported(
                "CUDA graph capture on the emulator, which has no graphs".into(),
            ));
        };
        if stream_capture_id(stream)?.is_some() {
            return Err(Error::invalid(
                "device",
                "its stream is already being captured into a CUDA graph",
            ));
        }
        stream.begin_capture(mode)?;
        let id = match stream_capture_id(stream) {
            Ok(Some(id)) => id,
            other => {
                // Leave the stream as it was before reporting.
                let _ = stream.end_capture(CUgraphInstantiate_flags(0));
                return Err(match other {
                    Err(e) => e,
                    _ => Error::Internal("a stream just put into capture reports none".into()),
                });
            }
        };
        admitted().push(id);
        Ok(GraphCapture {
            stream: Arc::clone(stream),
            id,
            ended: false,
        })
    }

    /// Ends the capture and instantiates its graph (`flags` as `cuGraphInstantiate`'s; 0 for the
    /// default); `None` when nothing was captured. Launch it with `CudaGraph::launch` under the
    /// contract of [`begin`](GraphCapture::begin).
    pub fn end(mut self, flags: CUgraphInstantiate_flags) -> Result<Option<CudaGraph>> {
        self.ended = true;
        self.forget_id();
        Ok(self.stream.end_capture(flags)?)
    }

    fn forget_id(&self) {
        admitted().retain(|&id| id != self.id);
    }
}

impl Drop for GraphCapture {
    fn drop(&mut self) {
        if !self.ended {
            self.forget_id();
            // Ends the capture and drops whatever graph it made: nothing of it can be launched.
            let _ = self.stream.end_capture(CUgraphInstantiate_flags(0));
        }
    }
}

/// The capture a safe call on `device` joins: `None` when its stream is not being captured, the
/// capture's id when it was begun by [`GraphCapture::begin`]; any other capture is refused,
/// naming `arg` (the tensor whose stream the call launches on).
pub(crate) fn admitted_capture(arg: &'static str, device: &Device) -> Result<Option<u64>> {
    let Some(id) = device.capture_id()? else {
        return Ok(None);
    };
    if admitted().contains(&id) {
        return Ok(Some(id));
    }
    Err(Error::invalid(
        arg,
        "its stream is being captured into a CUDA graph that cuattn did not begin: a graph \
         replays on its buffers after the call returns, so capture through the unsafe \
         `cuattn::GraphCapture::begin`, whose contract keeps them alive",
    ))
}
