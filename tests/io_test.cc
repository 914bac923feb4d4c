// `syncdax io`, run as a separate process: xfs_io's output formats for pwrite/pread
// (summary lines and the hex dump), units and C notation in numbers, the layout
// commands seen through stat, errors that print like xfs_io without ending the run, and
// simulated crashes. The IoMmapTest cases need the dax layer (File::mmap); they include
// the acceptance example of the mmap issue: stores through a MAP_SYNC mapping persisted
// from user space survive a crash, and the same stores through a plain shared mapping
// are lost.
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "cli_util.h"

namespace {

using sdx::test::Outcome;
using sdx::test::TempPath;
using sdx::test::cli_path;
using sdx::test::syncdax;

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// The values of every "key = value" line, in order.
std::vector<std::string> values(const std::string& out, const std::string& key) {
  std::vector<std::string> v;
  for (const auto& l : lines(out)) {
    if (l.rfind(key + " = ", 0) == 0) v.push_back(l.substr(key.size() + 3));
  }
  return v;
}

bool has_line(const std::string& out, const std::string& line) {
  for (const auto& l : lines(out)) {
    if (l == line) return true;
  }
  return false;
}

// The hex dump lines of pread -v / mread -v: every line must be well formed, offsets
// must follow each other from `first`, and every byte must be `want`. Returns a
// description of the first violation, or "" if all `len` bytes are there.
std::string check_dump(const std::string& out, uint64_t first, uint64_t len, unsigned want) {
  uint64_t next = first;
  char hex[4];
  std::snprintf(hex, sizeof hex, "%02x ", want);
  const char ascii = std::isalnum(static_cast<int>(want)) ? static_cast<char>(want) : '.';
  for (const auto& l : lines(out)) {
    if (l.size() < 10 || l[8] != ':' || l.substr(9, 2) != "  ") continue;
    const uint64_t off = std::stoull(l.substr(0, 8), nullptr, 16);
    if (off != next) return "dump line at " + l.substr(0, 8) + ", expected " + std::to_string(next);
    const uint64_t n = std::min<uint64_t>(16, first + len - off);
    std::string expect = l.substr(0, 11);
    for (uint64_t i = 0; i < n; ++i) expect += hex;
    expect += " " + std::string(n, ascii);
    if (l != expect) return "dump line '" + l + "', expected '" + expect + "'";
    next += n;
  }
  if (next != first + len) return "dump covers " + std::to_string(next - first) + " bytes, not " + std::to_string(len);
  return "";
}

// The second summary line of pread/pwrite: "<size>, <ops> ops; <time> (<rate>/sec and <n> ops/sec)".
bool summary_ok(const std::string& line, const std::string& size, uint64_t ops) {
  static const std::regex rest(
      R"(^ ops; [0-9]+\.[0-9]{4} sec \([0-9]+(\.[0-9]{3})? (KiB|MiB|GiB|TiB|PiB|EiB)/sec and [0-9]+\.[0-9]{4} ops/sec\)$)");
  const std::string head = size + ", " + std::to_string(ops);
  return line.rfind(head, 0) == 0 && std::regex_match(line.substr(head.size()), rest);
}

class IoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(cli_path().empty()) << "syncdax binary not found: set SYNCDAX_CLI to its path";
  }
  void Mkfs(const std::string& kind = "sim", const std::string& size = "16M") {
    Outcome r = syncdax({"mkfs", "--kind", kind, "--size", size, img_});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
  }
  Outcome Io(const std::vector<std::string>& commands) {
    std::vector<std::string> args = {"io", img_};
    for (const auto& c : commands) {
      args.push_back("-c");
      args.push_back(c);
    }
    return syncdax(args);
  }
  TempPath img_{"io-img"};
};

TEST_F(IoTest, PwriteAndPreadPrintLikeXfsIo) {
  Mkfs();
  Outcome r = Io({"open -c f", "pwrite 0 4096", "pwrite -S 0x41 4096 100", "pread -v 4090 30",
                  "pwrite 0 5000"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "");
  auto l = lines(r.out);
  ASSERT_EQ(l.size(), 10u) << r.out;
  EXPECT_EQ(l[0], "wrote 4096/4096 bytes at offset 0");
  EXPECT_TRUE(summary_ok(l[1], "4 KiB", 1)) << l[1];
  EXPECT_EQ(l[2], "wrote 100/100 bytes at offset 4096");
  EXPECT_TRUE(summary_ok(l[3], "100.000000 bytes", 1)) << l[3];
  EXPECT_EQ(l[4], "00000ffa:  cd cd cd cd cd cd 41 41 41 41 41 41 41 41 41 41  ......AAAAAAAAAA");
  EXPECT_EQ(l[5], "0000100a:  41 41 41 41 41 41 41 41 41 41 41 41 41 41  AAAAAAAAAAAAAA");
  EXPECT_EQ(l[6], "read 30/30 bytes at offset 4090");
  EXPECT_TRUE(summary_ok(l[7], "30.000000 bytes", 1)) << l[7];
  EXPECT_EQ(l[8], "wrote 5000/5000 bytes at offset 0");
  // xfs_io prints a whole byte count without decimals, rounded: 5000 bytes are "5 KiB".
  EXPECT_TRUE(summary_ok(l[9], "5 KiB", 2)) << l[9];
}

TEST_F(IoTest, PreadStopsAtEndOfFile) {
  Mkfs();
  Outcome r = Io({"open -c f", "pwrite -p 0x7a 0 6000", "pread 4096 8192", "pread -v 10000 10"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  auto l = lines(r.out);
  ASSERT_EQ(l.size(), 6u) << r.out;
  EXPECT_EQ(l[2], "read 1904/8192 bytes at offset 4096");
  EXPECT_TRUE(summary_ok(l[3], "2 KiB", 1)) << l[3];
  EXPECT_EQ(l[4], "read 0/10 bytes at offset 10000");
  EXPECT_EQ(l[5].rfind("0.000000 bytes, 0 ops; ", 0), 0u) << l[5];
}

TEST_F(IoTest, NumbersTakeUnitsAndCNotation) {
  Mkfs();
  Outcome r = Io({"open -c f", "pwrite 0x10 0x10", "pwrite 0 2b", "pwrite 0 1k", "truncate 1m",
                  "stat", "truncate 3s", "stat", "pwrite 0 1q", "pwrite -5 1"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_TRUE(has_line(r.out, "wrote 16/16 bytes at offset 16")) << r.out;
  EXPECT_TRUE(has_line(r.out, "wrote 8192/8192 bytes at offset 0")) << r.out;
  EXPECT_TRUE(has_line(r.out, "wrote 1024/1024 bytes at offset 0")) << r.out;
  EXPECT_EQ(values(r.out, "stat.size"), (std::vector<std::string>{"1048576", "1536"})) << r.out;
  EXPECT_EQ(lines(r.err), (std::vector<std::string>{
                              "non-numeric length argument -- 1q",
                              "pwrite [-S BYTE|-p BYTE] OFF LEN -- write BYTE (default 0xcd) over "
                              "a range, 4 KiB per op"}));
}

TEST_F(IoTest, LayoutCommandsShowInStat) {
  Mkfs();
  Outcome r = Io({"open -c f", "falloc 0 64k", "stat", "fpunch 16k 16k", "stat", "fzero 0 4k", "stat",
                  "falloc -k 64k 4k", "stat", "truncate 8k", "stat", "open -r f", "stat"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(values(r.out, "stat.size"),
            (std::vector<std::string>{"65536", "65536", "65536", "65536", "8192", "8192"}));
  EXPECT_EQ(values(r.out, "stat.blocks"),
            (std::vector<std::string>{"16", "12", "12", "13", "2", "2"}));
  // fzero turns its block into an unwritten extent of its own.
  EXPECT_EQ(values(r.out, "fsxattr.nextents"),
            (std::vector<std::string>{"1", "2", "3", "3", "2", "2"}));
  EXPECT_EQ(values(r.out, "fd.path"), std::vector<std::string>(6, "\"/f\""));
  EXPECT_EQ(values(r.out, "fd.flags"), (std::vector<std::string>{"read-write", "read-write",
                                                                 "read-write", "read-write",
                                                                 "read-write", "read-only"}));
  EXPECT_EQ(values(r.out, "stat.type")[0], "regular file");
}

TEST_F(IoTest, FdatasyncedWritesSurviveACrashAndTheRestIsLost) {
  Mkfs();
  // The journal commits in order, so every sync commits all changes made before it.
  Outcome r = Io({"open -c g", "pwrite 0 4k", "fsync", "open -c f", "pwrite -p 0x5a 0 8k",
                  "fdatasync", "pwrite -p 0x77 8k 4k", "open -c h", "pwrite 0 4k",
                  "crash -p 1 -s 3", "open h", "open f", "stat", "pread -v 0 12k"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_TRUE(has_line(r.out, "crash: power failure simulated; unflushed stores survived with "
                              "probability 1 (whole cache lines, seed 3); journal replayed, "
                              "file system mounted again"))
      << r.out;
  // h was never committed; even lines that reached the medium cannot bring it back.
  EXPECT_EQ(r.err, "h: No such file or directory\n");
  // The extension of f after its fdatasync was not committed.
  EXPECT_EQ(values(r.out, "stat.size"), std::vector<std::string>{"8192"});
  EXPECT_EQ(check_dump(r.out, 0, 8192, 0x5a), "");
  EXPECT_TRUE(has_line(r.out, "read 8192/12288 bytes at offset 0"));

  // The recovered state is what the image keeps.
  Outcome again = Io({"open g", "pread -v 0 4k"});
  ASSERT_EQ(again.code, 0) << again.out << again.err;
  EXPECT_EQ(check_dump(again.out, 0, 4096, 0xcd), "");
  Outcome fsck = syncdax({"fsck", img_});
  EXPECT_EQ(fsck.code, 0) << fsck.out << fsck.err;
}

TEST_F(IoTest, ErrorsPrintLikeXfsIoAndTheRunGoesOn) {
  Mkfs();
  Outcome r = Io({"pwrite 0 1", "frob", "open nope", "open -c f", "pwrite 0 x", "pwrite y 1",
                  "pwrite -p 300 0 1", "truncate", "open -z f", "mwrite 0 1", "mmap -S -p 0 4k",
                  "crash -p 1.5", "stat", "open -r f", "pwrite 0 1", "falloc 0 4k", "truncate 0"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(lines(r.err),
            (std::vector<std::string>{
                "no files are open, try 'open FILE'",
                "command \"frob\" not found",
                "nope: No such file or directory",
                "non-numeric length argument -- x",
                "non-numeric offset argument -- y",
                "non-numeric seed -- 300",
                "truncate LEN -- set the file's size",
                "open [-c] [-r] FILE -- open FILE (-c create it, -r read-only); replaces the open file",
                "no mapped regions, try 'mmap OFF LEN'",
                "mmap: -S (MAP_SYNC) needs a shared mapping, not -p",
                "crash: invalid probability -- 1.5 (expected 0 to 1)",
                "pwrite: Bad file descriptor",
                "fallocate: Bad file descriptor",
                "ftruncate: Invalid argument",
            }));
  // The commands after the errors ran.
  EXPECT_EQ(values(r.out, "stat.size"), std::vector<std::string>{"0"}) << r.out;

  Outcome fine = Io({"open f", "stat"});
  EXPECT_EQ(fine.code, 0) << fine.err;
  EXPECT_EQ(fine.err, "");
}

TEST_F(IoTest, NoSpaceLeftOnDevice) {
  Mkfs("sim", "4M");
  Outcome r = Io({"open -c f", "pwrite 0 8m", "fsync", "stat"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "pwrite: No space left on device\n");
  auto blocks = values(r.out, "stat.blocks");
  ASSERT_EQ(blocks.size(), 1u) << r.out;
  EXPECT_GT(std::stoull(blocks[0]), 0u);
  Outcome fsck = syncdax({"fsck", img_});
  EXPECT_EQ(fsck.code, 0) << fsck.out << fsck.err;
}

TEST_F(IoTest, CrashNeedsASimImageAndLeavesTheFileOpenOtherwise) {
  Mkfs("file");
  Outcome r = Io({"open -c f", "crash -p 0", "pwrite 0 4k", "stat"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "crash: Operation not supported\n");
  EXPECT_TRUE(has_line(r.out, "wrote 4096/4096 bytes at offset 0")) << r.out;
  EXPECT_EQ(values(r.out, "stat.size"), std::vector<std::string>{"4096"});
}

TEST_F(IoTest, FaultsListsEveryKind) {
  Mkfs();
  Outcome r = Io({"faults"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto l = lines(r.out);
  ASSERT_EQ(l.size(), static_cast<size_t>(sdx::FaultKind::kCount) + 2) << r.out;
  for (unsigned k = 0; k < static_cast<unsigned>(sdx::FaultKind::kCount); ++k) {
    const std::string name(sdx::fault_kind_name(static_cast<sdx::FaultKind>(k)));
    std::istringstream row(l[1 + k]);
    std::string got_name, count;
    row >> got_name >> count;
    EXPECT_EQ(got_name, name);
    EXPECT_EQ(count, "0");
  }
  std::istringstream total(l.back());
  std::string word, n;
  total >> word >> n;
  EXPECT_EQ(word, "total");
  EXPECT_EQ(n, "0");
}

TEST_F(IoTest, HelpAndCommandLine) {
  Outcome help = syncdax({"io", "--help"});
  ASSERT_EQ(help.code, 0) << help.err;
  for (std::string cmd : {"open", "close", "truncate", "falloc", "fpunch", "fzero", "pwrite", "pread",
                          "mmap", "mwrite", "mread", "msync", "munmap", "fsync", "fdatasync", "stat",
                          "faults", "crash"}) {
    EXPECT_NE(help.out.find("\n  " + cmd), std::string::npos) << cmd;
  }
  EXPECT_NE(help.out.find("exit status"), std::string::npos);

  Mkfs();
  Outcome none = syncdax({"io", img_});
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("--command is required"), std::string::npos) << none.err;
  // -c may come before and after IMAGE.
  Outcome mixed = syncdax({"io", "-c", "open -c f", img_, "-c", "pwrite 0 1"});
  EXPECT_EQ(mixed.code, 0) << mixed.err;
  EXPECT_TRUE(has_line(mixed.out, "wrote 1/1 bytes at offset 0")) << mixed.out;
}

// ---- mmap: these need the dax layer ----

using IoMmapTest = IoTest;

// The acceptance example: a MAP_SYNC mapping of a truncate-extended empty file, every
// store persisted from user space, then a power failure that keeps nothing unflushed.
TEST_F(IoMmapTest, SyncMappingStoresSurviveACrash) {
  Mkfs();
  Outcome r = Io({"open -c f", "truncate 1m", "mmap -S 0 1m", "mwrite -P -p 0xab 0 1m",
                  "crash -p 0", "open f", "stat", "pread -v 0 1m"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(values(r.out, "stat.size"), std::vector<std::string>{"1048576"});
  EXPECT_EQ(values(r.out, "stat.blocks"), std::vector<std::string>{"256"});
  EXPECT_EQ(check_dump(r.out, 0, 1 << 20, 0xab), "");
  EXPECT_TRUE(has_line(r.out, "read 1048576/1048576 bytes at offset 0"));
}

// The same stores through a plain shared mapping, without msync: neither the blocks'
// allocation nor the file is committed, so nothing of it survives.
TEST_F(IoMmapTest, SharedMappingStoresAreLostInACrash) {
  Mkfs();
  Outcome r = Io({"open -c f", "truncate 1m", "mmap 0 1m", "mwrite -p 0xab 0 1m", "mread -v 0 16",
                  "crash -p 0", "open f", "stat", "pread -v 0 1m"});
  const size_t crash = r.out.find("crash:");
  ASSERT_NE(crash, std::string::npos) << r.out << r.err;
  // The stores did happen before the crash.
  EXPECT_EQ(check_dump(r.out.substr(0, crash), 0, 16, 0xab), "") << r.err;
  EXPECT_EQ(lines(r.err), (std::vector<std::string>{"f: No such file or directory",
                                                     "no files are open, try 'open FILE'",
                                                     "no files are open, try 'open FILE'"}));
  EXPECT_TRUE(values(r.out, "stat.blocks").empty());
  EXPECT_EQ(r.out.find("ab ab", crash), std::string::npos);
}

// A committed file, so the loss shows in its data: the stores' blocks were allocated
// by write faults that nothing committed, and the file is a hole again.
TEST_F(IoMmapTest, SharedMappingOfACommittedFileReadsZerosAfterACrash) {
  Mkfs();
  Outcome r = Io({"open -c f", "truncate 1m", "fsync", "mmap 0 1m", "mwrite -p 0xab 0 1m",
                  "mread -v 0 16", "crash -p 0", "open f", "stat", "pread -v 0 1m"});
  EXPECT_EQ(r.code, 0) << r.err;
  const size_t crash = r.out.find("crash:");
  ASSERT_NE(crash, std::string::npos) << r.out << r.err;
  const std::string before_crash = r.out.substr(0, crash);
  const std::string after_crash = r.out.substr(crash);
  EXPECT_EQ(check_dump(before_crash, 0, 16, 0xab), "");
  EXPECT_EQ(values(after_crash, "stat.size"), std::vector<std::string>{"1048576"});
  EXPECT_EQ(values(after_crash, "stat.blocks"), std::vector<std::string>{"0"});
  EXPECT_EQ(check_dump(after_crash, 0, 1 << 20, 0x00), "");
}

TEST_F(IoMmapTest, StoresLoadsMsyncAndFaults) {
  Mkfs();
  Outcome r = Io({"open -c f", "truncate 64k", "mmap -S 0 64k", "mwrite 0 4k", "faults",
                  "mread -v 0 16", "mwrite -p 0x61 4096 16", "mread -v 4096 16", "msync 0 64k",
                  "munmap", "mread 0 1", "pread -v 4096 16"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "no mapped regions, try 'mmap OFF LEN'\n");
  EXPECT_TRUE(has_line(r.out, "00000000:  58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58  XXXXXXXXXXXXXXXX"))
      << r.out;
  // mread shows mapping offsets, pread file offsets: the same here.
  const std::string a16 = "00001000:  61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61  aaaaaaaaaaaaaaaa";
  size_t first = r.out.find(a16);
  ASSERT_NE(first, std::string::npos) << r.out;
  EXPECT_NE(r.out.find(a16, first + 1), std::string::npos) << "pread does not see the stores";
  // The first store to the hole had to commit its allocation before the page was mapped.
  std::istringstream in(r.out);
  uint64_t write_sync = 0, total = 0;
  for (std::string l; std::getline(in, l);) {
    std::istringstream row(l);
    std::string name;
    uint64_t n = 0;
    row >> name >> n;
    if (name == "write-sync") write_sync = n;
    if (name == "total") total = n;
  }
  EXPECT_GE(write_sync, 1u) << r.out;
  EXPECT_GE(total, write_sync);
}

TEST_F(IoMmapTest, MappingErrors) {
  Mkfs();
  Outcome r = Io({"open -c f", "truncate 8k", "open -r f", "mmap 0 4k", "mmap -r 1 4k",
                  "mmap -r 0 4k", "mwrite 0 1", "mread 0 8k", "mread -v 4095 1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(lines(r.err), (std::vector<std::string>{
                              "mmap: Permission denied",
                              "mmap: Invalid argument",
                              "mwrite: the mapping is read-only (mmap -r)",
                              "mread: range (0:8192) is beyond mapping (0:4096)",
                          }));
  EXPECT_TRUE(has_line(r.out, "00000fff:  00  .")) << r.out;
}

}  // namespace
