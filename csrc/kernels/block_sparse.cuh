// block_sparse.cuh: block-sparse attention, whose key loop walks only the key blocks a block mask
// lists for the CTA's query block. Included by one translation unit per head-dim tile
// (block_sparse_hd<tile>.cu), so the CUDA build compiles them in parallel.
//
// One CTA per (slab of rows of one query block, query head, batch): every row of a CTA shares
// its query block's lists, so the CTA reads each listed K/V row once for all of them (a query
// block of more rows than a CTA holds takes several CTAs, and K/V is read once per CTA, as the
// dense kernel reads it once per query tile). The listed key blocks, full ones first, then
// partial ones, form the CTA's key sequence, which streams through the gathered-rows machinery
// of paged attention (key_warps.cuh): each key row's position is looked up from the lists into
// shared memory a tile ahead of its copies, and the rows are gathered by cp.async.
//
// Block and tile sizes are independent: block sizes are any multiple of 16, the kernel's key
// tiles 64 keys (32 from head dim 192). A tile may hold several small key blocks (block_k 16:
// four a tile) and a large block may take several tiles, so no compute is spent on keys a list
// leaves out and no key row is read twice; the price is a per-row lookup (one int a key, from
// tables that stay in L1). A tile, or a key warp's part of it, that holds only keys of full
// blocks runs no mask arithmetic; one that holds a partial block's keys, or keys past the
// sequence (a block cut by its end, the padding after the last block), masks each score by the
// element rule and the key's position. A CTA whose lists are empty loads nothing and writes
// zeros and LSE -inf.
#pragma once

#include <cstdint>
#include <type_traits>  // std::integral_constant

#include "arch/cp_async.cuh"
#include "arch/math.cuh"
#include "arch/vec.cuh"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/mask.cuh"
#include "common/smem_tile.cuh"
#include "cuattn_internal.h"
#include "kernels/block_sparse_launch.h"
#include "kernels/key_warps.cuh"

namespace cuattn {
namespace block_sparse {

// The tile table (KeyWarpTraits), plus, per slot, each key row of a tile's position in the
// sequence (-1: none, zero-filled) and one bit a key row that says the element mask must run
// there. Three slots: a tile's positions are read by the mask while the next tile's drive its
// copies and the one after is looked up, so no barrier guards their reuse.
template <int kHeadDim, int kRowWarps>
struct Traits : KeyWarpTraits<kHeadDim, kRowWarps> {
  using Base = KeyWarpTraits<kHeadDim, kRowWarps>;
  static constexpr int kMaskWords = (Base::kBlockN + kWarpSize - 1) / kWarpSize;
  static constexpr int kSlots = Base::kStages + 1;
  static constexpr int kPositionBytes = kSlots * Base::kBlockN * 4;
  static constexpr int kMaskBytes = kSlots * kMaskWords * 4;
  static constexpr int kSmemBytes = Base::kTablesOffset + kPositionBytes + kMaskBytes;
  static_assert(Base::kWarpKeys <= kWarpSize || Base::kWarpKeys % kWarpSize == 0,
                "a warp's keys lie in one mask word, or are whole words");
  // CTAs an SM ptxas budgets registers for: one of eight warps (up to 255 registers a lane);
  // at hd64 four of four warps (128 registers) for 16- and 32-row tiles and three for 64 rows
  // (which spilled a few bytes at 128); two up to hd128; from hd192 one.
  static constexpr int kMinBlocksPerSm = Base::kWarps >= 8 ? 1
                                         : kHeadDim <= 64  ? (kRowWarps == 4 ? 3 : 4)
                                         : kHeadDim <= 128 ? 2
                                                           : 1;
};

// What thread 0 works out once and parks in shared memory.
struct CtaPlan {
  const void* q;  // the CTA's first query row, of its head
  const void* k;  // the sequence's first key row, of the head's KV head
  const void* v;
  void* out;   // the CTA's first output row
  float* lse;  // the CTA's first LSE, null when not asked
  int rows;    // the CTA's rows in its block and the sequence
  int len_q;   // the sequence's lengths
  int len_k;
  int full;  // full key blocks listed
  int keys;  // listed key rows: (full + partial) * block_k
  const int32_t* full_indices;
  const int32_t* partial_indices;
};

template <typename T, int kHeadDim, int kRowWarps>
__global__ void __launch_bounds__(Traits<kHeadDim, kRowWarps>::kThreads,
                                  Traits<kHeadDim, kRowWarps>::kMinBlocksPerSm)
    block_sparse_kernel(const cuattn_attention_params p, const cuattn_block_mask m) {
  using Tr = Traits<kHeadDim, kRowWarps>;
  using KVTile = typename Tr::KVTile;
  constexpr int kBlockM = Tr::kBlockM;
  constexpr int kBlockN = Tr::kBlockN;
  constexpr int kStages = Tr::kStages;
  CUATTN_DYNAMIC_SMEM(unsigned char, smem);
  unsigned char* sQ = smem;
  unsigned char* sKV = sQ + Tr::QTile::kBytes;  // [stage][K, V] tiles
  auto sK = [&](int stage) { return sKV + (2 * stage) * KVTile::kBytes; };
  auto sV = [&](int stage) { return sKV + (2 * stage + 1) * KVTile::kBytes; };
  // Tile t's key positions and mask bits live in slot t % kSlots.
  int32_t* sPositions = reinterpret_cast<int32_t*>(smem + Tr::kTablesOffset);  // [slot][key]
  uint32_t* sMaskBits = reinterpret_cast<uint32_t*>(sPositions + Tr::kSlots * kBlockN);
  auto positions = [&](int tile) { return sPositions + (tile % Tr::kSlots) * kBlockN; };
  auto mask_bits = [&](int tile) { return sMaskBits + (tile % Tr::kSlots) * Tr::kMaskWords; };

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int group_row = lane / 4;  // accumulator rows group_row and group_row + 8
  const int quad_lane = lane % 4;
  const int row_warp = warp % kRowWarps;  // the warp's 16 rows of the CTA's
  const int key_warp = warp / kRowWarps;  // and its keys of each tile
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  // The CTA's query block and its slab of it; the last query block first, since under a causal
  // mask later blocks list more keys.
  const int slabs = (m.block_q + kBlockM - 1) / kBlockM;
  const int x = static_cast<int>(gridDim.x - 1 - blockIdx.x);
  const int q_block = x / slabs;
  const int row0 = q_block * m.block_q + (x % slabs) * kBlockM;  // in the sequence

  __shared__ CtaPlan cta;
  if (threadIdx.x == 0) {
    const SequenceSpan seq = sequence_span(p, batch);
    const HeadSlices<T> slices = head_slices<T>(p, seq, head, row0);
    cta.q = slices.q;
    cta.k = slices.k;
    cta.v = slices.v;
    cta.out = slices.out;
    cta.lse = p.maybe_lse == nullptr ? nullptr : p.maybe_lse + seq.lse_offset(p, head, row0);
    cta.rows = max(0, min(min(kBlockM, (q_block + 1) * m.block_q - row0), seq.len_q - row0));
    cta.len_q = seq.len_q;
    cta.len_k = seq.len_k;
    // The query block's lists (a mask of batch or heads 1 serves them all), counts clipped.
    const int64_t list =
        (int64_t{m.batch == 1 ? 0 : batch} * m.heads + (m.heads == 1 ? 0 : head)) * m.num_q_blocks +
        q_block;
    auto clip_count = [&](int32_t count) { return max(0, min(count, m.num_k_blocks)); };
    const int full = cta.rows > 0 ? clip_count(m.full_counts[list]) : 0;
    const int partial = cta.rows > 0 ? clip_count(m.partial_counts[list]) : 0;
    cta.full = full;
    cta.keys = (full + partial) * m.block_k;
    cta.full_indices = m.full_indices + list * m.num_k_blocks;
    cta.partial_indices = m.partial_indices + list * m.num_k_blocks;
  }
  __syncthreads();
  const int rows = cta.rows;
  if (rows == 0) {
    return;  // the whole CTA leaves (past a shorter sequence, or a block's last slab past it)
  }
  const int num_tiles = (cta.keys + kBlockN - 1) / kBlockN;
  const T* k_base = static_cast<const T*>(cta.k);
  const T* v_base = static_cast<const T*>(cta.v);

  // Looks up the positions of tile `tile`'s key rows (threads 0 .. kBlockN - 1, a row each), and
  // which need the element mask: a partial block's keys, and rows that are no key (past the
  // lists, past the sequence, or an index outside the block grid).
  auto look_up_keys = [&](int tile) {
    if (threadIdx.x < kBlockN) {
      const int slot = tile * kBlockN + static_cast<int>(threadIdx.x);  // in the CTA's keys
      int position = -1;
      bool partial = true;
      if (slot < cta.keys) {
        const int listed = slot / m.block_k;
        partial = listed >= cta.full;
        const int32_t block =
            partial ? cta.partial_indices[listed - cta.full] : cta.full_indices[listed];
        const int key = block * m.block_k + (slot - listed * m.block_k);
        if (block >= 0 && block < m.num_k_blocks && key < cta.len_k) {
          position = key;
        }
      }
      positions(tile)[threadIdx.x] = position;
      const uint32_t bits = __ballot_sync(kMathFullMask, partial || position < 0);
      if (lane == 0) {
        mask_bits(tile)[threadIdx.x / kWarpSize] = bits;
      }
    }
  };
  // Issues the copies of tile `tile`'s K and V rows into its stage.
  auto load_kv = [&](int tile) {
    const int stage = tile % kStages;
    const TileLoader<T, kBlockN, kHeadDim, Tr::kThreads> loader;
    const int32_t* keys = positions(tile);
    loader.gather(
        sK(stage),
        [&](int r) { return keys[r] < 0 ? nullptr : k_base + int64_t{keys[r]} * p.k_row_stride; },
        p.head_dim, k_base);
    loader.gather(
        sV(stage),
        [&](int r) { return keys[r] < 0 ? nullptr : v_base + int64_t{keys[r]} * p.v_row_stride; },
        p.head_dim, v_base);
  };
  // Whether the warp's keys of tile `tile` need the element mask.
  auto warp_needs_mask = [&](int tile) {
    const uint32_t* bits = mask_bits(tile);
    const int first = key_warp * Tr::kWarpKeys;
    if constexpr (Tr::kWarpKeys >= kWarpSize) {
      uint32_t any = 0;
#pragma unroll
      for (int w = 0; w < Tr::kWarpKeys / kWarpSize; ++w) {
        any |= bits[first / kWarpSize + w];
      }
      return any != 0;
    } else {
      const uint32_t ours = (1u << Tr::kWarpKeys) - 1u;
      return ((bits[first / kWarpSize] >> (first % kWarpSize)) & ours) != 0;
    }
  };

  // Prologue: the keys of tiles 0 .. kStages - 1, then Q and tile 0 in group 0 (tiles 1 ..
  // kStages - 2 one group each). Tile t's rows live in stage t % kStages. With no key listed
  // nothing is loaded.
  for (int tile = 0; tile < kStages && tile < num_tiles; ++tile) {
    look_up_keys(tile);
  }
  __syncthreads();
  if (num_tiles > 0) {
    load_tile_async<T, kBlockM, kHeadDim, Tr::kThreads>(sQ, static_cast<const T*>(cta.q),
                                                        p.q_row_stride, rows, p.head_dim);
  }
  for (int tile = 0; tile < kStages - 1; ++tile) {
    if (tile < num_tiles) {
      load_kv(tile);
    }
    cp_async_commit_group();
  }

  // The lane's two rows' visible keys under the element rule (rows past the CTA's see none).
  const bool warp_has_rows = row_warp * kMmaM < rows;
  KeyRange lane_keys[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_warp * kMmaM + group_row + 8 * r;
    lane_keys[r] =
        row < rows ? visible_keys(row0 + row, cta.len_q, cta.len_k, p.window_left, p.window_right)
                   : KeyRange{0, 0};
  }

  KeyWarp<T, Tr> math(row_warp, key_warp, lane);
  const float cap_scale = p.softcap > 0.0f ? p.scale / p.softcap : 0.0f;
  const float cap_log2 = p.softcap > 0.0f ? p.softcap * kLog2e : 0.0f;
  const float scale_log2 = p.scale * kLog2e;
  for (int tile = 0; tile < num_tiles; ++tile) {
    const int stage = tile % kStages;
    // This tile has landed, and past the barrier every warp is done with the previous one, whose
    // stage takes tile + kStages - 1 (its keys looked up a tile ago), and with the slot of the
    // tile before, which takes the keys of tile + kStages.
    cp_async_wait_group<kStages - 2>();
    __syncthreads();
    if (tile + kStages - 1 < num_tiles) {
      load_kv(tile + kStages - 1);
    }
    cp_async_commit_group();
    if (tile + kStages < num_tiles) {
      look_up_keys(tile + kStages);
    }
    if (!warp_has_rows) {
      continue;
    }
    const bool masked = warp_needs_mask(tile);
    const int* keys = positions(tile) + key_warp * Tr::kWarpKeys;
    int key_of[Tr::kScoreBlocks][2];
    if (masked) {
#pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          key_of[n8][j] = keys[n8 * kMmaN + 2 * quad_lane + j];
        }
      }
    }
    typename KeyWarp<T, Tr>::Scores s;
    math.scores(s, sQ, sK(stage), scale_log2, cap_scale, cap_log2);
    if (masked) {
      math.mask(s, quad_lane, [&](int r, int col) {
        const int key = key_of[col / kMmaN][col % 2];
        return key >= lane_keys[r].begin && key < lane_keys[r].end;
      });
    }
    math.absorb(s);
    math.accumulate(s, sV(stage));
  }
  // Nothing may still land in shared memory that the epilogue reuses, and every warp is done
  // with the last tile.
  cp_async_wait_all();
  __syncthreads();

  // Epilogue: each warp stages its O, maxes and sums; the CTA's threads merge each row's key
  // warps by LSE and write it in 16-byte stores.
  math.stage(sKV, warp, lane);
  __syncthreads();
  T* out = static_cast<T*>(cta.out);
  const int chunks = p.head_dim / kChunkElems;
  for (int i = threadIdx.x; i < rows * chunks; i += Tr::kThreads) {
    const int r = i / chunks;
    const int chunk = i - r * chunks;
    const MergedChunk<Tr> merged = merge_key_warps<Tr>(sKV, r, chunk);
    st_global_v4(out + r * p.out_row_stride + chunk * kChunkElems, pack_chunk<T>(merged));
    if (chunk == 0 && cta.lse != nullptr) {
      cta.lse[r] = merged.lse;
    }
  }
}

}  // namespace block_sparse

inline namespace CUATTN_BUILD_NAMESPACE {

// Rows a CTA of a launch holds, as row warps: the fewest 16-row warps that hold a query block,
// up to 64 rows (128 at head-dim tile 64, where eight warps of 16 rows fit two stages of 64-key
// tiles and the staged O in 100 KiB; from tile 96 128 rows would pass sm_86/89's 99 KiB), and
// from tile 192 at least 32 (two key warps: a 32-key tile gives four warps 8 keys, less than a
// k16 block). Fewer CTAs a query block read its keys fewer times; rows past the block are whole
// warps that skip the math.
template <int kHeadDim>
int block_sparse_row_warps(const cuattn_block_mask& m) {
  const int max_row_warps = kHeadDim <= 64 ? 8 : 4;
  const int min_row_warps = kHeadDim <= 128 ? 1 : 2;
  int row_warps = min_row_warps;
  while (row_warps < max_row_warps && row_warps * kMmaM < m.block_q) {
    row_warps *= 2;
  }
  return row_warps;
}

// f(std::integral_constant<int, row warps>{}) for the tile a launch with mask m runs.
template <int kHeadDim, typename F>
cuattn_status with_block_sparse_tile(const cuattn_block_mask& m, F&& f) {
  switch (block_sparse_row_warps<kHeadDim>(m)) {
    case 1:
      if constexpr (kHeadDim <= 128) {
        return f(std::integral_constant<int, 1>{});
      }
      break;
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 8:
      if constexpr (kHeadDim <= 64) {
        return f(std::integral_constant<int, 8>{});
      }
      break;
    default:
      break;
  }
  return f(std::integral_constant<int, 4>{});
}

template <int kHeadDim>
cuattn_status block_sparse_plan_tile(const cuattn_attention_params& p, const cuattn_block_mask& m,
                                     cuattn_block_sparse_plan* plan) {
  return with_block_sparse_tile<kHeadDim>(m, [&](auto row_warps) {
    using Tr = block_sparse::Traits<kHeadDim, decltype(row_warps)::value>;
    plan->block_rows = Tr::kBlockM;
    plan->block_keys = Tr::kBlockN;
    plan->threads = Tr::kThreads;
    plan->smem_bytes = Tr::kSmemBytes;
    plan->grid_x = m.num_q_blocks * ((m.block_q + Tr::kBlockM - 1) / Tr::kBlockM);
    plan->grid_y = p.heads;
    plan->grid_z = p.batch;
    return CUATTN_OK;
  });
}

template <typename T, int kHeadDim>
cuattn_status block_sparse_launch(const cuattn_attention_params& p, const cuattn_block_mask& m,
                                  void* stream) {
  return with_block_sparse_tile<kHeadDim>(m, [&](auto row_warps) {
    constexpr int kRowWarps = decltype(row_warps)::value;
    using Tr = block_sparse::Traits<kHeadDim, kRowWarps>;
    const int64_t slabs = (m.block_q + Tr::kBlockM - 1) / Tr::kBlockM;
    const dim3 grid(static_cast<unsigned>(m.num_q_blocks * slabs), static_cast<unsigned>(p.heads),
                    static_cast<unsigned>(p.batch));
    return launch_kernel("block_sparse_attention",
                         block_sparse::block_sparse_kernel<T, kHeadDim, kRowWarps>, grid,
                         dim3(Tr::kThreads), Tr::kSmemBytes, stream, p, m);
  });
}

}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
