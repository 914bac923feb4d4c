// On-media format checks and the allocator.
#include <gtest/gtest.h>

#include <cstring>

#include "common/crc32c.h"
#include "fs/alloc.h"
#include "media/format.h"

namespace sdx {
namespace {

TEST(Crc32c, KnownVectorAndBothImplementationsAgree) {
  const char* check = "123456789";  // the standard CRC-32C check value
  EXPECT_EQ(crc32c(check, 9), 0xE3069283u);
  std::vector<std::byte> buf(1000);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = std::byte(i * 131 + 7);
  for (size_t n : {0, 1, 7, 8, 9, 63, 64, 65, 999}) {
    auto s = std::span<const std::byte>(buf).subspan(1, n);  // unaligned too
    EXPECT_EQ(crc32c(s), detail::crc32c_portable(s)) << n;
    EXPECT_EQ(crc32c(s, 0x1234), detail::crc32c_portable(s, 0x1234)) << n;
  }
  // Chaining: the journal checksums a transaction piece by piece.
  auto all = std::span<const std::byte>(buf);
  EXPECT_EQ(crc32c(all.subspan(100), crc32c(all.first(100))), crc32c(all));
}

TEST(Geometry, RegionsAreOrderedAndFitTheDevice) {
  for (uint64_t mib : {1, 8, 64, 1024}) {
    auto g = media::plan_geometry(mib << 20, 16384, 0);
    ASSERT_TRUE(g) << mib;
    EXPECT_EQ(g->journal_start, 1u);
    EXPECT_EQ(g->inode_start, g->journal_start + g->journal_blocks);
    EXPECT_EQ(g->bitmap_start, g->inode_start + g->inode_blocks);
    EXPECT_EQ(g->refcount_start, g->bitmap_start + g->bitmap_blocks);
    EXPECT_EQ(g->data_start, g->refcount_start + g->refcount_blocks);
    EXPECT_GE(g->refcount_blocks * 1024, g->total_blocks);
    EXPECT_EQ(g->data_start + g->data_blocks, g->total_blocks);
    EXPECT_GE(g->bitmap_blocks * 4096 * 8, g->total_blocks);
    auto sb = media::make_superblock(*g);
    EXPECT_TRUE(media::check_superblock(sb, mib << 20));
  }
}

TEST(Geometry, TooSmallIsRefused) {
  auto g = media::plan_geometry(100 * 1024, 16384, 0);
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code, EINVAL);
}

TEST(Superblock, EveryByteFlipIsDetected) {
  auto g = media::plan_geometry(64 << 20, 16384, 0);
  const auto sb = media::make_superblock(*g);
  for (size_t i = 0; i < sizeof sb; ++i) {
    auto bad = sb;
    reinterpret_cast<uint8_t*>(&bad)[i] ^= 0x10;
    EXPECT_FALSE(media::check_superblock(bad, 64 << 20)) << "byte " << i;
  }
}

TEST(Superblock, GeometryLargerThanDeviceIsRefused) {
  auto g = media::plan_geometry(64 << 20, 16384, 0);
  auto sb = media::make_superblock(*g);
  auto r = media::check_superblock(sb, 32 << 20);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("geometry"), std::string::npos);
}

TEST(Inode, ChecksumCoversEveryByteAndFreeSlotsMustBeZero) {
  media::DiskInode di{};
  di.mode = 0100644;
  di.size = 12345;
  media::seal(di);
  EXPECT_TRUE(media::verify(di));
  for (size_t i = 0; i < sizeof di; ++i) {
    auto bad = di;
    reinterpret_cast<uint8_t*>(&bad)[i] ^= 1;
    EXPECT_FALSE(media::verify(bad)) << "byte " << i;
  }
  media::DiskInode free_slot{};
  EXPECT_TRUE(media::verify(free_slot));
  free_slot.size = 1;  // mode 0 with stray bytes
  EXPECT_FALSE(media::verify(free_slot));
}

TEST(Block, SealedBlockVerifiesAndFlipsAreCaught) {
  std::vector<std::byte> b(media::kBlockSize);
  media::BlockHeader h{media::kDirMagic, 0, 0, 0, 7};
  std::memcpy(b.data(), &h, sizeof h);
  b[1000] = std::byte{42};
  media::seal_block(b.data());
  EXPECT_TRUE(media::verify_block(b.data(), media::kDirMagic));
  EXPECT_FALSE(media::verify_block(b.data(), media::kLeafMagic));
  b[4095] ^= std::byte{1};
  EXPECT_FALSE(media::verify_block(b.data(), media::kDirMagic));
}

TEST(Allocator, PrefersGoalThenBestFitThenLargest) {
  fs::Allocator a;
  a.add_free(100, 10);
  a.add_free(200, 3);
  a.add_free(300, 50);
  EXPECT_EQ(a.free_blocks(), 63u);
  auto r = a.alloc(105, 20);  // extends at the goal as far as it can
  EXPECT_EQ(r.start, 105u);
  EXPECT_EQ(r.len, 5u);
  r = a.alloc(0, 3);  // the smallest run that fits
  EXPECT_EQ(r.start, 200u);
  EXPECT_EQ(r.len, 3u);
  r = a.alloc(0, 80);  // nothing fits: the largest run
  EXPECT_EQ(r.start, 300u);
  EXPECT_EQ(r.len, 50u);
  EXPECT_EQ(a.free_blocks(), 5u);
}

TEST(Allocator, FreedNeighboursMergeIntoOneRun) {
  fs::Allocator a;
  a.add_free(10, 5);
  a.add_free(20, 5);
  a.add_free(15, 5);
  auto r = a.alloc(0, 15);
  EXPECT_EQ(r.start, 10u);
  EXPECT_EQ(r.len, 15u);
  EXPECT_EQ(a.alloc(0, 1).len, 0u);
}

TEST(Allocator, TakeSplitsARun) {
  fs::Allocator a;
  a.add_free(0, 100);
  EXPECT_TRUE(a.take(40, 20));
  EXPECT_FALSE(a.take(50, 1));
  EXPECT_FALSE(a.is_free(45));
  EXPECT_TRUE(a.is_free(39));
  EXPECT_TRUE(a.is_free(60));
  EXPECT_EQ(a.free_blocks(), 80u);
}

}  // namespace
}  // namespace sdx
