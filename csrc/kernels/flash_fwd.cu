// flash_fwd.cu: the C launcher of the flash attention forward: checks what the kernel relies on
// and dispatches on dtype and head-dim tile to the instantiations in flash_fwd_<dtype>_hd<tile>.cu.
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/attention_launch.h"
#include "common/status.h"
#include "cuattn.h"
#include "kernels/flash_fwd_launch.h"

namespace {

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
  return cuattn::checked_attention_launch("attention_flash", params, [&](auto element) {
    return dispatch_head_dim<decltype(element)>(*params, stream);
  });
}
