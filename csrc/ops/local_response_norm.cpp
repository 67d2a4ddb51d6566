// local_response_norm: schema and the argument checks every backend shares.
// Kernels: cpu/local_response_norm_cpu.cpp, cuda/local_response_norm_cuda.cu.
// Autograd and autocast: autograd/local_response_norm.h; Python entry and fake kernels:
// lenetalex/ops/local_response_norm.py.
#include "ops/local_response_norm.h"

#include <torch/library.h>

#include "common/checks.h"
#include "common/targets.h"

namespace lenetalex {

static constexpr const char* kOp = "local_response_norm";

LrnShape check_local_response_norm(const at::Tensor& input, int64_t size, Backend backend) {
  // Any rank >= 3, as F.local_response_norm: the window runs along dim 1 and
  // every dim after it is a position.
  TORCH_CHECK_VALUE(input.dim() >= 3, kOp,
                    ": expected input to be at least 3-D (N, C, *), e.g. 4-D (N, C, H, W), got a ",
                    input.dim(), "-D tensor of shape ", input.sizes());
  check_floating(kOp, "input", input, backend);
  TORCH_CHECK_VALUE(size >= 1, kOp, ": expected size >= 1, got ", size);
  LrnShape s;
  s.n = input.size(0);
  s.c = input.size(1);
  s.l = 1;
  for (int64_t d = 2; d < input.dim(); ++d) s.l *= input.size(d);
  s.size = size;
  s.before = size / 2;
  s.after = (size - 1) / 2;
  return s;
}

LrnShape check_local_response_norm_backward(const at::Tensor& grad_output,
                                            const at::Tensor& input, int64_t size,
                                            Backend backend) {
  LrnShape s = check_local_response_norm(input, size, backend);
  TORCH_CHECK_VALUE(grad_output.sizes() == input.sizes(), kOp,
                    "_backward: expected grad_output of input's shape ", input.sizes(), ", got ",
                    grad_output.sizes());
  check_same_dtype(kOp, "grad_output", grad_output, input);
  check_same_device(kOp, "grad_output", grad_output, input);
  return s;
}

TORCH_LIBRARY_FRAGMENT(LENETALEX_NS, m) {
  m.def("local_response_norm(Tensor input, int size, float alpha, float beta, float k) -> Tensor");
  // One differentiable input, so no output_mask: the backward runs only when
  // input's grad is wanted. It recomputes the window sums from input.
  m.def(
      "local_response_norm_backward(Tensor grad_output, Tensor input, int size, float alpha, "
      "float beta, float k) -> Tensor");
}

}  // namespace lenetalex
