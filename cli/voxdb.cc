// voxdb: the admin CLI of voxdbd.
//
//   voxdb [--address HOST:PORT] [--token T] [--json] COMMAND [ARGS...]
//   voxdb --help; voxdb COMMAND --help
//
// Exit codes: 0 ok, 1 the server refused the request, 2 usage error, 3 the
// server cannot be reached (cli/output.h).
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/offline.h"
#include "cli/output.h"
#include "protocol/version.h"

namespace voxdb::cli {
namespace {

constexpr char kOptionsHelp[] =
    "options (before or after the command):\n"
    "  --address HOST:PORT  the server; [::1]:PORT for IPv6 (env VOXDB_ADDRESS;\n"
    "                       default 127.0.0.1:7390)\n"
    "  --token T            the token sent with HELLO (env VOXDB_TOKEN; default none)\n"
    "  --data DIR           the database directory, for verify, compact and recover\n"
    "                       (offline: they open it themselves, with voxdbd stopped)\n"
    "  --truncate-journal   for recover: drop the damaged journal record and every\n"
    "                       later one (a copy is kept)\n"
    "  --out DIR, --compressor zstd|blosc   for export\n"
    "  --box X0 Y0 Z0 X1 Y1 Z1              for export and import: only this box\n"
    "  --lod L              for get-chunk and query: LOD level L (1..16) of the pyramid;\n"
    "                       for export: also the arrays lod_pyramid/lod_1 .. lod_L\n"
    "  --json               print one JSON object on stdout: the result, or\n"
    "                       {\"error\":..., \"status\":...}\n"
    "  --timeout DURATION   give up when the server makes no progress for this long:\n"
    "                       seconds, or 500ms, 30s, 5m, 2h (default: 10 s to connect, then\n"
    "                       wait as long as it takes); for watch: stop after this long\n"
    "                       without a change\n"
    "  -h, --help           this help; voxdb COMMAND --help for one command\n"
    "  --version            print voxdb's version\n";

constexpr char kExitHelp[] =
    "exit status: 0 ok; 1 the server refused the request (voxdb: STATUS: message on stderr,\n"
    "e.g. OUT_OF_BOUNDS); 2 usage error; 3 the server cannot be reached or the connection\n"
    "was lost.\n";

// "voxdb set-voxel X Y Z MATERIAL", "voxdb ping".
std::string CommandCall(const CommandSpec& spec) {
  std::string call = absl::StrFormat("voxdb %s", spec.name);
  if (*spec.synopsis != '\0') absl::StrAppend(&call, " ", spec.synopsis);
  return call;
}

void PrintUsage() {
  std::string text =
      "usage: voxdb [options] COMMAND [ARGS...]\n"
      "\n"
      "voxdb talks to voxdbd, the voxel database daemon: one request per command (watch: a\n"
      "subscription, until stopped), after a HELLO with the token.\n"
      "\n"
      "commands:\n";
  for (const CommandSpec& c : Commands()) {
    absl::StrAppendFormat(&text, "  %-42s %s\n", CommandCall(c).substr(6), c.summary);
  }
  text +=
      "\n"
      "arguments:\n"
      "  X Y Z          voxel coordinates: decimal integers from 0 (see voxdb info for the\n"
      "                 world's extent)\n"
      "  X0 Y0 Z0 X1 Y1 Z1  a box: low corner inclusive, high corner exclusive\n"
      "  MATERIAL       a material id, 0..255\n"
      "  CHUNK          a chunk's Morton code in decimal, or its chunk coordinates CX,CY,CZ\n"
      "                 (voxel coordinates / 128), e.g. 1000000,400000,312500\n"
      "  FILE           for boxes: raw uint8 voxels, x fastest, then y, then z; for chunks:\n"
      "                 a chunk record (engine/FORMAT.md)\n"
      "  LAT LON        degrees: latitude -90..90 (north positive), longitude -180..180\n"
      "                 (east positive)\n"
      "\n";
  text += kOptionsHelp;
  text += "\n";
  text += kExitHelp;
  std::fwrite(text.data(), 1, text.size(), stdout);
}

void PrintCommandHelp(const CommandSpec& spec) {
  std::string text = absl::StrFormat("usage: voxdb [options] %s\n\n", CommandCall(spec).substr(6));
  text += CommandHelpDetails(spec);
  text += "\n";
  text += kOptionsHelp;
  std::fwrite(text.data(), 1, text.size(), stdout);
}

std::string UsageHint(const CommandSpec* spec) {
  if (spec == nullptr) return "see voxdb --help";
  return absl::StrFormat("usage: %s (see voxdb --help)", CommandCall(*spec));
}

// --json anywhere on the command line, for errors found before it is parsed.
bool WantsJson(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--") return false;
    if (a == "--json") return true;
  }
  return false;
}

int Main(int argc, char** argv) {
  auto parsed =
      ParseCommandLine(argc, argv, std::getenv("VOXDB_ADDRESS"), std::getenv("VOXDB_TOKEN"));
  if (!parsed.ok()) {
    return ReportError(parsed.status(), "", WantsJson(argc, argv), UsageHint(nullptr));
  }
  CommandLine& cl = *parsed;
  if (cl.version) {
    if (cl.json) {
      PrintJson(JsonObject().Str("command", "version").Str("version", kVersion));
    } else {
      std::printf("voxdb %s\n", kVersion);
    }
    return kExitOk;
  }
  if (cl.command == "help") {  // voxdb help [COMMAND]
    if (cl.args.empty()) {
      PrintUsage();
      return kExitOk;
    }
    cl.command = cl.args[0];
    cl.args.erase(cl.args.begin());
    cl.help = true;
  }
  if (cl.command.empty()) {
    if (cl.help) {
      PrintUsage();
      return kExitOk;
    }
    return ReportError(UsageError("no command given"), "", cl.json, UsageHint(nullptr));
  }
  const CommandSpec* spec = FindCommand(cl.command);
  if (spec == nullptr) {
    return ReportError(UsageError(absl::StrFormat("unknown command '%s'", cl.command)), "", cl.json,
                       UsageHint(nullptr));
  }
  if (cl.help) {
    PrintCommandHelp(*spec);
    return kExitOk;
  }
  absl::Status status;
  if (spec->arg_count != kVariableArgs && cl.args.size() != spec->arg_count) {
    status = UsageError(absl::StrFormat(
        "takes %u argument%s (%s), not %u", spec->arg_count, spec->arg_count == 1 ? "" : "s",
        spec->arg_count == 0 ? "none" : spec->synopsis, cl.args.size()));
  } else if (cl.data.has_value() && !TakesDataOption(spec->name)) {
    status = UsageError(
        "there is no option --data for this command (verify, compact and recover take it)");
  } else if (cl.truncate_journal && std::string_view(spec->name) != "recover") {
    status = UsageError("there is no option --truncate-journal for this command (recover)");
  } else if (cl.expect_version.has_value() && !spec->takes_expect_version) {
    status = UsageError("there is no option --expect-version for this command");
  } else if ((cl.out.has_value() || cl.compressor.has_value()) &&
             std::string_view(spec->name) != "export") {
    status = UsageError("there is no option --out or --compressor for this command (export)");
  } else if (cl.box.has_value() && std::string_view(spec->name) != "export" &&
             std::string_view(spec->name) != "import") {
    status = UsageError("there is no option --box for this command (export and import take it)");
  } else if (cl.lod.has_value() && std::string_view(spec->name) != "get-chunk" &&
             std::string_view(spec->name) != "query" && std::string_view(spec->name) != "export") {
    status = UsageError(
        "there is no option --lod for this command (get-chunk, query and export take it)");
  } else if (cl.FirstPageOption() != nullptr && !spec->takes_query_options) {
    status =
        UsageError(absl::StrFormat("there is no option %s for this command", cl.FirstPageOption()));
  } else if (cl.FirstBandOption() != nullptr && !spec->takes_query_options &&
             std::string_view(spec->name) != "watch") {
    status = UsageError(absl::StrFormat(
        "there is no option %s for this command (query and watch take it)", cl.FirstBandOption()));
  } else if (cl.FirstWatchOption() != nullptr && std::string_view(spec->name) != "watch") {
    status = UsageError(absl::StrFormat("there is no option %s for this command (watch takes it)",
                                        cl.FirstWatchOption()));
  } else {
    status = spec->run(cl);
  }
  if (status.ok()) return kExitOk;
  if (IsUsageError(status)) {
    status = UsageError(absl::StrFormat("%s: %s", spec->name, status.message()));
  }
  return ReportError(status, spec->name, cl.json, UsageHint(spec));
}

}  // namespace
}  // namespace voxdb::cli

// The last line of defence: an exception that escapes a command (each
// command turns the failures it knows of into an absl::Status) ends it with
// a one-line error and exit status 1, not an abort.
int main(int argc, char** argv) {
  try {
    return voxdb::cli::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "voxdb: INTERNAL: unexpected error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "voxdb: INTERNAL: unexpected error\n");
  }
  return voxdb::cli::kExitServerError;
}
