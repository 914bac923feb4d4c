// pmem2_util: PMDK's libpmem2 as the benchmarks compare with it -- a raw mapping of a
// preallocated file, with libpmem2's own flush and drain. Benchmarks only.
#pragma once

#include <fcntl.h>
#include <libpmem2.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench_util.h"
#include "device/device.h"
#include "fs_type.h"
#include "pmem/pmem.h"
#include "syncdax/syncdax.hpp"

namespace sdx::bench::util {

// libpmem2 returns negative errno values and keeps its own message.
inline void need_pmem2(int rc, const std::string& what) {
  if (rc != 0) abort_run(rc < 0 ? -rc : EINVAL, what + ": " + pmem2_errormsg());
}

inline std::string_view granularity_name(pmem2_granularity g) {
  switch (g) {
    case PMEM2_GRANULARITY_BYTE: return "byte";
    case PMEM2_GRANULARITY_CACHE_LINE: return "cache line";
    case PMEM2_GRANULARITY_PAGE: return "page";
  }
  return "?";
}

// What a run that sets syncdax against the kernel and libpmem2 ran on, for --json.
inline util::Json setting_json(FileSystem& fs, const std::string& image, const std::string& durability,
                               const std::string& dir, const FsType& kfs, pmem2_granularity g, double floor_us,
                               const std::string& load_before, const std::string& load_after) {
  return {{"device",
           {{"kind", std::string(device::kind_name(fs.device().kind()))},
            {"path", image},
            {"size", fs.device().size() + device::kLabelSize},
            {"durability", durability},
            {"survives_power_failure", fs.device().survives_power_failure()}}},
          {"flush", std::string(pmem::flush_kind_name(pmem::config().flush))},
          {"kernel_fs", {{"dir", dir}, {"fs", kfs.name}, {"description", kfs.description}}},
          {"pmem2_store_granularity", std::string(granularity_name(g))},
          {"timer_floor_us", floor_us},
          {"load_average", {{"start", load_before}, {"end", load_after}}}};
}

// libpmem2 on a new, preallocated tmpfs file: no MAP_SYNC there, so it would only grant
// page granularity (persist = msync). PMEM2_FORCE_GRANULARITY=CACHE_LINE, set around
// pmem2_map_new only, makes it treat the mapping as persistent memory with cache-line
// flushes: the same medium and the same durability as the syncdax file device, without
// a file system.
class Pmem2Map {
 public:
  static constexpr const char* kForce = "PMEM2_FORCE_GRANULARITY";

  Pmem2Map(const std::string& path, uint64_t size) : fd_(open_file(path, size)) {
    pmem2_config* cfg = nullptr;
    need_pmem2(pmem2_config_new(&cfg), "pmem2_config_new");
    std::unique_ptr<pmem2_config, void (*)(pmem2_config*)> cfg_owner(cfg, [](pmem2_config* c) { pmem2_config_delete(&c); });
    pmem2_source* src = nullptr;
    need_pmem2(pmem2_source_from_fd(&src, fd_.get()), "pmem2_source_from_fd " + path);
    std::unique_ptr<pmem2_source, void (*)(pmem2_source*)> src_owner(src, [](pmem2_source* s) { pmem2_source_delete(&s); });
    need_pmem2(pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE),
               "pmem2_config_set_required_store_granularity");

    const char* before = ::getenv(kForce);
    const std::optional<std::string> saved = before ? std::optional<std::string>(before) : std::nullopt;
    ::setenv(kForce, "CACHE_LINE", 1);
    const int rc = pmem2_map_new(&map_, cfg, src);
    if (saved) ::setenv(kForce, saved->c_str(), 1);
    else ::unsetenv(kForce);
    need_pmem2(rc, "pmem2_map_new " + path);

    granularity_ = pmem2_map_get_store_granularity(map_);
    base_ = static_cast<std::byte*>(pmem2_map_get_address(map_));
    persist_ = pmem2_get_persist_fn(map_);
    flush_ = pmem2_get_flush_fn(map_);
    drain_ = pmem2_get_drain_fn(map_);
  }
  Pmem2Map(const Pmem2Map&) = delete;
  Pmem2Map& operator=(const Pmem2Map&) = delete;
  ~Pmem2Map() { pmem2_map_delete(&map_); }

  std::byte* data() const { return base_; }
  pmem2_granularity granularity() const { return granularity_; }
  void persist(const void* p, size_t n) const { persist_(p, n); }
  void flush(const void* p, size_t n) const { flush_(p, n); }
  void drain() const { drain_(); }

 private:
  static int open_file(const std::string& path, uint64_t size) {
    const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
    if (fd < 0) abort_errno("create " + path);
    if (::fallocate(fd, 0, 0, static_cast<off_t>(size)) != 0) abort_errno("fallocate " + path);
    if (::fsync(fd) != 0) abort_errno("fsync " + path);
    return fd;
  }
  Fd fd_;
  pmem2_map* map_ = nullptr;
  pmem2_granularity granularity_ = PMEM2_GRANULARITY_PAGE;
  std::byte* base_ = nullptr;
  pmem2_persist_fn persist_ = nullptr;
  pmem2_flush_fn flush_ = nullptr;
  pmem2_drain_fn drain_ = nullptr;
};

// One libpmem2 persist of a dirty 64-byte line, timed alone (p50): the unit durable
// updates are made of, printed so that a table of them can be checked against it.
inline double persist_line_us(const Pmem2Map& map) {
  constexpr size_t kLine = 64;
  std::vector<double> us(2001);
  for (size_t i = 0; i < us.size(); ++i) {
    std::memset(map.data(), static_cast<int>(i & 0xff), kLine);
    const uint64_t t0 = now_ns();
    map.persist(map.data(), kLine);
    us[i] = static_cast<double>(now_ns_stores_done() - t0) / 1e3;
  }
  return stats_of(std::move(us)).p50;
}

}  // namespace sdx::bench::util
