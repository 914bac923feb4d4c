// common/lock: the futex system calls and the contended paths of syncdax's locks.
#include "common/lock.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace sdx {
namespace detail {

// The kernel sleeps on the 32-bit word itself.
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) && std::atomic<uint32_t>::is_always_lock_free);

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns) {
  timespec ts{};
  timespec* tp = nullptr;
  if (timeout_ns >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout_ns / 1000000000);
    ts.tv_nsec = static_cast<long>(timeout_ns % 1000000000);
    tp = &ts;
  }
  // Locks are taken in signal handlers and between a failing call and its errno check.
  const int saved = errno;
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, tp, nullptr, 0);
  errno = saved;
}

void futex_wake(std::atomic<uint32_t>* word, int count) {
  const int saved = errno;
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, count, nullptr, nullptr, 0);
  errno = saved;
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

}  // namespace detail

void Mutex::lock_slow() {
  // Critical sections are short and a futex sleep costs microseconds: spin briefly.
  for (int i = 0; i < 100; ++i) {
    detail::cpu_relax();
    uint32_t c = kFree;
    if (state_.load(std::memory_order_relaxed) == kFree &&
        state_.compare_exchange_weak(c, kLocked, std::memory_order_acquire, std::memory_order_relaxed))
      return;
  }
  // Taken from here on as kContended: whoever else sleeps must be woken by our unlock.
  while (state_.exchange(kContended, std::memory_order_acquire) != kFree) detail::futex_wait(&state_, kContended);
}

void RwLock::lock() {
  uint32_t s = state_.load(std::memory_order_relaxed);
  for (;;) {
    if ((s & ~kWriterWaiting) == 0) {
      if (state_.compare_exchange_weak(s, kWriter, std::memory_order_acquire, std::memory_order_relaxed)) return;
      continue;
    }
    if ((s & kReadersTurn) && (s & kReaders) == 0) {
      // The readers' turn: give them a moment to come in, then take it back (they may
      // have gone, or been writers after all).
      sleep(s, kTurnNs);
      s = state_.load(std::memory_order_relaxed);
      if ((s & kReadersTurn) && (s & kReaders) == 0) state_.compare_exchange_strong(s, s & ~kReadersTurn);
      s = state_.load(std::memory_order_relaxed);
      continue;
    }
    if ((s & kWriterWaiting) == 0) {
      if (!state_.compare_exchange_weak(s, s | kWriterWaiting, std::memory_order_relaxed)) continue;
      s |= kWriterWaiting;
    }
    sleep(s);
    s = state_.load(std::memory_order_relaxed);
  }
}

void RwLock::lock_shared_slow() {
  uint32_t s = state_.load(std::memory_order_relaxed);
  for (;;) {
    if (reader_may_enter(s)) {
      if (state_.compare_exchange_weak(s, (s & ~kReadersTurn) + 1, std::memory_order_acquire, std::memory_order_relaxed))
        return;
      continue;
    }
    reader_sleepers_.fetch_add(1);
    sleep(s);
    reader_sleepers_.fetch_sub(1);
    s = state_.load(std::memory_order_relaxed);
  }
}

void RwLock::sleep(uint32_t seen, int64_t timeout_ns) {
  sleepers_.fetch_add(1);
  detail::futex_wait(&state_, seen, timeout_ns);
  sleepers_.fetch_sub(1);
}

void RwLock::wake_all() {
  if (sleepers_.load() != 0) detail::futex_wake(&state_, INT32_MAX);
}

// The waiter counts itself and reads seq_ before it releases the mutex, and a notify
// that matters comes after the predicate changed under that mutex: the mutex orders
// them, so relaxed accesses suffice.
void CondVar::wait_ns(std::unique_lock<Mutex>& l, int64_t timeout_ns) {
  waiters_.fetch_add(1, std::memory_order_relaxed);
  const uint32_t seen = seq_.load(std::memory_order_relaxed);
  l.unlock();
  detail::futex_wait(&seq_, seen, timeout_ns);
  l.lock();
  waiters_.fetch_sub(1, std::memory_order_relaxed);
}

void CondVar::notify(int count) {
  if (waiters_.load(std::memory_order_relaxed) == 0) return;
  seq_.fetch_add(1, std::memory_order_relaxed);
  detail::futex_wake(&seq_, count);
}

void SpinLock::lock_slow() {
  // Yield now and then: the holder may be preempted, and these machines have few cores.
  for (unsigned spins = 1; flag_.load(std::memory_order_relaxed); ++spins) {
    if (spins % 64 == 0) sched_yield();
    else detail::cpu_relax();
  }
}

}  // namespace sdx
