#include "pmem/pmem.h"

#include <cpuid.h>
#include <immintrin.h>

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace sdx::pmem {
namespace {

constexpr uintptr_t kLineMask = kCacheLine - 1;

bool env_is_one(const char* v) { return v != nullptr && std::string_view(v) == "1"; }

bool supported(const CpuFeatures& cpu, FlushKind k) {
  switch (k) {
    case FlushKind::kNone:
    case FlushKind::kClflush: return true;
    case FlushKind::kClflushopt: return cpu.clflushopt;
    case FlushKind::kClwb: return cpu.clwb;
  }
  return false;
}

// Regular stores that still need a write-back before they are durable.
void store_and_flush(unsigned char* d, const unsigned char* s, size_t n, FlushKind k) {
  std::memcpy(d, s, n);
  flush(d, n, k);
}
void set_and_flush(unsigned char* d, int c, size_t n, FlushKind k) {
  std::memset(d, c, n);
  flush(d, n, k);
}

// Computed before main so the first flush never runs a guarded static initialiser
// (which is not async-signal-safe) from a signal handler.
[[maybe_unused]] const Config& g_config_at_startup = config();

}  // namespace

CpuFeatures detect_cpu() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.clflushopt = (b >> 23) & 1;
    f.clwb = (b >> 24) & 1;
  }
  return f;
}

Config make_config(const CpuFeatures& cpu, const GetEnv& getenv) {
  Config cfg;
  cfg.flush = cpu.clwb ? FlushKind::kClwb
              : cpu.clflushopt ? FlushKind::kClflushopt
                               : FlushKind::kClflush;

  if (const char* v = getenv("SYNCDAX_FLUSH")) {
    std::string_view s(v);
    FlushKind forced = FlushKind::kNone;
    if (s == "clwb") forced = FlushKind::kClwb;
    else if (s == "clflushopt") forced = FlushKind::kClflushopt;
    else if (s == "clflush") forced = FlushKind::kClflush;
    if (forced != FlushKind::kNone && supported(cpu, forced)) cfg.flush = forced;
  }
  // eADR wins over a forced instruction: no instruction is needed at all.
  if (env_is_one(getenv("SYNCDAX_NO_FLUSH"))) cfg.flush = FlushKind::kNone;
  if (env_is_one(getenv("SYNCDAX_NO_MOVNT"))) cfg.nontemporal = false;
  if (const char* v = getenv("SYNCDAX_MOVNT_THRESHOLD")) {
    std::string_view s(v);
    size_t n = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) cfg.movnt_threshold = n;
  }
  return cfg;
}

const Config& config() {
  static const Config cfg =
      make_config(detect_cpu(), [](const char* name) -> const char* { return std::getenv(name); });
  return cfg;
}

std::string_view flush_kind_name(FlushKind k) {
  switch (k) {
    case FlushKind::kNone: return "none";
    case FlushKind::kClwb: return "clwb";
    case FlushKind::kClflushopt: return "clflushopt";
    case FlushKind::kClflush: return "clflush";
  }
  return "?";
}

void flush(const void* addr, size_t len) { flush(addr, len, config().flush); }

void flush(const void* addr, size_t len, FlushKind kind) {
  if (len == 0) return;
  uintptr_t p = reinterpret_cast<uintptr_t>(addr) & ~kLineMask;
  const uintptr_t end = reinterpret_cast<uintptr_t>(addr) + len;
  // One loop per instruction keeps the dispatch out of the per-line path.
  switch (kind) {
    case FlushKind::kNone:
      return;
    case FlushKind::kClwb:
      for (; p < end; p += kCacheLine) _mm_clwb(reinterpret_cast<void*>(p));
      return;
    case FlushKind::kClflushopt:
      for (; p < end; p += kCacheLine) _mm_clflushopt(reinterpret_cast<void*>(p));
      return;
    case FlushKind::kClflush:
      for (; p < end; p += kCacheLine) _mm_clflush(reinterpret_cast<const void*>(p));
      return;
  }
}

// clflush is ordered by itself, but non-temporal stores are not, and callers may mix
// both; an sfence is cheap next to the flushes it follows.
void fence() { _mm_sfence(); }

void memcpy_nodrain(void* dst, const void* src, size_t len) {
  memcpy_nodrain(dst, src, len, config());
}

void memset_nodrain(void* dst, int c, size_t len) { memset_nodrain(dst, c, len, config()); }

// Non-temporal stores bypass the cache, so a large copy neither needs a flush per line
// nor evicts the caller's working set. Only the aligned middle is streamed: the
// partial lines at either end go through the cache and are flushed.
void memcpy_nodrain(void* dst, const void* src, size_t len, const Config& cfg) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  if (!cfg.nontemporal || len < cfg.movnt_threshold) {
    store_and_flush(d, s, len, cfg.flush);
    return;
  }
  size_t head = (kCacheLine - (reinterpret_cast<uintptr_t>(d) & kLineMask)) & kLineMask;
  if (head > len) head = len;
  if (head != 0) {
    store_and_flush(d, s, head, cfg.flush);
    d += head, s += head, len -= head;
  }
  for (; len >= kCacheLine; d += kCacheLine, s += kCacheLine, len -= kCacheLine) {
    __m128i x0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    __m128i x1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
    __m128i x2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
    __m128i x3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d), x0);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), x1);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), x2);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), x3);
  }
  for (; len >= 16; d += 16, s += 16, len -= 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(d),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
  if (len >= 8) {
    long long w;
    std::memcpy(&w, s, sizeof w);
    _mm_stream_si64(reinterpret_cast<long long*>(d), w);
    d += 8, s += 8, len -= 8;
  }
  if (len != 0) store_and_flush(d, s, len, cfg.flush);
}

void memset_nodrain(void* dst, int c, size_t len, const Config& cfg) {
  auto* d = static_cast<unsigned char*>(dst);
  if (!cfg.nontemporal || len < cfg.movnt_threshold) {
    set_and_flush(d, c, len, cfg.flush);
    return;
  }
  size_t head = (kCacheLine - (reinterpret_cast<uintptr_t>(d) & kLineMask)) & kLineMask;
  if (head > len) head = len;
  if (head != 0) {
    set_and_flush(d, c, head, cfg.flush);
    d += head, len -= head;
  }
  const __m128i v = _mm_set1_epi8(static_cast<char>(c));
  for (; len >= kCacheLine; d += kCacheLine, len -= kCacheLine) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(d), v);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), v);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), v);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), v);
  }
  for (; len >= 16; d += 16, len -= 16) _mm_stream_si128(reinterpret_cast<__m128i*>(d), v);
  if (len >= 8) {
    long long w;
    std::memset(&w, c, sizeof w);
    _mm_stream_si64(reinterpret_cast<long long*>(d), w);
    d += 8, len -= 8;
  }
  if (len != 0) set_and_flush(d, c, len, cfg.flush);
}

}  // namespace sdx::pmem
