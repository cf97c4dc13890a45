#include "daemon/fabric/pci_location.h"

#include <sys/stat.h>

#include <cctype>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace epx::daemon {
namespace {

bool all_hex(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// "0000:17:00.0" exactly as sysfs writes it.
bool is_sysfs_pci_address(const std::string& s) {
  auto normalized = normalize_pci_address(s);
  return normalized.ok() && *normalized == s;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string real_path(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return "";
  return buf;
}

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return "";
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
  return line;
}

std::string base_name(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Result<std::string> normalize_pci_address(const std::string& address) {
  auto bad = [&] {
    return invalid_argument("PCI address '" + address.substr(0, 64) +
                            "' is not DOMAIN:BUS:DEVICE.FUNCTION in hex (e.g. 0000:17:00.0)");
  };
  if (address.size() > 24) return bad();
  std::vector<std::string> parts;
  std::stringstream in(address);
  for (std::string part; std::getline(in, part, ':');) parts.push_back(part);
  if (parts.size() != 3) return bad();
  std::string domain = lower(parts[0]);
  const std::string bus = lower(parts[1]);
  const std::string& rest = parts[2];
  const auto dot = rest.find('.');
  if (dot == std::string::npos) return bad();
  const std::string device = lower(rest.substr(0, dot));
  const std::string function = rest.substr(dot + 1);
  if (!all_hex(domain) || domain.size() < 4 || domain.size() > 8 || !all_hex(bus) || bus.size() != 2 ||
      !all_hex(device) || device.size() != 2 || function.size() != 1 || function[0] < '0' || function[0] > '7') {
    return bad();
  }
  // nvidia-smi prints 8-digit domains ("00000000:19:00.0"), sysfs at least 4.
  while (domain.size() > 4 && domain.front() == '0') domain.erase(0, 1);
  return domain + ":" + bus + ":" + device + "." + function;
}

Result<PciLocation> pci_location(const std::string& sysfs_root, const std::string& address) {
  EPX_ASSIGN_OR_RETURN(std::string normalized, normalize_pci_address(address));
  const std::string entry = sysfs_root + "/bus/pci/devices/" + normalized;
  const std::string resolved = real_path(entry);
  if (resolved.empty()) return not_found("no PCI device " + normalized + " under " + sysfs_root + "/bus/pci/devices");
  PciLocation out;
  out.address = normalized;
  // The resolved path runs .../devices/pci0000:00/0000:00:01.0/.../ADDRESS:
  // the root complex, then each bridge down to the device.
  std::stringstream in(resolved);
  for (std::string part; std::getline(in, part, '/');) {
    if (out.path.empty()) {
      if (part.size() > 3 && part.compare(0, 3, "pci") == 0) out.path.push_back(part);
    } else if (is_sysfs_pci_address(part)) {
      out.path.push_back(part);
    }
  }
  if (out.path.empty() || out.path.back() != normalized) out.path = {normalized};  // an unusual tree: no ancestry
  const std::string numa = first_line(entry + "/numa_node");
  char* end = nullptr;
  const long n = std::strtol(numa.c_str(), &end, 10);
  out.numa_node = (!numa.empty() && *end == '\0' && n >= 0 && n < 4096) ? static_cast<int>(n) : -1;
  return out;
}

RailDevice rail_device(const std::string& sysfs_root, const std::string& domain_name, const std::string& pci_hint) {
  RailDevice out;
  std::string class_dir;
  if (!domain_name.empty() && domain_name.find('/') == std::string::npos && domain_name != "." && domain_name != "..") {
    if (exists(sysfs_root + "/class/net/" + domain_name)) {
      out.sysfs_name = "net/" + domain_name;
      class_dir = sysfs_root + "/class/net/" + domain_name;
      out.link_file = class_dir + "/operstate";
    } else {
      // efa: "rdmap16s27-rdm", verbs: "mlx5_0" or "mlx5_0-xrc".
      std::string device = domain_name;
      const auto dash = device.rfind('-');
      if (!exists(sysfs_root + "/class/infiniband/" + device) && dash != std::string::npos) device.resize(dash);
      if (exists(sysfs_root + "/class/infiniband/" + device)) {
        out.sysfs_name = "infiniband/" + device;
        class_dir = sysfs_root + "/class/infiniband/" + device;
        out.link_file = class_dir + "/ports/1/state";
      }
    }
  }
  std::string address = pci_hint;
  if (address.empty() && !class_dir.empty()) {
    const std::string device = base_name(real_path(class_dir + "/device"));
    if (is_sysfs_pci_address(device)) address = device;
  }
  if (!address.empty()) {
    auto location = pci_location(sysfs_root, address);
    if (location.ok()) out.location = std::move(*location);
  }
  return out;
}

std::vector<int> numa_cpus(const std::string& sysfs_root, int node) {
  std::vector<int> out;
  if (node < 0) return out;
  std::stringstream in(first_line(sysfs_root + "/devices/system/node/node" + std::to_string(node) + "/cpulist"));
  for (std::string range; std::getline(in, range, ',');) {
    char* end = nullptr;
    const long first = std::strtol(range.c_str(), &end, 10);
    long last = first;
    if (*end == '-') last = std::strtol(end + 1, &end, 10);
    if (end == range.c_str() || *end != '\0' || first < 0 || last < first || last >= 65536) return {};
    for (long c = first; c <= last; ++c) out.push_back(static_cast<int>(c));
  }
  return out;
}

const char* link_state_name(LinkState state) {
  switch (state) {
    case LinkState::kUp: return "up";
    case LinkState::kDown: return "down";
    case LinkState::kUnknown: break;
  }
  return "unknown";
}

LinkState read_link_state(const std::string& link_file) {
  std::ifstream in(link_file);
  std::string text;
  if (!in || !std::getline(in, text)) return LinkState::kUnknown;
  text = lower(text);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  if (text == "up" || text == "unknown" || text.find("active") != std::string::npos) return LinkState::kUp;
  return LinkState::kDown;
}

}  // namespace epx::daemon
