// The C API (syncdax/syncdax.h): a full round trip through POSIX-style calls, descriptor
// numbering, errno + sdx_errormsg on failures, and reflink, dedupe, extent listing and
// defragmentation as statfs and the extent flags show them.
#include "syncdax/syncdax.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

using sdx::test::TempPath;

class CApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(sdx_mkfs(img_.str().c_str(), 16 << 20, "file"), 0) << sdx_errormsg();
    struct sdx_mount_opts o;
    sdx_mount_opts_init(&o);
    EXPECT_EQ(o.commit_interval_ms, 1000u);
    o.commit_interval_ms = 0;
    fs_ = sdx_mount_opts(img_.str().c_str(), &o);
    ASSERT_NE(fs_, nullptr) << sdx_errormsg();
  }
  void TearDown() override {
    if (fs_) {
      EXPECT_EQ(sdx_unmount(fs_), 0) << sdx_errormsg();
    }
  }

  TempPath img_{"capi"};
  sdx_fs* fs_ = nullptr;
};

TEST_F(CApiTest, WriteReadRoundTripAcrossRemount) {
  auto data = sdx::test::pattern(1, 0, 3 * 4096 + 100);
  int fd = sdx_open(fs_, "/file", O_CREAT | O_RDWR, 0640);
  ASSERT_GE(fd, 0) << sdx_errormsg();
  ASSERT_EQ(sdx_pwrite(fs_, fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()))
      << sdx_errormsg();
  ASSERT_EQ(sdx_fdatasync(fs_, fd), 0) << sdx_errormsg();

  struct sdx_stat st;
  ASSERT_EQ(sdx_fstat(fs_, fd, &st), 0) << sdx_errormsg();
  EXPECT_EQ(st.size, data.size());
  EXPECT_GE(st.blocks, 4u);
  EXPECT_GE(st.extents, 1u);
  EXPECT_TRUE(S_ISREG(st.mode));
  EXPECT_EQ(st.mode & 0777, 0640u);
  ASSERT_EQ(sdx_close(fs_, fd), 0) << sdx_errormsg();

  ASSERT_EQ(sdx_unmount(fs_), 0) << sdx_errormsg();
  fs_ = sdx_mount(img_.str().c_str());
  ASSERT_NE(fs_, nullptr) << sdx_errormsg();

  fd = sdx_open(fs_, "/file", O_RDONLY, 0);
  ASSERT_GE(fd, 0) << sdx_errormsg();
  std::vector<std::byte> back(data.size() + 50);
  ASSERT_EQ(sdx_pread(fs_, fd, back.data(), back.size(), 0), static_cast<ssize_t>(data.size()));
  back.resize(data.size());
  EXPECT_EQ(back, data);
  // Reading at EOF returns 0.
  char c;
  EXPECT_EQ(sdx_pread(fs_, fd, &c, 1, static_cast<off_t>(data.size())), 0);
  ASSERT_EQ(sdx_stat(fs_, "/file", &st), 0) << sdx_errormsg();
  EXPECT_EQ(st.size, data.size());
  EXPECT_EQ(sdx_close(fs_, fd), 0);
}

TEST_F(CApiTest, DescriptorsAreLowestFreeNumbers) {
  int a = sdx_open(fs_, "/a", O_CREAT | O_RDWR, 0644);
  int b = sdx_open(fs_, "/b", O_CREAT | O_RDWR, 0644);
  int c = sdx_open(fs_, "/c", O_CREAT | O_RDWR, 0644);
  ASSERT_EQ(a, 0) << sdx_errormsg();
  ASSERT_EQ(b, 1);
  ASSERT_EQ(c, 2);
  ASSERT_EQ(sdx_close(fs_, b), 0);
  EXPECT_EQ(sdx_open(fs_, "/a", O_RDONLY, 0), 1);  // reuses the freed number
  EXPECT_EQ(sdx_open(fs_, "/d", O_CREAT | O_RDWR, 0644), 3);
  for (int fd : {0, 1, 2, 3}) EXPECT_EQ(sdx_close(fs_, fd), 0) << fd;
}

TEST_F(CApiTest, BadDescriptorsGiveEbadf) {
  char buf[16] = {};
  struct sdx_stat st;
  for (int fd : {-1, 0, 7, 1 << 30}) {
    errno = 0;
    EXPECT_EQ(sdx_pread(fs_, fd, buf, sizeof buf, 0), -1);
    EXPECT_EQ(errno, EBADF) << fd;
    errno = 0;
    EXPECT_EQ(sdx_pwrite(fs_, fd, buf, sizeof buf, 0), -1);
    EXPECT_EQ(errno, EBADF);
    errno = 0;
    EXPECT_EQ(sdx_close(fs_, fd), -1);
    EXPECT_EQ(errno, EBADF);
    errno = 0;
    EXPECT_EQ(sdx_fsync(fs_, fd), -1);
    EXPECT_EQ(errno, EBADF);
    errno = 0;
    EXPECT_EQ(sdx_fdatasync(fs_, fd), -1);
    EXPECT_EQ(errno, EBADF);
    errno = 0;
    EXPECT_EQ(sdx_ftruncate(fs_, fd, 0), -1);
    EXPECT_EQ(errno, EBADF);
    errno = 0;
    EXPECT_EQ(sdx_ftruncate(fs_, fd, -1), -1);
    EXPECT_EQ(errno, EBADF);
    errno = 0;
    EXPECT_EQ(sdx_fallocate(fs_, fd, 0, 0, 4096), -1);
    EXPECT_EQ(errno, EBADF);
    errno = 0;
    EXPECT_EQ(sdx_fstat(fs_, fd, &st), -1);
    EXPECT_EQ(errno, EBADF);
    EXPECT_NE(std::string(sdx_errormsg()), "");
  }
  // A closed descriptor is bad too, and closing twice fails the second time.
  int fd = sdx_open(fs_, "/x", O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(sdx_close(fs_, fd), 0);
  errno = 0;
  EXPECT_EQ(sdx_close(fs_, fd), -1);
  EXPECT_EQ(errno, EBADF);
  errno = 0;
  EXPECT_EQ(sdx_pwrite(fs_, fd, buf, 1, 0), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST_F(CApiTest, ErrnoAndMessageOnFailures) {
  errno = 0;
  EXPECT_EQ(sdx_open(fs_, "/missing", O_RDONLY, 0), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_STRNE(sdx_errormsg(), "");

  struct sdx_stat st;
  errno = 0;
  EXPECT_EQ(sdx_stat(fs_, "/missing", &st), -1);
  EXPECT_EQ(errno, ENOENT);

  errno = 0;
  EXPECT_EQ(sdx_unlink(fs_, "/missing"), -1);
  EXPECT_EQ(errno, ENOENT);

  int fd = sdx_open(fs_, "/f", O_CREAT | O_EXCL | O_RDWR, 0644);
  ASSERT_GE(fd, 0) << sdx_errormsg();
  errno = 0;
  EXPECT_EQ(sdx_open(fs_, "/f", O_CREAT | O_EXCL | O_RDWR, 0644), -1);
  EXPECT_EQ(errno, EEXIST);
  std::string msg = sdx_errormsg();
  EXPECT_FALSE(msg.empty());

  ASSERT_EQ(sdx_mkdir(fs_, "/d", 0755), 0) << sdx_errormsg();
  errno = 0;
  EXPECT_EQ(sdx_mkdir(fs_, "/d", 0755), -1);
  EXPECT_EQ(errno, EEXIST);

  // The message stays until the thread's next failure; other threads have their own.
  EXPECT_EQ(sdx_close(fs_, fd), 0);
  EXPECT_STRNE(sdx_errormsg(), "");
  std::string other;
  std::thread([&] { other = sdx_errormsg(); }).join();
  EXPECT_EQ(other, "");

  // Argument checks of the C layer itself.
  fd = sdx_open(fs_, "/f", O_RDWR, 0);
  ASSERT_GE(fd, 0);
  errno = 0;
  EXPECT_EQ(sdx_pwrite(fs_, fd, "x", 1, -1), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(sdx_ftruncate(fs_, fd, -5), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(sdx_fallocate(fs_, fd, 0, 0, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(sdx_stat(fs_, nullptr, &st), -1);
  EXPECT_EQ(errno, EFAULT);
  errno = 0;
  EXPECT_EQ(sdx_sync(nullptr), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(sdx_close(fs_, fd), 0);

  errno = 0;
  EXPECT_EQ(sdx_mkfs("/dev/shm/never-created", 1 << 20, "floppy"), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_NE(std::string(sdx_errormsg()).find("floppy"), std::string::npos);
}

TEST_F(CApiTest, MountMissingImageFails) {
  TempPath missing("capi-missing");
  errno = 0;
  EXPECT_EQ(sdx_mount(missing.str().c_str()), nullptr);
  EXPECT_NE(errno, 0);
  EXPECT_STRNE(sdx_errormsg(), "");
}

TEST_F(CApiTest, UnmountWithOpenDescriptorIsBusy) {
  int fd = sdx_open(fs_, "/open", O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  errno = 0;
  EXPECT_EQ(sdx_unmount(fs_), -1);
  EXPECT_EQ(errno, EBUSY);
  // Still mounted and usable.
  EXPECT_EQ(sdx_pwrite(fs_, fd, "abc", 3, 0), 3);
  EXPECT_EQ(sdx_close(fs_, fd), 0);
}

struct Listing {
  std::set<std::string> names;
  std::set<std::string> dirs;
};

int collect(const char* name, uint64_t ino, int is_dir, void* ctx) {
  auto* l = static_cast<Listing*>(ctx);
  EXPECT_NE(ino, 0u);
  std::string n = name;
  if (n == "." || n == "..") return 0;
  l->names.insert(n);
  if (is_dir) l->dirs.insert(n);
  return 0;
}

int stop_at_first(const char*, uint64_t, int, void*) { return 42; }

TEST_F(CApiTest, DirectoriesRenameTruncateFallocateStatfs) {
  ASSERT_EQ(sdx_mkdir(fs_, "/dir", 0755), 0) << sdx_errormsg();
  int fd = sdx_open(fs_, "/dir/one", O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0) << sdx_errormsg();
  ASSERT_EQ(sdx_fallocate(fs_, fd, 0, 0, 8192), 0) << sdx_errormsg();
  struct sdx_stat st;
  ASSERT_EQ(sdx_fstat(fs_, fd, &st), 0);
  EXPECT_EQ(st.size, 8192u);
  EXPECT_GE(st.blocks, 2u);
  ASSERT_EQ(sdx_ftruncate(fs_, fd, 100), 0) << sdx_errormsg();
  ASSERT_EQ(sdx_fstat(fs_, fd, &st), 0);
  EXPECT_EQ(st.size, 100u);
  ASSERT_EQ(sdx_fsync(fs_, fd), 0) << sdx_errormsg();
  ASSERT_EQ(sdx_close(fs_, fd), 0);

  ASSERT_EQ(sdx_rename(fs_, "/dir/one", "/dir/two"), 0) << sdx_errormsg();
  ASSERT_EQ(sdx_mkdir(fs_, "/dir/sub", 0700), 0);
  Listing l;
  ASSERT_EQ(sdx_readdir(fs_, "/dir", collect, &l), 0) << sdx_errormsg();
  EXPECT_EQ(l.names, (std::set<std::string>{"two", "sub"}));
  EXPECT_EQ(l.dirs, (std::set<std::string>{"sub"}));
  EXPECT_EQ(sdx_readdir(fs_, "/dir", stop_at_first, nullptr), 42);

  errno = 0;
  EXPECT_EQ(sdx_rmdir(fs_, "/dir"), -1);
  EXPECT_EQ(errno, ENOTEMPTY);
  EXPECT_EQ(sdx_rmdir(fs_, "/dir/sub"), 0) << sdx_errormsg();
  EXPECT_EQ(sdx_unlink(fs_, "/dir/two"), 0) << sdx_errormsg();
  EXPECT_EQ(sdx_rmdir(fs_, "/dir"), 0) << sdx_errormsg();

  struct sdx_statfs sf;
  ASSERT_EQ(sdx_statfs(fs_, &sf), 0) << sdx_errormsg();
  EXPECT_EQ(sf.block_size, 4096u);
  EXPECT_GT(sf.total_blocks, 0u);
  EXPECT_LE(sf.free_blocks, sf.total_blocks);
  EXPECT_GT(sf.free_inodes, 0u);
  EXPECT_EQ(sdx_sync(fs_), 0) << sdx_errormsg();
}

TEST_F(CApiTest, AppendIgnoresOffset) {
  int fd = sdx_open(fs_, "/log", O_CREAT | O_WRONLY | O_APPEND, 0644);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(sdx_pwrite(fs_, fd, "abcd", 4, 0), 4);
  EXPECT_EQ(sdx_pwrite(fs_, fd, "efgh", 4, 0), 4);
  EXPECT_EQ(sdx_fdatasync(fs_, fd), 0);
  struct sdx_stat st;
  ASSERT_EQ(sdx_fstat(fs_, fd, &st), 0);
  EXPECT_EQ(st.size, 8u);
  EXPECT_EQ(sdx_close(fs_, fd), 0);
}

TEST_F(CApiTest, ConcurrentOpenWriteClose) {
  constexpr int kThreads = 4, kFiles = 25;
  std::vector<std::thread> ts;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kFiles; ++i) {
        std::string p = "/t" + std::to_string(t) + "-" + std::to_string(i);
        int fd = sdx_open(fs_, p.c_str(), O_CREAT | O_RDWR, 0644);
        if (fd < 0) { ++failures[t]; continue; }
        if (sdx_pwrite(fs_, fd, p.data(), p.size(), 0) != static_cast<ssize_t>(p.size())) ++failures[t];
        if (sdx_fsync(fs_, fd) != 0) ++failures[t];
        if (sdx_close(fs_, fd) != 0) ++failures[t];
      }
    });
  }
  for (auto& th : ts) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
  Listing l;
  ASSERT_EQ(sdx_readdir(fs_, "/", collect, &l), 0);
  EXPECT_EQ(l.names.size(), static_cast<size_t>(kThreads * kFiles));
}

}  // namespace

namespace {

TEST_F(CApiTest, MmapStorePersistMunmap) {
  int fd = sdx_open(fs_, "/m", O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0) << sdx_errormsg();
  ASSERT_EQ(sdx_ftruncate(fs_, fd, 64 << 10), 0) << sdx_errormsg();
  void* p = sdx_mmap(fs_, fd, nullptr, 64 << 10, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC, 0);
  ASSERT_NE(p, MAP_FAILED) << sdx_errormsg();
  EXPECT_EQ(sdx_granularity(p), SDX_GRANULARITY_CACHE_LINE);
  std::memset(p, 0x5c, 8192);
  EXPECT_EQ(sdx_persist(p, 8192), 0) << sdx_errormsg();
  const char msg[] = "hello";
  EXPECT_EQ(sdx_memcpy_persist(static_cast<char*>(p) + 9000, msg, sizeof msg), static_cast<char*>(p) + 9000);
  sdx_flush(p, 64);
  sdx_drain();
  struct sdx_fault_stats fst;
  ASSERT_EQ(sdx_fault_stats(fs_, &fst), 0);
  uint64_t faults = 0;
  for (int k = 0; k < SDX_FAULT_KINDS; ++k) faults += fst.count[k];
  EXPECT_EQ(faults, 1u);  // the first store prepared the whole (empty) file
  EXPECT_EQ(sdx_msync(p, 4096, MS_SYNC), 0) << sdx_errormsg();
  EXPECT_EQ(sdx_munmap(static_cast<char*>(p) + 4096, 4096), -1);  // part of a mapping
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(sdx_munmap(p, 64 << 10), 0) << sdx_errormsg();
  EXPECT_EQ(sdx_munmap(p, 64 << 10), -1);  // no longer a syncdax mapping
  char buf[8];
  ASSERT_EQ(sdx_pread(fs_, fd, buf, sizeof buf, 9000), static_cast<ssize_t>(sizeof buf));
  EXPECT_STREQ(buf, "hello");
  ASSERT_EQ(sdx_close(fs_, fd), 0);
}

TEST_F(CApiTest, MmapErrorsAreMmapErrno) {
  int fd = sdx_open(fs_, "/m", O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(sdx_ftruncate(fs_, fd, 4096), 0);
  errno = 0;
  EXPECT_EQ(sdx_mmap(fs_, fd, nullptr, 4096, PROT_READ, 0, 0), MAP_FAILED);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(sdx_mmap(fs_, fd, nullptr, 4096, PROT_READ, MAP_SHARED_VALIDATE | 0x40000000, 0), MAP_FAILED);
  EXPECT_EQ(errno, EOPNOTSUPP);
  EXPECT_NE(std::strlen(sdx_errormsg()), 0u);
  EXPECT_EQ(sdx_mmap(fs_, fd, nullptr, 4096, PROT_READ, MAP_SHARED, 1), MAP_FAILED);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(sdx_mmap(fs_, 99, nullptr, 4096, PROT_READ, MAP_SHARED, 0), MAP_FAILED);
  EXPECT_EQ(errno, EBADF);
  int ro = sdx_open(fs_, "/m", O_RDONLY, 0);
  EXPECT_EQ(sdx_mmap(fs_, ro, nullptr, 4096, PROT_WRITE, MAP_SHARED, 0), MAP_FAILED);
  EXPECT_EQ(errno, EACCES);
  int x = 0;
  EXPECT_EQ(sdx_persist(&x, sizeof x), -1);  // not a syncdax mapping
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(sdx_granularity(&x), SDX_GRANULARITY_PAGE);
  // A live mapping keeps the file system busy, as open descriptors do.
  void* p = sdx_mmap(fs_, fd, nullptr, 4096, PROT_READ, MAP_SHARED, 0);
  ASSERT_NE(p, MAP_FAILED);
  ASSERT_EQ(sdx_close(fs_, fd), 0);
  ASSERT_EQ(sdx_close(fs_, ro), 0);
  EXPECT_EQ(sdx_unmount(fs_), -1);
  EXPECT_EQ(errno, EBUSY);
  EXPECT_EQ(sdx_munmap(p, 4096), 0);
}

}  // namespace

// ---- reflink, dedupe, defragmentation ----

namespace {

uint64_t free_blocks(sdx_fs* fs) {
  struct sdx_statfs sf;
  EXPECT_EQ(sdx_statfs(fs, &sf), 0) << sdx_errormsg();
  return sf.free_blocks;
}

std::vector<sdx_extent> extents_of(sdx_fs* fs, int fd) {
  size_t n = 0;
  EXPECT_EQ(sdx_extents(fs, fd, nullptr, 0, &n), 0) << sdx_errormsg();
  std::vector<sdx_extent> v(n);
  size_t again = 0;
  EXPECT_EQ(sdx_extents(fs, fd, v.data(), v.size(), &again), 0) << sdx_errormsg();
  EXPECT_EQ(again, n);
  return v;
}

// How many bytes of the listed extents carry `flag`.
uint64_t bytes_flagged(const std::vector<sdx_extent>& v, uint32_t flag) {
  uint64_t n = 0;
  for (const auto& e : v) n += (e.flags & flag) ? e.length : 0;
  return n;
}

std::vector<std::byte> read_fd(sdx_fs* fs, int fd, size_t len, off_t off = 0) {
  std::vector<std::byte> buf(len);
  const ssize_t n = sdx_pread(fs, fd, buf.data(), len, off);
  EXPECT_GE(n, 0) << sdx_errormsg();
  buf.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return buf;
}

constexpr size_t kCloneBytes = 16 * 4096;

class CApiRemapTest : public CApiTest {
 protected:
  // A committed file of kCloneBytes pattern(seed) bytes, open read-write.
  int Written(const char* path, uint64_t seed) {
    int fd = sdx_open(fs_, path, O_CREAT | O_RDWR, 0644);
    EXPECT_GE(fd, 0) << sdx_errormsg();
    auto data = sdx::test::pattern(seed, 0, kCloneBytes);
    EXPECT_EQ(sdx_pwrite(fs_, fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
    EXPECT_EQ(sdx_fsync(fs_, fd), 0) << sdx_errormsg();
    return fd;
  }
};

TEST_F(CApiRemapTest, CloneSharesBlocksUntilAWriteCopiesThem) {
  int a = Written("/a", 1);
  int b = sdx_open(fs_, "/b", O_CREAT | O_RDWR, 0644);
  ASSERT_GE(b, 0) << sdx_errormsg();
  const uint64_t before = free_blocks(fs_);
  ASSERT_EQ(sdx_clone(fs_, a, b), 0) << sdx_errormsg();
  ASSERT_EQ(sdx_fsync(fs_, b), 0) << sdx_errormsg();
  const auto data = sdx::test::pattern(1, 0, kCloneBytes);
  EXPECT_EQ(read_fd(fs_, b, kCloneBytes + 1), data);
  EXPECT_EQ(read_fd(fs_, a, kCloneBytes), data);
  EXPECT_EQ(free_blocks(fs_), before) << "a clone must share, not copy";
  EXPECT_EQ(bytes_flagged(extents_of(fs_, a), SDX_EXTENT_SHARED), kCloneBytes);
  EXPECT_EQ(bytes_flagged(extents_of(fs_, b), SDX_EXTENT_SHARED), kCloneBytes);

  // One block written in the clone: copied, so one more block in use, and only b sees it.
  ASSERT_EQ(sdx_pwrite(fs_, b, "new", 3, 4096), 3) << sdx_errormsg();
  ASSERT_EQ(sdx_fsync(fs_, b), 0);
  EXPECT_LT(free_blocks(fs_), before);
  EXPECT_EQ(read_fd(fs_, a, kCloneBytes), data);
  auto b_now = read_fd(fs_, b, kCloneBytes);
  EXPECT_EQ(std::memcmp(b_now.data() + 4096, "new", 3), 0);
  EXPECT_EQ(bytes_flagged(extents_of(fs_, b), SDX_EXTENT_SHARED), kCloneBytes - 4096);

  // Overwriting the whole range leaves nothing shared in either file.
  auto other = sdx::test::pattern(2, 0, kCloneBytes);
  ASSERT_EQ(sdx_pwrite(fs_, b, other.data(), other.size(), 0), static_cast<ssize_t>(other.size()));
  ASSERT_EQ(sdx_fsync(fs_, b), 0);
  EXPECT_EQ(bytes_flagged(extents_of(fs_, b), SDX_EXTENT_SHARED), 0u);
  EXPECT_EQ(bytes_flagged(extents_of(fs_, a), SDX_EXTENT_SHARED), 0u);
  EXPECT_EQ(read_fd(fs_, a, kCloneBytes), data);
  EXPECT_EQ(sdx_close(fs_, a), 0);
  EXPECT_EQ(sdx_close(fs_, b), 0);
}

TEST_F(CApiRemapTest, CloneRangeAtAnOffsetExtendsTheDestination) {
  int a = Written("/a", 3);
  int b = Written("/b", 4);
  ASSERT_EQ(sdx_clone_range(fs_, a, 4096, b, kCloneBytes, 2 * 4096), 0) << sdx_errormsg();
  struct sdx_stat st;
  ASSERT_EQ(sdx_fstat(fs_, b, &st), 0);
  EXPECT_EQ(st.size, kCloneBytes + 2 * 4096);
  EXPECT_EQ(read_fd(fs_, b, 2 * 4096, kCloneBytes), sdx::test::pattern(3, 4096, 2 * 4096));
  // The destination's own bytes before the cloned range are untouched.
  EXPECT_EQ(read_fd(fs_, b, kCloneBytes), sdx::test::pattern(4, 0, kCloneBytes));
  EXPECT_EQ(sdx_close(fs_, a), 0);
  EXPECT_EQ(sdx_close(fs_, b), 0);
}

TEST_F(CApiRemapTest, DedupeSharesOnlyEqualContents) {
  int a = Written("/a", 5);
  int same = Written("/same", 5);
  int differ = Written("/differ", 6);
  EXPECT_EQ(sdx_dedupe_range(fs_, a, 0, differ, 0, kCloneBytes), SDX_DEDUPE_RANGE_DIFFERS)
      << sdx_errormsg();
  EXPECT_EQ(SDX_DEDUPE_RANGE_DIFFERS, 1);  // Linux's FILE_DEDUPE_RANGE_DIFFERS
  EXPECT_EQ(bytes_flagged(extents_of(fs_, differ), SDX_EXTENT_SHARED), 0u);
  EXPECT_EQ(read_fd(fs_, differ, kCloneBytes), sdx::test::pattern(6, 0, kCloneBytes));

  const uint64_t before = free_blocks(fs_);
  EXPECT_EQ(sdx_dedupe_range(fs_, a, 0, same, 0, kCloneBytes), 0) << sdx_errormsg();
  ASSERT_EQ(sdx_fsync(fs_, same), 0);
  // same's own blocks were released.
  EXPECT_EQ(free_blocks(fs_), before + kCloneBytes / 4096);
  EXPECT_EQ(bytes_flagged(extents_of(fs_, same), SDX_EXTENT_SHARED), kCloneBytes);
  EXPECT_EQ(read_fd(fs_, same, kCloneBytes), sdx::test::pattern(5, 0, kCloneBytes));
  for (int fd : {a, same, differ}) EXPECT_EQ(sdx_close(fs_, fd), 0);
}

TEST_F(CApiRemapTest, RemapErrors) {
  int a = Written("/a", 7);
  int b = sdx_open(fs_, "/b", O_CREAT | O_RDWR, 0644);
  ASSERT_GE(b, 0);
  size_t n = 0;
  for (int bad : {-1, 42}) {
    errno = 0;
    EXPECT_EQ(sdx_clone_range(fs_, bad, 0, b, 0, 4096), -1);
    EXPECT_EQ(errno, EBADF);
    errno = 0;
    EXPECT_EQ(sdx_clone_range(fs_, a, 0, bad, 0, 4096), -1);
    EXPECT_EQ(errno, EBADF);
    errno = 0;
    EXPECT_EQ(sdx_clone(fs_, a, bad), -1);
    EXPECT_EQ(errno, EBADF);
    errno = 0;
    // A bad descriptor wins over a bad argument, as in Linux.
    EXPECT_EQ(sdx_dedupe_range(fs_, bad, -1, b, 0, 4096), -1);
    EXPECT_EQ(errno, EBADF);
    errno = 0;
    EXPECT_EQ(sdx_defragment(fs_, bad, nullptr), -1);
    EXPECT_EQ(errno, EBADF);
    errno = 0;
    EXPECT_EQ(sdx_extents(fs_, bad, nullptr, 0, &n), -1);
    EXPECT_EQ(errno, EBADF);
  }
  struct Args {
    off_t src_off, dst_off, len;
  };
  for (Args x : {Args{-4096, 0, 4096}, Args{0, -4096, 4096}, Args{0, 0, -1}, Args{100, 0, 4096},
                 Args{0, 100, 4096}, Args{0, 0, 100}, Args{kCloneBytes + 4096, 0, 4096}}) {
    errno = 0;
    EXPECT_EQ(sdx_clone_range(fs_, a, x.src_off, b, x.dst_off, x.len), -1)
        << x.src_off << " " << x.dst_off << " " << x.len;
    EXPECT_EQ(errno, EINVAL) << x.src_off << " " << x.dst_off << " " << x.len;
    errno = 0;
    EXPECT_EQ(sdx_dedupe_range(fs_, a, x.src_off, b, x.dst_off, x.len), -1);
    EXPECT_EQ(errno, EINVAL);
  }
  // Overlapping ranges of one file.
  errno = 0;
  EXPECT_EQ(sdx_clone_range(fs_, a, 0, a, 4096, 2 * 4096), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_STRNE(sdx_errormsg(), "");

  int dir = sdx_open(fs_, "/", O_RDONLY, 0);
  ASSERT_GE(dir, 0) << sdx_errormsg();
  errno = 0;
  EXPECT_EQ(sdx_clone(fs_, dir, b), -1);
  EXPECT_EQ(errno, EISDIR);

  // The destination must be open for writing, without O_APPEND.
  int ro = sdx_open(fs_, "/b", O_RDONLY, 0);
  int app = sdx_open(fs_, "/b", O_WRONLY | O_APPEND, 0);
  ASSERT_GE(ro, 0);
  ASSERT_GE(app, 0);
  for (int dst : {ro, app}) {
    errno = 0;
    EXPECT_EQ(sdx_clone(fs_, a, dst), -1);
    EXPECT_EQ(errno, EBADF);
  }
  errno = 0;
  EXPECT_EQ(sdx_defragment(fs_, ro, nullptr), -1);
  EXPECT_EQ(errno, EBADF);
  errno = 0;
  EXPECT_EQ(sdx_extents(fs_, a, nullptr, 0, nullptr), -1);
  EXPECT_EQ(errno, EFAULT);
  errno = 0;
  EXPECT_EQ(sdx_extents(fs_, a, nullptr, 1, &n), -1);
  EXPECT_EQ(errno, EFAULT);
  // Nothing above changed b.
  struct sdx_stat st;
  ASSERT_EQ(sdx_fstat(fs_, b, &st), 0);
  EXPECT_EQ(st.size, 0u);
  for (int fd : {a, b, dir, ro, app}) EXPECT_EQ(sdx_close(fs_, fd), 0);
}

TEST_F(CApiRemapTest, ExtentsFillsAtMostMaxAndCountsAll) {
  int fd = sdx_open(fs_, "/holes", O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  // Holes between them keep the three extents apart whatever the allocator does.
  ASSERT_EQ(sdx_pwrite(fs_, fd, "x", 1, 0), 1);
  ASSERT_EQ(sdx_fallocate(fs_, fd, FALLOC_FL_ZERO_RANGE, 8 * 4096, 4096), 0) << sdx_errormsg();
  ASSERT_EQ(sdx_pwrite(fs_, fd, "y", 1, 16 * 4096), 1);
  auto all = extents_of(fs_, fd);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].offset, 0u);
  EXPECT_EQ(all[0].flags, 0u);
  EXPECT_EQ(all[1].offset, 8u * 4096);
  EXPECT_EQ(all[1].length, 4096u);
  EXPECT_EQ(all[1].flags, static_cast<uint32_t>(SDX_EXTENT_UNWRITTEN));
  EXPECT_EQ(all[2].offset, 16u * 4096);
  EXPECT_NE(all[0].dev_offset, all[2].dev_offset);
  sdx_extent one[2] = {};
  one[1].offset = 12345;
  size_t n = 0;
  ASSERT_EQ(sdx_extents(fs_, fd, one, 1, &n), 0) << sdx_errormsg();
  EXPECT_EQ(n, 3u);
  EXPECT_EQ(one[0].dev_offset, all[0].dev_offset);
  EXPECT_EQ(one[1].offset, 12345u);  // beyond max: untouched
  EXPECT_EQ(sdx_close(fs_, fd), 0);
}

TEST_F(CApiRemapTest, DefragmentJoinsInterleavedAppends) {
  int a = sdx_open(fs_, "/a", O_CREAT | O_RDWR, 0644);
  int b = sdx_open(fs_, "/b", O_CREAT | O_RDWR, 0644);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  constexpr int kRounds = 64;
  for (int i = 0; i < kRounds; ++i) {
    const off_t off = static_cast<off_t>(i) * 4096;
    auto pa = sdx::test::pattern(8, static_cast<uint64_t>(off), 4096);
    auto pb = sdx::test::pattern(9, static_cast<uint64_t>(off), 4096);
    ASSERT_EQ(sdx_pwrite(fs_, a, pa.data(), pa.size(), off), 4096) << sdx_errormsg();
    ASSERT_EQ(sdx_pwrite(fs_, b, pb.data(), pb.size(), off), 4096) << sdx_errormsg();
  }
  ASSERT_EQ(sdx_fsync(fs_, a), 0);
  ASSERT_EQ(sdx_fsync(fs_, b), 0);
  struct sdx_stat st;
  ASSERT_EQ(sdx_fstat(fs_, a, &st), 0);
  const uint64_t fragmented = st.extents;
  ASSERT_GT(fragmented, kRounds / 2) << "the appends did not interleave on the medium";
  ASSERT_EQ(extents_of(fs_, a).size(), fragmented);

  struct sdx_defrag_stats ds;
  ASSERT_EQ(sdx_defragment(fs_, a, &ds), 0) << sdx_errormsg();
  EXPECT_EQ(ds.extents_before, fragmented);
  EXPECT_LT(ds.extents_after, fragmented);
  EXPECT_LE(ds.extents_after, 2u);
  EXPECT_GT(ds.blocks_moved, 0u);
  EXPECT_LE(ds.blocks_moved, static_cast<uint64_t>(kRounds));
  ASSERT_EQ(sdx_fstat(fs_, a, &st), 0);
  EXPECT_EQ(st.extents, ds.extents_after);
  EXPECT_EQ(read_fd(fs_, a, kRounds * 4096 + 1), sdx::test::pattern(8, 0, kRounds * 4096));
  EXPECT_EQ(read_fd(fs_, b, kRounds * 4096 + 1), sdx::test::pattern(9, 0, kRounds * 4096));
  // A contiguous file has nothing to move; the stats may be omitted.
  ASSERT_EQ(sdx_defragment(fs_, a, nullptr), 0) << sdx_errormsg();
  ASSERT_EQ(sdx_fstat(fs_, a, &st), 0);
  EXPECT_EQ(st.extents, ds.extents_after);
  EXPECT_EQ(sdx_close(fs_, a), 0);
  EXPECT_EQ(sdx_close(fs_, b), 0);

  // What defragment moved is committed: it survives a remount.
  ASSERT_EQ(sdx_unmount(fs_), 0) << sdx_errormsg();
  fs_ = sdx_mount(img_.str().c_str());
  ASSERT_NE(fs_, nullptr) << sdx_errormsg();
  a = sdx_open(fs_, "/a", O_RDONLY, 0);
  ASSERT_GE(a, 0);
  ASSERT_EQ(sdx_fstat(fs_, a, &st), 0);
  EXPECT_EQ(st.extents, ds.extents_after);
  EXPECT_EQ(read_fd(fs_, a, kRounds * 4096), sdx::test::pattern(8, 0, kRounds * 4096));
  EXPECT_EQ(sdx_close(fs_, a), 0);
}

}  // namespace
