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

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include "common/targets.h"

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

// ---------------------------------------------------------------------------
// A float tanh the CPU compiler can vectorize. glibc's tanhf is a scalar call
// that no loop around it can vectorize, and it would make every fused epilogue
// slower than PyTorch's vectorized torch.tanh. These are branch-free (selects,
// not branches), so gcc -O3 turns loops over them into AVX2/AVX-512 code.
// Accuracy: a few float ulps (max error ~3e-7 relative, checked in
// tests/test_activation.py against float64 tanh).

// e^x for float: x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series to
// r^7 (truncation < 6e-9), 2^n built in the exponent bits.
inline float exp_vec(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);  // keep 2^n a normal float
  const float shifter = 12582912.0f;                   // 1.5 * 2^23: t + shifter rounds t
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - n * 0.693145751953125f;  // ln2 split in two so n * ln2_hi is exact
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// tanh(x) = sign(x) (1 - 2 / (e^{2|x|} + 1)); near 0 that form cancels, so
// |x| < 0.3 uses the odd Taylor series to x^9 (next term < 2e-8 relative).
inline float tanh_vec(float x) {
  const float ax = std::fabs(x);
  const float x2 = x * x;
  const float small =
      x * (1.0f + x2 * (-1.0f / 3 + x2 * (2.0f / 15 + x2 * (-17.0f / 315 + x2 * (62.0f / 2835)))));
  const float big = std::copysign(1.0f - 2.0f / (exp_vec(2.0f * ax) + 1.0f), x);
  return ax < 0.3f ? small : big;
}

// float: the vectorizable tanh on the host, CUDA's tanhf on the device (and in
// the emulator, which runs the device code).
C10_HOST_DEVICE C10_ALWAYS_INLINE float tanh_acc(float x) {
#if LENETALEX_DEVICE_CODE
  return tanhf(x);
#else
  return tanh_vec(x);
#endif
}
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
    case Activation::ScaledTanh: {
      // Never negative: a saturated output saved in bfloat16 rounds to 1.71875,
      // past A = 1.7159, where the expression would give -0.0025, not 0.
      const acc_t d = acc_t(kScaledTanhS) * (acc_t(kScaledTanhA) - y * y * acc_t(1.0 / kScaledTanhA));
      return d > acc_t(0) ? d : acc_t(0);
    }
    default:
      return acc_t(1);
  }
}

// Host code: calls f(std::integral_constant<Activation, A>()) so that loops
// inside f see the activation as a constant: the switch in activation_forward
// / activation_grad_from_output folds away and the element-wise loops vectorize.
template <typename F>
inline void with_activation(Activation act, F&& f) {
  switch (act) {
    case Activation::Relu: return f(std::integral_constant<Activation, Activation::Relu>());
    case Activation::Tanh: return f(std::integral_constant<Activation, Activation::Tanh>());
    case Activation::ScaledTanh:
      return f(std::integral_constant<Activation, Activation::ScaledTanh>());
    default: return f(std::integral_constant<Activation, Activation::Identity>());
  }
}

}  // namespace lenetalex
