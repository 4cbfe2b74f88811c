// traffic.h: the emulator's global-memory traffic counters (cuattn_emu_traffic_* in cuattn.h): per
// kernel launch, the bytes each registered allocation was read and written, recorded per thread.
//
// A thread opens a recording; each launch it makes while the recording is open runs checked, and
// gets a LaunchTraffic. The memory checker counts the global bytes of each block's accesses per
// allocation on the OS thread that runs the block (no shared state per access), and adds the
// block's counts to the launch's LaunchTraffic when the block ends (under its mutex). When the
// launch ends, the launching thread appends the launch's record to its recording.
#ifndef CUATTN_EMU_TRAFFIC_H_
#define CUATTN_EMU_TRAFFIC_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace cuattn::emu {

// The global bytes read and written in the allocation that starts at `begin`.
struct AllocationBytes {
  uintptr_t begin;
  uint64_t read;
  uint64_t written;
};

// One launch's traffic, summed over its blocks; shared by the OS threads that run them.
class LaunchTraffic {
 public:
  // Adds one block's counts. Thread-safe.
  void add(const std::vector<AllocationBytes>& block);
  // The launch's totals per allocation, by start address, once every block has ended.
  std::vector<AllocationBytes> totals();

 private:
  std::mutex mutex_;
  std::map<uintptr_t, AllocationBytes> totals_;
};

// Whether the calling thread has a recording open: its launches then run checked and counted.
bool traffic_recording();

// A launch from the calling thread starts: its counters when the thread records, else null.
LaunchTraffic* traffic_launch_begin();

// The launch (made from the calling thread) ended: appends its record, `kernel_name` and each
// allocation it touched with its label, to the calling thread's recording when `succeeded` (a
// launch that failed is not recorded), and frees `traffic`. Nothing happens for null.
void traffic_launch_end(LaunchTraffic* traffic, const char* kernel_name, bool succeeded);

}  // namespace cuattn::emu

#endif  // CUATTN_EMU_TRAFFIC_H_
