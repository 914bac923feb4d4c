// The oracle of `syncdax crashtest` must be able to fail on each thing it checks: a
// small workload runs to the end on a fresh file system, then the file system is changed
// behind the workload's back (a deleted file's data appears in another file, an
// acknowledged file vanishes, a file nobody made appears, a size changes) and each
// change must be reported. The untouched file system must pass.
#include <fcntl.h>
#include <linux/falloc.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "crashtest/oracle.h"
#include "crashtest/workload.h"
#include "test_util.h"

namespace sdx {
namespace {

using crashtest::kNoFile;
using crashtest::Op;
using crashtest::OpKind;

class CrashtestOracle : public testing::Test {
 protected:
  void SetUp() override {
    fs_ = FileSystem::mount(test::formatted_sim(4 << 20), {.commit_interval_ms = 0}).value();
    // f0 is written, then deleted; f1 and f2 stay.
    table_ = {
        Op{OpKind::kCreate, 0, 0, 0, 0, 0, 0, 0, 8192},
        Op{OpKind::kPwrite, 0, 0, 0, 0, 0, 4096, 5, 8192},
        Op{OpKind::kCreate, 0, 1, 1, 0, 0, 0, 0, 8192},
        Op{OpKind::kStore, 0, 1, 0, 0, 64, 128, 6, 8192},
        Op{OpKind::kCreate, 0, 2, 0, 0, 0, 0, 0, 4096},
        Op{OpKind::kRename, 0, 2, kNoFile, 0, 0, 0, 0, 4096},
        Op{OpKind::kUnlink, 0, 0, 0, 0, 0, 0, 0, 0},
    };
    mem_.resize(crashtest::History::bytes_for(64));
    h_.emplace(mem_);
    SDX_ASSERT_OK(crashtest::execute(*fs_, table_, *h_, {}));
  }
  std::vector<std::string> check() { return crashtest::check_recovered(*fs_, table_, *h_, crashtest::kAllRecords); }
  static bool mentions(const std::vector<std::string>& v, const std::string& what) {
    for (const auto& s : v)
      if (s.find(what) != std::string::npos) return true;
    return false;
  }
  std::string all(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += "\n  " + x;
    return s;
  }

  std::unique_ptr<FileSystem> fs_;
  std::vector<Op> table_;
  std::vector<std::byte> mem_;
  std::optional<crashtest::History> h_;
};

TEST_F(CrashtestOracle, TheWorkloadAsRunPasses) {
  auto v = check();
  EXPECT_TRUE(v.empty()) << all(v);
}

TEST_F(CrashtestOracle, ADeletedFilesDataInAnotherFileIsCaught) {
  // The first words f0's pwrite wrote, now in f1 at another offset.
  std::vector<std::byte> words(64);
  for (uint64_t i = 0; i < 64; i += 8) {
    const uint64_t w = crashtest::pattern_word(5, i);
    std::memcpy(words.data() + i, &w, 8);
  }
  {
    File f = fs_->open("/f1", O_RDWR).value();
    SDX_ASSERT_OK(test::write_all(f, words, 1024));
  }
  auto v = check();
  EXPECT_TRUE(mentions(v, "a deleted file's data")) << all(v);
}

TEST_F(CrashtestOracle, AnAcknowledgedStoreLostIsCaught) {
  {
    File f = fs_->open("/f1", O_RDWR).value();
    SDX_ASSERT_OK(f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096));
  }
  auto v = check();
  EXPECT_TRUE(mentions(v, "(zero); acknowledged")) << all(v);
}

TEST_F(CrashtestOracle, AMissingFileAStrayFileAndAWrongSizeAreCaught) {
  SDX_ASSERT_OK(fs_->unlink("/f1"));
  { File f = fs_->open("/stray", O_CREAT | O_RDWR).value(); }
  {
    File f = fs_->open("/r0", O_RDWR).value();  // f2, renamed
    SDX_ASSERT_OK(f.ftruncate(12288));
  }
  auto v = check();
  EXPECT_TRUE(mentions(v, "/f1 (acknowledged, expected at /f1) is missing")) << all(v);
  EXPECT_TRUE(mentions(v, "unexpected file /stray")) << all(v);
  EXPECT_TRUE(mentions(v, "size 12288 not in { 4096 }")) << all(v);
}

}  // namespace
}  // namespace sdx
