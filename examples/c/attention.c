/* examples/c/attention.c: cuattn from plain C, through csrc/cuattn.h and the cuattn-capi static
 * library, on the CPU emulator (CUATTN_STREAM_EMULATOR, CUATTN_DEVICE_EMULATOR), so it runs on any
 * machine. It calls every public entry point: attention (naive and flash) and its plan against an
 * f64 reference computed here, the paged KV cache object from creation to a prefill over the
 * cache (against the same reference), merge_states against its formula, and each entry point
 * with bad arguments, checking the status and the message cuattn_last_error() gives.
 *
 *   cargo build --release -p cuattn-capi
 *   cc -std=c11 -O2 -I csrc examples/c/attention.c target/release/libcuattn_capi.a \
 *      -lstdc++ -lpthread -ldl -lrt -lm -o target/attention_c
 *   target/attention_c
 *
 * Prints one line per check group and "ok" at the end; exits 1 if any check failed. */
#define _POSIX_C_SOURCE 200112L /* setenv */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuattn.h"

/* ---- checks ---------------------------------------------------------------------------------- */

static int checks = 0;
static int failures = 0;

static void expect(int ok, const char* what) {
  ++checks;
  if (!ok) {
    ++failures;
    fprintf(stderr, "FAIL: %s (last error: %s)\n", what, cuattn_last_error());
  }
}

/* `status` is `want`, and when it is an error, the message names `needle`. */
static void expect_status(cuattn_status status, cuattn_status want, const char* needle,
                          const char* what) {
  ++checks;
  const char* message = cuattn_last_error();
  if (status != want || (want != CUATTN_OK && strstr(message, needle) == NULL)) {
    ++failures;
    fprintf(stderr, "FAIL: %s: status %d (want %d), message \"%s\" (want \"%s\" in it)\n", what,
            (int)status, (int)want, message, needle);
  }
}

/* ---- bf16 ------------------------------------------------------------------------------------ */

static uint16_t bf16_from_float(float x) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  bits += 0x7fffu + ((bits >> 16) & 1u); /* round to nearest even (inputs are finite) */
  return (uint16_t)(bits >> 16);
}

static double bf16_to_double(uint16_t h) {
  const uint32_t bits = (uint32_t)h << 16;
  float x;
  memcpy(&x, &bits, sizeof x);
  return x;
}

/* Deterministic values in [-1, 1): a 64-bit LCG. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float random_unit(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((rng_state >> 40) / (double)(1u << 24)) * 2.0f - 1.0f;
}

/* n bf16 values, 16-byte aligned (the flash kernel reads rows as 16-byte vectors). */
static uint16_t* random_bf16(size_t n) {
  uint16_t* x = aligned_alloc(16, (n * sizeof *x + 15) / 16 * 16);
  for (size_t i = 0; i < n; ++i) {
    x[i] = bf16_from_float(random_unit());
  }
  return x;
}

/* ---- the reference --------------------------------------------------------------------------- */

/* Causal attention (bottom-right aligned) in f64 over contiguous bf16 q [batch, sq, heads, d],
 * k and v [batch, sk, kv_heads, d]: out [batch, sq, heads, d] and lse [batch, heads, sq]. */
static void reference_attention(const uint16_t* q, const uint16_t* k, const uint16_t* v, int batch,
                                int sq, int sk, int heads, int kv_heads, int d, double scale,
                                double* out, double* lse) {
  double* p = malloc(sizeof(double) * (size_t)sk);
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      const int kh = h / (heads / kv_heads);
      for (int i = 0; i < sq; ++i) {
        const uint16_t* qi = q + (((size_t)b * sq + i) * heads + h) * d;
        const int last = i + sk - sq; /* the last key query i sees */
        double max = -INFINITY;
        for (int j = 0; j <= last && j < sk; ++j) {
          const uint16_t* kj = k + (((size_t)b * sk + j) * kv_heads + kh) * d;
          double dot = 0.0;
          for (int c = 0; c < d; ++c) {
            dot += bf16_to_double(qi[c]) * bf16_to_double(kj[c]);
          }
          p[j] = scale * dot;
          max = p[j] > max ? p[j] : max;
        }
        double sum = 0.0;
        for (int j = 0; j <= last && j < sk; ++j) {
          p[j] = exp(p[j] - max);
          sum += p[j];
        }
        double* o = out + (((size_t)b * sq + i) * heads + h) * d;
        for (int c = 0; c < d; ++c) {
          double acc = 0.0;
          for (int j = 0; j <= last && j < sk; ++j) {
            acc += p[j] * bf16_to_double(v[(((size_t)b * sk + j) * kv_heads + kh) * d + c]);
          }
          o[c] = sum > 0.0 ? acc / sum : 0.0;
        }
        lse[((size_t)b * heads + h) * sq + i] = sum > 0.0 ? max + log(sum) : -INFINITY;
      }
    }
  }
  free(p);
}

/* The largest |got - want| / (atol + rtol |want|) over n bf16 outputs: at most 1 passes. */
static double worst_bf16(const uint16_t* got, const double* want, size_t n, double tol) {
  double worst = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double e = fabs(bf16_to_double(got[i]) - want[i]) / (tol + tol * fabs(want[i]));
    worst = e > worst ? e : worst;
  }
  return worst;
}

static double worst_float(const float* got, const double* want, size_t n, double tol) {
  double worst = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double e = fabs(got[i] - want[i]) / (tol + tol * fabs(want[i]));
    worst = e > worst ? e : worst;
  }
  return worst;
}

/* ---- attention ------------------------------------------------------------------------------- */

enum { BATCH = 2, SEQ_Q = 7, SEQ_K = 13, HEADS = 4, KV_HEADS = 2, HEAD_DIM = 64 };

/* Params of contiguous q [BATCH, SEQ_Q, HEADS, HEAD_DIM], k and v [BATCH, SEQ_K, KV_HEADS,
 * HEAD_DIM], causal, LSE [BATCH, HEADS, SEQ_Q]. */
static cuattn_attention_params attention_params(const void* q, const void* k, const void* v,
                                                void* out, float* lse) {
  cuattn_attention_params p;
  memset(&p, 0, sizeof p);
  p.q = q;
  p.k = k;
  p.v = v;
  p.out = out;
  p.maybe_lse = lse;
  p.q_batch_stride = (int64_t)SEQ_Q * HEADS * HEAD_DIM;
  p.q_row_stride = (int64_t)HEADS * HEAD_DIM;
  p.q_head_stride = HEAD_DIM;
  p.k_batch_stride = (int64_t)SEQ_K * KV_HEADS * HEAD_DIM;
  p.k_row_stride = (int64_t)KV_HEADS * HEAD_DIM;
  p.k_head_stride = HEAD_DIM;
  p.v_batch_stride = p.k_batch_stride;
  p.v_row_stride = p.k_row_stride;
  p.v_head_stride = p.k_head_stride;
  p.out_batch_stride = p.q_batch_stride;
  p.out_row_stride = p.q_row_stride;
  p.out_head_stride = p.q_head_stride;
  p.lse_batch_stride = (int64_t)HEADS * SEQ_Q;
  p.lse_head_stride = SEQ_Q;
  p.batch = BATCH;
  p.heads = HEADS;
  p.kv_heads = KV_HEADS;
  p.head_dim = HEAD_DIM;
  p.seqlen_q = SEQ_Q;
  p.seqlen_k = SEQ_K;
  p.scale = 1.0f / sqrtf((float)HEAD_DIM); /* the library derives scale * log2(e) */
  p.softcap = 0.0f;
  p.window_left = -1;
  p.window_right = 0; /* causal */
  p.flash_tiles = CUATTN_FLASH_TILES_AUTO;
  p.dtype = CUATTN_DTYPE_BF16;
  return p;
}

static void check_attention(void) {
  const size_t nq = (size_t)BATCH * SEQ_Q * HEADS * HEAD_DIM;
  const size_t nk = (size_t)BATCH * SEQ_K * KV_HEADS * HEAD_DIM;
  const size_t nlse = (size_t)BATCH * HEADS * SEQ_Q;
  uint16_t* q = random_bf16(nq);
  uint16_t* k = random_bf16(nk);
  uint16_t* v = random_bf16(nk);
  uint16_t* out = aligned_alloc(16, nq * sizeof *out);
  float* lse = malloc(nlse * sizeof *lse);
  double* want = malloc(nq * sizeof *want);
  double* want_lse = malloc(nlse * sizeof *want_lse);
  reference_attention(q, k, v, BATCH, SEQ_Q, SEQ_K, HEADS, KV_HEADS, HEAD_DIM,
                      1.0 / sqrt((double)HEAD_DIM), want, want_lse);

  cuattn_attention_params p = attention_params(q, k, v, out, lse);
  for (int flash = 0; flash <= 1; ++flash) {
    memset(out, 0xff, nq * sizeof *out); /* NaN poison: every element must be written */
    const cuattn_status status = flash ? cuattn_attention_flash(&p, CUATTN_STREAM_EMULATOR)
                                       : cuattn_attention_naive(&p, CUATTN_STREAM_EMULATOR);
    expect_status(status, CUATTN_OK, "", flash ? "attention_flash" : "attention_naive");
    const double worst = worst_bf16(out, want, nq, 2e-2);
    const double worst_lse = worst_float(lse, want_lse, nlse, 1e-3);
    expect(worst <= 1.0, "out matches the f64 reference (atol = rtol = 2e-2)");
    expect(worst_lse <= 1.0, "lse matches the f64 reference (atol = rtol = 1e-3)");
    printf("attention_%s b %d sq %d sk %d heads %d/%d d %d causal: worst error %.3f of tolerance, "
           "lse %.3f\n",
           flash ? "flash" : "naive", BATCH, SEQ_Q, SEQ_K, HEADS, KV_HEADS, HEAD_DIM, worst,
           worst_lse);
  }

  cuattn_flash_plan plan;
  expect_status(cuattn_plan_attention_flash(&p, CUATTN_STREAM_EMULATOR, &plan), CUATTN_OK, "",
                "plan_attention_flash");
  /* Tile 64 in a build with every tile (the default features); a build without it (cargo
   * feature hd128 alone, say) runs head dim 64 in the smallest tile above it. */
  expect(plan.head_dim_tile >= HEAD_DIM && plan.head_dim_tile <= 256,
         "head dim 64 runs in a tile of at least 64");
  expect(plan.head_dim_tile > 64 || plan.tiles == CUATTN_FLASH_TILES_COMPACT,
         "tile 64 has one table, the compact one");
  expect(plan.grid_x * plan.block_rows >= SEQ_Q, "the grid covers the queries");
  printf("plan_attention_flash: tile %d, %d rows x %d keys, %d threads, %d bytes, grid_x %d\n",
         plan.head_dim_tile, plan.block_rows, plan.block_keys, plan.threads, plan.smem_bytes,
         plan.grid_x);

  /* Bad arguments: refused before any launch, the message naming what is wrong. */
  expect_status(cuattn_attention_naive(NULL, CUATTN_STREAM_EMULATOR),
                CUATTN_ERROR_INVALID_ARGUMENT, "params", "attention_naive(NULL)");
  cuattn_attention_params bad = p;
  bad.kv_heads = 3;
  expect_status(cuattn_attention_naive(&bad, CUATTN_STREAM_EMULATOR),
                CUATTN_ERROR_INVALID_ARGUMENT, "kv_heads", "kv_heads 3 of 4 heads");
  bad = p;
  bad.head_dim = 60;
  expect_status(cuattn_attention_flash(&bad, CUATTN_STREAM_EMULATOR),
                CUATTN_ERROR_INVALID_ARGUMENT, "head_dim", "head_dim 60");
  bad = p;
  bad.flash_tiles = 7;
  expect_status(cuattn_attention_flash(&bad, CUATTN_STREAM_EMULATOR),
                CUATTN_ERROR_INVALID_ARGUMENT, "flash_tiles", "flash_tiles 7");
  expect_status(cuattn_plan_attention_flash(&bad, CUATTN_STREAM_EMULATOR, &plan),
                CUATTN_ERROR_INVALID_ARGUMENT, "flash_tiles", "plan of flash_tiles 7");
  expect_status(cuattn_plan_attention_flash(&p, CUATTN_STREAM_EMULATOR, NULL),
                CUATTN_ERROR_INVALID_ARGUMENT, "plan is null", "plan NULL");
  bad = p;
  bad.q = (const char*)q + 2;
  expect_status(cuattn_attention_flash(&bad, CUATTN_STREAM_EMULATOR),
                CUATTN_ERROR_INVALID_ARGUMENT, "16-byte aligned", "misaligned q");
  bad = p;
  bad.window_left = -5;
  expect_status(cuattn_attention_naive(&bad, CUATTN_STREAM_EMULATOR),
                CUATTN_ERROR_INVALID_ARGUMENT, "window", "window_left -5");
  if (!cuattn_has_cuda_kernels()) {
    /* A GPU stream in an emulator-only build. */
    expect_status(cuattn_attention_flash(&p, NULL), CUATTN_ERROR_UNSUPPORTED, "no CUDA kernels",
                  "a GPU stream without CUDA kernels");
  }
  printf("attention: bad arguments refused with their messages\n");

  free(q);
  free(k);
  free(v);
  free(out);
  free(lse);
  free(want);
  free(want_lse);
}

/* ---- the paged KV cache ---------------------------------------------------------------------- */

/* One sequence of SEQ_K tokens appended to a cache in pages of 4, then prefill attention of its
 * tokens over the cache: the reference's causal attention with sq = sk = SEQ_K. */
static void check_kv_cache(void) {
  const size_t nq = (size_t)SEQ_K * HEADS * HEAD_DIM;
  const size_t nk = (size_t)SEQ_K * KV_HEADS * HEAD_DIM;
  uint16_t* q = random_bf16(nq);
  uint16_t* k = random_bf16(nk);
  uint16_t* v = random_bf16(nk);
  uint16_t* out = aligned_alloc(16, nq * sizeof *out);
  float* lse = malloc((size_t)SEQ_K * HEADS * sizeof *lse);
  double* want = malloc(nq * sizeof *want);
  double* want_lse = malloc((size_t)HEADS * SEQ_K * sizeof *want_lse);
  reference_attention(q, k, v, 1, SEQ_K, SEQ_K, HEADS, KV_HEADS, HEAD_DIM,
                      1.0 / sqrt((double)HEAD_DIM), want, want_lse);

  cuattn_kv_cache_config config = {.num_layers = 1,
                                   .kv_heads = KV_HEADS,
                                   .head_dim = HEAD_DIM,
                                   .page_size = 4,
                                   .num_pages = 16,
                                   .dtype = CUATTN_DTYPE_BF16,
                                   .layout = CUATTN_KV_LAYOUT_NHD};
  cuattn_kv_cache* cache = NULL;
  expect_status(cuattn_kv_cache_create(&config, CUATTN_DEVICE_EMULATOR, NULL, &cache), CUATTN_OK,
                "", "kv_cache_create");
  uint64_t seq = 0;
  expect_status(cuattn_kv_cache_add_sequence(cache, &seq), CUATTN_OK, "", "add_sequence");
  const int32_t new_tokens = SEQ_K;
  cuattn_kv_step step;
  expect_status(cuattn_kv_cache_reserve(cache, &seq, &new_tokens, NULL, 1, &step), CUATTN_OK, "",
                "reserve");
  expect(step.batch == 1 && step.num_tokens == SEQ_K && step.max_pages_per_seq == 4,
         "the step: one sequence, 13 tokens on 4 pages");
  const int64_t row = (int64_t)KV_HEADS * HEAD_DIM;
  expect_status(cuattn_kv_cache_append(cache, 0, &step, k, row, HEAD_DIM, v, row, HEAD_DIM),
                CUATTN_OK, "", "append");
  cuattn_paged_options options = {.heads = HEADS,
                                  .scale = 0.0f, /* 1/sqrt(head_dim) */
                                  .softcap = 0.0f,
                                  .window_left = -1,
                                  .window_right = 0,
                                  .split_kv = -1};
  memset(out, 0xff, nq * sizeof *out);
  expect_status(cuattn_kv_cache_attention(cache, 0, &step, q, (int64_t)HEADS * HEAD_DIM, HEAD_DIM,
                                          out, (int64_t)HEADS * HEAD_DIM, HEAD_DIM, lse, &options),
                CUATTN_OK, "", "kv_cache_attention");
  /* The cache's LSE is [tokens, heads]; the reference's [heads, tokens]. */
  double worst_lse = 0.0;
  for (int t = 0; t < SEQ_K; ++t) {
    for (int h = 0; h < HEADS; ++h) {
      const double w = want_lse[(size_t)h * SEQ_K + t];
      const double e = fabs(lse[(size_t)t * HEADS + h] - w) / (1e-3 + 1e-3 * fabs(w));
      worst_lse = e > worst_lse ? e : worst_lse;
    }
  }
  const double worst = worst_bf16(out, want, nq, 2e-2);
  expect(worst <= 1.0, "attention over the cache matches the f64 reference");
  expect(worst_lse <= 1.0, "its lse matches too");
  printf("kv_cache_attention: %d tokens over pages of 4: worst error %.3f of tolerance, lse %.3f\n",
         SEQ_K, worst, worst_lse);

  cuattn_paged_kv_view view;
  expect_status(cuattn_kv_cache_view(cache, 0, &step, &view), CUATTN_OK, "", "kv_cache_view");
  expect(view.batch == 1 && view.page_size == 4 && view.kv_heads == KV_HEADS,
         "the view describes the cache");
  int64_t length = 0;
  expect_status(cuattn_kv_cache_sequence_length(cache, seq, &length), CUATTN_OK, "",
                "sequence_length");
  expect(length == SEQ_K, "the sequence holds its tokens");
  uint64_t child = 0;
  expect_status(cuattn_kv_cache_fork(cache, seq, &child), CUATTN_OK, "", "fork");
  expect_status(cuattn_kv_cache_truncate(cache, child, 5), CUATTN_OK, "", "truncate");
  expect_status(cuattn_kv_cache_sequence_length(cache, child, &length), CUATTN_OK, "",
                "sequence_length of the fork");
  expect(length == 5, "the fork, truncated, holds 5 tokens");
  cuattn_kv_cache_stats stats;
  expect_status(cuattn_kv_cache_get_stats(cache, &stats), CUATTN_OK, "", "get_stats");
  expect(stats.sequences == 2 && stats.tokens == SEQ_K + 5 && stats.pages_shared == 2,
         "two sequences sharing the fork's two pages");
  expect_status(cuattn_kv_cache_free(cache, child), CUATTN_OK, "", "free");
  const int32_t prompt[6] = {11, 12, 13, 14, 15, 16};
  uint64_t prefixed = 0;
  int64_t cached = -1;
  expect_status(cuattn_kv_cache_add_sequence_with_prefix(cache, prompt, 6, &prefixed, &cached),
                CUATTN_OK, "", "add_sequence_with_prefix");
  expect(cached == 0, "no page of that prompt is cached yet");

  /* Bad arguments, and a request the cache cannot serve. */
  expect_status(cuattn_kv_cache_add_sequence(NULL, &seq), CUATTN_ERROR_INVALID_ARGUMENT, "cache",
                "add_sequence(NULL cache)");
  expect_status(cuattn_kv_cache_fork(cache, 999, &child), CUATTN_ERROR_INVALID_ARGUMENT, "999",
                "fork of an unknown sequence");
  expect_status(cuattn_kv_cache_truncate(cache, seq, -1), CUATTN_ERROR_INVALID_ARGUMENT, "new_len",
                "truncate to -1");
  const int32_t too_many = 1000;
  expect_status(cuattn_kv_cache_reserve(cache, &seq, &too_many, NULL, 1, &step),
                CUATTN_ERROR_OUT_OF_PAGES, "pages", "reserve of 1000 tokens in 16 pages of 4");
  expect_status(cuattn_kv_cache_sequence_length(cache, seq, &length), CUATTN_OK, "",
                "sequence_length after the refusal");
  expect(length == SEQ_K, "a refused reserve changes nothing");
  expect_status(cuattn_kv_cache_free(cache, prefixed), CUATTN_OK, "", "free the prefixed one");
  expect_status(cuattn_kv_cache_free(cache, prefixed), CUATTN_ERROR_INVALID_ARGUMENT, "",
                "free twice");
  options.heads = 3;
  expect_status(cuattn_kv_cache_attention(cache, 0, &step, q, (int64_t)HEADS * HEAD_DIM, HEAD_DIM,
                                          out, (int64_t)HEADS * HEAD_DIM, HEAD_DIM, NULL, &options),
                CUATTN_ERROR_INVALID_ARGUMENT, "heads", "attention with 3 heads on 2 kv heads");
  cuattn_kv_cache_destroy(cache);
  cuattn_kv_cache_destroy(NULL); /* a no-op */

  cuattn_kv_cache_config bad = config;
  bad.head_dim = 12;
  cache = NULL;
  expect_status(cuattn_kv_cache_create(&bad, CUATTN_DEVICE_EMULATOR, NULL, &cache),
                CUATTN_ERROR_INVALID_ARGUMENT, "head_dim", "create with head_dim 12");
  expect(cache == NULL, "a refused create hands out nothing");
  expect_status(cuattn_kv_cache_create_with_budget(&config, 1 << 20, CUATTN_DEVICE_EMULATOR, NULL,
                                                   &cache),
                CUATTN_OK, "", "create_with_budget");
  expect_status(cuattn_kv_cache_get_stats(cache, &stats), CUATTN_OK, "", "get_stats");
  expect(stats.pages_total > 0 && stats.bytes_total <= (1 << 20), "the pages fit the budget");
  printf("kv_cache: %lld pages of %lld bytes in a 1 MiB budget; bad arguments refused\n",
         (long long)stats.pages_total, (long long)stats.bytes_per_page);
  cuattn_kv_cache_destroy(cache);
  expect_status(cuattn_kv_cache_create_with_budget(&config, 16, CUATTN_DEVICE_EMULATOR, NULL,
                                                   &cache),
                CUATTN_ERROR_INVALID_ARGUMENT, "", "a budget of 16 bytes");

  free(q);
  free(k);
  free(v);
  free(out);
  free(lse);
  free(want);
  free(want_lse);
}

/* ---- merge_states and the other families ----------------------------------------------------- */

static void check_merge_states(void) {
  enum { TOKENS = 3, MHEADS = 2, DIM = 8, N = TOKENS * MHEADS * DIM };
  uint16_t* o_a = random_bf16(N);
  uint16_t* o_b = random_bf16(N);
  uint16_t* out = aligned_alloc(16, N * sizeof *out);
  float lse_a[TOKENS * MHEADS], lse_b[TOKENS * MHEADS], lse_out[TOKENS * MHEADS];
  for (int i = 0; i < TOKENS * MHEADS; ++i) {
    lse_a[i] = 2.0f * random_unit();
    lse_b[i] = 2.0f * random_unit();
  }
  lse_b[1] = -INFINITY; /* a part over no keys contributes nothing */
  cuattn_merge_states_params p = {.o_a = o_a,
                                  .lse_a = lse_a,
                                  .o_b = o_b,
                                  .lse_b = lse_b,
                                  .out = out,
                                  .maybe_lse_out = lse_out,
                                  .o_a_row_stride = MHEADS * DIM,
                                  .o_a_head_stride = DIM,
                                  .o_b_row_stride = MHEADS * DIM,
                                  .o_b_head_stride = DIM,
                                  .out_row_stride = MHEADS * DIM,
                                  .out_head_stride = DIM,
                                  .tokens = TOKENS,
                                  .heads = MHEADS,
                                  .head_dim = DIM,
                                  .dtype = CUATTN_DTYPE_BF16};
  expect_status(cuattn_merge_states(&p, CUATTN_STREAM_EMULATOR), CUATTN_OK, "", "merge_states");
  double want[N], want_lse[TOKENS * MHEADS];
  for (int i = 0; i < TOKENS * MHEADS; ++i) {
    const double a = lse_a[i], b = lse_b[i];
    const double m = a > b ? a : b;
    const double lse = m + log(exp(a - m) + exp(b - m));
    want_lse[i] = lse;
    for (int c = 0; c < DIM; ++c) {
      want[i * DIM + c] = exp(a - lse) * bf16_to_double(o_a[i * DIM + c]) +
                          exp(b - lse) * bf16_to_double(o_b[i * DIM + c]);
    }
  }
  const double worst = worst_bf16(out, want, N, 2e-2);
  const double worst_lse = worst_float(lse_out, want_lse, TOKENS * MHEADS, 1e-4);
  expect(worst <= 1.0 && worst_lse <= 1.0, "merge_states matches its formula");
  printf("merge_states: %d tokens x %d heads x %d: worst error %.3f of tolerance, lse %.3f\n",
         TOKENS, MHEADS, DIM, worst, worst_lse);
  p.head_dim = 12;
  expect_status(cuattn_merge_states(&p, CUATTN_STREAM_EMULATOR), CUATTN_ERROR_INVALID_ARGUMENT,
                "head_dim", "merge_states with head_dim 12");
  free(o_a);
  free(o_b);
  free(out);
}

/* The entry points this example runs no data through: each refuses missing arguments. */
static void check_refusals(void) {
  void* emu = CUATTN_STREAM_EMULATOR;
  const char* null = "null";
  expect_status(cuattn_kv_append(NULL, emu), CUATTN_ERROR_INVALID_ARGUMENT, null, "kv_append");
  expect_status(cuattn_kv_copy_pages(NULL, emu), CUATTN_ERROR_INVALID_ARGUMENT, null,
                "kv_copy_pages");
  cuattn_paged_plan paged_plan;
  expect_status(cuattn_plan_paged_attention(NULL, 132, -1, &paged_plan),
                CUATTN_ERROR_INVALID_ARGUMENT, null, "plan_paged_attention");
  expect_status(cuattn_paged_attention(NULL, emu), CUATTN_ERROR_INVALID_ARGUMENT, null,
                "paged_attention");
  cuattn_block_sparse_plan sparse_plan;
  expect_status(cuattn_plan_block_sparse_attention(NULL, NULL, &sparse_plan),
                CUATTN_ERROR_INVALID_ARGUMENT, null, "plan_block_sparse_attention");
  expect_status(cuattn_block_sparse_attention(NULL, NULL, emu), CUATTN_ERROR_INVALID_ARGUMENT,
                null, "block_sparse_attention");
  int64_t workspace_bytes = 0;
  expect_status(cuattn_plan_linear_attention(NULL, &workspace_bytes),
                CUATTN_ERROR_INVALID_ARGUMENT, null, "plan_linear_attention");
  expect_status(cuattn_linear_attention(NULL, emu), CUATTN_ERROR_INVALID_ARGUMENT, null,
                "linear_attention");
  expect_status(cuattn_lowrank_projection(NULL, emu), CUATTN_ERROR_INVALID_ARGUMENT, null,
                "lowrank_projection");
  printf("kv_append, kv_copy_pages, paged, block-sparse, linear, low-rank: NULL refused\n");
}

int main(void) {
  /* The emulator checks kernels' memory accesses against the allocations it knows; this
   * program's own buffers are not among them, so the checker is off. */
  setenv("CUATTN_EMU_MEMCHECK", "0", 1);

  printf("cuattn %s, ABI %d (header %d), CUDA kernels: %s\n", cuattn_version(),
         cuattn_abi_version(), CUATTN_ABI_VERSION, cuattn_has_cuda_kernels() ? "yes" : "no");
  expect(cuattn_abi_version() == CUATTN_ABI_VERSION, "the library was built with this header");
  expect(strlen(cuattn_version()) >= 5, "a version string");

  check_attention();
  check_kv_cache();
  check_merge_states();
  check_refusals();

  if (failures > 0) {
    fprintf(stderr, "%d of %d checks failed\n", failures, checks);
    return 1;
  }
  printf("ok: %d checks\n", checks);
  return 0;
}
