// tools/cmd_persistbench: `syncdax persistbench`, the durability cost of one small update
// (bench/persistbench), with its options.
#pragma once

#include <memory>
#include <string>

#include "cli.h"
#include "persistbench.h"

namespace sdx::cli {

// syncdax persistbench [--ops N] [--region SIZE] [--dir DIR] [--json FILE]
inline Action setup_persistbench(CLI::App& sub) {
  struct Opts {
    bench::PersistBenchOptions bench;
    std::string region = "64M";
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("--ops,-n", o->bench.ops, "timed updates per method and update size")
      ->check(CLI::Range(size_t{1}, size_t{1} << 24))
      ->capture_default_str();
  sub.add_option("--region", o->region, "updates land at random aligned offsets within SIZE (K/M/G suffix)")
      ->type_name("SIZE")
      ->capture_default_str();
  sub.add_option("--dir", o->bench.dir, "directory for the kernel file system's file")->capture_default_str();
  sub.add_option("--json", o->bench.json_path, "also write every figure to FILE as JSON")->type_name("FILE");
  sub.footer(
      "Times 64 B, 256 B and 4 KiB updates, each store plus what makes it durable: Mapping::persist\n"
      "through a syncdax MAP_SYNC mapping, msync(MS_SYNC) of a mapping in --dir, pwrite + fdatasync\n"
      "in --dir, and libpmem2 flush + drain on a raw mapping; ratios are against syncdax.");
  return [o]() {
    o->bench.region = size_arg("--region", o->region);
    if (o->bench.region < 4096 || o->bench.region % 4096 != 0)
      usage_fail("--region", "must be a positive multiple of 4096");
    need(bench::run_persistbench(o->bench), "persistbench");
    return kExitOk;
  };
}

}  // namespace sdx::cli
