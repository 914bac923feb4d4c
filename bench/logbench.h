// bench/logbench: a persistent append-only log, one durable record per append (64 B and
// 1 KiB records), three ways in one run: a syncdax MAP_SYNC mapping that grows with the
// log, pwrite plus fdatasync on the machine's file system, and PMDK's libpmem2 on a raw
// mapping. Linked into the `syncdax` tool as `syncdax logbench`; prints its report on
// standard output and progress on standard error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "syncdax/status.hpp"

namespace sdx::bench {

struct LogBenchOptions {
  uint64_t bytes = 64ull << 20;     // the log's size per way and record size, framing included
  uint64_t prealloc = 16ull << 20;  // the syncdax log's initial size; it doubles when full
  // Each kernel append waits for the disk (~0.2 ms on a virtual disk), so the whole
  // log would take minutes; its per-append figures settle long before.
  size_t kernel_records = 20000;
  std::string dir = ".";   // where the kernel file system's log goes
  std::string json_path;   // every figure as JSON (empty: none)
};

// Runs the whole experiment. Fails only when the machine or a file system refuses
// something (never on speed).
Status run_logbench(const LogBenchOptions& opt);

}  // namespace sdx::bench
