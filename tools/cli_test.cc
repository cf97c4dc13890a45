#include "tools/cli.h"

#include <doctest/doctest.h>

#include <vector>

namespace epx::cli {
namespace {

namespace po = boost::program_options;

// argv for parse(): the strings stay alive with the object.
struct Argv {
  explicit Argv(std::vector<std::string> args) : strings(std::move(args)) {
    for (std::string& s : strings) pointers.push_back(s.data());
  }
  int argc() const { return static_cast<int>(pointers.size()); }
  char** argv() { return pointers.data(); }
  std::vector<std::string> strings;
  std::vector<char*> pointers;
};

po::options_description options() {
  po::options_description opts("test options");
  opts.add_options()("help,h", "help")("name", po::value<std::string>()->required(), "a required flag")(
      "count", po::value<int>()->default_value(3), "a number")("command", po::value<std::string>(), "positional");
  return opts;
}

TEST_CASE("parse: values, defaults and a positional argument") {
  Argv args({"tool", "--name", "x", "run"});
  po::positional_options_description positional;
  positional.add("command", 1);
  po::variables_map vm;
  CHECK_FALSE(parse(args.argc(), args.argv(), options(), &vm, "tool", &positional).has_value());
  CHECK(vm["name"].as<std::string>() == "x");
  CHECK(vm["count"].as<int>() == 3);
  CHECK(vm["command"].as<std::string>() == "run");
}

TEST_CASE("parse: --help exits 0 even without the required flags; bad usage exits 2") {
  po::variables_map help_vm;
  Argv help({"tool", "--help"});
  CHECK(parse(help.argc(), help.argv(), options(), &help_vm, "tool") == std::optional<int>(0));

  for (std::vector<std::string> bad : {std::vector<std::string>{"tool"},  // --name missing
                                       {"tool", "--name", "x", "--frobnicate"},
                                       {"tool", "--name", "x", "--count", "many"},
                                       {"tool", "--name"}}) {
    CAPTURE(bad.size());
    Argv args(bad);
    po::variables_map vm;
    CHECK(parse(args.argc(), args.argv(), options(), &vm, "tool") == std::optional<int>(2));
  }
}

TEST_CASE("split_list drops empty items") {
  CHECK(split_list("") == std::vector<std::string>{});
  CHECK(split_list("lo") == std::vector<std::string>{"lo"});
  CHECK(split_list("a,b,,c,") == std::vector<std::string>{"a", "b", "c"});
}

TEST_CASE("parse_cores pads with -1 and refuses what is not a list of CPUs") {
  auto none = parse_cores("", 3);
  REQUIRE(none.ok());
  CHECK(*none == std::vector<int>{-1, -1, -1});
  auto some = parse_cores("2,4", 4);
  REQUIRE(some.ok());
  CHECK(*some == std::vector<int>{2, 4, -1, -1});
  for (const char* bad : {"2,x", "-1", "3.5", "2,4,6,8"}) {
    CAPTURE(bad);
    auto cores = parse_cores(bad, 3);
    CHECK(cores.status().code() == StatusCode::kInvalidArgument);
  }
  CHECK(parse_cores("2,x", 3).status().message().find("'x'") != std::string::npos);
}

}  // namespace
}  // namespace epx::cli
