// math.cuh: the online softmax's arithmetic: fast_exp2 (ex2.approx.ftz.f32) and max/sum reductions
// across the 4 lanes of a quad (one row of an mma accumulator) and across the whole warp.
#ifndef CUATTN_ARCH_MATH_CUH_
#define CUATTN_ARCH_MATH_CUH_

#include "common/cuda_compat.cuh"

namespace cuattn {

constexpr unsigned kMathFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;  // log2(e): exp(x) = exp2(x * kLog2e)
// The lanes of a quad, 4q..4q+3, hold the same accumulator rows of an mma tile.
constexpr int kQuadSize = 4;

// 2^x. PTX ISA, "Floating Point Instructions: ex2": ex2.approx.f32 approximates 2^x with a
// maximum relative error of 2 ulp over the full range (2^-22 of the result for normal results);
// .ftz flushes subnormal inputs (2^x = 1) and results (to +0). -inf gives +0, +inf gives +inf,
// NaN gives NaN. The emulator uses exp2f (within 1 ulp) and flushes subnormal results too, so
// both builds stay within 2^-22 relative of 2^x where it is normal; tests/primitives.rs checks
// exactly that bound, and that results below 2^-126 are +0.
//
// Plain asm, not asm volatile: the instruction is a pure function the compiler may combine.
#ifdef CUATTN_EMU
constexpr float kSmallestNormal = 1.17549435e-38f;  // 2^-126
#endif

__device__ __forceinline__ float fast_exp2(float x) {
#ifdef CUATTN_EMU
  const float y = exp2f(x);
  return y < kSmallestNormal ? 0.0f : y;  // also +0 for -inf; NaN compares false and stays
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#endif
}

// 1/x. PTX ISA, "Floating Point Instructions: rcp": rcp.approx.ftz.f32 is within 1 ulp; .ftz
// flushes subnormal inputs and results. The emulator divides (correctly rounded).
__device__ __forceinline__ float fast_rcp(float x) {
#ifdef CUATTN_EMU
  return 1.0f / x;
#else
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#endif
}

// tanh(x) = 1 - 2 / (2^(2 x log2(e)) + 1) on fast_exp2 and fast_rcp: a handful of instructions and
// registers, against tanhf's polynomial. Its error is absolute, within about 2^-22 (the two
// approximations' relative errors on the subtracted term, which is at most 2): not relative near
// x = 0, which a softcapped score, cap * tanh(s / cap), does not need: the softmax sees its
// absolute error, cap * 2^-22. Saturates to +-1 for large |x| (2^(+inf) = inf, 1/inf = 0); NaN
// stays NaN.
__device__ __forceinline__ float fast_tanh(float x) {
  constexpr float kTwoLog2e = 2.0f * kLog2e;
  return 1.0f - 2.0f * fast_rcp(fast_exp2(x * kTwoLog2e) + 1.0f);
}

// Butterfly reductions over __shfl_xor_sync: every lane ends with the same value, computed in a
// fixed order (lane offsets 1 then 2 for a quad; 16, 8, 4, 2, 1 for the warp), so a sum is
// reproducible bit for bit. Every lane of the warp must call them together.
__device__ __forceinline__ float quad_max(float x) {
  for (int offset = 1; offset < kQuadSize; offset *= 2) {
    x = fmaxf(x, __shfl_xor_sync(kMathFullMask, x, offset));
  }
  return x;
}

__device__ __forceinline__ float quad_sum(float x) {
  for (int offset = 1; offset < kQuadSize; offset *= 2) {
    x += __shfl_xor_sync(kMathFullMask, x, offset);
  }
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    x = fmaxf(x, __shfl_xor_sync(kMathFullMask, x, offset));
  }
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    x += __shfl_xor_sync(kMathFullMask, x, offset);
  }
  return x;
}

}  // namespace cuattn

#endif  // CUATTN_ARCH_MATH_CUH_
