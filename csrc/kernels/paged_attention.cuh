// paged_attention.cuh: attention of new tokens over a paged KV cache (decode, speculative
// verification, chunked prefill), one kernel for every q_len. Included by one translation unit
// per head-dim tile (paged_attention_hd<tile>.cu), so the CUDA build compiles them in parallel.
//
// One CTA per (block of packed query rows, KV head and split, sequence). The q_len new tokens of
// a sequence times the group's heads / kv_heads query heads form its packed rows (row r: token
// r / group, head kv_head * group + r % group), so every K/V row a CTA loads serves the whole
// group: the cache is read once per KV head (FlashInfer packs decode's GQA group likewise). The
// CTA's four warps split its rows in m16 tiles and, where rows are fewer than 64, the keys of each
// tile (decode: 16 rows, four warps on 16 keys each of a 64-key tile), each warp then holding its
// own online softmax over its keys, merged through shared memory at the end. Key tiles stream
// through a two-stage cp.async pipeline into swizzled shared memory, their rows gathered from the
// pages the block table names: a tile's page lookups (one per key row, so any page size) go into
// shared memory one tile ahead of its copies. S = Q K^T and O += P V on mma.sync as in flash_fwd;
// masked tiles are not loaded, and the element mask runs on boundary tiles only. With split-KV
// each CTA covers one range of keys and writes its partial output and LSE in fp32 to the
// workspace, which paged_attention's merge kernel combines.
#pragma once

#include <cstdint>
#include <type_traits>  // std::integral_constant

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
#include "cuattn_internal.h"
#include "kernels/key_warps.cuh"
#include "kernels/paged_attention_launch.h"

namespace cuattn {
namespace paged {

// The tile table (KeyWarpTraits): kRowWarps warps on the rows (16 rows each), the other warps on
// the keys of each tile. Decode is bound by the bytes it reads, so the rows are the fewest that
// hold the packed group (a launch picks 16, 32 or 64 rows by q_len * group: paged_row_warps).
// After the K/V stages: each stage's key rows as element offsets into the K and V pools (-1:
// zero-filled).
template <int kHeadDim, int kRowWarps>
struct Traits : KeyWarpTraits<kHeadDim, kRowWarps> {
  using Base = KeyWarpTraits<kHeadDim, kRowWarps>;
  static_assert(kRowWarps <= 4, "16, 32 or 64 packed rows a CTA");
  static constexpr int kOffsetBytes = Base::kStages * 2 * Base::kBlockN * 8;
  static constexpr int kSmemBytes = Base::kTablesOffset + kOffsetBytes;
  // CTAs an SM ptxas budgets registers for: decode streams the cache, so up to hd128 several
  // CTAs an SM keep loads in flight (4: 128 registers a lane, which hd64's 16- and 32-row tiles
  // need; 3: 170, which hd96 and hd128's 16- and 32-row tiles need); the 64-row tile serves
  // prefill-sized row counts, where the mmas rather than the loads in flight bound the loop,
  // and takes one CTA less (it spilled a few bytes at 128 and 168 registers); from hd192 O alone
  // takes 96-128 registers, and ptxas's own budget spilled on sm_80, so one (255).
  static constexpr int kMinBlocksPerSm = (kHeadDim <= 64    ? 4
                                          : kHeadDim <= 128 ? 3
                                                            : 1) -
                                         (kRowWarps == 4 && kHeadDim <= 128 ? 1 : 0);
};

// Keys [begin, end) of a sequence that a split of the CTA covers, and what rows see.
struct Span {
  int begin;
  int end;
};

__device__ __forceinline__ Span intersect(KeyRange r, Span s) {
  const int begin = max(r.begin, s.begin);
  const int end = min(r.end, s.end);
  return Span{begin, max(begin, end)};
}

// The packed rows of one (sequence, KV head): row r is new token r / group of query head
// kv_head * group + r % group. Worked out once by thread 0 and parked in shared memory.
struct CtaPlan {
  int q_begin;           // the sequence's first row in q
  int q_len;             // its new tokens
  int seq_len;           // its cached tokens
  int rows;              // q_len * group
  Span keys;             // the keys the split covers (before masks)
  Span any;              // keys some row of the CTA sees: tiles outside are never loaded
  const int32_t* pages;  // the sequence's row of the block table
};

template <typename T, int kHeadDim, int kRowWarps>
__global__ void __launch_bounds__(Traits<kHeadDim, kRowWarps>::kThreads,
                                  Traits<kHeadDim, kRowWarps>::kMinBlocksPerSm)
    paged_attention_kernel(const cuattn_paged_attention_params p) {
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
  // [stage][K, V][key row]: element offsets in the pools.
  int64_t* sOffsets = reinterpret_cast<int64_t*>(smem + Tr::kTablesOffset);
  auto offsets = [&](int stage, int part) { return sOffsets + (2 * stage + part) * kBlockN; };

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int group_row = lane / 4;  // accumulator rows group_row and group_row + 8
  const int quad_lane = lane % 4;
  const int row_warp = warp % kRowWarps;  // the warp's 16 rows of the CTA's
  const int key_warp = warp / kRowWarps;  // and its keys of each tile
  const cuattn_paged_kv_view& kv = p.kv;
  const int group = p.heads / kv.kv_heads;
  const int kv_head = blockIdx.y % kv.kv_heads;
  const int split = blockIdx.y / kv.kv_heads;
  const int batch = blockIdx.z;
  // The last block of rows first: under a causal mask later tokens see more keys.
  const int row0 = static_cast<int>(gridDim.x - 1 - blockIdx.x) * kBlockM;

  __shared__ CtaPlan cta;
  if (threadIdx.x == 0) {
    // Rows stay within q's total_q whatever the tables say (kernel-side bounds).
    auto clip_row = [&](int32_t row) { return max(0, min(row, p.total_q)); };
    cta.q_begin = clip_row(p.cu_seqlens_q[batch]);
    cta.q_len = max(0, clip_row(p.cu_seqlens_q[batch + 1]) - cta.q_begin);
    cta.seq_len = kv.seq_lens[batch];
    cta.rows = cta.q_len * group;
    // The keys any new token sees start at the first one's window (or kv_start); splits cut
    // them from there, so that a windowed decode's splits all hold keys.
    const int first_key =
        max(min(p.kv_start, cta.seq_len),
            visible_keys(0, cta.q_len, cta.seq_len, p.window_left, p.window_right).begin);
    Span keys{first_key, cta.seq_len};
    if (p.num_splits > 1) {
      const int64_t begin = static_cast<int64_t>(first_key) + int64_t{split} * p.split_tokens;
      const int64_t end = begin + p.split_tokens;
      auto clip = [&](int64_t key) {
        return static_cast<int>(key < cta.seq_len ? key : int64_t{cta.seq_len});
      };
      keys = Span{clip(begin), clip(end)};
    }
    cta.keys = keys;
    const int last_row = min(row0 + kBlockM, cta.rows) - 1;
    const KeyRange first =
        visible_keys(row0 / group, cta.q_len, cta.seq_len, p.window_left, p.window_right);
    const KeyRange last =
        visible_keys(last_row / group, cta.q_len, cta.seq_len, p.window_left, p.window_right);
    cta.any = intersect(KeyRange{first.begin, last.end}, keys);
    cta.pages = kv.block_table + batch * kv.block_table_stride;
  }
  __syncthreads();
  const int rows = cta.rows;
  if (row0 >= rows) {
    return;  // the whole CTA leaves (a sequence with fewer new tokens than the batch's most)
  }
  const int keys_begin = cta.any.begin;
  const int num_tiles = (cta.any.end - keys_begin + kBlockN - 1) / kBlockN;

  // Looks up the pages of tile `tile`'s key rows into the offsets of `stage` (threads 0 ..
  // kBlockN - 1, a row each): keys past the CTA's range, and pages outside the pools, are -1.
  auto look_up_pages = [&](int tile, int stage) {
    if (threadIdx.x < kBlockN) {
      const int key = keys_begin + tile * kBlockN + static_cast<int>(threadIdx.x);
      int64_t k_offset = -1;
      int64_t v_offset = -1;
      if (key < cta.any.end) {
        const int page = cta.pages[key / kv.page_size];
        const int slot = key % kv.page_size;
        if (page >= 0 && page < kv.num_pages) {
          k_offset = page * kv.k_page_stride + slot * kv.k_slot_stride + kv_head * kv.k_head_stride;
          v_offset = page * kv.v_page_stride + slot * kv.v_slot_stride + kv_head * kv.v_head_stride;
        }
      }
      offsets(stage, 0)[threadIdx.x] = k_offset;
      offsets(stage, 1)[threadIdx.x] = v_offset;
    }
  };
  // Issues the copies of tile `tile`'s K and V rows into `stage`, from the offsets looked up.
  const T* k_pool = static_cast<const T*>(kv.k_pages);
  const T* v_pool = static_cast<const T*>(kv.v_pages);
  auto load_kv = [&](int stage) {
    const TileLoader<T, kBlockN, kHeadDim, Tr::kThreads> loader;
    const int64_t* k_rows = offsets(stage, 0);
    const int64_t* v_rows = offsets(stage, 1);
    loader.gather(
        sK(stage), [&](int r) { return k_rows[r] < 0 ? nullptr : k_pool + k_rows[r]; }, kv.head_dim,
        k_pool);
    loader.gather(
        sV(stage), [&](int r) { return v_rows[r] < 0 ? nullptr : v_pool + v_rows[r]; }, kv.head_dim,
        v_pool);
  };

  // Prologue: the pages of tiles 0 .. kStages - 1, then Q and tile 0 in group 0 (tiles 1 ..
  // kStages - 2 one group each). Tile t's offsets and rows live in stage t % kStages.
  for (int tile = 0; tile < kStages && tile < num_tiles; ++tile) {
    look_up_pages(tile, tile);
  }
  __syncthreads();
  const T* q = static_cast<const T*>(p.q);
  TileLoader<T, kBlockM, kHeadDim, Tr::kThreads>().gather(
      sQ,
      [&](int r) -> const T* {
        const int row = row0 + r;
        if (row >= rows) {
          return nullptr;
        }
        const int token = row / group;
        const int head = kv_head * group + (row - token * group);
        return q + (cta.q_begin + token) * p.q_row_stride + head * p.q_head_stride;
      },
      kv.head_dim, q);
  for (int tile = 0; tile < kStages - 1; ++tile) {
    if (tile < num_tiles) {
      load_kv(tile);
    }
    cp_async_commit_group();
  }

  // The warp's rows and the keys they see: rows past the CTA's see none. Tokens grow with the
  // row, and so do both ends of a token's visible keys: the first and last rows bound them.
  const int warp_row0 = row0 + row_warp * kMmaM;
  const bool warp_has_rows = warp_row0 < rows;
  Span warp_any{0, 0};
  Span warp_every{0, 0};
  if (warp_has_rows) {
    const int first_token = warp_row0 / group;
    const int last_token = (min(warp_row0 + kMmaM, rows) - 1) / group;
    const KeyRange first =
        visible_keys(first_token, cta.q_len, cta.seq_len, p.window_left, p.window_right);
    const KeyRange last =
        visible_keys(last_token, cta.q_len, cta.seq_len, p.window_left, p.window_right);
    warp_any = intersect(KeyRange{first.begin, last.end}, cta.keys);
    warp_every = intersect(KeyRange{last.begin, first.end}, cta.keys);
  }
  // The lane's two rows' visible keys.
  Span lane_keys[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = warp_row0 + group_row + 8 * r;
    lane_keys[r] = row < rows ? intersect(visible_keys(row / group, cta.q_len, cta.seq_len,
                                                       p.window_left, p.window_right),
                                          cta.keys)
                              : Span{0, 0};
  }

  KeyWarp<T, Tr> math(row_warp, key_warp, lane);
  const float cap_scale = p.softcap > 0.0f ? p.scale / p.softcap : 0.0f;
  const float cap_log2 = p.softcap > 0.0f ? p.softcap * kLog2e : 0.0f;
  const float scale_log2 = p.scale * kLog2e;
  for (int tile = 0; tile < num_tiles; ++tile) {
    const int stage = tile % kStages;
    // This tile has landed, and past the barrier every warp is done with the previous one, whose
    // stage takes tile + kStages - 1 (its pages looked up a tile ago); then the stage of this
    // tile, whose copies are issued, takes the pages of tile + kStages.
    cp_async_wait_group<kStages - 2>();
    __syncthreads();
    if (tile + kStages - 1 < num_tiles) {
      load_kv((tile + kStages - 1) % kStages);
    }
    cp_async_commit_group();
    if (tile + kStages < num_tiles) {
      look_up_pages(tile + kStages, stage);
    }

    // The warp's keys of this tile against its rows.
    const int n0 = keys_begin + tile * kBlockN + key_warp * Tr::kWarpKeys;
    if (!warp_has_rows || n0 >= warp_any.end || n0 + Tr::kWarpKeys <= warp_any.begin) {
      continue;
    }
    const bool boundary = n0 < warp_every.begin || n0 + Tr::kWarpKeys > warp_every.end;

    typename KeyWarp<T, Tr>::Scores s;
    math.scores(s, sQ, sK(stage), scale_log2, cap_scale, cap_log2);
    if (boundary) {
      math.mask(s, quad_lane, [&](int r, int col) {
        return n0 + col >= lane_keys[r].begin && n0 + col < lane_keys[r].end;
      });
    }
    math.absorb(s);
    math.accumulate(s, sV(stage));
  }
  // Nothing may still land in shared memory that the epilogue reuses, and every warp is done
  // with the last tile.
  cp_async_wait_all();
  __syncthreads();

  // Epilogue. Each warp stages its O, maxes and sums; then the CTA's threads combine the key
  // warps of each row by LSE and write the row: to out in T, or, split, to the workspace in fp32.
  math.stage(sKV, warp, lane);
  __syncthreads();

  const bool split_out = p.num_splits > 1;
  float* partial_o = static_cast<float*>(p.maybe_workspace);
  float* partial_lse = partial_o + int64_t{p.num_splits} * p.total_q * p.heads * kv.head_dim;
  const int chunks = kv.head_dim / kChunkElems;
  for (int i = threadIdx.x; i < kBlockM * chunks; i += Tr::kThreads) {
    const int r = i / chunks;  // the CTA's row
    const int chunk = i - r * chunks;
    const int row = row0 + r;
    if (row >= rows) {
      continue;
    }
    const MergedChunk<Tr> merged = merge_key_warps<Tr>(sKV, r, chunk);
    const int token = row / group;
    const int head = kv_head * group + (row - token * group);
    const int64_t q_row = cta.q_begin + token;
    if (split_out) {
      float* dst = partial_o +
                   ((int64_t{split} * p.total_q + q_row) * p.heads + head) * kv.head_dim +
                   chunk * kChunkElems;
#pragma unroll
      for (int e = 0; e < kChunkElems; e += 4) {
        *reinterpret_cast<float4*>(dst + e) =
            make_float4(merged.o[e], merged.o[e + 1], merged.o[e + 2], merged.o[e + 3]);
      }
      if (chunk == 0) {
        partial_lse[(int64_t{split} * p.total_q + q_row) * p.heads + head] = merged.lse;
      }
    } else {
      st_global_v4(static_cast<T*>(p.out) + q_row * p.out_row_stride + head * p.out_head_stride +
                       chunk * kChunkElems,
                   pack_chunk<T>(merged));
      if (chunk == 0 && p.maybe_lse != nullptr) {
        p.maybe_lse[q_row * p.heads + head] = merged.lse;
      }
    }
  }
}

}  // namespace paged

inline namespace CUATTN_BUILD_NAMESPACE {

// The tile (rows a CTA, as row warps) a launch of p runs: the fewest rows that hold a sequence's
// packed rows (q_len * group), 64 at most; from head dim 192 at least 32 (two key warps: a 32-key
// tile gives four warps 8 keys, less than a k16 block).
template <int kHeadDim>
int paged_row_warps(const cuattn_paged_attention_params& p) {
  const int64_t rows = int64_t{p.max_q_len} * (p.heads / p.kv.kv_heads);
  const int min_row_warps = kHeadDim <= 128 ? 1 : 2;
  const int row_warps = rows <= 16 ? 1 : rows <= 32 ? 2 : 4;
  return row_warps < min_row_warps ? min_row_warps : row_warps;
}

// f(std::integral_constant<int, row warps>{}) for the tile p runs in.
template <int kHeadDim, typename F>
cuattn_status with_paged_tile(const cuattn_paged_attention_params& p, F&& f) {
  switch (paged_row_warps<kHeadDim>(p)) {
    case 1:
      if constexpr (kHeadDim <= 128) {
        return f(std::integral_constant<int, 1>{});
      }
      break;
    case 2:
      return f(std::integral_constant<int, 2>{});
    default:
      break;
  }
  return f(std::integral_constant<int, 4>{});
}

template <int kHeadDim>
cuattn_status paged_attention_plan_tile(const cuattn_paged_attention_params& p,
                                        cuattn_paged_plan* plan) {
  return with_paged_tile<kHeadDim>(p, [&](auto row_warps) {
    using Tr = paged::Traits<kHeadDim, decltype(row_warps)::value>;
    const int64_t rows = int64_t{p.max_q_len} * (p.heads / p.kv.kv_heads);
    plan->block_rows = Tr::kBlockM;
    plan->block_keys = Tr::kBlockN;
    plan->threads = Tr::kThreads;
    plan->smem_bytes = Tr::kSmemBytes;
    plan->grid_x = static_cast<int32_t>((rows + Tr::kBlockM - 1) / Tr::kBlockM);
    plan->grid_z = p.kv.batch;
    return CUATTN_OK;
  });
}

template <typename T, int kHeadDim>
cuattn_status paged_attention_launch(const cuattn_paged_attention_params& p, void* stream) {
  return with_paged_tile<kHeadDim>(p, [&](auto row_warps) {
    constexpr int kRowWarps = decltype(row_warps)::value;
    using Tr = paged::Traits<kHeadDim, kRowWarps>;
    const int64_t rows = int64_t{p.max_q_len} * (p.heads / p.kv.kv_heads);
    const dim3 grid(static_cast<unsigned>((rows + Tr::kBlockM - 1) / Tr::kBlockM),
                    static_cast<unsigned>(p.kv.kv_heads * p.num_splits),
                    static_cast<unsigned>(p.kv.batch));
    return launch_kernel("paged_attention", paged::paged_attention_kernel<T, kHeadDim, kRowWarps>,
                         grid, dim3(Tr::kThreads), Tr::kSmemBytes, stream, p);
  });
}

}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
