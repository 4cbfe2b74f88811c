// flash_fwd.cu: the C launcher of the flash attention forward: checks what the kernel relies on
// and dispatches on dtype and head-dim tile to the instantiations in flash_fwd_<dtype>_hd<tile>.cu.
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/status.h"
#include "cuattn.h"
#include "kernels/flash_fwd_launch.h"

namespace {

constexpr int kMaxHeadDim = 256;
constexpr int kHeadDimMultiple = 8;

// The compiled head-dim tiles; a head dim runs in the smallest tile that holds it.
template <typename T>
cuattn_status dispatch_head_dim(const cuattn_attention_params& p, void* stream) {
  if (p.head_dim <= 64) return cuattn::flash_fwd_launch<T, 64>(p, stream);
  if (p.head_dim <= 96) return cuattn::flash_fwd_launch<T, 96>(p, stream);
  if (p.head_dim <= 128) return cuattn::flash_fwd_launch<T, 128>(p, stream);
  if (p.head_dim <= 192) return cuattn::flash_fwd_launch<T, 192>(p, stream);
  return cuattn::flash_fwd_launch<T, 256>(p, stream);
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(attention_flash)(const cuattn_attention_params* params,
                                                          void* stream) {
  if (params == nullptr) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT, "attention_flash: params is null");
  }
  const cuattn_attention_params& p = *params;
  if (p.head_dim <= 0 || p.head_dim % kHeadDimMultiple != 0 || p.head_dim > kMaxHeadDim) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "attention_flash: head_dim = %d, must be a multiple of %d in %d..=%d "
                        "(tiles 64, 96, 128, 192, 256)",
                        p.head_dim, kHeadDimMultiple, kHeadDimMultiple, kMaxHeadDim);
  }
  if (p.heads <= 0 || p.kv_heads <= 0 || p.heads % p.kv_heads != 0) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "attention_flash: heads = %d, kv_heads = %d: kv_heads must divide heads",
                        p.heads, p.kv_heads);
  }
  if (p.seqlen_q <= 0 || p.batch <= 0) {
    return CUATTN_OK;  // nothing to compute
  }
  switch (p.dtype) {
    case CUATTN_DTYPE_F16:
      return dispatch_head_dim<__half>(p, stream);
    case CUATTN_DTYPE_BF16:
      return dispatch_head_dim<__nv_bfloat16>(p, stream);
  }
  return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                      "attention_flash: dtype = %d is not f16 (0) or bf16 (1)",
                      static_cast<int>(p.dtype));
}
