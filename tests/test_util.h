// Helpers shared by the test programs: temporary paths, byte patterns, assertion macros
// for sdx::Result, and small file-system conveniences (in-memory sim devices, whole-file
// read/write, tree walks).
#pragma once

#include <gtest/gtest.h>

#include <csetjmp>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "device/device.h"
#include "syncdax/syncdax.hpp"

namespace sdx::test {

// A fresh path under /dev/shm (or $TMPDIR) unique to this process and call; the file is
// removed when the TempPath goes away.
class TempPath {
 public:
  explicit TempPath(const std::string& stem = "sdx");
  ~TempPath();
  TempPath(const TempPath&) = delete;
  TempPath& operator=(const TempPath&) = delete;
  const std::string& str() const { return path_; }
  operator const std::string&() const { return path_; }

 private:
  std::string path_;
};

// Deterministic bytes for (seed, offset): lets a checker recompute what was written.
std::vector<std::byte> pattern(uint64_t seed, uint64_t offset, size_t len);
// One byte of pattern(seed, ...) at `offset`.
inline std::byte pattern_byte(uint64_t seed, uint64_t offset) {
  uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull + (offset >> 3) * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  return static_cast<std::byte>(x >> ((offset & 7) * 8));
}

// ---- Result helpers ----
inline std::string describe(const Error& e) { return e.to_string(); }
template <class T>
std::string describe(const Result<T>& r) {
  return r ? std::string("ok") : r.error().to_string();
}

// Environment variable as an unsigned number, or `def`.
uint64_t env_u64(const char* name, uint64_t def);

// ---- file-system conveniences ----
inline std::span<const std::byte> cbytes(const std::vector<std::byte>& v) { return {v.data(), v.size()}; }
inline std::span<std::byte> mbytes(std::vector<std::byte>& v) { return {v.data(), v.size()}; }

// Write all of `data` at `off` (loops over short writes; fails on 0).
Status write_all(File& f, std::span<const std::byte> data, uint64_t off);
// Read [off, off+len) (short at EOF): the bytes actually returned.
Result<std::vector<std::byte>> read_range(File& f, uint64_t off, size_t len);
// The whole file at `path`, by stat size.
Result<std::vector<std::byte>> read_file(FileSystem& fs, std::string_view path);

// A formatted in-memory sim device of `size` bytes (label included in the count the
// way MkfsOptions::size counts it: we pass the same size to make_sim and format).
std::unique_ptr<device::SimDevice> formatted_sim(uint64_t size, const MkfsOptions& opt = {});
// The durable contents of the (sim) device of an unmounted FileSystem.
device::CrashImage durable_image(FileSystem& fs);

// One of the process's kernel memory areas (a /proc/self/maps line).
struct Vma {
  uintptr_t lo = 0, hi = 0;
  bool writable = false;
  bool shared_file = false;  // MAP_SHARED of a file (a device block, for syncdax)
  uint64_t pgoff = 0;        // file offset of lo
};
// The kernel memory areas that touch [base, base+len): how many a mapping costs the
// kernel, and what each maps.
std::vector<Vma> vmas_in(const void* base, size_t len);

// Everything visible in a mounted file system, for comparisons across remounts.
struct Node {
  bool is_dir = false;
  uint64_t ino = 0;
  uint64_t size = 0;
  std::vector<std::byte> data;  // files only
  bool operator==(const Node&) const = default;
};
using Tree = std::map<std::string, Node>;
// Walk from "/" (readdir, stat, read); "." and ".." are skipped. Fails on any error.
Result<Tree> snapshot(FileSystem& fs, bool with_data = true);

// Readdir without "." and "..".
Result<std::vector<DirEntry>> list_dir(FileSystem& fs, std::string_view path);

// A file system mounted (committer off) on a fresh in-memory sim device of kSimFsBytes.
inline constexpr uint64_t kSimFsBytes = 64ull << 20;
class SimFsTest : public ::testing::Test {
 protected:
  void SetUp() override { mount(formatted_sim(kSimFsBytes)); }
  // Replace fs_ by a mount of `dev`.
  void mount(std::unique_ptr<device::SimDevice> dev);
  // Create (or open) `path` read-write.
  File create(const char* path);

  std::unique_ptr<FileSystem> fs_;
};

// ---- SIGBUS ----

// Set by sigbus_trap's handler; one per thread, as the signal goes to the faulting one.
struct BusTrap {
  sigjmp_buf jump;
  void* addr = nullptr;
  int code = 0;
};
BusTrap& bus_trap();
void on_bus(int, siginfo_t* si, void*);

// Run `access`; true if it raised SIGBUS (BUS_ADRERR) at `at`.
template <class F>
bool raises_sigbus(F access, const void* at) {
  struct sigaction sa {}, old{};
  sa.sa_sigaction = on_bus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &old);
  BusTrap& t = bus_trap();
  t.addr = nullptr;
  bool bus = false;
  if (sigsetjmp(t.jump, 1) == 0) access();
  else bus = true;
  sigaction(SIGBUS, &old, nullptr);
  return bus && t.addr == at && t.code == BUS_ADRERR;
}

}  // namespace sdx::test

// ASSERT/EXPECT that a Result/Status holds a value; the error text is printed otherwise.
#define SDX_ASSERT_OK(expr)                                                    \
  do {                                                                         \
    const auto& sdx_r_ = (expr);                                               \
    ASSERT_TRUE(sdx_r_.has_value()) << #expr << ": " << sdx_r_.error().to_string(); \
  } while (0)
#define SDX_EXPECT_OK(expr)                                                    \
  do {                                                                         \
    const auto& sdx_r_ = (expr);                                               \
    EXPECT_TRUE(sdx_r_.has_value()) << #expr << ": " << sdx_r_.error().to_string(); \
  } while (0)
// Declare `lhs` from a Result's value, or fail the test.
#define SDX_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  SDX_ASSERT_OK_AND_ASSIGN_IMPL_(SDX_CAT_(sdx_aoa_, __LINE__), lhs, expr)
#define SDX_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr)                           \
  auto tmp = (expr);                                                             \
  ASSERT_TRUE(tmp.has_value()) << #expr << ": " << tmp.error().to_string();      \
  lhs = std::move(*tmp)
// The Result failed with errno `code` and a non-empty message.
#define SDX_EXPECT_ERRNO(expr, want_errno)                                              \
  do {                                                                            \
    const auto& sdx_r_ = (expr);                                                  \
    EXPECT_FALSE(sdx_r_.has_value()) << #expr << " succeeded, expected " << #want_errno; \
    if (!sdx_r_.has_value()) {                                                    \
      EXPECT_EQ(sdx_r_.error().code, (want_errno)) << #expr << ": " << sdx_r_.error().to_string(); \
      EXPECT_FALSE(sdx_r_.error().message.empty()) << #expr << ": empty error message"; \
    }                                                                             \
  } while (0)
