// faultbench: the latency of each page fault while storing once to each of N pages of
// a file mapping, in the seed's configurations (file preallocated or empty, background
// file copying or not, MAP_SYNC or not), next to the kernel's own faults timed the same
// way in the same run: absolute times on shared virtual machines say little, ratios
// against baselines measured moments apart on the same machine say more.
#include "faultbench.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "device/device.h"
#include "fs/volume.h"
#include "fs_type.h"
#include "journal/journal.h"
#include "pmem/pmem.h"
#include "bench_util.h"
#include "svg_plot.h"
#include "syncdax/syncdax.hpp"

namespace sdx::bench {
namespace {

using namespace util;


constexpr size_t kPage = 4096;
// The background copy makes each chunk durable before the next: a commit at least
// every chunk keeps the journal busy the way a copying application would.
constexpr size_t kCopyChunk = 1 << 20;
constexpr const char* kCopySrc = "/faultbench-copy-src";
constexpr const char* kCopyDst = "/faultbench-copy-dst";




// What the kernel counted for the measuring thread (the background copier excluded):
// the page faults it resolved, major ones too (a fault the kernel had to retry counts
// as major without any I/O); and its context switches, which tell a slow store that
// waited for another thread (voluntary: a lock, a commit) from one whose CPU was taken
// (involuntary: preempted, as on a shared machine with more runnable threads than CPUs).
struct ThreadCounts {
  uint64_t faults = 0, waits = 0, preemptions = 0;
};
ThreadCounts thread_counts() {
  rusage ru{};
  ::getrusage(RUSAGE_THREAD, &ru);
  return {static_cast<uint64_t>(ru.ru_minflt + ru.ru_majflt), static_cast<uint64_t>(ru.ru_nvcsw),
          static_cast<uint64_t>(ru.ru_nivcsw)};
}



// ---- figures ----



// The seed's power-of-two buckets of whole microseconds ("8 - 15 us"). Bucket 0 holds
// stores under 1 us, which the seed never saw: as a rule a store that took no fault.
constexpr size_t kBuckets = 40;
std::vector<uint64_t> histogram_of(const std::vector<double>& us) {
  std::vector<uint64_t> h(kBuckets, 0);
  for (double v : us) {
    const auto whole = static_cast<uint64_t>(v);
    h[whole == 0 ? 0 : std::min<size_t>(64 - __builtin_clzll(whole), kBuckets - 1)]++;
  }
  return h;
}
uint64_t bucket_lo(size_t b) { return b == 0 ? 0 : 1ull << (b - 1); }
uint64_t bucket_hi(size_t b) { return b == 0 ? 0 : (1ull << b) - 1; }
std::string bucket_label(size_t b) {
  if (b == 0) return "< 1 us";
  return std::to_string(bucket_lo(b)) + " - " + std::to_string(bucket_hi(b)) + " us";
}

// ---- rows ----

enum class Kind { kAnon, kShmemMinor, kShmemEmpty, kPageCache, kSyncdax };

struct CopyLoad {
  uint64_t bytes = 0;
  uint64_t fdatasyncs = 0;
  double seconds = 0;
  double mib_per_s() const { return seconds > 0 ? static_cast<double>(bytes) / (1 << 20) / seconds : 0; }
};

// One run of one row: N pages, one timed store each.
struct Run {
  std::vector<double> us;       // latency of the first store to each page, in page order
  ThreadCounts kernel;          // of the measuring thread, while timing
  std::optional<FaultStats> faults;  // syncdax rows: what its fault handler did
  uint64_t commits = 0;         // syncdax rows: journal commits while timing (all threads)
  std::optional<CopyLoad> load;
};

struct Row {
  Kind kind;
  bool prealloc = false, load = false, sync = false;
  std::string title;  // the seed's heading
  std::string label;  // its line in the summary
  int partner = -1;   // a MAP_SYNC row: the same row without MAP_SYNC
  std::vector<Run> runs;

  bool syncdax() const { return kind == Kind::kSyncdax; }
  std::vector<double> pooled() const {
    std::vector<double> all;
    for (const Run& r : runs) all.insert(all.end(), r.us.begin(), r.us.end());
    return all;
  }
  // Faults per run: syncdax's own count, else the kernel's.
  double faults_per_run() const {
    double n = 0;
    for (const Run& r : runs) n += static_cast<double>(r.faults ? r.faults->total() : r.kernel.faults);
    return runs.empty() ? 0 : n / static_cast<double>(runs.size());
  }
};

// ---- the background load ----

// A thread copying a file inside the file system under test, chunk by chunk, each chunk
// made durable with fdatasync, pass after pass (each pass truncates the copy and
// allocates it again), so allocation and journal commits go on while faults are timed.
class Copier {
 public:
  Copier(FileSystem& fs, uint64_t size) : fs_(fs), size_(size) {
    File src = need(fs_.open(kCopySrc, O_CREAT | O_RDWR | O_TRUNC, 0644), kCopySrc);
    std::vector<std::byte> buf(kCopyChunk);
    for (uint64_t off = 0; off < size_; off += kCopyChunk) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kCopyChunk, size_ - off));
      for (size_t i = 0; i < n; i += sizeof(uint64_t)) {
        const uint64_t v = (off + i) * 0x9E3779B97F4A7C15ull;
        std::memcpy(buf.data() + i, &v, std::min(sizeof v, n - i));
      }
      need(src.pwrite({buf.data(), n}, off), kCopySrc);
    }
    need(src.fsync(), kCopySrc);
  }
  ~Copier() { halt(); }

  // Returns once the copy has made its first chunk durable: the load is on.
  void start() {
    stop_ = false;
    failed_ = false;
    syncs_ = 0;
    bytes_ = 0;
    thread_ = std::thread([this] { loop(); });
    while (syncs_.load() == 0 && !failed_.load()) std::this_thread::sleep_for(std::chrono::microseconds(100));
    check();
    bytes0_ = bytes_.load();
    syncs0_ = syncs_.load();
    t0_ = now_ns();
  }

  // What the copy did between start() returning and now.
  CopyLoad stop() {
    CopyLoad l;
    l.bytes = bytes_.load() - bytes0_;
    l.fdatasyncs = syncs_.load() - syncs0_;
    l.seconds = static_cast<double>(now_ns() - t0_) / 1e9;
    halt();
    check();
    return l;
  }

 private:
  void halt() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  void check() {
    std::lock_guard g(mu_);
    if (error_) abort_run(error_->code, "background copy: " + error_->message);
  }
  void loop() {
    auto report = [&](const Error& e, const char* what) {
      std::lock_guard g(mu_);
      error_ = Error{e.code, std::string(what) + ": " + e.message};
      failed_ = true;
    };
    auto src = fs_.open(kCopySrc, O_RDONLY);
    if (!src) return report(src.error(), kCopySrc);
    auto dst = fs_.open(kCopyDst, O_CREAT | O_WRONLY, 0644);
    if (!dst) return report(dst.error(), kCopyDst);
    std::vector<std::byte> buf(kCopyChunk);
    while (!stop_.load()) {
      if (auto st = dst->ftruncate(0); !st) return report(st.error(), kCopyDst);
      for (uint64_t off = 0; off < size_ && !stop_.load(); off += kCopyChunk) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(kCopyChunk, size_ - off));
        auto r = src->pread({buf.data(), n}, off);
        if (!r) return report(r.error(), kCopySrc);
        auto w = dst->pwrite({buf.data(), *r}, off);
        if (!w) return report(w.error(), kCopyDst);
        if (auto st = dst->fdatasync(); !st) return report(st.error(), kCopyDst);
        bytes_ += *w;
        syncs_++;
      }
    }
  }

  FileSystem& fs_;
  uint64_t size_;
  std::thread thread_;
  std::atomic<bool> stop_{false}, failed_{false};
  std::atomic<uint64_t> bytes_{0}, syncs_{0};
  uint64_t bytes0_ = 0, syncs0_ = 0, t0_ = 0;
  std::mutex mu_;
  std::optional<Error> error_;
};

// ---- timing ----

// The first store to each page of [base, base + pages*kPage), in order, each timed
// alone; `after` (persisting the store) runs outside the timed region.
template <class After>
Run time_stores(std::byte* base, size_t pages, After&& after) {
  Run r;
  r.us.resize(pages);
  const ThreadCounts before = thread_counts();
  for (size_t i = 0; i < pages; ++i) {
    auto* p = reinterpret_cast<volatile uint64_t*>(base + i * kPage);
    const uint64_t t0 = now_ns();
    *p = i + 1;
    const uint64_t t1 = now_ns();
    r.us[i] = static_cast<double>(t1 - t0) / 1e3;
    after(const_cast<uint64_t*>(p));
  }
  const ThreadCounts after_all = thread_counts();
  r.kernel = {after_all.faults - before.faults, after_all.waits - before.waits,
              after_all.preemptions - before.preemptions};
  return r;
}
void nothing(uint64_t*) {}




std::byte* map_or_abort(size_t len, int flags, int fd, const std::string& what) {
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (p == MAP_FAILED) abort_errno(what);
  // 4 KiB faults in every kernel row, as syncdax takes them: a transparent huge page
  // would serve 512 stores with one fault.
  ::madvise(p, len, MADV_NOHUGEPAGE);
  return static_cast<std::byte*>(p);
}

Run run_anon(size_t pages) {
  const size_t len = pages * kPage;
  Region m(map_or_abort(len, MAP_PRIVATE | MAP_ANONYMOUS, -1, "mmap anonymous"), len);
  return time_stores(m.data(), pages, nothing);
}

// A memfd: resident (written in full through a first mapping that is then dropped, so
// each timed fault only installs a page already in the cache: no allocation, no
// zeroing -- the shmem minor fault) or empty (each fault allocates and zeroes a page).
Run run_shmem(size_t pages, bool resident) {
  const size_t len = pages * kPage;
  Fd fd(::memfd_create("faultbench", MFD_CLOEXEC));
  if (fd.get() < 0) abort_errno("memfd_create");
  if (::ftruncate(fd.get(), static_cast<off_t>(len)) != 0) abort_errno("ftruncate memfd");
  if (resident) {
    Region first(map_or_abort(len, MAP_SHARED, fd.get(), "mmap memfd"), len);
    std::memset(first.data(), 0x5a, len);
  }
  Region m(map_or_abort(len, MAP_SHARED, fd.get(), "mmap memfd"), len);
  return time_stores(m.data(), pages, nothing);
}

// A file of the machine's own file system: preallocated (fallocate + fsync) or empty
// (ftruncate). With MAP_SYNC only where the kernel grants it (a DAX mount).
Run run_page_cache(const std::string& path, size_t pages, bool prealloc, bool sync) {
  const size_t len = pages * kPage;
  Fd fd(::open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) abort_errno("open " + path);
  ::unlink(path.c_str());  // the descriptor keeps the file until this run is over
  if (prealloc) {
    if (::fallocate(fd.get(), 0, 0, static_cast<off_t>(len)) != 0) abort_errno("fallocate " + path);
    if (::fsync(fd.get()) != 0) abort_errno("fsync " + path);
  } else if (::ftruncate(fd.get(), static_cast<off_t>(len)) != 0) {
    abort_errno("ftruncate " + path);
  }
  const int flags = sync ? (MAP_SHARED_VALIDATE | MAP_SYNC) : MAP_SHARED;
  Region m(map_or_abort(len, flags, fd.get(), "mmap " + path), len);
  if (sync) return time_stores(m.data(), pages, [](uint64_t* p) { pmem::persist(p, sizeof *p); });
  return time_stores(m.data(), pages, nothing);
}

// Whether the kernel grants MAP_SYNC on a file in the directory of `path`: "" if it
// does, else its refusal.
std::string kernel_map_sync_refusal(const std::string& path) {
  Fd fd(::open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) abort_errno("open " + path);
  std::string refusal;
  if (::ftruncate(fd.get(), kPage) != 0) abort_errno("ftruncate " + path);
  void* p = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC, fd.get(), 0);
  if (p == MAP_FAILED) {
    refusal = std::strerror(errno);
  } else {
    ::munmap(p, kPage);
  }
  ::unlink(path.c_str());
  return refusal;
}

struct Ctx {
  const FaultBenchOptions& opt;
  FileSystem& fs;
  Copier& copier;
  std::string page_cache_path;
  uint64_t file_no = 0;
};

Run run_syncdax(Ctx& c, const Row& row) {
  const size_t len = c.opt.pages * kPage;
  const std::string path = "/faultbench-" + std::to_string(c.file_no++);
  File f = need(c.fs.open(path, O_CREAT | O_RDWR | O_TRUNC, 0644), path);
  if (c.opt.extent_hint) need(f.set_extsize_hint(c.opt.extent_hint), path + ": extent hint");
  // Nothing left over from earlier runs (the previous file's unlink, the copy's
  // truncation) may commit inside a timed fault: only what this run does.
  need(c.fs.sync(), "sync");
  if (row.prealloc) {
    need(f.fallocate(0, 0, len), path + ": fallocate");
    need(f.fsync(), path + ": fsync");
  } else {
    need(f.ftruncate(len), path + ": ftruncate");
  }
  const int flags = row.sync ? (MAP_SHARED_VALIDATE | MAP_SYNC) : MAP_SHARED;
  Mapping m = need(f.mmap(0, len, PROT_READ | PROT_WRITE, flags), path + ": mmap");
  if (row.load) c.copier.start();
  c.fs.reset_fault_stats();
  const uint64_t commits0 = c.fs.volume().journal().stats().commits;
  Run r;
  if (row.sync) {
    // Durable the way an application makes a store durable on a synchronous mapping:
    // flush the stored line and fence, from user space.
    r = time_stores(m.data(), c.opt.pages, [&](uint64_t* p) { need(m.persist(p, sizeof *p), path + ": persist"); });
  } else {
    r = time_stores(m.data(), c.opt.pages, nothing);
  }
  r.commits = c.fs.volume().journal().stats().commits - commits0;
  r.faults = c.fs.fault_stats();
  if (row.load) r.load = c.copier.stop();
  need(m.unmap(), path + ": munmap");
  need(f.close(), path + ": close");
  need(c.fs.unlink(path), path + ": unlink");
  return r;
}

Run run_row(Ctx& c, const Row& row) {
  switch (row.kind) {
    case Kind::kAnon: return run_anon(c.opt.pages);
    case Kind::kShmemMinor: return run_shmem(c.opt.pages, true);
    case Kind::kShmemEmpty: return run_shmem(c.opt.pages, false);
    case Kind::kPageCache: return run_page_cache(c.page_cache_path, c.opt.pages, row.prealloc, row.sync);
    case Kind::kSyncdax: return run_syncdax(c, row);
  }
  return {};
}

std::vector<Row> make_rows(const std::string& fs_name, bool kernel_map_sync) {
  std::vector<Row> rows;
  rows.push_back({Kind::kAnon, false, false, false, "Kernel: anonymous memory, first touch (private, zeroed page)",
                  "kernel anonymous, first touch"});
  rows.push_back({Kind::kShmemMinor, false, false, false,
                  "Kernel: shared shmem mapping, pages resident (the shmem minor fault)",
                  "kernel shmem minor fault (=1x)"});
  rows.push_back({Kind::kShmemEmpty, false, false, false, "Kernel: shared shmem mapping of an empty file",
                  "kernel shmem, empty file"});
  for (bool sync : {false, true}) {
    if (sync && !kernel_map_sync) continue;
    for (bool prealloc : {true, false}) {
      Row r{Kind::kPageCache, prealloc, false, sync,
            "Kernel: " + fs_name + " file " + (prealloc ? "preallocated" : "empty") + ", " +
                (sync ? "MAP_SYNC" : "MAP_SHARED"),
            "kernel " + fs_name + (prealloc ? " prealloc" : " empty") + (sync ? ", MAP_SYNC" : "")};
      if (sync) r.partner = static_cast<int>(rows.size()) - 2;
      rows.push_back(std::move(r));
    }
  }
  // The seed's order, with the preallocated file under load added.
  for (bool prealloc : {true, false}) {
    for (bool load : {false, true}) {
      for (bool sync : {false, true}) {
        Row r{Kind::kSyncdax, prealloc, load, sync,
              std::string("File ") + (prealloc ? "preallocated" : "empty") + ", " +
                  (load ? "background load" : "no background load") + ", " + (sync ? "MAP_SYNC" : "no MAP_SYNC"),
              std::string("syncdax ") + (prealloc ? "prealloc" : "empty") + (load ? ", load" : ", idle") +
                  (sync ? ", MAP_SYNC" : ", MAP_SHARED")};
        if (sync) r.partner = static_cast<int>(rows.size()) - 1;
        rows.push_back(std::move(r));
      }
    }
  }
  return rows;
}

// ---- output ----



std::string fmt_count(double v) {
  char buf[32];
  if (std::fabs(v - std::round(v)) < 1e-9) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f", v);
  }
  return buf;
}

// "write-sync 512 avg 95.10 us max 230.00 us; ..." for every kind that happened.
std::string fault_counters(const FaultStats& s, double runs) {
  std::string out;
  for (size_t k = 0; k < s.kinds.size(); ++k) {
    const auto& pk = s.kinds[k];
    if (pk.count == 0) continue;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%s %s, avg %s us, max %s us", out.empty() ? "" : "; ",
                  std::string(fault_kind_name(static_cast<FaultKind>(k))).c_str(),
                  fmt_count(static_cast<double>(pk.count) / runs).c_str(),
                  fmt_us(static_cast<double>(pk.total_ns) / static_cast<double>(pk.count) / 1e3).c_str(),
                  fmt_us(static_cast<double>(pk.max_ns) / 1e3).c_str());
    out += buf;
  }
  return out.empty() ? "none" : out;
}

FaultStats add(FaultStats a, const FaultStats& b) {
  for (size_t k = 0; k < a.kinds.size(); ++k) {
    a.kinds[k].count += b.kinds[k].count;
    a.kinds[k].total_ns += b.kinds[k].total_ns;
    a.kinds[k].max_ns = std::max(a.kinds[k].max_ns, b.kinds[k].max_ns);
    for (size_t i = 0; i < FaultStats::kBuckets; ++i) a.kinds[k].histogram[i] += b.kinds[k].histogram[i];
  }
  return a;
}

void print_run(const Row& row, const Run& r, size_t i, size_t n) {
  const Stats s = stats_of(r.us);
  std::printf("%s  [run %zu/%zu]\n", row.title.c_str(), i + 1, n);
  std::printf("min=%s avg=%s max=%s\n", fmt_us(s.min).c_str(), fmt_us(s.avg).c_str(), fmt_us(s.max).c_str());
  const auto h = histogram_of(r.us);
  for (size_t b = 0; b < h.size(); ++b)
    if (h[b]) std::printf("%s: %llu\n", bucket_label(b).c_str(), static_cast<unsigned long long>(h[b]));
  if (r.faults) std::printf("  syncdax faults: %s\n", fault_counters(*r.faults, 1).c_str());
  std::printf("  kernel page faults: %llu; context switches: %llu waits, %llu preemptions",
              static_cast<unsigned long long>(r.kernel.faults), static_cast<unsigned long long>(r.kernel.waits),
              static_cast<unsigned long long>(r.kernel.preemptions));
  if (r.faults) std::printf("; journal commits: %llu", static_cast<unsigned long long>(r.commits));
  std::printf("\n");
  if (r.load) {
    std::printf("  background copy meanwhile: %s at %.0f MiB/s, %llu fdatasyncs\n", mib(r.load->bytes).c_str(),
                r.load->mib_per_s(), static_cast<unsigned long long>(r.load->fdatasyncs));
  }
  std::printf("\n");
}

void print_summary(const std::vector<Row>& rows, const Row& shm, const FaultBenchOptions& opt, double floor_us) {
  const Stats ref = stats_of(shm.pooled());
  std::printf("Summary: %zu pages per run, %d run%s per row pooled; microseconds per store\n", opt.pages,
              opt.repeat, opt.repeat == 1 ? "" : "s");
  std::printf("%-34s %7s %8s %8s %8s %8s %9s | %8s %8s | %10s %10s\n", "", "faults", "min", "p50", "avg",
              "p99", "max", "avg/shm", "p50/shm", "avg/noSYNC", "p50/noSYNC");
  for (const Row& row : rows) {
    const Stats s = stats_of(row.pooled());
    std::string sync_avg, sync_p50;
    if (row.partner >= 0) {
      const Stats p = stats_of(rows[static_cast<size_t>(row.partner)].pooled());
      sync_avg = fmt_ratio(s.avg, p.avg);
      sync_p50 = fmt_ratio(s.p50, p.p50);
    }
    std::printf("%-34s %7s %8s %8s %8s %8s %9s | %8s %8s | %10s %10s\n", row.label.c_str(),
                fmt_count(row.faults_per_run()).c_str(), fmt_us(s.min).c_str(), fmt_us(s.p50).c_str(),
                fmt_us(s.avg).c_str(), fmt_us(s.p99).c_str(), fmt_us(s.max).c_str(),
                fmt_ratio(s.avg, ref.avg).c_str(), fmt_ratio(s.p50, ref.p50).c_str(), sync_avg.c_str(),
                sync_p50.c_str());
  }
  std::printf("faults: per run; syncdax rows count syncdax's fault handler, kernel rows the kernel's\n"
              "page faults (getrusage). avg/shm, p50/shm: against the shmem minor fault of this run;\n"
              "avg/noSYNC, p50/noSYNC: a MAP_SYNC row against the same row without MAP_SYNC.\n"
              "A store that takes no fault costs %s us here (the timer); a row whose faults are\n"
              "fewer than its pages has its p50 at that floor.\n\n",
              fmt_us(floor_us).c_str());

  std::printf("syncdax fault handler (FileSystem::fault_stats(), per run), and the rest of a fault (signal\n"
              "delivery, lookup, sigreturn, the retried store): the timed faulting stores less the handler;\n"
              "where fewer stores than pages fault, the slowest stores of a run are taken as its faults\n");
  for (const Row& row : rows) {
    if (!row.syncdax()) continue;
    FaultStats all;
    double faulting_ns = 0;
    for (const Run& r : row.runs) {
      all = add(all, *r.faults);
      std::vector<double> us = r.us;
      const size_t n = std::min<size_t>(us.size(), r.faults->total());
      std::partial_sort(us.begin(), us.begin() + static_cast<ptrdiff_t>(n), us.end(), std::greater<>());
      faulting_ns += std::accumulate(us.begin(), us.begin() + static_cast<ptrdiff_t>(n), 0.0) * 1e3;
    }
    double handler_ns = 0;
    for (const auto& k : all.kinds) handler_ns += static_cast<double>(k.total_ns);
    const double faults = static_cast<double>(all.total());
    std::printf("  %-34s %s", row.label.c_str(), fault_counters(all, static_cast<double>(row.runs.size())).c_str());
    if (faults > 0) std::printf("; rest %s us", fmt_us((faulting_ns - handler_ns) / faults / 1e3).c_str());
    std::printf("\n");
  }
  std::printf("\n");

  std::printf("Where the slowest stores went, per run: stores over 1 ms, and the measuring thread's context\n"
              "switches (waits: it blocked on another thread's lock or commit; preemptions: its CPU was taken)\n");
  std::printf("%-34s %9s %9s %12s\n", "", ">1 ms", "waits", "preemptions");
  for (const Row& row : rows) {
    double slow = 0, waits = 0, preemptions = 0;
    for (const Run& r : row.runs) {
      slow += static_cast<double>(std::count_if(r.us.begin(), r.us.end(), [](double v) { return v > 1000; }));
      waits += static_cast<double>(r.kernel.waits);
      preemptions += static_cast<double>(r.kernel.preemptions);
    }
    const double n = static_cast<double>(row.runs.size());
    std::printf("%-34s %9.1f %9.1f %12.1f\n", row.label.c_str(), slow / n, waits / n, preemptions / n);
  }
  std::printf("\n");
}


Json histogram_json(const std::vector<double>& us) {
  Json out = Json::array();
  const auto h = histogram_of(us);
  for (size_t b = 0; b < h.size(); ++b)
    if (h[b]) out.push_back({{"lo_us", bucket_lo(b)}, {"hi_us", bucket_hi(b)}, {"below_1_us", b == 0}, {"count", h[b]}});
  return out;
}

Json faults_json(const FaultStats& s) {
  Json out = Json::object();
  for (size_t k = 0; k < s.kinds.size(); ++k) {
    const auto& pk = s.kinds[k];
    if (pk.count == 0) continue;
    out[std::string(fault_kind_name(static_cast<FaultKind>(k)))] = {
        {"count", pk.count},
        {"avg_us", static_cast<double>(pk.total_ns) / static_cast<double>(pk.count) / 1e3},
        {"max_us", static_cast<double>(pk.max_ns) / 1e3}};
  }
  return out;
}

Json rows_json(const std::vector<Row>& rows, const Row& shm) {
  const Stats ref = stats_of(shm.pooled());
  Json out = Json::array();
  for (const Row& row : rows) {
    const Stats s = stats_of(row.pooled());
    Json j{{"label", row.label},
           {"title", row.title},
           {"syncdax", row.syncdax()},
           {"preallocated", row.prealloc},
           {"background_load", row.load},
           {"map_sync", row.sync},
           {"faults_per_run", row.faults_per_run()},
           {"pooled", stats_json(s)},
           {"histogram", histogram_json(row.pooled())},
           {"ratio_to_shmem_minor", {{"avg", ref.avg > 0 ? s.avg / ref.avg : 0}, {"p50", ref.p50 > 0 ? s.p50 / ref.p50 : 0}}}};
    if (row.partner >= 0) {
      const Row& p = rows[static_cast<size_t>(row.partner)];
      const Stats ps = stats_of(p.pooled());
      j["ratio_to_without_map_sync"] = {{"row", p.label},
                                        {"avg", ps.avg > 0 ? s.avg / ps.avg : 0},
                                        {"p50", ps.p50 > 0 ? s.p50 / ps.p50 : 0}};
    }
    Json runs = Json::array();
    for (const Run& r : row.runs) {
      Json rj{{"stats", stats_json(stats_of(r.us))},
              {"histogram", histogram_json(r.us)},
              {"kernel_page_faults", r.kernel.faults},
              {"context_switches", {{"voluntary", r.kernel.waits}, {"involuntary", r.kernel.preemptions}}},
              {"store_us", r.us}};
      if (r.faults) {
        rj["syncdax_faults"] = faults_json(*r.faults);
        rj["journal_commits"] = r.commits;
      }
      if (r.load) {
        rj["background_copy"] = {{"bytes", r.load->bytes},
                                 {"seconds", r.load->seconds},
                                 {"mib_per_s", r.load->mib_per_s()},
                                 {"fdatasyncs", r.load->fdatasyncs}};
      }
      runs.push_back(std::move(rj));
    }
    j["runs"] = std::move(runs);
    out.push_back(std::move(j));
  }
  return out;
}

// Every row's pooled histogram in one panel, the kernel baselines first and grey, then
// the syncdax rows in the summary's order, coloured by mapping kind.
std::string histogram_plot(const std::vector<Row>& rows, const FaultBenchOptions& opt, const std::string& medium,
                           const std::string& kernel_fs) {
  svg::Plot plot;
  plot.title = "syncdax faultbench: latency of the first store to each page, syncdax against the kernel";
  plot.subtitle = std::to_string(opt.pages) + " pages, " + std::to_string(opt.repeat) + " run" +
                  (opt.repeat == 1 ? "" : "s") + " per row pooled; syncdax on " + medium + ", kernel page cache on " +
                  kernel_fs + "; bars: stores per bucket, log scale";
  plot.x_label = "store latency";
  for (size_t b = 0; b < kBuckets; ++b) plot.buckets.push_back(bucket_label(b));
  plot.series = {"kernel baseline", "syncdax MAP_SHARED", "syncdax MAP_SYNC"};
  bool first_syncdax = true;
  for (const Row& row : rows) {
    const std::vector<double> us = row.pooled();
    const Stats s = stats_of(us);
    svg::Panel p;
    p.name = row.label;
    p.note = "p50 " + fmt_us(s.p50) + " us, avg " + fmt_us(s.avg) + " us, max " + fmt_us(s.max) + " us, " +
             fmt_count(row.faults_per_run()) + " faults/run";
    p.series = !row.syncdax() ? 0 : row.sync ? 2 : 1;
    p.new_line = row.syncdax() && first_syncdax;
    if (row.syncdax()) first_syncdax = false;
    p.counts = histogram_of(us);
    plot.panels.push_back(std::move(p));
  }
  return svg::render_histograms(plot);
}

// "[12/65] run 2/5: syncdax empty, load, MAP_SYNC", rewritten in place on a terminal;
// elsewhere (a log) one line per round of runs.
class Progress {
 public:
  explicit Progress(size_t total) : total_(total), tty_(::isatty(STDERR_FILENO) == 1) {}
  void step(int rep, int reps, const std::string& row) {
    ++done_;
    const std::string round = "run " + std::to_string(rep + 1) + "/" + std::to_string(reps);
    if (tty_) {
      std::fprintf(stderr, "\r\033[Kfaultbench: [%zu/%zu] %s: %s", done_, total_, round.c_str(), row.c_str());
    } else if (rep != last_rep_) {
      std::fprintf(stderr, "faultbench: %s of every configuration\n", round.c_str());
      last_rep_ = rep;
    }
    std::fflush(stderr);
  }
  void note(const std::string& what) {
    std::fprintf(stderr, tty_ ? "\r\033[Kfaultbench: %s" : "faultbench: %s\n", what.c_str());
    std::fflush(stderr);
  }
  ~Progress() {
    if (tty_) std::fprintf(stderr, "\r\033[K");
  }

 private:
  size_t total_, done_ = 0;
  int last_rep_ = -1;
  bool tty_;
};

Status run(const FaultBenchOptions& opt) {
  if (opt.pages == 0) return fail(EINVAL, "--pages must be at least 1");
  if (opt.repeat < 1) return fail(EINVAL, "--repeat must be at least 1");
  if (opt.copy_size == 0) return fail(EINVAL, "--copy-size must be positive");

  const std::string pid = std::to_string(::getpid());
  device::Kind kind = device::Kind::kFile;
  std::string image = opt.device_path;
  if (opt.device_kind.empty()) {
    image = "/dev/shm/syncdax-faultbench-" + pid + ".img";
  } else {
    kind = need(device::parse_kind(opt.device_kind), "--device");
    if (kind == device::Kind::kDax) return fail(EINVAL, "--device: faultbench formats its medium: file or sim only");
    if (::access(image.c_str(), F_OK) == 0)
      return fail(EEXIST, image + " exists: faultbench creates a fresh medium there and removes it afterwards");
  }
  Removal remove_image(image);
  const std::string page_cache_path = opt.dir + "/syncdax-faultbench-" + pid + ".tmp";
  Removal remove_page_cache(page_cache_path);

  // Both copies of the copied file, every measured file with room to spare for the
  // copy's fragmentation, and the journal (1/16 of the medium).
  MkfsOptions mk;
  mk.kind = static_cast<DeviceKind>(kind);
  mk.size = (2 * opt.copy_size + 16 * opt.pages * kPage + (64ull << 20) + (1 << 20) - 1) & ~uint64_t{(1 << 20) - 1};
  need(FileSystem::mkfs(image, mk), "mkfs " + image);
  // Mounted as an application would: the background committer runs every second.
  auto fs = need(FileSystem::mount(image), "mount " + image);

  const FsType pc_fs = fs_type_of(opt.dir);
  const std::string refusal = kernel_map_sync_refusal(page_cache_path);
  std::vector<Row> rows = make_rows(pc_fs.name, refusal.empty());
  const Row& shm = rows[1];

  Progress progress(rows.size() * static_cast<size_t>(opt.repeat));
  progress.note("writing the " + mib(opt.copy_size) + " file the background load copies");
  Copier copier(*fs, opt.copy_size);
  Ctx ctx{opt, *fs, copier, page_cache_path};
  const double floor_us = timer_floor_us();

  const auto& pc = pmem::config();
  std::printf("syncdax faultbench: latency of the first store to each of %zu pages of a mapping, %d run%s per\n"
              "configuration (a fresh file each run), in microseconds; the experiment of the MAP_SYNC v2 cover\n"
              "letter, with the kernel's own faults timed the same way in this run.\n",
              opt.pages, opt.repeat, opt.repeat == 1 ? "" : "s");
  std::printf("  syncdax:  %s device %s (%s, created for this run and removed after)\n",
              std::string(device::kind_name(fs->device().kind())).c_str(), image.c_str(),
              mib(fs->device().size() + device::kLabelSize).c_str());
  std::printf("            durability: %s\n", fs->device().durability().c_str());
  std::printf("            flush: %s; a store through MAP_SYNC is made durable with Mapping::persist of its\n"
              "            cache line, outside the timed store; without MAP_SYNC the store alone%s\n",
              std::string(pmem::flush_kind_name(pc.flush)).c_str(),
              opt.extent_hint ? ("; extent hint " + std::to_string(opt.extent_hint) + " bytes").c_str() : "");
  std::printf("  load:     a thread copying a %s file inside the same file system, %zu KiB pread/pwrite +\n"
              "            fdatasync per chunk, pass after pass\n",
              mib(opt.copy_size).c_str(), kCopyChunk >> 10);
  std::printf("  kernel:   page-cache file in %s (%s); kernel MAP_SYNC there: %s\n", opt.dir.c_str(),
              pc_fs.description.c_str(), refusal.empty() ? "granted (DAX), measured too" : ("refused: " + refusal).c_str());
  std::printf("  timer:    clock_gettime(CLOCK_MONOTONIC) around each store; a store that takes no fault: %s us\n",
              fmt_us(floor_us).c_str());
  const std::string load_before = machine_load();
  std::printf("  machine:  load average %s at the start\n", load_before.c_str());
  std::printf("  Ratios are against the kernel baselines of this same run.\n\n");
  std::fflush(stdout);

  // Round robin over the rows, so that a slow phase of a shared machine spreads over
  // all rows instead of one.
  for (int rep = 0; rep < opt.repeat; ++rep) {
    for (Row& row : rows) {
      progress.step(rep, opt.repeat, row.label);
      row.runs.push_back(run_row(ctx, row));
    }
  }

  for (const Row& row : rows)
    for (size_t i = 0; i < row.runs.size(); ++i) print_run(row, row.runs[i], i, row.runs.size());
  const std::string load_after = machine_load();
  print_summary(rows, shm, opt, floor_us);
  std::printf("machine load average at the end: %s\n", load_after.c_str());
  if (!fs->device().survives_power_failure()) {
    std::printf("note: this syncdax device survives process crashes only, so its MAP_SYNC commits are\n"
                "      cheaper than on a medium that survives power failure; the kernel page-cache rows\n"
                "      make nothing durable at all.\n");
  }

  if (!opt.json_path.empty()) {
    Json j{{"benchmark", "syncdax faultbench"},
           {"pages", opt.pages},
           {"runs_per_row", opt.repeat},
           {"copy_size", opt.copy_size},
           {"copy_chunk", kCopyChunk},
           {"extent_hint", opt.extent_hint},
           {"device",
            {{"kind", std::string(device::kind_name(fs->device().kind()))},
             {"path", image},
             {"size", fs->device().size() + device::kLabelSize},
             {"durability", fs->device().durability()},
             {"survives_power_failure", fs->device().survives_power_failure()}}},
           {"flush", std::string(pmem::flush_kind_name(pc.flush))},
           {"kernel_page_cache", {{"dir", opt.dir}, {"fs", pc_fs.name}, {"description", pc_fs.description},
                                  {"map_sync_refusal", refusal}}},
           {"timer_floor_us", floor_us},
           {"load_average", {{"start", load_before}, {"end", load_after}}},
           {"ratios_against", "kernel baselines of this run"},
           {"rows", rows_json(rows, shm)}};
    write_json(opt.json_path, j);
  }
  if (!opt.plot_path.empty()) {
    write_text(opt.plot_path,
               histogram_plot(rows, opt, std::string(device::kind_name(fs->device().kind())) + " device", pc_fs.name));
    std::printf("histograms drawn to %s\n", opt.plot_path.c_str());
  }

  need(fs->unmount(), "unmount " + image);
  return ok();
}

}  // namespace

Status run_faultbench(const FaultBenchOptions& opt) {
  return catching_aborts([&] { return run(opt); });
}

}  // namespace sdx::bench
