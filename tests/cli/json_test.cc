#include "cli/json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace voxdb::cli {
namespace {

TEST(JsonObjectTest, BuildsOneObjectInInsertionOrder) {
  JsonObject inner;
  inner.Num("n", 1);
  JsonObject o;
  o.Str("command", "get-voxel")
      .Num("material", 7)
      .Bool("ok", true)
      .Double("d", 0.25)
      .Object("inner", inner)
      .Raw("list", "[1,2]");
  EXPECT_EQ(o.ToString(),
            R"({"command":"get-voxel","material":7,"ok":true,"d":0.25,"inner":{"n":1},)"
            R"("list":[1,2]})");
  EXPECT_EQ(JsonObject().ToString(), "{}");
}

TEST(JsonObjectTest, NonFiniteDoublesAreNull) {
  JsonObject o;
  o.Double("a", std::numeric_limits<double>::infinity()).Double("b", std::nan(""));
  EXPECT_EQ(o.ToString(), R"({"a":null,"b":null})");
}

TEST(JsonQuoteTest, EscapesAndReplacesBadUtf8) {
  EXPECT_EQ(JsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(JsonQuote("a\"b\\c\nd\te\rf"), R"("a\"b\\c\nd\te\rf")");
  EXPECT_EQ(JsonQuote(std::string("\x01\x7f", 2)), R"("\u0001\u007f")");
  EXPECT_EQ(JsonQuote("\xc3\xa9"), "\"\xc3\xa9\"");  // é stays as it is
  EXPECT_EQ(JsonQuote("\xff"), R"("\ufffd")");
  EXPECT_EQ(JsonQuote("\xc0\xaf"), R"("\ufffd\ufffd")");            // overlong '/'
  EXPECT_EQ(JsonQuote("\xed\xa0\x80"), R"("\ufffd\ufffd\ufffd")");  // a surrogate
  EXPECT_EQ(JsonQuote("\xe2\x82"), R"("\ufffd\ufffd")");            // cut short
}

TEST(JsonQuoteTest, IsJsonNumberFollowsTheGrammar) {
  for (const char* good : {"0", "-0", "12", "1.5", "-1.5e10", "1E+2", "3e-7"}) {
    EXPECT_TRUE(IsJsonNumber(good)) << good;
  }
  for (const char* bad : {"", "-", "01", "+1", "1.", ".5", "1e", "inf", "nan", "0x10", "1 "}) {
    EXPECT_FALSE(IsJsonNumber(bad)) << bad;
  }
}

TEST(JsonTest, ParsesEveryKindOfValue) {
  auto v = Json::Parse(
      R"( {"s": "a\"b\\\/\n\u00e9", "n": -1.5e2, "u": 42, "t": true, "f": false,
           "z": null, "a": [1, [2], {}], "o": {"k": "v"}} )");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->is_object());
  EXPECT_EQ((*v)["s"].str(), "a\"b\\/\n?");
  EXPECT_TRUE((*v)["n"].is_number());
  EXPECT_EQ((*v)["n"].number(), -150);
  EXPECT_EQ((*v)["n"].str(), "-1.5e2");
  EXPECT_EQ((*v)["u"].u64(), 42u);
  EXPECT_TRUE((*v)["t"].boolean());
  EXPECT_FALSE((*v)["f"].boolean());
  EXPECT_TRUE((*v)["z"].is_null());
  EXPECT_TRUE((*v)["z"].raw() == "null");
  ASSERT_EQ((*v)["a"].items().size(), 3u);
  EXPECT_EQ((*v)["a"].items()[1].items()[0].u64(), 2u);
  EXPECT_EQ((*v)["o"]["k"].str(), "v");
  EXPECT_EQ((*v)["o"].raw(), R"({"k": "v"})");
  EXPECT_EQ((*v)["s"].raw(), R"("a\"b\\\/\n\u00e9")");
  // Members in document order.
  ASSERT_EQ(v->members().size(), 8u);
  EXPECT_EQ(v->members()[0].first, "s");
  EXPECT_EQ(v->members()[7].first, "o");
}

TEST(JsonTest, MissingMembersReadAsNull) {
  auto v = Json::Parse(R"({"a": 1})");
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->has("a"));
  EXPECT_FALSE(v->has("b"));
  EXPECT_EQ(v->Find("b"), nullptr);
  EXPECT_TRUE((*v)["b"].is_null());
  EXPECT_TRUE((*v)["b"]["c"].is_null());
  EXPECT_EQ((*v)["b"].u64(), UINT64_MAX);
  EXPECT_EQ((*v)["a"]["c"].str(), "");
}

TEST(JsonTest, U64IsOnlyForNonNegativeIntegersThatFit) {
  auto v = Json::Parse(R"([0, 18446744073709551615, 18446744073709551616, -1, 1.0, 1e2, "7"])");
  ASSERT_TRUE(v.ok()) << v.status();
  const auto& items = v->items();
  EXPECT_EQ(items[0].u64(), 0u);
  EXPECT_EQ(items[1].u64(), UINT64_MAX);  // fits, and equals the "not one" value
  for (size_t i = 2; i < items.size(); ++i) EXPECT_EQ(items[i].u64(), UINT64_MAX) << i;
}

TEST(JsonTest, RefusesWhatIsNotExactlyOneJsonValue) {
  for (const char* bad : {
           "",                   // nothing
           "   ",                // only space
           "{} {}",              // two values
           "{\"a\":1,}",         // trailing comma
           "[1,]",               // trailing comma
           "{\"a\" 1}",          // no colon
           "{a:1}",              // unquoted key
           "[1 2]",              // no comma
           "\"abc",              // unterminated
           "\"a\tb\"",           // a raw control character
           "\"\\x\"",            // a bad escape
           "\"\\u12g4\"",        // a bad \u escape
           "01",                 // leading zero
           "+1",                 // plus sign
           "1.",                 // no fraction digits
           ".5",                 // no integer digits
           "1e",                 // no exponent digits
           "NaN",                // not JSON
           "tru",                // cut short
           "{\"a\":1,\"a\":2}",  // a duplicate key
       }) {
    auto v = Json::Parse(bad);
    EXPECT_FALSE(v.ok()) << "'" << bad << "'";
    EXPECT_TRUE(absl::IsInvalidArgument(v.status())) << bad;
  }
}

TEST(JsonTest, RefusesDeepNesting) {
  EXPECT_TRUE(Json::Parse(std::string(32, '[') + std::string(32, ']')).ok());
  auto v = Json::Parse(std::string(40, '[') + std::string(40, ']'));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "JSON nested too deeply");
}

TEST(JsonTest, ReadsWhatTheWriterWrites) {
  JsonObject inner;
  inner.Str("q", "\"\\\n\x01\xff").Double("d", 1e-300);
  JsonObject o;
  o.Num("max", UINT64_MAX).Object("inner", inner).Bool("b", false);
  auto v = Json::Parse(o.ToString());
  ASSERT_TRUE(v.ok()) << v.status() << " " << o.ToString();
  EXPECT_EQ((*v)["max"].u64(), UINT64_MAX);
  EXPECT_EQ((*v)["inner"]["q"].str(), "\"\\\n??");
  EXPECT_EQ((*v)["inner"]["d"].number(), 1e-300);
  EXPECT_FALSE((*v)["b"].boolean());
  EXPECT_EQ((*v)["inner"].raw(), inner.ToString());
}

}  // namespace
}  // namespace voxdb::cli
