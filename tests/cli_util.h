// Running the `syncdax` binary from a test: its path, and one invocation's exit status,
// standard output and standard error. The binary is $SYNCDAX_CLI, else the SYNCDAX_CLI
// path compiled in by CMake, else ../syncdax next to this test program's directory (the
// build tree's layout).
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "test_util.h"

namespace sdx::test {

inline std::string cli_path() {
  if (const char* env = std::getenv("SYNCDAX_CLI"); env && *env) return env;
#ifdef SYNCDAX_CLI
  return SYNCDAX_CLI;
#else
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return "";
  std::string dir(self, static_cast<size_t>(n));
  dir.resize(dir.rfind('/'));
  std::string candidate = dir + "/../syncdax";
  return ::access(candidate.c_str(), X_OK) == 0 ? candidate : "";
#endif
}

inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

struct Outcome {
  int code = -1;    // exit status
  std::string out;  // standard output
  std::string err;  // standard error
};

// Run `syncdax ARGS...` and collect its exit status and output.
inline Outcome syncdax(const std::vector<std::string>& args) {
  TempPath err_file("cli-stderr");
  std::string cmd = quote(cli_path());
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " 2>" + quote(err_file.str());
  Outcome r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) {
    ADD_FAILURE() << "popen failed: " << cmd;
    return r;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.err = slurp(err_file.str());
  return r;
}

// `syncdax io` commands that append 4 KiB to `a` and to `b` in turn, `rounds` times:
// each file's next block is taken by the other's, so both end up with many extents.
inline std::vector<std::string> interleaved_appends(const std::string& a, const std::string& b, int rounds) {
  std::vector<std::string> cmds;
  for (int i = 0; i < rounds; ++i) {
    const std::string at = std::to_string(i * 4096);
    cmds.push_back("open -c " + a);
    cmds.push_back("pwrite -S 0x61 " + at + " 4k");
    cmds.push_back("open -c " + b);
    cmds.push_back("pwrite -S 0x62 " + at + " 4k");
  }
  return cmds;
}

}  // namespace sdx::test
