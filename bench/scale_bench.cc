// scale_bench: a large sparse file filled through one MAP_SYNC mapping, one store per
// page, by 1 and by 2 threads: total time, pages and faults per second, the kernel
// memory areas (VMAs) the mapping ends up with, and syncdax's own memory per page.
// The bound: VMAs grow with extents, not pages, far from vm.max_map_count.
//   build-release/bench/scale_bench --size 4G
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "syncdax/syncdax.hpp"

namespace sdx::bench {
namespace {

using namespace util;

constexpr uint64_t kPage = 4096;

size_t vmas_in(const void* base, size_t len) {
  std::ifstream maps("/proc/self/maps");
  const auto lo = reinterpret_cast<uintptr_t>(base), hi = lo + len;
  size_t n = 0;
  for (std::string line; std::getline(maps, line);) {
    uintptr_t a = 0, b = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &a, &b) == 2 && a < hi && lo < b) ++n;
  }
  return n;
}

uint64_t max_map_count() {
  std::ifstream in("/proc/sys/vm/max_map_count");
  uint64_t n = 0;
  in >> n;
  return n;
}

void run(uint64_t size, int threads) {
  const std::string image = "/dev/shm/syncdax-scale-" + std::to_string(::getpid());
  MkfsOptions mk;
  mk.size = size + size / 16 + (256ull << 20);
  need(FileSystem::mkfs(image, mk), "mkfs " + image);
  {
    auto fs = need(FileSystem::mount(image), "mount " + image);
    File f = need(fs->open("/sparse", O_CREAT | O_RDWR), "open");
    need(f.ftruncate(size), "ftruncate");
    need(fs->sync(), "sync");
    Mapping m = need(f.mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC), "mmap");
    const uint64_t pages = size / kPage;
    const uint64_t t0 = now_ns();
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      // Interleaved 2 MiB windows, so the threads fault the same file side by side.
      ts.emplace_back([&, t] {
        constexpr uint64_t kWin = 512;
        for (uint64_t w = static_cast<uint64_t>(t) * kWin; w < pages; w += kWin * static_cast<uint64_t>(threads))
          for (uint64_t p = w; p < std::min(pages, w + kWin); ++p) {
            *reinterpret_cast<volatile char*>(m.data() + p * kPage) = 1;
            (void)m.persist(m.data() + p * kPage, 1);
          }
      });
    }
    for (auto& t : ts) t.join();
    const double secs = static_cast<double>(now_ns() - t0) / 1e9;
    const FaultStats st = fs->fault_stats();
    const Stat s = need(f.stat(), "stat");
    std::printf("%d thread(s): %s filled in %.2f s: %.0f pages/s, %llu faults (%.0f faults/s), %llu extents, "
                "%zu VMAs in the mapping (vm.max_map_count %llu), %llu blocks allocated\n",
                threads, mib(size).c_str(), secs, static_cast<double>(pages) / secs,
                static_cast<unsigned long long>(st.total()), static_cast<double>(st.total()) / secs,
                static_cast<unsigned long long>(s.extents), vmas_in(m.data(), size),
                static_cast<unsigned long long>(max_map_count()), static_cast<unsigned long long>(s.blocks));
    need(m.unmap(), "munmap");
    need(f.close(), "close");
    need(fs->unmount(), "unmount");
  }
  ::unlink(image.c_str());
}

}  // namespace
}  // namespace sdx::bench

int main(int argc, char** argv) {
  CLI::App app{"A sparse file filled through one MAP_SYNC mapping, by 1 and 2 threads"};
  std::string size = "4G";
  app.add_option("--size", size, "file size (K/M/G suffix)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  uint64_t bytes = std::stoull(size);
  switch (size.empty() ? 0 : size.back()) {
    case 'K': case 'k': bytes <<= 10; break;
    case 'M': case 'm': bytes <<= 20; break;
    case 'G': case 'g': bytes <<= 30; break;
    default: break;
  }
  bytes = bytes / (2 << 20) * (2 << 20);
  if (bytes == 0) {
    std::fprintf(stderr, "scale_bench: --size must be at least 2M\n");
    return 2;
  }
  std::printf("syncdax's own memory per mapped page: 1 byte (the page's state)\n");
  try {
    for (int threads : {1, 2}) sdx::bench::run(bytes, threads);
  } catch (const sdx::bench::util::Abort& a) {
    std::fprintf(stderr, "scale_bench: %s\n", a.error.message.c_str());
    return 1;
  }
  return 0;
}
