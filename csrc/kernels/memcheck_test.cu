// memcheck_test: planted memory bugs that the emulator's memory checker must report, each with a
// correct twin that must run clean (layouts: cuattn_memcheck_test_case in cuattn.h).
#include "arch/barrier.cuh"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/status.h"
#include "cuattn_internal.h"

namespace {

using cuattn::kWarpSize;

constexpr int kThreads = 2 * kWarpSize;
// PAIR_SUM copies one element more than the block has threads, so its copy loop has a tail.
constexpr int kPairElements = kThreads + 1;
constexpr int kHistogramBins = 8;
static_assert((kHistogramBins & (kHistogramBins - 1)) == 0, "bins are picked with a bit mask");
// Keeps 64 * grid and 2 * n within int.
constexpr int64_t kMaxElements = int64_t{1} << 28;

__device__ __forceinline__ int global_index() {
  return static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
}

// NEIGHBOR_SUM: y[i] = x[i] + x[i + 1], the neighbor of the last element clamped (or not).
__global__ void neighbor_sum_kernel(int* y, const int* x, int n, bool clamp) {
  const int i = global_index();
  if (i >= n) {
    return;
  }
  const int next = clamp ? min(i + 1, n - 1) : i + 1;
  y[i] = x[i] + x[next];
}

// IOTA: buf[i] = i below `bound` (n, or n + 1 for the planted i <= n); i is the thread's index in
// the block alone when `per_block` is false (planted).
__global__ void iota_kernel(int* buf, int bound, bool per_block) {
  const int i = per_block ? global_index() : static_cast<int>(threadIdx.x);
  if (i < bound) {
    buf[i] = i;
  }
}

// STORE_PAIRS: threads 2j and 2j + 1 store to buf[j], the even one first; a barrier between the
// two stores unless `sync` is false (planted).
__global__ void store_pairs_kernel(int* buf, bool sync) {
  const int t = threadIdx.x;
  if (t % 2 == 0) {
    buf[t / 2] = t;
  }
  if (sync) {
    __syncthreads();
  }
  if (t % 2 == 1) {
    buf[t / 2] = t;
  }
}

// REVERSE_STATIC: the block's values reversed through static shared memory.
__global__ void reverse_static_kernel(int* buf, bool sync) {
  __shared__ int tile[kThreads];
  const int t = threadIdx.x;
  tile[t] = buf[t];
  if (sync) {
    __syncthreads();
  }
  buf[t] = tile[kThreads - 1 - t];
}

// SHIFT_DYNAMIC: values doubled in dynamic shared memory, then warp 1 adds warp 0's.
__global__ void shift_dynamic_kernel(int* buf, bool sync) {
  CUATTN_DYNAMIC_SMEM(int, d);  // [kThreads]
  const int t = threadIdx.x;
  d[t] = buf[t];
  __syncthreads();
  d[t] *= 2;
  if (sync) {
    __syncthreads();
  }
  buf[t] = d[t] + (t >= kWarpSize ? d[t - kWarpSize] : 0);
}

// ROTATE: each warp rotates its values by one lane through shared memory (or, planted, reads
// the other warp's).
__global__ void rotate_kernel(int* buf, bool sync, bool across_warps) {
  __shared__ int ring[kThreads];
  const int t = threadIdx.x;
  const int lane = t % kWarpSize;
  ring[t] = buf[t];
  if (sync) {
    __syncwarp();
  }
  const int source =
      across_warps ? (t + kWarpSize) % kThreads : t - lane + (lane + kWarpSize - 1) % kWarpSize;
  buf[t] = ring[source];
}

// PAIR_SUM: buf[t] = buf[t] + buf[t + 1] through dynamic shared memory; `copied` elements are
// staged (kPairElements, or kThreads for the planted short loop).
__global__ void pair_sum_kernel(int* buf, int copied) {
  CUATTN_DYNAMIC_SMEM(int, d);  // [kPairElements]
  const int t = threadIdx.x;
  for (int i = t; i < copied; i += blockDim.x) {
    d[i] = buf[i];
  }
  __syncthreads();
  buf[t] = d[t] + d[t + 1];
}

// HISTOGRAM_ATOMICS: counts of buf[t] & (kHistogramBins - 1) in shared memory; the bins are
// zeroed first unless `zero_bins` is false (planted).
__global__ void histogram_kernel(int* buf, bool zero_bins) {
  __shared__ int bins[kHistogramBins];
  const int t = threadIdx.x;
  if (t < kHistogramBins && zero_bins) {
    bins[t] = 0;
  }
  __syncthreads();
  atomicAdd(&bins[buf[t] & (kHistogramBins - 1)], 1);
  __syncthreads();
  if (t < kHistogramBins) {
    buf[t] = bins[t];
  }
}

// HANDOFF: warp 0 hands its values to warp 1 at named barrier 1 (64 threads) and, after a
// __syncthreads, to warp 2. Planted: warp 1 only arrives (`reader_waits` false), or warp 2 reads
// before the __syncthreads (`outsider_early`).
constexpr int kHandoffThreads = 3 * kWarpSize;
constexpr unsigned kHandoffBarrier = 1;
__global__ void handoff_kernel(int* buf, bool reader_waits, bool outsider_early) {
  __shared__ int slot[kWarpSize];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (warp == 0) {
    slot[lane] = buf[lane];
    if (reader_waits) {
      cuattn::named_barrier_arrive(kHandoffBarrier, 2 * kWarpSize);
    } else {
      cuattn::named_barrier_sync(kHandoffBarrier, 2 * kWarpSize);
    }
  } else if (warp == 1) {
    if (reader_waits) {
      cuattn::named_barrier_sync(kHandoffBarrier, 2 * kWarpSize);
    } else {
      cuattn::named_barrier_arrive(kHandoffBarrier, 2 * kWarpSize);
    }
    buf[kWarpSize + lane] = slot[lane];
  } else if (outsider_early) {
    buf[2 * kWarpSize + lane] = slot[lane];
  }
  __syncthreads();
  if (warp == 2 && !outsider_early) {
    buf[2 * kWarpSize + lane] = slot[lane];
  }
}

// The smallest n a case takes, or -1 for an unknown case.
int64_t min_elements(int32_t test_case) {
  switch (test_case) {
    case CUATTN_MEMCHECK_TEST_NEIGHBOR_SUM:
    case CUATTN_MEMCHECK_TEST_NEIGHBOR_SUM_PAST_END:
    case CUATTN_MEMCHECK_TEST_IOTA:
    case CUATTN_MEMCHECK_TEST_IOTA_PAST_END:
      return 1;
    case CUATTN_MEMCHECK_TEST_REVERSE_STATIC:
    case CUATTN_MEMCHECK_TEST_REVERSE_STATIC_NO_SYNCTHREADS:
    case CUATTN_MEMCHECK_TEST_SHIFT_DYNAMIC:
    case CUATTN_MEMCHECK_TEST_SHIFT_DYNAMIC_NO_SYNCTHREADS:
    case CUATTN_MEMCHECK_TEST_ROTATE_WARP:
    case CUATTN_MEMCHECK_TEST_ROTATE_WARP_NO_SYNCWARP:
    case CUATTN_MEMCHECK_TEST_ROTATE_ACROSS_WARPS_SYNCWARP:
    case CUATTN_MEMCHECK_TEST_HISTOGRAM_ATOMICS:
    case CUATTN_MEMCHECK_TEST_HISTOGRAM_ATOMICS_UNZEROED:
      return kThreads;
    case CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC:
    case CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC_UNWRITTEN:
    case CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC_TOO_SMALL:
      return kPairElements;
    case CUATTN_MEMCHECK_TEST_IOTA_BLOCKS_OVERLAP:
      return 2 * kThreads;  // at least three blocks
    case CUATTN_MEMCHECK_TEST_STORE_PAIRS:
    case CUATTN_MEMCHECK_TEST_STORE_PAIRS_NO_SYNCTHREADS:
      return kThreads / 2;
    case CUATTN_MEMCHECK_TEST_HANDOFF_NAMED:
    case CUATTN_MEMCHECK_TEST_HANDOFF_NAMED_READER_ARRIVES:
    case CUATTN_MEMCHECK_TEST_HANDOFF_NAMED_OUTSIDER:
      return kHandoffThreads;
    default:
      return -1;
  }
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(memcheck_test)(int32_t test_case, void* buf, int64_t n,
                                                        void* stream) {
  const int64_t needed = min_elements(test_case);
  if (needed < 0) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "memcheck_test: test_case = %d is not a cuattn_memcheck_test_case",
                        test_case);
  }
  if (buf == nullptr || n < needed || n > kMaxElements) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "memcheck_test: case %d needs a buffer and n in %lld..=%lld, got %p and "
                        "n = %lld",
                        test_case, static_cast<long long>(needed),
                        static_cast<long long>(kMaxElements), buf, static_cast<long long>(n));
  }
  int* ints = static_cast<int*>(buf);
  const int elements = static_cast<int>(n);
  const dim3 block(kThreads);
  const dim3 one_block(1);
  const size_t pair_smem = sizeof(int) * kPairElements;
  switch (test_case) {
    case CUATTN_MEMCHECK_TEST_NEIGHBOR_SUM:
    case CUATTN_MEMCHECK_TEST_NEIGHBOR_SUM_PAST_END: {
      const bool clamp = test_case == CUATTN_MEMCHECK_TEST_NEIGHBOR_SUM;
      return cuattn::launch_kernel(
          clamp ? "memcheck_test_neighbor_sum" : "memcheck_test_neighbor_sum_past_end",
          neighbor_sum_kernel, dim3((elements + kThreads - 1) / kThreads), block, 0, stream, ints,
          static_cast<const int*>(ints + elements), elements, clamp);
    }
    case CUATTN_MEMCHECK_TEST_IOTA:
      return cuattn::launch_kernel("memcheck_test_iota", iota_kernel, dim3(elements / kThreads + 1),
                                   block, 0, stream, ints, elements, true);
    case CUATTN_MEMCHECK_TEST_IOTA_PAST_END:
      return cuattn::launch_kernel("memcheck_test_iota_past_end", iota_kernel,
                                   dim3(elements / kThreads + 1), block, 0, stream, ints,
                                   elements + 1, true);
    case CUATTN_MEMCHECK_TEST_IOTA_BLOCKS_OVERLAP:
      return cuattn::launch_kernel("memcheck_test_iota_blocks_overlap", iota_kernel,
                                   dim3(elements / kThreads + 1), block, 0, stream, ints, elements,
                                   false);
    case CUATTN_MEMCHECK_TEST_STORE_PAIRS:
      return cuattn::launch_kernel("memcheck_test_store_pairs", store_pairs_kernel, one_block,
                                   block, 0, stream, ints, true);
    case CUATTN_MEMCHECK_TEST_STORE_PAIRS_NO_SYNCTHREADS:
      return cuattn::launch_kernel("memcheck_test_store_pairs_no_syncthreads", store_pairs_kernel,
                                   one_block, block, 0, stream, ints, false);
    case CUATTN_MEMCHECK_TEST_REVERSE_STATIC:
      return cuattn::launch_kernel("memcheck_test_reverse_static", reverse_static_kernel, one_block,
                                   block, 0, stream, ints, true);
    case CUATTN_MEMCHECK_TEST_REVERSE_STATIC_NO_SYNCTHREADS:
      return cuattn::launch_kernel("memcheck_test_reverse_static_no_syncthreads",
                                   reverse_static_kernel, one_block, block, 0, stream, ints, false);
    case CUATTN_MEMCHECK_TEST_SHIFT_DYNAMIC:
      return cuattn::launch_kernel("memcheck_test_shift_dynamic", shift_dynamic_kernel, one_block,
                                   block, sizeof(int) * kThreads, stream, ints, true);
    case CUATTN_MEMCHECK_TEST_SHIFT_DYNAMIC_NO_SYNCTHREADS:
      return cuattn::launch_kernel("memcheck_test_shift_dynamic_no_syncthreads",
                                   shift_dynamic_kernel, one_block, block, sizeof(int) * kThreads,
                                   stream, ints, false);
    case CUATTN_MEMCHECK_TEST_ROTATE_WARP:
      return cuattn::launch_kernel("memcheck_test_rotate_warp", rotate_kernel, one_block, block, 0,
                                   stream, ints, true, false);
    case CUATTN_MEMCHECK_TEST_ROTATE_WARP_NO_SYNCWARP:
      return cuattn::launch_kernel("memcheck_test_rotate_warp_no_syncwarp", rotate_kernel,
                                   one_block, block, 0, stream, ints, false, false);
    case CUATTN_MEMCHECK_TEST_ROTATE_ACROSS_WARPS_SYNCWARP:
      return cuattn::launch_kernel("memcheck_test_rotate_across_warps_syncwarp", rotate_kernel,
                                   one_block, block, 0, stream, ints, true, true);
    case CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC:
      return cuattn::launch_kernel("memcheck_test_pair_sum_dynamic", pair_sum_kernel, one_block,
                                   block, pair_smem, stream, ints, kPairElements);
    case CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC_UNWRITTEN:
      return cuattn::launch_kernel("memcheck_test_pair_sum_dynamic_unwritten", pair_sum_kernel,
                                   one_block, block, pair_smem, stream, ints, kThreads);
    case CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC_TOO_SMALL:
      return cuattn::launch_kernel("memcheck_test_pair_sum_dynamic_too_small", pair_sum_kernel,
                                   one_block, block, sizeof(int) * kThreads, stream, ints,
                                   kPairElements);
    case CUATTN_MEMCHECK_TEST_HISTOGRAM_ATOMICS:
      return cuattn::launch_kernel("memcheck_test_histogram_atomics", histogram_kernel, one_block,
                                   block, 0, stream, ints, true);
    case CUATTN_MEMCHECK_TEST_HISTOGRAM_ATOMICS_UNZEROED:
      return cuattn::launch_kernel("memcheck_test_histogram_atomics_unzeroed", histogram_kernel,
                                   one_block, block, 0, stream, ints, false);
    case CUATTN_MEMCHECK_TEST_HANDOFF_NAMED:
      return cuattn::launch_kernel("memcheck_test_handoff_named", handoff_kernel, one_block,
                                   dim3(kHandoffThreads), 0, stream, ints, true, false);
    case CUATTN_MEMCHECK_TEST_HANDOFF_NAMED_READER_ARRIVES:
      return cuattn::launch_kernel("memcheck_test_handoff_named_reader_arrives", handoff_kernel,
                                   one_block, dim3(kHandoffThreads), 0, stream, ints, false, false);
    case CUATTN_MEMCHECK_TEST_HANDOFF_NAMED_OUTSIDER:
      return cuattn::launch_kernel("memcheck_test_handoff_named_outsider", handoff_kernel,
                                   one_block, dim3(kHandoffThreads), 0, stream, ints, true, true);
  }
  return cuattn::fail(CUATTN_ERROR_INTERNAL, "memcheck_test: case %d has no launch", test_case);
}
