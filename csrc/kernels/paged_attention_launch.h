// paged_attention_launch.h: the per-head-dim-tile launch and plan functions of paged attention,
// one translation unit each (paged_attention_hd<tile>.cu), called by paged_attention.cu.
#pragma once

#include "common/cuda_compat.cuh"
#include "cuattn_internal.h"

namespace cuattn {
inline namespace CUATTN_BUILD_NAMESPACE {

// Launches the paged attention kernel for element type T at head-dim tile kHeadDim (head_dim <=
// kHeadDim; the columns past head_dim are zero-filled), without the split's merge. Params are
// checked by the caller.
template <typename T, int kHeadDim>
cuattn_status paged_attention_launch(const cuattn_paged_attention_params& p, void* stream);

// Fills plan's tile fields (block_rows, block_keys, threads, smem_bytes, grid_x, grid_z) for p.
template <int kHeadDim>
cuattn_status paged_attention_plan_tile(const cuattn_paged_attention_params& p,
                                        cuattn_paged_plan* plan);

}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
