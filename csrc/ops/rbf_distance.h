// rbf_distance: y[n, k] = sum_j (x[n, j] - w[k, j])^2. Shapes and checks shared
// by the CPU and CUDA kernels; the schema lives in rbf_distance.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include "common/checks.h"

namespace lenetalex {

// input (n, d), prototypes (k, d), output (n, k).
struct RBFShape {
  int64_t n, k, d;
};

// Checks the forward's arguments (ranks, widths, dtypes, devices) and returns
// the sizes. Raises with the argument's name.
RBFShape check_rbf_distance(const at::Tensor& input, const at::Tensor& prototypes, Backend backend);

// The backward's arguments: the forward's, plus grad_output of shape (n, k).
RBFShape check_rbf_distance_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& prototypes, Backend backend);

}  // namespace lenetalex
