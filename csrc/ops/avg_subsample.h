// avg_subsample: y = act(weight[c] * mean of each window of x[n, c] + bias[c]),
// LeNet-5's trainable subsampling. Shapes and checks shared by the CPU and CUDA
// kernels; the schema lives in avg_subsample.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include "common/checks.h"

namespace lenetalex {

// Every size a subsampling kernel needs, worked out once from checked arguments.
struct AvgSubsampleShape {
  int64_t n, c, h, w;  // input
  int64_t kh, kw;      // window
  int64_t sh, sw;      // stride
  int64_t oh, ow;      // output (floor mode, no padding)
};

// Checks the forward's arguments (ranks, channels, dtypes, devices, window and
// stride sizes; bias may be None) and returns the geometry. Raises with the
// argument's name.
AvgSubsampleShape check_avg_subsample(const at::Tensor& input, const at::Tensor& weight,
                                      const c10::optional<at::Tensor>& bias,
                                      at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      Backend backend);

// The backward's arguments: the forward's (less bias), plus grad_output and
// output of the output's shape.
AvgSubsampleShape check_avg_subsample_backward(const at::Tensor& grad_output,
                                               const at::Tensor& output, const at::Tensor& input,
                                               const at::Tensor& weight,
                                               at::IntArrayRef kernel_size,
                                               at::IntArrayRef stride, Backend backend);

}  // namespace lenetalex
