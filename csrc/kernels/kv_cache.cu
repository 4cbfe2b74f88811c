// kv_cache: the paged KV cache's two writers. kv_append scatters a step's new keys and values into
// their slots (one CTA per token, each thread a 16-byte vector or one element of K and of V);
// kv_copy_pages copies whole pages across every layer's pools, for copy-on-write.
#include <cstdint>

#include "arch/vec.cuh"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/status.h"
#include "cuattn_internal.h"

namespace {

using cuattn::kVecBytes;

constexpr int kAppendThreads = 128;
constexpr int kCopyThreads = 256;
constexpr int kMaxHeadDim = 256;
constexpr int kHeadDimMultiple = 8;
// Elements of a 16-bit dtype in one 16-byte vector.
constexpr int kVecElems = kVecBytes / static_cast<int>(sizeof(uint16_t));
static_assert(kHeadDimMultiple % kVecElems == 0, "a row of head_dim is whole vectors");

// The dtype does not matter to a copy: elements move as 16-bit words, or as vectors of 8.
using Word = uint16_t;

// Where token element (slot, head, column 0) of a pool is, for a flat slot.
__device__ __forceinline__ int64_t pool_offset(int64_t page_stride, int64_t slot_stride,
                                               int64_t head_stride, int page_size, int slot,
                                               int head) {
  const int page = slot / page_size;
  const int in_page = slot - page * page_size;
  return page * page_stride + in_page * slot_stride + head * head_stride;
}

// One CTA per new token (blockIdx.x); its threads walk the token's kv_heads * head_dim elements of
// K and of V in units of kUnit elements (8: one 16-byte vector; 1: one element).
template <int kUnit>
__global__ void __launch_bounds__(kAppendThreads)
    kv_append_kernel(const cuattn_kv_append_params p) {
  const int token = blockIdx.x;
  const int slot = p.slot_mapping[token];
  const cuattn_paged_kv_view& c = p.cache;
  if (slot < 0 || slot >= c.num_pages * c.page_size) {
    return;  // padding, or a slot outside the pools: nothing is written
  }
  const int units_per_head = c.head_dim / kUnit;
  const Word* k_src = static_cast<const Word*>(p.k_new) + token * p.k_new_row_stride;
  const Word* v_src = static_cast<const Word*>(p.v_new) + token * p.v_new_row_stride;
  Word* k_pages = static_cast<Word*>(c.k_pages);
  Word* v_pages = static_cast<Word*>(c.v_pages);
  for (int unit = threadIdx.x; unit < c.kv_heads * units_per_head; unit += blockDim.x) {
    const int head = unit / units_per_head;
    const int column = (unit - head * units_per_head) * kUnit;
    const Word* k_from = k_src + head * p.k_new_head_stride + column;
    const Word* v_from = v_src + head * p.v_new_head_stride + column;
    Word* k_to =
        k_pages +
        pool_offset(c.k_page_stride, c.k_slot_stride, c.k_head_stride, c.page_size, slot, head) +
        column;
    Word* v_to =
        v_pages +
        pool_offset(c.v_page_stride, c.v_slot_stride, c.v_head_stride, c.page_size, slot, head) +
        column;
    if constexpr (kUnit == kVecElems) {
      cuattn::st_global_v4(k_to, cuattn::ld_global_v4(k_from));
      cuattn::st_global_v4(v_to, cuattn::ld_global_v4(v_from));
    } else {
      *k_to = *k_from;
      *v_to = *v_from;
    }
  }
}

// Grid (pairs, pools): one CTA copies one page of one pool, 16 bytes a thread at a time.
__global__ void __launch_bounds__(kCopyThreads)
    kv_copy_pages_kernel(const cuattn_kv_copy_pages_params p) {
  const int pair = blockIdx.x;
  const int pool = blockIdx.y;
  const int src = p.pairs[2 * pair];
  const int dst = p.pairs[2 * pair + 1];
  if (src < 0 || src >= p.num_pages || dst < 0 || dst >= p.num_pages) {
    return;
  }
  unsigned char* base = static_cast<unsigned char*>(p.pools) + pool * p.pool_stride;
  const unsigned char* from = base + src * p.page_bytes;
  unsigned char* to = base + dst * p.page_bytes;
  for (int64_t byte = threadIdx.x * int64_t{kVecBytes}; byte < p.page_bytes;
       byte += int64_t{kCopyThreads} * kVecBytes) {
    cuattn::st_global_v4(to + byte, cuattn::ld_global_v4(from + byte));
  }
}

bool aligned(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; }

// Checks what kv_append's indexing relies on.
cuattn_status check_append(const cuattn_kv_append_params* params) {
  if (params == nullptr) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT, "kv_append: params is null");
  }
  const cuattn_kv_append_params& p = *params;
  const cuattn_paged_kv_view& c = p.cache;
  if (c.head_dim <= 0 || c.head_dim % kHeadDimMultiple != 0 || c.head_dim > kMaxHeadDim) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "kv_append: head_dim = %d, must be a multiple of %d in %d..=%d", c.head_dim,
                        kHeadDimMultiple, kHeadDimMultiple, kMaxHeadDim);
  }
  if (c.kv_heads <= 0 || c.page_size <= 0 || c.num_pages < 0 || p.num_tokens < 0) {
    return cuattn::fail(
        CUATTN_ERROR_INVALID_ARGUMENT,
        "kv_append: kv_heads = %d, page_size = %d, num_pages = %d, num_tokens = %d: "
        "kv_heads and page_size must be positive, the counts not negative",
        c.kv_heads, c.page_size, c.num_pages, p.num_tokens);
  }
  if (static_cast<int64_t>(c.num_pages) * c.page_size > INT32_MAX) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "kv_append: num_pages = %d times page_size = %d overflows int32 slots",
                        c.num_pages, c.page_size);
  }
  if (c.dtype != CUATTN_DTYPE_F16 && c.dtype != CUATTN_DTYPE_BF16) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "kv_append: dtype = %d is not f16 (0) or bf16 (1)",
                        static_cast<int>(c.dtype));
  }
  if (p.num_tokens > 0 && (c.k_pages == nullptr || c.v_pages == nullptr || p.k_new == nullptr ||
                           p.v_new == nullptr || p.slot_mapping == nullptr)) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "kv_append: k_pages, v_pages, k_new, v_new and slot_mapping must be set");
  }
  return CUATTN_OK;
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(kv_append)(const cuattn_kv_append_params* params,
                                                    void* stream) {
  const cuattn_status status = check_append(params);
  if (status != CUATTN_OK || params->num_tokens == 0) {
    return status;
  }
  const cuattn_kv_append_params& p = *params;
  const cuattn_paged_kv_view& c = p.cache;
  const int64_t strides[] = {c.k_page_stride,    c.k_slot_stride,     c.k_head_stride,
                             c.v_page_stride,    c.v_slot_stride,     c.v_head_stride,
                             p.k_new_row_stride, p.k_new_head_stride, p.v_new_row_stride,
                             p.v_new_head_stride};
  bool vectors = aligned(c.k_pages) && aligned(c.v_pages) && aligned(p.k_new) && aligned(p.v_new);
  for (const int64_t stride : strides) {
    vectors = vectors && stride % kVecElems == 0;
  }
  const dim3 grid(p.num_tokens);
  const dim3 block(kAppendThreads);
  if (vectors) {
    return cuattn::launch_kernel("kv_append", kv_append_kernel<kVecElems>, grid, block, 0, stream,
                                 p);
  }
  return cuattn::launch_kernel("kv_append", kv_append_kernel<1>, grid, block, 0, stream, p);
}

extern "C" cuattn_status CUATTN_LAUNCHER(kv_copy_pages)(const cuattn_kv_copy_pages_params* params,
                                                        void* stream) {
  if (params == nullptr) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT, "kv_copy_pages: params is null");
  }
  const cuattn_kv_copy_pages_params& p = *params;
  if (p.num_pairs < 0 || p.num_pools < 0 || p.num_pages < 0 || p.page_bytes % kVecBytes != 0 ||
      p.pool_stride % kVecBytes != 0 || !aligned(p.pools)) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "kv_copy_pages: num_pairs = %d, num_pools = %d, num_pages = %d, page_bytes "
                        "= %lld, pool_stride = %lld: counts not negative, sizes and the pools' "
                        "address multiples of %d",
                        p.num_pairs, p.num_pools, p.num_pages, static_cast<long long>(p.page_bytes),
                        static_cast<long long>(p.pool_stride), kVecBytes);
  }
  if (p.num_pairs == 0 || p.num_pools == 0) {
    return CUATTN_OK;
  }
  if (p.pairs == nullptr || p.pools == nullptr) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "kv_copy_pages: pools and pairs must be set");
  }
  const dim3 grid(p.num_pairs, p.num_pools);
  return cuattn::launch_kernel("kv_copy_pages", kv_copy_pages_kernel, grid, dim3(kCopyThreads), 0,
                               stream, p);
}
