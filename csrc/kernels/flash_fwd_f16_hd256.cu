// flash_fwd_f16_hd256.cu: flash_fwd for f16 at head-dim tile 256 (one instantiation per
// translation unit keeps the CUDA build parallel).
#include "kernels/flash_fwd.cuh"

namespace cuattn {
inline namespace CUATTN_BUILD_NAMESPACE {
template cuattn_status flash_fwd_launch<__half, 256>(const cuattn_attention_params&, void*);
}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
