// vec.cuh: 16-byte vector loads and stores of global and shared memory (uint4), and packing of
// two floats into a bf16x2 / f16x2 register (round to nearest even) and back.
#ifndef CUATTN_ARCH_VEC_CUH_
#define CUATTN_ARCH_VEC_CUH_

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/cuda_compat.cuh"

namespace cuattn {

// One vector access: 16 bytes, 16-byte aligned (ld/st .v4.u32; a GPU faults on a misaligned one).
constexpr int kVecBytes = 16;
// Elements of T in one vector: 8 bf16 or fp16, 4 floats.
template <typename T>
constexpr int kVecElems = kVecBytes / static_cast<int>(sizeof(T));

// In the CUDA build these are plain typed accesses: nvcc emits LDG.128 / STG.128 / LDS.128 /
// STS.128 for them, and, unlike inline asm, orders them with the kernel's other accesses and its
// barriers. In the emulator they fault on a misaligned address or the wrong state space (shared
// for the *_shared_* ones, not shared for the *_global_* ones); the access itself is kernel code
// like any other, which the memory checker sees.

#ifdef CUATTN_EMU
namespace vec_emu {

inline void check(const char* name, const void* p, bool shared) {
  if (reinterpret_cast<uintptr_t>(p) % kVecBytes != 0) {
    emu::kernel_fault("%s: misaligned address %p: 16-byte accesses need 16-byte alignment", name,
                      p);
  }
  if (emu::is_shared_address(p, kVecBytes) != shared) {
    emu::kernel_fault("%s: address %p is %s", name, p,
                      shared ? "not in shared memory" : "in shared memory, not global memory");
  }
}

inline uint4 load(const char* name, const void* p, bool shared) {
  check(name, p, shared);
  uint4 v;
  std::memcpy(&v, p, kVecBytes);
  return v;
}

inline void store(const char* name, void* p, const uint4& v, bool shared) {
  check(name, p, shared);
  std::memcpy(p, &v, kVecBytes);
}

}  // namespace vec_emu
#endif  // CUATTN_EMU

__device__ __forceinline__ uint4 ld_global_v4(const void* gmem) {
#ifdef CUATTN_EMU
  return vec_emu::load("ld_global_v4", gmem, /*shared=*/false);
#else
  return *static_cast<const uint4*>(gmem);
#endif
}

__device__ __forceinline__ void st_global_v4(void* gmem, const uint4& v) {
#ifdef CUATTN_EMU
  vec_emu::store("st_global_v4", gmem, v, /*shared=*/false);
#else
  *static_cast<uint4*>(gmem) = v;
#endif
}

__device__ __forceinline__ uint4 ld_shared_v4(const void* smem) {
#ifdef CUATTN_EMU
  return vec_emu::load("ld_shared_v4", smem, /*shared=*/true);
#else
  return *static_cast<const uint4*>(smem);
#endif
}

__device__ __forceinline__ void st_shared_v4(void* smem, const uint4& v) {
#ifdef CUATTN_EMU
  vec_emu::store("st_shared_v4", smem, v, /*shared=*/true);
#else
  *static_cast<uint4*>(smem) = v;
#endif
}

// The bits of a 4-byte value (bf16x2 / f16x2 pairs) as the b32 register mma and ldmatrix use.
template <typename Pair>
__device__ __forceinline__ uint32_t pair_bits(const Pair& pair) {
  static_assert(sizeof(Pair) == sizeof(uint32_t), "a pair of 16-bit values");
  uint32_t bits;
  memcpy(&bits, &pair, sizeof(bits));
  return bits;
}

// lo in the low 16 bits, hi in the high 16 bits (the lower-indexed element of an mma pair first),
// each rounded to nearest even.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  return pair_bits(__floats2bfloat162_rn(lo, hi));
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  return pair_bits(__floats2half2_rn(lo, hi));
}

// The two elements of a packed pair as floats (exact): x from the low 16 bits.
__device__ __forceinline__ float2 unpack_bf16x2(uint32_t bits) {
  __nv_bfloat162 pair;
  memcpy(&pair, &bits, sizeof(pair));
  return __bfloat1622float2(pair);
}

__device__ __forceinline__ float2 unpack_half2(uint32_t bits) {
  __half2 pair;
  memcpy(&pair, &bits, sizeof(pair));
  return __half22float2(pair);
}

// The same for a kernel's element type T (__nv_bfloat16 or __half).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>, "bf16 or fp16");
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return pack_bf16x2(lo, hi);
  } else {
    return pack_half2(lo, hi);
  }
}

// The two elements of a packed pair of a kernel's element type T as floats (exact).
template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t bits) {
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>, "bf16 or fp16");
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return unpack_bf16x2(bits);
  } else {
    return unpack_half2(bits);
  }
}

}  // namespace cuattn

#endif  // CUATTN_ARCH_VEC_CUH_
