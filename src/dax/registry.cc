// The process-wide registry of mappings and the SIGSEGV handler that resolves faults
// in them. The handler finds the owning mapping without a lock: slots are static and
// never freed, and a handler pins a slot (active count) and re-reads its range before
// trusting it, while removal clears the range and waits for the pins to drain.
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sched.h>

#include "common/lock.h"
#include "dax/registry.h"

namespace sdx::dax {
namespace {

constexpr size_t kSlots = 4096;

struct Slot {
  std::atomic<uintptr_t> lo{0}, hi{0};
  std::atomic<Map*> map{nullptr};
  std::atomic<int> active{0};
};

Slot g_slots[kSlots];
std::atomic<size_t> g_used{0};  // slots [0, g_used) may be live
Mutex g_mu;                     // adding and removing; installing the handler
struct sigaction g_previous;
bool g_installed = false;

// Hand a fault that is not ours to whoever had SIGSEGV before us. With no handler
// before us, restore the default action: returning re-executes the access, which then
// kills the process with SIGSEGV exactly as it would have without syncdax.
void chain(int sig, siginfo_t* si, void* uc) {
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction != nullptr) return g_previous.sa_sigaction(sig, si, uc);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    return g_previous.sa_handler(sig);
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGSEGV, &dfl, nullptr);
}

// The kernel's SIGBUS for a fault it cannot satisfy: same si_code and si_addr, and, as
// force_sig does, delivered even if the thread blocks or ignores it.
void raise_sigbus(void* addr) {
  struct sigaction cur {};
  sigaction(SIGBUS, nullptr, &cur);
  if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_IGN) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGBUS, &dfl, nullptr);
  }
  sigset_t bus;
  sigemptyset(&bus);
  sigaddset(&bus, SIGBUS);
  pthread_sigmask(SIG_UNBLOCK, &bus, nullptr);
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  info.si_signo = SIGBUS;
  info.si_code = BUS_ADRERR;
  info.si_addr = addr;
  syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), SIGBUS, &info);
}

class Pin {
 public:
  explicit Pin(uintptr_t a) {
    const size_t n = g_used.load(std::memory_order_acquire);
    for (size_t i = 0; i < n; ++i) {
      Slot& s = g_slots[i];
      const uintptr_t lo = s.lo.load(), hi = s.hi.load();
      if (a < lo || a >= hi) continue;
      s.active.fetch_add(1);
      Map* m = s.map.load();
      if (m != nullptr && s.lo.load() == lo && s.hi.load() == hi) {
        slot_ = &s;
        map_ = m;
        return;
      }
      s.active.fetch_sub(1);
    }
  }
  ~Pin() {
    if (slot_ != nullptr) slot_->active.fetch_sub(1);
  }
  Pin(const Pin&) = delete;
  Pin& operator=(const Pin&) = delete;
  Map* map() const { return map_; }

 private:
  Slot* slot_ = nullptr;
  Map* map_ = nullptr;
};

void on_segv(int sig, siginfo_t* si, void* ucv) {
  const int saved_errno = errno;
  const auto addr = reinterpret_cast<uintptr_t>(si->si_addr);
  const auto* uc = static_cast<const ucontext_t*>(ucv);
  // Bit 1 of the x86 page-fault error code: the access was a write.
  const bool write = (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
  Dax::Outcome out = Dax::Outcome::kNotOurs;
  if (si->si_code == SEGV_ACCERR) {
    Pin pin(addr);
    if (Map* m = pin.map()) out = m->dax->fault(*m, addr, write);
  }
  if (out == Dax::Outcome::kSigbus) raise_sigbus(si->si_addr);
  if (out == Dax::Outcome::kNotOurs) chain(sig, si, ucv);
  errno = saved_errno;
}

Status install_handler_locked() {
  if (g_installed) return ok();
  struct sigaction sa {};
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSEGV, &sa, &g_previous) != 0) return fail_errno("sigaction(SIGSEGV)");
  g_installed = true;
  return ok();
}

}  // namespace

Status registry_add(Map* m) {
  Lock l(g_mu);
  SDX_TRY(install_handler_locked());
  const auto lo = reinterpret_cast<uintptr_t>(m->base), hi = lo + m->reserved;
  // Checked again under the lock: two MAP_FIXED calls may race for one range.
  if (registry_overlaps(lo, hi)) return fail(EEXIST, "mmap: MAP_FIXED over another syncdax mapping");
  size_t n = g_used.load(std::memory_order_relaxed);
  size_t free_slot = kSlots;
  for (size_t i = 0; i < n && free_slot == kSlots; ++i)
    if (g_slots[i].map.load() == nullptr && g_slots[i].active.load() == 0) free_slot = i;
  if (free_slot == kSlots) {
    if (n == kSlots) return fail(ENOMEM, "mmap: too many syncdax mappings");
    free_slot = n;
    g_used.store(n + 1, std::memory_order_release);
  }
  Slot& s = g_slots[free_slot];
  s.map.store(m);
  s.lo.store(lo);
  s.hi.store(hi);  // last: until now no address is inside [lo, hi)
  return ok();
}

void registry_remove(Map* m) {
  Lock l(g_mu);
  const size_t n = g_used.load(std::memory_order_relaxed);
  for (size_t i = 0; i < n; ++i) {
    Slot& s = g_slots[i];
    if (s.map.load() != m) continue;
    s.hi.store(0);
    s.lo.store(0);
    // A handler that pinned the slot before the range vanished finishes first.
    while (s.active.load() != 0) sched_yield();
    s.map.store(nullptr);
    return;
  }
}

bool registry_overlaps(uintptr_t lo, uintptr_t hi) {
  const size_t n = g_used.load(std::memory_order_acquire);
  for (size_t i = 0; i < n; ++i)
    if (g_slots[i].lo.load() < hi && lo < g_slots[i].hi.load()) return true;
  return false;
}

Map* registry_find(uintptr_t a) {
  Pin pin(a);
  return pin.map();
}

void registry_for_each(const void* owner, void (*fn)(Map& m, void* ctx), void* ctx) {
  const size_t n = g_used.load(std::memory_order_acquire);
  for (size_t i = 0; i < n; ++i) {
    Slot& s = g_slots[i];
    if (s.hi.load() == 0) continue;
    s.active.fetch_add(1);
    Map* m = s.map.load();
    if (m != nullptr && s.hi.load() != 0 && (owner == nullptr || m->dax == owner)) fn(*m, ctx);
    s.active.fetch_sub(1);
  }
}

}  // namespace sdx::dax
