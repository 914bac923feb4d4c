// tools/crashtest/workload: the randomized workload of `syncdax crashtest` -- a table of
// operations generated from a seed, the executor that runs it on a mounted file system
// (in lockstep, for deterministic fence numbers, or with its lanes truly concurrent),
// and the history it leaves: a start record before and an acknowledgement after each
// operation, in memory that may be shared with a parent process that outlives a killed
// executor. Knows nothing of crash images or of what is checked afterwards.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "syncdax/syncdax.hpp"

namespace sdx::crashtest {

// Every file of a workload has this much address space mapped and stays within it.
inline constexpr uint64_t kMaxFileSize = 64 * 1024;
inline constexpr uint64_t kPage = 4096;

// The 8-byte word a write with `seed` puts at file offset `off` (8-aligned): tagged,
// so that any word read anywhere names the write it came from (and so the file).
inline constexpr uint64_t kWordTag = 0x5dacull;
inline uint64_t pattern_word(uint64_t seed, uint64_t off) {
  return kWordTag << 48 | (seed & 0xFFFFFF) << 24 | ((off / 8) & 0xFFFFFF);
}
inline bool decode_word(uint64_t w, uint64_t& seed, uint64_t& off) {
  if (w >> 48 != kWordTag) return false;
  seed = (w >> 24) & 0xFFFFFF;
  off = (w & 0xFFFFFF) * 8;
  return true;
}

// What one row of the table does; the executor's switch and the oracle's model are the
// only places that interpret them. A new layout-changing operation is a new kind here,
// a case in each of those two places, and a weight in the generator.
enum class OpKind : uint8_t {
  kCreate,    // open O_CREAT|O_EXCL, size it (ftruncate: holes; or fallocate), fsync, map it
  kStore,     // store through the mapping, persist (or, with --no-sync, flush+drain only)
  kPwrite,    // pwrite + fdatasync
  kCopy,      // the copier: pread a chunk of the source file, pwrite it, fdatasync
  kFallocate, // fallocate (mode in `aux`) + fdatasync
  kPunch,     // punch a hole + fdatasync
  kTruncate,  // ftruncate to `len` + fdatasync
  kRename,    // rename to `aux`'s name (replacing it) or a new name; fsync the file
  kUnlink,    // unmap, close and unlink; sync
  kClone,     // clone_range from the copy source (`aux`) at the same offsets + fdatasync:
              // the words a kCopy of that range gives, in blocks shared with the source
  kDefrag,    // defragment (commits): changes no byte
  kCount
};
const char* op_name(OpKind k);

inline constexpr uint32_t kNoFile = ~0u;

struct Op {
  OpKind kind;
  uint16_t lane;      // the thread that runs it
  uint32_t file;      // file id: created as "/f<id>"
  uint32_t aux = 0;   // kFallocate: mode; kRename: replaced file id or kNoFile; kCopy, kClone: source id
  uint32_t name = 0;  // kRename: the new name's number when nothing is replaced
  uint64_t off = 0, len = 0;
  uint64_t seed = 0;       // the pattern it writes (kCopy: the source's)
  uint64_t size_after = 0; // the file's size once it is done
};

struct WorkloadOptions {
  uint64_t seed = 1;
  uint64_t ops = 600;  // rows of the table, setup included
  bool sync = true;    // MAP_SHARED_VALIDATE|MAP_SYNC + persist; else MAP_SHARED, no msync
};

// The table for these options, in the order lockstep runs it.
std::vector<Op> generate(const WorkloadOptions& opt);
inline constexpr int kLanes = 3;  // 0: namespace and layout changes, 1: a second faulting thread, 2: the copier

// ---- history ----
enum class Event : uint8_t { kStart = 1, kIno = 2, kAck = 3 };
struct Record {
  std::atomic<uint32_t> valid;  // set last: a record cut short by a kill is ignored
  Event event;
  uint32_t row;    // index of the op in the table
  uint64_t fence;  // the device's fence count when it was written (0 if unknown)
  uint64_t ino;    // kIno: the created file's inode
};
static_assert(std::atomic<uint32_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free);

// Append-only, fixed capacity, safe from several threads; lives in memory given to it
// (e.g. MAP_SHARED|MAP_ANONYMOUS, created before fork, so the parent reads it after the
// child dies). The count is bumped before a record is written and `valid` set after.
class History {
 public:
  static size_t bytes_for(size_t capacity);
  History(std::span<std::byte> mem);  // mem of bytes_for(capacity), zeroed
  void clear();
  void add(Event e, uint32_t row, uint64_t fence, uint64_t ino = 0);
  size_t size() const;
  const Record& operator[](size_t i) const { return recs_[i]; }

 private:
  std::atomic<uint64_t>* n_;
  Record* recs_;
  size_t cap_;
};

// Runs the table on `fs`. `fence` reads the device's fence count for the records (a sim
// device's; nullptr records 0). With `lockstep`, rows run one at a time in table order,
// each on its lane's thread, so fences are numbered the same in every run; otherwise
// the lanes run concurrently. `stop` (may be null) ends the run early after the row
// in progress. Returns the first failure of an operation (a workload bug or an fs bug).
struct ExecOptions {
  bool sync = true;
  bool lockstep = true;
  const std::atomic<bool>* stop = nullptr;
  uint64_t (*fence)(void* ctx) = nullptr;
  void* fence_ctx = nullptr;
};
Status execute(FileSystem& fs, std::span<const Op> table, History& h, const ExecOptions& opt);

// "/f<id>", or a renamed file's new name.
std::string file_name(uint32_t id);
std::string renamed_name(uint32_t number);

}  // namespace sdx::crashtest
