// tools/crashtest/fence_capture: crash images of a sim device taken at chosen fences of a
// running workload -- the machinery shared by `syncdax crashtest` and the crash tests in
// tests/. Owns the fence hook and the images; knows nothing of any workload or oracle.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "device/device.h"

namespace sdx::crashtest {

// One way a power failure may treat the lines written but not yet durable.
struct CrashVariant {
  double survive_prob = 0.0;  // each such line (or 8-byte word, if torn) survives with this
  bool torn = false;
};

// The seed of the image of `variant` at fence `fence` of a workload seeded `seed`: the
// same triple always yields the same image, which is what makes a replay exact.
uint64_t image_seed(uint64_t seed, uint64_t fence, size_t variant);

// While alive, takes one image per variant at the start of every fence in `points`
// (sorted, numbered as the device counts fences), i.e. with fences 1..k-1 complete and
// fence k not yet applied. The hook copies the whole medium, on the fencing thread and
// possibly inside syncdax's fault handler: it allocates, which is fine in a test
// harness but not something the fault path itself may do.
class FenceCapture {
 public:
  struct Image {
    uint64_t fence;
    size_t variant;
    device::CrashImage image;
  };
  FenceCapture(device::SimDevice& dev, std::vector<uint64_t> points, std::vector<CrashVariant> variants,
               uint64_t seed);
  ~FenceCapture();
  FenceCapture(const FenceCapture&) = delete;
  FenceCapture& operator=(const FenceCapture&) = delete;

  // Images taken so far, by fence then variant.
  std::vector<Image>& images() { return images_; }
  // Set once every point has been captured: the workload may stop.
  const std::atomic<bool>& done() const { return done_; }
  // Take the images of a point after the last fence (e.g. after a final unmount) now.
  void take_now(uint64_t fence);

 private:
  static void hook(void* ctx, uint64_t fence_no);
  device::SimDevice& dev_;
  std::vector<uint64_t> points_;
  std::vector<CrashVariant> variants_;
  uint64_t seed_;
  size_t next_ = 0;  // points_[next_] is the next one to capture
  std::atomic<bool> done_{false};
  std::vector<Image> images_;
};

}  // namespace sdx::crashtest
