// lenet5 (the whole network as one op): its Autograd kernels (see
// autograd/common.h). Included once, by autograd/autograd.cpp, which registers
// them. No Autocast kernel: under autocast its inputs pass through unchanged,
// so the op runs in its inputs' dtype (on CUDA, float32 unless the model was
// converted to float16/bfloat16).
//
// The forward keeps its activations output (save=True; the Python entry
// lenetalex.lenet5 sets it whenever a grad is wanted), the input and the
// weights the backward reads; the backward op is asked only for the grads
// autograd needs. The backward op itself is wrapped in a Function whose
// backward raises: a second derivative must fail, not come back as zeros.
#pragma once

#include "autograd/common.h"

namespace lenetalex {
namespace autograd {
namespace lenet5 {

// The forward's tensor arguments, in schema order (autograd's input edges).
enum Arg : int {
  kInput, kC1W, kC1B, kS2W, kS2B, kC3W, kC3B, kS4W, kS4B, kC5W, kC5B, kF6W, kF6B, kProto,
  kTable, kTensorArgs
};

using ForwardSig = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const at::Tensor&, bool);
using BackwardSig = std::vector<at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const at::Tensor&, std::array<bool, 14>);

std::vector<at::Tensor> call_backward(at::TensorList a, std::array<bool, 14> mask) {
  static const auto op = op_handle<BackwardSig>("lenetalex::lenet5_backward");
  return op.call(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], mask);
}

// The backward op under autograd: computes, and refuses to be differentiated.
class LeNet5Backward : public torch::autograd::Function<LeNet5Backward> {
 public:
  // args as a TensorList: autograd sees each tensor in it as an input.
  static variable_list forward(AutogradContext*, at::TensorList args, std::array<bool, 14> mask) {
    return below_autograd([&] { return call_backward(args, mask); });
  }
  static variable_list backward(AutogradContext*, const variable_list&) {
    TORCH_CHECK_NOT_IMPLEMENTED(false,
                                "lenet5: double backward (a gradient of the gradient) is not "
                                "supported; use LeNet5(impl='reference') for higher-order "
                                "derivatives");
  }
};

class LeNet5Function : public torch::autograd::Function<LeNet5Function> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& c1w, const at::Tensor& c1b,
                               const at::Tensor& s2w, const at::Tensor& s2b,
                               const at::Tensor& c3w, const at::Tensor& c3b,
                               const at::Tensor& s4w, const at::Tensor& s4b,
                               const at::Tensor& c5w, const at::Tensor& c5b,
                               const at::Tensor& f6w, const at::Tensor& f6b,
                               const at::Tensor& proto, const at::Tensor& table, bool save) {
    static const auto op = op_handle<ForwardSig>("lenetalex::lenet5");
    auto [dist, acts] = below_autograd([&] {
      return op.call(input, c1w, c1b, s2w, s2b, c3w, c3b, s4w, s4b, c5w, c5b, f6w, f6b, proto,
                     table, save);
    });
    // What the backward reads: the layer outputs, the input (C1's weight
    // grad), the weights (the grads flowing down) and the table.
    ctx->save_for_backward({acts, input, c1w, s2w, c3w, s4w, c5w, f6w, proto, table});
    ctx->saved_data["save"] = save;
    ctx->mark_non_differentiable({acts});
    return {dist, acts};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(ctx->saved_data["save"].toBool(),
                "lenet5: the forward ran with save=False, so it kept no activations for the "
                "backward; call lenetalex.lenet5, which sets save when a grad is wanted");
    const variable_list s = ctx->get_saved_variables();
    // The forward args each grad belongs to, in the backward op's order.
    static constexpr int kGradOf[14] = {kInput, kC1W, kC1B, kS2W, kS2B, kC3W, kC3B,
                                        kS4W,   kS4B, kC5W, kC5B, kF6W, kF6B, kProto};
    std::array<bool, 14> mask;
    for (int i = 0; i < 14; ++i) mask[i] = ctx->needs_input_grad(kGradOf[i]);
    at::Tensor gd = grads[0];
    if (!gd.defined()) gd = at::zeros_like(s[1].new_empty({s[1].size(0), s[8].size(0)}));
    const variable_list args = {gd, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9]};
    const variable_list g = LeNet5Backward::apply(at::TensorList(args), mask);
    variable_list out(kTensorArgs + 1);  // + the bool save
    for (int i = 0; i < 14; ++i)
      if (mask[i]) out[kGradOf[i]] = g[i];
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor> autograd_kernel(
    const at::Tensor& input, const at::Tensor& c1w, const at::Tensor& c1b, const at::Tensor& s2w,
    const at::Tensor& s2b, const at::Tensor& c3w, const at::Tensor& c3b, const at::Tensor& s4w,
    const at::Tensor& s4b, const at::Tensor& c5w, const at::Tensor& c5b, const at::Tensor& f6w,
    const at::Tensor& f6b, const at::Tensor& proto, const at::Tensor& table, bool save) {
  const variable_list out = LeNet5Function::apply(input, c1w, c1b, s2w, s2b, c3w, c3b, s4w, s4b,
                                                  c5w, c5b, f6w, f6b, proto, table, save);
  return {out[0], out[1]};
}

std::vector<at::Tensor> backward_autograd_kernel(
    const at::Tensor& gd, const at::Tensor& acts, const at::Tensor& input, const at::Tensor& c1w,
    const at::Tensor& s2w, const at::Tensor& c3w, const at::Tensor& s4w, const at::Tensor& c5w,
    const at::Tensor& f6w, const at::Tensor& proto, const at::Tensor& table,
    std::array<bool, 14> mask) {
  const variable_list args = {gd, acts, input, c1w, s2w, c3w, s4w, c5w, f6w, proto, table};
  return LeNet5Backward::apply(at::TensorList(args), mask);
}

}  // namespace lenet5
}  // namespace autograd
}  // namespace lenetalex
