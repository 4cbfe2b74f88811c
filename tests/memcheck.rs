//! The emulator's memory checker, through the planted bugs of csrc/kernels/memcheck_test.cu: each
//! must stop its launch with CUATTN_ERROR_KERNEL_FAULT and a message that points at the bug (the
//! kernel, block, thread, address or shared-memory offset, and the allocation or the other
//! thread), and each correct twin must run clean and compute the right values.

mod common;

use common::last_error;

use std::ffi::{c_void, CStr};

use cuattn::ffi::{self, cuattn_memcheck_test_case as Case, cuattn_status as Status};

const LABEL: &CStr = c"memcheck test buffer";
const THREADS: usize = 64;
/// Unregistered elements after each buffer, so that a planted access one past the end stays in
/// memory the test owns even if the checker let it through.
const SLACK: usize = 16;
const SLACK_VALUE: i32 = -7;

fn register(ptr: *const c_void, bytes: usize, label: &CStr) -> (Status, String) {
    // SAFETY: the registry only records the range; the label is copied.
    let status = unsafe { ffi::cuattn_emu_register_allocation(ptr, bytes as u64, label.as_ptr()) };
    (status, last_error())
}

fn unregister(ptr: *const c_void) -> (Status, String) {
    // SAFETY: the registry only forgets the range.
    let status = unsafe { ffi::cuattn_emu_unregister_allocation(ptr) };
    (status, last_error())
}

/// An int32 buffer whose first `len` elements are registered as an emulated device allocation
/// named LABEL, followed by SLACK unregistered ones.
struct Buffer {
    data: Vec<i32>,
    len: usize,
    registered: bool,
}

impl Buffer {
    fn new(values: &[i32]) -> Buffer {
        let mut data = values.to_vec();
        data.resize(values.len() + SLACK, SLACK_VALUE);
        let (status, message) = register(data.as_ptr().cast(), 4 * values.len(), LABEL);
        assert_eq!(status, Status::CUATTN_OK, "{message}");
        Buffer {
            data,
            len: values.len(),
            registered: true,
        }
    }

    fn base(&self) -> usize {
        self.data.as_ptr() as usize
    }

    /// Unregisters the buffer as freeing it would, keeping the memory.
    fn unregister(&mut self) {
        let (status, message) = unregister(self.data.as_ptr().cast());
        assert_eq!(status, Status::CUATTN_OK, "{message}");
        self.registered = false;
    }

    /// Runs `case` over the buffer with `n`; returns the status and the message.
    fn launch(&mut self, case: Case, n: usize) -> (Status, String) {
        // SAFETY: the buffer holds the case's elements for `n` plus SLACK more, and outlives
        // this synchronous call; the stream is ignored by the emulator.
        let status = unsafe {
            ffi::cuattn_emu_raw_launch_memcheck_test(
                case.0 as i32,
                self.data.as_mut_ptr().cast(),
                n as i64,
                std::ptr::null_mut(),
            )
        };
        (status, last_error())
    }

    fn values(&self) -> &[i32] {
        &self.data[..self.len]
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.registered {
            unregister(self.data.as_ptr().cast());
        }
    }
}

/// Runs a correct twin over `values` with the checker on (whatever CUATTN_EMU_MEMCHECK says);
/// asserts it ran clean and left the slack alone.
fn run_clean(case: Case, values: &[i32], n: usize) -> Vec<i32> {
    let _checked = common::MemcheckSetting::new(true);
    run_ok(case, values, n)
}

/// Runs `case` over `values` with the checker as set; asserts it succeeded and left the slack
/// alone.
fn run_ok(case: Case, values: &[i32], n: usize) -> Vec<i32> {
    let mut buf = Buffer::new(values);
    let (status, message) = buf.launch(case, n);
    assert_eq!(status, Status::CUATTN_OK, "{case:?}: {message}");
    assert!(buf.data[buf.len..].iter().all(|&x| x == SLACK_VALUE));
    buf.values().to_vec()
}

/// Runs a planted bug over `values`; asserts it faulted and returns the message and the buffer's
/// address.
fn run_faulting(case: Case, values: &[i32], n: usize) -> (String, usize) {
    let _checked = common::MemcheckSetting::new(true);
    let mut buf = Buffer::new(values);
    let (status, message) = buf.launch(case, n);
    println!("{case:?}: {message}");
    assert_eq!(
        status,
        Status::CUATTN_ERROR_KERNEL_FAULT,
        "{case:?}: {message}"
    );
    (message, buf.base())
}

/// Distinct values, some negative.
fn values(n: usize) -> Vec<i32> {
    (0..n as i32).map(|i| 7 * i - 100).collect()
}

// ---------------------------------------------------------------------------------------------
// Global memory.
// ---------------------------------------------------------------------------------------------

#[test]
fn reading_one_element_past_a_buffer_faults_naming_the_thread_and_the_allocation() {
    const N: usize = 100;
    let x = values(N);
    let mut input = vec![0; N];
    input.extend(&x);
    let out = run_clean(Case::CUATTN_MEMCHECK_TEST_NEIGHBOR_SUM, &input, N);
    let want: Vec<i32> = (0..N).map(|i| x[i] + x[(i + 1).min(N - 1)]).collect();
    assert_eq!(&out[..N], &want[..], "y[i] = x[i] + x[min(i + 1, n - 1)]");

    // Thread i = n - 1 = 99, block 1 thread 35, reads x[n] = buf[2n].
    let (message, base) = run_faulting(Case::CUATTN_MEMCHECK_TEST_NEIGHBOR_SUM_PAST_END, &input, N);
    assert_eq!(
        message,
        format!(
            "kernel memcheck_test_neighbor_sum_past_end block (1,0,0): thread 35 (warp 1, lane 3) \
             read 4 bytes at {:#x}, outside every allocation: 0 bytes past the end of \
             allocation \"memcheck test buffer\" (800 bytes at {base:#x})",
            base + 4 * 2 * N
        )
    );
}

#[test]
fn writing_one_element_past_a_buffer_faults_naming_the_thread_and_the_allocation() {
    const N: usize = 100;
    let out = run_clean(Case::CUATTN_MEMCHECK_TEST_IOTA, &vec![-1; N], N);
    assert_eq!(out, (0..N as i32).collect::<Vec<_>>());

    // Thread i = n = 100, block 1 thread 36, writes buf[n].
    let (message, base) = run_faulting(Case::CUATTN_MEMCHECK_TEST_IOTA_PAST_END, &vec![-1; N], N);
    assert_eq!(
        message,
        format!(
            "kernel memcheck_test_iota_past_end block (1,0,0): thread 36 (warp 1, lane 4) wrote 4 \
             bytes at {:#x}, outside every allocation: 0 bytes past the end of allocation \
             \"memcheck test buffer\" (400 bytes at {base:#x})",
            base + 4 * N
        )
    );
}

#[test]
fn a_kernel_writing_a_freed_buffer_faults_naming_the_freed_allocation() {
    const N: usize = 100;
    let _checked = common::MemcheckSetting::new(true);
    let mut buf = Buffer::new(&vec![-1; N]);
    buf.unregister();
    let (status, message) = buf.launch(Case::CUATTN_MEMCHECK_TEST_IOTA, N);
    println!("{message}");
    assert_eq!(status, Status::CUATTN_ERROR_KERNEL_FAULT, "{message}");
    let base = buf.base();
    assert_eq!(
        message,
        format!(
            "kernel memcheck_test_iota block (0,0,0): thread 0 (warp 0, lane 0) wrote 4 bytes at \
             {base:#x}, inside freed allocation \"memcheck test buffer\" (400 bytes at \
             {base:#x}), at offset 0"
        )
    );
    assert_eq!(
        buf.values(),
        &vec![-1; N][..],
        "the checker stops before the store"
    );
}

#[test]
fn a_kernel_writing_memory_never_registered_faults() {
    let _checked = common::MemcheckSetting::new(true);
    let mut data = vec![-1i32; THREADS + SLACK];
    // SAFETY: the buffer holds n + 1 elements, outliving this synchronous call.
    let status = unsafe {
        ffi::cuattn_emu_raw_launch_memcheck_test(
            Case::CUATTN_MEMCHECK_TEST_IOTA.0 as i32,
            data.as_mut_ptr().cast(),
            THREADS as i64,
            std::ptr::null_mut(),
        )
    };
    let message = last_error();
    println!("{message}");
    assert_eq!(status, Status::CUATTN_ERROR_KERNEL_FAULT, "{message}");
    // The nearest allocation is whichever another test holds: only the start is certain.
    let start = format!(
        "kernel memcheck_test_iota block (0,0,0): thread 0 (warp 0, lane 0) wrote 4 bytes at \
         {:#x}, outside every allocation",
        data.as_ptr() as usize
    );
    assert!(message.starts_with(&start), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Shared-memory races: a planted fault first, then the correct twin on the same thread.
// ---------------------------------------------------------------------------------------------

#[test]
fn static_shared_memory_read_by_other_threads_needs_a_syncthreads() {
    let v = values(THREADS);
    // Thread 0 reads tile[63] before thread 63, in the other warp, writes it: with static shared
    // memory poisoned at block start, that is a read of memory no thread of the block wrote.
    let (message, _) = run_faulting(
        Case::CUATTN_MEMCHECK_TEST_REVERSE_STATIC_NO_SYNCTHREADS,
        &v,
        THREADS,
    );
    assert_eq!(
        message,
        "kernel memcheck_test_reverse_static_no_syncthreads block (0,0,0): thread 0 (warp 0, \
         lane 0) read 4 bytes of shared memory at (anonymous \
         namespace)::reverse_static_kernel(int*, bool)::tile+252, which no thread of the block \
         has written"
    );
    let out = run_clean(Case::CUATTN_MEMCHECK_TEST_REVERSE_STATIC, &v, THREADS);
    assert_eq!(out, v.iter().rev().copied().collect::<Vec<_>>());
}

#[test]
fn dynamic_shared_memory_rewritten_while_another_warp_reads_it_needs_a_syncthreads() {
    let v = values(THREADS);
    // Thread 63, the last at the first barrier, runs on first and reads d[31]; then thread 31
    // doubles it with no barrier between.
    let (message, _) = run_faulting(
        Case::CUATTN_MEMCHECK_TEST_SHIFT_DYNAMIC_NO_SYNCTHREADS,
        &v,
        THREADS,
    );
    assert_eq!(
        message,
        "kernel memcheck_test_shift_dynamic_no_syncthreads block (0,0,0): thread 31 (warp 0, \
         lane 31) wrote 4 bytes of shared memory at \
         memcheck_test_shift_dynamic_no_syncthreads::dynamic_smem+124, which thread 63 (warp 1, \
         lane 31) read in the same barrier interval (no __syncthreads between them, nor a named \
         barrier that warp 1 arrived at and warp 0 then waited at)"
    );
    let out = run_clean(Case::CUATTN_MEMCHECK_TEST_SHIFT_DYNAMIC, &v, THREADS);
    let want: Vec<i32> = (0..THREADS)
        .map(|t| 2 * v[t] + if t >= 32 { 2 * v[t - 32] } else { 0 })
        .collect();
    assert_eq!(out, want);
}

#[test]
fn lanes_of_a_warp_exchanging_through_shared_memory_need_a_syncwarp() {
    let v = values(THREADS);
    let (message, _) = run_faulting(
        Case::CUATTN_MEMCHECK_TEST_ROTATE_WARP_NO_SYNCWARP,
        &v,
        THREADS,
    );
    // Lane 0 reads lane 31's slot before lane 31 wrote it.
    assert_eq!(
        message,
        "kernel memcheck_test_rotate_warp_no_syncwarp block (0,0,0): thread 0 (warp 0, lane 0) \
         read 4 bytes of shared memory at (anonymous namespace)::rotate_kernel(int*, bool, \
         bool)::ring+124, which no thread of the block has written"
    );
    let out = run_clean(Case::CUATTN_MEMCHECK_TEST_ROTATE_WARP, &v, THREADS);
    let want: Vec<i32> = (0..THREADS)
        .map(|t| v[t - t % 32 + (t % 32 + 31) % 32])
        .collect();
    assert_eq!(out, want);
}

#[test]
fn a_syncwarp_orders_nothing_between_warps() {
    let (message, _) = run_faulting(
        Case::CUATTN_MEMCHECK_TEST_ROTATE_ACROSS_WARPS_SYNCWARP,
        &values(THREADS),
        THREADS,
    );
    // Warp 0 runs past its __syncwarp first and reads warp 1's slots before warp 1 wrote them.
    assert_eq!(
        message,
        "kernel memcheck_test_rotate_across_warps_syncwarp block (0,0,0): thread 31 (warp 0, \
         lane 31) read 4 bytes of shared memory at (anonymous namespace)::rotate_kernel(int*, \
         bool, bool)::ring+252, which no thread of the block has written"
    );
}

#[test]
fn atomics_of_many_threads_on_one_shared_word_do_not_race() {
    let v = values(THREADS);
    let out = run_clean(Case::CUATTN_MEMCHECK_TEST_HISTOGRAM_ATOMICS, &v, THREADS);
    let mut bins = [0; 8];
    for x in &v {
        bins[(x & 7) as usize] += 1;
    }
    assert_eq!(&out[..8], &bins, "bins of v & 7");
    assert_eq!(&out[8..], &v[8..]);
}

#[test]
fn atomics_on_static_shared_memory_no_thread_zeroed_fault_and_see_the_poison() {
    let v = values(THREADS);
    let (message, _) = run_faulting(
        Case::CUATTN_MEMCHECK_TEST_HISTOGRAM_ATOMICS_UNZEROED,
        &v,
        THREADS,
    );
    // Thread 63, the last at the barrier, runs on first and adds to its bin.
    let bin = (v[63] & 7) as usize;
    assert_eq!(
        message,
        format!(
            "kernel memcheck_test_histogram_atomics_unzeroed block (0,0,0): thread 63 (warp 1, \
             lane 31) atomically updated 4 bytes of shared memory at (anonymous \
             namespace)::histogram_kernel(int*, bool)::bins+{}, which no thread of the block has \
             written",
            4 * bin
        )
    );
    // Unchecked, the block still starts with its static shared memory poisoned (0xFFFFFFFF =
    // -1), not with what the previous block on this thread left: every bin is one short.
    let _unchecked = common::MemcheckSetting::new(false);
    let out = run_ok(Case::CUATTN_MEMCHECK_TEST_HISTOGRAM_ATOMICS, &v, THREADS);
    let out_unzeroed = run_ok(
        Case::CUATTN_MEMCHECK_TEST_HISTOGRAM_ATOMICS_UNZEROED,
        &v,
        THREADS,
    );
    let one_short: Vec<i32> = out[..8].iter().map(|&count| count - 1).collect();
    assert_eq!(&out_unzeroed[..8], &one_short[..], "bins from -1");
}

// ---------------------------------------------------------------------------------------------
// Global stores: two blocks of a launch, or two threads of a block in one barrier interval.
// ---------------------------------------------------------------------------------------------

#[test]
fn two_blocks_of_a_launch_storing_to_one_element_fault_naming_both_blocks() {
    const N: usize = 2 * THREADS;
    let (message, base) = run_faulting(
        Case::CUATTN_MEMCHECK_TEST_IOTA_BLOCKS_OVERLAP,
        &values(N),
        N,
    );
    // Whichever block stores second faults (blocks run on several OS threads); its thread t
    // stores buf[t], and names the block that stored it first.
    let prefix = "kernel memcheck_test_iota_blocks_overlap block (";
    assert!(message.starts_with(prefix), "{message}");
    let t: usize = message
        .split("): thread ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no thread in: {message}"));
    let tail = format!(
        "wrote 4 bytes at {:#x} (offset {} of allocation \"memcheck test buffer\" ({} bytes at \
         {base:#x})), which block (",
        base + 4 * t,
        4 * t,
        4 * N
    );
    assert!(message.contains(&tail), "{message}\nwants: {tail}");
    assert!(
        message.ends_with(") also wrote in this launch (the blocks of a launch are unordered)"),
        "{message}"
    );
    // The twin, blocks on their own elements:
    let out = run_clean(Case::CUATTN_MEMCHECK_TEST_IOTA, &values(N), N);
    assert_eq!(out, (0..N as i32).collect::<Vec<_>>());
}

#[test]
fn two_threads_storing_to_one_element_need_a_syncthreads_between() {
    const N: usize = THREADS / 2;
    let v = values(N);
    let out = run_clean(Case::CUATTN_MEMCHECK_TEST_STORE_PAIRS, &v, N);
    assert_eq!(out, (0..N as i32).map(|j| 2 * j + 1).collect::<Vec<_>>());
    let (message, base) =
        run_faulting(Case::CUATTN_MEMCHECK_TEST_STORE_PAIRS_NO_SYNCTHREADS, &v, N);
    assert_eq!(
        message,
        format!(
            "kernel memcheck_test_store_pairs_no_syncthreads block (0,0,0): thread 1 (warp 0, \
             lane 1) wrote 4 bytes at {base:#x} (offset 0 of allocation \"memcheck test buffer\" \
             ({} bytes at {base:#x})), which thread 0 (warp 0, lane 0) wrote in the same barrier \
             interval (no __syncthreads, named barrier, nor __syncwarp naming both lanes, \
             between them)",
            4 * N
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Dynamic shared memory: reads of unwritten bytes and accesses past the launch's size.
// ---------------------------------------------------------------------------------------------

#[test]
fn reading_dynamic_shared_memory_no_thread_of_the_block_wrote_faults() {
    const N: usize = THREADS + 1;
    let v = values(N);
    let out = run_clean(Case::CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC, &v, N);
    let want: Vec<i32> = (0..THREADS).map(|t| v[t] + v[t + 1]).collect();
    assert_eq!(&out[..THREADS], &want[..]);
    assert_eq!(out[THREADS], v[THREADS]);
    // The copy loop stops at 64; thread 63 runs on first after the barrier and reads d[64],
    // which holds what the launch above wrote there: written, but not by this block.
    let (message, _) = run_faulting(Case::CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC_UNWRITTEN, &v, N);
    assert_eq!(
        message,
        "kernel memcheck_test_pair_sum_dynamic_unwritten block (0,0,0): thread 63 (warp 1, lane \
         31) read 4 bytes of dynamic shared memory at \
         memcheck_test_pair_sum_dynamic_unwritten::dynamic_smem+256, which no thread of the \
         block has written"
    );
}

#[test]
fn writing_past_the_dynamic_shared_memory_of_a_launch_faults() {
    const N: usize = THREADS + 1;
    let (message, _) = run_faulting(
        Case::CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC_TOO_SMALL,
        &values(N),
        N,
    );
    assert_eq!(
        message,
        "kernel memcheck_test_pair_sum_dynamic_too_small block (0,0,0): thread 0 (warp 0, lane 0) \
         wrote 4 bytes of shared memory at \
         memcheck_test_pair_sum_dynamic_too_small::dynamic_smem+256, past the end of the \
         launch's 256 bytes of dynamic shared memory"
    );
}

// ---------------------------------------------------------------------------------------------
// The switch and the registry.
// ---------------------------------------------------------------------------------------------

#[test]
fn checks_switched_off_on_a_thread_let_a_racy_kernel_run() {
    let off = common::MemcheckSetting::new(false);
    // SAFETY: reads this thread's setting.
    assert_eq!(unsafe { ffi::cuattn_emu_memcheck_enabled() }, 0);
    let mut buf = Buffer::new(&values(THREADS));
    let (status, message) = buf.launch(
        Case::CUATTN_MEMCHECK_TEST_REVERSE_STATIC_NO_SYNCTHREADS,
        THREADS,
    );
    assert_eq!(status, Status::CUATTN_OK, "{message}");
    drop(off);
    let on = common::MemcheckSetting::new(true);
    // SAFETY: as above.
    assert_eq!(unsafe { ffi::cuattn_emu_memcheck_enabled() }, 1);
    let (status, message) = buf.launch(
        Case::CUATTN_MEMCHECK_TEST_REVERSE_STATIC_NO_SYNCTHREADS,
        THREADS,
    );
    assert_eq!(status, Status::CUATTN_ERROR_KERNEL_FAULT, "{message}");
    drop(on);
    let default_on = std::env::var("CUATTN_EMU_MEMCHECK").map_or(true, |v| v != "0");
    // SAFETY: as above.
    assert_eq!(
        unsafe { ffi::cuattn_emu_memcheck_enabled() },
        i32::from(default_on),
        "-1 restores CUATTN_EMU_MEMCHECK's default"
    );
}

#[test]
fn the_registry_refuses_null_overlaps_and_unknown_or_repeated_unregistrations() {
    let data = vec![0u8; 256];
    let base = data.as_ptr();
    let (status, message) = register(std::ptr::null(), 16, LABEL);
    assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert!(message.contains("ptr must be non-null"), "{message}");

    let (status, message) = register(base.cast(), 128, c"first half");
    assert_eq!(status, Status::CUATTN_OK, "{message}");
    // SAFETY: 64 bytes into the vector.
    let inside = unsafe { base.add(64) };
    let (status, message) = register(inside.cast(), 128, c"overlap");
    assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert_eq!(
        message,
        format!(
            "cuattn_emu_register_allocation: 128 bytes at {inside:?} overlap allocation \"first \
             half\" (128 bytes at {base:?}), which is still registered"
        )
    );
    let (status, message) = unregister(inside.cast());
    assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert_eq!(
        message,
        format!(
            "cuattn_emu_unregister_allocation: {inside:?} is not the start of a registered \
             allocation"
        )
    );
    assert_eq!(unregister(base.cast()).0, Status::CUATTN_OK);
    let (status, message) = unregister(base.cast());
    assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert_eq!(
        message,
        format!(
            "cuattn_emu_unregister_allocation: {base:?} was already unregistered: freed \
             allocation \"first half\" (128 bytes at {base:?})"
        )
    );
    // Freed memory may be registered again, and is no longer "freed".
    assert_eq!(register(base.cast(), 256, c"again").0, Status::CUATTN_OK);
    assert_eq!(unregister(base.cast()).0, Status::CUATTN_OK);
}

#[test]
fn a_buffer_registered_again_after_being_freed_is_valid_again() {
    const N: usize = 100;
    let mut buf = Buffer::new(&vec![-1; N]);
    buf.unregister();
    let (status, message) = register(buf.data.as_ptr().cast(), 4 * N, c"reused");
    assert_eq!(status, Status::CUATTN_OK, "{message}");
    buf.registered = true;
    let (status, message) = buf.launch(Case::CUATTN_MEMCHECK_TEST_IOTA, N);
    assert_eq!(status, Status::CUATTN_OK, "{message}");
    assert_eq!(buf.values(), &(0..N as i32).collect::<Vec<_>>()[..]);
}

#[test]
fn unknown_cases_and_short_buffers_are_invalid_arguments() {
    let mut buf = Buffer::new(&values(THREADS));
    let (status, message) = buf.launch(Case(99), THREADS);
    assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert!(message.contains("test_case = 99"), "{message}");
    let (status, message) = buf.launch(Case::CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC, THREADS);
    assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert!(message.contains("n in 65..="), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Named barriers.
// ---------------------------------------------------------------------------------------------

/// The handoff cases' block: three warps.
const HANDOFF_THREADS: usize = 96;

#[test]
fn a_named_barrier_orders_what_its_arriving_warps_wrote_before_its_waiting_warps_reads() {
    let v = values(HANDOFF_THREADS);
    let out = run_clean(
        Case::CUATTN_MEMCHECK_TEST_HANDOFF_NAMED,
        &v,
        HANDOFF_THREADS,
    );
    let want: Vec<i32> = (0..HANDOFF_THREADS).map(|t| v[t % 32]).collect();
    assert_eq!(out, want);
}

#[test]
fn a_warp_that_only_arrives_at_a_named_barrier_is_not_ordered_after_it() {
    let (message, _) = run_faulting(
        Case::CUATTN_MEMCHECK_TEST_HANDOFF_NAMED_READER_ARRIVES,
        &values(HANDOFF_THREADS),
        HANDOFF_THREADS,
    );
    // Warp 0 wrote and then waited; warp 1 arrived and read at once.
    assert_eq!(
        message,
        "kernel memcheck_test_handoff_named_reader_arrives block (0,0,0): thread 32 (warp 1, \
         lane 0) read 4 bytes of shared memory at (anonymous namespace)::handoff_kernel(int*, \
         bool, bool)::slot+0, which thread 0 (warp 0, lane 0) wrote in the same barrier interval \
         (no __syncthreads between them, nor a named barrier that warp 0 arrived at and warp 1 \
         then waited at)"
    );
}

#[test]
fn a_named_barrier_orders_nothing_for_warps_outside_it() {
    let (message, _) = run_faulting(
        Case::CUATTN_MEMCHECK_TEST_HANDOFF_NAMED_OUTSIDER,
        &values(HANDOFF_THREADS),
        HANDOFF_THREADS,
    );
    assert_eq!(
        message,
        "kernel memcheck_test_handoff_named_outsider block (0,0,0): thread 64 (warp 2, lane 0) \
         read 4 bytes of shared memory at (anonymous namespace)::handoff_kernel(int*, bool, \
         bool)::slot+0, which thread 0 (warp 0, lane 0) wrote in the same barrier interval (no \
         __syncthreads between them, nor a named barrier that warp 0 arrived at and warp 2 then \
         waited at)"
    );
}
