// defrag_bench: File::defragment() of a fragmented file while a writer thread keeps
// storing into it through a MAP_SYNC mapping (issue 4). The writer stores a 64-byte
// record at a pseudo-random (or the next) 64-byte slot of the whole file and persists
// it, timing each store+persist; the same run measures it without defragmentation
// (baseline), while defragment() moves the file (defrag), and just after (after: the
// moved windows fault in again). Reported: the writer's ops/s in each phase and the
// ratio defrag/baseline (the goal: at least 0.5), the blocked window -- how long a
// store waits while the defragmenter moves its block (the max and p99.9 of the defrag
// phase) --, syncdax's fault counts per phase, and the defragmentation itself.
// At the end every record slot must hold the last record the writer stored there:
// through the mapping, and through pread after a remount (with fsck in between).
//   build-release/bench/defrag_bench [--size 1G] [--pattern random|sequential|both|none]
// (none: no writer, the defragmentation alone)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "syncdax/syncdax.hpp"

namespace sdx::bench {
namespace {

using namespace util;

constexpr uint64_t kRecord = 64;
constexpr uint64_t kWords = kRecord / 8;
constexpr uint64_t kPage = 4096;

struct Options {
  uint64_t size = 1ull << 30;
  uint64_t piece = 64 << 10;
  double baseline_s = 2;
  double after_s = 1;
  double stall_us = 20;
  std::string pattern = "random";
  std::string image;
  std::string json_path;
};

// The words of the record stored at `slot` the `val`-th time (0: the initial content).
inline uint64_t word_of(uint64_t slot, uint64_t val, uint64_t i) {
  uint64_t z = slot * 0x9E3779B97F4A7C15ull ^ (val + 1) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 31)) * 0x94D049BB133111EBull;
  return (z ^ (z >> 29)) + i;
}

// Log-linear latency histogram (16 sub-buckets per power of two: about 6% resolution);
// count, sum and max exact.
class Hist {
 public:
  void add(uint64_t ns) {
    ++b_[index(ns)];
    ++count_;
    sum_ += ns;
    if (ns > max_) max_ = ns;
  }
  uint64_t count() const { return count_; }
  double avg_us() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) / 1e3 : 0; }
  double max_us() const { return static_cast<double>(max_) / 1e3; }
  // The upper edge of the bucket holding the p-quantile (capped by the max).
  double pct_us(double p) const {
    if (count_ == 0) return 0;
    const uint64_t want = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(p * static_cast<double>(count_))));
    uint64_t seen = 0;
    for (size_t i = 0; i < kN; ++i) {
      seen += b_[i];
      if (seen >= want) return static_cast<double>(std::min(upper(i), max_)) / 1e3;
    }
    return max_us();
  }

 private:
  static constexpr size_t kN = 32 + 59 * 16;
  static size_t index(uint64_t v) {
    if (v < 32) return v;
    const int e = 63 - __builtin_clzll(v);
    return 32 + static_cast<size_t>(e - 5) * 16 + ((v >> (e - 4)) & 15);
  }
  static uint64_t upper(size_t i) {
    if (i < 32) return i;
    const size_t e = (i - 32) / 16 + 5, sub = (i - 32) % 16;
    return ((16 + sub + 1) << (e - 4)) - 1;
  }
  std::vector<uint64_t> b_ = std::vector<uint64_t>(kN, 0);
  uint64_t count_ = 0, sum_ = 0, max_ = 0;
};

enum Phase : int { kWarm, kBaseline, kDefrag, kAfter, kStop, kPhases = kStop };
constexpr const char* kPhaseName[] = {"warm-up", "baseline", "defrag", "after"};

struct PhaseData {
  Hist hist;
  uint64_t stalls = 0;          // stores slower than --stall-us
  uint64_t stalled_ns = 0;      // their time
  uint64_t t_begin = 0, t_end = 0;  // main thread's clock at the phase switches
  long nvcsw = 0, nivcsw = 0;   // writer's context switches in the phase
  double cpu_s = 0;             // writer's CPU time (user + system) in the phase
  FaultStats faults;
};

struct Writer {
  Mapping* map = nullptr;
  std::vector<uint64_t>* shadow = nullptr;
  bool sequential = false;
  uint64_t stall_ns = 0;
  std::atomic<int> phase{kWarm};
  PhaseData ph[kPhases];

  void run() {
    auto* base = reinterpret_cast<uint64_t*>(map->data());
    const uint64_t slots = shadow->size();
    uint64_t rng = 0x2545F4914F6CDD1Dull, slot = 0;
    int cur = kWarm;
    rusage ru{};
    ::getrusage(RUSAGE_THREAD, &ru);
    long vc0 = ru.ru_nvcsw, ic0 = ru.ru_nivcsw;
    auto cpu = [](const rusage& u) {
      return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
             static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
    };
    double cpu0 = cpu(ru);
    for (;;) {
      const int p = phase.load(std::memory_order_relaxed);
      if (p != cur) {
        ::getrusage(RUSAGE_THREAD, &ru);
        ph[cur].nvcsw = ru.ru_nvcsw - vc0;
        ph[cur].nivcsw = ru.ru_nivcsw - ic0;
        ph[cur].cpu_s = cpu(ru) - cpu0;
        vc0 = ru.ru_nvcsw, ic0 = ru.ru_nivcsw, cpu0 = cpu(ru);
        if (p == kStop) break;
        cur = p;
      }
      if (sequential) {
        slot = slot + 1 == slots ? 0 : slot + 1;
      } else {
        rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
        slot = static_cast<uint64_t>((static_cast<unsigned __int128>(rng * 0x2545F4914F6CDD1Dull) * slots) >> 64);
      }
      const uint64_t val = (*shadow)[slot] + 1;
      uint64_t* rec = base + slot * kWords;
      const uint64_t t0 = now_ns();
      for (uint64_t i = 0; i < kWords; ++i) rec[i] = word_of(slot, val, i);
      map->flush(rec, kRecord);
      map->drain();
      const uint64_t ns = now_ns_stores_done() - t0;
      (*shadow)[slot] = val;
      PhaseData& d = ph[cur];
      d.hist.add(ns);
      if (ns > stall_ns) ++d.stalls, d.stalled_ns += ns;
    }
  }
};

struct RunResult {
  std::string pattern;
  uint64_t extents_initial = 0, extents_before = 0, extents_after = 0, blocks_moved = 0;
  uint64_t setup_ms = 0;
  double defrag_s = 0;
  PhaseData ph[kPhases];
  uint64_t mismatches_mapped = 0, mismatches_reread = 0, first_bad_slot = UINT64_MAX;
  std::vector<std::string> fsck_problems;
  uint64_t extents_remount = 0;
};

double phase_s(const PhaseData& d) { return static_cast<double>(d.t_end - d.t_begin) / 1e9; }
double ops_per_s(const PhaseData& d) { return d.t_end > d.t_begin ? static_cast<double>(d.hist.count()) / phase_s(d) : 0; }

void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

RunResult run_one(const Options& opt, const std::string& pattern) {
  RunResult res;
  res.pattern = pattern;
  const bool sequential = pattern == "sequential", idle = pattern == "none";
  const std::string image =
      opt.image.empty() ? "/dev/shm/syncdax-defragbench-" + std::to_string(::getpid()) + ".img" : opt.image;
  if (::access(image.c_str(), F_OK) == 0)
    abort_run(EEXIST, image + " exists: defrag_bench creates a fresh medium there and removes it afterwards");
  Removal remove_image(image);
  // The file, a filler as large (interleaved with it, then deleted: free space as
  // fragmented as the file), and a contiguous free region the whole file fits in.
  MkfsOptions mk;
  mk.size = (3 * opt.size + opt.size / 8 + (256ull << 20)) & ~uint64_t{(1 << 20) - 1};
  need(FileSystem::mkfs(image, mk), "mkfs " + image);
  auto fs = need(FileSystem::mount(image), "mount " + image);
  const uint64_t slots = opt.size / kRecord;
  std::vector<uint64_t> shadow(slots, 0);
  {
    const uint64_t t0 = now_ns();
    File f = need(fs->open("/data", O_CREAT | O_RDWR), "open /data");
    File g = need(fs->open("/filler", O_CREAT | O_RDWR), "open /filler");
    std::vector<uint64_t> buf(opt.piece / 8);
    for (uint64_t off = 0; off < opt.size; off += opt.piece) {
      const uint64_t n = std::min(opt.piece, opt.size - off);
      for (uint64_t w = 0; w < n / 8; ++w) buf[w] = word_of((off + w * 8) / kRecord, 0, w % kWords);
      const std::span<const std::byte> bytes{reinterpret_cast<const std::byte*>(buf.data()), n};
      if (need(f.pwrite(bytes, off), "pwrite /data") != n) abort_run(EIO, "short pwrite /data");
      if (need(g.pwrite(bytes, off), "pwrite /filler") != n) abort_run(EIO, "short pwrite /filler");
    }
    need(f.fsync(), "fsync /data");
    need(g.close(), "close /filler");
    need(fs->unlink("/filler"), "unlink /filler");
    need(fs->sync(), "sync");
    res.setup_ms = (now_ns() - t0) / 1000000;
  }
  File f = need(fs->open("/data", O_RDWR), "open /data");
  res.extents_initial = need(f.stat(), "stat").extents;
  Mapping m = need(f.mmap(0, opt.size, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC), "mmap MAP_SYNC");
  // Every page writable before the baseline: it then takes no fault.
  for (uint64_t off = 0; off < opt.size; off += kPage) {
    auto* w = reinterpret_cast<volatile uint64_t*>(m.data() + off);
    *w = *w;
  }

  Writer wr;
  wr.map = &m;
  wr.shadow = &shadow;
  wr.sequential = sequential;
  wr.stall_ns = static_cast<uint64_t>(opt.stall_us * 1e3);
  auto switch_to = [&](int p) {
    const uint64_t t = now_ns();
    const int prev = wr.phase.load();
    wr.ph[prev].t_end = t;
    wr.ph[prev].faults = fs->fault_stats();
    fs->reset_fault_stats();
    if (p != kStop) wr.ph[p].t_begin = t;
    wr.phase.store(p);
  };
  fs->reset_fault_stats();
  wr.ph[kWarm].t_begin = now_ns();
  std::thread writer;
  if (!idle) writer = std::thread([&] { wr.run(); });
  sleep_s(0.3);
  switch_to(kBaseline);
  sleep_s(opt.baseline_s);
  switch_to(kDefrag);
  const uint64_t d0 = now_ns();
  auto dr = f.defragment();
  const uint64_t d1 = now_ns();
  switch_to(kAfter);
  sleep_s(opt.after_s);
  switch_to(kStop);
  if (writer.joinable()) writer.join();
  for (int p = 0; p < kPhases; ++p) res.ph[p] = wr.ph[p];
  const DefragStats ds = need(std::move(dr), "defragment");
  res.defrag_s = static_cast<double>(d1 - d0) / 1e9;
  res.extents_before = ds.extents_before;
  res.extents_after = ds.extents_after;
  res.blocks_moved = ds.blocks_moved;

  // Correctness: each slot holds the last record stored there.
  auto check = [&](const uint64_t* words, uint64_t first_slot, uint64_t n) {
    uint64_t bad = 0;
    for (uint64_t s = 0; s < n; ++s)
      for (uint64_t i = 0; i < kWords; ++i)
        if (words[s * kWords + i] != word_of(first_slot + s, shadow[first_slot + s], i)) {
          ++bad;
          res.first_bad_slot = std::min(res.first_bad_slot, first_slot + s);
          break;
        }
    return bad;
  };
  res.mismatches_mapped = check(reinterpret_cast<const uint64_t*>(m.data()), 0, slots);
  need(m.unmap(), "munmap");
  need(f.close(), "close");
  need(fs->unmount(), "unmount");
  fs.reset();
  res.fsck_problems = FileSystem::fsck(image).problems;
  fs = need(FileSystem::mount(image), "remount " + image);
  {
    File r = need(fs->open("/data", O_RDONLY), "reopen /data");
    res.extents_remount = need(r.stat(), "stat").extents;
    std::vector<uint64_t> buf((4 << 20) / 8);
    for (uint64_t off = 0; off < opt.size; off += buf.size() * 8) {
      const uint64_t n = std::min<uint64_t>(buf.size() * 8, opt.size - off);
      const std::span<std::byte> bytes{reinterpret_cast<std::byte*>(buf.data()), n};
      if (need(r.pread(bytes, off), "pread") != n) abort_run(EIO, "short pread");
      res.mismatches_reread += check(buf.data(), off / kRecord, n / kRecord);
    }
    need(r.close(), "close");
  }
  need(fs->unmount(), "unmount");
  return res;
}

std::string fault_summary(const FaultStats& s) {
  std::string out;
  for (FaultKind k : {FaultKind::kWriteSync, FaultKind::kWrite, FaultKind::kUpgrade, FaultKind::kWriteAlloc,
                      FaultKind::kReadBlock, FaultKind::kReadHole, FaultKind::kSigbus}) {
    const auto& pk = s[k];
    if (pk.count == 0) continue;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%s %llu (avg %.1f us, max %.1f us)", out.empty() ? "" : ", ",
                  std::string(fault_kind_name(k)).c_str(), static_cast<unsigned long long>(pk.count),
                  static_cast<double>(pk.total_ns) / static_cast<double>(pk.count) / 1e3,
                  static_cast<double>(pk.max_ns) / 1e3);
    out += buf;
  }
  return out.empty() ? "none" : out;
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

void print(const Options& opt, const RunResult& r) {
  const PhaseData& base = r.ph[kBaseline];
  const PhaseData& dfg = r.ph[kDefrag];
  if (r.pattern == "none")
    std::printf("\n== no writer: defragment() alone, %s file ==\n", mib(opt.size).c_str());
  else
    std::printf("\n== %s writer: one 64 B record + persist (clwb, sfence) per op, over the whole %s file ==\n",
                r.pattern.c_str(), mib(opt.size).c_str());
  std::printf("file: %llu extents after setup (%s pieces interleaved with a deleted filler, %.1f s)\n",
              static_cast<unsigned long long>(r.extents_initial), size_name(opt.piece).c_str(),
              static_cast<double>(r.setup_ms) / 1e3);
  std::printf("defragment(): %.3f s, %llu -> %llu extents, %llu blocks moved (%s, %.0f MiB/s, %llu moves of 2 MiB)\n",
              r.defrag_s, static_cast<unsigned long long>(r.extents_before),
              static_cast<unsigned long long>(r.extents_after), static_cast<unsigned long long>(r.blocks_moved),
              mib(r.blocks_moved * kPage).c_str(),
              r.defrag_s > 0 ? static_cast<double>(r.blocks_moved * kPage) / (1 << 20) / r.defrag_s : 0,
              static_cast<unsigned long long>((r.blocks_moved * kPage + (2 << 20) - 1) / (2 << 20)));
  if (r.pattern == "none") return;  // no writer: the defragmentation alone
  std::printf("%-9s %7s %10s %11s %7s %8s %8s %9s %10s\n", "phase", "secs", "ops", "ops/s", "vs base", "p50 us",
              "p99 us", "p99.9 us", "max us");
  for (int p = kBaseline; p < kPhases; ++p) {
    const PhaseData& d = r.ph[p];
    std::printf("%-9s %7.3f %10llu %11.0f %7s %8.2f %8.2f %9.2f %10.1f\n", kPhaseName[p], phase_s(d),
                static_cast<unsigned long long>(d.hist.count()), ops_per_s(d),
                fmt_ratio(ops_per_s(d), ops_per_s(base)).c_str(), d.hist.pct_us(0.5), d.hist.pct_us(0.99),
                d.hist.pct_us(0.999), d.hist.max_us());
  }
  std::printf("where the writer's time went:\n");
  std::printf("%-9s %9s %10s %10s %7s %11s %7s %7s %7s\n", "phase", "stalls", "stalled %", "faults %", "cpu %",
              "ops/cpu-s", "vs base", "vcsw", "ivcsw");
  for (int p = kBaseline; p < kPhases; ++p) {
    const PhaseData& d = r.ph[p];
    const double secs = phase_s(d);
    uint64_t fault_ns = 0;
    for (const auto& k : d.faults.kinds) fault_ns += k.total_ns;
    auto per_cpu = [](const PhaseData& x) { return x.cpu_s > 0 ? static_cast<double>(x.hist.count()) / x.cpu_s : 0; };
    std::printf("%-9s %9llu %9.1f%% %9.1f%% %6.0f%% %11.0f %7s %7ld %7ld\n", kPhaseName[p],
                static_cast<unsigned long long>(d.stalls),
                secs > 0 ? static_cast<double>(d.stalled_ns) / 1e9 / secs * 100 : 0,
                secs > 0 ? static_cast<double>(fault_ns) / 1e9 / secs * 100 : 0, secs > 0 ? d.cpu_s / secs * 100 : 0,
                per_cpu(d), fmt_ratio(per_cpu(d), per_cpu(base)).c_str(), d.nvcsw, d.nivcsw);
  }
  for (int p = kBaseline; p < kPhases; ++p)
    std::printf("faults, %-8s: %s\n", kPhaseName[p], fault_summary(r.ph[p].faults).c_str());
  const double ratio = ops_per_s(base) > 0 ? ops_per_s(dfg) / ops_per_s(base) : 0;
  std::printf("writer throughput during defragmentation: %.2f of the baseline (goal >= 0.50: %s)\n", ratio,
              ratio >= 0.5 ? "met" : "NOT met");
  std::printf("blocked window (a store while its block moves): max %.1f us, p99.9 %.1f us; "
              "%llu stores over %.0f us took %.1f%% of the phase\n",
              dfg.hist.max_us(), dfg.hist.pct_us(0.999), static_cast<unsigned long long>(dfg.stalls), opt.stall_us,
              phase_s(dfg) > 0 ? static_cast<double>(dfg.stalled_ns) / 1e9 / phase_s(dfg) * 100 : 0);
  std::printf("content check: %llu of %llu records wrong through the mapping, %llu after remount (pread); "
              "fsck: %s; %llu extents after remount\n",
              static_cast<unsigned long long>(r.mismatches_mapped),
              static_cast<unsigned long long>(opt.size / kRecord),
              static_cast<unsigned long long>(r.mismatches_reread),
              r.fsck_problems.empty() ? "clean" : (std::to_string(r.fsck_problems.size()) + " problems").c_str(),
              static_cast<unsigned long long>(r.extents_remount));
  for (const auto& p : r.fsck_problems) std::printf("  fsck: %s\n", p.c_str());
  if (r.first_bad_slot != UINT64_MAX)
    std::printf("  first wrong record: slot %llu (file offset %llu)\n", static_cast<unsigned long long>(r.first_bad_slot),
                static_cast<unsigned long long>(r.first_bad_slot * kRecord));
}

Json result_json(const Options& opt, const RunResult& r) {
  Json phases = Json::object();
  for (int p = kBaseline; p < kPhases; ++p) {
    const PhaseData& d = r.ph[p];
    phases[kPhaseName[p]] = {
        {"seconds", phase_s(d)},
        {"ops", d.hist.count()},
        {"ops_per_s", ops_per_s(d)},
        {"latency_us",
         {{"p50", d.hist.pct_us(0.5)}, {"avg", d.hist.avg_us()}, {"p99", d.hist.pct_us(0.99)},
          {"p999", d.hist.pct_us(0.999)}, {"max", d.hist.max_us()}}},
        {"stalls", d.stalls},
        {"stalled_seconds", static_cast<double>(d.stalled_ns) / 1e9},
        {"voluntary_context_switches", d.nvcsw},
        {"involuntary_context_switches", d.nivcsw},
        {"writer_cpu_seconds", d.cpu_s},
        {"syncdax_faults", faults_json(d.faults)}};
  }
  const double base = ops_per_s(r.ph[kBaseline]);
  return Json{{"pattern", r.pattern},
              {"extents_initial", r.extents_initial},
              {"defrag",
               {{"seconds", r.defrag_s},
                {"extents_before", r.extents_before},
                {"extents_after", r.extents_after},
                {"blocks_moved", r.blocks_moved}}},
              {"phases", phases},
              {"throughput_ratio_defrag_to_baseline", base > 0 ? ops_per_s(r.ph[kDefrag]) / base : 0},
              {"throughput_ratio_after_to_baseline", base > 0 ? ops_per_s(r.ph[kAfter]) / base : 0},
              {"blocked_window_us",
               {{"max", r.ph[kDefrag].hist.max_us()}, {"p999", r.ph[kDefrag].hist.pct_us(0.999)}}},
              {"check",
               {{"records", opt.size / kRecord},
                {"wrong_through_mapping", r.mismatches_mapped},
                {"wrong_after_remount", r.mismatches_reread},
                {"fsck_problems", r.fsck_problems},
                {"extents_after_remount", r.extents_remount}}}};
}

uint64_t parse_size(const std::string& s) {
  size_t end = 0;
  uint64_t v = std::stoull(s, &end);
  if (end < s.size()) switch (s[end]) {
      case 'K': case 'k': v <<= 10; break;
      case 'M': case 'm': v <<= 20; break;
      case 'G': case 'g': v <<= 30; break;
      default: break;
    }
  return v;
}

}  // namespace
}  // namespace sdx::bench

int main(int argc, char** argv) {
  using namespace sdx::bench;
  using namespace sdx::bench::util;
  Options opt;
  std::string size = "1G", piece = "64K";
  CLI::App app{"defrag_bench: a writer's stores through a MAP_SYNC mapping while File::defragment() moves the file"};
  app.add_option("--size", size, "file size (K/M/G suffix; a multiple of 2M)")->capture_default_str();
  app.add_option("--piece", piece, "fragment size of the initial file (a multiple of 4K)")->capture_default_str();
  app.add_option("--pattern", opt.pattern, "writer's slots: random, sequential, both, or none (no writer)")
      ->check(CLI::IsMember({"random", "sequential", "both", "none"}))
      ->capture_default_str();
  app.add_option("--baseline-seconds", opt.baseline_s, "writer alone before defragment()")->capture_default_str();
  app.add_option("--after-seconds", opt.after_s, "writer alone after defragment()")->capture_default_str();
  app.add_option("--stall-us", opt.stall_us, "a store slower than this counts as a stall")->capture_default_str();
  app.add_option("--image", opt.image, "medium to create (default /dev/shm/syncdax-defragbench-PID.img)");
  app.add_option("--json", opt.json_path, "also write the figures as JSON to FILE");
  CLI11_PARSE(app, argc, argv);
  opt.size = parse_size(size);
  opt.piece = parse_size(piece);
  if (opt.size < (2 << 20) || opt.size % (2 << 20)) {
    std::fprintf(stderr, "defrag_bench: --size must be a positive multiple of 2M\n");
    return 2;
  }
  if (opt.piece == 0 || opt.piece % 4096) {
    std::fprintf(stderr, "defrag_bench: --piece must be a positive multiple of 4K\n");
    return 2;
  }
  std::printf("defrag_bench: %s file, machine load %s, timer floor %.2f us\n", mib(opt.size).c_str(),
              machine_load().c_str(), timer_floor_us());
  Json runs = Json::array();
  try {
    for (const std::string pattern : {"random", "sequential", "none"}) {
      if (opt.pattern == "both" ? pattern == "none" : opt.pattern != pattern) continue;
      const auto r = run_one(opt, pattern);
      print(opt, r);
      runs.push_back(result_json(opt, r));
    }
  } catch (const Abort& a) {
    std::fprintf(stderr, "defrag_bench: %s\n", a.error.message.c_str());
    return 1;
  }
  std::printf("\nvs base: against the baseline phase of the same run. stalls: stores slower than --stall-us;\n"
              "stalled %%: their time, faults %%: syncdax's fault handler's time (lock waits included), cpu %%: the\n"
              "writer thread's CPU time, each in %% of the phase. ops/cpu-s: ops per second of the writer's CPU\n"
              "time (what a busy machine's preemptions do not change). vcsw/ivcsw: the writer's voluntary (it\n"
              "slept: a lock, a commit) and involuntary (preempted) context switches.\n");
  if (!opt.json_path.empty()) {
    try {
      write_json(opt.json_path, Json{{"bench", "defrag_bench"},
                                     {"size", opt.size},
                                     {"piece", opt.piece},
                                     {"load", machine_load()},
                                     {"runs", runs}});
    } catch (const Abort& a) {
      std::fprintf(stderr, "defrag_bench: %s\n", a.error.message.c_str());
      return 1;
    }
  }
  return 0;
}
