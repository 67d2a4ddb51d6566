// rbf_distance on the CPU: forward and backward.
//
// Forward, y[n, k] = sum_j (x[n, j] - w[k, j])^2, is computed as written, a sum
// of squared differences: the GEMM-style expansion |x|^2 - 2 x.w + |w|^2 loses
// every digit when x is close to w at large magnitude (and can go negative).
// The prototypes are packed into panels of one SIMD vector's worth of
// prototypes (panel[j][lane] = w[p * L + lane, j]), and a register-blocked
// micro-kernel keeps R input rows x C panels of accumulators in registers:
// per j it loads C prototype vectors and, for each row, broadcasts x[n, j].
//
// Backward, both grads share one shape:
//   grad_input[n, :]      = 2 sum_k g[n, k] (x[n, :] - w[k, :])
//   grad_prototypes[k, :] = 2 sum_n g[n, k] (w[k, :] - x[n, :])
// i.e. out[a, :] = 2 sum_c coef(a, c) (P[a, :] - Q[c, :]), vectorized over the
// feature dimension (masked loads and stores for a ragged last vector). It too
// keeps the differences: the GEMM form 2 (rowsum(g) x - g W) is exact algebra,
// but its rounding error grows with |x| and |w| rather than |x - w| (at
// magnitude 1e4 and unit distances, float32 keeps about 3 digits), and it would
// cost the same two-pass GEMM work anyway. Sums over c run in chunks (a chunk
// sum, then the sum of the chunks), which keeps float32 error small over long
// reductions. Every output is written by one task in a fixed order:
// deterministic, whatever the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common/ceil_div.h"
#include "common/grads.h"
#include "cpu/huge_pages.h"
#include "cpu/isa.h"
#include "ops/rbf_distance.h"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace {

// ---- SIMD vectors: the target's widest, as GCC/Clang vector types ---------
// (arithmetic operators work on them; FMA is spelled out, because -std=c++20
// turns off the compiler's own contraction of a * b + c, and so is the
// broadcast splat(s), which compilers otherwise build lane by lane).
#if defined(__AVX512F__)
using VecF = __m512;
using VecD = __m512d;
inline VecF fma(VecF a, VecF b, VecF c) { return _mm512_fmadd_ps(a, b, c); }
inline VecD fma(VecD a, VecD b, VecD c) { return _mm512_fmadd_pd(a, b, c); }
inline VecF splat(float s) { return _mm512_set1_ps(s); }
inline VecD splat(double s) { return _mm512_set1_pd(s); }
#elif defined(__AVX2__) && defined(__FMA__)
using VecF = __m256;
using VecD = __m256d;
inline VecF fma(VecF a, VecF b, VecF c) { return _mm256_fmadd_ps(a, b, c); }
inline VecD fma(VecD a, VecD b, VecD c) { return _mm256_fmadd_pd(a, b, c); }
inline VecF splat(float s) { return _mm256_set1_ps(s); }
inline VecD splat(double s) { return _mm256_set1_pd(s); }
#else
typedef float VecF __attribute__((vector_size(16)));
typedef double VecD __attribute__((vector_size(16)));
inline VecF fma(VecF a, VecF b, VecF c) { return a * b + c; }
inline VecD fma(VecD a, VecD b, VecD c) { return a * b + c; }
inline VecF splat(float s) { return VecF{s, s, s, s}; }
inline VecD splat(double s) { return VecD{s, s}; }
#endif

template <typename T> struct Simd;
template <> struct Simd<float> { using V = VecF; };
template <> struct Simd<double> { using V = VecD; };

template <typename T> using Vec = typename Simd<T>::V;
template <typename T> constexpr int kLanes = sizeof(Vec<T>) / sizeof(T);

template <typename T> inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T> inline void store(T* p, Vec<T> v) { std::memcpy(p, &v, sizeof(v)); }
// The first m lanes (1 <= m <= kLanes), the rest zero / left alone: masked
// moves on AVX-512, a copy through memory elsewhere.
#if defined(__AVX512F__)
inline VecF load_first(const float* p, int m) { return _mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1), p); }
inline VecD load_first(const double* p, int m) { return _mm512_maskz_loadu_pd((__mmask8)((1u << m) - 1), p); }
inline void store_first(float* p, VecF v, int m) { _mm512_mask_storeu_ps(p, (__mmask16)((1u << m) - 1), v); }
inline void store_first(double* p, VecD v, int m) { _mm512_mask_storeu_pd(p, (__mmask8)((1u << m) - 1), v); }
#else
template <typename T> inline Vec<T> load_first(const T* p, int m) {
  Vec<T> v{};
  std::memcpy(&v, p, m * sizeof(T));
  return v;
}
template <typename T> inline void store_first(T* p, Vec<T> v, int m) { std::memcpy(p, &v, m * sizeof(T)); }
#endif

// ---- forward ---------------------------------------------------------------
constexpr int kFwdRows = 8;    // input rows per micro-kernel
constexpr int kFwdPanels = 3;  // prototype panels per micro-kernel (24 accumulators)

// panels[p][j][lane] = w[p * L + lane, j], zero past k.
template <typename T>
void pack_panels(const at::Tensor& prototypes, T* panels, int64_t k, int64_t d) {
  constexpr int L = kLanes<T>;
  const T* w = prototypes.const_data_ptr<T>();
  const int64_t sk = prototypes.stride(0), sd = prototypes.stride(1);
  at::parallel_for(0, ceil_div(k, L), 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      T* panel = panels + p * d * L;
      for (int64_t j = 0; j < d; ++j)
        for (int l = 0; l < L; ++l) {
          const int64_t kk = p * L + l;
          panel[j * L + l] = kk < k ? w[kk * sk + j * sd] : T(0);
        }
    }
  });
}

// y[rows, C panels' prototypes] for R rows (x[r] the row pointers, sd their
// element stride) against C consecutive panels.
template <typename T, int R, int C>
inline void forward_micro(const T* const* x, int64_t sd, const T* panels, int64_t d, T* const* y,
                          int rows, int64_t k0, int64_t k) {
  constexpr int L = kLanes<T>;
  Vec<T> acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = Vec<T>{};
  for (int64_t j = 0; j < d; ++j) {
    Vec<T> w[C];
    for (int c = 0; c < C; ++c) w[c] = load(panels + (c * d + j) * L);
    for (int r = 0; r < R; ++r) {
      const T xs = x[r][j * sd];
      for (int c = 0; c < C; ++c) {
        const Vec<T> diff = w[c] - xs;
        acc[r][c] = fma(diff, diff, acc[r][c]);
      }
    }
  }
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < C; ++c) {
      const int64_t col = k0 + c * L;
      if (col + L <= k) store(y[r] + col, acc[r][c]);
      else if (col < k) store_first(y[r] + col, acc[r][c], static_cast<int>(k - col));
    }
}

template <typename T>
void forward_kernel(const at::Tensor& input, const T* panels, const RBFShape& s, T* y) {
  constexpr int L = kLanes<T>, R = kFwdRows, C = kFwdPanels;
  const int64_t num_panels = ceil_div(s.k, L);
  const T* x = input.const_data_ptr<T>();
  const int64_t sn = input.stride(0), sd = input.stride(1);
  const int64_t blocks = ceil_div(s.n, R);
  // ~64k multiply-adds per task at least, so small problems stay on one thread.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, R * num_panels * L * s.d));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    const T* xr[R];
    T* yr[R];
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n0 = b * R;
      const int rows = static_cast<int>(std::min<int64_t>(R, s.n - n0));
      for (int r = 0; r < R; ++r) {
        const int64_t n = std::min(n0 + r, s.n - 1);  // a short block repeats its last row
        xr[r] = x + n * sn;
        yr[r] = y + n * s.k;
      }
      int64_t p = 0;
      for (; p + C <= num_panels; p += C)
        forward_micro<T, R, C>(xr, sd, panels + p * s.d * L, s.d, yr, rows, p * L, s.k);
      switch (num_panels - p) {
        case 2: forward_micro<T, R, 2>(xr, sd, panels + p * s.d * L, s.d, yr, rows, p * L, s.k); break;
        case 1: forward_micro<T, R, 1>(xr, sd, panels + p * s.d * L, s.d, yr, rows, p * L, s.k); break;
        default: break;
      }
    }
  });
}

// ---- backward --------------------------------------------------------------
// out[a, b] = 2 sum_c coef(a, c) (P[a, b] - Q[c, b]), b < d. P and Q are
// row-major with row strides lp and lq; coef(a, c) = g[a * ga + c * gc].
template <typename T>
struct GradProblem {
  const T* p; const T* q; const T* g;
  int64_t a, c, d, lp, lq, ga, gc;
  T* out;  // (a, d), contiguous
};

constexpr int kBwdRows = 4;          // rows of a per micro-kernel
constexpr int kBwdVecs = 4;          // vectors of b per micro-kernel (16 accumulators)
constexpr int64_t kChunk = 64;       // terms of c summed before they join the total
constexpr int64_t kSuperRows = 256;  // rows of a that share each chunk of Q while it is in cache

// out[R rows, V vectors from b0] over c in [c0, c1). With Tail, the last vector
// holds only d - b of its lanes (masked loads and stores).
template <typename T, int R, int V, bool Tail>
inline void grad_micro(const GradProblem<T>& pr, const int64_t* arow, int rows, int64_t b0,
                       int64_t c0, int64_t c1) {
  constexpr int L = kLanes<T>;
  const int last = Tail ? static_cast<int>(pr.d - b0 - (V - 1) * L) : L;
  auto get = [&](const T* src, int v) {
    return Tail && v == V - 1 ? load_first(src + v * L, last) : load(src + v * L);
  };
  Vec<T> p[R][V], acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      p[r][v] = get(pr.p + arow[r] * pr.lp + b0, v);
      acc[r][v] = Vec<T>{};
    }
  const T* g[R];
  for (int r = 0; r < R; ++r) g[r] = pr.g + arow[r] * pr.ga;
  for (int64_t c = c0; c < c1; ++c) {
    Vec<T> q[V];
    for (int v = 0; v < V; ++v) q[v] = get(pr.q + c * pr.lq + b0, v);
    for (int r = 0; r < R; ++r) {
      const Vec<T> coef = splat(g[r][c * pr.gc]);
      for (int v = 0; v < V; ++v) acc[r][v] = fma(coef, q[v] - p[r][v], acc[r][v]);
    }
  }
  // acc holds sum coef (Q - P): out = -2 acc for the first chunk, += after.
  for (int r = 0; r < rows; ++r) {
    T* o = pr.out + arow[r] * pr.d + b0;
    for (int v = 0; v < V; ++v) {
      Vec<T> total = acc[r][v] * T(-2);
      if (c0 > 0) total = get(o, v) + total;
      if (Tail && v == V - 1) store_first(o + v * L, total, last);
      else store(o + v * L, total);
    }
  }
}

// The micro-kernel for the vectors [v, vecs) of b (fewer than kBwdVecs + 1).
template <typename T, int R, bool Tail>
inline void grad_micro_rest(const GradProblem<T>& pr, const int64_t* arow, int rows, int64_t n,
                            int64_t b0, int64_t c0, int64_t c1) {
  switch (n) {
    case 4: grad_micro<T, R, 4, Tail>(pr, arow, rows, b0, c0, c1); break;
    case 3: grad_micro<T, R, 3, Tail>(pr, arow, rows, b0, c0, c1); break;
    case 2: grad_micro<T, R, 2, Tail>(pr, arow, rows, b0, c0, c1); break;
    case 1: grad_micro<T, R, 1, Tail>(pr, arow, rows, b0, c0, c1); break;
    default: break;
  }
}

template <typename T>
void grad_kernel(const GradProblem<T>& pr) {
  constexpr int L = kLanes<T>, R = kBwdRows, V = kBwdVecs;
  const int64_t vecs = ceil_div(pr.d, L);
  const bool tail = pr.d % L != 0;
  // Rows of a in super-blocks: each streams Q chunk by chunk while its own
  // outputs stay in cache. At least ~4 tasks per thread when a allows.
  const int64_t want = ceil_div(pr.a, 4 * at::get_num_threads());
  const int64_t super_rows = std::clamp<int64_t>(ceil_div(want, R) * R, R, kSuperRows);
  at::parallel_for(0, ceil_div(pr.a, super_rows), 1, [&](int64_t begin, int64_t end) {
    int64_t arow[R];
    for (int64_t sb = begin; sb < end; ++sb) {
      const int64_t a_lo = sb * super_rows, a_hi = std::min(pr.a, a_lo + super_rows);
      for (int64_t c0 = 0; c0 < pr.c; c0 += kChunk) {
        const int64_t c1 = std::min(pr.c, c0 + kChunk);
        // V vectors of b at a time: that slice of the Q chunk stays in L1.
        for (int64_t v0 = 0; v0 < vecs; v0 += V) {
          const int64_t n = std::min<int64_t>(V, vecs - v0);
          for (int64_t a0 = a_lo; a0 < a_hi; a0 += R) {
            const int rows = static_cast<int>(std::min<int64_t>(R, a_hi - a0));
            for (int r = 0; r < R; ++r) arow[r] = std::min(a0 + r, a_hi - 1);  // short block: repeat
            if (n == V && !(tail && v0 + V == vecs))
              grad_micro<T, R, V, false>(pr, arow, rows, v0 * L, c0, c1);
            else if (tail && v0 + n == vecs)
              grad_micro_rest<T, R, true>(pr, arow, rows, n, v0 * L, c0, c1);
            else
              grad_micro_rest<T, R, false>(pr, arow, rows, n, v0 * L, c0, c1);
          }
        }
      }
    }
  });
}

// Rows with unit element stride, any row stride (a copy only otherwise).
at::Tensor unit_stride_rows(const at::Tensor& t) {
  return t.stride(1) == 1 || t.size(1) <= 1 ? t : t.contiguous();
}

at::Tensor rbf_distance_cpu(const at::Tensor& input, const at::Tensor& prototypes) {
  const RBFShape s = check_rbf_distance(input, prototypes, Backend::Cpu);
  at::Tensor y = at::empty({s.n, s.k}, input.options());
  if (y.numel() == 0) return y;
  if (s.d == 0) return y.zero_();
  advise_huge_pages(y);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "rbf_distance_cpu", [&] {
    constexpr int L = kLanes<scalar_t>;
    at::Tensor panels = at::empty({ceil_div(s.k, L) * s.d * L}, input.options());
    pack_panels<scalar_t>(prototypes, panels.mutable_data_ptr<scalar_t>(), s.k, s.d);
    forward_kernel<scalar_t>(input, panels.const_data_ptr<scalar_t>(), s,
                             y.mutable_data_ptr<scalar_t>());
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> rbf_distance_backward_cpu(const at::Tensor& grad_output,
                                                             const at::Tensor& input,
                                                             const at::Tensor& prototypes,
                                                             std::array<bool, 2> output_mask) {
  const RBFShape s = check_rbf_distance_backward(grad_output, input, prototypes, Backend::Cpu);
  const auto opts = input.options();
  at::Tensor gx = grad_or_empty(output_mask[0], {s.n, s.d}, opts);
  at::Tensor gw = grad_or_empty(output_mask[1], {s.k, s.d}, opts);
  // An empty sum is zero: no prototypes (for grad_input) or no rows (for grad_prototypes).
  if (output_mask[0] && s.k == 0) gx.zero_();
  if (output_mask[1] && s.n == 0) gw.zero_();
  const bool want_x = output_mask[0] && gx.numel() > 0 && s.k > 0;
  const bool want_w = output_mask[1] && gw.numel() > 0 && s.n > 0;
  if (!want_x && !want_w) return {gx, gw};
  const at::Tensor x = unit_stride_rows(input), w = unit_stride_rows(prototypes);
  const at::Tensor g = grad_output.contiguous();
  if (want_x) advise_huge_pages(gx);
  if (want_w) advise_huge_pages(gw);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "rbf_distance_backward_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* wp = w.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const int64_t lx = x.stride(0), lw = w.stride(0);
    if (want_x)  // out[n] = 2 sum_k g[n, k] (x[n] - w[k])
      grad_kernel<scalar_t>({xp, wp, gp, s.n, s.k, s.d, lx, lw, s.k, 1, gx.mutable_data_ptr<scalar_t>()});
    if (want_w)  // out[k] = 2 sum_n g[n, k] (w[k] - x[n])
      grad_kernel<scalar_t>({wp, xp, gp, s.k, s.n, s.d, lw, lx, 1, s.k, gw.mutable_data_ptr<scalar_t>()});
  });
  return {gx, gw};
}

}  // namespace

// Every ISA variant fills its table; the baseline registers the one CPU
// kernel per op, which calls the active variant (cpu/isa.h).
LENETALEX_CPU_KERNEL(rbf_distance, rbf_distance_cpu)
LENETALEX_CPU_KERNEL(rbf_distance_backward, rbf_distance_backward_cpu)

}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
