// flash_fwd_bf16_hd192.cu: flash_fwd for bf16 at head-dim tile 192 (one instantiation per
// translation unit keeps the CUDA build parallel), and its plan (the tiles do not depend on the
// dtype).
#include "kernels/flash_fwd.cuh"

namespace cuattn {
inline namespace CUATTN_BUILD_NAMESPACE {
template cuattn_status flash_fwd_launch<__nv_bfloat16, 192>(const cuattn_attention_params&, void*);
template cuattn_status flash_fwd_plan<192>(const cuattn_attention_params&, cuattn_flash_plan*);
}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
