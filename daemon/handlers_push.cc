// SUBSCRIBE, UNSUBSCRIBE, STREAM_UPDATE and STREAM_CLOSE: the requests that
// start and stop what the server pushes (PROTOCOL.md, "Subscriptions" and
// "Streaming"; daemon/dispatch.h). What they open lives in the connection's
// Session.
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_format.h"
#include "daemon/dispatch.h"
#include "engine/status.h"

namespace voxdb::daemon {

using protocol::WireStatus;

void Server::Handlers::Subscribe(Connection& c, Request& r) {
  Server& server = c.server();
  auto req = protocol::SubscribeRequest::Decode(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  auto region = ToRegion(req->region);
  if (!region.ok()) return c.Reply(r.op, r.id, region.status());
  std::optional<index::AltitudeBand> band;
  if (req->region.band) {
    band = index::AltitudeBand{req->region.band->min_m, req->region.band->max_m};
  }
  if (absl::Status s = index::CheckRegionAndBand(server.node_->frame(), *region, band); !s.ok()) {
    return c.Reply(r.op, r.id, s);
  }
  Session& session = c.session();
  const uint64_t sub = session.next_subscription++;
  auto start = server.hub_->Add(c.shared_from_this(), sub, *region, band, req->detail,
                                req->from_seq, req->from_ranges);
  if (!start.ok()) return c.Reply(r.op, r.id, start.status());  // RESYNC among others
  session.subscriptions.insert(sub);
  c.Reply(r.op, r.id, WireStatus::kOk,
          protocol::SubscribeReply{sub, start->seq, std::move(start->ranges)}.Encode());
}

void Server::Handlers::Unsubscribe(Connection& c, Request& r) {
  auto sub = protocol::DecodeU64(r.payload);
  if (!sub.ok()) return c.Reply(r.op, r.id, sub.status());
  if (c.session().subscriptions.erase(*sub) == 0 || !c.server().hub_->Remove(&c, *sub)) {
    return c.Reply(
        r.op, r.id,
        absl::NotFoundError(absl::StrFormat("no subscription %u on this connection", *sub)));
  }
  c.Reply(r.op, r.id, WireStatus::kOk, {});
}

void Server::Handlers::StreamUpdate(Connection& c, Request& r) {
  Server& server = c.server();
  auto req = protocol::StreamUpdateRequest::Decode(r.payload);
  if (!req.ok()) return c.Reply(r.op, r.id, req.status());
  std::shared_ptr<Stream>& stream = c.session().stream;
  if (!stream) {
    // Both callbacks run on the connection's strand, from the stream's
    // Pump(); the stream stops when the connection closes.
    Connection* conn = &c;
    stream = std::make_shared<Stream>(
        c.executor(), server.io_.get_executor(), server.db_.load(), server.lod(),
        server.options_.streams, &server.stream_counters_, &server.frame_buffers_,
        [conn](std::vector<uint8_t> frame) {
          // Nothing new while shutting down (it would keep the drain waiting).
          if (!conn->server().stopping_) conn->Enqueue(std::move(frame));
        },
        [conn] { return conn->PushBacklog(); });
  }
  const absl::Status s = stream->Update(*req);
  c.Reply(r.op, r.id, s);  // before the data it starts
  if (s.ok()) stream->Pump();
}

void Server::Handlers::StreamClose(Connection& c, Request& r) {
  std::shared_ptr<Stream>& stream = c.session().stream;
  if (!stream) {
    return c.Reply(r.op, r.id, absl::NotFoundError("no stream is open on this connection"));
  }
  stream->Stop();
  stream.reset();
  c.Reply(r.op, r.id, WireStatus::kOk, {});
}

}  // namespace voxdb::daemon
