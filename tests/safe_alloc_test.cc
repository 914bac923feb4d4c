// The signal-safe allocator (common/safe_alloc): alignment, reuse, large blocks,
// concurrent use, and the std containers the fault path builds on it.
#include "common/safe_alloc.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

namespace sdx {
namespace {

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

TEST(SafeAlloc, BlocksAreAlignedToTheirSizeClassAndWritableWhole) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{8}, size_t{16}, size_t{17}, size_t{100}, size_t{4096},
                   size_t{5000}, kSafeSmallMax - 1, kSafeSmallMax, kSafeSmallMax + 1, size_t{3} << 20}) {
    void* p = safe_allocate(n);
    ASSERT_NE(p, nullptr) << n;
    const size_t align = std::min<size_t>(std::bit_ceil(std::max<size_t>(n, 16)), 4096);
    EXPECT_EQ(addr(p) % align, 0u) << n << " bytes at " << p;
    std::memset(p, 0xab, n);
    safe_deallocate(p, n);
  }
}

TEST(SafeAlloc, LiveBlocksNeverOverlap) {
  std::mt19937 rng(1);
  struct Live { unsigned char* p; size_t n; unsigned char tag; };
  std::vector<Live> live;
  for (int i = 0; i < 5000; ++i) {
    if (!live.empty() && rng() % 3 == 0) {
      const size_t k = rng() % live.size();
      const Live b = live[k];
      for (size_t j = 0; j < b.n; ++j) ASSERT_EQ(b.p[j], b.tag) << "block of " << b.n << " overwritten";
      safe_deallocate(b.p, b.n);
      live[k] = live.back();
      live.pop_back();
      continue;
    }
    const size_t n = size_t{1} << (rng() % 18);
    const size_t len = n - rng() % n;
    auto* p = static_cast<unsigned char*>(safe_allocate(len));
    ASSERT_NE(p, nullptr);
    const auto tag = static_cast<unsigned char>(i);
    std::memset(p, tag, len);
    live.push_back({p, len, tag});
  }
  for (const Live& b : live) {
    for (size_t j = 0; j < b.n; ++j) ASSERT_EQ(b.p[j], b.tag);
    safe_deallocate(b.p, b.n);
  }
}

TEST(SafeAlloc, FreedSmallBlocksAreReused) {
  void* a = safe_allocate(200);
  safe_deallocate(a, 200);
  void* b = safe_allocate(256);  // the same size class
  EXPECT_EQ(a, b);
  safe_deallocate(b, 256);
}

TEST(SafeAlloc, ThreadsGetDisjointBlocks) {
  constexpr int kThreads = 4;
  std::atomic<int> corrupt{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<std::pair<unsigned char*, size_t>> mine;
      const auto tag = static_cast<unsigned char>(0x10 + t);
      for (int i = 0; i < 20000; ++i) {
        if (mine.size() > 64 || (!mine.empty() && rng() % 2)) {
          auto [p, n] = mine.back();
          mine.pop_back();
          for (size_t j = 0; j < n; ++j)
            if (p[j] != tag) { corrupt.fetch_add(1); break; }
          safe_deallocate(p, n);
        } else {
          const size_t n = 1 + rng() % 3000;
          auto* p = static_cast<unsigned char*>(safe_allocate(n));
          std::memset(p, tag, n);
          mine.push_back({p, n});
        }
      }
      for (auto [p, n] : mine) safe_deallocate(p, n);
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(corrupt.load(), 0);
}

TEST(SafeAllocator, BacksStdContainers) {
  std::vector<uint64_t, SafeAllocator<uint64_t>> v;
  for (uint64_t i = 0; i < 100000; ++i) v.push_back(i * 3);  // grows past the small classes
  for (uint64_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], i * 3);

  std::map<uint64_t, uint64_t, std::less<>, SafeAllocator<std::pair<const uint64_t, uint64_t>>> m;
  std::unordered_map<uint64_t, size_t, std::hash<uint64_t>, std::equal_to<>,
                     SafeAllocator<std::pair<const uint64_t, size_t>>> u;
  for (uint64_t i = 0; i < 5000; ++i) {
    m[i * 7 % 5000] = i;
    u[i] = i + 1;
  }
  ASSERT_EQ(m.size(), 5000u);
  ASSERT_EQ(u.size(), 5000u);
  for (uint64_t i = 0; i < 5000; ++i) {
    EXPECT_EQ(m.at(i * 7 % 5000), i);
    EXPECT_EQ(u.at(i), i + 1);
  }
  u.clear();
  m.clear();
  EXPECT_TRUE(u.empty());
}

TEST(SafeAllocator, OveralignedElementsAreAligned) {
  struct alignas(256) Wide { char c[256]; };
  std::vector<Wide, SafeAllocator<Wide>> v(3);
  EXPECT_EQ(addr(v.data()) % 256, 0u);
}

TEST(SafeAllocator, IsStatelessAndRebinds) {
  SafeAllocator<int> a;
  SafeAllocator<double> b(a);
  EXPECT_TRUE(a == b);
  EXPECT_TRUE(std::allocator_traits<SafeAllocator<int>>::is_always_equal::value);
  EXPECT_THROW((void)a.allocate(SIZE_MAX / 2), std::bad_array_new_length);
}

}  // namespace
}  // namespace sdx
