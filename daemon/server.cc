#include "daemon/server.h"

#include <deque>
#include <sstream>
#include <thread>

#include "absl/strings/str_format.h"
#include "engine/chunk_codec.h"
#include "protocol/frame.h"
#include "protocol/messages.h"

namespace voxdb::daemon {
namespace {

using protocol::Opcode;
using protocol::WireStatus;

engine::VoxelCoord ToVoxel(const protocol::Voxel3& v) { return {v.x, v.y, v.z}; }
engine::VoxelBox ToBox(const protocol::Box& b) { return {ToVoxel(b.lo), ToVoxel(b.hi)}; }

std::vector<uint8_t> MessageBytes(const absl::Status& s) {
  const absl::string_view m = s.message();
  return std::vector<uint8_t>(m.begin(), m.end());
}

}  // namespace

// One client connection. All its state lives on its strand.
class Server::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Server* server, tcp::socket socket)
      : server_(server), socket_(std::move(socket)), decoder_(server->options_.max_frame_payload) {}

  void Start() { Read(); }

 private:
  void Read() {
    auto self = shared_from_this();
    socket_.async_read_some(asio::buffer(buffer_), [self](boost::system::error_code ec, size_t n) {
      if (ec) return self->Close();
      self->OnBytes(std::span<const uint8_t>(self->buffer_.data(), n));
    });
  }

  void OnBytes(std::span<const uint8_t> in) {
    while (!in.empty()) {
      size_t used = 0;
      protocol::Frame frame;
      const auto result = decoder_.Feed(in, &used, &frame);
      in = in.subspan(used);
      if (result == protocol::FrameDecoder::Result::kError) {
        // An untrusted frame: answer if we can, then close this connection.
        const absl::Status& e = decoder_.error();
        Reply(0, decoder_.error_request_id(), decoder_.error_wire_status(), MessageBytes(e));
        close_after_write_ = true;
        return;
      }
      if (result == protocol::FrameDecoder::Result::kFrame) Dispatch(std::move(frame));
    }
    Read();
  }

  void Dispatch(protocol::Frame frame) {
    const uint8_t op = frame.header.opcode;
    const uint64_t id = frame.header.request_id;
    engine::Database* db = server_->db_;
    auto fail = [&](const absl::Status& s) {
      Reply(op, id, protocol::ToWireStatus(s), MessageBytes(s));
    };
    if (frame.header.is_reply()) return fail(absl::InvalidArgumentError("a client sent a reply"));
    const std::span<const uint8_t> p = frame.payload;
    switch (static_cast<Opcode>(op)) {
      case Opcode::kHello: {
        auto req = protocol::HelloRequest::Decode(p);
        if (!req.ok()) return fail(req.status());
        if (req->min_version > protocol::kProtocolVersion ||
            req->max_version < protocol::kProtocolVersion) {
          return fail(absl::UnimplementedError(absl::StrFormat(
              "this server speaks protocol version %u only", protocol::kProtocolVersion)));
        }
        protocol::HelloReply reply;
        reply.version = protocol::kProtocolVersion;
        reply.world_frame = db->frame().Encode();
        reply.server_version = "voxdbd 0.1.0";
        reply.max_payload = server_->options_.max_frame_payload;
        reply.max_batch = server_->options_.max_batch;
        reply.max_box_voxels = uint64_t{1} << 28;
        return Reply(op, id, WireStatus::kOk, reply.Encode());
      }
      case Opcode::kPing:
        return Reply(op, id, WireStatus::kOk, std::move(frame.payload));
      case Opcode::kGetChunks: {
        auto req = protocol::GetChunksRequest::Decode(p);
        if (!req.ok()) return fail(req.status());
        if (req->codes.size() > server_->options_.max_batch) {
          return fail(absl::InvalidArgumentError("too many chunks in one GET_CHUNKS"));
        }
        std::vector<engine::ChunkKey> keys;
        for (uint64_t c : req->codes) {
          if (c > engine::ChunkKey::kMaxCode)
            return fail(absl::InvalidArgumentError("bad chunk key"));
          keys.push_back(engine::ChunkKey::FromCode(c));
        }
        protocol::GetChunksReply reply;
        reply.results.resize(keys.size());
        absl::Status s = db->GetChunks(keys, [&](size_t i, const engine::ChunkRead& read) {
          protocol::ChunkResult& r = reply.results[i];
          r.status = static_cast<uint16_t>(protocol::ToWireStatus(read.status));
          r.version = read.version;
          if (read.status.ok()) {
            r.bytes.assign(read.record.begin(), read.record.end());
          } else {
            r.bytes = MessageBytes(read.status);
          }
        });
        if (!s.ok()) return fail(s);
        return Reply(op, id, WireStatus::kOk, reply.Encode());
      }
      case Opcode::kGetVoxels: {
        auto req = protocol::GetVoxelsRequest::Decode(p);
        if (!req.ok()) return fail(req.status());
        if (req->at.size() > server_->options_.max_batch) {
          return fail(absl::InvalidArgumentError("too many voxels in one GET_VOXELS"));
        }
        std::vector<engine::VoxelCoord> at;
        for (const auto& v : req->at) at.push_back(ToVoxel(v));
        std::vector<uint8_t> out(at.size());
        if (absl::Status s = db->GetVoxels(at, out.data()); !s.ok()) return fail(s);
        return Reply(op, id, WireStatus::kOk, std::move(out));
      }
      case Opcode::kReadBox: {
        auto req = protocol::BoxRequest::DecodeReadBox(p);
        if (!req.ok()) return fail(req.status());
        const engine::VoxelBox box = ToBox(req->box);
        if (absl::Status s = db->frame().CheckBox(box); !s.ok()) return fail(s);
        if (box.volume() > server_->options_.max_frame_payload) {
          return fail(absl::InvalidArgumentError("box is larger than the largest frame"));
        }
        std::vector<uint8_t> out(box.volume());
        if (absl::Status s = db->ReadBox(box, out.data()); !s.ok()) return fail(s);
        return Reply(op, id, WireStatus::kOk, std::move(out));
      }
      case Opcode::kSetVoxels: {
        auto req = protocol::SetVoxelsRequest::Decode(p);
        if (!req.ok()) return fail(req.status());
        if (req->edits.size() > server_->options_.max_batch) {
          return fail(absl::InvalidArgumentError("too many edits in one SET_VOXELS"));
        }
        std::vector<engine::VoxelEdit> edits;
        for (const auto& e : req->edits) edits.push_back({ToVoxel(e.at), e.material});
        return db->SetVoxels(edits, WriteDone(op, id));
      }
      case Opcode::kWriteBox: {
        auto req = protocol::BoxRequest::DecodeWriteBox(p);
        if (!req.ok()) return fail(req.status());
        return db->WriteBox(ToBox(req->box), req->voxels, WriteDone(op, id));
      }
      case Opcode::kFillBox: {
        auto req = protocol::BoxRequest::DecodeFillBox(p);
        if (!req.ok()) return fail(req.status());
        return db->FillBox(ToBox(req->box), req->material, WriteDone(op, id));
      }
      case Opcode::kPutChunk: {
        auto req = protocol::PutChunkRequest::Decode(p);
        if (!req.ok()) return fail(req.status());
        if (req->code > engine::ChunkKey::kMaxCode) {
          return fail(absl::InvalidArgumentError("bad chunk key"));
        }
        return db->PutChunk(engine::ChunkKey::FromCode(req->code), req->record,
                            req->expected_version, WriteDone(op, id));
      }
      case Opcode::kDeleteChunk: {
        auto code = protocol::DecodeU64(p);
        if (!code.ok()) return fail(code.status());
        if (*code > engine::ChunkKey::kMaxCode) {
          return fail(absl::InvalidArgumentError("bad chunk key"));
        }
        return db->DeleteChunk(engine::ChunkKey::FromCode(*code), WriteDone(op, id));
      }
      case Opcode::kFlush: {
        // Flush waits on the disk: run it off the I/O threads.
        auto self = shared_from_this();
        ++in_flight_;
        server_->RunBackground([self, db, op, id] {
          const absl::Status s = db->Flush();
          asio::post(self->socket_.get_executor(), [self, s, op, id] {
            --self->in_flight_;
            self->Reply(op, id, protocol::ToWireStatus(s),
                        s.ok() ? std::vector<uint8_t>() : MessageBytes(s));
          });
        });
        return;
      }
      case Opcode::kStats: {
        const engine::DatabaseStats st = db->Stats();
        std::ostringstream out;
        out << "cache_hits " << st.cache_hits << "\ncache_misses " << st.cache_misses
            << "\ncache_evictions " << st.cache_evictions << "\ncache_bytes " << st.cache_bytes
            << "\ncache_chunks " << st.cache_chunks << "\ndirty_bytes " << st.dirty_bytes
            << "\ndirty_chunks " << st.dirty_chunks << "\noldest_dirty_age_seconds "
            << st.oldest_dirty_age_s << "\njournal_records " << st.journal_records
            << "\njournal_commits " << st.journal_commits << "\nlast_seq " << st.last_seq
            << "\ncommitted_seq " << st.committed_seq << "\nreplayed_records "
            << st.replayed_records << "\nflushes " << st.flushes << "\nflushed_chunks "
            << st.flushed_chunks << "\nfills " << st.fills << "\nconnections "
            << server_->connections_.load() << "\n";
        const std::string text = out.str();
        return Reply(op, id, WireStatus::kOk, std::vector<uint8_t>(text.begin(), text.end()));
      }
    }
    fail(absl::UnimplementedError(absl::StrFormat("unknown opcode %u", op)));
  }

  // A completion for an engine write: posts the reply back to this strand.
  engine::WriteDone WriteDone(uint8_t op, uint64_t id) {
    ++in_flight_;
    auto self = shared_from_this();
    return [self, op, id](const engine::WriteResult& r) {
      asio::post(self->socket_.get_executor(), [self, r, op, id] {
        --self->in_flight_;
        if (r.status.ok()) {
          self->Reply(op, id, WireStatus::kOk, protocol::EncodeU64(r.version));
        } else {
          self->Reply(op, id, protocol::ToWireStatus(r.status), MessageBytes(r.status));
        }
      });
    };
  }

  void Reply(uint8_t op, uint64_t id, WireStatus status, std::vector<uint8_t> payload) {
    protocol::FrameHeader h;
    h.opcode = op;
    h.flags = protocol::kFlagReply;
    h.request_id = id;
    h.status = static_cast<uint16_t>(status);
    std::vector<uint8_t> bytes;
    bytes.reserve(protocol::kHeaderSize + payload.size());
    protocol::EncodeFrame(h, payload, &bytes);
    outbox_.push_back(std::move(bytes));
    if (!writing_) Write();
  }

  void Write() {
    if (outbox_.empty()) {
      writing_ = false;
      if (close_after_write_) Close();
      return;
    }
    writing_ = true;
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(outbox_.front()),
                      [self](boost::system::error_code ec, size_t) {
                        if (ec) return self->Close();
                        self->outbox_.pop_front();
                        self->Write();
                      });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    --server_->connections_;
  }

  Server* server_;
  tcp::socket socket_;
  protocol::FrameDecoder decoder_;
  std::array<uint8_t, 64 * 1024> buffer_{};
  std::deque<std::vector<uint8_t>> outbox_;
  bool writing_ = false;
  bool close_after_write_ = false;
  bool closed_ = false;
  int in_flight_ = 0;
};

Server::Server(const ServerOptions& options, engine::Database* db)
    : options_(options), db_(db), acceptor_(io_) {
  background_ = std::thread([this] {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> l(background_mu_);
        background_cv_.wait(l, [&] { return background_stop_ || !background_tasks_.empty(); });
        if (background_tasks_.empty()) return;  // stopping, all done
        task = std::move(background_tasks_.front());
        background_tasks_.pop_front();
      }
      task();
    }
  });
}

Server::~Server() { JoinBackground(); }

StatusOr<uint16_t> Server::Listen() {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(options_.listen_address, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrFormat("listen address '%s' is not an IP address", options_.listen_address));
  }
  const tcp::endpoint endpoint(address, options_.listen_port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrFormat(
        "cannot listen on %s:%u: %s", options_.listen_address, options_.listen_port, ec.message()));
  }
  Accept();
  return acceptor_.local_endpoint().port();
}

void Server::Accept() {
  acceptor_.async_accept(asio::make_strand(io_),
                         [this](boost::system::error_code ec, tcp::socket socket) {
                           if (ec) {
                             if (!stopping_) Accept();
                             return;
                           }
                           if (connections_.load() >= options_.max_connections) {
                             boost::system::error_code ignored;
                             socket.close(ignored);
                           } else {
                             ++connections_;
                             boost::system::error_code ignored;
                             socket.set_option(tcp::no_delay(true), ignored);
                             std::make_shared<Connection>(this, std::move(socket))->Start();
                           }
                           Accept();
                         });
}

void Server::Run() {
  const int threads = options_.io_threads > 0
                          ? options_.io_threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  auto guard = asio::make_work_guard(io_);
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([this] { io_.run(); });
  // Stop() releases the guard by stopping the context after in-flight work.
  io_.run();
  for (auto& t : pool) t.join();
}

void Server::RunBackground(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> l(background_mu_);
    background_tasks_.push_back(std::move(task));
  }
  background_cv_.notify_one();
}

void Server::JoinBackground() {
  {
    std::lock_guard<std::mutex> l(background_mu_);
    if (background_stop_) return;
    background_stop_ = true;
  }
  background_cv_.notify_all();
  background_.join();
}

void Server::Stop() {
  if (stopping_.exchange(true)) return;
  asio::post(io_, [this] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    // Give in-flight requests a moment to be answered, then stop the loop.
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(200));
    timer->async_wait([this, timer](boost::system::error_code) { io_.stop(); });
  });
}

}  // namespace voxdb::daemon
