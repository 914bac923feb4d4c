// syncdax/status: the small vocabulary every layer and the public API share -- an errno-carrying Error and
// std::expected-based Result. Owns no state; depends on nothing in syncdax.
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <utility>

namespace sdx {

// An error is an errno value (what a POSIX caller would see) plus a message for humans.
struct Error {
  int code = EIO;
  std::string message;

  std::string to_string() const;
};

template <class T>
using Result = std::expected<T, Error>;
using Status = Result<void>;

inline std::unexpected<Error> fail(int code, std::string message) {
  return std::unexpected<Error>(Error{code, std::move(message)});
}
inline std::unexpected<Error> fail(Error e) { return std::unexpected<Error>(std::move(e)); }

// fail() with strerror(errno) appended, for wrapping failed system calls.
std::unexpected<Error> fail_errno(std::string what);

inline Status ok() { return {}; }

}  // namespace sdx

// Propagate an error from an expression returning Result<...>; evaluates to nothing.
#define SDX_TRY(expr)                                                 \
  do {                                                                \
    auto sdx_try_r_ = (expr);                                         \
    if (!sdx_try_r_) return std::unexpected(std::move(sdx_try_r_.error())); \
  } while (0)

#define SDX_CAT2_(a, b) a##b
#define SDX_CAT_(a, b) SDX_CAT2_(a, b)
// Declare `lhs` from the value of a Result expression, or propagate its error.
#define SDX_ASSIGN(lhs, expr) SDX_ASSIGN_IMPL_(SDX_CAT_(sdx_r_, __LINE__), lhs, expr)
#define SDX_ASSIGN_IMPL_(tmp, lhs, expr)                        \
  auto tmp = (expr);                                            \
  if (!tmp) return std::unexpected(std::move(tmp.error()));     \
  lhs = std::move(*tmp)
