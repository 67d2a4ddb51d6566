// conv2d_activation on the CPU: forward and backward.
//
// Direct convolution, one (image, output channel) plane per task: the plane
// starts as the bias, every input plane of the group is accumulated into it
// while it is hot in cache, and the activation is applied before the plane is
// left (the epilogue). The backward turns grad_output into the grad of the
// pre-activation from the saved output, then reduces it three ways.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>

#include "common/activation.h"
#include "ops/conv2d_activation.h"

namespace lenetalex {
namespace {

// Output columns [lo, hi) whose input column ow*s - p + k lies inside [0, size).
inline void valid_range(int64_t out, int64_t size, int64_t s, int64_t p, int64_t k,
                        int64_t& lo, int64_t& hi) {
  // ow*s - p + k >= 0  <=>  ow >= ceil((p - k) / s)
  lo = p - k > 0 ? (p - k + s - 1) / s : 0;
  // ow*s - p + k <= size - 1  <=>  ow <= floor((size - 1 + p - k) / s)
  const int64_t last = size - 1 + p - k;
  hi = last < 0 ? 0 : std::min(out, last / s + 1);
  lo = std::min(lo, hi);
}

template <typename scalar_t>
void forward_kernel(const Conv2dShape& s, const scalar_t* x, const scalar_t* w,
                    const scalar_t* b, scalar_t* y, Activation act) {
  const int64_t plane_out = s.oh * s.ow;
  at::parallel_for(0, s.n * s.oc, 1, [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t n = idx / s.oc, oc = idx % s.oc, g = oc / s.ocg;
      scalar_t* out = y + idx * plane_out;
      std::fill(out, out + plane_out, b ? b[oc] : scalar_t(0));
      for (int64_t icg = 0; icg < s.cg; ++icg) {
        const scalar_t* in = x + ((n * s.c) + g * s.cg + icg) * s.h * s.w;
        const scalar_t* wk = w + (oc * s.cg + icg) * s.kh * s.kw;
        for (int64_t kh = 0; kh < s.kh; ++kh) {
          int64_t oh_lo, oh_hi;
          valid_range(s.oh, s.h, s.sh, s.ph, kh, oh_lo, oh_hi);
          for (int64_t kw = 0; kw < s.kw; ++kw) {
            int64_t ow_lo, ow_hi;
            valid_range(s.ow, s.w, s.sw, s.pw, kw, ow_lo, ow_hi);
            const scalar_t wv = wk[kh * s.kw + kw];
            for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
              const scalar_t* row = in + (oh * s.sh - s.ph + kh) * s.w - s.pw + kw;
              scalar_t* orow = out + oh * s.ow;
              for (int64_t ow = ow_lo; ow < ow_hi; ++ow) orow[ow] += wv * row[ow * s.sw];
            }
          }
        }
      }
      for (int64_t i = 0; i < plane_out; ++i) out[i] = activation_forward<scalar_t>(act, out[i]);
    }
  });
}

template <typename scalar_t>
void backward_kernel(const Conv2dShape& s, const scalar_t* gy, const scalar_t* y,
                     const scalar_t* x, const scalar_t* w, scalar_t* gx, scalar_t* gw,
                     scalar_t* gb, Activation act, scalar_t* gpre) {
  const int64_t plane_out = s.oh * s.ow, plane_in = s.h * s.w;
  // grad of the pre-activation, from the saved output.
  at::parallel_for(0, s.n * s.oc * plane_out, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      gpre[i] = gy[i] * activation_grad_from_output<scalar_t>(act, y[i]);
  });
  if (gb) {
    at::parallel_for(0, s.oc, 1, [&](int64_t begin, int64_t end) {
      for (int64_t oc = begin; oc < end; ++oc) {
        scalar_t acc = 0;
        for (int64_t n = 0; n < s.n; ++n) {
          const scalar_t* p = gpre + (n * s.oc + oc) * plane_out;
          for (int64_t i = 0; i < plane_out; ++i) acc += p[i];
        }
        gb[oc] = acc;
      }
    });
  }
  if (gw) {
    // Each task owns one output channel's filters: no two tasks write the same weight.
    at::parallel_for(0, s.oc, 1, [&](int64_t begin, int64_t end) {
      for (int64_t oc = begin; oc < end; ++oc) {
        const int64_t g = oc / s.ocg;
        for (int64_t icg = 0; icg < s.cg; ++icg) {
          for (int64_t kh = 0; kh < s.kh; ++kh) {
            int64_t oh_lo, oh_hi;
            valid_range(s.oh, s.h, s.sh, s.ph, kh, oh_lo, oh_hi);
            for (int64_t kw = 0; kw < s.kw; ++kw) {
              int64_t ow_lo, ow_hi;
              valid_range(s.ow, s.w, s.sw, s.pw, kw, ow_lo, ow_hi);
              scalar_t acc = 0;
              for (int64_t n = 0; n < s.n; ++n) {
                const scalar_t* in = x + (n * s.c + g * s.cg + icg) * plane_in;
                const scalar_t* go = gpre + (n * s.oc + oc) * plane_out;
                for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
                  const scalar_t* row = in + (oh * s.sh - s.ph + kh) * s.w - s.pw + kw;
                  const scalar_t* grow = go + oh * s.ow;
                  for (int64_t ow = ow_lo; ow < ow_hi; ++ow) acc += grow[ow] * row[ow * s.sw];
                }
              }
              gw[((oc * s.cg + icg) * s.kh + kh) * s.kw + kw] = acc;
            }
          }
        }
      }
    });
  }
  if (gx) {
    // Each task owns one (image, input channel) plane and scatters into it.
    at::parallel_for(0, s.n * s.c, 1, [&](int64_t begin, int64_t end) {
      for (int64_t idx = begin; idx < end; ++idx) {
        const int64_t n = idx / s.c, ic = idx % s.c, g = ic / s.cg, icg = ic % s.cg;
        scalar_t* gin = gx + idx * plane_in;
        std::fill(gin, gin + plane_in, scalar_t(0));
        for (int64_t ocg = 0; ocg < s.ocg; ++ocg) {
          const int64_t oc = g * s.ocg + ocg;
          const scalar_t* go = gpre + (n * s.oc + oc) * plane_out;
          const scalar_t* wk = w + (oc * s.cg + icg) * s.kh * s.kw;
          for (int64_t kh = 0; kh < s.kh; ++kh) {
            int64_t oh_lo, oh_hi;
            valid_range(s.oh, s.h, s.sh, s.ph, kh, oh_lo, oh_hi);
            for (int64_t kw = 0; kw < s.kw; ++kw) {
              int64_t ow_lo, ow_hi;
              valid_range(s.ow, s.w, s.sw, s.pw, kw, ow_lo, ow_hi);
              const scalar_t wv = wk[kh * s.kw + kw];
              for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
                scalar_t* row = gin + (oh * s.sh - s.ph + kh) * s.w - s.pw + kw;
                const scalar_t* grow = go + oh * s.ow;
                for (int64_t ow = ow_lo; ow < ow_hi; ++ow) row[ow * s.sw] += wv * grow[ow];
              }
            }
          }
        }
      }
    });
  }
}

at::Tensor conv2d_activation_cpu(const at::Tensor& input, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, int64_t groups,
                                 c10::string_view activation) {
  const Conv2dShape s = check_conv2d_activation(input, weight, bias, stride, padding, groups);
  const Activation act = parse_activation(activation);
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  at::Tensor y = at::empty({s.n, s.oc, s.oh, s.ow}, input.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_activation_cpu", [&] {
    forward_kernel<scalar_t>(s, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                             has_bias ? b.const_data_ptr<scalar_t>() : nullptr,
                             y.mutable_data_ptr<scalar_t>(), act);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_activation_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const Conv2dShape s =
      check_conv2d_activation_backward(grad_output, output, input, weight, stride, padding, groups);
  const Activation act = parse_activation(activation);
  const at::Tensor gy = grad_output.contiguous(), y = output.contiguous();
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  const auto opts = input.options();
  at::Tensor gx = output_mask[0] ? at::empty({s.n, s.c, s.h, s.w}, opts) : at::empty({0}, opts);
  at::Tensor gw = output_mask[1] ? at::empty(weight.sizes(), opts) : at::empty({0}, opts);
  at::Tensor gb = output_mask[2] ? at::empty({s.oc}, opts) : at::empty({0}, opts);
  if (s.n == 0 || s.c == 0) {  // nothing flows back; reductions over an empty batch are zero
    if (output_mask[1]) gw.zero_();
    if (output_mask[2]) gb.zero_();
    return {gx, gw, gb};
  }
  at::Tensor gpre = at::empty(y.sizes(), opts);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_activation_backward_cpu", [&] {
    backward_kernel<scalar_t>(
        s, gy.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
        x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
        output_mask[0] ? gx.mutable_data_ptr<scalar_t>() : nullptr,
        output_mask[1] ? gw.mutable_data_ptr<scalar_t>() : nullptr,
        output_mask[2] ? gb.mutable_data_ptr<scalar_t>() : nullptr, act,
        gpre.mutable_data_ptr<scalar_t>());
  });
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(lenetalex, CPU, m) {
  m.impl("conv2d_activation", &conv2d_activation_cpu);
  m.impl("conv2d_activation_backward", &conv2d_activation_backward_cpu);
}

}  // namespace lenetalex
