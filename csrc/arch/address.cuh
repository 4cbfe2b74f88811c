// address.cuh: state-space addresses for PTX operands: the 32-bit .shared address and the .global
// address of generic pointers (CUDA build only; the emulator passes generic pointers).
#ifndef CUATTN_ARCH_ADDRESS_CUH_
#define CUATTN_ARCH_ADDRESS_CUH_

#include <cstdint>

#include "common/cuda_compat.cuh"

namespace cuattn {

#ifndef CUATTN_EMU

// The .shared state-space address of a generic pointer into shared memory (PTX ISA, "cvta"):
// shared windows are under 4 GiB, so 32 bits hold it and "r" operands take it.
__device__ __forceinline__ uint32_t shared_address(const void* smem) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(smem));
}

// The .global state-space address of a generic pointer into global memory.
__device__ __forceinline__ uint64_t global_address(const void* gmem) {
  return static_cast<uint64_t>(__cvta_generic_to_global(gmem));
}

#endif  // CUATTN_EMU

}  // namespace cuattn

#endif  // CUATTN_ARCH_ADDRESS_CUH_
