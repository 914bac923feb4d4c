// corrupt_test: damaged images must be refused with a message, never crash or hang.
//
// A small populated image is unmounted cleanly; then for many seeds a few bytes are
// flipped in one metadata area (superblock, journal, live inodes, bitmap, directory
// blocks, extent index/leaf blocks) or anywhere, and fsck and mount run on the result.
// Checksummed structures (superblock, inodes, directory and extent blocks) must always
// be detected by fsck, and then mount must refuse too; the bitmap must be detected by
// fsck's cross-check; a damaged log with committed transactions may only lose (at most)
// its last transaction silently. The journal header may be redundant, so one damaged
// copy need not be reported, but a destroyed header block must be. Whatever mounts is exercised (walk, read, write, unmount).
// A watchdog (alarm) turns a hang into a failure. Also: zero-filled, junk, truncated
// images, and superblocks with a valid checksum but impossible geometry.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <map>
#include <fstream>
#include <random>

#include "media/format.h"
#include "test_util.h"

namespace sdx {
namespace {

using test::cbytes;
using test::pattern;

constexpr uint64_t kDevSize = 2ull << 20;
constexpr uint64_t kB = media::kBlockSize;

std::string fsck_text(const FsckReport& r) {
  std::string s = r.usable ? "" : "[unusable] ";
  for (auto& p : r.problems) s += p + "; ";
  return s;
}

// A clean, populated image: directories (one with several blocks), small and large
// files, one with more extents than fit in the inode (index + leaf blocks).
device::CrashImage populated_image() {
  auto dev = test::formatted_sim(kDevSize);
  if (!dev) return {};
  auto fs = FileSystem::mount(std::move(dev), {.commit_interval_ms = 0});
  if (!fs) return {};
  FileSystem& f = **fs;
  auto must = [](auto r) {
    if (!r) {
      ADD_FAILURE() << r.error().to_string();
    }
    return r;
  };
  must(f.mkdir("/dir"));
  must(f.mkdir("/dir/sub"));
  for (int i = 0; i < 20; ++i) {
    auto file = must(f.open("/dir/file" + std::to_string(i), O_CREAT | O_RDWR));
    if (file) must(test::write_all(*file, cbytes(pattern(i, 0, 100 + 700 * i)), 0));
  }
  {
    auto frag = must(f.open("/dir/sub/frag", O_CREAT | O_RDWR));
    for (uint64_t b = 0; b < 30 && frag; ++b)
      must(test::write_all(*frag, cbytes(pattern(99, 2 * b * kB, kB)), 2 * b * kB));
  }
  {
    auto big = must(f.open("/big", O_CREAT | O_RDWR));
    if (big) must(test::write_all(*big, cbytes(pattern(7, 0, 200 * kB)), 0));
  }
  // Leave a little history in the journal area too.
  must(f.sync());
  must(f.unlink("/dir/file3"));
  must(f.unmount());
  return test::durable_image(f);
}

// An image whose journal holds committed transactions not yet written home (a power
// failure after fsync, before any checkpoint).
device::CrashImage pending_image() {
  auto dev = test::formatted_sim(kDevSize);
  if (!dev) return {};
  device::SimDevice* sim = dev.get();
  auto fs = FileSystem::mount(std::move(dev), {.commit_interval_ms = 0});
  if (!fs) return {};
  FileSystem& f = **fs;
  (void)f.mkdir("/dir");
  for (int i = 0; i < 10; ++i) {
    auto file = f.open("/dir/file" + std::to_string(i), O_CREAT | O_RDWR);
    if (!file) return {};
    (void)test::write_all(*file, cbytes(pattern(i, 0, 5000)), 0);
    (void)file->fsync();
  }
  auto img = sim->crash_image(0.0, false, 0);
  (void)f.unmount();
  return img;
}

struct Regions {
  media::Superblock sb{};
  std::vector<std::pair<uint64_t, uint64_t>> inodes;   // live inode slots [off, len)
  std::vector<uint64_t> dir_blocks, leaf_blocks, index_blocks;  // byte offsets
  uint64_t bitmap_off = 0, bitmap_len = 0;  // bytes covering the data area
  uint64_t journal_off = 0, journal_len = 0;
};

bool bit(const std::string& img, const Regions& r, uint64_t block) {
  uint8_t byte = static_cast<uint8_t>(img[r.sb.bitmap_start * kB + block / 8]);
  return byte & (1u << (block % 8));
}

Regions find_regions(const std::string& img) {
  Regions r;
  std::memcpy(&r.sb, img.data(), sizeof r.sb);
  const auto& sb = r.sb;
  for (uint64_t i = 0; i < sb.inode_count; ++i) {
    uint64_t off = sb.inode_start * kB + i * media::kInodeSize;
    media::DiskInode di;
    std::memcpy(&di, img.data() + off, sizeof di);
    if (di.mode != 0) r.inodes.emplace_back(off, media::kInodeSize);
  }
  for (uint64_t b = sb.data_start; b < sb.total_blocks; ++b) {
    if (!bit(img, r, b)) continue;  // only live blocks
    uint32_t magic;
    std::memcpy(&magic, img.data() + b * kB, sizeof magic);
    if (magic == media::kDirMagic) r.dir_blocks.push_back(b * kB);
    if (magic == media::kLeafMagic) r.leaf_blocks.push_back(b * kB);
    if (magic == media::kIndexMagic) r.index_blocks.push_back(b * kB);
  }
  r.bitmap_off = sb.bitmap_start * kB + sb.data_start / 8 + 1;  // whole bytes of data bits
  r.bitmap_len = (sb.total_blocks - sb.data_start) / 8 - 1;
  r.journal_off = sb.journal_start * kB;
  r.journal_len = sb.journal_blocks * kB;
  return r;
}

enum class Area { kSuper, kInode, kDir, kLeaf, kIndex, kBitmap, kJournalHeader, kJournal, kJournalPending, kAnywhere, kCount };
const char* area_name(Area a) {
  static const char* n[] = {"superblock", "inode", "directory block", "extent leaf",
                            "extent index", "bitmap", "journal header", "journal",
                            "pending journal", "anywhere"};
  return n[static_cast<int>(a)];
}

struct Outcome {
  bool fsck_clean = false;
  bool fsck_usable = false;
  bool mounted = false;
  std::string mount_error;
};

// fsck, mount, and if it mounts, use it. Must return (the watchdog kills a hang).
Outcome try_image(const device::CrashImage& img) {
  Outcome o;
  {
    auto dev = device::make_sim(img);
    if (!dev) {
      ADD_FAILURE() << "make_sim failed";
      return o;
    }
    FsckReport rep = FileSystem::fsck(*dev);
    o.fsck_clean = rep.clean();
    o.fsck_usable = rep.usable;
    if (!rep.clean()) {
      EXPECT_FALSE(rep.problems.empty()) << "fsck found the image unclean but said nothing";
      for (auto& p : rep.problems) EXPECT_FALSE(p.empty());
    }
  }
  auto fs = FileSystem::mount(device::make_sim(img), {.commit_interval_ms = 0});
  if (!fs) {
    o.mount_error = fs.error().to_string();
    EXPECT_FALSE(fs.error().message.empty()) << "mount refused without a message";
    return o;
  }
  o.mounted = true;
  // Exercise whatever mounted; errors are fine, crashes are not.
  FileSystem& f = **fs;
  if (auto tree = test::snapshot(f); tree) {
    for (auto& [p, n] : *tree)
      if (!n.is_dir) (void)f.stat(p);
  }
  (void)f.statfs();
  if (auto file = f.open("/new-after-corruption", O_CREAT | O_RDWR); file) {
    (void)test::write_all(*file, cbytes(pattern(5, 0, 3 * kB)), 0);
    (void)file->fsync();
  }
  (void)f.unlink("/dir/file1");
  (void)f.mkdir("/dir/newdir");
  (void)f.unmount();
  return o;
}

class Watchdog {
 public:
  explicit Watchdog(unsigned seconds) { alarm(seconds); }
  ~Watchdog() { alarm(0); }
};

TEST(Corrupt, CleanImageIsClean) {
  auto img = populated_image();
  ASSERT_FALSE(img.bytes.empty());
  auto r = find_regions(img.bytes);
  EXPECT_GT(r.inodes.size(), 20u);
  EXPECT_GE(r.dir_blocks.size(), 3u);  // root, /dir (2 blocks), /dir/sub
  EXPECT_GE(r.leaf_blocks.size(), 1u);
  EXPECT_GE(r.index_blocks.size(), 1u);
  Outcome o = try_image(img);
  EXPECT_TRUE(o.fsck_clean);
  EXPECT_TRUE(o.mounted) << o.mount_error;
}

TEST(Corrupt, RandomFlipsInMetadata) {
  const auto img = populated_image();
  ASSERT_FALSE(img.bytes.empty());
  const Regions r = find_regions(img.bytes);
  const auto pending = pending_image();
  ASSERT_FALSE(pending.bytes.empty());
  ASSERT_TRUE(FileSystem::fsck(*device::make_sim(pending)).clean());
  ASSERT_FALSE(r.dir_blocks.empty());
  ASSERT_FALSE(r.leaf_blocks.empty());
  ASSERT_FALSE(r.index_blocks.empty());
  const uint64_t cases = test::env_u64("SYNCDAX_CORRUPT_CASES", 600);
  struct Tally {
    int cases = 0, fsck_detected = 0, mount_refused = 0;
  };
  std::map<Area, Tally> tally;
  std::vector<std::string> misses;
  int lost_cases = 0;
  for (uint64_t seed = 0; seed < cases; ++seed) {
    std::mt19937_64 rng(seed);
    Area area = static_cast<Area>(seed % static_cast<int>(Area::kCount));
    // Choose the region [off, off+len) to damage.
    uint64_t off = 0, len = 0;
    switch (area) {
      case Area::kSuper: off = 0, len = sizeof(media::Superblock); break;
      case Area::kInode: std::tie(off, len) = r.inodes[rng() % r.inodes.size()]; break;
      case Area::kDir: off = r.dir_blocks[rng() % r.dir_blocks.size()], len = kB; break;
      case Area::kLeaf: off = r.leaf_blocks[rng() % r.leaf_blocks.size()], len = kB; break;
      case Area::kIndex: off = r.index_blocks[rng() % r.index_blocks.size()], len = kB; break;
      case Area::kBitmap: off = r.bitmap_off, len = r.bitmap_len; break;
      case Area::kJournalHeader: off = r.journal_off, len = 256; break;
      case Area::kJournal: off = r.journal_off, len = std::min<uint64_t>(r.journal_len, 16 * kB); break;
      case Area::kJournalPending: off = r.journal_off, len = std::min<uint64_t>(r.journal_len, 64 * kB); break;
      default: off = 0, len = img.bytes.size(); break;
    }
    const device::CrashImage& base = area == Area::kJournalPending ? pending : img;
    device::CrashImage bad = base;
    const int flips = 1 + static_cast<int>(rng() % 4);
    std::string where;
    for (int i = 0; i < flips; ++i) {
      uint64_t at = off + rng() % len;
      uint8_t x = static_cast<uint8_t>(1 + rng() % 255);  // never 0: the byte changes
      bad.bytes[at] = static_cast<char>(static_cast<uint8_t>(bad.bytes[at]) ^ x);
      where += " " + std::to_string(at);
    }
    if (bad.bytes == base.bytes) continue;  // two flips cancelled out
    Outcome o;
    {
      Watchdog dog(60);
      o = try_image(bad);
    }
    ASSERT_FALSE(HasFatalFailure());
    Tally& t = tally[area];
    ++t.cases;
    t.fsck_detected += !o.fsck_clean;
    t.mount_refused += !o.mounted;
    const bool checksummed = area == Area::kSuper || area == Area::kInode || area == Area::kDir ||
                             area == Area::kLeaf || area == Area::kIndex;
    if ((checksummed || area == Area::kBitmap) && o.fsck_clean)
      misses.push_back(std::string(area_name(area)) + " flip at" + where + " (seed " +
                       std::to_string(seed) + ") not detected by fsck");
    if (checksummed && o.mounted)
      misses.push_back(std::string(area_name(area)) + " flip at" + where + " (seed " +
                       std::to_string(seed) + ") mounted anyway");
    if (area == Area::kSuper) {
      EXPECT_FALSE(o.fsck_usable) << "superblock flip at" << where;
    }
    if (area == Area::kJournalPending && o.mounted) {
      // Recovery accepted the damaged log. It cannot tell a damaged last transaction
      // from a torn one, but losing earlier committed transactions -- the log goes on
      // with valid ones after the damage -- must not pass in silence.
      auto fs = FileSystem::mount(device::make_sim(bad), {.commit_interval_ms = 0});
      std::string missing;
      if (fs) {
        for (int i = 0; i < 10; ++i) {
          auto d = test::read_file(**fs, "/dir/file" + std::to_string(i));
          if (!d || *d != pattern(i, 0, 5000)) missing += " file" + std::to_string(i);
        }
        (void)(*fs)->unmount();
      }
      if (!missing.empty()) ++lost_cases;
      if (!missing.empty() && missing != " file9")
        misses.push_back("pending journal flip at" + where + " (seed " + std::to_string(seed) +
                         "): mounted without complaint, fsync'ed files lost:" + missing);
    }
  }
  for (auto& [a, t] : tally)
    std::printf("%-16s %3d cases: fsck detected %3d, mount refused %3d\n", area_name(a), t.cases,
                t.fsck_detected, t.mount_refused);
  std::printf("pending journal: %d damaged logs mounted without complaint but lost fsync'ed files\n",
              lost_cases);
  std::string list;
  for (size_t i = 0; i < misses.size() && i < 20; ++i) list += "\n  " + misses[i];
  EXPECT_TRUE(misses.empty()) << misses.size() << " corruptions slipped through:" << list;
  int detected = 0;
  for (auto& [a, t] : tally) detected += t.fsck_detected;
  EXPECT_GT(detected, static_cast<int>(cases) / 2);
}

// The journal header may keep redundant copies (one damaged copy is survivable), but
// with the whole header block gone the image must be refused.
TEST(Corrupt, JournalHeaderBlockDestroyed) {
  const auto img = populated_image();
  ASSERT_FALSE(img.bytes.empty());
  const Regions r = find_regions(img.bytes);
  for (int fill : {0x00, 0xff, -1}) {
    device::CrashImage bad = img;
    std::mt19937_64 rng(3);
    for (uint64_t i = 0; i < kB; ++i)
      bad.bytes[r.journal_off + i] = static_cast<char>(fill >= 0 ? fill : static_cast<int>(rng()));
    Watchdog dog(60);
    Outcome o = try_image(bad);
    EXPECT_FALSE(o.fsck_clean) << "journal header block filled with " << fill;
    EXPECT_FALSE(o.mounted) << "journal header block filled with " << fill;
  }
}

TEST(Corrupt, ZeroFilledDevice) {
  auto dev = device::make_sim(kDevSize);
  ASSERT_TRUE(dev);
  FsckReport rep = FileSystem::fsck(*dev);
  EXPECT_FALSE(rep.usable);
  ASSERT_FALSE(rep.problems.empty());
  EXPECT_FALSE(rep.problems[0].empty());
  auto fs = FileSystem::mount(std::move(dev), {.commit_interval_ms = 0});
  ASSERT_FALSE(fs.has_value());
  EXPECT_FALSE(fs.error().message.empty());
}

TEST(Corrupt, RandomJunkAfterLabel) {
  for (uint64_t seed = 0; seed < 8; ++seed) {
    std::mt19937_64 rng(seed);
    device::CrashImage junk;
    junk.bytes.resize(kDevSize);
    for (auto& c : junk.bytes) c = static_cast<char>(rng());
    Watchdog dog(60);
    Outcome o = try_image(junk);
    EXPECT_FALSE(o.fsck_usable);
    EXPECT_FALSE(o.mounted);
  }
}

TEST(Corrupt, ValidSuperblockOverJunk) {
  // The superblock checks out but the journal, inodes and bitmap are junk.
  const auto img = populated_image();
  ASSERT_FALSE(img.bytes.empty());
  for (uint64_t seed = 0; seed < 8; ++seed) {
    std::mt19937_64 rng(seed);
    device::CrashImage junk = img;
    for (size_t i = kB; i < junk.bytes.size(); ++i) junk.bytes[i] = static_cast<char>(rng());
    Watchdog dog(60);
    Outcome o = try_image(junk);
    EXPECT_FALSE(o.fsck_clean);
    EXPECT_FALSE(o.mounted);
  }
}

// A superblock whose checksum is right but whose geometry is impossible.
TEST(Corrupt, ImpossibleGeometryWithValidChecksum) {
  const auto img = populated_image();
  ASSERT_FALSE(img.bytes.empty());
  media::Superblock good;
  std::memcpy(&good, img.bytes.data(), sizeof good);
  std::vector<std::pair<std::string, std::function<void(media::Superblock&)>>> lies = {
      {"total_blocks beyond the device", [](auto& s) { s.total_blocks *= 4; }},
      {"total_blocks huge", [](auto& s) { s.total_blocks = ~0ull / 2; }},
      {"block size 8192", [](auto& s) { s.block_size = 8192; }},
      {"version 99", [](auto& s) { s.version = 99; }},
      {"journal empty", [](auto& s) { s.journal_blocks = 0; }},
      {"journal overlaps superblock", [](auto& s) { s.journal_start = 0; }},
      {"inode table overlaps journal", [](auto& s) { s.inode_start = s.journal_start; }},
      {"inode count beyond table", [](auto& s) { s.inode_count = s.inode_blocks * media::kInodesPerBlock * 64; }},
      {"bitmap too small", [](auto& s) { s.bitmap_blocks = 0; }},
      {"data start past the end", [](auto& s) { s.data_start = s.total_blocks + 10; }},
      {"data blocks too many", [](auto& s) { s.data_blocks = s.total_blocks; }},
      {"root inode 0", [](auto& s) { s.root_ino = 0; }},
      {"root inode out of range", [](auto& s) { s.root_ino = s.inode_count + 5; }},
      {"geometry wraps around", [](auto& s) { s.inode_start = ~0ull - 1; }},
  };
  for (auto& [what, lie] : lies) {
    media::Superblock sb = good;
    lie(sb);
    media::seal(sb);
    device::CrashImage bad = img;
    std::memcpy(bad.bytes.data(), &sb, sizeof sb);
    Watchdog dog(60);
    Outcome o = try_image(bad);
    EXPECT_FALSE(o.fsck_clean) << what << ": fsck called it clean";
    EXPECT_FALSE(o.mounted) << what << ": mounted";
  }
}

// ---- image files ----
Status make_populated_file(const std::string& path) {
  SDX_TRY(FileSystem::mkfs(path, {.size = 8 << 20}));
  SDX_ASSIGN(auto fs, FileSystem::mount(path, {.commit_interval_ms = 0}));
  SDX_TRY(fs->mkdir("/d"));
  {
    SDX_ASSIGN(File f, fs->open("/d/f", O_CREAT | O_RDWR));
    SDX_TRY(test::write_all(f, cbytes(pattern(1, 0, 3 << 20)), 0));  // reaches past half
  }
  return fs->unmount();
}

TEST(Corrupt, TruncatedImageFile) {
  for (uint64_t keep : {uint64_t{6} << 20, uint64_t{4} << 20, uint64_t{1} << 20, uint64_t{8192},
                        uint64_t{4096}, uint64_t{100}, uint64_t{0}}) {
    test::TempPath path("corrupt_trunc");
    SDX_ASSERT_OK(make_populated_file(path));
    ASSERT_TRUE(FileSystem::fsck(path.str()).clean());
    ASSERT_EQ(::truncate(path.str().c_str(), static_cast<off_t>(keep)), 0);
    Watchdog dog(60);
    FsckReport rep = FileSystem::fsck(path.str());
    EXPECT_FALSE(rep.usable) << "truncated to " << keep << ": " << fsck_text(rep);
    EXPECT_FALSE(rep.problems.empty());
    auto fs = FileSystem::mount(path.str(), {.commit_interval_ms = 0});
    EXPECT_FALSE(fs.has_value()) << "truncated to " << keep << " bytes but mounted";
    if (!fs) {
      EXPECT_FALSE(fs.error().message.empty());
    }
  }
}

TEST(Corrupt, JunkFile) {
  test::TempPath path("corrupt_junk");
  {
    std::ofstream out(path.str(), std::ios::binary);
    std::mt19937_64 rng(1);
    for (int i = 0; i < (1 << 20); ++i) out.put(static_cast<char>(rng()));
  }
  FsckReport rep = FileSystem::fsck(path.str());
  EXPECT_FALSE(rep.usable);
  ASSERT_FALSE(rep.problems.empty());
  EXPECT_FALSE(rep.problems[0].empty());
  auto fs = FileSystem::mount(path.str());
  ASSERT_FALSE(fs.has_value());
  EXPECT_FALSE(fs.error().message.empty());
  // A file that does not exist.
  EXPECT_FALSE(FileSystem::fsck(path.str() + ".missing").usable);
  EXPECT_FALSE(FileSystem::mount(path.str() + ".missing").has_value());
}

// fsck is documented to replay the journal in memory only: an image with committed but
// not checkpointed transactions must be byte-for-byte unchanged by fsck.
TEST(Corrupt, FsckDoesNotModifyTheImage) {
  auto dev = test::formatted_sim(kDevSize);
  ASSERT_TRUE(dev);
  device::SimDevice* sim = dev.get();
  SDX_ASSERT_OK_AND_ASSIGN(auto fs, FileSystem::mount(std::move(dev), {.commit_interval_ms = 0}));
  {
    SDX_ASSERT_OK(fs->mkdir("/d"));
    SDX_ASSERT_OK_AND_ASSIGN(File f, fs->open("/d/f", O_CREAT | O_RDWR));
    SDX_ASSERT_OK(test::write_all(f, cbytes(pattern(3, 0, 20000)), 0));
    SDX_ASSERT_OK(f.fsync());
  }
  // Power fails now: the journal holds the transactions, home locations do not.
  auto img = sim->crash_image(0.0, false, 0);
  SDX_ASSERT_OK(fs->unmount());
  fs.reset();
  auto copy = device::make_sim(img);
  ASSERT_TRUE(copy);
  const std::string before(reinterpret_cast<const char*>(copy->bytes().data()), copy->size());
  FsckReport rep = FileSystem::fsck(*copy);
  EXPECT_TRUE(rep.clean()) << fsck_text(rep);
  const std::string after(reinterpret_cast<const char*>(copy->bytes().data()), copy->size());
  EXPECT_TRUE(before == after) << "fsck wrote to the device it checked";
  // And the image still mounts with the data.
  SDX_ASSERT_OK_AND_ASSIGN(auto fs2, FileSystem::mount(std::move(copy), {.commit_interval_ms = 0}));
  SDX_ASSERT_OK_AND_ASSIGN(auto d, test::read_file(*fs2, "/d/f"));
  EXPECT_EQ(d, pattern(3, 0, 20000));
}

}  // namespace
}  // namespace sdx
