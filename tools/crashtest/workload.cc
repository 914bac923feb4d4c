#include "workload.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <thread>

namespace sdx::crashtest {

const char* op_name(OpKind k) {
  switch (k) {
    case OpKind::kCreate: return "create";
    case OpKind::kStore: return "store";
    case OpKind::kPwrite: return "pwrite";
    case OpKind::kCopy: return "copy";
    case OpKind::kFallocate: return "fallocate";
    case OpKind::kPunch: return "punch";
    case OpKind::kTruncate: return "truncate";
    case OpKind::kRename: return "rename";
    case OpKind::kUnlink: return "unlink";
    case OpKind::kClone: return "clone";
    case OpKind::kDefrag: return "defrag";
    case OpKind::kCount: break;
  }
  return "?";
}

std::string file_name(uint32_t id) { return "/f" + std::to_string(id); }
std::string renamed_name(uint32_t number) { return "/r" + std::to_string(number); }

// ------------------------------------------------------------------ the table
namespace {

// splitmix64: the same sequence on every platform, unlike <random>'s distributions.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t x = (s_ += 0x9E3779B97F4A7C15ull);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
  }
  uint64_t below(uint64_t n) { return n ? next() % n : 0; }
  uint64_t between(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }  // inclusive
  bool chance(unsigned percent) { return below(100) < percent; }

 private:
  uint64_t s_;
};

class Generator {
 public:
  explicit Generator(const WorkloadOptions& o) : rng_(o.seed), target_(std::max<uint64_t>(o.ops, 16)) {}

  std::vector<Op> run() {
    // The files every run has: one both faulting threads store to (lane parity picks
    // its pages, so no word is written by two threads), the copier's source and
    // destination, lane 1's own file, and lane 0's first files.
    shared_ = create(0, kMaxFileSize, false);
    source_ = create(0, kMaxFileSize, true);
    const uint64_t src_seed = seed_++;
    push({OpKind::kPwrite, 0, source_, 0, 0, 0, kMaxFileSize, src_seed, kMaxFileSize});
    files_[source_].seed = src_seed;
    dest_ = create(0, kMaxFileSize, false);
    lane1_ = create(0, 8 * kPage, true);
    for (int i = 0; i < 3; ++i) create(0, rng_.between(1, 16) * kPage, i % 2 == 1);
    while (t_.size() < target_) {
      const uint64_t l = rng_.below(100);
      if (l < 55) lane0();
      else if (l < 85) lane1();
      else copier();
    }
    return std::move(t_);
  }

 private:
  struct F {
    bool live = true;
    uint64_t size = 0;
    uint64_t seed = 0;  // the source's one pattern
  };

  void push(Op op) { t_.push_back(op); }
  uint32_t create(uint16_t lane, uint64_t size, bool prealloc) {
    const auto id = static_cast<uint32_t>(files_.size());
    files_.push_back({true, size, 0});
    push({OpKind::kCreate, lane, id, prealloc ? 1u : 0u, 0, 0, 0, 0, size});
    return id;
  }
  // An 8-aligned range of 8..max bytes inside [lo, hi).
  std::pair<uint64_t, uint64_t> range(uint64_t lo, uint64_t hi, uint64_t max) {
    const uint64_t words = (hi - lo) / 8;
    const uint64_t len = 8 * rng_.between(1, std::min(max / 8, words));
    const uint64_t off = lo + 8 * rng_.below(words - len / 8 + 1);
    return {off, len};
  }
  void store(uint16_t lane, uint32_t id, uint64_t lo, uint64_t hi) {
    if (hi <= lo) return;
    auto [off, len] = range(lo, hi, 512);
    push({OpKind::kStore, lane, id, 0, 0, off, len, seed_++, files_[id].size});
  }
  // A store into one page of the shared file whose parity is the lane's.
  void shared_store(uint16_t lane) {
    const uint64_t page = 2 * rng_.below(kMaxFileSize / kPage / 2) + lane;
    store(lane, shared_, page * kPage, (page + 1) * kPage);
  }
  void pwrite(uint16_t lane, uint32_t id) {
    auto [off, len] = range(0, kMaxFileSize, 2 * kPage);
    F& f = files_[id];
    f.size = std::max(f.size, off + len);
    push({OpKind::kPwrite, lane, id, 0, 0, off, len, seed_++, f.size});
  }
  void punch(uint16_t lane, uint32_t id) {
    auto [off, len] = range(0, kMaxFileSize, 4 * kPage);
    push({OpKind::kPunch, lane, id, 0, 0, off, len, 0, files_[id].size});
  }
  // Page-aligned: a block range of the copy source into `id` at the same offsets.
  void clone(uint16_t lane, uint32_t id) {
    const uint64_t first = rng_.below(kMaxFileSize / kPage);
    const uint64_t pages = rng_.between(1, std::min<uint64_t>(4, kMaxFileSize / kPage - first));
    F& f = files_[id];
    f.size = std::max(f.size, (first + pages) * kPage);
    push({OpKind::kClone, lane, id, source_, 0, first * kPage, pages * kPage, files_[source_].seed, f.size});
  }
  void truncate(uint16_t lane, uint32_t id) {
    const uint64_t len = 8 * rng_.below(kMaxFileSize / 8 + 1);
    files_[id].size = len;
    push({OpKind::kTruncate, lane, id, 0, 0, 0, len, 0, len});
  }
  std::vector<uint32_t> lane0_files() const {
    std::vector<uint32_t> v;
    for (uint32_t id = 0; id < files_.size(); ++id)
      if (files_[id].live && id != shared_ && id != source_ && id != dest_ && id != lane1_) v.push_back(id);
    return v;
  }

  void lane0() {
    auto live = lane0_files();
    if (live.size() < 2 || (live.size() < 5 && rng_.chance(3))) {
      create(0, rng_.between(0, 16) * kPage, rng_.chance(50));
      return;
    }
    const uint32_t id = live[rng_.below(live.size())];
    F& f = files_[id];
    const uint64_t k = rng_.below(100);
    if (k < 35) {
      store(0, id, 0, f.size);
    } else if (k < 45) {
      shared_store(0);
    } else if (k < 57) {
      pwrite(0, id);
    } else if (k < 65) {
      const uint32_t mode = rng_.chance(50) ? FALLOC_FL_KEEP_SIZE : 0;
      const uint64_t off = kPage * rng_.below(kMaxFileSize / kPage);
      const uint64_t len = kPage * rng_.between(1, (kMaxFileSize - off) / kPage);
      if (mode == 0) f.size = std::max(f.size, off + len);
      push({OpKind::kFallocate, 0, id, mode, 0, off, len, 0, f.size});
    } else if (k < 74) {
      punch(0, id);
    } else if (k < 80) {
      truncate(0, id);
    } else if (k < 83) {
      // The file both lanes store into, or one of lane 0's own.
      const uint32_t which = rng_.chance(50) ? shared_ : id;
      push({OpKind::kDefrag, 0, which, 0, 0, 0, 0, 0, files_[which].size});
    } else if (k < 92) {
      // Over another of lane 0's files half the time: that file is deleted by it.
      uint32_t over = kNoFile;
      if (rng_.chance(50)) {
        const uint32_t o = live[rng_.below(live.size())];
        if (o != id) over = o;
      }
      if (over != kNoFile) files_[over].live = false;
      push({OpKind::kRename, 0, id, over, names_++, 0, 0, 0, f.size});
    } else {
      f.live = false;
      push({OpKind::kUnlink, 0, id, 0, 0, 0, 0, 0, 0});
    }
  }

  void lane1() {
    F& f = files_[lane1_];
    const uint64_t k = rng_.below(100);
    if (k < 45) shared_store(1);
    else if (k < 75) store(1, lane1_, 0, f.size);
    else if (k < 80) pwrite(1, lane1_);
    else if (k < 86) punch(1, lane1_);
    else if (k < 91) truncate(1, lane1_);
    else if (k < 97) clone(1, lane1_);  // its stores then copy on write
    else push({OpKind::kDefrag, 1, lane1_, 0, 0, 0, 0, 0, f.size});
  }

  void copier() {
    constexpr uint64_t kChunk = 4 * kPage;
    const uint64_t off = (copies_++ * kChunk) % kMaxFileSize;
    push({OpKind::kCopy, 2, dest_, source_, 0, off, kChunk, files_[source_].seed, kMaxFileSize});
  }

  Rng rng_;
  uint64_t target_;
  std::vector<Op> t_;
  std::vector<F> files_;
  uint32_t shared_ = 0, source_ = 0, dest_ = 0, lane1_ = 0;
  uint64_t seed_ = 1;  // 0 is no pattern
  uint32_t names_ = 0;
  uint64_t copies_ = 0;
};

}  // namespace

std::vector<Op> generate(const WorkloadOptions& opt) { return Generator(opt).run(); }

// ------------------------------------------------------------------ history
size_t History::bytes_for(size_t capacity) { return 64 + capacity * sizeof(Record); }

History::History(std::span<std::byte> mem)
    : n_(reinterpret_cast<std::atomic<uint64_t>*>(mem.data())),
      recs_(reinterpret_cast<Record*>(mem.data() + 64)),
      cap_((mem.size() - 64) / sizeof(Record)) {}

void History::clear() {
  const size_t n = size();
  for (size_t i = 0; i < n; ++i) recs_[i].valid.store(0, std::memory_order_relaxed);
  n_->store(0, std::memory_order_release);
}

void History::add(Event e, uint32_t row, uint64_t fence, uint64_t ino) {
  const uint64_t i = n_->fetch_add(1, std::memory_order_acq_rel);
  if (i >= cap_) return;  // size() reports the overflow
  Record& r = recs_[i];
  r.event = e;
  r.row = row;
  r.fence = fence;
  r.ino = ino;
  r.valid.store(1, std::memory_order_release);
}

size_t History::size() const { return std::min<uint64_t>(n_->load(std::memory_order_acquire), cap_); }

// ------------------------------------------------------------------ the executor
namespace {

struct FileState {
  File file;
  Mapping map;
  std::string name;
};

class Executor {
 public:
  Executor(FileSystem& fs, std::span<const Op> t, History& h, const ExecOptions& o)
      : fs_(fs), t_(t), h_(h), o_(o) {
    uint32_t n = 0;
    for (const Op& op : t_) n = std::max(n, op.file + 1);
    files_.resize(n);
  }

  Status run() {
    // Creating the first files is setup: lane 1 and the copier need them to exist.
    size_t setup = 0;
    while (setup < t_.size() && t_[setup].lane == 0 &&
           (t_[setup].kind == OpKind::kCreate || t_[setup].kind == OpKind::kPwrite))
      ++setup;
    for (size_t r = 0; r < setup && !stopped(); ++r) {
      if (auto s = row(r); !s) return s;
    }
    turn_.store(setup);
    std::vector<std::thread> threads;
    std::vector<Status> results(kLanes, ok());
    for (int lane = 1; lane < kLanes; ++lane)
      threads.emplace_back([&, lane] { results[lane] = lane_loop(lane, setup); });
    results[0] = lane_loop(0, setup);
    for (auto& th : threads) th.join();
    for (auto& s : results)
      if (!s) return s;
    return ok();
  }

 private:
  bool stopped() const {
    return failed_.load(std::memory_order_acquire) || (o_.stop && o_.stop->load(std::memory_order_acquire));
  }

  Status lane_loop(int lane, size_t from) {
    for (size_t r = from; r < t_.size(); ++r) {
      if (t_[r].lane != lane) continue;
      if (o_.lockstep) {
        for (uint64_t v = turn_.load(std::memory_order_acquire); v != r; v = turn_.load(std::memory_order_acquire)) {
          if (v > r) return ok();  // ended early
          turn_.wait(v, std::memory_order_acquire);
        }
      }
      Status s = stopped() ? ok() : row(r);
      if (!s) failed_.store(true, std::memory_order_release);
      if (!s || stopped()) {
        turn_.store(t_.size(), std::memory_order_release);
        turn_.notify_all();
        return s;
      }
      if (o_.lockstep) {
        turn_.store(r + 1, std::memory_order_release);
        turn_.notify_all();
      }
    }
    return ok();
  }

  uint64_t fence() const { return o_.fence ? o_.fence(o_.fence_ctx) : 0; }

  std::vector<std::byte> words(uint64_t seed, uint64_t off, uint64_t len) {
    std::vector<std::byte> b(len);
    for (uint64_t i = 0; i < len; i += 8) {
      const uint64_t w = pattern_word(seed, off + i);
      std::memcpy(b.data() + i, &w, 8);
    }
    return b;
  }

  Status write_all(File& f, std::span<const std::byte> b, uint64_t off) {
    while (!b.empty()) {
      SDX_ASSIGN(size_t n, f.pwrite(b, off));
      if (n == 0) return fail(EIO, "pwrite wrote nothing");
      b = b.subspan(n);
      off += n;
    }
    return ok();
  }

  Status row(size_t r) {
    const Op& op = t_[r];
    const auto rr = static_cast<uint32_t>(r);
    h_.add(Event::kStart, rr, fence());
    Status s = apply(op, rr);
    if (!s) return fail(s.error().code, "row " + std::to_string(r) + " (" + op_name(op.kind) + " " +
                                            file_name(op.file) + "): " + s.error().message);
    h_.add(Event::kAck, rr, fence());
    return ok();
  }

  Status apply(const Op& op, uint32_t r) {
    FileState& f = files_[op.file];
    switch (op.kind) {
      case OpKind::kCreate: {
        f.name = file_name(op.file);
        SDX_ASSIGN(f.file, fs_.open(f.name, O_CREAT | O_EXCL | O_RDWR));
        SDX_ASSIGN(Stat st, f.file.stat());
        h_.add(Event::kIno, r, fence(), st.ino);
        if (op.aux && op.size_after) SDX_TRY(f.file.fallocate(0, 0, op.size_after));
        else SDX_TRY(f.file.ftruncate(op.size_after));
        SDX_TRY(f.file.fsync());
        const int flags = o_.sync ? MAP_SHARED_VALIDATE | MAP_SYNC : MAP_SHARED;
        SDX_ASSIGN(f.map, f.file.mmap(0, kMaxFileSize, PROT_READ | PROT_WRITE, flags));
        return ok();
      }
      case OpKind::kStore: {
        auto b = words(op.seed, op.off, op.len);
        std::byte* p = f.map.data() + op.off;
        std::memcpy(p, b.data(), b.size());
        if (o_.sync) return f.map.persist(p, op.len);
        // The mistake --no-sync makes on purpose: cache flushes, but no msync.
        f.map.flush(p, op.len);
        f.map.drain();
        return ok();
      }
      case OpKind::kPwrite:
        SDX_TRY(write_all(f.file, words(op.seed, op.off, op.len), op.off));
        return f.file.fdatasync();
      case OpKind::kCopy: {
        std::vector<std::byte> b(op.len);
        SDX_ASSIGN(size_t n, files_[op.aux].file.pread(b, op.off));
        if (n != op.len) return fail(EIO, "short read of the copy source");
        SDX_TRY(write_all(f.file, b, op.off));
        return f.file.fdatasync();
      }
      case OpKind::kFallocate:
        SDX_TRY(f.file.fallocate(static_cast<int>(op.aux), op.off, op.len));
        return f.file.fdatasync();
      case OpKind::kPunch:
        SDX_TRY(f.file.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, op.off, op.len));
        return f.file.fdatasync();
      case OpKind::kTruncate:
        SDX_TRY(f.file.ftruncate(op.len));
        return f.file.fdatasync();
      case OpKind::kRename: {
        const std::string to = op.aux != kNoFile ? files_[op.aux].name : renamed_name(op.name);
        SDX_TRY(fs_.rename(f.name, to));
        SDX_TRY(f.file.fsync());
        f.name = to;
        if (op.aux != kNoFile) {  // the replaced file is an orphan until closed
          FileState& gone = files_[op.aux];
          SDX_TRY(gone.map.unmap());
          SDX_TRY(gone.file.close());
        }
        return ok();
      }
      case OpKind::kUnlink:
        SDX_TRY(f.map.unmap());
        SDX_TRY(f.file.close());
        SDX_TRY(fs_.unlink(f.name));
        return fs_.sync();
      case OpKind::kClone:
        SDX_TRY(f.file.clone_range(files_[op.aux].file, op.off, op.off, op.len));
        return f.file.fdatasync();
      case OpKind::kDefrag: {
        auto d = f.file.defragment();
        if (!d) return std::unexpected(d.error());
        return ok();
      }
      case OpKind::kCount: break;
    }
    return fail(EINVAL, "unknown operation");
  }

  FileSystem& fs_;
  std::span<const Op> t_;
  History& h_;
  ExecOptions o_;
  std::vector<FileState> files_;
  std::atomic<uint64_t> turn_{0};
  std::atomic<bool> failed_{false};
};

}  // namespace

Status execute(FileSystem& fs, std::span<const Op> table, History& h, const ExecOptions& opt) {
  return Executor(fs, table, h, opt).run();
}

}  // namespace sdx::crashtest
