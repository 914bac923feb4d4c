// common/crc32c: the Castagnoli CRC used for every on-media checksum (superblock,
// inodes, directory and extent blocks, journal records), as ext4/xfs/btrfs use it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace sdx {

uint32_t crc32c(std::span<const std::byte> data, uint32_t seed = 0);
inline uint32_t crc32c(const void* p, size_t n, uint32_t seed = 0) {
  return crc32c({static_cast<const std::byte*>(p), n}, seed);
}

namespace detail {
// The table-driven version used where SSE4.2 is missing; tests compare the two.
uint32_t crc32c_portable(std::span<const std::byte> data, uint32_t seed = 0);
}  // namespace detail

}  // namespace sdx
