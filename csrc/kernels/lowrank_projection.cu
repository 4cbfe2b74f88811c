// lowrank_projection.cu: the sequence projection of low-rank (Linformer) attention (cuattn.h
// states the definition), out = P X per (sequence, KV head): X [seqlen_k, head_dim] is k or v,
// P [k_proj, seqlen_k] is E or F. One CTA per (64 projected rows, 64 head-dim columns, KV head,
// sequence) walks the keys in steps of 64: the step's P tile (float32, rounded to the element
// type) and X tile go to shared memory, then each warp multiplies its 16 rows on mma.sync
// (ldmatrix for both operands, fp32 accumulators). Rows, keys and columns past the problem are
// zero-filled, so k_proj and seqlen_k are arbitrary. The result goes out through shared memory in
// 16-byte rows. The projected keys then feed attention_flash as its K and V.
#include <cstdint>

#include "arch/ldmatrix.cuh"
#include "arch/mma.cuh"
#include "arch/vec.cuh"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/status.h"
#include "common/warp.h"
#include "cuattn_internal.h"

namespace cuattn {
namespace lowrank {

// The one tile of the family:
constexpr int kRows = 64;  // projected rows a CTA: four warps, one 16-row mma tile each
constexpr int kCols = 64;  // head-dim columns a CTA: 8 n8 tiles, 32 fp32 accumulators a thread;
                           // wider head dims take more CTAs, not more registers
constexpr int kKeys = 64;  // keys a shared-memory step: 4 k16 mma steps between two barriers
constexpr int kWarps = kRows / kMmaM;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kPad = 8;  // elements after each shared row (16 bytes): conflict-free ldmatrix
constexpr int kStride = kKeys + kPad;  // elements a shared row, for both tiles (kKeys == kCols)
constexpr int kChunk = kVecBytes / 2;  // elements of a 16-byte chunk of a 16-bit row
constexpr int kDimMultiple = 8;
constexpr int kMaxDim = 256;
constexpr int kMaxGridYZ = 65535;

static_assert(kRows % kMmaM == 0, "a warp per 16-row mma tile");
static_assert(kKeys == kCols, "the X tile and the output tile share one row stride");
static_assert(kKeys % kMmaK == 0 && kCols % (2 * kMmaN) == 0, "whole mma steps, n8 tiles in pairs");
static_assert(kCols % kChunk == 0 && kDimMultiple % kChunk == 0, "whole 16-byte chunks");
static_assert(kKeys % 2 == 0, "P is staged in pairs of keys");
static_assert((kStride * 2) % kVecBytes == 0, "shared rows stay 16-byte aligned");

__host__ __device__ constexpr int column_blocks(int head_dim) {
  return (head_dim + kCols - 1) / kCols;
}

// Element offset of (row, column 0) of KV head `head` of sequence `b` in a tensor with these
// strides: X's rows are keys, out's rows are projected rows.
__device__ __forceinline__ int64_t offset_of(int b, int row, int head, int64_t batch_stride,
                                             int64_t row_stride, int64_t head_stride) {
  return b * batch_stride + int64_t{row} * row_stride + head * head_stride;
}

// out[b, p, h, :] = sum_j P_h[p, j] X[b, j, h, :]: grid (k_proj / kRows, kv_heads * column
// blocks, batch), rounded up.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    lowrank_projection_kernel(const cuattn_lowrank_projection_params p) {
  // Bytes, not T: the emulator's T has a constructor, which a static __shared__ array may not.
  __shared__ __align__(16) unsigned char p_tile[kRows * kStride * sizeof(T)];
  __shared__ __align__(16) unsigned char x_tile[kKeys * kStride * sizeof(T)];
  T* sP = reinterpret_cast<T*>(p_tile);  // [kRows][kKeys]: P's tile, row-major
  T* sX = reinterpret_cast<T*>(x_tile);  // [kKeys][kCols]: X's tile; then out's tile

  const int tid = threadIdx.x;
  const int warp = tid / kWarpSize;
  const int lane = tid % kWarpSize;
  const int row0 = blockIdx.x * kRows;  // the CTA's first projected row
  const int blocks = column_blocks(p.head_dim);
  const int head = blockIdx.y / blocks;
  const int col0 = (blockIdx.y % blocks) * kCols;  // the CTA's first head-dim column
  const int b = blockIdx.z;
  const float* proj = p.projection + head * p.projection_head_stride;
  const T* x = static_cast<const T*>(p.x);

  float acc[kCols / kMmaN][kMmaCRegs] = {};  // [16 rows][kCols] of the warp, mma C layout
  for (int key0 = 0; key0 < p.seqlen_k; key0 += kKeys) {
    // P [kRows][kKeys] in pairs of keys, rounded to T (zero past k_proj and seqlen_k).
    for (int i = tid; i < kRows * kKeys / 2; i += kThreads) {
      const int r = i / (kKeys / 2);
      const int j = 2 * (i % (kKeys / 2));
      const int row = row0 + r;
      const int key = key0 + j;
      float lo = 0.0f;
      float hi = 0.0f;
      if (row < p.k_proj) {
        const float* from = proj + row * p.projection_row_stride + key;
        lo = key < p.seqlen_k ? from[0] : 0.0f;
        hi = key + 1 < p.seqlen_k ? from[1] : 0.0f;
      }
      *reinterpret_cast<uint32_t*>(sP + r * kStride + j) = pack2<T>(lo, hi);
    }
    // X [kKeys][kCols] in 16-byte chunks (zero past seqlen_k and head_dim).
    for (int i = tid; i < kKeys * kCols / kChunk; i += kThreads) {
      const int j = i / (kCols / kChunk);
      const int c = (i % (kCols / kChunk)) * kChunk;
      const int key = key0 + j;
      uint4 chunk = make_uint4(0, 0, 0, 0);
      if (key < p.seqlen_k && col0 + c < p.head_dim) {
        const int64_t at =
            offset_of(b, key, head, p.x_batch_stride, p.x_row_stride, p.x_head_stride);
        chunk = ld_global_v4(x + at + col0 + c);
      }
      st_shared_v4(sX + j * kStride + c, chunk);
    }
    __syncthreads();
    // acc += P[warp's 16 rows][kKeys] X[kKeys][kCols]
    const int r0 = warp * kMmaM;
#pragma unroll
    for (int k16 = 0; k16 < kKeys / kMmaK; ++k16) {
      uint32_t a[kMmaARegs];
      ldmatrix_x4(a, sP + (r0 + lane % 16) * kStride + k16 * kMmaK + 8 * (lane / 16));
#pragma unroll
      for (int n8 = 0; n8 < kCols / kMmaN; n8 += 2) {
        uint32_t bx[4];
        ldmatrix_x4_trans(bx, sX + (k16 * kMmaK + lane % 16) * kStride + (n8 + lane / 16) * kMmaN);
        const uint32_t b0[kMmaBRegs] = {bx[0], bx[1]};
        const uint32_t b1[kMmaBRegs] = {bx[2], bx[3]};
        mma_m16n8k16<T>(acc[n8], a, b0, acc[n8]);
        mma_m16n8k16<T>(acc[n8 + 1], a, b1, acc[n8 + 1]);
      }
    }
    __syncthreads();  // the tiles may be overwritten
  }

  // out's tile [kRows][kCols] in sX, rounded to T, then to global memory in 16-byte chunks.
  const int group_row = warp * kMmaM + lane / 4;
  const int quad_col = 2 * (lane % 4);
#pragma unroll
  for (int n8 = 0; n8 < kCols / kMmaN; ++n8) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      T* to = sX + (group_row + 8 * half) * kStride + n8 * kMmaN + quad_col;
      *reinterpret_cast<uint32_t*>(to) = pack2<T>(acc[n8][2 * half], acc[n8][2 * half + 1]);
    }
  }
  __syncthreads();
  T* out = static_cast<T*>(p.out);
  for (int i = tid; i < kRows * kCols / kChunk; i += kThreads) {
    const int r = i / (kCols / kChunk);
    const int c = (i % (kCols / kChunk)) * kChunk;
    if (row0 + r < p.k_proj && col0 + c < p.head_dim) {
      const int64_t at =
          offset_of(b, row0 + r, head, p.out_batch_stride, p.out_row_stride, p.out_head_stride);
      st_global_v4(out + at + col0 + c, ld_shared_v4(sX + r * kStride + c));
    }
  }
}

}  // namespace lowrank
}  // namespace cuattn

namespace {

using cuattn::fail;
namespace lowrank = cuattn::lowrank;

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

cuattn_status check(const char* what, const cuattn_lowrank_projection_params* params) {
  if (params == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: params is null", what);
  }
  const cuattn_lowrank_projection_params& p = *params;
  if (p.head_dim <= 0 || p.head_dim % lowrank::kDimMultiple != 0 || p.head_dim > lowrank::kMaxDim) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: head_dim = %d: a multiple of %d in %d..=%d",
                what, p.head_dim, lowrank::kDimMultiple, lowrank::kDimMultiple, lowrank::kMaxDim);
  }
  if (p.kv_heads <= 0 ||
      int64_t{p.kv_heads} * lowrank::column_blocks(p.head_dim) > lowrank::kMaxGridYZ) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: kv_heads = %d: at least 1, and kv_heads * ceil(head_dim / %d) at most %d",
                what, p.kv_heads, lowrank::kCols, lowrank::kMaxGridYZ);
  }
  if (p.batch < 0 || p.batch > lowrank::kMaxGridYZ || p.seqlen_k < 0 || p.k_proj <= 0) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: batch = %d (0..=%d), seqlen_k = %d (at least 0), k_proj = %d (at least 1)",
                what, p.batch, lowrank::kMaxGridYZ, p.seqlen_k, p.k_proj);
  }
  if (p.dtype != CUATTN_DTYPE_F16 && p.dtype != CUATTN_DTYPE_BF16) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: dtype = %d is not f16 (0) or bf16 (1)", what,
                static_cast<int>(p.dtype));
  }
  if (p.x == nullptr || p.projection == nullptr || p.out == nullptr || !aligned16(p.x) ||
      !aligned16(p.out)) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: x, projection and out must be set, x and out 16-byte aligned", what);
  }
  const int64_t strides[] = {p.x_batch_stride,   p.x_row_stride,   p.x_head_stride,
                             p.out_batch_stride, p.out_row_stride, p.out_head_stride};
  for (const int64_t s : strides) {
    if (s < 0 || s % lowrank::kChunk != 0) {
      return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                  "%s: x strides (%lld, %lld, %lld) and out strides (%lld, %lld, %lld): each a "
                  "nonnegative multiple of %d elements (16-byte aligned rows)",
                  what, static_cast<long long>(p.x_batch_stride),
                  static_cast<long long>(p.x_row_stride), static_cast<long long>(p.x_head_stride),
                  static_cast<long long>(p.out_batch_stride),
                  static_cast<long long>(p.out_row_stride),
                  static_cast<long long>(p.out_head_stride), lowrank::kChunk);
    }
  }
  if (p.projection_row_stride < p.seqlen_k || p.projection_head_stride < 0) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: projection_row_stride = %lld must be at least seqlen_k (%d), "
                "projection_head_stride = %lld nonnegative (0: shared by every KV head)",
                what, static_cast<long long>(p.projection_row_stride), p.seqlen_k,
                static_cast<long long>(p.projection_head_stride));
  }
  return CUATTN_OK;
}

template <typename T>
cuattn_status launch_typed(const cuattn_lowrank_projection_params& p, void* stream) {
  const dim3 grid((p.k_proj + lowrank::kRows - 1) / lowrank::kRows,
                  p.kv_heads * lowrank::column_blocks(p.head_dim), p.batch);
  return cuattn::launch_kernel("lowrank_projection", lowrank::lowrank_projection_kernel<T>, grid,
                               dim3(lowrank::kThreads), 0, stream, p);
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(lowrank_projection)(
    const cuattn_lowrank_projection_params* params, void* stream) {
  const cuattn_status status = check("lowrank_projection", params);
  if (status != CUATTN_OK) {
    return status;
  }
  if (params->batch == 0) {
    return CUATTN_OK;
  }
  if (params->dtype == CUATTN_DTYPE_F16) {
    return launch_typed<__half>(*params, stream);
  }
  return launch_typed<__nv_bfloat16>(*params, stream);
}
