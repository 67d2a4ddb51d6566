// conv2d_activation on the CPU, Winograd path (float32): 3x3 and 5x5 kernels,
// stride 1, many channels (AlexNet's conv2-5).
//
// Winograd F(2x2, r x r) computes each 2x2 output tile from an n x n input
// tile d, n = r + 1:
//   y = A^T [ (G g G^T) . (B^T d B) ] A        (. elementwise over n*n points)
// so per tile and channel pair it needs n*n multiplications instead of 4*r*r:
// 16 for 36 at r = 3, 36 for 100 at r = 5. Over all channels the points become
// n*n independent matrix products,
//   M[xi] (tiles x out) = V[xi] (tiles x in) . U[xi] (in x out),
// done by ATen's GEMM (MKL); the transforms are cheap passes vectorized over
// channels. The output transform applies bias and activation to the tile
// while it is hot. The matrices (Tile3, Tile5 below) come from the points
// 0, +-1 (and +-2 for r = 5) and infinity; B^T and A^T hold small integers, the
// divisions sit in G, applied once per call to the weights.
// Backward:
//   grad_input  = a Winograd convolution of gpre (padded by r - 1 - padding)
//                 with the weights rotated 180 degrees and transposed;
//   grad_weight = G^T [ sum over tiles of (A gpre_tile A^T) . (B^T d B) ] G:
//                 n*n GEMMs V[xi]^T . Gpre[xi] accumulated per slot, then the
//                 inverse weight transform;
//   gpre = grad_output * act'(output), built once per task from the saved output.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cstring>
#include <vector>

#include "cpu/conv2d_activation_cpu.h"
#include "cpu/conv2d_activation_simd.h"
#include "cpu/scratch.h"

namespace lenetalex {
namespace conv_cpu {

#if LENETALEX_CONV_SIMD
namespace {

// F(2x2, 3x3) (Lavin and Gray's matrices): coefficients 0, +-1, +-1/2, so
// the rounding error stays that of a direct float32 convolution.
struct Tile3 {
  static constexpr int r = 3, n = 4;
  static constexpr float BT[n][n] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr float G[n][r] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
  static constexpr float AT[2][n] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};

// F(2x2, 5x5), points 0, 1, -1, 2, -2, infinity (Toom-Cook; checked against a
// direct correlation in exact fractions). Entries up to 5 in B^T and 2 in
// A^T; measured error against float64 about 3x a direct float32 convolution's.
struct Tile5 {
  static constexpr int r = 5, n = 6;
  static constexpr float BT[n][n] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0},
                                     {0, 4, -4, -1, 1, 0}, {0, -2, -1, 2, 1, 0},
                                     {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float G[n][r] = {
      {0.25f, 0, 0, 0, 0},
      {-1.f / 6, -1.f / 6, -1.f / 6, -1.f / 6, -1.f / 6},
      {-1.f / 6, 1.f / 6, -1.f / 6, 1.f / 6, -1.f / 6},
      {1.f / 24, 1.f / 12, 1.f / 6, 1.f / 3, 2.f / 3},
      {1.f / 24, -1.f / 12, 1.f / 6, -1.f / 3, 2.f / 3},
      {0, 0, 0, 0, 1}};
  static constexpr float AT[2][n] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 1}};
};

// out[i][j] = sum_k M[i][k] * in[k][j] for a constant matrix M (TRANS: M[k][i]);
// T is float or a vector of 16 (__m512, whose +, -, * gcc provides). Fully
// unrolled, so zero coefficients drop out and +-1 become adds and subtracts.
template <bool TRANS, int I, int K, int J, typename T, int MR, int MC>
inline void cmul(const float (&m)[MR][MC], const T (&in)[K][J], T (&out)[I][J]) {
#pragma GCC unroll 8
  for (int i = 0; i < I; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) {
      T acc{};
      bool first = true;
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) {
        const float c = TRANS ? m[k][i] : m[i][k];
        if (c == 0.0f) continue;
        const T x = in[k][j];
        if (first) acc = c == 1.0f ? x : (c == -1.0f ? -x : c * x);
        else if (c == 1.0f) acc += x;
        else if (c == -1.0f) acc -= x;
        else acc += c * x;
        first = false;
      }
      out[i][j] = acc;
    }
}

// X -> M X M^T for a constant M (rows x cols) and X (cols x cols): the 2D
// transforms, each a 1D transform of the columns then of the rows.
template <bool TRANS, int ROWS, int COLS, typename T, int MR, int MC>
inline void sandwich(const float (&m)[MR][MC], const T (&x)[COLS][COLS], T (&out)[ROWS][ROWS]) {
  T t[ROWS][COLS], tt[COLS][ROWS], o[ROWS][ROWS];
  cmul<TRANS, ROWS, COLS, COLS>(m, x, t);  // M X
#pragma GCC unroll 8
  for (int a = 0; a < ROWS; ++a)
#pragma GCC unroll 8
    for (int b = 0; b < COLS; ++b) tt[b][a] = t[a][b];
  cmul<TRANS, ROWS, COLS, ROWS>(m, tt, o);  // M (M X)^T = (M X M^T)^T
#pragma GCC unroll 8
  for (int a = 0; a < ROWS; ++a)
#pragma GCC unroll 8
    for (int b = 0; b < ROWS; ++b) out[a][b] = o[b][a];
}

// Tiles over an oh x ow output, read from a zero-padded channels-last plane of
// (2*th + r - 1) x (2*tw + r - 1) pixels: tile (i, j) reads rows 2i..2i+n-1.
struct Tiling {
  int64_t oh, ow, th, tw, hp, wp;
  int64_t tiles() const { return th * tw; }
};

template <typename W>
Tiling tiling(int64_t oh, int64_t ow) {
  const int64_t th = (oh + 1) / 2, tw = (ow + 1) / 2;
  return {oh, ow, th, tw, 2 * th + W::r - 1, 2 * tw + W::r - 1};
}

// The per-tile transforms below vectorize over 16 channels at a time (the
// last vector masked). Their Winograd-domain side is laid out
// [point][tile][channel] with `ps` floats between points, so that several
// images' tiles stack into one GEMM.
using simd::V;
inline __mmask16 lanes(int64_t left) { return left >= V ? 0xFFFF : __mmask16((1u << left) - 1); }

// v[xi][t][c] = (B^T d B)[xi] for every tile t of the plane xn ([hp][wp][ch]).
template <typename W>
void input_transform(const float* xn, const Tiling& tl, int64_t ch, float* v, int64_t ps) {
  constexpr int n = W::n;
  const int64_t row = tl.wp * ch;
  for (int64_t i = 0; i < tl.th; ++i)
    for (int64_t j = 0; j < tl.tw; ++j)
      for (int64_t c = 0; c < ch; c += V) {
        const __mmask16 k = lanes(ch - c);
        const float* d = xn + (2 * i * tl.wp + 2 * j) * ch + c;
        __m512 x[n][n], y[n][n];
#pragma GCC unroll 8
        for (int a = 0; a < n; ++a)
#pragma GCC unroll 8
          for (int b = 0; b < n; ++b) x[a][b] = _mm512_maskz_loadu_ps(k, d + a * row + b * ch);
        sandwich<false, n, n>(W::BT, x, y);
        float* out = v + (i * tl.tw + j) * ch + c;
#pragma GCC unroll 36
        for (int p = 0; p < n * n; ++p, out += ps) _mm512_mask_storeu_ps(out, k, y[p / n][p % n]);
      }
}

// yn[oh][ow][co] = act(A^T m A + bias) for every tile; only pixels inside the
// output are written. Bias and activation run on the tile's pixel rows while
// they are in L1.
template <typename W, Activation A>
LENETALEX_WIDE_VECTORS void output_transform(const float* m, const Tiling& tl, int64_t cout,
                                             int64_t ps, const float* bias, float* yn) {
  constexpr int n = W::n;
  for (int64_t i = 0; i < tl.th; ++i)
    for (int64_t j = 0; j < tl.tw; ++j) {
      const bool right = 2 * j + 1 < tl.ow, bottom = 2 * i + 1 < tl.oh;
      float* y00 = yn + (2 * i * tl.ow + 2 * j) * cout;
      float* y01 = right ? y00 + cout : y00;  // a pixel past the edge rewrites y00 first
      float* y10 = bottom ? y00 + tl.ow * cout : y00;
      float* y11 = bottom ? y01 + tl.ow * cout : y01;
      for (int64_t co = 0; co < cout; co += V) {
        const __mmask16 k = lanes(cout - co);
        const float* in = m + (i * tl.tw + j) * cout + co;
        __m512 x[n][n], o[2][2];
#pragma GCC unroll 36
        for (int p = 0; p < n * n; ++p, in += ps) x[p / n][p % n] = _mm512_maskz_loadu_ps(k, in);
        sandwich<false, 2, n>(W::AT, x, o);
        // Stores in reverse order so that an aliased (past-the-edge) pixel
        // is overwritten by the real one.
        _mm512_mask_storeu_ps(y11 + co, k, o[1][1]);
        _mm512_mask_storeu_ps(y10 + co, k, o[1][0]);
        _mm512_mask_storeu_ps(y01 + co, k, o[0][1]);
        _mm512_mask_storeu_ps(y00 + co, k, o[0][0]);
      }
      if (A == Activation::Identity && !bias) continue;
      bias_act_channels<A, float>(y00, bias, cout);
      if (right) bias_act_channels<A, float>(y01, bias, cout);
      if (bottom) bias_act_channels<A, float>(y10, bias, cout);
      if (right && bottom) bias_act_channels<A, float>(y11, bias, cout);
    }
}

// gh[xi][t][co] = (A p A^T)[xi] for the 2x2 block p of gpre at each tile; gp is
// a channels-last plane, rows wp*ch apart, zero past the output.
template <typename W>
void grad_output_transform(const float* gp, int64_t wp, const Tiling& tl, int64_t ch, float* gh,
                           int64_t ps) {
  constexpr int n = W::n;
  const int64_t row = wp * ch;
  for (int64_t i = 0; i < tl.th; ++i)
    for (int64_t j = 0; j < tl.tw; ++j)
      for (int64_t c = 0; c < ch; c += V) {
        const __mmask16 k = lanes(ch - c);
        const float* p = gp + (2 * i * wp + 2 * j) * ch + c;
        const __m512 x[2][2] = {
            {_mm512_maskz_loadu_ps(k, p), _mm512_maskz_loadu_ps(k, p + ch)},
            {_mm512_maskz_loadu_ps(k, p + row), _mm512_maskz_loadu_ps(k, p + row + ch)}};
        __m512 h[n][n];
        sandwich<true, n, 2>(W::AT, x, h);
        float* out = gh + (i * tl.tw + j) * ch + c;
#pragma GCC unroll 36
        for (int q = 0; q < n * n; ++q, out += ps) _mm512_mask_storeu_ps(out, k, h[q / n][q % n]);
      }
}

// G g G^T for 16 kernels side by side (the lanes in k): tap t of kernel l is
// src[t*ld + l], point xi goes to out[xi*ps + l].
template <typename W>
inline void kernel_transform(const float* src, int64_t ld, __mmask16 k, float* out, int64_t ps) {
  constexpr int n = W::n, r = W::r;
  __m512 g[r][r], u[n][n];
#pragma GCC unroll 25
  for (int t = 0; t < r * r; ++t) g[t / r][t % r] = _mm512_maskz_loadu_ps(k, src + t * ld);
  sandwich<false, n, r>(W::G, g, u);
#pragma GCC unroll 36
  for (int p = 0; p < n * n; ++p, out += ps) _mm512_mask_storeu_ps(out, k, u[p / n][p % n]);
}

// Forward weights: u[xi][c][o] for c in [c0, c1), from wt[((c - c0)*r*r + t)][o]
// (the block of W transposed).
template <typename W>
void weight_transform(const float* wt, int64_t cg, int64_t ocg, int64_t c0, int64_t c1, float* u) {
  constexpr int taps = W::r * W::r;
  for (int64_t c = c0; c < c1; ++c)
    for (int64_t o = 0; o < ocg; o += V)
      kernel_transform<W>(wt + (c - c0) * taps * ocg + o, ocg, lanes(ocg - o), u + c * ocg + o,
                          cg * ocg);
}

// grad_input weights: u[xi][o][c] from W[o][c] rotated by 180 degrees, o in [o0, o1).
// Each W[o] ([c][r*r]) is first transposed to tmp[r*r][c], so the transform reads along c.
template <typename W>
void weight_transform_flipped(const float* w, int64_t cg, int64_t ocg, int64_t o0, int64_t o1,
                              float* u) {
  constexpr int taps = W::r * W::r;
  std::vector<float> tmp(taps * cg);
  for (int64_t o = o0; o < o1; ++o) {
    const float* src = w + o * cg * taps;
    for (int64_t c = 0; c < cg; ++c)
      for (int t = 0; t < taps; ++t) tmp[(taps - 1 - t) * cg + c] = src[c * taps + t];
    for (int64_t c = 0; c < cg; c += V)
      kernel_transform<W>(tmp.data() + c, cg, lanes(cg - c), u + o * cg + c, cg * ocg);
  }
}

// grad_weight from grad u ([xi][o][c] per group): gw[o][c] = G^T X G, the
// inverse of kernel_transform's sandwich, 16 channels at a time into tmp
// ([tap][c], r*r x cg floats), then one interleave of tmp's rows into gw's
// [c][tap] (its setup, per call, cost as much as the math at 16 channels).
template <typename W>
void inverse_weight_transform(const float* gu, int64_t cg, int64_t ocg, int64_t o, float* tmp,
                              float* out) {
  constexpr int n = W::n, r = W::r, taps = r * r;
  for (int64_t c = 0; c < cg; c += V) {
    const __mmask16 k = lanes(cg - c);
    const float* in = gu + o * cg + c;
    __m512 x[n][n], g[r][r];
#pragma GCC unroll 36
    for (int p = 0; p < n * n; ++p, in += cg * ocg) x[p / n][p % n] = _mm512_maskz_loadu_ps(k, in);
    sandwich<true, r, n>(W::G, x, g);
#pragma GCC unroll 25
    for (int t = 0; t < taps; ++t) _mm512_mask_storeu_ps(tmp + t * cg + c, k, g[t / r][t % r]);
  }
  simd::transpose(tmp, cg, taps, cg, out, taps);
}

// Images per task: enough tile rows (about 192) that MKL's packing of the
// weight operand, redone on every GEMM call, stays small next to the product
// (AlexNet conv3: the packing took 47% as long as the products at 98 rows, 25%
// at 196; perf samples); no more, since the Winograd-domain buffers grow with
// the rows and leave L2 (AlexNet conv2 forward: 14% slower at 588 rows than at
// 196); and at least one task per thread.
int64_t images_per_task(int64_t n, int64_t groups, int64_t tiles_per_image) {
  const int64_t threads = std::max(1, at::get_num_threads());
  const int64_t want = (192 + tiles_per_image - 1) / tiles_per_image;
  const int64_t per_thread = std::max<int64_t>(1, (n * groups + threads - 1) / threads / groups);
  return std::clamp<int64_t>(std::min(want, per_thread), 1, std::max<int64_t>(1, n));
}

template <typename W>
void forward_tiles(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  Scratch scratch;
  constexpr int taps = W::r * W::r, pts = W::n * W::n;
  const Tiling tl = tiling<W>(s.oh, s.ow);
  const int64_t T = tl.tiles(), P = s.oh * s.ow, K = s.cg * taps;
  const int64_t upt = pts * s.cg * s.ocg, cblk = 16, ncb = (s.cg + cblk - 1) / cblk;
  // u[g][xi][c][o], from blocks of W transposed to [(c, k)][o].
  float* u = scratch.floats(s.groups * upt);
  at::parallel_for(0, s.groups * ncb, grain(s, s.groups * ncb), [&](int64_t begin, int64_t end) {
    std::vector<float> wt(cblk * taps * s.ocg);
    for (int64_t gb = begin; gb < end; ++gb) {
      const int64_t g = gb / ncb, c0 = gb % ncb * cblk, c1 = std::min(s.cg, c0 + cblk);
      simd::transpose(a.w + g * s.ocg * K + c0 * taps, K, s.ocg, (c1 - c0) * taps, wt.data(),
                      s.ocg);
      weight_transform<W>(wt.data(), s.cg, s.ocg, c0, c1, u + g * upt);
    }
  });
  const int64_t imgs = images_per_task(s.n, s.groups, T);
  const int64_t chunks = (s.n + imgs - 1) / imgs;
  TaskQueue queue(s, chunks * s.groups);
  at::parallel_for(0, queue.workers(), 1, [&](int64_t, int64_t) {
    Scratch local;
    float* xn = local.floats(tl.hp * tl.wp * s.cg, true);  // zero border, interior rewritten
    float* tmp = local.floats(s.h * s.w * s.cg);
    float* v = local.floats(pts * imgs * T * s.cg);
    float* m = local.floats(pts * imgs * T * s.ocg);
    float* yn = local.floats(P * s.ocg);
    for (int64_t task; queue.next(task);) {
      const int64_t g = task % s.groups, n0 = task / s.groups * imgs;
      const int64_t nimg = std::min(imgs, s.n - n0), rows = nimg * T;
      for (int64_t i = 0; i < nimg; ++i) {
        pack_plane(a.x + ((n0 + i) * s.c + g * s.cg) * s.h * s.w, s.cg, s.h, s.w, s.ph, s.pw,
                   tl.wp, xn, tmp);
        input_transform<W>(xn, tl, s.cg, v + i * T * s.cg, rows * s.cg);
      }
      for (int p = 0; p < pts; ++p)  // M[xi] = V[xi] . U[xi]
        gemm<float>(false, false, rows, s.ocg, s.cg, v + p * rows * s.cg, s.cg,
                    u + g * upt + p * s.cg * s.ocg, s.ocg, m + p * rows * s.ocg, s.ocg, false);
      for (int64_t i = 0; i < nimg; ++i) {
        with_activation(act, [&](auto A) {
          output_transform<W, decltype(A)::value>(m + i * T * s.ocg, tl, s.ocg, rows * s.ocg,
                                               a.b ? a.b + g * s.ocg : nullptr, yn);
        });
        simd::transpose(yn, s.ocg, P, s.ocg, a.y + ((n0 + i) * s.oc + g * s.ocg) * P, P);
      }
    }
  });
}

template <typename W>
void backward_tiles(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  Scratch scratch;
  constexpr int taps = W::r * W::r, pts = W::n * W::n;
  const Tiling tl = tiling<W>(s.oh, s.ow);  // forward tiles (grad_weight)
  const Tiling tx = tiling<W>(s.h, s.w);    // grad_input tiles
  const int64_t P = s.oh * s.ow, HW = s.h * s.w, T = tl.tiles(), TX = tx.tiles();
  const int64_t top = W::r - 1 - s.ph, left = W::r - 1 - s.pw;  // gpre's place in its padded plane
  const int64_t gplane = tx.hp * tx.wp * s.ocg;
  const bool need_gx = a.gx != nullptr, need_gw = a.gw != nullptr;
  const int64_t upt = pts * s.cg * s.ocg;  // per group: u, grad u

  // grad_input's weights: ux[g][xi][o][c], the kernel rotated, channels swapped.
  float* ux = nullptr;
  if (need_gx) {
    ux = scratch.floats(s.groups * upt);
    const int64_t oblk = 16, nob = (s.ocg + oblk - 1) / oblk;
    at::parallel_for(0, s.groups * nob, grain(s, s.groups * nob), [&](int64_t begin, int64_t end) {
      for (int64_t gb = begin; gb < end; ++gb) {
        const int64_t g = gb / nob, o0 = gb % nob * oblk, o1 = std::min(s.ocg, o0 + oblk);
        weight_transform_flipped<W>(a.w + g * s.ocg * s.cg * taps, s.cg, s.ocg, o0, o1,
                                    ux + g * upt);
      }
    });
  }

  const int64_t imgs = images_per_task(s.n, s.groups, std::max(T, TX));
  const int64_t chunks = (s.n + imgs - 1) / imgs, tasks = chunks * s.groups;
  const int64_t slots = slots_for(s, tasks);
  // Per slot: grad u as [g][xi][o][c] (so the inverse transform reads along c), grad bias.
  float* gu = need_gw ? scratch.floats(slots * s.groups * upt, true) : nullptr;
  float* gbs = a.gb ? scratch.floats(slots * s.oc, true) : nullptr;

  at::parallel_for(0, slots, grain(s, slots), [&](int64_t slot_begin, int64_t slot_end) {
    Scratch local;
    float* gq = local.floats(imgs * gplane, true);  // gpre per image, padded for grad_input
    float* tg = local.floats(P * s.ocg);
    float* ty = local.floats(P * s.ocg);
    float *xn = nullptr, *tmp = nullptr, *v = nullptr, *gh = nullptr;
    if (need_gw) {
      xn = local.floats(tl.hp * tl.wp * s.cg, true);
      tmp = local.floats(HW * s.cg);
      v = local.floats(pts * imgs * T * s.cg);
      gh = local.floats(pts * imgs * T * s.ocg);
    }
    float *vx = nullptr, *mx = nullptr, *gxn = nullptr;
    if (need_gx) {
      vx = local.floats(pts * imgs * TX * s.ocg);
      mx = local.floats(pts * imgs * TX * s.cg);
      gxn = local.floats(HW * s.cg);
    }
    for (int64_t slot = slot_begin; slot < slot_end; ++slot) {
      const int64_t task_begin = tasks * slot / slots, task_end = tasks * (slot + 1) / slots;
      for (int64_t task = task_begin; task < task_end; ++task) {
        const int64_t g = task % s.groups, n0 = task / s.groups * imgs;
        const int64_t nimg = std::min(imgs, s.n - n0), rows = nimg * T, rows_x = nimg * TX;
        for (int64_t i = 0; i < nimg; ++i) {
          // Prologue: gpre = grad_output * act'(output), channels-last, into its padded plane.
          const int64_t n = n0 + i, off = (n * s.oc + g * s.ocg) * P;
          float* plane = gq + i * gplane;
          grad_pre_channels_last(act, a.gy + off, a.yo + off, P, s.ocg, tg, s.ocg, ty,
                                 gbs ? gbs + slot * s.oc + g * s.ocg : nullptr);
          for (int64_t oh = 0; oh < s.oh; ++oh)
            std::memcpy(plane + ((top + oh) * tx.wp + left) * s.ocg, tg + oh * s.ow * s.ocg,
                        s.ow * s.ocg * sizeof(float));
          if (need_gw) {
            pack_plane(a.x + (n * s.c + g * s.cg) * HW, s.cg, s.h, s.w, s.ph, s.pw, tl.wp, xn, tmp);
            input_transform<W>(xn, tl, s.cg, v + i * T * s.cg, rows * s.cg);
            grad_output_transform<W>(plane + (top * tx.wp + left) * s.ocg, tx.wp, tl, s.ocg,
                                  gh + i * T * s.ocg, rows * s.ocg);
          }
          if (need_gx) input_transform<W>(plane, tx, s.ocg, vx + i * TX * s.ocg, rows_x * s.ocg);
        }
        if (need_gw) {
          float* part = gu + (slot * s.groups + g) * upt;
          for (int p = 0; p < pts; ++p)  // grad u[xi] (ocg x cg) += Gh[xi]^T . V[xi]
            gemm<float>(true, false, s.ocg, s.cg, rows, gh + p * rows * s.ocg, s.ocg,
                        v + p * rows * s.cg, s.cg, part + p * s.ocg * s.cg, s.cg, true);
        }
        if (need_gx) {
          for (int p = 0; p < pts; ++p)  // Mx[xi] = Vx[xi] . Ux[xi]
            gemm<float>(false, false, rows_x, s.cg, s.ocg, vx + p * rows_x * s.ocg, s.ocg,
                        ux + g * upt + p * s.ocg * s.cg, s.cg, mx + p * rows_x * s.cg, s.cg,
                        false);
          for (int64_t i = 0; i < nimg; ++i) {
            output_transform<W, Activation::Identity>(mx + i * TX * s.cg, tx, s.cg, rows_x * s.cg,
                                                   nullptr, gxn);
            simd::transpose(gxn, s.cg, HW, s.cg, a.gx + ((n0 + i) * s.c + g * s.cg) * HW, HW);
          }
        }
      }
    }
  });

  if (need_gw) {  // sum the slots into slot 0, then gw = G^T (grad u) G for every (o, c)
    for (int64_t sl = 1; sl < slots; ++sl) {
      const float* src = gu + sl * s.groups * upt;
      at::parallel_for(0, s.groups * upt, grain(s, s.groups * upt, 1 << 14),
                       [&](int64_t begin, int64_t end) {
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) gu[i] += src[i];
      });
    }
    at::parallel_for(0, s.groups * s.ocg, grain(s, s.groups * s.ocg),
                     [&](int64_t begin, int64_t end) {
      std::vector<float> tmp(taps * s.cg);
      for (int64_t go = begin; go < end; ++go) {
        const int64_t g = go / s.ocg, o = go % s.ocg;
        inverse_weight_transform<W>(gu + g * upt, s.cg, s.ocg, o, tmp.data(),
                                    a.gw + (g * s.ocg + o) * s.cg * taps);
      }
    });
  }
  if (a.gb) {
    for (int64_t oc = 0; oc < s.oc; ++oc) {
      float acc = 0;
      for (int64_t sl = 0; sl < slots; ++sl) acc += gbs[sl * s.oc + oc];
      a.gb[oc] = acc;
    }
  }
}

}  // namespace

bool winograd_supported(const Conv2dShape& s) {
  const bool tile = s.kh == s.kw && (s.kh == 3 || s.kh == 5);
  return tile && s.sh == 1 && s.sw == 1 && s.ph < s.kh && s.pw < s.kw && s.cg >= 16 &&
         s.ocg >= 16 && s.oh >= 2 && s.ow >= 2;
}

void forward_winograd(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  s.kh == 3 ? forward_tiles<Tile3>(s, a, act) : forward_tiles<Tile5>(s, a, act);
}

void backward_winograd(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  s.kh == 3 ? backward_tiles<Tile3>(s, a, act) : backward_tiles<Tile5>(s, a, act);
}

#else  // no AVX-512 (the transposes use it)

bool winograd_supported(const Conv2dShape&) { return false; }
void forward_winograd(const Conv2dShape&, const ConvArgs<float>&, Activation) {}
void backward_winograd(const Conv2dShape&, const ConvArgs<float>&, Activation) {}

#endif

}  // namespace conv_cpu
}  // namespace lenetalex
