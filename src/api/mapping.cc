// api/mapping: File::mmap and the Mapping handle over the dax layer.
// (Being written: every call fails with ENOSYS until the dax layer lands.)
#include "dax/dax.h"
#include "fs/volume.h"
#include "syncdax/syncdax.hpp"

namespace sdx {

std::string_view fault_kind_name(FaultKind k) {
  switch (k) {
    case FaultKind::kReadHole: return "read-hole";
    case FaultKind::kReadBlock: return "read-block";
    case FaultKind::kWrite: return "write";
    case FaultKind::kWriteAlloc: return "write-alloc";
    case FaultKind::kWriteSync: return "write-sync";
    case FaultKind::kUpgrade: return "upgrade";
    case FaultKind::kSigbus: return "sigbus";
    case FaultKind::kCount: break;
  }
  return "?";
}

uint64_t FaultStats::total() const {
  uint64_t n = 0;
  for (const auto& k : kinds) n += k.count;
  return n;
}

namespace {
Status nosys() { return fail(ENOSYS, "mmap: not yet implemented"); }
}  // namespace

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) { (void)unmap(); m_ = o.m_; o.m_ = nullptr; }
  return *this;
}
Mapping::~Mapping() { (void)unmap(); }
std::byte* Mapping::data() const { return nullptr; }
size_t Mapping::size() const { return 0; }
uint64_t Mapping::offset() const { return 0; }
bool Mapping::synchronous() const { return false; }
Granularity Mapping::granularity() const { return Granularity::kPage; }
Status Mapping::persist(const void*, size_t) const { return nosys(); }
void Mapping::flush(const void*, size_t) const {}
void Mapping::drain() const {}
Status Mapping::memcpy_persist(void*, const void*, size_t) const { return nosys(); }
Status Mapping::sync(uint64_t, size_t, int) { return nosys(); }
Status Mapping::unmap() { m_ = nullptr; return ok(); }
Status persist(const void*, size_t) { return nosys(); }
Granularity granularity(const void*) { return Granularity::kPage; }
Result<Mapping> File::mmap(uint64_t, size_t, int, int, void*) { return std::unexpected(nosys().error()); }

}  // namespace sdx
