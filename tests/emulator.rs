//! The CPU emulator's runtime, through the self-test kernels of csrc/kernels/selftest.cu: every
//! result is recomputed here from CUDA's documented semantics, and planted faults must come back
//! as CUATTN_ERROR_KERNEL_FAULT with a message naming the kernel, the block and the threads.

mod common;

use common::last_error;

use std::ffi::c_void;

use cuattn::ffi::{self, cuattn_selftest_case as Case, cuattn_status as Status};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WARP: usize = 32;
/// What `out` holds before a case runs, so that anything left unwritten shows up.
const POISON: u8 = 0xa5;

/// Host memory registered with the emulator's memory checker while this lives, as the memory a
/// kernel touches must be.
struct Registered(*const c_void);

impl Registered {
    fn new(ptr: *const c_void, bytes: usize) -> Registered {
        // SAFETY: [ptr, ptr + bytes) is memory the caller owns for this guard's life.
        let status = unsafe {
            ffi::cuattn_emu_register_allocation(ptr, bytes as u64, c"selftest out".as_ptr())
        };
        assert_eq!(status, Status::CUATTN_OK, "{}", last_error());
        Registered(ptr)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // SAFETY: self.0 starts the allocation registered in `new`.
        let status = unsafe { ffi::cuattn_emu_unregister_allocation(self.0) };
        assert_eq!(status, Status::CUATTN_OK, "{}", last_error());
    }
}

/// Runs `case` over `out` as it is; returns the status and the last-error message.
fn launch(case: Case, out: &mut [u8]) -> (Status, String) {
    let ptr = if out.is_empty() {
        std::ptr::null_mut()
    } else {
        out.as_mut_ptr().cast()
    };
    let _registered = (!out.is_empty()).then(|| Registered::new(ptr, out.len()));
    // SAFETY: `ptr` is null or valid for out.len() writable bytes for the whole call, which
    // returns only when the kernel has finished; the stream is ignored by the emulator.
    let status = unsafe {
        ffi::cuattn_emu_raw_launch_selftest(
            case.0 as i32,
            ptr,
            out.len() as i64,
            std::ptr::null_mut(),
        )
    };
    (status, last_error())
}

/// Poisons `bytes` bytes, runs `case`, asserts it succeeded and returns the output.
fn run_ok(case: Case, bytes: usize) -> Vec<u8> {
    let mut out = vec![POISON; bytes];
    let (status, message) = launch(case, &mut out);
    assert_eq!(status, Status::CUATTN_OK, "{case:?} failed: {message}");
    out
}

/// Runs a planted fault; asserts the status and returns the message.
fn run_failing(case: Case, bytes: usize, expected: Status) -> String {
    let mut out = vec![POISON; bytes];
    let (status, message) = launch(case, &mut out);
    assert_eq!(status, expected, "{case:?}: {message}");
    println!("{case:?}: {message}");
    message
}

fn u16s(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
fn i32s(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
fn u64s(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Compares element by element and names the first mismatches.
fn assert_all_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: &[T], want: &[T]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<String> = (0..got.len())
        .filter(|&i| got[i] != want[i])
        .take(8)
        .map(|i| format!("[{i}] got {:?} want {:?}", got[i], want[i]))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} mismatches, first: {}",
        bad.len(),
        bad.join(", ")
    );
}

// ---------------------------------------------------------------------------------------------
// Shuffles, from the CUDA programming guide's definitions. PTX's shfl.sync reads only the low
// five bits of the lane or offset operand, so arguments are taken mod 32 first.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Shuffle {
    Idx,
    Up,
    Down,
    Xor,
}

/// The lane whose value `lane` receives (its own lane when the source is out of range).
fn shuffle_source(kind: Shuffle, lane: i32, arg: i32, width: i32) -> i32 {
    let segment_start = lane / width * width;
    let segment_end = segment_start + width - 1;
    let b = arg & 31;
    match kind {
        // srcLane % width, within the caller's segment.
        Shuffle::Idx => segment_start + b % width,
        // Out of the caller's segment: its own value.
        Shuffle::Up if lane - b >= segment_start => lane - b,
        Shuffle::Down if lane + b <= segment_end => lane + b,
        // "Groups may read from earlier groups, but reading a later group returns the own value."
        Shuffle::Xor if (lane ^ b) <= segment_end => lane ^ b,
        _ => lane,
    }
}

fn thread_value(t: usize) -> i32 {
    1000 * t as i32 + 7
}

#[test]
fn shuffles_match_cuda_semantics_for_every_kind_width_and_argument() {
    const THREADS: usize = 64;
    const KINDS: [Shuffle; 4] = [Shuffle::Idx, Shuffle::Up, Shuffle::Down, Shuffle::Xor];
    const FIXED_ARGS: [i32; 8] = [0, 1, 3, 17, 31, 32, 45, -1];
    let args = FIXED_ARGS.len() + 1;
    let out = i32s(&run_ok(
        Case::CUATTN_SELFTEST_SHUFFLE,
        4 * KINDS.len() * 6 * args * THREADS,
    ));
    let mut want = Vec::with_capacity(out.len());
    for kind in KINDS {
        for w in 0..6 {
            let width = 32 >> w;
            for a in 0..args {
                for t in 0..THREADS {
                    let arg = FIXED_ARGS
                        .get(a)
                        .copied()
                        .unwrap_or((5 * t as i32 + 3) % 41 - 4);
                    let warp_base = (t / WARP * WARP) as i32;
                    let lane = (t % WARP) as i32;
                    let source = shuffle_source(kind, lane, arg, width);
                    want.push(thread_value((warp_base + source) as usize));
                }
            }
        }
    }
    println!("4 kinds x 6 widths x {args} arguments x {THREADS} threads");
    assert_all_eq("shuffle", &out, &want);
}

#[test]
fn shuffles_with_partial_and_disjoint_masks_poison_sources_outside_the_mask() {
    const THREADS: usize = 64;
    let out = i32s(&run_ok(
        Case::CUATTN_SELFTEST_SHUFFLE_MASKS,
        4 * 4 * THREADS,
    ));
    let mut want = vec![0; 4 * THREADS];
    for t in 0..THREADS {
        let base = t / WARP * WARP;
        let lane = (t % WARP) as i32;
        // A source lane outside the caller's mask did not take part: the emulator returns -1.
        let received = |mask: u32, kind: Shuffle, arg: i32, width: i32| {
            let source = shuffle_source(kind, lane, arg, width);
            if mask >> source & 1 == 1 {
                thread_value(base + source as usize)
            } else {
                -1
            }
        };
        want[t] = if lane < 16 {
            received(0x0000_ffff, Shuffle::Xor, 1, 16)
        } else {
            received(0xffff_0000, Shuffle::Down, 3, 16)
        };
        want[THREADS + t] = if lane < 8 {
            received(0x0000_00ff, Shuffle::Down, 4, 32)
        } else {
            received(0xffff_ff00, Shuffle::Up, 8, 32)
        };
        want[2 * THREADS + t] = if lane % 2 == 0 {
            received(0x5555_5555, Shuffle::Idx, lane + 2, 32)
        } else {
            received(0xaaaa_aaaa, Shuffle::Idx, lane - 2, 32)
        };
        want[3 * THREADS + t] = thread_value(t ^ 1);
    }
    assert_all_eq("shuffle masks", &out, &want);
}

#[test]
fn shuffles_move_every_type_bit_for_bit() {
    const SIZES: [usize; 10] = [8, 8, 8, 4, 4, 4, 4, 4, 2, 2];
    let out = u64s(&run_ok(
        Case::CUATTN_SELFTEST_SHUFFLE_TYPES,
        8 * SIZES.len() * WARP,
    ));
    let bits = |k: usize, t: usize| {
        0x9e37_79b9_7f4a_7c15u64.wrapping_mul((WARP * k + t + 1) as u64) ^ 0xd1b5_4a32_d192_ed03
    };
    let mut want = Vec::new();
    for (k, size) in SIZES.iter().enumerate() {
        let keep = if *size == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * size)) - 1
        };
        want.extend((0..WARP).map(|t| bits(k, t ^ 5) & keep));
    }
    println!(
        "double, long long, unsigned long long, float, int, unsigned, __half2, bf162, __half, bf16"
    );
    assert_all_eq("shuffled bits", &out, &want);
}

#[test]
fn votes_and_activemask_match_cuda_semantics() {
    const THREADS: usize = 64;
    let out = u32s(&run_ok(Case::CUATTN_SELFTEST_VOTE, 4 * 8 * THREADS));
    let lanes_where =
        |f: &dyn Fn(usize) -> bool| (0..WARP).filter(|&l| f(l)).map(|l| 1u32 << l).sum();
    let mut want = vec![0u32; 8 * THREADS];
    for t in 0..THREADS {
        let (warp, lane) = (t / WARP, t % WARP);
        want[t] = u32::from(warp == 1);
        want[THREADS + t] = u32::from(warp == 1);
        want[2 * THREADS + t] = lanes_where(&|l| l.is_multiple_of(3));
        want[3 * THREADS + t] = if lane < 20 {
            lanes_where(&|l| l < 20 && l % 2 == 1)
        } else {
            lanes_where(&|l| l >= 20 && l.is_multiple_of(4))
        };
        want[4 * THREADS + t] = if lane < 16 { 1 } else { u32::from(warp == 0) };
        want[5 * THREADS + t] = u32::MAX;
        // A loop of lane % 4 + 1 iterations: at its last call, the lanes still iterating.
        want[6 * THREADS + t] = lanes_where(&|l| l % 4 >= lane % 4);
        want[7 * THREADS + t] = u32::MAX;
    }
    assert_all_eq("votes", &out, &want);
}

#[test]
fn syncthreads_orders_static_and_dynamic_shared_memory_across_warps() {
    const BLOCKS: usize = 3;
    const THREADS: usize = 256;
    let out = i32s(&run_ok(
        Case::CUATTN_SELFTEST_SYNCTHREADS,
        4 * BLOCKS * (THREADS + 1),
    ));
    let mut want = Vec::new();
    for b in 0..BLOCKS as i32 {
        for t in 0..THREADS as i32 {
            let mirrored = THREADS as i32 - 1 - t;
            want.push((1000 * b + mirrored) + (7 * b + 3 * mirrored));
        }
        want.push((0..THREADS as i32).map(|t| 1000 * b + t).sum());
    }
    println!("grid {BLOCKS}, block (32,4,2)");
    assert_all_eq("syncthreads", &out, &want);
}

#[test]
fn dynamic_shared_memory_is_poisoned_at_every_block_start() {
    const BLOCKS: usize = 8;
    const THREADS: usize = 64;
    // The memory checker stops the read of a byte no thread wrote (tests/memcheck.rs)...
    let checked = common::MemcheckSetting::new(true);
    let message = run_failing(
        Case::CUATTN_SELFTEST_SMEM_POISON,
        4 * BLOCKS * THREADS,
        Status::CUATTN_ERROR_KERNEL_FAULT,
    );
    assert_eq!(
        message,
        "kernel selftest_smem_poison block (0,0,0): thread 0 (warp 0, lane 0) read 4 bytes of \
         dynamic shared memory at selftest_smem_poison::dynamic_smem+0, which no thread of the \
         block has written"
    );
    drop(checked);
    // ...and without it the poison shows.
    let _unchecked = common::MemcheckSetting::new(false);
    let out = u32s(&run_ok(
        Case::CUATTN_SELFTEST_SMEM_POISON,
        4 * BLOCKS * THREADS,
    ));
    assert_all_eq(
        "unwritten dynamic shared memory",
        &out,
        &vec![u32::MAX; BLOCKS * THREADS],
    );
    // The pattern reads as NaN in every floating-point type the kernels use.
    assert!(f32::from_bits(u32::MAX).is_nan());
    assert!(f16::from_bits(u16::MAX).is_nan() && bf16::from_bits(u16::MAX).is_nan());
}

#[test]
fn atomics_are_atomic_across_blocks_and_workers() {
    const TOTAL: usize = 4 * 3 * 2 * 128;
    const TICKETS: usize = 40;
    let out = run_ok(Case::CUATTN_SELFTEST_ATOMICS, TICKETS + 4 * TOTAL);
    let word = |offset: usize| u32::from_le_bytes(out[offset..offset + 4].try_into().unwrap());
    let g_values = 0..TOTAL as u64;
    assert_eq!(
        word(0) as i32,
        g_values.clone().sum::<u64>() as i32,
        "atomicAdd(int)"
    );
    assert_eq!(word(4), TOTAL as u32, "atomicAdd(unsigned)");
    let sum_u64 = u64::from_le_bytes(out[8..16].try_into().unwrap());
    assert_eq!(
        sum_u64,
        g_values.clone().map(|g| (g << 33) + 1).sum::<u64>(),
        "atomicAdd(ull)"
    );
    assert_eq!(f32::from_bits(word(16)), TOTAL as f32, "atomicAdd(float)");
    let max = g_values
        .clone()
        .map(|g| (g as u32).wrapping_mul(0x9e37_79b9) as i32)
        .max();
    assert_eq!(Some(word(20) as i32), max, "atomicMax(int)");
    let sum_f64 = f64::from_le_bytes(out[24..32].try_into().unwrap());
    assert_eq!(sum_f64, 0.25 * TOTAL as f64, "atomicAdd(double)");
    assert_eq!(word(32) as usize, TOTAL, "atomicCAS(int) loop");
    assert_eq!(word(36) as usize, 2 * TOTAL, "atomicCAS(unsigned) loop");
    // Every ticket went to exactly one thread: the returned old values were all distinct.
    let mut tickets = u32s(&out[TICKETS..]);
    tickets.sort_unstable();
    assert_all_eq(
        "ticket holders",
        &tickets,
        &(0..TOTAL as u32).collect::<Vec<_>>(),
    );
    println!("grid (4,3,2), block 128: {TOTAL} threads");
}

#[test]
fn built_in_variables_and_lanes_follow_linear_thread_order_in_3d() {
    const GRID: [usize; 3] = [3, 2, 2];
    const BLOCK: [usize; 3] = [8, 4, 2];
    const THREADS: usize = 64;
    const FIELDS: usize = 14;
    let out = u32s(&run_ok(
        Case::CUATTN_SELFTEST_INDEXING,
        4 * 12 * THREADS * FIELDS,
    ));
    let mut want = Vec::new();
    for bz in 0..GRID[2] {
        for by in 0..GRID[1] {
            for bx in 0..GRID[0] {
                for t in 0..THREADS {
                    let thread = [
                        t % BLOCK[0],
                        t / BLOCK[0] % BLOCK[1],
                        t / (BLOCK[0] * BLOCK[1]),
                    ];
                    want.extend(thread.iter().map(|&v| v as u32));
                    want.extend([bx, by, bz].iter().map(|&v| v as u32));
                    want.extend(BLOCK.iter().chain(GRID.iter()).map(|&v| v as u32));
                    want.push((t / WARP * WARP) as u32);
                    want.push((t ^ 1) as u32);
                }
            }
        }
    }
    println!("grid {GRID:?}, block {BLOCK:?}");
    assert_all_eq("indexing", &out, &want);
}

#[test]
fn half_and_bfloat16_to_float_match_the_half_crate_for_all_bit_patterns() {
    const PATTERNS: usize = 1 << 16;
    let out = u32s(&run_ok(
        Case::CUATTN_SELFTEST_HALF_TO_FLOAT,
        4 * 8 * PATTERNS,
    ));
    let half: Vec<u32> = (0..PATTERNS)
        .map(|i| f16::from_bits(i as u16).to_f32().to_bits())
        .collect();
    let bf: Vec<u32> = (0..PATTERNS)
        .map(|i| bf16::from_bits(i as u16).to_f32().to_bits())
        .collect();
    let rows = ["convert", "implicit", "low2float", "high2float"];
    for (r, name) in rows.iter().enumerate() {
        assert_all_eq(
            &format!("fp16 {name}"),
            &out[r * PATTERNS..(r + 1) * PATTERNS],
            &half,
        );
        assert_all_eq(
            &format!("bf16 {name}"),
            &out[(r + 4) * PATTERNS..(r + 5) * PATTERNS],
            &bf,
        );
    }
}

/// Floats that probe every rounding decision of fp32 -> fp16 and fp32 -> bf16: each exponent,
/// both signs, mantissas at and around both formats' ties, plus random bit patterns.
fn conversion_inputs() -> Vec<f32> {
    // Bits 22..13: the part fp16 keeps (bf16 keeps 22..16, and bit 15 is its round bit).
    const KEPT: [u32; 16] = [
        0x000, 0x001, 0x002, 0x004, 0x005, 0x155, 0x1fc, 0x1ff, 0x200, 0x204, 0x2aa, 0x3f8, 0x3fb,
        0x3fc, 0x3fe, 0x3ff,
    ];
    // Bits 12..0: fp16's round bit (12) and sticky bits.
    const DROPPED: [u32; 8] = [
        0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x0800, 0x17ff,
    ];
    let mut bits = Vec::new();
    for sign in [0u32, 1] {
        for exponent in 0..=255u32 {
            for kept in KEPT {
                for dropped in DROPPED {
                    bits.push(sign << 31 | exponent << 23 | kept << 13 | dropped);
                }
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(0x05ee_df16);
    for _ in 0..1 << 16 {
        bits.push(rng.random::<u32>());
    }
    // Exponents from below fp16's subnormals to above its largest finite value.
    for _ in 0..1 << 16 {
        let x = rng.random::<u32>();
        bits.push((x & 0x807f_ffff) | (100 + rng.random_range(0..48u32)) << 23);
    }
    bits.into_iter().map(f32::from_bits).collect()
}

#[test]
fn float_to_half_and_bfloat16_round_like_the_half_crate() {
    let inputs = conversion_inputs();
    let n = inputs.len();
    let mut out = vec![POISON; 20 * n];
    for (chunk, x) in out[..4 * n].chunks_exact_mut(4).zip(&inputs) {
        chunk.copy_from_slice(&x.to_bits().to_le_bytes());
    }
    let (status, message) = launch(Case::CUATTN_SELFTEST_FLOAT_TO_HALF, &mut out);
    assert_eq!(status, Status::CUATTN_OK, "{message}");
    let rows = u16s(&out[4 * n..]);
    let row = |r: usize| &rows[r * n..(r + 1) * n];
    let half: Vec<u16> = inputs.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
    let half_neg: Vec<u16> = inputs
        .iter()
        .map(|&x| f16::from_f32(-x).to_bits())
        .collect();
    let bf: Vec<u16> = inputs
        .iter()
        .map(|&x| bf16::from_f32(x).to_bits())
        .collect();
    let bf_neg: Vec<u16> = inputs
        .iter()
        .map(|&x| bf16::from_f32(-x).to_bits())
        .collect();
    println!("{n} floats: every exponent and sign around both formats' ties, plus random bits");
    assert_all_eq("__float2half_rn", row(0), &half);
    assert_all_eq("__half(float)", row(1), &half);
    assert_all_eq("__floats2half2_rn low", row(2), &half);
    assert_all_eq("__floats2half2_rn high", row(3), &half_neg);
    assert_all_eq("__float2bfloat16_rn", row(4), &bf);
    assert_all_eq("__nv_bfloat16(float)", row(5), &bf);
    assert_all_eq("__floats2bfloat162_rn low", row(6), &bf);
    assert_all_eq("__floats2bfloat162_rn high", row(7), &bf_neg);
}

#[test]
fn named_barriers_let_two_warp_groups_take_turns() {
    const ROUNDS: usize = 5;
    let out = u32s(&run_ok(
        Case::CUATTN_SELFTEST_NAMED_BARRIERS,
        4 * (2 * ROUNDS + 1),
    ));
    // Tickets by round and group: the turns alternate from group 0, and all ten were taken.
    let want: Vec<u32> = (0..2 * ROUNDS as u32 + 1).collect();
    assert_all_eq("tickets, then the counter", &out, &want);
}

// ---------------------------------------------------------------------------------------------
// Planted faults: reported, never hung on, and the runtime keeps working afterwards.
// ---------------------------------------------------------------------------------------------

#[test]
fn named_barrier_that_cannot_complete_faults_naming_waiters_and_the_rest() {
    let message = run_failing(
        Case::CUATTN_SELFTEST_FAULT_NAMED_BARRIER_STALL,
        0,
        Status::CUATTN_ERROR_KERNEL_FAULT,
    );
    assert_eq!(
        message,
        "kernel selftest_named_barrier_stall block (0,0,0): bar.sync 1 (64 threads, 32 arrived) \
         waited in by threads 0-31; the others 32-63 (exited)"
    );
}

#[test]
fn block_that_ends_with_named_barrier_arrivals_pending_faults() {
    let message = run_failing(
        Case::CUATTN_SELFTEST_FAULT_NAMED_BARRIER_PENDING,
        0,
        Status::CUATTN_ERROR_KERNEL_FAULT,
    );
    assert_eq!(
        message,
        "kernel selftest_named_barrier_pending block (0,0,0): the block ended with 32 of the 64 \
         arrivals at named barrier 1"
    );
}

#[test]
fn named_barrier_arrivals_that_disagree_on_the_count_fault() {
    let message = run_failing(
        Case::CUATTN_SELFTEST_FAULT_NAMED_BARRIER_COUNT,
        0,
        Status::CUATTN_ERROR_KERNEL_FAULT,
    );
    assert_eq!(
        message,
        "kernel selftest_named_barrier_count block (0,0,0): thread 32 (warp 1, lane 0): bar.sync \
         1, 32: the 32 arrivals pending there named 64 threads"
    );
}

#[test]
fn divergent_syncthreads_faults_naming_the_block_and_stops_the_launch() {
    const BLOCKS: u32 = 16 * 16;
    let mut out = vec![POISON; 4];
    let (status, message) = launch(Case::CUATTN_SELFTEST_FAULT_DIVERGENT_SYNCTHREADS, &mut out);
    assert_eq!(status, Status::CUATTN_ERROR_KERNEL_FAULT, "{message}");
    assert_eq!(
        message,
        "kernel selftest_divergent_syncthreads block (1,0,1): __syncthreads reached by threads \
         0-31 but not 32-63 (exited)"
    );
    let started = u32::from_le_bytes(out[..4].try_into().unwrap());
    println!("{message}; {started} of {BLOCKS} blocks started");
    // Block (1,0,1) is linear block 17; the workers may have taken a few more before it failed.
    assert!((18..BLOCKS).contains(&started), "{started} blocks started");
}

#[test]
fn shuffle_whose_mask_omits_the_caller_faults() {
    let message = run_failing(
        Case::CUATTN_SELFTEST_FAULT_SHUFFLE_OMITS_LANE,
        0,
        Status::CUATTN_ERROR_KERNEL_FAULT,
    );
    assert_eq!(
        message,
        "kernel selftest_shuffle_omits_lane block (0,0,0): thread 63 (warp 1, lane 31) called \
         __shfl_sync(mask 0x7fffffff, width 32, 4-byte value), a mask without its own lane"
    );
}

#[test]
fn shuffle_waiting_on_an_exited_lane_faults_naming_waiters_and_the_exited_thread() {
    let message = run_failing(
        Case::CUATTN_SELFTEST_FAULT_SHUFFLE_EXITED_LANE,
        0,
        Status::CUATTN_ERROR_KERNEL_FAULT,
    );
    assert_eq!(
        message,
        "kernel selftest_shuffle_exited_lane block (0,0,0): __shfl_sync(mask 0xffffffff, width \
         32, 4-byte value) in warp 1 reached by threads 32-38, 40-63 but not 39 (exited)"
    );
}

#[test]
fn different_collectives_over_one_mask_fault() {
    let message = run_failing(
        Case::CUATTN_SELFTEST_FAULT_COLLECTIVE_MISMATCH,
        0,
        Status::CUATTN_ERROR_KERNEL_FAULT,
    );
    assert_eq!(
        message,
        "kernel selftest_collective_mismatch block (0,0,0): thread 16 (warp 0, lane 16) called \
         __ballot_sync(mask 0xffffffff) while threads 0-15 wait in __shfl_xor_sync(mask \
         0xffffffff, width 32, 4-byte value)"
    );
}

#[test]
fn launches_beyond_cuda_limits_are_refused() {
    let message = run_failing(
        Case::CUATTN_SELFTEST_BAD_LAUNCH_BLOCK,
        0,
        Status::CUATTN_ERROR_LAUNCH_FAILED,
    );
    assert!(
        message.contains("kernel selftest_bad_launch_block") && message.contains("1056 threads")
    );
    let message = run_failing(
        Case::CUATTN_SELFTEST_BAD_LAUNCH_SMEM,
        0,
        Status::CUATTN_ERROR_LAUNCH_FAILED,
    );
    assert!(
        message.contains("kernel selftest_bad_launch_smem") && message.contains("233472 bytes")
    );
}

#[test]
fn unknown_cases_and_short_buffers_are_invalid_arguments() {
    let mut out = vec![POISON; 16];
    let (status, message) = launch(Case(99), &mut out);
    assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert!(message.contains("test_case = 99"), "{message}");
    let (status, message) = launch(Case::CUATTN_SELFTEST_SHUFFLE, &mut out);
    assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT);
    assert!(
        message.contains("at least 55296 bytes, got 16"),
        "{message}"
    );
    assert!(out.iter().all(|&b| b == POISON), "nothing was launched");
}

#[test]
fn concurrent_launches_from_many_threads_agree_and_keep_their_own_errors() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 5;
    let reference = run_ok(Case::CUATTN_SELFTEST_SYNCTHREADS, 4 * 3 * 257);
    std::thread::scope(|scope| {
        for i in 0..THREADS {
            let reference = &reference;
            scope.spawn(move || {
                for _ in 0..ROUNDS {
                    if i.is_multiple_of(2) {
                        assert_eq!(
                            &run_ok(Case::CUATTN_SELFTEST_SYNCTHREADS, reference.len()),
                            reference
                        );
                        assert_eq!(
                            last_error(),
                            "",
                            "a fault elsewhere leaked into this thread"
                        );
                    } else {
                        run_failing(
                            Case::CUATTN_SELFTEST_FAULT_DIVERGENT_SYNCTHREADS,
                            4,
                            Status::CUATTN_ERROR_KERNEL_FAULT,
                        );
                        // A fault abandons fibers mid-block: the runner must still work.
                        let out = run_ok(Case::CUATTN_SELFTEST_ATOMICS, 40 + 4 * 3072);
                        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 3072);
                    }
                }
            });
        }
    });
    println!("{THREADS} threads x {ROUNDS} rounds of concurrent launches");
}
