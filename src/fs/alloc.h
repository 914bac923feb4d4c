// fs/alloc: the in-memory free-space index built from the on-media bitmap at mount.
// Prefers contiguous space: extend at a goal block, else the smallest free run that
// fits, else the largest. Knows nothing of files or journals; callers log the bitmap.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <utility>

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
  void remove_run(std::map<uint64_t, uint64_t>::iterator it);
  void insert_run(uint64_t start, uint64_t len);
  std::map<uint64_t, uint64_t> by_start_;         // start -> len
  std::set<std::pair<uint64_t, uint64_t>> by_len_; // (len, start)
  uint64_t free_ = 0;
};

}  // namespace sdx::fs
