/* cuattn_internal.h: the parts of the C ABI that are not public: what the Rust layer and the
 * tests reach besides csrc/cuattn.h. The raw launchers (cuattn_raw_launch_*, and
 * cuattn_emu_raw_launch_* for the emulator) check only what their kernels' indexing relies on
 * and trust the rest (the validated entry points of cuattn.h and the Rust layer check it);
 * the emulator's memory registry, memory checker and traffic counters; and the test and
 * benchmark kernels. No stability promise: CUATTN_ABI_VERSION covers cuattn.h alone. */
#ifndef CUATTN_INTERNAL_H_
#define CUATTN_INTERNAL_H_

#include <stdint.h>

#include "cuattn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Replaces this thread's last-error message. The Rust layer uses it to report its own validation
 * failures through cuattn_last_error(); C callers have no need for it. */
void cuattn_set_last_error(const char* message);

/* The message behind cuattn_last_error() (which the Rust layer exports), from the C++ side. */
const char* cuattn_internal_last_error(void);

/* ---------------------------------------------------------------------------------------------
 * Raw launchers. Each checks what its kernel's indexing relies on (params set, dims, dtype)
 * and trusts the rest; cuattn_raw_launch_* launch on `stream` (CUDA builds only),
 * cuattn_emu_raw_launch_* run on the emulator (host pointers, `stream` ignored, returning when
 * the kernel has run). cuattn.h documents each family; its entry points call these.
 * ------------------------------------------------------------------------------------------- */

/* attention_naive and attention_flash (cuattn.h), and attention_mma_simple: one warp per 16 query
 * rows, S = Q K^T and O += P V on mma.sync tensor cores, K/V tiles through shared memory with
 * cp.async, no pipelining; the tensor-core baseline, which needs 16-byte aligned rows (q/k/v/out
 * pointers and strides multiples of 8 elements). They check head_dim, heads and dtype (and
 * attention_flash flash_tiles); a problem with no query rows or no batch launches nothing. */
cuattn_status cuattn_raw_launch_attention_naive(const cuattn_attention_params* params,
                                                void* stream);
cuattn_status cuattn_raw_launch_attention_mma_simple(const cuattn_attention_params* params,
                                                     void* stream);
cuattn_status cuattn_raw_launch_attention_flash(const cuattn_attention_params* params,
                                                void* stream);
cuattn_status cuattn_emu_raw_launch_attention_naive(const cuattn_attention_params* params,
                                                    void* stream);
cuattn_status cuattn_emu_raw_launch_attention_mma_simple(const cuattn_attention_params* params,
                                                         void* stream);
cuattn_status cuattn_emu_raw_launch_attention_flash(const cuattn_attention_params* params,
                                                    void* stream);
/* What attention_flash runs for params on the calling thread's current device, and on the
 * emulator (which runs as an sm_90 GPU). */
cuattn_status cuattn_raw_plan_attention_flash(const cuattn_attention_params* params,
                                              cuattn_flash_plan* plan);
cuattn_status cuattn_emu_raw_plan_attention_flash(const cuattn_attention_params* params,
                                                  cuattn_flash_plan* plan);

/* The other families (cuattn.h), each as its CUDA and its emulator raw launcher. */
cuattn_status cuattn_raw_launch_kv_append(const cuattn_kv_append_params* params, void* stream);
cuattn_status cuattn_emu_raw_launch_kv_append(const cuattn_kv_append_params* params, void* stream);
cuattn_status cuattn_raw_launch_kv_copy_pages(const cuattn_kv_copy_pages_params* params,
                                              void* stream);
cuattn_status cuattn_emu_raw_launch_kv_copy_pages(const cuattn_kv_copy_pages_params* params,
                                                  void* stream);

cuattn_status cuattn_raw_plan_paged_attention(const cuattn_paged_attention_params* params,
                                              int32_t num_sms, int32_t split_kv,
                                              cuattn_paged_plan* plan);
cuattn_status cuattn_emu_raw_plan_paged_attention(const cuattn_paged_attention_params* params,
                                                  int32_t num_sms, int32_t split_kv,
                                                  cuattn_paged_plan* plan);
cuattn_status cuattn_raw_launch_paged_attention(const cuattn_paged_attention_params* params,
                                                void* stream);
cuattn_status cuattn_emu_raw_launch_paged_attention(const cuattn_paged_attention_params* params,
                                                    void* stream);
cuattn_status cuattn_raw_launch_merge_states(const cuattn_merge_states_params* params,
                                             void* stream);
cuattn_status cuattn_emu_raw_launch_merge_states(const cuattn_merge_states_params* params,
                                                 void* stream);

cuattn_status cuattn_raw_plan_block_sparse_attention(const cuattn_attention_params* params,
                                                     const cuattn_block_mask* mask,
                                                     cuattn_block_sparse_plan* plan);
cuattn_status cuattn_emu_raw_plan_block_sparse_attention(const cuattn_attention_params* params,
                                                         const cuattn_block_mask* mask,
                                                         cuattn_block_sparse_plan* plan);
cuattn_status cuattn_raw_launch_block_sparse_attention(const cuattn_attention_params* params,
                                                       const cuattn_block_mask* mask, void* stream);
cuattn_status cuattn_emu_raw_launch_block_sparse_attention(const cuattn_attention_params* params,
                                                           const cuattn_block_mask* mask,
                                                           void* stream);

cuattn_status cuattn_raw_plan_linear_attention(const cuattn_linear_attention_params* params,
                                               int64_t* workspace_bytes);
cuattn_status cuattn_emu_raw_plan_linear_attention(const cuattn_linear_attention_params* params,
                                                   int64_t* workspace_bytes);
cuattn_status cuattn_raw_launch_linear_attention(const cuattn_linear_attention_params* params,
                                                 void* stream);
cuattn_status cuattn_emu_raw_launch_linear_attention(const cuattn_linear_attention_params* params,
                                                     void* stream);

cuattn_status cuattn_raw_launch_lowrank_projection(const cuattn_lowrank_projection_params* params,
                                                   void* stream);
cuattn_status cuattn_emu_raw_launch_lowrank_projection(
    const cuattn_lowrank_projection_params* params, void* stream);

/* ---------------------------------------------------------------------------------------------
 * Emulator memory registry.
 *
 * The emulator checks every memory access of kernel code, as compute-sanitizer's memcheck,
 * racecheck and initcheck do on a GPU. A launch stops with CUATTN_ERROR_KERNEL_FAULT and a
 * message naming the kernel, the block, the thread and the address when a kernel
 *   - touches memory outside every registered allocation, or inside one since unregistered (the
 *     message names the nearest allocation, or the freed one, with its label);
 *   - reads or writes a shared-memory byte that another thread wrote, or writes one that another
 *     thread read, in the same barrier interval: no __syncthreads between the two accesses, nor
 *     a named barrier (bar.sync/bar.arrive) that the first access's warp arrived at after it and
 *     the second's waited at, nor, for two lanes of one warp, a __syncwarp naming both (shuffles
 *     and votes order nothing; atomics do not race with atomics);
 *   - reads dynamic shared memory that no thread of its block has written, or touches dynamic
 *     shared memory past the size the launch asked for;
 *   - touches shared memory that an in-flight cp.async is still to write.
 * So every buffer an emulator launcher is given must lie in memory registered here (the Rust
 * tensors register theirs). Checks are on unless the environment sets CUATTN_EMU_MEMCHECK=0 or
 * cuattn_emu_set_memcheck(0) turns them off; checked kernels run 1.5 to 3 times slower. A thread
 * that records traffic (below) has its launches checked whatever the setting.
 * ------------------------------------------------------------------------------------------- */

/* Registers [ptr, ptr + bytes) as an emulated device allocation that kernels may touch, called
 * `label` in fault messages (copied; NULL for none). CUATTN_ERROR_INVALID_ARGUMENT if ptr is NULL
 * or the range overlaps an allocation still registered. */
cuattn_status cuattn_emu_register_allocation(const void* ptr, uint64_t bytes, const char* label);

/* Unregisters the allocation that starts at `ptr` (before its memory is freed): a kernel that
 * touches it later faults naming the freed allocation. CUATTN_ERROR_INVALID_ARGUMENT if no
 * registered allocation starts at ptr (the message says so if it was unregistered already). */
cuattn_status cuattn_emu_unregister_allocation(const void* ptr);

/* Renames the allocation that starts at `ptr` to `label` (copied; NULL for none), in fault
 * messages and traffic records from now on. CUATTN_ERROR_INVALID_ARGUMENT if no registered
 * allocation starts at ptr. */
cuattn_status cuattn_emu_relabel_allocation(const void* ptr, const char* label);

/* Checks launches made from the calling thread from now on (1) or not (0); -1 restores the
 * default: on, unless CUATTN_EMU_MEMCHECK=0. */
void cuattn_emu_set_memcheck(int32_t enabled);

/* 1 if launches made now from the calling thread are checked, else 0. */
int32_t cuattn_emu_memcheck_enabled(void);

/* ---------------------------------------------------------------------------------------------
 * Emulator traffic counters.
 *
 * Per kernel launch, the global-memory bytes kernel code read and wrote in each registered
 * allocation: plain loads and stores of any width (a 16-byte vector load counts 16 bytes),
 * cp.async sources (the bytes copied, not those zero-filled), and atomics (a load reads its
 * bytes, a store writes them, a read-modify-write does both). Shared memory, the threads' stacks
 * and the modules' data are not counted, nor accesses that fault. The counts are what the
 * emulated threads asked for, with no cache: not a GPU's DRAM traffic, which L2 hits lower and
 * 32-byte sectors round up.
 *
 * Recording is per thread and off until asked for: cuattn_emu_traffic_begin opens a recording on
 * the calling thread, and every emulator launch that thread makes until cuattn_emu_traffic_end
 * is recorded (launches of other threads are not). The counts come from the memory checker's
 * hooks, so those launches run checked whatever cuattn_emu_set_memcheck says. A launch that
 * returns an error is not recorded. After cuattn_emu_traffic_end the calling thread reads its
 * recording with the accessors below; the strings they hand out stay valid until the thread's
 * next cuattn_emu_traffic_begin, or its exit.
 * ------------------------------------------------------------------------------------------- */

/* One allocation a recorded launch touched. */
typedef struct cuattn_emu_traffic_entry {
  /* Its label (cuattn_emu_register_allocation) when the launch ended; "" for none. */
  const char* label;
  /* Its start address and size. */
  uint64_t address;
  uint64_t allocation_bytes;
  /* Global bytes the launch's threads read from it and wrote to it. */
  uint64_t bytes_read;
  uint64_t bytes_written;
} cuattn_emu_traffic_entry;

/* Opens a recording on the calling thread, discarding the records of its previous one.
 * CUATTN_ERROR_INVALID_ARGUMENT if the thread has one open already. */
cuattn_status cuattn_emu_traffic_begin(void);

/* Closes the calling thread's recording; its records stay readable on the thread.
 * CUATTN_ERROR_INVALID_ARGUMENT if the thread has none open. */
cuattn_status cuattn_emu_traffic_end(void);

/* 1 while the calling thread has a recording open, else 0. */
int32_t cuattn_emu_traffic_recording(void);

/* How many launches the calling thread's last closed recording holds. Each accessor returns
 * CUATTN_ERROR_INVALID_ARGUMENT when an out pointer is NULL, an index is out of range, the thread
 * has a recording open, or it has closed none. */
cuattn_status cuattn_emu_traffic_launch_count(uint64_t* launches);

/* Launch `launch` (0 .. count - 1, in the order they were made) of that recording: the name its
 * launcher gave the kernel ("attention_flash") and how many allocations it touched. */
cuattn_status cuattn_emu_traffic_get_launch(uint64_t launch, const char** kernel_name,
                                            uint64_t* entries);

/* Entry `entry` (0 .. entries - 1, by address) of launch `launch`. */
cuattn_status cuattn_emu_traffic_get_entry(uint64_t launch, uint64_t entry,
                                           cuattn_emu_traffic_entry* out);

/* Planted memory bugs the checker must report, each next to a correct twin that must run clean.
 * `buf` is int32 [n] and blocks have 64 threads (two warps) unless a case says otherwise; thread t
 * of block b has global index i = 64 * b + t, lane l = t % 32. On a GPU the planted bugs are
 * undefined behavior: only the emulator's launcher should run them. */
typedef enum cuattn_memcheck_test_case {
  /* buf int32 [2][n] (n >= 1), x in row 1: grid ceil(n / 64); row 0 gets, for i < n,
   * y[i] = x[i] + x[min(i + 1, n - 1)]. */
  CUATTN_MEMCHECK_TEST_NEIGHBOR_SUM = 0,
  /* Planted: y[i] = x[i] + x[i + 1]: thread i = n - 1 reads x[n], one element past buf. */
  CUATTN_MEMCHECK_TEST_NEIGHBOR_SUM_PAST_END = 1,
  /* n >= 1, grid n / 64 + 1: buf[i] = i for i < n. On a buffer already unregistered: the
   * use-after-free case. */
  CUATTN_MEMCHECK_TEST_IOTA = 2,
  /* Planted: the guard is i <= n: thread i = n writes buf[n], one element past buf. */
  CUATTN_MEMCHECK_TEST_IOTA_PAST_END = 3,
  /* One block, n >= 64. Static __shared__ int tile[64]: tile[t] = buf[t], __syncthreads,
   * buf[t] = tile[63 - t]. */
  CUATTN_MEMCHECK_TEST_REVERSE_STATIC = 4,
  /* Planted: without the __syncthreads, thread t reads tile[63 - t] while its owner writes it. */
  CUATTN_MEMCHECK_TEST_REVERSE_STATIC_NO_SYNCTHREADS = 5,
  /* One block, n >= 64. Dynamic shared int d[64]: d[t] = buf[t], __syncthreads, d[t] *= 2,
   * __syncthreads, buf[t] = d[t] + (t >= 32 ? d[t - 32] : 0). */
  CUATTN_MEMCHECK_TEST_SHIFT_DYNAMIC = 6,
  /* Planted: without the second __syncthreads, warp 1 reads d[0..31] while warp 0 doubles it. */
  CUATTN_MEMCHECK_TEST_SHIFT_DYNAMIC_NO_SYNCTHREADS = 7,
  /* One block, n >= 64. Static __shared__ int ring[64]: ring[t] = buf[t], __syncwarp, each warp
   * rotates its 32 values: buf[t] = ring[t - l + (l + 31) % 32]. */
  CUATTN_MEMCHECK_TEST_ROTATE_WARP = 8,
  /* Planted: without the __syncwarp, lane l reads ring[l - 1] while lane l - 1 writes it. */
  CUATTN_MEMCHECK_TEST_ROTATE_WARP_NO_SYNCWARP = 9,
  /* Planted: with the __syncwarp, but each thread reads the other warp, buf[t] =
   * ring[(t + 32) % 64]: a __syncwarp orders nothing between warps. */
  CUATTN_MEMCHECK_TEST_ROTATE_ACROSS_WARPS_SYNCWARP = 10,
  /* One block, n >= 65, 65 ints of dynamic shared d: a block-strided loop copies buf[0..65) to d,
   * __syncthreads, buf[t] = d[t] + d[t + 1]. */
  CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC = 11,
  /* Planted: the copy loop stops at 64, so d[64] is never written and thread 63 reads it. */
  CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC_UNWRITTEN = 12,
  /* Planted: launched with 64 ints of dynamic shared memory: the copy of buf[64] writes d[64],
   * past its end. */
  CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC_TOO_SMALL = 13,
  /* One block, n >= 64: a shared histogram. Threads 0-7 zero __shared__ int bins[8],
   * __syncthreads, every thread does atomicAdd(&bins[buf[t] & 7], 1), __syncthreads, and
   * buf[t] = bins[t] for t < 8. Atomics of different threads do not race. */
  CUATTN_MEMCHECK_TEST_HISTOGRAM_ATOMICS = 14,
  /* Planted: the bins are never zeroed, so the first atomicAdd on each reads a shared int no
   * thread of the block wrote (on a GPU, whatever an earlier block left; in the emulator, the
   * 0xFFFFFFFF poison: -1). */
  CUATTN_MEMCHECK_TEST_HISTOGRAM_ATOMICS_UNZEROED = 15,
  /* Planted: IOTA's grid (n >= 128: three blocks or more), but each block indexes by t alone:
   * buf[t] = t for t < n. Block (1,0,0) stores to the elements block (0,0,0) stored to, and the
   * blocks of a launch are unordered. */
  CUATTN_MEMCHECK_TEST_IOTA_BLOCKS_OVERLAP = 16,
  /* One block, n >= 32: the even threads store buf[t / 2] = t, __syncthreads, then the odd ones
   * do: buf[j] = 2 j + 1 for j < 32. Two threads store to one word, in order. */
  CUATTN_MEMCHECK_TEST_STORE_PAIRS = 17,
  /* Planted: without the __syncthreads: thread 1 stores to buf[0] in the interval in which
   * thread 0 did. */
  CUATTN_MEMCHECK_TEST_STORE_PAIRS_NO_SYNCTHREADS = 18,
  /* One block of 96 threads (three warps), n >= 96. Warp 0 writes static __shared__ int
   * slot[32] (slot[l] = buf[l]) and arrives at named barrier 1 of 64 threads (bar.arrive); warp 1
   * waits there (bar.sync) and stores buf[32 + l] = slot[l]; after a __syncthreads warp 2 stores
   * buf[64 + l] = slot[l]. A named barrier orders what its arriving warps did before it before
   * what its waiting warps do after it. */
  CUATTN_MEMCHECK_TEST_HANDOFF_NAMED = 19,
  /* Planted: warp 0 waits at barrier 1 and warp 1 only arrives: warp 1's reads are not ordered
   * after warp 0's writes. */
  CUATTN_MEMCHECK_TEST_HANDOFF_NAMED_READER_ARRIVES = 20,
  /* Planted: warp 2, which has no part in barrier 1, reads slot before the __syncthreads. */
  CUATTN_MEMCHECK_TEST_HANDOFF_NAMED_OUTSIDER = 21,
} cuattn_memcheck_test_case;

/* Runs memcheck test `test_case` (a cuattn_memcheck_test_case) over `buf`, a device buffer of the
 * case's size for `n` (CUATTN_ERROR_INVALID_ARGUMENT if n is out of range), on `stream`. */
cuattn_status cuattn_raw_launch_memcheck_test(int32_t test_case, void* buf, int64_t n,
                                              void* stream);
/* The same on the emulator: `buf` is host memory, `stream` is ignored. */
cuattn_status cuattn_emu_raw_launch_memcheck_test(int32_t test_case, void* buf, int64_t n,
                                                  void* stream);

/* ---------------------------------------------------------------------------------------------
 * Runtime self-tests.
 *
 * Small kernels that exercise the launch path and the CUDA features every kernel relies on
 * (shuffles, votes, barriers, shared memory, atomics, fp16/bf16 conversions, indexing), with
 * results a test recomputes independently, plus planted faults the emulator must report. Thread
 * t is the linear id in its block (x fastest), lane l = t % 32, warp w = t / 32. A case writes
 * `out` as laid out below (row-major) or fails with the status given.
 * ------------------------------------------------------------------------------------------- */
typedef enum cuattn_selftest_case {
  /* One block of 64 threads. Thread t shuffles v = 1000 * t + 7 with the full mask, for each kind
   * k (0 __shfl_sync, 1 __shfl_up_sync, 2 __shfl_down_sync, 3 __shfl_xor_sync), each width
   * 32 >> i (i < 6) and each argument (srcLane, delta or laneMask) a of {0, 1, 3, 17, 31, 32, 45,
   * -1, (5 * t + 3) % 41 - 4}: int32 [4][6][9][64]. */
  CUATTN_SELFTEST_SHUFFLE = 0,
  /* One block of 64 threads, v = 1000 * t + 7, partial and disjoint masks: int32 [4][64].
   * Row 0: lanes 0-15 __shfl_xor_sync(0x0000ffff, v, 1, 16) while lanes 16-31 run
   *        __shfl_down_sync(0xffff0000, v, 3, 16).
   * Row 1: lanes 0-7 __shfl_down_sync(0x000000ff, v, 4), lanes 8-31 __shfl_up_sync(0xffffff00,
   *        v, 8). A lane whose source is outside its mask gets -1 in the emulator (undefined on a
   *        GPU): lanes 4-7 and 8-15.
   * Row 2: even lanes __shfl_sync(0x55555555, v, l + 2), odd lanes __shfl_sync(0xaaaaaaaa, v,
   *        l - 2).
   * Row 3: each half warp stores v in shared memory, __syncwarp(its half), reads its neighbor
   *        t ^ 1. */
  CUATTN_SELFTEST_SHUFFLE_MASKS = 1,
  /* One block of 32 threads. Thread t sends bits(k, t) as each type k of {0 double, 1 long long,
   * 2 unsigned long long, 3 float, 4 int, 5 unsigned, 6 __half2, 7 __nv_bfloat162, 8 __half,
   * 9 __nv_bfloat16} through __shfl_xor_sync(full, x, 5) and stores what it receives, zero
   * extended: uint64 [10][32], where bits(k, t) is the low sizeof(type) bytes of
   * (0x9e3779b97f4a7c15 * (32 * k + t + 1)) ^ 0xd1b54a32d192ed03. */
  CUATTN_SELFTEST_SHUFFLE_TYPES = 2,
  /* One block of 64 threads: uint32 [8][64].
   * Row 0: __all_sync(full, l != 5 || w == 1). Row 1: __any_sync(full, l == 31 && w == 1).
   * Row 2: __ballot_sync(full, l % 3 == 0). Row 3: lanes 0-19 __ballot_sync(0x000fffff, l & 1),
   * lanes 20-31 __ballot_sync(0xfff00000, l % 4 == 0). Row 4: lanes 0-15 __all_sync(0x0000ffff,
   * l < 16), lanes 16-31 __any_sync(0xffff0000, l == 20 + 20 * w). Row 5: __activemask() where
   * every lane is. Row 6: __activemask() inside a branch taken by lanes with l % 4 != 1 and in its
   * else branch (in the emulator, the lanes that reach each call; on a GPU, the lanes converged
   * there). Row 7: __syncwarp() then __ballot_sync(full, 1). */
  CUATTN_SELFTEST_VOTE = 3,
  /* Grid 3, block (32, 4, 2): 256 threads, 8 warps, in block b. Static shared s[t] = 1000 * b + t,
   * dynamic shared d[255 - t] = 7 * b + 3 * t, __syncthreads, then out[b][t] = s[255 - t] + d[t];
   * then a __syncthreads tree sum of s: out[b][256] = sum over t of s[t]. int32 [3][257]. */
  CUATTN_SELFTEST_SYNCTHREADS = 4,
  /* Grid 8, block 64, 256 bytes of dynamic shared memory: thread t reads 32-bit word t before
   * anything wrote it, then writes it: uint32 [8][64], 0xffffffff everywhere in the emulator
   * (undefined on a GPU). */
  CUATTN_SELFTEST_SMEM_POISON = 5,
  /* Grid (4, 3, 2), block 128: 3072 threads, global id g = 128 * linear block id + t, adding into
   * counters the launcher first resets. out holds, at byte offsets: 0 int32 sum of g
   * (atomicAdd int); 4 uint32 count (atomicAdd unsigned 1, whose return value is thread g's
   * ticket); 8 uint64 sum of (g << 33) + 1 (atomicAdd unsigned long long); 16 float count
   * (atomicAdd 1.0f); 20 int32 max over g of (int32)(g * 0x9e3779b9) (atomicMax, from INT_MIN);
   * 24 double sum of 0.25 (atomicAdd double); 32 int32 count by an atomicCAS (int) loop; 36 uint32
   * sum of 2 by an atomicCAS (unsigned) loop; 40 uint32 [3072]: tickets[ticket] = g. */
  CUATTN_SELFTEST_ATOMICS = 6,
  /* Grid (3, 2, 2), block (8, 4, 2): uint32 [12][64][14], indexed by the linear block id and t:
   * threadIdx.xyz, blockIdx.xyz, blockDim.xyz, gridDim.xyz, __shfl_sync(full, t, 0) and
   * __shfl_xor_sync(full, t, 1). */
  CUATTN_SELFTEST_INDEXING = 7,
  /* Every 16-bit pattern h = i < 65536 converted to float: float32 [8][65536]. Rows 0-3 read h
   * as __half, rows 4-7 as __nv_bfloat16: __half2float (__bfloat162float), the implicit
   * conversion to float, __low2float of __halves2half2(h, ~h) (__halves2bfloat162) and
   * __high2float of __halves2half2(~h, h). */
  CUATTN_SELFTEST_HALF_TO_FLOAT = 8,
  /* n = out_bytes / 20 floats x[i] in out, followed by uint16 [8][n] the kernel writes: rows 0-3
   * __half, rows 4-7 __nv_bfloat16: __float2half_rn(x) (__float2bfloat16_rn), the implicit
   * conversion from float, the low and the high half of __floats2half2_rn(x, -x)
   * (__floats2bfloat162_rn). */
  CUATTN_SELFTEST_FLOAT_TO_HALF = 9,
  /* One block of 256 threads: warps 0-3 (group 0) and 4-7 (group 1) take 5 turns each through
   * named barriers 1 and 2, as flash's ping-pong schedule does: before its turn a group bar.syncs
   * its own barrier (1 + group), after it bar.arrives at the other's, except group 1 after its
   * last turn;
   * group 1 first arrives once at barrier 1. In its turn, thread 0 of the group takes a ticket
   * from a counter the launcher resets (atomicAdd 1): uint32 [5][2] tickets by round and group,
   * then the counter. Turn order: tickets 0, 1, 2, ... alternate from group 0. */
  CUATTN_SELFTEST_NAMED_BARRIERS = 16,

  /* Planted faults. On a GPU these kernels are undefined behavior (a hang, garbage, or nothing
   * visible): only the emulator's launcher should run them. */

  /* Grid (16, 1, 16), block 64. Thread 0 of each block that starts adds 1 to uint32 out[0]
   * (reset first); in block (1,0,1) threads 32-63 return before a __syncthreads. Expect
   * CUATTN_ERROR_KERNEL_FAULT ("__syncthreads reached by threads 0-31 but not 32-63 (exited)")
   * and fewer than 256 blocks started. */
  CUATTN_SELFTEST_FAULT_DIVERGENT_SYNCTHREADS = 10,
  /* One block of 64: warp 1 runs __shfl_sync(0x7fffffff, v, 0), a mask without lane 31 (thread
   * 63). Expect CUATTN_ERROR_KERNEL_FAULT naming thread 63. No output. */
  CUATTN_SELFTEST_FAULT_SHUFFLE_OMITS_LANE = 11,
  /* One block of 64: thread 39 (warp 1, lane 7) returns, the rest of warp 1 runs a full-mask
   * __shfl_sync. Expect CUATTN_ERROR_KERNEL_FAULT naming threads 32-38, 40-63 and 39 (exited).
   * No output. */
  CUATTN_SELFTEST_FAULT_SHUFFLE_EXITED_LANE = 12,
  /* One block of 32: lanes 0-15 run __shfl_xor_sync(full, ...), lanes 16-31 __ballot_sync(full,
   * ...). Expect CUATTN_ERROR_KERNEL_FAULT naming thread 16 and threads 0-15. No output. */
  CUATTN_SELFTEST_FAULT_COLLECTIVE_MISMATCH = 13,
  /* A launch of block (33, 32, 1), 1056 threads. Expect CUATTN_ERROR_LAUNCH_FAILED. */
  CUATTN_SELFTEST_BAD_LAUNCH_BLOCK = 14,
  /* A launch with 228 KiB of dynamic shared memory. Expect CUATTN_ERROR_LAUNCH_FAILED. */
  CUATTN_SELFTEST_BAD_LAUNCH_SMEM = 15,
  /* One block of 64: warp 0 runs bar.sync 1, 64; warp 1 returns. Expect CUATTN_ERROR_KERNEL_FAULT
   * naming barrier 1, threads 0-31 waiting and 32-63 exited. No output. */
  CUATTN_SELFTEST_FAULT_NAMED_BARRIER_STALL = 17,
  /* One block of 64: warp 0 runs bar.arrive 1, 64; warp 1 returns. Expect
   * CUATTN_ERROR_KERNEL_FAULT: the block ended with 32 of 64 arrivals pending. No output. */
  CUATTN_SELFTEST_FAULT_NAMED_BARRIER_PENDING = 18,
  /* One block of 64: warp 0 runs bar.arrive 1, 64, then warp 1 bar.sync 1, 32. Expect
   * CUATTN_ERROR_KERNEL_FAULT naming thread 32 and the 64 threads the pending arrivals named. No
   * output. */
  CUATTN_SELFTEST_FAULT_NAMED_BARRIER_COUNT = 19,
} cuattn_selftest_case;

/* Runs self-test `test_case` (a cuattn_selftest_case) on `stream`, writing `out`, a device buffer
 * of out_bytes bytes (CUATTN_ERROR_INVALID_ARGUMENT if too small for the case). */
cuattn_status cuattn_raw_launch_selftest(int32_t test_case, void* out, int64_t out_bytes,
                                         void* stream);
/* The same on the emulator: `out` is host memory, `stream` is ignored. */
cuattn_status cuattn_emu_raw_launch_selftest(int32_t test_case, void* out, int64_t out_bytes,
                                             void* stream);

/* ---------------------------------------------------------------------------------------------
 * Primitive tests.
 *
 * Kernels that run each warp-level primitive of csrc/arch (mma, ldmatrix, cp.async, vector
 * access and packing, exp2, reductions, swizzle) on given inputs, for tests to compare with
 * references built from the PTX ISA's layout tables; plus planted bugs and faults. Thread t is
 * the linear id in its block, lane l = t % 32; in a register fragment, "register i of lane l" is
 * element [l][i]. `in` and `out` are laid out as below (row-major, packed in the order given);
 * bf16 and f16 values are their 16-bit patterns.
 * ------------------------------------------------------------------------------------------- */
typedef enum cuattn_primitive_test_case {
  /* mma_m16n8k16<bf16>, grid 2, block 128: 8 warps, warp w = 4 * block + t / 32. in: uint32
   * a[8][32][4], uint32 b[8][32][2], float c[8][32][4] (each lane's fragments). out: float
   * d[8][32][4] = a * b + c, then float [8][32][4]: the same computed in place (d aliasing c). */
  CUATTN_PRIMITIVE_TEST_MMA_BF16 = 0,
  /* The same with f16 inputs. */
  CUATTN_PRIMITIVE_TEST_MMA_F16 = 1,
  /* One warp. in: uint16 tile[64][8] (64 rows of 16 bytes), then uint32 row_of_lane[32], each
   * < 64. The tile is copied to dynamic shared memory and lane l passes the address of its row
   * row_of_lane[l] to variant v of {x1, x2, x4, x1.trans, x2.trans, x4.trans} and, for v = 6, to
   * x4 of a static __shared__ copy. out: uint32 [7][32][4], register j of lane l for variant v;
   * registers past the variant's count are written 0. */
  CUATTN_PRIMITIVE_TEST_LDMATRIX = 2,
  /* One warp. in: bf16 a[16][64], kt[64][64], v[64][64]. Each goes by cp.async.cg into a swizzled
   * shared tile of 128-byte rows (a and kt in one group, v in a second), then ldmatrix feeds mma:
   * x4 for a and kt, x4.trans for v. out: float s[8][32][4] then float o[8][32][4]: register i of
   * lane l of the accumulator of n-tile j (columns 8j..8j+7) of S = a * kt^T and O = a * v. */
  CUATTN_PRIMITIVE_TEST_GEMM = 3,
  /* A planted layout bug: CUATTN_PRIMITIVE_TEST_GEMM with v loaded by x4 without .trans, so that
   * o is wrong (s is right). */
  CUATTN_PRIMITIVE_TEST_GEMM_V_WITHOUT_TRANS = 4,
  /* Block 64, 5632 bytes of dynamic shared memory, first filled with 0x5a. Regions r = 0..7 of
   * 64 * size_r bytes each follow one another, size_r = {4, 4, 8, 8, 16, 16, 16, 16}[r]: regions
   * 0-1 use cp.async.ca 4 bytes, 2-3 ca 8 bytes, 4-5 ca 16 bytes, 6-7 cg 16 bytes. Thread t copies
   * the size_r bytes at offset_r + size_r * t of in to the same offset of shared memory: whole in
   * even regions, with src-size t % (size_r + 1) (the rest zero-filled) in odd ones. in: 5632
   * bytes; out: the 5632 bytes of shared memory after wait_all and a barrier. */
  CUATTN_PRIMITIVE_TEST_CP_ASYNC = 5,
  /* Block 64. in: uint8 src[4][64][16]. Dynamic shared memory s[4][64][16] is filled with 0x5a;
   * thread t issues cp.async.cg of src[g][t] into s[g][t] for g = 0..3, committing a group after
   * each of g = 0, 1, 2 (g = 3 is never committed). It snapshots its s[0..3][t] five times:
   * before any wait, after wait_group 2, 1 and 0, after wait_all. out: uint8 [5][64][4][16]. A
   * landed chunk holds src; the emulator shows 0xff bytes in a chunk still in flight (a GPU the
   * old 0x5a or the new bytes). Reading chunks in flight is what this case is about: with the
   * emulator's memory checker on, the launch stops at the first such read. */
  CUATTN_PRIMITIVE_TEST_CP_ASYNC_GROUPS = 6,
  /* A planted bug: one warp; shared row t (8 bf16) is filled with 1.0, then lane t copies in
   * bf16 [32][8] row t into it by cp.async.cg, commits and converts the row to float before
   * waiting: out float [32][8]; then after wait_group 0: float [32][8]. The emulator gives NaN
   * (its 0xffff poison) before the wait, or with its memory checker on stops at that read; a GPU
   * gives 1.0 or the data. */
  CUATTN_PRIMITIVE_TEST_CP_ASYNC_READ_BEFORE_WAIT = 7,
  /* Block 64. in: uint4 src[64], float pairs[64][2], uint32 packed[64]. out: uint4 copy[64] with
   * copy[t] = src[63 - t] (ld_global_v4, st_shared_v4, barrier, ld_shared_v4, st_global_v4),
   * uint32 [64] pack_bf16x2(pairs[t]), uint32 [64] pack_half2(pairs[t]), float [64][2]
   * unpack_bf16x2(packed[t]), float [64][2] unpack_half2(packed[t]). */
  CUATTN_PRIMITIVE_TEST_VEC = 8,
  /* Grid 16, block 256. in: float x[4096]; out: float [4096] fast_exp2(x[i]), then float [4096]
   * fast_tanh(x[i]), then float [4096] fma_exp2(x[i]). */
  CUATTN_PRIMITIVE_TEST_EXP2 = 9,
  /* Block 128. in: float x[128]; out: float [4][128]: quad_max, quad_sum, warp_max and warp_sum
   * of x[t] as thread t sees them. */
  CUATTN_PRIMITIVE_TEST_REDUCE = 10,
  /* Block 64. out: int32 swizzle_chunk<c>(row, chunk) as [64][c] for each width c of {2, 4, 8,
   * 16, 24, 32} chunks per row, one after the other: int32 [5504]. No input. */
  CUATTN_PRIMITIVE_TEST_SWIZZLE = 11,

  /* Planted faults. On a GPU these kernels are undefined behavior (a fault or garbage): only the
   * emulator's launcher should run them. Each expects CUATTN_ERROR_KERNEL_FAULT. */

  /* One warp: ldmatrix x4 whose lane 5 passes a row address 8 bytes off 16-byte alignment: the
   * message names thread 5 and the misaligned address. No input or output. */
  CUATTN_PRIMITIVE_TEST_FAULT_LDMATRIX_MISALIGNED = 12,
  /* One warp: ldmatrix x2 of rows in global memory (in, at least 256 bytes, 16-byte aligned): the
   * message names thread 0 and "not in shared memory". */
  CUATTN_PRIMITIVE_TEST_FAULT_LDMATRIX_GLOBAL = 13,
  /* One warp: thread 3 issues cp.async.cg (16 bytes) from in + 8 (in: at least 512 bytes, 16-byte
   * aligned): the message names thread 3 and the misaligned address. */
  CUATTN_PRIMITIVE_TEST_FAULT_CP_ASYNC_MISALIGNED = 14,
  /* One warp: lanes 0-15 run mma_m16n8k16<bf16>, lanes 16-31 ldmatrix x4: the message names
   * thread 16's ldmatrix and threads 0-15 waiting in the mma. */
  CUATTN_PRIMITIVE_TEST_FAULT_MMA_LDMATRIX_MISMATCH = 15,
  /* One warp: lane 7 returns, the others run an mma: the message names the mma and thread 7
   * (exited). */
  CUATTN_PRIMITIVE_TEST_FAULT_MMA_EXITED_LANE = 16,
} cuattn_primitive_test_case;

/* Runs primitive test `test_case` (a cuattn_primitive_test_case) on `stream`, reading `in` (a
 * device buffer laid out for the case, or NULL when it takes none) and writing `out`, a device
 * buffer of out_bytes bytes (CUATTN_ERROR_INVALID_ARGUMENT if too small for the case). */
cuattn_status cuattn_raw_launch_primitive_test(int32_t test_case, const void* in, void* out,
                                               int64_t out_bytes, void* stream);
/* The same on the emulator: `in` and `out` are host memory, `stream` is ignored. */
cuattn_status cuattn_emu_raw_launch_primitive_test(int32_t test_case, const void* in, void* out,
                                                   int64_t out_bytes, void* stream);

/* ---------------------------------------------------------------------------------------------
 * Benchmarks.
 *
 * bench_mma: the mma.sync ceiling `cuattn bench` reports kernels against. Each of `blocks` blocks
 * of CUATTN_BENCH_MMA_BLOCK_THREADS threads runs, in every warp, `iterations` rounds of
 * CUATTN_BENCH_MMA_CHAINS independent mma.sync m16n8k16 bf16 products with fp32 accumulators
 * (2 * 16 * 8 * 16 flops each) and nothing else. Every element of A is 1.5 and of B 2, so each
 * mma adds 48 to each of a lane's 4 accumulators: thread t of block b writes their sum,
 * 192 * CUATTN_BENCH_MMA_CHAINS * iterations (exact in fp32 for iterations <= 2^13 and for
 * powers of two), to out[b * CUATTN_BENCH_MMA_BLOCK_THREADS + t]. `out` is float [blocks *
 * CUATTN_BENCH_MMA_BLOCK_THREADS]. The kernel is compiled for CUATTN_BENCH_MMA_BLOCKS_PER_SM
 * resident blocks per SM: launch a multiple of that times the SM count for whole waves.
 * ------------------------------------------------------------------------------------------- */
#define CUATTN_BENCH_MMA_BLOCK_THREADS 256
#define CUATTN_BENCH_MMA_BLOCKS_PER_SM 4
#define CUATTN_BENCH_MMA_CHAINS 8

/* CUATTN_ERROR_INVALID_ARGUMENT if out is null, blocks < 1 or iterations < 0. Launches on
 * `stream` without synchronizing. */
cuattn_status cuattn_raw_launch_bench_mma(float* out, int32_t blocks, int32_t iterations,
                                          void* stream);
/* The same on the emulator: `out` is host memory, `stream` is ignored. */
cuattn_status cuattn_emu_raw_launch_bench_mma(float* out, int32_t blocks, int32_t iterations,
                                              void* stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CUATTN_INTERNAL_H_ */
