// block_sparse.cu: the C launcher and planner of block-sparse attention: checks the params and the
// mask's shape (the kernel clips what only the device holds: counts and indices), then dispatches
// on dtype and head-dim tile to block_sparse_hd<tile>.cu.
#include <cstdint>

#include "arch/vec.cuh"
#include "common/attention_launch.h"
#include "common/cuda_compat.cuh"
#include "common/head_dim_tiles.h"
#include "common/launch.cuh"
#include "common/smem_tile.cuh"
#include "common/status.h"
#include "cuattn_internal.h"
#include "kernels/block_sparse_launch.h"

namespace {

using cuattn::fail;

constexpr int kBlockMultiple = 16;  // block sizes: whole m16 tiles of rows, k16 blocks of keys
constexpr int64_t kMaxGridX = 2147483647;
constexpr int64_t kMaxGridYZ = 65535;

int64_t blocks_of(int64_t len, int64_t block) { return (len + block - 1) / block; }

bool aligned(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % cuattn::kVecBytes == 0; }

// What the kernel's indexing relies on: the params as for every attention launcher, then the
// mask's block sizes, block grid and broadcast dims against them, its tables set, and rows the
// 16-byte copies can take.
cuattn_status check(const char* what, const cuattn_attention_params* params,
                    const cuattn_block_mask* mask) {
  cuattn_status status = cuattn::check_attention_params(what, params);
  if (status != CUATTN_OK) {
    return status;
  }
  if (mask == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: mask is null", what);
  }
  const cuattn_attention_params& p = *params;
  const cuattn_block_mask& m = *mask;
  if (m.block_q < kBlockMultiple || m.block_q % kBlockMultiple != 0 || m.block_k < kBlockMultiple ||
      m.block_k % kBlockMultiple != 0) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: block sizes (%d, %d): each must be a positive multiple of %d", what, m.block_q,
                m.block_k, kBlockMultiple);
  }
  if (p.seqlen_q < 0 || p.seqlen_k < 0 || p.batch < 0 || p.batch > kMaxGridYZ ||
      p.heads > kMaxGridYZ) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: seqlen_q = %d, seqlen_k = %d, batch = %d, heads = %d: lengths not negative, "
                "batch and heads at most %lld",
                what, p.seqlen_q, p.seqlen_k, p.batch, p.heads, static_cast<long long>(kMaxGridYZ));
  }
  const int64_t nq = blocks_of(p.seqlen_q, m.block_q);
  const int64_t nk = blocks_of(p.seqlen_k, m.block_k);
  if (m.num_q_blocks != nq || m.num_k_blocks != nk) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: mask grid %d x %d blocks, but seqlen_q %d and seqlen_k %d in blocks of (%d, "
                "%d) make %lld x %lld",
                what, m.num_q_blocks, m.num_k_blocks, p.seqlen_q, p.seqlen_k, m.block_q, m.block_k,
                static_cast<long long>(nq), static_cast<long long>(nk));
  }
  if ((m.batch != 1 && m.batch != p.batch) || (m.heads != 1 && m.heads != p.heads)) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: mask batch %d and heads %d: each 1 (shared) or the params' (%d, %d)", what,
                m.batch, m.heads, p.batch, p.heads);
  }
  if (nq > 0 && nk > 0 &&
      (m.full_counts == nullptr || m.full_indices == nullptr || m.partial_counts == nullptr ||
       m.partial_indices == nullptr)) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: mask full_counts, full_indices, partial_counts and partial_indices must be "
                "set",
                what);
  }
  if (p.q == nullptr || p.k == nullptr || p.v == nullptr || p.out == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: q, k, v and out must be set", what);
  }
  const int64_t strides[] = {p.q_batch_stride,   p.q_row_stride,   p.q_head_stride,
                             p.k_batch_stride,   p.k_row_stride,   p.k_head_stride,
                             p.v_batch_stride,   p.v_row_stride,   p.v_head_stride,
                             p.out_batch_stride, p.out_row_stride, p.out_head_stride};
  bool rows_aligned = aligned(p.q) && aligned(p.k) && aligned(p.v) && aligned(p.out);
  for (const int64_t stride : strides) {
    rows_aligned = rows_aligned && stride % cuattn::kChunkElems == 0;
  }
  if (!rows_aligned) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: q, k, v and out must be 16-byte aligned and every batch, row and head "
                "stride a multiple of %d elements",
                what, cuattn::kChunkElems);
  }
  return CUATTN_OK;
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(block_sparse_attention)(
    const cuattn_attention_params* params, const cuattn_block_mask* mask, void* stream) {
  const char* what = "block_sparse_attention";
  const cuattn_status status = check(what, params, mask);
  if (status != CUATTN_OK) {
    return status;
  }
  return cuattn::checked_attention_launch(what, params, [&](auto element) {
    using T = decltype(element);
    return cuattn::dispatch_head_dim_tile(what, params->head_dim, [&](auto tile) {
      cuattn_block_sparse_plan plan{};
      cuattn_status planned =
          cuattn::block_sparse_plan_tile<decltype(tile)::value>(*params, *mask, &plan);
      if (planned == CUATTN_OK && plan.grid_x > kMaxGridX) {
        planned = fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: %d query blocks: too many CTAs", what,
                       mask->num_q_blocks);
      }
      if (planned != CUATTN_OK) {
        return planned;
      }
      return cuattn::block_sparse_launch<T, decltype(tile)::value>(*params, *mask, stream);
    });
  });
}

#ifdef CUATTN_EMU
#define CUATTN_BLOCK_SPARSE_PLANNER cuattn_emu_raw_plan_block_sparse_attention
#else
#define CUATTN_BLOCK_SPARSE_PLANNER cuattn_raw_plan_block_sparse_attention
#endif

extern "C" cuattn_status CUATTN_BLOCK_SPARSE_PLANNER(const cuattn_attention_params* params,
                                                     const cuattn_block_mask* mask,
                                                     cuattn_block_sparse_plan* plan) {
  if (plan == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "block_sparse_attention plan: plan is null");
  }
  *plan = cuattn_block_sparse_plan{};
  const char* what = "block_sparse_attention plan";
  const cuattn_status status = check(what, params, mask);
  if (status != CUATTN_OK) {
    return status;
  }
  return cuattn::dispatch_head_dim_tile(what, params->head_dim, [&](auto tile) {
    return cuattn::block_sparse_plan_tile<decltype(tile)::value>(*params, *mask, plan);
  });
}
