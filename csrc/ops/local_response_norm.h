// local_response_norm: y = x * s^-beta, s = k + (alpha / size) * sum of x^2 over
// a window of channels, with F.local_response_norm's alignment: channel c sees
// [c - size/2, c + (size-1)/2], zero-padded. Shapes, checks and coefficients
// shared by the CPU and CUDA kernels (the schema lives in
// local_response_norm.cpp); the CUDA kernels' per-column walk is in
// cuda/local_response_norm_column.cuh.
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
// The fixed-window code for sizes 3 and 5 (the CUDA kernels and the CPU's)
// sums each window directly instead, in the accumulation type: no sliding,
// so no restarts and no double sums.
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

// Slots a backward column's ring needs: t of channels [j - after - 1, j + before]
// are live at once (size + 1 of them), and never more than the C channels.
inline int64_t lrn_ring_slots(const LrnShape& s) { return s.size < s.c - 1 ? s.size + 1 : s.c; }

}  // namespace lenetalex
