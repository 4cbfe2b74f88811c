// head_dim_tiles.h: the dispatch on the flash kernel's head-dim tiles (64, 96, 128, 192, 256),
// which the kernels built on its tile machinery share: build.rs defines CUATTN_FLASH_HD<N> for
// each tile whose cargo feature is on, and a head dim runs in the smallest built tile that holds
// it.
#pragma once

#include <type_traits>  // std::integral_constant

#include "common/status.h"
#include "cuattn_internal.h"

namespace cuattn {

// run(std::integral_constant<int, kTile>{}) for the smallest built tile that holds head_dim;
// CUATTN_ERROR_UNSUPPORTED naming launcher `what` when none does.
template <typename Run>
cuattn_status dispatch_head_dim_tile(const char* what, int head_dim, Run&& run) {
#ifdef CUATTN_FLASH_HD64
  if (head_dim <= 64) return run(std::integral_constant<int, 64>{});
#endif
#ifdef CUATTN_FLASH_HD96
  if (head_dim <= 96) return run(std::integral_constant<int, 96>{});
#endif
#ifdef CUATTN_FLASH_HD128
  if (head_dim <= 128) return run(std::integral_constant<int, 128>{});
#endif
#ifdef CUATTN_FLASH_HD192
  if (head_dim <= 192) return run(std::integral_constant<int, 192>{});
#endif
#ifdef CUATTN_FLASH_HD256
  if (head_dim <= 256) return run(std::integral_constant<int, 256>{});
#endif
  (void)run;
  return fail(CUATTN_ERROR_UNSUPPORTED,
              "%s: head_dim %d: this build has no head-dim tile that holds it (tiles 64, 96, 128, "
              "192, 256 come with the cargo features hd64 ... hd256)",
              what, head_dim);
}

}  // namespace cuattn
