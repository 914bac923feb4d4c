// tools/cmd_io: `syncdax io IMAGE -c CMD [-c CMD ...]`, an xfs_io for syncdax. The
// commands run in order on one mounted instance and print what xfs_io prints, so that
// scripts and habits carry over; `crash` adds a simulated power failure in the middle
// of a run, after which the later commands see the recovered file system.
#pragma once

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli.h"
#include "device/device.h"

namespace sdx::cli {

namespace io {

// xfs_io's default buffer size: pread and pwrite move one 4 KiB block per operation.
inline constexpr size_t kChunk = 4096;
inline constexpr unsigned char kPwriteByte = 0xcd;  // xfs_io's pwrite default
inline constexpr unsigned char kMwriteByte = 'X';   // xfs_io's mwrite default

// Everything one run works on. The file system is declared first so that the file and
// the mapping, which must not outlive it, are destroyed before it.
struct Session {
  std::unique_ptr<FileSystem> fs;
  File file;
  std::string path;
  bool read_only = false;
  Mapping map;
  bool map_writable = false;
  bool failed = false;  // some command failed: the exit status says so at the end
  bool lost = false;    // a crash's recovery failed: there is no file system left
};

// Errors go to standard error as perror would print them ("pwrite: No space left on
// device"); standard output is flushed first so the two streams interleave in order.
inline void complain(Session& s, const std::string& text) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s\n", text.c_str());
  s.failed = true;
}
inline void complain(Session& s, const std::string& what, const Error& e) {
  complain(s, what + ": " + std::strerror(e.code));
}

// ---- parsing ----

// A command's options, getopt style. `spec` lists the letters; a ':' after one means it
// takes a value ("-p 0xab" or "-p0xab"); letters without values may be grouped ("-rw").
// Options end at the first word not starting with '-', or after "--".
struct Opts {
  std::map<char, std::string> set;
  std::vector<std::string> words;
  bool has(char c) const { return set.count(c) != 0; }
  const std::string& value(char c) const { return set.at(c); }
};

inline std::optional<Opts> getopts(const std::vector<std::string>& args, std::string_view spec) {
  Opts o;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;
    for (size_t k = 1; k < a.size(); ++k) {
      const size_t at = spec.find(a[k]);
      if (a[k] == ':' || at == std::string_view::npos) return std::nullopt;
      if (at + 1 < spec.size() && spec[at + 1] == ':') {
        if (k + 1 < a.size()) {
          o.set[a[k]] = a.substr(k + 1);
        } else if (i + 1 < args.size()) {
          o.set[a[k]] = args[++i];
        } else {
          return std::nullopt;
        }
        break;
      }
      o.set[a[k]] = "";
    }
  }
  o.words.assign(args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
  return o;
}

// A plain unsigned number in C notation (decimal, 0x hex, 0 octal), as strtoull base 0
// reads it, but without the sign and leading blanks strtoull would also accept.
inline std::optional<uint64_t> parse_c_number(const std::string& s, size_t* used) {
  if (s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 0);
  if (errno == ERANGE) return std::nullopt;
  *used = static_cast<size_t>(end - s.c_str());
  return v;
}

// xfs_io's cvtnum: a number with an optional one-letter unit -- b (4 KiB block),
// s (512-byte sector), k, m, g, t, p, e (any case).
inline std::optional<uint64_t> cvtnum(const std::string& s) {
  size_t used = 0;
  auto v = parse_c_number(s, &used);
  if (!v) return std::nullopt;
  if (used == s.size()) return v;
  if (used + 1 != s.size()) return std::nullopt;
  int shift = 0;
  switch (std::tolower(static_cast<unsigned char>(s[used]))) {
    case 's': shift = 9; break;
    case 'b': shift = 12; break;
    case 'k': shift = 10; break;
    case 'm': shift = 20; break;
    case 'g': shift = 30; break;
    case 't': shift = 40; break;
    case 'p': shift = 50; break;
    case 'e': shift = 60; break;
    default: return std::nullopt;
  }
  if (*v > (UINT64_MAX >> shift)) return std::nullopt;
  return *v << shift;
}

inline std::optional<uint64_t> plain_number(const std::string& s) {
  size_t used = 0;
  auto v = parse_c_number(s, &used);
  if (!v || used != s.size()) return std::nullopt;
  return v;
}

inline std::optional<unsigned char> byte_value(const std::string& s) {
  auto v = plain_number(s);
  if (!v || *v > 0xff) return std::nullopt;
  return static_cast<unsigned char>(*v);
}

// OFF and LEN of a command, with xfs_io's complaints about malformed ones.
inline bool offset_length(Session& s, const Opts& o, uint64_t& off, uint64_t& len) {
  auto a = cvtnum(o.words[0]);
  if (!a) {
    complain(s, "non-numeric offset argument -- " + o.words[0]);
    return false;
  }
  auto b = cvtnum(o.words[1]);
  if (!b) {
    complain(s, "non-numeric length argument -- " + o.words[1]);
    return false;
  }
  off = *a;
  len = *b;
  return true;
}

// The fill byte of pwrite/mwrite: -S (xfs_io's name) or -p, else `def`.
inline bool fill_byte(Session& s, const Opts& o, unsigned char def, unsigned char& out) {
  out = def;
  for (char c : {'S', 'p'}) {
    if (!o.has(c)) continue;
    auto v = byte_value(o.value(c));
    if (!v) {
      complain(s, "non-numeric seed -- " + o.value(c));
      return false;
    }
    out = *v;
  }
  return true;
}

inline std::string image_path(const std::string& name) {
  return name.starts_with('/') ? name : "/" + name;
}

// ---- output in xfs_io's formats ----

// xfs_io's cvtstr: whole numbers print without decimals in the largest unit that fits
// ("4 KiB", "1 MiB"; it rounds, so 5000 bytes is "5 KiB"), others with three; below
// 1 KiB plain bytes with printf's %f. Its whole-number test goes through an int, so
// from 2 GiB on nothing counts as whole.
inline std::string cvtstr(double value) {
  static const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  char buf[64];
  if (!(value >= 1024.0)) {
    std::snprintf(buf, sizeof buf, "%f bytes", value);
    return buf;
  }
  const bool whole = value < 2147483648.0 && value == std::floor(value);
  int u = 5;
  while (u > 0 && value < std::ldexp(1.0, 10 * (u + 1))) --u;
  std::snprintf(buf, sizeof buf, whole ? "%.f %s" : "%.3f %s", value / std::ldexp(1.0, 10 * (u + 1)),
                units[u]);
  return buf;
}

// xfs_io's timestr: "0.0001 sec" below a second, else "H:MM:SS.ss".
inline std::string timestr(double seconds) {
  char buf[64];
  if (seconds < 1.0) {
    std::snprintf(buf, sizeof buf, "%.4f sec", seconds);
  } else {
    const auto whole = static_cast<uint64_t>(seconds);
    std::snprintf(buf, sizeof buf, "%" PRIu64 ":%02" PRIu64 ":%05.2f", whole / 3600,
                  whole / 60 % 60, static_cast<double>(whole % 60) + (seconds - std::floor(seconds)));
  }
  return buf;
}

// The two summary lines of pread/pwrite.
inline void report_io(const char* verb, std::chrono::steady_clock::duration took, uint64_t offset,
                      uint64_t count, uint64_t total, uint64_t ops) {
  // A zero interval would print infinite rates; the clock's resolution is the honest floor.
  const double secs = std::max(std::chrono::duration<double>(took).count(), 1e-9);
  std::printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", verb, total, count, offset);
  std::printf("%s, %" PRIu64 " ops; %s (%s/sec and %.4f ops/sec)\n",
              cvtstr(static_cast<double>(total)).c_str(), ops, timestr(secs).c_str(),
              cvtstr(static_cast<double>(total) / secs).c_str(), static_cast<double>(ops) / secs);
}

// pread -v / mread -v: 16 bytes a line, offset, hex, then alphanumerics (others as '.').
inline void dump(const std::byte* p, size_t len, uint64_t offset) {
  for (size_t i = 0; i < len; i += 16) {
    const size_t n = std::min<size_t>(16, len - i);
    char line[96];
    int at = std::snprintf(line, sizeof line, "%08" PRIx64 ":  ", offset + i);
    for (size_t j = 0; j < n; ++j) {
      at += std::snprintf(line + at, sizeof line - static_cast<size_t>(at), "%02x ",
                          std::to_integer<unsigned>(p[i + j]));
    }
    line[at++] = ' ';
    for (size_t j = 0; j < n; ++j) {
      const auto c = std::to_integer<unsigned char>(p[i + j]);
      line[at++] = std::isalnum(c) ? static_cast<char>(c) : '.';
    }
    line[at++] = '\n';
    std::fwrite(line, 1, static_cast<size_t>(at), stdout);
  }
}

// ---- the commands ----

inline void cmd_open(Session& s, const Opts& o) {
  int flags = o.has('r') ? O_RDONLY : O_RDWR;
  if (o.has('c')) flags |= O_CREAT;
  auto f = s.fs->open(image_path(o.words[0]), flags, 0644);
  if (!f) return complain(s, o.words[0], f.error());
  s.file = std::move(*f);
  s.path = image_path(o.words[0]);
  s.read_only = o.has('r');
}

inline void cmd_close(Session& s, const Opts&) {
  if (auto st = s.file.close(); !st) complain(s, "close", st.error());
}

inline void cmd_truncate(Session& s, const Opts& o) {
  auto len = cvtnum(o.words[0]);
  if (!len) return complain(s, "non-numeric truncate argument -- " + o.words[0]);
  if (auto st = s.file.ftruncate(*len); !st) complain(s, "ftruncate", st.error());
}

inline void fallocate_range(Session& s, const Opts& o, int mode) {
  uint64_t off, len;
  if (!offset_length(s, o, off, len)) return;
  if (auto st = s.file.fallocate(mode, off, len); !st) complain(s, "fallocate", st.error());
}

inline void cmd_falloc(Session& s, const Opts& o) {
  fallocate_range(s, o, o.has('k') ? FALLOC_FL_KEEP_SIZE : 0);
}
inline void cmd_fpunch(Session& s, const Opts& o) {
  fallocate_range(s, o, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
}
inline void cmd_fzero(Session& s, const Opts& o) {
  fallocate_range(s, o, FALLOC_FL_ZERO_RANGE | (o.has('k') ? FALLOC_FL_KEEP_SIZE : 0));
}

inline void cmd_pwrite(Session& s, const Opts& o) {
  uint64_t off, len;
  unsigned char byte;
  if (!fill_byte(s, o, kPwriteByte, byte) || !offset_length(s, o, off, len)) return;
  std::vector<std::byte> buf(kChunk, std::byte{byte});
  uint64_t total = 0, ops = 0;
  const auto start = std::chrono::steady_clock::now();
  while (total < len) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, len - total));
    auto n = s.file.pwrite(std::span(buf).first(want), off + total);
    if (!n) return complain(s, "pwrite", n.error());
    ++ops;
    total += *n;
    if (*n < want) break;
  }
  report_io("wrote", std::chrono::steady_clock::now() - start, off, len, total, ops);
}

inline void cmd_pread(Session& s, const Opts& o) {
  uint64_t off, len;
  if (!offset_length(s, o, off, len)) return;
  std::vector<std::byte> buf(kChunk);
  uint64_t total = 0, ops = 0;
  const auto start = std::chrono::steady_clock::now();
  while (total < len) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, len - total));
    auto n = s.file.pread(std::span(buf).first(want), off + total);
    if (!n) return complain(s, "pread", n.error());
    if (*n == 0) break;
    ++ops;
    if (o.has('v')) dump(buf.data(), *n, off + total);
    total += *n;
    if (*n < want) break;
  }
  report_io("read", std::chrono::steady_clock::now() - start, off, len, total, ops);
}

inline void cmd_mmap(Session& s, const Opts& o) {
  if (o.has('S') && o.has('p')) return complain(s, "mmap: -S (MAP_SYNC) needs a shared mapping, not -p");
  uint64_t off, len;
  if (!offset_length(s, o, off, len)) return;
  const bool writable = !(o.has('r') && !o.has('w'));
  const int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  int flags = MAP_SHARED;
  if (o.has('p')) flags = MAP_PRIVATE;
  if (o.has('S')) flags = MAP_SHARED_VALIDATE | MAP_SYNC;
  auto m = s.file.mmap(off, static_cast<size_t>(len), prot, flags);
  if (!m) return complain(s, "mmap", m.error());
  s.map = std::move(*m);
  s.map_writable = writable;
}

// [OFF LEN] of an m* command: offsets within the mapping, the whole mapping if absent.
inline bool mapping_range(Session& s, const Opts& o, const char* cmd, uint64_t& off, uint64_t& len) {
  off = 0;
  len = s.map.size();
  if (!o.words.empty() && !offset_length(s, o, off, len)) return false;
  if (off > s.map.size() || len > s.map.size() - off) {
    complain(s, std::string(cmd) + ": range (" + std::to_string(off) + ":" + std::to_string(len) +
                    ") is beyond mapping (0:" + std::to_string(s.map.size()) + ")");
    return false;
  }
  return true;
}

inline void cmd_mwrite(Session& s, const Opts& o) {
  uint64_t off, len;
  unsigned char byte;
  if (!fill_byte(s, o, kMwriteByte, byte) || !mapping_range(s, o, "mwrite", off, len)) return;
  // A store to a read-only mapping would kill the process with SIGSEGV.
  if (!s.map_writable) return complain(s, "mwrite: the mapping is read-only (mmap -r)");
  std::byte* p = s.map.data() + off;
  std::memset(p, byte, len);
  if (o.has('P')) {
    if (auto st = s.map.persist(p, len); !st) complain(s, "persist", st.error());
  }
}

inline void cmd_mread(Session& s, const Opts& o) {
  uint64_t off, len;
  if (!mapping_range(s, o, "mread", off, len)) return;
  std::vector<std::byte> buf(kChunk);
  for (uint64_t done = 0; done < len;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, len - done));
    // Copying loads every byte, so each page faults in as a read would in xfs_io; the
    // empty asm keeps the compiler from dropping a copy nobody reads without -v.
    std::memcpy(buf.data(), s.map.data() + off + done, n);
    asm volatile("" : : "r"(buf.data()) : "memory");
    if (o.has('v')) dump(buf.data(), n, off + done);
    done += n;
  }
}

inline void cmd_msync(Session& s, const Opts& o) {
  uint64_t off, len;
  if (!mapping_range(s, o, "msync", off, len)) return;
  if (auto st = s.map.sync(off, static_cast<size_t>(len), MS_SYNC); !st) complain(s, "msync", st.error());
}

inline void cmd_munmap(Session& s, const Opts&) {
  if (auto st = s.map.unmap(); !st) complain(s, "munmap", st.error());
}

inline void cmd_fsync(Session& s, const Opts&) {
  if (auto st = s.file.fsync(); !st) complain(s, "fsync", st.error());
}

inline void cmd_fdatasync(Session& s, const Opts&) {
  if (auto st = s.file.fdatasync(); !st) complain(s, "fdatasync", st.error());
}

inline void cmd_stat(Session& s, const Opts&) {
  auto st = s.file.stat();
  if (!st) return complain(s, "stat", st.error());
  std::printf("fd.path = \"%s\"\n", s.path.c_str());
  std::printf("fd.flags = %s\n", s.read_only ? "read-only" : "read-write");
  std::printf("stat.ino = %" PRIu64 "\n", st->ino);
  std::printf("stat.type = %s\n", is_dir_mode(st->mode) ? "directory" : "regular file");
  std::printf("stat.size = %" PRIu64 "\n", st->size);
  std::printf("stat.blocks = %" PRIu64 "\n", st->blocks);
  std::printf("stat.blksize = %u\n", 4096u);
  std::printf("fsxattr.extsize = %u\n", st->extsize_hint);
  std::printf("fsxattr.nextents = %" PRIu64 "\n", st->extents);
}

// ---- reflink, dedupe, defragmentation, extents ----

// SRC_OFF DST_OFF LEN of reflink and dedupe (words 1 to 3), with xfs_io's complaints.
inline bool remap_args(Session& s, const Opts& o, uint64_t& src_off, uint64_t& dst_off, uint64_t& len) {
  auto a = cvtnum(o.words[1]);
  if (!a) {
    complain(s, "non-numeric src offset argument -- " + o.words[1]);
    return false;
  }
  auto b = cvtnum(o.words[2]);
  if (!b) {
    complain(s, "non-numeric dest offset argument -- " + o.words[2]);
    return false;
  }
  auto c = cvtnum(o.words[3]);
  if (!c) {
    complain(s, "non-positive length argument -- " + o.words[3]);
    return false;
  }
  src_off = *a;
  dst_off = *b;
  len = *c;
  return true;
}

// The source file of reflink and dedupe, read-only, as xfs_io opens its infile.
inline std::optional<File> open_source(Session& s, const std::string& name) {
  auto f = s.fs->open(image_path(name), O_RDONLY);
  if (!f) {
    complain(s, name, f.error());
    return std::nullopt;
  }
  return std::move(*f);
}

inline void cmd_reflink(Session& s, const Opts& o) {
  const bool whole = o.words.size() == 1;
  uint64_t src_off = 0, dst_off = 0, len = 0;
  if (!whole && !remap_args(s, o, src_off, dst_off, len)) return;
  auto src = open_source(s, o.words[0]);
  if (!src) return;
  const auto start = std::chrono::steady_clock::now();
  if (whole) {
    if (auto st = s.file.clone(*src); !st) return complain(s, "FICLONE", st.error());
    // xfs_io reports a whole-file reflink as "linked 0/0 bytes", which tells nothing;
    // the source's size is what now reads the same in both files.
    auto st = src->stat();
    if (!st) return complain(s, "stat", st.error());
    len = st->size;
  } else if (auto st = s.file.clone_range(*src, src_off, dst_off, len); !st) {
    return complain(s, "FICLONERANGE", st.error());
  }
  report_io("linked", std::chrono::steady_clock::now() - start, dst_off, len, len, 1);
}

inline void cmd_dedupe(Session& s, const Opts& o) {
  uint64_t src_off, dst_off, len;
  if (!remap_args(s, o, src_off, dst_off, len)) return;
  auto src = open_source(s, o.words[0]);
  if (!src) return;
  const auto start = std::chrono::steady_clock::now();
  auto same = s.file.dedupe_range(*src, src_off, dst_off, len);
  if (!same) return complain(s, "FIDEDUPERANGE", same.error());
  if (!*same) {
    // xfs_io's words, and like xfs_io not a failure: the kernel did what was asked,
    // and a deduplicating script goes on to the next candidate.
    std::fflush(stdout);
    std::fprintf(stderr, "FIDEDUPERANGE: Extents did not match.\n");
    return;
  }
  report_io("deduped", std::chrono::steady_clock::now() - start, dst_off, len, len, 1);
}

inline void cmd_defrag(Session& s, const Opts&) {
  auto d = s.file.defragment();
  if (!d) return complain(s, "defrag", d.error());
  std::printf("%s\n", defrag_summary(s.path, *d).c_str());
}

// xfs_io's `fiemap -v` table, in its 512-byte units: holes between extents get a row
// of their own, and the flags are words ("shared", "unwritten") instead of FIEMAP bits.
inline void cmd_extents(Session& s, const Opts&) {
  auto ext = s.file.extents();
  if (!ext) return complain(s, "extents", ext.error());
  struct Row {
    std::string file, dev, flags;
    uint64_t total;
  };
  auto range = [](uint64_t off, uint64_t len) {
    return std::to_string(off / 512) + ".." + std::to_string((off + len) / 512 - 1);
  };
  std::vector<Row> rows;
  uint64_t at = 0;
  for (const ExtentInfo& e : *ext) {
    if (e.offset > at) rows.push_back({"[" + range(at, e.offset - at) + "]:", "hole", "", (e.offset - at) / 512});
    std::string flags = e.shared ? "shared" : "";
    if (e.unwritten) flags += flags.empty() ? "unwritten" : ",unwritten";
    rows.push_back({"[" + range(e.offset, e.length) + "]:", range(e.dev_offset, e.length), flags, e.length / 512});
    at = e.offset + e.length;
  }
  int file_w = 16, dev_w = 16, total_w = 5;
  for (const Row& r : rows) {
    file_w = std::max(file_w, static_cast<int>(r.file.size()));
    dev_w = std::max(dev_w, static_cast<int>(r.dev.size()));
    total_w = std::max(total_w, static_cast<int>(std::to_string(r.total).size()));
  }
  std::printf("%s:\n", s.path.c_str());
  std::printf("%4s: %-*s %-*s %*s %s\n", "EXT", file_w, "FILE-OFFSET", dev_w, "BLOCK-RANGE", total_w,
              "TOTAL", "FLAGS");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    std::printf("%4zu: %-*s %-*s %*" PRIu64 "%s%s\n", i, file_w, r.file.c_str(), dev_w, r.dev.c_str(), total_w,
                r.total, r.flags.empty() ? "" : " ", r.flags.c_str());
  }
}

inline void cmd_faults(Session& s, const Opts&) {
  const FaultStats fs = s.fs->fault_stats();
  std::printf("%-12s %10s %12s %12s\n", "fault", "count", "avg usec", "max usec");
  for (unsigned k = 0; k < static_cast<unsigned>(FaultKind::kCount); ++k) {
    const auto kind = static_cast<FaultKind>(k);
    const auto& c = fs[kind];
    const std::string name(fault_kind_name(kind));
    if (c.count == 0) {
      std::printf("%-12s %10d %12s %12s\n", name.c_str(), 0, "-", "-");
    } else {
      std::printf("%-12s %10" PRIu64 " %12.3f %12.3f\n", name.c_str(), c.count,
                  static_cast<double>(c.total_ns) / static_cast<double>(c.count) / 1000.0,
                  static_cast<double>(c.max_ns) / 1000.0);
    }
  }
  std::printf("%-12s %10" PRIu64 "\n", "total", fs.total());
  // The seed's histogram form, from the power-of-two nanosecond buckets.
  for (unsigned k = 0; k < static_cast<unsigned>(FaultKind::kCount); ++k) {
    const auto kind = static_cast<FaultKind>(k);
    const auto& c = fs[kind];
    if (c.count == 0) continue;
    std::printf("latency of %s faults:\n", std::string(fault_kind_name(kind)).c_str());
    for (size_t b = 0; b < FaultStats::kBuckets; ++b) {
      if (c.histogram[b] == 0) continue;
      const double lo = static_cast<double>(uint64_t{1} << b) / 1000.0;
      const double hi = static_cast<double>((uint64_t{2} << b) - 1) / 1000.0;
      std::printf("  %.3f - %.3f us: %" PRIu64 "\n", lo, hi, c.histogram[b]);
    }
  }
}

inline void cmd_crash(Session& s, const Opts& o) {
  FileSystem::CrashOptions c;
  if (o.has('p')) {
    const std::string& v = o.value('p');
    char* end = nullptr;
    c.survive_prob = v.empty() ? -1.0 : std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(c.survive_prob >= 0.0 && c.survive_prob <= 1.0)) {
      return complain(s, "crash: invalid probability -- " + v + " (expected 0 to 1)");
    }
  }
  c.torn = o.has('t');
  if (o.has('s')) {
    auto seed = plain_number(o.value('s'));
    if (!seed) return complain(s, "non-numeric seed -- " + o.value('s'));
    c.seed = *seed;
  }
  // Checked before anything is closed, so a refused crash changes nothing.
  if (s.fs->device().kind() != device::Kind::kSim) {
    return complain(s, "crash", Error{EOPNOTSUPP, "not a sim device"});
  }
  // Dropped as a dying process drops them: nothing is synced on the way.
  if (auto st = s.map.unmap(); !st) return complain(s, "munmap", st.error());
  if (auto st = s.file.close(); !st) return complain(s, "close", st.error());
  if (auto st = s.fs->crash(c); !st) {
    // Everything crash refuses beforehand was ruled out above, so this is a failed
    // recovery, which leaves no mounted file system to run anything on.
    s.lost = true;
    return complain(s, "crash: recovery failed: " + describe(st.error()));
  }
  std::printf("crash: power failure simulated; unflushed stores survived with probability %g "
              "(%s, seed %" PRIu64 "); journal replayed, file system mounted again\n",
              c.survive_prob, c.torn ? "torn into 8-byte words" : "whole cache lines", c.seed);
}

enum class Needs { kNothing, kFile, kMapping };

struct IoCommand {
  const char* name;
  const char* args;
  const char* oneline;
  const char* spec;  // getopts letters
  size_t min_words, max_words;
  Needs needs;
  void (*run)(Session&, const Opts&);
};

// min_words/max_words bound the words left after the options; the m* commands take
// none or both of OFF and LEN, and reflink all three offsets or none, which run_command
// checks.
inline constexpr IoCommand kIoCommands[] = {
    {"open", "[-c] [-r] FILE", "open FILE (-c create it, -r read-only); replaces the open file",
     "cr", 1, 1, Needs::kNothing, cmd_open},
    {"close", "", "close the open file", "", 0, 0, Needs::kFile, cmd_close},
    {"truncate", "LEN", "set the file's size", "", 1, 1, Needs::kFile, cmd_truncate},
    {"falloc", "[-k] OFF LEN", "allocate zeroed blocks (-k keep the size)", "k", 2, 2, Needs::kFile,
     cmd_falloc},
    {"fpunch", "OFF LEN", "punch a hole", "", 2, 2, Needs::kFile, cmd_fpunch},
    {"fzero", "[-k] OFF LEN", "zero a range (-k keep the size)", "k", 2, 2, Needs::kFile, cmd_fzero},
    {"pwrite", "[-S BYTE|-p BYTE] OFF LEN", "write BYTE (default 0xcd) over a range, 4 KiB per op",
     "S:p:", 2, 2, Needs::kFile, cmd_pwrite},
    {"pread", "[-v] OFF LEN", "read a range, 4 KiB per op (-v dump it in hex)", "v", 2, 2,
     Needs::kFile, cmd_pread},
    {"mmap", "[-S|-p] [-r|-w] OFF LEN",
     "map a range of the file: -S MAP_SHARED_VALIDATE|MAP_SYNC, -p MAP_PRIVATE, else "
     "MAP_SHARED; -r read-only, -w read-write (default); replaces the current mapping",
     "Sprw", 2, 2, Needs::kFile, cmd_mmap},
    {"mwrite", "[-P] [-S BYTE|-p BYTE] [OFF LEN]",
     "store BYTE (default 'X') through the mapping; -P persists the range with "
     "Mapping::persist: cache-line flushes on a MAP_SYNC mapping, msync on any other",
     "PS:p:", 0, 2, Needs::kMapping, cmd_mwrite},
    {"mread", "[-v] [OFF LEN]", "load a range through the mapping (-v dump it in hex)", "v", 0, 2,
     Needs::kMapping, cmd_mread},
    {"msync", "[OFF LEN]", "msync(MS_SYNC) a range of the mapping", "", 0, 2, Needs::kMapping,
     cmd_msync},
    {"munmap", "", "unmap the current mapping", "", 0, 0, Needs::kMapping, cmd_munmap},
    {"fsync", "", "fsync the open file", "", 0, 0, Needs::kFile, cmd_fsync},
    {"fdatasync", "", "fdatasync the open file", "", 0, 0, Needs::kFile, cmd_fdatasync},
    {"stat", "", "size, blocks allocated (4 KiB), extents of the open file", "", 0, 0, Needs::kFile,
     cmd_stat},
    {"reflink", "SRC [SRC_OFF DST_OFF LEN]",
     "share file SRC's blocks with the open file (FICLONERANGE; LEN 0 = to SRC's end of "
     "file), all of SRC at offset 0 without offsets (FICLONE); a later write copies them",
     "", 1, 4, Needs::kFile, cmd_reflink},
    {"dedupe", "SRC SRC_OFF DST_OFF LEN",
     "share SRC's blocks with the open file's range only if the bytes are equal "
     "(FIDEDUPERANGE); if not, say \"Extents did not match.\" and change nothing",
     "", 4, 4, Needs::kFile, cmd_dedupe},
    {"defrag", "", "move the open file's unshared extents into contiguous free space", "", 0, 0,
     Needs::kFile, cmd_defrag},
    {"extents", "",
     "list the open file's extents and holes like xfs_io's fiemap -v (512-byte units, flags "
     "shared and unwritten)",
     "", 0, 0, Needs::kFile, cmd_extents},
    {"faults", "", "page-fault counts and latencies per kind since mount or crash", "", 0, 0,
     Needs::kNothing, cmd_faults},
    {"crash", "[-p PROB] [-t] [-s SEED]",
     "sim image only: drop the mapping and the file unsynced, simulate a power failure "
     "(unflushed lines survive with PROB, default 0.5; -t tear them into 8-byte words) and "
     "recover",
     "p:ts:", 0, 0, Needs::kNothing, cmd_crash},
};

inline std::vector<std::string> split_words(const std::string& line) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
    size_t j = i;
    while (j < line.size() && !std::isspace(static_cast<unsigned char>(line[j]))) ++j;
    if (j > i) out.emplace_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

// `text` as lines of at most `width` columns, each starting with `indent`.
inline std::string wrap(std::string_view text, const std::string& indent, size_t width) {
  std::string out, line = indent;
  for (const std::string& w : split_words(std::string(text))) {
    if (line.size() > indent.size() && line.size() + 1 + w.size() > width) {
      out += line + "\n";
      line = indent;
    }
    if (line.size() > indent.size()) line += ' ';
    line += w;
  }
  return out + line + "\n";
}

inline void run_command(Session& s, const std::string& line) {
  std::vector<std::string> words = split_words(line);
  if (words.empty()) return;
  const IoCommand* cmd = nullptr;
  for (const IoCommand& c : kIoCommands) {
    if (words[0] == c.name) cmd = &c;
  }
  if (!cmd) return complain(s, "command \"" + words[0] + "\" not found");
  if (s.lost) return complain(s, words[0] + ": no file system (recovery after the crash failed)");
  auto usage = [&] {
    complain(s, std::string(cmd->name) + (*cmd->args ? " " : "") + cmd->args + " -- " + cmd->oneline);
  };
  auto o = getopts(std::vector<std::string>(words.begin() + 1, words.end()), cmd->spec);
  if (!o || o->words.size() < cmd->min_words || o->words.size() > cmd->max_words ||
      (cmd->needs == Needs::kMapping && o->words.size() == 1) ||
      (cmd->run == cmd_reflink && o->words.size() != 1 && o->words.size() != 4)) {
    return usage();
  }
  if (cmd->needs == Needs::kFile && !s.file.is_open()) {
    return complain(s, "no files are open, try 'open FILE'");
  }
  if (cmd->needs == Needs::kMapping && !s.map.is_mapped()) {
    return complain(s, "no mapped regions, try 'mmap OFF LEN'");
  }
  cmd->run(s, *o);
}

}  // namespace io

// syncdax io IMAGE -c CMD [-c CMD ...]
inline Action setup_io(CLI::App& sub) {
  struct Opts {
    std::string image;
    std::vector<std::string> commands;
  };
  auto o = std::make_shared<Opts>();
  add_image_arg(sub, o->image);
  sub.add_option("-c,--command", o->commands, "a command to run (repeatable; see below)")
      ->required()
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->type_name("CMD");
  std::string footer =
      "Runs the commands in order on one mount of IMAGE, printing what xfs_io prints,\n"
      "then unmounts it. Paths are inside the image (\"f\" is \"/f\"); numbers take C\n"
      "notation (0x1f) and one of the units b (4 KiB), s (512), k, m, g, t, p, e. Offsets\n"
      "of mwrite/mread/msync are relative to the start of the mapping.\n"
      "One file and one mapping at a time. The background committer is off: metadata\n"
      "commits on fsync/fdatasync/msync, on a synchronous mapping's write fault, and at\n"
      "the end. stat.blocks counts 4 KiB blocks (xfs_io's counts 512-byte units).\n"
      "A failing command prints its error like xfs_io (\"pwrite: No space left on device\")\n"
      "and the run goes on; the exit status is then 1 (0 when every command succeeded).\n"
      "A dedupe of ranges that differ is not a failure, as in xfs_io: it prints\n"
      "\"FIDEDUPERANGE: Extents did not match.\" on standard error and changes nothing.\n"
      "A store or load through a mapping that gets SIGBUS (past end of file, no space)\n"
      "ends the process, as it would end xfs_io.\n\nCommands:\n";
  for (const io::IoCommand& c : io::kIoCommands) {
    footer += "  " + std::string(c.name) + (*c.args ? " " : "") + c.args + "\n" +
              io::wrap(c.oneline, "      ", 84);
  }
  footer += "\nExample: syncdax io img -c \"open -c f\" -c \"truncate 1m\" -c \"mmap -S 0 1m\" \\\n"
            "           -c \"mwrite -P -p 0xab 0 1m\" -c \"crash -p 0\" -c \"open f\" -c stat\n";
  sub.footer(footer);
  return [o]() {
    io::Session s;
    s.fs = mount_image(o->image);
    for (const std::string& line : o->commands) {
      io::run_command(s, line);
      std::fflush(stdout);
    }
    if (s.lost) return kExitFailure;
    if (auto st = s.map.unmap(); !st) io::complain(s, "munmap", st.error());
    if (auto st = s.file.close(); !st) io::complain(s, "close", st.error());
    unmount_image(s.fs, o->image);
    return s.failed ? kExitFailure : kExitOk;
  };
}

}  // namespace sdx::cli
