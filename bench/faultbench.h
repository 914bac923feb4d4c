// bench/faultbench: the page-fault latency experiment of Jan Kara's MAP_SYNC v2 cover
// letter, on syncdax, with the kernel's own faults measured the same way in the same run.
// Linked into the `syncdax` tool as `syncdax faultbench`; prints its report on standard
// output and progress on standard error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "syncdax/status.hpp"

namespace sdx::bench {

struct FaultBenchOptions {
  size_t pages = 512;                // pages stored to per run, one timed store each
  int repeat = 5;                    // runs of every configuration, a fresh file each
  uint64_t copy_size = 64ull << 20;  // the file the background load copies
  // The medium: "file" or "sim" at device_path (which must not exist yet); empty
  // kind: a file device under /dev/shm. Either way created for the run, removed after.
  std::string device_kind;
  std::string device_path;
  uint32_t extent_hint = 0;  // bytes; set on every syncdax file measured (0: none)
  std::string dir = ".";     // where the kernel's page-cache file goes
  std::string json_path;     // every figure as JSON (empty: none)
  std::string plot_path;     // every row's histogram as an SVG file (empty: none)
};

// Runs the whole experiment. Fails only when the machine or the file system refuses
// something (never on speed).
Status run_faultbench(const FaultBenchOptions& opt);

}  // namespace sdx::bench
