#include "cli/watch.h"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/output.h"
#include "engine/chunk.h"
#include "engine/journal.h"
#include "engine/morton.h"
#include "engine/status.h"
#include "protocol/frame.h"

namespace voxdb::cli {
namespace {

using protocol::Box;
using protocol::ChangeEvent;
using protocol::EventDetailKind;
using protocol::EventKind;

// How long one wait for a push may last, so that a signal is noticed soon
// (the client's poll() resumes after EINTR).
constexpr std::chrono::milliseconds kSlice{100};

// A PING after this long without a push: voxdbd closes a connection that
// sends no request for its idle-timeout (default 5 minutes), even one with
// a subscription.
constexpr std::chrono::seconds kKeepAlive{30};

// The signal that asks to stop (SIGINT, SIGTERM); 0: none yet.
volatile std::sig_atomic_t stop_signal = 0;

void OnStopSignal(int signal) { stop_signal = signal; }

void InstallStopHandlers() {
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

std::string BoxWords(const Box& b) {
  return absl::StrFormat("%u %u %u %u %u %u", b.lo.x, b.lo.y, b.lo.z, b.hi.x, b.hi.y, b.hi.z);
}

std::string JsonTriple(const protocol::Voxel3& v) {
  return absl::StrFormat("[%u,%u,%u]", v.x, v.y, v.z);
}

// "500ms", "2s", "5m".
std::string DurationText(std::chrono::milliseconds d) {
  const int64_t ms = d.count();
  if (ms % 60'000 == 0) return absl::StrFormat("%dm", ms / 60'000);
  if (ms % 1000 == 0) return absl::StrFormat("%ds", ms / 1000);
  return absl::StrFormat("%dms", ms);
}

// Writes `line` (with its newline) to stdout and flushes it.
absl::Status PrintLine(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    return absl::InternalError(absl::StrFormat("cannot write to stdout: %s", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// The line of one event: text, or a JSON object.
absl::StatusOr<std::string> EventLine(const ChangeEvent& e, bool json) {
  JsonObject o;
  o.Num("seq", e.seq);
  if (e.kind == EventKind::kFill) {
    o.Str("kind", "fill").Raw("lo", JsonTriple(e.box.lo)).Raw("hi", JsonTriple(e.box.hi));
    o.Num("material", e.material);
    if (json) return o.ToString() + "\n";
    return absl::StrFormat("seq %u fill box %s material %u\n", e.seq, BoxWords(e.box), e.material);
  }
  if (e.kind != EventKind::kChunk) {
    return absl::InternalError(
        absl::StrFormat("the server pushed an event of unknown kind %d", static_cast<int>(e.kind)));
  }
  if (e.chunk > engine::ChunkKey::kMaxCode) {
    return absl::InternalError(absl::StrFormat("the server pushed chunk key %u", e.chunk));
  }
  const engine::ChunkCoord c = engine::ChunkKey::FromCode(e.chunk).coord();
  o.Str("kind", "chunk").Num("key", e.chunk).Num("cx", c.x).Num("cy", c.y).Num("cz", c.z);
  o.Bool("present", e.present);
  std::string text = absl::StrFormat("seq %u chunk %u,%u,%u key %u %s", e.seq, c.x, c.y, c.z,
                                     e.chunk, e.present ? "changed" : "deleted");
  switch (e.detail) {
    case EventDetailKind::kNone:
      o.Str("detail", "none");
      break;
    case EventDetailKind::kEdits: {
      // Each edit is (local index | material << 21); the local index is
      // x | y << 7 | z << 14 within the chunk.
      std::vector<std::string> edits;
      edits.reserve(e.edits.size());
      const uint64_t edge = engine::kChunkEdge;
      for (uint32_t packed : e.edits) {
        const uint32_t i = engine::EditIndex(packed);
        JsonObject edit;
        edit.Num("x", c.x * edge + (i & 127))
            .Num("y", c.y * edge + ((i >> 7) & 127))
            .Num("z", c.z * edge + (i >> 14))
            .Num("material", engine::EditMaterial(packed));
        edits.push_back(edit.ToString());
      }
      o.Str("detail", "edits").Raw("edits", absl::StrCat("[", absl::StrJoin(edits, ","), "]"));
      absl::StrAppendFormat(&text, ", %u voxel%s", e.edits.size(), e.edits.size() == 1 ? "" : "s");
      break;
    }
    case EventDetailKind::kBox:
      o.Str("detail", "box").Raw("lo", JsonTriple(e.box.lo)).Raw("hi", JsonTriple(e.box.hi));
      absl::StrAppendFormat(&text, ", box %s", BoxWords(e.box));
      break;
    case EventDetailKind::kRecord:
      o.Str("detail", "record").Num("record_bytes", e.record.size());
      absl::StrAppendFormat(&text, ", record %u bytes", e.record.size());
      break;
    default:
      return absl::InternalError(absl::StrFormat("the server pushed an event with detail kind %d",
                                                 static_cast<int>(e.detail)));
  }
  if (json) return o.ToString() + "\n";
  return text + "\n";
}

// What the user asked to watch: "box 0 0 0 128 128 128 (altitudes 0 to 10 m)".
std::string WatchedText(const WatchOptions& options) {
  std::string text = options.region;
  if (const auto& band = options.request.region.band) {
    absl::StrAppendFormat(&text, " (altitudes %g to %g m)", band->min_m, band->max_m);
  }
  return text;
}

}  // namespace

absl::Status Watch(protocol::Client& client, const WatchOptions& options) {
  auto reply = client.Subscribe(options.request);
  if (!reply.ok()) {
    if (protocol::ServerStatusOf(reply.status()) == protocol::WireStatus::kResync) {
      return protocol::ServerError(
          protocol::WireStatus::kResync,
          absl::StrFormat("the changes after seq %u are no longer retained by the server: read "
                          "the region again (voxdb query %s), then run voxdb watch without --from "
                          "(server: %s)",
                          options.request.from_seq.value_or(0), options.region,
                          reply.status().message()));
    }
    return reply.status();
  }
  InstallStopHandlers();
  uint64_t last_seq = reply->seq;  // every event up to it was printed
  // A server of several partitions: the same per range of chunk codes.
  std::vector<protocol::RangeSeq> ranges = reply->ranges;
  // "seq N" or "BEGIN-END:SEQ,...", and the --from that resumes there.
  auto from = [&] {
    if (ranges.empty()) return std::to_string(last_seq);
    return absl::StrJoin(ranges, ",", [](std::string* out, const protocol::RangeSeq& r) {
      absl::StrAppendFormat(out, "%u-%u:%u", r.begin, r.end, r.seq);
    });
  };
  auto after = [&] { return ranges.empty() ? "seq " + from() : from(); };
  absl::FPrintF(stderr, "watching %s after %s\n", WatchedText(options), after());
  uint64_t printed = 0;
  auto last_event = std::chrono::steady_clock::now();
  auto last_traffic = last_event;  // the last push received or PING answered
  // The connection is gone: the server stopped, or it cut this subscriber
  // off for falling behind the changes it retains.
  auto lost = [&](const absl::Status& status) {
    return UnreachableError(
        absl::StrFormat("%s after %s: resume with the same voxdb watch command and --from %s",
                        status.message(), after(), from()));
  };
  for (;;) {
    if (stop_signal != 0) {
      absl::FPrintF(stderr, "stopped (%s) after %s: resume with --from %s\n",
                    stop_signal == SIGINT ? "SIGINT" : "SIGTERM", after(), from());
      return absl::OkStatus();
    }
    std::chrono::milliseconds wait = kSlice;
    if (options.idle_timeout.count() > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          last_event + options.idle_timeout - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        absl::FPrintF(stderr, "stopped (no change for %s) after %s: resume with --from %s\n",
                      DurationText(options.idle_timeout), after(), from());
        return absl::OkStatus();
      }
      wait = std::min(wait, left);
    }
    if (std::chrono::steady_clock::now() - last_traffic >= kKeepAlive) {
      if (absl::Status s = client.Ping(); !s.ok()) {
        return protocol::ServerStatusOf(s).has_value() ? s : lost(s);
      }
      last_traffic = std::chrono::steady_clock::now();
    }
    auto frame = client.ReceivePush(wait);
    if (absl::IsDeadlineExceeded(frame.status())) continue;
    if (!frame.ok()) return lost(frame.status());
    last_traffic = std::chrono::steady_clock::now();
    const protocol::FrameHeader& h = frame->header;
    if (h.opcode != static_cast<uint8_t>(protocol::Opcode::kEvents) ||
        h.request_id != reply->subscription) {
      continue;  // not this subscription's (nothing else was asked for)
    }
    if (h.status != 0) {
      return protocol::ServerError(
          static_cast<protocol::WireStatus>(h.status),
          std::string_view(reinterpret_cast<const char*>(frame->payload.data()),
                           frame->payload.size()));
    }
    auto push = protocol::EventsPush::Decode(frame->payload);
    if (!push.ok()) {
      return absl::InternalError(
          absl::StrFormat("the server pushed EVENTS this client cannot read after seq %u: %s",
                          last_seq, push.status().message()));
    }
    for (const ChangeEvent& event : push->events) {
      auto line = EventLine(event, options.json);
      if (!line.ok()) return line.status();
      if (absl::Status s = PrintLine(*line); !s.ok()) return s;
      last_seq = event.seq;
      // The range of the event's partition: its chunk's, or a fill's (its
      // box is clipped to one partition).
      const uint64_t code =
          event.kind == EventKind::kFill
              ? engine::MortonEncode(static_cast<uint32_t>(event.box.lo.x / engine::kChunkEdge),
                                     static_cast<uint32_t>(event.box.lo.y / engine::kChunkEdge),
                                     static_cast<uint32_t>(event.box.lo.z / engine::kChunkEdge))
              : event.chunk;
      for (protocol::RangeSeq& r : ranges) {
        if (r.begin <= code && code < r.end) r.seq = event.seq;
      }
      if (options.count.has_value() && ++printed == *options.count) return absl::OkStatus();
    }
    last_event = std::chrono::steady_clock::now();
  }
}

}  // namespace voxdb::cli
