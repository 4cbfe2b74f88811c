// smem_tile.cuh: a [rows][head_dim] tile of 16-bit elements in shared memory, stored as swizzled
// 16-byte chunks (bank-conflict-free ldmatrix and cp.async), and its asynchronous global load.
#pragma once

#include <cstdint>

#include "arch/cp_async.cuh"
#include "arch/swizzle.cuh"
#include "common/cuda_compat.cuh"

namespace cuattn {

// Elements of a 16-bit type in one 16-byte chunk.
constexpr int kChunkElems = 8;

// Tile of kRows x kCols 16-bit elements. Columns are split into atoms of kAtomChunks chunks (64
// elements, or 32 when kCols is not a multiple of 64, as for head dim 96); each atom is a
// row-major [kRows][kAtomChunks] block of chunks, swizzled within each row, so that every row
// width in use (4 or 8 chunks) is one the swizzle makes conflict-free.
template <int kRows, int kCols>
struct SmemTile {
  static_assert(kCols % (4 * kChunkElems) == 0, "tile columns come in 32-element atoms");
  static constexpr int kChunksPerRow = kCols / kChunkElems;
  static constexpr int kAtomChunks = kCols % (8 * kChunkElems) == 0 ? 8 : 4;
  static constexpr int kBytes = kRows * kCols * 2;

  // Byte offset of chunk `chunk` (columns 8 * chunk .. + 7) of row `row`.
  __device__ __forceinline__ static int offset(int row, int chunk) {
    const int atom = chunk / kAtomChunks;
    return atom * (kRows * kAtomChunks * kSwizzleChunkBytes) +
           swizzled_offset<kAtomChunks>(row, chunk % kAtomChunks);
  }

  __device__ __forceinline__ static void* chunk_ptr(void* tile, int row, int chunk) {
    return static_cast<unsigned char*>(tile) + offset(row, chunk);
  }

  // A lane's fixed place in the tile, from which the fragments it loads are one XOR and one
  // constant add away. Valid for rows lane_row + R with R a multiple of 8 (the swizzle repeats
  // every 8 rows) and chunks lane_chunk + C with lane_chunk % kAtomChunks in {0, 1} and C even
  // (no carry from the lane's bit into C's, so the swizzle's XOR distributes): the ldmatrix
  // patterns, from any whole atom.
  struct Cursor {
    int base;  // offset(lane_row, lane_chunk)

    // Byte offset of (lane_row + rows_add, lane_chunk + chunk_add). Called with constants (in
    // unrolled loops) it folds to one XOR and an immediate.
    __device__ __forceinline__ int at(int rows_add, int chunk_add) const {
      const int x = (chunk_add % kAtomChunks) * kSwizzleChunkBytes;
      const int add = rows_add * kAtomChunks * kSwizzleChunkBytes +
                      (chunk_add / kAtomChunks) * (kRows * kAtomChunks * kSwizzleChunkBytes);
      return (base ^ x) + add;
    }
  };

  __device__ __forceinline__ static Cursor cursor(int lane_row, int lane_chunk) {
    return Cursor{offset(lane_row, lane_chunk)};
  }
};

// Loads [kRows x kCols] global tiles into SmemTile<kRows, kCols> with cp.async, by kThreads
// threads. Each loading thread keeps one column chunk and walks down the rows, kRowsPerPass rows
// apart: the swizzle repeats every 8 rows, so its shared offset cycles through kPeriod bases plus
// constants and its source advances by a constant, with no per-copy index arithmetic. A power of
// two rows per pass keeps that cycle short; the threads past kLoadThreads (a whole number of
// warps at head dims 96 and 192) issue no copies. Building one is a few integer operations on
// threadIdx: kernels build it where they load, rather than hold its registers through a loop.
template <typename T, int kRows, int kCols, int kThreads>
struct TileLoader {
  using Tile = SmemTile<kRows, kCols>;
  static_assert(sizeof(T) == 2, "tiles hold 16-bit elements");
  static_assert(Tile::kChunksPerRow <= kThreads, "one pass covers at least one row");
  static constexpr int kRowsPerPass = [] {
    int rows = 1;
    while (2 * rows * Tile::kChunksPerRow <= kThreads) rows *= 2;
    return rows;
  }();
  static constexpr int kLoadThreads = kRowsPerPass * Tile::kChunksPerRow;
  static constexpr int kPasses = kRows / kRowsPerPass;
  static constexpr int kPeriod = kRowsPerPass >= 8 ? 1 : 8 / kRowsPerPass;  // distinct bases
  static constexpr int kRowBytes = Tile::kAtomChunks * kSwizzleChunkBytes;  // one row of an atom
  static_assert(kRows % (kPeriod * kRowsPerPass) == 0, "tile rows are whole swizzle periods");

  int row;           // first row this thread copies
  int chunk;         // the column chunk it copies
  int dst[kPeriod];  // shared offsets of rows row, row + kRowsPerPass, ... (one swizzle period)

  __device__ __forceinline__ TileLoader() {
    row = threadIdx.x / Tile::kChunksPerRow;
    chunk = threadIdx.x % Tile::kChunksPerRow;
#pragma unroll
    for (int j = 0; j < kPeriod; ++j) {
      dst[j] = Tile::offset(row + j * kRowsPerPass, chunk);
    }
  }

  // Issues the copies of rows [0, kRows) x columns [0, kCols) of the global tile whose row r
  // starts at gmem + r * row_stride (elements of T). Rows >= valid_rows and columns >=
  // valid_cols (a multiple of 8) are zero-filled without reading global memory. The caller
  // commits and waits.
  __device__ __forceinline__ void load(void* smem, const T* gmem, int64_t row_stride,
                                       int valid_rows, int valid_cols) const {
    if (kLoadThreads < kThreads && threadIdx.x >= kLoadThreads) {
      return;
    }
    unsigned char* tile = static_cast<unsigned char*>(smem);
    const T* src = gmem + row * row_stride + chunk * kChunkElems;
    const int64_t src_step = kRowsPerPass * row_stride;
    auto chunk_dst = [&](int pass) { return chunk_in(tile, pass); };
    if (valid_rows >= kRows && valid_cols >= kCols) {
      // A whole tile (the interior key tiles of attention): no zero-fill, so no per-copy selects.
#pragma unroll
      for (int pass = 0; pass < kPasses; ++pass) {
        cp_async_cg16(chunk_dst(pass), src);
        src += src_step;
      }
      return;
    }
    const bool chunk_valid = chunk * kChunkElems < valid_cols;
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
      const bool valid = chunk_valid && row + pass * kRowsPerPass < valid_rows;
      // A zero-filled chunk reads nothing; its source only has to be a valid address.
      cp_async_cg16(chunk_dst(pass), valid ? src : gmem, valid ? kSwizzleChunkBytes : 0);
      src += src_step;
    }
  }

  // Issues the copies of rows [0, kRows) x columns [0, kCols) gathered from anywhere: row r
  // starts at row_src(r), a const T* (null: the row is zero-filled without reading global
  // memory), as when a tile's rows come from the pages of a paged cache. Columns >= valid_cols
  // are zero-filled too; `anywhere` is a valid global address, the source of those empty copies.
  template <typename RowSrc>
  __device__ __forceinline__ void gather(void* smem, RowSrc&& row_src, int valid_cols,
                                         const T* anywhere) const {
    if (kLoadThreads < kThreads && threadIdx.x >= kLoadThreads) {
      return;
    }
    unsigned char* tile = static_cast<unsigned char*>(smem);
    const bool chunk_valid = chunk * kChunkElems < valid_cols;
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
      const T* src = row_src(row + pass * kRowsPerPass);
      const bool valid = chunk_valid && src != nullptr;
      cp_async_cg16(chunk_in(tile, pass), valid ? src + chunk * kChunkElems : anywhere,
                    valid ? kSwizzleChunkBytes : 0);
    }
  }

 private:
  // This thread's chunk in pass `pass`: its period's base plus a constant.
  __device__ __forceinline__ unsigned char* chunk_in(unsigned char* tile, int pass) const {
    return tile + dst[pass % kPeriod] + (pass / kPeriod) * kPeriod * kRowsPerPass * kRowBytes;
  }
};

// One-off load of a tile (see TileLoader::load).
template <typename T, int kRows, int kCols, int kThreads>
__device__ __forceinline__ void load_tile_async(void* smem, const T* gmem, int64_t row_stride,
                                                int valid_rows, int valid_cols) {
  TileLoader<T, kRows, kCols, kThreads>().load(smem, gmem, row_stride, valid_rows, valid_cols);
}

}  // namespace cuattn
