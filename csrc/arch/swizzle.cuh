// swizzle.cuh: the XOR swizzle of shared-memory tiles stored in 16-byte chunks, which makes the
// ldmatrix reads and 16-byte cp.async/vector writes of a row-major tile free of bank conflicts.
#ifndef CUATTN_ARCH_SWIZZLE_CUH_
#define CUATTN_ARCH_SWIZZLE_CUH_

#include "common/cuda_compat.cuh"

namespace cuattn {

// Shared memory serves a 16-byte-per-lane access in phases of 8 lanes (128 bytes); a phase is
// conflict-free when its 8 chunks fall in 8 different bank groups, a bank group being a 16-byte
// chunk's position in the 128-byte line of all 32 4-byte banks: (byte address / 16) % 8.
constexpr int kSwizzleChunkBytes = 16;
constexpr int kBankGroups = 8;  // 32 banks x 4 bytes / 16-byte chunks

// A tile of rows of kChunksPerRow 16-byte chunks (row-major, no padding) keeps chunk `chunk` of
// row `row` at chunk position swizzle_chunk(row, chunk) of that row: an XOR of the chunk index
// with a few row bits, a permutation of each row's chunks.
//
// Why it is conflict-free. In an unswizzled tile, 8 consecutive rows' chunk c (what ldmatrix's 8
// lanes of one matrix read) all sit in bank group (row * kChunksPerRow + c) % 8:
//   - kChunksPerRow a multiple of 8 (rows of 128, 256, ... bytes): the same group for every row,
//     an 8-way conflict. XOR with row % 8 spreads the 8 rows over the 8 groups.
//   - kChunksPerRow = 4 (64-byte rows): two rows share a 128-byte line, so rows r and r + 2 clash
//     (4-way); XOR with (row / 2) % 4 gives the 4 pairs of rows distinct chunks.
//   - kChunksPerRow = 2 (32-byte rows): four rows share a line; XOR with (row / 4) % 2 separates
//     rows r and r + 4.
// In each case rows 8m..8m+7 at one logical chunk land in 8 distinct groups, and 8 consecutive
// chunks of the tile in row-major order (what 8 lanes write with 16-byte stores) still do, since
// rows sharing a 128-byte line share their XOR mask. tests/primitives.rs checks both patterns and
// that the map is a bijection for every supported width.
template <int kChunksPerRow>
__host__ __device__ constexpr int swizzle_chunk(int row, int chunk) {
  static_assert(kChunksPerRow == 2 || kChunksPerRow == 4 || kChunksPerRow % kBankGroups == 0,
                "swizzled rows are 32 or 64 bytes or a multiple of 128 bytes");
  if constexpr (kChunksPerRow >= kBankGroups) {
    return chunk ^ (row % kBankGroups);
  } else {
    constexpr int kRowsPerLine = kBankGroups / kChunksPerRow;
    return chunk ^ ((row / kRowsPerLine) % kChunksPerRow);
  }
}

// Byte offset of chunk `chunk` of row `row` in a swizzled tile.
template <int kChunksPerRow>
__host__ __device__ constexpr int swizzled_offset(int row, int chunk) {
  return (row * kChunksPerRow + swizzle_chunk<kChunksPerRow>(row, chunk)) * kSwizzleChunkBytes;
}

}  // namespace cuattn

#endif  // CUATTN_ARCH_SWIZZLE_CUH_
