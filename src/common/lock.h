// common/lock: the lock types syncdax uses, named in one place. The fault path (next
// layer up, dax) may only take syncdax's own locks, so every lock the file system can
// hold while a fault waits must come from here.
#pragma once

#include <mutex>
#include <shared_mutex>

namespace sdx {

using Mutex = std::mutex;
using RwLock = std::shared_mutex;
using Lock = std::unique_lock<Mutex>;
using ReadLock = std::shared_lock<RwLock>;
using WriteLock = std::unique_lock<RwLock>;

}  // namespace sdx
