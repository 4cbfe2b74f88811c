/* cuattn.h: the public C ABI of cuattn, what C and C++ engines include and link against.
 * Status codes, one flat params struct per kernel family, plans, the validated entry points,
 * the paged KV cache object and the version. Every entry point checks its arguments and
 * reports a bad one as a status code with a message (cuattn_last_error()); nothing here
 * launches on unchecked params. cuattn_internal.h holds what Rust and the tests use besides. */
#ifndef CUATTN_H_
#define CUATTN_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this ABI: of the structs' layouts and the entry points' signatures. It goes up
 * whenever either changes incompatibly; cuattn_abi_version() returns the value the library was
 * built with, so an engine can refuse a library built from another header:
 *   if (cuattn_abi_version() != CUATTN_ABI_VERSION) { ... } */
#define CUATTN_ABI_VERSION 1

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

/* The CUATTN_ABI_VERSION the library was built with. */
int32_t cuattn_abi_version(void);

/* The version of the cuattn crate the library was built from, as "MAJOR.MINOR.PATCH" (a static
 * string). */
const char* cuattn_version(void);

/* 1 when the CUDA kernels were compiled into this library, 0 for an emulator-only build (whose
 * entry points return CUATTN_ERROR_UNSUPPORTED on any stream but CUATTN_STREAM_EMULATOR). */
int32_t cuattn_has_cuda_kernels(void);

/* The `stream` that runs an entry point on the CPU emulator instead of a GPU: the same kernel
 * source compiled for the CPU (every build has it). Pointers are then host memory and the call
 * returns when the kernel has run. The emulator checks each memory access of a kernel against
 * the allocations it knows (as compute-sanitizer does); a C program's own buffers are unknown
 * to it, so a C program that runs on it sets CUATTN_EMU_MEMCHECK=0 in the environment before
 * its first launch. */
#define CUATTN_STREAM_EMULATOR ((void*)(intptr_t)-1)

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

  /* Multiplies q . k; conventionally 1/sqrt(head_dim). The kernels work in base 2 with
   * scale * log2(e), which the library computes. */
  float scale;
  /* 0 disables the cap. */
  float softcap;
  /* -1 for unbounded. */
  int32_t window_left;
  int32_t window_right;

  /* attention_flash's tile table (a cuattn_flash_tiles); CUATTN_FLASH_TILES_AUTO (0) unless a
   * benchmark or test forces one. Read by attention_flash alone; the attention entry points
   * refuse a value that names no table. */
  int32_t flash_tiles;

  cuattn_dtype dtype;
} cuattn_attention_params;

/* The attention entry points check every field of params (shapes, strides, heads % kv_heads,
 * head_dim, window, dtype, flash_tiles, null pointers), then launch on `stream` (a cudaStream_t
 * of the current device, NULL for the default stream, or CUATTN_STREAM_EMULATOR) and return: no
 * synchronization, no allocation, so a launch may be captured into a CUDA graph, whose replays
 * read the buffers params points to as they are then. Make one launch of the kind before
 * capturing, so that loading the kernel and reading its attributes happen outside the capture.
 */

/* attention_naive: one warp per (query row, head), fp32 online softmax, no tensor cores. The
 * bottom rung of the kernel ladder and a permanent correctness baseline. Any head_dim that is a
 * multiple of 8 up to 256, every mask, varlen, softcap, LSE. */
cuattn_status cuattn_attention_naive(const cuattn_attention_params* params, void* stream);

/* attention_flash: FlashAttention-2-style prefill: CTAs of 64-256 query rows (16 or 32 a warp),
 * a cp.async K/V pipeline (2 or 3 stages, or K and V in turns) in swizzled shared memory,
 * mma.sync, skipped masked tiles, element masks only on boundary tiles. Head-dim tiles 64, 96,
 * 128, 192, 256 (cargo features hd64 ... hd256; other multiples of 8 run in the next tile up that
 * is built, and one with none is CUATTN_ERROR_UNSUPPORTED). Needs 16-byte aligned rows (checked):
 * q, k, v and out 16-byte aligned, their strides multiples of 8 elements. The default kernel.
 * Two tile tables (params.flash_tiles): compact on every GPU, and wide on sm_90, where each
 * launch picks the faster for its shape. */
cuattn_status cuattn_attention_flash(const cuattn_attention_params* params, void* stream);

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

/* Fills *plan with what cuattn_attention_flash(params, stream) would run: on the calling
 * thread's current device, or on the emulator (which plans as an sm_90 GPU) for
 * CUATTN_STREAM_EMULATOR; the tile table follows params->flash_tiles. For engines that size or
 * log their launches, and for tests. Reads the shape fields of params (the pointers may be
 * NULL) and checks what the launcher checks of them (head_dim, heads, dtype, flash_tiles);
 * CUATTN_ERROR_UNSUPPORTED where the launch would be (no tile for head_dim in this build, wide
 * tiles forced where the GPU does not run the sm_90a code, no CUDA kernels in this build). */
cuattn_status cuattn_plan_attention_flash(const cuattn_attention_params* params, void* stream,
                                          cuattn_flash_plan* plan);

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

/* Launches kv_append on `stream` (or CUATTN_STREAM_EMULATOR) (no synchronization, no allocation:
 * graph-capturable) after checking the fields its indexing relies on (dims, dtype, null pointers,
 * positive strides). A slot outside [0, num_pages * page_size) skips its token (negative slots mark
 * padding tokens), so no slot value writes outside the pools. Where every pointer is 16-byte
 * aligned and every stride a multiple of 8 elements it moves 16-byte vectors, otherwise single
 * elements. */
cuattn_status cuattn_kv_append(const cuattn_kv_append_params* params, void* stream);

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

/* Launches kv_copy_pages on `stream` (or CUATTN_STREAM_EMULATOR) after checking its fields: no
 * synchronization, no allocation. */
cuattn_status cuattn_kv_copy_pages(const cuattn_kv_copy_pages_params* params, void* stream);

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
  /* Multiplies q . k (the library computes the kernels' scale * log2(e) from it). */
  float scale;
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

/* Checks the fields the kernels' indexing relies on, then launches on `stream` (or
 * CUATTN_STREAM_EMULATOR): no allocation, no
 * synchronization (graph-capturable). Needs 16-byte aligned rows: q, out, the pools and every
 * row, head, page and slot stride multiples of 8 elements. Head dims run in the flash kernel's
 * head-dim tiles (64, 96, 128, 192, 256). Page indices outside [0, num_pages) read as zeros. */
cuattn_status cuattn_paged_attention(const cuattn_paged_attention_params* params, void* stream);

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

/* Checks params, then launches merge_states on `stream` (or CUATTN_STREAM_EMULATOR): no
 * synchronization, no allocation. */
cuattn_status cuattn_merge_states(const cuattn_merge_states_params* params, void* stream);

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

/* Fills *plan with what a block-sparse launch of params and mask runs (checking them as the
 * launch does). */
cuattn_status cuattn_plan_block_sparse_attention(const cuattn_attention_params* params,
                                                 const cuattn_block_mask* mask,
                                                 cuattn_block_sparse_plan* plan);
/* Checks params and the mask's shape, then launches on `stream` (or CUATTN_STREAM_EMULATOR): no
 * allocation, no synchronization (graph-capturable). */
cuattn_status cuattn_block_sparse_attention(const cuattn_attention_params* params,
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
/* Checks params, then launches on `stream` (or CUATTN_STREAM_EMULATOR): the feature kernel, then
 * the state walker; no allocation, no synchronization. */
cuattn_status cuattn_linear_attention(const cuattn_linear_attention_params* params, void* stream);

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

/* Checks params, then launches on `stream` (or CUATTN_STREAM_EMULATOR): no allocation, no
 * synchronization. */
cuattn_status cuattn_lowrank_projection(const cuattn_lowrank_projection_params* params,
                                        void* stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CUATTN_H_ */
