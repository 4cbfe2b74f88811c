// runtime.cpp: the SIMT emulator: CUDA threads as fibers, one block at a time per OS thread, blocks
// spread over the caller and a worker pool; barriers, warp collectives and fault diagnoses.
#include "emu/runtime.h"

#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "emu/memcheck.h"
#include "emu/traffic.h"

#if defined(__x86_64__) && defined(__ELF__)
#define CUATTN_EMU_ASM_FIBERS 1  // fiber_x86_64.S
#else
#include <ucontext.h>
#endif

namespace cuattn::emu {

__thread uint3 threadIdx;
__thread uint3 blockIdx;
__thread dim3 blockDim;
__thread dim3 gridDim;
__thread unsigned char* dynamic_smem;

namespace {

// CUDA's launch limits (compute capability 9.0; 8.0 allows less shared memory, 163 KiB).
constexpr uint64_t kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDimX = 1024;
constexpr unsigned kMaxBlockDimY = 1024;
constexpr unsigned kMaxBlockDimZ = 64;
constexpr unsigned kMaxGridDimX = 0x7fffffffu;
constexpr unsigned kMaxGridDimYZ = 65535;
constexpr size_t kMaxDynamicSmemBytes = 227 * 1024;

constexpr size_t kFiberStackBytes = 64 * 1024;
// Stack tops are staggered by this many cache lines (of kCacheLineBytes) in turn: page-aligned
// tops would all land in one cache set, and a barrier touches every fiber's top of stack.
constexpr size_t kStackColors = 64;
constexpr size_t kCacheLineBytes = 64;
constexpr size_t kDynamicSmemAlignment = 16;
// 0xFFFF is a NaN in fp16 and bf16 and 0xFFFFFFFF one in fp32: reads before writes show up.
constexpr unsigned char kSmemPoisonByte = 0xff;
constexpr unsigned kMaxPoolWorkers = 8;

// ---------------------------------------------------------------------------------------------
// Fibers: a saved context and a stack. switch_context is the one place control moves between
// fibers (the spot for AddressSanitizer's start/finish_switch_fiber annotations).
// ---------------------------------------------------------------------------------------------

using FiberEntry = void (*)(void*);

struct Stack {
  unsigned char* bottom;  // lowest usable byte, just above the guard page
  size_t bytes;
};

#ifdef CUATTN_EMU_ASM_FIBERS

extern "C" void cuattn_emu_fiber_switch(void** save_sp, void* resume_sp);
extern "C" void cuattn_emu_fiber_start();

// What a fresh Linux thread starts with (round to nearest, exceptions masked, x87 extended
// precision), so every fiber computes alike whichever OS thread runs it.
constexpr uint64_t kInitialMxcsr = 0x1f80;
constexpr uint64_t kInitialX87ControlWord = 0x037f;
// The frame cuattn_emu_fiber_switch pops, lowest address first.
enum FrameSlot { kControlWords, kR15, kR14, kR13, kR12, kRbx, kRbp, kReturnAddress, kFrameSlots };

struct FiberContext {
  void* sp = nullptr;

  // Makes the next switch to this context call entry(arg) on `stack`.
  void init(const Stack& stack, FiberEntry entry, void* arg) {
    // The stack top is 16-byte aligned, so after the frame's `ret` rsp is too, as the ABI
    // requires before cuattn_emu_fiber_start's call.
    uint64_t* frame = reinterpret_cast<uint64_t*>(stack.bottom + stack.bytes) - kFrameSlots;
    std::fill(frame, frame + kFrameSlots, 0);  // rbp 0 ends frame-pointer backtraces
    frame[kControlWords] = kInitialMxcsr | (kInitialX87ControlWord << 32);
    frame[kR13] = reinterpret_cast<uint64_t>(arg);
    frame[kR12] = reinterpret_cast<uint64_t>(entry);
    frame[kReturnAddress] = reinterpret_cast<uint64_t>(&cuattn_emu_fiber_start);
    sp = frame;
  }
};

inline void switch_context(FiberContext& from, FiberContext& to) {
  cuattn_emu_fiber_switch(&from.sp, to.sp);
}

#else  // portable fallback: ucontext (slower: swapcontext also saves the signal mask)

constexpr int kPointerHalfBits = 32;
constexpr int kTrampolineArgs = 4;

struct FiberContext {
  ucontext_t context;

  void init(const Stack& stack, FiberEntry entry, void* arg) {
    getcontext(&context);
    context.uc_stack.ss_sp = stack.bottom;
    context.uc_stack.ss_size = stack.bytes;
    context.uc_link = nullptr;
    // makecontext passes ints: split the two pointers into 32-bit halves.
    const uint64_t entry_bits = reinterpret_cast<uintptr_t>(entry);
    const uint64_t arg_bits = reinterpret_cast<uintptr_t>(arg);
    makecontext(
        &context, reinterpret_cast<void (*)()>(&trampoline), kTrampolineArgs,
        static_cast<unsigned>(entry_bits >> kPointerHalfBits), static_cast<unsigned>(entry_bits),
        static_cast<unsigned>(arg_bits >> kPointerHalfBits), static_cast<unsigned>(arg_bits));
  }

  static void trampoline(unsigned entry_high, unsigned entry_low, unsigned arg_high,
                         unsigned arg_low) {
    const auto join = [](unsigned high, unsigned low) {
      return static_cast<uintptr_t>((static_cast<uint64_t>(high) << kPointerHalfBits) | low);
    };
    reinterpret_cast<FiberEntry>(join(entry_high, entry_low))(
        reinterpret_cast<void*>(join(arg_high, arg_low)));
  }
};

inline void switch_context(FiberContext& from, FiberContext& to) {
  swapcontext(&from.context, &to.context);
}

#endif

// Fiber stacks with a PROT_NONE guard page below each, kept for reuse across blocks and launches.
class StackPool {
 public:
  StackPool() = default;
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;
  ~StackPool() {
    for (const Stack& stack : stacks_) {
      munmap(stack.bottom - guard_bytes(), guard_bytes() + kFiberStackBytes);
    }
  }

  // Makes stacks 0..count-1 available; false if the system refused the memory.
  bool reserve(size_t count) {
    while (stacks_.size() < count) {
      void* mapping = mmap(nullptr, guard_bytes() + kFiberStackBytes, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (mapping == MAP_FAILED) {
        return false;
      }
      if (mprotect(mapping, guard_bytes(), PROT_NONE) != 0) {
        munmap(mapping, guard_bytes() + kFiberStackBytes);
        return false;
      }
      const size_t color = stacks_.size() % kStackColors * kCacheLineBytes;
      stacks_.push_back(
          Stack{static_cast<unsigned char*>(mapping) + guard_bytes(), kFiberStackBytes - color});
    }
    return true;
  }

  const Stack& operator[](size_t i) const { return stacks_[i]; }

 private:
  static size_t guard_bytes() {
    static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return page;
  }

  std::vector<Stack> stacks_;
};

// ---------------------------------------------------------------------------------------------
// Asynchronous copies (cp.async) in flight, per CUDA thread.
// ---------------------------------------------------------------------------------------------

struct AsyncCopy {
  unsigned char* dst;
  const unsigned char* src;
  unsigned cp_bytes;
  unsigned src_bytes;  // read from src; the rest of dst is zero-filled
};

struct AsyncCopyQueue {
  std::vector<AsyncCopy> copies;  // issued and not landed, oldest first
  // Committed groups, oldest first: group g is copies[group_ends[g - 1], group_ends[g]) (from 0
  // for g = 0). Copies past the last end belong to no group yet.
  std::vector<size_t> group_ends;

  void clear() {
    copies.clear();
    group_ends.clear();
  }
};

// ---------------------------------------------------------------------------------------------
// Block state.
// ---------------------------------------------------------------------------------------------

enum class Wait : uint8_t {
  kRunnable,      // running, or in the run queue
  kBarrier,       // in __syncthreads
  kNamedBarrier,  // in bar.sync of ThreadState::named_barrier
  kCollective,    // in a warp collective, waiting for the rest of its mask
  kActiveMask,    // in __activemask, waiting for its warp to settle
  kExited,
};

struct ThreadState {
  FiberContext context;
  uint3 index;
  unsigned linear;  // x + y * blockDim.x + z * blockDim.x * blockDim.y
  Wait wait;
  unsigned named_barrier;  // the named barrier waited in (Wait::kNamedBarrier)
  int lane_arg;            // shuffle source lane, delta or lane mask
  uint64_t operand;        // the value this lane brings to a collective
  uint64_t result;         // written by the lane that completes the collective
  // The __activemask call site this lane waits at.
  const char* site_file;
  int site_line;
  AsyncCopyQueue async_copies;
};

// A warp collective that some lanes wait in. Every lane of `mask` must join this same one.
struct CollectiveGroup {
  Collective kind;
  unsigned mask;
  unsigned value_bytes;
  int width;
  unsigned arrived;
  const WarpExchange* exchange;  // the instruction of a kWarpExchange, else null
};

struct WarpState {
  unsigned exists;  // lanes that are threads of the block: a partial last warp has fewer
  unsigned exited;
  unsigned blocked;  // lanes switched out at a barrier, a collective or __activemask
  unsigned activemask_waiting;
  unsigned num_groups;
  // Pending collectives, masks pairwise distinct. Each has at least one waiting lane, so there
  // are at most kWarpLanes.
  CollectiveGroup groups[kWarpLanes];
};

bool is_shuffle(Collective kind) {
  return kind == Collective::kShflIdx || kind == Collective::kShflUp ||
         kind == Collective::kShflDown || kind == Collective::kShflXor;
}

const char* collective_name(Collective kind) {
  switch (kind) {
    case Collective::kSyncWarp:
      return "__syncwarp";
    case Collective::kShflIdx:
      return "__shfl_sync";
    case Collective::kShflUp:
      return "__shfl_up_sync";
    case Collective::kShflDown:
      return "__shfl_down_sync";
    case Collective::kShflXor:
      return "__shfl_xor_sync";
    case Collective::kAll:
      return "__all_sync";
    case Collective::kAny:
      return "__any_sync";
    case Collective::kBallot:
      return "__ballot_sync";
    case Collective::kWarpExchange:
      return "a warp exchange";
  }
  return "an unknown collective";
}

void append_collective(std::string& out, Collective kind, unsigned mask, int width,
                       unsigned value_bytes, const WarpExchange* exchange) {
  append_format(out, "%s(mask 0x%08x", exchange != nullptr ? exchange->name : collective_name(kind),
                mask);
  if (is_shuffle(kind)) {
    append_format(out, ", width %d, %u-byte value", width, value_bytes);
  }
  out += ')';
}

// Appends sorted thread ids as ranges: "0-6, 8-31".
void append_ranges(std::string& out, const std::vector<unsigned>& ids) {
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) {
      ++j;
    }
    append_format(out, "%s%u", i == 0 ? "" : ", ", ids[i]);
    if (j > i) {
      append_format(out, "-%u", ids[j]);
    }
    i = j + 1;
  }
}

// Appends the thread ids of the lanes set in `lanes` of warp `warp_index`, as ranges. Builds no
// temporaries: it runs on fiber stacks that a fault abandons.
void append_lanes(std::string& out, unsigned lanes, unsigned warp_index) {
  bool first = true;
  while (lanes != 0) {
    const unsigned begin = static_cast<unsigned>(__builtin_ctz(lanes));
    const unsigned above = ~((1u << begin) - 1);
    const unsigned gaps = ~lanes & above;
    const unsigned end = gaps == 0 ? kWarpLanes : static_cast<unsigned>(__builtin_ctz(gaps));
    const unsigned base = warp_index * kWarpLanes;
    append_format(out, "%s%u", first ? "" : ", ", base + begin);
    if (end - 1 > begin) {
      append_format(out, "-%u", base + end - 1);
    }
    first = false;
    lanes &= end == kWarpLanes ? 0 : ~((1u << end) - 1);
  }
}

// The source lane of a shuffle, as PTX's shfl.sync computes it: `c` packs the segment mask
// (32 - width) and the clamp lane (31, or 0 for .up). An out-of-range source means the own lane.
unsigned shuffle_source(Collective kind, unsigned lane, int lane_arg, int width) {
  const int seg_mask = kWarpSize - width;
  const int clamp = kind == Collective::kShflUp ? 0 : kWarpSize - 1;
  const int b = lane_arg & (kWarpSize - 1);  // PTX reads the low five bits of b
  const int self = static_cast<int>(lane);
  const int min_lane = self & seg_mask;
  const int max_lane = min_lane | (clamp & ~seg_mask);
  int source = self;
  bool in_range = false;
  switch (kind) {
    case Collective::kShflUp:
      source = self - b;
      in_range = source >= max_lane;
      break;
    case Collective::kShflDown:
      source = self + b;
      in_range = source <= max_lane;
      break;
    case Collective::kShflXor:
      source = self ^ b;
      in_range = source <= max_lane;
      break;
    case Collective::kShflIdx:
      source = min_lane | (b & ~seg_mask);
      in_range = source <= max_lane;
      break;
    default:
      break;
  }
  return static_cast<unsigned>(in_range ? source : self);
}

uint64_t poison_bits(unsigned value_bytes) {
  constexpr unsigned kBitsPerByte = 8;
  return value_bytes >= sizeof(uint64_t) ? ~uint64_t{0}
                                         : (uint64_t{1} << (kBitsPerByte * value_bytes)) - 1;
}

// Whether two lanes wait at the same __activemask call site.
bool same_site(const ThreadState& a, const ThreadState& b) {
  return a.site_line == b.site_line &&
         (a.site_file == b.site_file || std::strcmp(a.site_file, b.site_file) == 0);
}

// Whether two collectives are the same warp exchange instruction (or both no exchange).
bool same_exchange(const WarpExchange* a, const WarpExchange* b) {
  return a == b || (a != nullptr && b != nullptr && std::strcmp(a->name, b->name) == 0);
}

struct Launch;

// Runs blocks on one OS thread: the fibers, their stacks, the run queue, barrier and warp state.
class Runner {
 public:
  // Runs one block to completion. On a fault returns CUATTN_ERROR_KERNEL_FAULT and sets
  // `message` (without the kernel and block prefix).
  cuattn_status run_block(const Launch& launch, uint3 block_index, uint64_t block_linear,
                          std::string& message);

  void sync_threads();
  void named_barrier(unsigned id, unsigned threads, bool wait);
  uint64_t collective(Collective kind, unsigned mask, uint64_t value, unsigned value_bytes,
                      int lane_arg, int width, const WarpExchange* exchange = nullptr);
  // Stops the block with "thread T (warp W, lane L): <what>" for the running thread.
  [[noreturn]] void thread_fault(const char* what);
  // Stops the block with the memory checker's `message`.
  [[noreturn]] void memory_fault(const std::string& message);
  unsigned active_mask(const char* file, int line);

 private:
  static void fiber_main(void* runner);
  [[noreturn]] void exit_current();
  // Switches the current thread out (its `wait` says why) to the next runnable one.
  void block_current(ThreadState& current);
  void resume_next(ThreadState& current);
  void wake(ThreadState& thread);
  [[noreturn]] void fault();
  // Reports a misused collective: `call` is the caller's, `pending` the one it contradicts.
  [[noreturn]] __attribute__((noinline, cold)) void collective_fault(
      const CollectiveGroup& call, const CollectiveGroup* pending);
  void complete(unsigned warp_index, const CollectiveGroup& group, ThreadState& current);
  void settle_activemask(WarpState& warp, unsigned warp_index, ThreadState& current);
  void diagnose_stall(std::string& message) const;
  void describe_threads(std::string& out, const std::vector<unsigned>& ids) const;
  const CollectiveGroup* group_of(unsigned linear) const;

  WarpState& warp_of(const ThreadState& thread) { return warps_[thread.linear / kWarpLanes]; }
  static unsigned lane_bit(const ThreadState& thread) { return 1u << (thread.linear % kWarpLanes); }

  StackPool stacks_;
  std::unique_ptr<unsigned char[]> smem_storage_;
  unsigned char* smem_ = nullptr;  // kDynamicSmemAlignment-aligned, kMaxDynamicSmemBytes long
  std::vector<ThreadState> threads_;
  std::vector<WarpState> warps_;
  std::vector<unsigned> queue_;  // ring buffer of runnable thread ids
  unsigned queue_head_ = 0;
  unsigned queue_size_ = 0;
  unsigned num_threads_ = 0;
  unsigned live_ = 0;
  unsigned barrier_arrived_ = 0;
  // Named barriers 1-15: the count their pending arrivals name, the threads counted so far (a
  // warp at a time, as on a GPU), and per warp the lanes that arrived before the rest of it.
  static constexpr unsigned kNamedBarriers = 16;
  struct NamedBarrier {
    unsigned threads;
    unsigned arrived;
    unsigned lanes[kMaxThreadsPerBlock / kWarpLanes];
    // Of the warps counted in `arrived`: each one (bit w: warp w), and those that wait (bar.sync).
    uint32_t arrived_warps;
    uint32_t waiting_warps;
    // Threads that arrived and are not yet part of a completion.
    unsigned pending() const {
      unsigned n = arrived;
      for (unsigned l : lanes) {
        n += static_cast<unsigned>(__builtin_popcount(l));
      }
      return n;
    }
  };
  NamedBarrier named_[kNamedBarriers] = {};
  ThreadBody body_ = nullptr;
  const void* context_ = nullptr;
  FiberContext scheduler_;
  bool faulted_ = false;
  std::string fault_message_;
};

__thread Runner* current_runner;
__thread ThreadState* current_thread;

// One kernel launch, shared by the threads that run its blocks.
struct Launch {
  const char* kernel_name;
  dim3 grid;
  dim3 block;
  size_t dynamic_smem_bytes;
  ThreadBody body;
  const void* context;
  uint64_t total_blocks;
  // The memory checker's record of the launch's global stores; null when the launching thread
  // has the checker off.
  LaunchWrites* writes = nullptr;
  // The launch's traffic counts; null unless the launching thread records traffic.
  LaunchTraffic* traffic = nullptr;

  std::atomic<uint64_t> next_block{0};
  std::atomic<bool> stopped{false};  // a block failed: start no more

  std::mutex failure_mutex;
  uint64_t failed_block = std::numeric_limits<uint64_t>::max();
  cuattn_status failure = CUATTN_OK;
  std::string failure_message;

  // Pool workers inside run_blocks for this launch; guarded by the pool's mutex.
  unsigned workers = 0;
  std::condition_variable workers_done;
};

cuattn_status Runner::run_block(const Launch& launch, uint3 block_index, uint64_t block_linear,
                                std::string& message) {
  const dim3 block = launch.block;
  num_threads_ = block.x * block.y * block.z;
  if (!stacks_.reserve(num_threads_)) {
    message = "could not map fiber stacks";
    return CUATTN_ERROR_INTERNAL;
  }
  if (!smem_) {
    smem_storage_ = std::make_unique<unsigned char[]>(kMaxDynamicSmemBytes + kDynamicSmemAlignment);
    const auto address = reinterpret_cast<uintptr_t>(smem_storage_.get());
    smem_ = smem_storage_.get() + (-address & (kDynamicSmemAlignment - 1));
  }
  std::memset(smem_, kSmemPoisonByte, launch.dynamic_smem_bytes);
  poison_static_shared(kSmemPoisonByte);
  blockIdx = block_index;
  blockDim = block;
  gridDim = launch.grid;
  dynamic_smem = smem_;

  threads_.resize(num_threads_);
  for (unsigned i = 0; i < num_threads_; ++i) {
    ThreadState& t = threads_[i];
    t.context.init(stacks_[i], &fiber_main, this);
    t.index = uint3{i % block.x, i / block.x % block.y, i / (block.x * block.y)};
    t.linear = i;
    t.wait = Wait::kRunnable;
  }
  const unsigned num_warps = (num_threads_ + kWarpLanes - 1) / kWarpLanes;
  warps_.resize(num_warps);
  for (unsigned w = 0; w < num_warps; ++w) {
    const unsigned lanes = std::min(kWarpLanes, num_threads_ - w * kWarpLanes);
    WarpState& warp = warps_[w];
    warp.exists = lanes == kWarpLanes ? kFullWarpMask : (1u << lanes) - 1;
    warp.exited = 0;
    warp.blocked = 0;
    warp.activemask_waiting = 0;
    warp.num_groups = 0;
  }
  queue_.resize(num_threads_);
  for (unsigned i = 0; i < num_threads_; ++i) {
    queue_[i] = i;
  }
  queue_head_ = 0;
  queue_size_ = num_threads_;
  live_ = num_threads_;
  barrier_arrived_ = 0;
  for (NamedBarrier& b : named_) {
    b = NamedBarrier{};
  }
  body_ = launch.body;
  context_ = launch.context;
  faulted_ = false;
  fault_message_.clear();
  current_runner = this;

  // Fibers switch among themselves and come back here only when none is runnable or one
  // faulted.
  ThreadState& first = threads_[queue_[queue_head_]];
  queue_head_ = (queue_head_ + 1) % num_threads_;
  --queue_size_;
  current_thread = &first;
  threadIdx = first.index;
  memcheck_block_begin(launch.kernel_name, smem_, kMaxDynamicSmemBytes, launch.dynamic_smem_bytes,
                       launch.writes, launch.traffic, block_linear);
  memcheck_switch_to(stacks_[first.linear].bottom, stacks_[first.linear].bytes, first.linear);
  switch_context(scheduler_, first.context);
  memcheck_block_end();

  if (faulted_) {
    message = std::move(fault_message_);
    return CUATTN_ERROR_KERNEL_FAULT;
  }
  if (live_ > 0) {
    message.clear();
    diagnose_stall(message);
    return CUATTN_ERROR_KERNEL_FAULT;
  }
  for (unsigned id = 1; id < kNamedBarriers; ++id) {
    const unsigned pending = named_[id].pending();
    if (pending > 0) {
      message.clear();
      append_format(message, "the block ended with %u of the %u arrivals at named barrier %u",
                    pending, named_[id].threads, id);
      return CUATTN_ERROR_KERNEL_FAULT;
    }
  }
  return CUATTN_OK;
}

void Runner::fiber_main(void* runner) {
  Runner& self = *static_cast<Runner*>(runner);
  current_thread->async_copies.clear();  // copies a previous block left in flight are dropped
  self.body_(self.context_);
  self.exit_current();
}

void Runner::exit_current() {
  ThreadState& t = *current_thread;
  WarpState& warp = warp_of(t);
  t.wait = Wait::kExited;
  warp.exited |= lane_bit(t);
  --live_;
  if (warp.activemask_waiting != 0) {
    settle_activemask(warp, t.linear / kWarpLanes, t);
  }
  resume_next(t);
  __builtin_unreachable();  // nothing resumes an exited fiber
}

void Runner::resume_next(ThreadState& current) {
  if (queue_size_ == 0) {
    switch_context(current.context, scheduler_);
    return;
  }
  ThreadState& next = threads_[queue_[queue_head_]];
  queue_head_ = queue_head_ + 1 == num_threads_ ? 0 : queue_head_ + 1;
  --queue_size_;
  current_thread = &next;
  threadIdx = next.index;
  memcheck_switch_to(stacks_[next.linear].bottom, stacks_[next.linear].bytes, next.linear);
  switch_context(current.context, next.context);
}

void Runner::wake(ThreadState& thread) {
  thread.wait = Wait::kRunnable;
  warp_of(thread).blocked &= ~lane_bit(thread);
  const unsigned tail = queue_head_ + queue_size_;
  queue_[tail >= num_threads_ ? tail - num_threads_ : tail] = thread.linear;
  ++queue_size_;
}

void Runner::block_current(ThreadState& current) {
  WarpState& warp = warp_of(current);
  warp.blocked |= lane_bit(current);
  if (warp.activemask_waiting != 0) {
    settle_activemask(warp, current.linear / kWarpLanes, current);
    if (current.wait == Wait::kRunnable) {
      return;  // the settled __activemask was this thread's own
    }
  }
  resume_next(current);
}

void Runner::fault() {
  faulted_ = true;
  switch_context(current_thread->context, scheduler_);
  __builtin_unreachable();  // the block is abandoned: nothing resumes its fibers
}

// __syncthreads: every thread of the block must arrive. An exited thread never does, so a
// barrier some threads skipped stalls the block and diagnose_stall reports it.
void Runner::sync_threads() {
  ThreadState& current = *current_thread;
  if (++barrier_arrived_ == num_threads_) {
    barrier_arrived_ = 0;
    memcheck_barrier();
    for (ThreadState& t : threads_) {
      if (t.wait == Wait::kBarrier) {
        wake(t);
      }
    }
    return;  // the last to arrive goes on without a switch
  }
  current.wait = Wait::kBarrier;
  block_current(current);
}

void Runner::named_barrier(unsigned id, unsigned threads, bool wait) {
  ThreadState& current = *current_thread;
  const char* op = wait ? "bar.sync" : "bar.arrive";
  if (id == 0 || id >= kNamedBarriers || threads == 0 || threads % kWarpLanes != 0 ||
      threads > num_threads_) {
    std::string what;
    append_format(what,
                  "%s %u, %u: the id must be 1-15 and the count a multiple of 32 up to the "
                  "block's %u threads",
                  op, id, threads, num_threads_);
    thread_fault(what.c_str());
  }
  NamedBarrier& barrier = named_[id];
  if (barrier.threads != threads && barrier.pending() > 0) {  // the cheap test first
    std::string what;
    append_format(what, "%s %u, %u: the %u arrivals pending there named %u threads", op, id,
                  threads, barrier.pending(), barrier.threads);
    thread_fault(what.c_str());
  }
  // PTX counts a warp at a time, once all its lanes have executed the (aligned) instruction.
  const unsigned warp_index = current.linear / kWarpLanes;
  unsigned& lanes = barrier.lanes[warp_index];
  if ((lanes & lane_bit(current)) != 0) {
    std::string what;
    append_format(what, "%s %u, %u: arrives again before the rest of its warp arrived once", op, id,
                  threads);
    thread_fault(what.c_str());
  }
  lanes |= lane_bit(current);
  barrier.threads = threads;
  const WarpState& warp = warps_[warp_index];
  const unsigned live = warp.exists & ~warp.exited;
  if ((lanes & live) == live) {
    lanes = 0;
    barrier.arrived += kWarpLanes;
    barrier.arrived_warps |= uint32_t{1} << warp_index;
    if (wait) {
      barrier.waiting_warps |= uint32_t{1} << warp_index;
    }
    memcheck_named_arrival(warp_index);
  }
  if (barrier.arrived == threads) {
    memcheck_named_barrier(barrier.arrived_warps, barrier.waiting_warps);
    barrier.arrived = 0;
    barrier.arrived_warps = barrier.waiting_warps = 0;
    for (ThreadState& t : threads_) {
      if (t.wait == Wait::kNamedBarrier && t.named_barrier == id) {
        wake(t);
      }
    }
    return;  // the last to arrive goes on without a switch
  }
  if (wait) {
    current.wait = Wait::kNamedBarrier;
    current.named_barrier = id;
    block_current(current);
  }
}

uint64_t Runner::collective(Collective kind, unsigned mask, uint64_t value, unsigned value_bytes,
                            int lane_arg, int width, const WarpExchange* exchange) {
  ThreadState& current = *current_thread;
  const unsigned warp_index = current.linear / kWarpLanes;
  const unsigned bit = lane_bit(current);
  WarpState& warp = warps_[warp_index];
  const CollectiveGroup call{kind, mask, value_bytes, width, 0, exchange};

  // CUDA: the caller's own lane is in the mask, the mask names only threads of the block, and a
  // shuffle's width is a power of two up to warpSize.
  const bool bad_width = width < 1 || width > kWarpSize || (width & (width - 1)) != 0;
  if ((mask & bit) == 0 || (mask & ~warp.exists) != 0 || (is_shuffle(kind) && bad_width)) {
    collective_fault(call, nullptr);
  }
  // Join the pending collective with this mask. It must be this very collective: its lanes
  // cannot go on before this lane joins them, nor this lane before they join it (CUDA: every lane
  // of the mask executes the same intrinsic with the same mask). A pending collective over a
  // different, overlapping mask is no contradiction yet: its lanes may reach this one later, and
  // a wait that never ends is reported once the block stalls.
  CollectiveGroup* group = nullptr;
  for (unsigned g = 0; g < warp.num_groups; ++g) {
    CollectiveGroup& pending = warp.groups[g];
    if (pending.mask != mask) {
      continue;
    }
    if (pending.kind != kind || pending.width != width || pending.value_bytes != value_bytes ||
        !same_exchange(pending.exchange, exchange)) {
      collective_fault(call, &pending);
    }
    group = &pending;
    break;
  }
  if (group == nullptr) {
    group = &warp.groups[warp.num_groups++];
    *group = call;
  }
  group->arrived |= bit;
  current.operand = value;
  current.lane_arg = lane_arg;
  if (group->arrived != mask) {
    current.wait = Wait::kCollective;
    block_current(current);
    return current.result;
  }
  complete(warp_index, *group, current);
  *group = warp.groups[--warp.num_groups];
  return current.result;
}

void Runner::collective_fault(const CollectiveGroup& call, const CollectiveGroup* pending) {
  const ThreadState& current = *current_thread;
  const unsigned warp_index = current.linear / kWarpLanes;
  const WarpState& warp = warps_[warp_index];
  append_format(fault_message_, "thread %u (warp %u, lane %u) called ", current.linear, warp_index,
                current.linear % kWarpLanes);
  append_collective(fault_message_, call.kind, call.mask, call.width, call.value_bytes,
                    call.exchange);
  if (pending != nullptr) {
    fault_message_ += " while threads ";
    append_lanes(fault_message_, pending->arrived, warp_index);
    fault_message_ += " wait in ";
    append_collective(fault_message_, pending->kind, pending->mask, pending->width,
                      pending->value_bytes, pending->exchange);
  } else if ((call.mask & lane_bit(current)) == 0) {
    fault_message_ += ", a mask without its own lane";
  } else if ((call.mask & ~warp.exists) != 0) {
    fault_message_ += ", naming threads ";
    append_lanes(fault_message_, call.mask & ~warp.exists, warp_index);
    append_format(fault_message_, " that do not exist: the block has %u threads", num_threads_);
  } else {
    fault_message_ += "; width must be a power of two in 1..32";
  }
  fault();
}

// Runs on the last lane to arrive: computes every lane's result and wakes the others.
void Runner::complete(unsigned warp_index, const CollectiveGroup& group, ThreadState& current) {
  ThreadState* lanes = &threads_[warp_index * kWarpLanes];
  const unsigned mask = group.mask;
  if (group.kind == Collective::kWarpExchange) {
    // Each lane's operand is the address of its own operands.
    void* lane_data[kWarpLanes] = {};
    for (unsigned m = mask; m != 0; m &= m - 1) {
      const unsigned l = static_cast<unsigned>(__builtin_ctz(m));
      lane_data[l] = reinterpret_cast<void*>(static_cast<uintptr_t>(lanes[l].operand));
    }
    // The lanes reported their own accesses; compute works on their operands on their stacks.
    const MemcheckPause pause;
    group.exchange->compute(lane_data, mask);
  } else if (is_shuffle(group.kind)) {
    // A source lane outside the mask did not take part: CUDA leaves the value undefined; the
    // emulator returns all ones (a NaN for floats) so that using it shows.
    const uint64_t poison = poison_bits(group.value_bytes);
    for (unsigned m = mask; m != 0; m &= m - 1) {
      const unsigned l = static_cast<unsigned>(__builtin_ctz(m));
      const unsigned source = shuffle_source(group.kind, l, lanes[l].lane_arg, group.width);
      lanes[l].result = (mask >> source & 1) ? lanes[source].operand : poison;
    }
  } else {
    unsigned predicates = 0;
    for (unsigned m = mask; m != 0; m &= m - 1) {
      const unsigned l = static_cast<unsigned>(__builtin_ctz(m));
      predicates |= lanes[l].operand != 0 ? 1u << l : 0u;
    }
    uint64_t result = 0;  // __syncwarp
    if (group.kind == Collective::kAll) {
      result = predicates == mask;
    } else if (group.kind == Collective::kAny) {
      result = predicates != 0;
    } else if (group.kind == Collective::kBallot) {
      result = predicates;
    }
    for (unsigned m = mask; m != 0; m &= m - 1) {
      lanes[__builtin_ctz(m)].result = result;
    }
    if (group.kind == Collective::kSyncWarp) {
      memcheck_syncwarp(warp_index, mask);
    }
  }
  for (unsigned m = mask & ~lane_bit(current); m != 0; m &= m - 1) {
    wake(lanes[__builtin_ctz(m)]);
  }
}

unsigned Runner::active_mask(const char* file, int line) {
  ThreadState& current = *current_thread;
  WarpState& warp = warp_of(current);
  current.site_file = file;
  current.site_line = line;
  current.wait = Wait::kActiveMask;
  warp.activemask_waiting |= lane_bit(current);
  block_current(current);
  return static_cast<unsigned>(current.result);
}

// Once every live lane of the warp is blocked, each __activemask call site answers the lanes
// waiting there: the lanes that reached it together, as converged lanes would on a GPU.
void Runner::settle_activemask(WarpState& warp, unsigned warp_index, ThreadState& current) {
  if (((warp.blocked | warp.exited) & warp.exists) != warp.exists) {
    return;
  }
  ThreadState* lanes = &threads_[warp_index * kWarpLanes];
  while (warp.activemask_waiting != 0) {
    const ThreadState& first = lanes[__builtin_ctz(warp.activemask_waiting)];
    unsigned at_site = 0;
    for (unsigned l = 0; l < kWarpLanes; ++l) {
      if ((warp.activemask_waiting >> l & 1) && same_site(lanes[l], first)) {
        at_site |= 1u << l;
      }
    }
    warp.activemask_waiting &= ~at_site;
    for (unsigned l = 0; l < kWarpLanes; ++l) {
      if ((at_site >> l & 1) == 0) {
        continue;
      }
      lanes[l].result = at_site;
      if (&lanes[l] == &current) {
        current.wait = Wait::kRunnable;
        warp.blocked &= ~lane_bit(current);
      } else {
        wake(lanes[l]);
      }
    }
  }
}

const CollectiveGroup* Runner::group_of(unsigned linear) const {
  const WarpState& warp = warps_[linear / kWarpLanes];
  for (unsigned g = 0; g < warp.num_groups; ++g) {
    if (warp.groups[g].arrived >> (linear % kWarpLanes) & 1) {
      return &warp.groups[g];
    }
  }
  return nullptr;
}

// Appends "32-47 (exited), 48-63 (waiting at __syncthreads)" for sorted thread ids.
void Runner::describe_threads(std::string& out, const std::vector<unsigned>& ids) const {
  const auto state = [&](unsigned id) {
    std::string s;
    const ThreadState& t = threads_[id];
    switch (t.wait) {
      case Wait::kExited:
        s = "exited";
        break;
      case Wait::kBarrier:
        s = "waiting at __syncthreads";
        break;
      case Wait::kNamedBarrier:
        append_format(s, "waiting at bar.sync %u", t.named_barrier);
        break;
      case Wait::kCollective: {
        const CollectiveGroup* g = group_of(id);
        s = "waiting in ";
        append_collective(s, g->kind, g->mask, g->width, g->value_bytes, g->exchange);
        break;
      }
      case Wait::kActiveMask:
        s = "waiting at __activemask";
        break;
      case Wait::kRunnable:
        s = "runnable";
        break;
    }
    return s;
  };
  for (size_t i = 0; i < ids.size();) {
    const std::string label = state(ids[i]);
    std::vector<unsigned> run;
    size_t j = i;
    while (j < ids.size() && state(ids[j]) == label) {
      run.push_back(ids[j]);
      ++j;
    }
    if (i > 0) {
      out += ", ";
    }
    append_ranges(out, run);
    append_format(out, " (%s)", label.c_str());
    i = j;
  }
}

// No thread can run and some have not exited: name the collective or barrier that cannot
// complete, who reached it and what the others are doing instead.
void Runner::diagnose_stall(std::string& message) const {
  for (unsigned w = 0; w < warps_.size(); ++w) {
    const WarpState& warp = warps_[w];
    if (warp.num_groups == 0) {
      continue;
    }
    const CollectiveGroup& g = warp.groups[0];
    std::vector<unsigned> arrived;
    std::vector<unsigned> missing;
    for (unsigned l = 0; l < kWarpLanes; ++l) {
      if (g.mask >> l & 1) {
        ((g.arrived >> l & 1) ? arrived : missing).push_back(w * kWarpLanes + l);
      }
    }
    append_collective(message, g.kind, g.mask, g.width, g.value_bytes, g.exchange);
    append_format(message, " in warp %u reached by threads ", w);
    append_ranges(message, arrived);
    message += " but not ";
    describe_threads(message, missing);
    return;
  }
  for (unsigned id = 1; id < kNamedBarriers; ++id) {
    std::vector<unsigned> waiting;
    std::vector<unsigned> others;
    for (const ThreadState& t : threads_) {
      const bool here = t.wait == Wait::kNamedBarrier && t.named_barrier == id;
      (here ? waiting : others).push_back(t.linear);
    }
    if (waiting.empty()) {
      continue;
    }
    append_format(message, "bar.sync %u (%u threads, %u arrived) waited in by threads ", id,
                  named_[id].threads, named_[id].pending());
    append_ranges(message, waiting);
    message += "; the others ";
    describe_threads(message, others);
    return;
  }
  std::vector<unsigned> arrived;
  std::vector<unsigned> missing;
  for (const ThreadState& t : threads_) {
    (t.wait == Wait::kBarrier ? arrived : missing).push_back(t.linear);
  }
  message += "__syncthreads reached by threads ";
  append_ranges(message, arrived);
  message += " but not ";
  describe_threads(message, missing);
}

// ---------------------------------------------------------------------------------------------
// Launches: blocks go to the calling thread and a persistent worker pool.
// ---------------------------------------------------------------------------------------------

uint3 block_index_of(uint64_t linear, dim3 grid) {
  return uint3{static_cast<unsigned>(linear % grid.x),
               static_cast<unsigned>(linear / grid.x % grid.y),
               static_cast<unsigned>(linear / (uint64_t{grid.x} * grid.y))};
}

// Takes blocks of `launch` until none is left or one failed.
void run_blocks(Launch& launch, Runner& runner) {
  std::string message;
  while (!launch.stopped.load(std::memory_order_relaxed)) {
    const uint64_t b = launch.next_block.fetch_add(1, std::memory_order_relaxed);
    if (b >= launch.total_blocks) {
      return;
    }
    const uint3 index = block_index_of(b, launch.grid);
    const cuattn_status status = runner.run_block(launch, index, b, message);
    if (status == CUATTN_OK) {
      continue;
    }
    launch.stopped.store(true, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(launch.failure_mutex);
    if (b < launch.failed_block) {  // report the lowest failed block that ran
      launch.failed_block = b;
      launch.failure = status;
      launch.failure_message.clear();
      append_format(launch.failure_message, "kernel %s block (%u,%u,%u): %s", launch.kernel_name,
                    index.x, index.y, index.z, message.c_str());
    }
  }
}

// Runners for launching threads, which come and go (cargo test starts many): a runner's stacks
// outlive the thread and serve the next launch, wherever it comes from.
class RunnerCache {
 public:
  std::unique_ptr<Runner> acquire() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (idle_.empty()) {
      return std::make_unique<Runner>();
    }
    std::unique_ptr<Runner> runner = std::move(idle_.back());
    idle_.pop_back();
    return runner;
  }

  void release(std::unique_ptr<Runner> runner) {
    std::lock_guard<std::mutex> lock(mutex_);
    idle_.push_back(std::move(runner));
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<Runner>> idle_;
};

unsigned available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    return static_cast<unsigned>(CPU_COUNT(&set));
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

class WorkerPool {
 public:
  WorkerPool() {
    const unsigned count = std::min(available_cores(), kMaxPoolWorkers);
    for (unsigned i = 0; i < count; ++i) {
      std::thread([this] { worker_main(); }).detach();
    }
    num_workers_ = count;
  }

  // Runs every block of `launch` on the caller's runner and whichever workers join.
  void run(Launch& launch, Runner& runner) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      launches_.push_back(&launch);
    }
    const uint64_t helpers_wanted = launch.total_blocks - 1;
    if (helpers_wanted >= num_workers_) {
      work_.notify_all();
    } else {
      for (uint64_t i = 0; i < helpers_wanted; ++i) {
        work_.notify_one();
      }
    }
    run_blocks(launch, runner);
    std::unique_lock<std::mutex> lock(mutex_);
    remove(launch);
    launch.workers_done.wait(lock, [&] { return launch.workers == 0; });
  }

 private:
  void worker_main() {
    Runner runner;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      work_.wait(lock, [&] { return !launches_.empty(); });
      Launch& launch = *launches_.front();
      ++launch.workers;
      lock.unlock();
      run_blocks(launch, runner);
      lock.lock();
      remove(launch);  // its blocks are all taken
      if (--launch.workers == 0) {
        launch.workers_done.notify_all();  // under the mutex: the launch dies once it returns
      }
    }
  }

  void remove(Launch& launch) {
    launches_.erase(std::remove(launches_.begin(), launches_.end(), &launch), launches_.end());
  }

  std::mutex mutex_;
  std::condition_variable work_;
  std::vector<Launch*> launches_;
  unsigned num_workers_ = 0;
};

// Leaked on purpose: workers block on the pool forever, and process exit must not wait for them.
WorkerPool& worker_pool() {
  static WorkerPool* pool = new WorkerPool();
  return *pool;
}

RunnerCache& runner_cache() {
  static RunnerCache* cache = new RunnerCache();
  return *cache;
}

cuattn_status validate(const char* name, dim3 grid, dim3 block, size_t dynamic_smem_bytes) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0) {
    return fail(CUATTN_ERROR_LAUNCH_FAILED,
                "kernel %s: grid (%u,%u,%u) block (%u,%u,%u) has a zero dimension", name, grid.x,
                grid.y, grid.z, block.x, block.y, block.z);
  }
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads > kMaxThreadsPerBlock) {
    return fail(CUATTN_ERROR_LAUNCH_FAILED,
                "kernel %s: block (%u,%u,%u) has %llu threads; CUDA allows at most %llu", name,
                block.x, block.y, block.z, static_cast<unsigned long long>(threads),
                static_cast<unsigned long long>(kMaxThreadsPerBlock));
  }
  if (block.x > kMaxBlockDimX || block.y > kMaxBlockDimY || block.z > kMaxBlockDimZ) {
    return fail(CUATTN_ERROR_LAUNCH_FAILED,
                "kernel %s: block (%u,%u,%u) exceeds CUDA's block dimensions (%u,%u,%u)", name,
                block.x, block.y, block.z, kMaxBlockDimX, kMaxBlockDimY, kMaxBlockDimZ);
  }
  if (grid.x > kMaxGridDimX || grid.y > kMaxGridDimYZ || grid.z > kMaxGridDimYZ) {
    return fail(CUATTN_ERROR_LAUNCH_FAILED,
                "kernel %s: grid (%u,%u,%u) exceeds CUDA's grid dimensions (%u,%u,%u)", name,
                grid.x, grid.y, grid.z, kMaxGridDimX, kMaxGridDimYZ, kMaxGridDimYZ);
  }
  if (dynamic_smem_bytes > kMaxDynamicSmemBytes) {
    return fail(CUATTN_ERROR_LAUNCH_FAILED,
                "kernel %s: %zu bytes of dynamic shared memory; CUDA allows at most %zu per block",
                name, dynamic_smem_bytes, kMaxDynamicSmemBytes);
  }
  return CUATTN_OK;
}

}  // namespace

void sync_threads() { current_runner->sync_threads(); }

void named_barrier(unsigned id, unsigned threads, bool wait) {
  current_runner->named_barrier(id, threads, wait);
}

uint64_t warp_collective(Collective kind, unsigned mask, uint64_t value, unsigned value_bytes,
                         int lane_arg, int width) {
  return current_runner->collective(kind, mask, value, value_bytes, lane_arg, width);
}

unsigned active_mask(const char* file, int line) { return current_runner->active_mask(file, line); }

cuattn_status launch_erased(const char* kernel_name, dim3 grid, dim3 block,
                            size_t dynamic_smem_bytes, ThreadBody body, const void* context) {
  const cuattn_status valid = validate(kernel_name, grid, block, dynamic_smem_bytes);
  if (valid != CUATTN_OK) {
    return valid;
  }
  Launch launch;
  launch.kernel_name = kernel_name;
  launch.grid = grid;
  launch.block = block;
  launch.dynamic_smem_bytes = dynamic_smem_bytes;
  launch.body = body;
  launch.context = context;
  launch.total_blocks = uint64_t{grid.x} * grid.y * grid.z;
  const std::unique_ptr<LaunchWrites, void (*)(LaunchWrites*)> writes(
      memcheck_enabled_for_launch() ? memcheck_launch_begin(grid.x, grid.y) : nullptr,
      memcheck_launch_end);
  launch.writes = writes.get();
  // Counted only in checked blocks (memcheck_enabled_for_launch holds while the thread records).
  LaunchTraffic* const traffic = writes != nullptr ? traffic_launch_begin() : nullptr;
  launch.traffic = traffic;

  std::unique_ptr<Runner> runner = runner_cache().acquire();
  if (launch.total_blocks == 1) {
    run_blocks(launch, *runner);
  } else {
    worker_pool().run(launch, *runner);
  }
  runner_cache().release(std::move(runner));
  traffic_launch_end(traffic, kernel_name, launch.failure == CUATTN_OK);

  if (launch.failure != CUATTN_OK) {
    return fail(launch.failure, "%s", launch.failure_message.c_str());
  }
  return CUATTN_OK;
}

// ---------------------------------------------------------------------------------------------
// Support for the emulated primitives of csrc/arch (runtime.h): warp exchanges, faults,
// shared-memory address checks and the cp.async queue.
// ---------------------------------------------------------------------------------------------

namespace {

// Room for a primitive's fault message: formatted on the fiber stack, which a fault abandons, so
// it must not allocate.
constexpr size_t kFaultTextBytes = 512;

// Lands one copy: reads its source (nothing when src_bytes is 0) and zero-fills the rest.
void land(const AsyncCopy& copy, int linear_tid) {
  if (copy.src_bytes > 0) {
    memcheck_access(copy.src, copy.src_bytes, /*is_write=*/false, linear_tid);
    std::memcpy(copy.dst, copy.src, copy.src_bytes);
  }
  std::memset(copy.dst + copy.src_bytes, 0, copy.cp_bytes - copy.src_bytes);
  memcheck_async_land(copy.dst, copy.cp_bytes, linear_tid);
}

}  // namespace

void Runner::memory_fault(const std::string& message) {
  fault_message_ = message;
  fault();
}

void memcheck_stop_block(const std::string& message) { current_runner->memory_fault(message); }

void Runner::thread_fault(const char* what) {
  const ThreadState& current = *current_thread;
  append_format(fault_message_, "thread %u (warp %u, lane %u): %s", current.linear,
                current.linear / kWarpLanes, current.linear % kWarpLanes, what);
  fault();
}

void warp_exchange(const WarpExchange& op, unsigned mask, void* lane_data) {
  current_runner->collective(Collective::kWarpExchange, mask,
                             reinterpret_cast<uintptr_t>(lane_data),
                             /*value_bytes=*/0, /*lane_arg=*/0, kWarpSize, &op);
}

bool is_shared_address(const void* address, size_t bytes) {
  const auto begin = reinterpret_cast<uintptr_t>(address);
  const uintptr_t end = begin + bytes;
  const auto arena = reinterpret_cast<uintptr_t>(dynamic_smem);
  if (arena <= begin && end <= arena + kMaxDynamicSmemBytes) {
    return true;
  }
  // This OS thread's instance of the thread_local storage of the module holding the emulator,
  // and with it the kernels' static __shared__ arrays.
  const TlsBlocks& tls = this_thread_tls_blocks();
  return tls.own_begin <= begin && end <= tls.own_end;
}

void kernel_fault(const char* format, ...) {
  char what[kFaultTextBytes];
  va_list args;
  va_start(args, format);
  std::vsnprintf(what, sizeof(what), format, args);
  va_end(args);
  current_runner->thread_fault(what);
}

void async_copy_issue(const char* instruction, void* smem_dst, const void* gmem_src,
                      unsigned cp_bytes, unsigned src_bytes) {
  // PTX ISA, "Addresses as Operands": both addresses naturally aligned to the access size.
  if (reinterpret_cast<uintptr_t>(smem_dst) % cp_bytes != 0 ||
      reinterpret_cast<uintptr_t>(gmem_src) % cp_bytes != 0) {
    kernel_fault("%s: misaligned address: dst %p and src %p must be %u-byte aligned", instruction,
                 smem_dst, gmem_src, cp_bytes);
  }
  if (!is_shared_address(smem_dst, cp_bytes)) {
    kernel_fault("%s: dst %p is not in shared memory", instruction, smem_dst);
  }
  if (src_bytes > 0 && is_shared_address(gmem_src, src_bytes)) {
    kernel_fault("%s: src %p is in shared memory, not global memory", instruction, gmem_src);
  }
  if (src_bytes > cp_bytes) {
    kernel_fault("%s: src-size %u exceeds cp-size %u", instruction, src_bytes, cp_bytes);
  }
  ThreadState& current = *current_thread;
  memcheck_async_issue(smem_dst, cp_bytes, static_cast<int>(current.linear));
  std::memset(smem_dst, kSmemPoisonByte, cp_bytes);
  current.async_copies.copies.push_back(AsyncCopy{static_cast<unsigned char*>(smem_dst),
                                                  static_cast<const unsigned char*>(gmem_src),
                                                  cp_bytes, src_bytes});
}

void async_copy_commit_group() {
  AsyncCopyQueue& queue = current_thread->async_copies;
  queue.group_ends.push_back(queue.copies.size());
}

void async_copy_wait_group(int pending_groups) {
  ThreadState& current = *current_thread;
  AsyncCopyQueue& queue = current.async_copies;
  const size_t groups = queue.group_ends.size();
  if (groups <= static_cast<size_t>(pending_groups)) {
    return;
  }
  const size_t done_groups = groups - static_cast<size_t>(pending_groups);
  const size_t done_copies = queue.group_ends[done_groups - 1];
  for (size_t i = 0; i < done_copies; ++i) {
    land(queue.copies[i], static_cast<int>(current.linear));
  }
  queue.copies.erase(queue.copies.begin(), queue.copies.begin() + done_copies);
  queue.group_ends.erase(queue.group_ends.begin(), queue.group_ends.begin() + done_groups);
  for (size_t& end : queue.group_ends) {
    end -= done_copies;
  }
}

void async_copy_wait_all() {
  ThreadState& current = *current_thread;
  for (const AsyncCopy& copy : current.async_copies.copies) {
    land(copy, static_cast<int>(current.linear));
  }
  current.async_copies.clear();
}

}  // namespace cuattn::emu
