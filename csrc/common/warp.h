// warp.h: the warp width, for kernels in both builds and for the emulator's runtime.
#ifndef CUATTN_COMMON_WARP_H_
#define CUATTN_COMMON_WARP_H_

namespace cuattn {

// Threads of a warp, on every NVIDIA GPU and in the emulator.
constexpr int kWarpSize = 32;
// The same, unsigned, for arithmetic on thread ids and lane masks (the emulator's).
constexpr unsigned kWarpLanes = kWarpSize;

}  // namespace cuattn

#endif  // CUATTN_COMMON_WARP_H_
