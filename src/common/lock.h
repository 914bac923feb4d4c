// common/lock: the locks syncdax takes, built on futexes. The fault path (dax) runs in a
// SIGSEGV handler and may only take syncdax's own locks, so every lock the file system
// can hold while a fault waits comes from here. None of them allocates, and their state
// lives in std::atomic words with acquire/release ordering, so ThreadSanitizer sees the
// happens-before edges even though it does not understand the futex calls.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <utility>

namespace sdx {

namespace detail {
// Sleep while *word == expected, for at most `timeout_ns` (< 0: no limit); wakeups
// may be spurious, so callers recheck their condition and their clock.
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns = -1);
void futex_wake(std::atomic<uint32_t>* word, int count);
// The pause between two spins on a contended word.
void cpu_relax();
}  // namespace detail

// A mutual-exclusion lock (BasicLockable, Lockable). Not recursive.
class Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() {
    uint32_t c = kFree;
    if (!state_.compare_exchange_strong(c, kLocked, std::memory_order_acquire, std::memory_order_relaxed))
      lock_slow();
  }
  bool try_lock() {
    uint32_t c = kFree;
    return state_.compare_exchange_strong(c, kLocked, std::memory_order_acquire, std::memory_order_relaxed);
  }
  void unlock() {
    if (state_.exchange(kFree, std::memory_order_release) == kContended) detail::futex_wake(&state_, 1);
  }

 private:
  // Drepper's three states ("Futexes Are Tricky"): an uncontended unlock makes no
  // system call, because only kContended says that someone may sleep.
  static constexpr uint32_t kFree = 0, kLocked = 1, kContended = 2;
  void lock_slow();
  std::atomic<uint32_t> state_{kFree};
};

// A reader-writer lock (Lockable, SharedLockable). A waiting writer holds off new
// readers, so a stream of readers cannot shut writers out; the price is that a thread
// must never take it shared twice (the second lock_shared would wait behind a writer
// that waits for the first). Nor can a writer that takes the lock again and again shut
// sleeping readers out (a defragmenter moving chunk after chunk while a page fault
// waits): its unlock gives the readers a turn, which a writer waits for up to
// kTurnNs before it takes the lock back.
class RwLock {
 public:
  RwLock() = default;
  RwLock(const RwLock&) = delete;
  RwLock& operator=(const RwLock&) = delete;

  void lock();
  bool try_lock() {
    uint32_t s = state_.load(std::memory_order_relaxed);
    return (s & ~kWriterWaiting) == 0 &&
           state_.compare_exchange_strong(s, kWriter, std::memory_order_acquire, std::memory_order_relaxed);
  }
  void unlock() {
    state_.store(reader_sleepers_.load() != 0 ? kReadersTurn : 0);
    wake_all();
  }
  void lock_shared() {
    uint32_t s = state_.load(std::memory_order_relaxed);
    if (!reader_may_enter(s) ||
        !state_.compare_exchange_weak(s, (s & ~kReadersTurn) + 1, std::memory_order_acquire, std::memory_order_relaxed))
      lock_shared_slow();
  }
  bool try_lock_shared() {
    uint32_t s = state_.load(std::memory_order_relaxed);
    while (reader_may_enter(s))
      if (state_.compare_exchange_weak(s, (s & ~kReadersTurn) + 1, std::memory_order_acquire, std::memory_order_relaxed))
        return true;
    return false;
  }
  void unlock_shared() {
    // Only the last reader out can let anyone in: waiting readers wait for writers.
    if ((state_.fetch_sub(1) & kReaders) == 1) wake_all();
  }

 private:
  static constexpr uint32_t kWriter = 1u << 31;
  static constexpr uint32_t kWriterWaiting = 1u << 30;
  static constexpr uint32_t kReadersTurn = 1u << 29;  // set by a writer's unlock for sleeping readers
  static constexpr uint32_t kReaders = kReadersTurn - 1;  // the count of shared holders
  static constexpr int64_t kTurnNs = 1'000'000;
  static bool reader_may_enter(uint32_t s) {
    return !(s & kWriter) && (!(s & kWriterWaiting) || (s & kReadersTurn));
  }
  // The changes to state_ that can let a sleeper in, and the sleepers_ counts, are
  // sequentially consistent: a sleeper counts itself before the kernel rereads state_,
  // and a waker changes state_ before it reads the count, so one of them sees the other.
  void lock_shared_slow();
  void wake_all();
  void sleep(uint32_t seen, int64_t timeout_ns = -1);  // while state_ still reads `seen`
  std::atomic<uint32_t> state_{0};
  std::atomic<uint32_t> sleepers_{0};
  std::atomic<uint32_t> reader_sleepers_{0};
};

// A condition variable for Mutex, with std::condition_variable's interface (spurious
// wakeups included). notify_* may be called with or without the mutex held; a waiter
// that has not yet released the mutex in wait() cannot miss a notify made under it.
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  void wait(std::unique_lock<Mutex>& l) { wait_ns(l, -1); }
  template <class Pred>
  void wait(std::unique_lock<Mutex>& l, Pred pred) {
    while (!pred()) wait(l);
  }

  template <class Clock, class Duration>
  std::cv_status wait_until(std::unique_lock<Mutex>& l, const std::chrono::time_point<Clock, Duration>& deadline) {
    const auto left = deadline - Clock::now();
    if (left <= left.zero()) return std::cv_status::timeout;
    wait_ns(l, std::chrono::ceil<std::chrono::nanoseconds>(left).count());
    return Clock::now() < deadline ? std::cv_status::no_timeout : std::cv_status::timeout;
  }
  template <class Clock, class Duration, class Pred>
  bool wait_until(std::unique_lock<Mutex>& l, const std::chrono::time_point<Clock, Duration>& deadline, Pred pred) {
    while (!pred())
      if (wait_until(l, deadline) == std::cv_status::timeout) return pred();
    return true;
  }
  template <class Rep, class Period>
  std::cv_status wait_for(std::unique_lock<Mutex>& l, const std::chrono::duration<Rep, Period>& d) {
    return wait_until(l, std::chrono::steady_clock::now() + d);
  }
  template <class Rep, class Period, class Pred>
  bool wait_for(std::unique_lock<Mutex>& l, const std::chrono::duration<Rep, Period>& d, Pred pred) {
    return wait_until(l, std::chrono::steady_clock::now() + d, std::move(pred));
  }

  void notify_one() { notify(1); }
  void notify_all() { notify(INT32_MAX); }

 private:
  void wait_ns(std::unique_lock<Mutex>& l, int64_t timeout_ns);
  void notify(int count);
  // Every notify moves seq_, so a waiter that read it before releasing the mutex finds
  // the futex word changed and does not sleep through a notify that came in between.
  std::atomic<uint32_t> seq_{0};
  std::atomic<uint32_t> waiters_{0};  // spares notify a system call when nobody waits
};

// A spin lock for the shortest critical sections (a free-list pop): nothing to sleep
// on, so it works before anything else is set up and costs one atomic when free.
class SpinLock {
 public:
  void lock() {
    while (flag_.exchange(true, std::memory_order_acquire)) lock_slow();
  }
  bool try_lock() { return !flag_.exchange(true, std::memory_order_acquire); }
  void unlock() { flag_.store(false, std::memory_order_release); }

 private:
  void lock_slow();
  std::atomic<bool> flag_{false};
};

using Lock = std::unique_lock<Mutex>;
using ReadLock = std::shared_lock<RwLock>;
using WriteLock = std::unique_lock<RwLock>;

}  // namespace sdx
