#include "journal/journal.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>

#include "common/crc32c.h"
#include "common/safe_alloc.h"
#include "device/device.h"

namespace sdx::journal {

namespace {

constexpr uint64_t kHeaderMagic = 0x4c4e524a58445300ull;  // "\0SDXJRNL"
constexpr uint32_t kTxMagic = 0x4e58544a;                 // "JTXN"
constexpr uint64_t kHeaderBytes = 4096;

struct JHeader {
  uint64_t magic;
  uint64_t start_seq;  // the first transaction at log position 0; older ones are stale
  uint32_t checksum;
  uint32_t pad;
};

struct TxHeader {
  uint32_t magic;
  uint32_t nrec;
  uint64_t seq;
  uint64_t total;  // bytes including this header, multiple of 64
  uint32_t crc;    // crc32c of header (crc zero) and every record
  uint32_t pad;
};

struct RecHeader {
  uint64_t off;
  uint32_t len;    // bytes of data that follow; for a revoke, bytes revoked
  uint32_t flags;  // kRevoke: no data follows
};
constexpr uint32_t kRevoke = 1;

struct Revoked {
  uint64_t off, len, seq;
};

// Which logged bytes a later revoke cancels. A record from transaction `seq` is stale if
// a transaction at or after it revoked any of its bytes (jbd2's revoke rule; a block is
// never reused inside the transaction that frees it, so "at" is safe). Sorted by offset
// with a running maximum of range ends, a lookup only visits revokes that can overlap:
// replay and checkpoint stay linear in the log rather than records x revokes.
// Checkpoints run on the fault path, so its memory comes from SafeAllocator.
class RevokeIndex {
 public:
  void add(uint64_t off, uint64_t len, uint64_t seq) { revs_.push_back({off, len, seq}); }
  void seal() {
    std::sort(revs_.begin(), revs_.end(), [](const Revoked& a, const Revoked& b) { return a.off < b.off; });
    max_end_.resize(revs_.size());
    uint64_t m = 0;
    for (size_t i = 0; i < revs_.size(); ++i) max_end_[i] = m = std::max(m, revs_[i].off + revs_[i].len);
  }
  bool cancels(uint64_t off, uint64_t len, uint64_t seq) const {
    // Revokes starting before the record ends, walked back while any could reach it.
    size_t i = std::lower_bound(revs_.begin(), revs_.end(), off + len,
                                [](const Revoked& r, uint64_t v) { return r.off < v; }) - revs_.begin();
    while (i > 0 && max_end_[i - 1] > off) {
      const Revoked& r = revs_[--i];
      if (r.seq >= seq && r.off + r.len > off) return true;
    }
    return false;
  }

 private:
  SafeVector<Revoked> revs_;
  SafeVector<uint64_t> max_end_;
};

uint64_t round8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

uint32_t header_crc(JHeader h) {
  h.checksum = 0;
  return crc32c(&h, sizeof h);
}

// The header has two slots in different cache lines. A new header overwrites the older
// slot, so a write torn by a power failure leaves the newer one intact, and replaying
// from it only repeats transactions whose home writes are already durable.
constexpr uint64_t kSlotStride = 64;

bool read_slot(const std::byte* p, JHeader* out) {
  std::memcpy(out, p, sizeof *out);
  return out->magic == kHeaderMagic && out->checksum == header_crc(*out) && out->start_seq != 0;
}

// The newest valid slot's index, or -1 if neither is valid.
int newest_slot(const device::Device& dev, Region log, JHeader* out) {
  int best = -1;
  for (int i = 0; i < 2; ++i) {
    JHeader h;
    if (read_slot(dev.bytes().data() + log.offset + i * kSlotStride, &h) && (best < 0 || h.start_seq > out->start_seq)) {
      *out = h;
      best = i;
    }
  }
  return best;
}

void write_header(device::Device& dev, Region log, uint64_t start_seq) {
  JHeader cur;
  const int slot = newest_slot(dev, log, &cur) == 0 ? 1 : 0;
  JHeader h{kHeaderMagic, start_seq, 0, 0};
  h.checksum = header_crc(h);
  dev.copy_nodrain(dev.bytes().data() + log.offset + slot * kSlotStride, &h, sizeof h);
  dev.fence();
}

}  // namespace

// Handles on the fault path log into it: its containers take SafeAllocator memory, and
// keep it across reuse.
struct Tx {
  explicit Tx(uint64_t s) : seq(s) {}
  struct Rec {
    uint64_t off;
    uint32_t len;
    size_t data;  // offset into `data`
    bool revoke = false;
  };
  uint64_t seq;
  int handles = 0;  // guarded by Journal::mu_
  Mutex mu;         // records, for handles logging at the same time
  SafeVector<Rec> recs;
  SafeVector<std::byte> data;
  // Records that rewriting the same range replaces in place (see retire_overlaps).
  std::map<uint64_t, size_t, std::less<>, SafeAllocator<std::pair<const uint64_t, size_t>>> by_off;
  std::atomic<uint64_t> bytes{sizeof(TxHeader)};

  // Empty it for reuse as transaction `s`, keeping the memory.
  void reset(uint64_t s) {
    seq = s;
    handles = 0;
    recs.clear();
    data.clear();
    by_off.clear();
    bytes = sizeof(TxHeader);
  }
};

// ---- Handle ----

namespace {
// by_off holds the records that may still be rewritten in place: pairwise disjoint,
// and none overlapped by a later record (rewriting one would then let the later,
// older bytes win at replay). A new record or revoke over [off, off+len) retires
// every one it touches; being disjoint, only one can reach in from the left.
void retire_overlaps(Tx& tx, uint64_t off, uint64_t len) {
  auto it = tx.by_off.lower_bound(off);
  if (it != tx.by_off.begin()) {
    auto prev = std::prev(it);
    if (prev->first + tx.recs[prev->second].len > off) tx.by_off.erase(prev);
  }
  while (it != tx.by_off.end() && it->first < off + len) it = tx.by_off.erase(it);
}
}  // namespace

void Handle::log(uint64_t dev_off, std::span<const std::byte> bytes) {
  Tx& tx = *tx_;
  Lock l(tx.mu);
  if (auto it = tx.by_off.find(dev_off); it != tx.by_off.end() && tx.recs[it->second].len == bytes.size()) {
    std::memcpy(tx.data.data() + tx.recs[it->second].data, bytes.data(), bytes.size());
    return;
  }
  retire_overlaps(tx, dev_off, bytes.size());
  tx.by_off[dev_off] = tx.recs.size();
  tx.recs.push_back({dev_off, static_cast<uint32_t>(bytes.size()), tx.data.size()});
  tx.data.insert(tx.data.end(), bytes.begin(), bytes.end());
  tx.bytes += sizeof(RecHeader) + round8(bytes.size());
}

void Handle::revoke(uint64_t dev_off, uint64_t len) {
  Tx& tx = *tx_;
  Lock l(tx.mu);
  retire_overlaps(tx, dev_off, len);
  constexpr uint64_t kMaxRevoke = uint64_t{1} << 30;  // record lengths are 32-bit
  for (uint64_t done = 0; done < len; done += kMaxRevoke) {
    tx.recs.push_back({dev_off + done, static_cast<uint32_t>(std::min(kMaxRevoke, len - done)), 0, true});
    tx.bytes += sizeof(RecHeader);
  }
}

uint64_t Handle::seq() const { return tx_->seq; }

void Handle::end() {
  if (tx_) j_->end_handle(tx_);
  tx_ = nullptr;
}

// ---- Journal ----

Status Journal::format(device::Device& dev, Region log) {
  if (log.length < 2 * kHeaderBytes) return fail(EINVAL, "journal region too small");
  // Zero both header slots and the first transaction header so no stale bytes count.
  dev.zero_nodrain(dev.bytes().data() + log.offset, 2 * kSlotStride);
  dev.zero_nodrain(dev.bytes().data() + log.offset + kHeaderBytes, sizeof(TxHeader));
  write_header(dev, log, 1);
  return ok();
}

namespace {

struct Found {
  uint64_t pos, seq, total;
  uint32_t nrec;
};

// The committed transactions of the epoch that starts at log position 0 with
// `start_seq`, and their revokes.
struct Scan {
  SafeVector<Found> txs;
  RevokeIndex revs;
  uint64_t end = 0;   // log position after the last one
  uint64_t next = 0;  // the sequence the next transaction would have
};

bool valid_tx_at(const std::byte* area, uint64_t capacity, uint64_t pos, uint64_t min_seq, TxHeader* out) {
  std::memcpy(out, area + pos, sizeof *out);
  TxHeader th = *out;
  if (th.magic != kTxMagic || th.seq < min_seq || th.total < sizeof th || th.total % 64 || th.total > capacity - pos)
    return false;
  // The checksum is over the header with its crc field zero, then every record.
  th.crc = 0;
  const uint32_t crc = crc32c(area + pos + sizeof th, th.total - sizeof th, crc32c(&th, sizeof th));
  return crc == out->crc;  // torn: never acknowledged, so never happened
}

Result<Scan> scan_log(const device::Device& dev, Region log, Region home, uint64_t start_seq) {
  const uint64_t capacity = log.length - kHeaderBytes;
  const std::byte* area = dev.bytes().data() + log.offset + kHeaderBytes;
  Scan sc;
  sc.next = start_seq;
  TxHeader th;
  while (capacity - sc.end >= sizeof(TxHeader) && valid_tx_at(area, capacity, sc.end, sc.next, &th)) {
    uint64_t p = sizeof th;
    for (uint32_t i = 0; i < th.nrec; ++i) {
      RecHeader rh;
      if (th.total - p < sizeof rh) return fail(EUCLEAN, "journal transaction " + std::to_string(th.seq) + " is malformed");
      std::memcpy(&rh, area + sc.end + p, sizeof rh);
      p += sizeof rh;
      if (!home.contains(rh.off, rh.len))
        return fail(EUCLEAN, "journal transaction " + std::to_string(th.seq) + " has a record outside the metadata area");
      if (rh.flags & kRevoke) {
        sc.revs.add(rh.off, rh.len, th.seq);
        continue;
      }
      if (rh.len > th.total - p) return fail(EUCLEAN, "journal transaction " + std::to_string(th.seq) + " is malformed");
      p += round8(rh.len);
    }
    sc.txs.push_back({sc.end, th.seq, th.total, th.nrec});
    sc.next = th.seq + 1;
    sc.end += th.total;
  }
  sc.revs.seal();
  return sc;
}

// Write every record that no later revoke cancels to its home; the caller fences.
void apply_log(device::Device& dev, Region log, const Scan& sc) {
  const std::byte* area = dev.bytes().data() + log.offset + kHeaderBytes;
  for (const Found& t : sc.txs) {
    uint64_t p = t.pos + sizeof(TxHeader);
    for (uint32_t i = 0; i < t.nrec; ++i) {
      RecHeader rh;
      std::memcpy(&rh, area + p, sizeof rh);
      p += sizeof rh;
      if (rh.flags & kRevoke) continue;
      if (!sc.revs.cancels(rh.off, rh.len, t.seq)) dev.copy_nodrain(dev.bytes().data() + rh.off, area + p, rh.len);
      p += round8(rh.len);
    }
  }
}

}  // namespace

Result<uint64_t> Journal::recover(device::Device& dev, Region log, Region home) {
  JHeader h;
  if (newest_slot(dev, log, &h) < 0) return fail(EUCLEAN, "journal header is corrupt");
  SDX_ASSIGN(Scan sc, scan_log(dev, log, home, h.start_seq));
  // Commits are strictly sequential, so a power failure can only tear the last one.
  // A valid transaction of this log further on means one before it was damaged later:
  // replaying around it would silently drop what fsync acknowledged.
  const uint64_t capacity = log.length - kHeaderBytes;
  const std::byte* area = dev.bytes().data() + log.offset + kHeaderBytes;
  for (uint64_t q = sc.end + 64; q + sizeof(TxHeader) <= capacity; q += 64) {
    TxHeader th;
    if (valid_tx_at(area, capacity, q, sc.next, &th))
      return fail(EUCLEAN, "journal transaction " + std::to_string(sc.next) + " is damaged but transaction " +
                               std::to_string(th.seq) + " after it is intact");
  }
  apply_log(dev, log, sc);
  dev.fence();
  // The replayed transactions are home; an empty log starting at `next` forgets them.
  if (!sc.txs.empty()) write_header(dev, log, sc.next);
  return sc.next;
}

// Both transactions exist from the start: a commit swaps the spare in as the running
// one, so neither commit nor start() ever allocates one (the fault path does both).
Journal::Journal(device::Device& dev, Region log, Region home, uint64_t next_seq)
    : dev_(dev), log_(log), home_(home), capacity_(log.length - kHeaderBytes), max_tx_(capacity_ / 4),
      running_(std::make_unique<Tx>(next_seq)), spare_(std::make_unique<Tx>(0)), start_seq_(next_seq) {
  committed_.store(next_seq - 1);
}

Journal::~Journal() { stop_committer(); }

uint64_t Journal::running_seq() const {
  Lock l(mu_);
  return running_->seq;
}

Handle Journal::start() {
  for (;;) {
    Lock l(mu_);
    if (running_->bytes.load() < max_tx_ || !error_) {
      ++running_->handles;
      return Handle(this, running_.get());
    }
    uint64_t s = running_->seq;
    l.unlock();
    (void)commit(s);  // a full transaction commits before anyone joins the next one
  }
}

void Journal::end_handle(Tx* tx) {
  Lock l(mu_);
  if (--tx->handles == 0) cv_.notify_all();
}

Status Journal::commit(uint64_t seq) {
  Lock l(mu_);
  ++stats_.commit_requests;
  seq = std::min(seq, running_->seq);
  for (;;) {
    if (!error_) return error_;
    if (committed_.load() >= seq) return ok();
    if (committing_) {
      cv_.wait(l);
      continue;
    }
    committing_ = true;
    std::unique_ptr<Tx> tx = std::move(running_);
    const uint64_t s = tx->seq;
    running_ = std::move(spare_);
    running_->reset(s + 1);
    cv_.wait(l, [&] { return tx->handles == 0; });
    l.unlock();
    Status st;
    {
      Lock c(commit_mu_);
      if (!tx->recs.empty()) st = write_tx(*tx);
    }
    if (st && on_commit_) on_commit_(s);
    l.lock();
    tx->reset(0);
    spare_ = std::move(tx);
    committing_ = false;
    if (st) committed_.store(s, std::memory_order_release);
    else error_ = st;
    cv_.notify_all();
  }
}

Status Journal::write_tx(Tx& tx) {
  const uint64_t total = (tx.bytes.load() + 63) & ~uint64_t{63};
  if (total > capacity_) return fail(ENOSPC, "transaction larger than the journal");
  if (capacity_ - pos_ < total) SDX_TRY(checkpoint_locked());
  // Records go straight into the log (no staging buffer: the fault path may commit and
  // must not allocate); the header, whose checksum covers them, goes last.
  std::byte* const start = dev_.bytes().data() + log_.offset + kHeaderBytes + pos_;
  TxHeader th{kTxMagic, static_cast<uint32_t>(tx.recs.size()), tx.seq, total, 0, 0};
  uint32_t crc = crc32c(&th, sizeof th);
  static constexpr std::byte kZeros[64] = {};
  uint64_t p = sizeof th;
  auto put = [&](const void* src, uint64_t n) {
    dev_.copy_nodrain(start + p, src, n);
    crc = crc32c(src, n, crc);
    p += n;
  };
  for (const auto& r : tx.recs) {
    RecHeader rh{r.off, r.len, r.revoke ? kRevoke : 0};
    put(&rh, sizeof rh);
    if (r.revoke) continue;
    put(tx.data.data() + r.data, r.len);
    put(kZeros, round8(r.len) - r.len);
  }
  while (p < total) put(kZeros, std::min<uint64_t>(sizeof kZeros, total - p));
  th.crc = crc;
  dev_.copy_nodrain(start, &th, sizeof th);
  // One fence: a crash before it leaves a transaction whose checksum fails.
  dev_.fence();
  pos_ += total;
  Lock l(mu_);
  ++stats_.commits;
  stats_.records += tx.recs.size();
  stats_.bytes += total;
  return ok();
}

Status Journal::checkpoint() {
  Lock c(commit_mu_);
  return checkpoint_locked();
}

// The committed transactions are read back from the log itself, with the code recovery
// uses, so nothing needs to stay in memory after its commit.
Status Journal::checkpoint_locked() {
  if (pos_ == 0) return ok();
  SDX_ASSIGN(Scan sc, scan_log(dev_, log_, home_, start_seq_));
  if (sc.end != pos_) return fail(EIO, "journal: the log does not read back as it was written");
  apply_log(dev_, log_, sc);
  dev_.fence();
  write_header(dev_, log_, sc.next);
  start_seq_ = sc.next;
  pos_ = 0;
  Lock l(mu_);
  ++stats_.checkpoints;
  return ok();
}

void Journal::start_committer(uint32_t interval_ms) {
  stop_committer();
  if (interval_ms == 0) return;
  {
    Lock l(mu_);
    stop_ = false;
  }
  committer_ = std::thread([this, interval_ms] { committer_loop(interval_ms); });
}

void Journal::stop_committer() {
  {
    Lock l(mu_);
    stop_ = true;
    committer_cv_.notify_all();
  }
  if (committer_.joinable()) committer_.join();
}

void Journal::committer_loop(uint32_t interval_ms) {
  Lock l(mu_);
  while (!stop_) {
    committer_cv_.wait_for(l, std::chrono::milliseconds(interval_ms));
    if (stop_) break;
    if (running_->bytes.load() == sizeof(TxHeader)) continue;  // nothing logged
    const uint64_t s = running_->seq;
    l.unlock();
    (void)commit(s);
    l.lock();
  }
}

Stats Journal::stats() const {
  Lock l(mu_);
  return stats_;
}

}  // namespace sdx::journal
