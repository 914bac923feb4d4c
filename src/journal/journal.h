// journal: the redo log for all metadata (jbd2's role). Owns transactions, their
// checksummed on-media form, group commit, the background committer, checkpointing to
// home locations and replay on mount. It must never interpret what it logs: records
// are (device offset, bytes) pairs handed to it by the file system.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <thread>

#include "common/lock.h"
#include "syncdax/status.hpp"

namespace sdx::device { class Device; }

namespace sdx::journal {

// Byte ranges of the device: where the journal lives, and where records may land.
struct Region {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool contains(uint64_t off, uint64_t len) const {
    return off >= offset && len <= length && off - offset <= length - len;
  }
};

struct Stats {
  uint64_t commits = 0;         // transactions written
  uint64_t commit_requests = 0; // callers that asked for durability
  uint64_t records = 0;
  uint64_t bytes = 0;
  uint64_t checkpoints = 0;
};

struct Tx;
class Journal;

// One file-system operation's membership in the running transaction. While any handle
// is open the transaction cannot commit, so an operation's records are all-or-nothing.
class Handle {
 public:
  Handle(Handle&& o) noexcept : j_(o.j_), tx_(o.tx_) { o.tx_ = nullptr; }
  Handle& operator=(Handle&&) = delete;
  ~Handle() { end(); }
  // Log the new contents of device bytes [dev_off, dev_off+bytes.size()).
  void log(uint64_t dev_off, std::span<const std::byte> bytes);
  template <class T>
  void log_object(uint64_t dev_off, const T& v) {
    log(dev_off, {reinterpret_cast<const std::byte*>(&v), sizeof v});
  }
  // The bytes [dev_off, dev_off+len) stop being metadata (the block was freed): older
  // records for them must never be replayed or checkpointed over whatever reuses them.
  void revoke(uint64_t dev_off, uint64_t len);
  uint64_t seq() const;
  void end();

 private:
  friend class Journal;
  Handle(Journal* j, Tx* tx) : j_(j), tx_(tx) {}
  Journal* j_;
  Tx* tx_;
};

class Journal {
 public:
  // Write an empty journal into `log` (first transaction number 1).
  static Status format(device::Device& dev, Region log);
  // Replay every committed transaction into its home location, make that durable, and
  // empty the log. Records outside `home` are corruption. Returns the next sequence.
  static Result<uint64_t> recover(device::Device& dev, Region log, Region home);
  // Open a recovered journal whose next transaction is `next_seq`.
  Journal(device::Device& dev, Region log, Region home, uint64_t next_seq);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Join the running transaction; waits if it is full until it commits.
  Handle start();
  // Make transaction `seq` and all before it durable (group commit: concurrent callers
  // share one write). A seq that is already committed returns at once.
  Status commit(uint64_t seq);
  Status commit_all() { return commit(running_seq()); }
  uint64_t committed_seq() const { return committed_.load(std::memory_order_acquire); }
  uint64_t running_seq() const;
  // Write committed transactions home and empty the log.
  Status checkpoint();

  // Called by the committing thread after each commit, with no journal lock held.
  void on_commit(std::function<void(uint64_t seq)> fn) { on_commit_ = std::move(fn); }
  // Commit the running transaction every interval; 0 stops the committer.
  void start_committer(uint32_t interval_ms);
  void stop_committer();
  Stats stats() const;
  // Poison the journal as a failed log write does: every later commit fails with `e`.
  // For tests of the paths that must survive a failing commit.
  void fail_for_test(Error e) {
    Lock l(mu_);
    error_ = std::unexpected(std::move(e));
  }

 private:
  friend class Handle;
  void end_handle(Tx* tx);
  Status write_tx(Tx& tx);            // commit_mu_ held
  Status checkpoint_locked();         // commit_mu_ held
  void committer_loop(uint32_t interval_ms);

  device::Device& dev_;
  Region log_;
  Region home_;
  uint64_t capacity_;   // bytes of the log area after the header block
  uint64_t max_tx_;     // a running transaction at this size is full

  mutable Mutex mu_;    // running_, committing_, counters
  CondVar cv_;            // handles closing, commits finishing
  CondVar committer_cv_;  // wakes the background committer to stop
  std::unique_ptr<Tx> running_;
  std::unique_ptr<Tx> spare_;  // emptied, becomes running_ at the next commit; null during one
  bool committing_ = false;
  std::atomic<uint64_t> committed_{0};
  Status error_;        // a failed write poisons the journal: no later commit succeeds

  Mutex commit_mu_;     // the log position and epoch
  uint64_t pos_ = 0;
  uint64_t start_seq_ = 0;

  std::function<void(uint64_t)> on_commit_;
  std::thread committer_;
  bool stop_ = false;
  Stats stats_;
};

}  // namespace sdx::journal
