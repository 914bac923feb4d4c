// device internals shared by the three device kinds: fd and mapping ownership, whole
// reads and writes, and the per-kind open/create entry points device.cc dispatches to.
#pragma once

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <memory>
#include <string>
#include <utility>

#include "device/device.h"

namespace sdx::device::detail {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

class Mapping {
 public:
  Mapping() = default;
  Mapping(void* addr, size_t len) : addr_(static_cast<std::byte*>(addr)), len_(len) {}
  Mapping(Mapping&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), len_(std::exchange(o.len_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = std::exchange(o.addr_, nullptr);
      len_ = std::exchange(o.len_, 0);
    }
    return *this;
  }
  ~Mapping() { reset(); }
  std::byte* data() const { return addr_; }
  size_t size() const { return len_; }
  void reset() {
    if (addr_ != nullptr) ::munmap(addr_, len_);
    addr_ = nullptr;
    len_ = 0;
  }

 private:
  std::byte* addr_ = nullptr;
  size_t len_ = 0;
};

inline constexpr size_t kPageSize = 4096;
inline constexpr uint64_t round_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

// pread/pwrite the whole range, retrying short transfers and EINTR.
Status pread_all(int fd, void* buf, size_t len, off_t off, const std::string& path);
Status pwrite_all(int fd, const void* buf, size_t len, off_t off, const std::string& path);
// flock(LOCK_EX|LOCK_NB), with EBUSY and a message naming the path when it is held.
Status lock_exclusive(int fd, const std::string& path);

Result<std::unique_ptr<Device>> open_file(UniqueFd fd, std::string path, const Label& label,
                                          const OpenOptions& opt);
Result<std::unique_ptr<Device>> open_sim(UniqueFd fd, std::string path, const Label& label,
                                         const OpenOptions& opt);
// A labelled regular file that claims to be on a DAX file system.
Result<std::unique_ptr<Device>> open_dax_file(UniqueFd fd, std::string path, const Label& label);
// A character device: device-DAX cannot be read(2), so the label is read via mmap.
Result<std::unique_ptr<Device>> open_dax_chardev(UniqueFd fd, std::string path,
                                                 const struct stat& st);
Status create_dax(const std::string& path, uint64_t size);

}  // namespace sdx::device::detail
