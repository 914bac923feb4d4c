// fs: the file system proper (ext4/xfs's role) -- inodes, directories, extent maps,
// allocation, iomap_begin/iomap_end, fsync/fdatasync and layout changes. It keeps all
// metadata in memory, loaded and checked at mount, and changes the medium's metadata
// only through journal records. It must never map memory into a process or handle a
// fault (that is the dax layer), and never write metadata home itself.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/lock.h"
#include "common/safe_alloc.h"
#include "fs/alloc.h"
#include "journal/journal.h"
#include "media/format.h"
#include "syncdax/syncdax.hpp"

namespace sdx::device { class Device; }

namespace sdx::fs {

inline constexpr uint64_t kBlock = media::kBlockSize;
inline constexpr uint64_t kMaxFileSize = uint64_t{1} << 52;  // 4 PiB: block numbers stay far from overflow

struct Extent {
  uint64_t file_block = 0;
  uint64_t dev_block = 0;
  uint64_t len = 0;
  bool unwritten = false;
  uint64_t seq = 0;  // transaction that last changed this mapping (for DIRTY)
  uint64_t file_end() const { return file_block + len; }
};
// By file_block. A write fault changes it, so its nodes come from SafeAllocator.
using ExtentMap = std::map<uint64_t, Extent, std::less<>, SafeAllocator<std::pair<const uint64_t, Extent>>>;
using BlockImage = std::array<std::byte, kBlock>;
// Shared data blocks: device block -> reference count (>= 2). Unshared blocks are not
// in it. Copy-on-write in a write fault changes it, hence SafeAllocator.
using SharedMap = std::map<uint64_t, uint32_t, std::less<>, SafeAllocator<std::pair<const uint64_t, uint32_t>>>;

struct DirEntryRef {
  uint64_t ino = 0;
  bool is_dir = false;
  uint32_t slot = 0;
};

struct Dir {
  std::map<std::string, DirEntryRef, std::less<>> entries;
  std::vector<std::vector<std::byte>> blocks;  // latest logged image of each block
  std::set<uint32_t> free_slots;
};

struct Inode {
  uint64_t ino = 0;
  uint32_t mode = 0;
  uint32_t nlink = 0;
  uint64_t size = 0;
  uint64_t blocks = 0;  // data blocks
  int64_t atime_ns = 0, mtime_ns = 0, ctime_ns = 0;
  uint64_t parent = 0;
  uint32_t extsize_blocks = 0;
  ExtentMap extents;
  uint64_t index_block = 0;
  SafeVector<uint64_t> leaves;
  // The last logged image of each leaf, whole, so that an unchanged leaf is never
  // re-logged and a changed one always is (a checksum could collide).
  SafeVector<BlockImage> leaf_images;
  std::unique_ptr<Dir> dir;
  uint32_t opens = 0;

  // Transactions fdatasync/fsync would have to commit for this inode. Timestamps move
  // only meta_seq; allocation, conversion, size and removal move the others too.
  uint64_t meta_seq = 0;
  uint64_t alloc_seq = 0;
  uint64_t size_seq = 0;
  uint64_t remove_seq = 0;
  uint64_t datasync_seq() const;

  RwLock io;  // shared: reading/writing data; exclusive: changing the layout
  // Move (under Volume::mu_) before the layout hook runs, whenever a block range of
  // this file starts to map data (alloc_gen) or stops mapping what it did (remove_gen).
  // A fault that installed pages from an older iomap answer sees them move and installs
  // again: zero pages depend on both, device blocks only on removals.
  std::atomic<uint64_t> alloc_gen{0};
  std::atomic<uint64_t> remove_gen{0};

  bool is_dir() const;
};

// One mapped piece of a file range: fn(Piece) for each extent's part of file blocks
// [fb, end_fb), in file order (holes skipped). No heap: faults get here.
struct Piece {
  uint64_t file_block, dev_block, len;
  bool unwritten;
};
template <class Fn>
void for_each_piece(const Inode& ino, uint64_t fb, uint64_t end_fb, Fn&& fn) {
  auto it = ino.extents.upper_bound(fb);
  if (it != ino.extents.begin() && std::prev(it)->second.file_end() > fb) --it;
  for (; it != ino.extents.end() && it->second.file_block < end_fb; ++it) {
    const Extent& e = it->second;
    const uint64_t lo = std::max(fb, e.file_block), hi = std::min(end_fb, e.file_end());
    if (lo < hi) fn(Piece{lo, e.dev_block + (lo - e.file_block), hi - lo, e.unwritten});
  }
}

enum class IomapType { kHole, kMapped, kUnwritten };
enum IomapIntent : unsigned { kIomapRead = 1, kIomapWrite = 2, kIomapFault = 4 };
// kIomapShared: the blocks are shared with another extent (reflink): never map them
// writable; a write must go through iomap_begin(kIomapWrite), which copies them first.
enum IomapFlag : unsigned { kIomapNew = 1, kIomapDirty = 2, kIomapShared = 4 };

// What a file range maps to (the kernel's struct iomap).
struct Iomap {
  IomapType type = IomapType::kHole;
  uint64_t offset = 0;      // file bytes, block aligned
  uint64_t length = 0;      // bytes
  uint64_t dev_offset = 0;  // bytes into the device's area; meaningless for holes
  unsigned flags = 0;       // kIomapNew, kIomapDirty
  uint64_t seq = 0;         // with DIRTY: commit this transaction to make it clean
  uint64_t alloc_gen = 0;   // the inode's generations when this answer was true
  uint64_t remove_gen = 0;
};

// How a file range changed:
//  kAllocated: a hole or unwritten range now reads as data: pages showing zeros must
//              go, private copies may stay;
//  kRemoved:   the blocks are freed or now read as zeros: every page must go, private
//              copies too;
//  kMoved:     the same bytes now live in other blocks (copy-on-write, defragment):
//              pages mapping a block must go, private copies and zero pages may stay;
//  kShared:    the blocks stay but are now shared with another extent: no shared
//              mapping may keep them writable (fs itself flushes their data);
//  kRefill:    a moved range is settled (defragment): mappings may map it again at
//              once, sparing their writers a fault each. Unlike the others it comes
//              with no lock held, and the hook may fault pages in.
enum class LayoutChange { kAllocated, kRemoved, kMoved, kShared, kRefill };
// Called with Volume::mu_ held after a range's mapping changed (kRefill: with no lock
// held); it must not call back into the Volume nor take its locks, and (like the fault
// path it serves) must not allocate heap memory.
using LayoutHook = void (*)(void* ctx, Inode& ino, uint64_t off, uint64_t len, LayoutChange how);

// An open file: the inode and the access mode it was opened with.
class Handle {
 public:
  Inode* inode = nullptr;
  int flags = 0;
  bool readable() const;
  bool writable() const;
};

class Volume {
 public:
  static Status format(device::Device& dev, const MkfsOptions& opt);
  static Result<std::unique_ptr<Volume>> mount(std::unique_ptr<device::Device> dev,
                                               const MountOptions& opt);
  static FsckReport fsck(device::Device& dev);
  ~Volume();

  Status unmount();
  // Simulated power failure: stop the committer and give back the device without
  // committing, checkpointing or writing anything else, so that the medium holds
  // exactly what the failure left. The volume is unmounted afterwards and its
  // destructor writes nothing. EBUSY while files are open.
  Result<std::unique_ptr<device::Device>> abandon();

  Result<Handle*> open(std::string_view path, int flags, uint32_t mode);
  // A second handle on the same open file (a mapping keeps one, as the kernel's
  // vma->vm_file keeps the file open).
  Result<Handle*> reopen(Handle* h);
  Status close(Handle* h);
  Result<size_t> pread(Handle* h, std::span<std::byte> buf, uint64_t off);
  Result<size_t> pwrite(Handle* h, std::span<const std::byte> buf, uint64_t off);
  Status fallocate(Handle* h, int mode, uint64_t off, uint64_t len);
  Status ftruncate(Handle* h, uint64_t len);
  Status fsync(Handle* h, bool datasync);
  Result<Stat> fstat(Handle* h);
  Status set_extsize_hint(Handle* h, uint32_t bytes);

  // Layout changes that move or share blocks under live mappings (remap.cc). Each
  // follows the five steps of safe remapping: block faults (the inode's io lock,
  // exclusive), write back the range, unmap it from every mapping (the layout hook),
  // remap in one transaction, unblock.
  // FICLONERANGE: share src's blocks [src_off, src_off+len) at dst_off; len 0 = to
  // src's EOF. EINVAL/EBADF/EISDIR/EOPNOTSUPP as Linux gives them.
  Status clone_range(Handle* src, uint64_t src_off, Handle* dst, uint64_t dst_off, uint64_t len);
  // FIDEDUPERANGE for one destination: share the blocks if the bytes are equal.
  // Returns false ("differs") and changes nothing otherwise.
  Result<bool> dedupe_range(Handle* src, uint64_t src_off, Handle* dst, uint64_t dst_off, uint64_t len);
  // Move the file's unshared extents into as few contiguous runs as free space allows.
  Result<DefragStats> defragment(Handle* h);
  Result<std::vector<ExtentInfo>> extents(Handle* h);

  Status mkdir(std::string_view path, uint32_t mode);
  Status rmdir(std::string_view path);
  Status unlink(std::string_view path);
  Status rename(std::string_view from, std::string_view to);
  Result<std::vector<DirEntry>> readdir(std::string_view path);
  Result<Stat> stat(std::string_view path);
  Result<StatFs> statfs();
  Status sync();

  // Block mapping for every data path. Caller holds inode.io (shared is enough for
  // reads) and no Volume lock. With kIomapFault a page at or beyond EOF is ENXIO (the
  // fault gets SIGBUS) and nothing is allocated. With kIomapWrite, holes are allocated in a transaction of
  // their own: blocks the write covers whole come back unwritten (the caller stores
  // into them, and iomap_end converts them once the data is durable, so a crash between
  // shows zeros, never stale bytes); partly covered blocks are zeroed durably and
  // written. With kIomapFault every block of the range up to EOF is prepared that way
  // (mapped straight into a process), and the answer is for the block at `off`.
  Result<Iomap> iomap_begin(Inode& ino, uint64_t off, uint64_t len, unsigned intent);
  // After data was stored, and fenced, into [off, off+written): convert what
  // iomap_begin left unwritten, extend the size, move mtime.
  Status iomap_end(Inode& ino, uint64_t off, uint64_t written, unsigned intent);
  // i_size. Stable while the caller holds inode.io (every size change takes it
  // exclusive).
  uint64_t file_size(Inode& ino);
  // Would fdatasync have metadata to commit for [off, off+len)? Returns the transaction
  // to commit, or 0 when the range is clean.
  uint64_t range_dirty_seq(Inode& ino, uint64_t off, uint64_t len);

  // Tell `hook` about every change of what a file range maps to (the dax layer drops
  // pages it installed from the old answer).
  void set_layout_hook(LayoutHook hook, void* ctx);

  // The inode behind an open File, for white-box tests of iomap.
  Inode* inode_for_test(const File& f);

  device::Device& device() { return *dev_; }
  journal::Journal& journal() { return *journal_; }
  const media::Geometry& geometry() const { return geo_; }

 private:
  struct Loaded;
  Volume(std::unique_ptr<device::Device> dev, const media::Geometry& g);
  static Result<std::unique_ptr<Loaded>> load(device::Device& dev, std::vector<std::string>* problems);

  // Everything below runs with mu_ held.
  Result<Inode*> lookup(std::string_view path, Inode** parent_out, std::string* leaf_out,
                        bool want_parent);
  Inode* inode(uint64_t ino);
  Result<Inode*> new_inode(journal::Handle& h, uint32_t mode, uint64_t parent);
  Status dir_add(journal::Handle& h, Inode& dir, std::string_view name, const Inode& child);
  Status dir_reserve(journal::Handle& h, Inode& dir);
  void dir_remove(journal::Handle& h, Inode& dir, std::string_view name);
  void drop_link(journal::Handle& h, Inode& ino);
  void evict(journal::Handle& h, Inode& ino);
  Result<Run> alloc_blocks(journal::Handle& h, uint64_t goal, uint64_t want, bool metadata);
  void free_blocks(journal::Handle& h, uint64_t start, uint64_t len);
  void mark_bitmap(journal::Handle& h, uint64_t start, uint64_t len, bool used);
  Status log_inode(journal::Handle& h, Inode& ino);
  Status log_extents(journal::Handle& h, Inode& ino);
  Status allocate_range(journal::Handle& h, Inode& ino, uint64_t fb, uint64_t end_fb,
                        bool unwritten);
  Status allocate_for_write(journal::Handle& h, Inode& ino, uint64_t off, uint64_t len);
  Status allocate_for_fault(journal::Handle& h, Inode& ino, uint64_t fb, uint64_t end_fb);
  Status nothing_allocated_at(journal::Handle& h, Inode& ino, const Status& st);
  bool range_mapped_written(const Inode& ino, uint64_t fb, uint64_t end_fb) const;
  void insert_extent(Inode& ino, Extent e);
  void remove_range(journal::Handle& h, Inode& ino, uint64_t fb, uint64_t end_fb,
                    LayoutChange how = LayoutChange::kRemoved);
  // Drop one extent reference to each of device blocks [dev, dev+len): shared blocks
  // lose a count, the others are freed.
  void release_blocks(journal::Handle& h, uint64_t dev, uint64_t len);
  void add_refs(journal::Handle& h, uint64_t dev, uint64_t len);
  void log_refcounts(journal::Handle& h, uint64_t dev, uint64_t len);
  // The blocks at the start of [dev, dev+len) that are all shared, or all not.
  struct ShareRun {
    uint64_t len;
    bool shared;
  };
  ShareRun share_run(uint64_t dev, uint64_t len) const;
  // fn(first, n, shared) for each such run of [dev, dev+len), in order; fn may change
  // the reference counts of its own run.
  template <class Fn>
  void for_each_share_run(uint64_t dev, uint64_t len, Fn&& fn) const {
    for (uint64_t pos = dev, end = dev + len; pos < end;) {
      const ShareRun r = share_run(pos, end - pos);
      fn(pos, r.len, r.shared);
      pos += r.len;
    }
  }
  uint64_t shared_blocks_in(const Inode& ino, uint64_t fb, uint64_t end_fb) const;
  // Copy-on-write: give [fb, end_fb) of the file blocks of its own, copied from the
  // shared ones. All or nothing: ENOSPC changes nothing.
  Status unshare(journal::Handle& h, Inode& ino, uint64_t fb, uint64_t end_fb);
  // Point the mapped range [fb, fb+n) at device blocks [dev, dev+n) (already marked
  // used, holding the data), keeping the written/unwritten state of each piece.
  void replace_blocks(journal::Handle& h, Inode& ino, uint64_t fb, uint64_t n, uint64_t dev);
  uint64_t usable_data_blocks();
  Result<uint64_t> remap_length(Inode& si, uint64_t src_off, Inode& di, uint64_t dst_off, uint64_t len,
                                const char* what);
  Status share_locked(Inode& si, uint64_t sfb, Inode& di, uint64_t dfb, uint64_t nb, uint64_t new_size);
  void read_locked(Inode& ino, std::span<std::byte> buf, uint64_t off);
  Status move_chunk(Inode& ino, uint64_t fb, uint64_t n, uint64_t target, std::span<char> taken, uint64_t* moved);
  // Mark [fb, end_fb) unwritten, or written; written blocks are zeroed first unless the
  // caller has just stored their data (kHasData).
  enum class Fill { kZero, kHasData };
  void set_unwritten(journal::Handle& h, Inode& ino, uint64_t fb, uint64_t end_fb, bool unwritten,
                     Fill fill = Fill::kZero);
  const Extent* find_extent(const Inode& ino, uint64_t fb) const;
  uint64_t dir_block_dev(const Inode& dir, uint64_t k) const;
  Status zero_bytes(Inode& ino, uint64_t off, uint64_t len);
  void touch(Inode& ino, bool mtime);
  uint64_t data_block_limit() const;
  uint64_t metadata_reserve() const;
  void release_freed(uint64_t committed);
  void layout_changed(Inode& ino, uint64_t fb, uint64_t end_fb, LayoutChange how);

  std::unique_ptr<device::Device> dev_;
  media::Geometry geo_;
  std::unique_ptr<journal::Journal> journal_;
  Mutex mu_;  // all metadata below
  std::unordered_map<uint64_t, std::unique_ptr<Inode>> inodes_;
  std::set<uint64_t> free_inodes_;
  std::vector<uint8_t> bitmap_;
  SharedMap shared_;
  Allocator alloc_;
  std::vector<std::unique_ptr<Handle>> handles_;
  // Blocks freed by transactions not yet durable. A fault frees (a map that shrinks
  // drops a leaf) and its commit releases, hence SafeVector.
  Mutex freed_mu_;
  SafeVector<std::pair<uint64_t, Run>> freed_;  // (seq, run)
  SafeVector<Run> released_;
  LayoutHook layout_hook_ = nullptr;
  void* layout_ctx_ = nullptr;
  bool mounted_ = false;
};

}  // namespace sdx::fs
