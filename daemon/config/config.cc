#include "daemon/config/config.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

namespace epx::daemon {
namespace {

using google::protobuf::FieldDescriptor;

// Collects protobuf's parse errors with the offending line quoted, so an
// operator sees which field is wrong even when protobuf's message does not
// name it ("Expected integer, got: abc").
class LineQuotingErrors : public google::protobuf::io::ErrorCollector {
 public:
  LineQuotingErrors(const std::string& text, std::string origin) : origin_(std::move(origin)) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines_.push_back(line);
  }
  void AddError(int line, int column, const std::string& message) override {
    if (!first_.empty()) return;
    std::ostringstream out;
    out << origin_ << ":" << line + 1 << ":" << column + 1 << ": " << message;
    if (line >= 0 && line < static_cast<int>(lines_.size())) out << " (in `" << trim(lines_[line]) << "`)";
    first_ = out.str();
  }
  const std::string& first() const { return first_; }

 private:
  static std::string trim(const std::string& s) {
    auto b = s.find_first_not_of(" \t");
    auto e = s.find_last_not_of(" \t\r");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
  }
  std::string origin_;
  std::vector<std::string> lines_;
  std::string first_;
};

const std::set<std::string>& providers() {
  static const std::set<std::string> kProviders{"auto", "efa", "verbs", "tcp", "shm"};
  return kProviders;
}

const std::set<std::string>& log_levels() {
  static const std::set<std::string> kLevels{"trace", "debug", "info", "warn", "error"};
  return kLevels;
}

std::string join(const std::set<std::string>& values) {
  std::string out;
  for (const auto& v : values) out += (out.empty() ? "" : ", ") + v;
  return out;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

// The items of a KEY=VALUE,KEY=VALUE flag (job_weights, gpu_rails), each
// with a key and a value; `form` names the expected form in the error.
Result<std::vector<std::pair<std::string, std::string>>> key_value_items(const std::string& text,
                                                                         const std::string& field,
                                                                         const std::string& form) {
  std::vector<std::pair<std::string, std::string>> items;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    if (item.empty()) continue;
    const auto eq = item.rfind('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
      return invalid_argument(field + ": '" + item + "' is not " + form);
    }
    items.emplace_back(item.substr(0, eq), item.substr(eq + 1));
  }
  return items;
}

// "train-*=3,infer=2" (the job_weights flag); checked later by finalize_config.
Status parse_job_weights(const std::string& text, google::protobuf::RepeatedPtrField<v1::JobWeight>* out) {
  EPX_ASSIGN_OR_RETURN(auto items,
                       key_value_items(text, "job_weights", "JOB=WEIGHT (JOB an id or a prefix ending in '*')"));
  out->Clear();
  for (const auto& [job, number] : items) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long weight = std::strtoull(number.c_str(), &end, 10);
    if (*end != '\0' || errno != 0 || number[0] == '-' || weight > 0xffffffffULL) {
      return invalid_argument("job_weights: weight '" + number + "' of '" + job + "' is not an unsigned integer");
    }
    v1::JobWeight* w = out->Add();
    w->set_job(job);
    w->set_weight(static_cast<uint32_t>(weight));
  }
  return Status();
}

// "0000:19:00.0=0+1,0000:2a:00.0=2+3" (the gpu_rails flag). The addresses
// and rail indices are checked when the rails are open (RailAffinity).
Status parse_gpu_rails(const std::string& text, google::protobuf::RepeatedPtrField<v1::GpuRails>* out) {
  EPX_ASSIGN_OR_RETURN(auto items, key_value_items(text, "gpu_rails", "GPU=RAIL+RAIL... (e.g. 0000:19:00.0=0+1)"));
  out->Clear();
  for (const auto& [gpu, list] : items) {
    v1::GpuRails* g = out->Add();
    g->set_gpu(gpu);
    std::istringstream rails(list);
    for (std::string rail; std::getline(rails, rail, '+');) {
      char* end = nullptr;
      errno = 0;
      const unsigned long v = std::strtoul(rail.c_str(), &end, 10);
      if (rail.empty() || *end != '\0' || errno != 0 || v > 1023 || rail[0] == '-') {
        return invalid_argument("gpu_rails: rail '" + rail + "' of '" + gpu + "=" + list + "' is not a rail index");
      }
      g->add_rails(static_cast<uint32_t>(v));
    }
  }
  return Status();
}

Status check_job_weights(const google::protobuf::RepeatedPtrField<v1::JobWeight>& weights) {
  std::set<std::string> seen;
  for (const auto& w : weights) {
    const std::string& job = w.job();
    if (job.empty() || job == "*") {
      return invalid_argument("job_weights: an entry needs a job id or a prefix ending in '*' (got '" + job + "')");
    }
    if (job.find('*') != job.size() - 1 && job.find('*') != std::string::npos) {
      return invalid_argument("job_weights: '" + job + "': '*' may only end a prefix");
    }
    if (w.weight() < 1 || w.weight() > 1000) {
      return invalid_argument("job_weights: weight " + std::to_string(w.weight()) + " of '" + job +
                              "' is not in 1..1000");
    }
    if (!seen.insert(job).second) return invalid_argument("job_weights: '" + job + "' is given twice");
  }
  return Status();
}

}  // namespace

uint32_t job_weight(const google::protobuf::RepeatedPtrField<v1::JobWeight>& weights, const std::string& job_id) {
  uint32_t weight = 1;
  size_t best = 0;  // length of the best prefix so far; exact entries beat every prefix
  for (const auto& w : weights) {
    const std::string& job = w.job();
    if (job == job_id) return w.weight();
    if (!job.empty() && job.back() == '*') {
      const size_t prefix = job.size() - 1;
      if (prefix >= best && job_id.compare(0, prefix, job, 0, prefix) == 0) {
        best = prefix;
        weight = w.weight();
      }
    }
  }
  return weight;
}

Result<v1::DaemonConfig> parse_config_text(const std::string& text, const std::string& origin) {
  v1::DaemonConfig config;
  google::protobuf::TextFormat::Parser parser;
  LineQuotingErrors errors(text, origin);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    return invalid_argument("bad config " + (errors.first().empty() ? origin : errors.first()));
  }
  return config;
}

Result<v1::DaemonConfig> load_config_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return invalid_argument("cannot read config file " + path + ": " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  return parse_config_text(text.str(), path);
}

Status apply_override(v1::DaemonConfig* config, const std::string& field, const std::string& value) {
  const FieldDescriptor* fd = config->GetDescriptor()->FindFieldByName(field);
  if (fd == nullptr) return invalid_argument("unknown config field '" + field + "'");
  const auto* refl = config->GetReflection();
  switch (fd->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      if (fd->is_repeated()) {
        refl->ClearField(config, fd);
        std::istringstream in(value);
        for (std::string item; std::getline(in, item, ',');) {
          if (!item.empty()) refl->AddString(config, fd, item);
        }
      } else {
        refl->SetString(config, fd, value);
      }
      return Status();
    case FieldDescriptor::CPPTYPE_UINT32: {
      auto parse = [&](const std::string& text, uint32_t* out) -> Status {
        char* end = nullptr;
        errno = 0;
        unsigned long long v = std::strtoull(text.c_str(), &end, 10);
        if (text.empty() || *end != '\0' || errno != 0 || v > 0xffffffffULL || text[0] == '-') {
          return invalid_argument(field + ": '" + text + "' is not an unsigned 32-bit integer");
        }
        *out = static_cast<uint32_t>(v);
        return Status();
      };
      if (fd->is_repeated()) {
        refl->ClearField(config, fd);
        std::istringstream in(value);
        for (std::string item; std::getline(in, item, ',');) {
          uint32_t v = 0;
          EPX_RETURN_IF_ERROR(parse(item, &v));
          refl->AddUInt32(config, fd, v);
        }
        return Status();
      }
      uint32_t v = 0;
      EPX_RETURN_IF_ERROR(parse(value, &v));
      refl->SetUInt32(config, fd, v);
      return Status();
    }
    case FieldDescriptor::CPPTYPE_BOOL:
      if (value == "true" || value == "1") {
        refl->SetBool(config, fd, true);
      } else if (value == "false" || value == "0") {
        refl->SetBool(config, fd, false);
      } else {
        return invalid_argument(field + ": '" + value + "' is not true or false");
      }
      return Status();
    case FieldDescriptor::CPPTYPE_ENUM: {
      // A flag names the value by its last word: "--single-job-bound off"
      // sets SINGLE_JOB_BOUND_OFF.
      if (fd->is_repeated()) return invalid_argument("config field '" + field + "' can only be set in the config file");
      const auto* type = fd->enum_type();
      std::string upper = value, names;
      for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      for (int i = 0; i < type->value_count(); ++i) {
        const std::string& name = type->value(i)->name();
        const std::string word = name.substr(name.rfind('_') + 1);
        if (!upper.empty() && (upper == word || upper == name)) {
          refl->SetEnumValue(config, fd, type->value(i)->number());
          return Status();
        }
        std::string lower = word;
        for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        names += (names.empty() ? "" : ", ") + lower;
      }
      return invalid_argument(field + ": '" + value + "' is not one of " + names);
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (field == "job_weights") return parse_job_weights(value, config->mutable_job_weights());
      if (field == "gpu_rails") return parse_gpu_rails(value, config->mutable_gpu_rails());
      return invalid_argument("config field '" + field + "' can only be set in the config file");
    default: return internal_error("config field '" + field + "' has a type flags cannot set");
  }
}

std::vector<std::string> config_field_names() {
  std::vector<std::string> names;
  const auto* d = v1::DaemonConfig::descriptor();
  for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
  return names;
}

Result<std::pair<std::string, int>> split_host_port(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return invalid_argument("'" + address + "' is not host:port");
  }
  std::string host = address.substr(0, colon);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port_text = address.substr(colon + 1);
  const std::optional<uint32_t> port = parse_port(port_text);
  if (!port) return invalid_argument("'" + address + "': port '" + port_text + "' is not 0..65535 in digits");
  return std::make_pair(host, static_cast<int>(*port));
}

std::optional<uint32_t> parse_port(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > 65535) return std::nullopt;
  return value;
}

Status finalize_config(v1::DaemonConfig* c) {
  if (c->node_name().empty()) c->set_node_name(host_name());
  if (c->control_socket().empty()) c->set_control_socket("/run/epx/epxd.sock");
  if (c->peer_listen().empty()) c->set_peer_listen("0.0.0.0:7470");
  if (c->provider().empty()) c->set_provider("auto");
  if (c->log_level().empty()) c->set_log_level("info");
  if (c->rpc_timeout_ms() == 0) c->set_rpc_timeout_ms(5000);
  if (c->max_join_timeout_ms() == 0) c->set_max_join_timeout_ms(600000);
  if (c->peer_timeout_ms() == 0) c->set_peer_timeout_ms(3000);
  if (c->shutdown_timeout_ms() == 0) c->set_shutdown_timeout_ms(std::max<uint32_t>(10000, c->rpc_timeout_ms() + 3000));
  if (c->max_clients() == 0) c->set_max_clients(256);
  if (c->max_jobs_per_client() == 0) c->set_max_jobs_per_client(16);
  if (c->max_window_mib() == 0) c->set_max_window_mib(16384);
  if (c->max_client_mib() == 0) c->set_max_client_mib(65536);
  if (c->max_rings_per_client() == 0) c->set_max_rings_per_client(256);  // a ring per SM of a 132-SM GPU, and more
  if (c->max_ring_capacity() == 0) c->set_max_ring_capacity(1u << 20);
  if (c->max_signals() == 0) c->set_max_signals(1u << 16);
  if (c->proxy_batch() == 0) c->set_proxy_batch(64);
  if (c->proxy_spin_us() == 0) c->set_proxy_spin_us(1000);
  if (c->proxy_idle_sleep_us() == 0) c->set_proxy_idle_sleep_us(50);
  if (c->max_write_mib() == 0) c->set_max_write_mib(1024);
  if (c->proxy_quantum_kib() == 0) c->set_proxy_quantum_kib(256);
  if (c->rails_per_domain() == 0) c->set_rails_per_domain(1);
  if (c->job_inflight_ops() == 0) c->set_job_inflight_ops(8);
  if (c->job_inflight_kib() == 0) c->set_job_inflight_kib(256);
  if (c->rail_failures() == 0) c->set_rail_failures(3);
  if (c->rail_stall_ms() == 0) c->set_rail_stall_ms(2000);
  if (c->rail_cooldown_ms() == 0) c->set_rail_cooldown_ms(2000);
  if (c->stripe_min_kib() == 0) c->set_stripe_min_kib(512);
  if (c->spread_inflight_kib() == 0) c->set_spread_inflight_kib(1024);
  if (c->sysfs_root().empty()) c->set_sysfs_root("/sys");
  if (c->metrics_max_jobs() == 0) c->set_metrics_max_jobs(32);
  if (c->log_format().empty()) c->set_log_format("text");

  if (!providers().count(c->provider())) {
    return invalid_argument("provider: '" + c->provider() + "' is not one of " + join(providers()));
  }
  if (!log_levels().count(c->log_level())) {
    return invalid_argument("log_level: '" + c->log_level() + "' is not one of " + join(log_levels()));
  }
  // sockaddr_un.sun_path holds 108 bytes including the terminator.
  if (c->control_socket().size() > 107 || c->control_socket().front() != '/') {
    return invalid_argument("control_socket: '" + c->control_socket() +
                            "' must be an absolute path of at most 107 bytes");
  }
  auto listen = split_host_port(c->peer_listen());
  if (!listen.ok()) return listen.status().with_context("peer_listen");
  if (!c->metrics_listen().empty()) {
    auto metrics = split_host_port(c->metrics_listen());
    if (!metrics.ok()) return metrics.status().with_context("metrics_listen");
  }
  if (c->metrics_max_jobs() > 10000) return invalid_argument("metrics_max_jobs: at most 10000 (each job adds series)");
  if (c->log_format() != "text" && c->log_format() != "json") {
    return invalid_argument("log_format: '" + c->log_format() + "' is not one of json, text");
  }
  if (!c->advertise_address().empty()) {
    auto adv = split_host_port(c->advertise_address());
    if (!adv.ok()) return adv.status().with_context("advertise_address");
    if (adv->second == 0) return invalid_argument("advertise_address: port 0 cannot be reached by peers");
  }
  for (const auto& d : c->rail_domains()) {
    if (d.empty()) return invalid_argument("rail_domains: empty domain name");
  }
  if (c->rails_per_domain() > 16) return invalid_argument("rails_per_domain: at most 16");
  if (!v1::SingleJobBound_IsValid(c->single_job_bound())) {
    return invalid_argument("single_job_bound: " + std::to_string(c->single_job_bound()) +
                            " is not SINGLE_JOB_BOUND_AUTO, _ON or _OFF");
  }
  if (c->rpc_timeout_ms() > 3600000) return invalid_argument("rpc_timeout_ms: at most 3600000 (one hour)");
  if (c->shutdown_timeout_ms() > 3600000) return invalid_argument("shutdown_timeout_ms: at most 3600000 (one hour)");
  if (c->shutdown_timeout_ms() < c->rpc_timeout_ms() + 3000) {
    return invalid_argument("shutdown_timeout_ms: " + std::to_string(c->shutdown_timeout_ms()) +
                            " leaves no time to tell the coordinators (at least rpc_timeout_ms + 3000 = " +
                            std::to_string(c->rpc_timeout_ms() + 3000) + ")");
  }
  if (c->max_ring_capacity() > (1u << 24) || (c->max_ring_capacity() & (c->max_ring_capacity() - 1)) != 0) {
    return invalid_argument("max_ring_capacity: must be a power of two of at most 16777216");
  }
  if (c->max_signals() > (1u << 20) - 2) return invalid_argument("max_signals: at most 1048574 (20-bit signal ids)");
  if (c->max_write_mib() > 4095) return invalid_argument("max_write_mib: at most 4095 (32-bit lengths)");
  if (c->proxy_batch() > 4096) return invalid_argument("proxy_batch: at most 4096");
  // The files themselves (modes, PEM contents) are checked when the daemon
  // loads them (control/peer_security.h); here only the combination.
  const int tls_files =
      !c->peer_tls_cert_file().empty() + !c->peer_tls_key_file().empty() + !c->peer_tls_ca_file().empty();
  if (tls_files != 0 && tls_files != 3) {
    return invalid_argument(
        "peer_tls_cert_file, peer_tls_key_file, peer_tls_ca_file: set all three (mutual TLS) "
        "or none");
  }
  if (tls_files == 3 && !c->peer_secret_file().empty()) {
    return invalid_argument("peer_secret_file: set either it or the peer_tls_* files, not both");
  }
  if (c->proxy_quantum_kib() > (1u << 20)) return invalid_argument("proxy_quantum_kib: at most 1048576 (1 GiB)");
  if (c->job_inflight_ops() > 65536) return invalid_argument("job_inflight_ops: at most 65536");
  if (c->job_inflight_kib() > (1u << 22)) return invalid_argument("job_inflight_kib: at most 4194304 (4 GiB)");
  if (c->rail_failures() > 1000000) return invalid_argument("rail_failures: at most 1000000");
  if (c->rail_stall_ms() > 3600000) return invalid_argument("rail_stall_ms: at most 3600000 (one hour)");
  if (c->rail_cooldown_ms() > 3600000) return invalid_argument("rail_cooldown_ms: at most 3600000 (one hour)");
  if (c->stripe_min_kib() < 128 || c->stripe_min_kib() > (4u << 20)) {
    return invalid_argument("stripe_min_kib: 128..4194304 (pieces are at least 64 KiB, two rails at least)");
  }
  if (c->spread_inflight_kib() > (1u << 22)) return invalid_argument("spread_inflight_kib: at most 4194304 (4 GiB)");
  if (c->sysfs_root().front() != '/') {
    return invalid_argument("sysfs_root: '" + c->sysfs_root() + "' must be an absolute path");
  }
  EPX_RETURN_IF_ERROR(check_job_weights(c->job_weights()));
  if (c->has_fault_injection()) {
    const auto& f = c->fault_injection();
    for (auto [name, v] : {std::pair<const char*, uint32_t>{"eagain_per_mille", f.eagain_per_mille()},
                           {"fail_write_per_mille", f.fail_write_per_mille()},
                           {"fail_completion_per_mille", f.fail_completion_per_mille()}}) {
      if (v > 1000) return invalid_argument(std::string("fault_injection.") + name + ": at most 1000");
    }
    if (f.eagain_per_mille() == 1000) {
      return invalid_argument("fault_injection.eagain_per_mille: 1000 would refuse every write forever");
    }
    if (f.hold_count() > 4096) return invalid_argument("fault_injection.hold_count: at most 4096");
    if (f.hold_us() > 1000000) return invalid_argument("fault_injection.hold_us: at most 1000000 (1 s)");
  }
  return Status();
}

}  // namespace epx::daemon
