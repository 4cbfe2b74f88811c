/* cuattn.h: the C ABI of cuattn, the one FFI contract between the kernels, Rust and C/C++ engines.
 * Status codes, one flat params struct per kernel family, and the launchers. */
#ifndef CUATTN_H_
#define CUATTN_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Status codes. Every entry point returns one; on failure cuattn_last_error() holds a message that
 * names the argument, its value and the constraint it broke.
 * ------------------------------------------------------------------------------------------- */
typedef enum cuattn_status {
  CUATTN_OK = 0,
  /* An argument is out of range or inconsistent with another; nothing was launched. */
  CUATTN_ERROR_INVALID_ARGUMENT = 1,
  /* A valid request this build cannot serve (a head dim or dtype not compiled, no CUDA build). */
  CUATTN_ERROR_UNSUPPORTED = 2,
  /* The CUDA runtime refused the launch (bad configuration, no device, sticky error). */
  CUATTN_ERROR_LAUNCH_FAILED = 3,
  /* The emulator stopped a kernel for a fault a GPU would hide or hang on: out-of-bounds access,
   * a barrier not reached by every thread, a warp collective with a mismatched mask. */
  CUATTN_ERROR_KERNEL_FAULT = 4,
  /* A bug in cuattn itself. */
  CUATTN_ERROR_INTERNAL = 5,
  /* A paged KV cache has too few free or evictable pages for the request; nothing was changed.
   * The engine frees or preempts sequences and tries again. */
  CUATTN_ERROR_OUT_OF_PAGES = 6,
} cuattn_status;

/* Element types of q, k, v and out. Accumulation is always float32. */
typedef enum cuattn_dtype {
  CUATTN_DTYPE_F16 = 0,
  CUATTN_DTYPE_BF16 = 1,
} cuattn_dtype;

/* The message of the last failed call on this thread ("" if none). Valid until the next call. */
const char* cuattn_last_error(void);

/* Replaces this thread's last-error message. The Rust layer uses it to report its own validation
 * failures through cuattn_last_error(); C callers have no need for it. */
void cuattn_set_last_error(const char* message);

/* ---------------------------------------------------------------------------------------------
 * Attention forward.
 *
 * Layout (FlashAttention's): q [batch, seqlen_q, heads, head_dim], k and v [batch, seqlen_k,
 * kv_heads, head_dim], out like q; the last dimension is contiguous, every other one has an int64
 * element stride. Query head h reads KV head h / (heads / kv_heads) (MHA, GQA, MQA).
 *
 * Variable-length batches: when maybe_cu_seqlens_q and maybe_cu_seqlens_k are set (both or
 * neither), q/out are packed [total_q, heads, head_dim] and k/v [total_k, kv_heads, head_dim];
 * sequence b owns rows cu_seqlens[b] .. cu_seqlens[b+1]; the *_batch_stride fields are ignored and
 * seqlen_q/seqlen_k are the maxima over the batch (they size the grid).
 *
 * Masks: key j is visible to query i iff
 *   i + seqlen_k - seqlen_q - window_left <= j <= i + seqlen_k - seqlen_q + window_right,
 * with -1 meaning unbounded on that side (per sequence lengths in varlen). Causal attention is
 * window (-1, 0), aligned to the bottom-right corner. A row with no visible key writes zeros to
 * out and -inf to the LSE.
 *
 * Scores: s = scale * (q . k); with softcap > 0, s = softcap * tanh(s / softcap).
 * LSE: natural-log log-sum-exp of the (capped) scores, float32 [batch, heads, seqlen_q]
 * (varlen: [heads, total_q], lse_batch_stride ignored).
 * ------------------------------------------------------------------------------------------- */
typedef struct cuattn_attention_params {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  /* Nullable: float32 log-sum-exp per (batch, head, query row). */
  float* maybe_lse;
  /* Nullable, int32 [batch + 1] on the device: variable-length batch offsets. */
  const int32_t* maybe_cu_seqlens_q;
  const int32_t* maybe_cu_seqlens_k;

  /* Element strides. */
  int64_t q_batch_stride;
  int64_t q_row_stride;
  int64_t q_head_stride;
  int64_t k_batch_stride;
  int64_t k_row_stride;
  int64_t k_head_stride;
  int64_t v_batch_stride;
  int64_t v_row_stride;
  int64_t v_head_stride;
  int64_t out_batch_stride;
  int64_t out_row_stride;
  int64_t out_head_stride;
  int64_t lse_batch_stride;
  int64_t lse_head_stride;

  int32_t batch;
  int32_t heads;
  int32_t kv_heads;
  /* Multiple of 8, at most 256. */
  int32_t head_dim;
  int32_t seqlen_q;
  int32_t seqlen_k;

  /* Multiplies q . k; conventionally 1/sqrt(head_dim). */
  float scale;
  /* scale * log2(e): the kernels work in base 2. */
  float scale_log2;
  /* 0 disables the cap. */
  float softcap;
  /* -1 for unbounded. */
  int32_t window_left;
  int32_t window_right;

  cuattn_dtype dtype;
} cuattn_attention_params;

/* The attention launchers check params, then launch on `stream` (a cudaStream_t; NULL for the
 * default stream) and return: no synchronization, no allocation, so a launch may be captured into
 * a CUDA graph, whose replays read the buffers params points to as they are then. Make one launch
 * of the kind before capturing, so that loading the kernel and reading its attributes happen
 * outside the capture. */

/* attention_naive: one warp per (query row, head), fp32 online softmax, no tensor cores. The
 * bottom rung of the kernel ladder and a permanent correctness baseline. Any head_dim that is a
 * multiple of 8 up to 256, every mask, varlen, softcap, LSE. */
cuattn_status cuattn_launch_attention_naive(const cuattn_attention_params* params, void* stream);

/* attention_mma_simple: one warp per 16 query rows, S = Q K^T and O += P V on mma.sync tensor
 * cores, K/V tiles through shared memory with cp.async, no pipelining. The tensor-core baseline.
 * Needs 16-byte aligned rows: q/k/v/out pointers and strides multiples of 8 elements. */
cuattn_status cuattn_launch_attention_mma_simple(const cuattn_attention_params* params,
                                                 void* stream);

/* attention_flash: FlashAttention-2-style prefill: CTAs of 64-256 query rows (16 or 32 a warp),
 * a cp.async K/V pipeline (2 or 3 stages, or K and V in turns) in swizzled shared memory,
 * mma.sync, skipped masked tiles, element masks only on boundary tiles. Head-dim tiles 64, 96,
 * 128, 192, 256 (cargo features hd64 ... hd256; other multiples of 8 run in the next tile up that
 * is built, and one with none is CUATTN_ERROR_UNSUPPORTED). Needs 16-byte aligned rows, like
 * attention_mma_simple. The default kernel. Two tile tables (cuattn_set_flash_tiles): compact on
 * every GPU, and wide on sm_90, where each launch picks the faster for its shape. */
cuattn_status cuattn_launch_attention_flash(const cuattn_attention_params* params, void* stream);

/* attention_flash's tile tables. COMPACT: four-warp CTAs in at most 96 KiB of shared memory, for
 * every GPU. WIDE: eight-warp CTAs in up to 192 KiB, 64-key tiles, sm_90 only (H100, H200; they
 * move fewer shared-memory bytes per mma). Head-dim tile 64 has only the compact table. AUTO, the
 * default: where the GPU runs the sm_90a code, wide tiles for head-dim tiles 192 and 256, and for
 * tiles 96 and 128 when the queries are long (seqlen_q >= 1024, or >= 8192 under a mask or window:
 * shorter runs have too few 256-row CTAs to fill the GPU); compact tiles elsewhere. The rows and
 * the rule come from H200 timings of tiles 64, 128 and 256 (BENCHMARKS.md); tiles 96 and 192 follow
 * 128 and 256. */
typedef enum cuattn_flash_tiles {
  CUATTN_FLASH_TILES_AUTO = 0,
  CUATTN_FLASH_TILES_COMPACT = 1,
  CUATTN_FLASH_TILES_WIDE = 2
} cuattn_flash_tiles;

/* Sets the tile table of the attention_flash launches made from the calling thread from now on
 * (both builds; benchmarks and tests compare the two with it). Wide tiles run where the GPU
 * runs cuattn's sm_90a code: a WIDE launch at a head-dim tile over 64 fails with
 * CUATTN_ERROR_UNSUPPORTED on a GPU other than sm_90, and on an sm_90 GPU given the compute_80
 * PTX instead (CUDA_FORCE_PTX_JIT=1), where AUTO picks compact; tile 64 runs its one table under
 * all three settings. CUATTN_ERROR_INVALID_ARGUMENT for any other value. */
cuattn_status cuattn_set_flash_tiles(int32_t tiles);

/* The calling thread's attention_flash tile setting (CUATTN_FLASH_TILES_*). */
int32_t cuattn_get_flash_tiles(void);

/* What an attention_flash launch with given params runs: the tile table and its row. */
typedef struct cuattn_flash_plan {
  int32_t tiles;         /* CUATTN_FLASH_TILES_COMPACT or CUATTN_FLASH_TILES_WIDE */
  int32_t head_dim_tile; /* 64, 96, 128, 192 or 256: the tile that runs params.head_dim */
  int32_t block_rows;    /* query rows per CTA */
  int32_t block_keys;    /* keys per K/V tile */
  int32_t stages;        /* K/V tiles in shared memory at once; 1: one K and one V tile, each
                            loading while the other is in use */
  int32_t threads;       /* threads per CTA */
  int32_t smem_bytes;    /* dynamic shared memory per CTA */
  int32_t grid_x;        /* CTAs along the queries; the grid is (grid_x, heads, batch) */
} cuattn_flash_plan;

/* Fills *plan with what cuattn_launch_attention_flash would run for params on the calling
 * thread's current device under its tile setting (cuattn_set_flash_tiles): for engines that size
 * or log their launches, and for tests. Checks what the launcher checks (head_dim, heads,
 * dtype); CUATTN_ERROR_UNSUPPORTED where the launch would be (no tile for head_dim in this
 * build, wide tiles forced where the GPU does not run the sm_90a code). */
cuattn_status cuattn_plan_attention_flash(const cuattn_attention_params* params,
                                          cuattn_flash_plan* plan);

/* Validated entry point for C and C++ engines: checks every field of params (shapes, strides,
 * heads % kv_heads, head_dim, window, dtype, null pointers) and then launches attention_naive on
 * `stream` (a cudaStream_t, or NULL for the default stream). */
cuattn_status cuattn_attention_naive(const cuattn_attention_params* params, void* stream);

/* The same for attention_flash (the fast path): also checks that q, k, v and out are 16-byte
 * aligned and their strides multiples of 8 elements. */
cuattn_status cuattn_attention_flash(const cuattn_attention_params* params, void* stream);

/* ---------------------------------------------------------------------------------------------
 * Paged KV cache.
 *
 * K and V of every cached token live in pages of page_size tokens (any page_size >= 1), one pool
 * of pages for K and one for V per layer. A page's element layout:
 *   NHD (the default, FlashInfer's and vLLM's): [num_pages, page_size, kv_heads, head_dim]
 *   HND:                                        [num_pages, kv_heads, page_size, head_dim]
 * Element (page, slot in page, kv head, column) is at
 *   page * page_stride + slot * slot_stride + head * head_stride + column,
 * so one set of strides covers both layouts (and pools with padded pages). A token's flat slot is
 * page * page_size + slot in page.
 *
 * Per step an engine uploads, once, the int32 tables the kernels read: the block table (each
 * sequence's page indices in order), the sequence lengths (cached tokens, this step's new ones
 * included), cu_seqlens of the new tokens and the slot mapping (each new token's flat slot).
 * cuattn's cache (cuattn_kv_cache below) does all of this; an engine with its own block manager
 * fills a cuattn_paged_kv_view over its own pools and tables.
 * ------------------------------------------------------------------------------------------- */
typedef enum cuattn_kv_layout {
  CUATTN_KV_LAYOUT_NHD = 0,
  CUATTN_KV_LAYOUT_HND = 1,
} cuattn_kv_layout;

/* One layer's pages and the step's tables, as the kernels that read the cache take them. */
typedef struct cuattn_paged_kv_view {
  void* k_pages;
  void* v_pages;
  /* Element strides of the pools (see above); the head_dim columns are contiguous. */
  int64_t k_page_stride;
  int64_t k_slot_stride;
  int64_t k_head_stride;
  int64_t v_page_stride;
  int64_t v_slot_stride;
  int64_t v_head_stride;
  /* int32 [batch, block_table_stride] on the device: sequence b's pages are
   * block_table[b * block_table_stride + i] for i < ceil(seq_lens[b] / page_size). */
  const int32_t* block_table;
  int64_t block_table_stride;
  /* int32 [batch] on the device: tokens in each sequence's pages. */
  const int32_t* seq_lens;
  int32_t batch;
  /* The longest page list in the block table (at most block_table_stride). */
  int32_t max_pages_per_seq;
  int32_t num_pages;
  int32_t page_size;
  int32_t kv_heads;
  int32_t head_dim;
  cuattn_kv_layout layout;
  cuattn_dtype dtype;
} cuattn_paged_kv_view;

/* kv_append: writes a step's new keys and values into their slots. k_new and v_new are
 * [num_tokens, kv_heads, head_dim] with element strides per row and per head (columns
 * contiguous); token t goes to flat slot slot_mapping[t] of cache.k_pages and cache.v_pages (a
 * negative slot skips the token: padding). The view's pools, strides, num_pages, page_size,
 * kv_heads, head_dim and dtype are used, not its tables. Slots must be distinct: two tokens
 * written to one slot race. */
typedef struct cuattn_kv_append_params {
  cuattn_paged_kv_view cache;
  const void* k_new;
  const void* v_new;
  int64_t k_new_row_stride;
  int64_t k_new_head_stride;
  int64_t v_new_row_stride;
  int64_t v_new_head_stride;
  /* int32 [num_tokens] on the device. */
  const int32_t* slot_mapping;
  int32_t num_tokens;
} cuattn_kv_append_params;

/* Launches kv_append on `stream` (no synchronization, no allocation: graph-capturable) after
 * checking the fields its indexing relies on (dims, dtype, null pointers, positive strides). A
 * slot outside [0, num_pages * page_size) skips its token (negative slots mark padding tokens),
 * so no slot value writes outside the pools. Where every pointer is 16-byte aligned and every
 * stride a multiple of 8 elements it moves 16-byte vectors, otherwise single elements. */
cuattn_status cuattn_launch_kv_append(const cuattn_kv_append_params* params, void* stream);
cuattn_status cuattn_emu_launch_kv_append(const cuattn_kv_append_params* params, void* stream);

/* kv_copy_pages: copy-on-write of whole pages across every pool of a cache. pools[i] =
 * pools + i * pool_stride bytes for i < num_pools (each layer's K and V pools); for each pair
 * (pairs[2 p], pairs[2 p + 1]) = (source page, destination page), the page_bytes bytes of the
 * source page of every pool are copied to the destination page (page i at i * page_bytes).
 * pool_stride and page_bytes are multiples of 16, pools 16-byte aligned; destinations distinct
 * and no page both a source and a destination; a pair with a page outside [0, num_pages) is
 * skipped. */
typedef struct cuattn_kv_copy_pages_params {
  void* pools;
  int64_t pool_stride;
  int64_t page_bytes;
  /* int32 [num_pairs, 2] on the device. */
  const int32_t* pairs;
  int32_t num_pairs;
  int32_t num_pools;
  int32_t num_pages;
} cuattn_kv_copy_pages_params;

cuattn_status cuattn_launch_kv_copy_pages(const cuattn_kv_copy_pages_params* params, void* stream);
cuattn_status cuattn_emu_launch_kv_copy_pages(const cuattn_kv_copy_pages_params* params,
                                              void* stream);

/* The cache object: pools for every layer, page tables, sequences, a free list, per-page reference
 * counts and the prefix cache, as described in README.md ("The paged KV cache"). Not thread-safe:
 * one cache is used from one thread at a time (calls from several threads must be serialized by
 * the caller). Every call either succeeds completely or changes nothing; a request that needs
 * more pages than are free or evictable returns CUATTN_ERROR_OUT_OF_PAGES. */
typedef struct cuattn_kv_cache cuattn_kv_cache;

typedef struct cuattn_kv_cache_config {
  int32_t num_layers;
  int32_t kv_heads;
  /* A multiple of 8, at most 256. */
  int32_t head_dim;
  /* Tokens per page, at least 1. */
  int32_t page_size;
  /* num_pages * page_size must fit int32 (flat slots are int32). */
  int64_t num_pages;
  cuattn_dtype dtype;
  cuattn_kv_layout layout;
} cuattn_kv_cache_config;

/* The `device` of cuattn_kv_cache_create that runs on the CPU emulator (host memory). */
#define CUATTN_DEVICE_EMULATOR (-1)

/* Creates a cache with its pools on `device` (a CUDA ordinal, or CUATTN_DEVICE_EMULATOR) and its
 * work queued on `stream` (a cudaStream_t of the device's primary context, which the CUDA runtime
 * uses, or NULL for the default stream; it must outlive the cache; ignored on the emulator). The
 * pools are allocated here (zeroed), once; nothing later allocates device memory but the growth
 * of the step tables (cuattn_kv_cache_reserve). *out is set on success. */
cuattn_status cuattn_kv_cache_create(const cuattn_kv_cache_config* config, int32_t device,
                                     void* stream, cuattn_kv_cache** out);
/* The same with as many pages as fit in `bytes` of pool memory (config->num_pages ignored);
 * CUATTN_ERROR_INVALID_ARGUMENT if not even one page fits. */
cuattn_status cuattn_kv_cache_create_with_budget(const cuattn_kv_cache_config* config,
                                                 uint64_t bytes, int32_t device, void* stream,
                                                 cuattn_kv_cache** out);
/* Frees the cache and its device memory (after the work queued on its stream). NULL is a no-op. */
void cuattn_kv_cache_destroy(cuattn_kv_cache* cache);

/* A new empty sequence. Ids are never reused. */
cuattn_status cuattn_kv_cache_add_sequence(cuattn_kv_cache* cache, uint64_t* seq);
/* A new sequence whose prompt is token_ids[0..num_tokens): it shares the longest run of whole
 * pages of that prompt already in the cache (at most num_tokens - 1 tokens, so that one token is
 * left to compute), and *cached_tokens says how many tokens that covers; the engine appends the
 * rest. The sequence's later pages join the prefix cache when reserve is given their tokens. */
cuattn_status cuattn_kv_cache_add_sequence_with_prefix(cuattn_kv_cache* cache,
                                                       const int32_t* token_ids, int64_t num_tokens,
                                                       uint64_t* seq, int64_t* cached_tokens);
/* A new sequence sharing every page of `seq` (copy-on-write). */
cuattn_status cuattn_kv_cache_fork(cuattn_kv_cache* cache, uint64_t seq, uint64_t* child);
/* Drops the tokens of `seq` from new_length on (0 <= new_length <= its length). */
cuattn_status cuattn_kv_cache_truncate(cuattn_kv_cache* cache, uint64_t seq, int64_t new_length);
/* Ends `seq`: its pages are released (full pages with known tokens stay in the prefix cache). */
cuattn_status cuattn_kv_cache_free(cuattn_kv_cache* cache, uint64_t seq);
/* The number of tokens of `seq`. */
cuattn_status cuattn_kv_cache_sequence_length(const cuattn_kv_cache* cache, uint64_t seq,
                                              int64_t* length);

/* One step, as cuattn_kv_cache_reserve plans it. The table pointers are device memory owned by
 * the cache, valid until the next reserve. */
typedef struct cuattn_kv_step {
  /* Which reserve made this step; appends and views of an older step are refused. */
  uint64_t step;
  int32_t batch;
  int32_t num_tokens;
  int32_t max_pages_per_seq;
  int32_t num_copied_pages;
  /* int32 [batch, max_pages_per_seq], [batch], [batch + 1] and [num_tokens] on the device. */
  const int32_t* block_table;
  const int32_t* seq_lens;
  const int32_t* cu_seqlens;
  const int32_t* slot_mapping;
} cuattn_kv_step;

/* Plans a step: sequence seqs[b] (each at most once) gets new_tokens[b] >= 0 new tokens. Pages are
 * allocated (evicting cached pages no sequence holds, least recently used first), a shared,
 * partly filled last page about to be written is first copied (queued on the stream), and the
 * step's tables are uploaded in one copy. maybe_token_ids: NULL, or the new tokens' ids
 * (sum of new_tokens, sequence by sequence) for sequences made with a prefix, so that pages they
 * fill join the prefix cache. CUATTN_ERROR_OUT_OF_PAGES (nothing changed) when the pages needed
 * exceed those free or evictable. */
cuattn_status cuattn_kv_cache_reserve(cuattn_kv_cache* cache, const uint64_t* seqs,
                                      const int32_t* new_tokens, const int32_t* maybe_token_ids,
                                      int32_t batch, cuattn_kv_step* step);
/* Writes the step's new keys and values of `layer`: k_new and v_new are device pointers to
 * [step->num_tokens, kv_heads, head_dim] of the cache's dtype with the given element strides
 * (columns contiguous). Queued on the cache's stream. */
cuattn_status cuattn_kv_cache_append(cuattn_kv_cache* cache, int32_t layer,
                                     const cuattn_kv_step* step, const void* k_new,
                                     int64_t k_row_stride, int64_t k_head_stride, const void* v_new,
                                     int64_t v_row_stride, int64_t v_head_stride);
/* Options of attention over a cuattn_kv_cache (cuattn_kv_cache_attention below). */
typedef struct cuattn_paged_options {
  /* Query heads: a multiple of the cache's kv_heads. */
  int32_t heads;
  /* 0 for 1/sqrt(head_dim). */
  float scale;
  /* 0 disables the cap. */
  float softcap;
  /* -1 for unbounded; causal attention is (-1, 0). */
  int32_t window_left;
  int32_t window_right;
  /* -1: split-KV where the grid would leave SMs idle; 0 or 1: never; s >= 2: s splits. */
  int32_t split_kv;
} cuattn_paged_options;

/* Attention of the step's new tokens over layer's cache, the tokens appended first (decode with
 * up to 8 new tokens a sequence, speculative verification, chunked prefill: one kernel, see
 * "Attention over the paged KV cache" above). q: device pointer to [step->num_tokens, heads,
 * head_dim] of the cache's dtype at the given element strides (columns contiguous, rows 16-byte
 * aligned); out likewise; maybe_lse: NULL or float32 [num_tokens, heads]. Queued on the cache's
 * stream. The cache keeps the workspace split-KV needs and grows it when a step needs more (the
 * one allocation: run a step of the largest batch before capturing a CUDA graph). */
cuattn_status cuattn_kv_cache_attention(cuattn_kv_cache* cache, int32_t layer,
                                        const cuattn_kv_step* step, const void* q,
                                        int64_t q_row_stride, int64_t q_head_stride, void* out,
                                        int64_t out_row_stride, int64_t out_head_stride,
                                        float* maybe_lse, const cuattn_paged_options* options);
/* Fills *view with layer's pools and the step's tables, for the kernels that read the cache. */
cuattn_status cuattn_kv_cache_view(const cuattn_kv_cache* cache, int32_t layer,
                                   const cuattn_kv_step* step, cuattn_paged_kv_view* view);

typedef struct cuattn_kv_cache_stats {
  int64_t pages_total;
  /* Pages no sequence holds and the prefix cache does not keep. */
  int64_t pages_free;
  /* Pages no sequence holds that the prefix cache keeps (evicted when needed). */
  int64_t pages_cached;
  /* Pages held by more than one sequence. */
  int64_t pages_shared;
  int64_t sequences;
  /* Sum of the sequences' lengths. */
  int64_t tokens;
  int64_t bytes_per_page; /* K and V of every layer */
  int64_t bytes_total;
} cuattn_kv_cache_stats;

cuattn_status cuattn_kv_cache_get_stats(const cuattn_kv_cache* cache, cuattn_kv_cache_stats* stats);

/* ---------------------------------------------------------------------------------------------
 * Attention over the paged KV cache: decode, speculative verification and chunked prefill.
 *
 * Each sequence b of the view has seq_lens[b] cached tokens, its q_len = cu_seqlens_q[b + 1] -
 * cu_seqlens_q[b] new tokens among them (appended first: they are its last q_len tokens). Its new
 * queries are rows cu_seqlens_q[b] .. cu_seqlens_q[b + 1] of q, packed [total_q, heads,
 * head_dim] with element strides per row and per head (out likewise), and attend to its cached
 * keys through the block table with the masks of attention_params, seqlen_k being seq_lens[b] and
 * seqlen_q its q_len (causal: new token t sees keys j <= t + seq_lens[b] - q_len). Keys before
 * kv_start are left out (cascade attention's suffix pass); the masks still count from key 0.
 * LSE: float32 [total_q, heads], contiguous.
 *
 * One kernel serves every q_len. A CTA takes the q_len x (heads / kv_heads) query rows that share
 * one KV head of one sequence, packed as the M dimension of its mma.sync tiles (row r: new token
 * r / group, query head kv_head * group + r % group), 16, 32 or 64 rows a CTA, so each K/V row it
 * loads serves the whole group: decode reads the cache once per KV head, not once per query head.
 * Rows past 64 take further CTAs. The pages of a tile's keys are looked up in the block table
 * into shared memory a tile ahead, and the K/V rows gathered from them by cp.async (any page
 * size: a tile's rows may come from as many pages).
 *
 * Split-KV (flash-decoding): with num_splits > 1 the keys kv_start.. of each sequence are cut into
 * num_splits ranges of split_tokens keys, one CTA each, which write their partial outputs and LSEs
 * into the workspace; a second kernel then merges them by LSE into out (and the LSE). Plan with
 * cuattn_plan_paged_attention, which picks the split for the SM count and sizes the workspace.
 * ------------------------------------------------------------------------------------------- */
typedef struct cuattn_paged_attention_params {
  /* The cache's pools and the step's tables (batch, seq_lens, block_table). */
  cuattn_paged_kv_view kv;
  const void* q;
  void* out;
  /* Nullable: float32 [total_q, heads]. */
  float* maybe_lse;
  /* int32 [kv.batch + 1] on the device: each sequence's new tokens in q. */
  const int32_t* cu_seqlens_q;
  int64_t q_row_stride;
  int64_t q_head_stride;
  int64_t out_row_stride;
  int64_t out_head_stride;
  int32_t heads;
  /* Rows of q (cu_seqlens_q[batch]). */
  int32_t total_q;
  /* Upper bounds over the batch of q_len and seq_lens[b], known on the host: they size the grid
   * (a CUDA graph captured with bounds replays for any tables within them). */
  int32_t max_q_len;
  int32_t max_seq_len;
  /* Keys before kv_start are not attended (0: every key). */
  int32_t kv_start;
  float scale;
  /* scale * log2(e). */
  float scale_log2;
  /* 0 disables the cap. */
  float softcap;
  /* -1 for unbounded; causal is (-1, 0). */
  int32_t window_left;
  int32_t window_right;
  /* 1: no split. Otherwise at least 2, and split_tokens a multiple of 64: split s covers keys
   * from first + s * split_tokens, first being kv_start or, when later, the first key the
   * sequence's first new token sees (its window); num_splits * split_tokens should cover the
   * keys any new token sees, or the keys past them are left out. maybe_workspace then holds
   * workspace_bytes of
   * cuattn_plan_paged_attention (16-byte aligned), which the launch overwrites. */
  int32_t num_splits;
  int32_t split_tokens;
  void* maybe_workspace;
} cuattn_paged_attention_params;

/* What a paged attention launch runs, from cuattn_plan_paged_attention. */
typedef struct cuattn_paged_plan {
  /* Query rows per CTA: 16, 32 or 64 (q_len x group rows share a KV head). */
  int32_t block_rows;
  /* Keys per K/V tile. */
  int32_t block_keys;
  int32_t threads;
  int32_t smem_bytes;
  /* The grid: (row blocks, kv_heads * num_splits, batch). */
  int32_t grid_x;
  int32_t grid_y;
  int32_t grid_z;
  int32_t num_splits;
  int32_t split_tokens;
  /* Bytes of workspace the split needs (0 unsplit). */
  int64_t workspace_bytes;
} cuattn_paged_plan;

/* Plans params as run on a GPU of num_sms SMs: with split_kv < 0 the split is chosen (split only
 * when the unsplit grid would leave SMs idle, so that about two CTAs run an SM, with at least 256
 * keys a split), 0 or 1 forces no split, and s >= 2 forces s splits (fewer when the keys run out).
 * Reads only the shape fields of params (heads, kv.kv_heads, kv.batch, kv.head_dim, total_q,
 * max_q_len, max_seq_len, kv_start, window_left); the caller copies num_splits and split_tokens
 * into params and points maybe_workspace at workspace_bytes. */
cuattn_status cuattn_plan_paged_attention(const cuattn_paged_attention_params* params,
                                          int32_t num_sms, int32_t split_kv,
                                          cuattn_paged_plan* plan);
/* The same in the emulator build (which has no GPU to plan for but the num_sms it is given). */
cuattn_status cuattn_emu_plan_paged_attention(const cuattn_paged_attention_params* params,
                                              int32_t num_sms, int32_t split_kv,
                                              cuattn_paged_plan* plan);

/* Checks the fields the kernels' indexing relies on, then launches on `stream`: no allocation, no
 * synchronization (graph-capturable). Needs 16-byte aligned rows: q, out, the pools and every
 * row, head, page and slot stride multiples of 8 elements. Head dims run in the flash kernel's
 * head-dim tiles (64, 96, 128, 192, 256). Page indices outside [0, num_pages) read as zeros. */
cuattn_status cuattn_launch_paged_attention(const cuattn_paged_attention_params* params,
                                            void* stream);
cuattn_status cuattn_emu_launch_paged_attention(const cuattn_paged_attention_params* params,
                                                void* stream);

/* merge_states: two attention results over disjoint key sets of the same queries, each an output
 * normalized over its keys and its natural-log LSE, combine into the result over both:
 *   lse = log(exp(lse_a) + exp(lse_b)),  out = exp(lse_a - lse) o_a + exp(lse_b - lse) o_b.
 * A part with LSE -inf (no keys) contributes nothing; both -inf give zeros and -inf. o_a, o_b and
 * out are [tokens, heads, head_dim] with element strides per row and per head (columns
 * contiguous); the LSEs float32 [tokens, heads], contiguous. out may be o_a (and maybe_lse_out
 * lse_a): in place. What split-KV, cascade attention and sequence-parallel engines use. */
typedef struct cuattn_merge_states_params {
  const void* o_a;
  const float* lse_a;
  const void* o_b;
  const float* lse_b;
  void* out;
  /* Nullable. */
  float* maybe_lse_out;
  int64_t o_a_row_stride;
  int64_t o_a_head_stride;
  int64_t o_b_row_stride;
  int64_t o_b_head_stride;
  int64_t out_row_stride;
  int64_t out_head_stride;
  int32_t tokens;
  int32_t heads;
  /* A multiple of 8, at most 256. */
  int32_t head_dim;
  cuattn_dtype dtype;
} cuattn_merge_states_params;

cuattn_status cuattn_launch_merge_states(const cuattn_merge_states_params* params, void* stream);
cuattn_status cuattn_emu_launch_merge_states(const cuattn_merge_states_params* params,
                                             void* stream);

/* ---------------------------------------------------------------------------------------------
 * Block-sparse attention: exact attention over the (query block, key block) pairs a block mask
 * lists, every other score block skipped without being read or computed.
 *
 * The query rows of each sequence are cut into blocks of block_q rows and its keys into blocks of
 * block_k keys (multiples of 16, at least 16): num_q_blocks = ceil(seqlen_q / block_q) and
 * num_k_blocks = ceil(seqlen_k / block_k) (varlen: of the batch's longest sequences, seqlen_q and
 * seqlen_k of the params). The mask lists, per (batch, head) and query block i, the key blocks
 * that block visits, in compressed rows (FlexAttention's BlockMask layout):
 *   full_counts[b][h][i] key blocks full_indices[b][h][i][0 ..] whose every element is visible
 *     under the params' element rule (causal or window, the sequence's end): no mask arithmetic;
 *   partial_counts[b][h][i] key blocks partial_indices[b][h][i][0 ..] where the element rule
 *     applies (the kernel masks each score by it).
 * Counts are int32 [batch, heads, num_q_blocks], indices int32 [batch, heads, num_q_blocks,
 * num_k_blocks] (each row holds its count's indices first, the rest unused), all contiguous on
 * the device; batch and heads of the mask are 1 where it is the same for every sequence or head
 * (head h of the mask is query head h). Indices of a row are distinct; the kernel treats keys
 * past a sequence's end as masked whatever the list, leaves out indices outside
 * [0, num_k_blocks), and clips counts to [0, num_k_blocks); a full block that the element rule
 * would cut is the caller's error (its scores are not masked).
 *
 * Each listed key block is read as block_k K and V rows gathered into the kernel's key tiles (a
 * tile may hold several small blocks, or a large block take several tiles), so the bytes read
 * fall with the density. A query block whose lists are empty writes zeros and LSE -inf and reads
 * nothing but its tables. The params are those of attention_flash (GQA, varlen, softcap, LSE);
 * head dims run in the flash kernel's head-dim tiles; rows are 16-byte aligned as for flash.
 * ------------------------------------------------------------------------------------------- */
typedef struct cuattn_block_mask {
  int32_t block_q;
  int32_t block_k;
  int32_t num_q_blocks;
  int32_t num_k_blocks;
  /* 1 or the params' batch. */
  int32_t batch;
  /* 1 or the params' heads. */
  int32_t heads;
  const int32_t* full_counts;
  const int32_t* full_indices;
  const int32_t* partial_counts;
  const int32_t* partial_indices;
} cuattn_block_mask;

/* What a block-sparse launch runs, from cuattn_plan_block_sparse_attention. */
typedef struct cuattn_block_sparse_plan {
  /* Query rows per CTA: 16, 32, 64 or 128, within one query block (a block of more rows takes
   * several CTAs). */
  int32_t block_rows;
  /* Keys per K/V tile, gathered from the listed key blocks. */
  int32_t block_keys;
  int32_t threads;
  int32_t smem_bytes;
  /* The grid: (num_q_blocks * CTAs a query block, heads, batch). */
  int32_t grid_x;
  int32_t grid_y;
  int32_t grid_z;
} cuattn_block_sparse_plan;

cuattn_status cuattn_plan_block_sparse_attention(const cuattn_attention_params* params,
                                                 const cuattn_block_mask* mask,
                                                 cuattn_block_sparse_plan* plan);
cuattn_status cuattn_emu_plan_block_sparse_attention(const cuattn_attention_params* params,
                                                     const cuattn_block_mask* mask,
                                                     cuattn_block_sparse_plan* plan);
/* Checks params and the mask's shape, then launches on `stream`: no allocation, no
 * synchronization (graph-capturable). */
cuattn_status cuattn_launch_block_sparse_attention(const cuattn_attention_params* params,
                                                   const cuattn_block_mask* mask, void* stream);
cuattn_status cuattn_emu_launch_block_sparse_attention(const cuattn_attention_params* params,
                                                       const cuattn_block_mask* mask, void* stream);

/* ---------------------------------------------------------------------------------------------
 * Linear (kernel-based) attention: softmax(q k^T) replaced by a feature map, phi(q) phi(k)^T, so
 * that attention costs O(n m dv) rather than O(n^2 d):
 *   out_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps),  S_i = sum_j phi(k_j) v_j^T,  z_i = sum_j
 * phi(k_j) over the keys query i sees: all of them, or, causal, keys j <= i + seqlen_k - seqlen_q
 * (bottom-right aligned, as attention's causal mask). A row whose phi(q_i)^T z_i is 0 (no key,
 * or relu features that miss every key's) outputs zeros. No score scale applies.
 *
 * Feature maps, on q and k rows of head_dim d:
 *   ELU1:  phi(x) = elu(x) + 1, elementwise (m = d features);
 *   RELU:  phi(x) = max(x, 0), elementwise (m = d);
 *   FAVOR: Performer's positive random features, phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m) with
 *          x' = x d^(-1/4) and W float32 [m, d] (maybe_projection), m = num_features in 1..=256.
 *          The exponentials are stabilized as Performer does: a query's features are computed
 *          less the row's largest exponent, a key's less the largest exponent of any key of its
 *          sequence and KV head seen so far (a running max: the state is rescaled when it grows).
 *          Both factors cancel in the ratio, so the result is the definition's.
 *
 * Layout as attention's (GQA: query head h reads KV head h / (heads / kv_heads), whose state its
 * group shares; varlen through cu_seqlens), but v and out have value_dim columns (v [.., kv_heads,
 * value_dim], out [.., heads, value_dim]), which may differ from head_dim. f16/bf16 in and out;
 * features are rounded to the element type for the tensor-core products, the state S
 * [num_features, value_dim] and z [num_features] and every accumulation are float32.
 *
 * Causal runs are chunked (64 keys a chunk): within a chunk, masked quadratic attention with the
 * phi-products on mma.sync; between chunks, the running state. Non-causal runs build the state
 * over all keys, then apply it to every query. One CTA per (32 value columns, KV head, sequence)
 * walks the chunks in order (the state stays on chip), serving every query head of the group.
 *
 * maybe_state (nullable): a recurrent state per sequence and KV head (LinearState): float32 S
 * [batch, kv_heads, num_features, value_dim], z [batch, kv_heads, num_features] and the FAVOR
 * key max [batch, kv_heads], contiguous. With it, a run starts from the state and leaves the
 * state after its keys there: a causal run over a sequence's new tokens is a decode step, and
 * runs over consecutive chunks of tokens equal one run over all of them. Without it the state
 * starts empty and is not kept. Reset a state by zeroing S and z and setting key_max to -inf.
 * ------------------------------------------------------------------------------------------- */
typedef enum cuattn_feature_map {
  CUATTN_FEATURE_ELU1 = 0,
  CUATTN_FEATURE_RELU = 1,
  CUATTN_FEATURE_FAVOR = 2,
} cuattn_feature_map;

typedef struct cuattn_linear_state_view {
  float* s;
  float* z;
  float* key_max;
} cuattn_linear_state_view;

typedef struct cuattn_linear_attention_params {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  /* Nullable, both or neither: int32 [batch + 1] offsets of a packed varlen batch. */
  const int32_t* maybe_cu_seqlens_q;
  const int32_t* maybe_cu_seqlens_k;
  int64_t q_batch_stride;
  int64_t q_row_stride;
  int64_t q_head_stride;
  int64_t k_batch_stride;
  int64_t k_row_stride;
  int64_t k_head_stride;
  int64_t v_batch_stride;
  int64_t v_row_stride;
  int64_t v_head_stride;
  int64_t out_batch_stride;
  int64_t out_row_stride;
  int64_t out_head_stride;
  int32_t batch;
  int32_t heads;
  int32_t kv_heads;
  /* Multiple of 8, at most 256. */
  int32_t head_dim;
  /* Multiple of 8, at most 256. */
  int32_t value_dim;
  /* Maxima over the batch for varlen. */
  int32_t seqlen_q;
  int32_t seqlen_k;
  cuattn_feature_map feature_map;
  /* m: head_dim for ELU1 and RELU; 1..=256 for FAVOR. */
  int32_t num_features;
  /* FAVOR: float32 [num_features, head_dim], contiguous; null otherwise. */
  const float* maybe_projection;
  int32_t causal;
  /* Added to every denominator; 1e-6 conventionally. */
  float eps;
  /* Nullable: a recurrent state (see above). */
  cuattn_linear_state_view maybe_state;
  /* workspace_bytes of cuattn_plan_linear_attention, 16-byte aligned; overwritten. */
  void* workspace;
  cuattn_dtype dtype;
} cuattn_linear_attention_params;

/* Bytes of workspace a launch with params needs (the features of q and k). Reads the shape
 * fields only. */
cuattn_status cuattn_plan_linear_attention(const cuattn_linear_attention_params* params,
                                           int64_t* workspace_bytes);
cuattn_status cuattn_emu_plan_linear_attention(const cuattn_linear_attention_params* params,
                                               int64_t* workspace_bytes);
/* Checks params, then launches on `stream` (the feature kernel, then the state walker): no
 * allocation, no synchronization. */
cuattn_status cuattn_launch_linear_attention(const cuattn_linear_attention_params* params,
                                             void* stream);
cuattn_status cuattn_emu_launch_linear_attention(const cuattn_linear_attention_params* params,
                                                 void* stream);

/* ---------------------------------------------------------------------------------------------
 * Low-rank (Linformer) attention: the keys and values of each sequence and KV head are projected
 * along the sequence to k_proj rows,
 *   K' = E K,  V' = F V    (E, F [k_proj, seqlen_k]; K, V [seqlen_k, head_dim]),
 * and the queries attend to the k_proj projected keys by exact attention (scale, softcap and LSE
 * as attention's): out = softmax(scale * q K'^T) V', O(n k_proj) rather than O(n^2). E and F are
 * shared by every KV head or given per KV head ([kv_heads, k_proj, seqlen_k]). Non-causal only:
 * each projected key mixes every key of the sequence, future ones included, so no row-wise mask
 * (causal, window) applies to it.
 *
 * A run is three launches: lowrank_projection of k by E and of v by F into two workspaces
 * [batch, k_proj, kv_heads, head_dim] of the element type, then attention_flash with those as k
 * and v (seqlen_k = k_proj, window (-1, -1)).
 *
 * lowrank_projection computes out[b, p, h, :] = sum_j P_h[p, j] x[b, j, h, :] for x = k or v, P =
 * E or F, on mma.sync tensor cores: P is float32 in device memory and rounded to the element type
 * (to nearest even) as it is staged, so, as in attention's own products, the products are of
 * bf16 or f16 operands and accumulate in float32; out is rounded to the element type. One CTA per
 * (64 projected rows, 64 head-dim columns, KV head, sequence) walks the keys in steps of 64;
 * k_proj and seqlen_k are arbitrary (the tiles are zero-filled past them). seqlen_k 0 writes zeros.
 * ------------------------------------------------------------------------------------------- */
typedef struct cuattn_lowrank_projection_params {
  /* k or v: [batch, seqlen_k, kv_heads, head_dim], 16-byte aligned rows. */
  const void* x;
  /* E or F, float32: row p of KV head h's projection at projection + h * projection_head_stride
   * + p * projection_row_stride (seqlen_k contiguous elements). */
  const float* projection;
  /* [batch, k_proj, kv_heads, head_dim], 16-byte aligned rows; must not overlap x. */
  void* out;
  /* Element strides, each a multiple of 8 (16-byte aligned rows); the last dim contiguous. */
  int64_t x_batch_stride;
  int64_t x_row_stride;
  int64_t x_head_stride;
  int64_t out_batch_stride;
  int64_t out_row_stride;
  int64_t out_head_stride;
  /* 0: one projection [k_proj, seqlen_k] shared by every KV head; k_proj * seqlen_k for one per
   * KV head, contiguous. */
  int64_t projection_head_stride;
  /* At least seqlen_k; seqlen_k when contiguous. */
  int64_t projection_row_stride;
  /* At most 65535. */
  int32_t batch;
  int32_t seqlen_k;
  /* kv_heads * ceil(head_dim / 64) at most 65535. */
  int32_t kv_heads;
  /* Multiple of 8, at most 256. */
  int32_t head_dim;
  /* Projected rows, at least 1. */
  int32_t k_proj;
  cuattn_dtype dtype;
} cuattn_lowrank_projection_params;

/* Checks params, then launches on `stream`: no allocation, no synchronization. */
cuattn_status cuattn_launch_lowrank_projection(const cuattn_lowrank_projection_params* params,
                                               void* stream);
cuattn_status cuattn_emu_launch_lowrank_projection(const cuattn_lowrank_projection_params* params,
                                                   void* stream);

/* ---------------------------------------------------------------------------------------------
 * Emulator builds of the launchers: the same kernel source compiled for the CPU (-DCUATTN_EMU).
 * Pointers are host pointers; `stream` is ignored; the call returns when the kernel has run.
 * ------------------------------------------------------------------------------------------- */
cuattn_status cuattn_emu_launch_attention_naive(const cuattn_attention_params* params,
                                                void* stream);
cuattn_status cuattn_emu_launch_attention_mma_simple(const cuattn_attention_params* params,
                                                     void* stream);
cuattn_status cuattn_emu_launch_attention_flash(const cuattn_attention_params* params,
                                                void* stream);
/* cuattn_plan_attention_flash for the emulator's launches (which run as on sm_90). */
cuattn_status cuattn_emu_plan_attention_flash(const cuattn_attention_params* params,
                                              cuattn_flash_plan* plan);

/* ---------------------------------------------------------------------------------------------
 * Emulator memory registry.
 *
 * The emulator checks every memory access of kernel code, as compute-sanitizer's memcheck,
 * racecheck and initcheck do on a GPU. A launch stops with CUATTN_ERROR_KERNEL_FAULT and a
 * message naming the kernel, the block, the thread and the address when a kernel
 *   - touches memory outside every registered allocation, or inside one since unregistered (the
 *     message names the nearest allocation, or the freed one, with its label);
 *   - reads or writes a shared-memory byte that another thread wrote, or writes one that another
 *     thread read, in the same barrier interval: no __syncthreads between the two accesses, nor
 *     a named barrier (bar.sync/bar.arrive) that the first access's warp arrived at after it and
 *     the second's waited at, nor, for two lanes of one warp, a __syncwarp naming both (shuffles
 *     and votes order nothing; atomics do not race with atomics);
 *   - reads dynamic shared memory that no thread of its block has written, or touches dynamic
 *     shared memory past the size the launch asked for;
 *   - touches shared memory that an in-flight cp.async is still to write.
 * So every buffer an emulator launcher is given must lie in memory registered here (the Rust
 * tensors register theirs). Checks are on unless the environment sets CUATTN_EMU_MEMCHECK=0 or
 * cuattn_emu_set_memcheck(0) turns them off; checked kernels run 1.5 to 3 times slower. A thread
 * that records traffic (below) has its launches checked whatever the setting.
 * ------------------------------------------------------------------------------------------- */

/* Registers [ptr, ptr + bytes) as an emulated device allocation that kernels may touch, called
 * `label` in fault messages (copied; NULL for none). CUATTN_ERROR_INVALID_ARGUMENT if ptr is NULL
 * or the range overlaps an allocation still registered. */
cuattn_status cuattn_emu_register_allocation(const void* ptr, uint64_t bytes, const char* label);

/* Unregisters the allocation that starts at `ptr` (before its memory is freed): a kernel that
 * touches it later faults naming the freed allocation. CUATTN_ERROR_INVALID_ARGUMENT if no
 * registered allocation starts at ptr (the message says so if it was unregistered already). */
cuattn_status cuattn_emu_unregister_allocation(const void* ptr);

/* Renames the allocation that starts at `ptr` to `label` (copied; NULL for none), in fault
 * messages and traffic records from now on. CUATTN_ERROR_INVALID_ARGUMENT if no registered
 * allocation starts at ptr. */
cuattn_status cuattn_emu_relabel_allocation(const void* ptr, const char* label);

/* Checks launches made from the calling thread from now on (1) or not (0); -1 restores the
 * default: on, unless CUATTN_EMU_MEMCHECK=0. */
void cuattn_emu_set_memcheck(int32_t enabled);

/* 1 if launches made now from the calling thread are checked, else 0. */
int32_t cuattn_emu_memcheck_enabled(void);

/* ---------------------------------------------------------------------------------------------
 * Emulator traffic counters.
 *
 * Per kernel launch, the global-memory bytes kernel code read and wrote in each registered
 * allocation: plain loads and stores of any width (a 16-byte vector load counts 16 bytes),
 * cp.async sources (the bytes copied, not those zero-filled), and atomics (a load reads its
 * bytes, a store writes them, a read-modify-write does both). Shared memory, the threads' stacks
 * and the modules' data are not counted, nor accesses that fault. The counts are what the
 * emulated threads asked for, with no cache: not a GPU's DRAM traffic, which L2 hits lower and
 * 32-byte sectors round up.
 *
 * Recording is per thread and off until asked for: cuattn_emu_traffic_begin opens a recording on
 * the calling thread, and every emulator launch that thread makes until cuattn_emu_traffic_end
 * is recorded (launches of other threads are not). The counts come from the memory checker's
 * hooks, so those launches run checked whatever cuattn_emu_set_memcheck says. A launch that
 * returns an error is not recorded. After cuattn_emu_traffic_end the calling thread reads its
 * recording with the accessors below; the strings they hand out stay valid until the thread's
 * next cuattn_emu_traffic_begin, or its exit.
 * ------------------------------------------------------------------------------------------- */

/* One allocation a recorded launch touched. */
typedef struct cuattn_emu_traffic_entry {
  /* Its label (cuattn_emu_register_allocation) when the launch ended; "" for none. */
  const char* label;
  /* Its start address and size. */
  uint64_t address;
  uint64_t allocation_bytes;
  /* Global bytes the launch's threads read from it and wrote to it. */
  uint64_t bytes_read;
  uint64_t bytes_written;
} cuattn_emu_traffic_entry;

/* Opens a recording on the calling thread, discarding the records of its previous one.
 * CUATTN_ERROR_INVALID_ARGUMENT if the thread has one open already. */
cuattn_status cuattn_emu_traffic_begin(void);

/* Closes the calling thread's recording; its records stay readable on the thread.
 * CUATTN_ERROR_INVALID_ARGUMENT if the thread has none open. */
cuattn_status cuattn_emu_traffic_end(void);

/* 1 while the calling thread has a recording open, else 0. */
int32_t cuattn_emu_traffic_recording(void);

/* How many launches the calling thread's last closed recording holds. Each accessor returns
 * CUATTN_ERROR_INVALID_ARGUMENT when an out pointer is NULL, an index is out of range, the thread
 * has a recording open, or it has closed none. */
cuattn_status cuattn_emu_traffic_launch_count(uint64_t* launches);

/* Launch `launch` (0 .. count - 1, in the order they were made) of that recording: the name its
 * launcher gave the kernel ("attention_flash") and how many allocations it touched. */
cuattn_status cuattn_emu_traffic_get_launch(uint64_t launch, const char** kernel_name,
                                            uint64_t* entries);

/* Entry `entry` (0 .. entries - 1, by address) of launch `launch`. */
cuattn_status cuattn_emu_traffic_get_entry(uint64_t launch, uint64_t entry,
                                           cuattn_emu_traffic_entry* out);

/* Planted memory bugs the checker must report, each next to a correct twin that must run clean.
 * `buf` is int32 [n] and blocks have 64 threads (two warps) unless a case says otherwise; thread t
 * of block b has global index i = 64 * b + t, lane l = t % 32. On a GPU the planted bugs are
 * undefined behavior: only the emulator's launcher should run them. */
typedef enum cuattn_memcheck_test_case {
  /* buf int32 [2][n] (n >= 1), x in row 1: grid ceil(n / 64); row 0 gets, for i < n,
   * y[i] = x[i] + x[min(i + 1, n - 1)]. */
  CUATTN_MEMCHECK_TEST_NEIGHBOR_SUM = 0,
  /* Planted: y[i] = x[i] + x[i + 1]: thread i = n - 1 reads x[n], one element past buf. */
  CUATTN_MEMCHECK_TEST_NEIGHBOR_SUM_PAST_END = 1,
  /* n >= 1, grid n / 64 + 1: buf[i] = i for i < n. On a buffer already unregistered: the
   * use-after-free case. */
  CUATTN_MEMCHECK_TEST_IOTA = 2,
  /* Planted: the guard is i <= n: thread i = n writes buf[n], one element past buf. */
  CUATTN_MEMCHECK_TEST_IOTA_PAST_END = 3,
  /* One block, n >= 64. Static __shared__ int tile[64]: tile[t] = buf[t], __syncthreads,
   * buf[t] = tile[63 - t]. */
  CUATTN_MEMCHECK_TEST_REVERSE_STATIC = 4,
  /* Planted: without the __syncthreads, thread t reads tile[63 - t] while its owner writes it. */
  CUATTN_MEMCHECK_TEST_REVERSE_STATIC_NO_SYNCTHREADS = 5,
  /* One block, n >= 64. Dynamic shared int d[64]: d[t] = buf[t], __syncthreads, d[t] *= 2,
   * __syncthreads, buf[t] = d[t] + (t >= 32 ? d[t - 32] : 0). */
  CUATTN_MEMCHECK_TEST_SHIFT_DYNAMIC = 6,
  /* Planted: without the second __syncthreads, warp 1 reads d[0..31] while warp 0 doubles it. */
  CUATTN_MEMCHECK_TEST_SHIFT_DYNAMIC_NO_SYNCTHREADS = 7,
  /* One block, n >= 64. Static __shared__ int ring[64]: ring[t] = buf[t], __syncwarp, each warp
   * rotates its 32 values: buf[t] = ring[t - l + (l + 31) % 32]. */
  CUATTN_MEMCHECK_TEST_ROTATE_WARP = 8,
  /* Planted: without the __syncwarp, lane l reads ring[l - 1] while lane l - 1 writes it. */
  CUATTN_MEMCHECK_TEST_ROTATE_WARP_NO_SYNCWARP = 9,
  /* Planted: with the __syncwarp, but each thread reads the other warp, buf[t] =
   * ring[(t + 32) % 64]: a __syncwarp orders nothing between warps. */
  CUATTN_MEMCHECK_TEST_ROTATE_ACROSS_WARPS_SYNCWARP = 10,
  /* One block, n >= 65, 65 ints of dynamic shared d: a block-strided loop copies buf[0..65) to d,
   * __syncthreads, buf[t] = d[t] + d[t + 1]. */
  CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC = 11,
  /* Planted: the copy loop stops at 64, so d[64] is never written and thread 63 reads it. */
  CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC_UNWRITTEN = 12,
  /* Planted: launched with 64 ints of dynamic shared memory: the copy of buf[64] writes d[64],
   * past its end. */
  CUATTN_MEMCHECK_TEST_PAIR_SUM_DYNAMIC_TOO_SMALL = 13,
  /* One block, n >= 64: a shared histogram. Threads 0-7 zero __shared__ int bins[8],
   * __syncthreads, every thread does atomicAdd(&bins[buf[t] & 7], 1), __syncthreads, and
   * buf[t] = bins[t] for t < 8. Atomics of different threads do not race. */
  CUATTN_MEMCHECK_TEST_HISTOGRAM_ATOMICS = 14,
  /* Planted: the bins are never zeroed, so the first atomicAdd on each reads a shared int no
   * thread of the block wrote (on a GPU, whatever an earlier block left; in the emulator, the
   * 0xFFFFFFFF poison: -1). */
  CUATTN_MEMCHECK_TEST_HISTOGRAM_ATOMICS_UNZEROED = 15,
  /* Planted: IOTA's grid (n >= 128: three blocks or more), but each block indexes by t alone:
   * buf[t] = t for t < n. Block (1,0,0) stores to the elements block (0,0,0) stored to, and the
   * blocks of a launch are unordered. */
  CUATTN_MEMCHECK_TEST_IOTA_BLOCKS_OVERLAP = 16,
  /* One block, n >= 32: the even threads store buf[t / 2] = t, __syncthreads, then the odd ones
   * do: buf[j] = 2 j + 1 for j < 32. Two threads store to one word, in order. */
  CUATTN_MEMCHECK_TEST_STORE_PAIRS = 17,
  /* Planted: without the __syncthreads: thread 1 stores to buf[0] in the interval in which
   * thread 0 did. */
  CUATTN_MEMCHECK_TEST_STORE_PAIRS_NO_SYNCTHREADS = 18,
  /* One block of 96 threads (three warps), n >= 96. Warp 0 writes static __shared__ int
   * slot[32] (slot[l] = buf[l]) and arrives at named barrier 1 of 64 threads (bar.arrive); warp 1
   * waits there (bar.sync) and stores buf[32 + l] = slot[l]; after a __syncthreads warp 2 stores
   * buf[64 + l] = slot[l]. A named barrier orders what its arriving warps did before it before
   * what its waiting warps do after it. */
  CUATTN_MEMCHECK_TEST_HANDOFF_NAMED = 19,
  /* Planted: warp 0 waits at barrier 1 and warp 1 only arrives: warp 1's reads are not ordered
   * after warp 0's writes. */
  CUATTN_MEMCHECK_TEST_HANDOFF_NAMED_READER_ARRIVES = 20,
  /* Planted: warp 2, which has no part in barrier 1, reads slot before the __syncthreads. */
  CUATTN_MEMCHECK_TEST_HANDOFF_NAMED_OUTSIDER = 21,
} cuattn_memcheck_test_case;

/* Runs memcheck test `test_case` (a cuattn_memcheck_test_case) over `buf`, a device buffer of the
 * case's size for `n` (CUATTN_ERROR_INVALID_ARGUMENT if n is out of range), on `stream`. */
cuattn_status cuattn_launch_memcheck_test(int32_t test_case, void* buf, int64_t n, void* stream);
/* The same on the emulator: `buf` is host memory, `stream` is ignored. */
cuattn_status cuattn_emu_launch_memcheck_test(int32_t test_case, void* buf, int64_t n,
                                              void* stream);

/* ---------------------------------------------------------------------------------------------
 * Runtime self-tests.
 *
 * Small kernels that exercise the launch path and the CUDA features every kernel relies on
 * (shuffles, votes, barriers, shared memory, atomics, fp16/bf16 conversions, indexing), with
 * results a test recomputes independently, plus planted faults the emulator must report. Thread
 * t is the linear id in its block (x fastest), lane l = t % 32, warp w = t / 32. A case writes
 * `out` as laid out below (row-major) or fails with the status given.
 * ------------------------------------------------------------------------------------------- */
typedef enum cuattn_selftest_case {
  /* One block of 64 threads. Thread t shuffles v = 1000 * t + 7 with the full mask, for each kind
   * k (0 __shfl_sync, 1 __shfl_up_sync, 2 __shfl_down_sync, 3 __shfl_xor_sync), each width
   * 32 >> i (i < 6) and each argument (srcLane, delta or laneMask) a of {0, 1, 3, 17, 31, 32, 45,
   * -1, (5 * t + 3) % 41 - 4}: int32 [4][6][9][64]. */
  CUATTN_SELFTEST_SHUFFLE = 0,
  /* One block of 64 threads, v = 1000 * t + 7, partial and disjoint masks: int32 [4][64].
   * Row 0: lanes 0-15 __shfl_xor_sync(0x0000ffff, v, 1, 16) while lanes 16-31 run
   *        __shfl_down_sync(0xffff0000, v, 3, 16).
   * Row 1: lanes 0-7 __shfl_down_sync(0x000000ff, v, 4), lanes 8-31 __shfl_up_sync(0xffffff00,
   *        v, 8). A lane whose source is outside its mask gets -1 in the emulator (undefined on a
   *        GPU): lanes 4-7 and 8-15.
   * Row 2: even lanes __shfl_sync(0x55555555, v, l + 2), odd lanes __shfl_sync(0xaaaaaaaa, v,
   *        l - 2).
   * Row 3: each half warp stores v in shared memory, __syncwarp(its half), reads its neighbor
   *        t ^ 1. */
  CUATTN_SELFTEST_SHUFFLE_MASKS = 1,
  /* One block of 32 threads. Thread t sends bits(k, t) as each type k of {0 double, 1 long long,
   * 2 unsigned long long, 3 float, 4 int, 5 unsigned, 6 __half2, 7 __nv_bfloat162, 8 __half,
   * 9 __nv_bfloat16} through __shfl_xor_sync(full, x, 5) and stores what it receives, zero
   * extended: uint64 [10][32], where bits(k, t) is the low sizeof(type) bytes of
   * (0x9e3779b97f4a7c15 * (32 * k + t + 1)) ^ 0xd1b54a32d192ed03. */
  CUATTN_SELFTEST_SHUFFLE_TYPES = 2,
  /* One block of 64 threads: uint32 [8][64].
   * Row 0: __all_sync(full, l != 5 || w == 1). Row 1: __any_sync(full, l == 31 && w == 1).
   * Row 2: __ballot_sync(full, l % 3 == 0). Row 3: lanes 0-19 __ballot_sync(0x000fffff, l & 1),
   * lanes 20-31 __ballot_sync(0xfff00000, l % 4 == 0). Row 4: lanes 0-15 __all_sync(0x0000ffff,
   * l < 16), lanes 16-31 __any_sync(0xffff0000, l == 20 + 20 * w). Row 5: __activemask() where
   * every lane is. Row 6: __activemask() inside a branch taken by lanes with l % 4 != 1 and in its
   * else branch (in the emulator, the lanes that reach each call; on a GPU, the lanes converged
   * there). Row 7: __syncwarp() then __ballot_sync(full, 1). */
  CUATTN_SELFTEST_VOTE = 3,
  /* Grid 3, block (32, 4, 2): 256 threads, 8 warps, in block b. Static shared s[t] = 1000 * b + t,
   * dynamic shared d[255 - t] = 7 * b + 3 * t, __syncthreads, then out[b][t] = s[255 - t] + d[t];
   * then a __syncthreads tree sum of s: out[b][256] = sum over t of s[t]. int32 [3][257]. */
  CUATTN_SELFTEST_SYNCTHREADS = 4,
  /* Grid 8, block 64, 256 bytes of dynamic shared memory: thread t reads 32-bit word t before
   * anything wrote it, then writes it: uint32 [8][64], 0xffffffff everywhere in the emulator
   * (undefined on a GPU). */
  CUATTN_SELFTEST_SMEM_POISON = 5,
  /* Grid (4, 3, 2), block 128: 3072 threads, global id g = 128 * linear block id + t, adding into
   * counters the launcher first resets. out holds, at byte offsets: 0 int32 sum of g
   * (atomicAdd int); 4 uint32 count (atomicAdd unsigned 1, whose return value is thread g's
   * ticket); 8 uint64 sum of (g << 33) + 1 (atomicAdd unsigned long long); 16 float count
   * (atomicAdd 1.0f); 20 int32 max over g of (int32)(g * 0x9e3779b9) (atomicMax, from INT_MIN);
   * 24 double sum of 0.25 (atomicAdd double); 32 int32 count by an atomicCAS (int) loop; 36 uint32
   * sum of 2 by an atomicCAS (unsigned) loop; 40 uint32 [3072]: tickets[ticket] = g. */
  CUATTN_SELFTEST_ATOMICS = 6,
  /* Grid (3, 2, 2), block (8, 4, 2): uint32 [12][64][14], indexed by the linear block id and t:
   * threadIdx.xyz, blockIdx.xyz, blockDim.xyz, gridDim.xyz, __shfl_sync(full, t, 0) and
   * __shfl_xor_sync(full, t, 1). */
  CUATTN_SELFTEST_INDEXING = 7,
  /* Every 16-bit pattern h = i < 65536 converted to float: float32 [8][65536]. Rows 0-3 read h
   * as __half, rows 4-7 as __nv_bfloat16: __half2float (__bfloat162float), the implicit
   * conversion to float, __low2float of __halves2half2(h, ~h) (__halves2bfloat162) and
   * __high2float of __halves2half2(~h, h). */
  CUATTN_SELFTEST_HALF_TO_FLOAT = 8,
  /* n = out_bytes / 20 floats x[i] in out, followed by uint16 [8][n] the kernel writes: rows 0-3
   * __half, rows 4-7 __nv_bfloat16: __float2half_rn(x) (__float2bfloat16_rn), the implicit
   * conversion from float, the low and the high half of __floats2half2_rn(x, -x)
   * (__floats2bfloat162_rn). */
  CUATTN_SELFTEST_FLOAT_TO_HALF = 9,
  /* One block of 256 threads: warps 0-3 (group 0) and 4-7 (group 1) take 5 turns each through
   * named barriers 1 and 2, as flash's ping-pong schedule does: before its turn a group bar.syncs
   * its own barrier (1 + group), after it bar.arrives at the other's, except group 1 after its
   * last turn;
   * group 1 first arrives once at barrier 1. In its turn, thread 0 of the group takes a ticket
   * from a counter the launcher resets (atomicAdd 1): uint32 [5][2] tickets by round and group,
   * then the counter. Turn order: tickets 0, 1, 2, ... alternate from group 0. */
  CUATTN_SELFTEST_NAMED_BARRIERS = 16,

  /* Planted faults. On a GPU these kernels are undefined behavior (a hang, garbage, or nothing
   * visible): only the emulator's launcher should run them. */

  /* Grid (16, 1, 16), block 64. Thread 0 of each block that starts adds 1 to uint32 out[0]
   * (reset first); in block (1,0,1) threads 32-63 return before a __syncthreads. Expect
   * CUATTN_ERROR_KERNEL_FAULT ("__syncthreads reached by threads 0-31 but not 32-63 (exited)")
   * and fewer than 256 blocks started. */
  CUATTN_SELFTEST_FAULT_DIVERGENT_SYNCTHREADS = 10,
  /* One block of 64: warp 1 runs __shfl_sync(0x7fffffff, v, 0), a mask without lane 31 (thread
   * 63). Expect CUATTN_ERROR_KERNEL_FAULT naming thread 63. No output. */
  CUATTN_SELFTEST_FAULT_SHUFFLE_OMITS_LANE = 11,
  /* One block of 64: thread 39 (warp 1, lane 7) returns, the rest of warp 1 runs a full-mask
   * __shfl_sync. Expect CUATTN_ERROR_KERNEL_FAULT naming threads 32-38, 40-63 and 39 (exited).
   * No output. */
  CUATTN_SELFTEST_FAULT_SHUFFLE_EXITED_LANE = 12,
  /* One block of 32: lanes 0-15 run __shfl_xor_sync(full, ...), lanes 16-31 __ballot_sync(full,
   * ...). Expect CUATTN_ERROR_KERNEL_FAULT naming thread 16 and threads 0-15. No output. */
  CUATTN_SELFTEST_FAULT_COLLECTIVE_MISMATCH = 13,
  /* A launch of block (33, 32, 1), 1056 threads. Expect CUATTN_ERROR_LAUNCH_FAILED. */
  CUATTN_SELFTEST_BAD_LAUNCH_BLOCK = 14,
  /* A launch with 228 KiB of dynamic shared memory. Expect CUATTN_ERROR_LAUNCH_FAILED. */
  CUATTN_SELFTEST_BAD_LAUNCH_SMEM = 15,
  /* One block of 64: warp 0 runs bar.sync 1, 64; warp 1 returns. Expect CUATTN_ERROR_KERNEL_FAULT
   * naming barrier 1, threads 0-31 waiting and 32-63 exited. No output. */
  CUATTN_SELFTEST_FAULT_NAMED_BARRIER_STALL = 17,
  /* One block of 64: warp 0 runs bar.arrive 1, 64; warp 1 returns. Expect
   * CUATTN_ERROR_KERNEL_FAULT: the block ended with 32 of 64 arrivals pending. No output. */
  CUATTN_SELFTEST_FAULT_NAMED_BARRIER_PENDING = 18,
  /* One block of 64: warp 0 runs bar.arrive 1, 64, then warp 1 bar.sync 1, 32. Expect
   * CUATTN_ERROR_KERNEL_FAULT naming thread 32 and the 64 threads the pending arrivals named. No
   * output. */
  CUATTN_SELFTEST_FAULT_NAMED_BARRIER_COUNT = 19,
} cuattn_selftest_case;

/* Runs self-test `test_case` (a cuattn_selftest_case) on `stream`, writing `out`, a device buffer
 * of out_bytes bytes (CUATTN_ERROR_INVALID_ARGUMENT if too small for the case). */
cuattn_status cuattn_launch_selftest(int32_t test_case, void* out, int64_t out_bytes, void* stream);
/* The same on the emulator: `out` is host memory, `stream` is ignored. */
cuattn_status cuattn_emu_launch_selftest(int32_t test_case, void* out, int64_t out_bytes,
                                         void* stream);

/* ---------------------------------------------------------------------------------------------
 * Primitive tests.
 *
 * Kernels that run each warp-level primitive of csrc/arch (mma, ldmatrix, cp.async, vector
 * access and packing, exp2, reductions, swizzle) on given inputs, for tests to compare with
 * references built from the PTX ISA's layout tables; plus planted bugs and faults. Thread t is
 * the linear id in its block, lane l = t % 32; in a register fragment, "register i of lane l" is
 * element [l][i]. `in` and `out` are laid out as below (row-major, packed in the order given);
 * bf16 and f16 values are their 16-bit patterns.
 * ------------------------------------------------------------------------------------------- */
typedef enum cuattn_primitive_test_case {
  /* mma_m16n8k16<bf16>, grid 2, block 128: 8 warps, warp w = 4 * block + t / 32. in: uint32
   * a[8][32][4], uint32 b[8][32][2], float c[8][32][4] (each lane's fragments). out: float
   * d[8][32][4] = a * b + c, then float [8][32][4]: the same computed in place (d aliasing c). */
  CUATTN_PRIMITIVE_TEST_MMA_BF16 = 0,
  /* The same with f16 inputs. */
  CUATTN_PRIMITIVE_TEST_MMA_F16 = 1,
  /* One warp. in: uint16 tile[64][8] (64 rows of 16 bytes), then uint32 row_of_lane[32], each
   * < 64. The tile is copied to dynamic shared memory and lane l passes the address of its row
   * row_of_lane[l] to variant v of {x1, x2, x4, x1.trans, x2.trans, x4.trans} and, for v = 6, to
   * x4 of a static __shared__ copy. out: uint32 [7][32][4], register j of lane l for variant v;
   * registers past the variant's count are written 0. */
  CUATTN_PRIMITIVE_TEST_LDMATRIX = 2,
  /* One warp. in: bf16 a[16][64], kt[64][64], v[64][64]. Each goes by cp.async.cg into a swizzled
   * shared tile of 128-byte rows (a and kt in one group, v in a second), then ldmatrix feeds mma:
   * x4 for a and kt, x4.trans for v. out: float s[8][32][4] then float o[8][32][4]: register i of
   * lane l of the accumulator of n-tile j (columns 8j..8j+7) of S = a * kt^T and O = a * v. */
  CUATTN_PRIMITIVE_TEST_GEMM = 3,
  /* A planted layout bug: CUATTN_PRIMITIVE_TEST_GEMM with v loaded by x4 without .trans, so that
   * o is wrong (s is right). */
  CUATTN_PRIMITIVE_TEST_GEMM_V_WITHOUT_TRANS = 4,
  /* Block 64, 5632 bytes of dynamic shared memory, first filled with 0x5a. Regions r = 0..7 of
   * 64 * size_r bytes each follow one another, size_r = {4, 4, 8, 8, 16, 16, 16, 16}[r]: regions
   * 0-1 use cp.async.ca 4 bytes, 2-3 ca 8 bytes, 4-5 ca 16 bytes, 6-7 cg 16 bytes. Thread t copies
   * the size_r bytes at offset_r + size_r * t of in to the same offset of shared memory: whole in
   * even regions, with src-size t % (size_r + 1) (the rest zero-filled) in odd ones. in: 5632
   * bytes; out: the 5632 bytes of shared memory after wait_all and a barrier. */
  CUATTN_PRIMITIVE_TEST_CP_ASYNC = 5,
  /* Block 64. in: uint8 src[4][64][16]. Dynamic shared memory s[4][64][16] is filled with 0x5a;
   * thread t issues cp.async.cg of src[g][t] into s[g][t] for g = 0..3, committing a group after
   * each of g = 0, 1, 2 (g = 3 is never committed). It snapshots its s[0..3][t] five times:
   * before any wait, after wait_group 2, 1 and 0, after wait_all. out: uint8 [5][64][4][16]. A
   * landed chunk holds src; the emulator shows 0xff bytes in a chunk still in flight (a GPU the
   * old 0x5a or the new bytes). Reading chunks in flight is what this case is about: with the
   * emulator's memory checker on, the launch stops at the first such read. */
  CUATTN_PRIMITIVE_TEST_CP_ASYNC_GROUPS = 6,
  /* A planted bug: one warp; shared row t (8 bf16) is filled with 1.0, then lane t copies in
   * bf16 [32][8] row t into it by cp.async.cg, commits and converts the row to float before
   * waiting: out float [32][8]; then after wait_group 0: float [32][8]. The emulator gives NaN
   * (its 0xffff poison) before the wait, or with its memory checker on stops at that read; a GPU
   * gives 1.0 or the data. */
  CUATTN_PRIMITIVE_TEST_CP_ASYNC_READ_BEFORE_WAIT = 7,
  /* Block 64. in: uint4 src[64], float pairs[64][2], uint32 packed[64]. out: uint4 copy[64] with
   * copy[t] = src[63 - t] (ld_global_v4, st_shared_v4, barrier, ld_shared_v4, st_global_v4),
   * uint32 [64] pack_bf16x2(pairs[t]), uint32 [64] pack_half2(pairs[t]), float [64][2]
   * unpack_bf16x2(packed[t]), float [64][2] unpack_half2(packed[t]). */
  CUATTN_PRIMITIVE_TEST_VEC = 8,
  /* Grid 16, block 256. in: float x[4096]; out: float [4096] fast_exp2(x[i]), then float [4096]
   * fast_tanh(x[i]), then float [4096] fma_exp2(x[i]). */
  CUATTN_PRIMITIVE_TEST_EXP2 = 9,
  /* Block 128. in: float x[128]; out: float [4][128]: quad_max, quad_sum, warp_max and warp_sum
   * of x[t] as thread t sees them. */
  CUATTN_PRIMITIVE_TEST_REDUCE = 10,
  /* Block 64. out: int32 swizzle_chunk<c>(row, chunk) as [64][c] for each width c of {2, 4, 8,
   * 16, 24, 32} chunks per row, one after the other: int32 [5504]. No input. */
  CUATTN_PRIMITIVE_TEST_SWIZZLE = 11,

  /* Planted faults. On a GPU these kernels are undefined behavior (a fault or garbage): only the
   * emulator's launcher should run them. Each expects CUATTN_ERROR_KERNEL_FAULT. */

  /* One warp: ldmatrix x4 whose lane 5 passes a row address 8 bytes off 16-byte alignment: the
   * message names thread 5 and the misaligned address. No input or output. */
  CUATTN_PRIMITIVE_TEST_FAULT_LDMATRIX_MISALIGNED = 12,
  /* One warp: ldmatrix x2 of rows in global memory (in, at least 256 bytes, 16-byte aligned): the
   * message names thread 0 and "not in shared memory". */
  CUATTN_PRIMITIVE_TEST_FAULT_LDMATRIX_GLOBAL = 13,
  /* One warp: thread 3 issues cp.async.cg (16 bytes) from in + 8 (in: at least 512 bytes, 16-byte
   * aligned): the message names thread 3 and the misaligned address. */
  CUATTN_PRIMITIVE_TEST_FAULT_CP_ASYNC_MISALIGNED = 14,
  /* One warp: lanes 0-15 run mma_m16n8k16<bf16>, lanes 16-31 ldmatrix x4: the message names
   * thread 16's ldmatrix and threads 0-15 waiting in the mma. */
  CUATTN_PRIMITIVE_TEST_FAULT_MMA_LDMATRIX_MISMATCH = 15,
  /* One warp: lane 7 returns, the others run an mma: the message names the mma and thread 7
   * (exited). */
  CUATTN_PRIMITIVE_TEST_FAULT_MMA_EXITED_LANE = 16,
} cuattn_primitive_test_case;

/* Runs primitive test `test_case` (a cuattn_primitive_test_case) on `stream`, reading `in` (a
 * device buffer laid out for the case, or NULL when it takes none) and writing `out`, a device
 * buffer of out_bytes bytes (CUATTN_ERROR_INVALID_ARGUMENT if too small for the case). */
cuattn_status cuattn_launch_primitive_test(int32_t test_case, const void* in, void* out,
                                           int64_t out_bytes, void* stream);
/* The same on the emulator: `in` and `out` are host memory, `stream` is ignored. */
cuattn_status cuattn_emu_launch_primitive_test(int32_t test_case, const void* in, void* out,
                                               int64_t out_bytes, void* stream);

/* ---------------------------------------------------------------------------------------------
 * Benchmarks.
 *
 * bench_mma: the mma.sync ceiling `cuattn bench` reports kernels against. Each of `blocks` blocks
 * of CUATTN_BENCH_MMA_BLOCK_THREADS threads runs, in every warp, `iterations` rounds of
 * CUATTN_BENCH_MMA_CHAINS independent mma.sync m16n8k16 bf16 products with fp32 accumulators
 * (2 * 16 * 8 * 16 flops each) and nothing else. Every element of A is 1.5 and of B 2, so each
 * mma adds 48 to each of a lane's 4 accumulators: thread t of block b writes their sum,
 * 192 * CUATTN_BENCH_MMA_CHAINS * iterations (exact in fp32 for iterations <= 2^13 and for
 * powers of two), to out[b * CUATTN_BENCH_MMA_BLOCK_THREADS + t]. `out` is float [blocks *
 * CUATTN_BENCH_MMA_BLOCK_THREADS]. The kernel is compiled for CUATTN_BENCH_MMA_BLOCKS_PER_SM
 * resident blocks per SM: launch a multiple of that times the SM count for whole waves.
 * ------------------------------------------------------------------------------------------- */
#define CUATTN_BENCH_MMA_BLOCK_THREADS 256
#define CUATTN_BENCH_MMA_BLOCKS_PER_SM 4
#define CUATTN_BENCH_MMA_CHAINS 8

/* CUATTN_ERROR_INVALID_ARGUMENT if out is null, blocks < 1 or iterations < 0. Launches on
 * `stream` without synchronizing. */
cuattn_status cuattn_launch_bench_mma(float* out, int32_t blocks, int32_t iterations, void* stream);
/* The same on the emulator: `out` is host memory, `stream` is ignored. */
cuattn_status cuattn_emu_launch_bench_mma(float* out, int32_t blocks, int32_t iterations,
                                          void* stream);

/* ---------------------------------------------------------------------------------------------
 * Build facts.
 * ------------------------------------------------------------------------------------------- */

/* 1 when the CUDA kernels were compiled into this library, 0 for an emulator-only build. */
int32_t cuattn_has_cuda_kernels(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CUATTN_H_ */
