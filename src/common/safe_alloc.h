// common/safe_alloc: heap memory for code that may run in a signal handler. The dax
// fault path runs in SIGSEGV and must not call malloc (the interrupted thread may be
// inside it), yet the metadata it changes lives in growable containers. These take
// their memory from mmap'd slabs through lock-guarded free lists instead: never from
// malloc, never from a lock that is not syncdax's own. LeakSanitizer does not scan
// this memory, so what lives in it must not be the only owner of malloc'd memory.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <new>
#include <vector>

namespace sdx {

// At least `bytes` (0 counts as 1), aligned to the smallest power of two that holds it,
// up to a page; nullptr when the kernel refuses memory. Blocks up to kSafeSmallMax come
// from per-size free lists that keep freed memory for reuse; larger ones are mmap'd.
void* safe_allocate(size_t bytes) noexcept;
// Give back a block; `bytes` must be what it was allocated with.
void safe_deallocate(void* p, size_t bytes) noexcept;
inline constexpr size_t kSafeSmallMax = size_t{64} << 10;

// A stateless std allocator over safe_allocate, for the containers the fault path grows.
template <class T>
class SafeAllocator {
 public:
  static_assert(alignof(T) <= 4096, "safe_allocate aligns to a page at most");
  using value_type = T;

  SafeAllocator() noexcept = default;
  template <class U>
  SafeAllocator(const SafeAllocator<U>&) noexcept {}

  T* allocate(size_t n) {
    if (n > std::numeric_limits<size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    if (void* p = safe_allocate(bytes(n))) return static_cast<T*>(p);
    throw std::bad_alloc();
  }
  void deallocate(T* p, size_t n) noexcept { safe_deallocate(p, bytes(n)); }

  template <class U>
  bool operator==(const SafeAllocator<U>&) const noexcept { return true; }

 private:
  // Blocks are aligned to their power-of-two size, so asking for at least the
  // alignment is enough to get it.
  static size_t bytes(size_t n) { return std::max(n * sizeof(T), alignof(T)); }
};

template <class T>
using SafeVector = std::vector<T, SafeAllocator<T>>;

}  // namespace sdx
