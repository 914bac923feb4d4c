#include "common/crc32c.h"

#include <array>

namespace sdx {
namespace {

// Slicing-by-1 table; the SSE4.2 instruction would be faster but metadata checksums
// are a few hundred bytes and not on the data path.
constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kTable = make_table();

}  // namespace

uint32_t crc32c(std::span<const std::byte> data, uint32_t seed) {
  uint32_t c = ~seed;
  for (std::byte b : data) c = kTable[(c ^ static_cast<uint8_t>(b)) & 0xff] ^ (c >> 8);
  return ~c;
}

}  // namespace sdx
