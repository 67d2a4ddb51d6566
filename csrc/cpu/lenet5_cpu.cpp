// lenet5 on the CPU: the whole network, forward and backward, one block of
// images at a time.
//
// Layout. A block holds kBlock = 8 images with the image index innermost:
// every activation is a plane of vectors V (8 lanes, one per image), so each
// layer is written once, as scalar weights times vectors, and every multiply-add
// feeds 8 images (one AVX2 register of floats). The vectors are GCC's generic
// vector types: plain SSE code in a baseline build, 256-bit in an AVX2 build,
// no intrinsics. A block's activations (8,084 values per image, 259 KB) and its
// backward's gradients stay in L2; the weights (243 KB) are shared read-only.
//
// Forward per block: the input transposed into [32][32][8]; C1 and C3 as
// direct 5x5 convolutions over output rows, TW output columns in registers
// (C3 reads only its table's connections); S2 and S4 as 2x2 window sums; C5 and
// F6 as small matrix-vector products, a tile of outputs in registers; each
// layer's pre-activations squashed in one flat loop (activation.h's
// vectorizable tanh); then the RBF distances. With save, the layer outputs are
// written straight into the activations tensor (the backward takes each
// derivative from its output and each weight grad from its layer's input).
//
// Backward per block, top down, each layer's output grad turned into the
// pre-activation grad in place: RBF -> F6 -> C5 (weight grads as rank-8
// updates of the weight-shaped partials) -> S4 -> C3 (weight grads as per-lane
// sums reduced at the block's end; the S2 grad gathered row by row in
// registers, no scatter) -> S2 -> C1 (-> the input, when asked).
//
// Determinism: the weight grads are summed per chunk of blocks, the chunk size
// a function of N alone, each chunk in block order into its own partials; the
// chunks are then added in order. The result is bitwise the same whatever the
// thread count.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "common/activation.h"
#include "cpu/isa.h"
#include "cpu/scratch.h"
#include "ops/lenet5.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // vectors passed by value in inline code only

namespace lenetalex {
namespace lenet5 {  // ops/lenet5.h's, whose constants the code below uses unqualified
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace {

constexpr int64_t B = kBlock;
constexpr Activation kAct = Activation::ScaledTanh;

template <typename T>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float V __attribute__((vector_size(B * sizeof(float)), may_alias));
};
template <>
struct Lanes<double> {
  typedef double V __attribute__((vector_size(B * sizeof(double)), may_alias));
};

template <typename T>
using Vec = typename Lanes<T>::V;

template <typename T>
inline Vec<T> splat(T x) {
  return Vec<T>{} + x;
}

// Lanes summed in a fixed order (the weight grads' per-block reduction).
template <typename T>
inline T hsum(const Vec<T>& v) {
  T s = v[0];
  for (int64_t b = 1; b < B; ++b) s += v[b];
  return s;
}

// p[i] = f(p[i]): one long loop, which gcc vectorizes (tanh_vec; float only,
// double calls tanh) thanks to the variants' -fno-trapping-math (setup.py says why).
template <typename T>
void squash_values(T* __restrict__ p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = activation_forward<T>(kAct, p[i]);
}

template <typename T>
void slope_values(T* __restrict__ g, const T* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] *= activation_grad_from_output<T>(kAct, y[i]);
}

// y = f(y) over n vectors.
template <typename T>
inline void squash(Vec<T>* v, int64_t n) {
  squash_values<T>(reinterpret_cast<T*>(v), n * B);
}

// g = g * f'(from output y) over n vectors: the pre-activation's grad.
template <typename T>
inline void times_slope(Vec<T>* g, const Vec<T>* y, int64_t n) {
  slope_values<T>(reinterpret_cast<T*>(g), reinterpret_cast<const T*>(y), n * B);
}

// C3's connections (C1's: 1 input, all connected), both ways.
struct Table {
  int oc = 0, ic = 0;
  int n_in[kC3] = {}, in[kC3][kS2] = {};    // per output map, the input maps it reads
  int n_out[kS2] = {}, out[kS2][kC3] = {};  // per input map, the output maps reading it
  void add(int o, int i) {
    in[o][n_in[o]++] = i;
    out[i][n_out[i]++] = o;
  }
};

Table c1_table() {
  Table t;
  t.oc = kC1;
  t.ic = 1;
  for (int o = 0; o < kC1; ++o) t.add(o, 0);
  return t;
}

Table c3_table_of(const at::Tensor& table) {
  const at::Tensor c = table.contiguous();
  const bool* p = c.const_data_ptr<bool>();
  Table t;
  t.oc = kC3;
  t.ic = kS2;
  for (int o = 0; o < kC3; ++o)
    for (int i = 0; i < kS2; ++i)
      if (p[o * kS2 + i]) t.add(o, i);
  return t;
}

// ---------------------------------------------------------------- forward

// out[o] = bias[o] + sum over the table's inputs i of the valid 5x5
// correlation of in[i] (IH x IW) with w[o][i]; OW = IW - 4 columns, TW of
// them at a time in registers.
template <typename T, int IW, int TW>
void conv5x5(const Vec<T>* in, const T* w, const T* bias, const Table& t, Vec<T>* out) {
  constexpr int OW = IW - 4, IH = IW, OH = OW;
  static_assert(OW % TW == 0, "tile must divide the output width");
  for (int o = 0; o < t.oc; ++o) {
    for (int y = 0; y < OH; ++y) {
      for (int x0 = 0; x0 < OW; x0 += TW) {
        Vec<T> acc[TW];
        for (int j = 0; j < TW; ++j) acc[j] = splat<T>(bias[o]);
        for (int c = 0; c < t.n_in[o]; ++c) {
          const int i = t.in[o][c];
          const T* wk = w + (o * t.ic + i) * 25;
          const Vec<T>* r0 = in + (i * IH + y) * IW + x0;
#pragma GCC unroll 5
          for (int ky = 0; ky < 5; ++ky) {
            const Vec<T>* r = r0 + ky * IW;
#pragma GCC unroll 5
            for (int kx = 0; kx < 5; ++kx) {
              const T wv = wk[ky * 5 + kx];
#pragma GCC unroll 14
              for (int j = 0; j < TW; ++j) acc[j] += wv * r[kx + j];
            }
          }
        }
        Vec<T>* dst = out + (o * OH + y) * OW + x0;
        for (int j = 0; j < TW; ++j) dst[j] = acc[j];
      }
    }
  }
}

// LeNet's subsampling: out = w[c] * mean of each 2x2 window + b[c].
template <typename T, int C, int IW>
void subsample(const Vec<T>* in, const T* w, const T* b, Vec<T>* out) {
  constexpr int OW = IW / 2;
  for (int c = 0; c < C; ++c) {
    const T s = w[c] * T(0.25);
    for (int y = 0; y < OW; ++y) {
      const Vec<T>* r0 = in + (c * IW + 2 * y) * IW;
      const Vec<T>* r1 = r0 + IW;
      Vec<T>* dst = out + (c * OW + y) * OW;
      for (int x = 0; x < OW; ++x)
        dst[x] = s * ((r0[2 * x] + r0[2 * x + 1]) + (r1[2 * x] + r1[2 * x + 1])) + b[c];
    }
  }
}

// Tiles of outputs held in registers by the matrix-vector products: 12 float
// vectors (or 6 double ones, two registers each) leave room for the operands.
template <typename T>
constexpr int kTile = sizeof(T) == 4 ? 12 : 6;

// out[o] = bias[o] + sum_i W[o][i] in[i], O x I (C5: 120 x 400, F6: 84 x 120).
template <typename T, int O, int I>
void dense(const Vec<T>* in, const T* W, const T* bias, Vec<T>* out) {
  constexpr int TO = kTile<T>;
  static_assert(O % TO == 0, "tile must divide the outputs");
  for (int o0 = 0; o0 < O; o0 += TO) {
    Vec<T> acc[TO];
    for (int k = 0; k < TO; ++k) acc[k] = splat<T>(bias[o0 + k]);
    for (int i = 0; i < I; ++i) {
      const Vec<T> v = in[i];
#pragma GCC unroll 12
      for (int k = 0; k < TO; ++k) acc[k] += W[(o0 + k) * I + i] * v;
    }
    for (int k = 0; k < TO; ++k) out[o0 + k] = acc[k];
  }
}

// The block's images transposed to [32 * 32][lanes]; lanes past n are zero.
template <typename T>
void load_input(const T* x, int64_t n0, int64_t nb, Vec<T>* in) {
  T* p = reinterpret_cast<T*>(in);
  constexpr int64_t P = kIn * kIn;
  for (int64_t b = 0; b < B; ++b) {
    const T* src = x + (n0 + b) * P;
    for (int64_t i = 0; i < P; ++i) p[i * B + b] = b < nb ? src[i] : T(0);
  }
}

struct Weights {  // raw pointers of the contiguous parameters
  const void *c1w, *c1b, *s2w, *s2b, *c3w, *c3b, *s4w, *s4b, *c5w, *c5b, *f6w, *f6b, *proto;
  int64_t k;  // prototypes
};

template <typename T>
const T* P(const void* p) {
  return static_cast<const T*>(p);
}

// One block's forward: acts (kSaved vectors) gets every layer's output,
// dist the block's rows of distances.
template <typename T>
void forward_block(const Weights& w, const Table& t1, const Table& t3, const Vec<T>* in,
                   Vec<T>* acts, T* dist, int64_t nb) {
  Vec<T>* c1 = acts + kOffC1;
  Vec<T>* s2 = acts + kOffS2;
  Vec<T>* c3 = acts + kOffC3;
  Vec<T>* s4 = acts + kOffS4;
  Vec<T>* c5 = acts + kOffC5;
  Vec<T>* f6 = acts + kOffF6;
  conv5x5<T, 32, 7>(in, P<T>(w.c1w), P<T>(w.c1b), t1, c1);
  squash<T>(c1, kOffS2 - kOffC1);
  subsample<T, kS2, kH1>(c1, P<T>(w.s2w), P<T>(w.s2b), s2);
  squash<T>(s2, kOffC3 - kOffS2);
  conv5x5<T, 14, 10>(s2, P<T>(w.c3w), P<T>(w.c3b), t3, c3);
  squash<T>(c3, kOffS4 - kOffC3);
  subsample<T, kS4, kH3>(c3, P<T>(w.s4w), P<T>(w.s4b), s4);
  squash<T>(s4, kOffC5 - kOffS4);
  dense<T, kC5, kS4 * 25>(s4, P<T>(w.c5w), P<T>(w.c5b), c5);
  squash<T>(c5, kC5);
  dense<T, kF6, kC5>(c5, P<T>(w.f6w), P<T>(w.f6b), f6);
  squash<T>(f6, kF6);
  const T* proto = P<T>(w.proto);
  for (int64_t k = 0; k < w.k; ++k) {
    Vec<T> acc{};
    for (int64_t j = 0; j < kF6; ++j) {
      const Vec<T> d = f6[j] - proto[k * kF6 + j];
      acc += d * d;
    }
    for (int64_t b = 0; b < nb; ++b) dist[b * w.k + k] = acc[b];
  }
}

template <typename T>
void forward(const at::Tensor& x, const Weights& w, const Table& t1, const Table& t3, T* dist,
             T* saved) {
  const int64_t n = x.size(0), blocks = (n + B - 1) / B;
  const T* xp = x.const_data_ptr<T>();
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    conv_cpu::Scratch scratch;
    constexpr int64_t per_float = sizeof(Vec<T>) / sizeof(float);
    Vec<T>* in = reinterpret_cast<Vec<T>*>(scratch.floats(kIn * kIn * per_float));
    Vec<T>* tmp = saved ? nullptr : reinterpret_cast<Vec<T>*>(scratch.floats(kSaved * per_float));
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t n0 = blk * B, nb = std::min(B, n - n0);
      load_input<T>(xp, n0, nb, in);
      Vec<T>* acts = saved ? reinterpret_cast<Vec<T>*>(saved) + blk * kSaved : tmp;
      forward_block<T>(w, t1, t3, in, acts, dist + n0 * w.k, nb);
    }
  });
}

// ---------------------------------------------------------------- backward

// The grads, one flat array of partial sums per chunk, in the backward op's
// order (after the input): offsets of each parameter's grad.
struct GradLayout {
  int64_t off[14];
  int64_t total;
  explicit GradLayout(int64_t k) {
    int64_t o = 0;
    for (int i = 0; i < 14; ++i) {
      // Each array starts on a 64-byte line, so the rank-8 updates' rows are aligned.
      o = (o + 15) / 16 * 16;
      off[i] = o;
      o += i < 13 ? kGradNumel[i] : k * kF6;
    }
    total = (o + 15) / 16 * 16;
  }
};

// Backward of one subsampling layer, whose output grad g (in place: becomes
// the pre-activation grad) and output y are C x (IW/2)^2, input x C x IW^2.
// Writes the input's grad gx (if not null); adds to gw, gb.
template <typename T, int C, int IW>
void subsample_backward(Vec<T>* g, const Vec<T>* y, const Vec<T>* x, const T* w, Vec<T>* gx,
                        T* gw, T* gb) {
  constexpr int OW = IW / 2;
  times_slope<T>(g, y, C * OW * OW);
  for (int c = 0; c < C; ++c) {
    const T s = w[c] * T(0.25);
    Vec<T> sum_g{}, sum_gx{};
    for (int yy = 0; yy < OW; ++yy) {
      const Vec<T>* r0 = x + (c * IW + 2 * yy) * IW;
      const Vec<T>* r1 = r0 + IW;
      const Vec<T>* gr = g + (c * OW + yy) * OW;
      for (int xx = 0; xx < OW; ++xx) {
        const Vec<T> d = gr[xx];
        sum_g += d;
        sum_gx += d * ((r0[2 * xx] + r0[2 * xx + 1]) + (r1[2 * xx] + r1[2 * xx + 1]));
      }
      if (gx) {
        Vec<T>* q0 = gx + (c * IW + 2 * yy) * IW;
        Vec<T>* q1 = q0 + IW;
        for (int xx = 0; xx < OW; ++xx) {
          const Vec<T> v = s * gr[xx];
          q0[2 * xx] = v;
          q0[2 * xx + 1] = v;
          q1[2 * xx] = v;
          q1[2 * xx + 1] = v;
        }
      }
    }
    gb[c] += hsum<T>(sum_g);
    gw[c] += hsum<T>(sum_gx) * T(0.25);
  }
}

// The weight and bias grads of a 5x5 conv: d (pre-activation grads, oc planes
// of OW x OW), in (its input, IW = OW + 4 wide). For each connection and
// kernel row, 5 per-lane accumulators run over the output plane.
template <typename T, int IW>
void conv5x5_weight_grad(const Vec<T>* d, const Vec<T>* in, const Table& t, T* gw, T* gb) {
  constexpr int OW = IW - 4;
  for (int o = 0; o < t.oc; ++o) {
    const Vec<T>* dp = d + o * OW * OW;
    Vec<T> sum{};
    for (int p = 0; p < OW * OW; ++p) sum += dp[p];
    gb[o] += hsum<T>(sum);
    for (int c = 0; c < t.n_in[o]; ++c) {
      const int i = t.in[o][c];
      const Vec<T>* ip = in + i * IW * IW;
      T* g = gw + (o * t.ic + i) * 25;
      for (int ky = 0; ky < 5; ++ky) {
        Vec<T> acc[5] = {};
        for (int y = 0; y < OW; ++y) {
          const Vec<T>* dr = dp + y * OW;
          const Vec<T>* r = ip + (y + ky) * IW;
          for (int x = 0; x < OW; ++x) {
            const Vec<T> dv = dr[x];
#pragma GCC unroll 5
            for (int kx = 0; kx < 5; ++kx) acc[kx] += dv * r[x + kx];
          }
        }
        for (int kx = 0; kx < 5; ++kx) g[ky * 5 + kx] += hsum<T>(acc[kx]);
      }
    }
  }
}

// The input grad of a 5x5 conv: gx[i][p][q] = sum over the outputs o reading
// i, ky, kx of w[o][i][ky][kx] d[o][p - ky][q - kx], one input row at a time
// with the whole row (IW vectors) in registers: a gather, no read-modify-write.
template <typename T, int IW>
void conv5x5_input_grad(const Vec<T>* d, const T* w, const Table& t, Vec<T>* gx) {
  constexpr int OW = IW - 4;
  for (int i = 0; i < t.ic; ++i) {
    for (int p = 0; p < IW; ++p) {
      Vec<T> acc[IW] = {};
      for (int c = 0; c < t.n_out[i]; ++c) {
        const int o = t.out[i][c];
        const T* wk = w + (o * t.ic + i) * 25;
        for (int ky = std::max(0, p - OW + 1); ky <= std::min(4, p); ++ky) {
          const Vec<T>* dr = d + (o * OW + (p - ky)) * OW;
#pragma GCC unroll 5
          for (int kx = 0; kx < 5; ++kx) {
            const T wv = wk[ky * 5 + kx];
#pragma GCC unroll 28
            for (int x = 0; x < OW; ++x) acc[x + kx] += wv * dr[x];
          }
        }
      }
      Vec<T>* dst = gx + (i * IW + p) * IW;
      for (int q = 0; q < IW; ++q) dst[q] = acc[q];
    }
  }
}

// Dense layer backward, d the pre-activation grads (O vectors), in the
// layer's input (I vectors): gW[o][i] += sum over lanes of d[o] in[i] as 8
// rank-1 updates of each row (in transposed to lanes x I in inT first),
// gb[o] += sum d[o]; gx[i] = sum_o W[o][i] d[o] (if gx is not null).
template <typename T, int O, int I>
void dense_backward(const Vec<T>* d, const Vec<T>* in, const T* W, T* inT, T* gW, T* gb,
                    Vec<T>* gx) {
  for (int i = 0; i < I; ++i)
    for (int b = 0; b < B; ++b) inT[b * I + i] = in[i][b];
  for (int o = 0; o < O; ++o) {
    const Vec<T> dv = d[o];
    gb[o] += hsum<T>(dv);
    T* __restrict__ row = gW + o * I;
    const T* __restrict__ src = inT;
    for (int i = 0; i < I; ++i) {
      T acc = row[i];
#pragma GCC unroll 8
      for (int b = 0; b < B; ++b) acc += dv[b] * src[b * I + i];
      row[i] = acc;
    }
  }
  if (!gx) return;
  constexpr int TI = sizeof(T) == 4 ? 8 : 4;
  static_assert(I % TI == 0, "tile must divide the inputs");
  for (int i0 = 0; i0 < I; i0 += TI) {
    Vec<T> acc[TI] = {};
    for (int o = 0; o < O; ++o) {
      const Vec<T> dv = d[o];
#pragma GCC unroll 8
      for (int k = 0; k < TI; ++k) acc[k] += W[o * I + i0 + k] * dv;
    }
    for (int k = 0; k < TI; ++k) gx[i0 + k] = acc[k];
  }
}

// The backward's work regions, in vectors: A holds C1's grads (and before
// them the upper layers'), B S2's (and after them the input's).
constexpr int64_t kRegionA = kC1 * kH1 * kH1;  // 4704 >= 1600 + 400 + 120 + 84
constexpr int64_t kRegionB = kS2 * kH2 * kH2;  // 1176 >= 1024
static_assert(kRegionA >= kOffF6 - kOffC3 + kF6 && kRegionB >= kIn * kIn, "regions too small");

struct BackwardPlan {
  bool input, params, proto;  // which grads to compute
  int lowest;                 // the lowest layer whose grads are needed: 0 input .. 6 F6
};

// One block's backward. gd: the block's rows of grad_distances; acts: its
// saved outputs; in: its input (transposed); g: the chunk's partial grads.
template <typename T>
void backward_block(const Weights& w, const Table& t1, const Table& t3, const GradLayout& L,
                    const BackwardPlan& plan, const T* gd, int64_t nb, const Vec<T>* acts,
                    const Vec<T>* in, Vec<T>* work, T* g, T* gx_out) {
  const Vec<T>* c1 = acts + kOffC1;
  const Vec<T>* s2 = acts + kOffS2;
  const Vec<T>* c3 = acts + kOffC3;
  const Vec<T>* s4 = acts + kOffS4;
  const Vec<T>* c5 = acts + kOffC5;
  const Vec<T>* f6 = acts + kOffF6;
  // work: region A (C1's grads, earlier the upper layers'), region B (S2's,
  // later the input's), then the transposes of the dense layers.
  Vec<T>* ga = work;
  Vec<T>* gb = work + kRegionA;
  T* inT = reinterpret_cast<T*>(gb + kRegionB);
  Vec<T>* g_c3 = ga;                      // 1600
  Vec<T>* g_s4 = ga + kOffS4 - kOffC3;    // 400
  Vec<T>* g_c5 = g_s4 + kS4 * kH4 * kH4;  // 120
  Vec<T>* g_f6 = g_c5 + kC5;              // 84
  Vec<T>* g_s2 = gb;
  Vec<T>* g_c1 = ga;
  const T* proto = P<T>(w.proto);
  const int64_t K = w.k;
  // RBF: dy_k/df6_j = 2 (f6_j - p_kj).
  for (int64_t j = 0; j < kF6; ++j) g_f6[j] = Vec<T>{};
  for (int64_t k = 0; k < K; ++k) {
    Vec<T> gk{};
    for (int64_t b = 0; b < nb; ++b) gk[b] = T(2) * gd[b * K + k];  // padded lanes stay 0
    T* gp = g + L.off[13] + k * kF6;
    for (int64_t j = 0; j < kF6; ++j) {
      const Vec<T> v = gk * (f6[j] - proto[k * kF6 + j]);
      g_f6[j] += v;
      if (plan.proto) gp[j] -= hsum<T>(v);
    }
  }
  if (!plan.params && plan.lowest == 6) return;
  times_slope<T>(g_f6, f6, kF6);
  dense_backward<T, kF6, kC5>(g_f6, c5, P<T>(w.f6w), inT, g + L.off[11], g + L.off[12],
                              plan.lowest < 6 ? g_c5 : nullptr);
  if (plan.lowest == 6) return;
  times_slope<T>(g_c5, c5, kC5);
  dense_backward<T, kC5, kS4 * 25>(g_c5, s4, P<T>(w.c5w), inT, g + L.off[9], g + L.off[10],
                                   plan.lowest < 5 ? g_s4 : nullptr);
  if (plan.lowest == 5) return;
  subsample_backward<T, kS4, kH3>(g_s4, s4, c3, P<T>(w.s4w), g_c3, g + L.off[7], g + L.off[8]);
  times_slope<T>(g_c3, c3, kC3 * kH3 * kH3);
  conv5x5_weight_grad<T, kH2>(g_c3, s2, t3, g + L.off[5], g + L.off[6]);
  if (plan.lowest == 3) return;
  conv5x5_input_grad<T, kH2>(g_c3, P<T>(w.c3w), t3, g_s2);
  subsample_backward<T, kS2, kH1>(g_s2, s2, c1, P<T>(w.s2w), g_c1, g + L.off[3], g + L.off[4]);
  times_slope<T>(g_c1, c1, kC1 * kH1 * kH1);
  conv5x5_weight_grad<T, kIn>(g_c1, in, t1, g + L.off[1], g + L.off[2]);
  if (!plan.input) return;
  Vec<T>* g_in = gb;  // S2's grads are spent
  conv5x5_input_grad<T, kIn>(g_c1, P<T>(w.c1w), t1, g_in);
  const T* src = reinterpret_cast<const T*>(g_in);
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t i = 0; i < kIn * kIn; ++i) gx_out[b * kIn * kIn + i] = src[i * B + b];
}

// Blocks per chunk of the weight grads' reduction: a function of N alone (so
// the sums do not depend on the threads), at least 2 chunks from 3 blocks on
// (a training batch of 32 keeps 2 cores busy), at most 32 chunks.
inline int64_t chunk_blocks(int64_t blocks) {
  return std::max<int64_t>(std::min<int64_t>(2, (blocks + 1) / 2), (blocks + 31) / 32);
}

template <typename T>
void backward(const at::Tensor& gd, const at::Tensor& saved, const at::Tensor& x,
              const Weights& w, const Table& t1, const Table& t3, const BackwardPlan& plan,
              T* grads, T* gx) {
  const int64_t n = x.size(0), blocks = (n + B - 1) / B;
  const GradLayout L(w.k);
  const int64_t per_chunk = std::max<int64_t>(1, chunk_blocks(blocks));
  const int64_t chunks = (blocks + per_chunk - 1) / per_chunk;
  // Each chunk zeroes its own partials, on its thread, just before use.
  at::Tensor partial = at::empty({chunks, L.total}, x.options());
  T* part = partial.mutable_data_ptr<T>();
  const T* xp = x.const_data_ptr<T>();
  const T* gdp = gd.const_data_ptr<T>();
  const Vec<T>* acts = reinterpret_cast<const Vec<T>*>(saved.const_data_ptr<T>());
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    conv_cpu::Scratch scratch;
    constexpr int64_t per_float = sizeof(Vec<T>) / sizeof(float);
    Vec<T>* in = reinterpret_cast<Vec<T>*>(scratch.floats(kIn * kIn * per_float));
    // regions A and B, and the transposes (B x 400 values = 400 vectors)
    const int64_t work_vecs = kRegionA + kRegionB + kS4 * 25;
    Vec<T>* work = reinterpret_cast<Vec<T>*>(scratch.floats(work_vecs * per_float));
    for (int64_t c = begin; c < end; ++c) {
      T* g = part + c * L.total;
      std::fill(g, g + L.total, T(0));
      for (int64_t blk = c * per_chunk; blk < std::min(blocks, (c + 1) * per_chunk); ++blk) {
        const int64_t n0 = blk * B, nb = std::min(B, n - n0);
        if (plan.lowest <= 2) load_input<T>(xp, n0, nb, in);  // for C1's weight grad
        backward_block<T>(w, t1, t3, L, plan, gdp + n0 * w.k, nb, acts + blk * kSaved, in, work,
                          g, gx ? gx + n0 * kIn * kIn : nullptr);
      }
    }
  });
  // The chunks' partials added in chunk order, in parallel over the values.
  at::parallel_for(0, L.total, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T s = part[i];
      for (int64_t c = 1; c < chunks; ++c) s += part[c * L.total + i];
      grads[i] = s;
    }
  });
}

// ---------------------------------------------------------------- entries

Weights weights_of(const std::array<at::Tensor, 13>& p, int64_t k) {
  Weights w;
  const void** slots[13] = {&w.c1w, &w.c1b, &w.s2w, &w.s2b, &w.c3w, &w.c3b, &w.s4w,
                            &w.s4b, &w.c5w, &w.c5b, &w.f6w, &w.f6b, &w.proto};
  for (int i = 0; i < 13; ++i) *slots[i] = p[i].defined() ? p[i].const_data_ptr() : nullptr;
  w.k = k;
  return w;
}

std::tuple<at::Tensor, at::Tensor> lenet5_cpu(
    const at::Tensor& input, const at::Tensor& c1_weight, const at::Tensor& c1_bias,
    const at::Tensor& s2_weight, const at::Tensor& s2_bias, const at::Tensor& c3_weight,
    const at::Tensor& c3_bias, const at::Tensor& s4_weight, const at::Tensor& s4_bias,
    const at::Tensor& c5_weight, const at::Tensor& c5_bias, const at::Tensor& f6_weight,
    const at::Tensor& f6_bias, const at::Tensor& prototypes, const at::Tensor& c3_table,
    bool save) {
  const int64_t k = check_forward(input, c1_weight, c1_bias, s2_weight, s2_bias, c3_weight,
                                  c3_bias, s4_weight, s4_bias, c5_weight, c5_bias, f6_weight,
                                  f6_bias, prototypes, c3_table, Backend::Cpu);
  const int64_t n = input.size(0);
  at::Tensor dist = at::empty({n, k}, input.options());
  at::Tensor saved = at::empty({save ? saved_numel(n) : 0}, input.options());
  if (n == 0) return {dist, saved};
  const std::array<at::Tensor, 13> p = {
      c1_weight.contiguous(), c1_bias.contiguous(), s2_weight.contiguous(),
      s2_bias.contiguous(),   c3_weight.contiguous(), c3_bias.contiguous(),
      s4_weight.contiguous(), s4_bias.contiguous(), c5_weight.contiguous(),
      c5_bias.contiguous(),   f6_weight.contiguous(), f6_bias.contiguous(),
      prototypes.contiguous()};
  const Weights w = weights_of(p, k);
  const Table t1 = c1_table(), t3 = c3_table_of(c3_table);
  const at::Tensor x = input.contiguous();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lenet5_cpu", [&] {
    forward<scalar_t>(x, w, t1, t3, dist.mutable_data_ptr<scalar_t>(),
                      save ? saved.mutable_data_ptr<scalar_t>() : nullptr);
  });
  return {dist, saved};
}

std::vector<at::Tensor> lenet5_backward_cpu(
    const at::Tensor& grad_distances, const at::Tensor& activations, const at::Tensor& input,
    const at::Tensor& c1_weight, const at::Tensor& s2_weight, const at::Tensor& c3_weight,
    const at::Tensor& s4_weight, const at::Tensor& c5_weight, const at::Tensor& f6_weight,
    const at::Tensor& prototypes, const at::Tensor& c3_table, std::array<bool, 14> mask) {
  const int64_t k = check_backward(grad_distances, activations, input, c1_weight, s2_weight,
                                   c3_weight, s4_weight, c5_weight, f6_weight, prototypes,
                                   c3_table, Backend::Cpu);
  const int64_t n = input.size(0);
  const auto opts = input.options();
  const GradLayout L(k);
  // The lowest layer whose grads are asked for: the backward stops there.
  BackwardPlan plan;
  plan.input = mask[0];
  plan.proto = mask[13];
  plan.params = false;
  for (int i = 1; i < 13; ++i) plan.params = plan.params || mask[i];
  plan.lowest = 6;
  const int lowest_of[14] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 6};
  for (int i = 0; i < 14; ++i)
    if (mask[i]) plan.lowest = std::min(plan.lowest, lowest_of[i]);
  // S4's grads come with C3's (one pass), and C3's stop point serves both.
  if (plan.lowest == 4) plan.lowest = 3;
  at::Tensor all = at::zeros({L.total}, opts);
  at::Tensor gx = mask[0] ? at::empty({n, 1, kIn, kIn}, opts) : at::empty({0}, opts);
  bool any = false;
  for (bool m : mask) any = any || m;
  if (n > 0 && any) {
    const at::Tensor ws[13] = {c1_weight.contiguous(), at::Tensor(), s2_weight.contiguous(),
                               at::Tensor(),           c3_weight.contiguous(), at::Tensor(),
                               s4_weight.contiguous(), at::Tensor(), c5_weight.contiguous(),
                               at::Tensor(),           f6_weight.contiguous(), at::Tensor(),
                               prototypes.contiguous()};
    std::array<at::Tensor, 13> p;
    for (int i = 0; i < 13; ++i) p[i] = ws[i];
    const Weights w = weights_of(p, k);
    const Table t1 = c1_table(), t3 = c3_table_of(c3_table);
    const at::Tensor x = input.contiguous(), gd = grad_distances.contiguous();
    // The kernels load whole vectors from it: a view off the 64-byte
    // alignment of a fresh tensor is copied first.
    at::Tensor saved = activations.contiguous();
    if (reinterpret_cast<uintptr_t>(saved.const_data_ptr()) % 64 != 0) saved = saved.clone();
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lenet5_backward_cpu", [&] {
      backward<scalar_t>(gd, saved, x, w, t1, t3, plan, all.mutable_data_ptr<scalar_t>(),
                         mask[0] ? gx.mutable_data_ptr<scalar_t>() : nullptr);
    });
  }
  return split_grads(gx, all, L.off, mask, f6_weight, k);
}

}  // namespace

LENETALEX_CPU_KERNEL(lenet5, lenet5_cpu)
LENETALEX_CPU_KERNEL(lenet5_backward, lenet5_backward_cpu)

}  // namespace LENETALEX_ISA_NS
}  // namespace lenet5
}  // namespace lenetalex
