// selftest: kernels that exercise the runtime in both builds (layouts: cuattn_selftest_case in
// cuattn.h) and planted faults the emulator must report.
#include "arch/barrier.cuh"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/status.h"
#include "cuattn_internal.h"

// INT_MIN, memcpy and memset, in both builds.
#include <climits>
#include <cstring>

namespace {

using cuattn::kWarpSize;

constexpr unsigned kFullMask = 0xffffffffu;
constexpr unsigned kLowHalfMask = 0x0000ffffu;
constexpr unsigned kHighHalfMask = 0xffff0000u;

// v = kValueScale * t + kValueOffset: distinct per thread, easy to recognize.
constexpr int kValueScale = 1000;
constexpr int kValueOffset = 7;

__device__ __forceinline__ unsigned linear_thread() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

__device__ __forceinline__ unsigned linear_block() {
  return blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
}

__device__ __forceinline__ int thread_value(unsigned t) {
  return kValueScale * static_cast<int>(t) + kValueOffset;
}

// ---------------------------------------------------------------------------------------------
// CUATTN_SELFTEST_SHUFFLE: every kind x width x argument, full mask.
// ---------------------------------------------------------------------------------------------

constexpr int kShuffleThreads = 64;
constexpr int kShuffleKinds = 4;
constexpr int kShuffleWidths = 6;  // 32 >> i
constexpr int kShuffleArgs = 9;

__global__ void shuffle_kernel(int* out) {
  const unsigned t = linear_thread();
  const int v = thread_value(t);
  const int fixed_args[kShuffleArgs - 1] = {0, 1, 3, 17, 31, 32, 45, -1};
  for (int k = 0; k < kShuffleKinds; ++k) {
    for (int w = 0; w < kShuffleWidths; ++w) {
      const int width = kWarpSize >> w;
      for (int a = 0; a < kShuffleArgs; ++a) {
        const int arg = a < kShuffleArgs - 1 ? fixed_args[a] : static_cast<int>(5 * t + 3) % 41 - 4;
        int r = 0;
        switch (k) {
          case 0:
            r = __shfl_sync(kFullMask, v, arg, width);
            break;
          case 1:
            r = __shfl_up_sync(kFullMask, v, static_cast<unsigned>(arg), width);
            break;
          case 2:
            r = __shfl_down_sync(kFullMask, v, static_cast<unsigned>(arg), width);
            break;
          default:
            r = __shfl_xor_sync(kFullMask, v, arg, width);
            break;
        }
        out[((k * kShuffleWidths + w) * kShuffleArgs + a) * kShuffleThreads + t] = r;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// CUATTN_SELFTEST_SHUFFLE_MASKS: partial, disjoint and interleaved masks.
// ---------------------------------------------------------------------------------------------

constexpr int kMasksThreads = 64;
constexpr int kHalfWarp = 16;
constexpr unsigned kEvenLanes = 0x55555555u;
constexpr unsigned kOddLanes = 0xaaaaaaaau;
constexpr unsigned kLow8Lanes = 0x000000ffu;

__global__ void shuffle_masks_kernel(int* out) {
  __shared__ int staged[kMasksThreads];
  const unsigned t = linear_thread();
  const int lane = static_cast<int>(t % kWarpSize);
  const int v = thread_value(t);

  int* row = out;
  if (lane < kHalfWarp) {
    row[t] = __shfl_xor_sync(kLowHalfMask, v, 1, kHalfWarp);
  } else {
    row[t] = __shfl_down_sync(kHighHalfMask, v, 3, kHalfWarp);
  }

  row += kMasksThreads;
  if (lane < 8) {
    row[t] = __shfl_down_sync(kLow8Lanes, v, 4);
  } else {
    row[t] = __shfl_up_sync(~kLow8Lanes, v, 8);
  }

  row += kMasksThreads;
  if (lane % 2 == 0) {
    row[t] = __shfl_sync(kEvenLanes, v, lane + 2);
  } else {
    row[t] = __shfl_sync(kOddLanes, v, lane - 2);
  }

  row += kMasksThreads;
  staged[t] = v;
  __syncwarp(lane < kHalfWarp ? kLowHalfMask : kHighHalfMask);
  row[t] = staged[t ^ 1];
}

// ---------------------------------------------------------------------------------------------
// CUATTN_SELFTEST_SHUFFLE_TYPES: every shuffled type moves its bits unchanged.
// ---------------------------------------------------------------------------------------------

constexpr int kTypesThreads = 32;
constexpr int kTypesLaneMask = 5;
constexpr unsigned long long kTypesMultiplier = 0x9e3779b97f4a7c15ull;
constexpr unsigned long long kTypesXor = 0xd1b54a32d192ed03ull;

template <typename T>
__device__ __forceinline__ unsigned long long exchange_bits(unsigned long long bits) {
  T x;
  memcpy(&x, &bits, sizeof(T));
  const T y = __shfl_xor_sync(kFullMask, x, kTypesLaneMask);
  unsigned long long received = 0;
  memcpy(&received, &y, sizeof(T));
  return received;
}

__global__ void shuffle_types_kernel(unsigned long long* out) {
  const unsigned t = linear_thread();
  const auto bits = [t](int k) {
    return (kTypesMultiplier * (kTypesThreads * k + t + 1)) ^ kTypesXor;
  };
  int k = 0;
  out[k * kTypesThreads + t] = exchange_bits<double>(bits(k));
  ++k;
  out[k * kTypesThreads + t] = exchange_bits<long long>(bits(k));
  ++k;
  out[k * kTypesThreads + t] = exchange_bits<unsigned long long>(bits(k));
  ++k;
  out[k * kTypesThreads + t] = exchange_bits<float>(bits(k));
  ++k;
  out[k * kTypesThreads + t] = exchange_bits<int>(bits(k));
  ++k;
  out[k * kTypesThreads + t] = exchange_bits<unsigned>(bits(k));
  ++k;
  out[k * kTypesThreads + t] = exchange_bits<__half2>(bits(k));
  ++k;
  out[k * kTypesThreads + t] = exchange_bits<__nv_bfloat162>(bits(k));
  ++k;
  out[k * kTypesThreads + t] = exchange_bits<__half>(bits(k));
  ++k;
  out[k * kTypesThreads + t] = exchange_bits<__nv_bfloat16>(bits(k));
}

// ---------------------------------------------------------------------------------------------
// CUATTN_SELFTEST_VOTE: __all_sync, __any_sync, __ballot_sync, __activemask, __syncwarp.
// ---------------------------------------------------------------------------------------------

constexpr int kVoteThreads = 64;
constexpr unsigned kLow20Lanes = 0x000fffffu;

__global__ void vote_kernel(unsigned* out) {
  const unsigned t = linear_thread();
  const int lane = static_cast<int>(t % kWarpSize);
  const int warp = static_cast<int>(t / kWarpSize);
  unsigned* row = out;

  row[t] = __all_sync(kFullMask, lane != 5 || warp == 1);
  row += kVoteThreads;
  row[t] = __any_sync(kFullMask, lane == 31 && warp == 1);
  row += kVoteThreads;
  row[t] = __ballot_sync(kFullMask, lane % 3 == 0);
  row += kVoteThreads;
  if (lane < 20) {
    row[t] = __ballot_sync(kLow20Lanes, lane & 1);
  } else {
    row[t] = __ballot_sync(~kLow20Lanes, lane % 4 == 0);
  }
  row += kVoteThreads;
  if (lane < kHalfWarp) {
    row[t] = __all_sync(kLowHalfMask, lane < kHalfWarp);
  } else {
    row[t] = __any_sync(kHighHalfMask, lane == 20 + 20 * warp);
  }
  row += kVoteThreads;
  row[t] = __activemask();
  row += kVoteThreads;
  // Divergence by trip count: one call site, so no compiler can merge or split the branches.
  unsigned in_loop = 0;
  for (int i = 0; i <= lane % 4; ++i) {
    in_loop = __activemask();
  }
  row[t] = in_loop;
  row += kVoteThreads;
  __syncwarp();
  row[t] = __ballot_sync(kFullMask, 1);
}

// ---------------------------------------------------------------------------------------------
// CUATTN_SELFTEST_SYNCTHREADS: static and dynamic shared memory across 8 warps.
// ---------------------------------------------------------------------------------------------

constexpr int kSyncGrid = 3;
constexpr unsigned kSyncBlockX = 32, kSyncBlockY = 4, kSyncBlockZ = 2;
constexpr int kSyncThreads = kSyncBlockX * kSyncBlockY * kSyncBlockZ;

__global__ void syncthreads_kernel(int* out) {
  __shared__ int s[kSyncThreads];
  CUATTN_DYNAMIC_SMEM(int, d);
  const int t = static_cast<int>(linear_thread());
  const int b = static_cast<int>(blockIdx.x);
  int* block_out = out + b * (kSyncThreads + 1);

  s[t] = 1000 * b + t;
  d[kSyncThreads - 1 - t] = 7 * b + 3 * t;
  __syncthreads();
  block_out[t] = s[kSyncThreads - 1 - t] + d[t];
  __syncthreads();
  for (int stride = kSyncThreads / 2; stride > 0; stride /= 2) {
    if (t < stride) {
      s[t] += s[t + stride];
    }
    __syncthreads();
  }
  if (t == 0) {
    block_out[kSyncThreads] = s[0];
  }
}

// ---------------------------------------------------------------------------------------------
// CUATTN_SELFTEST_SMEM_POISON: dynamic shared memory read before written.
// ---------------------------------------------------------------------------------------------

constexpr int kPoisonGrid = 8;
constexpr int kPoisonThreads = 64;

__global__ void smem_poison_kernel(unsigned* out) {
  CUATTN_DYNAMIC_SMEM(unsigned, words);
  const unsigned t = linear_thread();
  out[blockIdx.x * kPoisonThreads + t] = words[t];
  words[t] = t;
}

// ---------------------------------------------------------------------------------------------
// CUATTN_SELFTEST_ATOMICS: every atomic the kernels use, contended across blocks.
// ---------------------------------------------------------------------------------------------

constexpr unsigned kAtomicsGridX = 4, kAtomicsGridY = 3, kAtomicsGridZ = 2;
constexpr int kAtomicsThreads = 128;
constexpr int kAtomicsTotal = kAtomicsGridX * kAtomicsGridY * kAtomicsGridZ * kAtomicsThreads;
constexpr unsigned kAtomicsHash = 0x9e3779b9u;

// Byte offsets of the counters in `out` (see cuattn.h).
struct AtomicsLayout {
  static constexpr int kSumInt = 0;
  static constexpr int kCount = 4;
  static constexpr int kSumU64 = 8;
  static constexpr int kSumF32 = 16;
  static constexpr int kMaxInt = 20;
  static constexpr int kSumF64 = 24;
  static constexpr int kCasInt = 32;
  static constexpr int kCasUnsigned = 36;
  static constexpr int kTickets = 40;
  static constexpr int kBytes = kTickets + 4 * kAtomicsTotal;
};

template <typename T>
__device__ __forceinline__ T* at(unsigned char* base, int offset) {
  return reinterpret_cast<T*>(base + offset);
}

__global__ void atomics_reset_kernel(unsigned char* out) {
  memset(out, 0, AtomicsLayout::kTickets);
  *at<int>(out, AtomicsLayout::kMaxInt) = INT_MIN;
}

__global__ void atomics_kernel(unsigned char* out) {
  const unsigned g = kAtomicsThreads * linear_block() + linear_thread();
  atomicAdd(at<int>(out, AtomicsLayout::kSumInt), static_cast<int>(g));
  const unsigned ticket = atomicAdd(at<unsigned>(out, AtomicsLayout::kCount), 1u);
  atomicAdd(at<unsigned long long>(out, AtomicsLayout::kSumU64),
            (static_cast<unsigned long long>(g) << 33) + 1);
  atomicAdd(at<float>(out, AtomicsLayout::kSumF32), 1.0f);
  atomicMax(at<int>(out, AtomicsLayout::kMaxInt), static_cast<int>(g * kAtomicsHash));
  atomicAdd(at<double>(out, AtomicsLayout::kSumF64), 0.25);

  // Compare-and-swap loops from a guess: each failed attempt returns the value to retry from.
  int* cas_int = at<int>(out, AtomicsLayout::kCasInt);
  int expected = 0;
  for (int seen; (seen = atomicCAS(cas_int, expected, expected + 1)) != expected;) {
    expected = seen;
  }
  unsigned* cas_unsigned = at<unsigned>(out, AtomicsLayout::kCasUnsigned);
  unsigned expected_unsigned = 0;
  for (unsigned seen; (seen = atomicCAS(cas_unsigned, expected_unsigned, expected_unsigned + 2)) !=
                      expected_unsigned;) {
    expected_unsigned = seen;
  }
  at<unsigned>(out, AtomicsLayout::kTickets)[ticket] = g;
}

// ---------------------------------------------------------------------------------------------
// CUATTN_SELFTEST_INDEXING: built-in variables and lane numbering in a 3-D grid of 3-D blocks.
// ---------------------------------------------------------------------------------------------

constexpr unsigned kIndexGridX = 3, kIndexGridY = 2, kIndexGridZ = 2;
constexpr unsigned kIndexBlockX = 8, kIndexBlockY = 4, kIndexBlockZ = 2;
constexpr int kIndexBlocks = kIndexGridX * kIndexGridY * kIndexGridZ;
constexpr int kIndexThreads = kIndexBlockX * kIndexBlockY * kIndexBlockZ;
constexpr int kIndexFields = 14;

__global__ void indexing_kernel(unsigned* out) {
  const unsigned t = linear_thread();
  unsigned* f = out + (linear_block() * kIndexThreads + t) * kIndexFields;
  const unsigned warp_leader = __shfl_sync(kFullMask, t, 0);
  const unsigned neighbor = __shfl_xor_sync(kFullMask, t, 1);
  const unsigned fields[kIndexFields] = {
      threadIdx.x, threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z,  blockDim.x,
      blockDim.y,  blockDim.z,  gridDim.x,   gridDim.y,  gridDim.z,  warp_leader, neighbor};
  for (int i = 0; i < kIndexFields; ++i) {
    f[i] = fields[i];
  }
}

// ---------------------------------------------------------------------------------------------
// CUATTN_SELFTEST_HALF_TO_FLOAT and CUATTN_SELFTEST_FLOAT_TO_HALF.
// ---------------------------------------------------------------------------------------------

constexpr int kConvertThreads = 256;
constexpr int kHalfPatterns = 1 << 16;
constexpr unsigned short kAllBits = 0xffff;
constexpr int kConvertRows = 8;
// FLOAT_TO_HALF: per value, a float input and kConvertRows 16-bit outputs.
constexpr int64_t kFloatToHalfBytesPerValue = 4 + 2 * kConvertRows;

__global__ void half_to_float_kernel(float* out) {
  const unsigned i = blockIdx.x * kConvertThreads + linear_thread();
  const auto bits = static_cast<unsigned short>(i);
  const auto inverted = static_cast<unsigned short>(bits ^ kAllBits);

  const __half h = __ushort_as_half(bits);
  const __half h_inverted = __ushort_as_half(inverted);
  const float h_implicit = h;
  out[0 * kHalfPatterns + i] = __half2float(h);
  out[1 * kHalfPatterns + i] = h_implicit;
  out[2 * kHalfPatterns + i] = __low2float(__halves2half2(h, h_inverted));
  out[3 * kHalfPatterns + i] = __high2float(__halves2half2(h_inverted, h));

  const __nv_bfloat16 b = __ushort_as_bfloat16(bits);
  const __nv_bfloat16 b_inverted = __ushort_as_bfloat16(inverted);
  const float b_implicit = b;
  out[4 * kHalfPatterns + i] = __bfloat162float(b);
  out[5 * kHalfPatterns + i] = b_implicit;
  out[6 * kHalfPatterns + i] = __low2float(__halves2bfloat162(b, b_inverted));
  out[7 * kHalfPatterns + i] = __high2float(__halves2bfloat162(b_inverted, b));
}

__global__ void float_to_half_kernel(float* inout, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kConvertThreads + linear_thread();
  if (i >= n) {
    return;
  }
  const float x = inout[i];
  unsigned short* rows = reinterpret_cast<unsigned short*>(inout + n);

  const __half h_implicit = x;
  const __half2 h_pair = __floats2half2_rn(x, -x);
  rows[0 * n + i] = __half_as_ushort(__float2half_rn(x));
  rows[1 * n + i] = __half_as_ushort(h_implicit);
  rows[2 * n + i] = __half_as_ushort(__low2half(h_pair));
  rows[3 * n + i] = __half_as_ushort(__high2half(h_pair));

  const __nv_bfloat16 b_implicit = x;
  const __nv_bfloat162 b_pair = __floats2bfloat162_rn(x, -x);
  rows[4 * n + i] = __bfloat16_as_ushort(__float2bfloat16_rn(x));
  rows[5 * n + i] = __bfloat16_as_ushort(b_implicit);
  rows[6 * n + i] = __bfloat16_as_ushort(__low2bfloat16(b_pair));
  rows[7 * n + i] = __bfloat16_as_ushort(__high2bfloat16(b_pair));
}

// ---------------------------------------------------------------------------------------------
// CUATTN_SELFTEST_NAMED_BARRIERS: two groups of four warps taking turns.
// ---------------------------------------------------------------------------------------------

constexpr int kTurnThreads = 256;
constexpr int kTurnGroupThreads = kTurnThreads / 2;
constexpr int kTurnRounds = 5;

// tickets[2 * round + group], then the counter (reset by the launcher).
__global__ void named_barriers_kernel(unsigned* tickets) {
  const unsigned t = linear_thread();
  const unsigned group = t / kTurnGroupThreads;
  const unsigned own = 1 + group;
  const unsigned other = 2 - group;
  if (group == 1) {
    cuattn::named_barrier_arrive(1, kTurnThreads);  // group 0 takes the first turn
  }
  for (int round = 0; round < kTurnRounds; ++round) {
    cuattn::named_barrier_sync(own, kTurnThreads);
    if (t % kTurnGroupThreads == 0) {
      tickets[2 * round + group] = atomicAdd(tickets + 2 * kTurnRounds, 1u);
    }
    if (group == 0 || round + 1 < kTurnRounds) {
      cuattn::named_barrier_arrive(other, kTurnThreads);  // the last turn hands over to nobody
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Planted faults and refused launches.
// ---------------------------------------------------------------------------------------------

constexpr unsigned kDivergentGridX = 16, kDivergentGridZ = 16;
constexpr int kDivergentThreads = 64;
constexpr int kFaultThreads = 64;
constexpr unsigned kOversizedBlockX = 33, kOversizedBlockY = 32;  // 1056 threads
constexpr size_t kOversizedSmemBytes = 228 * 1024;

__global__ void counter_reset_kernel(unsigned* counter) { *counter = 0; }

__global__ void divergent_syncthreads_kernel(unsigned* blocks_started) {
  const unsigned t = linear_thread();
  if (t == 0) {
    atomicAdd(blocks_started, 1u);
  }
  if (blockIdx.x == 1 && blockIdx.z == 1 && t >= kWarpSize) {
    return;
  }
  __syncthreads();
}

__global__ void shuffle_omits_lane_kernel() {
  const unsigned t = linear_thread();
  const unsigned mask = t < kWarpSize ? kFullMask : kFullMask >> 1;  // warp 1 leaves out lane 31
  (void)__shfl_sync(mask, thread_value(t), 0);
}

__global__ void shuffle_exited_lane_kernel() {
  const unsigned t = linear_thread();
  if (t == kWarpSize + 7) {
    return;
  }
  (void)__shfl_sync(kFullMask, thread_value(t), 0);
}

__global__ void collective_mismatch_kernel() {
  const unsigned t = linear_thread();
  if (t < kHalfWarp) {
    (void)__shfl_xor_sync(kFullMask, thread_value(t), 1);
  } else {
    (void)__ballot_sync(kFullMask, 1);
  }
}

__global__ void named_barrier_stall_kernel() {
  if (linear_thread() >= kWarpSize) {
    return;
  }
  cuattn::named_barrier_sync(1, kFaultThreads);
}

__global__ void named_barrier_pending_kernel() {
  if (linear_thread() >= kWarpSize) {
    return;
  }
  cuattn::named_barrier_arrive(1, kFaultThreads);
}

__global__ void named_barrier_count_kernel() {
  if (linear_thread() < kWarpSize) {
    cuattn::named_barrier_arrive(1, kFaultThreads);
  } else {
    cuattn::named_barrier_sync(1, kWarpSize);
  }
}

__global__ void empty_kernel() {}

// Output bytes a case needs (at least), or -1 for an unknown case.
int64_t required_bytes(int32_t test_case) {
  switch (test_case) {
    case CUATTN_SELFTEST_SHUFFLE:
      return 4LL * kShuffleKinds * kShuffleWidths * kShuffleArgs * kShuffleThreads;
    case CUATTN_SELFTEST_SHUFFLE_MASKS:
      return 4LL * 4 * kMasksThreads;
    case CUATTN_SELFTEST_SHUFFLE_TYPES:
      return 8LL * 10 * kTypesThreads;
    case CUATTN_SELFTEST_VOTE:
      return 4LL * 8 * kVoteThreads;
    case CUATTN_SELFTEST_SYNCTHREADS:
      return 4LL * kSyncGrid * (kSyncThreads + 1);
    case CUATTN_SELFTEST_SMEM_POISON:
      return 4LL * kPoisonGrid * kPoisonThreads;
    case CUATTN_SELFTEST_ATOMICS:
      return AtomicsLayout::kBytes;
    case CUATTN_SELFTEST_INDEXING:
      return 4LL * kIndexBlocks * kIndexThreads * kIndexFields;
    case CUATTN_SELFTEST_HALF_TO_FLOAT:
      return 4LL * kConvertRows * kHalfPatterns;
    case CUATTN_SELFTEST_FLOAT_TO_HALF:
      return kFloatToHalfBytesPerValue;
    case CUATTN_SELFTEST_NAMED_BARRIERS:
      return 4LL * (2 * kTurnRounds + 1);
    case CUATTN_SELFTEST_FAULT_DIVERGENT_SYNCTHREADS:
      return 4;
    case CUATTN_SELFTEST_FAULT_NAMED_BARRIER_STALL:
    case CUATTN_SELFTEST_FAULT_NAMED_BARRIER_PENDING:
    case CUATTN_SELFTEST_FAULT_NAMED_BARRIER_COUNT:
    case CUATTN_SELFTEST_FAULT_SHUFFLE_OMITS_LANE:
    case CUATTN_SELFTEST_FAULT_SHUFFLE_EXITED_LANE:
    case CUATTN_SELFTEST_FAULT_COLLECTIVE_MISMATCH:
    case CUATTN_SELFTEST_BAD_LAUNCH_BLOCK:
    case CUATTN_SELFTEST_BAD_LAUNCH_SMEM:
      return 0;
    default:
      return -1;
  }
}

unsigned blocks_for(int64_t threads) {
  return static_cast<unsigned>((threads + kConvertThreads - 1) / kConvertThreads);
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(selftest)(int32_t test_case, void* out, int64_t out_bytes,
                                                   void* stream) {
  const int64_t needed = required_bytes(test_case);
  if (needed < 0) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "selftest: test_case = %d is not a cuattn_selftest_case", test_case);
  }
  if (out_bytes < needed || (needed > 0 && out == nullptr)) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "selftest: case %d needs out of at least %lld bytes, got %lld bytes at %p",
                        test_case, static_cast<long long>(needed),
                        static_cast<long long>(out_bytes), out);
  }
  switch (test_case) {
    case CUATTN_SELFTEST_SHUFFLE:
      return cuattn::launch_kernel("selftest_shuffle", shuffle_kernel, dim3(1),
                                   dim3(kShuffleThreads), 0, stream, static_cast<int*>(out));
    case CUATTN_SELFTEST_SHUFFLE_MASKS:
      return cuattn::launch_kernel("selftest_shuffle_masks", shuffle_masks_kernel, dim3(1),
                                   dim3(kMasksThreads), 0, stream, static_cast<int*>(out));
    case CUATTN_SELFTEST_SHUFFLE_TYPES:
      return cuattn::launch_kernel("selftest_shuffle_types", shuffle_types_kernel, dim3(1),
                                   dim3(kTypesThreads), 0, stream,
                                   static_cast<unsigned long long*>(out));
    case CUATTN_SELFTEST_VOTE:
      return cuattn::launch_kernel("selftest_vote", vote_kernel, dim3(1), dim3(kVoteThreads), 0,
                                   stream, static_cast<unsigned*>(out));
    case CUATTN_SELFTEST_SYNCTHREADS:
      return cuattn::launch_kernel("selftest_syncthreads", syncthreads_kernel, dim3(kSyncGrid),
                                   dim3(kSyncBlockX, kSyncBlockY, kSyncBlockZ),
                                   sizeof(int) * kSyncThreads, stream, static_cast<int*>(out));
    case CUATTN_SELFTEST_SMEM_POISON:
      return cuattn::launch_kernel("selftest_smem_poison", smem_poison_kernel, dim3(kPoisonGrid),
                                   dim3(kPoisonThreads), sizeof(unsigned) * kPoisonThreads, stream,
                                   static_cast<unsigned*>(out));
    case CUATTN_SELFTEST_ATOMICS: {
      auto* bytes = static_cast<unsigned char*>(out);
      const cuattn_status reset = cuattn::launch_kernel(
          "selftest_atomics_reset", atomics_reset_kernel, dim3(1), dim3(1), 0, stream, bytes);
      if (reset != CUATTN_OK) {
        return reset;
      }
      return cuattn::launch_kernel("selftest_atomics", atomics_kernel,
                                   dim3(kAtomicsGridX, kAtomicsGridY, kAtomicsGridZ),
                                   dim3(kAtomicsThreads), 0, stream, bytes);
    }
    case CUATTN_SELFTEST_INDEXING:
      return cuattn::launch_kernel(
          "selftest_indexing", indexing_kernel, dim3(kIndexGridX, kIndexGridY, kIndexGridZ),
          dim3(kIndexBlockX, kIndexBlockY, kIndexBlockZ), 0, stream, static_cast<unsigned*>(out));
    case CUATTN_SELFTEST_HALF_TO_FLOAT:
      return cuattn::launch_kernel("selftest_half_to_float", half_to_float_kernel,
                                   dim3(blocks_for(kHalfPatterns)), dim3(kConvertThreads), 0,
                                   stream, static_cast<float*>(out));
    case CUATTN_SELFTEST_FLOAT_TO_HALF: {
      const int64_t n = out_bytes / kFloatToHalfBytesPerValue;
      return cuattn::launch_kernel("selftest_float_to_half", float_to_half_kernel,
                                   dim3(blocks_for(n)), dim3(kConvertThreads), 0, stream,
                                   static_cast<float*>(out), n);
    }
    case CUATTN_SELFTEST_NAMED_BARRIERS: {
      auto* tickets = static_cast<unsigned*>(out);
      const cuattn_status reset =
          cuattn::launch_kernel("selftest_counter_reset", counter_reset_kernel, dim3(1), dim3(1), 0,
                                stream, tickets + 2 * kTurnRounds);
      if (reset != CUATTN_OK) {
        return reset;
      }
      return cuattn::launch_kernel("selftest_named_barriers", named_barriers_kernel, dim3(1),
                                   dim3(kTurnThreads), 0, stream, tickets);
    }
    case CUATTN_SELFTEST_FAULT_NAMED_BARRIER_STALL:
      return cuattn::launch_kernel("selftest_named_barrier_stall", named_barrier_stall_kernel,
                                   dim3(1), dim3(kFaultThreads), 0, stream);
    case CUATTN_SELFTEST_FAULT_NAMED_BARRIER_PENDING:
      return cuattn::launch_kernel("selftest_named_barrier_pending", named_barrier_pending_kernel,
                                   dim3(1), dim3(kFaultThreads), 0, stream);
    case CUATTN_SELFTEST_FAULT_NAMED_BARRIER_COUNT:
      return cuattn::launch_kernel("selftest_named_barrier_count", named_barrier_count_kernel,
                                   dim3(1), dim3(kFaultThreads), 0, stream);
    case CUATTN_SELFTEST_FAULT_DIVERGENT_SYNCTHREADS: {
      auto* counter = static_cast<unsigned*>(out);
      const cuattn_status reset = cuattn::launch_kernel(
          "selftest_counter_reset", counter_reset_kernel, dim3(1), dim3(1), 0, stream, counter);
      if (reset != CUATTN_OK) {
        return reset;
      }
      return cuattn::launch_kernel("selftest_divergent_syncthreads", divergent_syncthreads_kernel,
                                   dim3(kDivergentGridX, 1, kDivergentGridZ),
                                   dim3(kDivergentThreads), 0, stream, counter);
    }
    case CUATTN_SELFTEST_FAULT_SHUFFLE_OMITS_LANE:
      return cuattn::launch_kernel("selftest_shuffle_omits_lane", shuffle_omits_lane_kernel,
                                   dim3(1), dim3(kFaultThreads), 0, stream);
    case CUATTN_SELFTEST_FAULT_SHUFFLE_EXITED_LANE:
      return cuattn::launch_kernel("selftest_shuffle_exited_lane", shuffle_exited_lane_kernel,
                                   dim3(1), dim3(kFaultThreads), 0, stream);
    case CUATTN_SELFTEST_FAULT_COLLECTIVE_MISMATCH:
      return cuattn::launch_kernel("selftest_collective_mismatch", collective_mismatch_kernel,
                                   dim3(1), dim3(kWarpSize), 0, stream);
    case CUATTN_SELFTEST_BAD_LAUNCH_BLOCK:
      return cuattn::launch_kernel("selftest_bad_launch_block", empty_kernel, dim3(1),
                                   dim3(kOversizedBlockX, kOversizedBlockY), 0, stream);
    case CUATTN_SELFTEST_BAD_LAUNCH_SMEM:
      return cuattn::launch_kernel("selftest_bad_launch_smem", empty_kernel, dim3(1),
                                   dim3(kWarpSize), kOversizedSmemBytes, stream);
  }
  return cuattn::fail(CUATTN_ERROR_INTERNAL, "selftest: case %d has no launch", test_case);
}
