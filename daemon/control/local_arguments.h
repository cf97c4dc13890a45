// Checks of the text that clients (and, for job ids, peer daemons) send:
// job ids, client names, coordinator addresses, PCI bus ids.
//
// The Local request fields holding such text are proto `bytes`, so a value
// that is not UTF-8 reaches these checks and comes back as INVALID_ARGUMENT
// naming the field; as proto3 `string` it failed to parse before any handler
// ran. Handlers call these before they record or dial anything, so a bad
// argument fails only its own call.
//
// Every message quotes the offending value through quote(): bounded and
// escaped. An error a client receives travels in its gRPC trailers, and a
// client whose trailers exceed its metadata limit drops the whole
// connection, and with it its session and every rank it holds.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "epx/status.h"

namespace epx::daemon {

constexpr size_t kMaxJobIdBytes = 128;
constexpr size_t kMaxClientNameBytes = 128;
// A DNS name (at most 253 bytes), brackets, ':' and a 5-digit port.
constexpr size_t kMaxCoordinatorBytes = 261;
// "0000:53:00.0" is 12; room for longer domain numbers.
constexpr size_t kMaxPciBusIdBytes = 32;

// 1..128 bytes of letters, digits, '-', '_' and '.', not "." or "..": job
// ids travel in logs, status, shared-memory names and other daemons' calls.
Status check_job_id(std::string_view job_id);

// Free text for status output ("vllm-worker-3"): at most 128 bytes of
// UTF-8 without control characters; may be empty.
Status check_client_name(std::string_view name);

// A coordinating daemon's Peer address: host:port or [ipv6]:port, TCP only.
// The host is a DNS name or IPv4 address (letters, digits, '-', '.') or an
// IPv6 address in brackets; the port is 1..65535 in decimal digits. gRPC
// target schemes ("unix:", "dns:", "ipv4:", ...) are refused: a coordinator
// is always dialled over TCP.
Status check_coordinator(std::string_view address);

// The GPU's PCI bus id as the client reports it ("0000:53:00.0"), for logs
// and status: may be empty; at most 32 bytes of hex digits, ':' and '.'.
Status check_pci_bus_id(std::string_view bus_id);

// Whether `text` is well-formed UTF-8 (no overlong forms, no surrogates,
// nothing above U+10FFFF).
bool is_utf8(std::string_view text);

// `value` fit to quote in an error or a log line: at most 48 bytes of it,
// bytes outside printable ASCII as \xNN, "... (N bytes)" when cut.
std::string quote(std::string_view value);

}  // namespace epx::daemon
