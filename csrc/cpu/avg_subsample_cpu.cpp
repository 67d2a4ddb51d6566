// avg_subsample on the CPU: forward and backward.
//
// One (image, channel) plane per task, walked row by row: each output row is
// the sum of its windows (the window rows added first, contiguously, then the
// columns of each window), scaled by weight[c] / area, shifted by bias[c] and
// activated while the plane is still in cache. 2x2 windows at stride 2 (LeNet's
// S2 and S4) take a special path without the scratch row.
//
// The backward makes one pass too: per output row it forms the grad of the
// pre-activation from the saved output, spreads it over the windows (grad
// input), and accumulates per-column partial sums for grad bias and, against
// window sums recomputed from the input, for grad weight. Each plane's partials
// land in a per-(n, c) buffer that is then summed over n in a fixed order, so
// the per-channel grads do not depend on how the planes were split over threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/activation.h"
#include "ops/avg_subsample.h"

namespace lenetalex {
namespace {

// Calls f with the activation as a compile-time constant, so that the switch in
// activation_forward / activation_grad_from_output folds away and the
// element-wise loops vectorize.
template <typename F>
void with_activation(Activation act, F&& f) {
  switch (act) {
    case Activation::Relu:
      return f(std::integral_constant<Activation, Activation::Relu>{});
    case Activation::Tanh:
      return f(std::integral_constant<Activation, Activation::Tanh>{});
    case Activation::ScaledTanh:
      return f(std::integral_constant<Activation, Activation::ScaledTanh>{});
    default:
      return f(std::integral_constant<Activation, Activation::Identity>{});
  }
}

inline bool is_2x2_stride_2(const AvgSubsampleShape& s) {
  return s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2;
}

// out[0, ow) = the window sums of output row oh of one input plane.
// tmp: scratch of s.w elements (unused on the 2x2 path).
template <typename scalar_t>
inline void window_sums(const AvgSubsampleShape& s, const scalar_t* plane, int64_t oh,
                        scalar_t* tmp, scalar_t* out) {
  const scalar_t* r0 = plane + oh * s.sh * s.w;
  if (is_2x2_stride_2(s)) {
    const scalar_t* r1 = r0 + s.w;
    for (int64_t j = 0; j < s.ow; ++j)
      out[j] = (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]);
    return;
  }
  const int64_t used = (s.ow - 1) * s.sw + s.kw;  // columns some window covers
  std::copy(r0, r0 + used, tmp);
  for (int64_t kh = 1; kh < s.kh; ++kh) {
    const scalar_t* r = r0 + kh * s.w;
    for (int64_t j = 0; j < used; ++j) tmp[j] += r[j];
  }
  for (int64_t j = 0; j < s.ow; ++j) {
    const scalar_t* t = tmp + j * s.sw;
    scalar_t acc = t[0];
    for (int64_t kw = 1; kw < s.kw; ++kw) acc += t[kw];
    out[j] = acc;
  }
}

// Planes per task: enough work to be worth a thread.
inline int64_t grain(const AvgSubsampleShape& s) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, s.h * s.w));
}

template <typename scalar_t, typename Act>
void forward_kernel(const AvgSubsampleShape& s, const scalar_t* x, const scalar_t* w,
                    const scalar_t* b, scalar_t* y, Act) {
  const int64_t plane_in = s.h * s.w, plane_out = s.oh * s.ow;
  const scalar_t inv_area = scalar_t(1) / scalar_t(s.kh * s.kw);
  at::parallel_for(0, s.n * s.c, grain(s), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> tmp(s.w);
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t c = idx % s.c;
      const scalar_t scale = w[c] * inv_area, shift = b[c];
      const scalar_t* in = x + idx * plane_in;
      scalar_t* out = y + idx * plane_out;
      for (int64_t oh = 0; oh < s.oh; ++oh) window_sums(s, in, oh, tmp.data(), out + oh * s.ow);
      // The epilogue over the whole plane: one long vectorizable loop.
      for (int64_t i = 0; i < plane_out; ++i)
        out[i] = activation_forward<scalar_t>(Act::value, scale * out[i] + shift);
    }
  });
}

// gx: grad input (or null); pw, pb: per-(n, c) partial sums for grad weight and
// grad bias (or null).
template <typename scalar_t, typename Act>
void backward_kernel(const AvgSubsampleShape& s, const scalar_t* gy, const scalar_t* y,
                     const scalar_t* x, const scalar_t* w, scalar_t* gx, scalar_t* pw,
                     scalar_t* pb, Act) {
  const int64_t plane_in = s.h * s.w, plane_out = s.oh * s.ow;
  const scalar_t inv_area = scalar_t(1) / scalar_t(s.kh * s.kw);
  const bool fast = is_2x2_stride_2(s);
  const int64_t used = (s.ow - 1) * s.sw + s.kw;  // columns some window covers
  at::parallel_for(0, s.n * s.c, grain(s), [&](int64_t begin, int64_t end) {
    // Scratch: a row of the input's width, then four rows of the output's.
    std::vector<scalar_t> buf(s.w + 4 * s.ow);
    scalar_t* tmp = buf.data();
    scalar_t* g = tmp + s.w;        // grad of the pre-activation, one output row
    scalar_t* sums = g + s.ow;      // window sums, one output row
    scalar_t* acc_b = sums + s.ow;  // per-column partials of grad bias
    scalar_t* acc_w = acc_b + s.ow; // ... and of grad weight (times area)
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t c = idx % s.c;
      const scalar_t scale = w[c] * inv_area;
      const scalar_t* gyp = gy + idx * plane_out;
      const scalar_t* yp = y + idx * plane_out;
      const scalar_t* xp = x + idx * plane_in;
      scalar_t* gxp = gx ? gx + idx * plane_in : nullptr;
      std::fill(acc_b, acc_b + 2 * s.ow, scalar_t(0));
      if (gxp && !fast) std::fill(gxp, gxp + plane_in, scalar_t(0));
      for (int64_t oh = 0; oh < s.oh; ++oh) {
        const scalar_t* gyr = gyp + oh * s.ow;
        const scalar_t* yr = yp + oh * s.ow;
        for (int64_t j = 0; j < s.ow; ++j) {
          g[j] = gyr[j] * activation_grad_from_output<scalar_t>(Act::value, yr[j]);
          acc_b[j] += g[j];
        }
        if (pw) {
          window_sums(s, xp, oh, tmp, sums);
          for (int64_t j = 0; j < s.ow; ++j) acc_w[j] += g[j] * sums[j];
        }
        if (!gxp) continue;
        if (fast) {  // each input element in at most one window: plain stores
          scalar_t* r0 = gxp + 2 * oh * s.w;
          for (int64_t j = 0; j < s.ow; ++j) r0[2 * j] = r0[2 * j + 1] = g[j] * scale;
          std::fill(r0 + 2 * s.ow, r0 + s.w, scalar_t(0));  // an odd width's last column
          std::copy(r0, r0 + s.w, r0 + s.w);
        } else {  // windows may overlap: spread over a row, then add it to kh rows
          std::fill(tmp, tmp + used, scalar_t(0));
          for (int64_t j = 0; j < s.ow; ++j) {
            const scalar_t v = g[j] * scale;
            for (int64_t kw = 0; kw < s.kw; ++kw) tmp[j * s.sw + kw] += v;
          }
          for (int64_t kh = 0; kh < s.kh; ++kh) {
            scalar_t* r = gxp + (oh * s.sh + kh) * s.w;
            for (int64_t j = 0; j < used; ++j) r[j] += tmp[j];
          }
        }
      }
      if (gxp && fast) std::fill(gxp + 2 * s.oh * s.w, gxp + plane_in, scalar_t(0));
      scalar_t sum_b = 0, sum_w = 0;
      for (int64_t j = 0; j < s.ow; ++j) {
        sum_b += acc_b[j];
        sum_w += acc_w[j];
      }
      if (pb) pb[idx] = sum_b;
      if (pw) pw[idx] = sum_w * inv_area;
    }
  });
}

// out[c] = sum over n of partial[n, c], in order of n.
template <typename scalar_t>
void sum_over_batch(const AvgSubsampleShape& s, const scalar_t* partial, scalar_t* out) {
  for (int64_t c = 0; c < s.c; ++c) out[c] = 0;
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t c = 0; c < s.c; ++c) out[c] += partial[n * s.c + c];
}

at::Tensor avg_subsample_cpu(const at::Tensor& input, const at::Tensor& weight,
                             const at::Tensor& bias, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, c10::string_view activation) {
  const AvgSubsampleShape s = check_avg_subsample(input, weight, bias, kernel_size, stride);
  const Activation act = parse_activation(activation);
  const at::Tensor x = input.contiguous(), w = weight.contiguous(), b = bias.contiguous();
  at::Tensor y = at::empty({s.n, s.c, s.oh, s.ow}, input.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "avg_subsample_cpu", [&] {
    with_activation(act, [&](auto a) {
      forward_kernel<scalar_t>(s, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                               b.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), a);
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> avg_subsample_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const AvgSubsampleShape s =
      check_avg_subsample_backward(grad_output, output, input, weight, kernel_size, stride);
  const Activation act = parse_activation(activation);
  const auto opts = input.options();
  at::Tensor gx = output_mask[0] ? at::empty({s.n, s.c, s.h, s.w}, opts) : at::empty({0}, opts);
  at::Tensor gw = output_mask[1] ? at::empty({s.c}, opts) : at::empty({0}, opts);
  at::Tensor gb = output_mask[2] ? at::empty({s.c}, opts) : at::empty({0}, opts);
  if (s.n == 0 || s.c == 0) {  // nothing flows back; reductions over an empty batch are zero
    if (output_mask[1]) gw.zero_();
    if (output_mask[2]) gb.zero_();
    return {gx, gw, gb};
  }
  const at::Tensor gy = grad_output.contiguous(), y = output.contiguous(), w = weight.contiguous();
  // The input is read only for grad weight's window sums.
  const at::Tensor x = output_mask[1] ? input.contiguous() : at::Tensor();
  at::Tensor pw = output_mask[1] ? at::empty({s.n, s.c}, opts) : at::Tensor();
  at::Tensor pb = output_mask[2] ? at::empty({s.n, s.c}, opts) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "avg_subsample_backward_cpu", [&] {
    with_activation(act, [&](auto a) {
      backward_kernel<scalar_t>(
          s, gy.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
          output_mask[1] ? x.const_data_ptr<scalar_t>() : nullptr, w.const_data_ptr<scalar_t>(),
          output_mask[0] ? gx.mutable_data_ptr<scalar_t>() : nullptr,
          output_mask[1] ? pw.mutable_data_ptr<scalar_t>() : nullptr,
          output_mask[2] ? pb.mutable_data_ptr<scalar_t>() : nullptr, a);
    });
    if (output_mask[1])
      sum_over_batch<scalar_t>(s, pw.const_data_ptr<scalar_t>(), gw.mutable_data_ptr<scalar_t>());
    if (output_mask[2])
      sum_over_batch<scalar_t>(s, pb.const_data_ptr<scalar_t>(), gb.mutable_data_ptr<scalar_t>());
  });
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(lenetalex, CPU, m) {
  m.impl("avg_subsample", &avg_subsample_cpu);
  m.impl("avg_subsample_backward", &avg_subsample_backward_cpu);
}

}  // namespace lenetalex
