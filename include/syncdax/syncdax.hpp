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

#include <array>
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
namespace dax { struct Map; class Dax; }

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

// One extent of a file, as `syncdax io extents` (xfs_io's fiemap) lists it.
struct ExtentInfo {
  uint64_t offset = 0;      // file bytes
  uint64_t length = 0;
  uint64_t dev_offset = 0;  // bytes into the medium
  bool unwritten = false;   // allocated, reads as zeros
  bool shared = false;      // some block of it is shared with another extent (reflink)
};

// What File::defragment did.
struct DefragStats {
  uint64_t extents_before = 0;
  uint64_t extents_after = 0;
  uint64_t blocks_moved = 0;
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

// How a store through a mapping becomes durable (libpmem2's pmem2_granularity):
// kByte: visible is durable (eADR), a fence is enough; kCacheLine: flush the lines and
// fence (a synchronous mapping); kPage: the metadata may not be durable, so persisting
// means msync (any other shared mapping).
enum class Granularity { kByte, kCacheLine, kPage };

// What a page fault on a syncdax mapping had to do. A fault counts once, under the
// most expensive thing it did (SIGBUS > upgrade > sync commit > allocation).
enum class FaultKind : unsigned {
  kReadHole,    // read of a hole or unwritten extent: the shared zero page
  kReadBlock,   // read of a written block: mapped read-only
  kWrite,       // write to an allocated block whose metadata was already durable
  kWriteAlloc,  // write that allocated (non-synchronous mapping: no commit)
  kWriteSync,   // write whose metadata had to commit before the page became writable
  kUpgrade,     // write to a page mapped read-only (zero page, block, or after msync)
  kSigbus,      // beyond EOF, ENOSPC, or a failed commit: SIGBUS, nothing mapped
  kCount
};
std::string_view fault_kind_name(FaultKind k);

// Fault counters and latency histograms of one mounted file system.
struct FaultStats {
  static constexpr size_t kBuckets = 40;  // bucket b counts latencies in [2^b, 2^(b+1)) ns
  struct PerKind {
    uint64_t count = 0;
    uint64_t total_ns = 0;
    uint64_t max_ns = 0;
    std::array<uint64_t, kBuckets> histogram{};
  };
  std::array<PerKind, static_cast<size_t>(FaultKind::kCount)> kinds{};
  const PerKind& operator[](FaultKind k) const { return kinds[static_cast<size_t>(k)]; }
  uint64_t total() const;
};

// A file mapped into memory, as mmap(2) maps it. Move-only; unmaps on destruction.
// Pages are installed by syncdax's fault handler on first access (SIGSEGV, in the
// faulting thread): holes read as a shared zero page, and on a synchronous mapping no
// page becomes writable before the metadata that reaches its block is durable, so a
// store is durable once flushed (persist) -- no msync, no syscall.
// The file system must outlive the mapping; the mapping keeps the file alive.
class Mapping {
 public:
  Mapping() = default;
  Mapping(Mapping&& o) noexcept : m_(o.m_) { o.m_ = nullptr; }
  Mapping& operator=(Mapping&& o) noexcept;
  ~Mapping();

  bool is_mapped() const { return m_ != nullptr; }
  std::byte* data() const;
  size_t size() const;
  std::span<std::byte> bytes() const { return {data(), size()}; }
  uint64_t offset() const;  // file offset of data()[0]
  bool synchronous() const;
  Granularity granularity() const;

  // Make [addr, addr+len) durable. kCacheLine/kByte: flush and fence from user space;
  // kPage: msync the pages (the metadata commits too).
  Status persist(const void* addr, size_t len) const;
  // The two halves of persist for kCacheLine/kByte mappings: flush, then one drain
  // for many flushes. On a kPage mapping, flush does nothing and drain is a fence.
  void flush(const void* addr, size_t len) const;
  void drain() const;
  // memcpy into the mapping and persist it (non-temporal stores for large copies).
  Status memcpy_persist(void* dst, const void* src, size_t len) const;

  // msync(2) of [data()+off, data()+off+len): MS_SYNC (or MS_ASYNC) writes back the
  // pages stored through this mapping and commits the file's metadata; MS_INVALIDATE
  // is accepted. Stored pages become read-only again, so the next store faults.
  Status sync(uint64_t off, size_t len, int flags);
  Status unmap();
  // Give up ownership: the pages stay mapped until sdx::munmap(data(), size()).
  void* release();

 private:
  friend class File;
  explicit Mapping(dax::Map* m) : m_(m) {}
  dax::Map* m_ = nullptr;
};

// The same calls by address, for any byte of any syncdax mapping (libpmem2 and POSIX
// style; what the C API uses). An address outside every syncdax mapping is EINVAL.
Status persist(const void* addr, size_t len);
void flush(const void* addr, size_t len);
void drain();  // orders the flushes of every mapped file system
Granularity granularity(const void* addr);
Status msync(void* addr, size_t len, int flags);
// Unmap a released mapping; [addr, addr+len) must be the whole of it.
Status munmap(void* addr, size_t len);

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

  // Reflink, as FICLONERANGE: this file's [dst_offset, dst_offset+length) shares src's
  // blocks [src_offset, ...) from now on; length 0 = to src's end of file. Offsets
  // block aligned, length too unless the range ends at src's EOF (EINVAL), src open
  // for reading and this file for writing without O_APPEND (EBADF), both regular
  // files (EISDIR), the same file system (EXDEV), ranges of one file not overlapping
  // (EINVAL). A later write to either file, through pwrite or a mapping, copies the
  // blocks it touches first (copy-on-write). Live mappings of both files stay valid.
  Status clone_range(const File& src, uint64_t src_offset, uint64_t dst_offset, uint64_t length);
  Status clone(const File& src);  // FICLONE: all of src at offset 0
  // FIDEDUPERANGE for one destination: share the blocks only if the bytes are equal.
  // true: shared; false: the ranges differ and nothing changed.
  Result<bool> dedupe_range(const File& src, uint64_t src_offset, uint64_t dst_offset, uint64_t length);
  // Move the file's extents into contiguous free space while it stays mapped and in
  // use; shared blocks stay where they are. Commits before it returns.
  Result<DefragStats> defragment();
  // The extents, in file order, split where sharing changes.
  Result<std::vector<ExtentInfo>> extents() const;

  // mmap(2) of [offset, offset+length) with its prot and flags and its errno:
  // MAP_SHARED, MAP_SHARED_VALIDATE, MAP_PRIVATE (exactly one; else EINVAL), MAP_SYNC
  // (only with MAP_SHARED_VALIDATE; ignored with MAP_SHARED, as Linux ignores it;
  // EOPNOTSUPP on a device that cannot give it), MAP_POPULATE, MAP_FIXED (with `addr`;
  // EEXIST over another syncdax mapping), MAP_NORESERVE. An unknown flag is EOPNOTSUPP
  // with MAP_SHARED_VALIDATE and ignored otherwise. PROT_WRITE on a shared mapping of a
  // file not opened for writing is EACCES; an offset that is not page aligned, or a
  // length of 0, is EINVAL.
  Result<Mapping> mmap(uint64_t offset, size_t length, int prot, int flags, void* addr = nullptr);

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

  FaultStats fault_stats() const;
  void reset_fault_stats();

  // Simulated power failure (sim device only; EOPNOTSUPP otherwise): nothing more is
  // written, unflushed lines survive with `survive_prob` (torn at 8-byte granularity
  // with `torn`), then the journal is replayed and the file system mounted again in
  // place with the options of the first mount. Files and mappings must be closed first
  // (EBUSY); survive_prob outside [0, 1] is EINVAL. Fault statistics start again from
  // zero. If recovery fails, crash returns its error and the file system stays
  // unmounted: then only unmount and crash (both EIO) and destruction may follow.
  struct CrashOptions {
    double survive_prob = 0.5;
    bool torn = false;
    uint64_t seed = 0;
  };
  Status crash(const CrashOptions& opt);

  device::Device& device();
  fs::Volume& volume() { return *vol_; }

 private:
  friend class File;
  FileSystem(std::unique_ptr<fs::Volume> v, const MountOptions& opt);
  std::unique_ptr<fs::Volume> vol_;
  std::unique_ptr<dax::Dax> dax_;  // mappings and faults of this file system
  MountOptions opt_;
};

}  // namespace sdx
