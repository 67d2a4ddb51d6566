// rbf_distance: schema and the argument checks every backend shares.
// Kernels: cpu/rbf_distance_cpu.cpp, cuda/rbf_distance_cuda.cu.
// Autograd and autocast: autograd/rbf_distance.h; Python entry and fake kernels:
// lenetalex/ops/rbf_distance.py.
#include "ops/rbf_distance.h"

#include <array>

#include <torch/library.h>

#include "common/checks.h"
#include "common/targets.h"

namespace lenetalex {

static constexpr const char* kOp = "rbf_distance";
static constexpr const char* kBackward = "rbf_distance_backward";

RBFShape check_rbf_distance(const at::Tensor& input, const at::Tensor& prototypes,
                            Backend backend) {
  check_rank(kOp, "input", input, 2, "N, D");
  check_rank(kOp, "prototypes", prototypes, 2, "K, D");
  check_floating(kOp, "input", input, backend);
  check_same_dtype(kOp, "prototypes", prototypes, input);
  check_same_device(kOp, "prototypes", prototypes, input);
  TORCH_CHECK_VALUE(prototypes.size(1) == input.size(1), kOp, ": expected prototypes of width ",
                    input.size(1), " (input's D), got shape ", prototypes.sizes());
  return {input.size(0), prototypes.size(0), input.size(1)};
}

RBFShape check_rbf_distance_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& prototypes, Backend backend) {
  const RBFShape s = check_rbf_distance(input, prototypes, backend);
  const std::array<int64_t, 2> expected{s.n, s.k};
  check_like_output(kBackward, "grad_output", grad_output, expected, input);
  return s;
}

TORCH_LIBRARY_FRAGMENT(LENETALEX_NS, m) {
  m.def("rbf_distance(Tensor input, Tensor prototypes) -> Tensor");
  // Grads not asked for in output_mask come back as empty tensors (shape (0,)).
  m.def(
      "rbf_distance_backward(Tensor grad_output, Tensor input, Tensor prototypes, "
      "bool[2] output_mask) -> (Tensor, Tensor)");
}

}  // namespace lenetalex
