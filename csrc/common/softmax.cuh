// softmax.cuh: the online-softmax state of one query row in base 2, shared by the tiled kernels:
// a running max and sum that absorb one tile of scores at a time and give the final LSE.
#pragma once

#include "arch/math.cuh"
#include "common/cuda_compat.cuh"
#include "common/mask.cuh"

namespace cuattn {

struct OnlineSoftmax {
  float max = -INFINITY;  // running max of the row's base-2 scores
  float sum = 0.0f;       // running sum of 2^(s - max) (in mma kernels, this lane's share)

  // How far (base 2) a kernel may let the running max trail the row's true max: probabilities
  // then reach at most 2^kMaxLag, far inside the fp32, fp16 and bf16 ranges, and O, the sum and
  // the LSE all use the same max, so the result does not change. Skipping the move skips the
  // rescale of O, a multiply per accumulator.
  static constexpr float kMaxLag = 8.0f;

  // Whether this tile's max (reduced over the row's lanes) exceeds the running max by more than
  // kMaxLag; always true for the first tile with a visible score.
  __device__ __forceinline__ bool outgrown_by(float tile_max) const {
    return tile_max > max + kMaxLag;
  }

  // Moves the running max to include `tile_max` (already reduced over the row's lanes) and
  // rescales the sum; returns the factor the row's output accumulators must be scaled by.
  __device__ __forceinline__ float absorb_max(float tile_max) {
    const float new_max = fmaxf(max, tile_max);
    // While the row has seen only masked scores its max stays -inf; 0 keeps exp2 finite.
    const float correction = fast_exp2(max - safe(new_max));
    sum *= correction;
    max = new_max;
    return correction;
  }

  // 2^(s - max) for a score s = score * score_scale of this row after absorb_max, in one FFMA
  // and an exp2 (0 for a masked score, -inf). score_scale must be positive.
  __device__ __forceinline__ float prob(float score, float score_scale = 1.0f) const {
    return fast_exp2(fmaf(score, score_scale, -safe(max)));
  }

  // prob on the FMA pipe (fma_exp2, within 2^-18 relative rather than ex2's 2^-22), for kernels
  // that split their exponentials between the two pipes.
  __device__ __forceinline__ float prob_on_fma(float score, float score_scale = 1.0f) const {
    return fma_exp2(fmaf(score, score_scale, -safe(max)));
  }

  // Natural-log LSE of the row once `sum` holds the whole row's total (-inf for an empty row).
  __device__ __forceinline__ float lse() const { return lse_from_log2(max, sum); }

  // 1 / sum, or 0 for an empty row so that it outputs zeros.
  __device__ __forceinline__ float inv_sum() const { return sum > 0.0f ? 1.0f / sum : 0.0f; }

 private:
  __device__ __forceinline__ static float safe(float m) { return m == -INFINITY ? 0.0f : m; }
};

}  // namespace cuattn
