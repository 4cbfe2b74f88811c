// flash_fwd.cu: the C launcher of the flash attention forward: checks what the kernel relies on
// and dispatches on dtype and head-dim tile to the instantiations in flash_fwd_<dtype>_hd<tile>.cu.
#include "common/attention_launch.h"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/status.h"
#include "cuattn.h"
#include "kernels/flash_fwd_launch.h"

namespace {

// The compiled head-dim tiles (build.rs defines CUATTN_FLASH_HD<N> for each whose cargo feature
// is on); a head dim runs in the smallest built tile that holds it.
template <typename T>
cuattn_status dispatch_head_dim(const cuattn_attention_params& p, void* stream) {
#ifdef CUATTN_FLASH_HD64
  if (p.head_dim <= 64) return cuattn::flash_fwd_launch<T, 64>(p, stream);
#endif
#ifdef CUATTN_FLASH_HD96
  if (p.head_dim <= 96) return cuattn::flash_fwd_launch<T, 96>(p, stream);
#endif
#ifdef CUATTN_FLASH_HD128
  if (p.head_dim <= 128) return cuattn::flash_fwd_launch<T, 128>(p, stream);
#endif
#ifdef CUATTN_FLASH_HD192
  if (p.head_dim <= 192) return cuattn::flash_fwd_launch<T, 192>(p, stream);
#endif
#ifdef CUATTN_FLASH_HD256
  if (p.head_dim <= 256) return cuattn::flash_fwd_launch<T, 256>(p, stream);
#endif
  (void)stream;
  return cuattn::fail(CUATTN_ERROR_UNSUPPORTED,
                      "attention_flash: head_dim %d: this build has no head-dim tile that holds "
                      "it (tiles 64, 96, 128, 192, 256 come with the cargo features hd64 ... "
                      "hd256)",
                      p.head_dim);
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(attention_flash)(const cuattn_attention_params* params,
                                                          void* stream) {
  return cuattn::checked_attention_launch("attention_flash", params, [&](auto element) {
    return dispatch_head_dim<decltype(element)>(*params, stream);
  });
}
