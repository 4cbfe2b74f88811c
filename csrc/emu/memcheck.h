// memcheck.h: the emulator's memory checker (compute-sanitizer's memcheck, racecheck and initcheck
// on the CPU): hooks for the emulated primitives, and the runtime's side of the checker.
//
// Kernel translation units are compiled with ThreadSanitizer's instrumentation (build.rs), so the
// compiler calls the checker before every load, store and atomic of kernel code, each marked as a
// read or a write. It stops the block with CUATTN_ERROR_KERNEL_FAULT on:
//   - a global access outside every registered allocation (cuattn_emu_register_allocation), or
//     into a freed one;
//   - a shared-memory access racing with another thread's write (or a write racing with another
//     thread's read) in the same barrier interval: no __syncthreads between them, nor a named
//     barrier that the earlier access's warp arrived at after it and the later one's waited at
//     (bar.sync), nor, for two lanes of one warp, a __syncwarp naming both;
//   - a read of shared memory no thread of the block has written (static __shared__ only where
//     the binary has its symbol table), or an access past the launch's dynamic shared memory;
//   - any access to shared memory an in-flight cp.async is still to write;
//   - a plain store to a global byte that another block of the launch also stores to, or that
//     another thread of the block stored to in the same barrier interval (the first 1 MiB of
//     distinct bytes a launch stores to).
// While the launching thread records traffic (cuattn_emu_traffic_begin, csrc/emu/traffic.h), the
// same callbacks also count each block's global bytes read and written per registered allocation.
// It does not see: memcpy/memset calls (the C library's code is not instrumented); global-memory
// races that involve a read (global reads are not recorded); reads of unwritten static __shared__
// memory in a stripped binary; an index past one static __shared__ array that lands in another
// thread_local variable; a write racing with a read older than the byte's two latest distinct
// readers.
#ifndef CUATTN_EMU_MEMCHECK_H_
#define CUATTN_EMU_MEMCHECK_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

// Marks a function of an emulator header whose own loads and stores the checker must not see:
// runtime code compiled into kernel translation units that touches runtime state, such as the
// launch path reading the launcher's arguments on the launching thread's stack.
#define CUATTN_EMU_UNCHECKED __attribute__((no_sanitize("thread")))

namespace cuattn::emu {

// ---------------------------------------------------------------------------------------------
// Hooks for emulated primitives: accesses they perform on behalf of a lane. Each is a no-op
// outside a checked block. Code that calls them performs the access itself unchecked (in
// runtime.cpp, or in a warp exchange's compute, which the runtime runs with checks paused).
// ---------------------------------------------------------------------------------------------

// Thread `linear_tid` of the running block reads (or writes) [addr, addr + bytes): checked like
// a load or store of kernel code by that thread (an ldmatrix row, a cp.async source).
void memcheck_access(const void* addr, size_t bytes, bool is_write, int linear_tid);
// Thread `linear_tid` issued a cp.async into shared [smem_dst, smem_dst + bytes): the bytes are
// in flight, and any access to them before memcheck_async_land faults.
void memcheck_async_issue(void* smem_dst, size_t bytes, int linear_tid);
// That copy landed (cp.async.wait_group): thread `linear_tid` has written the bytes now.
void memcheck_async_land(void* smem_dst, size_t bytes, int linear_tid);

// ---------------------------------------------------------------------------------------------
// The runtime's side (runtime.cpp).
// ---------------------------------------------------------------------------------------------

// The thread_local storage blocks this OS thread sees: that of the module holding the emulator
// (its thread_local variables; the kernels' static __shared__ arrays live in the
// same block), with the module's file ("/proc/self/exe" for the main program), and every other
// module's. One scan of the loaded modules (dl_iterate_phdr) per OS thread, on first use.
struct TlsBlocks {
  uintptr_t own_begin = 0;
  uintptr_t own_end = 0;
  std::string own_path;
  std::vector<std::pair<uintptr_t, uintptr_t>> others;  // [begin, end) each
};
const TlsBlocks& this_thread_tls_blocks();

// Fills this OS thread's instances of the kernels' static __shared__ variables with `byte`, so that
// a block starts with them unwritten, as on a GPU (where they hold whatever an earlier block
// left). Does nothing in a stripped binary (the variables are found in the symbol table).
void poison_static_shared(unsigned char byte);

// Whether launches made now from the calling thread are checked (cuattn_emu_set_memcheck, else
// CUATTN_EMU_MEMCHECK, else on).
bool memcheck_enabled_for_launch();

// The global bytes one checked launch has written with plain stores, shared by the OS threads
// that run its blocks: the blocks of a launch are unordered, so a byte two of them write is a
// race, as is one two threads of a block write in one barrier interval.
class LaunchWrites;
// A launch over a grid of grid_x * grid_y * (any) blocks starts; memcheck_launch_end frees it.
LaunchWrites* memcheck_launch_begin(unsigned grid_x, unsigned grid_y);
void memcheck_launch_end(LaunchWrites* writes);

// A launch's global traffic per allocation (traffic.h); null when the launching thread does not
// record.
class LaunchTraffic;

// This OS thread starts block `block_linear` (x + grid_x * (y + grid_y * z)) of `kernel_name`,
// whose dynamic shared memory is the first `dynamic_smem_bytes` of the arena [arena, arena +
// arena_bytes). Every shared byte starts unwritten. With `writes` null the block runs unchecked.
// With `traffic` set (and `writes` too) the block counts the global bytes it reads and writes per
// allocation, and adds them to `traffic` when it ends.
void memcheck_block_begin(const char* kernel_name, const unsigned char* arena, size_t arena_bytes,
                          size_t dynamic_smem_bytes, LaunchWrites* writes, LaunchTraffic* traffic,
                          uint64_t block_linear);
// The block finished or faulted: code that runs next on this OS thread is not kernel code. A
// checked block that counted traffic adds its counts to its launch's here.
void memcheck_block_end();

// The registered allocation that starts at `begin`, live or (if recently) unregistered: its
// label ("" for none) and size. False if the registry has none there.
bool allocation_at(uintptr_t begin, std::string* label, uint64_t* bytes);
// The fiber of thread `linear_tid`, whose stack is [stack_lo, stack_lo + stack_bytes), runs now.
void memcheck_switch_to(const void* stack_lo, size_t stack_bytes, unsigned linear_tid);
// A __syncthreads completed: every access before it is ordered before every access after it.
void memcheck_barrier();
// A __syncwarp(mask) completed in warp `warp`: it orders the accesses of the lanes of `mask`.
void memcheck_syncwarp(unsigned warp, unsigned mask);
// Warp `warp` completed its arrival (bar.sync or bar.arrive) at a named barrier.
void memcheck_named_arrival(unsigned warp);
// A named barrier completed: the accesses the warps of `arrived` made before their arrival are
// ordered before what the warps of `waited` (those that arrived through bar.sync) do next. Bit w
// of each mask is warp w.
void memcheck_named_barrier(uint32_t arrived, uint32_t waited);

// Checks are off on this OS thread while one lives: the runtime holds one around a warp
// exchange's compute, which works on every lane's operands (their fiber stacks) on behalf of
// lanes that reported their own accesses.
class MemcheckPause {
 public:
  MemcheckPause();
  ~MemcheckPause();
  MemcheckPause(const MemcheckPause&) = delete;
  MemcheckPause& operator=(const MemcheckPause&) = delete;

 private:
  bool was_active_;
};

// Defined by the runtime: stops the running block with CUATTN_ERROR_KERNEL_FAULT and `message`.
[[noreturn]] void memcheck_stop_block(const std::string& message);

}  // namespace cuattn::emu

#endif  // CUATTN_EMU_MEMCHECK_H_
