#include "oracle.h"

#include <fcntl.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <tuple>

namespace sdx::crashtest {
namespace {

struct RowState {
  bool started = false, acked = false;
  std::optional<uint64_t> ino;
};

// Where a file may be: absent, or present under a name.
struct Place {
  bool present = false;
  std::string name;
  bool operator<(const Place& o) const { return std::tie(present, name) < std::tie(o.present, o.name); }
};

struct FileModel {
  std::optional<uint64_t> ino;
  std::set<Place> places;     // what the namespace may show for it
  std::set<uint64_t> sizes;   // allowed sizes
  std::vector<uint64_t> floor = std::vector<uint64_t>(kMaxFileSize / 8, 0);  // acknowledged words
  std::vector<const Op*> pending;  // started, not acknowledged: may or may not have happened
  bool created = false;            // its creation started
  bool must_exist() const { return std::none_of(places.begin(), places.end(), [](const Place& p) { return !p.present; }); }
  bool deleted() const { return created && places.size() == 1 && !places.begin()->present; }
};

// The value `op` gives word `w` if it covers it.
std::optional<uint64_t> word_of(const Op& op, uint64_t w) {
  const uint64_t off = w * 8;
  switch (op.kind) {
    case OpKind::kCreate: return 0;
    case OpKind::kStore:
    case OpKind::kPwrite:
    case OpKind::kCopy:
    case OpKind::kClone:
      if (off >= op.off && off < op.off + op.len) return pattern_word(op.seed, off);
      return std::nullopt;
    case OpKind::kPunch:
      if (off >= op.off && off < op.off + op.len) return 0;
      return std::nullopt;
    case OpKind::kTruncate:
      if (off >= op.len) return 0;
      return std::nullopt;
    default: return std::nullopt;
  }
}

// The acknowledged words after `op`.
void apply(const Op& op, std::vector<uint64_t>& words) {
  const uint64_t n = words.size();
  switch (op.kind) {
    case OpKind::kCreate: std::fill(words.begin(), words.end(), 0); break;
    case OpKind::kStore:
    case OpKind::kPwrite:
    case OpKind::kCopy:
    case OpKind::kClone:
      for (uint64_t w = op.off / 8; w < std::min(n, (op.off + op.len) / 8); ++w)
        words[w] = pattern_word(op.seed, w * 8);
      break;
    case OpKind::kPunch:
      for (uint64_t w = op.off / 8; w < std::min(n, (op.off + op.len) / 8); ++w) words[w] = 0;
      break;
    case OpKind::kTruncate:
      for (uint64_t w = op.len / 8; w < n; ++w) words[w] = 0;
      break;
    default: break;
  }
}

bool writes_data(OpKind k) {
  return k == OpKind::kCreate || k == OpKind::kStore || k == OpKind::kPwrite || k == OpKind::kCopy || k == OpKind::kClone ||
         k == OpKind::kPunch || k == OpKind::kTruncate || k == OpKind::kFallocate;
}

std::string hex(uint64_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%016" PRIx64, v);
  return b;
}

}  // namespace

std::vector<std::string> check_recovered(FileSystem& fs, const std::vector<Op>& table, const History& h,
                                         uint64_t k) {
  std::vector<std::string> out;
  std::vector<RowState> rows(table.size());
  for (size_t i = 0; i < h.size(); ++i) {
    const Record& r = h[i];
    if (!r.valid.load(std::memory_order_acquire) || r.row >= table.size()) continue;
    if (k != kAllRecords && r.fence >= k) continue;
    RowState& s = rows[r.row];
    switch (r.event) {
      case Event::kStart: s.started = true; break;
      case Event::kIno: s.ino = r.ino; break;
      case Event::kAck: s.acked = true; break;
    }
  }

  uint32_t nfiles = 0;
  for (const Op& op : table) nfiles = std::max(nfiles, op.file + 1);
  std::vector<FileModel> files(nfiles);
  std::vector<std::string> names(nfiles);
  std::map<uint64_t, const Op*> by_seed;  // to name the owner of a stray word
  for (uint32_t id = 0; id < nfiles; ++id) files[id].places.insert(Place{});

  // Namespace: the place after the last acknowledged change, plus after each later
  // started one. Table order is execution order for each file (one lane changes names).
  auto place_change = [&](uint32_t id, const Place& p, const RowState& s) {
    FileModel& f = files[id];
    if (s.acked) {
      f.places = {p};
    } else {
      f.places.insert(p);
    }
  };
  for (size_t r = 0; r < table.size(); ++r) {
    const Op& op = table[r];
    const RowState& s = rows[r];
    if (op.seed) by_seed.emplace(op.seed, &op);
    if (!s.started) continue;
    FileModel& f = files[op.file];
    switch (op.kind) {
      case OpKind::kCreate:
        f.created = true;
        f.ino = s.ino;
        names[op.file] = file_name(op.file);
        place_change(op.file, {true, names[op.file]}, s);
        break;
      case OpKind::kRename: {
        const std::string to = op.aux != kNoFile ? names[op.aux] : renamed_name(op.name);
        if (op.aux != kNoFile) place_change(op.aux, {}, s);
        names[op.file] = to;
        place_change(op.file, {true, to}, s);
        break;
      }
      case OpKind::kUnlink: place_change(op.file, {}, s); break;
      default: break;
    }
    if (!writes_data(op.kind)) continue;
    if (s.acked) {
      f.sizes = {op.size_after};
      apply(op, f.floor);
    } else {
      if (f.sizes.empty()) f.sizes.insert(0);
      f.sizes.insert(op.size_after);
      f.pending.push_back(&op);
    }
  }
  for (auto& f : files)
    if (f.sizes.empty()) f.sizes.insert(0);

  // What the recovered namespace shows.
  auto ents = fs.readdir("/");
  if (!ents) return {"readdir /: " + ents.error().to_string()};
  std::vector<int> matched(nfiles, 0);
  for (const DirEntry& e : *ents) {
    if (e.name == "." || e.name == "..") continue;
    const std::string path = "/" + e.name;
    auto st = fs.stat(path);
    if (!st) {
      out.push_back("stat " + path + ": " + st.error().to_string());
      continue;
    }
    std::optional<uint32_t> who;
    for (uint32_t id = 0; id < nfiles && !who; ++id) {
      const FileModel& f = files[id];
      if (!f.places.count(Place{true, path})) continue;
      if (f.ino && *f.ino != st->ino) continue;
      who = id;
    }
    if (!who) {
      out.push_back("unexpected file " + path + " (inode " + std::to_string(st->ino) +
                    "): no file the workload made may be there");
      continue;
    }
    const uint32_t id = *who;
    FileModel& f = files[id];
    if (matched[id]++) {
      out.push_back(path + ": " + file_name(id) + " appears twice");
      continue;
    }
    if (!f.sizes.count(st->size)) {
      std::string allowed;
      for (uint64_t v : f.sizes) allowed += " " + std::to_string(v);
      out.push_back(path + " (" + file_name(id) + "): size " + std::to_string(st->size) + " not in {" +
                    allowed + " }");
      continue;
    }
    auto file = fs.open(path, O_RDONLY);
    if (!file) {
      out.push_back("open " + path + ": " + file.error().to_string());
      continue;
    }
    std::vector<std::byte> data(st->size);
    size_t got = 0;
    while (got < data.size()) {
      auto n = file->pread(std::span(data).subspan(got), got);
      if (!n || *n == 0) break;
      got += *n;
    }
    if (got != data.size()) {
      out.push_back("read " + path + ": " + std::to_string(got) + " of " + std::to_string(data.size()) + " bytes");
      continue;
    }
    size_t bad = 0;
    std::string first;
    for (uint64_t w = 0; w * 8 + 8 <= data.size(); ++w) {
      uint64_t v;
      std::memcpy(&v, data.data() + w * 8, 8);
      if (w < f.floor.size() && v == f.floor[w]) continue;
      bool allowed = false;
      for (const Op* op : f.pending) {
        auto pv = word_of(*op, w);
        if (pv && *pv == v) allowed = true;
      }
      if (allowed) continue;
      if (bad++) continue;
      first = path + " (file " + file_name(id).substr(1) + ") offset " + std::to_string(w * 8) + ": " + hex(v);
      uint64_t seed, off;
      if (v == 0) {
        first += " (zero)";
      } else if (decode_word(v, seed, off) && by_seed.count(seed)) {
        const Op& src = *by_seed.at(seed);
        const uint32_t owner = src.file;
        first += std::string(" is the ") + op_name(src.kind) + " of seed " + std::to_string(seed) + " to " +
                 file_name(owner) + " at " + std::to_string(off);
        if (owner != id && files[owner].deleted()) first += ", a deleted file's data";
      } else {
        first += " (no write of the workload)";
      }
      first += "; acknowledged: " + hex(w < f.floor.size() ? f.floor[w] : 0);
    }
    if (bad) out.push_back(first + " (" + std::to_string(bad) + " bad words in the file)");
  }
  for (uint32_t id = 0; id < nfiles; ++id) {
    if (files[id].created && files[id].must_exist() && !matched[id]) {
      std::string where;
      for (const Place& p : files[id].places) where += " " + p.name;
      out.push_back(file_name(id) + " (acknowledged, expected at" + where + ") is missing");
    }
  }
  return out;
}

}  // namespace sdx::crashtest
