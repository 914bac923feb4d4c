// The registry of every syncdax mapping in the process, and the SIGSEGV handler that
// looks addresses up in it. Internal to the dax layer.
#pragma once

#include <cstdint>

#include "dax/dax.h"

namespace sdx::dax {

// Publish `m` (installing the handler on first use). EEXIST if it overlaps another.
Status registry_add(Map* m);
// Unpublish `m`; returns once no fault handler can still be using it.
void registry_remove(Map* m);
bool registry_overlaps(uintptr_t lo, uintptr_t hi);
Map* registry_find(uintptr_t addr);
// Call fn for each live mapping whose dax is `owner` (nullptr: every mapping), pinned
// for the call. Signal-safe.
void registry_for_each(const void* owner, void (*fn)(Map& m, void* ctx), void* ctx);

}  // namespace sdx::dax
