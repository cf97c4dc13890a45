// epxd: the EPX per-node daemon. See README.md ("Configuration").
#include <google/protobuf/text_format.h>
#include <grpc/grpc.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <iostream>

#include <spdlog/spdlog.h>

#include "daemon/config/config.h"
#include "daemon/control/peer_security.h"
#include "daemon/daemon.h"
#include "daemon/logging.h"

namespace po = boost::program_options;
using namespace epx;

namespace {

int fail(const std::string& message) {
  std::cerr << "epxd: error: " << message << "\n";
  return 2;
}

std::string flag_name(std::string field) {
  std::replace(field.begin(), field.end(), '_', '-');
  return field;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description opts("epxd options (flags override the --config file)");
  opts.add_options()("help,h", "show this help")("version", "print the version")(
      "config,c", po::value<std::string>(), "text-format epx.v1.DaemonConfig file")(
      "check-config", "validate the configuration, print the effective one, and exit");
  const auto* d = epx::v1::DaemonConfig::descriptor();
  for (const auto& field : daemon::config_field_names()) {
    const auto* fd = d->FindFieldByName(field);
    const std::string help = fd->is_repeated() ? "config field " + field + " (comma-separated list)"
                                               : "config field " + field;
    opts.add_options()(flag_name(field).c_str(), po::value<std::string>(), help.c_str());
  }

  po::variables_map vm;
  try {  // program_options reports by exception; it never leaves main.
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return fail(std::string(e.what()) + " (see epxd --help)");
  }
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "epxd " << daemon::kVersion << "\n";
    return 0;
  }

  // The config file, then the flags over it; again on SIGHUP.
  auto load = [vm]() -> Result<epx::v1::DaemonConfig> {
    epx::v1::DaemonConfig config;
    if (vm.count("config")) {
      auto loaded = daemon::load_config_file(vm["config"].as<std::string>());
      if (!loaded.ok()) return loaded.status();
      config = std::move(loaded.value());
    }
    for (const auto& field : daemon::config_field_names()) {
      const std::string flag = flag_name(field);
      if (!vm.count(flag)) continue;
      auto s = daemon::apply_override(&config, field, vm[flag].as<std::string>());
      if (!s.ok()) return s.with_context("--" + flag);
    }
    EPX_RETURN_IF_ERROR(daemon::finalize_config(&config).with_context("config"));
    return config;
  };
  auto loaded = load();
  if (!loaded.ok()) return fail(loaded.status().message());
  epx::v1::DaemonConfig config = std::move(loaded.value());
  if (vm.count("check-config")) {
    auto security = daemon::PeerSecurity::load(config);
    if (!security.ok()) return fail("config: " + security.status().message());
    if ((*security)->mode() == daemon::PeerSecurity::Mode::kNone) {
      std::cerr << "epxd: warning: peer security: " << (*security)->describe() << "\n";
    }
    std::string text;
    google::protobuf::TextFormat::PrintToString(config, &text);
    std::cout << text;
    return 0;
  }

  if (auto s = daemon::init_logging(config.log_level(), config.log_file(), config.log_format()); !s.ok()) return fail(s.message());
  auto started = daemon::Daemon::start(config);
  if (!started.ok()) {
    spdlog::error("{}", started.status().to_string());
    return fail(started.status().message());
  }
  started.value()->set_reload(load);
  return started.value()->run();
}
