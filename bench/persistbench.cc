// persistbench: what it costs to make one small update durable, four ways, measured in
// one run round robin with the same random offsets, so that the ratios against syncdax
// compare moments of the same machine. The media differ in what they survive, and the
// output says so next to every figure that depends on it.
#include "persistbench.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "device/device.h"
#include "fs_type.h"
#include "pmem/pmem.h"
#include "bench_util.h"
#include "pmem2_util.h"
#include "syncdax/syncdax.hpp"

namespace sdx::bench {
namespace {

using namespace util;


constexpr size_t kPage = 4096;
constexpr size_t kSizes[] = {64, 256, 4096};
// Each row's updates are split into this many slices, taken round robin over the rows,
// so that a slow phase of a shared machine spreads over every row instead of one.
constexpr size_t kRounds = 20;
constexpr size_t kFillChunk = 1 << 20;
constexpr const char* kSyncdaxFile = "/persistbench";


// A kernel file of `size` bytes, allocated and written (zeros) and fsynced, so that a
// timed update overwrites a written block: no allocation, no unwritten-extent conversion.
int kernel_file(const std::string& path, uint64_t size) {
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
  if (fd < 0) abort_errno("create " + path);
  if (::fallocate(fd, 0, 0, static_cast<off_t>(size)) != 0) abort_errno("fallocate " + path);
  std::vector<std::byte> zeros(kFillChunk);
  for (uint64_t off = 0; off < size; off += kFillChunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kFillChunk, size - off));
    if (::pwrite(fd, zeros.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) abort_errno("write " + path);
  }
  if (::fsync(fd) != 0) abort_errno("fsync " + path);
  return fd;
}

// ---- the four ways ----

class Method {
 public:
  virtual ~Method() = default;
  // Store n bytes at off and return once they are durable.
  virtual void update(uint64_t off, const std::byte* src, size_t n) = 0;
};

class SyncdaxPersist final : public Method {
 public:
  explicit SyncdaxPersist(Mapping m) : m_(std::move(m)) {}
  void update(uint64_t off, const std::byte* src, size_t n) override {
    std::byte* dst = m_.data() + off;
    std::memcpy(dst, src, n);
    need(m_.persist(dst, n), "persist");
  }

 private:
  Mapping m_;
};

class KernelMsync final : public Method {
 public:
  KernelMsync(const std::string& path, uint64_t size) : fd_(kernel_file(path, size)), map_(map(path, size)) {}
  void update(uint64_t off, const std::byte* src, size_t n) override {
    std::memcpy(map_.data() + off, src, n);
    const uint64_t first = off & ~uint64_t{kPage - 1};
    const uint64_t end = (off + n + kPage - 1) & ~uint64_t{kPage - 1};
    if (::msync(map_.data() + first, end - first, MS_SYNC) != 0) abort_errno("msync");
  }

 private:
  Region map(const std::string& path, uint64_t size) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (p == MAP_FAILED) abort_errno("mmap " + path);
    return Region(static_cast<std::byte*>(p), size);
  }
  Fd fd_;
  Region map_;
};

class KernelPwrite final : public Method {
 public:
  KernelPwrite(const std::string& path, uint64_t size) : fd_(kernel_file(path, size)) {}
  void update(uint64_t off, const std::byte* src, size_t n) override {
    if (::pwrite(fd_.get(), src, n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) abort_errno("pwrite");
    if (::fdatasync(fd_.get()) != 0) abort_errno("fdatasync");
  }

 private:
  Fd fd_;
};

// libpmem2 flush + drain on a raw mapping (pmem2_util.h): no file system at all.
class Pmem2Flush final : public Method {
 public:
  Pmem2Flush(const std::string& path, uint64_t size) : map_(path, size) {}
  void update(uint64_t off, const std::byte* src, size_t n) override {
    std::byte* dst = map_.data() + off;
    std::memcpy(dst, src, n);
    map_.flush(dst, n);
    map_.drain();
  }
  pmem2_granularity granularity() const { return map_.granularity(); }

 private:
  Pmem2Map map_;
};

// ---- rows ----

struct MethodInfo {
  std::string key;       // json
  std::string label;     // its line in the table
  std::string what;      // the header's description
  std::string survives;  // what a durable update survives on this medium
  bool power_failure = false;
};

struct Row {
  size_t method;
  size_t size;
  std::vector<double> us;
};

// A full pass of stores made durable before timing, so that no timed update takes a
// first-touch fault or allocates: the figures are the steady cost of an overwrite. The
// kernel's files need none: kernel_file wrote them through the page cache, and after
// msync a page is write-protected again, so each msync update faults by nature.
void warm(Method& m, uint64_t region) {
  std::vector<std::byte> page(kPage, std::byte{0x5a});
  for (uint64_t off = 0; off < region; off += kPage) m.update(off, page.data(), kPage);
}

double ops_per_s(const Stats& s) { return s.avg > 0 ? 1e6 / s.avg : 0; }


Status run(const PersistBenchOptions& opt) {
  if (opt.ops == 0) return fail(EINVAL, "--ops must be at least 1");
  if (opt.region < kPage || opt.region % kPage != 0) return fail(EINVAL, "--region must be a positive multiple of 4096");

  const std::string prefix = "syncdax-persistbench-" + std::to_string(::getpid());
  const std::string image = "/dev/shm/" + prefix + ".img";
  const std::string pmem2_path = "/dev/shm/" + prefix + ".pmem2";
  const std::string msync_path = opt.dir + "/" + prefix + ".msync.tmp";
  const std::string pwrite_path = opt.dir + "/" + prefix + ".pwrite.tmp";
  Removal remove_image(image), remove_pmem2(pmem2_path), remove_msync(msync_path), remove_pwrite(pwrite_path);

  const bool tty = ::isatty(STDERR_FILENO) == 1;
  auto note = [&](const std::string& what) {
    std::fprintf(stderr, tty ? "\r\033[Kpersistbench: %s" : "persistbench: %s\n", what.c_str());
    std::fflush(stderr);
  };

  // The region, with room for the journal (1/16 of the medium) and the metadata.
  MkfsOptions mk;
  mk.kind = DeviceKind::kFile;
  mk.size = (opt.region + opt.region / 4 + (32ull << 20) + (1 << 20) - 1) & ~uint64_t{(1 << 20) - 1};
  note("preparing the four files (" + mib(opt.region) + " each)");
  need(FileSystem::mkfs(image, mk), "mkfs " + image);
  // Mounted as an application would: the background committer runs every second.
  auto fs = need(FileSystem::mount(image), "mount " + image);
  std::vector<std::unique_ptr<Method>> methods;
  {
    File f = need(fs->open(kSyncdaxFile, O_CREAT | O_RDWR, 0644), kSyncdaxFile);
    need(f.fallocate(0, 0, opt.region), std::string("fallocate ") + kSyncdaxFile);
    need(f.fsync(), std::string("fsync ") + kSyncdaxFile);
    Mapping m = need(f.mmap(0, opt.region, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC),
                     std::string("mmap MAP_SYNC ") + kSyncdaxFile);
    if (m.granularity() != Granularity::kCacheLine)
      return fail(EOPNOTSUPP, "the MAP_SYNC mapping did not get cache-line granularity");
    methods.push_back(std::make_unique<SyncdaxPersist>(std::move(m)));
  }
  methods.push_back(std::make_unique<KernelMsync>(msync_path, opt.region));
  methods.push_back(std::make_unique<KernelPwrite>(pwrite_path, opt.region));
  auto pmem2 = std::make_unique<Pmem2Flush>(pmem2_path, opt.region);
  const pmem2_granularity pmem2_gran = pmem2->granularity();
  methods.push_back(std::move(pmem2));
  note("warming the two raw mappings: one durable store to each page");
  warm(*methods[0], opt.region);
  warm(*methods[3], opt.region);

  const FsType kfs = fs_type_of(opt.dir);
  const bool kernel_in_ram = kfs.name == "tmpfs" || kfs.name == "ramfs";
  const std::string kernel_survives =
      kernel_in_ram ? "a process crash only (" + kfs.name + " is RAM)"
                    : "a power failure, if the disk honours the cache flush fdatasync/msync sends (" + kfs.name + ")";
  const std::string dev_survives = fs->device().durability();
  const std::string pmem2_survives = "a process crash only (tmpfs is RAM, as for (a)); no file system: the floor";
  const std::vector<MethodInfo> info = {
      {"syncdax_map_sync_persist", "(a) syncdax MAP_SYNC + persist",
       "memcpy + Mapping::persist through MAP_SHARED_VALIDATE|MAP_SYNC (cache-line granularity)", dev_survives,
       fs->device().survives_power_failure()},
      {"kernel_mmap_msync", "(b) " + kfs.name + " mmap + msync",
       "memcpy + msync(MS_SYNC) of the touched page through MAP_SHARED", kernel_survives, !kernel_in_ram},
      {"kernel_pwrite_fdatasync", "(c) " + kfs.name + " pwrite + fdatasync", "pwrite + fdatasync",
       kernel_survives, !kernel_in_ram},
      {"pmem2_flush_drain", "(d) libpmem2 flush + drain",
       "memcpy + pmem2 flush + drain on a raw mapping, no file system", pmem2_survives, false},
  };

  // The same random aligned offsets for every method, per update size.
  std::mt19937_64 rng(20171101);
  std::vector<std::vector<uint64_t>> offsets;
  for (size_t n : kSizes) {
    std::uniform_int_distribution<uint64_t> slot(0, opt.region / n - 1);
    auto& v = offsets.emplace_back(opt.ops);
    for (uint64_t& o : v) o = slot(rng) * n;
  }
  std::vector<Row> rows;
  for (size_t s = 0; s < std::size(kSizes); ++s)
    for (size_t m = 0; m < methods.size(); ++m) rows.push_back({m, s, {}});

  const double floor_us = timer_floor_us();
  const auto& pc = pmem::config();
  std::printf("syncdax persistbench: the cost of making one small update durable: %zu updates per method and\n"
              "size at random aligned offsets in a %s region, each timed from its store (or pwrite) until\n"
              "it is durable; microseconds. Same offsets for every method, rows measured round robin.\n",
              opt.ops, mib(opt.region).c_str());
  std::printf("  (a) %s\n      of a preallocated file on the %s device %s\n"
              "      (%s, created for this run and removed after); flush: %s\n      survives: %s\n",
              info[0].what.c_str(), std::string(device::kind_name(fs->device().kind())).c_str(), image.c_str(),
              mib(fs->device().size() + device::kLabelSize).c_str(),
              std::string(pmem::flush_kind_name(pc.flush)).c_str(), info[0].survives.c_str());
  std::printf("  (b) %s\n      of a preallocated, written file in %s (%s)\n      survives: %s\n",
              info[1].what.c_str(), opt.dir.c_str(), kfs.description.c_str(), info[1].survives.c_str());
  std::printf("  (c) %s on another such file there\n      survives: %s\n", info[2].what.c_str(),
              info[2].survives.c_str());
  std::printf("  (d) %s, of a preallocated file\n      %s; asked for page granularity with %s=CACHE_LINE, got: %s\n"
              "      survives: %s\n",
              info[3].what.c_str(), pmem2_path.c_str(), Pmem2Map::kForce,
              std::string(granularity_name(pmem2_gran)).c_str(), info[3].survives.c_str());
  std::printf("  timer:   clock_gettime(CLOCK_MONOTONIC) around each update, read after an mfence so that the\n"
              "           update's cache-line write-backs are done; an empty timed region: %s us\n",
              fmt_us(floor_us).c_str());
  const std::string load_before = machine_load();
  std::printf("  machine: load average %s at the start\n\n", load_before.c_str());
  std::fflush(stdout);

  alignas(64) static std::byte src[kPage];
  const size_t rounds = std::min(kRounds, opt.ops);
  for (size_t round = 0; round < rounds; ++round) {
    if (tty) note("round " + std::to_string(round + 1) + "/" + std::to_string(rounds));
    const size_t lo = opt.ops * round / rounds, hi = opt.ops * (round + 1) / rounds;
    for (Row& row : rows) {
      const size_t n = kSizes[row.size];
      Method& m = *methods[row.method];
      for (size_t i = lo; i < hi; ++i) {
        // New bytes every update, written outside the timed region.
        std::memset(src, static_cast<int>(i & 0xff), n);
        const uint64_t t0 = now_ns();
        m.update(offsets[row.size][i], src, n);
        row.us.push_back(static_cast<double>(now_ns_stores_done() - t0) / 1e3);
      }
    }
  }
  if (tty) std::fprintf(stderr, "\r\033[K");
  const std::string load_after = machine_load();

  std::vector<Stats> stats;
  for (const Row& row : rows) stats.push_back(stats_of(row.us));
  auto ref_of = [&](size_t i) { return stats[i - rows[i].method]; };  // (a) of the same size

  std::printf("%-6s %-36s %9s %9s %9s %10s | %10s %10s %10s\n", "size", "method", "p50", "p99", "avg", "ops/s",
              "p50/(a)", "p99/(a)", "avg/(a)");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Stats& s = stats[i];
    const Stats ref = ref_of(i);
    std::printf("%-6s %-36s %9s %9s %9s %10.0f | %10s %10s %10s\n", size_name(kSizes[rows[i].size]).c_str(),
                info[rows[i].method].label.c_str(), fmt_us(s.p50).c_str(), fmt_us(s.p99).c_str(),
                fmt_us(s.avg).c_str(), ops_per_s(s), fmt_ratio(s.p50, ref.p50).c_str(),
                fmt_ratio(s.p99, ref.p99).c_str(), fmt_ratio(s.avg, ref.avg).c_str());
    if (rows[i].method + 1 == methods.size() && i + 1 < rows.size()) std::printf("\n");
  }
  std::printf("ops/s: one thread, updates back to back (1 / avg). Ratios: against (a) of the same size.\n");
  std::printf("machine load average at the end: %s\n", load_after.c_str());
  std::printf("note: (a) and (d) make an update survive a process crash only, their medium being RAM under\n"
              "      /dev/shm; (b) and (c) %s. The ratios compare the cost of\n"
              "      each way on this machine, not equally durable results.\n",
              kernel_in_ram ? "are in RAM too" : "wait for the disk and survive a power failure");

  if (!opt.json_path.empty()) {
    Json jm = Json::array();
    for (const MethodInfo& m : info)
      jm.push_back({{"key", m.key}, {"label", m.label}, {"what", m.what}, {"survives", m.survives},
                    {"survives_power_failure", m.power_failure}});
    Json jr = Json::array();
    for (size_t i = 0; i < rows.size(); ++i) {
      const Stats& s = stats[i];
      const Stats ref = ref_of(i);
      auto ratio = [](double a, double b) { return b > 0 ? a / b : 0; };
      jr.push_back({{"method", info[rows[i].method].key},
                    {"size", kSizes[rows[i].size]},
                    {"stats_us", stats_json(s)},
                    {"ops_per_s", ops_per_s(s)},
                    {"ratio_to_syncdax",
                     {{"p50", ratio(s.p50, ref.p50)}, {"p99", ratio(s.p99, ref.p99)}, {"avg", ratio(s.avg, ref.avg)}}}});
    }
    Json j{{"benchmark", "syncdax persistbench"},
           {"ops", opt.ops},
           {"region", opt.region},
           {"rounds", rounds},
           {"methods", jm},
           {"rows", jr}};
    j.update(setting_json(*fs, image, dev_survives, opt.dir, kfs, pmem2_gran, floor_us, load_before, load_after));
    write_json(opt.json_path, j);
  }

  methods.clear();
  need(fs->unmount(), "unmount " + image);
  return ok();
}

}  // namespace

Status run_persistbench(const PersistBenchOptions& opt) {
  return catching_aborts([&] { return run(opt); });
}

}  // namespace sdx::bench
