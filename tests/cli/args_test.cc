#include "cli/args.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace voxdb::cli {
namespace {

// A usage error (exit 2) whose message contains `text`.
MATCHER_P(IsUsageErrorWith, text, "") {
  return IsUsageError(arg.status()) &&
         std::string(arg.status().message()).find(text) != std::string::npos;
}

absl::StatusOr<CommandLine> Parse(std::vector<std::string> args, const char* env_address = nullptr,
                                  const char* env_token = nullptr) {
  std::vector<const char*> argv = {"voxdb"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  return ParseCommandLine(static_cast<int>(argv.size()), argv.data(), env_address, env_token);
}

TEST(ArgsTest, UsageErrorsAreInvalidAndTagged) {
  const absl::Status s = UsageError("bad");
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_TRUE(IsUsageError(s));
  EXPECT_FALSE(IsUsageError(absl::InvalidArgumentError("bad")));
  EXPECT_FALSE(IsUsageError(absl::OkStatus()));
}

TEST(ArgsTest, ParseU64TakesPlainDecimalsUpTo2To64Minus1) {
  EXPECT_EQ(*ParseU64("0", "X"), 0u);
  EXPECT_EQ(*ParseU64("18446744073709551615", "X"), UINT64_MAX);
  EXPECT_THAT(ParseU64("18446744073709551616", "X"),
              IsUsageErrorWith("X '18446744073709551616' is larger than"));
  EXPECT_THAT(ParseU64("", "X"), IsUsageErrorWith("X is empty"));
  EXPECT_THAT(ParseU64("-1", "--limit"), IsUsageErrorWith("--limit '-1' is negative"));
  for (const char* bad : {"+1", " 1", "1 ", "0x10", "1.5", "1e3", "abc"}) {
    EXPECT_THAT(ParseU64(bad, "X"), IsUsageErrorWith("is not a decimal number")) << bad;
  }
}

TEST(ArgsTest, ParseMaterialIsAByte) {
  EXPECT_EQ(*ParseMaterial("255"), 255);
  EXPECT_THAT(ParseMaterial("256"), IsUsageErrorWith("MATERIAL '256' is not in 0..255"));
  EXPECT_THAT(ParseMaterial("-1"), IsUsageErrorWith("negative"));
}

TEST(ArgsTest, ParseDoubleTakesFiniteDecimalsOnly) {
  EXPECT_DOUBLE_EQ(*ParseDouble("45.8", "A"), 45.8);
  EXPECT_DOUBLE_EQ(*ParseDouble("-6.9", "A"), -6.9);
  EXPECT_DOUBLE_EQ(*ParseDouble("1e3", "A"), 1000);
  EXPECT_THAT(ParseDouble("1e999", "A"), IsUsageErrorWith("out of range"));
  for (const char* bad : {"+1", " 1", "0x1p3", "inf", "nan", "1,5", "1.5m"}) {
    EXPECT_THAT(ParseDouble(bad, "A"), IsUsageErrorWith("is not a finite decimal number")) << bad;
  }
  EXPECT_THAT(ParseDouble("", "A"), IsUsageErrorWith("A is empty"));
}

TEST(ArgsTest, ParseHexTakesPairsOfDigitsInEitherCase) {
  EXPECT_EQ(*ParseHex("00fFa1", "C"), (std::vector<uint8_t>{0x00, 0xff, 0xa1}));
  EXPECT_THAT(ParseHex("abc", "C"), IsUsageErrorWith("odd number of hex digits"));
  EXPECT_THAT(ParseHex("zz", "C"), IsUsageErrorWith("is not hex digits"));
  EXPECT_THAT(ParseHex("+1", "C"), IsUsageErrorWith("is not hex digits"));
  EXPECT_THAT(ParseHex("", "C"), IsUsageErrorWith("C is empty"));
}

TEST(ArgsTest, ParseDurationTakesSecondsOrAUnit) {
  using std::chrono::milliseconds;
  const milliseconds max(std::chrono::hours(10));
  EXPECT_EQ(*ParseDuration("30", "T", max), milliseconds(30'000));
  EXPECT_EQ(*ParseDuration("30s", "T", max), milliseconds(30'000));
  EXPECT_EQ(*ParseDuration("500ms", "T", max), milliseconds(500));
  EXPECT_EQ(*ParseDuration("5m", "T", max), milliseconds(300'000));
  EXPECT_EQ(*ParseDuration("2h", "T", max), milliseconds(7'200'000));
  EXPECT_EQ(*ParseDuration("10h", "T", max), max);
  EXPECT_THAT(ParseDuration("11h", "T", max), IsUsageErrorWith("T 11h is over 36000 seconds"));
  for (const char* bad : {"", "s", "1.5s", "5d", "-1", "1 s"}) {
    EXPECT_THAT(ParseDuration(bad, "T", max), IsUsageErrorWith("is not a duration")) << bad;
  }
}

TEST(ArgsTest, ParseAddressTakesHostPortAndBracketedIpv6) {
  auto a = ParseAddress("db.example:7390", "--address");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "db.example");
  EXPECT_EQ(a->port, 7390);
  a = ParseAddress("[::1]:1", "--address");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 1);
  EXPECT_THAT(ParseAddress("localhost", "VOXDB_ADDRESS"),
              IsUsageErrorWith("VOXDB_ADDRESS 'localhost' is not HOST:PORT"));
  EXPECT_THAT(ParseAddress("::1:7390", "--address"), IsUsageErrorWith("in brackets"));
  EXPECT_THAT(ParseAddress(":7390", "--address"), IsUsageErrorWith("has no host"));
  EXPECT_THAT(ParseAddress("h:0", "--address"), IsUsageErrorWith("not in 1..65535"));
  EXPECT_THAT(ParseAddress("h:65536", "--address"), IsUsageErrorWith("not in 1..65535"));
  EXPECT_THAT(ParseAddress("h:x", "--address"), IsUsageErrorWith("the port of --address"));
}

TEST(ArgsTest, ParseChunkTakesACodeOrCoordinates) {
  EXPECT_EQ(*ParseChunk("1,2,3"), engine::ChunkKey::FromCoord({1, 2, 3}));
  const engine::ChunkKey k = engine::ChunkKey::FromCoord({5, 6, 7});
  EXPECT_EQ(*ParseChunk(std::to_string(k.code())), k);
  EXPECT_THAT(ParseChunk(std::to_string(engine::ChunkKey::kMaxCode + 1)),
              IsUsageErrorWith("is not a chunk's Morton code"));
  EXPECT_THAT(ParseChunk("1,2"), IsUsageErrorWith("is not CX,CY,CZ"));
  EXPECT_THAT(ParseChunk("1,2,3,4"), IsUsageErrorWith("is not CX,CY,CZ"));
  EXPECT_THAT(ParseChunk("1,,3"), IsUsageErrorWith("the y of CHUNK is empty"));
  EXPECT_THAT(ParseChunk(absl::StrCat("0,0,", engine::kMaxChunkAxis + 1)),
              IsUsageErrorWith("over the largest chunk coordinate"));
}

TEST(ArgsTest, ParseBoxRefusesEmptyBoxes) {
  const std::vector<std::string> six = {"1", "2", "3", "4", "5", "6"};
  auto box = ParseBox(six);
  ASSERT_TRUE(box.ok()) << box.status();
  EXPECT_EQ(*box, (protocol::Box{{1, 2, 3}, {4, 5, 6}}));
  EXPECT_EQ(BoxVolume(*box), 27u);
  EXPECT_THAT(ParseBox(std::vector<std::string>{"1", "2", "3", "4", "2", "6"}),
              IsUsageErrorWith("the box is empty: Y0 2 is not below Y1 2"));
  EXPECT_THAT(ParseBox(std::vector<std::string>{"1", "2", "3", "4", "5", "x"}),
              IsUsageErrorWith("Z1 'x'"));
  // Valid however large; BoxVolume saturates.
  box = ParseBox(
      std::vector<std::string>{"0", "0", "0", "18446744073709551615", "18446744073709551615", "2"});
  ASSERT_TRUE(box.ok());
  EXPECT_EQ(BoxVolume(*box), UINT64_MAX);
}

TEST(ArgsTest, BoxConversionsRoundTrip) {
  const protocol::Box wire{{1, 2, 3}, {40, 50, 60}};
  const engine::VoxelBox box = ToVoxelBox(wire);
  EXPECT_EQ(box, (engine::VoxelBox{{1, 2, 3}, {40, 50, 60}}));
  EXPECT_EQ(ToWireBox(box), wire);
  EXPECT_EQ(box.volume(), BoxVolume(wire));
}

TEST(ArgsTest, OptionsMayComeBeforeOrAfterTheCommand) {
  auto cl = Parse({"--json", "get-voxel", "1", "2", "--timeout", "5s", "3", "--address=h:1"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_TRUE(cl->json);
  EXPECT_EQ(cl->command, "get-voxel");
  EXPECT_EQ(cl->args, (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(cl->timeout, std::chrono::seconds(5));
  EXPECT_EQ(cl->address, "h:1");
  EXPECT_EQ(cl->address_source, "--address");
}

TEST(ArgsTest, EnvironmentGivesDefaultsThatOptionsOverride) {
  auto cl = Parse({"ping"});
  ASSERT_TRUE(cl.ok());
  EXPECT_EQ(cl->address, kDefaultAddress);
  EXPECT_EQ(cl->address_source, "the default address");
  EXPECT_EQ(cl->token, "");
  cl = Parse({"ping"}, "env:2", "secret");
  ASSERT_TRUE(cl.ok());
  EXPECT_EQ(cl->address, "env:2");
  EXPECT_EQ(cl->address_source, "VOXDB_ADDRESS");
  EXPECT_EQ(cl->token, "secret");
  cl = Parse({"ping", "--address", "opt:3", "--token", "t2"}, "env:2", "secret");
  ASSERT_TRUE(cl.ok());
  EXPECT_EQ(cl->address, "opt:3");
  EXPECT_EQ(cl->token, "t2");
  // An empty $VOXDB_ADDRESS is unset.
  cl = Parse({"ping"}, "", nullptr);
  ASSERT_TRUE(cl.ok());
  EXPECT_EQ(cl->address, kDefaultAddress);
}

TEST(ArgsTest, NegativeNumbersAndEverythingAfterDoubleDashAreArguments) {
  auto cl = Parse({"get-voxel", "-5", "--", "--json", "-h"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_FALSE(cl->json);
  EXPECT_FALSE(cl->help);
  EXPECT_EQ(cl->args, (std::vector<std::string>{"-5", "--json", "-h"}));
  // An option's value may be negative.
  cl = Parse({"query", "--alt-min", "-100", "--alt-max=2.5"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_EQ(cl->alt_min, -100);
  EXPECT_EQ(cl->alt_max, 2.5);
  EXPECT_EQ(cl->FirstBandOption(), std::string("--alt-min"));
}

TEST(ArgsTest, CommandOptionsAreParsedAndChecked) {
  auto cl = Parse({"export", "--out", "d", "--box", "0", "0", "0", "8", "8", "8", "--compressor",
                   "blosc", "--lod", "3"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_EQ(cl->out, "d");
  EXPECT_EQ(cl->box, (protocol::Box{{0, 0, 0}, {8, 8, 8}}));
  EXPECT_EQ(cl->compressor, "blosc");
  EXPECT_EQ(cl->lod, 3u);
  cl = Parse({"watch", "--from", "7", "--detail", "records", "--count", "2"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_EQ(cl->from_seq, 7u);
  EXPECT_EQ(cl->detail, protocol::EventDetail::kRecords);
  EXPECT_EQ(cl->count, 2u);
  EXPECT_EQ(cl->FirstWatchOption(), std::string("--from"));
  cl = Parse({"query", "--limit", "10", "--all", "--cursor", "00ff"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_EQ(cl->limit, 10u);
  EXPECT_TRUE(cl->all);
  EXPECT_EQ(cl->cursor, (std::vector<uint8_t>{0, 0xff}));
  EXPECT_EQ(cl->FirstPageOption(), std::string("--limit"));
  EXPECT_EQ(Parse({"query"})->FirstPageOption(), nullptr);
}

TEST(ArgsTest, BadOptionsAreUsageErrorsNamingThem) {
  EXPECT_THAT(Parse({"ping", "--bogus"}), IsUsageErrorWith("unknown option '--bogus'"));
  EXPECT_THAT(Parse({"ping", "--json=1"}), IsUsageErrorWith("option --json takes no value"));
  EXPECT_THAT(Parse({"ping", "--timeout"}), IsUsageErrorWith("option --timeout needs a value"));
  EXPECT_THAT(Parse({"ping", "--timeout", "soon"}), IsUsageErrorWith("is not a duration"));
  EXPECT_THAT(Parse({"get-chunk", "--lod", "17"}), IsUsageErrorWith("--lod 17 is not in 0..16"));
  EXPECT_THAT(Parse({"watch", "--count", "0"}), IsUsageErrorWith("--count 0: give at least 1"));
  EXPECT_THAT(Parse({"watch", "--detail", "all"}),
              IsUsageErrorWith("--detail 'all': none, voxels or records"));
  EXPECT_THAT(Parse({"export", "--out="}), IsUsageErrorWith("--out needs a value"));
  EXPECT_THAT(Parse({"export", "--box", "0", "0", "0", "8", "8"}),
              IsUsageErrorWith("--box needs six values"));
  EXPECT_THAT(Parse({"export", "--box", "0", "0", "0", "8", "0", "8"}),
              IsUsageErrorWith("the box is empty"));
  EXPECT_THAT(Parse({"verify", "--data", ""}), IsUsageErrorWith("--data needs a directory"));
  EXPECT_THAT(Parse({"put-chunk", "--expect-version", "x"}),
              IsUsageErrorWith("--expect-version 'x' is not a decimal number"));
}

TEST(ArgsTest, HelpAndVersionFlags) {
  auto cl = Parse({"-h"});
  ASSERT_TRUE(cl.ok());
  EXPECT_TRUE(cl->help);
  EXPECT_TRUE(cl->command.empty());
  cl = Parse({"fill", "--help"});
  ASSERT_TRUE(cl.ok());
  EXPECT_TRUE(cl->help);
  EXPECT_EQ(cl->command, "fill");
  cl = Parse({"--version"});
  ASSERT_TRUE(cl.ok());
  EXPECT_TRUE(cl->version);
}

}  // namespace
}  // namespace voxdb::cli
