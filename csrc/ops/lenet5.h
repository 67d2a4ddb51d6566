// lenet5: the whole LeNet-5 (C1 -> S2 -> C3 -> S4 -> C5 -> F6 -> RBF
// distances, scaled tanh after every layer up to F6) as one op pair. Sizes,
// the layout of the saved activations, and the checks shared by every
// backend; the schema lives in lenet5.cpp.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "common/checks.h"

namespace lenetalex {
namespace lenet5 {

// The paper's geometry (LeCun et al. 1998, section II.B): fixed, the op is
// this network and no other.
constexpr int64_t kIn = 32;                  // input 1@32x32
constexpr int64_t kC1 = 6, kH1 = 28;         // C1 6@28x28
constexpr int64_t kS2 = 6, kH2 = 14;         // S2 6@14x14
constexpr int64_t kC3 = 16, kH3 = 10;        // C3 16@10x10
constexpr int64_t kS4 = 16, kH4 = 5;         // S4 16@5x5
constexpr int64_t kC5 = 120, kF6 = 84;       // C5 120, F6 84
constexpr int64_t kK = 5;                    // every conv kernel is 5x5

// Per-image layer outputs kept for the backward, in this order.
constexpr int64_t kOffC1 = 0;
constexpr int64_t kOffS2 = kOffC1 + kC1 * kH1 * kH1;  // 4704
constexpr int64_t kOffC3 = kOffS2 + kS2 * kH2 * kH2;  // 5880
constexpr int64_t kOffS4 = kOffC3 + kC3 * kH3 * kH3;  // 7480
constexpr int64_t kOffC5 = kOffS4 + kS4 * kH4 * kH4;  // 7880
constexpr int64_t kOffF6 = kOffC5 + kC5;              // 8000
constexpr int64_t kSaved = kOffF6 + kF6;              // 8084 values per image

// Images per block: the kernels hold a block's activations with the image
// index innermost, so every layer is a loop of 8-wide vector FMAs. The saved
// activations tensor holds whole blocks (the last one padded), which is why
// its size is a multiple of kBlock * kSaved.
constexpr int64_t kBlock = 8;

inline int64_t saved_numel(int64_t n) { return (n + kBlock - 1) / kBlock * kBlock * kSaved; }

// Checks every argument of the forward (ranks, shapes, dtypes - the backend's
// policy -, devices, the C3 table) and returns the number of prototypes K. Raises naming the argument.
int64_t check_forward(const at::Tensor& input, const at::Tensor& c1_weight,
                      const at::Tensor& c1_bias, const at::Tensor& s2_weight,
                      const at::Tensor& s2_bias, const at::Tensor& c3_weight,
                      const at::Tensor& c3_bias, const at::Tensor& s4_weight,
                      const at::Tensor& s4_bias, const at::Tensor& c5_weight,
                      const at::Tensor& c5_bias, const at::Tensor& f6_weight,
                      const at::Tensor& f6_bias, const at::Tensor& prototypes,
                      const at::Tensor& c3_table, Backend backend);

// The backward's: the weights it reads, grad_distances (N, K) and the
// activations a forward with save=True returned for this input.
int64_t check_backward(const at::Tensor& grad_distances, const at::Tensor& activations,
                       const at::Tensor& input, const at::Tensor& c1_weight,
                       const at::Tensor& s2_weight, const at::Tensor& c3_weight,
                       const at::Tensor& s4_weight, const at::Tensor& c5_weight,
                       const at::Tensor& f6_weight, const at::Tensor& prototypes,
                       const at::Tensor& c3_table, Backend backend);

}  // namespace lenet5
}  // namespace lenetalex
