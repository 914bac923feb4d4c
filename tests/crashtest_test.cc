// `syncdax crashtest` end to end, short runs of each mode: power failures at sampled
// fences and SIGKILLed children must show no violation with MAP_SYNC, and the negative
// control (--no-sync, the same stores never msynced) must be caught; a reported crash
// point replays alone and leaves a crash image that the other subcommands can open.
#include <sys/stat.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli_util.h"

namespace {

using sdx::test::Outcome;
using sdx::test::syncdax;

// The fence hook copies crash images on the heap, inside fault handling; TSan rightly
// reports that (as in mmap_test). The kill mode has no hook.
#ifdef __SANITIZE_THREAD__
#define SDX_SKIP_UNDER_TSAN() GTEST_SKIP() << "the crash hook allocates inside the SIGSEGV handler"
#else
#define SDX_SKIP_UNDER_TSAN() (void)0
#endif

struct Tally {
  uint64_t points = 0, violations = 0;
};

// The last line, "crash points: N, violations: V".
bool last_line(const std::string& out, Tally& t) {
  const size_t end = out.find_last_not_of('\n');
  if (end == std::string::npos) return false;
  const size_t begin = out.rfind('\n', end);
  const std::string line = out.substr(begin == std::string::npos ? 0 : begin + 1, end + 1);
  unsigned long long p = 0, v = 0;
  if (std::sscanf(line.c_str(), "crash points: %llu, violations: %llu", &p, &v) != 2) return false;
  t = {p, v};
  return true;
}

class CrashtestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(sdx::test::cli_path().empty()) << "syncdax binary not found: set SYNCDAX_CLI to its path";
    ASSERT_EQ(::mkdir(dir_.str().c_str(), 0755), 0);
  }
  void TearDown() override { std::filesystem::remove_all(dir_.str()); }
  Outcome run(std::vector<std::string> args) {
    args.insert(args.begin(), "crashtest");
    for (const char* a : {"--dir", dir_.str().c_str(), "--jobs", "2"}) args.push_back(a);
    return syncdax(args);
  }
  // A run that must find nothing: its last line, 0 violations, exit 0.
  Tally clean_run(std::vector<std::string> args) {
    Outcome r = run(std::move(args));
    Tally t;
    EXPECT_TRUE(last_line(r.out, t)) << r.out << r.err;
    EXPECT_EQ(t.violations, 0u) << r.out;
    EXPECT_EQ(r.code, 0) << r.err;
    return t;
  }
  sdx::test::TempPath dir_{"crashtest-dir"};
};

TEST_F(CrashtestTest, PowerFailuresAtSampledFencesLoseNoAcknowledgedStore) {
  SDX_SKIP_UNDER_TSAN();
  const Tally t = clean_run({"--points", "300", "--seed", "11", "--torn"});
  EXPECT_EQ(t.points, 300u);
}

TEST_F(CrashtestTest, EveryFenceOfASmallWorkload) {
  SDX_SKIP_UNDER_TSAN();
  const Tally t = clean_run({"--ops", "60", "--seed", "5", "--evict-prob", "0"});
  EXPECT_GT(t.points, 60u);  // every fence: several per operation
}

// The negative control: without MAP_SYNC and msync the oracle must see stores vanish,
// report them with a replay command, and exit 1; the replay reproduces the crash point
// alone and keeps its image, which fsck can read.
TEST_F(CrashtestTest, NoSyncIsCaughtAndReplays) {
  SDX_SKIP_UNDER_TSAN();
  Outcome r = run({"--no-sync", "--points", "100", "--seed", "3", "--report", "1"});
  Tally t;
  ASSERT_TRUE(last_line(r.out, t)) << r.out << r.err;
  EXPECT_EQ(t.points, 100u);
  EXPECT_GT(t.violations, 0u) << r.out;
  EXPECT_EQ(r.code, 1);
  const size_t at = r.out.find("replay: syncdax crashtest ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::string cmd = r.out.substr(at + 8, r.out.find('\n', at) - at - 8);
  // "syncdax crashtest --seed S ... --replay K": run the same words.
  std::vector<std::string> words;
  for (size_t i = 0, j; i < cmd.size(); i = j + 1) {
    j = cmd.find(' ', i);
    if (j == std::string::npos) j = cmd.size();
    words.push_back(cmd.substr(i, j - i));
  }
  ASSERT_GE(words.size(), 4u);
  ASSERT_EQ(words[0], "syncdax");
  Outcome replay = run(std::vector<std::string>(words.begin() + 2, words.end()));
  EXPECT_EQ(replay.code, 1) << replay.out << replay.err;
  ASSERT_TRUE(last_line(replay.out, t)) << replay.out;
  EXPECT_EQ(t.points, 1u);
  EXPECT_EQ(t.violations, 1u);
  const size_t kept = replay.out.find("crash image kept at ");
  ASSERT_NE(kept, std::string::npos) << replay.out;
  const std::string image = replay.out.substr(kept + 20, replay.out.find(' ', kept + 20) - kept - 20);
  Outcome fsck = syncdax({"fsck", image});
  EXPECT_EQ(fsck.code, 0) << fsck.out << fsck.err;  // data lost, metadata consistent
}

TEST_F(CrashtestTest, KilledChildrenLoseNoAcknowledgedStore) {
  const Tally t = clean_run({"--kill", "--rounds", "15", "--seed", "21"});
  EXPECT_EQ(t.points, 15u);
}

TEST_F(CrashtestTest, KilledChildrenWithoutSyncAreCaught) {
  Outcome r = run({"--kill", "--rounds", "8", "--no-sync", "--seed", "21"});
  Tally t;
  ASSERT_TRUE(last_line(r.out, t)) << r.out << r.err;
  EXPECT_GT(t.violations, 0u) << r.out;
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("the image as the killed child left it: "), std::string::npos) << r.out;
}

TEST_F(CrashtestTest, ReplayOfAKillIsAUsageError) {
  EXPECT_EQ(run({"--kill", "--replay", "5"}).code, 2);
}

}  // namespace
