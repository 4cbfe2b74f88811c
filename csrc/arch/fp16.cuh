// fp16.cuh: the emulator's __half, __nv_bfloat16, __half2 and __nv_bfloat162 (CUDA's layouts) and
// their conversions: round to nearest even, subnormals, infinities, NaNs quieted with payload kept.
#ifndef CUATTN_ARCH_FP16_CUH_
#define CUATTN_ARCH_FP16_CUH_

#ifdef CUATTN_EMU  // the CUDA build has cuda_fp16.h and cuda_bf16.h

#include <cstdint>
#include <cstring>

#include "emu/runtime.h"

namespace cuattn::emu {
namespace fp16_bits {

constexpr uint32_t kF32SignBit = 0x80000000u;
constexpr uint32_t kF32ExponentMask = 0x7f800000u;
constexpr uint32_t kF32MantissaMask = 0x007fffffu;
constexpr uint32_t kF32QuietBit = 0x00400000u;
constexpr uint32_t kF32ImplicitBit = 0x00800000u;
constexpr int kF32MantissaBits = 23;
constexpr int kF32ExponentBias = 127;

constexpr uint32_t kF16SignBit = 0x8000u;
constexpr uint32_t kF16ExponentMask = 0x7c00u;
constexpr uint32_t kF16MantissaMask = 0x03ffu;
constexpr uint32_t kF16QuietBit = 0x0200u;
constexpr int kF16MantissaBits = 10;
constexpr int kF16ExponentBias = 15;
constexpr int kF16MaxBiasedExponent = 0x1f;  // infinities and NaNs
// Mantissa bits a float loses on the way to half.
constexpr int kF16DroppedBits = kF32MantissaBits - kF16MantissaBits;

constexpr uint32_t kBF16QuietBit = 0x0040u;
// bf16 is the top half of a float.
constexpr int kBF16Shift = 16;

inline uint32_t float_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
}

inline float bits_float(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

// Drops the low `shift` bits of `value`, rounding to nearest with ties to even.
inline uint32_t shift_right_round_even(uint32_t value, int shift) {
  const uint32_t round_bit = 1u << (shift - 1);
  const uint32_t sticky_bits = round_bit - 1;
  const uint32_t kept_lsb = round_bit << 1;
  const bool round_up = (value & round_bit) != 0 && (value & (sticky_bits | kept_lsb)) != 0;
  return (value >> shift) + (round_up ? 1u : 0u);
}

inline uint16_t float_to_half(float x) {
  const uint32_t bits = float_bits(x);
  const uint32_t sign = (bits & kF32SignBit) >> 16;
  const uint32_t mantissa = bits & kF32MantissaMask;
  if ((bits & kF32ExponentMask) == kF32ExponentMask) {
    // Infinity, or NaN: quiet it and keep the payload's top bits.
    const uint32_t nan_bits = mantissa != 0 ? kF16QuietBit | (mantissa >> kF16DroppedBits) : 0;
    return static_cast<uint16_t>(sign | kF16ExponentMask | nan_bits);
  }
  const int exponent =
      static_cast<int>((bits & kF32ExponentMask) >> kF32MantissaBits) - kF32ExponentBias;
  const int half_exponent = exponent + kF16ExponentBias;
  if (half_exponent >= kF16MaxBiasedExponent) {
    return static_cast<uint16_t>(sign | kF16ExponentMask);  // overflow: infinity
  }
  if (half_exponent <= 0) {
    // Subnormal half: the significand, implicit bit included, shifted to the 2^-24 grid.
    const int shift = kF16DroppedBits + 1 - half_exponent;
    if (shift > kF32MantissaBits + 1) {
      return static_cast<uint16_t>(sign);  // below half the smallest subnormal
    }
    return static_cast<uint16_t>(sign | shift_right_round_even(mantissa | kF32ImplicitBit, shift));
  }
  // Normal: a carry out of the mantissa correctly bumps the exponent (up to infinity).
  const uint32_t unrounded = (static_cast<uint32_t>(half_exponent) << kF32MantissaBits) | mantissa;
  return static_cast<uint16_t>(sign | shift_right_round_even(unrounded, kF16DroppedBits));
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & kF16SignBit) << 16;
  const uint32_t exponent = (static_cast<uint32_t>(h) & kF16ExponentMask) >> kF16MantissaBits;
  uint32_t mantissa = h & kF16MantissaMask;
  if (exponent == kF16MaxBiasedExponent) {
    const uint32_t nan_bits = mantissa != 0 ? kF32QuietBit | (mantissa << kF16DroppedBits) : 0;
    return bits_float(sign | kF32ExponentMask | nan_bits);
  }
  if (exponent == 0) {
    if (mantissa == 0) {
      return bits_float(sign);
    }
    // Subnormal half: normalize, moving the top set bit to the implicit position.
    int f32_exponent = kF32ExponentBias - kF16ExponentBias + 1;
    while ((mantissa & (kF16MantissaMask + 1)) == 0) {
      mantissa <<= 1;
      --f32_exponent;
    }
    mantissa &= kF16MantissaMask;
    return bits_float(sign | (static_cast<uint32_t>(f32_exponent) << kF32MantissaBits) |
                      (mantissa << kF16DroppedBits));
  }
  const uint32_t f32_exponent = exponent + kF32ExponentBias - kF16ExponentBias;
  return bits_float(sign | (f32_exponent << kF32MantissaBits) | (mantissa << kF16DroppedBits));
}

inline uint16_t float_to_bfloat16(float x) {
  const uint32_t bits = float_bits(x);
  if ((bits & ~kF32SignBit) > kF32ExponentMask) {
    return static_cast<uint16_t>((bits >> kBF16Shift) | kBF16QuietBit);  // NaN, quieted
  }
  // Rounding may carry into the exponent, up to infinity, as it should.
  return static_cast<uint16_t>(shift_right_round_even(bits, kBF16Shift));
}

inline float bfloat16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << kBF16Shift;
  if ((bits & ~kF32SignBit) > kF32ExponentMask) {
    bits |= kF32QuietBit;
  }
  return bits_float(bits);
}

}  // namespace fp16_bits

struct __half_raw {
  unsigned short x;
};

struct __nv_bfloat16_raw {
  unsigned short x;
};

struct __align__(2) __half {
  __half() = default;
  __half(const __half_raw& raw) : __x(raw.x) {}
  __half(float value) : __x(fp16_bits::float_to_half(value)) {}
  operator float() const { return fp16_bits::half_to_float(__x); }
  operator __half_raw() const { return __half_raw{__x}; }

  // The bits. CUDA's member of this name is protected; public here so that memcpy of the type
  // raises no -Wclass-memaccess. Kernels use __half_as_ushort and friends.
  unsigned short __x;
};

struct __align__(2) __nv_bfloat16 {
  __nv_bfloat16() = default;
  __nv_bfloat16(const __nv_bfloat16_raw& raw) : __x(raw.x) {}
  __nv_bfloat16(float value) : __x(fp16_bits::float_to_bfloat16(value)) {}
  operator float() const { return fp16_bits::bfloat16_to_float(__x); }
  operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }

  // The bits. CUDA's member of this name is protected; public here so that memcpy of the type
  // raises no -Wclass-memaccess. Kernels use __half_as_ushort and friends.
  unsigned short __x;
};

struct __align__(4) __half2 {
  __half x, y;
  __half2() = default;
  __half2(const __half& a, const __half& b) : x(a), y(b) {}
};

struct __align__(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
  __nv_bfloat162() = default;
  __nv_bfloat162(const __nv_bfloat16& a, const __nv_bfloat16& b) : x(a), y(b) {}
};

static_assert(sizeof(__half) == 2 && sizeof(__nv_bfloat16) == 2, "CUDA's 2-byte layouts");
static_assert(sizeof(__half2) == 4 && sizeof(__nv_bfloat162) == 4, "CUDA's 4-byte layouts");
static_assert(std::is_trivially_copyable_v<__half2> && std::is_trivially_copyable_v<__nv_bfloat162>,
              "shuffles and shared memory copy them as bits");

inline __half __float2half_rn(float a) { return __half(a); }
inline __half __float2half(float a) { return __half(a); }
inline float __half2float(__half a) { return static_cast<float>(a); }
inline __half2 __floats2half2_rn(float a, float b) { return __half2(__half(a), __half(b)); }
inline __half2 __float2half2_rn(float a) { return __half2(__half(a), __half(a)); }
inline __half2 __halves2half2(__half a, __half b) { return __half2(a, b); }
inline __half __low2half(__half2 a) { return a.x; }
inline __half __high2half(__half2 a) { return a.y; }
inline float __low2float(__half2 a) { return static_cast<float>(a.x); }
inline float __high2float(__half2 a) { return static_cast<float>(a.y); }
inline float2 __half22float2(__half2 a) { return float2{__low2float(a), __high2float(a)}; }
inline unsigned short __half_as_ushort(__half h) { return static_cast<__half_raw>(h).x; }
inline __half __ushort_as_half(unsigned short bits) { return __half(__half_raw{bits}); }

inline __nv_bfloat16 __float2bfloat16_rn(float a) { return __nv_bfloat16(a); }
inline __nv_bfloat16 __float2bfloat16(float a) { return __nv_bfloat16(a); }
inline float __bfloat162float(__nv_bfloat16 a) { return static_cast<float>(a); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return __nv_bfloat162(__nv_bfloat16(a), __nv_bfloat16(b));
}
inline __nv_bfloat162 __float2bfloat162_rn(float a) {
  return __nv_bfloat162(__nv_bfloat16(a), __nv_bfloat16(a));
}
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __nv_bfloat162(a, b);
}
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 a) { return a.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 a) { return a.y; }
inline float __low2float(__nv_bfloat162 a) { return static_cast<float>(a.x); }
inline float __high2float(__nv_bfloat162 a) { return static_cast<float>(a.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 a) {
  return float2{__low2float(a), __high2float(a)};
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) {
  return static_cast<__nv_bfloat16_raw>(h).x;
}
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short bits) {
  return __nv_bfloat16(__nv_bfloat16_raw{bits});
}

}  // namespace cuattn::emu

// Global names, as in CUDA (see runtime.h for why the definitions live in cuattn::emu).
using cuattn::emu::__bfloat1622float2;
using cuattn::emu::__bfloat162float;
using cuattn::emu::__bfloat16_as_ushort;
using cuattn::emu::__float2bfloat16;
using cuattn::emu::__float2bfloat162_rn;
using cuattn::emu::__float2bfloat16_rn;
using cuattn::emu::__float2half;
using cuattn::emu::__float2half2_rn;
using cuattn::emu::__float2half_rn;
using cuattn::emu::__floats2bfloat162_rn;
using cuattn::emu::__floats2half2_rn;
using cuattn::emu::__half;
using cuattn::emu::__half2;
using cuattn::emu::__half22float2;
using cuattn::emu::__half2float;
using cuattn::emu::__half_as_ushort;
using cuattn::emu::__half_raw;
using cuattn::emu::__halves2bfloat162;
using cuattn::emu::__halves2half2;
using cuattn::emu::__high2bfloat16;
using cuattn::emu::__high2float;
using cuattn::emu::__high2half;
using cuattn::emu::__low2bfloat16;
using cuattn::emu::__low2float;
using cuattn::emu::__low2half;
using cuattn::emu::__nv_bfloat16;
using cuattn::emu::__nv_bfloat162;
using cuattn::emu::__nv_bfloat16_raw;
using cuattn::emu::__ushort_as_bfloat16;
using cuattn::emu::__ushort_as_half;
using half = cuattn::emu::__half;
using half2 = cuattn::emu::__half2;
using nv_bfloat16 = cuattn::emu::__nv_bfloat16;
using nv_bfloat162 = cuattn::emu::__nv_bfloat162;

#endif  // CUATTN_EMU

#endif  // CUATTN_ARCH_FP16_CUH_
