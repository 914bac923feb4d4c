#include "syncdax/status.hpp"

#include <cstring>

namespace sdx {

std::string Error::to_string() const {
  return message + " (" + std::strerror(code) + ")";
}

std::unexpected<Error> fail_errno(std::string what) {
  int e = errno;
  return fail(e, std::move(what) + ": " + std::strerror(e));
}

}  // namespace sdx
