// The `syncdax` command-line tool, run as a separate process: mkfs, put/get round trip,
// ls, stat, info, defrag, fsck exit statuses, rejection of bad arguments, and that the fault
// benchmark (with its plot) and the persist benchmark run end to end.
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "cli_util.h"

namespace {

using sdx::test::Outcome;
using sdx::test::TempPath;
using sdx::test::cli_path;
using sdx::test::interleaved_appends;
using sdx::test::slurp;
using sdx::test::spit;
using sdx::test::syncdax;

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(cli_path().empty()) << "syncdax binary not found: set SYNCDAX_CLI to its path";
  }
  void Mkfs() {
    Outcome r = syncdax({"mkfs", "--size", "16M", img_});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
  }
  TempPath img_{"cli-img"};
};

TEST_F(CliTest, MkfsPrintsGeometryAndDurability) {
  Outcome r = syncdax({"mkfs", "--size", "16M", "--kind", "file", img_});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("block size"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("inodes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("durability"), std::string::npos) << r.out;

  Outcome info = syncdax({"info", img_});
  ASSERT_EQ(info.code, 0) << info.err;
  EXPECT_NE(info.out.find("kind:        file"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("durability:"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("block size:  4096"), std::string::npos) << info.out;
}

TEST_F(CliTest, PutGetRoundTripLsStatFsck) {
  Mkfs();
  TempPath local("cli-local"), back("cli-back");
  const std::string data = random_bytes(300000, 7);
  spit(local, data);

  Outcome put = syncdax({"put", img_, local, "/data.bin"});
  ASSERT_EQ(put.code, 0) << put.err;
  Outcome get = syncdax({"get", img_, "/data.bin", back});
  ASSERT_EQ(get.code, 0) << get.err;
  EXPECT_TRUE(slurp(back) == data) << "bytes differ after put/get";

  Outcome to_stdout = syncdax({"get", img_, "/data.bin", "-"});
  ASSERT_EQ(to_stdout.code, 0) << to_stdout.err;
  EXPECT_TRUE(to_stdout.out == data);

  Outcome ls = syncdax({"ls", img_});
  ASSERT_EQ(ls.code, 0) << ls.err;
  EXPECT_NE(ls.out.find("data.bin"), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find("300000"), std::string::npos) << ls.out;
  EXPECT_EQ(ls.out.substr(0, 1), "-") << ls.out;

  Outcome st = syncdax({"stat", img_, "/data.bin"});
  ASSERT_EQ(st.code, 0) << st.err;
  EXPECT_NE(st.out.find("size:          300000 bytes"), std::string::npos) << st.out;
  // 300000 bytes need at least 74 blocks of 4 KiB.
  auto pos = st.out.find("blocks:");
  ASSERT_NE(pos, std::string::npos) << st.out;
  EXPECT_GE(std::stoull(st.out.substr(pos + 7)), 74u) << st.out;
  EXPECT_NE(st.out.find("extents:"), std::string::npos) << st.out;

  Outcome fsck = syncdax({"fsck", img_});
  EXPECT_EQ(fsck.code, 0) << fsck.out << fsck.err;
  EXPECT_EQ(fsck.out, img_.str() + ": clean\n");
}

TEST_F(CliTest, PutIntoDirectoryKeepsName) {
  Mkfs();
  TempPath local("cli-named");
  spit(local, "hello\n");
  // DEST is the root directory: the file keeps its local name.
  Outcome put = syncdax({"put", img_, local, "/"});
  ASSERT_EQ(put.code, 0) << put.err;
  Outcome ls = syncdax({"ls", img_, "/"});
  ASSERT_EQ(ls.code, 0) << ls.err;
  const std::string name = local.str().substr(local.str().rfind('/') + 1);
  EXPECT_NE(ls.out.find(" " + name + "\n"), std::string::npos) << ls.out;
}

TEST_F(CliTest, FsckOnJunkIsUnusable) {
  spit(img_, random_bytes(1 << 20, 3));
  Outcome r = syncdax({"fsck", img_});
  EXPECT_EQ(r.code, 2) << r.out << r.err;
  EXPECT_EQ(r.err.rfind("syncdax: ", 0), 0u) << r.err;

  TempPath missing("cli-missing");
  Outcome m = syncdax({"fsck", missing});
  EXPECT_EQ(m.code, 2) << m.out << m.err;
}

TEST_F(CliTest, BadSizesAreRejected) {
  for (std::string bad : {"12Q", "", "-5", "1.5G", "64 M", "M", "99999999999999999999",
                          "17179869184G", "12MB"}) {
    Outcome r = syncdax({"mkfs", "--size", bad, img_});
    EXPECT_NE(r.code, 0) << "size '" << bad << "' accepted";
    EXPECT_NE(r.err.find("invalid size"), std::string::npos) << bad << ": " << r.err;
    EXPECT_EQ(r.err.rfind("syncdax: --size: ", 0), 0u) << r.err;
  }
  std::ifstream never(img_.str());
  EXPECT_FALSE(never.good()) << "a rejected mkfs created the image";
}

TEST_F(CliTest, ErrorsNameTheObject) {
  Mkfs();
  TempPath out("cli-out");
  Outcome r = syncdax({"get", img_, "/nope", out});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("syncdax: " + img_.str() + ":/nope: ", 0), 0u) << r.err;

  Outcome s = syncdax({"stat", img_, "/nope"});
  EXPECT_EQ(s.code, 1);
  Outcome p = syncdax({"put", img_, "/definitely/not/here", "/x"});
  EXPECT_EQ(p.code, 1);
  EXPECT_EQ(p.err.rfind("syncdax: /definitely/not/here: ", 0), 0u) << p.err;

  Outcome none = syncdax({});
  EXPECT_NE(none.code, 0);
  Outcome unknown = syncdax({"frobnicate"});
  EXPECT_NE(unknown.code, 0);
}

// A smoke run: small enough to stay fast, and it must still print every row of the
// summary, count the one synchronous fault that prepares an empty file, and leave no
// medium behind.
TEST_F(CliTest, FaultbenchRunsAndSummarises) {
  Outcome r = syncdax({"faultbench", "--pages", "16", "--repeat", "1", "--copy-size", "1m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("durability:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("File empty, background load, MAP_SYNC  [run 1/1]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("min="), std::string::npos) << r.out;
  const size_t summary = r.out.find("Summary:");
  ASSERT_NE(summary, std::string::npos) << r.out;
  const std::string table = r.out.substr(summary);
  EXPECT_NE(table.find("kernel shmem minor fault"), std::string::npos) << table;
  EXPECT_NE(table.find("syncdax prealloc, idle, MAP_SHARED"), std::string::npos) << table;
  EXPECT_NE(table.find("syncdax empty, load, MAP_SYNC"), std::string::npos) << table;
  EXPECT_NE(table.find("write-sync 1,"), std::string::npos) << table;  // one fault prepares the 16 pages

  const std::string pid_tag = "syncdax-faultbench-";
  const size_t at = r.out.find("/dev/shm/" + pid_tag);
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::string image = r.out.substr(at, r.out.find_first_of(" \n", at) - at);
  EXPECT_NE(::access(image.c_str(), F_OK), 0) << image << " left behind";
}

// The plot has one panel per row of the summary, each named by its row.
TEST_F(CliTest, FaultbenchPlotsEveryRow) {
  TempPath svg("cli-plot");
  Outcome r = syncdax({"faultbench", "--pages", "8", "--repeat", "1", "--copy-size", "1m", "--plot", svg});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const std::string plot = slurp(svg);
  ASSERT_TRUE(plot.starts_with("<svg")) << plot.substr(0, 200);
  EXPECT_TRUE(plot.ends_with("</svg>\n"));

  // The rows: the labels of the last table (its heading ends in "preemptions", as each
  // run's counts do), "<label padded to 34> numbers".
  std::vector<std::string> rows;
  const size_t table = r.out.rfind(" preemptions\n");
  ASSERT_NE(table, std::string::npos) << r.out;
  std::istringstream in(r.out.substr(table));
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line) && !line.empty()) {
    std::string label = line.substr(0, 34);
    label.erase(label.find_last_not_of(' ') + 1);
    rows.push_back(label);
  }
  ASSERT_GE(rows.size(), 13u) << r.out;
  for (const std::string& row : rows)
    EXPECT_NE(plot.find("<g class=\"panel\" data-row=\"" + row + "\">"), std::string::npos) << row;
  size_t panels = 0;
  for (size_t at = plot.find("class=\"panel\""); at != std::string::npos; at = plot.find("class=\"panel\"", at + 1))
    ++panels;
  EXPECT_EQ(panels, rows.size());
}

// A smoke run of every method and size; it must leave none of its four files behind.
TEST_F(CliTest, PersistbenchRunsAndTabulates) {
  Outcome r = syncdax({"persistbench", "--ops", "50", "--region", "1m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("survives:"), std::string::npos) << r.out;
  // One table row per size and method: "<size padded to 6> (x) <label> ...".
  std::vector<std::string> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  for (std::string size : {"64 B  ", "256 B ", "4 KiB "}) {
    for (std::string method : {"(a) syncdax MAP_SYNC + persist", "mmap + msync", "pwrite + fdatasync",
                               "(d) libpmem2 flush + drain"}) {
      const bool found = std::any_of(lines.begin(), lines.end(), [&](const std::string& l) {
        return l.starts_with(size + " (") && l.find(method) != std::string::npos;
      });
      EXPECT_TRUE(found) << size << method << "\n" << r.out;
    }
  }
  EXPECT_NE(r.out.find("got: cache line"), std::string::npos) << r.out;

  const std::string tag = "/dev/shm/syncdax-persistbench-";
  const size_t at = r.out.find(tag);
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::string image = r.out.substr(at, r.out.find_first_of(" \n", at) - at);
  const std::string stem = image.substr(0, image.rfind('.'));
  for (const std::string& path : {image, stem + ".pmem2"}) EXPECT_NE(::access(path.c_str(), F_OK), 0) << path;
}

TEST_F(CliTest, LogbenchRunsGrowsAndTabulates) {
  Outcome r = syncdax({"logbench", "--bytes", "1m", "--prealloc", "256k", "--kernel-records", "100"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("survives:"), std::string::npos) << r.out;
  std::vector<std::string> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  for (std::string size : {"64 B  ", "1 KiB "}) {
    for (std::string way : {"(a) syncdax MAP_SYNC, growing", "pwrite + fdatasync", "(c) libpmem2 raw mapping"}) {
      const bool found = std::any_of(lines.begin(), lines.end(), [&](const std::string& l) {
        return l.starts_with(size + " (") && l.find(way) != std::string::npos;
      });
      EXPECT_TRUE(found) << size << way << "\n" << r.out;
    }
    // 256 KiB doubled twice holds the 1 MiB log, and the stores into the new ranges
    // fault and commit (write-sync).
    const bool grew = std::any_of(lines.begin(), lines.end(), [&](const std::string& l) {
      return l.starts_with("  " + size + " 2 growths to 1.0 MiB") && l.find("write-sync ") != std::string::npos;
    });
    EXPECT_TRUE(grew) << size << "\n" << r.out;
  }
  EXPECT_NE(r.out.find("got: cache line"), std::string::npos) << r.out;

  const std::string tag = "/dev/shm/syncdax-logbench-";
  const size_t at = r.out.find(tag);
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::string image = r.out.substr(at, r.out.find_first_of(" \n", at) - at);
  const std::string stem = image.substr(0, image.rfind('.'));
  for (const std::string& path : {image, stem + ".64.pmem2", stem + ".1024.pmem2", stem + ".probe.pmem2"})
    EXPECT_NE(::access(path.c_str(), F_OK), 0) << path;
}

TEST_F(CliTest, DefragJoinsAFragmentedFileAndKeepsItsBytes) {
  Mkfs();
  std::vector<std::string> args = {"io", img_};
  for (const auto& c : interleaved_appends("a", "b", 64)) {
    args.push_back("-c");
    args.push_back(c);
  }
  Outcome io = syncdax(args);
  ASSERT_EQ(io.code, 0) << io.err;

  Outcome r = syncdax({"defrag", img_, "/b"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_match(r.out, m, std::regex(R"(/b: ([0-9]+) extents -> ([0-9]+) extents, ([0-9]+) blocks moved\n)")))
      << r.out;
  EXPECT_GT(std::stoull(m[1].str()), 32u) << "the appends did not interleave";
  EXPECT_LE(std::stoull(m[2].str()), 2u);
  EXPECT_GT(std::stoull(m[3].str()), 0u);
  Outcome st = syncdax({"stat", img_, "/b"});
  EXPECT_NE(st.out.find("extents:       " + m[2].str() + "\n"), std::string::npos) << st.out;

  TempPath back("cli-back");
  ASSERT_EQ(syncdax({"get", img_, "/b", back}).code, 0);
  EXPECT_EQ(slurp(back), std::string(64 * 4096, '\x62'));
  Outcome fsck = syncdax({"fsck", img_});
  EXPECT_EQ(fsck.code, 0) << fsck.out << fsck.err;

  // Nothing left to join: no block moves.
  Outcome again = syncdax({"defrag", img_, "/b"});
  EXPECT_EQ(again.out, "/b: " + m[2].str() + " extents -> " + m[2].str() + " extents, 0 blocks moved\n");
  Outcome missing = syncdax({"defrag", img_, "/nope"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_EQ(missing.err.rfind("syncdax: " + img_.str() + ":/nope: ", 0), 0u) << missing.err;
}

TEST_F(CliTest, EverySubcommandHasHelp) {
  for (std::string cmd : {"mkfs", "fsck", "info", "ls", "put", "get", "stat", "defrag", "io"}) {
    Outcome r = syncdax({cmd, "--help"});
    EXPECT_EQ(r.code, 0) << cmd << ": " << r.err;
    EXPECT_NE(r.out.find("IMAGE"), std::string::npos) << cmd << ": " << r.out;
  }
  Outcome fb = syncdax({"faultbench", "--help"});
  EXPECT_EQ(fb.code, 0) << fb.err;
  EXPECT_NE(fb.out.find("--pages"), std::string::npos) << fb.out;
  Outcome pb = syncdax({"persistbench", "--help"});
  EXPECT_EQ(pb.code, 0) << pb.err;
  EXPECT_NE(pb.out.find("--ops"), std::string::npos) << pb.out;
  Outcome lb = syncdax({"logbench", "--help"});
  EXPECT_EQ(lb.code, 0) << lb.err;
  EXPECT_NE(lb.out.find("--prealloc"), std::string::npos) << lb.out;
  Outcome top = syncdax({"--help"});
  EXPECT_EQ(top.code, 0);
  EXPECT_NE(top.out.find("mkfs"), std::string::npos) << top.out;
}

}  // namespace
