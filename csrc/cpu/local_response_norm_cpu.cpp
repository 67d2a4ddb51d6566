// local_response_norm on the CPU: forward and backward.
//
// One task is one image n and one block of up to kMaxBlock contiguous positions
// (the input viewed as (N, C, L)). The task walks the channels once, keeping
// the window sum of x^2 for every position of the block in a small buffer: the
// channel loop is outside, the loop over the block's contiguous positions inside,
// so the compiler vectorizes every step. Each step adds the square that enters
// the window and drops the one that leaves it (read a few steps earlier, so
// from cache), and the sums restart from a direct sum every lrn_period()
// channels and after an inf or nan has entered them.
//
// The backward does the same walk for s, p = s^-beta and t = dy * x * p / s,
// keeps t and dy * p of the last size + 1 channels in a ring, and slides a
// second window sum over t (the transposed window) to write dx a few channels
// behind. It needs only input and grad_output: nothing else is saved.
//
// Window sizes 3 and 5 (AlexNet's is 5) take fixed-window code instead
// (fixed_forward_task, fixed_backward_task): S a template parameter, each
// window summed directly from its S rows in the op's type (float for
// float32), as the CUDA fixed-window kernels do; the backward keeps t and
// dy * p of the last S channels in its ring and sums the S t's of dx's window
// directly too. A direct sum of S terms has no drift (its error is within S
// roundings of the sum of their magnitudes; for the squares, of the sum), so
// it needs neither restarts nor double sums nor cancellation checks, and an
// inf or nan spoils only the windows that hold it, as in the reference. Where
// float's range is the limit the double sums are kept: a row whose float sum
// of squares overflowed (|x| past ~1.8e19) is done again with double sums,
// and calls where the squares' underflow could show in s (k small next to
// alpha / size, or s could cancel: fixed_window_exact) take the sliding walk,
// which serves every other size (its cost per channel does not grow with the
// window). On the AVX2 EPYC (callgrind, bench/callgrind_ops.py's method,
// avx2 variant, one thread) AlexNet's lrn1 forward at batch 32 went from
// 85.1M instructions to 46.2M.
//
// s^-beta: gcc vectorizes neither std::pow nor (without -fno-math-errno)
// std::sqrt, so it is written here in plain arithmetic the compiler vectorizes:
// beta = 0.75 by an iteration for s^-1/4 (no sqrt, no division), any other beta as
// exp2(-beta * log2 s) with polynomial log2 and exp2.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/wide_vectors.h"
#include "cpu/huge_pages.h"
#include "cpu/isa.h"
#include "ops/local_response_norm.h"

// 512-bit vectors for the loops below where the variant has AVX-512.
LENETALEX_WIDE_VECTORS_BEGIN

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace {

// Positions per task: long contiguous rows stream well (2048 floats = 8 KB),
// while the backward's ring (2 (size + 1) rows) still sits in L2. Smaller
// blocks only when the batch alone gives the threads too little to share.
constexpr int64_t kMaxBlock = 2048;
constexpr int64_t kMinBlock = 64;

template <typename T>
struct Bits;
template <>
struct Bits<float> {
  using T = float;
  using I = int32_t;
  using U = uint32_t;
  static constexpr int kMant = 23, kBias = 127;
  static constexpr I kInvQuartMagic = 0x4f586666;  // s^-1/4 within 3.2% from the bits alone
  static constexpr int kRefine = 2;                 // 3.2% -> 2.5e-4 -> rounding
  static constexpr T kDenormScale = 0x1p24f;       // lifts a denormal s to a normal one
  static constexpr int kDenormExp = 24;
  static constexpr T kRound = 0x1.8p23f;           // (y + kRound) - kRound rounds y to an integer
  static constexpr T kExpLimit = 252.f;            // 2^n as 2^(n/2) * 2^(n - n/2): |n| <= 252
};
template <>
struct Bits<double> {
  using T = double;
  using I = int64_t;
  using U = uint64_t;
  static constexpr int kMant = 52, kBias = 1023;
  static constexpr I kInvQuartMagic = 0x4feb0ccccccccc00;
  static constexpr int kRefine = 3;  // 3.2% -> 2.5e-4 -> 1e-10 -> rounding
  static constexpr T kDenormScale = 0x1p56;
  static constexpr int kDenormExp = 56;
  static constexpr T kRound = 0x1.8p52;
  static constexpr T kExpLimit = 2044.;
};

template <typename T>
inline T pow2i(typename Bits<T>::I n) {  // 2^n for a normal exponent n
  using B = Bits<T>;
  return std::bit_cast<T>(static_cast<typename B::I>(n + B::kBias) << B::kMant);
}

// The selects below are chains of one comparison each on values computed
// unconditionally: with gcc's default -ftrapping-math, a compound condition or
// a conditionally computed operation stops if-conversion, and the loop stays
// scalar. Special inputs (0, denormal, inf, negative, nan) go through the same
// arithmetic on a harmless stand-in and are patched at the end.

// s as a normal number when s > 0: denormals scaled by 2^kDenormExp. Other
// specials go through unchanged, give garbage and are patched afterwards.
// (A longer chain of selects here lets gcc thread the comparisons into
// branches again.)
template <typename T>
inline T normal_stand_in(T s) {
  const T scaled = s * Bits<T>::kDenormScale;
  return s >= std::numeric_limits<T>::min() ? s : scaled;
}

// f(s) for finite s > 0, else the special value of s == 0, s == inf or nan
// (s < 0 or nan).
template <typename T>
inline T patch_special(T s, T f, T at_zero, T at_inf) {
  const T sp0 = s > T(0) ? at_inf : std::numeric_limits<T>::quiet_NaN();
  const T sp = s == T(0) ? at_zero : sp0;
  const T r = s > T(0) ? f : sp;
  return s <= std::numeric_limits<T>::max() ? r : sp;
}

// beta = 0.75 when s >= k > 0 is known normal (k >= the smallest normal T,
// alpha >= 0: with_pow checks; other cases take InvPowGeneral, which handles
// every special value). s^-1/4 from a guess read off the bits (within 3.2%),
// refined by the second-order step q <- q (1 - e/4 + 5 e^2 / 32),
// e = s q^4 - 1 (the series of (1 + e)^-1/4), written as a polynomial in
// w = s q^4: the error cubes each step. Then s^-0.75 = q^3 and s^-1 = q^4
// (max error 6e-7 in float, 1e-15 in double); no division, no library call.
// s = inf gives 0, nan stays nan.
template <typename T>
struct InvPow075 {
  static inline T inv_quarter_root(T s) {
    using B = Bits<T>;
    using U = typename B::U;
    T q = std::bit_cast<T>(static_cast<U>(U(B::kInvQuartMagic) - (std::bit_cast<U>(s) >> 2)));
    for (int i = 0; i < B::kRefine; ++i) {
      const T q2 = q * q;
      const T w = (s * q2) * q2;  // s q^2 first: no intermediate leaves the normal range
      q = q * (T(1.40625) + w * (T(-0.5625) + w * T(0.15625)));
    }
    return s == std::numeric_limits<T>::infinity() ? T(0) : q;  // inf: the guess is no guess
  }
  inline T operator()(T s) const {
    const T q = inv_quarter_root(s);
    return q * q * q;
  }
  // p = s^-beta and p / s.
  inline void pow_ratio(T s, T& p, T& p_over_s) const {
    const T q = inv_quarter_root(s), q2 = q * q;
    p = q2 * q;
    p_over_s = p * (q2 * q2);
  }
};

// log2 of s: s = 2^e * m, m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(z),
// z = (m - 1) / (m + 1), |z| < 0.172; the series in z^2 up to the terms that
// matter in T. 0 -> -inf, inf -> inf, negative and nan -> nan.
template <typename T>
inline T log2_poly(T s) {
  using B = Bits<T>;
  using I = typename B::I;
  using U = typename B::U;  // bit arithmetic unsigned: garbage in never overflows
  const T v = normal_stand_in(s);
  const U bits = std::bit_cast<U>(v);
  const U off = std::bit_cast<U>(T(0.70710678118654752440));
  const I e = static_cast<I>(bits - off) >> B::kMant;  // arithmetic shift: floor
  const T m = std::bit_cast<T>(static_cast<U>(bits - (static_cast<U>(e) << B::kMant)));
  const T z = (m - T(1)) / (m + T(1)), w = z * z;
  T series;
  if constexpr (sizeof(T) == 4) {
    series = T(1) + w * (T(1. / 3) + w * (T(1. / 5) + w * (T(1. / 7) + w * T(1. / 9))));
  } else {
    series = T(1. / 21);
    for (int d = 19; d >= 1; d -= 2) series = T(1. / d) + w * series;  // unrolled by -O3
  }
  const T ln_m = T(2) * z * series;
  const T lg = T(e) + ln_m * T(1.44269504088896340736);
  const T lg_denorm = lg - T(B::kDenormExp);
  const T lg_s = s >= std::numeric_limits<T>::min() ? lg : lg_denorm;
  return patch_special(s, lg_s, -std::numeric_limits<T>::infinity(),
                       std::numeric_limits<T>::infinity());
}

// 2^y: y = n + f, |f| <= 1/2; 2^f by its Taylor series in f ln 2 (error below
// T's rounding); 2^n as two normal powers of two, so results overflow to inf
// and underflow through the denormals as they should. nan stays nan.
template <typename T>
inline T exp2_poly(T y) {
  using B = Bits<T>;
  using I = typename B::I;
  const T y0 = y == y ? y : T(0);
  const T y1 = y0 < -B::kExpLimit ? -B::kExpLimit : y0;
  const T yc = y1 > B::kExpLimit ? B::kExpLimit : y1;
  const T nf = (yc + B::kRound) - B::kRound;
  const T r = (yc - nf) * T(0.69314718055994530942);
  constexpr int kDegree = sizeof(T) == 4 ? 7 : 13;
  T poly = T(1);
  for (int d = kDegree; d >= 1; --d) poly = T(1) + poly * (r * T(1.0 / d));  // 1 + r (1 + r/2 (1 + ...))
  const I n = static_cast<I>(nf);
  const I n1 = n >> 1;
  const T p = poly * pow2i<T>(n1) * pow2i<T>(n - n1);
  return y == y ? p : y;
}

template <typename T>
struct InvPowGeneral {
  T neg_beta;
  T neg_sign;  // for s < 0 (lrn_negative_sign)
  inline T operator()(T s) const {
    const T m = exp2_poly(neg_beta * log2_poly(std::abs(s)));
    const T p = s < T(0) ? neg_sign * m : m;
    return neg_beta == T(0) ? T(1) : p;  // s^0 = 1, even for s = 0 or inf
  }
  inline void pow_ratio(T s, T& p, T& p_over_s) const {
    p = (*this)(s);
    p_over_s = p / s;
  }
};

// Per-thread buffers of one task, rows of block positions. The window sums are
// double whatever T is. A float running sum that drops a large square keeps
// that square's rounding error, which shows in s once the squares left are
// much smaller (k small); a double sum of float squares (each exact in
// double) is off by ~eps64 * (its largest value since the last restart), far
// below float's resolution unless the window's sum falls ~10^7-fold within a
// restart period. (For float64 input the same bound holds in double.)
template <typename T>
struct Scratch {
  std::vector<double> sums;
  std::vector<T> buf;
  double *sum, *tsum;
  T *zeros, *ring_t, *ring_p;
  int64_t block;
  Scratch(int64_t ring_slots, int64_t block)
      : sums(2 * block, 0.0), buf((1 + 2 * ring_slots) * block, T(0)), block(block) {
    sum = sums.data();
    tsum = sum + block;
    zeros = buf.data();  // stands in for a channel outside [0, C): no branch in the loops
    ring_t = zeros + block;
    ring_p = ring_t + ring_slots * block;
  }
};

// The row loops: one channel step over the block's len contiguous positions.
// __restrict on function parameters (gcc ignores it on local pointers) lets
// the compiler vectorize without run-time overlap checks. in/out are the rows
// entering/leaving the window (the zero row outside [0, C)).

// sum += x^2 of one row.
template <typename T>
inline void add_squares(double* __restrict sum, const T* __restrict xq, int64_t len) {
  for (int64_t i = 0; i < len; ++i) sum[i] += double(xq[i]) * double(xq[i]);
}

// acc += row.
template <typename T>
inline void add_row(double* __restrict acc, const T* __restrict row, int64_t len) {
  for (int64_t i = 0; i < len; ++i) acc[i] += double(row[i]);
}

// Nonzero when v is inf or nan (v - v is +0 for every finite v). An inf or nan
// that entered a sliding sum stays in it after it left the window (inf - inf
// is nan); the rows report it, OR-ed over the row, and the task restarts that
// sum from a direct one at the next step, so it spoils only the windows that
// hold it, as in the reference. The rows report a drop that cancels most of a
// sum (lrn_cancelled) the same way.
inline uint64_t nonfinite_bits(double v) { return std::bit_cast<uint64_t>(v - v); }

template <typename T, typename Pow>
inline uint64_t forward_row(double* __restrict sum, const T* __restrict in,
                            const T* __restrict out, const T* __restrict xc, T* __restrict yc,
                            int64_t len, double alpha_n, double k, Pow pw) {
  uint64_t bad = 0;
  for (int64_t i = 0; i < len; ++i) {
    const double a = in[i], b = out[i];
    const double sm = sum[i] + a * a;
    yc[i] = xc[i] * pw(T(k + alpha_n * sm));
    const double drop = b * b;
    sum[i] = sm - drop;
    bad |= nonfinite_bits(sum[i]) | uint64_t(lrn_drop_cancels(drop, sum[i], alpha_n, k));
  }
  return bad;
}

// s, p = s^-beta, dy * p and t = dy * p * x / s of one channel; tsum += t.
template <typename T, typename Pow>
inline uint64_t backward_row(double* __restrict ssum, double* __restrict tsum,
                             const T* __restrict in, const T* __restrict out,
                             const T* __restrict xc, const T* __restrict gyc, T* __restrict tc,
                             T* __restrict pc, int64_t len, double alpha_n, double k, Pow pw) {
  uint64_t bad = 0;
  for (int64_t i = 0; i < len; ++i) {
    const double a = in[i], b = out[i];
    const double sm = ssum[i] + a * a;
    T p, p_over_s;
    pw.pow_ratio(T(k + alpha_n * sm), p, p_over_s);
    const T t = gyc[i] * xc[i] * p_over_s;
    tc[i] = t;
    pc[i] = gyc[i] * p;
    tsum[i] += double(t);
    const double drop = b * b;
    ssum[i] = sm - drop;
    bad |= nonfinite_bits(ssum[i]) | uint64_t(lrn_drop_cancels(drop, ssum[i], alpha_n, k));
  }
  return bad;
}

// tsum -= the t leaving W'(j); nonzero when that cancels most of a sum
// (lrn_cancelled): its rounding would show in dx_j, so the caller sums afresh.
template <typename T>
inline uint64_t drop_row(double* __restrict tsum, const T* __restrict leaving, int64_t len) {
  uint64_t bad = 0;
  for (int64_t i = 0; i < len; ++i) {
    const double drop = leaving[i];
    const double ts = tsum[i] - drop;
    tsum[i] = ts;
    bad |= uint64_t(lrn_cancelled(drop, ts));
  }
  return bad;
}

// dx_j = dy_j p_j - grad * x_j * (sum of t over W'(j)).
template <typename T>
inline uint64_t dx_row(const double* __restrict tsum, const T* __restrict pj,
                       const T* __restrict xj, T* __restrict gxj, int64_t len, T grad) {
  uint64_t bad = 0;
  for (int64_t i = 0; i < len; ++i) {
    gxj[i] = pj[i] - grad * xj[i] * T(tsum[i]);
    bad |= nonfinite_bits(tsum[i]);
  }
  return bad;
}

// sum = sum of x^2 over channels [lo, hi) ∩ [0, C) of the block.
template <typename T>
void direct_sum(double* sum, const T* x, const LrnShape& s, int64_t lo, int64_t hi, int64_t len) {
  std::fill(sum, sum + len, 0.0);
  for (int64_t q = std::max<int64_t>(lo, 0); q < std::min(hi, s.c); ++q)
    add_squares(sum, x + q * s.l, len);
}

// The fixed-window code (odd S: channel c's window and its transpose are
// both [c - S / 2, c + S / 2]). w[i] is the row of channel c - S / 2 + i, or
// the zero row outside [0, C); rows s.l apart from base.
template <int S, typename T>
inline void window_rows(const T* base, const LrnShape& s, int64_t c, const T* zeros,
                        const T* (&w)[S]) {
  for (int64_t i = 0; i < S; ++i) {
    const int64_t q = c - S / 2 + i;
    w[i] = q >= 0 && q < s.c ? base + q * s.l : zeros;
  }
}

// The window sum of squares at position i, in a fixed order (channel order),
// so every position, in a vector loop or its scalar tail, in any block,
// rounds the same way; and the same in double, for float32 rows whose float
// sum overflowed (|x| past ~1.8e19), with s rounded to T once as the sliding
// walk computes it. (Rows with an inf or nan input take it too, and get the
// same values again.)
template <int S, typename T>
inline T window_squares(const T* const (&w)[S], int64_t i) {
  T sum = w[0][i] * w[0][i];
  for (int j = 1; j < S; ++j) sum += w[j][i] * w[j][i];
  return sum;
}
template <int S, typename T>
inline double window_squares_double(const T* const (&w)[S], int64_t i) {
  double sum = 0;
  for (int j = 0; j < S; ++j) sum += double(w[j][i]) * double(w[j][i]);
  return sum;
}

// +0 for every finite v: the rows below OR it over a row to learn whether a
// float sum was inf or nan (an overflow, or an inf or nan among the inputs).
template <typename T>
inline typename Bits<T>::U nonfinite_bits_of(T v) {
  return std::bit_cast<typename Bits<T>::U>(v - v);
}

// The rows are only read and the outputs are fresh tensors or scratch rows
// no input row overlaps: ivdep spares the run-time overlap checks between
// them and the S rows that __restrict cannot express for an array.

// Channel c's y, w its window's rows (w[S / 2] is x_c). Nonzero when a sum
// was not finite.
template <int S, typename T, typename Pow>
inline uint64_t fixed_forward_row(const T* const (&w)[S], T* __restrict yc, int64_t len,
                                  T alpha_n, T k, Pow pw) {
  typename Bits<T>::U bad = 0;
#pragma GCC ivdep
  for (int64_t i = 0; i < len; ++i) {
    const T sum = window_squares<S>(w, i);
    yc[i] = w[S / 2][i] * pw(k + alpha_n * sum);
    bad |= nonfinite_bits_of(sum);
  }
  return bad;
}
template <int S, typename T, typename Pow>
void fixed_forward_row_double(const T* const (&w)[S], T* __restrict yc, int64_t len,
                              double alpha_n, double k, Pow pw) {
  for (int64_t i = 0; i < len; ++i)
    yc[i] = w[S / 2][i] * pw(T(k + alpha_n * window_squares_double<S>(w, i)));
}

// x, y at (n, channel 0, first position of the block); rows s.l apart.
template <int S, typename T, typename Pow>
C10_NOINLINE void fixed_forward_task(const LrnShape& s, const T* x, T* y, int64_t len,
                                     const LrnCoef<double>& cf, Pow pw, const T* zeros) {
  const T alpha_n = T(cf.alpha_n), k = T(cf.k);
  for (int64_t c = 0; c < s.c; ++c) {
    const T* w[S];
    window_rows<S>(x, s, c, zeros, w);
    const uint64_t bad = fixed_forward_row<S>(w, y + c * s.l, len, alpha_n, k, pw);
    if constexpr (sizeof(T) < sizeof(double))
      if (bad) fixed_forward_row_double<S>(w, y + c * s.l, len, cf.alpha_n, cf.k, pw);
  }
}

// The backward's first half for channel e: t = dy x p / s and dy p, as
// backward_row computes them, from e's window rows w. Nonzero when a sum was
// not finite.
template <int S, typename T, typename Pow>
inline uint64_t fixed_backward_row(const T* const (&w)[S], const T* __restrict gyc,
                                   T* __restrict tc, T* __restrict pc, int64_t len, T alpha_n,
                                   T k, Pow pw) {
  typename Bits<T>::U bad = 0;
#pragma GCC ivdep
  for (int64_t i = 0; i < len; ++i) {
    const T sum = window_squares<S>(w, i);
    T p, p_over_s;
    pw.pow_ratio(k + alpha_n * sum, p, p_over_s);
    tc[i] = gyc[i] * w[S / 2][i] * p_over_s;
    pc[i] = gyc[i] * p;
    bad |= nonfinite_bits_of(sum);
  }
  return bad;
}
template <int S, typename T, typename Pow>
void fixed_backward_row_double(const T* const (&w)[S], const T* __restrict gyc, T* __restrict tc,
                               T* __restrict pc, int64_t len, double alpha_n, double k, Pow pw) {
  for (int64_t i = 0; i < len; ++i) {
    T p, p_over_s;
    pw.pow_ratio(T(k + alpha_n * window_squares_double<S>(w, i)), p, p_over_s);
    tc[i] = gyc[i] * w[S / 2][i] * p_over_s;
    pc[i] = gyc[i] * p;
  }
}

// dx_j = dy_j p_j - grad * x_j * (the sum of t over j's window, rows tw),
// summed directly in T as the CUDA fixed-window kernels do: S terms, no
// sliding, so no drift and no restarts.
template <int S, typename T>
inline void fixed_dx_row(const T* const (&tw)[S], const T* __restrict pj, const T* __restrict xj,
                         T* __restrict gxj, int64_t len, T grad) {
#pragma GCC ivdep
  for (int64_t i = 0; i < len; ++i) {
    T ts = tw[0][i];
    for (int j = 1; j < S; ++j) ts += tw[j][i];
    gxj[i] = pj[i] - grad * xj[i] * ts;
  }
}

// Walks e over the channels: t and dy p of e into the ring (S slots: the t
// of [e - S + 1, e] are live), then dx of j = e - S / 2, whose window ends at e.
template <int S, typename T, typename Pow>
C10_NOINLINE void fixed_backward_task(const LrnShape& s, const T* gy, const T* x, T* gx,
                                      int64_t len, const LrnCoef<double>& cf, Pow pw,
                                      Scratch<T>& sc) {
  constexpr int64_t h = S / 2;
  const T alpha_n = T(cf.alpha_n), k = T(cf.k), grad = T(cf.grad);
  auto ring_t = [&](int64_t c) { return sc.ring_t + (c % S) * sc.block; };
  auto ring_p = [&](int64_t c) { return sc.ring_p + (c % S) * sc.block; };
  for (int64_t e = 0; e < s.c + h; ++e) {
    if (e < s.c) {
      const T* w[S];
      window_rows<S>(x, s, e, sc.zeros, w);
      const uint64_t bad =
          fixed_backward_row<S>(w, gy + e * s.l, ring_t(e), ring_p(e), len, alpha_n, k, pw);
      if constexpr (sizeof(T) < sizeof(double))
        if (bad)
          fixed_backward_row_double<S>(w, gy + e * s.l, ring_t(e), ring_p(e), len, cf.alpha_n,
                                       cf.k, pw);
    }
    const int64_t j = e - h;
    if (j < 0) continue;
    const T* tw[S];
    for (int64_t i = 0; i < S; ++i) {
      const int64_t q = j - h + i;
      tw[i] = q >= 0 && q < s.c ? ring_t(q) : sc.zeros;
    }
    fixed_dx_row<S>(tw, ring_p(j), x + j * s.l, gx + j * s.l, len, grad);
  }
}

// Whether the fixed-window code's arithmetic in T is as good as the
// sliding walk's double sums for s = k + alpha_n * sum: alpha_n >= 0 and k > 0
// (no cancellation in s), both normal numbers in T (no rounding to a
// denormal or inf on the way in), and k large enough that the squares'
// underflow cannot show in s: each of the S squares rounds off at most T's
// smallest denormal, so s is off by at most alpha_n * S * denorm_min, below
// T's epsilon relative to s >= k when k >= alpha_n * S * (the smallest normal
// T). Other calls (k = 0, negative alpha or k, nan) take the sliding walk.
template <typename T>
bool fixed_window_exact(const LrnCoef<double>& cf, int64_t size) {
  constexpr double lo = std::numeric_limits<T>::min(), hi = std::numeric_limits<T>::max();
  auto normal = [&](double v) { return v >= lo && v <= hi; };
  return normal(cf.k) && (cf.alpha_n == 0 || normal(cf.alpha_n)) &&
         cf.k >= cf.alpha_n * double(size) * lo;
}

// x, y at (n, channel 0, first position of the block); rows s.l apart.
// The tasks are not inlined into their callers, so the loops are compiled
// (and vectorized) with this section's options.
template <typename T, typename Pow>
C10_NOINLINE void forward_task(const LrnShape& s, const T* x, T* y, int64_t len,
                               const LrnCoef<double>& cf, Pow pw, Scratch<T>& sc) {
  const int64_t period = lrn_period(s.size);
  bool restart = true;
  for (int64_t c = 0; c < s.c; ++c) {
    if (restart || c % period == 0) direct_sum(sc.sum, x, s, c - s.before, c + s.after, len);
    const T* in = c + s.after < s.c ? x + (c + s.after) * s.l : sc.zeros;
    const T* out = c - s.before >= 0 ? x + (c - s.before) * s.l : sc.zeros;
    restart = forward_row(sc.sum, in, out, x + c * s.l, y + c * s.l, len, cf.alpha_n, cf.k, pw);
  }
}

template <typename T, typename Pow>
C10_NOINLINE void backward_task(const LrnShape& s, const T* gy, const T* x, T* gx, int64_t len,
                                const LrnCoef<double>& cf, Pow pw, Scratch<T>& sc, int64_t R) {
  const int64_t period = lrn_period(s.size);
  auto ring_t = [&](int64_t c) { return sc.ring_t + (c % R) * sc.block; };
  auto ring_p = [&](int64_t c) { return sc.ring_p + (c % R) * sc.block; };
  bool restart_s = true, restart_t = false;
  // dx_j; tsum holds t over [max(j - after - 1, 0), min(j + before, C - 1)].
  auto emit = [&](int64_t j) {
    const bool fresh = restart_t || (j > 0 && j % period == 0) ||
                       (j - s.after - 1 >= 0 && drop_row(sc.tsum, ring_t(j - s.after - 1), len));
    if (fresh) {  // the sum over W'(j) afresh from the ring
      std::fill(sc.tsum, sc.tsum + len, 0.0);
      for (int64_t q = std::max<int64_t>(j - s.after, 0); q <= std::min(j + s.before, s.c - 1); ++q)
        add_row(sc.tsum, ring_t(q), len);
    }
    restart_t = dx_row(sc.tsum, ring_p(j), x + j * s.l, gx + j * s.l, len, T(cf.grad));
  };
  std::fill(sc.tsum, sc.tsum + len, 0.0);
  for (int64_t c = 0; c < s.c; ++c) {
    if (restart_s || c % period == 0) direct_sum(sc.sum, x, s, c - s.before, c + s.after, len);
    const T* in = c + s.after < s.c ? x + (c + s.after) * s.l : sc.zeros;
    const T* out = c - s.before >= 0 ? x + (c - s.before) * s.l : sc.zeros;
    restart_s = backward_row(sc.sum, sc.tsum, in, out, x + c * s.l, gy + c * s.l, ring_t(c),
                             ring_p(c), len, cf.alpha_n, cf.k, pw);
    if (c - s.before >= 0) emit(c - s.before);  // W'(c - before) ends at c
  }
  for (int64_t j = std::max<int64_t>(s.c - s.before, 0); j < s.c; ++j) emit(j);
}

LENETALEX_WIDE_VECTORS_END

// Runs task(offset of (n, 0, p0), len, scratch) over every (image, block of
// positions) in parallel.
template <typename T, typename Task>
void for_each_block(const LrnShape& s, int64_t ring_slots, Task task) {
  const int64_t want = (2 * at::get_num_threads() + s.n - 1) / s.n;  // blocks per image
  // Long windows (a ring of many rows) take shorter rows: the ring stays ~1 MB.
  const int64_t max_block =
      std::clamp<int64_t>((int64_t(1) << 18) / std::max<int64_t>(2 * ring_slots, 1), kMinBlock,
                          kMaxBlock);
  const int64_t per_image = std::max((s.l + max_block - 1) / max_block,
                                     std::min(want, (s.l + kMinBlock - 1) / kMinBlock));
  const int64_t block = ((s.l + per_image - 1) / per_image + 15) / 16 * 16;
  const int64_t blocks = (s.l + block - 1) / block;
  at::parallel_for(0, s.n * blocks, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> scratch(ring_slots, block);
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t n = idx / blocks, p0 = (idx % blocks) * block;
      task(n * s.c * s.l + p0, std::min(block, s.l - p0), scratch);
    }
  });
}

// Calls f(pow functor) with the functor for beta (and k, alpha: InvPow075
// needs every s = k + alpha / size * sum to be a normal positive number).
template <typename T, typename F>
void with_pow(const LrnCoef<double>& cf, F f) {
  if (cf.beta_075 && cf.k >= std::numeric_limits<T>::min() && cf.alpha_n >= 0)
    f(InvPow075<T>{});
  else
    f(InvPowGeneral<T>{T(cf.neg_beta), T(cf.neg_sign)});
}

at::Tensor local_response_norm_cpu(const at::Tensor& input, int64_t size, double alpha,
                                   double beta, double k) {
  const LrnShape s = check_local_response_norm(input, size, Backend::Cpu);
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty(input.sizes(), input.options());
  advise_huge_pages(y);
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "local_response_norm_cpu", [&] {
    const auto cf = lrn_coef<double>(size, alpha, beta, k);
    const bool fixed = (size == 3 || size == 5) && fixed_window_exact<scalar_t>(cf, size);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    with_pow<scalar_t>(cf, [&](auto pw) {
      for_each_block<scalar_t>(s, 0, [&](int64_t off, int64_t len, Scratch<scalar_t>& sc) {
        if (fixed) {
          if (size == 3) return fixed_forward_task<3>(s, xp + off, yp + off, len, cf, pw, sc.zeros);
          return fixed_forward_task<5>(s, xp + off, yp + off, len, cf, pw, sc.zeros);
        }
        forward_task(s, xp + off, yp + off, len, cf, pw, sc);
      });
    });
  });
  return y;
}

at::Tensor local_response_norm_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                            int64_t size, double alpha, double beta, double k) {
  const LrnShape s = check_local_response_norm_backward(grad_output, input, size, Backend::Cpu);
  const at::Tensor gy = grad_output.contiguous(), x = input.contiguous();
  at::Tensor gx = at::empty(input.sizes(), input.options());
  advise_huge_pages(gx);
  if (gx.numel() == 0) return gx;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "local_response_norm_backward_cpu", [&] {
    const auto cf = lrn_coef<double>(size, alpha, beta, k);
    const bool fixed = (size == 3 || size == 5) && fixed_window_exact<scalar_t>(cf, size);
    // The fixed-window ring has S slots (indexed c % S) even where C < S.
    const int64_t R = fixed ? size : lrn_ring_slots(s);
    const scalar_t* gyp = gy.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
    with_pow<scalar_t>(cf, [&](auto pw) {
      for_each_block<scalar_t>(s, R, [&](int64_t off, int64_t len, Scratch<scalar_t>& sc) {
        if (fixed) {
          if (size == 3) return fixed_backward_task<3>(s, gyp + off, xp + off, gxp + off, len, cf, pw, sc);
          return fixed_backward_task<5>(s, gyp + off, xp + off, gxp + off, len, cf, pw, sc);
        }
        backward_task(s, gyp + off, xp + off, gxp + off, len, cf, pw, sc, R);
      });
    });
  });
  return gx;
}

}  // namespace

// Every ISA variant fills its table; the baseline registers the one CPU
// kernel per op, which calls the active variant (cpu/isa.h).
LENETALEX_CPU_KERNEL(local_response_norm, local_response_norm_cpu)
LENETALEX_CPU_KERNEL(local_response_norm_backward, local_response_norm_backward_cpu)

}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
