// media: the on-media format -- superblock, inode table, extent leaves, directory blocks,
// allocation bitmap -- as fixed-layout little-endian structs with crc32c checksums, and
// the geometry that places them. Owns encoding and validation only: it never decides
// what to allocate or when anything becomes durable (fs and journal do).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "syncdax/status.hpp"

namespace sdx::media {

inline constexpr uint32_t kBlockSize = 4096;
inline constexpr uint64_t kSuperMagic = 0x3130305346584453ull;  // "SDXFS001"
// Version 2 added the reference-count table (shared blocks). Version 1 images mount
// with no table: everything works except sharing blocks (EOPNOTSUPP).
inline constexpr uint32_t kVersion = 2;
inline constexpr uint32_t kVersionNoRefcount = 1;
inline constexpr uint64_t kRootIno = 1;
inline constexpr uint32_t kNameMax = 255;

// Block 0 of the file system area. Geometry in blocks.
struct Superblock {
  uint64_t magic;
  uint32_t version;
  uint32_t block_size;
  uint64_t total_blocks;
  uint64_t journal_start, journal_blocks;
  uint64_t inode_start, inode_blocks, inode_count;
  uint64_t bitmap_start, bitmap_blocks;
  uint64_t data_start, data_blocks;
  uint64_t root_ino;
  uint8_t uuid[16];
  int64_t mkfs_time_ns;
  uint64_t refcount_start, refcount_blocks;  // version 2; both 0 in version 1
  uint8_t reserved[44];
  uint32_t checksum;  // crc32c of the struct with this field zero
};
static_assert(sizeof(Superblock) == 192);

struct DiskExtent {
  uint64_t file_block;
  uint64_t dev_block;  // absolute block number on the file-system area
  uint32_t len;
  uint32_t flags;  // kExtentUnwritten
};
static_assert(sizeof(DiskExtent) == 24);
inline constexpr uint32_t kExtentUnwritten = 1;

inline constexpr uint32_t kInlineExtents = 5;
inline constexpr size_t kInodeSize = 256;
inline constexpr uint32_t kInodesPerBlock = kBlockSize / kInodeSize;

// mode == 0 marks a free slot; a free slot is all zero (checksum included).
struct DiskInode {
  uint32_t mode;
  uint32_t nlink;
  uint64_t size;
  uint64_t blocks;  // data blocks mapped by extents
  int64_t atime_ns, mtime_ns, ctime_ns;
  uint64_t parent;  // directories: the parent directory
  uint32_t extsize_blocks;
  uint32_t nextents;
  uint64_t index_block;  // nextents > kInlineExtents: block of leaf pointers
  DiskExtent inline_extents[kInlineExtents];
  uint8_t reserved[60];
  uint32_t checksum;
};
static_assert(sizeof(DiskInode) == kInodeSize);

// Shared header of the checksummed metadata blocks kept in the data area.
struct BlockHeader {
  uint32_t magic;
  uint32_t checksum;  // crc32c of the whole block with this field zero
  uint32_t count;
  uint32_t reserved;
  uint64_t owner;  // inode number
};
static_assert(sizeof(BlockHeader) == 24);
inline constexpr uint32_t kLeafMagic = 0x4641454c;   // "LEAF"
inline constexpr uint32_t kIndexMagic = 0x58444e49;  // "INDX"
inline constexpr uint32_t kDirMagic = 0x4b4c4244;    // "DBLK"
inline constexpr uint32_t kExtentsPerLeaf = (kBlockSize - sizeof(BlockHeader)) / sizeof(DiskExtent);
inline constexpr uint32_t kLeavesPerIndex = (kBlockSize - sizeof(BlockHeader)) / sizeof(uint64_t);
inline constexpr uint64_t kMaxExtents = uint64_t{kExtentsPerLeaf} * kLeavesPerIndex;

struct DiskDirent {
  uint64_t ino;  // 0 = empty slot
  uint8_t name_len;
  uint8_t is_dir;
  uint8_t pad[6];
  char name[256];
};
static_assert(sizeof(DiskDirent) == 272);
inline constexpr uint32_t kDirentsPerBlock = (kBlockSize - sizeof(BlockHeader)) / sizeof(DiskDirent);

// The reference-count table: one RefCount per block of the area (like the bitmap, it
// covers every block for simple arithmetic). 0 = the block has at most one owner (the
// bitmap says whether it has one); n >= 2 = n extent references share it.
using RefCount = uint32_t;
inline constexpr uint32_t kRefsPerBlock = kBlockSize / sizeof(RefCount);

struct Geometry {
  uint64_t total_blocks, journal_start, journal_blocks, inode_start, inode_blocks,
      inode_count, bitmap_start, bitmap_blocks, refcount_start, refcount_blocks,
      data_start, data_blocks;
  bool has_refcounts() const { return refcount_blocks != 0; }
};

// Lay out a file-system area of `bytes`; EINVAL/ENOSPC if it is too small to be useful.
Result<Geometry> plan_geometry(uint64_t bytes, uint64_t bytes_per_inode, uint64_t journal_bytes);
Superblock make_superblock(const Geometry& g);
// Validate a superblock read from an area of `area_bytes`; the message says what is wrong.
Status check_superblock(const Superblock& sb, uint64_t area_bytes);
Geometry geometry_of(const Superblock& sb);

void seal(Superblock& sb);
void seal(DiskInode& di);
// Seal a metadata block (BlockHeader at its start).
void seal_block(std::byte* block);
bool verify(const DiskInode& di);
bool verify_block(const std::byte* block, uint32_t magic);
bool is_zero(const DiskInode& di);

}  // namespace sdx::media
