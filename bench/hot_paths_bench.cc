// Google Benchmark programs for the hot pieces, for developers comparing changes:
// a journal commit, an iomap lookup, the allocator, and the two page faults that
// matter (a store into a committed block, a store into a hole of a MAP_SYNC mapping).
// Figures only: nothing here is a test, and nothing fails on speed.
//   build-release/bench/hot_paths_bench --benchmark_filter=Journal
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "device/device.h"
#include "fs/alloc.h"
#include "fs/volume.h"
#include "journal/journal.h"
#include "syncdax/syncdax.hpp"

namespace sdx {
namespace {

// A fresh file system on an emulated file device under /dev/shm (removed at once:
// the mapping keeps it alive), with the background committer off.
struct Fixture {
  std::unique_ptr<FileSystem> fs;
  File file;

  explicit Fixture(uint64_t size = 256ull << 20) {
    const std::string path = "/dev/shm/syncdax-hot-paths-" + std::to_string(::getpid());
    if (!FileSystem::mkfs(path, {.size = size})) std::abort();
    fs = FileSystem::mount(path, {.commit_interval_ms = 0}).value();
    ::unlink(path.c_str());
    file = fs->open("/f", O_CREAT | O_RDWR).value();
  }
};

void BM_JournalCommit(benchmark::State& state) {
  Fixture fx;
  journal::Journal& j = fx.fs->volume().journal();
  const uint64_t home = fx.fs->volume().geometry().inode_start * 4096;
  std::vector<std::byte> rec(static_cast<size_t>(state.range(0)), std::byte{1});
  for (auto _ : state) {
    uint64_t seq;
    {
      journal::Handle h = j.start();
      h.log(home, rec);
      seq = h.seq();
    }
    if (!j.commit(seq)) state.SkipWithError("commit failed");
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_JournalCommit)->Arg(256)->Arg(4096);

void BM_IomapLookup(benchmark::State& state) {
  Fixture fx;
  const auto extents = static_cast<uint64_t>(state.range(0));
  // Every other block: one extent each.
  for (uint64_t i = 0; i < extents; ++i)
    if (!fx.file.fallocate(0, 2 * i * 4096, 4096)) std::abort();
  fs::Volume& vol = fx.fs->volume();
  fs::Inode& ino = *vol.inode_for_test(fx.file);
  uint64_t i = 0;
  for (auto _ : state) {
    auto m = vol.iomap_begin(ino, 2 * (i++ % extents) * 4096, 4096, fs::kIomapRead);
    benchmark::DoNotOptimize(m);
  }
}
BENCHMARK(BM_IomapLookup)->Arg(4)->Arg(1000)->Arg(50000);

void BM_AllocatorAllocFree(benchmark::State& state) {
  fs::Allocator a;
  a.add_free(0, 1 << 20);
  // Fragment it so best fit has work to do.
  for (uint64_t b = 0; b < (1 << 20); b += 64) {
    if (!a.take(b, 1)) std::abort();
  }
  const auto want = static_cast<uint64_t>(state.range(0));
  for (auto _ : state) {
    fs::Run r = a.alloc(0, want);
    benchmark::DoNotOptimize(r);
    a.add_free(r.start, r.len);
  }
}
BENCHMARK(BM_AllocatorAllocFree)->Arg(1)->Arg(16);

// A store that faults into a preallocated, committed block: lookup, iomap, install.
// Each iteration maps one page afresh (unmapping is outside the timing).
void BM_FaultCommittedBlock(benchmark::State& state) {
  Fixture fx;
  if (!fx.file.fallocate(0, 0, 4096) || !fx.file.fsync()) std::abort();
  for (auto _ : state) {
    state.PauseTiming();
    Mapping m = fx.file.mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC).value();
    state.ResumeTiming();
    *reinterpret_cast<volatile char*>(m.data()) = 1;
    state.PauseTiming();
    (void)m.unmap();
    state.ResumeTiming();
  }
}
BENCHMARK(BM_FaultCommittedBlock);

// A store into a hole of a MAP_SYNC mapping: allocate, zero, commit, install.
void BM_FaultHoleSync(benchmark::State& state) {
  Fixture fx;
  if (!fx.file.ftruncate(4096)) std::abort();
  for (auto _ : state) {
    state.PauseTiming();
    if (!fx.file.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) || !fx.file.fsync()) std::abort();
    Mapping m = fx.file.mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC).value();
    state.ResumeTiming();
    *reinterpret_cast<volatile char*>(m.data()) = 1;
    state.PauseTiming();
    (void)m.unmap();
    state.ResumeTiming();
  }
}
BENCHMARK(BM_FaultHoleSync);

}  // namespace
}  // namespace sdx

BENCHMARK_MAIN();
