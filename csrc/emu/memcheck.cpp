// memcheck.cpp: the emulator's memory checker (see memcheck.h): the ThreadSanitizer callbacks that
// instrumented kernel code calls at each access, the registry of device allocations, and the
// per-byte shadow of shared memory behind race, initialization and cp.async checks.
#include "emu/memcheck.h"

#include <cxxabi.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/warp.h"
#include "cuattn_internal.h"
#include "emu/traffic.h"

// The per-access path, inlined into each callback; faults and lookups stay out of line.
#define CUATTN_MEMCHECK_INLINE __attribute__((always_inline)) inline

namespace cuattn::emu {
namespace {

constexpr unsigned kAllLanes = 0xffffffffu;
constexpr unsigned kMaxWarpsPerBlock = 1024 / kWarpLanes;
// Freed allocations remembered, so that a use after free says so. The oldest are forgotten.
constexpr size_t kMaxFreedAllocations = 4096;
// Block starts renumber the barrier epochs from 1 once they pass this; no block runs 2^31
// barriers, so epochs never wrap inside one.
constexpr uint32_t kEpochRenumberLimit = 1u << 31;

// ---------------------------------------------------------------------------------------------
// Access records: one 64-bit word saying which thread touched a shared-memory byte, in which
// barrier interval, and how many __syncwarps its warp had completed then.
// ---------------------------------------------------------------------------------------------

constexpr int kEpochBits = 32;  // the barrier epoch (0: no access)
constexpr int kTidBits = 10;    // the thread, < 1024
constexpr int kSyncBits = 20;   // its warp's __syncwarp count, modulo 2^20
constexpr int kTidShift = kEpochBits;
constexpr int kSyncShift = kTidShift + kTidBits;
constexpr int kAtomicBit = kSyncShift + kSyncBits;  // the access was an atomic
constexpr int kInFlightBit = kAtomicBit + 1;        // a cp.async is still to write the byte
static_assert(kInFlightBit < 64, "a record is one 64-bit word");
constexpr uint64_t kTidMask = (uint64_t{1} << kTidBits) - 1;
constexpr uint32_t kSyncMask = (uint32_t{1} << kSyncBits) - 1;
// No record has every bit set: epochs stay below kEpochRenumberLimit.
constexpr uint64_t kNoRecord = ~uint64_t{0};

uint32_t epoch_of(uint64_t record) { return static_cast<uint32_t>(record); }
unsigned tid_of(uint64_t record) { return static_cast<unsigned>(record >> kTidShift & kTidMask); }
uint32_t syncs_of(uint64_t record) {
  return static_cast<uint32_t>(record >> kSyncShift) & kSyncMask;
}
bool is_atomic(uint64_t record) { return (record >> kAtomicBit & 1) != 0; }
bool is_in_flight(uint64_t record) { return (record >> kInFlightBit & 1) != 0; }

// The shadow of a shared-memory space: three records per byte, each kind in its own array so
// that the records of one access lie together. Two reads are kept so that a write can be checked
// against a read by another thread even when the writer itself read the byte last.
struct Shadow {
  std::vector<uint64_t> write;       // the last write
  std::vector<uint64_t> read;        // the last read
  std::vector<uint64_t> other_read;  // the last read by a thread other than read's

  size_t size() const { return write.size(); }
  void resize(size_t bytes) {
    write.resize(bytes);
    read.resize(bytes);
    other_read.resize(bytes);
  }
  void clear() {
    std::fill(write.begin(), write.end(), 0);
    std::fill(read.begin(), read.end(), 0);
    std::fill(other_read.begin(), other_read.end(), 0);
  }
};

// The records of the bytes [offset, offset + bytes) of a Shadow.
struct ShadowSpan {
  uint64_t* write;
  uint64_t* read;
  uint64_t* other_read;
  size_t bytes;

  ShadowSpan(Shadow& shadow, size_t offset, size_t count)
      : write(shadow.write.data() + offset),
        read(shadow.read.data() + offset),
        other_read(shadow.other_read.data() + offset),
        bytes(count) {}

  // Whether every byte holds the same three records (without branches: the loop vectorizes).
  CUATTN_MEMCHECK_INLINE bool uniform() const {
    uint64_t differ = 0;
    for (size_t i = 1; i < bytes; ++i) {
      differ |= (write[i] ^ write[0]) | (read[i] ^ read[0]) | (other_read[i] ^ other_read[0]);
    }
    return differ == 0;
  }
};

// kAtomic: a read-modify-write (an exchange, a fetch-and-op, a compare-and-swap); an atomic load
// and store are checked as one (they do not race with other atomics) but counted as what they do.
enum class Kind : uint8_t { kRead, kWrite, kAtomic, kAtomicLoad, kAtomicStore, kAsyncIssue };

bool is_atomic_kind(Kind kind) {
  return kind == Kind::kAtomic || kind == Kind::kAtomicLoad || kind == Kind::kAtomicStore;
}

const char* verb(Kind kind) {
  switch (kind) {
    case Kind::kRead:
      return "read";
    case Kind::kWrite:
      return "wrote";
    case Kind::kAtomic:
      return "atomically updated";
    case Kind::kAtomicLoad:
      return "atomically read";
    case Kind::kAtomicStore:
      return "atomically wrote";
    case Kind::kAsyncIssue:
      return "issued a cp.async to";
  }
  return "accessed";
}

// The __syncwarps one warp completed in the running block: how many, and the masks of the latest.
struct WarpSyncs {
  static constexpr uint32_t kHistory = 8;
  uint32_t count;
  uint32_t count_at_full;  // count after the latest __syncwarp of the whole warp
  unsigned masks[kHistory];

  void reset() { count = count_at_full = 0; }

  void add(unsigned mask) {
    masks[count++ % kHistory] = mask;
    if (mask == kAllLanes) {
      count_at_full = count;
    }
  }

  // Whether a __syncwarp naming lanes a and b completed since the warp's count was `since`
  // (modulo 2^kSyncBits). Beyond the kept history it answers yes: a missed race is better than
  // a false one.
  CUATTN_MEMCHECK_INLINE bool orders(uint32_t since, unsigned lane_a, unsigned lane_b) const {
    const uint32_t completed = (count - since) & kSyncMask;
    // A whole-warp __syncwarp since: the usual case, answered at once.
    return completed > ((count - count_at_full) & kSyncMask) ||
           orders_by_history(completed, lane_a, lane_b);
  }

  __attribute__((noinline)) bool orders_by_history(uint32_t completed, unsigned lane_a,
                                                   unsigned lane_b) const {
    const unsigned both = 1u << lane_a | 1u << lane_b;
    for (uint32_t i = 0; i < std::min(completed, kHistory); ++i) {
      if ((masks[(count - 1 - i) % kHistory] & both) == both) {
        return true;
      }
    }
    return completed > kHistory;
  }
};

struct Range {
  uintptr_t begin = 0;
  uintptr_t end = 0;

  bool contains(uintptr_t addr, size_t bytes) const {
    return addr >= begin && addr <= end && bytes <= end - addr;
  }
};

void append_thread(std::string& out, unsigned tid) {
  append_format(out, "thread %u (warp %u, lane %u)", tid, tid / kWarpLanes, tid % kWarpLanes);
}

// ---------------------------------------------------------------------------------------------
// The registry of emulated device allocations, shared by every thread.
// ---------------------------------------------------------------------------------------------

struct Allocation {
  uintptr_t begin;
  uint64_t bytes;
  std::string label;
  uint64_t serial;  // registration order, to evict the oldest freed allocations

  uintptr_t end() const { return begin + bytes; }
};

void append_allocation(std::string& out, const Allocation& a) {
  if (a.label.empty()) {
    out += "an unlabeled allocation";
  } else {
    append_format(out, "allocation \"%s\"", a.label.c_str());
  }
  append_format(out, " (%" PRIu64 " bytes at 0x%" PRIxPTR ")", a.bytes, a.begin);
}

class Registry {
 public:
  cuattn_status add(const void* ptr, uint64_t bytes, const char* label) {
    const auto begin = reinterpret_cast<uintptr_t>(ptr);
    if (ptr == nullptr || bytes > UINTPTR_MAX - begin) {
      return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                  "cuattn_emu_register_allocation: ptr %p, bytes = %" PRIu64
                  ": ptr must be non-null and the range must fit the address space",
                  ptr, bytes);
    }
    const uintptr_t end = begin + bytes;
    std::unique_lock<std::shared_mutex> lock(mutex_);
    const auto next = live_.lower_bound(begin);
    const Allocation* clash = nullptr;
    if (next != live_.end() && (next->first == begin || next->first < end)) {
      clash = &next->second;
    } else if (next != live_.begin() && std::prev(next)->second.end() > begin) {
      clash = &std::prev(next)->second;
    }
    if (clash != nullptr) {
      std::string existing;
      append_allocation(existing, *clash);
      return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                  "cuattn_emu_register_allocation: %" PRIu64
                  " bytes at %p overlap %s, which is still registered",
                  bytes, ptr, existing.c_str());
    }
    // The memory is in use again: forget the freed allocations it overlapped.
    auto freed = freed_.upper_bound(begin);
    if (freed != freed_.begin() && std::prev(freed)->second.end() > begin) {
      --freed;
    }
    while (freed != freed_.end() && freed->first < std::max(end, begin + 1)) {
      freed = freed_.erase(freed);
    }
    live_.emplace(begin, Allocation{begin, bytes, label != nullptr ? label : "", next_serial_++});
    generation_.fetch_add(1, std::memory_order_release);
    return CUATTN_OK;
  }

  cuattn_status remove(const void* ptr) {
    const auto begin = reinterpret_cast<uintptr_t>(ptr);
    std::unique_lock<std::shared_mutex> lock(mutex_);
    const auto it = live_.find(begin);
    if (it == live_.end()) {
      const auto freed = freed_.find(begin);
      if (freed == freed_.end()) {
        return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                    "cuattn_emu_unregister_allocation: %p is not the start of a registered "
                    "allocation",
                    ptr);
      }
      std::string previous;
      append_allocation(previous, freed->second);
      return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                  "cuattn_emu_unregister_allocation: %p was already unregistered: freed %s", ptr,
                  previous.c_str());
    }
    const uint64_t serial = it->second.serial;
    freed_.insert(live_.extract(it));
    freed_order_.emplace_back(begin, serial);
    while (freed_order_.size() > kMaxFreedAllocations) {
      const auto [oldest, oldest_serial] = freed_order_.front();
      freed_order_.pop_front();
      const auto stale = freed_.find(oldest);
      if (stale != freed_.end() && stale->second.serial == oldest_serial) {
        freed_.erase(stale);
      }
    }
    generation_.fetch_add(1, std::memory_order_release);
    return CUATTN_OK;
  }

  // The live allocation holding all of [addr, addr + bytes), if there is one.
  bool find(uintptr_t addr, size_t bytes, Range* found) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    auto it = live_.upper_bound(addr);
    if (it == live_.begin()) {
      return false;
    }
    --it;
    const Range range{it->second.begin, it->second.end()};
    if (!range.contains(addr, bytes)) {
      return false;
    }
    *found = range;
    return true;
  }

  // Appends where [addr, addr + bytes) lies: inside a freed allocation, straddling the end of a
  // live one, or how far it is from the nearest live one.
  void describe(uintptr_t addr, size_t bytes, std::string& out) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    auto freed = freed_.upper_bound(addr);
    if (freed != freed_.begin() && addr < std::prev(freed)->second.end()) {
      const Allocation& a = std::prev(freed)->second;
      out += "inside freed ";
      append_allocation(out, a);
      append_format(out, ", at offset %" PRIuPTR, addr - a.begin);
      return;
    }
    const auto next = live_.upper_bound(addr);
    const Allocation* before = next == live_.begin() ? nullptr : &std::prev(next)->second;
    const Allocation* after = next == live_.end() ? nullptr : &next->second;
    if (before != nullptr && addr < before->end()) {
      append_format(out, "of which the last %" PRIuPTR " bytes lie past the end of ",
                    addr + bytes - before->end());
      append_allocation(out, *before);
      return;
    }
    out += "outside every allocation: ";
    const uintptr_t past_end = before != nullptr ? addr - before->end() : UINTPTR_MAX;
    const uintptr_t short_of = after != nullptr ? after->begin - addr : UINTPTR_MAX;
    if (before == nullptr && after == nullptr) {
      out += "none is registered";
    } else if (past_end <= short_of) {
      append_format(out, "%" PRIuPTR " bytes past the end of ", past_end);
      append_allocation(out, *before);
    } else {
      append_format(out, "%" PRIuPTR " bytes before ", short_of);
      append_allocation(out, *after);
    }
  }

  // Appends "offset N of allocation ..." for an address inside a live allocation, or "a
  // module's data" (a __device__ variable, a constant).
  void describe_inside(uintptr_t addr, std::string& out) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    auto it = live_.upper_bound(addr);
    if (it == live_.begin() || addr >= std::prev(it)->second.end()) {
      out += "a module's data";
      return;
    }
    const Allocation& a = std::prev(it)->second;
    append_format(out, "offset %" PRIuPTR " of ", addr - a.begin);
    append_allocation(out, a);
  }

  cuattn_status relabel(const void* ptr, const char* label) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    const auto it = live_.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == live_.end()) {
      return fail(CUATTN_ERROR_INVALID_ARGUMENT,
                  "cuattn_emu_relabel_allocation: %p is not the start of a registered allocation",
                  ptr);
    }
    it->second.label = label != nullptr ? label : "";
    return CUATTN_OK;
  }

  // The allocation starting at `begin`, live or remembered as freed.
  bool at(uintptr_t begin, std::string* label, uint64_t* bytes) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    auto it = live_.find(begin);
    if (it == live_.end()) {
      it = freed_.find(begin);
      if (it == freed_.end()) {
        return false;
      }
    }
    *label = it->second.label;
    *bytes = it->second.bytes;
    return true;
  }

  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

 private:
  mutable std::shared_mutex mutex_;
  std::map<uintptr_t, Allocation> live_;   // pairwise disjoint
  std::map<uintptr_t, Allocation> freed_;  // disjoint from each other and from live_
  std::deque<std::pair<uintptr_t, uint64_t>> freed_order_;  // (begin, serial), oldest first
  uint64_t next_serial_ = 0;
  std::atomic<uint64_t> generation_{0};  // bumped by every change, for the threads' caches
};

// Leaked on purpose: allocations may be dropped after static destructors ran.
Registry& registry() {
  static Registry* instance = new Registry();
  return *instance;
}

// ---------------------------------------------------------------------------------------------
// Memory that belongs to no allocation but that kernel code may touch: the loaded modules'
// segments (constants, string literals, __constant__ and __device__ variables).
// ---------------------------------------------------------------------------------------------

}  // namespace

namespace {
// The scan behind this_thread_tls_blocks: `own_marker` is one of the emulator's thread_locals.
TlsBlocks scan_tls_blocks(const void* own_marker) {
  struct Scan {
    uintptr_t marker;
    TlsBlocks blocks;
  } scan{reinterpret_cast<uintptr_t>(own_marker), {}};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        Scan& s = *static_cast<Scan*>(data);
        const auto tls = reinterpret_cast<uintptr_t>(info->dlpi_tls_data);
        for (int i = 0; tls != 0 && i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& segment = info->dlpi_phdr[i];
          if (segment.p_type != PT_TLS) {
            continue;
          }
          const uintptr_t end = tls + segment.p_memsz;
          if (tls <= s.marker && s.marker < end) {
            s.blocks.own_begin = tls;
            s.blocks.own_end = end;
            // The main program has an empty name.
            s.blocks.own_path = info->dlpi_name[0] != '\0' ? info->dlpi_name : "/proc/self/exe";
          } else {
            s.blocks.others.emplace_back(tls, end);
          }
        }
        return 0;
      },
      &scan);
  return scan.blocks;
}
}  // namespace

namespace {

std::vector<Range> collect_module_segments() {
  std::vector<Range> segments;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& segment = info->dlpi_phdr[i];
          if (segment.p_type == PT_LOAD) {
            const uintptr_t begin = info->dlpi_addr + segment.p_vaddr;
            static_cast<std::vector<Range>*>(data)->push_back(
                Range{begin, begin + segment.p_memsz});
          }
        }
        return 0;
      },
      &segments);
  std::sort(segments.begin(), segments.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  return segments;
}

// The module segment holding all of [addr, addr + bytes), if any.
bool find_module_segment(uintptr_t addr, size_t bytes, Range* found) {
  static const std::vector<Range> segments = collect_module_segments();
  auto it = std::upper_bound(segments.begin(), segments.end(), addr,
                             [](uintptr_t a, const Range& r) { return a < r.begin; });
  if (it == segments.begin() || !std::prev(it)->contains(addr, bytes)) {
    return false;
  }
  *found = *std::prev(it);
  return true;
}

// Calls on_symbol(name, offset, size) for each thread_local symbol of the ELF file at `path`,
// name demangled, offset in the file's TLS segment, until it returns true. Calls nothing for a
// file without a symbol table (stripped).
template <typename OnSymbol>
void for_each_tls_symbol(const char* path, OnSymbol&& on_symbol) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return;
  }
  struct stat st;
  void* map = MAP_FAILED;
  if (fstat(fd, &st) == 0 && static_cast<size_t>(st.st_size) >= sizeof(ElfW(Ehdr))) {
    map = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  }
  close(fd);
  if (map == MAP_FAILED) {
    return;
  }
  const auto* file = static_cast<const unsigned char*>(map);
  const auto size = static_cast<size_t>(st.st_size);
  const auto* header = reinterpret_cast<const ElfW(Ehdr)*>(file);
  const auto in_file = [size](size_t at, size_t bytes) { return at <= size && bytes <= size - at; };
  const bool valid = std::memcmp(header->e_ident, ELFMAG, SELFMAG) == 0 &&
                     header->e_shentsize == sizeof(ElfW(Shdr)) &&
                     in_file(header->e_shoff, size_t{header->e_shnum} * sizeof(ElfW(Shdr)));
  const auto* sections = reinterpret_cast<const ElfW(Shdr)*>(file + (valid ? header->e_shoff : 0));
  bool done = false;
  for (unsigned s = 0; valid && !done && s < header->e_shnum; ++s) {
    const ElfW(Shdr)& symtab = sections[s];
    if (symtab.sh_type != SHT_SYMTAB || symtab.sh_link >= header->e_shnum ||
        !in_file(symtab.sh_offset, symtab.sh_size)) {
      continue;
    }
    const ElfW(Shdr)& strtab = sections[symtab.sh_link];
    if (!in_file(strtab.sh_offset, strtab.sh_size)) {
      continue;
    }
    const auto* symbols = reinterpret_cast<const ElfW(Sym)*>(file + symtab.sh_offset);
    for (size_t i = 0; !done && i < symtab.sh_size / sizeof(ElfW(Sym)); ++i) {
      const ElfW(Sym)& sym = symbols[i];
      if (ELF64_ST_TYPE(sym.st_info) != STT_TLS || sym.st_name >= strtab.sh_size) {
        continue;
      }
      const char* mangled = reinterpret_cast<const char*>(file + strtab.sh_offset + sym.st_name);
      if (strnlen(mangled, strtab.sh_size - sym.st_name) == strtab.sh_size - sym.st_name) {
        continue;  // not terminated inside the string table
      }
      int status = 0;
      char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
      const std::string name = demangled != nullptr ? demangled : mangled;
      std::free(demangled);
      // In a linked file the value of a TLS symbol is its offset in the TLS segment.
      done = on_symbol(name, uint64_t{sym.st_value}, uint64_t{sym.st_size});
    }
  }
  munmap(map, size);
}

// Names the thread_local symbol of the ELF file at `path` that covers `offset` of its TLS segment
// ("(anonymous namespace)::k(int*)::tile+12"); empty when the file has no symbol table (stripped).
std::string tls_symbol_at(const char* path, uint64_t offset) {
  std::string found;
  for_each_tls_symbol(path, [&](const std::string& name, uint64_t begin, uint64_t bytes) {
    if (offset < begin || offset - begin >= std::max<uint64_t>(bytes, 1)) {
      return false;
    }
    found = name;
    append_format(found, "+%" PRIu64, offset - begin);
    return true;
  });
  return found;
}

// ---------------------------------------------------------------------------------------------
// The checker of one OS thread: the block it runs, its shared-memory shadow and its caches.
// ---------------------------------------------------------------------------------------------

class Checker;

}  // namespace

// The global bytes a launch's blocks stored to: per byte, the block and the checker's record of
// the store (epoch, thread, syncwarp count) on the OS thread that ran that block.
class LaunchWrites {
 public:
  struct Store {
    uint64_t block;
    uint64_t record;
  };

  LaunchWrites(unsigned grid_x, unsigned grid_y) : grid_x_(grid_x), grid_y_(grid_y) {}

  // Records `now` as the latest store to each byte of [addr, addr + bytes), under one lock, up
  // to the first byte whose earlier store `conflicts(earlier)` says races with it: returns that
  // byte's index and sets `*conflict`, or returns `bytes`. Past kMaxTrackedBytes distinct bytes a
  // launch's further bytes go untracked (each costs about 50 bytes here), so that big launches on
  // the emulator stay within memory; every test-sized launch is tracked whole. Thread-safe.
  template <typename Conflicts>
  size_t exchange(uintptr_t addr, size_t bytes, Store now, Conflicts&& conflicts, Store* conflict) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < bytes; ++i) {
      auto it = bytes_.find(addr + i);
      if (it == bytes_.end()) {
        if (bytes_.size() < kMaxTrackedBytes) {
          bytes_.emplace(addr + i, now);
        }
        continue;
      }
      if (conflicts(it->second)) {
        *conflict = it->second;
        return i;
      }
      it->second = now;
    }
    return bytes;
  }

  // "(x,y,z)" of a linear block index.
  void append_block(std::string& out, uint64_t block) const {
    const uint64_t plane = uint64_t{grid_x_} * grid_y_;
    append_format(out, "(%" PRIu64 ",%" PRIu64 ",%" PRIu64 ")", block % grid_x_,
                  block % plane / grid_x_, block / plane);
  }

  static constexpr size_t kMaxTrackedBytes = size_t{1} << 20;

 private:
  const unsigned grid_x_;
  const unsigned grid_y_;
  std::mutex mutex_;
  std::unordered_map<uintptr_t, Store> bytes_;
};

namespace {

// What the callbacks read on every access: the running block, when it is checked.
struct Fast {
  bool active;
  unsigned tid;     // the running CUDA thread
  uintptr_t stack;  // its fiber stack: [stack, stack + stack_bytes)
  size_t stack_bytes;
  uintptr_t arena;  // the runner's dynamic shared memory arena
  size_t arena_bytes;
  uintptr_t tls;  // this module's TLS block, static __shared__ arrays included
  size_t tls_bytes;
  Checker* checker;
};

__thread Fast fast;

// Whether a demangled name is that of a function-local variable: "f(int*)::x", not
// "(anonymous namespace)::x".
bool is_function_local(std::string name) {
  const std::string anonymous = "(anonymous namespace)";
  for (size_t at = name.find(anonymous); at != std::string::npos; at = name.find(anonymous)) {
    name.erase(at, anonymous.size());
  }
  return name.find(")::") != std::string::npos;
}

// Whether a demangled name is that of a function of cuattn::emu or one of its variables: the name
// up to its first template or parameter list ("void ns::f" of "void ns::f<T>(int)::x") is in that
// namespace. Template arguments may be (the emulator's __nv_bfloat16) without the name being.
bool in_emulator(const std::string& name) {
  return name.substr(0, name.find_first_of("<(")).find("cuattn::emu::") != std::string::npos;
}

// The offsets [begin, end) in this module's TLS segment of the kernels' static __shared__
// variables: the function-local thread_locals (what __shared__ becomes, runtime.h) of functions
// outside cuattn::emu. Found once, in the symbol table; empty for a stripped binary, where static
// shared memory is then neither poisoned nor checked for unwritten reads.
const std::vector<Range>& static_shared_offsets() {
  static const std::vector<Range> offsets = [] {
    std::vector<Range> found;
    const TlsBlocks& blocks = this_thread_tls_blocks();
    for_each_tls_symbol(blocks.own_path.c_str(),
                        [&](const std::string& name, uint64_t begin, uint64_t bytes) {
                          if (bytes > 0 && is_function_local(name) && !in_emulator(name)) {
                            found.push_back(Range{begin, begin + bytes});
                          }
                          return false;
                        });
    return found;
  }();
  return offsets;
}

// What a global access's range maps to in the running block's traffic counts: a slot of
// Checker::counts_, kNoSlot (a module segment, or a block that does not count), or kCacheMiss.
constexpr uint32_t kCacheMiss = ~uint32_t{0};
constexpr uint32_t kNoSlot = kCacheMiss - 1;

// Allocations and segments this thread found recently, each with its traffic slot, valid while
// the registry is unchanged (and the slots while the block runs: a counting block starts empty).
struct RangeCache {
  static constexpr unsigned kEntries = 4;
  uint64_t generation = ~uint64_t{0};
  Range entries[kEntries];
  uint32_t slots[kEntries] = {};
  unsigned next = 0;

  // The slot of the entry holding [addr, addr + bytes), or kCacheMiss.
  CUATTN_MEMCHECK_INLINE uint32_t find(uintptr_t addr, size_t bytes, uint64_t current) {
    if (generation != current) {
      std::fill(std::begin(entries), std::end(entries), Range{});
      generation = current;
      return kCacheMiss;
    }
    for (unsigned i = 0; i < kEntries; ++i) {
      if (entries[i].contains(addr, bytes)) {
        return slots[i];
      }
    }
    return kCacheMiss;
  }

  void insert(const Range& range, uint32_t slot) {
    slots[next % kEntries] = slot;
    entries[next++ % kEntries] = range;
  }

  // Forgets every entry.
  void clear() { generation = ~uint64_t{0}; }
};

class Checker {
 public:
  Checker() {
    const TlsBlocks& blocks = this_thread_tls_blocks();
    tls_ = Range{blocks.own_begin, blocks.own_end};
    module_path_ = blocks.own_path;
    for (const auto& [begin, end] : blocks.others) {
      foreign_tls_.push_back(Range{begin, end});
    }
    static_shadow_.resize(tls_.end - tls_.begin);
    static_shared_.resize(tls_.end - tls_.begin);
    for (const Range& r : static_shared_offsets()) {
      if (r.end <= static_shared_.size()) {
        std::fill(static_shared_.begin() + r.begin, static_shared_.begin() + r.end, 1);
      }
    }
  }

  void begin_block(const char* kernel_name, const unsigned char* arena, size_t arena_bytes,
                   size_t dynamic_smem_bytes, LaunchWrites* writes, LaunchTraffic* traffic,
                   uint64_t block) {
    writes_ = writes;
    block_ = block;
    // The cache's slots are those of the block that filled it: a block that counts starts with
    // none, and one after a counting block must not see that block's.
    if (traffic != nullptr || traffic_ != nullptr) {
      cache_.clear();
    }
    traffic_ = traffic;
    counts_.clear();
    if (epoch_ >= kEpochRenumberLimit) {
      dynamic_shadow_.clear();
      static_shadow_.clear();
      epoch_ = 0;
    }
    // Records of earlier blocks have smaller epochs: every byte starts unwritten, unraced.
    block_epoch_ = sync_epoch_ = ++epoch_;
    if (named_used_) {
      named_used_ = false;
      std::memset(ordered_before_, 0, sizeof(ordered_before_));
    }
    kernel_name_ = kernel_name;
    dynamic_bytes_ = dynamic_smem_bytes;
    if (dynamic_shadow_.size() < dynamic_smem_bytes) {
      dynamic_shadow_.resize(dynamic_smem_bytes);
    }
    for (WarpSyncs& w : warps_) {
      w.reset();
    }
    fast.arena = reinterpret_cast<uintptr_t>(arena);
    fast.arena_bytes = arena_bytes;
    fast.tls = tls_.begin;
    fast.tls_bytes = tls_.end - tls_.begin;
    fast.checker = this;
  }

  // The block ended: adds what it counted to its launch's traffic.
  void end_block() {
    if (traffic_ != nullptr) {
      traffic_->add(counts_);
    }
  }

  void barrier() { sync_epoch_ = ++epoch_; }
  void syncwarp(unsigned warp, unsigned mask) { warps_[warp].add(mask); }

  // Warp `warp` completed its arrival at a named barrier: its accesses so far get an earlier
  // epoch than any it makes next.
  void named_arrival(unsigned warp) {
    named_used_ = true;
    arrival_epoch_[warp] = ++epoch_;
  }
  // A named barrier completed: the accesses each warp of `arrived` made before its arrival are
  // ordered before the later accesses of each warp of `waited` (bar.sync; bar.arrive only
  // arrives). Bit w of each mask is warp w.
  void named_barrier(uint32_t arrived, uint32_t waited) {
    static_assert(kMaxWarpsPerBlock <= 32, "a warp mask is 32 bits");
    for (uint32_t as = arrived; as != 0; as &= as - 1) {
      const unsigned a = static_cast<unsigned>(__builtin_ctz(as));
      for (uint32_t bs = waited; bs != 0; bs &= bs - 1) {
        uint32_t& before = ordered_before_[a][__builtin_ctz(bs)];
        before = std::max(before, arrival_epoch_[a]);
      }
    }
  }

  // Checks an access by thread `tid` outside its own stack.
  CUATTN_MEMCHECK_INLINE void check(uintptr_t addr, size_t bytes, Kind kind, unsigned tid) {
    if (addr - fast.arena < fast.arena_bytes) {
      const size_t offset = addr - fast.arena;
      if (offset + bytes > dynamic_bytes_) {
        dynamic_smem_bounds_fault(addr, bytes, kind, tid);
      }
      check_shared(ShadowSpan(dynamic_shadow_, offset, bytes), addr, kind, tid,
                   /*check_init=*/true);
    } else if (in_tls(addr, bytes)) {
      const size_t offset = addr - fast.tls;
      check_shared(ShadowSpan(static_shadow_, offset, bytes), addr, kind, tid,
                   /*check_init=*/static_shared_[offset] != 0);
    } else {
      // (Not a cp.async destination: async_copy_issue faults on any outside shared memory.)
      uint32_t slot = cache_.find(addr, bytes, registry_.generation());
      if (slot == kCacheMiss) {
        slot = check_global(addr, bytes, kind, tid);
      }
      if (slot != kNoSlot) {
        count(counts_[slot], bytes, kind);
      }
      if (kind == Kind::kWrite) {
        note_global_store(addr, bytes, tid);
      }
    }
  }

  // cp.async data landed: thread `tid` writes the bytes now.
  void land(uintptr_t addr, size_t bytes, unsigned tid) {
    uint64_t* write = nullptr;
    if (addr - fast.arena < fast.arena_bytes && addr - fast.arena + bytes <= dynamic_bytes_) {
      write = &dynamic_shadow_.write[addr - fast.arena];
    } else if (in_tls(addr, bytes)) {
      write = &static_shadow_.write[addr - fast.tls];
    } else {
      return;  // not shared: the issue already faulted
    }
    std::fill(write, write + bytes, make_record(tid, Kind::kWrite));
  }

 private:
  // Whether [addr, addr + bytes) lies in this module's TLS block, static __shared__ included.
  static CUATTN_MEMCHECK_INLINE bool in_tls(uintptr_t addr, size_t bytes) {
    return bytes <= fast.tls_bytes && addr - fast.tls <= fast.tls_bytes - bytes;
  }

  uint64_t make_record(unsigned tid, Kind kind) const {
    uint64_t record = epoch_ | uint64_t{tid} << kTidShift |
                      uint64_t{warps_[tid / kWarpLanes].count & kSyncMask} << kSyncShift;
    if (is_atomic_kind(kind)) {
      record |= uint64_t{1} << kAtomicBit;
    } else if (kind == Kind::kAsyncIssue) {
      record |= uint64_t{1} << kInFlightBit;
    }
    return record;
  }

  // Whether the access `record` describes is ordered before an access by thread `tid` now: a
  // __syncthreads completed between them, or they are the same thread, or a named barrier
  // completed that the record's warp arrived at after the access and `tid`'s warp waited at, or
  // they are two lanes of one warp that a __syncwarp naming both ordered. (CUDA orders shared
  // memory between threads only through barriers and memory fences; shuffles and votes order
  // nothing.)
  CUATTN_MEMCHECK_INLINE bool ordered(uint64_t record, unsigned tid) const {
    if (epoch_of(record) < sync_epoch_) {
      return true;
    }
    const unsigned other = tid_of(record);
    if (other == tid) {
      return true;
    }
    if (named_used_ && epoch_of(record) < ordered_before_[other / kWarpLanes][tid / kWarpLanes]) {
      return true;
    }
    if (other / kWarpLanes != tid / kWarpLanes) {
      return false;
    }
    return warps_[tid / kWarpLanes].orders(syncs_of(record), other % kWarpLanes, tid % kWarpLanes);
  }

  // Judges the write record of byte `byte` of an access (the in-flight, initialization and
  // write-then-access checks); faults or returns.
  CUATTN_MEMCHECK_INLINE void judge_write(uint64_t write, uint64_t now, uintptr_t addr,
                                          size_t bytes, size_t byte, Kind kind, unsigned tid,
                                          bool check_init) {
    if (is_in_flight(write) && epoch_of(write) >= block_epoch_) {
      in_flight_fault(addr, bytes, kind, tid, tid_of(write));
    }
    if (check_init && kind != Kind::kWrite && kind != Kind::kAsyncIssue &&
        epoch_of(write) < block_epoch_) {
      unwritten_fault(addr, bytes, byte, kind, tid);
    }
    // A read or write after another thread's unordered write. Two atomics do not race.
    if (!ordered(write, tid) && !(is_atomic(now) && is_atomic(write))) {
      race_fault(addr, bytes, byte, kind, tid, write, /*other_wrote=*/true);
    }
  }

  // Judges, for a write, the reads of byte `byte` (read-then-write); faults or returns the read
  // that was judged.
  CUATTN_MEMCHECK_INLINE uint64_t judge_reads(uint64_t read, uint64_t other_read, uintptr_t addr,
                                              size_t bytes, size_t byte, Kind kind, unsigned tid) {
    const uint64_t other = tid_of(read) != tid ? read : other_read;
    if (!ordered(other, tid)) {
      race_fault(addr, bytes, byte, kind, tid, other, /*other_wrote=*/false);
    }
    return other;
  }

  // Records a read by `now`'s thread in byte i of `span`.
  static CUATTN_MEMCHECK_INLINE void note_read(const ShadowSpan& span, size_t i, uint64_t now) {
    const uint64_t read = span.read[i];
    if (tid_of(read) != tid_of(now)) {
      span.other_read[i] = read;
    }
    span.read[i] = now;
  }

  CUATTN_MEMCHECK_INLINE void check_shared(const ShadowSpan& span, uintptr_t addr, Kind kind,
                                           unsigned tid, bool check_init) {
    const uint64_t now = make_record(tid, kind);
    const size_t bytes = span.bytes;
    // The usual access: its bytes were last touched together, and are judged once.
    if (span.uniform()) {
      judge_write(span.write[0], now, addr, bytes, 0, kind, tid, check_init);
      if (kind == Kind::kRead) {
        if (span.read[0] != now) {
          const uint64_t read = span.read[0];
          if (tid_of(read) != tid) {
            std::fill(span.other_read, span.other_read + bytes, read);
          }
          std::fill(span.read, span.read + bytes, now);
        }
        return;
      }
      judge_reads(span.read[0], span.other_read[0], addr, bytes, 0, kind, tid);
      std::fill(span.write, span.write + bytes, now);
      return;
    }
    check_bytes(span, addr, kind, tid, check_init);
  }

  // Byte by byte, judging each distinct record once.
  __attribute__((noinline)) void check_bytes(const ShadowSpan& span, uintptr_t addr, Kind kind,
                                             unsigned tid, bool check_init) {
    const uint64_t now = make_record(tid, kind);
    const size_t bytes = span.bytes;
    uint64_t judged_write = kNoRecord;
    uint64_t judged_read = kNoRecord;
    for (size_t i = 0; i < bytes; ++i) {
      if (span.write[i] != judged_write) {
        judge_write(span.write[i], now, addr, bytes, i, kind, tid, check_init);
        judged_write = span.write[i];
      }
      if (kind == Kind::kRead) {
        note_read(span, i, now);
        continue;
      }
      const uint64_t other = tid_of(span.read[i]) != tid ? span.read[i] : span.other_read[i];
      if (other != judged_read) {
        judged_read = judge_reads(span.read[i], span.other_read[i], addr, bytes, i, kind, tid);
      }
      span.write[i] = now;
    }
  }

  // Records a plain store to global [addr, addr + bytes) in the launch's writes; faults if another
  // block stored to one of its bytes, or another thread of this block did in this barrier
  // interval (unordered: see ordered).
  __attribute__((noinline)) void note_global_store(uintptr_t addr, size_t bytes, unsigned tid) {
    const LaunchWrites::Store now{block_, make_record(tid, Kind::kWrite)};
    LaunchWrites::Store earlier;
    const size_t byte = writes_->exchange(
        addr, bytes, now,
        [&](const LaunchWrites::Store& e) { return e.block != block_ || !ordered(e.record, tid); },
        &earlier);
    if (byte < bytes) {
      global_store_race_fault(addr, bytes, byte, tid, earlier);
    }
  }

  [[noreturn]] __attribute__((noinline, cold)) void global_store_race_fault(
      uintptr_t addr, size_t bytes, size_t byte, unsigned tid, LaunchWrites::Store earlier) {
    begin_message(addr, bytes, Kind::kWrite, tid);
    message_ += " (";
    registry_.describe_inside(addr, message_);
    message_ += byte != 0 ? "), whose byte " : "), which ";
    if (byte != 0) {
      append_format(message_, "+%zu ", byte);
    }
    if (earlier.block != block_) {
      message_ += "block ";
      writes_->append_block(message_, earlier.block);
      message_ += " also wrote in this launch (the blocks of a launch are unordered)";
    } else {
      append_thread(message_, tid_of(earlier.record));
      message_ += " wrote in the same barrier interval ";
      append_unordered(message_, tid_of(earlier.record), tid);
    }
    stop();
  }

  // Adds an access of `bytes` to an allocation's counts: a read, a write or both (an atomic
  // read-modify-write).
  static CUATTN_MEMCHECK_INLINE void count(AllocationBytes& counts, size_t bytes, Kind kind) {
    if (kind != Kind::kWrite && kind != Kind::kAtomicStore) {
      counts.read += bytes;
    }
    if (kind != Kind::kRead && kind != Kind::kAtomicLoad) {
      counts.written += bytes;
    }
  }

  // The running block's traffic slot of the allocation starting at `begin` (a new one if it has
  // none yet), or kNoSlot when the block does not count. A block touches a handful of
  // allocations: a linear search.
  uint32_t slot_of(uintptr_t begin) {
    if (traffic_ == nullptr) {
      return kNoSlot;
    }
    for (size_t i = 0; i < counts_.size(); ++i) {
      if (counts_[i].begin == begin) {
        return static_cast<uint32_t>(i);
      }
    }
    counts_.push_back(AllocationBytes{begin, 0, 0});
    return static_cast<uint32_t>(counts_.size() - 1);
  }

  // A global access that missed the cache: looks up the registry and the modules; returns the
  // access's traffic slot (kNoSlot outside the registered allocations) or faults.
  __attribute__((noinline)) uint32_t check_global(uintptr_t addr, size_t bytes, Kind kind,
                                                  unsigned tid) {
    Range found;
    if (registry_.find(addr, bytes, &found)) {
      const uint32_t slot = slot_of(found.begin);
      cache_.insert(found, slot);
      return slot;
    }
    if (find_module_segment(addr, bytes, &found)) {
      cache_.insert(found, kNoSlot);
      return kNoSlot;
    }
    for (const Range& r : foreign_tls_) {
      if (r.contains(addr, bytes)) {
        return kNoSlot;
      }
    }
    begin_message(addr, bytes, kind, tid);
    message_ += ", ";
    registry_.describe(addr, bytes, message_);
    stop();
  }

  // "thread T (warp W, lane L) read 4 bytes at 0x..."
  void begin_message(uintptr_t addr, size_t bytes, Kind kind, unsigned tid) {
    message_.clear();
    append_thread(message_, tid);
    append_format(message_, " %s %zu bytes at 0x%" PRIxPTR, verb(kind), bytes, addr);
  }

  // Names a shared-memory byte: "<kernel>::dynamic_smem+56", "<static __shared__ variable>+12"
  // (or "thread_local+8224" without a symbol table).
  void append_shared(std::string& out, uintptr_t addr) const {
    if (addr - fast.arena < fast.arena_bytes) {
      append_format(out, "%s::dynamic_smem+%" PRIuPTR, kernel_name_, addr - fast.arena);
      return;
    }
    const uint64_t offset = addr - fast.tls;
    const std::string name = tls_symbol_at(module_path_.c_str(), offset);
    if (name.empty()) {
      append_format(out, "thread_local+%" PRIu64, offset);  // a stripped binary: the segment offset
    } else {
      out += name;
    }
  }

  // "thread T ... read 4 bytes of shared memory at X" and, when the byte at fault is not the
  // first, ", whose byte Y".
  void begin_shared_message(uintptr_t addr, size_t bytes, size_t byte, Kind kind, unsigned tid,
                            const char* space) {
    message_.clear();
    append_thread(message_, tid);
    append_format(message_, " %s %zu bytes of %s at ", verb(kind), bytes, space);
    append_shared(message_, addr);
    if (byte != 0) {
      message_ += ", whose byte ";
      append_shared(message_, addr + byte);
    }
  }

  [[noreturn]] __attribute__((noinline, cold)) void race_fault(uintptr_t addr, size_t bytes,
                                                               size_t byte, Kind kind, unsigned tid,
                                                               uint64_t other, bool other_wrote) {
    begin_shared_message(addr, bytes, byte, kind, tid, "shared memory");
    message_ += byte != 0 ? " " : ", which ";
    append_thread(message_, tid_of(other));
    append_format(message_, " %s in the same barrier interval ",
                  other_wrote ? (is_atomic(other) ? "atomically updated" : "wrote") : "read");
    append_unordered(message_, tid_of(other), tid);
    stop();
  }

  // Why thread `earlier`'s access is not ordered before thread `tid`'s: "(no __syncthreads ...)".
  static void append_unordered(std::string& out, unsigned earlier, unsigned tid) {
    const unsigned earlier_warp = earlier / kWarpLanes, warp = tid / kWarpLanes;
    if (earlier_warp == warp) {
      out += "(no __syncthreads, named barrier, nor __syncwarp naming both lanes, between them)";
    } else {
      append_format(out,
                    "(no __syncthreads between them, nor a named barrier that warp %u arrived at "
                    "and warp %u then waited at)",
                    earlier_warp, warp);
    }
  }

  [[noreturn]] __attribute__((noinline, cold)) void unwritten_fault(uintptr_t addr, size_t bytes,
                                                                    size_t byte, Kind kind,
                                                                    unsigned tid) {
    const bool dynamic = addr - fast.arena < fast.arena_bytes;
    begin_shared_message(addr, bytes, byte, kind, tid,
                         dynamic ? "dynamic shared memory" : "shared memory");
    message_ += byte != 0 ? " " : ", which ";
    message_ += "no thread of the block has written";
    stop();
  }

  [[noreturn]] __attribute__((noinline, cold)) void in_flight_fault(uintptr_t addr, size_t bytes,
                                                                    Kind kind, unsigned tid,
                                                                    unsigned issuer) {
    begin_shared_message(addr, bytes, 0, kind, tid, "shared memory");
    append_format(
        message_,
        ", written by an in-flight cp.async (issued by thread %u) before cp.async.wait_group",
        issuer);
    stop();
  }

  [[noreturn]] __attribute__((noinline, cold)) void dynamic_smem_bounds_fault(uintptr_t addr,
                                                                              size_t bytes,
                                                                              Kind kind,
                                                                              unsigned tid) {
    begin_shared_message(addr, bytes, 0, kind, tid, "shared memory");
    append_format(message_, ", past the end of the launch's %zu bytes of dynamic shared memory",
                  dynamic_bytes_);
    stop();
  }

  [[noreturn]] void stop() { memcheck_stop_block(message_); }

  LaunchWrites* writes_ = nullptr;  // the running block's launch
  uint64_t block_ = 0;              // its linear index in the grid
  // The launch's traffic when it counts it (else null), and the running block's counts, indexed
  // by the cache's slots.
  LaunchTraffic* traffic_ = nullptr;
  std::vector<AllocationBytes> counts_;
  // Epochs: the running block's accesses are numbered by epoch_, which moves at each
  // __syncthreads and at each warp's arrival at a named barrier.
  uint32_t epoch_ = 0;        // the running epoch
  uint32_t block_epoch_ = 0;  // the running block's first epoch
  uint32_t sync_epoch_ = 0;   // the epoch the latest __syncthreads began: earlier ones are ordered
  // Named barriers: a warp's accesses before epoch arrival_epoch_[w] preceded its latest arrival;
  // those of warp a before ordered_before_[a][b] are ordered before warp b's accesses now. Zeroed
  // at a block's start when the previous block used a named barrier.
  bool named_used_ = false;
  uint32_t arrival_epoch_[kMaxWarpsPerBlock] = {};
  uint32_t ordered_before_[kMaxWarpsPerBlock][kMaxWarpsPerBlock] = {};
  const char* kernel_name_ = "";
  size_t dynamic_bytes_ = 0;
  Range tls_;
  std::string module_path_;
  std::vector<Range> foreign_tls_;      // other modules' TLS on this thread: allowed, unchecked
  std::vector<uint8_t> static_shared_;  // per byte of tls_: 1 in a static __shared__ variable
  Shadow dynamic_shadow_;
  Shadow static_shadow_;  // one byte per byte of tls_
  WarpSyncs warps_[kMaxWarpsPerBlock] = {};
  Registry& registry_ = registry();
  RangeCache cache_;
  // Built here, not on the fiber stack that a fault abandons.
  std::string message_;
};

Checker& this_thread_checker() {
  thread_local std::unique_ptr<Checker> checker = std::make_unique<Checker>();
  return *checker;
}

// -1: follow CUATTN_EMU_MEMCHECK; 0 or 1: cuattn_emu_set_memcheck on this thread.
thread_local int memcheck_setting = -1;

// Whether the block this OS thread runs (or ran last) is checked: memcheck_block_end ends it.
thread_local bool block_checked = false;

bool memcheck_default() {
  static const bool enabled = [] {
    const char* value = std::getenv("CUATTN_EMU_MEMCHECK");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }();
  return enabled;
}

// Every check's common path: thread `tid` accesses [addr, addr + bytes).
CUATTN_MEMCHECK_INLINE void on_access(uintptr_t addr, size_t bytes, Kind kind, unsigned tid) {
  if (!fast.active || addr - fast.stack < fast.stack_bytes || bytes == 0) {
    return;  // no checked block, or the running thread's own stack
  }
  fast.checker->check(addr, bytes, kind, tid);
}

// The callbacks' path: kernel code of the running thread accesses [addr, addr + bytes).
CUATTN_MEMCHECK_INLINE void on_access(uintptr_t addr, size_t bytes, Kind kind) {
  on_access(addr, bytes, kind, fast.tid);
}

}  // namespace

const TlsBlocks& this_thread_tls_blocks() {
  thread_local const TlsBlocks blocks = scan_tls_blocks(&fast);
  return blocks;
}

void memcheck_access(const void* addr, size_t bytes, bool is_write, int linear_tid) {
  on_access(reinterpret_cast<uintptr_t>(addr), bytes, is_write ? Kind::kWrite : Kind::kRead,
            static_cast<unsigned>(linear_tid));
}

void memcheck_async_issue(void* smem_dst, size_t bytes, int linear_tid) {
  on_access(reinterpret_cast<uintptr_t>(smem_dst), bytes, Kind::kAsyncIssue,
            static_cast<unsigned>(linear_tid));
}

void memcheck_async_land(void* smem_dst, size_t bytes, int linear_tid) {
  if (fast.active) {
    fast.checker->land(reinterpret_cast<uintptr_t>(smem_dst), bytes,
                       static_cast<unsigned>(linear_tid));
  }
}

bool memcheck_enabled_for_launch() {
  return traffic_recording() || (memcheck_setting < 0 ? memcheck_default() : memcheck_setting != 0);
}

LaunchWrites* memcheck_launch_begin(unsigned grid_x, unsigned grid_y) {
  return new LaunchWrites(grid_x, grid_y);
}

void memcheck_launch_end(LaunchWrites* writes) { delete writes; }

void memcheck_block_begin(const char* kernel_name, const unsigned char* arena, size_t arena_bytes,
                          size_t dynamic_smem_bytes, LaunchWrites* writes, LaunchTraffic* traffic,
                          uint64_t block_linear) {
  fast.active = false;
  block_checked = writes != nullptr;
  if (writes != nullptr) {
    this_thread_checker().begin_block(kernel_name, arena, arena_bytes, dynamic_smem_bytes, writes,
                                      traffic, block_linear);
    fast.active = true;
  }
}

void memcheck_block_end() {
  fast.active = false;
  if (block_checked) {
    block_checked = false;
    this_thread_checker().end_block();
  }
}

bool allocation_at(uintptr_t begin, std::string* label, uint64_t* bytes) {
  return registry().at(begin, label, bytes);
}

void poison_static_shared(unsigned char byte) {
  const uintptr_t tls = this_thread_tls_blocks().own_begin;
  for (const Range& r : static_shared_offsets()) {
    std::memset(reinterpret_cast<void*>(tls + r.begin), byte, r.end - r.begin);
  }
}

void memcheck_switch_to(const void* stack_lo, size_t stack_bytes, unsigned linear_tid) {
  fast.stack = reinterpret_cast<uintptr_t>(stack_lo);
  fast.stack_bytes = stack_bytes;
  fast.tid = linear_tid;
}

void memcheck_barrier() {
  if (fast.active) {
    fast.checker->barrier();
  }
}

void memcheck_syncwarp(unsigned warp, unsigned mask) {
  if (fast.active) {
    fast.checker->syncwarp(warp, mask);
  }
}

void memcheck_named_arrival(unsigned warp) {
  if (fast.active) {
    fast.checker->named_arrival(warp);
  }
}

void memcheck_named_barrier(uint32_t arrived, uint32_t waited) {
  if (fast.active) {
    fast.checker->named_barrier(arrived, waited);
  }
}

MemcheckPause::MemcheckPause() : was_active_(fast.active) { fast.active = false; }

MemcheckPause::~MemcheckPause() { fast.active = was_active_; }

}  // namespace cuattn::emu

// ---------------------------------------------------------------------------------------------
// The callbacks GCC and Clang emit under -fsanitize=thread (ThreadSanitizer's instrumentation,
// without its runtime): one before each load and store of kernel code, and one in place of each
// atomic.
// ---------------------------------------------------------------------------------------------

using cuattn::emu::Kind;
using cuattn::emu::on_access;

#define CUATTN_MEMCHECK_CALLBACK extern "C" __attribute__((visibility("hidden")))

// Plain loads and stores, aligned or not, of 1 to 16 bytes, and of ranges (struct copies).
#define CUATTN_MEMCHECK_ACCESS(bytes)                                            \
  CUATTN_MEMCHECK_CALLBACK void __tsan_read##bytes(void* addr) {                 \
    on_access(reinterpret_cast<uintptr_t>(addr), bytes, Kind::kRead);            \
  }                                                                              \
  CUATTN_MEMCHECK_CALLBACK void __tsan_write##bytes(void* addr) {                \
    on_access(reinterpret_cast<uintptr_t>(addr), bytes, Kind::kWrite);           \
  }                                                                              \
  CUATTN_MEMCHECK_CALLBACK void __tsan_unaligned_read##bytes(const void* addr) { \
    on_access(reinterpret_cast<uintptr_t>(addr), bytes, Kind::kRead);            \
  }                                                                              \
  CUATTN_MEMCHECK_CALLBACK void __tsan_unaligned_write##bytes(void* addr) {      \
    on_access(reinterpret_cast<uintptr_t>(addr), bytes, Kind::kWrite);           \
  }
CUATTN_MEMCHECK_ACCESS(1)
CUATTN_MEMCHECK_ACCESS(2)
CUATTN_MEMCHECK_ACCESS(4)
CUATTN_MEMCHECK_ACCESS(8)
CUATTN_MEMCHECK_ACCESS(16)

CUATTN_MEMCHECK_CALLBACK void __tsan_read_range(void* addr, unsigned long bytes) {
  on_access(reinterpret_cast<uintptr_t>(addr), bytes, Kind::kRead);
}
CUATTN_MEMCHECK_CALLBACK void __tsan_write_range(void* addr, unsigned long bytes) {
  on_access(reinterpret_cast<uintptr_t>(addr), bytes, Kind::kWrite);
}

// Atomics: checked as atomics (which do not race with one another), then performed. The memory
// order arguments follow the __ATOMIC_* numbering; the strongest order serves for every one.
#define CUATTN_MEMCHECK_ATOMIC(bits)                                                               \
  using Atomic##bits = uint##bits##_t;                                                             \
  CUATTN_MEMCHECK_CALLBACK Atomic##bits __tsan_atomic##bits##_load(const volatile Atomic##bits* a, \
                                                                   int) {                          \
    on_access(reinterpret_cast<uintptr_t>(a), sizeof(*a), Kind::kAtomicLoad);                      \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                   \
  }                                                                                                \
  CUATTN_MEMCHECK_CALLBACK void __tsan_atomic##bits##_store(volatile Atomic##bits* a,              \
                                                            Atomic##bits v, int) {                 \
    on_access(reinterpret_cast<uintptr_t>(a), sizeof(*a), Kind::kAtomicStore);                     \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                      \
  }                                                                                                \
  CUATTN_MEMCHECK_ATOMIC_RMW(bits, exchange, __atomic_exchange_n)                                  \
  CUATTN_MEMCHECK_ATOMIC_RMW(bits, fetch_add, __atomic_fetch_add)                                  \
  CUATTN_MEMCHECK_ATOMIC_RMW(bits, fetch_sub, __atomic_fetch_sub)                                  \
  CUATTN_MEMCHECK_ATOMIC_RMW(bits, fetch_and, __atomic_fetch_and)                                  \
  CUATTN_MEMCHECK_ATOMIC_RMW(bits, fetch_or, __atomic_fetch_or)                                    \
  CUATTN_MEMCHECK_ATOMIC_RMW(bits, fetch_xor, __atomic_fetch_xor)                                  \
  CUATTN_MEMCHECK_ATOMIC_RMW(bits, fetch_nand, __atomic_fetch_nand)                                \
  CUATTN_MEMCHECK_ATOMIC_CAS(bits, strong, false)                                                  \
  CUATTN_MEMCHECK_ATOMIC_CAS(bits, weak, true)                                                     \
  CUATTN_MEMCHECK_CALLBACK Atomic##bits __tsan_atomic##bits##_compare_exchange_val(                \
      volatile Atomic##bits* a, Atomic##bits expected, Atomic##bits desired, int, int) {           \
    on_access(reinterpret_cast<uintptr_t>(a), sizeof(*a), Kind::kAtomic);                          \
    __atomic_compare_exchange_n(a, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
    return expected;                                                                               \
  }
#define CUATTN_MEMCHECK_ATOMIC_RMW(bits, name, builtin)                                        \
  CUATTN_MEMCHECK_CALLBACK Atomic##bits __tsan_atomic##bits##_##name(volatile Atomic##bits* a, \
                                                                     Atomic##bits v, int) {    \
    on_access(reinterpret_cast<uintptr_t>(a), sizeof(*a), Kind::kAtomic);                      \
    return builtin(a, v, __ATOMIC_SEQ_CST);                                                    \
  }
#define CUATTN_MEMCHECK_ATOMIC_CAS(bits, strength, weak)                                  \
  CUATTN_MEMCHECK_CALLBACK int __tsan_atomic##bits##_compare_exchange_##strength(         \
      volatile Atomic##bits* a, Atomic##bits* expected, Atomic##bits desired, int, int) { \
    on_access(reinterpret_cast<uintptr_t>(a), sizeof(*a), Kind::kAtomic);                 \
    return __atomic_compare_exchange_n(a, expected, desired, weak, __ATOMIC_SEQ_CST,      \
                                       __ATOMIC_SEQ_CST);                                 \
  }
CUATTN_MEMCHECK_ATOMIC(8)
CUATTN_MEMCHECK_ATOMIC(16)
CUATTN_MEMCHECK_ATOMIC(32)
CUATTN_MEMCHECK_ATOMIC(64)

CUATTN_MEMCHECK_CALLBACK void __tsan_atomic_thread_fence(int) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
CUATTN_MEMCHECK_CALLBACK void __tsan_atomic_signal_fence(int) {
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

// Each instrumented module's constructor calls it to start ThreadSanitizer's runtime; the checker
// has nothing to start.
CUATTN_MEMCHECK_CALLBACK void __tsan_init() {}

// ---------------------------------------------------------------------------------------------
// C API (cuattn.h, "Emulator memory registry").
// ---------------------------------------------------------------------------------------------

extern "C" cuattn_status cuattn_emu_register_allocation(const void* ptr, uint64_t bytes,
                                                        const char* label) {
  return cuattn::emu::registry().add(ptr, bytes, label);
}

extern "C" cuattn_status cuattn_emu_unregister_allocation(const void* ptr) {
  return cuattn::emu::registry().remove(ptr);
}

extern "C" cuattn_status cuattn_emu_relabel_allocation(const void* ptr, const char* label) {
  return cuattn::emu::registry().relabel(ptr, label);
}

extern "C" void cuattn_emu_set_memcheck(int32_t enabled) {
  cuattn::emu::memcheck_setting = enabled < 0 ? -1 : enabled != 0;
}

extern "C" int32_t cuattn_emu_memcheck_enabled(void) {
  return cuattn::emu::memcheck_enabled_for_launch() ? 1 : 0;
}
