#pragma once
// Errors as values at component boundaries.
//
// `Result<T>` holds either a value or an `Error` whose message names the file, site or
// message at fault. Adapters around throwing libraries (ITK, LibTorch, cppzmq, Cereal) catch
// there and return an Error; `main` prints it and exits non-zero. Not thread-safe to share a
// single instance between writers; copying is cheap for small T.

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace fedda {

// What kind of failure an Error is, for the callers that branch on it (the status page's HTTP
// status, fedda-admin's exit code); the message is what a person reads.
enum class ErrorKind : std::uint8_t {
  invalid,    // the input is wrong: a file, a message, an option, a setting (the default)
  not_found,  // what it names does not exist: a job, a site, a file
  refused,    // it exists, and this is not allowed now: a role, a job's state, a policy
  internal,   // a fault of fedda or of a library under it (an exception caught at a boundary)
};
inline constexpr std::uint8_t kLastErrorKind = static_cast<std::uint8_t>(ErrorKind::internal);

// The kind's name where a program reads it (fedda-admin --json's "kind").
inline const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::invalid: return "invalid";
    case ErrorKind::not_found: return "not_found";
    case ErrorKind::refused: return "refused";
    case ErrorKind::internal: return "internal";
  }
  return "internal";
}

struct Error {
  std::string message;
  ErrorKind kind = ErrorKind::invalid;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}       // NOLINT: implicit by design
  Result(Error error) : state_(std::move(error)) {}   // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(state_); }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<T>(state_); }
  const T& value() const& { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<Error>(state_); }

 private:
  std::variant<T, Error> state_;
};

// A Result with no value: success or an Error.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design
  static Status success() { return Status(); }

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

inline Error make_error(std::string message, ErrorKind kind = ErrorKind::invalid) { return Error{std::move(message), kind}; }

}  // namespace fedda
