// mmap_test: mappings and the synchronous fault, scenario by scenario (DESIGN.md,
// "Testing the guarantee"). Each durability test ends in a simulated power failure that
// keeps only flushed lines (the harshest image), remounts it, and checks fsck and data.
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstring>
#include <optional>
#include <thread>

#include "crashtest/fence_capture.h"
#include "dax/dax.h"
#include "fs/volume.h"
#include "journal/journal.h"
#include "test_util.h"

namespace sdx {
namespace {

using test::cbytes;
constexpr uint64_t kB = 4096;

class MmapTest : public test::SimFsTest {
 protected:
  // A power failure now keeping only durable lines, then recovery: what survives.
  std::unique_ptr<FileSystem> crashed() {
    auto img = test::durable_image(*fs_);
    auto dev = device::make_sim(img);
    EXPECT_TRUE(FileSystem::fsck(*dev).clean());
    auto fs = FileSystem::mount(std::move(dev), {.commit_interval_ms = 0});
    EXPECT_TRUE(fs) << test::describe(fs);
    return fs ? std::move(*fs) : nullptr;
  }
  uint64_t count(FaultKind k) { return fs_->fault_stats()[k].count; }
  uint64_t commits() { return fs_->volume().journal().stats().commits; }
};

void fill(std::byte* p, uint64_t seed, uint64_t off, size_t len) {
  auto v = test::pattern(seed, off, len);
  std::memcpy(p, v.data(), len);
}

bool holds(FileSystem& fs, const char* path, uint64_t seed, uint64_t off, size_t len) {
  auto f = fs.open(path, O_RDONLY);
  if (!f) return false;
  auto got = test::read_range(*f, off, len);
  return got && *got == test::pattern(seed, off, len);
}

// ---- flags, as mmap(2) checks them ----

TEST_F(MmapTest, FlagsAreCheckedAsMmapDoes) {
  File f = create("/f");
  SDX_ASSERT_OK(f.ftruncate(1 << 20));
  SDX_EXPECT_ERRNO(f.mmap(0, kB, PROT_READ, 0), EINVAL);
  SDX_EXPECT_ERRNO(f.mmap(0, kB, PROT_READ, 0x04), EINVAL);  // a map type that does not exist
  SDX_EXPECT_ERRNO(f.mmap(0, kB, PROT_READ, MAP_SHARED_VALIDATE | MAP_GROWSDOWN), EOPNOTSUPP);
  SDX_EXPECT_OK(f.mmap(0, kB, PROT_READ, MAP_SHARED | MAP_GROWSDOWN));  // ignored, as Linux does
  SDX_EXPECT_ERRNO(f.mmap(100, kB, PROT_READ, MAP_SHARED), EINVAL);
  SDX_EXPECT_ERRNO(f.mmap(0, 0, PROT_READ, MAP_SHARED), EINVAL);
  {
    SDX_ASSERT_OK_AND_ASSIGN(Mapping legacy, f.mmap(0, kB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_SYNC));
    EXPECT_FALSE(legacy.synchronous());  // MAP_SYNC needs MAP_SHARED_VALIDATE
    EXPECT_EQ(legacy.granularity(), Granularity::kPage);
    SDX_ASSERT_OK_AND_ASSIGN(Mapping sync, f.mmap(0, kB, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
    EXPECT_TRUE(sync.synchronous());
    EXPECT_EQ(sync.granularity(), Granularity::kCacheLine);
    EXPECT_EQ(granularity(sync.data()), Granularity::kCacheLine);
  }
  SDX_ASSERT_OK_AND_ASSIGN(File ro, fs_->open("/f", O_RDONLY));
  SDX_EXPECT_ERRNO(ro.mmap(0, kB, PROT_READ | PROT_WRITE, MAP_SHARED), EACCES);
  SDX_EXPECT_OK(ro.mmap(0, kB, PROT_READ | PROT_WRITE, MAP_PRIVATE));
  SDX_EXPECT_OK(ro.mmap(0, kB, PROT_READ, MAP_SHARED));
  SDX_ASSERT_OK_AND_ASSIGN(File wo, fs_->open("/f", O_WRONLY));
  SDX_EXPECT_ERRNO(wo.mmap(0, kB, PROT_WRITE, MAP_SHARED), EACCES);
}

TEST(MmapDeviceTest, SyncNeedsADeviceAFlushMakesDurable) {
  // msync-on-fence on a disk file: durability needs msync, which no CPU flush gives.
  const std::string path = "mmap_test_disk_device.img";
  ::unlink(path.c_str());
  SDX_ASSERT_OK(FileSystem::mkfs(path, {.size = 16 << 20}));
  {
    SDX_ASSERT_OK_AND_ASSIGN(auto fs, FileSystem::mount(path, {.msync_on_fence = true}));
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs->open("/f", O_CREAT | O_RDWR));
    SDX_ASSERT_OK(f.ftruncate(kB));
    if (fs->device().survives_power_failure()) {
      SDX_EXPECT_ERRNO(f.mmap(0, kB, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC), EOPNOTSUPP);
    } else {
      GTEST_LOG_(INFO) << "the working directory is in RAM; MAP_SYNC is possible there";
    }
    SDX_EXPECT_OK(f.mmap(0, kB, PROT_READ | PROT_WRITE, MAP_SHARED));
  }
  ::unlink(path.c_str());
}

// ---- the guarantee ----

// Write through a synchronous mapping of a truncate-extended empty file, persist each
// store from user space, crash before munmap: every block is there.
TEST_F(MmapTest, SyncStoresToEmptyFileSurviveCrash) {
  File f = create("/f");
  constexpr size_t kLen = 1 << 20;
  SDX_ASSERT_OK(f.ftruncate(kLen));
  SDX_ASSERT_OK(fs_->sync());
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, kLen, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  for (size_t off = 0; off < kLen; off += kB) {
    fill(m.data() + off, 7, off, kB);
    SDX_ASSERT_OK(m.persist(m.data() + off, kB));
  }
  // One fault prepares (allocates, zeroes, commits, installs) the 2 MiB window, as the
  // kernel's PMD fault does: the other 255 pages never fault.
  EXPECT_EQ(count(FaultKind::kWriteSync), 1u);
  EXPECT_EQ(fs_->fault_stats().total(), 1u);
  auto after = crashed();
  ASSERT_NE(after, nullptr);
  EXPECT_TRUE(holds(*after, "/f", 7, 0, kLen));
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, after->stat("/f"));
  EXPECT_EQ(st.blocks, kLen / kB);
}

// The negative control: a non-synchronous mapping, stores not msync'ed, crash. The
// checker above must see the loss, or it proves nothing.
TEST_F(MmapTest, NonSyncStoresWithoutMsyncAreLostInCrash) {
  File f = create("/f");
  constexpr size_t kLen = 256 << 10;
  SDX_ASSERT_OK(f.ftruncate(kLen));
  SDX_ASSERT_OK(fs_->sync());
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, kLen, PROT_READ | PROT_WRITE, MAP_SHARED));
  EXPECT_EQ(m.granularity(), Granularity::kPage);
  for (size_t off = 0; off < kLen; off += kB) fill(m.data() + off, 7, off, kB);
  EXPECT_EQ(count(FaultKind::kWriteAlloc), 1u);
  EXPECT_EQ(count(FaultKind::kWriteSync), 0u);
  auto after = crashed();
  ASSERT_NE(after, nullptr);
  EXPECT_FALSE(holds(*after, "/f", 7, 0, kLen));
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, after->stat("/f"));
  EXPECT_EQ(st.blocks, 0u);  // the allocations never committed
}

// The same stores, msync'ed: durable.
TEST_F(MmapTest, NonSyncStoresSurviveAfterMsync) {
  File f = create("/f");
  constexpr size_t kLen = 256 << 10;
  SDX_ASSERT_OK(f.ftruncate(kLen));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, kLen, PROT_READ | PROT_WRITE, MAP_SHARED));
  for (size_t off = 0; off < kLen; off += kB) fill(m.data() + off, 9, off, kB);
  SDX_ASSERT_OK(m.sync(0, kLen, MS_SYNC));
  // msync write-protected the pages: a store faults again, through the upgrade path.
  const uint64_t before = count(FaultKind::kUpgrade);
  m.data()[0] = std::byte{1};
  EXPECT_EQ(count(FaultKind::kUpgrade), before + 1);
  m.data()[0] = test::pattern(9, 0, 1)[0];
  SDX_ASSERT_OK(f.fdatasync());  // fsync writes back mapped stores too
  auto after = crashed();
  ASSERT_NE(after, nullptr);
  EXPECT_TRUE(holds(*after, "/f", 9, 0, kLen));
}

// Unmapping does not discard what was stored: as the kernel keeps the dirty pages of
// the file after munmap, a later fsync makes them durable (found by `syncdax crashtest
// --kill --no-sync`: the stores of a clean run were lost after unmount).
TEST_F(MmapTest, NonSyncStoresUnmappedBeforeFsyncSurvive) {
  File f = create("/f");
  constexpr size_t kLen = 64 << 10;
  SDX_ASSERT_OK(f.ftruncate(kLen));
  {
    SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, kLen, PROT_READ | PROT_WRITE, MAP_SHARED));
    fill(m.data(), 11, 0, kLen);
  }
  SDX_ASSERT_OK(f.fsync());
  auto after = crashed();
  ASSERT_NE(after, nullptr);
  EXPECT_TRUE(holds(*after, "/f", 11, 0, kLen));
}

// A synchronous store persisted without a flush of its own line is not durable: the
// simulated device sees exactly what user space flushed.
TEST_F(MmapTest, OnlyPersistedLinesSurvive) {
  File f = create("/f");
  SDX_ASSERT_OK(f.ftruncate(kB));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, kB, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  std::memset(m.data(), 0x11, 64);
  SDX_ASSERT_OK(m.persist(m.data(), 64));
  std::memset(m.data() + 64, 0x22, 64);  // never persisted
  auto after = crashed();
  ASSERT_NE(after, nullptr);
  SDX_ASSERT_OK_AND_ASSIGN(File g, after->open("/f", O_RDONLY));
  SDX_ASSERT_OK_AND_ASSIGN(auto got, test::read_range(g, 0, 128));
  EXPECT_EQ(got[0], std::byte{0x11});
  EXPECT_EQ(got[63], std::byte{0x11});
  EXPECT_EQ(got[64], std::byte{0});
}

// Preallocated, committed blocks cost no commit, and the whole extent installs at once.
TEST_F(MmapTest, PreallocatedSyncFaultCommitsNothing) {
  File f = create("/f");
  constexpr size_t kLen = 2 << 20;
  SDX_ASSERT_OK(f.fallocate(0, 0, kLen));
  SDX_ASSERT_OK(f.fsync());
  const uint64_t c0 = commits();
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, kLen, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  for (size_t off = 0; off < kLen; off += kB) {
    fill(m.data() + off, 3, off, kB);
    SDX_ASSERT_OK(m.persist(m.data() + off, kB));
  }
  EXPECT_EQ(commits(), c0);
  EXPECT_EQ(count(FaultKind::kWriteSync), 0u);
  EXPECT_LE(count(FaultKind::kWrite), 2u);  // one install per 2 MiB window
  auto after = crashed();
  ASSERT_NE(after, nullptr);
  EXPECT_TRUE(holds(*after, "/f", 3, 0, kLen));
}

// Read a hole (zero page), then write it: the write goes through the synchronous path.
TEST_F(MmapTest, ReadHoleThenWrite) {
  File f = create("/f");
  SDX_ASSERT_OK(f.ftruncate(4 * kB));
  SDX_ASSERT_OK(fs_->sync());
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, 4 * kB, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  for (size_t i = 0; i < 4 * kB; ++i) ASSERT_EQ(m.data()[i], std::byte{0});
  EXPECT_EQ(count(FaultKind::kReadHole), 1u);  // one zero-page install for the hole
  fill(m.data() + kB, 5, kB, kB);
  SDX_ASSERT_OK(m.persist(m.data() + kB, kB));
  EXPECT_EQ(count(FaultKind::kUpgrade), 1u);
  auto after = crashed();
  ASSERT_NE(after, nullptr);
  EXPECT_TRUE(holds(*after, "/f", 5, kB, kB));
}

// pwrite into a range a mapping shows as the zero page: the mapping shows the data.
TEST_F(MmapTest, PwriteReplacesZeroPageInEveryMapping) {
  File f = create("/f");
  SDX_ASSERT_OK(f.ftruncate(8 * kB));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping a, f.mmap(0, 8 * kB, PROT_READ, MAP_SHARED));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping b, f.mmap(0, 8 * kB, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  EXPECT_EQ(a.data()[kB], std::byte{0});
  EXPECT_EQ(b.data()[kB], std::byte{0});
  SDX_ASSERT_OK(test::write_all(f, test::pattern(4, kB, 100), kB));
  EXPECT_EQ(std::memcmp(a.data() + kB, test::pattern(4, kB, 100).data(), 100), 0);
  EXPECT_EQ(std::memcmp(b.data() + kB, test::pattern(4, kB, 100).data(), 100), 0);
  // A fault that allocates in one mapping replaces the zero page in the other.
  EXPECT_EQ(a.data()[5 * kB], std::byte{0});
  b.data()[5 * kB] = std::byte{0x5a};
  EXPECT_EQ(a.data()[5 * kB], std::byte{0x5a});
}

// Read fault on a block whose allocation is not yet committed maps it read-only; the
// store that follows must not make it writable without a commit.
TEST_F(MmapTest, ReadOnlyToWritableGoesThroughTheSyncCheck) {
  File f = create("/f");
  SDX_ASSERT_OK(test::write_all(f, test::pattern(1, 0, 4 * kB), 0));  // allocated, not committed
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, 4 * kB, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  EXPECT_EQ(m.data()[0], test::pattern(1, 0, 1)[0]);
  EXPECT_EQ(count(FaultKind::kReadBlock), 1u);
  const uint64_t c0 = commits();
  fill(m.data(), 2, 0, kB);
  SDX_ASSERT_OK(m.persist(m.data(), kB));
  EXPECT_EQ(count(FaultKind::kUpgrade), 1u);
  EXPECT_EQ(commits(), c0 + 1);
  auto after = crashed();
  ASSERT_NE(after, nullptr);
  EXPECT_TRUE(holds(*after, "/f", 2, 0, kB));
  EXPECT_TRUE(holds(*after, "/f", 1, kB, 3 * kB));  // pwrite's data: durable before its extent
}

// Two threads write-fault the same hole: one allocation, one zeroing, both stores kept.
TEST_F(MmapTest, TwoThreadsFaultTheSameHole) {
  File f = create("/f");
  SDX_ASSERT_OK(f.ftruncate(kB));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, kB, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  for (int round = 0; round < 20; ++round) {
    std::barrier go(2);
    auto store = [&](size_t at) {
      go.arrive_and_wait();
      m.data()[at] = std::byte{static_cast<unsigned char>(at)};
      (void)m.persist(m.data() + at, 1);
    };
    std::thread t1(store, 8), t2(store, 16);
    t1.join();
    t2.join();
    EXPECT_EQ(m.data()[8], std::byte{8});
    EXPECT_EQ(m.data()[16], std::byte{16});
    SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
    EXPECT_EQ(st.blocks, 1u);
    SDX_ASSERT_OK(f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, kB));  // a hole again
    SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
    ASSERT_EQ(st.blocks, 0u);
    EXPECT_EQ(m.data()[8], std::byte{0});
  }
}

// Threads fault holes of one file through a synchronous and a plain shared mapping
// while another thread runs fsync, fdatasync and msync; every persisted store, and
// every store the final msync covered, survives a power failure.
TEST_F(MmapTest, ConcurrentFaultsWithFsyncAndMsyncRunning) {
  File f = create("/f");
  constexpr size_t kPages = 256;
  SDX_ASSERT_OK(f.ftruncate(2 * kPages * kB));
  SDX_ASSERT_OK(fs_->sync());
  SDX_ASSERT_OK_AND_ASSIGN(Mapping s, f.mmap(0, kPages * kB, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping p, f.mmap(kPages * kB, kPages * kB, PROT_READ | PROT_WRITE, MAP_SHARED));
  std::atomic<bool> done{false};
  std::thread syncer([&] {
    for (int i = 0; !done.load(); ++i) {
      EXPECT_TRUE(i % 3 == 0 ? f.fsync() : i % 3 == 1 ? f.fdatasync() : p.sync(0, kPages * kB, MS_SYNC));
    }
  });
  auto writer = [&](size_t first) {
    for (size_t pg = first; pg < kPages; pg += 2) {
      fill(s.data() + pg * kB, 11, pg * kB, 512);
      EXPECT_TRUE(s.persist(s.data() + pg * kB, 512));
      fill(p.data() + pg * kB, 12, (kPages + pg) * kB, 512);
    }
  };
  std::thread w1(writer, 0), w2(writer, 1);
  w1.join();
  w2.join();
  done = true;
  syncer.join();
  SDX_ASSERT_OK(p.sync(0, kPages * kB, MS_SYNC));
  auto after = crashed();
  ASSERT_NE(after, nullptr);
  for (size_t pg = 0; pg < kPages; ++pg) {
    EXPECT_TRUE(holds(*after, "/f", 11, pg * kB, 512)) << "page " << pg;
    EXPECT_TRUE(holds(*after, "/f", 12, (kPages + pg) * kB, 512)) << "page " << kPages + pg;
  }
}

// ---- SIGBUS ----

using test::raises_sigbus;

TEST_F(MmapTest, AccessBeyondEofIsSigbus) {
  File f = create("/f");
  SDX_ASSERT_OK(f.ftruncate(kB + 10));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, 4 * kB, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  m.data()[kB + 100] = std::byte{1};  // the EOF page itself is mapped, as in Linux
  volatile std::byte* p = m.data() + 2 * kB;
  EXPECT_TRUE(raises_sigbus([&] { (void)*p; }, m.data() + 2 * kB));
  EXPECT_TRUE(raises_sigbus([&] { *p = std::byte{1}; }, m.data() + 2 * kB));
  EXPECT_EQ(count(FaultKind::kSigbus), 2u);
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
  EXPECT_EQ(st.size, kB + 10);
  EXPECT_EQ(st.blocks, 2u);  // the store prepared the pages up to EOF, nothing past it
  // A store that faults past EOF allocates nothing, even where its window would.
  SDX_ASSERT_OK(f.ftruncate(10));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping fresh, f.mmap(0, 4 * kB, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  SDX_ASSERT_OK(f.ftruncate(kB + 10));
  SDX_ASSERT_OK(f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 2 * kB));
  volatile std::byte* r = fresh.data() + 3 * kB;
  EXPECT_TRUE(raises_sigbus([&] { *r = std::byte{1}; }, fresh.data() + 3 * kB));
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.blocks, 0u);
  // Shrinking the file takes the pages away from live mappings too.
  SDX_ASSERT_OK(f.ftruncate(10));
  volatile std::byte* q = m.data() + kB;
  EXPECT_TRUE(raises_sigbus([&] { (void)*q; }, m.data() + kB));
}

TEST_F(MmapTest, NoSpaceIsSigbusAndChangesNothing) {
  mount(test::formatted_sim(4 << 20));
  File f = create("/f");
  SDX_ASSERT_OK_AND_ASSIGN(StatFs sfs, fs_->statfs());
  const uint64_t len = (sfs.avail_blocks + 16) * kB;
  SDX_ASSERT_OK(f.ftruncate(len));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, len, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  uint64_t off = 0;
  for (; off < len; off += kB) {
    bool bus = raises_sigbus([&] { m.data()[off] = std::byte{1}; }, m.data() + off);
    if (bus) break;
  }
  EXPECT_LT(off, len);
  EXPECT_EQ(off / kB, sfs.avail_blocks);
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
  EXPECT_EQ(st.blocks, sfs.avail_blocks);
  SDX_ASSERT_OK(m.unmap());
  SDX_ASSERT_OK(f.close());
  auto after = crashed();
  ASSERT_NE(after, nullptr);
}

TEST_F(MmapTest, FailedCommitIsSigbusAndMapsNothing) {
  File f = create("/f");
  SDX_ASSERT_OK(f.ftruncate(4 * kB));
  SDX_ASSERT_OK(fs_->sync());
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, 4 * kB, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  fs_->volume().journal().fail_for_test(Error{EIO, "injected EIO"});
  EXPECT_TRUE(raises_sigbus([&] { m.data()[0] = std::byte{1}; }, m.data()));
  // Nothing was made writable: the store never landed, and reading shows no data.
  EXPECT_EQ(m.data()[0], std::byte{0});
  EXPECT_EQ(count(FaultKind::kSigbus), 1u);
  auto after = crashed();  // the durable state is consistent: fsck-clean, no blocks
  ASSERT_NE(after, nullptr);
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, after->stat("/f"));
  EXPECT_EQ(st.blocks, 0u);
}

// ---- private mappings ----

TEST_F(MmapTest, PrivateMappingCopiesOnWriteAndNeverChangesTheFile) {
  File f = create("/f");
  SDX_ASSERT_OK(test::write_all(f, test::pattern(1, 0, 2 * kB), 0));
  SDX_ASSERT_OK(f.ftruncate(4 * kB));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, 4 * kB, PROT_READ | PROT_WRITE, MAP_PRIVATE));
  EXPECT_EQ(m.data()[0], test::pattern(1, 0, 1)[0]);
  m.data()[0] = std::byte{0x77};
  m.data()[3 * kB] = std::byte{0x78};  // a hole: a private zero page, no allocation
  EXPECT_EQ(m.data()[0], std::byte{0x77});
  SDX_ASSERT_OK(m.sync(0, 4 * kB, MS_SYNC));
  SDX_ASSERT_OK_AND_ASSIGN(auto got, test::read_range(f, 0, 4 * kB));
  EXPECT_EQ(got[0], test::pattern(1, 0, 1)[0]);
  EXPECT_EQ(got[3 * kB], std::byte{0});
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
  EXPECT_EQ(st.blocks, 2u);  // the two written by pwrite, nothing for the private store
}

// ---- system calls whose buffer is a syncdax mapping ----

// pwrite from an unfaulted mapping of the same file, and pread into one: the buffer's
// faults need the inode lock the call would hold. Must not deadlock.
TEST_F(MmapTest, PwriteFromAndPreadIntoAMappingOfTheSameFile) {
  File f = create("/f");
  SDX_ASSERT_OK(test::write_all(f, test::pattern(6, 0, 64 * kB), 0));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, 128 * kB, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  SDX_ASSERT_OK(f.ftruncate(128 * kB));
  SDX_ASSERT_OK_AND_ASSIGN(size_t n, f.pwrite({m.data(), 32 * kB}, 64 * kB));
  EXPECT_EQ(n, 32 * kB);
  EXPECT_EQ(std::memcmp(m.data() + 64 * kB, test::pattern(6, 0, 32 * kB).data(), 32 * kB), 0);
  SDX_ASSERT_OK_AND_ASSIGN(n, f.pread({m.data() + 100 * kB, 8 * kB}, 0));
  EXPECT_EQ(n, 8 * kB);
  EXPECT_EQ(std::memcmp(m.data() + 100 * kB, test::pattern(6, 0, 8 * kB).data(), 8 * kB), 0);
}

// ---- scale ----

// Filling a sparse file page by page through one synchronous mapping: kernel memory
// areas stay bounded by extents, not pages.
TEST_F(MmapTest, KernelMappingsStayBoundedByExtents) {
  File f = create("/f");
  constexpr size_t kLen = 32 << 20;
  SDX_ASSERT_OK(f.ftruncate(kLen));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, kLen, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC));
  for (size_t off = 0; off < kLen; off += kB) m.data()[off] = std::byte{1};
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
  EXPECT_EQ(st.blocks, kLen / kB);
  EXPECT_LE(test::vmas_in(m.data(), kLen).size(), st.extents + 2) << st.extents << " extents";
}

// ---- a power failure at every fence ----

// Stores through synchronous mappings of an empty (hole-filling) and a preallocated
// file, each acknowledged once persist returned, with pwrite + fdatasync on a third file
// keeping the journal busy. Deterministic (one thread, no background committer), so a
// run can be repeated to take the crash image at any fence.
struct Ack {
  const char* path;
  uint64_t off, len, seed, fence;
};

struct Workload {
  std::vector<Ack> acks;
  uint64_t fences = 0;
};

// With sync false, the same stores go through plain shared mappings, "persisted" with
// flush + drain and no msync: the mistake the negative control makes on purpose.
Workload run_workload(device::SimDevice* dev, std::unique_ptr<FileSystem>& fs, bool sync) {
  Workload w;
  auto* sim = dev;
  File a = fs->open("/a", O_CREAT | O_RDWR).value();
  File b = fs->open("/b", O_CREAT | O_RDWR).value();
  File c = fs->open("/c", O_CREAT | O_RDWR).value();
  EXPECT_TRUE(a.ftruncate(48 * kB));
  EXPECT_TRUE(b.fallocate(0, 0, 16 * kB));
  EXPECT_TRUE(fs->sync());
  const int flags = sync ? MAP_SHARED_VALIDATE | MAP_SYNC : MAP_SHARED;
  Mapping ma = a.mmap(0, 48 * kB, PROT_READ | PROT_WRITE, flags).value();
  Mapping mb = b.mmap(0, 16 * kB, PROT_READ | PROT_WRITE, flags).value();
  auto persist = [&](const Mapping& m, const std::byte* p, size_t n) {
    if (sync) {
      EXPECT_TRUE(m.persist(p, n));
    } else {
      m.flush(p, n);
      m.drain();
    }
  };
  // One mapping per page of /d: a fault prepares no more than its mapping, so each of
  // these stores allocates and commits on its own.
  File d = fs->open("/d", O_CREAT | O_RDWR).value();
  EXPECT_TRUE(d.ftruncate(16 * kB));
  EXPECT_TRUE(fs->sync());
  std::vector<Mapping> md;
  for (int i = 0; i < 16; ++i) md.push_back(d.mmap(i * kB, kB, PROT_READ | PROT_WRITE, flags).value());
  uint64_t seed = 100;
  for (int i = 0; i < 48; ++i) {
    if (i % 3 == 1) {
      const int pg = (i * 7) % 16;
      const uint64_t doff = pg * kB + 512;
      fill(md[pg].data() + 512, ++seed, doff, 100);
      persist(md[pg], md[pg].data() + 512, 100);
      w.acks.push_back({"/d", doff, 100, seed, sim->fence_count()});
    }
    const uint64_t off = (i * 29 % 48) * kB + (i * 200) % 3800, len = 256;
    fill(ma.data() + off, ++seed, off, len);
    persist(ma, ma.data() + off, len);
    w.acks.push_back({"/a", off, len, seed, sim->fence_count()});
    if (i % 3 == 0) {
      const uint64_t boff = (i % 16) * kB + 64;
      fill(mb.data() + boff, ++seed, boff, 128);
      persist(mb, mb.data() + boff, 128);
      w.acks.push_back({"/b", boff, 128, seed, sim->fence_count()});
    }
    if (i % 5 == 0) {
      const uint64_t coff = i * 1000;
      EXPECT_TRUE(test::write_all(c, test::pattern(++seed, coff, 700), coff));
      EXPECT_TRUE(c.fdatasync());
      w.acks.push_back({"/c", coff, 700, seed, sim->fence_count()});
    }
  }
  w.fences = sim->fence_count();
  return w;
}

struct CrashResult {
  uint64_t checked = 0, violations = 0, fences = 0;
};

// Crash at `max_points` fences of the workload (all of them if fewer), two images each:
// only durable lines, and a torn half of the unflushed ones. Every image must pass fsck
// and mount; a store acknowledged before the fence and missing is a violation.
CrashResult check_every_fence(bool sync, uint64_t max_points) {
  CrashResult r;
  // Only durable lines, and a torn half of the unflushed ones.
  const std::vector<crashtest::CrashVariant> variants{{0.0, false}, {0.5, true}};
  using Images = std::vector<crashtest::FenceCapture::Image>;
  // Fence numbers are the device's own count, formatting included.
  auto run = [&](const std::vector<uint64_t>* points, Images* images, uint64_t* start) {
    auto dev = test::formatted_sim(2 << 20);
    device::SimDevice* sim = dev.get();
    auto fs = FileSystem::mount(std::move(dev), {.commit_interval_ms = 0}).value();
    if (start) *start = sim->fence_count();
    std::optional<crashtest::FenceCapture> cap;
    if (points) cap.emplace(*sim, *points, variants, 0);
    Workload w = run_workload(sim, fs, sync);
    if (cap) *images = std::move(cap->images());
    return w;
  };
  uint64_t start = 0;
  const Workload model = run(nullptr, nullptr, &start);
  EXPECT_GT(model.acks.size(), 60u);
  const uint64_t span = model.fences - start;
  const uint64_t points = std::min(span, max_points);
  std::vector<uint64_t> all;
  for (uint64_t i = 0; i < points; ++i) all.push_back(start + 1 + i * span / points);
  r.fences = span;
  constexpr size_t kBatch = 32;
  for (size_t b = 0; b < all.size(); b += kBatch) {
    const std::vector<uint64_t> batch(all.begin() + b, all.begin() + std::min(all.size(), b + kBatch));
    Images images;
    const Workload w = run(&batch, &images, nullptr);
    EXPECT_EQ(w.fences, model.fences) << "the workload is not deterministic";
    for (auto& img : images) {
      const uint64_t k = img.fence;  // the image was taken at the start of fence k
      auto dev = device::make_sim(img.image);
      auto report = FileSystem::fsck(*dev);
      EXPECT_TRUE(report.clean()) << "fence " << k << ": " << (report.problems.empty() ? "" : report.problems[0]);
      auto fs = FileSystem::mount(std::move(dev), {.commit_interval_ms = 0});
      EXPECT_TRUE(fs) << test::describe(fs);
      ++r.checked;
      if (!fs) continue;
      for (const Ack& a : w.acks) {
        if (a.fence >= k) continue;  // not acknowledged before this fence
        if (!holds(**fs, a.path, a.seed, a.off, a.len)) {
          ++r.violations;
          if (sync)
            ADD_FAILURE() << "fence " << k << (img.variant == 1 ? " (torn image)" : "") << ": store to " << a.path
                          << " at " << a.off << " acknowledged at fence " << a.fence << " is lost";
        }
      }
    }
  }
  EXPECT_EQ(r.checked, variants.size() * all.size());
  return r;
}

// The fence hook copies the image on the heap, inside fault handling; TSan rightly
// reports that. The normal and ASan builds run these.
#ifdef __SANITIZE_THREAD__
#define SDX_SKIP_UNDER_TSAN() GTEST_SKIP() << "the crash hook allocates inside the SIGSEGV handler"
#else
#define SDX_SKIP_UNDER_TSAN() (void)0
#endif

TEST(MmapCrashTest, AcknowledgedStoresSurviveAPowerFailureAtEveryFence) {
  SDX_SKIP_UNDER_TSAN();
  const CrashResult r = check_every_fence(true, test::env_u64("SYNCDAX_CRASH_POINTS", 1000));
  std::printf("crash images checked: %llu (fences in the workload: %llu), violations: %llu\n",
              (unsigned long long)r.checked, (unsigned long long)r.fences, (unsigned long long)r.violations);
  EXPECT_EQ(r.violations, 0u);
}

// The negative control of the checker above: without MAP_SYNC and without msync, the
// same workload must be caught losing acknowledged stores.
TEST(MmapCrashTest, TheCheckerCatchesStoresLostWithoutMapSync) {
  SDX_SKIP_UNDER_TSAN();
  const CrashResult r = check_every_fence(false, 40);
  std::printf("crash images checked: %llu, violations: %llu\n", (unsigned long long)r.checked,
              (unsigned long long)r.violations);
  EXPECT_GT(r.violations, 0u);
}

// ---- faults that are not ours ----

// What the handler installed before syncdax's does with a fault syncdax does not own:
// the kernel's default action, or a sanitizer's report (which proves the chaining).
#if defined(__SANITIZE_ADDRESS__)
#define SDX_EXPECT_FOREIGN_SEGV(stmt) EXPECT_EXIT(stmt, ::testing::KilledBySignal(SIGABRT), "AddressSanitizer: SEGV")
#elif defined(__SANITIZE_THREAD__)
#define SDX_EXPECT_FOREIGN_SEGV(stmt) EXPECT_EXIT(stmt, ::testing::ExitedWithCode(66), "ThreadSanitizer: SEGV")
#else
#define SDX_EXPECT_FOREIGN_SEGV(stmt) EXPECT_EXIT(stmt, ::testing::KilledBySignal(SIGSEGV), "")
#endif

// A fresh file system and a one-page read-only mapping of a file on it, for the
// children of the death tests (members go in reverse order: mapping, file, fs).
struct ReadOnlyMapping {
  std::unique_ptr<FileSystem> fs;
  File file;
  Mapping map;
};

ReadOnlyMapping read_only_mapping() {
  ReadOnlyMapping r;
  r.fs = FileSystem::mount(test::formatted_sim(16 << 20)).value();
  r.file = r.fs->open("/f", O_CREAT | O_RDWR).value();
  (void)r.file.ftruncate(kB);
  r.map = r.file.mmap(0, kB, PROT_READ, MAP_SHARED).value();
  return r;
}

TEST(MmapDeathTest, ForeignFaultsKeepTheirDefaultAction) {
  SDX_EXPECT_FOREIGN_SEGV({
    ReadOnlyMapping r = read_only_mapping();
    (void)*reinterpret_cast<volatile char*>(r.map.data());  // the handler is installed and works
    void* other = ::mmap(nullptr, kB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *static_cast<volatile char*>(other) = 1;
  });
}

TEST(MmapDeathTest, StoreToReadOnlyMappingIsSigsegv) {
  SDX_EXPECT_FOREIGN_SEGV({
    ReadOnlyMapping r = read_only_mapping();
    *reinterpret_cast<volatile char*>(r.map.data()) = 1;
  });
}

}  // namespace
}  // namespace sdx
