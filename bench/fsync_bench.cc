// fsync_bench: the latency of making one new 4 KiB block durable, syncdax against ext4,
// in one run on one machine.
//   (a) syncdax, file device under /dev/shm: pwrite 4 KiB at a new block offset
//       (allocates) + fdatasync, N times at successive offsets;
//   (b) the same with pwrite(2) + fdatasync(2) on a file in --dir (ext4 by default);
//   (c) 4 KiB appends with fdatasync after each, both ways (O_APPEND).
// Prints p50/p99/mean/max in microseconds, operations per second and ext4/syncdax ratios.
// A benchmark, not a test: it never fails on speed.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "device/device.h"
#include "fs_type.h"
#include "pmem/pmem.h"
#include "syncdax/syncdax.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kBlock = 4096;

struct Series {
  std::string name;
  std::vector<double> us;  // latency of each op, microseconds
  double wall_s = 0;       // whole loop
  double pct(double p) const {
    if (us.empty()) return 0;
    std::vector<double> v = us;
    std::sort(v.begin(), v.end());
    size_t idx = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
    return v[std::clamp<size_t>(idx, 1, v.size()) - 1];
  }
  double mean() const {
    return us.empty() ? 0 : std::accumulate(us.begin(), us.end(), 0.0) / static_cast<double>(us.size());
  }
  double max() const { return us.empty() ? 0 : *std::max_element(us.begin(), us.end()); }
  double ops_per_s() const { return wall_s > 0 ? static_cast<double>(us.size()) / wall_s : 0; }
};

// Removed at exit, also when die() ends the run early.
std::string g_cleanup_image, g_cleanup_ext4;
void cleanup() {
  if (!g_cleanup_image.empty()) ::unlink(g_cleanup_image.c_str());
  if (!g_cleanup_ext4.empty()) ::unlink(g_cleanup_ext4.c_str());
}

[[noreturn]] void die(const std::string& what, const std::string& msg) {
  std::fprintf(stderr, "fsync_bench: %s: %s\n", what.c_str(), msg.c_str());
  std::exit(1);
}

template <class T>
T need(sdx::Result<T> r, const std::string& what) {
  if (!r) die(what, r.error().to_string());
  return std::move(*r);
}
void need(sdx::Status s, const std::string& what) {
  if (!s) die(what, s.error().to_string());
}

// Run `op(i)` up to n times (stopping after max_s seconds), timing each.
template <class Op>
Series measure(const std::string& name, int n, double max_s, Op&& op) {
  Series s{name, {}, 0};
  s.us.reserve(static_cast<size_t>(n));
  auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    op(i);
    auto t1 = Clock::now();
    s.us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    if (std::chrono::duration<double>(t1 - start).count() > max_s) break;
  }
  s.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  return s;
}

void print_row(const char* label, const Series& s) {
  std::printf("%-34s %6zu %10.2f %10.2f %10.2f %10.2f %11.0f\n", label, s.us.size(), s.pct(0.50),
              s.pct(0.99), s.mean(), s.max(), s.ops_per_s());
}

void print_ratio(const Series& ext4, const Series& sdx) {
  auto r = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  char p50[32], p99[32], mean[32], max[32], ops[32];
  std::snprintf(p50, sizeof p50, "%.0fx", r(ext4.pct(0.5), sdx.pct(0.5)));
  std::snprintf(p99, sizeof p99, "%.0fx", r(ext4.pct(0.99), sdx.pct(0.99)));
  std::snprintf(mean, sizeof mean, "%.0fx", r(ext4.mean(), sdx.mean()));
  std::snprintf(max, sizeof max, "%.0fx", r(ext4.max(), sdx.max()));
  std::snprintf(ops, sizeof ops, "%.0fx", r(sdx.ops_per_s(), ext4.ops_per_s()));
  std::printf("%-34s %6s %10s %10s %10s %10s %11s\n", "    ratio ext4/syncdax", "", p50, p99, mean,
              max, ops);
}

}  // namespace

int main(int argc, char** argv) {
  int ops = 2000;
  std::string dir = ".";
  std::string image;
  double max_s = 60;
  bool msync_on_fence = false;

  CLI::App app{"fsync_bench: allocate+fdatasync and append+fdatasync latency, syncdax vs ext4"};
  app.add_option("-n,--ops", ops, "operations per series")->check(CLI::Range(1, 10000000))->capture_default_str();
  app.add_option("--dir", dir, "directory for the ext4 file")->capture_default_str();
  app.add_option("--image", image, "syncdax image path (default: /dev/shm/syncdax-fsync-bench-PID.img)");
  app.add_option("--max-seconds", max_s, "stop a series after this long")->capture_default_str();
  app.add_flag("--msync-on-fence", msync_on_fence,
               "file device: msync on every fence (survives machine crashes, like ext4)");
  CLI11_PARSE(app, argc, argv);

  if (image.empty()) image = "/dev/shm/syncdax-fsync-bench-" + std::to_string(::getpid()) + ".img";
  std::string ext4_path = dir + "/syncdax-fsync-bench-" + std::to_string(::getpid()) + ".tmp";

  g_cleanup_image = image;
  g_cleanup_ext4 = ext4_path;
  std::atexit(cleanup);

  // Room for two files of `ops` blocks plus metadata.
  sdx::MkfsOptions mk;
  uint64_t need_bytes = 2 * static_cast<uint64_t>(ops) * kBlock * 5 / 4 + (32ull << 20);
  mk.size = std::max<uint64_t>(64ull << 20, (need_bytes + (1 << 20) - 1) & ~uint64_t{(1 << 20) - 1});
  mk.kind = sdx::DeviceKind::kFile;
  ::unlink(image.c_str());
  need(sdx::FileSystem::mkfs(image, mk), "mkfs " + image);
  sdx::MountOptions mo;  // the defaults, as an application would mount
  mo.msync_on_fence = msync_on_fence;
  auto fs = need(sdx::FileSystem::mount(image, mo), "mount " + image);

  std::vector<std::byte> buf(kBlock);
  auto stamp = [&](int i) {
    std::memset(buf.data(), 'a' + i % 26, buf.size());
    std::memcpy(buf.data(), &i, sizeof i);
  };

  const auto& pc = sdx::pmem::config();
  std::printf("fsync_bench: 4 KiB writes, each followed by fdatasync; one run on this machine\n");
  std::printf("  syncdax: %s, %s device, flush=%s%s\n", image.c_str(),
              std::string(sdx::device::kind_name(fs->device().kind())).c_str(),
              std::string(sdx::pmem::flush_kind_name(pc.flush)).c_str(),
              pc.nontemporal ? ", non-temporal copies" : "");
  std::printf("           durability: %s\n", fs->device().durability().c_str());
  std::printf("  ext4:    %s (%s)\n", ext4_path.c_str(), sdx::bench::fs_type_of(dir).description.c_str());
  std::printf("\n");

  // (a) syncdax: allocate a new block + fdatasync.
  Series a_sdx;
  {
    auto f = need(fs->open("/alloc", O_CREAT | O_RDWR | O_TRUNC, 0644), "open /alloc");
    a_sdx = measure("syncdax", ops, max_s, [&](int i) {
      stamp(i);
      size_t n = need(f.pwrite(buf, static_cast<uint64_t>(i) * kBlock), "pwrite /alloc");
      if (n != kBlock) die("pwrite /alloc", "short write");
      need(f.fdatasync(), "fdatasync /alloc");
    });
    need(f.close(), "close /alloc");
  }

  // (b) ext4: pwrite a new block + fdatasync.
  auto ext4_series = [&](const char* name, int flags, bool append) {
    int fd = ::open(ext4_path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC | flags, 0644);
    if (fd < 0) die(ext4_path, std::strerror(errno));
    Series s = measure(name, ops, max_s, [&](int i) {
      stamp(i);
      ssize_t n = append ? ::write(fd, buf.data(), kBlock)
                         : ::pwrite(fd, buf.data(), kBlock, static_cast<off_t>(i) * kBlock);
      if (n != static_cast<ssize_t>(kBlock)) die(ext4_path, n < 0 ? std::strerror(errno) : "short write");
      if (::fdatasync(fd) != 0) die(ext4_path, std::strerror(errno));
    });
    ::close(fd);
    ::unlink(ext4_path.c_str());
    return s;
  };
  Series b_ext4 = ext4_series("ext4", 0, false);

  // (c) appends with fdatasync each, both ways.
  Series c_sdx;
  {
    auto f = need(fs->open("/append", O_CREAT | O_WRONLY | O_TRUNC | O_APPEND, 0644), "open /append");
    c_sdx = measure("syncdax", ops, max_s, [&](int i) {
      stamp(i);
      size_t n = need(f.pwrite(buf, 0), "append /append");
      if (n != kBlock) die("append /append", "short write");
      need(f.fdatasync(), "fdatasync /append");
    });
    need(f.close(), "close /append");
  }
  Series c_ext4 = ext4_series("ext4", O_APPEND, true);

  std::printf("%-34s %6s %10s %10s %10s %10s %11s\n", "latency in microseconds", "ops", "p50", "p99",
              "mean", "max", "ops/s");
  print_row("(a) allocate+fdatasync  syncdax", a_sdx);
  print_row("(b) allocate+fdatasync  ext4", b_ext4);
  print_ratio(b_ext4, a_sdx);
  print_row("(c) append+fdatasync    syncdax", c_sdx);
  print_row("    append+fdatasync    ext4", c_ext4);
  print_ratio(c_ext4, c_sdx);
  std::printf("\n(ops/s ratio is syncdax/ext4: how many more durable appends per second.)\n");
  double ratio = a_sdx.pct(0.5) > 0 ? b_ext4.pct(0.5) / a_sdx.pct(0.5) : 0;
  std::printf("allocate+fdatasync p50: syncdax %.0fx lower than ext4 (goal: at least 100x)\n", ratio);
  if (!fs->device().survives_power_failure()) {
    std::printf("note: this syncdax device survives process crashes only; ext4 fdatasync survives\n"
                "      power failure. --msync-on-fence --image ON-A-DISK measures the mode that does.\n");
  }

  need(fs->unmount(), "unmount " + image);
  fs.reset();
  ::unlink(image.c_str());
  return 0;
}
