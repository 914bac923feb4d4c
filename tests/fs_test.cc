// fs_test: the public API driven through realistic sequences, on the file device (an
// image under /dev/shm) and on an in-memory sim device. Every check compares against a
// shadow copy or a value computed by the test, never against a recorded result.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <set>
#include <thread>

#include "test_util.h"

namespace sdx {
namespace {

using test::cbytes;
using test::mbytes;
using test::pattern;
using test::read_file;
using test::read_range;
using test::write_all;

constexpr uint64_t kB = 4096;
enum class Kind { kFile, kSim };

std::string kind_name(const testing::TestParamInfo<Kind>& i) {
  return i.param == Kind::kFile ? "FileDevice" : "SimDevice";
}

bool all_zero(std::span<const std::byte> s) {
  return std::all_of(s.begin(), s.end(), [](std::byte b) { return b == std::byte{0}; });
}

// The first offset where `got` differs from `want`, as text ("" if equal).
std::string first_diff(std::span<const std::byte> got, std::span<const std::byte> want,
                       uint64_t base = 0) {
  if (got.size() != want.size())
    return "length " + std::to_string(got.size()) + " != expected " + std::to_string(want.size());
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i])
      return "byte at " + std::to_string(base + i) + " is " + std::to_string(int(got[i])) +
             ", expected " + std::to_string(int(want[i]));
  return "";
}

// A mounted file system on either device kind, with remount and fsck.
class Env {
 public:
  Env(Kind kind, uint64_t size = 64ull << 20, MkfsOptions mk = {}, MountOptions mo = {})
      : kind_(kind), size_(size), mk_(mk), mo_(mo) {}

  Status start() {
    mk_.size = size_;
    if (kind_ == Kind::kFile) {
      mk_.kind = DeviceKind::kFile;
      SDX_TRY(FileSystem::mkfs(path_.str(), mk_));
    } else {
      auto dev = test::formatted_sim(size_, mk_);
      if (!dev) return fail(EIO, "could not make a formatted sim device");
      image_ = std::nullopt;
      sim_dev_ = std::move(dev);
    }
    return mount();
  }

  FileSystem& fs() { return *fs_; }
  const std::string& path() const { return path_.str(); }

  Status unmount() {
    SDX_TRY(fs_->unmount());
    if (kind_ == Kind::kSim) image_ = test::durable_image(*fs_);
    fs_.reset();
    return ok();
  }

  Status mount() {
    if (kind_ == Kind::kFile) {
      SDX_ASSIGN(fs_, FileSystem::mount(path_.str(), mo_));
    } else {
      std::unique_ptr<device::Device> dev;
      if (sim_dev_) {
        dev = std::move(sim_dev_);
      } else {
        dev = device::make_sim(*image_);
        if (!dev) return fail(EIO, "make_sim from image failed");
      }
      SDX_ASSIGN(fs_, FileSystem::mount(std::move(dev), mo_));
    }
    return ok();
  }

  Status remount() {
    SDX_TRY(unmount());
    return mount();
  }

  // Unmount, fsck, mount again.
  Result<FsckReport> fsck() {
    SDX_TRY(unmount());
    FsckReport r;
    if (kind_ == Kind::kFile) {
      r = FileSystem::fsck(path_.str());
    } else {
      auto dev = device::make_sim(*image_);
      if (!dev) return fail(EIO, "make_sim from image failed");
      r = FileSystem::fsck(*dev);
    }
    SDX_TRY(mount());
    return r;
  }

 private:
  Kind kind_;
  uint64_t size_;
  MkfsOptions mk_;
  MountOptions mo_;
  test::TempPath path_{"fs_test"};
  std::unique_ptr<device::SimDevice> sim_dev_;
  std::optional<device::CrashImage> image_;
  std::unique_ptr<FileSystem> fs_;
};

std::string problems(const FsckReport& r) {
  std::string s = r.usable ? "" : "[not usable] ";
  for (auto& p : r.problems) s += p + "; ";
  return s;
}

#define ASSERT_FSCK_CLEAN(env)                                         \
  do {                                                                 \
    SDX_ASSERT_OK_AND_ASSIGN(FsckReport rep_, (env).fsck());           \
    ASSERT_TRUE(rep_.clean()) << "fsck: " << problems(rep_);           \
  } while (0)

class FsTest : public testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    // The sim device keeps a durable copy of every line; a smaller one keeps remounts
    // (which copy the whole medium) quick.
    const uint64_t size = GetParam() == Kind::kFile ? 64ull << 20 : 24ull << 20;
    env_ = std::make_unique<Env>(GetParam(), size, MkfsOptions{},
                                 MountOptions{.commit_interval_ms = 0});
    SDX_ASSERT_OK(env_->start());
  }
  void TearDown() override {
    if (env_) env_.reset();
  }
  FileSystem& fs() { return env_->fs(); }
  std::unique_ptr<Env> env_;
};

INSTANTIATE_TEST_SUITE_P(Devices, FsTest, testing::Values(Kind::kFile, Kind::kSim), kind_name);

std::vector<std::byte> str_bytes(std::string_view s) {
  return std::vector<std::byte>(reinterpret_cast<const std::byte*>(s.data()),
                                reinterpret_cast<const std::byte*>(s.data()) + s.size());
}

// ---------------------------------------------------------------- open flags
TEST_P(FsTest, OpenFlagsAndErrors) {
  SDX_EXPECT_ERRNO(fs().open("/missing", O_RDONLY), ENOENT);
  SDX_EXPECT_ERRNO(fs().open("/missing", O_RDWR), ENOENT);
  SDX_EXPECT_ERRNO(fs().open("/nodir/x", O_CREAT | O_RDWR), ENOENT);

  {
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/a", O_CREAT | O_EXCL | O_RDWR));
    SDX_ASSERT_OK(write_all(f, cbytes(str_bytes("hello")), 0));
    SDX_ASSERT_OK(f.close());
    EXPECT_FALSE(f.is_open());
  }
  SDX_EXPECT_ERRNO(fs().open("/a", O_CREAT | O_EXCL | O_RDWR), EEXIST);
  {  // O_CREAT without O_EXCL opens the existing file and keeps its contents.
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/a", O_CREAT | O_RDWR));
    SDX_ASSERT_OK_AND_ASSIGN(auto d, read_range(f, 0, 100));
    EXPECT_EQ(d, str_bytes("hello"));
  }
  {  // O_APPEND ignores the offset.
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/a", O_WRONLY | O_APPEND));
    SDX_ASSERT_OK_AND_ASSIGN(size_t n, f.pwrite(cbytes(str_bytes("abc")), 0));
    EXPECT_EQ(n, 3u);
    SDX_ASSERT_OK_AND_ASSIGN(n, f.pwrite(cbytes(str_bytes("XY")), 1000000));
    EXPECT_EQ(n, 2u);
    SDX_EXPECT_ERRNO(f.pread(std::span<std::byte>(), 0), EBADF);
    std::vector<std::byte> buf(4);
    SDX_EXPECT_ERRNO(f.pread(mbytes(buf), 0), EBADF);
  }
  SDX_ASSERT_OK_AND_ASSIGN(auto content, read_file(fs(), "/a"));
  EXPECT_EQ(content, str_bytes("helloabcXY"));
  {  // O_RDONLY: writes of every kind fail with EBADF.
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/a", O_RDONLY));
    SDX_EXPECT_ERRNO(f.pwrite(cbytes(str_bytes("zz")), 0), EBADF);
    SDX_EXPECT_ERRNO(f.fallocate(0, 0, kB), EBADF);
    auto t = f.ftruncate(0);
    ASSERT_FALSE(t.has_value()) << "ftruncate on an O_RDONLY file succeeded";
    EXPECT_TRUE(t.error().code == EBADF || t.error().code == EINVAL) << t.error().to_string();
    SDX_EXPECT_OK(f.fsync());  // fsync of a read-only file is allowed (POSIX)
    SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
    EXPECT_EQ(st.size, 10u);
  }
  {  // O_TRUNC empties the file and frees its blocks.
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/a", O_RDWR | O_TRUNC));
    SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
    EXPECT_EQ(st.size, 0u);
    EXPECT_EQ(st.blocks, 0u);
    SDX_ASSERT_OK_AND_ASSIGN(auto d, read_range(f, 0, 10));
    EXPECT_TRUE(d.empty());
  }
  // Paths through a file: ENOTDIR.
  SDX_EXPECT_ERRNO(fs().open("/a/x", O_CREAT | O_RDWR), ENOTDIR);
  SDX_EXPECT_ERRNO(fs().open("/a/x", O_RDONLY), ENOTDIR);
  SDX_EXPECT_ERRNO(fs().mkdir("/a/d"), ENOTDIR);
  // Directories cannot be opened for writing.
  SDX_ASSERT_OK(fs().mkdir("/d"));
  SDX_EXPECT_ERRNO(fs().open("/d", O_WRONLY), EISDIR);
  SDX_EXPECT_ERRNO(fs().open("/d", O_RDWR), EISDIR);
  SDX_EXPECT_ERRNO(fs().open("/d", O_CREAT | O_RDWR), EISDIR);
  SDX_EXPECT_ERRNO(fs().open("/d", O_CREAT | O_EXCL | O_RDWR), EEXIST);
  SDX_EXPECT_ERRNO(fs().mkdir("/d"), EEXIST);
  SDX_EXPECT_ERRNO(fs().mkdir("/a"), EEXIST);
  // Names longer than NAME_MAX.
  SDX_ASSERT_OK_AND_ASSIGN(StatFs sf, fs().statfs());
  EXPECT_EQ(sf.name_max, 255u);
  std::string longname = "/" + std::string(256, 'n');
  SDX_EXPECT_ERRNO(fs().open(longname, O_CREAT | O_RDWR), ENAMETOOLONG);
  SDX_EXPECT_ERRNO(fs().mkdir(longname), ENAMETOOLONG);
  std::string maxname = "/" + std::string(255, 'm');
  {
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open(maxname, O_CREAT | O_RDWR));
  }
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, fs().stat(maxname));
  EXPECT_TRUE(S_ISREG(st.mode));
  ASSERT_FSCK_CLEAN(*env_);
}

TEST_P(FsTest, UnmountWithOpenFileIsBusy) {
  {
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/f", O_CREAT | O_RDWR));
    SDX_EXPECT_ERRNO(fs().unmount(), EBUSY);
    SDX_ASSERT_OK(write_all(f, cbytes(pattern(1, 0, 5000)), 0));
  }
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(auto d, read_file(fs(), "/f"));
  EXPECT_EQ(d, pattern(1, 0, 5000));
}

// ---------------------------------------------------------------- data paths
TEST_P(FsTest, PreadPwriteOddOffsetsAgainstShadow) {
  constexpr size_t kMax = 300 * 1024 + 123;
  std::vector<std::byte> shadow;
  std::mt19937_64 rng(42);
  SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/data", O_CREAT | O_RDWR));
  for (int i = 0; i < 300; ++i) {
    uint64_t off = rng() % kMax;
    size_t len = 1 + rng() % (i % 10 == 0 ? 3 * kB + 7 : 700);
    auto p = pattern(i, off, len);
    SDX_ASSERT_OK_AND_ASSIGN(size_t n, f.pwrite(cbytes(p), off));
    ASSERT_EQ(n, len);
    if (shadow.size() < off + len) shadow.resize(off + len);
    std::copy(p.begin(), p.end(), shadow.begin() + off);
    if (i % 37 == 0) SDX_ASSERT_OK(f.fdatasync());
    if (i % 10 == 9) {
      for (int j = 0; j < 5; ++j) {
        uint64_t ro = rng() % (shadow.size() + 5000);
        size_t rl = 1 + rng() % 9000;
        SDX_ASSERT_OK_AND_ASSIGN(auto got, read_range(f, ro, rl));
        size_t expect_len = ro >= shadow.size() ? 0 : std::min<uint64_t>(rl, shadow.size() - ro);
        ASSERT_EQ(got.size(), expect_len) << "read " << rl << " at " << ro;
        ASSERT_EQ(first_diff(got, std::span(shadow).subspan(ro, expect_len), ro), "")
            << "after write " << i;
      }
    }
  }
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
  EXPECT_EQ(st.size, shadow.size());
  SDX_ASSERT_OK_AND_ASSIGN(auto all, read_range(f, 0, shadow.size() + 10));
  EXPECT_EQ(first_diff(all, shadow), "");
  SDX_ASSERT_OK(f.fsync());
  SDX_ASSERT_OK(f.close());
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(all, read_file(fs(), "/data"));
  EXPECT_EQ(first_diff(all, shadow), "");
  ASSERT_FSCK_CLEAN(*env_);
}

TEST_P(FsTest, SparseFileFarBeyondDeviceSize) {
  const uint64_t kGiB = 1ull << 30;
  SDX_ASSERT_OK_AND_ASSIGN(StatFs before, fs().statfs());
  SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/sparse", O_CREAT | O_RDWR));
  auto p = pattern(7, kGiB, kB);
  SDX_ASSERT_OK(write_all(f, cbytes(p), kGiB));
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
  EXPECT_EQ(st.size, kGiB + kB);
  EXPECT_EQ(st.blocks, 1u);
  EXPECT_EQ(st.extents, 1u);
  // Ten bytes straddling the boundary of two new blocks.
  auto q = pattern(8, 3 * kGiB - 5, 10);
  SDX_ASSERT_OK(write_all(f, cbytes(q), 3 * kGiB - 5));
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.size, 3 * kGiB + 5);
  EXPECT_EQ(st.blocks, 3u);
  SDX_ASSERT_OK_AND_ASSIGN(StatFs after, fs().statfs());
  EXPECT_LE(before.free_blocks - after.free_blocks, 3u + 8u)
      << "a sparse file must not allocate its holes";
  EXPECT_GE(before.free_blocks - after.free_blocks, 3u);
  // Holes read zero, reads at and past EOF are short.
  for (uint64_t off : {uint64_t{0}, kGiB / 2, kGiB - kB, kGiB + kB, 2 * kGiB, 3 * kGiB - 4096}) {
    SDX_ASSERT_OK_AND_ASSIGN(auto z, read_range(f, off, 4091));
    ASSERT_EQ(z.size(), 4091u);
    if (off == 3 * kGiB - 4096) {
      EXPECT_TRUE(all_zero(std::span(z).first(4091)));
    } else {
      EXPECT_TRUE(all_zero(z)) << "hole at " << off << " is not zero";
    }
  }
  SDX_ASSERT_OK_AND_ASSIGN(auto got, read_range(f, kGiB, kB));
  EXPECT_EQ(got, p);
  SDX_ASSERT_OK_AND_ASSIGN(got, read_range(f, 3 * kGiB - 5, 100));
  EXPECT_EQ(got, q) << "read crossing EOF must return only the bytes before EOF";
  SDX_ASSERT_OK_AND_ASSIGN(got, read_range(f, 3 * kGiB - 8, 8));
  EXPECT_EQ(first_diff(got, std::vector<std::byte>{std::byte{0}, std::byte{0}, std::byte{0}, q[0], q[1], q[2], q[3], q[4]}), "");
  std::vector<std::byte> buf(100);
  SDX_ASSERT_OK_AND_ASSIGN(size_t n, f.pread(mbytes(buf), 3 * kGiB + 5));
  EXPECT_EQ(n, 0u);
  SDX_ASSERT_OK_AND_ASSIGN(n, f.pread(mbytes(buf), 100 * kGiB));
  EXPECT_EQ(n, 0u);
  SDX_ASSERT_OK(f.fsync());
  SDX_ASSERT_OK(f.close());
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(File g, fs().open("/sparse", O_RDONLY));
  SDX_ASSERT_OK_AND_ASSIGN(st, g.stat());
  EXPECT_EQ(st.size, 3 * kGiB + 5);
  EXPECT_EQ(st.blocks, 3u);
  SDX_ASSERT_OK_AND_ASSIGN(got, read_range(g, kGiB - 10, kB + 20));
  auto expect = std::vector<std::byte>(10);
  expect.insert(expect.end(), p.begin(), p.end());
  expect.resize(kB + 20);
  EXPECT_EQ(first_diff(got, expect, kGiB - 10), "");
  SDX_ASSERT_OK(g.close());
  ASSERT_FSCK_CLEAN(*env_);
}

TEST_P(FsTest, FallocateModes) {
  SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/fa", O_CREAT | O_RDWR));
  // Default mode: allocates and extends the size; contents read zero.
  SDX_ASSERT_OK(f.fallocate(0, 0, 10 * kB));
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
  EXPECT_EQ(st.size, 10 * kB);
  EXPECT_EQ(st.blocks, 10u);
  SDX_ASSERT_OK_AND_ASSIGN(auto d, read_range(f, 0, 20 * kB));
  EXPECT_EQ(d.size(), 10 * kB);
  EXPECT_TRUE(all_zero(d));
  // KEEP_SIZE beyond EOF: blocks grow, size does not.
  SDX_ASSERT_OK(f.fallocate(FALLOC_FL_KEEP_SIZE, 10 * kB, 5 * kB));
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.size, 10 * kB);
  EXPECT_EQ(st.blocks, 15u);
  SDX_ASSERT_OK_AND_ASSIGN(d, read_range(f, 0, 20 * kB));
  EXPECT_EQ(d.size(), 10 * kB) << "KEEP_SIZE must not make preallocated blocks readable";

  std::vector<std::byte> shadow = pattern(3, 0, 10 * kB);
  SDX_ASSERT_OK(write_all(f, cbytes(shadow), 0));
  SDX_ASSERT_OK(f.fdatasync());
  // Default mode over written data changes nothing.
  SDX_ASSERT_OK(f.fallocate(0, 0, 10 * kB));
  SDX_ASSERT_OK_AND_ASSIGN(d, read_range(f, 0, 10 * kB));
  EXPECT_EQ(first_diff(d, shadow), "");

  // Punch whole blocks: frees them, zeroes the range, keeps the size.
  SDX_ASSERT_OK(f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * kB, 3 * kB));
  std::fill(shadow.begin() + 2 * kB, shadow.begin() + 5 * kB, std::byte{0});
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.size, 10 * kB);
  EXPECT_EQ(st.blocks, 12u);
  // Punch inside one block: zeroes bytes, frees nothing.
  SDX_ASSERT_OK(f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 30000, 100));
  std::fill(shadow.begin() + 30000, shadow.begin() + 30100, std::byte{0});
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.blocks, 12u);
  // Unaligned punch spanning blocks: partial edges zeroed, the full block inside freed.
  SDX_ASSERT_OK(f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 6 * kB - 10, kB + 20));
  std::fill(shadow.begin() + 6 * kB - 10, shadow.begin() + 7 * kB + 10, std::byte{0});
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.blocks, 11u);
  SDX_ASSERT_OK_AND_ASSIGN(d, read_range(f, 0, 10 * kB));
  EXPECT_EQ(first_diff(d, shadow), "");

  // ZERO_RANGE inside the file: contents zero, size unchanged.
  SDX_ASSERT_OK(f.fallocate(FALLOC_FL_ZERO_RANGE, 1000, 5000));
  std::fill(shadow.begin() + 1000, shadow.begin() + 6000, std::byte{0});
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.size, 10 * kB);
  // ZERO_RANGE|KEEP_SIZE past EOF: size unchanged.
  SDX_ASSERT_OK(f.fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 10 * kB, kB));
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.size, 10 * kB);
  // ZERO_RANGE past EOF without KEEP_SIZE: size grows, new range reads zero.
  SDX_ASSERT_OK(f.fallocate(FALLOC_FL_ZERO_RANGE, 45000, 5000));
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.size, 50000u);
  shadow.resize(50000);
  SDX_ASSERT_OK_AND_ASSIGN(d, read_range(f, 0, 60000));
  EXPECT_EQ(first_diff(d, shadow), "");

  // Writes into the KEEP_SIZE preallocation beyond the old EOF.
  SDX_ASSERT_OK(f.ftruncate(10 * kB));
  shadow.resize(10 * kB);
  auto w = pattern(4, 12 * kB + 3, 100);
  SDX_ASSERT_OK(write_all(f, cbytes(w), 12 * kB + 3));
  shadow.resize(12 * kB + 103);
  std::copy(w.begin(), w.end(), shadow.begin() + 12 * kB + 3);
  SDX_ASSERT_OK_AND_ASSIGN(d, read_range(f, 0, 20 * kB));
  EXPECT_EQ(first_diff(d, shadow), "");

  // Invalid requests.
  SDX_EXPECT_ERRNO(f.fallocate(FALLOC_FL_PUNCH_HOLE, 0, kB), EOPNOTSUPP);
  SDX_EXPECT_ERRNO(f.fallocate(0, 0, 0), EINVAL);
  SDX_EXPECT_ERRNO(f.fallocate(0x4000, 0, kB), EOPNOTSUPP);
  SDX_ASSERT_OK_AND_ASSIGN(d, read_range(f, 0, 20 * kB));
  EXPECT_EQ(first_diff(d, shadow), "") << "a failed fallocate changed the file";

  SDX_ASSERT_OK(f.fsync());
  SDX_ASSERT_OK(f.close());
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(d, read_file(fs(), "/fa"));
  EXPECT_EQ(first_diff(d, shadow), "");
  ASSERT_FSCK_CLEAN(*env_);
}

TEST_P(FsTest, FtruncateShrinkAndGrow) {
  SDX_ASSERT_OK_AND_ASSIGN(StatFs sf0, fs().statfs());
  SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/t", O_CREAT | O_RDWR));
  auto p = pattern(5, 0, 3 * kB);
  SDX_ASSERT_OK(write_all(f, cbytes(p), 0));
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
  EXPECT_EQ(st.blocks, 3u);
  SDX_ASSERT_OK(f.ftruncate(5000));
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.size, 5000u);
  EXPECT_EQ(st.blocks, 2u);
  SDX_ASSERT_OK(f.ftruncate(20000));
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.size, 20000u);
  EXPECT_EQ(st.blocks, 2u) << "growing with ftruncate must not allocate";
  SDX_ASSERT_OK_AND_ASSIGN(auto d, read_range(f, 0, 30000));
  ASSERT_EQ(d.size(), 20000u);
  EXPECT_EQ(first_diff(std::span(d).first(5000), std::span(p).first(5000)), "");
  EXPECT_TRUE(all_zero(std::span(d).subspan(5000))) << "data past the shrink point came back";
  // Shrink to zero returns every block.
  SDX_ASSERT_OK(f.ftruncate(0));
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.blocks, 0u);
  SDX_ASSERT_OK(f.fsync());
  SDX_ASSERT_OK_AND_ASSIGN(StatFs sf1, fs().statfs());
  EXPECT_LE(sf0.free_blocks - sf1.free_blocks, 1u) << "blocks leaked by truncate";
  // Regrow and write past a hole.
  SDX_ASSERT_OK(f.ftruncate(3 * kB));
  auto q = pattern(6, 2 * kB + 100, 50);
  SDX_ASSERT_OK(write_all(f, cbytes(q), 2 * kB + 100));
  std::vector<std::byte> shadow(3 * kB);
  std::copy(q.begin(), q.end(), shadow.begin() + 2 * kB + 100);
  SDX_ASSERT_OK(f.fsync());
  SDX_ASSERT_OK(f.close());
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(d, read_file(fs(), "/t"));
  EXPECT_EQ(first_diff(d, shadow), "");
  SDX_ASSERT_OK_AND_ASSIGN(st, fs().stat("/t"));
  EXPECT_EQ(st.blocks, 1u);
  ASSERT_FSCK_CLEAN(*env_);
}

// ---------------------------------------------------------------- namespace
TEST_P(FsTest, MkdirRmdirUnlinkErrors) {
  SDX_ASSERT_OK(fs().mkdir("/a"));
  SDX_ASSERT_OK(fs().mkdir("/a/b"));
  SDX_EXPECT_ERRNO(fs().mkdir("/x/y"), ENOENT);
  SDX_EXPECT_ERRNO(fs().rmdir("/a"), ENOTEMPTY);
  { SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/a/b/f", O_CREAT | O_RDWR)); }
  SDX_EXPECT_ERRNO(fs().rmdir("/a/b"), ENOTEMPTY);
  SDX_EXPECT_ERRNO(fs().rmdir("/a/b/f"), ENOTDIR);
  SDX_EXPECT_ERRNO(fs().unlink("/a/b"), EISDIR);
  SDX_EXPECT_ERRNO(fs().unlink("/a/nothing"), ENOENT);
  SDX_EXPECT_ERRNO(fs().rmdir("/a/nothing"), ENOENT);
  SDX_ASSERT_OK_AND_ASSIGN(Stat sa, fs().stat("/a"));
  EXPECT_TRUE(S_ISDIR(sa.mode));
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s0, fs().statfs());
  SDX_ASSERT_OK(fs().unlink("/a/b/f"));
  SDX_ASSERT_OK(fs().rmdir("/a/b"));
  SDX_ASSERT_OK(fs().rmdir("/a"));
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s1, fs().statfs());
  EXPECT_EQ(s1.free_inodes, s0.free_inodes + 3);
  SDX_EXPECT_ERRNO(fs().stat("/a"), ENOENT);
  SDX_ASSERT_OK_AND_ASSIGN(auto ents, test::list_dir(fs(), "/"));
  EXPECT_TRUE(ents.empty());
  SDX_ASSERT_OK(fs().mkdir("/a"));  // the name is reusable
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(auto tree, test::snapshot(fs()));
  ASSERT_EQ(tree.size(), 1u);
  EXPECT_TRUE(tree.begin()->second.is_dir);
  EXPECT_EQ(tree.begin()->first, "/a");
  ASSERT_FSCK_CLEAN(*env_);
}

TEST_P(FsTest, RenameSemantics) {
  auto X = pattern(10, 0, 9000), Y = pattern(11, 0, 5000);
  {
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/x", O_CREAT | O_RDWR));
    SDX_ASSERT_OK(write_all(f, cbytes(X), 0));
    SDX_ASSERT_OK_AND_ASSIGN(File g, fs().open("/y", O_CREAT | O_RDWR));
    SDX_ASSERT_OK(write_all(g, cbytes(Y), 0));
  }
  SDX_ASSERT_OK_AND_ASSIGN(Stat sx, fs().stat("/x"));
  SDX_ASSERT_OK_AND_ASSIGN(StatFs f0, fs().statfs());
  // Replace a file.
  SDX_ASSERT_OK(fs().rename("/x", "/y"));
  SDX_EXPECT_ERRNO(fs().stat("/x"), ENOENT);
  SDX_ASSERT_OK_AND_ASSIGN(Stat sy, fs().stat("/y"));
  EXPECT_EQ(sy.ino, sx.ino);
  SDX_ASSERT_OK_AND_ASSIGN(auto d, read_file(fs(), "/y"));
  EXPECT_EQ(d, X);
  SDX_ASSERT_OK_AND_ASSIGN(StatFs f1, fs().statfs());
  EXPECT_EQ(f1.free_inodes, f0.free_inodes + 1) << "the replaced file's inode was not freed";
  EXPECT_EQ(f1.free_blocks, f0.free_blocks + 2) << "the replaced file's 2 blocks were not freed";
  // Rename to itself is a no-op.
  SDX_ASSERT_OK(fs().rename("/y", "/y"));
  SDX_ASSERT_OK_AND_ASSIGN(d, read_file(fs(), "/y"));
  EXPECT_EQ(d, X);

  // Rename a directory with contents.
  SDX_ASSERT_OK(fs().mkdir("/d1"));
  SDX_ASSERT_OK(fs().mkdir("/d1/sub"));
  SDX_ASSERT_OK(fs().rename("/y", "/d1/sub/file"));
  SDX_ASSERT_OK(fs().rename("/d1", "/d2"));
  SDX_EXPECT_ERRNO(fs().stat("/d1"), ENOENT);
  SDX_ASSERT_OK_AND_ASSIGN(d, read_file(fs(), "/d2/sub/file"));
  EXPECT_EQ(d, X);
  // Into its own subdirectory: EINVAL; nothing changes.
  SDX_EXPECT_ERRNO(fs().rename("/d2", "/d2/sub/d"), EINVAL);
  SDX_EXPECT_ERRNO(fs().rename("/d2", "/d2/x"), EINVAL);
  SDX_ASSERT_OK_AND_ASSIGN(Stat sd, fs().stat("/d2/sub"));
  EXPECT_TRUE(S_ISDIR(sd.mode));
  // Missing source or target directory.
  SDX_EXPECT_ERRNO(fs().rename("/missing", "/z"), ENOENT);
  SDX_EXPECT_ERRNO(fs().rename("/d2/sub/file", "/nodir/z"), ENOENT);
  // Type mismatches.
  SDX_ASSERT_OK(fs().mkdir("/empty"));
  SDX_ASSERT_OK(fs().mkdir("/full"));
  { SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/full/f", O_CREAT | O_RDWR)); }
  { SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/plain", O_CREAT | O_RDWR)); }
  SDX_EXPECT_ERRNO(fs().rename("/plain", "/empty"), EISDIR);
  SDX_EXPECT_ERRNO(fs().rename("/empty", "/plain"), ENOTDIR);
  SDX_EXPECT_ERRNO(fs().rename("/empty", "/full"), ENOTEMPTY);
  // A directory replaces an empty directory.
  SDX_ASSERT_OK_AND_ASSIGN(Stat sub, fs().stat("/d2/sub"));
  SDX_ASSERT_OK(fs().rename("/d2/sub", "/empty"));
  SDX_ASSERT_OK_AND_ASSIGN(Stat se, fs().stat("/empty"));
  EXPECT_EQ(se.ino, sub.ino);
  SDX_ASSERT_OK_AND_ASSIGN(d, read_file(fs(), "/empty/file"));
  EXPECT_EQ(d, X);
  // An open file keeps working across a rename.
  {
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/empty/file", O_RDWR));
    SDX_ASSERT_OK(fs().rename("/empty/file", "/full/moved"));
    SDX_ASSERT_OK(write_all(f, cbytes(Y), 9000));
  }
  X.insert(X.end(), Y.begin(), Y.end());
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(d, read_file(fs(), "/full/moved"));
  EXPECT_EQ(d, X);
  SDX_ASSERT_OK_AND_ASSIGN(auto tree, test::snapshot(fs(), false));
  std::set<std::string> names;
  for (auto& [p, n] : tree) names.insert(p);
  EXPECT_EQ(names, (std::set<std::string>{"/d2", "/empty", "/full", "/full/f", "/full/moved", "/plain"}));
  ASSERT_FSCK_CLEAN(*env_);
}

TEST_P(FsTest, UnlinkedOpenFileLivesUntilClose) {
  // Make sure the root directory has its block before measuring.
  { SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/warm", O_CREAT | O_RDWR)); }
  SDX_ASSERT_OK(fs().unlink("/warm"));
  SDX_ASSERT_OK(fs().sync());
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s0, fs().statfs());
  const size_t kLen = 256 * kB;
  auto p = pattern(20, 0, kLen);
  SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/u", O_CREAT | O_RDWR));
  SDX_ASSERT_OK(write_all(f, cbytes(p), 0));
  SDX_ASSERT_OK(f.fsync());
  SDX_ASSERT_OK(fs().unlink("/u"));
  SDX_EXPECT_ERRNO(fs().open("/u", O_RDONLY), ENOENT);
  SDX_EXPECT_ERRNO(fs().stat("/u"), ENOENT);
  SDX_ASSERT_OK_AND_ASSIGN(auto ents, test::list_dir(fs(), "/"));
  EXPECT_TRUE(ents.empty());
  // Still readable and writable through the handle.
  SDX_ASSERT_OK_AND_ASSIGN(auto d, read_range(f, 0, kLen));
  EXPECT_EQ(first_diff(d, p), "");
  auto q = pattern(21, kLen, 64 * kB);
  SDX_ASSERT_OK(write_all(f, cbytes(q), kLen));
  SDX_ASSERT_OK(f.fdatasync());
  SDX_ASSERT_OK_AND_ASSIGN(d, read_range(f, kLen, 64 * kB));
  EXPECT_EQ(first_diff(d, q), "");
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
  EXPECT_EQ(st.nlink, 0u);
  EXPECT_EQ(st.blocks, (kLen + 64 * kB) / kB);
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s1, fs().statfs());
  EXPECT_LE(s1.free_blocks + (kLen + 64 * kB) / kB, s0.free_blocks)
      << "an unlinked open file's blocks must stay allocated";
  EXPECT_EQ(s1.free_inodes + 1, s0.free_inodes);
  // A new file with the same name is a different file.
  {
    SDX_ASSERT_OK_AND_ASSIGN(File g, fs().open("/u", O_CREAT | O_EXCL | O_RDWR));
    SDX_ASSERT_OK_AND_ASSIGN(Stat sg, g.stat());
    EXPECT_NE(sg.ino, st.ino);
    EXPECT_EQ(sg.size, 0u);
  }
  SDX_ASSERT_OK(fs().unlink("/u"));
  SDX_ASSERT_OK(f.close());
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s2, fs().statfs());
  EXPECT_EQ(s2.free_blocks, s0.free_blocks) << "space not returned after the last close";
  EXPECT_EQ(s2.free_inodes, s0.free_inodes);
  SDX_ASSERT_OK(fs().sync());
  SDX_ASSERT_OK_AND_ASSIGN(s2, fs().statfs());
  EXPECT_EQ(s2.free_blocks, s0.free_blocks) << "space not returned after close + sync";
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s3, fs().statfs());
  EXPECT_EQ(s3.free_blocks, s0.free_blocks);
  EXPECT_EQ(s3.free_inodes, s0.free_inodes);
  ASSERT_FSCK_CLEAN(*env_);
}

TEST_P(FsTest, ReaddirManyEntries) {
  std::map<std::string, std::pair<uint64_t, bool>> expect;  // name -> (ino, is_dir)
  SDX_ASSERT_OK(fs().mkdir("/big"));
  for (int i = 0; i < 150; ++i) {
    std::string name = "file-" + std::to_string(i) + std::string(i % 40, 'x');
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/big/" + name, O_CREAT | O_EXCL | O_RDWR));
    SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
    expect[name] = {st.ino, false};
  }
  for (int i = 0; i < 6; ++i) {
    std::string name = "dir" + std::to_string(i);
    SDX_ASSERT_OK(fs().mkdir("/big/" + name));
    SDX_ASSERT_OK_AND_ASSIGN(Stat st, fs().stat("/big/" + name));
    expect[name] = {st.ino, true};
  }
  auto check = [&]() -> testing::AssertionResult {
    auto ents = test::list_dir(fs(), "/big");
    if (!ents) return testing::AssertionFailure() << ents.error().to_string();
    std::map<std::string, std::pair<uint64_t, bool>> got;
    for (auto& e : *ents) {
      if (!got.emplace(e.name, std::pair{e.ino, e.is_dir}).second)
        return testing::AssertionFailure() << "duplicate entry " << e.name;
    }
    if (got != expect)
      return testing::AssertionFailure()
             << "readdir returned " << got.size() << " entries, expected " << expect.size();
    return testing::AssertionSuccess();
  };
  EXPECT_TRUE(check());
  for (int i = 0; i < 150; i += 2) {
    std::string name = "file-" + std::to_string(i) + std::string(i % 40, 'x');
    SDX_ASSERT_OK(fs().unlink("/big/" + name));
    expect.erase(name);
  }
  SDX_ASSERT_OK(fs().rmdir("/big/dir3"));
  expect.erase("dir3");
  EXPECT_TRUE(check());
  for (int i = 0; i < 30; ++i) {
    std::string name = "new" + std::to_string(i);
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/big/" + name, O_CREAT | O_EXCL | O_RDWR));
    SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
    expect[name] = {st.ino, false};
  }
  EXPECT_TRUE(check());
  SDX_EXPECT_ERRNO(fs().readdir("/nothing"), ENOENT);
  SDX_EXPECT_ERRNO(fs().readdir("/big/new1"), ENOTDIR);
  SDX_ASSERT_OK(env_->remount());
  EXPECT_TRUE(check());
  ASSERT_FSCK_CLEAN(*env_);
}

int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

// Let the clock move past the file system's timestamp granularity (coarse clocks tick
// every few ms). This orders events in time; it does not paper over a race.
void let_clock_advance() { std::this_thread::sleep_for(std::chrono::milliseconds(15)); }

TEST_P(FsTest, TimestampsMove) {
  const int64_t kSlack = 20'000'000;  // coarse clocks may lag by a tick
  int64_t t0 = now_ns();
  SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/ts", O_CREAT | O_RDWR));
  SDX_ASSERT_OK_AND_ASSIGN(Stat s0, f.stat());
  EXPECT_GE(s0.mtime_ns, t0 - kSlack);
  EXPECT_LE(s0.mtime_ns, now_ns() + kSlack);
  EXPECT_GE(s0.ctime_ns, t0 - kSlack);
  SDX_ASSERT_OK_AND_ASSIGN(Stat root0, fs().stat("/"));
  let_clock_advance();
  SDX_ASSERT_OK(write_all(f, cbytes(pattern(1, 0, 100)), 0));
  SDX_ASSERT_OK_AND_ASSIGN(Stat s1, f.stat());
  EXPECT_GT(s1.mtime_ns, s0.mtime_ns) << "pwrite did not move mtime";
  EXPECT_GT(s1.ctime_ns, s0.ctime_ns) << "pwrite did not move ctime";
  let_clock_advance();
  SDX_ASSERT_OK(f.ftruncate(10));
  SDX_ASSERT_OK_AND_ASSIGN(Stat s2, f.stat());
  EXPECT_GT(s2.mtime_ns, s1.mtime_ns) << "ftruncate did not move mtime";
  let_clock_advance();
  { SDX_ASSERT_OK_AND_ASSIGN(File g, fs().open("/other", O_CREAT | O_RDWR)); }
  SDX_ASSERT_OK_AND_ASSIGN(Stat root1, fs().stat("/"));
  EXPECT_GT(root1.mtime_ns, root0.mtime_ns) << "creating an entry did not move the dir's mtime";
  let_clock_advance();
  SDX_ASSERT_OK(fs().rename("/ts", "/ts2"));
  SDX_ASSERT_OK_AND_ASSIGN(Stat s3, f.stat());
  EXPECT_GE(s3.ctime_ns, s2.ctime_ns);
  EXPECT_EQ(s3.mtime_ns, s2.mtime_ns) << "rename must not change the file's mtime";
  SDX_ASSERT_OK(f.fsync());
  SDX_ASSERT_OK(f.close());
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(Stat s4, fs().stat("/ts2"));
  EXPECT_EQ(s4.mtime_ns, s3.mtime_ns) << "mtime not persistent";
  EXPECT_EQ(s4.ctime_ns, s3.ctime_ns) << "ctime not persistent";
}

TEST_P(FsTest, StatfsTracksAllocation) {
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s0, fs().statfs());
  EXPECT_EQ(s0.block_size, kB);
  EXPECT_GT(s0.total_blocks, 0u);
  EXPECT_LE(s0.free_blocks, s0.total_blocks);
  EXPECT_LE(s0.free_inodes, s0.total_inodes);
  EXPECT_GT(s0.free_blocks, s0.total_blocks * 9 / 10) << "implausibly little free space";
  SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/s", O_CREAT | O_RDWR));
  SDX_ASSERT_OK(f.fsync());
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s1, fs().statfs());
  EXPECT_EQ(s1.free_inodes + 1, s0.free_inodes);
  SDX_ASSERT_OK(write_all(f, cbytes(pattern(2, 0, 100 * kB)), 0));
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s2, fs().statfs());
  EXPECT_GE(s1.free_blocks - s2.free_blocks, 100u);
  EXPECT_LE(s1.free_blocks - s2.free_blocks, 100u + 4u) << "too much metadata for 1 extent";
  SDX_ASSERT_OK(f.fallocate(FALLOC_FL_KEEP_SIZE, 100 * kB, 50 * kB));
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s3, fs().statfs());
  EXPECT_GE(s2.free_blocks - s3.free_blocks, 50u);
  SDX_ASSERT_OK(f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 150 * kB));
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s4, fs().statfs());
  EXPECT_EQ(s4.free_blocks, s1.free_blocks);
  SDX_ASSERT_OK(f.close());
  SDX_ASSERT_OK(fs().unlink("/s"));
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s5, fs().statfs());
  EXPECT_EQ(s5.free_inodes, s0.free_inodes);
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s6, fs().statfs());
  EXPECT_EQ(s6.free_inodes, s5.free_inodes);
  EXPECT_EQ(s6.free_blocks, s5.free_blocks);
}

TEST_P(FsTest, ManyExtents) {
  constexpr uint64_t kN = 1500;  // written blocks, each its own extent
  SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/frag", O_CREAT | O_RDWR));
  for (uint64_t i = 0; i < kN; ++i) {
    uint64_t off = 2 * i * kB;
    SDX_ASSERT_OK(write_all(f, cbytes(pattern(i, off, kB)), off));
  }
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
  EXPECT_EQ(st.extents, kN);
  EXPECT_EQ(st.blocks, kN);
  EXPECT_EQ(st.size, (2 * kN - 1) * kB);
  auto verify = [&](File& g, bool filled) -> testing::AssertionResult {
    auto all = read_range(g, 0, 2 * kN * kB);
    if (!all) return testing::AssertionFailure() << all.error().to_string();
    if (all->size() != (2 * kN - 1) * kB) return testing::AssertionFailure() << "size " << all->size();
    for (uint64_t b = 0; b < 2 * kN - 1; ++b) {
      std::span<const std::byte> got(all->data() + b * kB, kB);
      std::vector<std::byte> want =
          b % 2 == 0 ? pattern(b / 2, b * kB, kB)
                     : (filled ? pattern(100000 + b, b * kB, kB) : std::vector<std::byte>(kB));
      auto diff = first_diff(got, want, b * kB);
      if (!diff.empty()) return testing::AssertionFailure() << "block " << b << ": " << diff;
    }
    return testing::AssertionSuccess();
  };
  EXPECT_TRUE(verify(f, false));
  SDX_ASSERT_OK(f.fsync());
  SDX_ASSERT_OK(f.close());
  SDX_ASSERT_OK(env_->remount());
  {
    SDX_ASSERT_OK_AND_ASSIGN(File g, fs().open("/frag", O_RDWR));
    SDX_ASSERT_OK_AND_ASSIGN(st, g.stat());
    EXPECT_EQ(st.extents, kN);
    EXPECT_TRUE(verify(g, false));
    // Fill the holes in reverse order.
    for (uint64_t b = 2 * kN - 3; b < 2 * kN; b -= 2) {
      SDX_ASSERT_OK(write_all(g, cbytes(pattern(100000 + b, b * kB, kB)), b * kB));
      if (b == 1) break;
    }
    SDX_ASSERT_OK_AND_ASSIGN(st, g.stat());
    EXPECT_EQ(st.blocks, 2 * kN - 1);
    EXPECT_GE(st.extents, 1u);
    EXPECT_LE(st.extents, 2 * kN - 1);
    EXPECT_TRUE(verify(g, true));
    SDX_ASSERT_OK(g.fsync());
  }
  SDX_ASSERT_OK(env_->remount());
  {
    SDX_ASSERT_OK_AND_ASSIGN(File g, fs().open("/frag", O_RDWR));
    EXPECT_TRUE(verify(g, true));
    // Shrinking back frees the extent tree.
    SDX_ASSERT_OK(g.ftruncate(0));
    SDX_ASSERT_OK_AND_ASSIGN(st, g.stat());
    EXPECT_EQ(st.blocks, 0u);
    EXPECT_EQ(st.extents, 0u);
  }
  ASSERT_FSCK_CLEAN(*env_);
}

TEST_P(FsTest, RemountPersistsEverything) {
  std::mt19937_64 rng(7);
  std::map<std::string, std::vector<std::byte>> files;
  SDX_ASSERT_OK(fs().mkdir("/a"));
  SDX_ASSERT_OK(fs().mkdir("/a/b"));
  SDX_ASSERT_OK(fs().mkdir("/c"));
  const char* dirs[] = {"", "/a", "/a/b", "/c"};
  for (int i = 0; i < 40; ++i) {
    std::string p = std::string(dirs[i % 4]) + "/f" + std::to_string(i);
    size_t len = (i % 5 == 0) ? 0 : 1 + rng() % (200 * 1024);
    auto data = pattern(1000 + i, 0, len);
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open(p, O_CREAT | O_EXCL | O_WRONLY));
    if (len) SDX_ASSERT_OK(write_all(f, cbytes(data), 0));
    files[p] = data;
  }
  SDX_ASSERT_OK_AND_ASSIGN(auto before, test::snapshot(fs()));
  EXPECT_EQ(before.size(), files.size() + 3);
  for (auto& [p, d] : files) {
    ASSERT_TRUE(before.count(p)) << p;
    EXPECT_EQ(before[p].data, d) << p;
  }
  SDX_ASSERT_OK_AND_ASSIGN(StatFs sf, fs().statfs());
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(auto after, test::snapshot(fs()));
  EXPECT_TRUE(after == before) << "tree differs after remount";
  SDX_ASSERT_OK_AND_ASSIGN(StatFs sf2, fs().statfs());
  EXPECT_EQ(sf2.free_blocks, sf.free_blocks);
  EXPECT_EQ(sf2.free_inodes, sf.free_inodes);
  // Twice more, with changes in between.
  SDX_ASSERT_OK(fs().unlink("/a/b/f2"));
  files.erase("/a/b/f2");
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(after, test::snapshot(fs()));
  before.erase("/a/b/f2");
  EXPECT_TRUE(after == before);
  ASSERT_FSCK_CLEAN(*env_);
}

TEST(FsFileDevice, SecondMountOfSamePathIsBusy) {
  test::TempPath path("fs_busy");
  SDX_ASSERT_OK(FileSystem::mkfs(path.str(), {.size = 8 << 20}));
  SDX_ASSERT_OK_AND_ASSIGN(auto fs, FileSystem::mount(path.str(), {.commit_interval_ms = 0}));
  SDX_EXPECT_ERRNO(FileSystem::mount(path.str(), {.commit_interval_ms = 0}), EBUSY);
  SDX_ASSERT_OK(fs->unmount());
  fs.reset();
  SDX_ASSERT_OK_AND_ASSIGN(fs, FileSystem::mount(path.str(), {.commit_interval_ms = 0}));
  SDX_ASSERT_OK(fs->unmount());
  fs.reset();
  auto rep = FileSystem::fsck(path.str());
  EXPECT_TRUE(rep.clean()) << problems(rep);
}

// ---------------------------------------------------------------- space
TEST_P(FsTest, ExtentSizeHintRoundsAllocations) {
  SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/h", O_CREAT | O_RDWR));
  SDX_EXPECT_ERRNO(f.set_extsize_hint(1000), EINVAL);
  SDX_ASSERT_OK(f.set_extsize_hint(64 * 1024));
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
  EXPECT_EQ(st.extsize_hint, 64u * 1024);
  SDX_ASSERT_OK(write_all(f, cbytes(pattern(1, 0, 1)), 0));
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.blocks, 16u) << "a 1-byte write with a 64 KiB hint allocates 16 blocks";
  EXPECT_EQ(st.size, 1u);
  SDX_ASSERT_OK(write_all(f, cbytes(pattern(1, 100000, 10)), 100000));
  SDX_ASSERT_OK_AND_ASSIGN(st, f.stat());
  EXPECT_EQ(st.blocks, 32u) << "the write at 100000 lies in the aligned chunk [64K, 128K)";
  // The preallocated tail reads zero.
  SDX_ASSERT_OK_AND_ASSIGN(auto d, read_range(f, 0, 100010));
  ASSERT_EQ(d.size(), 100010u);
  auto expect = std::vector<std::byte>(100010);
  expect[0] = pattern(1, 0, 1)[0];
  auto q = pattern(1, 100000, 10);
  std::copy(q.begin(), q.end(), expect.begin() + 100000);
  EXPECT_EQ(first_diff(d, expect), "");
  SDX_ASSERT_OK(f.fsync());
  SDX_ASSERT_OK(f.close());
  SDX_ASSERT_OK(env_->remount());
  SDX_ASSERT_OK_AND_ASSIGN(st, fs().stat("/h"));
  EXPECT_EQ(st.extsize_hint, 64u * 1024) << "hint not persistent";
  EXPECT_EQ(st.blocks, 32u);
  SDX_ASSERT_OK_AND_ASSIGN(File g, fs().open("/h", O_RDWR));
  SDX_ASSERT_OK(write_all(g, cbytes(pattern(2, 300000, 1)), 300000));
  SDX_ASSERT_OK_AND_ASSIGN(st, g.stat());
  EXPECT_EQ(st.blocks, 48u);
  SDX_ASSERT_OK(g.close());
  ASSERT_FSCK_CLEAN(*env_);
}

// A small sim device, filled to ENOSPC by data and then by inodes.
TEST(FsSpace, EnospcLeavesConsistentFileSystem) {
  Env env(Kind::kSim, 4ull << 20, MkfsOptions{}, MountOptions{.commit_interval_ms = 0});
  SDX_ASSERT_OK(env.start());
  FileSystem& fs = env.fs();
  // Give the root directory its first block before measuring.
  { SDX_ASSERT_OK_AND_ASSIGN(File w, fs.open("/warm", O_CREAT | O_RDWR)); }
  SDX_ASSERT_OK(fs.unlink("/warm"));
  SDX_ASSERT_OK(fs.sync());
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s0, fs.statfs());
  uint64_t written = 0;
  Error last;
  {
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs.open("/fill", O_CREAT | O_RDWR));
    for (int i = 0; i < 10000; ++i) {
      auto chunk = pattern(9, written, 64 * 1024 - 1);
      auto r = f.pwrite(cbytes(chunk), written);
      if (!r) {
        last = r.error();
        break;
      }
      ASSERT_GT(*r, 0u);
      written += *r;
    }
    EXPECT_EQ(last.code, ENOSPC) << last.to_string();
    EXPECT_FALSE(last.message.empty());
    EXPECT_GT(written, (s0.free_blocks * kB) * 8 / 10) << "ENOSPC long before the device is full";
    EXPECT_LE(written, s0.free_blocks * kB);
    // statfs's available count is exactly what data could still get (one extent: the
    // fill needs no extent leaves).
    EXPECT_LT(s0.avail_blocks, s0.free_blocks);
    EXPECT_EQ((written + kB - 1) / kB, s0.avail_blocks);
    SDX_ASSERT_OK_AND_ASSIGN(StatFs full, fs.statfs());
    EXPECT_EQ(full.avail_blocks, 0u);
    SDX_ASSERT_OK_AND_ASSIGN(Stat st, f.stat());
    EXPECT_EQ(st.size, written);
    SDX_EXPECT_ERRNO(f.fallocate(0, written, 100ull << 20), ENOSPC);
    SDX_ASSERT_OK(f.fsync());
    SDX_ASSERT_OK_AND_ASSIGN(auto d, read_range(f, 0, written));
    EXPECT_EQ(first_diff(d, pattern(9, 0, written)), "");
    // Metadata operations that need no blocks still work when data space is gone.
    SDX_ASSERT_OK_AND_ASSIGN(File small, fs.open("/small", O_CREAT | O_RDWR));
  }
  ASSERT_FSCK_CLEAN(env);
  SDX_ASSERT_OK_AND_ASSIGN(auto d, read_file(env.fs(), "/fill"));
  EXPECT_EQ(first_diff(d, pattern(9, 0, written)), "");
  // Free the space: it is usable again.
  SDX_ASSERT_OK(env.fs().unlink("/fill"));
  SDX_ASSERT_OK(env.fs().unlink("/small"));
  SDX_ASSERT_OK(env.fs().sync());
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s1, env.fs().statfs());
  EXPECT_EQ(s1.free_blocks, s0.free_blocks);
  {
    SDX_ASSERT_OK_AND_ASSIGN(File f, env.fs().open("/again", O_CREAT | O_RDWR));
    SDX_ASSERT_OK(f.fallocate(0, 0, written));
    SDX_ASSERT_OK(f.fsync());
  }
  SDX_ASSERT_OK(env.fs().unlink("/again"));
  SDX_ASSERT_OK(env.fs().sync());
  // Inodes run out.
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s2, env.fs().statfs());
  uint64_t made = 0;
  for (uint64_t i = 0; i < s2.total_inodes + 10; ++i) {
    auto r = env.fs().open("/i" + std::to_string(i), O_CREAT | O_EXCL | O_RDWR);
    if (!r) {
      EXPECT_EQ(r.error().code, ENOSPC) << r.error().to_string();
      break;
    }
    ++made;
  }
  EXPECT_EQ(made, s2.free_inodes) << "ENOSPC before the inode table was full (or never)";
  SDX_EXPECT_ERRNO(env.fs().mkdir("/nodir"), ENOSPC);
  ASSERT_FSCK_CLEAN(env);
  SDX_ASSERT_OK_AND_ASSIGN(auto tree, test::snapshot(env.fs(), false));
  EXPECT_EQ(tree.size(), made);
}

// ---------------------------------------------------------------- no stale data
// A small device so that the second file must reuse the first file's blocks.
TEST_P(FsTest, NoStaleDataFromDeletedFiles) {
  Env env(GetParam(), 8ull << 20, MkfsOptions{}, MountOptions{.commit_interval_ms = 0});
  SDX_ASSERT_OK(env.start());
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s0, env.fs().statfs());
  {  // A takes all the space data may have.
    SDX_ASSERT_OK_AND_ASSIGN(File a, env.fs().open("/A", O_CREAT | O_RDWR));
    uint64_t off = 0;
    for (;;) {
      auto r = a.pwrite(cbytes(pattern(0xA, off, 64 * kB)), off);
      if (!r) {
        ASSERT_EQ(r.error().code, ENOSPC) << r.error().to_string();
        break;
      }
      off += *r;
    }
    EXPECT_GT(off, s0.free_blocks * kB / 2);
    SDX_ASSERT_OK(a.fsync());
  }
  SDX_ASSERT_OK(env.fs().unlink("/A"));
  SDX_ASSERT_OK(env.fs().sync());

  // B is grown by every route that creates blocks or exposes unwritten bytes.
  const uint64_t M = 256 * kB;
  std::vector<std::byte> shadow;
  auto put = [&](File& f, uint64_t off, size_t len, uint64_t seed) -> Status {
    auto p = pattern(seed, off, len);
    SDX_TRY(write_all(f, cbytes(p), off));
    if (shadow.size() < off + len) shadow.resize(off + len);
    std::copy(p.begin(), p.end(), shadow.begin() + off);
    return ok();
  };
  SDX_ASSERT_OK_AND_ASSIGN(File b, env.fs().open("/B", O_CREAT | O_RDWR));
  SDX_ASSERT_OK(b.ftruncate(M));  // hole
  shadow.resize(M);
  SDX_ASSERT_OK(put(b, 3 * kB + 17, 100, 1));          // partial block in a hole
  SDX_ASSERT_OK(put(b, 10 * kB - 50, 100, 2));         // straddles two new blocks
  SDX_ASSERT_OK(b.fallocate(0, M, M));                 // unwritten, extends size
  shadow.resize(2 * M);
  SDX_ASSERT_OK(put(b, M + 5 * kB + 1, 7, 3));         // partial write into unwritten
  SDX_ASSERT_OK(b.fallocate(FALLOC_FL_KEEP_SIZE, 2 * M, M));  // beyond EOF
  SDX_ASSERT_OK(b.ftruncate(3 * M));                   // exposes the preallocation
  shadow.resize(3 * M);
  SDX_ASSERT_OK(put(b, 3 * M + 12345, 10, 4));         // extending write past a gap
  SDX_ASSERT_OK(b.set_extsize_hint(16 * kB));          // hint-rounded allocations
  SDX_ASSERT_OK(put(b, 4 * M + 2 * kB + 1, 3, 5));
  SDX_ASSERT_OK(b.fallocate(FALLOC_FL_ZERO_RANGE, M, 2 * kB));  // zero range
  std::fill(shadow.begin() + M, shadow.begin() + M + 2 * kB, std::byte{0});
  SDX_ASSERT_OK(b.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 8 * kB));
  std::fill(shadow.begin(), shadow.begin() + 8 * kB, std::byte{0});
  SDX_ASSERT_OK(put(b, 4 * kB + 4000, 200, 6));        // re-fill a punched block partly
  // Use the rest of the space through fallocate of a third file.
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s1, env.fs().statfs());
  ASSERT_GT(s1.free_blocks, 8u);
  SDX_ASSERT_OK_AND_ASSIGN(File c, env.fs().open("/C", O_CREAT | O_RDWR));
  for (uint64_t off = 0;; off += 8 * kB) {
    auto r = c.fallocate(0, off, 8 * kB);
    if (!r) {
      ASSERT_EQ(r.error().code, ENOSPC) << r.error().to_string();
      break;
    }
  }
  SDX_ASSERT_OK_AND_ASSIGN(StatFs s2, env.fs().statfs());
  SDX_ASSERT_OK_AND_ASSIGN(Stat sc, c.stat());
  EXPECT_GT(sc.blocks, s1.free_blocks / 2);
  EXPECT_LT(s2.free_blocks, s0.free_blocks / 10);

  auto verify = [&]() -> testing::AssertionResult {
    auto db = read_file(env.fs(), "/B");
    if (!db) return testing::AssertionFailure() << db.error().to_string();
    auto diff = first_diff(*db, shadow);
    if (!diff.empty()) return testing::AssertionFailure() << "/B: " << diff;
    auto dc = read_file(env.fs(), "/C");
    if (!dc) return testing::AssertionFailure() << dc.error().to_string();
    for (size_t i = 0; i < dc->size(); ++i)
      if ((*dc)[i] != std::byte{0}) return testing::AssertionFailure() << "/C: stale byte at " << i;
    return testing::AssertionSuccess();
  };
  EXPECT_TRUE(verify());
  SDX_ASSERT_OK(b.fsync());
  SDX_ASSERT_OK(c.fsync());
  SDX_ASSERT_OK(b.close());
  SDX_ASSERT_OK(c.close());
  SDX_ASSERT_OK(env.remount());
  EXPECT_TRUE(verify());
  ASSERT_FSCK_CLEAN(env);
}

}  // namespace
}  // namespace sdx
