// conv2d_activation: schema and the argument checks every backend shares.
// Kernels: cpu/conv2d_activation_cpu.cpp, cuda/conv2d_activation_cuda.cu.
// Autograd and autocast: autograd/conv2d_activation.h; Python entry and fake kernels:
// lenetalex/ops/conv2d_activation.py.
#include "ops/conv2d_activation.h"

#include <torch/library.h>

#include <limits>
#include <string>

#include "common/checks.h"
#include "common/targets.h"

namespace lenetalex {

static constexpr const char* kOp = "conv2d_activation";
static constexpr const char* kBackward = "conv2d_activation_backward";

Conv2dShape check_conv2d_activation(const at::Tensor& input, const at::Tensor& weight,
                                    const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                    at::IntArrayRef padding, int64_t groups, Backend backend) {
  check_rank(kOp, "input", input, 4, "N, C, H, W");
  check_rank(kOp, "weight", weight, 4, "out_channels, in_channels / groups, kH, kW");
  check_floating(kOp, "input", input, backend);
  check_same_dtype(kOp, "weight", weight, input);
  check_same_device(kOp, "weight", weight, input);
  check_pair(kOp, "stride", stride, 1);
  check_pair(kOp, "padding", padding, 0);
  TORCH_CHECK_VALUE(groups >= 1, kOp, ": expected groups >= 1, got ", groups);

  Conv2dShape s;
  s.n = input.size(0); s.c = input.size(1); s.h = input.size(2); s.w = input.size(3);
  s.oc = weight.size(0); s.kh = weight.size(2); s.kw = weight.size(3);
  s.sh = stride[0]; s.sw = stride[1]; s.ph = padding[0]; s.pw = padding[1];
  s.groups = groups;
  TORCH_CHECK_VALUE(s.kh >= 1 && s.kw >= 1 && s.oc >= 1, kOp,
                    ": expected weight with non-zero sizes, got shape ", weight.sizes());
  // Zero channels would make every output act(bias), which F.conv2d does not
  // compute either (it returns an empty tensor): refused rather than guessed.
  TORCH_CHECK_VALUE(s.c >= 1, kOp, ": expected input with at least one channel, got shape ",
                    input.sizes());
  TORCH_CHECK_VALUE(s.c % groups == 0, kOp, ": input has ", s.c,
                    " channels, which groups=", groups, " does not divide");
  TORCH_CHECK_VALUE(s.oc % groups == 0, kOp, ": weight has ", s.oc,
                    " output channels, which groups=", groups, " does not divide");
  s.cg = s.c / groups;
  s.ocg = s.oc / groups;
  TORCH_CHECK_VALUE(weight.size(1) == s.cg, kOp, ": weight expects ", weight.size(1),
                    " input channels per group, but input has ", s.c, " channels in ", groups,
                    " group(s) (", s.cg, " per group)");
  if (bias.has_value() && bias->defined()) {
    check_rank(kOp, "bias", *bias, 1, "out_channels");
    TORCH_CHECK_VALUE(bias->size(0) == s.oc, kOp, ": expected bias of length ", s.oc,
                      " (weight's out_channels), got ", bias->size(0));
    check_same_dtype(kOp, "bias", *bias, input);
    check_same_device(kOp, "bias", *bias, input);
  }
  // H + 2 * padding must not overflow (padding near 2^63 wrapped to a small input).
  const int64_t max_pad = std::numeric_limits<int64_t>::max() / 4;
  TORCH_CHECK_VALUE(s.ph <= max_pad && s.pw <= max_pad, kOp, ": expected padding below 2^61, got ",
                    padding);
  TORCH_CHECK_VALUE(s.h + 2 * s.ph >= s.kh && s.w + 2 * s.pw >= s.kw, kOp,
                    ": kernel size (", s.kh, ", ", s.kw, ") is larger than the padded input (",
                    s.h + 2 * s.ph, ", ", s.w + 2 * s.pw, ")");
  s.oh = (s.h + 2 * s.ph - s.kh) / s.sh + 1;
  s.ow = (s.w + 2 * s.pw - s.kw) / s.sw + 1;
  return s;
}

Conv2dShape check_conv2d_activation_backward(const at::Tensor& grad_output,
                                             const at::Tensor& output, const at::Tensor& input,
                                             const at::Tensor& weight, at::IntArrayRef stride,
                                             at::IntArrayRef padding, int64_t groups,
                                             Backend backend) {
  Conv2dShape s =
      check_conv2d_activation(input, weight, c10::nullopt, stride, padding, groups, backend);
  const std::array<int64_t, 4> expected{s.n, s.oc, s.oh, s.ow};
  check_like_output(kBackward, "grad_output", grad_output, expected, input);
  check_like_output(kBackward, "output", output, expected, input);
  return s;
}

ConvPart parse_conv_part(c10::string_view part) {
  if (part == "forward") return ConvPart::Forward;
  if (part == "grad_input") return ConvPart::GradInput;
  if (part == "grad_weight") return ConvPart::GradWeight;
  if (part == "grad_bias") return ConvPart::GradBias;
  TORCH_CHECK_VALUE(false, "part must be one of 'forward', 'grad_input', 'grad_weight', 'grad_bias', got '",
                    std::string(part), "'");
}

TORCH_LIBRARY_FRAGMENT(LENETALEX_NS, m) {
  m.def(
      "conv2d_activation(Tensor input, Tensor weight, Tensor? bias, int[2] stride, "
      "int[2] padding, int groups, str activation) -> Tensor");
  // Grads not asked for in output_mask come back as empty tensors (shape (0,)).
  m.def(
      "conv2d_activation_backward(Tensor grad_output, Tensor output, Tensor input, "
      "Tensor weight, int[2] stride, int[2] padding, int groups, str activation, "
      "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // Debug: the kernel path the entries above take for such a call on this
  // device (CPU: the active ISA variant's), for tests and `lenetalex bench`.
  // Reads only shapes, dtype and device. Paths: cpu/conv2d_activation/plan.h,
  // cuda/conv2d_activation/plan.cuh.
  m.def(
      "_conv2d_activation_path(Tensor input, Tensor weight, int[2] stride, int[2] padding, "
      "int groups, str part) -> str");
}

}  // namespace lenetalex
