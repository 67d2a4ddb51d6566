// conv2d_activation: the Autograd and Autocast kernels (see autograd/common.h).
// Included once, by autograd/autograd.cpp, which registers them.
#pragma once


#include "autograd/common.h"

namespace lenetalex {
namespace autograd {
namespace conv {

using Forward = at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                           at::IntArrayRef, at::IntArrayRef, int64_t, c10::string_view);
using Backward = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef,
    at::IntArrayRef, int64_t, c10::string_view, std::array<bool, 3>);

const c10::TypedOperatorHandle<Forward>& forward_op() {
  static const auto op = op_handle<Forward>("lenetalex::conv2d_activation");
  return op;
}

const c10::TypedOperatorHandle<Backward>& backward_op_handle() {
  static const auto op = op_handle<Backward>("lenetalex::conv2d_activation_backward");
  return op;
}

struct Conv2dActivationFunction : public torch::autograd::Function<Conv2dActivationFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups,
                            c10::string_view activation) {
    at::Tensor output = below_autograd(
        [&] { return forward_op().call(input, weight, bias, stride, padding, groups, activation); });
    // input is read for grad_weight, weight for grad_input, the output for
    // every grad (the activation's derivative is taken from it).
    ctx->save_for_backward({input, weight, output});
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["activation"] = std::string(activation);
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const auto& data = ctx->saved_data;
    const auto mask = mask_with_optional_bias(ctx, data.at("has_bias").toBool());
    return grads_asked(mask, 7,
                       backward_op_handle().call(grads[0], saved[2], saved[0], saved[1],
                                                 data.at("stride").toIntVector(),
                                                 data.at("padding").toIntVector(),
                                                 data.at("groups").toInt(),
                                                 data.at("activation").toStringRef(), mask));
  }
};

at::Tensor autograd_kernel(const at::Tensor& input, const at::Tensor& weight,
                           const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                           at::IntArrayRef padding, int64_t groups, c10::string_view activation) {
  if (!any_requires_grad({&input, &weight, maybe(bias)})) {
    return below_autograd(
        [&] { return forward_op().call(input, weight, bias, stride, padding, groups, activation); });
  }
  return Conv2dActivationFunction::apply(input, weight, bias, stride, padding, groups, activation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_autograd_kernel(
    const at::Tensor& grad_output, const at::Tensor& output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const variable_list out =
      backward_op("conv2d_activation", {grad_output, output, input, weight}, [&] {
        return as_list(backward_op_handle().call(grad_output, output, input, weight, stride,
                                                 padding, groups, activation, output_mask));
      });
  return {out[0], out[1], out[2]};
}

template <c10::DeviceType Device>
at::Tensor autocast_kernel(const at::Tensor& input, const at::Tensor& weight,
                           const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                           at::IntArrayRef padding, int64_t groups, c10::string_view activation) {
  const Autocast<Device> cast;
  return forward_op().call(cast(input), cast(weight), cast(bias), stride, padding, groups,
                           activation);
}

}  // namespace conv
}  // namespace autograd
}  // namespace lenetalex
