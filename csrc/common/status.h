// status.h: C++ helpers over cuattn.h's status codes: fail() records a printf-style message for
// cuattn_last_error() on the calling thread and returns the status, so errors read as one line.
#ifndef CUATTN_COMMON_STATUS_H_
#define CUATTN_COMMON_STATUS_H_

#include <string>

#include "cuattn_internal.h"

namespace cuattn {

// Formats the message, stores it as this thread's last error and returns `status`.
cuattn_status fail(cuattn_status status, const char* format, ...)
    __attribute__((format(printf, 2, 3)));

// Appends printf-style text to `out` (how the emulator builds its fault messages).
void append_format(std::string& out, const char* format, ...) __attribute__((format(printf, 2, 3)));

}  // namespace cuattn

#endif  // CUATTN_COMMON_STATUS_H_
