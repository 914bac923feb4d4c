// common/clock: wall-clock time in nanoseconds, as inode timestamps store it.
#pragma once

#include <cstdint>
#include <ctime>

namespace sdx {

inline int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

// For latencies: never steps, and async-signal-safe (vDSO).
inline uint64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace sdx
