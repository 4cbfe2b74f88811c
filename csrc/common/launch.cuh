// launch.cuh: cuattn::launch_kernel, the one launch path of every launcher in both builds, the
// launcher naming macro, and CUATTN_DYNAMIC_SMEM for a block's dynamic shared memory.
#ifndef CUATTN_COMMON_LAUNCH_CUH_
#define CUATTN_COMMON_LAUNCH_CUH_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "common/cuda_compat.cuh"
#include "common/status.h"
#include "cuattn_internal.h"

#ifdef CUATTN_EMU

// The C entry point of a raw launcher (cuattn_internal.h): cuattn_emu_raw_launch_<name> here,
// cuattn_raw_launch_<name> in CUDA.
#define CUATTN_LAUNCHER(name) cuattn_emu_raw_launch_##name

// `T* name` = the block's dynamic shared memory (16-byte aligned; 0xFF bytes until written).
#define CUATTN_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(::cuattn::emu::dynamic_smem)

namespace cuattn {
// A different inline namespace per build: both instantiations of launch_kernel link into one
// binary and must not share a mangled name.
inline namespace emu_build {

// Validates the configuration against CUDA's limits (CUATTN_ERROR_LAUNCH_FAILED), runs the kernel
// on the emulator and returns when it has finished: CUATTN_OK or CUATTN_ERROR_KERNEL_FAULT, with
// the message in cuattn_last_error(). `stream` is ignored.
template <typename... P, typename... A>
cuattn_status launch_kernel(const char* name, void (*kernel)(P...), dim3 grid, dim3 block,
                            size_t dynamic_smem_bytes, void* stream, A... args) {
  static_assert(sizeof...(P) == sizeof...(A), "one argument per kernel parameter");
  (void)stream;
  // Each CUDA thread gets its own copy of the parameters, as from CUDA's parameter space. The
  // copying reads this frame, on the launching thread's stack: unchecked; the kernel is checked.
  return emu::launch(name, grid, block, dynamic_smem_bytes,
                     [&]() CUATTN_EMU_UNCHECKED { kernel(args...); });
}

// The virtual architecture kKernel's code was compiled for (CUDA build: below): the emulator
// stands in for an sm_90 GPU running the sm_90a code (it models no limit that sets GPUs apart but
// the shared memory, and has sm_90's).
template <auto kKernel>
cuattn_status kernel_virtual_arch(int* arch) {
  *arch = 90;
  return CUATTN_OK;
}

}  // namespace emu_build
}  // namespace cuattn

#else  // CUDA

#define CUATTN_LAUNCHER(name) cuattn_raw_launch_##name

#define CUATTN_DYNAMIC_SMEM(T, name)                                         \
  extern __shared__ __align__(16) unsigned char cuattn_dynamic_smem_bytes[]; \
  T* name = reinterpret_cast<T*>(cuattn_dynamic_smem_bytes)

namespace cuattn {
inline namespace cuda_build {

// What launch_kernel has opted kernels in to: per kernel (by address) and device, the most dynamic
// shared memory allowed so far. Launches read it without a lock (a kernel and device seen before
// costs two atomic loads); the first launch of a kernel on a device, or one that asks for more,
// sets the attribute under the mutex. Kernels past the table's size opt in at every launch.
struct SmemOptIns {
  static constexpr int kKernels = 512;  // cuattn has some 150 kernel instantiations
  static constexpr int kDevices = 16;
  std::atomic<const void*> kernel[kKernels];
  std::atomic<size_t> bytes[kKernels][kDevices];
  std::mutex mutex;  // serializes the opt-ins, so that the attribute never goes down
};

inline SmemOptIns smem_opt_ins;

// Allows `kernel` (launch_kernel's, by address) `bytes` of dynamic shared memory on the calling
// thread's current device, unless an earlier launch did so for as much.
inline cuattn_status allow_dynamic_smem(const char* name, const void* kernel, size_t bytes) {
  SmemOptIns& table = smem_opt_ins;
  int device = 0;
  cudaError_t error = cudaGetDevice(&device);
  const bool tracked = error == cudaSuccess && device >= 0 && device < SmemOptIns::kDevices;
  // The kernel's slot: linear probing from a hash of its address, claimed with a CAS.
  int slot = -1;
  if (tracked) {
    const size_t start = (reinterpret_cast<uintptr_t>(kernel) >> 4) % SmemOptIns::kKernels;
    for (int i = 0; i < SmemOptIns::kKernels; ++i) {
      const int at = static_cast<int>((start + i) % SmemOptIns::kKernels);
      const void* held = table.kernel[at].load(std::memory_order_acquire);
      if (held == nullptr) {
        table.kernel[at].compare_exchange_strong(held, kernel, std::memory_order_acq_rel);
      }
      if (held == nullptr || held == kernel) {
        slot = at;
        break;
      }
    }
  }
  if (slot >= 0 && table.bytes[slot][device].load(std::memory_order_acquire) >= bytes) {
    return CUATTN_OK;
  }
  std::lock_guard<std::mutex> lock(table.mutex);
  if (slot >= 0 && table.bytes[slot][device].load(std::memory_order_relaxed) >= bytes) {
    return CUATTN_OK;  // another thread opted in meanwhile
  }
  if (error == cudaSuccess) {
    error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(bytes));
  }
  if (error != cudaSuccess) {
    (void)cudaGetLastError();  // not left behind for the thread's next launch to report
    return fail(CUATTN_ERROR_LAUNCH_FAILED,
                "kernel %s: cannot allow %zu bytes of dynamic shared memory: %s (%s)", name, bytes,
                cudaGetErrorName(error), cudaGetErrorString(error));
  }
  if (slot >= 0) {
    table.bytes[slot][device].store(bytes, std::memory_order_release);
  }
  return CUATTN_OK;
}

// Launches on `stream` (a cudaStream_t, or null for the default stream) without synchronizing.
// Returns CUATTN_ERROR_LAUNCH_FAILED, naming the kernel, the configuration and the CUDA error,
// when the runtime refuses it.
template <typename... P, typename... A>
cuattn_status launch_kernel(const char* name, void (*kernel)(P...), dim3 grid, dim3 block,
                            size_t dynamic_smem_bytes, void* stream, A... args) {
  static_assert(sizeof...(P) == sizeof...(A), "one argument per kernel parameter");
  // Without opting in, a block gets 48 KiB of shared memory, static and dynamic together: a
  // kernel with any static __shared__ fails to launch with exactly 48 KiB of dynamic memory. So
  // every kernel that asks for dynamic memory opts in to what it asks for, once per device.
  if (dynamic_smem_bytes > 0) {
    const cuattn_status status =
        allow_dynamic_smem(name, reinterpret_cast<const void*>(kernel), dynamic_smem_bytes);
    if (status != CUATTN_OK) {
      return status;
    }
  }
  // clang-format off
  kernel<<<grid, block, dynamic_smem_bytes, static_cast<cudaStream_t>(stream)>>>(args...);
  // clang-format on
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    return fail(CUATTN_ERROR_LAUNCH_FAILED,
                "kernel %s: launch of grid (%u,%u,%u) block (%u,%u,%u) with %zu bytes of dynamic "
                "shared memory failed: %s (%s)",
                name, grid.x, grid.y, grid.z, block.x, block.y, block.z, dynamic_smem_bytes,
                cudaGetErrorName(error), cudaGetErrorString(error));
  }
  return CUATTN_OK;
}

// The virtual architecture (compute_XX as major * 10 + minor: __CUDA_ARCH__ / 10 in the code) of
// the code of kernel kKernel that runs on the calling thread's current device. 90 where it runs the
// sm_90a pass; 80 on sm_8x and wherever the driver compiles the compute_80 PTX instead (GPUs newer
// than sm_90, or any GPU under CUDA_FORCE_PTX_JIT=1). What a kernel may do on a GPU follows from
// this, not from the GPU's compute capability. Asked once per kernel and device (one cache per
// template instance, that is per kernel): the driver's choice holds for the process.
template <auto kKernel>
cuattn_status kernel_virtual_arch(int* arch) {
  constexpr int kCachedDevices = 64;
  static std::atomic<int> cached[kCachedDevices];  // 0 until asked
  int device = 0;
  cudaError_t error = cudaGetDevice(&device);
  const bool cacheable = error == cudaSuccess && device >= 0 && device < kCachedDevices;
  const int known = cacheable ? cached[device].load(std::memory_order_relaxed) : 0;
  if (known > 0) {
    *arch = known;
    return CUATTN_OK;
  }
  cudaFuncAttributes attributes{};
  if (error == cudaSuccess) {
    error = cudaFuncGetAttributes(&attributes, kKernel);
  }
  if (error != cudaSuccess) {
    (void)cudaGetLastError();  // not left behind for the thread's next launch to report
    return fail(CUATTN_ERROR_LAUNCH_FAILED,
                "cannot read which architecture a kernel was compiled for: %s (%s)",
                cudaGetErrorName(error), cudaGetErrorString(error));
  }
  *arch = attributes.ptxVersion;
  if (cacheable) {
    cached[device].store(attributes.ptxVersion, std::memory_order_relaxed);
  }
  return CUATTN_OK;
}

}  // namespace cuda_build
}  // namespace cuattn

#endif

#endif  // CUATTN_COMMON_LAUNCH_CUH_
