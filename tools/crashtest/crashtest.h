// tools/crashtest/crashtest: `syncdax crashtest` proper -- runs the workload on sim
// devices, crashes it (a simulated power failure at chosen fences, or SIGKILL of a child
// process running it), recovers, and checks with the oracle. Owns the crash points, the
// kill rounds, the progress bar, the report and replays; the workload and the oracle
// live in their own files.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "syncdax/status.hpp"

namespace sdx::crashtest {

struct Options {
  uint64_t seed = 1;        // the first workload's; workload i uses seed + i
  uint64_t ops = 600;       // rows per workload
  uint64_t points = 0;      // crash points in all; 0 = every fence of one workload
  double evict_prob = 0.5;  // an unflushed line (or word, torn) survives with this
  bool torn = false;
  bool sync = true;         // false: --no-sync, the negative control
  bool kill = false;        // SIGKILL a child instead of simulating power failures
  uint64_t rounds = 20;     // kill rounds
  std::optional<uint64_t> replay;  // check this one fence of workload `seed`, keep its image
  std::string dir;          // where kept images and the kill rounds' medium go
  unsigned jobs = 1;        // worker processes checking crash points
  uint64_t report = 5;      // crash points whose violations are printed in full
  bool progress = true;     // progress bar on stderr (when it is a terminal)
  bool print_workload = false;  // print the table of workload `seed` and stop
};

struct Summary {
  uint64_t points = 0;      // crash points (or kill rounds) checked
  uint64_t violations = 0;  // those of them with at least one violation
};

// Everything the run prints goes to stdout (report) and stderr (progress); a failure of
// the tool itself (not of the file system under test) is an error.
Result<Summary> run(const Options& o);

}  // namespace sdx::crashtest
