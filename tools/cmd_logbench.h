// tools/cmd_logbench: `syncdax logbench`, a persistent append-only log three ways
// (bench/logbench), with its options.
#pragma once

#include <memory>
#include <string>

#include "cli.h"
#include "logbench.h"

namespace sdx::cli {

// syncdax logbench [--bytes SIZE] [--prealloc SIZE] [--kernel-records N] [--dir DIR] [--json FILE]
inline Action setup_logbench(CLI::App& sub) {
  struct Opts {
    bench::LogBenchOptions bench;
    std::string bytes = "64M";
    std::string prealloc = "16M";
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("--bytes", o->bytes, "size of each log, per way and record size (K/M/G suffix)")
      ->type_name("SIZE")
      ->capture_default_str();
  sub.add_option("--prealloc", o->prealloc, "initial size of the syncdax log, doubled when full (K/M/G suffix)")
      ->type_name("SIZE")
      ->capture_default_str();
  sub.add_option("--kernel-records", o->bench.kernel_records, "appends to the kernel's log per record size")
      ->check(CLI::Range(size_t{1}, size_t{1} << 24))
      ->capture_default_str();
  sub.add_option("--dir", o->bench.dir, "directory for the kernel file system's log")->capture_default_str();
  sub.add_option("--json", o->bench.json_path, "also write every figure to FILE as JSON")->type_name("FILE");
  sub.footer(
      "Appends 64 B and 1 KiB records, each durable before the next: (a) through a syncdax MAP_SYNC\n"
      "mapping that grows (ftruncate + a new mapping) when full, (b) pwrite + fdatasync in --dir,\n"
      "(c) libpmem2 flush + drain on a raw mapping; ratios are against syncdax.");
  return [o]() {
    o->bench.bytes = size_arg("--bytes", o->bytes);
    o->bench.prealloc = size_arg("--prealloc", o->prealloc);
    if (o->bench.prealloc < 4096 || o->bench.prealloc % 4096 != 0)
      usage_fail("--prealloc", "must be a positive multiple of 4096");
    need(bench::run_logbench(o->bench), "logbench");
    return kExitOk;
  };
}

}  // namespace sdx::cli
