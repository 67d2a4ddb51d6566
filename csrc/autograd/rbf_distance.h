// rbf_distance: the Autograd and Autocast kernels (see autograd/common.h).
// Included once, by autograd/autograd.cpp, which registers them.
#pragma once


#include "autograd/common.h"

namespace lenetalex {
namespace autograd {
namespace rbf {

using Forward = at::Tensor(const at::Tensor&, const at::Tensor&);
using Backward = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, std::array<bool, 2>);

const c10::TypedOperatorHandle<Forward>& forward_op() {
  static const auto op = op_handle<Forward>("lenetalex::rbf_distance");
  return op;
}

const c10::TypedOperatorHandle<Backward>& backward_op_handle() {
  static const auto op = op_handle<Backward>("lenetalex::rbf_distance_backward");
  return op;
}

struct RBFDistanceFunction : public torch::autograd::Function<RBFDistanceFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& prototypes) {
    // Both grads need both tensors (the differences x - w); not the output.
    ctx->save_for_backward({input, prototypes});
    return below_autograd([&] { return forward_op().call(input, prototypes); });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    // The prototypes are usually fixed: then no work is spent on their grad.
    const std::array<bool, 2> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    return grads_asked(mask, 2, backward_op_handle().call(grads[0], saved[0], saved[1], mask));
  }
};

at::Tensor autograd_kernel(const at::Tensor& input, const at::Tensor& prototypes) {
  if (!any_requires_grad({&input, &prototypes})) {
    return below_autograd([&] { return forward_op().call(input, prototypes); });
  }
  return RBFDistanceFunction::apply(input, prototypes);
}

std::tuple<at::Tensor, at::Tensor> backward_autograd_kernel(const at::Tensor& grad_output,
                                                            const at::Tensor& input,
                                                            const at::Tensor& prototypes,
                                                            std::array<bool, 2> output_mask) {
  const variable_list out = backward_op("rbf_distance", {grad_output, input, prototypes}, [&] {
    return as_list(backward_op_handle().call(grad_output, input, prototypes, output_mask));
  });
  return {out[0], out[1]};
}

template <c10::DeviceType Device>
at::Tensor autocast_kernel(const at::Tensor& input, const at::Tensor& prototypes) {
  const Autocast<Device> cast;
  return forward_op().call(cast(input), cast(prototypes));
}

}  // namespace rbf
}  // namespace autograd
}  // namespace lenetalex
