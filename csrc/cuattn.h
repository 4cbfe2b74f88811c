/* cuattn.h: the C ABI of cuattn, the one FFI contract between the kernels, Rust and C/C++ engines.
 * Status codes, one flat params struct per kernel family, and the launchers. */
#ifndef CUATTN_H_
#define CUATTN_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Status codes. Every entry point returns one; on failure cuattn_last_error() holds a message that
 * names the argument, its value and the constraint it broke.
 * ------------------------------------------------------------------------------------------- */
typedef enum cuattn_status {
  CUATTN_OK = 0,
  /* An argument is out of range or inconsistent with another; nothing was launched. */
  CUATTN_ERROR_INVALID_ARGUMENT = 1,
  /* A valid request this build cannot serve (a head dim or dtype not compiled, no CUDA build). */
  CUATTN_ERROR_UNSUPPORTED = 2,
  /* The CUDA runtime refused the launch (bad configuration, no device, sticky error). */
  CUATTN_ERROR_LAUNCH_FAILED = 3,
  /* The emulator stopped a kernel for a fault a GPU would hide or hang on: out-of-bounds access,
   * a barrier not reached by every thread, a warp collective with a mismatched mask. */
  CUATTN_ERROR_KERNEL_FAULT = 4,
  /* A bug in cuattn itself. */
  CUATTN_ERROR_INTERNAL = 5,
} cuattn_status;

/* Element types of q, k, v and out. Accumulation is always float32. */
typedef enum cuattn_dtype {
  CUATTN_DTYPE_F16 = 0,
  CUATTN_DTYPE_BF16 = 1,
} cuattn_dtype;

/* The message of the last failed call on this thread ("" if none). Valid until the next call. */
const char* cuattn_last_error(void);

/* Replaces this thread's last-error message. The Rust layer uses it to report its own validation
 * failures through cuattn_last_error(); C callers have no need for it. */
void cuattn_set_last_error(const char* message);

/* ---------------------------------------------------------------------------------------------
 * Attention forward.
 *
 * Layout (FlashAttention's): q [batch, seqlen_q, heads, head_dim], k and v [batch, seqlen_k,
 * kv_heads, head_dim], out like q; the last dimension is contiguous, every other one has an int64
 * element stride. Query head h reads KV head h / (heads / kv_heads) (MHA, GQA, MQA).
 *
 * Variable-length batches: when maybe_cu_seqlens_q and maybe_cu_seqlens_k are set (both or
 * neither), q/out are packed [total_q, heads, head_dim] and k/v [total_k, kv_heads, head_dim];
 * sequence b owns rows cu_seqlens[b] .. cu_seqlens[b+1]; the *_batch_stride fields are ignored and
 * seqlen_q/seqlen_k are the maxima over the batch (they size the grid).
 *
 * Masks: key j is visible to query i iff
 *   i + seqlen_k - seqlen_q - window_left <= j <= i + seqlen_k - seqlen_q + window_right,
 * with -1 meaning unbounded on that side (per sequence lengths in varlen). Causal attention is
 * window (-1, 0), aligned to the bottom-right corner. A row with no visible key writes zeros to
 * out and -inf to the LSE.
 *
 * Scores: s = scale * (q . k); with softcap > 0, s = softcap * tanh(s / softcap).
 * LSE: natural-log log-sum-exp of the (capped) scores, float32 [batch, heads, seqlen_q]
 * (varlen: [heads, total_q], lse_batch_stride ignored).
 * ------------------------------------------------------------------------------------------- */
typedef struct cuattn_attention_params {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  /* Nullable: float32 log-sum-exp per (batch, head, query row). */
  float* maybe_lse;
  /* Nullable, int32 [batch + 1] on the device: variable-length batch offsets. */
  const int32_t* maybe_cu_seqlens_q;
  const int32_t* maybe_cu_seqlens_k;

  /* Element strides. */
  int64_t q_batch_stride;
  int64_t q_row_stride;
  int64_t q_head_stride;
  int64_t k_batch_stride;
  int64_t k_row_stride;
  int64_t k_head_stride;
  int64_t v_batch_stride;
  int64_t v_row_stride;
  int64_t v_head_stride;
  int64_t out_batch_stride;
  int64_t out_row_stride;
  int64_t out_head_stride;
  int64_t lse_batch_stride;
  int64_t lse_head_stride;

  int32_t batch;
  int32_t heads;
  int32_t kv_heads;
  /* Multiple of 8, at most 256. */
  int32_t head_dim;
  int32_t seqlen_q;
  int32_t seqlen_k;

  /* Multiplies q . k; conventionally 1/sqrt(head_dim). */
  float scale;
  /* scale * log2(e): the kernels work in base 2. */
  float scale_log2;
  /* 0 disables the cap. */
  float softcap;
  /* -1 for unbounded. */
  int32_t window_left;
  int32_t window_right;

  cuattn_dtype dtype;
} cuattn_attention_params;

/* attention_naive: one warp per (query row, head), fp32 online softmax, no tensor cores. The
 * bottom rung of the kernel ladder and a permanent correctness baseline. Any head_dim that is a
 * multiple of 8 up to 256, every mask, varlen, softcap, LSE. */
cuattn_status cuattn_launch_attention_naive(const cuattn_attention_params* params, void* stream);

/* Validated entry point for C and C++ engines: checks every field of params (shapes, strides,
 * heads % kv_heads, head_dim, window, dtype, null pointers) and then launches attention_naive on
 * `stream` (a cudaStream_t, or NULL for the default stream). */
cuattn_status cuattn_attention_naive(const cuattn_attention_params* params, void* stream);

/* ---------------------------------------------------------------------------------------------
 * Emulator builds of the launchers: the same kernel source compiled for the CPU (-DCUATTN_EMU).
 * Pointers are host pointers; `stream` is ignored; the call returns when the kernel has run.
 * ------------------------------------------------------------------------------------------- */
cuattn_status cuattn_emu_launch_attention_naive(const cuattn_attention_params* params,
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

  /* Planted faults. On a GPU these kernels are undefined behavior (a hang or garbage): only the
   * emulator's launcher should run them. */

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
} cuattn_selftest_case;

/* Runs self-test `test_case` (a cuattn_selftest_case) on `stream`, writing `out`, a device buffer
 * of out_bytes bytes (CUATTN_ERROR_INVALID_ARGUMENT if too small for the case). */
cuattn_status cuattn_launch_selftest(int32_t test_case, void* out, int64_t out_bytes,
                                     void* stream);
/* The same on the emulator: `out` is host memory, `stream` is ignored. */
cuattn_status cuattn_emu_launch_selftest(int32_t test_case, void* out, int64_t out_bytes,
                                         void* stream);

/* ---------------------------------------------------------------------------------------------
 * Build facts.
 * ------------------------------------------------------------------------------------------- */

/* 1 when the CUDA kernels were compiled into this library, 0 for an emulator-only build. */
int32_t cuattn_has_cuda_kernels(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CUATTN_H_ */
