// tools/cli: the frame every `syncdax` subcommand plugs into -- the Command table entry,
// error reporting ("syncdax: <what>: <message>", exit status), size parsing/printing and
// mount helpers. Knows nothing of any particular subcommand.
#pragma once

#include <CLI/CLI.hpp>

#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "syncdax/status.hpp"
#include "syncdax/syncdax.hpp"

namespace sdx::cli {

// Exit statuses shared by all subcommands (fsck adds its own 1/2 meanings).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// What runs once the command line has been parsed; returns the exit status.
using Action = std::function<int()>;

// One subcommand. `setup` declares the options of `sub` (binding them to state it owns)
// and returns the action to run when that subcommand was chosen. To add a subcommand,
// write a setup function and add one row to the table in syncdax_main.cc.
struct Command {
  const char* name;
  const char* summary;
  Action (*setup)(CLI::App& sub);
};

// A failure of a subcommand, printed by main as "syncdax: <what>: <message>".
struct Failure {
  std::string what;
  std::string message;
  int exit_code = kExitFailure;
};

// A bad command line found after parsing (e.g. a malformed size): exit status 2.
struct UsageFailure : Failure {};

[[noreturn]] inline void fail(std::string what, std::string message, int exit_code = kExitFailure) {
  throw Failure{std::move(what), std::move(message), exit_code};
}

[[noreturn]] inline void usage_fail(std::string what, std::string message) {
  throw UsageFailure{{std::move(what), std::move(message), kExitUsage}};
}

// The message of an Error, with the errno text added unless already in it.
inline std::string describe(const Error& e) {
  std::string errtext = std::strerror(e.code);
  if (e.message.empty()) return errtext;
  if (e.message.find(errtext) != std::string::npos) return e.message;
  return e.message + " (" + errtext + ")";
}

[[noreturn]] inline void fail(std::string what, const Error& e) { fail(std::move(what), describe(e)); }

// The value of `r`, or fail with `what`.
template <class T>
T need(Result<T> r, const std::string& what) {
  if (!r) fail(what, r.error());
  return std::move(*r);
}
inline void need(Status s, const std::string& what) {
  if (!s) fail(what, s.error());
}

// "IMAGE:/path" -- names a file inside an image in messages.
inline std::string in_image(const std::string& image, std::string_view path) {
  return image + ":" + std::string(path);
}

// ---- sizes ----

// A byte count: decimal digits with an optional binary suffix K, M, G or T (any case,
// optionally followed by "iB"): "4096", "64M", "1GiB". Rejects everything else -- empty
// strings, signs, spaces, fractions, unknown suffixes, values beyond 2^64-1 -- with a
// message that says why.
inline Result<uint64_t> parse_size(std::string_view s) {
  const std::string quoted = "'" + std::string(s) + "'";
  const char* hint = " (expected a number with an optional K, M, G or T suffix, e.g. 64M)";
  if (s.empty()) return sdx::fail(EINVAL, "invalid size '': empty" + std::string(hint));
  size_t i = 0;
  uint64_t value = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    uint64_t digit = static_cast<uint64_t>(s[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
      return sdx::fail(ERANGE, "invalid size " + quoted + ": too large");
    }
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0) return sdx::fail(EINVAL, "invalid size " + quoted + ": no number" + hint);
  std::string_view rest = s.substr(i);
  if (rest.empty()) return value;
  int shift = 0;
  switch (std::toupper(static_cast<unsigned char>(rest[0]))) {
    case 'K': shift = 10; break;
    case 'M': shift = 20; break;
    case 'G': shift = 30; break;
    case 'T': shift = 40; break;
    default:
      return sdx::fail(EINVAL, "invalid size " + quoted + ": unknown suffix '" +
                              std::string(rest) + "'" + hint);
  }
  rest.remove_prefix(1);
  if (!rest.empty() && rest != "iB" && rest != "IB" && rest != "ib") {
    return sdx::fail(EINVAL, "invalid size " + quoted + ": unknown suffix '" +
                            std::string(s.substr(i)) + "'" + hint);
  }
  if (value > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return sdx::fail(ERANGE, "invalid size " + quoted + ": too large");
  }
  return value << shift;
}

// parse_size for an option value; a bad value is a usage error naming the option.
inline uint64_t size_arg(const std::string& option, const std::string& value) {
  auto r = parse_size(value);
  if (!r) usage_fail(option, r.error().message);
  return *r;
}

// 67108864 -> "64.0 MiB"; small values in bytes.
inline std::string human_size(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

// "-rw-r--r--" from a mode.
inline std::string mode_string(uint32_t mode) {
  std::string s = "----------";
  if ((mode & 0170000) == 0040000) s[0] = 'd';
  const char* rwx = "rwxrwxrwx";
  for (int b = 0; b < 9; ++b) {
    if (mode & (0400u >> b)) s[1 + b] = rwx[b];
  }
  return s;
}

inline bool is_dir_mode(uint32_t mode) { return (mode & 0170000) == 0040000; }

// Nanoseconds since the epoch as local time, like stat(1): "2024-05-01 10:00:00.123456789 +0200".
inline std::string format_time_ns(int64_t ns) {
  int64_t sec = ns / 1000000000;
  int64_t frac = ns % 1000000000;
  if (frac < 0) {
    frac += 1000000000;
    --sec;
  }
  time_t t = static_cast<time_t>(sec);
  struct tm tm {};
  if (!localtime_r(&t, &tm)) return std::to_string(ns) + " ns";
  char date[64], zone[16];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
  std::strftime(zone, sizeof zone, "%z", &tm);
  char buf[128];
  std::snprintf(buf, sizeof buf, "%s.%09" PRId64 " %s", date, frac, zone);
  return buf;
}

// "FILE: N extents -> M extents, K blocks moved": what defragmenting one file did, as
// `syncdax defrag` and `syncdax io`'s defrag print it.
inline std::string defrag_summary(std::string_view file, const DefragStats& d) {
  char buf[160];
  std::snprintf(buf, sizeof buf, ": %" PRIu64 " extents -> %" PRIu64 " extents, %" PRIu64 " blocks moved",
                d.extents_before, d.extents_after, d.blocks_moved);
  return std::string(file) + buf;
}

// ---- paths inside an image ----

// "/" + "a" -> "/a"; "/d/" + "a" -> "/d/a".
inline std::string join_path(std::string_view dir, std::string_view name) {
  std::string out(dir);
  if (out.empty() || out.back() != '/') out += '/';
  out += name;
  return out;
}

// The last component of a local or image path ("a/b/" -> "b").
inline std::string base_name(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

// ---- mounting ----

// Mount `image` for a short-lived command. The committer is off: the command's own
// fsync calls and the unmount commit everything.
inline std::unique_ptr<FileSystem> mount_image(const std::string& image) {
  MountOptions opt;
  opt.commit_interval_ms = 0;
  return need(FileSystem::mount(image, opt), image);
}

// Unmount, failing loudly: a command only succeeds once its changes are committed.
inline void unmount_image(std::unique_ptr<FileSystem>& fs, const std::string& image) {
  need(fs->unmount(), image);
  fs.reset();
}

// Add the IMAGE positional every subcommand takes.
inline void add_image_arg(CLI::App& sub, std::string& image) {
  sub.add_option("IMAGE", image, "syncdax image (or device) path")->required()->type_name("");
}

}  // namespace sdx::cli
