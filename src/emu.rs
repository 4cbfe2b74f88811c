//! The CPU emulator's global-memory traffic counters: per kernel launch, the bytes its threads read
//! and wrote in each emulated allocation, recorded for the calling thread while asked to.
//!
//! What counts: every global load and store of kernel code at its width (a 16-byte vector load is
//! 16 bytes), the sources of cp.async copies (the bytes copied, not those zero-filled), atomics
//! (loads read, stores write, read-modify-writes do both). Shared memory, the threads' stacks and
//! constants do not. The counts are what the emulated program asks of memory with no cache in
//! between: the cost model of a kernel's tiling (which K/V tiles each CTA loads, whether an
//! output is written once), not a GPU's DRAM traffic, which L2 hits lower and 32-byte sectors
//! round up.
//!
//! Allocations are told apart by their labels: an emulator tensor is labeled with its dtype and
//! shape until [`Tensor::with_label`](crate::Tensor::with_label) names it ("q", "k", ...); each
//! record also holds the allocation's address and size. Views of one buffer (packed QKV) count as
//! that one allocation.
//!
//! Counting is off unless a [`TrafficRecorder`] is alive on the thread that launches. The counts
//! come from the emulator's memory checker, so while a recorder lives the thread's launches run
//! checked even where the checker was turned off (`CUATTN_EMU_MEMCHECK=0`,
//! `cuattn_emu_set_memcheck(0)`). The C API is `cuattn_emu_traffic_*` in `csrc/cuattn.h`.
//!
//! ```
//! use cuattn::emu::TrafficRecorder;
//! use cuattn::{attention_naive, AttentionOptions, Device, Tensor};
//! use half::bf16;
//!
//! let device = Device::emulator();
//! let (seqlen, head_dim) = (8, 64);
//! let shape = [1, seqlen, 1, head_dim];
//! let x = bf16::from_f32(0.5);
//! let q = Tensor::full(&device, &shape, x)?.with_label("q")?;
//! let k = Tensor::full(&device, &shape, x)?.with_label("k")?;
//! let v = Tensor::full(&device, &shape, x)?.with_label("v")?;
//!
//! let recorder = TrafficRecorder::start()?;
//! let result = attention_naive(&q, &k, &v, &AttentionOptions::default())?;
//! let traffic = recorder.finish()?;
//!
//! assert_eq!(traffic.launches.len(), 1);
//! let row_bytes = (head_dim * 2) as u64;
//! // The naive kernel reads each query row once, and every K and V row once per query row.
//! assert_eq!(traffic.bytes_read("q"), seqlen as u64 * row_bytes);
//! assert_eq!(traffic.bytes_read("k"), (seqlen * seqlen) as u64 * row_bytes);
//! assert_eq!(traffic.bytes_read("v"), (seqlen * seqlen) as u64 * row_bytes);
//! assert_eq!(traffic.total_written(), seqlen as u64 * row_bytes); // out, once
//! # drop(result);
//! # Ok::<(), cuattn::Error>(())
//! ```

use std::ffi::CStr;
use std::marker::PhantomData;

use crate::error::{check_status, Error, Result};
use crate::ffi;

/// The bytes one launch read and wrote in one allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationTraffic {
    /// The allocation's label when the launch ended ("" for none).
    pub label: String,
    /// Its start address.
    pub address: u64,
    /// Its size in bytes.
    pub allocation_bytes: u64,
    /// Global bytes the launch's threads read from it.
    pub bytes_read: u64,
    /// Global bytes the launch's threads wrote to it.
    pub bytes_written: u64,
}

/// One recorded kernel launch: the allocations it touched, by address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchTraffic {
    /// The name its launcher gave the kernel ("attention_flash", "attention_naive", ...).
    pub kernel: String,
    /// Every allocation it read or wrote, by address.
    pub allocations: Vec<AllocationTraffic>,
}

impl LaunchTraffic {
    /// Bytes the launch read from allocations labeled `label` (0 if none).
    pub fn bytes_read(&self, label: &str) -> u64 {
        self.labeled(label).map(|a| a.bytes_read).sum()
    }

    /// Bytes the launch wrote to allocations labeled `label` (0 if none).
    pub fn bytes_written(&self, label: &str) -> u64 {
        self.labeled(label).map(|a| a.bytes_written).sum()
    }

    fn labeled<'a>(&'a self, label: &'a str) -> impl Iterator<Item = &'a AllocationTraffic> {
        self.allocations.iter().filter(move |a| a.label == label)
    }
}

/// What a [`TrafficRecorder`] recorded: the launches its thread made, in order. A launch that
/// returned an error is not recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// The recorded launches, in the order they were made.
    pub launches: Vec<LaunchTraffic>,
}

impl Traffic {
    /// Bytes read from allocations labeled `label`, summed over the launches.
    pub fn bytes_read(&self, label: &str) -> u64 {
        self.launches.iter().map(|l| l.bytes_read(label)).sum()
    }

    /// Bytes written to allocations labeled `label`, summed over the launches.
    pub fn bytes_written(&self, label: &str) -> u64 {
        self.launches.iter().map(|l| l.bytes_written(label)).sum()
    }

    /// Bytes read from every allocation, summed over the launches.
    pub fn total_read(&self) -> u64 {
        self.allocations().map(|a| a.bytes_read).sum()
    }

    /// Bytes written to every allocation, summed over the launches.
    pub fn total_written(&self) -> u64 {
        self.allocations().map(|a| a.bytes_written).sum()
    }

    fn allocations(&self) -> impl Iterator<Item = &AllocationTraffic> {
        self.launches.iter().flat_map(|l| &l.allocations)
    }
}

/// Records the traffic of the emulator launches the calling thread makes while it lives: from
/// [`start`](TrafficRecorder::start) to [`finish`](TrafficRecorder::finish), or to its drop
/// (which stops the recording and discards it, so a test that panics leaves nothing on). It
/// belongs to the thread it was started on (it is neither `Send` nor `Sync`); launches of other
/// threads are not recorded, and each thread can have one at a time. See the [module
/// documentation](self) for what counts.
#[derive(Debug)]
pub struct TrafficRecorder {
    /// Whether `finish` closed the recording already.
    finished: bool,
    /// The recording is the starting thread's.
    _thread: PhantomData<*const ()>,
}

impl TrafficRecorder {
    /// Starts recording the calling thread's launches. `Error::InvalidArgument` if the thread is
    /// recording already (recorders do not nest).
    pub fn start() -> Result<TrafficRecorder> {
        // SAFETY: reads a per-thread flag; no preconditions.
        if unsafe { ffi::cuattn_emu_traffic_recording() } != 0 {
            return Err(Error::invalid(
                "TrafficRecorder::start",
                "this thread is recording traffic already (another TrafficRecorder lives on it); \
                 recordings do not nest",
            ));
        }
        // SAFETY: opens the calling thread's recording; no preconditions.
        check_status(unsafe { ffi::cuattn_emu_traffic_begin() })?;
        Ok(TrafficRecorder {
            finished: false,
            _thread: PhantomData,
        })
    }

    /// Stops recording and returns what was recorded.
    pub fn finish(mut self) -> Result<Traffic> {
        self.finished = true;
        // SAFETY: closes the calling thread's recording, which `start` opened on this thread.
        check_status(unsafe { ffi::cuattn_emu_traffic_end() })?;
        read_recording()
    }
}

impl Drop for TrafficRecorder {
    fn drop(&mut self) {
        if !self.finished {
            // Cannot fail: the recording this recorder opened on this thread is still open.
            // SAFETY: closes the calling thread's recording; no preconditions.
            unsafe { ffi::cuattn_emu_traffic_end() };
        }
    }
}

/// A C string the accessors handed out, copied (lossily, labels are the caller's bytes).
///
/// # Safety
/// `s` is null or a NUL-terminated string valid for the call.
unsafe fn owned(s: *const std::ffi::c_char) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// Copies out the calling thread's closed recording.
fn read_recording() -> Result<Traffic> {
    let mut count = 0u64;
    // SAFETY: `count` is a valid out pointer.
    check_status(unsafe { ffi::cuattn_emu_traffic_launch_count(&mut count) })?;
    let mut launches = Vec::new();
    for launch in 0..count {
        let mut name = std::ptr::null();
        let mut entries = 0u64;
        // SAFETY: valid out pointers; launch < count.
        check_status(unsafe {
            ffi::cuattn_emu_traffic_get_launch(launch, &mut name, &mut entries)
        })?;
        // SAFETY: the name stays valid until this thread's next cuattn_emu_traffic_begin.
        let kernel = unsafe { owned(name) };
        let mut allocations = Vec::new();
        for entry in 0..entries {
            let mut e = ffi::cuattn_emu_traffic_entry {
                label: std::ptr::null(),
                address: 0,
                allocation_bytes: 0,
                bytes_read: 0,
                bytes_written: 0,
            };
            // SAFETY: a valid out pointer; launch and entry are in range.
            check_status(unsafe { ffi::cuattn_emu_traffic_get_entry(launch, entry, &mut e) })?;
            allocations.push(AllocationTraffic {
                // SAFETY: as the kernel name.
                label: unsafe { owned(e.label) },
                address: e.address,
                allocation_bytes: e.allocation_bytes,
                bytes_read: e.bytes_read,
                bytes_written: e.bytes_written,
            });
        }
        launches.push(LaunchTraffic {
            kernel,
            allocations,
        });
    }
    Ok(Traffic { launches })
}
