//! Typed tensors on a device: element type, shape and element strides over a shared buffer, so
//! views into packed layouts (QKV in one buffer) need no copies. Uploads and downloads.

use std::alloc::Layout;
use std::ffi::CString;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr,
    DeviceSlice, ValidAsZeroBits,
};
use half::{bf16, f16};

use crate::device::Device;
use crate::error::{check_status, Error, Result};
use crate::ffi;

/// Element types a tensor can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// IEEE half precision.
    F16,
    /// bfloat16: f32's exponent, 8 bits of mantissa.
    BF16,
    /// IEEE single precision (LSEs, partial states).
    F32,
    /// 32-bit signed integers (offsets, page tables).
    I32,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::I32 => "i32",
        })
    }
}

impl DType {
    /// The C header's dtype code, for the 16-bit types kernels take as q/k/v (`None` for f32
    /// and i32): for engines that fill the C structs, such as a raw `cuattn_paged_kv_view`.
    pub fn to_ffi(self) -> Option<ffi::cuattn_dtype> {
        match self {
            DType::F16 => Some(ffi::cuattn_dtype::CUATTN_DTYPE_F16),
            DType::BF16 => Some(ffi::cuattn_dtype::CUATTN_DTYPE_BF16),
            DType::F32 | DType::I32 => None,
        }
    }
}

/// Keeps [`Element`] closed: the kernels trust `Element::DTYPE` and the element's size, so a type
/// outside cuattn implementing it could make them read past a buffer.
mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
    impl Sealed for f32 {}
    impl Sealed for i32 {}
}

/// A scalar type that tensors hold: f16, bf16, f32 and i32. Sealed: the launch paths trust its
/// `DTYPE` and size, so no type outside cuattn implements it.
///
/// ```compile_fail,E0277
/// use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
///
/// #[derive(Clone, Copy, Default, Debug)]
/// struct Wide(u64);
/// unsafe impl DeviceRepr for Wide {}
/// unsafe impl ValidAsZeroBits for Wide {}
/// impl cuattn::Element for Wide {
///     const DTYPE: cuattn::DType = cuattn::DType::BF16; // a lie the kernels would believe
///     fn to_f64(self) -> f64 { 0.0 }
///     fn from_f64(_: f64) -> Self { Wide(0) }
/// }
/// ```
pub trait Element:
    sealed::Sealed + DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + fmt::Debug + 'static
{
    /// The dtype tag the kernels are launched with for this type.
    const DTYPE: DType;
    /// Exact widening to f64.
    fn to_f64(self) -> f64;
    /// Rounding (to nearest even) from f64.
    fn from_f64(x: f64) -> Self;
}

/// The element types attention computes in, f16 and bf16: an attention call on f32 or i32 tensors
/// is a compile error, not a run-time one.
///
/// ```compile_fail,E0277
/// use cuattn::{attention, AttentionOptions, Device, Kernel, Tensor};
///
/// let device = Device::emulator();
/// let q = Tensor::<f32>::zeros(&device, &[1, 8, 1, 64]).unwrap();
/// let _ = attention(Kernel::Naive, &q, &q, &q, &AttentionOptions::default());
/// ```
pub trait AttentionElement: Element {}

impl AttentionElement for f16 {}
impl AttentionElement for bf16 {}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    fn from_f64(x: f64) -> Self {
        f16::from_f64(x)
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    fn from_f64(x: f64) -> Self {
        bf16_from_f64(x)
    }
}

/// `x` rounded to the nearest bf16, ties to even, in one rounding. Through f32 it would round
/// twice, and an f64 just past a bf16 tie that rounds to f32 exactly onto the tie would then go
/// to even rather than to its nearer neighbour (`half`'s `bf16::from_f64` does, 2.7): where the
/// f32 lands on a tie that x is not on, the f32 is moved one ulp towards x first.
fn bf16_from_f64(x: f64) -> bf16 {
    let f = x as f32;
    let bits = f.to_bits();
    let on_tie = bits & 0xffff == 0x8000;
    if on_tie && f.is_finite() && f64::from(f) != x {
        // One ulp further from zero when |x| is beyond |f|, else one nearer.
        let away = x.abs() > f64::from(f).abs();
        let nudged = f32::from_bits(if away { bits + 1 } else { bits - 1 });
        return bf16::from_f32(nudged);
    }
    bf16::from_f32(f)
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Element for i32 {
    const DTYPE: DType = DType::I32;
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(x: f64) -> Self {
        x as i32
    }
}

/// Emulated device memory: a host allocation reached only through raw pointers, like device
/// memory, so kernels may write it while several views share it. It is registered with the
/// emulator's memory checker for its life: kernels that reach outside it, or into it once it is
/// dropped, fault naming its label.
struct EmuBuffer {
    ptr: NonNull<u8>,
    layout: Layout,
}

/// Alignment of emulated allocations, like cudaMalloc's (at least 256 bytes).
const EMU_ALIGN: usize = 256;

impl EmuBuffer {
    /// `bytes` zero bytes, called `label` in the memory checker's messages.
    fn zeroed(bytes: usize, label: &str) -> Result<EmuBuffer> {
        let layout = Layout::from_size_align(bytes.max(1), EMU_ALIGN)
            .map_err(|e| Error::Internal(format!("emulator allocation of {bytes} bytes: {e}")))?;
        // SAFETY: the layout has a nonzero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            Error::Internal(format!("emulator allocation of {bytes} bytes failed"))
        })?;
        let registered = CString::new(label).map_err(|e| Error::Internal(e.to_string()));
        let registered = registered.and_then(|label| {
            // SAFETY: [ptr, ptr + bytes) is this fresh allocation; the label is copied.
            check_status(unsafe {
                ffi::cuattn_emu_register_allocation(
                    ptr.as_ptr().cast(),
                    bytes as u64,
                    label.as_ptr(),
                )
            })
        });
        if let Err(e) = registered {
            // SAFETY: allocated just above with this layout, and not registered.
            unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
            return Err(Error::Internal(format!(
                "registering an emulator allocation of {bytes} bytes: {e}"
            )));
        }
        Ok(EmuBuffer { ptr, layout })
    }
}

impl Drop for EmuBuffer {
    fn drop(&mut self) {
        // The registry remembers the freed range, so a later use says "freed allocation". It
        // cannot refuse: the buffer was registered when it was made.
        // SAFETY: ptr starts an allocation registered in `zeroed`.
        unsafe { ffi::cuattn_emu_unregister_allocation(self.ptr.as_ptr().cast()) };
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

// SAFETY: EmuBuffer is plain memory with no thread affinity; data races on its contents are
// excluded the same way as for device memory (launches and copies are ordered by the caller).
unsafe impl Send for EmuBuffer {}
// SAFETY: as above; shared access only hands out raw pointers.
unsafe impl Sync for EmuBuffer {}

enum Storage<T: Element> {
    /// `addr`: the buffer's device address, read once when the storage is made, for launches that
    /// must not touch cudarc's per-buffer events (in a CUDA graph capture: `Tensor::kernel_ptr`).
    Cuda {
        slice: CudaSlice<T>,
        addr: u64,
    },
    Emu {
        buf: EmuBuffer,
        len: usize,
    },
    /// Memory the tensor does not own, by address (device memory, or emulated memory on the
    /// emulator): an engine's buffer ([`Tensor::from_raw_parts`], [`Tensor::scoped_cuda_view`]).
    /// `live` turns false when the borrow it was made for ends (a scope's end), after which every
    /// use of the tensor and its clones is refused.
    Borrowed {
        addr: u64,
        len: usize,
        live: Arc<std::sync::atomic::AtomicBool>,
        /// False for memory lent for reading only (a `CudaView`): no call writes it.
        writable: bool,
    },
}

impl<T: Element> Storage<T> {
    /// Keeps `slice` (already checked: `outside_capture`) and its device address.
    fn cuda(slice: CudaSlice<T>) -> Storage<T> {
        // The address comes with cudarc's bookkeeping: the buffer's own stream waits for its last
        // recorded write (which any use of it through cudarc would ask), and the record of this
        // "read" is skipped (forgotten: it holds only references), as it would replace a read
        // that another stream recorded and that the buffer's free must wait for.
        let addr = {
            let (addr, record) = slice.device_ptr(slice.stream());
            std::mem::forget(record);
            addr
        };
        Storage::Cuda { slice, addr }
    }

    fn len(&self) -> usize {
        match self {
            Storage::Cuda { slice, .. } => slice.len(),
            Storage::Emu { len, .. } | Storage::Borrowed { len, .. } => *len,
        }
    }

    /// The address of element 0, for every storage that is still usable: a borrowed buffer whose
    /// borrow ended is refused.
    fn base(&self) -> Result<u64> {
        match self {
            Storage::Cuda { addr, .. } => Ok(*addr),
            Storage::Emu { buf, .. } => Ok(buf.ptr.as_ptr() as u64),
            Storage::Borrowed { addr, live, .. } => {
                if live.load(std::sync::atomic::Ordering::Acquire) {
                    Ok(*addr)
                } else {
                    Err(Error::invalid(
                        "tensor",
                        "it borrows memory whose borrow has ended (a clone kept past the scope \
                         of Tensor::scoped_cuda_view): the memory may be freed or reused",
                    ))
                }
            }
        }
    }
}

/// A tensor of `T` on a device: a shape and element strides over a (possibly shared) buffer.
/// The last dimension of tensors given to kernels must be contiguous (stride 1).
///
/// # Sharing and writes
///
/// Clones and [`view`](Tensor::view)s are further handles on the same buffer (no copy), for
/// inputs: q, k and v may be views into one packed QKV buffer. A call that *writes* a tensor (an
/// `out` or `lse` of the `*_into` calls, [`copy_from_host`](Tensor::copy_from_host),
/// [`copy_from`](Tensor::copy_from)) takes it as `&mut` and requires it to be the only handle on
/// its buffer, and refuses it otherwise, naming the argument. So while a kernel writes a buffer no
/// other handle can read it: not a clone on another thread (on the emulator that would be a data
/// race on host memory), and not an input of the same call. To write into part of a larger buffer,
/// re-view the one handle with [`into_view`](Tensor::into_view) instead of keeping the parent.
/// On a GPU, the write is recorded as a write in cudarc's per-buffer events, so work another
/// stream queues on the buffer through cudarc is ordered after it.
///
/// ```
/// use cuattn::{attention_into, AttentionOptions, Device, Kernel, Tensor};
/// use half::f16;
///
/// let device = Device::emulator();
/// let q = Tensor::full(&device, &[1, 8, 2, 64], f16::from_f32(0.5))?;
/// let mut out = Tensor::<f16>::zeros(&device, &[1, 8, 2, 64])?;
/// let opts = AttentionOptions::default();
/// attention_into(Kernel::Naive, &q, &q, &q, &mut out, None, &opts)?;
///
/// // A clone of an output is a second handle on its buffer: the write is refused.
/// let reader = out.clone();
/// let err = attention_into(Kernel::Naive, &q, &q, &q, &mut out, None, &opts).unwrap_err();
/// assert!(err.to_string().contains("`out`"), "{err}");
/// drop(reader);
/// attention_into(Kernel::Naive, &q, &q, &q, &mut out, None, &opts)?;
/// # Ok::<(), cuattn::Error>(())
/// ```
pub struct Tensor<T: Element> {
    storage: Arc<Storage<T>>,
    device: Device,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

impl<T: Element> Clone for Tensor<T> {
    /// Another view of the same memory (no copy).
    fn clone(&self) -> Self {
        Tensor {
            storage: self.storage.clone(),
            device: self.device.clone(),
            offset: self.offset,
            shape: self.shape.clone(),
            strides: self.strides.clone(),
        }
    }
}

impl<T: Element> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor<{}>(shape {:?}, strides {:?}, offset {}, {:?})",
            T::DTYPE,
            self.shape,
            self.strides,
            self.offset,
            self.device
        )
    }
}

/// Row-major strides of a contiguous tensor.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::invalid("shape", format!("{shape:?}: element count overflows usize")))
}

/// Tensors are made outside CUDA graph captures: cudarc's per-buffer events, which a tensor's
/// buffer carries while the context's event tracking is on, cannot be used inside one (a capture
/// may not wait for an event recorded outside it, and an event recorded inside fails every later
/// wait outside it). `arg` names what is on the capturing `stream`.
fn outside_capture(arg: &'static str, stream: &CudaStream) -> Result<()> {
    if stream.context().is_managing_stream_synchronization()
        && crate::device::stream_capture_id(stream)?.is_some()
    {
        return Err(Error::invalid(
            arg,
            "its stream is being captured into a CUDA graph: make tensors before the capture \
             (cudarc's per-buffer events cannot be used inside one); attention_into then runs \
             in the capture",
        ));
    }
    Ok(())
}

impl<T: Element> Tensor<T> {
    /// A contiguous tensor of zeros.
    pub fn zeros(device: &Device, shape: &[usize]) -> Result<Tensor<T>> {
        let len = checked_numel(shape)?;
        let storage = match device {
            Device::Cuda(stream) => {
                outside_capture("device", stream)?;
                Storage::cuda(stream.alloc_zeros::<T>(len)?)
            }
            Device::Emulator => {
                let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
                    Error::invalid("shape", format!("{shape:?}: byte count overflows usize"))
                })?;
                Storage::Emu {
                    buf: EmuBuffer::zeroed(bytes, &format!("{} tensor {shape:?}", T::DTYPE))?,
                    len,
                }
            }
        };
        Ok(Tensor {
            storage: Arc::new(storage),
            device: device.clone(),
            offset: 0,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
        })
    }

    /// A contiguous tensor whose every element the caller's next launch writes (an output of
    /// the allocating calls): on a GPU its memory is left as the allocator gives it, not
    /// zero-filled (an extra pass over it). On the emulator every byte is 0xff (NaN in the float
    /// types, -1 in i32), so that an element the launch leaves unwritten shows in the allocating
    /// calls' tests too, as it would be garbage on a GPU.
    pub(crate) fn for_overwrite(device: &Device, shape: &[usize]) -> Result<Tensor<T>> {
        let Device::Cuda(stream) = device else {
            let t = Tensor::zeros(device, shape)?;
            if let Storage::Emu { buf, len } = &*t.storage {
                // SAFETY: the fresh buffer holds `len` elements of T and no other handle exists;
                // all-ones bytes are a valid T (every bit pattern is, for f16, bf16, f32, i32).
                unsafe {
                    std::ptr::write_bytes(buf.ptr.as_ptr(), 0xff, len * std::mem::size_of::<T>())
                };
            }
            return Ok(t);
        };
        let len = checked_numel(shape)?;
        outside_capture("device", stream)?;
        // SAFETY: every bit pattern is a valid T (Element: f16, bf16, f32, i32), so reading an
        // element the launch did not write yields a value, not undefined behaviour; the callers'
        // launches write every element.
        let slice = unsafe { stream.alloc::<T>(len)? };
        Ok(Tensor {
            storage: Arc::new(Storage::cuda(slice)),
            device: device.clone(),
            offset: 0,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
        })
    }

    /// A contiguous tensor holding `data` (row-major, `shape`'s element count).
    pub fn from_host(device: &Device, data: &[T], shape: &[usize]) -> Result<Tensor<T>> {
        let len = checked_numel(shape)?;
        if data.len() != len {
            return Err(Error::invalid(
                "data",
                format!("{} elements, but shape {shape:?} holds {len}", data.len()),
            ));
        }
        let t = match device {
            Device::Cuda(stream) => {
                outside_capture("device", stream)?;
                Tensor {
                    storage: Arc::new(Storage::cuda(stream.clone_htod(data)?)),
                    device: device.clone(),
                    offset: 0,
                    shape: shape.to_vec(),
                    strides: contiguous_strides(shape),
                }
            }
            Device::Emulator => {
                let t = Tensor::<T>::zeros(device, shape)?;
                // SAFETY: the buffer was just allocated with room for `len` elements of T and
                // nothing else references it yet.
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), t.emu_ptr().cast_mut(), len)
                };
                t
            }
        };
        Ok(t)
    }

    /// A contiguous tensor with every element `value` (tests poison outputs with NaN this way).
    pub fn full(device: &Device, shape: &[usize], value: T) -> Result<Tensor<T>> {
        let len = checked_numel(shape)?;
        Tensor::from_host(device, &vec![value; len], shape)
    }

    /// Wraps a caller's own device buffer as a contiguous tensor (no copy).
    pub fn from_cuda_slice(device: &Device, slice: CudaSlice<T>, shape: &[usize]) -> Result<Self> {
        let len = checked_numel(shape)?;
        Tensor::<T>::cuda_stream_for(device, slice.context(), "slice", "CudaSlice")?;
        if slice.len() != len {
            return Err(Error::invalid(
                "slice",
                format!("{} elements, but shape {shape:?} holds {len}", slice.len()),
            ));
        }
        outside_capture("slice", slice.stream())?;
        Ok(Tensor {
            storage: Arc::new(Storage::cuda(slice)),
            device: device.clone(),
            offset: 0,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
        })
    }

    /// A contiguous tensor over memory cuattn does not own, by address: an engine's buffer from
    /// its own allocator (candle's storage, a C++ engine's pool). Nothing is copied or freed; no
    /// cudarc events are recorded for it (the engine orders its use with the device's stream).
    /// `len` elements of `T` lie at `address`; the tensor covers the first `shape`'s worth.
    ///
    /// # Safety
    ///
    /// `address` starts `len` elements of `T` in `device`'s memory (device memory of its CUDA
    /// context; on the emulator, memory the emulator allocated, such as another tensor's
    /// [`raw_address`](Tensor::raw_address)). That memory stays allocated, and is not reused for
    /// anything else, while this tensor or any clone or view of it lives and until the work
    /// queued on it has run; and nothing else writes it while a cuattn call reads it, or reads or
    /// writes it while a call writes it, unless ordered after that call on the device's stream.
    pub unsafe fn from_raw_parts(
        device: &Device,
        address: u64,
        len: usize,
        shape: &[usize],
    ) -> Result<Tensor<T>> {
        Tensor::borrowed(device, address, len, true, shape)
    }

    /// Runs `f` on a contiguous tensor of `shape` over `view` (an engine's cudarc buffer, lent
    /// for reading: no call writes the tensor), without a copy. The tensor works only inside
    /// `f`: a clone kept past it is refused by every call. `view`'s last write recorded by cudarc
    /// comes before the work `f` queues on `device`'s stream, and cudarc records that work as a
    /// read of `view` once `f` returns.
    pub fn scoped_cuda_view<R>(
        device: &Device,
        view: &CudaView<'_, T>,
        shape: &[usize],
        f: impl FnOnce(&Tensor<T>) -> Result<R>,
    ) -> Result<R> {
        let stream = Tensor::<T>::view_stream(device, view.stream())?;
        // Held until `f` has queued its work: then records it as a read of the view.
        let (address, _record) = view.device_ptr(stream);
        Tensor::scoped(device, address, view.len(), false, shape, |t| f(t))
    }

    /// [`scoped_cuda_view`](Tensor::scoped_cuda_view) over a buffer lent for writing: `f` may
    /// pass the tensor as an output (it is its buffer's only handle), and cudarc records the work
    /// `f` queues as a write of `view`.
    pub fn scoped_cuda_view_mut<R>(
        device: &Device,
        view: &mut CudaViewMut<'_, T>,
        shape: &[usize],
        f: impl FnOnce(&mut Tensor<T>) -> Result<R>,
    ) -> Result<R> {
        let stream = Tensor::<T>::view_stream(device, view.stream())?.clone();
        let len = view.len();
        let (address, _record) = view.device_ptr_mut(&stream);
        Tensor::scoped(device, address, len, true, shape, f)
    }

    /// `device`'s stream, when a view on `home` (its cudarc stream) can be used on it.
    fn view_stream<'a>(device: &'a Device, home: &Arc<CudaStream>) -> Result<&'a Arc<CudaStream>> {
        let stream = Tensor::<T>::cuda_stream_for(device, home.context(), "view", "CudaView")?;
        outside_capture("device", stream)?;
        Ok(stream)
    }

    /// `device`'s stream, when argument `arg`, a cudarc `kind` of context `home`, can be used on
    /// it: `device` is a CUDA device of that context.
    fn cuda_stream_for<'a>(
        device: &'a Device,
        home: &CudaContext,
        arg: &'static str,
        kind: &str,
    ) -> Result<&'a Arc<CudaStream>> {
        let Device::Cuda(stream) = device else {
            return Err(Error::invalid(
                "device",
                format!("a {kind} needs a CUDA device"),
            ));
        };
        if !crate::device::same_context(home, stream.context()) {
            return Err(Error::invalid(
                arg,
                "belongs to another CUDA context than `device`",
            ));
        }
        Ok(stream)
    }

    /// A contiguous tensor of `shape` over `len` borrowed elements at `address`.
    fn borrowed(
        device: &Device,
        address: u64,
        len: usize,
        writable: bool,
        shape: &[usize],
    ) -> Result<Tensor<T>> {
        let numel = checked_numel(shape)?;
        if numel > len {
            return Err(Error::invalid(
                "shape",
                format!("{shape:?} holds {numel} elements, but the memory holds {len}"),
            ));
        }
        if address == 0 || !address.is_multiple_of(std::mem::align_of::<T>() as u64) {
            return Err(Error::invalid(
                "address",
                format!(
                    "{address:#x}: must be a non-null address aligned for {}",
                    T::DTYPE
                ),
            ));
        }
        if len.checked_mul(std::mem::size_of::<T>()).is_none() {
            return Err(Error::invalid(
                "len",
                format!("{len}: byte count overflows"),
            ));
        }
        Ok(Tensor {
            storage: Arc::new(Storage::Borrowed {
                addr: address,
                len,
                live: Arc::new(std::sync::atomic::AtomicBool::new(true)),
                writable,
            }),
            device: device.clone(),
            offset: 0,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
        })
    }

    /// Runs `f` on a tensor over borrowed memory, then ends the borrow: the storage is marked
    /// dead, so a clone `f` kept is refused from then on (it cannot reach the memory).
    fn scoped<R>(
        device: &Device,
        address: u64,
        len: usize,
        writable: bool,
        shape: &[usize],
        f: impl FnOnce(&mut Tensor<T>) -> Result<R>,
    ) -> Result<R> {
        let mut tensor = Tensor::borrowed(device, address, len, writable, shape)?;
        /// Ends the borrow however `f` leaves (a panic included).
        struct EndBorrow(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for EndBorrow {
            fn drop(&mut self) {
                self.0.store(false, std::sync::atomic::Ordering::Release);
            }
        }
        let Storage::Borrowed { live, .. } = &*tensor.storage else {
            return Err(Error::Internal(
                "a borrowed tensor without borrowed storage".into(),
            ));
        };
        let _end = EndBorrow(Arc::clone(live));
        f(&mut tensor)
    }

    /// The underlying CUDA buffer (the whole allocation; see `offset` and `strides`). cudarc's
    /// per-buffer events see every buffer of a cuattn launch, its outputs too, as read by it (an
    /// output's write is ordered by the tensor's stream): order work on an output that another
    /// stream does through cudarc after the tensor's stream (a stream join), as cuattn's own
    /// calls do.
    pub fn cuda_slice(&self) -> Option<&CudaSlice<T>> {
        match &*self.storage {
            Storage::Cuda { slice, .. } => Some(slice),
            Storage::Emu { .. } | Storage::Borrowed { .. } => None,
        }
    }

    /// Another view of the same memory: element `offset` into the buffer, `shape` and
    /// `strides` in elements. Fails unless every element lies inside the buffer.
    pub fn view(&self, offset: usize, shape: &[usize], strides: &[usize]) -> Result<Tensor<T>> {
        if shape.len() != strides.len() {
            return Err(Error::invalid(
                "strides",
                format!(
                    "{strides:?} has {} entries, shape {shape:?} has {}",
                    strides.len(),
                    shape.len()
                ),
            ));
        }
        let len = self.storage.len();
        if checked_numel(shape)? > 0 {
            let last = shape.iter().zip(strides).try_fold(offset, |acc, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
            });
            match last {
                Some(last) if last < len => {}
                _ => {
                    return Err(Error::invalid(
                        "view",
                        format!(
                            "offset {offset}, shape {shape:?}, strides {strides:?} reach past \
                             the buffer of {len} elements"
                        ),
                    ))
                }
            }
        }
        Ok(Tensor {
            storage: self.storage.clone(),
            device: self.device.clone(),
            offset,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
        })
    }

    /// This handle re-viewed (no copy): like [`view`](Tensor::view), but it takes the handle,
    /// so a tensor that is its buffer's only handle stays so and can still be written (an output
    /// written into part of a larger buffer, read back whole afterwards).
    pub fn into_view(self, offset: usize, shape: &[usize], strides: &[usize]) -> Result<Tensor<T>> {
        let view = self.view(offset, shape, strides)?;
        drop(self);
        Ok(view)
    }

    /// Overwrites this tensor's elements with `src`'s, on the device (queued on the tensor's
    /// stream, after `src`'s last write; on the emulator at once), so fixed buffers can be
    /// refilled between CUDA graph replays without a host round trip. Both views contiguous, of
    /// one shape and device; `self` must be its buffer's only handle (see the type's docs on
    /// sharing), so it cannot overlap `src`.
    pub fn copy_from(&mut self, src: &Tensor<T>) -> Result<()> {
        if src.shape != self.shape {
            return Err(Error::invalid(
                "src",
                format!(
                    "shape {:?}, but the tensor's is {:?}",
                    src.shape, self.shape
                ),
            ));
        }
        let n = checked_numel(&self.shape)?;
        for (arg, t) in [("self", &*self), ("src", src)] {
            if n > 1 && t.strides != contiguous_strides(&t.shape) {
                return Err(Error::invalid(
                    arg,
                    format!(
                        "strides {:?} for shape {:?}: copy_from needs contiguous views",
                        t.strides, t.shape
                    ),
                ));
            }
        }
        if !src.device.same_memory(&self.device) {
            return Err(Error::invalid(
                "src",
                format!(
                    "on {:?}, but the tensor is on {:?}",
                    src.device, self.device
                ),
            ));
        }
        self.check_writable("self")?;
        if n == 0 {
            return Ok(());
        }
        let (dst_offset, src_offset) = (self.offset, src.offset);
        let storage = Arc::get_mut(&mut self.storage)
            .ok_or_else(|| Error::Internal("checked writable, then shared".into()))?;
        match (storage, &*src.storage, &self.device) {
            (
                Storage::Cuda { slice: dst, .. },
                Storage::Cuda { slice: from, .. },
                Device::Cuda(stream),
            ) => {
                let from = from.slice(src_offset..src_offset + n);
                let mut to = dst.slice_mut(dst_offset..dst_offset + n);
                stream.memcpy_dtod(&from, &mut to)?;
            }
            (Storage::Emu { buf: dst, .. }, Storage::Emu { buf: from, .. }, Device::Emulator) => {
                // SAFETY: both ranges lie in their buffers (checked when the views were made);
                // they do not overlap, as `self` is its buffer's only handle and `src` is another
                // handle; emulator launches are synchronous, so no kernel runs on either.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        from.ptr.as_ptr().cast::<T>().add(src_offset),
                        dst.ptr.as_ptr().cast::<T>().add(dst_offset),
                        n,
                    )
                };
            }
            // A borrowed side: by address, in the stream's order (no cudarc events: borrowed
            // memory's owner orders its use).
            (dst, from, device) => {
                let size = std::mem::size_of::<T>();
                let to = dst.base()? + (dst_offset * size) as u64;
                let from = from.base()? + (src_offset * size) as u64;
                match device {
                    Device::Cuda(stream) => {
                        stream.context().bind_to_thread()?;
                        // SAFETY: both ranges lie in live memory of this context (checked when
                        // the views were made, and by `base`).
                        unsafe {
                            cudarc::driver::result::memcpy_dtod_async(
                                to,
                                from,
                                n * size,
                                stream.cu_stream(),
                            )?
                        };
                    }
                    // SAFETY: as above, for emulated memory (`copy`: two borrowed tensors may
                    // lend the same memory), no launch running on it.
                    Device::Emulator => unsafe {
                        std::ptr::copy(from as *const T, to as *mut T, n)
                    },
                }
            }
        }
        Ok(())
    }

    /// Copies the elements to the host in row-major order of `shape` (synchronizes). Only the
    /// span of the buffer the view covers is copied.
    pub fn to_host(&self) -> Result<Vec<T>> {
        let n = checked_numel(&self.shape)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        // The view's elements lie in [offset, offset + span] (checked when it was made).
        let span: usize = self
            .shape
            .iter()
            .zip(&self.strides)
            .map(|(&d, &s)| (d - 1) * s)
            .sum();
        let covered = self.read_buffer_range(self.offset, span + 1)?;
        let mut out = Vec::with_capacity(n);
        let mut index = vec![0usize; self.shape.len()];
        for _ in 0..n {
            let at: usize = index.iter().zip(&self.strides).map(|(i, s)| i * s).sum();
            out.push(covered[at]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(out)
    }

    /// Overwrites the view's elements with `data` (row-major in `shape`), so that fixed buffers
    /// can be refilled, as CUDA graph replays need. Queued on the tensor's stream; `data` may be
    /// reused as soon as the call returns. The view must be contiguous, and its buffer not shared
    /// with another view (a clone or `view` of it): no other handle sees it change.
    pub fn copy_from_host(&mut self, data: &[T]) -> Result<()> {
        let n = checked_numel(&self.shape)?;
        if data.len() != n {
            return Err(Error::invalid(
                "data",
                format!(
                    "{} elements, but shape {:?} holds {n}",
                    data.len(),
                    self.shape
                ),
            ));
        }
        if n > 1 && self.strides != contiguous_strides(&self.shape) {
            return Err(Error::invalid(
                "self",
                format!(
                    "strides {:?} for shape {:?}: copy_from_host needs a contiguous view",
                    self.strides, self.shape
                ),
            ));
        }
        self.write_buffer_range(self.offset, data)
    }

    /// Writes `data` into the buffer from element `start` on (queued on the tensor's stream),
    /// when no other handle shares the buffer.
    pub(crate) fn write_buffer_range(&mut self, start: usize, data: &[T]) -> Result<()> {
        let n = data.len();
        if start
            .checked_add(n)
            .is_none_or(|end| end > self.storage.len())
        {
            return Err(Error::Internal(format!(
                "write of elements {start}..+{n} of a buffer of {}",
                self.storage.len()
            )));
        }
        let storage = Arc::get_mut(&mut self.storage).ok_or_else(|| {
            Error::invalid(
                "self",
                "its buffer is shared with other views (clones or views of it): only a buffer \
                 no other handle reads is written from the host",
            )
        })?;
        match (storage, &self.device) {
            (Storage::Cuda { slice, .. }, Device::Cuda(stream)) => {
                let mut dst = slice.slice_mut(start..start + n);
                stream.memcpy_htod(data, &mut dst)?;
            }
            (Storage::Emu { buf, .. }, Device::Emulator) => {
                // SAFETY: [start, start + n) lies in the buffer (checked above), no other
                // handle reaches it (get_mut above), and emulator launches are synchronous, so
                // no kernel is running on it.
                unsafe {
                    let dst = buf.ptr.as_ptr().cast::<T>().add(start);
                    std::ptr::copy_nonoverlapping(data.as_ptr(), dst, n);
                }
            }
            (storage @ Storage::Borrowed { .. }, device) => {
                let at = storage.base()? + (start * std::mem::size_of::<T>()) as u64;
                match device {
                    Device::Cuda(stream) => {
                        stream.context().bind_to_thread()?;
                        // SAFETY: [at, at + n elements) lies in the live borrowed device memory
                        // (checked above); the copy reads `data` before the call returns
                        // (waited for: the caller may reuse `data` at once).
                        unsafe {
                            cudarc::driver::result::memcpy_htod_async(at, data, stream.cu_stream())?
                        };
                        stream.synchronize()?;
                    }
                    Device::Emulator => {
                        // SAFETY: as above, for emulated memory, no launch running on it.
                        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), at as *mut T, n) };
                    }
                }
            }
            _ => {
                return Err(Error::Internal(
                    "tensor storage does not match its device".into(),
                ))
            }
        }
        Ok(())
    }

    /// Copies `len` elements of the buffer from element `start` to the host (synchronizes), for
    /// reads of part of a large buffer.
    pub(crate) fn read_buffer_range(&self, start: usize, len: usize) -> Result<Vec<T>> {
        let end = start
            .checked_add(len)
            .filter(|&end| end <= self.storage.len())
            .ok_or_else(|| {
                Error::Internal(format!(
                    "read of elements {start}..+{len} of a buffer of {}",
                    self.storage.len()
                ))
            })?;
        match (&*self.storage, &self.device) {
            (Storage::Cuda { slice, .. }, Device::Cuda(stream)) => {
                Ok(stream.clone_dtoh(&slice.slice(start..end))?)
            }
            (Storage::Emu { buf, .. }, Device::Emulator) => {
                // SAFETY: [start, end) lies in the buffer of initialized elements (checked
                // above) and no launch is running on it (emulator launches are synchronous).
                let all = unsafe {
                    std::slice::from_raw_parts(buf.ptr.as_ptr().cast::<T>().add(start), len)
                };
                Ok(all.to_vec())
            }
            (storage @ Storage::Borrowed { .. }, device) => {
                let at = storage.base()? + (start * std::mem::size_of::<T>()) as u64;
                let mut host = vec![T::default(); len];
                match device {
                    Device::Cuda(stream) => {
                        stream.context().bind_to_thread()?;
                        // SAFETY: [at, at + len elements) lies in the borrowed memory (checked
                        // above against its length; its owner vouched for it when lending it,
                        // and the borrow is live), which is device memory of this context;
                        // `host` holds len elements and the copy is waited for before use.
                        unsafe {
                            cudarc::driver::result::memcpy_dtoh_async(
                                &mut host,
                                at,
                                stream.cu_stream(),
                            )?
                        };
                        stream.synchronize()?;
                    }
                    Device::Emulator => {
                        // SAFETY: as above, for emulated memory, no launch running on it
                        // (emulator launches are synchronous).
                        unsafe {
                            std::ptr::copy_nonoverlapping(at as *const T, host.as_mut_ptr(), len)
                        };
                    }
                }
                Ok(host)
            }
            _ => Err(Error::Internal(
                "tensor storage does not match its device".into(),
            )),
        }
    }

    /// The size of each dimension.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The distance in elements between consecutive indices of each dimension.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Elements in the whole buffer this view is over.
    pub(crate) fn storage_len(&self) -> usize {
        self.storage.len()
    }

    /// Element offset of the view into its buffer.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// Where the tensor's memory is.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The number of elements (the product of the shape).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Names the tensor's buffer `label` on the emulator: the memory checker's fault messages and
    /// the traffic records of [`crate::emu`] call it so from now on (tensors start with their
    /// dtype and shape, "bf16 tensor [1, 128, 8, 64]", which q and out of one problem share).
    /// The label belongs to the buffer, so every view of it takes the new one. On a GPU the label
    /// is not kept, and the tensor comes back unchanged.
    ///
    /// ```
    /// use cuattn::{Device, Tensor};
    ///
    /// let k = Tensor::<f32>::zeros(&Device::emulator(), &[4, 64])?.with_label("k")?;
    /// # Ok::<(), cuattn::Error>(())
    /// ```
    pub fn with_label(self, label: &str) -> Result<Tensor<T>> {
        let Storage::Emu { buf, .. } = &*self.storage else {
            return Ok(self);
        };
        let label = CString::new(label).map_err(|_| {
            Error::invalid(
                "label",
                format!("{label:?} holds a NUL byte; labels are C strings"),
            )
        })?;
        // SAFETY: ptr starts the buffer's registered allocation (registered while it lives); the
        // label is copied.
        check_status(unsafe {
            ffi::cuattn_emu_relabel_allocation(buf.ptr.as_ptr().cast(), label.as_ptr())
        })?;
        Ok(self)
    }

    /// Refuses a tensor that a call would write (`arg`) unless it is its buffer's only handle:
    /// see the type's docs on sharing.
    pub(crate) fn check_writable(&self, arg: &'static str) -> Result<()> {
        if let Storage::Borrowed {
            writable: false, ..
        } = &*self.storage
        {
            return Err(Error::invalid(
                arg,
                "it borrows memory lent for reading only (a CudaView): write through a tensor \
                 over a CudaViewMut",
            ));
        }
        let handles = Arc::strong_count(&self.storage);
        if handles > 1 {
            return Err(Error::invalid(
                arg,
                format!(
                    "its buffer has {} other handle(s) (clones or views of it): a tensor a call \
                     writes must be its buffer's only handle, so nothing reads it while it is \
                     written (drop the others, or re-view with `into_view`)",
                    handles - 1
                ),
            ));
        }
        Ok(())
    }

    /// Whether this view and `other` share a buffer.
    pub fn shares_memory_with<U: Element>(&self, other: &Tensor<U>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.storage), Arc::as_ptr(&other.storage))
    }

    fn emu_ptr(&self) -> *const T {
        match &*self.storage {
            // SAFETY: offset lies inside the buffer (checked when the view was made).
            Storage::Emu { buf, .. } => unsafe { buf.ptr.as_ptr().cast::<T>().add(self.offset) },
            Storage::Cuda { .. } | Storage::Borrowed { .. } => std::ptr::null(),
        }
    }

    /// The address of the view's first element, without cudarc's per-buffer event bookkeeping
    /// and whether or not a borrow it came from is still live: for checks of alignment, for
    /// pointers handed to engines (which order their own work) and for launches that do the
    /// ordering themselves.
    pub(crate) fn device_address(&self) -> *mut std::ffi::c_void {
        let base = match &*self.storage {
            Storage::Cuda { addr, .. } | Storage::Borrowed { addr, .. } => *addr,
            Storage::Emu { buf, .. } => buf.ptr.as_ptr() as u64,
        };
        (base + (self.offset * std::mem::size_of::<T>()) as u64) as *mut std::ffi::c_void
    }

    /// The address of the view's first element (device memory on a GPU, host memory registered
    /// with the memory checker on the emulator), for C calls and raw views such as
    /// [`PagedKvView::from_raw`](crate::PagedKvView::from_raw). Nothing orders work through it:
    /// the caller keeps the tensor alive and orders its use with the tensor's stream.
    pub fn raw_address(&self) -> *mut std::ffi::c_void {
        self.device_address()
    }

    /// [`kernel_ptr`](Tensor::kernel_ptr) for a tensor the launch writes (`arg`, which must be
    /// its buffer's only handle): cudarc records the launch's use as a write, so the launch
    /// first waits for the buffer's recorded reads and writes, and later users through cudarc
    /// wait for it.
    pub(crate) fn kernel_ptr_mut<'a>(
        &'a mut self,
        arg: &'static str,
        launch: &'a Device,
        capturing: bool,
    ) -> Result<(*mut std::ffi::c_void, Option<impl Drop + 'a>)> {
        self.check_writable(arg)?;
        let offset_bytes = (self.offset * std::mem::size_of::<T>()) as u64;
        let storage = Arc::get_mut(&mut self.storage)
            .ok_or_else(|| Error::Internal(format!("`{arg}` checked writable, then shared")))?;
        let base = storage.base()?;
        Ok(match (storage, launch) {
            (Storage::Cuda { slice, .. }, Device::Cuda(stream)) if !capturing => {
                let (base, guard) = slice.device_ptr_mut(stream);
                ((base + offset_bytes) as *mut std::ffi::c_void, Some(guard))
            }
            (Storage::Cuda { .. }, Device::Emulator) => {
                return Err(Error::invalid(
                    arg,
                    "a GPU tensor given to a launch on the emulator",
                ))
            }
            _ => ((base + offset_bytes) as *mut std::ffi::c_void, None),
        })
    }

    /// The address of the view's first element as the kernels see it, and the guard that must
    /// outlive a launch on `launch` that uses it: the launch stream first waits for the buffer's
    /// last write that cudarc recorded, and the guard records the launch's use on drop. (A launch
    /// on another stream than the tensor's also orders itself with that stream:
    /// `ForeignStreams`.) In a CUDA graph capture (`capturing`) neither happens: CUDA forbids a
    /// capturing stream to wait for an event recorded outside the capture, and an event recorded
    /// in it would fail cudarc's later waits outside; the graph's launches are the caller's to
    /// order, and its buffers the caller's to keep alive. Borrowed memory has no cudarc events
    /// (its owner orders its use) and is refused once its borrow has ended.
    pub(crate) fn kernel_ptr<'a>(
        &'a self,
        launch: &'a Device,
        capturing: bool,
    ) -> Result<(*mut std::ffi::c_void, Option<impl Drop + 'a>)> {
        let offset_bytes = (self.offset * std::mem::size_of::<T>()) as u64;
        let base = self.storage.base()?;
        Ok(match (&*self.storage, launch) {
            (Storage::Cuda { slice, .. }, Device::Cuda(stream)) if !capturing => {
                let (base, guard) = slice.device_ptr(stream);
                ((base + offset_bytes) as *mut std::ffi::c_void, Some(guard))
            }
            _ => ((base + offset_bytes) as *mut std::ffi::c_void, None),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    #[test]
    fn bf16_from_f64_rounds_once_to_nearest_even() {
        // 1 + 2^-8 is the tie between bf16's 1 and 1 + 2^-7: even (1). Just past it, the f32
        // rounding lands on the tie; the nearer bf16 is 1 + 2^-7. Just below, 1.
        let tie = 1.0 + 2f64.powi(-8);
        assert_eq!(<bf16 as Element>::from_f64(tie).to_f64(), 1.0);
        for sign in [1.0, -1.0] {
            let up = <bf16 as Element>::from_f64(sign * (tie + 2f64.powi(-40)));
            let down = <bf16 as Element>::from_f64(sign * (tie - 2f64.powi(-40)));
            assert_eq!(up.to_f64(), sign * (1.0 + 2f64.powi(-7)));
            assert_eq!(down.to_f64(), sign);
            assert_eq!(<bf16 as Element>::from_f64(sign * tie).to_f64(), sign);
        }
        assert!(<bf16 as Element>::from_f64(f64::NAN).is_nan());
        assert_eq!(
            <bf16 as Element>::from_f64(f64::INFINITY).to_f64(),
            f64::INFINITY
        );
        assert_eq!(<bf16 as Element>::from_f64(1e300).to_f64(), f64::INFINITY);
    }

    fn last_error() -> String {
        // SAFETY: cuattn_last_error returns a valid NUL-terminated thread-local string.
        unsafe { CStr::from_ptr(ffi::cuattn_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    /// Held by the tests that make emulator buffers, one at a time: one of them looks up an
    /// address it freed, which another's allocation could take.
    static ALLOCATING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// The borrow of `scoped` (the engine of `scoped_cuda_view`), on emulated memory: inside,
    /// the tensor reads and is written like any; a clone kept past the scope is refused by every
    /// use, and the memory it pointed at is untouched.
    #[test]
    fn a_scoped_borrow_ends_for_every_clone_at_the_scope_end() {
        let _alone = ALLOCATING.lock().unwrap_or_else(|e| e.into_inner());
        let device = Device::emulator();
        let mut owner = Tensor::<f32>::full(&device, &[8], 1.0).unwrap();
        let address = owner.raw_address() as u64;
        let escaped = Tensor::scoped(&device, address, 8, true, &[2, 4], |t| {
            assert_eq!(t.to_host()?, vec![1.0; 8]);
            t.copy_from_host(&[2.0; 8])?;
            // Cloned: the call that writes now sees two handles and refuses.
            let kept = t.clone();
            let err = t.copy_from_host(&[3.0; 8]).unwrap_err().to_string();
            assert!(err.contains("shared"), "{err}");
            Ok(kept)
        })
        .unwrap();
        let err = escaped.to_host().unwrap_err().to_string();
        assert!(err.contains("borrow has ended"), "{err}");
        let err = escaped
            .kernel_ptr(&device, false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("borrow has ended"), "{err}");
        let mut copy = Tensor::<f32>::zeros(&device, &[2, 4]).unwrap();
        let err = copy.copy_from(&escaped).unwrap_err().to_string();
        assert!(err.contains("borrow has ended"), "{err}");
        assert_eq!(owner.to_host().unwrap(), vec![2.0; 8]);
        owner.copy_from_host(&[4.0; 8]).unwrap();

        // Lent for reading only: never written.
        Tensor::<f32>::scoped(&device, address, 8, false, &[8], |t| {
            let err = t.check_writable("out").unwrap_err().to_string();
            assert!(err.contains("reading only"), "{err}");
            assert_eq!(t.to_host()?, vec![4.0; 8]);
            Ok(())
        })
        .unwrap();
        // A shape past the memory, and a null address, are refused.
        let err = Tensor::<f32>::scoped(&device, address, 8, true, &[9], |_| Ok(()));
        assert!(err.unwrap_err().to_string().contains("holds 9 elements"));
        // SAFETY: refused before anything reads the address.
        let err = unsafe { Tensor::<f32>::from_raw_parts(&device, 0, 8, &[8]) };
        assert!(err.unwrap_err().to_string().contains("non-null"));
    }

    #[test]
    fn emulator_buffers_are_registered_with_their_label_while_they_live() {
        let _alone = ALLOCATING.lock().unwrap_or_else(|e| e.into_inner());
        let t = Tensor::<i32>::zeros(&Device::emulator(), &[4, 25]).unwrap();
        let ptr = t.emu_ptr().cast::<u8>();
        // SAFETY: 8 bytes into the tensor's 400; registering only records the range (and fails).
        let status =
            unsafe { ffi::cuattn_emu_register_allocation(ptr.add(8).cast(), 4, c"probe".as_ptr()) };
        assert_eq!(status, ffi::cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT);
        let message = last_error();
        assert!(
            message.contains(&format!(
                "overlap allocation \"i32 tensor [4, 25]\" (400 bytes at {ptr:?})"
            )),
            "{message}"
        );
        drop(t);
        // No other test of this crate makes emulator buffers meanwhile (ALLOCATING), so no
        // registration can have taken the freed address since.
        // SAFETY: unregistering only looks the address up; nothing touches the freed memory.
        let status = unsafe { ffi::cuattn_emu_unregister_allocation(ptr.cast()) };
        assert_eq!(status, ffi::cuattn_status::CUATTN_ERROR_INVALID_ARGUMENT);
        let message = last_error();
        assert!(
            message.contains("was already unregistered: freed allocation \"i32 tensor [4, 25]\""),
            "{message}"
        );
    }
}
