// crash_test: simulated power failures at the fence points of a deterministic workload.
//
// The workload (creates, writes, fsync/fdatasync, fallocate, punch, zero range, truncate,
// replacing renames, unlink of an open file, mkdir/rmdir, O_APPEND) runs on an in-memory
// sim device with the background committer off, so it issues the same fences in the same
// order every run. A model records, with the device's fence count, when each operation
// started and when each sync call returned. For a crash at fence k (the image a fence
// hook takes at the start of fence k, i.e. with fences 1..k-1 complete):
//   * fsck of the image is clean, and it mounts (journal recovery);
//   * the namespace equals the model's namespace after some prefix of the namespace
//     operations: at least every one made durable before fence k by a sync() or by an
//     fsync of a file whose inode it changed (create, rename, unlink of that file; the
//     journal commits in order, so everything before it too), at most those started
//     before fence k -- so a rename is all-or-nothing and nothing acknowledged vanishes;
//   * each file's size is its acknowledged size or one set by a later started operation;
//   * each byte is the value of the last acknowledged operation on it, or of one started
//     after that (all patterns are unique per (file, write, offset)), or zero where a
//     hole/punch/truncate allows it: data never written to that file is never readable;
//   * a clean unmount/mount cycle reproduces the same tree, and after deleting everything
//     the free space and inodes are exactly those of a fresh file system (no leaked
//     orphan).
// SYNCDAX_CRASH_POINTS (default 1000) is the number of fence points sampled (all of them
// when the workload has fewer); each point is checked with three images: only durable
// lines, half of the unflushed 8-byte words (torn), all unflushed lines.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "crashtest/fence_capture.h"
#include "test_util.h"

namespace sdx {
namespace {

using test::cbytes;
using test::pattern;

constexpr uint64_t kDevSize = 1ull << 20;
constexpr uint64_t kB = 4096;
constexpr uint64_t kInf = ~uint64_t{0};
constexpr int kShards = 4;

// ------------------------------------------------------------------ the model
struct Event {         // a change to a file's bytes
  uint64_t start;      // fence count when the operation started
  bool zero;           // punch / zero range / truncate: the range reads zero
  uint64_t off, end;
  uint64_t seed;       // write: pattern(seed, offset)
};
struct Ack {           // a sync call on the file that returned
  uint64_t fence;      // fence count when it returned
  size_t nev, nsize;   // events and sizes it covers
};
struct Obj {
  std::string name;    // where it was created, for messages
  bool is_dir = false;
  uint64_t ino = 0;
  std::vector<Event> ev;
  std::vector<std::pair<uint64_t, uint64_t>> sizes;  // (start fence, size); [0] = creation
  std::vector<Ack> acks;
  // Namespace states up to the last operation that changed this inode's own metadata
  // (its creation, a rename of it, an unlink of it): fsync of it makes those durable.
  size_t ns_involved = 0;
  uint64_t size() const { return sizes.back().second; }
};
using Names = std::map<std::string, int>;  // path -> object

struct Model {
  std::vector<Obj> objs;
  std::vector<uint64_t> ns_start;  // per namespace state: start fence of the op making it
  std::vector<Names> ns;           // ns[0]: the empty file system
  std::vector<std::pair<uint64_t, size_t>> ns_acks;  // (fence, namespace states durable)
  uint64_t end_fence = 0;
  // Negative-control probes: an extending write that is not synced until later, and a
  // rename that is not synced until later.
  struct Probe {
    int obj = -1;
    size_t nev = 0, nsize = 0, ns_index = 0;
    uint64_t end_fence = 0;
  } write_probe, rename_probe;
};

// ------------------------------------------------------------------ the workload
class Workload {
 public:
  Workload(FileSystem& fs, device::SimDevice& sim, Model& m) : fs_(fs), sim_(sim), m_(m) {
    m_.ns_start.push_back(0);
    m_.ns.emplace_back();
  }

  uint64_t now() const { return sim_.fence_count(); }

  Result<int> create(const std::string& path) {
    uint64_t c = now();
    SDX_ASSIGN(File f, fs_.open(path, O_CREAT | O_EXCL | O_RDWR, 0644));
    SDX_ASSIGN(Stat st, f.stat());
    int id = new_obj(path, false, st.ino, c);
    files_[id] = std::move(f);
    Names n = m_.ns.back();
    n[path] = id;
    push_ns(c, std::move(n), {id});
    return id;
  }
  Status mkdir(const std::string& path) {
    uint64_t c = now();
    SDX_TRY(fs_.mkdir(path));
    SDX_ASSIGN(Stat st, fs_.stat(path));
    int id = new_obj(path, true, st.ino, c);
    Names n = m_.ns.back();
    n[path] = id;
    push_ns(c, std::move(n), {id});
    return ok();
  }
  Status rmdir(const std::string& path) {
    uint64_t c = now();
    SDX_TRY(fs_.rmdir(path));
    Names n = m_.ns.back();
    int id = n.at(path);
    n.erase(path);
    push_ns(c, std::move(n), {id});
    return ok();
  }
  Status unlink(const std::string& path) {
    uint64_t c = now();
    SDX_TRY(fs_.unlink(path));
    Names n = m_.ns.back();
    int id = n.at(path);
    n.erase(path);
    push_ns(c, std::move(n), {id});
    return ok();
  }
  Status rename(const std::string& from, const std::string& to) {
    uint64_t c = now();
    SDX_TRY(fs_.rename(from, to));
    Names n = m_.ns.back(), out;
    std::vector<int> involved{n.at(from)};
    if (n.count(to) && n.at(to) != n.at(from)) involved.push_back(n.at(to));
    for (auto& [p, id] : n) {
      if (p == to || p.starts_with(to + "/")) continue;  // replaced
      if (p == from) out[to] = id;
      else if (p.starts_with(from + "/")) out[to + p.substr(from.size())] = id;
      else out[p] = id;
    }
    push_ns(c, std::move(out), involved);
    return ok();
  }
  Status write(int id, uint64_t off, size_t len) {
    uint64_t c = now();
    uint64_t seed = next_seed_++;
    SDX_TRY(test::write_all(files_.at(id), cbytes(pattern(seed, off, len)), off));
    add_write(id, c, off, len, seed);
    return ok();
  }
  // O_APPEND write through a second handle; the offset is the current size.
  Status append(int id, const std::string& path, size_t len) {
    if (!appenders_.count(id)) {
      SDX_ASSIGN(File f, fs_.open(path, O_WRONLY | O_APPEND));
      appenders_[id] = std::move(f);
    }
    uint64_t c = now();
    uint64_t seed = next_seed_++;
    uint64_t off = m_.objs[id].size();
    SDX_ASSIGN(size_t n, appenders_[id].pwrite(cbytes(pattern(seed, off, len)), 12345678));
    if (n != len) return fail(EIO, "short append");
    add_write(id, c, off, len, seed);
    return ok();
  }
  Status fallocate(int id, int mode, uint64_t off, uint64_t len) {
    uint64_t c = now();
    SDX_TRY(files_.at(id).fallocate(mode, off, len));
    Obj& o = m_.objs[id];
    if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
      o.ev.push_back(Event{c, true, off, off + len, 0});
    if (!(mode & FALLOC_FL_KEEP_SIZE) && off + len > o.size()) o.sizes.emplace_back(c, off + len);
    return ok();
  }
  Status truncate(int id, uint64_t len) {
    uint64_t c = now();
    SDX_TRY(files_.at(id).ftruncate(len));
    Obj& o = m_.objs[id];
    if (len < o.size()) o.ev.push_back(Event{c, true, len, kInf, 0});
    o.sizes.emplace_back(c, len);
    return ok();
  }
  Status fdatasync(int id) {
    SDX_TRY(files_.at(id).fdatasync());
    ack(id);
    return ok();
  }
  Status fsync(int id) {
    SDX_TRY(files_.at(id).fsync());
    ack(id);
    m_.ns_acks.emplace_back(now(), m_.objs[id].ns_involved);
    return ok();
  }
  Status sync() {
    SDX_TRY(fs_.sync());
    for (size_t id = 0; id < m_.objs.size(); ++id)
      if (!m_.objs[id].is_dir) ack(static_cast<int>(id));
    m_.ns_acks.emplace_back(now(), m_.ns.size());
    return ok();
  }
  Status close(int id) {
    appenders_.erase(id);
    auto it = files_.find(id);
    if (it == files_.end()) return fail(EBADF, "not open");
    Status s = it->second.close();
    files_.erase(it);
    return s;
  }
  void close_all() {
    appenders_.clear();
    files_.clear();
  }
  void mark_write_probe(int id) {
    auto& o = m_.objs[id];
    m_.write_probe = {id, o.ev.size(), o.sizes.size(), 0, now()};
  }
  void mark_rename_probe() { m_.rename_probe = {-1, 0, 0, m_.ns.size(), now()}; }

 private:
  int new_obj(const std::string& path, bool dir, uint64_t ino, uint64_t c) {
    Obj o;
    o.name = path;
    o.is_dir = dir;
    o.ino = ino;
    o.sizes.emplace_back(c, 0);
    m_.objs.push_back(std::move(o));
    return static_cast<int>(m_.objs.size() - 1);
  }
  void push_ns(uint64_t c, Names n, const std::vector<int>& involved) {
    m_.ns_start.push_back(c);
    m_.ns.push_back(std::move(n));
    for (int id : involved) m_.objs[id].ns_involved = m_.ns.size();
  }
  void add_write(int id, uint64_t c, uint64_t off, size_t len, uint64_t seed) {
    Obj& o = m_.objs[id];
    o.ev.push_back(Event{c, false, off, off + len, seed});
    if (off + len > o.size()) o.sizes.emplace_back(c, off + len);
  }
  void ack(int id) {
    Obj& o = m_.objs[id];
    o.acks.push_back(Ack{now(), o.ev.size(), o.sizes.size()});
  }

  FileSystem& fs_;
  device::SimDevice& sim_;
  Model& m_;
  std::map<int, File> files_;
  std::map<int, File> appenders_;
  uint64_t next_seed_ = 1;
};

uint64_t rounds() { return test::env_u64("SYNCDAX_CRASH_ROUNDS", 160); }

// The workload proper. Root never holds more than a handful of entries.
Status run_workload(Workload& w) {
  SDX_TRY(w.mkdir("/d1"));
  SDX_TRY(w.mkdir("/d2"));
  SDX_ASSIGN(int a, w.create("/d1/a"));
  SDX_TRY(w.write(a, 0, 10000));
  SDX_TRY(w.fsync(a));
  SDX_ASSIGN(int b, w.create("/b"));
  SDX_TRY(w.write(b, 0, 3 * kB));
  SDX_TRY(w.write(b, 5000, 300));
  SDX_TRY(w.fsync(b));
  SDX_TRY(w.write(a, 4000, 100));  // in place
  SDX_TRY(w.fdatasync(a));
  SDX_TRY(w.fallocate(b, 0, 0, 8 * kB));  // extends to 32 KiB, unwritten tail
  SDX_TRY(w.write(b, 20000, 1000));       // into unwritten
  SDX_TRY(w.fdatasync(b));
  SDX_TRY(w.fallocate(b, FALLOC_FL_KEEP_SIZE, 8 * kB, 4 * kB));
  SDX_TRY(w.fallocate(a, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kB, kB));
  SDX_TRY(w.fsync(a));
  SDX_ASSIGN(int t, w.create("/d2/tmp"));
  SDX_TRY(w.write(t, 0, 12000));
  SDX_TRY(w.fsync(t));
  SDX_TRY(w.rename("/d2/tmp", "/d1/a"));  // replaces a, which stays open: an orphan
  SDX_TRY(w.write(a, 10000, 4000));
  SDX_TRY(w.fdatasync(a));
  SDX_TRY(w.close(a));                    // reclaims the orphan
  SDX_TRY(w.sync());
  SDX_TRY(w.truncate(b, 10000));
  SDX_TRY(w.fsync(b));
  SDX_TRY(w.truncate(b, 30000));
  SDX_TRY(w.write(b, 25000, 100));
  SDX_TRY(w.fdatasync(b));
  SDX_ASSIGN(int g, w.create("/g"));
  for (int i = 0; i < 8; ++i) SDX_TRY(w.write(g, 2 * i * kB, kB));  // 8 extents
  SDX_TRY(w.fsync(g));
  SDX_TRY(w.write(b, 30000, 10000));      // extending, not yet synced
  w.mark_write_probe(b);
  SDX_TRY(w.fdatasync(b));
  SDX_TRY(w.unlink("/g"));                // g stays open
  SDX_TRY(w.write(g, 100000, kB));
  SDX_TRY(w.fdatasync(g));
  SDX_TRY(w.close(g));
  SDX_TRY(w.mkdir("/d3"));
  SDX_ASSIGN(int x, w.create("/d3/x"));
  SDX_TRY(w.write(x, 0, 5000));
  SDX_TRY(w.fsync(x));
  SDX_TRY(w.close(x));
  SDX_TRY(w.unlink("/d3/x"));
  SDX_TRY(w.rmdir("/d3"));
  SDX_TRY(w.sync());
  SDX_ASSIGN(int h, w.create("/h"));      // reuses g's and x's blocks
  SDX_TRY(w.write(h, 0, 50000));
  SDX_TRY(w.fsync(h));
  SDX_TRY(w.fallocate(b, FALLOC_FL_ZERO_RANGE, 1000, 2000));
  SDX_TRY(w.fdatasync(b));
  SDX_TRY(w.rename("/b", "/d2/b2"));      // not synced yet
  w.mark_rename_probe();
  SDX_TRY(w.write(h, 60000, 1000));
  SDX_TRY(w.fsync(h));
  for (int i = 0; i < 3; ++i) {
    SDX_TRY(w.append(h, "/h", 700));
    SDX_TRY(w.fdatasync(h));
  }
  SDX_TRY(w.rename("/d2", "/d4"));         // a directory with a file in it
  SDX_TRY(w.fsync(b));
  SDX_TRY(w.close(b));
  int prev = -1;
  for (uint64_t r = 0; r < rounds(); ++r) {
    std::string p = "/r" + std::to_string(r);
    SDX_ASSIGN(int f, w.create(p));
    SDX_TRY(w.write(f, 0, 3000 + 1000 * (r % 5)));
    SDX_TRY(r % 2 ? w.fdatasync(f) : w.fsync(f));
    SDX_TRY(w.write(f, 100 + r * 7, 50));  // in place
    switch (r % 6) {
      case 0:
        SDX_TRY(w.fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, kB));
        break;
      case 1:
        SDX_TRY(w.truncate(f, 1500));
        break;
      case 2:
        SDX_TRY(w.fallocate(f, FALLOC_FL_ZERO_RANGE, 200, 2000));
        break;
      case 3:  // preallocate beyond EOF, then write into it
        SDX_TRY(w.fallocate(f, FALLOC_FL_KEEP_SIZE, 2 * kB, 2 * kB));
        SDX_TRY(w.write(f, 2 * kB + 10, 100));
        break;
      case 4: {  // a short-lived directory
        SDX_TRY(w.mkdir("/dd"));
        SDX_ASSIGN(int y, w.create("/dd/y"));
        SDX_TRY(w.write(y, 0, 2000));
        SDX_TRY(w.fsync(y));
        SDX_TRY(w.close(y));
        SDX_TRY(w.unlink("/dd/y"));
        SDX_TRY(w.rmdir("/dd"));
        break;
      }
      case 5:  // extending write into new blocks past a hole
        SDX_TRY(w.write(f, 4 * kB + 1, 2 * kB));
        break;
    }
    SDX_TRY(w.fdatasync(f));
    if (r % 7 == 3) {  // a file unlinked while open, written and synced, then closed
      SDX_ASSIGN(int u, w.create("/u"));
      SDX_TRY(w.write(u, 0, 6000));
      SDX_TRY(w.fsync(u));
      SDX_TRY(w.unlink("/u"));
      SDX_TRY(w.write(u, 6000, 3000));
      SDX_TRY(w.fdatasync(u));
      SDX_TRY(w.close(u));
    }
    SDX_TRY(w.rename(p, "/rr"));           // replaces the previous round's file
    if (prev >= 0) SDX_TRY(w.close(prev));
    prev = f;
    if (r % 4 == 3) SDX_TRY(w.sync());
    else SDX_TRY(w.fsync(f));
  }
  if (prev >= 0) SDX_TRY(w.close(prev));
  SDX_TRY(w.close(h));
  return ok();
}

// ------------------------------------------------------------------ the oracle
std::string describe_names(const Names& n, const Model& m) {
  std::string s = "{";
  for (auto& [p, id] : n) s += " " + p + "#" + std::to_string(m.objs[id].ino);
  return s + " }";
}
std::string describe_tree(const test::Tree& t) {
  std::string s = "{";
  for (auto& [p, node] : t) s += " " + p + "#" + std::to_string(node.ino);
  return s + " }";
}

bool ns_matches(const Names& n, const Model& m, const test::Tree& t) {
  if (n.size() != t.size()) return false;
  for (auto& [p, id] : n) {
    auto it = t.find(p);
    if (it == t.end()) return false;
    const Obj& o = m.objs[id];
    if (it->second.is_dir != o.is_dir || it->second.ino != o.ino) return false;
  }
  return true;
}

// What the crash at fence k may leave; violations are appended to `out`.
void check_state(const Model& m, uint64_t k, const test::Tree& tree, std::vector<std::string>& out) {
  // Namespace: a prefix of the namespace operations.
  size_t lo = 0, hi = 0;
  for (auto& [fence, n] : m.ns_acks)
    if (fence < k && n > 0) lo = std::max(lo, n - 1);
  for (size_t i = 0; i < m.ns.size(); ++i)
    if (m.ns_start[i] < k) hi = i;
  std::optional<size_t> match;
  for (size_t p = hi + 1; p-- > lo;) {
    if (ns_matches(m.ns[p], m, tree)) {
      match = p;
      break;
    }
  }
  if (!match) {
    out.push_back("namespace " + describe_tree(tree) + " is none of the states " +
                  std::to_string(lo) + ".." + std::to_string(hi) + "; durable one: " +
                  describe_names(m.ns[lo], m) + ", newest started: " + describe_names(m.ns[hi], m));
    return;
  }
  const Names& names = m.ns[*match];
  for (auto& [path, id] : names) {
    const Obj& o = m.objs[id];
    if (o.is_dir) continue;
    const test::Node& node = tree.at(path);
    size_t nev = 0, nsize = 1;
    uint64_t ack_fence = 0;
    for (auto& a : o.acks)
      if (a.fence < k) nev = a.nev, nsize = a.nsize, ack_fence = a.fence;
    // Size.
    std::set<uint64_t> sizes{o.sizes[nsize - 1].second};
    for (size_t i = nsize; i < o.sizes.size(); ++i)
      if (o.sizes[i].first < k) sizes.insert(o.sizes[i].second);
    if (!sizes.count(node.size)) {
      std::string s;
      for (auto v : sizes) s += " " + std::to_string(v);
      out.push_back(path + " (" + o.name + "): size " + std::to_string(node.size) +
                    " not in {" + s + " } (acknowledged at fence " + std::to_string(ack_fence) + ")");
      continue;
    }
    if (node.data.size() != node.size) {
      out.push_back(path + ": read " + std::to_string(node.data.size()) + " bytes of " +
                    std::to_string(node.size));
      continue;
    }
    // Bytes, segment by segment between event boundaries.
    std::vector<uint64_t> cuts{0, node.size};
    for (auto& e : o.ev) {
      if (e.off < node.size) cuts.push_back(e.off);
      if (e.end < node.size) cuts.push_back(e.end);
    }
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    size_t bad = 0;
    std::string first;
    for (size_t ci = 0; ci + 1 < cuts.size(); ++ci) {
      uint64_t a = cuts[ci], z = cuts[ci + 1];
      auto covers = [&](const Event& e) { return e.off <= a && e.end >= z; };
      bool zero_ok = true;  // before any covering event: never written
      std::vector<uint64_t> seeds;
      for (size_t i = 0; i < nev; ++i)
        if (covers(o.ev[i])) {
          zero_ok = o.ev[i].zero;
          seeds.assign(1, o.ev[i].zero ? 0 : o.ev[i].seed);
          if (o.ev[i].zero) seeds.clear();
        }
      for (size_t i = nev; i < o.ev.size(); ++i)
        if (o.ev[i].start < k && covers(o.ev[i])) {
          if (o.ev[i].zero) zero_ok = true;
          else seeds.push_back(o.ev[i].seed);
        }
      for (uint64_t off = a; off < z; ++off) {
        std::byte got = node.data[off];
        bool okb = zero_ok && got == std::byte{0};
        for (size_t s = 0; !okb && s < seeds.size(); ++s) okb = got == test::pattern_byte(seeds[s], off);
        if (!okb) {
          if (bad++ == 0) {
            std::ostringstream os;
            os << path << " (" << o.name << "): byte " << off << " = " << int(got) << ", allowed:"
               << (zero_ok ? " 0" : "");
            for (auto s : seeds) os << " w" << s << "=" << int(test::pattern_byte(s, off));
            os << " (acknowledged at fence " << ack_fence << ")";
            first = os.str();
          }
        }
      }
    }
    if (bad) out.push_back(first + "; " + std::to_string(bad) + " bad bytes in the file");
  }
}

// ------------------------------------------------------------------ running it
struct Reference {  // a fresh file system after one create+unlink in the root
  uint64_t free_blocks = 0, free_inodes = 0;
};

Result<Reference> reference() {
  auto dev = test::formatted_sim(kDevSize);
  if (!dev) return fail(EIO, "formatted_sim failed");
  SDX_ASSIGN(auto fs, FileSystem::mount(std::move(dev), {.commit_interval_ms = 0}));
  { SDX_ASSIGN(File f, fs->open("/x", O_CREAT | O_RDWR)); }
  SDX_TRY(fs->unlink("/x"));
  SDX_TRY(fs->sync());
  SDX_ASSIGN(StatFs s, fs->statfs());
  SDX_TRY(fs->unmount());
  return Reference{s.free_blocks, s.free_inodes};
}

struct Variant {
  double p;
  bool torn;
  const char* name;
};
constexpr Variant kVariants[] = {{0.0, false, "p=0"}, {0.5, true, "p=0.5 torn"}, {1.0, false, "p=1"}};

std::vector<crashtest::CrashVariant> variants() {
  std::vector<crashtest::CrashVariant> v;
  for (const Variant& x : kVariants) v.push_back({x.p, x.torn});
  return v;
}

using Images = std::vector<crashtest::FenceCapture::Image>;

struct RunResult {
  Model model;
  uint64_t base = 0;  // fence count when the workload started
  uint64_t end = 0;   // after unmount
};

// Format, mount, run the workload, unmount; with `points`, capture images there into
// `images` (a point past the last fence is taken after unmount).
Result<RunResult> run_once(const std::vector<uint64_t>* points = nullptr, Images* images = nullptr) {
  RunResult rr;
  auto dev = test::formatted_sim(kDevSize);
  if (!dev) return fail(EIO, "formatted_sim failed");
  device::SimDevice* sim = dev.get();
  SDX_ASSIGN(auto fs, FileSystem::mount(std::move(dev), {.commit_interval_ms = 0}));
  rr.base = sim->fence_count();
  std::optional<crashtest::FenceCapture> cap;
  if (points) cap.emplace(*sim, *points, variants(), 0);
  {
    Workload w(*fs, *sim, rr.model);
    Status s = run_workload(w);
    w.close_all();
    if (!s) return fail(s.error().code, "workload: " + s.error().message);
  }
  SDX_TRY(fs->unmount());
  rr.end = sim->fence_count();
  rr.model.end_fence = rr.end;
  if (cap) {
    if (std::binary_search(points->begin(), points->end(), rr.end + 1)) cap->take_now(rr.end + 1);
    *images = std::move(cap->images());
  }
  return rr;
}

std::string fsck_text(const FsckReport& r) {
  std::string s = r.usable ? "" : "not usable; ";
  for (auto& p : r.problems) s += p + "; ";
  return s;
}

// Delete everything, then the space and inodes must be those of a fresh file system.
Status check_no_leak(FileSystem& fs, const test::Tree& tree, const Reference& ref) {
  std::vector<std::pair<std::string, bool>> paths;
  for (auto& [p, n] : tree) paths.emplace_back(p, n.is_dir);
  std::sort(paths.begin(), paths.end(), [](auto& x, auto& y) {
    return std::count(x.first.begin(), x.first.end(), '/') > std::count(y.first.begin(), y.first.end(), '/');
  });
  for (auto& [p, dir] : paths) SDX_TRY(dir ? fs.rmdir(p) : fs.unlink(p));
  { SDX_ASSIGN(File f, fs.open("/x", O_CREAT | O_RDWR)); }
  SDX_TRY(fs.unlink("/x"));
  SDX_TRY(fs.sync());
  SDX_ASSIGN(StatFs s, fs.statfs());
  if (s.free_blocks != ref.free_blocks || s.free_inodes != ref.free_inodes)
    return fail(EIO, "after deleting everything: " + std::to_string(s.free_blocks) +
                         " free blocks, " + std::to_string(s.free_inodes) +
                         " free inodes; a fresh file system has " + std::to_string(ref.free_blocks) +
                         " and " + std::to_string(ref.free_inodes) + " (leak)");
  return ok();
}

// Everything checked for one crash image; violations go to `out`.
void check_image(const Model& m, uint64_t k, const device::CrashImage& img, const Reference& ref,
                 std::vector<std::string>& out) {
  auto dev = device::make_sim(img);
  if (!dev) {
    out.push_back("make_sim(image) failed");
    return;
  }
  FsckReport rep = FileSystem::fsck(*dev);
  if (!rep.clean()) out.push_back("fsck before mount: " + fsck_text(rep));
  auto fs = FileSystem::mount(std::move(dev), {.commit_interval_ms = 0});
  if (!fs) {
    out.push_back("mount: " + fs.error().to_string());
    return;
  }
  auto tree = test::snapshot(**fs);
  if (!tree) {
    out.push_back("reading the recovered tree: " + tree.error().to_string());
    return;
  }
  check_state(m, k, *tree, out);
  if (auto s = (*fs)->unmount(); !s) {
    out.push_back("unmount after recovery: " + s.error().to_string());
    return;
  }
  // Second cycle: what the clean unmount left must be clean and identical.
  auto img2 = test::durable_image(**fs);
  fs->reset();
  auto dev2 = device::make_sim(img2);
  FsckReport rep2 = FileSystem::fsck(*dev2);
  if (!rep2.clean()) out.push_back("fsck after recovery + unmount: " + fsck_text(rep2));
  auto fs2 = FileSystem::mount(std::move(dev2), {.commit_interval_ms = 0});
  if (!fs2) {
    out.push_back("second mount: " + fs2.error().to_string());
    return;
  }
  auto tree2 = test::snapshot(**fs2);
  if (!tree2) {
    out.push_back("second mount, reading the tree: " + tree2.error().to_string());
    return;
  }
  if (!(*tree2 == *tree)) out.push_back("second mount shows a different tree: " + describe_tree(*tree2));
  if (auto s = check_no_leak(**fs2, *tree2, ref); !s) out.push_back(s.error().message);
  if (auto s = (*fs2)->unmount(); !s) out.push_back("final unmount: " + s.error().to_string());
}

// The fence points to test: all of (base, end+1] if few, else `want` spread evenly.
std::vector<uint64_t> choose_points(uint64_t base, uint64_t end, uint64_t want) {
  std::vector<uint64_t> pts;
  uint64_t n = end + 1 - base;  // points base+1 .. end+1
  if (want == 0) want = 1;
  if (n <= want) {
    for (uint64_t k = base + 1; k <= end + 1; ++k) pts.push_back(k);
  } else {
    for (uint64_t i = 0; i < want; ++i) pts.push_back(base + 1 + i * (n - 1) / (want - 1));
    pts.erase(std::unique(pts.begin(), pts.end()), pts.end());
  }
  return pts;
}

class CrashTest : public testing::TestWithParam<int> {};

TEST_P(CrashTest, EveryFencePointRecovers) {
  const int shard = GetParam();
  SDX_ASSERT_OK_AND_ASSIGN(RunResult first, run_once());
  ASSERT_GT(first.end, first.base + 50) << "the workload issues implausibly few fences";
  SDX_ASSERT_OK_AND_ASSIGN(Reference ref, reference());
  const uint64_t want = test::env_u64("SYNCDAX_CRASH_POINTS", 1000);
  auto all = choose_points(first.base, first.end, want);
  std::vector<uint64_t> mine;
  for (size_t i = shard; i < all.size(); i += kShards) mine.push_back(all[i]);
  if (shard == 0)
    std::printf("workload: %llu fences (%llu..%llu); %zu crash points x %zu images, %d shards\n",
                (unsigned long long)(first.end - first.base), (unsigned long long)first.base,
                (unsigned long long)first.end, all.size(), std::size(kVariants), kShards);

  const size_t kBatch = 12;
  std::vector<std::string> violations;
  size_t checked = 0;
  for (size_t i = 0; i < mine.size(); i += kBatch) {
    const std::vector<uint64_t> batch(mine.begin() + i, mine.begin() + std::min(mine.size(), i + kBatch));
    Images images;
    SDX_ASSERT_OK_AND_ASSIGN(RunResult rr, run_once(&batch, &images));
    ASSERT_EQ(rr.end, first.end) << "the workload is not deterministic";
    ASSERT_EQ(rr.model.ns.size(), first.model.ns.size());
    ASSERT_EQ(images.size(), batch.size() * std::size(kVariants))
        << "the fence hook did not fire at every chosen point";
    for (const auto& img : images) {
      std::vector<std::string> v;
      check_image(rr.model, img.fence, img.image, ref, v);
      ++checked;
      for (auto& s : v)
        violations.push_back("crash at fence " + std::to_string(img.fence) + " (" + kVariants[img.variant].name +
                             "): " + s);
    }
  }
  EXPECT_EQ(checked, mine.size() * std::size(kVariants));
  std::string report;
  for (size_t i = 0; i < violations.size() && i < test::env_u64("SYNCDAX_CRASH_REPORT", 25); ++i) report += "\n  " + violations[i];
  EXPECT_TRUE(violations.empty()) << violations.size() << " violations in " << checked
                                  << " crash images:" << report;
}

INSTANTIATE_TEST_SUITE_P(Shards, CrashTest, testing::Range(0, kShards));

// ------------------------------------------------------------------ negative controls
// The oracle must be able to fail: claims the workload never earned are caught. Each
// control checks one crash image twice, with the honest model and with a forged one,
// and requires violations that only the forged model produces (so the control holds
// whether or not the implementation currently passes the main test).
class CrashOracle : public testing::Test {
 protected:
  void SetUp() override {
    auto r = reference();
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    ref_ = *r;
    auto first = run_once();
    ASSERT_TRUE(first.has_value()) << first.error().to_string();
    model_ = first->model;
  }
  // Images at fence k of a full run, one per variant.
  void capture(uint64_t k) {
    const std::vector<uint64_t> points{k};
    auto rr = run_once(&points, &images_);
    ASSERT_TRUE(rr.has_value()) << rr.error().to_string();
    model_ = rr->model;
    ASSERT_EQ(images_.size(), std::size(kVariants));
  }
  std::vector<std::string> check(const Model& m, size_t variant) {
    std::vector<std::string> v;
    check_image(m, images_[variant].fence, images_[variant].image, ref_, v);
    return v;
  }
  // Violations of the forged model that the honest model does not have.
  std::vector<std::string> only_forged(const Model& forged, size_t variant) {
    auto honest = check(model_, variant);
    for (auto& s : honest) std::printf("  (honest model, implementation) %s\n", s.c_str());
    std::vector<std::string> out;
    for (auto& s : check(forged, variant))
      if (std::find(honest.begin(), honest.end(), s) == honest.end()) out.push_back(s);
    for (auto& s : out) std::printf("  (expected) %s\n", s.c_str());
    return out;
  }
  Reference ref_;
  Model model_;
  Images images_;
};

TEST_F(CrashOracle, ClaimingAnUnsyncedWriteIsCaught) {
  const Model::Probe probe = model_.write_probe;
  ASSERT_GE(probe.obj, 0);
  // Crash at the first fence after the extending write, before its fdatasync commits.
  capture(probe.end_fence + 1);
  ASSERT_FALSE(HasFailure());
  Model forged = model_;
  Obj& o = forged.objs[probe.obj];
  Ack fake{probe.end_fence, probe.nev, probe.nsize};
  o.acks.insert(std::upper_bound(o.acks.begin(), o.acks.end(), fake,
                                 [](const Ack& x, const Ack& y) { return x.fence < y.fence; }),
                fake);
  EXPECT_FALSE(only_forged(forged, 0).empty())  // p = 0: only durable lines survive
      << "claiming the unsynced write durable went unnoticed";
}

TEST_F(CrashOracle, ClaimingAnUnsyncedRenameIsCaught) {
  const Model::Probe probe = model_.rename_probe;
  ASSERT_GT(probe.ns_index, 0u);
  capture(probe.end_fence + 1);
  ASSERT_FALSE(HasFailure());
  Model forged = model_;
  forged.ns_acks.emplace_back(probe.end_fence, probe.ns_index);
  std::sort(forged.ns_acks.begin(), forged.ns_acks.end());
  EXPECT_FALSE(only_forged(forged, 0).empty()) << "claiming the unsynced rename durable went unnoticed";
}

TEST_F(CrashOracle, ForeignPatternIsCaughtAsStaleData) {
  // After the final unmount everything is durable; pretend every write had used another
  // pattern: the bytes on the medium must then be seen as not belonging to their files.
  capture(model_.end_fence + 1);
  ASSERT_FALSE(HasFailure());
  Model forged = model_;
  for (auto& o : forged.objs)
    for (auto& e : o.ev)
      if (!e.zero) e.seed += 100000;
  EXPECT_FALSE(only_forged(forged, 2).empty()) << "bytes of the wrong pattern went unnoticed";
}

}  // namespace
}  // namespace sdx
