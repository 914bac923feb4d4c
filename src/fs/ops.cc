// The POSIX-like operations: namespace (open, mkdir, rename, ...) and data (pread,
// pwrite, fallocate, truncate, fsync). Lock order, outermost first:
//   Inode::io -> Volume::mu_ -> journal handle -> Volume::freed_mu_
// Every handle lives inside one hold of mu_, so transactions contain operations in the
// order they changed the in-memory metadata: a record logged into transaction N can
// never be newer than one for the same bytes in N+1. (Starting a handle may commit a
// full transaction while mu_ is held; that cannot deadlock because no other handle can
// be open then.)
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "device/device.h"
#include "fs/volume.h"

namespace sdx::fs {

using media::kBlockSize;

namespace {


Stat make_stat(const Inode& ino) {
  Stat s;
  s.ino = ino.ino;
  s.mode = ino.mode;
  s.nlink = ino.nlink;
  s.size = ino.size;
  s.blocks = ino.blocks;
  s.extents = ino.extents.size();
  s.extsize_hint = ino.extsize_blocks * kBlockSize;
  s.atime_ns = ino.atime_ns;
  s.mtime_ns = ino.mtime_ns;
  s.ctime_ns = ino.ctime_ns;
  return s;
}

std::vector<std::string_view> split(std::string_view path) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) out.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

}  // namespace

bool Handle::readable() const { return (flags & O_ACCMODE) != O_WRONLY; }
bool Handle::writable() const { return (flags & O_ACCMODE) != O_RDONLY; }

Inode* Volume::inode(uint64_t ino) {
  auto it = inodes_.find(ino);
  return it == inodes_.end() ? nullptr : it->second.get();
}

// Resolve `path`. With want_parent, stop at the last component: return its directory
// in *parent_out, its name in *leaf_out, and the inode if it exists (else nullptr).
Result<Inode*> Volume::lookup(std::string_view path, Inode** parent_out, std::string* leaf_out,
                              bool want_parent) {
  if (path.empty()) return fail(ENOENT, "empty path");
  auto parts = split(path);
  Inode* cur = inode(media::kRootIno);
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string_view name = parts[i];
    if (name.size() > media::kNameMax) return fail(ENAMETOOLONG, "name too long: " + std::string(name));
    const bool last = i + 1 == parts.size();
    if (!cur->is_dir()) return fail(ENOTDIR, std::string(path) + ": not a directory");
    if (last && want_parent) {
      if (name == "." || name == "..") return fail(EINVAL, std::string(path) + ": invalid last component");
      *parent_out = cur;
      *leaf_out = std::string(name);
      auto it = cur->dir->entries.find(name);
      return it == cur->dir->entries.end() ? nullptr : inode(it->second.ino);
    }
    if (name == ".") continue;
    if (name == "..") { cur = inode(cur->parent); continue; }
    auto it = cur->dir->entries.find(name);
    if (it == cur->dir->entries.end()) return fail(ENOENT, std::string(path) + ": no such file or directory");
    cur = inode(it->second.ino);
  }
  if (want_parent) return fail(EINVAL, std::string(path) + ": refers to the root directory");
  return cur;
}

Result<Inode*> Volume::new_inode(journal::Handle& h, uint32_t mode, uint64_t parent) {
  if (free_inodes_.empty()) return fail(ENOSPC, "no free inodes");
  const uint64_t n = *free_inodes_.begin();
  free_inodes_.erase(free_inodes_.begin());
  auto ino = std::make_unique<Inode>();
  ino->ino = n;
  ino->mode = mode;
  ino->nlink = S_ISDIR(mode) ? 2 : 1;
  ino->atime_ns = ino->mtime_ns = ino->ctime_ns = now_ns();
  ino->parent = parent;
  if (S_ISDIR(mode)) ino->dir = std::make_unique<Dir>();
  ino->size_seq = h.seq();  // its existence is what fdatasync of a new file makes durable
  Inode* p = ino.get();
  inodes_[n] = std::move(ino);
  SDX_TRY(log_inode(h, *p));
  return p;
}

uint64_t Volume::dir_block_dev(const Inode& dir, uint64_t k) const {
  const Extent* e = find_extent(dir, k);
  return e->dev_block + (k - e->file_block);
}

Status Volume::dir_reserve(journal::Handle& h, Inode& dir) {
  if (!dir.dir->free_slots.empty()) return ok();
  const uint64_t k = dir.dir->blocks.size();
  uint64_t goal = 0;
  if (k > 0) goal = dir_block_dev(dir, k - 1) + 1;
  SDX_ASSIGN(Run r, alloc_blocks(h, goal, 1, true));
  std::vector<std::byte> img(kBlockSize);
  media::BlockHeader hdr{media::kDirMagic, 0, 0, 0, dir.ino};
  std::memcpy(img.data(), &hdr, sizeof hdr);
  media::seal_block(img.data());
  h.log(r.start * kBlockSize, img);
  dir.dir->blocks.push_back(std::move(img));
  insert_extent(dir, Extent{k, r.start, 1, false, h.seq()});
  dir.blocks += 1;
  dir.size += kBlockSize;
  dir.size_seq = h.seq();
  for (uint32_t s = 0; s < media::kDirentsPerBlock; ++s) dir.dir->free_slots.insert(k * media::kDirentsPerBlock + s);
  SDX_TRY(log_extents(h, dir));
  return log_inode(h, dir);
}

namespace {
void write_slot(journal::Handle& h, std::vector<std::byte>& img, uint64_t dev_block, uint32_t idx,
                const media::DiskDirent& d) {
  const size_t off = sizeof(media::BlockHeader) + idx * sizeof(media::DiskDirent);
  std::memcpy(img.data() + off, &d, sizeof d);
  media::seal_block(img.data());
  h.log(dev_block * kBlockSize, {img.data(), sizeof(media::BlockHeader)});
  h.log(dev_block * kBlockSize + off, {img.data() + off, sizeof d});
}
}  // namespace

Status Volume::dir_add(journal::Handle& h, Inode& dir, std::string_view name, const Inode& child) {
  SDX_TRY(dir_reserve(h, dir));
  const uint32_t slot = *dir.dir->free_slots.begin();
  dir.dir->free_slots.erase(dir.dir->free_slots.begin());
  media::DiskDirent d{};
  d.ino = child.ino;
  d.name_len = static_cast<uint8_t>(name.size());
  d.is_dir = child.is_dir();
  std::memcpy(d.name, name.data(), name.size());
  const uint64_t k = slot / media::kDirentsPerBlock;
  write_slot(h, dir.dir->blocks[k], dir_block_dev(dir, k), slot % media::kDirentsPerBlock, d);
  dir.dir->entries.emplace(std::string(name), DirEntryRef{child.ino, child.is_dir(), slot});
  touch(dir, true);
  return log_inode(h, dir);
}

void Volume::dir_remove(journal::Handle& h, Inode& dir, std::string_view name) {
  auto it = dir.dir->entries.find(name);
  const uint32_t slot = it->second.slot;
  const uint64_t k = slot / media::kDirentsPerBlock;
  write_slot(h, dir.dir->blocks[k], dir_block_dev(dir, k), slot % media::kDirentsPerBlock, media::DiskDirent{});
  dir.dir->entries.erase(it);
  dir.dir->free_slots.insert(slot);
  touch(dir, true);
  (void)log_inode(h, dir);
}

void Volume::evict(journal::Handle& h, Inode& ino) {
  remove_range(h, ino, 0, UINT64_MAX);
  ino.extents.clear();
  (void)log_extents(h, ino);  // frees leaves and index; cannot allocate
  h.log_object(geo_.inode_start * kBlockSize + ino.ino * media::kInodeSize, media::DiskInode{});
  free_inodes_.insert(ino.ino);
  inodes_.erase(ino.ino);
}

void Volume::drop_link(journal::Handle& h, Inode& ino) {
  ino.nlink = ino.is_dir() ? 0 : ino.nlink - 1;
  touch(ino, false);
  // An open file outlives its last name until closed; recovery reclaims it after a crash.
  if (ino.nlink == 0 && ino.opens == 0) evict(h, ino);
  else (void)log_inode(h, ino);
}

Result<Handle*> Volume::open(std::string_view path, int flags, uint32_t mode) {
  const int acc = flags & O_ACCMODE;
  if (acc != O_RDONLY && acc != O_WRONLY && acc != O_RDWR) return fail(EINVAL, "invalid access mode");
  Lock l(mu_);
  journal::Handle h = journal_->start();
  Inode* parent = nullptr;
  std::string leaf;
  Inode* ino = nullptr;
  if (split(path).empty()) {
    SDX_ASSIGN(ino, lookup(path, nullptr, nullptr, false));
  } else {
    SDX_ASSIGN(ino, lookup(path, &parent, &leaf, true));
  }
  if (ino) {
    if ((flags & O_CREAT) && (flags & O_EXCL)) return fail(EEXIST, std::string(path) + ": file exists");
    if (ino->is_dir() && (acc != O_RDONLY || (flags & O_TRUNC)))
      return fail(EISDIR, std::string(path) + ": is a directory");
    if ((flags & O_DIRECTORY) && !ino->is_dir()) return fail(ENOTDIR, std::string(path) + ": not a directory");
  } else {
    if (!(flags & O_CREAT)) return fail(ENOENT, std::string(path) + ": no such file or directory");
    SDX_TRY(dir_reserve(h, *parent));
    SDX_ASSIGN(ino, new_inode(h, S_IFREG | (mode & 07777), parent->ino));
    SDX_TRY(dir_add(h, *parent, leaf, *ino));
  }
  auto hd = std::make_unique<Handle>();
  hd->inode = ino;
  hd->flags = flags;
  ++ino->opens;
  Handle* out = hd.get();
  handles_.push_back(std::move(hd));
  const bool trunc = (flags & O_TRUNC) && out->writable() && ino->size > 0;
  l.unlock();
  h.end();
  if (trunc) {
    if (auto st = ftruncate(out, 0); !st) {
      (void)close(out);
      return std::unexpected(st.error());
    }
  }
  return out;
}

Result<Handle*> Volume::reopen(Handle* hd) {
  Lock l(mu_);
  auto dup = std::make_unique<Handle>(*hd);
  ++hd->inode->opens;
  Handle* out = dup.get();
  handles_.push_back(std::move(dup));
  return out;
}

Status Volume::close(Handle* hd) {
  Lock l(mu_);
  journal::Handle h = journal_->start();
  auto it = std::find_if(handles_.begin(), handles_.end(), [&](const auto& p) { return p.get() == hd; });
  if (it == handles_.end()) return fail(EBADF, "not an open file");
  Inode& ino = *hd->inode;
  handles_.erase(it);
  if (--ino.opens == 0 && ino.nlink == 0) evict(h, ino);
  return ok();
}

Status Volume::mkdir(std::string_view path, uint32_t mode) {
  Lock l(mu_);
  journal::Handle h = journal_->start();
  Inode* parent = nullptr;
  std::string leaf;
  if (split(path).empty()) return fail(EEXIST, "/: file exists");
  SDX_ASSIGN(Inode * existing, lookup(path, &parent, &leaf, true));
  if (existing) return fail(EEXIST, std::string(path) + ": file exists");
  SDX_TRY(dir_reserve(h, *parent));
  SDX_ASSIGN(Inode * d, new_inode(h, S_IFDIR | (mode & 07777), parent->ino));
  SDX_TRY(dir_add(h, *parent, leaf, *d));
  ++parent->nlink;
  return log_inode(h, *parent);
}

Status Volume::rmdir(std::string_view path) {
  Lock l(mu_);
  journal::Handle h = journal_->start();
  Inode* parent = nullptr;
  std::string leaf;
  if (split(path).empty()) return fail(EBUSY, "/: cannot remove the root directory");
  SDX_ASSIGN(Inode * d, lookup(path, &parent, &leaf, true));
  if (!d) return fail(ENOENT, std::string(path) + ": no such file or directory");
  if (!d->is_dir()) return fail(ENOTDIR, std::string(path) + ": not a directory");
  if (!d->dir->entries.empty()) return fail(ENOTEMPTY, std::string(path) + ": directory not empty");
  dir_remove(h, *parent, leaf);
  --parent->nlink;
  SDX_TRY(log_inode(h, *parent));
  drop_link(h, *d);
  return ok();
}

Status Volume::unlink(std::string_view path) {
  Lock l(mu_);
  journal::Handle h = journal_->start();
  Inode* parent = nullptr;
  std::string leaf;
  if (split(path).empty()) return fail(EISDIR, "/: is a directory");
  SDX_ASSIGN(Inode * f, lookup(path, &parent, &leaf, true));
  if (!f) return fail(ENOENT, std::string(path) + ": no such file or directory");
  if (f->is_dir()) return fail(EISDIR, std::string(path) + ": is a directory");
  dir_remove(h, *parent, leaf);
  drop_link(h, *f);
  return ok();
}

Status Volume::rename(std::string_view from, std::string_view to) {
  Lock l(mu_);
  journal::Handle h = journal_->start();
  Inode *sp = nullptr, *dp = nullptr;
  std::string sname, dname;
  if (split(from).empty() || split(to).empty()) return fail(EBUSY, "cannot rename the root directory");
  SDX_ASSIGN(Inode * src, lookup(from, &sp, &sname, true));
  if (!src) return fail(ENOENT, std::string(from) + ": no such file or directory");
  SDX_ASSIGN(Inode * dst, lookup(to, &dp, &dname, true));
  if (dst == src) return ok();
  if (src->is_dir()) {
    // Moving a directory under itself would cut the tree off from the root.
    for (Inode* p = dp;; p = inode(p->parent)) {
      if (p == src) return fail(EINVAL, std::string(to) + ": cannot move a directory into itself");
      if (p->ino == media::kRootIno) break;
    }
  }
  if (dst) {
    if (src->is_dir() && !dst->is_dir()) return fail(ENOTDIR, std::string(to) + ": not a directory");
    if (!src->is_dir() && dst->is_dir()) return fail(EISDIR, std::string(to) + ": is a directory");
    if (dst->is_dir() && !dst->dir->entries.empty()) return fail(ENOTEMPTY, std::string(to) + ": directory not empty");
  } else {
    SDX_TRY(dir_reserve(h, *dp));  // the only step that can fail comes before any change
  }
  // One transaction: after a crash either the old name or the new one holds the file.
  if (dst) {
    dir_remove(h, *dp, dname);
    if (dst->is_dir()) --dp->nlink;
    drop_link(h, *dst);
  }
  dir_remove(h, *sp, sname);
  SDX_TRY(dir_add(h, *dp, dname, *src));
  if (src->is_dir() && sp != dp) {
    --sp->nlink;
    ++dp->nlink;
    src->parent = dp->ino;
  }
  touch(*src, false);
  SDX_TRY(log_inode(h, *src));
  SDX_TRY(log_inode(h, *sp));
  return log_inode(h, *dp);
}

Result<std::vector<DirEntry>> Volume::readdir(std::string_view path) {
  Lock l(mu_);
  SDX_ASSIGN(Inode * d, lookup(path, nullptr, nullptr, false));
  if (!d->is_dir()) return fail(ENOTDIR, std::string(path) + ": not a directory");
  std::vector<DirEntry> out;
  out.push_back({".", d->ino, true});
  out.push_back({"..", d->parent, true});
  for (const auto& [name, ref] : d->dir->entries) out.push_back({name, ref.ino, ref.is_dir});
  return out;
}

Result<Stat> Volume::stat(std::string_view path) {
  Lock l(mu_);
  SDX_ASSIGN(Inode * ino, lookup(path, nullptr, nullptr, false));
  return make_stat(*ino);
}

Result<Stat> Volume::fstat(Handle* hd) {
  Lock l(mu_);
  return make_stat(*hd->inode);
}

Result<StatFs> Volume::statfs() {
  Lock l(mu_);
  StatFs s;
  s.block_size = kBlockSize;
  s.total_blocks = geo_.data_blocks;
  s.free_blocks = alloc_.free_blocks();
  {
    // Blocks waiting for their freeing transaction to commit count as free, as XFS
    // counts its busy extents.
    Lock f(freed_mu_);
    for (const Run& r : released_) s.free_blocks += r.len;
    for (const auto& fr : freed_) s.free_blocks += fr.second.len;
  }
  s.avail_blocks = s.free_blocks - std::min(s.free_blocks, metadata_reserve());
  s.total_inodes = geo_.inode_count - 1;
  s.free_inodes = free_inodes_.size();
  s.name_max = media::kNameMax;
  return s;
}

Status Volume::sync() { return journal_->commit_all(); }

Inode* Volume::inode_for_test(const File& f) { return f.h_ ? f.h_->inode : nullptr; }

Status Volume::set_extsize_hint(Handle* hd, uint32_t bytes) {
  if (bytes % kBlockSize) return fail(EINVAL, "extent size hint must be a multiple of 4096");
  if (!hd->writable()) return fail(EBADF, "file not open for writing");
  Lock l(mu_);
  journal::Handle h = journal_->start();
  hd->inode->extsize_blocks = bytes / kBlockSize;
  touch(*hd->inode, false);
  return log_inode(h, *hd->inode);
}

// ---- data ----

Result<size_t> Volume::pread(Handle* hd, std::span<std::byte> buf, uint64_t off) {
  if (!hd->readable()) return fail(EBADF, "file not open for reading");
  Inode& ino = *hd->inode;
  if (ino.is_dir()) return fail(EISDIR, "is a directory");
  ReadLock io(ino.io);
  uint64_t size;
  {
    Lock l(mu_);
    size = ino.size;
  }
  if (off >= size || buf.empty()) return size_t{0};
  const uint64_t n = std::min<uint64_t>(buf.size(), size - off);
  read_locked(ino, buf.first(n), off);
  return static_cast<size_t>(n);
}

// The bytes of [off, off+buf.size()); holes and unwritten blocks read as zeros. The
// caller holds ino.io, so no block can be taken away while we copy it without mu_
// (a concurrent fault only fills holes, with zeros).
void Volume::read_locked(Inode& ino, std::span<std::byte> buf, uint64_t off) {
  for (uint64_t done = 0; done < buf.size();) {
    const uint64_t pos = off + done;
    const Iomap m = *iomap_begin(ino, pos, buf.size() - done, kIomapRead);  // a read cannot fail
    const uint64_t n = std::min<uint64_t>(buf.size() - done, m.offset + m.length - pos);
    if (m.type == IomapType::kMapped)
      std::memcpy(buf.data() + done, dev_->bytes().data() + m.dev_offset + (pos - m.offset), n);
    else
      std::memset(buf.data() + done, 0, n);
    done += n;
  }
}

Result<size_t> Volume::pwrite(Handle* hd, std::span<const std::byte> buf, uint64_t off) {
  if (!hd->writable()) return fail(EBADF, "file not open for writing");
  Inode& ino = *hd->inode;
  if (buf.empty()) return size_t{0};
  WriteLock io(ino.io);
  if (hd->flags & O_APPEND) {
    Lock l(mu_);
    off = ino.size;
  }
  if (off > kMaxFileSize || buf.size() > kMaxFileSize - off) return fail(EFBIG, "file too large");
  uint64_t done = 0;
  Status st;
  while (done < buf.size()) {
    auto m = iomap_begin(ino, off + done, buf.size() - done, kIomapWrite);
    if (!m) { st = std::unexpected(m.error()); break; }
    const uint64_t pos = off + done;
    const uint64_t chunk = std::min<uint64_t>(buf.size() - done, m->offset + m->length - pos);
    dev_->copy_nodrain(dev_->bytes().data() + m->dev_offset + (pos - m->offset), buf.data() + done, chunk);
    done += chunk;
  }
  if (done == 0) return std::unexpected(st.error());
  // The data is durable before the size that exposes it can commit.
  dev_->fence();
  SDX_TRY(iomap_end(ino, off, done, kIomapWrite));
  return static_cast<size_t>(done);
}

Status Volume::fallocate(Handle* hd, int mode, uint64_t off, uint64_t len) {
  if (!hd->writable()) return fail(EBADF, "file not open for writing");
  Inode& ino = *hd->inode;
  if (ino.is_dir()) return fail(EISDIR, "is a directory");
  if (len == 0) return fail(EINVAL, "fallocate: length must be positive");
  if (off > kMaxFileSize || len > kMaxFileSize - off) return fail(EFBIG, "fallocate: range too large");
  const bool keep = mode & FALLOC_FL_KEEP_SIZE;
  const int kind = mode & ~FALLOC_FL_KEEP_SIZE;
  if (kind == FALLOC_FL_PUNCH_HOLE && !keep)
    return fail(EOPNOTSUPP, "fallocate: PUNCH_HOLE requires KEEP_SIZE");
  if (kind != 0 && kind != FALLOC_FL_PUNCH_HOLE && kind != FALLOC_FL_ZERO_RANGE)
    return fail(EOPNOTSUPP, "fallocate: unsupported mode " + std::to_string(mode));
  WriteLock io(ino.io);
  Lock l(mu_);
  journal::Handle h = journal_->start();
  const uint64_t end = off + len;
  const uint64_t fb = off / kBlockSize, end_fb = (end + kBlockSize - 1) / kBlockSize;
  const uint64_t whole_lo = (off + kBlockSize - 1) / kBlockSize, whole_hi = end / kBlockSize;
  Status st;
  if (kind == 0) {
    st = allocate_range(h, ino, fb, end_fb, false);
  } else if (kind == FALLOC_FL_PUNCH_HOLE) {
    // Partial blocks are zeroed in place, so they must be the file's own.
    SDX_TRY(unshare(h, ino, fb, std::min(whole_lo, end_fb)));
    SDX_TRY(unshare(h, ino, std::max(whole_hi, fb), end_fb));
    if (whole_lo < whole_hi) {
      remove_range(h, ino, whole_lo, whole_hi);
      SDX_TRY(log_extents(h, ino));
      SDX_TRY(zero_bytes(ino, off, whole_lo * kBlockSize - off));
      SDX_TRY(zero_bytes(ino, whole_hi * kBlockSize, end - whole_hi * kBlockSize));
    } else {
      SDX_TRY(zero_bytes(ino, off, len));
    }
  } else {  // ZERO_RANGE: whole blocks become unwritten (metadata only), edges are zeroed in place
    // Unshared first: a block written in one file must never be unwritten (and so
    // zeroed by a later write) in another.
    st = unshare(h, ino, fb, end_fb);
    if (st) st = allocate_range(h, ino, fb, end_fb, true);
    if (st) {
      if (whole_lo < whole_hi) {
        set_unwritten(h, ino, whole_lo, whole_hi, true);
        SDX_TRY(log_extents(h, ino));
        SDX_TRY(zero_bytes(ino, off, whole_lo * kBlockSize - off));
        SDX_TRY(zero_bytes(ino, whole_hi * kBlockSize, end - whole_hi * kBlockSize));
      } else {
        SDX_TRY(zero_bytes(ino, off, len));
      }
    }
  }
  dev_->fence();
  if (st && !keep && end > ino.size) {
    ino.size = end;
    ino.size_seq = h.seq();
  }
  touch(ino, true);
  SDX_TRY(log_inode(h, ino));
  return st;
}

Status Volume::ftruncate(Handle* hd, uint64_t len) {
  if (!hd->writable()) return fail(EINVAL, "ftruncate: file not open for writing");
  Inode& ino = *hd->inode;
  if (ino.is_dir()) return fail(EISDIR, "is a directory");
  if (len > kMaxFileSize) return fail(EFBIG, "ftruncate: length too large");
  WriteLock io(ino.io);
  Lock l(mu_);
  journal::Handle h = journal_->start();
  if (len < ino.size) {
    // The new last block is zeroed past EOF in place, so it must be the file's own.
    if (len % kBlockSize) SDX_TRY(unshare(h, ino, len / kBlockSize, len / kBlockSize + 1));
    // Pages past the new EOF must fault (SIGBUS) in every mapping, holes included.
    layout_changed(ino, (len + kBlockSize - 1) / kBlockSize, (ino.size + kBlockSize - 1) / kBlockSize,
                   LayoutChange::kRemoved);
    remove_range(h, ino, (len + kBlockSize - 1) / kBlockSize, UINT64_MAX);
    SDX_TRY(log_extents(h, ino));
    // Bytes past EOF in the last block stay zero, so growing the file again reads zeros.
    if (len % kBlockSize) SDX_TRY(zero_bytes(ino, len, kBlockSize - len % kBlockSize));
    dev_->fence();
  }
  if (len != ino.size) {
    ino.size = len;
    ino.size_seq = h.seq();
  }
  touch(ino, true);
  return log_inode(h, ino);
}

Status Volume::fsync(Handle* hd, bool datasync) {
  uint64_t seq;
  {
    Lock l(mu_);
    const Inode& ino = *hd->inode;
    seq = datasync ? ino.datasync_seq() : std::max(ino.meta_seq, ino.datasync_seq());
  }
  if (seq <= journal_->committed_seq()) return ok();
  return journal_->commit(seq);
}

}  // namespace sdx::fs
