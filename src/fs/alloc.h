// fs/alloc: the in-memory free-space index built from the on-media bitmap at mount.
// Prefers contiguous space: extend at a goal block, else the smallest free run that
// fits, else the largest. Knows nothing of files or journals; callers log the bitmap.
// A write fault allocates, so its indexes take SafeAllocator memory.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <utility>

#include "common/safe_alloc.h"

namespace sdx::fs {

struct Run {
  uint64_t start = 0;
  uint64_t len = 0;
};

class Allocator {
 public:
  void add_free(uint64_t start, uint64_t len);  // merges with neighbours
  // Up to `want` blocks, contiguous: at `goal` if free there, else best fit, else the
  // largest run (shorter than asked; the caller asks again). len 0 = no space.
  Run alloc(uint64_t goal, uint64_t want);
  // Take exactly [start, start+len) if it is free (used to keep a run aligned).
  bool take(uint64_t start, uint64_t len);
  uint64_t free_blocks() const { return free_; }
  bool is_free(uint64_t block) const;

 private:
  using ByStart = std::map<uint64_t, uint64_t, std::less<>, SafeAllocator<std::pair<const uint64_t, uint64_t>>>;
  using ByLen = std::set<std::pair<uint64_t, uint64_t>, std::less<>, SafeAllocator<std::pair<uint64_t, uint64_t>>>;
  void remove_run(ByStart::iterator it);
  void insert_run(uint64_t start, uint64_t len);
  ByStart by_start_;  // start -> len
  ByLen by_len_;      // (len, start)
  uint64_t free_ = 0;
};

}  // namespace sdx::fs
