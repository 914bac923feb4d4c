// logbench: an append-only log where every append is durable before it returns, the
// workload MAP_SYNC was made for, three ways in one run round robin so that the ratios
// against syncdax compare moments of the same machine.
//
// The log protocol of (a) and (c), the usual one for persistent memory: the log starts
// with a 64-byte header whose first 8 bytes are the tail (the file offset just past the
// last complete record); each record is an 8-byte length and the payload. An append
// copies the record to the tail and persists it, then stores the new tail and persists
// that. The tail is one aligned 8-byte store, which the CPU never tears, so recovery
// trusts exactly the records before it: a crash between the two persists loses the
// record being appended, never a complete one. (b) needs no tail: fdatasync makes the
// record and the file's new size durable together, and a reader walks the lengths.
#include "logbench.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include "bench_util.h"
#include "device/device.h"
#include "fs_type.h"
#include "pmem/pmem.h"
#include "pmem2_util.h"
#include "syncdax/syncdax.hpp"

namespace sdx::bench {
namespace {

using namespace util;

constexpr size_t kPage = 4096;
constexpr size_t kSizes[] = {64, 1024};
constexpr uint64_t kHeader = 64;
constexpr size_t kLength = sizeof(uint64_t);
// Each row's appends are split into this many slices, taken round robin over the rows,
// so that a slow phase of a shared machine spreads over every row instead of one.
constexpr size_t kRounds = 20;

class Log {
 public:
  virtual ~Log() = default;
  // Append one framed record (length and payload) and return once it is durable.
  virtual void append(const std::byte* entry, size_t n) = 0;
};

// (a) A syncdax file mapped MAP_SYNC in segments: the preallocated start, then one new
// mapping per growth. Growing is only ftruncate and mmap: the new range is a hole, so the
// first store into each of its 2 MiB windows faults, allocates, and commits before the
// page becomes writable -- which is what lets the record's persist be enough.
class SyncdaxLog final : public Log {
 public:
  SyncdaxLog(File f, uint64_t prealloc) : file_(std::move(f)), size_(prealloc) {
    need(file_.fallocate(0, 0, prealloc), "fallocate the syncdax log");
    need(file_.fsync(), "fsync the syncdax log");
    segments_.push_back(map(0, prealloc));
    store_tail();
  }
  void append(const std::byte* entry, size_t n) override {
    while (tail_ + n > size_) grow();
    put(tail_, entry, n);
    tail_ += n;
    store_tail();
  }
  size_t growths() const { return segments_.size() - 1; }
  uint64_t size() const { return size_; }

 private:
  Mapping map(uint64_t off, uint64_t len) {
    Mapping m = need(file_.mmap(off, len, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC),
                     "mmap MAP_SYNC the syncdax log");
    if (m.granularity() != Granularity::kCacheLine)
      abort_run(EOPNOTSUPP, "the MAP_SYNC mapping did not get cache-line granularity");
    return m;
  }
  void grow() {
    const uint64_t next = size_ * 2;
    need(file_.ftruncate(next), "ftruncate the syncdax log");
    segments_.push_back(map(size_, next - size_));
    size_ = next;
  }
  // A record may straddle two segments: adjacent in the file, not in memory.
  void put(uint64_t off, const std::byte* src, size_t n) {
    auto seg = std::find_if(segments_.rbegin(), segments_.rend(), [&](const Mapping& m) { return m.offset() <= off; });
    for (auto it = seg.base() - 1; n > 0; ++it) {
      const size_t k = std::min<uint64_t>(n, it->offset() + it->size() - off);
      std::byte* dst = it->data() + (off - it->offset());
      std::memcpy(dst, src, k);
      need(it->persist(dst, k), "persist a record");
      off += k, src += k, n -= k;
    }
  }
  void store_tail() {
    auto* word = reinterpret_cast<uint64_t*>(segments_.front().data());
    *word = tail_;
    need(segments_.front().persist(word, sizeof *word), "persist the tail");
  }

  File file_;
  uint64_t size_;
  uint64_t tail_ = kHeader;
  std::vector<Mapping> segments_;
};

// (b) The kernel's log: the file grows by each write, so every fdatasync also commits
// the allocation and the new size, as (a)'s growth faults do.
class KernelLog final : public Log {
 public:
  explicit KernelLog(const std::string& path) : fd_(::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644)) {
    if (fd_.get() < 0) abort_errno("create " + path);
  }
  void append(const std::byte* entry, size_t n) override {
    if (::pwrite(fd_.get(), entry, n, static_cast<off_t>(tail_)) != static_cast<ssize_t>(n)) abort_errno("pwrite");
    if (::fdatasync(fd_.get()) != 0) abort_errno("fdatasync");
    tail_ += n;
  }

 private:
  Fd fd_;
  uint64_t tail_ = 0;
};

// (c) libpmem2 on a raw mapping of the whole log, preallocated: no growth, no file
// system, plain memcpy and libpmem2's flush + drain so that only the flushing differs
// from (a).
class Pmem2Log final : public Log {
 public:
  Pmem2Log(const std::string& path, uint64_t size) : map_(path, size) { store_tail(); }
  void append(const std::byte* entry, size_t n) override {
    std::byte* dst = map_.data() + tail_;
    std::memcpy(dst, entry, n);
    map_.flush(dst, n);
    map_.drain();
    tail_ += n;
    store_tail();
  }
  pmem2_granularity granularity() const { return map_.granularity(); }

 private:
  void store_tail() {
    auto* word = reinterpret_cast<uint64_t*>(map_.data());
    *word = tail_;
    map_.flush(word, sizeof *word);
    map_.drain();
  }
  Pmem2Map map_;
  uint64_t tail_ = kHeader;
};

struct Way {
  std::string key;       // json
  std::string label;     // its line in the table
  std::string survives;  // what a durable append survives on this medium
  bool power_failure = false;
};

enum { kSyncdax, kKernel, kPmem2, kWays };

struct Row {
  size_t way;
  size_t size;
  size_t records;
  std::unique_ptr<Log> log;
  std::vector<double> us;
  FaultStats faults;  // (a) only: the faults its appends took
};

double per_s(const Stats& s) { return s.avg > 0 ? 1e6 / s.avg : 0; }

void add_faults(FaultStats& into, const FaultStats& before, const FaultStats& after) {
  for (size_t k = 0; k < into.kinds.size(); ++k) {
    auto& d = into.kinds[k];
    d.count += after.kinds[k].count - before.kinds[k].count;
    d.total_ns += after.kinds[k].total_ns - before.kinds[k].total_ns;
    d.max_ns = std::max(d.max_ns, after.kinds[k].max_ns);
  }
}

std::string fault_line(const FaultStats& f) {
  std::string out;
  for (size_t k = 0; k < f.kinds.size(); ++k) {
    const auto& d = f.kinds[k];
    if (d.count == 0) continue;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%s %llu (avg %.1f us)", out.empty() ? "" : ", ",
                  std::string(fault_kind_name(static_cast<FaultKind>(k))).c_str(),
                  static_cast<unsigned long long>(d.count), static_cast<double>(d.total_ns) / 1e3 / d.count);
    out += buf;
  }
  return out.empty() ? "none" : out;
}

Status run(const LogBenchOptions& opt) {
  if (opt.prealloc < kPage || opt.prealloc % kPage != 0)
    return fail(EINVAL, "--prealloc must be a positive multiple of 4096");
  if (opt.bytes < kHeader + kLength + kSizes[std::size(kSizes) - 1])
    return fail(EINVAL, "--bytes must hold at least one record of each size");
  if (opt.kernel_records == 0) return fail(EINVAL, "--kernel-records must be at least 1");

  const std::string prefix = "syncdax-logbench-" + std::to_string(::getpid());
  const std::string image = "/dev/shm/" + prefix + ".img";
  const std::string pmem2_stem = "/dev/shm/" + prefix;
  const std::string kernel_stem = opt.dir + "/" + prefix;
  std::vector<std::unique_ptr<Removal>> removals;
  removals.push_back(std::make_unique<Removal>(image));

  const bool tty = ::isatty(STDERR_FILENO) == 1;
  auto note = [&](const std::string& what) {
    std::fprintf(stderr, tty ? "\r\033[Klogbench: %s" : "logbench: %s\n", what.c_str());
    std::fflush(stderr);
  };

  // Room for every log at twice its size (the last growth may double past it), the
  // journal (1/16 of the medium) and the metadata.
  MkfsOptions mk;
  mk.kind = DeviceKind::kFile;
  const uint64_t logs = 2 * std::size(kSizes) * std::max(opt.bytes, opt.prealloc);
  mk.size = (logs + logs / 4 + (32ull << 20) + (1 << 20) - 1) & ~uint64_t{(1 << 20) - 1};
  note("preparing the logs");
  need(FileSystem::mkfs(image, mk), "mkfs " + image);
  // Mounted as an application would: the background committer runs every second.
  auto fs = need(FileSystem::mount(image), "mount " + image);

  const uint64_t pmem2_size = (opt.bytes + kPage - 1) & ~uint64_t{kPage - 1};
  pmem2_granularity pmem2_gran = PMEM2_GRANULARITY_PAGE;
  std::vector<Row> rows;
  for (size_t s = 0; s < std::size(kSizes); ++s) {
    const std::string tag = "." + std::to_string(kSizes[s]);
    const size_t records = static_cast<size_t>((opt.bytes - kHeader) / (kLength + kSizes[s]));
    File f = need(fs->open("/log" + tag, O_CREAT | O_RDWR, 0644), "open /log" + tag);
    rows.push_back({kSyncdax, s, records, std::make_unique<SyncdaxLog>(std::move(f), opt.prealloc), {}, {}});
    removals.push_back(std::make_unique<Removal>(kernel_stem + tag + ".tmp"));
    rows.push_back({kKernel, s, std::min(records, opt.kernel_records),
                    std::make_unique<KernelLog>(kernel_stem + tag + ".tmp"), {}, {}});
    removals.push_back(std::make_unique<Removal>(pmem2_stem + tag + ".pmem2"));
    auto pm = std::make_unique<Pmem2Log>(pmem2_stem + tag + ".pmem2", pmem2_size);
    pmem2_gran = pm->granularity();
    rows.push_back({kPmem2, s, records, std::move(pm), {}, {}});
  }
  for (Row& r : rows) r.us.reserve(r.records);
  removals.push_back(std::make_unique<Removal>(pmem2_stem + ".probe.pmem2"));
  const double persist_us = persist_line_us(Pmem2Map(pmem2_stem + ".probe.pmem2", kPage));

  const FsType kfs = fs_type_of(opt.dir);
  const bool kernel_in_ram = kfs.name == "tmpfs" || kfs.name == "ramfs";
  const std::string dev_survives = fs->device().durability();
  const std::vector<Way> ways = {
      {"syncdax_map_sync_log", "(a) syncdax MAP_SYNC, growing", dev_survives, fs->device().survives_power_failure()},
      {"kernel_pwrite_fdatasync", "(b) " + kfs.name + " pwrite + fdatasync",
       kernel_in_ram ? "a process crash only (" + kfs.name + " is RAM)"
                     : "a power failure, if the disk honours the cache flush fdatasync sends (" + kfs.name + ")",
       !kernel_in_ram},
      {"pmem2_raw_log", "(c) libpmem2 raw mapping",
       "a process crash only (tmpfs is RAM, as for (a)); no file system: the floor", false},
  };

  const double floor_us = timer_floor_us();
  const auto& pc = pmem::config();
  std::printf("syncdax logbench: a persistent append-only log, each append durable before the next: records of\n"
              "64 B and 1 KiB behind an 8-byte length, a log of %s per way and size; microseconds.\n"
              "Rows measured round robin. (a) and (c): record + persist, then the 8-byte tail in the\n"
              "header + persist (a crash loses at most the record being appended).\n",
              mib(opt.bytes).c_str());
  std::printf("  (a) memcpy + Mapping::persist through MAP_SHARED_VALIDATE|MAP_SYNC, flush: %s; a file on the\n"
              "      %s device %s (%s, created for this run and removed after), preallocated\n"
              "      to %s; when full: ftruncate to twice the size and map the new half (MAP_SYNC),\n"
              "      whose first stores fault, allocate and commit\n      survives: %s\n",
              std::string(pmem::flush_kind_name(pc.flush)).c_str(),
              std::string(device::kind_name(fs->device().kind())).c_str(), image.c_str(),
              mib(fs->device().size() + device::kLabelSize).c_str(), mib(opt.prealloc).c_str(),
              ways[kSyncdax].survives.c_str());
  std::printf("  (b) pwrite at the end of a new file in %s (%s) + fdatasync; the first %zu\n"
              "      records only (--kernel-records)\n      survives: %s\n",
              opt.dir.c_str(), kfs.description.c_str(), rows[kKernel].records, ways[kKernel].survives.c_str());
  std::printf("  (c) memcpy + libpmem2 flush + drain on a raw mapping of a preallocated %s file\n"
              "      %s.SIZE.pmem2; asked for page granularity with %s=CACHE_LINE, got: %s;\n"
              "      one libpmem2 persist of a dirty 64 B line, timed alone: %s us (an append makes two)\n"
              "      survives: %s\n",
              mib(pmem2_size).c_str(), pmem2_stem.c_str(), Pmem2Map::kForce,
              std::string(granularity_name(pmem2_gran)).c_str(), fmt_us(persist_us).c_str(),
              ways[kPmem2].survives.c_str());
  std::printf("  timer:   clock_gettime(CLOCK_MONOTONIC) around each append, read after an mfence so that the\n"
              "           append's cache-line write-backs are done; an empty timed region: %s us\n",
              fmt_us(floor_us).c_str());
  const std::string load_before = machine_load();
  std::printf("  machine: load average %s at the start\n\n", load_before.c_str());
  std::fflush(stdout);

  std::vector<std::vector<std::byte>> entries;
  for (size_t n : kSizes) {
    auto& e = entries.emplace_back(kLength + n);
    const uint64_t len = n;
    std::memcpy(e.data(), &len, kLength);
  }
  for (size_t round = 0; round < kRounds; ++round) {
    if (tty) note("round " + std::to_string(round + 1) + "/" + std::to_string(kRounds));
    for (Row& row : rows) {
      std::vector<std::byte>& entry = entries[row.size];
      const FaultStats before = row.way == kSyncdax ? fs->fault_stats() : FaultStats{};
      const size_t lo = row.records * round / kRounds, hi = row.records * (round + 1) / kRounds;
      for (size_t i = lo; i < hi; ++i) {
        // New bytes every record, written outside the timed region.
        std::memset(entry.data() + kLength, static_cast<int>(i & 0xff), entry.size() - kLength);
        const uint64_t t0 = now_ns();
        row.log->append(entry.data(), entry.size());
        row.us.push_back(static_cast<double>(now_ns_stores_done() - t0) / 1e3);
      }
      if (row.way == kSyncdax) add_faults(row.faults, before, fs->fault_stats());
    }
  }
  if (tty) std::fprintf(stderr, "\r\033[K");
  const std::string load_after = machine_load();

  std::vector<Stats> stats;
  for (const Row& row : rows) stats.push_back(stats_of(row.us));
  auto ref_of = [&](size_t i) { return stats[i - rows[i].way]; };  // (a) of the same size

  std::printf("%-6s %-34s %8s %9s %9s %9s %11s | %8s %8s %8s\n", "size", "way", "records", "p50", "p99", "avg",
              "records/s", "p50/(a)", "p99/(a)", "avg/(a)");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Stats& s = stats[i];
    const Stats ref = ref_of(i);
    std::printf("%-6s %-34s %8zu %9s %9s %9s %11.0f | %8s %8s %8s\n", size_name(kSizes[rows[i].size]).c_str(),
                ways[rows[i].way].label.c_str(), rows[i].records, fmt_us(s.p50).c_str(), fmt_us(s.p99).c_str(),
                fmt_us(s.avg).c_str(), per_s(s), fmt_ratio(s.p50, ref.p50).c_str(),
                fmt_ratio(s.p99, ref.p99).c_str(), fmt_ratio(s.avg, ref.avg).c_str());
    if (rows[i].way + 1 == kWays && i + 1 < rows.size()) std::printf("\n");
  }
  std::printf("records/s: one thread, appends back to back (1 / avg), so avg/(a) is also (a)'s records/s\nover this row's. Ratios: against (a) of the same size.\n\n");

  std::printf("syncdax faults taken by (a)'s appends (one per 2 MiB window of a mapping first stored to):\n");
  for (const Row& r : rows) {
    if (r.way != kSyncdax) continue;
    const auto& log = static_cast<const SyncdaxLog&>(*r.log);
    std::printf("  %-6s %zu growths to %s: %s\n", size_name(kSizes[r.size]).c_str(), log.growths(),
                mib(log.size()).c_str(), fault_line(r.faults).c_str());
  }
  std::printf("\ngoals (records/s):\n");
  for (size_t i = 0; i < rows.size(); i += kWays) {
    const double a = per_s(stats[i + kSyncdax]), b = per_s(stats[i + kKernel]), c = per_s(stats[i + kPmem2]);
    const std::string size = size_name(kSizes[rows[i].size]);
    std::printf("  %-6s (c)/(a) = %s (goal: at most 1.20x, %s); (a)/(b) = %s (goal: at least 100x, %s)\n",
                size.c_str(), fmt_ratio(c, a).c_str(), c <= 1.2 * a ? "met" : "NOT met", fmt_ratio(a, b).c_str(),
                a >= 100 * b ? "met" : "NOT met");
  }
  std::printf("(c)'s p50 in libpmem2 persists of one line (%s us each; an append makes two):", fmt_us(persist_us).c_str());
  for (size_t i = kPmem2; i < rows.size(); i += kWays)
    std::printf(" %s %.1f;", size_name(kSizes[rows[i].size]).c_str(), persist_us > 0 ? stats[i].p50 / persist_us : 0);
  std::printf("\nmachine load average at the end: %s\n", load_after.c_str());
  std::printf("note: (a) and (c) make an append survive a process crash only, their medium being RAM under\n"
              "      /dev/shm; (b) %s. The ratios compare the cost of\n"
              "      each way on this machine, not equally durable results.\n",
              kernel_in_ram ? "is in RAM too" : "waits for the disk and survives a power failure");

  if (!opt.json_path.empty()) {
    Json jw = Json::array();
    for (const Way& w : ways)
      jw.push_back({{"key", w.key}, {"label", w.label}, {"survives", w.survives},
                    {"survives_power_failure", w.power_failure}});
    Json jr = Json::array();
    for (size_t i = 0; i < rows.size(); ++i) {
      const Stats& s = stats[i];
      const Stats ref = ref_of(i);
      auto ratio = [](double x, double y) { return y > 0 ? x / y : 0; };
      Json r{{"way", ways[rows[i].way].key},
             {"size", kSizes[rows[i].size]},
             {"records", rows[i].records},
             {"stats_us", stats_json(s)},
             {"records_per_s", per_s(s)},
             {"ratio_to_syncdax",
              {{"p50", ratio(s.p50, ref.p50)}, {"p99", ratio(s.p99, ref.p99)}, {"avg", ratio(s.avg, ref.avg)}}}};
      if (rows[i].way == kSyncdax) {
        const auto& log = static_cast<const SyncdaxLog&>(*rows[i].log);
        Json jf = Json::object();
        for (size_t k = 0; k < rows[i].faults.kinds.size(); ++k) {
          const auto& d = rows[i].faults.kinds[k];
          if (d.count > 0)
            jf[std::string(fault_kind_name(static_cast<FaultKind>(k)))] = {{"count", d.count}, {"total_ns", d.total_ns}};
        }
        r["growths"] = log.growths();
        r["final_size"] = log.size();
        r["faults"] = jf;
      }
      jr.push_back(r);
    }
    Json j{{"benchmark", "syncdax logbench"},
           {"bytes", opt.bytes},
           {"prealloc", opt.prealloc},
           {"kernel_records", opt.kernel_records},
           {"rounds", kRounds},
           {"pmem2_persist_line_us", persist_us},
           {"ways", jw},
           {"rows", jr}};
    j.update(setting_json(*fs, image, dev_survives, opt.dir, kfs, pmem2_gran, floor_us, load_before, load_after));
    write_json(opt.json_path, j);
  }

  rows.clear();
  need(fs->unmount(), "unmount " + image);
  return ok();
}

}  // namespace

Status run_logbench(const LogBenchOptions& opt) {
  return catching_aborts([&] { return run(opt); });
}

}  // namespace sdx::bench
