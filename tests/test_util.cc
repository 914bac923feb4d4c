#include "test_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>

namespace sdx::test {

TempPath::TempPath(const std::string& stem) {
  static std::atomic<int> counter{0};
  const char* dir = std::getenv("SYNCDAX_TEST_DIR");
  std::string base = dir ? dir : "/dev/shm";
  path_ = base + "/" + stem + "-" + std::to_string(getpid()) + "-" +
          std::to_string(counter.fetch_add(1));
  std::remove(path_.c_str());
}

TempPath::~TempPath() { std::remove(path_.c_str()); }

std::vector<std::byte> pattern(uint64_t seed, uint64_t offset, size_t len) {
  std::vector<std::byte> out(len);
  for (size_t i = 0; i < len; ++i) out[i] = pattern_byte(seed, offset + i);
  return out;
}

uint64_t env_u64(const char* name, uint64_t def) {
  const char* v = std::getenv(name);
  if (!v || !*v) return def;
  char* end = nullptr;
  unsigned long long x = std::strtoull(v, &end, 10);
  return (end && *end == 0) ? x : def;
}

Status write_all(File& f, std::span<const std::byte> data, uint64_t off) {
  size_t done = 0;
  while (done < data.size()) {
    auto r = f.pwrite(data.subspan(done), off + done);
    if (!r) return fail(r.error());
    if (*r == 0) return fail(EIO, "pwrite wrote 0 bytes");
    done += *r;
  }
  return ok();
}

Result<std::vector<std::byte>> read_range(File& f, uint64_t off, size_t len) {
  std::vector<std::byte> out(len);
  size_t done = 0;
  while (done < len) {
    auto r = f.pread(std::span<std::byte>(out).subspan(done), off + done);
    if (!r) return fail(r.error());
    if (*r == 0) break;
    done += *r;
  }
  out.resize(done);
  return out;
}

Result<std::vector<std::byte>> read_file(FileSystem& fs, std::string_view path) {
  SDX_ASSIGN(File f, fs.open(path, O_RDONLY));
  SDX_ASSIGN(Stat st, f.stat());
  SDX_ASSIGN(auto data, read_range(f, 0, st.size));
  if (data.size() != st.size)
    return fail(EIO, "short read of " + std::string(path) + ": " + std::to_string(data.size()) +
                         " of " + std::to_string(st.size));
  return data;
}

std::unique_ptr<device::SimDevice> formatted_sim(uint64_t size, const MkfsOptions& opt) {
  auto dev = device::make_sim(size);
  if (!dev) return nullptr;
  MkfsOptions o = opt;
  o.size = size;
  o.kind = DeviceKind::kSim;
  if (!FileSystem::format(*dev, o)) return nullptr;
  return dev;
}

device::CrashImage durable_image(FileSystem& fs) {
  auto* sim = device::as_sim(&fs.device());
  if (!sim) return {};
  return sim->crash_image(0.0, false, 0);
}

Result<std::vector<DirEntry>> list_dir(FileSystem& fs, std::string_view path) {
  SDX_ASSIGN(auto ents, fs.readdir(path));
  std::vector<DirEntry> out;
  for (auto& e : ents)
    if (e.name != "." && e.name != "..") out.push_back(std::move(e));
  return out;
}

Result<Tree> snapshot(FileSystem& fs, bool with_data) {
  Tree tree;
  std::function<Status(const std::string&)> walk = [&](const std::string& dir) -> Status {
    SDX_ASSIGN(auto ents, list_dir(fs, dir));
    for (auto& e : ents) {
      std::string p = (dir == "/" ? "" : dir) + "/" + e.name;
      SDX_ASSIGN(Stat st, fs.stat(p));
      Node n;
      n.is_dir = e.is_dir;
      n.ino = st.ino;
      if (st.ino != e.ino)
        return fail(EIO, p + ": readdir ino " + std::to_string(e.ino) + " != stat ino " +
                             std::to_string(st.ino));
      if (e.is_dir != S_ISDIR(st.mode))
        return fail(EIO, p + ": readdir is_dir disagrees with stat mode");
      if (!e.is_dir) {
        n.size = st.size;
        if (with_data) {
          SDX_ASSIGN(n.data, read_file(fs, p));
        }
      }
      tree[p] = std::move(n);
      if (e.is_dir) SDX_TRY(walk(p));
    }
    return ok();
  };
  SDX_TRY(walk("/"));
  return tree;
}

void SimFsTest::mount(std::unique_ptr<device::SimDevice> dev) {
  ASSERT_NE(dev, nullptr);
  SDX_ASSERT_OK_AND_ASSIGN(fs_, FileSystem::mount(std::move(dev), {.commit_interval_ms = 0}));
}

File SimFsTest::create(const char* path) {
  auto f = fs_->open(path, O_CREAT | O_RDWR);
  EXPECT_TRUE(f) << describe(f);
  return f ? std::move(*f) : File();
}

BusTrap& bus_trap() {
  thread_local BusTrap t;
  return t;
}

void on_bus(int, siginfo_t* si, void*) {
  BusTrap& t = bus_trap();
  t.addr = si->si_addr;
  t.code = si->si_code;
  siglongjmp(t.jump, 1);
}

std::vector<Vma> vmas_in(const void* base, size_t len) {
  std::ifstream maps("/proc/self/maps");
  const auto lo = reinterpret_cast<uintptr_t>(base), hi = lo + len;
  std::vector<Vma> out;
  for (std::string line; std::getline(maps, line);) {
    Vma v;
    char perms[5] = {};
    unsigned long long pgoff = 0, inode = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx %4s %llx %*s %llu", &v.lo, &v.hi, perms, &pgoff, &inode) != 5) continue;
    if (v.hi <= lo || hi <= v.lo) continue;
    v.writable = perms[1] == 'w';
    v.shared_file = perms[3] == 's' && inode != 0;
    v.pgoff = pgoff;
    out.push_back(v);
  }
  return out;
}

}  // namespace sdx::test
