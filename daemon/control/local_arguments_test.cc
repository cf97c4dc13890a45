#include "daemon/control/local_arguments.h"

#include <doctest/doctest.h>

#include <string>

using namespace epx;
using namespace epx::daemon;

TEST_CASE("job ids: 1..128 bytes of letters, digits, '-', '_', '.'") {
  CHECK(check_job_id("train-7_a.b").ok());
  CHECK(check_job_id(std::string(128, 'j')).ok());
  for (const std::string& bad : {std::string(), std::string(129, 'j'), std::string("a b"), std::string("a/b"),
                                 std::string("\xff\xfe"), std::string("caf\xc3\xa9"), std::string("a\nb"),
                                 std::string("a\0b", 3), std::string("."), std::string("..")}) {
    CAPTURE(quote(bad));
    Status s = check_job_id(bad);
    CHECK(s.code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("client names: bounded UTF-8 without control characters") {
  CHECK(check_client_name("").ok());
  CHECK(check_client_name("vllm-worker-3").ok());
  CHECK(check_client_name("w\xc3\xb6rker \xe2\x9c\x93").ok());  // "wörker ✓"
  CHECK(check_client_name(std::string(128, 'n')).ok());
  for (const std::string& bad :
       {std::string(129, 'n'), std::string("\xff"), std::string("\xc3"), std::string("\xc0\x80"),
        std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"), std::string("a\nb"), std::string("\x7f"),
        std::string("\xc2\x85"), std::string("a\0b", 3)}) {
    CAPTURE(quote(bad));
    CHECK(check_client_name(bad).code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("coordinators: host:port or [ipv6]:port over TCP, port 1..65535") {
  for (const char* good : {"127.0.0.1:7470", "gpu-node-1:1", "gpu-node-1.cluster.local:65535", "[::1]:7470",
                           "[fe80::1%eth0]:7470", "[2001:db8::5]:80"}) {
    CAPTURE(good);
    CHECK(check_coordinator(good).ok());
  }
  struct Bad {
    std::string address;
    const char* says;
  };
  for (const Bad& bad : std::initializer_list<Bad>{
           {"", "empty"},
           {"127.0.0.1:99999", "1..65535"},
           {"127.0.0.1:65536", "1..65535"},
           {"127.0.0.1:0", "1..65535"},
           {"127.0.0.1:00000", "1..65535"},
           {"127.0.0.1:http", "decimal digits"},
           {"127.0.0.1:+80", "decimal digits"},
           {"127.0.0.1: 80", "decimal digits"},
           {"127.0.0.1:", "1..65535"},
           {"no-port", "no port"},
           {":7470", "no host"},
           {"unix:/run/epx/epxd.sock", "'unix:' target"},
           {"unix:80", "'unix:' target"},
           {"UNIX-ABSTRACT:x", "'unix-abstract:' target"},
           {"dns:///h:1", "'dns:' target"},
           {"ipv4:127.0.0.1:80", "'ipv4:' target"},
           {"vsock:3:80", "'vsock:' target"},
           {"::1:7470", "brackets"},
           {"[::1]7470", "[ipv6]:port"},
           {"[::1", "[ipv6]:port"},
           {"[not-v6]:80", "not an IPv6 address"},
           {"[fe80::1%]:80", "empty IPv6 zone"},
           {"h/x:80", "DNS name"},
           {"a..b:80", "empty label"},
           {"caf\xc3\xa9:80", "DNS name"},
           {std::string(64, 'l') + ":80", "label over 63"},
           {std::string(4096, 'x') + ":1", "at most 261"},
       }) {
    CAPTURE(quote(bad.address));
    Status s = check_coordinator(bad.address);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(s.message().find(bad.says) != std::string::npos, s.message());
    // An error carries the address only bounded: it must fit a client's trailers.
    CHECK(s.message().size() < 400);
  }
}

TEST_CASE("PCI bus ids: empty, or hex digits, ':' and '.'") {
  CHECK(check_pci_bus_id("").ok());
  CHECK(check_pci_bus_id("0000:53:00.0").ok());
  CHECK(check_pci_bus_id(std::string(33, '0')).code() == StatusCode::kInvalidArgument);
  CHECK(check_pci_bus_id("0000:53:00.0\n").code() == StatusCode::kInvalidArgument);
  CHECK(check_pci_bus_id("\xff").code() == StatusCode::kInvalidArgument);
}

TEST_CASE("quote bounds and escapes what it is given") {
  CHECK(quote("abc") == "abc");
  CHECK(quote("a\nb\\") == "a\\x0ab\\x5c");
  CHECK(quote(std::string("\xff", 1)) == "\\xff");
  const std::string q = quote(std::string(1 << 20, 'x'));
  CHECK(q.size() < 80);
  CHECK(q.find("(1048576 bytes)") != std::string::npos);
}

TEST_CASE("is_utf8 takes well-formed UTF-8 only") {
  CHECK(is_utf8(""));
  CHECK(is_utf8("plain"));
  CHECK(is_utf8("\xf0\x9f\x98\x80"));  // U+1F600
  CHECK_FALSE(is_utf8("\xf0\x9f\x98"));    // cut short
  CHECK_FALSE(is_utf8("\xe0\x80\xaf"));    // overlong '/'
  CHECK_FALSE(is_utf8("\xed\xbf\xbf"));    // surrogate
  CHECK_FALSE(is_utf8("\x80"));            // continuation without a lead
}
