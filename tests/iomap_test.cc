// iomap_begin/iomap_end and the DIRTY answer, seen from inside the fs layer.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>

#include <cstring>

#include "device/device.h"
#include "fs/volume.h"
#include "test_util.h"

namespace sdx {
namespace {

constexpr uint64_t kB = 4096;

struct Mounted {
  std::unique_ptr<FileSystem> fs;
  fs::Volume& vol() { return fs->volume(); }
};

Mounted mount_sim(std::unique_ptr<device::SimDevice> dev) {
  auto r = FileSystem::mount(std::move(dev), MountOptions{.commit_interval_ms = 0});
  EXPECT_TRUE(r) << r.error().to_string();
  return Mounted{std::move(*r)};
}

fs::Inode& inode_of(Mounted& m, File& f) { return *m.vol().inode_for_test(f); }

std::vector<std::byte> fill(size_t n, uint8_t v) { return std::vector<std::byte>(n, std::byte{v}); }

// A write into a hole allocates in its own transaction. If that commits before the
// data is stored (another thread's fsync, the background committer), a crash must show
// zeros there -- never the bytes of the file that owned the block before.
TEST(Iomap, AllocationCommittedBeforeTheDataShowsZerosNotStaleBytes) {
  auto m = mount_sim(test::formatted_sim(2 << 20));
  {
    auto old = m.fs->open("/old", O_CREAT | O_RDWR).value();
    auto secret = fill(64 * kB, 0x5e);
    ASSERT_TRUE(old.pwrite(secret, 0));
    ASSERT_TRUE(old.fsync());
  }
  ASSERT_TRUE(m.fs->unlink("/old"));
  ASSERT_TRUE(m.fs->sync());  // its blocks are free and reusable now
  auto f = m.fs->open("/new", O_CREAT | O_RDWR).value();
  ASSERT_TRUE(f.ftruncate(64 * kB));
  fs::Inode& ino = inode_of(m, f);
  for (uint64_t off = 0; off < 64 * kB; off += kB) {
    auto map = m.vol().iomap_begin(ino, off, kB, fs::kIomapWrite);
    ASSERT_TRUE(map) << map.error().to_string();
    EXPECT_TRUE(map->flags & fs::kIomapNew);
  }
  ASSERT_TRUE(m.fs->sync());  // the allocations are durable; no data was stored
  auto* sim = device::as_sim(&m.fs->device());
  auto image = sim->crash_image(1.0, false, 1);  // even every unflushed line kept
  ASSERT_TRUE(f.close());
  auto m2 = mount_sim(device::make_sim(image));
  auto g = m2.fs->open("/new", O_RDONLY).value();
  std::vector<std::byte> got(64 * kB);
  ASSERT_EQ(g.pread(got, 0).value(), got.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], std::byte{0}) << "stale byte at " << i;
}

TEST(Iomap, PartlyCoveredBlocksAreZeroedAndWrittenAtOnce) {
  auto m = mount_sim(test::formatted_sim(2 << 20));
  auto f = m.fs->open("/f", O_CREAT | O_RDWR).value();
  fs::Inode& ino = inode_of(m, f);
  auto whole = m.vol().iomap_begin(ino, 0, 2 * kB, fs::kIomapWrite);
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->type, fs::IomapType::kUnwritten);  // the caller will overwrite it whole
  auto part = m.vol().iomap_begin(ino, 8 * kB + 100, 50, fs::kIomapWrite);
  ASSERT_TRUE(part);
  EXPECT_EQ(part->type, fs::IomapType::kMapped);
  // A fault never allocates past EOF (it gets SIGBUS)...
  auto past = m.vol().iomap_begin(ino, 16 * kB, kB, fs::kIomapWrite | fs::kIomapFault);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, ENXIO);
  // ...and inside the file it maps the block into a process as is: written, zeroed.
  ASSERT_TRUE(f.ftruncate(20 * kB));
  auto fault = m.vol().iomap_begin(ino, 16 * kB, kB, fs::kIomapWrite | fs::kIomapFault);
  ASSERT_TRUE(fault);
  EXPECT_EQ(fault->type, fs::IomapType::kMapped);
  auto hole = m.vol().iomap_begin(ino, 32 * kB, kB, fs::kIomapRead);
  ASSERT_TRUE(hole);
  EXPECT_EQ(hole->type, fs::IomapType::kHole);
  EXPECT_EQ(hole->flags & fs::kIomapNew, 0u);
}

TEST(Iomap, DirtyUntilCommittedAndCommittedBlocksAreClean) {
  auto m = mount_sim(test::formatted_sim(2 << 20));
  auto f = m.fs->open("/f", O_CREAT | O_RDWR).value();
  ASSERT_TRUE(f.fallocate(0, 0, 16 * kB));
  fs::Inode& ino = inode_of(m, f);
  auto map = m.vol().iomap_begin(ino, 0, kB, fs::kIomapWrite | fs::kIomapFault);
  ASSERT_TRUE(map);
  EXPECT_TRUE(map->flags & fs::kIomapDirty);  // the allocation is not durable yet
  EXPECT_EQ(m.vol().range_dirty_seq(ino, 0, kB), map->seq);
  ASSERT_TRUE(f.fdatasync());
  map = m.vol().iomap_begin(ino, 0, kB, fs::kIomapWrite | fs::kIomapFault);
  ASSERT_TRUE(map);
  EXPECT_EQ(map->flags, 0u) << "preallocated, committed blocks need no commit";
  EXPECT_EQ(m.vol().range_dirty_seq(ino, 0, 16 * kB), 0u);
  // Timestamps alone do not make fdatasync (or the fault path) commit.
  auto data = fill(kB, 1);
  ASSERT_TRUE(f.pwrite(data, 0));
  EXPECT_EQ(m.vol().range_dirty_seq(ino, 0, 16 * kB), 0u);
  const uint64_t commits = m.vol().journal().stats().commits;
  ASSERT_TRUE(f.fdatasync());
  EXPECT_EQ(m.vol().journal().stats().commits, commits) << "fdatasync committed timestamps only";
  ASSERT_TRUE(f.fsync());
  EXPECT_EQ(m.vol().journal().stats().commits, commits + 1) << "fsync commits timestamps";
  // A punch elsewhere in the file is metadata fdatasync must commit.
  ASSERT_TRUE(f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8 * kB, kB));
  EXPECT_NE(m.vol().range_dirty_seq(ino, 0, kB), 0u);
}

}  // namespace
}  // namespace sdx
