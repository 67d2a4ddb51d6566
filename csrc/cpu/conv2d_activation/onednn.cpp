// conv2d_activation on the CPU, oneDNN path (float32): PyTorch's own
// convolution (at::convolution / at::convolution_backward, which on x86 run
// oneDNN's JIT kernels) for the large GEMM-shaped layers where our
// im2col + at::mm loses to it, with the rest fused: bias and ReLU/identity in
// oneDNN's own epilogue (fused_conv_op), other activations with the bias as
// one pass over the output of ours (PyTorch's reference makes two), and the
// activation's gradient as one pass before the backward convolution.
// Why: on the 2-core AMD EPYC (AVX2), whose MKL sgemm runs ~100 GFLOP/s, the
// GEMM path ran AlexNet's conv2-5 at 0.55-0.68x the reference (plan.h).
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty_like.h>

#include <optional>
#include <string>
#include <vector>

#include "common/grads.h"
#include "cpu/conv2d_activation/kernels.h"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace conv_cpu {

// Large enough per group that oneDNN's blocked kernels run at speed: AlexNet's
// layers (ocg 96-192, K 363-2304); none of LeNet's (ocg <= 16, and C5 covers
// its input: one GEMM, 3.2x on the GEMM path).
bool onednn_supported(const Conv2dShape& s) {
  return !covers_input(s) && s.ocg >= 64 && s.cg * s.kh * s.kw >= 256;
}

namespace {

// oneDNN's fused convolution: bias and the activation as oneDNN post-ops in
// the convolution's own epilogue, no pass over y of ours. It is the op
// Inductor's CPU conv fusions call (aten/src/ATen/native/mkldnn/Conv.cpp),
// registered where PyTorch is built with oneDNN; nullopt elsewhere. Its
// post-ops have no scaled tanh (and its tanh is an approximation), so it takes
// ReLU and identity: AlexNet's layers. Measured on the 2-core AMD EPYC (avx2
// variant, batch 8, one process, under load): 1.11-1.37x at::convolution +
// bias + ReLU over conv1-5.
const std::optional<c10::OperatorHandle>& fused_conv_op() {
  static const std::optional<c10::OperatorHandle> op =
      c10::Dispatcher::singleton().findOp({"mkldnn::_convolution_pointwise", ""});
  return op;
}

// y = act(conv(x, w) + b) by fused_conv_op, or an undefined tensor where it
// cannot (no such op, or an activation its post-ops lack).
at::Tensor fused_forward(const Conv2dShape& s, const at::Tensor& x, const at::Tensor& w,
                         const at::Tensor& b, Activation act) {
  const char* attr = act == Activation::Relu ? "relu" : act == Activation::Identity ? "none"
                                                                                      : nullptr;
  if (attr == nullptr || !fused_conv_op().has_value()) return at::Tensor();
  std::vector<c10::IValue> stack{x,
                                 w,
                                 b.defined() ? c10::IValue(b) : c10::IValue(),
                                 std::vector<int64_t>{s.ph, s.pw},
                                 std::vector<int64_t>{s.sh, s.sw},
                                 std::vector<int64_t>{1, 1},
                                 s.groups,
                                 std::string(attr),
                                 c10::List<std::optional<c10::Scalar>>(),
                                 c10::IValue()};
  fused_conv_op()->callBoxed(stack);
  return stack.at(0).toTensor().contiguous();
}

}  // namespace

at::Tensor forward_onednn(const Conv2dShape& s, const at::Tensor& x, const at::Tensor& w,
                          const at::Tensor& b, Activation act) {
  if (at::Tensor y = fused_forward(s, x, w, b, act); y.defined()) return y;
  at::Tensor y = at::convolution(x, w, c10::nullopt, {s.sh, s.sw}, {s.ph, s.pw}, {1, 1}, false,
                                 {0, 0}, s.groups)
                     .contiguous();
  float* p = y.mutable_data_ptr<float>();
  const float* bias = b.defined() ? b.const_data_ptr<float>() : nullptr;
  const int64_t plane = s.oh * s.ow;
  with_activation(act, [&](auto a) {
    at::parallel_for(0, s.n * s.oc, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        float* row = p + i * plane;
        bias_act_row<decltype(a)::value, float>(row, row, plane, bias ? bias[i % s.oc] : 0.f);
      }
    });
  });
  return y;
}

// gy and yo contiguous (read as rows here); x and w in any layout.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_onednn(
    const Conv2dShape& s, const at::Tensor& gy, const at::Tensor& yo, const at::Tensor& x,
    const at::Tensor& w, Activation act, std::array<bool, 3> mask) {
  // The gradient before the activation, gy * act'(y), in one pass.
  at::Tensor gpre = at::empty_like(gy);
  const float* g = gy.const_data_ptr<float>();
  const float* y = yo.const_data_ptr<float>();
  float* d = gpre.mutable_data_ptr<float>();
  const int64_t plane = s.oh * s.ow;
  with_activation(act, [&](auto a) {
    at::parallel_for(0, s.n * s.oc, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i)
        grad_pre_row<decltype(a)::value, float>(g + i * plane, y + i * plane, d + i * plane, plane);
    });
  });
  const std::vector<int64_t> bias_sizes = {s.oc};
  auto [dx, dw, db] = at::convolution_backward(gpre, x, w, at::IntArrayRef(bias_sizes),
                                               {s.sh, s.sw}, {s.ph, s.pw}, {1, 1}, false, {0, 0},
                                               s.groups, mask);
  // Returned as they are (no copy into grads of our own), contiguous as every
  // entry's outputs are: a copy only where oneDNN handed back another layout.
  const auto opts = x.options();
  return {grad_or_empty(mask[0], dx, opts), grad_or_empty(mask[1], dw, opts),
          grad_or_empty(mask[2], db, opts)};
}

}  // namespace conv_cpu
}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
