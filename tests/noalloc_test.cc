// The write-fault path allocates no heap memory: the dax layer runs iomap_begin
// (WRITE|FAULT), range_dirty_seq and the journal commit inside a SIGSEGV handler, where
// malloc may be interrupted mid-update. This program replaces malloc and every operator
// new/delete with versions that count calls per thread, and asserts that the counts do
// not move across each of those calls. It cannot run under ASan or TSan, which replace
// the allocator themselves (tests/CMakeLists.txt leaves it out of sanitizer builds).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>

#include <cstdlib>
#include <new>
#include <optional>
#include <string>

#include "common/safe_alloc.h"
#include "device/device.h"
#include "fs/volume.h"
#include "journal/journal.h"
#include "test_util.h"

// ---- counting allocator ----

namespace {
// Per thread, so the background threads of gtest or the journal cannot disturb a count.
constinit thread_local uint64_t t_heap_calls = 0;
}  // namespace

extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void __libc_free(void*);

void* malloc(size_t n) noexcept {
  ++t_heap_calls;
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t m) noexcept {
  ++t_heap_calls;
  return __libc_calloc(n, m);
}
void* realloc(void* p, size_t n) noexcept {
  ++t_heap_calls;
  return __libc_realloc(p, n);
}
void free(void* p) noexcept {
  if (p) ++t_heap_calls;
  __libc_free(p);
}
}

namespace {
void* counted_new(size_t n, size_t align) {
  ++t_heap_calls;
  if (n == 0) n = 1;
  return align <= alignof(std::max_align_t) ? __libc_malloc(n) : __libc_memalign(align, n);
}
void* must_new(size_t n, size_t align) {
  if (void* p = counted_new(n, align)) return p;
  throw std::bad_alloc();
}
void counted_delete(void* p) noexcept { free(p); }
constexpr size_t kPlain = alignof(std::max_align_t);
}  // namespace

void* operator new(size_t n) { return must_new(n, kPlain); }
void* operator new[](size_t n) { return must_new(n, kPlain); }
void* operator new(size_t n, const std::nothrow_t&) noexcept { return counted_new(n, kPlain); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return counted_new(n, kPlain); }
void* operator new(size_t n, std::align_val_t a) { return must_new(n, size_t(a)); }
void* operator new[](size_t n, std::align_val_t a) { return must_new(n, size_t(a)); }
void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return counted_new(n, size_t(a)); }
void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return counted_new(n, size_t(a)); }
void operator delete(void* p) noexcept { counted_delete(p); }
void operator delete[](void* p) noexcept { counted_delete(p); }
void operator delete(void* p, size_t) noexcept { counted_delete(p); }
void operator delete[](void* p, size_t) noexcept { counted_delete(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_delete(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_delete(p); }
void operator delete(void* p, std::align_val_t) noexcept { counted_delete(p); }
void operator delete[](void* p, std::align_val_t) noexcept { counted_delete(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { counted_delete(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { counted_delete(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { counted_delete(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { counted_delete(p); }

namespace sdx {
namespace {

constexpr uint64_t kBlock = 4096;

// How many allocations and frees `f` made on this thread.
template <class F>
uint64_t heap_calls(F&& f) {
  const uint64_t before = t_heap_calls;
  f();
  return t_heap_calls - before;
}

// Keeps the compiler from eliding a new/delete pair.
void escape(void* p) { asm volatile("" : : "g"(p) : "memory"); }

TEST(NoAlloc, TheCounterSeesEveryKindOfAllocation) {
  EXPECT_EQ(heap_calls([] { int* p = new int(1); escape(p); delete p; }), 2u);
  EXPECT_EQ(heap_calls([] { auto* p = new (std::align_val_t{256}) char[300]; escape(p); ::operator delete[](p, std::align_val_t{256}); }), 2u);
  EXPECT_EQ(heap_calls([] { void* p = std::malloc(10); escape(p); p = std::realloc(p, 5000); escape(p); std::free(p); }), 3u);
  EXPECT_EQ(heap_calls([] { std::string s(100, 'x'); escape(s.data()); }), 2u);
  EXPECT_EQ(heap_calls([] { void* p = safe_allocate(100); escape(p); safe_deallocate(p, 100); }), 0u);
  EXPECT_EQ(heap_calls([] { void* p = safe_allocate(1 << 20); escape(p); safe_deallocate(p, 1 << 20); }), 0u);
}

// ---- the fault path, on each kind of emulated persistent memory ----

enum class Dev { kSim, kFile };

// Small enough that a few dozen commits fill the log and force a checkpoint.
constexpr MkfsOptions kMkfs{.size = 8 << 20, .journal_bytes = 64 << 10};

struct Mounted {
  std::unique_ptr<test::TempPath> path;  // file devices only
  std::unique_ptr<FileSystem> fs;
  fs::Volume& vol() { return fs->volume(); }
};

Mounted mount(Dev kind) {
  Mounted m;
  const MountOptions mo{.commit_interval_ms = 0};  // commits happen only where the test says
  if (kind == Dev::kSim) {
    auto r = FileSystem::mount(test::formatted_sim(kMkfs.size, kMkfs), mo);
    EXPECT_TRUE(r) << r.error().to_string();
    if (r) m.fs = std::move(*r);
    return m;
  }
  m.path = std::make_unique<test::TempPath>("noalloc");
  MkfsOptions o = kMkfs;
  o.kind = DeviceKind::kFile;
  auto st = FileSystem::mkfs(*m.path, o);
  EXPECT_TRUE(st) << st.error().to_string();
  auto r = FileSystem::mount(m.path->str(), mo);
  EXPECT_TRUE(r) << r.error().to_string();
  if (r) m.fs = std::move(*r);
  return m;
}

// One 4 KiB write fault at `off`, then what the synchronous fault does with a DIRTY
// answer (range_dirty_seq, commit), each asserted free of heap calls.
void fault_and_commit(fs::Volume& vol, fs::Inode& ino, uint64_t off) {
  std::optional<Result<fs::Iomap>> m;
  EXPECT_EQ(heap_calls([&] { m.emplace(vol.iomap_begin(ino, off, kBlock, fs::kIomapWrite | fs::kIomapFault)); }), 0u)
      << "iomap_begin at " << off;
  ASSERT_TRUE(*m) << (*m).error().to_string();
  const fs::Iomap& map = **m;
  EXPECT_EQ(map.type, fs::IomapType::kMapped);
  uint64_t seq = 0;
  EXPECT_EQ(heap_calls([&] { seq = vol.range_dirty_seq(ino, off, kBlock); }), 0u) << "range_dirty_seq at " << off;
  if (map.flags & fs::kIomapDirty) {
    EXPECT_EQ(seq, map.seq);
  }
  if (seq == 0) return;
  std::optional<Status> st;
  EXPECT_EQ(heap_calls([&] { st.emplace(vol.journal().commit(seq)); }), 0u) << "commit of " << seq;
  ASSERT_TRUE(*st) << (*st).error().to_string();
  EXPECT_EQ(vol.range_dirty_seq(ino, off, kBlock), 0u);
}

enum class Block { kHole, kUnwritten, kMapped };

struct Case {
  Dev dev;
  Block block;
  bool many_extents;  // more than media::kInlineExtents: the map lives in leaf blocks
  bool hint;          // a 64 KiB extent-size hint
};

std::string case_name(const testing::TestParamInfo<Case>& i) {
  const Case& c = i.param;
  static const char* const blocks[] = {"Hole", "Unwritten", "Mapped"};
  return std::string(c.dev == Dev::kSim ? "Sim" : "File") + blocks[int(c.block)] +
         (c.many_extents ? "ManyExtents" : "FewExtents") + (c.hint ? "Hint" : "NoHint");
}

class FaultPath : public testing::TestWithParam<Case> {};

TEST_P(FaultPath, WriteFaultRangeDirtyAndCommitDoNotAllocate) {
  const Case c = GetParam();
  Mounted m = mount(c.dev);
  ASSERT_TRUE(m.fs);
  auto f = m.fs->open("/f", O_CREAT | O_RDWR).value();
  fs::Inode& ino = *m.vol().inode_for_test(f);
  ASSERT_TRUE(f.ftruncate(4 << 20));
  if (c.hint) {
    ASSERT_TRUE(f.set_extsize_hint(16 * kBlock));
  }
  if (c.many_extents) {
    // Every other block far from the test range, so no two extents merge.
    for (uint64_t i = 0; i < 2 * media::kInlineExtents; ++i)
      ASSERT_TRUE(m.vol().iomap_begin(ino, (512 + 32 * i) * kBlock, kBlock, fs::kIomapWrite | fs::kIomapFault));
    ASSERT_GT(f.stat().value().extents, media::kInlineExtents);
  }
  fs::IomapType before = fs::IomapType::kHole;
  if (c.block == Block::kUnwritten) {
    ASSERT_TRUE(f.fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, 16 * kBlock));
    before = fs::IomapType::kUnwritten;
  } else if (c.block == Block::kMapped) {
    ASSERT_TRUE(f.fallocate(0, 0, 16 * kBlock));
    before = fs::IomapType::kMapped;
  }
  ASSERT_TRUE(m.fs->sync());
  for (uint64_t off : {5 * kBlock, 6 * kBlock})
    ASSERT_EQ(m.vol().iomap_begin(ino, off, kBlock, fs::kIomapRead).value().type, before);
  // In the middle of the range (an unwritten extent splits in three), then beside it.
  fault_and_commit(m.vol(), ino, 5 * kBlock);
  if (HasFatalFailure()) return;
  fault_and_commit(m.vol(), ino, 6 * kBlock);
  EXPECT_EQ(heap_calls([&] { (void)m.vol().iomap_begin(ino, 5 * kBlock, kBlock, fs::kIomapWrite | fs::kIomapFault); }), 0u);
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (Dev d : {Dev::kSim, Dev::kFile})
    for (Block b : {Block::kHole, Block::kUnwritten, Block::kMapped})
      for (bool many : {false, true})
        for (bool hint : {false, true}) out.push_back({d, b, many, hint});
  return out;
}

INSTANTIATE_TEST_SUITE_P(All, FaultPath, testing::ValuesIn(all_cases()), case_name);

// Faults that grow a file from inline extents to one leaf and then to several, each
// transaction committed at once so that the small log fills and commits checkpoint --
// with revoke records (from a punched hole) among what the checkpoint replays.
class GrowingMap : public testing::TestWithParam<Dev> {};

TEST_P(GrowingMap, FaultsAcrossLeafBlocksCommitsAndCheckpointsDoNotAllocate) {
  Mounted m = mount(GetParam());
  ASSERT_TRUE(m.fs);
  auto f = m.fs->open("/f", O_CREAT | O_RDWR).value();
  fs::Inode& ino = *m.vol().inode_for_test(f);
  const uint64_t n = 2 * media::kExtentsPerLeaf + 20;
  ASSERT_TRUE(f.ftruncate(2 * n * kBlock));
  uint64_t checkpoints_after_punch = 0;
  for (uint64_t i = 0; i < n; ++i) {
    fault_and_commit(m.vol(), ino, 2 * i * kBlock);
    if (HasFatalFailure()) return;
    if (i == n / 2) {
      ASSERT_TRUE(f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, kBlock));
      ASSERT_TRUE(f.fdatasync());
      checkpoints_after_punch = m.vol().journal().stats().checkpoints;
    }
  }
  EXPECT_GT(f.stat().value().extents, 2 * media::kExtentsPerLeaf) << "the map never reached a third leaf";
  EXPECT_GT(m.vol().journal().stats().checkpoints, checkpoints_after_punch)
      << "no commit found the log full after the punch";
}

INSTANTIATE_TEST_SUITE_P(All, GrowingMap, testing::Values(Dev::kSim, Dev::kFile),
                         [](const auto& i) { return std::string(i.param == Dev::kSim ? "Sim" : "File"); });

// ---- the journal alone ----

constexpr uint64_t kLogOff = 4096, kLogLen = 64 * 4096;
constexpr journal::Region kLog{kLogOff, kLogLen};
constexpr journal::Region kHome{kLogOff + kLogLen, 1 << 20};

std::unique_ptr<device::SimDevice> journal_device() {
  auto d = device::make_sim(2 << 20);
  EXPECT_TRUE(journal::Journal::format(*d, kLog));
  return d;
}

// A full running transaction makes start() commit it and open the next one.
TEST(NoAllocJournal, StartThatCommitsAFullTransactionDoesNotAllocate) {
  auto d = journal_device();
  journal::Journal j(*d, kLog, kHome, 1);
  const std::vector<std::byte> rec(8 << 10, std::byte{7});
  for (int round = 0; round < 3; ++round) {
    {
      journal::Handle h = j.start();  // more than a quarter of the log: full
      for (uint64_t off = 0; off < (96 << 10); off += rec.size()) h.log(kHome.offset + off, rec);
    }
    const uint64_t commits = j.stats().commits;
    EXPECT_EQ(heap_calls([&] { journal::Handle h = j.start(); }), 0u) << "round " << round;
    EXPECT_EQ(j.stats().commits, commits + 1) << "start() did not commit the full transaction";
  }
}

// Commits until one finds the log full and checkpoints; revokes are in the log.
TEST(NoAllocJournal, CommitThatCheckpointsDoesNotAllocate) {
  auto d = journal_device();
  journal::Journal j(*d, kLog, kHome, 1);
  const std::vector<std::byte> rec(12 << 10, std::byte{3});
  for (int i = 0; i < 100 && j.stats().checkpoints < 2; ++i) {
    uint64_t seq;
    {
      journal::Handle h = j.start();
      h.log(kHome.offset + (i % 8) * rec.size(), rec);
      h.revoke(kHome.offset + ((i + 4) % 8) * rec.size(), 4096);
      seq = h.seq();
    }
    std::optional<Status> st;
    EXPECT_EQ(heap_calls([&] { st.emplace(j.commit(seq)); }), 0u) << "commit " << i;
    ASSERT_TRUE(*st);
  }
  EXPECT_EQ(j.stats().checkpoints, 2u);
}

// ---- the whole fault, through the SIGSEGV handler ----

// A store that faults runs syncdax's handler on this thread: the count across the store
// is the handler's. Each kind of fault on both devices: a hole (allocate, zero, commit),
// a preallocated block, a read of a hole then a store (upgrade), a store after msync
// write-protected the page, and an access past EOF (SIGBUS, caught here).
thread_local sigjmp_buf t_bus_jump;

class Handler : public testing::TestWithParam<Dev> {};

TEST_P(Handler, StoresThroughMappingsDoNotAllocate) {
  Mounted m = mount(GetParam());
  ASSERT_TRUE(m.fs);
  auto f = m.fs->open("/m", O_CREAT | O_RDWR).value();
  constexpr size_t kLen = 8 << 20;
  ASSERT_TRUE(f.ftruncate(kLen));
  ASSERT_TRUE(f.fallocate(FALLOC_FL_KEEP_SIZE, 4 << 20, 2 << 20));
  ASSERT_TRUE(f.fsync());
  auto sync = f.mmap(0, kLen, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC).value();
  auto plain = f.mmap(0, kLen, PROT_READ | PROT_WRITE, MAP_SHARED).value();
  std::byte* s = sync.data();
  std::byte* p = plain.data();
  volatile std::byte sink{};
  const uint64_t faults0 = m.fs->fault_stats().total();
  EXPECT_EQ(heap_calls([&] { s[100] = std::byte{1}; }), 0u) << "hole, synchronous";
  EXPECT_EQ(heap_calls([&] { s[(4 << 20) + 100] = std::byte{1}; }), 0u) << "preallocated";
  EXPECT_EQ(heap_calls([&] { sink = p[(2 << 20) + 5]; }), 0u) << "read of a hole";
  EXPECT_EQ(heap_calls([&] { p[(2 << 20) + 5] = std::byte{1}; }), 0u) << "upgrade, allocating";
  ASSERT_TRUE(plain.sync(2 << 20, 4096, MS_SYNC));
  EXPECT_EQ(heap_calls([&] { p[(2 << 20) + 6] = std::byte{1}; }), 0u) << "store after msync";
  EXPECT_EQ(m.fs->fault_stats().total(), faults0 + 5);
  (void)sink;

  // Past EOF: SIGBUS, caught by a handler that jumps back here.
  auto tail = f.mmap(0, kLen + (1 << 20), PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC).value();
  struct sigaction sa {}, old{};
  sa.sa_handler = [](int) { siglongjmp(t_bus_jump, 1); };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &old);
  volatile bool bus = false;  // volatile: read after siglongjmp
  const uint64_t before = t_heap_calls;
  if (sigsetjmp(t_bus_jump, 1) == 0) tail.data()[kLen + 10] = std::byte{1};
  else bus = true;
  const uint64_t calls = t_heap_calls - before;
  sigaction(SIGBUS, &old, nullptr);
  EXPECT_TRUE(bus);
  EXPECT_EQ(calls, 0u) << "SIGBUS past EOF";
}

INSTANTIATE_TEST_SUITE_P(Devices, Handler, testing::Values(Dev::kSim, Dev::kFile),
                         [](const testing::TestParamInfo<Dev>& i) { return i.param == Dev::kSim ? "sim" : "file"; });

}  // namespace
}  // namespace sdx
