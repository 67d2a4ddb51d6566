// avg_subsample: schema and the argument checks every backend shares.
// Kernels: cpu/avg_subsample_cpu.cpp, cuda/avg_subsample_cuda.cu.
// Autograd and autocast: autograd/avg_subsample.h; Python entry and fake kernels:
// lenetalex/ops/avg_subsample.py.
#include "ops/avg_subsample.h"

#include <array>

#include <torch/library.h>

#include "common/checks.h"
#include "common/targets.h"

namespace lenetalex {

static constexpr const char* kOp = "avg_subsample";
static constexpr const char* kBackward = "avg_subsample_backward";

// weight and bias: one number per channel.
static void check_per_channel(const char* arg, const at::Tensor& t, const at::Tensor& input) {
  check_rank(kOp, arg, t, 1, "C, one per input channel");
  TORCH_CHECK_VALUE(t.size(0) == input.size(1), kOp, ": expected ", arg, " of length ",
                    input.size(1), " (input's channels), got ", t.size(0));
  check_same_dtype(kOp, arg, t, input);
  check_same_device(kOp, arg, t, input);
}

static AvgSubsampleShape check_common(const at::Tensor& input, const at::Tensor& weight,
                                      at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      Backend backend) {
  check_rank(kOp, "input", input, 4, "N, C, H, W");
  check_floating(kOp, "input", input, backend);
  check_per_channel("weight", weight, input);
  check_pair(kOp, "kernel_size", kernel_size, 1);
  check_pair(kOp, "stride", stride, 1);
  AvgSubsampleShape s;
  s.n = input.size(0); s.c = input.size(1); s.h = input.size(2); s.w = input.size(3);
  s.kh = kernel_size[0]; s.kw = kernel_size[1];
  s.sh = stride[0]; s.sw = stride[1];
  TORCH_CHECK_VALUE(s.h >= s.kh && s.w >= s.kw, kOp, ": kernel_size (", s.kh, ", ", s.kw,
                    ") is larger than the input's spatial size (", s.h, ", ", s.w, ")");
  s.oh = (s.h - s.kh) / s.sh + 1;
  s.ow = (s.w - s.kw) / s.sw + 1;
  return s;
}

AvgSubsampleShape check_avg_subsample(const at::Tensor& input, const at::Tensor& weight,
                                      const c10::optional<at::Tensor>& bias,
                                      at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      Backend backend) {
  const AvgSubsampleShape s = check_common(input, weight, kernel_size, stride, backend);
  if (bias.has_value() && bias->defined()) check_per_channel("bias", *bias, input);
  return s;
}

AvgSubsampleShape check_avg_subsample_backward(const at::Tensor& grad_output,
                                               const at::Tensor& output, const at::Tensor& input,
                                               const at::Tensor& weight,
                                               at::IntArrayRef kernel_size,
                                               at::IntArrayRef stride, Backend backend) {
  const AvgSubsampleShape s = check_common(input, weight, kernel_size, stride, backend);
  const std::array<int64_t, 4> expected{s.n, s.c, s.oh, s.ow};
  check_like_output(kBackward, "grad_output", grad_output, expected, input);
  check_like_output(kBackward, "output", output, expected, input);
  return s;
}

TORCH_LIBRARY_FRAGMENT(LENETALEX_NS, m) {
  // bias may be None (no shift), as conv2d_activation's.
  m.def(
      "avg_subsample(Tensor input, Tensor weight, Tensor? bias, int[2] kernel_size, "
      "int[2] stride, str activation) -> Tensor");
  // Grads not asked for in output_mask come back as empty tensors (shape (0,)).
  // input is read only for grad_weight (the window means are recomputed from
  // it, never saved); its shape is needed for grad_input.
  m.def(
      "avg_subsample_backward(Tensor grad_output, Tensor output, Tensor input, "
      "Tensor weight, int[2] kernel_size, int[2] stride, str activation, "
      "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}

}  // namespace lenetalex
