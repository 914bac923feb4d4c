// syncdax C++ API: a persistent-memory file system in user space.
//
//   sdx::FileSystem::mkfs("img", {.size = 64 << 20});
//   auto fs = sdx::FileSystem::mount("img").value();
//   auto f = fs->open("/log", O_CREAT | O_RDWR).value();
//   f.pwrite(bytes, 0); f.fdatasync();
//
// Every call returns sdx::Result / sdx::Status carrying an errno value and a message;
// nothing throws. Flags and modes are the POSIX ones (<fcntl.h>, <linux/falloc.h>).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "syncdax/status.hpp"

namespace sdx {

namespace device { class Device; }
namespace fs { class Volume; class Handle; }

enum class DeviceKind : uint32_t { kFile = 1, kSim = 2, kDax = 3 };

struct MkfsOptions {
  uint64_t size = 64ull << 20;       // bytes of medium in total; 0 = the existing size (dax)
  DeviceKind kind = DeviceKind::kFile;
  uint64_t bytes_per_inode = 16384;  // inode table sizing
  uint64_t journal_bytes = 0;        // 0 = a size chosen from the medium size
};

struct MountOptions {
  // Background committer period. 0 disables it: metadata then commits only on
  // fsync/fdatasync/sync, a full transaction, or unmount (deterministic crash tests).
  uint32_t commit_interval_ms = 1000;
  bool msync_on_fence = false;  // file device: survive machine crashes (slow)
  uint64_t seed = 0;            // sim device: randomness of simulated power failures
};

struct Stat {
  uint64_t ino = 0;
  uint32_t mode = 0;     // S_IFREG/S_IFDIR | permission bits
  uint32_t nlink = 0;
  uint64_t size = 0;
  uint64_t blocks = 0;   // 4 KiB blocks allocated
  uint64_t extents = 0;
  uint32_t extsize_hint = 0;  // bytes; 0 = none
  int64_t atime_ns = 0, mtime_ns = 0, ctime_ns = 0;
};

struct StatFs {
  uint64_t block_size = 0;
  uint64_t total_blocks = 0;  // data blocks
  uint64_t free_blocks = 0;
  uint64_t avail_blocks = 0;  // free blocks file data may use (statfs's f_bavail)
  uint64_t total_inodes = 0;
  uint64_t free_inodes = 0;
  uint32_t name_max = 0;
};

struct DirEntry {
  std::string name;
  uint64_t ino = 0;
  bool is_dir = false;
};

// One inconsistency found by fsck, in words a person can act on.
struct FsckReport {
  bool usable = true;               // false: not a syncdax image, or unreadable
  std::vector<std::string> problems;
  bool clean() const { return usable && problems.empty(); }
};

class FileSystem;

// An open file. Move-only; closes on destruction and must not outlive its FileSystem.
// Like a file descriptor, it keeps an unlinked file alive until closed.
class File {
 public:
  File() = default;
  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  ~File();

  bool is_open() const { return h_ != nullptr; }
  Result<size_t> pread(std::span<std::byte> buf, uint64_t offset);
  // With O_APPEND the offset is ignored and data goes to the end of file.
  Result<size_t> pwrite(std::span<const std::byte> buf, uint64_t offset);
  // mode: 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE,
  // FALLOC_FL_ZERO_RANGE [|FALLOC_FL_KEEP_SIZE].
  Status fallocate(int mode, uint64_t offset, uint64_t length);
  Status ftruncate(uint64_t length);
  Status fsync();
  Status fdatasync();
  Result<Stat> stat() const;
  // Per-file extent-size hint (XFS's extsize): allocations are rounded to it.
  Status set_extsize_hint(uint32_t bytes);
  Status close();

 private:
  friend class FileSystem;
  friend class fs::Volume;
  File(FileSystem* fs, fs::Handle* h) : fs_(fs), h_(h) {}
  FileSystem* fs_ = nullptr;
  fs::Handle* h_ = nullptr;
};

class FileSystem {
 public:
  // Create the medium at `path` and an empty file system on it.
  static Status mkfs(const std::string& path, const MkfsOptions& opt = {});
  // Format an already open device (tests use in-memory sim devices).
  static Status format(device::Device& dev, const MkfsOptions& opt = {});
  // Open the medium, replay the journal, check the metadata, start the committer.
  static Result<std::unique_ptr<FileSystem>> mount(const std::string& path,
                                                   const MountOptions& opt = {});
  static Result<std::unique_ptr<FileSystem>> mount(std::unique_ptr<device::Device> dev,
                                                   const MountOptions& opt = {});
  // Check an unmounted image (replaying its journal in memory only).
  static FsckReport fsck(const std::string& path);
  static FsckReport fsck(device::Device& dev);

  ~FileSystem();  // unmounts if still mounted
  // Commit, checkpoint, mark clean. Open files must be closed first (EBUSY otherwise).
  Status unmount();

  Result<File> open(std::string_view path, int flags, uint32_t mode = 0644);
  Status mkdir(std::string_view path, uint32_t mode = 0755);
  Status rmdir(std::string_view path);
  Status unlink(std::string_view path);
  Status rename(std::string_view from, std::string_view to);
  Result<std::vector<DirEntry>> readdir(std::string_view path);
  Result<Stat> stat(std::string_view path);
  Result<StatFs> statfs();
  Status sync();  // commit all metadata now

  device::Device& device();
  fs::Volume& volume() { return *vol_; }

 private:
  friend class File;
  explicit FileSystem(std::unique_ptr<fs::Volume> v);
  std::unique_ptr<fs::Volume> vol_;
};

}  // namespace sdx
