// Mappings: creating them with mmap(2)'s rules, writing back what was stored through
// them (msync, fsync), persistence from user space, and unmapping.
#include "dax/dax.h"

#include <sys/mman.h>
#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "dax/registry.h"
#include "device/device.h"
#include "fs/volume.h"
#include "pmem/pmem.h"

namespace sdx::dax {
namespace {

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

Dax::Dax(fs::Volume& vol) : vol_(vol), sim_(device::as_sim(&vol.device()) != nullptr) {
  vol_.set_layout_hook(&Dax::on_layout, this);
}

Dax::~Dax() {
  std::vector<Map*> live;
  registry_for_each(this, [](Map& m, void* p) { static_cast<std::vector<Map*>*>(p)->push_back(&m); }, &live);
  for (Map* m : live) (void)unmap(m);
  vol_.set_layout_hook(nullptr, nullptr);
}

Result<Map*> Dax::map(fs::Handle* h, uint64_t offset, size_t length, int prot, int flags, void* addr) {
  const int type = flags & MAP_TYPE;
  if (type != MAP_SHARED && type != MAP_PRIVATE && type != MAP_SHARED_VALIDATE)
    return fail(EINVAL, "mmap: exactly one of MAP_SHARED, MAP_SHARED_VALIDATE, MAP_PRIVATE is required");
  constexpr int kKnown = MAP_TYPE | MAP_SYNC | MAP_POPULATE | MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_NORESERVE;
  if (type == MAP_SHARED_VALIDATE && (flags & ~kKnown))
    return fail(EOPNOTSUPP, "mmap: unknown flag with MAP_SHARED_VALIDATE");
  // Linux ignores MAP_SYNC unless MAP_SHARED_VALIDATE asks it to check its flags.
  const bool sync = type == MAP_SHARED_VALIDATE && (flags & MAP_SYNC);
  const bool priv = type == MAP_PRIVATE;
  if (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) return fail(EINVAL, "mmap: invalid prot");
  if (length == 0) return fail(EINVAL, "mmap: length must be positive");
  if (offset % kPage) return fail(EINVAL, "mmap: offset must be a multiple of the page size");
  const uint64_t reserved = round_up(length, kPage);
  if (reserved < length || offset + reserved < offset) return fail(EOVERFLOW, "mmap: range too large");
  if (!h->readable()) return fail(EACCES, "mmap: file not open for reading");
  if (!priv && (prot & PROT_WRITE) && !h->writable())
    return fail(EACCES, "mmap: shared writable mapping of a file not open for writing");
  if (h->inode->is_dir()) return fail(ENODEV, "mmap: is a directory");
  if (sync && !vol_.device().user_flush_persists())
    return fail(EOPNOTSUPP, "mmap: MAP_SYNC needs a device whose durability a CPU flush reaches "
                            "(this one needs msync: msync-on-fence on a disk file)");
  const bool fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE);
  if (fixed && reinterpret_cast<uintptr_t>(addr) % kPage) return fail(EINVAL, "mmap: MAP_FIXED address not page aligned");
  if (fixed && registry_overlaps(reinterpret_cast<uintptr_t>(addr), reinterpret_cast<uintptr_t>(addr) + reserved))
    return fail(EEXIST, "mmap: MAP_FIXED over another syncdax mapping");

  auto m = std::make_unique<Map>();
  m->dax = this;
  m->length = length;
  m->reserved = reserved;
  m->offset = offset;
  m->prot = prot;
  m->sync = sync;
  m->priv = priv;
  m->npages = reserved / kPage;
  // The address range is ours from now on; every page starts inaccessible and is
  // installed by a fault.
  void* base = ::mmap(addr, reserved, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)), -1, 0);
  if (base == MAP_FAILED) return fail_errno("mmap");
  void* pages = ::mmap(nullptr, m->npages, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (pages == MAP_FAILED) {
    auto err = fail_errno("mmap");
    ::munmap(base, reserved);
    return err;
  }
  m->base = static_cast<std::byte*>(base);
  m->pages = static_cast<std::atomic<uint8_t>*>(pages);  // zero-filled: nothing installed
  auto dup = vol_.reopen(h);
  if (!dup) {
    ::munmap(base, reserved);
    ::munmap(pages, m->npages);
    return std::unexpected(dup.error());
  }
  m->handle = *dup;
  m->inode = h->inode;
  if (auto st = registry_add(m.get()); !st) {
    (void)vol_.close(m->handle);
    ::munmap(base, reserved);
    ::munmap(pages, m->npages);
    return std::unexpected(st.error());
  }
  Map* out = m.release();
  if (flags & MAP_POPULATE) {
    // As the kernel does: read-fault everything; failures (past EOF) are left for
    // the access to report.
    for (size_t i = 0; i < out->npages; ++i)
      if (!(out->pages[i].load(std::memory_order_relaxed) & kInstalled))
        (void)fault(*out, reinterpret_cast<uintptr_t>(out->base) + i * kPage, false);
  }
  return out;
}

Status Dax::unmap(Map* m) {
  // The kernel keeps an unmapped file's dirty pages for the next fsync or writeback;
  // our dirty state lives in the mapping, so its lines are written back now (the next
  // fence -- an fsync, a commit, unmount -- makes them durable).
  Status flushed = m->priv ? ok() : flush_dirty(*m, 0, m->npages);
  registry_remove(m);
  ::munmap(m->base, m->reserved);
  ::munmap(m->pages, m->npages);
  Status st = vol_.close(m->handle);
  delete m;
  return flushed ? st : flushed;
}

// Write back the dirty pages [first, last) of a shared mapping: write-protect them
// first, so a store racing with us faults and dirties the page again rather than
// being missed, then flush their lines through the device's own view. The dirty bits
// are read again under the window's lock: a page a move dropped meanwhile must stay
// inaccessible, not become readable anonymous zeros.
Status Dax::flush_dirty(Map& m, size_t first, size_t last) {
  auto dirty = [&](size_t k) { return (m.pages[k].load(std::memory_order_relaxed) & kDirty) != 0; };
  size_t i = first;
  while (i < last) {
    if (!dirty(i)) { ++i; continue; }
    size_t j = i;
    {
      Lock window(m.window_lock(i));
      const size_t wend = m.window_end(i, last);
      while (j < wend && dirty(j)) ++j;
      if (j > i && ::mprotect(m.base + i * kPage, (j - i) * kPage, PROT_READ) != 0)
        return fail_errno("msync: mprotect");
      for (size_t k = i; k < j; ++k) m.pages[k].fetch_and(static_cast<uint8_t>(~(kWritable | kDirty)));
    }
    if (j == i) { ++i; continue; }
    // Without the window's lock: flush_range takes the inode's io lock, which faults
    // take before the window's.
    SDX_TRY(flush_range(m, m.offset + i * kPage, (j - i) * kPage));
    i = j;
  }
  return ok();
}

// Flush file bytes [file_off, file_off+len) of m's file. Through the device's own
// mapping of each block: that is what a simulated device can see, and on real
// memory it is the same cache line as the user's address.
Status Dax::flush_range(const Map& m, uint64_t file_off, size_t len) {
  device::Device& dev = vol_.device();
  fs::Inode& ino = *m.inode;
  ReadLock io(ino.io);
  uint64_t pos = file_off;
  const uint64_t end = file_off + len;
  while (pos < end) {
    SDX_ASSIGN(fs::Iomap im, vol_.iomap_begin(ino, pos, end - pos, fs::kIomapRead));
    const uint64_t n = std::min(end, im.offset + im.length) - pos;
    if (im.type == fs::IomapType::kMapped) dev.flush(dev.bytes().data() + im.dev_offset + (pos - im.offset), n);
    pos += n;
  }
  return ok();
}

Status Dax::msync(Map& m, uint64_t off, size_t len, int flags) {
  if (flags & ~(MS_ASYNC | MS_SYNC | MS_INVALIDATE)) return fail(EINVAL, "msync: unknown flags");
  if ((flags & MS_ASYNC) && (flags & MS_SYNC)) return fail(EINVAL, "msync: MS_ASYNC and MS_SYNC together");
  if (off % kPage) return fail(EINVAL, "msync: address not page aligned");
  if (off > m.reserved || len > m.reserved - off) return fail(ENOMEM, "msync: range not mapped");
  if (m.priv || len == 0) return ok();
  SDX_TRY(flush_dirty(m, off / kPage, (off + len + kPage - 1) / kPage));
  vol_.device().fence();
  return vol_.fsync(m.handle, true);
}

Status Dax::writeback(fs::Inode* ino) {
  struct Args {
    fs::Inode* ino;
    Status st;
  } a{ino, ok()};
  registry_for_each(this, [](Map& m, void* p) {
    auto& a = *static_cast<Args*>(p);
    if ((a.ino == nullptr || m.inode == a.ino) && !m.priv && a.st) a.st = m.dax->flush_dirty(m, 0, m.npages);
  }, &a);
  vol_.device().fence();
  return a.st;
}

Granularity Dax::granularity(const Map& m) const {
  if (m.priv || !m.sync) return Granularity::kPage;
  return pmem::config().flush == pmem::FlushKind::kNone ? Granularity::kByte : Granularity::kCacheLine;
}

void Dax::flush(const Map& m, const void* addr, size_t len) {
  if (m.priv || !m.sync || len == 0) return;
  if (!sim_) {
    pmem::flush(addr, len);
    return;
  }
  const auto a = reinterpret_cast<uintptr_t>(addr), base = reinterpret_cast<uintptr_t>(m.base);
  (void)flush_range(m, m.offset + (a - base), len);
}

void Dax::drain() { vol_.device().fence(); }

Status Dax::persist(const Map& m, const void* addr, size_t len) {
  const auto a = reinterpret_cast<uintptr_t>(addr), base = reinterpret_cast<uintptr_t>(m.base);
  if (a < base || len > m.reserved || a - base > m.reserved - len) return fail(EINVAL, "persist: range outside the mapping");
  if (m.priv) return ok();
  if (!m.sync) {
    const uint64_t lo = (a - base) / kPage * kPage;
    return msync(const_cast<Map&>(m), lo, a - base + len - lo, MS_SYNC);
  }
  flush(m, addr, len);
  drain();
  return ok();
}

Status Dax::memcpy_persist(const Map& m, void* dst, const void* src, size_t len) {
  if (m.sync && !sim_) {
    pmem::memcpy_nodrain(dst, src, len);
    drain();
    return ok();
  }
  std::memcpy(dst, src, len);
  return persist(m, dst, len);
}

FaultStats Dax::stats() const {
  FaultStats s;
  for (size_t k = 0; k < s.kinds.size(); ++k) {
    const Counters& c = counters_[k];
    s.kinds[k].count = c.count.load(std::memory_order_relaxed);
    s.kinds[k].total_ns = c.total_ns.load(std::memory_order_relaxed);
    s.kinds[k].max_ns = c.max_ns.load(std::memory_order_relaxed);
    for (size_t b = 0; b < FaultStats::kBuckets; ++b)
      s.kinds[k].histogram[b] = c.histogram[b].load(std::memory_order_relaxed);
  }
  return s;
}

void Dax::reset_stats() {
  for (Counters& c : counters_) {
    c.count = 0;
    c.total_ns = 0;
    c.max_ns = 0;
    for (auto& h : c.histogram) h = 0;
  }
}

Map* find(const void* addr) { return registry_find(reinterpret_cast<uintptr_t>(addr)); }

void drain_all() {
  pmem::fence();
  registry_for_each(nullptr, [](Map& m, void*) {
    if (m.dax->simulated()) m.dax->drain();
  }, nullptr);
}

bool overlaps(const void* addr, size_t len) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  return len != 0 && registry_overlaps(a, a + len);
}

}  // namespace sdx::dax
