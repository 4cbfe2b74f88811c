// flash_fwd.cu: the C launcher of the flash attention forward: checks what the kernel relies on
// and dispatches on dtype and head-dim tile to the instantiations in flash_fwd_<dtype>_hd<tile>.cu.
#include <type_traits>  // std::integral_constant

#include "common/attention_launch.h"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/status.h"
#include "cuattn.h"
#include "kernels/flash_fwd_launch.h"

namespace {

// The compiled head-dim tiles (build.rs defines CUATTN_FLASH_HD<N> for each whose cargo feature
// is on); a head dim runs in the smallest built tile that holds it.
// run(std::integral_constant<int, kTile>{}) for the tile kTile of p.head_dim.
template <typename Run>
cuattn_status dispatch_head_dim(const cuattn_attention_params& p, Run&& run) {
#ifdef CUATTN_FLASH_HD64
  if (p.head_dim <= 64) return run(std::integral_constant<int, 64>{});
#endif
#ifdef CUATTN_FLASH_HD96
  if (p.head_dim <= 96) return run(std::integral_constant<int, 96>{});
#endif
#ifdef CUATTN_FLASH_HD128
  if (p.head_dim <= 128) return run(std::integral_constant<int, 128>{});
#endif
#ifdef CUATTN_FLASH_HD192
  if (p.head_dim <= 192) return run(std::integral_constant<int, 192>{});
#endif
#ifdef CUATTN_FLASH_HD256
  if (p.head_dim <= 256) return run(std::integral_constant<int, 256>{});
#endif
  (void)run;
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
    using T = decltype(element);
    return dispatch_head_dim(*params, [&](auto tile) {
      return cuattn::flash_fwd_launch<T, decltype(tile)::value>(*params, stream);
    });
  });
}

#ifdef CUATTN_EMU
#define CUATTN_FLASH_PLANNER cuattn_emu_plan_attention_flash
#else
#define CUATTN_FLASH_PLANNER cuattn_plan_attention_flash
#endif

extern "C" cuattn_status CUATTN_FLASH_PLANNER(const cuattn_attention_params* params,
                                              cuattn_flash_plan* plan) {
  if (plan == nullptr) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT, "attention_flash plan: plan is null");
  }
  *plan = cuattn_flash_plan{};
  const cuattn_status status = cuattn::check_attention_params("attention_flash plan", params);
  if (status != CUATTN_OK) {
    return status;
  }
  return dispatch_head_dim(*params, [&](auto tile) {
    return cuattn::flash_fwd_plan<decltype(tile)::value>(*params, plan);
  });
}
