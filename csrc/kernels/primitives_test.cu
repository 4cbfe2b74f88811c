// primitives_test: kernels that run each warp-level primitive of csrc/arch on given inputs in both
// builds (layouts: cuattn_primitive_test_case in cuattn.h), a small cp.async -> swizzled tile ->
// ldmatrix -> mma pipeline, a planted layout bug, and planted faults the emulator must report.
#include <cstdint>

#include "arch/cp_async.cuh"
#include "arch/ldmatrix.cuh"
#include "arch/math.cuh"
#include "arch/mma.cuh"
#include "arch/swizzle.cuh"
#include "arch/vec.cuh"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/status.h"
#include "cuattn_internal.h"

namespace {

using cuattn::kWarpSize;

using cuattn::kMmaARegs;
using cuattn::kMmaBRegs;
using cuattn::kMmaCRegs;

constexpr int kChunkBytes = 16;  // one ldmatrix row, one cp.async.cg, one vector access

// ---------------------------------------------------------------------------------------------
// CUATTN_PRIMITIVE_TEST_MMA_BF16 / _F16: one m16n8k16 per warp from per-lane fragments.
// ---------------------------------------------------------------------------------------------

constexpr int kMmaBlocks = 2;
constexpr int kMmaWarpsPerBlock = 4;
constexpr int kMmaWarps = kMmaBlocks * kMmaWarpsPerBlock;

template <typename T>
__global__ void mma_kernel(const unsigned char* in, float* out) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = blockIdx.x * kMmaWarpsPerBlock + threadIdx.x / kWarpSize;
  const int fragment = warp * kWarpSize + lane;  // [warp][lane] in every array of the layout
  const auto* a_in = reinterpret_cast<const uint32_t*>(in);
  const uint32_t* b_in = a_in + kMmaWarps * kWarpSize * kMmaARegs;
  const auto* c_in = reinterpret_cast<const float*>(b_in + kMmaWarps * kWarpSize * kMmaBRegs);

  uint32_t a[kMmaARegs];  // 8 elements of A: rows lane/4 and lane/4 + 8
  uint32_t b[kMmaBRegs];  // 4 elements of B: column lane/4
  float c[kMmaCRegs];     // 4 accumulators: rows lane/4 and lane/4 + 8, columns 2(lane%4) + 0/1
  for (int i = 0; i < kMmaARegs; ++i) {
    a[i] = a_in[fragment * kMmaARegs + i];
  }
  for (int i = 0; i < kMmaBRegs; ++i) {
    b[i] = b_in[fragment * kMmaBRegs + i];
  }
  for (int i = 0; i < kMmaCRegs; ++i) {
    c[i] = c_in[fragment * kMmaCRegs + i];
  }

  float d[kMmaCRegs];
  cuattn::mma_m16n8k16<T>(d, a, b, c);
  cuattn::mma_m16n8k16<T>(c, a, b, c);  // in place: d aliases c
  float* in_place = out + kMmaWarps * kWarpSize * kMmaCRegs;
  for (int i = 0; i < kMmaCRegs; ++i) {
    out[fragment * kMmaCRegs + i] = d[i];
    in_place[fragment * kMmaCRegs + i] = c[i];
  }
}

// ---------------------------------------------------------------------------------------------
// CUATTN_PRIMITIVE_TEST_LDMATRIX: every variant, rows at addresses each lane chooses.
// ---------------------------------------------------------------------------------------------

constexpr int kLdmTileRows = 64;
constexpr int kLdmTileBytes = kLdmTileRows * kChunkBytes;
constexpr int kLdmVariants = 7;
constexpr int kLdmMaxRegs = 4;

// Writes variant v's registers of this lane, and zeros past its count.
template <int kRegs>
__device__ __forceinline__ void store_ldmatrix(uint32_t* out, int variant, int lane,
                                               const uint32_t (&r)[kRegs]) {
  uint32_t* dst = out + (variant * kWarpSize + lane) * kLdmMaxRegs;
  for (int i = 0; i < kRegs; ++i) {
    dst[i] = r[i];
  }
  for (int i = kRegs; i < kLdmMaxRegs; ++i) {
    dst[i] = 0u;
  }
}

__global__ void ldmatrix_kernel(const unsigned char* in, uint32_t* out) {
  __shared__ __align__(16) unsigned char static_tile[kLdmTileBytes];
  CUATTN_DYNAMIC_SMEM(unsigned char, tile);  // [64 rows][16 bytes]
  const int lane = threadIdx.x;
  for (int row = lane; row < kLdmTileRows; row += kWarpSize) {
    const uint4 v = cuattn::ld_global_v4(in + row * kChunkBytes);
    cuattn::st_shared_v4(tile + row * kChunkBytes, v);
    cuattn::st_shared_v4(static_tile + row * kChunkBytes, v);
  }
  __syncwarp();
  const auto* row_of_lane = reinterpret_cast<const uint32_t*>(in + kLdmTileBytes);
  const int offset = static_cast<int>(row_of_lane[lane]) * kChunkBytes;
  const unsigned char* row = tile + offset;

  uint32_t r1[1];  // matrix 0
  uint32_t r2[2];  // matrices 0-1
  uint32_t r4[4];  // matrices 0-3
  cuattn::ldmatrix_x1(r1, row);
  store_ldmatrix(out, 0, lane, r1);
  cuattn::ldmatrix_x2(r2, row);
  store_ldmatrix(out, 1, lane, r2);
  cuattn::ldmatrix_x4(r4, row);
  store_ldmatrix(out, 2, lane, r4);
  cuattn::ldmatrix_x1_trans(r1, row);
  store_ldmatrix(out, 3, lane, r1);
  cuattn::ldmatrix_x2_trans(r2, row);
  store_ldmatrix(out, 4, lane, r2);
  cuattn::ldmatrix_x4_trans(r4, row);
  store_ldmatrix(out, 5, lane, r4);
  cuattn::ldmatrix_x4(r4, static_tile + offset);
  store_ldmatrix(out, 6, lane, r4);
}

// ---------------------------------------------------------------------------------------------
// CUATTN_PRIMITIVE_TEST_GEMM (and its planted bug): S = A Kt^T and O = A V through cp.async into
// swizzled tiles, ldmatrix and mma, as an attention kernel's inner loop does.
// ---------------------------------------------------------------------------------------------

using Bf16 = __nv_bfloat16;

constexpr int kGemmM = 16;  // rows of A: one mma tile
constexpr int kGemmK = 64;  // columns of A = columns of Kt = rows of V
constexpr int kGemmN = 64;  // rows of Kt = columns of V
constexpr int kGemmKSteps = kGemmK / cuattn::kMmaK;
constexpr int kGemmNTiles = kGemmN / cuattn::kMmaN;
constexpr int kGemmChunksPerRow = kGemmK * static_cast<int>(sizeof(Bf16)) / kChunkBytes;
static_assert(kGemmK == kGemmN, "A, Kt and V share one tile width (128-byte rows)");
static_assert(kGemmChunksPerRow == 8, "one 128-byte row of a tile holds 8 chunks");
static_assert(kGemmM == cuattn::kMmaM && kGemmK % cuattn::kMmaK == 0 &&
                  kGemmN % (2 * cuattn::kMmaN) == 0,
              "whole mma tiles, n-tiles in pairs (one ldmatrix x4 feeds two)");
constexpr int kGemmABytes = kGemmM * kGemmK * static_cast<int>(sizeof(Bf16));
constexpr int kGemmKtBytes = kGemmN * kGemmK * static_cast<int>(sizeof(Bf16));
constexpr int kGemmVBytes = kGemmK * kGemmN * static_cast<int>(sizeof(Bf16));
constexpr int kGemmSmemBytes = kGemmABytes + kGemmKtBytes + kGemmVBytes;

__device__ __forceinline__ int gemm_tile_offset(int row, int chunk) {
  return cuattn::swizzled_offset<kGemmChunksPerRow>(row, chunk);
}

// Starts copying a row-major [rows][64] bf16 tile into its swizzled shared copy: 16 bytes per
// copy, consecutive lanes on consecutive chunks.
__device__ __forceinline__ void load_tile_async(unsigned char* smem, const unsigned char* gmem,
                                                int rows, int lane) {
  for (int i = lane; i < rows * kGemmChunksPerRow; i += kWarpSize) {
    const int row = i / kGemmChunksPerRow;
    const int chunk = i % kGemmChunksPerRow;
    cuattn::cp_async_cg16(smem + gemm_tile_offset(row, chunk), gmem + i * kChunkBytes);
  }
}

__device__ __forceinline__ void store_accumulators(float* out, int lane,
                                                   const float (&acc)[kGemmNTiles][kMmaCRegs]) {
  for (int nt = 0; nt < kGemmNTiles; ++nt) {
    for (int i = 0; i < kMmaCRegs; ++i) {
      out[(nt * kWarpSize + lane) * kMmaCRegs + i] = acc[nt][i];
    }
  }
}

template <bool kVTrans>
__global__ void gemm_kernel(const unsigned char* in, float* out) {
  CUATTN_DYNAMIC_SMEM(unsigned char, smem);
  unsigned char* s_a = smem;                 // [16][64] bf16, swizzled
  unsigned char* s_kt = s_a + kGemmABytes;   // [64][64] bf16, swizzled
  unsigned char* s_v = s_kt + kGemmKtBytes;  // [64][64] bf16, swizzled
  const int lane = threadIdx.x;

  load_tile_async(s_a, in, kGemmM, lane);
  load_tile_async(s_kt, in + kGemmABytes, kGemmN, lane);
  cuattn::cp_async_commit_group();
  load_tile_async(s_v, in + kGemmABytes + kGemmKtBytes, kGemmK, lane);
  cuattn::cp_async_commit_group();

  float acc[kGemmNTiles][kMmaCRegs];  // n-tile j: columns 8j..8j+7 of the 16x64 result
  // Matrix j = lane / 8 of each ldmatrix x4 takes its rows from lanes 8j..8j+7.
  const int matrix = lane / 8;
  const int matrix_row = lane % 8;

  // S = A Kt^T: B[k][n] = Kt[n][k], so Kt's rows are B's columns: ldmatrix without .trans.
  cuattn::cp_async_wait_group<1>();  // A and Kt have landed
  __syncwarp();
  for (int nt = 0; nt < kGemmNTiles; ++nt) {
    for (int i = 0; i < kMmaCRegs; ++i) {
      acc[nt][i] = 0.0f;
    }
  }
  for (int ks = 0; ks < kGemmKSteps; ++ks) {
    // a: matrices (rows 0-7, k low), (rows 8-15, k low), (rows 0-7, k high), (rows 8-15, k high)
    uint32_t a[kMmaARegs];
    cuattn::ldmatrix_x4(a, s_a + gemm_tile_offset(lane % 16, 2 * ks + lane / 16));
    for (int np = 0; np < kGemmNTiles / 2; ++np) {
      // kb: matrices (n-tile 2np, k low), (2np, k high), (2np + 1, k low), (2np + 1, k high)
      uint32_t kb[4];
      cuattn::ldmatrix_x4(kb, s_kt + gemm_tile_offset(16 * np + 8 * (matrix / 2) + matrix_row,
                                                      2 * ks + matrix % 2));
      const uint32_t b0[kMmaBRegs] = {kb[0], kb[1]};
      const uint32_t b1[kMmaBRegs] = {kb[2], kb[3]};
      cuattn::mma_m16n8k16<Bf16>(acc[2 * np], a, b0, acc[2 * np]);
      cuattn::mma_m16n8k16<Bf16>(acc[2 * np + 1], a, b1, acc[2 * np + 1]);
    }
  }
  store_accumulators(out, lane, acc);

  // O = A V: V is stored [k][n], so B's columns are V's columns: ldmatrix .trans.
  cuattn::cp_async_wait_group<0>();  // V has landed
  __syncwarp();
  for (int nt = 0; nt < kGemmNTiles; ++nt) {
    for (int i = 0; i < kMmaCRegs; ++i) {
      acc[nt][i] = 0.0f;
    }
  }
  for (int ks = 0; ks < kGemmKSteps; ++ks) {
    uint32_t a[kMmaARegs];
    cuattn::ldmatrix_x4(a, s_a + gemm_tile_offset(lane % 16, 2 * ks + lane / 16));
    for (int np = 0; np < kGemmNTiles / 2; ++np) {
      // vb: matrices (k low, n-tile 2np), (k high, 2np), (k low, 2np + 1), (k high, 2np + 1)
      uint32_t vb[4];
      const unsigned char* row =
          s_v + gemm_tile_offset(16 * ks + 8 * (matrix % 2) + matrix_row, 2 * np + matrix / 2);
      if constexpr (kVTrans) {
        cuattn::ldmatrix_x4_trans(vb, row);
      } else {
        cuattn::ldmatrix_x4(vb, row);  // the planted bug: V's rows are k, not n
      }
      const uint32_t b0[kMmaBRegs] = {vb[0], vb[1]};
      const uint32_t b1[kMmaBRegs] = {vb[2], vb[3]};
      cuattn::mma_m16n8k16<Bf16>(acc[2 * np], a, b0, acc[2 * np]);
      cuattn::mma_m16n8k16<Bf16>(acc[2 * np + 1], a, b1, acc[2 * np + 1]);
    }
  }
  store_accumulators(out + kGemmNTiles * kWarpSize * kMmaCRegs, lane, acc);
}

// ---------------------------------------------------------------------------------------------
// CUATTN_PRIMITIVE_TEST_CP_ASYNC: every size and zero-fill tail.
// ---------------------------------------------------------------------------------------------

constexpr int kCopyThreads = 64;
// Two regions (whole, zero-filled tail) per instruction: ca 4, ca 8, ca 16 and cg 16 bytes.
constexpr int kCopyBytes = kCopyThreads * 2 * (4 + 8 + 16 + 16);
constexpr uint32_t kOldWord = 0x5a5a5a5au;  // shared memory before the copies

// Fills `bytes` (a multiple of 16) of shared memory with `word`, the block's threads together.
__device__ __forceinline__ void fill_shared(unsigned char* smem, int bytes, uint32_t word) {
  const uint4 chunk = make_uint4(word, word, word, word);
  for (int i = threadIdx.x * kChunkBytes; i < bytes; i += blockDim.x * kChunkBytes) {
    cuattn::st_shared_v4(smem + i, chunk);
  }
}

// Thread t's copies into the two regions starting at byte `offset`: the whole kBytes into the
// first, src-size t % (kBytes + 1) into the second. Returns where the next pair starts.
template <int kBytes, bool kCg>
__device__ __forceinline__ int copy_region_pair(unsigned char* smem, const unsigned char* in,
                                                int offset, int t) {
  const int whole = offset + kBytes * t;
  const int tail = offset + kBytes * kCopyThreads + kBytes * t;
  const int src_bytes = t % (kBytes + 1);
  if constexpr (kCg) {
    cuattn::cp_async_cg16(smem + whole, in + whole);
    cuattn::cp_async_cg16(smem + tail, in + tail, src_bytes);
  } else {
    cuattn::cp_async_ca<kBytes>(smem + whole, in + whole);
    cuattn::cp_async_ca<kBytes>(smem + tail, in + tail, src_bytes);
  }
  return offset + 2 * kBytes * kCopyThreads;
}

__global__ void cp_async_kernel(const unsigned char* in, unsigned char* out) {
  CUATTN_DYNAMIC_SMEM(unsigned char, smem);
  const int t = threadIdx.x;
  fill_shared(smem, kCopyBytes, kOldWord);
  __syncthreads();
  int offset = copy_region_pair<4, false>(smem, in, 0, t);
  offset = copy_region_pair<8, false>(smem, in, offset, t);
  offset = copy_region_pair<16, false>(smem, in, offset, t);
  copy_region_pair<cuattn::kCpAsyncCgBytes, true>(smem, in, offset, t);
  cuattn::cp_async_wait_all();
  __syncthreads();
  for (int i = t * kChunkBytes; i < kCopyBytes; i += kCopyThreads * kChunkBytes) {
    cuattn::st_global_v4(out + i, cuattn::ld_shared_v4(smem + i));
  }
}

// ---------------------------------------------------------------------------------------------
// CUATTN_PRIMITIVE_TEST_CP_ASYNC_GROUPS: which copies wait_group completes.
// ---------------------------------------------------------------------------------------------

constexpr int kGroupThreads = 64;
constexpr int kGroupRegions = 4;
constexpr int kGroupSnapshots = 5;
constexpr int kGroupRegionBytes = kGroupThreads * kChunkBytes;

// Copies this thread's chunk of every region to snapshot s of out.
__device__ __forceinline__ void snapshot(unsigned char* out, const unsigned char* smem, int s,
                                         int t) {
  for (int g = 0; g < kGroupRegions; ++g) {
    const uint4 chunk = cuattn::ld_shared_v4(smem + g * kGroupRegionBytes + t * kChunkBytes);
    cuattn::st_global_v4(out + ((s * kGroupThreads + t) * kGroupRegions + g) * kChunkBytes, chunk);
  }
}

__global__ void cp_async_groups_kernel(const unsigned char* in, unsigned char* out) {
  CUATTN_DYNAMIC_SMEM(unsigned char, smem);  // [4 regions][64 threads][16 bytes]
  const int t = threadIdx.x;
  fill_shared(smem, kGroupRegions * kGroupRegionBytes, kOldWord);
  __syncthreads();
  for (int g = 0; g < kGroupRegions; ++g) {
    const int at = g * kGroupRegionBytes + t * kChunkBytes;
    cuattn::cp_async_cg16(smem + at, in + at);
    if (g < kGroupRegions - 1) {
      cuattn::cp_async_commit_group();  // groups 0, 1, 2; region 3 stays uncommitted
    }
  }
  snapshot(out, smem, 0, t);
  cuattn::cp_async_wait_group<2>();
  snapshot(out, smem, 1, t);
  cuattn::cp_async_wait_group<1>();
  snapshot(out, smem, 2, t);
  cuattn::cp_async_wait_group<0>();
  snapshot(out, smem, 3, t);
  cuattn::cp_async_wait_all();
  snapshot(out, smem, 4, t);
}

// ---------------------------------------------------------------------------------------------
// CUATTN_PRIMITIVE_TEST_CP_ASYNC_READ_BEFORE_WAIT: the planted bug of a missing wait.
// ---------------------------------------------------------------------------------------------

constexpr int kRowElems = cuattn::kVecElems<Bf16>;  // 8 bf16 in one 16-byte row
constexpr uint32_t kBf16OnePair = 0x3f803f80u;      // two bf16 1.0

// Converts the 8 bf16 of a shared row to floats in out.
__device__ __forceinline__ void row_to_float(float* out, const unsigned char* row) {
  const uint4 v = cuattn::ld_shared_v4(row);
  const uint32_t pairs[4] = {v.x, v.y, v.z, v.w};
  for (int i = 0; i < 4; ++i) {
    const float2 f = cuattn::unpack_bf16x2(pairs[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

__global__ void read_before_wait_kernel(const unsigned char* in, float* out) {
  CUATTN_DYNAMIC_SMEM(unsigned char, smem);  // [32 rows][8 bf16]
  const int lane = threadIdx.x;
  unsigned char* row = smem + lane * kChunkBytes;
  cuattn::st_shared_v4(row, make_uint4(kBf16OnePair, kBf16OnePair, kBf16OnePair, kBf16OnePair));
  __syncwarp();
  cuattn::cp_async_cg16(row, in + lane * kChunkBytes);
  cuattn::cp_async_commit_group();
  row_to_float(out + lane * kRowElems, row);  // the bug: no wait before reading
  cuattn::cp_async_wait_group<0>();
  row_to_float(out + (kWarpSize + lane) * kRowElems, row);
}

// ---------------------------------------------------------------------------------------------
// CUATTN_PRIMITIVE_TEST_VEC: vector accesses and packing.
// ---------------------------------------------------------------------------------------------

constexpr int kVecThreads = 64;

__global__ void vec_kernel(const unsigned char* in, unsigned char* out) {
  CUATTN_DYNAMIC_SMEM(unsigned char, smem);  // [64][16 bytes]
  const int t = threadIdx.x;
  const unsigned char* src = in;
  const auto* pairs = reinterpret_cast<const float*>(in + kVecThreads * kChunkBytes);
  const auto* packed = reinterpret_cast<const uint32_t*>(pairs + 2 * kVecThreads);
  unsigned char* copy = out;
  auto* bf16_pairs = reinterpret_cast<uint32_t*>(out + kVecThreads * kChunkBytes);
  uint32_t* half_pairs = bf16_pairs + kVecThreads;
  auto* unpacked_bf16 = reinterpret_cast<float*>(half_pairs + kVecThreads);
  float* unpacked_half = unpacked_bf16 + 2 * kVecThreads;

  cuattn::st_shared_v4(smem + (kVecThreads - 1 - t) * kChunkBytes,
                       cuattn::ld_global_v4(src + t * kChunkBytes));
  __syncthreads();
  cuattn::st_global_v4(copy + t * kChunkBytes, cuattn::ld_shared_v4(smem + t * kChunkBytes));

  bf16_pairs[t] = cuattn::pack_bf16x2(pairs[2 * t], pairs[2 * t + 1]);
  half_pairs[t] = cuattn::pack_half2(pairs[2 * t], pairs[2 * t + 1]);
  const float2 b = cuattn::unpack_bf16x2(packed[t]);
  const float2 h = cuattn::unpack_half2(packed[t]);
  unpacked_bf16[2 * t] = b.x;
  unpacked_bf16[2 * t + 1] = b.y;
  unpacked_half[2 * t] = h.x;
  unpacked_half[2 * t + 1] = h.y;
}

// ---------------------------------------------------------------------------------------------
// CUATTN_PRIMITIVE_TEST_EXP2, _REDUCE and _SWIZZLE.
// ---------------------------------------------------------------------------------------------

constexpr int kExp2Blocks = 16;
constexpr int kExp2Threads = 256;
constexpr int kReduceThreads = 128;
constexpr int kSwizzleThreads = 64;
constexpr int kSwizzleRows = 64;

__global__ void exp2_kernel(const float* in, float* out) {
  const int i = blockIdx.x * kExp2Threads + threadIdx.x;
  out[i] = cuattn::fast_exp2(in[i]);
  out[kExp2Blocks * kExp2Threads + i] = cuattn::fast_tanh(in[i]);
  out[2 * kExp2Blocks * kExp2Threads + i] = cuattn::fma_exp2(in[i]);
}

__global__ void reduce_kernel(const float* in, float* out) {
  const int t = threadIdx.x;
  const float x = in[t];
  out[0 * kReduceThreads + t] = cuattn::quad_max(x);
  out[1 * kReduceThreads + t] = cuattn::quad_sum(x);
  out[2 * kReduceThreads + t] = cuattn::warp_max(x);
  out[3 * kReduceThreads + t] = cuattn::warp_sum(x);
}

// Writes swizzle_chunk<kChunksPerRow> for every (row, chunk) at out; returns the next position.
template <int kChunksPerRow>
__device__ __forceinline__ int32_t* write_swizzle(int32_t* out) {
  for (int i = threadIdx.x; i < kSwizzleRows * kChunksPerRow; i += kSwizzleThreads) {
    out[i] = cuattn::swizzle_chunk<kChunksPerRow>(i / kChunksPerRow, i % kChunksPerRow);
  }
  return out + kSwizzleRows * kChunksPerRow;
}

__global__ void swizzle_kernel(int32_t* out) {
  out = write_swizzle<2>(out);
  out = write_swizzle<4>(out);
  out = write_swizzle<8>(out);
  out = write_swizzle<16>(out);
  out = write_swizzle<24>(out);
  write_swizzle<32>(out);
}

constexpr int kSwizzleEntries = kSwizzleRows * (2 + 4 + 8 + 16 + 24 + 32);

// ---------------------------------------------------------------------------------------------
// Planted faults.
// ---------------------------------------------------------------------------------------------

constexpr int kFaultTileRows = 16;
constexpr int kMisalignedLane = 5;
constexpr int kMisalignBytes = 8;
constexpr int kMisalignedCopyThread = 3;
constexpr int kExitingLane = 7;
constexpr int kHalfWarp = 16;

// Writes the [16 rows][16 bytes] tile of the fault kernels (lane l row l % 16), so that only the
// planted fault is reported, not a read of unwritten shared memory.
__device__ __forceinline__ unsigned char* fault_tile_row(unsigned char* tile, int lane) {
  unsigned char* row = tile + (lane % kFaultTileRows) * kChunkBytes;
  if (lane < kFaultTileRows) {
    const auto word = static_cast<uint32_t>(lane);
    cuattn::st_shared_v4(row, make_uint4(word, word, word, word));
  }
  __syncwarp();
  return row;
}

__global__ void ldmatrix_misaligned_kernel() {
  CUATTN_DYNAMIC_SMEM(unsigned char, tile);  // [16 rows][16 bytes]
  const int lane = threadIdx.x;
  const unsigned char* row = fault_tile_row(tile, lane);
  uint32_t r[4];
  cuattn::ldmatrix_x4(r, lane == kMisalignedLane ? row + kMisalignBytes : row);
}

__global__ void ldmatrix_global_kernel(const unsigned char* in) {
  uint32_t r[2];
  cuattn::ldmatrix_x2(r, in + (threadIdx.x % kFaultTileRows) * kChunkBytes);
}

__global__ void cp_async_misaligned_kernel(const unsigned char* in) {
  CUATTN_DYNAMIC_SMEM(unsigned char, smem);  // [32][16 bytes]
  const int t = threadIdx.x;
  const unsigned char* src = in + t * kChunkBytes;
  cuattn::cp_async_cg16(smem + t * kChunkBytes,
                        t == kMisalignedCopyThread ? src + kMisalignBytes : src);
  cuattn::cp_async_wait_all();
}

__global__ void mma_ldmatrix_mismatch_kernel() {
  CUATTN_DYNAMIC_SMEM(unsigned char, tile);  // [16 rows][16 bytes]
  const int lane = threadIdx.x;
  uint32_t a[kMmaARegs] = {};
  const uint32_t b[kMmaBRegs] = {};
  float c[kMmaCRegs] = {};
  const unsigned char* row = fault_tile_row(tile, lane);
  if (lane < kHalfWarp) {
    cuattn::mma_m16n8k16<Bf16>(c, a, b, c);
  } else {
    cuattn::ldmatrix_x4(a, row);
  }
}

__global__ void mma_exited_lane_kernel() {
  if (threadIdx.x == kExitingLane) {
    return;
  }
  const uint32_t a[kMmaARegs] = {};
  const uint32_t b[kMmaBRegs] = {};
  float c[kMmaCRegs] = {};
  cuattn::mma_m16n8k16<Bf16>(c, a, b, c);
}

// ---------------------------------------------------------------------------------------------
// The launcher.
// ---------------------------------------------------------------------------------------------

constexpr int64_t kMmaOutBytes = 2LL * kMmaWarps * kWarpSize * kMmaCRegs * sizeof(float);
constexpr int64_t kLdmOutBytes = 4LL * kLdmVariants * kWarpSize * kLdmMaxRegs;
constexpr int64_t kGemmOutBytes = 2LL * kGemmNTiles * kWarpSize * kMmaCRegs * sizeof(float);
constexpr int64_t kGroupOutBytes =
    1LL * kGroupSnapshots * kGroupThreads * kGroupRegions * kChunkBytes;
constexpr int64_t kReadBeforeWaitOutBytes = 2LL * kWarpSize * kRowElems * sizeof(float);
// copy[64] uint4, bf16x2[64] and half2[64] uint32, two float [64][2].
constexpr int64_t kVecOutBytes = kVecThreads * (kChunkBytes + 4 + 4 + 8 + 8);
constexpr int64_t kExp2OutBytes = 3 * 4LL * kExp2Blocks * kExp2Threads;  // exp2, tanh, fma_exp2
constexpr int64_t kReduceOutBytes = 4LL * 4 * kReduceThreads;
constexpr int64_t kSwizzleOutBytes = 4LL * kSwizzleEntries;

struct CaseShape {
  int64_t out_bytes;  // at least; -1 for an unknown case
  bool needs_in;
};

CaseShape case_shape(int32_t test_case) {
  switch (test_case) {
    case CUATTN_PRIMITIVE_TEST_MMA_BF16:
    case CUATTN_PRIMITIVE_TEST_MMA_F16:
      return {kMmaOutBytes, true};
    case CUATTN_PRIMITIVE_TEST_LDMATRIX:
      return {kLdmOutBytes, true};
    case CUATTN_PRIMITIVE_TEST_GEMM:
    case CUATTN_PRIMITIVE_TEST_GEMM_V_WITHOUT_TRANS:
      return {kGemmOutBytes, true};
    case CUATTN_PRIMITIVE_TEST_CP_ASYNC:
      return {kCopyBytes, true};
    case CUATTN_PRIMITIVE_TEST_CP_ASYNC_GROUPS:
      return {kGroupOutBytes, true};
    case CUATTN_PRIMITIVE_TEST_CP_ASYNC_READ_BEFORE_WAIT:
      return {kReadBeforeWaitOutBytes, true};
    case CUATTN_PRIMITIVE_TEST_VEC:
      return {kVecOutBytes, true};
    case CUATTN_PRIMITIVE_TEST_EXP2:
      return {kExp2OutBytes, true};
    case CUATTN_PRIMITIVE_TEST_REDUCE:
      return {kReduceOutBytes, true};
    case CUATTN_PRIMITIVE_TEST_SWIZZLE:
      return {kSwizzleOutBytes, false};
    case CUATTN_PRIMITIVE_TEST_FAULT_LDMATRIX_MISALIGNED:
    case CUATTN_PRIMITIVE_TEST_FAULT_MMA_LDMATRIX_MISMATCH:
    case CUATTN_PRIMITIVE_TEST_FAULT_MMA_EXITED_LANE:
      return {0, false};
    case CUATTN_PRIMITIVE_TEST_FAULT_LDMATRIX_GLOBAL:
    case CUATTN_PRIMITIVE_TEST_FAULT_CP_ASYNC_MISALIGNED:
      return {0, true};
    default:
      return {-1, false};
  }
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(primitive_test)(int32_t test_case, const void* in,
                                                         void* out, int64_t out_bytes,
                                                         void* stream) {
  const CaseShape shape = case_shape(test_case);
  if (shape.out_bytes < 0) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "primitive_test: test_case = %d is not a cuattn_primitive_test_case",
                        test_case);
  }
  if (shape.needs_in && in == nullptr) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "primitive_test: case %d reads `in`, which is null", test_case);
  }
  if (out_bytes < shape.out_bytes || (shape.out_bytes > 0 && out == nullptr)) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "primitive_test: case %d needs out of at least %lld bytes, got %lld bytes "
                        "at %p",
                        test_case, static_cast<long long>(shape.out_bytes),
                        static_cast<long long>(out_bytes), out);
  }
  const auto* bytes_in = static_cast<const unsigned char*>(in);
  auto* bytes_out = static_cast<unsigned char*>(out);
  auto* floats_out = static_cast<float*>(out);
  const dim3 one(1);
  const dim3 warp(kWarpSize);
  switch (test_case) {
    case CUATTN_PRIMITIVE_TEST_MMA_BF16:
      return cuattn::launch_kernel("primitive_test_mma_bf16", mma_kernel<Bf16>, dim3(kMmaBlocks),
                                   dim3(kMmaWarpsPerBlock * kWarpSize), 0, stream, bytes_in,
                                   floats_out);
    case CUATTN_PRIMITIVE_TEST_MMA_F16:
      return cuattn::launch_kernel("primitive_test_mma_f16", mma_kernel<__half>, dim3(kMmaBlocks),
                                   dim3(kMmaWarpsPerBlock * kWarpSize), 0, stream, bytes_in,
                                   floats_out);
    case CUATTN_PRIMITIVE_TEST_LDMATRIX:
      return cuattn::launch_kernel("primitive_test_ldmatrix", ldmatrix_kernel, one, warp,
                                   kLdmTileBytes, stream, bytes_in, static_cast<uint32_t*>(out));
    case CUATTN_PRIMITIVE_TEST_GEMM:
      return cuattn::launch_kernel("primitive_test_gemm", gemm_kernel<true>, one, warp,
                                   kGemmSmemBytes, stream, bytes_in, floats_out);
    case CUATTN_PRIMITIVE_TEST_GEMM_V_WITHOUT_TRANS:
      return cuattn::launch_kernel("primitive_test_gemm_v_without_trans", gemm_kernel<false>, one,
                                   warp, kGemmSmemBytes, stream, bytes_in, floats_out);
    case CUATTN_PRIMITIVE_TEST_CP_ASYNC:
      return cuattn::launch_kernel("primitive_test_cp_async", cp_async_kernel, one,
                                   dim3(kCopyThreads), kCopyBytes, stream, bytes_in, bytes_out);
    case CUATTN_PRIMITIVE_TEST_CP_ASYNC_GROUPS:
      return cuattn::launch_kernel("primitive_test_cp_async_groups", cp_async_groups_kernel, one,
                                   dim3(kGroupThreads), kGroupRegions * kGroupRegionBytes, stream,
                                   bytes_in, bytes_out);
    case CUATTN_PRIMITIVE_TEST_CP_ASYNC_READ_BEFORE_WAIT:
      return cuattn::launch_kernel("primitive_test_cp_async_read_before_wait",
                                   read_before_wait_kernel, one, warp, kWarpSize * kChunkBytes,
                                   stream, bytes_in, floats_out);
    case CUATTN_PRIMITIVE_TEST_VEC:
      return cuattn::launch_kernel("primitive_test_vec", vec_kernel, one, dim3(kVecThreads),
                                   kVecThreads * kChunkBytes, stream, bytes_in, bytes_out);
    case CUATTN_PRIMITIVE_TEST_EXP2:
      return cuattn::launch_kernel("primitive_test_exp2", exp2_kernel, dim3(kExp2Blocks),
                                   dim3(kExp2Threads), 0, stream, static_cast<const float*>(in),
                                   floats_out);
    case CUATTN_PRIMITIVE_TEST_REDUCE:
      return cuattn::launch_kernel("primitive_test_reduce", reduce_kernel, one,
                                   dim3(kReduceThreads), 0, stream, static_cast<const float*>(in),
                                   floats_out);
    case CUATTN_PRIMITIVE_TEST_SWIZZLE:
      return cuattn::launch_kernel("primitive_test_swizzle", swizzle_kernel, one,
                                   dim3(kSwizzleThreads), 0, stream, static_cast<int32_t*>(out));
    case CUATTN_PRIMITIVE_TEST_FAULT_LDMATRIX_MISALIGNED:
      return cuattn::launch_kernel("primitive_test_fault_ldmatrix_misaligned",
                                   ldmatrix_misaligned_kernel, one, warp,
                                   kFaultTileRows * kChunkBytes, stream);
    case CUATTN_PRIMITIVE_TEST_FAULT_LDMATRIX_GLOBAL:
      return cuattn::launch_kernel("primitive_test_fault_ldmatrix_global", ldmatrix_global_kernel,
                                   one, warp, 0, stream, bytes_in);
    case CUATTN_PRIMITIVE_TEST_FAULT_CP_ASYNC_MISALIGNED:
      return cuattn::launch_kernel("primitive_test_fault_cp_async_misaligned",
                                   cp_async_misaligned_kernel, one, warp, kWarpSize * kChunkBytes,
                                   stream, bytes_in);
    case CUATTN_PRIMITIVE_TEST_FAULT_MMA_LDMATRIX_MISMATCH:
      return cuattn::launch_kernel("primitive_test_fault_mma_ldmatrix_mismatch",
                                   mma_ldmatrix_mismatch_kernel, one, warp,
                                   kFaultTileRows * kChunkBytes, stream);
    case CUATTN_PRIMITIVE_TEST_FAULT_MMA_EXITED_LANE:
      return cuattn::launch_kernel("primitive_test_fault_mma_exited_lane", mma_exited_lane_kernel,
                                   one, warp, 0, stream);
  }
  return cuattn::fail(CUATTN_ERROR_INTERNAL, "primitive_test: case %d has no launch", test_case);
}
