// The C API (syncdax/syncdax.h): a full round trip through POSIX-style calls, descriptor
// numbering, and errno + sdx_errormsg on failures.
#include "syncdax/syncdax.h"

#include <fcntl.h>
#include <gtest/gtest.h>
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
