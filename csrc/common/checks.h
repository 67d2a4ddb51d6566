// Argument checks shared by every op and every backend. Each message names the
// op and the argument, so a user sees at once what to fix. Value problems raise
// ValueError, dtype problems TypeError (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE).
#pragma once

#include <string>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace lenetalex {

inline void check_rank(const char* op, const char* arg, const at::Tensor& t, int64_t rank,
                       const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == rank, op, ": expected ", arg, " to be ", rank, "-D (", layout,
                    "), got a ", t.dim(), "-D tensor of shape ", t.sizes());
}

// The dtypes a kernel runs, chosen by the entry that calls the checks (not by
// the tensor's device: the emulated CUDA kernels take CPU tensors).
enum class Backend { Cpu, Cuda };

// Float types each backend supports: float32/float64 on the CPU, and
// float32/float16/bfloat16 on CUDA (float64 works there too). Named here, not
// left to the kernels' dispatch: at::isFloatingType also admits the float8
// types, which would fail later with a NotImplementedError naming no argument.
inline void check_floating(const char* op, const char* arg, const at::Tensor& t, Backend backend) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(at::isFloatingType(st), op, ": expected ", arg,
                   " to be a floating-point tensor, got ", st);
  if (backend == Backend::Cpu) {
    TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble, op, ": on the CPU ", arg,
                     " must be float32 or float64, got ", st);
  } else {
    TORCH_CHECK_TYPE(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 ||
                         st == at::kDouble,
                     op, ": on cuda ", arg, " must be float32, float16, bfloat16 or float64, got ",
                     st);
  }
}

inline void check_same_dtype(const char* op, const char* arg, const at::Tensor& t,
                             const at::Tensor& input) {
  TORCH_CHECK_TYPE(t.scalar_type() == input.scalar_type(), op, ": expected ", arg,
                   " to have the dtype of input (", input.scalar_type(), "), got ",
                   t.scalar_type());
}

inline void check_same_device(const char* op, const char* arg, const at::Tensor& t,
                              const at::Tensor& input) {
  TORCH_CHECK_VALUE(t.device() == input.device(), op, ": expected ", arg,
                    " to be on the device of input (", input.device(), "), got ", t.device());
}

// A backward's grad_output or saved output: the shape the forward returns
// (`expected`), the input's dtype and device. backward_op is the backward's name.
inline void check_like_output(const char* backward_op, const char* arg, const at::Tensor& t,
                              c10::IntArrayRef expected, const at::Tensor& input) {
  TORCH_CHECK_VALUE(t.sizes() == expected, backward_op, ": expected ", arg, " of shape ", expected,
                    ", got ", t.sizes());
  check_same_dtype(backward_op, arg, t, input);
  check_same_device(backward_op, arg, t, input);
}

// Pair arguments (stride, padding, kernel_size) arrive as int[2].
inline void check_pair(const char* op, const char* arg, c10::IntArrayRef v, int64_t min_value) {
  TORCH_CHECK_VALUE(v.size() == 2, op, ": expected ", arg, " to have 2 elements, got ", v.size());
  TORCH_CHECK_VALUE(v[0] >= min_value && v[1] >= min_value, op, ": expected ", arg,
                    " to be >= ", min_value, ", got ", v);
}

}  // namespace lenetalex
