// Extent maps, allocation and their journal records.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "device/device.h"
#include "fs/volume.h"

namespace sdx::fs {

using media::kBlockSize;

bool Inode::is_dir() const { return S_ISDIR(mode); }
uint64_t Inode::datasync_seq() const { return std::max({alloc_seq, size_seq, remove_seq}); }

void Volume::touch(Inode& ino, bool mtime) {
  const int64_t t = now_ns();
  ino.ctime_ns = t;
  if (mtime) ino.mtime_ns = t;
}

// Data may not take the last blocks: splitting an extent or growing a directory must
// still find one, so those operations never fail half-way.
uint64_t Volume::metadata_reserve() const { return std::min<uint64_t>(64, geo_.data_blocks / 16); }

uint64_t Volume::data_block_limit() const { return geo_.data_start + geo_.data_blocks; }

Status Volume::log_inode(journal::Handle& h, Inode& ino) {
  media::DiskInode di{};
  di.mode = ino.mode;
  di.nlink = ino.nlink;
  di.size = ino.size;
  di.blocks = ino.blocks;
  di.atime_ns = ino.atime_ns;
  di.mtime_ns = ino.mtime_ns;
  di.ctime_ns = ino.ctime_ns;
  di.parent = ino.parent;
  di.extsize_blocks = ino.extsize_blocks;
  di.nextents = static_cast<uint32_t>(ino.extents.size());
  di.index_block = ino.index_block;
  if (ino.extents.size() <= media::kInlineExtents) {
    size_t i = 0;
    for (const auto& [fb, e] : ino.extents)
      di.inline_extents[i++] = {e.file_block, e.dev_block, static_cast<uint32_t>(e.len),
                                e.unwritten ? media::kExtentUnwritten : 0u};
  }
  media::seal(di);
  h.log_object(geo_.inode_start * kBlockSize + ino.ino * media::kInodeSize, di);
  ino.meta_seq = h.seq();
  return ok();
}

Status Volume::log_extents(journal::Handle& h, Inode& ino) {
  const size_t n = ino.extents.size();
  const size_t need = n <= media::kInlineExtents ? 0 : (n + media::kExtentsPerLeaf - 1) / media::kExtentsPerLeaf;
  if (need > media::kLeavesPerIndex) return fail(EFBIG, "file has too many extents");
  bool index_changed = false;
  while (ino.leaves.size() > need) {
    free_blocks(h, ino.leaves.back(), 1);
    ino.leaves.pop_back();
    ino.leaf_images.pop_back();
    index_changed = true;
  }
  if (need == 0 && ino.index_block) {
    free_blocks(h, ino.index_block, 1);
    ino.index_block = 0;
  }
  if (need > 0 && !ino.index_block) {
    SDX_ASSIGN(Run r, alloc_blocks(h, 0, 1, true));
    ino.index_block = r.start;
    index_changed = true;
  }
  while (ino.leaves.size() < need) {
    SDX_ASSIGN(Run r, alloc_blocks(h, ino.leaves.empty() ? ino.index_block + 1 : ino.leaves.back() + 1, 1, true));
    ino.leaves.push_back(r.start);
    ino.leaf_images.emplace_back();  // zeros, unlike any sealed leaf: always logged
    index_changed = true;
  }
  if (need == 0) return ok();  // inline in the inode
  auto it = ino.extents.begin();
  BlockImage img;  // on the stack: the fault path calls this and must not allocate
  for (size_t leaf = 0; leaf < need; ++leaf) {
    img.fill(std::byte{0});
    media::BlockHeader hdr{media::kLeafMagic, 0, 0, 0, ino.ino};
    for (uint32_t i = 0; i < media::kExtentsPerLeaf && it != ino.extents.end(); ++i, ++it) {
      const Extent& e = it->second;
      media::DiskExtent de{e.file_block, e.dev_block, static_cast<uint32_t>(e.len),
                           e.unwritten ? media::kExtentUnwritten : 0u};
      std::memcpy(img.data() + sizeof hdr + i * sizeof de, &de, sizeof de);
      ++hdr.count;
    }
    std::memcpy(img.data(), &hdr, sizeof hdr);
    media::seal_block(img.data());
    if (ino.leaf_images[leaf] != img) {
      h.log(ino.leaves[leaf] * kBlockSize, img);
      ino.leaf_images[leaf] = img;
    }
  }
  if (index_changed) {
    img.fill(std::byte{0});
    media::BlockHeader hdr{media::kIndexMagic, 0, static_cast<uint32_t>(need), 0, ino.ino};
    std::memcpy(img.data(), &hdr, sizeof hdr);
    std::memcpy(img.data() + sizeof hdr, ino.leaves.data(), need * sizeof(uint64_t));
    media::seal_block(img.data());
    h.log(ino.index_block * kBlockSize, img);
  }
  return ok();
}

void Volume::mark_bitmap(journal::Handle& h, uint64_t start, uint64_t len, bool used) {
  for (uint64_t b = start; b < start + len; ++b) {
    const uint8_t bit = uint8_t(1u << (b & 7));
    if (used) bitmap_[b >> 3] |= bit;
    else bitmap_[b >> 3] &= uint8_t(~bit);
  }
  const uint64_t first = start >> 3, last = (start + len - 1) >> 3;
  h.log(geo_.bitmap_start * kBlockSize + first,
        {reinterpret_cast<const std::byte*>(bitmap_.data() + first), last - first + 1});
}

// Error texts on the fault path stay within std::string's inline capacity (15): the
// SIGSEGV handler may build them and must not allocate.
Result<Run> Volume::alloc_blocks(journal::Handle& h, uint64_t goal, uint64_t want, bool metadata) {
  const uint64_t usable = usable_data_blocks();
  if (!metadata) {
    if (usable == 0) return fail(ENOSPC, "no space left");
    want = std::min(want, usable);
  }
  Run r = alloc_.alloc(goal, want);
  if (r.len == 0) return fail(ENOSPC, "no space left");
  mark_bitmap(h, r.start, r.len, true);
  return r;
}

void Volume::free_blocks(journal::Handle& h, uint64_t start, uint64_t len) {
  if (len == 0) return;
  mark_bitmap(h, start, len, false);
  h.revoke(start * kBlockSize, len * kBlockSize);
  // Reusable only once the freeing transaction is durable: before that a crash would
  // give the block back to its old owner while a new owner has written it.
  Lock l(freed_mu_);
  freed_.push_back({h.seq(), Run{start, len}});
}

void Volume::release_blocks(journal::Handle& h, uint64_t dev, uint64_t len) {
  for_each_share_run(dev, len, [&](uint64_t pos, uint64_t n, bool shared) {
    if (!shared) return free_blocks(h, pos, n);
    for (auto it = shared_.find(pos); it != shared_.end() && it->first < pos + n;)
      it = --it->second >= 2 ? std::next(it) : shared_.erase(it);
    log_refcounts(h, pos, n);
  });
}

void Volume::add_refs(journal::Handle& h, uint64_t dev, uint64_t len) {
  for (uint64_t b = dev; b < dev + len; ++b) ++shared_.try_emplace(b, 1).first->second;
  log_refcounts(h, dev, len);
}

void Volume::log_refcounts(journal::Handle& h, uint64_t dev, uint64_t len) {
  std::array<media::RefCount, 512> buf;  // on the stack: copy-on-write faults get here
  auto it = shared_.lower_bound(dev);
  for (uint64_t pos = dev, end = dev + len; pos < end;) {
    const uint64_t k = std::min<uint64_t>(buf.size(), end - pos);
    for (uint64_t i = 0; i < k; ++i) {
      while (it != shared_.end() && it->first < pos + i) ++it;
      buf[i] = it != shared_.end() && it->first == pos + i ? it->second : 0;
    }
    h.log(geo_.refcount_start * kBlockSize + pos * sizeof(media::RefCount),
          {reinterpret_cast<const std::byte*>(buf.data()), k * sizeof(media::RefCount)});
    pos += k;
  }
}

Volume::ShareRun Volume::share_run(uint64_t dev, uint64_t len) const {
  auto it = shared_.lower_bound(dev);
  if (it == shared_.end() || it->first != dev) return {it == shared_.end() ? len : std::min(len, it->first - dev), false};
  uint64_t n = 0;
  while (n < len && it != shared_.end() && it->first == dev + n) ++n, ++it;
  return {n, true};
}

uint64_t Volume::shared_blocks_in(const Inode& ino, uint64_t fb, uint64_t end_fb) const {
  if (shared_.empty()) return 0;
  uint64_t count = 0;
  for_each_piece(ino, fb, end_fb, [&](const Piece& p) {
    for (auto s = shared_.lower_bound(p.dev_block); s != shared_.end() && s->first < p.dev_block + p.len; ++s) ++count;
  });
  return count;
}

uint64_t Volume::usable_data_blocks() {
  {
    Lock l(freed_mu_);
    for (const Run& r : released_) alloc_.add_free(r.start, r.len);
    released_.clear();
  }
  const uint64_t avail = alloc_.free_blocks(), reserve = metadata_reserve();
  return avail > reserve ? avail - reserve : 0;
}

void Volume::release_freed(uint64_t committed) {
  Lock l(freed_mu_);
  auto keep = std::partition(freed_.begin(), freed_.end(),
                             [&](const auto& f) { return f.first > committed; });
  for (auto it = keep; it != freed_.end(); ++it) released_.push_back(it->second);
  freed_.erase(keep, freed_.end());
}

void Volume::set_layout_hook(LayoutHook hook, void* ctx) {
  Lock l(mu_);
  layout_hook_ = hook;
  layout_ctx_ = ctx;
}

void Volume::layout_changed(Inode& ino, uint64_t fb, uint64_t end_fb, LayoutChange how) {
  // Only an allocation leaves installed device blocks right; everything else moves
  // remove_gen so that a racing fault installs again.
  (how == LayoutChange::kAllocated ? ino.alloc_gen : ino.remove_gen).fetch_add(1, std::memory_order_seq_cst);
  if (layout_hook_) layout_hook_(layout_ctx_, ino, fb * kBlockSize, (end_fb - fb) * kBlockSize, how);
}

const Extent* Volume::find_extent(const Inode& ino, uint64_t fb) const {
  auto it = ino.extents.upper_bound(fb);
  if (it == ino.extents.begin()) return nullptr;
  --it;
  return fb < it->second.file_end() ? &it->second : nullptr;
}

void Volume::insert_extent(Inode& ino, Extent e) {
  auto next = ino.extents.lower_bound(e.file_block);
  if (next != ino.extents.begin()) {
    auto prev = std::prev(next);
    const Extent& p = prev->second;
    if (p.file_end() == e.file_block && p.dev_block + p.len == e.dev_block &&
        p.unwritten == e.unwritten && p.len + e.len <= UINT32_MAX) {
      e = Extent{p.file_block, p.dev_block, p.len + e.len, e.unwritten, std::max(p.seq, e.seq)};
      ino.extents.erase(prev);
    }
  }
  next = ino.extents.lower_bound(e.file_block);
  if (next != ino.extents.end()) {
    const Extent& n = next->second;
    if (e.file_end() == n.file_block && e.dev_block + e.len == n.dev_block &&
        e.unwritten == n.unwritten && e.len + n.len <= UINT32_MAX) {
      e.len += n.len;
      e.seq = std::max(e.seq, n.seq);
      ino.extents.erase(next);
    }
  }
  ino.extents[e.file_block] = e;
}

void Volume::remove_range(journal::Handle& h, Inode& ino, uint64_t fb, uint64_t end_fb, LayoutChange how) {
  auto it = ino.extents.upper_bound(fb);
  if (it != ino.extents.begin() && std::prev(it)->second.file_end() > fb) --it;
  while (it != ino.extents.end() && it->second.file_block < end_fb) {
    Extent e = it->second;
    it = ino.extents.erase(it);
    const uint64_t cut_lo = std::max(fb, e.file_block), cut_hi = std::min(end_fb, e.file_end());
    if (e.file_block < cut_lo)
      ino.extents[e.file_block] = Extent{e.file_block, e.dev_block, cut_lo - e.file_block, e.unwritten, e.seq};
    if (cut_hi < e.file_end()) {
      const uint64_t skip = cut_hi - e.file_block;
      ino.extents[cut_hi] = Extent{cut_hi, e.dev_block + skip, e.len - skip, e.unwritten, e.seq};
    }
    layout_changed(ino, cut_lo, cut_hi, how);
    release_blocks(h, e.dev_block + (cut_lo - e.file_block), cut_hi - cut_lo);
    ino.blocks -= cut_hi - cut_lo;
    ino.remove_seq = h.seq();
    it = ino.extents.lower_bound(cut_hi);
  }
}

void Volume::set_unwritten(journal::Handle& h, Inode& ino, uint64_t fb, uint64_t end_fb, bool unwritten,
                           Fill fill) {
  SafeVector<Extent> changed;  // merged in after the walk, which they would disturb
  auto it = ino.extents.upper_bound(fb);
  if (it != ino.extents.begin() && std::prev(it)->second.file_end() > fb) --it;
  while (it != ino.extents.end() && it->second.file_block < end_fb) {
    Extent e = it->second;
    if (e.unwritten == unwritten) { ++it; continue; }
    it = ino.extents.erase(it);
    const uint64_t lo = std::max(fb, e.file_block), hi = std::min(end_fb, e.file_end());
    if (e.file_block < lo)
      ino.extents[e.file_block] = Extent{e.file_block, e.dev_block, lo - e.file_block, e.unwritten, e.seq};
    if (hi < e.file_end())
      ino.extents[hi] = Extent{hi, e.dev_block + (hi - e.file_block), e.file_end() - hi, e.unwritten, e.seq};
    const uint64_t dev = e.dev_block + (lo - e.file_block);
    // Written blocks must hold zeros before the mapping that exposes them is durable.
    if (!unwritten && fill == Fill::kZero) dev_->zero_nodrain(dev_->bytes().data() + dev * kBlockSize, (hi - lo) * kBlockSize);
    changed.push_back(Extent{lo, dev, hi - lo, unwritten, h.seq()});
    it = ino.extents.lower_bound(hi);
  }
  for (const Extent& e : changed) {
    insert_extent(ino, e);
    layout_changed(ino, e.file_block, e.file_end(), unwritten ? LayoutChange::kRemoved : LayoutChange::kAllocated);
  }
  if (!changed.empty()) ino.alloc_seq = h.seq();
}

Status Volume::allocate_range(journal::Handle& h, Inode& ino, uint64_t fb, uint64_t end_fb, bool unwritten) {
  Status st;
  uint64_t pos = fb;
  while (pos < end_fb && st) {
    auto next = ino.extents.upper_bound(pos);
    if (next != ino.extents.begin()) {
      const Extent& p = std::prev(next)->second;
      if (pos < p.file_end()) { pos = p.file_end(); continue; }
    }
    const uint64_t hole_end = std::min(end_fb, next == ino.extents.end() ? end_fb : next->second.file_block);
    uint64_t goal = 0;
    if (next != ino.extents.begin()) {
      const Extent& p = std::prev(next)->second;
      goal = p.dev_block + p.len + (pos - p.file_end());
      if (goal >= data_block_limit()) goal = 0;
    }
    while (pos < hole_end) {
      auto r = alloc_blocks(h, goal, hole_end - pos, false);
      if (!r) { st = std::unexpected(r.error()); break; }
      if (!unwritten) dev_->zero_nodrain(dev_->bytes().data() + r->start * kBlockSize, r->len * kBlockSize);
      insert_extent(ino, Extent{pos, r->start, r->len, unwritten, h.seq()});
      layout_changed(ino, pos, pos + r->len, LayoutChange::kAllocated);
      ino.blocks += r->len;
      ino.alloc_seq = h.seq();
      pos += r->len;
      goal = r->start + r->len;
    }
  }
  // Whatever was allocated before a failure is kept and logged: the state stays consistent.
  SDX_TRY(log_extents(h, ino));
  return st;
}

Status Volume::zero_bytes(Inode& ino, uint64_t off, uint64_t len) {
  uint64_t pos = off;
  const uint64_t end = off + len;
  while (pos < end) {
    const uint64_t fb = pos / kBlockSize;
    const uint64_t in_block = std::min(end, (fb + 1) * kBlockSize) - pos;
    if (const Extent* e = find_extent(ino, fb); e && !e->unwritten)
      dev_->zero_nodrain(dev_->bytes().data() + (e->dev_block + fb - e->file_block) * kBlockSize + pos % kBlockSize, in_block);
    pos += in_block;
  }
  return ok();
}

uint64_t Volume::file_size(Inode& ino) {
  Lock l(mu_);
  return ino.size;
}

uint64_t Volume::range_dirty_seq(Inode& ino, uint64_t off, uint64_t len) {
  Lock l(mu_);
  uint64_t seq = std::max(ino.size_seq, ino.remove_seq);
  const uint64_t fb = off / kBlockSize, end_fb = (off + std::max<uint64_t>(len, 1) - 1) / kBlockSize + 1;
  auto it = ino.extents.upper_bound(fb);
  if (it != ino.extents.begin()) --it;
  for (; it != ino.extents.end() && it->second.file_block < end_fb; ++it)
    if (it->second.file_end() > fb) seq = std::max(seq, it->second.seq);
  return seq > journal_->committed_seq() ? seq : 0;
}

// Map file bytes [off, off+len) for a write starting at off: fill the hole at off
// (rounded to the extent-size hint) or take the unwritten extent there.
Status Volume::allocate_for_write(journal::Handle& h, Inode& ino, uint64_t off, uint64_t len) {
  const uint64_t fb = off / kBlockSize;
  const uint64_t end_fb = (off + len - 1) / kBlockSize + 1;
  if (!find_extent(ino, fb)) {
    auto next = ino.extents.upper_bound(fb);
    const uint64_t hole_end = next == ino.extents.end() ? UINT64_MAX : next->second.file_block;
    const uint64_t prev_end = next == ino.extents.begin() ? 0 : std::prev(next)->second.file_end();
    uint64_t a = fb, b = std::min(end_fb, hole_end);
    if (const uint64_t hint = ino.extsize_blocks; hint > 1) {
      a = std::max(prev_end, fb - fb % hint);
      b = std::min(hole_end, (end_fb + hint - 1) / hint * hint);
    }
    Status st = allocate_range(h, ino, a, b, true);
    if (!find_extent(ino, fb)) return nothing_allocated_at(h, ino, st);
  }
  // What the caller will not overwrite whole must read as zeros once written.
  const Extent* e = find_extent(ino, fb);
  const uint64_t ext_end = std::min(end_fb, e->file_end());
  if (off % kBlockSize) set_unwritten(h, ino, fb, fb + 1, false);
  if ((off + len) % kBlockSize && ext_end == end_fb) set_unwritten(h, ino, end_fb - 1, end_fb, false);
  SDX_TRY(log_extents(h, ino));
  return log_inode(h, ino);
}

// The block a write needs first got none: what was allocated stays, logged, so the
// state is consistent, and the reason is the caller's error.
Status Volume::nothing_allocated_at(journal::Handle& h, Inode& ino, const Status& st) {
  SDX_TRY(log_inode(h, ino));
  return st ? fail(ENOSPC, "no space left") : st;
}

// A write fault maps blocks straight into a process, so every block of [fb, end_fb) it
// prepares is its own (copied if shared), allocated, zeroed and written. Like the
// kernel's PMD fault it may ask for a whole window at once; running out of space
// part-way fails only if the first block (fb) got nothing -- the caller asks again for
// the faulting block if it lies beyond what was prepared.
Status Volume::allocate_for_fault(journal::Handle& h, Inode& ino, uint64_t fb, uint64_t end_fb) {
  // Shared blocks first, all or nothing (a shared block must never be zeroed in
  // place); short of space for the window, the first block alone.
  if (!unshare(h, ino, fb, end_fb)) {
    end_fb = fb + 1;
    SDX_TRY(unshare(h, ino, fb, end_fb));
  }
  Status st = allocate_range(h, ino, fb, end_fb, false);
  if (!find_extent(ino, fb)) return nothing_allocated_at(h, ino, st);
  set_unwritten(h, ino, fb, end_fb, false);
  SDX_TRY(log_extents(h, ino));
  return log_inode(h, ino);
}

// Whether a write fault can map [fb, end_fb) writable as it is: all written, none shared.
bool Volume::range_mapped_written(const Inode& ino, uint64_t fb, uint64_t end_fb) const {
  for (uint64_t pos = fb; pos < end_fb;) {
    const Extent* e = find_extent(ino, pos);
    if (!e || e->unwritten) return false;
    pos = e->file_end();
  }
  return shared_blocks_in(ino, fb, end_fb) == 0;
}

Result<Iomap> Volume::iomap_begin(Inode& ino, uint64_t off, uint64_t len, unsigned intent) {
  Lock l(mu_);
  const uint64_t fb = off / kBlockSize;
  const bool write = intent & kIomapWrite;
  const uint64_t eof_fb = (ino.size + kBlockSize - 1) / kBlockSize;
  if ((intent & kIomapFault) && fb >= eof_fb) return fail(ENXIO, "beyond EOF");  // short: no heap for the message (SSO)
  Iomap m;
  const Extent* e = find_extent(ino, fb);
  if (write && (intent & kIomapFault)) {
    const uint64_t end = std::min(eof_fb, (off + std::max<uint64_t>(len, 1) - 1) / kBlockSize + 1);
    if (!range_mapped_written(ino, fb, end)) {
      journal::Handle h = journal_->start();
      Status st = allocate_for_fault(h, ino, fb, end);
      dev_->fence();  // the zeros are durable before the transaction mapping them commits
      SDX_TRY(st);
      m.flags |= kIomapNew;
      e = find_extent(ino, fb);
    }
  }
  if (write && !(intent & kIomapFault)) {
    // Copy-on-write: the writer gets blocks of its own before it stores. (A fault's
    // window was made the writer's own above.)
    const uint64_t end_fb = (off + std::max<uint64_t>(len, 1) - 1) / kBlockSize + 1;
    if (shared_blocks_in(ino, fb, end_fb)) {
      journal::Handle h = journal_->start();
      Status st = unshare(h, ino, fb, end_fb);
      dev_->fence();  // the copies are durable before the transaction mapping them commits
      SDX_TRY(st);
      e = find_extent(ino, fb);
    }
  }
  // An unwritten extent needs no change for a write that covers its blocks whole.
  const bool whole_blocks = off % kBlockSize == 0 && (off + len) % kBlockSize == 0;
  if (write && !(intent & kIomapFault) && (!e || (e->unwritten && !whole_blocks))) {
    journal::Handle h = journal_->start();
    Status st = allocate_for_write(h, ino, off, std::max<uint64_t>(len, 1));
    // Zeroed blocks are durable before the transaction mapping them as written can
    // commit, on the error paths too (a partial allocation is kept).
    dev_->fence();
    SDX_TRY(st);
    m.flags |= kIomapNew;
    e = find_extent(ino, fb);
  }
  m.alloc_gen = ino.alloc_gen.load(std::memory_order_seq_cst);
  m.remove_gen = ino.remove_gen.load(std::memory_order_seq_cst);
  if (!e) {
    auto next = ino.extents.upper_bound(fb);
    const uint64_t hole_end = next == ino.extents.end() ? (UINT64_MAX / kBlockSize) : next->second.file_block;
    m.type = IomapType::kHole;
    m.offset = fb * kBlockSize;
    m.length = (hole_end - fb) * kBlockSize;
    return m;
  }
  m.type = e->unwritten ? IomapType::kUnwritten : IomapType::kMapped;
  m.offset = fb * kBlockSize;
  const uint64_t dev = e->dev_block + (fb - e->file_block);
  // One answer is all shared or all not: a caller may map it writable only if not.
  const ShareRun run = share_run(dev, e->file_end() - fb);
  m.length = run.len * kBlockSize;
  if (run.shared) m.flags |= kIomapShared;
  m.dev_offset = dev * kBlockSize;
  const uint64_t seq = std::max({e->seq, ino.size_seq, ino.remove_seq});
  if (seq > journal_->committed_seq()) {
    m.flags |= kIomapDirty;
    m.seq = seq;
  }
  return m;
}

Status Volume::iomap_end(Inode& ino, uint64_t off, uint64_t written, unsigned intent) {
  if (!(intent & kIomapWrite) || written == 0) return ok();
  Lock l(mu_);
  journal::Handle h = journal_->start();
  // Blocks left unwritten by iomap_begin now hold the caller's durable data.
  set_unwritten(h, ino, off / kBlockSize, (off + written - 1) / kBlockSize + 1, false, Fill::kHasData);
  SDX_TRY(log_extents(h, ino));
  if (off + written > ino.size) {
    ino.size = off + written;
    ino.size_seq = h.seq();
  }
  touch(ino, true);
  return log_inode(h, ino);
}

}  // namespace sdx::fs
