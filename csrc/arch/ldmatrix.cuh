// ldmatrix.cuh: ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16, the warp-level load of
// 8x8 matrices from shared memory into mma fragments: PTX, or a warp exchange in the emulator.
#ifndef CUATTN_ARCH_LDMATRIX_CUH_
#define CUATTN_ARCH_LDMATRIX_CUH_

#include <cstdint>

#include "arch/address.cuh"
#include "common/cuda_compat.cuh"
#ifdef CUATTN_EMU
#include <cstring>

#include "emu/memcheck.h"
#endif

namespace cuattn {

// An 8x8 matrix of 16-bit elements; each of its rows is 16 contiguous bytes of shared memory.
constexpr int kLdmatrixDim = 8;
constexpr int kLdmatrixRowBytes = 16;

// PTX ISA, "Warp-level matrix load instruction: ldmatrix". Lane l passes the address of one row:
// lanes 0-7 the rows 0-7 of matrix 0, lanes 8-15 those of matrix 1, and so on; .x1 reads the
// addresses of lanes 0-7 only and .x2 those of lanes 0-15 (the others are ignored). Each address
// must be 16-byte aligned and in shared memory. Register j of lane l receives from matrix j, with
// group = l / 4 and q = l % 4 (lower-indexed element in the low 16 bits):
//   without .trans: M[group][2q], M[group][2q+1]    (the mma A/C layout of an 8x8 block)
//   with .trans:    M[2q][group], M[2q+1][group]    (the transpose: the mma B layout of a block
//                                                    stored row-major as [k][n])

#ifdef CUATTN_EMU

namespace ldmatrix_emu {

struct LaneOperands {
  const unsigned char* row;  // this lane's row address
  uint32_t* r;               // this lane's destination registers
};

constexpr int kHalfBits = 16;

// Runs on the last lane to arrive: reads the rows of every matrix, hands each lane its elements.
template <int kMatrices, bool kTrans>
inline void compute(void* const* lanes, unsigned) {
  uint16_t m[kMatrices][kLdmatrixDim][kLdmatrixDim];  // matrix, row, column
  for (int j = 0; j < kMatrices; ++j) {
    for (int row = 0; row < kLdmatrixDim; ++row) {
      const auto& source = *static_cast<const LaneOperands*>(lanes[j * kLdmatrixDim + row]);
      std::memcpy(m[j][row], source.row, kLdmatrixRowBytes);
    }
  }
  for (int lane = 0; lane < kWarpSize; ++lane) {
    const auto& dest = *static_cast<const LaneOperands*>(lanes[lane]);
    const int group = lane / 4;
    const int q = lane % 4;
    for (int j = 0; j < kMatrices; ++j) {
      const uint16_t lo = kTrans ? m[j][2 * q][group] : m[j][group][2 * q];
      const uint16_t hi = kTrans ? m[j][2 * q + 1][group] : m[j][group][2 * q + 1];
      dest.r[j] = static_cast<uint32_t>(lo) | static_cast<uint32_t>(hi) << kHalfBits;
    }
  }
}

template <int kMatrices, bool kTrans>
constexpr const char* instruction_name() {
  if constexpr (kMatrices == 1) {
    return kTrans ? "ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16"
                  : "ldmatrix.sync.aligned.m8n8.x1.shared.b16";
  } else if constexpr (kMatrices == 2) {
    return kTrans ? "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16"
                  : "ldmatrix.sync.aligned.m8n8.x2.shared.b16";
  } else {
    return kTrans ? "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"
                  : "ldmatrix.sync.aligned.m8n8.x4.shared.b16";
  }
}

template <int kMatrices, bool kTrans>
inline constexpr emu::WarpExchange kExchange{instruction_name<kMatrices, kTrans>(),
                                             &compute<kMatrices, kTrans>};

// Each lane checks and reports its own row before the warp exchange, so a fault names it.
template <int kMatrices, bool kTrans>
inline void ldmatrix(uint32_t* r, const void* row) {
  const int tid = emu::linear_thread_id();
  if (tid % kWarpSize < kMatrices * kLdmatrixDim) {
    constexpr const char* kName = instruction_name<kMatrices, kTrans>();
    if (reinterpret_cast<uintptr_t>(row) % kLdmatrixRowBytes != 0) {
      emu::kernel_fault("%s: misaligned address: row address %p is not 16-byte aligned", kName,
                        row);
    }
    if (!emu::is_shared_address(row, kLdmatrixRowBytes)) {
      emu::kernel_fault("%s: row address %p is not in shared memory", kName, row);
    }
    emu::memcheck_access(row, kLdmatrixRowBytes, /*is_write=*/false, tid);
  }
  LaneOperands lane{static_cast<const unsigned char*>(row), r};
  emu::warp_exchange(kExchange<kMatrices, kTrans>, emu::kFullWarpMask, &lane);
}

}  // namespace ldmatrix_emu

#endif  // CUATTN_EMU

// r: 1 x b32 = 2 elements of one 8x8 matrix (rows from lanes 0-7).
__device__ __forceinline__ void ldmatrix_x1(uint32_t (&r)[1], const void* smem_row) {
#ifdef CUATTN_EMU
  ldmatrix_emu::ldmatrix<1, false>(r, smem_row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(shared_address(smem_row)));
#endif
}

// r: 1 x b32 = 2 elements of the transpose of one 8x8 matrix.
__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t (&r)[1], const void* smem_row) {
#ifdef CUATTN_EMU
  ldmatrix_emu::ldmatrix<1, true>(r, smem_row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(shared_address(smem_row)));
#endif
}

// r: 2 x b32, register j = 2 elements of matrix j (rows from lanes 8j..8j+7).
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* smem_row) {
#ifdef CUATTN_EMU
  ldmatrix_emu::ldmatrix<2, false>(r, smem_row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(smem_row)));
#endif
}

// r: 2 x b32, register j = 2 elements of the transpose of matrix j.
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* smem_row) {
#ifdef CUATTN_EMU
  ldmatrix_emu::ldmatrix<2, true>(r, smem_row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(smem_row)));
#endif
}

// r: 4 x b32, register j = 2 elements of matrix j (rows from lanes 8j..8j+7).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
#ifdef CUATTN_EMU
  ldmatrix_emu::ldmatrix<4, false>(r, smem_row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem_row)));
#endif
}

// r: 4 x b32, register j = 2 elements of the transpose of matrix j.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
#ifdef CUATTN_EMU
  ldmatrix_emu::ldmatrix<4, true>(r, smem_row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem_row)));
#endif
}

}  // namespace cuattn

#endif  // CUATTN_ARCH_LDMATRIX_CUH_
