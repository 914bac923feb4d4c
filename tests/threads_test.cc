// threads_test: several threads creating, writing, fsyncing, renaming and unlinking files
// in one shared directory at once, plus one shared file written in disjoint stripes, while
// an observer thread lists and stats the directory. Afterwards (and after a remount)
// every byte must be where the threads put it. Runs with the background committer off
// and on (5 ms). Built under TSan by scripts/test; sized to take a few seconds there.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>

#include <atomic>
#include <barrier>
#include <set>
#include <thread>

#include "test_util.h"

namespace sdx {
namespace {

using test::cbytes;
using test::pattern;

constexpr int kThreads = 4;
constexpr int kFilesPerThread = 12;
constexpr uint64_t kStripe = 4096 + 123;  // stripes straddle block boundaries
constexpr int kStripesPerThread = 16;

std::string file_name(int t, int i, bool done) {
  return "/shared/t" + std::to_string(t) + "-" + std::to_string(i) + (done ? ".done" : ".tmp");
}
uint64_t file_seed(int t, int i) { return 1000 * (t + 1) + i; }
size_t file_len(int t, int i) { return 1000 + 3001 * ((t * 7 + i) % 9); }

// Stripe s of the shared file belongs to thread s % kThreads.
uint64_t stripe_seed(int s) { return 777 + s; }

enum class DevKind { kFile, kSim };
struct Param {
  uint32_t commit_ms;
  DevKind dev;
};
std::string param_name(const testing::TestParamInfo<Param>& i) {
  return std::string(i.param.dev == DevKind::kFile ? "File" : "Sim") + "Commit" +
         std::to_string(i.param.commit_ms) + "ms";
}

class ThreadsTest : public testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    opts_ = MountOptions{.commit_interval_ms = GetParam().commit_ms};
    if (GetParam().dev == DevKind::kFile) {
      SDX_ASSERT_OK(FileSystem::mkfs(path_.str(), {.size = 32 << 20}));
      SDX_ASSERT_OK_AND_ASSIGN(fs_, FileSystem::mount(path_.str(), opts_));
    } else {
      auto dev = test::formatted_sim(32 << 20);
      ASSERT_TRUE(dev);
      SDX_ASSERT_OK_AND_ASSIGN(fs_, FileSystem::mount(std::move(dev), opts_));
    }
  }
  Status remount() {
    SDX_TRY(fs_->unmount());
    if (GetParam().dev == DevKind::kFile) {
      fs_.reset();
      SDX_ASSIGN(fs_, FileSystem::mount(path_.str(), opts_));
    } else {
      auto img = test::durable_image(*fs_);
      fs_.reset();
      SDX_ASSIGN(fs_, FileSystem::mount(device::make_sim(img), opts_));
    }
    return ok();
  }
  // After unmount: check what is on the medium.
  FsckReport fsck() {
    if (GetParam().dev == DevKind::kFile) {
      fs_.reset();  // releases the device lock
      return FileSystem::fsck(path_.str());
    }
    auto dev = device::make_sim(test::durable_image(*fs_));
    return FileSystem::fsck(*dev);
  }

  test::TempPath path_{"threads_test"};
  MountOptions opts_;
  std::unique_ptr<FileSystem> fs_;
};

// What one worker does; returns the first error (never asserts off the main thread).
Status worker(FileSystem& fs, int t, File& shared, std::barrier<>& start) {
  start.arrive_and_wait();
  for (int i = 0; i < kFilesPerThread; ++i) {
    const std::string tmp = file_name(t, i, false), done = file_name(t, i, true);
    {
      SDX_ASSIGN(File f, fs.open(tmp, O_CREAT | O_EXCL | O_RDWR));
      const size_t len = file_len(t, i);
      // Written in two unequal pieces, out of order.
      auto all = pattern(file_seed(t, i), 0, len);
      size_t cut = len / 3;
      SDX_TRY(test::write_all(f, std::span(all).subspan(cut), cut));
      SDX_TRY(test::write_all(f, std::span(all).first(cut), 0));
      SDX_TRY(i % 2 ? f.fdatasync() : f.fsync());
      SDX_ASSIGN(auto back, test::read_range(f, 0, len + 10));
      if (back != all) return fail(EIO, tmp + ": read back differs before rename");
    }
    SDX_TRY(fs.rename(tmp, done));
    // Every third file gets replaced by a rename over it, every fourth is unlinked
    // while still open and then dropped.
    if (i % 3 == 2) {
      const std::string again = "/shared/t" + std::to_string(t) + "-again";
      {
        SDX_ASSIGN(File g, fs.open(again, O_CREAT | O_TRUNC | O_RDWR));
        SDX_TRY(test::write_all(g, cbytes(pattern(file_seed(t, i), 0, file_len(t, i))), 0));
        SDX_TRY(g.fsync());
      }
      SDX_TRY(fs.rename(again, done));  // same contents, new inode
    }
    if (i % 4 == 3) {
      const std::string doomed = "/shared/t" + std::to_string(t) + "-doomed";
      SDX_ASSIGN(File d, fs.open(doomed, O_CREAT | O_RDWR));
      SDX_TRY(test::write_all(d, cbytes(pattern(5, 0, 9000)), 0));
      SDX_TRY(fs.unlink(doomed));
      SDX_TRY(test::write_all(d, cbytes(pattern(5, 9000, 3000)), 9000));
      SDX_ASSIGN(auto back, test::read_range(d, 0, 12000));
      if (back != pattern(5, 0, 12000)) return fail(EIO, "unlinked open file reads back wrong");
      SDX_TRY(d.fdatasync());
    }
    // This thread's stripes of the shared file, a few at a time.
    for (int j = i % 4; j < kStripesPerThread; j += 4) {
      const int s = t + kThreads * j;
      SDX_TRY(test::write_all(shared, cbytes(pattern(stripe_seed(s), s * kStripe, kStripe)), s * kStripe));
    }
    if (i % 5 == 4) SDX_TRY(shared.fdatasync());
    // Private directories come and go.
    const std::string dir = "/shared/dir" + std::to_string(t);
    SDX_TRY(fs.mkdir(dir));
    { SDX_ASSIGN(File x, fs.open(dir + "/x", O_CREAT | O_RDWR)); }
    SDX_TRY(fs.unlink(dir + "/x"));
    SDX_TRY(fs.rmdir(dir));
    if (i % 6 == 5) SDX_TRY(fs.sync());
  }
  return ok();
}

// Lists and stats the shared directory until told to stop; checks what it can.
Status observer(FileSystem& fs, const std::atomic<bool>& stop, std::barrier<>& start, int& rounds) {
  start.arrive_and_wait();
  while (!stop.load(std::memory_order_acquire)) {
    ++rounds;
    SDX_ASSIGN(auto ents, test::list_dir(fs, "/shared"));
    std::set<std::string> seen;
    for (auto& e : ents) {
      if (!seen.insert(e.name).second) return fail(EIO, "readdir listed " + e.name + " twice");
      auto st = fs.stat("/shared/" + e.name);
      if (!st) {
        if (st.error().code != ENOENT) return fail(st.error());
        continue;  // renamed or removed since the listing: fine
      }
      if (e.name.ends_with(".done")) {
        // A .done name always holds a complete file (it is renamed in whole).
        int t = 0, i = 0;
        if (std::sscanf(e.name.c_str(), "t%d-%d.done", &t, &i) != 2)
          return fail(EIO, "unexpected name " + e.name);
        if (st->size != file_len(t, i))
          return fail(EIO, e.name + " has size " + std::to_string(st->size) + " expected " +
                               std::to_string(file_len(t, i)));
      }
    }
    SDX_TRY(fs.statfs());
  }
  return ok();
}

Status verify(FileSystem& fs) {
  SDX_ASSIGN(auto ents, test::list_dir(fs, "/shared"));
  std::set<std::string> names;
  for (auto& e : ents) names.insert(e.name);
  std::set<std::string> want{"common"};
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kFilesPerThread; ++i) want.insert(file_name(t, i, true).substr(8));
  if (names != want) {
    std::string got;
    for (auto& n : names) got += " " + n;
    return fail(EIO, "directory holds:" + got);
  }
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kFilesPerThread; ++i) {
      SDX_ASSIGN(auto d, test::read_file(fs, file_name(t, i, true)));
      auto want = pattern(file_seed(t, i), 0, file_len(t, i));
      if (d != want) {
        size_t k = 0;
        while (k < d.size() && k < want.size() && d[k] == want[k]) ++k;
        return fail(EIO, file_name(t, i, true) + " has the wrong contents: size " +
                             std::to_string(d.size()) + ", first difference at byte " +
                             std::to_string(k) + " = " + (k < d.size() ? std::to_string(int(d[k])) : "EOF"));
      }
    }
  SDX_ASSIGN(auto c, test::read_file(fs, "/shared/common"));
  const uint64_t n = kStripesPerThread * kThreads;
  if (c.size() != n * kStripe) return fail(EIO, "shared file size " + std::to_string(c.size()));
  for (uint64_t s = 0; s < n; ++s)
    if (!std::equal(c.begin() + s * kStripe, c.begin() + (s + 1) * kStripe,
                    pattern(stripe_seed(s), s * kStripe, kStripe).begin()))
      return fail(EIO, "shared file stripe " + std::to_string(s) + " is wrong");
  return ok();
}

TEST_P(ThreadsTest, ConcurrentCreateWriteFsyncRename) {
  SDX_ASSERT_OK(fs_->mkdir("/shared"));
  SDX_ASSERT_OK_AND_ASSIGN(StatFs before, fs_->statfs());
  {
    SDX_ASSERT_OK_AND_ASSIGN(File shared, fs_->open("/shared/common", O_CREAT | O_RDWR));
    // Preallocate half of the shared file so some stripes convert unwritten extents
    // while others allocate.
    SDX_ASSERT_OK(shared.fallocate(FALLOC_FL_KEEP_SIZE, 0, kStripesPerThread * kThreads * kStripe / 2));
    std::barrier<> start(kThreads + 1);
    std::atomic<bool> stop{false};
    std::vector<Status> results(kThreads);
    Status obs_result;
    int obs_rounds = 0;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] { results[t] = worker(*fs_, t, shared, start); });
    std::thread obs([&] { obs_result = observer(*fs_, stop, start, obs_rounds); });
    for (auto& th : threads) th.join();
    stop.store(true, std::memory_order_release);
    obs.join();
    for (int t = 0; t < kThreads; ++t) EXPECT_TRUE(results[t].has_value()) << "thread " << t << ": " << results[t].error().to_string();
    EXPECT_TRUE(obs_result.has_value()) << "observer: " << obs_result.error().to_string();
    EXPECT_GT(obs_rounds, 0);
    SDX_ASSERT_OK(shared.fsync());
  }
  auto v = verify(*fs_);
  EXPECT_TRUE(v.has_value()) << v.error().to_string();
  SDX_ASSERT_OK(remount());
  v = verify(*fs_);
  EXPECT_TRUE(v.has_value()) << "after remount: " << v.error().to_string();
  SDX_ASSERT_OK_AND_ASSIGN(StatFs after, fs_->statfs());
  EXPECT_EQ(after.free_inodes, before.free_inodes - (kThreads * kFilesPerThread + 1))
      << "inodes leaked by the unlinked or replaced files";
  SDX_ASSERT_OK(fs_->unmount());
  auto rep = fsck();
  EXPECT_TRUE(rep.clean()) << (rep.problems.empty() ? "unusable" : rep.problems[0]);
}

// Several threads fsync at once while others keep the transaction busy: group commit
// must make every caller's data durable, and nobody may wait forever.
TEST_P(ThreadsTest, ConcurrentFsyncOfOneFileAndSync) {
  SDX_ASSERT_OK_AND_ASSIGN(File f, fs_->open("/one", O_CREAT | O_RDWR));
  std::barrier<> start(kThreads);
  std::vector<Status> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      results[t] = [&]() -> Status {
        start.arrive_and_wait();
        for (int i = 0; i < 40; ++i) {
          uint64_t off = (uint64_t(i) * kThreads + t) * 1000;
          SDX_TRY(test::write_all(f, cbytes(pattern(t, off, 1000)), off));
          if (i % 3 == 0) SDX_TRY(f.fdatasync());
          else if (i % 3 == 1) SDX_TRY(f.fsync());
          else SDX_TRY(fs_->sync());
        }
        return ok();
      }();
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_TRUE(results[t].has_value()) << results[t].error().to_string();
  SDX_ASSERT_OK(f.close());
  SDX_ASSERT_OK(remount());
  SDX_ASSERT_OK_AND_ASSIGN(auto d, test::read_file(*fs_, "/one"));
  ASSERT_EQ(d.size(), 40u * kThreads * 1000);
  for (int i = 0; i < 40; ++i)
    for (int t = 0; t < kThreads; ++t) {
      uint64_t off = (uint64_t(i) * kThreads + t) * 1000;
      ASSERT_TRUE(std::equal(d.begin() + off, d.begin() + off + 1000, pattern(t, off, 1000).begin()))
          << "piece " << i << " of thread " << t;
    }
}

INSTANTIATE_TEST_SUITE_P(Committer, ThreadsTest,
                         testing::Values(Param{0, DevKind::kFile}, Param{5, DevKind::kFile},
                                         Param{5, DevKind::kSim}),
                         param_name);

}  // namespace
}  // namespace sdx
