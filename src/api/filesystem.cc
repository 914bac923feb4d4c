// api: the public C++ surface (FileSystem, File) over the fs layer. Owns argument
// checks a caller can get wrong and the lifetime of open files; must never reach past
// fs into the journal or media.
#include <cstring>
#include <vector>

#include "dax/dax.h"
#include "device/device.h"
#include "fs/volume.h"
#include "syncdax/syncdax.hpp"

namespace sdx {

namespace {
Status not_open() { return fail(EBADF, "file is not open"); }
// After a crash whose recovery mount failed there is no volume left.
std::unexpected<Error> not_mounted() {
  return fail(EIO, "file system is not mounted: recovery after a simulated crash failed");
}
}  // namespace

// ---- File ----

File::File(File&& o) noexcept : fs_(o.fs_), h_(o.h_) { o.h_ = nullptr; }

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    (void)close();
    fs_ = o.fs_;
    h_ = o.h_;
    o.h_ = nullptr;
  }
  return *this;
}

File::~File() { (void)close(); }

// A user buffer inside a syncdax mapping may fault into syncdax, which would wait for
// the very inode lock the call holds. Such buffers go through a bounce buffer that is
// filled or emptied with no lock held, a chunk at a time.
constexpr size_t kBounce = 256 << 10;

Result<size_t> File::pread(std::span<std::byte> buf, uint64_t offset) {
  if (!h_) return std::unexpected(not_open().error());
  if (!dax::overlaps(buf.data(), buf.size())) return fs_->vol_->pread(h_, buf, offset);
  std::vector<std::byte> bounce(std::min(buf.size(), kBounce));
  size_t done = 0;
  while (done < buf.size()) {
    const size_t n = std::min(bounce.size(), buf.size() - done);
    SDX_ASSIGN(size_t got, fs_->vol_->pread(h_, std::span(bounce).first(n), offset + done));
    std::memcpy(buf.data() + done, bounce.data(), got);
    done += got;
    if (got < n) break;
  }
  return done;
}

Result<size_t> File::pwrite(std::span<const std::byte> buf, uint64_t offset) {
  if (!h_) return std::unexpected(not_open().error());
  if (!dax::overlaps(buf.data(), buf.size())) return fs_->vol_->pwrite(h_, buf, offset);
  std::vector<std::byte> bounce(std::min(buf.size(), kBounce));
  size_t done = 0;
  while (done < buf.size()) {
    const size_t n = std::min(bounce.size(), buf.size() - done);
    std::memcpy(bounce.data(), buf.data() + done, n);
    auto wrote = fs_->vol_->pwrite(h_, std::span<const std::byte>(bounce).first(n), offset + done);
    if (!wrote) {
      if (done == 0) return wrote;
      break;
    }
    done += *wrote;
  }
  return done;
}

Status File::fallocate(int mode, uint64_t offset, uint64_t length) {
  if (!h_) return not_open();
  return fs_->vol_->fallocate(h_, mode, offset, length);
}

Status File::ftruncate(uint64_t length) {
  if (!h_) return not_open();
  return fs_->vol_->ftruncate(h_, length);
}

Status File::clone_range(const File& src, uint64_t src_offset, uint64_t dst_offset, uint64_t length) {
  if (!h_ || !src.h_) return not_open();
  if (src.fs_ != fs_) return fail(EXDEV, "clone: files are on different file systems");
  return fs_->vol_->clone_range(src.h_, src_offset, h_, dst_offset, length);
}

Status File::clone(const File& src) { return clone_range(src, 0, 0, 0); }

Result<bool> File::dedupe_range(const File& src, uint64_t src_offset, uint64_t dst_offset, uint64_t length) {
  if (!h_ || !src.h_) return std::unexpected(not_open().error());
  if (src.fs_ != fs_) return fail(EXDEV, "dedupe: files are on different file systems");
  return fs_->vol_->dedupe_range(src.h_, src_offset, h_, dst_offset, length);
}

Result<DefragStats> File::defragment() {
  if (!h_) return std::unexpected(not_open().error());
  return fs_->vol_->defragment(h_);
}

Result<std::vector<ExtentInfo>> File::extents() const {
  if (!h_) return std::unexpected(not_open().error());
  return fs_->vol_->extents(h_);
}

// Stores through non-synchronous mappings are part of the file's data: written back
// before the metadata commits, as the kernel's fsync writes back dirty DAX pages.
Status File::fsync() {
  if (!h_) return not_open();
  SDX_TRY(fs_->dax_->writeback(h_->inode));
  return fs_->vol_->fsync(h_, false);
}

Status File::fdatasync() {
  if (!h_) return not_open();
  SDX_TRY(fs_->dax_->writeback(h_->inode));
  return fs_->vol_->fsync(h_, true);
}

Result<Stat> File::stat() const {
  if (!h_) return std::unexpected(not_open().error());
  return fs_->vol_->fstat(h_);
}

Status File::set_extsize_hint(uint32_t bytes) {
  if (!h_) return not_open();
  return fs_->vol_->set_extsize_hint(h_, bytes);
}

Status File::close() {
  if (!h_) return ok();
  fs::Handle* h = h_;
  h_ = nullptr;
  return fs_->vol_->close(h);
}

// ---- FileSystem ----

FileSystem::FileSystem(std::unique_ptr<fs::Volume> v, const MountOptions& opt)
    : vol_(std::move(v)), dax_(std::make_unique<dax::Dax>(*vol_)), opt_(opt) {}
FileSystem::~FileSystem() = default;

Status FileSystem::mkfs(const std::string& path, const MkfsOptions& opt) {
  SDX_TRY(device::create(static_cast<device::Kind>(opt.kind), path, opt.size));
  SDX_ASSIGN(auto dev, device::open(path));
  return fs::Volume::format(*dev, opt);
}

Status FileSystem::format(device::Device& dev, const MkfsOptions& opt) { return fs::Volume::format(dev, opt); }

Result<std::unique_ptr<FileSystem>> FileSystem::mount(const std::string& path, const MountOptions& opt) {
  device::OpenOptions dopt;
  dopt.msync_on_fence = opt.msync_on_fence;
  dopt.seed = opt.seed;
  SDX_ASSIGN(auto dev, device::open(path, dopt));
  return mount(std::move(dev), opt);
}

Result<std::unique_ptr<FileSystem>> FileSystem::mount(std::unique_ptr<device::Device> dev, const MountOptions& opt) {
  SDX_ASSIGN(auto vol, fs::Volume::mount(std::move(dev), opt));
  return std::unique_ptr<FileSystem>(new FileSystem(std::move(vol), opt));
}

FsckReport FileSystem::fsck(const std::string& path) {
  auto dev = device::open(path);
  if (!dev) return FsckReport{false, {dev.error().message}};
  return fs::Volume::fsck(**dev);
}

FsckReport FileSystem::fsck(device::Device& dev) { return fs::Volume::fsck(dev); }

Status FileSystem::unmount() {
  if (!vol_) return not_mounted();
  return vol_->unmount();
}

Result<File> FileSystem::open(std::string_view path, int flags, uint32_t mode) {
  SDX_ASSIGN(fs::Handle * h, vol_->open(path, flags, mode));
  return File(this, h);
}

Status FileSystem::mkdir(std::string_view path, uint32_t mode) { return vol_->mkdir(path, mode); }
Status FileSystem::rmdir(std::string_view path) { return vol_->rmdir(path); }
Status FileSystem::unlink(std::string_view path) { return vol_->unlink(path); }
Status FileSystem::rename(std::string_view from, std::string_view to) { return vol_->rename(from, to); }
Result<std::vector<DirEntry>> FileSystem::readdir(std::string_view path) { return vol_->readdir(path); }
Result<Stat> FileSystem::stat(std::string_view path) { return vol_->stat(path); }
Result<StatFs> FileSystem::statfs() { return vol_->statfs(); }
Status FileSystem::sync() {
  SDX_TRY(dax_->writeback(nullptr));
  return vol_->sync();
}
device::Device& FileSystem::device() { return vol_->device(); }
FaultStats FileSystem::fault_stats() const { return dax_->stats(); }
void FileSystem::reset_fault_stats() { dax_->reset_stats(); }
Status FileSystem::crash(const CrashOptions& opt) {
  if (!vol_) return not_mounted();
  device::SimDevice* sim = device::as_sim(&vol_->device());
  if (!sim) {
    return fail(EOPNOTSUPP, "crash: only a sim device can simulate a power failure (this is a " +
                                std::string(device::kind_name(vol_->device().kind())) + " device)");
  }
  if (!(opt.survive_prob >= 0.0 && opt.survive_prob <= 1.0)) {
    return fail(EINVAL, "crash: survive probability must be between 0 and 1");
  }
  SDX_ASSIGN(auto dev, vol_->abandon());
  // The dax layer refers to the volume, so it goes first, as in the destructor; fault
  // statistics start again with the new mount.
  dax_.reset();
  vol_.reset();
  sim->power_fail(opt.survive_prob, opt.torn, opt.seed);
  SDX_ASSIGN(vol_, fs::Volume::mount(std::move(dev), opt_));
  dax_ = std::make_unique<dax::Dax>(*vol_);
  return ok();
}

}  // namespace sdx
