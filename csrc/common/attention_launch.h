// attention_launch.h: what every attention launcher checks before it trusts its params (the
// fields the kernels' own indexing depends on; the Rust layer validates everything else), and
// the dispatch on dtype.
#pragma once

#include "common/cuda_compat.cuh"
#include "common/status.h"
#include "cuattn_internal.h"

namespace cuattn {
inline namespace CUATTN_BUILD_NAMESPACE {

constexpr int kMaxAttentionHeadDim = 256;
constexpr int kAttentionHeadDimMultiple = 8;

// Checks what launcher `kernel`'s indexing relies on: params set, head_dim, heads, dtype.
inline cuattn_status check_attention_params(const char* kernel,
                                            const cuattn_attention_params* params) {
  if (params == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: params is null", kernel);
  }
  const cuattn_attention_params& p = *params;
  if (p.head_dim <= 0 || p.head_dim % kAttentionHeadDimMultiple != 0 ||
      p.head_dim > kMaxAttentionHeadDim) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: head_dim = %d, must be a multiple of %d in %d..=%d", kernel, p.head_dim,
                kAttentionHeadDimMultiple, kAttentionHeadDimMultiple, kMaxAttentionHeadDim);
  }
  if (p.heads <= 0 || p.kv_heads <= 0 || p.heads % p.kv_heads != 0) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: heads = %d, kv_heads = %d: kv_heads must divide heads", kernel, p.heads,
                p.kv_heads);
  }
  if (p.dtype != CUATTN_DTYPE_F16 && p.dtype != CUATTN_DTYPE_BF16) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: dtype = %d is not f16 (0) or bf16 (1)", kernel,
                static_cast<int>(p.dtype));
  }
  return CUATTN_OK;
}

// Checks params (check_attention_params) and calls launch(T{}) with T = __half or
// __nv_bfloat16. A problem with no query rows or no batch launches nothing.
template <typename Launch>
cuattn_status checked_attention_launch(const char* kernel, const cuattn_attention_params* params,
                                       Launch&& launch) {
  const cuattn_status status = check_attention_params(kernel, params);
  if (status != CUATTN_OK) {
    return status;
  }
  if (params->seqlen_q <= 0 || params->batch <= 0) {
    return CUATTN_OK;  // nothing to compute
  }
  if (params->dtype == CUATTN_DTYPE_F16) {
    return launch(__half{});
  }
  return launch(__nv_bfloat16{});
}

}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
