// linear_attention.cu: kernel-based linear attention (cuattn.h states the definition). Two
// kernels: the feature map of every q and k row into the workspace, then the state walker, one
// CTA per (32 value columns, KV head, sequence), which walks the keys in chunks of 64 holding the
// state S [m, 32] and z [m] in shared memory in float32:
// - causal: for each chunk, the queries whose last visible key falls in it attend to the chunk's
//   keys by masked quadratic attention on mma.sync (phi(q) phi(k)^T, then its product with V) and
//   to the keys before it through the state; the chunk's keys then join the state. The cost is
//   O(n C m + n m dv), not O(n^2).
// - non-causal: every chunk's keys join the state, then every query reads it.
// Every query head of the KV head's group is served by the CTA, so K, V and the state are read
// once per group. Parallelism is batch * kv_heads * value_dim / 32 CTAs: the chunk-parallel form
// (chunk states in parallel, a scan, then the queries) would fill a GPU on one long sequence, at
// the cost of a state per chunk in memory; this one keeps the state on chip.
#include <cstdint>

#include "arch/ldmatrix.cuh"
#include "arch/math.cuh"
#include "arch/mma.cuh"
#include "arch/vec.cuh"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/status.h"
#include "common/warp.h"
#include "cuattn_internal.h"

namespace cuattn {
namespace linear {

constexpr int kChunk = 64;       // keys (and query rows) a chunk
constexpr int kValueBlock = 32;  // value columns a CTA
constexpr int kWarps = 4;        // a warp per 16 query rows of a chunk
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kFeatureWarps = 8;  // feature kernel: a warp per row
constexpr int kMaxFeatures = 256;
constexpr int kMaxDim = 256;
constexpr int kDimMultiple = 8;
constexpr int kPad = 8;  // elements after each feature row in shared memory (16 bytes)

__host__ __device__ constexpr int padded_features(int m) { return (m + 15) / 16 * 16; }

template <typename T>
__device__ __forceinline__ float to_float(T x) {
  return static_cast<float>(x);
}
template <typename T>
__device__ __forceinline__ T from_float(float x) {
  return static_cast<T>(x);
}

// Where a sequence's rows are: dense or packed varlen.
struct Span {
  int len_q;
  int len_k;
  int64_t q_row0;  // the sequence's first row in the packed row space of the workspace
  int64_t k_row0;
};

__device__ __forceinline__ Span span_of(const cuattn_linear_attention_params& p, int b) {
  if (p.maybe_cu_seqlens_q != nullptr) {
    const int q0 = p.maybe_cu_seqlens_q[b];
    const int k0 = p.maybe_cu_seqlens_k[b];
    return Span{p.maybe_cu_seqlens_q[b + 1] - q0, p.maybe_cu_seqlens_k[b + 1] - k0, q0, k0};
  }
  return Span{p.seqlen_q, p.seqlen_k, int64_t{b} * p.seqlen_q, int64_t{b} * p.seqlen_k};
}

// Element offsets of row `row` of sequence `b` (its first row `row0` when packed) in a tensor
// with these strides.
__device__ __forceinline__ int64_t row_offset(const cuattn_linear_attention_params& p, int b,
                                              int64_t row0, int row, int64_t batch_stride,
                                              int64_t row_stride) {
  return p.maybe_cu_seqlens_q != nullptr ? (row0 + row) * row_stride
                                         : b * batch_stride + int64_t{row} * row_stride;
}

// The workspace: phi(q) in T [batch * seqlen_q][heads][m_pad]; the keys' features in T [batch *
// seqlen_k][kv_heads][m_pad], or, FAVOR, their exponents in float32 (the walker subtracts the
// running max before it exponentiates them).
struct Workspace {
  void* phi_q;
  void* key_features;
};

__host__ __device__ inline int64_t phi_q_bytes(const cuattn_linear_attention_params& p) {
  return int64_t{p.batch} * p.seqlen_q * p.heads * padded_features(p.num_features) * 2;
}

__host__ __device__ inline int64_t key_feature_bytes(const cuattn_linear_attention_params& p) {
  const int64_t element = p.feature_map == CUATTN_FEATURE_FAVOR ? 4 : 2;
  return int64_t{p.batch} * p.seqlen_k * p.kv_heads * padded_features(p.num_features) * element;
}

__host__ __device__ inline int64_t align256(int64_t bytes) { return (bytes + 255) / 256 * 256; }

inline Workspace workspace_of(const cuattn_linear_attention_params& p) {
  unsigned char* base = static_cast<unsigned char*>(p.workspace);
  return Workspace{base, base + align256(phi_q_bytes(p))};
}

// The feature map of one row of q (`keys` false) or k per warp: grid (rows / kFeatureWarps,
// heads or kv_heads, batch). ELU1/RELU elementwise; FAVOR: u = W x' - |x'|^2 / 2, for a query
// phi = exp(u - max u) / sqrt(m) (the row's max cancels in its ratio), for a key u itself in
// float32. Features past m (to m_pad) are 0 (exponents -inf).
template <typename T>
__global__ void __launch_bounds__(kFeatureWarps* kWarpSize)
    linear_features_kernel(const cuattn_linear_attention_params p, const Workspace w, bool keys) {
  __shared__ float x_rows[kFeatureWarps][kMaxDim];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int head = blockIdx.y;
  const int b = blockIdx.z;
  const int row = blockIdx.x * kFeatureWarps + warp;
  const Span s = span_of(p, b);
  const int len = keys ? s.len_k : s.len_q;
  if (row >= len) {
    return;  // whole warps leave; the kernel has no barrier after this
  }
  const int d = p.head_dim;
  const int m = p.num_features;
  const int m_pad = padded_features(m);
  const int heads = keys ? p.kv_heads : p.heads;
  const T* x = static_cast<const T*>(keys ? p.k : p.q) +
               (keys ? row_offset(p, b, s.k_row0, row, p.k_batch_stride, p.k_row_stride)
                     : row_offset(p, b, s.q_row0, row, p.q_batch_stride, p.q_row_stride)) +
               head * (keys ? p.k_head_stride : p.q_head_stride);
  const int64_t packed = (keys ? s.k_row0 : s.q_row0) + row;
  const int64_t out_offset = (packed * heads + head) * m_pad;
  float* xs = x_rows[warp];
  if (p.feature_map != CUATTN_FEATURE_FAVOR) {
    T* phi = static_cast<T*>(keys ? w.key_features : w.phi_q) + out_offset;
    for (int f = lane; f < m_pad; f += kWarpSize) {
      float value = 0.0f;
      if (f < d) {
        const float e = to_float(x[f]);
        value = p.feature_map == CUATTN_FEATURE_ELU1 ? (e > 0.0f ? e + 1.0f : __expf(e))
                                                     : fmaxf(e, 0.0f);
      }
      phi[f] = from_float<T>(value);
    }
    return;
  }
  // FAVOR: x' = x d^(-1/4) in shared memory, its squared norm over the warp.
  const float x_scale = rsqrtf(sqrtf(static_cast<float>(d)));
  float norm = 0.0f;
  for (int e = lane; e < d; e += kWarpSize) {
    const float value = to_float(x[e]) * x_scale;
    xs[e] = value;
    norm += value * value;
  }
  norm = warp_sum(norm);
  __syncwarp();
  float u[kMaxFeatures / kWarpSize];
  float row_max = -INFINITY;
#pragma unroll
  for (int i = 0; i < kMaxFeatures / kWarpSize; ++i) {
    const int f = lane + i * kWarpSize;
    u[i] = -INFINITY;
    if (f < m) {
      const float* w_row = p.maybe_projection + int64_t{f} * d;
      float dot = 0.0f;
      for (int e = 0; e < d; ++e) {
        dot = fmaf(w_row[e], xs[e], dot);
      }
      u[i] = dot - 0.5f * norm;
      row_max = fmaxf(row_max, u[i]);
    }
  }
  if (keys) {
    float* exponents = static_cast<float*>(w.key_features) + out_offset;
#pragma unroll
    for (int i = 0; i < kMaxFeatures / kWarpSize; ++i) {
      const int f = lane + i * kWarpSize;
      if (f < m_pad) {
        exponents[f] = u[i];
      }
    }
    return;
  }
  row_max = warp_max(row_max);
  const float inv_sqrt_m = rsqrtf(static_cast<float>(m));
  T* phi = static_cast<T*>(w.phi_q) + out_offset;
#pragma unroll
  for (int i = 0; i < kMaxFeatures / kWarpSize; ++i) {
    const int f = lane + i * kWarpSize;
    if (f < m_pad) {
      phi[f] = from_float<T>(f < m ? __expf(u[i] - row_max) * inv_sqrt_m : 0.0f);
    }
  }
}

// Shared memory of the walker for m_pad features: the chunk's phi(q), phi(k) and V tiles (rows
// padded by 16 bytes), the state S [m_pad][kValueBlock] and z [m_pad], the chunk's intra-chunk
// output [kChunk][kValueBlock + 1] and denominators, and a reduction scratch.
struct WalkerSmem {
  int phi_stride;  // elements a feature row
  int64_t phi_q, phi_k, v, s, z, o, den, scratch, total;

  __host__ __device__ static WalkerSmem of(int m_pad) {
    WalkerSmem l;
    l.phi_stride = m_pad + kPad;
    const int64_t phi_bytes = int64_t{kChunk} * l.phi_stride * 2;
    l.phi_q = 0;
    l.phi_k = l.phi_q + phi_bytes;
    l.v = l.phi_k + phi_bytes;
    l.s = l.v + int64_t{kChunk} * (kValueBlock + kPad) * 2;
    l.z = l.s + int64_t{m_pad} * kValueBlock * 4;
    l.o = l.z + int64_t{m_pad} * 4;
    l.den = l.o + int64_t{kChunk} * (kValueBlock + 1) * 4;
    l.scratch = l.den + kChunk * 4;
    l.total = l.scratch + kThreads * 4;
    return l;
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    linear_walker_kernel(const cuattn_linear_attention_params p, const Workspace w) {
  CUATTN_DYNAMIC_SMEM(unsigned char, smem);
  const int m = p.num_features;
  const int m_pad = padded_features(m);
  const WalkerSmem layout = WalkerSmem::of(m_pad);
  const int stride = layout.phi_stride;
  T* sPhiQ = reinterpret_cast<T*>(smem + layout.phi_q);
  T* sPhiK = reinterpret_cast<T*>(smem + layout.phi_k);
  T* sV = reinterpret_cast<T*>(smem + layout.v);
  float* sS = reinterpret_cast<float*>(smem + layout.s);
  float* sZ = reinterpret_cast<float*>(smem + layout.z);
  float* sO = reinterpret_cast<float*>(smem + layout.o);
  float* sDen = reinterpret_cast<float*>(smem + layout.den);
  float* sScratch = reinterpret_cast<float*>(smem + layout.scratch);
  constexpr int kVStride = kValueBlock + kPad;
  constexpr int kOStride = kValueBlock + 1;

  const int tid = threadIdx.x;
  const int warp = tid / kWarpSize;
  const int lane = tid % kWarpSize;
  const int e0 = blockIdx.x * kValueBlock;  // the CTA's first value column
  const int kv_head = blockIdx.y;
  const int b = blockIdx.z;
  const int group = p.heads / p.kv_heads;
  const Span s = span_of(p, b);
  const bool favor = p.feature_map == CUATTN_FEATURE_FAVOR;
  const bool causal = p.causal != 0;
  const int64_t state_index = int64_t{b} * p.kv_heads + kv_head;
  const bool has_state = p.maybe_state.s != nullptr;

  // The state: from maybe_state, or empty.
  for (int i = tid; i < m_pad * kValueBlock; i += kThreads) {
    const int f = i / kValueBlock;
    const int e = e0 + i % kValueBlock;
    sS[i] = has_state && f < m && e < p.value_dim
                ? p.maybe_state.s[(state_index * m + f) * p.value_dim + e]
                : 0.0f;
  }
  for (int f = tid; f < m_pad; f += kThreads) {
    sZ[f] = has_state && f < m ? p.maybe_state.z[state_index * m + f] : 0.0f;
  }
  float key_max = has_state ? p.maybe_state.key_max[state_index] : -INFINITY;
  __syncthreads();

  const T* v_base = static_cast<const T*>(p.v) + kv_head * p.v_head_stride;
  T* out_base = static_cast<T*>(p.out);
  const float inv_sqrt_m = rsqrtf(static_cast<float>(m));

  // Loads chunk c's keys' features into sPhiK and its values' columns into sV (rows past the
  // sequence zero); FAVOR: moves the running key max to the chunk's and rescales the state.
  auto load_keys = [&](int c) {
    const int key0 = c * kChunk;
    const int valid = min(kChunk, s.len_k - key0);
    if (favor) {
      const float* exponents = static_cast<const float*>(w.key_features);
      float chunk_max = -INFINITY;
      for (int i = tid; i < valid * m; i += kThreads) {
        const int r = i / m;
        const int f = i % m;
        chunk_max =
            fmaxf(chunk_max, exponents[((s.k_row0 + key0 + r) * p.kv_heads + kv_head) * m_pad + f]);
      }
      sScratch[tid] = warp_max(chunk_max);
      __syncthreads();
      float new_max = key_max;
      for (int i = 0; i < kWarps; ++i) {
        new_max = fmaxf(new_max, sScratch[i * kWarpSize]);
      }
      if (new_max > key_max) {
        const float scale = __expf(key_max - new_max);  // 0 for the first keys
        for (int i = tid; i < m_pad * kValueBlock; i += kThreads) {
          sS[i] *= scale;
        }
        for (int f = tid; f < m_pad; f += kThreads) {
          sZ[f] *= scale;
        }
        key_max = new_max;
      }
      for (int i = tid; i < kChunk * m_pad; i += kThreads) {
        const int r = i / m_pad;
        const int f = i % m_pad;
        float phi = 0.0f;
        if (r < valid && f < m) {
          phi = __expf(exponents[((s.k_row0 + key0 + r) * p.kv_heads + kv_head) * m_pad + f] -
                       key_max) *
                inv_sqrt_m;
        }
        sPhiK[r * stride + f] = from_float<T>(phi);
      }
    } else {
      const T* phi = static_cast<const T*>(w.key_features);
      for (int i = tid; i < kChunk * m_pad; i += kThreads) {
        const int r = i / m_pad;
        const int f = i % m_pad;
        sPhiK[r * stride + f] =
            r < valid ? phi[((s.k_row0 + key0 + r) * p.kv_heads + kv_head) * m_pad + f]
                      : from_float<T>(0.0f);
      }
    }
    for (int i = tid; i < kChunk * kValueBlock; i += kThreads) {
      const int r = i / kValueBlock;
      const int e = i % kValueBlock;
      sV[r * kVStride + e] =
          r < valid && e0 + e < p.value_dim
              ? v_base[row_offset(p, b, s.k_row0, key0 + r, p.v_batch_stride, p.v_row_stride) + e0 +
                       e]
              : from_float<T>(0.0f);
    }
    __syncthreads();
  };

  // S += phi(K)^T V and z += the sum of phi(K) over the chunk in sPhiK and sV.
  auto absorb_keys = [&] {
    for (int i = tid; i < m_pad * kValueBlock; i += kThreads) {
      const int f = i / kValueBlock;
      const int e = i % kValueBlock;
      float acc = sS[i];
      for (int r = 0; r < kChunk; ++r) {
        acc = fmaf(to_float(sPhiK[r * stride + f]), to_float(sV[r * kVStride + e]), acc);
      }
      sS[i] = acc;
    }
    for (int f = tid; f < m_pad; f += kThreads) {
      float acc = sZ[f];
      for (int r = 0; r < kChunk; ++r) {
        acc += to_float(sPhiK[r * stride + f]);
      }
      sZ[f] = acc;
    }
    __syncthreads();
  };

  // Loads phi(q) of rows row0 .. row0 + kChunk - 1 of query head `head` (rows outside the
  // sequence zero).
  auto load_queries = [&](int row0, int head) {
    const T* phi = static_cast<const T*>(w.phi_q);
    for (int i = tid; i < kChunk * m_pad; i += kThreads) {
      const int r = i / m_pad;
      const int f = i % m_pad;
      const int row = row0 + r;
      sPhiQ[r * stride + f] = row >= 0 && row < s.len_q
                                  ? phi[((s.q_row0 + row) * p.heads + head) * m_pad + f]
                                  : from_float<T>(0.0f);
    }
  };

  // Intra-chunk attention of the queries in sPhiQ to the keys in sPhiK on mma.sync: row r sees
  // keys j <= r (causal: row r's last visible key is the chunk's key r). Writes each row's
  // phi(q)^T phi(K)^T-weighted sum of V to sO and its weight total to sDen.
  auto intra_chunk = [&] {
    const int r0 = warp * kMmaM;
    const int group_row = lane / 4;
    const int quad_lane = lane % 4;
    float a_scores[kChunk / kMmaN][kMmaCRegs] = {};
    for (int k16 = 0; k16 < m_pad / kMmaK; ++k16) {
      uint32_t a[kMmaARegs];
      ldmatrix_x4(a, sPhiQ + (r0 + lane % 16) * stride + k16 * kMmaK + 8 * (lane / 16));
#pragma unroll
      for (int n8 = 0; n8 < kChunk / kMmaN; n8 += 2) {
        uint32_t bk[4];
        ldmatrix_x4(bk, sPhiK + (n8 * kMmaN + (lane / 16) * kMmaN + lane % 8) * stride +
                            k16 * kMmaK + 8 * ((lane / 8) % 2));
        const uint32_t b0[kMmaBRegs] = {bk[0], bk[1]};
        const uint32_t b1[kMmaBRegs] = {bk[2], bk[3]};
        mma_m16n8k16<T>(a_scores[n8], a, b0, a_scores[n8]);
        mma_m16n8k16<T>(a_scores[n8 + 1], a, b1, a_scores[n8 + 1]);
      }
    }
    float den[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n8 = 0; n8 < kChunk / kMmaN; ++n8) {
#pragma unroll
      for (int i = 0; i < kMmaCRegs; ++i) {
        const int row = r0 + group_row + 8 * (i / 2);
        const int key = n8 * kMmaN + 2 * quad_lane + i % 2;
        if (key > row) {
          a_scores[n8][i] = 0.0f;
        }
        den[i / 2] += a_scores[n8][i];
      }
    }
    float o[kValueBlock / kMmaN][kMmaCRegs] = {};
#pragma unroll
    for (int k16 = 0; k16 < kChunk / kMmaK; ++k16) {
      const uint32_t a[kMmaARegs] = {pack2<T>(a_scores[2 * k16][0], a_scores[2 * k16][1]),
                                     pack2<T>(a_scores[2 * k16][2], a_scores[2 * k16][3]),
                                     pack2<T>(a_scores[2 * k16 + 1][0], a_scores[2 * k16 + 1][1]),
                                     pack2<T>(a_scores[2 * k16 + 1][2], a_scores[2 * k16 + 1][3])};
#pragma unroll
      for (int d8 = 0; d8 < kValueBlock / kMmaN; d8 += 2) {
        uint32_t bv[4];
        ldmatrix_x4_trans(bv, sV + (k16 * kMmaK + lane % 16) * kVStride + (d8 + lane / 16) * kMmaN);
        const uint32_t b0[kMmaBRegs] = {bv[0], bv[1]};
        const uint32_t b1[kMmaBRegs] = {bv[2], bv[3]};
        mma_m16n8k16<T>(o[d8], a, b0, o[d8]);
        mma_m16n8k16<T>(o[d8 + 1], a, b1, o[d8 + 1]);
      }
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = r0 + group_row + 8 * half;
#pragma unroll
      for (int d8 = 0; d8 < kValueBlock / kMmaN; ++d8) {
        sO[row * kOStride + d8 * kMmaN + 2 * quad_lane] = o[d8][2 * half];
        sO[row * kOStride + d8 * kMmaN + 2 * quad_lane + 1] = o[d8][2 * half + 1];
      }
      const float total = quad_sum(den[half]);
      if (quad_lane == 0) {
        sDen[row] = total;
      }
    }
  };

  // Adds the state's part to the rows in sPhiQ (sO and sDen hold the intra-chunk part, or zeros)
  // and writes rows row0 .. of query head `head`: out = num / (den + eps), zeros where den is 0.
  auto finish_rows = [&](int row0, int head) {
    __syncthreads();  // sO, sDen and sPhiQ are complete
    for (int r = tid; r < kChunk; r += kThreads) {
      float den = sDen[r];
      for (int f = 0; f < m_pad; ++f) {
        den = fmaf(to_float(sPhiQ[r * stride + f]), sZ[f], den);
      }
      sDen[r] = den;
    }
    __syncthreads();
    for (int i = tid; i < kChunk * kValueBlock; i += kThreads) {
      const int r = i / kValueBlock;
      const int e = i % kValueBlock;
      const int row = row0 + r;
      if (row < 0 || row >= s.len_q || e0 + e >= p.value_dim) {
        continue;
      }
      float num = sO[r * kOStride + e];
      for (int f = 0; f < m_pad; ++f) {
        num = fmaf(to_float(sPhiQ[r * stride + f]), sS[f * kValueBlock + e], num);
      }
      const float den = sDen[r];
      const float value = den != 0.0f ? num / (den + p.eps) : 0.0f;
      out_base[row_offset(p, b, s.q_row0, row, p.out_batch_stride, p.out_row_stride) +
               head * p.out_head_stride + e0 + e] = from_float<T>(value);
    }
    __syncthreads();  // sPhiQ, sO and sDen may be reused
  };
  auto clear_intra = [&] {
    for (int i = tid; i < kChunk * kOStride; i += kThreads) {
      sO[i] = 0.0f;
    }
    for (int r = tid; r < kChunk; r += kThreads) {
      sDen[r] = 0.0f;
    }
  };

  const int chunks = (s.len_k + kChunk - 1) / kChunk;
  if (causal) {
    // Query row i's last visible key is i + offset; rows before -offset see none (zeros).
    const int offset = s.len_k - s.len_q;
    for (int row = 0; row < min(-offset, s.len_q); ++row) {
      for (int i = tid; i < group * kValueBlock; i += kThreads) {
        const int head = kv_head * group + i / kValueBlock;
        const int e = e0 + i % kValueBlock;
        if (e < p.value_dim) {
          out_base[row_offset(p, b, s.q_row0, row, p.out_batch_stride, p.out_row_stride) +
                   head * p.out_head_stride + e] = from_float<T>(0.0f);
        }
      }
    }
    for (int c = 0; c < chunks; ++c) {
      load_keys(c);
      const int row0 = c * kChunk - offset;  // the row whose last key is the chunk's first
      if (row0 < s.len_q && row0 + kChunk > 0) {
        for (int g = 0; g < group; ++g) {
          const int head = kv_head * group + g;
          load_queries(row0, head);
          __syncthreads();
          intra_chunk();
          finish_rows(row0, head);
        }
      }
      absorb_keys();
    }
  } else {
    for (int c = 0; c < chunks; ++c) {
      load_keys(c);
      absorb_keys();
    }
    for (int row0 = 0; row0 < s.len_q; row0 += kChunk) {
      for (int g = 0; g < group; ++g) {
        const int head = kv_head * group + g;
        load_queries(row0, head);
        clear_intra();
        finish_rows(row0, head);
      }
    }
  }

  if (has_state) {
    for (int i = tid; i < m * kValueBlock; i += kThreads) {
      const int f = i / kValueBlock;
      const int e = e0 + i % kValueBlock;
      if (e < p.value_dim) {
        p.maybe_state.s[(state_index * m + f) * p.value_dim + e] = sS[f * kValueBlock + (e - e0)];
      }
    }
    if (blockIdx.x == 0) {
      for (int f = tid; f < m; f += kThreads) {
        p.maybe_state.z[state_index * m + f] = sZ[f];
      }
      if (tid == 0) {
        p.maybe_state.key_max[state_index] = key_max;
      }
    }
  }
}

}  // namespace linear
}  // namespace cuattn

namespace {

using cuattn::fail;
namespace linear = cuattn::linear;

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// The shape fields the plan and the kernels' indexing rely on.
cuattn_status check_shape(const char* what, const cuattn_linear_attention_params* params) {
  if (params == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: params is null", what);
  }
  const cuattn_linear_attention_params& p = *params;
  auto dim_ok = [](int d) {
    return d > 0 && d % linear::kDimMultiple == 0 && d <= linear::kMaxDim;
  };
  if (!dim_ok(p.head_dim) || !dim_ok(p.value_dim)) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: head_dim = %d, value_dim = %d: each a multiple of %d in %d..=%d", what,
                p.head_dim, p.value_dim, linear::kDimMultiple, linear::kDimMultiple,
                linear::kMaxDim);
  }
  if (p.heads <= 0 || p.kv_heads <= 0 || p.heads % p.kv_heads != 0 || p.kv_heads > 65535) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: heads = %d, kv_heads = %d: kv_heads (at most 65535) must divide heads", what,
                p.heads, p.kv_heads);
  }
  if (p.batch < 0 || p.batch > 65535 || p.seqlen_q < 0 || p.seqlen_k < 0) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: batch = %d (at most 65535), seqlen_q = %d, seqlen_k = %d: none negative", what,
                p.batch, p.seqlen_q, p.seqlen_k);
  }
  if (p.dtype != CUATTN_DTYPE_F16 && p.dtype != CUATTN_DTYPE_BF16) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: dtype = %d is not f16 (0) or bf16 (1)", what,
                static_cast<int>(p.dtype));
  }
  switch (p.feature_map) {
    case CUATTN_FEATURE_ELU1:
    case CUATTN_FEATURE_RELU:
      if (p.num_features != p.head_dim) {
        return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                    "%s: num_features = %d: the elementwise feature maps have head_dim (%d)", what,
                    p.num_features, p.head_dim);
      }
      break;
    case CUATTN_FEATURE_FAVOR:
      if (p.num_features <= 0 || p.num_features > linear::kMaxFeatures) {
        return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: num_features = %d: FAVOR takes 1..=%d",
                    what, p.num_features, linear::kMaxFeatures);
      }
      break;
    default:
      return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                  "%s: feature_map = %d is not ELU1 (0), RELU (1) or FAVOR (2)", what,
                  static_cast<int>(p.feature_map));
  }
  return CUATTN_OK;
}

cuattn_status check_launch(const char* what, const cuattn_linear_attention_params* params) {
  cuattn_status status = check_shape(what, params);
  if (status != CUATTN_OK) {
    return status;
  }
  const cuattn_linear_attention_params& p = *params;
  if (p.q == nullptr || p.k == nullptr || p.v == nullptr || p.out == nullptr ||
      p.workspace == nullptr || !aligned16(p.workspace)) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: q, k, v, out and a 16-byte aligned workspace must be set", what);
  }
  if ((p.maybe_cu_seqlens_q == nullptr) != (p.maybe_cu_seqlens_k == nullptr)) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: maybe_cu_seqlens_q and maybe_cu_seqlens_k go together or not at all", what);
  }
  if (p.feature_map == CUATTN_FEATURE_FAVOR && p.maybe_projection == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: FAVOR needs maybe_projection [m, head_dim]",
                what);
  }
  const cuattn_linear_state_view& st = p.maybe_state;
  if ((st.s == nullptr) != (st.z == nullptr) || (st.s == nullptr) != (st.key_max == nullptr)) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                "%s: maybe_state's s, z and key_max are all set or all null", what);
  }
  if (!(p.eps >= 0.0f) || p.eps > 1.0f) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "%s: eps = %g: must be in [0, 1]", what, p.eps);
  }
  return CUATTN_OK;
}

template <typename T>
cuattn_status launch_typed(const cuattn_linear_attention_params& p, void* stream) {
  const linear::Workspace w = linear::workspace_of(p);
  const dim3 feature_block(linear::kFeatureWarps * cuattn::kWarpSize);
  const int rows_q = (p.seqlen_q + linear::kFeatureWarps - 1) / linear::kFeatureWarps;
  const int rows_k = (p.seqlen_k + linear::kFeatureWarps - 1) / linear::kFeatureWarps;
  cuattn_status status = CUATTN_OK;
  if (rows_q > 0) {
    status = cuattn::launch_kernel("linear_features", linear::linear_features_kernel<T>,
                                   dim3(rows_q, p.heads, p.batch), feature_block, 0, stream, p, w,
                                   false);
    if (status != CUATTN_OK) {
      return status;
    }
  }
  if (rows_k > 0) {
    status = cuattn::launch_kernel("linear_features", linear::linear_features_kernel<T>,
                                   dim3(rows_k, p.kv_heads, p.batch), feature_block, 0, stream, p,
                                   w, true);
    if (status != CUATTN_OK) {
      return status;
    }
  }
  const linear::WalkerSmem layout = linear::WalkerSmem::of(linear::padded_features(p.num_features));
  const dim3 grid((p.value_dim + linear::kValueBlock - 1) / linear::kValueBlock, p.kv_heads,
                  p.batch);
  return cuattn::launch_kernel("linear_attention", linear::linear_walker_kernel<T>, grid,
                               dim3(linear::kThreads), static_cast<size_t>(layout.total), stream, p,
                               w);
}

}  // namespace

#ifdef CUATTN_EMU
#define CUATTN_LINEAR_PLANNER cuattn_emu_raw_plan_linear_attention
#else
#define CUATTN_LINEAR_PLANNER cuattn_raw_plan_linear_attention
#endif

extern "C" cuattn_status CUATTN_LINEAR_PLANNER(const cuattn_linear_attention_params* params,
                                               int64_t* workspace_bytes) {
  if (workspace_bytes == nullptr) {
    return fail(CUATTN_ERROR_INVALID_ARGUMENT, "linear_attention plan: workspace_bytes is null");
  }
  *workspace_bytes = 0;
  const cuattn_status status = check_shape("linear_attention plan", params);
  if (status != CUATTN_OK) {
    return status;
  }
  *workspace_bytes =
      linear::align256(linear::phi_q_bytes(*params)) + linear::key_feature_bytes(*params);
  return CUATTN_OK;
}

extern "C" cuattn_status CUATTN_LAUNCHER(linear_attention)(
    const cuattn_linear_attention_params* params, void* stream) {
  const char* what = "linear_attention";
  const cuattn_status status = check_launch(what, params);
  if (status != CUATTN_OK) {
    return status;
  }
  if (params->batch == 0 || (params->seqlen_q == 0 && params->seqlen_k == 0)) {
    return CUATTN_OK;
  }
  if (params->dtype == CUATTN_DTYPE_F16) {
    return launch_typed<__half>(*params, stream);
  }
  return launch_typed<__nv_bfloat16>(*params, stream);
}
