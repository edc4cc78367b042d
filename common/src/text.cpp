#include "fedda/common/text.h"

#include <cstdint>
#include <cstdio>
#include <locale>
#include <sstream>

namespace fedda::text {
namespace {

// Bytes of the valid UTF-8 character at s[i], or 0 when none starts there.
std::size_t character_at(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<std::uint8_t>(s[k]); };
  const std::uint8_t b = byte(i);
  if (b < 0x80) return 1;
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if (b >= 0xc2 && b <= 0xdf) {
    n = 2, cp = b & 0x1f;
  } else if (b >= 0xe0 && b <= 0xef) {
    n = 3, cp = b & 0x0f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    n = 4, cp = b & 0x07;
  } else {
    return 0;  // a continuation byte, 0xc0, 0xc1 or 0xf5 and above
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000)) return 0;  // overlong
  if (cp >= 0xd800 && cp <= 0xdfff) return 0;                        // surrogate
  if (cp > 0x10ffff) return 0;
  return n;
}

bool is_c1(std::string_view s, std::size_t i, std::size_t n) {
  return n == 2 && static_cast<std::uint8_t>(s[i]) == 0xc2 && static_cast<std::uint8_t>(s[i + 1]) < 0xa0;
}

}  // namespace

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto n = character_at(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

bool has_control(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto n = character_at(s, i);
    const auto b = static_cast<std::uint8_t>(s[i]);
    if (n == 1 && ((b < 0x20 && b != '\t') || b == 0x7f)) return true;
    if (is_c1(s, i, n)) return true;
    i += n ? n : 1;
  }
  return false;
}

std::string utf8_prefix(std::string_view s, std::size_t max_bytes) {
  std::size_t end = 0;
  while (end < s.size()) {
    const auto n = character_at(s, end);
    const std::size_t step = n ? n : 1;
    if (end + step > max_bytes) break;
    end += step;
  }
  return std::string(s.substr(0, end));
}

std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto hex = [&](std::uint8_t b) {
    char buf[5];
    std::snprintf(buf, sizeof buf, "\\x%02x", b);
    out += buf;
  };
  for (std::size_t i = 0; i < s.size();) {
    const auto n = character_at(s, i);
    const auto b = static_cast<std::uint8_t>(s[i]);
    if (n == 0) {
      hex(b);
      ++i;
      continue;
    }
    if (n == 1 && (b < 0x20 || b == 0x7f)) {
      if (b == '\n') {
        out += "\\n";
      } else if (b == '\r') {
        out += "\\r";
      } else if (b == '\t') {
        out += "\\t";
      } else {
        hex(b);
      }
    } else if (is_c1(s, i, n)) {
      hex(b);
      hex(static_cast<std::uint8_t>(s[i + 1]));
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  return out;
}

std::string number(double v, int significant) {
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out.precision(significant);
  out << v;
  return out.str();
}

}  // namespace fedda::text
