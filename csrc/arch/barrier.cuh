// barrier.cuh: named CTA barriers (bar.sync / bar.arrive with an id and a thread count), for
// groups of warps that take turns: PTX in the CUDA build, the emulator's barrier state otherwise.
#ifndef CUATTN_ARCH_BARRIER_CUH_
#define CUATTN_ARCH_BARRIER_CUH_

#include "common/cuda_compat.cuh"

namespace cuattn {

// PTX ISA, "bar, barrier": barrier `id` (1-15; __syncthreads uses 0) completes once `threads`
// threads (a multiple of the warp size) have reached it through bar.sync or bar.arrive, counted
// a warp at a time; every thread of a warp must execute the same instruction. bar.sync waits for
// the completion, bar.arrive does not. Both order this thread's earlier memory accesses before
// the completion for the threads that wait.

// Arrives at barrier `id` and waits for it to complete.
__device__ __forceinline__ void named_barrier_sync(unsigned id, unsigned threads) {
#ifdef CUATTN_EMU
  emu::named_barrier(id, threads, /*wait=*/true);
#else
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
#endif
}

// Arrives at barrier `id` and goes on.
__device__ __forceinline__ void named_barrier_arrive(unsigned id, unsigned threads) {
#ifdef CUATTN_EMU
  emu::named_barrier(id, threads, /*wait=*/false);
#else
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
#endif
}

}  // namespace cuattn

#endif  // CUATTN_ARCH_BARRIER_CUH_
