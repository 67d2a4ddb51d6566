// conv2d_activation on the CPU, oneDNN path (float32): PyTorch's own
// convolution (at::convolution / at::convolution_backward, which on x86 run
// oneDNN's JIT kernels) for the large GEMM-shaped layers where our
// im2col + at::mm loses to it, with what is ours fused around it: bias and
// activation as one pass over the output (PyTorch's reference makes two),
// and the activation's gradient as one pass before the backward convolution.
// Why: on the 2-core AMD EPYC (AVX2), whose MKL sgemm runs ~100 GFLOP/s, the
// GEMM path ran AlexNet's conv2-5 at 0.55-0.68x the reference (plan.h).
#include <ATen/Parallel.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty_like.h>

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

at::Tensor forward_onednn(const Conv2dShape& s, const at::Tensor& x, const at::Tensor& w,
                          const at::Tensor& b, Activation act) {
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
