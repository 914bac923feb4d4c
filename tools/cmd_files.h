// tools/cmd_files: subcommands about files inside an image -- ls, put, get, stat, defrag.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cli.h"

namespace sdx::cli {

inline constexpr size_t kCopyChunk = 1 << 20;

// A local file descriptor, closed on scope exit.
struct LocalFd {
  int fd = -1;
  explicit LocalFd(int f) : fd(f) {}
  ~LocalFd() {
    if (fd > 2) ::close(fd);
  }
  LocalFd(const LocalFd&) = delete;
  LocalFd& operator=(const LocalFd&) = delete;
};

[[noreturn]] inline void fail_local(const std::string& what) { fail(what, std::strerror(errno)); }

inline void write_all(int fd, const std::byte* p, size_t n, const std::string& what) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail_local(what);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// syncdax ls IMAGE [DIR]
inline Action setup_ls(CLI::App& sub) {
  struct Opts {
    std::string image;
    std::string dir = "/";
  };
  auto o = std::make_shared<Opts>();
  add_image_arg(sub, o->image);
  sub.add_option("DIR", o->dir, "directory inside the image")->capture_default_str()->type_name("");
  sub.footer("One line per entry: mode, size in bytes, name (like a short `ls -l`).");
  return [o]() {
    auto fs = mount_image(o->image);
    struct Row {
      std::string name;
      uint32_t mode = 0;
      uint64_t size = 0;
      bool known = false;
    };
    std::vector<Row> rows;
    auto top = need(fs->stat(o->dir), in_image(o->image, o->dir));
    if (!is_dir_mode(top.mode)) {
      rows.push_back({o->dir, top.mode, top.size, true});
    } else {
      auto entries = need(fs->readdir(o->dir), in_image(o->image, o->dir));
      for (const auto& e : entries) {
        if (e.name == "." || e.name == "..") continue;
        Row row{e.name, e.is_dir ? 0040000u : 0100000u, 0, false};
        if (auto st = fs->stat(join_path(o->dir, e.name))) {
          row.mode = st->mode;
          row.size = st->size;
          row.known = true;
        }
        rows.push_back(std::move(row));
      }
      std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.name < b.name; });
    }
    for (const auto& r : rows) {
      std::string mode = mode_string(r.mode);
      if (!r.known) mode = mode.substr(0, 1) + "?????????";
      std::printf("%s %12llu %s\n", mode.c_str(), static_cast<unsigned long long>(r.size),
                  r.name.c_str());
    }
    unmount_image(fs, o->image);
    return kExitOk;
  };
}

// syncdax put IMAGE LOCAL DEST
inline Action setup_put(CLI::App& sub) {
  struct Opts {
    std::string image, local, dest;
  };
  auto o = std::make_shared<Opts>();
  add_image_arg(sub, o->image);
  sub.add_option("LOCAL", o->local, "local file to copy in")->required()->type_name("");
  sub.add_option("DEST", o->dest, "path inside the image (an existing directory: keep the name)")
      ->required()
      ->type_name("");
  sub.footer("Copies LOCAL into the image, replacing DEST, and fsyncs it.");
  return [o]() {
    LocalFd in(::open(o->local.c_str(), O_RDONLY | O_CLOEXEC));
    if (in.fd < 0) fail_local(o->local);
    struct stat lst {};
    if (::fstat(in.fd, &lst) != 0) fail_local(o->local);
    if (S_ISDIR(lst.st_mode)) fail(o->local, "is a directory");

    auto fs = mount_image(o->image);
    std::string dest = o->dest;
    if (auto st = fs->stat(dest); st && is_dir_mode(st->mode)) {
      dest = join_path(dest, base_name(o->local));
    }
    const std::string what = in_image(o->image, dest);
    {
      auto f = need(fs->open(dest, O_CREAT | O_WRONLY | O_TRUNC, lst.st_mode & 07777), what);
      std::vector<std::byte> buf(kCopyChunk);
      uint64_t off = 0;
      for (;;) {
        ssize_t n = ::read(in.fd, buf.data(), buf.size());
        if (n < 0) {
          if (errno == EINTR) continue;
          fail_local(o->local);
        }
        if (n == 0) break;
        size_t done = 0;
        while (done < static_cast<size_t>(n)) {
          size_t w = need(f.pwrite(std::span(buf).subspan(done, static_cast<size_t>(n) - done),
                                   off),
                          what);
          if (w == 0) fail(what, "write made no progress");
          done += w;
          off += w;
        }
      }
      need(f.fsync(), what);
      need(f.close(), what);
    }
    unmount_image(fs, o->image);
    return kExitOk;
  };
}

// syncdax get IMAGE SRC LOCAL
inline Action setup_get(CLI::App& sub) {
  struct Opts {
    std::string image, src, local;
  };
  auto o = std::make_shared<Opts>();
  add_image_arg(sub, o->image);
  sub.add_option("SRC", o->src, "file inside the image")->required()->type_name("");
  sub.add_option("LOCAL", o->local, "local destination (- for standard output)")
      ->required()
      ->type_name("");
  sub.footer("Copies SRC out of the image into LOCAL (created or replaced).");
  return [o]() {
    auto fs = mount_image(o->image);
    const std::string what = in_image(o->image, o->src);
    {
      auto st = need(fs->stat(o->src), what);
      if (is_dir_mode(st.mode)) fail(what, "is a directory");
      auto f = need(fs->open(o->src, O_RDONLY), what);

      std::string local = o->local;
      int out_fd = STDOUT_FILENO;
      if (local != "-") {
        struct stat lst {};
        if (::stat(local.c_str(), &lst) == 0 && S_ISDIR(lst.st_mode)) {
          local = join_path(local, base_name(o->src));
        }
        out_fd = ::open(local.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, st.mode & 07777);
        if (out_fd < 0) fail_local(local);
      }
      LocalFd out(out_fd);
      std::vector<std::byte> buf(kCopyChunk);
      uint64_t off = 0;
      for (;;) {
        size_t n = need(f.pread(buf, off), what);
        if (n == 0) break;
        write_all(out.fd, buf.data(), n, local);
        off += n;
      }
      if (local != "-" && ::close(std::exchange(out.fd, -1)) != 0) fail_local(local);
      need(f.close(), what);
    }
    unmount_image(fs, o->image);
    return kExitOk;
  };
}

// syncdax stat IMAGE FILE
inline Action setup_stat(CLI::App& sub) {
  struct Opts {
    std::string image, path;
  };
  auto o = std::make_shared<Opts>();
  add_image_arg(sub, o->image);
  sub.add_option("FILE", o->path, "file or directory inside the image")->required()->type_name("");
  sub.footer("Prints size, allocated blocks, extent count, extent-size hint, inode, mode, times.");
  return [o]() {
    auto fs = mount_image(o->image);
    auto st = need(fs->stat(o->path), in_image(o->image, o->path));
    std::printf("file:          %s\n", o->path.c_str());
    std::printf("type:          %s\n", is_dir_mode(st.mode) ? "directory" : "regular file");
    std::printf("inode:         %llu\n", static_cast<unsigned long long>(st.ino));
    std::printf("mode:          %04o (%s)\n", st.mode & 07777, mode_string(st.mode).c_str());
    std::printf("links:         %u\n", st.nlink);
    std::printf("size:          %llu bytes (%s)\n", static_cast<unsigned long long>(st.size),
                human_size(st.size).c_str());
    std::printf("blocks:        %llu (4 KiB; %s allocated)\n",
                static_cast<unsigned long long>(st.blocks), human_size(st.blocks * 4096).c_str());
    std::printf("extents:       %llu\n", static_cast<unsigned long long>(st.extents));
    if (st.extsize_hint) {
      std::printf("extsize hint:  %u bytes (%s)\n", st.extsize_hint,
                  human_size(st.extsize_hint).c_str());
    } else {
      std::printf("extsize hint:  none\n");
    }
    std::printf("access:        %s\n", format_time_ns(st.atime_ns).c_str());
    std::printf("modify:        %s\n", format_time_ns(st.mtime_ns).c_str());
    std::printf("change:        %s\n", format_time_ns(st.ctime_ns).c_str());
    unmount_image(fs, o->image);
    return kExitOk;
  };
}

// syncdax defrag IMAGE FILE
inline Action setup_defrag(CLI::App& sub) {
  struct Opts {
    std::string image, path;
  };
  auto o = std::make_shared<Opts>();
  add_image_arg(sub, o->image);
  sub.add_option("FILE", o->path, "file inside the image")->required()->type_name("");
  sub.footer("Moves FILE's unshared extents into contiguous free space, 2 MiB at a time, and\n"
             "prints \"FILE: N extents -> M extents, K blocks moved\" (4 KiB blocks). Blocks\n"
             "shared with another file (reflink, dedupe) stay where they are.");
  return [o]() {
    auto fs = mount_image(o->image);
    const std::string what = in_image(o->image, o->path);
    {
      auto f = need(fs->open(o->path, O_RDWR), what);
      const DefragStats d = need(f.defragment(), what);
      std::printf("%s\n", defrag_summary(o->path, d).c_str());
      need(f.close(), what);
    }
    unmount_image(fs, o->image);
    return kExitOk;
  };
}

}  // namespace sdx::cli
