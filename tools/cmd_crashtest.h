// tools/cmd_crashtest: `syncdax crashtest`, the MAP_SYNC guarantee under power failure and
// process kill (tools/crashtest), with its options.
#pragma once

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <algorithm>

#include "cli.h"
#include "crashtest/crashtest.h"

namespace sdx::cli {

// syncdax crashtest [--seed S] [--ops N] [--points N] [--evict-prob P] [--torn] [--no-sync]
//                   [--kill [--rounds N]] [--replay FENCE] [--dir DIR] [--report N]
inline Action setup_crashtest(CLI::App& sub) {
  auto o = std::make_shared<crashtest::Options>();
  const char* tmp = std::getenv("TMPDIR");
  o->dir = tmp && *tmp ? tmp : "/dev/shm";
  sub.add_option("--seed", o->seed, "seed of the first workload (workload i uses SEED+i)")->capture_default_str();
  sub.add_option("--ops", o->ops, "operations per workload")
      ->check(CLI::Range(uint64_t{16}, uint64_t{1} << 20))
      ->capture_default_str();
  sub.add_option("--points", o->points,
                 "crash points in all, a uniform random sample of the workloads' fences (more than one "
                 "workload has: further workloads); default every fence of one workload");
  sub.add_option("--evict-prob", o->evict_prob,
                 "probability that a written, unflushed cache line survives the power failure")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  sub.add_flag("--torn", o->torn, "each 8-byte word of an unflushed line survives on its own (torn lines)");
  sub.add_flag("--no-sync", [o](int64_t) { o->sync = false; },
               "negative control: MAP_SHARED mappings, flushed but never msynced; must report violations");
  sub.add_flag("--kill", o->kill, "SIGKILL a child process running the workload instead of simulating power failures");
  sub.add_option("--rounds", o->rounds, "kill rounds (with --kill)")->capture_default_str();
  sub.add_option("--replay", o->replay,
                 "check only the crash at this fence of workload --seed and keep its image (printed)")
      ->type_name("FENCE");
  sub.add_option("--dir", o->dir, "directory for kept crash images and the kill rounds' medium")
      ->capture_default_str();
  o->jobs = std::max(1u, std::thread::hardware_concurrency());
  sub.add_option("--jobs,-j", o->jobs, "worker processes checking crash points (default: one per CPU)")
      ->check(CLI::Range(1u, 256u))
      ->capture_default_str();
  sub.add_option("--report", o->report, "crash points whose violations are printed in full")->capture_default_str();
  sub.add_flag("--print-workload", o->print_workload, "print the operations of workload --seed and exit");
  sub.add_flag("--no-progress", [o](int64_t) { o->progress = false; }, "no progress bar on stderr");
  sub.footer(
      "Runs randomized workloads on sim devices -- stores through MAP_SYNC mappings of empty and\n"
      "preallocated files acknowledged after persist, pwrite + fdatasync, fallocate, punch, truncate,\n"
      "rename, unlink, faults from two threads, a copier -- crashes them and checks after recovery:\n"
      "fsck clean, every acknowledged store and fdatasync'd write readable unless a later operation\n"
      "removed it, no word readable that the file's history does not explain (deleted files' data\n"
      "included). The last line is `crash points: N, violations: V`; exit 0 when V is 0, else 1.");
  return [o]() {
    if (o->kill && o->replay) usage_fail("--replay", "replays a power-failure crash point; a kill cannot be replayed");
    auto r = crashtest::run(*o);
    if (!r) fail("crashtest", r.error());
    if (o->print_workload) return kExitOk;
    std::printf("crash points: %" PRIu64 ", violations: %" PRIu64 "\n", r->points, r->violations);
    return r->violations == 0 ? kExitOk : kExitFailure;
  };
}

}  // namespace sdx::cli
