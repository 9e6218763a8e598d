#include "cli/json.h"

#include <cctype>
#include <charconv>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace voxdb::cli {

// --- Writing -------------------------------------------------------------

namespace {

// The length of the UTF-8 sequence starting at s[i], or 0 if it is not one.
size_t Utf8Length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  // Overlong forms, surrogates and code points past U+10FFFF.
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
      (cp >= 0xd800 && cp <= 0xdfff)) {
    return 0;
  }
  return n;
}

}  // namespace

std::string JsonQuote(std::string_view text) {
  std::string out = "\"";
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    const size_t n = Utf8Length(text, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(text.substr(i, n));
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
    i += n;
  }
  out += '"';
  return out;
}

bool IsJsonNumber(std::string_view t) {
  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  size_t i = 0;
  const auto digits = [&] {
    const size_t from = i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
    return i - from;
  };
  if (i < t.size() && t[i] == '-') ++i;
  if (i < t.size() && t[i] == '0') {
    ++i;
  } else if (digits() == 0) {
    return false;
  }
  if (i < t.size() && t[i] == '.') {
    ++i;
    if (digits() == 0) return false;
  }
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    if (digits() == 0) return false;
  }
  return i == t.size();
}

JsonObject& JsonObject::Raw(std::string_view key, std::string_view json) {
  if (!body_.empty()) body_ += ',';
  body_ += JsonQuote(key);
  body_ += ':';
  body_.append(json);
  return *this;
}

JsonObject& JsonObject::Str(std::string_view key, std::string_view value) {
  return Raw(key, JsonQuote(value));
}

JsonObject& JsonObject::Num(std::string_view key, uint64_t value) {
  return Raw(key, std::to_string(value));
}

JsonObject& JsonObject::Double(std::string_view key, double value) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  const std::string_view text(buf, ec == std::errc() ? static_cast<size_t>(end - buf) : 0);
  // JSON has no inf or nan.
  return Raw(key, IsJsonNumber(text) ? text : std::string_view("null"));
}

JsonObject& JsonObject::Bool(std::string_view key, bool value) {
  return Raw(key, value ? "true" : "false");
}

JsonObject& JsonObject::Object(std::string_view key, const JsonObject& value) {
  return Raw(key, value.ToString());
}

// --- Reading -------------------------------------------------------------

// A recursive-descent parser over one text; the first error stops it.
class JsonParser {
 public:
  explicit JsonParser(std::string_view s) : s_(s) {}

  absl::StatusOr<Json> Document() {
    Json v;
    if (Value(&v, 0)) {
      Space();
      if (i_ != s_.size()) Fail("trailing bytes after the JSON value");
    }
    if (!error_.empty()) {
      return absl::InvalidArgumentError(error_);
    }
    return v;
  }

 private:
  static constexpr int kMaxDepth = 32;

  bool Fail(std::string_view what) {
    if (error_.empty()) error_ = std::string(what);
    return false;
  }
  void Space() {
    while (i_ < s_.size() &&
           (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r' || s_[i_] == '\n')) {
      ++i_;
    }
  }
  bool Take(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  bool Digits() {
    const size_t from = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    return i_ > from;
  }
  bool String(std::string* out) {
    if (!Take("\"")) return Fail("expected a JSON string");
    while (i_ < s_.size()) {
      const char c = s_[i_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return Fail("control character in a JSON string");
      if (c != '\\') {
        *out += c;
        continue;
      }
      if (i_ >= s_.size()) break;
      const char e = s_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          *out += e;
          break;
        case 'b':
          *out += '\b';
          break;
        case 'f':
          *out += '\f';
          break;
        case 'n':
          *out += '\n';
          break;
        case 'r':
          *out += '\r';
          break;
        case 't':
          *out += '\t';
          break;
        case 'u':
          for (int k = 0; k < 4; ++k, ++i_) {
            if (i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_]))) {
              return Fail("bad \\u escape in a JSON string");
            }
          }
          *out += '?';
          break;
        default:
          return Fail("bad escape in a JSON string");
      }
    }
    return Fail("unterminated JSON string");
  }
  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  bool Number(Json* v) {
    const size_t from = i_;
    Take("-");
    if (!Take("0") && !Digits()) return Fail("bad JSON value");
    if (Take(".") && !Digits()) return Fail("bad JSON value");
    if (Take("e") || Take("E")) {
      if (!Take("+")) Take("-");
      if (!Digits()) return Fail("bad JSON value");
    }
    v->type_ = Json::Type::kNumber;
    v->text_ = std::string(s_.substr(from, i_ - from));
    if (!absl::SimpleAtod(v->text_, &v->number_)) return Fail("bad JSON value");
    return true;
  }
  bool Object(Json* v, int depth) {
    v->type_ = Json::Type::kObject;
    ++i_;
    Space();
    if (Take("}")) return true;
    do {
      Space();
      std::string key;
      if (!String(&key)) return false;
      if (v->Find(key) != nullptr) return Fail(absl::StrCat("duplicate JSON key \"", key, "\""));
      Space();
      if (!Take(":")) return Fail("expected ':' in a JSON object");
      Json member;
      if (!Value(&member, depth + 1)) return false;
      v->members_.emplace_back(std::move(key), std::move(member));
      Space();
    } while (Take(","));
    return Take("}") || Fail("expected ',' or '}' in a JSON object");
  }
  bool Array(Json* v, int depth) {
    v->type_ = Json::Type::kArray;
    ++i_;
    Space();
    if (Take("]")) return true;
    do {
      Json item;
      if (!Value(&item, depth + 1)) return false;
      v->items_.push_back(std::move(item));
      Space();
    } while (Take(","));
    return Take("]") || Fail("expected ',' or ']' in a JSON array");
  }
  bool Value(Json* v, int depth) {
    if (depth > kMaxDepth) return Fail("JSON nested too deeply");
    Space();
    if (i_ >= s_.size()) return Fail("unexpected end of JSON");
    const size_t from = i_;
    bool ok;
    const char c = s_[i_];
    if (c == '{') {
      ok = Object(v, depth);
    } else if (c == '[') {
      ok = Array(v, depth);
    } else if (c == '"') {
      v->type_ = Json::Type::kString;
      ok = String(&v->text_);
    } else if (Take("true") || Take("false")) {
      v->type_ = Json::Type::kBool;
      v->text_ = std::string(s_.substr(from, i_ - from));
      ok = true;
    } else if (Take("null")) {
      ok = true;
    } else {
      ok = Number(v);
    }
    if (ok) v->raw_ = std::string(s_.substr(from, i_ - from));
    return ok;
  }

  std::string_view s_;
  size_t i_ = 0;
  std::string error_;  // the first error; empty: none
};

absl::StatusOr<Json> Json::Parse(std::string_view text) { return JsonParser(text).Document(); }

const Json* Json::Find(std::string_view key) const {
  for (const auto& [k, v] : members_) {
    if (k == key) return &v;
  }
  return nullptr;
}

const Json& Json::operator[](std::string_view key) const {
  static const Json* const kNull = new Json();
  const Json* v = Find(key);
  return v != nullptr ? *v : *kNull;
}

uint64_t Json::u64() const {
  uint64_t value;
  if (type_ != Type::kNumber || text_.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(text_, &value)) {
    return UINT64_MAX;
  }
  return value;
}

}  // namespace voxdb::cli
