// The opcode table (protocol/opcodes.h) against protocol/PROTOCOL.md, and
// the daemon's handler table (daemon/dispatch.h) against the opcode table.
#include "daemon/dispatch.h"

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "protocol/opcodes.h"

namespace voxdb::daemon {
namespace {

using protocol::FindOpcode;
using protocol::Opcode;
using protocol::OpcodeInfo;
using protocol::OpcodeKind;
using protocol::Role;

std::string ReadProtocolDoc() {
  std::ifstream in(VOXDB_PROTOCOL_MD_PATH);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A row of the opcode table under "## Requests".
struct DocRow {
  int value = 0;
  std::string name;
  bool pushed = false;  // "pushed by the server" instead of a request payload
};

// The rows of the first table under "## Requests" whose header starts with
// "| opcode | name".
std::vector<DocRow> DocOpcodes(const std::string& doc) {
  std::vector<DocRow> rows;
  const size_t section = doc.find("\n## Requests\n");
  if (section == std::string::npos) return rows;
  std::istringstream in(doc.substr(section));
  std::string line;
  bool in_table = false;
  while (std::getline(in, line)) {
    if (!in_table) {
      in_table = line.rfind("| opcode | name", 0) == 0;
      continue;
    }
    if (line.rfind("|", 0) != 0) break;       // the table ended
    if (line.rfind("|--", 0) == 0) continue;  // the separator
    std::vector<std::string> cells = absl::StrSplit(line, '|');
    // "", opcode, name, request payload, reply payload, ""
    if (cells.size() < 4) continue;
    DocRow row;
    row.value = std::stoi(std::string(absl::StripAsciiWhitespace(cells[1])));
    row.name = std::string(absl::StripAsciiWhitespace(cells[2]));
    row.pushed = cells[3].find("pushed by the server") != std::string::npos;
    rows.push_back(row);
  }
  return rows;
}

// The roles "## Authentication" states: the opcodes listed after `read`
// (the role), `write` and `admin`, and those a connection may send before
// it authenticates ("it may send HELLO and PING only"). SNAPSHOT_* stands
// for every opcode with that prefix.
std::map<std::string, Role> DocRoles(const std::string& doc) {
  std::map<std::string, Role> roles;
  const size_t section = doc.find("\n## Authentication\n");
  if (section == std::string::npos) return roles;
  std::string text = doc.substr(section, doc.find("\n## ", section + 1) - section);
  for (char& ch : text) {
    if (ch == '\n') ch = ' ';
  }
  // The names in the parenthesis after `marker`.
  auto names_after = [&](const std::string& marker) {
    std::vector<std::string> names;
    const size_t at = text.find(marker);
    if (at == std::string::npos) return names;
    const size_t open = text.find('(', at);
    const size_t close = text.find(')', open);
    std::string list = text.substr(open + 1, close - open - 1);
    if (absl::StartsWith(list, "also ")) list = list.substr(5);
    for (absl::string_view n : absl::StrSplit(list, ',')) {
      n = absl::StripAsciiWhitespace(n);
      n = absl::StripPrefix(n, "and ");
      if (!n.empty()) names.emplace_back(n);
    }
    return names;
  };
  auto assign = [&](const std::vector<std::string>& names, Role role) {
    for (const std::string& n : names) {
      if (absl::EndsWith(n, "*")) {
        const std::string prefix = n.substr(0, n.size() - 1);
        for (const OpcodeInfo& info : protocol::kOpcodes) {
          if (absl::StartsWith(info.name, prefix)) roles[info.name] = role;
        }
      } else {
        roles[n] = role;
      }
    }
  };
  assign(names_after("`read` ("), Role::kRead);
  assign(names_after("`write` ("), Role::kWrite);
  assign(names_after("`admin` ("), Role::kAdmin);
  // Before authenticating: "it may send HELLO and PING only".
  const size_t before = text.find("it may send ");
  if (before != std::string::npos) {
    const size_t end = text.find(" only", before);
    const std::string list = text.substr(before + 12, end - before - 12);
    for (absl::string_view n : absl::StrSplit(list, " and ")) {
      roles[std::string(absl::StripAsciiWhitespace(n))] = Role::kNone;
    }
  }
  return roles;
}

TEST(OpcodeTableTest, EveryRowOfProtocolMdIsInTheTable) {
  const std::vector<DocRow> doc = DocOpcodes(ReadProtocolDoc());
  ASSERT_FALSE(doc.empty()) << "no opcode table found in " << VOXDB_PROTOCOL_MD_PATH;
  for (const DocRow& row : doc) {
    const OpcodeInfo* info = FindOpcode(static_cast<uint8_t>(row.value));
    ASSERT_NE(info, nullptr) << "PROTOCOL.md opcode " << row.value << " (" << row.name
                             << ") is not in protocol/opcodes.h";
    EXPECT_EQ(info->name, row.name) << "opcode " << row.value;
    EXPECT_EQ(info->kind, row.pushed ? OpcodeKind::kPush : OpcodeKind::kRequest) << row.name;
  }
}

TEST(OpcodeTableTest, EveryOpcodeOfTheTableIsInProtocolMd) {
  std::map<int, DocRow> doc;
  for (const DocRow& row : DocOpcodes(ReadProtocolDoc())) doc[row.value] = row;
  for (const OpcodeInfo& info : protocol::kOpcodes) {
    auto it = doc.find(static_cast<int>(info.op));
    ASSERT_NE(it, doc.end()) << info.name << " (" << static_cast<int>(info.op)
                             << ") has no row in PROTOCOL.md's opcode table";
    EXPECT_EQ(it->second.name, info.name);
  }
  EXPECT_EQ(doc.size(), std::size(protocol::kOpcodes));
}

TEST(OpcodeTableTest, RolesAreTheOnesProtocolMdStates) {
  const std::map<std::string, Role> doc = DocRoles(ReadProtocolDoc());
  ASSERT_GE(doc.size(), 20u) << "the role lists of PROTOCOL.md's \"Authentication\" were not found";
  std::set<std::string> seen;
  for (const OpcodeInfo& info : protocol::kOpcodes) {
    auto it = doc.find(info.name);
    if (info.kind == OpcodeKind::kPush) {
      // "EVENTS and STREAM_DATA sent by a client are INVALID whatever the role."
      EXPECT_EQ(it, doc.end()) << info.name << " is pushed, yet PROTOCOL.md gives it a role";
      EXPECT_EQ(info.role, Role::kNone) << info.name;
      continue;
    }
    ASSERT_NE(it, doc.end()) << "PROTOCOL.md states no role for " << info.name;
    EXPECT_EQ(info.role, it->second)
        << info.name << ": protocol/opcodes.h says " << protocol::RoleName(info.role)
        << ", PROTOCOL.md " << protocol::RoleName(it->second);
    seen.insert(info.name);
  }
  for (const auto& [name, role] : doc) {
    EXPECT_TRUE(seen.count(name)) << "PROTOCOL.md gives a role to " << name
                                  << ", which is no request of protocol/opcodes.h";
  }
}

TEST(OpcodeTableTest, LookUpsFollowTheTable) {
  for (const OpcodeInfo& info : protocol::kOpcodes) {
    EXPECT_EQ(FindOpcode(info.op), &info);
    EXPECT_STREQ(protocol::OpcodeName(info.op), info.name);
    EXPECT_EQ(protocol::RequiredRole(info.op), info.role);
    EXPECT_EQ(protocol::IsRequest(info.op), info.kind == OpcodeKind::kRequest);
  }
  EXPECT_EQ(FindOpcode(uint8_t{0}), nullptr);
  EXPECT_EQ(FindOpcode(uint8_t{255}), nullptr);
  EXPECT_STREQ(protocol::OpcodeName(static_cast<Opcode>(0)), "UNKNOWN");
  EXPECT_EQ(protocol::RequiredRole(static_cast<Opcode>(200)), Role::kNone);
  EXPECT_STREQ(protocol::RoleName(Role::kWrite), "write");
  EXPECT_STREQ(protocol::RoleName(static_cast<Role>(9)), "unknown");
}

TEST(HandlerTableTest, EveryRequestHasExactlyOneHandlerAndNoPushHasOne) {
  std::map<Opcode, int> rows;
  for (const HandlerRow& row : HandlerTable()) {
    ++rows[row.op];
    EXPECT_TRUE(protocol::IsRequest(row.op))
        << protocol::OpcodeName(row.op) << " has a handler but is no request";
    if (row.runs == Runs::kIoThread) {
      EXPECT_NE(row.on_io, nullptr) << protocol::OpcodeName(row.op);
      EXPECT_EQ(row.on_worker, nullptr) << protocol::OpcodeName(row.op);
    } else {
      EXPECT_NE(row.on_worker, nullptr) << protocol::OpcodeName(row.op);
      EXPECT_EQ(row.on_io, nullptr) << protocol::OpcodeName(row.op);
    }
    EXPECT_EQ(FindHandler(static_cast<uint8_t>(row.op)), &row);
  }
  for (const OpcodeInfo& info : protocol::kOpcodes) {
    if (info.kind == OpcodeKind::kRequest) {
      EXPECT_EQ(rows[info.op], 1) << info.name << " needs exactly one handler";
    } else {
      EXPECT_EQ(FindHandler(static_cast<uint8_t>(info.op)), nullptr) << info.name;
    }
  }
  EXPECT_EQ(FindHandler(0), nullptr);
  EXPECT_EQ(FindHandler(255), nullptr);
}

}  // namespace
}  // namespace voxdb::daemon
