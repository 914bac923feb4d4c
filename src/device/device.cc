#include "device/device.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "common/crc32c.h"
#include "device/device_impl.h"

namespace sdx::device {
namespace {

constexpr char kMagic[8] = {'S', 'D', 'X', 'D', 'E', 'V', '0', '1'};
constexpr size_t kKindOff = 8, kPadOff = 12, kSizeOff = 16, kCrcOff = 24, kLabelBytes = 28;

void put32(std::byte* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
void put64(std::byte* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
uint32_t get32(const std::byte* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
uint64_t get64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

bool valid_kind(uint32_t k) { return k >= 1 && k <= 3; }

std::unexpected<Error> not_a_device(const std::string& path) {
  return fail(EINVAL, path + " is not a syncdax device (no valid label)");
}

}  // namespace

std::string_view kind_name(Kind k) {
  switch (k) {
    case Kind::kFile: return "file";
    case Kind::kSim: return "sim";
    case Kind::kDax: return "dax";
  }
  return "unknown";
}

Result<Kind> parse_kind(std::string_view s) {
  if (s == "file") return Kind::kFile;
  if (s == "sim") return Kind::kSim;
  if (s == "dax") return Kind::kDax;
  return fail(EINVAL, "unknown device kind '" + std::string(s) + "' (expected file, sim or dax)");
}

void encode_label(const Label& label, std::span<std::byte, kLabelSize> out) {
  std::memset(out.data(), 0, out.size());
  std::memcpy(out.data(), kMagic, sizeof kMagic);
  put32(out.data() + kKindOff, static_cast<uint32_t>(label.kind));
  put32(out.data() + kPadOff, 0);
  put64(out.data() + kSizeOff, label.total_size);
  put32(out.data() + kCrcOff, crc32c(out.data(), kCrcOff));
}

std::optional<Label> decode_label(std::span<const std::byte> in) {
  if (in.size() < kLabelBytes) return std::nullopt;
  if (std::memcmp(in.data(), kMagic, sizeof kMagic) != 0) return std::nullopt;
  if (get32(in.data() + kCrcOff) != crc32c(in.data(), kCrcOff)) return std::nullopt;
  uint32_t kind = get32(in.data() + kKindOff);
  uint64_t size = get64(in.data() + kSizeOff);
  if (!valid_kind(kind) || size < kLabelSize) return std::nullopt;
  return Label{static_cast<Kind>(kind), size};
}

namespace detail {

Status pread_all(int fd, void* buf, size_t len, off_t off, const std::string& path) {
  auto* p = static_cast<std::byte*>(buf);
  while (len > 0) {
    ssize_t n = ::pread(fd, p, len, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("read " + path);
    if (n == 0) return fail(EIO, "read " + path + ": unexpected end of file");
    p += n, off += n, len -= static_cast<size_t>(n);
  }
  return ok();
}

Status pwrite_all(int fd, const void* buf, size_t len, off_t off, const std::string& path) {
  const auto* p = static_cast<const std::byte*>(buf);
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, len, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("write " + path);
    p += n, off += n, len -= static_cast<size_t>(n);
  }
  return ok();
}

Status lock_exclusive(int fd, const std::string& path) {
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return fail(EBUSY, "device " + path + " is in use by another process");
    return fail_errno("lock " + path);
  }
  return ok();
}

}  // namespace detail

Status create(Kind kind, const std::string& path, uint64_t size) {
  if (!valid_kind(static_cast<uint32_t>(kind)))
    return fail(EINVAL, "unknown device kind " + std::to_string(static_cast<uint32_t>(kind)));
  if (kind == Kind::kDax) return detail::create_dax(path, size);
  if (size <= kLabelSize || size % detail::kPageSize != 0)
    return fail(EINVAL, "device size must be a multiple of 4096 bytes and larger than the " +
                            std::to_string(kLabelSize) + "-byte label (got " +
                            std::to_string(size) + ")");

  detail::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd) return fail_errno("create " + path);
  SDX_TRY(detail::lock_exclusive(fd.get(), path));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return fail_errno("stat " + path);
  if (!S_ISREG(st.st_mode))
    return fail(EINVAL, path + " is not a regular file (a " + std::string(kind_name(kind)) +
                            " device lives in a file; use kind dax for a device-DAX device)");
  // A new medium reads as zeroes, like a fresh namespace: nothing from an earlier
  // file system or image may leak into the new one.
  if (::ftruncate(fd.get(), 0) != 0 || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
    return fail_errno("resize " + path);

  alignas(8) std::byte label[kLabelSize];
  encode_label({kind, size}, std::span<std::byte, kLabelSize>(label));
  return detail::pwrite_all(fd.get(), label, sizeof label, 0, path);
}

Result<std::unique_ptr<Device>> open(const std::string& path, const OpenOptions& opt) {
  detail::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) return fail_errno("open " + path);
  SDX_TRY(detail::lock_exclusive(fd.get(), path));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return fail_errno("stat " + path);
  if (S_ISCHR(st.st_mode)) return detail::open_dax_chardev(std::move(fd), path, st);
  if (!S_ISREG(st.st_mode)) return fail(EINVAL, path + " is not a regular file or a character device");
  if (static_cast<uint64_t>(st.st_size) < kLabelSize) return not_a_device(path);

  alignas(8) std::byte buf[kLabelSize];
  SDX_TRY(detail::pread_all(fd.get(), buf, sizeof buf, 0, path));
  std::optional<Label> label = decode_label(buf);
  if (!label) return not_a_device(path);
  if (static_cast<uint64_t>(st.st_size) < label->total_size)
    return fail(EINVAL, path + " is truncated: its label says " +
                            std::to_string(label->total_size) + " bytes, the file has " +
                            std::to_string(st.st_size));

  switch (label->kind) {
    case Kind::kFile: return detail::open_file(std::move(fd), path, *label, opt);
    case Kind::kSim: return detail::open_sim(std::move(fd), path, *label, opt);
    case Kind::kDax: return detail::open_dax_file(std::move(fd), path, *label);
  }
  return not_a_device(path);
}

SimDevice* as_sim(Device* d) {
  return d != nullptr && d->kind() == Kind::kSim ? static_cast<SimDevice*>(d) : nullptr;
}

}  // namespace sdx::device
