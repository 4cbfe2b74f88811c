// attention_mma_simple: the second rung of the kernel ladder: attention_naive's inner products on
// tensor cores. One warp per 16 query rows; S = Q K^T and O += P V with mma.sync m16n8k16; Q, K
// and V tiles in swizzled shared memory, loaded with cp.async and read with ldmatrix; no
// pipelining (each K/V tile is waited for before it is used). Gained over naive: tensor cores,
// coalesced 16-byte loads, K/V read once per 64 query rows instead of once per row.
#include "arch/ldmatrix.cuh"
#include "arch/math.cuh"
#include "arch/mma.cuh"
#include "arch/vec.cuh"
#include "common/attention_launch.h"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/mask.cuh"
#include "common/smem_tile.cuh"
#include "common/softmax.cuh"
#include "common/status.h"
#include "cuattn_internal.h"

namespace {

using cuattn::kWarpSize;

using cuattn::kMmaCRegs;
using cuattn::kMmaK;
using cuattn::kMmaM;
using cuattn::kMmaN;

// Tile shapes for one head-dim tile.
template <int kHeadDim>
struct MmaSimpleTraits {
  static constexpr int kWarps = 4;                // 4 warps: 128 threads, a common CTA size
  static constexpr int kBlockM = kMmaM * kWarps;  // query rows per CTA, one m16 tile per warp
  static constexpr int kBlockN = 32;              // keys per K/V tile: 4 n8 blocks of S
  static constexpr int kThreads = kWarps * kWarpSize;
  using QTile = cuattn::SmemTile<kBlockM, kHeadDim>;   // sQ [kBlockM][kHeadDim]
  using KVTile = cuattn::SmemTile<kBlockN, kHeadDim>;  // sK, sV [kBlockN][kHeadDim]
  static constexpr int kSmemBytes = QTile::kBytes + 2 * KVTile::kBytes;
  static constexpr int kScoreBlocks = kBlockN / kMmaN;  // n8 blocks of S per warp
  static constexpr int kOutBlocks = kHeadDim / kMmaN;   // n8 blocks of O per warp
  static_assert(kHeadDim % kMmaK == 0, "head-dim tiles are whole k16 steps");
  static_assert(kBlockN % kMmaK == 0, "P V consumes the key tile in k16 steps");
};

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(MmaSimpleTraits<kHeadDim>::kThreads)
    attention_mma_simple_kernel(const cuattn_attention_params p) {
  using Traits = MmaSimpleTraits<kHeadDim>;
  using QTile = typename Traits::QTile;
  using KVTile = typename Traits::KVTile;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  CUATTN_DYNAMIC_SMEM(unsigned char, smem);
  unsigned char* sQ = smem;
  unsigned char* sK = sQ + QTile::kBytes;
  unsigned char* sV = sK + KVTile::kBytes;

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int group = lane / 4;  // accumulator rows group and group + 8 of the warp's m16 tile
  const int quad_lane = lane % 4;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int row0 = blockIdx.x * kBlockM;  // first query row of the CTA

  const cuattn::SequenceSpan seq = cuattn::sequence_span(p, batch);
  if (row0 >= seq.len_q) {
    return;  // the whole CTA leaves before any barrier
  }
  const cuattn::HeadSlices<T> slices = cuattn::head_slices<T>(p, seq, head, row0);
  const T* q = slices.q;
  const T* k = slices.k;
  const T* v = slices.v;

  // Keys the CTA needs: the union of its rows' windows.
  const cuattn::KeyRange cta = cuattn::cta_keys(p, seq, row0, kBlockM).any;
  const int keys_begin = cta.begin;
  const int keys_end = cta.end;

  // This lane's two accumulator rows (group, group + 8 of the warp's tile) and their windows.
  int rows[2];
  cuattn::KeyRange row_keys[2];
  for (int r = 0; r < 2; ++r) {
    rows[r] = row0 + warp * kMmaM + group + r * 8;
    row_keys[r] =
        cuattn::visible_keys(rows[r], seq.len_q, seq.len_k, p.window_left, p.window_right);
  }

  cuattn::load_tile_async<T, kBlockM, kHeadDim, Traits::kThreads>(sQ, q, p.q_row_stride,
                                                                  seq.len_q - row0, p.head_dim);
  cuattn::cp_async_commit_group();

  cuattn::OnlineSoftmax softmax[2];
  float acc[Traits::kOutBlocks][kMmaCRegs] = {};  // O: 16 x kHeadDim per warp, fp32

  const cuattn::ScoreMap score_map = cuattn::ScoreMap::of(p);
  for (int n0 = keys_begin; n0 < keys_end; n0 += kBlockN) {
    cuattn::load_tile_async<T, kBlockN, kHeadDim, Traits::kThreads>(
        sK, k + n0 * p.k_row_stride, p.k_row_stride, seq.len_k - n0, p.head_dim);
    cuattn::load_tile_async<T, kBlockN, kHeadDim, Traits::kThreads>(
        sV, v + n0 * p.v_row_stride, p.v_row_stride, seq.len_k - n0, p.head_dim);
    cuattn::cp_async_commit_group();
    cuattn::cp_async_wait_all();
    __syncthreads();

    // S = Q K^T: [16 x kBlockN] per warp, as kScoreBlocks n8 accumulators.
    float s[Traits::kScoreBlocks][kMmaCRegs] = {};
    for (int k16 = 0; k16 < kHeadDim / kMmaK; ++k16) {
      // A: Q rows warp*16 + lane%16, columns 16*k16 + 8*(lane/16) (ldmatrix x4: 4 8x8 blocks).
      uint32_t a[cuattn::kMmaARegs];
      cuattn::ldmatrix_x4(a, QTile::chunk_ptr(sQ, warp * kMmaM + lane % 16, 2 * k16 + lane / 16));
      for (int n8 = 0; n8 < Traits::kScoreBlocks; ++n8) {
        // B = K^T: key rows n8*8 + lane%8, columns 16*k16 + 8*((lane/8)%2).
        uint32_t b[cuattn::kMmaBRegs];
        cuattn::ldmatrix_x2(b,
                            KVTile::chunk_ptr(sK, n8 * kMmaN + lane % 8, 2 * k16 + (lane / 8) % 2));
        cuattn::mma_m16n8k16<T>(s[n8], a, b, s[n8]);
      }
    }

    // Scale, cap and mask S in base 2; the row max over the tile.
    float tile_max[2] = {-INFINITY, -INFINITY};
    for (int n8 = 0; n8 < Traits::kScoreBlocks; ++n8) {
      for (int i = 0; i < kMmaCRegs; ++i) {
        const int r = i / 2;  // c[0], c[1]: row group; c[2], c[3]: row group + 8
        const int key = n0 + n8 * kMmaN + 2 * quad_lane + i % 2;
        const bool visible = key >= row_keys[r].begin && key < row_keys[r].end;
        s[n8][i] = visible ? score_map(s[n8][i]) : -INFINITY;
        tile_max[r] = fmaxf(tile_max[r], s[n8][i]);
      }
    }
    // Online softmax: P = 2^(S - max), O and the sums rescaled to the new max.
    for (int r = 0; r < 2; ++r) {
      const float correction = softmax[r].absorb_max(cuattn::quad_max(tile_max[r]));
      for (int d8 = 0; d8 < Traits::kOutBlocks; ++d8) {
        acc[d8][2 * r] *= correction;
        acc[d8][2 * r + 1] *= correction;
      }
    }
    for (int n8 = 0; n8 < Traits::kScoreBlocks; ++n8) {
      for (int i = 0; i < kMmaCRegs; ++i) {
        const int r = i / 2;
        s[n8][i] = softmax[r].prob(s[n8][i]);
        softmax[r].sum += s[n8][i];
      }
    }

    // O += P V. The accumulators of two n8 blocks of S are, element for element, the A fragment
    // of one k16 block of P: rows group/group+8, columns 2q, 2q+1 and 8+2q, 9+2q.
    for (int k16 = 0; k16 < kBlockN / kMmaK; ++k16) {
      const float* lo = s[2 * k16];
      const float* hi = s[2 * k16 + 1];
      const uint32_t a[cuattn::kMmaARegs] = {
          cuattn::pack2<T>(lo[0], lo[1]), cuattn::pack2<T>(lo[2], lo[3]),
          cuattn::pack2<T>(hi[0], hi[1]), cuattn::pack2<T>(hi[2], hi[3])};
      for (int d8 = 0; d8 < Traits::kOutBlocks; ++d8) {
        // B = V [keys 16*k16 + lane%16][columns 8*d8..]: stored [key][d], so ldmatrix .trans.
        uint32_t b[cuattn::kMmaBRegs];
        cuattn::ldmatrix_x2_trans(b, KVTile::chunk_ptr(sV, k16 * kMmaK + lane % 16, d8));
        cuattn::mma_m16n8k16<T>(acc[d8], a, b, acc[d8]);
      }
    }
    __syncthreads();  // sK and sV are overwritten by the next tile
  }

  // O /= sum, written as pairs; rows past the sequence and columns past head_dim are not.
  T* out = slices.out;
  for (int r = 0; r < 2; ++r) {
    softmax[r].sum = cuattn::quad_sum(softmax[r].sum);
    const int row = rows[r] - row0;
    if (rows[r] >= seq.len_q) {
      continue;
    }
    const float inv_sum = softmax[r].inv_sum();
    for (int d8 = 0; d8 < Traits::kOutBlocks; ++d8) {
      const int col = d8 * kMmaN + 2 * quad_lane;
      if (col < p.head_dim) {
        const uint32_t pair =
            cuattn::pack2<T>(acc[d8][2 * r] * inv_sum, acc[d8][2 * r + 1] * inv_sum);
        memcpy(out + row * p.out_row_stride + col, &pair, sizeof(pair));
      }
    }
    if (p.maybe_lse != nullptr && quad_lane == 0) {
      p.maybe_lse[seq.lse_offset(p, head, rows[r])] = softmax[r].lse();
    }
  }
}

template <typename T, int kHeadDim>
cuattn_status launch(const cuattn_attention_params& p, void* stream) {
  using Traits = MmaSimpleTraits<kHeadDim>;
  const dim3 grid((p.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM, p.heads, p.batch);
  return cuattn::launch_kernel("attention_mma_simple", attention_mma_simple_kernel<T, kHeadDim>,
                               grid, dim3(Traits::kThreads), Traits::kSmemBytes, stream, p);
}

// The compiled head-dim tiles; a head dim runs in the smallest tile that holds it.
template <typename T>
cuattn_status dispatch_head_dim(const cuattn_attention_params& p, void* stream) {
  if (p.head_dim <= 64) return launch<T, 64>(p, stream);
  if (p.head_dim <= 96) return launch<T, 96>(p, stream);
  if (p.head_dim <= 128) return launch<T, 128>(p, stream);
  if (p.head_dim <= 192) return launch<T, 192>(p, stream);
  return launch<T, 256>(p, stream);
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(attention_mma_simple)(
    const cuattn_attention_params* params, void* stream) {
  return cuattn::checked_attention_launch("attention_mma_simple", params, [&](auto element) {
    return dispatch_head_dim<decltype(element)>(*params, stream);
  });
}
