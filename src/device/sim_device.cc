#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <random>

#include "device/device_impl.h"

namespace sdx::device {
namespace detail {
namespace {

constexpr size_t kLine = 64;
constexpr size_t kWord = 8;
// Flushed lines awaiting the next fence. When full they are written back early, which
// real caches may also do at any time.
constexpr size_t kPendingCap = 65536;

#if defined(__SANITIZE_THREAD__)
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
#endif

// A crash image may be taken while other threads write the CPU view (a copy-on-write
// fault copying a block, say): a power failure can come in the middle of a store, and
// an unflushed line may then be any mix of old and new, which every crash checker
// allows. So these reads race by design; ThreadSanitizer is told so, and only for them.
struct RacyCpuReads {
#if defined(__SANITIZE_THREAD__)
  RacyCpuReads() { AnnotateIgnoreReadsBegin(__FILE__, __LINE__); }
  ~RacyCpuReads() { AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
#endif
};

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

class SimDeviceImpl final : public SimDevice {
 public:
  // `size` bytes after the label, all zero; the caller fills both sides if it has data.
  static std::unique_ptr<SimDeviceImpl> make(std::string path, size_t size, uint64_t seed,
                                             UniqueFd image, std::string* error);

  ~SimDeviceImpl() override {
    if (!image_) return;
    flush_all();
    if (auto s = write_image(); !s)
      std::fprintf(stderr, "syncdax: sim image not saved: %s\n", s.error().to_string().c_str());
  }

  // flush() snapshots the line as it is now: clwb writes back the contents at the time
  // of the flush, and a later store to the line is not durable until flushed again.
  // Snapshotting also means a fence never reads lines other threads are storing to.
  void flush(const void* addr, size_t len) override {
    size_t first, last;
    if (!line_range(addr, len, first, last)) return;
    Guard g(*this);
    for (size_t line = first; line <= last; ++line) mark_locked(line);
  }

  void fence() override {
    Guard g(*this);
    uint64_t n = fences_.load(std::memory_order_relaxed) + 1;
    fences_.store(n, std::memory_order_relaxed);
    if (hook_ != nullptr) hook_(hook_ctx_, n);
    apply_pending_locked();
  }

  // The copy happens before the lock is taken: src may be an unfaulted syncdax mapping
  // whose fault handler itself flushes and fences this device.
  void copy_nodrain(void* dst, const void* src, size_t len) override {
    std::memcpy(dst, src, len);
    flush(dst, len);
  }

  void zero_nodrain(void* dst, size_t len) override {
    std::memset(dst, 0, len);
    flush(dst, len);
  }

  std::string durability() const override {
    return "simulated persistent memory: only flushed and fenced lines survive a simulated "
           "power failure";
  }
  // In the machine it simulates, which is what the layers above must be written for.
  bool survives_power_failure() const override { return true; }

  uint64_t fence_count() const override { return fences_.load(std::memory_order_relaxed); }

  void set_fence_hook(FenceHook hook, void* ctx) override {
    Guard g(*this);
    hook_ = hook;
    hook_ctx_ = ctx;
  }

  CrashImage crash_image(double survive_prob, bool torn, uint64_t seed) const override {
    Guard g(*this);
    [[maybe_unused]] RacyCpuReads racy;
    CrashImage img;
    img.bytes.assign(reinterpret_cast<const char*>(durable_), size());
    for_each_unflushed_line(survive_prob, torn, seed, [&](size_t off, size_t len, unsigned keep) {
      for_each_word(off, len, keep, [&](size_t w, size_t n) {
        std::memcpy(img.bytes.data() + w, cpu() + w, n);
      });
    });
    return img;
  }

  void power_fail(double survive_prob, bool torn, uint64_t seed) override {
    Guard g(*this);
    for_each_unflushed_line(survive_prob, torn, seed, [&](size_t off, size_t len, unsigned keep) {
      for_each_word(off, len, keep, [&](size_t w, size_t n) {
        std::memcpy(durable_ + w, cpu() + w, n);
      });
      for_each_word(off, len, ~keep, [&](size_t w, size_t n) {
        std::memcpy(cpu() + w, durable_ + w, n);
      });
    });
    pending_n_ = 0;
    power_failures_.fetch_add(1, std::memory_order_relaxed);
  }

  uint64_t power_failures() const override {
    return power_failures_.load(std::memory_order_relaxed);
  }

  void flush_all() override {
    Guard g(*this);
    std::memcpy(durable_, cpu(), size());
    pending_n_ = 0;
  }

  // The durable side is a shared mapping of the image file, so the file already holds
  // it; this only forces it out of the page cache.
  Status write_image() override {
    if (!image_) return ok();
    Guard g(*this);
    if (::msync(durable_map_.data(), durable_map_.size(), MS_SYNC) != 0)
      return fail(errno, path_ + ": msync of the sim image: " + std::strerror(errno));
    return ok();
  }

  std::byte* cpu() const { return bytes_.data(); }
  std::byte* durable() const { return durable_; }

 private:
  SimDeviceImpl(std::string path, uint64_t seed) : SimDevice(Kind::kSim, std::move(path)), seed_(seed) {}

  // A spinlock, because flush and fence may run in a signal handler where a mutex could
  // not be taken. Re-entrant for its holder, so the fence hook (which runs under it, to
  // see a quiescent device) may call crash_image().
  class Guard {
   public:
    explicit Guard(const SimDeviceImpl& d) : d_(d) {
      const pthread_t self = pthread_self();
      if (d_.owner_.load(std::memory_order_relaxed) == self) return;
      // Yield after a short spin: the holder may be preempted, or running a slow
      // fence hook, and these machines have few cores.
      for (unsigned spins = 0; d_.lock_.test_and_set(std::memory_order_acquire);)
        while (d_.lock_.test(std::memory_order_relaxed))
          if (++spins % 64 == 0) sched_yield(); else _mm_pause();
      d_.owner_.store(self, std::memory_order_relaxed);
      owned_ = true;
    }
    ~Guard() {
      if (!owned_) return;
      d_.owner_.store(pthread_t{}, std::memory_order_relaxed);
      d_.lock_.clear(std::memory_order_release);
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    const SimDeviceImpl& d_;
    bool owned_ = false;
  };

  bool line_range(const void* addr, size_t len, size_t& first, size_t& last) const {
    if (len == 0 || size() == 0) return false;
    auto a = reinterpret_cast<uintptr_t>(addr), base = reinterpret_cast<uintptr_t>(cpu());
    if (a + len <= base || a >= base + size()) return false;
    size_t lo = a < base ? 0 : a - base;
    size_t hi = std::min<size_t>(a + len - base, size());
    first = lo / kLine;
    last = (hi - 1) / kLine;
    return true;
  }

  size_t line_len(size_t line) const { return std::min(kLine, size() - line * kLine); }

  void mark_locked(size_t line) {
    size_t slot;
    if (pending_n_ > 0 && pending_line_[pending_n_ - 1] == line) {
      slot = pending_n_ - 1;  // a line flushed again before the fence: keep the newest
    } else {
      if (pending_n_ == kPendingCap) apply_pending_locked();
      slot = pending_n_++;
      pending_line_[slot] = line;
    }
    std::memcpy(pending_data_ + slot * kLine, cpu() + line * kLine, line_len(line));
  }

  void apply_pending_locked() {
    for (size_t i = 0; i < pending_n_; ++i) {
      size_t line = pending_line_[i];
      std::memcpy(durable_ + line * kLine, pending_data_ + i * kLine, line_len(line));
    }
    pending_n_ = 0;
  }

  // Calls f(offset, length, keep) for every line whose CPU bytes differ from the durable
  // ones; bit i of keep says whether word i (8 bytes) survives. The draws depend only on
  // the seeds and on which lines differ, so equal states give equal images.
  template <class F>
  void for_each_unflushed_line(double p, bool torn, uint64_t seed, F&& f) const {
    std::mt19937_64 rng(splitmix64(seed_ ^ splitmix64(seed)));
    auto survives = [&] { return static_cast<double>(rng() >> 11) * 0x1p-53 < p; };
    const size_t lines = (size() + kLine - 1) / kLine;
    for (size_t line = 0; line < lines; ++line) {
      size_t off = line * kLine, len = line_len(line);
      if (std::memcmp(cpu() + off, durable_ + off, len) == 0) continue;
      unsigned keep = 0;
      if (!torn) {
        keep = survives() ? 0xFFu : 0u;
      } else {
        for (size_t w = 0; w * kWord < len; ++w)
          if (survives()) keep |= 1u << w;
      }
      f(off, len, keep);
    }
  }

  template <class F>
  static void for_each_word(size_t off, size_t len, unsigned mask, F&& f) {
    for (size_t w = 0; w * kWord < len; ++w)
      if (mask & (1u << w)) f(off + w * kWord, std::min(kWord, len - w * kWord));
  }

  const uint64_t seed_;
  UniqueFd memfd_;
  UniqueFd image_;  // the image file, locked; empty in memory
  Mapping cpu_map_;
  // The durable side: the image file itself (MAP_SHARED) when there is one, so that a
  // process killed at any instruction leaves exactly its durable state in the file --
  // a power failure with no unflushed line surviving. Anonymous memory otherwise.
  Mapping durable_map_;
  Mapping aux_map_;  // pending lines and their snapshots
  std::byte* durable_ = nullptr;
  uint64_t* pending_line_ = nullptr;
  std::byte* pending_data_ = nullptr;
  size_t pending_n_ = 0;
  FenceHook hook_ = nullptr;
  void* hook_ctx_ = nullptr;
  std::atomic<uint64_t> fences_{0};
  std::atomic<uint64_t> power_failures_{0};
  mutable std::atomic_flag lock_;
  mutable std::atomic<pthread_t> owner_{};
};

std::unique_ptr<SimDeviceImpl> SimDeviceImpl::make(std::string path, size_t size, uint64_t seed,
                                                   UniqueFd image, std::string* error) {
  std::unique_ptr<SimDeviceImpl> d(new SimDeviceImpl(std::move(path), seed));
  auto failed = [&](const char* what) -> std::unique_ptr<SimDeviceImpl> {
    if (error != nullptr) *error = std::string(what) + ": " + std::strerror(errno);
    return nullptr;
  };
  // The CPU view lives in a memfd so the layers above can map device blocks into a
  // process with mmap(MAP_FIXED) at fd_offset() + block offset, as on a real device.
  d->memfd_.reset(::memfd_create("syncdax-sim", MFD_CLOEXEC));
  if (!d->memfd_) return failed("memfd_create");
  const size_t cpu_len = kLabelSize + round_up(size, kPageSize);
  if (::ftruncate(d->memfd_.get(), static_cast<off_t>(cpu_len)) != 0) return failed("ftruncate");
  void* p = ::mmap(nullptr, cpu_len, PROT_READ | PROT_WRITE, MAP_SHARED, d->memfd_.get(), 0);
  if (p == MAP_FAILED) return failed("mmap");
  d->cpu_map_ = Mapping(p, cpu_len);

  const size_t durable_len = round_up(size, kPageSize);
  p = image ? ::mmap(nullptr, durable_len, PROT_READ | PROT_WRITE, MAP_SHARED, image.get(), kLabelSize)
            : ::mmap(nullptr, durable_len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return failed("mmap");
  d->durable_map_ = Mapping(p, durable_len);
  d->durable_ = d->durable_map_.data();
  const size_t aux_len = kPendingCap * sizeof(uint64_t) + kPendingCap * kLine;
  p = ::mmap(nullptr, aux_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
             -1, 0);
  if (p == MAP_FAILED) return failed("mmap");
  d->aux_map_ = Mapping(p, aux_len);
  d->pending_line_ = reinterpret_cast<uint64_t*>(d->aux_map_.data());
  d->pending_data_ = d->aux_map_.data() + kPendingCap * sizeof(uint64_t);

  encode_label({Kind::kSim, kLabelSize + size},
               std::span<std::byte, kLabelSize>(d->cpu_map_.data(), kLabelSize));
  d->fd_ = d->memfd_.get();
  d->bytes_ = {d->cpu_map_.data() + kLabelSize, size};
  d->image_ = std::move(image);
  return d;
}

}  // namespace

Result<std::unique_ptr<Device>> open_sim(UniqueFd fd, std::string path, const Label& label,
                                         const OpenOptions& opt) {
  std::string error;
  const size_t size = label.total_size - kLabelSize;
  auto d = SimDeviceImpl::make(path, size, opt.seed, std::move(fd), &error);
  if (!d) return fail(ENOMEM, path + ": cannot set up the simulated device: " + error);
  std::memcpy(d->cpu(), d->durable(), size);
  return std::unique_ptr<Device>(std::move(d));
}

}  // namespace detail

std::unique_ptr<SimDevice> make_sim(size_t size, uint64_t seed) {
  return detail::SimDeviceImpl::make("(memory)", size, seed, {}, nullptr);
}

std::unique_ptr<SimDevice> make_sim(const CrashImage& image, uint64_t seed) {
  auto d = detail::SimDeviceImpl::make("(memory)", image.bytes.size(), seed, {}, nullptr);
  if (d) {
    std::memcpy(d->cpu(), image.bytes.data(), image.bytes.size());
    std::memcpy(d->durable(), image.bytes.data(), image.bytes.size());
  }
  return d;
}

}  // namespace sdx::device
