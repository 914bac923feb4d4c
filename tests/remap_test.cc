// remap_test: layout changes that move or share blocks under live mappings -- reflink
// (clone, dedupe), copy-on-write through pwrite and through write faults, and
// defragmentation -- scenario by scenario, then all at once from several threads with
// a power failure at every fence of the layout changes.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "fs/volume.h"
#include "journal/journal.h"
#include "test_util.h"

namespace sdx {
namespace {

using test::cbytes;
constexpr uint64_t kB = 4096;
constexpr int kSync = MAP_SHARED_VALIDATE | MAP_SYNC;

// The issue's "a mapping never keeps a page that points at a freed or reassigned
// block", checked as the kernel sees it: every page of `m` that /proc/self/maps shows
// backed by the device must map the very block the file maps at its offset now, and
// only read-only if that block is shared. What is not backed by the device (not
// installed, the zero page, private copies) cannot be stale. For a mapping that no
// fault or layout change is working on meanwhile. Returns the offending pages.
std::vector<std::string> stale_pages(FileSystem& fs, File& f, const Mapping& m) {
  std::vector<std::string> bad;
  auto ext = f.extents();
  if (!ext) return {"extents: " + ext.error().to_string()};
  const auto base = reinterpret_cast<uintptr_t>(m.data());
  const std::vector<test::Vma> vmas = test::vmas_in(m.data(), m.size());
  const uint64_t fd_off = fs.device().fd_offset();
  for (uintptr_t a = base; a < base + m.size(); a += kB) {
    auto v = std::find_if(vmas.begin(), vmas.end(), [&](const test::Vma& x) { return x.lo <= a && a < x.hi; });
    if (v == vmas.end() || !v->shared_file) continue;
    const uint64_t foff = m.offset() + (a - base), dev = v->pgoff + (a - v->lo) - fd_off;
    auto e = std::find_if(ext->begin(), ext->end(), [&](const ExtentInfo& x) { return x.offset <= foff && foff < x.offset + x.length; });
    const std::string where = "file offset " + std::to_string(foff) + " maps device offset " + std::to_string(dev);
    if (e == ext->end()) bad.push_back(where + ", where the file has a hole");
    else if (e->dev_offset + (foff - e->offset) != dev)
      bad.push_back(where + ", the file device offset " + std::to_string(e->dev_offset + (foff - e->offset)));
    else if (e->shared && v->writable) bad.push_back(where + ", shared, writable");
  }
  return bad;
}

class RemapTest : public test::SimFsTest {
 protected:
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
  // A file of `blocks` blocks of pattern 1, one extent each: appended 4 KiB at a time in
  // turn with a filler, which is then deleted and leaves the free space as fragmented.
  File fragmented(const char* path, uint64_t blocks) {
    File f = create(path);
    File filler = create("/filler");
    for (uint64_t i = 0; i < blocks; ++i) {
      EXPECT_TRUE(test::write_all(f, cbytes(test::pattern(1, i * kB, kB)), i * kB));
      EXPECT_TRUE(test::write_all(filler, cbytes(test::pattern(2, i * kB, kB)), i * kB));
    }
    EXPECT_TRUE(filler.close());
    EXPECT_TRUE(fs_->unlink("/filler"));
    EXPECT_TRUE(fs_->sync());
    return f;
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

// ---- defragmentation ----


TEST_F(RemapTest, DefragmentJoinsAMappedFileAndItsStoresGoOn) {
  constexpr uint64_t kBlocks = 256;
  File f = fragmented("/f", kBlocks);
  SDX_ASSERT_OK_AND_ASSIGN(Stat before, f.stat());
  ASSERT_GE(before.extents, kBlocks / 2);
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, kBlocks * kB, PROT_READ | PROT_WRITE, kSync));
  uint64_t sum = 0;
  for (uint64_t i = 0; i < kBlocks; ++i) sum += static_cast<uint64_t>(m.data()[i * kB]);  // all mapped
  for (uint64_t i = 0; i < kBlocks; i += 7) m.data()[i * kB] = std::byte{0x5a};
  SDX_ASSERT_OK(m.persist(m.data(), kBlocks * kB));
  const size_t vmas_before = test::vmas_in(m.data(), kBlocks * kB).size();
  EXPECT_GE(vmas_before, kBlocks / 2) << "one kernel memory area per fragment";
  SDX_ASSERT_OK_AND_ASSIGN(DefragStats ds, f.defragment());
  EXPECT_EQ(ds.extents_before, before.extents);
  EXPECT_LE(ds.extents_after, 2u);
  EXPECT_GE(ds.blocks_moved, kBlocks - kBlocks / 8);
  // The mapping follows: as many kernel memory areas as extents now, each the file's.
  EXPECT_LE(test::vmas_in(m.data(), kBlocks * kB).size(), ds.extents_after + 2) << sum;
  for (const auto& p : stale_pages(*fs_, f, m)) ADD_FAILURE() << p;
  // The same mapping, after the move: reads and stores reach the new blocks, and the
  // defragmenter mapped them again itself, so the stores take no fault.
  const uint64_t faults = fs_->fault_stats().total();
  for (uint64_t i = 0; i < kBlocks; i += 7) m.data()[i * kB + 1] = std::byte{0xa5};
  EXPECT_EQ(fs_->fault_stats().total(), faults);
  SDX_ASSERT_OK(m.persist(m.data(), kBlocks * kB));
  auto want = test::pattern(1, 0, kBlocks * kB);
  for (uint64_t i = 0; i < kBlocks; i += 7) want[i * kB] = std::byte{0x5a}, want[i * kB + 1] = std::byte{0xa5};
  EXPECT_EQ(read(f, 0, kBlocks * kB), want);
  EXPECT_EQ(std::memcmp(m.data(), want.data(), want.size()), 0);
  // Nothing left to gain: a second pass moves nothing.
  SDX_ASSERT_OK_AND_ASSIGN(ds, f.defragment());
  EXPECT_EQ(ds.blocks_moved, 0u);
  SDX_ASSERT_OK(m.unmap());
  SDX_ASSERT_OK(f.close());
  auto after = crashed();  // no msync: the moves and the stores are durable already
  ASSERT_NE(after, nullptr);
  SDX_ASSERT_OK_AND_ASSIGN(File f2, after->open("/f", O_RDONLY));
  EXPECT_EQ(*test::read_range(f2, 0, kBlocks * kB), want);
}

// Step 3 of the five, alone: once the move has copied a block, a store to it must wait
// (fault, and block on the inode) until the block is remapped, else it lands in the old
// block and is lost. A store is started from the fence right after the copy.
struct MidMove {
  std::thread::id mover;
  std::byte* target = nullptr;
  bool fired = false;
  std::thread storer;
  std::mutex mu;
  std::condition_variable cv;
  bool stored = false;
  bool stored_during_move = false;
};

TEST_F(RemapTest, AStoreToABlockBeingMovedWaitsForTheMove) {
  File f = fragmented("/f", 16);
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, 16 * kB, PROT_READ | PROT_WRITE, kSync));
  m.data()[5 * kB] = std::byte{1};  // every page writable: no fault stands in the way
  SDX_ASSERT_OK(m.persist(m.data(), 16 * kB));
  MidMove mm;
  mm.mover = std::this_thread::get_id();
  mm.target = m.data() + 5 * kB + 64;
  auto* sim = device::as_sim(&fs_->device());
  sim->set_fence_hook([](void* ctx, uint64_t) {
    auto& mm = *static_cast<MidMove*>(ctx);
    if (std::this_thread::get_id() != mm.mover || mm.fired) return;
    mm.fired = true;
    mm.storer = std::thread([&mm] {
      *mm.target = std::byte{0x77};
      std::lock_guard g(mm.mu);
      mm.stored = true;
      mm.cv.notify_all();
    });
    // Correct: the storer is stuck in its fault until the move ends, so this waits the
    // whole bound. Without step 3 the store lands at once, in the old block.
    std::unique_lock l(mm.mu);
    mm.stored_during_move = mm.cv.wait_for(l, std::chrono::milliseconds(200), [&] { return mm.stored; });
  }, &mm);
  SDX_ASSERT_OK_AND_ASSIGN(DefragStats ds, f.defragment());
  sim->set_fence_hook(nullptr, nullptr);
  ASSERT_TRUE(mm.fired);
  mm.storer.join();
  EXPECT_GT(ds.blocks_moved, 0u);
  EXPECT_FALSE(mm.stored_during_move) << "a store reached a block after the move had copied it";
  SDX_ASSERT_OK(m.persist(mm.target, 1));
  EXPECT_EQ(read(f, 5 * kB + 64, 1)[0], std::byte{0x77});
}

// Step 2 of the five, alone: a store that reached a block before the move and is not
// flushed yet. Once the move has remapped the block in memory and let faults go, its
// writer's persist flushes the new block and acknowledges the store, while the durable
// metadata maps the old block until the remap commits. So the move must write the old
// block back before it commits. (The sim device makes every flushed line durable at any
// fence, so the persist cannot run between the two here; the test checks the old block
// at the commit's fence instead, in the image a crash there leaves.)
struct AtCommit {
  std::thread::id mover;
  device::SimDevice* dev = nullptr;
  int fences = 0;
  std::optional<device::CrashImage> image;
};

TEST_F(RemapTest, AStoreBeforeAMoveIsDurableInTheOldBlockWhenTheMoveCommits) {
  File f = fragmented("/f", 16);
  SDX_ASSERT_OK_AND_ASSIGN(Stat before, f.stat());
  SDX_ASSERT_OK_AND_ASSIGN(Mapping m, f.mmap(0, 16 * kB, PROT_READ | PROT_WRITE, kSync));
  m.data()[0] = std::byte{1};  // every page writable: the store below takes no fault
  SDX_ASSERT_OK(m.persist(m.data(), 16 * kB));
  std::memset(m.data() + 5 * kB + 64, 0x77, 64);  // in the CPU cache only
  AtCommit ac;
  ac.mover = std::this_thread::get_id();
  ac.dev = device::as_sim(&fs_->device());
  ac.dev->set_fence_hook([](void* ctx, uint64_t) {
    auto& ac = *static_cast<AtCommit*>(ctx);
    // The mover's first fence is the copy's, its second the remap's commit.
    if (std::this_thread::get_id() == ac.mover && ++ac.fences == 2) ac.image = ac.dev->crash_image(0.0, false, 0);
  }, &ac);
  SDX_ASSERT_OK_AND_ASSIGN(DefragStats ds, f.defragment());
  ac.dev->set_fence_hook(nullptr, nullptr);
  EXPECT_GT(ds.blocks_moved, 0u);
  ASSERT_TRUE(ac.image.has_value());
  auto dev = device::make_sim(*ac.image);
  auto rep = FileSystem::fsck(*dev);
  ASSERT_TRUE(rep.clean()) << (rep.problems.empty() ? "unusable" : rep.problems[0]);
  SDX_ASSERT_OK_AND_ASSIGN(auto after, FileSystem::mount(std::move(dev), {.commit_interval_ms = 0}));
  SDX_ASSERT_OK_AND_ASSIGN(File f2, after->open("/f", O_RDONLY));
  SDX_ASSERT_OK_AND_ASSIGN(Stat crashed, f2.stat());
  EXPECT_EQ(crashed.extents, before.extents) << "the image is not from before the remap's commit";
  SDX_ASSERT_OK_AND_ASSIGN(auto got, test::read_range(f2, 5 * kB + 64, 64));
  EXPECT_EQ(got, std::vector<std::byte>(64, std::byte{0x77})) << "the old block lacks a store made before the move";
}

// ---- everything at once ----
//
// Two threads store 64-byte records through synchronous mappings, each acknowledged
// after persist, and fsync now and then: one into file W, one into C (a clone of W, so
// its stores copy on write). Meanwhile a third thread changes the layout of both under them: defragments,
// punches and refills, truncates, clones W into a new D, clones over C's scratch range
// and breaks those shares, dedupes. At every fence of that thread a power failure is
// simulated (only durable lines) and checked on the spot: fsck clean, and every slot
// holds its last acknowledged record or a later one. Removals touch only the scratch
// ranges, which no writer stores into.

constexpr uint64_t kKept = 1 << 20;        // what the writers store into
constexpr uint64_t kScratch = 256 << 10;   // what the layout thread removes and rewrites
constexpr uint64_t kSlots = kKept / 64;

struct Record {
  uint64_t seq, slot, tag, check;
  uint64_t pad[4];
};
static_assert(sizeof(Record) == 64);
uint64_t check_of(uint64_t seq, uint64_t slot, uint64_t tag) {
  return (seq * 0x9E3779B97F4A7C15ull) ^ (slot << 17) ^ (tag * 0xBF58476D1CE4E5B9ull) ^ 0x5DEECE66Dull;
}

struct Writer {
  const char* path;
  uint64_t tag;
  std::vector<std::atomic<uint64_t>> acked = std::vector<std::atomic<uint64_t>>(kSlots);
  uint64_t stores = 0;
};

struct Oracle {
  std::thread::id layout_thread;
  device::SimDevice* dev = nullptr;
  Writer* writers[2] = {};
  uint64_t stride = 1, fences = 0, checked = 0, torn_checked = 0;
  std::vector<std::string> violations;
};

// The record of every slot of `w`'s file in a recovered file system: at or after the
// acknowledged one (snapshot taken before the image).
// `live`, if given, is the device under test: a violation then also says which block
// the image maps the slot to and what the live CPU view holds there (a missed flush
// shows the acknowledged record there; a store into a block the file no longer maps
// does not).
void check_slots(FileSystem& fs, const Writer& w, const std::vector<uint64_t>& snap, uint64_t fence,
                 std::vector<std::string>& out, const device::Device* live = nullptr) {
  auto f = fs.open(w.path, O_RDONLY);
  if (!f) {
    out.push_back("fence " + std::to_string(fence) + ": " + w.path + ": " + f.error().to_string());
    return;
  }
  auto data = test::read_range(*f, 0, kKept);
  if (!data || data->size() != kKept) {
    out.push_back("fence " + std::to_string(fence) + ": " + w.path + ": short read");
    return;
  }
  for (uint64_t s = 0; s < kSlots; ++s) {
    if (snap[s] == 0) continue;
    Record r;
    std::memcpy(&r, data->data() + s * 64, 64);
    if (r.seq < snap[s] || r.slot != s || r.tag != w.tag || r.check != check_of(r.seq, r.slot, r.tag)) {
      out.push_back("fence " + std::to_string(fence) + ": " + w.path + " slot " + std::to_string(s) +
                    ": acknowledged record " + std::to_string(snap[s]) + " lost (found seq " +
                    std::to_string(r.seq) + ")");
      auto ext = f->extents();
      for (const ExtentInfo& e : ext ? *ext : std::vector<ExtentInfo>{})
        if (live && e.offset <= s * 64 && s * 64 < e.offset + e.length) {
          const uint64_t at = e.dev_offset + (s * 64 - e.offset);
          Record now;
          std::memcpy(&now, live->bytes().data() + at, 64);
          out.back() += "; the image maps it to block " + std::to_string(at / kB) +
                        ", where the live CPU view holds seq " + std::to_string(now.seq);
        }
      return;
    }
  }
}

void check_image(Oracle& o, uint64_t fence, const device::CrashImage& img,
                 const std::vector<uint64_t> (&snaps)[2], bool data) {
  auto dev = device::make_sim(img);
  FsckReport rep = FileSystem::fsck(*dev);
  if (!rep.clean()) {
    o.violations.push_back("fence " + std::to_string(fence) + ": fsck: " +
                           (rep.problems.empty() ? "unusable" : rep.problems[0]));
    return;
  }
  auto fs = FileSystem::mount(std::move(dev), {.commit_interval_ms = 0});
  if (!fs) {
    o.violations.push_back("fence " + std::to_string(fence) + ": mount: " + fs.error().to_string());
    return;
  }
  if (data)
    for (int i = 0; i < 2; ++i) check_slots(**fs, *o.writers[i], snaps[i], fence, o.violations, o.dev);
}

void on_fence(void* ctx, uint64_t fence) {
  auto& o = *static_cast<Oracle*>(ctx);
  // Only the layout thread's fences: the writers' come inside their fault handlers,
  // where nothing may allocate.
  if (std::this_thread::get_id() != o.layout_thread) return;
  if (o.fences++ % o.stride) return;
  std::vector<uint64_t> snaps[2];
  for (int i = 0; i < 2; ++i) {
    snaps[i].resize(kSlots);
    for (uint64_t s = 0; s < kSlots; ++s) snaps[i][s] = o.writers[i]->acked[s].load(std::memory_order_acquire);
  }
  check_image(o, fence, o.dev->crash_image(0.0, false, 0), snaps, true);
  ++o.checked;
  if (o.fences % 4 == 1) {  // and now and then one where unflushed lines survive, torn
    check_image(o, fence, o.dev->crash_image(0.5, true, fence), snaps, false);
    ++o.torn_checked;
  }
}

// Every fence of the layout thread is a crash point. Under TSan the negative control,
// which only has to find some violation, checks every second one.
#if defined(__SANITIZE_THREAD__)
constexpr uint64_t kRounds = 2, kControlStride = 2, kFsyncEvery = 512;
#else
constexpr uint64_t kRounds = 4, kControlStride = 1, kFsyncEvery = 4096;
#endif

// With sync false the writers map MAP_SHARED and only flush and drain, which makes
// nothing durable there: the negative control, whose violations show the oracle bites.
Oracle run_stress(bool sync) {
  Oracle o;
  auto sim = test::formatted_sim(8 << 20);
  if (!sim) {
    ADD_FAILURE() << "no sim device";
    return o;
  }
  device::SimDevice* dev = sim.get();
  auto mounted = FileSystem::mount(std::move(sim), {.commit_interval_ms = 0});
  if (!mounted) {
    ADD_FAILURE() << mounted.error().to_string();
    return o;
  }
  auto& fs = *mounted;
  Writer ww{"/w", 1}, wc{"/c", 2};
  auto setup = [&]() -> Status {
    // W fragmented (interleaved with scratch filler), then C a clone of it.
    SDX_ASSIGN(File w, fs->open("/w", O_CREAT | O_RDWR));
    SDX_ASSIGN(File filler, fs->open("/filler", O_CREAT | O_RDWR));
    for (uint64_t off = 0; off < kKept + kScratch; off += 16 * kB) {
      SDX_TRY(test::write_all(w, cbytes(std::vector<std::byte>(16 * kB)), off));
      SDX_TRY(test::write_all(filler, cbytes(std::vector<std::byte>(16 * kB)), off));
    }
    SDX_TRY(filler.close());
    SDX_TRY(fs->unlink("/filler"));
    SDX_ASSIGN(File c, fs->open("/c", O_CREAT | O_RDWR));
    SDX_TRY(c.clone(w));
    return fs->sync();
  };
  if (auto st = setup(); !st) {
    ADD_FAILURE() << st.error().to_string();
    return o;
  }
  o.dev = dev;
  o.writers[0] = &ww;
  o.writers[1] = &wc;
  o.stride = test::env_u64("SYNCDAX_REMAP_STRIDE", sync ? 1 : kControlStride);
  std::atomic<bool> stop{false};
  std::vector<std::string> errors;
  std::mutex errors_mu;
  auto error = [&](std::string e) {
    std::lock_guard g(errors_mu);
    errors.push_back(std::move(e));
  };

  // Writers also fsync now and then: its write-back write-protects their pages while
  // the layout thread moves them (SYNCDAX_REMAP_FSYNC=0 leaves it out).
  const uint64_t fsync_every = test::env_u64("SYNCDAX_REMAP_FSYNC", 1) ? kFsyncEvery : 0;
  auto writer = [&](Writer& w) {
    auto f = fs->open(w.path, O_RDWR);
    if (!f) return error(f.error().to_string());
    auto m = f->mmap(0, kKept, PROT_READ | PROT_WRITE, sync ? kSync : MAP_SHARED);
    if (!m) return error(m.error().to_string());
    std::minstd_rand rng(static_cast<unsigned>(w.tag));
    uint64_t seq = 0;
    // Stores go in batches, persisted and acknowledged together: between the stores of
    // a batch nothing synchronises with the layout thread, as on real memory.
    constexpr int kBatch = 8;
    while (!stop.load(std::memory_order_relaxed)) {
      uint64_t slots[kBatch], seqs[kBatch];
      for (int b = 0; b < kBatch; ++b) {
        const uint64_t s = slots[b] = rng() % kSlots;
        Record r{seqs[b] = ++seq, s, w.tag, check_of(seq, s, w.tag), {}};
        std::memcpy(m->data() + s * 64, &r, 64);
      }
      for (int b = 0; b < kBatch; ++b) {
        std::byte* p = m->data() + slots[b] * 64;
        if (sync) {
          if (auto st = m->persist(p, 64); !st) return error(st.error().to_string());
        } else {
          m->flush(p, 64);
        }
      }
      if (!sync) m->drain();
      // A slot written twice in a batch holds the later record.
      for (int b = 0; b < kBatch; ++b) {
        uint64_t cur = w.acked[slots[b]].load(std::memory_order_relaxed);
        if (seqs[b] > cur) w.acked[slots[b]].store(seqs[b], std::memory_order_release);
      }
      w.stores += kBatch;
      if (fsync_every && w.stores % fsync_every == 0)
        if (auto st = f->fsync(); !st) return error(st.error().to_string());
    }
    // The layout thread is done: no page of ours may map a block the file gave up.
    for (const auto& p : stale_pages(*fs, *f, *m)) error(std::string(w.path) + ": " + p);
  };

  auto layout = [&] {
    auto step = [&](const char* what, const auto& result) {
      if (!result) error(std::string(what) + ": " + result.error().to_string());
    };
    auto w = fs->open("/w", O_RDWR);
    auto c = fs->open("/c", O_RDWR);
    if (!w || !c) return error("open");
    for (uint64_t round = 0; round < kRounds; ++round) {
      const std::string dpath = "/d" + std::to_string(round);
      auto d = fs->open(dpath, O_CREAT | O_RDWR);
      if (!d) return error(d.error().to_string());
      // Share W's stored-into range with D: the writer's next stores there copy.
      step("clone W to D", d->clone_range(*w, 0, 0, kKept));
      // Scratch: punch half, rewrite it in pieces (fragmenting it), shrink and grow.
      step("punch", w->fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kKept, kScratch / 2));
      for (uint64_t off = kKept; off < kKept + kScratch / 2; off += 8 * kB) {
        step("refill", test::write_all(*w, cbytes(test::pattern(round, off, 4 * kB)), off));
        step("append D", test::write_all(*d, cbytes(test::pattern(round, off, 4 * kB)), off));
      }
      step("shrink", w->ftruncate(kKept + 100));
      step("grow", w->ftruncate(kKept + kScratch));
      step("defragment W", w->defragment());
      // C's scratch: shared with W's, then broken by writes, then C defragmented.
      step("clone W to C scratch", c->clone_range(*w, kKept, kKept, kScratch));
      step("break C scratch", test::write_all(*c, cbytes(test::pattern(round, 0, 3 * kB)), kKept + kB));
      step("defragment C", c->defragment());
      step("dedupe", d->dedupe_range(*w, kKept, kKept, kScratch / 4));
      step("fsync D", d->fsync());
      step("close D", d->close());
      if (round > 0) step("unlink", fs->unlink("/d" + std::to_string(round - 1)));
    }
  };

  o.layout_thread = std::thread::id{};
  std::thread t0(writer, std::ref(ww)), t1(writer, std::ref(wc));
  std::thread tl([&] {
    o.layout_thread = std::this_thread::get_id();
    dev->set_fence_hook(on_fence, &o);
    layout();
    dev->set_fence_hook(nullptr, nullptr);
    stop = true;
  });
  tl.join();
  t0.join();
  t1.join();
  for (const auto& e : errors) ADD_FAILURE() << e;
  std::printf("%s: stores: %llu + %llu; layout-thread fences: %llu, images checked: %llu (+%llu torn), violations: %zu\n",
              sync ? "MAP_SYNC" : "MAP_SHARED, no msync", (unsigned long long)ww.stores, (unsigned long long)wc.stores,
              (unsigned long long)o.fences, (unsigned long long)o.checked, (unsigned long long)o.torn_checked,
              o.violations.size());
  EXPECT_GT(o.checked, 20u);  // about 105 in a plain build, 55 under TSan
  EXPECT_GT(ww.stores + wc.stores, 100u);
  if (sync) {
    // And without a crash: every slot holds exactly its last acknowledged record.
    std::vector<uint64_t> last[2];
    for (int i = 0; i < 2; ++i)
      for (auto& a : o.writers[i]->acked) last[i].push_back(a.load());
    std::vector<std::string> live;
    for (int i = 0; i < 2; ++i) check_slots(*fs, *o.writers[i], last[i], 0, live);
    for (const auto& v : live) ADD_FAILURE() << "live: " << v;
  }
  if (auto st = fs->unmount(); !st) ADD_FAILURE() << st.error().to_string();
  auto rep = FileSystem::fsck(*device::make_sim(test::durable_image(*fs)));
  EXPECT_TRUE(rep.clean()) << (rep.problems.empty() ? "unusable" : rep.problems[0]);
  o.writers[0] = o.writers[1] = nullptr;
  return o;
}

TEST(RemapStressTest, AcknowledgedStoresSurviveLayoutChangesAndPowerFailures) {
  const Oracle o = run_stress(true);
  for (size_t i = 0; i < o.violations.size() && i < 10; ++i) ADD_FAILURE() << o.violations[i];
}

TEST(RemapStressTest, TheCheckerCatchesStoresLostWithoutMapSync) {
  const Oracle o = run_stress(false);
  EXPECT_GT(o.violations.size(), 0u);
}

}  // namespace
}  // namespace sdx
