// crash_api_test: FileSystem::crash, the simulated power failure the CLI's `io crash`
// and the mmap tests rely on. With survive_prob 0 only what was durable before the call
// may survive, so these checks tell a crash from an unmount (which would commit).
#include <fcntl.h>
#include <linux/falloc.h>

#include "test_util.h"

namespace sdx {
namespace {

using test::cbytes;
using test::pattern;
using test::read_file;
using test::write_all;

constexpr uint64_t kDevSize = 8ull << 20;
constexpr FileSystem::CrashOptions kOnlyDurable{.survive_prob = 0.0, .torn = false, .seed = 1};

class CrashApiTest : public testing::Test {
 protected:
  void SetUp() override {
    auto dev = test::formatted_sim(kDevSize);
    ASSERT_NE(dev, nullptr);
    SDX_ASSERT_OK_AND_ASSIGN(fs_, FileSystem::mount(std::move(dev),
                                                    MountOptions{.commit_interval_ms = 0}));
  }
  FileSystem& fs() { return *fs_; }
  std::unique_ptr<FileSystem> fs_;
};

TEST_F(CrashApiTest, FdatasyncedDataSurvives) {
  {
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/kept", O_CREAT | O_RDWR));
    SDX_ASSERT_OK(write_all(f, cbytes(pattern(7, 0, 3 * 4096 + 100)), 0));
    SDX_ASSERT_OK(f.fdatasync());
    // fdatasync commits the file's size and blocks; its name is durable because the
    // journal commits in order and the create came first.
  }
  const uint64_t failures = device::as_sim(&fs().device())->power_failures();
  SDX_ASSERT_OK(fs().crash(kOnlyDurable));
  EXPECT_EQ(device::as_sim(&fs().device())->power_failures(), failures + 1);

  SDX_ASSERT_OK_AND_ASSIGN(auto data, read_file(fs(), "/kept"));
  EXPECT_EQ(data, pattern(7, 0, 3 * 4096 + 100));
  SDX_ASSERT_OK_AND_ASSIGN(Stat st, fs().stat("/kept"));
  EXPECT_EQ(st.blocks, 4u);
}

TEST_F(CrashApiTest, UnsyncedChangesAreLost) {
  {
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/synced", O_CREAT | O_RDWR));
    SDX_ASSERT_OK(f.fsync());
    // Extends the file: the new size and blocks are metadata nobody commits.
    SDX_ASSERT_OK(write_all(f, cbytes(pattern(3, 0, 8192)), 0));
    SDX_ASSERT_OK_AND_ASSIGN(File g, fs().open("/never-synced", O_CREAT | O_RDWR));
    SDX_ASSERT_OK(write_all(g, cbytes(pattern(4, 0, 4096)), 0));
  }
  SDX_ASSERT_OK_AND_ASSIGN(StatFs before, fs().statfs());
  SDX_ASSERT_OK(fs().crash(kOnlyDurable));

  SDX_ASSERT_OK_AND_ASSIGN(Stat st, fs().stat("/synced"));
  EXPECT_EQ(st.size, 0u);
  EXPECT_EQ(st.blocks, 0u);
  SDX_EXPECT_ERRNO(fs().stat("/never-synced"), ENOENT);
  // The blocks the lost writes had allocated are free again.
  SDX_ASSERT_OK_AND_ASSIGN(StatFs after, fs().statfs());
  EXPECT_GT(after.free_blocks, before.free_blocks);
}

TEST_F(CrashApiTest, RecoveredFileSystemWorksAndStaysConsistent) {
  {
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/a", O_CREAT | O_RDWR));
    SDX_ASSERT_OK(f.fallocate(0, 0, 64 * 1024));
    SDX_ASSERT_OK(f.fsync());
  }
  SDX_ASSERT_OK(fs().crash({.survive_prob = 0.5, .torn = true, .seed = 9}));
  {
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/a", O_RDWR));
    SDX_ASSERT_OK(write_all(f, cbytes(pattern(5, 0, 10000)), 100));
    SDX_ASSERT_OK(f.fdatasync());
    SDX_ASSERT_OK_AND_ASSIGN(File b, fs().open("/b", O_CREAT | O_RDWR));
    SDX_ASSERT_OK(b.fsync());
  }
  // A second crash of the recovered file system, then a clean unmount.
  SDX_ASSERT_OK(fs().crash(kOnlyDurable));
  SDX_ASSERT_OK_AND_ASSIGN(auto data, read_file(fs(), "/a"));
  ASSERT_EQ(data.size(), 64u * 1024);
  EXPECT_TRUE(std::equal(data.begin() + 100, data.begin() + 10100, pattern(5, 0, 10000).begin()));
  SDX_EXPECT_OK(fs().stat("/b"));
  SDX_ASSERT_OK(fs().unmount());
  auto image = test::durable_image(fs());
  auto copy = device::make_sim(image);
  ASSERT_NE(copy, nullptr);
  FsckReport r = FileSystem::fsck(*copy);
  EXPECT_TRUE(r.clean()) << (r.problems.empty() ? "unusable" : r.problems.front());
}

TEST_F(CrashApiTest, BusyWhileAFileIsOpen) {
  SDX_ASSERT_OK_AND_ASSIGN(File f, fs().open("/open", O_CREAT | O_RDWR));
  SDX_ASSERT_OK(write_all(f, cbytes(pattern(2, 0, 4096)), 0));
  const uint64_t failures = device::as_sim(&fs().device())->power_failures();
  SDX_EXPECT_ERRNO(fs().crash(kOnlyDurable), EBUSY);
  EXPECT_EQ(device::as_sim(&fs().device())->power_failures(), failures);
  // Nothing happened: the open file still works and the data is still there.
  SDX_ASSERT_OK(write_all(f, cbytes(pattern(2, 4096, 4096)), 4096));
  SDX_ASSERT_OK(f.close());
  SDX_ASSERT_OK_AND_ASSIGN(auto data, read_file(fs(), "/open"));
  EXPECT_EQ(data, pattern(2, 0, 8192));
}

TEST_F(CrashApiTest, ProbabilityOutOfRangeIsInvalid) {
  SDX_EXPECT_ERRNO(fs().crash({.survive_prob = 1.5}), EINVAL);
  SDX_EXPECT_ERRNO(fs().crash({.survive_prob = -0.1}), EINVAL);
  SDX_EXPECT_OK(fs().stat("/"));
}

TEST(CrashApiFileDevice, NotSupported) {
  test::TempPath img("crash_api");
  SDX_ASSERT_OK(FileSystem::mkfs(img, {.size = kDevSize, .kind = DeviceKind::kFile}));
  SDX_ASSERT_OK_AND_ASSIGN(auto fs, FileSystem::mount(img, MountOptions{.commit_interval_ms = 0}));
  {
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs->open("/x", O_CREAT | O_RDWR));
  }
  SDX_EXPECT_ERRNO(fs->crash(kOnlyDurable), EOPNOTSUPP);
  // Still mounted, and the unsynced create is still visible: nothing was dropped.
  SDX_EXPECT_OK(fs->stat("/x"));
  SDX_EXPECT_OK(fs->unmount());
}

}  // namespace
}  // namespace sdx
