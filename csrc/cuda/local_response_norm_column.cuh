// local_response_norm on CUDA: the general per-column walk (any window size,
// 64-bit indices), which each thread of the general kernels in
// local_response_norm_cuda.cu runs; moved here from ops/local_response_norm.h,
// as only the CUDA kernels use it. Sliding window sums in double, restarted
// every lrn_period() channels and where a dropped term would leave its
// rounding behind (see ops/local_response_norm.h for the math and why).
#pragma once

#include <c10/macros/Macros.h>

#include <math.h>

#include "ops/local_response_norm.h"

namespace lenetalex {

// s^-beta for the CUDA kernels (and a host check of them): library sqrt/exp2/log2,
// correctly rounded or within 1-2 ulp on the device. s == 0 gives inf (then
// x * inf = nan for x == 0, as x / 0^beta in the reference); beta == 0 gives 1;
// s < 0 the sign of lrn_negative_sign (beta 0.75: nan, as sqrt gives).
C10_HOST_DEVICE inline float lrn_inv_pow(float s, const LrnCoef<float>& p) {
  if (p.beta_075) {
    const float r = sqrtf(s);
    return 1.0f / (r * sqrtf(r));
  }
  const float m = exp2f(p.neg_beta * log2f(fabsf(s)));
  return p.neg_beta == 0.0f ? 1.0f : s < 0.0f ? p.neg_sign * m : m;
}
C10_HOST_DEVICE inline double lrn_inv_pow(double s, const LrnCoef<double>& p) {
  if (p.beta_075) {
    const double r = ::sqrt(s);
    return 1.0 / (r * ::sqrt(r));
  }
  const double m = ::exp2(p.neg_beta * ::log2(::fabs(s)));
  return p.neg_beta == 0.0 ? 1.0 : s < 0.0 ? p.neg_sign * m : m;
}

C10_HOST_DEVICE inline int64_t lrn_max(int64_t a, int64_t b) { return a > b ? a : b; }
C10_HOST_DEVICE inline int64_t lrn_min(int64_t a, int64_t b) { return a < b ? a : b; }

// x[c * stride] as a double (for the window sums).
template <typename scalar_t>
C10_HOST_DEVICE inline double lrn_square(const scalar_t* x, int64_t stride, int64_t c) {
  const double v = static_cast<double>(static_cast<float>(x[c * stride]));
  return v * v;
}
C10_HOST_DEVICE inline double lrn_square(const double* x, int64_t stride, int64_t c) {
  return x[c * stride] * x[c * stride];
}

// An inf or nan that entered a sliding sum stays after it left the window
// (inf - inf is nan): a sum that is not finite restarts at the next step, so
// it spoils only the windows that hold the inf or nan, as in the reference.
C10_HOST_DEVICE inline bool lrn_nonfinite(double v) { return !(v - v == 0.0); }

// Sum of x^2 over channels [lo, hi) of one column (clamped to [0, C)).
template <typename scalar_t>
C10_HOST_DEVICE inline double lrn_sum_sq(const scalar_t* x, int64_t stride, int64_t C, int64_t lo,
                                         int64_t hi) {
  double sum = 0;
  for (int64_t q = lrn_max(lo, 0); q < lrn_min(hi, C); ++q) sum += lrn_square(x, stride, q);
  return sum;
}

// Forward of one column (one n, one position; channel c at x[c * stride]) over
// output channels [c0, c1): one sliding window of x^2 along the channels.
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE void lrn_forward_column(const scalar_t* x, scalar_t* y, int64_t stride,
                                        const LrnShape& s, int64_t c0, int64_t c1,
                                        const LrnCoef<acc_t>& p) {
  const int64_t period = lrn_period(s.size);
  double sum = 0;
  bool restart = true;
  for (int64_t c = c0; c < c1; ++c) {
    // The sum holds [c - before, c + after - 1]; the next line adds c + after.
    if (restart || c % period == 0) sum = lrn_sum_sq(x, stride, s.c, c - s.before, c + s.after);
    if (c + s.after < s.c) sum += lrn_square(x, stride, c + s.after);
    const acc_t sc = static_cast<acc_t>(p.k + p.alpha_n * sum);
    const acc_t xc = static_cast<acc_t>(x[c * stride]);
    y[c * stride] = static_cast<scalar_t>(xc * lrn_inv_pow(sc, p));
    const double drop = c - s.before >= 0 ? lrn_square(x, stride, c - s.before) : 0.0;
    sum -= drop;
    restart = lrn_nonfinite(sum) || lrn_drop_cancels(drop, sum, p.alpha_n, p.k);
  }
}

// Backward of one column over dx channels [j0, j1). t and dy * p of channel c go
// to ring slot c % R (ring_t[slot * ring_stride], ring_p likewise; R from
// lrn_ring_slots) so the window sum of t can drop what leaves it. dx_j is
// written once t of the last channel of W'(j) is known, before channels later.
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE void lrn_backward_column(const scalar_t* gy, const scalar_t* x, scalar_t* gx,
                                         int64_t stride, const LrnShape& s, int64_t j0,
                                         int64_t j1, const LrnCoef<acc_t>& p, acc_t* ring_t,
                                         acc_t* ring_p, int64_t R, int64_t ring_stride) {
  const int64_t period = lrn_period(s.size);
  // Channels whose t some dx_j, j in [j0, j1), needs.
  const int64_t cs = lrn_max(j0 - s.after, 0), ce = lrn_min(j1 - 1 + s.before, s.c - 1);
  double ssum = 0;  // sum of x^2 over c's window, sliding
  double tsum = 0;  // sum of t over W'(j), sliding
  bool restart_s = true, restart_t = false;
  // Emits dx_j; on entry tsum holds t over [max(j - after - 1, cs), min(j + before, C - 1)].
  auto emit = [&](int64_t j) {
    auto fresh = [&] {
      tsum = 0;
      for (int64_t q = lrn_max(j - s.after, 0); q <= lrn_min(j + s.before, s.c - 1); ++q)
        tsum += static_cast<double>(ring_t[(q % R) * ring_stride]);
    };
    if (restart_t || (j != j0 && j % period == 0)) {
      fresh();
    } else if (j - s.after - 1 >= cs) {
      const double drop = static_cast<double>(ring_t[((j - s.after - 1) % R) * ring_stride]);
      tsum -= drop;
      if (lrn_cancelled(drop, tsum)) fresh();  // its rounding would show in dx_j
    }
    restart_t = lrn_nonfinite(tsum);
    const acc_t xj = static_cast<acc_t>(x[j * stride]);
    gx[j * stride] = static_cast<scalar_t>(ring_p[(j % R) * ring_stride] -
                                           p.grad * xj * static_cast<acc_t>(tsum));
  };
  for (int64_t c = cs; c <= ce; ++c) {
    if (restart_s || c % period == 0) ssum = lrn_sum_sq(x, stride, s.c, c - s.before, c + s.after);
    if (c + s.after < s.c) ssum += lrn_square(x, stride, c + s.after);
    const acc_t sc = static_cast<acc_t>(p.k + p.alpha_n * ssum);
    const acc_t dyp = static_cast<acc_t>(gy[c * stride]) * lrn_inv_pow(sc, p);
    const acc_t t = dyp * static_cast<acc_t>(x[c * stride]) / sc;
    ring_t[(c % R) * ring_stride] = t;
    ring_p[(c % R) * ring_stride] = dyp;
    tsum += static_cast<double>(t);
    const double drop = c - s.before >= 0 ? lrn_square(x, stride, c - s.before) : 0.0;
    ssum -= drop;
    restart_s = lrn_nonfinite(ssum) || lrn_drop_cancels(drop, ssum, p.alpha_n, p.k);
    if (c - s.before >= j0) emit(c - s.before);  // W'(c - before) ends at c
  }
  // dx_j whose W'(j) is cut by the last channel.
  for (int64_t j = lrn_max(ce - s.before + 1, j0); j < j1; ++j) emit(j);
}

}  // namespace lenetalex
