// flash_fwd.cu: the C launcher of the flash attention forward: checks what the kernel relies on
// and dispatches on dtype and head-dim tile to the instantiations in flash_fwd_<dtype>_hd<tile>.cu.
#include "common/attention_launch.h"
#include "common/cuda_compat.cuh"
#include "common/head_dim_tiles.h"
#include "common/launch.cuh"
#include "common/status.h"
#include "cuattn_internal.h"
#include "kernels/flash_fwd_launch.h"

namespace {

// params->flash_tiles names a table (params checked non-null first).
cuattn_status check_flash_tiles(const char* what, const cuattn_attention_params& p) {
  if (p.flash_tiles != CUATTN_FLASH_TILES_AUTO && p.flash_tiles != CUATTN_FLASH_TILES_COMPACT &&
      p.flash_tiles != CUATTN_FLASH_TILES_WIDE) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "%s: flash_tiles = %d; expected CUATTN_FLASH_TILES_AUTO (0), _COMPACT (1) "
                        "or _WIDE (2)",
                        what, static_cast<int>(p.flash_tiles));
  }
  return CUATTN_OK;
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(attention_flash)(const cuattn_attention_params* params,
                                                          void* stream) {
  if (params != nullptr) {
    const cuattn_status status = check_flash_tiles("attention_flash", *params);
    if (status != CUATTN_OK) {
      return status;
    }
  }
  return cuattn::checked_attention_launch("attention_flash", params, [&](auto element) {
    using T = decltype(element);
    return cuattn::dispatch_head_dim_tile("attention_flash", params->head_dim, [&](auto tile) {
      return cuattn::flash_fwd_launch<T, decltype(tile)::value>(*params, stream);
    });
  });
}

#ifdef CUATTN_EMU
#define CUATTN_FLASH_PLANNER cuattn_emu_raw_plan_attention_flash
#else
#define CUATTN_FLASH_PLANNER cuattn_raw_plan_attention_flash
#endif

extern "C" cuattn_status CUATTN_FLASH_PLANNER(const cuattn_attention_params* params,
                                              cuattn_flash_plan* plan) {
  if (plan == nullptr) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT, "attention_flash plan: plan is null");
  }
  *plan = cuattn_flash_plan{};
  cuattn_status status = cuattn::check_attention_params("attention_flash plan", params);
  if (status != CUATTN_OK) {
    return status;
  }
  status = check_flash_tiles("attention_flash plan", *params);
  if (status != CUATTN_OK) {
    return status;
  }
  return cuattn::dispatch_head_dim_tile("attention_flash", params->head_dim, [&](auto tile) {
    return cuattn::flash_fwd_plan<decltype(tile)::value>(*params, plan);
  });
}
