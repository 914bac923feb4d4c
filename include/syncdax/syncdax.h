/*
 * syncdax C API: the file system through POSIX-style calls.
 *
 *   sdx_mkfs("/dev/shm/img", 64 << 20, "file");
 *   sdx_fs *fs = sdx_mount("/dev/shm/img");
 *   int fd = sdx_open(fs, "/log", O_CREAT | O_RDWR, 0644);
 *   sdx_pwrite(fs, fd, buf, 4096, 0);
 *   sdx_fdatasync(fs, fd);
 *   sdx_close(fs, fd);
 *   sdx_unmount(fs);
 *
 * Conventions (those of POSIX and PMDK's libpmem2):
 *  - A call that fails returns -1 (or NULL) and sets errno; sdx_errormsg() then holds a
 *    message for humans, per thread, until that thread's next failing call.
 *  - Flags and modes are the POSIX ones: O_* from <fcntl.h>, FALLOC_FL_* from
 *    <linux/falloc.h>, S_IF* and permission bits from <sys/stat.h>.
 *  - Descriptors are small integers private to one mounted file system: every call on a
 *    descriptor also takes the sdx_fs it came from. A new descriptor is the lowest free
 *    number, starting at 0. An unknown or closed descriptor gives EBADF.
 *  - Every call is safe to make from several threads at once, except sdx_unmount, which
 *    must not race with other calls on the same sdx_fs.
 *  - No C++ exception ever leaves these functions; running out of memory is ENOMEM.
 */
#ifndef SYNCDAX_SYNCDAX_H
#define SYNCDAX_SYNCDAX_H

#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A mounted file system. */
typedef struct sdx_fs sdx_fs;

/* The last error message of the calling thread (never NULL; "" before any error). */
const char *sdx_errormsg(void);

/* ---- file systems ---- */

/*
 * Create a medium of `size` bytes in total at `path` and an empty file system on it.
 * kind: "file" (emulated pmem on a file; survives process crashes), "sim" (crash
 * simulation) or "dax" (device-DAX or a file on a DAX file system; size 0 = all of it).
 * NULL means "file".
 */
int sdx_mkfs(const char *path, uint64_t size, const char *kind);

struct sdx_mount_opts {
	/* Background metadata committer period in ms; 0 = commit only on fsync/fdatasync/
	 * sync, a full transaction or unmount. Default 1000. */
	uint32_t commit_interval_ms;
	/* file device: msync on every fence, to survive machine crashes (slow). Default 0. */
	int msync_on_fence;
	/* sim device: seed for the randomness of simulated power failures. Default 0. */
	uint64_t seed;
};

/* Fill `opts` with the defaults sdx_mount uses. */
void sdx_mount_opts_init(struct sdx_mount_opts *opts);

/* Mount (replaying the journal). NULL + errno on failure; EBUSY if already in use. */
sdx_fs *sdx_mount(const char *path);
/* Mount with options; opts == NULL means the defaults. */
sdx_fs *sdx_mount_opts(const char *path, const struct sdx_mount_opts *opts);

/*
 * Commit, checkpoint and release `fs`. With descriptors or mappings still open this
 * fails with EBUSY and `fs` stays mounted and usable. On any other failure `fs` is released all the
 * same (like close(2)) and must not be used again.
 */
int sdx_unmount(sdx_fs *fs);

/* Commit all metadata now. */
int sdx_sync(sdx_fs *fs);

/* ---- names ---- */

struct sdx_stat {
	uint64_t ino;
	uint32_t mode;          /* S_IFREG or S_IFDIR | permission bits */
	uint32_t nlink;
	uint64_t size;          /* bytes */
	uint64_t blocks;        /* 4 KiB blocks allocated */
	uint64_t extents;       /* extents in the file's map */
	uint32_t extsize_hint;  /* bytes; 0 = none */
	int64_t atime_ns;       /* nanoseconds since the epoch */
	int64_t mtime_ns;
	int64_t ctime_ns;
};

struct sdx_statfs {
	uint64_t block_size;
	uint64_t total_blocks;  /* data blocks */
	uint64_t free_blocks;
	uint64_t total_inodes;
	uint64_t free_inodes;
	uint32_t name_max;
};

int sdx_mkdir(sdx_fs *fs, const char *path, mode_t mode);
int sdx_rmdir(sdx_fs *fs, const char *path);
int sdx_unlink(sdx_fs *fs, const char *path);
/* Atomic; replaces an existing `to` as rename(2) does. */
int sdx_rename(sdx_fs *fs, const char *from, const char *to);
int sdx_stat(sdx_fs *fs, const char *path, struct sdx_stat *st);
int sdx_statfs(sdx_fs *fs, struct sdx_statfs *st);

/*
 * Call `cb` once per entry of directory `path`. If `cb` returns non-zero the walk stops
 * and sdx_readdir returns that value; otherwise it returns 0 (or -1 and errno).
 */
typedef int (*sdx_readdir_cb)(const char *name, uint64_t ino, int is_dir, void *ctx);
int sdx_readdir(sdx_fs *fs, const char *path, sdx_readdir_cb cb, void *ctx);

/* ---- descriptors ---- */

/* flags: O_RDONLY/O_WRONLY/O_RDWR | O_CREAT, O_EXCL, O_TRUNC, O_APPEND. */
int sdx_open(sdx_fs *fs, const char *path, int flags, mode_t mode);
/* The descriptor is released even when closing reports an error. */
int sdx_close(sdx_fs *fs, int fd);

ssize_t sdx_pread(sdx_fs *fs, int fd, void *buf, size_t count, off_t offset);
/* With O_APPEND, `offset` is ignored and data goes to the end of the file. */
ssize_t sdx_pwrite(sdx_fs *fs, int fd, const void *buf, size_t count, off_t offset);

/* mode: 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
 * FALLOC_FL_ZERO_RANGE [| FALLOC_FL_KEEP_SIZE]. */
int sdx_fallocate(sdx_fs *fs, int fd, int mode, off_t offset, off_t len);
int sdx_ftruncate(sdx_fs *fs, int fd, off_t length);
int sdx_fsync(sdx_fs *fs, int fd);
int sdx_fdatasync(sdx_fs *fs, int fd);
int sdx_fstat(sdx_fs *fs, int fd, struct sdx_stat *st);
/* Per-file extent-size hint in bytes (XFS's extsize); 0 removes it. */
int sdx_set_extsize_hint(sdx_fs *fs, int fd, uint32_t bytes);

/* ---- reflink, dedupe, defragmentation ---- */

/*
 * FICLONERANGE: dst_fd's [dst_off, dst_off+len) shares src_fd's blocks from src_off on;
 * len 0 = to src's end of file. Offsets block aligned (4096), len too unless the range
 * ends at src's EOF; a negative offset or len, or overlapping ranges of one file, is
 * EINVAL. src open for reading and dst for writing without O_APPEND (EBADF), both
 * regular files (EISDIR); EOPNOTSUPP on an image of on-media version 1. A later write
 * to either file, by sdx_pwrite or through a mapping, copies what it touches first.
 */
int sdx_clone_range(sdx_fs *fs, int src_fd, off_t src_off, int dst_fd, off_t dst_off, off_t len);
/* FICLONE: all of src_fd at offset 0 of dst_fd. */
int sdx_clone(sdx_fs *fs, int src_fd, int dst_fd);
/*
 * FIDEDUPERANGE for one destination, with the rules of sdx_clone_range: share the
 * blocks only if the bytes are equal. Returns 0 when shared, SDX_DEDUPE_RANGE_DIFFERS
 * (1, Linux's FILE_DEDUPE_RANGE_DIFFERS) when the contents differ and nothing changed,
 * -1 and errno on failure.
 */
#define SDX_DEDUPE_RANGE_DIFFERS 1
int sdx_dedupe_range(sdx_fs *fs, int src_fd, off_t src_off, int dst_fd, off_t dst_off, off_t len);

struct sdx_defrag_stats {
	uint64_t extents_before;
	uint64_t extents_after;
	uint64_t blocks_moved;  /* 4 KiB blocks */
};
/*
 * Move the file's unshared extents into contiguous free space while it stays open and
 * mapped; shared blocks stay. fd must be open for writing (EBADF). Commits before it
 * returns. `out` may be NULL.
 */
int sdx_defragment(sdx_fs *fs, int fd, struct sdx_defrag_stats *out);

#define SDX_EXTENT_UNWRITTEN 1  /* allocated, reads as zeros */
#define SDX_EXTENT_SHARED 2     /* shared with another extent (reflink, dedupe) */
struct sdx_extent {
	uint64_t offset;      /* file bytes */
	uint64_t length;
	uint64_t dev_offset;  /* bytes into the medium */
	uint32_t flags;       /* SDX_EXTENT_* */
};
/*
 * The file's extents in file order, split where sharing changes (like FIEMAP): fills
 * out[0..max) and sets *count to the number there are, which may exceed max (call with
 * max 0 and out NULL to size the array).
 */
int sdx_extents(sdx_fs *fs, int fd, struct sdx_extent *out, size_t max, size_t *count);

/* ---- mappings ---- */

/*
 * mmap(2) of a syncdax file: returns the address, or MAP_FAILED and errno as mmap(2)
 * would give them (see File::mmap in syncdax.hpp). With MAP_SHARED_VALIDATE | MAP_SYNC,
 * a store made durable with sdx_persist survives any crash: no page becomes writable
 * before the metadata reaching its block is durable. MAP_SHARED | MAP_SYNC is a plain
 * shared mapping, because Linux ignores MAP_SYNC without MAP_SHARED_VALIDATE.
 * Pages fault in through a SIGSEGV handler syncdax installs (chaining to the one
 * installed before it for other addresses). The kernel does not know these pages: a
 * system call (read(2), write(2)) given a syncdax page that was never touched fails with
 * EFAULT; touch it first or use MAP_POPULATE.
 */
void *sdx_mmap(sdx_fs *fs, int fd, void *addr, size_t length, int prot, int flags, off_t offset);
/* Unmap a whole mapping made by sdx_mmap (EINVAL for a part of one). */
int sdx_munmap(void *addr, size_t length);
/* msync(2) for syncdax mappings: MS_SYNC, MS_ASYNC, MS_INVALIDATE. */
int sdx_msync(void *addr, size_t length, int flags);

/* Persistence from user space (libpmem2 style); see sdx_granularity. */
#define SDX_GRANULARITY_BYTE 0       /* stores are durable once visible: fence only */
#define SDX_GRANULARITY_CACHE_LINE 1 /* flush the lines and fence: MAP_SYNC mappings */
#define SDX_GRANULARITY_PAGE 2       /* msync needed: other mappings */
int sdx_granularity(const void *addr);
int sdx_persist(const void *addr, size_t len);
void sdx_flush(const void *addr, size_t len);
void sdx_drain(void);
/* memcpy to a mapping and persist it; returns dst (NULL + errno on failure). */
void *sdx_memcpy_persist(void *dst, const void *src, size_t len);

/* Fault counters: kinds are, in order, read-hole, read-block, write, write-alloc,
 * write-sync, upgrade, sigbus. */
#define SDX_FAULT_KINDS 7
struct sdx_fault_stats {
	uint64_t count[SDX_FAULT_KINDS];
	uint64_t total_ns[SDX_FAULT_KINDS];
	uint64_t max_ns[SDX_FAULT_KINDS];
};
int sdx_fault_stats(sdx_fs *fs, struct sdx_fault_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* SYNCDAX_SYNCDAX_H */
