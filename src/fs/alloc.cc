#include "fs/alloc.h"

#include <algorithm>
#include <iterator>

namespace sdx::fs {

void Allocator::remove_run(ByStart::iterator it) {
  by_len_.erase({it->second, it->first});
  free_ -= it->second;
  by_start_.erase(it);
}

void Allocator::insert_run(uint64_t start, uint64_t len) {
  by_start_.emplace(start, len);
  by_len_.insert({len, start});
  free_ += len;
}

void Allocator::add_free(uint64_t start, uint64_t len) {
  if (len == 0) return;
  auto next = by_start_.lower_bound(start);
  if (next != by_start_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      len += prev->second;
      remove_run(prev);
    }
  }
  next = by_start_.lower_bound(start);
  if (next != by_start_.end() && start + len == next->first) {
    len += next->second;
    remove_run(next);
  }
  insert_run(start, len);
}

bool Allocator::is_free(uint64_t block) const {
  auto it = by_start_.upper_bound(block);
  if (it == by_start_.begin()) return false;
  --it;
  return block < it->first + it->second;
}

bool Allocator::take(uint64_t start, uint64_t len) {
  auto it = by_start_.upper_bound(start);
  if (it == by_start_.begin()) return false;
  --it;
  const uint64_t rs = it->first, rl = it->second;
  if (start + len > rs + rl) return false;
  remove_run(it);
  if (start > rs) insert_run(rs, start - rs);
  if (rs + rl > start + len) insert_run(start + len, rs + rl - start - len);
  return true;
}

Run Allocator::alloc(uint64_t goal, uint64_t want) {
  if (want == 0 || by_start_.empty()) return {};
  if (goal != 0 && is_free(goal)) {
    auto it = std::prev(by_start_.upper_bound(goal));
    const uint64_t n = std::min(want, it->first + it->second - goal);
    take(goal, n);
    return {goal, n};
  }
  auto fit = by_len_.lower_bound({want, 0});
  if (fit == by_len_.end()) fit = std::prev(by_len_.end());
  const uint64_t start = fit->second, n = std::min(want, fit->first);
  take(start, n);
  return {start, n};
}

}  // namespace sdx::fs
