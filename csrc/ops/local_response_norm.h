// local_response_norm: y = x * s^-beta, s = k + (alpha / size) * sum of x^2 over
// a window of channels, with F.local_response_norm's alignment: channel c sees
// [c - size/2, c + (size-1)/2], zero-padded. Shapes and checks shared by the CPU
// and CUDA kernels (the schema lives in local_response_norm.cpp), and the
// per-column walk the CUDA kernels run in each thread.
//
// Backward (dx for dy), with p = s^-beta and t = dy * x * p / s:
//   dx_j = dy_j * p_j - (2 * alpha * beta / size) * x_j * sum_{c in W'(j)} t_c
// where W'(j) = [j - (size-1)/2, j + size/2] is the transposed window (c's window
// holds j exactly when W'(j) holds c; for even sizes the two alignments differ).
//
// Both directions slide their window sums along the channels (add what enters,
// drop what leaves) and restart them from a direct sum every lrn_period()
// channels, so rounding cannot drift over many channels. The window sums are
// double for every dtype: the square of a float (or half) is exact in double,
// so dropping a large square leaves no rounding of it behind, which a float
// sum would (visible when the squares that stay are much smaller). Everything
// else is computed in the op's accumulation type (float; double for float64).
#pragma once

#include <ATen/core/Tensor.h>

#include "common/checks.h"
#include <c10/macros/Macros.h>

#include <math.h>

namespace lenetalex {

// The input viewed as (N, C, L), L the product of the sizes after C.
struct LrnShape {
  int64_t n, c, l;
  int64_t size;
  int64_t before, after;  // channel c's window: [c - before, c + after]
};

// Checks the forward's arguments (rank >= 3, floating dtype, size >= 1) and
// returns the geometry. Raises with the argument's name.
LrnShape check_local_response_norm(const at::Tensor& input, int64_t size, Backend backend);

// The backward's arguments: the forward's plus grad_output of input's shape.
LrnShape check_local_response_norm_backward(const at::Tensor& grad_output,
                                            const at::Tensor& input, int64_t size, Backend backend);

// Window sums restart from scratch every lrn_period(size) channels: a sliding
// sum never runs longer than that, and a restart (a direct sum over one window,
// < size terms) costs less than one extra term per channel.
constexpr int64_t kLrnRestart = 32;
C10_HOST_DEVICE inline int64_t lrn_period(int64_t size) {
  return size > kLrnRestart ? size : kLrnRestart;
}

// The coefficients: s = k + alpha_n * (window sum) in double, then s is
// rounded to the accumulation type acc_t (float, or double for float64).
template <typename acc_t>
struct LrnCoef {
  double alpha_n;  // alpha / size
  double k;
  acc_t neg_beta;  // -beta
  acc_t grad;      // 2 * alpha * beta / size
  bool beta_075;   // beta == 0.75: a cheaper exact-enough s^-0.75
  acc_t neg_sign;  // s^-beta / |s|^-beta for s < 0: see lrn_negative_sign
};

// s < 0 (k or alpha negative) has a real power only for a whole beta, as in
// the reference's pow: s^-beta = (-1)^beta |s|^-beta, and nan otherwise.
inline double lrn_negative_sign(double beta) {
  const double r = ::fmod(beta, 2.0);  // exact; nan for an infinite beta
  return r == 0.0 ? 1.0 : (r == 1.0 || r == -1.0) ? -1.0 : NAN;
}

template <typename acc_t>
LrnCoef<acc_t> lrn_coef(int64_t size, double alpha, double beta, double k) {
  return {alpha / size, k, acc_t(-beta), acc_t(2.0 * alpha * beta / size), beta == 0.75,
          acc_t(lrn_negative_sign(beta))};
}

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

// A sliding sum that drops a term far larger than what it feeds keeps that
// term's rounding error (~eps * term; more where the compiler fuses the
// square into the subtraction): one value of 1e15 among ones left channels
// after it off by 1e9-fold. Restarted from a direct sum when the dropped term
// exceeds kLrnCancel times the quantity the sum feeds (s = k + alpha_n * sum,
// or the t sum itself), the error stays within ~kLrnCancel * eps of it. Data
// of ordinary range never comes near this.
constexpr double kLrnCancel = 65536.0;
C10_HOST_DEVICE inline bool lrn_cancelled(double dropped, double fed) {
  return ::fabs(dropped) > kLrnCancel * ::fabs(fed);
}
// The window sum of squares: dropping the square `drop` left `sum`, which
// feeds s = k + alpha_n * sum.
C10_HOST_DEVICE inline bool lrn_drop_cancels(double drop, double sum, double alpha_n, double k) {
  return lrn_cancelled(alpha_n * drop, k + alpha_n * sum);
}

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

// Slots a backward column's ring needs: t of channels [j - after - 1, j + before]
// are live at once (size + 1 of them), and never more than the C channels.
inline int64_t lrn_ring_slots(const LrnShape& s) { return s.size < s.c - 1 ? s.size + 1 : s.c; }

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
