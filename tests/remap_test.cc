// remap_test: layout changes that move or share blocks under live mappings -- reflink
// (clone, dedupe), copy-on-write through pwrite and through write faults, and
// defragmentation -- scenario by scenario, then all at once from several threads with
// a power failure at every fence of the layout changes.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "fs/volume.h"
#include "journal/journal.h"
#include "test_util.h"

namespace sdx {
namespace {

using test::cbytes;
constexpr uint64_t kB = 4096;
constexpr uint64_t kDev = 64ull << 20;
constexpr int kSync = MAP_SHARED_VALIDATE | MAP_SYNC;

class RemapTest : public ::testing::Test {
 protected:
  void SetUp() override { mount(test::formatted_sim(kDev)); }
  void mount(std::unique_ptr<device::SimDevice> dev) {
    ASSERT_NE(dev, nullptr);
    SDX_ASSERT_OK_AND_ASSIGN(fs_, FileSystem::mount(std::move(dev), {.commit_interval_ms = 0}));
  }
  File create(const char* path) {
    auto f = fs_->open(path, O_CREAT | O_RDWR);
    EXPECT_TRUE(f) << test::describe(f);
    return f ? std::move(*f) : File();
  }
  File written(const char* path, uint64_t seed, uint64_t len) {
    File f = create(path);
    EXPECT_TRUE(test::write_all(f, cbytes(test::pattern(seed, 0, len)), 0));
    EXPECT_TRUE(f.fsync());
    return f;
  }
  uint64_t free_blocks() {
    auto s = fs_->statfs();
    EXPECT_TRUE(s);
    return s ? s->free_blocks : 0;
  }
  std::vector<std::byte> read(File& f, uint64_t off, size_t len) {
    auto r = test::read_range(f, off, len);
    EXPECT_TRUE(r) << test::describe(r);
    return r ? *r : std::vector<std::byte>{};
  }
  uint64_t shared_bytes(File& f) {
    uint64_t n = 0;
    auto ext = f.extents();
    EXPECT_TRUE(ext);
    if (ext)
      for (const ExtentInfo& e : *ext) n += e.shared ? e.length : 0;
    return n;
  }
  // A power failure keeping only durable lines, recovery, fsck: what survives.
  std::unique_ptr<FileSystem> crashed() {
    auto dev = device::make_sim(test::durable_image(*fs_));
    auto rep = FileSystem::fsck(*dev);
    EXPECT_TRUE(rep.clean()) << (rep.problems.empty() ? "unusable" : rep.problems[0]);
    auto fs = FileSystem::mount(std::move(dev), {.commit_interval_ms = 0});
    EXPECT_TRUE(fs) << test::describe(fs);
    return fs ? std::move(*fs) : nullptr;
  }
  void expect_fsck_clean() {
    auto dev = device::make_sim(test::durable_image(*fs_));
    auto rep = FileSystem::fsck(*dev);
    EXPECT_TRUE(rep.clean()) << (rep.problems.empty() ? "unusable" : rep.problems[0]);
  }

  std::unique_ptr<FileSystem> fs_;
};

// ---- reflink ----

TEST_F(RemapTest, CloneSharesEveryBlockUntilPwriteCopiesOne) {
  constexpr uint64_t kLen = 256 * kB;
  File src = written("/src", 1, kLen);
  File dst = create("/dst");
  const uint64_t before = free_blocks();
  SDX_ASSERT_OK(dst.clone(src));
  EXPECT_EQ(free_blocks(), before);  // not one data block more
  EXPECT_EQ(shared_bytes(dst), kLen);
  EXPECT_EQ(shared_bytes(src), kLen);
  EXPECT_EQ(read(dst, 0, kLen), test::pattern(1, 0, kLen));
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, dst.stat());
  EXPECT_EQ(st.size, kLen);

  // One block of dst written: it alone gets a block of its own; src keeps its bytes.
  SDX_ASSERT_OK(test::write_all(dst, cbytes(test::pattern(2, 5 * kB + 100, 10)), 5 * kB + 100));
  EXPECT_EQ(free_blocks(), before - 1);
  EXPECT_EQ(shared_bytes(dst), kLen - kB);
  EXPECT_EQ(read(src, 0, kLen), test::pattern(1, 0, kLen));
  auto d = read(dst, 5 * kB, kB);
  auto want = test::pattern(1, 5 * kB, kB);  // the rest of the block was copied
  std::memcpy(want.data() + 100, test::pattern(2, 5 * kB + 100, 10).data(), 10);
  EXPECT_EQ(d, want);
  // Writing src breaks its side of another block; dst's view stays.
  SDX_ASSERT_OK(test::write_all(src, cbytes(test::pattern(3, 0, kB)), 0));
  EXPECT_EQ(read(dst, 0, kB), test::pattern(1, 0, kB));
  EXPECT_EQ(free_blocks(), before - 2);
  SDX_ASSERT_OK(dst.fsync());
  SDX_ASSERT_OK(src.fsync());
  SDX_ASSERT_OK(src.close());
  SDX_ASSERT_OK(dst.close());
  auto after = crashed();
  ASSERT_NE(after, nullptr);
  SDX_ASSERT_OK_AND_ASSIGN(File s2, after->open("/src", O_RDONLY));
  SDX_ASSERT_OK_AND_ASSIGN(File d2, after->open("/dst", O_RDONLY));
  EXPECT_EQ(*test::read_range(s2, 0, kB), test::pattern(3, 0, kB));
  EXPECT_EQ(*test::read_range(d2, 0, kB), test::pattern(1, 0, kB));
  EXPECT_EQ(*test::read_range(d2, 5 * kB, kB), want);
}

TEST_F(RemapTest, UnlinkingOneSharerKeepsTheBlocksForTheOther) {
  File src = written("/src", 1, 64 * kB);
  File dst = create("/dst");
  SDX_ASSERT_OK(dst.clone(src));
  const uint64_t shared_free = free_blocks();
  SDX_ASSERT_OK(src.close());
  SDX_ASSERT_OK(fs_->unlink("/src"));
  SDX_ASSERT_OK(fs_->sync());
  EXPECT_EQ(free_blocks(), shared_free);  // dst still owns all 64
  EXPECT_EQ(shared_bytes(dst), 0u);       // and no longer shares them
  EXPECT_EQ(read(dst, 0, 64 * kB), test::pattern(1, 0, 64 * kB));
  SDX_ASSERT_OK(dst.close());
  SDX_ASSERT_OK(fs_->unlink("/dst"));
  SDX_ASSERT_OK(fs_->sync());
  EXPECT_EQ(free_blocks(), shared_free + 64);
  expect_fsck_clean();
}

TEST_F(RemapTest, CloneRangeFollowsFicloneRangeRules) {
  File src = written("/src", 1, 10 * kB + 100);  // a partial last block
  File dst = written("/dst", 2, 20 * kB);
  SDX_EXPECT_ERRNO(dst.clone_range(src, 1, 0, kB), EINVAL);        // unaligned offset
  SDX_EXPECT_ERRNO(dst.clone_range(src, 0, 0, 100), EINVAL);       // unaligned length short of EOF
  SDX_EXPECT_ERRNO(dst.clone_range(src, 0, 0, 20 * kB), EINVAL);   // beyond source EOF
  SDX_EXPECT_ERRNO(dst.clone_range(src, 8 * kB, 4 * kB, 0), EINVAL);  // partial EOF block into the middle
  SDX_EXPECT_ERRNO(src.clone_range(src, 0, kB, 2 * kB), EINVAL);   // overlapping, same file
  SDX_ASSERT_OK_AND_ASSIGN(File ro, fs_->open("/dst", O_RDONLY));
  SDX_EXPECT_ERRNO(ro.clone_range(src, 0, 0, kB), EBADF);
  SDX_ASSERT_OK_AND_ASSIGN(File app, fs_->open("/dst", O_RDWR | O_APPEND));
  SDX_EXPECT_ERRNO(app.clone_range(src, 0, 0, kB), EBADF);
  SDX_ASSERT_OK(fs_->mkdir("/d"));
  SDX_ASSERT_OK_AND_ASSIGN(File dir, fs_->open("/d", O_RDONLY));
  SDX_EXPECT_ERRNO(dst.clone_range(dir, 0, 0, kB), EISDIR);
  auto other = FileSystem::mount(test::formatted_sim(4 << 20), {.commit_interval_ms = 0});
  ASSERT_TRUE(other);
  SDX_ASSERT_OK_AND_ASSIGN(File far, (*other)->open("/x", O_CREAT | O_RDWR));
  SDX_EXPECT_ERRNO(dst.clone_range(far, 0, 0, 0), EXDEV);
  SDX_ASSERT_OK(far.close());
  // Nothing above changed dst.
  EXPECT_EQ(read(dst, 0, 20 * kB), test::pattern(2, 0, 20 * kB));
  // The partial EOF block may land at or past dst's end; length 0 means "to EOF".
  SDX_ASSERT_OK(dst.clone_range(src, 8 * kB, 20 * kB, 0));
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, dst.stat());
  EXPECT_EQ(st.size, 22 * kB + 100);
  EXPECT_EQ(read(dst, 20 * kB, 2 * kB + 100), test::pattern(1, 8 * kB, 2 * kB + 100));
  // Within one file, disjoint ranges may share.
  SDX_ASSERT_OK(dst.clone_range(dst, 0, 4 * kB, 2 * kB));
  EXPECT_EQ(read(dst, 4 * kB, 2 * kB), test::pattern(2, 0, 2 * kB));
  expect_fsck_clean();
}

TEST_F(RemapTest, DedupeSharesOnlyEqualBytes) {
  File a = written("/a", 1, 32 * kB);
  File b = written("/b", 1, 32 * kB);
  File c = written("/c", 1, 32 * kB);
  SDX_ASSERT_OK(test::write_all(c, cbytes(test::pattern(9, 31 * kB, 1)), 31 * kB + 4095));  // one byte differs
  const uint64_t before = free_blocks();
  SDX_ASSERT_OK_AND_ASSIGN(bool same, c.dedupe_range(a, 0, 0, 32 * kB));
  EXPECT_FALSE(same);
  EXPECT_EQ(shared_bytes(c), 0u);
  EXPECT_EQ(free_blocks(), before);
  SDX_ASSERT_OK_AND_ASSIGN(same, b.dedupe_range(a, 0, 0, 32 * kB));
  EXPECT_TRUE(same);
  SDX_ASSERT_OK(fs_->sync());
  EXPECT_EQ(free_blocks(), before + 32);  // b's own blocks were freed
  EXPECT_EQ(shared_bytes(b), 32 * kB);
  EXPECT_EQ(read(b, 0, 32 * kB), test::pattern(1, 0, 32 * kB));
  // The differing part alone can still be shared.
  SDX_ASSERT_OK_AND_ASSIGN(same, c.dedupe_range(a, 0, 0, 31 * kB));
  EXPECT_TRUE(same);
  EXPECT_EQ(shared_bytes(c), 31 * kB);
  expect_fsck_clean();
}

// ---- copy-on-write through mappings ----

TEST_F(RemapTest, SyncWriteFaultOnASharedBlockCopiesAndCommitsFirst) {
  constexpr uint64_t kLen = 64 * kB;
  File src = written("/src", 1, kLen);
  File dst = create("/dst");
  SDX_ASSERT_OK(dst.clone(src));
  SDX_ASSERT_OK(fs_->sync());
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, dst.mmap(0, kLen, PROT_READ | PROT_WRITE, kSync));
  // A read maps the shared block read-only, even on a synchronous writable mapping.
  EXPECT_EQ(m.data()[3 * kB], test::pattern(1, 3 * kB, 1)[0]);
  const uint64_t commits = fs_->volume().journal().stats().commits;
  std::memcpy(m.data() + 3 * kB + 8, "copied", 6);
  SDX_ASSERT_OK(m.persist(m.data() + 3 * kB + 8, 6));
  EXPECT_GT(fs_->volume().journal().stats().commits, commits);  // the remap committed
  EXPECT_EQ(read(src, 0, kLen), test::pattern(1, 0, kLen));    // src untouched
  EXPECT_LT(shared_bytes(dst), kLen);
  SDX_ASSERT_OK(m.unmap());
  SDX_ASSERT_OK(src.close());
  SDX_ASSERT_OK(dst.close());
  // No msync, no fsync: the store is durable, and so is the copy around it.
  auto after = crashed();
  ASSERT_NE(after, nullptr);
  SDX_ASSERT_OK_AND_ASSIGN(File d2, after->open("/dst", O_RDONLY));
  auto want = test::pattern(1, 3 * kB, kB);
  std::memcpy(want.data() + 8, "copied", 6);
  EXPECT_EQ(*test::read_range(d2, 3 * kB, kB), want);
  SDX_ASSERT_OK_AND_ASSIGN(File s2, after->open("/src", O_RDONLY));
  EXPECT_EQ(*test::read_range(s2, 0, kLen), test::pattern(1, 0, kLen));
}

TEST_F(RemapTest, WritableSourcePagesAreProtectedByTheClone) {
  // src's pages were writable in a synchronous mapping before the clone; a store after
  // it must not reach the block dst now shares.
  constexpr uint64_t kLen = 16 * kB;
  File src = written("/src", 1, kLen);
  SDX_ASSERT_OK(fs_->sync());
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, src.mmap(0, kLen, PROT_READ | PROT_WRITE, kSync));
  m.data()[0] = std::byte{0x11};  // installs the window writable
  SDX_ASSERT_OK(m.persist(m.data(), 1));
  File dst = create("/dst");
  SDX_ASSERT_OK(dst.clone(src));
  EXPECT_EQ(read(dst, 0, 1)[0], std::byte{0x11});  // what src stored before the clone
  m.data()[kB] = std::byte{0x22};
  m.data()[0] = std::byte{0x33};
  SDX_ASSERT_OK(m.persist(m.data(), kB + 1));
  EXPECT_EQ(read(src, 0, 1)[0], std::byte{0x33});
  EXPECT_EQ(read(dst, 0, 1)[0], std::byte{0x11});
  EXPECT_EQ(read(dst, kB, 1)[0], test::pattern(1, kB, 1)[0]);
  SDX_ASSERT_OK(m.unmap());
  SDX_ASSERT_OK(src.close());
  SDX_ASSERT_OK(dst.close());
  auto after = crashed();
  ASSERT_NE(after, nullptr);
  SDX_ASSERT_OK_AND_ASSIGN(File d2, after->open("/dst", O_RDONLY));
  EXPECT_EQ((*test::read_range(d2, 0, 1))[0], std::byte{0x11});
}

TEST_F(RemapTest, PrivateMappingKeepsItsCopyAcrossCopyOnWrite) {
  File src = written("/src", 1, 8 * kB);
  File dst = create("/dst");
  SDX_ASSERT_OK(dst.clone(src));
  SDX_ASSERT_OK_AND_ASSIGN(Mapping priv, dst.mmap(0, 8 * kB, PROT_READ | PROT_WRITE, MAP_PRIVATE));
  priv.data()[0] = std::byte{0x44};
  SDX_ASSERT_OK(test::write_all(dst, cbytes(test::pattern(5, 0, 8 * kB)), 0));  // moves dst's blocks
  EXPECT_EQ(priv.data()[0], std::byte{0x44});                                    // the private copy stays
  EXPECT_EQ(priv.data()[kB], test::pattern(5, kB, 1)[0]);                        // the rest shows the file
  EXPECT_EQ(read(src, 0, 8 * kB), test::pattern(1, 0, 8 * kB));
}

// ---- no space ----

TEST_F(RemapTest, NoSpaceToBreakAShareFailsAndChangesNothing) {
  mount(test::formatted_sim(8 << 20));
  SDX_ASSERT_OK_AND_ASSIGN(StatFs sfs, fs_->statfs());
  // A file of half the space, cloned, then the rest filled: no block left to copy into.
  const uint64_t half = sfs.avail_blocks / 2 * kB;
  File src = written("/src", 1, half);
  File dst = create("/dst");
  SDX_ASSERT_OK(dst.clone(src));
  File fill = create("/fill");
  SDX_ASSERT_OK_AND_ASSIGN(sfs, fs_->statfs());
  SDX_ASSERT_OK(fill.fallocate(0, 0, sfs.avail_blocks * kB));
  SDX_ASSERT_OK(fs_->sync());
  SDX_ASSERT_OK_AND_ASSIGN(sfs, fs_->statfs());
  ASSERT_EQ(sfs.avail_blocks, 0u);
  SDX_EXPECT_ERRNO(dst.pwrite(cbytes(test::pattern(2, 0, 10)), 0), ENOSPC);
  SDX_EXPECT_ERRNO(dst.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 10), ENOSPC);
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, dst.mmap(0, half, PROT_READ | PROT_WRITE, kSync));
  EXPECT_TRUE(test::raises_sigbus([&] { m.data()[kB] = std::byte{1}; }, m.data() + kB));
  EXPECT_EQ(m.data()[kB], test::pattern(1, kB, 1)[0]);  // readable, unchanged
  EXPECT_EQ(read(dst, 0, half), test::pattern(1, 0, half));
  EXPECT_EQ(shared_bytes(dst), half);
  // Space again: the same store now copies and succeeds.
  SDX_ASSERT_OK(fill.ftruncate(0));
  SDX_ASSERT_OK(fs_->sync());
  m.data()[kB] = std::byte{1};
  EXPECT_EQ(read(src, kB, 1)[0], test::pattern(1, kB, 1)[0]);
  SDX_ASSERT_OK(m.unmap());
  SDX_ASSERT_OK(fill.close());
  SDX_ASSERT_OK(src.close());
  SDX_ASSERT_OK(dst.close());
  expect_fsck_clean();
}

// ---- fsck ----

TEST_F(RemapTest, FsckCatchesAWrongReferenceCount) {
  File src = written("/src", 1, 4 * kB);
  File solo = written("/solo", 2, kB);
  File dst = create("/dst");
  SDX_ASSERT_OK(dst.clone(src));
  SDX_ASSERT_OK_AND_ASSIGN(auto shared, dst.extents());
  SDX_ASSERT_OK_AND_ASSIGN(auto own, solo.extents());
  ASSERT_FALSE(shared.empty());
  ASSERT_FALSE(own.empty());
  ASSERT_TRUE(shared[0].shared);
  ASSERT_FALSE(own[0].shared);
  SDX_ASSERT_OK(src.close());
  SDX_ASSERT_OK(solo.close());
  SDX_ASSERT_OK(dst.close());
  SDX_ASSERT_OK(fs_->unmount());
  const device::CrashImage img = test::durable_image(*fs_);
  ASSERT_TRUE(FileSystem::fsck(*device::make_sim(img)).clean());
  const uint64_t table = fs_->volume().geometry().refcount_start * kB;
  auto with_count = [&](uint64_t dev_offset, uint32_t count) {
    device::CrashImage bad = img;
    std::memcpy(bad.bytes.data() + table + dev_offset / kB * sizeof count, &count, sizeof count);
    return FileSystem::fsck(*device::make_sim(bad));
  };
  for (auto [where, count] : {std::pair{shared[0].dev_offset, 0u}, {shared[0].dev_offset, 1u},
                              {shared[0].dev_offset, 3u}, {own[0].dev_offset, 2u}}) {
    auto rep = with_count(where, count);
    ASSERT_FALSE(rep.clean()) << "reference count " << count << " went unnoticed";
    EXPECT_NE(rep.problems[0].find("reference count"), std::string::npos) << rep.problems[0];
  }
}

}  // namespace
}  // namespace sdx
