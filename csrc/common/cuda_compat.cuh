// cuda_compat.cuh: the first include of every kernel file. It gives both builds one CUDA
// vocabulary: nvcc's own headers, or the emulator's runtime and fp16 types under CUATTN_EMU.
//
// Both builds of a source link into one binary, so their symbols must stay apart: kernel files
// put kernels and file-local helpers in an anonymous namespace (the emulator also makes every
// __global__ function static), and __host__ __device__ code in headers must not differ between
// the builds.
#ifndef CUATTN_COMMON_CUDA_COMPAT_CUH_
#define CUATTN_COMMON_CUDA_COMPAT_CUH_

#include "common/warp.h"  // kWarpSize

#ifdef CUATTN_EMU
#include "arch/fp16.cuh"
#include "emu/runtime.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>  // INFINITY
#endif

// Functions with external linkage that both builds define (a kernel family's per-instantiation
// launch functions, split over translation units) go in this inline namespace, so the emulator's
// and the GPU's copies have different mangled names in the one binary.
#ifdef CUATTN_EMU
#define CUATTN_BUILD_NAMESPACE emu_build
#else
#define CUATTN_BUILD_NAMESPACE cuda_build
#endif

#endif  // CUATTN_COMMON_CUDA_COMPAT_CUH_
