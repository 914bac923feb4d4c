// device: a byte-addressable persistent medium and the honest statement of what
// survives a crash on it. Owns the mapping of the medium, its exclusive lock and its
// persistence domain. Must never interpret the bytes it holds (that is media's job).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "syncdax/status.hpp"

namespace sdx::device {

enum class Kind : uint32_t { kFile = 1, kSim = 2, kDax = 3 };
std::string_view kind_name(Kind k);
Result<Kind> parse_kind(std::string_view s);

struct OpenOptions {
  bool msync_on_fence = false;  // file: make fence() also msync, surviving machine crash
  uint64_t seed = 0;            // sim: seed for the random survival of unflushed lines
};

// The first 4 KiB of every medium is the device label (magic, kind, size), owned by
// this layer; bytes() starts after it, so the file system sees offset 0 as its own.
inline constexpr size_t kLabelSize = 4096;

// The label's bytes, little-endian: "SDXDEV01", u32 kind, u32 0, u64 total size (label
// included), u32 crc32c of the preceding 24 bytes; the rest of the 4 KiB is zero.
struct Label {
  Kind kind = Kind::kFile;
  uint64_t total_size = 0;
};
void encode_label(const Label& label, std::span<std::byte, kLabelSize> out);
// nullopt unless magic, crc and kind are valid.
std::optional<Label> decode_label(std::span<const std::byte> in);

class Device {
 public:
  virtual ~Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  Kind kind() const { return kind_; }
  const std::string& path() const { return path_; }
  // What the CPU loads and stores: the medium after the label.
  std::span<std::byte> bytes() const { return bytes_; }
  size_t size() const { return bytes_.size(); }

  // Write back [addr, addr+len) (addr inside bytes()); durable after the next fence().
  virtual void flush(const void* addr, size_t len) = 0;
  virtual void fence() = 0;
  void persist(const void* addr, size_t len) { flush(addr, len); fence(); }
  // Copy into the medium with non-temporal stores where worthwhile; durable after fence().
  virtual void copy_nodrain(void* dst, const void* src, size_t len) = 0;
  virtual void zero_nodrain(void* dst, size_t len) = 0;

  // One line for `info` and benchmark output: what this device survives.
  virtual std::string durability() const = 0;
  // True when flushed data survives a machine (power) crash, not only a process crash.
  virtual bool survives_power_failure() const = 0;

  // For mapping device blocks into a process (the dax layer): the fd and the file
  // offset of bytes()[0]. -1 where the device cannot be mapped again.
  int fd() const { return fd_; }
  uint64_t fd_offset() const { return kLabelSize; }
  // The mmap(2) flags that map device blocks as safely as the device's own mapping
  // (a file on a DAX file system needs MAP_SHARED_VALIDATE|MAP_SYNC itself).
  int map_flags() const { return map_flags_; }
  // Whether a store flushed from user space through such a mapping is as durable as
  // this device's own flushes, so a synchronous (MAP_SYNC) mapping can be offered.
  virtual bool user_flush_persists() const { return true; }

 protected:
  Device(Kind k, std::string path) : kind_(k), path_(std::move(path)) {}
  Kind kind_;
  std::string path_;
  std::span<std::byte> bytes_;
  int fd_ = -1;
  int map_flags_ = 0x01;  // MAP_SHARED
};

// Create a medium of `size` bytes in total (label included) at `path` and write its
// label. For kFile the file is created or resized; for kSim the image file holds the
// durable contents; for kDax the path must be a device-DAX char device or a file on a
// DAX file system (size 0 = use the whole device/file).
Status create(Kind kind, const std::string& path, uint64_t size);

// Open an existing medium, reading its kind from the label. The medium is locked with
// flock(LOCK_EX|LOCK_NB); a second opener gets EBUSY "device ... is in use".
// A path without a label gives EINVAL with a clear message.
Result<std::unique_ptr<Device>> open(const std::string& path, const OpenOptions& opt = {});

// ---- crash simulation (kSim only) ----
class SimDevice;
SimDevice* as_sim(Device* d);  // nullptr if not a sim device

// A snapshot of what a power failure would leave on a sim device.
struct CrashImage {
  std::string bytes;  // the whole medium after the label
};

class SimDevice : public Device {
 public:
  // Number of fences issued so far (the crash points of a workload).
  virtual uint64_t fence_count() const = 0;
  // Called at the start of every fence (before it makes pending flushes durable) with
  // the number of that fence (1-based). Runs on the fencing thread with the device's
  // lock held, so fences are serialised around it and no flush can slip in; it may call
  // this device's crash_image() but must not fence it. Keep it short.
  using FenceHook = void (*)(void* ctx, uint64_t fence_no);
  virtual void set_fence_hook(FenceHook hook, void* ctx) = 0;
  // What a power failure now would leave: durable lines, plus each line that was written
  // but is not durable kept with probability `survive_prob` (0 = only durable data);
  // with `torn`, each 8-byte word of such a line is kept independently with that
  // probability instead. Deterministic for (state, seed, the device's seed). A flush
  // makes a line's contents *at the time of the flush* durable at the next fence, as
  // clwb does; later stores to the line are not durable until flushed again.
  // May be called from the fence hook.
  virtual CrashImage crash_image(double survive_prob, bool torn, uint64_t seed) const = 0;
  // Power failure in place: the CPU view becomes crash_image(...) and the device goes on.
  // With an image file, the durable side (== the crashed state) is that file.
  virtual void power_fail(double survive_prob, bool torn, uint64_t seed) = 0;
  // How many power_fail() calls this device has seen since it was opened.
  virtual uint64_t power_failures() const = 0;
  // Persist everything (used on clean close) -- after this durable == CPU view.
  virtual void flush_all() = 0;
  // With an image file, the durable side *is* the file (a shared mapping of it): a
  // process killed at any moment leaves its durable state there, as a power failure
  // keeping no unflushed line would. write_image() forces it out of the page cache
  // (no-op in memory); closing does flush_all() and then this, but cannot report an error.
  virtual Status write_image() = 0;

 protected:
  using Device::Device;
};

// A sim device in memory only (no image file, no lock), for tests: either empty
// (`size` bytes after the label, zeroed) or initialised from a crash image.
// nullptr only if the kernel refuses the memory (memfd_create/mmap fail).
std::unique_ptr<SimDevice> make_sim(size_t size, uint64_t seed = 0);
std::unique_ptr<SimDevice> make_sim(const CrashImage& image, uint64_t seed = 0);

}  // namespace sdx::device
