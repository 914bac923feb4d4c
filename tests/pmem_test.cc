#include "pmem/pmem.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace sdx::pmem {
namespace {

GetEnv fake_env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

constexpr CpuFeatures kAll{.clflushopt = true, .clwb = true};
constexpr CpuFeatures kOptOnly{.clflushopt = true, .clwb = false};
constexpr CpuFeatures kBaseline{};

TEST(PmemConfig, DetectedConfigIsValid) {
  const Config& c = config();
  EXPECT_TRUE(c.flush == FlushKind::kNone || c.flush == FlushKind::kClwb ||
              c.flush == FlushKind::kClflushopt || c.flush == FlushKind::kClflush);
  EXPECT_EQ(&c, &config());
  CpuFeatures cpu = detect_cpu();
  // Whatever the environment forces, it can only pick an instruction the CPU has.
  if (c.flush == FlushKind::kClwb) {
    EXPECT_TRUE(cpu.clwb);
  }
  if (c.flush == FlushKind::kClflushopt) {
    EXPECT_TRUE(cpu.clflushopt);
  }
}

TEST(PmemConfig, PrefersBestInstruction) {
  auto none = fake_env({});
  EXPECT_EQ(make_config(kAll, none).flush, FlushKind::kClwb);
  EXPECT_EQ(make_config(kOptOnly, none).flush, FlushKind::kClflushopt);
  EXPECT_EQ(make_config(kBaseline, none).flush, FlushKind::kClflush);
  Config c = make_config(kAll, none);
  EXPECT_TRUE(c.nontemporal);
  EXPECT_EQ(c.movnt_threshold, 256u);
}

TEST(PmemConfig, ForcedFlush) {
  EXPECT_EQ(make_config(kAll, fake_env({{"SYNCDAX_FLUSH", "clflush"}})).flush, FlushKind::kClflush);
  EXPECT_EQ(make_config(kAll, fake_env({{"SYNCDAX_FLUSH", "clflushopt"}})).flush,
            FlushKind::kClflushopt);
  EXPECT_EQ(make_config(kBaseline, fake_env({{"SYNCDAX_FLUSH", "clflush"}})).flush,
            FlushKind::kClflush);
  // Not on this CPU: fall back to the best it has.
  EXPECT_EQ(make_config(kOptOnly, fake_env({{"SYNCDAX_FLUSH", "clwb"}})).flush,
            FlushKind::kClflushopt);
  EXPECT_EQ(make_config(kBaseline, fake_env({{"SYNCDAX_FLUSH", "clflushopt"}})).flush,
            FlushKind::kClflush);
  EXPECT_EQ(make_config(kAll, fake_env({{"SYNCDAX_FLUSH", "bogus"}})).flush, FlushKind::kClwb);
}

TEST(PmemConfig, NoFlushMeansEadr) {
  EXPECT_EQ(make_config(kAll, fake_env({{"SYNCDAX_NO_FLUSH", "1"}})).flush, FlushKind::kNone);
  EXPECT_EQ(make_config(kAll, fake_env({{"SYNCDAX_NO_FLUSH", "1"}, {"SYNCDAX_FLUSH", "clwb"}})).flush,
            FlushKind::kNone);
  EXPECT_EQ(make_config(kAll, fake_env({{"SYNCDAX_NO_FLUSH", "0"}})).flush, FlushKind::kClwb);
}

TEST(PmemConfig, MovntOverrides) {
  EXPECT_FALSE(make_config(kAll, fake_env({{"SYNCDAX_NO_MOVNT", "1"}})).nontemporal);
  EXPECT_TRUE(make_config(kAll, fake_env({{"SYNCDAX_NO_MOVNT", "0"}})).nontemporal);
  EXPECT_EQ(make_config(kAll, fake_env({{"SYNCDAX_MOVNT_THRESHOLD", "4096"}})).movnt_threshold,
            4096u);
  EXPECT_EQ(make_config(kAll, fake_env({{"SYNCDAX_MOVNT_THRESHOLD", "0"}})).movnt_threshold, 0u);
  for (const char* bad : {"", "abc", "12x", "-5", " 7"})
    EXPECT_EQ(make_config(kAll, fake_env({{"SYNCDAX_MOVNT_THRESHOLD", bad}})).movnt_threshold, 256u)
        << "'" << bad << "'";
}

TEST(PmemConfig, KindNames) {
  EXPECT_EQ(flush_kind_name(FlushKind::kNone), "none");
  EXPECT_EQ(flush_kind_name(FlushKind::kClwb), "clwb");
  EXPECT_EQ(flush_kind_name(FlushKind::kClflushopt), "clflushopt");
  EXPECT_EQ(flush_kind_name(FlushKind::kClflush), "clflush");
}

TEST(Pmem, FlushEverySupportedInstruction) {
  CpuFeatures cpu = detect_cpu();
  std::vector<unsigned char> buf(1000, 7);
  for (FlushKind k : {FlushKind::kNone, FlushKind::kClwb, FlushKind::kClflushopt,
                      FlushKind::kClflush}) {
    if (k == FlushKind::kClwb && !cpu.clwb) continue;
    if (k == FlushKind::kClflushopt && !cpu.clflushopt) continue;
    for (size_t off : {0, 1, 63, 64, 65})
      for (size_t len : {0, 1, 63, 64, 65, 900}) flush(buf.data() + off, len, k);
    fence();
  }
  persist(buf.data(), buf.size());
  EXPECT_EQ(buf[999], 7);  // write-back never changes what the CPU sees
}

// The sizes worth covering: all small ones, then steps with the lengths around
// cache-line multiples and the non-temporal threshold.
std::vector<size_t> sizes_to_test() {
  std::vector<size_t> v;
  for (size_t n = 0; n <= 300; ++n) v.push_back(n);
  for (size_t n = 301; n <= 5000; n += 37) v.push_back(n);
  for (size_t m = 320; m <= 5000; m += 320)
    for (size_t d : {m - 9, m - 8, m - 1, m, m + 1, m + 8, m + 15, m + 16}) v.push_back(d);
  v.push_back(5000);
  return v;
}

std::vector<Config> configs_to_test() {
  std::vector<Config> v;
  Config c = config();
  c.nontemporal = true;
  c.movnt_threshold = 0;  // everything non-temporal
  v.push_back(c);
  c.movnt_threshold = 256;
  v.push_back(c);
  c.nontemporal = false;
  v.push_back(c);
  return v;
}

constexpr size_t kGuard = 64;
constexpr size_t kMax = 5000;

// The kGuard bytes on either side of [d, d+n) still hold 0xEE.
bool guards_intact(const unsigned char* d, size_t n) {
  static const std::vector<unsigned char> ee(kGuard, 0xEE);
  return std::memcmp(d - kGuard, ee.data(), kGuard) == 0 &&
         std::memcmp(d + n, ee.data(), kGuard) == 0;
}

TEST(Pmem, MemcpyNodrainAllSizesAndOffsets) {
  std::vector<unsigned char> src(kMax + 128), dst(kMax + 128 + 2 * kGuard);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i * 131 + 7);
  const auto sizes = sizes_to_test();
  for (const Config& cfg : configs_to_test()) {
    for (size_t off = 0; off < 64; ++off) {
      const size_t soff = (off * 29) % 64;  // source misaligned differently
      for (size_t n : sizes) {
        unsigned char* d = dst.data() + kGuard + off;
        std::memset(d - kGuard, 0xEE, n + 2 * kGuard);
        memcpy_nodrain(d, src.data() + soff, n, cfg);
        fence();
        ASSERT_EQ(std::memcmp(d, src.data() + soff, n), 0)
            << "n=" << n << " off=" << off << " thr=" << cfg.movnt_threshold;
        ASSERT_TRUE(guards_intact(d, n)) << "n=" << n << " off=" << off;
      }
    }
  }
}

TEST(Pmem, MemsetNodrainAllSizesAndOffsets) {
  std::vector<unsigned char> dst(kMax + 128 + 2 * kGuard), want(kMax);
  const auto sizes = sizes_to_test();
  for (const Config& cfg : configs_to_test()) {
    for (size_t off = 0; off < 64; ++off) {
      for (size_t n : sizes) {
        unsigned char* d = dst.data() + kGuard + off;
        std::memset(d - kGuard, 0xEE, n + 2 * kGuard);
        const int c = static_cast<int>((n + off) % 251);  // 0 included
        std::memset(want.data(), c, n);
        memset_nodrain(d, c, n, cfg);
        fence();
        ASSERT_EQ(std::memcmp(d, want.data(), n), 0) << "n=" << n << " off=" << off;
        ASSERT_TRUE(guards_intact(d, n)) << "n=" << n << " off=" << off;
      }
    }
  }
}

TEST(Pmem, DefaultCopyUsesProcessConfig) {
  std::vector<unsigned char> src(4096), dst(4096);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i ^ 0x5A);
  memcpy_nodrain(dst.data() + 3, src.data(), 4000);
  memset_nodrain(dst.data() + 4003, 0x11, 50);
  fence();
  EXPECT_EQ(std::memcmp(dst.data() + 3, src.data(), 4000), 0);
  EXPECT_EQ(dst[4003], 0x11);
  EXPECT_EQ(dst[4052], 0x11);
  EXPECT_EQ(dst[4053], 0);
}

}  // namespace
}  // namespace sdx::pmem
