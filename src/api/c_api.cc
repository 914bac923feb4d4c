// api/c_api: the C API of syncdax/syncdax.h over the C++ FileSystem/File. Owns the
// per-file-system descriptor table and the per-thread error message; turns every Error
// into errno and every C++ exception into an errno value, so nothing throws across the
// C boundary.
#include "syncdax/syncdax.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "syncdax/syncdax.hpp"

struct sdx_fs {
  std::unique_ptr<sdx::FileSystem> fs;
  std::mutex mu;  // guards fds
  // Index = descriptor. An operation copies the shared_ptr under `mu` and works
  // outside it, so a concurrent close never frees a File that is still in use.
  std::vector<std::shared_ptr<sdx::File>> fds;
};

namespace {

// The largest transfer of one call, as Linux's MAX_RW_COUNT: keeps results in ssize_t.
constexpr size_t kMaxRw = static_cast<size_t>(INT_MAX) & ~size_t{4095};
// Upper bound of the descriptor table (EMFILE beyond).
constexpr size_t kMaxFds = size_t{1} << 20;

// The calling thread's last error. A fixed buffer: recording an error never allocates.
thread_local char t_msg[512] = "";
thread_local int t_code = 0;

// Record an error and return -1. errno itself is set by the outermost wrapper once all
// destructors of the call have run, so nothing can clobber it on the way out.
int record(int code, std::string_view msg) noexcept {
  if (code <= 0) code = EIO;
  if (msg.empty()) msg = std::strerror(code);
  size_t n = std::min(msg.size(), sizeof t_msg - 1);
  std::memcpy(t_msg, msg.data(), n);
  t_msg[n] = '\0';
  t_code = code;
  return -1;
}

int record(const sdx::Error& e) noexcept { return record(e.code, e.message); }

template <class T>
int record(const sdx::Result<T>& r) noexcept {
  return record(r.error());
}

// Run `fn` (returning int or ssize_t, -1 after record()) with exceptions contained.
template <class Fn>
auto guarded(Fn&& fn) noexcept -> decltype(fn()) {
  decltype(fn()) rc;
  try {
    rc = fn();
  } catch (const std::bad_alloc&) {
    rc = record(ENOMEM, "out of memory");
  } catch (const std::exception& e) {
    char buf[400];
    std::snprintf(buf, sizeof buf, "internal error: %s", e.what());
    rc = record(EIO, buf);
  } catch (...) {
    rc = record(EIO, "internal error: unknown exception");
  }
  if (rc == -1) errno = t_code;
  return rc;
}

// The same for calls returning a pointer (NULL on error).
template <class Fn>
auto guarded_ptr(Fn&& fn) noexcept -> decltype(fn()) {
  decltype(fn()) p = nullptr;
  bool failed = false;
  try {
    p = fn();
    failed = (p == nullptr);
  } catch (const std::bad_alloc&) {
    record(ENOMEM, "out of memory");
    failed = true;
  } catch (const std::exception& e) {
    char buf[400];
    std::snprintf(buf, sizeof buf, "internal error: %s", e.what());
    record(EIO, buf);
    failed = true;
  } catch (...) {
    record(EIO, "internal error: unknown exception");
    failed = true;
  }
  if (failed) {
    p = nullptr;
    errno = t_code;
  }
  return p;
}

#define SDX_CHECK_FS(fs) \
  if ((fs) == nullptr || !(fs)->fs) return record(EINVAL, "file system handle is NULL")
#define SDX_CHECK_PTR(p, what) \
  if ((p) == nullptr) return record(EFAULT, what " is NULL")

std::shared_ptr<sdx::File> lookup(sdx_fs* fs, int fd) {
  std::lock_guard lk(fs->mu);
  if (fd < 0 || static_cast<size_t>(fd) >= fs->fds.size()) return nullptr;
  return fs->fds[static_cast<size_t>(fd)];
}

int bad_fd(int fd) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "bad file descriptor %d", fd);
  return record(EBADF, buf);
}

void fill(struct sdx_stat* out, const sdx::Stat& s) {
  *out = {};
  out->ino = s.ino;
  out->mode = s.mode;
  out->nlink = s.nlink;
  out->size = s.size;
  out->blocks = s.blocks;
  out->extents = s.extents;
  out->extsize_hint = s.extsize_hint;
  out->atime_ns = s.atime_ns;
  out->mtime_ns = s.mtime_ns;
  out->ctime_ns = s.ctime_ns;
}

sdx::MountOptions to_cpp(const struct sdx_mount_opts* o) {
  sdx::MountOptions m;
  if (o) {
    m.commit_interval_ms = o->commit_interval_ms;
    m.msync_on_fence = o->msync_on_fence != 0;
    m.seed = o->seed;
  }
  return m;
}

// Run `op(File&)` (returning a Status) on descriptor `fd`.
template <class Op>
int with_file(sdx_fs* fs, int fd, Op&& op) {
  SDX_CHECK_FS(fs);
  auto f = lookup(fs, fd);
  if (!f) return bad_fd(fd);
  auto st = op(*f);
  if (!st) return record(st.error());
  return 0;
}

// pread/pwrite: the argument checks they share, then `io(File&, count, offset)`.
template <class Io>
ssize_t transfer(sdx_fs* fs, int fd, const void* buf, size_t count, off_t offset, Io&& io) {
  return guarded([&]() -> ssize_t {
    SDX_CHECK_FS(fs);
    auto f = lookup(fs, fd);
    if (!f) return bad_fd(fd);
    if (offset < 0) return record(EINVAL, "negative offset");
    if (count == 0) return 0;
    SDX_CHECK_PTR(buf, "buffer");
    auto r = io(*f, std::min(count, kMaxRw), static_cast<uint64_t>(offset));
    if (!r) return record(r);
    return static_cast<ssize_t>(*r);
  });
}

// clone/dedupe: both descriptors first (EBADF, as Linux checks them before the
// arguments), then the signs of the offsets and the length, then
// `op(src, dst, src_off, dst_off, len)`, which returns the call's result or record()'s -1.
template <class Op>
int with_file_pair(sdx_fs* fs, int src_fd, off_t src_off, int dst_fd, off_t dst_off, off_t len,
                   const char* what, Op&& op) {
  SDX_CHECK_FS(fs);
  auto src = lookup(fs, src_fd);
  if (!src) return bad_fd(src_fd);
  auto dst = lookup(fs, dst_fd);
  if (!dst) return bad_fd(dst_fd);
  if (src_off < 0 || dst_off < 0 || len < 0) {
    return record(EINVAL, std::string(what) + ": offsets and length must be >= 0");
  }
  return op(*src, *dst, static_cast<uint64_t>(src_off), static_cast<uint64_t>(dst_off),
            static_cast<uint64_t>(len));
}

// Run `op(FileSystem&, path)` (returning a Status) on a path argument.
template <class Op>
int with_path(sdx_fs* fs, const char* path, Op&& op) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    SDX_CHECK_PTR(path, "path");
    auto st = op(*fs->fs, path);
    if (!st) return record(st.error());
    return 0;
  });
}

}  // namespace

extern "C" {

const char* sdx_errormsg(void) { return t_msg; }

int sdx_mkfs(const char* path, uint64_t size, const char* kind) {
  return guarded([&]() -> int {
    SDX_CHECK_PTR(path, "path");
    sdx::MkfsOptions opt;
    opt.size = size;
    std::string_view k = kind ? kind : "file";
    if (k == "file") {
      opt.kind = sdx::DeviceKind::kFile;
    } else if (k == "sim") {
      opt.kind = sdx::DeviceKind::kSim;
    } else if (k == "dax") {
      opt.kind = sdx::DeviceKind::kDax;
    } else {
      return record(EINVAL, "unknown device kind '" + std::string(k) +
                                "' (expected file, sim or dax)");
    }
    auto st = sdx::FileSystem::mkfs(path, opt);
    if (!st) return record(st.error());
    return 0;
  });
}

void sdx_mount_opts_init(struct sdx_mount_opts* opts) {
  if (!opts) return;
  sdx::MountOptions d;
  *opts = {};
  opts->commit_interval_ms = d.commit_interval_ms;
  opts->msync_on_fence = d.msync_on_fence ? 1 : 0;
  opts->seed = d.seed;
}

sdx_fs* sdx_mount_opts(const char* path, const struct sdx_mount_opts* opts) {
  return guarded_ptr([&]() -> sdx_fs* {
    if (!path) {
      record(EFAULT, "path is NULL");
      return nullptr;
    }
    auto handle = std::make_unique<sdx_fs>();
    auto r = sdx::FileSystem::mount(path, to_cpp(opts));
    if (!r) {
      record(r.error());
      return nullptr;
    }
    handle->fs = std::move(*r);
    return handle.release();
  });
}

sdx_fs* sdx_mount(const char* path) { return sdx_mount_opts(path, nullptr); }

int sdx_unmount(sdx_fs* fs) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    {
      std::lock_guard lk(fs->mu);
      size_t open = 0;
      for (auto& f : fs->fds) open += (f != nullptr);
      if (open) {
        return record(EBUSY, "cannot unmount: " + std::to_string(open) +
                                 " descriptor(s) still open");
      }
    }
    auto st = fs->fs->unmount();
    // Live mappings keep it busy as descriptors do; it stays mounted and usable.
    if (!st && st.error().code == EBUSY) return record(st.error());
    std::unique_ptr<sdx_fs> owner(fs);  // released whatever happened otherwise
    if (!st) return record(st.error());
    return 0;
  });
}

int sdx_sync(sdx_fs* fs) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    auto st = fs->fs->sync();
    if (!st) return record(st);
    return 0;
  });
}

int sdx_mkdir(sdx_fs* fs, const char* path, mode_t mode) {
  return with_path(fs, path, [&](sdx::FileSystem& f, const char* p) { return f.mkdir(p, static_cast<uint32_t>(mode)); });
}

int sdx_rmdir(sdx_fs* fs, const char* path) {
  return with_path(fs, path, [&](sdx::FileSystem& f, const char* p) { return f.rmdir(p); });
}

int sdx_unlink(sdx_fs* fs, const char* path) {
  return with_path(fs, path, [&](sdx::FileSystem& f, const char* p) { return f.unlink(p); });
}

int sdx_rename(sdx_fs* fs, const char* from, const char* to) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    SDX_CHECK_PTR(from, "source path");
    SDX_CHECK_PTR(to, "target path");
    auto st = fs->fs->rename(from, to);
    if (!st) return record(st);
    return 0;
  });
}

int sdx_stat(sdx_fs* fs, const char* path, struct sdx_stat* st) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    SDX_CHECK_PTR(path, "path");
    SDX_CHECK_PTR(st, "stat buffer");
    auto r = fs->fs->stat(path);
    if (!r) return record(r);
    fill(st, *r);
    return 0;
  });
}

int sdx_statfs(sdx_fs* fs, struct sdx_statfs* st) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    SDX_CHECK_PTR(st, "statfs buffer");
    auto r = fs->fs->statfs();
    if (!r) return record(r);
    *st = {};
    st->block_size = r->block_size;
    st->total_blocks = r->total_blocks;
    st->free_blocks = r->free_blocks;
    st->total_inodes = r->total_inodes;
    st->free_inodes = r->free_inodes;
    st->name_max = r->name_max;
    return 0;
  });
}

int sdx_readdir(sdx_fs* fs, const char* path, sdx_readdir_cb cb, void* ctx) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    SDX_CHECK_PTR(path, "path");
    SDX_CHECK_PTR(cb, "callback");
    auto r = fs->fs->readdir(path);
    if (!r) return record(r);
    for (const auto& e : *r) {
      int rc = cb(e.name.c_str(), e.ino, e.is_dir ? 1 : 0, ctx);
      if (rc != 0) return rc;
    }
    return 0;
  });
}

int sdx_open(sdx_fs* fs, const char* path, int flags, mode_t mode) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    SDX_CHECK_PTR(path, "path");
    auto r = fs->fs->open(path, flags, static_cast<uint32_t>(mode));
    if (!r) return record(r);
    auto file = std::make_shared<sdx::File>(std::move(*r));
    std::lock_guard lk(fs->mu);
    size_t fd = 0;
    while (fd < fs->fds.size() && fs->fds[fd]) ++fd;
    if (fd == fs->fds.size()) {
      if (fd >= kMaxFds) return record(EMFILE, "too many open descriptors");
      fs->fds.push_back(std::move(file));
    } else {
      fs->fds[fd] = std::move(file);
    }
    return static_cast<int>(fd);
  });
}

int sdx_close(sdx_fs* fs, int fd) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    std::shared_ptr<sdx::File> f;
    {
      std::lock_guard lk(fs->mu);
      if (fd < 0 || static_cast<size_t>(fd) >= fs->fds.size() || !fs->fds[fd]) {
        return bad_fd(fd);
      }
      f = std::move(fs->fds[fd]);
      while (!fs->fds.empty() && !fs->fds.back()) fs->fds.pop_back();
    }
    // The number is free now. If no other thread is inside a call on this File, close
    // it here and report the result; otherwise the last user's reference closes it.
    if (f.use_count() == 1) {
      auto st = f->close();
      if (!st) return record(st);
    }
    return 0;
  });
}

ssize_t sdx_pread(sdx_fs* fs, int fd, void* buf, size_t count, off_t offset) {
  return transfer(fs, fd, buf, count, offset, [&](sdx::File& f, size_t n, uint64_t off) {
    return f.pread({static_cast<std::byte*>(buf), n}, off);
  });
}

ssize_t sdx_pwrite(sdx_fs* fs, int fd, const void* buf, size_t count, off_t offset) {
  return transfer(fs, fd, buf, count, offset, [&](sdx::File& f, size_t n, uint64_t off) {
    return f.pwrite({static_cast<const std::byte*>(buf), n}, off);
  });
}

int sdx_fallocate(sdx_fs* fs, int fd, int mode, off_t offset, off_t len) {
  return guarded([&]() -> int {
    if (offset < 0 || len <= 0) {
      SDX_CHECK_FS(fs);
      if (!lookup(fs, fd)) return bad_fd(fd);
      return record(EINVAL, "fallocate: offset must be >= 0 and length > 0");
    }
    return with_file(fs, fd, [&](sdx::File& f) {
      return f.fallocate(mode, static_cast<uint64_t>(offset), static_cast<uint64_t>(len));
    });
  });
}

int sdx_ftruncate(sdx_fs* fs, int fd, off_t length) {
  return guarded([&]() -> int {
    if (length < 0) {
      SDX_CHECK_FS(fs);
      if (!lookup(fs, fd)) return bad_fd(fd);
      return record(EINVAL, "ftruncate: negative length");
    }
    return with_file(fs, fd,
                     [&](sdx::File& f) { return f.ftruncate(static_cast<uint64_t>(length)); });
  });
}

int sdx_fsync(sdx_fs* fs, int fd) {
  return guarded([&]() -> int {
    return with_file(fs, fd, [](sdx::File& f) { return f.fsync(); });
  });
}

int sdx_fdatasync(sdx_fs* fs, int fd) {
  return guarded([&]() -> int {
    return with_file(fs, fd, [](sdx::File& f) { return f.fdatasync(); });
  });
}

int sdx_set_extsize_hint(sdx_fs* fs, int fd, uint32_t bytes) {
  return guarded([&]() -> int {
    return with_file(fs, fd, [&](sdx::File& f) { return f.set_extsize_hint(bytes); });
  });
}

int sdx_fstat(sdx_fs* fs, int fd, struct sdx_stat* st) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    auto f = lookup(fs, fd);
    if (!f) return bad_fd(fd);
    SDX_CHECK_PTR(st, "stat buffer");
    auto r = f->stat();
    if (!r) return record(r);
    fill(st, *r);
    return 0;
  });
}


// ---- reflink, dedupe, defragmentation ----

int sdx_clone_range(sdx_fs* fs, int src_fd, off_t src_off, int dst_fd, off_t dst_off, off_t len) {
  return guarded([&]() -> int {
    return with_file_pair(fs, src_fd, src_off, dst_fd, dst_off, len, "clone",
                          [](sdx::File& src, sdx::File& dst, uint64_t so, uint64_t d, uint64_t n) {
                            auto st = dst.clone_range(src, so, d, n);
                            return st ? 0 : record(st);
                          });
  });
}

int sdx_clone(sdx_fs* fs, int src_fd, int dst_fd) {
  return guarded([&]() -> int {
    return with_file_pair(fs, src_fd, 0, dst_fd, 0, 0, "clone",
                          [](sdx::File& src, sdx::File& dst, uint64_t, uint64_t, uint64_t) {
                            auto st = dst.clone(src);
                            return st ? 0 : record(st);
                          });
  });
}

int sdx_dedupe_range(sdx_fs* fs, int src_fd, off_t src_off, int dst_fd, off_t dst_off, off_t len) {
  return guarded([&]() -> int {
    return with_file_pair(fs, src_fd, src_off, dst_fd, dst_off, len, "dedupe",
                          [](sdx::File& src, sdx::File& dst, uint64_t so, uint64_t d, uint64_t n) {
                            auto r = dst.dedupe_range(src, so, d, n);
                            if (!r) return record(r);
                            return *r ? 0 : SDX_DEDUPE_RANGE_DIFFERS;
                          });
  });
}

int sdx_defragment(sdx_fs* fs, int fd, struct sdx_defrag_stats* out) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    auto f = lookup(fs, fd);
    if (!f) return bad_fd(fd);
    auto r = f->defragment();
    if (!r) return record(r);
    if (out) {
      *out = {};
      out->extents_before = r->extents_before;
      out->extents_after = r->extents_after;
      out->blocks_moved = r->blocks_moved;
    }
    return 0;
  });
}

int sdx_extents(sdx_fs* fs, int fd, struct sdx_extent* out, size_t max, size_t* count) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    auto f = lookup(fs, fd);
    if (!f) return bad_fd(fd);
    SDX_CHECK_PTR(count, "extent count");
    if (max > 0) SDX_CHECK_PTR(out, "extent array");
    auto r = f->extents();
    if (!r) return record(r);
    const size_t n = std::min(max, r->size());
    for (size_t i = 0; i < n; ++i) {
      const sdx::ExtentInfo& e = (*r)[i];
      out[i] = {};
      out[i].offset = e.offset;
      out[i].length = e.length;
      out[i].dev_offset = e.dev_offset;
      out[i].flags = (e.unwritten ? SDX_EXTENT_UNWRITTEN : 0u) | (e.shared ? SDX_EXTENT_SHARED : 0u);
    }
    *count = r->size();
    return 0;
  });
}


// ---- mappings ----

void* sdx_mmap(sdx_fs* fs, int fd, void* addr, size_t length, int prot, int flags, off_t offset) {
  void* p = guarded_ptr([&]() -> void* {
    if (fs == nullptr || !fs->fs) return record(EINVAL, "file system handle is NULL"), nullptr;
    auto f = lookup(fs, fd);
    if (!f) return bad_fd(fd), nullptr;
    if (offset < 0) return record(EINVAL, "mmap: negative offset"), nullptr;
    auto m = f->mmap(static_cast<uint64_t>(offset), length, prot, flags, addr);
    if (!m) return record(m), nullptr;
    return m->release();
  });
  return p ? p : MAP_FAILED;
}

int sdx_munmap(void* addr, size_t length) {
  return guarded([&]() -> int {
    auto st = sdx::munmap(addr, length);
    return st ? 0 : record(st);
  });
}

int sdx_msync(void* addr, size_t length, int flags) {
  return guarded([&]() -> int {
    auto st = sdx::msync(addr, length, flags);
    return st ? 0 : record(st);
  });
}

int sdx_granularity(const void* addr) {
  switch (sdx::granularity(addr)) {
    case sdx::Granularity::kByte: return SDX_GRANULARITY_BYTE;
    case sdx::Granularity::kCacheLine: return SDX_GRANULARITY_CACHE_LINE;
    case sdx::Granularity::kPage: break;
  }
  return SDX_GRANULARITY_PAGE;
}

int sdx_persist(const void* addr, size_t len) {
  return guarded([&]() -> int {
    auto st = sdx::persist(addr, len);
    return st ? 0 : record(st);
  });
}

void sdx_flush(const void* addr, size_t len) { sdx::flush(addr, len); }
void sdx_drain(void) { sdx::drain(); }

void* sdx_memcpy_persist(void* dst, const void* src, size_t len) {
  return guarded_ptr([&]() -> void* {
    std::memcpy(dst, src, len);
    auto st = sdx::persist(dst, len);
    if (!st) return record(st), nullptr;
    return dst;
  });
}

int sdx_fault_stats(sdx_fs* fs, struct sdx_fault_stats* st) {
  return guarded([&]() -> int {
    SDX_CHECK_FS(fs);
    SDX_CHECK_PTR(st, "fault stats buffer");
    static_assert(SDX_FAULT_KINDS == static_cast<int>(sdx::FaultKind::kCount));
    const sdx::FaultStats s = fs->fs->fault_stats();
    *st = {};
    for (size_t k = 0; k < SDX_FAULT_KINDS; ++k) {
      st->count[k] = s.kinds[k].count;
      st->total_ns[k] = s.kinds[k].total_ns;
      st->max_ns[k] = s.kinds[k].max_ns;
    }
    return 0;
  });
}

}  // extern "C"
