// tools/crashtest/oracle: what a file system recovered from a crash must show, given the
// workload's table and the history of what had started and what was acknowledged before
// the crash. Owns the model (file identities, names, sizes and the allowed value of each
// 8-byte word) and its comparison with a mounted file system; knows nothing of how the
// crash happened.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "workload.h"

namespace sdx::crashtest {

// Every record of the history counts (a killed process: what it wrote is what happened).
inline constexpr uint64_t kAllRecords = std::numeric_limits<uint64_t>::max();

// The violations of `fs`, recovered from a crash at fence `k` of a run of `table` that
// left `h` (records written at fence counts >= k had not happened yet; kAllRecords
// takes them all). An operation acknowledged before the crash is durable: its file
// exists (unless removed by a later started operation) under a name its history
// allows, with an allowed size, and every word it wrote reads back unless a later
// started operation covers it. No word is readable that the file's own history does not
// explain -- in particular none of a deleted file's data. Empty when all is well.
std::vector<std::string> check_recovered(FileSystem& fs, const std::vector<Op>& table, const History& h,
                                         uint64_t k);

}  // namespace sdx::crashtest
