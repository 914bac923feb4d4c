// tools/cmd_faultbench: `syncdax faultbench`, the page-fault latency benchmark of
// bench/faultbench, with its options.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cli.h"
#include "faultbench.h"

namespace sdx::cli {

// syncdax faultbench [--pages N] [--repeat R] [--copy-size SIZE] [--device KIND PATH]
//                    [--extent-hint SIZE] [--dir DIR] [--json FILE] [--plot FILE.svg]
inline Action setup_faultbench(CLI::App& sub) {
  struct Opts {
    bench::FaultBenchOptions bench;
    std::string copy_size = "64M";
    std::string extent_hint = "0";
    std::vector<std::string> device;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("--pages,-n", o->bench.pages, "pages stored to per run, one timed store each")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20))
      ->capture_default_str();
  sub.add_option("--repeat,-r", o->bench.repeat, "runs of every configuration, a fresh file each")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  sub.add_option("--copy-size", o->copy_size, "size of the file the background load copies (K/M/G suffix)")
      ->type_name("SIZE")
      ->capture_default_str();
  sub.add_option("--device", o->device,
                 "medium to create for the run and remove after: KIND (file or sim) and a PATH that does "
                 "not exist yet (default: a file device under /dev/shm)")
      ->expected(2)
      ->type_name("KIND PATH");
  sub.add_option("--extent-hint", o->extent_hint,
                 "extent-size hint set on every syncdax file measured (multiple of 4096; 0 = none)")
      ->type_name("SIZE")
      ->capture_default_str();
  sub.add_option("--dir", o->bench.dir, "directory for the kernel's page-cache file")->capture_default_str();
  sub.add_option("--json", o->bench.json_path, "also write every figure to FILE as JSON")->type_name("FILE");
  sub.add_option("--plot", o->bench.plot_path,
                 "also draw every row's latency histogram to FILE as SVG, syncdax next to the kernel baselines")
      ->type_name("FILE.svg");
  sub.footer(
      "Times the first store to each page of a file mapping: preallocated or empty file, with or\n"
      "without a background copy, MAP_SHARED or MAP_SHARED_VALIDATE|MAP_SYNC; and, in the same\n"
      "run, the kernel's anonymous, shmem and page-cache faults, against which the ratios are taken.");
  return [o]() {
    o->bench.copy_size = size_arg("--copy-size", o->copy_size);
    const uint64_t hint = size_arg("--extent-hint", o->extent_hint);
    if (hint % 4096 != 0 || hint > std::numeric_limits<uint32_t>::max())
      usage_fail("--extent-hint", "must be a multiple of 4096 below 4 GiB");
    o->bench.extent_hint = static_cast<uint32_t>(hint);
    if (!o->device.empty()) {
      if (o->device[0] != "file" && o->device[0] != "sim")
        usage_fail("--device", "kind must be file or sim, not '" + o->device[0] + "'");
      o->bench.device_kind = o->device[0];
      o->bench.device_path = o->device[1];
    }
    need(bench::run_faultbench(o->bench), "faultbench");
    return kExitOk;
  };
}

}  // namespace sdx::cli
