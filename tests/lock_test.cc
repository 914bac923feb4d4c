// syncdax's own locks (common/lock): mutual exclusion, shared and exclusive holders of
// RwLock, condition-variable wakeups and timeouts. Shared data is plain memory on
// purpose: a missing acquire/release edge shows up as a wrong count here and as a data
// race under ThreadSanitizer (scripts/test runs this program under TSan).
#include "common/lock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <vector>

namespace sdx {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Polls `done` until it holds or `limit` passes; a test that needs another thread to
// make progress fails instead of hanging when the lock under test is broken.
template <class Pred>
bool eventually(Pred done, std::chrono::seconds limit = 20s) {
  const auto end = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() > end) return false;
    std::this_thread::yield();
  }
  return true;
}

// Runs body(0..n-1) on n threads that start together: thread creation is slow enough
// that early threads would otherwise finish before late ones begin.
void run_threads(int n, const std::function<void(int)>& body) {
  std::atomic<int> ready{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < n; ++i)
    ts.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < n) std::this_thread::yield();
      body(i);
    });
  for (auto& t : ts) t.join();
}

// A read-modify-write with a window between the read and the write, so that two
// threads inside at once lose updates.
void slow_increment(uint64_t& x) {
  const uint64_t v = x;
  for (int i = 0; i < 8; ++i) asm volatile("" ::: "memory");
  x = v + 1;
}

// Contention for a fixed time rather than a fixed count: the threads of a short run are
// often scheduled one after another and never meet.
constexpr auto kContend = 300ms;

// Calls step() until kContend has passed; returns how many times.
template <class F>
uint64_t repeat_for_a_while(F&& step) {
  const auto end = Clock::now() + kContend;
  uint64_t n = 0;
  do {
    for (int i = 0; i < 256; ++i, ++n) step();
  } while (Clock::now() < end);
  return n;
}

template <class L>
void expect_mutual_exclusion() {
  L mu;
  uint64_t counter = 0;
  std::atomic<uint64_t> done{0};
  std::atomic<int> inside{0}, overlaps{0};
  run_threads(4, [&](int) {
    done.fetch_add(repeat_for_a_while([&] {
      std::lock_guard<L> l(mu);
      if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
      slow_increment(counter);
      inside.fetch_sub(1);
    }));
  });
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(counter, done.load());
}

TEST(Mutex, CounterUnderThreadsLosesNoUpdate) { expect_mutual_exclusion<Mutex>(); }
TEST(SpinLock, CounterUnderThreadsLosesNoUpdate) { expect_mutual_exclusion<SpinLock>(); }
TEST(RwLock, ExclusiveCounterUnderThreadsLosesNoUpdate) { expect_mutual_exclusion<RwLock>(); }

TEST(Mutex, TryLockFailsWhileHeldAndSucceedsAfter) {
  Mutex mu;
  Lock l(mu);
  bool other = true;
  std::thread([&] { other = mu.try_lock(); }).join();
  EXPECT_FALSE(other);
  l.unlock();
  std::thread([&] {
    other = mu.try_lock();
    if (other) mu.unlock();
  }).join();
  EXPECT_TRUE(other);
}

TEST(Mutex, ABlockedLockerGetsInWhenTheHolderUnlocks) {
  Mutex mu;
  Lock l(mu);
  std::atomic<bool> got{false};
  std::thread t([&] {
    Lock m(mu);
    got = true;
  });
  // It cannot get in while we hold the lock, however long we let it try.
  for (int i = 0; i < 1000; ++i) std::this_thread::yield();
  EXPECT_FALSE(got.load());
  l.unlock();
  EXPECT_TRUE(eventually([&] { return got.load(); }));
  t.join();
}

TEST(RwLock, ReadersHoldItTogether) {
  RwLock rw;
  constexpr int kReaders = 4;
  std::atomic<int> inside{0};
  std::atomic<bool> all_met{true};
  // Each reader stays in until all are in at once: impossible if readers excluded
  // each other.
  run_threads(kReaders, [&](int) {
    ReadLock r(rw);
    inside.fetch_add(1);
    if (!eventually([&] { return inside.load() == kReaders; })) all_met = false;
  });
  EXPECT_TRUE(all_met.load());
}

TEST(RwLock, TryLocksSeeHoldersOfTheOtherKind) {
  RwLock rw;
  bool shared_ok = false, excl_ok = true;
  {
    ReadLock r(rw);
    std::thread([&] {
      shared_ok = rw.try_lock_shared();
      if (shared_ok) rw.unlock_shared();
      excl_ok = rw.try_lock();
      if (excl_ok) rw.unlock();
    }).join();
  }
  EXPECT_TRUE(shared_ok);
  EXPECT_FALSE(excl_ok);
  {
    WriteLock w(rw);
    std::thread([&] {
      shared_ok = rw.try_lock_shared();
      if (shared_ok) rw.unlock_shared();
    }).join();
  }
  EXPECT_FALSE(shared_ok);
  EXPECT_TRUE(rw.try_lock());
  rw.unlock();
}

TEST(RwLock, WriterExcludesReadersAndWriters) {
  RwLock rw;
  uint64_t a = 0, b = 0;  // equal whenever no writer is inside
  std::atomic<uint64_t> writes{0};
  std::atomic<int> readers_in{0}, writers_in{0}, bad{0};
  run_threads(4, [&](int id) {
    uint64_t i = id, mine = 0;
    repeat_for_a_while([&] {
      if (++i % 4 == 0) {
        WriteLock w(rw);
        if (writers_in.fetch_add(1) != 0 || readers_in.load() != 0) bad.fetch_add(1);
        slow_increment(a);
        b = a;
        ++mine;
        writers_in.fetch_sub(1);
      } else {
        ReadLock r(rw);
        readers_in.fetch_add(1);
        if (writers_in.load() != 0 || a != b) bad.fetch_add(1);
        readers_in.fetch_sub(1);
      }
    });
    writes.fetch_add(mine);
  });
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(a, writes.load());
}

TEST(RwLock, AWaitingWriterHoldsOffNewReadersAndThenGetsIn) {
  RwLock rw;
  rw.lock_shared();
  std::atomic<bool> writer_in{false};
  std::thread w([&] {
    WriteLock l(rw);
    writer_in = true;
  });
  // Once the writer waits, a new reader is refused even though only readers hold it.
  bool refused = eventually([&] {
    if (!rw.try_lock_shared()) return true;
    rw.unlock_shared();
    return false;
  });
  EXPECT_TRUE(refused);
  EXPECT_FALSE(writer_in.load());
  rw.unlock_shared();
  EXPECT_TRUE(eventually([&] { return writer_in.load(); }));
  w.join();
  EXPECT_TRUE(rw.try_lock_shared());
  rw.unlock_shared();
}

// Waiters give up at this deadline, so a lost wakeup fails the test instead of hanging it.
Clock::time_point give_up() { return Clock::now() + 60s; }

TEST(CondVar, NotifyOneHandsEachTokenToAWaiter) {
  Mutex mu;
  CondVar cv;
  int tokens = 0, taken = 0, gave_up = 0;
  constexpr int kWaiters = 4, kPerWaiter = 2000;
  const auto deadline = give_up();
  std::thread producer([&] {
    for (int i = 0; i < kWaiters * kPerWaiter; ++i) {
      Lock l(mu);
      ++tokens;
      cv.notify_one();
    }
  });
  run_threads(kWaiters, [&](int) {
    for (int i = 0; i < kPerWaiter; ++i) {
      Lock l(mu);
      if (!cv.wait_until(l, deadline, [&] { return tokens > 0; })) {
        ++gave_up;
        return;
      }
      --tokens;
      ++taken;
    }
  });
  producer.join();
  EXPECT_EQ(gave_up, 0);
  EXPECT_EQ(taken, kWaiters * kPerWaiter);
  EXPECT_EQ(tokens, 0);
}

TEST(CondVar, NotifyAllWakesEverySleeper) {
  Mutex mu;
  CondVar cv;
  bool go = false;
  int asleep = 0;
  std::atomic<int> woken{0};
  constexpr int kWaiters = 5;
  const auto deadline = give_up();
  std::vector<std::thread> ts;
  for (int i = 0; i < kWaiters; ++i)
    ts.emplace_back([&] {
      Lock l(mu);
      ++asleep;
      if (cv.wait_until(l, deadline, [&] { return go; })) woken.fetch_add(1);
    });
  // A waiter counted itself under the lock and released it only inside wait().
  EXPECT_TRUE(eventually([&] {
    Lock l(mu);
    return asleep == kWaiters;
  }));
  {
    Lock l(mu);
    go = true;
    cv.notify_all();
  }
  const bool all = eventually([&] { return woken.load() == kWaiters; });
  EXPECT_TRUE(all) << woken.load() << " of " << kWaiters << " woke";
  for (auto& t : ts) t.join();
}

TEST(CondVar, TimedWaitTimesOutWithoutANotify) {
  Mutex mu;
  CondVar cv;
  Lock l(mu);
  auto t0 = Clock::now();
  std::cv_status st = cv.wait_for(l, 20ms);
  // A spurious wakeup may end the wait early; it must then say no_timeout.
  if (st == std::cv_status::timeout) {
    EXPECT_GE(Clock::now() - t0, 20ms);
  }
  t0 = Clock::now();
  EXPECT_FALSE(cv.wait_for(l, 30ms, [] { return false; }));
  EXPECT_GE(Clock::now() - t0, 30ms);
  EXPECT_TRUE(l.owns_lock());
  EXPECT_EQ(cv.wait_until(l, Clock::now() - 1s), std::cv_status::timeout);
  EXPECT_FALSE(cv.wait_until(l, std::chrono::system_clock::now() + 10ms, [] { return false; }));
}

TEST(CondVar, TimedWaitReturnsAtTheNotifyNotAtTheTimeout) {
  Mutex mu;
  CondVar cv;
  bool ready = false;
  std::thread t([&] {
    Lock l(mu);
    ready = true;
    cv.notify_one();
  });
  Lock l(mu);
  const auto t0 = Clock::now();
  while (!ready) {
    if (cv.wait_for(l, 60s) == std::cv_status::timeout) {
      ADD_FAILURE() << "a notified wait reported a timeout";
      break;
    }
  }
  EXPECT_LT(Clock::now() - t0, 30s);
  l.unlock();
  t.join();
}

}  // namespace
}  // namespace sdx
