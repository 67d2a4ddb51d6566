// local_response_norm: the Autograd and Autocast kernels (see autograd/common.h).
// Included once, by autograd/autograd.cpp, which registers them.
#pragma once


#include "autograd/common.h"

namespace lenetalex {
namespace autograd {
namespace lrn {

using Forward = at::Tensor(const at::Tensor&, int64_t, double, double, double);
using Backward = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, double, double, double);

const c10::TypedOperatorHandle<Forward>& forward_op() {
  static const auto op = op_handle<Forward>("lenetalex::local_response_norm");
  return op;
}

const c10::TypedOperatorHandle<Backward>& backward_op_handle() {
  static const auto op = op_handle<Backward>("lenetalex::local_response_norm_backward");
  return op;
}

struct LocalResponseNormFunction : public torch::autograd::Function<LocalResponseNormFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, int64_t size,
                            double alpha, double beta, double k) {
    // Only the input: the backward recomputes the window sums from it, so
    // nothing activation-sized is kept for it.
    ctx->save_for_backward({input});
    ctx->saved_data["size"] = size;
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["k"] = k;
    return below_autograd([&] { return forward_op().call(input, size, alpha, beta, k); });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto& data = ctx->saved_data;
    // One differentiable input: the backward runs only when its grad is wanted.
    const at::Tensor gx = backward_op_handle().call(
        grads[0], ctx->get_saved_variables()[0], data.at("size").toInt(),
        data.at("alpha").toDouble(), data.at("beta").toDouble(), data.at("k").toDouble());
    const at::Tensor none;
    return {gx, none, none, none, none};
  }
};

at::Tensor autograd_kernel(const at::Tensor& input, int64_t size, double alpha, double beta,
                           double k) {
  if (!any_requires_grad({&input})) {
    return below_autograd([&] { return forward_op().call(input, size, alpha, beta, k); });
  }
  return LocalResponseNormFunction::apply(input, size, alpha, beta, k);
}

at::Tensor backward_autograd_kernel(const at::Tensor& grad_output, const at::Tensor& input,
                                    int64_t size, double alpha, double beta, double k) {
  return backward_op("local_response_norm", {grad_output, input}, [&] {
    return variable_list{backward_op_handle().call(grad_output, input, size, alpha, beta, k)};
  })[0];
}

template <c10::DeviceType Device>
at::Tensor autocast_kernel(const at::Tensor& input, int64_t size, double alpha, double beta,
                           double k) {
  const Autocast<Device> cast;
  return forward_op().call(cast(input), size, alpha, beta, k);
}

}  // namespace lrn
}  // namespace autograd
}  // namespace lenetalex
