#include "daemon/json_log_format.h"

#include <doctest/doctest.h>

using namespace epx::daemon;

TEST_CASE("the fields a message names: job, rank, rail, client") {
  auto f = fields_named_in("client 3 joining job train-7.a as rank 1/4 via coordinator 10.0.0.1:7470");
  CHECK(f.at("client") == "3");
  CHECK(f.at("job") == "train-7.a");
  CHECK(f.at("rank") == "1");
  CHECK(f.count("rail") == 0);
  CHECK(fields_named_in("rail 0: provider tcp").at("rail") == "0");
  CHECK(fields_named_in("job x: rank 2 joined; 4 ranks in table").at("rank") == "2");
  CHECK(fields_named_in("left job abc.").at("job") == "abc");  // sentence end is not the id
  // Words that only contain a key, and keys without a value, name nothing.
  CHECK(fields_named_in("jobs: 3, ranks 4, railway 5, rank: none").empty());
}

TEST_CASE("a JSON log line escapes the message and carries the fields") {
  const auto t = std::chrono::system_clock::time_point(std::chrono::milliseconds(1764600000123));
  const std::string line = json_log_line(t, "warning", 42, "job j: rank 0 said \"hi\"\n\tbye");
  CHECK(line ==
        "{\"time\":\"2025-12-01T14:40:00.123Z\",\"level\":\"warning\",\"thread\":42,"
        "\"message\":\"job j: rank 0 said \\\"hi\\\"\\n\\tbye\",\"job\":\"j\",\"rank\":0}\n");
}
