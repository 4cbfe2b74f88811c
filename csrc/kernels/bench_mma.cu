// bench_mma: the mma.sync ceiling that `cuattn bench` reports attention kernels against. Every warp
// runs many independent chains of mma_m16n8k16<bf16> with fp32 accumulators and nothing else, so
// the tensor cores are the only limit; the accumulators are written out at the end so no chain is
// dead code, and their values (known in closed form) prove every mma ran. Layout and counts:
// cuattn.h, "Benchmarks".
#include <cstdint>

#include "arch/mma.cuh"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/status.h"
#include "cuattn_internal.h"

namespace {

using cuattn::kMmaARegs;
using cuattn::kMmaBRegs;
using cuattn::kMmaCRegs;

constexpr int kBlockThreads = CUATTN_BENCH_MMA_BLOCK_THREADS;
constexpr int kMinBlocksPerSm = CUATTN_BENCH_MMA_BLOCKS_PER_SM;
// Independent accumulator chains per warp: enough mmas in flight to hide the tensor cores'
// latency, few enough registers (4 floats per chain) for kMinBlocksPerSm blocks per SM.
constexpr int kChains = CUATTN_BENCH_MMA_CHAINS;

// Every element of A is 1.5 and every element of B is 2 (bf16 bit patterns, two per b32
// register), so each mma adds 16 * 1.5 * 2 = 48 (K = 16 products) to every accumulator. The
// products are integers, so the sums stay exact even where the tensor cores truncate the alignment
// of small addends to a large accumulator.
constexpr uint32_t kABits = 0x3fc0u;  // bf16 1.5
constexpr uint32_t kBBits = 0x4000u;  // bf16 2.0
constexpr int kBf16Bits = 16;
constexpr uint32_t kAPair = (kABits << kBf16Bits) | kABits;
constexpr uint32_t kBPair = (kBBits << kBf16Bits) | kBBits;

static_assert(kBlockThreads % 32 == 0, "whole warps: mma.sync is warp-wide");

// out: float [gridDim.x][kBlockThreads]; thread t of block b writes the sum of its accumulators,
// kChains * kMmaCRegs * 48 * iterations.
__global__ void __launch_bounds__(kBlockThreads, kMinBlocksPerSm)
    bench_mma_kernel(float* out, int32_t iterations) {
  uint32_t a[kMmaARegs];          // 8 elements of A (16x16), all 1.5
  uint32_t b[kMmaBRegs];          // 4 elements of B (16x8), all 2
  float acc[kChains][kMmaCRegs];  // kChains independent 16x8 accumulator tiles, 4 floats a lane
  for (int i = 0; i < kMmaARegs; ++i) {
    a[i] = kAPair;
  }
  for (int i = 0; i < kMmaBRegs; ++i) {
    b[i] = kBPair;
  }
  for (int c = 0; c < kChains; ++c) {
    for (int i = 0; i < kMmaCRegs; ++i) {
      acc[c][i] = 0.0f;
    }
  }
  for (int32_t it = 0; it < iterations; ++it) {
    // acc[c] += A * B for every chain: kChains mmas with no dependence between them.
    for (int c = 0; c < kChains; ++c) {
      cuattn::mma_m16n8k16<__nv_bfloat16>(acc[c], a, b, acc[c]);
    }
  }
  float sum = 0.0f;
  for (int c = 0; c < kChains; ++c) {
    for (int i = 0; i < kMmaCRegs; ++i) {
      sum += acc[c][i];
    }
  }
  out[static_cast<int64_t>(blockIdx.x) * kBlockThreads + threadIdx.x] = sum;
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(bench_mma)(float* out, int32_t blocks, int32_t iterations,
                                                    void* stream) {
  if (out == nullptr) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT, "bench_mma: out is null");
  }
  if (blocks <= 0) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT, "bench_mma: blocks = %d, must be >= 1",
                        blocks);
  }
  if (iterations < 0) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT, "bench_mma: iterations = %d, must be >= 0",
                        iterations);
  }
  return cuattn::launch_kernel("bench_mma", bench_mma_kernel, dim3(blocks), dim3(kBlockThreads), 0,
                               stream, out, iterations);
}
