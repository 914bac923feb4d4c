// dax: mappings of files into the process (the role of fs/dax.c and the mm fault path).
// Owns the SIGSEGV handler, the registry of mappings, installing, upgrading and
// dropping page ranges, the shared zero page, dirty tracking and the synchronous fault.
// It asks fs where a file range lives (iomap_begin) and commits through fs's journal;
// it must never change metadata itself, and on the fault path it must never allocate
// heap memory or take a lock that is not syncdax's own.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "common/lock.h"
#include "syncdax/syncdax.hpp"

namespace sdx::fs { class Volume; class Handle; struct Inode; enum class LayoutChange; }

namespace sdx::dax {

inline constexpr size_t kPage = 4096;
// Faults install at most this much at once: neighbours of the faulting page do not
// fault, and the populate stays short. Aligned in the file, like a PMD fault.
inline constexpr uint64_t kFaultWindow = 2ull << 20;

// What is installed at one page of a mapping: one byte per page is all the memory
// syncdax keeps per mapped page.
enum PageState : uint8_t {
  kInstalled = 1,  // something is mapped: the zero page, or a device block
  kBlock = 2,      // a device block (else the zero page)
  kWritable = 4,
  kDirty = 8,      // shared: stored through since the last msync; private: copied
};

class Dax;

// One mapping (the kernel's vm_area_struct). Lives from Dax::map to Dax::unmap; the
// fault handler finds it through the registry, never through a pointer it keeps.
struct Map {
  Dax* dax = nullptr;
  fs::Handle* handle = nullptr;  // keeps the file open (and alive when unlinked)
  fs::Inode* inode = nullptr;
  std::byte* base = nullptr;
  size_t length = 0;             // as asked; the reservation is page-rounded
  size_t reserved = 0;
  uint64_t offset = 0;           // file offset of base
  int prot = 0;
  bool sync = false;             // MAP_SHARED_VALIDATE | MAP_SYNC
  bool priv = false;             // MAP_PRIVATE
  std::atomic<uint8_t>* pages = nullptr;  // PageState per page
  size_t npages = 0;

  // Changing what is mapped at a page and recording it in `pages` is one step for
  // every other thread that installs, drops or write-protects the page. Without it a
  // fault undoing a stale install could zero the state of a page another fault had
  // just mapped writable, and a later move would leave that page pointing at the
  // block it moved away from. One lock per fault window, striped, so faults on
  // different windows stay parallel.
  static constexpr size_t kWindowLocks = 16;
  Mutex window_mu[kWindowLocks];
  uint64_t window_of(size_t page) const { return (offset + page * kPage) / kFaultWindow; }
  Mutex& window_lock(size_t page) { return window_mu[window_of(page) % kWindowLocks]; }
  // The first page after `page` that lies in the next window (or `last`).
  size_t window_end(size_t page, size_t last) const {
    const uint64_t end = (window_of(page) + 1) * kFaultWindow - offset;
    return std::min<size_t>(last, end / kPage);
  }
};

class Dax {
 public:
  explicit Dax(fs::Volume& vol);
  ~Dax();  // drops every mapping still alive
  Dax(const Dax&) = delete;
  Dax& operator=(const Dax&) = delete;

  // mmap(2)'s checks and errno; see File::mmap.
  Result<Map*> map(fs::Handle* h, uint64_t offset, size_t length, int prot, int flags, void* addr);
  Status unmap(Map* m);
  // msync(2) of [offset, offset+len) of the mapping (offsets relative to m.base).
  Status msync(Map& m, uint64_t offset, size_t len, int flags);
  // fsync's part: write back what every shared mapping of the inode (nullptr: of
  // every file) stored.
  Status writeback(fs::Inode* ino);

  Granularity granularity(const Map& m) const;
  Status persist(const Map& m, const void* addr, size_t len);
  void flush(const Map& m, const void* addr, size_t len);
  void drain();
  Status memcpy_persist(const Map& m, void* dst, const void* src, size_t len);

  FaultStats stats() const;
  void reset_stats();
  fs::Volume& volume() { return vol_; }
  bool simulated() const { return sim_; }

  enum class Outcome { kInstalled, kSigbus, kNotOurs };
  // Resolve an access at `addr` of mapping `m` (from the SIGSEGV handler, from
  // MAP_POPULATE, or from a refill, which `count` false keeps out of the statistics).
  // Signal-safe: no heap, only syncdax's locks.
  Outcome fault(Map& m, uintptr_t addr, bool write, bool count = true);

 private:
  static void on_layout(void* ctx, fs::Inode& ino, uint64_t off, uint64_t len, fs::LayoutChange how);
  void drop(Map& m, size_t first, size_t last, fs::LayoutChange how);
  void refill(Map& m, uint64_t lo, uint64_t hi);
  Status flush_dirty(Map& m, size_t first, size_t last);
  Status flush_range(const Map& m, uint64_t file_off, size_t len);
  void record(FaultKind k, uint64_t ns);

  fs::Volume& vol_;
  // Stores reach a simulated device's durable side only through its own flush of the
  // device's addresses; on real memory a flush of the user's address is the same line.
  const bool sim_;
  struct Counters {
    std::atomic<uint64_t> count{0}, total_ns{0}, max_ns{0};
    std::atomic<uint64_t> histogram[FaultStats::kBuckets]{};
  };
  Counters counters_[static_cast<size_t>(FaultKind::kCount)];
};

// The registry of all mappings of the process, for calls that come with an address
// only (sdx_munmap, sdx_persist). nullptr when no syncdax mapping holds `addr`.
// Not for the fault handler (which pins what it finds); the caller must know the
// mapping cannot go away meanwhile.
Map* find(const void* addr);
// Whether [addr, addr+len) touches any syncdax mapping.
bool overlaps(const void* addr, size_t len);
// Fence every device that has mappings (sdx_drain names no mapping).
void drain_all();

}  // namespace sdx::dax
