// bench_util: what the benchmarks share -- aborting a run with an Error, timing with
// the vDSO clock, percentiles, the machine's load, RAII for fds and mappings, and the
// number formats of their tables. Benchmarks only; never linked into the library.
#pragma once

#include <immintrin.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "syncdax/status.hpp"

namespace sdx::bench::util {

using Json = nlohmann::ordered_json;

// A refusal anywhere in a run; the benchmark's entry point turns it into its Status.
struct Abort {
  Error error;
};

[[noreturn]] inline void abort_run(int code, std::string message) { throw Abort{Error{code, std::move(message)}}; }

[[noreturn]] inline void abort_errno(const std::string& what) {
  const int e = errno;
  abort_run(e, what + ": " + std::strerror(e));
}

template <class T>
inline T need(Result<T> r, const std::string& what) {
  if (!r) abort_run(r.error().code, what + ": " + r.error().message);
  return std::move(*r);
}

inline void need(Status s, const std::string& what) {
  if (!s) abort_run(s.error().code, what + ": " + s.error().message);
}

// CLOCK_MONOTONIC through the vDSO: no system call, so a timed region holds the store,
// whatever fault it takes, and the clock's own cost (measured and printed).
inline uint64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// The end of a timed region that made stores durable. The sfence after clwb only
// orders the write-backs; the clock read does not wait for them, so they finish after
// the region and their cost lands on the thread's next stores, outside it (a 1 KiB
// append measured 0.09 us here that cost 0.9 us per append in a loop). mfence returns
// once every earlier store and write-back is done.
inline uint64_t now_ns_stores_done() {
  _mm_mfence();
  return now_ns();
}

// The 1-minute load average and the CPUs to run it on: how shared the machine was.
inline std::string machine_load() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  in >> one;
  return (one.empty() ? "?" : one) + " on " + std::to_string(std::thread::hardware_concurrency()) + " CPUs";
}

inline std::string mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

struct Stats {
  double min = 0, p50 = 0, avg = 0, p99 = 0, max = 0;
};

inline Stats stats_of(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) {
    const size_t idx = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
    return v[std::clamp<size_t>(idx, 1, v.size()) - 1];
  };
  s.min = v.front();
  s.max = v.back();
  s.p50 = pct(0.50);
  s.p99 = pct(0.99);
  s.avg = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  return s;
}

// The cost of a timed store that takes no fault: the floor under every figure.
inline double timer_floor_us() {
  std::vector<double> us(2001);
  alignas(64) static volatile uint64_t word = 0;
  for (double& v : us) {
    const uint64_t t0 = now_ns();
    word = word + 1;
    v = static_cast<double>(now_ns() - t0) / 1e3;
  }
  return stats_of(std::move(us)).p50;
}

class Region {
 public:
  Region(void* p, size_t len) : p_(p), len_(len) {}
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region() { ::munmap(p_, len_); }
  std::byte* data() const { return static_cast<std::byte*>(p_); }

 private:
  void* p_;
  size_t len_;
};

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Removes what the run created, also when it ends early.
class Removal {
 public:
  explicit Removal(std::string path) : path_(std::move(path)) {}
  Removal(const Removal&) = delete;
  Removal& operator=(const Removal&) = delete;
  ~Removal() { ::unlink(path_.c_str()); }

 private:
  std::string path_;
};

inline std::string size_name(size_t n) {
  return n >= 1024 ? std::to_string(n >> 10) + " KiB" : std::to_string(n) + " B";
}

inline std::string fmt_us(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

inline std::string fmt_ratio(double a, double b) {
  if (b <= 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fx", a / b);
  return buf;
}

inline Json stats_json(const Stats& s) {
  return Json{{"min_us", s.min}, {"p50_us", s.p50}, {"avg_us", s.avg}, {"p99_us", s.p99}, {"max_us", s.max}};
}

// A benchmark's entry point: an Abort anywhere inside becomes its Status.
template <class F>
Status catching_aborts(F&& run) {
  try {
    return run();
  } catch (const Abort& a) {
    return fail(a.error);
  }
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out.flush()) abort_errno("write " + path);
}

inline void write_json(const std::string& path, const Json& j) { write_text(path, j.dump(1) + "\n"); }

}  // namespace sdx::bench::util
