// lenet5: schema and the argument checks every backend shares.
// Kernels: cpu/lenet5_cpu.cpp (no CUDA kernel yet: LeNet5(impl="fused") runs
// the per-layer ops there). Autograd: autograd/lenet5.h. Python entry
// and fake kernels: lenetalex/ops/lenet5.py.
#include "ops/lenet5.h"

#include <initializer_list>

#include <torch/library.h>

#include "common/checks.h"
#include "common/targets.h"

namespace lenetalex {
namespace lenet5 {

static constexpr const char* kOp = "lenet5";
static constexpr const char* kBackward = "lenet5_backward";

// t has exactly `shape`, input's dtype and device. what: the shape in words.
static void check_param(const char* op, const char* arg, const at::Tensor& t,
                        std::initializer_list<int64_t> shape, const at::Tensor& input) {
  TORCH_CHECK_VALUE(t.sizes() == at::IntArrayRef(shape), op, ": expected ", arg, " of shape ",
                    at::IntArrayRef(shape), " (LeNet-5's), got ", t.sizes());
  check_same_dtype(op, arg, t, input);
  check_same_device(op, arg, t, input);
}

// F6 is a 1x1 conv in lenetalex.models (weight (84, 120, 1, 1)); a Linear's
// (84, 120) is the same numbers and is taken too.
static void check_f6_weight(const char* op, const at::Tensor& t, const at::Tensor& input) {
  if (t.dim() == 2) return check_param(op, "f6_weight", t, {kF6, kC5}, input);
  check_param(op, "f6_weight", t, {kF6, kC5, 1, 1}, input);
}

static void check_input(const char* op, const at::Tensor& input, Backend backend) {
  check_rank(op, "input", input, 4, "N, 1, 32, 32");
  check_floating(op, "input", input, backend);
  TORCH_CHECK_VALUE(input.size(1) == 1 && input.size(2) == kIn && input.size(3) == kIn, op,
                    ": expected input of shape (N, 1, 32, 32), got ", input.sizes());
}

static int64_t check_prototypes(const char* op, const at::Tensor& p, const at::Tensor& input) {
  check_rank(op, "prototypes", p, 2, "K, 84");
  TORCH_CHECK_VALUE(p.size(1) == kF6 && p.size(0) >= 1, op,
                    ": expected prototypes of shape (K, 84) with K >= 1, got ", p.sizes());
  check_same_dtype(op, "prototypes", p, input);
  check_same_device(op, "prototypes", p, input);
  return p.size(0);
}

// Any table is computed as given (only its connections); Table I is the paper's.
static void check_table(const char* op, const at::Tensor& table, const at::Tensor& input) {
  TORCH_CHECK_TYPE(table.scalar_type() == at::kBool, op,
                   ": expected c3_table to be a bool tensor, got ", table.scalar_type());
  TORCH_CHECK_VALUE(table.sizes() == at::IntArrayRef({kC3, kS2}), op,
                    ": expected c3_table of shape [16, 6] (C3 map, S2 map), got ", table.sizes());
  check_same_device(op, "c3_table", table, input);
}

int64_t check_forward(const at::Tensor& input, const at::Tensor& c1_weight,
                      const at::Tensor& c1_bias, const at::Tensor& s2_weight,
                      const at::Tensor& s2_bias, const at::Tensor& c3_weight,
                      const at::Tensor& c3_bias, const at::Tensor& s4_weight,
                      const at::Tensor& s4_bias, const at::Tensor& c5_weight,
                      const at::Tensor& c5_bias, const at::Tensor& f6_weight,
                      const at::Tensor& f6_bias, const at::Tensor& prototypes,
                      const at::Tensor& c3_table, Backend backend) {
  check_input(kOp, input, backend);
  check_param(kOp, "c1_weight", c1_weight, {kC1, 1, kK, kK}, input);
  check_param(kOp, "c1_bias", c1_bias, {kC1}, input);
  check_param(kOp, "s2_weight", s2_weight, {kS2}, input);
  check_param(kOp, "s2_bias", s2_bias, {kS2}, input);
  check_param(kOp, "c3_weight", c3_weight, {kC3, kS2, kK, kK}, input);
  check_param(kOp, "c3_bias", c3_bias, {kC3}, input);
  check_param(kOp, "s4_weight", s4_weight, {kS4}, input);
  check_param(kOp, "s4_bias", s4_bias, {kS4}, input);
  check_param(kOp, "c5_weight", c5_weight, {kC5, kS4, kK, kK}, input);
  check_param(kOp, "c5_bias", c5_bias, {kC5}, input);
  check_f6_weight(kOp, f6_weight, input);
  check_param(kOp, "f6_bias", f6_bias, {kF6}, input);
  check_table(kOp, c3_table, input);
  return check_prototypes(kOp, prototypes, input);
}

int64_t check_backward(const at::Tensor& grad_distances, const at::Tensor& activations,
                       const at::Tensor& input, const at::Tensor& c1_weight,
                       const at::Tensor& s2_weight, const at::Tensor& c3_weight,
                       const at::Tensor& s4_weight, const at::Tensor& c5_weight,
                       const at::Tensor& f6_weight, const at::Tensor& prototypes,
                       const at::Tensor& c3_table, Backend backend) {
  check_input(kBackward, input, backend);
  check_param(kBackward, "c1_weight", c1_weight, {kC1, 1, kK, kK}, input);
  check_param(kBackward, "s2_weight", s2_weight, {kS2}, input);
  check_param(kBackward, "c3_weight", c3_weight, {kC3, kS2, kK, kK}, input);
  check_param(kBackward, "s4_weight", s4_weight, {kS4}, input);
  check_param(kBackward, "c5_weight", c5_weight, {kC5, kS4, kK, kK}, input);
  check_f6_weight(kBackward, f6_weight, input);
  check_table(kBackward, c3_table, input);
  const int64_t k = check_prototypes(kBackward, prototypes, input);
  const int64_t n = input.size(0);
  check_like_output(kBackward, "grad_distances", grad_distances, {n, k}, input);
  // Only the forward's save=True output fits: it is whole blocks of images.
  check_like_output(kBackward, "activations", activations, {saved_numel(n)}, input);
  return k;
}

TORCH_LIBRARY_FRAGMENT(LENETALEX_NS, m) {
  // distances (N, K); activations: with save, every layer's output for the
  // backward (an opaque buffer of saved_numel(N) values in the kernels' block
  // layout), else empty (shape (0,)). c3_table (16, 6) bool: the C3 <- S2
  // connections computed (Table I for the paper); weights off the table are
  // neither read nor given a gradient.
  m.def(
      "lenet5(Tensor input, Tensor c1_weight, Tensor c1_bias, Tensor s2_weight, "
      "Tensor s2_bias, Tensor c3_weight, Tensor c3_bias, Tensor s4_weight, Tensor s4_bias, "
      "Tensor c5_weight, Tensor c5_bias, Tensor f6_weight, Tensor f6_bias, Tensor prototypes, "
      "Tensor c3_table, bool save) -> (Tensor distances, Tensor activations)");
  // Grads of (input, c1_weight, c1_bias, s2_weight, s2_bias, c3_weight,
  // c3_bias, s4_weight, s4_bias, c5_weight, c5_bias, f6_weight, f6_bias,
  // prototypes), in that order; those not asked for in output_mask come back
  // empty (shape (0,)).
  m.def(
      "lenet5_backward(Tensor grad_distances, Tensor activations, Tensor input, "
      "Tensor c1_weight, Tensor s2_weight, Tensor c3_weight, Tensor s4_weight, "
      "Tensor c5_weight, Tensor f6_weight, Tensor prototypes, Tensor c3_table, "
      "bool[14] output_mask) -> Tensor[]");
}

}  // namespace lenet5
}  // namespace lenetalex
