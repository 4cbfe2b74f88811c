// traffic.cpp: the emulator's traffic counters (traffic.h): launch totals, each thread's
// recording, and the C API (cuattn.h, "Emulator traffic counters").
#include "emu/traffic.h"

#include <cinttypes>
#include <string>
#include <utility>

#include "common/status.h"
#include "cuattn_internal.h"
#include "emu/memcheck.h"

namespace cuattn::emu {
namespace {

struct EntryRecord {
  std::string label;
  uint64_t address;
  uint64_t allocation_bytes;
  uint64_t bytes_read;
  uint64_t bytes_written;
};

struct LaunchRecord {
  std::string kernel_name;
  std::vector<EntryRecord> entries;  // by address
};

// A thread's recording: open while launches are recorded; once closed, what the accessors read.
struct Recording {
  bool open = false;
  bool closed = false;  // a recording was closed and not discarded since
  std::vector<LaunchRecord> launches;
};

thread_local Recording recording;

// The closed recording of the calling thread, or null after setting the error for `function`.
const Recording* closed_recording(const char* function) {
  if (recording.open) {
    fail(CUATTN_ERROR_INVALID_ARGUMENT,
         "%s: the calling thread's recording is still open (call cuattn_emu_traffic_end first)",
         function);
    return nullptr;
  }
  if (!recording.closed) {
    fail(CUATTN_ERROR_INVALID_ARGUMENT,
         "%s: the calling thread has closed no recording (cuattn_emu_traffic_begin, then "
         "cuattn_emu_traffic_end)",
         function);
    return nullptr;
  }
  return &recording;
}

// The launch `launch` of the calling thread's closed recording, or null after setting the error.
const LaunchRecord* recorded_launch(const char* function, uint64_t launch) {
  const Recording* closed = closed_recording(function);
  if (closed == nullptr) {
    return nullptr;
  }
  if (launch >= closed->launches.size()) {
    fail(CUATTN_ERROR_INVALID_ARGUMENT,
         "%s: launch = %" PRIu64 ": the recording holds %zu launches; launch must be below that",
         function, launch, closed->launches.size());
    return nullptr;
  }
  return &closed->launches[launch];
}

}  // namespace

void LaunchTraffic::add(const std::vector<AllocationBytes>& block) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const AllocationBytes& b : block) {
    AllocationBytes& total =
        totals_.try_emplace(b.begin, AllocationBytes{b.begin, 0, 0}).first->second;
    total.read += b.read;
    total.written += b.written;
  }
}

std::vector<AllocationBytes> LaunchTraffic::totals() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<AllocationBytes> out;
  out.reserve(totals_.size());
  for (const auto& entry : totals_) {
    out.push_back(entry.second);
  }
  return out;
}

bool traffic_recording() { return recording.open; }

LaunchTraffic* traffic_launch_begin() { return recording.open ? new LaunchTraffic() : nullptr; }

void traffic_launch_end(LaunchTraffic* traffic, const char* kernel_name, bool succeeded) {
  if (traffic == nullptr) {
    return;
  }
  if (succeeded && recording.open) {
    LaunchRecord record{kernel_name, {}};
    for (const AllocationBytes& total : traffic->totals()) {
      EntryRecord entry{"", total.begin, 0, total.read, total.written};
      allocation_at(total.begin, &entry.label, &entry.allocation_bytes);
      record.entries.push_back(std::move(entry));
    }
    recording.launches.push_back(std::move(record));
  }
  delete traffic;
}

}  // namespace cuattn::emu

// ---------------------------------------------------------------------------------------------
// C API (cuattn.h, "Emulator traffic counters").
// ---------------------------------------------------------------------------------------------

using cuattn::emu::recording;

extern "C" cuattn_status cuattn_emu_traffic_begin(void) {
  if (recording.open) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "cuattn_emu_traffic_begin: the calling thread has a recording open already "
                        "(recordings do not nest; cuattn_emu_traffic_end closes it)");
  }
  recording.launches.clear();
  recording.closed = false;
  recording.open = true;
  return CUATTN_OK;
}

extern "C" cuattn_status cuattn_emu_traffic_end(void) {
  if (!recording.open) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "cuattn_emu_traffic_end: the calling thread has no recording open "
                        "(cuattn_emu_traffic_begin opens one)");
  }
  recording.open = false;
  recording.closed = true;
  return CUATTN_OK;
}

extern "C" int32_t cuattn_emu_traffic_recording(void) { return recording.open ? 1 : 0; }

extern "C" cuattn_status cuattn_emu_traffic_launch_count(uint64_t* launches) {
  if (launches == nullptr) {
    return cuattn::fail(
        CUATTN_ERROR_INVALID_ARGUMENT,
        "cuattn_emu_traffic_launch_count: launches is NULL; it must point to the count");
  }
  const auto* closed = cuattn::emu::closed_recording("cuattn_emu_traffic_launch_count");
  if (closed == nullptr) {
    return CUATTN_ERROR_INVALID_ARGUMENT;
  }
  *launches = closed->launches.size();
  return CUATTN_OK;
}

extern "C" cuattn_status cuattn_emu_traffic_get_launch(uint64_t launch, const char** kernel_name,
                                                       uint64_t* entries) {
  if (kernel_name == nullptr || entries == nullptr) {
    return cuattn::fail(
        CUATTN_ERROR_INVALID_ARGUMENT,
        "cuattn_emu_traffic_get_launch: kernel_name = %p, entries = %p: both must be non-null",
        static_cast<void*>(kernel_name), static_cast<void*>(entries));
  }
  const auto* record = cuattn::emu::recorded_launch("cuattn_emu_traffic_get_launch", launch);
  if (record == nullptr) {
    return CUATTN_ERROR_INVALID_ARGUMENT;
  }
  *kernel_name = record->kernel_name.c_str();
  *entries = record->entries.size();
  return CUATTN_OK;
}

extern "C" cuattn_status cuattn_emu_traffic_get_entry(uint64_t launch, uint64_t entry,
                                                      cuattn_emu_traffic_entry* out) {
  if (out == nullptr) {
    return cuattn::fail(
        CUATTN_ERROR_INVALID_ARGUMENT,
        "cuattn_emu_traffic_get_entry: out is NULL; it must point to an entry to fill");
  }
  const auto* record = cuattn::emu::recorded_launch("cuattn_emu_traffic_get_entry", launch);
  if (record == nullptr) {
    return CUATTN_ERROR_INVALID_ARGUMENT;
  }
  if (entry >= record->entries.size()) {
    return cuattn::fail(CUATTN_ERROR_INVALID_ARGUMENT,
                        "cuattn_emu_traffic_get_entry: entry = %" PRIu64 ": launch %" PRIu64
                        " touched %zu allocations; entry must be below that",
                        entry, launch, record->entries.size());
  }
  const auto& e = record->entries[entry];
  *out = cuattn_emu_traffic_entry{e.label.c_str(), e.address, e.allocation_bytes, e.bytes_read,
                                  e.bytes_written};
  return CUATTN_OK;
}
