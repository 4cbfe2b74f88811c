// paged_attention_hd96.cu: paged attention at head-dim tile 96, both dtypes (one translation unit
// per tile keeps the CUDA build parallel), and its plan.
#include "kernels/paged_attention.cuh"

namespace cuattn {
inline namespace CUATTN_BUILD_NAMESPACE {
template cuattn_status paged_attention_launch<__nv_bfloat16, 96>(
    const cuattn_paged_attention_params&, void*);
template cuattn_status paged_attention_launch<__half, 96>(const cuattn_paged_attention_params&,
                                                          void*);
template cuattn_status paged_attention_plan_tile<96>(const cuattn_paged_attention_params&,
                                                     cuattn_paged_plan*);
}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
