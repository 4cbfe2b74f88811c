// flash_fwd_launch.h: the per-instantiation launch functions of flash_fwd, one translation unit
// each (flash_fwd_<dtype>_hd<tile>.cu), called by the dispatcher in flash_fwd.cu.
#pragma once

#include "common/cuda_compat.cuh"
#include "cuattn_internal.h"

namespace cuattn {
inline namespace CUATTN_BUILD_NAMESPACE {

// Launches flash_fwd for element type T at head-dim tile kHeadDim (head_dim <= kHeadDim; the
// columns past head_dim are zero-filled). Params are validated by the caller.
template <typename T, int kHeadDim>
cuattn_status flash_fwd_launch(const cuattn_attention_params& p, void* stream);

// What flash_fwd_launch<T, kHeadDim> runs for p (any T: the tiles do not depend on it).
template <int kHeadDim>
cuattn_status flash_fwd_plan(const cuattn_attention_params& p, cuattn_flash_plan* plan);

}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
