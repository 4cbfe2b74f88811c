// paged_attention_hd128.cu: paged attention at head-dim tile 128, both dtypes (one translation unit
// per tile keeps the CUDA build parallel), and its plan.
#include "kernels/paged_attention.cuh"

namespace cuattn {
inline namespace CUATTN_BUILD_NAMESPACE {
template cuattn_status paged_attention_launch<__nv_bfloat16, 128>(
    const cuattn_paged_attention_params&, void*);
template cuattn_status paged_attention_launch<__half, 128>(const cuattn_paged_attention_params&,
                                                           void*);
template cuattn_status paged_attention_plan_tile<128>(const cuattn_paged_attention_params&,
                                                      cuattn_paged_plan*);
}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
