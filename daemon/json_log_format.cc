#include "daemon/json_log_format.h"

#include <cstdio>
#include <ctime>

namespace epx::daemon {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
// Job ids: letters, digits, '-', '_', '.' (control/local_arguments.h).
bool is_id_char(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_' || c == '.';
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

}  // namespace

std::map<std::string, std::string> fields_named_in(std::string_view message) {
  std::map<std::string, std::string> fields;
  for (const char* key : {"job", "rank", "rail", "client"}) {
    const std::string_view word(key);
    const bool numeric = word != "job";
    for (size_t at = message.find(word); at != std::string_view::npos; at = message.find(word, at + 1)) {
      const bool starts_word = at == 0 || message[at - 1] == ' ' || message[at - 1] == '(';
      const size_t value_at = at + word.size() + 1;
      if (!starts_word || value_at >= message.size() || message[value_at - 1] != ' ') continue;
      size_t end = value_at;
      while (end < message.size() && (numeric ? is_digit(message[end]) : is_id_char(message[end]))) ++end;
      // A trailing '.' ends the sentence, not the id.
      while (!numeric && end > value_at && message[end - 1] == '.') --end;
      if (end == value_at) continue;
      fields[key] = std::string(message.substr(value_at, end - value_at));
      break;
    }
  }
  return fields;
}

std::string json_log_line(std::chrono::system_clock::time_point time, std::string_view level, size_t thread,
                          std::string_view message) {
  const auto since_epoch = time.time_since_epoch();
  const std::time_t seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch).count();
  const int millis =
      static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch).count() % 1000);
  std::tm utc = {};
  gmtime_r(&seconds, &utc);
  char stamp[96];  // room for any int the format could print (gcc checks)
  std::snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900, utc.tm_mon + 1,
                utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, millis);
  std::string out = "{\"time\":\"";
  out += stamp;
  out += "\",\"level\":";
  append_json_string(out, level);
  out += ",\"thread\":" + std::to_string(thread) + ",\"message\":";
  append_json_string(out, message);
  for (const auto& [key, value] : fields_named_in(message)) {
    out += ",\"" + key + "\":";
    if (key == "job") {
      append_json_string(out, value);
    } else {
      out += value;  // digits only
    }
  }
  out += "}\n";
  return out;
}

void JsonLogFormatter::format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) {
  const auto level = spdlog::level::to_string_view(msg.level);
  const std::string line = json_log_line(msg.time, std::string_view(level.data(), level.size()), msg.thread_id,
                                         std::string_view(msg.payload.data(), msg.payload.size()));
  dest.append(line.data(), line.data() + line.size());
}

}  // namespace epx::daemon
