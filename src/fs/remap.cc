// Layout changes that move or share blocks while the file may be mapped: reflink
// (clone, dedupe), copy-on-write, defragmentation. They follow the seed's safe
// remapping: 1) block page faults -- the inode's io lock, exclusive, which every fault
// takes shared; 2) write back the range; 3) unmap it from every mapping -- the layout
// hook, after which a store faults and waits; 4) remap in one transaction; 5) unblock.
// A synchronous mapping's next fault then finds the new mapping DIRTY and commits it
// before the page becomes writable, so no store can land in a block the file no
// longer maps.
#include <fcntl.h>

#include <algorithm>
#include <cstring>

#include "device/device.h"
#include "fs/volume.h"

namespace sdx::fs {

using media::kBlockSize;

namespace {

// Blocks remapped per transaction: a clone's reference-count records stay far below
// the smallest journal's transaction limit.
constexpr uint64_t kRemapChunk = 1024;
// Blocks a defragmentation moves per step, and so the longest copy a store can wait
// for. defrag_bench's writer (random 64 B stores over 1 GiB) kept 0.34 of its
// throughput with 2 MiB steps and 0.67 with 512 KiB ones: it waits on nearly every
// step, so the step's copy, not the per-step commit, is what it pays for.
constexpr uint64_t kMoveChunk = (512u << 10) / kBlockSize;

// The io locks of one or two inodes, exclusive, in inode order (so two remaps in
// opposite directions cannot deadlock).
class PairLock {
 public:
  PairLock(Inode& a, Inode& b) : first_(a.ino <= b.ino ? a : b), second_(a.ino <= b.ino ? b : a) {
    first_.io.lock();
    if (&second_ != &first_) second_.io.lock();
  }
  ~PairLock() {
    if (&second_ != &first_) second_.io.unlock();
    first_.io.unlock();
  }
  PairLock(const PairLock&) = delete;
  PairLock& operator=(const PairLock&) = delete;

 private:
  Inode& first_;
  Inode& second_;
};

}  // namespace

void Volume::replace_blocks(journal::Handle& h, Inode& ino, uint64_t fb, uint64_t n, uint64_t dev) {
  SafeVector<Extent> pieces;  // a copy-on-write fault gets here: no heap
  for_each_piece(ino, fb, fb + n, [&](const Piece& p) {
    pieces.push_back(Extent{p.file_block, dev + (p.file_block - fb), p.len, p.unwritten, h.seq()});
  });
  remove_range(h, ino, fb, fb + n, LayoutChange::kMoved);
  for (const Extent& e : pieces) {
    insert_extent(ino, e);
    ino.blocks += e.len;
  }
  ino.alloc_seq = h.seq();
}

Status Volume::unshare(journal::Handle& h, Inode& ino, uint64_t fb, uint64_t end_fb) {
  const uint64_t need = shared_blocks_in(ino, fb, end_fb);
  if (need == 0) return ok();
  if (need > usable_data_blocks()) return fail(ENOSPC, "no space left");
  for (uint64_t pos = fb; pos < end_fb;) {
    const Extent* e = find_extent(ino, pos);
    if (!e) {
      auto next = ino.extents.upper_bound(pos);
      if (next == ino.extents.end()) break;
      pos = next->second.file_block;
      continue;
    }
    const uint64_t old = e->dev_block + (pos - e->file_block);
    const ShareRun run = share_run(old, std::min(end_fb, e->file_end()) - pos);
    uint64_t n = run.len;
    if (run.shared) {
      const bool unwritten = e->unwritten;
      SDX_ASSIGN(Run r, alloc_blocks(h, 0, n, false));  // cannot fail: counted above
      n = r.len;
      std::byte* base = dev_->bytes().data();
      if (!unwritten) dev_->copy_nodrain(base + r.start * kBlockSize, base + old * kBlockSize, n * kBlockSize);
      replace_blocks(h, ino, pos, n, r.start);
    }
    pos += n;
  }
  return log_extents(h, ino);
}

namespace {

Status check_remap(const Handle* src, uint64_t src_off, const Handle* dst, uint64_t dst_off, const char* what) {
  if (!src->readable()) return fail(EBADF, std::string(what) + ": source not open for reading");
  if (!dst->writable() || (dst->flags & O_APPEND))
    return fail(EBADF, std::string(what) + ": destination not open for writing, or opened O_APPEND");
  if (src->inode->is_dir() || dst->inode->is_dir()) return fail(EISDIR, std::string(what) + ": is a directory");
  if (src_off % kBlockSize || dst_off % kBlockSize)
    return fail(EINVAL, std::string(what) + ": offsets must be multiples of the block size (4096)");
  return ok();
}

}  // namespace

// FICLONERANGE's rules (Linux's generic_remap_checks), with both io locks held.
Result<uint64_t> Volume::remap_length(Inode& si, uint64_t src_off, Inode& di, uint64_t dst_off, uint64_t len,
                                      const char* what) {
  Lock l(mu_);
  const uint64_t ssize = si.size, dsize = di.size;
  if (src_off > ssize) return fail(EINVAL, std::string(what) + ": source offset beyond end of file");
  if (len == 0) len = ssize - src_off;
  if (len > ssize - src_off) return fail(EINVAL, std::string(what) + ": source range beyond end of file");
  if (dst_off > kMaxFileSize || len > kMaxFileSize - dst_off) return fail(EFBIG, std::string(what) + ": file too large");
  if (len % kBlockSize) {
    if (src_off + len != ssize)
      return fail(EINVAL, std::string(what) + ": length must be a multiple of 4096 unless the range ends at the source's end of file");
    if (dst_off + len < dsize)
      return fail(EINVAL, std::string(what) + ": cannot share a partial last block into the middle of the destination");
  }
  const uint64_t nb = (len + kBlockSize - 1) / kBlockSize;
  if (&si == &di && src_off / kBlockSize < dst_off / kBlockSize + nb && dst_off / kBlockSize < src_off / kBlockSize + nb)
    return fail(EINVAL, std::string(what) + ": source and destination ranges overlap");
  return len;
}

// Share src's blocks [sfb, sfb+nb) at dst's [dfb, dfb+nb); both io locks held.
Status Volume::share_locked(Inode& si, uint64_t sfb, Inode& di, uint64_t dfb, uint64_t nb, uint64_t new_size) {
  // 2+3: stores through src's mappings stop (its blocks stay; a later store copies
  // them), and what was stored is written back: dst's readers see src's bytes, and
  // they must be as durable for dst as for src.
  {
    Lock l(mu_);
    layout_changed(si, sfb, sfb + nb, LayoutChange::kShared);
    for_each_piece(si, sfb, sfb + nb, [&](const Piece& p) {
      if (!p.unwritten) dev_->flush(dev_->bytes().data() + p.dev_block * kBlockSize, p.len * kBlockSize);
    });
  }
  dev_->fence();
  // 4: remap, a chunk per transaction: a crash leaves a prefix shared, as XFS does.
  for (uint64_t done = 0; done < nb;) {
    const uint64_t n = std::min(kRemapChunk, nb - done);
    Lock l(mu_);
    journal::Handle h = journal_->start();
    std::vector<Piece> pieces;  // collected first: src and dst may be one extent map
    for_each_piece(si, sfb + done, sfb + done + n, [&](const Piece& p) { pieces.push_back(p); });
    remove_range(h, di, dfb + done, dfb + done + n);
    for (const Piece& p : pieces) {
      insert_extent(di, Extent{dfb + (p.file_block - sfb), p.dev_block, p.len, p.unwritten, h.seq()});
      di.blocks += p.len;
      add_refs(h, p.dev_block, p.len);
    }
    di.alloc_seq = h.seq();
    SDX_TRY(log_extents(h, di));
    done += n;
    if (done == nb && new_size > di.size) {
      di.size = new_size;
      di.size_seq = h.seq();
    }
    touch(di, true);
    SDX_TRY(log_inode(h, di));
  }
  return ok();
}

Status Volume::clone_range(Handle* src, uint64_t src_off, Handle* dst, uint64_t dst_off, uint64_t len) {
  SDX_TRY(check_remap(src, src_off, dst, dst_off, "clone"));
  if (!geo_.has_refcounts())
    return fail(EOPNOTSUPP, "clone: this image has no reference counts (on-media version 1); "
                            "copy its files to a new syncdax mkfs image to share blocks");
  Inode& si = *src->inode;
  Inode& di = *dst->inode;
  PairLock locks(si, di);  // 1: faults on both files wait
  SDX_ASSIGN(len, remap_length(si, src_off, di, dst_off, len, "clone"));
  if (len == 0) return ok();
  return share_locked(si, src_off / kBlockSize, di, dst_off / kBlockSize, (len + kBlockSize - 1) / kBlockSize,
                      dst_off + len);
}

Result<bool> Volume::dedupe_range(Handle* src, uint64_t src_off, Handle* dst, uint64_t dst_off, uint64_t len) {
  SDX_TRY(check_remap(src, src_off, dst, dst_off, "dedupe"));
  if (!geo_.has_refcounts())
    return fail(EOPNOTSUPP, "dedupe: this image has no reference counts (on-media version 1)");
  Inode& si = *src->inode;
  Inode& di = *dst->inode;
  PairLock locks(si, di);
  SDX_ASSIGN(len, remap_length(si, src_off, di, dst_off, len, "dedupe"));
  {
    Lock l(mu_);
    if (dst_off + len > di.size) return fail(EINVAL, "dedupe: destination range beyond end of file");
  }
  std::vector<std::byte> a(std::min<uint64_t>(len, 1u << 20)), b(a.size());
  for (uint64_t done = 0; done < len;) {
    const uint64_t n = std::min<uint64_t>(a.size(), len - done);
    read_locked(si, {a.data(), n}, src_off + done);
    read_locked(di, {b.data(), n}, dst_off + done);
    if (std::memcmp(a.data(), b.data(), n) != 0) return false;
    done += n;
  }
  if (len == 0) return true;
  SDX_TRY(share_locked(si, src_off / kBlockSize, di, dst_off / kBlockSize, (len + kBlockSize - 1) / kBlockSize, 0));
  return true;
}

Result<std::vector<ExtentInfo>> Volume::extents(Handle* hd) {
  Inode& ino = *hd->inode;
  ReadLock io(ino.io);
  Lock l(mu_);
  std::vector<ExtentInfo> out;
  for (const auto& [fb, e] : ino.extents)
    for_each_share_run(e.dev_block, e.len, [&](uint64_t dev, uint64_t n, bool shared) {
      out.push_back({(e.file_block + (dev - e.dev_block)) * kBlockSize, n * kBlockSize, dev * kBlockSize,
                     e.unwritten, shared});
    });
  return out;
}

// Defragment: for each run of the file without holes, reserve contiguous free space
// and move the run's unshared blocks there, a fault window at a time, each move the
// five steps. Shared blocks stay (moving them would unshare them).
Result<DefragStats> Volume::defragment(Handle* hd) {
  if (!hd->writable()) return fail(EBADF, "defragment: file not open for writing");
  Inode& ino = *hd->inode;
  if (ino.is_dir()) return fail(EISDIR, "defragment: is a directory");
  DefragStats stats;
  LayoutHook refill;
  void* refill_ctx;
  {
    Lock l(mu_);
    refill = layout_hook_;
    refill_ctx = layout_ctx_;
  }
  // The file's runs of unshared blocks without holes, as they are now; each chunk is
  // looked at again when it moves.
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // (first file block, blocks)
  {
    ReadLock io(ino.io);
    Lock l(mu_);
    stats.extents_before = ino.extents.size();
    // Runs end at holes and at shared blocks: those stay, so nothing across them can
    // become contiguous.
    for (const auto& [fb, e] : ino.extents)
      for_each_share_run(e.dev_block, e.len, [&](uint64_t dev, uint64_t n, bool shared) {
        if (shared) return;
        const uint64_t at = e.file_block + (dev - e.dev_block);
        if (!runs.empty() && runs.back().first + runs.back().second == at) runs.back().second += n;
        else runs.push_back({at, n});
      });
  }
  // From the end of the file backwards: a move merges extents, and the extent leaves
  // after the merge point shift and are logged again; working backwards keeps that to
  // the few leaves at the end instead of every leaf at every step.
  for (auto run = runs.rbegin(); run != runs.rend(); ++run) {
    const auto [run_fb, run_len] = *run;
    for (uint64_t left = run_len; left > 0;) {
      // The target for the last blocks of what is left of the run, reserved in the free
      // index only: the bitmap marks each part used in the transaction that maps it,
      // so a crash leaks nothing.
      Run target;
      uint64_t last_len = 0;
      {
        Lock l(mu_);
        target = alloc_.alloc(0, std::min(left, usable_data_blocks()));
        if (const Extent* e = find_extent(ino, run_fb + left - 1))
          last_len = run_fb + left - std::max(e->file_block, run_fb);
        // No better than what is there (or no space): leave the extent where it is.
        if (target.len <= last_len || last_len == 0) {
          if (target.len) alloc_.add_free(target.start, target.len);
          if (target.len == 0) break;
          left -= std::min(left, std::max<uint64_t>(last_len, 1));
          continue;
        }
      }
      const uint64_t lo = run_fb + left - target.len;  // file block target.start receives
      std::vector<char> taken(target.len, 0);
      Status st;
      for (uint64_t hi = run_fb + left; hi > lo && st;) {
        const uint64_t from = std::max(lo, (hi - 1) / kMoveChunk * kMoveChunk);
        st = move_chunk(ino, from, hi - from, target.start + (from - lo), {taken.data() + (from - lo), hi - from},
                        &stats.blocks_moved);
        // The move is committed before faults come back: the writers' next faults (or
        // the refill on their behalf) find nothing left to commit.
        if (st) st = journal_->commit_all();
        if (st && refill) refill(refill_ctx, ino, from * kBlockSize, (hi - from) * kBlockSize, LayoutChange::kRefill);
        hi = from;
      }
      {
        // What no piece took (holes or shared blocks appeared meanwhile, or an error)
        // goes back to the free index.
        Lock l(mu_);
        for (uint64_t i = 0; i < target.len;) {
          if (taken[i]) { ++i; continue; }
          uint64_t j = i;
          while (j < target.len && !taken[j]) ++j;
          alloc_.add_free(target.start + i, j - i);
          i = j;
        }
      }
      SDX_TRY(st);
      left -= target.len;
    }
  }
  SDX_TRY(fsync(hd, true));
  Lock l(mu_);
  stats.extents_after = ino.extents.size();
  return stats;
}

// Move file blocks [fb, fb+n) to device blocks [target, target+n) (reserved, free):
// the five steps for one chunk.
Status Volume::move_chunk(Inode& ino, uint64_t fb, uint64_t n, uint64_t target, std::span<char> taken,
                          uint64_t* moved) {
  WriteLock io(ino.io);  // 1: faults on this file wait until we are done
  std::vector<Piece> pieces;
  {
    Lock l(mu_);
    for_each_piece(ino, fb, fb + n, [&](const Piece& p) {
      for_each_share_run(p.dev_block, p.len, [&](uint64_t dev, uint64_t k, bool shared) {
        if (!shared) pieces.push_back(Piece{p.file_block + (dev - p.dev_block), dev, k, p.unwritten});
      });
    });
    // 3: unmap from every mapping before the copy, so no store reaches the old block
    // after it was copied (a store now faults, and waits for our io lock).
    layout_changed(ino, fb, fb + n, LayoutChange::kMoved);
  }
  if (pieces.empty()) return ok();
  // 2: write back the range where it is, then copy it. Until the remap commits, the
  // durable metadata maps the old blocks, but a synchronous writer's persist already
  // flushes the new ones (it looks the block up in memory): a store that reached an
  // old block before the move, still in the CPU cache, must be durable there too, or
  // a crash before the commit loses a store its writer acknowledged. The copy carries
  // every store, flushed or not (also what non-synchronous mappings stored), into the
  // new place, durable before the transaction that maps it can commit.
  std::byte* base = dev_->bytes().data();
  for (const Piece& p : pieces) {
    if (p.unwritten) continue;
    dev_->flush(base + p.dev_block * kBlockSize, p.len * kBlockSize);
    dev_->copy_nodrain(base + (target + p.file_block - fb) * kBlockSize, base + p.dev_block * kBlockSize,
                       p.len * kBlockSize);
  }
  dev_->fence();
  // 4: remap in one transaction; the old blocks are reusable once it is durable.
  Lock l(mu_);
  journal::Handle h = journal_->start();
  for (const Piece& p : pieces) {
    mark_bitmap(h, target + p.file_block - fb, p.len, true);
    replace_blocks(h, ino, p.file_block, p.len, target + p.file_block - fb);
    std::fill_n(taken.begin() + (p.file_block - fb), p.len, 1);
    *moved += p.len;
  }
  SDX_TRY(log_extents(h, ino));
  return log_inode(h, ino);
  // 5: the io lock goes; a synchronous mapping's fault commits the remap first.
}

}  // namespace sdx::fs
