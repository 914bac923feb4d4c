#include "media/format.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "common/clock.h"
#include "common/crc32c.h"

namespace sdx::media {
namespace {

template <class T>
uint32_t crc_without(const T& v, size_t field_off) {
  T copy = v;
  std::memset(reinterpret_cast<std::byte*>(&copy) + field_off, 0, sizeof(uint32_t));
  return crc32c(&copy, sizeof(copy));
}

uint64_t div_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

}  // namespace

Result<Geometry> plan_geometry(uint64_t bytes, uint64_t bytes_per_inode, uint64_t journal_bytes) {
  Geometry g{};
  g.total_blocks = bytes / kBlockSize;
  if (g.total_blocks < 64)
    return fail(EINVAL, "a syncdax file system needs at least 256 KiB, got " + std::to_string(bytes) + " bytes");
  if (bytes_per_inode < kBlockSize) return fail(EINVAL, "bytes per inode must be at least 4096");
  if (journal_bytes == 0) journal_bytes = std::clamp<uint64_t>(bytes / 16, 64 * kBlockSize, 64ull << 20);
  g.journal_start = 1;
  g.journal_blocks = std::max<uint64_t>(div_up(journal_bytes, kBlockSize), 16);
  g.inode_count = std::max<uint64_t>(bytes / bytes_per_inode, 16);
  g.inode_start = g.journal_start + g.journal_blocks;
  g.inode_blocks = div_up(g.inode_count, kInodesPerBlock);
  g.inode_count = g.inode_blocks * kInodesPerBlock;
  g.bitmap_start = g.inode_start + g.inode_blocks;
  // The bitmap covers the data area that follows it; sizing it for all blocks is a
  // slight over-estimate that keeps the arithmetic obvious.
  g.bitmap_blocks = div_up(div_up(g.total_blocks, 8), kBlockSize);
  g.refcount_start = g.bitmap_start + g.bitmap_blocks;
  g.refcount_blocks = div_up(g.total_blocks, kRefsPerBlock);
  g.data_start = g.refcount_start + g.refcount_blocks;
  if (g.data_start + 16 > g.total_blocks)
    return fail(ENOSPC, "device too small for the journal and inode table it needs");
  g.data_blocks = g.total_blocks - g.data_start;
  return g;
}

Superblock make_superblock(const Geometry& g) {
  Superblock sb{};
  sb.magic = kSuperMagic;
  sb.version = kVersion;
  sb.block_size = kBlockSize;
  sb.total_blocks = g.total_blocks;
  sb.journal_start = g.journal_start;
  sb.journal_blocks = g.journal_blocks;
  sb.inode_start = g.inode_start;
  sb.inode_blocks = g.inode_blocks;
  sb.inode_count = g.inode_count;
  sb.bitmap_start = g.bitmap_start;
  sb.bitmap_blocks = g.bitmap_blocks;
  sb.refcount_start = g.refcount_start;
  sb.refcount_blocks = g.refcount_blocks;
  sb.data_start = g.data_start;
  sb.data_blocks = g.data_blocks;
  sb.root_ino = kRootIno;
  std::random_device rd;
  for (auto& b : sb.uuid) b = static_cast<uint8_t>(rd());
  sb.mkfs_time_ns = now_ns();
  seal(sb);
  return sb;
}

Geometry geometry_of(const Superblock& sb) {
  return Geometry{sb.total_blocks, sb.journal_start, sb.journal_blocks, sb.inode_start,
                  sb.inode_blocks, sb.inode_count, sb.bitmap_start, sb.bitmap_blocks,
                  sb.refcount_start, sb.refcount_blocks, sb.data_start, sb.data_blocks};
}

Status check_superblock(const Superblock& sb, uint64_t area_bytes) {
  if (sb.magic != kSuperMagic) return fail(EINVAL, "no syncdax superblock (bad magic)");
  if (crc_without(sb, offsetof(Superblock, checksum)) != sb.checksum)
    return fail(EUCLEAN, "superblock checksum mismatch");
  if (sb.version != kVersion && sb.version != kVersionNoRefcount)
    return fail(EINVAL, "unsupported on-media version " + std::to_string(sb.version));
  if (sb.block_size != kBlockSize) return fail(EUCLEAN, "superblock: unsupported block size");
  const uint64_t n = sb.total_blocks;
  const bool sane = n <= area_bytes / kBlockSize && sb.journal_start == 1 && sb.journal_blocks >= 16 &&
            sb.inode_start == sb.journal_start + sb.journal_blocks &&
            sb.inode_count == sb.inode_blocks * kInodesPerBlock && sb.inode_count >= 16 &&
            sb.bitmap_start == sb.inode_start + sb.inode_blocks &&
            sb.bitmap_blocks * kBlockSize * 8 >= n &&
            (sb.version == kVersionNoRefcount
                 ? sb.refcount_start == 0 && sb.refcount_blocks == 0 && sb.data_start == sb.bitmap_start + sb.bitmap_blocks
                 : sb.refcount_start == sb.bitmap_start + sb.bitmap_blocks &&
                       sb.refcount_blocks * kRefsPerBlock >= n &&
                       sb.data_start == sb.refcount_start + sb.refcount_blocks) &&
            sb.data_start < n &&
            sb.data_blocks == n - sb.data_start && sb.root_ino == kRootIno;
  if (!sane) return fail(EUCLEAN, "superblock geometry is inconsistent with the device");
  return ok();
}

void seal(Superblock& sb) { sb.checksum = crc_without(sb, offsetof(Superblock, checksum)); }
void seal(DiskInode& di) { di.checksum = crc_without(di, offsetof(DiskInode, checksum)); }

bool is_zero(const DiskInode& di) {
  static const DiskInode zero{};
  return std::memcmp(&di, &zero, sizeof(di)) == 0;
}

bool verify(const DiskInode& di) {
  if (di.mode == 0) return is_zero(di);
  return crc_without(di, offsetof(DiskInode, checksum)) == di.checksum;
}

namespace {
uint32_t block_crc(const std::byte* block) {
  uint32_t c = crc32c(block, offsetof(BlockHeader, checksum));
  const uint32_t zero = 0;
  c = crc32c(&zero, sizeof zero, c);
  const size_t after = offsetof(BlockHeader, checksum) + sizeof(uint32_t);
  return crc32c(block + after, kBlockSize - after, c);
}
}  // namespace

void seal_block(std::byte* block) {
  uint32_t c = block_crc(block);
  std::memcpy(block + offsetof(BlockHeader, checksum), &c, sizeof c);
}

bool verify_block(const std::byte* block, uint32_t magic) {
  BlockHeader h;
  std::memcpy(&h, block, sizeof h);
  return h.magic == magic && h.checksum == block_crc(block);
}

}  // namespace sdx::media
