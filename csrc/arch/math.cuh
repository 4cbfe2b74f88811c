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

// 2^x on the FMA pipe: an SM's ex2 unit (MUFU) does 16 a clock, its FMA pipe 128, so a kernel
// that computes a share of its exponentials here runs both at once (FlashAttention-4 does the
// same on Blackwell). x = j + f with j = round(x): adding 1.5 * 2^23 leaves j in the low mantissa
// bits of the sum. 2^f on [-1/2, 1/2] is a degree-4 polynomial with 2^0 = 1 exact, fitted for
// cuattn near minimax in relative error (2.8e-6, 2^-18.4, against ex2.approx's 2^-22: far below
// the rounding of P to 16 bits for the P V mma); 2^j is built in the exponent bits and multiplied
// in. x <= -127 (-inf among them) gives +0, as ex2.approx.ftz does below 2^-126, and so may x up
// to -126.5 (else a subnormal); x >= 127.5 gives +infinity (2^x overflows from 128); NaN gives
// NaN. Eleven instructions, none on the MUFU.
__device__ __forceinline__ float fma_exp2(float x) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: x + kRound is rounded to an integer
  constexpr float kC1 = 6.931241751e-01f, kC2 = 2.402409911e-01f, kC3 = 5.590648204e-02f,
                  kC4 = 9.582873434e-03f;
  // Clamped to [-127, 128], where 2^j spans +0 to infinity; NaN compares false and stays.
  const float above = x < -127.0f ? -127.0f : x;
  const float xc = above > 128.0f ? 128.0f : above;
  const float t = xc + kRound;
  const float f = xc - (t - kRound);  // in [-1/2, 1/2]
  float p = fmaf(kC4, f, kC3);
  p = fmaf(p, f, kC2);
  p = fmaf(p, f, kC1);
  p = fmaf(p, f, 1.0f);
  // The low 9 bits of t's are j mod 2^9; shifted into the exponent field (the rest shifts out)
  // and biased, they are 2^j: +0 at j = -127, infinity at j = 128.
  const float two_to_j = __uint_as_float((__float_as_uint(t) << 23) + 0x3f800000u);
  return p * two_to_j;
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
