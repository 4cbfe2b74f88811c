// status.cpp: the per-thread last-error message behind cuattn_last_error() and
// cuattn_set_last_error(), and cuattn::fail().
#include "common/status.h"

#include <cstdarg>
#include <cstdio>
#include <string>
#include <utility>

namespace {

// One message per OS thread: a call reports on the thread that made it.
thread_local std::string last_error;

}  // namespace

extern "C" const char* cuattn_last_error(void) { return last_error.c_str(); }

extern "C" void cuattn_set_last_error(const char* message) {
  last_error.assign(message != nullptr ? message : "");
}

namespace cuattn {

cuattn_status fail(cuattn_status status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  va_list sizing_args;
  va_copy(sizing_args, args);
  const int length = std::vsnprintf(nullptr, 0, format, sizing_args);
  va_end(sizing_args);
  // Formatted into a fresh string: an argument may be the current message itself.
  std::string message;
  if (length < 0) {
    message = format;  // an encoding error: keep the unformatted text
  } else {
    // vsnprintf writes the terminating NUL into the string's own terminator slot.
    message.resize(static_cast<size_t>(length));
    std::vsnprintf(message.data(), static_cast<size_t>(length) + 1, format, args);
  }
  last_error = std::move(message);
  va_end(args);
  return status;
}

}  // namespace cuattn
