// pmem: the CPU's persistence primitives -- cache-line write-back (clwb, clflushopt or
// clflush, chosen at run time), store fences and non-temporal copies -- with PMDK-style
// environment overrides. Owns no memory and knows nothing of devices or files.
//
// flush, fence and the *_nodrain copies are async-signal-safe once config() has been
// computed (it is computed during static initialisation of any program linking this).
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

namespace sdx::pmem {

inline constexpr size_t kCacheLine = 64;

enum class FlushKind { kNone, kClwb, kClflushopt, kClflush };

struct Config {
  FlushKind flush = FlushKind::kClflush;
  bool nontemporal = true;      // use movnt stores for large copies
  size_t movnt_threshold = 256; // bytes; smaller copies use regular stores + flush
};

// What cpuid says this CPU can do (clflush is baseline on x86-64).
struct CpuFeatures {
  bool clflushopt = false;
  bool clwb = false;
};
CpuFeatures detect_cpu();

// The override rules applied to `cpu`, with the environment read through `getenv`
// (separate from config() so the rules can be tested without touching the process
// environment). A forced flush the CPU lacks, or a malformed value, is ignored.
using GetEnv = std::function<const char*(const char* name)>;
Config make_config(const CpuFeatures& cpu, const GetEnv& getenv);

// Detected CPU features with environment overrides applied, computed once:
//   SYNCDAX_NO_FLUSH=1           eADR: caches are in the persistence domain, only fence
//   SYNCDAX_FLUSH=clwb|clflushopt|clflush   force a flush instruction
//   SYNCDAX_NO_MOVNT=1           never use non-temporal stores
//   SYNCDAX_MOVNT_THRESHOLD=N    bytes at and above which copies are non-temporal
const Config& config();
std::string_view flush_kind_name(FlushKind k);

// Write back every cache line overlapping [addr, addr+len). Not ordered until fence().
void flush(const void* addr, size_t len);
// The same with a given instruction (benchmarks, tests); the CPU must support it.
void flush(const void* addr, size_t len, FlushKind kind);
// Order all earlier flushes and non-temporal stores (sfence).
void fence();
inline void persist(const void* addr, size_t len) { flush(addr, len); fence(); }

// Copy and write back: after a later fence() the destination is durable. dst and src
// must not overlap.
void memcpy_nodrain(void* dst, const void* src, size_t len);
void memset_nodrain(void* dst, int c, size_t len);
// The same under an explicit configuration (benchmarks, tests).
void memcpy_nodrain(void* dst, const void* src, size_t len, const Config& cfg);
void memset_nodrain(void* dst, int c, size_t len, const Config& cfg);

}  // namespace sdx::pmem
