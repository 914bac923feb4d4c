// syncdax: the command-line tool. Parses the command line with CLI11 and runs one
// subcommand from the table below; each subcommand lives in a tools/cmd_*.h header.
#include <cstdio>
#include <exception>
#include <new>
#include <utility>
#include <vector>

#include "cli.h"
#include "cmd_crashtest.h"
#include "cmd_faultbench.h"
#include "cmd_files.h"
#include "cmd_image.h"
#include "cmd_io.h"
#include "cmd_logbench.h"
#include "cmd_persistbench.h"

namespace {

using sdx::cli::Command;

// Every subcommand, in the order `syncdax --help` lists them. A new subcommand (io,
// faultbench, crashtest, defrag, ...) is one setup function and one row here.
const Command kCommands[] = {
    {"mkfs", "create a medium and an empty file system on it", sdx::cli::setup_mkfs},
    {"fsck", "check an unmounted image (exit 0 clean, 1 problems, 2 unusable)",
     sdx::cli::setup_fsck},
    {"info", "print device kind, durability and geometry", sdx::cli::setup_info},
    {"ls", "list a directory inside an image", sdx::cli::setup_ls},
    {"put", "copy a local file into an image (and fsync it)", sdx::cli::setup_put},
    {"get", "copy a file out of an image", sdx::cli::setup_get},
    {"stat", "print size, blocks, extents and times of a file", sdx::cli::setup_stat},
    {"defrag", "move a file's extents into contiguous free space", sdx::cli::setup_defrag},
    {"io", "run xfs_io-style commands (pread, pwrite, mmap, crash, ...) on one mount",
     sdx::cli::setup_io},
    {"faultbench", "page-fault latency of syncdax mappings, with and without MAP_SYNC, against the kernel's",
     sdx::cli::setup_faultbench},
    {"persistbench", "cost of making one small update durable: syncdax MAP_SYNC, msync, fdatasync, libpmem2",
     sdx::cli::setup_persistbench},
    {"logbench", "a durable append-only log: syncdax MAP_SYNC with growth, fdatasync, libpmem2",
     sdx::cli::setup_logbench},
    {"crashtest", "randomized workloads crashed at every fence or killed; checks MAP_SYNC and fsck after recovery",
     sdx::cli::setup_crashtest},
};

int report(const std::string& what, const std::string& message) {
  std::fflush(stdout);
  if (what.empty()) {
    std::fprintf(stderr, "syncdax: %s\n", message.c_str());
  } else {
    std::fprintf(stderr, "syncdax: %s: %s\n", what.c_str(), message.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"syncdax: a user-space persistent-memory file system", "syncdax"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "syncdax 0.1");
  app.footer("Run `syncdax COMMAND --help` for the options of one command.\n");

  std::vector<std::pair<CLI::App*, sdx::cli::Action>> actions;
  try {
    for (const Command& c : kCommands) {
      CLI::App* sub = app.add_subcommand(c.name, c.summary);
      actions.emplace_back(sub, c.setup(*sub));
    }
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
      report("", e.what());
      std::fprintf(stderr, "Run with --help for more information.\n");
      return sdx::cli::kExitUsage;
    }
    for (auto& [sub, action] : actions) {
      if (sub->parsed()) {
        int rc = action();
        if (std::fflush(stdout) != 0) {
          report("standard output", std::strerror(errno));
          return sdx::cli::kExitFailure;
        }
        return rc;
      }
    }
    report("", "no command given");
    return sdx::cli::kExitUsage;
  } catch (const sdx::cli::Failure& f) {
    report(f.what, f.message);
    return f.exit_code;
  } catch (const std::bad_alloc&) {
    report("", "out of memory");
  } catch (const std::exception& e) {
    report("internal error", e.what());
  }
  return sdx::cli::kExitFailure;
}
