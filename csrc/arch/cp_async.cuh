// cp_async.cuh: asynchronous global-to-shared copies (cp.async.ca/.cg with zero-fill tails) and
// their groups (commit_group, wait_group, wait_all): PTX in the CUDA build, a per-thread queue
// in the emulator that lands copies only at the wait that covers them.
#ifndef CUATTN_ARCH_CP_ASYNC_CUH_
#define CUATTN_ARCH_CP_ASYNC_CUH_

#include "arch/address.cuh"
#include "common/cuda_compat.cuh"

namespace cuattn {

// PTX ISA, "Data Movement and Conversion Instructions: cp.async": copies cp-size bytes (4, 8 or
// 16; .cg only 16) from global memory src to shared memory dst, both aligned to cp-size. With
// src_bytes < cp-size only src_bytes bytes are read and the rest of dst is filled with zeros
// (src_bytes = 0 reads nothing: the tail rows of a tile). The copy is complete, and dst readable
// by the issuing thread, only after a wait that covers its group (PTX ISA, "cp.async.commit_group"
// and "cp.async.wait_group / cp.async.wait_all"); other threads read it after a barrier that
// follows that wait. The emulator overwrites dst with 0xFF bytes at issue (a NaN in every float
// type), so a read before the wait shows.
constexpr int kCpAsyncCgBytes = 16;

// cp.async.ca: cached in L1 and L2. kBytes = 4, 8 or 16.
template <int kBytes>
__device__ __forceinline__ void cp_async_ca(void* smem, const void* gmem) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async.ca copies 4, 8 or 16 bytes");
#ifdef CUATTN_EMU
  constexpr const char* kName = kBytes == 4   ? "cp.async.ca.shared.global (4 bytes)"
                                : kBytes == 8 ? "cp.async.ca.shared.global (8 bytes)"
                                              : "cp.async.ca.shared.global (16 bytes)";
  emu::async_copy_issue(kName, smem, gmem, kBytes, kBytes);
#else
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(shared_address(smem)),
               "l"(global_address(gmem)), "n"(kBytes)
               : "memory");
#endif
}

// cp.async.ca with a zero-filled tail: reads src_bytes (0..kBytes) bytes, zeros the rest.
template <int kBytes>
__device__ __forceinline__ void cp_async_ca(void* smem, const void* gmem, int src_bytes) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async.ca copies 4, 8 or 16 bytes");
#ifdef CUATTN_EMU
  constexpr const char* kName = kBytes == 4   ? "cp.async.ca.shared.global (4 bytes, src-size)"
                                : kBytes == 8 ? "cp.async.ca.shared.global (8 bytes, src-size)"
                                              : "cp.async.ca.shared.global (16 bytes, src-size)";
  emu::async_copy_issue(kName, smem, gmem, kBytes, static_cast<unsigned>(src_bytes));
#else
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(shared_address(smem)),
               "l"(global_address(gmem)), "n"(kBytes), "r"(src_bytes)
               : "memory");
#endif
}

// cp.async.cg: 16 bytes, cached in L2 only (the streaming tiles of attention).
__device__ __forceinline__ void cp_async_cg16(void* smem, const void* gmem) {
#ifdef CUATTN_EMU
  emu::async_copy_issue("cp.async.cg.shared.global (16 bytes)", smem, gmem, kCpAsyncCgBytes,
                        kCpAsyncCgBytes);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], %2;\n" ::"r"(shared_address(smem)),
               "l"(global_address(gmem)), "n"(kCpAsyncCgBytes)
               : "memory");
#endif
}

// cp.async.cg with a zero-filled tail: reads src_bytes (0..16) bytes, zeros the rest.
__device__ __forceinline__ void cp_async_cg16(void* smem, const void* gmem, int src_bytes) {
#ifdef CUATTN_EMU
  emu::async_copy_issue("cp.async.cg.shared.global (16 bytes, src-size)", smem, gmem,
                        kCpAsyncCgBytes, static_cast<unsigned>(src_bytes));
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], %2, %3;\n" ::"r"(shared_address(smem)),
               "l"(global_address(gmem)), "n"(kCpAsyncCgBytes), "r"(src_bytes)
               : "memory");
#endif
}

// Closes the group of the copies this thread issued since its last commit (possibly none).
__device__ __forceinline__ void cp_async_commit_group() {
#ifdef CUATTN_EMU
  emu::async_copy_commit_group();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most kPending of this thread's newest committed groups are still in flight:
// every older group has landed. Copies not yet committed are not waited for.
template <int kPending>
__device__ __forceinline__ void cp_async_wait_group() {
  static_assert(kPending >= 0, "cp.async.wait_group takes a non-negative count");
#ifdef CUATTN_EMU
  emu::async_copy_wait_group(kPending);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

// Waits for every copy this thread issued, committed or not.
__device__ __forceinline__ void cp_async_wait_all() {
#ifdef CUATTN_EMU
  emu::async_copy_wait_all();
#else
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

}  // namespace cuattn

#endif  // CUATTN_ARCH_CP_ASYNC_CUH_
