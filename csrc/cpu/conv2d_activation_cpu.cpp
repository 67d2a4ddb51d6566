// conv2d_activation on the CPU: the op entries. They make the tensors
// contiguous NCHW, allocate the outputs and pick a path (see
// conv2d_activation_cpu.h): the direct kernels where they apply (float32, few
// channels, small kernels: LeNet's layers), the im2col/GEMM path otherwise.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/grads.h"
#include "cpu/conv2d_activation/kernels.h"
#include "cpu/huge_pages.h"
#include "cpu/isa.h"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace {

using conv_cpu::ConvArgs;

at::Tensor conv2d_activation_cpu(const at::Tensor& input, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, int64_t groups,
                                 c10::string_view activation) {
  const Conv2dShape s =
      check_conv2d_activation(input, weight, bias, stride, padding, groups, Backend::Cpu);
  const Activation act = parse_activation(activation);
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  at::Tensor y = at::empty({s.n, s.oc, s.oh, s.ow}, input.options());
  advise_huge_pages(y);
  if (y.numel() == 0) return y;
  if (x.scalar_type() == at::kFloat && conv_cpu::polyphase_supported(s)) {
    conv_cpu::forward_polyphase(s, x, w, b, y, act);
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_activation_cpu", [&] {
    ConvArgs<scalar_t> a{};
    a.x = x.const_data_ptr<scalar_t>();
    a.w = w.const_data_ptr<scalar_t>();
    a.b = has_bias ? b.const_data_ptr<scalar_t>() : nullptr;
    a.y = y.mutable_data_ptr<scalar_t>();
    if (!conv_cpu::try_forward_direct(s, a, act)) conv_cpu::forward_gemm<scalar_t>(s, a, act);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_activation_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const Conv2dShape s =
      check_conv2d_activation_backward(grad_output, output, input, weight, stride, padding, groups,
                                       Backend::Cpu);
  const Activation act = parse_activation(activation);
  const auto opts = input.options();
  at::Tensor gx = grad_or_empty(output_mask[0], {s.n, s.c, s.h, s.w}, opts);
  advise_huge_pages(gx);
  at::Tensor gw = grad_or_empty(output_mask[1], weight.sizes(), opts);
  at::Tensor gb = grad_or_empty(output_mask[2], {s.oc}, opts);
  if (!output_mask[0] && !output_mask[1] && !output_mask[2]) return {gx, gw, gb};
  if (s.n == 0 || s.c == 0) {  // nothing flows back; reductions over an empty batch are zero
    if (output_mask[1]) gw.zero_();
    if (output_mask[2]) gb.zero_();
    return {gx, gw, gb};
  }
  const at::Tensor gy = grad_output.contiguous(), y = output.contiguous();
  // input is read only for grad_weight, weight only for grad_input.
  const at::Tensor x = output_mask[1] ? input.contiguous() : input;
  const at::Tensor w = output_mask[0] ? weight.contiguous() : weight;
  if (x.scalar_type() == at::kFloat && conv_cpu::polyphase_supported(s)) {
    conv_cpu::backward_polyphase(s, gy, y, x, w, act, output_mask, gx, gw, gb);
    return {gx, gw, gb};
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_activation_backward_cpu", [&] {
    ConvArgs<scalar_t> a{};
    a.x = output_mask[1] ? x.const_data_ptr<scalar_t>() : nullptr;
    a.w = output_mask[0] ? w.const_data_ptr<scalar_t>() : nullptr;
    a.gy = gy.const_data_ptr<scalar_t>();
    a.yo = y.const_data_ptr<scalar_t>();
    a.gx = output_mask[0] ? gx.mutable_data_ptr<scalar_t>() : nullptr;
    a.gw = output_mask[1] ? gw.mutable_data_ptr<scalar_t>() : nullptr;
    a.gb = output_mask[2] ? gb.mutable_data_ptr<scalar_t>() : nullptr;
    if (!conv_cpu::try_backward_direct(s, a, act)) conv_cpu::backward_gemm<scalar_t>(s, a, act);
  });
  return {gx, gw, gb};
}

}  // namespace

// Every ISA variant fills its table; the baseline registers the one CPU
// kernel per op, which calls the active variant (cpu/isa.h).
LENETALEX_CPU_KERNEL(conv2d_activation, conv2d_activation_cpu)
LENETALEX_CPU_KERNEL(conv2d_activation_backward, conv2d_activation_backward_cpu)

}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
