// Format, mount (recovery, then loading every piece of metadata with its checks), fsck
// and unmount. Loading is the one place that reads metadata from the medium, so it
// trusts nothing: every number is bounds-checked before it is used.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "device/device.h"
#include "fs/volume.h"

namespace sdx::fs {

using media::kBlockSize;

namespace {

journal::Region log_region(const media::Geometry& g) {
  return {g.journal_start * kBlockSize, g.journal_blocks * kBlockSize};
}

// Where journal records may land: everything after the journal (inodes, bitmap, the
// metadata blocks in the data area), never the superblock or the log itself.
journal::Region home_region(const media::Geometry& g) {
  return {g.inode_start * kBlockSize, (g.total_blocks - g.inode_start) * kBlockSize};
}

}  // namespace

struct Volume::Loaded {
  media::Geometry geo{};
  uint64_t next_seq = 1;
  std::vector<uint8_t> bitmap;
  std::unordered_map<uint64_t, std::unique_ptr<Inode>> inodes;
  std::set<uint64_t> free_inodes;
  SharedMap shared;
};

Volume::Volume(std::unique_ptr<device::Device> dev, const media::Geometry& g)
    : dev_(std::move(dev)), geo_(g) {}

Volume::~Volume() {
  if (!mounted_) return;
  // Files still open are simply forgotten: an unlinked one becomes an orphan that the
  // next mount reclaims, exactly as after a crash.
  {
    Lock l(mu_);
    handles_.clear();
  }
  (void)unmount();
}

Status Volume::format(device::Device& dev, const MkfsOptions& opt) {
  SDX_ASSIGN(media::Geometry g, media::plan_geometry(dev.size(), opt.bytes_per_inode, opt.journal_bytes));
  std::byte* base = dev.bytes().data();
  dev.zero_nodrain(base + g.inode_start * kBlockSize, (g.inode_blocks + g.bitmap_blocks + g.refcount_blocks) * kBlockSize);
  SDX_TRY(journal::Journal::format(dev, log_region(g)));
  media::DiskInode root{};
  root.mode = S_IFDIR | 0755;
  root.nlink = 2;
  root.parent = media::kRootIno;
  root.atime_ns = root.mtime_ns = root.ctime_ns = now_ns();
  media::seal(root);
  dev.copy_nodrain(base + g.inode_start * kBlockSize + media::kRootIno * media::kInodeSize, &root, sizeof root);
  dev.fence();
  // The superblock goes last: an interrupted mkfs leaves no valid file system.
  media::Superblock sb = media::make_superblock(g);
  dev.copy_nodrain(base, &sb, sizeof sb);
  dev.fence();
  return ok();
}

Result<std::unique_ptr<Volume::Loaded>> Volume::load(device::Device& dev, std::vector<std::string>* problems) {
  auto problem = [&](std::string s) { problems->push_back(std::move(s)); };
  if (dev.size() < sizeof(media::Superblock)) return fail(EINVAL, "device too small to hold a file system");
  const std::byte* base = dev.bytes().data();
  media::Superblock sb;
  std::memcpy(&sb, base, sizeof sb);
  SDX_TRY(media::check_superblock(sb, dev.size()));
  auto L = std::make_unique<Loaded>();
  const media::Geometry g = media::geometry_of(sb);
  L->geo = g;
  auto rec = journal::Journal::recover(dev, log_region(g), home_region(g));
  if (!rec) {
    problem("journal: " + rec.error().message);
    L->next_seq = 1;
  } else {
    L->next_seq = *rec;
  }

  const uint64_t data_lo = g.data_start, data_hi = g.total_blocks;
  L->bitmap.assign(reinterpret_cast<const uint8_t*>(base + g.bitmap_start * kBlockSize),
                   reinterpret_cast<const uint8_t*>(base + (g.bitmap_start + g.bitmap_blocks) * kBlockSize));
  // Who uses each block: metadata blocks and directory blocks have exactly one owner;
  // file data blocks may be shared, and the reference-count table must then say so.
  std::vector<uint32_t> owner(g.total_blocks, 0);  // block -> first inode using it
  std::vector<uint32_t> refs(g.total_blocks, 0);   // extent references to it
  std::vector<bool> exclusive(g.total_blocks, false);
  auto use = [&](uint64_t ino, uint64_t start, uint64_t len, const char* what, bool shareable) -> bool {
    if (start < data_lo || start >= data_hi || len > data_hi - start) {
      problem("inode " + std::to_string(ino) + ": " + what + " at block " + std::to_string(start) +
              " (+" + std::to_string(len) + ") lies outside the data area");
      return false;
    }
    for (uint64_t b = start; b < start + len; ++b) {
      if (refs[b] && (exclusive[b] || !shareable)) {
        problem("block " + std::to_string(b) + " is used by inode " + std::to_string(owner[b]) +
                " and inode " + std::to_string(ino));
        return false;
      }
      if (!refs[b]) owner[b] = ino;
      ++refs[b];
      exclusive[b] = !shareable;
    }
    return true;
  };

  // Inodes and their extent maps.
  for (uint64_t i = 1; i < g.inode_count; ++i) {
    media::DiskInode di;
    std::memcpy(&di, base + g.inode_start * kBlockSize + i * media::kInodeSize, sizeof di);
    if (!media::verify(di)) {
      problem("inode " + std::to_string(i) + ": checksum mismatch");
      continue;
    }
    if (di.mode == 0) {
      L->free_inodes.insert(i);
      continue;
    }
    if (!S_ISREG(di.mode) && !S_ISDIR(di.mode)) {
      problem("inode " + std::to_string(i) + ": unknown file type");
      continue;
    }
    auto ino = std::make_unique<Inode>();
    ino->ino = i;
    ino->mode = di.mode;
    ino->nlink = di.nlink;
    ino->size = di.size;
    ino->blocks = di.blocks;
    ino->atime_ns = di.atime_ns;
    ino->mtime_ns = di.mtime_ns;
    ino->ctime_ns = di.ctime_ns;
    ino->parent = di.parent;
    ino->extsize_blocks = di.extsize_blocks;
    std::vector<media::DiskExtent> exts;
    bool ok_map = true;
    if (di.nextents <= media::kInlineExtents) {
      exts.assign(di.inline_extents, di.inline_extents + di.nextents);
    } else if (di.nextents > media::kMaxExtents) {
      problem("inode " + std::to_string(i) + ": impossible extent count " + std::to_string(di.nextents));
      ok_map = false;
    } else if (!use(i, di.index_block, 1, "extent index", false)) {
      ok_map = false;
    } else {
      const std::byte* idx = base + di.index_block * kBlockSize;
      media::BlockHeader ih;
      std::memcpy(&ih, idx, sizeof ih);
      const uint64_t need = (di.nextents + media::kExtentsPerLeaf - 1) / media::kExtentsPerLeaf;
      if (!media::verify_block(idx, media::kIndexMagic) || ih.owner != i || ih.count != need) {
        problem("inode " + std::to_string(i) + ": extent index block " + std::to_string(di.index_block) + " is corrupt");
        ok_map = false;
      }
      ino->index_block = di.index_block;
      for (uint64_t k = 0; ok_map && k < need; ++k) {
        uint64_t leaf;
        std::memcpy(&leaf, idx + sizeof ih + k * sizeof leaf, sizeof leaf);
        if (!use(i, leaf, 1, "extent leaf", false)) { ok_map = false; break; }
        const std::byte* lb = base + leaf * kBlockSize;
        media::BlockHeader lh;
        std::memcpy(&lh, lb, sizeof lh);
        const uint32_t expect = k + 1 < need ? media::kExtentsPerLeaf : di.nextents - k * media::kExtentsPerLeaf;
        if (!media::verify_block(lb, media::kLeafMagic) || lh.owner != i || lh.count != expect) {
          problem("inode " + std::to_string(i) + ": extent leaf " + std::to_string(leaf) + " is corrupt");
          ok_map = false;
          break;
        }
        ino->leaves.push_back(leaf);
        std::memcpy(ino->leaf_images.emplace_back().data(), lb, kBlockSize);
        for (uint32_t e = 0; e < lh.count; ++e) {
          media::DiskExtent de;
          std::memcpy(&de, lb + sizeof lh + e * sizeof de, sizeof de);
          exts.push_back(de);
        }
      }
    }
    uint64_t mapped = 0, prev_end = 0;
    for (size_t k = 0; ok_map && k < exts.size(); ++k) {
      const auto& de = exts[k];
      if (de.len == 0 || de.file_block >= (uint64_t{1} << 40) || (k > 0 && de.file_block < prev_end) ||
          (de.flags & ~media::kExtentUnwritten)) {
        problem("inode " + std::to_string(i) + ": extent " + std::to_string(k) + " is malformed or out of order");
        ok_map = false;
        break;
      }
      if (!use(i, de.dev_block, de.len, "extent", S_ISREG(di.mode))) { ok_map = false; break; }
      ino->extents[de.file_block] = Extent{de.file_block, de.dev_block, de.len,
                                           (de.flags & media::kExtentUnwritten) != 0, 0};
      prev_end = de.file_block + de.len;
      mapped += de.len;
    }
    if (!ok_map) continue;
    if (mapped != di.blocks)
      problem("inode " + std::to_string(i) + ": block count " + std::to_string(di.blocks) + " but extents map " + std::to_string(mapped));
    L->inodes[i] = std::move(ino);
  }

  // Directories.
  auto root_it = L->inodes.find(media::kRootIno);
  if (root_it == L->inodes.end() || !root_it->second->is_dir()) {
    problem("root directory is missing");
    return L;
  }
  if (root_it->second->parent != media::kRootIno) problem("root directory: parent pointer is not itself");
  std::unordered_map<uint64_t, uint32_t> names, subdirs;
  for (auto& [i, ino] : L->inodes) {
    if (!ino->is_dir()) continue;
    ino->dir = std::make_unique<Dir>();
    const uint64_t nblocks = ino->size / kBlockSize;
    if (ino->size % kBlockSize || nblocks != ino->blocks) {
      problem("directory " + std::to_string(i) + ": size does not match its blocks");
      continue;
    }
    for (uint64_t k = 0; k < nblocks; ++k) {
      const Extent* e = nullptr;
      if (auto it = ino->extents.upper_bound(k); it != ino->extents.begin() && std::prev(it)->second.file_end() > k)
        e = &std::prev(it)->second;
      if (!e || e->unwritten) {
        problem("directory " + std::to_string(i) + ": block " + std::to_string(k) + " is not mapped");
        break;
      }
      const std::byte* blk = base + (e->dev_block + k - e->file_block) * kBlockSize;
      media::BlockHeader h;
      std::memcpy(&h, blk, sizeof h);
      if (!media::verify_block(blk, media::kDirMagic) || h.owner != i) {
        problem("directory " + std::to_string(i) + ": block " + std::to_string(k) + " is corrupt");
        break;
      }
      ino->dir->blocks.emplace_back(blk, blk + kBlockSize);
      for (uint32_t s = 0; s < media::kDirentsPerBlock; ++s) {
        media::DiskDirent d;
        std::memcpy(&d, blk + sizeof h + s * sizeof d, sizeof d);
        const uint32_t slot = k * media::kDirentsPerBlock + s;
        if (d.ino == 0) {
          ino->dir->free_slots.insert(slot);
          continue;
        }
        std::string name(d.name, d.name_len);
        auto target = L->inodes.find(d.ino);
        if (d.name_len == 0 || name.find('/') != std::string::npos || name.find('\0') != std::string::npos ||
            name == "." || name == ".." || target == L->inodes.end() ||
            target->second->is_dir() != (d.is_dir != 0) || d.ino == media::kRootIno) {
          problem("directory " + std::to_string(i) + ": entry '" + name + "' is invalid or points to a free inode");
          continue;
        }
        if (!ino->dir->entries.emplace(name, DirEntryRef{d.ino, d.is_dir != 0, slot}).second) {
          problem("directory " + std::to_string(i) + ": duplicate entry '" + name + "'");
          continue;
        }
        ++names[d.ino];
        if (d.is_dir) {
          ++subdirs[i];
          if (target->second->parent != i)
            problem("directory " + std::to_string(d.ino) + ": parent pointer does not match its entry");
        }
      }
    }
  }
  for (auto& [i, ino] : L->inodes) {
    const uint32_t r = names[i];
    if (ino->is_dir()) {
      if (i == media::kRootIno ? r != 0 : r > 1) problem("directory " + std::to_string(i) + ": has " + std::to_string(r) + " names");
      if (ino->nlink != 0 && ino->nlink != 2 + subdirs[i])
        problem("directory " + std::to_string(i) + ": link count " + std::to_string(ino->nlink) + ", expected " + std::to_string(2 + subdirs[i]));
      if (ino->nlink != 0 && r == 0 && i != media::kRootIno) problem("directory " + std::to_string(i) + ": unreachable");
    } else if (ino->nlink != r && !(ino->nlink == 0 && r == 0)) {
      problem("inode " + std::to_string(i) + ": link count " + std::to_string(ino->nlink) + " but " + std::to_string(r) + " names");
    }
  }
  // The bitmap must say exactly which data blocks are in use, and the reference-count
  // table exactly which are shared and by how many extents.
  uint64_t mismatches = 0;
  const auto* table = g.has_refcounts() ? reinterpret_cast<const std::byte*>(base + g.refcount_start * kBlockSize) : nullptr;
  for (uint64_t b = data_lo; b < data_hi; ++b) {
    const bool marked = L->bitmap[b >> 3] & (1u << (b & 7));
    if (marked != (refs[b] != 0) && mismatches++ < 10)
      problem("block " + std::to_string(b) + (marked ? ": marked used but no file uses it" : ": used by inode " + std::to_string(owner[b]) + " but marked free"));
    media::RefCount rc = 0;
    if (table) std::memcpy(&rc, table + b * sizeof rc, sizeof rc);
    if (refs[b] >= 2 && !table) {
      if (mismatches++ < 10)
        problem("block " + std::to_string(b) + " is used by inode " + std::to_string(owner[b]) +
                " and another extent, and this image has no reference counts");
    } else if (rc != (refs[b] >= 2 ? refs[b] : 0)) {
      if (mismatches++ < 10)
        problem("block " + std::to_string(b) + ": reference count " + std::to_string(rc) + " but " +
                std::to_string(refs[b]) + " extent(s) use it");
    } else if (rc) {
      L->shared.emplace(b, rc);
    }
  }
  if (mismatches > 10) problem(std::to_string(mismatches - 10) + " more bitmap or reference-count mismatches");
  return L;
}

Result<std::unique_ptr<Volume>> Volume::mount(std::unique_ptr<device::Device> dev, const MountOptions& opt) {
  std::vector<std::string> problems;
  SDX_ASSIGN(auto L, load(*dev, &problems));
  if (!problems.empty())
    return fail(EUCLEAN, "refusing to mount " + dev->path() + ": " + problems.front() +
                             (problems.size() > 1 ? " (and " + std::to_string(problems.size() - 1) + " more)" : "") +
                             "; run syncdax fsck");
  std::unique_ptr<Volume> v(new Volume(std::move(dev), L->geo));
  v->inodes_ = std::move(L->inodes);
  v->free_inodes_ = std::move(L->free_inodes);
  v->bitmap_ = std::move(L->bitmap);
  v->shared_ = std::move(L->shared);
  for (uint64_t b = v->geo_.data_start; b < v->geo_.total_blocks;) {
    if (v->bitmap_[b >> 3] & (1u << (b & 7))) { ++b; continue; }
    uint64_t e = b;
    while (e < v->geo_.total_blocks && !(v->bitmap_[e >> 3] & (1u << (e & 7)))) ++e;
    v->alloc_.add_free(b, e - b);
    b = e;
  }
  v->journal_ = std::make_unique<journal::Journal>(*v->dev_, log_region(v->geo_), home_region(v->geo_), L->next_seq);
  Volume* self = v.get();
  v->journal_->on_commit([self](uint64_t seq) { self->release_freed(seq); });
  // Files unlinked while open when the last session ended are reclaimed now.
  std::vector<Inode*> orphans;
  for (auto& [i, ino] : v->inodes_)
    if (ino->nlink == 0) orphans.push_back(ino.get());
  if (!orphans.empty()) {
    {
      Lock l(v->mu_);
      journal::Handle h = v->journal_->start();
      for (Inode* o : orphans) v->evict(h, *o);
    }
    SDX_TRY(v->journal_->commit_all());
  }
  v->journal_->start_committer(opt.commit_interval_ms);
  v->mounted_ = true;
  return v;
}

Status Volume::unmount() {
  if (!mounted_) return ok();
  {
    Lock l(mu_);
    if (!handles_.empty()) return fail(EBUSY, "file system busy: " + std::to_string(handles_.size()) + " files still open");
  }
  journal_->stop_committer();
  SDX_TRY(journal_->commit_all());
  SDX_TRY(journal_->checkpoint());
  mounted_ = false;
  return ok();
}

Result<std::unique_ptr<device::Device>> Volume::abandon() {
  if (!mounted_) return fail(EINVAL, "file system is not mounted");
  {
    Lock l(mu_);
    if (!handles_.empty()) return fail(EBUSY, "file system busy: " + std::to_string(handles_.size()) + " files still open");
  }
  journal_->stop_committer();
  mounted_ = false;
  return std::move(dev_);
}

FsckReport Volume::fsck(device::Device& dev) {
  FsckReport r;
  // Replay the journal into a private copy: fsck only reads the image it checks.
  device::CrashImage copy{std::string(reinterpret_cast<const char*>(dev.bytes().data()), dev.size())};
  auto scratch = device::make_sim(copy);
  if (!scratch) return FsckReport{false, {"out of memory for a copy of the image"}};
  auto L = load(*scratch, &r.problems);
  if (!L) {
    r.usable = false;
    r.problems.insert(r.problems.begin(), L.error().message);
  }
  return r;
}

}  // namespace sdx::fs
