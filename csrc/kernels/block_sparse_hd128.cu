// block_sparse_hd128.cu: block-sparse attention at head-dim tile 128, both dtypes (one translation
// unit per tile keeps the CUDA build parallel), and its plan.
#include "kernels/block_sparse.cuh"

namespace cuattn {
inline namespace CUATTN_BUILD_NAMESPACE {
template cuattn_status block_sparse_launch<__nv_bfloat16, 128>(const cuattn_attention_params&,
                                                               const cuattn_block_mask&, void*);
template cuattn_status block_sparse_launch<__half, 128>(const cuattn_attention_params&,
                                                        const cuattn_block_mask&, void*);
template cuattn_status block_sparse_plan_tile<128>(const cuattn_attention_params&,
                                                   const cuattn_block_mask&,
                                                   cuattn_block_sparse_plan*);
}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
