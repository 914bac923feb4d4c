// common/safe_alloc: power-of-two size classes carved from mmap'd slabs, each class a
// free list under a spin lock; large blocks straight from mmap.
#include "common/safe_alloc.h"

#include <sys/mman.h>

#include <bit>
#include <cstdint>
#include <mutex>

#include "common/lock.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace sdx {

namespace {

constexpr unsigned kMinShift = 4;  // 16 bytes: room for the free-list link, max_align_t
constexpr unsigned kMaxShift = std::countr_zero(kSafeSmallMax);
constexpr size_t kSlabBytes = size_t{256} << 10;
constexpr size_t kPage = 4096;

// Free blocks stay poisoned under ASan, so a use after free through a container on
// this allocator is still reported.
void poison(void* p, size_t n) {
#if defined(__SANITIZE_ADDRESS__)
  __asan_poison_memory_region(p, n);
#else
  (void)p, (void)n;
#endif
}
void unpoison(void* p, size_t n) {
#if defined(__SANITIZE_ADDRESS__)
  __asan_unpoison_memory_region(p, n);
#else
  (void)p, (void)n;
#endif
}

struct FreeBlock {
  FreeBlock* next;
};

struct SizeClass {
  SpinLock lock;
  FreeBlock* free = nullptr;
  std::byte* fresh = nullptr;  // the never-used rest of the newest slab
  std::byte* fresh_end = nullptr;
};

// Constant-initialised and never destroyed: containers that are themselves destroyed
// during static destruction, or used before main, still find it.
constinit SizeClass g_classes[kMaxShift - kMinShift + 1];

unsigned shift_of(size_t bytes) { return std::max<unsigned>(kMinShift, std::bit_width(bytes - 1)); }

void* map_pages(size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

size_t large_length(size_t bytes) { return (bytes + kPage - 1) / kPage * kPage; }

}  // namespace

void* safe_allocate(size_t bytes) noexcept {
  if (bytes == 0) bytes = 1;
  if (bytes > kSafeSmallMax) return map_pages(large_length(bytes));
  const unsigned shift = shift_of(bytes);
  const size_t size = size_t{1} << shift;
  SizeClass& c = g_classes[shift - kMinShift];
  std::lock_guard<SpinLock> l(c.lock);
  if (FreeBlock* b = c.free) {
    unpoison(b, size);
    c.free = b->next;
    return b;
  }
  if (static_cast<size_t>(c.fresh_end - c.fresh) < size) {
    auto* slab = static_cast<std::byte*>(map_pages(kSlabBytes));
    if (slab == nullptr) return nullptr;
    poison(slab, kSlabBytes);
    c.fresh = slab;
    c.fresh_end = slab + kSlabBytes;
  }
  std::byte* p = c.fresh;
  c.fresh += size;
  unpoison(p, size);
  return p;
}

void safe_deallocate(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes == 0) bytes = 1;
  if (bytes > kSafeSmallMax) {
    ::munmap(p, large_length(bytes));
    return;
  }
  const unsigned shift = shift_of(bytes);
  SizeClass& c = g_classes[shift - kMinShift];
  std::lock_guard<SpinLock> l(c.lock);
  auto* b = static_cast<FreeBlock*>(p);
  b->next = c.free;
  c.free = b;
  poison(b, size_t{1} << shift);
}

}  // namespace sdx
