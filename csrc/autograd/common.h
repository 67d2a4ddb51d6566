// What the Autograd and Autocast kernels of every op share (autograd/<op>.h).
//
// Each op's Autograd kernel is a torch::autograd::Function: its forward runs
// the op below autograd (the CPU or CUDA kernel, or under torch.compile the
// fake kernel), saves what the backward needs, and its backward calls the
// op's backward op with an output_mask of the grads autograd asks for. A call
// that needs no graph (no_grad, or no input requiring grad) skips the Function
// and its node: the inference path costs one redispatch.
//
// A backward op's Autograd kernel runs it below autograd too; only while a
// graph of the backward is being built (create_graph=True) do its outputs get
// a grad_fn, one that raises: without it a second derivative would be
// silently zero.
//
// The Autocast kernels cast the floating inputs and redispatch: on CUDA to the
// autocast dtype (float16 by default), as F.conv2d does; on the CPU to float32,
// since the CPU kernels run only float32 and float64 (PyTorch's rule for ops
// without low-precision kernels). float64 stays float64 on both, as in PyTorch.
#pragma once

#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>

#include <array>
#include <string>
#include <tuple>

namespace lenetalex {
namespace autograd {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The op's typed handle, looked up once ("lenetalex::<name>").
template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// Does this call build a graph? Function::apply's own test, plus forward-mode
// AD, which the Function path reports as unsupported (not silently dropped).
inline bool any_requires_grad(std::initializer_list<const at::Tensor*> tensors) {
  const bool grad_mode = at::GradMode::is_enabled();
  for (const at::Tensor* t : tensors) {
    if (!t->defined()) continue;
    if ((grad_mode && t->requires_grad()) || t->_fw_grad(/*level=*/0).defined()) return true;
  }
  return false;
}

inline const at::Tensor* maybe(const c10::optional<at::Tensor>& t) {
  static const at::Tensor undefined;
  return t.has_value() ? &*t : &undefined;
}

// Runs the op the caller names below autograd.
template <typename Run>
auto below_autograd(Run&& run) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return run();
}

// The output_mask of a backward op whose grads are (input, weight, bias) with
// an optional bias: needs_input_grad counts the tensor arguments given, so
// bias is the third only if it was given.
inline std::array<bool, 3> mask_with_optional_bias(const AutogradContext* ctx, bool has_bias) {
  return {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
          has_bias && ctx->needs_input_grad(2)};
}

// A backward's result: the grads the mask asked for (undefined for the
// others), then an undefined grad for each remaining forward argument.
template <size_t N, typename... T>
variable_list grads_asked(const std::array<bool, N>& mask, size_t arguments,
                          std::tuple<T...>&& grads) {
  variable_list out = std::apply([](auto&&... g) { return variable_list{g...}; }, grads);
  for (size_t i = 0; i < N; ++i) {
    if (!mask[i]) out[i] = at::Tensor();
  }
  out.resize(arguments);
  return out;
}

// A backward op's tuple of grads as a list.
template <typename... T>
variable_list as_list(std::tuple<T...>&& grads) {
  return std::apply([](auto&&... g) { return variable_list{g...}; }, grads);
}

// The grad_fn of a backward op's outputs when a graph is built over them.
struct NoDoubleBackward : public torch::autograd::Function<NoDoubleBackward> {
  template <typename Run>
  static variable_list forward(AutogradContext* ctx, const char* op, at::TensorList inputs,
                               Run&& run) {
    ctx->saved_data["op"] = std::string(op);
    return below_autograd(run);
  }

  static variable_list backward(AutogradContext* ctx, variable_list) {
    const std::string op = ctx->saved_data["op"].toStringRef();
    TORCH_CHECK_NOT_IMPLEMENTED(false, op,
                                ": double backward (a gradient of the gradient) is not "
                                "supported; use lenetalex.reference.",
                                op, " for higher-order derivatives");
  }
};

// A backward op's Autograd kernel: run(), below autograd, returns its outputs
// as a variable_list; inputs are its tensor arguments. op: the forward op.
template <typename Run>
variable_list backward_op(const char* op, at::TensorList inputs, Run&& run) {
  bool graph = false;
  for (const at::Tensor& t : inputs) graph = graph || any_requires_grad({&t});
  if (!graph) return below_autograd(run);
  return NoDoubleBackward::apply(op, inputs, std::forward<Run>(run));
}

// The Autocast kernel's casts, for one device type.
template <c10::DeviceType Device>
struct Autocast {
  // The autocast key excluded while the op redispatches, as ATen's own autocast
  // kernels do, so that the call below reaches Autograd and the kernels.
  c10::impl::ExcludeDispatchKeyGuard no_autocast{
      at::autocast::get_autocast_dispatch_key_from_device_type(Device)};
  at::ScalarType dtype = Device == c10::DeviceType::CPU ? at::kFloat
                                                        : at::autocast::get_autocast_dtype(Device);

  at::Tensor operator()(const at::Tensor& t) const {
    return at::autocast::cached_cast(dtype, t, Device);
  }
  c10::optional<at::Tensor> operator()(const c10::optional<at::Tensor>& t) const {
    return at::autocast::cached_cast(dtype, t, Device);
  }
};

}  // namespace autograd
}  // namespace lenetalex
