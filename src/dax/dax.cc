#include "dax/dax.h"

#include "fs/volume.h"

namespace sdx::dax {

Dax::Dax(fs::Volume& vol) : vol_(vol) {}
Dax::~Dax() = default;
Result<Map*> Dax::map(fs::Handle*, uint64_t, size_t, int, int, void*) { return fail(ENOSYS, "mmap: not yet implemented"); }
size_t Dax::live_mappings() const { return 0; }
FaultStats Dax::stats() const { return {}; }
void Dax::reset_stats() {}

}  // namespace sdx::dax
