// mma.cuh: the tensor-core product mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.f32: PTX in
// the CUDA build; in the emulator, a warp exchange that follows the ISA's fragment layouts.
#ifndef CUATTN_ARCH_MMA_CUH_
#define CUATTN_ARCH_MMA_CUH_

#include <cstdint>
#include <type_traits>

#include "common/cuda_compat.cuh"

namespace cuattn {

// D (16x8, fp32) = A (16x16, row-major) * B (16x8, column-major) + C (16x8, fp32).
constexpr int kMmaM = 16;
constexpr int kMmaN = 8;
constexpr int kMmaK = 16;
// b32 registers per lane: A and B hold two 16-bit elements per register, C and D one float each.
constexpr int kMmaARegs = 4;
constexpr int kMmaBRegs = 2;
constexpr int kMmaCRegs = 4;

// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with
// group = lane / 4 and q = lane % 4; the lower-indexed element of a pair sits in the low 16 bits:
//   a[0] = A[group][2q, 2q+1]    a[1] = A[group+8][2q, 2q+1]
//   a[2] = A[group][2q+8, 2q+9]  a[3] = A[group+8][2q+8, 2q+9]
//   b[0] = B[2q, 2q+1][group]    b[1] = B[2q+8, 2q+9][group]
//   c[0], c[1] = C[group][2q, 2q+1]    c[2], c[3] = C[group+8][2q, 2q+1]    (d likewise)
//
// The emulator computes each element of D in fp32 as ((C + p_0) + p_1) + ... + p_15, with
// p_k = A[r][k] * B[k][c] exact in fp32 (bf16 and fp16 products need at most 16 and 22 of its 24
// significand bits). The tensor cores add the same exact products in another order, aligning them
// to the largest exponent with truncation (Fasi et al., "Numerical behavior of NVIDIA tensor
// cores", PeerJ CS 2021), so the two builds may differ in the last bits. Both stay close to the
// exact value: the emulator within 16 u = 2^-20 of S = |C| + sum_k |p_k| (the sequential fp32
// bound, u = 2^-24); the hardware within about 17 truncations of 2^-23 of the largest term, under
// 2^-19 S. tests/primitives.rs allows 2^-18 S, far below the O(|p_k|) error of any element taken
// from the wrong place.

#ifdef CUATTN_EMU

namespace mma_emu {

// What each lane hands to the warp exchange: its own fragments, on its fiber stack.
struct LaneFragments {
  const uint32_t* a;  // kMmaARegs
  const uint32_t* b;  // kMmaBRegs
  const float* c;     // kMmaCRegs
  float* d;           // kMmaCRegs; may alias c
};

constexpr int kHalfBits = 16;
constexpr uint32_t kHalfMask = 0xffffu;

template <typename T>
inline float element(uint32_t reg, int half) {
  const auto bits = static_cast<uint16_t>((reg >> (kHalfBits * half)) & kHalfMask);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return emu::fp16_bits::bfloat16_to_float(bits);
  } else {
    return emu::fp16_bits::half_to_float(bits);
  }
}

// Runs on the last lane to arrive: assembles A, B and C from all 32 lanes, then writes D.
template <typename T>
inline void compute(void* const* lanes, unsigned) {
  float a[kMmaM][kMmaK];  // A, row-major
  float b[kMmaK][kMmaN];  // B, indexed [k][n]
  float c[kMmaM][kMmaN];
  for (int lane = 0; lane < kWarpSize; ++lane) {
    const LaneFragments& f = *static_cast<const LaneFragments*>(lanes[lane]);
    const int group = lane / 4;
    const int q = lane % 4;
    for (int half = 0; half < 2; ++half) {
      const int col = 2 * q + half;
      a[group][col] = element<T>(f.a[0], half);
      a[group + 8][col] = element<T>(f.a[1], half);
      a[group][col + 8] = element<T>(f.a[2], half);
      a[group + 8][col + 8] = element<T>(f.a[3], half);
      b[col][group] = element<T>(f.b[0], half);
      b[col + 8][group] = element<T>(f.b[1], half);
      c[group][col] = f.c[half];
      c[group + 8][col] = f.c[2 + half];
    }
  }
  for (int lane = 0; lane < kWarpSize; ++lane) {
    const LaneFragments& f = *static_cast<const LaneFragments*>(lanes[lane]);
    for (int i = 0; i < kMmaCRegs; ++i) {
      const int row = lane / 4 + (i / 2) * 8;
      const int col = 2 * (lane % 4) + i % 2;
      float sum = c[row][col];
      for (int k = 0; k < kMmaK; ++k) {
        sum += a[row][k] * b[k][col];
      }
      f.d[i] = sum;
    }
  }
}

template <typename T>
inline constexpr emu::WarpExchange kExchange{
    std::is_same_v<T, __nv_bfloat16> ? "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
                                     : "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
    &compute<T>};

}  // namespace mma_emu

#endif  // CUATTN_EMU

// d = a * b + c for one m16n8k16 tile; T is __nv_bfloat16 or __half (the type of A and B).
// Every lane of the warp must call it together (.sync.aligned). d may alias c.
//   a: 4 x b32 = 8 elements of the 16x16 A tile, rows group and group+8 (layout above)
//   b: 2 x b32 = 4 elements of the 16x8 B tile, column group
//   c, d: 4 floats of the 16x8 accumulator, rows group and group+8, columns 2q and 2q+1
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[kMmaCRegs], const uint32_t (&a)[kMmaARegs],
                                             const uint32_t (&b)[kMmaBRegs],
                                             const float (&c)[kMmaCRegs]) {
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>,
                "mma_m16n8k16 takes bf16 or fp16 inputs");
#ifdef CUATTN_EMU
  mma_emu::LaneFragments lane{a, b, c, d};
  emu::warp_exchange(mma_emu::kExchange<T>, emu::kFullWarpMask, &lane);
#else
  // Not volatile: a pure function of registers, which the compiler may schedule freely (between
  // the volatile shared-memory loads that feed it).
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
          "f"(c[2]), "f"(c[3]));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
          "f"(c[2]), "f"(c[3]));
  }
#endif
}

}  // namespace cuattn

#endif  // CUATTN_ARCH_MMA_CUH_
