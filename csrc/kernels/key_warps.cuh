// key_warps.cuh: the per-warp attention step of the kernels whose key tiles are gathered row by
// row (paged_attention over a block table, block_sparse over a block list), and the epilogue that
// merges the warps sharing a block of rows.
//
// A CTA of kWarps warps holds kRowWarps blocks of 16 query rows; the other kWarps / kRowWarps
// warps of each block take their own keys of every key tile (decode's 16 rows: four warps on 16
// keys each of a 64-key tile), each keeping its own online softmax over its keys. KeyWarp is one
// warp's state and math over one tile: S = Q K^T and O += P V on mma.sync (Q and K through
// ldmatrix, V through ldmatrix.trans, P from S's accumulators), scores in base 2, the element
// mask only where the caller asks for it. At the end each warp stages its O, max and sum, and
// merge_key_warps combines a row's warps by LSE, as merge_states does.
#pragma once

#include <cstdint>

#include "arch/ldmatrix.cuh"
#include "arch/math.cuh"
#include "arch/mma.cuh"
#include "arch/vec.cuh"
#include "common/cuda_compat.cuh"
#include "common/mask.cuh"
#include "common/smem_tile.cuh"
#include "common/softmax.cuh"

namespace cuattn {

// The tile table of a gathered-rows kernel: kRowWarps blocks of 16 rows, kWarps warps (four, or
// one a block of rows where those are more), key tiles of kBlockN keys (64; 32 from head dim 192,
// where O takes 96 or 128 registers a lane and two 64-key stages would pass 96 KiB), each warp
// taking kWarpKeys of them: 16 at least, a k16 block of P.
template <int kHeadDimTile, int kRowWarps>
struct KeyWarpTraits {
  static constexpr int kHeadDim = kHeadDimTile;
  static_assert(kRowWarps == 1 || kRowWarps == 2 || kRowWarps == 4 || kRowWarps == 8,
                "16, 32, 64 or 128 rows a CTA");
  static constexpr int kWarps = kRowWarps > 4 ? kRowWarps : 4;
  static constexpr int kKeyWarps = kWarps / kRowWarps;  // warps sharing a block of 16 rows
  static constexpr int kThreads = kWarps * kWarpSize;
  static constexpr int kStages = 2;
  static constexpr int kBlockM = kMmaM * kRowWarps;          // query rows per CTA
  static constexpr int kBlockN = kHeadDim <= 128 ? 64 : 32;  // keys per K/V tile
  static constexpr int kWarpKeys = kBlockN / kKeyWarps;      // keys of a tile a warp takes
  static constexpr int kScoreBlocks = kWarpKeys / kMmaN;     // n8 blocks of a warp's S
  static constexpr int kPBlocks = kWarpKeys / kMmaK;         // k16 blocks of a warp's P
  static constexpr int kOutBlocks = kHeadDim / kMmaN;        // n8 blocks of O
  static_assert(kWarpKeys % kMmaK == 0, "a warp's keys are whole k16 blocks of P");
  static_assert(kScoreBlocks % 2 == 0, "K fragments come two n8 blocks a load");
  using QTile = SmemTile<kBlockM, kHeadDim>;
  using KVTile = SmemTile<kBlockN, kHeadDim>;
  // Shared memory: Q, then the K/V stages, which the epilogue reuses for every warp's O in fp32
  // ([warp][16 rows][kHeadDim + kOPad]) and its rows' maxes and sums; a kernel's own tables
  // follow (kTablesOffset).
  static constexpr int kOPad = 4;  // floats after each staged row of O (spreads the banks)
  static constexpr int kOStride = kHeadDim + kOPad;
  static constexpr int kKVBytes = 2 * kStages * KVTile::kBytes;
  static constexpr int kOBytes = kWarps * kMmaM * kOStride * 4 + 2 * kWarps * kMmaM * 4;
  static constexpr int kWorkBytes = kKVBytes > kOBytes ? kKVBytes : kOBytes;
  static constexpr int kTablesOffset = QTile::kBytes + kWorkBytes;
  static_assert(kWorkBytes % 16 == 0 && QTile::kBytes % 16 == 0, "tables stay 16-byte aligned");
};

// One warp's 16 query rows against its kWarpKeys keys of each tile: the online softmax of its
// two lane rows (group_row and group_row + 8) and O in fp32.
template <typename T, typename Tr>
struct KeyWarp {
  using Scores = float[Tr::kScoreBlocks][kMmaCRegs];  // S, then P: [16 x kWarpKeys]
  using QCursor = typename Tr::QTile::Cursor;
  using KVCursor = typename Tr::KVTile::Cursor;

  OnlineSoftmax softmax[2];
  float acc[Tr::kOutBlocks][kMmaCRegs] = {};  // O: [16 x kHeadDim], fp32
  QCursor q_cursor;
  KVCursor k_cursor;
  KVCursor v_cursor;

  // The warp's rows are the CTA's rows 16 * row_warp ..; its keys of each tile start at key
  // kWarpKeys * key_warp.
  __device__ KeyWarp(int row_warp, int key_warp, int lane)
      : q_cursor(Tr::QTile::cursor(row_warp * kMmaM + lane % 16, lane / 16)),
        k_cursor(Tr::KVTile::cursor(key_warp * Tr::kWarpKeys + (lane / 16) * kMmaN + lane % 8,
                                    (lane / 8) % 2)),
        v_cursor(Tr::KVTile::cursor(key_warp * Tr::kWarpKeys + lane % 16, lane / 16)) {}

  // S = Q K^T for the tile in sK, in base 2: dot * scale_log2, or capped, cap_log2 *
  // tanh(dot * cap_scale) where cap_log2 > 0. The caller passes scale_log2 from the kernel's
  // params (constant memory) rather than holding it through the loop, whose registers are tight.
  __device__ __forceinline__ void scores(Scores& s, const unsigned char* sQ,
                                         const unsigned char* sK, float scale_log2, float cap_scale,
                                         float cap_log2) const {
#pragma unroll
    for (int k16 = 0; k16 < Tr::kHeadDim / kMmaK; ++k16) {
      uint32_t a[kMmaARegs];
      ldmatrix_x4(a, sQ + q_cursor.at(0, 2 * k16));
#pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; n8 += 2) {
        uint32_t b[4];
        ldmatrix_x4(b, sK + k_cursor.at(n8 * kMmaN, 2 * k16));
        const uint32_t b0[kMmaBRegs] = {b[0], b[1]};
        const uint32_t b1[kMmaBRegs] = {b[2], b[3]};
        if (k16 == 0) {
          const float zero[kMmaCRegs] = {};
          mma_m16n8k16<T>(s[n8], a, b0, zero);
          mma_m16n8k16<T>(s[n8 + 1], a, b1, zero);
        } else {
          mma_m16n8k16<T>(s[n8], a, b0, s[n8]);
          mma_m16n8k16<T>(s[n8 + 1], a, b1, s[n8 + 1]);
        }
      }
    }
    const bool capped = cap_log2 > 0.0f;
#pragma unroll
    for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
#pragma unroll
      for (int i = 0; i < kMmaCRegs; ++i) {
        s[n8][i] = capped ? cap_log2 * fast_tanh(s[n8][i] * cap_scale) : s[n8][i] * scale_log2;
      }
    }
  }

  // The element mask: score (lane row r, column col of the warp's keys) becomes -inf unless
  // visible(r, col). Lane row r holds columns 8 * n8 + 2 * quad_lane + j of accumulator
  // elements 2r + j.
  template <typename Visible>
  __device__ __forceinline__ void mask(Scores& s, int quad_lane, Visible&& visible) const {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
#pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          if (!visible(r, n8 * kMmaN + 2 * quad_lane + j)) {
            s[n8][2 * r + j] = -INFINITY;
          }
        }
      }
    }
  }

  // The online softmax over the tile's scores, which become P; O is rescaled when a row's max
  // outgrew the running one (OnlineSoftmax::kMaxLag).
  __device__ __forceinline__ void absorb(Scores& s) {
    float tile_max[2];
    bool outgrown = false;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = -INFINITY;
#pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
        tile_max[r] = fmaxf(tile_max[r], fmaxf(s[n8][2 * r], s[n8][2 * r + 1]));
      }
      tile_max[r] = quad_max(tile_max[r]);
      outgrown |= softmax[r].outgrown_by(tile_max[r]);
    }
    if (__any_sync(kMathFullMask, outgrown) != 0) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float correction = softmax[r].absorb_max(tile_max[r]);
#pragma unroll
        for (int d8 = 0; d8 < Tr::kOutBlocks; ++d8) {
          acc[d8][2 * r] *= correction;
          acc[d8][2 * r + 1] *= correction;
        }
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float sum = 0.0f;
#pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          s[n8][2 * r + j] = softmax[r].prob(s[n8][2 * r + j]);
          sum += s[n8][2 * r + j];
        }
      }
      softmax[r].sum += sum;
    }
  }

  // O += P V for the tile in sV: P's A fragments straight from S's accumulators (two n8 blocks
  // make one k16 block), V through ldmatrix.trans, two n8 blocks of O a load.
  __device__ __forceinline__ void accumulate(const Scores& s, const unsigned char* sV) {
#pragma unroll
    for (int k16 = 0; k16 < Tr::kPBlocks; ++k16) {
      const uint32_t a[kMmaARegs] = {pack2<T>(s[2 * k16][0], s[2 * k16][1]),
                                     pack2<T>(s[2 * k16][2], s[2 * k16][3]),
                                     pack2<T>(s[2 * k16 + 1][0], s[2 * k16 + 1][1]),
                                     pack2<T>(s[2 * k16 + 1][2], s[2 * k16 + 1][3])};
#pragma unroll
      for (int d8 = 0; d8 < Tr::kOutBlocks; d8 += 2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, sV + v_cursor.at(k16 * kMmaK, d8));
        const uint32_t b0[kMmaBRegs] = {b[0], b[1]};
        const uint32_t b1[kMmaBRegs] = {b[2], b[3]};
        mma_m16n8k16<T>(acc[d8], a, b0, acc[d8]);
        mma_m16n8k16<T>(acc[d8 + 1], a, b1, acc[d8 + 1]);
      }
    }
  }

  // Stages this warp's O (unnormalized, at its own running max), maxes and sums in `work` (the
  // K/V stages, once no copy may land there and every warp is done with them) for
  // merge_key_warps.
  __device__ __forceinline__ void stage(unsigned char* work, int warp, int lane) const {
    float* sO = reinterpret_cast<float*>(work);  // [warp][16 rows][kOStride]
    float* sMax = sO + Tr::kWarps * kMmaM * Tr::kOStride;
    float* sSum = sMax + Tr::kWarps * kMmaM;
    const int group_row = lane / 4;
    const int quad_lane = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = group_row + 8 * r;
      float* o_row = sO + (warp * kMmaM + row) * Tr::kOStride;
#pragma unroll
      for (int d8 = 0; d8 < Tr::kOutBlocks; ++d8) {
        *reinterpret_cast<float2*>(o_row + d8 * kMmaN + 2 * quad_lane) =
            make_float2(acc[d8][2 * r], acc[d8][2 * r + 1]);
      }
      const float sum = quad_sum(softmax[r].sum);
      if (quad_lane == 0) {
        sMax[warp * kMmaM + row] = softmax[r].max;
        sSum[warp * kMmaM + row] = sum;
      }
    }
  }
};

// One chunk of a CTA row's output merged over its key warps (staged by KeyWarp::stage, past a
// barrier): o, normalized, and the row's natural-log LSE (-inf, and zeros, for a row that saw
// no key).
template <typename Tr>
struct MergedChunk {
  float o[kChunkElems];
  float lse;
};

template <typename Tr>
__device__ __forceinline__ MergedChunk<Tr> merge_key_warps(const unsigned char* work, int cta_row,
                                                           int chunk) {
  const float* sO = reinterpret_cast<const float*>(work);
  const float* sMax = sO + Tr::kWarps * kMmaM * Tr::kOStride;
  const float* sSum = sMax + Tr::kWarps * kMmaM;
  const int tile_row = cta_row % kMmaM;
  const int rw = cta_row / kMmaM;  // its row warp; key warp kw is warp rw + kw * kRowWarps
  constexpr int kRowWarps = Tr::kWarps / Tr::kKeyWarps;
  float row_max = -INFINITY;
#pragma unroll
  for (int kw = 0; kw < Tr::kKeyWarps; ++kw) {
    row_max = fmaxf(row_max, sMax[(rw + kw * kRowWarps) * kMmaM + tile_row]);
  }
  float weights[Tr::kKeyWarps];
  float total = 0.0f;
#pragma unroll
  for (int kw = 0; kw < Tr::kKeyWarps; ++kw) {
    const int w = (rw + kw * kRowWarps) * kMmaM + tile_row;
    weights[kw] = sMax[w] == -INFINITY ? 0.0f : fast_exp2(sMax[w] - row_max);
    total += weights[kw] * sSum[w];
  }
  const float inv_total = total > 0.0f ? 1.0f / total : 0.0f;
  MergedChunk<Tr> merged = {};
#pragma unroll
  for (int kw = 0; kw < Tr::kKeyWarps; ++kw) {
    const float* src =
        sO + ((rw + kw * kRowWarps) * kMmaM + tile_row) * Tr::kOStride + chunk * kChunkElems;
#pragma unroll
    for (int e = 0; e < kChunkElems; ++e) {
      merged.o[e] += src[e] * weights[kw];
    }
  }
#pragma unroll
  for (int e = 0; e < kChunkElems; ++e) {
    merged.o[e] *= inv_total;
  }
  merged.lse = lse_from_log2(row_max, total);
  return merged;
}

// The merged chunk as 8 elements of T in one 16-byte vector.
template <typename T, typename Tr>
__device__ __forceinline__ uint4 pack_chunk(const MergedChunk<Tr>& c) {
  static_assert(kChunkElems == 8, "a chunk is 16 bytes of 2-byte elements");
  uint4 packed;
  packed.x = pack2<T>(c.o[0], c.o[1]);
  packed.y = pack2<T>(c.o[2], c.o[3]);
  packed.z = pack2<T>(c.o[4], c.o[5]);
  packed.w = pack2<T>(c.o[6], c.o[7]);
  return packed;
}

}  // namespace cuattn
