// conv2d_activation: y = act(conv2d(x, w, b)). Shapes and checks shared by the
// CPU and CUDA kernels; the schema lives in conv2d_activation.cpp.
#pragma once

#include <array>

#include <ATen/core/Tensor.h>

#include "common/checks.h"
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

namespace lenetalex {

// Every size a conv kernel needs, worked out once from checked arguments.
struct Conv2dShape {
  int64_t n, c, h, w;        // input
  int64_t oc, kh, kw;        // weight (oc, c / groups, kh, kw)
  int64_t oh, ow;            // output
  int64_t sh, sw, ph, pw;    // stride, padding
  int64_t groups, cg, ocg;   // groups, input channels per group, output channels per group
};

// Checks the forward's arguments (ranks, channels, groups, bias, dtypes,
// devices, sizes) and returns the geometry. Raises with the argument's name.
Conv2dShape check_conv2d_activation(const at::Tensor& input, const at::Tensor& weight,
                                    const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                    at::IntArrayRef padding, int64_t groups, Backend backend);

// The backward's arguments: the forward's, plus grad_output and output of the
// output's shape.
Conv2dShape check_conv2d_activation_backward(const at::Tensor& grad_output,
                                             const at::Tensor& output, const at::Tensor& input,
                                             const at::Tensor& weight, at::IntArrayRef stride,
                                             at::IntArrayRef padding, int64_t groups,
                                             Backend backend);

// The parts of a call whose kernel path the debug op _conv2d_activation_path
// reports (its `str part`): the forward and each grad of the backward.
enum class ConvPart : int { Forward, GradInput, GradWeight, GradBias };
ConvPart parse_conv_part(c10::string_view part);

}  // namespace lenetalex
