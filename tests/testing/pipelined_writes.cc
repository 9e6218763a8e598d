#include "tests/testing/pipelined_writes.h"

#include <map>

#include "protocol/client.h"

namespace voxdb::testing {

void WritePipelined(uint16_t port, size_t depth, const std::atomic<bool>& go,
                    const std::function<Edit(uint64_t)>& edit_of,
                    const std::function<void(const Edit&)>& on_ack) {
  auto c = protocol::Client::Connect("127.0.0.1", port);
  if (!c.ok()) return;
  std::map<uint64_t, Edit> pending;  // by request id
  uint64_t next = 0;
  for (;;) {
    while (go && pending.size() < depth) {
      const Edit e = edit_of(next++);
      auto id = (*c)->Send(protocol::Opcode::kSetVoxels, protocol::SetVoxelsRequest{{e}}.Encode());
      if (!id.ok()) return;
      pending[*id] = e;
    }
    if (pending.empty()) return;
    auto f = (*c)->Receive();
    if (!f.ok()) return;
    auto it = pending.find(f->header.request_id);
    if (it == pending.end()) continue;
    if (f->header.status == 0) on_ack(it->second);
    pending.erase(it);
  }
}

}  // namespace voxdb::testing
