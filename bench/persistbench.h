// bench/persistbench: the durability cost of one small update (64 B, 256 B, 4 KiB) made
// durable four ways in one run: a store persisted through a syncdax MAP_SYNC mapping, a
// store plus msync on the machine's file system, pwrite plus fdatasync there, and a store
// flushed by PMDK's libpmem2 on a raw mapping (no file system at all). Linked into the
// `syncdax` tool as `syncdax persistbench`; prints its report on standard output and
// progress on standard error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "syncdax/status.hpp"

namespace sdx::bench {

struct PersistBenchOptions {
  size_t ops = 10000;             // timed updates per method and size
  uint64_t region = 64ull << 20;  // the updates land at random aligned offsets in it
  std::string dir = ".";          // where the kernel file system's file goes
  std::string json_path;          // every figure as JSON (empty: none)
};

// Runs the whole experiment. Fails only when the machine or a file system refuses
// something (never on speed).
Status run_persistbench(const PersistBenchOptions& opt);

}  // namespace sdx::bench
