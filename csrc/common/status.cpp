// status.cpp: the C API's one piece of per-thread state, the last-error message behind
// cuattn_last_error() (cuattn_internal_last_error()) and cuattn_set_last_error(), with
// cuattn::fail().
#include "common/status.h"

#include <cstdarg>
#include <cstdio>
#include <string>
#include <utility>

namespace {

// One message per OS thread: a call reports on the thread that made it.
thread_local std::string last_error;

}  // namespace

extern "C" const char* cuattn_internal_last_error(void) { return last_error.c_str(); }

extern "C" void cuattn_set_last_error(const char* message) {
  last_error.assign(message != nullptr ? message : "");
}

namespace cuattn {
namespace {

// Appends the formatted text to `out`; an encoding error appends the format itself.
void vappend_format(std::string& out, const char* format, va_list args) {
  va_list sizing_args;
  va_copy(sizing_args, args);
  const int length = std::vsnprintf(nullptr, 0, format, sizing_args);
  va_end(sizing_args);
  if (length < 0) {
    out += format;
    return;
  }
  // vsnprintf writes the terminating NUL into the string's own terminator slot.
  const size_t start = out.size();
  out.resize(start + static_cast<size_t>(length));
  std::vsnprintf(out.data() + start, static_cast<size_t>(length) + 1, format, args);
}

}  // namespace

void append_format(std::string& out, const char* format, ...) {
  va_list args;
  va_start(args, format);
  vappend_format(out, format, args);
  va_end(args);
}

cuattn_status fail(cuattn_status status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  // Formatted into a fresh string: an argument may be the current message itself.
  std::string message;
  vappend_format(message, format, args);
  va_end(args);
  last_error = std::move(message);
  return status;
}

}  // namespace cuattn
