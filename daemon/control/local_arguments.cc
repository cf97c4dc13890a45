#include "daemon/control/local_arguments.h"

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <optional>

#include "daemon/config/config.h"

namespace epx::daemon {
namespace {

constexpr size_t kQuotedBytes = 48;
constexpr size_t kMaxDnsNameBytes = 253;
constexpr size_t kMaxDnsLabelBytes = 63;

// The code point starting at text[*at], advancing *at past it; nullopt when
// the bytes there are not well-formed UTF-8.
std::optional<uint32_t> next_code_point(std::string_view text, size_t* at) {
  const auto lead = static_cast<unsigned char>(text[*at]);
  if (lead < 0x80) {
    ++*at;
    return lead;
  }
  size_t more = 0;
  uint32_t cp = 0;
  uint32_t smallest = 0;  // below it the same code point has a shorter form
  if ((lead & 0xE0) == 0xC0) {
    more = 1, cp = lead & 0x1F, smallest = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    more = 2, cp = lead & 0x0F, smallest = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    more = 3, cp = lead & 0x07, smallest = 0x10000;
  } else {
    return std::nullopt;
  }
  if (text.size() - *at <= more) return std::nullopt;
  for (size_t k = 1; k <= more; ++k) {
    const auto b = static_cast<unsigned char>(text[*at + k]);
    if ((b & 0xC0) != 0x80) return std::nullopt;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < smallest || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return std::nullopt;
  *at += more + 1;
  return cp;
}

bool is_ascii_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
bool is_hex_digit(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Names gRPC reads as the scheme of a target URI ("unix:/run/x.sock",
// "unix:80" is a socket file named 80), not as a host.
bool is_grpc_scheme(std::string_view name) {
  static const std::array<const char*, 10> kSchemes = {"unix",       "unix-abstract", "vsock", "ipv4", "ipv6", "dns",
                                                      "xds",        "google-c2p",    "http",  "https"};
  const std::string l = lower(name);
  for (const char* s : kSchemes) {
    if (l == s) return true;
  }
  return false;
}

Status check_dns_host(std::string_view host, const std::string& what) {
  if (host.size() > kMaxDnsNameBytes) {
    return invalid_argument(what + ": host name of " + std::to_string(host.size()) + " bytes (at most 253)");
  }
  size_t label = 0;
  for (char c : host) {
    if (c == '.') {
      if (label == 0) return invalid_argument(what + ": empty label in host name");
      label = 0;
      continue;
    }
    if (!is_ascii_alnum(c) && c != '-') {
      return invalid_argument(what + ": a host is a DNS name or IPv4 address (letters, digits, '-', '.') or "
                                     "[IPv6]");
    }
    if (++label > kMaxDnsLabelBytes) return invalid_argument(what + ": host name label over 63 bytes");
  }
  if (label == 0) return invalid_argument(what + ": empty label in host name");
  return Status();
}

Status check_ipv6_host(std::string_view host, const std::string& what) {
  // A link-local address may carry a zone: fe80::1%eth0.
  const size_t percent = host.find('%');
  const std::string address(host.substr(0, percent));
  in6_addr parsed;
  if (::inet_pton(AF_INET6, address.c_str(), &parsed) != 1) {
    return invalid_argument(what + ": not an IPv6 address between the brackets");
  }
  if (percent != std::string_view::npos) {
    const std::string_view zone = host.substr(percent + 1);
    if (zone.empty()) return invalid_argument(what + ": empty IPv6 zone");
    for (char c : zone) {
      if (!is_ascii_alnum(c) && c != '-' && c != '_' && c != '.') {
        return invalid_argument(what + ": IPv6 zone may only hold letters, digits, '-', '_' and '.'");
      }
    }
  }
  return Status();
}

Status check_port(std::string_view port, const std::string& what) {
  const std::optional<uint32_t> value = parse_port(port);
  if (!value || *value == 0) return invalid_argument(what + ": port must be 1..65535 in decimal digits");
  return Status();
}

}  // namespace

bool is_utf8(std::string_view text) {
  size_t at = 0;
  while (at < text.size()) {
    if (!next_code_point(text, &at)) return false;
  }
  return true;
}

std::string quote(std::string_view value) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < value.size() && i < kQuotedBytes; ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (value.size() > kQuotedBytes) out += "... (" + std::to_string(value.size()) + " bytes)";
  return out;
}

Status check_job_id(std::string_view job_id) {
  if (job_id.empty() || job_id.size() > kMaxJobIdBytes) {
    return invalid_argument("job id of " + std::to_string(job_id.size()) + " bytes: must be 1..128");
  }
  for (char c : job_id) {
    if (!is_ascii_alnum(c) && c != '-' && c != '_' && c != '.') {
      return invalid_argument("job id '" + quote(job_id) + "' may only hold letters, digits, '-', '_' and '.'");
    }
  }
  if (job_id == "." || job_id == "..") return invalid_argument("job id '" + std::string(job_id) + "' is reserved");
  return Status();
}

Status check_client_name(std::string_view name) {
  if (name.size() > kMaxClientNameBytes) {
    return invalid_argument("client name of " + std::to_string(name.size()) + " bytes: at most 128");
  }
  size_t at = 0;
  while (at < name.size()) {
    const auto cp = next_code_point(name, &at);
    if (!cp) return invalid_argument("client name '" + quote(name) + "' is not UTF-8");
    // C0 and C1 controls and DEL: names go into log lines and epxctl output.
    if (*cp < 0x20 || (*cp >= 0x7F && *cp < 0xA0)) {
      return invalid_argument("client name '" + quote(name) + "' holds control characters");
    }
  }
  return Status();
}

Status check_coordinator(std::string_view address) {
  if (address.size() > kMaxCoordinatorBytes) {
    return invalid_argument("coordinator address of " + std::to_string(address.size()) + " bytes: at most " +
                            std::to_string(kMaxCoordinatorBytes) + " (host:port)");
  }
  const std::string what = "coordinator '" + quote(address) + "'";
  if (address.empty()) return invalid_argument("coordinator: empty address");
  if (const size_t colon = address.find(':'); colon != std::string_view::npos && is_grpc_scheme(address.substr(0, colon))) {
    return invalid_argument(what + " is a gRPC '" + lower(address.substr(0, colon)) +
                            ":' target; a coordinator is host:port or [ipv6]:port over TCP");
  }
  if (address.front() == '[') {
    const size_t close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return invalid_argument(what + ": not [ipv6]:port");
    }
    EPX_RETURN_IF_ERROR(check_ipv6_host(address.substr(1, close - 1), what));
    return check_port(address.substr(close + 2), what);
  }
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) return invalid_argument(what + ": not host:port (no port)");
  const std::string_view host = address.substr(0, colon);
  if (host.empty()) return invalid_argument(what + ": no host");
  if (host.find(':') != std::string_view::npos) {
    return invalid_argument(what + ": not host:port (an IPv6 address goes in brackets: [addr]:port)");
  }
  EPX_RETURN_IF_ERROR(check_dns_host(host, what));
  return check_port(address.substr(colon + 1), what);
}

Status check_pci_bus_id(std::string_view bus_id) {
  if (bus_id.size() > kMaxPciBusIdBytes) {
    return invalid_argument("PCI bus id of " + std::to_string(bus_id.size()) + " bytes: at most 32");
  }
  for (char c : bus_id) {
    if (!is_hex_digit(c) && c != ':' && c != '.') {
      return invalid_argument("PCI bus id '" + quote(bus_id) + "' may only hold hex digits, ':' and '.'");
    }
  }
  return Status();
}

}  // namespace epx::daemon#include "daemon/config/config.h"

