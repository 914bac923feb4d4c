// The fault path: from an access to a page syncdax has not installed, to the device
// block (or the zero page) mapped at that address. Runs in the SIGSEGV handler of the
// faulting thread, so everything here is signal-safe: no heap, only syncdax's locks,
// system calls that are plain traps (mmap, mprotect).
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "common/clock.h"
#include "dax/dax.h"
#include "dax/registry.h"
#include "device/device.h"
#include "fs/volume.h"

namespace sdx::dax {
namespace {

// Installs go straight to the system call. What orders an install before another
// thread's store to the page is the page table, which a sanitizer's mmap interceptor
// would misread as a racing write to the whole range.
bool install(void* addr, size_t len, int prot, int flags, int fd, uint64_t off) {
  return ::syscall(SYS_mmap, addr, len, prot, flags | MAP_FIXED, fd, off) != -1;
}

// Replace [addr, addr+len) of a reservation by inaccessible anonymous memory: the
// next access faults into syncdax again.
void install_none(void* addr, size_t len) {
  install(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
}

// The kernel's shared zero page: an anonymous read-only mapping has nothing else to show.
bool install_zero(void* addr, size_t len) {
  return install(addr, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
}

// Sequentially consistent: a layout hook that moves a generation after these stores
// must see them, and our re-check of the generations must come after them.
void set_states(Map& m, size_t first, size_t last, uint8_t bits) {
  for (size_t i = first; i < last; ++i) {
    // A dirty page stays dirty until msync has written it back.
    const uint8_t keep = m.pages[i].load(std::memory_order_relaxed) & kDirty;
    m.pages[i].store(static_cast<uint8_t>(bits | keep), std::memory_order_seq_cst);
  }
}

}  // namespace

Dax::Outcome Dax::fault(Map& m, uintptr_t addr, bool write, bool count) {
  // A store to a read-only mapping, or any access to PROT_NONE, is the process's
  // own SIGSEGV, as the kernel gives it.
  if (write ? !(m.prot & PROT_WRITE) : m.prot == PROT_NONE) return Outcome::kNotOurs;
  const uint64_t t0 = mono_ns();
  device::Device& dev = vol_.device();
  fs::Inode& ino = *m.inode;
  const auto base = reinterpret_cast<uintptr_t>(m.base);
  const size_t idx = (addr - base) / kPage;
  const uint64_t foff = m.offset + idx * kPage;
  const bool upgrade = write && (m.pages[idx].load(std::memory_order_relaxed) & kInstalled);
  bool allocated = false, committed = false;
  auto sigbus = [&] {
    if (count) record(FaultKind::kSigbus, mono_ns() - t0);
    return Outcome::kSigbus;
  };

  // A store prepares the whole window at once, as the kernel's PMD fault asks the file
  // system for 2 MiB: one allocation, one zeroing, one commit, one install. Every
  // fault installs at most its window (of the mapping).
  const uint64_t win = foff / kFaultWindow * kFaultWindow;
  const uint64_t prep_lo = std::max(win, m.offset), prep_hi = std::min(win + kFaultWindow, m.offset + m.reserved);
  for (;;) {
    ReadLock io(ino.io);
    // Past EOF first: preparing the window must not allocate for a fault that fails.
    // The size cannot move while we hold io.
    const uint64_t eof = (vol_.file_size(ino) + kPage - 1) / kPage * kPage;
    if (foff >= eof) return sigbus();
    Result<fs::Iomap> im;
    if (write && !m.priv) {
      constexpr unsigned kIntent = fs::kIomapWrite | fs::kIomapFault;
      im = vol_.iomap_begin(ino, prep_lo, prep_hi - prep_lo, kIntent);
      if (im && (im->offset + im->length <= foff || im->type != fs::IomapType::kMapped ||
                 (im->flags & fs::kIomapShared)))
        im = vol_.iomap_begin(ino, foff, kPage, kIntent);
    } else {
      im = vol_.iomap_begin(ino, foff, kPage, fs::kIomapRead | fs::kIomapFault);
    }
    if (!im) return sigbus();  // no space, or I/O error
    allocated |= (im->flags & fs::kIomapNew) != 0;
    // The synchronous fault: the metadata reaching this block is durable before the
    // page becomes writable. Commit, then ask again: the answer may have changed.
    if (write && m.sync && (im->flags & fs::kIomapDirty)) {
      if (!vol_.journal().commit(im->seq)) return sigbus();
      committed = true;
      continue;
    }

    const bool block = im->type == fs::IomapType::kMapped;
    uint64_t lo = std::max(im->offset, prep_lo);
    uint64_t hi = std::min({im->offset + im->length, prep_hi, eof});
    bool rw = false;
    if (m.priv) {
      // Copy-on-write: only the written page becomes private, the rest stays shared.
      if (write) lo = foff, hi = foff + kPage, rw = true;
    } else if (write) {
      rw = true;
    } else if (block && m.sync && (m.prot & PROT_WRITE) && !(im->flags & (fs::kIomapDirty | fs::kIomapShared))) {
      // A committed block of the file's own needs no further check: a later store
      // costs no fault. (A shared block stays read-only: a store must copy it first.)
      rw = true;
    }
    void* at = m.base + (lo - m.offset);
    const size_t len = hi - lo, first = (lo - m.offset) / kPage, last = (hi - m.offset) / kPage;
    Lock window(m.window_lock(first));  // [first, last) lies in one window
    bool ok;
    if (block) {
      const int prot = rw ? (PROT_READ | PROT_WRITE) : PROT_READ;
      const int flags = MAP_POPULATE | (m.priv ? MAP_PRIVATE : dev.map_flags());
      ok = install(at, len, prot, flags, dev.fd(), dev.fd_offset() + im->dev_offset + (lo - im->offset));
    } else if (rw) {  // a private write to a hole: fresh anonymous zeros
      ok = install(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    } else {
      ok = install_zero(at, len);
    }
    if (!ok) return sigbus();
    uint8_t bits = kInstalled | (block ? kBlock : 0) | (rw ? kWritable : 0);
    if (rw && (write || !m.priv)) bits |= kDirty;
    set_states(m, first, last, bits);
    // A layout change between our iomap answer and now may have run its hook before we
    // installed: then the pages we just mapped are stale, and we start over.
    const bool stale = ino.remove_gen.load() != im->remove_gen || (!block && ino.alloc_gen.load() != im->alloc_gen);
    if (stale) {
      install_none(at, len);
      set_states(m, first, last, 0);
      continue;
    }
    break;
  }

  FaultKind kind;
  if (upgrade) kind = FaultKind::kUpgrade;
  else if (committed) kind = FaultKind::kWriteSync;
  else if (allocated) kind = FaultKind::kWriteAlloc;
  else if (write) kind = FaultKind::kWrite;
  else kind = (m.pages[idx].load(std::memory_order_relaxed) & kBlock) ? FaultKind::kReadBlock : FaultKind::kReadHole;
  if (count) record(kind, mono_ns() - t0);
  return Outcome::kInstalled;
}

void Dax::record(FaultKind k, uint64_t ns) {
  Counters& c = counters_[static_cast<size_t>(k)];
  c.count.fetch_add(1, std::memory_order_relaxed);
  c.total_ns.fetch_add(ns, std::memory_order_relaxed);
  uint64_t prev = c.max_ns.load(std::memory_order_relaxed);
  while (ns > prev && !c.max_ns.compare_exchange_weak(prev, ns, std::memory_order_relaxed)) {}
  const size_t b = ns == 0 ? 0 : std::min<size_t>(63 - __builtin_clzll(ns), FaultStats::kBuckets - 1);
  c.histogram[b].fetch_add(1, std::memory_order_relaxed);
}

// fs tells us a file range changed what it maps to (with Volume::mu_ held, possibly
// inside a fault of our own): drop what we installed from the old answer.
void Dax::on_layout(void* ctx, fs::Inode& ino, uint64_t off, uint64_t len, fs::LayoutChange how) {
  struct Args {
    fs::Inode* ino;
    uint64_t off, len;
    fs::LayoutChange how;
  } args{&ino, off, len, how};
  registry_for_each(ctx, [](Map& m, void* p) {
    auto& a = *static_cast<Args*>(p);
    if (m.inode != a.ino) return;
    const uint64_t lo = std::max(a.off, m.offset), hi = std::min(a.off + a.len, m.offset + m.reserved);
    if (lo >= hi) return;
    if (a.how == fs::LayoutChange::kRefill) m.dax->refill(m, lo, hi);
    else m.dax->drop(m, (lo - m.offset) / kPage, (hi - m.offset + kPage - 1) / kPage, a.how);
  }, &args);
}

// Map file bytes [lo, hi) of a synchronous writable mapping again after a move (fs
// committed it), as its writer's next faults would: the mover's thread pays for the
// install instead of every writer. A read fault maps a committed block writable there
// and, unlike a write fault, never allocates the rest of its window. Other mappings
// fault as usual.
void Dax::refill(Map& m, uint64_t lo, uint64_t hi) {
  if (!m.sync || !(m.prot & PROT_WRITE)) return;
  for (uint64_t off = lo; off < hi;) {
    const size_t idx = (off - m.offset) / kPage;
    if (!(m.pages[idx].load(std::memory_order_relaxed) & kInstalled))
      (void)fault(m, reinterpret_cast<uintptr_t>(m.base) + idx * kPage, false, false);
    // The next page the install did not reach, or the next window.
    uint64_t next = off + kPage;
    while (next < hi && (m.pages[(next - m.offset) / kPage].load(std::memory_order_relaxed) & kInstalled)) next += kPage;
    off = next;
  }
}

// Drop pages [first, last) of m that the change makes wrong (see fs::LayoutChange);
// for kShared only write-protect shared mappings' writable pages.
void Dax::drop(Map& m, size_t first, size_t last, fs::LayoutChange how) {
  using enum fs::LayoutChange;
  auto wrong = [&](size_t k) {
    // Pairs with set_states: after our generation move, we see what a racing
    // install stored, or it sees the move and undoes itself.
    const uint8_t st = m.pages[k].load(std::memory_order_seq_cst);
    if (!(st & kInstalled)) return false;
    const bool private_copy = m.priv && (st & kDirty);
    switch (how) {
      case kRemoved: return true;
      case kAllocated: return !(st & kBlock) && !private_copy;
      case kMoved: return (st & kBlock) && !private_copy;
      case kShared: return !m.priv && (st & kWritable);
      case kRefill: return false;
    }
    return true;
  };
  for (size_t w = first; w < last;) {
    const size_t wend = m.window_end(w, last);
    Lock window(m.window_lock(w));
    for (size_t i = w; i < wend;) {
      if (!wrong(i)) { ++i; continue; }
      size_t j = i + 1;
      while (j < wend && wrong(j)) ++j;
      if (how == kShared) {
        // The block stays; a store must fault and copy it. fs flushes what was stored.
        ::mprotect(m.base + i * kPage, (j - i) * kPage, PROT_READ);
        for (size_t k = i; k < j; ++k) m.pages[k].fetch_and(static_cast<uint8_t>(~(kWritable | kDirty)));
      } else {
        install_none(m.base + i * kPage, (j - i) * kPage);
        for (size_t k = i; k < j; ++k) m.pages[k].store(0, std::memory_order_relaxed);
      }
      i = j;
    }
    w = wend;
  }
}

}  // namespace sdx::dax
