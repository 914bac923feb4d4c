#include <sys/mman.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "device/device_impl.h"
#include "pmem/pmem.h"

namespace sdx::device::detail {
namespace {

// The pages flushed since the last fence, as one word so that a flush can widen it and
// a fence can take it without a lock: page index of the first page in the high half,
// one past the last in the low half.
constexpr uint64_t kNoRange = 0xFFFFFFFF00000000ull;
constexpr uint64_t kMaxPages = 0xFFFFFFFFull;

class FileDevice final : public Device {
 public:
  FileDevice(std::string path, UniqueFd fd, Mapping map, bool msync_on_fence, bool in_ram)
      : Device(Kind::kFile, std::move(path)),
        file_(std::move(fd)),
        map_(std::move(map)),
        msync_(msync_on_fence),
        in_ram_(in_ram) {
    fd_ = file_.get();
    bytes_ = {map_.data() + kLabelSize, map_.size() - kLabelSize};
  }

  void flush(const void* addr, size_t len) override {
    pmem::flush(addr, len);
    note(addr, len);
  }

  void fence() override {
    pmem::fence();
    if (!msync_) return;
    uint64_t r = range_.exchange(kNoRange, std::memory_order_acq_rel);
    uint64_t lo = r >> 32, hi = r & kMaxPages;
    if (lo >= hi) return;
    if (::msync(map_.data() + lo * kPageSize, (hi - lo) * kPageSize, MS_SYNC) != 0) {
      // fence() cannot fail; say so once rather than lose data silently.
      if (!msync_failed_.exchange(true)) {
        static constexpr char kMsg[] = "syncdax: msync failed on a file device fence\n";
        [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
      }
    }
  }

  void copy_nodrain(void* dst, const void* src, size_t len) override {
    pmem::memcpy_nodrain(dst, src, len);
    note(dst, len);
  }

  void zero_nodrain(void* dst, size_t len) override {
    pmem::memset_nodrain(dst, 0, len);
    note(dst, len);
  }

  std::string durability() const override {
    std::string s = "emulated persistent memory in " + path_ + ": survives a process crash, ";
    if (!msync_) return s + "not a machine crash (no msync-on-fence)";
    if (in_ram_)
      return s + "not a machine crash (msync-on-fence, but the file is in RAM on tmpfs)";
    return s + "and a machine crash (msync-on-fence)";
  }

  bool survives_power_failure() const override { return msync_ && !in_ram_; }
  // With msync-on-fence on a disk file, durability needs msync, which a user-space
  // flush does not do.
  bool user_flush_persists() const override { return !survives_power_failure(); }

 private:
  void note(const void* addr, size_t len) {
    if (!msync_ || len == 0) return;
    auto off = static_cast<uint64_t>(static_cast<const std::byte*>(addr) - map_.data());
    if (off >= map_.size()) return;
    len = std::min<uint64_t>(len, map_.size() - off);
    uint64_t lo = off / kPageSize, hi = (off + len + kPageSize - 1) / kPageSize;
    uint64_t cur = range_.load(std::memory_order_relaxed);
    for (;;) {
      uint64_t nlo = std::min(cur >> 32, lo), nhi = std::max(cur & kMaxPages, hi);
      uint64_t next = (nlo << 32) | nhi;
      if (next == cur ||
          range_.compare_exchange_weak(cur, next, std::memory_order_acq_rel,
                                       std::memory_order_relaxed))
        return;
    }
  }

  UniqueFd file_;
  Mapping map_;
  const bool msync_;
  const bool in_ram_;
  std::atomic<uint64_t> range_{kNoRange};
  std::atomic<bool> msync_failed_{false};
};

}  // namespace

Result<std::unique_ptr<Device>> open_file(UniqueFd fd, std::string path, const Label& label,
                                          const OpenOptions& opt) {
  if (opt.msync_on_fence && label.total_size / kPageSize >= kMaxPages)
    return fail(EFBIG, path + ": msync-on-fence supports file devices up to 16 TiB");
  void* p = ::mmap(nullptr, label.total_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return fail_errno("map " + path);
  Mapping map(p, label.total_size);
  // Populated writable up front: persistent memory takes no page faults, and an
  // emulation that took one (~10 us here) on the first store to every page would
  // misstate every latency measured on it. MAP_POPULATE is not enough: for a shared
  // mapping it prefaults read-only, leaving a write-protect fault per page.
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels refuse it and we go on faulting
#endif
  (void)::madvise(p, label.total_size, MADV_POPULATE_WRITE);
  struct statfs sfs;
  bool in_ram = ::fstatfs(fd.get(), &sfs) == 0 &&
                (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC);
  return std::make_unique<FileDevice>(std::move(path), std::move(fd), std::move(map),
                                      opt.msync_on_fence, in_ram);
}

}  // namespace sdx::device::detail
