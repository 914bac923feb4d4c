// bench/fs_type: which file system holds a directory, for benchmark output that
// compares syncdax with the machine's own file system (the answer changes the meaning
// of a kernel baseline: tmpfs, ext4 and a DAX mount fault very differently).
#pragma once

#include <limits.h>
#include <stdlib.h>
#include <sys/statfs.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace sdx::bench {

struct FsType {
  std::string name;         // the mount table's type ("ext4"), else statfs's guess
  std::string description;  // both answers and the mount, for a header line
};

// What `stat -f -c %T` would say, plus the mount table's own answer.
inline FsType fs_type_of(const std::string& dir) {
  FsType out;
  struct statfs sf {};
  if (::statfs(dir.c_str(), &sf) != 0) {
    out.name = "unknown";
    out.description = std::string("unknown (") + std::strerror(errno) + ")";
    return out;
  }
  unsigned long magic = static_cast<unsigned long>(sf.f_type);
  const char* name = "unknown";
  switch (magic) {
    case 0xEF53: name = "ext2/ext3"; break;  // ext4 shares the magic; stat -f prints this
    case 0x01021994: name = "tmpfs"; break;
    case 0x58465342: name = "xfs"; break;
    case 0x9123683E: name = "btrfs"; break;
    case 0x794C7630: name = "overlayfs"; break;
    case 0x6969: name = "nfs"; break;
    case 0x65735546: name = "fuseblk"; break;
  }
  char buf[128];
  std::snprintf(buf, sizeof buf, "stat -f: %s (magic 0x%lx)", name, magic);
  out.name = name;
  out.description = buf;

  char real[PATH_MAX];
  if (!::realpath(dir.c_str(), real)) return out;
  std::string path = real;
  std::ifstream mi("/proc/self/mountinfo");
  std::string line, best_mp, best_type, best_src;
  while (std::getline(mi, line)) {
    std::istringstream ls(line);
    std::string id, parent, devno, root, mp;
    ls >> id >> parent >> devno >> root >> mp;
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string type, src;
    tail >> type >> src;
    bool covers = path == mp || mp == "/" ||
                  (path.size() > mp.size() && path.compare(0, mp.size(), mp) == 0 && path[mp.size()] == '/');
    if (covers && mp.size() >= best_mp.size()) {
      best_mp = mp;
      best_type = type;
      best_src = src;
    }
  }
  if (!best_type.empty()) {
    out.name = best_type;
    out.description += "; mounted as " + best_type + " from " + best_src + " on " + best_mp;
  }
  return out;
}

}  // namespace sdx::bench
