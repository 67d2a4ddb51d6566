// The one home of the activation math, shared by CPU and CUDA kernels.
//
// Every fused op applies an activation as the epilogue of its forward and its
// derivative as the prologue of its backward. The derivative is written in terms
// of the *output* y = act(x), so the backward never needs the pre-activation:
//   identity:     y = x                       dy/dx = 1
//   relu:         y = max(x, 0)               dy/dx = [y > 0]
//   tanh:         y = tanh(x)                 dy/dx = 1 - y^2
//   scaled_tanh:  y = A tanh(S x)             dy/dx = A S (1 - (y/A)^2) = S (A - y^2 / A)
// with A = 1.7159 and S = 2/3 (LeCun 1998, Appendix A: f(+-1) = +-1).
#pragma once

#include <math.h>
#include <string>

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

namespace lenetalex {

enum class Activation : int { Identity = 0, Relu = 1, Tanh = 2, ScaledTanh = 3 };

constexpr double kScaledTanhA = 1.7159;
constexpr double kScaledTanhS = 2.0 / 3.0;

// Parses the schema's `str activation`; the message lists what is accepted.
inline Activation parse_activation(c10::string_view name) {
  if (name == "scaled_tanh") return Activation::ScaledTanh;
  if (name == "tanh") return Activation::Tanh;
  if (name == "relu") return Activation::Relu;
  if (name == "identity") return Activation::Identity;
  TORCH_CHECK_VALUE(false, "activation must be one of 'scaled_tanh', 'tanh', 'relu', 'identity', got '",
                    std::string(name), "'");
}

// tanhf / tanh exist on both host and device; overloads pick the precision.
C10_HOST_DEVICE C10_ALWAYS_INLINE float tanh_acc(float x) { return tanhf(x); }
C10_HOST_DEVICE C10_ALWAYS_INLINE double tanh_acc(double x) { return ::tanh(x); }

// acc_t is float or double: kernels compute in float32 (or float64 for double
// tensors) and convert to the storage type only when they store.
template <typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE acc_t activation_forward(Activation act, acc_t x) {
  switch (act) {
    case Activation::Relu:
      return x > acc_t(0) ? x : acc_t(0);
    case Activation::Tanh:
      return tanh_acc(x);
    case Activation::ScaledTanh:
      return acc_t(kScaledTanhA) * tanh_acc(acc_t(kScaledTanhS) * x);
    default:
      return x;
  }
}

// d act / dx expressed through the saved output y.
template <typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE acc_t activation_grad_from_output(Activation act, acc_t y) {
  switch (act) {
    case Activation::Relu:
      return y > acc_t(0) ? acc_t(1) : acc_t(0);
    case Activation::Tanh:
      return acc_t(1) - y * y;
    case Activation::ScaledTanh:
      return acc_t(kScaledTanhS) * (acc_t(kScaledTanhA) - y * y * acc_t(1.0 / kScaledTanhA));
    default:
      return acc_t(1);
  }
}

}  // namespace lenetalex
