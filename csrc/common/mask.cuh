// Attention conventions shared by every kernel family: where a (possibly varlen) sequence lives,
// which keys a query row sees under a causal/sliding-window mask, scores and LSE in base 2.
#pragma once

#include "arch/math.cuh"
#include "common/cuda_compat.cuh"
#include "cuattn_internal.h"

namespace cuattn {

constexpr float kLn2 = 0.6931471805599453f;  // ln(2): log(x) = log2(x) * kLn2

// One batch entry's sequences: dense [batch, seqlen, ...] or packed varlen rows.
struct SequenceSpan {
  int len_q;
  int len_k;
  bool varlen;
  int batch;
  int64_t first_q;  // packed row of the first query (varlen)
  int64_t first_k;  // packed row of the first key (varlen)

  // Element offset of query row `row` in a q-like tensor (q, out).
  __device__ __forceinline__ int64_t q_offset(int64_t batch_stride, int64_t row_stride,
                                              int row) const {
    return varlen ? (first_q + row) * row_stride
                  : batch * batch_stride + static_cast<int64_t>(row) * row_stride;
  }
  // Element offset of the sequence's first key row in a k-like tensor (k, v).
  __device__ __forceinline__ int64_t k_offset(int64_t batch_stride, int64_t row_stride) const {
    return varlen ? first_k * row_stride : batch * batch_stride;
  }
  // Offset of (head, row) in the LSE: [batch, heads, seqlen_q], or [heads, total_q] for varlen.
  __device__ __forceinline__ int64_t lse_offset(const cuattn_attention_params& p, int head,
                                                int row) const {
    return varlen ? head * p.lse_head_stride + first_q + row
                  : batch * p.lse_batch_stride + head * p.lse_head_stride + row;
  }
};

__device__ __forceinline__ SequenceSpan sequence_span(const cuattn_attention_params& p, int batch) {
  SequenceSpan s;
  s.batch = batch;
  s.varlen = p.maybe_cu_seqlens_q != nullptr;
  if (s.varlen) {
    s.first_q = p.maybe_cu_seqlens_q[batch];
    s.first_k = p.maybe_cu_seqlens_k[batch];
    s.len_q = p.maybe_cu_seqlens_q[batch + 1] - p.maybe_cu_seqlens_q[batch];
    s.len_k = p.maybe_cu_seqlens_k[batch + 1] - p.maybe_cu_seqlens_k[batch];
  } else {
    s.first_q = 0;
    s.first_k = 0;
    s.len_q = p.seqlen_q;
    s.len_k = p.seqlen_k;
  }
  return s;
}

// Where query head `head` of a sequence lives: q and out at query row `row`, k and v at the
// sequence's first key, in the KV head that serves the head's group (heads / kv_heads query heads
// share one; it is never replicated).
template <typename T>
struct HeadSlices {
  const T* q;
  const T* k;
  const T* v;
  T* out;
};

template <typename T>
__device__ __forceinline__ HeadSlices<T> head_slices(const cuattn_attention_params& p,
                                                     const SequenceSpan& seq, int head, int row) {
  const int kv_head = head / (p.heads / p.kv_heads);
  return HeadSlices<T>{
      static_cast<const T*>(p.q) + seq.q_offset(p.q_batch_stride, p.q_row_stride, row) +
          head * p.q_head_stride,
      static_cast<const T*>(p.k) + seq.k_offset(p.k_batch_stride, p.k_row_stride) +
          kv_head * p.k_head_stride,
      static_cast<const T*>(p.v) + seq.k_offset(p.v_batch_stride, p.v_row_stride) +
          kv_head * p.v_head_stride,
      static_cast<T*>(p.out) + seq.q_offset(p.out_batch_stride, p.out_row_stride, row) +
          head * p.out_head_stride};
}

// Keys [begin, end) visible to query `row`; empty when end <= begin.
struct KeyRange {
  int begin;
  int end;
};

// Key j is visible to query i iff diag - left <= j <= diag + right, diag = i + len_k - len_q
// (bottom-right aligned), -1 meaning unbounded. int64 so huge windows cannot overflow.
__device__ __forceinline__ KeyRange visible_keys(int row, int len_q, int len_k, int window_left,
                                                 int window_right) {
  const int64_t diag = static_cast<int64_t>(row) + len_k - len_q;
  int64_t begin = window_left < 0 ? 0 : diag - window_left;
  int64_t end = window_right < 0 ? len_k : diag + window_right + 1;
  begin = begin < 0 ? 0 : begin;
  end = end > len_k ? len_k : end;
  if (end < begin) {
    end = begin;
  }
  return KeyRange{static_cast<int>(begin), static_cast<int>(end)};
}

// The keys of a CTA's query rows [row0, row0 + rows) (clipped to the sequence): both window bounds
// grow with the row, so the first and last rows bound them. `any` holds every key some row sees
// (tiles outside it are skipped); `every` the keys all rows see (tiles inside it need no mask).
struct CtaKeys {
  KeyRange any;
  KeyRange every;
};

__device__ __forceinline__ CtaKeys cta_keys(const cuattn_attention_params& p,
                                            const SequenceSpan& seq, int row0, int rows) {
  const int last_row = min(row0 + rows, seq.len_q) - 1;
  const KeyRange first = visible_keys(row0, seq.len_q, seq.len_k, p.window_left, p.window_right);
  const KeyRange last = visible_keys(last_row, seq.len_q, seq.len_k, p.window_left, p.window_right);
  return CtaKeys{KeyRange{first.begin, last.end}, KeyRange{last.begin, first.end}};
}

// How a dot product q . k becomes a score in base 2: scale * dot * log2(e), or soft-capped,
// cap * tanh(scale * dot / cap) * log2(e). Built once per kernel (or per tile, to keep it out of
// registers) from the params: the products and the division happen here, not per score.
struct ScoreMap {
  float scale_log2;  // scale * log2(e)
  float cap_scale;   // scale / cap; unused without softcap
  float cap_log2;    // cap * log2(e); 0 without softcap

  __device__ __forceinline__ static ScoreMap of(const cuattn_attention_params& p) {
    const bool capped = p.softcap > 0.0f;
    return ScoreMap{p.scale * kLog2e, capped ? p.scale / p.softcap : 0.0f,
                    capped ? p.softcap * kLog2e : 0.0f};
  }

  __device__ __forceinline__ bool capped() const { return cap_log2 > 0.0f; }

  __device__ __forceinline__ float operator()(float dot) const {
    return capped() ? capped_score(dot) : scaled_score(dot);
  }

  // The two ways apart, for a kernel that branches once for a whole tile of scores: a branch per
  // score serializes the scores' exp2/rcp latencies (ptxas reorders only within a block).
  __device__ __forceinline__ float capped_score(float dot) const {
    return cap_log2 * fast_tanh(dot * cap_scale);
  }
  __device__ __forceinline__ float scaled_score(float dot) const { return dot * scale_log2; }
};

// Natural-log LSE from a base-2 running max and sum of 2^(s - max); -inf for an empty row.
__device__ __forceinline__ float lse_from_log2(float row_max_log2, float row_sum) {
  return row_sum > 0.0f ? (row_max_log2 + log2f(row_sum)) * kLn2 : -INFINITY;
}

}  // namespace cuattn
