#pragma once
// Strings that came from elsewhere (the wire, a site, an operator): the one rule they are held
// to (valid UTF-8; control characters never written raw to a log) and cutting them to a length
// without splitting a character. Free functions of plain data; thread-safe.

#include <cstddef>
#include <string>
#include <string_view>

namespace fedda::text {

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s);
// True when `s` holds a C0 control character (tab excepted), DEL or a C1 control (U+0080-U+009F).
bool has_control(std::string_view s);
// The longest prefix of at most `max_bytes` bytes that ends on a character boundary; an invalid
// byte counts as one character.
std::string utf8_prefix(std::string_view s, std::size_t max_bytes);
// `s` as it may be written to a log line: valid UTF-8 kept, "\n", "\r" and "\t" as those two
// characters, every other control character and every byte that is not UTF-8 as "\xNN".
std::string printable(std::string_view s);
// `v` as a message or file gives it: the shortest of fixed and scientific notation with
// `significant` digits (as `std::ostream` writes with that precision), in the C locale.
std::string number(double v, int significant = 6);

}  // namespace fedda::text
