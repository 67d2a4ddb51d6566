// conv2d_activation on the CPU: the op entries. They make the tensors
// contiguous NCHW, allocate the outputs and run the path that
// conv_cpu::choose_path picks (conv2d_activation/plan.h: which path serves
// which shapes, and the measurements behind them); the oneDNN path returns
// the outputs PyTorch's convolution allocated instead (y, and the grads
// without a copy into ours). The debug op _conv2d_activation_path reports
// the same choice.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <string>
#include <type_traits>

#include "common/grads.h"
#include "cpu/conv2d_activation/kernels.h"
#include "cpu/huge_pages.h"
#include "cpu/isa.h"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace {

using conv_cpu::ConvArgs;
using conv_cpu::Path;

// The chosen path's kernels for the pointer-based paths (polyphase takes the
// tensors, above the dispatch). The direct paths are float32 code.
template <typename T>
void run_forward(Path path, const Conv2dShape& s, const ConvArgs<T>& a, Activation act) {
  if constexpr (std::is_same_v<T, float>) {
    if (path == Path::Batched) return conv_cpu::forward_batched(s, a, act);
    if (path == Path::Winograd) return conv_cpu::forward_winograd(s, a, act);
  }
  conv_cpu::forward_gemm<T>(s, a, act);
}
template <typename T>
void run_backward(Path path, const Conv2dShape& s, const ConvArgs<T>& a, Activation act) {
  if constexpr (std::is_same_v<T, float>) {
    if (path == Path::Batched) return conv_cpu::backward_batched(s, a, act);
    if (path == Path::Winograd) return conv_cpu::backward_winograd(s, a, act);
  }
  conv_cpu::backward_gemm<T>(s, a, act);
}

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
  const Path path = conv_cpu::choose_path(s, input.scalar_type(), ConvPart::Forward);
  if (path == Path::Onednn) return conv_cpu::forward_onednn(s, x, w, b, act);  // its own y
  at::Tensor y = at::empty({s.n, s.oc, s.oh, s.ow}, input.options());
  advise_huge_pages(y);
  if (path == Path::None) return y;
  if (path == Path::Polyphase) {
    conv_cpu::forward_polyphase(s, x, w, b, y, act);
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_activation_cpu", [&] {
    ConvArgs<scalar_t> a{};
    a.x = x.const_data_ptr<scalar_t>();
    a.w = w.const_data_ptr<scalar_t>();
    a.b = has_bias ? b.const_data_ptr<scalar_t>() : nullptr;
    a.y = y.mutable_data_ptr<scalar_t>();
    run_forward(path, s, a, act);
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
  const bool any = output_mask[0] || output_mask[1] || output_mask[2];
  const Path path = conv_cpu::choose_path(s, input.scalar_type(), ConvPart::GradInput);
  if (any && path == Path::Onednn)  // its own grads, as its forward's y
    return conv_cpu::backward_onednn(s, grad_output.contiguous(), output.contiguous(), input,
                                     weight, act, output_mask);
  const auto opts = input.options();
  at::Tensor gx = grad_or_empty(output_mask[0], {s.n, s.c, s.h, s.w}, opts);
  advise_huge_pages(gx);
  at::Tensor gw = grad_or_empty(output_mask[1], weight.sizes(), opts);
  at::Tensor gb = grad_or_empty(output_mask[2], {s.oc}, opts);
  if (!any) return {gx, gw, gb};
  if (path == Path::None) {  // nothing flows back; reductions over an empty batch are zero
    if (output_mask[1]) gw.zero_();
    if (output_mask[2]) gb.zero_();
    return {gx, gw, gb};
  }
  const at::Tensor gy = grad_output.contiguous(), y = output.contiguous();
  // input is read only for grad_weight, weight only for grad_input.
  const at::Tensor x = output_mask[1] ? input.contiguous() : input;
  const at::Tensor w = output_mask[0] ? weight.contiguous() : weight;
  if (path == Path::Polyphase) {
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
    run_backward(path, s, a, act);
  });
  return {gx, gw, gb};
}

// The debug op: the path this variant's entries take for such a call. part is
// "forward", "grad_input", "grad_weight" or "grad_bias" (on the CPU the three
// grads share the backward's path).
std::string conv2d_activation_path_cpu(const at::Tensor& input, const at::Tensor& weight,
                                       at::IntArrayRef stride, at::IntArrayRef padding,
                                       int64_t groups, c10::string_view part) {
  const Conv2dShape s =
      check_conv2d_activation(input, weight, c10::nullopt, stride, padding, groups, Backend::Cpu);
  return conv_cpu::path_name(conv_cpu::choose_path(s, input.scalar_type(), parse_conv_part(part)));
}

}  // namespace

// Every ISA variant fills its table; the baseline registers the one CPU
// kernel per op, which calls the active variant (cpu/isa.h).
LENETALEX_CPU_KERNEL(conv2d_activation, conv2d_activation_cpu)
LENETALEX_CPU_KERNEL(conv2d_activation_backward, conv2d_activation_backward_cpu)
LENETALEX_CPU_KERNEL(_conv2d_activation_path, conv2d_activation_path_cpu)

}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
