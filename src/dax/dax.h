// dax: mappings of files into the process (fs/dax.c and the mm fault path's role).
// Owns the SIGSEGV handler, the registry of mappings, installing, upgrading and
// unmapping page ranges, the shared zero page, dirty tracking, and the synchronous
// fault. It asks fs where a file range lives (iomap) and the journal nothing directly;
// it must never change metadata itself, and on the fault path never allocate heap
// memory or take a lock that is not syncdax's own.
#pragma once

#include <atomic>
#include <cstdint>

#include "syncdax/syncdax.hpp"

namespace sdx::fs { class Volume; class Handle; struct Inode; }

namespace sdx::dax {

struct Map;

// The dax side of one mounted file system: its mappings' statistics and the hook by
// which fs tells it that a file range moved.
class Dax {
 public:
  explicit Dax(fs::Volume& vol);
  ~Dax();
  Dax(const Dax&) = delete;
  Dax& operator=(const Dax&) = delete;

  Result<Map*> map(fs::Handle* h, uint64_t offset, size_t length, int prot, int flags, void* addr);
  size_t live_mappings() const;
  FaultStats stats() const;
  void reset_stats();

 private:
  friend struct Fault;
  fs::Volume& vol_;
};

}  // namespace sdx::dax
