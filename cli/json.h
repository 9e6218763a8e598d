// JSON for the voxdb CLI: the writer of its --json output (JsonObject) and a
// small strict reader (Json), used for Zarr's .zarray files and by the tests
// that check what the CLI prints.
//
// The reader takes exactly one JSON value (RFC 8259) and refuses anything
// else: trailing bytes, control characters inside strings, bad escapes,
// numbers outside the JSON grammar, duplicate object keys (other readers
// disagree on which one wins) and nesting deeper than 32. A \uXXXX escape is
// read as '?': nothing the CLI reads needs more.
//
// Example:
//   JsonObject o;
//   o.Str("command", "get-voxel").Num("material", 7);
//   o.ToString()  // {"command":"get-voxel","material":7}
//
//   VOXDB_ASSIGN_OR_RETURN(Json v, Json::Parse(text));
//   if (v["zarr_format"].u64() != 2) ...
//
// Thread-safety: value types and pure functions.
#ifndef VOXDB_CLI_JSON_H_
#define VOXDB_CLI_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace voxdb::cli {

// --- Writing -------------------------------------------------------------

// A JSON object built field by field, in insertion order.
class JsonObject {
 public:
  JsonObject& Str(std::string_view key, std::string_view value);
  JsonObject& Num(std::string_view key, uint64_t value);
  JsonObject& Double(std::string_view key, double value);  // shortest round-trip form
  JsonObject& Bool(std::string_view key, bool value);
  JsonObject& Object(std::string_view key, const JsonObject& value);
  // `json` must be one JSON value.
  JsonObject& Raw(std::string_view key, std::string_view json);
  std::string ToString() const { return "{" + body_ + "}"; }

 private:
  std::string body_;
};

// `text` as a JSON string, quotes included. Bytes that are not UTF-8 become
// U+FFFD so that the output is always valid JSON.
std::string JsonQuote(std::string_view text);
// True when `text` is a JSON number (so that it can be emitted as one).
bool IsJsonNumber(std::string_view text);

// --- Reading -------------------------------------------------------------

// One parsed JSON value.
class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  // The value of `text`, which must be exactly one JSON value (white space
  // around it allowed). INVALID, saying what is wrong, otherwise.
  static absl::StatusOr<Json> Parse(std::string_view text);

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_object() const { return type_ == Type::kObject; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_number() const { return type_ == Type::kNumber; }

  // An object's member, or nullptr when it has none of that name (or is not
  // an object).
  const Json* Find(std::string_view key) const;
  // An object's member; a null value when absent.
  const Json& operator[](std::string_view key) const;
  bool has(std::string_view key) const { return Find(key) != nullptr; }
  // An object's members in document order; an array's items.
  const std::vector<std::pair<std::string, Json>>& members() const { return members_; }
  const std::vector<Json>& items() const { return items_; }

  // A string's text; a number's digits as written ("1e3"); else empty.
  const std::string& str() const { return text_; }
  // A number's value (0 for anything else).
  double number() const { return number_; }
  // True only for the literal true.
  bool boolean() const { return type_ == Type::kBool && text_ == "true"; }
  // A number written as a non-negative integer that fits 64 bits; else
  // UINT64_MAX.
  uint64_t u64() const;
  // The value exactly as it was written in the parsed text.
  const std::string& raw() const { return raw_; }

 private:
  friend class JsonParser;
  Type type_ = Type::kNull;
  std::string text_;  // kString: the text; kNumber, kBool: as written
  double number_ = 0;
  std::vector<std::pair<std::string, Json>> members_;
  std::vector<Json> items_;
  std::string raw_;
};

}  // namespace voxdb::cli

#endif  // VOXDB_CLI_JSON_H_
