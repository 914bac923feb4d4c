#include "fence_capture.h"

#include <algorithm>

namespace sdx::crashtest {

uint64_t image_seed(uint64_t seed, uint64_t fence, size_t variant) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ (fence * 8 + variant);
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}

FenceCapture::FenceCapture(device::SimDevice& dev, std::vector<uint64_t> points,
                           std::vector<CrashVariant> variants, uint64_t seed)
    : dev_(dev), points_(std::move(points)), variants_(std::move(variants)), seed_(seed) {
  std::sort(points_.begin(), points_.end());
  points_.erase(std::unique(points_.begin(), points_.end()), points_.end());
  // Points already behind the device (e.g. during mkfs) can never fire.
  while (next_ < points_.size() && points_[next_] <= dev_.fence_count()) ++next_;
  done_.store(next_ == points_.size());
  dev_.set_fence_hook(&hook, this);
}

FenceCapture::~FenceCapture() { dev_.set_fence_hook(nullptr, nullptr); }

void FenceCapture::take_now(uint64_t fence) {
  for (size_t v = 0; v < variants_.size(); ++v)
    images_.push_back({fence, v, dev_.crash_image(variants_[v].survive_prob, variants_[v].torn,
                                                  image_seed(seed_, fence, v))});
  while (next_ < points_.size() && points_[next_] <= fence) ++next_;
  done_.store(next_ == points_.size(), std::memory_order_release);
}

void FenceCapture::hook(void* ctx, uint64_t fence_no) {
  auto& c = *static_cast<FenceCapture*>(ctx);
  if (c.next_ < c.points_.size() && c.points_[c.next_] == fence_no) c.take_now(fence_no);
}

}  // namespace sdx::crashtest
