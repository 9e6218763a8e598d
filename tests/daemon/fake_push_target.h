// FakeTarget: a connection as the SubscriptionHub sees it (daemon/
// subscriptions.h PushTarget), keeping the frames pushed to it, for the
// hub's tests.
//
// Thread-safety: thread-safe (the hub's dispatcher pushes, the test reads).
#ifndef VOXDB_TESTS_DAEMON_FAKE_PUSH_TARGET_H_
#define VOXDB_TESTS_DAEMON_FAKE_PUSH_TARGET_H_

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/subscriptions.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "tests/testing/status_matchers.h"

namespace voxdb::testing {

class FakeTarget : public daemon::PushTarget {
 public:
  void Push(std::vector<uint8_t> frame) override {
    std::lock_guard<std::mutex> l(mu_);
    frames_.push_back(std::move(frame));
  }
  uint64_t PushBacklog() const override { return backlog_; }
  void WakeWhenDrained() override { ++wake_requests_; }
  void CutOff(const std::string& why) override {
    std::lock_guard<std::mutex> l(mu_);
    cut_off_ = why;
  }

  void set_backlog(uint64_t bytes) { backlog_ = bytes; }
  int wake_requests() const { return wake_requests_; }
  std::optional<std::string> cut_off() const {
    std::lock_guard<std::mutex> l(mu_);
    return cut_off_;
  }
  size_t frame_count() const {
    std::lock_guard<std::mutex> l(mu_);
    return frames_.size();
  }
  // The events of every frame pushed so far, in order; checks each frame's
  // header (EVENTS, pushed, request id = the subscription).
  std::vector<protocol::ChangeEvent> Events(uint64_t subscription) const {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<protocol::ChangeEvent> events;
    for (const auto& bytes : frames_) {
      protocol::FrameDecoder decoder(size_t{1} << 30);
      protocol::Frame frame;
      size_t consumed = 0;
      EXPECT_EQ(decoder.Feed(bytes, &consumed, &frame), protocol::FrameDecoder::Result::kFrame);
      EXPECT_EQ(consumed, bytes.size());
      EXPECT_EQ(frame.header.opcode, static_cast<uint8_t>(protocol::Opcode::kEvents));
      EXPECT_TRUE(frame.header.is_push());
      EXPECT_EQ(frame.header.request_id, subscription);
      auto push = protocol::EventsPush::Decode(frame.payload);
      EXPECT_OK(push.status());
      if (push.ok()) events.insert(events.end(), push->events.begin(), push->events.end());
    }
    return events;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::vector<uint8_t>> frames_;
  std::optional<std::string> cut_off_;
  std::atomic<uint64_t> backlog_{0};
  std::atomic<int> wake_requests_{0};
};

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_DAEMON_FAKE_PUSH_TARGET_H_
