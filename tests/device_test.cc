#include "device/device.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <csignal>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace sdx::device {
namespace {

using test::TempPath;

constexpr uint64_t kTotal = 1 << 20;
constexpr size_t kLine = 64;

void fill(std::span<std::byte> b, size_t off, size_t len, uint8_t v) {
  std::memset(b.data() + off, v, len);
}

bool all_equal(std::string_view s, size_t off, size_t len, uint8_t v) {
  for (size_t i = off; i < off + len; ++i)
    if (static_cast<uint8_t>(s[i]) != v) return false;
  return true;
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

// ---------------------------------------------------------------- labels, open, create

TEST(Device, KindNames) {
  for (Kind k : {Kind::kFile, Kind::kSim, Kind::kDax}) {
    auto parsed = parse_kind(kind_name(k));
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, k);
  }
  auto bad = parse_kind("floppy");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, EINVAL);
}

TEST(Device, LabelEncodeDecode) {
  std::array<std::byte, kLabelSize> buf;
  encode_label({Kind::kSim, 12345 * 4096}, buf);
  EXPECT_EQ(std::memcmp(buf.data(), "SDXDEV01", 8), 0);
  auto l = decode_label(buf);
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->kind, Kind::kSim);
  EXPECT_EQ(l->total_size, 12345u * 4096);
  buf[17] ^= std::byte{1};  // size changed without the crc
  EXPECT_FALSE(decode_label(buf).has_value());
  buf[17] ^= std::byte{1};
  buf[0] = std::byte{'X'};
  EXPECT_FALSE(decode_label(buf).has_value());
}

TEST(Device, FileCreateOpenRoundTrip) {
  TempPath p("dev-file");
  ASSERT_TRUE(create(Kind::kFile, p, kTotal).has_value());
  {
    auto d = open(p);
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    Device& dev = **d;
    EXPECT_EQ(dev.kind(), Kind::kFile);
    EXPECT_EQ(dev.path(), p.str());
    EXPECT_EQ(dev.size(), kTotal - kLabelSize);
    EXPECT_GE(dev.fd(), 0);
    EXPECT_EQ(dev.fd_offset(), kLabelSize);
    EXPECT_EQ(as_sim(&dev), nullptr);
    EXPECT_FALSE(dev.survives_power_failure());
    EXPECT_NE(dev.durability().find("not a machine crash"), std::string::npos);
    EXPECT_EQ(dev.bytes()[0], std::byte{0});  // a new medium reads as zeroes
    fill(dev.bytes(), 0, 100, 0xAB);
    dev.persist(dev.bytes().data(), 100);
    std::vector<std::byte> src(5000, std::byte{0xCD});
    dev.copy_nodrain(dev.bytes().data() + 1000, src.data(), src.size());
    dev.zero_nodrain(dev.bytes().data() + 2000, 10);
    dev.fence();
  }
  auto d = open(p);
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  auto b = (*d)->bytes();
  EXPECT_EQ(b[99], std::byte{0xAB});
  EXPECT_EQ(b[100], std::byte{0});
  EXPECT_EQ(b[1000], std::byte{0xCD});
  EXPECT_EQ(b[2000], std::byte{0});
  EXPECT_EQ(b[2010], std::byte{0xCD});
  // The label stays outside bytes(), in the first 4 KiB of the file.
  std::ifstream in(p.str(), std::ios::binary);
  char magic[8];
  in.read(magic, 8);
  EXPECT_EQ(std::string(magic, 8), "SDXDEV01");
}

TEST(Device, FileFdMapsTheSameBytes) {
  TempPath p("dev-fd");
  ASSERT_TRUE(create(Kind::kFile, p, kTotal).has_value());
  auto d = open(p);
  ASSERT_TRUE(d.has_value());
  void* m = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, (*d)->fd(),
                 static_cast<off_t>((*d)->fd_offset() + 8192));
  ASSERT_NE(m, MAP_FAILED);
  static_cast<char*>(m)[5] = 42;
  EXPECT_EQ((*d)->bytes()[8192 + 5], std::byte{42});
  munmap(m, 4096);
}

TEST(Device, FileMsyncOnFence) {
  // /tmp is a disk file system here, /dev/shm is RAM: only the first can survive power loss.
  std::string disk = "/tmp/sdx-msync-" + std::to_string(getpid());
  std::remove(disk.c_str());
  ASSERT_TRUE(create(Kind::kFile, disk, kTotal).has_value());
  {
    auto d = open(disk, {.msync_on_fence = true});
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    EXPECT_TRUE((*d)->survives_power_failure());
    EXPECT_NE((*d)->durability().find("msync"), std::string::npos);
    fill((*d)->bytes(), 4096 * 3 + 10, 9000, 0x5C);
    (*d)->flush((*d)->bytes().data() + 4096 * 3 + 10, 9000);
    (*d)->fence();
    (*d)->fence();  // nothing pending
  }
  std::remove(disk.c_str());

  TempPath shm("dev-msync");
  ASSERT_TRUE(create(Kind::kFile, shm, kTotal).has_value());
  auto d = open(shm, {.msync_on_fence = true});
  ASSERT_TRUE(d.has_value());
  EXPECT_FALSE((*d)->survives_power_failure());
  EXPECT_NE((*d)->durability().find("tmpfs"), std::string::npos);
}

TEST(Device, SimCreateOpenRoundTrip) {
  TempPath p("dev-sim");
  ASSERT_TRUE(create(Kind::kSim, p, kTotal).has_value());
  auto d = open(p);
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  EXPECT_EQ((*d)->kind(), Kind::kSim);
  EXPECT_EQ((*d)->size(), kTotal - kLabelSize);
  ASSERT_NE(as_sim(d->get()), nullptr);
  EXPECT_TRUE((*d)->survives_power_failure());
  EXPECT_NE((*d)->durability().find("simulated"), std::string::npos);
}

TEST(Device, CreateRejectsBadSizes) {
  TempPath p("dev-size");
  for (uint64_t size : {uint64_t{0}, uint64_t{4096}, uint64_t{10000}}) {
    auto s = create(Kind::kFile, p, size);
    ASSERT_FALSE(s.has_value()) << size;
    EXPECT_EQ(s.error().code, EINVAL);
  }
}

TEST(Device, SecondOpenIsBusy) {
  TempPath p("dev-busy");
  ASSERT_TRUE(create(Kind::kFile, p, kTotal).has_value());
  auto first = open(p);
  ASSERT_TRUE(first.has_value());
  auto second = open(p);
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code, EBUSY);
  EXPECT_EQ(second.error().message, "device " + p.str() + " is in use by another process");
  auto recreate = create(Kind::kFile, p, kTotal);  // must not wipe a medium in use
  ASSERT_FALSE(recreate.has_value());
  EXPECT_EQ(recreate.error().code, EBUSY);
  first->reset();
  EXPECT_TRUE(open(p).has_value());
}

TEST(Device, UnlabelledFileIsNotADevice) {
  TempPath p("dev-nolabel");
  write_file(p, std::string(3 * 4096, 'x'));
  auto d = open(p);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, EINVAL);
  EXPECT_EQ(d.error().message, p.str() + " is not a syncdax device (no valid label)");

  TempPath tiny("dev-tiny");
  write_file(tiny, "SDXDEV01");
  d = open(tiny);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, EINVAL);

  auto missing = open(p.str() + "-missing");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, ENOENT);
}

TEST(Device, TruncatedMediumIsRejected) {
  TempPath p("dev-trunc");
  ASSERT_TRUE(create(Kind::kFile, p, kTotal).has_value());
  ASSERT_EQ(truncate(p.str().c_str(), kTotal / 2), 0);
  auto d = open(p);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, EINVAL);
  EXPECT_NE(d.error().message.find("truncated"), std::string::npos);
}

TEST(Device, DaxRefusedWithoutMapSync) {
  const std::string expect_tail =
      ": the kernel refuses MAP_SYNC here (not a file on a DAX file system or a device-DAX device)";
  // create on tmpfs: refused, and no file left behind.
  TempPath p("dev-dax");
  auto c = create(Kind::kDax, p, kTotal);
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code, EOPNOTSUPP);
  EXPECT_EQ(c.error().message, p.str() + expect_tail);
  EXPECT_NE(access(p.str().c_str(), F_OK), 0);

  // open of a file labelled dax (as if copied off a DAX file system): refused too.
  std::array<std::byte, kLabelSize> label;
  encode_label({Kind::kDax, kTotal}, label);
  std::string data(reinterpret_cast<const char*>(label.data()), label.size());
  data.resize(kTotal);
  write_file(p, data);
  auto d = open(p);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, EOPNOTSUPP);
  EXPECT_EQ(d.error().message, p.str() + expect_tail);
}

// ---------------------------------------------------------------- crash simulation

TEST(Sim, InMemoryBasics) {
  auto s = make_sim(1 << 16, 1);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->path(), "(memory)");
  EXPECT_EQ(s->kind(), Kind::kSim);
  EXPECT_EQ(s->size(), 1u << 16);
  EXPECT_EQ(s->fence_count(), 0u);
  EXPECT_EQ(s->power_failures(), 0u);
  EXPECT_TRUE(s->write_image().has_value());  // nothing to write
  auto img = s->crash_image(1.0, false, 0);
  EXPECT_EQ(img.bytes, std::string(1 << 16, '\0'));
}

TEST(Sim, FdMapsTheCpuView) {
  auto s = make_sim(1 << 16);
  ASSERT_GE(s->fd(), 0);
  void* m = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd(),
                 static_cast<off_t>(s->fd_offset() + 4096));
  ASSERT_NE(m, MAP_FAILED);
  static_cast<char*>(m)[3] = 7;
  EXPECT_EQ(s->bytes()[4096 + 3], std::byte{7});
  // A store through the other mapping is still only in the CPU view until flushed.
  EXPECT_EQ(s->crash_image(0, false, 0).bytes[4096 + 3], 0);
  s->persist(s->bytes().data() + 4096, 8);
  EXPECT_EQ(s->crash_image(0, false, 0).bytes[4096 + 3], 7);
  munmap(m, 8192);
  // The label is in the memfd too, so the fd looks like a device.
  char magic[8];
  ASSERT_EQ(pread(s->fd(), magic, 8, 0), 8);
  EXPECT_EQ(std::string(magic, 8), "SDXDEV01");
}

TEST(Sim, UnflushedWriteLostAtZeroKeptAtOne) {
  auto s = make_sim(1 << 16);
  fill(s->bytes(), 640, 100, 0x11);
  EXPECT_TRUE(all_equal(s->crash_image(0.0, false, 1).bytes, 640, 100, 0));
  EXPECT_TRUE(all_equal(s->crash_image(1.0, false, 1).bytes, 640, 100, 0x11));
  EXPECT_TRUE(all_equal(s->crash_image(0.0, true, 1).bytes, 640, 100, 0));
  EXPECT_TRUE(all_equal(s->crash_image(1.0, true, 1).bytes, 640, 100, 0x11));
}

TEST(Sim, FlushedButUnfencedLostAtZero) {
  auto s = make_sim(1 << 16);
  fill(s->bytes(), 640, 100, 0x22);
  s->flush(s->bytes().data() + 640, 100);
  EXPECT_TRUE(all_equal(s->crash_image(0.0, false, 2).bytes, 640, 100, 0));
  s->fence();
  EXPECT_EQ(s->fence_count(), 1u);
  EXPECT_TRUE(all_equal(s->crash_image(0.0, false, 2).bytes, 640, 100, 0x22));
}

TEST(Sim, FlushCoversWholeLinesOnly) {
  auto s = make_sim(1 << 16);
  fill(s->bytes(), 0, 256, 0x33);
  s->persist(s->bytes().data() + 70, 1);  // line 1 only: bytes 64..127
  auto img = s->crash_image(0.0, false, 3).bytes;
  EXPECT_TRUE(all_equal(img, 0, 64, 0));
  EXPECT_TRUE(all_equal(img, 64, 64, 0x33));
  EXPECT_TRUE(all_equal(img, 128, 128, 0));
}

TEST(Sim, FlushSnapshotsTheLine) {
  // A store after the flush of its line is not made durable by the next fence.
  auto s = make_sim(1 << 16);
  fill(s->bytes(), 128, 64, 0x44);
  s->flush(s->bytes().data() + 128, 64);
  fill(s->bytes(), 128, 64, 0x55);
  s->fence();
  EXPECT_TRUE(all_equal(s->crash_image(0.0, false, 4).bytes, 128, 64, 0x44));
  EXPECT_TRUE(all_equal(s->crash_image(1.0, false, 4).bytes, 128, 64, 0x55));
}

TEST(Sim, CopyAndZeroNodrainArePendingUntilFence) {
  auto s = make_sim(1 << 16);
  std::vector<std::byte> src(300, std::byte{0x66});
  s->copy_nodrain(s->bytes().data() + 1000, src.data(), src.size());
  EXPECT_EQ(s->bytes()[1000], std::byte{0x66});
  EXPECT_TRUE(all_equal(s->crash_image(0.0, false, 5).bytes, 1000, 300, 0));
  s->fence();
  EXPECT_TRUE(all_equal(s->crash_image(0.0, false, 5).bytes, 1000, 300, 0x66));
  s->zero_nodrain(s->bytes().data() + 1100, 50);
  s->fence();
  auto img = s->crash_image(0.0, false, 5).bytes;
  EXPECT_TRUE(all_equal(img, 1100, 50, 0));
  EXPECT_TRUE(all_equal(img, 1150, 150, 0x66));
}

TEST(Sim, CrashImageIsDeterministicPerSeed) {
  auto s = make_sim(1 << 16, 99);
  for (size_t i = 0; i < 64; ++i) fill(s->bytes(), i * 2 * kLine, kLine, static_cast<uint8_t>(i + 1));
  EXPECT_EQ(s->crash_image(0.5, false, 7).bytes, s->crash_image(0.5, false, 7).bytes);
  EXPECT_EQ(s->crash_image(0.5, true, 7).bytes, s->crash_image(0.5, true, 7).bytes);
  EXPECT_NE(s->crash_image(0.5, false, 7).bytes, s->crash_image(0.5, false, 8).bytes);
  // The device's own seed takes part too.
  auto t = make_sim(1 << 16, 100);
  for (size_t i = 0; i < 64; ++i) fill(t->bytes(), i * 2 * kLine, kLine, static_cast<uint8_t>(i + 1));
  EXPECT_NE(s->crash_image(0.5, false, 7).bytes, t->crash_image(0.5, false, 7).bytes);
}

TEST(Sim, TornLinesAppearOnlyInTornMode) {
  auto s = make_sim(1 << 16);
  constexpr size_t kLines = 8;
  fill(s->bytes(), 0, kLines * kLine, 0x77);
  int full = 0, partial = 0, lost = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    std::string torn = s->crash_image(0.5, true, seed).bytes;
    std::string whole = s->crash_image(0.5, false, seed).bytes;
    for (size_t l = 0; l < kLines; ++l) {
      size_t kept = 0;
      for (size_t w = 0; w < kLine / 8; ++w) {
        bool new_word = all_equal(torn, l * kLine + w * 8, 8, 0x77);
        ASSERT_TRUE(new_word || all_equal(torn, l * kLine + w * 8, 8, 0)) << "word not atomic";
        kept += new_word;
      }
      if (kept == kLine / 8) ++full;
      else if (kept == 0) ++lost;
      else ++partial;
      EXPECT_TRUE(all_equal(whole, l * kLine, kLine, 0x77) || all_equal(whole, l * kLine, kLine, 0))
          << "non-torn mode tore a line";
    }
  }
  EXPECT_GT(full, 0);
  EXPECT_GT(partial, 0);
  EXPECT_GT(lost, 0);
}

struct HookLog {
  SimDevice* dev = nullptr;
  std::vector<uint64_t> fences;
  std::vector<std::string> images;
};

void record_fence(void* ctx, uint64_t n) {
  auto* log = static_cast<HookLog*>(ctx);
  log->fences.push_back(n);
  log->images.push_back(log->dev->crash_image(0.0, false, n).bytes);
}

TEST(Sim, FenceHookRunsBeforeLinesBecomeDurable) {
  auto s = make_sim(1 << 16);
  HookLog log{s.get()};
  s->set_fence_hook(record_fence, &log);
  for (uint8_t i = 0; i < 3; ++i) {
    fill(s->bytes(), i * kLine, kLine, 0xA0 + i);
    s->flush(s->bytes().data() + i * kLine, kLine);
    s->fence();
  }
  EXPECT_EQ(log.fences, (std::vector<uint64_t>{1, 2, 3}));
  ASSERT_EQ(log.images.size(), 3u);
  for (size_t f = 0; f < 3; ++f) {
    for (size_t i = 0; i < 3; ++i) {
      // At fence f+1, lines of earlier fences are durable, the one it fences is not yet.
      uint8_t want = i < f ? 0xA0 + i : 0;
      EXPECT_TRUE(all_equal(log.images[f], i * kLine, kLine, want)) << "fence " << f + 1 << " line " << i;
    }
  }
  EXPECT_TRUE(all_equal(s->crash_image(0.0, false, 0).bytes, 2 * kLine, kLine, 0xA2));
  s->set_fence_hook(nullptr, nullptr);
  s->fence();
  EXPECT_EQ(log.fences.size(), 3u);
  EXPECT_EQ(s->fence_count(), 4u);
}

TEST(Sim, ManyPendingLinesWriteBackEarly) {
  // More distinct lines than the pending array holds: all must still be durable after
  // the fence, and nothing may be lost or corrupted when it overflows.
  constexpr size_t kSize = 8 << 20;
  auto s = make_sim(kSize);
  for (size_t off = 0; off < kSize; off += kLine) {
    s->bytes()[off] = static_cast<std::byte>((off / kLine) % 251 + 1);
    s->flush(s->bytes().data() + off, 1);
  }
  s->fence();
  auto img = s->crash_image(0.0, false, 0).bytes;
  for (size_t off = 0; off < kSize; off += kLine)
    ASSERT_EQ(static_cast<uint8_t>(img[off]), (off / kLine) % 251 + 1) << off;
}

TEST(Sim, PowerFailInPlace) {
  auto s = make_sim(1 << 16);
  fill(s->bytes(), 0, 64, 0x12);
  s->persist(s->bytes().data(), 64);
  fill(s->bytes(), 64, 64, 0x34);               // never flushed
  fill(s->bytes(), 128, 64, 0x56);
  s->flush(s->bytes().data() + 128, 64);        // flushed, not fenced
  s->power_fail(0.0, false, 9);
  EXPECT_EQ(s->power_failures(), 1u);
  std::string_view cpu(reinterpret_cast<const char*>(s->bytes().data()), s->size());
  EXPECT_TRUE(all_equal(cpu, 0, 64, 0x12));
  EXPECT_TRUE(all_equal(cpu, 64, 128, 0));
  // The pending flush died with the power: a later fence must not resurrect it.
  s->fence();
  EXPECT_TRUE(all_equal(s->crash_image(0.0, false, 0).bytes, 128, 64, 0));
  // The device goes on working after the failure.
  fill(s->bytes(), 64, 64, 0x78);
  s->persist(s->bytes().data() + 64, 64);
  EXPECT_TRUE(all_equal(s->crash_image(0.0, false, 0).bytes, 64, 64, 0x78));
}

TEST(Sim, PowerFailMatchesCrashImage) {
  auto s = make_sim(1 << 14, 5);
  for (size_t i = 0; i < 100; ++i) fill(s->bytes(), i * 72, 50, static_cast<uint8_t>(i + 1));
  std::string expect = s->crash_image(0.5, true, 31).bytes;
  s->power_fail(0.5, true, 31);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(s->bytes().data()), s->size()), expect);
  EXPECT_EQ(s->crash_image(0.0, false, 0).bytes, expect);  // durable == CPU view now
}

TEST(Sim, SizeNotAMultipleOfTheLine) {
  auto s = make_sim(1000);  // the last line has 40 bytes, 5 words
  ASSERT_NE(s, nullptr);
  fill(s->bytes(), 900, 100, 0x3C);
  s->flush(s->bytes().data() + 990, 1000);  // clipped to the device
  EXPECT_TRUE(all_equal(s->crash_image(0.0, false, 0).bytes, 900, 100, 0));
  EXPECT_TRUE(all_equal(s->crash_image(1.0, true, 0).bytes, 900, 100, 0x3C));
  s->fence();
  auto img = s->crash_image(0.0, false, 0).bytes;
  ASSERT_EQ(img.size(), 1000u);
  EXPECT_TRUE(all_equal(img, 900, 60, 0));     // line 14 was not flushed
  EXPECT_TRUE(all_equal(img, 960, 40, 0x3C));  // the short last line was
  s->power_fail(1.0, true, 0);
  EXPECT_EQ(s->bytes()[950], std::byte{0x3C});
}

TEST(Sim, MakeFromCrashImage) {
  auto s = make_sim(1 << 14);
  fill(s->bytes(), 100, 10, 0x9A);
  s->persist(s->bytes().data() + 100, 10);
  fill(s->bytes(), 300, 10, 0x9B);
  CrashImage img = s->crash_image(0.0, false, 0);
  auto t = make_sim(img, 3);
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->size(), s->size());
  std::string_view cpu(reinterpret_cast<const char*>(t->bytes().data()), t->size());
  EXPECT_TRUE(all_equal(cpu, 100, 10, 0x9A));
  EXPECT_TRUE(all_equal(cpu, 300, 10, 0));
  EXPECT_EQ(t->crash_image(1.0, false, 0).bytes, img.bytes);  // all of it durable
}

TEST(Sim, ImagePersistsAcrossCloseAndReopen) {
  TempPath p("dev-simimg");
  ASSERT_TRUE(create(Kind::kSim, p, kTotal).has_value());
  {
    auto d = open(p);
    ASSERT_TRUE(d.has_value());
    fill((*d)->bytes(), 0, 64, 0x01);
    (*d)->persist((*d)->bytes().data(), 64);
    fill((*d)->bytes(), 4096, 64, 0x02);  // unflushed, but a clean close persists all
  }
  {
    auto d = open(p);
    ASSERT_TRUE(d.has_value());
    SimDevice* s = as_sim(d->get());
    ASSERT_NE(s, nullptr);
    std::string img = s->crash_image(0.0, false, 0).bytes;  // loaded as durable
    EXPECT_TRUE(all_equal(img, 0, 64, 0x01));
    EXPECT_TRUE(all_equal(img, 4096, 64, 0x02));
    fill(s->bytes(), 8192, 64, 0x03);  // lost in the power failure below
    s->power_fail(0.0, false, 1);
  }
  auto d = open(p);
  ASSERT_TRUE(d.has_value());
  std::string_view cpu(reinterpret_cast<const char*>((*d)->bytes().data()), (*d)->size());
  EXPECT_TRUE(all_equal(cpu, 0, 64, 0x01));
  EXPECT_TRUE(all_equal(cpu, 4096, 64, 0x02));
  EXPECT_TRUE(all_equal(cpu, 8192, 64, 0));
  EXPECT_EQ(as_sim(d->get())->power_failures(), 0u);  // counted per open
}

TEST(Sim, WriteImageSavesOnlyDurableSide) {
  TempPath p("dev-simwrite");
  ASSERT_TRUE(create(Kind::kSim, p, kTotal).has_value());
  auto d = open(p);
  ASSERT_TRUE(d.has_value());
  SimDevice* s = as_sim(d->get());
  fill(s->bytes(), 0, 64, 0x0A);
  s->persist(s->bytes().data(), 64);
  fill(s->bytes(), 64, 64, 0x0B);
  ASSERT_TRUE(s->write_image().has_value());
  std::ifstream in(p.str(), std::ios::binary);
  std::string file((std::istreambuf_iterator<char>(in)), {});
  ASSERT_EQ(file.size(), kTotal);
  EXPECT_TRUE(all_equal(file, kLabelSize, 64, 0x0A));
  EXPECT_TRUE(all_equal(file, kLabelSize + 64, 64, 0));
}

// The image file is the durable side itself: a process killed with unflushed and
// flushed-but-unfenced lines leaves only its fenced lines there (a power failure), which
// is what `syncdax crashtest --kill` relies on.
TEST(Sim, AKilledProcessLeavesItsDurableSideInTheImage) {
  TempPath p("dev-simkill");
  ASSERT_TRUE(create(Kind::kSim, p, kTotal).has_value());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto d = open(p);
    if (!d) ::_exit(3);
    fill((*d)->bytes(), 0, 64, 0x0A);
    (*d)->persist((*d)->bytes().data(), 64);
    fill((*d)->bytes(), 64, 64, 0x0B);  // never flushed
    fill((*d)->bytes(), 128, 64, 0x0C);
    (*d)->flush((*d)->bytes().data() + 128, 64);  // flushed, not fenced
    ::kill(::getpid(), SIGKILL);
    ::_exit(4);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
  std::ifstream in(p.str(), std::ios::binary);
  std::string file((std::istreambuf_iterator<char>(in)), {});
  ASSERT_EQ(file.size(), kTotal);
  EXPECT_TRUE(all_equal(file, kLabelSize, 64, 0x0A));
  EXPECT_TRUE(all_equal(file, kLabelSize + 64, 128, 0));
  EXPECT_TRUE(open(p).has_value());  // the dead child's lock went with it
}

TEST(Sim, ConcurrentFlushAndFence) {
  constexpr int kThreads = 4;
  constexpr size_t kPerThread = 64 * 1024;
  constexpr int kRounds = 2000;
  auto s = make_sim(kThreads * kPerThread);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::byte* base = s->bytes().data() + t * kPerThread;
      for (int r = 0; r < kRounds; ++r) {
        size_t off = (static_cast<size_t>(r) * 7 * kLine) % (kPerThread - 256);
        std::memset(base + off, (r % 250) + 1, 100);
        s->flush(base + off, 100);
        if (r % 3 == 0) {
          std::vector<std::byte> src(200, std::byte{0xEE});
          s->copy_nodrain(base + (off + 4096) % (kPerThread - 256), src.data(), src.size());
        }
        s->fence();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(s->fence_count(), static_cast<uint64_t>(kThreads * kRounds));
  // Every line was flushed and fenced by its writer, so durable == CPU view.
  std::string img = s->crash_image(0.0, false, 0).bytes;
  EXPECT_EQ(img, std::string(reinterpret_cast<const char*>(s->bytes().data()), s->size()));
}

}  // namespace
}  // namespace sdx::device
