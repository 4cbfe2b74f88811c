// runtime.h: the SIMT emulator's device vocabulary for CUATTN_EMU builds: CUDA keywords, built-in
// variables, vector types, barrier, warp collectives, atomics, math, and the launch entry point.
#ifndef CUATTN_EMU_RUNTIME_H_
#define CUATTN_EMU_RUNTIME_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/warp.h"
#include "cuattn_internal.h"
#include "emu/memcheck.h"

// ---------------------------------------------------------------------------------------------
// CUDA keywords. `__noinline__` is left alone: libstdc++ spells `__attribute__((__noinline__))`.
// ---------------------------------------------------------------------------------------------

// Kernels get internal linkage: both builds link into one binary, and nvcc's host stub for a
// kernel carries the kernel's mangled name (a template kernel would silently merge with it).
#define __global__ static
#define __device__
#define __host__
#define __constant__
#define __forceinline__ __attribute__((always_inline)) inline
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
// One OS thread runs one block at a time, so a thread_local is exactly one block's copy. Each
// block starts with it poisoned (0xFF bytes; poison_static_shared, memcheck.h), as it starts with
// whatever an earlier block left on a GPU; a stripped binary keeps the previous block's values.
#define __shared__ static thread_local

namespace cuattn::emu {

constexpr unsigned kFullWarpMask = 0xffffffffu;

// ---------------------------------------------------------------------------------------------
// Built-in types and variables (CUDA's vector_types.h layouts).
// ---------------------------------------------------------------------------------------------

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

struct __align__(8) float2 {
  float x, y;
};
struct __align__(16) float4 {
  float x, y, z, w;
};
struct __align__(8) int2 {
  int x, y;
};
struct __align__(16) int4 {
  int x, y, z, w;
};
struct __align__(8) uint2 {
  unsigned int x, y;
};
struct __align__(16) uint4 {
  unsigned int x, y, z, w;
};

inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline uint2 make_uint2(unsigned int x, unsigned int y) { return uint2{x, y}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
  return uint4{x, y, z, w};
}

// Rewritten by the runtime: threadIdx at every fiber switch, the others at each block start.
extern __thread uint3 threadIdx;
extern __thread uint3 blockIdx;
extern __thread dim3 blockDim;
extern __thread dim3 gridDim;
// The running block's dynamic shared memory (16-byte aligned, 0xFF-poisoned at block start).
extern __thread unsigned char* dynamic_smem;
constexpr int warpSize = kWarpSize;

// ---------------------------------------------------------------------------------------------
// Block barrier and warp collectives. Each may switch to another fiber; a misuse (a barrier or
// collective that cannot complete, a mask that omits the caller, mismatched masks) stops the
// block and the launch fails with CUATTN_ERROR_KERNEL_FAULT.
// ---------------------------------------------------------------------------------------------

enum class Collective : uint8_t {
  kSyncWarp,
  kShflIdx,
  kShflUp,
  kShflDown,
  kShflXor,
  kAll,
  kAny,
  kBallot,
  kWarpExchange,  // warp_exchange: the emulated mma and ldmatrix of csrc/arch
};

void sync_threads();

// Named barrier `id` (1-15; 0 is __syncthreads') over `threads` threads, a multiple of 32 (PTX
// ISA, "bar, barrier": bar.sync id, threads / bar.arrive id, threads): the barrier completes when
// that many threads have reached it; `wait` (bar.sync) blocks this thread until then, bar.arrive
// does not. Every arrival at one pending barrier must name the same count, and a block must not
// end with arrivals pending. Scheduling only: the memory checker keeps ordering shared memory by
// __syncthreads alone.
void named_barrier(unsigned id, unsigned threads, bool wait);

// Waits until every lane of `mask` reaches a collective of the same kind with the same mask
// (and width, and value size); returns this lane's result. `value` holds `value_bytes` bytes.
uint64_t warp_collective(Collective kind, unsigned mask, uint64_t value, unsigned value_bytes,
                         int lane_arg, int width);

// The lanes of the caller's warp at this __activemask call site, `file`:`line`. The runtime waits
// until every other live lane of the warp is blocked or has exited (the emulator's notion of
// convergence), then answers each call site with the lanes waiting there. Sites are source
// positions, not code addresses, so that a compiler duplicating code splits no site.
unsigned active_mask(const char* file, int line);

template <typename T>
inline T shuffle(Collective kind, unsigned mask, T var, int lane_arg, int width) {
  static_assert(std::is_trivially_copyable_v<T>, "shuffles move values by bit copy");
  static_assert(sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8,
                "CUDA shuffles 2-, 4- and 8-byte values");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = warp_collective(kind, mask, bits, sizeof(T), lane_arg, width);
  T result;
  std::memcpy(&result, &bits, sizeof(T));
  return result;
}

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  return shuffle(Collective::kShflIdx, mask, var, src_lane, width);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = warpSize) {
  return shuffle(Collective::kShflUp, mask, var, static_cast<int>(delta), width);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = warpSize) {
  return shuffle(Collective::kShflDown, mask, var, static_cast<int>(delta), width);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  return shuffle(Collective::kShflXor, mask, var, lane_mask, width);
}

inline void __syncthreads() { sync_threads(); }
inline void __syncwarp(unsigned mask = kFullWarpMask) {
  warp_collective(Collective::kSyncWarp, mask, 0, 0, 0, warpSize);
}
inline int __all_sync(unsigned mask, int predicate) {
  return static_cast<int>(
      warp_collective(Collective::kAll, mask, predicate != 0, sizeof(int), 0, warpSize));
}
inline int __any_sync(unsigned mask, int predicate) {
  return static_cast<int>(
      warp_collective(Collective::kAny, mask, predicate != 0, sizeof(int), 0, warpSize));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return static_cast<unsigned>(
      warp_collective(Collective::kBallot, mask, predicate != 0, sizeof(int), 0, warpSize));
}

// ---------------------------------------------------------------------------------------------
// Atomics: blocks run on several OS threads, so these are real atomics. CUDA's are relaxed.
// ---------------------------------------------------------------------------------------------

template <typename T, typename Op>
inline T atomic_update(T* address, Op op) {
  T old;
  __atomic_load(address, &old, __ATOMIC_RELAXED);
  T desired = op(old);
  // The generic builtin compares bit patterns, so a NaN already stored does not loop forever.
  while (!__atomic_compare_exchange(address, &old, &desired, /*weak=*/true, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
    desired = op(old);
  }
  return old;
}

inline int atomicAdd(int* address, int val) {
  return __atomic_fetch_add(address, val, __ATOMIC_RELAXED);
}
inline unsigned int atomicAdd(unsigned int* address, unsigned int val) {
  return __atomic_fetch_add(address, val, __ATOMIC_RELAXED);
}
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long val) {
  return __atomic_fetch_add(address, val, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* address, float val) {
  return atomic_update(address, [val](float old) { return old + val; });
}
inline double atomicAdd(double* address, double val) {
  return atomic_update(address, [val](double old) { return old + val; });
}
inline int atomicMax(int* address, int val) {
  return atomic_update(address, [val](int old) { return old > val ? old : val; });
}
inline int atomicCAS(int* address, int compare, int val) {
  __atomic_compare_exchange_n(address, &compare, val, /*weak=*/false, __ATOMIC_RELAXED,
                              __ATOMIC_RELAXED);
  return compare;  // the old value, whether or not the swap happened
}
inline unsigned int atomicCAS(unsigned int* address, unsigned int compare, unsigned int val) {
  __atomic_compare_exchange_n(address, &compare, val, /*weak=*/false, __ATOMIC_RELAXED,
                              __ATOMIC_RELAXED);
  return compare;
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---------------------------------------------------------------------------------------------
// Math CUDA has and the C library lacks. The fast intrinsics are the exact functions here.
// ---------------------------------------------------------------------------------------------

inline float fast_expf(float x) { return expf(x); }
inline float fast_logf(float x) { return logf(x); }
inline float fast_fdividef(float x, float y) { return x / y; }
inline float reciprocal_sqrtf(float x) { return 1.0f / sqrtf(x); }

inline int __float_as_int(float x) {
  int bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
}
inline unsigned int __float_as_uint(float x) {
  unsigned int bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
}
inline float __int_as_float(int bits) {
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}
inline float __uint_as_float(unsigned int bits) {
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

// CUDA's device min/max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// ---------------------------------------------------------------------------------------------
// Support for the emulated primitives of csrc/arch: warp-wide exchanges (mma, ldmatrix), the
// per-thread queue of asynchronous copies (cp.async), shared-memory address checks and faults.
// ---------------------------------------------------------------------------------------------

// A warp-wide instruction over every lane's operands, such as mma.sync or ldmatrix.sync.
struct WarpExchange {
  // The PTX instruction, for fault messages ("ldmatrix.sync.aligned.m8n8.x4.shared.b16").
  const char* name;
  // Runs once, on the last lane to arrive: lanes[l] is what lane l passed to warp_exchange for
  // each lane l of `mask`, null for the others. It reads every lane's inputs before it writes
  // any output, so outputs may alias inputs.
  void (*compute)(void* const* lanes, unsigned mask);
};

// Waits until every lane of `mask` has called warp_exchange with the same instruction (the rules
// and faults of warp_collective: a lane missing, exited or in another collective stops the
// block), runs op.compute over their `lane_data` and returns. `lane_data` points at the caller's
// own operands (on its fiber stack), which stay valid while it waits here.
void warp_exchange(const WarpExchange& op, unsigned mask, void* lane_data);

// The caller's thread id in its block, x fastest (what the memory checker's hooks take).
inline int linear_thread_id() {
  return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

// Whether [address, address + bytes) is shared memory: inside the running block's dynamic shared
// memory arena or this OS thread's thread_local storage, where static __shared__ arrays live.
// (Bounds within the arena are the memory checker's business.)
bool is_shared_address(const void* address, size_t bytes);

// Stops the block as a GPU stops on a memory fault: the launch fails with
// CUATTN_ERROR_KERNEL_FAULT and "thread T (warp W, lane L): <message>".
[[noreturn]] void kernel_fault(const char* format, ...) __attribute__((format(printf, 1, 2)));

// cp.async (PTX ISA, "Data Movement and Conversion Instructions: cp.async"), emulated honestly:
// the caller's thread keeps its copies in flight in issue order. Issuing one checks it (both
// addresses aligned to cp_bytes, dst in shared memory, src not, src_bytes <= cp_bytes: a fault
// otherwise, naming `instruction`) and overwrites the destination with 0xFF bytes (a NaN in
// fp32, fp16 and bf16), so that reading it before a wait shows; the copy itself, reading
// src_bytes bytes of src and zero-filling the rest of dst, happens only at a wait that covers it.
// Copies still in flight when the thread exits are dropped, as on the GPU.
void async_copy_issue(const char* instruction, void* smem_dst, const void* gmem_src,
                      unsigned cp_bytes, unsigned src_bytes);
// cp.async.commit_group: the copies issued since the last commit form the newest group (possibly
// an empty one).
void async_copy_commit_group();
// cp.async.wait_group N: completes every committed group but the `pending_groups` newest.
// Copies issued after the last commit belong to no group and stay in flight.
void async_copy_wait_group(int pending_groups);
// cp.async.wait_all: completes every copy in flight, committed or not.
void async_copy_wait_all();

// ---------------------------------------------------------------------------------------------
// Launch.
// ---------------------------------------------------------------------------------------------

using ThreadBody = void (*)(const void* context);

// Type-erased launch: validates the configuration against CUDA's limits (else
// CUATTN_ERROR_LAUNCH_FAILED), runs body(context) once per CUDA thread, blocks spread over the
// calling thread and a worker pool, and returns when every block has finished or one faulted
// (CUATTN_ERROR_KERNEL_FAULT). The message goes to cuattn_last_error() on the calling thread.
cuattn_status launch_erased(const char* kernel_name, dim3 grid, dim3 block,
                            size_t dynamic_smem_bytes, ThreadBody body, const void* context);

// Runs `body()` once per CUDA thread of grid x block. `body` is called concurrently from
// several OS threads (one block each), so it must only read what it captures. Its captures live
// on the launching thread's stack, outside the kernel's reach: `body` must be
// CUATTN_EMU_UNCHECKED, and the kernel it calls is checked.
template <typename F>
cuattn_status launch(const char* kernel_name, dim3 grid, dim3 block, size_t dynamic_smem_bytes,
                     const F& body) {
  return launch_erased(
      kernel_name, grid, block, dynamic_smem_bytes,
      [](const void* context) CUATTN_EMU_UNCHECKED { (*static_cast<const F*>(context))(); }, &body);
}

}  // namespace cuattn::emu

// CUDA spells these in the global namespace. They live in cuattn::emu so that no emulator symbol
// shares a mangled name with its CUDA-build namesake in the same binary.
using cuattn::emu::__all_sync;
using cuattn::emu::__any_sync;
using cuattn::emu::__ballot_sync;
using cuattn::emu::__float_as_int;
using cuattn::emu::__float_as_uint;
using cuattn::emu::__int_as_float;
using cuattn::emu::__shfl_down_sync;
using cuattn::emu::__shfl_sync;
using cuattn::emu::__shfl_up_sync;
using cuattn::emu::__shfl_xor_sync;
using cuattn::emu::__syncthreads;
using cuattn::emu::__syncwarp;
using cuattn::emu::__threadfence;
using cuattn::emu::__uint_as_float;
using cuattn::emu::atomicAdd;
using cuattn::emu::atomicCAS;
using cuattn::emu::atomicMax;
using cuattn::emu::blockDim;
using cuattn::emu::blockIdx;
using cuattn::emu::dim3;
using cuattn::emu::float2;
using cuattn::emu::float4;
using cuattn::emu::gridDim;
using cuattn::emu::int2;
using cuattn::emu::int4;
using cuattn::emu::make_float2;
using cuattn::emu::make_float4;
using cuattn::emu::make_int2;
using cuattn::emu::make_int4;
using cuattn::emu::make_uint2;
using cuattn::emu::make_uint4;
using cuattn::emu::max;
using cuattn::emu::min;
using cuattn::emu::threadIdx;
using cuattn::emu::uint2;
using cuattn::emu::uint3;
using cuattn::emu::uint4;
using cuattn::emu::warpSize;

// A macro, to name its call site.
#define __activemask() ::cuattn::emu::active_mask(__FILE__, __LINE__)

// Macros, not declarations: a C library may declare these names itself (glibc has rsqrtf for
// C23), and <cmath> above has already been read.
#define __expf ::cuattn::emu::fast_expf
#define __logf ::cuattn::emu::fast_logf
#define __fdividef ::cuattn::emu::fast_fdividef
#define rsqrtf ::cuattn::emu::reciprocal_sqrtf

#endif  // CUATTN_EMU_RUNTIME_H_
