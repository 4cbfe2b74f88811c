// block_sparse_launch.h: the per-head-dim-tile launch and plan functions of block-sparse
// attention, one translation unit each (block_sparse_hd<tile>.cu), called by block_sparse.cu.
#pragma once

#include "common/cuda_compat.cuh"
#include "cuattn_internal.h"

namespace cuattn {
inline namespace CUATTN_BUILD_NAMESPACE {

// Launches the block-sparse kernel for element type T at head-dim tile kHeadDim (head_dim <=
// kHeadDim; the columns past head_dim are zero-filled). Params and mask are checked by the
// caller.
template <typename T, int kHeadDim>
cuattn_status block_sparse_launch(const cuattn_attention_params& p, const cuattn_block_mask& m,
                                  void* stream);

// Fills plan for p and m.
template <int kHeadDim>
cuattn_status block_sparse_plan_tile(const cuattn_attention_params& p, const cuattn_block_mask& m,
                                     cuattn_block_sparse_plan* plan);

}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
