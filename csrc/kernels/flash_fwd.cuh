// flash_fwd.cuh: FlashAttention-2-style tiled attention forward, the prefill kernel. Included by
// one translation unit per (dtype, head-dim tile), so the CUDA build compiles them in parallel.
//
// One CTA per (query tile, query head, batch); each warp owns 16 query rows. K/V tiles stream
// through a two-stage cp.async pipeline into swizzled shared memory (tile j+2 loads while j and
// j+1 are in use); S = Q K^T and O += P V on mma.sync, Q and K through ldmatrix, V through
// ldmatrix.trans; the online softmax stays in registers in base 2 and P is reused from the S
// accumulators as the A operand. Tiles no row of the CTA can see are never loaded; the element
// mask runs only on tiles that straddle a mask boundary. O leaves through shared memory in 16-byte
// stores. Gained over attention_mma_simple: load/compute overlap, fragment loads batched ahead
// of their mmas, several CTAs per SM, no masking work on interior tiles, vector stores.
#pragma once

#include "arch/cp_async.cuh"
#include "arch/ldmatrix.cuh"
#include "arch/math.cuh"
#include "arch/mma.cuh"
#include "arch/vec.cuh"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/mask.cuh"
#include "common/smem_tile.cuh"
#include "common/softmax.cuh"
#include "cuattn.h"
#include "kernels/flash_fwd_launch.h"

namespace cuattn {
namespace flash_fwd {

constexpr int kWarpSize = 32;
constexpr int kStages = 2;  // K/V tiles in flight: one being used, one landing

// The traits table: tile shapes per head-dim tile, each row with its reason. Four warps (64 query
// rows) per CTA everywhere: at up to 255 registers a lane, two or more CTAs fit on an SM, so one
// CTA's barrier never idles the whole SM.
template <int kHeadDim>
struct Shape;
// hd64-192: S is 16 x 64 per warp; shared memory 40-120 KiB.
template <>
struct Shape<64> {
  static constexpr int kWarps = 4, kBlockN = 64;
};
template <>
struct Shape<96> {
  static constexpr int kWarps = 4, kBlockN = 64;
};
template <>
struct Shape<128> {
  static constexpr int kWarps = 4, kBlockN = 64;
};
template <>
struct Shape<192> {
  static constexpr int kWarps = 4, kBlockN = 64;
};
// hd256: the O accumulators take 128 registers per lane; 32-key tiles keep S and the fragments
// in flight small enough to stay under 255 registers without spills.
template <>
struct Shape<256> {
  static constexpr int kWarps = 4, kBlockN = 32;
};

template <int kHeadDim>
struct Traits {
  static constexpr int kWarps = Shape<kHeadDim>::kWarps;
  static constexpr int kBlockN = Shape<kHeadDim>::kBlockN;  // keys per K/V tile
  static constexpr int kBlockM = kMmaM * kWarps;             // query rows per CTA
  static constexpr int kThreads = kWarps * kWarpSize;
  // Two CTAs per SM at least: ptxas may use up to 255 registers a lane, and chooses no tighter
  // budget (left free, it capped hd128 at 168 registers and spilled).
  static constexpr int kMinBlocksPerSm = 2;
  using QTile = SmemTile<kBlockM, kHeadDim>;   // sQ [kBlockM][kHeadDim], later O
  using KVTile = SmemTile<kBlockN, kHeadDim>;  // sK[stage], sV[stage] [kBlockN][kHeadDim]
  static constexpr int kSmemBytes = QTile::kBytes + 2 * kStages * KVTile::kBytes;
  static constexpr int kScoreBlocks = kBlockN / kMmaN;  // n8 blocks of S per warp
  static constexpr int kOutBlocks = kHeadDim / kMmaN;   // n8 blocks of O per warp
  static_assert(kHeadDim % kMmaK == 0, "head-dim tiles are whole k16 steps");
  static_assert(kBlockN % kMmaK == 0, "P V consumes a key tile in k16 steps");
};

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(Traits<kHeadDim>::kThreads, Traits<kHeadDim>::kMinBlocksPerSm)
    flash_fwd_kernel(const cuattn_attention_params p) {
  using Tr = Traits<kHeadDim>;
  using QTile = typename Tr::QTile;
  using KVTile = typename Tr::KVTile;
  constexpr int kBlockM = Tr::kBlockM;
  constexpr int kBlockN = Tr::kBlockN;
  CUATTN_DYNAMIC_SMEM(unsigned char, smem);
  unsigned char* sQ = smem;
  unsigned char* sKV = sQ + QTile::kBytes;  // [stage][K, V] tiles
  auto sK = [&](int stage) { return sKV + (2 * stage) * KVTile::kBytes; };
  auto sV = [&](int stage) { return sKV + (2 * stage + 1) * KVTile::kBytes; };

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int group = lane / 4;  // accumulator rows group and group + 8 of the warp's m16 tile
  const int quad_lane = lane % 4;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int row0 = blockIdx.x * kBlockM;  // first query row of the CTA

  const SequenceSpan seq = sequence_span(p, batch);
  if (row0 >= seq.len_q) {
    return;  // the whole CTA leaves before any barrier (varlen: a shorter sequence)
  }
  const int kv_head = head / (p.heads / p.kv_heads);
  const T* q = static_cast<const T*>(p.q) + seq.q_offset(p.q_batch_stride, p.q_row_stride, row0) +
               head * p.q_head_stride;
  const T* k = static_cast<const T*>(p.k) + seq.k_offset(p.k_batch_stride, p.k_row_stride) +
               kv_head * p.k_head_stride;
  const T* v = static_cast<const T*>(p.v) + seq.k_offset(p.v_batch_stride, p.v_row_stride) +
               kv_head * p.v_head_stride;

  // Keys any row of the CTA sees, and keys every row sees (both window bounds grow with the
  // row): tiles outside the first are skipped, tiles inside the second need no element mask.
  const int last_row = min(row0 + kBlockM, seq.len_q) - 1;
  const KeyRange first_keys = visible_keys(row0, seq.len_q, seq.len_k, p.window_left,
                                           p.window_right);
  const KeyRange last_keys = visible_keys(last_row, seq.len_q, seq.len_k, p.window_left,
                                          p.window_right);
  const int keys_begin = first_keys.begin;
  const int keys_end = last_keys.end;
  const int interior_begin = last_keys.begin;
  const int interior_end = first_keys.end;
  const int num_tiles = keys_end > keys_begin ? (keys_end - keys_begin + kBlockN - 1) / kBlockN : 0;

  // Query row of this lane's accumulator row r (group, group + 8 of the warp's tile).
  auto query_row = [&](int r) { return row0 + warp * kMmaM + group + r * 8; };

  // Issues the loads of K/V tile `tile` into `stage`; rows past the sequence are zero-filled.
  auto load_kv = [&](int tile, int stage) {
    const int n0 = keys_begin + tile * kBlockN;
    load_tile_async<T, kBlockN, kHeadDim, Tr::kThreads>(sK(stage), k + n0 * p.k_row_stride,
                                                        p.k_row_stride, seq.len_k - n0,
                                                        p.head_dim);
    load_tile_async<T, kBlockN, kHeadDim, Tr::kThreads>(sV(stage), v + n0 * p.v_row_stride,
                                                        p.v_row_stride, seq.len_k - n0,
                                                        p.head_dim);
  };

  // Prologue: Q and tile 0 in group 0, tile 1 in group 1 (groups may be empty).
  load_tile_async<T, kBlockM, kHeadDim, Tr::kThreads>(sQ, q, p.q_row_stride, seq.len_q - row0,
                                                      p.head_dim);
  for (int tile = 0; tile < kStages; ++tile) {
    if (tile < num_tiles) {
      load_kv(tile, tile);
    }
    cp_async_commit_group();
  }

  OnlineSoftmax softmax[2];
  float acc[Tr::kOutBlocks][kMmaCRegs] = {};  // O: 16 x kHeadDim per warp, fp32

  // Each lane's fixed place in the tiles its ldmatrix loads start from (see the loads below).
  const typename QTile::Cursor q_cursor = QTile::cursor(warp * kMmaM + lane % 16, lane / 16);
  const typename KVTile::Cursor k_cursor =
      KVTile::cursor((lane / 16) * kMmaN + lane % 8, (lane / 8) % 2);
  const typename KVTile::Cursor v_cursor = KVTile::cursor(lane % 16, lane / 16);
  const float scale_log2 = p.scale_log2;
  const float softcap = p.softcap;

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int stage = tile % kStages;
    const int n0 = keys_begin + tile * kBlockN;
    cp_async_wait_group<kStages - 1>();  // this tile's group has landed; the next may be flying
    __syncthreads();

    // S = Q K^T: [16 x kBlockN] per warp, as kScoreBlocks n8 accumulators. Each k16 step loads
    // all its fragments before its mmas, so the loads' latency overlaps.
    float s[Tr::kScoreBlocks][kMmaCRegs] = {};
    #pragma unroll
    for (int k16 = 0; k16 < kHeadDim / kMmaK; ++k16) {
      // A: Q rows warp*16 + lane%16, columns 16*k16 + 8*(lane/16).
      uint32_t a[kMmaARegs];
      ldmatrix_x4(a, sQ + q_cursor.at(0, 2 * k16));
      // B for two n8 blocks per ldmatrix: key rows 8*n8 + lane%8 (+8 for lanes 16-31), columns
      // 16*k16 + 8*((lane/8)%2); registers {0,1} feed block n8 and {2,3} block n8+1.
      uint32_t b[Tr::kScoreBlocks / 2][4];
      #pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; n8 += 2) {
        ldmatrix_x4(b[n8 / 2], sK(stage) + k_cursor.at(n8 * kMmaN, 2 * k16));
      }
      #pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; n8 += 2) {
        const uint32_t b0[kMmaBRegs] = {b[n8 / 2][0], b[n8 / 2][1]};
        const uint32_t b1[kMmaBRegs] = {b[n8 / 2][2], b[n8 / 2][3]};
        mma_m16n8k16<T>(s[n8], a, b0, s[n8]);
        mma_m16n8k16<T>(s[n8 + 1], a, b1, s[n8 + 1]);
      }
    }

    // Scale (and cap) S in base 2, one branch per tile rather than per element; mask it only
    // if the tile straddles a window boundary (the rows' windows are recomputed per such tile
    // rather than held in registers across the loop).
    if (softcap > 0.0f) {
#pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
#pragma unroll
        for (int i = 0; i < kMmaCRegs; ++i) {
          s[n8][i] = score_log2(s[n8][i], p.scale, scale_log2, softcap);
        }
      }
    } else {
#pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
#pragma unroll
        for (int i = 0; i < kMmaCRegs; ++i) {
          s[n8][i] *= scale_log2;
        }
      }
    }
    if (n0 < interior_begin || n0 + kBlockN > interior_end) {
      KeyRange row_keys[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        row_keys[r] =
            visible_keys(query_row(r), seq.len_q, seq.len_k, p.window_left, p.window_right);
      }
#pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
#pragma unroll
        for (int i = 0; i < kMmaCRegs; ++i) {
          const int r = i / 2;  // c[0], c[1]: row group; c[2], c[3]: row group + 8
          const int key = n0 + n8 * kMmaN + 2 * quad_lane + i % 2;
          if (key < row_keys[r].begin || key >= row_keys[r].end) {
            s[n8][i] = -INFINITY;
          }
        }
      }
    }
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
#pragma unroll
      for (int i = 0; i < kMmaCRegs; ++i) {
        tile_max[i / 2] = fmaxf(tile_max[i / 2], s[n8][i]);
      }
    }
    // Online softmax: P = 2^(S - max), O and the sums rescaled to the new max.
    #pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float correction = softmax[r].absorb_max(quad_max(tile_max[r]));
      #pragma unroll
      for (int d8 = 0; d8 < Tr::kOutBlocks; ++d8) {
        acc[d8][2 * r] *= correction;
        acc[d8][2 * r + 1] *= correction;
      }
    }
    #pragma unroll
    for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
      #pragma unroll
      for (int i = 0; i < kMmaCRegs; ++i) {
        const int r = i / 2;
        s[n8][i] = softmax[r].prob(s[n8][i]);
        softmax[r].sum += s[n8][i];
      }
    }

    // O += P V. Two n8 accumulator blocks of S are, element for element, the A fragment of one
    // k16 block of P (rows group/group+8, columns 2q, 2q+1 and 8+2q, 9+2q).
    #pragma unroll
    for (int k16 = 0; k16 < kBlockN / kMmaK; ++k16) {
      const float* lo = s[2 * k16];
      const float* hi = s[2 * k16 + 1];
      const uint32_t a[kMmaARegs] = {pack2<T>(lo[0], lo[1]), pack2<T>(lo[2], lo[3]),
                                     pack2<T>(hi[0], hi[1]), pack2<T>(hi[2], hi[3])};
      // B = V [keys 16*k16 + lane%16][columns 8*(d8 + lane/16)..], stored [key][d]: .trans;
      // registers {0,1} feed block d8 and {2,3} block d8+1. Loaded kVBatch pairs at a time.
      constexpr int kVBatch = Tr::kOutBlocks % 8 == 0 ? 4 : 2;
      static_assert(Tr::kOutBlocks % (2 * kVBatch) == 0, "V fragments come in whole batches");
      #pragma unroll
      for (int d8 = 0; d8 < Tr::kOutBlocks; d8 += 2 * kVBatch) {
        uint32_t b[kVBatch][4];
        #pragma unroll
        for (int j = 0; j < kVBatch; ++j) {
          ldmatrix_x4_trans(b[j], sV(stage) + v_cursor.at(k16 * kMmaK, d8 + 2 * j));
        }
        #pragma unroll
        for (int j = 0; j < kVBatch; ++j) {
          const uint32_t b0[kMmaBRegs] = {b[j][0], b[j][1]};
          const uint32_t b1[kMmaBRegs] = {b[j][2], b[j][3]};
          mma_m16n8k16<T>(acc[d8 + 2 * j], a, b0, acc[d8 + 2 * j]);
          mma_m16n8k16<T>(acc[d8 + 2 * j + 1], a, b1, acc[d8 + 2 * j + 1]);
        }
      }
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
    if (tile + kStages < num_tiles) {
      load_kv(tile + kStages, stage);
    }
    cp_async_commit_group();
  }
  // Nothing may still land in shared memory while O is staged there, and with no key tile the
  // loop's barriers never ordered the Q copies of other warps before this warp's writes.
  cp_async_wait_all();
  __syncthreads();

  // Epilogue: O /= sum into this warp's own rows of sQ (only this warp read them), then 16-byte
  // stores of whole rows; rows past the sequence and columns past head_dim are not written.
  #pragma unroll
  for (int r = 0; r < 2; ++r) {
    softmax[r].sum = quad_sum(softmax[r].sum);
    const float inv_sum = softmax[r].inv_sum();
    const int tile_row = warp * kMmaM + group + r * 8;
    #pragma unroll
    for (int d8 = 0; d8 < Tr::kOutBlocks; ++d8) {
      const uint32_t pair = pack2<T>(acc[d8][2 * r] * inv_sum, acc[d8][2 * r + 1] * inv_sum);
      unsigned char* chunk = static_cast<unsigned char*>(QTile::chunk_ptr(sQ, tile_row, d8));
      memcpy(chunk + 2 * quad_lane * sizeof(T), &pair, sizeof(pair));
    }
    if (p.maybe_lse != nullptr && quad_lane == 0 && query_row(r) < seq.len_q) {
      p.maybe_lse[seq.lse_offset(p, head, query_row(r))] = softmax[r].lse();
    }
  }
  __syncwarp();
  T* out = static_cast<T*>(p.out) + seq.q_offset(p.out_batch_stride, p.out_row_stride, row0) +
           head * p.out_head_stride;
  const int valid_chunks = p.head_dim / kChunkElems;
  for (int i = lane; i < kMmaM * QTile::kChunksPerRow; i += kWarpSize) {
    const int tile_row = warp * kMmaM + i / QTile::kChunksPerRow;
    const int chunk = i % QTile::kChunksPerRow;
    if (row0 + tile_row < seq.len_q && chunk < valid_chunks) {
      st_global_v4(out + tile_row * p.out_row_stride + chunk * kChunkElems,
                   ld_shared_v4(QTile::chunk_ptr(sQ, tile_row, chunk)));
    }
  }
}

}  // namespace flash_fwd

inline namespace CUATTN_BUILD_NAMESPACE {

template <typename T, int kHeadDim>
cuattn_status flash_fwd_launch(const cuattn_attention_params& p, void* stream) {
  using Tr = flash_fwd::Traits<kHeadDim>;
  const dim3 grid((p.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM, p.heads, p.batch);
  return launch_kernel("attention_flash", flash_fwd::flash_fwd_kernel<T, kHeadDim>, grid,
                       dim3(Tr::kThreads), Tr::kSmemBytes, stream, p);
}

}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
