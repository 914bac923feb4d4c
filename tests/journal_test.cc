// The redo journal on its own, on the crash-simulating device.
#include "journal/journal.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "device/device.h"

namespace sdx::journal {
namespace {

constexpr uint64_t kLogOff = 4096, kLogLen = 64 * 4096;
constexpr Region kLog{kLogOff, kLogLen};
constexpr Region kHome{kLogOff + kLogLen, 1 << 20};

std::unique_ptr<device::SimDevice> fresh() {
  auto d = device::make_sim(2 << 20);
  EXPECT_TRUE(Journal::format(*d, kLog));
  return d;
}

std::span<const std::byte> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string home_at(device::Device& d, uint64_t off, size_t n) {
  return std::string(reinterpret_cast<const char*>(d.bytes().data() + off), n);
}

TEST(Journal, EmptyLogRecoversToFirstSequence) {
  auto d = fresh();
  auto next = Journal::recover(*d, kLog, kHome);
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, 1u);
}

TEST(Journal, CommittedRecordsSurvivePowerFailureAndUncommittedDoNot) {
  auto d = fresh();
  Journal j(*d, kLog, kHome, 1);
  const uint64_t a = kHome.offset + 100, b = kHome.offset + 9000;
  uint64_t s1;
  {
    Handle h = j.start();
    h.log(a, bytes_of("committed"));
    s1 = h.seq();
  }
  ASSERT_TRUE(j.commit(s1));
  {
    Handle h = j.start();
    h.log(b, bytes_of("not committed"));
  }
  // Home locations are untouched until checkpoint: the redo log is the only copy.
  EXPECT_NE(home_at(*d, a, 9), "committed");
  auto img = d->crash_image(1.0, false, 7);  // even every unflushed line surviving
  auto d2 = device::make_sim(img);
  auto next = Journal::recover(*d2, kLog, kHome);
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(*next, s1 + 1);
  EXPECT_EQ(home_at(*d2, a, 9), "committed");
  EXPECT_NE(home_at(*d2, b, 13), "not committed");
}

TEST(Journal, RewritingARangeInOneTransactionKeepsTheLastBytes) {
  auto d = fresh();
  Journal j(*d, kLog, kHome, 1);
  const uint64_t a = kHome.offset;
  {
    Handle h = j.start();
    h.log(a, bytes_of("first"));
    h.log(a, bytes_of("secnd"));
  }
  ASSERT_TRUE(j.commit_all());
  auto d2 = device::make_sim(d->crash_image(0, false, 1));
  ASSERT_TRUE(Journal::recover(*d2, kLog, kHome));
  EXPECT_EQ(home_at(*d2, a, 5), "secnd");
}

// The bitmap is logged a byte range at a time, so one transaction may log [a, a+2), then
// [a+1, a+2), then [a, a+2) again. Rewriting the first record in place would let the
// second (older) bytes win at replay: a freed block came back as used after a crash.
TEST(Journal, RewritingARangeOverlappedByALaterRecordKeepsTheLastBytes) {
  auto d = fresh();
  Journal j(*d, kLog, kHome, 1);
  const uint64_t a = kHome.offset;
  {
    Handle h = j.start();
    h.log(a, bytes_of("AB"));
    h.log(a + 1, bytes_of("C"));
    h.log(a, bytes_of("DE"));
  }
  ASSERT_TRUE(j.commit_all());
  auto d2 = device::make_sim(d->crash_image(0, false, 1));
  ASSERT_TRUE(Journal::recover(*d2, kLog, kHome));
  EXPECT_EQ(home_at(*d2, a, 2), "DE");
}

// A power failure during the commit's own fence, with lines surviving at random, must
// leave the transaction either wholly applied or wholly absent.
struct TornCtx {
  device::SimDevice* dev;
  uint64_t seed;
  std::vector<device::CrashImage> images;
};

TEST(Journal, TornCommitIsAllOrNothing) {
  int applied = 0, absent = 0;
  for (uint64_t seed = 0; seed < 100; ++seed) {
    auto d = fresh();
    Journal j(*d, kLog, kHome, 1);
    TornCtx ctx{d.get(), seed, {}};
    d->set_fence_hook([](void* c, uint64_t) {
      auto* t = static_cast<TornCtx*>(c);
      t->images.push_back(t->dev->crash_image(0.5, true, t->seed));
    }, &ctx);
    std::string big(3000, 'x');
    for (size_t i = 0; i < big.size(); ++i) big[i] = char('a' + (i * 7 + seed) % 26);
    {
      Handle h = j.start();
      h.log(kHome.offset, bytes_of(big));
      h.log(kHome.offset + 50000, bytes_of(big));
    }
    ASSERT_TRUE(j.commit_all());
    d->set_fence_hook(nullptr, nullptr);
    ASSERT_EQ(ctx.images.size(), 1u);
    auto d2 = device::make_sim(ctx.images[0]);
    ASSERT_TRUE(Journal::recover(*d2, kLog, kHome));
    const bool first = home_at(*d2, kHome.offset, big.size()) == big;
    const bool second = home_at(*d2, kHome.offset + 50000, big.size()) == big;
    EXPECT_EQ(first, second) << "seed " << seed;
    (first ? applied : absent)++;
  }
  // With half the lines surviving, a 6 KiB transaction is almost never whole.
  EXPECT_GT(absent, 0);
}

// Power failure at every fence of a checkpoint (home writes, then the header that
// empties the log), torn at 8 bytes: recovery always succeeds with the data home.
TEST(Journal, CheckpointSurvivesATornHeaderWrite) {
  for (uint64_t seed = 0; seed < 40; ++seed) {
    auto d = fresh();
    Journal j(*d, kLog, kHome, 1);
    for (int round = 0; round < 3; ++round) {
      {
        Handle h = j.start();
        h.log(kHome.offset + round * 64, bytes_of("round" + std::to_string(round)));
      }
      ASSERT_TRUE(j.commit_all());
      TornCtx ctx{d.get(), seed, {}};
      d->set_fence_hook([](void* c, uint64_t) {
        auto* t = static_cast<TornCtx*>(c);
        t->images.push_back(t->dev->crash_image(0.5, true, t->seed + t->images.size()));
      }, &ctx);
      ASSERT_TRUE(j.checkpoint());
      d->set_fence_hook(nullptr, nullptr);
      ASSERT_FALSE(ctx.images.empty());
      for (const auto& img : ctx.images) {
        auto d2 = device::make_sim(img);
        auto r = Journal::recover(*d2, kLog, kHome);
        ASSERT_TRUE(r) << "seed " << seed << " round " << round << ": " << r.error().message;
        for (int k = 0; k <= round; ++k)
          EXPECT_EQ(home_at(*d2, kHome.offset + k * 64, 6), "round" + std::to_string(k));
      }
    }
  }
}

TEST(Journal, GroupCommitSharesOneWrite) {
  auto d = fresh();
  Journal j(*d, kLog, kHome, 1);
  Handle held = j.start();
  held.log(kHome.offset, bytes_of("held"));
  const uint64_t seq = held.seq();
  std::atomic<int> done{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 3; ++i)
    ts.emplace_back([&] {
      EXPECT_TRUE(j.commit(seq));
      done++;
    });
  // The transaction cannot commit while a handle is open: everyone waits on it.
  while (j.stats().commit_requests < 3) std::this_thread::yield();
  EXPECT_EQ(done.load(), 0);
  held.end();
  for (auto& t : ts) t.join();
  EXPECT_EQ(j.stats().commits, 1u);
  EXPECT_EQ(j.committed_seq(), seq);
}

TEST(Journal, FullLogCheckpointsAndKeepsEverything) {
  auto d = fresh();
  Journal j(*d, kLog, kHome, 1);
  std::string rec(2000, '?');
  for (int i = 0; i < 400; ++i) {  // ~800 KB through a 256 KiB log
    std::snprintf(rec.data(), 16, "rec%06d", i);
    {
      Handle h = j.start();
      h.log(kHome.offset + (i % 100) * 4096, bytes_of(rec));
    }
    ASSERT_TRUE(j.commit_all());
  }
  EXPECT_GT(j.stats().checkpoints, 0u);
  auto d2 = device::make_sim(d->crash_image(0, false, 3));
  ASSERT_TRUE(Journal::recover(*d2, kLog, kHome));
  for (int i = 300; i < 400; ++i) {
    char want[16];
    std::snprintf(want, sizeof want, "rec%06d", i);
    EXPECT_EQ(home_at(*d2, kHome.offset + (i % 100) * 4096, 9), std::string(want, 9));
  }
}

// A block logged as metadata, then freed and reused for file data (which is never
// journalled), must not get its old metadata image back at replay or checkpoint.
TEST(Journal, RevokedRecordsAreNeitherReplayedNorCheckpointed) {
  for (bool checkpoint : {false, true}) {
    auto d = fresh();
    Journal j(*d, kLog, kHome, 1);
    const uint64_t blk = kHome.offset + 8 * 4096;
    {
      Handle h = j.start();
      h.log(blk, bytes_of("old metadata"));
    }
    ASSERT_TRUE(j.commit_all());
    {
      Handle h = j.start();
      h.revoke(blk, 4096);
    }
    ASSERT_TRUE(j.commit_all());
    std::memcpy(d->bytes().data() + blk, "file data!!!", 12);  // reused as data
    d->persist(d->bytes().data() + blk, 12);
    if (checkpoint) {
      ASSERT_TRUE(j.checkpoint());
    }
    EXPECT_EQ(home_at(*d, blk, 12), "file data!!!");
    auto d2 = device::make_sim(d->crash_image(0, false, 1));
    ASSERT_TRUE(Journal::recover(*d2, kLog, kHome));
    EXPECT_EQ(home_at(*d2, blk, 12), "file data!!!") << "checkpoint " << checkpoint;
  }
}

// Revokes of different sizes that overlap: a large one covering a block, a small one
// nested inside it that does not, and a later re-use of a revoked block as metadata.
TEST(Journal, OverlappingRevokesCancelExactlyTheOlderRecords) {
  for (bool checkpoint : {false, true}) {
    auto d = fresh();
    Journal j(*d, kLog, kHome, 1);
    auto blk = [](uint64_t b) { return kHome.offset + b * 4096; };
    auto tx = [&](auto&& fn) {
      {
        Handle h = j.start();
        fn(h);
      }
      ASSERT_TRUE(j.commit_all());
    };
    tx([&](Handle& h) {
      h.log(blk(10), bytes_of("old ten"));
      h.log(blk(20), bytes_of("old twenty"));
      h.log(blk(22), bytes_of("old 22"));
      h.log(blk(40), bytes_of("kept forty"));
    });
    tx([&](Handle& h) { h.revoke(blk(5), 21 * 4096); });  // blocks 5..25
    tx([&](Handle& h) { h.revoke(blk(12), 4096); });      // nested, sorts between 5 and 20
    tx([&](Handle& h) { h.log(blk(22), bytes_of("new 22")); });  // re-used as metadata
    for (uint64_t b : {10, 20}) {  // re-used as file data, which is never journalled
      std::memcpy(d->bytes().data() + blk(b), "file data!", 10);
      d->persist(d->bytes().data() + blk(b), 10);
    }
    if (checkpoint) {
      ASSERT_TRUE(j.checkpoint());
    }
    auto d2 = device::make_sim(d->crash_image(0, false, 1));
    ASSERT_TRUE(Journal::recover(*d2, kLog, kHome));
    EXPECT_EQ(home_at(*d2, blk(10), 10), "file data!") << "checkpoint " << checkpoint;
    EXPECT_EQ(home_at(*d2, blk(20), 10), "file data!") << "checkpoint " << checkpoint;
    EXPECT_EQ(home_at(*d2, blk(22), 6), "new 22") << "checkpoint " << checkpoint;
    EXPECT_EQ(home_at(*d2, blk(40), 10), "kept forty") << "checkpoint " << checkpoint;
  }
}

TEST(Journal, RecoveryRefusesRecordsOutsideTheMetadataArea) {
  auto d = fresh();
  Journal j(*d, kLog, kHome, 1);
  {
    Handle h = j.start();
    h.log(0, bytes_of("superblock?"));  // outside kHome
  }
  ASSERT_TRUE(j.commit_all());
  auto r = Journal::recover(*d, kLog, kHome);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EUCLEAN);
}

TEST(Journal, CorruptHeaderIsRefused) {
  auto d = fresh();
  d->bytes()[kLogOff + 3] ^= std::byte{0x40};
  auto r = Journal::recover(*d, kLog, kHome);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("journal header"), std::string::npos);
}

TEST(Journal, BackgroundCommitterCommitsWithoutBeingAsked) {
  auto d = fresh();
  Journal j(*d, kLog, kHome, 1);
  j.start_committer(1);
  uint64_t seq;
  {
    Handle h = j.start();
    h.log(kHome.offset, bytes_of("async"));
    seq = h.seq();
  }
  while (j.committed_seq() < seq) std::this_thread::yield();
  j.stop_committer();
  EXPECT_EQ(j.stats().commit_requests, 1u);  // the committer's own request only
}

}  // namespace
}  // namespace sdx::journal
