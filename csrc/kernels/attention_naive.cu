// attention_naive: the bottom rung of the kernel ladder and the permanent correctness baseline.
// One warp per (query row, head), scores and P.V in fp32 CUDA cores, online softmax in base 2.
//
// Per chunk of 32 keys each lane owns one key: it computes that key's score against the query
// row (staged in shared memory as fp32), the warp reduces max and sum with shuffles, and then
// each lane owns head-dim columns d = lane, lane + 32, ... of the output and accumulates
// sum_j p_j * V[j, d] from the chunk's probabilities, shared through shared memory.
#include "arch/math.cuh"
#include "common/attention_launch.h"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/mask.cuh"
#include "common/status.h"
#include "cuattn_internal.h"

namespace {

using cuattn::kWarpSize;

// Four warps, four query rows, per block: enough threads per SM for a baseline, small blocks.
constexpr int kWarpsPerBlock = 4;
constexpr int kMaxHeadDim = cuattn::kMaxAttentionHeadDim;
// Output columns one lane owns: d = lane + kWarpSize * c for c < kColsPerLane.
constexpr int kColsPerLane = kMaxHeadDim / kWarpSize;
static_assert(kMaxHeadDim % kWarpSize == 0, "head-dim columns split evenly over a warp's lanes");

template <typename T>
__global__ void attention_naive_kernel(const cuattn_attention_params p) {
  // Dynamic shared memory: sQ [kWarpsPerBlock][head_dim] fp32, then sP [kWarpsPerBlock][32].
  CUATTN_DYNAMIC_SMEM(float, smem);
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int row = blockIdx.x * kWarpsPerBlock + warp;
  float* sQ = smem + warp * p.head_dim;
  float* sP = smem + kWarpsPerBlock * p.head_dim + warp * kWarpSize;

  const cuattn::SequenceSpan seq = cuattn::sequence_span(p, batch);
  if (row >= seq.len_q) {
    return;  // Uniform per warp: the whole warp leaves together and no block barrier follows.
  }
  const cuattn::HeadSlices<T> slices = cuattn::head_slices<T>(p, seq, head, row);
  const T* q = slices.q;
  const T* k = slices.k;
  const T* v = slices.v;
  T* out = slices.out;

  for (int d = lane; d < p.head_dim; d += kWarpSize) {
    sQ[d] = static_cast<float>(q[d]);
  }
  __syncwarp();

  const cuattn::KeyRange keys =
      cuattn::visible_keys(row, seq.len_q, seq.len_k, p.window_left, p.window_right);
  float row_max = -INFINITY;  // running max of the base-2 scores
  float row_sum = 0.0f;       // running sum of 2^(score - row_max)
  float acc[kColsPerLane];    // this lane's output columns, unnormalized
  for (int c = 0; c < kColsPerLane; ++c) {
    acc[c] = 0.0f;
  }

  const cuattn::ScoreMap score_map = cuattn::ScoreMap::of(p);
  for (int chunk = keys.begin; chunk < keys.end; chunk += kWarpSize) {
    // S = scale * Q K^T for this lane's key, in base 2.
    const int key = chunk + lane;
    float score = -INFINITY;
    if (key < keys.end) {
      const T* k_row = k + static_cast<int64_t>(key) * p.k_row_stride;
      float dot = 0.0f;
      for (int d = 0; d < p.head_dim; ++d) {
        dot += sQ[d] * static_cast<float>(k_row[d]);
      }
      score = score_map(dot);
    }
    // Online softmax: rescale what was accumulated so far to the new running max.
    const float new_max = fmaxf(row_max, cuattn::warp_max(score));
    const float correction = exp2f(row_max - new_max);
    const float prob = key < keys.end ? exp2f(score - new_max) : 0.0f;
    row_sum = row_sum * correction + cuattn::warp_sum(prob);
    row_max = new_max;

    // O += P V over the chunk's keys, each lane on its own columns.
    sP[lane] = prob;
    __syncwarp();
    const int chunk_keys = keys.end - chunk < kWarpSize ? keys.end - chunk : kWarpSize;
    for (int c = 0; c < kColsPerLane; ++c) {
      const int d = lane + c * kWarpSize;
      if (d >= p.head_dim) {
        break;
      }
      float sum = acc[c] * correction;
      for (int j = 0; j < chunk_keys; ++j) {
        sum += sP[j] * static_cast<float>(v[static_cast<int64_t>(chunk + j) * p.v_row_stride + d]);
      }
      acc[c] = sum;
    }
    __syncwarp();  // sP is rewritten by the next chunk
  }

  // A row with no visible key has row_sum 0: it writes zeros and LSE -inf.
  const float inv_sum = row_sum > 0.0f ? 1.0f / row_sum : 0.0f;
  for (int c = 0; c < kColsPerLane; ++c) {
    const int d = lane + c * kWarpSize;
    if (d < p.head_dim) {
      out[d] = static_cast<T>(acc[c] * inv_sum);
    }
  }
  if (p.maybe_lse != nullptr && lane == 0) {
    p.maybe_lse[seq.lse_offset(p, head, row)] = cuattn::lse_from_log2(row_max, row_sum);
  }
}

template <typename T>
cuattn_status launch(const cuattn_attention_params& p, void* stream) {
  const dim3 grid((p.seqlen_q + kWarpsPerBlock - 1) / kWarpsPerBlock, p.heads, p.batch);
  const dim3 block(kWarpsPerBlock * kWarpSize);
  const size_t smem = sizeof(float) * kWarpsPerBlock * (p.head_dim + kWarpSize);
  return cuattn::launch_kernel("attention_naive", attention_naive_kernel<T>, grid, block, smem,
                               stream, p);
}

}  // namespace

extern "C" cuattn_status CUATTN_LAUNCHER(attention_naive)(const cuattn_attention_params* params,
                                                          void* stream) {
  return cuattn::checked_attention_launch("attention_naive", params, [&](auto element) {
    return launch<decltype(element)>(*params, stream);
  });
}
