// ceil(a / b) for sizes (a >= 0, b > 0): tiles, blocks and chunks that cover a
// range. Host and device; used by the CPU and CUDA kernels alike.
#pragma once

#include <cstdint>

#include <c10/macros/Macros.h>

namespace lenetalex {

C10_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace lenetalex
