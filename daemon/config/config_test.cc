#include "daemon/config/config.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>

using namespace epx;
using namespace epx::daemon;

TEST_CASE("a good config file parses and keeps every field") {
  const char* text = R"(
    node_name: "gpu-node-1"
    control_socket: "/run/epx/test.sock"
    peer_listen: "0.0.0.0:7470"
    provider: "tcp"
    rail_domains: "eth0"
    rail_domains: "eth1"
    log_level: "debug"
    rpc_timeout_ms: 2500
  )";
  auto c = parse_config_text(text, "good.conf");
  REQUIRE(c.ok());
  CHECK(c->node_name() == "gpu-node-1");
  CHECK(c->rail_domains_size() == 2);
  CHECK(c->rpc_timeout_ms() == 2500);
  REQUIRE(finalize_config(&c.value()).ok());
  CHECK(c->max_clients() == 256);  // default filled
  CHECK(c->provider() == "tcp");   // explicit value kept
}

TEST_CASE("an unknown field is an error naming the field and the line") {
  auto c = parse_config_text("node_name: \"a\"\nrail_count: 4\n", "bad.conf");
  REQUIRE_FALSE(c.ok());
  CHECK(c.status().code() == StatusCode::kInvalidArgument);
  CHECK(c.status().message().find("bad.conf:2") != std::string::npos);
  CHECK(c.status().message().find("rail_count") != std::string::npos);
}

TEST_CASE("a malformed value is an error naming the field") {
  auto c = parse_config_text("node_name: \"a\"\nrpc_timeout_ms: soon\n", "v.conf");
  REQUIRE_FALSE(c.ok());
  CHECK(c.status().message().find("rpc_timeout_ms") != std::string::npos);
  CHECK(c.status().message().find("v.conf:2") != std::string::npos);
}

TEST_CASE("semantic errors name the field and the allowed values") {
  v1::DaemonConfig c;
  c.set_provider("infiniband");
  auto s = finalize_config(&c);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("provider") != std::string::npos);
  CHECK(s.message().find("efa") != std::string::npos);

  v1::DaemonConfig l;
  l.set_log_level("loud");
  CHECK(finalize_config(&l).message().find("log_level") != std::string::npos);

  v1::DaemonConfig p;
  p.set_peer_listen("localhost");
  CHECK(finalize_config(&p).message().find("peer_listen") != std::string::npos);

  v1::DaemonConfig q;
  q.set_peer_listen("127.0.0.1:70000");
  CHECK(finalize_config(&q).message().find("70000") != std::string::npos);

  v1::DaemonConfig r;
  r.set_control_socket("relative.sock");
  CHECK(finalize_config(&r).message().find("control_socket") != std::string::npos);

  v1::DaemonConfig a;
  a.set_advertise_address("10.0.0.1:0");
  CHECK(finalize_config(&a).message().find("advertise_address") != std::string::npos);
}

TEST_CASE("shutdown_timeout_ms: a default above rpc_timeout_ms, and no value that leaves no time to leave") {
  v1::DaemonConfig d;
  REQUIRE(finalize_config(&d).ok());
  CHECK(d.shutdown_timeout_ms() == 10000);

  v1::DaemonConfig slow;
  slow.set_rpc_timeout_ms(20000);
  REQUIRE(finalize_config(&slow).ok());
  CHECK(slow.shutdown_timeout_ms() == 23000);

  v1::DaemonConfig tight;
  REQUIRE(apply_override(&tight, "shutdown_timeout_ms", "4000").ok());
  auto s = finalize_config(&tight);  // rpc_timeout_ms 5000: telling coordinators alone may take longer
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("shutdown_timeout_ms") != std::string::npos);
}

TEST_CASE("flag overrides set fields by name and reject bad values") {
  v1::DaemonConfig c;
  REQUIRE(apply_override(&c, "node_name", "n7").ok());
  REQUIRE(apply_override(&c, "rpc_timeout_ms", "300").ok());
  REQUIRE(apply_override(&c, "rail_domains", "rdmap0s1,rdmap0s2").ok());
  CHECK(c.node_name() == "n7");
  CHECK(c.rpc_timeout_ms() == 300);
  REQUIRE(c.rail_domains_size() == 2);
  CHECK(c.rail_domains(1) == "rdmap0s2");

  auto bad = apply_override(&c, "rpc_timeout_ms", "-5");
  CHECK(bad.code() == StatusCode::kInvalidArgument);
  CHECK(bad.message().find("rpc_timeout_ms") != std::string::npos);
  CHECK(apply_override(&c, "max_clients", "99999999999").code() == StatusCode::kInvalidArgument);
  CHECK(apply_override(&c, "no_such_field", "1").message().find("no_such_field") != std::string::npos);
}

TEST_CASE("enum flags take the value's last word, and a bad one lists the choices") {
  v1::DaemonConfig c;
  CHECK(c.single_job_bound() == v1::SINGLE_JOB_BOUND_AUTO);
  REQUIRE(apply_override(&c, "single_job_bound", "off").ok());
  CHECK(c.single_job_bound() == v1::SINGLE_JOB_BOUND_OFF);
  REQUIRE(apply_override(&c, "single_job_bound", "ON").ok());
  CHECK(c.single_job_bound() == v1::SINGLE_JOB_BOUND_ON);
  REQUIRE(apply_override(&c, "single_job_bound", "SINGLE_JOB_BOUND_AUTO").ok());
  CHECK(c.single_job_bound() == v1::SINGLE_JOB_BOUND_AUTO);
  auto bad = apply_override(&c, "single_job_bound", "sometimes");
  CHECK(bad.code() == StatusCode::kInvalidArgument);
  CHECK(bad.message().find("auto, on, off") != std::string::npos);
  CHECK(apply_override(&c, "single_job_bound", "").code() == StatusCode::kInvalidArgument);
  CHECK(c.single_job_bound() == v1::SINGLE_JOB_BOUND_AUTO);  // a refused value changes nothing
  // The file form names the value in full (deploy/epxd.conf).
  auto file = parse_config_text("single_job_bound: SINGLE_JOB_BOUND_OFF", "test.conf");
  REQUIRE_MESSAGE(file.ok(), file.status().to_string());
  CHECK(file->single_job_bound() == v1::SINGLE_JOB_BOUND_OFF);
  // proto3 enums are open: a number no value has parses, and is refused.
  v1::DaemonConfig q;
  q.set_single_job_bound(static_cast<v1::SingleJobBound>(5));
  auto refused = finalize_config(&q);
  CHECK(refused.code() == StatusCode::kInvalidArgument);
  CHECK(refused.message().find("single_job_bound: 5") != std::string::npos);
}

TEST_CASE("a missing config file is a clear error") {
  auto c = load_config_file("/nonexistent/epxd.conf");
  REQUIRE_FALSE(c.ok());
  CHECK(c.status().message().find("/nonexistent/epxd.conf") != std::string::npos);
}

TEST_CASE("the shipped default config is valid") {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  REQUIRE(srcdir != nullptr);
  auto c = load_config_file(std::string(srcdir) + "/epx/deploy/epxd.conf");
  REQUIRE(c.ok());
  CHECK(finalize_config(&c.value()).ok());
}

TEST_CASE("host:port splitting") {
  auto a = split_host_port("10.1.2.3:7470");
  REQUIRE(a.ok());
  CHECK(a->first == "10.1.2.3");
  CHECK(a->second == 7470);
  auto b = split_host_port("[::1]:1");
  REQUIRE(b.ok());
  CHECK(b->first == "::1");
  CHECK_FALSE(split_host_port("nohost").ok());
  CHECK_FALSE(split_host_port("h:").ok());
  CHECK_FALSE(split_host_port("h:x1").ok());
  // Signs, spaces and out-of-range ports, which strtol alone would pass or wrap.
  CHECK_FALSE(split_host_port("h:+80").ok());
  CHECK_FALSE(split_host_port("h: 80").ok());
  CHECK_FALSE(split_host_port("h:-0").ok());
  CHECK_FALSE(split_host_port("h:99999").ok());
  CHECK_FALSE(split_host_port("h:000080000").ok());
}

TEST_CASE("peer security: all three TLS files or none, and not both modes") {
  v1::DaemonConfig partial;
  partial.set_peer_tls_cert_file("/etc/epx/peer.crt");
  partial.set_peer_tls_ca_file("/etc/epx/ca.crt");
  auto s = finalize_config(&partial);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("peer_tls_key_file") != std::string::npos);

  v1::DaemonConfig both;
  both.set_peer_tls_cert_file("/etc/epx/peer.crt");
  both.set_peer_tls_key_file("/etc/epx/peer.key");
  both.set_peer_tls_ca_file("/etc/epx/ca.crt");
  both.set_peer_secret_file("/etc/epx/peer.secret");
  s = finalize_config(&both);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("peer_secret_file") != std::string::npos);

  both.clear_peer_secret_file();
  CHECK(finalize_config(&both).ok());
  v1::DaemonConfig secret;
  secret.set_peer_secret_file("/etc/epx/peer.secret");
  CHECK(finalize_config(&secret).ok());
}

TEST_CASE("job weights: from the file and the flag, validated, looked up exact first, then longest prefix") {
  auto c = parse_config_text(R"(
    job_weights { job: "train-*" weight: 3 }
    job_weights { job: "train-big-*" weight: 5 }
    job_weights { job: "train-7" weight: 2 }
  )",
                             "weights.conf");
  REQUIRE(c.ok());
  REQUIRE(finalize_config(&c.value()).ok());
  CHECK(c->proxy_quantum_kib() == 256);  // defaults of the sharing settings
  CHECK(c->job_inflight_ops() == 8);
  CHECK(c->job_inflight_kib() == 256);
  CHECK(job_weight(c->job_weights(), "train-1") == 3);
  CHECK(job_weight(c->job_weights(), "train-big-1") == 5);  // the longer prefix
  CHECK(job_weight(c->job_weights(), "train-7") == 2);      // exact beats every prefix
  CHECK(job_weight(c->job_weights(), "train") == 1);        // shorter than the prefix
  CHECK(job_weight(c->job_weights(), "infer") == 1);

  v1::DaemonConfig f;
  REQUIRE(apply_override(&f, "job_weights", "infer=4,batch-*=1000").ok());
  REQUIRE(f.job_weights_size() == 2);
  CHECK(f.job_weights(0).job() == "infer");
  CHECK(f.job_weights(0).weight() == 4);
  CHECK(job_weight(f.job_weights(), "batch-x") == 1000);
  CHECK(finalize_config(&f).ok());
  CHECK(apply_override(&f, "job_weights", "infer").message().find("JOB=WEIGHT") != std::string::npos);
  CHECK(apply_override(&f, "job_weights", "infer=x").message().find("'x'") != std::string::npos);

  auto invalid = [](const std::string& flag) {
    v1::DaemonConfig w;
    REQUIRE(apply_override(&w, "job_weights", flag).ok());
    return finalize_config(&w).message();
  };
  CHECK(invalid("a=0").find("not in 1..1000") != std::string::npos);
  CHECK(invalid("a=1001").find("not in 1..1000") != std::string::npos);
  CHECK(invalid("a=2,a=3").find("twice") != std::string::npos);
  CHECK(invalid("a*b=2").find("'*' may only end") != std::string::npos);
  CHECK(invalid("*=2").find("job id or a prefix") != std::string::npos);

  v1::DaemonConfig q;
  q.set_job_inflight_ops(70000);
  CHECK(finalize_config(&q).message().find("job_inflight_ops") != std::string::npos);
}

TEST_CASE("operations settings: defaults, and bad values named") {
  v1::DaemonConfig c;
  REQUIRE(finalize_config(&c).ok());
  CHECK(c.metrics_listen().empty());  // no endpoint unless asked for
  CHECK(c.metrics_max_jobs() == 32);
  CHECK(c.log_format() == "text");
  CHECK_FALSE(c.require_provider());

  v1::DaemonConfig m;
  m.set_metrics_listen("nowhere");
  CHECK(finalize_config(&m).message().find("metrics_listen") != std::string::npos);

  v1::DaemonConfig f;
  f.set_log_format("xml");
  const Status s = finalize_config(&f);
  CHECK(s.message().find("log_format") != std::string::npos);
  CHECK(s.message().find("json") != std::string::npos);

  v1::DaemonConfig j;
  j.set_metrics_max_jobs(20000);
  CHECK(finalize_config(&j).message().find("metrics_max_jobs") != std::string::npos);

  v1::DaemonConfig r;
  REQUIRE(apply_override(&r, "require_provider", "true").ok());
  CHECK(r.require_provider());
}

TEST_CASE("rail settings: gpu_rails, sysfs_root, spreading and rails_per_domain: defaults and limits") {
  auto c = parse_config_text(R"(
    gpu_rails { gpu: "0000:19:00.0" rails: [0, 1] }
    sysfs_root: "/host/sys"
  )",
                             "rails.conf");
  REQUIRE(c.ok());
  REQUIRE(finalize_config(&c.value()).ok());
  REQUIRE(c->gpu_rails_size() == 1);
  CHECK(c->gpu_rails(0).rails_size() == 2);
  CHECK(c->sysfs_root() == "/host/sys");
  CHECK(c->spread_inflight_kib() == 1024);

  v1::DaemonConfig f;
  REQUIRE(apply_override(&f, "gpu_rails", "0000:19:00.0=0+1,0000:2a:00.0=3").ok());
  REQUIRE(f.gpu_rails_size() == 2);
  CHECK(f.gpu_rails(0).gpu() == "0000:19:00.0");
  CHECK(f.gpu_rails(0).rails(1) == 1);
  CHECK(f.gpu_rails(1).rails(0) == 3);
  REQUIRE(finalize_config(&f).ok());
  CHECK(f.sysfs_root() == "/sys");
  CHECK(apply_override(&f, "gpu_rails", "0000:19:00.0").message().find("GPU=RAIL") != std::string::npos);
  CHECK(apply_override(&f, "gpu_rails", "0000:19:00.0=0+x").message().find("'x'") != std::string::npos);
  CHECK(apply_override(&f, "gpu_rails", "0000:19:00.0=-1").message().find("not a rail index") != std::string::npos);

  v1::DaemonConfig bad;
  bad.set_sysfs_root("sys");
  CHECK(finalize_config(&bad).message().find("sysfs_root") != std::string::npos);
  v1::DaemonConfig big;
  big.set_spread_inflight_kib(5u << 20);
  CHECK(finalize_config(&big).message().find("spread_inflight_kib") != std::string::npos);

  // One rail per domain unless asked; at most 16.
  CHECK(c->rails_per_domain() == 1);
  v1::DaemonConfig per;
  REQUIRE(apply_override(&per, "rails_per_domain", "4").ok());
  REQUIRE(finalize_config(&per).ok());
  CHECK(per.rails_per_domain() == 4);
  per.set_rails_per_domain(17);
  CHECK(finalize_config(&per).message().find("rails_per_domain: at most 16") != std::string::npos);
}
