#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "device/device_impl.h"
#include "pmem/pmem.h"

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

namespace sdx::device::detail {
namespace {

class DaxDevice final : public Device {
 public:
  DaxDevice(std::string path, UniqueFd fd, Mapping map, uint64_t total_size, bool chardev)
      : Device(Kind::kDax, std::move(path)),
        file_(std::move(fd)),
        map_(std::move(map)),
        chardev_(chardev) {
    fd_ = file_.get();
    bytes_ = {map_.data() + kLabelSize, total_size - kLabelSize};
    if (!chardev) map_flags_ = MAP_SHARED_VALIDATE | MAP_SYNC;
  }

  void flush(const void* addr, size_t len) override { pmem::flush(addr, len); }
  void fence() override { pmem::fence(); }
  void copy_nodrain(void* dst, const void* src, size_t len) override {
    pmem::memcpy_nodrain(dst, src, len);
  }
  void zero_nodrain(void* dst, size_t len) override { pmem::memset_nodrain(dst, 0, len); }

  std::string durability() const override {
    std::string s = chardev_ ? "persistent memory on device-DAX " + path_
                             : "persistent memory in " + path_ + " on a DAX file system (MAP_SYNC)";
    s += ": flushed and fenced stores survive a power failure";
    if (pmem::config().flush == pmem::FlushKind::kNone)
      s += " (SYNCDAX_NO_FLUSH: the platform must have eADR)";
    return s;
  }
  bool survives_power_failure() const override { return true; }

 private:
  UniqueFd file_;
  Mapping map_;
  const bool chardev_;
};

std::unexpected<Error> map_sync_refused(const std::string& path) {
  return fail(EOPNOTSUPP, path + ": the kernel refuses MAP_SYNC here (not a file on a DAX file "
                                 "system or a device-DAX device)");
}

// A regular file is only persistent memory if the kernel lets us map it MAP_SYNC: then
// a write fault does not return before the file system metadata for it is durable.
Result<Mapping> map_sync(int fd, uint64_t len, const std::string& path) {
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC, fd, 0);
  if (p != MAP_FAILED) return Mapping(p, len);
  if (errno == EOPNOTSUPP || errno == EINVAL) return map_sync_refused(path);
  return fail_errno("map " + path);
}

// Device-DAX has no read(2) and no meaningful st_size; sysfs knows its size.
Result<uint64_t> devdax_size(const struct stat& st, const std::string& path) {
  std::string sys = "/sys/dev/char/" + std::to_string(major(st.st_rdev)) + ":" +
                    std::to_string(minor(st.st_rdev)) + "/size";
  FILE* f = std::fopen(sys.c_str(), "re");
  if (f == nullptr)
    return fail(ENODEV, path + " is a character device but not device-DAX (no " + sys + ")");
  unsigned long long size = 0;
  int n = std::fscanf(f, "%llu", &size);
  std::fclose(f);
  if (n != 1 || size <= kLabelSize) return fail(ENODEV, path + ": cannot read its size from " + sys);
  return size;
}

Result<Mapping> map_chardev(int fd, uint64_t len, const std::string& path) {
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return fail_errno("map " + path);
  return Mapping(p, len);
}

void write_label(std::byte* at, uint64_t total_size) {
  encode_label({Kind::kDax, total_size}, std::span<std::byte, kLabelSize>(at, kLabelSize));
  pmem::persist(at, kLabelSize);
}

}  // namespace

Result<std::unique_ptr<Device>> open_dax_file(UniqueFd fd, std::string path, const Label& label) {
  SDX_ASSIGN(Mapping map, map_sync(fd.get(), label.total_size, path));
  return std::make_unique<DaxDevice>(std::move(path), std::move(fd), std::move(map),
                                     label.total_size, false);
}

Result<std::unique_ptr<Device>> open_dax_chardev(UniqueFd fd, std::string path,
                                                 const struct stat& st) {
  SDX_ASSIGN(uint64_t dev_size, devdax_size(st, path));
  // Device-DAX only maps in units of its alignment (often 2 MiB), so map it whole.
  SDX_ASSIGN(Mapping map, map_chardev(fd.get(), dev_size, path));
  std::optional<Label> label = decode_label({map.data(), kLabelSize});
  if (!label) return fail(EINVAL, path + " is not a syncdax device (no valid label)");
  if (label->kind != Kind::kDax)
    return fail(EINVAL, path + " is a character device but its label says kind " +
                            std::string(kind_name(label->kind)));
  if (label->total_size > dev_size)
    return fail(EINVAL, path + ": its label says " + std::to_string(label->total_size) +
                            " bytes, the device has " + std::to_string(dev_size));
  return std::make_unique<DaxDevice>(std::move(path), std::move(fd), std::move(map),
                                     label->total_size, true);
}

Status create_dax(const std::string& path, uint64_t size) {
  if (size != 0 && (size <= kLabelSize || size % kPageSize != 0))
    return fail(EINVAL, "device size must be 0 (all of it) or a multiple of 4096 bytes larger "
                        "than the label (got " + std::to_string(size) + ")");
  struct stat st;
  bool existed = ::stat(path.c_str(), &st) == 0;
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | (existed ? 0 : O_CREAT), 0644));
  if (!fd) return fail_errno("open " + path);
  // Never leave behind a file this call created for a medium it refused.
  auto refuse = [&](std::unexpected<Error> e) -> Status {
    if (!existed) ::unlink(path.c_str());
    return e;
  };
  if (auto s = lock_exclusive(fd.get(), path); !s) return refuse(std::unexpected(s.error()));
  if (::fstat(fd.get(), &st) != 0) return refuse(fail_errno("stat " + path));

  if (S_ISCHR(st.st_mode)) {
    SDX_ASSIGN(uint64_t dev_size, devdax_size(st, path));
    if (size == 0) size = dev_size;
    if (size > dev_size)
      return fail(EINVAL, path + " has " + std::to_string(dev_size) + " bytes, asked for " +
                              std::to_string(size));
    SDX_ASSIGN(Mapping map, map_chardev(fd.get(), dev_size, path));
    write_label(map.data(), size);
    return ok();
  }
  if (!S_ISREG(st.st_mode))
    return fail(EINVAL, path + " is neither a device-DAX device nor a regular file");
  if (size == 0) {
    size = static_cast<uint64_t>(st.st_size) / kPageSize * kPageSize;
    if (size <= kLabelSize)
      return refuse(fail(EINVAL, "size 0 means all of " + path + ", but it is too small (" +
                                     std::to_string(st.st_size) + " bytes)"));
  } else if (static_cast<uint64_t>(st.st_size) < size &&
             ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return refuse(fail_errno("resize " + path));
  }
  auto map = map_sync(fd.get(), size, path);
  if (!map) return refuse(std::unexpected(map.error()));
  write_label(map->data(), size);
  return ok();
}

}  // namespace sdx::device::detail
