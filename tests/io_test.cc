// `syncdax io`, run as a separate process: xfs_io's output formats for pwrite/pread
// (summary lines and the hex dump), units and C notation in numbers, the layout
// commands seen through stat, errors that print like xfs_io without ending the run, and
// simulated crashes, and reflink, dedupe, defrag and extents. The IoMmapTest cases need the dax layer (File::mmap); they include
// the acceptance example of the mmap issue: stores through a MAP_SYNC mapping persisted
// from user space survive a crash, and the same stores through a plain shared mapping
// are lost.
#include <algorithm>
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
                          "reflink", "dedupe", "defrag", "extents", "faults", "crash"}) {
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

// ---- reflink, dedupe, defrag, extents ----

// One row of an `extents` table: the words after the index, e.g. {"[0..7]:", "96..103",
// "8", "shared"}.
using ExtentRow = std::vector<std::string>;

// The rows of the `extents` table printed for `path` (the first one if several).
std::vector<ExtentRow> extent_rows(const std::string& out, const std::string& path) {
  static const std::regex row(R"(^ *[0-9]+: .*)");
  std::vector<ExtentRow> rows;
  auto l = lines(out);
  auto it = std::find(l.begin(), l.end(), path + ":");
  if (it == l.end() || ++it == l.end() || it->find("EXT: FILE-OFFSET") == std::string::npos) return rows;
  for (++it; it != l.end() && std::regex_match(*it, row); ++it) {
    std::istringstream words(*it);
    std::string index, w;
    words >> index;
    ExtentRow r;
    while (words >> w) r.push_back(w);
    rows.push_back(r);
  }
  return rows;
}

bool shared(const ExtentRow& r) { return r.size() == 4 && r[3] == "shared"; }

// 512-byte units the rows cover.
uint64_t covered(const std::vector<ExtentRow>& rows) {
  uint64_t n = 0;
  for (const auto& r : rows) n += r.size() >= 3 ? std::stoull(r[2]) : 0;
  return n;
}

TEST_F(IoTest, ReflinkSharesUntilAPwriteCopies) {
  Mkfs();
  Outcome r = Io({"open -c src", "pwrite -S 0x61 0 64k", "open -c dst", "reflink src", "extents"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_TRUE(has_line(r.out, "linked 65536/65536 bytes at offset 0")) << r.out;
  auto rows = extent_rows(r.out, "/dst");
  ASSERT_FALSE(rows.empty()) << r.out;
  EXPECT_EQ(rows[0][0], "[0..127]:") << r.out;
  EXPECT_EQ(covered(rows), 128u) << r.out;
  for (const auto& row : rows) EXPECT_TRUE(shared(row)) << r.out;
  const std::string first_dev = rows[0][1];

  Outcome cow = Io({"open dst", "pwrite -S 0x62 0 4k", "extents", "open src", "extents"});
  ASSERT_EQ(cow.code, 0) << cow.out << cow.err;
  rows = extent_rows(cow.out, "/dst");
  ASSERT_GE(rows.size(), 2u) << cow.out;
  EXPECT_EQ(rows[0], (ExtentRow{"[0..7]:", rows[0][1], "8"})) << cow.out;
  EXPECT_NE(rows[0][1].substr(0, rows[0][1].find('.')), first_dev.substr(0, first_dev.find('.')))
      << "the written block was not copied elsewhere";
  EXPECT_EQ(covered(rows), 128u);
  for (size_t i = 1; i < rows.size(); ++i) EXPECT_TRUE(shared(rows[i])) << cow.out;
  auto src_rows = extent_rows(cow.out, "/src");
  ASSERT_FALSE(src_rows.empty()) << cow.out;
  EXPECT_EQ(src_rows[0][0], "[0..7]:") << "src's first block is no longer shared: a row of its own";
  EXPECT_FALSE(shared(src_rows[0])) << cow.out;

  Outcome dst_copy = Io({"open dst", "pread -v 0 4k"});
  EXPECT_EQ(check_dump(dst_copy.out, 0, 4096, 0x62), "");
  Outcome dst_shared = Io({"open dst", "pread -v 4k 60k"});
  EXPECT_EQ(check_dump(dst_shared.out, 4096, 61440, 0x61), "");
  Outcome src = Io({"open src", "pread -v 0 64k"});
  EXPECT_EQ(check_dump(src.out, 0, 65536, 0x61), "") << "a write to the clone reached the source";
  Outcome fsck = syncdax({"fsck", img_});
  EXPECT_EQ(fsck.code, 0) << fsck.out << fsck.err;
}

TEST_F(IoTest, ReflinkRangeAndRemapErrors) {
  Mkfs();
  Outcome r = Io({"open -c src", "pwrite -S 0x61 0 64k", "open -c dst", "reflink src 4k 64k 8k",
                  "stat", "reflink src 1 0 4k", "reflink src x 0 4k", "reflink src 0 y 4k",
                  "reflink src 0 0 z", "reflink src 0 0", "dedupe src 0 0", "reflink nope",
                  "open -r dst", "reflink src", "defrag", "dedupe src 0 0 4k", "close", "extents"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has_line(r.out, "linked 8192/8192 bytes at offset 65536")) << r.out;
  EXPECT_EQ(values(r.out, "stat.size"), std::vector<std::string>{"73728"});
  auto err = lines(r.err);
  ASSERT_EQ(err.size(), 11u) << r.err;
  EXPECT_EQ(err[0], "FICLONERANGE: Invalid argument");
  EXPECT_EQ(err[1], "non-numeric src offset argument -- x");
  EXPECT_EQ(err[2], "non-numeric dest offset argument -- y");
  EXPECT_EQ(err[3], "non-positive length argument -- z");
  EXPECT_EQ(err[4].rfind("reflink SRC [SRC_OFF DST_OFF LEN] -- ", 0), 0u) << err[4];
  EXPECT_EQ(err[5].rfind("dedupe SRC SRC_OFF DST_OFF LEN -- ", 0), 0u) << err[5];
  EXPECT_EQ(err[6], "nope: No such file or directory");
  EXPECT_EQ(err[7], "FICLONE: Bad file descriptor");
  EXPECT_EQ(err[8], "defrag: Bad file descriptor");
  EXPECT_EQ(err[9], "FIDEDUPERANGE: Bad file descriptor");
  EXPECT_EQ(err[10], "no files are open, try 'open FILE'");
}

TEST_F(IoTest, DedupeSharesOnlyEqualBytesAndDifferingIsNoFailure) {
  Mkfs();
  Outcome r = Io({"open -c a", "pwrite -S 0x61 0 64k", "open -c b", "pwrite -S 0x62 0 64k",
                  "open -c c", "pwrite -S 0x61 0 64k", "open b", "dedupe a 0 0 64k", "extents",
                  "open c", "dedupe a 0 0 64k", "extents"});
  // xfs_io's convention: ranges that differ are reported, not a failure.
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "FIDEDUPERANGE: Extents did not match.\n");
  EXPECT_TRUE(has_line(r.out, "deduped 65536/65536 bytes at offset 0")) << r.out;
  EXPECT_EQ(r.out.find("deduped"), r.out.rfind("deduped")) << "the differing ranges were deduped";
  auto b = extent_rows(r.out, "/b"), c = extent_rows(r.out, "/c");
  ASSERT_FALSE(b.empty()) << r.out;
  ASSERT_FALSE(c.empty()) << r.out;
  for (const auto& row : b) EXPECT_FALSE(shared(row)) << r.out;
  for (const auto& row : c) EXPECT_TRUE(shared(row)) << r.out;
  EXPECT_EQ(covered(c), 128u);

  Outcome kept = Io({"open b", "pread -v 0 64k"});
  EXPECT_EQ(check_dump(kept.out, 0, 65536, 0x62), "");
}

TEST_F(IoTest, DefragJoinsInterleavedAppends) {
  Mkfs();
  auto cmds = interleaved_appends("a", "b", 16);
  for (const char* c : {"open a", "stat", "defrag", "stat", "extents"}) cmds.push_back(c);
  Outcome r = Io(cmds);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  auto n = values(r.out, "fsxattr.nextents");
  ASSERT_EQ(n.size(), 2u) << r.out;
  EXPECT_GT(std::stoull(n[0]), 8u) << "the appends did not interleave";
  EXPECT_LT(std::stoull(n[1]), std::stoull(n[0]));
  std::smatch m;
  static const std::regex summary(R"(/a: ([0-9]+) extents -> ([0-9]+) extents, ([0-9]+) blocks moved\n)");
  ASSERT_TRUE(std::regex_search(r.out, m, summary)) << r.out;
  EXPECT_EQ(m[1].str(), n[0]);
  EXPECT_EQ(m[2].str(), n[1]);
  EXPECT_GT(std::stoull(m[3].str()), 0u);
  EXPECT_EQ(extent_rows(r.out, "/a").size(), std::stoull(n[1])) << r.out;

  Outcome a = Io({"open a", "pread -v 0 64k"});
  EXPECT_EQ(check_dump(a.out, 0, 65536, 0x61), "");
  Outcome b = Io({"open b", "pread -v 0 64k"});
  EXPECT_EQ(check_dump(b.out, 0, 65536, 0x62), "");
}

TEST_F(IoTest, ExtentsShowsHolesAndUnwrittenBlocks) {
  Mkfs();
  Outcome r = Io({"open -c f", "pwrite 0 4k", "fzero 16k 8k", "extents"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  auto rows = extent_rows(r.out, "/f");
  ASSERT_EQ(rows.size(), 3u) << r.out;
  EXPECT_EQ(rows[0].size(), 3u) << r.out;
  EXPECT_EQ(rows[0][0], "[0..7]:");
  EXPECT_EQ(rows[1], (ExtentRow{"[8..31]:", "hole", "24"}));
  EXPECT_EQ(rows[2][0], "[32..47]:");
  EXPECT_EQ(rows[2][2], "16");
  EXPECT_EQ(rows[2][3], "unwritten");
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
