// tools/cmd_image: subcommands about a whole image -- mkfs, fsck, info.
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include "cli.h"
#include "device/device.h"

namespace sdx::cli {

inline void print_geometry(FileSystem& fs, const std::string& indent) {
  auto sf = need(fs.statfs(), "statfs");
  std::printf("%sblock size:  %llu bytes\n", indent.c_str(),
              static_cast<unsigned long long>(sf.block_size));
  std::printf("%sblocks:      %llu total (%s), %llu free (%s)\n", indent.c_str(),
              static_cast<unsigned long long>(sf.total_blocks),
              human_size(sf.total_blocks * sf.block_size).c_str(),
              static_cast<unsigned long long>(sf.free_blocks),
              human_size(sf.free_blocks * sf.block_size).c_str());
  std::printf("%sinodes:      %llu total, %llu free\n", indent.c_str(),
              static_cast<unsigned long long>(sf.total_inodes),
              static_cast<unsigned long long>(sf.free_inodes));
}

// syncdax mkfs [--size SIZE] [--kind file|sim|dax] IMAGE
inline Action setup_mkfs(CLI::App& sub) {
  struct Opts {
    std::string image;
    std::string size;
    std::string kind = "file";
    CLI::Option* size_opt = nullptr;
  };
  auto o = std::make_shared<Opts>();
  add_image_arg(sub, o->image);
  o->size_opt = sub.add_option("--size,-s", o->size,
                 "total size of the medium, with K/M/G/T suffix (default 64M; for dax the "
                 "whole device)")
      ->type_name("SIZE");
  sub.add_option("--kind,-k", o->kind,
                 "device: file (emulated pmem, survives process crashes), sim (crash "
                 "simulation) or dax (device-DAX / file on a DAX file system)")
      ->check(CLI::IsMember({"file", "sim", "dax"}))
      ->type_name("KIND")
      ->capture_default_str();
  sub.footer("Example: syncdax mkfs --size 256M /dev/shm/pool.img");
  return [o]() {
    MkfsOptions opt;
    if (o->kind == "file") {
      opt.kind = DeviceKind::kFile;
    } else if (o->kind == "sim") {
      opt.kind = DeviceKind::kSim;
    } else {
      opt.kind = DeviceKind::kDax;
    }
    if (o->size_opt->count() > 0) {
      opt.size = size_arg("--size", o->size);
    } else if (opt.kind == DeviceKind::kDax) {
      opt.size = 0;  // the whole device
    }
    need(FileSystem::mkfs(o->image, opt), o->image);

    auto fs = mount_image(o->image);
    std::printf("%s: syncdax file system on a %s device of %s\n", o->image.c_str(),
                std::string(device::kind_name(fs->device().kind())).c_str(),
                human_size(fs->device().size() + device::kLabelSize).c_str());
    print_geometry(*fs, "  ");
    std::printf("  durability:  %s\n", fs->device().durability().c_str());
    unmount_image(fs, o->image);
    return kExitOk;
  };
}

// syncdax fsck IMAGE: 0 clean, 1 inconsistencies (listed), 2 not a usable image.
inline Action setup_fsck(CLI::App& sub) {
  auto image = std::make_shared<std::string>();
  add_image_arg(sub, *image);
  sub.footer(
      "Checks an unmounted image (its journal is replayed in memory only).\n"
      "Exit status: 0 clean, 1 inconsistencies found (each listed), 2 not a usable image.");
  return [image]() {
    FsckReport r = FileSystem::fsck(*image);
    if (!r.usable) {
      std::string msg = "not a usable syncdax image";
      for (size_t i = 0; i < r.problems.size(); ++i) msg += (i ? "; " : ": ") + r.problems[i];
      fail(*image, msg, 2);
    }
    if (r.problems.empty()) {
      std::printf("%s: clean\n", image->c_str());
      return kExitOk;
    }
    for (const auto& p : r.problems) std::printf("%s: %s\n", image->c_str(), p.c_str());
    std::printf("%s: %zu inconsistenc%s found\n", image->c_str(), r.problems.size(),
                r.problems.size() == 1 ? "y" : "ies");
    return 1;
  };
}

// syncdax info IMAGE
inline Action setup_info(CLI::App& sub) {
  auto image = std::make_shared<std::string>();
  add_image_arg(sub, *image);
  sub.footer("Mounts the image (replaying its journal) and prints its geometry.");
  return [image]() {
    auto fs = mount_image(*image);
    auto& dev = fs->device();
    std::printf("image:       %s\n", image->c_str());
    std::printf("kind:        %s\n", std::string(device::kind_name(dev.kind())).c_str());
    std::printf("durability:  %s\n", dev.durability().c_str());
    std::printf("medium:      %s (%llu bytes)\n", human_size(dev.size()).c_str(),
                static_cast<unsigned long long>(dev.size()));
    print_geometry(*fs, "");
    unmount_image(fs, *image);
    return kExitOk;
  };
}

}  // namespace sdx::cli
