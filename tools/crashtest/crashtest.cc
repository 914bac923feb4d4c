#include "crashtest.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <numeric>
#include <optional>
#include <vector>

#include "device/device.h"
#include "fence_capture.h"
#include "oracle.h"
#include "syncdax/syncdax.hpp"
#include "workload.h"

namespace sdx::crashtest {
namespace {

// Small, so that a crash image is cheap to take and to recover, yet room for every file
// of a workload at its largest plus the journal.
constexpr uint64_t kDevSize = 2ull << 20;
// Crash images held at once (kDevSize each) before they are checked.
constexpr size_t kBatch = 32;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// One line on a terminal's stderr, redrawn at most ten times a second.
class Progress {
 public:
  explicit Progress(bool on) : on_(on && ::isatty(STDERR_FILENO)) {}
  void total(uint64_t n) { total_ = n; }
  void update(const Summary& s, bool force = false) {
    if (!on_) return;
    const auto now = Clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    constexpr int kWidth = 30;
    const double frac = total_ ? std::min(1.0, double(s.points) / double(total_)) : 0.0;
    const int fill = static_cast<int>(frac * kWidth);
    std::fprintf(stderr, "\r[%.*s%*s] %" PRIu64 "/%" PRIu64 " crash points, %" PRIu64 " violations, %.0f/min ",
                 fill, "##############################", kWidth - fill, "", s.points, total_, s.violations,
                 rate(s));
    std::fflush(stderr);
    drawn_ = true;
  }
  void finish() {
    if (drawn_) std::fprintf(stderr, "\n");
  }
  double rate(const Summary& s) const {
    const double sec = seconds_since(start_);
    return sec > 0 ? double(s.points) * 60.0 / sec : 0.0;
  }
  double elapsed() const { return seconds_since(start_); }

 private:
  bool on_;
  bool drawn_ = false;
  uint64_t total_ = 0;
  Clock::time_point start_ = Clock::now(), last_{};
};

std::string replay_command(const Options& o, uint64_t seed, uint64_t fence) {
  char p[32];
  std::snprintf(p, sizeof p, "%g", o.evict_prob);
  std::string s = "syncdax crashtest --seed " + std::to_string(seed) + " --ops " + std::to_string(o.ops) +
                  " --evict-prob " + p;
  if (o.torn) s += " --torn";
  if (!o.sync) s += " --no-sync";
  return s + " --replay " + std::to_string(fence);
}

void print_violations(const std::vector<std::string>& v) {
  for (const std::string& s : v) std::printf("    %s\n", s.c_str());
}

// A history sized for a table: three records per row at most.
struct HistoryBuffer {
  explicit HistoryBuffer(size_t rows) : mem(History::bytes_for(3 * rows + 8)), h(mem) {}
  std::vector<std::byte> mem;
  History h;
};

uint64_t sim_fences(void* sim) { return static_cast<device::SimDevice*>(sim)->fence_count(); }

struct FenceRun {
  uint64_t base = 0;  // fence count when the workload started
  uint64_t end = 0;   // after its unmount
  std::vector<FenceCapture::Image> images;
};

// Format a fresh in-memory sim device, mount it with the committer off (so fences are
// numbered the same every run), run the table in lockstep and capture `points`.
Result<FenceRun> run_fences(const std::vector<Op>& t, History& h, bool sync, std::vector<uint64_t> points,
                            const CrashVariant& v, uint64_t seed) {
  auto dev = device::make_sim(kDevSize);
  if (!dev) return fail(ENOMEM, "cannot create an in-memory sim device");
  device::SimDevice* sim = dev.get();
  MkfsOptions mo;
  mo.size = kDevSize;
  mo.kind = DeviceKind::kSim;
  SDX_TRY(FileSystem::format(*dev, mo));
  SDX_ASSIGN(auto fs, FileSystem::mount(std::move(dev), {.commit_interval_ms = 0}));
  FenceRun r;
  r.base = sim->fence_count();
  h.clear();
  std::optional<FenceCapture> cap;
  if (!points.empty()) cap.emplace(*sim, std::move(points), std::vector<CrashVariant>{v}, seed);
  ExecOptions eo;
  eo.sync = sync;
  eo.lockstep = true;
  eo.stop = cap ? &cap->done() : nullptr;
  eo.fence = &sim_fences;
  eo.fence_ctx = sim;
  if (auto s = execute(*fs, t, h, eo); !s)
    return fail(s.error().code, "workload seed " + std::to_string(seed) + ": " + s.error().message);
  // The crash points include the end: the files closed (orphans reclaimed) and unmount.
  if (!(cap && cap->done().load())) SDX_TRY(fs->unmount());
  r.end = sim->fence_count();
  if (cap) r.images = std::move(cap->images());
  return r;
}

// fsck, recovery and the oracle for one crash image.
std::vector<std::string> check_image(const device::CrashImage& img, const std::vector<Op>& t, const History& h,
                                     uint64_t k) {
  std::vector<std::string> out;
  auto dev = device::make_sim(img);
  if (!dev) return {"cannot load the crash image"};
  FsckReport rep = FileSystem::fsck(*dev);
  if (!rep.usable) out.push_back("fsck: not usable");
  for (const std::string& p : rep.problems) out.push_back("fsck: " + p);
  auto fs = FileSystem::mount(std::move(dev), {.commit_interval_ms = 0});
  if (!fs) {
    out.push_back("recovery (mount): " + fs.error().to_string());
    return out;
  }
  for (std::string& s : check_recovered(**fs, t, h, k)) out.push_back(std::move(s));
  if (auto s = (*fs)->unmount(); !s) out.push_back("unmount after recovery: " + s.error().to_string());
  return out;
}

// A sim image file holding `img`, for `syncdax fsck`, `syncdax io` and friends.
Status keep_image(const device::CrashImage& img, const std::string& path) {
  SDX_TRY(device::create(device::Kind::kSim, path, device::kLabelSize + img.bytes.size()));
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return fail(errno, "open " + path);
  const ssize_t n = ::pwrite(fd, img.bytes.data(), img.bytes.size(), device::kLabelSize);
  const int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(img.bytes.size())) return fail(n < 0 ? err : EIO, "write " + path);
  return ok();
}

// The crash points of one workload: all of (base, end], or `want` of them at random.
std::vector<uint64_t> choose_points(uint64_t base, uint64_t end, uint64_t want, uint64_t seed) {
  std::vector<uint64_t> all(end - base);
  std::iota(all.begin(), all.end(), base + 1);
  if (want == 0 || want >= all.size()) return all;
  uint64_t x = seed ^ 0xC2B2AE3D27D4EB4Full;
  for (size_t i = 0; i < want; ++i) {  // a partial Fisher-Yates shuffle
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    std::swap(all[i], all[i + (x >> 11) % (all.size() - i)]);
  }
  all.resize(want);
  std::sort(all.begin(), all.end());
  return all;
}

Result<Summary> run_replay(const Options& o) {
  const CrashVariant v{o.evict_prob, o.torn};
  const auto t = generate({o.seed, o.ops, o.sync});
  HistoryBuffer hb(t.size());
  const uint64_t k = *o.replay;
  SDX_ASSIGN(FenceRun r, run_fences(t, hb.h, o.sync, {k}, v, o.seed));
  if (r.images.empty())
    return fail(EINVAL, "fence " + std::to_string(k) + " is not a crash point of workload seed " +
                            std::to_string(o.seed) + " (its fences are " + std::to_string(r.base + 1) + ".." +
                            std::to_string(r.end) + ")");
  const auto& img = r.images.front();
  auto viol = check_image(img.image, t, hb.h, k);
  const std::string path =
      o.dir + "/syncdax-crashtest-" + std::to_string(o.seed) + "-" + std::to_string(k) + ".img";
  SDX_TRY(keep_image(img.image, path));
  std::printf("workload seed %" PRIu64 ", crash at fence %" PRIu64 ": %s\n", o.seed, k,
              viol.empty() ? "no violation" : "violations:");
  print_violations(viol);
  // What was going on: the rows started before the crash and not acknowledged, and the
  // last ones acknowledged.
  std::vector<int> state(t.size(), 0);  // 1 started, 2 acknowledged
  for (size_t i = 0; i < hb.h.size(); ++i) {
    const Record& rec = hb.h[i];
    if (rec.fence >= k || rec.row >= t.size()) continue;
    if (rec.event == Event::kStart) state[rec.row] = std::max(state[rec.row], 1);
    if (rec.event == Event::kAck) state[rec.row] = 2;
  }
  size_t last_acked = t.size();
  for (size_t row = 0; row < t.size(); ++row) {
    if (state[row] == 2) last_acked = row;
    if (state[row] == 1)
      std::printf("  in flight: row %zu, %s %s\n", row, op_name(t[row].kind), file_name(t[row].file).c_str());
  }
  if (last_acked < t.size())
    std::printf("  last acknowledged: row %zu, %s %s\n", last_acked, op_name(t[last_acked].kind),
                file_name(t[last_acked].file).c_str());
  std::printf("crash image kept at %s (a sim image: try `syncdax fsck` or `syncdax io` on it)\n", path.c_str());
  return Summary{1, viol.empty() ? 0u : 1u};
}

// The crash points of a run: which workloads, and which fences of each.
struct Planned {
  uint64_t seed;
  uint64_t base, end;  // its fences are base+1..end
  std::vector<uint64_t> points;
};

Result<std::vector<Planned>> plan(const Options& o, const CrashVariant& v) {
  std::vector<Planned> out;
  uint64_t remaining = o.points;
  for (uint64_t w = 0;; ++w) {
    const uint64_t seed = o.seed + w;
    const auto t = generate({seed, o.ops, o.sync});
    HistoryBuffer hb(t.size());
    SDX_ASSIGN(FenceRun first, run_fences(t, hb.h, o.sync, {}, v, seed));
    if (first.end == first.base) return fail(EINVAL, "workload seed " + std::to_string(seed) + " has no fence");
    out.push_back({seed, first.base, first.end, choose_points(first.base, first.end, remaining, seed)});
    if (!o.points) break;
    remaining -= std::min<uint64_t>(remaining, out.back().points.size());
    if (remaining == 0) break;
  }
  return out;
}

// Counters shared by the worker processes of one run (MAP_SHARED memory).
struct Shared {
  std::atomic<uint64_t> violations{0};
  std::atomic<uint64_t> reported{0};
};

// One worker's share of the batches (those with index % jobs == job). It writes one byte
// to `tick` per crash point checked and reports violations itself, each in one write.
Status power_worker(const Options& o, const std::vector<Planned>& plan, unsigned job, unsigned jobs,
                    Shared& shared, int tick) {
  const CrashVariant v{o.evict_prob, o.torn};
  size_t index = 0;
  for (const Planned& w : plan) {
    std::optional<std::vector<Op>> t;
    std::optional<HistoryBuffer> hb;
    for (size_t b = 0; b < w.points.size(); b += kBatch, ++index) {
      if (index % jobs != job) continue;
      if (!t) {
        t = generate({w.seed, o.ops, o.sync});
        hb.emplace(t->size());
      }
      std::vector<uint64_t> batch(w.points.begin() + b, w.points.begin() + std::min(w.points.size(), b + kBatch));
      SDX_ASSIGN(FenceRun r, run_fences(*t, hb->h, o.sync, batch, v, w.seed));
      if (r.images.size() != batch.size())
        return fail(EIO, "workload seed " + std::to_string(w.seed) + " is not deterministic: " +
                             std::to_string(r.images.size()) + " of " + std::to_string(batch.size()) +
                             " crash points were reached again");
      for (const auto& img : r.images) {
        auto viol = check_image(img.image, *t, hb->h, img.fence);
        if (!viol.empty()) {
          shared.violations.fetch_add(1);
          if (shared.reported.fetch_add(1) < o.report) {
            std::string msg = "violation: workload seed " + std::to_string(w.seed) + ", crash at fence " +
                              std::to_string(img.fence) + " of " + std::to_string(w.base + 1) + ".." +
                              std::to_string(w.end) + ":\n";
            for (const std::string& s : viol) msg += "    " + s + "\n";
            msg += "  replay: " + replay_command(o, w.seed, img.fence) + "\n";
            std::fflush(stdout);
            if (::write(STDOUT_FILENO, msg.data(), msg.size()) < 0) return fail(errno, "standard output");
          }
        }
        const char c = 1;
        if (::write(tick, &c, 1) != 1) return fail(errno, "progress pipe");
      }
    }
  }
  return ok();
}

// The batches are spread over `jobs` forked workers (the checks are independent and
// each worker re-runs the deterministic workload itself); the parent only counts.
Result<Summary> run_power(const Options& o, Progress& p) {
  const CrashVariant v{o.evict_prob, o.torn};
  SDX_ASSIGN(auto planned, plan(o, v));
  uint64_t total = 0;
  for (const Planned& w : planned) total += w.points.size();
  p.total(total);
  void* mem = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return fail(errno, "mmap of the shared counters");
  Shared* shared = new (mem) Shared;
  int tick[2];
  if (::pipe2(tick, O_CLOEXEC) != 0) return fail(errno, "pipe");
  const unsigned jobs = std::max(1u, o.jobs);
  std::vector<pid_t> kids;
  std::fflush(nullptr);
  for (unsigned j = 0; j < jobs; ++j) {
    const pid_t pid = ::fork();
    if (pid < 0) return fail(errno, "fork");
    if (pid == 0) {
      ::close(tick[0]);
      Status s = power_worker(o, planned, j, jobs, *shared, tick[1]);
      if (!s) std::fprintf(stderr, "syncdax: crashtest: %s\n", s.error().to_string().c_str());
      std::fflush(nullptr);
      ::_exit(s ? 0 : 2);
    }
    kids.push_back(pid);
  }
  ::close(tick[1]);
  Summary sum;
  char buf[256];
  for (;;) {
    const ssize_t n = ::read(tick[0], buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    sum.points += static_cast<uint64_t>(n);
    sum.violations = shared->violations.load();
    p.update(sum);
  }
  ::close(tick[0]);
  bool worker_failed = false;
  for (pid_t k : kids) {
    int status = 0;
    while (::waitpid(k, &status, 0) < 0 && errno == EINTR) {
    }
    worker_failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
  }
  sum.violations = shared->violations.load();
  ::munmap(mem, sizeof(Shared));
  if (worker_failed) return fail(EIO, "a worker failed (its message is above)");
  if (sum.points != total)
    return fail(EIO, std::to_string(sum.points) + " of " + std::to_string(total) + " crash points were checked");
  return sum;
}

// ---- --kill ----

Status copy_file(const std::string& from, const std::string& to) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return fail(errno, "open " + from);
  const int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    const int err = errno;
    ::close(in);
    return fail(err, "create " + to);
  }
  std::vector<char> buf(1 << 20);
  Status s = ok();
  for (;;) {
    const ssize_t n = ::read(in, buf.data(), buf.size());
    if (n == 0) break;
    if (n < 0 || ::write(out, buf.data(), n) != n) {
      s = fail(errno ? errno : EIO, "copy " + from + " to " + to);
      break;
    }
  }
  ::close(in);
  ::close(out);
  return s;
}

// The child of one kill round: mount the medium, tell the parent, run the workload with
// its lanes concurrent and the committer on. Never returns.
[[noreturn]] void kill_child(const std::string& path, const std::vector<Op>& t, History& h, bool sync, int ready) {
  auto fs = FileSystem::mount(path, {.commit_interval_ms = 5});
  if (!fs) {
    std::fprintf(stderr, "syncdax: crashtest child: mount %s: %s\n", path.c_str(), fs.error().to_string().c_str());
    ::_exit(3);
  }
  const char c = 1;
  if (::write(ready, &c, 1) != 1) ::_exit(3);
  ::close(ready);
  ExecOptions eo;
  eo.sync = sync;
  eo.lockstep = false;
  Status s = execute(**fs, t, h, eo);
  if (s) s = (*fs)->unmount();
  if (!s) {
    std::fprintf(stderr, "syncdax: crashtest child: %s\n", s.error().to_string().c_str());
    ::_exit(1);
  }
  ::_exit(0);
}

Result<Summary> run_kill(const Options& o, Progress& p) {
  const std::string path = o.dir + "/syncdax-crashtest-kill-" + std::to_string(::getpid()) + ".img";
  const std::string saved = path + ".before-recovery";
  // The history lives in memory shared with the children: what a child acknowledged
  // before it was killed stays readable here.
  const size_t cap = 3 * std::max<uint64_t>(o.ops, 64) + 64;
  const size_t bytes = History::bytes_for(cap);
  void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return fail(errno, "mmap of the shared history");
  std::unique_ptr<void, std::function<void(void*)>> unmap(mem, [bytes](void* m) { ::munmap(m, bytes); });
  History h(std::span(static_cast<std::byte*>(mem), bytes));
  p.total(o.rounds);
  Summary sum;
  uint64_t full_records = 0;  // history records of one unkilled run
  uint64_t finished_first = 0;
  uint64_t x = o.seed * 0x9E3779B97F4A7C15ull + 1;
  for (uint64_t round = 0; round < o.rounds; ++round) {
    const uint64_t seed = o.seed + round;
    const auto t = generate({seed, o.ops, o.sync});
    h.clear();
    SDX_TRY(FileSystem::mkfs(path, {.size = kDevSize, .kind = DeviceKind::kSim}));
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) return fail(errno, "pipe");
    std::fflush(nullptr);
    const pid_t child = ::fork();
    if (child < 0) return fail(errno, "fork");
    if (child == 0) {
      ::close(ready[0]);
      kill_child(path, t, h, o.sync, ready[1]);
    }
    ::close(ready[1]);
    char c;
    const bool mounted = ::read(ready[0], &c, 1) == 1;
    ::close(ready[0]);
    // Round 0 runs to the end and counts the records a whole run writes; later rounds
    // are killed once the child has written a uniformly random number of them, plus a
    // random spin of up to 200 us, so the kill lands anywhere: in a fault, a commit, a
    // copy. The waiting picks the moment; it does not synchronise anything.
    int status = 0;
    bool reaped = false;
    if (round > 0 && mounted) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      const uint64_t target = (x >> 11) % std::max<uint64_t>(full_records, 1);
      while (h.size() < target && !reaped) {
        reaped = ::waitpid(child, &status, WNOHANG) == child;
        ::sched_yield();
      }
      const auto until = Clock::now() + std::chrono::microseconds((x >> 40) % 200);
      while (Clock::now() < until) {
      }
      if (!reaped) ::kill(child, SIGKILL);
    }
    while (!reaped && ::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (round == 0) full_records = h.size();
    std::vector<std::string> viol;
    if (WIFEXITED(status)) {
      ++finished_first;
      if (WEXITSTATUS(status) != 0)
        viol.push_back("the workload itself failed in the child (exit status " +
                       std::to_string(WEXITSTATUS(status)) + ", its message is above)");
    } else if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
      viol.push_back("the child died of signal " + std::to_string(WTERMSIG(status)) + ", not of our SIGKILL");
    }
    SDX_TRY(copy_file(path, saved));
    FsckReport rep = FileSystem::fsck(path);
    if (!rep.usable) viol.push_back("fsck: not usable");
    for (const std::string& s : rep.problems) viol.push_back("fsck: " + s);
    {
      auto fs = FileSystem::mount(path, {.commit_interval_ms = 0});
      if (!fs) {
        viol.push_back("recovery (mount): " + fs.error().to_string());
      } else {
        for (std::string& s : check_recovered(**fs, t, h, kAllRecords)) viol.push_back(std::move(s));
        if (auto s = (*fs)->unmount(); !s) viol.push_back("unmount after recovery: " + s.error().to_string());
      }
    }
    ++sum.points;
    if (!viol.empty() && sum.violations++ < o.report) {
      // Only the reported rounds keep their image: a run of the negative control would
      // otherwise fill the directory.
      const std::string kept = o.dir + "/syncdax-crashtest-kill-" + std::to_string(seed) + ".img";
      std::rename(saved.c_str(), kept.c_str());
      p.finish();
      std::printf("violation: kill round %" PRIu64 ", workload seed %" PRIu64 " (%zu history records):\n", round,
                  seed, h.size());
      print_violations(viol);
      std::printf("  the image as the killed child left it: %s\n", kept.c_str());
    } else {
      std::remove(saved.c_str());
    }
    p.update(sum);
  }
  std::remove(path.c_str());
  p.finish();
  std::printf("kill rounds: %" PRIu64 " (%" PRIu64 " killed, %" PRIu64 " finished first, round 0 on purpose)\n",
              sum.points, sum.points - finished_first, finished_first);
  return sum;
}


void print_table(const std::vector<Op>& t) {
  for (size_t r = 0; r < t.size(); ++r) {
    const Op& op = t[r];
    std::printf("%5zu lane %u %-9s %-4s off %6" PRIu64 " len %6" PRIu64 " seed %6" PRIu64 " aux %d name %u -> size %" PRIu64 "\n",
                r, op.lane, op_name(op.kind), file_name(op.file).c_str(), op.off, op.len, op.seed,
                op.aux == kNoFile ? -1 : int(op.aux), op.name, op.size_after);
  }
}

}  // namespace

Result<Summary> run(const Options& o) {
  if (o.print_workload) {
    print_table(generate({o.seed, o.ops, o.sync}));
    return Summary{};
  }
  if (o.replay) return run_replay(o);
  Progress p(o.progress);
  Result<Summary> r = o.kill ? run_kill(o, p) : run_power(o, p);
  if (!r) return r;
  p.update(*r, true);
  p.finish();
  std::printf("checked %" PRIu64 " crash points in %.1f s: %.0f per minute\n", r->points, p.elapsed(), p.rate(*r));
  return r;
}

}  // namespace sdx::crashtest
