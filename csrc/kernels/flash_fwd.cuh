// flash_fwd.cuh: FlashAttention-2-style tiled attention forward, the prefill kernel. Included by
// one translation unit per (dtype, head-dim tile), so the CUDA build compiles them in parallel.
//
// One CTA per (query tile, query head, batch); each warp owns 16 or 32 query rows (traits table),
// every K and V fragment it loads serving all of them. K/V tiles stream through a 2- or 3-stage
// cp.async pipeline into swizzled shared memory, one barrier per tile (tile j + stages - 1 loads
// while j is in use), or, where shared memory is short, K and V load in turns (V of tile j during
// S, K of tile j + 1 during P V); S = Q K^T and O += P V on mma.sync, Q and K through ldmatrix, V
// through ldmatrix.trans; the online softmax stays in registers in base 2, P is reused from the S
// accumulators as the A operand, and O is rescaled only when a row's max outgrows the running one
// by 2^8. Tiles no row of the CTA can see are never loaded, a warp skips the math of tiles none of
// its rows can see, and the element mask runs only on tiles that straddle a mask boundary for the
// warp's rows. O leaves through shared memory in 16-byte stores. Two tile tables: compact (four
// warps, two CTAs an SM) and wide (eight warps, sm_90). Gained over attention_mma_simple:
// load/compute overlap, fragment loads batched ahead of their mmas (and, up to hd128, shared by
// two m16 tiles), eight warps an SM, no masking work on interior tiles, rare rescales, vector
// stores.
#pragma once

#include <type_traits>  // std::integral_constant

#include "arch/barrier.cuh"
#include "arch/cp_async.cuh"
#include "arch/ldmatrix.cuh"
#include "arch/math.cuh"
#include "arch/mma.cuh"
#include "arch/vec.cuh"
#include "common/cuda_compat.cuh"
#include "common/launch.cuh"
#include "common/mask.cuh"
#include "common/smem_tile.cuh"
#include "common/softmax.cuh"
#include "cuattn_internal.h"
#include "kernels/flash_fwd_launch.h"

namespace cuattn {
namespace flash_fwd {

// The traits tables: tile shapes per head-dim tile, each row with its reason, timed on an H200
// (BENCHMARKS.md has the rows and the alternatives tried). Shared-memory reads bound the key loop
// (an ldmatrix.x4 moves 512 bytes at 128 bytes a clock; an mma.sync takes about 1.5 SM clocks),
// so the rows are the ones that read least per mma:
// - a warp owning 32 query rows (two m16 tiles) loads each K and V fragment once for two mmas
//   (hd128, 64-key tiles: 80 ldmatrix.x4 per 256 mmas, against 144 at 16 rows a warp);
// - eight warps per CTA where shared memory allows: a K/V tile is copied in once for twice the
//   rows, and the one CTA still holds the eight warps an SM keeps at 255 registers a lane;
// - 64-key tiles: at 16 rows a warp, S then holds 8 independent mma chains, enough to cover the
//   mma latency (32-key tiles leave 4).
// Two tables (params.flash_tiles). Compact: four warps, at most 96 KiB, for every GPU (A100
// allows 163 KiB a block, sm_86/89 99 KiB). Wide: eight warps, up to 192 KiB, built for sm_90
// only. The launcher picks per shape (flash_fwd_launch).
enum class Tiles { kCompact, kWide };

template <int kHeadDim, Tiles kTiles>
struct Shape;
// kStages K/V tiles are in shared memory at once: one in use, kStages - 1 landing (a load has
// kStages - 1 tiles of compute to land in). Three where two compact CTAs still fit on an sm_90
// SM (A100 fits one of 96 KiB and two of 80 KiB). kStages = 1 splits K from V, as FlashAttention-2
// does: one K and one V tile, V loading while S = Q K^T and the softmax run and the next K while
// O += P V does (FlashAttention-2 switches before the softmax), two barriers a tile. It gives
// 64-key tiles in the shared memory of 32-key ones with two stages.
// hd64: 32 rows a warp (O: 64 registers, S: 64), 64 KiB. One table: on the H200 this row ran
// ahead of eight warps and of 128-key tiles at every length.
template <>
struct Shape<64, Tiles::kCompact> {
  static constexpr int kWarps = 4, kMTiles = 2, kBlockN = 64, kStages = 3;
};
// hd96: 32 rows a warp (O: 96 registers, S: 64), 96 KiB compact; wide as hd128 (untimed: the
// benchmark has no hd96 shape).
template <>
struct Shape<96, Tiles::kCompact> {
  static constexpr int kWarps = 4, kMTiles = 2, kBlockN = 64, kStages = 3;
};
template <>
struct Shape<96, Tiles::kWide> {
  static constexpr int kWarps = 8, kMTiles = 2, kBlockN = 64, kStages = 2;
};
// hd128: 32 rows a warp. Compact: 32-key tiles (O takes 128 registers, and S's 64 more for 64
// keys spill beside 3 stages), 80 KiB. Wide: 64-key tiles with 2 stages (255 registers, no
// spills; 3 stages spill), 128 KiB: on the H200 up to 11% faster than compact from 1024 queries
// unmasked, and up to 13% slower on short causal runs (fewer, longer CTAs).
template <>
struct Shape<128, Tiles::kCompact> {
  static constexpr int kWarps = 4, kMTiles = 2, kBlockN = 32, kStages = 3;
};
template <>
struct Shape<128, Tiles::kWide> {
  static constexpr int kWarps = 8, kMTiles = 2, kBlockN = 64, kStages = 2;
};
// hd192, hd256: O takes 96 or 128 registers per m16 tile, so a warp keeps 16 rows, and 64-key
// tiles: at hd256 on the H200 the former compact row (32-key tiles, two stages) ran 3-20% behind
// the wide one (64-key tiles, but also eight warps), and at 16 rows a warp 32 keys leave 4 mma
// chains. Compact: K and V in turns (kStages = 1), 72 and 96 KiB, two CTAs an sm_90 SM (at hd256
// the shape FlashAttention-2 runs on the H100 and on sm_86/89); untimed. Wide: 2 stages, 144 and
// 192 KiB, one CTA an SM. hd192 follows hd256.
template <>
struct Shape<192, Tiles::kCompact> {
  static constexpr int kWarps = 4, kMTiles = 1, kBlockN = 64, kStages = 1;
};
template <>
struct Shape<192, Tiles::kWide> {
  static constexpr int kWarps = 8, kMTiles = 1, kBlockN = 64, kStages = 2;
};
template <>
struct Shape<256, Tiles::kCompact> {
  static constexpr int kWarps = 4, kMTiles = 1, kBlockN = 64, kStages = 1;
};
template <>
struct Shape<256, Tiles::kWide> {
  static constexpr int kWarps = 8, kMTiles = 1, kBlockN = 64, kStages = 2;
};

// Whether head-dim tile kHeadDim has a wide row (hd64 has one table).
template <int kHeadDim>
constexpr bool kHasWideTiles = kHeadDim > 64;

// How a warp orders the work of a key tile. kPlain: S = Q K^T, the softmax, O += P V. kPingPong:
// the same, with the two halves of an eight-warp CTA taking turns on the tensor cores
// (PingPong). kPipelined: S of the next tile is computed in the same block of code as this
// tile's row maxes, so that in each warp the max reductions run while the tensor cores do (after
// FlashAttention-3's overlap of the softmax with the next Q K^T in a warpgroup); it holds two
// score tiles, and needs three stages (this tile's V, the next one's K and one loading). Tuning
// rows only, untimed; ptxas orders the block as it likes (at hd64 it issues the mmas first).
enum class Schedule { kPlain = 0, kPingPong = 1, kPipelined = 2 };

// A row's kFmaExp2Quarters (0 to 4, none where the row does not say): of every four n8 blocks of
// scores, how many take their exp2 on the FMA pipe (fma_exp2) rather than the MUFU, whose 16 a
// clock an SM are otherwise busy for 60% of the mma time at hd64 (30% at hd128): the two pipes
// then share the softmax's exponentials. Tuning rows only, untimed.
//
// A row's kPaired (false where the row does not say): the warps work in pairs on one block of
// kWarpRows query rows, each computing S for half of a key tile's keys and O for half of the head
// dim. A warp's P then needs its partner's half: the pair swaps the halves (and the rows' tile
// maxes, which both need before either exponentiates) through shared memory at its own named
// barrier, twice a tile. What it buys: each K and V fragment a warp loads feeds one mma per m16
// tile of its rows, so 32 rows a warp read half the shared memory per mma that 16 rows do, and
// at hd256 O of 32 rows takes 256 registers a lane, too many, while half of its columns take 128.
// At hd256 with 64-key tiles, paired warps of 32 rows read 96 ldmatrix.x4 per 256 mmas (plus the
// 2 KiB swap) against 144 for warps of 16 rows: under the mmas' own time on an H200 rather than
// over it (the 16-row loop is bound by shared-memory reads, BENCHMARKS.md). Tuning rows only,
// untimed.
//
// Tuning builds: build.rs turns `CUATTN_FLASH_TUNE=<tile>:<m tiles>,<key tile>,<stages>[,<warps>
// [,<schedule>[,<fma exp2>[,<paired>]]]]` (four warps, the plain schedule, no FMA exp2 and no
// pairs unless given, whatever the row it replaces has; schedule as in Schedule, fma exp2 as
// kFmaExp2Quarters, paired 0 or 1) from its environment into the macros below, and that row
// replaces the tile's wide row (its compact one at hd64) for the build, so one GPU call can time
// several rows from the same source (scripts/gpu-check.sh does, with the table forced so that
// every shape runs the tuned row). Never set in a release build; tests/ptxas.rs holds the
// tables' rows to no spills.
template <int kHeadDim, Tiles kTiles>
struct TunedShape {
  using type = Shape<kHeadDim, kTiles>;
};
#ifdef CUATTN_FLASH_TUNE_HD
template <>
struct TunedShape<CUATTN_FLASH_TUNE_HD,
                  kHasWideTiles<CUATTN_FLASH_TUNE_HD> ? Tiles::kWide : Tiles::kCompact> {
  struct type {
    static constexpr int kWarps = CUATTN_FLASH_TUNE_WARPS, kMTiles = CUATTN_FLASH_TUNE_MTILES,
                         kBlockN = CUATTN_FLASH_TUNE_BLOCKN, kStages = CUATTN_FLASH_TUNE_STAGES;
    static constexpr Schedule kSchedule = static_cast<Schedule>(CUATTN_FLASH_TUNE_SCHEDULE);
    static constexpr int kFmaExp2Quarters = CUATTN_FLASH_TUNE_FMA_EXP2;
    static constexpr bool kPaired = CUATTN_FLASH_TUNE_PAIRED != 0;
  };
};
#endif

// A row's kSchedule, kPlain where the row has none.
template <typename Row, typename = void>
struct RowSchedule : std::integral_constant<Schedule, Schedule::kPlain> {};
template <typename Row>
struct RowSchedule<Row, std::void_t<decltype(Row::kSchedule)>>
    : std::integral_constant<Schedule, Row::kSchedule> {};
// A row's kFmaExp2Quarters, 0 where the row has none.
template <typename Row, typename = void>
struct RowFmaExp2Quarters : std::integral_constant<int, 0> {};
template <typename Row>
struct RowFmaExp2Quarters<Row, std::void_t<decltype(Row::kFmaExp2Quarters)>>
    : std::integral_constant<int, Row::kFmaExp2Quarters> {};
// A row's kPaired, false where the row has none.
template <typename Row, typename = void>
struct RowPaired : std::false_type {};
template <typename Row>
struct RowPaired<Row, std::void_t<decltype(Row::kPaired)>>
    : std::integral_constant<bool, Row::kPaired> {};

template <int kHeadDim, Tiles kTiles>
struct Traits {
  using Row = typename TunedShape<kHeadDim, kTiles>::type;
  static constexpr int kWarps = Row::kWarps;
  static constexpr int kMTiles = Row::kMTiles;    // m16 tiles of query rows per warp
  static constexpr int kBlockN = Row::kBlockN;    // keys per K/V tile
  static constexpr int kStages = Row::kStages;    // K/V tiles in shared memory
  static constexpr bool kSplitKV = kStages == 1;  // K and V load in turns (see Shape)
  static constexpr Schedule kSchedule = RowSchedule<Row>::value;
  static constexpr int kFmaExp2Quarters = RowFmaExp2Quarters<Row>::value;
  static constexpr bool kPaired = RowPaired<Row>::value;
  static constexpr int kRowWarps = kPaired ? 2 : 1;  // warps sharing one block of query rows
  static constexpr int kWarpRows = kMmaM * kMTiles;  // query rows per warp
  static constexpr int kBlockM = kWarpRows * kWarps / kRowWarps;  // query rows per CTA
  static constexpr int kWarpKeys = kBlockN / kRowWarps;   // keys of a tile a warp computes S for
  static constexpr int kWarpCols = kHeadDim / kRowWarps;  // columns of O a warp accumulates
  static constexpr int kLaneRows = 2 * kMTiles;  // accumulator rows per lane: group, group + 8
  static constexpr int kThreads = kWarps * kWarpSize;
  // Eight warps per SM at least (two 4-warp CTAs): ptxas may use up to 255 registers a lane, and
  // chooses no tighter budget (left free, it capped hd128 at 168 registers and spilled).
  static constexpr int kMinBlocksPerSm = kWarps >= 8 ? 1 : 8 / kWarps;
  using QTile = SmemTile<kBlockM, kHeadDim>;   // sQ [kBlockM][kHeadDim], later O
  using KVTile = SmemTile<kBlockN, kHeadDim>;  // sK[stage], sV[stage] [kBlockN][kHeadDim]
  // A paired warp's swap areas: its P as A fragments (one 16-byte vector a lane per m16 tile and
  // k16 block of its keys), and one float a lane per accumulator row (tile maxes, at the end sums).
  static constexpr int kSwapPBytes = kPaired ? kMTiles * (kWarpKeys / kMmaK) * kWarpSize * 16 : 0;
  static constexpr int kSwapRowBytes = kPaired ? kLaneRows * kWarpSize * 4 : 0;
  static constexpr int kSwapBytes = kWarps * (kSwapPBytes + kSwapRowBytes);
  static constexpr int kSmemBytes = QTile::kBytes + 2 * kStages * KVTile::kBytes + kSwapBytes;
  // CTAs along the queries: the grid is (grid_x, heads, batch).
  static constexpr int grid_x(int seqlen_q) {
    return seqlen_q > 0 ? (seqlen_q + kBlockM - 1) / kBlockM : 0;
  }
  // Compact rows fit every GPU's opt-in limit (sm_86/89: 99 KiB a block); wide ones sm_90's
  // (227 KiB), with room for the static CtaRows.
  static_assert(kTiles == Tiles::kWide || kSmemBytes <= 96 * 1024, "a compact row fits 96 KiB");
  static_assert(kSmemBytes <= 226 * 1024, "a wide row fits sm_90's 227 KiB a block");
  static constexpr int kScoreBlocks = kWarpKeys / kMmaN;  // n8 blocks of S per m16 tile
  static constexpr int kOutBlocks = kWarpCols / kMmaN;    // n8 blocks of O per m16 tile
  static_assert(kHeadDim % kMmaK == 0, "head-dim tiles are whole k16 steps");
  static_assert(kBlockN % kMmaK == 0, "P V consumes a key tile in k16 steps");
  static_assert(kBlockM % 8 == 0 && kBlockN % 8 == 0, "tiles are whole swizzle periods");
  static_assert(kStages >= 1, "kStages K/V tiles, or a split K and V (1)");
  static_assert(kSchedule != Schedule::kPingPong || (kWarps == 8 && !kSplitKV),
                "ping-pong: two halves of four warps (one on each SM sub-partition) and staged "
                "K/V tiles (a split row's mid-tile barrier would line the halves up again)");
  static_assert(kSchedule != Schedule::kPipelined || kStages >= 3,
                "pipelined: this tile's V, the next tile's K and a tile loading");
  static_assert(kFmaExp2Quarters >= 0 && kFmaExp2Quarters <= 4, "quarters of the score blocks");
  static_assert(!kPaired ||
                    (kSchedule == Schedule::kPlain && kWarps % 2 == 0 && kWarps / 2 + 1 <= 16 &&
                     kWarpKeys % kMmaK == 0 && kOutBlocks % KVTile::kAtomChunks == 0),
                "pairs: the plain schedule, whole pairs each with a named barrier (1-15), each "
                "half's keys whole k16 blocks of P, and each half's columns whole atoms of V's "
                "tile (its ldmatrix cursor is shifted by whole atoms)");
};

// Ping-pong (Schedule::kPingPong): the two halves of the CTA's warps take turns on the tensor
// cores, so that one half's softmax runs while the other half's mmas do (after FlashAttention-3's
// ping-pong, which turns once an iteration with S(j) and P V(j - 1) issued together on wgmma; here
// twice a tile, so each softmax hides under one mma phase of the other half). Each half waits at
// its own named barrier before each of its two mma phases of a tile (S = Q K^T, then O += P V) and
// arrives at the other half's once the phase is issued. Barrier 1 is the first half's, 2 the
// second's; the second half arrives once at the start so that the first goes first, and skips its
// very last hand-over. Tuning rows only (untimed); without kEnabled every call is empty.
template <bool kEnabled, int kThreads>
class PingPong {
 public:
  __device__ explicit PingPong(bool second_half) : second_half_(second_half) {}
  // Gives the first half the first turn (in a CTA that has key tiles).
  __device__ void start(int num_tiles) const {
    if constexpr (kEnabled) {
      if (second_half_ && num_tiles > 0) {
        named_barrier_arrive(kFirstHalf, kThreads);
      }
    }
  }
  // Waits for this half's turn.
  __device__ void take_turn() const {
    if constexpr (kEnabled) {
      if (second_half_) {  // constant barrier ids: ptxas reserves only the two
        named_barrier_sync(kSecondHalf, kThreads);
      } else {
        named_barrier_sync(kFirstHalf, kThreads);
      }
    }
  }
  // Hands the turn to the other half; `another_turn` false on the second half's last turn.
  __device__ void hand_over(bool another_turn = true) const {
    if constexpr (kEnabled) {
      if (!second_half_) {
        named_barrier_arrive(kSecondHalf, kThreads);
      } else if (another_turn) {
        named_barrier_arrive(kFirstHalf, kThreads);
      }
    }
  }

 private:
  static constexpr unsigned kFirstHalf = 1, kSecondHalf = 2;
  bool second_half_;
};

// Where a CTA's rows live, worked out once and parked in shared memory: the key loop needs every
// register, so nothing of this is held through it. Key row j of the CTA's range is at k + j *
// k_row_stride (v likewise); output row r at out + r * out_row_stride, its LSE at lse[r] (null
// when not requested), for r < out_rows.
struct CtaRows {
  const void* k;
  const void* v;
  void* out;
  float* lse;
  int out_rows;
};

template <typename T, int kHeadDim, Tiles kTiles>
__global__ void __launch_bounds__(Traits<kHeadDim, kTiles>::kThreads,
                                  Traits<kHeadDim, kTiles>::kMinBlocksPerSm)
    flash_fwd_kernel(const cuattn_attention_params p) {
#ifdef __CUDA_ARCH__
  // Wide tiles are built for sm_90 only; the launcher never runs them elsewhere.
  if (kTiles == Tiles::kWide && __CUDA_ARCH__ != 900) {
    __trap();
    return;
  }
#endif
  using Tr = Traits<kHeadDim, kTiles>;
  using QTile = typename Tr::QTile;
  using KVTile = typename Tr::KVTile;
  constexpr int kBlockM = Tr::kBlockM;
  constexpr int kBlockN = Tr::kBlockN;
  constexpr int kMTiles = Tr::kMTiles;
  constexpr int kLaneRows = Tr::kLaneRows;
  CUATTN_DYNAMIC_SMEM(unsigned char, smem);
  unsigned char* sQ = smem;
  unsigned char* sKV = sQ + QTile::kBytes;  // [stage][K, V] tiles
  auto sK = [&](int stage) { return sKV + (2 * stage) * KVTile::kBytes; };
  auto sV = [&](int stage) { return sKV + (2 * stage + 1) * KVTile::kBytes; };

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int group = lane / 4;  // accumulator rows group and group + 8 of each m16 tile
  const int quad_lane = lane % 4;
  // The block of query rows the warp works on, and, in a paired row, which half of each key tile
  // (for S) and of the head dim (for O) is its own; its partner is warp ^ 1.
  const int row_warp = warp / Tr::kRowWarps;
  const int pair_half = warp % Tr::kRowWarps;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  // First query row of the CTA. The last query tile comes first: under a causal mask later rows
  // see more keys, and CTAs start in blockIdx.x order, so the longest ones start first and the
  // grid ends on short ones rather than on a tail of long ones.
  const int row0 = static_cast<int>(gridDim.x - 1 - blockIdx.x) * kBlockM;

  const SequenceSpan seq = sequence_span(p, batch);
  if (row0 >= seq.len_q) {
    return;  // the whole CTA leaves before any barrier (varlen: a shorter sequence)
  }
  // Tiles outside the keys any row of the CTA sees are never loaded (each warp narrows this to its
  // own rows in the loop).
  const CtaKeys cta_range = cta_keys(p, seq, row0, kBlockM);
  const int keys_begin = cta_range.any.begin;
  const int keys_end = cta_range.any.end;
  const int num_tiles = keys_end > keys_begin ? (keys_end - keys_begin + kBlockN - 1) / kBlockN : 0;

  __shared__ CtaRows cta;
  if (threadIdx.x == 0) {
    const HeadSlices<T> slices = head_slices<T>(p, seq, head, row0);
    cta.k = slices.k + keys_begin * p.k_row_stride;
    cta.v = slices.v + keys_begin * p.v_row_stride;
    cta.out = slices.out;
    cta.lse = p.maybe_lse == nullptr ? nullptr : p.maybe_lse + seq.lse_offset(p, head, row0);
    cta.out_rows = min(seq.len_q - row0, kBlockM);
  }
  // Every thread needs only q; computed apart from thread 0's slices (one call before the branch
  // kept the other pointers live and spilled at hd96).
  const T* q = head_slices<T>(p, seq, head, row0).q;
  __syncthreads();  // cta is written

  // CTA tile row of this lane's accumulator row r: m16 tile r / 2, row group (+ 8 for odd r).
  auto tile_row = [&](int r) {
    return row_warp * Tr::kWarpRows + (r / 2) * kMmaM + group + (r % 2) * 8;
  };

  // Issues the loads of tile `tile`'s K rows into sK(stage) and/or its V rows into sV(stage)
  // (`parts`: kLoadK | kLoadV); rows past the sequence are zero-filled.
  constexpr unsigned kLoadK = 1, kLoadV = 2;
  auto load_kv = [&](int tile, int stage, unsigned parts) {
    const int j0 = tile * kBlockN;  // first key row of the tile in the CTA's range
    const int valid_rows = seq.len_k - keys_begin - j0;
    const TileLoader<T, kBlockN, kHeadDim, Tr::kThreads> kv_loader;
    if (parts & kLoadK) {
      kv_loader.load(sK(stage), static_cast<const T*>(cta.k) + j0 * p.k_row_stride, p.k_row_stride,
                     valid_rows, p.head_dim);
    }
    if (parts & kLoadV) {
      kv_loader.load(sV(stage), static_cast<const T*>(cta.v) + j0 * p.v_row_stride, p.v_row_stride,
                     valid_rows, p.head_dim);
    }
  };

  // Prologue. Staged rows: Q and tile 0 in group 0, tiles 1 .. kStages - 2 in one group each
  // (groups may be empty); tile t always goes to stage t % kStages. Split rows: Q and tile 0's K.
  constexpr int kStages = Tr::kStages;
  constexpr bool kSplitKV = Tr::kSplitKV;
  load_tile_async<T, kBlockM, kHeadDim, Tr::kThreads>(sQ, q, p.q_row_stride, seq.len_q - row0,
                                                      p.head_dim);
  if constexpr (kSplitKV) {
    if (num_tiles > 0) {
      load_kv(0, 0, kLoadK);
    }
    cp_async_commit_group();
  } else {
    for (int tile = 0; tile < kStages - 1; ++tile) {
      if (tile < num_tiles) {
        load_kv(tile, tile, kLoadK | kLoadV);
      }
      cp_async_commit_group();
    }
  }

  OnlineSoftmax softmax[kLaneRows];
  float acc[kMTiles][Tr::kOutBlocks][kMmaCRegs] = {};  // O: [kWarpRows x kWarpCols] per warp, fp32
  using Scores = float[kMTiles][Tr::kScoreBlocks][kMmaCRegs];  // S, then P: [kWarpRows x kWarpKeys]
  constexpr int kPBlocks = Tr::kWarpKeys / kMmaK;              // k16 blocks of a warp's P
  using PFragments = uint32_t[kMTiles][kPBlocks][kMmaARegs];   // P as A fragments

  // Each lane's fixed place in the tiles its ldmatrix loads start from (see the loads below): in
  // K and V the warp's own keys, in V its own columns (a paired warp builds its cursor at the
  // partner's keys in V where it uses it, rather than hold a register through the loop).
  const typename QTile::Cursor q_cursor =
      QTile::cursor(row_warp * Tr::kWarpRows + lane % 16, lane / 16);
  const typename KVTile::Cursor k_cursor =
      KVTile::cursor(pair_half * Tr::kWarpKeys + (lane / 16) * kMmaN + lane % 8, (lane / 8) % 2);
  const typename KVTile::Cursor v_cursor =
      KVTile::cursor(pair_half * Tr::kWarpKeys + lane % 16, pair_half * Tr::kOutBlocks + lane / 16);

  // This warp's rows against key tile `tile`: a tile none of them sees is skipped (the warp only
  // loads), and a tile all of them see whole needs no mask. Under a causal mask or a window a
  // CTA's boundary tiles are mostly such tiles for most of its warps. A warp is past the sequence
  // when it is short.
  struct WarpTile {
    bool sees;      // some row of the warp sees a key of the tile
    bool boundary;  // the element mask runs: some row does not see every key of the tile
  };
  auto warp_tile = [&](int tile) {
    const int n0 = keys_begin + tile * kBlockN;
    const CtaKeys warp_range = cta_keys(p, seq, row0 + row_warp * Tr::kWarpRows, Tr::kWarpRows);
    return WarpTile{row0 + row_warp * Tr::kWarpRows < seq.len_q && n0 < warp_range.any.end &&
                        n0 + kBlockN > warp_range.any.begin,
                    n0 < warp_range.every.begin || n0 + kBlockN > warp_range.every.end};
  };

  // S = Q K^T of the tile in `stage`, from zero: [kWarpRows x kWarpKeys] per warp, kScoreBlocks n8
  // accumulators per m16 tile. Each k16 step loads all its fragments before its mmas, so the
  // loads' latency overlaps, and each K fragment serves every m16 tile of the warp.
  auto compute_scores = [&](Scores& s, int stage) {
#pragma unroll
    for (int k16 = 0; k16 < kHeadDim / kMmaK; ++k16) {
      // A: Q rows warp*kWarpRows + 16*m + lane%16, columns 16*k16 + 8*(lane/16).
      uint32_t a[kMTiles][kMmaARegs];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
        ldmatrix_x4(a[m], sQ + q_cursor.at(m * kMmaM, 2 * k16));
      }
      // B for two n8 blocks per ldmatrix: key rows 8*n8 + lane%8 (+8 for lanes 16-31) of the
      // warp's keys, columns 16*k16 + 8*((lane/8)%2); registers {0,1} feed block n8 and {2,3}
      // block n8+1.
      uint32_t b[Tr::kScoreBlocks / 2][4];
#pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; n8 += 2) {
        ldmatrix_x4(b[n8 / 2], sK(stage) + k_cursor.at(n8 * kMmaN, 2 * k16));
      }
#pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; n8 += 2) {
        const uint32_t b0[kMmaBRegs] = {b[n8 / 2][0], b[n8 / 2][1]};
        const uint32_t b1[kMmaBRegs] = {b[n8 / 2][2], b[n8 / 2][3]};
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          if (k16 == 0) {  // a zero C: the mma starts the sum (no register clears)
            const float zero[kMmaCRegs] = {};
            mma_m16n8k16<T>(s[m][n8], a[m], b0, zero);
            mma_m16n8k16<T>(s[m][n8 + 1], a[m], b1, zero);
          } else {
            mma_m16n8k16<T>(s[m][n8], a[m], b0, s[m][n8]);
            mma_m16n8k16<T>(s[m][n8 + 1], a[m], b1, s[m][n8 + 1]);
          }
        }
      }
    }
  };

  // Turns the dot products of tile `tile` into base-2 scores: S in base 2 is s * exp_scale, and
  // the returned exp_scale is what the softmax's FFMA multiplies by. With a positive scale and no
  // cap that product is left to the softmax's one FFMA per score (2^(s * exp_scale - max)), the
  // raw tile max scaled being the scaled tile max; otherwise S is mapped here and exp_scale is 1.
  // One branch per tile, not per score. Then the element mask (-inf, the same in either unit), on
  // a boundary tile only. Lane row r of the accumulators is s[r/2] elements 2*(r%2) and
  // 2*(r%2) + 1.
  auto map_and_mask = [&](Scores& s, int tile, bool boundary) {
    // Written here, ptxas computes it before the loop anyway; written there, it cost registers.
    const ScoreMap score_map = ScoreMap::of(p);
    const bool scaled_by_softmax = !score_map.capped() && score_map.scale_log2 > 0.0f;
    auto map_each = [&](auto map) {
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
        for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
#pragma unroll
          for (int i = 0; i < kMmaCRegs; ++i) {
            s[m][n8][i] = map(s[m][n8][i]);
          }
        }
      }
    };
    if (score_map.capped()) {  // one branch a tile, so that the scores' tanhs overlap
      map_each([&](float dot) { return score_map.capped_score(dot); });
    } else if (!scaled_by_softmax) {
      map_each([&](float dot) { return score_map.scaled_score(dot); });
    }
    if (boundary) {
      // The warp's first key.
      const int n0 = keys_begin + tile * kBlockN + pair_half * Tr::kWarpKeys;
#pragma unroll
      for (int r = 0; r < kLaneRows; ++r) {
        // The row's visible keys as columns of the warp's keys of this tile: [lo, hi), small ints.
        const KeyRange keys =
            visible_keys(row0 + tile_row(r), seq.len_q, seq.len_k, p.window_left, p.window_right);
        const int lo = max(keys.begin - n0, 0) - 2 * quad_lane;
        const int hi = min(keys.end - n0, Tr::kWarpKeys) - 2 * quad_lane;
#pragma unroll
        for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const int col = n8 * kMmaN + j;  // this lane's column, less 2 * quad_lane
            if (col < lo || col >= hi) {
              s[r / 2][n8][2 * (r % 2) + j] = -INFINITY;
            }
          }
        }
      }
    }
    return scaled_by_softmax ? score_map.scale_log2 : 1.0f;
  };

  // Paired rows: the two warps of a pair meet at their own named barrier (1 + row_warp; 0 is
  // __syncthreads'), and swap through their areas past the K/V stages. A warp writes its area
  // only after the CTA's barrier that begins a tile (or the loop's end), which its partner
  // reaches only once it has read what the area held before.
  unsigned char* swap_areas = sKV + 2 * kStages * KVTile::kBytes;
  auto swap_p_area = [&](int w) { return swap_areas + w * (Tr::kSwapPBytes + Tr::kSwapRowBytes); };
  auto swap_row_area = [&](int w) {
    return reinterpret_cast<float*>(swap_p_area(w) + Tr::kSwapPBytes);
  };
  // Constant ids, one call per pair of which the warp runs its own: with the id in a register
  // ptxas reserves all 16 barriers, which may cost CTAs an SM (cudaOccResult's
  // blockLimitBarriers).
  auto pair_sync = [&] {
#pragma unroll
    for (int pair = 0; pair < Tr::kWarps / 2; ++pair) {
      if (row_warp == pair) {
        named_barrier_sync(1 + pair, 2 * kWarpSize);
      }
    }
  };
  // Paired rows: gives the partner this lane's value of each lane row (every lane of a quad holds
  // its rows' values), and returns in `theirs` the partner's, which its same lane gave. (Not a
  // generic lambda: nvcc 13.0's cicc crashes on one here.)
  auto swap_with_partner = [&](const float(&mine)[kLaneRows], float(&theirs)[kLaneRows]) {
    float* to_partner = swap_row_area(warp);
    const float* from_partner = swap_row_area(warp ^ 1);
#pragma unroll
    for (int r = 0; r < kLaneRows; ++r) {
      to_partner[r * kWarpSize + lane] = mine[r];
    }
    pair_sync();
#pragma unroll
    for (int r = 0; r < kLaneRows; ++r) {
      theirs[r] = from_partner[r * kWarpSize + lane];
    }
  };

  // The max half of the online softmax: each lane row's tile max (reduced over its quad and,
  // paired, over the partner's keys too, in base 2), and whether some row of the warp outgrew its
  // running max by more than OnlineSoftmax::kMaxLag (warp-uniform): only then does the running
  // max move. Both warps of a pair get the same maxes, so they keep the same running maxes and
  // their halves of P share one scale.
  auto tile_maxes = [&](const Scores& s, float exp_scale, float(&tile_max)[kLaneRows]) {
#pragma unroll
    for (int r = 0; r < kLaneRows; ++r) {
      const float* row_s = &s[r / 2][0][2 * (r % 2)];
      tile_max[r] = -INFINITY;
#pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
        tile_max[r] = fmaxf(tile_max[r], fmaxf(row_s[n8 * kMmaCRegs], row_s[n8 * kMmaCRegs + 1]));
      }
      tile_max[r] = quad_max(tile_max[r]);
    }
    if constexpr (Tr::kPaired) {
      float partner_max[kLaneRows];
      swap_with_partner(tile_max, partner_max);
#pragma unroll
      for (int r = 0; r < kLaneRows; ++r) {
        tile_max[r] = fmaxf(tile_max[r], partner_max[r]);
      }
    }
    bool outgrown = false;
#pragma unroll
    for (int r = 0; r < kLaneRows; ++r) {
      tile_max[r] *= exp_scale;  // exp_scale > 0 keeps it the max
      outgrown |= softmax[r].outgrown_by(tile_max[r]);
    }
    return __any_sync(kMathFullMask, outgrown) != 0;
  };

  // The other half: P = 2^(S - max) in place, and the rows' sums.
  auto exponentiate = [&](Scores& s, float exp_scale) {
#pragma unroll
    for (int r = 0; r < kLaneRows; ++r) {
      float partial[2] = {0.0f, 0.0f};  // two short addition chains rather than one long one
#pragma unroll
      for (int n8 = 0; n8 < Tr::kScoreBlocks; ++n8) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          float& score = s[r / 2][n8][2 * (r % 2) + j];
          score = n8 % 4 < Tr::kFmaExp2Quarters ? softmax[r].prob_on_fma(score, exp_scale)
                                                : softmax[r].prob(score, exp_scale);
          partial[j] += score;
        }
      }
      softmax[r].sum += partial[0] + partial[1];
    }
  };

  // Moves the running maxes to the tile's (when tile_maxes said so), rescaling O and the sums.
  auto absorb_tile_max = [&](const float(&tile_max)[kLaneRows]) {
#pragma unroll
    for (int r = 0; r < kLaneRows; ++r) {
      const float correction = softmax[r].absorb_max(tile_max[r]);
#pragma unroll
      for (int d8 = 0; d8 < Tr::kOutBlocks; ++d8) {
        acc[r / 2][d8][2 * (r % 2)] *= correction;
        acc[r / 2][d8][2 * (r % 2) + 1] *= correction;
      }
    }
  };

  // P's A fragment for m16 tile m and k16 block k16 of the warp's keys: two n8 accumulator blocks
  // of S are, element for element, the A fragment of one k16 block of P (rows group/group+8,
  // columns 2q, 2q+1 and 8+2q, 9+2q).
  auto pack_p = [&](const Scores& s, int m, int k16, uint32_t(&a)[kMmaARegs]) {
    const float* lo = s[m][2 * k16];
    const float* hi = s[m][2 * k16 + 1];
    a[0] = pack2<T>(lo[0], lo[1]);
    a[1] = pack2<T>(lo[2], lo[3]);
    a[2] = pack2<T>(hi[0], hi[1]);
    a[3] = pack2<T>(hi[2], hi[3]);
  };

  // O += P V with the tile in `stage`, over kPBlocks k16 blocks of keys: p_fragment(m, k16, a)
  // gives P's A fragment of block k16, and `v` is the lane's cursor at the first of those keys
  // (and at the warp's columns). Each V fragment serves every m16 tile of the warp.
  auto accumulate_output = [&](auto&& p_fragment, const typename KVTile::Cursor& v, int stage) {
#pragma unroll
    for (int k16 = 0; k16 < kPBlocks; ++k16) {
      uint32_t a[kMTiles][kMmaARegs];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
        p_fragment(m, k16, a[m]);
      }
      // B = V [keys 16*k16 + lane%16][columns 8*(d8 + lane/16)..], stored [key][d]: .trans;
      // registers {0,1} feed block d8 and {2,3} block d8+1. Loaded kVBatch pairs at a time.
      constexpr int kVBatch = Tr::kOutBlocks % 8 == 0 ? 4 : 2;
      static_assert(Tr::kOutBlocks % (2 * kVBatch) == 0, "V fragments come in whole batches");
#pragma unroll
      for (int d8 = 0; d8 < Tr::kOutBlocks; d8 += 2 * kVBatch) {
        uint32_t b[kVBatch][4];
#pragma unroll
        for (int j = 0; j < kVBatch; ++j) {
          ldmatrix_x4_trans(b[j], sV(stage) + v.at(k16 * kMmaK, d8 + 2 * j));
        }
#pragma unroll
        for (int j = 0; j < kVBatch; ++j) {
          const uint32_t b0[kMmaBRegs] = {b[j][0], b[j][1]};
          const uint32_t b1[kMmaBRegs] = {b[j][2], b[j][3]};
#pragma unroll
          for (int m = 0; m < kMTiles; ++m) {
            mma_m16n8k16<T>(acc[m][d8 + 2 * j], a[m], b0, acc[m][d8 + 2 * j]);
            mma_m16n8k16<T>(acc[m][d8 + 2 * j + 1], a[m], b1, acc[m][d8 + 2 * j + 1]);
          }
        }
      }
    }
  };

  // O += P V for the warp's P in s (its own keys), and, paired, for the partner's: the warp's P
  // goes to its swap area as A fragments, its own keys' P V runs, and after the pair meets the
  // partner's fragments come back for the partner's keys (V rows of the other half).
  auto accumulate_tile = [&](const Scores& s, int stage) {
    if constexpr (Tr::kPaired) {
      PFragments own;
      uint4* mine = reinterpret_cast<uint4*>(swap_p_area(warp));
      const uint4* theirs = reinterpret_cast<const uint4*>(swap_p_area(warp ^ 1));
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
        for (int k16 = 0; k16 < kPBlocks; ++k16) {
          pack_p(s, m, k16, own[m][k16]);
          st_shared_v4(mine + (m * kPBlocks + k16) * kWarpSize + lane,
                       make_uint4(own[m][k16][0], own[m][k16][1], own[m][k16][2], own[m][k16][3]));
        }
      }
      accumulate_output(
          [&](int m, int k16, uint32_t(&a)[kMmaARegs]) {
#pragma unroll
            for (int i = 0; i < kMmaARegs; ++i) {
              a[i] = own[m][k16][i];
            }
          },
          v_cursor, stage);
      pair_sync();
      const typename KVTile::Cursor partner_v = KVTile::cursor(
          (1 - pair_half) * Tr::kWarpKeys + lane % 16, pair_half * Tr::kOutBlocks + lane / 16);
      accumulate_output(
          [&](int m, int k16, uint32_t(&a)[kMmaARegs]) {
            const uint4 f = ld_shared_v4(theirs + (m * kPBlocks + k16) * kWarpSize + lane);
            a[0] = f.x;
            a[1] = f.y;
            a[2] = f.z;
            a[3] = f.w;
          },
          partner_v, stage);
    } else {
      accumulate_output([&](int m, int k16, uint32_t(&a)[kMmaARegs]) { pack_p(s, m, k16, a); },
                        v_cursor, stage);
    }
  };

  if constexpr (Tr::kSchedule == Schedule::kPipelined) {
    // Tile t lives in stage t % kStages. Iteration t uses two tiles: V of t (P V) and K of t + 1
    // (S of the next tile, computed beside this tile's row maxes); the third stage takes
    // tile t + kStages - 1 once every warp is done with tile t - 1. S of tile 0 comes first.
    static_assert(kStages >= 3, "two tiles in use and one loading");
    Scores s_even, s_odd;  // S of the even and of the odd tiles
    if (num_tiles > 0) {
      cp_async_wait_group<kStages - 2>();  // Q and tile 0 (group 0) have landed
      __syncthreads();
      if (warp_tile(0).sees) {
        compute_scores(s_even, 0);
      }
    }
    // One iteration: s holds tile's S (when the warp sees the tile), s_next receives tile + 1's.
    auto iteration = [&](int tile, Scores& s, Scores& s_next) {
      cp_async_wait_group<kStages - 3>();  // tile + 1 has landed (younger ones may fly)
      __syncthreads();                     // and every warp is done with tile - 1's stage
      if (tile + kStages - 1 < num_tiles) {
        load_kv(tile + kStages - 1, (tile + kStages - 1) % kStages, kLoadK | kLoadV);
      }
      cp_async_commit_group();
      const WarpTile now = warp_tile(tile);
      const bool next = tile + 1 < num_tiles && warp_tile(tile + 1).sees;
      const int next_stage = (tile + 1) % kStages;
      if (now.sees) {
        const float exp_scale = map_and_mask(s, tile, now.boundary);
        // The next tile's mmas and this tile's row maxes in one block of code, which ptxas may
        // order as it likes (at hd64 it issues the mmas first: the max reductions' dependent
        // chains then run while the tensor cores drain them). The exp2s then share a block with
        // P V, as in the plain schedule.
        float tile_max[kLaneRows];
        bool move;
        if (next) {
          compute_scores(s_next, next_stage);
          move = tile_maxes(s, exp_scale, tile_max);
        } else {
          move = tile_maxes(s, exp_scale, tile_max);
        }
        if (move) {
          absorb_tile_max(tile_max);
        }
        exponentiate(s, exp_scale);
        accumulate_tile(s, tile % kStages);
      } else if (next) {
        compute_scores(s_next, next_stage);
      }
    };
    // Unrolled by two, so that the two score tiles swap roles by name rather than by copying
    // (ptxas still adds some register moves).
    int tile = 0;
    for (; tile + 1 < num_tiles; tile += 2) {
      iteration(tile, s_even, s_odd);
      iteration(tile + 1, s_odd, s_even);
    }
    if (tile < num_tiles) {
      iteration(tile, s_even, s_odd);
    }
  } else {
    const PingPong<Tr::kSchedule == Schedule::kPingPong, Tr::kThreads> turns(warp >=
                                                                             Tr::kWarps / 2);
    turns.start(num_tiles);
    for (int tile = 0; tile < num_tiles; ++tile) {
      const int stage = tile % kStages;
      if constexpr (kSplitKV) {
        // This tile's K has landed (the one group in flight), and past the barrier every warp is
        // done with the previous tile's V: this tile's V loads while S is computed.
        cp_async_wait_group<0>();
        __syncthreads();
        load_kv(tile, stage, kLoadV);
        cp_async_commit_group();
      } else {
        // This tile has landed (the kStages - 2 younger groups may still be in flight), and past
        // the barrier every warp is done with the previous tile, whose stage takes tile + kStages
        // - 1: one barrier per tile.
        cp_async_wait_group<kStages - 2>();
        __syncthreads();
        if (tile + kStages - 1 < num_tiles) {
          load_kv(tile + kStages - 1, (tile + kStages - 1) % kStages, kLoadK | kLoadV);
        }
        cp_async_commit_group();
      }
      const WarpTile now = warp_tile(tile);
      Scores s;

      turns.take_turn();
      if (now.sees) {
        compute_scores(s, stage);
      }
      // This group's S is issued: the other half of the CTA takes the tensor cores.
      turns.hand_over();

      if (now.sees) {
        const float exp_scale = map_and_mask(s, tile, now.boundary);
        // Online softmax: the running max moves (and O and the sums are rescaled) only when some
        // row of the warp outgrew it by more than OnlineSoftmax::kMaxLag.
        float tile_max[kLaneRows];
        if (tile_maxes(s, exp_scale, tile_max)) {
          absorb_tile_max(tile_max);
        }
        exponentiate(s, exp_scale);
      }

      if constexpr (kSplitKV) {
        // V has landed, and past the barrier every warp is done with K: the next tile's K loads
        // while P V runs.
        cp_async_wait_group<0>();
        __syncthreads();
        if (tile + 1 < num_tiles) {
          load_kv(tile + 1, stage, kLoadK);
        }
        cp_async_commit_group();
      }
      turns.take_turn();
      if (now.sees) {
        accumulate_tile(s, stage);
      }
      // The last turn of the second half hands over to nobody (no barrier may end the kernel
      // half complete).
      turns.hand_over(tile + 1 < num_tiles);
    }
  }
  // Nothing may still land in shared memory while O is staged there, and with no key tile the
  // loop's barriers never ordered the Q copies of other warps before this warp's writes.
  cp_async_wait_all();
  __syncthreads();

  // Epilogue: O /= sum into this warp's own rows and columns of sQ (only this warp's pair read
  // those rows), then 16-byte stores of them; rows past the sequence and columns past head_dim are
  // not written. Paired, a row's sum is the two warps' sums over their keys.
  const int valid_rows = cta.out_rows;
  float row_sums[kLaneRows];
#pragma unroll
  for (int r = 0; r < kLaneRows; ++r) {
    row_sums[r] = quad_sum(softmax[r].sum);
  }
  if constexpr (Tr::kPaired) {
    float partner_sums[kLaneRows];
    swap_with_partner(row_sums, partner_sums);
#pragma unroll
    for (int r = 0; r < kLaneRows; ++r) {
      row_sums[r] += partner_sums[r];
    }
  }
#pragma unroll
  for (int r = 0; r < kLaneRows; ++r) {
    softmax[r].sum = row_sums[r];
    const float inv_sum = softmax[r].inv_sum();
#pragma unroll
    for (int d8 = 0; d8 < Tr::kOutBlocks; ++d8) {
      const float* o = &acc[r / 2][d8][2 * (r % 2)];
      const uint32_t pair = pack2<T>(o[0] * inv_sum, o[1] * inv_sum);
      unsigned char* chunk = static_cast<unsigned char*>(
          QTile::chunk_ptr(sQ, tile_row(r), pair_half * Tr::kOutBlocks + d8));
      memcpy(chunk + 2 * quad_lane * sizeof(T), &pair, sizeof(pair));
    }
    if (cta.lse != nullptr && quad_lane == 0 && pair_half == 0 && tile_row(r) < valid_rows) {
      cta.lse[tile_row(r)] = softmax[r].lse();
    }
  }
  __syncwarp();
  T* out = static_cast<T*>(cta.out);
  const int valid_chunks = p.head_dim / kChunkElems;
  constexpr int kWarpChunks = QTile::kChunksPerRow / Tr::kRowWarps;  // the warp's chunks of a row
  for (int i = lane; i < Tr::kWarpRows * kWarpChunks; i += kWarpSize) {
    const int row = row_warp * Tr::kWarpRows + i / kWarpChunks;
    const int chunk = pair_half * kWarpChunks + i % kWarpChunks;
    if (row < valid_rows && chunk < valid_chunks) {
      st_global_v4(out + row * p.out_row_stride + chunk * kChunkElems,
                   ld_shared_v4(QTile::chunk_ptr(sQ, row, chunk)));
    }
  }
}

}  // namespace flash_fwd

inline namespace CUATTN_BUILD_NAMESPACE {

template <typename T, int kHeadDim, flash_fwd::Tiles kTiles>
cuattn_status flash_fwd_launch_tiles(const cuattn_attention_params& p, void* stream) {
  using Tr = flash_fwd::Traits<kHeadDim, kTiles>;
  const dim3 grid(Tr::grid_x(p.seqlen_q), p.heads, p.batch);
  return launch_kernel("attention_flash", flash_fwd::flash_fwd_kernel<T, kHeadDim, kTiles>, grid,
                       dim3(Tr::kThreads), Tr::kSmemBytes, stream, p);
}

// The tile table of a launch: params.flash_tiles when it forces one, else on sm_90 the
// faster one for the shape as timed on an H200 (cuattn.h states the rule), else compact. Wide
// kernels hold code only in the sm_90a pass (a trap elsewhere), so they run only where the GPU
// runs that pass: an sm_90 GPU that the driver gives the compute_80 PTX instead
// (CUDA_FORCE_PTX_JIT=1) gets compact tiles. Tile 64 has one table and asks nothing of the device.
template <typename T, int kHeadDim>
cuattn_status flash_fwd_wide_tiles(const cuattn_attention_params& p, bool* wide) {
  *wide = false;
  if constexpr (flash_fwd::kHasWideTiles<kHeadDim>) {
    const int32_t setting = p.flash_tiles;
    if (setting == CUATTN_FLASH_TILES_COMPACT) {
      return CUATTN_OK;
    }
    int arch = 0;
    const cuattn_status status =
        kernel_virtual_arch<flash_fwd::flash_fwd_kernel<T, kHeadDim, flash_fwd::Tiles::kWide>>(
            &arch);
    if (status != CUATTN_OK) {
      return status;
    }
    if (setting == CUATTN_FLASH_TILES_WIDE) {
      if (arch != 90) {
        return fail(CUATTN_ERROR_UNSUPPORTED,
                    "attention_flash: wide tiles (flash_tiles) run only where the GPU "
                    "runs cuattn's sm_90a code (H100, H200); this one runs its compute_%d code",
                    arch);
      }
      *wide = true;
      return CUATTN_OK;
    }
    const bool masked = p.window_left >= 0 || p.window_right >= 0;
    *wide = arch == 90 && (kHeadDim > 128 || p.seqlen_q >= (masked ? 8192 : 1024));
  }
  (void)p;
  return CUATTN_OK;
}

template <int kHeadDim, flash_fwd::Tiles kTiles>
void flash_fwd_fill_plan(const cuattn_attention_params& p, cuattn_flash_plan* plan) {
  using Tr = flash_fwd::Traits<kHeadDim, kTiles>;
  plan->tiles =
      kTiles == flash_fwd::Tiles::kWide ? CUATTN_FLASH_TILES_WIDE : CUATTN_FLASH_TILES_COMPACT;
  plan->head_dim_tile = kHeadDim;
  plan->block_rows = Tr::kBlockM;
  plan->block_keys = Tr::kBlockN;
  plan->stages = Tr::kStages;
  plan->threads = Tr::kThreads;
  plan->smem_bytes = Tr::kSmemBytes;
  plan->grid_x = Tr::grid_x(p.seqlen_q);
}

// f(std::integral_constant<Tiles, table>{}) for the table a launch of T with p runs
// (flash_fwd_wide_tiles): the one choice behind both the launch and its plan.
template <typename T, int kHeadDim, typename F>
cuattn_status with_flash_tiles(const cuattn_attention_params& p, F&& f) {
  using flash_fwd::Tiles;
  bool wide = false;
  const cuattn_status status = flash_fwd_wide_tiles<T, kHeadDim>(p, &wide);
  if (status != CUATTN_OK) {
    return status;
  }
  if constexpr (flash_fwd::kHasWideTiles<kHeadDim>) {
    if (wide) {
      return f(std::integral_constant<Tiles, Tiles::kWide>{});
    }
  }
  return f(std::integral_constant<Tiles, Tiles::kCompact>{});
}

template <int kHeadDim>
cuattn_status flash_fwd_plan(const cuattn_attention_params& p, cuattn_flash_plan* plan) {
  // Both dtypes' kernels come from the same passes; the bf16 ones are in the plan's translation
  // unit (flash_fwd_bf16_hd<tile>.cu).
  return with_flash_tiles<__nv_bfloat16, kHeadDim>(p, [&](auto tiles) {
    flash_fwd_fill_plan<kHeadDim, decltype(tiles)::value>(p, plan);
    return CUATTN_OK;
  });
}

template <typename T, int kHeadDim>
cuattn_status flash_fwd_launch(const cuattn_attention_params& p, void* stream) {
  return with_flash_tiles<T, kHeadDim>(p, [&](auto tiles) {
    return flash_fwd_launch_tiles<T, kHeadDim, decltype(tiles)::value>(p, stream);
  });
}

}  // namespace CUATTN_BUILD_NAMESPACE
}  // namespace cuattn
