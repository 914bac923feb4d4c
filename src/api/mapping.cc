// api/mapping: File::mmap and the Mapping handle over the dax layer.
#include <string>

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
Status not_mapped() { return fail(EINVAL, "not mapped"); }
}  // namespace

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    (void)unmap();
    m_ = o.m_;
    o.m_ = nullptr;
  }
  return *this;
}

Mapping::~Mapping() { (void)unmap(); }
std::byte* Mapping::data() const { return m_ ? m_->base : nullptr; }
size_t Mapping::size() const { return m_ ? m_->length : 0; }
uint64_t Mapping::offset() const { return m_ ? m_->offset : 0; }
bool Mapping::synchronous() const { return m_ && m_->sync; }
Granularity Mapping::granularity() const { return m_ ? m_->dax->granularity(*m_) : Granularity::kPage; }

Status Mapping::persist(const void* addr, size_t len) const {
  if (!m_) return not_mapped();
  return m_->dax->persist(*m_, addr, len);
}

void Mapping::flush(const void* addr, size_t len) const {
  if (m_) m_->dax->flush(*m_, addr, len);
}

void Mapping::drain() const {
  if (m_) m_->dax->drain();
}

Status Mapping::memcpy_persist(void* dst, const void* src, size_t len) const {
  if (!m_) return not_mapped();
  return m_->dax->memcpy_persist(*m_, dst, src, len);
}

Status Mapping::sync(uint64_t off, size_t len, int flags) {
  if (!m_) return not_mapped();
  return m_->dax->msync(*m_, off, len, flags);
}

Status Mapping::unmap() {
  if (!m_) return ok();
  dax::Map* m = m_;
  m_ = nullptr;
  return m->dax->unmap(m);
}

void* Mapping::release() {
  void* p = data();
  m_ = nullptr;
  return p;
}

namespace {
Status not_ours(const char* call) { return fail(EINVAL, std::string(call) + ": not a syncdax mapping"); }
}  // namespace

Status persist(const void* addr, size_t len) {
  if (dax::Map* m = dax::find(addr)) return m->dax->persist(*m, addr, len);
  return not_ours("persist");
}

void flush(const void* addr, size_t len) {
  if (dax::Map* m = dax::find(addr)) m->dax->flush(*m, addr, len);
}

void drain() { dax::drain_all(); }

Granularity granularity(const void* addr) {
  dax::Map* m = dax::find(addr);
  return m ? m->dax->granularity(*m) : Granularity::kPage;
}

Status msync(void* addr, size_t len, int flags) {
  dax::Map* m = dax::find(addr);
  if (!m) return fail(ENOMEM, "msync: not a syncdax mapping");
  return m->dax->msync(*m, static_cast<uint64_t>(static_cast<std::byte*>(addr) - m->base), len, flags);
}

Status munmap(void* addr, size_t len) {
  dax::Map* m = dax::find(addr);
  if (!m) return not_ours("munmap");
  if (addr != m->base || (len + dax::kPage - 1) / dax::kPage != m->npages)
    return fail(EINVAL, "munmap: only whole syncdax mappings can be unmapped");
  return m->dax->unmap(m);
}

Result<Mapping> File::mmap(uint64_t offset, size_t length, int prot, int flags, void* addr) {
  if (!h_) return fail(EBADF, "file is not open");
  SDX_ASSIGN(dax::Map * m, fs_->dax_->map(h_, offset, length, prot, flags, addr));
  return Mapping(m);
}

}  // namespace sdx
