// paged_attention.cu: the C launchers of attention over the paged cache (checks, the split-KV
// planner, dispatch on dtype and head-dim tile to paged_attention_hd<tile>.cu), and the merge
// kernels: split-KV's partial results into the output, and the public merge_states.
#include <cstdint>

#include "arch/math.cuh"
#include "arch/vec.cuh"
#include "common/cuda_compat.cuh"
#include "common/head_dim_tiles.h"
#include "common/launch.cuh"
#include "common/mask.cuh"
#include "common/smem_tile.cuh"
#include "common/status.h"
#include "cuattn_internal.h"
#include "kernels/paged_attention_launch.h"

namespace {

using cuattn::fail;
using cuattn::kChunkElems;
using cuattn::kVecBytes;

constexpr int kMaxHeadDim = 256;
constexpr int kHeadDimMultiple = 8;
// Keys a split covers come in whole tiles of the largest key tile.
constexpr int kSplitKeysMultiple = 64;
// The planner splits no finer than this many keys: below it, a split's fixed costs (its Q load,
// its partial's round trip) outweigh the parallelism.
constexpr int kMinSplitKeys = 256;
// The planner aims at this many CTAs an SM.
constexpr int kTargetCtasPerSm = 2;
constexpr int64_t kMaxGridYZ = 65535;
constexpr int kMergeWarps = 4;  // merge CTAs: a warp per (token, head)

bool aligned(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; }
bool whole_vectors(int64_t stride) { return stride % kChunkElems == 0; }

cuattn_status check_head_dim(const char* what, int head_dim) {
  if (head_dim <= 0 || head_dim % kHeadDimMultiple != 0 || head_dim > kMaxHeadDim) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: head_dim = %d, must be a multiple of %d in %d..=%d", what, head_dim,
                kHeadDimMultiple, kHeadDimMultiple, kMaxHeadDim);
  }
  return CUATTN_OK;
}

cuattn_status check_dtype(const char* what, cuattn_dtype dtype) {
  if (dtype != CUATTN_DTYPE_F16 && dtype != CUATTN_DTYPE_BF16) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: dtype = %d is not f16 (0) or bf16 (1)", what,
                static_cast<int>(dtype));
  }
  return CUATTN_OK;
}

// The shape fields the planner and the kernel's grid rely on.
cuattn_status check_shape(const char* what, const cuattn_paged_attention_params* params) {
  if (params == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: params is null", what);
  }
  const cuattn_paged_attention_params& p = *params;
  cuattn_status status = check_head_dim(what, p.kv.head_dim);
  if (status != CUATTN_OK) {
    return status;
  }
  status = check_dtype(what, p.kv.dtype);
  if (status != CUATTN_OK) {
    return status;
  }
  if (p.heads <= 0 || p.kv.kv_heads <= 0 || p.heads % p.kv.kv_heads != 0) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: heads = %d, kv_heads = %d: kv_heads must divide heads", what, p.heads,
                p.kv.kv_heads);
  }
  if (p.kv.batch < 0 || p.kv.batch > kMaxGridYZ || p.total_q < 0 || p.max_q_len < 0 ||
      p.max_seq_len < 0 || p.kv_start < 0) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: batch = %d (at most %lld), total_q = %d, max_q_len = %d, max_seq_len = %d, "
                "kv_start = %d: none negative",
                what, p.kv.batch, static_cast<long long>(kMaxGridYZ), p.total_q, p.max_q_len,
                p.max_seq_len, p.kv_start);
  }
  return CUATTN_OK;
}

// Everything the kernels' indexing relies on.
cuattn_status check_launch(const char* what, const cuattn_paged_attention_params* params) {
  cuattn_status status = check_shape(what, params);
  if (status != CUATTN_OK) {
    return status;
  }
  const cuattn_paged_attention_params& p = *params;
  const cuattn_paged_kv_view& kv = p.kv;
  if (kv.page_size <= 0 || kv.num_pages < 0 || kv.block_table_stride < 0) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: page_size = %d, num_pages = %d, block_table_stride = %lld: page_size "
                "positive, the others not negative",
                what, kv.page_size, kv.num_pages, static_cast<long long>(kv.block_table_stride));
  }
  if (p.num_splits < 1 || int64_t{p.num_splits} * kv.kv_heads > kMaxGridYZ ||
      (p.num_splits > 1 && (p.split_tokens <= 0 || p.split_tokens % kSplitKeysMultiple != 0 ||
                            p.maybe_workspace == nullptr || !aligned(p.maybe_workspace)))) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: num_splits = %d, split_tokens = %d, workspace %p: num_splits >= 1 with "
                "num_splits * kv_heads <= %lld, and split, split_tokens a positive multiple of "
                "%d and a 16-byte aligned workspace (cuattn_plan_paged_attention)",
                what, p.num_splits, p.split_tokens, p.maybe_workspace,
                static_cast<long long>(kMaxGridYZ), kSplitKeysMultiple);
  }
  if (p.q == nullptr || p.out == nullptr || p.cu_seqlens_q == nullptr || kv.k_pages == nullptr ||
      kv.v_pages == nullptr || kv.block_table == nullptr || kv.seq_lens == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: q, out, cu_seqlens_q, k_pages, v_pages, block_table and seq_lens must be set",
                what);
  }
  const bool rows_aligned = aligned(p.q) && aligned(p.out) && aligned(kv.k_pages) &&
                            aligned(kv.v_pages) && whole_vectors(p.q_row_stride) &&
                            whole_vectors(p.q_head_stride) && whole_vectors(p.out_row_stride) &&
                            whole_vectors(p.out_head_stride) && whole_vectors(kv.k_page_stride) &&
                            whole_vectors(kv.k_slot_stride) && whole_vectors(kv.k_head_stride) &&
                            whole_vectors(kv.v_page_stride) && whole_vectors(kv.v_slot_stride) &&
                            whole_vectors(kv.v_head_stride);
  if (!rows_aligned) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: q, out and the pools must be 16-byte aligned and every row, head, page and "
                "slot stride a multiple of %d elements",
                what, kChunkElems);
  }
  return CUATTN_OK;
}

// ---------------------------------------------------------------------------------------------
// Merging by LSE: a warp per (token, head), a lane per 8 columns.
// ---------------------------------------------------------------------------------------------

// Combines `n` states of one (token, head): lse_of(s) is state s's natural-log LSE, and
// load(s, chunk, o) adds weight times chunk `chunk` of its output to o[8] (weight as given).
// Writes the chunks through store(chunk, o) and returns the merged LSE (every lane).
template <typename LseOf, typename Load, typename Store>
__device__ __forceinline__ float merge_states_of(int n, int chunks, LseOf&& lse_of, Load&& load,
                                                 Store&& store) {
  const int lane = threadIdx.x % cuattn::kWarpSize;
  // The largest LSE and the sum of the weights, the states spread over the lanes.
  float top = -INFINITY;
  for (int s = lane; s < n; s += cuattn::kWarpSize) {
    top = fmaxf(top, lse_of(s));
  }
  top = cuattn::warp_max(top);
  float total = 0.0f;
  for (int s = lane; s < n; s += cuattn::kWarpSize) {
    const float lse = lse_of(s);
    total += lse == -INFINITY ? 0.0f : cuattn::fast_exp2((lse - top) * cuattn::kLog2e);
  }
  total = cuattn::warp_sum(total);
  const float inv_total = total > 0.0f ? 1.0f / total : 0.0f;
  for (int chunk = lane; chunk < chunks; chunk += cuattn::kWarpSize) {
    float o[kChunkElems] = {};
    for (int s = 0; s < n; ++s) {
      const float lse = lse_of(s);
      if (lse != -INFINITY) {
        load(s, chunk, cuattn::fast_exp2((lse - top) * cuattn::kLog2e) * inv_total, o);
      }
    }
    store(chunk, o);
  }
  return total > 0.0f ? top + logf(total) : -INFINITY;
}

// Stores 8 floats as T at dst (16-byte aligned).
template <typename T>
__device__ __forceinline__ void store_chunk(T* dst, const float (&o)[kChunkElems]) {
  uint4 packed;
  packed.x = cuattn::pack2<T>(o[0], o[1]);
  packed.y = cuattn::pack2<T>(o[2], o[3]);
  packed.z = cuattn::pack2<T>(o[4], o[5]);
  packed.w = cuattn::pack2<T>(o[6], o[7]);
  cuattn::st_global_v4(dst, packed);
}

// o += weight * the 8 elements of T at src (16-byte aligned).
template <typename T>
__device__ __forceinline__ void add_chunk(const T* src, float weight, float (&o)[kChunkElems]) {
  const uint4 packed = cuattn::ld_global_v4(src);
  const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 pair = cuattn::unpack2<T>(words[i]);
    o[2 * i] += weight * pair.x;
    o[2 * i + 1] += weight * pair.y;
  }
}

// Split-KV's second kernel: the num_splits partial results of each (token, head) in the
// workspace (fp32 [split][token][head][head_dim], then LSEs [split][token][head]) into out.
template <typename T>
__global__ void __launch_bounds__(kMergeWarps* cuattn::kWarpSize)
    merge_splits_kernel(const cuattn_paged_attention_params p) {
  const int64_t item = int64_t{blockIdx.x} * kMergeWarps + threadIdx.x / cuattn::kWarpSize;
  if (item >= int64_t{p.total_q} * p.heads) {
    return;
  }
  const int64_t token = item / p.heads;
  const int head = static_cast<int>(item - token * p.heads);
  const int head_dim = p.kv.head_dim;
  const float* partial_o = static_cast<const float*>(p.maybe_workspace);
  const float* partial_lse = partial_o + int64_t{p.num_splits} * p.total_q * p.heads * head_dim;
  const int64_t split_stride = int64_t{p.total_q} * p.heads;
  const float lse = merge_states_of(
      p.num_splits, head_dim / kChunkElems,
      [&](int s) { return partial_lse[s * split_stride + item]; },
      [&](int s, int chunk, float weight, float(&o)[kChunkElems]) {
        const float* src = partial_o + (s * split_stride + item) * head_dim + chunk * kChunkElems;
#pragma unroll
        for (int e = 0; e < kChunkElems; e += 4) {
          const float4 v = *reinterpret_cast<const float4*>(src + e);
          o[e] += weight * v.x;
          o[e + 1] += weight * v.y;
          o[e + 2] += weight * v.z;
          o[e + 3] += weight * v.w;
        }
      },
      [&](int chunk, const float(&o)[kChunkElems]) {
        store_chunk(static_cast<T*>(p.out) + token * p.out_row_stride + head * p.out_head_stride +
                        chunk * kChunkElems,
                    o);
      });
  if (threadIdx.x % cuattn::kWarpSize == 0 && p.maybe_lse != nullptr) {
    p.maybe_lse[item] = lse;
  }
}

// merge_states: two results of the same queries into out, which may be o_a (each lane reads its
// chunks before it writes them, and the LSEs are read before lane 0 writes).
template <typename T>
__global__ void __launch_bounds__(kMergeWarps* cuattn::kWarpSize)
    merge_states_kernel(const cuattn_merge_states_params p) {
  const int64_t item = int64_t{blockIdx.x} * kMergeWarps + threadIdx.x / cuattn::kWarpSize;
  if (item >= int64_t{p.tokens} * p.heads) {
    return;
  }
  const int64_t token = item / p.heads;
  const int head = static_cast<int>(item - token * p.heads);
  const float lse_a = p.lse_a[item];
  const float lse_b = p.lse_b[item];
  __syncwarp();  // every lane has read the LSEs before lane 0 may overwrite lse_a
  const T* o_a = static_cast<const T*>(p.o_a) + token * p.o_a_row_stride + head * p.o_a_head_stride;
  const T* o_b = static_cast<const T*>(p.o_b) + token * p.o_b_row_stride + head * p.o_b_head_stride;
  T* out = static_cast<T*>(p.out) + token * p.out_row_stride + head * p.out_head_stride;
  const float lse = merge_states_of(
      2, p.head_dim / kChunkElems, [&](int s) { return s == 0 ? lse_a : lse_b; },
      [&](int s, int chunk, float weight, float(&o)[kChunkElems]) {
        add_chunk((s == 0 ? o_a : o_b) + chunk * kChunkElems, weight, o);
      },
      [&](int chunk, const float(&o)[kChunkElems]) { store_chunk(out + chunk * kChunkElems, o); });
  if (threadIdx.x % cuattn::kWarpSize == 0 && p.maybe_lse_out != nullptr) {
    p.maybe_lse_out[item] = lse;
  }
}

unsigned merge_blocks(int64_t items) {
  return static_cast<unsigned>((items + kMergeWarps - 1) / kMergeWarps);
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(paged_attention)(
    const cuattn_paged_attention_params* params, void* stream) {
  constexpr const char* kWhat = "paged_attention";
  const cuattn_status status = check_launch(kWhat, params);
  if (status != CUATTN_OK) {
    return status;
  }
  const cuattn_paged_attention_params& p = *params;
  if (p.kv.batch == 0 || p.max_q_len == 0 || p.total_q == 0) {
    return CUATTN_OK;  // nothing to compute
  }
  auto run = [&](auto element) {
    using T = decltype(element);
    cuattn_status launched = cuattn::dispatch_head_dim_tile(kWhat, p.kv.head_dim, [&](auto tile) {
      return cuattn::paged_attention_launch<T, decltype(tile)::value>(p, stream);
    });
    if (launched != CUATTN_OK || p.num_splits == 1) {
      return launched;
    }
    return cuattn::launch_kernel("paged_attention_merge", merge_splits_kernel<T>,
                                 dim3(merge_blocks(int64_t{p.total_q} * p.heads)),
                                 dim3(kMergeWarps * cuattn::kWarpSize), 0, stream, p);
  };
  if (p.kv.dtype == CUATTN_DTYPE_F16) {
    return run(__half{});
  }
  return run(__nv_bfloat16{});
}

#ifdef CUATTN_EMU
#define CUATTN_PAGED_PLANNER cuattn_emu_raw_plan_paged_attention
#else
#define CUATTN_PAGED_PLANNER cuattn_raw_plan_paged_attention
#endif

extern "C" cuattn_status CUATTN_PAGED_PLANNER(const cuattn_paged_attention_params* params,
                                              int32_t num_sms, int32_t split_kv,
                                              cuattn_paged_plan* plan) {
  constexpr const char* kWhat = "paged_attention plan";
  if (plan == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: plan is null", kWhat);
  }
  *plan = cuattn_paged_plan{};
  cuattn_status status = check_shape(kWhat, params);
  if (status != CUATTN_OK) {
    return status;
  }
  if (num_sms <= 0) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: num_sms = %d, must be positive", kWhat,
                num_sms);
  }
  const cuattn_paged_attention_params& p = *params;
  status = cuattn::dispatch_head_dim_tile(kWhat, p.kv.head_dim, [&](auto tile) {
    return cuattn::paged_attention_plan_tile<decltype(tile)::value>(p, plan);
  });
  if (status != CUATTN_OK) {
    return status;
  }
  // The most keys a sequence's new tokens see: from kv_start, or from the first new token's
  // window, to the end.
  int64_t keys = p.max_seq_len > p.kv_start ? p.max_seq_len - p.kv_start : 0;
  if (p.window_left >= 0) {
    const int64_t windowed = int64_t{p.window_left} + p.max_q_len;
    keys = windowed < keys ? windowed : keys;
  }
  const int64_t ctas = int64_t{plan->grid_x} * p.kv.kv_heads * p.kv.batch;
  int64_t splits = 1;
  if (split_kv < 0) {
    const int64_t target = int64_t{kTargetCtasPerSm} * num_sms;
    if (ctas > 0 && ctas < num_sms) {
      const int64_t wanted = (target + ctas - 1) / ctas;
      const int64_t most = keys / kMinSplitKeys;
      splits = wanted < most ? wanted : most;
    }
  } else if (split_kv > 1) {
    splits = split_kv;
  }
  const int64_t most_by_grid = kMaxGridYZ / p.kv.kv_heads;
  splits = splits < most_by_grid ? splits : most_by_grid;
  int64_t split_tokens = 0;
  if (splits > 1 && keys > 0) {
    const int64_t per_split = (keys + splits - 1) / splits;
    split_tokens = (per_split + kSplitKeysMultiple - 1) / kSplitKeysMultiple * kSplitKeysMultiple;
    splits = (keys + split_tokens - 1) / split_tokens;
  }
  if (splits <= 1) {
    splits = 1;
    split_tokens = 0;
  }
  plan->num_splits = static_cast<int32_t>(splits);
  plan->split_tokens = static_cast<int32_t>(split_tokens);
  plan->grid_y = static_cast<int32_t>(splits * p.kv.kv_heads);
  plan->workspace_bytes =
      splits > 1 ? splits * p.total_q * p.heads * (int64_t{p.kv.head_dim} + 1) * 4 : 0;
  return CUATTN_OK;
}

extern "C" cuattn_status CUATTN_LAUNCHER(merge_states)(const cuattn_merge_states_params* params,
                                                       void* stream) {
  constexpr const char* kWhat = "merge_states";
  if (params == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: params is null", kWhat);
  }
  const cuattn_merge_states_params& p = *params;
  cuattn_status status = check_head_dim(kWhat, p.head_dim);
  if (status != CUATTN_OK) {
    return status;
  }
  status = check_dtype(kWhat, p.dtype);
  if (status != CUATTN_OK) {
    return status;
  }
  if (p.tokens < 0 || p.heads < 0) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: tokens = %d, heads = %d: not negative", kWhat,
                p.tokens, p.heads);
  }
  if (int64_t{p.tokens} * p.heads == 0) {
    return CUATTN_OK;
  }
  if (p.o_a == nullptr || p.o_b == nullptr || p.out == nullptr || p.lse_a == nullptr ||
      p.lse_b == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: o_a, lse_a, o_b, lse_b and out must be set",
                kWhat);
  }
  if (!aligned(p.o_a) || !aligned(p.o_b) || !aligned(p.out) || !whole_vectors(p.o_a_row_stride) ||
      !whole_vectors(p.o_a_head_stride) || !whole_vectors(p.o_b_row_stride) ||
      !whole_vectors(p.o_b_head_stride) || !whole_vectors(p.out_row_stride) ||
      !whole_vectors(p.out_head_stride)) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: o_a, o_b and out must be 16-byte aligned and their strides multiples of %d "
                "elements",
                kWhat, kChunkElems);
  }
  const dim3 grid(merge_blocks(int64_t{p.tokens} * p.heads));
  const dim3 block(kMergeWarps * cuattn::kWarpSize);
  if (p.dtype == CUATTN_DTYPE_F16) {
    return cuattn::launch_kernel(kWhat, merge_states_kernel<__half>, grid, block, 0, stream, p);
  }
  return cuattn::launch_kernel(kWhat, merge_states_kernel<__nv_bfloat16>, grid, block, 0, stream,
                               p);
}
