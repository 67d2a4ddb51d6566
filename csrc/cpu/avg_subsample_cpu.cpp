// avg_subsample on the CPU: forward and backward.
//
// One (image, channel) plane per task, walked one output row at a time: each
// row of window sums (the window's rows added first, contiguously, then its
// columns) is scaled by weight[c] / area and shifted by bias[c] (if any) as it is
// stored; a group of planes is then activated in one long loop while it is in
// cache. 2x2 windows at stride 2 (LeNet's S2 and S4) take a path without the
// scratch row.
//
// The backward makes one pass too: per output row, one loop forms the grad of
// the pre-activation from the saved output, spreads it over the windows (grad
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
#include "common/grads.h"
#include "cpu/huge_pages.h"
#include "cpu/isa.h"
#include "ops/avg_subsample.h"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace {

// Calls f with two flags as compile-time constants (which grads to compute).
template <typename F>
void with_flags(bool a, bool b, F&& f) {
  using T = std::true_type;
  using N = std::false_type;
  if (a) {
    if (b) return f(T{}, T{});
    return f(T{}, N{});
  }
  if (b) return f(N{}, T{});
  return f(N{}, N{});
}

inline bool is_2x2_stride_2(const AvgSubsampleShape& s) {
  return s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2;
}

// Planes per task: enough work to be worth a thread.
inline int64_t grain(const AvgSubsampleShape& s) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, s.h * s.w));
}

// The row kernels below each make one output row in one loop, with distinct
// (__restrict__) pointers, so gcc vectorizes them without runtime alias checks.

// tmp[0, used) = the sum of kh input rows starting at r0.
template <typename T>
inline void column_sums(const T* __restrict__ r0, int64_t width, int64_t kh, int64_t used,
                        T* __restrict__ tmp) {
  for (int64_t j = 0; j < used; ++j) tmp[j] = r0[j];
  for (int64_t a = 1; a < kh; ++a) {
    const T* __restrict__ r = r0 + a * width;
    for (int64_t j = 0; j < used; ++j) tmp[j] += r[j];
  }
}

// The window sum of output column j from column sums.
template <typename T>
inline T window_sum(const T* __restrict__ tmp, int64_t j, int64_t sw, int64_t kw) {
  const T* t = tmp + j * sw;
  T acc = t[0];
  for (int64_t b = 1; b < kw; ++b) acc += t[b];
  return acc;
}

// The forward first writes pre-activations, row by row, for a group of
// planes, then activates the group in one long loop: LeNet's output rows are
// short (5 or 14 elements), too short for the vectorized tanh alone.
constexpr int64_t kGroupElements = 2048;

template <typename T>
inline void forward_row_2x2(const T* __restrict__ r0, const T* __restrict__ r1,
                            T* __restrict__ out, int64_t ow, T scale, T shift) {
  for (int64_t j = 0; j < ow; ++j)
    out[j] = scale * ((r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1])) + shift;
}

template <typename T>
inline void forward_row(const T* __restrict__ tmp, T* __restrict__ out, int64_t ow, int64_t sw,
                        int64_t kw, T scale, T shift) {
  for (int64_t j = 0; j < ow; ++j) out[j] = scale * window_sum(tmp, j, sw, kw) + shift;
}

template <typename T, typename Act>
inline void activate(T* __restrict__ p, int64_t n) {
  if (Act::value == Activation::Identity) return;
  for (int64_t i = 0; i < n; ++i) p[i] = activation_forward<T>(Act::value, p[i]);
}

template <typename scalar_t, typename Act>
void forward_kernel(const AvgSubsampleShape& s, const scalar_t* x, const scalar_t* w,
                    const scalar_t* b, scalar_t* y, Act) {
  const int64_t plane_in = s.h * s.w, plane_out = s.oh * s.ow;
  const int64_t used = (s.ow - 1) * s.sw + s.kw;  // columns some window covers
  const scalar_t inv_area = scalar_t(1) / scalar_t(s.kh * s.kw);
  const bool fast = is_2x2_stride_2(s);
  const int64_t group = std::max<int64_t>(1, kGroupElements / plane_out);
  at::parallel_for(0, s.n * s.c, grain(s), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> tmp(s.w);
    for (int64_t first = begin; first < end; first += group) {
      const int64_t last = std::min(end, first + group);
      for (int64_t idx = first; idx < last; ++idx) {
        const int64_t c = idx % s.c;
        const scalar_t scale = w[c] * inv_area, shift = b ? b[c] : scalar_t(0);
        const scalar_t* in = x + idx * plane_in;
        scalar_t* out = y + idx * plane_out;
        for (int64_t oh = 0; oh < s.oh; ++oh) {
          const scalar_t* r0 = in + oh * s.sh * s.w;
          if (fast) {
            forward_row_2x2(r0, r0 + s.w, out + oh * s.ow, s.ow, scale, shift);
          } else {
            column_sums(r0, s.w, s.kh, used, tmp.data());
            forward_row(tmp.data(), out + oh * s.ow, s.ow, s.sw, s.kw, scale, shift);
          }
        }
      }
      activate<scalar_t, Act>(y + first * plane_out, (last - first) * plane_out);
    }
  });
}

// One output row of the 2x2 backward: g = gy * act'(y); grad input rows gx0,
// gx1 get g * scale in each window's four places; acc_b, acc_w gather the
// per-column sums of g and of g * (window sum).
template <bool NeedX, bool NeedW, typename T, typename Act>
inline void backward_row_2x2(const T* __restrict__ gy, const T* __restrict__ y,
                             const T* __restrict__ x0, const T* __restrict__ x1,
                             T* __restrict__ gx0, T* __restrict__ gx1, T* __restrict__ acc_b,
                             T* __restrict__ acc_w, int64_t ow, T scale) {
  for (int64_t j = 0; j < ow; ++j) {
    const T g = gy[j] * activation_grad_from_output<T>(Act::value, y[j]);
    acc_b[j] += g;
    if (NeedW) acc_w[j] += g * ((x0[2 * j] + x0[2 * j + 1]) + (x1[2 * j] + x1[2 * j + 1]));
    if (NeedX) {
      const T v = g * scale;
      gx0[2 * j] = v;
      gx0[2 * j + 1] = v;
      gx1[2 * j] = v;
      gx1[2 * j + 1] = v;
    }
  }
}

// The same for any window and stride; gx0 (the row under the windows' top
// edge) must be zeroed beforehand, as windows may overlap. tmp: s.w scratch,
// g: s.ow scratch.
template <bool NeedX, bool NeedW, typename T, typename Act>
inline void backward_row(const AvgSubsampleShape& s, int64_t used, const T* __restrict__ gy,
                         const T* __restrict__ y, const T* __restrict__ x0, T* __restrict__ gx0,
                         T* __restrict__ tmp, T* __restrict__ g, T* __restrict__ acc_b,
                         T* __restrict__ acc_w, T scale) {
  for (int64_t j = 0; j < s.ow; ++j) {
    g[j] = gy[j] * activation_grad_from_output<T>(Act::value, y[j]);
    acc_b[j] += g[j];
  }
  if (NeedW) {
    column_sums(x0, s.w, s.kh, used, tmp);
    for (int64_t j = 0; j < s.ow; ++j) acc_w[j] += g[j] * window_sum(tmp, j, s.sw, s.kw);
  }
  if (NeedX) {  // spread over one row, then add that row to the kh rows below
    for (int64_t j = 0; j < used; ++j) tmp[j] = T(0);
    for (int64_t j = 0; j < s.ow; ++j) {
      const T v = g[j] * scale;
      for (int64_t b = 0; b < s.kw; ++b) tmp[j * s.sw + b] += v;
    }
    for (int64_t a = 0; a < s.kh; ++a) {
      T* __restrict__ r = gx0 + a * s.w;
      for (int64_t j = 0; j < used; ++j) r[j] += tmp[j];
    }
  }
}

// gx: grad input (or null); pw, pb: per-(n, c) partial sums for grad weight and
// grad bias (or null). x is read only when pw is asked for.
template <bool NeedX, bool NeedW, typename scalar_t, typename Act>
void backward_kernel(const AvgSubsampleShape& s, const scalar_t* gy, const scalar_t* y,
                     const scalar_t* x, const scalar_t* w, scalar_t* gx, scalar_t* pw,
                     scalar_t* pb) {
  const int64_t plane_in = s.h * s.w, plane_out = s.oh * s.ow;
  const int64_t used = (s.ow - 1) * s.sw + s.kw;  // columns some window covers
  const scalar_t inv_area = scalar_t(1) / scalar_t(s.kh * s.kw);
  const bool fast = is_2x2_stride_2(s);
  at::parallel_for(0, s.n * s.c, grain(s), [&](int64_t begin, int64_t end) {
    // Scratch: a row of the input's width, then three rows of the output's.
    std::vector<scalar_t> buf(s.w + 3 * s.ow);
    scalar_t* tmp = buf.data();
    scalar_t* g = tmp + s.w;         // grad of the pre-activation, one output row
    scalar_t* acc_b = g + s.ow;      // per-column partials of grad bias
    scalar_t* acc_w = acc_b + s.ow;  // ... and of grad weight (times area)
    for (int64_t idx = begin; idx < end; ++idx) {
      const scalar_t scale = w[idx % s.c] * inv_area;
      const scalar_t* gyp = gy + idx * plane_out;
      const scalar_t* yp = y + idx * plane_out;
      const scalar_t* xp = NeedW ? x + idx * plane_in : nullptr;
      scalar_t* gxp = NeedX ? gx + idx * plane_in : nullptr;
      std::fill(acc_b, acc_b + 2 * s.ow, scalar_t(0));
      if (NeedX && !fast) std::fill(gxp, gxp + plane_in, scalar_t(0));
      for (int64_t oh = 0; oh < s.oh; ++oh) {
        const int64_t top = oh * s.sh * s.w;  // offset of the windows' first row
        if (fast) {
          backward_row_2x2<NeedX, NeedW, scalar_t, Act>(
              gyp + oh * s.ow, yp + oh * s.ow, NeedW ? xp + top : nullptr,
              NeedW ? xp + top + s.w : nullptr, NeedX ? gxp + top : nullptr,
              NeedX ? gxp + top + s.w : nullptr, acc_b, acc_w, s.ow, scale);
          if (NeedX && s.w > 2 * s.ow) {  // an odd width's last column
            gxp[top + s.w - 1] = 0;
            gxp[top + 2 * s.w - 1] = 0;
          }
        } else {
          backward_row<NeedX, NeedW, scalar_t, Act>(
              s, used, gyp + oh * s.ow, yp + oh * s.ow, NeedW ? xp + top : nullptr,
              NeedX ? gxp + top : nullptr, tmp, g, acc_b, acc_w, scale);
        }
      }
      if (NeedX && fast) std::fill(gxp + 2 * s.oh * s.w, gxp + plane_in, scalar_t(0));
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
                             const c10::optional<at::Tensor>& bias, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, c10::string_view activation) {
  const AvgSubsampleShape s =
      check_avg_subsample(input, weight, bias, kernel_size, stride, Backend::Cpu);
  const Activation act = parse_activation(activation);
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  at::Tensor y = at::empty({s.n, s.c, s.oh, s.ow}, input.options());
  advise_huge_pages(y);
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "avg_subsample_cpu", [&] {
    with_activation(act, [&](auto a) {
      forward_kernel<scalar_t>(s, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                               has_bias ? b.const_data_ptr<scalar_t>() : nullptr,
                               y.mutable_data_ptr<scalar_t>(), a);
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> avg_subsample_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const AvgSubsampleShape s =
      check_avg_subsample_backward(grad_output, output, input, weight, kernel_size, stride,
                                   Backend::Cpu);
  const Activation act = parse_activation(activation);
  const auto opts = input.options();
  at::Tensor gx = grad_or_empty(output_mask[0], {s.n, s.c, s.h, s.w}, opts);
  at::Tensor gw = grad_or_empty(output_mask[1], {s.c}, opts);
  at::Tensor gb = grad_or_empty(output_mask[2], {s.c}, opts);
  advise_huge_pages(gx);
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
      with_flags(output_mask[0], output_mask[1], [&](auto need_x, auto need_w) {
        backward_kernel<decltype(need_x)::value, decltype(need_w)::value, scalar_t,
                        decltype(a)>(
            s, gy.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
            output_mask[1] ? x.const_data_ptr<scalar_t>() : nullptr,
            w.const_data_ptr<scalar_t>(),
            output_mask[0] ? gx.mutable_data_ptr<scalar_t>() : nullptr,
            output_mask[1] ? pw.mutable_data_ptr<scalar_t>() : nullptr,
            output_mask[2] ? pb.mutable_data_ptr<scalar_t>() : nullptr);
      });
    });
    if (output_mask[1])
      sum_over_batch<scalar_t>(s, pw.const_data_ptr<scalar_t>(), gw.mutable_data_ptr<scalar_t>());
    if (output_mask[2])
      sum_over_batch<scalar_t>(s, pb.const_data_ptr<scalar_t>(), gb.mutable_data_ptr<scalar_t>());
  });
  return {gx, gw, gb};
}

}  // namespace

// Every ISA variant fills its table; the baseline registers the one CPU
// kernel per op, which calls the active variant (cpu/isa.h).
LENETALEX_CPU_KERNEL(avg_subsample, avg_subsample_cpu)
LENETALEX_CPU_KERNEL(avg_subsample_backward, avg_subsample_backward_cpu)

}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
